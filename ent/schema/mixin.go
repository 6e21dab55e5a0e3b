// Package schema holds Gatehouse's ent schema: one file per entity. Table and column names are set
// explicitly because the store also queries them with hand-written, set-based SQL.
package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// idField is the primary key of entities with server-assigned UUIDv7 string ids.
func idField() ent.Field {
	return field.String("id").Immutable().NotEmpty().MaxLen(36)
}

// now is the default of time columns: UTC, truncated to microseconds, the precision PostgreSQL
// keeps, so that what a create returns equals what a later read returns.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
