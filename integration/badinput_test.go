package integration_test

import (
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/store"
)

// unknownID is a well-formed UUID (version 7) that no resource has.
const unknownID = "01900000-0000-7000-8000-000000000000"

// badCase is one bad request sent as raw JSON to the REST facade as the administrator.
type badCase struct {
	name   string
	method string
	// path is the URL path with its query, relative to the node's base URL.
	path string
	// body is the raw request body; "" sends none.
	body     string
	wantCode codes.Code
	wantHTTP int
	// wantFields are the BadRequest field violations (proto field paths) of an INVALID_ARGUMENT,
	// in any order. Nil for errors that name no field.
	wantFields []string
	// wantReason is the ErrorInfo reason; "" skips the check (INVALID_ARGUMENT cases check it only
	// when the reason is specific).
	wantReason string
	// loginFailed marks a login with bad credentials: it appends exactly one LOGIN_FAILED event
	// by design, and changes nothing else.
	loginFailed bool
}

// badInputFixture is the state the bad requests run against.
type badInputFixture struct {
	alice, bob, ops string // ids
}

func invalid(name, method, path, body string, fields ...string) badCase {
	return badCase{name: name, method: method, path: path, body: body,
		wantCode: codes.InvalidArgument, wantHTTP: http.StatusBadRequest, wantFields: fields}
}

func failed(name, method, path, body string, code codes.Code, httpStatus int, reason string) badCase {
	return badCase{name: name, method: method, path: path, body: body,
		wantCode: code, wantHTTP: httpStatus, wantReason: reason}
}

func (c badCase) withReason(r string) badCase { c.wantReason = r; return c }

func badInputCases(f badInputFixture) []badCase {
	const (
		post, get, put, patch, del = http.MethodPost, http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete
		notFound, conflict, bad    = http.StatusNotFound, http.StatusConflict, http.StatusBadRequest
	)
	long := func(n int) string { return strings.Repeat("x", n) }
	login := func(extra string) string {
		return `{"password": {"username": "alice", "password": "alice-password"}` + extra + `}`
	}
	return []badCase{
		// CreateUser: validation.
		invalid("CreateUser/empty body", post, "/v1/users", "", "username"),
		invalid("CreateUser/no username", post, "/v1/users", `{}`, "username"),
		invalid("CreateUser/empty username", post, "/v1/users", `{"username": ""}`, "username").withReason("INVALID_ARGUMENT"),
		invalid("CreateUser/username of 65 chars", post, "/v1/users", `{"username": "`+long(65)+`"}`, "username"),
		invalid("CreateUser/malformed username", post, "/v1/users", `{"username": "bad name!"}`, "username"),
		invalid("CreateUser/malformed email", post, "/v1/users", `{"username": "carol", "email": "not-an-email"}`, "email"),
		invalid("CreateUser/email of 255 chars", post, "/v1/users", `{"username": "carol", "email": "`+long(243)+`@example.com"}`, "email"),
		invalid("CreateUser/display name of 257 chars", post, "/v1/users", `{"username": "carol", "displayName": "`+long(257)+`"}`, "display_name"),
		invalid("CreateUser/password too short", post, "/v1/users", `{"username": "carol", "password": "short"}`, "password"),
		invalid("CreateUser/password of 257 chars", post, "/v1/users", `{"username": "carol", "password": "`+long(257)+`"}`, "password"),
		invalid("CreateUser/two violations", post, "/v1/users", `{"username": "bad name!", "email": "nope"}`, "username", "email"),
		invalid("CreateUser/number for string", post, "/v1/users", `{"username": 123}`, "username"),
		invalid("CreateUser/string for bool", post, "/v1/users", `{"username": "carol", "disabled": "yes"}`, "disabled"),
		invalid("CreateUser/malformed JSON", post, "/v1/users", `{"username": "carol"`),
		invalid("CreateUser/JSON array body", post, "/v1/users", `["carol"]`),
		failed("CreateUser/username taken in other case", post, "/v1/users", `{"username": "ALICE", "password": "another-password"}`, codes.AlreadyExists, conflict, "USERNAME_TAKEN"),

		// Users: reads and ids.
		invalid("GetUser/malformed id", get, "/v1/users/not-a-uuid", "", "user_id"),
		failed("GetUser/unknown id", get, "/v1/users/"+unknownID, "", codes.NotFound, notFound, "USER_NOT_FOUND"),
		invalid("LookupUser/malformed username", get, "/v1/users:lookup?username="+url.QueryEscape("bad name!"), "", "username"),
		failed("LookupUser/unknown username", get, "/v1/users:lookup?username=nobody", "", codes.NotFound, notFound, "USER_NOT_FOUND"),
		invalid("ListUsers/page_size 5000", get, "/v1/users?pageSize=5000", "", "page_size"),
		invalid("ListUsers/negative page_size", get, "/v1/users?pageSize=-1", "", "page_size"),
		invalid("ListUsers/non-numeric page_size", get, "/v1/users?pageSize=lots", "", "page_size"),
		invalid("ListUsers/bad page_token", get, "/v1/users?pageToken=garbage", "", "page_token").withReason("INVALID_PAGE_TOKEN"),
		invalid("ListUsers/malformed group_id", get, "/v1/users?groupId=not-a-uuid", "", "group_id"),
		invalid("DeleteUser/malformed id", del, "/v1/users/not-a-uuid", "", "user_id"),
		failed("DeleteUser/unknown id", del, "/v1/users/"+unknownID, "", codes.NotFound, notFound, "USER_NOT_FOUND"),
		invalid("ListUserGroups/malformed id", get, "/v1/users/not-a-uuid/groups", "", "user_id"),
		failed("ListUserGroups/unknown id", get, "/v1/users/"+unknownID+"/groups", "", codes.NotFound, notFound, "USER_NOT_FOUND"),

		// UpdateUser.
		invalid("UpdateUser/unknown update_mask path", patch, "/v1/users/"+f.alice+"?updateMask=bogus", `{"displayName": "Alice"}`, "update_mask").withReason("INVALID_UPDATE_MASK"),
		invalid("UpdateUser/unknown field in mask", patch, "/v1/users/"+f.alice+"?update_mask=no_such_field", `{"displayName": "X"}`, "update_mask").withReason("INVALID_UPDATE_MASK"),
		invalid("UpdateUser/malformed email", patch, "/v1/users/"+f.alice, `{"email": "not-an-email"}`, "user.email"),
		invalid("UpdateUser/malformed username", patch, "/v1/users/"+f.alice, `{"username": "bad name!"}`, "user.username"),
		invalid("UpdateUser/username of 65 chars", patch, "/v1/users/"+f.alice, `{"username": "`+long(65)+`"}`, "user.username"),
		invalid("UpdateUser/display name of 257 chars", patch, "/v1/users/"+f.alice, `{"displayName": "`+long(257)+`"}`, "user.display_name"),
		invalid("UpdateUser/empty username under mask", patch, "/v1/users/"+f.alice+"?updateMask=username", `{"username": ""}`, "user.username"),
		invalid("UpdateUser/string for bool", patch, "/v1/users/"+f.alice, `{"disabled": "yes"}`, "user.disabled"),
		invalid("UpdateUser/malformed JSON", patch, "/v1/users/"+f.alice, `{"displayName": `),
		invalid("UpdateUser/malformed id", patch, "/v1/users/not-a-uuid", `{"displayName": "X"}`, "user.id"),
		failed("UpdateUser/unknown id", patch, "/v1/users/"+unknownID, `{"displayName": "X"}`, codes.NotFound, notFound, "USER_NOT_FOUND"),
		failed("UpdateUser/username taken in other case", patch, "/v1/users/"+f.bob, `{"username": "Alice"}`, codes.AlreadyExists, conflict, "USERNAME_TAKEN"),

		// SetPassword.
		invalid("SetPassword/too short", post, "/v1/users/"+f.alice+":setPassword", `{"newPassword": "short"}`, "new_password"),
		invalid("SetPassword/missing", post, "/v1/users/"+f.alice+":setPassword", `{}`, "new_password"),
		invalid("SetPassword/malformed id", post, "/v1/users/not-a-uuid:setPassword", `{"newPassword": "long-enough-password"}`, "user_id"),
		failed("SetPassword/unknown id", post, "/v1/users/"+unknownID+":setPassword", `{"newPassword": "long-enough-password"}`, codes.NotFound, notFound, "USER_NOT_FOUND"),

		// Groups.
		invalid("CreateGroup/empty name", post, "/v1/groups", `{"name": ""}`, "name"),
		invalid("CreateGroup/malformed name", post, "/v1/groups", `{"name": "bad name!"}`, "name"),
		invalid("CreateGroup/name of 65 chars", post, "/v1/groups", `{"name": "`+long(65)+`"}`, "name"),
		invalid("CreateGroup/description of 1025 chars", post, "/v1/groups", `{"name": "dev", "description": "`+long(1025)+`"}`, "description"),
		invalid("CreateGroup/number for string", post, "/v1/groups", `{"name": 7}`, "name"),
		failed("CreateGroup/name taken in other case", post, "/v1/groups", `{"name": "OPS"}`, codes.AlreadyExists, conflict, "GROUP_NAME_TAKEN"),
		invalid("GetGroup/malformed id", get, "/v1/groups/not-a-uuid", "", "group_id"),
		failed("GetGroup/unknown id", get, "/v1/groups/"+unknownID, "", codes.NotFound, notFound, "GROUP_NOT_FOUND"),
		invalid("ListGroups/page_size 5000", get, "/v1/groups?pageSize=5000", "", "page_size"),
		invalid("ListGroups/bad page_token", get, "/v1/groups?pageToken=garbage", "", "page_token").withReason("INVALID_PAGE_TOKEN"),
		invalid("DeleteGroup/malformed id", del, "/v1/groups/not-a-uuid", "", "group_id"),
		failed("DeleteGroup/unknown id", del, "/v1/groups/"+unknownID, "", codes.NotFound, notFound, "GROUP_NOT_FOUND"),
		invalid("AddGroupMember/malformed user id", put, "/v1/groups/"+f.ops+"/members/not-a-uuid", `{}`, "user_id"),
		invalid("AddGroupMember/malformed group id", put, "/v1/groups/not-a-uuid/members/"+f.alice, `{}`, "group_id"),
		failed("AddGroupMember/unknown user", put, "/v1/groups/"+f.ops+"/members/"+unknownID, `{}`, codes.NotFound, notFound, "USER_NOT_FOUND"),
		failed("AddGroupMember/unknown group", put, "/v1/groups/"+unknownID+"/members/"+f.alice, `{}`, codes.NotFound, notFound, "GROUP_NOT_FOUND"),
		failed("RemoveGroupMember/not a member", del, "/v1/groups/"+f.ops+"/members/"+f.alice, "", codes.NotFound, notFound, "MEMBERSHIP_NOT_FOUND"),
		invalid("ListGroupMembers/bad page_token", get, "/v1/groups/"+f.ops+"/members?pageToken=garbage", "", "page_token"),
		failed("ListGroupMembers/unknown group", get, "/v1/groups/"+unknownID+"/members", "", codes.NotFound, notFound, "GROUP_NOT_FOUND"),

		// Roles.
		invalid("CreateRole/upper-case name", post, "/v1/roles", `{"name": "Bad-Role"}`, "name"),
		invalid("CreateRole/name starting with a digit", post, "/v1/roles", `{"name": "1role"}`, "name"),
		invalid("CreateRole/empty name", post, "/v1/roles", `{"name": ""}`, "name"),
		invalid("CreateRole/name of 65 chars", post, "/v1/roles", `{"name": "`+long(65)+`"}`, "name"),
		invalid("CreateRole/reserved prefix", post, "/v1/roles", `{"name": "gatehouse.x"}`, "name").withReason("INVALID_ARGUMENT"),
		invalid("CreateRole/description of 1025 chars", post, "/v1/roles", `{"name": "newrole", "description": "`+long(1025)+`"}`, "description"),
		invalid("CreateRole/malformed contained name", post, "/v1/roles", `{"name": "newrole", "contains": ["viewer", "Bad-Role"]}`, "contains[1]"),
		invalid("CreateRole/duplicate contained name", post, "/v1/roles", `{"name": "newrole", "contains": ["viewer", "viewer"]}`, "contains"),
		// A wrong-type value: protojson reports a string where a list belongs as a syntax error
		// ("unexpected token"), which names no field.
		invalid("CreateRole/string for list", post, "/v1/roles", `{"name": "newrole", "contains": "viewer"}`),
		invalid("CreateRole/JSON syntax error", post, "/v1/roles", `{"name": "newrole",}`),
		failed("CreateRole/duplicate", post, "/v1/roles", `{"name": "viewer"}`, codes.AlreadyExists, conflict, "ROLE_EXISTS"),
		failed("CreateRole/unknown contained role", post, "/v1/roles", `{"name": "newrole", "contains": ["viewer", "nope"]}`, codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		failed("CreateRole/containing itself", post, "/v1/roles", `{"name": "selfish", "contains": ["selfish"]}`, codes.FailedPrecondition, bad, "ROLE_CYCLE"),
		invalid("GetRole/malformed name", get, "/v1/roles/Bad-Role", "", "name"),
		failed("GetRole/unknown", get, "/v1/roles/nope", "", codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		invalid("ListRoles/page_size 5000", get, "/v1/roles?pageSize=5000", "", "page_size"),
		invalid("ListRoles/bad page_token", get, "/v1/roles?pageToken=garbage", "", "page_token").withReason("INVALID_PAGE_TOKEN"),
		failed("DeleteRole/built-in", del, "/v1/roles/gatehouse.admin", "", codes.FailedPrecondition, bad, "BUILT_IN_ROLE"),
		failed("DeleteRole/unknown", del, "/v1/roles/nope", "", codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		invalid("DeleteRole/malformed name", del, "/v1/roles/Bad-Role", "", "name"),
		failed("AddContainedRole/cycle", put, "/v1/roles/cyc_b/contains/cyc_a", `{}`, codes.FailedPrecondition, bad, "ROLE_CYCLE"),
		failed("AddContainedRole/itself", put, "/v1/roles/cyc_a/contains/cyc_a", `{}`, codes.FailedPrecondition, bad, "ROLE_CYCLE"),
		failed("AddContainedRole/unknown contained role", put, "/v1/roles/viewer/contains/nope", `{}`, codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		failed("AddContainedRole/unknown role", put, "/v1/roles/nope/contains/viewer", `{}`, codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		invalid("AddContainedRole/malformed contained role", put, "/v1/roles/viewer/contains/Bad-Role", `{}`, "contained_role"),
		failed("RemoveContainedRole/not contained", del, "/v1/roles/viewer/contains/cyc_a", "", codes.NotFound, notFound, "CONTAINMENT_NOT_FOUND"),

		// Grants.
		invalid("GrantRole/no principal", post, "/v1/roles/viewer:grant", `{}`, "principal"),
		invalid("GrantRole/empty user id", post, "/v1/roles/viewer:grant", `{"userId": ""}`, "user_id"),
		invalid("GrantRole/malformed user id", post, "/v1/roles/viewer:grant", `{"userId": "not-a-uuid"}`, "user_id"),
		invalid("GrantRole/malformed group id", post, "/v1/roles/viewer:grant", `{"groupId": "not-a-uuid"}`, "group_id"),
		invalid("GrantRole/two principals", post, "/v1/roles/viewer:grant", `{"userId": "`+f.alice+`", "groupId": "`+f.ops+`"}`, "principal"),
		invalid("GrantRole/malformed role", post, "/v1/roles/Bad-Role:grant", `{"userId": "`+f.alice+`"}`, "role"),
		failed("GrantRole/unknown role", post, "/v1/roles/nope:grant", `{"userId": "`+f.alice+`"}`, codes.NotFound, notFound, "ROLE_NOT_FOUND"),
		failed("GrantRole/unknown user", post, "/v1/roles/viewer:grant", `{"userId": "`+unknownID+`"}`, codes.NotFound, notFound, "USER_NOT_FOUND"),
		failed("GrantRole/unknown group", post, "/v1/roles/viewer:grant", `{"groupId": "`+unknownID+`"}`, codes.NotFound, notFound, "GROUP_NOT_FOUND"),
		invalid("RevokeRole/no principal", post, "/v1/roles/viewer:revoke", `{}`, "principal"),
		failed("RevokeRole/not granted", post, "/v1/roles/viewer:revoke", `{"userId": "`+f.alice+`"}`, codes.NotFound, notFound, "GRANT_NOT_FOUND"),

		// Effective roles.
		invalid("GetEffectiveRoles/bad consistency token", get, "/v1/users/"+f.alice+"/roles?consistency.atLeastAsFresh=garbage", "", "consistency.at_least_as_fresh").withReason("INVALID_CONSISTENCY_TOKEN"),
		invalid("GetEffectiveRoles/malformed id", get, "/v1/users/not-a-uuid/roles", "", "user_id"),
		failed("GetEffectiveRoles/unknown id", get, "/v1/users/"+unknownID+"/roles", "", codes.NotFound, notFound, "USER_NOT_FOUND"),

		// CreateSession: validation writes nothing, not even LOGIN_FAILED.
		invalid("CreateSession/unknown type name", post, "/v1/sessions", login(`, "type": "SESSION_TYPE_BOGUS"`), "type"),
		invalid("CreateSession/unknown type number", post, "/v1/sessions", login(`, "type": 99`), "type"),
		invalid("CreateSession/missing type", post, "/v1/sessions", login(""), "type"),
		invalid("CreateSession/unspecified type", post, "/v1/sessions", login(`, "type": "SESSION_TYPE_UNSPECIFIED"`), "type"),
		invalid("CreateSession/no credential", post, "/v1/sessions", `{"type": "SESSION_TYPE_WEB_BROWSER"}`, "credential"),
		invalid("CreateSession/empty username", post, "/v1/sessions", `{"password": {"username": "", "password": "x"}, "type": "SESSION_TYPE_WEB_BROWSER"}`, "password.username"),
		invalid("CreateSession/malformed client ip", post, "/v1/sessions", login(`, "type": "SESSION_TYPE_WEB_BROWSER", "client": {"ipAddress": "not-an-ip"}`), "client.ip_address"),
		invalid("CreateSession/wrong password with bad type", post, "/v1/sessions", `{"password": {"username": "alice", "password": "wrong-password"}, "type": 99}`, "type"),
		invalid("CreateSession/malformed JSON", post, "/v1/sessions", `{"password": `),
		// Bad credentials: exactly one LOGIN_FAILED, nothing else.
		{name: "CreateSession/wrong password", method: post, path: "/v1/sessions",
			body:     `{"password": {"username": "alice", "password": "wrong-password"}, "type": "SESSION_TYPE_WEB_BROWSER"}`,
			wantCode: codes.Unauthenticated, wantHTTP: http.StatusUnauthorized, wantReason: "INVALID_CREDENTIALS", loginFailed: true},
		{name: "CreateSession/unknown user", method: post, path: "/v1/sessions",
			body:     `{"password": {"username": "nobody", "password": "some-password"}, "type": "SESSION_TYPE_WEB_BROWSER"}`,
			wantCode: codes.Unauthenticated, wantHTTP: http.StatusUnauthorized, wantReason: "INVALID_CREDENTIALS", loginFailed: true},
		failed("ValidateSession/unknown token", post, "/v1/sessions:validate", `{"token": "garbage"}`, codes.Unauthenticated, http.StatusUnauthorized, "SESSION_NOT_FOUND"),
	}
}

// TestBadInputREST sends malformed and unacceptable requests to the REST facade as raw JSON and
// checks that each gets the documented code, HTTP status and details, and changes nothing.
func TestBadInputREST(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.REST)
			admin := testnode.AdminToken(t, c)
			f := badInputSetup(t, c, admin)
			hc := testnode.HTTPClient()

			for _, tc := range badInputCases(f) {
				t.Run(tc.name, func(t *testing.T) {
					if got := testnode.HTTPStatus(tc.wantCode); got != tc.wantHTTP {
						t.Fatalf("bad test case: grpc-gateway maps %s to HTTP %d, not %d", tc.wantCode, got, tc.wantHTTP)
					}
					before := takeSnapshot(t, n.Store())
					httpStatus, st, raw := sendRaw(t, hc, n.BaseURL(), admin, tc.method, tc.path, tc.body)
					after := takeSnapshot(t, n.Store())

					if st == nil {
						t.Errorf("%s %s: HTTP %d with a body that is not an error status: %.300s", tc.method, tc.path, httpStatus, raw)
					} else {
						checkStatus(t, tc, httpStatus, st, raw)
					}
					checkNothingChanged(t, n.Store(), before, after, tc.loginFailed)
				})
			}
		})
	}
}

// TestBadInputReservedRoleName checks through every front that a role name with the reserved
// gatehouse. prefix is INVALID_ARGUMENT with one field violation, on name (the protovalidate rule of
// CreateRoleRequest, which is the only check), and creates nothing.
func TestBadInputReservedRoleName(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		admin := testnode.AdminToken(t, c)
		for _, name := range []string{"gatehouse.x", "gatehouse.admin"} {
			before := takeSnapshot(t, n.Store())
			err := expectError(t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: name}, codes.InvalidArgument, "INVALID_ARGUMENT")
			if got := testnode.Violations(err); !slices.Equal(got, []string{"name"}) {
				t.Errorf("CreateRole %q: field violations %q, want [name]", name, got)
			}
			checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
		}
	})
}

// badInputSetup creates the users, group and roles the bad requests refer to.
func badInputSetup(t *testing.T, c testnode.Invoker, admin string) badInputFixture {
	t.Helper()
	var f badInputFixture
	f.alice = testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "alice", Email: "alice@example.com", Password: "alice-password"}).User.Id
	f.bob = testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "bob", Password: "bob-password"}).User.Id
	f.ops = testnode.MustCall[gatehousev1.CreateGroupResponse](t, c, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
		&gatehousev1.CreateGroupRequest{Name: "ops"}).Group.Id
	for _, r := range []*gatehousev1.CreateRoleRequest{
		{Name: "viewer"},
		{Name: "cyc_b"},
		{Name: "cyc_a", Contains: []string{"cyc_b"}},
	} {
		testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin, r)
	}
	// Bob belongs to ops, which holds cyc_a (and so cyc_b), so effective_roles is not empty.
	testnode.MustCall[gatehousev1.AddGroupMemberResponse](t, c, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
		&gatehousev1.AddGroupMemberRequest{GroupId: f.ops, UserId: f.bob})
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "cyc_a", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: f.ops}})
	return f
}

// sendRaw sends one raw REST request with the admin's token and returns the HTTP status and, for
// an error, the decoded status (nil if the body is not one) and the raw body.
func sendRaw(t *testing.T, hc *http.Client, base, token, method, path, body string) (int, *status.Status, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, path, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response of %s %s: %v", method, path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, nil, raw
	}
	sp := &spb.Status{}
	if err := protojson.Unmarshal(raw, sp); err != nil {
		return resp.StatusCode, nil, raw
	}
	return resp.StatusCode, status.FromProto(sp), raw
}

func checkStatus(t *testing.T, tc badCase, httpStatus int, st *status.Status, raw []byte) {
	t.Helper()
	if st.Code() != tc.wantCode {
		t.Errorf("%s %s: code %s (%q), want %s; body %.300s", tc.method, tc.path, st.Code(), st.Message(), tc.wantCode, raw)
	}
	if httpStatus != tc.wantHTTP {
		t.Errorf("%s %s: HTTP %d, want %d", tc.method, tc.path, httpStatus, tc.wantHTTP)
	}
	var (
		reason string
		fields []string
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.Reason
		case *errdetails.BadRequest:
			for _, v := range d.FieldViolations {
				fields = append(fields, v.Field)
			}
		}
	}
	if tc.wantCode == codes.InvalidArgument {
		want := slices.Clone(tc.wantFields)
		sort.Strings(want)
		sort.Strings(fields)
		if len(want) > 0 && !slices.Equal(fields, want) {
			t.Errorf("%s %s: field violations %q, want %q (message %q)", tc.method, tc.path, fields, want, st.Message())
		}
		// Every invalid argument carries an ErrorInfo reason (API.md: clients tell the cases apart
		// by code and reason), whether or not it names a field.
		if reason == "" {
			t.Errorf("%s %s: INVALID_ARGUMENT without an ErrorInfo reason (message %q)", tc.method, tc.path, st.Message())
		}
	}
	if tc.wantReason != "" && reason != tc.wantReason {
		t.Errorf("%s %s: reason %q, want %q (message %q)", tc.method, tc.path, reason, tc.wantReason, st.Message())
	}
}

// snapshot is what a request that fails must leave unchanged: for every table but the event log,
// its rows (as sorted strings, without the columns that authenticating a token may refresh), and
// for the event log its row count and largest id.
type snapshot struct {
	Rows       map[string][]string
	EventCount int64
	MaxEventID int64
}

// snapshotTables are the tables whose rows a failed request must not touch.
var snapshotTables = []string{
	"users", "groups", "group_members", "roles", "role_containments", "role_grants",
	"effective_roles", "sessions", "session_policies",
}

// volatileColumns may change on any authenticated call: validating a session token writes back
// its last activity (coalesced), and with it the idle expiry.
var volatileColumns = map[string]map[string]bool{
	"sessions": {"last_active_time": true, "idle_expire_time": true},
}

func takeSnapshot(t *testing.T, st *store.Store) snapshot {
	t.Helper()
	s := snapshot{Rows: map[string][]string{}}
	for _, table := range snapshotTables {
		s.Rows[table] = tableRows(t, st.DB, table)
	}
	if err := st.DB.QueryRow(`SELECT COUNT(*), COALESCE(MAX(id), 0) FROM events`).Scan(&s.EventCount, &s.MaxEventID); err != nil {
		t.Fatalf("counting events: %v", err)
	}
	return s
}

// tableRows returns every row of table as a string, sorted.
func tableRows(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT * FROM "` + table + `"`)
	if err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	out := []string{}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("reading %s: %v", table, err)
		}
		var b strings.Builder
		for i, col := range cols {
			if volatileColumns[table][col] {
				continue
			}
			v := vals[i]
			if raw, ok := v.([]byte); ok {
				v = fmt.Sprintf("%x", raw)
			}
			fmt.Fprintf(&b, "%s=%v ", col, v)
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	sort.Strings(out)
	return out
}

// eventTypesAfter returns the types of the events with ids above id, in log order.
func eventTypesAfter(t *testing.T, st *store.Store, id int64) []string {
	t.Helper()
	rows, err := st.DB.Query(st.Rebind(`SELECT type FROM events WHERE id > ? ORDER BY id`), id)
	if err != nil {
		t.Fatalf("reading events: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatalf("reading events: %v", err)
		}
		out = append(out, typ)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading events: %v", err)
	}
	return out
}

// checkNothingChanged compares the snapshots around a failed request. A failed login may append
// exactly one LOGIN_FAILED event and nothing else.
func checkNothingChanged(t *testing.T, st *store.Store, before, after snapshot, loginFailed bool) {
	t.Helper()
	if diff := cmp.Diff(before.Rows, after.Rows); diff != "" {
		t.Errorf("the failed request changed rows (-before +after):\n%s", diff)
	}
	wantCount, wantNew := before.EventCount, []string(nil)
	if loginFailed {
		wantCount, wantNew = before.EventCount+1, []string{gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED.String()}
	}
	newEvents := eventTypesAfter(t, st, before.MaxEventID)
	if after.EventCount != wantCount || !slices.Equal(newEvents, wantNew) {
		t.Errorf("events: %d before, %d after (max id %d -> %d), new %q; want %d after, new %q",
			before.EventCount, after.EventCount, before.MaxEventID, after.MaxEventID, newEvents, wantCount, wantNew)
	}
	if !loginFailed && after.MaxEventID != before.MaxEventID {
		t.Errorf("largest event id moved from %d to %d", before.MaxEventID, after.MaxEventID)
	}
}

// TestFailedMutationWritesNothing sends a CreateRole that fails midway in the domain (the role row
// is inserted before the second contained role turns out not to exist) and checks that it leaves
// no role, no containment and no event behind, and that the same role can then be created.
func TestFailedMutationWritesNothing(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.REST)
			admin := testnode.AdminToken(t, c)
			hc := testnode.HTTPClient()
			db := n.Store()
			testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: "exists"})

			before := takeSnapshot(t, db)
			httpStatus, st, raw := sendRaw(t, hc, n.BaseURL(), admin, http.MethodPost, "/v1/roles",
				`{"name": "partial", "description": "half made", "contains": ["exists", "does-not-exist"]}`)
			after := takeSnapshot(t, db)
			if st == nil {
				t.Fatalf("CreateRole with a missing contained role: HTTP %d, body %s", httpStatus, raw)
			}
			checkStatus(t, badCase{method: http.MethodPost, path: "/v1/roles", wantCode: codes.NotFound,
				wantHTTP: http.StatusNotFound, wantReason: "ROLE_NOT_FOUND"}, httpStatus, st, raw)
			checkNothingChanged(t, db, before, after, false)

			var roles, links int
			if err := db.DB.QueryRow(db.Rebind(`SELECT COUNT(*) FROM roles WHERE name = ?`), "partial").Scan(&roles); err != nil {
				t.Fatal(err)
			}
			if err := db.DB.QueryRow(db.Rebind(`SELECT COUNT(*) FROM role_containments WHERE role = ? OR contained_role = ?`), "partial", "partial").Scan(&links); err != nil {
				t.Fatal(err)
			}
			if roles != 0 || links != 0 {
				t.Errorf("after the failed CreateRole: %d role rows and %d containment rows named partial, want none", roles, links)
			}
			if _, err := testnode.Call[gatehousev1.GetRoleResponse](t.Context(), c, gatehousev1.IdentityService_GetRole_FullMethodName, admin,
				&gatehousev1.GetRoleRequest{Name: "partial"}); status.Code(err) != codes.NotFound {
				t.Errorf("GetRole partial after the failed CreateRole: %v, want NOT_FOUND", err)
			}

			// Nothing was left behind that blocks a correct retry, which writes exactly one event.
			role := testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: "partial", Contains: []string{"exists"}}).Role
			if !slices.Equal(role.Contains, []string{"exists"}) {
				t.Errorf("retried role contains %v, want [exists]", role.Contains)
			}
			if got := eventTypesAfter(t, db, after.MaxEventID); !slices.Equal(got, []string{gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED.String()}) {
				t.Errorf("events of the retried CreateRole: %q, want one ROLE_CREATED", got)
			}
		})
	}
}
