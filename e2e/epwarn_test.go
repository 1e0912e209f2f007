package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// TestEndpointCodeWarning: per-call faults with endpoint-level codes (here a
// rule with -80 and the global codes with -25) leave the endpoint healthy, a
// state real UCX never shows; status says so once, pointing to kill-ep, in
// JSON and in the table, and says nothing before such codes are set.
func TestEndpointCodeWarning(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--disabled"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	waitFor(t, 20*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) > 5 })
	count := func(ws []string) int {
		n := 0
		for _, w := range ws {
			if strings.Contains(w, "endpoint-level") {
				n++
			}
		}
		return n
	}
	st := h.status(t)[0]
	if len(st.Libucp) == 0 {
		t.Fatalf("the injector sees no libucp in the process: %+v", st)
	}
	if n := count(st.Warnings); n != 0 {
		t.Fatalf("warnings before endpoint-level codes: %q", st.Warnings)
	}
	h.mustCtl(t, "rule", "add", "hooks=ucp_get_nbx", "prob=10", "codes=-80,-3")
	h.mustCtl(t, "error-codes", "--", "-25")
	st = h.status(t)[0]
	if n := count(st.Warnings); n != 1 {
		t.Fatalf("%d endpoint-level warnings, want 1: %q", n, st.Warnings)
	}
	for _, want := range []string{"-80(", "-25(", "kill-ep"} {
		if !strings.Contains(strings.Join(st.Warnings, "\n"), want) {
			t.Fatalf("warnings %q do not name %s", st.Warnings, want)
		}
	}
	if out := h.mustCtl(t, "status"); strings.Count(out, "endpoint-level") != 1 {
		t.Fatalf("status table shows the warning %d times, want once:\n%s", strings.Count(out, "endpoint-level"), out)
	}
}
