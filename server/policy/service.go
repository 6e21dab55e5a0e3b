package policy

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatehouse/gatehouse/ent"
	entrole "github.com/gatehouse/gatehouse/ent/role"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/paging"
	"github.com/gatehouse/gatehouse/server/store"
)

// ChangedFunc is called inside the transaction that created, changed or deleted a policy, with the
// policy's scope, so that the session domain can re-apply timeouts to live sessions. It reports what
// it did to them, for the change's ChangeImpact.
type ChangedFunc func(ctx context.Context, tx *store.Tx, scope *gatehousev1.PolicyScope) (SessionEffect, error)

// Service implements policy management and resolution.
type Service struct {
	store     *store.Store
	onChanged ChangedFunc
}

// New returns the policy domain over st; onChanged may be nil.
func New(st *store.Store, onChanged ChangedFunc) *Service {
	return &Service{store: st, onChanged: onChanged}
}

// Proto converts a stored policy.
func Proto(p *ent.SessionPolicy) *gatehousev1.SessionPolicy {
	out := &gatehousev1.SessionPolicy{
		Id:           p.ID,
		Scope:        Scope(p),
		MaxSessions:  p.MaxSessions,
		CountedTypes: sessionTypes(p.CountedTypes),
		OnLimit:      limitAction(p.OnLimit),
		OnRoleChange: roleChangeAction(p.OnRoleChange),
		CreateTime:   convert.Timestamp(p.CreateTime),
		UpdateTime:   convert.Timestamp(p.UpdateTime),
	}
	if p.IdleTimeoutNs != nil {
		out.IdleTimeout = durationpb.New(time.Duration(*p.IdleTimeoutNs))
	}
	if p.AbsoluteTimeoutNs != nil {
		out.AbsoluteTimeout = durationpb.New(time.Duration(*p.AbsoluteTimeoutNs))
	}
	return out
}

// Fields of a policy that an update mask may name.
var policyFields = []string{"max_sessions", "counted_types", "on_limit", "idle_timeout", "absolute_timeout", "on_role_change"}

// values holds the settable fields of a policy in storage form; nil or "" means unset.
type values struct {
	maxSessions  *int32
	countedTypes []string
	onLimit      string
	idle, abs    *int64
	onRoleChange string
}

func valuesOf(p *gatehousev1.SessionPolicy) values {
	v := values{maxSessions: p.MaxSessions}
	if len(p.CountedTypes) > 0 {
		for _, t := range p.CountedTypes {
			v.countedTypes = append(v.countedTypes, t.String())
		}
	}
	if p.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_UNSPECIFIED {
		v.onLimit = p.OnLimit.String()
	}
	if p.OnRoleChange != gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_UNSPECIFIED {
		v.onRoleChange = p.OnRoleChange.String()
	}
	if p.IdleTimeout != nil {
		d := int64(p.IdleTimeout.AsDuration())
		v.idle = &d
	}
	if p.AbsoluteTimeout != nil {
		d := int64(p.AbsoluteTimeout.AsDuration())
		v.abs = &d
	}
	return v
}

// Create creates a policy for a scope that has none. The scope's role or user must exist. It
// returns the policy, the change's impact on live sessions, and the consistency token (empty when
// mode is store.Preview: the change is run and rolled back).
func (s *Service) Create(ctx context.Context, in *gatehousev1.SessionPolicy, mode store.Mode) (*gatehousev1.SessionPolicy, *gatehousev1.ChangeImpact, events.Position, error) {
	if in.GetScope().GetKind() == nil {
		return nil, nil, events.Position{}, errs.InvalidArgument("INVALID_ARGUMENT", "policy.scope is required",
			errs.FieldViolation{Field: "policy.scope", Description: "required: global, role or user_id"})
	}
	v := valuesOf(in)
	var out *gatehousev1.SessionPolicy
	var effect SessionEffect
	pos, err := s.store.Run(ctx, mode, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: the role-graph lock, taken first (before any row lock), serialises policy changes
		// with role changes, user deletions and logins (which share it), so that a login sees the
		// policy entirely before or after the change and the change's hook sees its session.
		if err := tx.LockRoleGraph(ctx); err != nil {
			return err
		}
		kind, ref, err := scopeOf(ctx, tx, in.Scope)
		if err != nil {
			return err
		}
		if err := mayGovern(ctx, tx, kind, ref); err != nil {
			return err
		}
		now := convert.Now()
		p, err := tx.SessionPolicy.Create().
			SetID(convert.NewID()).SetScopeKind(kind).SetScopeRef(ref).
			SetNillableMaxSessions(v.maxSessions).SetCountedTypes(v.countedTypes).SetOnLimit(v.onLimit).
			SetNillableIdleTimeoutNs(v.idle).SetNillableAbsoluteTimeoutNs(v.abs).SetOnRoleChange(v.onRoleChange).
			SetCreateTime(now).SetUpdateTime(now).
			Save(ctx)
		if ent.IsConstraintError(err) {
			return errs.AlreadyExists("POLICY_EXISTS", "a policy for this scope exists; update it instead")
		}
		if err != nil {
			return err
		}
		out = Proto(p)
		tx.Emit(policyEvent(gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED, out))
		effect, err = s.changed(ctx, tx, out.Scope)
		return err
	})
	if err != nil {
		return nil, nil, events.Position{}, err
	}
	return out, Impact(nil, effect), pos, nil
}

func (s *Service) changed(ctx context.Context, tx *store.Tx, scope *gatehousev1.PolicyScope) (SessionEffect, error) {
	if s.onChanged == nil {
		return SessionEffect{}, nil
	}
	return s.onChanged(ctx, tx, scope)
}

func policyEvent(t gatehousev1.EventType, p *gatehousev1.SessionPolicy) *gatehousev1.Event {
	ev := &gatehousev1.Event{Type: t, UserId: p.GetScope().GetUserId()}
	payload := &gatehousev1.PolicyPayload{Policy: p}
	switch t {
	case gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED:
		ev.Payload = &gatehousev1.Event_PolicyCreated{PolicyCreated: payload}
	case gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED:
		ev.Payload = &gatehousev1.Event_PolicyUpdated{PolicyUpdated: payload}
	default:
		ev.Payload = &gatehousev1.Event_PolicyDeleted{PolicyDeleted: payload}
	}
	return ev
}

// scopeOf checks that a scope's role or user exists and returns its storage form. The caller holds
// the role-graph lock, which deleting a role or a user takes too, so the role or user cannot go
// away before tx commits and leave the new policy behind.
func scopeOf(ctx context.Context, tx *store.Tx, sc *gatehousev1.PolicyScope) (entpolicy.ScopeKind, string, error) {
	switch k := sc.Kind.(type) {
	case *gatehousev1.PolicyScope_Role:
		ok, err := tx.Role.Query().Where(entrole.ID(k.Role)).Exist(ctx)
		if err != nil || !ok {
			return "", "", firstErr(err, errs.NotFound("ROLE_NOT_FOUND", "role %q not found", k.Role))
		}
		return entpolicy.ScopeKindRole, k.Role, nil
	case *gatehousev1.PolicyScope_UserId:
		ok, err := tx.User.Query().Where(entuser.ID(k.UserId)).Exist(ctx)
		if err != nil || !ok {
			return "", "", firstErr(err, errs.NotFound("USER_NOT_FOUND", "user %s not found", k.UserId))
		}
		return entpolicy.ScopeKindUser, k.UserId, nil
	default:
		return entpolicy.ScopeKindGlobal, "", nil
	}
}

func firstErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

func policyNotFound(id string) error {
	return errs.NotFound("POLICY_NOT_FOUND", "policy %s not found", id)
}

// Get returns one policy.
func (s *Service) Get(ctx context.Context, id string) (*gatehousev1.SessionPolicy, error) {
	p, err := s.store.Client.SessionPolicy.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, policyNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return Proto(p), nil
}

// List lists policies ordered by id (creation order).
func (s *Service) List(ctx context.Context, pageSize int32, pageToken string) ([]*gatehousev1.SessionPolicy, string, error) {
	after, err := paging.Parse(pageToken)
	if err != nil {
		return nil, "", err
	}
	size := paging.Size(pageSize)
	ps, err := s.store.Client.SessionPolicy.Query().Where(entpolicy.IDGT(after)).Order(ent.Asc(entpolicy.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", err
	}
	ps, next := paging.Trim(ps, size, func(p *ent.SessionPolicy) string { return p.ID })
	out := make([]*gatehousev1.SessionPolicy, len(ps))
	for i, p := range ps {
		out[i] = Proto(p)
	}
	return out, next, nil
}

// scopePaths are the update-mask paths that name the scope or a part of it. The scope is
// immutable, so they are accepted only when the scope sent equals the stored one: that is what a
// REST PATCH without a mask names when it sends back a policy it read (grpc-gateway derives the
// mask from the body, down to scope.role).
var scopePaths = []string{"scope", "scope.global", "scope.role", "scope.user_id"}

// Update changes the fields named in mask, where a field named but unset in the policy is
// cleared. A nil mask means the fields populated in the policy (AIP-134). The output-only fields
// may be named and are ignored; the scope may be named when it is sent unchanged. When no field is
// left to change, nothing changes: the policy is returned as stored, with no event. The impact and
// mode are as for Create.
func (s *Service) Update(ctx context.Context, in *gatehousev1.SessionPolicy, mask []string, mode store.Mode) (*gatehousev1.SessionPolicy, *gatehousev1.ChangeImpact, events.Position, error) {
	scopeNamed := false
	if mask == nil {
		mask = convert.PopulatedPaths(in, policyFields...)
	} else {
		mask = convert.MaskPaths(mask, "id", "create_time", "update_time")
		scopeNamed = slices.ContainsFunc(mask, func(f string) bool { return slices.Contains(scopePaths, f) })
		mask = slices.DeleteFunc(mask, func(f string) bool { return slices.Contains(scopePaths, f) })
	}
	for _, f := range mask {
		if !slices.Contains(policyFields, f) {
			return nil, nil, events.Position{}, errs.InvalidArgument("INVALID_UPDATE_MASK", "update_mask names a field that cannot be updated",
				errs.FieldViolation{Field: "update_mask", Description: "unknown or immutable field " + f + "; the scope cannot change"})
		}
	}
	v := valuesOf(in)
	var out *gatehousev1.SessionPolicy
	var effect SessionEffect
	pos, err := s.store.Run(ctx, mode, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: the role-graph lock, taken first (before any row lock), serialises policy changes
		// with role changes, user deletions and logins (which share it), so that a login sees the
		// policy entirely before or after the change and the change's hook sees its session.
		if err := tx.LockRoleGraph(ctx); err != nil {
			return err
		}
		p, err := tx.SessionPolicy.Get(ctx, in.GetId())
		if ent.IsNotFound(err) {
			return policyNotFound(in.GetId())
		}
		if err != nil {
			return err
		}
		if err := mayGovern(ctx, tx, p.ScopeKind, p.ScopeRef); err != nil {
			return err
		}
		// NOTE: a scope sent (or named in the mask) must be the stored one; naming the scope without
		// sending one would clear it.
		if (in.Scope != nil || scopeNamed) && !scopeEqual(in.Scope, Scope(p)) {
			return errs.InvalidArgument("IMMUTABLE_SCOPE", "a policy's scope cannot change",
				errs.FieldViolation{Field: "policy.scope", Description: "immutable; delete the policy and create one for the other scope"})
		}
		if len(mask) == 0 {
			// Nothing to change: no update_time bump and no event; InTx returns the log head.
			out = Proto(p)
			return nil
		}
		upd := p.Update().SetUpdateTime(convert.Now())
		for _, f := range mask {
			switch f {
			case "max_sessions":
				upd.SetNillableMaxSessions(v.maxSessions)
				if v.maxSessions == nil {
					upd.ClearMaxSessions()
				}
			case "counted_types":
				if v.countedTypes == nil {
					upd.ClearCountedTypes()
				} else {
					upd.SetCountedTypes(v.countedTypes)
				}
			case "on_limit":
				upd.SetOnLimit(v.onLimit)
			case "idle_timeout":
				if v.idle == nil {
					upd.ClearIdleTimeoutNs()
				} else {
					upd.SetIdleTimeoutNs(*v.idle)
				}
			case "absolute_timeout":
				if v.abs == nil {
					upd.ClearAbsoluteTimeoutNs()
				} else {
					upd.SetAbsoluteTimeoutNs(*v.abs)
				}
			case "on_role_change":
				upd.SetOnRoleChange(v.onRoleChange)
			}
		}
		np, err := upd.Save(ctx)
		if err != nil {
			return err
		}
		out = Proto(np)
		tx.Emit(policyEvent(gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED, out))
		effect, err = s.changed(ctx, tx, out.Scope)
		return err
	})
	if err != nil {
		return nil, nil, events.Position{}, err
	}
	return out, Impact(nil, effect), pos, nil
}

func scopeEqual(a, b *gatehousev1.PolicyScope) bool {
	return a.GetGlobal() == b.GetGlobal() && a.GetRole() == b.GetRole() && a.GetUserId() == b.GetUserId()
}

// Delete deletes a policy. The impact and mode are as for Create.
func (s *Service) Delete(ctx context.Context, id string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	var effect SessionEffect
	pos, err := s.store.Run(ctx, mode, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: the role-graph lock, taken first (before any row lock), serialises policy changes
		// with role changes, user deletions and logins (which share it), so that a login sees the
		// policy entirely before or after the change and the change's hook sees its session.
		if err := tx.LockRoleGraph(ctx); err != nil {
			return err
		}
		p, err := tx.SessionPolicy.Get(ctx, id)
		if ent.IsNotFound(err) {
			return policyNotFound(id)
		}
		if err != nil {
			return err
		}
		if err := mayGovern(ctx, tx, p.ScopeKind, p.ScopeRef); err != nil {
			return err
		}
		if err := tx.SessionPolicy.DeleteOne(p).Exec(ctx); err != nil {
			return err
		}
		out := Proto(p)
		tx.Emit(policyEvent(gatehousev1.EventType_EVENT_TYPE_POLICY_DELETED, out))
		effect, err = s.changed(ctx, tx, out.Scope)
		return err
	})
	if err != nil {
		return nil, events.Position{}, err
	}
	return Impact(nil, effect), pos, nil
}

// DeleteForScope deletes the policy of a role or user scope that is going away, inside tx, and
// emits its event.
func DeleteForScope(ctx context.Context, tx *store.Tx, kind entpolicy.ScopeKind, ref string) error {
	ps, err := tx.SessionPolicy.Query().Where(entpolicy.ScopeKindEQ(kind), entpolicy.ScopeRef(ref)).All(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := tx.SessionPolicy.DeleteOne(p).Exec(ctx); err != nil {
			return err
		}
		tx.Emit(policyEvent(gatehousev1.EventType_EVENT_TYPE_POLICY_DELETED, Proto(p)))
	}
	return nil
}

// Resolve resolves the policy in force for a user, who must exist.
func (s *Service) Resolve(ctx context.Context, userID string) (*Resolved, error) {
	ok, err := s.store.Client.User.Query().Where(entuser.ID(userID)).Exist(ctx)
	if err != nil || !ok {
		return nil, firstErr(err, errs.NotFound("USER_NOT_FOUND", "user %s not found", userID))
	}
	roles, err := s.store.RoleNames(ctx, s.store.DB, userID)
	if err != nil {
		return nil, err
	}
	set, err := Load(ctx, s.store.Client.SessionPolicy, userID, roles)
	if err != nil {
		return nil, err
	}
	return set.Resolve(), nil
}
