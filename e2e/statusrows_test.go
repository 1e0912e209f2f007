package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStatusDetailedNamesObservedHooks: `status --detailed` shows a
// function that is only observed (never failed) as "observed", not "on",
// and a faultable one as "on", for a running program.
func TestStatusDetailedNamesObservedHooks(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "10", "--linger-ms", "60000")
	out := h.mustCtl(t, "status", "--detailed", "--all") // the hook may have no calls
	for name, want := range map[string]string{
		"ucp_ep_evaluate_perf": "observed",
		"ucp_put_nbx":          "on",
	} {
		if !regexp.MustCompile(`(?m)^\s*│\s*` + name + `\s*│\s*` + want + `\s*│`).MatchString(out) {
			t.Errorf("status --detailed: want %s %s:\n%s", name, want, out)
		}
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 60*time.Second)
}

// TestRuleListNotesInFlightPolls: a rule on ucp_request_check_status draws
// on every poll, but only polls of completed requests can fail, so the
// rule matches far more calls than it fails; `rule list` says why.
func TestRuleListNotesInFlightPolls(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--rule", "hooks=ucp_request_check_status prob=100"},
		"--transport", "tcp", "--size", "1048576", "--ops", "20", "--seq", "put", "--quiet", "--linger-ms", "60000")
	waitFor(t, 30*time.Second, "the puts", func() bool { return strings.Contains(e.Output(), "DONE") })
	st := h.statusOf(t)
	if len(st.Rules) != 1 || st.Rules[0].Matches <= st.Rules[0].Faults {
		t.Skipf("no poll of a request in flight was drawn (rules %+v): the puts completed at once", st.Rules)
	}
	list := h.mustCtl(t, "rule", "list")
	if !strings.Contains(list, "rule 1: its matches include polls (ucp_request_check_status) of requests still in flight") {
		t.Fatalf("rule list does not say why %d matches failed %d:\n%s", st.Rules[0].Matches, st.Rules[0].Faults, list)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 60*time.Second)
}
