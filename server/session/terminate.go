package session

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// EndUserSessions ends every active session of userID except exceptID (which may be empty) with
// reason, inside tx, and emits one SESSION_TERMINATED event per session. It returns the ended ids.
func EndUserSessions(ctx context.Context, tx *store.Tx, userID, exceptID string, reason gatehousev1.TerminationReason, note string) ([]string, error) {
	where := []predicate.Session{entsession.UserID(userID)}
	if exceptID != "" {
		where = append(where, entsession.IDNEQ(exceptID))
	}
	ids, _, err := endWhere(ctx, tx, reason, note, 0, where...)
	return ids, err
}

// endWhere ends the active sessions that match where (at most limit of them, oldest first, when
// limit is positive) with reason, and emits one SESSION_TERMINATED event for each; the
// impersonation sessions opened from them end too (endImpersonations). It returns the ids that
// matched and ended, and how many impersonations ended with them. However many sessions match, no statement binds more than store.MaxInList ids; where
// itself must not hold a longer list (see endIDs).
//
// NOTE: on PostgreSQL the sessions are locked before they are ended (store.Tx.SessionsForUpdate),
// and a session that a concurrent transaction ended meanwhile no longer matches once that
// transaction commits, so every session ends exactly once, with one event and one reason, whoever
// races to end it (a logout, an administrator, the sweeper, an eviction). SQLite write transactions
// are exclusive already.
func endWhere(ctx context.Context, tx *store.Tx, reason gatehousev1.TerminationReason, note string, limit int, where ...predicate.Session) (ids []string, impersonations int, err error) {
	live, err := lockActive(ctx, tx, limit, nil, where...)
	if err != nil {
		return nil, 0, err
	}
	return endLocked(ctx, tx, reason, note, live)
}

// lockActive locks and returns the active sessions that match where (at most limit of them,
// oldest first, when limit is positive), with the fields endLocked needs and the extra ones.
func lockActive(ctx context.Context, tx *store.Tx, limit int, extra []string, where ...predicate.Session) ([]*ent.Session, error) {
	q := tx.SessionsForUpdate().
		Where(append(where, entsession.Active(true))...).
		Order(ent.Asc(entsession.FieldID))
	if limit > 0 {
		q = q.Limit(limit)
	}
	fields := append([]string{entsession.FieldID, entsession.FieldUserID, entsession.FieldImpersonatorUserID, entsession.FieldImpersonatorSessionID}, extra...)
	return q.Select(fields...).All(ctx)
}

// endLocked ends the sessions live, locked by lockActive, as endWhere does. It also returns how
// many impersonations opened from them ended with them.
func endLocked(ctx context.Context, tx *store.Tx, reason gatehousev1.TerminationReason, note string, live []*ent.Session) ([]string, int, error) {
	if len(live) == 0 {
		return nil, 0, nil
	}
	ids := make([]string, len(live))
	for i, s := range live {
		ids[i] = s.ID
	}
	now := convert.Now()
	for batch := range slices.Chunk(ids, store.MaxInList) {
		err := tx.Session.Update().
			Where(entsession.IDIn(batch...)).
			SetActive(false).
			SetTerminationReason(reason.String()).
			SetTerminateTime(now).
			SetNote(note).
			Exec(ctx)
		if err != nil {
			return nil, 0, err
		}
	}
	for _, s := range live {
		tx.Emit(&gatehousev1.Event{
			Type:      gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED,
			UserId:    s.UserID,
			SessionId: s.ID,
			// The end of an impersonation names the impersonator, whoever ended it.
			ImpersonatorUserId:    s.ImpersonatorUserID,
			ImpersonatorSessionId: s.ImpersonatorSessionID,
			Payload: &gatehousev1.Event_SessionTerminated{SessionTerminated: &gatehousev1.SessionTerminatedPayload{
				Reason: reason,
				Note:   note,
			}},
		})
	}
	// NOTE: an impersonation ends with the impersonator's session, however that ends (logout, an
	// administrator, a timeout, an eviction, the user disabled or deleted), in the same
	// transaction: every ending goes through here. The ids returned are only those that matched.
	// An impersonation session opens none (impersonations do not chain), so only the others are
	// looked up.
	var impersonators []string
	for _, s := range live {
		if s.ImpersonatorSessionID == "" {
			impersonators = append(impersonators, s.ID)
		}
	}
	cascaded := 0
	for batch := range slices.Chunk(impersonators, store.MaxInList) {
		n, err := endImpersonations(ctx, tx, batch, reason)
		if err != nil {
			return nil, 0, err
		}
		cascaded += n
	}
	return ids, cascaded, nil
}

// endIDs ends the active sessions among ids with reason, as endWhere does, in statements of at
// most store.MaxInList ids. It returns the ids it ended.
func endIDs(ctx context.Context, tx *store.Tx, reason gatehousev1.TerminationReason, note string, ids []string) ([]string, error) {
	var ended []string
	for batch := range slices.Chunk(ids, store.MaxInList) {
		e, _, err := endWhere(ctx, tx, reason, note, 0, entsession.IDIn(batch...))
		if err != nil {
			return nil, err
		}
		ended = append(ended, e...)
	}
	return ended, nil
}

// EndSession ends one session inside tx and returns it as it is now. Ending a session that has
// already ended (or that a concurrent transaction ends first) changes nothing and returns it as
// that ending left it.
func EndSession(ctx context.Context, tx *store.Tx, s *ent.Session, reason gatehousev1.TerminationReason, note string) (*ent.Session, error) {
	if !s.Active {
		return s, nil
	}
	if _, _, err := endWhere(ctx, tx, reason, note, 0, entsession.ID(s.ID)); err != nil {
		return nil, err
	}
	return tx.Session.Get(ctx, s.ID)
}
