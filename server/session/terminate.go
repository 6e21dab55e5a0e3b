package session

import (
	"context"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// EndUserSessions ends every active session of userID except exceptID (which may be empty) with
// reason, inside tx, and emits one SESSION_TERMINATED event per session. It returns the ended ids.
func EndUserSessions(ctx context.Context, tx *store.Tx, userID, exceptID string, reason gatehousev1.TerminationReason, note string) ([]string, error) {
	q := tx.Session.Query().Where(entsession.UserID(userID), entsession.Active(true))
	if exceptID != "" {
		q = q.Where(entsession.IDNEQ(exceptID))
	}
	ids, err := q.IDs(ctx)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	if err := endSessions(ctx, tx, userID, ids, reason, note); err != nil {
		return nil, err
	}
	return ids, nil
}

// endSessions marks sessions of one user ended and emits their events.
func endSessions(ctx context.Context, tx *store.Tx, userID string, ids []string, reason gatehousev1.TerminationReason, note string) error {
	now := convert.Now()
	err := tx.Session.Update().
		Where(entsession.IDIn(ids...), entsession.Active(true)).
		SetActive(false).
		SetTerminationReason(reason.String()).
		SetTerminateTime(now).
		SetNote(note).
		Exec(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		tx.Emit(&gatehousev1.Event{
			Type:      gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED,
			UserId:    userID,
			SessionId: id,
			Payload: &gatehousev1.Event_SessionTerminated{SessionTerminated: &gatehousev1.SessionTerminatedPayload{
				Reason: reason,
				Note:   note,
			}},
		})
	}
	return nil
}

// EndSession ends one active session inside tx and returns it as it is now. Ending a session that
// has already ended changes nothing and returns it unchanged.
func EndSession(ctx context.Context, tx *store.Tx, s *ent.Session, reason gatehousev1.TerminationReason, note string) (*ent.Session, error) {
	if !s.Active {
		return s, nil
	}
	if err := endSessions(ctx, tx, s.UserID, []string{s.ID}, reason, note); err != nil {
		return nil, err
	}
	return tx.Session.Get(ctx, s.ID)
}
