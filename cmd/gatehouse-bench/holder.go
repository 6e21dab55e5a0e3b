package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// holderEnv, set to 1, makes the program a stream holder (see holdStreams) instead of a bench.
const holderEnv = "GATEHOUSE_BENCH_STREAM_HOLDER"

// isHolder reports whether this process was started as a stream holder.
func isHolder() bool { return os.Getenv(holderEnv) == "1" }

// holdStreams is the stream holder: it reads a node's gRPC address and then session tokens from in,
// one a line up to an empty line, opens a WatchSession for each, writes "ready N" to out once every
// one has its snapshot, and holds them, without reading them, until in ends.
//
// NOTE: the stream-memory scenario runs its clients in a holder, a child process, so that the
// bench's own resident memory is the node's alone.
func holdStreams(in io.Reader, out io.Writer) error {
	r := bufio.NewReader(in)
	line := func() (string, error) {
		s, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading the holder's input: %w", err)
		}
		return strings.TrimSuffix(s, "\n"), nil
	}
	addr, err := line()
	if err != nil {
		return err
	}
	var tokens []string
	for {
		t, err := line()
		if err != nil {
			return err
		}
		if t == "" {
			break
		}
		tokens = append(tokens, t)
	}
	cs, err := dialAddrFor(addr, len(tokens))
	if err != nil {
		return err
	}
	defer cs.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := openWatches(ctx, cs, tokens); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "ready %d\n", len(tokens)); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, r)
	return nil
}

// holder is a running stream holder.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startHolder starts this program as a stream holder of a WatchSession for each token on the node
// at addr, and waits until they are all open. Its errors go to stderr.
func startHolder(ctx context.Context, addr string, tokens []string, stderr io.Writer) (_ *holder, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this program to run the stream holder: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), holderEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the stream holder: %w", err)
	}
	h := &holder{cmd: cmd, stdin: stdin}
	defer func() {
		if err != nil {
			_ = h.stop()
		}
	}()
	w := bufio.NewWriter(stdin)
	fmt.Fprintln(w, addr)
	for _, t := range tokens {
		fmt.Fprintln(w, t)
	}
	fmt.Fprintln(w)
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("writing to the stream holder: %w", err)
	}
	ready, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, errors.New("the stream holder ended before its streams were open (see its errors above)")
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(ready), "ready ")); n != len(tokens) {
		return nil, fmt.Errorf("the stream holder said %q, want ready %d", ready, len(tokens))
	}
	return h, nil
}

// stop ends the holder's input, which ends its streams, and waits for it.
func (h *holder) stop() error {
	_ = h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		return fmt.Errorf("the stream holder: %w", err)
	}
	return nil
}
