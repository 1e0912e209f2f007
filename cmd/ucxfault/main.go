// Command ucxfault makes UCX applications fail on purpose and watches them
// fail for real: `inject` runs a program under the fault injector, the
// control commands change its faults while it runs, `observe` records a live
// process with eBPF, and `replay` plays a recording back.
package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/version"
)

// Exit statuses.
const (
	exitFailure = 1 // the command could not do its job
	exitUsage   = 2 // bad input: nothing was sent anywhere
)

// usageError marks an error caused by the user's input.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// globalOptions are the flags every control command shares.
type globalOptions struct {
	pids      []int
	ranks     string
	socketDir string
	timeout   time.Duration
	output    string
	wait      time.Duration
}

var global globalOptions

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ucxfault",
		Short: "Make UCX applications fail on purpose, and watch them fail for real",
		Long: `ucxfault injects UCX errors into the ucp_* calls of a running program
(through LD_PRELOAD and a per-process control socket), records and replays
what the calls did, and observes uninstrumented processes with eBPF.

-o chooses the output format of every command: table, wide (every column)
or json (for scripts: seeds as strings, times in RFC 3339).

Exit status: 0 on success; 1 when the command could not do its job (a
process did not answer or refused, none was found, a file could not be
written); 2 on bad input, with nothing sent (an unknown command or flag, a
bad value). inject exits with its program's status.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().IntSliceVar(&global.pids, "pid", nil, "send to this process only (repeatable)")
	root.PersistentFlags().StringVar(&global.ranks, "rank", "", "send to these launcher ranks only (e.g. 0,2-3)")
	root.PersistentFlags().StringVar(&global.socketDir, "socket-dir", control.SocketDir(os.Getenv), "directory of the control sockets, e.g. /tmp for the original tool's layout (UCX_FAULT_SOCKET_DIR; default: your private $XDG_RUNTIME_DIR/ucxfault or /tmp/ucxfault-UID, see SECURITY.md)")
	root.PersistentFlags().DurationVar(&global.timeout, "timeout", 5*time.Second, "time to wait for each process")
	root.PersistentFlags().StringVarP(&global.output, "output", "o", formatTable, "output format: table, wide (every column) or json")
	root.PersistentFlags().DurationVar(&global.wait, "wait", 0, "wait up to this long for an injected process to appear (e.g. one still starting)")
	root.SetFlagErrorFunc(flagError)

	root.AddCommand(newInjectCmd())
	root.AddCommand(newStatusCmd())
	root.AddCommand(newControlCmds()...)
	root.AddCommand(newRecordCmds()...)
	root.AddCommand(newReplayCmd())
	root.AddCommand(newStatsCmd())
	root.AddCommand(newObserveCmd())
	root.AddCommand(newWatchCmd())
	root.AddCommand(newGenDocsCmd())
	root.AddCommand(newRuleCmd())
	root.AddCommand(newVersionCmd())
	root.Version = version.String()
	root.SetVersionTemplate("ucxfault {{.Version}}\n")
	groupCommands(root)
	addCompletions(root)
	return root
}

// commandGroups orders the root help by what a user comes to do; a command
// missing here falls under "Additional Commands" (help, completion, gen-docs).
var commandGroups = []struct {
	id, title string
	names     []string
}{
	{"run", "Run a program under the injector:", []string{"inject"}},
	{"faults", "Change the faults of running processes:", []string{"enable", "disable", "toggle", "reset",
		"probability", "error-codes", "pattern", "seed", "strategy", "mode", "rule", "hook", "kill-ep", "inflight-code"}},
	{"look", "Look at running processes:", []string{"status", "stats", "version"}},
	{"record", "Record and replay calls:", []string{"record-toggle", "record-dump", "record-clear", "replay"}},
	{"observe", "Watch processes that run without the injector:", []string{"observe", "watch"}},
}

func groupCommands(root *cobra.Command) {
	byName := map[string]*cobra.Command{}
	for _, c := range root.Commands() {
		byName[c.Name()] = c
	}
	for _, g := range commandGroups {
		root.AddGroup(&cobra.Group{ID: g.id, Title: g.title})
		for _, n := range g.names {
			if c, ok := byName[n]; ok {
				c.GroupID = g.id
			}
		}
	}
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "ucxfault: %v\n", cliMessage(err))
	var ue usageError
	// cobra has no error type for an unknown command name, only this text.
	if errors.As(err, &ue) || errors.Is(err, control.ErrInvalid) || strings.HasPrefix(err.Error(), "unknown command ") {
		os.Exit(exitUsage)
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(exitFailure)
}

// exitError carries an exit status to pass through (inject).
type exitError struct {
	code int
}

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// negativeArg matches pflag's answer to a negative number taken for a flag.
var negativeArg = regexp.MustCompile(`^unknown shorthand flag: '\d' in (-\d\S*)`)

// ruleForms is the grammar the control package appends to a rule error for
// those who meet it over the socket or in UCX_FAULT_RULES; on the command
// line, rule --help says it better.
var ruleForms = " (a rule is: " + control.RuleForms + ")"

// cliMessage is err as the command line shows it: a rule error points to
// ucxfault rule --help instead of repeating the grammar.
func cliMessage(err error) string {
	msg := err.Error()
	if strings.Contains(msg, ruleForms) {
		msg = strings.ReplaceAll(msg, ruleForms, "") + " (ucxfault rule --help lists the tokens)"
	}
	return msg
}

// withDashDash is the command line args (os.Args[1:]) rewritten so that
// value, which starts with a minus, follows a "--": the command to type.
func withDashDash(args []string, value string) string {
	var out []string
	moved := false
	for _, a := range args {
		if a == value && !moved {
			moved = true
			continue
		}
		out = append(out, a)
	}
	if !moved {
		return ""
	}
	for i, a := range out {
		if a == "--" {
			// Already a "--" further on: the value goes right after it.
			out = append(out[:i+1], append([]string{value}, out[i+1:]...)...)
			return "ucxfault " + strings.Join(out, " ")
		}
	}
	return "ucxfault " + strings.Join(append(out, "--", value), " ")
}

// badPID matches pflag's answer to a --pid value that is not a number.
var badPID = regexp.MustCompile(`^invalid argument "(.*)" for "--pid" flag`)

// flagError turns pflag's parse errors into usage errors a person can act
// on: pflag's text names strconv and shorthand flags, not what was wanted.
func flagError(c *cobra.Command, err error) error {
	if m := negativeArg.FindStringSubmatch(err.Error()); m != nil {
		if c.Name() == "kill-ep" {
			return usagef("kill-ep %s: an endpoint is a number from 0, in order of creation (see status)", m[1])
		}
		if fixed := withDashDash(os.Args[1:], m[1]); fixed != "" {
			return usagef("%s: %s starts with a minus, so it is read as a flag; put -- before it: %s", c.Name(), m[1], fixed)
		}
		return usagef("%s: %s starts with a minus, so it is read as a flag; put -- before it", c.Name(), m[1])
	}
	if m := badPID.FindStringSubmatch(err.Error()); m != nil {
		return usagef("--pid: %q is not a process id", m[1])
	}
	return usageError{err}
}
