package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
)

const ruleLong = `Fault rules choose which calls fail, and which are delayed. A rule is
a list of tokens; "rule add" takes them as flags, as arguments, or both:

  ucxfault rule add --hooks ucp_put_nbx --min-size 64K --max-faults 3
  ucxfault rule add hooks=ucp_put_nbx min-size=64K max-faults=3

The same text works in UCX_FAULT_RULES (rules separated by ';'), in
"ucxfault inject --rule", and over the socket. Tokens:

  hooks=LIST|all      hooks the rule covers (default: every faultable hook
                      that has the arguments the conditions look at)
  prob=P | pattern=XO how matched calls fail (default prob=100; with only a
                      delay and no codes, the rule only delays)
  codes=LIST          codes to fail with (default: the global codes)
  min-size=S max-size=S  transfer size bounds, inclusive (64K, 1M)
  endpoint=N          only the N-th endpoint the process used (from 0)
  calls=R             the hook's calls in each thread since the rule was
                      set, from 0: 3, 5.., ..50, 100..200, 100..200+10
  max-faults=N        act on at most N calls, over all threads
  after=D for=D       time window from the moment the rule is set, or
  from-start          from the process start
  delay=D|D..D        wait before the call (2ms, or uniform 1ms..5ms)

Per hook, the first rule that matches decides. A hook that a rule covers is
decided by rules alone; other hooks keep the global strategy. See
docs/rules.md.`

type ruleFlags struct {
	hooks, prob, pattern, codes, minSize, maxSize, endpoint string
	peer, calls, maxFaults, after, dur, delay               string
	fromStart                                               bool
}

// text turns the flags that were given into rule tokens, after args.
func (f *ruleFlags) text(c *cobra.Command, args []string) string {
	toks := append([]string(nil), args...)
	add := func(flag, key, value string) {
		if c.Flags().Changed(flag) {
			toks = append(toks, key+"="+value)
		}
	}
	add("hooks", "hooks", f.hooks)
	add("probability", "prob", f.prob)
	add("pattern", "pattern", f.pattern)
	add("codes", "codes", f.codes)
	add("min-size", "min-size", f.minSize)
	add("max-size", "max-size", f.maxSize)
	add("endpoint", "endpoint", f.endpoint)
	add("peer", "peer", f.peer)
	add("calls", "calls", f.calls)
	add("max-faults", "max-faults", f.maxFaults)
	add("after", "after", f.after)
	add("for", "for", f.dur)
	add("delay", "delay", f.delay)
	if f.fromStart {
		toks = append(toks, "from-start")
	}
	return strings.Join(toks, " ")
}

func newRuleCmd() *cobra.Command {
	rule := &cobra.Command{
		Use:   "rule add|list|del|clear|set",
		Short: "Choose which calls fail or are delayed: filters, call ranges, limits, windows",
		Long:  ruleLong,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("rule needs add, list, del, clear or set")
			}
			return usagef("rule %q: accepted: add, list, del, clear, set", args[0])
		},
	}
	var f ruleFlags
	add := &cobra.Command{
		Use:   "add [TOKENS...] [flags]",
		Short: "Add a rule after those that stand",
		Long:  ruleLong,
		Example: `  ucxfault rule add --hooks ucp_put_nbx --calls 100..200+10
  ucxfault rule add --hooks ucp_ep_flush_nbx --delay 1ms..5ms --after 10s --for 5s
  ucxfault rule add 'hooks=ucp_get_nbx prob=20 codes=-80 endpoint=1'`,
		RunE: func(c *cobra.Command, args []string) error {
			text := f.text(c, args)
			r, err := control.ParseRule(text)
			if err != nil {
				return err
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdRules,
				RuleOp: control.RuleOpAdd, Rules: []string{r.String()}})
		},
	}
	fl := add.Flags()
	fl.StringVar(&f.hooks, "hooks", "", "hooks the rule covers (default all that fit): "+strings.Join(hooks.Names(), ","))
	fl.StringVar(&f.prob, "probability", "", "fail matched calls with this probability in percent (default 100)")
	fl.StringVar(&f.pattern, "pattern", "", "fail matched calls by a repeating X/O pattern over the call numbers")
	fl.StringVar(&f.codes, "codes", "", "codes to fail with (default: the global codes); use --codes=-3,-6")
	fl.StringVar(&f.minSize, "min-size", "", "only transfers of at least this size (64K, 1M)")
	fl.StringVar(&f.maxSize, "max-size", "", "only transfers of at most this size")
	fl.StringVar(&f.endpoint, "endpoint", "", "only this endpoint (number from 0, in order of creation)")
	fl.StringVar(&f.peer, "peer", "", "only the endpoints of this peer, as status lists it (w:1a2b3c4d5e6f, 10.0.0.2:13337)")
	fl.StringVar(&f.calls, "calls", "", "only these calls of the hook: 3, 5.., ..50, 100..200+10")
	fl.StringVar(&f.maxFaults, "max-faults", "", "act on at most this many calls, then pass everything")
	fl.StringVar(&f.after, "after", "", "only after this time (10s), from now or the process start")
	fl.StringVar(&f.dur, "for", "", "only for this long once the window opens (5s)")
	fl.BoolVar(&f.fromStart, "from-start", false, "count --after from the process start instead of now")
	fl.StringVar(&f.delay, "delay", "", "wait this long before the call: 2ms, or uniform 1ms..5ms")

	set := &cobra.Command{
		Use:   "set 'RULE; RULE...'",
		Short: "Replace every rule with these (an empty text clears them)",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			rs, err := control.ParseRules(args[0])
			if err != nil {
				return err
			}
			texts := make([]string, len(rs))
			for i, r := range rs {
				texts[i] = r.String()
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdRules,
				RuleOp: control.RuleOpSet, Rules: texts})
		},
	}
	del := &cobra.Command{
		Use:   "del ID",
		Short: "Delete one rule (its ID as rule list shows it)",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil || id < 1 {
				return usagef("rule del %q: not a rule ID (accepted: 1, 2, ... as rule list shows)", args[0])
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdRules,
				RuleOp: control.RuleOpDel, RuleID: &id})
		},
	}
	clear := &cobra.Command{
		Use:   "clear",
		Short: "Delete every rule",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdRules,
				RuleOp: control.RuleOpClear})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the rules of each process, their state, and how often each matched, failed and delayed calls",
		Long: `Shows the rules of each process with their counters and state: active
(no time window), "opens in 7s", "open, 3s left", closed (its window
ended), "budget spent" (max-faults reached), or "injection off" (no rule
acts while injection is off). -o json prints one entry per process.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			statuses, err := collectStatus(c.ErrOrStderr(), false)
			now := time.Now()
			if format == formatJSON {
				type procRules struct {
					PID     int        `json:"pid"`
					Enabled bool       `json:"enabled"`
					Rules   []ruleView `json:"rules"`
					DelayNS uint64     `json:"delay_ns"`
				}
				out := []procRules{}
				for _, st := range statuses {
					out = append(out, procRules{PID: st.PID, Enabled: st.Enabled, Rules: ruleViews(st, now), DelayNS: st.DelayNS})
				}
				if len(statuses) == 0 && errors.Is(err, control.ErrNoProcess) {
					err = nil
				}
				if e := writeJSON(c.OutOrStdout(), out); e != nil {
					return e
				}
				return err
			}
			if err != nil && len(statuses) == 0 {
				return err
			}
			for _, st := range statuses {
				if e := renderRules(c.OutOrStdout(), st, now); e != nil {
					return e
				}
			}
			return err
		},
	}
	rule.AddCommand(add, list, del, clear, set)
	return rule
}

// ruleView is a rule's status with its state, as rule list shows it.
type ruleView struct {
	control.RuleStatus
	// State is active, "opens in 7s", "open, 3s left", closed, budget
	// spent, or injection off.
	State string `json:"state"`
}

func ruleViews(st control.Status, now time.Time) []ruleView {
	out := make([]ruleView, 0, len(st.Rules))
	for _, r := range st.Rules {
		out = append(out, ruleView{RuleStatus: r, State: ruleState(r, st, now)})
	}
	return out
}

// ruleState says whether the rule acts now: its budget (max-faults) and
// its time window, counted from when it was set or from the process start
// (read from /proc: the CLI runs on the process's machine).
func ruleState(rs control.RuleStatus, st control.Status, now time.Time) string {
	if !st.Enabled {
		return "injection off"
	}
	r, err := control.ParseRule(rs.Rule)
	if err != nil {
		return "?"
	}
	if r.MaxFaults > 0 {
		acted := rs.Faults
		if r.Strategy == control.StrategyNone {
			acted = rs.Delays
		}
		if acted >= r.MaxFaults {
			return "budget spent"
		}
	}
	if !r.Windowed() {
		return "active"
	}
	from := rs.SetAt
	if r.FromStart {
		t, err := proc.StartWall(st.PID)
		if err != nil {
			return "window from start"
		}
		from = t
	}
	open := from.Add(r.After)
	if now.Before(open) {
		return "opens in " + open.Sub(now).Round(time.Second).String()
	}
	if r.For == 0 {
		return "open"
	}
	end := open.Add(r.For)
	if !now.Before(end) {
		return "closed"
	}
	return "open, " + end.Sub(now).Round(time.Second).String() + " left"
}

func renderRules(w io.Writer, st control.Status, now time.Time) error {
	fmt.Fprintf(w, "pid %d: %s, delays added %v\n", st.PID, plural(len(st.Rules), "rule"), time.Duration(st.DelayNS).Round(time.Microsecond))
	if len(st.Rules) == 0 {
		return nil
	}
	if !st.Enabled {
		fmt.Fprintf(w, "pid %d: injection is off: no rule acts until it is on (ucxfault enable)\n", st.PID)
	}
	t := newTable(column{Name: "ID"}, column{Name: "Rule", Shrink: 1, Min: 20, Wrap: true}, column{Name: "State"},
		column{Name: "Matched"}, column{Name: "Failed"}, column{Name: "Delayed"})
	for _, r := range ruleViews(st, now) {
		delayed := count(r.Delays)
		if r.DelayNS > 0 {
			// How many calls, and the time that added.
			delayed += " (" + time.Duration(r.DelayNS).Round(time.Microsecond).String() + ")"
		}
		t.add(strconv.Itoa(r.ID), r.Rule, r.State, count(r.Matches), count(r.Faults), delayed)
	}
	if err := t.render(w, terminalWidth(w), true); err != nil {
		return err
	}
	for _, r := range st.Rules {
		// A draw on a poll of a request still in flight is counted as a
		// match but fails nothing (ucxf_rules_act: UCX fails a request
		// only once its operation completed), which a rule on polls
		// alone shows as many matches and few failures.
		var polls []string
		for _, name := range r.Hooks {
			if _, h, err := hooks.Lookup(name); err == nil && h.Polls {
				polls = append(polls, name)
			}
		}
		if len(polls) > 0 && r.Matches > r.Faults {
			fmt.Fprintf(w, "rule %d: its matches include polls (%s) of requests still in flight, which fail nothing: a poll fails only a request whose operation completed\n",
				r.ID, strings.Join(polls, ", "))
		}
	}
	return nil
}
