package main

import (
	"cmp"
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
	"time"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/version"
	"github.com/ucxfault/ucxfault/ucs"
)

func newStatusCmd() *cobra.Command {
	var detailed, all, endpoints bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the injected processes, their settings and counters",
		Long: `Shows one row per injected process. -o wide adds the codes, the seed and
the injector's version; -o json prints everything (seeds as strings, so
that no JSON reader rounds them). --detailed adds a table of counters per
hook, of the hooks that were called (--all: every hook).

Exit status: 0 when every process answered, 1 when one did not (or none
was found; with -o json, none found is [] and 0), 2 on bad input.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			statuses, err := collectStatus(c.ErrOrStderr(), detailed)
			if format == formatJSON {
				if statuses == nil {
					statuses = []control.Status{}
				}
				if len(statuses) == 0 && errors.Is(err, control.ErrNoProcess) {
					err = nil // nothing found is an answer: []
				}
				if e := writeJSON(c.OutOrStdout(), statuses); e != nil {
					return e
				}
				return err
			}
			if err != nil && len(statuses) == 0 {
				return err
			}
			if e := renderStatus(c.OutOrStdout(), statuses, statusView{detailed: detailed, all: all, wide: format == formatWide}); e != nil {
				return e
			}
			if e := renderEndpoints(c.OutOrStdout(), statuses, endpoints); e != nil {
				return e
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed", false, "add a table of counters per hook")
	cmd.Flags().BoolVar(&all, "all", false, "with --detailed, show the hooks without calls too")
	cmd.Flags().BoolVar(&endpoints, "endpoints", false, fmt.Sprintf("list every endpoint (by default the list is shown up to %d rows)", maxEndpointRows))
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

// commandName is the program and its arguments, the program by its base
// name; the table shortens it to fit the terminal.
func commandName(cmd []string) string {
	if len(cmd) == 0 {
		return "?"
	}
	s := filepath.Base(cmd[0])
	if len(cmd) > 1 {
		s += " " + strings.Join(cmd[1:], " ")
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
		if st.ReplayLen == 0 && len(st.TimedKills) > 0 {
			return fmt.Sprintf("replay %s (%s)", plural(len(st.TimedKills), "timed kill"), st.Replay)
		}
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

// codesText renders fault counts by code, most frequent first, as
// "IO_ERROR 3, UNREACHABLE 1": the one way faults by code are written in
// every table (status, stats, record-dump, observe). The keys are codes in
// decimal ("-3"), as the protocol carries them.
func codesText(codes map[string]uint64) string {
	named := make(map[string]uint64, len(codes))
	for k, n := range codes {
		c, err := strconv.Atoi(k)
		if err != nil {
			named[k] += n
			continue
		}
		named[ucs.Status(c).String()] += n
	}
	return formatErrors(named)
}

// statusView says how much of the status to show.
type statusView struct {
	detailed, all, wide bool
}

func renderStatus(w io.Writer, statuses []control.Status, v statusView) error {
	width := terminalWidth(w)
	// The narrow table: what a person reads at a glance (injection off
	// is said in the strategy column); -o wide adds the rest.
	t := newTable(
		column{Name: "PID"}, column{Name: "Host", Wide: true}, column{Name: "Rank", HideEmpty: true},
		column{Name: "Command", Shrink: 1, Min: 12}, column{Name: "Injection", Wide: true},
		column{Name: "Strategy", Shrink: 2, Min: 12}, column{Name: "Rules", HideEmpty: true},
		column{Name: "Codes", Wide: true}, column{Name: "Seed", Wide: true},
		column{Name: "Record", HideEmpty: true}, column{Name: "Calls"}, column{Name: "Faults"},
		column{Name: "Injector", Wide: true})
	for _, st := range statuses {
		codes := make([]string, len(st.Codes))
		for i, c := range st.Codes {
			codes[i] = strconv.Itoa(c)
		}
		rec := yesNo(st.Recording)
		if st.Records > 0 || st.Recording {
			rec += fmt.Sprintf(" (%d)", st.Records)
		}
		strategy := strategySetting(st)
		if !st.Enabled && !v.wide {
			strategy = "off: " + strategy
		}
		t.add(strconv.Itoa(st.PID), st.Host, rankText(st.Rank), commandName(st.Command), yesNo(st.Enabled),
			strategy, count(uint64(len(st.Rules))), strings.Join(codes, ","), st.Seed.String(), rec,
			count(st.Calls), count(st.Faults), versionText(st.Version))
	}
	if err := t.render(w, width, v.wide); err != nil {
		return err
	}
	renderStatusNotes(w, statuses)
	if !v.detailed {
		return nil
	}
	for _, st := range statuses {
		fmt.Fprintf(w, "\npid %d, %s:\n", st.PID, plural(int(st.Threads), "thread"))
		if err := renderHooks(w, width, st.Hooks, v.all, v.wide); err != nil {
			return err
		}
	}
	return nil
}

// renderHooks prints one row per hook with calls (every hook with all),
// and a footer counting those left out; the calls since the last fault are
// in the wide table.
func renderHooks(w io.Writer, width int, list []control.HookStatus, all, wide bool) error {
	h := newTable(column{Name: "Hook"}, column{Name: "Enabled"}, column{Name: "Calls"}, column{Name: "Faults"},
		column{Name: "Since fault", Wide: true}, column{Name: "By code", Shrink: 1, Min: 12, Wrap: true})
	hidden := 0
	for _, hs := range list {
		if hs.Calls == 0 && !all {
			hidden++
			continue
		}
		faults, since := count(hs.Faults), count(hs.CallsSinceFault)
		if !faultable(hs.Name) {
			// Counted and recorded, never failed: n/a, not 0.
			faults, since = "n/a", "n/a"
		}
		h.add(hs.Name, hookState(hs), count(hs.Calls), faults, since, codesText(hs.FaultCodes))
	}
	if h.len() > 0 {
		if err := h.render(w, width, wide); err != nil {
			return err
		}
	}
	hiddenFooter(w, hidden, "hook")
	return nil
}

// faultable reports whether the hook named name can be made to fail.
func faultable(name string) bool {
	_, h, err := hooks.Lookup(name)
	return err != nil || h.Faultable
}

func versionText(v string) string {
	if v == "" {
		return "?" // an injector from before versions were reported
	}
	return v
}

// renderStatusNotes prints, under the table, what a row cannot hold:
// warnings, killed endpoints, the libucp copies, lost records, and an
// injector whose version is not the CLI's.
func renderStatusNotes(w io.Writer, statuses []control.Status) {
	for _, st := range statuses {
		// Root sees every user's processes: say whose each one is.
		if st.UID != os.Geteuid() {
			fmt.Fprintf(w, "pid %d: user %s (uid %d)\n", st.PID, st.User, st.UID)
		}
		if st.Version != "" && st.Version != version.String() {
			fmt.Fprintf(w, "pid %d: injector %s, this ucxfault is %s\n", st.PID, st.Version, version.String())
		}
		for _, warn := range st.Warnings {
			fmt.Fprintf(w, "pid %d: warning: %s\n", st.PID, warn)
		}
		for _, k := range st.Killed {
			fmt.Fprintf(w, "pid %d: endpoint %d killed (%d, %s)%s\n", st.PID, k.Endpoint, int(k.Code), k.Code,
				inflightNote(cmp.Or(k.InflightCode, ucs.Status(st.InflightCode)), k.Code))
		}
		for _, k := range st.TimedKills {
			fmt.Fprintf(w, "pid %d: replay kills endpoint %d with %d (%s) %v after its creation: %s\n", st.PID, k.Endpoint,
				int(k.Code), k.Code, time.Duration(k.AfterNS).Round(time.Microsecond), timedState(k))
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
				line += fmt.Sprintf(", %s routed to it", plural(int(n), "call"))
				delete(routed, f.Path)
			}
			fmt.Fprintln(w, line)
		}
		for _, c := range st.LibucpCopies {
			if _, left := routed[c.Path]; left {
				fmt.Fprintf(w, "pid %d: %s routed to %s\n", st.PID, plural(int(c.Calls), "call"), c.Path)
			}
		}
		if st.KilledRequests > 0 {
			fmt.Fprintf(w, "pid %d: %s in flight on killed endpoints completed with the kill's code or its in-flight code\n", st.PID,
				plural(int(st.KilledRequests), "request"))
		}
		if st.RecordsLost > 0 {
			// The log keeps the newest calls; record-dump sends all it
			// holds, whatever its size, so a larger log is only a matter
			// of memory (about 300 bytes per record in the process while it is dumped).
			fmt.Fprintf(w, "pid %d: the call log keeps the newest %d calls, %d older ones were overwritten (to keep more, start the program with a larger %s)\n",
				st.PID, st.Records, st.RecordsLost, control.EnvRecordCapacity)
		}
	}
}

// maxEndpointRows is the longest endpoint table status shows without
// --endpoints: an MPI job has an endpoint per rank pair.
const maxEndpointRows = 32

// renderEndpoints prints each process's endpoints (number, state, calls,
// injected faults, peer) after the process table, or, past maxEndpointRows
// rows without all, how many there are. The peer column is shortened to
// fit the terminal.
func renderEndpoints(w io.Writer, statuses []control.Status, all bool) error {
	rows, omitted := 0, 0
	for _, st := range statuses {
		rows += len(st.Endpoints)
		omitted += st.ClosedOmitted
	}
	if rows == 0 {
		return nil
	}
	if rows > maxEndpointRows && !all {
		fmt.Fprintf(w, "%d endpoints: ucxfault status --endpoints lists them\n", rows)
		return nil
	}
	t := newTable(column{Name: "PID"}, column{Name: "Endpoint"}, column{Name: "State"}, column{Name: "Calls"},
		column{Name: "Faults"}, column{Name: "Peer", Shrink: 1, Min: 12})
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
			t.add(strconv.Itoa(st.PID), strconv.Itoa(ep.Endpoint), state, count(ep.Calls), count(ep.Faults), peer)
		}
	}
	if err := t.render(w, terminalWidth(w), true); err != nil {
		return err
	}
	if omitted > 0 {
		fmt.Fprintf(w, "%d older closed endpoints not listed (a status lists the newest %d closed endpoints of each process)\n",
			omitted, control.MaxClosedEndpoints)
	}
	return nil
}

// inflightNote says what a kill's operations in flight completed with,
// when it is not the kill's code.
func inflightNote(inflight, code ucs.Status) string {
	if inflight == 0 || inflight == code {
		return ""
	}
	return fmt.Sprintf("; in flight: %d (%s)", int(inflight), inflight)
}

// timedState says where a replay's timed kill stands, for status.
func timedState(k control.TimedKillStatus) string {
	switch k.State {
	case control.TimedWaiting:
		return fmt.Sprintf("waiting for endpoint %d to be created", k.Endpoint)
	case control.TimedArmed:
		return "armed"
	case control.TimedFired:
		return fmt.Sprintf("fired %v after its creation", time.Duration(k.FiredAfterNS).Round(time.Microsecond))
	case control.TimedClosed:
		return "not fired: the endpoint was closed first"
	}
	return k.State
}
