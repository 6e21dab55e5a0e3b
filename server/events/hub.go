package events

import (
	"sync"

	"github.com/gatehouse/gatehouse/server/errs"
)

// ReasonTooSlow is the ErrorInfo reason of a stream cut off because it did not keep up.
const ReasonTooSlow = "SUBSCRIBER_TOO_SLOW"

// DefaultBuffer is the number of batches a subscriber may have waiting before it is cut off.
const DefaultBuffer = 256

// Hub fans the tailer's output out to the node's caches and streams. It does no database work:
// a batch is handed to every subscriber as one shared slice.
type Hub struct {
	buffer int

	mu        sync.Mutex
	bound     Position
	closedErr error
	all       map[*Subscription]struct{}
	users     map[string]map[*Subscription]struct{}
	listeners []func([]Record)
}

// NewHub returns a hub whose subscribers may have buffer batches waiting (DefaultBuffer when
// zero or less).
func NewHub(buffer int) *Hub {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	return &Hub{buffer: buffer, all: map[*Subscription]struct{}{}, users: map[string]map[*Subscription]struct{}{}}
}

// OnCommit registers fn to receive every committed event as soon as the tailer sees it, before
// the event is settled in log order: batches are in no particular order, and an event may come
// before one at a lower position. Caches use it (they drop what an event may have changed, which
// does not depend on order). fn runs on the tailer's goroutine and must not block.
//
// NOTE: this is how the node resolves the cluster-wide horizon (pg_snapshot_xmin). One long
// transaction anywhere on the PostgreSQL server (a 10,000-member grant, another application's
// batch job) holds back Snapshot.Bound for every node, so what waits for the bound (Subscribe's
// ordered streams) waits for it. What must not wait does not: a round hands every event that is
// visible in its snapshot to OnCommit at once, whatever the bound, and Sync returns once such a
// round has run. Read-your-writes on the mutating node (it wakes its own tailer after commit) and
// validations on every node therefore see a change as soon as it has committed, however old the
// oldest running transaction is. Publishing early cannot break the order other subscribers see,
// because nothing reaches Subscribe before the bound passes it, and the caches cannot end up older
// than the database because they never apply an event's content: they drop the entries it may
// have changed and read them again (session.view).
func (h *Hub) OnCommit(fn func([]Record)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listeners = append(h.listeners, fn)
}

func (h *Hub) commit(recs []Record) {
	h.mu.Lock()
	ls := h.listeners
	h.mu.Unlock()
	for _, fn := range ls {
		fn(recs)
	}
}

// Subscription receives the events published after it was made, in log order, as batches. A
// subscription for a user receives only the events whose user_id is that user.
//
// NOTE: the batches wait in a queue that grows as they come, not in a channel of the buffer's
// size: a node holds one subscription per open stream, most of them idle, and a channel of 256
// batches cost each 6 KiB before its first event.
type Subscription struct {
	hub  *Hub
	user string
	// ready holds a token while batches wait in queue.
	ready chan struct{}
	done  chan struct{}
	once  sync.Once
	err   error

	mu    sync.Mutex
	queue [][]Record
}

// Subscribe returns a subscription for the events of user (every event when user is empty), and
// the hub's bound when it was made: every event before the bound was published before, every
// event from it on will reach the subscription. After Close(err) it returns a subscription that
// has already ended with err.
func (h *Hub) Subscribe(user string) (*Subscription, Position) {
	s := &Subscription{hub: h, user: user, ready: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closedErr != nil {
		s.end(h.closedErr)
		return s, h.bound
	}
	if user == "" {
		h.all[s] = struct{}{}
	} else {
		m := h.users[user]
		if m == nil {
			m = map[*Subscription]struct{}{}
			h.users[user] = m
		}
		m[s] = struct{}{}
	}
	return s, h.bound
}

// Ready receives a value when batches are waiting: Take them.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the waiting batches, oldest first, and empties the queue.
func (s *Subscription) Take() [][]Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// Done is closed when the subscription has been ended by the hub; Err then says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is why the hub ended the subscription (nil before Done is closed).
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close unsubscribes. It is safe to call more than once, and after the hub ended it.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	s.hub.remove(s)
	s.hub.mu.Unlock()
}

func (s *Subscription) end(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// remove drops s from the hub; h.mu is held.
func (h *Hub) remove(s *Subscription) {
	if s.user == "" {
		delete(h.all, s)
		return
	}
	if m := h.users[s.user]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.users, s.user)
		}
	}
}

// publish hands a batch of settled events, in log order, to the subscribers, and moves the bound
// to bound. A subscriber whose buffer is full is cut off with RESOURCE_EXHAUSTED
// SUBSCRIBER_TOO_SLOW rather than waited for: it resumes from its cursor, and nobody else is
// slowed.
func (h *Hub) publish(recs []Record, bound Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bound.Less(bound) {
		h.bound = bound
	}
	if len(recs) == 0 || h.closedErr != nil {
		return
	}
	for s := range h.all {
		h.send(s, recs)
	}
	if len(h.users) == 0 {
		return
	}
	var byUser map[string][]Record
	for _, r := range recs {
		if _, ok := h.users[r.Event.UserId]; ok {
			if byUser == nil {
				byUser = map[string][]Record{}
			}
			byUser[r.Event.UserId] = append(byUser[r.Event.UserId], r)
		}
	}
	for u, batch := range byUser {
		for s := range h.users[u] {
			h.send(s, batch)
		}
	}
}

// send delivers to one subscriber without blocking; h.mu is held.
func (h *Hub) send(s *Subscription, recs []Record) {
	s.mu.Lock()
	full := len(s.queue) >= h.buffer
	if !full {
		s.queue = append(s.queue, recs)
	}
	s.mu.Unlock()
	if full {
		h.remove(s)
		s.end(errs.ResourceExhausted(ReasonTooSlow,
			"the stream fell too far behind and was cut off; resume from the cursor of the last event received"))
		return
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Bound returns the bound of what the hub has published: every event before it has been
// published.
func (h *Hub) Bound() Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bound
}

// Close ends every subscription, present and future, with err (for a node shutting down:
// UNAVAILABLE, so that clients resume on another node).
func (h *Hub) Close(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closedErr != nil {
		return
	}
	h.closedErr = err
	for s := range h.all {
		s.end(err)
	}
	for _, m := range h.users {
		for s := range m {
			s.end(err)
		}
	}
	h.all, h.users = map[*Subscription]struct{}{}, map[string]map[*Subscription]struct{}{}
}

// Subscribers returns how many subscriptions are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.all)
	for _, m := range h.users {
		n += len(m)
	}
	return n
}
