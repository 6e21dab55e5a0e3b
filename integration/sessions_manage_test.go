package integration_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// smTryCreate calls CreateSession with an optional caller token.
func smTryCreate(c testnode.Invoker, callerToken string, req *gatehousev1.CreateSessionRequest) (*gatehousev1.CreateSessionResponse, error) {
	return testnode.Call[gatehousev1.CreateSessionResponse](context.Background(), c, gatehousev1.SessionService_CreateSession_FullMethodName, callerToken, req)
}

// smPasswordReq is a password CreateSessionRequest.
func smPasswordReq(username, password string, typ gatehousev1.SessionType, client *gatehousev1.ClientInfo) *gatehousev1.CreateSessionRequest {
	return &gatehousev1.CreateSessionRequest{
		Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: password}},
		Type:       typ,
		Client:     client,
	}
}

// smTrustedReq is a trusted CreateSessionRequest.
func smTrustedReq(username string, typ gatehousev1.SessionType) *gatehousev1.CreateSessionRequest {
	return &gatehousev1.CreateSessionRequest{
		Credential: &gatehousev1.CreateSessionRequest_Trusted{Trusted: &gatehousev1.TrustedCredential{Username: username}},
		Type:       typ,
	}
}

// smCreate logs a user in with a password, a session type and optional client info.
func smCreate(t *testing.T, c testnode.Invoker, username, password string, typ gatehousev1.SessionType, client *gatehousev1.ClientInfo) *gatehousev1.CreateSessionResponse {
	t.Helper()
	resp, err := smTryCreate(c, "", smPasswordReq(username, password, typ, client))
	if err != nil {
		t.Fatalf("logging in as %s (%s): %v", username, typ, err)
	}
	return resp
}

// smGet reads a session with token.
func smGet(c testnode.Invoker, token, id string) (*gatehousev1.Session, error) {
	resp, err := testnode.Call[gatehousev1.GetSessionResponse](context.Background(), c, gatehousev1.SessionService_GetSession_FullMethodName, token,
		&gatehousev1.GetSessionRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	return resp.Session, nil
}

// smList lists sessions with token.
func smList(c testnode.Invoker, token string, req *gatehousev1.ListSessionsRequest) (*gatehousev1.ListSessionsResponse, error) {
	return testnode.Call[gatehousev1.ListSessionsResponse](context.Background(), c, gatehousev1.SessionService_ListSessions_FullMethodName, token, req)
}

func smIDs(sessions []*gatehousev1.Session) []string {
	out := make([]string, len(sessions))
	for i, s := range sessions {
		out[i] = s.Id
	}
	return out
}

func TestTrustedCreateSession(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		_, issuerTok := smUser(a, "sso-frontend", "gatehouse.session_issuer")
		_, plainTok := smUser(a, "plain")
		bob := a.createUser("bob", "") // single sign-on only: no password
		mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
			&gatehousev1.CreateUserRequest{Username: "dora", Password: "dora-password", Disabled: true})
		a.createRole("reports")
		a.grantUser("reports", bob.Id)
		web := gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER

		// Only a session issuer may open trusted sessions.
		_, err := smTryCreate(c, "", smTrustedReq("bob", web))
		polWantErr(t, "a trusted login without a caller", err, codes.Unauthenticated, "", "")
		_, err = smTryCreate(c, plainTok, smTrustedReq("bob", web))
		polWantErr(t, "a trusted login by a plain user", err, codes.PermissionDenied, "", "")

		mark := lastEventID(t, n)
		s, err := smTryCreate(c, issuerTok, smTrustedReq("bob", web))
		if err != nil {
			t.Fatalf("a trusted login by a session issuer: %v", err)
		}
		if s.User.GetId() != bob.Id || s.Session.GetUserId() != bob.Id || !s.Session.GetActive() || s.Session.GetType() != web ||
			!slices.Equal(s.Roles, []string{"reports"}) || !strings.HasPrefix(s.Token, "ghs_") || s.ConsistencyToken == "" {
			t.Errorf("trusted CreateSession = %v", s)
		}
		v := mustValidate(t, c, "the trusted session", s.Token)
		if v.User.GetId() != bob.Id || v.Session.GetId() != s.Session.Id || !slices.Equal(v.Roles, []string{"reports"}) {
			t.Errorf("validating the trusted session: %v", v)
		}
		created := ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED)
		if len(created) != 1 || !created[0].Event.GetSessionCreated().GetTrusted() || created[0].Event.SessionId != s.Session.Id {
			t.Errorf("SESSION_CREATED events %v, want one trusted event for %s", created, s.Session.Id)
		}
		// The trusted session is a session like any other: it acts for bob.
		testnode.MustCall[gatehousev1.GetUserResponse](t, c, gatehousev1.IdentityService_GetUser_FullMethodName, s.Token,
			&gatehousev1.GetUserRequest{UserId: bob.Id})

		// Unknown and disabled users get the one invalid-credentials answer.
		var first *status.Status
		for _, who := range []string{"nobody", "dora"} {
			_, err := smTryCreate(c, issuerTok, smTrustedReq(who, web))
			polWantErr(t, "a trusted login for "+who, err, codes.Unauthenticated, "INVALID_CREDENTIALS", "")
			if first == nil {
				first = status.Convert(err)
			} else if !proto.Equal(first.Proto(), status.Convert(err).Proto()) {
				t.Errorf("trusted login failures differ: %v and %v", first.Proto(), status.Convert(err).Proto())
			}
		}
		// A trusted credential does not stand in for a missing session type.
		_, err = smTryCreate(c, issuerTok, smTrustedReq("bob", gatehousev1.SessionType_SESSION_TYPE_UNSPECIFIED))
		polWantErr(t, "a trusted login without a type", err, codes.InvalidArgument, "", "type")
	})
}

// smTransportUserAgent is a fragment of the User-Agent each front's client sends.
var smTransportUserAgent = map[testnode.Protocol]string{
	testnode.GRPC:    "grpc-go",
	testnode.Connect: "connect-go",
	testnode.REST:    "Go-http-client",
}

func TestSessionClientInfo(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, p := range testnode.Protocols {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(p)
				a := newIDAdmin(t, n, c)
				a.createUser("cleo", "cleo-password")
				web := gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER

				check := func(what string, s *gatehousev1.Session, ua, ip, device string) {
					t.Helper()
					cl := s.GetClient()
					if !strings.Contains(cl.GetUserAgent(), ua) || cl.GetIpAddress() != ip || cl.GetDeviceName() != device {
						t.Errorf("%s: client %v, want user agent containing %q, address %q, device %q", what, cl, ua, ip, device)
					}
					got, err := smGet(c, a.tok, s.Id)
					if err != nil || !proto.Equal(got.GetClient(), cl) {
						t.Errorf("%s: GetSession client %v (%v), want %v", what, got.GetClient(), err, cl)
					}
				}
				// Absent: filled from the transport.
				s := smCreate(t, c, "cleo", "cleo-password", web, nil)
				check("no client info", s.Session, smTransportUserAgent[p], "127.0.0.1", "")
				// Partly given: the rest is filled from the transport.
				s = smCreate(t, c, "cleo", "cleo-password", web, &gatehousev1.ClientInfo{DeviceName: "Cleo's laptop"})
				check("only a device name", s.Session, smTransportUserAgent[p], "127.0.0.1", "Cleo's laptop")
				// Given by anyone but a session issuer: the user agent and device are kept, but the
				// address is the one the call came from, not a claim of the caller's.
				given := &gatehousev1.ClientInfo{UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Test/1.0", IpAddress: "203.0.113.7", DeviceName: "kiosk"}
				s = smCreate(t, c, "cleo", "cleo-password", web, given)
				check("full client info from an anonymous caller", s.Session, given.UserAgent, "127.0.0.1", given.DeviceName)
				_, plainTok := smUser(a, "plain")
				s, err := smTryCreate(c, plainTok, smPasswordReq("cleo", "cleo-password", web, given))
				if err != nil {
					t.Fatal(err)
				}
				check("full client info from a caller without session issuer", s.Session, given.UserAgent, "127.0.0.1", given.DeviceName)
				// Given by a session issuer (a front end passing on its own client's details), for a
				// trusted or a password login: kept as given.
				_, issuerTok := smUser(a, "sso", "gatehouse.session_issuer")
				trusted := smTrustedReq("cleo", web)
				trusted.Client = given
				for what, req := range map[string]*gatehousev1.CreateSessionRequest{
					"a trusted login": trusted, "a password login": smPasswordReq("cleo", "cleo-password", web, given),
				} {
					s, err := smTryCreate(c, issuerTok, req)
					if err != nil {
						t.Fatalf("%s by a session issuer: %v", what, err)
					}
					check(what+" by a session issuer", s.Session, given.UserAgent, given.IpAddress, given.DeviceName)
					if !proto.Equal(s.Session.Client, given) {
						t.Errorf("%s by a session issuer: given client info %v came back as %v", what, given, s.Session.Client)
					}
				}
			})
		}
	}
}

func TestSessionGetAccess(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		owner, ownerTok := smUser(a, "olga")
		_, otherTok := smUser(a, "otto")
		_, sadminTok := smUser(a, "sadmin", "gatehouse.session_admin")
		_, auditorTok := smUser(a, "audrey", "gatehouse.auditor")
		s := smCreate(t, c, "olga", "olga-password", gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP, &gatehousev1.ClientInfo{DeviceName: "phone"})

		for who, tok := range map[string]string{"the session's user": ownerTok, "a session admin": sadminTok, "an auditor": auditorTok, "an admin": a.tok} {
			got, err := smGet(c, tok, s.Session.Id)
			if err != nil {
				t.Errorf("GetSession by %s: %v", who, err)
				continue
			}
			if got.Id != s.Session.Id || got.UserId != owner.Id || got.Type != gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP ||
				got.Client.GetDeviceName() != "phone" || !got.Active || got.CreateTime == nil || got.AbsoluteExpireTime == nil {
				t.Errorf("GetSession by %s = %v", who, got)
			}
		}
		_, err := smGet(c, otherTok, s.Session.Id)
		polWantErr(t, "GetSession of another user's session", err, codes.NotFound, "SESSION_NOT_FOUND", "")
		_, err = smGet(c, "", s.Session.Id)
		polWantErr(t, "GetSession without a caller", err, codes.Unauthenticated, "", "")
		_, err = smGet(c, ownerTok, unknownID)
		polWantErr(t, "GetSession of an unknown session", err, codes.NotFound, "SESSION_NOT_FOUND", "")
	})
}

func TestListSessions(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		pam := a.createUser("pam", "pam-password")
		_, otherTok := smUser(a, "olaf")
		_, sadminTok := smUser(a, "sadmin", "gatehouse.session_admin")
		_, auditorTok := smUser(a, "audrey", "gatehouse.auditor")
		const (
			web = gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
			app = gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP
			api = gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE
		)
		s1 := smCreate(t, c, "pam", "pam-password", web, &gatehousev1.ClientInfo{DeviceName: "laptop"})
		s2 := smCreate(t, c, "pam", "pam-password", app, &gatehousev1.ClientInfo{DeviceName: "phone"})
		s3 := smCreate(t, c, "pam", "pam-password", api, &gatehousev1.ClientInfo{DeviceName: "ci-job"})
		s4 := smCreate(t, c, "pam", "pam-password", web, &gatehousev1.ClientInfo{DeviceName: "desktop"})
		ended := testnode.MustCall[gatehousev1.TerminateSessionResponse](t, c, gatehousev1.SessionService_TerminateSession_FullMethodName, s1.Token,
			&gatehousev1.TerminateSessionRequest{SessionId: s2.Session.Id, Note: "lost phone"}).Session

		list := func(what, token string, req *gatehousev1.ListSessionsRequest) []*gatehousev1.Session {
			t.Helper()
			resp, err := smList(c, token, req)
			if err != nil {
				t.Fatalf("ListSessions, %s: %v", what, err)
			}
			if resp.NextPageToken != "" {
				t.Errorf("ListSessions, %s: a next page token on a short list", what)
			}
			return resp.Sessions
		}
		want := func(what string, got []*gatehousev1.Session, ids ...string) {
			t.Helper()
			if !slices.Equal(smIDs(got), ids) {
				t.Errorf("ListSessions, %s: %v, want %v (newest first)", what, smIDs(got), ids)
			}
		}

		// Own sessions by default: active ones, newest first.
		want("own, by default", list("own", s1.Token, &gatehousev1.ListSessionsRequest{}),
			s4.Session.Id, s3.Session.Id, s1.Session.Id)
		want("own, naming the own user", list("own", s1.Token, &gatehousev1.ListSessionsRequest{UserId: pam.Id}),
			s4.Session.Id, s3.Session.Id, s1.Session.Id)
		// The sys_user_session view: every session of the user, with type, device and state.
		all := list("with inactive", s1.Token, &gatehousev1.ListSessionsRequest{IncludeInactive: true})
		want("with inactive", all, s4.Session.Id, s3.Session.Id, s2.Session.Id, s1.Session.Id)
		type row struct {
			typ    gatehousev1.SessionType
			device string
			active bool
			reason gatehousev1.TerminationReason
		}
		var rows []row
		for _, s := range all {
			rows = append(rows, row{s.Type, s.GetClient().GetDeviceName(), s.Active, s.TerminationReason})
			if s.UserId != pam.Id {
				t.Errorf("listed session %s of user %s", s.Id, s.UserId)
			}
		}
		wantRows := []row{
			{web, "desktop", true, 0},
			{api, "ci-job", true, 0},
			{app, "phone", false, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER},
			{web, "laptop", true, 0},
		}
		if !slices.Equal(rows, wantRows) {
			t.Errorf("the session view: %v, want %v", rows, wantRows)
		}
		if !proto.Equal(all[2], ended) {
			t.Errorf("the ended session is listed as %v, TerminateSession returned %v", all[2], ended)
		}

		// Filters by type.
		want("web only", list("web", s1.Token, &gatehousev1.ListSessionsRequest{Types: []gatehousev1.SessionType{web}}),
			s4.Session.Id, s1.Session.Id)
		want("apps, active only", list("apps", s1.Token, &gatehousev1.ListSessionsRequest{Types: []gatehousev1.SessionType{app}}))
		want("apps with inactive", list("apps", s1.Token, &gatehousev1.ListSessionsRequest{Types: []gatehousev1.SessionType{app}, IncludeInactive: true}),
			s2.Session.Id)
		want("apps and API", list("apps and API", s1.Token, &gatehousev1.ListSessionsRequest{Types: []gatehousev1.SessionType{app, api}, IncludeInactive: true}),
			s3.Session.Id, s2.Session.Id)

		// Paging, newest first, every session once.
		var paged []string
		token := ""
		for page := 0; ; page++ {
			resp, err := smList(c, s1.Token, &gatehousev1.ListSessionsRequest{IncludeInactive: true, PageSize: 3, PageToken: token})
			if err != nil {
				t.Fatalf("ListSessions page %d: %v", page, err)
			}
			if len(resp.Sessions) > 3 {
				t.Fatalf("page %d has %d sessions, more than page_size 3", page, len(resp.Sessions))
			}
			paged = append(paged, smIDs(resp.Sessions)...)
			if token = resp.NextPageToken; token == "" {
				break
			}
			if page > 3 {
				t.Fatalf("ListSessions does not end: %v", paged)
			}
		}
		if !slices.Equal(paged, smIDs(all)) {
			t.Errorf("paged sessions %v, want %v", paged, smIDs(all))
		}

		// Another user's sessions: session admins and auditors only.
		for who, tok := range map[string]string{"a session admin": sadminTok, "an auditor": auditorTok} {
			want("by "+who, list(who, tok, &gatehousev1.ListSessionsRequest{UserId: pam.Id, IncludeInactive: true}), smIDs(all)...)
		}
		_, err := smList(c, otherTok, &gatehousev1.ListSessionsRequest{UserId: pam.Id})
		polWantErr(t, "ListSessions of another user by a plain user", err, codes.PermissionDenied, "", "")
		_, err = smList(c, "", &gatehousev1.ListSessionsRequest{UserId: pam.Id})
		polWantErr(t, "ListSessions without a caller", err, codes.Unauthenticated, "", "")
		// A plain user's own list shows only their own sessions.
		if got := list("olaf's own", otherTok, &gatehousev1.ListSessionsRequest{IncludeInactive: true}); len(got) != 1 {
			t.Errorf("olaf lists %d sessions, want his one", len(got))
		}
	})
}

// smTerminate ends a session with token.
func smTerminate(c testnode.Invoker, token, id, note string) (*gatehousev1.TerminateSessionResponse, error) {
	return testnode.Call[gatehousev1.TerminateSessionResponse](context.Background(), c, gatehousev1.SessionService_TerminateSession_FullMethodName, token,
		&gatehousev1.TerminateSessionRequest{SessionId: id, Note: note})
}

func TestTerminateSession(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		rex := a.createUser("rex", "rex-password")
		sadmin, sadminTok := smUser(a, "sadmin", "gatehouse.session_admin")
		_, otherTok := smUser(a, "otis")
		_, auditorTok := smUser(a, "audrey", "gatehouse.auditor")
		web := gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
		sA := smCreate(t, c, "rex", "rex-password", web, nil)
		sB := smCreate(t, c, "rex", "rex-password", web, nil)
		sC := smCreate(t, c, "rex", "rex-password", web, nil)
		sD := smCreate(t, c, "rex", "rex-password", web, nil)

		type ending struct {
			what    string
			caller  string
			target  *gatehousev1.CreateSessionResponse
			note    string
			reason  gatehousev1.TerminationReason
			actorID string
		}
		for _, e := range []ending{
			{"the user ending another of their sessions", sA.Token, sB, "lost laptop", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER, rex.Id},
			{"the user ending their current session", sA.Token, sA, "", gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT, rex.Id},
			{"a session admin", sadminTok, sC, "compromised", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN, sadmin.Id},
		} {
			mark := lastEventID(t, n)
			resp, err := smTerminate(c, e.caller, e.target.Session.Id, e.note)
			if err != nil {
				t.Fatalf("%s: TerminateSession: %v", e.what, err)
			}
			s := resp.Session
			if s.GetId() != e.target.Session.Id || s.Active || s.TerminationReason != e.reason || s.Note != e.note || s.TerminateTime == nil ||
				resp.ConsistencyToken == "" {
				t.Errorf("%s: TerminateSession = %v", e.what, resp)
			}
			wantEnded(t, c, e.what, e.target.Token, e.reason)
			evs := ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED)
			if len(evs) != 1 || evs[0].Event.SessionId != e.target.Session.Id || evs[0].Event.GetSessionTerminated().GetReason() != e.reason ||
				evs[0].Event.GetSessionTerminated().GetNote() != e.note || evs[0].Event.ActorUserId != e.actorID || evs[0].UserID != rex.Id {
				t.Errorf("%s: SESSION_TERMINATED events %v", e.what, evs)
			}
			// The note and reason are visible afterwards, to the user and to session admins.
			for _, tok := range []string{sD.Token, sadminTok} {
				got, err := smGet(c, tok, e.target.Session.Id)
				if err != nil || !proto.Equal(got, s) {
					t.Errorf("%s: GetSession afterwards = %v (%v), want %v", e.what, got, err, s)
				}
			}
		}

		// Another plain user cannot end rex's session, nor can an auditor (who may read it); it lives on.
		_, err := smTerminate(c, otherTok, sD.Session.Id, "")
		polWantErr(t, "TerminateSession of another user's session", err, codes.NotFound, "SESSION_NOT_FOUND", "")
		_, err = smTerminate(c, auditorTok, sD.Session.Id, "")
		polWantErr(t, "TerminateSession by an auditor", err, codes.PermissionDenied, "", "")
		mustValidate(t, c, "a session another user tried to end", sD.Token)
		_, err = smTerminate(c, sD.Token, unknownID, "")
		polWantErr(t, "TerminateSession of an unknown session", err, codes.NotFound, "SESSION_NOT_FOUND", "")

		// Ending an ended session changes nothing.
		mark := lastEventID(t, n)
		resp, err := smTerminate(c, sadminTok, sB.Session.Id, "again")
		if err != nil {
			t.Fatalf("ending an ended session: %v", err)
		}
		if resp.Session.TerminationReason != gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER || resp.Session.Note != "lost laptop" {
			t.Errorf("ending an ended session changed it: %v", resp.Session)
		}
		if evs := eventsAfter(t, n, mark); len(evs) != 0 {
			t.Errorf("ending an ended session wrote events %v", evs)
		}
		mustValidate(t, c, "rex's remaining session", sD.Token)
	})
}

func TestTerminateUserSessions(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		sid := a.createUser("sid", "sid-password")
		_, otherTok := smUser(a, "oona")
		_, sadminTok := smUser(a, "sadmin", "gatehouse.session_admin")
		ss := smSessions(t, c, "sid", "sid-password", gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
			gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP, gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE)
		keep := ss[1]

		_, err := testnode.Call[gatehousev1.TerminateUserSessionsResponse](context.Background(), c, gatehousev1.SessionService_TerminateUserSessions_FullMethodName,
			otherTok, &gatehousev1.TerminateUserSessionsRequest{UserId: sid.Id})
		polWantErr(t, "TerminateUserSessions by another plain user", err, codes.PermissionDenied, "", "")

		// "Sign out everywhere else": every session but the current one ends.
		mark := lastEventID(t, n)
		resp := testnode.MustCall[gatehousev1.TerminateUserSessionsResponse](t, c, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, keep.Token,
			&gatehousev1.TerminateUserSessionsRequest{UserId: sid.Id, ExceptSessionId: keep.Session.Id, Note: "signed out elsewhere"})
		wantIDs := []string{ss[0].Session.Id, ss[2].Session.Id, ss[3].Session.Id}
		if got := slices.Sorted(slices.Values(resp.TerminatedSessionIds)); !slices.Equal(got, wantIDs) || resp.ConsistencyToken == "" {
			t.Errorf("TerminateUserSessions except the current one = %v, want ids %v", resp, wantIDs)
		}
		want := map[string]gatehousev1.TerminationReason{}
		for _, s := range []*gatehousev1.CreateSessionResponse{ss[0], ss[2], ss[3]} {
			wantEnded(t, c, "signed out elsewhere", s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)
			want[s.Session.Id] = gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER
		}
		if got := terminations(eventsAfter(t, n, mark)); !mapsEqual(got, want) {
			t.Errorf("SESSION_TERMINATED events %v, want %v", got, want)
		}
		mustValidate(t, c, "the session kept", keep.Token)
		active, err := smList(c, keep.Token, &gatehousev1.ListSessionsRequest{})
		if err != nil || !slices.Equal(smIDs(active.GetSessions()), []string{keep.Session.Id}) {
			t.Errorf("active sessions after signing out elsewhere: %v (%v), want only %s", smIDs(active.GetSessions()), err, keep.Session.Id)
		}

		// A session admin ends the rest, with a note.
		resp = testnode.MustCall[gatehousev1.TerminateUserSessionsResponse](t, c, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, sadminTok,
			&gatehousev1.TerminateUserSessionsRequest{UserId: sid.Id, Note: "offboarding"})
		if !slices.Equal(resp.TerminatedSessionIds, []string{keep.Session.Id}) {
			t.Errorf("TerminateUserSessions by a session admin ended %v, want [%s]", resp.TerminatedSessionIds, keep.Session.Id)
		}
		wantEnded(t, c, "after offboarding", keep.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
		if got, err := smGet(c, sadminTok, keep.Session.Id); err != nil || got.Note != "offboarding" {
			t.Errorf("the ended session's note: %v (%v)", got, err)
		}
		// Nothing left to end.
		resp = testnode.MustCall[gatehousev1.TerminateUserSessionsResponse](t, c, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, sadminTok,
			&gatehousev1.TerminateUserSessionsRequest{UserId: sid.Id})
		if len(resp.TerminatedSessionIds) != 0 {
			t.Errorf("a second TerminateUserSessions ended %v", resp.TerminatedSessionIds)
		}
	})
}

// smStartRateLimited starts a node allowing few failed logins per username.
func smStartRateLimited(t *testing.T, b testnode.Backend, failuresPerUser int) *testnode.Node {
	t.Helper()
	return smStartLimited(t, b, failuresPerUser, 0)
}

// smStartLimited starts a node allowing failuresPerUser failed logins per username and
// failuresPerAddress per client address (0: the default) within an hour.
func smStartLimited(t *testing.T, b testnode.Backend, failuresPerUser, failuresPerAddress int) *testnode.Node {
	t.Helper()
	return testnode.StartWith(t, server.Config{
		Database:                testnode.DatabaseURL(t, b),
		LoginFailuresPerUser:    failuresPerUser,
		LoginFailuresPerAddress: failuresPerAddress,
		LoginFailureWindow:      time.Hour,
	})
}

func TestRateLimitedLogins(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, p := range []testnode.Protocol{testnode.GRPC, testnode.REST} {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := smStartRateLimited(t, b, 3)
				setup := testnode.Invoker(dialGRPC(t, n.GRPCAddr()))
				c := setup
				if p == testnode.REST {
					c = &rawREST{base: "http://" + n.HTTPAddr()}
				}
				admin := testnode.AdminToken(t, setup)
				rita := testnode.MustCall[gatehousev1.CreateUserResponse](t, setup, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: "rita", Password: "rita-password"}).User
				testnode.MustCall[gatehousev1.CreateUserResponse](t, setup, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: "sam", Password: "sam-password"})

				// Three failures for one username are answered as failures, each alike, whether or
				// not the user exists.
				mark := lastEventID(t, n)
				var first *status.Status
				for i, at := range []struct{ username, password string }{
					{"rita", "wrong-1"}, {"ghost", "wrong-1"}, {"rita", "wrong-2"}, {"ghost", "wrong-2"}, {"RITA", "wrong-3"}, {"ghost", "wrong-3"},
				} {
					_, err := login(c, at.username, at.password)
					polWantErr(t, "failed login "+at.username, err, codes.Unauthenticated, "INVALID_CREDENTIALS", "")
					if i == 0 {
						first = status.Convert(err)
					} else if st := status.Convert(err); !proto.Equal(st.Proto(), first.Proto()) {
						t.Errorf("failure %d (%s) is %v, the first was %v", i, at.username, st.Proto(), first.Proto())
					}
				}
				// The fourth attempt is refused before the password is looked at, even the right one,
				// for a known and an unknown username alike.
				for _, at := range []struct{ username, password string }{{"rita", "rita-password"}, {"Rita", "rita-password"}, {"ghost", "x"}} {
					_, err := login(c, at.username, at.password)
					polWantErr(t, "login "+at.username+" after three failures", err, codes.ResourceExhausted, "LOGIN_RATE_LIMITED", "")
				}
				// Other usernames are not affected.
				if _, err := login(c, "sam", "sam-password"); err != nil {
					t.Errorf("sam's login while rita is limited: %v", err)
				}
				if _, err := login(c, "admin", testnode.AdminPassword); err != nil {
					t.Errorf("admin's login while rita is limited: %v", err)
				}

				// Each failure is a LOGIN_FAILED event naming the username (and the user when known).
				failed := ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED)
				var names []string
				for _, e := range failed {
					names = append(names, e.Event.GetLoginFailed().GetUsername())
					if strings.EqualFold(e.Event.GetLoginFailed().GetUsername(), "rita") && e.UserID != rita.Id {
						t.Errorf("LOGIN_FAILED for %s names user %q, want %s", e.Event.GetLoginFailed().GetUsername(), e.UserID, rita.Id)
					}
					if e.Event.GetLoginFailed().GetUsername() == "ghost" && e.UserID != "" {
						t.Errorf("LOGIN_FAILED for an unknown username names user %q", e.UserID)
					}
				}
				if want := []string{"rita", "ghost", "rita", "ghost", "RITA", "ghost"}; len(names) < len(want) || !slices.Equal(names[:len(want)], want) {
					t.Errorf("LOGIN_FAILED usernames %v, want %v first", names, want)
				}
			})
		}
	}
}
