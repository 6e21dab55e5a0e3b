// Package server wires a Gatehouse node: the store, the domain, and the gRPC and HTTP servers.
package server

import (
	"log/slog"
	"time"
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
	// LoginFailuresPerUser and LoginFailuresPerAddress bound failed logins per username and per
	// client address within LoginFailureWindow (a token bucket: the budget refills over the window).
	// Defaults 10 and 100 per 5 minutes; a negative value disables the limit.
	LoginFailuresPerUser    int
	LoginFailuresPerAddress int
	LoginFailureWindow      time.Duration
	// SweepInterval is how often expired sessions are ended. Default 500ms.
	SweepInterval time.Duration
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
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
