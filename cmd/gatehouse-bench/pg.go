package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq" // PostgreSQL driver "postgres".
)

// NOTE: internal/testpg starts throwaway clusters the same way, but only for a testing.TB (its
// starting function is unexported), and a command should not link the testing package; this is
// the few lines of it the bench needs.

// pgDirPrefix starts the names of the directories in os.TempDir that hold the bench's clusters.
const pgDirPrefix = "gatehouse-bench-pg-"

// pgOwnerFile holds, in a cluster's directory, the pid of the bench that started it.
const pgOwnerFile = "owner.pid"

// pgStartAttempts bounds the starts of a cluster whose port was taken between choosing and binding.
const pgStartAttempts = 3

// postgres is a throwaway PostgreSQL cluster, run by the user nobody when the bench runs as root
// (initdb refuses to run as root), in its own directory in os.TempDir.
type postgres struct {
	base, data, logFile string
	pgCtl               string
	attr                *syscall.SysProcAttr
	// url names the database "gatehouse" on it.
	url string
}

// startPostgres creates and starts a throwaway cluster with a database "gatehouse". It first
// stops and removes the clusters of earlier benches that died without doing it.
func startPostgres(ctx context.Context) (_ *postgres, err error) {
	initdb, pgCtl, err := pgBinaries()
	if err != nil {
		return nil, err
	}
	attr, uid, gid, err := pgProcess()
	if err != nil {
		return nil, err
	}
	reapStale(pgCtl, attr)

	base, err := os.MkdirTemp("", pgDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating the cluster's directory: %w", err)
	}
	c := &postgres{base: base, data: filepath.Join(base, "data"), logFile: filepath.Join(base, "postgres.log"), pgCtl: pgCtl, attr: attr}
	defer func() {
		if err != nil {
			_ = c.stop()
		}
	}()
	if err := os.WriteFile(filepath.Join(base, pgOwnerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("writing the cluster's owner: %w", err)
	}
	sock := filepath.Join(base, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return nil, fmt.Errorf("creating the socket directory: %w", err)
	}
	for _, dir := range []string{base, sock} {
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("giving %s to the PostgreSQL user: %w", dir, err)
		}
	}

	// NOTE: the collation of testpg's shared cluster (ICU en-US, as on a typical production
	// server); durability stays at PostgreSQL's defaults (fsync, synchronous_commit), because the
	// bench measures what a production node pays for its writes.
	if out, err := c.run(ctx, initdb, "-D", c.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
		"--locale-provider=icu", "--icu-locale=en-US", "--locale=C.utf8"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var port int
	for attempt := 1; ; attempt++ {
		port, err = freePort()
		if err != nil {
			return nil, err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories='%s' -c max_connections=200", port, sock)
		out, err := c.run(ctx, pgCtl, "start", "-D", c.data, "-l", c.logFile, "-w", "-t", "60", "-o", opts)
		if err == nil {
			break
		}
		log, _ := os.ReadFile(c.logFile)
		if attempt < pgStartAttempts && strings.Contains(string(log), "could not create any TCP/IP sockets") {
			continue
		}
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\nserver log:\n%s", err, out, tail(log, 4<<10))
	}

	admin := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), RawQuery: "sslmode=disable"}
	db, err := sql.Open("postgres", admin.String()+"&dbname=postgres")
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE gatehouse TEMPLATE template0"); err != nil {
		return nil, fmt.Errorf("creating the database: %w", err)
	}
	admin.Path = "/gatehouse"
	c.url = admin.String()
	return c, nil
}

// stop stops the cluster (pg_ctl stop -m immediate: its data goes next) and removes its directory.
func (c *postgres) stop() error {
	var err error
	if _, statErr := os.Stat(filepath.Join(c.data, "postmaster.pid")); statErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if out, stopErr := c.run(ctx, c.pgCtl, "stop", "-D", c.data, "-m", "immediate", "-w", "-t", "60"); stopErr != nil {
			err = fmt.Errorf("pg_ctl stop: %w\n%s", stopErr, out)
		}
	}
	return errors.Join(err, os.RemoveAll(c.base))
}

// run runs a PostgreSQL program in the cluster's directory and returns its output.
func (c *postgres) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = c.base
	cmd.SysProcAttr = c.attr
	// NOTE: without libpq's PG* variables, which could point the programs elsewhere.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	return cmd.CombinedOutput()
}

// reapStale stops and removes the clusters whose bench has exited without doing it (killed, say).
// It gives up quietly on what it cannot do: the directories may be another user's.
func reapStale(pgCtl string, attr *syscall.SysProcAttr) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), pgDirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, pgOwnerFile))
		if err != nil {
			continue // being set up, or not a cluster of ours
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(owner))); err != nil || processAlive(pid) {
			continue
		}
		c := &postgres{base: dir, data: filepath.Join(dir, "data"), pgCtl: pgCtl, attr: attr}
		_ = c.stop()
	}
}

// pgBinaries finds initdb and pg_ctl on PATH, or else in the newest Debian-style
// /usr/lib/postgresql/*/bin.
func pgBinaries() (initdb, pgCtl string, err error) {
	initdb, err1 := exec.LookPath("initdb")
	pgCtl, err2 := exec.LookPath("pg_ctl")
	if err1 == nil && err2 == nil {
		return initdb, pgCtl, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir))); return v }
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "pg_ctl")
		if _, err1 := os.Stat(i); err1 == nil {
			if _, err2 := os.Stat(p); err2 == nil {
				return i, p, nil
			}
		}
	}
	return "", "", errors.New("initdb and pg_ctl are not on PATH nor in /usr/lib/postgresql/*/bin: install the " +
		"PostgreSQL 15 server binaries, or name a database with --database postgres://... or --database sqlite")
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("choosing a port for PostgreSQL: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pgUser runs the PostgreSQL programs when the bench runs as root.
const pgUser = "nobody"

// pgProcess returns the attributes the PostgreSQL programs run with, and the uid and gid that must
// own their directories (-1, -1: the bench's own).
//
// NOTE: the programs get a process group of their own, so that a Ctrl-C in the terminal reaches
// only the bench, which then stops the cluster itself instead of finding it half dead.
func pgProcess() (attr *syscall.SysProcAttr, uid, gid int, err error) {
	attr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() != 0 {
		return attr, -1, -1, nil
	}
	u, err := user.Lookup(pgUser)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("running as root, so PostgreSQL must run as %s, but: %w", pgUser, err)
	}
	uid64, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid64, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, 0, fmt.Errorf("user %s: %w", pgUser, err)
	}
	attr.Credential = &syscall.Credential{Uid: uint32(uid64), Gid: uint32(gid64), Groups: []uint32{}}
	return attr, int(uid64), int(gid64), nil
}

// processAlive reports whether a process with the given pid exists.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
