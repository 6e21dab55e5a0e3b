package integration_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// This file checks that every string a request may carry within its protovalidate bounds is
// accepted by the rest of the service: protovalidate's max_len counts characters, so a value at the
// limit made of multi-byte characters (up to four bytes each in UTF-8) must be stored and read back
// as it was sent, and one character more must be INVALID_ARGUMENT naming the field, never INTERNAL.

// luUnits are the characters free-text values are made of: two, three and four bytes in UTF-8.
var luUnits = []string{"é", "日", "😀"}

// luCase is one bounded string field of a request.
type luCase struct {
	// field is the full name of the bounded field (gatehouse.v1.ClientInfo.user_agent).
	field string
	// rpc names the call that carries it, for the subtest name.
	rpc string
	// path is the field path an over-limit value's violation names.
	path string
	// ascii makes a valid value of n characters for fields whose rules admit only ASCII (a pattern
	// or the email rule); nil for free text, whose values repeat each of luUnits.
	ascii func(e *luEnv, n int) string
	// limit is the bound in characters for fields bounded by a pattern; 0 takes the field's max_len.
	limit int
	// stored fields are read back after the call and must equal what was sent.
	stored bool
	// want is the answer at the limit for fields that are not stored: the domain's answer to a
	// value it cannot match (codes.OK for a success), and wantReason its ErrorInfo reason.
	want       codes.Code
	wantReason string
	// send makes the call with v and, for stored fields, returns the value read back afterwards.
	send func(t *testing.T, e *luEnv, v string) (string, error)
}

// luEnv is one node, called through the front under test as the bootstrap administrator.
type luEnv struct {
	a   *idAdmin
	c   testnode.Invoker
	tok string
	seq int
	// limit is the bound of the case under way, in characters.
	limit int
}

func (e *luEnv) name(kind string) string {
	e.seq++
	return fmt.Sprintf("lu-%s-%d", kind, e.seq)
}

func luCall[R any, PR interface {
	*R
	proto.Message
}](e *luEnv, method, token string, req proto.Message) (PR, error) {
	return testnode.Call[R, PR](context.Background(), e.c, method, token, req)
}

// user creates a user without a password and returns its id and username.
func (e *luEnv) user(t *testing.T) (id, username string) {
	t.Helper()
	username = e.name("user")
	return e.a.createUser(username, "").Id, username
}

// trusted opens a session for username as the administrator (a session issuer), with client.
func (e *luEnv) trusted(username string, client *gatehousev1.ClientInfo) (*gatehousev1.CreateSessionResponse, error) {
	req := smTrustedReq(username, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER)
	req.Client = client
	return luCall[gatehousev1.CreateSessionResponse](e, gatehousev1.SessionService_CreateSession_FullMethodName, e.tok, req)
}

// impersonate opens a session as username, as the administrator, with reason.
func (e *luEnv) impersonate(username, reason string) (*gatehousev1.CreateSessionResponse, error) {
	return luCall[gatehousev1.CreateSessionResponse](e, gatehousev1.SessionService_CreateSession_FullMethodName, e.tok,
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Impersonate{Impersonate: &gatehousev1.ImpersonateCredential{Username: username, Reason: reason}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
}

func (e *luEnv) getUser(id string) (*gatehousev1.User, error) {
	resp, err := luCall[gatehousev1.GetUserResponse](e, gatehousev1.IdentityService_GetUser_FullMethodName, e.tok, &gatehousev1.GetUserRequest{UserId: id})
	return resp.GetUser(), err
}

func (e *luEnv) getSession(id string) (*gatehousev1.Session, error) {
	return smGet(e.c, e.tok, id)
}

// luLogin logs username in with password through the front under test.
func (e *luEnv) login(username, password string) (*gatehousev1.CreateSessionResponse, error) {
	return smTryCreate(e.c, "", smPasswordReq(username, password, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER, nil))
}

// luEmail is a valid e-mail address of exactly n ASCII characters (n >= 67).
func luEmail(n int) string {
	local := strings.Repeat("a", 64)
	rest := n - len(local) - 1
	var labels []string
	for rest > 63 {
		labels = append(labels, strings.Repeat("b", 62))
		rest -= 63
	}
	labels = append(labels, strings.Repeat("c", rest))
	return local + "@" + strings.Join(labels, ".")
}

// luName is a unique name of exactly n characters of [a-z0-9-].
func luName(e *luEnv, n int) string {
	p := e.name("n")
	return p + strings.Repeat("x", n-len(p))
}

// luPageToken checks page_token of one list RPC: a value that is no page token is the domain's
// INVALID_PAGE_TOKEN, never INTERNAL.
func luPageToken(field, rpc, method string, req func(e *luEnv, v string) proto.Message) luCase {
	return luCase{field: field, rpc: rpc, path: "page_token", want: codes.InvalidArgument, wantReason: "INVALID_PAGE_TOKEN",
		send: func(t *testing.T, e *luEnv, v string) (string, error) {
			resp, err := respFor(method)
			if err != nil {
				t.Fatal(err)
			}
			return "", e.c.Invoke(context.Background(), method, e.tok, req(e, v), resp)
		}}
}

// luCases are the bounded string fields of every request, from the protos.
func luCases() []luCase {
	updateUser := func(t *testing.T, e *luEnv, u *gatehousev1.User, path string) (*gatehousev1.User, error) {
		t.Helper()
		id, _ := e.user(t)
		u.Id = id
		if _, err := e.a.updateUser(&gatehousev1.UpdateUserRequest{User: u, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{path}}}); err != nil {
			return nil, err
		}
		return e.getUser(id)
	}
	return []luCase{
		// IdentityService: users.
		{field: "gatehouse.v1.CreateUserRequest.username", rpc: "CreateUser", path: "username", ascii: luName, limit: 64, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.CreateUserResponse](e, gatehousev1.IdentityService_CreateUser_FullMethodName, e.tok,
					&gatehousev1.CreateUserRequest{Username: v})
				if err != nil {
					return "", err
				}
				u, err := e.getUser(resp.User.Id)
				return u.GetUsername(), err
			}},
		{field: "gatehouse.v1.CreateUserRequest.email", rpc: "CreateUser", path: "email", ascii: func(_ *luEnv, n int) string { return luEmail(n) }, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.CreateUserResponse](e, gatehousev1.IdentityService_CreateUser_FullMethodName, e.tok,
					&gatehousev1.CreateUserRequest{Username: e.name("user"), Email: v})
				if err != nil {
					return "", err
				}
				u, err := e.getUser(resp.User.Id)
				return u.GetEmail(), err
			}},
		{field: "gatehouse.v1.CreateUserRequest.display_name", rpc: "CreateUser", path: "display_name", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.CreateUserResponse](e, gatehousev1.IdentityService_CreateUser_FullMethodName, e.tok,
					&gatehousev1.CreateUserRequest{Username: e.name("user"), DisplayName: v})
				if err != nil {
					return "", err
				}
				if resp.User.DisplayName != v {
					return resp.User.DisplayName, nil
				}
				u, err := e.getUser(resp.User.Id)
				return u.GetDisplayName(), err
			}},
		// The password is stored as its hash: reading it back is logging in with it.
		{field: "gatehouse.v1.CreateUserRequest.password", rpc: "CreateUser", path: "password", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				username := e.name("user")
				if _, err := luCall[gatehousev1.CreateUserResponse](e, gatehousev1.IdentityService_CreateUser_FullMethodName, e.tok,
					&gatehousev1.CreateUserRequest{Username: username, Password: v}); err != nil {
					return "", err
				}
				if _, err := e.login(username, v); err != nil {
					return "", fmt.Errorf("logging in with the new password: %w", err)
				}
				return v, nil
			}},
		{field: "gatehouse.v1.User.username", rpc: "UpdateUser", path: "user.username", ascii: luName, limit: 64, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				u, err := updateUser(t, e, &gatehousev1.User{Username: v}, "username")
				return u.GetUsername(), err
			}},
		{field: "gatehouse.v1.User.email", rpc: "UpdateUser", path: "user.email", ascii: func(_ *luEnv, n int) string { return luEmail(n) }, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				u, err := updateUser(t, e, &gatehousev1.User{Email: v}, "email")
				return u.GetEmail(), err
			}},
		{field: "gatehouse.v1.User.display_name", rpc: "UpdateUser", path: "user.display_name", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				u, err := updateUser(t, e, &gatehousev1.User{DisplayName: v}, "display_name")
				return u.GetDisplayName(), err
			}},
		{field: "gatehouse.v1.SetPasswordRequest.new_password", rpc: "SetPassword", path: "new_password", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				id, username := e.user(t)
				if _, err := luCall[gatehousev1.SetPasswordResponse](e, gatehousev1.IdentityService_SetPassword_FullMethodName, e.tok,
					&gatehousev1.SetPasswordRequest{UserId: id, NewPassword: v}); err != nil {
					return "", err
				}
				if _, err := e.login(username, v); err != nil {
					return "", fmt.Errorf("logging in with the new password: %w", err)
				}
				return v, nil
			}},
		// The current password is compared with the stored hash: the user changes their own
		// password, giving a current one at the limit.
		{field: "gatehouse.v1.SetPasswordRequest.current_password", rpc: "SetPassword", path: "current_password", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				username, pw := e.name("user"), v
				if utf8.RuneCountInString(v) > e.limit {
					pw = "lu-first-password" // over the limit: only the SetPassword call is under test
				}
				u := e.a.createUser(username, pw)
				s, err := e.login(username, pw)
				if err != nil {
					return "", fmt.Errorf("logging in: %w", err)
				}
				if _, err := luCall[gatehousev1.SetPasswordResponse](e, gatehousev1.IdentityService_SetPassword_FullMethodName, s.Token,
					&gatehousev1.SetPasswordRequest{UserId: u.Id, NewPassword: "lu-next-password", CurrentPassword: v}); err != nil {
					return "", err
				}
				return v, nil
			}},
		{field: "gatehouse.v1.ListUsersRequest.username_prefix", rpc: "ListUsers", path: "username_prefix", want: codes.OK,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.ListUsersResponse](e, gatehousev1.IdentityService_ListUsers_FullMethodName, e.tok,
					&gatehousev1.ListUsersRequest{UsernamePrefix: v})
				if err == nil && len(resp.Users) != 0 {
					return "", fmt.Errorf("a username prefix no username has matched %d users", len(resp.Users))
				}
				return "", err
			}},
		luPageToken("gatehouse.v1.ListUsersRequest.page_token", "ListUsers", gatehousev1.IdentityService_ListUsers_FullMethodName,
			func(e *luEnv, v string) proto.Message { return &gatehousev1.ListUsersRequest{PageToken: v} }),

		// IdentityService: groups and roles.
		{field: "gatehouse.v1.CreateGroupRequest.name", rpc: "CreateGroup", path: "name", ascii: luName, limit: 64, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.CreateGroupResponse](e, gatehousev1.IdentityService_CreateGroup_FullMethodName, e.tok,
					&gatehousev1.CreateGroupRequest{Name: v})
				if err != nil {
					return "", err
				}
				g, err := luCall[gatehousev1.GetGroupResponse](e, gatehousev1.IdentityService_GetGroup_FullMethodName, e.tok,
					&gatehousev1.GetGroupRequest{GroupId: resp.Group.Id})
				return g.GetGroup().GetName(), err
			}},
		{field: "gatehouse.v1.CreateGroupRequest.description", rpc: "CreateGroup", path: "description", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.CreateGroupResponse](e, gatehousev1.IdentityService_CreateGroup_FullMethodName, e.tok,
					&gatehousev1.CreateGroupRequest{Name: e.name("group"), Description: v})
				if err != nil {
					return "", err
				}
				g, err := luCall[gatehousev1.GetGroupResponse](e, gatehousev1.IdentityService_GetGroup_FullMethodName, e.tok,
					&gatehousev1.GetGroupRequest{GroupId: resp.Group.Id})
				return g.GetGroup().GetDescription(), err
			}},
		{field: "gatehouse.v1.ListGroupsRequest.name_prefix", rpc: "ListGroups", path: "name_prefix", want: codes.OK,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				resp, err := luCall[gatehousev1.ListGroupsResponse](e, gatehousev1.IdentityService_ListGroups_FullMethodName, e.tok,
					&gatehousev1.ListGroupsRequest{NamePrefix: v})
				if err == nil && len(resp.Groups) != 0 {
					return "", fmt.Errorf("a name prefix no group name has matched %d groups", len(resp.Groups))
				}
				return "", err
			}},
		luPageToken("gatehouse.v1.ListGroupsRequest.page_token", "ListGroups", gatehousev1.IdentityService_ListGroups_FullMethodName,
			func(e *luEnv, v string) proto.Message { return &gatehousev1.ListGroupsRequest{PageToken: v} }),
		luPageToken("gatehouse.v1.ListGroupMembersRequest.page_token", "ListGroupMembers", gatehousev1.IdentityService_ListGroupMembers_FullMethodName,
			func(e *luEnv, v string) proto.Message {
				return &gatehousev1.ListGroupMembersRequest{GroupId: e.a.createGroup(e.name("group")).Id, PageToken: v}
			}),
		{field: "gatehouse.v1.CreateRoleRequest.name", rpc: "CreateRole", path: "name", ascii: luName, limit: 64, stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				if _, err := luCall[gatehousev1.CreateRoleResponse](e, gatehousev1.IdentityService_CreateRole_FullMethodName, e.tok,
					&gatehousev1.CreateRoleRequest{Name: v}); err != nil {
					return "", err
				}
				r, err := luCall[gatehousev1.GetRoleResponse](e, gatehousev1.IdentityService_GetRole_FullMethodName, e.tok,
					&gatehousev1.GetRoleRequest{Name: v})
				return r.GetRole().GetName(), err
			}},
		{field: "gatehouse.v1.CreateRoleRequest.description", rpc: "CreateRole", path: "description", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				name := e.name("role")
				if _, err := luCall[gatehousev1.CreateRoleResponse](e, gatehousev1.IdentityService_CreateRole_FullMethodName, e.tok,
					&gatehousev1.CreateRoleRequest{Name: name, Description: v}); err != nil {
					return "", err
				}
				r, err := luCall[gatehousev1.GetRoleResponse](e, gatehousev1.IdentityService_GetRole_FullMethodName, e.tok,
					&gatehousev1.GetRoleRequest{Name: name})
				return r.GetRole().GetDescription(), err
			}},
		luPageToken("gatehouse.v1.ListRolesRequest.page_token", "ListRoles", gatehousev1.IdentityService_ListRoles_FullMethodName,
			func(e *luEnv, v string) proto.Message { return &gatehousev1.ListRolesRequest{PageToken: v} }),

		// SessionService.
		{field: "gatehouse.v1.ClientInfo.user_agent", rpc: "CreateSession", path: "client.user_agent", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, username := e.user(t)
				resp, err := e.trusted(username, &gatehousev1.ClientInfo{UserAgent: v})
				if err != nil {
					return "", err
				}
				s, err := e.getSession(resp.Session.Id)
				return s.GetClient().GetUserAgent(), err
			}},
		{field: "gatehouse.v1.ClientInfo.device_name", rpc: "CreateSession", path: "client.device_name", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, username := e.user(t)
				resp, err := e.trusted(username, &gatehousev1.ClientInfo{DeviceName: v})
				if err != nil {
					return "", err
				}
				s, err := e.getSession(resp.Session.Id)
				return s.GetClient().GetDeviceName(), err
			}},
		// Usernames in credentials are looked up, not stored (beyond the LOGIN_FAILED event): an
		// unknown one is the one "invalid credentials" answer.
		{field: "gatehouse.v1.PasswordCredential.username", rpc: "CreateSession", path: "password.username",
			want: codes.Unauthenticated, wantReason: "INVALID_CREDENTIALS",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := e.login(v, "some-password")
				return "", err
			}},
		// The password of a login is compared with the stored hash: a user whose password is at the
		// limit logs in with it.
		{field: "gatehouse.v1.PasswordCredential.password", rpc: "CreateSession", path: "password.password", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				username := e.name("user")
				if utf8.RuneCountInString(v) <= e.limit {
					e.a.createUser(username, v)
				}
				if _, err := e.login(username, v); err != nil {
					return "", err
				}
				return v, nil
			}},
		{field: "gatehouse.v1.TrustedCredential.username", rpc: "CreateSession", path: "trusted.username",
			want: codes.Unauthenticated, wantReason: "INVALID_CREDENTIALS",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := e.trusted(v, nil)
				return "", err
			}},
		{field: "gatehouse.v1.ImpersonateCredential.username", rpc: "CreateSession", path: "impersonate.username",
			want: codes.NotFound, wantReason: "USER_NOT_FOUND",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := e.impersonate(v, "checking a report")
				return "", err
			}},
		// The reason of an impersonation is stored with its session.
		{field: "gatehouse.v1.ImpersonateCredential.reason", rpc: "CreateSession", path: "impersonate.reason", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, username := e.user(t)
				resp, err := e.impersonate(username, v)
				if err != nil {
					return "", err
				}
				return resp.GetSession().GetImpersonationReason(), nil
			}},
		{field: "gatehouse.v1.ValidateSessionRequest.token", rpc: "ValidateSession", path: "token",
			want: codes.Unauthenticated, wantReason: "SESSION_NOT_FOUND",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := luCall[gatehousev1.ValidateSessionResponse](e, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
					&gatehousev1.ValidateSessionRequest{Token: v})
				return "", err
			}},
		// A cursor is parsed, not stored.
		{field: "gatehouse.v1.ListEventsRequest.after", rpc: "ListEvents", path: "after",
			want: codes.InvalidArgument, wantReason: "INVALID_CURSOR",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := luCall[gatehousev1.ListEventsResponse](e, gatehousev1.SessionService_ListEvents_FullMethodName, e.tok,
					&gatehousev1.ListEventsRequest{After: v})
				return "", err
			}},
		// A consistency token is parsed, not stored.
		{field: "gatehouse.v1.Consistency.at_least_as_fresh", rpc: "ValidateSession", path: "consistency.at_least_as_fresh",
			want: codes.InvalidArgument, wantReason: "INVALID_CONSISTENCY_TOKEN",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := luCall[gatehousev1.ValidateSessionResponse](e, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
					&gatehousev1.ValidateSessionRequest{Token: e.tok, Consistency: &gatehousev1.Consistency{
						Requirement: &gatehousev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: v},
					}})
				return "", err
			}},
		luPageToken("gatehouse.v1.ListSessionsRequest.page_token", "ListSessions", gatehousev1.SessionService_ListSessions_FullMethodName,
			func(e *luEnv, v string) proto.Message { return &gatehousev1.ListSessionsRequest{PageToken: v} }),
		{field: "gatehouse.v1.TerminateSessionRequest.note", rpc: "TerminateSession", path: "note", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, username := e.user(t)
				s, err := e.trusted(username, nil)
				if err != nil {
					t.Fatalf("opening a session: %v", err)
				}
				resp, err := smTerminate(e.c, e.tok, s.Session.Id, v)
				if err != nil {
					return "", err
				}
				if resp.Session.Note != v {
					return resp.Session.Note, nil
				}
				got, err := e.getSession(s.Session.Id)
				return got.GetNote(), err
			}},
		{field: "gatehouse.v1.TerminateUserSessionsRequest.note", rpc: "TerminateUserSessions", path: "note", stored: true,
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				id, username := e.user(t)
				s, err := e.trusted(username, nil)
				if err != nil {
					t.Fatalf("opening a session: %v", err)
				}
				resp, err := luCall[gatehousev1.TerminateUserSessionsResponse](e, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, e.tok,
					&gatehousev1.TerminateUserSessionsRequest{UserId: id, Note: v})
				if err != nil {
					return "", err
				}
				if !slices.Equal(resp.TerminatedSessionIds, []string{s.Session.Id}) {
					return "", fmt.Errorf("ended %v, want [%s]", resp.TerminatedSessionIds, s.Session.Id)
				}
				got, err := e.getSession(s.Session.Id)
				return got.GetNote(), err
			}},

		// PolicyService.
		luPageToken("gatehouse.v1.ListSessionPoliciesRequest.page_token", "ListSessionPolicies", gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
			func(e *luEnv, v string) proto.Message { return &gatehousev1.ListSessionPoliciesRequest{PageToken: v} }),
		{field: "gatehouse.v1.CheckRequest.token", rpc: "Check", path: "token",
			want: codes.Unauthenticated, wantReason: "SESSION_NOT_FOUND",
			send: func(t *testing.T, e *luEnv, v string) (string, error) {
				_, err := polCheck(e.c, "", polCheckReq(v, "", "gatehouse.auditor", ""))
				return "", err
			}},
	}
}

// luMaxLen returns the max_len rule of a string field, 0 if it has none.
func luMaxLen(fd protoreflect.FieldDescriptor) int {
	rules, _ := proto.GetExtension(fd.Options(), validatepb.E_Field).(*validatepb.FieldRules)
	return int(rules.GetString().GetMaxLen())
}

// luBoundedFields returns the full names of the string fields with a max_len rule that the requests
// of the three services can carry, except those of RPCs pending implementation (authzPendingRPCs),
// which the tests of their implementation cover.
func luBoundedFields(t *testing.T) []string {
	t.Helper()
	seen := map[protoreflect.FullName]bool{}
	found := map[string]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			switch {
			case fd.Kind() == protoreflect.StringKind && luMaxLen(fd) > 0:
				found[string(fd.FullName())] = true
			case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
				walk(fd.Message())
			}
		}
	}
	for name, md := range authzMethods(t) {
		// NOTE: the invokers here are unary; the bounded fields of stream requests
		// (WatchEventsRequest.after) are covered by TestLiveWatchEventsBadCursor.
		if _, pending := authzPendingRPCs[name]; !pending && !md.IsStreamingServer() {
			walk(md.Input())
		}
	}
	out := make([]string, 0, len(found))
	for f := range found {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// TestStringLimitsCoverEveryBoundedField checks that TestStringLimitsCountCharacters has a case for
// every string field with a max_len rule, so that a new bounded field cannot go untested.
func TestStringLimitsCoverEveryBoundedField(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range luCases() {
		covered[c.field] = true
	}
	for _, f := range luBoundedFields(t) {
		if !covered[f] {
			t.Errorf("%s has a max_len rule but no case in luCases: add one (stored fields must read back what was sent)", f)
		}
	}
}

// TestStringLimitsCountCharacters sends every bounded string field of every request at its limit in
// multi-byte characters, and one character over it, through every front on SQLite and PostgreSQL.
func TestStringLimitsCountCharacters(t *testing.T) {
	cases := luCases()
	for i := range cases {
		c := &cases[i]
		if c.limit != 0 {
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(c.field))
		fd, ok := d.(protoreflect.FieldDescriptor)
		if err != nil || !ok || luMaxLen(fd) == 0 {
			t.Fatalf("case %s: the field has no max_len rule (%v); set the case's limit", c.field, err)
		}
		c.limit = luMaxLen(fd)
	}
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		e := &luEnv{a: a, c: c, tok: a.tok}
		for _, tc := range cases {
			t.Run(tc.rpc+"/"+tc.field[strings.LastIndexByte(tc.field, '.')+1:], func(t *testing.T) {
				a.t, e.limit = t, tc.limit
				var atLimit []string
				var over string
				if tc.ascii != nil {
					atLimit = []string{tc.ascii(e, tc.limit)}
					over = tc.ascii(e, tc.limit+1)
				} else {
					for _, u := range luUnits {
						atLimit = append(atLimit, strings.Repeat(u, tc.limit))
					}
					over = strings.Repeat(luUnits[len(luUnits)-1], tc.limit+1)
				}
				for _, v := range atLimit {
					what := fmt.Sprintf("%d characters (%d bytes) of %q", utf8.RuneCountInString(v), len(v), firstRune(v))
					got, err := tc.send(t, e, v)
					switch {
					case tc.stored && err != nil:
						t.Errorf("%s at the limit, %s: %v (reason %q), want it accepted", tc.field, what, err, testnode.Reason(err))
					case tc.stored && got != v:
						t.Errorf("%s at the limit, %s: read back %d characters (%d bytes), want the value sent", tc.field, what,
							utf8.RuneCountInString(got), len(got))
					case !tc.stored && (status.Code(err) != tc.want || (tc.wantReason != "" && testnode.Reason(err) != tc.wantReason)):
						t.Errorf("%s at the limit, %s: %v (reason %q), want %s %s", tc.field, what, err, testnode.Reason(err), tc.want, tc.wantReason)
					}
				}
				_, err := tc.send(t, e, over)
				polWantErr(t, fmt.Sprintf("%s one character over the limit (%d)", tc.field, tc.limit), err, codes.InvalidArgument, "", tc.path)
			})
		}
		a.t = t
	})
}

// TestClientAddressWithZoneIsAccepted checks that a session issuer's client address with an IPv6
// zone, which the ip rule accepts at any length, opens the session rather than failing as INTERNAL,
// and that an address of a usual length is read back as it was sent.
//
// NOTE: the proto declares no length for ip_address, so the schema has none either; the session
// domain may still shorten an unusually long address before storing it, which is why only the
// usual one is compared.
func TestClientAddressWithZoneIsAccepted(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		e := &luEnv{a: a, c: c, tok: a.tok}
		for _, addr := range []string{"fe80::1%eth0", "fe80::1%" + strings.Repeat("z", 200), "fe80::1%" + strings.Repeat("日", 100)} {
			_, username := e.user(t)
			resp, err := e.trusted(username, &gatehousev1.ClientInfo{IpAddress: addr})
			if err != nil {
				t.Errorf("a session issuer's client address of %d bytes: %v (reason %q), want it accepted", len(addr), err, testnode.Reason(err))
				continue
			}
			s, err := e.getSession(resp.Session.Id)
			got := s.GetClient().GetIpAddress()
			switch {
			case err != nil:
				t.Errorf("GetSession: %v", err)
			case len(addr) <= 64 && got != addr:
				t.Errorf("client address %q read back as %q", addr, got)
			case got == "" || !utf8.ValidString(got):
				t.Errorf("client address of %d bytes read back as %q", len(addr), got)
			}
		}
	})
}

func firstRune(s string) string {
	r, _ := utf8.DecodeRuneInString(s)
	return string(r)
}
