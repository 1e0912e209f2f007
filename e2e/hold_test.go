package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// Held completions (delay-completion=, hang; docs/rules.md), on real
// libucp with testdata/hold.c: a self endpoint whose operations complete
// for real within microseconds, so that any wait the program sees is the
// hold's.

// holdRun runs hold with args under rule (and extra inject flags) and
// returns its output, which must end with DONE.
func (h *harness) holdRun(t *testing.T, rule string, flags []string, args ...string) string {
	t.Helper()
	bin := buildFixture(t, "hold")
	out := h.runProgram(t, append([]string{"--rule", rule}, flags...), bin, args...)
	if !strings.Contains(out, "\nDONE") {
		t.Fatalf("hold %v did not finish:\n%s", args, out)
	}
	return out
}

// onlyOp returns the one OP line of out.
func onlyOp(t *testing.T, out string) testutil.Op {
	t.Helper()
	ops := testutil.ParseOps(out)
	if len(ops) != 1 {
		t.Fatalf("%d OP lines, want 1:\n%s", len(ops), out)
	}
	return ops[0]
}

// A delay-completion rule on every other get: those gets are seen complete
// at least 200 ms after the call, the others at once, and every status is
// the real one (success), in both modes.
func TestHoldDelayCompletionGets(t *testing.T) {
	h := newHarness(t)
	for _, mode := range []string{"immediate", "deferred"} {
		out := h.holdRun(t, "hooks=ucp_get_nbx calls=1..5+2 delay-completion=200ms", []string{"--mode", mode}, "get", "6")
		ops := testutil.ParseOps(out)
		if len(ops) != 6 {
			t.Fatalf("%s: %d gets, want 6:\n%s", mode, len(ops), out)
		}
		for i, o := range ops {
			if o.Status != 0 {
				t.Fatalf("%s: get %d status %d, want the real 0:\n%s", mode, i, o.Status, out)
			}
			held := i%2 == 1
			switch {
			case held && (o.US < 200000 || o.How != "poll"):
				t.Fatalf("%s: held get %d seen complete after %d us (%s), want >= 200 ms by poll:\n%s", mode, i, o.US, o.How, out)
			case !held && o.US >= 150000:
				t.Fatalf("%s: get %d, not held, took %d us:\n%s", mode, i, o.US, out)
			}
		}
	}
}

// hang on a tag receive whose message arrives: the receive completes for
// real (the data is there) but stays in progress for a second of progress
// (no callback, polls say in progress); ucp_request_cancel then completes
// it with -16 through its callback, as UCX reports a cancelled receive, and
// polls say -16 from then on.
func TestHoldHangTagRecvCancel(t *testing.T) {
	h := newHarness(t)
	out := h.holdRun(t, "hooks=ucp_tag_recv_nbx hang", nil, "tagrecv")
	if !strings.Contains(out, "HELD cb=0 poll=1 data=42 send_cb=1") {
		t.Fatalf("receive not held (want no callback, in progress, data received, send done):\n%s", out)
	}
	o := onlyOp(t, out)
	if o.Status != -16 || o.How != "callback" || o.US < 1000000 {
		t.Fatalf("after the cancel: status %d via %s after %d us, want -16 via callback after >= 1 s:\n%s", o.Status, o.How, o.US, out)
	}
	if !strings.Contains(out, "POLL after=-16") {
		t.Fatalf("a poll after the cancel does not say -16:\n%s", out)
	}
}

// hang on a get whose endpoint is then closed: a forced close completes it
// with -16 (UCX discards the lanes and cancels what is in flight), a close
// in flush mode with its real status.
func TestHoldHangEndpointClose(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		mode string
		want int
	}{{"force", -16}, {"flush", 0}} {
		out := h.holdRun(t, "hooks=ucp_get_nbx hang", nil, "close", c.mode)
		if !strings.Contains(out, "HELD cb=0 poll=1") {
			t.Fatalf("close %s: get not held before the close:\n%s", c.mode, out)
		}
		if o := onlyOp(t, out); o.Status != c.want || o.How != "callback" {
			t.Fatalf("close %s: get completed with %d via %s, want %d via callback:\n%s", c.mode, o.Status, o.How, c.want, out)
		}
	}
}

// hang on a get whose endpoint is killed: it completes with the kill's
// code through its callback.
func TestHoldHangEndpointKill(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "hold")
	e := h.startProg(t, []string{"--rule", "hooks=ucp_get_nbx hang"}, bin, "kill")
	waitFor(t, 20*time.Second, "the HELD line", func() bool { return strings.Contains(e.Output(), "HELD ") })
	if !strings.Contains(e.Output(), "HELD cb=0 poll=1") {
		t.Fatalf("get not held:\n%s", e.Output())
	}
	h.mustCtl(t, "kill-ep", "0", "--code", "-25")
	out := e.Wait(t, 30*time.Second)
	if o := onlyOp(t, out); o.Status != -25 || o.How != "callback" {
		t.Fatalf("after kill-ep: get completed with %d via %s, want -25 via callback:\n%s", o.Status, o.How, out)
	}
}

// A held request freed by the application gets no callback, and the
// program (and libucp's free of the completed request) goes on.
func TestHoldFreedRequest(t *testing.T) {
	h := newHarness(t)
	out := h.holdRun(t, "hooks=ucp_get_nbx hang", nil, "free")
	if !strings.Contains(out, "HELD cb=0") || !strings.Contains(out, "FREED cb=0") {
		t.Fatalf("a held, then freed, request got a callback:\n%s", out)
	}
}
