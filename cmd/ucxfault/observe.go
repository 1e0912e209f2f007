package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/observer"
)

type observeFlags struct {
	duration  time.Duration
	output    string
	recording string
	functions string
	wait      bool
	ringSize  int
	all       bool
	comm      string
	cgroup    string
	flight    time.Duration
	onError   string
	after     time.Duration
	flightMax int
}

func newObserveCmd() *cobra.Command {
	var fl observeFlags
	cmd := &cobra.Command{
		Use:   "observe [PID...] [--all [--comm NAME] [--cgroup PATH]]",
		Short: "Record running processes' UCX calls and their real outcomes with eBPF",
		Long: `observe attaches eBPF uprobes to the hooked ucp_* functions of the libucp
that the processes have loaded, without changing them: one set of probes per
libucp file, shared by every process that maps it, with the processes
filtered in the kernel. It records every application call (calls libucp makes
to itself are left out), its size, endpoint, final status and duration, until
--duration ends, Ctrl-C, or the processes named exit. It then writes one
recording with one part per process (see 'replay --part') and prints, per
process and in total, the functions that were called: calls, errors by name,
and call latency measured in the kernel.

--all watches every process that maps a libucp (under its usual name or a
renamed wheel copy), including the ones that start later; --comm and --cgroup
narrow it (a Kubernetes pod or a Slurm job is a cgroup). Processes that exit
keep their part.

--flight 30s --on-error DIR is the flight recorder: only the last 30 s of each
process's calls are kept (at most --flight-max-calls each, shown at the
start), and when a call of a process fails, at once or on completion, or an
endpoint fails, one recording of that process (the window before the error
and --after after it) is written to DIR, named by host, pid and time.
SIGUSR1 writes one of every process at once.

Needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel with
uprobes, BTF and BPF ring buffers.`,
		Example: `  ucxfault observe 4242
  ucxfault observe 4242 4243 --duration 30s --recording run.json --functions put_nbx,get_nbx
  ucxfault observe --wait $(pgrep -n myapp)
  ucxfault observe --all --comm python3 -o json
  ucxfault observe --all --flight 30s --on-error /var/log/ucxfault`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("functions") {
				if cmd.Flags().Changed("hooks") {
					return usagef("observe: give --hooks, not both --hooks and --functions (its old name)")
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "ucxfault: --functions is deprecated: use --hooks, as in the other commands")
			}
			return runObserve(cmd, args, &fl)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&fl.duration, "duration", 0, "stop after this long (default: until Ctrl-C or the processes exit)")
	f.StringVarP(&fl.output, "output", "o", "table", "summary format: table or json")
	f.StringVarP(&fl.recording, "recording", "w", "", "recording file (default ucxfault-observe-PID.json, or ucxfault-observe-all.json)")
	f.StringVar(&fl.functions, "hooks", "all", "comma-separated hooks to probe ("+strings.Join(hooks.Names(), ", ")+"), or all")
	f.StringVar(&fl.functions, "functions", "all", "the old name of --hooks")
	_ = f.MarkHidden("functions")
	f.BoolVar(&fl.wait, "wait", false, "wait for the processes to load libucp instead of failing")
	f.IntVar(&fl.ringSize, "ring-size", observer.DefaultRingSize, "bytes of the kernel's ring buffer (a power of two); calls that find it full are lost and counted")
	f.BoolVar(&fl.all, "all", false, "watch every process that maps a libucp, now and later")
	f.StringVar(&fl.comm, "comm", "", "only processes with this name (/proc/PID/comm); implies --all without PIDs")
	f.StringVar(&fl.cgroup, "cgroup", "", "only processes in this cgroup or below (/sys/fs/cgroup/... or as /proc/PID/cgroup shows it); implies --all without PIDs")
	f.DurationVar(&fl.flight, "flight", 0, "flight recorder: keep only this much of each process's past, write incidents to --on-error")
	f.StringVar(&fl.onError, "on-error", "", "directory for the flight recorder's incidents (with --flight)")
	f.DurationVar(&fl.after, "after", 5*time.Second, "how long an incident keeps recording after its error (with --flight)")
	f.IntVar(&fl.flightMax, "flight-max-calls", 0, fmt.Sprintf("calls kept per process (with --flight; default (flight+after) x %d/s); more are lost and counted", observer.DefaultFlightRate))
	return cmd
}

// parseObserve checks the flags and arguments and returns the node's
// options and the recording file ("" in flight mode without --recording).
func parseObserve(args []string, fl *observeFlags, stderr io.Writer) (*observer.NodeOptions, string, error) {
	opts := &observer.NodeOptions{All: fl.all, Comm: fl.comm, Cgroup: fl.cgroup, Wait: fl.wait, RingSize: fl.ringSize}
	if len(args) == 0 && len(global.pids) > 0 {
		// --pid N, as the control commands take it: taken, with a
		// pointer to the usual form.
		for _, p := range global.pids {
			args = append(args, strconv.Itoa(p))
		}
		fmt.Fprintf(stderr, "observing pid %s (the usual form is: ucxfault observe %s)\n", strings.Join(args, ", "), strings.Join(args, " "))
	}
	for _, a := range args {
		pid, err := strconv.Atoi(a)
		if err != nil || pid <= 0 {
			return nil, "", usagef("observe: %q is not a PID", a)
		}
		opts.PIDs = append(opts.PIDs, pid)
	}
	if len(opts.PIDs) == 0 && !fl.all && fl.comm == "" && fl.cgroup == "" {
		return nil, "", usagef("observe: give PIDs, or --all (with --comm, --cgroup)")
	}
	if len(opts.PIDs) == 0 {
		opts.All = true // --comm and --cgroup alone narrow --all
	}
	if fl.duration < 0 {
		return nil, "", usagef("observe: --duration %v is negative", fl.duration)
	}
	if n, page := fl.ringSize, os.Getpagesize(); n < page || n > 1<<30 || n&(n-1) != 0 {
		return nil, "", usagef("observe: --ring-size %d: want a power of two from %d to %d", n, page, 1<<30)
	}
	if !strings.EqualFold(strings.TrimSpace(fl.functions), "all") {
		ids, err := hooks.ParseList(fl.functions)
		if err != nil {
			return nil, "", usagef("observe: --hooks: %w", err)
		}
		opts.Hooks = ids
	}
	switch fl.output {
	case "table", "wide", "json":
	default:
		// The old spelling: -o named the recording file.
		if fl.recording != "" {
			return nil, "", usagef("observe: -o %q: want table or json", fl.output)
		}
		fmt.Fprintf(stderr, "observe: -o FILE is deprecated, use --recording FILE (-o is the format: table or json)\n")
		fl.recording, fl.output = fl.output, "table"
	}
	if fl.flight != 0 || fl.onError != "" {
		if fl.flight <= 0 || fl.onError == "" {
			return nil, "", usagef("observe: the flight recorder needs both --flight DURATION (positive) and --on-error DIR")
		}
		if fi, err := os.Stat(fl.onError); err != nil || !fi.IsDir() {
			return nil, "", usagef("observe: --on-error %s: not a directory", fl.onError)
		}
		if fl.after < 0 || fl.flightMax < 0 {
			return nil, "", usagef("observe: --after and --flight-max-calls cannot be negative")
		}
		opts.Flight = &observer.FlightOptions{Window: fl.flight, After: fl.after, Dir: fl.onError, MaxCalls: fl.flightMax,
			Final: fl.recording != ""}
	}
	out := fl.recording
	if out == "" && opts.Flight == nil {
		out = "ucxfault-observe-all.json"
		if len(opts.PIDs) == 1 && !fl.all {
			out = fmt.Sprintf("ucxfault-observe-%d.json", opts.PIDs[0])
		}
	}
	if out != "" {
		// Before attaching: a capture that cannot be written is lost whole.
		if err := checkWritable(out); err != nil {
			return nil, "", usagef("observe: the recording could not be written: %w (choose another --recording)", err)
		}
	}
	return opts, out, nil
}

// checkWritable checks that path can be created or overwritten, and
// leaves no new file behind.
func checkWritable(path string) error {
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(path)
}

// interruptContext is cmd's context, ended by Ctrl-C or SIGTERM: how
// observe and watch stop and detach their probes.
func interruptContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func runObserve(cmd *cobra.Command, args []string, fl *observeFlags) error {
	stderr := cmd.ErrOrStderr()
	opts, out, err := parseObserve(args, fl, stderr)
	if err != nil {
		return err
	}
	ctx, stop := interruptContext(cmd)
	defer stop()
	// SIGUSR1 asks the flight recorder for a snapshot; without it, it is
	// ignored rather than fatal.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	if fl.wait && len(opts.PIDs) > 0 {
		fmt.Fprintf(stderr, "waiting for %s to load libucp...\n", pidList(opts.PIDs))
	}
	if opts.All || len(opts.PIDs) > 1 || opts.Flight != nil {
		// On a terminal, a log line first erases the live line.
		erase := ""
		if isTerminal(stderr) {
			erase = "\r\033[K"
		}
		opts.Log = func(format string, a ...any) { fmt.Fprintf(stderr, erase+format+"\n", a...) }
	}
	n, err := observer.StartNode(ctx, opts)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("observe: interrupted while waiting for %s to load libucp", pidList(opts.PIDs))
		}
		return fmt.Errorf("observing %s: %w", pidList(opts.PIDs), err)
	}
	if opts.Flight != nil {
		o := opts.Flight
		bound := o.CallBound()
		fmt.Fprintf(stderr, "flight recorder: last %v of each process, %v after an error, at most %d calls (%s) per process; incidents to %s\n",
			o.Window, o.After, bound, formatBytes(int64(bound)*int64(observer.FlightCallBytes)), o.Dir)
	}
	probes := len(n.Hooks()) - len(n.Missing())
	files := n.Files()
	what := fmt.Sprintf("processes %s", pidList(opts.PIDs))
	switch {
	case opts.All:
		what = "every process that maps libucp" + filterText(opts)
	case len(opts.PIDs) == 1:
		what = fmt.Sprintf("process %d", opts.PIDs[0])
	}
	fmt.Fprintf(stderr, "observing %s (%d functions, %s); Ctrl-C stops\n", what, probes, plural(len(files), "libucp file"))
	if missing := n.Missing(); len(missing) > 0 {
		fmt.Fprintf(stderr, "not probed, its libucp does not export them: %s\n", strings.Join(missing, ", "))
	}
	reason := watchNode(ctx, n, opts, fl.duration, stderr, usr1)

	flightUsed, flightBound := n.FlightMemory()
	rss := procMemory("VmRSS:")
	fmt.Fprintf(stderr, "detaching...\n")
	rec, stats, stopErr := n.Stop()
	if rec == nil {
		return fmt.Errorf("stopping observation: %w", stopErr)
	}
	var writeErr error
	if out != "" {
		if err := rec.WriteFile(out); err != nil {
			// Checked before attaching, and still failed (a full disk, a
			// directory removed): the capture goes to a file of its own.
			fallback := filepath.Join(os.TempDir(), fmt.Sprintf("ucxfault-observe-%d.json", time.Now().UnixNano()))
			if e := rec.WriteFile(fallback); e != nil {
				return fmt.Errorf("observe: writing %s: %w; and the fallback %s: %w", out, err, fallback, e)
			}
			fmt.Fprintf(stderr, "observe: writing %s failed (%v); the recording is in %s\n", out, err, fallback)
			writeErr = fmt.Errorf("observe: writing %s: %w", out, err)
			out = fallback
		}
	}
	sum := observer.Summarise(rec, stats)
	if fl.output == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return fmt.Errorf("printing summary: %w", err)
		}
	} else if err := printObserveTable(cmd.OutOrStdout(), &sum); err != nil {
		return fmt.Errorf("printing table: %w", err)
	}
	var total observer.Stats
	incomplete := 0
	for i, p := range stats {
		total.Calls += p.Calls
		total.Errors += p.Errors
		total.Internal += p.Internal
		total.DroppedEvents += p.DroppedEvents
		total.UnmatchedEntries += p.UnmatchedEntries
		total.UnmatchedReturns += p.UnmatchedReturns
		if i < len(rec.Processes) && !rec.Processes[i].Complete {
			incomplete++
		}
	}
	total.Errors = sum.Total.Errors
	fmt.Fprintf(stderr, "stopped (%s): %s, %d calls, %d errors, %d lost (dropped %d, unmatched entries %d, unmatched returns %d), %d internal calls left out\n",
		reason, plural(len(stats), "process"), total.Calls, total.Errors, total.Lost(), total.DroppedEvents, total.UnmatchedEntries, total.UnmatchedReturns, total.Internal)
	if out != "" {
		state := "complete"
		if incomplete > 0 {
			state = fmt.Sprintf("INCOMPLETE: %d of %s", incomplete, plural(len(stats), "part"))
		}
		fmt.Fprintf(stderr, "recording written to %s (%s)\n", out, state)
	}
	if opts.Flight != nil {
		written, werr := n.Incidents()
		fmt.Fprintf(stderr, "%s written to %s; flight buffers %s at the end (bound %s), observer resident memory %s before detaching, %s at peak\n",
			plural(len(written), "incident"), opts.Flight.Dir, formatBytes(flightUsed), formatBytes(flightBound), rss, procMemory("VmHWM:"))
		if q := n.Suppressed(); q > 0 {
			fmt.Fprintf(stderr, "%d errors came less than %v after their process's last incident and started none\n", q, opts.Flight.Window)
		}
		stopErr = errors.Join(stopErr, werr)
	}
	if stopErr != nil {
		return fmt.Errorf("stopping observation: %w", stopErr)
	}
	return writeErr
}

func filterText(o *observer.NodeOptions) string {
	var parts []string
	if o.Comm != "" {
		parts = append(parts, "named "+o.Comm)
	}
	if o.Cgroup != "" {
		parts = append(parts, "in cgroup "+o.Cgroup)
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, ", ")
}

func pidList(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "s") {
		return fmt.Sprintf("%d %ses", n, what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func formatBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// watchNode waits for the end of the observation and shows a live line on
// stderr when it is a terminal (none when it is not). It returns why the
// observation ended.
func watchNode(ctx context.Context, n *observer.Node, opts *observer.NodeOptions, d time.Duration, stderr io.Writer, usr1 <-chan os.Signal) string {
	var deadline <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		deadline = t.C
	}
	live := isTerminal(stderr)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	defer func() {
		if live {
			fmt.Fprint(stderr, "\r\033[K")
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return "interrupted"
		case <-deadline:
			return "duration elapsed"
		case <-usr1:
			if path, err := n.Snapshot(); err != nil {
				fmt.Fprintf(stderr, "SIGUSR1: %v\n", err)
			} else {
				fmt.Fprintf(stderr, "SIGUSR1: snapshot written to %s\n", path)
			}
		case <-tick.C:
			if !opts.All && n.Watching() == 0 {
				if len(opts.PIDs) == 1 {
					return "process exited"
				}
				return "processes exited"
			}
			if !live {
				continue
			}
			ps, st := n.Stats()
			line := fmt.Sprintf("\r\033[K%s (%d live)  calls %d  errors %d  lost %d  elapsed %s",
				plural(len(ps), "process"), n.Watching(), st.Calls, st.Errors, st.Lost(), time.Since(start).Round(time.Second))
			if opts.Flight != nil {
				used, bound := n.FlightMemory()
				written, _ := n.Incidents()
				line += fmt.Sprintf("  flight %s of %s  incidents %d", formatBytes(used), formatBytes(bound), len(written))
			}
			fmt.Fprint(stderr, line)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// printObserveTable prints, per process, one row per function that was
// called, then the same over every process when there are several.
func printObserveTable(w io.Writer, sum *observer.Summary) error {
	table := tablewriter.NewTable(w, tablewriter.WithHeaderAutoFormat(tw.Off))
	table.Header("PID", "RANK", "FUNCTION", "CALLS", "ERRORS", "P50", "P99", "MAX")
	rows := func(pid, rank string, fs []observer.FuncJSON) error {
		if len(fs) == 0 {
			return table.Append(pid, rank, "(no calls)", "-", "-", "-", "-", "-")
		}
		for _, f := range fs {
			if err := table.Append(pid, rank, f.Fn, strconv.FormatUint(f.Calls, 10), formatErrors(f.Errors),
				formatLatency(time.Duration(f.P50NS)), formatLatency(time.Duration(f.P99NS)), formatLatency(time.Duration(f.MaxNS))); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range sum.Processes {
		if err := rows(strconv.Itoa(p.PID), strconv.Itoa(p.Rank), p.Functions); err != nil {
			return err
		}
	}
	if len(sum.Processes) > 1 {
		if err := rows("all", "-", sum.Total.Functions); err != nil {
			return err
		}
	}
	return table.Render()
}

// formatErrors renders {"ENDPOINT_TIMEOUT": 16, "IO_ERROR": 2} as
// "ENDPOINT_TIMEOUT 16, IO_ERROR 2", most frequent first.
func formatErrors(errs map[string]uint64) string {
	if len(errs) == 0 {
		return "-"
	}
	names := make([]string, 0, len(errs))
	for n := range errs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if errs[names[i]] != errs[names[j]] {
			return errs[names[i]] > errs[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, errs[n])
	}
	return strings.Join(parts, ", ")
}

func formatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

// procMemory is a memory line of /proc/self/status (VmRSS:, VmHWM: the
// peak), or "?".
func procMemory(field string) string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
				return formatBytes(kb << 10)
			}
		}
	}
	return "?"
}
