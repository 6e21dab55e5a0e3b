package events

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/server/errs"
)

// Live is a node's live layer: its tailer and hub over the log, and the readers built on them.
// Handlers and domain packages read the log only through it.
type Live struct {
	src    Source
	hub    *Hub
	tailer *Tailer
	// syncTimeout bounds how long a read waits for the node's view to reach a consistency token
	// before it reads the database directly.
	syncTimeout time.Duration
}

// Options tunes the live layer.
type Options struct {
	Tailer TailerOptions
	// Buffer is the number of batches a subscriber may have waiting (DefaultBuffer when zero).
	Buffer int
	// SyncTimeout bounds the wait for a consistency token (DefaultSyncTimeout when zero).
	SyncTimeout time.Duration
}

// DefaultSyncTimeout bounds how long a read with at_least_as_fresh waits for the node's view.
const DefaultSyncTimeout = 2 * time.Second

// New returns the live layer over src. Start takes its first snapshot; Run runs its tailer.
func New(src Source, log *slog.Logger, opts Options) *Live {
	hub := NewHub(opts.Buffer)
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	return &Live{src: src, hub: hub, tailer: NewTailer(src, hub, log, opts.Tailer), syncTimeout: opts.SyncTimeout}
}

// Hub returns the node's hub.
func (l *Live) Hub() *Hub { return l.hub }

// Tailer returns the node's tailer.
func (l *Live) Tailer() *Tailer { return l.tailer }

// Start takes the first snapshot of the log.
func (l *Live) Start(ctx context.Context) error { return l.tailer.Start(ctx) }

// Run runs the tailer until ctx ends.
func (l *Live) Run(ctx context.Context) error { return l.tailer.Run(ctx) }

// Committed tells the node's tailer that this node committed events, so that it reads them now
// instead of waiting for the notification to come back from the database.
func (l *Live) Committed() { l.tailer.Wake() }

// Close ends every stream with err.
func (l *Live) Close(err error) { l.hub.Close(err) }

// Sync waits until the node's view includes every event committed before the call (see
// Tailer.Sync).
func (l *Live) Sync(ctx context.Context) error { return l.tailer.Sync(ctx) }

// ParseToken decodes a cursor or consistency token of this log: INVALID_ARGUMENT for a string
// that is not one, or one of another database.
func (l *Live) ParseToken(field, s string) (Position, error) {
	p, err := ParseCursor(s)
	if err == nil && !p.IsZero() && p.Log != l.src.LogID() {
		return Position{}, errs.InvalidArgument("FOREIGN_CURSOR", field+" belongs to another Gatehouse database",
			errs.FieldViolation{Field: field, Description: "a cursor or token returned by another database's nodes"})
	}
	if err != nil {
		reason := "INVALID_CURSOR"
		if strings.HasPrefix(field, "consistency") {
			reason = "INVALID_CONSISTENCY_TOKEN"
		}
		return Position{}, errs.InvalidArgument(reason, field+" is not a cursor or consistency token of this service",
			errs.FieldViolation{Field: field, Description: "not a cursor or consistency_token returned by this service"})
	}
	return p, nil
}

// AtLeast waits until the node's view includes the event at p (a consistency token), bounded by
// the sync timeout. It reports false when the view did not get there in time: the caller then
// reads the database directly. A token of no event of this log (forged, or from the future) is
// INVALID_ARGUMENT; one older than the retention is met by any view.
func (l *Live) AtLeast(ctx context.Context, field string, p Position) (bool, error) {
	if p.IsZero() || l.tailer.Snapshot().Visible(p) {
		return true, nil
	}
	where, err := l.src.Locate(ctx, p)
	if err != nil {
		return false, err
	}
	if where == NotInLog {
		return false, errs.InvalidArgument("UNKNOWN_CONSISTENCY_TOKEN", field+" names no event of this log",
			errs.FieldViolation{Field: field, Description: "not a consistency_token returned by this service (a token from the future, or forged)"})
	}
	wctx, cancel := context.WithTimeout(ctx, l.syncTimeout)
	defer cancel()
	for {
		if err := l.tailer.Sync(wctx); err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, nil
		}
		if l.tailer.Snapshot().Visible(p) {
			return true, nil
		}
	}
}

// List returns up to limit settled events after `after` matching f, in log order: ListEvents.
// A cursor older than the retention is OUT_OF_RANGE.
func (l *Live) List(ctx context.Context, after Position, f Filter, limit int) ([]Record, error) {
	if err := l.checkCursor(ctx, after); err != nil {
		return nil, err
	}
	if err := l.settle(ctx); err != nil {
		return nil, err
	}
	recs, err := l.src.Read(ctx, after, Position{}, f, limit)
	if err != nil {
		return nil, err
	}
	if err := l.checkCursor(ctx, after); err != nil {
		return nil, err
	}
	return recs, nil
}

// settle waits, bounded by the sync timeout, until every transaction that had committed or was
// running when it was called has finished, so that a page read afterwards includes every event
// committed before the call (a caller's own change among them).
//
// NOTE: a page holds only settled events (below the horizon), or a client paging from the last
// cursor could skip an event that commits later at a lower position. Without this wait an event
// acknowledged a moment ago could be missing from the next page while some other transaction
// on the cluster is still running. Past the timeout (a long transaction anywhere holds the horizon
// back) the page is still correct, only without the newest events; they come with a later page.
func (l *Live) settle(ctx context.Context) error {
	if err := l.tailer.Sync(ctx); err != nil {
		return err
	}
	target := l.tailer.Snapshot()
	if !target.Postgres {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, l.syncTimeout)
	defer cancel()
	// NOTE: rounds spaced by a backoff (1 ms doubling to 50 ms), so that a long transaction
	// elsewhere costs the database a handful of reads per waiting call, not a tight loop.
	pause := time.Millisecond
	for l.tailer.Snapshot().Xmin < target.Xmax {
		if err := l.tailer.Sync(wctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		if l.tailer.Snapshot().Xmin >= target.Xmax {
			break
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
	return nil
}

func (l *Live) checkCursor(ctx context.Context, after Position) error {
	if after.IsZero() {
		return nil
	}
	where, err := l.src.Locate(ctx, after)
	if err != nil {
		return err
	}
	switch where {
	case Pruned:
		return errs.OutOfRange("CURSOR_EXPIRED",
			"the cursor is older than the event retention: the events after it are no longer kept; start again from the oldest kept event (an empty cursor)").
			WithMetadata("field", "after")
	case NotInLog:
		return errs.InvalidArgument("UNKNOWN_CURSOR", "after names no event of this log",
			errs.FieldViolation{Field: "after", Description: "not a cursor returned by this service"})
	}
	return nil
}

// catchUpBatch bounds one read of a stream's backlog.
const catchUpBatch = 500

// Stream is one reader of the log in order from a cursor: it reads the backlog from the database,
// then follows the hub. It belongs to one goroutine.
type Stream struct {
	live   *Live
	filter Filter
	sub    *Subscription
	// after is the position of the last event delivered (or the start).
	after Position
	// bound is the hub's bound at subscription: the backlog is what lies before it.
	bound    Position
	catching bool
}

// Open starts a stream of the events matching f after `after`; a zero `after` starts at the
// hub's bound (from now). A cursor older than the retention is OUT_OF_RANGE.
func (l *Live) Open(ctx context.Context, after Position, f Filter) (*Stream, error) {
	if err := l.checkCursor(ctx, after); err != nil {
		return nil, err
	}
	sub, bound := l.hub.Subscribe(f.UserID)
	s := &Stream{live: l, filter: f, sub: sub, after: after, bound: bound}
	if after.IsZero() {
		// NOTE: "from now" is the hub's bound, which is at most one round old: the stream
		// delivers every event published from it on, and the client resumes from the cursor of
		// the first it receives.
		s.after = Position{Log: bound.Log, Xid: bound.Xid, ID: bound.ID - 1}
		if bound.ID == 0 {
			s.after = Position{Xid: bound.Xid}
		}
	} else {
		s.catching = s.after.Less(bound)
	}
	return s, nil
}

// Close releases the stream.
func (s *Stream) Close() { s.sub.Close() }

// Next returns the next events in log order. It returns (nil, nil) when tick fires first (tick
// may be nil), and an error when ctx ends or the hub cut the stream off (shutdown, too slow).
func (s *Stream) Next(ctx context.Context, tick <-chan time.Time) ([]Record, error) {
	if s.catching {
		if recs, err := s.catchUp(ctx); err != nil || len(recs) > 0 {
			return recs, err
		}
	}
	// NOTE: an idle stream's goroutine waits in this loop, so its frame and those below it are
	// what a node keeps per idle stream (the runtime halves a stack only when a quarter of it is
	// in use); the reads of catchUp and take are in frames of their own.
	for {
		select {
		case <-s.sub.Ready():
			if out := s.take(); len(out) > 0 {
				return out, nil
			}
		case <-s.sub.Done():
			return nil, s.sub.Err()
		case <-tick:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// catchUp reads the next events from the log, up to catchUpBatch; after a short read the stream
// follows the hub.
//
// NOTE: the retention may prune past the stream's position while it catches up (a client
// resuming near the retention's edge). The log is cut from its start only, so a position still
// in the log after a read had nothing after it pruned before the read; otherwise the read may
// have missed events, and the stream ends OUT_OF_RANGE, as a resume from there would, instead of
// skipping them silently. List checks its cursor after its read for the same reason.
func (s *Stream) catchUp(ctx context.Context) ([]Record, error) {
	recs, err := s.live.src.Read(ctx, s.after, s.bound, s.filter, catchUpBatch)
	if err != nil {
		return nil, err
	}
	if err := s.live.checkCursor(ctx, s.after); err != nil {
		return nil, err
	}
	if len(recs) < catchUpBatch {
		s.catching = false
	}
	if len(recs) > 0 {
		s.after = recs[len(recs)-1].Pos
	}
	return recs, nil
}

// take returns the stream's events among the hub's waiting batches.
func (s *Stream) take() []Record {
	var out []Record
	for _, batch := range s.sub.Take() {
		for _, r := range batch {
			if s.after.Less(r.Pos) && s.filter.Match(r.Event) {
				out = append(out, r)
			}
		}
		if len(batch) > 0 && s.after.Less(batch[len(batch)-1].Pos) {
			s.after = batch[len(batch)-1].Pos
		}
	}
	return out
}
