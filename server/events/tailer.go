package events

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/server/errs"
)

// DefaultPollInterval is how often a tailer reads the log when nothing woke it: a lost
// notification costs at most this much latency, never an event.
const DefaultPollInterval = 500 * time.Millisecond

// Tailer is a node's one reader of the event log. It reads in rounds: each takes a snapshot of
// the database's commits and the events committed since the previous one (Source.Poll), gives
// them at once to the hub's OnCommit listeners, and publishes, in log order, those that the new
// snapshot settles (Snapshot.Bound). A round runs when a notification or an in-process commit
// wakes the tailer, when a reader waits for freshness (Sync), and on a timer.
type Tailer struct {
	src  Source
	hub  *Hub
	log  *slog.Logger
	poll time.Duration
	wake chan struct{}
	// lag observes, for each event settled, the time from its commit to its publication.
	lag func(time.Duration)

	mu sync.Mutex
	// started and finished count rounds; a round's number is started after it began.
	started, finished uint64
	// lastErr is the error of round number finished, nil if it succeeded.
	lastErr error
	// roundDone is closed, and replaced, when a round finishes.
	roundDone chan struct{}
	snap      Snapshot
	ready     bool
	// pending are events seen but not yet settled, in no order.
	pending []Record
}

// TailerOptions tunes a tailer.
type TailerOptions struct {
	// PollInterval is the timer's period (DefaultPollInterval when zero).
	PollInterval time.Duration
	// Lag, if set, observes each settled event's delay from its commit time to its publication.
	Lag func(time.Duration)
}

// NewTailer returns a tailer of src that feeds hub. Run starts it.
func NewTailer(src Source, hub *Hub, log *slog.Logger, opts TailerOptions) *Tailer {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Lag == nil {
		opts.Lag = func(time.Duration) {}
	}
	return &Tailer{src: src, hub: hub, log: log, poll: opts.PollInterval, lag: opts.Lag,
		wake: make(chan struct{}, 1), roundDone: make(chan struct{})}
}

// Wake asks for a round soon. It never blocks; wake-ups that arrive while one is pending
// coalesce into one round.
func (t *Tailer) Wake() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Run reads the log until ctx ends. It takes its first snapshot before returning from Start
// (see Start), so that the node's streams begin at a known place.
func (t *Tailer) Run(ctx context.Context) error {
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		if err := t.src.Listen(ctx, t.Wake); err != nil && ctx.Err() == nil {
			t.log.Error("event log: the listening connection stopped; falling back to polling", "err", err)
		}
	}()
	defer func() { <-listenDone }()

	timer := time.NewTimer(t.poll)
	defer timer.Stop()
	failing := false
	backoff := 50 * time.Millisecond
	recheck := firstRecheck
	for {
		err := t.round(ctx)
		switch {
		case ctx.Err() != nil:
			t.finishAll(errs.Unavailable("NODE_SHUTTING_DOWN", "the node is shutting down"))
			return nil
		case err != nil:
			if !failing {
				t.log.Warn("event log: reading the log failed; retrying", "err", err)
			}
			failing = true
			select {
			case <-ctx.Done():
				continue
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, t.poll)
			continue
		case failing:
			t.log.Info("event log: reading the log works again")
			failing, backoff = false, 50*time.Millisecond
		}
		// NOTE: events seen but held back by the horizon wait for an older transaction to end.
		// If that transaction wrote events, its commit wakes every tailer; if it wrote none (a
		// session's activity write-back, another application on the same cluster), nothing
		// would, so the tailer looks again soon, backing off up to the poll interval.
		next := t.poll
		if t.heldBack() {
			next, recheck = recheck, min(recheck*2, t.poll)
		} else {
			recheck = firstRecheck
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(min(next, t.poll))
		select {
		case <-ctx.Done():
		case <-t.wake:
		case <-timer.C:
		}
	}
}

// firstRecheck is how soon a tailer reads again when the horizon held events back.
const firstRecheck = 2 * time.Millisecond

// heldBack reports whether the last round saw events that the horizon did not settle yet.
func (t *Tailer) heldBack() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) > 0
}

// Start takes the tailer's first snapshot, so that the hub's bound is known before the node
// serves. It retries until ctx ends.
func (t *Tailer) Start(ctx context.Context) error {
	return t.round(ctx)
}

// round runs one round.
func (t *Tailer) round(ctx context.Context) error {
	t.mu.Lock()
	t.started++
	n := t.started
	var prev *Snapshot
	if t.ready {
		s := t.snap
		prev = &s
	}
	t.mu.Unlock()

	snap, recs, err := t.src.Poll(ctx, prev)
	if err != nil {
		t.finish(n, err)
		return err
	}
	if len(recs) > 0 {
		t.hub.commit(recs)
	}
	bound := snap.Bound()
	t.mu.Lock()
	t.pending = append(t.pending, recs...)
	var settled []Record
	keep := t.pending[:0]
	for _, r := range t.pending {
		if r.Pos.Less(bound) {
			settled = append(settled, r)
		} else {
			keep = append(keep, r)
		}
	}
	// NOTE: clear the tail so that the settled records the shrunken slice no longer shows are
	// not kept alive by its backing array.
	clear(t.pending[len(keep):])
	t.pending = keep
	t.snap, t.ready = snap, true
	t.mu.Unlock()

	slices.SortFunc(settled, func(a, b Record) int {
		switch {
		case a.Pos.Less(b.Pos):
			return -1
		case b.Pos.Less(a.Pos):
			return 1
		}
		return 0
	})
	t.hub.publish(settled, bound)
	now := time.Now()
	for _, r := range settled {
		if ts := r.Event.GetTime(); ts != nil {
			t.lag(now.Sub(ts.AsTime()))
		}
	}
	t.finish(n, nil)
	return nil
}

func (t *Tailer) finish(n uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished, t.lastErr = n, err
	close(t.roundDone)
	t.roundDone = make(chan struct{})
}

// finishAll fails every waiter with err: the tailer stops.
func (t *Tailer) finishAll(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started++
	t.finished, t.lastErr = t.started, err
	close(t.roundDone)
	t.roundDone = make(chan struct{})
}

// Sync returns once a round that began after Sync was called has finished: the hub's listeners
// have then seen every event committed before the call. Concurrent callers share rounds, so the
// database sees one query per round however many wait. It returns UNAVAILABLE when that round
// failed (the database does not answer), or ctx's error.
func (t *Tailer) Sync(ctx context.Context) error {
	t.mu.Lock()
	need := t.started + 1
	t.mu.Unlock()
	t.Wake()
	for {
		t.mu.Lock()
		finished, lastErr, done := t.finished, t.lastErr, t.roundDone
		t.mu.Unlock()
		if finished >= need {
			if lastErr != nil {
				var e *errs.Error
				if errors.As(lastErr, &e) {
					return e
				}
				return errs.Unavailable("DATABASE_UNAVAILABLE", "the node cannot read the event log: the database does not answer")
			}
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Snapshot returns the snapshot of the last round that succeeded.
func (t *Tailer) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snap
}
