package integration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// login creates a web-browser session with a password and returns the response or the error.
func login(c testnode.Invoker, username, password string) (*gatehousev1.CreateSessionResponse, error) {
	return testnode.Call[gatehousev1.CreateSessionResponse](context.Background(), c, gatehousev1.SessionService_CreateSession_FullMethodName, "",
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
}

// validate validates a token.
func validate(c testnode.Invoker, token string) (*gatehousev1.ValidateSessionResponse, error) {
	return testnode.Call[gatehousev1.ValidateSessionResponse](context.Background(), c, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
		&gatehousev1.ValidateSessionRequest{Token: token})
}

// mustValidate validates a token that must be valid.
func mustValidate(t *testing.T, c testnode.Invoker, what, token string) *gatehousev1.ValidateSessionResponse {
	t.Helper()
	v, err := validate(c, token)
	if err != nil {
		t.Fatalf("%s: ValidateSession: %v", what, err)
	}
	return v
}

// wantEnded checks that a token's session has ended for reason.
func wantEnded(t *testing.T, c testnode.Invoker, what, token string, reason gatehousev1.TerminationReason) {
	t.Helper()
	_, err := validate(c, token)
	if status.Code(err) != codes.Unauthenticated || testnode.Reason(err) != "SESSION_TERMINATED" {
		t.Errorf("%s: ValidateSession = %v (reason %q), want UNAUTHENTICATED SESSION_TERMINATED", what, err, testnode.Reason(err))
		return
	}
	if got := testnode.Metadata(err)["termination_reason"]; got != reason.String() {
		t.Errorf("%s: termination_reason = %q, want %s", what, got, reason)
	}
}

// terminations returns the SESSION_TERMINATED events among evs by session id.
func terminations(evs []loggedEvent) map[string]gatehousev1.TerminationReason {
	out := map[string]gatehousev1.TerminationReason{}
	for _, e := range ofType(evs, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED) {
		out[e.Event.SessionId] = e.Event.GetSessionTerminated().GetReason()
	}
	return out
}

func TestLoginFailuresAreUniform(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		gina := a.createUser("gina", "gina-password")
		hank := mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
			&gatehousev1.CreateUserRequest{Username: "hank", Password: "hank-password", Disabled: true}).User
		ivan := a.createUser("ivan", "")
		if ivan.HasPassword || !gina.HasPassword {
			t.Errorf("has_password: ivan %v, gina %v", ivan.HasPassword, gina.HasPassword)
		}

		mark := lastEventID(t, n)
		attempts := []struct{ what, username, password string }{
			{"wrong password", "gina", "not-gina-password"},
			{"unknown user", "nobody", "gina-password"},
			{"disabled user", "hank", "hank-password"},
			{"user without a password", "ivan", "any-password"},
			{"wrong password, other case", "GINA", "Gina-password"},
		}
		var first *status.Status
		for _, at := range attempts {
			resp, err := login(c, at.username, at.password)
			if err == nil {
				t.Errorf("%s: login succeeded: %v", at.what, resp)
				continue
			}
			st := status.Convert(err)
			if st.Code() != codes.Unauthenticated || testnode.Reason(err) != "INVALID_CREDENTIALS" {
				t.Errorf("%s: %v (reason %q), want UNAUTHENTICATED INVALID_CREDENTIALS", at.what, err, testnode.Reason(err))
				continue
			}
			if first == nil {
				first = st
			} else if !proto.Equal(st.Proto(), first.Proto()) {
				t.Errorf("%s: status %v differs from the first failure's %v", at.what, st.Proto(), first.Proto())
			}
		}
		// Each failure is recorded, without the password.
		failed := ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED)
		if len(failed) != len(attempts) {
			t.Errorf("%d LOGIN_FAILED events for %d failed logins", len(failed), len(attempts))
		}
		for i, e := range failed {
			if i < len(attempts) && e.Event.GetLoginFailed().GetUsername() != attempts[i].username {
				t.Errorf("LOGIN_FAILED %d names %q, want %q", i, e.Event.GetLoginFailed().GetUsername(), attempts[i].username)
			}
			raw, _ := proto.Marshal(e.Event)
			for _, at := range attempts {
				if bytes.Contains(raw, []byte(at.password)) {
					t.Errorf("a LOGIN_FAILED event contains the password %q", at.password)
				}
			}
		}

		// The right password logs in, whatever the case of the username; so does hank once enabled.
		if _, err := login(c, "GINA", "gina-password"); err != nil {
			t.Errorf("login as GINA: %v", err)
		}
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: hank.Id, Disabled: false},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		if _, err := login(c, "hank", "hank-password"); err != nil {
			t.Errorf("login as hank once enabled: %v", err)
		}
	})
}

// wellFormedToken returns a syntactically valid token that no session has.
func wellFormedToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "ghs_" + base64.RawURLEncoding.EncodeToString(b)
}

func TestValidateAndLogout(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		jill := a.createUser("jill", "jill-password")

		for _, tok := range []string{"garbage", "ghs_", "ghs_" + strings.Repeat("A", 43), "Bearer x", wellFormedToken(t), strings.ToUpper(a.tok)} {
			_, err := validate(c, tok)
			if status.Code(err) != codes.Unauthenticated || testnode.Reason(err) != "SESSION_NOT_FOUND" {
				t.Errorf("ValidateSession(%q) = %v (reason %q), want UNAUTHENTICATED SESSION_NOT_FOUND", tok, err, testnode.Reason(err))
			}
		}

		s := testnode.Login(t, c, "jill", "jill-password")
		if !strings.HasPrefix(s.Token, "ghs_") || len(s.Token) != len("ghs_")+43 {
			t.Errorf("token %q: want ghs_ and 43 base64url characters", s.Token)
		}
		if s.Session.GetId() == "" || s.Session.GetUserId() != jill.Id || !s.Session.GetActive() ||
			s.Session.GetType() != gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER || s.User.GetId() != jill.Id {
			t.Errorf("CreateSession = %v", s)
		}
		other := testnode.Login(t, c, "jill", "jill-password")
		v := mustValidate(t, c, "fresh session", s.Token)
		if v.Session.GetId() != s.Session.Id || v.User.GetId() != jill.Id || len(v.Roles) != 0 || !v.Session.Active {
			t.Errorf("ValidateSession = %v", v)
		}

		mark := lastEventID(t, n)
		lo := testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, s.Token, &gatehousev1.LogoutRequest{})
		if lo.ConsistencyToken == "" {
			t.Error("Logout returned no consistency token")
		}
		wantEnded(t, c, "after Logout", s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT)
		if got := terminations(eventsAfter(t, n, mark)); len(got) != 1 || got[s.Session.Id] != gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT {
			t.Errorf("Logout wrote SESSION_TERMINATED events %v, want one for %s with LOGOUT", got, s.Session.Id)
		}
		// The user's other session lives on; the ended one authenticates nothing any more.
		mustValidate(t, c, "the other session after Logout", other.Token)
		expectError(t, c, gatehousev1.SessionService_Logout_FullMethodName, s.Token, &gatehousev1.LogoutRequest{}, codes.Unauthenticated, "SESSION_TERMINATED")
		expectError(t, c, gatehousev1.IdentityService_GetUser_FullMethodName, s.Token, &gatehousev1.GetUserRequest{UserId: jill.Id},
			codes.Unauthenticated, "SESSION_TERMINATED")
		expectError(t, c, gatehousev1.SessionService_Logout_FullMethodName, "", &gatehousev1.LogoutRequest{}, codes.Unauthenticated, "")
	})
}

func TestDisablingAUserEndsTheirSessions(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		kim := a.createUser("kim", "kim-password")
		s1 := testnode.Login(t, c, "kim", "kim-password")
		s2 := testnode.Login(t, c, "kim", "kim-password")

		mark := lastEventID(t, n)
		u := a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: kim.Id, Disabled: true},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		if !u.Disabled {
			t.Errorf("UpdateUser disabled=true returned %v", u)
		}
		for _, s := range []*gatehousev1.CreateSessionResponse{s1, s2} {
			wantEnded(t, c, "after disabling the user", s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED)
		}
		evs := eventsAfter(t, n, mark)
		want := map[string]gatehousev1.TerminationReason{
			s1.Session.Id: gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED,
			s2.Session.Id: gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED,
		}
		if got := terminations(evs); !mapsEqual(got, want) {
			t.Errorf("disabling wrote SESSION_TERMINATED %v, want %v", got, want)
		}
		if len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_USER_DISABLED)) != 1 {
			t.Errorf("disabling wrote %d USER_DISABLED events, want 1", len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_USER_DISABLED)))
		}
		mustValidate(t, c, "the administrator's session", a.tok)
		if _, err := login(c, "kim", "kim-password"); testnode.Reason(err) != "INVALID_CREDENTIALS" {
			t.Errorf("login of a disabled user: %v, want INVALID_CREDENTIALS", err)
		}

		// Enabling the user again does not bring the ended sessions back.
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: kim.Id},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		wantEnded(t, c, "after enabling the user again", s1.Token, gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED)
		mustValidate(t, c, "a new login after enabling", testnode.Login(t, c, "kim", "kim-password").Token)
	})
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDeletingAUserEndsTheirSessions(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		lee := a.createUser("lee", "lee-password")
		s := testnode.Login(t, c, "lee", "lee-password")

		mark := lastEventID(t, n)
		mutate[gatehousev1.DeleteUserResponse](a, gatehousev1.IdentityService_DeleteUser_FullMethodName, &gatehousev1.DeleteUserRequest{UserId: lee.Id})

		// The ended session stays (sessions.user_id is no foreign key), so its validation says why.
		wantEnded(t, c, "after DeleteUser", s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_USER_DELETED)

		evs := eventsAfter(t, n, mark)
		if got := terminations(evs); len(got) != 1 || got[s.Session.Id] != gatehousev1.TerminationReason_TERMINATION_REASON_USER_DELETED {
			t.Errorf("DeleteUser wrote SESSION_TERMINATED %v, want one for %s with USER_DELETED", got, s.Session.Id)
		}
		if d := ofType(evs, gatehousev1.EventType_EVENT_TYPE_USER_DELETED); len(d) != 1 || d[0].UserID != lee.Id {
			t.Errorf("DeleteUser wrote USER_DELETED events %v", d)
		}
		a.fails(gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: lee.Id}, codes.NotFound, "USER_NOT_FOUND")
		a.fails(gatehousev1.IdentityService_DeleteUser_FullMethodName, &gatehousev1.DeleteUserRequest{UserId: lee.Id}, codes.NotFound, "USER_NOT_FOUND")
		if _, err := login(c, "lee", "lee-password"); testnode.Reason(err) != "INVALID_CREDENTIALS" {
			t.Errorf("login of a deleted user: %v, want INVALID_CREDENTIALS", err)
		}
		// The name is free again.
		a.createUser("LEE", "")
	})
}

func TestSetPasswordBySelf(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		mia := a.createUser("mia", "mia-password-1")
		a.createUser("ned", "ned-password")
		me := testnode.Login(t, c, "mia", "mia-password-1")
		other1 := testnode.Login(t, c, "mia", "mia-password-1")
		other2 := testnode.Login(t, c, "mia", "mia-password-1")
		ned := testnode.Login(t, c, "ned", "ned-password")

		setPassword := func(token string, req *gatehousev1.SetPasswordRequest) (*gatehousev1.SetPasswordResponse, error) {
			return testnode.Call[gatehousev1.SetPasswordResponse](context.Background(), c, gatehousev1.IdentityService_SetPassword_FullMethodName, token, req)
		}
		for _, cur := range []string{"", "wrong-password"} {
			_, err := setPassword(me.Token, &gatehousev1.SetPasswordRequest{UserId: mia.Id, NewPassword: "mia-password-2", CurrentPassword: cur})
			if status.Code(err) != codes.InvalidArgument || testnode.Reason(err) != "CURRENT_PASSWORD_MISMATCH" {
				t.Errorf("SetPassword by self with current_password %q: %v (reason %q), want INVALID_ARGUMENT CURRENT_PASSWORD_MISMATCH",
					cur, err, testnode.Reason(err))
			}
		}
		// Another user may not change mia's password, with or without hers.
		if _, err := setPassword(ned.Token, &gatehousev1.SetPasswordRequest{UserId: mia.Id, NewPassword: "ned-was-here", CurrentPassword: "mia-password-1"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("SetPassword of mia by ned: %v, want PERMISSION_DENIED", err)
		}
		for _, s := range []*gatehousev1.CreateSessionResponse{me, other1, other2} {
			mustValidate(t, c, "after refused password changes", s.Token)
		}

		mark := lastEventID(t, n)
		resp, err := setPassword(me.Token, &gatehousev1.SetPasswordRequest{UserId: mia.Id, NewPassword: "mia-password-2", CurrentPassword: "mia-password-1"})
		if err != nil {
			t.Fatalf("SetPassword by self: %v", err)
		}
		if resp.ConsistencyToken == "" {
			t.Error("SetPassword returned no consistency token")
		}
		mustValidate(t, c, "the caller's session after changing the password", me.Token)
		wantEnded(t, c, "another session after the password change", other1.Token, gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED)
		wantEnded(t, c, "another session after the password change", other2.Token, gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED)
		mustValidate(t, c, "another user's session", ned.Token)
		evs := eventsAfter(t, n, mark)
		if pc := ofType(evs, gatehousev1.EventType_EVENT_TYPE_PASSWORD_CHANGED); len(pc) != 1 || !pc[0].Event.GetPasswordChanged().GetBySelf() || pc[0].UserID != mia.Id {
			t.Errorf("PASSWORD_CHANGED events %v, want one by self for mia", pc)
		}
		want := map[string]gatehousev1.TerminationReason{
			other1.Session.Id: gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED,
			other2.Session.Id: gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED,
		}
		if got := terminations(evs); !mapsEqual(got, want) {
			t.Errorf("SESSION_TERMINATED %v, want %v", got, want)
		}
		for _, e := range evs {
			raw, _ := proto.Marshal(e.Event)
			if bytes.Contains(raw, []byte("mia-password")) {
				t.Errorf("event %s contains the password", e.Type)
			}
		}

		if _, err := login(c, "mia", "mia-password-1"); testnode.Reason(err) != "INVALID_CREDENTIALS" {
			t.Errorf("login with the old password: %v, want INVALID_CREDENTIALS", err)
		}
		testnode.Login(t, c, "mia", "mia-password-2")
	})
}

func TestSetPasswordByAdmin(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		oz := a.createUser("oz", "oz-password-1")
		s1 := testnode.Login(t, c, "oz", "oz-password-1")
		s2 := testnode.Login(t, c, "oz", "oz-password-1")

		mark := lastEventID(t, n)
		mutate[gatehousev1.SetPasswordResponse](a, gatehousev1.IdentityService_SetPassword_FullMethodName,
			&gatehousev1.SetPasswordRequest{UserId: oz.Id, NewPassword: "oz-password-2"})
		wantEnded(t, c, "after an administrator set the password", s1.Token, gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED)
		wantEnded(t, c, "after an administrator set the password", s2.Token, gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED)
		mustValidate(t, c, "the administrator's own session", a.tok)
		evs := eventsAfter(t, n, mark)
		if pc := ofType(evs, gatehousev1.EventType_EVENT_TYPE_PASSWORD_CHANGED); len(pc) != 1 || pc[0].Event.GetPasswordChanged().GetBySelf() ||
			pc[0].Event.ActorUserId != a.userID {
			t.Errorf("PASSWORD_CHANGED events %v, want one not by self, by the administrator", pc)
		}
		if got := terminations(evs); len(got) != 2 {
			t.Errorf("SESSION_TERMINATED %v, want both of oz's sessions", got)
		}
		if _, err := login(c, "oz", "oz-password-1"); testnode.Reason(err) != "INVALID_CREDENTIALS" {
			t.Errorf("login with the old password: %v, want INVALID_CREDENTIALS", err)
		}
		testnode.Login(t, c, "oz", "oz-password-2")

		// A user without a password gets one and can then log in.
		sso := a.createUser("sso-only", "")
		mutate[gatehousev1.SetPasswordResponse](a, gatehousev1.IdentityService_SetPassword_FullMethodName,
			&gatehousev1.SetPasswordRequest{UserId: sso.Id, NewPassword: "now-with-password"})
		testnode.Login(t, c, "sso-only", "now-with-password")
	})
}

func TestRoleChangesReachTheNextValidation(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		pat := a.createUser("pat", "pat-password")
		a.createRole("viewer")
		a.createRole("editor", "viewer")
		a.createRole("auditor-lite")
		g := a.createGroup("writers")
		a.grantGroup("editor", g.Id)
		s := testnode.Login(t, c, "pat", "pat-password")
		if len(s.Roles) != 0 {
			t.Errorf("new session roles = %v, want none", s.Roles)
		}
		roles := func() []string { return mustValidate(t, c, "pat's session", s.Token).Roles }

		a.grantUser("auditor-lite", pat.Id)
		if got := roles(); !slices.Equal(got, []string{"auditor-lite"}) {
			t.Errorf("after a direct grant: %v", got)
		}
		a.addMember(g.Id, pat.Id)
		if got := roles(); !slices.Equal(got, []string{"auditor-lite", "editor", "viewer"}) {
			t.Errorf("after joining a group: %v", got)
		}
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "auditor-lite", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: pat.Id}})
		if got := roles(); !slices.Equal(got, []string{"editor", "viewer"}) {
			t.Errorf("after a revoke: %v", got)
		}
		// Roles carry authority at once: an identity admin grant lets pat create users right away.
		expectError(t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, s.Token, &gatehousev1.CreateUserRequest{Username: "quinn"},
			codes.PermissionDenied, "")
		a.grantUser("gatehouse.identity_admin", pat.Id)
		if got := roles(); !slices.Contains(got, "gatehouse.identity_admin") {
			t.Errorf("after granting identity_admin: %v", got)
		}
		testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, s.Token,
			&gatehousev1.CreateUserRequest{Username: "quinn"})
		// The session was never re-created.
		if got := mustValidate(t, c, "pat's session", s.Token).Session.GetId(); got != s.Session.Id {
			t.Errorf("session id changed from %s to %s", s.Session.Id, got)
		}
	})
}

func TestSessionTokensAreStoredHashed(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createUser("rae", "rae-password")
		var tokens []string
		for range 3 {
			s := testnode.Login(t, c, "rae", "rae-password")
			if !strings.HasPrefix(s.Token, "ghs_") {
				t.Errorf("token %q lacks the ghs_ prefix", s.Token)
			}
			tokens = append(tokens, s.Token)
			sum := sha256.Sum256([]byte(s.Token))
			var stored []byte
			st := n.Store()
			if err := st.DB.QueryRow(st.Rebind("SELECT token_hash FROM sessions WHERE id = ?"), s.Session.Id).Scan(&stored); err != nil {
				t.Fatalf("reading the session row: %v", err)
			}
			if !bytes.Equal(stored, sum[:]) {
				t.Errorf("token_hash = %x, want SHA-256 of the token %x", stored, sum)
			}
		}
		if distinct := slices.Compact(slices.Sorted(slices.Values(tokens))); len(distinct) != len(tokens) {
			t.Errorf("tokens repeat: %v", tokens)
		}
		tokens = append(tokens, a.tok)
		cells := tableCells(t, n.Store().DB, "sessions")
		if len(cells) == 0 {
			t.Fatal("read nothing from the sessions table")
		}
		for _, tok := range tokens {
			for _, cell := range cells {
				if containsSecret(cell.value, tok) {
					t.Errorf("sessions.%s contains a session token", cell.column)
				}
			}
		}
	})
}

// cell is one value of a table.
type cell struct {
	column string
	value  []byte
}

// tableCells reads every value of every row of a table, as bytes.
func tableCells(t *testing.T, db *sql.DB, table string) []cell {
	t.Helper()
	rows, err := db.Query("SELECT * FROM " + table)
	if err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []cell
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("scanning %s: %v", table, err)
		}
		for i, v := range vals {
			var b []byte
			switch v := v.(type) {
			case []byte:
				b = v
			case string:
				b = []byte(v)
			case nil:
			default:
				b = fmt.Append(nil, v)
			}
			out = append(out, cell{column: cols[i], value: b})
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	return out
}

// containsSecret reports whether b contains a token or password, or the random part of a token.
func containsSecret(b []byte, secret string) bool {
	if bytes.Contains(b, []byte(secret)) {
		return true
	}
	if rest, ok := strings.CutPrefix(secret, "ghs_"); ok && bytes.Contains(b, []byte(rest)) {
		return true
	}
	return false
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers (the node's goroutines) and readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSecretsStayOutOfLogsAndEvents runs a node whose log goes to a buffer (at debug level), and
// checks, through every front, that tokens and passwords appear neither in the log nor in the event
// log after logins (good and bad), validations, authenticated calls and logouts.
func TestSecretsStayOutOfLogsAndEvents(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			const adminPassword = "admin-secret-Zq8Vw3"
			srv := testnode.StartWith(t, server.Config{
				Database:      testnode.DatabaseURL(t, b),
				AdminPassword: adminPassword,
				Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})

			secrets := []string{adminPassword}
			fronts := map[testnode.Protocol]testnode.Invoker{
				testnode.GRPC:    dialGRPC(t, srv.GRPCAddr()),
				testnode.Connect: &rawConnect{base: "http://" + srv.HTTPAddr()},
				testnode.REST:    &rawREST{base: "http://" + srv.HTTPAddr()},
			}
			for _, p := range testnode.Protocols {
				c := fronts[p]
				admin := testnode.Login(t, c, "admin", adminPassword).Token
				user, password := "user-"+string(p), "pw-"+string(p)+"-Kx93mQ"
				wrong := "wrong-" + string(p) + "-Jq27pL"
				u := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: user, Password: password}).User
				if _, err := login(c, user, wrong); err == nil {
					t.Errorf("%s: login with a wrong password succeeded", p)
				}
				s := testnode.Login(t, c, user, password)
				mustValidate(t, c, string(p), s.Token)
				testnode.MustCall[gatehousev1.GetUserResponse](t, c, gatehousev1.IdentityService_GetUser_FullMethodName, s.Token,
					&gatehousev1.GetUserRequest{UserId: u.Id})
				newPassword := "new-" + password
				testnode.MustCall[gatehousev1.SetPasswordResponse](t, c, gatehousev1.IdentityService_SetPassword_FullMethodName, s.Token,
					&gatehousev1.SetPasswordRequest{UserId: u.Id, CurrentPassword: password, NewPassword: newPassword})
				testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, s.Token, &gatehousev1.LogoutRequest{})
				// A call with the ended token, and a validation of it, fail; neither may echo it.
				if _, err := testnode.Call[gatehousev1.GetUserResponse](context.Background(), c, gatehousev1.IdentityService_GetUser_FullMethodName, s.Token,
					&gatehousev1.GetUserRequest{UserId: u.Id}); err == nil {
					t.Errorf("%s: a call with an ended token succeeded", p)
				} else if strings.Contains(err.Error(), s.Token) {
					t.Errorf("%s: an error echoes the token: %v", p, err)
				}
				if _, err := validate(c, s.Token); err == nil || strings.Contains(err.Error(), s.Token) {
					t.Errorf("%s: validating an ended token: %v", p, err)
				}
				testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, admin, &gatehousev1.LogoutRequest{})
				secrets = append(secrets, s.Token, admin, password, wrong, newPassword)
			}

			logText := logs.String()
			if !strings.Contains(logText, "CreateSession") {
				t.Errorf("the node logged no calls (is the access log on?):\n%s", logText)
			}
			events := tableCells(t, srv.Store().DB, "events")
			for _, sec := range secrets {
				if containsSecret([]byte(logText), sec) {
					t.Errorf("the server log contains the secret %q", sec)
				}
				for _, cl := range events {
					if containsSecret(cl.value, sec) {
						t.Errorf("events.%s contains the secret %q", cl.column, sec)
					}
				}
			}
		})
	}
}

// grpcConn is an Invoker over a gRPC connection.
type grpcConn struct{ conn *grpc.ClientConn }

func dialGRPC(t *testing.T, addr string) grpcConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return grpcConn{conn}
}

func (g grpcConn) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return g.conn.Invoke(ctx, method, req, resp)
}

// rawConnect calls unary methods with the Connect protocol (JSON), by hand.
type rawConnect struct{ base string }

func (r *rawConnect) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	body, err := protojson.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	hresp, err := testnode.HTTPClient().Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(hresp.Body)
	if err != nil {
		return err
	}
	if hresp.StatusCode != http.StatusOK {
		return status.Errorf(codes.Unknown, "connect: HTTP %d: %s", hresp.StatusCode, raw)
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(raw, resp)
}

// rawREST calls the REST facade for methods whose rule is a GET or a POST with body "*" and whose
// path parameters are top-level fields.
type rawREST struct{ base string }

func (r *rawREST) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	md, err := methodDescriptorOf(method)
	if err != nil {
		return err
	}
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	var verb, path string
	var body io.Reader
	switch {
	case rule.GetPost() != "" && rule.GetBody() == "*":
		b, err := protojson.Marshal(req)
		if err != nil {
			return err
		}
		verb, path, body = http.MethodPost, rule.GetPost(), bytes.NewReader(b)
	case rule.GetGet() != "":
		verb, path = http.MethodGet, rule.GetGet()
	default:
		return fmt.Errorf("rawREST cannot call %s", method)
	}
	fields := req.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		path = strings.ReplaceAll(path, "{"+string(fd.Name())+"}", req.ProtoReflect().Get(fd).String())
	}
	hreq, err := http.NewRequestWithContext(ctx, verb, r.base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	return testnode.DoREST(testnode.HTTPClient(), hreq, resp)
}
