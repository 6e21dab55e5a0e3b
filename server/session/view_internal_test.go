package session

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/events"
)

// TestViewKeepsEveryField: the view's compact copy of a session gives back every field of the
// row it was filled with (but the token hash, its key), for an active session and for an ended,
// impersonated one.
func TestViewKeepsEveryField(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 123456000, time.FixedZone("X", 3600))
	ended := at.Add(time.Hour)
	rows := []ent.Session{
		{
			ID: "s1", UserID: "u1", Type: entsession.TypeMobileApp, UserAgent: "ua", IPAddress: "192.0.2.1",
			DeviceName: "phone", Trusted: true, CreateTime: at, LastActiveTime: at.Add(time.Minute),
			IdleExpireTime: at.Add(time.Hour), AbsoluteExpireTime: at.Add(24 * time.Hour), Active: true,
		},
		{
			ID: "s2", UserID: "u1", Type: entsession.TypeWebBrowser, CreateTime: at, LastActiveTime: at,
			IdleExpireTime: at, AbsoluteExpireTime: at, TerminateTime: &ended, TerminationReason: "LOGOUT",
			Note: "bye", ImpersonatorUserID: "u9", ImpersonatorSessionID: "s9", ImpersonationReason: "ticket 7",
		},
	}
	v := newView(10)
	for i, row := range rows {
		v.fillSession(v.begin(), string(rune('a'+i)), &row)
		got, ok := v.session(string(rune('a' + i)))
		if !ok {
			t.Fatalf("row %d is not cached", i)
		}
		same := got.ID == row.ID && got.UserID == row.UserID && got.Type == row.Type && got.UserAgent == row.UserAgent &&
			got.IPAddress == row.IPAddress && got.DeviceName == row.DeviceName && got.Trusted == row.Trusted &&
			got.CreateTime.Equal(row.CreateTime) && got.LastActiveTime.Equal(row.LastActiveTime) &&
			got.IdleExpireTime.Equal(row.IdleExpireTime) && got.AbsoluteExpireTime.Equal(row.AbsoluteExpireTime) &&
			got.Active == row.Active && got.TerminationReason == row.TerminationReason && got.Note == row.Note &&
			got.ImpersonatorUserID == row.ImpersonatorUserID && got.ImpersonatorSessionID == row.ImpersonatorSessionID &&
			got.ImpersonationReason == row.ImpersonationReason &&
			(got.TerminateTime == nil) == (row.TerminateTime == nil) &&
			(got.TerminateTime == nil || got.TerminateTime.Equal(*row.TerminateTime))
		if !same {
			t.Fatalf("row %d: the view gives\n%+v\nfor\n%+v", i, got, row)
		}
		if got.LastActiveTime.Location() != time.UTC {
			t.Fatalf("row %d: times come back in %v, want UTC", i, got.LastActiveTime.Location())
		}
	}
	if idle, ok := v.idleExpiry("s1"); !ok || !idle.Equal(rows[0].IdleExpireTime) {
		t.Fatalf("idleExpiry(s1) = %v, %v", idle, ok)
	}
	if id, user, ok := v.touch("a", at.Add(2*time.Minute), at.Add(2*time.Hour)); !ok || id != "s1" || user != "u1" {
		t.Fatalf("touch(a) = %q, %q, %v", id, user, ok)
	}
	if _, _, ok := v.touch("nothing", at, at); ok {
		t.Fatal("touch of an uncached session found it")
	}
	if got, _ := v.session("a"); !got.LastActiveTime.Equal(at.Add(2*time.Minute)) || !got.IdleExpireTime.Equal(at.Add(2*time.Hour)) {
		t.Fatalf("after touch: last active %v, idle expiry %v", got.LastActiveTime, got.IdleExpireTime)
	}
}

// TestViewEvictsLeastRecentlyUsed: past its size the view forgets the session used least
// recently, and an event drops a session and the sessions of a user.
func TestViewEvictsLeastRecentlyUsed(t *testing.T) {
	v := newView(3)
	fill := func(hash, id, user string) {
		v.fillSession(v.begin(), hash, &ent.Session{ID: id, UserID: user, Active: true})
	}
	cached := func(hashes ...string) (out []string) {
		for _, h := range hashes {
			if _, ok := v.session(h); ok {
				out = append(out, h)
			}
		}
		return out
	}
	fill("a", "s1", "u1")
	fill("b", "s2", "u1")
	fill("c", "s3", "u2")
	cached("a") // a is now the most recently used; b the least
	fill("d", "s4", "u2")
	if got := cached("b"); len(got) != 0 {
		t.Fatal("b was not evicted")
	}
	if got := cached("a", "c", "d"); len(got) != 3 {
		t.Fatalf("cached after eviction: %v", got)
	}
	if n, _ := v.size(); n != 3 {
		t.Fatalf("size %d", n)
	}
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, SessionId: "s1", UserId: "u1"}}})
	if got := cached("a"); len(got) != 0 {
		t.Fatal("a terminated session is still cached")
	}
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, UserId: "u2"}}})
	if n, _ := v.size(); n != 0 {
		t.Fatalf("%d sessions cached after their users' role change", n)
	}
	// The list still links correctly after removals from its middle and ends.
	for _, h := range []string{"e", "f", "g", "h"} {
		fill(h, "id-"+h, "u3")
	}
	if got := cached("e", "f", "g", "h"); len(got) != 3 || got[0] != "f" {
		t.Fatalf("after refilling: %v", got)
	}
}

// TestViewKeepsUsers: the view's copy of a user gives back the user it was filled with, and users
// with equal role sets share one copy of it.
func TestViewKeepsUsers(t *testing.T) {
	v := newView(10)
	at := time.Date(2026, 12, 6, 10, 0, 0, 123456000, time.UTC)
	u := &gatehousev1.User{
		Id: "u1", Username: "ada", Email: "ada@example.com", DisplayName: "Ada", Disabled: true,
		CreateTime: timestamppb.New(at), UpdateTime: timestamppb.New(at.Add(time.Hour)), HasPassword: true,
	}
	v.fillUser(v.begin(), u, []string{"app.admin", "app.viewer"})
	v.fillUser(v.begin(), &gatehousev1.User{Id: "u2", Username: "bob"}, []string{"app.admin", "app.viewer"})
	got, roles, ok := v.user("u1")
	if !ok || !proto.Equal(got, u) || !slices.Equal(roles, []string{"app.admin", "app.viewer"}) {
		t.Fatalf("user(u1) = %v, %v, %v", got, roles, ok)
	}
	got2, roles2, _ := v.user("u2")
	if got2.CreateTime != nil || got2.UpdateTime != nil {
		t.Fatalf("a user without times came back with %v, %v", got2.CreateTime, got2.UpdateTime)
	}
	if &roles[0] != &roles2[0] {
		t.Fatal("two users with the same roles hold two copies of them")
	}
	// The map holds the entries' own copies of the ids, after a refill too: never the strings
	// given, which it would keep alive next to the copies.
	given := &gatehousev1.User{Id: strings.Clone("u2"), Username: "bob", Email: "bob@example.com"}
	v.fillUser(v.begin(), given, nil)
	for id, e := range v.byUser {
		if unsafe.StringData(id) != unsafe.StringData(e.v.id()) {
			t.Errorf("user %s: the map's key is not the entry's copy of the id", id)
		}
	}
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_UPDATED, UserId: "u1"}}})
	if _, _, ok := v.user("u1"); ok {
		t.Fatal("an updated user is still cached")
	}
	if _, users := v.size(); users != 1 {
		t.Fatalf("%d users cached, want 1", users)
	}
}

// TestViewSessionsOfAUser: a user's event drops every cached session of that user, whichever
// order they were cached and evicted in, and no other user's.
func TestViewSessionsOfAUser(t *testing.T) {
	v := newView(100)
	fill := func(hash, id, user string) {
		v.fillSession(v.begin(), hash, &ent.Session{ID: id, UserID: user, Active: true})
	}
	for i := range 10 {
		fill(fmt.Sprintf("h%d", i), fmt.Sprintf("s%d", i), fmt.Sprintf("u%d", i%3))
	}
	// Refill one (a newer load) and end a first, a middle and a last session of user u0 (s0, s3,
	// s9 are u0's; s9 was cached last, so it heads u0's list).
	fill("h3", "s3", "u0")
	for _, id := range []string{"s9", "s3"} {
		v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, SessionId: id, UserId: "u0"}}})
	}
	cached := func() []string {
		var left []string
		for i := range 10 {
			if _, ok := v.session(fmt.Sprintf("h%d", i)); ok {
				left = append(left, fmt.Sprintf("s%d", i))
			}
		}
		return left
	}
	// The ended ones go, and only they: u0's others stay linked for the next step.
	if got, want := cached(), []string{"s0", "s1", "s2", "s4", "s5", "s6", "s7", "s8"}; !slices.Equal(got, want) {
		t.Fatalf("cached after two of u0's sessions ended: %v, want %v", got, want)
	}
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, UserId: "u0"}}})
	if got, want := cached(), []string{"s1", "s2", "s4", "s5", "s7", "s8"}; !slices.Equal(got, want) {
		t.Fatalf("cached after u0's roles changed: %v, want %v", got, want)
	}
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_DELETED, UserId: "u1"}}})
	v.apply([]events.Record{{Event: &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_DISABLED, UserId: "u2"}}})
	if n, _ := v.size(); n != 0 || len(v.ofUser) != 0 || len(v.byHash) != 0 || len(v.byID) != 0 {
		t.Fatalf("after every user's event: %d sessions, %d users indexed, %d hashes, %d ids", n, len(v.ofUser), len(v.byHash), len(v.byID))
	}
}
