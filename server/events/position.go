// Package events is the live layer of a node: positions in the event log, the node's tailer, which
// reads what commits, and the hub, which fans it out to the node's caches and streams.
//
// The flow is commit -> tailer -> hub -> caches and streams. Writers append events in the
// transaction of their change (store.InTx) and wake the tailers of every node after commit; each
// node's one tailer reads the new rows in rounds and hands them to its hub; the hub gives every
// committed event at once to the node's caches (OnCommit) and, in log order, to its streams
// (Subscribe).
package events

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// Position is the place of an event in the log. On PostgreSQL it is the writing transaction's id
// and the event's id; on SQLite the transaction id is zero. The log is ordered by (Xid, ID). Log
// identifies the database the position belongs to, so that a cursor of another database is
// refused instead of read as a position of this one; it takes no part in the order.
type Position struct {
	Log uint64
	Xid uint64
	ID  int64
}

// IsZero reports whether p is the position before any event.
func (p Position) IsZero() bool { return p.Xid == 0 && p.ID == 0 }

// Less reports whether p comes before q in the log.
func (p Position) Less(q Position) bool {
	if p.Xid != q.Xid {
		return p.Xid < q.Xid
	}
	return p.ID < q.ID
}

const cursorVersion = "2"

// Cursor encodes p as an opaque string, used for event cursors and consistency tokens. The zero
// position encodes as "".
func (p Position) Cursor() string {
	if p.IsZero() {
		return ""
	}
	raw := cursorVersion + "." + strconv.FormatUint(p.Log, 36) + "." + strconv.FormatUint(p.Xid, 10) + "." + strconv.FormatInt(p.ID, 10)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ErrBadCursor is returned by ParseCursor for strings that are not cursors.
var ErrBadCursor = errors.New("not a valid cursor")

// ParseCursor decodes a cursor made by Position.Cursor. "" decodes to the zero position.
func ParseCursor(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Position{}, ErrBadCursor
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 4 || parts[0] != cursorVersion {
		return Position{}, ErrBadCursor
	}
	log, err0 := strconv.ParseUint(parts[1], 36, 64)
	xid, err1 := strconv.ParseUint(parts[2], 10, 64)
	id, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err0 != nil || err1 != nil || err2 != nil || id <= 0 {
		return Position{}, ErrBadCursor
	}
	return Position{Log: log, Xid: xid, ID: id}, nil
}

// Snapshot is what a reader of the log has seen: the state of the database's commits at one
// moment. On PostgreSQL it is a pg_snapshot: every transaction id below Xmin has finished, those
// from Xmax on had not started, and Xip lists those in between still running. On SQLite, where
// one writer at a time commits in id order, it is the highest committed event id.
type Snapshot struct {
	Postgres   bool
	Xmin, Xmax uint64
	Xip        []uint64
	LastID     int64
}

// Bound returns the first position that is not yet settled in s: every event before it has
// committed (or never will), so no event can later appear below it. Events are delivered in log
// order only below the bound.
//
// NOTE: this is the transaction-id horizon of ARCHITECTURE.md section 5. A transaction takes its
// id at its first write and keeps it until it commits, so an event at (xid, id) may commit long
// after events at higher positions; but once xid is below the oldest running transaction (Xmin)
// the writer has finished, and every transaction still to commit has an id of at least Xmin.
func (s Snapshot) Bound() Position {
	if s.Postgres {
		return Position{Xid: s.Xmin}
	}
	return Position{ID: s.LastID + 1}
}

// Visible reports whether the event at p had committed when s was taken.
func (s Snapshot) Visible(p Position) bool {
	if !s.Postgres {
		return p.ID <= s.LastID
	}
	if p.Xid < s.Xmin {
		return true
	}
	if p.Xid >= s.Xmax {
		return false
	}
	for _, x := range s.Xip {
		if x == p.Xid {
			return false
		}
	}
	return true
}
