package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Session is one login of one user. Only the SHA-256 of its bearer token is stored.
type Session struct{ ent.Schema }

// Annotations names the table.
func (Session) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: "sessions"}}
}

// Fields of Session.
func (Session) Fields() []ent.Field {
	return []ent.Field{
		idField(),
		// NOTE: user_id is not a foreign key: a deleted user's ended sessions stay, so that their
		// validation still says why they ended (USER_DELETED).
		field.String("user_id").Immutable(),
		field.Bytes("token_hash").Immutable().Sensitive().MaxLen(32),
		field.Enum("type").Values("web_browser", "mobile_browser", "mobile_app", "non_interactive").Immutable(),
		field.String("user_agent").Default("").MaxLen(maxChars(512)),
		// NOTE: no MaxLen: the proto's ip rule admits an IPv6 zone ("fe80::1%eth0") of any length,
		// and a bound the proto does not declare would turn a valid address into INTERNAL.
		field.String("ip_address").Default(""),
		field.String("device_name").Default("").MaxLen(maxChars(128)),
		field.Bool("trusted").Default(false).Immutable(),
		field.Time("create_time").Immutable().Default(now),
		field.Time("last_active_time"),
		field.Time("idle_expire_time"),
		field.Time("absolute_expire_time"),
		field.Bool("active").Default(true),
		field.String("termination_reason").Default(""),
		field.Time("terminate_time").Optional().Nillable(),
		field.String("note").Default("").MaxLen(maxChars(512)),
		// The impersonation markers, empty unless an impersonator opened the session as its user
		// (CreateSession's impersonate credential). The session ends with impersonator_session_id.
		field.String("impersonator_user_id").Default("").Immutable(),
		field.String("impersonator_session_id").Default("").Immutable(),
		field.String("impersonation_reason").Default("").MaxLen(maxChars(256)).Immutable(),
	}
}

// Indexes of Session.
func (Session) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("token_hash").Unique(),
		index.Fields("user_id", "active", "create_time"),
		index.Fields("active", "idle_expire_time"),
		index.Fields("active", "absolute_expire_time"),
		// The retention prune: ended sessions by when they ended.
		index.Fields("active", "terminate_time"),
		// Ending a session ends the impersonations it opened.
		index.Fields("impersonator_session_id", "active"),
	}
}
