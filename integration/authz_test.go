package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/api"
)

// This file is the authorisation test of ARCHITECTURE.md section 9: every RPC of the three
// services against every kind of caller, with the expectations taken from the "who may call"
// columns of API.md (not from server/api/rules.go, which is what is under test).

// authzServiceFiles are the files whose services the matrix must cover completely.
var authzServiceFiles = []protoreflect.FileDescriptor{
	gatehousev1.File_gatehouse_v1_identity_proto,
	gatehousev1.File_gatehouse_v1_session_proto,
	gatehousev1.File_gatehouse_v1_policy_proto,
}

// authzPendingRPCs are the RPCs that are declared but not implemented yet. For them, and only for
// them, the matrix expects exactly UNIMPLEMENTED from the callers that pass authorisation (and
// PERMISSION_DENIED or UNAUTHENTICATED from the others, as for every RPC); any other RPC answering
// UNIMPLEMENTED fails the matrix. Remove an RPC from this list in the change that implements it:
// the matrix fails, saying so, once a listed RPC answers anything but UNIMPLEMENTED.
var authzPendingRPCs = map[string]bool{}

// authzMethods returns every method of the three services, by full gRPC method name.
func authzMethods(t *testing.T) map[string]protoreflect.MethodDescriptor {
	t.Helper()
	out := map[string]protoreflect.MethodDescriptor{}
	services := 0
	for _, f := range authzServiceFiles {
		for i := range f.Services().Len() {
			sd := f.Services().Get(i)
			services++
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				out[fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())] = md
			}
		}
	}
	if services < 3 || len(out) == 0 {
		t.Fatalf("found %d services with %d methods in the service descriptors; want IdentityService, SessionService and PolicyService", services, len(out))
	}
	return out
}

// TestEveryRPCHasARule checks that the authorisation table names every RPC: a method without a
// rule is denied to everyone, which would make a new RPC silently unusable.
func TestEveryRPCHasARule(t *testing.T) {
	for name := range authzMethods(t) {
		if _, ok := api.Rules(name); !ok {
			t.Errorf("%s has no rule in api.Rules", name)
		}
	}
}

// TestAuthzUnimplementedIsAFailure checks the matrix's own verdicts on UNIMPLEMENTED: an RPC that
// answers it is not counted as allowed (it fails the cell), and a pending RPC that answers anything
// else fails with a message telling the developer to take it off authzPendingRPCs.
func TestAuthzUnimplementedIsAFailure(t *testing.T) {
	st, err := status.New(codes.Unimplemented, "ListEvents is not implemented yet").
		WithDetails(&errdetails.ErrorInfo{Reason: "UNIMPLEMENTED", Domain: "gatehouse"})
	if err != nil {
		t.Fatal(err)
	}
	unimplemented := st.Err()
	if got, problem := authzClassify(unimplemented); problem == "" {
		t.Errorf("authzClassify(UNIMPLEMENTED) = %s with no problem, want a failure", got)
	}
	method := gatehousev1.SessionService_ListEvents_FullMethodName
	if p := authzPendingProblem(method, unimplemented); p != "" {
		t.Errorf("a pending RPC answering UNIMPLEMENTED: %s, want no problem", p)
	}
	notFound, _ := status.New(codes.NotFound, "no such thing").WithDetails(&errdetails.ErrorInfo{Reason: "EVENT_NOT_FOUND"})
	for _, answer := range []error{nil, notFound.Err()} {
		if p := authzPendingProblem(method, answer); !strings.Contains(p, "remove it from authzPendingRPCs") {
			t.Errorf("a pending RPC answering %v: problem %q, want one telling to remove it from authzPendingRPCs", answer, p)
		}
	}
}

// authzCaller is a kind of caller.
type authzCaller int

const (
	authzAnonymous     authzCaller = iota // no token
	authzUser                             // a user without roles, acting on another user
	authzSelf                             // a user without roles, acting on their own user and sessions
	authzIdentityAdmin                    // gatehouse.identity_admin
	authzAuditor                          // gatehouse.auditor
	authzSessionAdmin                     // gatehouse.session_admin
	authzPolicyAdmin                      // gatehouse.policy_admin
	authzIntrospector                     // gatehouse.introspector
	authzSessionIssuer                    // gatehouse.session_issuer
	authzImpersonator                     // gatehouse.impersonator
	authzAdmin                            // the bootstrap admin, gatehouse.admin
	authzCallerCount
)

var authzCallerNames = [authzCallerCount]string{
	"anonymous", "user", "self", "identity_admin", "auditor", "session_admin", "policy_admin",
	"introspector", "session_issuer", "impersonator", "admin",
}

func (c authzCaller) String() string { return authzCallerNames[c] }

// authzCallerRoles are the built-in roles granted to the callers that hold one (the bootstrap admin
// holds gatehouse.admin from the start).
var authzCallerRoles = map[authzCaller]string{
	authzIdentityAdmin: "gatehouse.identity_admin",
	authzAuditor:       "gatehouse.auditor",
	authzSessionAdmin:  "gatehouse.session_admin",
	authzPolicyAdmin:   "gatehouse.policy_admin",
	authzIntrospector:  "gatehouse.introspector",
	authzSessionIssuer: "gatehouse.session_issuer",
	authzImpersonator:  "gatehouse.impersonator",
}

// authzOutcome is what authorisation decides for one call.
type authzOutcome int

const (
	authzAllowed         authzOutcome = iota // any answer but UNAUTHENTICATED, PERMISSION_DENIED and UNIMPLEMENTED
	authzUnauthenticated                     // UNAUTHENTICATED
	authzDenied                              // PERMISSION_DENIED
	authzHidden                              // the answer for an id that names nothing (NOT_FOUND)
)

func (o authzOutcome) String() string {
	return [...]string{"allowed", "unauthenticated", "denied", "hidden"}[o]
}

// authzActor is one caller: a user and a session of theirs (nothing for anonymous callers).
type authzActor struct {
	caller    authzCaller
	username  string
	password  string
	userID    string
	token     string
	sessionID string
}

// authzRow is one RPC (or one form of request of an RPC whose rule depends on the request) with
// who may call it.
type authzRow struct {
	method  string // full gRPC method name
	variant string // names the form of request when an RPC has several rows
	// public: anonymous callers pass authorisation (otherwise they are unauthenticated).
	public bool
	// anyone: every authenticated caller passes.
	anyone bool
	// allow lists the authenticated callers that pass besides gatehouse.admin, which passes always.
	allow []authzCaller
	// hides names the request field holding the id of a resource that refused callers must not
	// learn exists: they get the answer for an id that names nothing, except the callers in sees,
	// who may read the resource and are told PERMISSION_DENIED.
	hides string
	sees  []authzCaller
	// endsSessions: the call ends the callers' usual sessions, so the row must run after every
	// other row of the node.
	endsSessions bool
	// req builds the request for one caller. It gets a copy of the caller that it may change: to
	// act on a new session of the caller's user (relogin) or, for the self caller, on a new user of
	// their own (freshSelf: the token is then empty and the caller is logged in after req returns,
	// so that fixtures req sets up for the new user are in place before the login).
	req func(t *testing.T, e *authzEnv, a *authzActor) proto.Message

	md protoreflect.MethodDescriptor
}

func (r *authzRow) name() string {
	n := r.method[strings.LastIndexByte(r.method, '/')+1:]
	if r.variant != "" {
		n += "_" + r.variant
	}
	return n
}

// want is the outcome API.md gives for caller c.
func (r *authzRow) want(c authzCaller) authzOutcome {
	switch {
	case c == authzAnonymous && r.public:
		return authzAllowed
	case c == authzAnonymous:
		return authzUnauthenticated
	case c == authzAdmin || r.anyone:
		return authzAllowed
	}
	if slices.Contains(r.allow, c) {
		return authzAllowed
	}
	if r.hides != "" && !slices.Contains(r.sees, c) {
		return authzHidden
	}
	return authzDenied
}

const (
	authzPassword    = "authz-password-1"
	authzNewPassword = "authz-password-2"
	authzRole        = "gatehouse.auditor" // a role every node has, for requests that name one
)

// authzRows is the matrix, from API.md's "who may call" columns.
func authzRows() []*authzRow {
	const (
		self = authzSelf
		ia   = authzIdentityAdmin
		aud  = authzAuditor
		sa   = authzSessionAdmin
		pa   = authzPolicyAdmin
		intr = authzIntrospector
		iss  = authzSessionIssuer
		imp  = authzImpersonator
	)
	return []*authzRow{
		// IdentityService.
		{method: gatehousev1.IdentityService_CreateUser_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateUserRequest{Username: e.name("user")}
			}},
		{method: gatehousev1.IdentityService_GetUser_FullMethodName, allow: []authzCaller{self, ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetUserRequest{UserId: e.target(a).userID}
			}},
		{method: gatehousev1.IdentityService_LookupUser_FullMethodName, allow: []authzCaller{ia, aud, intr},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.LookupUserRequest{Username: e.target(a).username}
			}},
		{method: gatehousev1.IdentityService_ListUsers_FullMethodName, allow: []authzCaller{ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListUsersRequest{}
			}},
		{method: gatehousev1.IdentityService_UpdateUser_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.UpdateUserRequest{
					User:       &gatehousev1.User{Id: e.targetOrNew(t, a), DisplayName: "Changed by " + a.caller.String()},
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
				}
			}},
		{method: gatehousev1.IdentityService_DeleteUser_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				e.freshSelf(t, a)
				return &gatehousev1.DeleteUserRequest{UserId: e.targetOrNew(t, a)}
			}},
		{method: gatehousev1.IdentityService_SetPassword_FullMethodName, allow: []authzCaller{self, ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				if a.caller == authzSelf {
					// The password stays the same, and the change ends the user's sessions other
					// than the caller's, so the self caller's session and password survive.
					return &gatehousev1.SetPasswordRequest{UserId: a.userID, NewPassword: a.password, CurrentPassword: a.password}
				}
				return &gatehousev1.SetPasswordRequest{UserId: e.newUser(t, false).userID, NewPassword: authzNewPassword}
			}},
		{method: gatehousev1.IdentityService_CreateGroup_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateGroupRequest{Name: e.name("group")}
			}},
		{method: gatehousev1.IdentityService_GetGroup_FullMethodName, allow: []authzCaller{ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetGroupRequest{GroupId: e.group}
			}},
		{method: gatehousev1.IdentityService_ListGroups_FullMethodName, allow: []authzCaller{ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListGroupsRequest{}
			}},
		{method: gatehousev1.IdentityService_DeleteGroup_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.DeleteGroupRequest{GroupId: e.newGroup(t)}
			}},
		{method: gatehousev1.IdentityService_AddGroupMember_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.AddGroupMemberRequest{GroupId: e.newGroup(t), UserId: e.target(a).userID}
			}},
		{method: gatehousev1.IdentityService_RemoveGroupMember_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				g, u := e.newGroup(t), e.target(a).userID
				e.addMember(t, g, u)
				return &gatehousev1.RemoveGroupMemberRequest{GroupId: g, UserId: u}
			}},
		{method: gatehousev1.IdentityService_ListGroupMembers_FullMethodName, allow: []authzCaller{ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListGroupMembersRequest{GroupId: e.group}
			}},
		{method: gatehousev1.IdentityService_ListUserGroups_FullMethodName, allow: []authzCaller{self, ia, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListUserGroupsRequest{UserId: e.target(a).userID}
			}},
		{method: gatehousev1.IdentityService_CreateRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateRoleRequest{Name: e.name("role")}
			}},
		{method: gatehousev1.IdentityService_GetRole_FullMethodName, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetRoleRequest{Name: authzRole}
			}},
		{method: gatehousev1.IdentityService_ListRoles_FullMethodName, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListRolesRequest{}
			}},
		{method: gatehousev1.IdentityService_DeleteRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.DeleteRoleRequest{Name: e.newRole(t)}
			}},
		{method: gatehousev1.IdentityService_AddContainedRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.AddContainedRoleRequest{Role: e.newRole(t), ContainedRole: e.newRole(t)}
			}},
		{method: gatehousev1.IdentityService_RemoveContainedRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				inner := e.newRole(t)
				return &gatehousev1.RemoveContainedRoleRequest{Role: e.newRole(t, inner), ContainedRole: inner}
			}},
		{method: gatehousev1.IdentityService_GrantRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GrantRoleRequest{Role: e.newRole(t), Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: e.targetOrNew(t, a)}}
			}},
		{method: gatehousev1.IdentityService_RevokeRole_FullMethodName, allow: []authzCaller{ia},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				e.freshSelf(t, a)
				role, u := e.newRole(t), e.targetOrNew(t, a)
				e.grant(t, role, u)
				return &gatehousev1.RevokeRoleRequest{Role: role, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: u}}
			}},
		{method: gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName, allow: []authzCaller{self, ia, aud, intr},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetEffectiveRolesRequest{UserId: e.target(a).userID}
			}},

		// SessionService.
		{method: gatehousev1.SessionService_CreateSession_FullMethodName, variant: "password", public: true, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateSessionRequest{
					Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{
						Username: e.victim.username, Password: e.victim.password,
					}},
					Type: gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
				}
			}},
		{method: gatehousev1.SessionService_CreateSession_FullMethodName, variant: "trusted", allow: []authzCaller{iss},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateSessionRequest{
					Credential: &gatehousev1.CreateSessionRequest_Trusted{Trusted: &gatehousev1.TrustedCredential{Username: e.victim.username}},
					Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
				}
			}},
		{method: gatehousev1.SessionService_CreateSession_FullMethodName, variant: "impersonate", allow: []authzCaller{imp},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateSessionRequest{
					Credential: &gatehousev1.CreateSessionRequest_Impersonate{Impersonate: &gatehousev1.ImpersonateCredential{
						Username: e.victim.username, Reason: "authz matrix",
					}},
					Type: gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
				}
			}},
		{method: gatehousev1.SessionService_ValidateSession_FullMethodName, public: true, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ValidateSessionRequest{Token: e.heldToken(a)}
			}},
		{method: gatehousev1.SessionService_GetSession_FullMethodName, allow: []authzCaller{self, sa, aud}, hides: "session_id",
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetSessionRequest{SessionId: e.target(a).sessionID}
			}},
		{method: gatehousev1.SessionService_ListSessions_FullMethodName, variant: "user_id", allow: []authzCaller{self, sa, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListSessionsRequest{UserId: e.target(a).userID}
			}},
		{method: gatehousev1.SessionService_ListSessions_FullMethodName, variant: "own", anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListSessionsRequest{}
			}},
		{method: gatehousev1.SessionService_TerminateSession_FullMethodName, allow: []authzCaller{self, sa}, hides: "session_id", sees: []authzCaller{aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				if a.caller == authzSelf {
					// The caller ends a session of their own: a new one, so that their usual
					// session survives.
					e.relogin(t, a)
					return &gatehousev1.TerminateSessionRequest{SessionId: a.sessionID, Note: "authz"}
				}
				// Another user's session: one that no other row uses. Once an allowed caller has
				// ended it, ending it again changes nothing, and the owner check still applies.
				return &gatehousev1.TerminateSessionRequest{SessionId: e.victimSpare, Note: "authz"}
			}},
		{method: gatehousev1.SessionService_TerminateUserSessions_FullMethodName, allow: []authzCaller{self, sa},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				e.freshSelf(t, a)
				return &gatehousev1.TerminateUserSessionsRequest{UserId: e.targetOrNew(t, a), Note: "authz"}
			}},
		{method: gatehousev1.SessionService_WatchSession_FullMethodName, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.WatchSessionRequest{}
			}},
		{method: gatehousev1.SessionService_WatchEvents_FullMethodName, allow: []authzCaller{sa, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				// From a cursor with events after it, so that an allowed stream sends at once.
				return &gatehousev1.WatchEventsRequest{After: e.cursor}
			}},
		{method: gatehousev1.SessionService_ListEvents_FullMethodName, allow: []authzCaller{aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListEventsRequest{PageSize: 10}
			}},

		// PolicyService.
		{method: gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, allow: []authzCaller{pa},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
					Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: e.targetOrNew(t, a)}},
					IdleTimeout: durationpb.New(time.Hour),
				}}
			}},
		{method: gatehousev1.PolicyService_GetSessionPolicy_FullMethodName, allow: []authzCaller{pa, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.GetSessionPolicyRequest{PolicyId: e.policy}
			}},
		{method: gatehousev1.PolicyService_ListSessionPolicies_FullMethodName, allow: []authzCaller{pa, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ListSessionPoliciesRequest{}
			}},
		{method: gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, allow: []authzCaller{pa},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.UpdateSessionPolicyRequest{
					Policy:     &gatehousev1.SessionPolicy{Id: e.newPolicy(t), IdleTimeout: durationpb.New(2 * time.Hour)},
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"idle_timeout"}},
				}
			}},
		{method: gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName, allow: []authzCaller{pa},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.DeleteSessionPolicyRequest{PolicyId: e.newPolicy(t)}
			}},
		{method: gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, allow: []authzCaller{self, pa, aud},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.ResolveSessionPolicyRequest{UserId: e.target(a).userID}
			}},
		{method: gatehousev1.PolicyService_Check_FullMethodName, variant: "token", public: true, anyone: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CheckRequest{
					Subject:     &gatehousev1.CheckRequest_Token{Token: e.heldToken(a)},
					Requirement: &gatehousev1.CheckRequest_Role{Role: authzRole},
				}
			}},
		// By user id even for oneself: the proto says "introspectors only"; a session checks
		// itself by its token.
		{method: gatehousev1.PolicyService_Check_FullMethodName, variant: "user_id", allow: []authzCaller{intr},
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.CheckRequest{
					Subject:     &gatehousev1.CheckRequest_UserId{UserId: e.target(a).userID},
					Requirement: &gatehousev1.CheckRequest_Role{Role: authzRole},
				}
			}},

		// Last: it ends every caller's usual session.
		{method: gatehousev1.SessionService_Logout_FullMethodName, anyone: true, endsSessions: true,
			req: func(t *testing.T, e *authzEnv, a *authzActor) proto.Message {
				return &gatehousev1.LogoutRequest{}
			}},
	}
}

// authzMatrix returns the rows with their method descriptors, failing if an RPC of the three
// services has no row or a row names no RPC.
func authzMatrix(t *testing.T) []*authzRow {
	t.Helper()
	methods := authzMethods(t)
	rows := authzRows()
	covered := map[string]bool{}
	names := map[string]bool{}
	for i, r := range rows {
		if i > 0 && rows[i-1].endsSessions && !r.endsSessions {
			t.Fatalf("row %s comes after %s, which ends the callers' sessions", r.name(), rows[i-1].name())
		}
		md, ok := methods[r.method]
		if !ok {
			t.Fatalf("row %s names no RPC of the three services", r.name())
		}
		if names[r.name()] {
			t.Fatalf("two rows are named %s", r.name())
		}
		names[r.name()] = true
		r.md = md
		covered[r.method] = true
	}
	for m := range methods {
		if !covered[m] {
			t.Errorf("%s has no row in the authorisation matrix: add one with its callers from API.md", m)
		}
	}
	for m := range authzPendingRPCs {
		if _, ok := methods[m]; !ok {
			t.Errorf("authzPendingRPCs lists %s, which is no RPC of the three services", m)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return rows
}

// TestAuthorizationMatrix calls every RPC as every kind of caller and checks that authorisation
// decides as API.md says: through native gRPC, Connect and REST on SQLite, and native gRPC on
// PostgreSQL. Subtests are named backend/protocol/RPC/caller.
func TestAuthorizationMatrix(t *testing.T) {
	rows := authzMatrix(t)
	for _, f := range []struct {
		backend  testnode.Backend
		protocol testnode.Protocol
	}{
		{testnode.SQLite, testnode.GRPC},
		{testnode.SQLite, testnode.Connect},
		{testnode.SQLite, testnode.REST},
		{testnode.Postgres, testnode.GRPC},
	} {
		t.Run(string(f.backend)+"/"+string(f.protocol), func(t *testing.T) {
			t.Parallel()
			e := newAuthzEnv(t, f.backend, f.protocol)
			for _, r := range rows {
				t.Run(r.name(), func(t *testing.T) {
					for c := range authzCallerCount {
						t.Run(c.String(), func(t *testing.T) { e.check(t, r, c) })
					}
				})
			}
		})
	}
}

// authzEnv is one node with its callers and shared fixtures. Its subtests run one at a time.
type authzEnv struct {
	protocol testnode.Protocol
	node     *testnode.Node
	setup    testnode.Invoker // native gRPC, for fixtures and logins
	client   testnode.Invoker // the front under test
	grpcConn *grpc.ClientConn // for native gRPC streams
	http     *http.Client

	admin  string // the bootstrap admin's token, for fixtures
	actors [authzCallerCount]*authzActor
	victim *authzActor // the other user that callers act on; never a caller
	// victimSpare is another session of the victim's, for TerminateSession.
	victimSpare string
	group       string // a group with the victim as its member
	policy      string // a policy
	cursor      string // an event cursor with events after it
	seq         int

	lastToken string // the consistency token of the last user created
}

func newAuthzEnv(t *testing.T, b testnode.Backend, p testnode.Protocol) *authzEnv {
	t.Helper()
	n := testnode.Start(t, b)
	e := &authzEnv{protocol: p, node: n, setup: n.Client(testnode.GRPC), http: testnode.HTTPClient()}
	e.client = e.setup
	if p != testnode.GRPC {
		e.client = n.Client(p)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dialling gRPC: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e.grpcConn = conn

	// The admin's fixture session is not the admin caller's, which the last rows end.
	admin := &authzActor{caller: authzAdmin, username: "admin", password: testnode.AdminPassword}
	e.login(t, admin)
	e.admin = admin.token
	e.login(t, admin)
	e.actors[authzAdmin] = admin
	e.actors[authzAnonymous] = &authzActor{caller: authzAnonymous}

	e.victim = e.newUser(t, true)
	e.cursor = e.lastToken
	spare := *e.victim
	e.login(t, &spare)
	e.victimSpare = spare.sessionID
	e.login(t, e.victim)
	for c := authzUser; c < authzAdmin; c++ {
		a := e.newUser(t, true)
		a.caller = c
		var want []string
		if role, ok := authzCallerRoles[c]; ok {
			e.grant(t, role, a.userID)
			want = []string{role}
		}
		if got := e.login(t, a); !slices.Equal(got, want) {
			t.Fatalf("the %s caller's session has roles %v, want %v", c, got, want)
		}
		e.actors[c] = a
	}
	e.group = e.newGroup(t)
	e.addMember(t, e.group, e.victim.userID)
	e.policy = e.newPolicy(t)
	return e
}

// check runs one cell of the matrix.
func (e *authzEnv) check(t *testing.T, r *authzRow, c authzCaller) {
	a := *e.actors[c]
	req := r.req(t, e, &a)
	if c != authzAnonymous && a.token == "" {
		e.login(t, &a)
	}
	want := r.want(c)
	err := e.call(r.md, r.method, a.token, req)
	if authzPendingRPCs[r.method] && want == authzAllowed {
		if problem := authzPendingProblem(r.method, err); problem != "" {
			t.Errorf("%s as %s: %s", r.name(), c, problem)
		}
		return
	}
	if want == authzHidden {
		e.checkHidden(t, r, c, a.token, req, err)
		return
	}
	got, problem := authzClassify(err)
	switch {
	case problem != "":
		t.Fatalf("%s as %s (want %s): %s", r.name(), c, want, problem)
	case got == want:
	default:
		t.Errorf("%s as %s: got %s (%v), want %s", r.name(), c, got, err, want)
	}
}

// checkHidden checks that a refused caller got, for a resource that exists, the very answer it gets
// for an id that names nothing: NOT_FOUND with the same reason and the same message (but for the id).
func (e *authzEnv) checkHidden(t *testing.T, r *authzRow, c authzCaller, token string, req proto.Message, err error) {
	t.Helper()
	fd := req.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(r.hides))
	if fd == nil {
		t.Fatalf("%s: the request has no field %s", r.name(), r.hides)
	}
	id := req.ProtoReflect().Get(fd).String()
	unknown := proto.Clone(req)
	unknownID := authzUUID()
	unknown.ProtoReflect().Set(fd, protoreflect.ValueOfString(unknownID))
	uerr := e.call(r.md, r.method, token, unknown)
	got, want := status.Convert(err), status.Convert(uerr)
	if want.Code() != codes.NotFound {
		t.Fatalf("%s as %s with an id that names nothing: %v, want NOT_FOUND", r.name(), c, uerr)
	}
	gm, wm := strings.ReplaceAll(got.Message(), id, "ID"), strings.ReplaceAll(want.Message(), unknownID, "ID")
	if got.Code() != want.Code() || testnode.Reason(err) != testnode.Reason(uerr) || gm != wm {
		t.Errorf("%s as %s: got %s %q (reason %q) for an existing resource, but %s %q (reason %q) for an id that names nothing: "+
			"a refused caller must not learn that the resource exists", r.name(), c, got.Code(), gm, testnode.Reason(err),
			want.Code(), wm, testnode.Reason(uerr))
	}
}

// authzPendingProblem explains why the answer of a pending RPC (authzPendingRPCs) to a caller that
// passes authorisation is wrong: "" for UNIMPLEMENTED, the one answer a pending RPC may give.
func authzPendingProblem(method string, err error) string {
	if status.Code(err) == codes.Unimplemented {
		return ""
	}
	answer := "OK"
	if err != nil {
		answer = err.Error()
	}
	return fmt.Sprintf("%s is listed in authzPendingRPCs but answered %s, not UNIMPLEMENTED: if it is implemented now, "+
		"remove it from authzPendingRPCs (integration/authz_test.go) so that the matrix checks it as every other RPC", method, answer)
}

// authzClassify turns the answer of a call into an outcome, or explains why the answer says
// nothing about authorisation.
func authzClassify(err error) (authzOutcome, string) {
	if err == nil {
		return authzAllowed, ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return 0, "the call failed without a status: " + err.Error()
	}
	switch st.Code() {
	case codes.Unauthenticated:
		return authzUnauthenticated, ""
	case codes.PermissionDenied:
		return authzDenied, ""
	case codes.InvalidArgument:
		// Requests are validated before they are authorised: a request that fails validation
		// (reason INVALID_ARGUMENT, or no reason when the REST gateway rejects it) never reaches
		// authorisation. A domain reason (a handler's own check) comes after it.
		if r := testnode.Reason(err); r == "" || r == "INVALID_ARGUMENT" {
			return 0, fmt.Sprintf("the request is invalid, so authorisation was not reached: %v", err)
		}
	case codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.Canceled, codes.Unavailable:
		return 0, fmt.Sprintf("the call failed without an authorisation decision: %v", err)
	case codes.Unimplemented:
		// NOTE: an unimplemented handler says nothing about who may call the RPC, and the RPC is
		// not usable; only the RPCs of authzPendingRPCs may answer so (check handles them).
		return 0, fmt.Sprintf("UNIMPLEMENTED is not an answer of a working RPC: implement it, or list it in authzPendingRPCs while it is pending: %v", err)
	}
	// Every error of the service carries an ErrorInfo reason (API.md); one without came from
	// elsewhere (an unknown gRPC method, a REST route that did not match) and proves nothing.
	if testnode.Reason(err) == "" {
		return 0, fmt.Sprintf("the error has no ErrorInfo reason, so it did not come from the service: %v", err)
	}
	return authzAllowed, ""
}

// call invokes a unary RPC, or opens a server stream and reads its first message, through the
// front under test.
func (e *authzEnv) call(md protoreflect.MethodDescriptor, method, token string, req proto.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if md.IsStreamingServer() {
		return e.firstOfStream(ctx, cancel, md, method, token, req)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return err
	}
	return e.client.Invoke(ctx, method, token, req, mt.New().Interface())
}

// firstOfStream opens a server stream and waits for its first message or its end. A message or a
// clean end is nil; the stream is then cancelled.
func (e *authzEnv) firstOfStream(ctx context.Context, cancel context.CancelFunc, md protoreflect.MethodDescriptor, method, token string, req proto.Message) error {
	switch e.protocol {
	case testnode.GRPC:
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		s, err := e.grpcConn.NewStream(ctx, &grpc.StreamDesc{StreamName: string(md.Name()), ServerStreams: true}, method)
		if err != nil {
			return err
		}
		if err := s.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if err := s.CloseSend(); err != nil {
			return err
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		if err != nil {
			return err
		}
		if err := s.RecvMsg(mt.New().Interface()); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	case testnode.Connect:
		switch method {
		case gatehousev1connect.SessionServiceWatchSessionProcedure:
			c := connect.NewClient[gatehousev1.WatchSessionRequest, gatehousev1.WatchSessionResponse](e.http, e.node.BaseURL()+method, connect.WithProtoJSON())
			r := connect.NewRequest(req.(*gatehousev1.WatchSessionRequest))
			authzBearer(r.Header(), token)
			s, err := c.CallServerStream(ctx, r)
			return authzConnectFirst(cancel, s, err)
		case gatehousev1connect.SessionServiceWatchEventsProcedure:
			c := connect.NewClient[gatehousev1.WatchEventsRequest, gatehousev1.WatchEventsResponse](e.http, e.node.BaseURL()+method, connect.WithProtoJSON())
			r := connect.NewRequest(req.(*gatehousev1.WatchEventsRequest))
			authzBearer(r.Header(), token)
			s, err := c.CallServerStream(ctx, r)
			return authzConnectFirst(cancel, s, err)
		}
		return fmt.Errorf("no Connect streaming client for %s", method)
	case testnode.REST:
		return e.restFirst(ctx, md, token, req)
	}
	return fmt.Errorf("unknown protocol %s", e.protocol)
}

func authzBearer(h http.Header, token string) {
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
}

// authzConnectFirst reads the first message of a Connect server stream.
func authzConnectFirst[T any](cancel context.CancelFunc, s *connect.ServerStreamForClient[T], err error) error {
	if err != nil {
		return authzConnectStatus(err)
	}
	got := s.Receive()
	// NOTE: Close drains the response body, so a live stream is cancelled first.
	cancel()
	defer func() { _ = s.Close() }()
	if got {
		return nil
	}
	if err := s.Err(); err != nil {
		return authzConnectStatus(err)
	}
	return nil
}

// authzConnectStatus turns a Connect error into a gRPC status error with the same details.
func authzConnectStatus(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	st := &spb.Status{Code: int32(ce.Code()), Message: ce.Message()}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if a, err := anypb.New(v); err == nil {
				st.Details = append(st.Details, a)
			}
		}
	}
	return status.ErrorProto(st)
}

// restFirst opens a REST server stream (grpc-gateway's newline-delimited {"result": ...} and
// {"error": ...} chunks) and reads its first chunk.
func (e *authzEnv) restFirst(ctx context.Context, md protoreflect.MethodDescriptor, token string, req proto.Message) error {
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	path := rule.GetGet()
	if path == "" || strings.Contains(path, "{") {
		return fmt.Errorf("%s: only GET streams without path parameters are supported here", md.FullName())
	}
	q := url.Values{}
	var qerr error
	req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.StringKind || fd.IsList() {
			qerr = fmt.Errorf("%s: only string query parameters are supported here", fd.FullName())
			return false
		}
		q.Set(string(fd.Name()), v.String())
		return true
	})
	if qerr != nil {
		return qerr
	}
	u := e.node.BaseURL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	authzBearer(hreq.Header, token)
	resp, err := e.http.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	line = bytes.TrimSpace(line)
	if resp.StatusCode != http.StatusOK {
		st, err := authzRESTStatus(line)
		if err != nil {
			return fmt.Errorf("HTTP %d with a body that is not a status: %s", resp.StatusCode, line)
		}
		if want := testnode.HTTPStatus(codes.Code(st.Code)); want != resp.StatusCode {
			return fmt.Errorf("HTTP %d for gRPC code %s, want HTTP %d", resp.StatusCode, codes.Code(st.Code), want)
		}
		return status.ErrorProto(st)
	}
	if len(line) == 0 {
		return nil // the stream ended cleanly without a message
	}
	var chunk map[string]json.RawMessage
	if err := json.Unmarshal(line, &chunk); err != nil {
		return fmt.Errorf("stream chunk %s: %v", line, err)
	}
	if _, ok := chunk["result"]; ok {
		return nil
	}
	if _, ok := chunk["error"]; ok {
		st, err := authzRESTStatus(line)
		if err != nil {
			return fmt.Errorf("stream error chunk %s: %v", line, err)
		}
		return status.ErrorProto(st)
	}
	return fmt.Errorf("unexpected stream chunk %s", line)
}

// authzRESTStatus decodes an error body: a bare status or a stream's {"error": status}.
func authzRESTStatus(b []byte) (*spb.Status, error) {
	var chunk map[string]json.RawMessage
	if err := json.Unmarshal(b, &chunk); err != nil {
		return nil, err
	}
	if inner, ok := chunk["error"]; ok {
		b = inner
	}
	st := &spb.Status{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, st); err != nil {
		return nil, err
	}
	return st, nil
}

// --- callers and targets ---

// target is the user (and session) a caller acts on: their own for the self caller, the victim for
// everyone else.
func (e *authzEnv) target(a *authzActor) *authzActor {
	if a.caller == authzSelf {
		return a
	}
	return e.victim
}

// targetOrNew is the user a caller changes: their own for the self caller, a new user for everyone
// else, so that allowed changes touch nothing another row needs.
func (e *authzEnv) targetOrNew(t *testing.T, a *authzActor) string {
	if a.caller == authzSelf {
		return a.userID
	}
	return e.newUser(t, false).userID
}

// freshSelf turns the self caller into a new user of their own (logged in after the request is
// built), for calls that would change or end the usual self caller. It reports whether it did.
func (e *authzEnv) freshSelf(t *testing.T, a *authzActor) bool {
	if a.caller != authzSelf {
		return false
	}
	n := e.newUser(t, true)
	a.username, a.password, a.userID, a.token, a.sessionID = n.username, n.password, n.userID, "", ""
	return true
}

// heldToken is a token the caller holds: their own for the self caller, the victim's for everyone
// else.
func (e *authzEnv) heldToken(a *authzActor) string { return e.target(a).token }

// relogin gives a (a copy of a caller) a new session, for calls that end the caller's session.
func (e *authzEnv) relogin(t *testing.T, a *authzActor) {
	t.Helper()
	if a.username != "" { // anonymous callers have no session to renew
		e.login(t, a)
	}
}

// login gives a a new session and returns the session's roles.
func (e *authzEnv) login(t *testing.T, a *authzActor) []string {
	t.Helper()
	resp := testnode.Login(t, e.setup, a.username, a.password)
	a.userID, a.token, a.sessionID = resp.User.Id, resp.Token, resp.Session.Id
	return resp.Roles
}

// --- fixtures, made by the bootstrap admin through native gRPC ---

func (e *authzEnv) name(kind string) string {
	e.seq++
	return fmt.Sprintf("authz-%s-%d", kind, e.seq)
}

// newUser creates a user without roles, with a password when withPassword (logins cost argon2id
// work, so users that never log in have none).
func (e *authzEnv) newUser(t *testing.T, withPassword bool) *authzActor {
	t.Helper()
	a := &authzActor{caller: authzUser, username: e.name("user")}
	req := &gatehousev1.CreateUserRequest{Username: a.username}
	if withPassword {
		a.password, req.Password = authzPassword, authzPassword
	}
	resp := testnode.MustCall[gatehousev1.CreateUserResponse](t, e.setup, gatehousev1.IdentityService_CreateUser_FullMethodName, e.admin, req)
	a.userID = resp.User.Id
	e.lastToken = resp.ConsistencyToken
	return a
}

func (e *authzEnv) newGroup(t *testing.T) string {
	t.Helper()
	return testnode.MustCall[gatehousev1.CreateGroupResponse](t, e.setup, gatehousev1.IdentityService_CreateGroup_FullMethodName, e.admin,
		&gatehousev1.CreateGroupRequest{Name: e.name("group")}).Group.Id
}

func (e *authzEnv) addMember(t *testing.T, group, user string) {
	t.Helper()
	testnode.MustCall[gatehousev1.AddGroupMemberResponse](t, e.setup, gatehousev1.IdentityService_AddGroupMember_FullMethodName, e.admin,
		&gatehousev1.AddGroupMemberRequest{GroupId: group, UserId: user})
}

func (e *authzEnv) newRole(t *testing.T, contains ...string) string {
	t.Helper()
	return testnode.MustCall[gatehousev1.CreateRoleResponse](t, e.setup, gatehousev1.IdentityService_CreateRole_FullMethodName, e.admin,
		&gatehousev1.CreateRoleRequest{Name: e.name("role"), Contains: contains}).Role.Name
}

func (e *authzEnv) grant(t *testing.T, role, user string) {
	t.Helper()
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, e.setup, gatehousev1.IdentityService_GrantRole_FullMethodName, e.admin,
		&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: user}})
}

// newPolicy creates a policy scoped to a new user.
func (e *authzEnv) newPolicy(t *testing.T) string {
	t.Helper()
	return testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, e.setup,
		gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, e.admin,
		&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
			Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: e.newUser(t, false).userID}},
			IdleTimeout: durationpb.New(time.Hour),
		}}).Policy.Id
}

// authzUUID returns a random (version 4) UUID.
func authzUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
