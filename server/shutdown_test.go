package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/auth"
)

// syncBuffer is a log sink safe for the node's concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startNode starts a node on a fresh SQLite database with OS-chosen loopback ports, and shuts it
// down when the test ends if the test did not (a second Shutdown returns the first one's result).
func startNode(t *testing.T) (*server.Node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := server.Start(ctx, server.Config{
		Database:        "sqlite://" + filepath.Join(t.TempDir(), "gatehouse.db"),
		GRPCAddr:        "127.0.0.1:0",
		HTTPAddr:        "127.0.0.1:0",
		AdminPassword:   "admin-password-for-tests",
		PasswordHashing: auth.Params{MemoryKiB: 64, Time: 1, Threads: 1},
		Logger:          slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("starting a node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n, logs
}

// heldRequest is a Connect call whose handler waits for a body the client never sends.
type heldRequest struct {
	conn net.Conn
	r    *bufio.Reader
}

// holdRequest sends to the node's HTTP port the headers of a Connect call announcing a body, and
// returns once the handler has asked for the body (the server's 100 Continue): from then on the
// connection is active and a graceful drain waits for it.
func holdRequest(t *testing.T, httpAddr string) *heldRequest {
	t.Helper()
	conn, err := net.DialTimeout("tcp", httpAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /gatehouse.v1.SessionService/ValidateSession HTTP/1.1\r\n"+
		"Host: %s\r\nContent-Type: application/json\r\nContent-Length: 64\r\nExpect: 100-continue\r\n\r\n", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("the handler did not ask for the body: %q, %v", line, err)
	}
	if blank, err := r.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("after 100 Continue: %q, %v", blank, err)
	}
	return &heldRequest{conn: conn, r: r}
}

// waitCut waits, bounded, until the server closes the held connection.
func (h *heldRequest) waitCut(t *testing.T) {
	t.Helper()
	if err := h.conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := h.r.ReadByte()
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("the held connection received %q, want it cut", b)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("the server did not cut the held connection within 20s")
	}
}

// checkStopped checks that the node's ports refuse connections and that its store is closed.
func checkStopped(t *testing.T, n *server.Node) {
	t.Helper()
	for _, addr := range []string{n.GRPCAddr(), n.HTTPAddr()} {
		if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
			_ = c.Close()
			t.Errorf("%s still accepts connections after Shutdown", addr)
		}
	}
	if err := n.Store().Ping(context.Background()); err == nil {
		t.Error("the store is still open after Shutdown")
	}
}

// TestShutdownCutsWhatTheDrainCouldNotFinish: a request in flight holds the drain until the
// deadline, then Shutdown cuts its connection, closes everything and returns.
func TestShutdownCutsWhatTheDrainCouldNotFinish(t *testing.T) {
	n, logs := startNode(t)
	held := holdRequest(t, n.HTTPAddr())

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	shutdown := make(chan error, 1)
	go func() { shutdown <- n.Shutdown(ctx) }()
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Shutdown did not return within 20s of its %v deadline", deadline)
	}
	took := time.Since(start)
	if took < deadline {
		t.Errorf("Shutdown returned after %v, before its %v deadline: it did not wait for the request in flight", took, deadline)
	}
	if took > deadline+5*time.Second {
		t.Errorf("Shutdown returned after %v, long after its %v deadline", took, deadline)
	}
	held.waitCut(t)
	checkStopped(t, n)
	if !strings.Contains(logs.String(), "the drain timed out") {
		t.Errorf("the log does not say that the drain timed out:\n%s", logs)
	}
}

// TestShutdownClosesTheStoreAfterTheLastHandler: once the drain has timed out and the connections
// are cut, Shutdown still waits for the HTTP handlers running before it closes the store
// (http.Server.Close does not wait for them).
func TestShutdownClosesTheStoreAfterTheLastHandler(t *testing.T) {
	n, _ := startNode(t)
	held := holdRequest(t, n.HTTPAddr())
	release, ok := server.HoldHTTPHandler(n)
	if !ok {
		t.Fatal("the node turned a handler away before Shutdown")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- n.Shutdown(ctx) }()
	held.waitCut(t) // the drain timed out and the connections are cut

	if err := n.Store().Ping(context.Background()); err != nil {
		t.Fatalf("the store was closed while an HTTP handler still ran: %v", err)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while an HTTP handler still ran", err)
	default:
	}
	release()
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return within 20s of the last handler's end")
	}
	checkStopped(t, n)
	if _, ok := server.HoldHTTPHandler(n); ok {
		t.Error("the node admits HTTP handlers after Shutdown")
	}
}

// probe is what the node answered at one moment.
type probe struct {
	readyz, healthz int
	readyzBody      string
	grpcHealth      healthpb.HealthCheckResponse_ServingStatus
	// httpHealth is grpc.health.v1 Check on the HTTP port (Connect, JSON): its status field.
	httpHealth string
}

func probeNode(ctx context.Context, hc *http.Client, health healthpb.HealthClient, httpAddr string) (probe, error) {
	var p probe
	get := func(path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	var err error
	if p.readyz, p.readyzBody, err = get("/readyz"); err != nil {
		return p, err
	}
	if p.healthz, _, err = get("/healthz"); err != nil {
		return p, err
	}
	resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return p, err
	}
	p.grpcHealth = resp.GetStatus()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
	if err != nil {
		return p, err
	}
	req.Header.Set("Content-Type", "application/json")
	hr, err := hc.Do(req)
	if err != nil {
		return p, err
	}
	defer hr.Body.Close()
	var check struct{ Status string }
	if err := json.NewDecoder(hr.Body).Decode(&check); err != nil {
		return p, err
	}
	p.httpHealth = check.Status
	return p, nil
}

// TestShutdownMarksTheNodeNotReadyFirst: by the time Shutdown ends the node's streams (its first
// step after marking the node not ready), /readyz answers 503 "draining" and grpc.health.v1
// NOT_SERVING on both ports, while /healthz still answers 200.
func TestShutdownMarksTheNodeNotReadyFirst(t *testing.T) {
	n, _ := startNode(t)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	before, err := probeNode(ctx, hc, health, n.HTTPAddr())
	if err != nil {
		t.Fatalf("probing the serving node: %v", err)
	}
	if want := (probe{readyz: http.StatusOK, readyzBody: "ok\n", healthz: http.StatusOK, grpcHealth: healthpb.HealthCheckResponse_SERVING,
		httpHealth: "SERVING_STATUS_SERVING"}); before != want {
		t.Fatalf("serving node: %+v, want %+v", before, want)
	}

	var during probe
	var duringErr error
	stops := 0
	server.OnStopStreams(n, func() {
		stops++
		during, duringErr = probeNode(ctx, hc, health, n.HTTPAddr())
	})
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if stops != 1 {
		t.Fatalf("Shutdown ended the streams %d times, want 1", stops)
	}
	if duringErr != nil {
		t.Fatalf("probing the draining node: %v", duringErr)
	}
	if want := (probe{readyz: http.StatusServiceUnavailable, readyzBody: "draining\n", healthz: http.StatusOK, grpcHealth: healthpb.HealthCheckResponse_NOT_SERVING,
		httpHealth: "SERVING_STATUS_NOT_SERVING"}); during != want {
		t.Errorf("draining node: %+v, want %+v", during, want)
	}

	select {
	case <-n.Done():
	default:
		t.Error("Done is not closed after Shutdown")
	}
	if err := n.Err(); err != nil {
		t.Errorf("Err after a clean Shutdown = %v, want nil", err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("a second Shutdown: %v", err)
	}
	if stops != 1 {
		t.Errorf("the second Shutdown ended the streams again")
	}
	checkStopped(t, n)
}

// TestRunShutsDownWhenTheContextEnds: Node.Run returns nil after a clean drain once ctx ends.
func TestRunShutsDownWhenTheContextEnds(t *testing.T) {
	n, logs := startNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkStopped(t, n)
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown in the log:\n%s", logs)
	}
}

// TestRunReturnsTheErrorOfAFailedServer: when the gRPC server's Serve fails, Run returns at once
// (its ctx does not end), shuts the rest of the node down, and returns the error naming the
// server; Err reports it too, and a later Shutdown neither hangs nor panics.
func TestRunReturnsTheErrorOfAFailedServer(t *testing.T) {
	n, logs := startNode(t)
	if err := server.CloseGRPCListener(n); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	var err error
	select {
	case err = <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its gRPC server failing")
	}
	if err == nil || !strings.Contains(err.Error(), "serving gRPC on "+n.GRPCAddr()) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run = %v, want the gRPC server's failure", err)
	}
	select {
	case <-n.Done():
	default:
		t.Error("Done is not closed after a server failed")
	}
	if got := n.Err(); got == nil || got.Error() != err.Error() {
		t.Errorf("Err = %v, want %v", got, err)
	}
	checkStopped(t, n)
	if !strings.Contains(logs.String(), "a server failed") {
		t.Errorf("the log does not say that a server failed:\n%s", logs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if again := n.Shutdown(ctx); again == nil || again.Error() != err.Error() {
		t.Errorf("Shutdown after the failure = %v, want %v", again, err)
	}
}
