package e2e

import (
	"os"
	"regexp"
	"testing"
	"time"
)

// TestStatusDetailedNamesObservedHooks: `status --detailed` shows a
// function that is only observed (never failed) as "observed", not "on",
// and a faultable one as "on", for a running program.
func TestStatusDetailedNamesObservedHooks(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "10", "--linger-ms", "60000")
	out := h.mustCtl(t, "status", "--detailed")
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
