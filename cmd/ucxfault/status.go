package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

func newStatusCmd() *cobra.Command {
	var detailed, endpoints bool
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the injected processes, their settings and counters",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q (accepted: table, json)", output)
			}
			statuses, err := collectStatus(c.ErrOrStderr(), detailed)
			if err != nil && len(statuses) == 0 {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if e := enc.Encode(statuses); e != nil {
					return fmt.Errorf("writing status: %w", e)
				}
			} else {
				renderStatus(c.OutOrStdout(), statuses, detailed)
				renderEndpoints(c.OutOrStdout(), statuses, endpoints)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed", false, "add a table of counters per hook")
	cmd.Flags().BoolVar(&endpoints, "endpoints", false, fmt.Sprintf("list every endpoint (by default the list is shown up to %d rows)", maxEndpointRows))
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// collectStatus asks every target for its status.
func collectStatus(stderr io.Writer, detailed bool) ([]control.Status, error) {
	if fileBackend() {
		dir, err := fileDir(false)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s (file backend)", control.ErrNoProcess, dir)
		} else if err != nil {
			return nil, err
		}
		states, removed, err := control.ReadStates(dir)
		for _, pid := range removed {
			fmt.Fprintf(stderr, "removed state file of dead process %d\n", pid)
		}
		for i := range states {
			states[i].User = userName(states[i].UID)
		}
		if err == nil && len(states) == 0 {
			err = fmt.Errorf("%w in %s (file backend)", control.ErrNoProcess, dir)
		}
		return states, err
	}
	results, err := sendAll(stderr, &control.Request{Cmd: control.CmdStatus, Detailed: detailed})
	var out []control.Status
	for _, r := range results {
		if r.Resp.Status != nil {
			st := *r.Resp.Status
			st.UID, st.User = r.UID, userName(r.UID)
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, err
}

// userName is the login name of uid, or the number when it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func commandName(cmd []string) string {
	if len(cmd) == 0 {
		return "?"
	}
	s := filepath.Base(cmd[0])
	if len(cmd) > 1 {
		s += " " + strings.Join(cmd[1:], " ")
	}
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

func strategySetting(st control.Status) string {
	s := strategyText(st)
	if st.Mode == control.ModeDeferred {
		s += " on completion"
	}
	return s
}

func strategyText(st control.Status) string {
	switch st.Strategy {
	case control.StrategyRandom:
		return fmt.Sprintf("random %.2f%%", st.Probability)
	case control.StrategyPattern:
		p := st.Pattern
		if len(p) > 24 {
			p = p[:21] + "..."
		}
		return "pattern " + p
	case control.StrategyReplay:
		return fmt.Sprintf("replay %d (%s)", st.ReplayLen, st.Replay)
	}
	return st.Strategy
}

func yesNo(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// hookState says whether a hook's calls are faulted: "on", "off", or
// "observed" for a function that is only counted and recorded, never
// failed (hooks.Hook.Faultable false), so that nobody expects it to fail.
func hookState(hs control.HookStatus) string {
	if _, h, err := hooks.Lookup(hs.Name); err == nil && !h.Faultable && hs.Enabled {
		return "observed"
	}
	return yesNo(hs.Enabled)
}

func rankText(r int) string {
	if r < 0 {
		return "-"
	}
	return strconv.Itoa(r)
}

func codesText(codes map[string]uint64) string {
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, _ := strconv.Atoi(keys[i])
		b, _ := strconv.Atoi(keys[j])
		return a > b
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		n, _ := strconv.Atoi(k)
		parts = append(parts, fmt.Sprintf("%s:%d", ucs.Status(n), codes[k]))
	}
	return strings.Join(parts, " ")
}

func renderStatus(w io.Writer, statuses []control.Status, detailed bool) {
	t := tablewriter.NewWriter(w)
	t.Header("PID", "Host", "Rank", "Command", "Injection", "Strategy", "Codes", "Seed", "Record", "Calls", "Faults")
	for _, st := range statuses {
		codes := make([]string, len(st.Codes))
		for i, c := range st.Codes {
			codes[i] = strconv.Itoa(c)
		}
		rec := yesNo(st.Recording)
		if st.Records > 0 || st.Recording {
			rec += fmt.Sprintf(" (%d)", st.Records)
		}
		t.Append(strconv.Itoa(st.PID), st.Host, rankText(st.Rank), commandName(st.Command), yesNo(st.Enabled),
			strategySetting(st), strings.Join(codes, ","), strconv.FormatUint(st.Seed, 10), rec,
			strconv.FormatUint(st.Calls, 10), strconv.FormatUint(st.Faults, 10))
	}
	t.Render()
	for _, st := range statuses {
		// Root sees every user's processes: say whose each one is.
		if st.UID != os.Geteuid() {
			fmt.Fprintf(w, "pid %d: user %s (uid %d)\n", st.PID, st.User, st.UID)
		}
		for _, warn := range st.Warnings {
			fmt.Fprintf(w, "pid %d: warning: %s\n", st.PID, warn)
		}
		for _, k := range st.Killed {
			fmt.Fprintf(w, "pid %d: endpoint %d killed (%d, %s)%s\n", st.PID, k.Endpoint, int(k.Code), k.Code,
				inflightNote(cmp.Or(k.InflightCode, ucs.Status(st.InflightCode)), k.Code))
		}
		if st.InflightCode != 0 {
			fmt.Fprintf(w, "pid %d: operations in flight at a kill complete with %d (%s)\n", st.PID, st.InflightCode,
				ucs.Status(st.InflightCode))
		}
		// One line per libucp copy: which UCX is under test.
		routed := map[string]uint64{}
		for _, c := range st.LibucpCopies {
			routed[c.Path] = c.Calls
		}
		for _, f := range st.Libucp {
			v := f.Version
			if v == "" {
				v = "(version unknown)"
			}
			line := fmt.Sprintf("pid %d: libucp %s %s", st.PID, v, f.Path)
			if n, ok := routed[f.Path]; ok {
				line += fmt.Sprintf(", %d calls routed to it", n)
				delete(routed, f.Path)
			}
			fmt.Fprintln(w, line)
		}
		for _, c := range st.LibucpCopies {
			if _, left := routed[c.Path]; left {
				fmt.Fprintf(w, "pid %d: %d calls routed to %s\n", st.PID, c.Calls, c.Path)
			}
		}
		if st.KilledRequests > 0 {
			fmt.Fprintf(w, "pid %d: %d requests in flight on killed endpoints completed with the kill's code\n", st.PID, st.KilledRequests)
		}
		if st.RecordsLost > 0 {
			// The log keeps the newest calls; record-dump sends all it
			// holds, whatever its size, so a larger log is only a matter
			// of memory (about 300 bytes per record in the process while it is dumped).
			fmt.Fprintf(w, "pid %d: the call log keeps the newest %d calls, %d older ones were overwritten (to keep more, start the program with a larger %s)\n",
				st.PID, st.Records, st.RecordsLost, control.EnvRecordCapacity)
		}
	}
	if !detailed {
		return
	}
	for _, st := range statuses {
		fmt.Fprintf(w, "\npid %d, %d threads:\n", st.PID, st.Threads)
		h := tablewriter.NewWriter(w)
		h.Header("Hook", "Enabled", "Calls", "Faults", "Since last fault", "Faults by code")
		for _, hs := range st.Hooks {
			h.Append(hs.Name, hookState(hs), strconv.FormatUint(hs.Calls, 10), strconv.FormatUint(hs.Faults, 10),
				strconv.FormatUint(hs.CallsSinceFault, 10), codesText(hs.FaultCodes))
		}
		h.Render()
	}
}

// maxEndpointRows is the longest endpoint table status shows without
// --endpoints: an MPI job has an endpoint per rank pair.
const maxEndpointRows = 32

// renderEndpoints prints each process's endpoints (number, state, calls,
// injected faults, peer) after the process table, or, past maxEndpointRows
// rows without all, how many there are.
func renderEndpoints(w io.Writer, statuses []control.Status, all bool) {
	rows, omitted := 0, 0
	for _, st := range statuses {
		rows += len(st.Endpoints)
		omitted += st.ClosedOmitted
	}
	if rows == 0 {
		return
	}
	if rows > maxEndpointRows && !all {
		fmt.Fprintf(w, "%d endpoints: ucxfault status --endpoints lists them\n", rows)
		return
	}
	t := tablewriter.NewWriter(w)
	t.Header("PID", "Endpoint", "State", "Calls", "Faults", "Peer")
	for _, st := range statuses {
		for _, ep := range st.Endpoints {
			state := ep.State
			if ep.Code != 0 {
				state += " " + strconv.Itoa(int(ep.Code))
			}
			peer := ep.Peer
			if peer == "" {
				peer = "-"
			}
			t.Append(strconv.Itoa(st.PID), strconv.Itoa(ep.Endpoint), state, strconv.FormatUint(ep.Calls, 10),
				strconv.FormatUint(ep.Faults, 10), peer)
		}
	}
	t.Render()
	if omitted > 0 {
		fmt.Fprintf(w, "%d older closed endpoints not listed (a status lists the newest %d closed endpoints of each process)\n",
			omitted, control.MaxClosedEndpoints)
	}
}

// inflightNote says what a kill's operations in flight completed with,
// when it is not the kill's code.
func inflightNote(inflight, code ucs.Status) string {
	if inflight == 0 || inflight == code {
		return ""
	}
	return fmt.Sprintf("; in flight: %d (%s)", int(inflight), inflight)
}
