package store

import (
	"context"
	"slices"
	"strings"
	"time"
)

// SessionExpiry is a session's new idle and absolute expiry, for SetSessionExpiries.
type SessionExpiry struct {
	// ID is the session's id.
	ID string
	// Idle and Absolute are the session's new idle and absolute expiry.
	Idle, Absolute time.Time
}

// expiryBatch bounds the sessions of one expiry UPDATE.
//
// NOTE: each session binds five parameters, and the database searches the CASE lists linearly for
// every row it updates, so the work of one statement grows with the square of its sessions: a
// hundred keeps it small and the parameters far below SQLite's 32766.
const expiryBatch = 100

// SetSessionExpiries writes new expiries of sessions, in one UPDATE ... SET ... = CASE id WHEN ...
// statement per expiryBatch of them. On PostgreSQL each time is bound as CAST(? AS timestamptz),
// on SQLite as a plain parameter.
func (t *Tx) SetSessionExpiries(ctx context.Context, changes []SessionExpiry) error {
	for batch := range slices.Chunk(changes, expiryBatch) {
		if err := t.setSessionExpiriesOf(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

// setSessionExpiriesOf writes new expiries of sessions in one UPDATE.
func (t *Tx) setSessionExpiriesOf(ctx context.Context, changes []SessionExpiry) error {
	// NOTE: lib/pq sends times as untyped text, which a CASE cannot assign to a timestamptz
	// column without a cast; SQLite stores times as the driver formats them and needs none.
	param := "?"
	if t.store.IsPostgres() {
		param = "CAST(? AS timestamptz)"
	}
	var idle, absolute strings.Builder
	idleArgs := make([]any, 0, 2*len(changes))
	absArgs := make([]any, 0, 2*len(changes))
	ids := make([]any, 0, len(changes))
	for _, c := range changes {
		idle.WriteString(" WHEN ? THEN " + param)
		absolute.WriteString(" WHEN ? THEN " + param)
		idleArgs = append(idleArgs, c.ID, c.Idle.UTC())
		absArgs = append(absArgs, c.ID, c.Absolute.UTC())
		ids = append(ids, c.ID)
	}
	query := "UPDATE sessions SET idle_expire_time = CASE id" + idle.String() + " END," +
		" absolute_expire_time = CASE id" + absolute.String() + " END" +
		" WHERE id IN (" + Placeholders(len(ids)) + ")"
	args := append(append(idleArgs, absArgs...), ids...)
	_, err := t.Exec(ctx, query, args...)
	return err
}
