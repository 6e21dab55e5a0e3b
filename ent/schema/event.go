package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Event is one row of the event log (the outbox and the audit log at once). On PostgreSQL the store
// adds an `xid xid8 DEFAULT pg_current_xact_id()` column after migration, which readers use for the
// gap-free transaction-id horizon; ent does not model that type.
type Event struct{ ent.Schema }

// Annotations names the table.
func (Event) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "events"}}
}

// Fields of Event.
func (Event) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id").Immutable(),
		field.Time("time").Immutable(),
		field.String("type").Immutable(),
		field.String("actor_user_id").Default("").Immutable(),
		field.String("actor_session_id").Default("").Immutable(),
		// NOTE: user and session ids are plain columns, not foreign keys: the log outlives them.
		field.String("user_id").Default("").Immutable(),
		field.String("session_id").Default("").Immutable(),
		// payload is the protobuf encoding of the gatehouse.v1.Event (without its cursor).
		field.Bytes("payload").Immutable(),
	}
}

// Indexes of Event.
func (Event) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id"),
		index.Fields("time"),
	}
}
