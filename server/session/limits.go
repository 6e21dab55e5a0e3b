package session

import (
	"context"
	"slices"
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

// admit applies the concurrent-session limits to a new session of type typ for the locked user,
// inside tx: it ends the user's sessions that have expired but are not swept yet, then applies
// each of the policy's limits that counts typ (applyPolicyLimits). Last it applies the store's cap
// on the active sessions of one user (store.Store.MaxSessionsPerUser), which counts sessions of
// every type: past it the user's oldest active sessions end with CONCURRENT_LIMIT. It returns the
// evicted ids.
func (s *Service) admit(ctx context.Context, tx *store.Tx, userID string, typ gatehousev1.SessionType, r *policy.Resolved, now time.Time) ([]string, error) {
	if _, err := endExpired(ctx, tx, now, 0, entsession.UserID(userID)); err != nil {
		return nil, err
	}
	evicted, err := applyPolicyLimits(ctx, tx, userID, typ, r.Limits)
	if err != nil {
		return nil, err
	}
	capped, err := applyCap(ctx, tx, userID)
	if err != nil {
		return nil, err
	}
	return append(evicted, capped...), nil
}

// countedByLimits selects the sessions that count towards the policies' concurrent-session limits:
// the active ones that are not impersonations (notImpersonation).
//
// NOTE: this is the one place that says which sessions count towards the policies' limits; the
// store's per-user cap (applyCap) counts every active session, impersonations included.
func countedByLimits() predicate.Session {
	return entsession.And(entsession.Active(true), notImpersonation())
}

// exceeded is a limit that a new session would exceed, with the sessions it counts (oldest first)
// and how many of them must end to make room.
type exceeded struct {
	limit   *policy.Limit
	counted []string
	excess  int
}

// applyPolicyLimits applies, for admit, every limit among limits that counts typ (ARCHITECTURE.md
// section 8). When the new session would exceed none, nothing happens. When any limit it would
// exceed says deny-new, the login is refused (RESOURCE_EXHAUSTED, CONCURRENT_SESSION_LIMIT, with
// the limit's source in the metadata) and nothing ends. Otherwise the sessions evictions chooses
// end with CONCURRENT_LIMIT. It returns the evicted ids.
//
// NOTE: the caller holds the user's row lock, so the counts cannot change under it, on any node.
func applyPolicyLimits(ctx context.Context, tx *store.Tx, userID string, typ gatehousev1.SessionType, limits []policy.Limit) ([]string, error) {
	var applying []*policy.Limit
	var types []entsession.Type
	for i := range limits {
		l := &limits[i]
		if !l.Counts(typ) {
			continue
		}
		applying = append(applying, l)
		for _, t := range l.CountedTypes {
			if st, ok := convert.SessionTypeToStore(t); ok && !slices.Contains(types, st) {
				types = append(types, st)
			}
		}
	}
	if len(applying) == 0 {
		return nil, nil
	}
	active, err := tx.Session.Query().
		Where(entsession.UserID(userID), countedByLimits(), entsession.TypeIn(types...)).
		Order(ent.Asc(entsession.FieldCreateTime), ent.Asc(entsession.FieldID)).
		Select(entsession.FieldID, entsession.FieldType).
		All(ctx)
	if err != nil {
		return nil, err
	}
	var over []exceeded
	for _, l := range applying {
		var counted []string
		for _, a := range active {
			if l.Counts(convert.SessionTypeFromStore(a.Type)) {
				counted = append(counted, a.ID)
			}
		}
		if excess := len(counted) + 1 - int(l.Max); excess > 0 {
			over = append(over, exceeded{limit: l, counted: counted, excess: excess})
		}
	}
	for _, o := range over {
		if o.limit.OnLimit == gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW {
			return nil, limitError(o)
		}
	}
	return endIDs(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT, "", evictions(over))
}

// evictions chooses the sessions that end for the exceeded limits over under evict-oldest: for
// each limit its oldest counted sessions, as many as its excess after those already chosen for
// another limit that it counts too, the limits over the fewest types first (a session ended for a
// narrow limit then also frees a wider one that counts it, and the login ends no more than it
// must). It sorts over.
func evictions(over []exceeded) []string {
	slices.SortStableFunc(over, func(a, b exceeded) int {
		return len(a.limit.CountedTypes) - len(b.limit.CountedTypes)
	})
	ending := map[string]bool{}
	var ids []string
	for _, o := range over {
		freed := 0
		for _, id := range o.counted {
			if ending[id] {
				freed++
			}
		}
		for _, id := range o.counted {
			if freed >= o.excess {
				break
			}
			if !ending[id] {
				ending[id], ids, freed = true, append(ids, id), freed+1
			}
		}
	}
	return ids
}

// limitError is the refusal of a login that would exceed o under deny-new: its metadata names the
// limit (max_sessions) and the policy that sets it (source_scope user, role or global, and
// source_user_id or source_role).
func limitError(o exceeded) error {
	e := errs.ResourceExhausted("CONCURRENT_SESSION_LIMIT",
		"the user already has %d active sessions of the types that %s counts, the most its limit allows",
		len(o.counted), scopeName(o.limit.Source)).
		WithMetadata("max_sessions", strconv.Itoa(int(o.limit.Max)))
	switch k := o.limit.Source.GetKind().(type) {
	case *gatehousev1.PolicyScope_UserId:
		e = e.WithMetadata("source_scope", "user").WithMetadata("source_user_id", k.UserId)
	case *gatehousev1.PolicyScope_Role:
		e = e.WithMetadata("source_scope", "role").WithMetadata("source_role", k.Role)
	default:
		e = e.WithMetadata("source_scope", "global")
	}
	return e
}

// scopeName names a policy's scope for a message.
func scopeName(sc *gatehousev1.PolicyScope) string {
	switch k := sc.GetKind().(type) {
	case *gatehousev1.PolicyScope_UserId:
		return "the user's own policy"
	case *gatehousev1.PolicyScope_Role:
		return "the policy of role " + strconv.Quote(k.Role)
	default:
		return "the global policy"
	}
}

// capNote is the note of a session that the cap on a user's sessions ended.
const capNote = "ended by the cap on the active sessions of one user"

// applyCap ends the oldest active sessions of the user, of any type, that a new session would take
// past the store's cap (none when there is no cap): the user's own first, impersonations of the
// user only when its own are not enough.
//
// NOTE: the cap evicts rather than refuses: a client that logs in on every run and never logs out
// (a script with a non-interactive session) keeps working, and the cap still bounds the rows one
// account holds, which every policy change, role change and termination of the user must touch.
// Impersonations count towards the cap (they are rows of the user) but not towards the user's
// limits, and ending one is its impersonator's business: the user's own logins end them last.
func applyCap(ctx context.Context, tx *store.Tx, userID string) ([]string, error) {
	limit := tx.Store().MaxSessionsPerUser()
	if limit <= 0 {
		return nil, nil
	}
	n, err := activeSessions(ctx, tx, userID)
	if err != nil {
		return nil, err
	}
	excess := n + 1 - limit
	if excess <= 0 {
		return nil, nil
	}
	var oldest []string
	for _, kind := range []predicate.Session{notImpersonation(), entsession.ImpersonatorSessionIDNEQ("")} {
		ids, err := tx.Session.Query().
			Where(entsession.UserID(userID), entsession.Active(true), kind).
			Order(ent.Asc(entsession.FieldCreateTime), ent.Asc(entsession.FieldID)).
			Limit(excess - len(oldest)).
			IDs(ctx)
		if err != nil {
			return nil, err
		}
		if oldest = append(oldest, ids...); len(oldest) == excess {
			break
		}
	}
	return endIDs(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT, capNote, oldest)
}

// activeSessions counts the active sessions of a user, of every type, impersonations included:
// what the per-user cap bounds.
func activeSessions(ctx context.Context, tx *store.Tx, userID string) (int, error) {
	return tx.Session.Query().Where(entsession.UserID(userID), entsession.Active(true)).Count(ctx)
}

// sweepBatch bounds the sessions one sweep transaction ends.
const sweepBatch = 500

// endExpired ends the active sessions that match where and whose absolute or idle expiry has
// passed, with ABSOLUTE_TIMEOUT or IDLE_TIMEOUT, at most limit of them when limit is positive. It
// returns how many it ended.
//
// NOTE: one statement finds and locks both kinds (a login runs this for its user every time); a
// session past both expiries ends as ABSOLUTE_TIMEOUT.
func endExpired(ctx context.Context, tx *store.Tx, now time.Time, limit int, where ...predicate.Session) (int, error) {
	expired, err := lockActive(ctx, tx, limit, []string{entsession.FieldAbsoluteExpireTime},
		append(where, entsession.Or(entsession.AbsoluteExpireTimeLTE(now), entsession.IdleExpireTimeLTE(now)))...)
	if err != nil || len(expired) == 0 {
		return 0, err
	}
	var absolute, idle []*ent.Session
	for _, s := range expired {
		if s.AbsoluteExpireTime.After(now) {
			idle = append(idle, s)
		} else {
			absolute = append(absolute, s)
		}
	}
	if _, _, err := endLocked(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT, "", absolute); err != nil {
		return 0, err
	}
	// NOTE: ending the absolute ones ended the impersonations opened from them (endImpersonations),
	// some of which may be among the idle ones: this transaction holds their locks, so exactly those
	// ended, and only the others end here, once each.
	ended := make(map[string]bool, len(absolute))
	for _, s := range absolute {
		ended[s.ID] = true
	}
	idle = slices.DeleteFunc(idle, func(s *ent.Session) bool { return ended[s.ImpersonatorSessionID] })
	_, _, err = endLocked(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT, "", idle)
	return len(absolute) + len(idle), err
}
