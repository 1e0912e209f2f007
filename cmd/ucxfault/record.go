package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
)

func newRecordCmds() []*cobra.Command {
	toggle := &cobra.Command{
		Use:   "record-toggle [on|off]",
		Short: "Switch recording of calls on or off (no argument: flip it)",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("record-toggle takes on, off or nothing")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			req := &control.Request{Cmd: control.CmdRecord}
			if len(args) == 1 {
				on, err := control.ParseBool(args[0])
				if err != nil {
					return err
				}
				req.On = &on
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), req)
		},
	}
	clear := simpleControl("record-clear", "Drop the recorded calls", control.CmdRecordClear)

	var count int
	var output string
	// runDump fetches every process's recording and prints it in format.
	runDump := func(c *cobra.Command, format string) error {
		if count < 0 {
			return usagef("--count %d: must be 0 (all) or more", count)
		}
		if fileBackend() {
			return usagef("record-dump needs the socket backend: the file backend carries no data back")
		}
		results, err := dumpAll(c.ErrOrStderr(), count)
		if err != nil && len(results) == 0 {
			return err
		}
		f := recording.New(recording.SourceInjector)
		for _, r := range results {
			if r.Resp.Recording != nil {
				f.Processes = append(f.Processes, *r.Resp.Recording)
			}
		}
		sort.Slice(f.Processes, func(i, j int) bool {
			a, b := f.Processes[i], f.Processes[j]
			if a.Rank != b.Rank {
				return a.Rank < b.Rank
			}
			return a.PID < b.PID
		})
		out := c.OutOrStdout()
		if output != "" {
			if format == "records" {
				if e := f.WriteFile(output); e != nil {
					return e
				}
				fmt.Fprintf(c.ErrOrStderr(), "wrote %d processes, %d calls to %s\n", len(f.Processes), totalCalls(f), output)
				return err
			}
			fh, e := recording.CreateOutput(output)
			if e != nil {
				return e
			}
			defer fh.Close()
			out = fh
		}
		switch format {
		case "records":
			if e := f.Write(out); e != nil {
				return e
			}
		case "pattern":
			printPattern(out, f)
		default:
			printSummary(out, f)
		}
		return err
	}
	dump := &cobra.Command{
		Use:   "record-dump [summary|pattern|records]",
		Short: "Show the recorded calls: a summary table, the X/O pattern, or the recording file",
		Long: `summary (default) prints a table per function: calls, failures, codes, sizes.
pattern prints each function's outcomes as an X/O string (X = failed) with
the codes of the failures. records writes the recording file (JSON, see
docs/recording-format.md) to -o FILE or to standard output.`,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("record-dump %q (accepted: summary, pattern, records)", args[0])
			}
			return runDump(c, "summary")
		},
	}
	for _, f := range []struct{ name, short string }{
		{"summary", "A table per process and function: calls, failures, codes, sizes (the default)"},
		{"pattern", "Each function's outcomes as an X/O string (X = failed) with the failures' codes"},
		{"records", "The recording file (JSON, docs/recording-format.md), to -o FILE or standard output"},
	} {
		dump.AddCommand(&cobra.Command{
			Use:   f.name,
			Short: f.short,
			Args:  exactArgs(0),
			RunE:  func(c *cobra.Command, _ []string) error { return runDump(c, f.name) },
		})
	}
	dump.PersistentFlags().IntVar(&count, "count", 0, "only the newest N calls of each process (0 = all)")
	dump.PersistentFlags().StringVarP(&output, "output", "o", "", "write to FILE instead of standard output")
	return []*cobra.Command{toggle, clear, dump}
}

// progressMin is the size of a recording from which record-dump reports
// its progress (about 200 MB of JSON).
const progressMin = 1 << 20

// dumpHeaderWait is the least time record-dump waits for a process to
// build its recording and start sending it: about 2 s per million calls on
// a 2-vCPU VM, and the call log may hold 2^28.
const dumpHeaderWait = 60 * time.Second

// dumpAll fetches every target's recording in chunks (control.DumpAll),
// reporting on stderr, for large recordings, each quarter that arrives.
func dumpAll(stderr io.Writer, count int) ([]control.Result, error) {
	list, err := targets(stderr)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	shown := map[int]int{}
	progress := func(t control.Target, got, total int) {
		if total < progressMin {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if q := got * 4 / total; q > shown[t.PID] {
			shown[t.PID] = q
			fmt.Fprintf(stderr, "pid %d: %d of %d calls received\n", t.PID, got, total)
		}
	}
	return collect(stderr, control.DumpAll(list, count, max(global.timeout, dumpHeaderWait), progress), control.CmdRecordDump)
}

func totalCalls(f *recording.File) int {
	n := 0
	for _, p := range f.Processes {
		n += len(p.Calls)
	}
	return n
}

func processLabel(p recording.Process) string {
	if p.Rank >= 0 {
		return fmt.Sprintf("pid %d (rank %d on %s)", p.PID, p.Rank, p.Host)
	}
	return fmt.Sprintf("pid %d", p.PID)
}

// lossText names what a recording lost, for a person: each non-zero
// counter of l and where it comes from.
func lossText(l recording.Lost) string {
	var parts []string
	add := func(n uint64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(l.OverwrittenRecords, "overwritten (the call log's oldest records; raise UCX_FAULT_RECORD_CAPACITY)")
	add(l.OvertakenRecords, "overtaken (held when the dump began, overwritten by the running program before the copy reached them)")
	add(l.DroppedEvents, "dropped (events the observer's ring buffer could not take)")
	add(l.UnmatchedEntries, "unmatched entries (calls whose return was not seen)")
	add(l.UnmatchedReturns, "unmatched returns (returns whose call was not seen)")
	if len(parts) == 0 {
		return "nothing counted lost"
	}
	return strings.Join(parts, ", ")
}

// printPattern prints, per process and function, the outcomes as X/O.
func printPattern(w io.Writer, f *recording.File) {
	for _, p := range f.Processes {
		fmt.Fprintf(w, "%s:\n", processLabel(p))
		if !p.Complete {
			fmt.Fprintf(w, "  incomplete: %s\n", lossText(p.Lost))
		}
		byFn := map[string]*strings.Builder{}
		codes := map[string][]string{}
		var order []string
		for _, c := range p.Calls {
			b, ok := byFn[c.Fn]
			if !ok {
				b = &strings.Builder{}
				byFn[c.Fn] = b
				order = append(order, c.Fn)
			}
			if c.Failed() {
				b.WriteByte('X')
				codes[c.Fn] = append(codes[c.Fn], strconv.Itoa(c.Status))
			} else {
				b.WriteByte('O')
			}
		}
		for _, fn := range order {
			fmt.Fprintf(w, "  %-26s %s\n", fn, byFn[fn].String())
			if len(codes[fn]) > 0 {
				fmt.Fprintf(w, "  %-26s codes %s\n", "", strings.Join(codes[fn], ","))
			}
		}
	}
}

// sizeRange renders the smallest and largest size of a function's calls.
func sizeRange(min, max uint64) string {
	if min == max {
		return strconv.FormatUint(min, 10)
	}
	return fmt.Sprintf("%d-%d", min, max)
}

// printSummary prints a table per process: calls, failures, codes, sizes.
func printSummary(w io.Writer, f *recording.File) {
	for _, p := range f.Processes {
		fmt.Fprintf(w, "%s, %d calls", processLabel(p), len(p.Calls))
		if !p.Complete {
			fmt.Fprintf(w, " (incomplete: %s)", lossText(p.Lost))
		}
		fmt.Fprintln(w)
		type agg struct {
			calls, failed, injected uint64
			minSize, maxSize        uint64
			codes                   map[string]uint64
		}
		byFn := map[string]*agg{}
		for _, c := range p.Calls {
			a, ok := byFn[c.Fn]
			if !ok {
				a = &agg{minSize: c.Size, maxSize: c.Size, codes: map[string]uint64{}}
				byFn[c.Fn] = a
			}
			a.calls++
			a.minSize = min(a.minSize, c.Size)
			a.maxSize = max(a.maxSize, c.Size)
			if c.Failed() {
				a.failed++
				a.codes[strconv.Itoa(c.Status)]++
				if c.Injected {
					a.injected++
				}
			}
		}
		t := tablewriter.NewWriter(w)
		t.Header("Function", "Calls", "Failed", "Injected", "Codes", "Sizes")
		for _, h := range hooks.Table {
			a, ok := byFn[h.Name]
			if !ok {
				continue
			}
			t.Append(h.Name, strconv.FormatUint(a.calls, 10), strconv.FormatUint(a.failed, 10),
				strconv.FormatUint(a.injected, 10), codesText(a.codes), sizeRange(a.minSize, a.maxSize))
		}
		t.Render()
	}
}
