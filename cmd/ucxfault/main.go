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
}

var global globalOptions

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ucxfault",
		Short: "Make UCX applications fail on purpose, and watch them fail for real",
		Long: `ucxfault injects UCX errors into the ucp_* calls of a running program
(through LD_PRELOAD and a per-process control socket), records and replays
what the calls did, and observes uninstrumented processes with eBPF.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().IntSliceVar(&global.pids, "pid", nil, "send to this process only (repeatable)")
	root.PersistentFlags().StringVar(&global.ranks, "rank", "", "send to these launcher ranks only (e.g. 0,2-3)")
	root.PersistentFlags().StringVar(&global.socketDir, "socket-dir", control.SocketDir(os.Getenv), "directory of the control sockets, e.g. /tmp for the original tool's layout (UCX_FAULT_SOCKET_DIR; default: your private $XDG_RUNTIME_DIR/ucxfault or /tmp/ucxfault-UID, see SECURITY.md)")
	root.PersistentFlags().DurationVar(&global.timeout, "timeout", 5*time.Second, "time to wait for each process")
	root.SetFlagErrorFunc(flagError)

	root.AddCommand(newInjectCmd())
	root.AddCommand(newStatusCmd())
	root.AddCommand(newControlCmds()...)
	root.AddCommand(newRecordCmds()...)
	root.AddCommand(newReplayCmd())
	root.AddCommand(newStatsCmd())
	root.AddCommand(newObserveCmd())
	root.AddCommand(newGenDocsCmd())
	root.AddCommand(newRuleCmd())
	groupCommands(root)
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
	{"look", "Look at running processes:", []string{"status", "stats"}},
	{"record", "Record and replay calls:", []string{"record-toggle", "record-dump", "record-clear", "replay"}},
	{"observe", "Watch processes that run without the injector:", []string{"observe"}},
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
	fmt.Fprintf(os.Stderr, "ucxfault: %v\n", err)
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
var negativeArg = regexp.MustCompile(`^unknown shorthand flag: '\d' in (-\d+)`)

// badPID matches pflag's answer to a --pid value that is not a number.
var badPID = regexp.MustCompile(`^invalid argument "(.*)" for "--pid" flag`)

// flagError turns pflag's parse errors into usage errors a person can act
// on: pflag's text names strconv and shorthand flags, not what was wanted.
func flagError(c *cobra.Command, err error) error {
	if m := negativeArg.FindStringSubmatch(err.Error()); m != nil {
		if c.Name() == "kill-ep" {
			return usagef("kill-ep %s: an endpoint is a number from 0, in order of creation (see status)", m[1])
		}
		return usagef("%s: %s is taken for a flag; put -- before arguments that start with a minus", c.Name(), m[1])
	}
	if m := badPID.FindStringSubmatch(err.Error()); m != nil {
		return usagef("--pid: %q is not a process id", m[1])
	}
	return usageError{err}
}
