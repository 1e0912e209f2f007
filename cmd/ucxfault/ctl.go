package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// simpleControl is a command that takes no argument and sends one request.
// killTarget reads kill-ep's argument: an endpoint number, or a peer
// (anything that is not a number and reads as a peer name).
func killTarget(arg string) (*control.Request, error) {
	if ep, err := strconv.Atoi(arg); err == nil {
		if ep < 0 {
			return nil, usagef("kill-ep %q: want an endpoint number from 0, or a peer as status lists it", arg)
		}
		return &control.Request{Cmd: control.CmdKillEP, Endpoint: &ep}, nil
	}
	peer, err := control.CheckPeer(arg)
	if err != nil {
		return nil, usagef("kill-ep %q: want an endpoint number from 0, or a peer as status lists it: %v", arg, err)
	}
	return &control.Request{Cmd: control.CmdKillEP, Peer: peer}, nil
}

func simpleControl(use, short, cmd string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: cmd})
		},
	}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), got %d (usage: %s)", c.Name(), n, len(args), c.UseLine())
		}
		return nil
	}
}

func newControlCmds() []*cobra.Command {
	probability := &cobra.Command{
		Use:   "probability PERCENT",
		Short: "Fail calls at random with this probability (0 to 100, resolution 0.01)",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := control.ParseProbability(args[0])
			if err != nil {
				return err
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdProbability, Probability: &p})
		},
	}
	codes := &cobra.Command{
		Use:   "error-codes LIST",
		Short: "Codes to fail with, e.g. -- -3,-6,-20 or IO_ERROR,UNREACHABLE",
		Long: `Sets the UCX error codes faults are drawn from. Codes are numbers from -1
to -100 or names (IO_ERROR or UCS_ERR_IO_ERROR). Put -- before a list that
starts with a minus sign: ucxfault error-codes -- -3,-6,-20`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			list, err := control.ParseCodes(args[0])
			if err != nil {
				return err
			}
			ints := make([]int, len(list))
			for i, s := range list {
				ints[i] = int(s)
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdCodes, Codes: ints})
		},
	}
	pattern := &cobra.Command{
		Use:   "pattern XO...",
		Short: "Fail calls by a repeating pattern (X = fail, O = pass), per hook",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := control.CheckPattern(args[0])
			if err != nil {
				return err
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdPattern, Pattern: &p})
		},
	}
	seed := &cobra.Command{
		Use:   "seed N",
		Short: "Seed random faults: the same calls fail in the same places, run after run",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 0, 64)
			if err != nil {
				return usagef("seed %q is not an unsigned 64-bit integer", args[0])
			}
			seed := control.Seed(n)
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdSeed, Seed: &seed})
		},
	}
	strategy := &cobra.Command{
		Use:   "strategy random|pattern|none",
		Short: "Switch between the random and pattern strategies already set",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := control.ParseStrategy(args[0])
			if err != nil {
				return err
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdStrategy, Strategy: &s})
		},
	}
	mode := &cobra.Command{
		Use:   "mode immediate|deferred",
		Short: "Fail calls at once, or let operations run and fail them on completion",
		Long: `immediate (default): a faulted call returns the error itself.
deferred: the operation really runs and completes with the error: the
application's callback gets it (from ucp_worker_progress, as UCX delivers
completions) and so do ucp_request_check_status and ucp_request_test. This
works for the nbx calls that take a ucp_request_param_t; others fail at once.
A real error wins over an injected one.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			m, err := control.ParseMode(args[0])
			if err != nil {
				return err
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdMode, Mode: &m})
		},
	}
	inflight := &cobra.Command{
		Use:   "inflight-code CODE|default",
		Short: "What operations in flight at a kill complete with (default: the kill's code)",
		Long: `When an endpoint is killed (kill-ep, a rule's kill-ep, a replayed failure),
the operations in flight on it complete with CODE while its error handler
and every later call get the kill's code, as UCX on InfiniBand purges them
with -16 (CANCELED). "default" goes back to the kill's code. A kill's own
--inflight-code, or a rule's inflight-code=, wins.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			n := 0
			if strings.ToLower(strings.TrimSpace(args[0])) != "default" {
				code, err := control.ParseInflightCode(args[0])
				if err != nil {
					return err
				}
				n = int(code)
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdInflight, Code: &n})
		},
	}
	var killCode, killInflight string
	killEP := &cobra.Command{
		Use:   "kill-ep ENDPOINT|PEER [--code CODE]",
		Short: "Kill an endpoint, or every endpoint of a peer, as if the peer died (-80 up to UCX 1.13, -25 from 1.14, as a dead TCP peer)",
		Long: `Endpoints are numbered from 0 in order of creation (or of first use, for
endpoints created before the injector saw them). A PEER, as status lists it
(w:1a2b3c4d5e6f for an endpoint made from a worker address, IP:port for a
client or server endpoint), kills every open endpoint of that peer; choose the
process with --pid or --rank. From the kill on, as UCX does when a peer dies:
the endpoint's error handler is called once, from ucp_worker_progress, with
the code (by default the one the process's libucp reports for a dead TCP
peer: -80 ENDPOINT_TIMEOUT up to 1.13, -25 CONNECTION_RESET from 1.14 on);
every later operation on the endpoint fails at once with it. Other endpoints
keep working. A killed endpoint stays dead, even across reset.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			req, err := killTarget(args[0])
			if err != nil {
				return err
			}
			if killCode != "" {
				code, err := ucs.Parse(killCode)
				if err != nil {
					return usageError{err}
				}
				n := int(code)
				req.Code = &n
			}
			if killInflight != "" {
				code, err := control.ParseInflightCode(killInflight)
				if err != nil {
					return err
				}
				n := int(code)
				req.InflightCode = &n
			}
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), req)
		},
	}
	killEP.Flags().StringVar(&killInflight, "inflight-code", "", "what operations in flight on the endpoint complete with (default: inflight-code's setting, else the kill's code; only requests posted after an in-flight code was set are followed, and in deferred mode those of the hooks injected into: set it beforehand with inflight-code)")
	killEP.Flags().StringVar(&killCode, "code", "", "the code the endpoint fails with (default: the process's libucp's for a dead TCP peer)")
	return []*cobra.Command{
		mode, killEP, inflight,
		simpleControl("toggle", "Switch injection on or off", control.CmdToggle),
		simpleControl("enable", "Switch injection on", control.CmdEnable),
		simpleControl("disable", "Switch injection off (hooks cost one load and a branch)", control.CmdDisable),
		simpleControl("reset", "Injection off, default settings, counters and records cleared", control.CmdReset),
		probability, codes, pattern, seed, strategy, newHookCmd(),
	}
}

func newHookCmd() *cobra.Command {
	hook := &cobra.Command{
		Use:   "hook enable|disable|list",
		Short: "Switch hooks on or off, or list them",
		Long: `Switches single hooks: ucxfault hook disable ucp_get_nbx,ucp_ep_flush_nbx
Names may omit the ucp_ prefix. "all" names every hook. "hook list" prints
the hook table (Since: the first UCX release that has the function, 1.13
for those every supported release has), then, for each injected process,
the hooks its libucp does not export.`,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("hook needs enable, disable or list")
			}
			return usagef("hook %q: accepted: enable, disable, list", args[0])
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the hook table and, per injected process, the hooks its libucp lacks",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			if format == formatJSON {
				return writeJSON(c.OutOrStdout(), hookListJSON(c.ErrOrStderr()))
			}
			if err := renderHookTable(c.OutOrStdout(), format == formatWide); err != nil {
				return err
			}
			return listMissingHooks(c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	hook.AddCommand(list, hookSwitch("enable", "Let these hooks inject faults", true),
		hookSwitch("disable", "Stop these hooks injecting faults (they still count calls)", false))
	return hook
}

// hookSwitch is "hook enable" or "hook disable": the names are checked
// here, before anything is sent, so a typo is a usage error.
func hookSwitch(name, short string, on bool) *cobra.Command {
	return &cobra.Command{
		Use:   name + " NAMES|all",
		Short: short,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("hook %s needs a list of hook names or all", name)
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := hooks.ParseFaultList(args[0]); err != nil {
				return usageError{err}
			}
			on := on
			return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdHooks,
				Hooks: strings.Split(args[0], ","), On: &on})
		},
	}
}

// faultKind says whether a hook can fail: faultable, opt-in (fails only
// when named), or observed only (counted and recorded, never failed).
func faultKind(h *hooks.Hook) string {
	switch {
	case !h.Faultable:
		return "observed only"
	case h.OptIn:
		return "opt-in"
	}
	return "faultable"
}

func since(h *hooks.Hook) string {
	if h.Since == "" {
		return "1.13"
	}
	return h.Since
}

// renderHookTable prints the hook table: name, return type, whether it can
// fail (faultable, opt-in, or observed only), the first UCX release that has
// it, and what it does (the summary is shortened to fit the terminal; the
// return type is in -o wide).
func renderHookTable(w io.Writer, wide bool) error {
	t := newTable(column{Name: "Hook"}, column{Name: "Returns", Wide: true}, column{Name: "Faults"}, column{Name: "Since"},
		column{Name: "Summary", Shrink: 1, Min: 16, Wrap: true})
	for i := range hooks.Table {
		h := &hooks.Table[i]
		t.add(h.Name, h.Return.String(), faultKind(h), since(h), h.Summary)
	}
	return t.render(w, terminalWidth(w), wide)
}

// hookEntry is one hook in hook list -o json.
type hookEntry struct {
	Name    string `json:"name"`
	Returns string `json:"returns"`
	Faults  string `json:"faults"`
	Since   string `json:"since"`
	Summary string `json:"summary"`
}

// processHooks is one injected process in hook list -o json: its libucp
// versions and the hooks its libucp does not export.
type processHooks struct {
	PID     int      `json:"pid"`
	Libucp  []string `json:"libucp"`
	Missing []string `json:"missing"`
}

func hookListJSON(stderr io.Writer) any {
	out := struct {
		Hooks     []hookEntry    `json:"hooks"`
		Processes []processHooks `json:"processes"`
	}{Hooks: []hookEntry{}, Processes: []processHooks{}}
	for i := range hooks.Table {
		h := &hooks.Table[i]
		out.Hooks = append(out.Hooks, hookEntry{h.Name, h.Return.String(), faultKind(h), since(h), h.Summary})
	}
	if fileBackend() {
		return out
	}
	list, err := findTargets(io.Discard)
	if err != nil {
		return out
	}
	for _, r := range control.Broadcast(list, &control.Request{Cmd: control.CmdStatus}, global.timeout) {
		if r.Err != nil || r.Resp.Status == nil {
			continue
		}
		p := processHooks{PID: r.Resp.Status.PID, Libucp: []string{}, Missing: append([]string{}, r.Resp.Status.MissingHooks...)}
		for _, f := range r.Resp.Status.Libucp {
			p.Libucp = append(p.Libucp, f.Version)
		}
		out.Processes = append(out.Processes, p)
	}
	return out
}

// listMissingHooks prints, for each injected process, the hooks whose
// function its libucp does not export. No process is no error: the table
// alone is then the answer.
func listMissingHooks(out, stderr io.Writer) error {
	if fileBackend() {
		return nil
	}
	list, err := targets(stderr)
	if err != nil || len(list) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	for _, r := range control.Broadcast(list, &control.Request{Cmd: control.CmdStatus}, global.timeout) {
		if r.Err != nil || r.Resp.Status == nil {
			continue
		}
		st := r.Resp.Status
		var vers []string
		for _, f := range st.Libucp {
			vers = append(vers, f.Version)
		}
		switch {
		case len(st.Libucp) == 0:
			fmt.Fprintf(out, "pid %d: libucp not loaded yet\n", st.PID)
		case len(st.MissingHooks) == 0:
			fmt.Fprintf(out, "pid %d (libucp %s): every hook exists\n", st.PID, strings.Join(vers, ", "))
		default:
			fmt.Fprintf(out, "pid %d (libucp %s): not exported, so never called: %s\n", st.PID, strings.Join(vers, ", "),
				strings.Join(st.MissingHooks, ", "))
		}
	}
	return nil
}
