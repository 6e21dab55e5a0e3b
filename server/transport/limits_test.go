package transport_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/transport"
)

// testLimit is the request limit of these tests: small, so that an oversized body is cheap to make.
const testLimit = 64 << 10

// endless is an io.Reader of n bytes: a JSON object opening a string that never ends in time.
type endless struct{ left int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), e.left))
	for i := range n {
		p[i] = 'a'
	}
	if e.left == int64(n) && n > 0 {
		p[n-1] = '"'
	}
	e.left -= int64(n)
	return n, nil
}

// bigBody is {"username": "aaaa...": size bytes of JSON.
func bigBody(size int64) io.Reader {
	head := `{"username": "`
	return io.MultiReader(strings.NewReader(head), &endless{left: size - int64(len(head)) - 1}, strings.NewReader("}"))
}

// countingServer serves h behind transport.LimitRequestBodies on a real listener, counting the
// bytes read from each request body off the connection.
func countingServer(t *testing.T, o transport.Options, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var read atomic.Int64
	limited := transport.LimitRequestBodies(o, h)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = countingBody{r.Body, &read}
		limited.ServeHTTP(w, r)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &read
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// connectError decodes a Connect unary error body.
func connectError(t *testing.T, raw []byte) rpcError {
	t.Helper()
	var wire struct {
		Code    string
		Message string
		Details []struct{ Type, Value string }
	}
	if err := json.Unmarshal(raw, &wire); err != nil {
		t.Fatalf("not a Connect error (%v): %.300s", err, raw)
	}
	var code connect.Code
	if err := code.UnmarshalText([]byte(wire.Code)); err != nil {
		t.Fatalf("code %q: %v", wire.Code, err)
	}
	out := rpcError{code: codes.Code(code), message: wire.Message}
	for _, d := range wire.Details {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			t.Fatal(err)
		}
		var m proto.Message
		switch d.Type {
		case "google.rpc.ErrorInfo":
			m = &errdetails.ErrorInfo{}
		case "google.rpc.BadRequest":
			m = &errdetails.BadRequest{}
		default:
			continue
		}
		if err := proto.Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		out.details = append(out.details, m)
	}
	return out
}

// TestLimitRequestBodies sends 64 MiB bodies to REST and to Connect, with and without a
// Content-Length, and checks that each is refused as too large and that the handlers read no more
// than the limit of it off the connection.
func TestLimitRequestBodies(t *testing.T) {
	e := newEnv(t, gwSecret)
	e.opts.MaxRequestBytes = testLimit
	mux := http.NewServeMux()
	mux.Handle("/v1/", newGateway(t, e, gwSecret))
	mux.Handle(gatehousev1connect.NewIdentityServiceHandler(&fakeIdentity{}, transport.ConnectHandlerOptions(e.opts)...))
	srv, read := countingServer(t, e.opts, mux)
	const size = 64 << 20

	tests := []struct {
		name     string
		path     string
		chunked  bool
		wantHTTP int
		rest     bool
	}{
		{"REST with Content-Length", "/v1/users", false, http.StatusRequestEntityTooLarge, true},
		{"REST chunked", "/v1/users", true, http.StatusRequestEntityTooLarge, true},
		{"Connect with Content-Length", "/gatehouse.v1.IdentityService/CreateUser", false, http.StatusTooManyRequests, false},
		{"Connect chunked", "/gatehouse.v1.IdentityService/CreateUser", true, http.StatusTooManyRequests, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read.Store(0)
			req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, srv.URL+tt.path, bigBody(size))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = size
			if tt.chunked {
				req.ContentLength = -1
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantHTTP {
				t.Errorf("HTTP %d, want %d: %.300s", resp.StatusCode, tt.wantHTTP, raw)
			}
			var got rpcError
			if tt.rest {
				var body restError
				if err := json.Unmarshal(raw, &body); err != nil {
					t.Fatalf("not a REST error (%v): %.300s", err, raw)
				}
				got.code = codes.Code(body.Code)
				got.details = []proto.Message{&errdetails.ErrorInfo{Reason: body.reason()}}
			} else {
				got = connectError(t, raw)
			}
			if got.code != codes.ResourceExhausted || got.errorInfo().GetReason() != transport.RequestTooLargeReason {
				t.Errorf("code %s reason %q, want RESOURCE_EXHAUSTED %s: %.300s", got.code, got.errorInfo().GetReason(), transport.RequestTooLargeReason, raw)
			}
			want := int64(0)
			if tt.chunked {
				want = testLimit + 1 // what shows that the body is longer than the limit
			}
			if n := read.Load(); n > want {
				t.Errorf("the handler read %d bytes of the body, want at most %d", n, want)
			}
		})
	}

	// The other connect protocols envelope their messages: a message over the limit is refused
	// before it is read, with the same ErrorInfo.
	for _, p := range []struct {
		name string
		opt  connect.ClientOption
	}{
		{"grpc-web", connect.WithGRPCWeb()},
		{"grpc", connect.WithGRPC()},
	} {
		t.Run(p.name, func(t *testing.T) {
			read.Store(0)
			c := gatehousev1connect.NewIdentityServiceClient(e.httpClient, srv.URL, p.opt)
			_, err := c.CreateUser(testContext(t), &gatehousev1.CreateUserRequest{Username: strings.Repeat("a", 2*testLimit)})
			got := inspect(t, err)
			if got.code != codes.ResourceExhausted || got.errorInfo().GetReason() != transport.RequestTooLargeReason {
				t.Errorf("code %s reason %q (%v), want RESOURCE_EXHAUSTED %s", got.code, got.errorInfo().GetReason(), err, transport.RequestTooLargeReason)
			}
			if n := read.Load(); n > 5 {
				t.Errorf("the handler read %d bytes of the body, want only the 5-byte envelope prefix", n)
			}
		})
	}

	// Under the limit, bodies pass.
	t.Run("under the limit", func(t *testing.T) {
		for _, opt := range []connect.ClientOption{connect.WithProtoJSON(), connect.WithGRPC(), connect.WithGRPCWeb()} {
			c := gatehousev1connect.NewIdentityServiceClient(e.httpClient, srv.URL, opt, connect.WithInterceptors(headersFromMetadata{}))
			resp, err := c.CreateUser(withAuth(testContext(t), bearer(tokenAdmin)), &gatehousev1.CreateUserRequest{Username: "alice"})
			if err != nil || resp.GetUser().GetUsername() != "alice" {
				t.Errorf("CreateUser under the limit: %v, %v", resp, err)
			}
		}
		body := `{"username": "alice"}`
		req, _ := http.NewRequestWithContext(testContext(t), http.MethodPost, srv.URL+"/v1/users", strings.NewReader(body))
		req.Header.Set("Authorization", bearer(tokenAdmin))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("REST under the limit: HTTP %d", resp.StatusCode)
		}
	})
}

// envelope is one gRPC-style length-prefixed message.
func envelope(data []byte) []byte {
	out := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(out[1:], uint32(len(data)))
	return append(out, data...)
}

// TestLimitRequestBodiesEnvelopes reads enveloped bodies through the limit, one byte at a time
// and all at once: messages under the limit pass whole, and the prefix of one over it is not
// passed on.
func TestLimitRequestBodiesEnvelopes(t *testing.T) {
	small := envelope(bytes.Repeat([]byte{'s'}, 100))
	bigPrefix := envelope(nil)
	binary.BigEndian.PutUint32(bigPrefix[1:], testLimit+1)
	body := append(append(append([]byte{}, small...), small...), bigPrefix...)
	body = append(body, bytes.Repeat([]byte{'b'}, 1000)...)

	for _, tt := range []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"at once", func(r io.Reader) io.Reader { return r }},
		{"byte by byte", iotest.OneByteReader},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			var readErr error
			h := transport.LimitRequestBodies(transport.Options{MaxRequestBytes: testLimit}, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				got, readErr = io.ReadAll(r.Body)
			}))
			req := httptest.NewRequest(http.MethodPost, "/gatehouse.v1.IdentityService/CreateUser", io.NopCloser(tt.wrap(bytes.NewReader(body))))
			req.Header.Set("Content-Type", "application/grpc-web+proto")
			h.ServeHTTP(httptest.NewRecorder(), req)

			// A prefix that arrives in pieces is passed on up to its last byte, which decides.
			if want := 2 * len(small); len(got) < want || len(got) > want+4 || !bytes.Equal(got, body[:len(got)]) {
				t.Errorf("read %d bytes, want the two small envelopes (%d bytes) and at most 4 bytes of the next prefix", len(got), want)
			}
			var ce *connect.Error
			if !errors.As(readErr, &ce) || ce.Code() != connect.CodeResourceExhausted {
				t.Fatalf("read error %v, want a RESOURCE_EXHAUSTED connect error", readErr)
			}
			if len(ce.Details()) != 1 {
				t.Fatalf("details %v, want one ErrorInfo", ce.Details())
			}
			info, err := ce.Details()[0].Value()
			if err != nil || info.(*errdetails.ErrorInfo).GetReason() != transport.RequestTooLargeReason ||
				info.(*errdetails.ErrorInfo).GetMetadata()["limit_bytes"] != strconv.Itoa(testLimit) {
				t.Errorf("detail %v (%v), want ErrorInfo %s with limit_bytes %d", info, err, transport.RequestTooLargeReason, testLimit)
			}
		})
	}
}

// TestGatewayRefusesMessagesOverTheLimit: a REST body under the HTTP limit whose message is over
// the port's limit is refused before the handler, as too large (413), by the gateway's LocalConn.
func TestGatewayRefusesMessagesOverTheLimit(t *testing.T) {
	e := newEnv(t, gwSecret)
	conn, err := transport.DialSelf(t.Context(), e.grpcAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	small := e.opts
	small.MaxRequestBytes = 100
	local := transport.NewLocalConn(small, conn)
	gatehousev1.RegisterIdentityServiceServer(local, &fakeIdentity{})
	// The gateway's own HTTP limit is the default, larger than the connection's.
	gw := transport.NewGatewayMux(e.opts)
	if err := gatehousev1.RegisterIdentityServiceHandlerClient(t.Context(), gw, gatehousev1.NewIdentityServiceClient(local)); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(testContext(t), http.MethodPost, "/v1/users", strings.NewReader(`{"username": "`+strings.Repeat("a", 200)+`"}`))
	req.Header.Set("Authorization", bearer(tokenAdmin))
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, req)
	var body restError
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != http.StatusRequestEntityTooLarge || body.reason() != transport.RequestTooLargeReason {
		t.Errorf("HTTP %d reason %q, want 413 %s: %s", rec.Code, body.reason(), transport.RequestTooLargeReason, rec.Body)
	}
	if strings.Contains(e.logs.String(), "CreateUser") {
		t.Errorf("the call reached the interceptor: %s", e.logs)
	}
}
