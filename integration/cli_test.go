package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/store"
)

// gatehouseBin is the gatehouse binary built for the tests that run it: built once, on first use,
// shared by every test using it at the time, and deleted when the last of them ends.
var gatehouseBin struct {
	mu    sync.Mutex
	users int
	dir   string
	path  string
}

// gatehouseBinary returns the path of a freshly built gatehouse binary.
func gatehouseBinary(t *testing.T) string {
	t.Helper()
	b := &gatehouseBin
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.users == 0 {
		dir, err := os.MkdirTemp("", "gatehouse-cli-test-")
		if err != nil {
			t.Fatal(err)
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("finding the go command: %v", err)
		}
		path := filepath.Join(dir, "gatehouse")
		out, err := exec.Command(goTool, "build", "-o", path, "github.com/gatehouse/gatehouse/cmd/gatehouse").CombinedOutput()
		if err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("go build ./cmd/gatehouse: %v\n%s", err, out)
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

// cliEnv is the environment of the processes under test: ours without any GATEHOUSE_ variable,
// plus extra.
func cliEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEHOUSE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// proc is a gatehouse process under test.
type proc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer // stdout and stderr
	exited chan struct{} // closed once the process has exited and out is complete
}

// startProc starts the binary with args and env, and kills it when the test ends if it still runs.
func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	return startProcIn(t, "", bin, env, args...)
}

// startProcIn is startProc in the working directory dir ("": the test's).
func startProcIn(t *testing.T, dir, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting gatehouse %v: %v", args, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// wait waits, bounded, for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, what string) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: the process did not exit within 60s; output:\n%s", what, p.out.String())
		return -1
	}
}

// run runs the binary to completion and returns its exit code and output.
func runProc(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	p := startProc(t, bin, env, args...)
	code := p.wait(t, "gatehouse "+strings.Join(args, " "))
	return code, p.out.String()
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitHealthy polls /healthz until it answers 200 from the process's own listener, the process
// exits, or a deadline passes.
func waitHealthy(t *testing.T, p *proc, httpAddr string) {
	t.Helper()
	if err := healthy(p, httpAddr); err != nil {
		t.Fatal(err)
	}
}

// errPortTaken is healthy's error when the process exited because one of its ports was taken.
var errPortTaken = errors.New("a port was taken")

// healthy is waitHealthy's wait, returning its failure.
//
// NOTE: the port freeAddr found free may be taken by another test's node before this process
// binds it: the process then exits (errPortTaken), and the other node answers /healthz on that
// address. Only an answer while this process holds the listening socket counts (listens).
func healthy(p *proc, httpAddr string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	backoff := 5 * time.Millisecond
	for {
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && listens(p.cmd.Process.Pid, httpAddr) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node did not become healthy on %s within 60s (last: %v); output:\n%s", httpAddr, err, p.out.String())
		}
		select {
		case <-p.exited:
			out := p.out.String()
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, out)
			}
			return fmt.Errorf("the node exited with code %d before becoming healthy; output:\n%s", p.cmd.ProcessState.ExitCode(), out)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// listens reports whether process pid holds a socket listening on addr (a loopback host:port),
// from /proc/net/tcp and the process's open files.
func listens(pid int, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	// Each line: sl local_address rem_address st ... inode; a listener has st 0A.
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !strings.HasSuffix(f[1], fmt.Sprintf(":%04X", n)) {
			continue
		}
		inodes["socket:["+f[9]+"]"] = true
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[link] {
			return true
		}
	}
	return false
}

// serve starts `gatehouse serve` on a database with fresh ports and waits until it is healthy
// (startHealthy). It returns the process and its HTTP address.
func serve(t *testing.T, bin, database string, env []string) (*proc, string) {
	t.Helper()
	p, _, httpAddr := startHealthy(t, func(grpcAddr, httpAddr string) *proc {
		return startProc(t, bin, env, "serve", "--database", database, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)
	})
	return p, httpAddr
}

// startHealthy starts a node with start on fresh loopback ports and waits until it is healthy,
// starting it again on other ports when one was taken meanwhile (see healthy), up to three times.
func startHealthy(t *testing.T, start func(grpcAddr, httpAddr string) *proc) (p *proc, grpcAddr, httpAddr string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		grpcAddr, httpAddr = freeAddr(t), freeAddr(t)
		p = start(grpcAddr, httpAddr)
		err := healthy(p, httpAddr)
		if err == nil {
			return p, grpcAddr, httpAddr
		}
		retryOnTakenPort(t, err, attempt)
	}
}

// retryOnTakenPort fails the test with err unless err is healthy's errPortTaken and attempt is
// under three: the caller then starts the node again on other ports.
func retryOnTakenPort(t *testing.T, err error, attempt int) {
	t.Helper()
	if !errors.Is(err, errPortTaken) || attempt >= 3 {
		t.Fatal(err)
	}
	t.Logf("starting again on other ports: %v", err)
}

// stop sends SIGTERM and checks that the node shuts down cleanly, with exit code 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if code := p.wait(t, "after SIGTERM"); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0; output:\n%s", code, p.out.String())
	}
	if out := p.out.String(); !strings.Contains(out, "shutting down") {
		t.Errorf("no shutdown in the log:\n%s", out)
	}
}

// restLogin logs in over REST on a node's HTTP address.
func restLogin(httpAddr, username, password string) (*gatehousev1.CreateSessionResponse, error) {
	c := &rawREST{base: "http://" + httpAddr}
	return login(c, username, password)
}

func TestCLI(t *testing.T) {
	bin := gatehouseBinary(t)

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		flags := map[string][]string{
			"serve":   {"database", "grpc-addr", "http-addr", "tls-cert", "tls-key", "max-concurrent-hashes", "shutdown-timeout", "log-level", "log-format"},
			"migrate": {"database", "log-level", "log-format"},
		}
		for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"-h"}, {"migrate", "--help"}} {
			code, out := runProc(t, bin, cliEnv(), args...)
			if code != 0 {
				t.Errorf("gatehouse %v: exit code %d, want 0; output:\n%s", args, code, out)
			}
			cmd := "serve"
			if args[0] == "migrate" {
				cmd = "migrate"
			}
			for _, f := range flags[cmd] {
				env := "GATEHOUSE_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))
				if !strings.Contains(out, "--"+f+" ("+env+")") {
					t.Errorf("gatehouse %v does not list --%s with %s:\n%s", args, f, env, out)
				}
			}
			// Every flag listed names its variable.
			for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)(.*)$`).FindAllStringSubmatch(out, -1) {
				if !strings.HasPrefix(strings.TrimSpace(m[2]), "(GATEHOUSE_") {
					t.Errorf("gatehouse %v lists --%s without its environment variable: %q", args, m[1], m[0])
				}
			}
			if cmd == "serve" && !strings.Contains(out, "GATEHOUSE_ADMIN_PASSWORD") {
				t.Errorf("gatehouse %v does not mention GATEHOUSE_ADMIN_PASSWORD:\n%s", args, out)
			}
		}
		if code, out := runProc(t, bin, cliEnv(), "frobnicate"); code == 0 || !strings.Contains(out, "unknown command") {
			t.Errorf("gatehouse frobnicate: exit code %d, output:\n%s", code, out)
		}
		if code, out := runProc(t, bin, cliEnv(), "--no-such-flag"); code == 0 {
			t.Errorf("gatehouse --no-such-flag: exit code 0, output:\n%s", out)
		}
	})

	t.Run("migrate", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		db := "sqlite://" + filepath.Join(dir, "m.db")
		for i := range 2 { // migrating an up-to-date database changes nothing and succeeds
			if code, out := runProc(t, bin, cliEnv(), "migrate", "--database", db); code != 0 {
				t.Fatalf("migrate #%d: exit code %d; output:\n%s", i+1, code, out)
			}
		}
		checkMigrated(t, db, 0)

		// The database can come from GATEHOUSE_DATABASE, and a flag wins over the variable.
		envDB := "sqlite://" + filepath.Join(dir, "env.db")
		if code, out := runProc(t, bin, cliEnv("GATEHOUSE_DATABASE="+envDB), "migrate"); code != 0 {
			t.Fatalf("migrate with GATEHOUSE_DATABASE: exit code %d; output:\n%s", code, out)
		}
		checkMigrated(t, envDB, 0)
		flagDB := "sqlite://" + filepath.Join(dir, "flag.db")
		if code, out := runProc(t, bin, cliEnv("GATEHOUSE_DATABASE=sqlite://"+filepath.Join(dir, "not-this.db")), "migrate", "--database", flagDB); code != 0 {
			t.Fatalf("migrate with a flag and GATEHOUSE_DATABASE: exit code %d; output:\n%s", code, out)
		}
		checkMigrated(t, flagDB, 0)
		if _, err := os.Stat(filepath.Join(dir, "not-this.db")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the flag did not win over GATEHOUSE_DATABASE: not-this.db exists (%v)", err)
		}

		if code, out := runProc(t, bin, cliEnv(), "migrate", "--database", "mysql://x"); code == 0 || !strings.Contains(out, "unsupported database URL") {
			t.Errorf("migrate of a mysql:// URL: exit code %d, output:\n%s", code, out)
		}
	})

	// A port taken between freeAddr and the node's bind (here on purpose) makes the node exit;
	// startHealthy starts it again on other ports, and the node that answers is the new one.
	t.Run("port taken", func(t *testing.T) {
		t.Parallel()
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		db := "sqlite://" + filepath.Join(t.TempDir(), "p.db")
		var starts []*proc
		p, _, _ := startHealthy(t, func(grpcAddr, httpAddr string) *proc {
			if len(starts) == 0 {
				grpcAddr = taken.Addr().String()
			}
			p := startProc(t, bin, cliEnv(), "serve", "--database", db, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)
			starts = append(starts, p)
			return p
		})
		if len(starts) != 2 || p != starts[1] {
			t.Fatalf("the node started %d times, want 2 (the first on a taken port)", len(starts))
		}
		if out := starts[0].out.String(); !strings.Contains(out, "address already in use") {
			t.Errorf("the first start did not fail on its taken port:\n%s", out)
		}
		p.stop(t)
	})

	t.Run("serve", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		db := "sqlite://" + filepath.Join(dir, "g.db")
		env := cliEnv()

		// First start: an empty database, no GATEHOUSE_ADMIN_PASSWORD: a generated password, shown once.
		first, httpAddr := serve(t, bin, db, env)
		out := first.out.String()
		m := regexp.MustCompile(`generated password.*\bpassword=([A-Za-z0-9_-]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the first start printed no generated administrator password:\n%s", out)
		}
		generated := m[1]
		if n := strings.Count(out, generated); n != 1 {
			t.Errorf("the generated password appears %d times in the log, want once:\n%s", n, out)
		}
		s, err := restLogin(httpAddr, "admin", generated)
		if err != nil {
			t.Fatalf("logging in as admin with the generated password: %v", err)
		}
		if !strings.HasPrefix(s.Token, auth.TokenPrefix) || !slices.Contains(s.Roles, auth.RoleAdmin) {
			t.Errorf("admin session: token prefix %q, roles %v", s.Token[:4], s.Roles)
		}

		// A second process on the same file refuses to start, and says why.
		second := startProc(t, bin, env, "serve", "--database", db, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
		if code := second.wait(t, "a second serve on the same file"); code == 0 {
			t.Errorf("a second serve on the same SQLite file exited with 0; output:\n%s", second.out.String())
		}
		if out := second.out.String(); !strings.Contains(out, "in use by another gatehouse process") {
			t.Errorf("a second serve on the same SQLite file said:\n%s", out)
		}
		if !strings.Contains(second.out.String(), "pid "+strconv.Itoa(first.cmd.Process.Pid)) {
			t.Errorf("the refusal does not name the running process (pid %d):\n%s", first.cmd.Process.Pid, second.out.String())
		}
		if code, out := runProc(t, bin, env, "migrate", "--database", db); code == 0 || !strings.Contains(out, "in use by another gatehouse process") {
			t.Errorf("migrate on a file a node is serving: exit code %d, output:\n%s", code, out)
		}
		// The first node is unaffected.
		if _, err := restLogin(httpAddr, "admin", generated); err != nil {
			t.Errorf("the first node after the refused second start: %v", err)
		}

		first.stop(t)
		if out := first.out.String(); strings.Count(out, generated) != 1 {
			t.Errorf("the generated password appears %d times in the log after shutdown, want once", strings.Count(out, generated))
		}

		// Second start on the same database: the administrator exists, nothing is generated or shown.
		again, httpAddr := serve(t, bin, db, env)
		if out := again.out.String(); strings.Contains(out, generated) || strings.Contains(out, "generated password") {
			t.Errorf("the second start printed a password:\n%s", out)
		}
		if _, err := restLogin(httpAddr, "admin", generated); err != nil {
			t.Errorf("logging in as admin with the generated password after a restart: %v", err)
		}
		again.stop(t)
		if out := again.out.String(); strings.Contains(out, generated) {
			t.Errorf("the second run printed the password:\n%s", out)
		}
	})

	t.Run("serve with GATEHOUSE_ADMIN_PASSWORD", func(t *testing.T) {
		t.Parallel()
		db := "sqlite://" + filepath.Join(t.TempDir(), "g.db")
		const password = "env-admin-password-7Hq"
		p, httpAddr := serve(t, bin, db, cliEnv("GATEHOUSE_ADMIN_PASSWORD="+password))
		if _, err := restLogin(httpAddr, "admin", password); err != nil {
			t.Errorf("logging in with GATEHOUSE_ADMIN_PASSWORD: %v", err)
		}
		p.stop(t)
		if out := p.out.String(); strings.Contains(out, password) || strings.Contains(out, "generated password") {
			t.Errorf("the log shows a password:\n%s", out)
		}
	})
}

// checkMigrated opens a migrated SQLite database and checks its built-in roles and user count.
func checkMigrated(t *testing.T, database string, wantUsers int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, database)
	if err != nil {
		t.Fatalf("opening %s: %v", database, err)
	}
	defer st.Close()
	for _, r := range auth.BuiltInRoles {
		ok, err := st.Client.Role.Get(ctx, r.Name)
		if err != nil || !ok.BuiltIn {
			t.Errorf("%s: built-in role %s: %v %v", database, r.Name, ok, err)
		}
	}
	n, err := st.Client.User.Query().Count(ctx)
	if err != nil || n != wantUsers {
		t.Errorf("%s: %d users (%v), want %d", database, n, err, wantUsers)
	}
	var events int
	if err := st.DB.QueryRow("SELECT COUNT(*) FROM events").Scan(&events); err != nil {
		t.Errorf("%s: no events table: %v", database, err)
	}
}
