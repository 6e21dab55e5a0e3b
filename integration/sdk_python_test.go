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

// TestSDKPython proves the Python SDK against a live node: it starts a node and runs
// `scripts/sdk-python.sh test` against its gRPC port (mypy over the SDK, its example and its tests;
// then pytest, which runs the tests and the example program). The SDK's venv comes from
// `scripts/sdk-python.sh deps`; without it the test fails rather than skips, so that a missing
// step cannot pass as green.
func TestSDKPython(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	if _, err := os.Stat(filepath.Join(root, "sdk", "python", ".venv", "bin", "python")); err != nil {
		t.Fatalf("the Python SDK's environment is missing (%v); run scripts/sdk-python.sh deps", err)
	}
	n := testnode.Start(t, testnode.SQLite)

	// The whole run takes a few seconds; the deadline only bounds a hung call or stream.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "sdk-python.sh"), "test")
	cmd.Dir = root
	cmd.Env = cliEnv(
		"GATEHOUSE_GRPC_TARGET="+n.GRPCAddr(),
		"GATEHOUSE_ADMIN_USERNAME=admin",
		"GATEHOUSE_ADMIN_PASSWORD="+testnode.AdminPassword,
	)
	// On the deadline, kill the script with its mypy, pytest and example processes, not bash alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/sdk-python.sh test failed: %v\n%s", err, out)
	}
	t.Logf("scripts/sdk-python.sh test:\n%s", out)
}
