package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
)

// hookStats is one hook's counters summed over every process, as stats -o
// json writes them.
type hookStats struct {
	Name   string `json:"name"`
	Calls  uint64 `json:"calls"`
	Faults uint64 `json:"faults"`
	// Faultable is false for hooks that are counted but never failed.
	Faultable bool `json:"faultable"`
	// FaultCodes counts faults by code, keyed by the code in decimal.
	FaultCodes map[string]uint64    `json:"fault_codes"`
	Sizes      []control.SizeBucket `json:"sizes"`
}

// statsReport is stats -o json: the totals, then one entry per hook (every
// hook, with or without calls, in the hook table's order).
type statsReport struct {
	Processes int         `json:"processes"`
	Calls     uint64      `json:"calls"`
	Faults    uint64      `json:"faults"`
	Hooks     []hookStats `json:"hooks"`
}

// aggregate sums the counters of statuses by hook.
func aggregate(statuses []control.Status) statsReport {
	r := statsReport{Processes: len(statuses), Hooks: []hookStats{}}
	byHook := map[string]int{}
	for _, h := range hooks.Table {
		byHook[h.Name] = len(r.Hooks)
		r.Hooks = append(r.Hooks, hookStats{Name: h.Name, Faultable: h.Faultable, FaultCodes: map[string]uint64{}, Sizes: []control.SizeBucket{}})
	}
	for _, st := range statuses {
		for _, h := range st.Hooks {
			i, ok := byHook[h.Name]
			if !ok { // a hook this CLI does not know (another build)
				i = len(r.Hooks)
				byHook[h.Name] = i
				r.Hooks = append(r.Hooks, hookStats{Name: h.Name, Faultable: true, FaultCodes: map[string]uint64{}, Sizes: []control.SizeBucket{}})
			}
			a := &r.Hooks[i]
			a.Calls += h.Calls
			a.Faults += h.Faults
			for k, n := range h.FaultCodes {
				a.FaultCodes[k] += n
			}
			for _, b := range h.Sizes {
				merged := false
				for j := range a.Sizes {
					if a.Sizes[j].Min == b.Min {
						a.Sizes[j].Calls += b.Calls
						a.Sizes[j].Faults += b.Faults
						merged = true
					}
				}
				if !merged {
					a.Sizes = append(a.Sizes, b)
				}
			}
		}
		r.Calls += st.Calls
		r.Faults += st.Faults
	}
	return r
}

func newStatsCmd() *cobra.Command {
	var detailed, bySize, all bool
	cmd := &cobra.Command{
		Use:   "stats [--detailed] [--group-by-size] [--all]",
		Short: "Aggregate the counters of all injected processes",
		Long: `Sums the counters of every injected process by hook. Hooks without calls
are left out (--all shows them); "-" is a count of zero, "n/a" the faults
of a hook that is counted but never failed. -o json prints the totals and
every hook.

Exit status: 0 when every process answered, 1 when one did not (or none
was found; with -o json, none found is reported as 0 processes), 2 on bad
input.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			statuses, err := collectStatus(c.ErrOrStderr(), true)
			out := c.OutOrStdout()
			if format == formatJSON {
				if len(statuses) == 0 && errors.Is(err, control.ErrNoProcess) {
					err = nil
				}
				if e := writeJSON(out, aggregate(statuses)); e != nil {
					return e
				}
				return err
			}
			if err != nil && len(statuses) == 0 {
				return err
			}
			if e := renderStats(out, statuses, statsView{detailed: detailed, bySize: bySize, all: all, wide: format == formatWide}); e != nil {
				return e
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed", false, "also show each process")
	cmd.Flags().BoolVar(&bySize, "group-by-size", false, "count calls and faults by transfer size")
	cmd.Flags().BoolVar(&all, "all", false, "show the hooks without calls too")
	return cmd
}

// sizeBucketText renders bucket b as a half-open size range: 0, [1K,2K).
func sizeBucketText(b int) string {
	if b == 0 {
		return "0"
	}
	lo := control.BucketMin(b)
	return "[" + humanSize(lo) + "," + humanSize(2*lo) + ")"
}

func humanSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return strconv.FormatUint(n, 10)
}

// statsView says how much of stats to show.
type statsView struct {
	detailed, bySize, all, wide bool
}

// renderStats prints the totals and a table of the hooks with calls (all
// with v.all), by size with v.bySize, and each process with v.detailed.
func renderStats(out io.Writer, statuses []control.Status, v statsView) error {
	r := aggregate(statuses)
	width := terminalWidth(out)
	fmt.Fprintf(out, "%s, %s, %s\n", plural(r.Processes, "process"),
		plural(int(r.Calls), "call"), plural(int(r.Faults), "fault"))
	t := newTable(column{Name: "Hook"}, column{Name: "Calls"}, column{Name: "Faults"}, column{Name: "Fault rate"},
		column{Name: "By code", Shrink: 1, Min: 12, Wrap: true})
	hidden := 0
	for _, a := range r.Hooks {
		if a.Calls == 0 && !v.all {
			hidden++
			continue
		}
		faults, rate := count(a.Faults), "-"
		if a.Calls > 0 && a.Faults > 0 {
			rate = fmt.Sprintf("%.2f%%", 100*float64(a.Faults)/float64(a.Calls))
		}
		if !a.Faultable {
			faults, rate = "n/a", "n/a"
		}
		t.add(a.Name, count(a.Calls), faults, rate, codesText(a.FaultCodes))
	}
	if t.len() > 0 {
		if e := t.render(out, width, v.wide); e != nil {
			return e
		}
	}
	hiddenFooter(out, hidden, "hook")
	if v.bySize {
		fmt.Fprintln(out, "\nBy transfer size (power-of-two buckets):")
		s := newTable(column{Name: "Hook"}, column{Name: "Size"}, column{Name: "Calls"}, column{Name: "Faults"})
		for _, a := range r.Hooks {
			for b := 0; b < 64; b++ {
				lo := control.BucketMin(b)
				for _, bucket := range a.Sizes {
					if bucket.Min == lo {
						s.add(a.Name, sizeBucketText(b), count(bucket.Calls), count(bucket.Faults))
					}
				}
			}
		}
		if e := s.render(out, width, true); e != nil {
			return e
		}
	}
	if v.detailed {
		if e := renderStatus(out, statuses, statusView{detailed: true, all: v.all, wide: v.wide}); e != nil {
			return e
		}
	}
	return nil
}
