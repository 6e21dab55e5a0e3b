// Package convert turns stored entities into their API messages and back. The gatehouse.v1
// messages are the domain's resource model; this is the one place that knows both shapes.
package convert

import (
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// NewID returns a new UUIDv7 string id.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// Now is the current time as stored: UTC, truncated to microseconds (PostgreSQL's precision), so
// that what a mutation returns equals what a later read returns.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Key normalises a username or group name for case-insensitive uniqueness.
func Key(name string) string { return strings.ToLower(name) }

// Timestamp converts a time, nil for the zero time.
func Timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// User converts a stored user.
func User(u *ent.User) *gatehousev1.User {
	return &gatehousev1.User{
		Id:          u.ID,
		Username:    u.Username,
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Disabled:    u.Disabled,
		CreateTime:  Timestamp(u.CreateTime),
		UpdateTime:  Timestamp(u.UpdateTime),
		HasPassword: u.PasswordHash != nil,
	}
}

// Group converts a stored group.
func Group(g *ent.Group) *gatehousev1.Group {
	return &gatehousev1.Group{Id: g.ID, Name: g.Name, Description: g.Description, CreateTime: Timestamp(g.CreateTime)}
}

// Role converts a stored role with the names of the roles it directly contains.
func Role(r *ent.Role, contains []string) *gatehousev1.Role {
	return &gatehousev1.Role{
		Name:        r.ID,
		Description: r.Description,
		Contains:    contains,
		BuiltIn:     r.BuiltIn,
		CreateTime:  Timestamp(r.CreateTime),
	}
}

var sessionTypes = map[gatehousev1.SessionType]entsession.Type{
	gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER:     entsession.TypeWebBrowser,
	gatehousev1.SessionType_SESSION_TYPE_MOBILE_BROWSER:  entsession.TypeMobileBrowser,
	gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP:      entsession.TypeMobileApp,
	gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE: entsession.TypeNonInteractive,
}

// SessionTypeToStore converts an API session type; ok is false for unspecified or unknown values.
func SessionTypeToStore(t gatehousev1.SessionType) (entsession.Type, bool) {
	v, ok := sessionTypes[t]
	return v, ok
}

// SessionTypeFromStore converts a stored session type.
func SessionTypeFromStore(t entsession.Type) gatehousev1.SessionType {
	for k, v := range sessionTypes {
		if v == t {
			return k
		}
	}
	return gatehousev1.SessionType_SESSION_TYPE_UNSPECIFIED
}

// TerminationReason parses a stored termination reason (the enum's name).
func TerminationReason(s string) gatehousev1.TerminationReason {
	return gatehousev1.TerminationReason(gatehousev1.TerminationReason_value[s])
}

// Session converts a stored session.
func Session(s *ent.Session) *gatehousev1.Session {
	out := &gatehousev1.Session{
		Id:     s.ID,
		UserId: s.UserID,
		Type:   SessionTypeFromStore(s.Type),
		Client: &gatehousev1.ClientInfo{
			UserAgent:  s.UserAgent,
			IpAddress:  s.IPAddress,
			DeviceName: s.DeviceName,
		},
		CreateTime:         Timestamp(s.CreateTime),
		LastActiveTime:     Timestamp(s.LastActiveTime),
		IdleExpireTime:     Timestamp(s.IdleExpireTime),
		AbsoluteExpireTime: Timestamp(s.AbsoluteExpireTime),
		Active:             s.Active,
		TerminationReason:  TerminationReason(s.TerminationReason),
		Note:               s.Note,
		// The impersonation markers (empty unless impersonated).
		ImpersonatorUserId:    s.ImpersonatorUserID,
		ImpersonatorSessionId: s.ImpersonatorSessionID,
		ImpersonationReason:   s.ImpersonationReason,
	}
	if s.TerminateTime != nil {
		out.TerminateTime = Timestamp(*s.TerminateTime)
	}
	return out
}

// MaskPaths normalises update-mask paths: JSON names become proto names (displayName is
// display_name) and the output-only fields named in ignore are dropped, as the API design
// guidelines ask (AIP-203), so that a client may send back a resource it read. A nil mask stays nil
// (no mask: the caller takes the populated fields, PopulatedPaths).
func MaskPaths(paths []string, ignore ...string) []string {
	if paths == nil {
		return nil
	}
	out := []string{}
	for _, p := range paths {
		var b strings.Builder
		for _, r := range p {
			if 'A' <= r && r <= 'Z' {
				b.WriteByte('_')
				r += 'a' - 'A'
			}
			b.WriteRune(r)
		}
		if n := b.String(); !slices.Contains(ignore, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// PopulatedPaths returns, in the order given, those of fields (proto field names) that msg has
// populated: set to a value other than the field's default. It is the implied update mask of an
// update request without one (AIP-134), so that without a mask an empty string or a false never
// overwrites anything.
func PopulatedPaths(msg proto.Message, fields ...string) []string {
	m := msg.ProtoReflect()
	out := []string{}
	for _, f := range fields {
		if fd := m.Descriptor().Fields().ByName(protoreflect.Name(f)); fd != nil && m.Has(fd) {
			out = append(out, f)
		}
	}
	return out
}
