package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
)

// Activity is one session's activity to write back: the last activity and idle expiry its writer
// read (Last, Idle), which the row must still have, and those to set (Now, NewIdle).
type Activity struct {
	ID                       string
	Last, Idle, Now, NewIdle time.Time
}

// Update is a's conditional write of its one row through c (the pool's client or a transaction's):
// it applies only while the row is active and still has the last activity and idle expiry read.
func (a Activity) Update(c *ent.SessionClient) *ent.SessionUpdate {
	return c.Update().
		Where(entsession.ID(a.ID), entsession.Active(true), entsession.LastActiveTime(a.Last), entsession.IdleExpireTime(a.Idle)).
		SetLastActiveTime(a.Now).SetIdleExpireTime(a.NewIdle)
}

// WriteActivity writes at most MaxInList activities, each to its session's row only while the row
// is active and still has the last activity and idle expiry its writer read. It never waits for a
// row lock. It returns the ids of the sessions it skipped because another transaction held their
// row, for the caller to try again, and of those whose row was not in the state read (a policy
// change, another node's write, the session's end, or a copy of the writer's that went stale), for
// the caller to read again.
//
// NOTE: on PostgreSQL the rows are written by one statement that first locks those it can with
// SKIP LOCKED (FOR NO KEY UPDATE, the lock an UPDATE of these columns takes). The transactions that
// lock a user and then its sessions (logins, role changes, terminations) may hold several of the
// batch's rows; a batch that waited for one while holding another could deadlock with them, which
// is why the write-back used to write one row per statement: one commit, and one WAL flush, per
// row. A statement that never waits cannot be part of a deadlock, so a batch is one round trip and
// one commit. On SQLite a write transaction is exclusive, so the batch is one transaction of
// single-row updates and nothing is skipped.
func (s *Store) WriteActivity(ctx context.Context, acts []Activity) (skipped, stale []string, err error) {
	if len(acts) > MaxInList {
		return nil, nil, fmt.Errorf("store: %d activities in one write, at most %d", len(acts), MaxInList)
	}
	if len(acts) == 0 {
		return nil, nil, nil
	}
	if s.IsPostgres() {
		return s.writeActivityPostgres(ctx, acts)
	}
	tx, err := s.Client.Tx(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range acts {
		n, err := a.Update(tx.Session).Save(ctx)
		if err != nil {
			_ = tx.Rollback()
			return nil, nil, err
		}
		if n == 0 {
			stale = append(stale, a.ID)
		}
	}
	return nil, stale, tx.Commit()
}

// writeActivityQuery is WriteActivity's statement on PostgreSQL. Its arguments are arrays of the
// ids and of the four times of each activity, in the same order; it returns the ids of the active
// sessions whose row another transaction held (written false), and of the rows it wrote (written
// true).
//
// NOTE: the rows are locked in the CTE l and updated by u, which only takes rows of l, re-checked
// at their latest version. The times travel as text in lib/pq's own format (pq.FormatTimestamp),
// so each compares with the column exactly as when bound alone.
const writeActivityQuery = `WITH v (id, last, idle, now, new_idle) AS (
	SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
), l AS (
	SELECT s.id FROM sessions s WHERE s.id = ANY($1::text[]) AND s.active FOR NO KEY UPDATE SKIP LOCKED
), u AS (
	UPDATE sessions s SET last_active_time = v.now, idle_expire_time = v.new_idle
	FROM v WHERE s.id = v.id AND s.id IN (SELECT id FROM l) AND s.active
		AND s.last_active_time = v.last AND s.idle_expire_time = v.idle
	RETURNING s.id
)
SELECT s.id, false FROM sessions s WHERE s.id = ANY($1::text[]) AND s.active AND s.id NOT IN (SELECT id FROM l)
UNION ALL
SELECT id, true FROM u`

func (s *Store) writeActivityPostgres(ctx context.Context, acts []Activity) (skipped, stale []string, err error) {
	ids := make([]string, len(acts))
	var times [4][]string
	for i := range times {
		times[i] = make([]string, len(acts))
	}
	for i, a := range acts {
		ids[i] = a.ID
		for j, t := range [4]time.Time{a.Last, a.Idle, a.Now, a.NewIdle} {
			times[j][i] = string(pq.FormatTimestamp(t))
		}
	}
	rows, err := s.DB.QueryContext(ctx, writeActivityQuery,
		pq.Array(ids), pq.Array(times[0]), pq.Array(times[1]), pq.Array(times[2]), pq.Array(times[3]))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	done := make(map[string]bool, len(acts))
	for rows.Next() {
		var id string
		var written bool
		if err := rows.Scan(&id, &written); err != nil {
			return nil, nil, err
		}
		done[id] = true
		if !written {
			skipped = append(skipped, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for _, a := range acts {
		if !done[a.ID] {
			stale = append(stale, a.ID)
		}
	}
	return skipped, stale, nil
}
