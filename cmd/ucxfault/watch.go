package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/observer"
	"github.com/ucxfault/ucxfault/recording"
)

type watchFlags struct {
	duration  time.Duration
	output    string
	all       bool
	comm      string
	cgroup    string
	incidents string
}

func newWatchCmd() *cobra.Command {
	var fl watchFlags
	cmd := &cobra.Command{
		Use:   "watch [PID...] [--all [--comm NAME] [--cgroup PATH]]",
		Short: "Report every endpoint failure on the node, at no cost to the data path",
		Long: `watch is the failure watch to leave running on a node. It probes only
libucp's failure path (ucp_ep_set_failed where exported, ucp_ep_invoke_err_cb,
ucp_ep_reqs_purge, ucp_ep_req_purge), which runs only when an endpoint fails,
and the rare endpoint lifetime calls (ucp_ep_create, ucp_ep_close_nbx,
ucp_ep_close_nb, ucp_ep_destroy): a put, a get or a poll takes no trap.

Each endpoint failure prints one line: time, host, pid, rank, endpoint number
(creation order, as in recordings), peer (as status names it), the code the
error handler got, the requests purged with their codes and the endpoint's
age; "injected" marks a kill the ucxfault injector asked for. -o jsonl prints
one JSON object per failure instead. --incidents DIR writes one recording
(format v2, endpoint events only) per failure.

The failure-path functions are UCX internals: the watch finds them by name in
each libucp, logs per process which it found, and refuses a libucp that does
not export ucp_ep_invoke_err_cb (naming its UCX version) instead of watching
nothing. Needs root, as observe.`,
		Example: `  ucxfault watch --all
  ucxfault watch --all --comm python3 -o jsonl --incidents /var/log/ucxfault
  ucxfault watch 4242`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWatch(cmd, args, &fl)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&fl.duration, "duration", 0, "stop after this long (default: until Ctrl-C or SIGTERM)")
	f.StringVarP(&fl.output, "output", "o", "text", "failure format: text (one line each) or jsonl")
	f.BoolVar(&fl.all, "all", false, "watch every process that maps a libucp, now and later")
	f.StringVar(&fl.comm, "comm", "", "only processes with this name (/proc/PID/comm); implies --all without PIDs")
	f.StringVar(&fl.cgroup, "cgroup", "", "only processes in this cgroup or below; implies --all without PIDs")
	f.StringVar(&fl.incidents, "incidents", "", "directory for one recording per failure (endpoint events only)")
	return cmd
}

func parseWatch(args []string, fl *watchFlags) (*observer.WatchOptions, error) {
	opts := &observer.WatchOptions{All: fl.all, Comm: fl.comm, Cgroup: fl.cgroup}
	for _, a := range args {
		pid, err := strconv.Atoi(a)
		if err != nil || pid <= 0 {
			return nil, usagef("watch: %q is not a PID", a)
		}
		opts.PIDs = append(opts.PIDs, pid)
	}
	if len(opts.PIDs) == 0 && !fl.all && fl.comm == "" && fl.cgroup == "" {
		return nil, usagef("watch: give PIDs, or --all (with --comm, --cgroup)")
	}
	if len(opts.PIDs) == 0 {
		opts.All = true
	}
	if fl.duration < 0 {
		return nil, usagef("watch: --duration %v is negative", fl.duration)
	}
	if fl.output != "text" && fl.output != "jsonl" {
		return nil, usagef("watch: -o %q: want text or jsonl", fl.output)
	}
	if fl.incidents != "" {
		if fi, err := os.Stat(fl.incidents); err != nil || !fi.IsDir() {
			return nil, usagef("watch: --incidents %s: not a directory", fl.incidents)
		}
	}
	return opts, nil
}

// failureLine is one failure as the text output prints it.
func failureLine(f *observer.Failure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s pid=%d comm=%s rank=%d ep=%d", f.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), f.Host, f.PID, f.Comm, f.Rank, f.Endpoint)
	peer := f.Peer
	if peer == "" {
		peer = "-"
	}
	fmt.Fprintf(&b, " peer=%s code=%d (%s)", peer, f.Code, f.Status)
	codes := map[int]int{}
	var order []int
	for _, r := range f.Purged {
		if codes[r.Code] == 0 {
			order = append(order, r.Code)
		}
		codes[r.Code]++
	}
	fmt.Fprintf(&b, " purged=%d", len(f.Purged))
	if len(order) > 0 {
		parts := make([]string, len(order))
		for i, c := range order {
			parts[i] = fmt.Sprintf("%d x%d", c, codes[c])
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if f.CreatedBefore {
		b.WriteString(" age=?")
	} else {
		fmt.Fprintf(&b, " age=%v", time.Duration(f.AgeNS).Round(time.Millisecond))
	}
	if !f.Handler {
		b.WriteString(" no-handler")
	}
	if f.Injected {
		b.WriteString(" injected")
	}
	return b.String()
}

// incident is one failure as a recording: the endpoint's creation and its
// failure (and handler call), with times relative to the creation, which
// replay turns into a kill at the same age. An endpoint created before the
// watch has no creation to count from: it is listed as attached, its
// failure at 0, and replay has no moment to place it at.
func incident(f *observer.Failure) *recording.File {
	rf := recording.New(recording.SourceObserver)
	rf.Created = f.Time.Add(-time.Duration(f.AgeNS)).UTC()
	evs := []recording.EndpointEvent{
		{Endpoint: f.Endpoint, Event: recording.EventCreate, Peer: f.Peer},
		{Endpoint: f.Endpoint, Event: recording.EventFailure, Code: f.Code, Peer: f.Peer, Injected: f.Injected, TimeNS: uint64(f.AgeNS)},
	}
	var attached []int
	if f.CreatedBefore {
		rf.Created = f.Time.UTC()
		evs = evs[1:]
		evs[0].TimeNS = 0
		attached = []int{f.Endpoint}
	}
	if f.Handler {
		evs = append(evs, recording.EndpointEvent{Endpoint: f.Endpoint, Event: recording.EventHandler, Code: f.Code, Peer: f.Peer,
			Injected: f.Injected, TimeNS: evs[len(evs)-1].TimeNS})
	}
	rf.Processes = []recording.Process{{
		Host: f.Host, PID: f.PID, Rank: f.Rank, Command: []string{f.Comm},
		Hooks: []string{}, Complete: true, EndpointEvents: evs, AttachedEndpoints: attached, Calls: []recording.Call{},
	}}
	// The process's command line and start, while it is still there (a
	// failure settles 200 ms after it happened; a process gone by then
	// keeps its name alone and no start time).
	p := &rf.Processes[0]
	if cmd, err := proc.Command(f.PID); err == nil && len(cmd) > 0 && proc.Alive(f.PID) {
		if start, err := proc.StartWall(f.PID); err == nil && !start.After(f.Time) {
			p.Command, p.StartTime = cmd, start.UTC()
		}
	}
	return rf
}

func runWatch(cmd *cobra.Command, args []string, fl *watchFlags) error {
	stderr, stdout := cmd.ErrOrStderr(), cmd.OutOrStdout()
	opts, err := parseWatch(args, fl)
	if err != nil {
		return err
	}
	ctx, stop := interruptContext(cmd)
	defer stop()
	if fl.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fl.duration)
		defer cancel()
	}
	var (
		outMu   sync.Mutex
		written int
		werrs   []error
	)
	enc := json.NewEncoder(stdout)
	opts.Log = func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stderr, format+"\n", a...)
	}
	opts.OnFailure = func(f observer.Failure) {
		outMu.Lock()
		defer outMu.Unlock()
		if fl.output == "jsonl" {
			_ = enc.Encode(&f)
		} else {
			fmt.Fprintln(stdout, failureLine(&f))
		}
		if fl.incidents != "" {
			name := fmt.Sprintf("ucxfault-incident-%s-%d-ep%d-%s.json", f.Host, f.PID, f.Endpoint, f.Time.UTC().Format("20060102T150405.000000"))
			if err := incident(&f).WriteFile(filepath.Join(fl.incidents, name)); err != nil {
				werrs = append(werrs, err)
			} else {
				written++
			}
		}
		if fs, ok := stdout.(interface{ Sync() error }); ok {
			_ = fs.Sync()
		}
	}
	w, err := observer.StartWatch(ctx, opts)
	if err != nil {
		if errors.Is(err, observer.ErrNoFailurePath) {
			return usagef("watch: %v", err)
		}
		return fmt.Errorf("watching %s: %w", pidList(opts.PIDs), err)
	}
	st := w.Stats()
	what := fmt.Sprintf("processes %s", pidList(opts.PIDs))
	if opts.All {
		what = "every process that maps libucp"
		if opts.Comm != "" {
			what += " named " + opts.Comm
		}
		if opts.Cgroup != "" {
			what += " in cgroup " + opts.Cgroup
		}
	}
	fmt.Fprintf(stderr, "watching %s for endpoint failures (%d probes, failure path and endpoint lifetime only); Ctrl-C stops\n", what, st.Probes)
	gone := make(chan struct{})
	if !opts.All {
		// As observe: a watch of given processes ends when they all have
		// exited (their last failures are reported on the way out).
		go func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				alive := false
				for _, pid := range opts.PIDs {
					alive = alive || proc.Alive(pid)
				}
				if !alive {
					close(gone)
					return
				}
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-gone:
		fmt.Fprintf(stderr, "every watched process has exited\n")
	}
	fmt.Fprintf(stderr, "detaching...\n")
	stopErr := w.Stop()
	st = w.Stats()
	outMu.Lock()
	fmt.Fprintf(stderr, "stopped: %d processes watched, %d failures, %d events, %d lost", st.Processes, st.Failures, st.Events, st.Lost)
	if st.Unread > 0 {
		fmt.Fprintf(stderr, ", %d events of processes gone before they could be read", st.Unread)
	}
	if fl.incidents != "" {
		fmt.Fprintf(stderr, ", %s written to %s", plural(written, "incident"), fl.incidents)
	}
	fmt.Fprintln(stderr)
	stopErr = errors.Join(append(werrs, stopErr)...)
	outMu.Unlock()
	if stopErr != nil {
		return fmt.Errorf("stopping the watch: %w", stopErr)
	}
	return nil
}
