//go:build unix

package main

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestShutdownSignals: the first SIGTERM ends the context and nothing more; the second calls exit
// with a non-zero status and logs that the drain was cut short.
func TestShutdownSignals(t *testing.T) {
	defer goleak.VerifyNone(t)
	var logs bytes.Buffer // written by the signal goroutine, read after a channel receive from it
	exited := make(chan int, 1)
	ctx, stop := shutdownSignals(slog.New(slog.NewTextHandler(&logs, nil)), func(code int) { exited <- code })
	defer stop()

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end within 10s of the first SIGTERM")
	}
	select {
	case code := <-exited:
		t.Fatalf("the first signal exited with %d", code)
	default:
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code == 0 {
			t.Error("the forced exit has status 0")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second SIGTERM did not exit within 10s")
	}
	if out := logs.String(); !strings.Contains(out, "draining") || !strings.Contains(out, "the drain cut short") {
		t.Errorf("the log does not tell both signals apart:\n%s", out)
	}
}

// TestShutdownSignalsStop: stop without a signal ends the context and the signal goroutine.
func TestShutdownSignalsStop(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, stop := shutdownSignals(slog.New(slog.DiscardHandler), func(code int) { t.Errorf("exit(%d) without a signal", code) })
	stop()
	select {
	case <-ctx.Done():
	default:
		t.Error("the context did not end at stop")
	}
}
