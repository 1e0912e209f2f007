package main

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
)

// TestEveryCommandHasAGroup: the root help lists each command under what it
// is for; a new command left out of commandGroups fails here.
func TestEveryCommandHasAGroup(t *testing.T) {
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if c.GroupID == "" {
			t.Errorf("command %q is in no group of the root help", c.Name())
		}
	}
}

// TestHookSubcommands: hook list prints the table through tablewriter (one
// row per hook, the opt-in rows marked), and a bad hook command is a usage
// error before anything is sent.
func TestHookSubcommands(t *testing.T) {
	run := func(args ...string) (string, error) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		// A socket directory with no process: list prints the table only.
		root.SetArgs(append([]string{"--socket-dir", t.TempDir()}, args...))
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("hook", "list", "-o", "wide")
	if err != nil {
		t.Fatalf("hook list: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`│ ucp_device_local_mem_list_create +│ ucs_status_t +│ opt-in +│ 1\.21 +│`).MatchString(out) {
		t.Errorf("hook list has no opt-in 1.21 row for ucp_device_local_mem_list_create:\n%s", out)
	}
	for _, args := range [][]string{{"hook"}, {"hook", "frob"}, {"hook", "enable"}, {"hook", "disable", "ucp_nothing"}} {
		_, err := run(args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}
