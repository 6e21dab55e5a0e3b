// Package testpg gives each Go test its own, brand-new PostgreSQL database.
//
// All tests in a test binary share one PostgreSQL server, which is started
// lazily by the first test that needs it. The server is either
//
//   - the server named by the environment variable GATEHOUSE_TEST_DATABASE_URL
//     (an admin DSN of a server on which CREATE DATABASE is allowed), or
//   - a throwaway cluster created with initdb and started with pg_ctl, both of
//     which must be on PATH (PostgreSQL 15 server binaries).
//
// The shared throwaway cluster's default collation is ICU en-US (see
// SharedOptions), not the C locale: text sorts as it does on a typical
// production server, where "app_admin" comes before "app.viewer", so code that
// relies on the database sorting strings in byte order fails in tests too.
// NewClusterWith starts a private cluster with other options.
//
// Typical use:
//
//	func TestMain(m *testing.M) { testpg.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		db, err := sql.Open("postgres", testpg.NewDatabase(t))
//		...
//	}
//
// Main stops and deletes the throwaway cluster when the tests are done. A
// cluster that is left behind (because a test binary did not use Main, or was
// killed) lives in os.TempDir under a directory named gatehouse-testpg-*, and
// is stopped and deleted by the next test binary that starts a throwaway
// cluster once the process that created it has exited.
//
// When the tests run as root, initdb and pg_ctl (and therefore the server) are
// run as the unprivileged user "nobody", because initdb refuses to run as root.
package testpg

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
)

// EnvDatabaseURL is the environment variable that, when set, names an admin
// DSN of an existing PostgreSQL server to use instead of a throwaway cluster.
// The user in the DSN must be allowed to CREATE DATABASE and DROP DATABASE.
const EnvDatabaseURL = "GATEHOUSE_TEST_DATABASE_URL"

// DirPrefix is the prefix of the directories in os.TempDir that hold
// throwaway clusters.
const DirPrefix = "gatehouse-testpg-"

const (
	reapingPrefix = DirPrefix + "reaping-"
	ownerFile     = "owner.pid"
	logFileName   = "postgres.log"
	adminUser     = "postgres"
	adminDB       = "postgres"
	maxNameLen    = 63 // NAMEDATALEN-1
	startAttempts = 3
	pingTimeout   = 30 * time.Second
	stopTimeout   = 60 * time.Second
	createTimeout = 2 * time.Minute
)

// howToGetServer is appended to every error that means "no usable server".
const howToGetServer = "to run these tests, either install the PostgreSQL 15 server binaries " +
	"so that initdb and pg_ctl are on PATH (Debian/Ubuntu: apt-get install postgresql-15, then " +
	"add /usr/lib/postgresql/15/bin to PATH), or set " + EnvDatabaseURL + " to an admin DSN of a " +
	"running server on which CREATE DATABASE is allowed, e.g. " + EnvDatabaseURL +
	"='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'"

// Cluster is a PostgreSQL server that tests create databases on. It is either
// a throwaway cluster owned by this package or an external server named by
// GATEHOUSE_TEST_DATABASE_URL. A Cluster is safe for concurrent use.
type Cluster struct {
	external bool
	adminDSN string
	// dsnFor returns the DSN of database name on this server.
	dsnFor func(name string) string

	// mu guards admin and stopped. Holders of the read lock may use admin;
	// Restart and Stop take the write lock.
	mu      sync.RWMutex
	admin   *sql.DB
	stopped bool

	// Throwaway clusters only.
	baseDir  string // os.TempDir()/gatehouse-testpg-*, parent of dataDir
	dataDir  string
	sockDir  string
	logFile  string
	port     int
	pgCtl    string
	runAs    *runAsUser // nil: run binaries as the current user
	stopOnce sync.Once
}

var (
	sharedMu      sync.Mutex
	sharedCluster *Cluster
	sharedErr     error

	// live holds the throwaway clusters of this process that have not been
	// stopped, so that Main can stop them all. It is guarded by liveMu.
	liveMu sync.Mutex
	live   = map[*Cluster]bool{}
)

// Options configures a throwaway cluster.
type Options struct {
	// ICULocale is the ICU locale of the cluster's default collation, e.g.
	// "en-US" (initdb --locale-provider=icu --icu-locale=ICULocale
	// --locale=C.utf8). Empty means the libc C locale, which sorts text in
	// byte order.
	ICULocale string
}

// SharedOptions returns the options of the shared throwaway cluster (Server):
// ICU en-US collation.
func SharedOptions() Options { return Options{ICULocale: "en-US"} }

// Server returns the PostgreSQL server shared by all tests of this test
// binary, starting it on first use: the server named by
// GATEHOUSE_TEST_DATABASE_URL if that is set, otherwise a throwaway cluster.
// If no server can be had, Server calls t.Fatalf with instructions on how to
// provide one; it never skips the test. A failure to start is remembered, so
// later callers fail quickly with the same message.
func Server(t testing.TB) *Cluster {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil && sharedErr == nil {
		if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
			sharedCluster, sharedErr = openExternal(dsn)
		} else {
			sharedCluster, sharedErr = startThrowaway(SharedOptions())
		}
	}
	if sharedErr != nil {
		t.Fatalf("testpg: %v", sharedErr)
	}
	return sharedCluster
}

// NewCluster starts a private throwaway cluster for t alone, regardless of
// GATEHOUSE_TEST_DATABASE_URL, with the options of the shared cluster
// (SharedOptions), and registers a cleanup that stops and deletes it. Use it
// for tests that restart or otherwise disturb the server, so that tests
// sharing Server are not affected. It calls t.Fatalf if the cluster cannot be
// started.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	return NewClusterWith(t, SharedOptions())
}

// NewClusterWith is NewCluster with the given options, e.g. a collation that
// a test depends on whatever server GATEHOUSE_TEST_DATABASE_URL names.
func NewClusterWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := startThrowaway(opts)
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// NewDatabase creates a brand-new, empty database for t on the shared server
// (see Server) and returns a lib/pq DSN for it, usable with
// sql.Open("postgres", dsn). The database is dropped (WITH (FORCE)) when t and
// its subtests finish.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return Server(t).NewDatabase(t)
}

// Main runs the tests of m, then stops and deletes the throwaway clusters of
// this process (the shared one and any NewCluster that is still running) and
// exits with the tests' exit code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testpg.Main(m) }
//
// Main also stops and deletes the clusters when the test binary is
// interrupted by SIGINT or SIGTERM.
func Main(m *testing.M) {
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigs:
			stopAll()
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			reraise(sig)
		case <-done:
		}
	}()

	code := m.Run()

	signal.Stop(sigs)
	close(done)
	stopAll()
	os.Exit(code)
}

// stopAll stops the shared server and all throwaway clusters of this process.
func stopAll() {
	var cs []*Cluster
	sharedMu.Lock()
	if sharedCluster != nil {
		cs = append(cs, sharedCluster) // may be external
	}
	sharedMu.Unlock()
	liveMu.Lock()
	for c := range live {
		cs = append(cs, c)
	}
	liveMu.Unlock()
	for _, c := range cs {
		c.Stop()
	}
}

// AdminDSN returns a DSN for the admin ("postgres") database of the server,
// connecting as a user that may create and drop databases.
func (c *Cluster) AdminDSN() string { return c.adminDSN }

// DSNFor returns a DSN for the database dbname on the server, connecting as
// the admin user. It does not create the database.
func (c *Cluster) DSNFor(dbname string) string { return c.dsnFor(dbname) }

// External reports whether c is the external server named by
// GATEHOUSE_TEST_DATABASE_URL rather than a throwaway cluster.
func (c *Cluster) External() bool { return c.external }

// LogFile returns the path of the server log of a throwaway cluster, or "" for
// an external server.
func (c *Cluster) LogFile() string { return c.logFile }

// NewDatabase creates a brand-new, empty database on c for t and returns a
// lib/pq DSN for it. The database name is derived from t.Name() plus a random
// suffix. The database is dropped (WITH (FORCE)) when t and its subtests
// finish.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		t.Fatalf("testpg: NewDatabase on a stopped cluster")
	}
	if c.admin == nil {
		t.Fatalf("testpg: NewDatabase on a cluster whose restart failed")
	}

	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	var (
		name string
		err  error
	)
	for range 3 {
		name = databaseName(t.Name())
		_, err = c.admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+" TEMPLATE template0")
		if pqErr, ok := errors.AsType[*pq.Error](err); ok && pqErr.Code == "42P04" { // duplicate_database
			continue
		}
		break
	}
	if err != nil {
		t.Fatalf("testpg: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := c.dropDatabase(name); err != nil {
			t.Errorf("testpg: drop database %s: %v", name, err)
		}
	})
	return c.dsnFor(name)
}

// dropDatabase drops the database name, disconnecting its sessions.
func (c *Cluster) dropDatabase(name string) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		if !c.external {
			return nil // the database went away with the cluster
		}
		// Do not leave garbage on a shared external server.
		db, err := sql.Open("postgres", c.adminDSN)
		if err != nil {
			return err
		}
		defer db.Close()
		return dropWith(db, name)
	}
	if c.admin == nil {
		return errors.New("cluster is down after a failed restart")
	}
	return dropWith(c.admin, name)
}

func dropWith(db *sql.DB, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	_, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)")
	return err
}

// Restart restarts a throwaway cluster (pg_ctl restart -m fast -w), keeping
// its port, data and databases. Sessions open at the time of the restart are
// terminated; database/sql pools must reconnect. Restart calls t.Fatalf for an
// external server, because only the throwaway cluster can be restarted. It
// affects every test using c, so tests that restart should normally use their
// own NewCluster rather than the shared Server.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if c.external {
		t.Fatalf("testpg: Restart needs the throwaway cluster started by testpg, "+
			"but this is the external server named by %s; unset %s and make sure "+
			"initdb and pg_ctl (PostgreSQL 15) are on PATH", EnvDatabaseURL, EnvDatabaseURL)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		t.Fatalf("testpg: Restart on a stopped cluster")
	}
	if c.admin != nil {
		c.admin.Close()
		c.admin = nil
	}
	logStart := fileSize(c.logFile)
	out, err := c.run(c.pgCtl, "restart", "-D", c.dataDir, "-l", c.logFile,
		"-m", "fast", "-w", "-t", "60", "-o", c.serverOptions())
	if err != nil {
		t.Fatalf("testpg: pg_ctl restart: %v\n%s\nserver log %s:\n%s",
			err, out, c.logFile, logTail(c.logFile, logStart))
	}
	db, err := openAndPing(c.adminDSN)
	if err != nil {
		t.Fatalf("testpg: after restart: %v\nserver log %s:\n%s",
			err, c.logFile, logTail(c.logFile, logStart))
	}
	c.admin = db
}

// Stop shuts the server down. For a throwaway cluster it stops the server
// (pg_ctl stop -m immediate) and deletes its directory; for an external
// server it only closes the admin connection pool. Stop is idempotent. If c
// is the shared server, the next call of Server starts a new one. Errors are
// reported on standard error.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		sharedMu.Lock()
		if sharedCluster == c {
			sharedCluster = nil
		}
		sharedMu.Unlock()
		liveMu.Lock()
		delete(live, c)
		liveMu.Unlock()

		c.mu.Lock()
		defer c.mu.Unlock()
		c.stopped = true
		if c.admin != nil {
			c.admin.Close()
			c.admin = nil
		}
		if c.external {
			return
		}
		if out, err := c.run(c.pgCtl, "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-t", "60"); err != nil {
			fmt.Fprintf(os.Stderr, "testpg: pg_ctl stop %s: %v\n%s\n", c.dataDir, err, out)
		}
		if err := os.RemoveAll(c.baseDir); err != nil {
			fmt.Fprintf(os.Stderr, "testpg: remove %s: %v\n", c.baseDir, err)
		}
	})
}

// openExternal connects to the external server with admin DSN dsn.
func openExternal(dsn string) (*Cluster, error) {
	dsnFor, err := dsnRewriter(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", EnvDatabaseURL, err)
	}
	db, err := openAndPing(dsn)
	if err != nil {
		return nil, fmt.Errorf("cannot use the server named by %s: %v; make sure it is running "+
			"and the DSN is right, or unset %s to use a throwaway cluster (needs the PostgreSQL 15 "+
			"server binaries initdb and pg_ctl on PATH)", EnvDatabaseURL, err, EnvDatabaseURL)
	}
	return &Cluster{external: true, adminDSN: dsn, dsnFor: dsnFor, admin: db}, nil
}

// dsnRewriter returns a function that turns the DSN dsn into a DSN for
// another database on the same server. Both the URL form and the key=value
// form are supported.
func dsnRewriter(dsn string) (func(string) string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, err
		}
		return func(name string) string {
			v := *u
			v.Path = "/" + name
			v.RawPath = ""
			return v.String()
		}, nil
	}
	if _, err := pq.NewConfig(dsn); err != nil {
		return nil, err
	}
	return func(name string) string {
		// lib/pq (like libpq) lets a later keyword override an earlier one.
		r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		return dsn + " dbname='" + r.Replace(name) + "'"
	}, nil
}

// openAndPing opens a pool for dsn and waits, until a deadline, for the
// server to accept a connection.
func openAndPing(dsn string) (*sql.DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxIdleConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err = db.PingContext(ctx)
		if err == nil {
			return db, nil
		}
		select {
		case <-ctx.Done():
			db.Close()
			return nil, fmt.Errorf("no connection within %v: %w", pingTimeout, err)
		case <-tick.C:
		}
	}
}

// databaseName returns a fresh database name for the test testName:
// "t_" + the sanitized test name + "_" + 8 random hex digits, at most 63
// bytes long.
func databaseName(testName string) string {
	var b strings.Builder
	underscore := true // suppress leading and repeated underscores
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	s := strings.TrimRight(b.String(), "_")
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic(err) // crypto/rand.Read does not fail
	}
	suffix := "_" + hex.EncodeToString(rnd[:])
	if maxLen := maxNameLen - len("t_") - len(suffix); len(s) > maxLen {
		s = strings.TrimRight(s[:maxLen], "_")
	}
	if s == "" {
		return "t" + suffix
	}
	return "t_" + s + suffix
}

// startThrowaway creates and starts a new throwaway cluster.
func startThrowaway(opts Options) (_ *Cluster, err error) {
	initdb, pgCtl, err := findBinaries()
	if err != nil {
		return nil, err
	}
	runAs, err := currentRunAs()
	if err != nil {
		return nil, err
	}
	reapOnce.Do(reapStale)

	base, err := os.MkdirTemp("", DirPrefix+"*")
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		baseDir: base,
		dataDir: filepath.Join(base, "data"),
		sockDir: filepath.Join(base, "sock"),
		logFile: filepath.Join(base, logFileName),
		pgCtl:   pgCtl,
		runAs:   runAs,
	}
	started := false
	defer func() {
		if err == nil {
			return
		}
		if started {
			c.run(c.pgCtl, "stop", "-D", c.dataDir, "-m", "immediate", "-w")
		}
		os.RemoveAll(base)
	}()

	if err := os.WriteFile(filepath.Join(base, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chmod(base, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return nil, err
	}
	if runAs != nil {
		if err := runAs.checkReachable(base); err != nil {
			return nil, err
		}
		for _, dir := range []string{base, c.sockDir} {
			if err := runAs.chown(dir); err != nil {
				return nil, err
			}
		}
	}

	args := []string{"-D", c.dataDir, "-A", "trust", "-U", adminUser, "-E", "UTF8", "--no-sync"}
	if opts.ICULocale != "" {
		args = append(args, "--locale-provider=icu", "--icu-locale="+opts.ICULocale, "--locale=C.utf8")
	} else {
		args = append(args, "--locale=C")
	}
	out, err := c.run(initdb, args...)
	os.WriteFile(filepath.Join(base, "initdb.log"), out, 0o644)
	if err != nil {
		return nil, fmt.Errorf("initdb %s failed: %v\n%s\n\n%s", c.dataDir, err, out, howToGetServer)
	}

	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		logStart := fileSize(c.logFile)
		out, err := c.run(c.pgCtl, "start", "-D", c.dataDir, "-l", c.logFile,
			"-w", "-t", "60", "-o", c.serverOptions())
		if err == nil {
			started = true
			break
		}
		tail := logTail(c.logFile, logStart)
		// Someone else may have taken the port between freePort and bind.
		if attempt < startAttempts && strings.Contains(tail, "could not create any TCP/IP sockets") {
			// The postmaster has exited already, but make sure.
			c.run(c.pgCtl, "stop", "-D", c.dataDir, "-m", "immediate", "-w")
			continue
		}
		return nil, fmt.Errorf("pg_ctl start failed: %v\n%s\nserver log (tail):\n%s\n\n%s",
			err, out, tail, howToGetServer)
	}

	c.dsnFor = func(name string) string {
		u := url.URL{
			Scheme:   "postgres",
			User:     url.User(adminUser),
			Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
			Path:     "/" + name,
			RawQuery: "sslmode=disable",
		}
		return u.String()
	}
	c.adminDSN = c.dsnFor(adminDB)
	c.admin, err = openAndPing(c.adminDSN)
	if err != nil {
		return nil, fmt.Errorf("server started but does not accept connections: %v\nserver log %s (tail):\n%s",
			err, c.logFile, logTail(c.logFile, 0))
	}
	liveMu.Lock()
	live[c] = true
	liveMu.Unlock()
	return c, nil
}

// serverOptions returns the postgres command line options, for pg_ctl -o.
func (c *Cluster) serverOptions() string {
	opts := []string{
		"listen_addresses=127.0.0.1",
		"port=" + strconv.Itoa(c.port),
		"unix_socket_directories=" + c.sockDir,
		"fsync=off",
		"synchronous_commit=off",
		"full_page_writes=off",
		"max_connections=300",
		"shared_buffers=128MB",
	}
	var b strings.Builder
	for i, o := range opts {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-c ")
		b.WriteString(shellQuote(o))
	}
	return b.String()
}

// run runs the PostgreSQL program prog (as the unprivileged user if we are
// root) in the cluster's base directory and returns its combined output.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = c.baseDir
	cmd.Env = childEnv()
	if c.runAs != nil {
		c.runAs.apply(cmd)
	}
	return cmd.CombinedOutput()
}

// childEnv returns our environment without libpq's PG* variables, which
// could redirect initdb and pg_ctl elsewhere.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// findBinaries locates initdb and pg_ctl on PATH, falling back to the
// newest Debian-style /usr/lib/postgresql/*/bin.
func findBinaries() (initdb, pgCtl string, err error) {
	initdb, err1 := exec.LookPath("initdb")
	pgCtl, err2 := exec.LookPath("pg_ctl")
	if err1 == nil && err2 == nil {
		return initdb, pgCtl, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "pg_ctl")
		if isExecutable(i) && isExecutable(p) {
			return i, p, nil
		}
	}
	missing := "initdb and pg_ctl"
	if err1 == nil {
		missing = "pg_ctl"
	} else if err2 == nil {
		missing = "initdb"
	}
	return "", "", fmt.Errorf("no PostgreSQL server available: %s is not set, and %s were not "+
		"found on PATH or in /usr/lib/postgresql/*/bin; %s", EnvDatabaseURL, missing, howToGetServer)
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the last lines of the log file path written after offset
// from.
func logTail(path string, from int64) string {
	const maxBytes, maxLines = 8 << 10, 40
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	size := fileSize(path)
	if size-from > maxBytes {
		from = size - maxBytes
	}
	buf := make([]byte, size-from)
	n, _ := f.ReadAt(buf, from)
	lines := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

var reapOnce sync.Once

// reapStale stops and deletes throwaway clusters in os.TempDir whose creating
// process has exited (test binaries that did not use Main, crashed, timed out
// or were killed). Errors are ignored: the directories may belong to another
// user.
func reapStale() {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, DirPrefix) {
			continue
		}
		dir := filepath.Join(tmp, name)
		fi, err := e.Info()
		if err != nil {
			continue
		}
		age := time.Since(fi.ModTime())
		if strings.HasPrefix(name, reapingPrefix) {
			// Another reaper is at work, or died at work.
			if age < 10*time.Minute {
				continue
			}
		} else if data, err := os.ReadFile(filepath.Join(dir, ownerFile)); err != nil {
			// Being set up right now, or not ours to judge.
			if age < time.Hour {
				continue
			}
		} else if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && processAlive(pid) {
			continue
		}
		// Claim it; only one concurrent reaper wins the rename.
		var rnd [8]byte
		rand.Read(rnd[:])
		claimed := filepath.Join(tmp, reapingPrefix+hex.EncodeToString(rnd[:]))
		if err := os.Rename(dir, claimed); err != nil {
			continue
		}
		os.Chtimes(claimed, time.Now(), time.Now())
		stopStale(claimed)
		os.RemoveAll(claimed)
	}
}

// stopStale stops the postmaster of the throwaway cluster in base, if it is
// still running.
func stopStale(base string) {
	_, pgCtl, err := findBinaries()
	if err != nil {
		return
	}
	runAs, err := currentRunAs()
	if err != nil {
		return
	}
	dataDir := filepath.Join(base, "data")
	pidData, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return // not running
	}
	pidLine, _, _ := strings.Cut(string(pidData), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(pidLine))
	if err != nil {
		return
	}
	// Where /proc exists, make sure the pid is still that postmaster (whose
	// working directory is its data directory) and not a reused pid.
	if _, err := os.Stat("/proc/self"); err == nil {
		cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
		if err != nil || cwd != dataDir {
			return
		}
	}
	c := &Cluster{baseDir: base, dataDir: dataDir, pgCtl: pgCtl, runAs: runAs}
	c.run(pgCtl, "stop", "-D", dataDir, "-m", "immediate", "-w", "-t", "30")
}
