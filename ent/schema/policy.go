package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// SessionPolicy sets limits, timeouts and the role-change action for one scope. Nil fields are unset
// and fall through to broader scopes.
type SessionPolicy struct{ ent.Schema }

// Annotations names the table.
func (SessionPolicy) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "session_policies"}}
}

// Fields of SessionPolicy.
func (SessionPolicy) Fields() []ent.Field {
	return []ent.Field{
		idField(),
		field.Enum("scope_kind").Values("global", "role", "user").Immutable(),
		// NOTE: scope_ref is the role name or user id, and "" for the global scope, so that the
		// unique index below allows one policy per scope on every dialect.
		field.String("scope_ref").Default("").Immutable(),
		field.Int32("max_sessions").Optional().Nillable(),
		field.Strings("counted_types").Optional(),
		field.String("on_limit").Default(""),
		field.Int64("idle_timeout_ns").Optional().Nillable(),
		field.Int64("absolute_timeout_ns").Optional().Nillable(),
		field.String("on_role_change").Default(""),
		field.Time("create_time").Immutable().Default(now),
		field.Time("update_time").Default(now),
	}
}

// Indexes of SessionPolicy: one policy per scope.
func (SessionPolicy) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("scope_kind", "scope_ref").Unique(),
	}
}
