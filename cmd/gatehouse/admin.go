package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gatehouse/gatehouse/server"
)

// adminUsage describes the admin commands.
const adminUsage = `Usage: gatehouse admin COMMAND [--database URL] USERNAME

Recovery commands for an operator who has lost every administrator's access. They act on the
database directly (a SQLite file must not be held by a running node; PostgreSQL may have nodes
running) and write their events like any change.

Commands:
  reset-password USERNAME   set USERNAME's password and end its sessions. The password is read from
                            GATEHOUSE_ADMIN_PASSWORD if set, otherwise from the first line of
                            standard input; never from the command line.
  grant-admin USERNAME      grant gatehouse.admin to USERNAME, enabling the user if it is disabled.

Flags:
  --database URL (GATEHOUSE_DATABASE)
    	sqlite://PATH or postgres://... (default sqlite://gatehouse.db)
`

// runAdmin runs `gatehouse admin ...`.
func runAdmin(args []string, stdin io.Reader, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, adminUsage)
		if len(args) == 0 {
			return errors.New("admin needs a command: reset-password or grant-admin")
		}
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	if sub != "reset-password" && sub != "grant-admin" {
		return fmt.Errorf("unknown admin command %q: use reset-password or grant-admin", sub)
	}
	fs := flag.NewFlagSet("gatehouse admin "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg server.Config
	fs.StringVar(&cfg.Database, "database", "sqlite://gatehouse.db", "")
	if err := fs.Parse(args); err != nil {
		fmt.Fprint(stderr, adminUsage)
		return err
	}
	if v, ok := os.LookupEnv(envName("database")); ok && !flagSet(fs, "database") {
		cfg.Database = v
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, adminUsage)
		return fmt.Errorf("admin %s needs exactly one USERNAME", sub)
	}
	username := fs.Arg(0)
	logger, err := newLogger(stderr, "warn", "text")
	if err != nil {
		return err
	}
	cfg.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if sub == "grant-admin" {
		granted, enabled, err := server.GrantAdmin(ctx, cfg, username)
		if err != nil {
			return err
		}
		switch {
		case enabled:
			fmt.Fprintf(stderr, "enabled %s, which was disabled\n", username)
		case !granted:
			fmt.Fprintf(stderr, "%s already held gatehouse.admin\n", username)
		}
		if granted {
			fmt.Fprintf(stderr, "granted gatehouse.admin to %s\n", username)
		}
		return nil
	}
	password, err := readPassword(stdin, stderr, username)
	if err != nil {
		return err
	}
	if err := server.ResetPassword(ctx, cfg, username, password); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "set a new password for %s and ended its sessions\n", username)
	return nil
}

// readPassword returns GATEHOUSE_ADMIN_PASSWORD if it is set, otherwise the first line of stdin.
//
// NOTE: never an argument: command lines are visible to every user of the machine (ps,
// /proc/PID/cmdline) and kept in shell histories.
func readPassword(stdin io.Reader, stderr io.Writer, username string) (string, error) {
	if v, ok := os.LookupEnv("GATEHOUSE_ADMIN_PASSWORD"); ok {
		return v, nil
	}
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintf(stderr, "New password for %s (the input is shown as you type): ", username)
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("reading the new password from standard input: none given (or set GATEHOUSE_ADMIN_PASSWORD)")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
