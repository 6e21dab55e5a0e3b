package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// NOTE: the bench writes its users and sessions straight into the node's store (as
// internal/teststore does for tests), without events: through the API, 10,000 sessions would cost
// 10,000 password hashes or as many trusted-login transactions, minutes of setup for rows that are
// the same either way. The store is the node's own (Node.Store), because a SQLite file is locked
// to one store.

// insertBatch bounds the rows of one INSERT: 15 parameters a session, and SQLite allows 32766.
const insertBatch = 1000

// createUsers stores a user for each name, with the password hash passwordHashes[i] (nil: no
// password), and returns their ids in the order of names.
func createUsers(ctx context.Context, st *store.Store, names []string, passwordHashes []*string) ([]string, error) {
	ids := make([]string, len(names))
	for start := 0; start < len(names); start += insertBatch {
		end := min(start+insertBatch, len(names))
		builders := make([]*ent.UserCreate, 0, end-start)
		for i := start; i < end; i++ {
			ids[i] = convert.NewID()
			var hash *string
			if passwordHashes != nil {
				hash = passwordHashes[i]
			}
			builders = append(builders, st.Client.User.Create().
				SetID(ids[i]).
				SetUsername(names[i]).
				SetUsernameKey(convert.Key(names[i])).
				SetNillablePasswordHash(hash))
		}
		if err := st.Client.User.CreateBulk(builders...).Exec(ctx); err != nil {
			return nil, fmt.Errorf("storing users %d to %d: %w", start, end, err)
		}
	}
	return ids, nil
}

// createSessions stores n active web-browser sessions spread round-robin over users, and returns
// their tokens.
//
// NOTE: their last activity is spread evenly over the last minute (the write-back interval of
// session.Service.Validate), as in a steady state where every session is in use: each is then
// written back once a minute from the first, instead of all at once a minute into the bench. The
// expiries are those the built-in default policy gives.
func createSessions(ctx context.Context, st *store.Store, users []string, n int) ([]string, error) {
	now := convert.Now()
	created := now.Add(-time.Hour)
	tokens := make([]string, n)
	for start := 0; start < n; start += insertBatch {
		end := min(start+insertBatch, n)
		builders := make([]*ent.SessionCreate, 0, end-start)
		for i := start; i < end; i++ {
			token, hash, err := auth.NewToken()
			if err != nil {
				return nil, err
			}
			tokens[i] = token
			lastActive := now.Add(-time.Duration(i) * time.Minute / time.Duration(n)).Truncate(time.Microsecond)
			builders = append(builders, st.Client.Session.Create().
				SetID(convert.NewID()).
				SetUserID(users[i%len(users)]).
				SetTokenHash(hash).
				SetType(entsession.TypeWebBrowser).
				SetUserAgent("gatehouse-bench").
				SetIPAddress("127.0.0.1").
				SetCreateTime(created).
				SetLastActiveTime(lastActive).
				SetIdleExpireTime(lastActive.Add(policy.DefaultIdleTimeout)).
				SetAbsoluteExpireTime(created.Add(policy.DefaultAbsoluteTimeout)))
		}
		if err := st.Client.Session.CreateBulk(builders...).Exec(ctx); err != nil {
			return nil, fmt.Errorf("storing sessions %d to %d: %w", start, end, err)
		}
	}
	return tokens, nil
}
