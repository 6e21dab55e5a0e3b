package session

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// batcher coalesces the reads by key that many callers make at the same moment into rounds, each
// one read of up to store.MaxInList keys. It exists for the streams: one role change to a group
// wakes the WatchSession of every member at once, and each then needs its user's roles and its
// session's expiries; 10,000 point queries became a few dozen reads of 500 rows.
//
// NOTE: a call joins the next round to begin, never one already reading: a round that began
// before the call may have read the database before the change that made the caller ask. So no
// answer is older than the database was when its call began, as with a read of its own. A lone
// call waits for no one: its round begins at once.
type batcher[V any] struct {
	read func(ctx context.Context, keys []string) (map[string]V, error)

	mu      sync.Mutex
	waiting []*batchCall[V]
	running bool

	// changed is a test hook, nil otherwise: called, with b.mu held, after the waiting calls or
	// the running state changed.
	changed func()
}

// batchCall is one caller's key and, once its round has read, the answer.
type batchCall[V any] struct {
	key  string
	done chan struct{}
	v    V
	ok   bool
	err  error
	// left is set, under the batcher's mu, when the caller stopped waiting before its round
	// began: the round leaves its key out.
	left bool
}

// batchTimeout bounds one round's read (its callers may have gone).
const batchTimeout = 30 * time.Second

func newBatcher[V any](read func(ctx context.Context, keys []string) (map[string]V, error)) *batcher[V] {
	return &batcher[V]{read: read}
}

// get returns the value of key as a round that began after the call read it; ok is false when the
// read found no such key.
func (b *batcher[V]) get(ctx context.Context, key string) (v V, ok bool, err error) {
	c := &batchCall[V]{key: key, done: make(chan struct{})}
	b.mu.Lock()
	b.waiting = append(b.waiting, c)
	if !b.running {
		b.running = true
		// NOTE: the rounds run apart from any caller, which may leave while its round reads;
		// they keep the first caller's values (logger, trace), not its cancellation.
		go b.run(context.WithoutCancel(ctx))
	}
	b.change()
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.ok, c.err
	case <-ctx.Done():
		b.mu.Lock()
		c.left = true
		b.change()
		b.mu.Unlock()
		return v, false, ctx.Err()
	}
}

// run reads rounds until no call is waiting.
func (b *batcher[V]) run(ctx context.Context) {
	for {
		b.mu.Lock()
		calls := b.take()
		if len(calls) == 0 {
			b.running = false
		}
		b.change()
		b.mu.Unlock()
		if len(calls) == 0 {
			return
		}
		keys := make([]string, 0, len(calls))
		for _, c := range calls {
			keys = append(keys, c.key)
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		rctx, cancel := context.WithTimeout(ctx, batchTimeout)
		got, err := b.read(rctx, keys)
		cancel()
		for _, c := range calls {
			if err != nil {
				c.err = err
			} else {
				c.v, c.ok = got[c.key]
			}
			close(c.done)
		}
	}
}

// change calls the test hook; b.mu is held.
func (b *batcher[V]) change() {
	if b.changed != nil {
		b.changed()
	}
}

// take removes the calls of the next round from the waiting ones: those of the oldest
// store.MaxInList distinct keys. Calls whose caller left are dropped. b.mu is held.
func (b *batcher[V]) take() []*batchCall[V] {
	keys := map[string]bool{}
	var calls, rest []*batchCall[V]
	for _, c := range b.waiting {
		if c.left {
			continue
		}
		if !keys[c.key] && len(keys) < store.MaxInList {
			keys[c.key] = true
		}
		if keys[c.key] {
			calls = append(calls, c)
		} else {
			rest = append(rest, c)
		}
	}
	b.waiting = rest
	return calls
}

// userRoles is a user with its effective roles, as one read of the database found them.
type userRoles struct {
	user  *gatehousev1.User
	roles []string
}

// readUsers reads users and their effective roles, filling the view; users absent from the
// database are absent from the map.
func (s *Service) readUsers(ctx context.Context, ids []string) (map[string]userRoles, error) {
	tick := s.view.begin()
	rows, err := s.store.Client.User.Query().Where(entuser.IDIn(ids...)).All(ctx)
	if err != nil {
		return nil, err
	}
	roles, err := s.store.RoleNamesOf(ctx, s.store.DB, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]userRoles, len(rows))
	for _, row := range rows {
		u := userRoles{user: convert.User(row), roles: roles[row.ID]}
		s.view.fillUser(tick, u.user, u.roles)
		out[row.ID] = u
	}
	return out, nil
}

// readSessions reads sessions by id; sessions absent from the database are absent from the map.
func (s *Service) readSessions(ctx context.Context, ids []string) (map[string]*ent.Session, error) {
	rows, err := s.store.Client.Session.Query().Where(entsession.IDIn(ids...)).All(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*ent.Session, len(rows))
	for _, row := range rows {
		out[row.ID] = row
	}
	return out, nil
}

// readImpersonations reads the active sessions that impersonators opened for each of users.
func (s *Service) readImpersonations(ctx context.Context, users []string) (map[string][]*ent.Session, error) {
	rows, err := s.store.Client.Session.Query().
		Where(entsession.UserIDIn(users...), entsession.Active(true), entsession.ImpersonatorUserIDNEQ("")).All(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]*ent.Session{}
	for _, row := range rows {
		out[row.UserID] = append(out[row.UserID], row)
	}
	return out, nil
}

// streamRoles returns a user's effective roles for a stream: from the view, or else read in a
// round shared with the other streams asking at the same moment (and filled into the view). A
// deleted user gives ent's not-found error.
func (s *Service) streamRoles(ctx context.Context, userID string) ([]string, error) {
	// NOTE: every stream of a user whose roles changed asks at once; the view's roles alone,
	// without the user's message and its timestamps for each.
	if roles, ok := s.view.roles(userID); ok {
		return roles, nil
	}
	u, ok, err := s.usersBatch.get(ctx, userID)
	if err != nil {
		return nil, err
	}
	if !ok {
		// The user is gone: ent's own error for it, from a read of its own.
		_, roles, err := s.userAndRoles(ctx, userID, true)
		return roles, err
	}
	return u.roles, nil
}

// streamSession returns a session's row for a stream, read in a round shared with the other
// streams asking at the same moment; nil when there is no such session.
func (s *Service) streamSession(ctx context.Context, id string) (*ent.Session, error) {
	row, _, err := s.sessionsBatch.get(ctx, id)
	return row, err
}
