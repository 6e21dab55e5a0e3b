package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// BootstrapUsername is the administrator created on first start.
const BootstrapUsername = "admin"

// Bootstrap creates the administrator `admin` holding gatehouse.admin when the database has no
// users. An empty password is replaced by a generated one, returned so that it can be shown once.
// It reports whether it created the administrator.
func (s *Service) Bootstrap(ctx context.Context, password string) (created bool, generated string, err error) {
	if n, err := s.store.Client.User.Query().Count(ctx); err != nil || n > 0 {
		return false, "", err
	}
	if password == "" {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return false, "", err
		}
		password = base64.RawURLEncoding.EncodeToString(b)
		generated = password
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return false, "", err
	}
	_, err = s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return err
		}
		// NOTE: checked again under the lock, so nodes starting together create one administrator.
		if n, err := tx.User.Query().Count(ctx); err != nil || n > 0 {
			return err
		}
		u, err := tx.User.Create().SetID(convert.NewID()).SetUsername(BootstrapUsername).
			SetUsernameKey(BootstrapUsername).SetDisplayName("Bootstrap administrator").
			SetPasswordHash(hash).Save(ctx)
		if err != nil {
			return err
		}
		if err := tx.RoleGrant.Create().SetRole(auth.RoleAdmin).SetUserID(u.ID).Exec(ctx); err != nil {
			return err
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_USER_CREATED,
			UserId:  u.ID,
			Payload: &gatehousev1.Event_UserCreated{UserCreated: &gatehousev1.UserPayload{User: convert.User(u)}},
		})
		tx.Emit(&gatehousev1.Event{
			Type:   gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED,
			UserId: u.ID,
			Payload: &gatehousev1.Event_RoleGranted{RoleGranted: &gatehousev1.RoleGrantPayload{
				Role: auth.RoleAdmin, Principal: &gatehousev1.RoleGrantPayload_UserId{UserId: u.ID},
			}},
		})
		created = true
		_, err = s.recompute(ctx, tx, []string{u.ID})
		return err
	})
	if !created {
		generated = ""
	}
	return created, generated, err
}
