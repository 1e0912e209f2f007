package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
	var file string
	var raw bool
	// runDump fetches every process's recording and prints it in kind
	// (summary, pattern, records), in the -o format.
	runDump := func(c *cobra.Command, kind string) error {
		format, file, err := legacyFileOutput(c, file)
		if err != nil {
			return err
		}
		if count < 0 {
			return usagef("--count %d: must be 0 (all) or more", count)
		}
		if fileBackend() {
			return usagef("record-dump needs the socket backend: the file backend carries no data back")
		}
		results, err := dumpAll(c.ErrOrStderr(), count)
		if err != nil && len(results) == 0 {
			if format == formatJSON && kind != "records" && file == "" {
				// A script reading stdout still gets a document.
				if e := writeJSON(c.OutOrStdout(), []any{}); e != nil {
					return e
				}
			}
			return err
		}
		f := recording.New(recording.SourceInjector)
		var empty []recording.Process
		for _, r := range results {
			if p := r.Resp.Recording; p != nil {
				// A process that recorded nothing (another program under
				// the injector, recording off) would only make replay
				// --from ask which process to take: it is left out, unless
				// no process recorded anything.
				if len(p.Calls) == 0 && len(p.EndpointEvents) == 0 && p.Complete {
					empty = append(empty, *p)
					continue
				}
				f.Processes = append(f.Processes, *p)
			}
		}
		if len(f.Processes) == 0 {
			if kind == "records" && file != "" && len(empty) > 0 {
				// A file of nothing would replace the recording a user
				// dumped before a reset or a replay.
				return fmt.Errorf("record-dump: no process has recorded anything since its last clear (record-toggle on, or inject --record); %s left as it is", file)
			}
			f.Processes = empty
		} else if len(empty) > 0 {
			fmt.Fprintf(c.ErrOrStderr(), "left out %s that recorded nothing\n", plural(len(empty), "process"))
		}
		sort.Slice(f.Processes, func(i, j int) bool {
			a, b := f.Processes[i], f.Processes[j]
			if a.Rank != b.Rank {
				return a.Rank < b.Rank
			}
			return a.PID < b.PID
		})
		out := c.OutOrStdout()
		if file != "" {
			if kind == "records" {
				if e := f.WriteFile(file); e != nil {
					return e
				}
				fmt.Fprintf(c.ErrOrStderr(), "wrote %s, %s to %s\n", plural(len(f.Processes), "process"),
					plural(totalCalls(f), "call"), file)
				return err
			}
			fh, e := recording.CreateOutput(file)
			if e != nil {
				return e
			}
			defer fh.Close()
			out = fh
		}
		var e error
		switch {
		case kind == "records":
			e = f.Write(out)
		case kind == "pattern" && format == formatJSON:
			e = writeJSON(out, patternJSON(f))
		case kind == "pattern":
			printPattern(out, f, raw, terminalWidth(out))
		case format == formatJSON:
			e = writeJSON(out, summaryJSON(f))
		default:
			e = printSummary(out, f, format == formatWide)
		}
		if e != nil {
			return e
		}
		return err
	}
	dump := &cobra.Command{
		Use:   "record-dump [summary|pattern|records]",
		Short: "Show the recorded calls: a summary table, the X/O pattern, or the recording file",
		Long: `summary (default) prints a table per function: calls, failures, codes, sizes.
pattern prints each function's outcomes as an X/O string (X = failed), runs
compressed (O x25 X O x13; --raw for the whole string), with the codes of
the failures. records writes the recording file (JSON, see
docs/recording-format.md) to --file FILE or to standard output. -o json
prints the summary and the pattern as JSON. Processes that recorded nothing
are left out.`,
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
		{"records", "The recording file (JSON, docs/recording-format.md), to --file FILE or standard output"},
	} {
		dump.AddCommand(&cobra.Command{
			Use:   f.name,
			Short: f.short,
			Args:  exactArgs(0),
			RunE:  func(c *cobra.Command, _ []string) error { return runDump(c, f.name) },
		})
	}
	dump.PersistentFlags().IntVar(&count, "count", 0, "only the newest N calls of each process (0 = all)")
	dump.PersistentFlags().StringVarP(&file, "file", "f", "", "write to FILE instead of standard output (-o FILE, the old spelling, still works)")
	dump.PersistentFlags().BoolVar(&raw, "raw", false, "pattern: the whole X/O string, runs not compressed")
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

// fnOutcomes is one function's outcomes in a process, in call order.
type fnOutcomes struct {
	fn      string
	pattern []byte   // 'X' failed, 'O' passed
	codes   []string // the failures' codes, in order
}

func outcomesOf(p recording.Process) []*fnOutcomes {
	byFn := map[string]*fnOutcomes{}
	var order []*fnOutcomes
	for _, c := range p.Calls {
		o, ok := byFn[c.Fn]
		if !ok {
			o = &fnOutcomes{fn: c.Fn}
			byFn[c.Fn] = o
			order = append(order, o)
		}
		if c.Failed() {
			o.pattern = append(o.pattern, 'X')
			o.codes = append(o.codes, strconv.Itoa(c.Status))
		} else {
			o.pattern = append(o.pattern, 'O')
		}
	}
	return order
}

// compressRuns writes runs of the same outcome as "O x25": "OOOXO" reads
// "O x3 X O"; a run of one is the letter alone.
func compressRuns(p []byte) string {
	var parts []string
	for i := 0; i < len(p); {
		j := i
		for j < len(p) && p[j] == p[i] {
			j++
		}
		if j-i == 1 {
			parts = append(parts, string(p[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%c x%d", p[i], j-i))
		}
		i = j
	}
	return strings.Join(parts, " ")
}

// compressCodes writes runs of the same code as "-3 x73": "-3,-3,-6"
// reads "-3 x2, -6".
func compressCodes(codes []string) string {
	var parts []string
	for i := 0; i < len(codes); {
		j := i
		for j < len(codes) && codes[j] == codes[i] {
			j++
		}
		if j-i == 1 {
			parts = append(parts, codes[i])
		} else {
			parts = append(parts, fmt.Sprintf("%s x%d", codes[i], j-i))
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

// wrapWords breaks text at spaces into lines of at most width columns
// (0: one line).
func wrapWords(text string, width int) []string {
	if width <= 0 || len(text) <= width {
		return []string{text}
	}
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// printPattern prints, per process and function, the outcomes as X/O: runs
// compressed and wrapped at the terminal width, or the raw string.
func printPattern(w io.Writer, f *recording.File, raw bool, width int) {
	const indent = 2 + 26 + 1
	for _, p := range f.Processes {
		fmt.Fprintf(w, "%s:\n", processLabel(p))
		if !p.Complete {
			fmt.Fprintf(w, "  incomplete: %s\n", lossText(p.Lost))
		}
		for _, o := range outcomesOf(p) {
			if raw {
				fmt.Fprintf(w, "  %-26s %s\n", o.fn, o.pattern)
			} else {
				for i, line := range wrapWords(compressRuns(o.pattern), max(width-indent, 0)) {
					label := ""
					if i == 0 {
						label = o.fn
					}
					fmt.Fprintf(w, "  %-26s %s\n", label, line)
				}
			}
			if len(o.codes) == 0 {
				continue
			}
			if raw {
				fmt.Fprintf(w, "  %-26s codes %s\n", "", strings.Join(o.codes, ","))
				continue
			}
			for i, line := range wrapWords(compressCodes(o.codes), max(width-indent-6, 0)) {
				label := "      "
				if i == 0 {
					label = "codes "
				}
				fmt.Fprintf(w, "  %-26s %s%s\n", "", label, line)
			}
		}
	}
}

// patternJSON is record-dump pattern -o json: per process, per function,
// the raw X/O string and the failures' codes.
func patternJSON(f *recording.File) any {
	type fnPattern struct {
		Fn      string `json:"fn"`
		Pattern string `json:"pattern"`
		Codes   []int  `json:"codes"`
	}
	type procPattern struct {
		PID       int         `json:"pid"`
		Rank      int         `json:"rank"`
		Host      string      `json:"host"`
		Complete  bool        `json:"complete"`
		Functions []fnPattern `json:"functions"`
	}
	out := []procPattern{}
	for _, p := range f.Processes {
		pp := procPattern{PID: p.PID, Rank: p.Rank, Host: p.Host, Complete: p.Complete, Functions: []fnPattern{}}
		for _, o := range outcomesOf(p) {
			codes := make([]int, 0, len(o.codes))
			for _, c := range o.codes {
				n, _ := strconv.Atoi(c)
				codes = append(codes, n)
			}
			pp.Functions = append(pp.Functions, fnPattern{Fn: o.fn, Pattern: string(o.pattern), Codes: codes})
		}
		out = append(out, pp)
	}
	return out
}

// sizeRange renders the smallest and largest size of a function's calls.
func sizeRange(min, max uint64) string {
	if min == max {
		return strconv.FormatUint(min, 10)
	}
	return fmt.Sprintf("%d-%d", min, max)
}

// fnSummary is one function's recorded calls in a process.
type fnSummary struct {
	Fn       string `json:"fn"`
	Calls    uint64 `json:"calls"`
	Failed   uint64 `json:"failed"`
	Injected uint64 `json:"injected"`
	// Codes counts failures by code, keyed by the code in decimal.
	Codes   map[string]uint64 `json:"codes"`
	MinSize uint64            `json:"min_size"`
	MaxSize uint64            `json:"max_size"`
}

// procSummary is record-dump summary -o json, one per process.
type procSummary struct {
	PID       int            `json:"pid"`
	Rank      int            `json:"rank"`
	Host      string         `json:"host"`
	Calls     int            `json:"calls"`
	Complete  bool           `json:"complete"`
	Lost      recording.Lost `json:"lost"`
	Functions []fnSummary    `json:"functions"`
}

func summarize(p recording.Process) procSummary {
	byFn := map[string]*fnSummary{}
	for _, c := range p.Calls {
		a, ok := byFn[c.Fn]
		if !ok {
			a = &fnSummary{Fn: c.Fn, MinSize: c.Size, MaxSize: c.Size, Codes: map[string]uint64{}}
			byFn[c.Fn] = a
		}
		a.Calls++
		a.MinSize = min(a.MinSize, c.Size)
		a.MaxSize = max(a.MaxSize, c.Size)
		if c.Failed() {
			a.Failed++
			a.Codes[strconv.Itoa(c.Status)]++
			if c.Injected {
				a.Injected++
			}
		}
	}
	s := procSummary{PID: p.PID, Rank: p.Rank, Host: p.Host, Calls: len(p.Calls), Complete: p.Complete, Lost: p.Lost, Functions: []fnSummary{}}
	// In the hook table's order, then any other function.
	for _, h := range hooks.Table {
		if a, ok := byFn[h.Name]; ok {
			s.Functions = append(s.Functions, *a)
			delete(byFn, h.Name)
		}
	}
	rest := make([]string, 0, len(byFn))
	for fn := range byFn {
		rest = append(rest, fn)
	}
	sort.Strings(rest)
	for _, fn := range rest {
		s.Functions = append(s.Functions, *byFn[fn])
	}
	return s
}

func summaryJSON(f *recording.File) []procSummary {
	out := make([]procSummary, 0, len(f.Processes))
	for _, p := range f.Processes {
		out = append(out, summarize(p))
	}
	return out
}

// printSummary prints a table per process: calls, failures, codes, sizes.
func printSummary(w io.Writer, f *recording.File, wide bool) error {
	for _, p := range f.Processes {
		s := summarize(p)
		fmt.Fprintf(w, "%s, %s", processLabel(p), plural(s.Calls, "call"))
		if !p.Complete {
			fmt.Fprintf(w, " (incomplete: %s)", lossText(p.Lost))
		}
		fmt.Fprintln(w)
		t := newTable(column{Name: "Function"}, column{Name: "Calls"}, column{Name: "Failed"}, column{Name: "Injected"},
			column{Name: "By code", Shrink: 1, Min: 12, Wrap: true}, column{Name: "Sizes"})
		for _, a := range s.Functions {
			t.add(a.Fn, count(a.Calls), count(a.Failed), count(a.Injected), codesText(a.Codes), sizeRange(a.MinSize, a.MaxSize))
		}
		if err := t.render(w, terminalWidth(w), wide); err != nil {
			return err
		}
	}
	return nil
}
