// Package store opens Gatehouse's database (embedded SQLite or PostgreSQL), migrates its schema, and
// runs every mutation in one transaction together with the events it appends.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/lib/pq"  // PostgreSQL driver "postgres".
	_ "modernc.org/sqlite" // SQLite driver "sqlite" (pure Go).

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/migrate"
	"github.com/gatehouse/gatehouse/server/auth"
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
}

// Open opens the database named by rawURL: sqlite://PATH (the path is everything after sqlite://,
// so sqlite:///var/lib/g.db is absolute) or postgres://... (any lib/pq URL). A SQLite file is
// locked for this process: a second process on the same file gets an error saying so.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	switch {
	case strings.HasPrefix(rawURL, "sqlite://"):
		return openSQLite(ctx, strings.TrimPrefix(rawURL, "sqlite://"))
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return openPostgres(ctx, rawURL)
	default:
		return nil, fmt.Errorf("unsupported database URL %q: use sqlite://PATH or postgres://USER@HOST/DB", redact(rawURL))
	}
}

func openSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite:// needs a file path, e.g. sqlite://gatehouse.db")
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating the database directory: %w", err)
		}
	}
	unlock, err := lockFile(path + ".lock")
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

func openPostgres(ctx context.Context, rawURL string) (*Store, error) {
	db, err := sql.Open("postgres", rawURL)
	if err != nil {
		return nil, fmt.Errorf("opening postgres %s: %w", redact(rawURL), err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connecting to postgres %s: %w", redact(rawURL), err)
	}
	return newStore(db, dialect.Postgres, func() error { return nil }), nil
}

func newStore(db *sql.DB, dialectName string, unlock func() error) *Store {
	drv := entsql.OpenDB(dialectName, db)
	return &Store{Client: ent.NewClient(ent.Driver(drv)), DB: db, Dialect: dialectName, unlock: unlock}
}

// lockFile takes an exclusive, non-blocking flock on path and records our pid in it.
func lockFile(path string) (func() error, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		_ = f.Close()
		holder := strings.TrimSpace(string(pid))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("the SQLite database %s is in use by another gatehouse process (pid %s); "+
			"SQLite serves a single node: stop the other process, or use PostgreSQL to run several nodes",
			strings.TrimSuffix(path, ".lock"), holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() error {
		_ = f.Truncate(0)
		return f.Close() // closing the descriptor releases the flock
	}, nil
}

// Close closes the database and releases the SQLite lock.
func (s *Store) Close() error {
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

// RoleNames returns the effective role names of a user, sorted, read through q (the pool or a
// transaction).
func (s *Store) RoleNames(ctx context.Context, q Querier, userID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, s.Rebind("SELECT DISTINCT role FROM effective_roles WHERE user_id = ? ORDER BY role"), userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var roles []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		roles = append(roles, r)
	}
	return roles, rows.Err()
}

// RoleNamesOf returns the effective role names of each of users, sorted, read through q. Users
// without roles are absent from the map.
func (s *Store) RoleNamesOf(ctx context.Context, q Querier, users []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(users) == 0 {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, s.Rebind("SELECT DISTINCT user_id, role FROM effective_roles WHERE user_id IN ("+
		Placeholders(len(users))+") ORDER BY user_id, role"), Args(users)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var u, r string
		if err := rows.Scan(&u, &r); err != nil {
			return nil, err
		}
		out[u] = append(out[u], r)
	}
	return out, rows.Err()
}

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
