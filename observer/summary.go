package observer

import (
	"sort"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// FuncSummary sums up the calls of one function.
type FuncSummary struct {
	// Fn is the libucp function.
	Fn string
	// Calls counts its application calls.
	Calls uint64
	// Errors counts the failed calls by status name (ENDPOINT_TIMEOUT).
	Errors map[string]uint64
	// P50, P99 and Max are the call durations (the call itself, not its
	// completion) measured in the kernel from entry to return; zero when
	// no call has a duration.
	P50, P99, Max time.Duration
}

// Failed returns the number of failed calls.
func (f FuncSummary) Failed() uint64 {
	var n uint64
	for _, c := range f.Errors {
		n += c
	}
	return n
}

// Summarize returns one FuncSummary per function that has calls in p, in
// hooks.Table order.
func Summarize(p *recording.Process) []FuncSummary {
	byFn := map[string]*FuncSummary{}
	durs := map[string][]uint64{}
	for _, c := range p.Calls {
		s := byFn[c.Fn]
		if s == nil {
			s = &FuncSummary{Fn: c.Fn, Errors: map[string]uint64{}}
			byFn[c.Fn] = s
		}
		s.Calls++
		if c.Failed() {
			s.Errors[ucs.Status(c.Status).String()]++
		}
		if c.DurationNS > 0 {
			durs[c.Fn] = append(durs[c.Fn], c.DurationNS)
		}
	}
	rank := func(fn string) int {
		if id, _, err := hooks.Lookup(fn); err == nil {
			return int(id)
		}
		return len(hooks.Table)
	}
	out := make([]FuncSummary, 0, len(byFn))
	for fn, s := range byFn {
		d := durs[fn]
		if len(d) > 0 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			s.P50 = time.Duration(percentile(d, 50))
			s.P99 = time.Duration(percentile(d, 99))
			s.Max = time.Duration(d[len(d)-1])
		}
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := rank(out[i].Fn), rank(out[j].Fn)
		if ri != rj {
			return ri < rj
		}
		return out[i].Fn < out[j].Fn
	})
	return out
}

// percentile returns the nearest-rank p-th percentile of sorted.
func percentile(sorted []uint64, p int) uint64 {
	if len(sorted) == 0 {
		return 0
	}
	k := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	if k < 1 {
		k = 1
	}
	return sorted[k-1]
}

// Summary is what `ucxfault observe -o json` prints: per process, the
// functions that were called, and the same over every process.
type Summary struct {
	Processes []ProcessSummary `json:"processes"`
	Total     ProcessSummary   `json:"total"`
}

// ProcessSummary sums up one process (or, as Summary.Total, every process:
// PID 0, rank -1).
type ProcessSummary struct {
	PID      int    `json:"pid"`
	Rank     int    `json:"rank"`
	Command  string `json:"command,omitempty"`
	Calls    uint64 `json:"calls"`
	Errors   uint64 `json:"errors"`
	Lost     uint64 `json:"lost"`
	Internal uint64 `json:"internal"`
	Complete bool   `json:"complete"`
	// Functions holds only the functions that were called.
	Functions []FuncJSON `json:"functions"`
}

// FuncJSON is FuncSummary as JSON: durations in nanoseconds.
type FuncJSON struct {
	Fn     string            `json:"fn"`
	Calls  uint64            `json:"calls"`
	Errors map[string]uint64 `json:"errors,omitempty"`
	P50NS  int64             `json:"p50_ns"`
	P99NS  int64             `json:"p99_ns"`
	MaxNS  int64             `json:"max_ns"`
}

func funcsJSON(p *recording.Process) []FuncJSON {
	return toJSON(Summarize(p))
}

func toJSON(sums []FuncSummary) []FuncJSON {
	out := []FuncJSON{}
	for _, s := range sums {
		j := FuncJSON{Fn: s.Fn, Calls: s.Calls, P50NS: s.P50.Nanoseconds(), P99NS: s.P99.Nanoseconds(), MaxNS: s.Max.Nanoseconds()}
		if len(s.Errors) > 0 {
			j.Errors = s.Errors
		}
		out = append(out, j)
	}
	return out
}

// Summarise returns the summary of a recording the observer made, with the
// counters Node.Stop returned (stats[i] for f.Processes[i]; missing ones
// count nothing internal). In flight mode (stats[i].Functions set) the
// calls are counted from the stats, the recording holding only a window.
func Summarise(f *recording.File, stats []ProcessStats) Summary {
	s := Summary{Processes: []ProcessSummary{}, Total: ProcessSummary{Rank: -1, Complete: true}}
	all := &recording.Process{}
	flight := false
	for i := range f.Processes {
		p := &f.Processes[i]
		ps := ProcessSummary{PID: p.PID, Rank: p.Rank, Calls: uint64(len(p.Calls)), Complete: p.Complete,
			Lost: p.Lost.DroppedEvents + p.Lost.UnmatchedEntries + p.Lost.UnmatchedReturns, Functions: funcsJSON(p)}
		if len(p.Command) > 0 {
			ps.Command = p.Command[0]
		}
		for _, c := range p.Calls {
			if c.Failed() {
				ps.Errors++
			}
		}
		if i < len(stats) {
			ps.Internal = stats[i].Internal
			if fs := stats[i].Functions; fs != nil {
				flight = true
				ps.Calls, ps.Errors, ps.Functions = stats[i].Calls, 0, toJSON(fs)
				for _, f := range fs {
					ps.Errors += f.Failed()
				}
			}
		}
		s.Processes = append(s.Processes, ps)
		s.Total.Calls += ps.Calls
		s.Total.Errors += ps.Errors
		s.Total.Lost += ps.Lost
		s.Total.Internal += ps.Internal
		s.Total.Complete = s.Total.Complete && ps.Complete
		all.Calls = append(all.Calls, p.Calls...)
	}
	s.Total.Functions = funcsJSON(all)
	if flight {
		s.Total.Functions = sumFunctions(s.Processes)
	}
	return s
}

// sumFunctions adds up the processes' functions by name, in hooks.Table
// order (flight mode: counts, no durations).
func sumFunctions(ps []ProcessSummary) []FuncJSON {
	by := map[string]*FuncJSON{}
	for _, p := range ps {
		for _, f := range p.Functions {
			t := by[f.Fn]
			if t == nil {
				t = &FuncJSON{Fn: f.Fn}
				by[f.Fn] = t
			}
			t.Calls += f.Calls
			for k, v := range f.Errors {
				if t.Errors == nil {
					t.Errors = map[string]uint64{}
				}
				t.Errors[k] += v
			}
		}
	}
	out := []FuncJSON{}
	for _, h := range hooks.Table {
		if f := by[h.Name]; f != nil {
			out = append(out, *f)
		}
	}
	return out
}
