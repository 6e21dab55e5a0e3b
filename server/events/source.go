package events

import (
	"context"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// Record is one committed event at its position. Records are shared by every subscriber that
// receives them: nobody may modify one.
type Record struct {
	Pos   Position
	Event *gatehousev1.Event
}

// Filter selects events: of the given types (all when empty) and about the given user (all when
// empty).
type Filter struct {
	Types  []gatehousev1.EventType
	UserID string
}

// Match reports whether ev passes f.
func (f Filter) Match(ev *gatehousev1.Event) bool {
	if f.UserID != "" && ev.UserId != f.UserID {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, t := range f.Types {
		if t == ev.Type {
			return true
		}
	}
	return false
}

// Where says where a position is in the log.
type Where int

const (
	// InLog: the position is an event of the log.
	InLog Where = iota
	// Pruned: the position is before the oldest event kept (older than the retention).
	Pruned
	// NotInLog: no event of this log has ever had the position (a cursor of another database, a
	// forged one, or one from the future).
	NotInLog
)

// Source is the event log as the database holds it; *store.Store implements it. All its SQL,
// dialect by dialect, lives in the store package.
type Source interface {
	// LogID identifies the database's log; it is part of every Position of it.
	LogID() uint64
	// Poll returns a new snapshot and the events that committed after prev was taken: those
	// visible now and not in prev. With prev nil it returns the snapshot and every event visible
	// in it that is not below its bound.
	Poll(ctx context.Context, prev *Snapshot) (Snapshot, []Record, error)
	// Read returns, in log order, up to limit events matching f that come after `after` and
	// before `before`. A zero `before` means the bound of the database's snapshot now.
	Read(ctx context.Context, after, before Position, f Filter, limit int) ([]Record, error)
	// Locate says whether p is an event of the log.
	Locate(ctx context.Context, p Position) (Where, error)
	// Listen holds the node's one listening connection and calls wake for every notification of
	// a commit, and whenever the connection is (re)established (notifications may have been lost
	// while it was down). It returns when ctx ends. Without notifications (SQLite) it returns
	// nil at once.
	Listen(ctx context.Context, wake func()) error
}
