package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// validateUsers is the number of users the validate scenario's sessions belong to (at most one a
// session).
//
// NOTE: 100 users hold the 10,000 default sessions at 100 each, well under the per-user cap
// (server.Config.MaxSessionsPerUser, 1000).
const validateUsers = 100

// validateResult is the result of the validate scenario over one transport.
type validateResult struct {
	Scenario  string `json:"scenario"`
	Transport string `json:"transport"`
	// versus is against a bare grpc-go unary echo server (BaselineRate).
	versus
	Database    string `json:"database"`
	Sessions    int    `json:"sessions"`
	Concurrency int    `json:"concurrency"`
}

// runValidate measures ValidateSession with o.sessions active sessions, validated round-robin with
// o.concurrency calls in flight, over native gRPC, Connect and REST, each against a bare grpc-go
// unary echo server in this process.
func runValidate(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	e.progress("validate: storing %d users and %d active sessions", min(validateUsers, o.sessions), o.sessions)
	tokens, err := seedValidate(ctx, e, o)
	if err != nil {
		return 0, err
	}
	echo, err := startEcho()
	if err != nil {
		return 0, err
	}
	defer echo.stop()
	echoConn, err := grpc.NewClient(echo.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("connecting to the echo server: %w", err)
	}
	defer echoConn.Close()
	echoClient := healthpb.NewHealthClient(echoConn)
	baseline := load{workers: o.concurrency, work: func(ctx context.Context, _ int) error {
		_, err := echoClient.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}}

	transports, closeTransports, err := newValidators(e, o, tokens)
	if err != nil {
		return 0, err
	}
	defer closeTransports()
	bad := 0
	for _, t := range transports {
		if !slices.Contains(o.transports, t.name) {
			continue
		}
		s, err := alternate(ctx, e, o, "validate/"+t.name, baseline, load{workers: o.concurrency, work: t.work})
		if err != nil {
			return 0, err
		}
		sum := s.summarize()
		bad += sum.badRuns
		if err := emit(validateResult{
			Scenario:    "validate",
			Transport:   t.name,
			versus:      sum.versus(o),
			Database:    e.database,
			Sessions:    o.sessions,
			Concurrency: o.concurrency,
		}); err != nil {
			return 0, err
		}
	}
	return bad, nil
}

// seedValidate stores the scenario's users and sessions and returns the sessions' tokens.
func seedValidate(ctx context.Context, e *env, o options) ([]string, error) {
	names := make([]string, min(validateUsers, o.sessions))
	for i := range names {
		names[i] = fmt.Sprintf("%s-v%04d", e.prefix, i)
	}
	st := e.node.Store()
	users, err := createUsers(ctx, st, names, nil)
	if err != nil {
		return nil, err
	}
	return createSessions(ctx, st, users, o.sessions)
}

// validateTransports are the transports of the validate scenario, in the order it runs them.
var validateTransports = []string{"grpc", "connect", "rest"}

// validator validates one session token over one transport.
type validator struct {
	name string
	work work
}

// newValidators returns a validator for each transport, taking the tokens round-robin, and a
// function that closes their connections.
//
// NOTE: each transport as a client of it would typically be set up: native gRPC over one
// connection (HTTP/2 multiplexes the calls), Connect with its default binary codec over one
// unencrypted HTTP/2 connection, and REST as HTTP/1.1 with JSON bodies and a keep-alive pool of
// o.concurrency connections (a pool smaller than the calls in flight would open and close a
// connection for most of them).
func newValidators(e *env, o options, tokens []string) ([]validator, func(), error) {
	var next atomic.Uint64
	token := func() int { return int((next.Add(1) - 1) % uint64(len(tokens))) }

	conn, err := grpc.NewClient(e.node.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the node's gRPC port: %w", err)
	}
	grpcClient := gatehousev1.NewSessionServiceClient(conn)

	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	connectHTTP := &http.Transport{Protocols: h2c}
	connectClient := gatehousev1connect.NewSessionServiceClient(&http.Client{Transport: connectHTTP}, "http://"+e.node.HTTPAddr())

	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	restHTTP := &http.Transport{Protocols: h1, MaxIdleConns: o.concurrency, MaxIdleConnsPerHost: o.concurrency}
	restClient := &http.Client{Transport: restHTTP}
	restURL := "http://" + e.node.HTTPAddr() + "/v1/sessions:validate"
	bodies := make([][]byte, len(tokens))
	for i, t := range tokens {
		b, err := json.Marshal(map[string]string{"token": t})
		if err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("encoding a REST request: %w", err)
		}
		bodies[i] = b
	}

	validators := []validator{
		{name: "grpc", work: func(ctx context.Context, _ int) error {
			resp, err := grpcClient.ValidateSession(ctx, &gatehousev1.ValidateSessionRequest{Token: tokens[token()]})
			return checkValidated(resp, err)
		}},
		{name: "connect", work: func(ctx context.Context, _ int) error {
			resp, err := connectClient.ValidateSession(ctx, &gatehousev1.ValidateSessionRequest{Token: tokens[token()]})
			return checkValidated(resp, err)
		}},
		{name: "rest", work: func(ctx context.Context, _ int) error {
			return checkValidated(validateREST(ctx, restClient, restURL, bodies[token()]))
		}},
	}
	closeAll := func() {
		_ = conn.Close()
		connectHTTP.CloseIdleConnections()
		restHTTP.CloseIdleConnections()
	}
	return validators, closeAll, nil
}

// validateREST posts one validation to the REST front and decodes the answer, as a REST client
// would: with the language's JSON decoder (encoding/json) into the fields it uses, the session's
// id, the user's id and the roles.
//
// NOTE: not protojson, Go's strict proto mapping: it decodes several times slower, and the client
// shares the machine's two cores with the node, so that its decoder set the figure (a seventh of
// the process's CPU in issue 16's profile).
func validateREST(ctx context.Context, c *http.Client, url string, body []byte) (*gatehousev1.ValidateSessionResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
	}
	var out struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Roles []string `json:"roles"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decoding the response: %w", err)
	}
	return &gatehousev1.ValidateSessionResponse{
		Session: &gatehousev1.Session{Id: out.Session.ID}, User: &gatehousev1.User{Id: out.User.ID}, Roles: out.Roles,
	}, nil
}

// checkValidated returns err, or an error when a validation answered without a session.
func checkValidated(resp *gatehousev1.ValidateSessionResponse, err error) error {
	if err != nil {
		return err
	}
	if resp.GetSession().GetId() == "" {
		return errors.New("ValidateSession answered without a session")
	}
	return nil
}

// echoServer is the baseline of the validate scenario: a bare grpc-go server whose only service is
// grpc.health.v1.Health, on a real TCP listener, a unary call that does no work of its own.
type echoServer struct {
	addr string
	srv  *grpc.Server
	done chan error
}

// startEcho starts an echo server on 127.0.0.1.
func startEcho() (*echoServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the echo server: %w", err)
	}
	s := &echoServer{addr: lis.Addr().String(), srv: grpc.NewServer(), done: make(chan error, 1)}
	healthpb.RegisterHealthServer(s.srv, health.NewServer())
	go func() { s.done <- s.srv.Serve(lis) }()
	return s, nil
}

// stop stops the echo server and waits for it.
func (s *echoServer) stop() {
	s.srv.Stop()
	<-s.done
}
