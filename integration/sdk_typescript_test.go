package integration_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// tsChromium is the browser the TypeScript SDK's browser tests drive (Debian's chromium package).
const tsChromium = "/usr/bin/chromium"

// tsSetupHint says how to install what the TypeScript SDK tests need.
const tsSetupHint = "run scripts/sdk-typescript.sh deps browser-deps"

// TestSDKTypeScript proves the TypeScript SDK (sdk/typescript) against a live node: it builds the
// package, its example and tests, then runs them with npm: the story and the error tests from Node
// over native gRPC and over Connect (npm run test:node), and the story from a headless Chromium page
// over Connect and gRPC-Web (npm run test:browser). The page is served here, from another origin
// than the node, which allows that origin (CORSAllowedOrigins) and no other.
//
// It fails, never skips, when the npm packages or Chromium are missing.
func TestSDKTypeScript(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "sdk", "typescript")
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("the TypeScript SDK needs Node 20 and npm on the PATH: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "tsc")); err != nil {
		t.Fatalf("the TypeScript SDK's npm packages are not installed (%v): %s", err, tsSetupHint)
	}
	if _, err := os.Stat(tsChromium); err != nil {
		t.Fatalf("no Chromium for the browser tests (%v): %s", err, tsSetupHint)
	}

	// NOTE: the page's server comes first: its origin, with the port the OS chose, is what the node
	// must allow, and holding the listener open leaves no window for another process to take it.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := &http.Server{
		Handler:           http.FileServer(http.Dir(filepath.Join(dir, "out", "browser"))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = page.Serve(lis) }()
	t.Cleanup(func() { _ = page.Close() })
	pageOrigin := "http://" + lis.Addr().String()

	node := testnode.StartWith(t, server.Config{
		Database:           testnode.DatabaseURL(t, testnode.SQLite),
		CORSAllowedOrigins: []string{pageOrigin},
	})
	env := append(os.Environ(),
		"GATEHOUSE_URL="+node.BaseURL(),
		"GATEHOUSE_GRPC_URL=http://"+node.GRPCAddr(),
		"GATEHOUSE_ADMIN_PASSWORD="+testnode.AdminPassword,
		"GATEHOUSE_PAGE_URL="+pageOrigin+"/index.html",
		"CHROMIUM_PATH="+tsChromium,
		"NO_COLOR=1",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	npmRun := func(t *testing.T, script string) {
		t.Helper()
		start := time.Now()
		cmd := exec.CommandContext(ctx, npm, "run", "--silent", script)
		cmd.Dir, cmd.Env = dir, env
		// NOTE: on the deadline, kill the whole process group (npm, node, chromium), not only npm.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("npm run %s: %v (after %s)\n%s", script, err, time.Since(start).Round(time.Millisecond), out)
		}
		t.Logf("npm run %s: %s in %s", script, tsSummary(string(out)), time.Since(start).Round(time.Millisecond))
	}
	npmRun(t, "build:dev")
	t.Run("node", func(t *testing.T) { npmRun(t, "test:node") })
	t.Run("browser", func(t *testing.T) { npmRun(t, "test:browser") })
}

// tsSummary returns the pass and fail counts of node --test's report, or "ok" for other output.
func tsSummary(out string) string {
	var counts []string
	for _, line := range strings.Split(out, "\n") {
		for _, key := range []string{"ℹ pass ", "ℹ fail "} {
			if strings.HasPrefix(line, key) {
				counts = append(counts, strings.TrimPrefix(line, "ℹ "))
			}
		}
	}
	if len(counts) == 0 {
		return "ok"
	}
	return strings.Join(counts, ", ")
}
