//go:build unix

package testpg

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// unprivilegedUser is the user that runs initdb, pg_ctl and the server when
// the tests run as root (initdb refuses to run as root).
const unprivilegedUser = "nobody"

// runAsUser is the identity that PostgreSQL programs are run as.
type runAsUser struct {
	name     string
	uid, gid uint32
}

// currentRunAs returns nil when the effective user is not root (run the
// programs directly) and the unprivileged user when it is root.
func currentRunAs() (*runAsUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(unprivilegedUser)
	if err != nil {
		return nil, fmt.Errorf("running as root, so initdb must run as user %q, but: %v; "+
			"run the tests as a non-root user, or set %s", unprivilegedUser, err, EnvDatabaseURL)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q: %v", unprivilegedUser, err)
	}
	return &runAsUser{name: u.Username, uid: uint32(uid), gid: uint32(gid)}, nil
}

// apply makes cmd run as r, with no supplementary groups.
func (r *runAsUser) apply(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: []uint32{}},
	}
}

// chown gives path to r.
func (r *runAsUser) chown(path string) error {
	return os.Chown(path, int(r.uid), int(r.gid))
}

// checkReachable returns an error if r cannot reach dir because one of its
// ancestors is not searchable by others (e.g. TMPDIR under /root).
func (r *runAsUser) checkReachable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		searchable := fi.Mode().Perm()&0o001 != 0 ||
			ok && st.Uid == r.uid && fi.Mode().Perm()&0o100 != 0 ||
			ok && st.Gid == r.gid && fi.Mode().Perm()&0o010 != 0
		if !searchable {
			return fmt.Errorf("running as root, so PostgreSQL runs as user %q, which cannot "+
				"enter %s (mode %v); point TMPDIR at a world-searchable directory such as /tmp",
				r.name, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// processAlive reports whether a process with the given pid exists.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reraise delivers sig to this process again with its default action.
func reraise(sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		syscall.Kill(os.Getpid(), s)
		return
	}
	os.Exit(1)
}
