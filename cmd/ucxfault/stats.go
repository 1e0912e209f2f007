package main

import (
	"fmt"
	"strconv"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
)

func newStatsCmd() *cobra.Command {
	var detailed, bySize bool
	cmd := &cobra.Command{
		Use:   "stats [--detailed] [--group-by-size]",
		Short: "Aggregate the counters of all injected processes",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			statuses, err := collectStatus(c.ErrOrStderr(), true)
			if err != nil && len(statuses) == 0 {
				return err
			}
			out := c.OutOrStdout()
			type agg struct {
				calls, faults uint64
				codes         map[string]uint64
				sizes         map[uint64][2]uint64
			}
			byHook := map[string]*agg{}
			var order []string
			var calls, faults uint64
			for _, st := range statuses {
				for _, h := range st.Hooks {
					a, ok := byHook[h.Name]
					if !ok {
						a = &agg{codes: map[string]uint64{}, sizes: map[uint64][2]uint64{}}
						byHook[h.Name] = a
						order = append(order, h.Name)
					}
					a.calls += h.Calls
					a.faults += h.Faults
					for k, n := range h.FaultCodes {
						a.codes[k] += n
					}
					for _, b := range h.Sizes {
						v := a.sizes[b.Min]
						a.sizes[b.Min] = [2]uint64{v[0] + b.Calls, v[1] + b.Faults}
					}
				}
				calls += st.Calls
				faults += st.Faults
			}
			fmt.Fprintf(out, "%d processes, %d calls, %d faults\n", len(statuses), calls, faults)
			t := tablewriter.NewWriter(out)
			t.Header("Hook", "Calls", "Faults", "Fault rate", "Faults by code")
			for _, name := range order {
				a := byHook[name]
				rate := "-"
				if a.calls > 0 {
					rate = fmt.Sprintf("%.2f%%", 100*float64(a.faults)/float64(a.calls))
				}
				t.Append(name, strconv.FormatUint(a.calls, 10), strconv.FormatUint(a.faults, 10), rate, codesText(a.codes))
			}
			t.Render()
			if bySize {
				fmt.Fprintln(out, "\nBy transfer size (power-of-two buckets):")
				s := tablewriter.NewWriter(out)
				s.Header("Hook", "Size", "Calls", "Faults")
				for _, name := range order {
					a := byHook[name]
					for b := 0; b < 64; b++ {
						lo := control.BucketMin(b)
						v, ok := a.sizes[lo]
						if !ok {
							continue
						}
						s.Append(name, sizeBucketText(b), strconv.FormatUint(v[0], 10), strconv.FormatUint(v[1], 10))
					}
				}
				s.Render()
			}
			if detailed {
				renderStatus(out, statuses, true)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed", false, "also show each process")
	cmd.Flags().BoolVar(&bySize, "group-by-size", false, "count calls and faults by transfer size")
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
