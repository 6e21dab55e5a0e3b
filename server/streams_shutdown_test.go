package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// bearerTransport adds a bearer token to every request.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// streamEnd is how an open stream ended: its status code, or the REST stream's error code.
type streamEnd struct {
	front string
	code  codes.Code
}

// TestShutdownEndsOpenStreams: streams open on every front (WatchSession over native gRPC,
// Connect, gRPC-Web and REST, and WatchEvents) end with UNAVAILABLE as soon as the node shuts
// down, so that their clients reconnect elsewhere; they do not hold the drain until its deadline,
// and no goroutine of theirs is left behind (goleak, in TestMain).
func TestShutdownEndsOpenStreams(t *testing.T) {
	n, logs := startNode(t)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	grpcSessions := gatehousev1.NewSessionServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	login, err := grpcSessions.CreateSession(ctx, &gatehousev1.CreateSessionRequest{
		Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: "admin", Password: "admin-password-for-tests"}},
		Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
	})
	if err != nil {
		t.Fatal(err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.Token)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: bearerTransport{token: login.Token, next: tr}}
	base := "http://" + n.HTTPAddr()

	ends := make(chan streamEnd, 8)
	opened := make(chan string, 8)
	// NOTE: each WatchSession stream is known to be open once its snapshot has arrived; the
	// WatchEvents stream once the server has sent its headers.
	gs, err := grpcSessions.WatchSession(authed, &gatehousev1.WatchSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			m, err := gs.Recv()
			if err != nil {
				ends <- streamEnd{"grpc", status.Code(err)}
				return
			}
			if m.GetSnapshot() != nil {
				opened <- "grpc"
			}
		}
	}()
	// NOTE: the WatchEvents stream is known to be open once it has delivered an event: it starts
	// after the cursor of a role made before it (a consistency token is a cursor of the log), and
	// catches up with a role made after that.
	ids := gatehousev1.NewIdentityServiceClient(conn)
	before, err := ids.CreateRole(authed, &gatehousev1.CreateRoleRequest{Name: "before_the_stream"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.CreateRole(authed, &gatehousev1.CreateRoleRequest{Name: "seen_by_the_stream"}); err != nil {
		t.Fatal(err)
	}
	ge, err := grpcSessions.WatchEvents(authed, &gatehousev1.WatchEventsRequest{After: before.ConsistencyToken})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			m, err := ge.Recv()
			if err != nil {
				ends <- streamEnd{"grpc WatchEvents", status.Code(err)}
				return
			}
			if m.GetEvent().GetRoleCreated().GetRole().GetName() == "seen_by_the_stream" {
				opened <- "grpc WatchEvents"
			}
		}
	}()
	for name, opts := range map[string][]connect.ClientOption{"connect": nil, "grpc-web": {connect.WithGRPCWeb()}} {
		cs, err := gatehousev1connect.NewSessionServiceClient(hc, base, opts...).WatchSession(ctx, &gatehousev1.WatchSessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer cs.Close()
			for cs.Receive() {
				if cs.Msg().GetSnapshot() != nil {
					opened <- name
				}
			}
			ends <- streamEnd{name, codes.Code(connect.CodeOf(cs.Err()))}
		}()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sessions:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go func() {
		lines := bufio.NewScanner(resp.Body)
		end := streamEnd{"rest", codes.OK}
		for lines.Scan() {
			var m struct {
				Result *struct {
					Snapshot json.RawMessage `json:"snapshot"`
				} `json:"result"`
				Error *struct {
					Code codes.Code `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
				end.code = codes.Unknown
				break
			}
			if m.Result != nil && m.Result.Snapshot != nil {
				opened <- "rest"
			}
			if m.Error != nil {
				end.code = m.Error.Code
			}
		}
		ends <- end
	}()
	seen := map[string]bool{}
	for len(seen) < 5 {
		select {
		case name := <-opened:
			seen[name] = true
		case <-ctx.Done():
			t.Fatalf("the streams did not all open within a minute: %v", seen)
		}
	}

	sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
	defer scancel()
	if err := n.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range 5 {
		select {
		case e := <-ends:
			if e.code != codes.Unavailable {
				t.Errorf("%s stream ended with %v, want UNAVAILABLE", e.front, e.code)
			}
		case <-ctx.Done():
			t.Fatal("the streams did not all end")
		}
	}
	if strings.Contains(logs.String(), "drain timed out") {
		t.Errorf("open streams held the drain until its deadline:\n%s", logs.String())
	}
}
