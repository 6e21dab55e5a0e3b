package main

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// memoryResult is the result of the memory scenario.
type memoryResult struct {
	Scenario string `json:"scenario"`
	Database string `json:"database"`
	Sessions int    `json:"sessions"`
	// Users is the number of users the sessions belong to.
	Users int `json:"users"`
	// RSS is the resident memory of the whole process once every session was validated once;
	// RSSBefore the same before the sessions were stored.
	RSS       uint64 `json:"rss_bytes"`
	RSSBefore uint64 `json:"rss_before_bytes"`
	// Heap is the live heap then (runtime.MemStats.HeapAlloc).
	Heap uint64 `json:"heap_bytes"`
	// Errors are the validations that failed.
	Errors int `json:"errors"`
	// Measures says what the figure includes.
	Measures string `json:"measures"`
}

// runMemory measures the resident memory of the process with o.memorySessions active sessions,
// each validated once over native gRPC (so that the node's cache holds them, up to its size).
//
// NOTE: the figure is the whole process's VmRSS, after a collection and debug.FreeOSMemory: the
// node, but also the bench's client and whatever the scenarios before it left, which is why it
// runs first in --scenario all. The bench's own data of the scenario (the tokens, the user ids) is
// unreachable by then. rss_before_bytes is the
// process before the sessions were stored, the node idle.
func runMemory(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	before, err := measureMemory()
	if err != nil {
		return 0, err
	}
	n := o.memorySessions
	e.progress("memory: storing %d active sessions", n)
	names := make([]string, (n+o.memoryPerUser-1)/o.memoryPerUser)
	for i := range names {
		names[i] = fmt.Sprintf("%s-m%06d", e.prefix, i)
	}
	st := e.node.Store()
	users, err := createUsers(ctx, st, names, nil)
	if err != nil {
		return 0, err
	}
	tokens, err := createSessions(ctx, st, users, n)
	if err != nil {
		return 0, err
	}
	// NOTE: the names, users and tokens are the bench's, not the node's: none is used after the
	// validations, so that the collection before the measure frees them.
	userCount := len(users)
	e.progress("memory: validating each of them once, %d in flight", o.concurrency)
	failed, err := validateAll(ctx, e, tokens, o.concurrency)
	if err != nil {
		return 0, err
	}
	bad := 0
	if float64(failed) > maxFailedFraction*float64(n) {
		bad = 1
	}
	after, err := measureMemory()
	if err != nil {
		return 0, err
	}
	e.progress("memory: %d sessions: RSS %d MiB (before %d MiB), heap %d MiB", n, after.rss>>20, before.rss>>20, after.heap>>20)
	return bad, emit(memoryResult{
		Scenario:  "memory",
		Database:  e.database,
		Sessions:  n,
		Users:     userCount,
		RSS:       after.rss,
		RSSBefore: before.rss,
		Heap:      after.heap,
		Errors:    failed,
		Measures:  "VmRSS of the whole bench process (node, client), after GC and FreeOSMemory",
	})
}

// validateAll validates each token once over native gRPC, concurrency at a time, and returns the
// number of validations that failed (logging the first).
func validateAll(ctx context.Context, e *env, tokens []string, concurrency int) (int, error) {
	conn, err := dial(e.node)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := gatehousev1.NewSessionServiceClient(conn)
	var next, failed atomic.Int64
	var (
		mu    sync.Mutex
		first error
	)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(tokens)) || ctx.Err() != nil {
					return
				}
				resp, err := client.ValidateSession(ctx, &gatehousev1.ValidateSessionRequest{Token: tokens[i]})
				if err := checkValidated(resp, err); err != nil {
					failed.Add(1)
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if f := failed.Load(); f > 0 {
		e.progress("%d of %d validations failed, the first: %v", f, len(tokens), first)
	}
	return int(failed.Load()), nil
}
