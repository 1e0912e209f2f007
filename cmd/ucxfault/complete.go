package main

import (
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// Shell completion: what each argument and flag accepts, so that TAB
// offers hook names, the pids of injected processes, modes, strategies,
// record-dump kinds, replay keys and output formats.

// fixedChoices completes the first argument from choices.
func fixedChoices(choices ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return choices, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeHookList completes a comma-separated list of hook names: the
// part before the last comma is kept, the last name is completed.
func completeHookList(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	prefix := ""
	if i := strings.LastIndex(toComplete, ","); i >= 0 {
		prefix = toComplete[:i+1]
	}
	out := []string{prefix + "all"}
	for _, n := range hooks.Names() {
		out = append(out, prefix+n)
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}

// completeHookArg completes the first argument as a hook list.
func completeHookArg(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeHookList(c, args, toComplete)
}

// completePIDs offers the pids of the control sockets in the socket
// directories the control commands look in (--socket-dir as typed so far,
// else the private ones).
func completePIDs(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	dirs, _, err := socketDirs(io.Discard)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, d := range dirs {
		list, err := control.List(d)
		if err != nil {
			continue
		}
		for _, t := range list {
			out = append(out, strconv.Itoa(t.PID))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// addCompletions registers the completions of root's commands and flags.
func addCompletions(root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc("pid", completePIDs)
	_ = root.RegisterFlagCompletionFunc("output", fixedChoices(formats...))
	_ = root.RegisterFlagCompletionFunc("socket-dir", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	modes := fixedChoices(control.ModeImmediate, control.ModeDeferred)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch c.CommandPath() {
		case "ucxfault mode":
			c.ValidArgsFunction = modes
		case "ucxfault strategy":
			c.ValidArgsFunction = fixedChoices(control.StrategyRandom, control.StrategyPattern, control.StrategyNone)
		case "ucxfault record-toggle":
			c.ValidArgsFunction = fixedChoices("on", "off")
		case "ucxfault record-dump":
			c.ValidArgsFunction = fixedChoices("summary", "pattern", "records")
		case "ucxfault hook enable", "ucxfault hook disable":
			c.ValidArgsFunction = completeHookArg
		case "ucxfault observe":
			c.ValidArgsFunction = completePIDs
		case "ucxfault replay":
			_ = c.RegisterFlagCompletionFunc("key", fixedChoices("function", "global"))
			_ = c.RegisterFlagCompletionFunc("from", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
			})
		case "ucxfault inject":
			_ = c.RegisterFlagCompletionFunc("mode", modes)
		case "ucxfault error-codes":
			c.ValidArgsFunction = fixedChoices(codeNames()...)
		}
		if c.Flags().Lookup("hooks") != nil {
			_ = c.RegisterFlagCompletionFunc("hooks", completeHookList)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// codeNames lists the named UCX error codes, for error-codes and --codes.
func codeNames() []string {
	var out []string
	for c := -1; c >= -100; c-- {
		if n := ucsName(c); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// ucsName is the name of code c, or "" for a code UCX leaves unnamed.
func ucsName(c int) string {
	n := ucs.Status(c).String()
	if strings.Contains(n, "_-") || strings.HasPrefix(n, "STATUS_") {
		return ""
	}
	return n
}
