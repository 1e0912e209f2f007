package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
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
	"github.com/ucxfault/ucxfault/recording"
)

type observeFlags struct {
	duration  time.Duration
	output    string
	functions string
	wait      bool
	ringSize  int
}

func newObserveCmd() *cobra.Command {
	var fl observeFlags
	cmd := &cobra.Command{
		Use:   "observe PID",
		Short: "Record a running process's UCX calls and their real outcomes with eBPF",
		Long: `observe attaches eBPF uprobes to the hooked ucp_* functions of the libucp
that process PID has loaded, without changing the process. It records every
application call (calls libucp makes to itself are left out), its size,
endpoint, final status and duration, until --duration ends, Ctrl-C, or the
process exits. It then writes a recording (see 'replay') and prints a table
per function: calls, errors by name, and call latency measured in the kernel.

Needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel with
uprobes, BTF and BPF ring buffers.`,
		Example: `  ucxfault observe 4242
  ucxfault observe 4242 --duration 30s -o run.json --functions put_nbx,get_nbx
  ucxfault observe --wait $(pgrep -n myapp)`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("observe takes one PID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObserve(cmd, args[0], &fl)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&fl.duration, "duration", 0, "stop after this long (default: until Ctrl-C or the process exits)")
	f.StringVarP(&fl.output, "output", "o", "", "recording file (default ucxfault-observe-PID.json)")
	f.StringVar(&fl.functions, "functions", "all", "comma-separated functions to probe ("+strings.Join(hooks.Names(), ", ")+"), or all")
	f.BoolVar(&fl.wait, "wait", false, "wait for the process to load libucp instead of failing")
	f.IntVar(&fl.ringSize, "ring-size", observer.DefaultRingSize, "bytes of the kernel's ring buffer (a power of two); calls that find it full are lost and counted")
	return cmd
}

func runObserve(cmd *cobra.Command, pidArg string, fl *observeFlags) error {
	pid, err := strconv.Atoi(pidArg)
	if err != nil || pid <= 0 {
		return usagef("observe: %q is not a PID", pidArg)
	}
	if fl.duration < 0 {
		return usagef("observe: --duration %v is negative", fl.duration)
	}
	if n, page := fl.ringSize, os.Getpagesize(); n < page || n > 1<<30 || n&(n-1) != 0 {
		return usagef("observe: --ring-size %d: want a power of two from %d to %d", n, page, 1<<30)
	}
	var ids []hooks.ID // nil: every row the observer probes by default
	if !strings.EqualFold(strings.TrimSpace(fl.functions), "all") {
		if ids, err = hooks.ParseList(fl.functions); err != nil {
			return usagef("observe: --functions: %w", err)
		}
	}
	out := fl.output
	if out == "" {
		out = fmt.Sprintf("ucxfault-observe-%d.json", pid)
	}
	stderr := cmd.ErrOrStderr()

	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if fl.wait {
		fmt.Fprintf(stderr, "waiting for process %d to load libucp...\n", pid)
	}
	s, err := observer.StartContext(ctx, &observer.Options{PID: pid, Hooks: ids, Wait: fl.wait, RingSize: fl.ringSize})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("observe: interrupted while waiting for process %d to load libucp", pid)
		}
		return fmt.Errorf("observing process %d: %w", pid, err)
	}
	fmt.Fprintf(stderr, "observing process %d (%d functions); Ctrl-C stops\n", s.PID(), len(s.Hooks())-len(s.Missing))
	if len(s.Missing) > 0 {
		fmt.Fprintf(stderr, "not probed, its libucp does not export them: %s\n", strings.Join(s.Missing, ", "))
	}

	reason := watch(ctx, s, fl.duration, stderr)

	rec, st, stopErr := s.Stop()
	if rec == nil {
		return fmt.Errorf("stopping observation of process %d: %w", pid, stopErr)
	}
	if err := rec.WriteFile(out); err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	p := &rec.Processes[0]
	if err := printObserveTable(cmd.OutOrStdout(), p); err != nil {
		return fmt.Errorf("printing table: %w", err)
	}
	state := "complete"
	if !p.Complete {
		state = "INCOMPLETE"
	}
	fmt.Fprintf(stderr, "stopped (%s): %d calls, %d errors, %d lost (dropped %d, unmatched entries %d, unmatched returns %d), %d internal calls left out\n",
		reason, st.Calls, st.Errors, st.Lost(), st.DroppedEvents, st.UnmatchedEntries, st.UnmatchedReturns, st.Internal)
	fmt.Fprintf(stderr, "recording written to %s (%s)\n", out, state)
	if stopErr != nil {
		return fmt.Errorf("stopping observation of process %d: %w", pid, stopErr)
	}
	return nil
}

// watch waits for the end of the observation and shows a live line on
// stderr when it is a terminal. It returns why the observation ended.
func watch(ctx context.Context, s *observer.Session, d time.Duration, stderr io.Writer) string {
	var deadline <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		deadline = t.C
	}
	live := isTerminal(stderr)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastT := uint64(0), time.Now()
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
		case <-s.Exited():
			return "process exited"
		case now := <-tick.C:
			if !live {
				continue
			}
			st := s.Stats()
			rate := float64(st.Calls-last) / now.Sub(lastT).Seconds()
			last, lastT = st.Calls, now
			fmt.Fprintf(stderr, "\r\033[K%.0f calls/s  calls %d  errors %d  lost %d  internal %d",
				rate, st.Calls, st.Errors, st.Lost(), st.Internal)
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

// printObserveTable prints one row per probed function.
func printObserveTable(w io.Writer, p *recording.Process) error {
	sums := map[string]observer.FuncSummary{}
	for _, s := range observer.Summarize(p) {
		sums[s.Fn] = s
	}
	table := tablewriter.NewTable(w, tablewriter.WithHeaderAutoFormat(tw.Off))
	table.Header("FUNCTION", "CALLS", "ERRORS", "P50", "P99", "MAX")
	for _, fn := range p.Hooks {
		s, ok := sums[fn]
		if !ok {
			if err := table.Append(fn, "0", "-", "-", "-", "-"); err != nil {
				return err
			}
			continue
		}
		if err := table.Append(fn, strconv.FormatUint(s.Calls, 10), formatErrors(s.Errors),
			formatLatency(s.P50), formatLatency(s.P99), formatLatency(s.Max)); err != nil {
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
