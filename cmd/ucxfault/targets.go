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

// socketDirs lists the directories to look for sockets in: --socket-dir
// (or UCX_FAULT_SOCKET_DIR) alone when given, else the user's private
// directories, and for root every user's (control.SearchDirs). A private
// directory refused as unsafe is said on stderr and skipped.
func socketDirs(stderr io.Writer) ([]string, int, error) {
	found, refused, err := control.SearchDirs(global.socketDir, os.Getenv, os.Geteuid())
	if err != nil {
		return nil, 0, err
	}
	for _, e := range refused {
		fmt.Fprintf(stderr, "skipped: %v\n", e)
	}
	dirs := make([]string, len(found))
	for i, d := range found {
		dirs[i] = d.Path
	}
	return dirs, len(refused), nil
}

// dirsText names where the CLI looked, for an error that found nothing;
// refused counts the directories skipped as unsafe.
func dirsText(dirs []string, refused int) string {
	if len(dirs) == 0 {
		p := control.PrivateDir(os.Getenv, os.Geteuid())
		if refused > 0 {
			return fmt.Sprintf("%s (refused: see above)", p)
		}
		return fmt.Sprintf("%s (no socket directory of yours exists)", p)
	}
	return strings.Join(dirs, ", ")
}

// fileDir is the file backend's directory: --socket-dir when given, else
// the user's private directory, checked as the injector checks it; create
// creates a missing private directory.
func fileDir(create bool) (string, error) {
	if global.socketDir != "" {
		return global.socketDir, control.CheckChosenDir(global.socketDir, os.Geteuid())
	}
	dir := control.PrivateDir(os.Getenv, os.Geteuid())
	if create {
		return dir, control.EnsurePrivateDir(dir, os.Geteuid())
	}
	return dir, control.CheckPrivateDir(dir, os.Geteuid())
}

// findTargets finds the injected processes the command is for. With --pid it
// looks at those pids' sockets only; with --rank it asks every socket's
// process for its rank and removes nothing (a process that does not answer
// cannot say its rank). Otherwise it sweeps the directories: sockets of
// processes proven gone are removed and reported (control.RemoveIfStale).
func findTargets(stderr io.Writer) ([]control.Target, error) {
	var (
		list    []control.Target
		removed []control.Removal
	)
	dirs, refused, err := socketDirs(stderr)
	if err != nil {
		return nil, err
	}
	switch {
	case len(global.pids) > 0:
		list, removed, err = control.Lookup(dirs, global.pids)
	case global.ranks != "":
		for _, dir := range dirs {
			l, e := control.List(dir)
			list, err = append(list, l...), errors.Join(err, e)
		}
	default:
		for _, dir := range dirs {
			d, e := control.Discover(dir)
			list, removed, err = append(list, d.Targets...), append(removed, d.Removed...), errors.Join(err, e)
		}
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
		asked := len(list)
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
		if len(list) == 0 && asked > 0 {
			return nil, fmt.Errorf("%w with rank %s in %s (%s there, none of that rank: `ucxfault status` lists their ranks)",
				control.ErrNoProcess, global.ranks, dirsText(dirs, refused), plural(asked, "process"))
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w in %s (start a program with `ucxfault inject -- PROGRAM`, or set --socket-dir)", control.ErrNoProcess, dirsText(dirs, refused))
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
	var failed, unanswered int
	var ok []control.Result
	for _, r := range results {
		switch {
		case errors.Is(r.Err, control.ErrNotAnswering):
			// The request may be in the socket's queue: a stopped or busy
			// process applies it when it reads it.
			fmt.Fprintf(stderr, "pid %d: %v\n", r.Target.PID, r.Err)
			unanswered++
		case errors.Is(r.Err, control.ErrStale):
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
	switch {
	case unanswered > 0 && failed > 0:
		return ok, fmt.Errorf("%d of %s did not apply %s, and %d did not answer in time: they may still apply it (see status before sending it again)",
			failed, plural(len(results), "process"), commandOf(cmd), unanswered)
	case unanswered > 0:
		return ok, fmt.Errorf("%d of %s did not answer %s in time: it may still apply it when it reads the request (see status before sending it again)",
			unanswered, plural(len(results), "process"), commandOf(cmd))
	case failed > 0:
		return ok, fmt.Errorf("%d of %s did not apply %s", failed, plural(len(results), "process"), commandOf(cmd))
	}
	return ok, nil
}
