package session

import (
	"context"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// expiry returns the idle and absolute expiry of a session created at created, last active at
// lastActive, under r.
func expiry(r *policy.Resolved, created, lastActive time.Time) (idle, absolute time.Time) {
	absolute = created.Add(r.AbsoluteTimeout)
	idle = lastActive.Add(r.IdleTimeout)
	if idle.After(absolute) {
		idle = absolute
	}
	return idle, absolute
}

// admit applies the concurrent-session limit to a new session of type typ for the locked user,
// inside tx: it ends the user's sessions that have expired but are not swept yet, then, if the new
// session would exceed the limit, evicts the oldest counted sessions (CONCURRENT_LIMIT) or refuses
// the login (RESOURCE_EXHAUSTED, CONCURRENT_SESSION_LIMIT), by policy. Last it applies the store's
// cap on the active sessions of one user (store.Store.MaxSessionsPerUser), which counts sessions of
// every type: past it the user's oldest active sessions end with CONCURRENT_LIMIT. It returns the
// evicted ids.
func (s *Service) admit(ctx context.Context, tx *store.Tx, userID string, typ gatehousev1.SessionType, r *policy.Resolved, now time.Time) ([]string, error) {
	if _, err := endExpired(ctx, tx, now, 0, entsession.UserID(userID)); err != nil {
		return nil, err
	}
	evicted, err := s.applyPolicyLimit(ctx, tx, userID, typ, r)
	if err != nil {
		return nil, err
	}
	capped, err := applyCap(ctx, tx, userID)
	if err != nil {
		return nil, err
	}
	return append(evicted, capped...), nil
}

// applyPolicyLimit applies the policy's limit on counted sessions for admit.
func (s *Service) applyPolicyLimit(ctx context.Context, tx *store.Tx, userID string, typ gatehousev1.SessionType, r *policy.Resolved) ([]string, error) {
	if r.MaxSessions == nil || !r.Counts(typ) {
		return nil, nil
	}
	var counted []entsession.Type
	for _, t := range r.CountedTypes {
		if st, ok := convert.SessionTypeToStore(t); ok {
			counted = append(counted, st)
		}
	}
	active, err := tx.Session.Query().
		Where(entsession.UserID(userID), entsession.Active(true), entsession.TypeIn(counted...)).
		Order(ent.Asc(entsession.FieldCreateTime), ent.Asc(entsession.FieldID)).
		IDs(ctx)
	if err != nil {
		return nil, err
	}
	excess := len(active) + 1 - int(*r.MaxSessions)
	if excess <= 0 {
		return nil, nil
	}
	if r.OnLimit == gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW {
		return nil, errs.ResourceExhausted("CONCURRENT_SESSION_LIMIT",
			"the user already has %d active sessions, the most the policy allows", len(active)).
			WithMetadata("max_sessions", strconv.Itoa(int(*r.MaxSessions)))
	}
	return endIDs(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT, "", active[:excess])
}

// capNote is the note of a session that the cap on a user's sessions ended.
const capNote = "ended by the cap on the active sessions of one user"

// applyCap ends the oldest active sessions of the user, of any type, that a new session would take
// past the store's cap (none when there is no cap).
//
// NOTE: the cap evicts rather than refuses: a client that logs in on every run and never logs out
// (a script with a non-interactive session) keeps working, and the cap still bounds the rows one
// account holds, which every policy change, role change and termination of the user must touch.
func applyCap(ctx context.Context, tx *store.Tx, userID string) ([]string, error) {
	limit := tx.Store().MaxSessionsPerUser()
	if limit <= 0 {
		return nil, nil
	}
	n, err := tx.Session.Query().Where(entsession.UserID(userID), entsession.Active(true)).Count(ctx)
	if err != nil {
		return nil, err
	}
	excess := n + 1 - limit
	if excess <= 0 {
		return nil, nil
	}
	oldest, err := tx.Session.Query().
		Where(entsession.UserID(userID), entsession.Active(true)).
		Order(ent.Asc(entsession.FieldCreateTime), ent.Asc(entsession.FieldID)).
		Limit(excess).
		IDs(ctx)
	if err != nil {
		return nil, err
	}
	return endIDs(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT, capNote, oldest)
}

// sweepBatch bounds the sessions one sweep transaction ends.
const sweepBatch = 500

// endExpired ends the active sessions that match where and whose absolute or idle expiry has
// passed, with ABSOLUTE_TIMEOUT or IDLE_TIMEOUT, at most limit of them when limit is positive. It
// returns how many it ended.
func endExpired(ctx context.Context, tx *store.Tx, now time.Time, limit int, where ...predicate.Session) (int, error) {
	absolute, err := endWhere(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT, "", limit,
		append(where, entsession.AbsoluteExpireTimeLTE(now))...)
	if err != nil {
		return 0, err
	}
	if limit > 0 && len(absolute) >= limit {
		return len(absolute), nil
	}
	idle, err := endWhere(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT, "", max(limit-len(absolute), 0),
		append(where, entsession.IdleExpireTimeLTE(now))...)
	return len(absolute) + len(idle), err
}
