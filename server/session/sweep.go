package session

import (
	"context"
	"time"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// sweepLockKey makes one node at a time sweep a PostgreSQL database.
const sweepLockKey = 7_240_003

// Sweep ends every session whose idle or absolute expiry has passed, with IDLE_TIMEOUT or
// ABSOLUTE_TIMEOUT events, in batches. On PostgreSQL a node that finds another node sweeping skips
// this round. It returns how many sessions it ended.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	total := 0
	// NOTE: a cheap read first, so that a quiet node does not open a write transaction (an
	// exclusive lock on SQLite) every interval.
	now := s.now()
	due, err := s.store.Client.Session.Query().Where(entsession.Active(true), entsession.Or(
		entsession.IdleExpireTimeLTE(now), entsession.AbsoluteExpireTimeLTE(now),
	)).Exist(ctx)
	if err != nil || !due {
		return 0, err
	}
	for {
		n := 0
		_, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
			if tx.Store().IsPostgres() {
				var got bool
				rows, err := tx.QueryContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", sweepLockKey)
				if err != nil {
					return err
				}
				for rows.Next() {
					if err := rows.Scan(&got); err != nil {
						rows.Close()
						return err
					}
				}
				if err := rows.Close(); err != nil {
					return err
				}
				if !got {
					return nil
				}
			}
			var err error
			n, err = endExpired(ctx, tx, s.now(), sweepBatch)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}

// RunSweeper sweeps every interval until ctx ends, so that watchers hear of expiries within about
// an interval.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("sweeping expired sessions", "err", err)
			} else if n > 0 {
				s.log.Debug("ended expired sessions", "count", n)
			}
		}
	}
}
