package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server"
)

// streamsPerConn is the number of WatchSession streams the bench opens over one gRPC connection.
//
// NOTE: the node sets no limit on the streams of a connection (grpc-go's default is unlimited),
// but thousands of clients would not share one connection either; a connection costs each end
// some 64 KiB of buffers, a few bytes a stream at this many.
const streamsPerConn = 1000

// admin returns a session token of the bootstrap administrator, storing the session on the first
// call.
//
// NOTE: written into the store, as the bench's other sessions are, instead of a password login:
// the login would cost a production argon2id hash, seconds under the race detector.
func (e *env) admin(ctx context.Context) (string, error) {
	if e.adminToken != "" {
		return e.adminToken, nil
	}
	st := e.node.Store()
	u, err := st.UserByName(ctx, "admin")
	if err != nil {
		return "", fmt.Errorf("finding the administrator: %w", err)
	}
	tokens, err := createSessions(ctx, st, []string{u.ID}, 1)
	if err != nil {
		return "", err
	}
	e.adminToken = tokens[0]
	return e.adminToken, nil
}

// withToken returns ctx carrying token as its bearer credential.
func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// dial opens a gRPC connection to a node's gRPC port.
func dial(n *server.Node) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to a node's gRPC port: %w", err)
	}
	return conn, nil
}

// conns are gRPC connections to one node, one per streamsPerConn streams.
type conns []*grpc.ClientConn

// dialFor opens the connections of n streams to node.
func dialFor(node *server.Node, n int) (conns, error) { return dialAddrFor(node.GRPCAddr(), n) }

// dialAddrFor opens the connections of n streams to the gRPC port at addr.
func dialAddrFor(addr string, n int) (conns, error) {
	var cs conns
	for range (n + streamsPerConn - 1) / streamsPerConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			err = fmt.Errorf("connecting to a node's gRPC port: %w", err)
			cs.close()
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// client returns the session client of the ith stream.
func (cs conns) client(i int) gatehousev1.SessionServiceClient {
	return gatehousev1.NewSessionServiceClient(cs[i/streamsPerConn])
}

// close closes the connections.
func (cs conns) close() {
	for _, c := range cs {
		_ = c.Close()
	}
}

// watch is one open WatchSession stream, after its snapshot.
type watch struct {
	stream    grpc.ServerStreamingClient[gatehousev1.WatchSessionResponse]
	sessionID string
}

// openWatches opens a WatchSession for each token, over cs (the ith token over cs.client(i)),
// watchOpeners at a time, and waits for each one's snapshot. The streams end when ctx does.
func openWatches(ctx context.Context, cs conns, tokens []string) ([]watch, error) {
	out := make([]watch, len(tokens))
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	sem := make(chan struct{}, watchOpeners)
	for i, token := range tokens {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			stream, err := cs.client(i).WatchSession(withToken(ctx, token), &gatehousev1.WatchSessionRequest{})
			if err != nil {
				errs[i] = fmt.Errorf("opening a WatchSession: %w", err)
				return
			}
			m, err := stream.Recv()
			if err != nil {
				errs[i] = fmt.Errorf("reading a WatchSession's snapshot: %w", err)
				return
			}
			if m.GetSnapshot() == nil {
				errs[i] = fmt.Errorf("a WatchSession's first message is not its snapshot: %v", m)
				return
			}
			out[i] = watch{stream: stream, sessionID: m.GetSnapshot().GetSession().GetId()}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// watchOpeners bounds the WatchSession streams being opened at once.
const watchOpeners = 64

// next returns the stream's next message other than a heartbeat or an expiry warning.
func (w watch) next() (*gatehousev1.WatchSessionResponse, error) {
	for {
		m, err := w.stream.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetHeartbeat() == nil && m.GetExpiring() == nil {
			return m, nil
		}
	}
}

// seedSessions stores n users with one active session each, named prefix-kind-NNNNNN, and returns
// their ids and the sessions' tokens.
func seedSessions(ctx context.Context, e *env, kind string, n int) (users, tokens []string, err error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%s%06d", e.prefix, kind, i)
	}
	st := e.node.Store()
	users, err = createUsers(ctx, st, names, nil)
	if err != nil {
		return nil, nil, err
	}
	tokens, err = createSessions(ctx, st, users, n)
	if err != nil {
		return nil, nil, err
	}
	return users, tokens, nil
}

// memory is the memory of this process at one moment.
type memory struct {
	// rss is the resident set (VmRSS of /proc/self/status), heap the bytes of live heap objects
	// (runtime.MemStats.HeapAlloc), both after a collection that returned what it could to the OS.
	rss, heap uint64
	// stacks is the memory of goroutine stacks (runtime.MemStats.StackInuse).
	stacks     uint64
	goroutines int
}

// measureMemory collects the garbage, returns the freed memory to the OS, and reads the process's
// memory.
func measureMemory() (memory, error) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := readRSS()
	if err != nil {
		return memory{}, err
	}
	return memory{rss: rss, heap: ms.HeapAlloc, stacks: ms.StackInuse, goroutines: runtime.NumGoroutine()}, nil
}

// readRSS returns VmRSS of /proc/self/status in bytes.
func readRSS() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading the resident memory (Linux only): %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kib, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading VmRSS %q: %w", v, err)
		}
		return kib << 10, nil
	}
	return 0, errors.New("/proc/self/status has no VmRSS")
}

// perItem returns (after - before) / n, which may be negative when the machine returned memory.
func perItem(after, before uint64, n int) float64 {
	return (float64(after) - float64(before)) / float64(n)
}

// serveDebug serves net/http/pprof on addr until cleanup.
func serveDebug(addr string, stderr io.Writer, cleanup *cleanups) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	fmt.Fprintf(stderr, "gatehouse-bench: serving net/http/pprof on http://%s/debug/pprof/\n", lis.Addr())
	cleanup.push(func() {
		_ = srv.Close()
		<-done
	})
	return nil
}
