package session

import (
	"context"
	"log/slog"
	"sync"
	"time"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// writeBackInterval is how often a node writes the activity of its sessions back.
const writeBackInterval = 250 * time.Millisecond

// activity is one session's activity to write back: its new last activity and idle expiry, and
// the values the node read, which the row must still have.
type activity struct {
	id         string
	last, idle time.Time
	now        time.Time
	newIdle    time.Time
}

// writeBack is a node's batcher of last-activity writes, off the request path.
type writeBack struct {
	st  *store.Store
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]activity
	failing bool
}

func newWriteBack(st *store.Store, log *slog.Logger) *writeBack {
	return &writeBack{st: st, log: log, pending: map[string]activity{}}
}

func (w *writeBack) add(a activity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addLocked(a)
}

// addLocked records a unless newer activity of the same session is pending; w.mu is held.
func (w *writeBack) addLocked(a activity) {
	if p, ok := w.pending[a.id]; ok && !p.now.Before(a.now) {
		return
	}
	w.pending[a.id] = a
}

// RunWriteBack writes the activity of the node's sessions back every writeBackInterval until
// ctx ends, then once more.
func (s *Service) RunWriteBack(ctx context.Context) error {
	if s.writeBack == nil {
		return nil
	}
	t := time.NewTicker(writeBackInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			s.writeBack.flush(fctx)
			cancel()
			return nil
		case <-t.C:
			s.writeBack.flush(ctx)
		}
	}
}

// flush writes what is pending, one single-row statement per session.
//
// NOTE: one row per statement, outside any transaction, so that the write-back never holds one
// session's lock while waiting for another's, and cannot deadlock with the transactions that lock
// a user and then its sessions. Each update applies only if the row still has the last activity
// and idle expiry the node read: a policy change (which moved the idle expiry) or another node's
// write wins, and the node's view of that session was dropped or is a lower bound anyway.
func (w *writeBack) flush(ctx context.Context) {
	w.mu.Lock()
	batch := w.pending
	w.pending = map[string]activity{}
	w.mu.Unlock()
	var failed error
	for id, a := range batch {
		err := w.st.Client.Session.Update().
			Where(entsession.ID(a.id), entsession.Active(true), entsession.LastActiveTime(a.last), entsession.IdleExpireTime(a.idle)).
			SetLastActiveTime(a.now).SetIdleExpireTime(a.newIdle).Exec(ctx)
		if err != nil {
			failed = err
			break
		}
		delete(batch, id)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// NOTE: what was not written goes back (unless newer activity of the same session came in
	// meanwhile): the node's view already extended those sessions' idle expiry, and a sweeper
	// reading the old one from the database would end a session its user is still using.
	for _, a := range batch {
		w.addLocked(a)
	}
	if failed != nil && !w.failing {
		w.log.Warn("writing session activity back failed; it is retried at the next flush", "err", failed)
	}
	w.failing = failed != nil
}
