package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/server/store"
)

// TestBatcherCoalescesCallers: calls made while a round reads are answered together by the next
// round, in reads of at most MaxInList distinct keys, each with its own key's value; a key the
// read does not find is not ok.
func TestBatcherCoalescesCallers(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var reads [][]string
	b := newBatcher(func(ctx context.Context, keys []string) (map[string]string, error) {
		mu.Lock()
		reads = append(reads, slices.Clone(keys))
		first := len(reads) == 1
		mu.Unlock()
		if first {
			<-release
		}
		out := map[string]string{}
		for _, k := range keys {
			if k != "absent" {
				out[k] = "value of " + k
			}
		}
		return out, nil
	})
	changed := watch(b)
	ctx := t.Context()
	firstDone := make(chan error, 1)
	go func() {
		v, ok, err := b.get(ctx, "first")
		if err == nil && (!ok || v != "value of first") {
			err = fmt.Errorf("first: got %q, %v", v, ok)
		}
		firstDone <- err
	}()
	waitFor(t, changed, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.running && len(b.waiting) == 0 })

	// 1,200 calls of 600 distinct keys (each twice) and one absent key, all made while the first
	// round is reading.
	const keys = store.MaxInList + 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*keys+1)
	for i := range 2 * keys {
		wg.Go(func() {
			k := fmt.Sprintf("k%04d", i%keys)
			v, ok, err := b.get(ctx, k)
			if err == nil && (!ok || v != "value of "+k) {
				err = fmt.Errorf("%s: got %q, %v", k, v, ok)
			}
			errs <- err
		})
	}
	wg.Go(func() {
		_, ok, err := b.get(ctx, "absent")
		if err == nil && ok {
			err = fmt.Errorf("absent: found")
		}
		errs <- err
	})
	waitFor(t, changed, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 2*keys+1 })
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The first round read only its own key; the MaxInList+101 distinct keys waiting need two rounds of at
	// most MaxInList.
	if len(reads) != 3 || !slices.Equal(reads[0], []string{"first"}) {
		t.Fatalf("rounds read %d times: %v", len(reads), lens(reads))
	}
	seen := 0
	for _, r := range reads[1:] {
		if len(r) > store.MaxInList {
			t.Fatalf("a round read %d keys", len(r))
		}
		seen += len(r)
	}
	if seen != keys+1 {
		t.Fatalf("the rounds after the first read %d keys, want %d", seen, keys+1)
	}
}

// TestBatcherErrorAndCancel: a caller that leaves during its round gets its context's error while
// the round goes on; one that leaves before its round begins gets it too, and its key is not read;
// a caller that comes during a round joins the next one; a failed read fails every call of its
// round.
func TestBatcherErrorAndCancel(t *testing.T) {
	release := make(chan struct{})
	rounds := make(chan []string, 2)
	b := newBatcher(func(ctx context.Context, keys []string) (map[string]int, error) {
		rounds <- slices.Clone(keys)
		<-release
		return nil, fmt.Errorf("the database is down")
	})
	changed := watch(b)
	ctx, cancel := context.WithCancel(t.Context())
	left := make(chan error, 1)
	go func() { _, _, err := b.get(ctx, "a"); left <- err }()
	if keys := <-rounds; !slices.Equal(keys, []string{"a"}) {
		t.Fatalf("the first round read %v, want [a]", keys)
	}
	cancel()
	if err := <-left; err != context.Canceled {
		t.Fatalf("a caller that left during its round got %v", err)
	}
	goneCtx, goneCancel := context.WithCancel(t.Context())
	gone := make(chan error, 1)
	go func() { _, _, err := b.get(goneCtx, "gone"); gone <- err }()
	waitFor(t, changed, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 1 })
	goneCancel()
	if err := <-gone; err != context.Canceled {
		t.Fatalf("a caller that left before its round got %v", err)
	}
	stayed := make(chan error, 1)
	go func() { _, _, err := b.get(t.Context(), "b"); stayed <- err }()
	waitFor(t, changed, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 2 })
	close(release)
	if keys := <-rounds; !slices.Equal(keys, []string{"b"}) {
		t.Fatalf("the round after it read %v, want [b]", keys)
	}
	if err := <-stayed; err == nil || err.Error() != "the database is down" {
		t.Fatalf("a caller of a failed round got %v", err)
	}
	waitFor(t, changed, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return !b.running })
}

func lens(reads [][]string) []int {
	out := make([]int, len(reads))
	for i, r := range reads {
		out[i] = len(r)
	}
	return out
}

// watch sets b's test hook and returns the channel it signals on each change.
func watch[V any](b *batcher[V]) <-chan struct{} {
	ch := make(chan struct{}, 1)
	b.changed = func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return ch
}

// waitFor waits for the batcher's changes until cond holds, failing the test after a minute.
//
// NOTE: a change signalled while cond is being checked stays in the channel (capacity one), so
// none is missed.
func waitFor(t *testing.T, changed <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatal("condition not met within a minute")
		}
	}
}
