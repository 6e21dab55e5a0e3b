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
			if got, err := tx.TryLock(ctx, sweepLockKey); err != nil || !got {
				return err
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

// SweeperOptions configures RunSweeper.
type SweeperOptions struct {
	// Interval is how often expired sessions are ended (Sweep).
	Interval time.Duration
	// PruneInterval is how often Prune runs, the first time at the first interval. Zero means
	// DefaultPruneInterval.
	PruneInterval time.Duration
	// Retention says what Prune deletes.
	Retention Retention
}

// DefaultPruneInterval is how often the sweeper prunes when SweeperOptions sets no interval.
const DefaultPruneInterval = 10 * time.Minute

// RunSweeper sweeps every interval until ctx ends, so that watchers hear of expiries within about
// an interval, and prunes ended sessions and old events every prune interval.
func (s *Service) RunSweeper(ctx context.Context, opts SweeperOptions) error {
	if opts.PruneInterval <= 0 {
		opts.PruneInterval = DefaultPruneInterval
	}
	t := time.NewTicker(opts.Interval)
	defer t.Stop()
	var nextPrune time.Time
	// NOTE: failing is whether the last sweep failed: during a database outage the sweeper retries
	// every interval but logs one line when it starts failing and one when it works again, not an
	// error every interval.
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			n, err := s.Sweep(ctx)
			s.sweepRounds.Add(1)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					s.log.Error("sweeping expired sessions failed; retrying every interval, and saying so when it works again", "err", err)
				}
				failing = true
			case err == nil && failing:
				failing = false
				s.log.Info("sweeping expired sessions works again")
			}
			if n > 0 {
				s.log.Debug("ended expired sessions", "count", n)
			}
			if now.Before(nextPrune) {
				continue
			}
			nextPrune = now.Add(opts.PruneInterval)
			if p, err := s.Prune(ctx, opts.Retention); err != nil && ctx.Err() == nil {
				s.log.Error("pruning ended sessions and old events", "err", err)
			} else if p.Sessions > 0 || p.Events > 0 {
				s.log.Info("pruned ended sessions and old events", "sessions", p.Sessions, "events", p.Events)
			}
		}
	}
}

// SweepRounds returns how many rounds the sweeper has run, failed ones included (for tests and
// metrics).
func (s *Service) SweepRounds() uint64 { return s.sweepRounds.Load() }
