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

// maxChars is the MaxLen of a column whose proto field a protovalidate max_len rule bounds to n
// characters: 4n bytes, the most n characters take in UTF-8.
//
// NOTE: the protos are the contract, and their bounds are in characters, which is what clients
// see: protovalidate's max_len counts characters (code points), ent's MaxLen counts bytes. So every
// column behind a max_len field takes maxChars(n) bytes, and the proto rule (checked first, as
// INVALID_ARGUMENT naming the field) is the bound a client meets; the ent validator only guards
// against a value that bypassed the protos, and never turns valid input into INTERNAL. The columns
// themselves carry no length on either dialect (PostgreSQL: character varying), so the validator
// is the only byte bound, and changing it migrates nothing. Columns whose proto rule admits only
// ASCII (the username and name patterns) take n bytes, which are n characters. A column whose proto
// field has no length bound (ip_address) has no MaxLen either. integration/limits_utf8_test.go
// checks every bounded field of every request at its limit.
func maxChars(n int) int { return 4 * n }

// now is the default of time columns: UTC, truncated to microseconds, the precision PostgreSQL
// keeps, so that what a create returns equals what a later read returns.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
