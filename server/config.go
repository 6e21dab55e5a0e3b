// Package server wires a Gatehouse node: the store, the domain, and the gRPC and HTTP servers.
package server

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
	"github.com/gatehouse/gatehouse/server/transport"
)

// Config configures a node. Zero values take the defaults documented on each field; Defaults fills
// them in one place.
type Config struct {
	// GRPCAddr is the native gRPC listen address. Default ":9090".
	GRPCAddr string
	// HTTPAddr is the listen address of Connect, gRPC-Web, REST and the health endpoints.
	// Default ":8080".
	HTTPAddr string
	// Database is sqlite://PATH or postgres://... Default "sqlite://gatehouse.db".
	Database string
	// TLSCertFile and TLSKeyFile enable TLS on both ports when both are set.
	TLSCertFile string
	TLSKeyFile  string
	// AdminPassword is the bootstrap administrator's password on first start; empty generates one
	// and logs it once.
	AdminPassword string
	// MaxConcurrentHashes bounds concurrent password hashing (argon2id uses 19 MiB each).
	// Default: the number of CPUs.
	MaxConcurrentHashes int
	// MaxQueuedHashes bounds the password hashes waiting for one of the MaxConcurrentHashes slots;
	// past it a login (or any call that hashes) fails at once with RESOURCE_EXHAUSTED
	// PASSWORD_QUEUE_FULL. Default 64; a negative value means no queue (busy slots refuse at once).
	MaxQueuedHashes int
	// HashQueueTimeout bounds how long a password hash waits for a slot, and a login for the
	// concurrent attempts that could spend the rest of its failed-login budget; then the call fails
	// with UNAVAILABLE PASSWORD_QUEUE_TIMEOUT. Default 5s.
	HashQueueTimeout time.Duration
	// PasswordHashing are the argon2id parameters of new hashes; a successful login re-hashes a
	// password stored with other ones. The zero value (the default) is OWASP's recommendation
	// (19 MiB, 2 passes, 1 lane), which production should keep.
	//
	// NOTE: for tests only, which would otherwise spend minutes hashing; deliberately not a flag.
	PasswordHashing auth.Params
	// LoginFailuresPerUser and LoginFailuresPerAddress bound failed logins per username and per
	// client address (an IPv6 address counts as its /64) within LoginFailureWindow (a token bucket:
	// the budget refills over the window). Defaults 10 and 100 per 5 minutes; a negative value
	// disables the limit. The budgets are kept in memory by each node: a cluster of N nodes allows
	// up to N times as many failures, and a restart forgets them.
	LoginFailuresPerUser    int
	LoginFailuresPerAddress int
	LoginFailureWindow      time.Duration
	// SweepInterval is how often expired sessions are ended. Default 500ms.
	SweepInterval time.Duration
	// PruneInterval is how often a node deletes ended sessions and events past their retention
	// (one node of a cluster at a time). Default 10 minutes.
	PruneInterval time.Duration
	// SessionCacheSize bounds the sessions, and the users, each node keeps in memory to validate
	// without reading the database (least recently used ones go first). Default 100,000.
	SessionCacheSize int
	// HeartbeatInterval is the period of WatchSession's heartbeat messages. Default 15s.
	HeartbeatInterval time.Duration
	// ExpiryWarning is how long before an idle or absolute timeout WatchSession sends an expiring
	// message (before an idle timeout, at most half the timeout). Default 60s; negative sends none.
	ExpiryWarning time.Duration
	// EventPollInterval is how often the node's tailer reads the event log when no notification
	// woke it: a lost notification costs at most this much delay. Default 500ms.
	EventPollInterval time.Duration
	// MaxSessionsPerUser caps the active sessions of one user across all session types, whatever
	// the policies say: a login past it ends the user's oldest active session with
	// CONCURRENT_LIMIT. It bounds the rows one account (a compromised one included) makes every
	// policy change, role change and termination of the user touch. Default 1000; a negative value
	// removes the cap.
	MaxSessionsPerUser int
	// SessionRetention is how long an ended session is kept; then the sweeper deletes it, and its
	// token answers SESSION_NOT_FOUND instead of SESSION_TERMINATED. Default 7 days; a negative
	// value keeps ended sessions forever.
	SessionRetention time.Duration
	// EventRetention is how long events (LOGIN_FAILED included) stay in the event log; then the
	// sweeper deletes them. Default 7 days; a negative value keeps events forever.
	EventRetention time.Duration
	// PGStatementTimeout, PGLockTimeout and PGIdleInTransactionTimeout are set on the node's
	// PostgreSQL connections as statement_timeout, lock_timeout and
	// idle_in_transaction_session_timeout, unless the database URL sets them already (e.g.
	// ?statement_timeout=5000, or options=-c statement_timeout=5s). They do not apply to the
	// schema migration. Defaults 30s, 10s and 30s; a negative value leaves the setting to the
	// server. A statement that runs out of them fails with ABORTED (a lock wait) or UNAVAILABLE.
	PGStatementTimeout         time.Duration
	PGLockTimeout              time.Duration
	PGIdleInTransactionTimeout time.Duration
	// CORSAllowedOrigins are the origins (scheme://host[:port], or "*") whose browser pages may call
	// the HTTP port (Connect, gRPC-Web, REST) from another origin: the node answers their CORS
	// preflights and exposes the gRPC-Web status headers to them. Default none: no CORS headers, so
	// browsers allow only same-origin pages.
	CORSAllowedOrigins []string
	// MaxRequestBytes bounds one request message on every front, before it is read: a request
	// body on the HTTP port (REST, Connect; each message of a gRPC-Web or streaming body) and a
	// message on the gRPC port. A larger one is refused with RESOURCE_EXHAUSTED and the ErrorInfo
	// reason REQUEST_TOO_LARGE (HTTP 413 over REST). Default 1 MiB (1048576); zero or a negative
	// value means the default.
	MaxRequestBytes int
	// RequestBodyTimeout bounds how long the HTTP port waits for a request body to arrive whole;
	// a client that stops sending one has its connection closed. Streams, once their request is
	// read, are not bounded by it. Default 30s.
	RequestBodyTimeout time.Duration
	// MaxStreamsPerSession and MaxStreamsPerUser bound the server streams (WatchSession,
	// WatchEvents) open at once, on all fronts together, per session and per user; one more is
	// refused with RESOURCE_EXHAUSTED TOO_MANY_STREAMS. Defaults 32 and 1000; -1 disables a bound.
	// Streams without a session (the gRPC port's health Watch) are bounded by
	// transport.MaxAnonymousStreamsPerAddress and transport.MaxAnonymousStreams.
	MaxStreamsPerSession int
	MaxStreamsPerUser    int
	// ShutdownTimeout bounds the graceful drain on shutdown. Default 15s.
	ShutdownTimeout time.Duration
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	if c.GRPCAddr == "" {
		c.GRPCAddr = ":9090"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":8080"
	}
	if c.Database == "" {
		c.Database = "sqlite://gatehouse.db"
	}
	if c.MaxQueuedHashes == 0 {
		c.MaxQueuedHashes = auth.DefaultMaxQueued
	}
	if c.HashQueueTimeout == 0 {
		c.HashQueueTimeout = auth.DefaultMaxWait
	}
	if c.LoginFailuresPerUser == 0 {
		c.LoginFailuresPerUser = 10
	}
	if c.LoginFailuresPerAddress == 0 {
		c.LoginFailuresPerAddress = 100
	}
	if c.LoginFailureWindow == 0 {
		c.LoginFailureWindow = 5 * time.Minute
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 500 * time.Millisecond
	}
	if c.SessionCacheSize <= 0 {
		c.SessionCacheSize = 100_000
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 15 * time.Second
	}
	if c.ExpiryWarning == 0 {
		c.ExpiryWarning = session.DefaultExpiryWarning
	}
	if c.EventPollInterval <= 0 {
		c.EventPollInterval = 500 * time.Millisecond
	}
	if c.MaxSessionsPerUser == 0 {
		c.MaxSessionsPerUser = 1000
	}
	if c.SessionRetention == 0 {
		c.SessionRetention = 7 * 24 * time.Hour
	}
	if c.EventRetention == 0 {
		c.EventRetention = 7 * 24 * time.Hour
	}
	if c.PGStatementTimeout == 0 {
		c.PGStatementTimeout = 30 * time.Second
	}
	if c.PGLockTimeout == 0 {
		c.PGLockTimeout = 10 * time.Second
	}
	if c.PGIdleInTransactionTimeout == 0 {
		c.PGIdleInTransactionTimeout = 30 * time.Second
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = transport.DefaultMaxRequestBytes
	}
	if c.RequestBodyTimeout <= 0 {
		c.RequestBodyTimeout = transport.DefaultRequestBodyTimeout
	}
	if c.MaxStreamsPerSession == 0 {
		c.MaxStreamsPerSession = 32
	}
	if c.MaxStreamsPerUser == 0 {
		c.MaxStreamsPerUser = 1000
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// storeOptions returns the store options of c, whose defaults are filled in (negative values
// become zero: no setting, no cap).
func (c Config) storeOptions() store.Options {
	return store.Options{
		StatementTimeout:         max(c.PGStatementTimeout, 0),
		LockTimeout:              max(c.PGLockTimeout, 0),
		IdleInTransactionTimeout: max(c.PGIdleInTransactionTimeout, 0),
		MaxSessionsPerUser:       c.MaxSessionsPerUser,
	}
}

// sweeperOptions returns the sweeper options of c, whose defaults are filled in.
func (c Config) sweeperOptions() session.SweeperOptions {
	return session.SweeperOptions{
		Interval:      c.SweepInterval,
		PruneInterval: c.PruneInterval,
		Retention:     session.Retention{Sessions: c.SessionRetention, Events: c.EventRetention},
	}
}

// hasher returns the password hasher c describes (with defaults filled in).
func (c Config) hasher() (*auth.Hasher, error) {
	h, err := auth.NewHasherWith(auth.HasherOptions{
		MaxConcurrent: c.MaxConcurrentHashes,
		MaxQueued:     c.MaxQueuedHashes,
		MaxWait:       c.HashQueueTimeout,
		Params:        c.PasswordHashing,
	})
	if err != nil {
		return nil, fmt.Errorf("PasswordHashing: %w", err)
	}
	return h, nil
}
