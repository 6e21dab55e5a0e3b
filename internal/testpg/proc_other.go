//go:build !unix

package testpg

import (
	"os"
	"os/exec"
)

// runAsUser is the identity that PostgreSQL programs are run as. It is
// unused on non-Unix systems, where the programs run as the current user.
type runAsUser struct{}

func currentRunAs() (*runAsUser, error)          { return nil, nil }
func (r *runAsUser) apply(*exec.Cmd)             {}
func (r *runAsUser) chown(string) error          { return nil }
func (r *runAsUser) checkReachable(string) error { return nil }

// processAlive conservatively reports that every process is alive, so that
// stale clusters are only reaped by age.
func processAlive(int) bool { return true }

func reraise(os.Signal) { os.Exit(1) }
