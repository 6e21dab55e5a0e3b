package session

import (
	"container/list"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/ent"
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
	floor    uint64
	dropped  map[string]uint64
	sessions *list.List // of *viewSession, most recently used first
	byHash   map[string]*list.Element
	byID     map[string]*list.Element
	// ofUser indexes the cached sessions by user id.
	ofUser map[string]map[string]*list.Element
	users  *list.List // of *viewUser
	byUser map[string]*list.Element
	// watchers are the node's WatchSession streams, woken when the view learns that a session's
	// expiries moved (see expiring.go).
	watchers *watchers
}

type viewSession struct {
	hash string
	load uint64
	row  ent.Session
}

type viewUser struct {
	id    string
	load  uint64
	user  *gatehousev1.User
	roles []string
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
		sessions: list.New(), byHash: map[string]*list.Element{}, byID: map[string]*list.Element{},
		ofUser: map[string]map[string]*list.Element{}, users: list.New(), byUser: map[string]*list.Element{},
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
	el, ok := v.byHash[hash]
	if !ok {
		return ent.Session{}, false
	}
	v.sessions.MoveToFront(el)
	return el.Value.(*viewSession).row, true
}

// idleExpiry returns the idle expiry of the cached session with this id, if it is cached.
func (v *view) idleExpiry(id string) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	el, ok := v.byID[id]
	if !ok {
		return time.Time{}, false
	}
	return el.Value.(*viewSession).row.IdleExpireTime, true
}

// user returns the cached user and roles (shared: read only).
func (v *view) user(id string) (*gatehousev1.User, []string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	el, ok := v.byUser[id]
	if !ok {
		return nil, nil, false
	}
	v.users.MoveToFront(el)
	u := el.Value.(*viewUser)
	return u.user, u.roles, true
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
	if el, ok := v.byHash[hash]; ok {
		e := el.Value.(*viewSession)
		if e.load < tick {
			e.load, e.row = tick, *row
		}
		v.sessions.MoveToFront(el)
		return
	}
	el := v.sessions.PushFront(&viewSession{hash: hash, load: tick, row: *row})
	v.byHash[hash], v.byID[row.ID] = el, el
	m := v.ofUser[row.UserID]
	if m == nil {
		m = map[string]*list.Element{}
		v.ofUser[row.UserID] = m
	}
	m[row.ID] = el
	for v.sessions.Len() > v.max {
		v.removeSession(v.sessions.Back())
	}
}

// fillUser caches a user and its roles loaded at tick.
func (v *view) fillUser(tick uint64, u *gatehousev1.User, roles []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.fresh(tick, "u:"+u.Id) {
		return
	}
	if el, ok := v.byUser[u.Id]; ok {
		e := el.Value.(*viewUser)
		if e.load < tick {
			e.load, e.user, e.roles = tick, u, roles
		}
		v.users.MoveToFront(el)
		return
	}
	v.byUser[u.Id] = v.users.PushFront(&viewUser{id: u.Id, load: tick, user: u, roles: roles})
	for v.users.Len() > v.max {
		el := v.users.Back()
		delete(v.byUser, el.Value.(*viewUser).id)
		v.users.Remove(el)
	}
}

// touch records activity on a cached session (only the view's copy: see writeBack).
func (v *view) touch(hash string, lastActive, idle time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if el, ok := v.byHash[hash]; ok {
		e := el.Value.(*viewSession)
		if e.row.LastActiveTime.Before(lastActive) {
			e.row.LastActiveTime, e.row.IdleExpireTime = lastActive, idle
			v.watchers.touched(e.row.ID)
		}
	}
}

func (v *view) removeSession(el *list.Element) {
	e := el.Value.(*viewSession)
	delete(v.byHash, e.hash)
	delete(v.byID, e.row.ID)
	if m := v.ofUser[e.row.UserID]; m != nil {
		delete(m, e.row.ID)
		if len(m) == 0 {
			delete(v.ofUser, e.row.UserID)
		}
	}
	v.sessions.Remove(el)
}

// drop forgets key's entry and refuses loads that began before now; v.mu is held.
func (v *view) drop(key string) {
	v.dropped[key] = v.clock
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
			v.drop("s:" + ev.SessionId)
			if el, ok := v.byID[ev.SessionId]; ok {
				v.removeSession(el)
			}
		case gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED:
			// NOTE: activity, possibly on another node, moved an idle expiry that this node's
			// streams of the session may have warned of: the session is read again, and its
			// streams look at its expiries again.
			v.drop("s:" + ev.SessionId)
			if el, ok := v.byID[ev.SessionId]; ok {
				v.removeSession(el)
			}
			v.watchers.touched(ev.SessionId)
		case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, gatehousev1.EventType_EVENT_TYPE_USER_UPDATED,
			gatehousev1.EventType_EVENT_TYPE_USER_DISABLED, gatehousev1.EventType_EVENT_TYPE_USER_DELETED,
			gatehousev1.EventType_EVENT_TYPE_PASSWORD_CHANGED:
			// NOTE: a role change can also move the expiries of the user's sessions (role
			// policies), so their sessions go too.
			v.drop("u:" + ev.UserId)
			if el, ok := v.byUser[ev.UserId]; ok {
				delete(v.byUser, ev.UserId)
				v.users.Remove(el)
			}
			for _, el := range v.ofUser[ev.UserId] {
				v.removeSession(el)
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
	v.sessions.Init()
	v.users.Init()
	v.byHash, v.byID, v.byUser = map[string]*list.Element{}, map[string]*list.Element{}, map[string]*list.Element{}
	v.ofUser = map[string]map[string]*list.Element{}
	v.dropped = map[string]uint64{}
	v.floor = v.clock + 1
}

// size returns how many sessions and users the view holds.
func (v *view) size() (sessions, users int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sessions.Len(), v.users.Len()
}
