package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// User is a person or service that can hold sessions.
type User struct{ ent.Schema }

// Annotations names the table.
func (User) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "users"}}
}

// Fields of User.
func (User) Fields() []ent.Field {
	return []ent.Field{
		idField(),
		// NOTE: usernames are ASCII (the proto's pattern), so 64 bytes are its 64 characters.
		field.String("username").NotEmpty().MaxLen(64),
		// NOTE: username_key is the lower-cased username; its unique index makes usernames unique
		// case-insensitively on every dialect without expression indexes.
		field.String("username_key").NotEmpty().MaxLen(64),
		field.String("email").Default("").MaxLen(maxChars(254)),
		field.String("display_name").Default("").MaxLen(maxChars(256)),
		field.Bool("disabled").Default(false),
		field.String("password_hash").Optional().Nillable().Sensitive(),
		field.Time("create_time").Immutable().Default(now),
		field.Time("update_time").Default(now),
	}
}

// Edges of User.
func (User) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("memberships", GroupMember.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("grants", RoleGrant.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("effective_roles", EffectiveRole.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

// Indexes of User.
func (User) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("username_key").Unique(),
	}
}
