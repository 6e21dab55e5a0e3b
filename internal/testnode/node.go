// Package testnode starts real Gatehouse nodes for tests, on real listeners and real databases
// (a SQLite file in a temporary directory, or a fresh database on the throwaway PostgreSQL of
// internal/testpg), and calls them through each front: native gRPC, Connect and REST.
package testnode

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/auth"
)

// AdminPassword is the bootstrap administrator's password on test nodes.
const AdminPassword = "admin-password-for-tests"

// PasswordHashing are the argon2id parameters of test nodes that set none: 64 KiB and one pass,
// about a thousandth of the production cost.
//
// NOTE: with the production parameters (19 MiB, 2 passes) the suite spends minutes in argon2id,
// mostly under -race. The hashing code paths are the same; only the cost differs. A test about
// the production parameters sets them explicitly (auth.Params{} would mean "unset" here, so it
// names auth.DefaultMemoryKiB and friends).
var PasswordHashing = auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}

// Backend names a database kind.
type Backend string

// The backends every behavioural test runs against.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// Backends lists every backend.
var Backends = []Backend{SQLite, Postgres}

// Node is a running node under test.
type Node struct {
	*server.Node
	Database string
	t        testing.TB
}

// DatabaseURL returns a fresh database of the backend for t.
func DatabaseURL(t testing.TB, b Backend) string {
	t.Helper()
	switch b {
	case SQLite:
		return "sqlite://" + filepath.Join(t.TempDir(), "gatehouse.db")
	case Postgres:
		return testpg.NewDatabase(t)
	}
	t.Fatalf("unknown backend %q", b)
	return ""
}

// Start starts a node on a fresh database of backend b, on 127.0.0.1 with OS-chosen ports, and
// shuts it down when the test ends.
func Start(t testing.TB, b Backend) *Node {
	t.Helper()
	return StartOn(t, DatabaseURL(t, b))
}

// StartOn starts a node on the given database URL.
func StartOn(t testing.TB, databaseURL string) *Node {
	t.Helper()
	return StartWith(t, server.Config{Database: databaseURL})
}

// StartWith starts a node with cfg, whose Database must be set, and shuts it down when the test
// ends. Unset addresses become 127.0.0.1 with OS-chosen ports, an unset AdminPassword is
// AdminPassword, unset PasswordHashing is PasswordHashing, and an unset Logger discards the logs.
func StartWith(t testing.TB, cfg server.Config) *Node {
	t.Helper()
	if cfg.PasswordHashing == (auth.Params{}) {
		cfg.PasswordHashing = PasswordHashing
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.AdminPassword == "" {
		cfg.AdminPassword = AdminPassword
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting a node on %s: %v", cfg.Database, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutting the node down: %v", err)
		}
	})
	return &Node{Node: n, Database: cfg.Database, t: t}
}

// BaseURL is the node's HTTP base URL.
func (n *Node) BaseURL() string { return "http://" + n.HTTPAddr() }

// HTTPClient is a client for the node's HTTP port that speaks HTTP/1.1 and unencrypted HTTP/2.
func HTTPClient() *http.Client {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 60 * time.Second}
}

// Call invokes method with req and returns a new response of type R.
func Call[R any, PR interface {
	*R
	proto.Message
}](ctx context.Context, c Invoker, method, token string, req proto.Message) (PR, error) {
	resp := PR(new(R))
	if err := c.Invoke(ctx, method, token, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Login logs username in with a web-browser session and returns the response.
func Login(t testing.TB, c Invoker, username, password string) *gatehousev1.CreateSessionResponse {
	t.Helper()
	resp, err := Call[gatehousev1.CreateSessionResponse](context.Background(), c, gatehousev1.SessionService_CreateSession_FullMethodName, "",
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
	if err != nil {
		t.Fatalf("logging in as %s: %v", username, err)
	}
	return resp
}

// AdminToken logs the bootstrap administrator in and returns the session token.
func AdminToken(t testing.TB, c Invoker) string {
	t.Helper()
	return Login(t, c, "admin", AdminPassword).Token
}

// MustCall is Call that fails the test on an error.
func MustCall[R any, PR interface {
	*R
	proto.Message
}](t testing.TB, c Invoker, method, token string, req proto.Message) PR {
	t.Helper()
	resp, err := Call[R, PR](context.Background(), c, method, token, req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return resp
}
