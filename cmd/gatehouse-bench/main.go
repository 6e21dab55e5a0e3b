// Command gatehouse-bench measures a Gatehouse node against the limits of the machine it runs on.
//
//	gatehouse-bench [--scenario NAME[,NAME...]|all] [--duration 10s] [--runs 3] [--database URL]
//	                [--sessions 10000] [--concurrency 64] [--streams 20000] [--members 10000]
//	                [--memory-sessions 100000] [--debug-addr 127.0.0.1:6060]
//
// The scenarios are memory, validate, login, propagation, limit-race, stream-memory and
// group-fanout (docs/PERFORMANCE.md says what each measures). It starts what it needs itself, in
// this process: a node on 127.0.0.1 with OS-chosen ports, on a throwaway PostgreSQL cluster unless
// --database names a database, and a second node on the same database for the scenarios that need
// two (propagation, limit-race) on PostgreSQL. Each scenario prints one JSON object per result on
// standard output; progress and the node's warnings go to standard error.
//
// Every figure is measured in runs alternated with the runs of its baseline (baseline, figure,
// baseline, figure, ...), because these machines are shared and noisy: a change in the machine's
// load affects both alike. Rates are the medians over the runs, latencies the medians of each run's
// percentiles, and a ratio is the median rate over the median baseline rate.
//
// The program exits non-zero after printing when more than 1% of the calls of any measured run
// failed, or when a run completed no call at all.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/server"
)

func main() {
	if isHolder() {
		if err := holdStreams(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "gatehouse-bench stream holder:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// NOTE: after the first signal the default action comes back, so that a second Ctrl-C
		// ends a bench whose cleanup hangs (leaving the throwaway cluster to the next run's reaper).
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gatehouse-bench:", err)
		os.Exit(1)
	}
}

// options are the command line of one bench.
type options struct {
	// scenario is names of scenarios separated by commas, or all.
	scenario string
	// duration is the length of one measured run (of a figure or of a baseline).
	duration time.Duration
	// database is empty (a throwaway PostgreSQL), "sqlite" (a file in a temporary directory), or a
	// sqlite:// or postgres:// URL.
	database string
	// sessions is the number of active sessions the validate scenario validates.
	sessions int
	// concurrency is the number of validations in flight.
	concurrency int
	// runs is the number of measured runs of each figure and of each baseline.
	runs int
	// streams is the number of idle WatchSession streams the stream-memory scenario holds.
	streams int
	// members is the size of the group of the group-fanout scenario.
	members int
	// memorySessions is the number of active sessions of the memory scenario.
	memorySessions int
	// memoryPerUser is the number of sessions of one user in the memory scenario.
	memoryPerUser int
	// transports are the transports of the validate scenario.
	transports []string
	// debugAddr, when set, is where net/http/pprof is served while the bench runs.
	debugAddr string
}

// scenario runs one scenario against e and hands each result to emit. It returns the number of
// measured runs whose calls failed too often (see sample.failedTooOften).
type scenario func(ctx context.Context, e *env, o options, emit func(any) error) (badRuns int, err error)

// scenarios are the scenarios by name, and scenarioOrder the order in which all of them run.
var (
	scenarios = map[string]scenario{
		"memory":        runMemory,
		"validate":      runValidate,
		"login":         runLogin,
		"propagation":   runPropagation,
		"limit-race":    runLimitRace,
		"stream-memory": runStreamMemory,
		"group-fanout":  runGroupFanout,
	}
	// NOTE: memory first, because its figure is the whole process's resident memory, which every
	// scenario before it would raise (their sessions stay in the node's cache); the two that open
	// thousands of streams last, so that their goroutines and buffers skew no rate or latency.
	scenarioOrder = []string{"memory", "validate", "login", "propagation", "limit-race", "stream-memory", "group-fanout"}
)

// parseFlags reads the command line.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("gatehouse-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.scenario, "scenario", "all", "scenario to run: "+strings.Join(scenarioOrder, ", ")+
		", several of them separated by commas (run in that order, on one node and database), or all")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run (figure and baseline alike)")
	fs.StringVar(&o.database, "database", "", "database of the node: empty starts a throwaway PostgreSQL (initdb and pg_ctl on PATH), "+
		"\"sqlite\" uses a SQLite file in a temporary directory; a sqlite:// or postgres:// URL names one, which the bench "+
		"fills with users and sessions and leaves behind")
	fs.IntVar(&o.sessions, "sessions", 10000, "active sessions validated round-robin by the validate scenario")
	fs.IntVar(&o.concurrency, "concurrency", 64, "validations in flight")
	fs.IntVar(&o.streams, "streams", 20000, "idle WatchSession streams held by the stream-memory scenario")
	fs.IntVar(&o.members, "members", 10000, "members of the group the group-fanout scenario grants a role to, each with a watched session")
	fs.IntVar(&o.memorySessions, "memory-sessions", 100000, "active sessions, each validated once, of the memory scenario")
	transports := fs.String("transports", strings.Join(validateTransports, ","), "transports of the validate scenario, separated by commas")
	fs.IntVar(&o.memoryPerUser, "memory-sessions-per-user", 100, "sessions of one user in the memory scenario (at most 1000, the per-user cap): "+
		"the node caches a user's roles once for all its sessions")
	fs.StringVar(&o.debugAddr, "debug-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060) while the bench runs; empty: off")
	fs.IntVar(&o.runs, "runs", 3, "measured runs of each figure and of each baseline, alternated; the results are their medians")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: gatehouse-bench [flags]\n\n"+
			"Measures a Gatehouse node started in this process against baselines measured in the same run,\n"+
			"and prints one JSON object per result on standard output.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for _, t := range strings.Split(*transports, ",") {
		if !slices.Contains(validateTransports, t) {
			return options{}, fmt.Errorf("--transports %q: use %s, several of them separated by commas", *transports, strings.Join(validateTransports, ", "))
		}
		if !slices.Contains(o.transports, t) {
			o.transports = append(o.transports, t)
		}
	}
	if o.scenario != "all" {
		for _, name := range strings.Split(o.scenario, ",") {
			if _, ok := scenarios[name]; !ok {
				return options{}, fmt.Errorf("--scenario %q: use %s, several of them separated by commas, or all", o.scenario, strings.Join(scenarioOrder, ", "))
			}
		}
	}
	switch {
	case o.duration <= 0:
		return options{}, errors.New("--duration must be positive")
	case o.sessions <= 0:
		return options{}, errors.New("--sessions must be positive")
	case o.concurrency <= 0:
		return options{}, errors.New("--concurrency must be positive")
	case o.runs <= 0:
		return options{}, errors.New("--runs must be positive")
	case o.streams <= 0:
		return options{}, errors.New("--streams must be positive")
	case o.members <= 0:
		return options{}, errors.New("--members must be positive")
	case o.memorySessions <= 0:
		return options{}, errors.New("--memory-sessions must be positive")
	case o.memoryPerUser <= 0 || o.memoryPerUser > 1000:
		return options{}, errors.New("--memory-sessions-per-user must be between 1 and 1000")
	}
	return o, nil
}

// selected returns the names of the scenarios to run, in order: all in scenarioOrder, or those
// named, in the order named.
func (o options) selected() []string {
	if o.scenario == "all" {
		return scenarioOrder
	}
	return strings.Split(o.scenario, ",")
}

// run runs the bench with the command line args. Results go to stdout, everything else to stderr.
// Whatever happens, including ctx ending (Ctrl-C), it stops the node and the throwaway cluster and
// removes the temporary directories before it returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var cleanup cleanups
	defer cleanup.run()
	if o.debugAddr != "" {
		if err := serveDebug(o.debugAddr, stderr, &cleanup); err != nil {
			return err
		}
	}
	e, err := startEnv(ctx, o, stderr, &cleanup)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted while starting")
		}
		return err
	}
	out := json.NewEncoder(stdout)
	emit := func(v any) error {
		if err := out.Encode(v); err != nil {
			return fmt.Errorf("writing a result: %w", err)
		}
		return nil
	}
	bad := 0
	for _, name := range o.selected() {
		n, err := scenarios[name](ctx, e, o, emit)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("scenario %s: interrupted", name)
			}
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		bad += n
	}
	if bad > 0 {
		return fmt.Errorf("%d measured runs had more than 1%% failed calls, or completed none (see the errors fields and the log above)", bad)
	}
	return nil
}

// env is what the scenarios run against: one node on one database, and a second one on the same
// database once a scenario asks for it (see env.second).
type env struct {
	node *server.Node
	// cfg is the configuration node started with, and cleanup stops what the env starts later.
	cfg     server.Config
	cleanup *cleanups
	// node2 is the second node, nil until env.second starts it.
	node2 *server.Node
	// adminToken is a session token of the administrator, empty until env.admin makes one.
	adminToken string
	// database is "postgres" or "sqlite", for the results.
	database string
	// prefix starts the names of the users this bench creates, unique to the bench, so that a
	// database named by --database may hold users already (of an earlier bench, say).
	prefix string
	// log receives progress.
	log io.Writer
}

// progress writes one line of progress.
func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "gatehouse-bench: "+format+"\n", args...)
}

// startEnv prepares the database o names (starting a throwaway PostgreSQL when it names none) and
// starts a node on it. What it starts is stopped by cleanup.
func startEnv(ctx context.Context, o options, stderr io.Writer, cleanup *cleanups) (*env, error) {
	e := &env{log: stderr, prefix: "bench-" + strings.ToLower(rand.Text()[:8]), cleanup: cleanup}
	url := o.database
	switch {
	case url == "":
		e.progress("starting a throwaway PostgreSQL cluster")
		pg, err := startPostgres(ctx)
		if err != nil {
			return nil, fmt.Errorf("starting a throwaway PostgreSQL: %w", err)
		}
		cleanup.push(func() {
			if err := pg.stop(); err != nil {
				e.progress("stopping the throwaway PostgreSQL: %v", err)
			}
		})
		url, e.database = pg.url, "postgres"
	case url == "sqlite":
		dir, err := os.MkdirTemp("", "gatehouse-bench-sqlite-")
		if err != nil {
			return nil, fmt.Errorf("creating a directory for the SQLite database: %w", err)
		}
		cleanup.push(func() {
			if err := os.RemoveAll(dir); err != nil {
				e.progress("removing %s: %v", dir, err)
			}
		})
		url, e.database = "sqlite://"+filepath.Join(dir, "gatehouse.db"), "sqlite"
	case strings.HasPrefix(url, "sqlite://"):
		e.database = "sqlite"
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		e.database = "postgres"
	default:
		return nil, fmt.Errorf("--database %q: use sqlite, sqlite://PATH or postgres://...", url)
	}

	cfg := server.Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		Database: url,
		// NOTE: a password of our own, so that the node does not log a generated one. The bench
		// never logs in as the administrator: it writes its users and sessions into the store.
		AdminPassword: rand.Text(),
		// NOTE: PasswordHashing stays zero, the production argon2id parameters: the login
		// scenario measures them.
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	e.cfg = cfg
	e.progress("starting a node on %s", e.database)
	n, err := e.startNode(ctx, cfg)
	if err != nil {
		return nil, err
	}
	e.node = n
	return e, nil
}

// startNode starts a node with cfg, stopped by e.cleanup.
func (e *env) startNode(ctx context.Context, cfg server.Config) (*server.Node, error) {
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := server.Start(startCtx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting a node: %w", err)
	}
	e.cleanup.push(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			e.progress("shutting a node down: %v", err)
		}
	})
	return n, nil
}

// second returns a second node on the database of the first, starting it on the first call, or
// nil on SQLite, whose file one node at a time can open.
func (e *env) second(ctx context.Context) (*server.Node, error) {
	if e.database != "postgres" {
		return nil, nil
	}
	if e.node2 == nil {
		e.progress("starting a second node on the same database")
		cfg := e.cfg
		// NOTE: no administrator's password: the first node set it, and a node given one on a
		// database that has users warns that it goes unused.
		cfg.AdminPassword = ""
		n, err := e.startNode(ctx, cfg)
		if err != nil {
			return nil, err
		}
		e.node2 = n
	}
	return e.node2, nil
}

// cleanups are the undo steps of what a bench started, run last first.
type cleanups []func()

// push adds a step.
func (c *cleanups) push(f func()) { *c = append(*c, f) }

// run runs the steps, last first.
//
// NOTE: a pointer receiver, so that `defer c.run()` runs the steps pushed after the defer.
func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}
