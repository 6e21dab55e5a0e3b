package integration_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testnode"
)

// The README's curl sections are the first thing a newcomer runs. These tests run them as written,
// with bash, curl and jq, against real gatehouse processes, so that the README stays true.

// readmeAdminPassword is the administrator password the README's walkthrough starts the node with.
const readmeAdminPassword = "change-me-now"

// readmeBlocks returns the README's sh code blocks, in order.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "README.md"))
	if err != nil {
		t.Fatalf("reading the README: %v", err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(raw), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// readmeBlock returns the README's one sh block that starts with prefix.
func readmeBlock(t *testing.T, prefix string) string {
	t.Helper()
	var found []string
	for _, b := range readmeBlocks(t) {
		if strings.HasPrefix(b, prefix) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the README has %d sh blocks starting with %q, want 1", len(found), prefix)
	}
	return found[0]
}

// runShell runs script with bash under strict flags (a failing curl or jq fails it) and returns
// its standard output.
func runShell(t *testing.T, script string) string {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's walkthrough needs %s on the PATH (apt-get install curl jq): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
	cmd.Env = cliEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the script failed: %v\nstdout:\n%s\nstderr:\n%s\nscript:\n%s", err, out, stderr.String(), script)
	}
	return string(out)
}

// readmeNode starts `gatehouse serve` on database as the README does, with
// GATEHOUSE_ADMIN_PASSWORD, and returns its HTTP address.
func readmeNode(t *testing.T, database string) string {
	t.Helper()
	_, httpAddr := serve(t, gatehouseBinary(t), database, cliEnv("GATEHOUSE_ADMIN_PASSWORD="+readmeAdminPassword))
	return httpAddr
}

// onNode points a README script at a node: the README's calls go to localhost:8080.
func onNode(script, httpAddr string) string {
	return strings.ReplaceAll(script, "localhost:8080", httpAddr)
}

// matchLines checks that out has exactly the lines of want, each matched by its pattern, in order.
// A pattern is a regular expression in which <id> stands for a server-assigned id.
func matchLines(t *testing.T, what, out string, want []string) {
	t.Helper()
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("%s printed %d lines, want %d:\n%s", what, len(got), len(want), out)
	}
	for i, w := range want {
		re := regexp.MustCompile("^" + strings.ReplaceAll(w, "<id>", `[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`) + "$")
		if !re.MatchString(got[i]) {
			t.Errorf("%s, line %d:\n got %s\nwant %s", what, i+1, got[i], w)
		}
	}
}

// TestREADMEWalkthrough runs the "Walkthrough with curl" section on SQLite and on PostgreSQL: the
// administrator logs in, creates a user, a group and two roles, grants one to the group, adds the
// user, and reads her effective roles with their provenance; then alice logs in with both roles.
func TestREADMEWalkthrough(t *testing.T) {
	script := readmeBlock(t, "# Log in as admin") + "echo\n" + readmeBlock(t, "curl -s localhost:8080/v1/sessions \\\n")
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			out := runShell(t, onNode(script, readmeNode(t, testnode.DatabaseURL(t, b))))
			want := []string{
				`\{"name":"viewer","description":"","contains":\[\],"builtIn":false,"createTime":"[^"]+"\}`,
				`\{"name":"ops_lead","description":"","contains":\["viewer"\],"builtIn":false,"createTime":"[^"]+"\}`,
				// The grant to the group (no member yet), then alice joining it.
				`\{"consistencyToken":"[A-Za-z0-9_-]+","usersAffected":0,"sessionsRefreshed":0\}`,
				`\{"consistencyToken":"[A-Za-z0-9_-]+","usersAffected":1,"sessionsRefreshed":0\}`,
				`\{`, `  "roles": \[`, `    \{`, `      "role": "ops_lead",`, `      "sources": \[`, `        \{`,
				`          "groupId": "<id>"`,
				`        \}`, `      \]`, `    \},`, `    \{`, `      "role": "viewer",`, `      "sources": \[`, `        \{`,
				`          "containedInRole": "ops_lead"`,
				`        \}`, `      \]`, `    \}`, `  \]`, `\}`,
				``, `\[`, `  "ops_lead",`, `  "viewer"`, `\]`,
			}
			matchLines(t, "the walkthrough", out, want)
		})
	}
}

// readmeSessionsWant is what the "Sessions and policies with curl" section prints, in order, as
// the README's paragraph under it says. Bob's three sessions are listed newest first.
var readmeSessionsWant = []string{
	`\{"id":"<id>","scope":\{"userId":"<id>"\},"maxSessions":1,.*\}`,
	`\{"evicted":\["<id>"\]\}`,
	`\{"code":16,"message":"the session has ended","reason":"SESSION_TERMINATED","why":\{"termination_reason":"TERMINATION_REASON_CONCURRENT_LIMIT"\}\}`,
	`\{"active":true,"type":"SESSION_TYPE_NON_INTERACTIVE"\}`,
	`\{"role":"contractor"\}`,
	`"LIMIT_ACTION_DENY_NEW"`,
	`\{"code":8,"reason":"CONCURRENT_SESSION_LIMIT"\}`,
	`\{"type":"SESSION_TYPE_MOBILE_APP","device":"phone","active":true,"terminationReason":"TERMINATION_REASON_UNSPECIFIED"\}`,
	`\{"type":"SESSION_TYPE_WEB_BROWSER","device":"laptop","active":false,"terminationReason":"TERMINATION_REASON_CONCURRENT_LIMIT"\}`,
	`\{"type":"SESSION_TYPE_NON_INTERACTIVE","device":"ci-job","active":true,"terminationReason":"TERMINATION_REASON_UNSPECIFIED"\}`,
	`\["reports"\]`,
	`\{"active":false,"terminationReason":"TERMINATION_REASON_REVOKED_BY_ADMIN","note":"lost phone"\}`,
	`\["<id>"\]`,
	`\{"reason":"SESSION_TERMINATED","why":\{"termination_reason":"TERMINATION_REASON_ROLE_CHANGE"\}\}`,
	`\{"user":"bob","roles":\["payroll","reports"\]\}`,
}

// TestREADMESessions runs the "Sessions and policies with curl" section on SQLite, and on two
// PostgreSQL nodes: there the administrator's calls go to one node while bob's logins and every
// validation go to the other, so each step shows the effect of a change made on the other node.
func TestREADMESessions(t *testing.T) {
	script := readmeBlock(t, "H=localhost:8080\n")
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		out := runShell(t, onNode(script, readmeNode(t, testnode.DatabaseURL(t, testnode.SQLite))))
		matchLines(t, "the sessions section", out, readmeSessionsWant)
	})
	t.Run("postgres two nodes", func(t *testing.T) {
		t.Parallel()
		database := testnode.DatabaseURL(t, testnode.Postgres)
		a := readmeNode(t, database)
		b := readmeNode(t, database)
		twoNodes := strings.Replace(script, "H=localhost:8080\n", "H="+a+"; H2="+b+"\n", 1)
		for _, call := range []string{"login() { curl -s $H/", "curl -s $H/v1/sessions:validate"} {
			if !strings.Contains(twoNodes, call) {
				t.Fatalf("the sessions section no longer has %q; update this test", call)
			}
			twoNodes = strings.ReplaceAll(twoNodes, call, strings.Replace(call, "$H/", "$H2/", 1))
		}
		out := runShell(t, twoNodes)
		matchLines(t, "the sessions section across two nodes", out, readmeSessionsWant)
	})
}

// TestREADMEFirstRun follows a newcomer in one fresh directory: the README's first command (a node
// on ./gatehouse.db with a generated password), stopped, then the walkthrough's own start command
// and the walkthrough, which must log in with the password it names. A node started on the first
// database with that password warns that it is not used.
func TestREADMEFirstRun(t *testing.T) {
	t.Parallel()
	bin := gatehouseBinary(t)
	dir := t.TempDir()
	first := readmeBlock(t, "go run ./cmd/gatehouse\n")
	if strings.TrimSpace(first) != "go run ./cmd/gatehouse" {
		t.Fatalf("the README's first command is %q; update this test", first)
	}
	start := strings.TrimSpace(readmeBlock(t, "GATEHOUSE_ADMIN_PASSWORD='change-me-now' go run ./cmd/gatehouse --database sqlite://"))
	env, args, ok := parseStart(start)
	if !ok {
		t.Fatalf("the walkthrough's start command %q is not `GATEHOUSE_ADMIN_PASSWORD=... go run ./cmd/gatehouse [flags]`", start)
	}

	// launch starts the binary in dir (the newcomer's clone) and waits until it is healthy.
	launch := func(env []string, args ...string) (*proc, string) {
		t.Helper()
		p, _, httpAddr := startHealthy(t, func(grpcAddr, httpAddr string) *proc {
			return startProcIn(t, dir, bin, env, append(args, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)...)
		})
		return p, httpAddr
	}

	p, _ := launch(cliEnv())
	p.stop(t)
	if out := p.out.String(); !strings.Contains(out, "generated password") {
		t.Fatalf("the first command printed no generated password:\n%s", out)
	}

	// The README's password on the first command's database is not used, and the node says so.
	p, _ = launch(cliEnv(env...))
	p.stop(t)
	if out := p.out.String(); !strings.Contains(out, "GATEHOUSE_ADMIN_PASSWORD is set but not used") {
		t.Errorf("no warning for an unused GATEHOUSE_ADMIN_PASSWORD:\n%s", out)
	}

	p, httpAddr := launch(cliEnv(env...), args...)
	defer p.stop(t)
	script := readmeBlock(t, "# Log in as admin")
	out := runShell(t, onNode(script, httpAddr))
	if !strings.Contains(out, `"role": "ops_lead"`) {
		t.Errorf("the walkthrough after the first command printed:\n%s", out)
	}
}

// parseStart splits `VAR=value ... go run ./cmd/gatehouse FLAGS` into the environment and the
// flags (single quotes around values removed).
func parseStart(cmd string) (env, args []string, ok bool) {
	fields := strings.Fields(cmd)
	i := 0
	for ; i < len(fields) && strings.Contains(fields[i], "=") && !strings.HasPrefix(fields[i], "-"); i++ {
		env = append(env, strings.ReplaceAll(fields[i], "'", ""))
	}
	if i+3 > len(fields) || fields[i] != "go" || fields[i+1] != "run" || fields[i+2] != "./cmd/gatehouse" {
		return nil, nil, false
	}
	for _, f := range fields[i+3:] {
		args = append(args, strings.ReplaceAll(f, "'", ""))
	}
	return env, args, len(env) > 0
}

// TestREADMELive runs the "Live" section as its two terminals would, on two nodes of one
// PostgreSQL database: terminal 2 creates carol; terminal 1 logs her in on node B and watches;
// once the snapshot is out, terminal 2 adds her to the group and ends her sessions through node
// A; terminal 1 prints the role change and the termination, and its stream ends.
func TestREADMELive(t *testing.T) {
	t.Parallel()
	database := testnode.DatabaseURL(t, testnode.Postgres)
	a, b := readmeNode(t, database), readmeNode(t, database)
	setup := strings.ReplaceAll(readmeBlock(t, "# Terminal 2, node A: carol"), "localhost:8080", a)
	watch := strings.ReplaceAll(readmeBlock(t, "# Terminal 1, node B:"), "localhost:8081", b)
	change := readmeBlock(t, "# Terminal 2, node A, while terminal 1 watches:")
	for _, script := range []string{setup, watch} {
		if strings.Contains(script, "localhost:") {
			t.Fatalf("a README block still names a fixed address; update this test:\n%s", script)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bash := func(script string) (*exec.Cmd, io.WriteCloser, *bufio.Scanner) {
		cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
		cmd.Env = cliEnv()
		cmd.Stderr = os.Stderr
		// NOTE: the whole process group goes when the deadline passes, curl and jq included, so
		// that a read of their output cannot outlive the test.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, in, bufio.NewScanner(out)
	}
	line := func(s *bufio.Scanner, what string) string {
		t.Helper()
		if !s.Scan() {
			t.Fatalf("%s: the terminal printed nothing more (%v)", what, s.Err())
		}
		return s.Text()
	}
	// Terminal 2 runs the setup, says so, waits for a line on its standard input (the test's
	// "the watcher is up"), then makes the change.
	term2, go2, out2 := bash(setup + "\necho ready\nread -r _\n" + change)
	if got := line(out2, "terminal 2 setup"); got != "ready" {
		t.Fatalf("terminal 2 printed %q before it was ready", got)
	}
	term1, _, out1 := bash(watch)
	snap := line(out1, "the snapshot")
	matchLines(t, "terminal 1", snap, []string{`\{"snapshot":\{"session":"<id>","roles":\[\]\}\}`})
	if _, err := io.WriteString(go2, "go\n"); err != nil {
		t.Fatal(err)
	}
	matchLines(t, "terminal 2", line(out2, "the membership")+"\n"+line(out2, "the termination"),
		[]string{`\{"consistencyToken":"[A-Za-z0-9_-]+","usersAffected":1,"sessionsRefreshed":1\}`, `1`})
	matchLines(t, "terminal 1", line(out1, "the role change")+"\n"+line(out1, "the termination"), []string{
		`\{"rolesChanged":\{"roles":\["reporter"\],"added":\["reporter"\],"removed":\[\]\}\}`,
		`\{"terminated":\{"reason":"TERMINATION_REASON_REVOKED_BY_ADMIN","note":"shift over"\}\}`,
	})
	if err := term1.Wait(); err != nil {
		t.Fatalf("terminal 1's stream did not end cleanly after the termination: %v", err)
	}
	if err := term2.Wait(); err != nil {
		t.Fatalf("terminal 2: %v", err)
	}
}
