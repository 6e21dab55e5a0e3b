package session

import (
	"context"
	"time"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// Retention says how long Prune keeps what would otherwise grow without bound.
type Retention struct {
	// Sessions is how long an ended session is kept after it ended; once deleted, its token
	// answers SESSION_NOT_FOUND instead of SESSION_TERMINATED. Zero or negative keeps ended
	// sessions forever.
	Sessions time.Duration
	// Events is how long an event (LOGIN_FAILED included) is kept in the log. Zero or negative
	// keeps events forever.
	Events time.Duration
}

// Pruned counts what one Prune deleted.
type Pruned struct {
	Sessions, Events int
}

// pruneLockKey makes one node at a time prune a PostgreSQL database.
const pruneLockKey = 7_240_004

// pruneBatch bounds the rows one prune transaction deletes, so that each holds its locks (the
// write lock, on SQLite) briefly.
const pruneBatch = 500

// Prune deletes the sessions that ended longer ago than r.Sessions and the events older than
// r.Events, in short transactions of at most pruneBatch rows. On PostgreSQL a node that finds
// another node pruning stops. Events are cut from the start of the log, in log order, and the
// newest always stays (store.Tx.PruneEvents).
func (s *Service) Prune(ctx context.Context, r Retention) (Pruned, error) {
	var out Pruned
	now := s.now().UTC()
	if r.Sessions > 0 {
		cutoff := now.Add(-r.Sessions)
		n, err := s.pruneBatches(ctx, func(ctx context.Context, tx *store.Tx) (int, error) {
			ids, err := tx.Session.Query().
				Where(entsession.Active(false), entsession.TerminateTimeLT(cutoff)).
				Limit(pruneBatch).IDs(ctx)
			if err != nil || len(ids) == 0 {
				return 0, err
			}
			return tx.Session.Delete().Where(entsession.IDIn(ids...), entsession.Active(false)).Exec(ctx)
		})
		out.Sessions = n
		if err != nil {
			return out, err
		}
	}
	if r.Events > 0 {
		cutoff := now.Add(-r.Events)
		n, err := s.pruneBatches(ctx, func(ctx context.Context, tx *store.Tx) (int, error) {
			return tx.PruneEvents(ctx, cutoff, pruneBatch)
		})
		out.Events = n
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// pruneBatches runs batch in transactions, under the prune lock, until a batch deletes fewer than
// pruneBatch rows or another node holds the lock. It returns how many rows were deleted.
func (s *Service) pruneBatches(ctx context.Context, batch func(ctx context.Context, tx *store.Tx) (int, error)) (int, error) {
	total := 0
	for {
		n, locked := 0, false
		_, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
			var err error
			if locked, err = tx.TryLock(ctx, pruneLockKey); err != nil || !locked {
				return err
			}
			n, err = batch(ctx, tx)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if !locked || n < pruneBatch {
			return total, nil
		}
	}
}
