package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/events"
)

// This file is the event log's SQL, dialect by dialect: the snapshot rounds of the tailer, ordered
// reads, cursor checks, and the wake-up notifications between nodes (events.Source).

var _ events.Source = (*Store)(nil)

// notifyChannel is the PostgreSQL channel of commit notifications. A notification only wakes the
// tailers, which read the log themselves; its payload is the sending node's tag (notifyTag).
const notifyChannel = "gatehouse_events"

// migrateLog creates the table that names the log (a random id, part of every cursor, so that a
// cursor of another database is refused) and loads the id.
//
// NOTE: a plain table outside the ent schema, like the xid column: ent models the domain, this is
// the log's bookkeeping.
func (s *Store) migrateLog(ctx context.Context) error {
	if _, err := s.DB.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS event_log (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), log_id BIGINT NOT NULL)"); err != nil {
		return err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	// NOTE: 52 bits, so that the id is exact in every language's JSON numbers should it ever
	// be shown, and positive in a signed BIGINT.
	id := int64(binary.BigEndian.Uint64(b[:]) >> 12)
	if _, err := s.DB.ExecContext(ctx, s.Rebind("INSERT INTO event_log (singleton, log_id) VALUES (1, ?) ON CONFLICT (singleton) DO NOTHING"), id); err != nil {
		return err
	}
	var got int64
	if err := s.DB.QueryRowContext(ctx, "SELECT log_id FROM event_log WHERE singleton = 1").Scan(&got); err != nil {
		return err
	}
	s.logID.Store(uint64(got))
	return nil
}

// LogID implements events.Source. It is zero until Migrate has run.
func (s *Store) LogID() uint64 { return s.logID.Load() }

// SetCommitHook sets fn to run after every transaction that committed events (the node's
// tailer's wake-up). It must not block.
func (s *Store) SetCommitHook(fn func()) { s.commitHook.Store(&fn) }

// committed runs after a transaction with events commits: it wakes this node's tailer in-process
// and, on PostgreSQL, the other nodes' tailers through a NOTIFY.
func (s *Store) committed() {
	if fn := s.commitHook.Load(); fn != nil {
		(*fn)()
	}
	if s.IsPostgres() {
		select {
		case s.notifyKick <- struct{}{}:
		default:
		}
	}
}

// notifyLoop sends the NOTIFY of committed transactions, coalesced: commits that happen while one
// NOTIFY is on its way share the next one. Its payload is the node's tag (notifyTag), so that the
// node's listener skips its own: its commits already woke its tailer in-process (committed).
//
// NOTE: never inside the write transaction: NOTIFY in a transaction takes a database-wide lock at
// commit, which would serialise every writer of the cluster. A NOTIFY that fails (the database
// is down) is not retried: the tailers' polling picks the events up.
func (s *Store) notifyLoop() {
	defer close(s.notifyDone)
	for {
		select {
		case <-s.notifyStop:
			return
		case <-s.notifyKick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = s.DB.ExecContext(ctx, "SELECT pg_notify($1, $2)", notifyChannel, s.notifyTag)
		cancel()
	}
}

// own reports whether n is a NOTIFY this node sent (notifyLoop).
func (s *Store) own(n *pq.Notification) bool {
	return n != nil && n.Extra == s.notifyTag
}

// Listen implements events.Source: one LISTEN connection per node, reconnected with backoff.
func (s *Store) Listen(ctx context.Context, wake func()) error {
	if !s.IsPostgres() {
		return nil
	}
	l := pq.NewListener(s.poolURL, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, _ error) {
		if ev == pq.ListenerEventConnected || ev == pq.ListenerEventReconnected {
			wake()
		}
	})
	defer l.Close()
	if err := l.Listen(notifyChannel); err != nil {
		return fmt.Errorf("listening for commits: %w", err)
	}
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-l.Notify:
			// NOTE: a nil notification means the connection was re-established; wake too.
			if !s.own(n) {
				wake()
			}
		case <-ping.C:
			go func() { _ = l.Ping() }()
		}
	}
}

// naiveReader, set only by the naivereader build tag (log_naive.go), makes the log be read on
// PostgreSQL as on SQLite: `id > cursor`, in id order, with no transaction-id horizon. It exists
// to show that the fault tests catch such a reader (integration/faults_test.go): it loses the
// events of a transaction that commits after one with higher ids.
var naiveReader = false

// idOrder reports whether the log is read in id order with id-only positions: on SQLite, where
// one writer commits at a time in id order (and under naiveReader).
func (s *Store) idOrder() bool { return !s.IsPostgres() || naiveReader }

// Poll implements events.Source.
//
// On PostgreSQL one statement returns the statement's own snapshot (pg_current_snapshot() is the
// active snapshot of the statement, the one its scan reads with) and the events visible in it
// whose transactions were not visible in prev: those of transactions still running in prev
// (prev.Xip) or not yet started then (xid >= prev.Xmax). Without prev, it returns every visible
// event whose transaction is at or above the snapshot's xmin: committed, but not settled yet.
// On SQLite, where one writer commits at a time in id order, the snapshot is the highest id.
func (s *Store) Poll(ctx context.Context, prev *events.Snapshot) (events.Snapshot, []events.Record, error) {
	if s.idOrder() {
		return s.pollSQLite(ctx, prev)
	}
	const head = "SELECT s.snap::text, e.id, e.xid::text, e.payload FROM (SELECT pg_current_snapshot() AS snap) s LEFT JOIN events e ON "
	var rows *sql.Rows
	var err error
	if prev == nil {
		rows, err = s.DB.QueryContext(ctx, head+"e.xid >= pg_snapshot_xmin(s.snap)")
	} else {
		xip := make([]string, len(prev.Xip))
		for i, x := range prev.Xip {
			xip[i] = strconv.FormatUint(x, 10)
		}
		rows, err = s.DB.QueryContext(ctx, head+"(e.xid >= $1::text::xid8 OR e.xid = ANY($2::text[]::xid8[]))",
			strconv.FormatUint(prev.Xmax, 10), pq.Array(xip))
	}
	if err != nil {
		return events.Snapshot{}, nil, err
	}
	defer rows.Close()
	var snap events.Snapshot
	var recs []events.Record
	first := true
	for rows.Next() {
		var snapText string
		var id sql.NullInt64
		var xid sql.NullString
		var payload []byte
		if err := rows.Scan(&snapText, &id, &xid, &payload); err != nil {
			return events.Snapshot{}, nil, err
		}
		if first {
			if snap, err = parseSnapshot(snapText); err != nil {
				return events.Snapshot{}, nil, err
			}
			first = false
		}
		if !id.Valid {
			continue
		}
		r, err := s.record(id.Int64, xid.String, payload)
		if err != nil {
			return events.Snapshot{}, nil, err
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return events.Snapshot{}, nil, err
	}
	if first {
		return events.Snapshot{}, nil, fmt.Errorf("reading the log: the snapshot query returned no row")
	}
	return snap, recs, nil
}

func (s *Store) pollSQLite(ctx context.Context, prev *events.Snapshot) (events.Snapshot, []events.Record, error) {
	if prev == nil {
		var last int64
		err := s.DB.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM events").Scan(&last)
		return events.Snapshot{LastID: last}, nil, err
	}
	rows, err := s.DB.QueryContext(ctx, s.Rebind("SELECT id, '0', payload FROM events WHERE id > ? ORDER BY id"), prev.LastID)
	if err != nil {
		return events.Snapshot{}, nil, err
	}
	defer rows.Close()
	snap := *prev
	recs, err := s.scanRecords(rows)
	if len(recs) > 0 {
		snap.LastID = recs[len(recs)-1].Pos.ID
	}
	return snap, recs, err
}

// parseSnapshot reads the text form of a pg_snapshot, "xmin:xmax:xip1,xip2,...".
func parseSnapshot(text string) (events.Snapshot, error) {
	parts := strings.Split(text, ":")
	if len(parts) != 3 {
		return events.Snapshot{}, fmt.Errorf("reading the log: unexpected snapshot %q", text)
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return events.Snapshot{}, fmt.Errorf("reading the log: unexpected snapshot %q", text)
	}
	snap := events.Snapshot{Postgres: true, Xmin: xmin, Xmax: xmax}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return events.Snapshot{}, fmt.Errorf("reading the log: unexpected snapshot %q", text)
			}
			snap.Xip = append(snap.Xip, v)
		}
	}
	return snap, nil
}

func (s *Store) record(id int64, xid string, payload []byte) (events.Record, error) {
	x, err := strconv.ParseUint(xid, 10, 64)
	if err != nil {
		return events.Record{}, fmt.Errorf("reading the log: event %d has xid %q", id, xid)
	}
	ev := &gatehousev1.Event{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return events.Record{}, fmt.Errorf("reading the log: decoding event %d: %w", id, err)
	}
	p := events.Position{Log: s.LogID(), Xid: x, ID: id}
	ev.Cursor = p.Cursor()
	return events.Record{Pos: p, Event: ev}, nil
}

func (s *Store) scanRecords(rows *sql.Rows) ([]events.Record, error) {
	var recs []events.Record
	for rows.Next() {
		var id int64
		var xid string
		var payload []byte
		if err := rows.Scan(&id, &xid, &payload); err != nil {
			return nil, err
		}
		r, err := s.record(id, xid, payload)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, rows.Err()
}

// Read implements events.Source.
//
// NOTE: with a zero `before`, the bound is the statement's own snapshot's xmin: every transaction
// below it had finished when the statement's snapshot was taken, so every event below it that
// will ever exist is visible to the scan, and none can appear there later.
func (s *Store) Read(ctx context.Context, after, before events.Position, f events.Filter, limit int) ([]events.Record, error) {
	var where []string
	var args []any
	if !s.idOrder() {
		where = append(where, "(xid, id) > (?::text::xid8, ?)")
		args = append(args, strconv.FormatUint(after.Xid, 10), after.ID)
		if before.IsZero() {
			where = append(where, "xid < pg_snapshot_xmin(pg_current_snapshot())")
		} else {
			where = append(where, "(xid, id) < (?::text::xid8, ?)")
			args = append(args, strconv.FormatUint(before.Xid, 10), before.ID)
		}
	} else {
		where = append(where, "id > ?")
		args = append(args, after.ID)
		if !before.IsZero() {
			where = append(where, "id < ?")
			args = append(args, before.ID)
		}
	}
	if f.UserID != "" {
		where = append(where, "user_id = ?")
		args = append(args, f.UserID)
	}
	if len(f.Types) > 0 {
		marks := make([]string, len(f.Types))
		for i, t := range f.Types {
			marks[i] = "?"
			args = append(args, t.String())
		}
		where = append(where, "type IN ("+strings.Join(marks, ", ")+")")
	}
	xid, order := "'0'", "id"
	if !s.idOrder() {
		// NOTE: ORDER BY names the table's columns: a bare xid would be the output column
		// xid::text, sorted as text, in which "1000" comes before "758".
		xid, order = "xid::text", "events.xid, events.id"
	}
	q := "SELECT id, " + xid + ", payload FROM events WHERE " + strings.Join(where, " AND ") + " ORDER BY " + order + " LIMIT ?"
	args = append(args, limit)
	rows, err := s.DB.QueryContext(ctx, s.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return s.scanRecords(rows)
}

// Locate implements events.Source: a position is in the log if its event is; before the oldest
// event kept, it was pruned; anything else never was an event of this log.
func (s *Store) Locate(ctx context.Context, p events.Position) (events.Where, error) {
	if p.Log != s.LogID() {
		return events.NotInLog, nil
	}
	q := "SELECT COUNT(*) FROM events WHERE id = ?"
	args := []any{p.ID}
	oldest := "SELECT '0', id FROM events ORDER BY id LIMIT 1"
	if !s.idOrder() {
		q += " AND xid = ?::text::xid8"
		args = append(args, strconv.FormatUint(p.Xid, 10))
		oldest = "SELECT xid::text, id FROM events ORDER BY events.xid, events.id LIMIT 1"
	} else if p.Xid != 0 {
		return events.NotInLog, nil
	}
	var n int
	if err := s.DB.QueryRowContext(ctx, s.Rebind(q), args...).Scan(&n); err != nil {
		return 0, err
	}
	if n > 0 {
		return events.InLog, nil
	}
	var xid string
	var id int64
	err := s.DB.QueryRowContext(ctx, oldest).Scan(&xid, &id)
	if err == sql.ErrNoRows {
		return events.NotInLog, nil
	}
	if err != nil {
		return 0, err
	}
	x, _ := strconv.ParseUint(xid, 10, 64)
	if p.Less(events.Position{Xid: x, ID: id}) {
		return events.Pruned, nil
	}
	return events.NotInLog, nil
}

// PruneEvents deletes at most limit events from the start of the log, in log order, as long as
// they are older than cutoff, and returns how many it deleted. It never deletes the newest event
// (in log order), so that positions and consistency tokens never go back, even on SQLite, which
// would reuse the ids of an emptied table.
//
// NOTE: the log is cut by position, never by time alone: on PostgreSQL the log's order (xid, id)
// is not the order of the events' times, and deleting by time could leave a hole below a kept
// event, where a cursor would find nothing and a reader could skip what it never saw. What is
// kept is always a suffix of the log, so a cursor is either in it or before its start
// (OUT_OF_RANGE).
func (t *Tx) PruneEvents(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	pg := t.store.IsPostgres()
	xid, order, desc := "'0'", "id", "id DESC"
	if pg {
		// NOTE: the table's columns, not the output column xid::text (see Read).
		xid, order, desc = "xid::text", "events.xid, events.id", "events.xid DESC, events.id DESC"
	}
	// The first event to keep: the first one, in log order, not older than cutoff; else the newest.
	bx, bid, found, err := t.firstEvent(ctx, "SELECT "+xid+", id FROM events WHERE time >= ? ORDER BY "+order+" LIMIT 1", cutoff)
	if err == nil && !found {
		bx, bid, found, err = t.firstEvent(ctx, "SELECT "+xid+", id FROM events ORDER BY "+desc+" LIMIT 1")
	}
	if err != nil || !found {
		return 0, err
	}
	below, args := "id < ?", []any{bid}
	if pg {
		below, args = "(xid, id) < (?::text::xid8, ?)", []any{bx, bid}
	}
	res, err := t.Exec(ctx, "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE "+below+" ORDER BY "+order+" LIMIT ?)", append(args, limit)...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// firstEvent runs a query of one event's xid (as text) and id, and returns the first row's.
func (t *Tx) firstEvent(ctx context.Context, query string, args ...any) (xid string, id int64, found bool, err error) {
	rows, err := t.Query(ctx, query, args...)
	if err != nil {
		return "", 0, false, err
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&xid, &id); err != nil {
			return "", 0, false, err
		}
		found = true
	}
	return xid, id, found, rows.Err()
}
