package server

import (
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// domain is the domain layer of a node over one store: the services with their hooks wired.
type domain struct {
	hasher     *auth.Hasher
	sessions   *session.Service
	identities *identity.Service
	policies   *policy.Service
}

// newDomain builds the domain over st as cfg (with defaults filled in) says: the one place where
// the services and the hooks between them are wired, for a node and for the admin commands alike.
func newDomain(st *store.Store, cfg Config) (domain, error) {
	hasher, err := cfg.hasher()
	if err != nil {
		return domain{}, err
	}
	sessions := session.New(st, hasher, cfg.Logger, session.Options{
		FailedLoginsPerUser:    session.RateLimit{Burst: max(cfg.LoginFailuresPerUser, 0), Per: cfg.LoginFailureWindow},
		FailedLoginsPerAddress: session.RateLimit{Burst: max(cfg.LoginFailuresPerAddress, 0), Per: cfg.LoginFailureWindow},
		QueueTimeout:           cfg.HashQueueTimeout,
		ViewSize:               cfg.SessionCacheSize,
		HeartbeatInterval:      cfg.HeartbeatInterval,
	})
	return domain{
		hasher:     hasher,
		sessions:   sessions,
		identities: identity.New(st, hasher, cfg.Logger, sessions.RolesChanged, identity.WithPasswordVerifier(sessions)),
		policies:   policy.New(st, sessions.PolicyChanged),
	}, nil
}
