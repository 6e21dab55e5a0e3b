package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/events"
)

// Tx is one database transaction of a mutation. Events emitted on it are appended to the log in the
// same transaction, just before commit.
type Tx struct {
	*ent.Tx
	store  *Store
	events []*gatehousev1.Event
	actor  *auth.Principal
}

// Store returns the store the transaction belongs to.
func (t *Tx) Store() *Store { return t.store }

// Emit queues an event for the log. Actor fields are filled from the caller of the request unless
// set; when the caller's session is an impersonation, so are the impersonator fields (the actor is
// then the impersonated user and the impersonation session). The event commits with the
// transaction or not at all.
func (t *Tx) Emit(ev *gatehousev1.Event) {
	if ev.ActorUserId == "" && ev.ActorSessionId == "" && t.actor != nil {
		ev.ActorUserId = t.actor.UserID
		ev.ActorSessionId = t.actor.SessionID
		if ev.ImpersonatorUserId == "" && ev.ImpersonatorSessionId == "" {
			ev.ImpersonatorUserId = t.actor.ImpersonatorUserID
			ev.ImpersonatorSessionId = t.actor.ImpersonatorSessionID
		}
	}
	t.events = append(t.events, ev)
}

// Exec runs a statement written with ? placeholders.
func (t *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.ExecContext(ctx, t.store.Rebind(query), args...)
}

// Strings is Store.Strings in the transaction.
func (t *Tx) Strings(ctx context.Context, query string, args ...any) ([]string, error) {
	return t.store.Strings(ctx, t, query, args...)
}

// Query runs a query written with ? placeholders.
func (t *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.QueryContext(ctx, t.store.Rebind(query), args...)
}

// roleGraphLockKey serialises changes that can alter effective roles on PostgreSQL.
const roleGraphLockKey = 7_240_002

// LockRoleGraph serialises this transaction with every other change that can alter effective roles
// (memberships, grants, containment, deletions), so that materialised roles are computed from a
// state no concurrent change is altering. On SQLite every write transaction is already exclusive.
func (t *Tx) LockRoleGraph(ctx context.Context) error {
	if !t.store.IsPostgres() {
		return nil
	}
	if _, err := t.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", roleGraphLockKey); err != nil {
		return err
	}
	// NOTE: the planner's row estimate for the recursive materialisation is far past jit_above_cost,
	// so each batch would spend ~0.4 s compiling a query that runs in ~2 ms.
	_, err := t.ExecContext(ctx, "SET LOCAL jit = off")
	return err
}

// InTx runs fn in a transaction and commits it together with the events fn emitted. It returns the
// position of the last event (the consistency token of the mutation), or the zero position when fn
// emitted none. If fn fails, nothing is written.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) (events.Position, error) {
	etx, err := s.Client.Tx(ctx)
	if err != nil {
		return events.Position{}, fmt.Errorf("beginning a transaction: %w", err)
	}
	tx := &Tx{Tx: etx, store: s, actor: auth.PrincipalFrom(ctx)}
	if err := fn(ctx, tx); err != nil {
		_ = etx.Rollback()
		return events.Position{}, err
	}
	last, err := tx.appendEvents(ctx)
	if err == nil && len(tx.events) == 0 {
		// NOTE: a mutation that changed nothing still returns a token: the head of the log, which
		// the state it saw is at least as fresh as.
		last, err = tx.head(ctx)
	}
	if err != nil {
		_ = etx.Rollback()
		return events.Position{}, fmt.Errorf("appending events: %w", err)
	}
	if err := etx.Commit(); err != nil {
		return events.Position{}, fmt.Errorf("committing: %w", err)
	}
	if len(tx.events) > 0 {
		s.committed()
	}
	return last, nil
}

// eventBatch bounds the rows of one INSERT (7 parameters each; SQLite allows 32766 parameters).
const eventBatch = 500

func (t *Tx) appendEvents(ctx context.Context) (events.Position, error) {
	var last events.Position
	now := time.Now().UTC().Truncate(time.Microsecond)
	for start := 0; start < len(t.events); start += eventBatch {
		batch := t.events[start:min(start+eventBatch, len(t.events))]
		var q strings.Builder
		q.WriteString("INSERT INTO events (time, type, actor_user_id, actor_session_id, user_id, session_id, payload) VALUES ")
		args := make([]any, 0, len(batch)*7)
		for i, ev := range batch {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
			ev.Time = timestamppb.New(now)
			payload, err := proto.Marshal(ev)
			if err != nil {
				return events.Position{}, err
			}
			args = append(args, now, ev.Type.String(), ev.ActorUserId, ev.ActorSessionId, ev.UserId, ev.SessionId, payload)
		}
		if t.store.IsPostgres() {
			q.WriteString(" RETURNING id, xid::text")
		} else {
			q.WriteString(" RETURNING id, '0'")
		}
		rows, err := t.Query(ctx, q.String(), args...)
		if err != nil {
			return events.Position{}, err
		}
		i := start
		for rows.Next() {
			var id int64
			var xid string
			if err := rows.Scan(&id, &xid); err != nil {
				rows.Close()
				return events.Position{}, err
			}
			x, err := strconv.ParseUint(xid, 10, 64)
			if err != nil {
				rows.Close()
				return events.Position{}, err
			}
			p := events.Position{Log: t.store.LogID(), Xid: x, ID: id}
			t.events[i].Cursor = p.Cursor()
			i++
			if last.Less(p) {
				last = p
			}
		}
		if err := rows.Close(); err != nil {
			return events.Position{}, err
		}
	}
	return last, nil
}

// head returns the position of the newest event the transaction can see.
func (t *Tx) head(ctx context.Context) (events.Position, error) {
	q := "SELECT '0', id FROM events ORDER BY id DESC LIMIT 1"
	if t.store.IsPostgres() {
		// NOTE: ORDER BY names the table's columns: a bare xid would be the output column
		// xid::text, sorted as text ("1000" before "758").
		q = "SELECT xid::text, id FROM events ORDER BY events.xid DESC, events.id DESC LIMIT 1"
	}
	rows, err := t.Query(ctx, q)
	if err != nil {
		return events.Position{}, err
	}
	defer rows.Close()
	p := events.Position{Log: t.store.LogID()}
	if rows.Next() {
		var xid string
		if err := rows.Scan(&xid, &p.ID); err != nil {
			return events.Position{}, err
		}
		if p.Xid, err = strconv.ParseUint(xid, 10, 64); err != nil {
			return events.Position{}, err
		}
	}
	return p, rows.Err()
}
