package session

import (
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/events"
)

// DefaultViewSize is how many sessions, and how many users, a node's view holds at most.
const DefaultViewSize = 100_000

// view is the node's in-memory state of the sessions it has validated and of users' effective
// roles, for ValidateSession, Check and WatchSession. It is fed only by the hub (apply) and by
// loads from the database on a miss (fill).
//
// NOTE: why an entry can never be older than the database was when the call began. The hub hands
// every committed event to apply as soon as the tailer sees it, in no particular order, and apply
// only ever drops what an event may have changed; it never patches an entry from an event, so the
// order of events does not matter. Entries are re-read from the database instead. A read that
// started before a drop could still carry the old state, so every load takes a tick of the
// view's clock before it reads, and fill refuses it if the key was dropped after that tick, or if
// the entry there now comes from a later load. Every read of the view first waits for a tailer
// round that began after the call (events.Live.Sync), so every change acknowledged before the
// call has been applied: an ended session cannot validate from a stale entry on any node.
type view struct {
	mu    sync.Mutex
	max   int
	clock uint64
	// floor: loads that began before it may not fill (set by a flush and when dropped is reset).
	floor   uint64
	dropped map[string]uint64
	// sessions and users are the cached entries, most recently used first.
	sessions lru[viewSession]
	byHash   map[string]*entry[viewSession]
	byID     map[string]*entry[viewSession]
	// ofUser indexes the cached sessions by user id: the first of a list linked through
	// viewSession.sameUser.
	ofUser map[string]*entry[viewSession]
	users  lru[viewUser]
	byUser map[string]*entry[viewUser]
	// roleSets interns users' role sets: most users share one of a few.
	roleSets map[string][]string
	// watchers are the node's WatchSession streams, woken when the view learns that a session's
	// expiries moved (see expiring.go).
	watchers *watchers
}

// viewSession is the view's copy of a session row: what validation reads, in less than half the
// memory of an ent.Session, since the view holds up to DefaultViewSize of them. Times are Unix
// nanoseconds, the type is its constant, the token hash is the entry's key (hash), and the fields
// that only an ended or impersonated session sets are apart (rare, nil for most).
type viewSession struct {
	// strs holds the entry's strings one after the other (packed): the token hash, the session's
	// id, its user's id, the user agent, the IP address and the device name.
	strs packed[[6]uint32]
	load uint64
	// sameUser links the cached sessions of the same user (see view.ofUser).
	sameUser struct{ prev, next *entry[viewSession] }

	create, lastActive, idle, absolute int64
	typ                                uint8 // an index in sessionTypes
	active, trusted                    bool
	rare                               *rareSessionFields
}

// The strings of a viewSession, by their index in strs.
const (
	sessHash = iota
	sessID
	sessUserID
	sessUserAgent
	sessIPAddress
	sessDeviceName
)

func (e *viewSession) hash() string   { return e.strs.get(sessHash) }
func (e *viewSession) id() string     { return e.strs.get(sessID) }
func (e *viewSession) userID() string { return e.strs.get(sessUserID) }

// rareSessionFields are the fields of a session row that most active sessions leave empty.
type rareSessionFields struct {
	terminate                                                                  *time.Time
	terminationReason, note, impersonatorUserID, impersonatorSessionID, reason string
	// typ is a session type that is not in sessionTypes (none is, today).
	typ entsession.Type
}

// packed is several strings in one: the NOTE on viewSession.set says why. E is an array of the
// strings' ends, [n]uint32.
type packed[E interface{ ~[4]uint32 | ~[6]uint32 }] struct {
	all  string
	ends E
}

func pack[E interface{ ~[4]uint32 | ~[6]uint32 }](strs ...string) packed[E] {
	n := 0
	for _, s := range strs {
		n += len(s)
	}
	var b strings.Builder
	b.Grow(n)
	var p packed[E]
	for i, s := range strs {
		b.WriteString(s)
		p.ends[i] = uint32(b.Len())
	}
	p.all = b.String()
	return p
}

func (p *packed[E]) get(i int) string {
	start := uint32(0)
	if i > 0 {
		start = p.ends[i-1]
	}
	return p.all[start:p.ends[i]]
}

// sessionTypes are the session types a viewSession names by index.
var sessionTypes = []entsession.Type{entsession.TypeWebBrowser, entsession.TypeMobileBrowser, entsession.TypeMobileApp, entsession.TypeNonInteractive}

// set copies row into e, with hash, its token hash.
//
// NOTE: the strings of the entry are copied into one allocation, which the maps' keys share too,
// and the entry keeps their ends rather than a string header each: the strings a row read decodes
// are scattered among that read's garbage, and each would keep a span of the heap in use
// (measured with one session per user: 147 MiB of heap in use for 103 MiB of live objects).
func (e *viewSession) set(hash string, row *ent.Session) {
	e.strs = pack[[6]uint32](hash, row.ID, row.UserID, row.UserAgent, row.IPAddress, row.DeviceName)
	e.create, e.lastActive = row.CreateTime.UnixNano(), row.LastActiveTime.UnixNano()
	e.idle, e.absolute = row.IdleExpireTime.UnixNano(), row.AbsoluteExpireTime.UnixNano()
	e.active, e.trusted = row.Active, row.Trusted
	e.rare = nil
	typ := slices.Index(sessionTypes, row.Type)
	if typ < 0 || row.TerminateTime != nil || row.TerminationReason != "" || row.Note != "" || row.ImpersonatorUserID != "" ||
		row.ImpersonatorSessionID != "" || row.ImpersonationReason != "" {
		e.rare = &rareSessionFields{
			terminate: row.TerminateTime, terminationReason: row.TerminationReason, note: row.Note,
			impersonatorUserID: row.ImpersonatorUserID, impersonatorSessionID: row.ImpersonatorSessionID,
			reason: row.ImpersonationReason,
		}
		if typ < 0 {
			e.rare.typ = row.Type
		}
	}
	e.typ = uint8(max(typ, 0))
}

// row returns the session row e holds (without its token hash), its times in UTC.
func (e *viewSession) row() ent.Session {
	r := ent.Session{
		ID: e.id(), UserID: e.userID(), Type: sessionTypes[e.typ], UserAgent: e.strs.get(sessUserAgent),
		IPAddress: e.strs.get(sessIPAddress), DeviceName: e.strs.get(sessDeviceName),
		Trusted: e.trusted, CreateTime: unixNano(e.create), LastActiveTime: unixNano(e.lastActive),
		IdleExpireTime: unixNano(e.idle), AbsoluteExpireTime: unixNano(e.absolute), Active: e.active,
	}
	if x := e.rare; x != nil {
		r.TerminateTime, r.TerminationReason, r.Note = x.terminate, x.terminationReason, x.note
		r.ImpersonatorUserID, r.ImpersonatorSessionID, r.ImpersonationReason = x.impersonatorUserID, x.impersonatorSessionID, x.reason
		if x.typ != "" {
			r.Type = x.typ
		}
	}
	return r
}

func unixNano(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// lru is a list of entries, most recently used first, whose elements hold their values (a
// container/list element and its boxed value would cost each entry some 64 bytes more).
type lru[T any] struct {
	head, tail *entry[T]
	n          int
}

// entry is an element of an lru.
type entry[T any] struct {
	prev, next *entry[T]
	v          T
}

func (l *lru[T]) pushFront(e *entry[T]) {
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	} else {
		l.tail = e
	}
	l.head = e
	l.n++
}

func (l *lru[T]) remove(e *entry[T]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	l.n--
}

func (l *lru[T]) moveToFront(e *entry[T]) {
	if l.head == e {
		return
	}
	l.remove(e)
	l.pushFront(e)
}

// viewUser is the view's copy of a user and its effective roles, compact for the same reason as
// viewSession: times are Unix nanoseconds (0: none), and the roles are an interned set, shared.
type viewUser struct {
	load uint64
	// strs holds the user's id, username, email and display name (see viewSession.set).
	strs                  packed[[4]uint32]
	create, update        int64
	disabled, hasPassword bool
	roles                 []string
}

func (e *viewUser) id() string { return e.strs.get(0) }

// set copies u and roles into e.
func (e *viewUser) set(u *gatehousev1.User, roles []string) {
	e.strs = pack[[4]uint32](u.Id, u.Username, u.Email, u.DisplayName)
	e.create, e.update = timestampNano(u.CreateTime), timestampNano(u.UpdateTime)
	e.disabled, e.hasPassword, e.roles = u.Disabled, u.HasPassword, roles
}

// user returns the user e holds, as a message of its own.
func (e *viewUser) user() *gatehousev1.User {
	return &gatehousev1.User{
		Id: e.id(), Username: e.strs.get(1), Email: e.strs.get(2), DisplayName: e.strs.get(3), Disabled: e.disabled,
		CreateTime: nanoTimestamp(e.create), UpdateTime: nanoTimestamp(e.update), HasPassword: e.hasPassword,
	}
}

func timestampNano(t *timestamppb.Timestamp) int64 {
	if t == nil {
		return 0
	}
	return t.AsTime().UnixNano()
}

func nanoTimestamp(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

// maxRoleSets bounds the interned role sets; past it the view starts a new set of them.
const maxRoleSets = 10_000

// internRoles returns the view's copy of a role set equal to roles; v.mu is held.
func (v *view) internRoles(roles []string) []string {
	if len(roles) == 0 {
		return nil
	}
	key := strings.Join(roles, "\x00")
	if r, ok := v.roleSets[key]; ok {
		return r
	}
	if len(v.roleSets) >= maxRoleSets {
		v.roleSets = map[string][]string{}
	}
	r := slices.Clip(roles)
	v.roleSets[key] = r
	return r
}

// maxDropped bounds the drop marks kept; past it they are forgotten and every load in flight is
// refused instead.
const maxDropped = 50_000

func newView(size int) *view {
	if size <= 0 {
		size = DefaultViewSize
	}
	return &view{
		max: size, dropped: map[string]uint64{},
		byHash: map[string]*entry[viewSession]{}, byID: map[string]*entry[viewSession]{},
		ofUser: map[string]*entry[viewSession]{}, byUser: map[string]*entry[viewUser]{},
		roleSets: map[string][]string{},
		watchers: newWatchers(),
	}
}

// begin returns the tick of a load about to read the database.
func (v *view) begin() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clock++
	return v.clock
}

// session returns a copy of the cached session with this token hash.
func (v *view) session(hash string) (ent.Session, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byHash[hash]
	if !ok {
		return ent.Session{}, false
	}
	v.sessions.moveToFront(e)
	return e.v.row(), true
}

// idleExpiry returns the idle expiry of the cached session with this id, if it is cached.
func (v *view) idleExpiry(id string) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byID[id]
	if !ok {
		return time.Time{}, false
	}
	return unixNano(e.v.idle), true
}

// user returns the cached user and roles (the roles are shared: read only).
func (v *view) user(id string) (*gatehousev1.User, []string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byUser[id]
	if !ok {
		return nil, nil, false
	}
	v.users.moveToFront(e)
	return e.v.user(), e.v.roles, true
}

// roles returns a cached user's effective roles (the view's interned, shared slice: read only),
// without building the user's message as user does.
func (v *view) roles(id string) ([]string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byUser[id]
	if !ok {
		return nil, false
	}
	v.users.moveToFront(e)
	return e.v.roles, true
}

// fresh reports whether a load that began at tick may fill key; v.mu is held.
func (v *view) fresh(tick uint64, keys ...string) bool {
	if tick < v.floor {
		return false
	}
	for _, k := range keys {
		if v.dropped[k] >= tick {
			return false
		}
	}
	return true
}

// fillSession caches a session row loaded at tick.
func (v *view) fillSession(tick uint64, hash string, row *ent.Session) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.fresh(tick, "s:"+row.ID, "u:"+row.UserID) {
		return
	}
	if e, ok := v.byHash[hash]; ok {
		if e.v.load < tick && e.v.id() == row.ID {
			e.v.load = tick
			e.v.set(hash, row)
			// The maps' keys move to the new strings, so that the old ones can go.
			v.byHash[e.v.hash()], v.byID[e.v.id()] = e, e
			if v.ofUser[e.v.userID()] == e {
				v.ofUser[e.v.userID()] = e
			}
		}
		v.sessions.moveToFront(e)
		return
	}
	e := &entry[viewSession]{v: viewSession{load: tick}}
	e.v.set(hash, row)
	v.sessions.pushFront(e)
	v.byHash[e.v.hash()], v.byID[e.v.id()] = e, e
	if first := v.ofUser[e.v.userID()]; first != nil {
		e.v.sameUser.next, first.v.sameUser.prev = first, e
	}
	v.ofUser[e.v.userID()] = e
	for v.sessions.n > v.max {
		v.removeSession(v.sessions.tail)
	}
}

// fillUser caches a user and its roles loaded at tick.
func (v *view) fillUser(tick uint64, u *gatehousev1.User, roles []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.fresh(tick, "u:"+u.Id) {
		return
	}
	// NOTE: the map's key is the entry's own copy of the id, never u.Id, a string of its own that
	// the map would keep alive next to the copy (3.5 MiB for 100,000 users); when the entry is set
	// again, the key moves to the new copy, so that the old one can go.
	if e, ok := v.byUser[u.Id]; ok {
		if e.v.load < tick {
			e.v.load = tick
			e.v.set(u, v.internRoles(roles))
			v.byUser[e.v.id()] = e
		}
		v.users.moveToFront(e)
		return
	}
	e := &entry[viewUser]{v: viewUser{load: tick}}
	e.v.set(u, v.internRoles(roles))
	v.users.pushFront(e)
	v.byUser[e.v.id()] = e
	for v.users.n > v.max {
		v.removeUser(v.users.tail)
	}
}

// touch records activity on a cached session (only the view's copy: see writeBack), and returns
// the view's copies of the session's id and its user's id (ok false when it is not cached).
func (v *view) touch(hash string, lastActive, idle time.Time) (id, user string, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byHash[hash]
	if !ok {
		return "", "", false
	}
	if e.v.lastActive < lastActive.UnixNano() {
		e.v.lastActive, e.v.idle = lastActive.UnixNano(), idle.UnixNano()
		v.watchers.touched(e.v.id())
	}
	return e.v.id(), e.v.userID(), true
}

func (v *view) removeSession(e *entry[viewSession]) {
	delete(v.byHash, e.v.hash())
	delete(v.byID, e.v.id())
	prev, next := e.v.sameUser.prev, e.v.sameUser.next
	switch {
	case prev != nil:
		prev.v.sameUser.next = next
	case next != nil:
		v.ofUser[next.v.userID()] = next
	default:
		delete(v.ofUser, e.v.userID())
	}
	if next != nil {
		next.v.sameUser.prev = prev
	}
	e.v.sameUser.prev, e.v.sameUser.next = nil, nil
	v.sessions.remove(e)
}

func (v *view) removeUser(e *entry[viewUser]) {
	delete(v.byUser, e.v.id())
	v.users.remove(e)
}

// drop forgets key's entry and refuses loads that began before now; v.mu is held.
func (v *view) drop(key string) {
	v.dropped[key] = v.clock
}

// dropSession forgets session id and refuses loads of it that began before now; v.mu is held.
func (v *view) dropSession(id string) {
	v.drop("s:" + id)
	if e, ok := v.byID[id]; ok {
		v.removeSession(e)
	}
}

// forget drops session id, whose copy the database disagrees with (the write-back found its row
// in another state than the copy said), so that it is read again, and its streams look at its
// expiries again.
func (v *view) forget(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clock++
	v.dropSession(id)
	v.watchers.touched(id)
}

// apply drops what a batch of committed events may have changed. It runs on the tailer's
// goroutine (events.Hub.OnCommit), before the tailer's round is over.
func (v *view) apply(recs []events.Record) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clock++
	for _, r := range recs {
		ev := r.Event
		switch ev.Type {
		case gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED:
			v.dropSession(ev.SessionId)
		case gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED:
			// NOTE: activity, possibly on another node, moved an idle expiry that this node's
			// streams of the session may have warned of: the session is read again, and its
			// streams look at its expiries again.
			v.dropSession(ev.SessionId)
			v.watchers.touched(ev.SessionId)
		case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, gatehousev1.EventType_EVENT_TYPE_USER_UPDATED,
			gatehousev1.EventType_EVENT_TYPE_USER_DISABLED, gatehousev1.EventType_EVENT_TYPE_USER_DELETED,
			gatehousev1.EventType_EVENT_TYPE_PASSWORD_CHANGED:
			// NOTE: a role change can also move the expiries of the user's sessions (role
			// policies), so their sessions go too.
			v.drop("u:" + ev.UserId)
			if e, ok := v.byUser[ev.UserId]; ok {
				v.removeUser(e)
			}
			for e := v.ofUser[ev.UserId]; e != nil; e = v.ofUser[ev.UserId] {
				v.removeSession(e)
			}
		case gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED, gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED,
			gatehousev1.EventType_EVENT_TYPE_POLICY_DELETED:
			// NOTE: a policy change moves the expiries of every session it covers, and writes
			// no event per session: everything goes, and every stream looks at its session's
			// expiries again. Policy changes are rare.
			v.flush()
			v.watchers.moved()
		}
	}
	if len(v.dropped) > maxDropped {
		v.dropped = map[string]uint64{}
		v.floor = v.clock + 1
	}
}

// flush empties the view; v.mu is held.
func (v *view) flush() {
	v.sessions, v.users = lru[viewSession]{}, lru[viewUser]{}
	v.byHash, v.byID, v.byUser = map[string]*entry[viewSession]{}, map[string]*entry[viewSession]{}, map[string]*entry[viewUser]{}
	v.ofUser = map[string]*entry[viewSession]{}
	v.dropped = map[string]uint64{}
	v.floor = v.clock + 1
}

// size returns how many sessions and users the view holds.
func (v *view) size() (sessions, users int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sessions.n, v.users.n
}
