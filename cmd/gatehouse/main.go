// Command gatehouse runs a Gatehouse node (identity, session and policy service).
//
//	gatehouse [serve] [flags]                  run a node (the default)
//	gatehouse migrate [flags]                  bring the database schema up to date and exit
//	gatehouse admin reset-password|grant-admin recover administrator access on the database
//	gatehouse version                          print the version and build information
//	gatehouse help                             list the commands
//
// Every flag can also be set with an environment variable: --grpc-addr is GATEHOUSE_GRPC_ADDR, and
// so on. Flags win over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/session"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gatehouse:", err)
		os.Exit(1)
	}
}

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return "GATEHOUSE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func run(args []string, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch {
	case cmd == "admin":
		return runAdmin(args, os.Stdin, stderr)
	case cmd == "version" || (cmd == "serve" && len(args) > 0 && (args[0] == "--version" || args[0] == "-version")):
		fmt.Fprintln(os.Stdout, versionLine())
		return nil
	case cmd == "help":
		fmt.Fprint(stderr, commandsUsage)
		return nil
	case cmd != "serve" && cmd != "migrate":
		fmt.Fprint(stderr, commandsUsage)
		return fmt.Errorf("unknown command %q", cmd)
	}

	fs := flag.NewFlagSet("gatehouse "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg server.Config
	var logLevel, logFormat string
	fs.StringVar(&cfg.Database, "database", "sqlite://gatehouse.db", "database: sqlite://PATH (embedded, single node) or postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=... (clusters)")
	if cmd == "serve" {
		fs.StringVar(&cfg.GRPCAddr, "grpc-addr", ":9090", "native gRPC listen address (reflection and grpc.health.v1 included)")
		fs.StringVar(&cfg.HTTPAddr, "http-addr", ":8080", "HTTP listen address: Connect, gRPC-Web, REST under /v1/, /healthz, /readyz, /metrics, /openapi.json")
		fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate file; with --tls-key, serves TLS on both ports")
		fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key file for --tls-cert")
		fs.IntVar(&cfg.MaxConcurrentHashes, "max-concurrent-hashes", 0, "bound on concurrent argon2id password hashes (19 MiB each); 0 means the number of CPUs")
		fs.IntVar(&cfg.MaxQueuedHashes, "max-queued-hashes", server.Config{}.Defaults().MaxQueuedHashes, "password hashes that may wait for a busy hashing slot; past it logins fail at once with RESOURCE_EXHAUSTED PASSWORD_QUEUE_FULL; -1 means no queue")
		fs.DurationVar(&cfg.HashQueueTimeout, "hash-queue-timeout", server.Config{}.Defaults().HashQueueTimeout, "how long a password hash waits for a hashing slot before failing with UNAVAILABLE PASSWORD_QUEUE_TIMEOUT")
		fs.IntVar(&cfg.LoginFailuresPerUser, "login-failures-per-user", 10, "failed logins allowed per username within --login-failure-window, counted by each node on its own; -1 disables the limit")
		fs.IntVar(&cfg.LoginFailuresPerAddress, "login-failures-per-address", 100, "failed logins allowed per client address (IPv6: per /64) within --login-failure-window, counted by each node on its own; -1 disables the limit")
		fs.DurationVar(&cfg.LoginFailureWindow, "login-failure-window", 5*time.Minute, "window over which the failed-login budget refills (budgets are per node and kept in memory: N nodes allow N times the failures)")
		fs.DurationVar(&cfg.SweepInterval, "sweep-interval", 500*time.Millisecond, "how often sessions past their idle or absolute timeout are ended")
		defaults := server.Config{}.Defaults()
		fs.DurationVar(&cfg.PruneInterval, "prune-interval", session.DefaultPruneInterval, "how often ended sessions and events past their retention are deleted (by one node of a cluster at a time)")
		fs.IntVar(&cfg.SessionCacheSize, "session-cache-size", defaults.SessionCacheSize, "sessions, and users, each node keeps in memory to validate without reading the database (least recently used go first)")
		fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", defaults.HeartbeatInterval, "period of the heartbeat messages of WatchSession streams")
		fs.DurationVar(&cfg.ExpiryWarning, "expiry-warning", defaults.ExpiryWarning, "how long before an idle or absolute timeout WatchSession streams send an expiring message (again when activity moves the idle expiry); before an idle timeout at most half the timeout; -1s sends none")
		fs.DurationVar(&cfg.EventPollInterval, "event-poll-interval", defaults.EventPollInterval, "how often the node reads the event log when no notification woke it (a lost notification costs at most this much delay)")
		fs.IntVar(&cfg.MaxSessionsPerUser, "max-sessions-per-user", defaults.MaxSessionsPerUser, "cap on the active sessions of one user, of all types; a login past it ends the user's oldest session (CONCURRENT_LIMIT); -1 removes the cap")
		fs.DurationVar(&cfg.SessionRetention, "session-retention", defaults.SessionRetention, "how long ended sessions are kept before they are deleted (their tokens then answer SESSION_NOT_FOUND); -1s keeps them forever")
		fs.DurationVar(&cfg.EventRetention, "event-retention", defaults.EventRetention, "how long events (LOGIN_FAILED included) are kept in the event log; -1s keeps them forever")
		fs.DurationVar(&cfg.PGStatementTimeout, "pg-statement-timeout", defaults.PGStatementTimeout, "PostgreSQL statement_timeout of the node's connections, unless --database sets it; -1s leaves it to the server")
		fs.DurationVar(&cfg.PGLockTimeout, "pg-lock-timeout", defaults.PGLockTimeout, "PostgreSQL lock_timeout of the node's connections, unless --database sets it; -1s leaves it to the server")
		fs.DurationVar(&cfg.PGIdleInTransactionTimeout, "pg-idle-in-transaction-timeout", defaults.PGIdleInTransactionTimeout, "PostgreSQL idle_in_transaction_session_timeout of the node's connections, unless --database sets it; -1s leaves it to the server")
		fs.Var((*originsFlag)(&cfg.CORSAllowedOrigins), "cors-allowed-origin", "an origin (scheme://host[:port], or *) whose browser pages may call the HTTP port from another origin (CORS, for Connect, gRPC-Web and REST); repeat the flag or separate origins with commas; none by default (no CORS headers)")
		fs.IntVar(&cfg.MaxStreamsPerSession, "max-streams-per-session", server.Config{}.Defaults().MaxStreamsPerSession, "bound on the streams (WatchSession, WatchEvents) one session has open at once, on all fronts; past it RESOURCE_EXHAUSTED TOO_MANY_STREAMS; -1: no bound")
		fs.IntVar(&cfg.MaxStreamsPerUser, "max-streams-per-user", server.Config{}.Defaults().MaxStreamsPerUser, "bound on the streams all the sessions of one user have open at once; -1: no bound")
		fs.DurationVar(&cfg.RequestBodyTimeout, "request-body-timeout", server.Config{}.Defaults().RequestBodyTimeout, "bound on the time a request body takes to arrive on the HTTP port; a client that stops sending one has its connection closed (streams, once their request is read, are not bounded)")
		fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", server.Config{}.Defaults().MaxRequestBytes, "bound on one request message (a REST or Connect body, a gRPC message), refused unread past it with RESOURCE_EXHAUSTED REQUEST_TOO_LARGE (HTTP 413 over REST)")
		fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", server.Config{}.Defaults().ShutdownTimeout, "how long a graceful shutdown waits for calls in flight")
	}
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.Usage = func() {
		if cmd == "serve" {
			fmt.Fprint(stderr, commandsUsage+"\n")
		}
		fmt.Fprintf(stderr, "Usage: gatehouse %s [flags]\n\n", cmd)
		if cmd == "serve" {
			fmt.Fprintf(stderr, "Runs a Gatehouse node. On first start with an empty database it creates the user admin\n"+
				"holding gatehouse.admin, with the password from GATEHOUSE_ADMIN_PASSWORD or a generated one\n"+
				"printed once in the log.\n\n")
		} else {
			fmt.Fprintf(stderr, "Brings the database schema up to date and exits.\n\n")
		}
		fmt.Fprintf(stderr, "Flags (each also settable by the environment variable shown):\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (%s)\n    \t%s", f.Name, envName(f.Name), f.Usage)
			if f.DefValue != "" && f.DefValue != "0" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !set[f.Name] && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s: %w", envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}

	logger, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	cfg.AdminPassword = os.Getenv("GATEHOUSE_ADMIN_PASSWORD")

	ctx, stop := shutdownSignals(logger, os.Exit)
	defer stop()
	if cmd == "migrate" {
		if err := server.Migrate(ctx, cfg); err != nil {
			return err
		}
		logger.Info("schema is up to date")
		return nil
	}
	return server.Run(ctx, cfg)
}

// originsFlag is a repeatable flag whose values are comma-separated lists, appended in order.
type originsFlag []string

// String returns the origins as one comma-separated list.
func (f *originsFlag) String() string { return strings.Join(*f, ",") }

// Set appends the comma-separated origins of v.
func (f *originsFlag) Set(v string) error {
	for _, o := range strings.Split(v, ",") {
		if o = strings.TrimSpace(o); o != "" {
			*f = append(*f, o)
		}
	}
	return nil
}

// forcedExitCode is the exit status of a process whose drain a second signal cut short.
const forcedExitCode = 2

// shutdownSignals returns a context that ends at the first SIGINT or SIGTERM, which begins the
// graceful shutdown. A second one during the drain logs that the drain was cut short and calls
// exit(forcedExitCode) at once. stop releases the signals; call it once the command returns.
//
// NOTE: signal.NotifyContext catches only the first signal and swallows the later ones until its
// stop: an operator pressing Ctrl-C again, or an orchestrator sending SIGTERM twice, would wait for
// the whole --shutdown-timeout.
func shutdownSignals(log *slog.Logger, exit func(code int)) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	stopped, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case sig := <-sigs:
			log.Info("received a signal; draining (a second signal exits at once)", "signal", sig.String())
			cancel()
		case <-stopped:
			return
		}
		select {
		case sig := <-sigs:
			log.Error("received a second signal; exiting now, the drain cut short", "signal", sig.String())
			exit(forcedExitCode)
		case <-stopped:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(stopped)
		<-done
		cancel()
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
	}
}
