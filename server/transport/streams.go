package transport

import (
	"strconv"
	"sync"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
)

// MaxAnonymousStreamsPerAddress bounds the streams open at once without a session from one
// client address, and MaxAnonymousStreams those from all addresses together: the health Watch of
// the gRPC port is the only public stream.
//
// NOTE: per address first, so that one client cannot take every place and leave the health
// watches of the others (grpc-go's client-side health checking among them) refused.
const (
	MaxAnonymousStreamsPerAddress = 100
	MaxAnonymousStreams           = 10_000
)

// TooManyStreamsReason is the ErrorInfo reason of a stream refused by StreamLimits.
const TooManyStreamsReason = "TOO_MANY_STREAMS"

// StreamLimits bounds the server streams (WatchSession, WatchEvents, the health Watch) a node has
// open at once, on all its fronts together: per session, per user (an impersonation's count
// against its impersonator), and without a session (MaxAnonymousStreamsPerAddress,
// MaxAnonymousStreams). One more is refused with RESOURCE_EXHAUSTED TOO_MANY_STREAMS, metadata
// limit. Share one between GRPCServerOptions and ConnectHandlerOptions (Options.Streams).
//
// NOTE: an idle stream costs the node some 13 KB (docs/PERFORMANCE.md), and a stream is cheap to
// open and may stay open for hours: without a bound, one connection opened 20,000 health watches
// (200 MB) and a stolen token could open as many WatchSession streams. Bounded per session and per
// user, what one caller can hold scales with the sessions it has, which logins and the per-user
// cap on sessions bound in turn.
type StreamLimits struct {
	perSession, perUser int

	mu        sync.Mutex
	sessions  map[string]int
	users     map[string]int
	addresses map[string]int
	anonymous int
}

// NewStreamLimits returns limits of perSession streams per session and perUser per user; zero or
// less leaves that bound out.
func NewStreamLimits(perSession, perUser int) *StreamLimits {
	return &StreamLimits{perSession: perSession, perUser: perUser, sessions: map[string]int{}, users: map[string]int{}, addresses: map[string]int{}}
}

// take admits one more stream of p (nil: anonymous, from the client address ip) and returns its
// release, or refuses it. A nil l admits every stream.
func (l *StreamLimits) take(p *auth.Principal, ip string) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p == nil {
		if l.addresses[ip] >= MaxAnonymousStreamsPerAddress {
			return nil, tooManyStreams("this address, without a session,", MaxAnonymousStreamsPerAddress)
		}
		if l.anonymous >= MaxAnonymousStreams {
			return nil, tooManyStreams("the node, without a session,", MaxAnonymousStreams)
		}
		l.addresses[ip]++
		l.anonymous++
		return func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.anonymous--
			if l.addresses[ip]--; l.addresses[ip] <= 0 {
				delete(l.addresses, ip)
			}
		}, nil
	}
	user := p.UserID
	if p.ImpersonatorUserID != "" {
		user = p.ImpersonatorUserID
	}
	if l.perSession > 0 && l.sessions[p.SessionID] >= l.perSession {
		return nil, tooManyStreams("this session", l.perSession)
	}
	if l.perUser > 0 && l.users[user] >= l.perUser {
		return nil, tooManyStreams("this user", l.perUser)
	}
	l.sessions[p.SessionID]++
	l.users[user]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.sessions[p.SessionID]--; l.sessions[p.SessionID] <= 0 {
			delete(l.sessions, p.SessionID)
		}
		if l.users[user]--; l.users[user] <= 0 {
			delete(l.users, user)
		}
	}, nil
}

// tooManyStreams is the refusal of a stream past limit for whom.
func tooManyStreams(whom string, limit int) error {
	return errs.ResourceExhausted(TooManyStreamsReason,
		"%s already has %d streams open, the most allowed at once; close one first", whom, limit).
		WithMetadata("limit", strconv.Itoa(limit))
}
