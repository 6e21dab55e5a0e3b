package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/events"
)

// idAdmin is an administrator session on one node through one front. Its mutating calls check
// that every response carries a consistency token that comes after the previous one.
type idAdmin struct {
	t      *testing.T
	n      *testnode.Node
	c      testnode.Invoker
	tok    string
	userID string
	last   events.Position
	lastBy string
}

// newIDAdmin logs the bootstrap administrator in.
func newIDAdmin(t *testing.T, n *testnode.Node, c testnode.Invoker) *idAdmin {
	t.Helper()
	login := testnode.Login(t, c, "admin", testnode.AdminPassword)
	a := &idAdmin{t: t, n: n, c: c, tok: login.Token, userID: login.User.Id}
	a.checkToken("CreateSession", login.ConsistencyToken)
	return a
}

// checkToken checks that a mutation's consistency token is a cursor after every earlier one.
func (a *idAdmin) checkToken(method, tok string) {
	a.t.Helper()
	if tok == "" {
		a.t.Errorf("%s returned an empty consistency_token", method)
		return
	}
	p, err := events.ParseCursor(tok)
	if err != nil {
		a.t.Errorf("%s returned consistency_token %q that is not a cursor: %v", method, tok, err)
		return
	}
	if !a.last.Less(p) {
		a.t.Errorf("%s returned consistency_token %+v, not after the token %+v of the earlier %s", method, p, a.last, a.lastBy)
	}
	a.last, a.lastBy = p, method
}

// tokened is a mutating response.
type tokened interface {
	proto.Message
	GetConsistencyToken() string
}

// mutate calls a mutating method as the administrator, fails the test on an error and checks the
// consistency token of the response.
func mutate[R any, PR interface {
	*R
	tokened
}](a *idAdmin, method string, req proto.Message) PR {
	a.t.Helper()
	resp := testnode.MustCall[R, PR](a.t, a.c, method, a.tok, req)
	a.checkToken(method[strings.LastIndexByte(method, '/')+1:], resp.GetConsistencyToken())
	return resp
}

// read calls a read method as the administrator and fails the test on an error.
func read[R any, PR interface {
	*R
	proto.Message
}](a *idAdmin, method string, req proto.Message) PR {
	a.t.Helper()
	return testnode.MustCall[R, PR](a.t, a.c, method, a.tok, req)
}

// fails calls method as the administrator and checks that it fails with code and ErrorInfo reason.
func (a *idAdmin) fails(method string, req proto.Message, code codes.Code, reason string) error {
	a.t.Helper()
	return expectError(a.t, a.c, method, a.tok, req, code, reason)
}

// expectError calls method with token and checks that it fails with code and (unless empty)
// ErrorInfo reason. It returns the error.
func expectError(t *testing.T, c testnode.Invoker, method, token string, req proto.Message, code codes.Code, reason string) error {
	t.Helper()
	resp, err := respFor(method)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	err = c.Invoke(context.Background(), method, token, req, resp)
	if err == nil {
		t.Fatalf("%s succeeded, want %s %s", method, code, reason)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("%s: code %s (%v), want %s %s", method, got, err, code, reason)
	}
	if reason != "" {
		if got := testnode.Reason(err); got != reason {
			t.Fatalf("%s: reason %q (%v), want %q", method, got, err, reason)
		}
	}
	return err
}

// methodDescriptorOf returns the descriptor of a gatehouse.v1 method by its full name.
func methodDescriptorOf(method string) (protoreflect.MethodDescriptor, error) {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("no method %s", method)
	}
	return md, nil
}

// respFor returns a new response message of a gatehouse.v1 method.
func respFor(method string) (proto.Message, error) {
	md, err := methodDescriptorOf(method)
	if err != nil {
		return nil, err
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}

// isREST reports whether a ForEach subtest runs through the REST front.
func isREST(t *testing.T) bool { return strings.HasSuffix(t.Name(), "/"+string(testnode.REST)) }

// updateUser calls UpdateUser as the administrator. Through the REST front it sends what a REST
// client following the OpenAPI document sends: the bare resource as the PATCH body (without the id,
// which is in the path) and the mask, if any, as ?update_mask=a,b.
//
// NOTE: the generic REST invoker sends the mask the same way (?update_mask=a,b, which replaces the
// mask grpc-gateway derives from the body), but it marshals the whole user, id included, as the
// body; this helper sends the body the OpenAPI document describes instead.
func (a *idAdmin) updateUser(req *gatehousev1.UpdateUserRequest) (*gatehousev1.UpdateUserResponse, error) {
	a.t.Helper()
	if !isREST(a.t) {
		return testnode.Call[gatehousev1.UpdateUserResponse](context.Background(), a.c, gatehousev1.IdentityService_UpdateUser_FullMethodName, a.tok, req)
	}
	body := proto.CloneOf(req.User)
	body.Id = ""
	b, err := protojson.Marshal(body)
	if err != nil {
		a.t.Fatal(err)
	}
	u := a.n.BaseURL() + "/v1/users/" + url.PathEscape(req.User.GetId())
	if paths := req.GetUpdateMask().GetPaths(); len(paths) > 0 {
		u += "?update_mask=" + url.QueryEscape(strings.Join(paths, ","))
	}
	hreq, err := http.NewRequest(http.MethodPatch, u, bytes.NewReader(b))
	if err != nil {
		a.t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+a.tok)
	resp := &gatehousev1.UpdateUserResponse{}
	if err := testnode.DoREST(testnode.HTTPClient(), hreq, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// mustUpdateUser is updateUser that fails the test on an error and checks the consistency token.
func (a *idAdmin) mustUpdateUser(req *gatehousev1.UpdateUserRequest) *gatehousev1.User {
	a.t.Helper()
	resp, err := a.updateUser(req)
	if err != nil {
		a.t.Fatalf("UpdateUser %v: %v", req, err)
	}
	a.checkToken("UpdateUser", resp.ConsistencyToken)
	return resp.User
}

// updateUserFails checks that UpdateUser fails with code and reason.
func (a *idAdmin) updateUserFails(req *gatehousev1.UpdateUserRequest, code codes.Code, reason string) {
	a.t.Helper()
	_, err := a.updateUser(req)
	if status.Code(err) != code || (reason != "" && testnode.Reason(err) != reason) {
		a.t.Fatalf("UpdateUser %v: %v (reason %q), want %s %s", req, err, testnode.Reason(err), code, reason)
	}
}

func (a *idAdmin) createUser(username, password string) *gatehousev1.User {
	a.t.Helper()
	return mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
		&gatehousev1.CreateUserRequest{Username: username, Password: password}).User
}

func (a *idAdmin) createGroup(name string) *gatehousev1.Group {
	a.t.Helper()
	return mutate[gatehousev1.CreateGroupResponse](a, gatehousev1.IdentityService_CreateGroup_FullMethodName,
		&gatehousev1.CreateGroupRequest{Name: name}).Group
}

func (a *idAdmin) createRole(name string, contains ...string) *gatehousev1.Role {
	a.t.Helper()
	return mutate[gatehousev1.CreateRoleResponse](a, gatehousev1.IdentityService_CreateRole_FullMethodName,
		&gatehousev1.CreateRoleRequest{Name: name, Contains: contains}).Role
}

func (a *idAdmin) addMember(groupID, userID string) {
	a.t.Helper()
	mutate[gatehousev1.AddGroupMemberResponse](a, gatehousev1.IdentityService_AddGroupMember_FullMethodName,
		&gatehousev1.AddGroupMemberRequest{GroupId: groupID, UserId: userID})
}

func (a *idAdmin) grantUser(role, userID string) {
	a.t.Helper()
	mutate[gatehousev1.GrantRoleResponse](a, gatehousev1.IdentityService_GrantRole_FullMethodName,
		&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: userID}})
}

func (a *idAdmin) grantGroup(role, groupID string) {
	a.t.Helper()
	mutate[gatehousev1.GrantRoleResponse](a, gatehousev1.IdentityService_GrantRole_FullMethodName,
		&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: groupID}})
}

// roles returns a user's effective roles.
func (a *idAdmin) roles(userID string) []*gatehousev1.EffectiveRole {
	a.t.Helper()
	return read[gatehousev1.GetEffectiveRolesResponse](a, gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName,
		&gatehousev1.GetEffectiveRolesRequest{UserId: userID}).Roles
}

// wantRoles checks a user's effective roles with their sources.
func (a *idAdmin) wantRoles(what, userID string, want ...*gatehousev1.EffectiveRole) {
	a.t.Helper()
	got := a.roles(userID)
	if diff := cmp.Diff(want, got, protocmp.Transform(), cmpEmptyNil()); diff != "" {
		a.t.Errorf("%s: effective roles (-want +got):\n%s", what, diff)
	}
}

func cmpEmptyNil() cmp.Option {
	return cmp.FilterValues(func(x, y []*gatehousev1.EffectiveRole) bool { return len(x) == 0 && len(y) == 0 },
		cmp.Comparer(func(_, _ []*gatehousev1.EffectiveRole) bool { return true }))
}

// eff builds an expected effective role.
func eff(role string, sources ...*gatehousev1.RoleSource) *gatehousev1.EffectiveRole {
	return &gatehousev1.EffectiveRole{Role: role, Sources: sources}
}

func direct() *gatehousev1.RoleSource {
	return &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_Direct{Direct: true}}
}

func viaGroup(id string) *gatehousev1.RoleSource {
	return &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_GroupId{GroupId: id}}
}

func viaRole(name string) *gatehousev1.RoleSource {
	return &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_ContainedInRole{ContainedInRole: name}}
}

// loggedEvent is one row of the events table.
type loggedEvent struct {
	ID     int64
	Type   string
	UserID string
	Event  *gatehousev1.Event
}

// lastEventID returns the id of the newest event of the node's log (0 when it is empty).
func lastEventID(t *testing.T, n *testnode.Node) int64 {
	t.Helper()
	var id int64
	if err := n.Store().DB.QueryRow("SELECT COALESCE(MAX(id), 0) FROM events").Scan(&id); err != nil {
		t.Fatalf("reading the last event id: %v", err)
	}
	return id
}

// eventsAfter reads the events after id from the events table, decoding their payloads.
func eventsAfter(t *testing.T, n *testnode.Node, after int64) []loggedEvent {
	t.Helper()
	st := n.Store()
	rows, err := st.DB.Query(st.Rebind("SELECT id, type, user_id, payload FROM events WHERE id > ? ORDER BY id"), after)
	if err != nil {
		t.Fatalf("reading events: %v", err)
	}
	defer rows.Close()
	var out []loggedEvent
	for rows.Next() {
		var e loggedEvent
		var payload []byte
		if err := rows.Scan(&e.ID, &e.Type, &e.UserID, &payload); err != nil {
			t.Fatalf("scanning an event: %v", err)
		}
		e.Event = &gatehousev1.Event{}
		if err := proto.Unmarshal(payload, e.Event); err != nil {
			t.Fatalf("event %d: payload is not a gatehouse.v1.Event: %v", e.ID, err)
		}
		if e.Event.Type.String() != e.Type || e.Event.UserId != e.UserID {
			t.Errorf("event %d: columns (type %s, user %q) disagree with the payload (type %s, user %q)",
				e.ID, e.Type, e.UserID, e.Event.Type, e.Event.UserId)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading events: %v", err)
	}
	return out
}

// ofType keeps the events of one type.
func ofType(evs []loggedEvent, typ gatehousev1.EventType) []loggedEvent {
	var out []loggedEvent
	for _, e := range evs {
		if e.Event.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// rolesChanged returns the ROLES_CHANGED payloads among evs by user id, failing on a user with two.
func rolesChanged(t *testing.T, evs []loggedEvent) map[string]*gatehousev1.RolesChangedPayload {
	t.Helper()
	out := map[string]*gatehousev1.RolesChangedPayload{}
	for _, e := range ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED) {
		if _, dup := out[e.UserID]; dup {
			t.Errorf("two ROLES_CHANGED events for user %s in one change", e.UserID)
		}
		out[e.UserID] = e.Event.GetRolesChanged()
	}
	return out
}

// wantRolesChanged checks the ROLES_CHANGED events among evs: exactly one per user of want, with
// its added and removed roles.
func wantRolesChanged(t *testing.T, what string, evs []loggedEvent, want map[string][2][]string) {
	t.Helper()
	got := rolesChanged(t, evs)
	for u, w := range want {
		p, ok := got[u]
		if !ok {
			t.Errorf("%s: no ROLES_CHANGED event for user %s", what, u)
			continue
		}
		if !slices.Equal(p.Added, w[0]) || !slices.Equal(p.Removed, w[1]) {
			t.Errorf("%s: ROLES_CHANGED for %s has added %v removed %v, want added %v removed %v", what, u, p.Added, p.Removed, w[0], w[1])
		}
	}
	for u, p := range got {
		if _, ok := want[u]; !ok {
			t.Errorf("%s: unexpected ROLES_CHANGED for user %s: %v", what, u, p)
		}
	}
}

func userIDs(users []*gatehousev1.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Id
	}
	return out
}

func usernames(users []*gatehousev1.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Username
	}
	return out
}

func groupNames(groups []*gatehousev1.Group) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		out[i] = g.Name
	}
	return out
}

func TestUsernamesAreUniqueCaseInsensitively(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		carol := a.createUser("Carol.Smith", "")
		if got := read[gatehousev1.LookupUserResponse](a, gatehousev1.IdentityService_LookupUser_FullMethodName,
			&gatehousev1.LookupUserRequest{Username: "CAROL.SMITH"}).User; got.GetId() != carol.Id || got.GetUsername() != "Carol.Smith" {
			t.Errorf("LookupUser(CAROL.SMITH) = %v, want Carol.Smith as spelt at creation", got)
		}
		for _, name := range []string{"carol.smith", "CAROL.SMITH", "Carol.Smith"} {
			a.fails(gatehousev1.IdentityService_CreateUser_FullMethodName, &gatehousev1.CreateUserRequest{Username: name},
				codes.AlreadyExists, "USERNAME_TAKEN")
		}
		// Renaming another user onto a taken name differs only in case: taken too.
		dave := a.createUser("dave", "")
		a.updateUserFails(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: dave.Id, Username: "CAROL.smith"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"username"}},
		}, codes.AlreadyExists, "USERNAME_TAKEN")
		// A user may change the case of their own name.
		if got := a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: carol.Id, Username: "carol.smith"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"username"}},
		}); got.Username != "carol.smith" {
			t.Errorf("renamed Carol.Smith to carol.smith, got %q", got.Username)
		}

		for _, name := range []string{"carol.smith", "CAROL.SMITH", "cArOl.SmItH"} {
			got := read[gatehousev1.LookupUserResponse](a, gatehousev1.IdentityService_LookupUser_FullMethodName,
				&gatehousev1.LookupUserRequest{Username: name}).User
			if got.GetId() != carol.Id || got.GetUsername() != "carol.smith" {
				t.Errorf("LookupUser(%q) = %v, want carol.smith (%s) with its spelling kept", name, got, carol.Id)
			}
		}
		a.fails(gatehousev1.IdentityService_LookupUser_FullMethodName, &gatehousev1.LookupUserRequest{Username: "nobody"},
			codes.NotFound, "USER_NOT_FOUND")

		// Group names are unique case-insensitively as well.
		a.createGroup("Ops")
		a.fails(gatehousev1.IdentityService_CreateGroup_FullMethodName, &gatehousev1.CreateGroupRequest{Name: "oPS"},
			codes.AlreadyExists, "GROUP_NAME_TAKEN")
	})
}

func TestListUsersPagingAndFilters(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		// Created out of order and in mixed case: listed by username, case-insensitively.
		names := []string{"pg-e", "PG-B", "pg-g", "Pg-D", "pg-a", "pg-f", "pg-C"}
		disabled := map[string]bool{"PG-B": true, "pg-f": true}
		for _, name := range names {
			mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
				&gatehousev1.CreateUserRequest{Username: name, Disabled: disabled[name]})
		}
		a.createUser("q_1", "")
		a.createUser("qx1", "")
		sorted := []string{"pg-a", "PG-B", "pg-C", "Pg-D", "pg-e", "pg-f", "pg-g"}

		list := func(req *gatehousev1.ListUsersRequest) []string {
			t.Helper()
			var seen []string
			var sizes []int
			for page := 0; ; page++ {
				if page > 20 {
					t.Fatalf("ListUsers %v: no end after 20 pages", req)
				}
				resp := read[gatehousev1.ListUsersResponse](a, gatehousev1.IdentityService_ListUsers_FullMethodName, req)
				seen = append(seen, usernames(resp.Users)...)
				sizes = append(sizes, len(resp.Users))
				if resp.NextPageToken == "" {
					break
				}
				if req.PageSize > 0 && len(resp.Users) != int(req.PageSize) {
					t.Errorf("ListUsers %v: a page of %d users before the last, want %d", req, len(resp.Users), req.PageSize)
				}
				req = proto.CloneOf(req)
				req.PageToken = resp.NextPageToken
			}
			return seen
		}

		got := list(&gatehousev1.ListUsersRequest{PageSize: 3, UsernamePrefix: "pg-"})
		if !slices.Equal(got, sorted) {
			t.Errorf("ListUsers prefix pg- by 3 = %v, want %v", got, sorted)
		}
		// All users (admin included), three at a time: every user exactly once, in order.
		all := list(&gatehousev1.ListUsersRequest{PageSize: 3})
		wantAll := append([]string{"admin"}, sorted...)
		wantAll = append(wantAll, "q_1", "qx1")
		if !slices.Equal(all, wantAll) {
			t.Errorf("ListUsers by 3 = %v, want %v", all, wantAll)
		}
		// One page with everything, no next page.
		one := read[gatehousev1.ListUsersResponse](a, gatehousev1.IdentityService_ListUsers_FullMethodName,
			&gatehousev1.ListUsersRequest{UsernamePrefix: "pg-"})
		if !slices.Equal(usernames(one.Users), sorted) || one.NextPageToken != "" {
			t.Errorf("ListUsers prefix pg- = %v next %q, want %v and no next page", usernames(one.Users), one.NextPageToken, sorted)
		}
		// The prefix is case-insensitive, and _ in it is a literal character, not a wildcard.
		if got := list(&gatehousev1.ListUsersRequest{UsernamePrefix: "PG-"}); !slices.Equal(got, sorted) {
			t.Errorf("ListUsers prefix PG- = %v, want %v", got, sorted)
		}
		if got := list(&gatehousev1.ListUsersRequest{UsernamePrefix: "q_"}); !slices.Equal(got, []string{"q_1"}) {
			t.Errorf("ListUsers prefix q_ = %v, want [q_1]", got)
		}
		if got := list(&gatehousev1.ListUsersRequest{UsernamePrefix: "zz"}); len(got) != 0 {
			t.Errorf("ListUsers prefix zz = %v, want none", got)
		}
		// The disabled filter, alone and with paging and a prefix.
		if got := list(&gatehousev1.ListUsersRequest{Disabled: proto.Bool(true)}); !slices.Equal(got, []string{"PG-B", "pg-f"}) {
			t.Errorf("ListUsers disabled=true = %v, want [PG-B pg-f]", got)
		}
		wantEnabled := []string{"pg-a", "pg-C", "Pg-D", "pg-e", "pg-g"}
		if got := list(&gatehousev1.ListUsersRequest{Disabled: proto.Bool(false), UsernamePrefix: "pg", PageSize: 2}); !slices.Equal(got, wantEnabled) {
			t.Errorf("ListUsers disabled=false prefix pg by 2 = %v, want %v", got, wantEnabled)
		}
		a.fails(gatehousev1.IdentityService_ListUsers_FullMethodName, &gatehousev1.ListUsersRequest{PageToken: "not-a-token"},
			codes.InvalidArgument, "INVALID_PAGE_TOKEN")
	})
}

func TestUpdateUser(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		u := mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
			&gatehousev1.CreateUserRequest{Username: "erin", Email: "erin@example.com", DisplayName: "Erin", Password: "erin-password"}).User

		// With a mask naming display_name only, the other fields of the request are ignored.
		upd := a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: u.Id, Username: "someone-else", Email: "other@example.com", DisplayName: "Erin E.", Disabled: true},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
		})
		want := proto.CloneOf(u)
		want.DisplayName = "Erin E."
		// (create_time is compared in TestCreateResponsesMatchReads.)
		if diff := cmp.Diff(want, upd, protocmp.Transform(), protocmp.IgnoreFields(&gatehousev1.User{}, "update_time", "create_time")); diff != "" {
			t.Errorf("UpdateUser display_name (-want +got):\n%s", diff)
		}
		if upd.UpdateTime.AsTime().Before(u.UpdateTime.AsTime()) {
			t.Errorf("update_time went back from %v to %v", u.UpdateTime.AsTime(), upd.UpdateTime.AsTime())
		}
		got := read[gatehousev1.GetUserResponse](a, gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: u.Id}).User
		if !proto.Equal(got, upd) {
			t.Errorf("GetUser after UpdateUser = %v, want %v", got, upd)
		}
		// The user is still enabled and may log in.
		testnode.Login(t, c, "erin", "erin-password")

		// A mask naming an unknown field is invalid.
		a.updateUserFails(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: u.Id, DisplayName: "x"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"no_such_field"}},
		}, codes.InvalidArgument, "INVALID_UPDATE_MASK")
		// Output-only fields in a mask are ignored (AIP-203), so that a client may send back what it
		// read: nothing changes.
		same := testnode.MustCall[gatehousev1.UpdateUserResponse](t, c, gatehousev1.IdentityService_UpdateUser_FullMethodName, a.tok,
			&gatehousev1.UpdateUserRequest{
				User:       &gatehousev1.User{Id: u.Id, DisplayName: "x"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"create_time", "has_password"}},
			}).User
		if !proto.Equal(same, got) {
			t.Errorf("UpdateUser with only output-only fields changed the user: %v, want %v", same, got)
		}
		a.updateUserFails(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: "0190d4d2-0000-7000-8000-000000000000", DisplayName: "x"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
		}, codes.NotFound, "USER_NOT_FOUND")

		// REST PATCH with the bare resource as body and no update_mask: only the fields present in
		// the body change (grpc-gateway derives the mask from the body).
		restPatch := func(body string) (int, string) {
			t.Helper()
			req, err := http.NewRequest(http.MethodPatch, n.BaseURL()+"/v1/users/"+u.Id, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+a.tok)
			resp, err := testnode.HTTPClient().Do(req)
			if err != nil {
				t.Fatalf("PATCH /v1/users/%s: %v", u.Id, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := restPatch(`{"email": "erin@new.example.com"}`); code != http.StatusOK {
			t.Fatalf("PATCH email without a mask: HTTP %d %s", code, body)
		} else if !strings.Contains(body, `"consistencyToken"`) || strings.Contains(body, `"consistencyToken":""`) {
			t.Errorf("PATCH response has no consistency token: %s", body)
		}
		got = read[gatehousev1.GetUserResponse](a, gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: u.Id}).User
		if got.Email != "erin@new.example.com" || got.DisplayName != "Erin E." || got.Username != "erin" || got.Disabled {
			t.Errorf("after PATCH {email}: %v, want only the email changed", got)
		}
		if code, body := restPatch(`{"displayName": "Erin Example", "disabled": false}`); code != http.StatusOK {
			t.Fatalf("PATCH displayName without a mask: HTTP %d %s", code, body)
		}
		got = read[gatehousev1.GetUserResponse](a, gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: u.Id}).User
		if got.Email != "erin@new.example.com" || got.DisplayName != "Erin Example" || got.Username != "erin" || got.Disabled {
			t.Errorf("after PATCH {displayName, disabled}: %v, want only the display name changed", got)
		}
	})
}

// TestUpdateUserWithoutMask checks that an update without an update_mask changes only the fields
// the request's user populates (AIP-134), through every front: an empty string clears nothing and
// a false does not re-enable a disabled user; only an explicit mask does that.
func TestUpdateUserWithoutMask(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		u := mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
			&gatehousev1.CreateUserRequest{Username: "gil", Email: "gil@example.com", DisplayName: "Gil", Disabled: true}).User
		get := func() *gatehousev1.User {
			t.Helper()
			return read[gatehousev1.GetUserResponse](a, gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: u.Id}).User
		}
		ignoreTimes := protocmp.IgnoreFields(&gatehousev1.User{}, "update_time", "create_time")

		// The review's case: {id, username, display_name} sent to a disabled user with an email.
		mark := lastEventID(t, n)
		upd := a.mustUpdateUser(&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: u.Id, Username: "gil", DisplayName: "Gil G."}})
		want := proto.CloneOf(u)
		want.DisplayName = "Gil G."
		if diff := cmp.Diff(want, upd, protocmp.Transform(), ignoreTimes); diff != "" {
			t.Errorf("UpdateUser {id, username, display_name} without a mask (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, get(), protocmp.Transform(), ignoreTimes); diff != "" {
			t.Errorf("GetUser after UpdateUser without a mask (-want +got):\n%s", diff)
		}
		updated := ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_USER_UPDATED)
		if len(updated) != 1 || !slices.Equal(updated[0].Event.GetUserUpdated().GetChangedFields(), []string{"display_name"}) {
			t.Errorf("USER_UPDATED events %v, want one with changed_fields [display_name]", updated)
		}

		// Only the email, populated: the rest stays, the user stays disabled.
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: u.Id, Email: "gil@new.example.com"}})
		want.Email = "gil@new.example.com"
		if diff := cmp.Diff(want, get(), protocmp.Transform(), ignoreTimes); diff != "" {
			t.Errorf("after UpdateUser {email} without a mask (-want +got):\n%s", diff)
		}

		// Nothing populated but the id: nothing changes and nothing is written (so the consistency
		// token does not move either).
		mark = lastEventID(t, n)
		if _, err := a.updateUser(&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: u.Id}}); err != nil {
			t.Fatalf("UpdateUser {id} without a mask: %v", err)
		}
		if diff := cmp.Diff(want, get(), protocmp.Transform(), ignoreTimes); diff != "" {
			t.Errorf("after UpdateUser {id} without a mask (-want +got):\n%s", diff)
		}
		if evs := eventsAfter(t, n, mark); len(evs) != 0 {
			t.Errorf("UpdateUser {id} without a mask wrote events: %v", evs)
		}

		// An explicit mask still sets what it names, defaults included.
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User:       &gatehousev1.User{Id: u.Id},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled", "email"}},
		})
		want.Disabled, want.Email = false, ""
		if diff := cmp.Diff(want, get(), protocmp.Transform(), ignoreTimes); diff != "" {
			t.Errorf("after UpdateUser {} with mask [disabled email] (-want +got):\n%s", diff)
		}
	})
}

// do calls a mutating method as the administrator, fails the test on an error and checks the
// consistency token of the response.
func (a *idAdmin) do(method string, req proto.Message) {
	a.t.Helper()
	resp, err := respFor(method)
	if err != nil {
		a.t.Fatalf("%s: %v", method, err)
	}
	if err := a.c.Invoke(context.Background(), method, a.tok, req, resp); err != nil {
		a.t.Fatalf("%s %v: %v", method, req, err)
	}
	a.checkToken(method[strings.LastIndexByte(method, '/')+1:], resp.(tokened).GetConsistencyToken())
}

// TestBuiltInRoleChangesNeedAdmin checks that only gatehouse.admin may change who holds a
// gatehouse.* role, whatever the path: an identity administrator is refused with
// PERMISSION_DENIED/BUILT_IN_ROLE_CHANGE and the database is left as it was, while gatehouse.admin
// may make every one of the same changes.
func TestBuiltInRoleChangesNeedAdmin(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		ida := a.createUser("ida", "ida-password")
		aud := a.createUser("aud", "")
		bob := a.createUser("bob", "")
		carol := a.createUser("carol", "")
		a.grantUser("gatehouse.identity_admin", ida.Id)
		a.grantUser("gatehouse.auditor", aud.Id)
		a.createRole("helper")
		a.grantUser("helper", ida.Id)
		a.createRole("wrapper", "gatehouse.auditor")
		a.grantUser("wrapper", carol.Id)
		mine := a.createGroup("mine") // ida is a member; it holds nothing
		a.addMember(mine.Id, ida.Id)
		admins := a.createGroup("admins") // holds gatehouse.admin; nobody is a member
		a.grantGroup("gatehouse.admin", admins.Id)
		auditors := a.createGroup("auditors") // holds gatehouse.auditor; bob is a member
		a.grantGroup("gatehouse.auditor", auditors.Id)
		a.addMember(auditors.Id, bob.Id)
		idaTok := testnode.Login(t, c, "ida", "ida-password").Token

		grantUser := func(role, u string) proto.Message {
			return &gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u}}
		}
		revokeUser := func(role, u string) proto.Message {
			return &gatehousev1.RevokeRoleRequest{Role: role, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: u}}
		}
		type step struct {
			method string
			req    proto.Message
		}
		const admin = "gatehouse.admin"
		cases := []struct {
			name string
			step
			// want is the change gatehouse.admin's call makes: added and removed roles per user.
			want map[string][2][]string
			// undo restores the state for the next case; nil for the cases that run last.
			undo *step
		}{
			{"grant gatehouse.admin to self", step{gatehousev1.IdentityService_GrantRole_FullMethodName, grantUser(admin, ida.Id)},
				map[string][2][]string{ida.Id: {{admin}, nil}},
				&step{gatehousev1.IdentityService_RevokeRole_FullMethodName, revokeUser(admin, ida.Id)}},
			{"grant gatehouse.admin to a group of one's own", step{gatehousev1.IdentityService_GrantRole_FullMethodName,
				&gatehousev1.GrantRoleRequest{Role: admin, Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: mine.Id}}},
				map[string][2][]string{ida.Id: {{admin}, nil}},
				&step{gatehousev1.IdentityService_RevokeRole_FullMethodName,
					&gatehousev1.RevokeRoleRequest{Role: admin, Principal: &gatehousev1.RevokeRoleRequest_GroupId{GroupId: mine.Id}}}},
			{"join a group holding gatehouse.admin", step{gatehousev1.IdentityService_AddGroupMember_FullMethodName,
				&gatehousev1.AddGroupMemberRequest{GroupId: admins.Id, UserId: ida.Id}},
				map[string][2][]string{ida.Id: {{admin}, nil}},
				&step{gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
					&gatehousev1.RemoveGroupMemberRequest{GroupId: admins.Id, UserId: ida.Id}}},
			{"make a role one holds contain gatehouse.admin", step{gatehousev1.IdentityService_AddContainedRole_FullMethodName,
				&gatehousev1.AddContainedRoleRequest{Role: "helper", ContainedRole: admin}},
				map[string][2][]string{ida.Id: {{admin}, nil}},
				&step{gatehousev1.IdentityService_RemoveContainedRole_FullMethodName,
					&gatehousev1.RemoveContainedRoleRequest{Role: "helper", ContainedRole: admin}}},
			{"make gatehouse.auditor contain gatehouse.admin", step{gatehousev1.IdentityService_AddContainedRole_FullMethodName,
				&gatehousev1.AddContainedRoleRequest{Role: "gatehouse.auditor", ContainedRole: admin}},
				map[string][2][]string{aud.Id: {{admin}, nil}, bob.Id: {{admin}, nil}, carol.Id: {{admin}, nil}},
				&step{gatehousev1.IdentityService_RemoveContainedRole_FullMethodName,
					&gatehousev1.RemoveContainedRoleRequest{Role: "gatehouse.auditor", ContainedRole: admin}}},
			{"grant another built-in role to someone else", step{gatehousev1.IdentityService_GrantRole_FullMethodName,
				grantUser("gatehouse.session_issuer", bob.Id)},
				map[string][2][]string{bob.Id: {{"gatehouse.session_issuer"}, nil}},
				&step{gatehousev1.IdentityService_RevokeRole_FullMethodName, revokeUser("gatehouse.session_issuer", bob.Id)}},
			{"grant self a custom role containing a built-in role", step{gatehousev1.IdentityService_GrantRole_FullMethodName,
				grantUser("wrapper", ida.Id)},
				map[string][2][]string{ida.Id: {{"gatehouse.auditor", "wrapper"}, nil}},
				&step{gatehousev1.IdentityService_RevokeRole_FullMethodName, revokeUser("wrapper", ida.Id)}},
			{"remove a member of a group holding a built-in role", step{gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
				&gatehousev1.RemoveGroupMemberRequest{GroupId: auditors.Id, UserId: bob.Id}},
				map[string][2][]string{bob.Id: {nil, {"gatehouse.auditor"}}},
				&step{gatehousev1.IdentityService_AddGroupMember_FullMethodName,
					&gatehousev1.AddGroupMemberRequest{GroupId: auditors.Id, UserId: bob.Id}}},
			{"delete a group holding a built-in role", step{gatehousev1.IdentityService_DeleteGroup_FullMethodName,
				&gatehousev1.DeleteGroupRequest{GroupId: auditors.Id}},
				map[string][2][]string{bob.Id: {nil, {"gatehouse.auditor"}}}, nil},
			{"delete a role containing a built-in role", step{gatehousev1.IdentityService_DeleteRole_FullMethodName,
				&gatehousev1.DeleteRoleRequest{Name: "wrapper"}},
				map[string][2][]string{carol.Id: {nil, {"gatehouse.auditor", "wrapper"}}}, nil},
			{"revoke gatehouse.admin from the administrator", step{gatehousev1.IdentityService_RevokeRole_FullMethodName,
				revokeUser(admin, a.userID)},
				map[string][2][]string{a.userID: {nil, {admin}}}, nil},
		}

		// The identity administrator: refused every time, and nothing is written.
		for _, tc := range cases {
			before := takeSnapshot(t, n.Store())
			err := expectError(t, c, tc.method, idaTok, tc.req, codes.PermissionDenied, "BUILT_IN_ROLE_CHANGE")
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "only gatehouse.admin may change who holds gatehouse.* roles") {
				t.Errorf("%s: message %q does not say that only gatehouse.admin may change who holds gatehouse.* roles", tc.name, msg)
			}
			checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
		}
		// Changes that move no built-in role stay open to the identity administrator.
		a.createRole("plain")
		testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, idaTok, grantUser("plain", bob.Id))
		a.wantRoles("bob after the identity admin's custom grant", bob.Id,
			eff("gatehouse.auditor", viaGroup(auditors.Id)), eff("plain", direct()))

		// gatehouse.admin: every one of the same changes goes through (the last one, revoking its own
		// role, because another enabled administrator is left: see TestLastAdminCannotBeRemoved).
		backup := a.createUser("backup", "backup-password")
		a.grantUser(admin, backup.Id)
		for _, tc := range cases {
			mark := lastEventID(t, n)
			a.do(tc.method, tc.req)
			wantRolesChanged(t, tc.name, eventsAfter(t, n, mark), tc.want)
			if tc.undo != nil {
				a.do(tc.undo.method, tc.undo.req)
			}
		}
	})
}

func TestGroupsAndMembers(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "alice-password")
		bob := a.createUser("Bob", "")
		eng := mutate[gatehousev1.CreateGroupResponse](a, gatehousev1.IdentityService_CreateGroup_FullMethodName,
			&gatehousev1.CreateGroupRequest{Name: "eng", Description: "Engineering"}).Group
		ops := a.createGroup("Ops")
		a.createGroup("ops-oncall")

		got := read[gatehousev1.GetGroupResponse](a, gatehousev1.IdentityService_GetGroup_FullMethodName, &gatehousev1.GetGroupRequest{GroupId: eng.Id}).Group
		if got.Id != eng.Id || got.Name != "eng" || got.Description != "Engineering" || got.CreateTime == nil {
			t.Errorf("GetGroup = %v, want %v", got, eng)
		}
		groups := read[gatehousev1.ListGroupsResponse](a, gatehousev1.IdentityService_ListGroups_FullMethodName, &gatehousev1.ListGroupsRequest{NamePrefix: "OPS"})
		if names := groupNames(groups.Groups); !slices.Equal(names, []string{"Ops", "ops-oncall"}) {
			t.Errorf("ListGroups prefix OPS = %v", names)
		}
		p1 := read[gatehousev1.ListGroupsResponse](a, gatehousev1.IdentityService_ListGroups_FullMethodName, &gatehousev1.ListGroupsRequest{PageSize: 2})
		p2 := read[gatehousev1.ListGroupsResponse](a, gatehousev1.IdentityService_ListGroups_FullMethodName, &gatehousev1.ListGroupsRequest{PageSize: 2, PageToken: p1.NextPageToken})
		if names := append(groupNames(p1.Groups), groupNames(p2.Groups)...); !slices.Equal(names, []string{"eng", "Ops", "ops-oncall"}) || p2.NextPageToken != "" {
			t.Errorf("ListGroups by 2 = %v (next %q)", names, p2.NextPageToken)
		}

		a.addMember(eng.Id, bob.Id)
		a.addMember(eng.Id, alice.Id)
		a.addMember(ops.Id, alice.Id)
		// Adding a member again changes nothing and writes nothing.
		mark := lastEventID(t, n)
		testnode.MustCall[gatehousev1.AddGroupMemberResponse](t, c, gatehousev1.IdentityService_AddGroupMember_FullMethodName, a.tok,
			&gatehousev1.AddGroupMemberRequest{GroupId: eng.Id, UserId: alice.Id})
		if evs := eventsAfter(t, n, mark); len(evs) != 0 {
			t.Errorf("adding an existing member again wrote events: %v", evs)
		}

		members := read[gatehousev1.ListGroupMembersResponse](a, gatehousev1.IdentityService_ListGroupMembers_FullMethodName,
			&gatehousev1.ListGroupMembersRequest{GroupId: eng.Id})
		if !slices.Equal(userIDs(members.Users), []string{alice.Id, bob.Id}) {
			t.Errorf("members of eng = %v, want [alice Bob]", usernames(members.Users))
		}
		m1 := read[gatehousev1.ListGroupMembersResponse](a, gatehousev1.IdentityService_ListGroupMembers_FullMethodName,
			&gatehousev1.ListGroupMembersRequest{GroupId: eng.Id, PageSize: 1})
		m2 := read[gatehousev1.ListGroupMembersResponse](a, gatehousev1.IdentityService_ListGroupMembers_FullMethodName,
			&gatehousev1.ListGroupMembersRequest{GroupId: eng.Id, PageSize: 1, PageToken: m1.NextPageToken})
		if got := append(usernames(m1.Users), usernames(m2.Users)...); !slices.Equal(got, []string{"alice", "Bob"}) || m2.NextPageToken != "" {
			t.Errorf("members of eng one at a time = %v (next %q)", got, m2.NextPageToken)
		}
		byGroup := read[gatehousev1.ListUsersResponse](a, gatehousev1.IdentityService_ListUsers_FullMethodName, &gatehousev1.ListUsersRequest{GroupId: ops.Id})
		if !slices.Equal(userIDs(byGroup.Users), []string{alice.Id}) {
			t.Errorf("ListUsers group ops = %v, want [alice]", usernames(byGroup.Users))
		}
		ug := read[gatehousev1.ListUserGroupsResponse](a, gatehousev1.IdentityService_ListUserGroups_FullMethodName, &gatehousev1.ListUserGroupsRequest{UserId: alice.Id})
		if names := groupNames(ug.Groups); !slices.Equal(names, []string{"eng", "Ops"}) {
			t.Errorf("groups of alice = %v, want [eng Ops]", names)
		}
		// A user may list their own groups.
		self := testnode.Login(t, c, "alice", "alice-password")
		own := testnode.MustCall[gatehousev1.ListUserGroupsResponse](t, c, gatehousev1.IdentityService_ListUserGroups_FullMethodName, self.Token,
			&gatehousev1.ListUserGroupsRequest{UserId: alice.Id})
		if !proto.Equal(own, ug) {
			t.Errorf("alice listing her own groups = %v, want %v", own, ug)
		}

		mutate[gatehousev1.RemoveGroupMemberResponse](a, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
			&gatehousev1.RemoveGroupMemberRequest{GroupId: eng.Id, UserId: bob.Id})
		a.fails(gatehousev1.IdentityService_RemoveGroupMember_FullMethodName, &gatehousev1.RemoveGroupMemberRequest{GroupId: eng.Id, UserId: bob.Id},
			codes.NotFound, "MEMBERSHIP_NOT_FOUND")
		members = read[gatehousev1.ListGroupMembersResponse](a, gatehousev1.IdentityService_ListGroupMembers_FullMethodName,
			&gatehousev1.ListGroupMembersRequest{GroupId: eng.Id})
		if !slices.Equal(userIDs(members.Users), []string{alice.Id}) {
			t.Errorf("members of eng after removing Bob = %v", usernames(members.Users))
		}

		mutate[gatehousev1.DeleteGroupResponse](a, gatehousev1.IdentityService_DeleteGroup_FullMethodName, &gatehousev1.DeleteGroupRequest{GroupId: ops.Id})
		a.fails(gatehousev1.IdentityService_GetGroup_FullMethodName, &gatehousev1.GetGroupRequest{GroupId: ops.Id}, codes.NotFound, "GROUP_NOT_FOUND")
		a.fails(gatehousev1.IdentityService_ListGroupMembers_FullMethodName, &gatehousev1.ListGroupMembersRequest{GroupId: ops.Id}, codes.NotFound, "GROUP_NOT_FOUND")
		a.fails(gatehousev1.IdentityService_DeleteGroup_FullMethodName, &gatehousev1.DeleteGroupRequest{GroupId: ops.Id}, codes.NotFound, "GROUP_NOT_FOUND")
		ug = read[gatehousev1.ListUserGroupsResponse](a, gatehousev1.IdentityService_ListUserGroups_FullMethodName, &gatehousev1.ListUserGroupsRequest{UserId: alice.Id})
		if names := groupNames(ug.Groups); !slices.Equal(names, []string{"eng"}) {
			t.Errorf("groups of alice after deleting Ops = %v, want [eng]", names)
		}
		a.fails(gatehousev1.IdentityService_AddGroupMember_FullMethodName, &gatehousev1.AddGroupMemberRequest{GroupId: ops.Id, UserId: alice.Id},
			codes.NotFound, "GROUP_NOT_FOUND")
	})
}

func TestDeleteGroupRemovesItsRoles(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		bob := a.createUser("bob", "")
		a.createRole("viewer")
		a.createRole("deployer", "viewer")
		ops := a.createGroup("ops")
		a.grantGroup("deployer", ops.Id)
		a.addMember(ops.Id, alice.Id)
		a.addMember(ops.Id, bob.Id)
		a.grantUser("viewer", bob.Id)
		a.wantRoles("bob before", bob.Id, eff("deployer", viaGroup(ops.Id)), eff("viewer", direct(), viaRole("deployer")))

		mark := lastEventID(t, n)
		mutate[gatehousev1.DeleteGroupResponse](a, gatehousev1.IdentityService_DeleteGroup_FullMethodName, &gatehousev1.DeleteGroupRequest{GroupId: ops.Id})
		a.wantRoles("alice after DeleteGroup", alice.Id)
		a.wantRoles("bob after DeleteGroup", bob.Id, eff("viewer", direct()))
		evs := eventsAfter(t, n, mark)
		if len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_GROUP_DELETED)) != 1 {
			t.Errorf("DeleteGroup wrote %d GROUP_DELETED events, want 1", len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_GROUP_DELETED)))
		}
		wantRolesChanged(t, "DeleteGroup", evs, map[string][2][]string{
			alice.Id: {nil, {"deployer", "viewer"}},
			bob.Id:   {nil, {"deployer"}},
		})
	})
}

func TestRevokeRole(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		bob := a.createUser("bob", "")
		a.createRole("viewer")
		ops := a.createGroup("ops")
		a.addMember(ops.Id, bob.Id)
		a.grantUser("viewer", alice.Id)
		a.grantGroup("viewer", ops.Id)
		a.wantRoles("alice", alice.Id, eff("viewer", direct()))
		a.wantRoles("bob", bob.Id, eff("viewer", viaGroup(ops.Id)))

		mark := lastEventID(t, n)
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "viewer", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: alice.Id}})
		a.wantRoles("alice after revoke", alice.Id)
		a.wantRoles("bob after alice's revoke", bob.Id, eff("viewer", viaGroup(ops.Id)))
		evs := eventsAfter(t, n, mark)
		if r := ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLE_REVOKED); len(r) != 1 || r[0].Event.GetRoleRevoked().GetUserId() != alice.Id {
			t.Errorf("revoking from alice wrote ROLE_REVOKED events %v", r)
		}
		wantRolesChanged(t, "revoke from alice", evs, map[string][2][]string{alice.Id: {nil, {"viewer"}}})

		a.fails(gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "viewer", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: alice.Id}},
			codes.NotFound, "GRANT_NOT_FOUND")
		a.fails(gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "nosuchrole", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: alice.Id}},
			codes.NotFound, "ROLE_NOT_FOUND")

		mark = lastEventID(t, n)
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "viewer", Principal: &gatehousev1.RevokeRoleRequest_GroupId{GroupId: ops.Id}})
		a.wantRoles("bob after the group's revoke", bob.Id)
		wantRolesChanged(t, "revoke from ops", eventsAfter(t, n, mark), map[string][2][]string{bob.Id: {nil, {"viewer"}}})
	})
}

func TestRemoveContainedRole(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		bob := a.createUser("bob", "")
		a.createRole("viewer")
		a.createRole("editor")
		a.createRole("lead", "editor", "viewer")
		a.grantUser("lead", alice.Id)
		a.grantUser("viewer", bob.Id)
		a.wantRoles("alice", alice.Id, eff("editor", viaRole("lead")), eff("lead", direct()), eff("viewer", viaRole("lead")))

		mark := lastEventID(t, n)
		mutate[gatehousev1.RemoveContainedRoleResponse](a, gatehousev1.IdentityService_RemoveContainedRole_FullMethodName,
			&gatehousev1.RemoveContainedRoleRequest{Role: "lead", ContainedRole: "viewer"})
		a.wantRoles("alice after RemoveContainedRole", alice.Id, eff("editor", viaRole("lead")), eff("lead", direct()))
		a.wantRoles("bob (direct viewer) after RemoveContainedRole", bob.Id, eff("viewer", direct()))
		role := read[gatehousev1.GetRoleResponse](a, gatehousev1.IdentityService_GetRole_FullMethodName, &gatehousev1.GetRoleRequest{Name: "lead"}).Role
		if !slices.Equal(role.Contains, []string{"editor"}) {
			t.Errorf("lead contains %v, want [editor]", role.Contains)
		}
		wantRolesChanged(t, "RemoveContainedRole", eventsAfter(t, n, mark), map[string][2][]string{alice.Id: {nil, {"viewer"}}})

		a.fails(gatehousev1.IdentityService_RemoveContainedRole_FullMethodName,
			&gatehousev1.RemoveContainedRoleRequest{Role: "lead", ContainedRole: "viewer"}, codes.NotFound, "CONTAINMENT_NOT_FOUND")
	})
}

func TestDeleteRole(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		bob := a.createUser("bob", "")
		carol := a.createUser("carol", "")
		dave := a.createUser("dave", "")
		a.createRole("viewer")
		a.createRole("lead", "viewer")
		a.createRole("boss", "lead")
		ops := a.createGroup("ops")
		a.grantUser("lead", alice.Id)  // lead directly
		a.grantGroup("lead", ops.Id)   // lead through a group
		a.addMember(ops.Id, bob.Id)    //
		a.grantUser("boss", carol.Id)  // lead through containment
		a.grantUser("viewer", dave.Id) // only what lead contains, directly
		a.wantRoles("carol", carol.Id, eff("boss", direct()), eff("lead", viaRole("boss")), eff("viewer", viaRole("lead")))

		mark := lastEventID(t, n)
		mutate[gatehousev1.DeleteRoleResponse](a, gatehousev1.IdentityService_DeleteRole_FullMethodName, &gatehousev1.DeleteRoleRequest{Name: "lead"})
		a.wantRoles("alice after DeleteRole", alice.Id)
		a.wantRoles("bob after DeleteRole", bob.Id)
		a.wantRoles("carol after DeleteRole", carol.Id, eff("boss", direct()))
		a.wantRoles("dave after DeleteRole", dave.Id, eff("viewer", direct()))
		a.fails(gatehousev1.IdentityService_GetRole_FullMethodName, &gatehousev1.GetRoleRequest{Name: "lead"}, codes.NotFound, "ROLE_NOT_FOUND")
		boss := read[gatehousev1.GetRoleResponse](a, gatehousev1.IdentityService_GetRole_FullMethodName, &gatehousev1.GetRoleRequest{Name: "boss"}).Role
		if len(boss.Contains) != 0 {
			t.Errorf("boss still contains %v", boss.Contains)
		}
		evs := eventsAfter(t, n, mark)
		if d := ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLE_DELETED); len(d) != 1 || d[0].Event.GetRoleDeleted().GetRole().GetName() != "lead" {
			t.Errorf("DeleteRole wrote ROLE_DELETED events %v", d)
		}
		// Every holder lost lead itself as well as what it contained.
		wantRolesChanged(t, "DeleteRole", evs, map[string][2][]string{
			alice.Id: {nil, {"lead", "viewer"}},
			bob.Id:   {nil, {"lead", "viewer"}},
			carol.Id: {nil, {"lead", "viewer"}},
		})

		// A role that contains nothing: its holders lose it, and hear of it.
		a.createRole("solo")
		a.grantUser("solo", dave.Id)
		mark = lastEventID(t, n)
		mutate[gatehousev1.DeleteRoleResponse](a, gatehousev1.IdentityService_DeleteRole_FullMethodName, &gatehousev1.DeleteRoleRequest{Name: "solo"})
		a.wantRoles("dave after deleting solo", dave.Id, eff("viewer", direct()))
		wantRolesChanged(t, "DeleteRole of a role that contains nothing", eventsAfter(t, n, mark),
			map[string][2][]string{dave.Id: {nil, {"solo"}}})

		// The role can be created again, empty, and nobody holds it.
		a.createRole("lead")
		a.wantRoles("alice after re-creating lead", alice.Id)

		a.fails(gatehousev1.IdentityService_DeleteRole_FullMethodName, &gatehousev1.DeleteRoleRequest{Name: "gatehouse.auditor"},
			codes.FailedPrecondition, "BUILT_IN_ROLE")
		a.fails(gatehousev1.IdentityService_DeleteRole_FullMethodName, &gatehousev1.DeleteRoleRequest{Name: "nosuchrole"},
			codes.NotFound, "ROLE_NOT_FOUND")
	})
}

func TestRoleHeldThroughTwoPaths(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		a.createRole("viewer")
		ops := a.createGroup("ops")
		a.grantGroup("viewer", ops.Id)
		a.addMember(ops.Id, alice.Id)
		a.grantUser("viewer", alice.Id)
		a.wantRoles("alice with two paths", alice.Id, eff("viewer", direct(), viaGroup(ops.Id)))

		// Losing the direct grant keeps the role through the group; the role set is unchanged.
		mark := lastEventID(t, n)
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "viewer", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: alice.Id}})
		a.wantRoles("alice after losing the direct grant", alice.Id, eff("viewer", viaGroup(ops.Id)))
		wantRolesChanged(t, "revoking a role also held through a group", eventsAfter(t, n, mark), nil)

		// Back to two paths, then losing the group keeps the direct grant.
		a.grantUser("viewer", alice.Id)
		mark = lastEventID(t, n)
		mutate[gatehousev1.RemoveGroupMemberResponse](a, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
			&gatehousev1.RemoveGroupMemberRequest{GroupId: ops.Id, UserId: alice.Id})
		a.wantRoles("alice after leaving the group", alice.Id, eff("viewer", direct()))
		wantRolesChanged(t, "leaving a group whose role is also held directly", eventsAfter(t, n, mark), nil)
	})
}

func TestContainmentChain(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		alice := a.createUser("alice", "")
		a.createRole("c")
		a.createRole("b", "c")
		a.createRole("a", "b")
		a.grantUser("a", alice.Id)
		a.wantRoles("a⊃b⊃c", alice.Id, eff("a", direct()), eff("b", viaRole("a")), eff("c", viaRole("b")))

		// Cycles are refused, whatever their length, and change nothing: no row, no event.
		before := takeSnapshot(t, n.Store())
		for _, link := range [][2]string{{"c", "a"}, {"b", "a"}, {"a", "a"}} {
			a.fails(gatehousev1.IdentityService_AddContainedRole_FullMethodName,
				&gatehousev1.AddContainedRoleRequest{Role: link[0], ContainedRole: link[1]}, codes.FailedPrecondition, "ROLE_CYCLE")
		}
		checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
		a.wantRoles("after refused cycles", alice.Id, eff("a", direct()), eff("b", viaRole("a")), eff("c", viaRole("b")))

		// Extending the chain reaches the holder at once; a diamond shows both paths.
		a.createRole("d")
		mark := lastEventID(t, n)
		mutate[gatehousev1.AddContainedRoleResponse](a, gatehousev1.IdentityService_AddContainedRole_FullMethodName,
			&gatehousev1.AddContainedRoleRequest{Role: "c", ContainedRole: "d"})
		wantRolesChanged(t, "AddContainedRole c⊃d", eventsAfter(t, n, mark), map[string][2][]string{alice.Id: {{"d"}, nil}})
		mutate[gatehousev1.AddContainedRoleResponse](a, gatehousev1.IdentityService_AddContainedRole_FullMethodName,
			&gatehousev1.AddContainedRoleRequest{Role: "a", ContainedRole: "c"})
		a.wantRoles("diamond", alice.Id,
			eff("a", direct()), eff("b", viaRole("a")), eff("c", viaRole("a"), viaRole("b")), eff("d", viaRole("c")))
		before = takeSnapshot(t, n.Store())
		a.fails(gatehousev1.IdentityService_AddContainedRole_FullMethodName,
			&gatehousev1.AddContainedRoleRequest{Role: "d", ContainedRole: "b"}, codes.FailedPrecondition, "ROLE_CYCLE")
		checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
	})
}

func TestRoleEvents(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		var members []*gatehousev1.User
		for _, name := range []string{"m1", "m2", "m3"} {
			members = append(members, a.createUser(name, ""))
		}
		outsider := a.createUser("outsider", "")
		a.createRole("base")
		a.createRole("reader")
		a.createRole("deployer", "reader")
		g := a.createGroup("team")
		for _, m := range members {
			a.addMember(g.Id, m.Id)
		}
		a.grantGroup("base", g.Id)
		a.grantUser("reader", members[0].Id)

		// A grant to a group of three: one ROLE_GRANTED, and one ROLES_CHANGED per member with what
		// that member gained.
		mark := lastEventID(t, n)
		a.grantGroup("deployer", g.Id)
		evs := eventsAfter(t, n, mark)
		granted := ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED)
		if len(granted) != 1 {
			t.Fatalf("GrantRole to a group wrote %d ROLE_GRANTED events, want 1: %v", len(granted), evs)
		}
		want := &gatehousev1.RoleGrantPayload{Role: "deployer", Principal: &gatehousev1.RoleGrantPayload_GroupId{GroupId: g.Id}}
		if !proto.Equal(granted[0].Event.GetRoleGranted(), want) {
			t.Errorf("ROLE_GRANTED payload = %v, want %v", granted[0].Event.GetRoleGranted(), want)
		}
		if granted[0].Event.ActorUserId != a.userID || granted[0].Event.ActorSessionId == "" {
			t.Errorf("ROLE_GRANTED actor = user %q session %q, want the administrator %s and their session",
				granted[0].Event.ActorUserId, granted[0].Event.ActorSessionId, a.userID)
		}
		if len(evs) != 4 {
			t.Errorf("GrantRole to a group of 3 wrote %d events, want 4 (1 ROLE_GRANTED, 3 ROLES_CHANGED)", len(evs))
		}
		wantRolesChanged(t, "grant to a group of 3", evs, map[string][2][]string{
			members[0].Id: {{"deployer"}, nil},
			members[1].Id: {{"deployer", "reader"}, nil},
			members[2].Id: {{"deployer", "reader"}, nil},
		})
		for _, p := range rolesChanged(t, evs) {
			if !slices.Contains(p.Roles, "deployer") || !slices.Contains(p.Roles, "base") || !slices.Contains(p.Roles, "reader") {
				t.Errorf("ROLES_CHANGED roles = %v, want the whole new set (base, deployer, reader)", p.Roles)
			}
		}
		for _, e := range ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED) {
			if e.UserID == outsider.Id {
				t.Errorf("ROLES_CHANGED for a user outside the group")
			}
		}

		// Granting directly a role already held through the group changes the provenance only: no
		// ROLES_CHANGED.
		mark = lastEventID(t, n)
		a.grantUser("deployer", members[1].Id)
		evs = eventsAfter(t, n, mark)
		if len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED)) != 1 {
			t.Errorf("a direct grant wrote %d ROLE_GRANTED events, want 1", len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED)))
		}
		wantRolesChanged(t, "provenance-only grant", evs, nil)
		a.wantRoles("m2 with deployer twice", members[1].Id,
			eff("base", viaGroup(g.Id)), eff("deployer", direct(), viaGroup(g.Id)), eff("reader", viaRole("deployer")))

		// Granting again what is already granted changes nothing and writes nothing.
		mark = lastEventID(t, n)
		testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, a.tok,
			&gatehousev1.GrantRoleRequest{Role: "deployer", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: g.Id}})
		if evs := eventsAfter(t, n, mark); len(evs) != 0 {
			t.Errorf("a repeated grant wrote events: %v", evs)
		}

		// Adding a member emits GROUP_MEMBER_ADDED and ROLES_CHANGED for that member only.
		mark = lastEventID(t, n)
		a.addMember(g.Id, outsider.Id)
		evs = eventsAfter(t, n, mark)
		if len(ofType(evs, gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_ADDED)) != 1 {
			t.Errorf("AddGroupMember events: %v", evs)
		}
		wantRolesChanged(t, "AddGroupMember", evs, map[string][2][]string{outsider.Id: {{"base", "deployer", "reader"}, nil}})
	})
}

// TestCreateResponsesMatchReads checks that what a create returns is what a read returns after it,
// timestamps included.
func TestCreateResponsesMatchReads(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		u := mutate[gatehousev1.CreateUserResponse](a, gatehousev1.IdentityService_CreateUser_FullMethodName,
			&gatehousev1.CreateUserRequest{Username: "Frank", Email: "frank@example.com", DisplayName: "Frank", Password: "frank-password"}).User
		if u.Id == "" || u.CreateTime == nil || u.UpdateTime == nil || !u.HasPassword {
			t.Errorf("CreateUser returned %v", u)
		}
		gotU := read[gatehousev1.GetUserResponse](a, gatehousev1.IdentityService_GetUser_FullMethodName, &gatehousev1.GetUserRequest{UserId: u.Id}).User
		if diff := cmp.Diff(u, gotU, protocmp.Transform()); diff != "" {
			t.Errorf("GetUser after CreateUser differs from CreateUser's user (-created +read):\n%s", diff)
		}
		g := a.createGroup("grp")
		gotG := read[gatehousev1.GetGroupResponse](a, gatehousev1.IdentityService_GetGroup_FullMethodName, &gatehousev1.GetGroupRequest{GroupId: g.Id}).Group
		if diff := cmp.Diff(g, gotG, protocmp.Transform()); diff != "" {
			t.Errorf("GetGroup after CreateGroup differs from CreateGroup's group (-created +read):\n%s", diff)
		}
		r := a.createRole("rl")
		gotR := read[gatehousev1.GetRoleResponse](a, gatehousev1.IdentityService_GetRole_FullMethodName, &gatehousev1.GetRoleRequest{Name: "rl"}).Role
		if diff := cmp.Diff(r, gotR, protocmp.Transform(), protocmp.IgnoreEmptyMessages()); diff != "" {
			t.Errorf("GetRole after CreateRole differs from CreateRole's role (-created +read):\n%s", diff)
		}
	})
}
