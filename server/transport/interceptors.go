package transport

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
)

// GatewayHeader is the metadata key with which the node's own REST gateway proves, by carrying
// Options.GatewaySecret, that the x-forwarded-for it sends is the real client address.
const GatewayHeader = "x-gatehouse-gateway"

const (
	headerAuthorization = "authorization"
	headerUserAgent     = "user-agent"
	headerForwardedFor  = "x-forwarded-for"
	// headerGatewayUserAgent is where grpc-gateway's default header matcher puts the REST
	// client's User-Agent (a permanent HTTP header, forwarded with the grpcgateway- prefix).
	headerGatewayUserAgent = "grpcgateway-user-agent"
)

// Options configures the interceptors of both transports and the REST gateway.
type Options struct {
	// Log receives the access log (Info; successful ValidateSession and Check calls at Debug)
	// and internal errors with their causes (Error). Nil means slog.Default().
	Log *slog.Logger
	// Authenticator turns bearer tokens into principals. Required.
	Authenticator auth.Authenticator
	// Rules says who may call each method. Required. A method without a rule is denied to
	// everyone.
	Rules auth.RuleSet
	// GatewaySecret is shared by the gRPC interceptors and the REST gateway of one node: a gRPC
	// call whose GatewayHeader metadata equals it comes from the gateway, so its x-forwarded-for
	// is trusted as the client address. Empty disables that trust entirely. It must be printable
	// ASCII and unguessable; NewGatewaySecret makes one.
	GatewaySecret string
	// Metrics, when set, receive a count and a duration of every call.
	Metrics *Metrics
	// MaxRequestBytes bounds the size of one request message on every front: the gRPC server's
	// receive limit, connect's read limit, and the request bodies of the HTTP port
	// (LimitRequestBodies, which the REST gateway also applies). A larger request is refused with
	// RESOURCE_EXHAUSTED and an ErrorInfo RequestTooLargeReason (HTTP 413 over REST). Zero means
	// DefaultMaxRequestBytes (1 MiB).
	MaxRequestBytes int
	// RequestBodyTimeout bounds how long the HTTP port waits for a request body to arrive whole
	// (LimitRequestBodies): a client that stops sending one has its read fail and its connection
	// closed. It does not bound a stream once its request is read. Zero means
	// DefaultRequestBodyTimeout (30s).
	RequestBodyTimeout time.Duration
	// Streams, when set, bounds the server streams open at once (StreamLimits); share one
	// between the fronts. Nil bounds nothing.
	Streams *StreamLimits
}

// GRPCServerOptions returns the grpc.Server options that install the unary and stream
// interceptors: panic recovery, client info, authentication, rule lookup, id normalisation,
// validation, authorisation, error mapping (ToGRPC) and the access log; and the receive limit
// o.MaxRequestBytes. Pass them before any other interceptor option so that these interceptors run
// outermost. It panics if o.Authenticator or o.Rules is nil.
func GRPCServerOptions(o Options) []grpc.ServerOption {
	k := newCore(o)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(k.unaryGRPC),
		grpc.ChainStreamInterceptor(k.streamGRPC),
		grpc.MaxRecvMsgSize(o.maxRequestBytes()),
	}
}

// ConnectHandlerOptions returns the connect handler options that install the same steps as
// GRPCServerOptions for unary and streaming connect handlers, with ToConnect as the error
// mapping; the read limit o.MaxRequestBytes; and a JSON codec that refuses unknown fields and
// unknown enum value names (INVALID_ARGUMENT with UnknownFieldReason or MalformedReason and a
// BadRequest violation naming the field) and bounds the values its errors repeat. The binary
// protobuf codec is connect's. It panics if o.Authenticator or o.Rules is nil.
//
// Serve the handlers behind LimitRequestBodies, which refuses an oversized body before connect
// reads it and with the ErrorInfo RequestTooLargeReason; connect's own limit, which also bounds
// decompressed messages, answers RESOURCE_EXHAUSTED without it.
func ConnectHandlerOptions(o Options) []connect.HandlerOption {
	return append([]connect.HandlerOption{
		connect.WithInterceptors(&connectInterceptor{k: newCore(o)}),
		connect.WithReadMaxBytes(o.maxRequestBytes()),
		connect.WithCompressMinBytes(CompressMinBytes),
	}, connectCodecs()...)
}

// CompressMinBytes is the smallest Connect response the node compresses (when the client accepts
// gzip). Smaller messages go as they are: gzip saves a few bytes of a typical answer (a validated
// session, some 300 bytes) and cost a fifth of the node's CPU at load (issue 16's profile of
// ValidateSession over Connect).
const CompressMinBytes = 1024

// core is the protocol-neutral logic both interceptor twins share.
type core struct {
	log     *slog.Logger
	authn   auth.Authenticator
	rules   auth.RuleSet
	secret  []byte
	metrics *Metrics
	streams *StreamLimits
}

func newCore(o Options) *core {
	if o.Authenticator == nil {
		panic("transport: Options.Authenticator is nil")
	}
	if o.Rules == nil {
		panic("transport: Options.Rules is nil")
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	return &core{log: log, authn: o.Authenticator, rules: o.Rules, secret: []byte(o.GatewaySecret), metrics: o.Metrics, streams: o.Streams}
}

// call is the state of one call, filled in by the steps and read by the access log.
type call struct {
	protocol  string
	method    string
	start     time.Time
	client    auth.Client
	rule      auth.Rule
	principal *auth.Principal
}

// admit runs the steps that need no request message: it puts the client into ctx, looks up the
// rule, authenticates the bearer token if there is one, and rejects anonymous callers of
// non-public methods.
//
// NOTE: the rule is looked up before the token is authenticated: a method without a rule is
// denied whoever calls it, so there is no point spending a session lookup on it.
func (k *core) admit(ctx context.Context, c *call, authorization string) (context.Context, error) {
	ctx = auth.WithClient(ctx, c.client)
	rule, ok := k.rules(c.method)
	if !ok {
		k.log.LogAttrs(ctx, slog.LevelError, "no authorization rule for method; denying the call",
			slog.String("protocol", c.protocol), slog.String("method", c.method))
		return ctx, auth.Denied()
	}
	c.rule = rule
	p, err := authorizeCaller(ctx, rule, k.authn, authorization)
	if err != nil {
		return ctx, err
	}
	if p != nil {
		c.principal = p
		ctx = auth.WithPrincipal(ctx, p)
	}
	return ctx, nil
}

// authorizeCaller authenticates the bearer token of the authorization header, if there is one,
// for a method with rule, and returns the caller (nil: anonymous). It turns away anonymous
// callers of non-public methods. Both the interceptors (core.admit) and the REST gateway's parse
// error path (gateway.admit) admit callers with it.
func authorizeCaller(ctx context.Context, rule auth.Rule, authn auth.Authenticator, authorization string) (*auth.Principal, error) {
	// NOTE: a malformed header is rejected even on public methods: it is a client bug, and
	// silently treating it as anonymous would hide it.
	token, present, err := bearerToken(authorization)
	if err != nil {
		return nil, err
	}
	var p *auth.Principal
	if present {
		p, err = authn.Authenticate(ctx, token)
		if err == nil && p == nil {
			err = errs.Unauthenticated("UNAUTHENTICATED", "the session token is not valid")
		}
		switch {
		case err == nil:
		case rule.Public && errs.KindOf(err) == errs.KindUnauthenticated:
			// A stale or unknown token does not block a public call: it proceeds as anonymous.
			// NOTE: other failures (the session store being down) are returned even here, so
			// that an outage is not mistaken for an anonymous call.
			p = nil
		default:
			return nil, err
		}
	}

	// NOTE: anonymous callers of non-public methods are turned away before validation, so that
	// they learn nothing about the request shape and cost no validation work. Rule.Authorize
	// would give the same answer after validation.
	if p == nil && !rule.Public {
		return nil, rule.Authorize(nil, nil)
	}
	return p, nil
}

// validate refuses a request message the Connect JSON codec found an unknown field in
// (checkJSONProblem), lower-cases its ids (normalizeIDs) and checks it against its protovalidate
// rules.
func (k *core) validate(c *call, req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return errs.Internal(fmt.Errorf("request of %s is %T, not a proto message", c.method, req))
	}
	if err := checkJSONProblem(msg); err != nil {
		return err
	}
	normalizeIDs(msg)
	return Validate(msg)
}

// check validates one request message and applies the method's rule to it.
func (k *core) check(c *call, req any) error {
	if err := k.validate(c, req); err != nil {
		return err
	}
	return c.rule.Authorize(c.principal, req)
}

// logCall writes the access log line of a call and records its metrics. It never logs headers,
// tokens or messages.
func (k *core) logCall(ctx context.Context, c *call, code codes.Code, cause error) {
	took := time.Since(c.start)
	k.metrics.observe(c, code, took)
	level := accessLevel(c.method, code)
	if !k.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("protocol", c.protocol),
		slog.String("method", c.method),
		slog.String("code", code.String()),
		slog.Duration("duration", took),
		slog.String("client_ip", c.client.IP),
	)
	if c.principal != nil {
		attrs = append(attrs,
			slog.String("user_id", c.principal.UserID),
			slog.String("session_id", c.principal.SessionID))
	}
	if e, ok := errs.As(cause); ok && code != codes.OK {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	k.log.LogAttrs(ctx, level, "rpc", attrs...)
}

// hotMethods are the methods on every request path of the relying applications, whose successful
// calls are logged at Debug rather than Info.
var hotMethods = map[string]bool{
	gatehousev1connect.SessionServiceValidateSessionProcedure: true,
	gatehousev1connect.PolicyServiceCheckProcedure:            true,
}

// accessLevel is the level of the access log line of a call of method that ended with code.
//
// NOTE: a node validates tokens thousands of times a second, and a line per call cost about 8% of
// a validation's CPU and flooded the log with nothing to act on; the counts and durations of those
// calls are in the metrics. Failed calls of the same methods stay at Info (a stolen or expired
// token is worth a line), and so does every other method (mutations are the audit trail of the
// log).
func accessLevel(method string, code codes.Code) slog.Level {
	if code == codes.OK && hotMethods[method] {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// errorLog is the logger the error mapping reports internal errors to, tagged with the call.
func (k *core) errorLog(c *call) *slog.Logger {
	return k.log.With(slog.String("protocol", c.protocol), slog.String("method", c.method))
}

// recoverPanic turns a panic of the call into an internal error carrying the panic value and
// stack, which the error mapping logs. It must be deferred directly.
func recoverPanic(err *error) {
	if r := recover(); r != nil {
		*err = errs.Internal(&panicError{value: r, stack: debug.Stack()})
	}
}

// recoverConnectPanic is recoverPanic for connect handlers. NOTE: http.ErrAbortHandler is the
// net/http way to abort a response on purpose, so it is re-raised rather than reported.
func recoverConnectPanic(err *error) {
	if r := recover(); r != nil {
		if r == http.ErrAbortHandler {
			panic(r)
		}
		*err = errs.Internal(&panicError{value: r, stack: debug.Stack()})
	}
}

// bearerToken parses an authorization header. An empty header is absent, not malformed.
func bearerToken(header string) (token string, present bool, err error) {
	if header == "" {
		return "", false, nil
	}
	scheme, rest, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(rest)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", true, errs.Unauthenticated("MALFORMED_AUTHORIZATION",
			`the authorization header must be "Bearer <session token>"`)
	}
	return token, true, nil
}

// hostOf returns the host part of a host:port address, or the address itself when it has none.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// --- gRPC twin ---

func (k *core) unaryGRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := k.grpcCall(ctx, info.FullMethod, md)
	defer func() { err = k.endGRPC(ctx, c, err) }()
	defer recoverPanic(&err)

	callCtx, err := k.admit(ctx, c, firstValue(md, headerAuthorization))
	if err != nil {
		return nil, err
	}
	if err := k.check(c, req); err != nil {
		return nil, err
	}
	return handler(callCtx, req)
}

func (k *core) streamGRPC(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	c := k.grpcCall(ctx, info.FullMethod, md)
	defer func() { err = k.endGRPC(ctx, c, err) }()
	defer recoverPanic(&err)

	// NOTE: a stream is not activity: authenticating it does not extend the session's idle
	// timeout.
	callCtx, err := k.admit(auth.Passive(ctx), c, firstValue(md, headerAuthorization))
	if err != nil {
		return err
	}
	release, err := k.streams.take(c.principal, c.client.IP)
	if err != nil {
		return err
	}
	defer release()
	return handler(srv, &guardedServerStream{ServerStream: ss, ctx: callCtx, guard: guard{k: k, c: c}})
}

// endGRPC maps the call's error and logs the call.
func (k *core) endGRPC(ctx context.Context, c *call, err error) error {
	var out error
	if err != nil {
		out = ToGRPC(k.errorLog(c), err)
	}
	k.logCall(ctx, c, status.Code(out), err)
	return out
}

// grpcCall starts the state of a native gRPC call. Calls of the node's own REST gateway are
// recorded as protocol "rest".
func (k *core) grpcCall(ctx context.Context, method string, md metadata.MD) *call {
	c := &call{protocol: "grpc", method: method, start: time.Now(), client: k.grpcClient(ctx, md)}
	if k.fromGateway(md) {
		c.protocol = "rest"
	}
	return c
}

// grpcClient reads the client's address and user agent. NOTE: x-forwarded-for is trusted only
// from the node's own gateway, recognised by the gateway secret: anyone else could put any
// address there and dodge per-address rate limits.
func (k *core) grpcClient(ctx context.Context, md metadata.MD) auth.Client {
	c := auth.Client{UserAgent: firstValue(md, headerUserAgent)}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.IP = hostOf(p.Addr.String())
	}
	if k.fromGateway(md) {
		if ip := forwardedFor(md); ip != "" {
			c.IP = ip
		}
		if ua := firstValue(md, headerGatewayUserAgent); ua != "" {
			c.UserAgent = ua
		}
	}
	return c
}

// fromGateway reports whether the call carries the gateway secret.
func (k *core) fromGateway(md metadata.MD) bool {
	if len(k.secret) == 0 {
		return false
	}
	got := firstValue(md, GatewayHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), k.secret) == 1
}

// forwardedFor returns the first address of x-forwarded-for if it is an IP address.
func forwardedFor(md metadata.MD) string {
	first, _, _ := strings.Cut(firstValue(md, headerForwardedFor), ",")
	addr, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil {
		return ""
	}
	return addr.String()
}

func firstValue(md metadata.MD, key string) string {
	if vs := md.Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// guard validates the messages a stream receives and authorizes the first, and keeps the
// handler from sending anything before that.
//
// NOTE: the request of a server-streaming call is only available once the handler receives it,
// so the check happens in the first receive rather than before the handler runs. Handlers
// generated for server streams always receive first; a handler that tried to send first would
// get an error rather than leak data to an unauthorised caller.
type guard struct {
	k          *core
	c          *call
	authorized atomic.Bool
}

func (g *guard) received(msg any) error {
	if g.authorized.Load() {
		return g.k.validate(g.c, msg)
	}
	if err := g.k.check(g.c, msg); err != nil {
		return err
	}
	g.authorized.Store(true)
	return nil
}

func (g *guard) beforeSend() error {
	if !g.authorized.Load() {
		return errs.Internal(errors.New("stream handler sent a message before receiving its authorized request"))
	}
	return nil
}

// guardedServerStream is a grpc.ServerStream that carries the call's context and checks what it
// receives.
type guardedServerStream struct {
	grpc.ServerStream
	ctx   context.Context
	guard guard
}

// Context returns the call's context, which carries the client and the principal.
func (s *guardedServerStream) Context() context.Context { return s.ctx }

// RecvMsg receives a message and checks it.
func (s *guardedServerStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.guard.received(m)
}

// SendMsg sends a message once the request has been authorized.
func (s *guardedServerStream) SendMsg(m any) error {
	if err := s.guard.beforeSend(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

// --- connect twin ---

// connectInterceptor is the connect twin of the grpc interceptors.
type connectInterceptor struct {
	k *core
}

var _ connect.Interceptor = (*connectInterceptor)(nil)

// WrapUnary implements connect.Interceptor for unary handlers.
func (i *connectInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	k := i.k
	return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		c := &call{protocol: req.Peer().Protocol, method: req.Spec().Procedure, start: time.Now()}
		defer func() { err = k.endConnect(ctx, c, err) }()
		defer recoverConnectPanic(&err)

		c.client = connectClient(req.Peer(), req.Header())
		callCtx, err := k.admit(ctx, c, req.Header().Get(headerAuthorization))
		if err != nil {
			return nil, err
		}
		if err := k.check(c, req.Any()); err != nil {
			return nil, err
		}
		return next(callCtx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor; clients pass through.
func (i *connectInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor for streaming handlers.
func (i *connectInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	k := i.k
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		c := &call{protocol: conn.Peer().Protocol, method: conn.Spec().Procedure, start: time.Now()}
		defer func() { err = k.endConnect(ctx, c, err) }()
		defer recoverConnectPanic(&err)

		c.client = connectClient(conn.Peer(), conn.RequestHeader())
		callCtx, err := k.admit(auth.Passive(ctx), c, conn.RequestHeader().Get(headerAuthorization))
		if err != nil {
			return err
		}
		release, err := k.streams.take(c.principal, c.client.IP)
		if err != nil {
			return err
		}
		defer release()
		return next(callCtx, &guardedHandlerConn{StreamingHandlerConn: conn, guard: guard{k: k, c: c}})
	}
}

// endConnect maps the call's error and logs the call.
func (k *core) endConnect(ctx context.Context, c *call, err error) error {
	if err == nil {
		k.logCall(ctx, c, codes.OK, nil)
		return nil
	}
	out := ToConnect(k.errorLog(c), err)
	k.logCall(ctx, c, codes.Code(connect.CodeOf(out)), err)
	return out
}

// connectClient reads the client's address and user agent. NOTE: forwarding headers are never
// trusted here: the REST gateway reaches the service through the gRPC port, not through connect.
func connectClient(p connect.Peer, h http.Header) auth.Client {
	return auth.Client{IP: hostOf(p.Addr), UserAgent: h.Get("User-Agent")}
}

// guardedHandlerConn is a connect.StreamingHandlerConn that checks what it receives.
type guardedHandlerConn struct {
	connect.StreamingHandlerConn
	guard guard
}

// Receive receives a message and checks it.
func (c *guardedHandlerConn) Receive(m any) error {
	if err := c.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	return c.guard.received(m)
}

// Send sends a message once the request has been authorized.
func (c *guardedHandlerConn) Send(m any) error {
	if err := c.guard.beforeSend(); err != nil {
		return err
	}
	return c.StreamingHandlerConn.Send(m)
}
