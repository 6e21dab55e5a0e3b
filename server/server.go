package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/gen/openapi"
	"github.com/gatehouse/gatehouse/server/api"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
	"github.com/gatehouse/gatehouse/server/transport"
)

// service is one API service that serves every protocol.
type service interface {
	RegisterGRPC(grpc.ServiceRegistrar)
	RegisterConnect(...connect.HandlerOption) (string, http.Handler)
	RegisterGateway(context.Context, *runtime.ServeMux, grpc.ClientConnInterface) error
}

// Node is a running Gatehouse node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  *store.Store
	hasher *auth.Hasher
	// sessions is the session domain (its sweeper's round count is exposed to tests).
	sessions *session.Service
	// live is the node's tailer and hub (server/events).
	live *events.Live
	// dbDown is whether the last readiness check found the database unreachable.
	dbDown     atomic.Bool
	grpcLis    net.Listener
	httpLis    net.Listener
	grpcServer *grpc.Server
	httpServer *http.Server
	health     *health.Server
	gwConn     *grpc.ClientConn
	group      *errgroup.Group
	cancel     context.CancelFunc
	// serving is the context of the node's errgroup: it ends with the error of the first of its
	// goroutines to fail (its cause), or once Shutdown has stopped them (Done, Err).
	serving context.Context
	// stopStreams, when set, ends every open stream (WatchSession, WatchEvents) with UNAVAILABLE and
	// returns once they have been told, so that clients resume on another node. Shutdown calls it
	// first: GracefulStop and http.Server.Shutdown would otherwise wait for these long-lived
	// streams until the drain timed out.
	stopStreams func()
	// draining is set once Shutdown has begun: /readyz then answers 503.
	draining atomic.Bool
	// httpHandlers counts the HTTP handlers running, for Shutdown to wait on.
	httpHandlers handlerGate
	// shutdownOnce makes Shutdown run once; later calls return shutdownErr.
	shutdownOnce sync.Once
	shutdownErr  error
}

// Migrate opens the database named in cfg, brings its schema up to date and closes it.
func Migrate(ctx context.Context, cfg Config) error {
	cfg = cfg.Defaults()
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Migrate(ctx)
}

// Start binds both listeners, opens and migrates the database, bootstraps the administrator on an
// empty database and starts serving. It returns once the node accepts connections.
//
// NOTE: the listeners come first, so that a start that cannot bind its ports (another node on
// them) fails before it has written anything: it must not bootstrap an administrator whose
// generated password nobody sees.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg = cfg.Defaults()
	log := cfg.Logger
	tlsConf, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	cors, err := transport.NewCORS(cfg.CORSAllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("CORSAllowedOrigins: %w", err)
	}
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listening for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	defer func() {
		if err != nil {
			_ = grpcLis.Close()
		}
	}()
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listening for HTTP on %s: %w", cfg.HTTPAddr, err)
	}
	defer func() {
		if err != nil {
			_ = httpLis.Close()
		}
	}()
	st, err := store.OpenWith(ctx, cfg.Database, cfg.storeOptions())
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = st.Close()
		}
	}()
	if err := st.Migrate(ctx); err != nil {
		return nil, err
	}

	d, err := newDomain(st, cfg)
	if err != nil {
		return nil, err
	}
	hasher, sessions, identities, policies := d.hasher, d.sessions, d.identities, d.policies
	sessions.SetExpiryWarning(cfg.ExpiryWarning)
	live, liveMetrics, err := startLive(ctx, st, sessions, cfg)
	if err != nil {
		return nil, err
	}
	created, generated, err := identities.Bootstrap(ctx, cfg.AdminPassword)
	if err != nil {
		return nil, fmt.Errorf("bootstrapping the administrator: %w", err)
	}
	switch {
	case created && generated != "":
		// NOTE: the one place a secret is logged, by design (ARCHITECTURE.md section 9): it is
		// generated, shown once, and should be changed with SetPassword.
		log.Warn("created the bootstrap administrator with a generated password; it is shown only this once",
			"username", identity.BootstrapUsername, "password", generated)
	case created:
		log.Info("created the bootstrap administrator", "username", identity.BootstrapUsername)
	case cfg.AdminPassword != "":
		log.Warn("GATEHOUSE_ADMIN_PASSWORD is set but not used: it only sets the bootstrap administrator's password "+
			"on a database without users, and this one has users; to change a password use SetPassword, "+
			"or `gatehouse admin reset-password USERNAME` with the node stopped", "database", store.Redact(cfg.Database))
	}

	// NOTE: a registry of the node's own, not the global one, so that several nodes in one
	// process (the tests) do not collide.
	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(st.DB, st.Dialect),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gatehouse_password_hashes_total",
			Help: "argon2id derivations run by this node (password hashes and verifications, real and dummy).",
		}, func() float64 { return float64(hasher.Derivations()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatehouse_password_hash_queue_length",
			Help: "password hashes waiting for a hashing slot.",
		}, func() float64 { return float64(hasher.Queued()) }),
	)
	opts := transport.Options{
		Log:           log,
		Authenticator: sessions,
		Rules:         api.Rules,
		GatewaySecret: transport.NewGatewaySecret(),
		Metrics:       transport.NewMetrics(registry),
		// MaxRequestBytes bounds requests on both ports (the gRPC server's receive limit,
		// connect's read limit, LimitRequestBodies and the gateway's connection).
		MaxRequestBytes:    cfg.MaxRequestBytes,
		RequestBodyTimeout: cfg.RequestBodyTimeout,
		// NOTE: one set of stream limits for every front, so that a caller's streams are counted
		// together whichever way they came.
		Streams: transport.NewStreamLimits(cfg.MaxStreamsPerSession, cfg.MaxStreamsPerUser),
	}
	registry.MustRegister(liveMetrics...)
	services := []service{api.NewIdentity(identities, live), api.NewSession(sessions, live), api.NewPolicy(policies, sessions, live)}

	n := &Node{cfg: cfg, log: log, store: st, hasher: hasher, sessions: sessions, live: live, grpcLis: grpcLis, httpLis: httpLis}
	n.stopStreams = func() {
		live.Close(errs.Unavailable("NODE_SHUTTING_DOWN", "the node is shutting down; reconnect to another node"))
	}

	grpcOpts := transport.GRPCServerOptions(opts)
	if tlsConf != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	n.grpcServer = grpc.NewServer(grpcOpts...)
	n.health = health.NewServer()
	healthpb.RegisterHealthServer(n.grpcServer, n.health)
	reflection.Register(n.grpcServer)
	for _, s := range services {
		s.RegisterGRPC(n.grpcServer)
	}

	var clientTLS *tls.Config
	if tlsConf != nil {
		clientTLS, err = selfClientTLS(cfg)
		if err != nil {
			return nil, err
		}
	}
	n.gwConn, err = transport.DialSelf(ctx, dialTarget(n.grpcLis.Addr()), clientTLS)
	if err != nil {
		return nil, fmt.Errorf("connecting the REST gateway to the gRPC port: %w", err)
	}
	gw := transport.NewGatewayMux(opts)
	mux := http.NewServeMux()
	connectOpts := transport.ConnectHandlerOptions(opts)
	serviceNames := []string{
		gatehousev1connect.IdentityServiceName, gatehousev1connect.SessionServiceName, gatehousev1connect.PolicyServiceName,
	}
	// NOTE: the gateway runs unary calls in process, behind the gRPC port's interceptor, and
	// server streams over its connection to the port (transport.LocalConn).
	local := transport.NewLocalConn(opts, n.gwConn)
	for _, s := range services {
		path, h := s.RegisterConnect(connectOpts...)
		mux.Handle(path, h)
		s.RegisterGRPC(local)
		if err := s.RegisterGateway(ctx, gw, local); err != nil {
			return nil, err
		}
	}
	reflector := grpcreflect.NewStaticReflector(serviceNames...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(healthChecker{n.health}))
	mux.Handle("/v1/", gw)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", n.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(tlsConf == nil)
	protocols.SetHTTP2(tlsConf != nil)
	n.httpServer = &http.Server{
		Handler:           n.httpHandlers.wrap(cors(transport.LimitRequestBodies(opts, mux))),
		Protocols:         protocols,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		// NOTE: no WriteTimeout: server streams (WatchSession) stay open for hours. Unary calls are
		// bounded by their contexts.
		ReadTimeout:    0,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	g, serving := errgroup.WithContext(runCtx)
	n.group, n.serving = g, serving
	g.Go(func() error {
		err := n.grpcServer.Serve(n.grpcLis)
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("serving gRPC on %s: %w", n.grpcLis.Addr(), err)
	})
	g.Go(func() error {
		var err error
		if tlsConf != nil {
			err = n.httpServer.ServeTLS(n.httpLis, "", "")
		} else {
			err = n.httpServer.Serve(n.httpLis)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving HTTP on %s: %w", n.httpLis.Addr(), err)
	})
	g.Go(func() error { return sessions.RunSweeper(runCtx, cfg.sweeperOptions()) })
	g.Go(func() error { return live.Run(runCtx) })
	g.Go(func() error { return sessions.RunWriteBack(runCtx) })
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, name := range serviceNames {
		n.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	log.Info("gatehouse node started", "grpc", n.grpcLis.Addr().String(), "http", n.httpLis.Addr().String(),
		"database", store.Redact(cfg.Database), "tls", tlsConf != nil)
	return n, nil
}

// healthChecker answers grpc.health.v1 on the HTTP port from the gRPC port's health server, so that
// both ports say the same: SERVING while the node serves, NOT_SERVING once it drains.
type healthChecker struct{ h *health.Server }

// Check implements grpchealth.Checker.
func (c healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	resp, err := c.h.Check(ctx, &healthpb.HealthCheckRequest{Service: req.Service})
	if err != nil {
		return nil, connect.NewError(connect.Code(status.Code(err)), err)
	}
	return &grpchealth.CheckResponse{Status: grpchealth.Status(resp.GetStatus())}, nil
}

// ready answers /readyz: 200 when the database answers, 503 otherwise, and 503 "draining" from
// the moment Shutdown begins (while /healthz still answers 200).
//
// NOTE: a load balancer probes every second or so: the node logs one line when the database stops
// answering and one when it answers again, not one per probe.
func (n *Node) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if n.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := n.store.Ping(ctx); err != nil {
		if !n.dbDown.Swap(true) {
			n.log.Warn("readiness: the database does not answer; /readyz says 503 until it does", "err", err)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("database unavailable\n"))
		return
	}
	if n.dbDown.Swap(false) {
		n.log.Info("readiness: the database answers again")
	}
	_, _ = w.Write([]byte("ok\n"))
}

// GRPCAddr returns the bound gRPC address.
func (n *Node) GRPCAddr() string { return n.grpcLis.Addr().String() }

// HTTPAddr returns the bound HTTP address.
func (n *Node) HTTPAddr() string { return n.httpLis.Addr().String() }

// Store returns the node's store (for tests and admin tooling).
func (n *Node) Store() *store.Store { return n.store }

// SweepRounds returns how many rounds the node's sweeper has run, failed ones included.
func (n *Node) SweepRounds() uint64 { return n.sessions.SweepRounds() }

// PasswordHashes returns how many argon2id derivations the node has run (also exported as
// gatehouse_password_hashes_total), so that tests can check what a request cost.
func (n *Node) PasswordHashes() uint64 { return n.hasher.Derivations() }

// Shutdown drains the node and closes its database. It marks the node not ready (/readyz answers
// 503, gRPC health NOT_SERVING; /healthz still answers 200), ends the open streams with
// UNAVAILABLE, stops accepting calls and waits for those in flight. If ctx ends first, it cuts the
// connections still open. It closes the database only once both servers, every handler and the
// node's background goroutines have returned.
//
// It returns the error of the first of the node's servers (or background goroutines) that failed,
// if one did, else the error of closing the database. Calling it again, or concurrently, waits for
// the first call and returns its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.drain(ctx) })
	return n.shutdownErr
}

// drain is the body of Shutdown.
func (n *Node) drain(ctx context.Context) error {
	n.draining.Store(true)
	n.health.Shutdown()
	if n.stopStreams != nil {
		n.stopStreams()
	}
	grpcDone := make(chan struct{})
	go func() {
		n.grpcServer.GracefulStop()
		close(grpcDone)
	}()
	var httpErr error
	timedOut := false
	if err := n.httpServer.Shutdown(ctx); err != nil {
		// NOTE: Shutdown leaves open the connections it could not drain in time. Close cuts them,
		// which cancels their handlers' contexts; httpHandlers then waits for the handlers, which
		// Close does not.
		_ = n.httpServer.Close()
		if ctx.Err() != nil {
			timedOut = true
		} else {
			httpErr = err
		}
	}
	select {
	case <-grpcDone:
	case <-ctx.Done():
		timedOut = true
		n.grpcServer.Stop()
		// NOTE: the GracefulStop under way returns only once every handler has returned, even
		// after Stop has cut the connections (grpc.Server.stop waits for its handlers when
		// graceful), so that no gRPC handler runs against the closed database either.
		<-grpcDone
	}
	n.httpHandlers.closeAndWait()
	if timedOut {
		n.log.Warn("shutdown: the drain timed out; cut the connections still open")
	}
	_ = n.gwConn.Close()
	n.cancel()
	err := n.group.Wait()
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = httpErr
	}
	return err
}

// Done returns a channel that is closed when the node stops serving: when one of its servers (or
// its sweeper or tailer) fails, which Err then reports, or once Shutdown has stopped them.
func (n *Node) Done() <-chan struct{} { return n.serving.Done() }

// Err returns, once Done is closed because one of the node's servers failed, that server's error
// (which names it). It returns nil while the node serves and after a Shutdown without a failure.
func (n *Node) Err() error {
	// NOTE: the errgroup cancels serving with the first error of its goroutines as the cause; a
	// Shutdown (n.cancel) and the end of the group cancel it with context.Canceled.
	if err := context.Cause(n.serving); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Run serves until ctx ends or one of the node's servers fails, then shuts the node down, bounded
// by Config.ShutdownTimeout. After a failure it returns that error, which names the server;
// otherwise the result of Shutdown.
func (n *Node) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		n.log.Info("shutting down")
	case <-n.Done():
		n.log.Error("a server failed; shutting down the rest of the node", "err", n.Err())
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ShutdownTimeout)
	defer cancel()
	return n.Shutdown(sctx)
}

// Run starts a node and serves until ctx ends or one of its servers fails (see Node.Run).
func Run(ctx context.Context, cfg Config) error {
	n, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// handlerGate counts the HTTP handlers running, so that Shutdown can wait for the last one before
// it closes the database: http.Server.Close cuts the connections but does not wait for their
// handlers. Once closed, it turns away the handlers that start late (on a connection accepted
// just before the listener closed).
type handlerGate struct {
	mu      sync.Mutex
	running int
	closed  bool
	idle    chan struct{} // made by closeAndWait, closed once no handler runs
}

// wrap returns h, counted by the gate.
func (g *handlerGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.enter() {
			http.Error(w, "the node is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer g.leave()
		h.ServeHTTP(w, r)
	})
}

func (g *handlerGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running++
	return true
}

func (g *handlerGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if g.closed && g.running == 0 {
		close(g.idle)
	}
}

// closeAndWait turns new handlers away and waits for the running ones to return. It is called
// once.
func (g *handlerGate) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.idle = make(chan struct{})
	if g.running == 0 {
		close(g.idle)
	}
	idle := g.idle
	g.mu.Unlock()
	<-idle
}

func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCertFile == "" && cfg.TLSKeyFile == "" {
		return nil, nil
	}
	if cfg.TLSCertFile == "" || cfg.TLSKeyFile == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}, nil
}

// selfClientTLS trusts the node's own certificate, for the gateway's connection to its gRPC port.
func selfClientTLS(cfg Config) (*tls.Config, error) {
	pem, err := os.ReadFile(cfg.TLSCertFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: "localhost"}, nil
}

// dialTarget turns a listener address into one the gateway can dial (wildcards become loopback).
func dialTarget(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("127.0.0.1:%d", tcp.Port)
		}
	}
	return a.String()
}
