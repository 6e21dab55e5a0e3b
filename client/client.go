package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// Defaults of the options.
const (
	// DefaultMinBackoff is the first delay before a reconnect.
	DefaultMinBackoff = 50 * time.Millisecond
	// DefaultMaxBackoff caps the delay before a reconnect.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultIdleTimeout is how long a WatchSession stream may stay silent, heartbeats included,
	// before it is taken for dead: three of the server's default 15 s heartbeat intervals.
	DefaultIdleTimeout = 45 * time.Second
)

// Client watches Gatehouse streams across a list of nodes and reconnects them when a node or the
// connection to it fails. It is safe for concurrent use; every watch runs on its own stream.
type Client struct {
	nodes       []node
	current     atomic.Int64 // index into nodes of the node watches start on and Session uses
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idleTimeout time.Duration
	heartbeats  bool
	log         *slog.Logger
	own         []*http.Client // the HTTP clients New built, for CloseIdleConnections
}

type node struct {
	url string
	svc gatehousev1connect.SessionServiceClient
}

// Option configures a Client.
type Option func(*config)

type config struct {
	token       string
	httpClient  *http.Client
	grpc        bool
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idleTimeout time.Duration
	heartbeats  bool
	log         *slog.Logger
}

// WithToken sends "authorization: Bearer <token>" on every call.
func WithToken(token string) Option { return func(c *config) { c.token = token } }

// WithHTTPClient makes every call through hc instead of the client New builds (nil keeps that
// one). For the gRPC protocol over http:// URLs, hc must speak unencrypted HTTP/2 (h2c).
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.httpClient = hc } }

// WithGRPC uses the gRPC protocol instead of the Connect protocol.
func WithGRPC() Option { return func(c *config) { c.grpc = true } }

// WithBackoff sets the range of the delay before a reconnect: it starts at minDelay, doubles up to
// maxDelay after each failure in a row, is jittered, and goes back to minDelay once a stream
// delivers a message. The defaults are DefaultMinBackoff and DefaultMaxBackoff.
func WithBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) { c.minBackoff, c.maxBackoff = minDelay, maxDelay }
}

// WithIdleTimeout sets how long a WatchSession stream may go without any message, heartbeats
// included, before it is taken for dead and reconnected (DefaultIdleTimeout). Zero turns the check
// off. It should be a few times the server's heartbeat interval.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithHeartbeats makes WatchSession deliver heartbeat messages too; by default it only uses them
// to tell a quiet stream from a dead one.
func WithHeartbeats() Option { return func(c *config) { c.heartbeats = true } }

// WithLogger logs reconnects to l. By default nothing is logged.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// New returns a client for the nodes, given by their base URLs (http://host:port for a node's
// plain HTTP port, https:// behind TLS). The first node is the current one until a watch fails
// over to the next; watches start on the current node.
func New(nodes []string, opts ...Option) (*Client, error) {
	cfg := config{
		minBackoff:  DefaultMinBackoff,
		maxBackoff:  DefaultMaxBackoff,
		idleTimeout: DefaultIdleTimeout,
		log:         slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	switch {
	case len(nodes) == 0:
		return nil, errors.New("client: no nodes")
	case cfg.minBackoff <= 0 || cfg.maxBackoff < cfg.minBackoff:
		return nil, fmt.Errorf("client: backoff %v..%v: want 0 < min <= max", cfg.minBackoff, cfg.maxBackoff)
	case cfg.idleTimeout < 0:
		return nil, fmt.Errorf("client: negative idle timeout %v", cfg.idleTimeout)
	case cfg.log == nil:
		return nil, errors.New("client: nil logger")
	case strings.ContainsAny(cfg.token, "\r\n"):
		return nil, errors.New("client: the token contains a line break")
	}
	c := &Client{
		minBackoff:  cfg.minBackoff,
		maxBackoff:  cfg.maxBackoff,
		idleTimeout: cfg.idleTimeout,
		heartbeats:  cfg.heartbeats,
		log:         cfg.log,
	}
	var copts []connect.ClientOption
	if cfg.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	if cfg.token != "" {
		copts = append(copts, connect.WithInterceptors(bearer("Bearer "+cfg.token)))
	}
	built := map[string]*http.Client{}
	for _, raw := range nodes {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("client: node %q: %w", raw, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("client: node %q: want an http:// or https:// base URL", raw)
		}
		hc := cfg.httpClient
		if hc == nil {
			if hc = built[u.Scheme]; hc == nil {
				hc = newHTTPClient(u.Scheme == "http")
				built[u.Scheme] = hc
				c.own = append(c.own, hc)
			}
		}
		base := strings.TrimSuffix(u.String(), "/")
		c.nodes = append(c.nodes, node{url: base, svc: gatehousev1connect.NewSessionServiceClient(hc, base, copts...)})
	}
	return c, nil
}

// newHTTPClient returns an HTTP client for a node's port: unencrypted HTTP/2 (h2c, with prior
// knowledge) for http:// URLs, HTTP/2 or HTTP/1.1 over TLS for https:// ones.
//
// NOTE: h2c is used for the Connect protocol too, not only for gRPC. With HTTP/1 also enabled, Go's
// transport sends http:// requests over HTTP/1.1, and HTTP/1.1 has no pings: a node that vanishes
// without closing its connections would leave a quiet WatchEvents stream, which has no heartbeats,
// waiting forever. Over HTTP/2 the transport pings a connection that has been silent for 15 s and
// drops it when no answer comes within another 15 s, which the watch then sees as a retryable error.
// No client timeout is set: streams stay open for hours.
func newHTTPClient(h2c bool) *http.Client {
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConns:        100,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second},
		Protocols:           new(http.Protocols),
	}
	if h2c {
		// NOTE: no proxy from the environment: a forward proxy does not carry h2c with prior knowledge.
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Proxy = http.ProxyFromEnvironment
		t.Protocols.SetHTTP1(true)
		t.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// Session returns a plain SessionService client for the current node: the first one, or the one a
// watch last moved to after a failure. Its calls carry the token but are not retried.
func (c *Client) Session() gatehousev1connect.SessionServiceClient {
	return c.nodes[c.index()].svc
}

// CloseIdleConnections closes the idle connections of the HTTP clients New built (none when
// WithHTTPClient was given). It does not end watches: cancel their contexts or leave their loops.
func (c *Client) CloseIdleConnections() {
	for _, hc := range c.own {
		hc.CloseIdleConnections()
	}
}

func (c *Client) index() int { return int(c.current.Load()) % len(c.nodes) }

// bearer is an interceptor that sets the authorization header, whose value it holds, on every
// unary and streaming call the client makes.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			req.Header().Set("Authorization", string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
