package integration_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// Helpers of the fault tests (faults_test.go): `gatehouse serve` processes on one database, calls
// bounded by a deadline, the event log read whole through ListEvents, and streams collected from
// the public client package.

// faultAdminPassword is the bootstrap administrator's password of the fault tests' nodes.
const faultAdminPassword = "fault-admin-password"

// faultWait bounds every wait of the fault tests for something to happen.
const faultWait = 60 * time.Second

// faultNode is one `gatehouse serve` process.
type faultNode struct {
	name     string
	p        *proc
	grpcAddr string
	httpAddr string
	grpc     grpcConn // unary calls over native gRPC
}

// url is the node's HTTP base URL, as the client package takes it.
func (n *faultNode) url() string { return "http://" + n.httpAddr }

// startNodes starts one `gatehouse serve` process per name, all at once, on database, with extra
// flags, and waits until every one is healthy. The processes are killed when the test ends.
func startNodes(t *testing.T, database string, names []string, extra ...string) []*faultNode {
	t.Helper()
	bin := faultBinary(t)
	env := cliEnv("GATEHOUSE_ADMIN_PASSWORD=" + faultAdminPassword)
	nodes := make([]*faultNode, len(names))
	start := func(grpcAddr, httpAddr string) *proc {
		args := append([]string{"serve", "--database", database, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--log-level", "warn"}, extra...)
		return startProc(t, bin, env, args...)
	}
	// The nodes start all at once; one whose port was taken before it bound it starts again.
	for i, name := range names {
		n := &faultNode{name: name, grpcAddr: freeAddr(t), httpAddr: freeAddr(t)}
		n.p = start(n.grpcAddr, n.httpAddr)
		nodes[i] = n
	}
	for _, n := range nodes {
		if err := healthy(n.p, n.httpAddr); err != nil {
			retryOnTakenPort(t, err, 1)
			n.p, n.grpcAddr, n.httpAddr = startHealthy(t, start)
		}
		n.grpc = dialGRPC(t, n.grpcAddr)
	}
	return nodes
}

// taggedBin is the gatehouse binary built with the test binary's build tags, shared like
// gatehouseBin.
var taggedBin struct {
	mu    sync.Mutex
	users int
	dir   string
	path  string
}

// faultBinary returns the gatehouse binary the fault tests run: built with the build tags of the
// test binary, so that `go test -tags naivereader` runs nodes with the naive log reader
// (server/store/log_naive.go); without tags, the binary of the other process tests.
func faultBinary(t *testing.T) string {
	t.Helper()
	tags := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-tags" {
				tags = s.Value
			}
		}
	}
	if tags == "" {
		return gatehouseBinary(t)
	}
	b := &taggedBin
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.users == 0 {
		dir, err := os.MkdirTemp("", "gatehouse-fault-test-")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "gatehouse")
		out, err := exec.Command("go", "build", "-tags", tags, "-o", path, "github.com/gatehouse/gatehouse/cmd/gatehouse").CombinedOutput()
		if err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("go build -tags %s ./cmd/gatehouse: %v\n%s", tags, err, out)
		}
		b.dir, b.path = dir, path
	}
	b.users++
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.users--; b.users == 0 {
			_ = os.RemoveAll(b.dir)
		}
	})
	return b.path
}

// kill sends SIGKILL to the node and waits until it has exited.
func (n *faultNode) kill(t *testing.T) {
	t.Helper()
	if err := n.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL node %s: %v", n.name, err)
	}
	n.p.wait(t, "node "+n.name+" after SIGKILL")
}

// alive fails the test if the node's process has exited.
func (n *faultNode) alive(t *testing.T) {
	t.Helper()
	select {
	case <-n.p.exited:
		t.Fatalf("node %s exited with code %d; output:\n%s", n.name, n.p.cmd.ProcessState.ExitCode(), n.p.out.String())
	default:
	}
}

// faultCall makes one unary call bounded by d.
func faultCall[R any, PR interface {
	*R
	proto.Message
}](inv testnode.Invoker, d time.Duration, method, token string, req proto.Message) (PR, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return testnode.Call[R, PR](ctx, inv, method, token, req)
}

// mustFaultCall is faultCall that fails the test on an error.
func mustFaultCall[R any, PR interface {
	*R
	proto.Message
}](t *testing.T, inv testnode.Invoker, method, token string, req proto.Message) PR {
	t.Helper()
	resp, err := faultCall[R, PR](inv, faultWait, method, token, req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return resp
}

// faultLogin logs username in and returns the session.
func faultLogin(t *testing.T, inv testnode.Invoker, username, password string) *gatehousev1.CreateSessionResponse {
	t.Helper()
	return mustFaultCall[gatehousev1.CreateSessionResponse](t, inv, gatehousev1.SessionService_CreateSession_FullMethodName, "",
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
}

// newAuditor creates a user holding gatehouse.auditor and returns a session token of it.
func newAuditor(t *testing.T, inv testnode.Invoker, admin, username string) string {
	t.Helper()
	const password = "auditor-password"
	u := mustFaultCall[gatehousev1.CreateUserResponse](t, inv, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: username, Password: password}).User
	mustFaultCall[gatehousev1.GrantRoleResponse](t, inv, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "gatehouse.auditor", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
	return faultLogin(t, inv, username, password).Token
}

// markLog makes a change through inv as admin (a role named name) and returns, through
// ListEvents as auditor, the log after `after` up to and including that change's event. Every
// change acknowledged before the call comes before that event in the log.
//
// NOTE: ListEvents returns only the events below the log's horizon, which a transaction running
// anywhere on the PostgreSQL server holds back (other tests' included): until the horizon passes
// the marker a page may come back short or empty, so empty pages are read again until it shows.
func markLog(t *testing.T, inv testnode.Invoker, admin, auditor, after, name string) []*gatehousev1.Event {
	t.Helper()
	mustFaultCall[gatehousev1.CreateRoleResponse](t, inv, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: name})
	var all []*gatehousev1.Event
	deadline := time.Now().Add(faultWait)
	for {
		page := mustFaultCall[gatehousev1.ListEventsResponse](t, inv, gatehousev1.SessionService_ListEvents_FullMethodName, auditor,
			&gatehousev1.ListEventsRequest{After: after, PageSize: 1000})
		for _, ev := range page.Events {
			all = append(all, ev)
			if ev.Type == gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED && ev.GetRoleCreated().GetRole().GetName() == name {
				return all
			}
		}
		if len(page.Events) > 0 {
			after = page.Events[len(page.Events)-1].Cursor
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListEvents has not reached the creation of role %s within %s (%d events listed)", name, faultWait, len(all))
		}
		time.Sleep(20 * time.Millisecond) // NOTE: polling the horizon: there is no event to wait on
	}
}

// markStart makes a change and returns the cursor of its event: the start of a test's window.
func markStart(t *testing.T, inv testnode.Invoker, admin, auditor string) string {
	t.Helper()
	evs := markLog(t, inv, admin, auditor, "", "fault_window_start")
	return evs[len(evs)-1].Cursor
}

// markEnd makes a change and returns the log from start up to and including its event: the
// window every stream of the test is compared with.
func markEnd(t *testing.T, inv testnode.Invoker, admin, auditor, start string) []*gatehousev1.Event {
	t.Helper()
	return markLog(t, inv, admin, auditor, start, "fault_window_end")
}

// collector gathers what a stream of the client package yields: events of WatchEvents, or
// messages of WatchSession.
type collector[T any] struct {
	name string
	key  func(T) string // the key waitKey looks for: an event's cursor
	mu   sync.Mutex
	msgs []T
	seen map[string]bool
	err  error         // the terminal error yielded, if any
	ch   chan struct{} // closed and replaced whenever something is added
	done chan struct{} // closed when the iteration has ended
}

// collect ranges over the sequence seq returns on a goroutine, until it ends or the test does.
func collect[T any](t *testing.T, name string, key func(T) string, seq func(ctx context.Context) iter.Seq2[T, error]) *collector[T] {
	c := &collector[T]{name: name, key: key, seen: map[string]bool{}, ch: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(c.done)
		for m, err := range seq(ctx) {
			c.mu.Lock()
			if err != nil {
				c.err = err
			} else {
				c.msgs = append(c.msgs, m)
				if key != nil {
					c.seen[key(m)] = true
				}
			}
			close(c.ch)
			c.ch = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

// collectEvents collects a WatchEvents sequence.
func collectEvents(t *testing.T, name string, seq func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error]) *collector[*gatehousev1.Event] {
	return collect(t, name, (*gatehousev1.Event).GetCursor, seq)
}

// all returns a copy of what was collected so far.
func (c *collector[T]) all() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]T(nil), c.msgs...)
}

// waitUntil waits until cond holds on what was collected, failing the test after faultWait or if
// the stream ended with an error first.
func (c *collector[T]) waitUntil(t *testing.T, what string, cond func(msgs []T, seen map[string]bool) bool) {
	t.Helper()
	deadline := time.After(faultWait)
	for {
		c.mu.Lock()
		ok, err, n, ch := cond(c.msgs, c.seen), c.err, len(c.msgs), c.ch
		c.mu.Unlock()
		switch {
		case ok:
			return
		case err != nil:
			t.Fatalf("%s: waiting for %s: the stream ended with %v after %d messages", c.name, what, err, n)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: waiting for %s: not within %s (%d messages so far)", c.name, what, faultWait, n)
		}
	}
}

// waitKey waits until the collector has the message with key k (the event at cursor k).
func (c *collector[T]) waitKey(t *testing.T, k string) {
	t.Helper()
	c.waitUntil(t, "the event at "+decodeCursor(k), func(_ []T, seen map[string]bool) bool { return seen[k] })
}

// waitCount waits until the collector has n messages.
func (c *collector[T]) waitCount(t *testing.T, n int) {
	t.Helper()
	c.waitUntil(t, fmt.Sprintf("%d messages", n), func(msgs []T, _ map[string]bool) bool { return len(msgs) >= n })
}

// diffLogs compares a stream with the log as ListEvents returns it: the same events, each once,
// in the same order. It returns "" when they are the same, or what differs.
func diffLogs(got, want []*gatehousev1.Event) string {
	var b strings.Builder
	wantAt := map[string]int{}
	for i, ev := range want {
		wantAt[ev.Cursor] = i
	}
	count := map[string]int{}
	for _, ev := range got {
		count[ev.Cursor]++
	}
	var missing, repeated, extra, listedTwice []string
	listed := map[string]bool{}
	for _, ev := range want {
		if count[ev.Cursor] == 0 {
			missing = append(missing, describe(ev))
		}
		if listed[ev.Cursor] {
			listedTwice = append(listedTwice, describe(ev))
		}
		listed[ev.Cursor] = true
	}
	for _, ev := range got {
		if count[ev.Cursor] > 1 {
			repeated = append(repeated, describe(ev))
			count[ev.Cursor] = 1
		}
		if _, ok := wantAt[ev.Cursor]; !ok {
			extra = append(extra, describe(ev))
		}
	}
	list := func(what string, evs []string) {
		if len(evs) == 0 {
			return
		}
		fmt.Fprintf(&b, "%d %s:", len(evs), what)
		for i, e := range evs {
			if i == 10 {
				fmt.Fprintf(&b, " ...")
				break
			}
			fmt.Fprintf(&b, " %s", e)
		}
		b.WriteString("\n")
	}
	list("events missing from the stream", missing)
	list("events streamed more than once", repeated)
	list("events streamed that ListEvents does not return", extra)
	list("events ListEvents returned more than once (paging from the last cursor of each page)", listedTwice)
	if b.Len() == 0 {
		// NOTE: here got and want hold the same events, each once, so they have the same length.
		for i := range got {
			if got[i].Cursor != want[i].Cursor {
				fmt.Fprintf(&b, "out of order from position %d: streamed %s, ListEvents has %s\n", i, describe(got[i]), describe(want[i]))
				break
			}
		}
	}
	if b.Len() > 0 {
		fmt.Fprintf(&b, "(%d events streamed, %d listed)", len(got), len(want))
	}
	return b.String()
}

// upTo returns the events of evs up to and including the one at cursor (all of them when it is
// not there).
func upTo(evs []*gatehousev1.Event, cursor string) []*gatehousev1.Event {
	for i, ev := range evs {
		if ev.Cursor == cursor {
			return evs[:i+1]
		}
	}
	return evs
}

// describe names an event for a failure message: its type and its decoded cursor.
func describe(ev *gatehousev1.Event) string {
	return fmt.Sprintf("%s@%s", strings.TrimPrefix(ev.Type.String(), "EVENT_TYPE_"), decodeCursor(ev.Cursor))
}

// decodeCursor shows a cursor's position ("xid.id"), for failure messages only.
func decodeCursor(c string) string {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return c
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 4 {
		return c
	}
	return parts[2] + "." + parts[3]
}

// lockedLog is a slog handler's output that tests can search.
func lockedLog() (*lockedBuffer, *slog.Logger) {
	buf := &lockedBuffer{}
	return buf, slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// codeOf is the gRPC code of an error of any front (Connect errors included).
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}

// faultHTTPClient is an HTTP client for a node's port that speaks unencrypted HTTP/2 only, with
// the smallest receive windows Go allows (64 KiB) when small is set: a stream whose reader stops
// then stalls the server after 64 KiB instead of the default 4 MiB.
func faultHTTPClient(small bool) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	if small {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	}
	return &http.Client{Transport: tr}
}

// callResult is one call a load made.
type callResult struct {
	worker     int
	start, end time.Time
	err        error
	id         string // what the call created, if it did
}

// load runs workers that each call op in a loop, one call at a time, until halted.
type load struct {
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []callResult
	changed chan struct{} // closed and replaced whenever a result is added
}

// errDone, returned by a load's op, ends its worker without a result.
var errDone = errors.New("done")

// startLoad starts workers calling op(worker, iteration) until op returns errDone or the load
// is halted; op bounds each call itself. After a failed call a worker pauses briefly before the
// next, so that a node that refuses every call is not spun on. The load is halted when the test
// ends at the latest.
func startLoad(t *testing.T, workers int, op func(worker, iter int) (id string, err error)) *load {
	l := &load{stop: make(chan struct{}), changed: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				r := callResult{worker: w, start: time.Now()}
				r.id, r.err = op(w, i)
				r.end = time.Now()
				if r.err == errDone {
					return
				}
				l.mu.Lock()
				l.results = append(l.results, r)
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
				if r.err != nil {
					select { // NOTE: pacing after a failure, not waiting for something
					case <-l.stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the workers and waits until their calls in flight have returned.
func (l *load) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// wait waits until every worker has finished (op returned errDone), failing the test after
// faultWait.
func (l *load) wait(t *testing.T) {
	t.Helper()
	finished := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(faultWait):
		t.Fatalf("the load did not finish within %s (%d calls made)", faultWait, len(l.all()))
	}
}

// all returns the results so far.
func (l *load) all() []callResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]callResult(nil), l.results...)
}

// waitUntil waits until cond holds on the results, failing the test after faultWait.
func (l *load) waitUntil(t *testing.T, what string, cond func([]callResult) bool) {
	t.Helper()
	deadline := time.After(faultWait)
	for {
		l.mu.Lock()
		ok, n, ch := cond(l.results), len(l.results), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("waiting for %s: not within %s (%d calls made)", what, faultWait, n)
		}
	}
}

// succeeded counts the calls that succeeded.
func succeeded(rs []callResult) int {
	n := 0
	for _, r := range rs {
		if r.err == nil {
			n++
		}
	}
	return n
}

// perWorker reports whether every one of workers has at least n results r with keep(r).
func perWorker(rs []callResult, workers, n int, keep func(callResult) bool) bool {
	count := make([]int, workers)
	for _, r := range rs {
		if keep(r) {
			count[r.worker]++
		}
	}
	for _, c := range count {
		if c < n {
			return false
		}
	}
	return true
}
