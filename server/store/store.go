// Package store opens Gatehouse's database (embedded SQLite or PostgreSQL), migrates its schema, and
// runs every mutation in one transaction together with the events it appends.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/lib/pq"    // PostgreSQL driver "postgres" (the migration connection opens it by name).
	_ "modernc.org/sqlite" // SQLite driver "sqlite" (pure Go).

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/migrate"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/events"
)

// Store is an open database.
type Store struct {
	// Client is the ent client for simple queries outside transactions.
	Client *ent.Client
	// DB is the underlying pool, for raw set-based SQL.
	DB *sql.DB
	// Dialect is dialect.SQLite or dialect.Postgres.
	Dialect string

	unlock func() error
	// migrationURL, when set, is the PostgreSQL URL without the settings of Options, for Migrate.
	migrationURL string
	maxSessions  int
	// poolURL is the PostgreSQL URL of the pool, for the LISTEN connection.
	poolURL string
	// logID names the database's event log (migrateLog).
	logID atomic.Uint64
	// commitHook runs after a transaction with events commits (SetCommitHook).
	commitHook atomic.Pointer[func()]
	// notifyKick, notifyStop and notifyDone drive notifyLoop on PostgreSQL; notifyTag, random
	// for each store, is the payload of its NOTIFYs.
	notifyKick, notifyStop, notifyDone chan struct{}
	notifyTag                          string
}

// Open opens the database named by rawURL with the default Options. See OpenWith.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	return OpenWith(ctx, rawURL, Options{})
}

// Options tunes a store.
type Options struct {
	// StatementTimeout, LockTimeout and IdleInTransactionTimeout are set on every PostgreSQL
	// connection of the store's pool, as statement_timeout, lock_timeout and
	// idle_in_transaction_session_timeout, unless the URL sets them already (as a parameter, e.g.
	// ?statement_timeout=5000, or in options=-c ...). Zero leaves the setting to the server and the
	// URL. They do not apply to Migrate, which may wait for another node's migration and run long
	// statements on large tables.
	StatementTimeout, LockTimeout, IdleInTransactionTimeout time.Duration
	// MaxSessionsPerUser caps the active sessions of one user across all session types: a login
	// past it ends the user's oldest active session (CONCURRENT_LIMIT). It bounds the rows one
	// account can make every policy and role change touch. Zero means DefaultMaxSessionsPerUser;
	// a negative value removes the cap.
	MaxSessionsPerUser int
}

// DefaultMaxSessionsPerUser is the cap on the active sessions of one user when Options sets none.
const DefaultMaxSessionsPerUser = 1000

// OpenWith opens the database named by rawURL: sqlite://PATH (the path is everything after
// sqlite://, so sqlite:///var/lib/g.db is absolute) or postgres://... (any lib/pq URL). A SQLite
// file is locked for this process: a second process on the same file, by whatever path or link,
// gets an error saying so.
func OpenWith(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	var st *Store
	var err error
	switch {
	case strings.HasPrefix(rawURL, "sqlite://"):
		st, err = openSQLite(ctx, strings.TrimPrefix(rawURL, "sqlite://"))
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		st, err = openPostgres(ctx, rawURL, opts)
	default:
		return nil, fmt.Errorf("unsupported database URL %q: use sqlite://PATH or postgres://USER@HOST/DB", redact(rawURL))
	}
	if err != nil {
		return nil, err
	}
	st.maxSessions = opts.MaxSessionsPerUser
	if st.maxSessions == 0 {
		st.maxSessions = DefaultMaxSessionsPerUser
	}
	return st, nil
}

// MaxSessionsPerUser returns the cap on the active sessions of one user (Options), or zero when
// there is none.
func (s *Store) MaxSessionsPerUser() int { return max(s.maxSessions, 0) }

func openSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite:// needs a file path, e.g. sqlite://gatehouse.db")
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating the database directory: %w", err)
		}
	}
	unlock, err := lockDatabase(path)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, p := range []string{"foreign_keys(1)", "journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	// NOTE: _txlock=immediate takes the write lock at BEGIN, so writers queue on busy_timeout instead
	// of failing to upgrade a read lock; with one writer at a time, event ids are in commit order.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		_ = unlock()
		return nil, fmt.Errorf("opening sqlite: %w", err)
	}
	db.SetMaxOpenConns(8)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		_ = unlock()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	return newStore(db, dialect.SQLite, unlock), nil
}

// maxPostgresConns bounds a node's PostgreSQL pool, open and idle alike.
const maxPostgresConns = 32

func openPostgres(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	poolURL, err := withSessionSettings(rawURL, opts)
	if err != nil {
		return nil, fmt.Errorf("parsing the postgres URL %s: %w", redact(rawURL), err)
	}
	connector, err := pq.NewConnector(poolURL)
	if err != nil {
		return nil, fmt.Errorf("opening postgres %s: %w", redact(rawURL), err)
	}
	db := sql.OpenDB(stmtCachingConnector{base: connector})
	// NOTE: as many idle connections as open ones: with fewer, every burst past the idle bound
	// closed the extra connections as they came back and opened new backends for the next burst
	// (127 new backends per 3,000 validations at 64 in flight, issue 16), each costing PostgreSQL
	// a fork and the node a TLS or auth handshake. Idle connections still close after five idle
	// minutes.
	db.SetMaxOpenConns(maxPostgresConns)
	db.SetMaxIdleConns(maxPostgresConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connecting to postgres %s: %w", redact(rawURL), err)
	}
	st := newStore(db, dialect.Postgres, func() error { return nil })
	if poolURL != rawURL {
		st.migrationURL = rawURL
	}
	st.poolURL = poolURL
	st.notifyKick, st.notifyStop, st.notifyDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	st.notifyTag = rand.Text()
	go st.notifyLoop()
	return st, nil
}

// withSessionSettings adds the timeouts of opts to a lib/pq URL as run-time parameters (lib/pq
// sends every parameter it does not know itself to the server at connection start), keeping those
// the URL sets already.
func withSessionSettings(rawURL string, opts Options) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	changed := false
	for _, p := range []struct {
		name string
		d    time.Duration
	}{
		{"statement_timeout", opts.StatementTimeout},
		{"lock_timeout", opts.LockTimeout},
		{"idle_in_transaction_session_timeout", opts.IdleInTransactionTimeout},
	} {
		if p.d <= 0 || q.Has(p.name) || strings.Contains(q.Get("options"), p.name) {
			continue
		}
		q.Set(p.name, strconv.FormatInt(max(p.d.Milliseconds(), 1), 10))
		changed = true
	}
	if !changed {
		return rawURL, nil
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func newStore(db *sql.DB, dialectName string, unlock func() error) *Store {
	drv := entsql.OpenDB(dialectName, db)
	return &Store{Client: ent.NewClient(ent.Driver(drv)), DB: db, Dialect: dialectName, unlock: unlock}
}

// lockedFiles are the database files (by device and inode) that stores of this process hold locked.
var (
	lockedMu    sync.Mutex
	lockedFiles = map[fileID]bool{}
)

// fileID identifies a file whatever the path it is reached by.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// lockDatabase takes an exclusive, non-blocking flock on the database file at path itself (creating
// it empty if it does not exist, which SQLite takes for a new database) and records our pid in the
// side file path.lock, for the message another process gets.
//
// NOTE: the lock is on the database file's inode, not on a file beside the path, so that a hard
// link or a symlink elsewhere reaches the same lock. SQLite locks with POSIX fcntl locks (or OFD
// locks), which do not interact with flock on Linux. But a POSIX lock belongs to the process and
// inode and is dropped by closing any descriptor of the file, so a second open in this process is
// refused by the lockedFiles table before it opens (and would close) a descriptor of a file whose
// SQLite locks this process holds.
func lockDatabase(path string) (func() error, error) {
	target := path
	if r, err := filepath.EvalSymlinks(path); err == nil {
		target = r
	}
	side := target + ".lock"
	lockedMu.Lock()
	defer lockedMu.Unlock()
	if fi, err := os.Stat(path); err == nil {
		if id, ok := idOf(fi); ok && lockedFiles[id] {
			return nil, inUse(path, strconv.Itoa(os.Getpid()))
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite database %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("opening the SQLite database %s: %w", path, err)
	}
	id, _ := idOf(fi)
	if lockedFiles[id] {
		// NOTE: the path changed between the Stat and the open (a symlink re-pointed): keep the
		// descriptor open rather than drop the locks of this process's store on that file.
		return nil, inUse(path, strconv.Itoa(os.Getpid()))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking the SQLite database %s: %w", path, err)
		}
		pid, _ := os.ReadFile(side)
		return nil, inUse(path, strings.TrimSpace(string(pid)))
	}
	lockedFiles[id] = true
	pidFile, err := os.OpenFile(side, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		_ = pidFile.Truncate(0)
		_, _ = pidFile.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() error {
		if pidFile != nil {
			_ = pidFile.Truncate(0)
			_ = pidFile.Close()
		}
		lockedMu.Lock()
		defer lockedMu.Unlock()
		delete(lockedFiles, id)
		return f.Close() // closing the descriptor releases the flock
	}, nil
}

// inUse is the error of opening a SQLite database that another store holds; pid may be empty.
func inUse(path, pid string) error {
	if pid == "" {
		pid = "unknown"
	}
	return fmt.Errorf("the SQLite database %s is in use by another gatehouse process (pid %s); "+
		"SQLite serves a single node: stop the other process, or use PostgreSQL to run several nodes", path, pid)
}

// Close closes the database and releases the SQLite lock.
func (s *Store) Close() error {
	if s.notifyStop != nil {
		close(s.notifyStop)
		<-s.notifyDone
		s.notifyStop = nil
	}
	err := s.Client.Close()
	if uerr := s.unlock(); err == nil {
		err = uerr
	}
	return err
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.DB.PingContext(ctx) }

// IsPostgres reports whether the store is on PostgreSQL.
func (s *Store) IsPostgres() bool { return s.Dialect == dialect.Postgres }

// migrationLockKey serialises migrations of several nodes starting at once on one PostgreSQL.
const migrationLockKey = 7_240_001

// Migrate brings the schema up to date and creates the built-in roles. It is safe to run on every
// start and from several nodes at once.
func (s *Store) Migrate(ctx context.Context) error {
	if s.migrationURL != "" {
		// NOTE: a pool without the store's timeouts: waiting for another node's migration, and a
		// schema change on a large table, may take longer than any statement of a request should.
		db, err := sql.Open("postgres", s.migrationURL)
		if err != nil {
			return fmt.Errorf("opening postgres for the migration: %w", err)
		}
		db.SetMaxOpenConns(4)
		m := newStore(db, dialect.Postgres, func() error { return nil })
		defer m.Close()
		if err := m.Migrate(ctx); err != nil {
			return err
		}
		s.logID.Store(m.LogID())
		return nil
	}
	if s.IsPostgres() {
		conn, err := s.DB.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey) //nolint:errcheck
	}
	if err := createSchema(ctx, s.Client); err != nil {
		return fmt.Errorf("migrating the schema: %w", err)
	}
	if s.IsPostgres() {
		// NOTE: the transaction-id horizon (ARCHITECTURE.md section 5): readers only take rows whose
		// xid is below the oldest running transaction, so a slow transaction cannot commit an event
		// behind a cursor that a reader has already passed.
		for _, stmt := range []string{
			"ALTER TABLE events ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
			"CREATE INDEX IF NOT EXISTS events_xid_id ON events (xid, id)",
		} {
			if _, err := s.DB.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrating the event log: %w", err)
			}
		}
	}
	if err := s.migrateLog(ctx); err != nil {
		return fmt.Errorf("migrating the event log: %w", err)
	}
	for _, r := range auth.BuiltInRoles {
		err := s.Client.Role.Create().SetID(r.Name).SetDescription(r.Description).SetBuiltIn(true).
			OnConflictColumns("name").DoNothing().Exec(ctx)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("creating built-in role %s: %w", r.Name, err)
		}
	}
	return nil
}

// migrateMu serialises schema creation within the process.
//
// NOTE: ent's migrator mutates the package-level table definitions of ent/migrate while it plans,
// so two stores migrating at once in one process (tests, or several nodes embedded in one binary)
// race on them.
var migrateMu sync.Mutex

func createSchema(ctx context.Context, c *ent.Client) error {
	migrateMu.Lock()
	defer migrateMu.Unlock()
	return c.Schema.Create(ctx, migrate.WithForeignKeys(true))
}

// Rebind rewrites ? placeholders to the dialect's form ($1, $2, ... on PostgreSQL).
func (s *Store) Rebind(query string) string {
	if !s.IsPostgres() {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// redact removes a password from a database URL for messages and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Redact removes a password from a database URL for messages and logs.
func Redact(raw string) string {
	if strings.HasPrefix(raw, "sqlite://") {
		return raw
	}
	return redact(raw)
}

// Querier runs queries: a *sql.DB or a transaction.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Strings runs a query of one text column, written with ? placeholders, through q (the pool or a
// transaction) and returns the values in the order read.
func (s *Store) Strings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, s.Rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RoleNames returns the effective role names of a user, sorted in byte order, read through q (the
// pool or a transaction).
//
// NOTE: role sets are searched in byte order (auth.Principal.Has, the diff of a recomputation), so
// they are sorted here, in Go: ORDER BY would sort them by the database's collation, which on
// PostgreSQL is rarely C (under ICU en-US, "app_admin" sorts before "app.viewer").
func (s *Store) RoleNames(ctx context.Context, q Querier, userID string) ([]string, error) {
	roles, err := s.Strings(ctx, q, "SELECT DISTINCT role FROM effective_roles WHERE user_id = ?", userID)
	slices.Sort(roles)
	return roles, err
}

// RoleNamesOf returns the effective role names of each of users, sorted in byte order (see
// RoleNames), read through q, in statements of at most MaxInList users. Users without roles are
// absent from the map.
func (s *Store) RoleNamesOf(ctx context.Context, q Querier, users []string) (map[string][]string, error) {
	out := map[string][]string{}
	for batch := range slices.Chunk(users, MaxInList) {
		rows, err := q.QueryContext(ctx, s.Rebind("SELECT DISTINCT user_id, role FROM effective_roles WHERE user_id IN ("+
			Placeholders(len(batch))+")"), Args(batch)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				rows.Close()
				return nil, err
			}
			out[u] = append(out[u], r)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, err
		}
	}
	for _, roles := range out {
		slices.Sort(roles)
	}
	return out, nil
}

// MaxInList bounds the values of one IN list, and the rows of one multi-row statement, that the
// domain builds from a list it does not bound itself (the sessions of a user, the holders of a
// role): lists longer than this are split into several statements.
//
// NOTE: SQLite allows 32766 parameters per statement and PostgreSQL 65535; 500 stays far below
// both even for statements that bind several parameters per row.
const MaxInList = 500

// Placeholders returns "?, ?, ..." for n arguments of a query written with ? placeholders.
func Placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// Args returns ids as query arguments.
func Args(ids []string) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// Mode says whether a mutation is applied or only previewed (AIP-163 validate_only).
type Mode bool

const (
	// Apply commits the mutation with its events.
	Apply Mode = false
	// Preview runs the mutation to its end and rolls it back: nothing is written, no event
	// reaches the log (so neither the tailer nor any watcher sees one), and no commit hook or
	// NOTIFY fires.
	Preview Mode = true
)

// ModeOf returns Preview when validateOnly is set, Apply otherwise.
func ModeOf(validateOnly bool) Mode { return Mode(validateOnly) }

// errPreviewed is returned by the function of a previewed transaction once it has succeeded, so that
// InTx rolls back.
var errPreviewed = errors.New("store: preview rolled back")

// Run is InTx in the given mode. Previewed, fn runs exactly as it would for real, in a transaction
// that InTx then rolls back instead of committing; fn's error, if any, is returned unchanged, and on
// success Run returns the zero position (no consistency token: nothing was written).
//
// NOTE: the rollback is driven through InTx's own failure path (fn returns errPreviewed after it
// succeeded), so a preview takes the same locks, runs the same statements and hooks, and fails with
// the same errors as the change, and it stops before the events are appended.
func (s *Store) Run(ctx context.Context, mode Mode, fn func(ctx context.Context, tx *Tx) error) (events.Position, error) {
	if mode == Apply {
		return s.InTx(ctx, fn)
	}
	_, err := s.InTx(ctx, func(ctx context.Context, tx *Tx) error {
		if err := fn(ctx, tx); err != nil {
			return err
		}
		return errPreviewed
	})
	if errors.Is(err, errPreviewed) {
		return events.Position{}, nil
	}
	return events.Position{}, err
}
