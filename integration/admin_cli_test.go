package integration_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server/store"
)

// runWithStdin runs the binary to completion with stdin and returns its exit code and output.
func runWithStdin(t *testing.T, bin string, env []string, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("running gatehouse %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// eventTypes returns the types of the events in the database, in log order.
func eventTypes(t *testing.T, database string) []string {
	t.Helper()
	st, err := store.Open(context.Background(), database)
	if err != nil {
		t.Fatalf("opening %s: %v", database, err)
	}
	defer st.Close()
	rows, err := st.DB.Query("SELECT type FROM events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatal(err)
		}
		out = append(out, typ)
	}
	return out
}

// TestAdminRecoveryCommands: an operator who has lost the administrator's password resets it from
// the command line, and makes another user an administrator, on the database directly; a SQLite
// file a running node holds is refused; the password never comes from the command line; each
// change writes its events.
func TestAdminRecoveryCommands(t *testing.T) {
	t.Parallel()
	bin := gatehouseBinary(t)
	database := "sqlite://" + filepath.Join(t.TempDir(), "g.db")
	env := cliEnv("GATEHOUSE_ADMIN_PASSWORD=first-password")
	node, httpAddr := serve(t, bin, database, env)

	admin, err := restLogin(httpAddr, "admin", "first-password")
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	c := &rawREST{base: "http://" + httpAddr}
	resp, err := testnode.Call[gatehousev1.CreateUserResponse](context.Background(), c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin.Token,
		&gatehousev1.CreateUserRequest{Username: "rescuer", Password: "rescuer-password", Disabled: true})
	if err != nil || !resp.User.Disabled {
		t.Fatalf("creating rescuer, disabled: %v", err)
	}

	// The running node holds the SQLite file.
	code, out := runWithStdin(t, bin, cliEnv(), "second-password\n", "admin", "reset-password", "--database", database, "admin")
	if code == 0 || !strings.Contains(out, "in use by another gatehouse process") {
		t.Errorf("reset-password on a file a node holds: exit %d, output:\n%s", code, out)
	}
	node.stop(t)

	// Bad invocations change nothing.
	for _, args := range [][]string{
		{"admin", "reset-password", "--database", database, "admin", "second-password"},
		{"admin", "reset-password", "--database", database},
		{"admin", "grant-admin", "--database", database, "nobody-of-that-name"},
		{"admin", "frobnicate", "--database", database, "admin"},
	} {
		if code, out := runWithStdin(t, bin, cliEnv(), "second-password\n", args...); code == 0 {
			t.Errorf("gatehouse %v: exit 0, want a failure; output:\n%s", args, out)
		}
	}
	if code, out := runWithStdin(t, bin, cliEnv(), "short\n", "admin", "reset-password", "--database", database, "admin"); code == 0 {
		t.Errorf("a 5-character password was accepted:\n%s", out)
	}
	before := eventTypes(t, database)

	// The password from standard input.
	code, out = runWithStdin(t, bin, cliEnv(), "second-password\n", "admin", "reset-password", "--database", database, "admin")
	if code != 0 {
		t.Fatalf("reset-password: exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "second-password") {
		t.Errorf("the output repeats the password:\n%s", out)
	}
	code, out = runWithStdin(t, bin, cliEnv(), "", "admin", "grant-admin", "--database", database, "rescuer")
	if code != 0 || !strings.Contains(out, "enabled rescuer") || !strings.Contains(out, "granted gatehouse.admin to rescuer") {
		t.Fatalf("grant-admin: exit %d:\n%s", code, out)
	}
	after := eventTypes(t, database)[len(before):]
	for _, want := range []string{"EVENT_TYPE_PASSWORD_CHANGED", "EVENT_TYPE_SESSION_TERMINATED", "EVENT_TYPE_USER_UPDATED", "EVENT_TYPE_ROLE_GRANTED", "EVENT_TYPE_ROLES_CHANGED"} {
		if !slices.Contains(after, want) {
			t.Errorf("the admin commands wrote events %v, missing %s", after, want)
		}
	}

	// GATEHOUSE_ADMIN_PASSWORD wins over standard input; the node comes back with both changes.
	code, out = runWithStdin(t, bin, cliEnv("GATEHOUSE_ADMIN_PASSWORD=third-password"), "ignored-password\n",
		"admin", "reset-password", "--database", database, "admin")
	if code != 0 {
		t.Fatalf("reset-password from the environment: exit %d:\n%s", code, out)
	}
	node, httpAddr = serve(t, bin, database, cliEnv())
	defer node.stop(t)
	for _, pw := range []string{"first-password", "second-password", "ignored-password"} {
		if _, err := restLogin(httpAddr, "admin", pw); status.Code(err) != codes.Unauthenticated {
			t.Errorf("admin login with the replaced password %q: %v, want UNAUTHENTICATED", pw, err)
		}
	}
	if _, err := restLogin(httpAddr, "admin", "third-password"); err != nil {
		t.Errorf("admin login with the new password: %v", err)
	}
	r, err := restLogin(httpAddr, "rescuer", "rescuer-password")
	if err != nil {
		t.Fatalf("rescuer login: %v", err)
	}
	if !slices.Contains(r.Roles, "gatehouse.admin") {
		t.Errorf("rescuer holds %v after grant-admin", r.Roles)
	}
}

// TestAdminGrantBesideRunningNodes: on PostgreSQL the admin commands run beside live nodes, whose
// next login sees the change.
func TestAdminGrantBesideRunningNodes(t *testing.T) {
	t.Parallel()
	bin := gatehouseBinary(t)
	database := testpg.NewDatabase(t)
	node, httpAddr := serve(t, bin, database, cliEnv("GATEHOUSE_ADMIN_PASSWORD=first-password"))
	defer node.stop(t)
	admin, err := restLogin(httpAddr, "admin", "first-password")
	if err != nil {
		t.Fatal(err)
	}
	c := &rawREST{base: "http://" + httpAddr}
	if _, err := testnode.Call[gatehousev1.CreateUserResponse](context.Background(), c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin.Token,
		&gatehousev1.CreateUserRequest{Username: "rescuer", Password: "rescuer-password"}); err != nil {
		t.Fatal(err)
	}
	code, out := runWithStdin(t, bin, cliEnv(), "", "admin", "grant-admin", "--database", database, "rescuer")
	if code != 0 {
		t.Fatalf("grant-admin beside a running node: exit %d:\n%s", code, out)
	}
	r, err := restLogin(httpAddr, "rescuer", "rescuer-password")
	if err != nil || !slices.Contains(r.Roles, "gatehouse.admin") {
		t.Errorf("rescuer after grant-admin: %v, %v", r.GetRoles(), err)
	}
	code, out = runWithStdin(t, bin, cliEnv(), "", "admin", "grant-admin", "--database", database, "rescuer")
	if code != 0 || !strings.Contains(out, "already held") {
		t.Errorf("grant-admin again: exit %d:\n%s", code, out)
	}
}

// TestCLIHelpAndVersion: the help lists every command, `help` is not an error, and the version
// names the build.
func TestCLIHelpAndVersion(t *testing.T) {
	t.Parallel()
	bin := gatehouseBinary(t)
	for _, args := range [][]string{{"help"}, {"--help"}, {"serve", "--help"}} {
		code, out := runWithStdin(t, bin, cliEnv(), "", args...)
		if code != 0 {
			t.Errorf("gatehouse %v: exit %d", args, code)
		}
		for _, want := range []string{"migrate", "admin reset-password", "admin grant-admin", "version"} {
			if !strings.Contains(out, want) {
				t.Errorf("gatehouse %v does not mention %q:\n%s", args, want, out)
			}
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out := runWithStdin(t, bin, cliEnv(), "", args...)
		if code != 0 || !strings.HasPrefix(out, "gatehouse ") || !strings.Contains(out, "go1.") {
			t.Errorf("gatehouse %v: exit %d, %q", args, code, out)
		}
	}
	if code, out := runWithStdin(t, bin, cliEnv(), "", "frobnicate"); code == 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("an unknown command: exit %d:\n%s", code, out)
	}
}
