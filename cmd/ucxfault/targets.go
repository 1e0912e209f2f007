package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ucxfault/ucxfault/control"
)

func fileBackend() bool {
	b, _ := control.ParseBackend(os.Getenv(control.EnvIPCBackend))
	return b == control.BackendFile
}

// parseRanks reads "0,2-3" into a set.
func parseRanks(text string) (map[int]bool, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(text, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, usagef("--rank %q: %q is not a rank (accepted: 0,2-3)", text, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, usagef("--rank %q: %q is not a range (accepted: 0,2-3)", text, part)
			}
		}
		for r := a; r <= b; r++ {
			set[r] = true
		}
	}
	return set, nil
}

// targets finds the injected processes the command is for. With --pid it
// looks at those pids' sockets only; with --rank it asks every socket's
// process for its rank and removes nothing (a process that does not answer
// cannot say its rank). Otherwise it sweeps the directory: sockets of
// processes proven gone are removed and reported (control.RemoveIfStale).
func targets(stderr io.Writer) ([]control.Target, error) {
	var (
		list    []control.Target
		removed []control.Removal
		err     error
	)
	switch {
	case len(global.pids) > 0:
		list, removed, err = control.Lookup(global.socketDir, global.pids)
	case global.ranks != "":
		list, err = control.List(global.socketDir)
	default:
		var d control.Discovery
		d, err = control.Discover(global.socketDir)
		list, removed = d.Targets, d.Removed
	}
	for _, t := range removed {
		fmt.Fprintf(stderr, "removed stale socket of dead process %d (%s): %s\n", t.PID, t.Path, t.Why)
	}
	if err != nil {
		return nil, err
	}
	if global.ranks != "" {
		ranks, err := parseRanks(global.ranks)
		if err != nil {
			return nil, err
		}
		var kept []control.Target
		for _, r := range control.Broadcast(list, &control.Request{Cmd: control.CmdStatus}, global.timeout) {
			switch {
			case r.Err == nil && r.Resp.Status != nil:
				if ranks[r.Resp.Status.Rank] {
					kept = append(kept, r.Target)
				}
			case errors.Is(r.Err, control.ErrNotAnswering):
				// It may hold one of the ranks asked for: say so.
				fmt.Fprintf(stderr, "pid %d: rank unknown: %v\n", r.Target.PID, r.Err)
			}
		}
		list = kept
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w in %s (start a program with `ucxfault inject -- PROGRAM`, or set --socket-dir)", control.ErrNoProcess, global.socketDir)
	}
	return list, nil
}

// sendAll sends req to every target and returns the answers. Processes
// that could not be reached are reported on stderr and make the command fail
// after all answers are in.
func sendAll(stderr io.Writer, req *control.Request) ([]control.Result, error) {
	list, err := targets(stderr)
	if err != nil {
		return nil, err
	}
	return collect(stderr, control.Broadcast(list, req, global.timeout), req.Cmd)
}

// collect reports on stderr the processes that could not be reached or
// refused cmd, and fails after all answers are in if any did.
func collect(stderr io.Writer, results []control.Result, cmd string) ([]control.Result, error) {
	var failed int
	var ok []control.Result
	for _, r := range results {
		switch {
		case errors.Is(r.Err, control.ErrStale), errors.Is(r.Err, control.ErrNotAnswering):
			fmt.Fprintf(stderr, "pid %d: %v\n", r.Target.PID, r.Err)
			failed++
		case r.Err != nil:
			fmt.Fprintf(stderr, "pid %d: %v\n", r.Target.PID, r.Err)
			failed++
		case !r.Resp.OK:
			fmt.Fprintf(stderr, "pid %d: refused: %s\n", r.Target.PID, r.Resp.Error)
			failed++
		default:
			ok = append(ok, r)
		}
	}
	if failed > 0 {
		return ok, fmt.Errorf("%d of %d processes did not apply %s", failed, len(results), cmd)
	}
	return ok, nil
}

// runControl sends req and prints each process's answer, or appends it to
// the command file when the file backend is selected.
func runControl(out, stderr io.Writer, req *control.Request) error {
	if fileBackend() {
		if err := control.AppendCommand(global.socketDir, req); err != nil {
			return err
		}
		fmt.Fprintf(out, "appended %s to %s; injected processes apply it within 100 ms\n", req.Cmd, control.CommandFile(global.socketDir))
		return nil
	}
	results, err := sendAll(stderr, req)
	for _, r := range results {
		fmt.Fprintf(out, "pid %d: %s\n", r.Target.PID, r.Resp.Message)
	}
	return err
}
