package integration_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testnode"
)

// fuzzExamples and fuzzSeed make the test's schemathesis run short and repeatable: every phase,
// fuzzExamples cases per operation. `scripts/fuzz-rest.sh run` without --max-examples runs 100,
// and without --seed a new seed each time.
const (
	fuzzExamples = "30"
	fuzzSeed     = "14"
)

// TestRESTFuzz runs `scripts/fuzz-rest.sh run` against a live node of each backend: it validates
// the node's /openapi.json with openapi-spec-validator, then runs a short schemathesis run,
// authenticated as the bootstrap administrator with a session the run cannot end, that fails on a
// server error, a response that violates the document (schema, status code, content type,
// headers) and the other checks the script enables; and it fails if that session did not survive.
// The tools come from `scripts/fuzz-rest.sh deps`; without them the test fails rather than skips,
// so that a missing step cannot pass as green.
func TestRESTFuzz(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	for _, tool := range []string{"schemathesis", "openapi-spec-validator"} {
		if _, err := os.Stat(filepath.Join(root, "build", "fuzz-venv", "bin", tool)); err != nil {
			t.Fatalf("the REST fuzzing tools are missing (%v); run scripts/fuzz-rest.sh deps", err)
		}
	}
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			n := testnode.Start(t, b)
			ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "fuzz-rest.sh"), "run",
				"--url", n.BaseURL(), "--max-examples", fuzzExamples, "--seed", fuzzSeed, "--workdir", t.TempDir())
			cmd.Dir = root
			cmd.Env = cliEnv("GATEHOUSE_ADMIN_PASSWORD=" + testnode.AdminPassword)
			// On the deadline, kill the script with schemathesis, not bash alone.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			cmd.WaitDelay = 10 * time.Second
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("scripts/fuzz-rest.sh run failed after %s: %v\n%s", time.Since(start).Round(time.Second), err, out)
			}
			t.Logf("scripts/fuzz-rest.sh run (%s):\n%s", time.Since(start).Round(time.Second), out)
		})
	}
}
