package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Group is a named set of users; roles granted to a group apply to every member.
type Group struct{ ent.Schema }

// Annotations names the table.
func (Group) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "groups"}}
}

// Fields of Group.
func (Group) Fields() []ent.Field {
	return []ent.Field{
		idField(),
		// NOTE: group names are ASCII (the proto's pattern), so 64 bytes are its 64 characters.
		field.String("name").NotEmpty().MaxLen(64),
		// NOTE: name_key is the lower-cased name, unique, as for usernames.
		field.String("name_key").NotEmpty().MaxLen(64),
		field.String("description").Default("").MaxLen(maxChars(1024)),
		field.Time("create_time").Immutable().Default(now),
	}
}

// Edges of Group.
func (Group) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("members", GroupMember.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.To("grants", RoleGrant.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

// Indexes of Group.
func (Group) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("name_key").Unique(),
	}
}

// GroupMember is one user's membership of one group.
type GroupMember struct{ ent.Schema }

// Annotations names the table.
func (GroupMember) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "group_members"}}
}

// Fields of GroupMember.
func (GroupMember) Fields() []ent.Field {
	return []ent.Field{
		field.String("group_id").Immutable(),
		field.String("user_id").Immutable(),
		field.Time("create_time").Immutable().Default(now),
	}
}

// Edges of GroupMember.
func (GroupMember) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("group", Group.Type).Ref("members").Field("group_id").Unique().Required().Immutable(),
		edge.From("user", User.Type).Ref("memberships").Field("user_id").Unique().Required().Immutable(),
	}
}

// Indexes of GroupMember: one membership per pair, and lookups by user.
func (GroupMember) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("group_id", "user_id").Unique(),
		index.Fields("user_id"),
	}
}
