package integration_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/server"
)

// TestStartThatCannotBindWritesNothing: a node whose port is taken fails to start before it opens
// its database, so it bootstraps no administrator whose generated password nobody would see.
func TestStartThatCannotBindWritesNothing(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	path := filepath.Join(t.TempDir(), "g.db")
	for _, cfg := range []server.Config{
		{GRPCAddr: taken.Addr().String(), HTTPAddr: "127.0.0.1:0"},
		{GRPCAddr: "127.0.0.1:0", HTTPAddr: taken.Addr().String()},
	} {
		cfg.Database = "sqlite://" + path
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		n, err := server.Start(context.Background(), cfg)
		if err == nil {
			_ = n.Shutdown(context.Background())
			t.Fatalf("a node started on the taken address %s", taken.Addr())
		}
		if !strings.Contains(err.Error(), "listening for") {
			t.Errorf("start on a taken port: %v, want a listening error", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("a start that could not bind its ports touched the database (stat: %v)", err)
		}
	}
}
