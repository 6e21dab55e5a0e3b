package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks that a bench leaves no goroutine behind: its node, servers and clients stop.
//
// NOTE: the stream-memory scenario runs this binary as its stream holder (see holdStreams), which
// the test binary then is.
func TestMain(m *testing.M) {
	if isHolder() {
		if err := holdStreams(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "stream holder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// fields are the fields a result must have, by kind.
type fields struct {
	strings, numbers []string
	// lists are fields holding a non-empty list of numbers.
	lists []string
}

var (
	validateFields = fields{
		strings: []string{"scenario", "transport", "database"},
		numbers: []string{"rate", "p50_ms", "p99_ms", "baseline_rate", "ratio", "errors", "baseline_errors", "runs", "duration_s", "sessions", "concurrency"},
		lists:   []string{"run_ratios"},
	}
	loginFields = fields{
		strings: []string{"scenario", "database", "argon2id"},
		numbers: []string{"rate", "p50_ms", "p99_ms", "baseline_rate", "ratio", "errors", "baseline_errors", "runs", "duration_s", "concurrency", "hash_goroutines"},
		lists:   []string{"run_ratios"},
	}
	// resultFields are the fields of each scenario's results.
	resultFields = map[string]fields{
		"validate": validateFields,
		"login":    loginFields,
		"memory": {
			strings: []string{"scenario", "database", "measures"},
			numbers: []string{"sessions", "users", "rss_bytes", "rss_before_bytes", "heap_bytes", "errors"},
		},
		"propagation": {
			strings: []string{"scenario", "kind", "database"},
			numbers: []string{"p50_ms", "p99_ms", "max_ms", "changes", "errors", "before_ack", "rate", "runs", "duration_s", "nodes"},
		},
		"limit-race": {
			strings: []string{"scenario", "database", "on_limit"},
			numbers: []string{"p50_ms", "p99_ms", "active_after", "active_after_min", "logins", "limit", "errors", "runs", "nodes"},
		},
		"stream-memory": {
			strings: []string{"scenario", "database", "measures"},
			numbers: []string{"streams", "bytes_per_stream", "heap_bytes_per_stream", "stack_bytes_per_stream", "goroutines_per_stream", "rss_before_bytes", "rss_after_bytes"},
		},
		"group-fanout": {
			strings: []string{"scenario", "database"},
			numbers: []string{"members", "seconds", "max_seconds", "ack_seconds", "missing", "runs"},
		},
	}
)

// TestSmoke runs the scenarios for about a second each and checks that the program succeeds and
// prints every result with every field. It never looks at the figures.
func TestSmoke(t *testing.T) {
	short := []string{"--duration", "300ms", "--runs", "1", "--sessions", "200", "--streams", "100", "--members", "100", "--memory-sessions", "300"}
	// NOTE: the cases run in parallel within a group, and what they leave behind is checked once
	// the group has ended.
	t.Run("group", func(t *testing.T) { smokeCases(t, short) })
	if dirs := clustersOfThisProcess(t); len(dirs) > 0 {
		t.Errorf("throwaway clusters left behind: %q", dirs)
	}
}

// smokeCases runs each case of TestSmoke as a parallel subtest of t.
func smokeCases(t *testing.T, short []string) {
	for _, tc := range []struct {
		name string
		args []string
		// want are the results expected, in order, as scenario or scenario/transport.
		want []string
		// check, when set, checks each result further.
		check func(t *testing.T, name string, r map[string]any)
	}{
		// NOTE: propagation prints nothing on SQLite (it needs two nodes); the postgres case runs
		// it and the other scenario of two nodes, limit-race.
		{name: "sqlite", args: []string{"--database", "sqlite"}, want: []string{"memory", "validate/grpc", "validate/connect", "validate/rest",
			"login", "limit-race", "stream-memory", "group-fanout"}},
		{name: "postgres", args: []string{"--scenario", "validate,propagation,limit-race"}, want: []string{"validate/grpc", "validate/connect", "validate/rest",
			"propagation/grant", "propagation/terminate", "limit-race"}},
		// The flags that shape the scenarios rather than their size: only the transports asked
		// for, in the program's order; one session per user, so as many users as sessions.
		{name: "flags", args: []string{"--database", "sqlite", "--scenario", "validate,memory", "--transports", "rest,grpc,rest",
			"--memory-sessions-per-user", "1"}, want: []string{"validate/grpc", "validate/rest", "memory"},
			check: func(t *testing.T, name string, r map[string]any) {
				if name == "memory" && (r["users"] != r["sessions"] || r["sessions"] != float64(300)) {
					t.Errorf("memory: %v users of %v sessions, want 300 of 300", r["users"], r["sessions"])
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			// NOTE: a bound on a hung run, not a measure: a smoke run takes seconds, or a minute
			// on a machine busy with other builds under the race detector.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			err := run(ctx, append(tc.args, short...), &stdout, &stderr)
			if err != nil {
				t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
			}
			var got []string
			sc := bufio.NewScanner(&stdout)
			for sc.Scan() {
				var r map[string]any
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("a line of stdout is not a JSON object: %v\n%s", err, sc.Text())
				}
				name, _ := r["scenario"].(string)
				want, ok := resultFields[name]
				if !ok {
					t.Errorf("a result of an unknown scenario: %s", sc.Text())
				}
				switch name {
				case "validate":
					tr, _ := r["transport"].(string)
					name += "/" + tr
				case "propagation":
					kind, _ := r["kind"].(string)
					name += "/" + kind
				}
				for _, f := range want.strings {
					if s, ok := r[f].(string); !ok || s == "" {
						t.Errorf("%s: %s = %#v, want a string", name, f, r[f])
					}
				}
				for _, f := range want.lists {
					l, ok := r[f].([]any)
					if !ok || len(l) == 0 {
						t.Errorf("%s: %s = %#v, want a list of numbers", name, f, r[f])
					}
					for _, x := range l {
						if _, ok := x.(float64); !ok {
							t.Errorf("%s: %s holds %#v, want numbers", name, f, x)
						}
					}
				}
				for _, f := range want.numbers {
					if _, ok := r[f].(float64); !ok {
						t.Errorf("%s: %s = %#v, want a number", name, f, r[f])
					}
				}
				if tc.check != nil {
					tc.check(t, name, r)
				}
				got = append(got, name)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("results %q, want %q\nstderr:\n%s", got, tc.want, stderr.String())
			}
		})
	}
}

// TestParseFlags: bad values are refused with an error naming the flag, before anything starts.
func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--transports", "grpc,soap"}, "--transports"},
		{[]string{"--transports", ""}, "--transports"},
		{[]string{"--scenario", "validate,nap"}, "--scenario"},
		{[]string{"--memory-sessions-per-user", "0"}, "--memory-sessions-per-user"},
		{[]string{"--memory-sessions-per-user", "1001"}, "--memory-sessions-per-user"},
		{[]string{"--duration", "0s"}, "--duration"},
		{[]string{"--runs", "-1"}, "--runs"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		_, err := parseFlags(tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	o, err := parseFlags([]string{"--transports", "rest,connect,rest", "--memory-sessions-per-user", "1000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.transports, []string{"rest", "connect"}) || o.memoryPerUser != 1000 {
		t.Errorf("transports %q, sessions per user %d; want [rest connect], 1000", o.transports, o.memoryPerUser)
	}
}

// clustersOfThisProcess returns the directories of the throwaway clusters this process started
// that are still there.
func clustersOfThisProcess(t *testing.T) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(os.TempDir(), pgDirPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, d := range matches {
		owner, err := os.ReadFile(filepath.Join(d, pgOwnerFile))
		if err == nil && strings.TrimSpace(string(owner)) == strconv.Itoa(os.Getpid()) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}
