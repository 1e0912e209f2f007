package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// Failures delivered through callbacks, in a program that learns every
// result in callbacks that free their requests and never polls (cbonly, as
// MPICH's ch4:ucx does).

var cbonlyFns = map[string]string{"tag_send": "ucp_tag_send_nbx", "tag_recv": "ucp_tag_recv_nbx"}

// cbonlyRun is one run of cbonly under the injector, gated by files.
type cbonlyRun struct {
	e                *testutil.Example
	start, hold, end string
	obs              *observerRun
}

func (h *harness) startCbonly(t *testing.T, flags []string, observe bool, args ...string) *cbonlyRun {
	t.Helper()
	bin := buildFixture(t, "cbonly")
	dir := t.TempDir()
	r := &cbonlyRun{start: filepath.Join(dir, "start"), hold: filepath.Join(dir, "hold"), end: filepath.Join(dir, "end")}
	args = append(args, "--start-file", r.start, "--hold-file", r.hold, "--end-file", r.end)
	r.e = h.startProg(t, flags, bin, args...)
	if observe {
		r.obs = h.startObserver(t, r.e.PID, "--hooks", "ucp_tag_send_nbx,ucp_tag_recv_nbx")
	}
	return r
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// finish lets the program end and returns its OP lines and, when observed,
// the observer's recording.
func (r *cbonlyRun) finish(t *testing.T) ([]testutil.Op, *recording.Process) {
	t.Helper()
	touch(t, r.end)
	ops := testutil.ParseOps(r.e.Wait(t, 30*time.Second))
	if r.obs == nil {
		return ops, nil
	}
	return ops, r.obs.wait(t)
}

// checkAgreement asserts that the program's callbacks, status, the
// injector's recording and (when given) the observer's agree on every call
// of both functions, and that every failure is injected.
func checkAgreement(t *testing.T, ops []testutil.Op, st control.Status, inj, obs *recording.Process) {
	t.Helper()
	for op, fn := range cbonlyFns {
		printed := map[int]testutil.Op{}
		for _, o := range opsOf(ops, op) {
			printed[o.Iter] = o
		}
		calls := callsOf(inj, fn)
		if len(calls) != len(printed) {
			t.Fatalf("%s: injector recorded %d calls, the program made %d", fn, len(calls), len(printed))
		}
		// The program makes the i-th call of a function in the i-th
		// iteration that reaches it; iterations without a receive
		// (the send failed at once) are skipped.
		iters := make([]int, 0, len(printed))
		for it := range printed {
			iters = append(iters, it)
		}
		sortInts(iters)
		failed, codes := uint64(0), map[string]uint64{}
		for i, c := range calls {
			p := printed[iters[i]]
			if c.Status != p.Status || c.Injected != (p.Status < 0) {
				t.Fatalf("%s call %d: recorded %+v, the callback got %+v", fn, i, c, p)
			}
			if p.How == "completion" && c.How != recording.HowCompletion {
				t.Fatalf("%s call %d: learned on completion, recorded how=%s", fn, i, c.How)
			}
			if c.Status < 0 {
				failed++
				codes[strconv.Itoa(c.Status)]++
			}
			if obs != nil {
				oc := callsOf(obs, fn)
				if len(oc) != len(calls) {
					t.Fatalf("%s: observer recorded %d calls, injector %d", fn, len(oc), len(calls))
				}
				if oc[i].Status != c.Status || oc[i].Injected != c.Injected || oc[i].How != c.How {
					t.Fatalf("%s call %d: observer %+v, injector %+v", fn, i, oc[i], c)
				}
			}
		}
		hs := hookStatus(t, st, fn)
		if hs.Calls != uint64(len(calls)) || hs.Faults != failed {
			t.Fatalf("%s: status counts %d calls, %d faults; the recording holds %d calls, %d failed", fn, hs.Calls, hs.Faults, len(calls), failed)
		}
		for code, n := range codes {
			if hs.FaultCodes[code] != n {
				t.Fatalf("%s: status counts %v by code, the recording %v", fn, hs.FaultCodes, codes)
			}
		}
		var bySize uint64
		for _, b := range hs.Sizes {
			bySize += b.Faults
		}
		if bySize != failed {
			t.Fatalf("%s: status counts %d faults by size, %d in all", fn, bySize, failed)
		}
		// Calls since the last failure, from the recording.
		since := uint64(0)
		for i := len(calls) - 1; i >= 0 && calls[i].Status == 0; i-- {
			since++
		}
		if failed > 0 && hs.CallsSinceFault != since {
			t.Fatalf("%s: status says %d calls since the last fault, the recording %d", fn, hs.CallsSinceFault, since)
		}
	}
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// dumpPattern returns record-dump pattern's line for fn.
func dumpPattern(t *testing.T, h *harness, fn string) string {
	t.Helper()
	out := h.mustCtl(t, "record-dump", "pattern", "--raw")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == fn {
			return f[1]
		}
	}
	t.Fatalf("record-dump pattern has no line for %s:\n%s", fn, out)
	return ""
}

func TestCallbackOnlyFailuresRecordedObservedReplayed(t *testing.T) {
	h := newHarness(t)
	observe := testutil.HaveBPF(t)
	flags := []string{"--mode", "deferred", "--pattern", "OXO", "--hooks", "ucp_tag_send_nbx,ucp_tag_recv_nbx", "--record"}
	r := h.startCbonly(t, flags, observe, "--ops", "11")
	touch(t, r.start)
	waitFor(t, 30*time.Second, "the operations", func() bool { return strings.Contains(r.e.Output(), "DONE") })
	st := h.statusOf(t)
	for _, fn := range cbonlyFns {
		if p := dumpPattern(t, h, fn); p != "OXOOXOOXOOX" {
			t.Fatalf("record-dump pattern %s: %s, want OXOOXOOXOOX", fn, p)
		}
	}
	path := filepath.Join(t.TempDir(), "rec.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ops, obs := r.finish(t)
	if n := len(failedIndices(ops)); n != 8 {
		t.Fatalf("%d callbacks got a failure, want 8 (4 sends, 4 receives)", n)
	}
	checkAgreement(t, ops, st, &f.Processes[0], obs)
	if hs := hookStatus(t, st, "ucp_tag_send_nbx"); hs.CallsSinceFault != 0 {
		t.Fatalf("since last fault: %d after a failure on the last call", hs.CallsSinceFault)
	}

	// The replay, in a fresh run with nothing else injected: the same
	// statuses reach the callbacks in the same order.
	r2 := h.startCbonly(t, []string{"--mode", "deferred", "--disabled"}, false, "--ops", "11")
	if out := h.mustCtl(t, "replay", "--from", path); !strings.Contains(out, "replaying") {
		t.Fatalf("replay: %s", out)
	}
	touch(t, r2.start)
	replayed, _ := r2.finish(t)
	if len(replayed) != len(ops) {
		t.Fatalf("replayed run printed %d results, the recorded run %d:\n%+v\n%+v", len(replayed), len(ops), replayed, ops)
	}
	for i := range ops {
		a, b := ops[i], replayed[i]
		if a.Fn != b.Fn || a.Iter != b.Iter || a.Status != b.Status || a.How != b.How {
			t.Fatalf("result %d: recorded run %+v, replayed run %+v", i, a, b)
		}
	}
}

func TestCallbackOnlyKillInFlightRecordedAndObserved(t *testing.T) {
	h := newHarness(t)
	observe := testutil.HaveBPF(t)
	flags := []string{"--mode", "deferred", "--pattern", "OXO", "--hooks", "ucp_tag_send_nbx,ucp_tag_recv_nbx", "--record"}
	// 1 MiB: a rendezvous send waits for its receive, so the send of
	// iteration 3 is in flight while the program holds.
	r := h.startCbonly(t, flags, observe, "--ops", "6", "--size", "1048576", "--hold-at", "3")
	touch(t, r.start)
	waitFor(t, 30*time.Second, "the send in flight", func() bool { return strings.Contains(r.e.Output(), "INFLIGHT iter=3") })
	h.mustCtl(t, "kill-ep", "0")
	touch(t, r.hold)
	waitFor(t, 30*time.Second, "the operations", func() bool { return strings.Contains(r.e.Output(), "DONE") })
	st := h.statusOf(t)
	path := filepath.Join(t.TempDir(), "rec.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p := dumpPattern(t, h, "ucp_tag_send_nbx"); p != "OXOXXX" {
		t.Fatalf("record-dump pattern ucp_tag_send_nbx: %s, want OXOXXX", p)
	}
	ops, obs := r.finish(t)
	sends := opsOf(ops, "tag_send")
	// kill-ep's default code is the running libucp's for a dead TCP peer.
	u := testutil.UCX(t)
	want := testutil.DeadPeerCode(u.Major, u.Minor)
	if len(sends) != 6 || sends[3].Status != want || sends[3].How != "completion" {
		t.Fatalf("the send in flight at the kill: %+v, want %d in its callback", sends, want)
	}
	checkAgreement(t, ops, st, &f.Processes[0], obs)
	if st.KilledRequests != 1 {
		t.Fatalf("status: %d requests failed in flight by the kill, want 1", st.KilledRequests)
	}

	// Replayed without a kill, the failures come back the same way: the
	// send that was in flight fails in its callback, the later ones at
	// once.
	r2 := h.startCbonly(t, []string{"--mode", "deferred", "--disabled"}, false, "--ops", "6", "--size", "1048576")
	h.mustCtl(t, "replay", "--from", path)
	touch(t, r2.start)
	replayed, _ := r2.finish(t)
	if len(replayed) != len(ops) {
		t.Fatalf("replayed run printed %d results, the recorded run %d:\n%+v\n%+v", len(replayed), len(ops), replayed, ops)
	}
	for i := range ops {
		a, b := ops[i], replayed[i]
		if a.Fn != b.Fn || a.Iter != b.Iter || a.Status != b.Status || a.How != b.How {
			t.Fatalf("result %d: recorded run %+v, replayed run %+v", i, a, b)
		}
	}
}

// A rule's failures on completion move its statistics with the hooks'
// counters and the recording.
func TestCallbackOnlyRuleFailuresCountedAlike(t *testing.T) {
	h := newHarness(t)
	flags := []string{"--mode", "deferred", "--record", "--rule", "hooks=ucp_tag_send_nbx,ucp_tag_recv_nbx pattern=OXO codes=-3,-6"}
	r := h.startCbonly(t, flags, false, "--ops", "11")
	touch(t, r.start)
	waitFor(t, 30*time.Second, "the operations", func() bool { return strings.Contains(r.e.Output(), "DONE") })
	st := h.statusOf(t)
	path := filepath.Join(t.TempDir(), "rec.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ops, _ := r.finish(t)
	checkAgreement(t, ops, st, &f.Processes[0], nil)
	failed := uint64(len(failedIndices(ops)))
	if len(st.Rules) != 1 || st.Rules[0].Faults != failed || failed != 8 {
		t.Fatalf("rule statistics %+v; the callbacks got %d failures, want 8", st.Rules, failed)
	}
}

// A send whose request is freed before it completes never learns its
// result: no callback comes (as libucp calls none for a freed request), and
// the injected failure is recorded as injected with how unknown, by the
// injector and the observer alike, and counted in status.
func TestCallbackOnlyRequestFreedBeforeCompletion(t *testing.T) {
	h := newHarness(t)
	observe := testutil.HaveBPF(t)
	flags := []string{"--mode", "deferred", "--pattern", "OXO", "--hooks", "ucp_tag_send_nbx,ucp_tag_recv_nbx", "--record"}
	r := h.startCbonly(t, flags, observe, "--ops", "11", "--free-sends")
	touch(t, r.start)
	waitFor(t, 30*time.Second, "the operations", func() bool { return strings.Contains(r.e.Output(), "DONE") })
	st := h.statusOf(t)
	if p := dumpPattern(t, h, "ucp_tag_send_nbx"); p != "OXOOXOOXOOX" {
		t.Fatalf("record-dump pattern ucp_tag_send_nbx: %s, want OXOOXOOXOOX", p)
	}
	path := filepath.Join(t.TempDir(), "rec.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ops, obs := r.finish(t)
	sends := opsOf(ops, "tag_send")
	calls := callsOf(&f.Processes[0], "ucp_tag_send_nbx")
	if len(sends) != 11 || len(calls) != 11 {
		t.Fatalf("%d send results printed (a callback after the free?), %d recorded; want 11", len(sends), len(calls))
	}
	wantCodes := []int{-3, -6, -20, -3}
	k := 0
	for i, c := range calls {
		if i%3 != 1 {
			if c.Status != 0 || sends[i].How != "immediate" {
				t.Fatalf("send %d: recorded %+v, printed %+v; want a pass at once", i, c, sends[i])
			}
			continue
		}
		if sends[i].How != "freed" || c.Status != wantCodes[k] || !c.Injected || c.How != recording.HowUnknown {
			t.Fatalf("send %d freed before completion: recorded %+v, printed %+v; want %d injected, how unknown", i, c, sends[i], wantCodes[k])
		}
		k++
	}
	if hs := hookStatus(t, st, "ucp_tag_send_nbx"); hs.Faults != 4 || hs.CallsSinceFault != 0 {
		t.Fatalf("status: %d send faults, %d calls since the last, want 4 and 0", hs.Faults, hs.CallsSinceFault)
	}
	if obs != nil {
		oc := callsOf(obs, "ucp_tag_send_nbx")
		if len(oc) != len(calls) {
			t.Fatalf("observer recorded %d sends, injector %d", len(oc), len(calls))
		}
		for i := range oc {
			if oc[i].Status != calls[i].Status || oc[i].Injected != calls[i].Injected || oc[i].How != calls[i].How {
				t.Fatalf("send %d: observer %+v, injector %+v", i, oc[i], calls[i])
			}
		}
	}
}
