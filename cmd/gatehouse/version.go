package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// commandsUsage lists the commands, for `gatehouse help`, `--help` and unknown commands.
const commandsUsage = `Gatehouse: identity, session and policy service.

Commands:
  gatehouse [serve] [flags]          run a node (the default); gatehouse serve --help lists the flags
  gatehouse migrate [flags]          bring the database schema up to date and exit
  gatehouse admin reset-password U   set user U's password (read from standard input), on the database
  gatehouse admin grant-admin U      grant gatehouse.admin to user U, on the database
  gatehouse version                  print the version and build information (also --version)
  gatehouse help                     this list
`

// versionLine describes the build: the module version, the VCS revision and time when the binary
// was built from a checkout, and the Go version.
func versionLine() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "gatehouse (no build information)"
	}
	parts := []string{"gatehouse", info.Main.Version}
	var rev, when, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	if rev != "" {
		parts = append(parts, fmt.Sprintf("revision %.12s%s", rev, dirty))
	}
	if when != "" {
		parts = append(parts, "built from a commit of "+when)
	}
	return strings.Join(append(parts, info.GoVersion), " ")
}
