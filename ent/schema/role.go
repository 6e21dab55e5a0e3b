package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Role is a named permission, identified by its unique name (the primary key).
type Role struct{ ent.Schema }

// Annotations names the table.
func (Role) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "roles"}}
}

// Fields of Role.
func (Role) Fields() []ent.Field {
	return []ent.Field{
		// NOTE: role names are ASCII (the proto's pattern), so 64 bytes are its 64 characters.
		field.String("id").Immutable().NotEmpty().MaxLen(64).StorageKey("name"),
		field.String("description").Default("").MaxLen(maxChars(1024)),
		field.Bool("built_in").Default(false).Immutable(),
		field.Time("create_time").Immutable().Default(now),
	}
}

// Edges of Role.
func (Role) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("contains", RoleContainment.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("contained_in", RoleContainment.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("grants", RoleGrant.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("holders", EffectiveRole.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

// RoleContainment says that role contains contained_role.
type RoleContainment struct{ ent.Schema }

// Annotations names the table.
func (RoleContainment) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "role_containments"}}
}

// Fields of RoleContainment.
func (RoleContainment) Fields() []ent.Field {
	return []ent.Field{
		field.String("role").Immutable(),
		field.String("contained_role").Immutable(),
	}
}

// Edges of RoleContainment.
func (RoleContainment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("parent", Role.Type).Ref("contains").Field("role").Unique().Required().Immutable(),
		edge.From("child", Role.Type).Ref("contained_in").Field("contained_role").Unique().Required().Immutable(),
	}
}

// Indexes of RoleContainment.
func (RoleContainment) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("role", "contained_role").Unique(),
		index.Fields("contained_role"),
	}
}

// RoleGrant grants a role to exactly one of a user or a group.
type RoleGrant struct{ ent.Schema }

// Annotations names the table.
func (RoleGrant) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "role_grants"}}
}

// Fields of RoleGrant.
func (RoleGrant) Fields() []ent.Field {
	return []ent.Field{
		field.String("role").Immutable(),
		field.String("user_id").Optional().Nillable().Immutable(),
		field.String("group_id").Optional().Nillable().Immutable(),
		field.Time("create_time").Immutable().Default(now),
	}
}

// Edges of RoleGrant.
func (RoleGrant) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("granted_role", Role.Type).Ref("grants").Field("role").Unique().Required().Immutable(),
		edge.From("user", User.Type).Ref("grants").Field("user_id").Unique().Immutable(),
		edge.From("group", Group.Type).Ref("grants").Field("group_id").Unique().Immutable(),
	}
}

// Indexes of RoleGrant: one grant per role and principal (NULLs never collide).
func (RoleGrant) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("role", "user_id").Unique(),
		index.Fields("role", "group_id").Unique(),
		index.Fields("user_id"),
		index.Fields("group_id"),
	}
}

// EffectiveRole is one row of a user's materialised effective roles: the user holds role for one
// reason (source_kind "direct", "group" with source_ref the group id, or "role" with source_ref the
// containing role). A role held for several reasons has several rows.
type EffectiveRole struct{ ent.Schema }

// Annotations names the table.
func (EffectiveRole) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "effective_roles"}}
}

// Fields of EffectiveRole.
func (EffectiveRole) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Immutable(),
		field.String("role").Immutable(),
		field.Enum("source_kind").Values("direct", "group", "role").Immutable(),
		field.String("source_ref").Default("").Immutable(),
	}
}

// Edges of EffectiveRole.
func (EffectiveRole) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("effective_roles").Field("user_id").Unique().Required().Immutable(),
		edge.From("held_role", Role.Type).Ref("holders").Field("role").Unique().Required().Immutable(),
	}
}

// Indexes of EffectiveRole.
func (EffectiveRole) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id", "role", "source_kind", "source_ref").Unique(),
		index.Fields("role"),
	}
}
