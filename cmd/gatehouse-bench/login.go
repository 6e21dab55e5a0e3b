package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
)

const (
	// loginConcurrency is the number of logins in flight.
	loginConcurrency = 8
	// loginUsers is the number of users the logins take round-robin.
	//
	// NOTE: twice the logins in flight, so that two logins rarely wait for the same user's row
	// lock: the scenario measures the hash and the rest of a login, not contention on one user.
	// Over a run of a minute at 50 logins/s each user gains some 200 sessions, under the per-user
	// cap (1000).
	loginUsers = 2 * loginConcurrency
	// hashKeyLen and hashSaltLen are the lengths of auth's argon2id keys and salts.
	hashKeyLen  = 32
	hashSaltLen = 16
)

// loginResult is the result of the login scenario.
type loginResult struct {
	Scenario string `json:"scenario"`
	// versus is against bare argon2id derivations at the same parameters (BaselineRate).
	versus
	Database    string `json:"database"`
	Concurrency int    `json:"concurrency"`
	// HashGoroutines are the goroutines of the bare argon2id baseline.
	HashGoroutines int `json:"hash_goroutines"`
	// Argon2id are the parameters, as in an encoded hash ("m=19456,t=2,p=1").
	Argon2id string `json:"argon2id"`
}

// runLogin measures password logins (CreateSession with a password, WEB_BROWSER) over native gRPC,
// loginConcurrency in flight, against a node with the production argon2id parameters, and against
// bare argon2id derivations at the same parameters.
//
// NOTE: the baseline runs one goroutine per CPU, which is also the node's number of hashing slots
// (server.Config.MaxConcurrentHashes): it is the most derivations per second the machine can
// make, the floor of a login's cost.
func runLogin(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	p := auth.Params{MemoryKiB: auth.DefaultMemoryKiB, Time: auth.DefaultTime, Threads: auth.DefaultThreads}
	password := rand.Text()
	e.progress("login: storing %d users with argon2id (m=%d,t=%d,p=%d) passwords", loginUsers, p.MemoryKiB, p.Time, p.Threads)
	names, err := seedLogin(ctx, e, password)
	if err != nil {
		return 0, err
	}

	conn, err := grpc.NewClient(e.node.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("connecting to the node's gRPC port: %w", err)
	}
	defer conn.Close()
	client := gatehousev1.NewSessionServiceClient(conn)
	var next atomic.Uint64
	figure := load{workers: loginConcurrency, work: func(ctx context.Context, _ int) error {
		name := names[(next.Add(1)-1)%uint64(len(names))]
		resp, err := client.CreateSession(ctx, &gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: name, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
		if err != nil {
			return err
		}
		if resp.GetToken() == "" {
			return errors.New("CreateSession answered without a token")
		}
		return nil
	}}

	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return 0, fmt.Errorf("generating a salt: %w", err)
	}
	hashGoroutines := runtime.NumCPU()
	baseline := load{workers: hashGoroutines, work: func(context.Context, int) error {
		_ = argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, hashKeyLen)
		return nil
	}}

	s, err := alternate(ctx, e, o, "login", baseline, figure)
	if err != nil {
		return 0, err
	}
	sum := s.summarize()
	return sum.badRuns, emit(loginResult{
		Scenario:       "login",
		versus:         sum.versus(o),
		Database:       e.database,
		Concurrency:    loginConcurrency,
		HashGoroutines: hashGoroutines,
		Argon2id:       fmt.Sprintf("m=%d,t=%d,p=%d", p.MemoryKiB, p.Time, p.Threads),
	})
}

// seedLogin stores loginUsers users whose password is password, hashed as the node hashes it, and
// returns their usernames.
//
// NOTE: hashed with auth's own hasher at the node's (default) parameters, so that a login finds
// nothing to re-hash; and hashed once, the one hash stored for every user: they share the password,
// and a login costs the node one verification whatever the salt. (Hashing each user's apart cost
// the set-up sixteen production hashes, most of a smoke run under the race detector.)
func seedLogin(ctx context.Context, e *env, password string) ([]string, error) {
	hasher, err := auth.NewHasherWith(auth.HasherOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating a password hasher: %w", err)
	}
	h, err := hasher.Hash(ctx, password)
	if err != nil {
		return nil, fmt.Errorf("hashing a password: %w", err)
	}
	names := make([]string, loginUsers)
	hashes := make([]*string, loginUsers)
	for i := range names {
		names[i] = fmt.Sprintf("%s-l%02d", e.prefix, i)
		hashes[i] = &h
	}
	if _, err := createUsers(ctx, e.node.Store(), names, hashes); err != nil {
		return nil, err
	}
	return names, nil
}
