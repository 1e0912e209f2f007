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
