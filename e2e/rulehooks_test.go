package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// TestRuleNamingAHookSwitchesItOn checks that a rule is never inert because
// the hook it names is off: naming a hook in hooks= is as explicit as
// --hooks, at start-up (an opt-in hook) and with `rule add` on a running
// process (a hook --hooks left out).
func TestRuleNamingAHookSwitchesItOn(t *testing.T) {
	h := newHarness(t)
	t.Run("opt-in hook at start", func(t *testing.T) {
		// ucp_ep_create is opt-in: without the rule's effect the example
		// would run its one put and exit 0.
		r := h.ctl(t, "inject", "--lib", h.lib, "--rule", "hooks=ucp_ep_create codes=IO_ERROR", "--",
			h.rma, "--seq", "put", "--ops", "1")
		if r.code == 0 || !strings.Contains(r.stderr, "SETUP-ERROR ucp_ep_create: Input/output error") {
			t.Fatalf("exit %d; want the example to stop at ucp_ep_create with -3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "on because a rule names them: ucp_ep_create") {
			t.Fatalf("the start-up line does not say that the rule switched ucp_ep_create on:\n%s", r.stderr)
		}
	})
	t.Run("rule add on a running process", func(t *testing.T) {
		e := h.start(t, []string{"--hooks", "ucp_get_nbx"}, "--ops", "0", "--interval-us", "500", "--seq", "put")
		waitFor(t, 20*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) > 10 })
		if hookStatus(t, h.statusOf(t), "ucp_put_nbx").Enabled {
			t.Fatal("ucp_put_nbx is on although --hooks left it out")
		}
		before := len(testutil.ParseOps(e.Output()))
		out := h.mustCtl(t, "rule", "add", "--hooks", "ucp_put_nbx", "--codes=-3")
		if !strings.Contains(out, "now on: ucp_put_nbx") {
			t.Fatalf("rule add does not say it switched ucp_put_nbx on:\n%s", out)
		}
		mark := len(testutil.ParseOps(e.Output()))
		waitFor(t, 20*time.Second, "puts after the rule", func() bool { return len(testutil.ParseOps(e.Output())) > mark+20 })
		st := h.statusOf(t)
		e.Cmd.Process.Kill()
		ops := testutil.ParseOps(e.Output())
		if f := failedIndices(ops[:before]); len(f) != 0 {
			t.Fatalf("puts failed before the rule: %v", f)
		}
		// Puts made while the rule was being published may pass; from the
		// first failure on, every put fails.
		f := failedIndices(ops[before:])
		if len(f) < 20 || !contiguous(f) || before+f[len(f)-1] != len(ops)-1 {
			t.Fatalf("after the rule (from op %d, of %d): failed %v, want every put from the first failure on", before, len(ops), f)
		}
		for _, i := range f {
			if ops[before+i].Status != -3 {
				t.Fatalf("after the rule: %+v, want -3", ops[before+i])
			}
		}
		if !hookStatus(t, st, "ucp_put_nbx").Enabled {
			t.Fatal("status shows ucp_put_nbx off after a rule named it")
		}
	})
}
