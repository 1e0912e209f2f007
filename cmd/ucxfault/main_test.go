package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// runRoot runs the command tree in process and returns what it printed.
func runRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// The man pages carry ENVIRONMENT and EXIT STATUS sections, before SEE
// ALSO, and the completions exist.
func TestGenDocsSections(t *testing.T) {
	dir := t.TempDir()
	if out, err := runRoot(t, "gen-docs", dir); err != nil {
		t.Fatalf("gen-docs: %v\n%s", err, out)
	}
	for _, page := range []string{"ucxfault.1", "ucxfault-status.1", "ucxfault-inject.1"} {
		b, err := os.ReadFile(filepath.Join(dir, "man", "man1", page))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		env, exit, see := strings.Index(text, ".SH ENVIRONMENT"), strings.Index(text, ".SH EXIT STATUS"), strings.Index(text, ".SH SEE ALSO")
		if env < 0 || exit < env || (see >= 0 && see < exit) || !strings.Contains(text, "UCX_FAULT_SUMMARY_FILE") {
			t.Errorf("%s: ENVIRONMENT at %d, EXIT STATUS at %d, SEE ALSO at %d", page, env, exit, see)
		}
	}
	for _, f := range []string{"ucxfault.bash", "_ucxfault", "ucxfault.fish"} {
		if _, err := os.Stat(filepath.Join(dir, "completions", f)); err != nil {
			t.Error(err)
		}
	}
}

// Completion offers hook names (after a comma too), the pids of the
// sockets in the socket directory, modes, strategies, record-dump kinds,
// replay keys and formats.
func TestCompletions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ucx-fault-4242.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"hook", "disable", ""}, "ucp_put_nbx"},
		{[]string{"inject", "--hooks", "ucp_put_nbx,"}, "ucp_put_nbx,ucp_get_nbx"},
		{[]string{"rule", "add", "--hooks", ""}, "ucp_ep_flush_nbx"},
		{[]string{"--socket-dir", dir, "status", "--pid", ""}, "4242"},
		{[]string{"--socket-dir", dir, "observe", ""}, "4242"},
		{[]string{"mode", ""}, "deferred"},
		{[]string{"strategy", ""}, "pattern"},
		{[]string{"record-dump", ""}, "records"},
		{[]string{"replay", "--key", ""}, "global"},
		{[]string{"status", "-o", ""}, "wide"},
		{[]string{"error-codes", ""}, "ENDPOINT_TIMEOUT"},
	} {
		out, err := runRoot(t, append([]string{"__complete"}, tc.args...)...)
		if err != nil || !strings.Contains(out, tc.want+"\n") {
			t.Errorf("completing %q: %v, want %q in:\n%s", tc.args, err, tc.want, out)
		}
	}
}
