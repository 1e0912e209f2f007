package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// statusOf returns the one injected process's status.
func (h *harness) statusOf(t *testing.T) control.Status {
	t.Helper()
	st := h.status(t)
	if len(st) != 1 {
		t.Fatalf("%d injected processes, want 1", len(st))
	}
	return st[0]
}

func ruleByID(st control.Status, id int) (control.RuleStatus, bool) {
	for _, r := range st.Rules {
		if r.ID == id {
			return r, true
		}
	}
	return control.RuleStatus{}, false
}

// contiguous reports whether idx is one unbroken run of indices.
func contiguous(idx []int) bool {
	for i := 1; i < len(idx); i++ {
		if idx[i] != idx[i-1]+1 {
			return false
		}
	}
	return true
}

func TestRuleSizeFilterFailsOnlyLargeTransfers(t *testing.T) {
	h := newHarness(t)
	rule := []string{"--rule", "hooks=ucp_put_nbx min-size=64K"}
	for _, c := range []struct {
		size   string
		failed int
	}{{"65536", 10}, {"65535", 0}, {"8", 0}, {"1048576", 10}} {
		ops, out := h.run(t, rule, "--seq", "put", "--ops", "10", "--size", c.size)
		if len(ops) != 10 {
			t.Fatalf("size %s: %d operations, want 10\n%s", c.size, len(ops), out)
		}
		if f := failedIndices(ops); len(f) != c.failed {
			t.Fatalf("min-size=64K, size %s: %d puts failed (%v), want %d", c.size, len(f), f, c.failed)
		}
	}
	// max-size is inclusive as well.
	for _, c := range []struct {
		size   string
		failed int
	}{{"4096", 10}, {"4097", 0}} {
		ops, _ := h.run(t, []string{"--rule", "hooks=ucp_put_nbx max-size=4K"}, "--seq", "put", "--ops", "10", "--size", c.size)
		if f := failedIndices(ops); len(f) != c.failed {
			t.Fatalf("max-size=4K, size %s: %d puts failed, want %d", c.size, len(f), c.failed)
		}
	}
}

// TestRuleEndpointFilter runs the self transport: its tcp transport would
// do as well (one endpoint), at the cost of a peer process.
func TestRuleEndpointFilter(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		transport, endpoint string
		failed              int
	}{{"self", "0", 10}, {"self", "1", 0}} {
		ops, out := h.run(t, []string{"--rule", "hooks=ucp_put_nbx endpoint=" + c.endpoint},
			"--seq", "put", "--ops", "10", "--transport", c.transport)
		if len(ops) != 10 {
			t.Fatalf("%s: %d operations, want 10\n%s", c.transport, len(ops), out)
		}
		if f := failedIndices(ops); len(f) != c.failed {
			t.Fatalf("%s endpoint=%s: %d puts failed, want %d\n%s", c.transport, c.endpoint, len(f), c.failed, out)
		}
	}
	// Two threads, one endpoint each: endpoint 1 is the one used second,
	// and only its calls fail.
	ops, out := h.run(t, []string{"--rule", "hooks=ucp_put_nbx endpoint=1"}, "--seq", "put", "--ops", "20", "--threads", "2")
	failedBy := map[int]int{}
	for _, op := range ops {
		if op.Status != 0 {
			failedBy[op.Thread]++
		}
	}
	if len(ops) != 40 || len(failedBy) != 1 {
		t.Fatalf("endpoint=1 over two threads: failures by thread %v, want all 20 of one thread\n%s", failedBy, out)
	}
	for _, n := range failedBy {
		if n != 20 {
			t.Fatalf("endpoint=1 over two threads: failures by thread %v, want all 20 of one thread", failedBy)
		}
	}
}

func TestRuleCallRangeFailsExactlyThoseCalls(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--rule", "hooks=ucp_put_nbx calls=100..200+10"}, "--seq", "put", "--ops", "300")
	if len(ops) != 300 {
		t.Fatalf("%d operations, want 300", len(ops))
	}
	var want []int
	for k := 100; k <= 200; k += 10 {
		want = append(want, k)
	}
	if got := failedIndices(ops); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls=100..200+10 failed puts %v, want %v", got, want)
	}
}

func TestRuleMaxFaultsFailsExactlyThree(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--rule", "hooks=ucp_put_nbx prob=100 max-faults=3"}, "--seq", "put", "--ops", "50")
	if got := failedIndices(ops); !reflect.DeepEqual(got, []int{0, 1, 2}) {
		t.Fatalf("max-faults=3 failed puts %v, want [0 1 2]", got)
	}
	// The budget is shared by threads: three faults in all, not per thread.
	ops, _ = h.run(t, []string{"--rule", "hooks=ucp_put_nbx max-faults=3"}, "--seq", "put", "--ops", "50", "--threads", "2")
	if len(ops) != 100 {
		t.Fatalf("%d operations over 2 threads, want 100", len(ops))
	}
	if got := len(failedIndices(ops)); got != 3 {
		t.Fatalf("max-faults=3 over 2 threads: %d puts failed, want 3", got)
	}
}

// TestRuleTimeWindowFromSetting sets a window through the CLI on a running
// process and asserts on counts per phase: nothing before the window opens,
// something while it is open, nothing more after it closed.
func TestRuleTimeWindowFromSetting(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, nil, "--seq", "put", "--ops", "0", "--interval-us", "1000")
	t0 := time.Now()
	h.mustCtl(t, "rule", "add", "--hooks", "ucp_put_nbx", "--after", "1s", "--for", "1s")
	t1 := time.Now()
	// The rule was set between t0 and t1: the window opens after t0+1s.
	if t1.Sub(t0) < 800*time.Millisecond {
		time.Sleep(100 * time.Millisecond)
		before := h.statusOf(t)
		if time.Since(t0) < 950*time.Millisecond {
			if f := hookStatus(t, before, "ucp_put_nbx").Faults; f != 0 {
				t.Fatalf("%d faults before the window opened", f)
			}
		}
		if hookStatus(t, before, "ucp_put_nbx").Calls == 0 {
			t.Fatalf("no puts counted before the window")
		}
	}
	// The window closed by t1+2s.
	time.Sleep(time.Until(t1.Add(2*time.Second + 300*time.Millisecond)))
	closed := h.statusOf(t)
	time.Sleep(500 * time.Millisecond)
	later := h.statusOf(t)
	e.Cmd.Process.Signal(os.Interrupt)
	ops := testutil.ParseOps(e.Wait(t, 20*time.Second))

	fc, fl := hookStatus(t, closed, "ucp_put_nbx").Faults, hookStatus(t, later, "ucp_put_nbx").Faults
	if fc == 0 {
		t.Fatalf("nothing failed while the window was open")
	}
	if fl != fc {
		t.Fatalf("faults went on after the window closed: %d, then %d", fc, fl)
	}
	if hookStatus(t, later, "ucp_put_nbx").Calls <= hookStatus(t, closed, "ucp_put_nbx").Calls {
		t.Fatalf("the program stopped making calls: the check after the window proves nothing")
	}
	failed := failedIndices(ops)
	if uint64(len(failed)) != fc || !contiguous(failed) || failed[0] == 0 || failed[len(failed)-1] == len(ops)-1 {
		t.Fatalf("failed puts are not one run inside the program's life: %d of %d, first %v",
			len(failed), len(ops), failed[:min(len(failed), 5)])
	}
	r, ok := ruleByID(later, 1)
	if !ok || r.Faults != fc || r.Matches != fc {
		t.Fatalf("rule status %+v, want %d matches and faults", later.Rules, fc)
	}
}

// TestRuleTimeWindowFromStart runs a window counted from the process start
// to completion: the faults form one run with passes before and after.
func TestRuleTimeWindowFromStart(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--rule", "hooks=ucp_put_nbx after=400ms for=300ms from-start"},
		"--seq", "put", "--ops", "1500", "--interval-us", "1000")
	failed := failedIndices(ops)
	if len(failed) == 0 {
		t.Fatal("nothing failed in the window")
	}
	if !contiguous(failed) || failed[0] == 0 || failed[len(failed)-1] == len(ops)-1 {
		t.Fatalf("failed puts are not one run with passes before and after: %d of %d, from %d to %d",
			len(failed), len(ops), failed[0], failed[len(failed)-1])
	}
	// At about one put per millisecond the 300 ms window holds at most
	// about 300 puts (sleeps only run long).
	if len(failed) > 330 {
		t.Fatalf("%d puts failed in a 300 ms window at 1 ms per put", len(failed))
	}
}

func TestRuleDelayOnFlush(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--rule", "hooks=ucp_ep_flush_nbx delay=2ms"}, "--seq", "put,flush", "--ops", "20")
	flushes := opsOf(ops, "flush")
	if len(flushes) != 20 {
		t.Fatalf("%d flushes, want 20", len(flushes))
	}
	for _, op := range flushes {
		if op.US < 2000 || op.Status != 0 {
			t.Fatalf("flush %d took %d us with status %d, want >= 2000 us and success", op.Seq, op.US, op.Status)
		}
	}
	if f := failedIndices(ops); len(f) != 0 {
		t.Fatalf("a delay-only rule failed operations %v", f)
	}
	// The puts are not delayed; without the rule flushes are quick.
	for _, op := range opsOf(ops, "put") {
		if op.US >= 2000 {
			t.Logf("note: put %d took %d us", op.Seq, op.US)
		}
	}
	ops, _ = h.run(t, nil, "--seq", "put,flush", "--ops", "20")
	var us []int
	for _, op := range opsOf(ops, "flush") {
		us = append(us, int(op.US))
	}
	sort.Ints(us)
	if len(us) != 20 || us[len(us)/2] >= 2000 {
		t.Fatalf("without a delay rule the median flush takes %v us (all: %v)", us[len(us)/2], us)
	}
	// A range delays uniformly within it, and status adds the time up.
	e := h.start(t, []string{"--rule", "hooks=ucp_ep_flush_nbx delay=1ms..3ms max-faults=10"},
		"--seq", "flush", "--ops", "0", "--interval-us", "200")
	waitFor(t, 10*time.Second, "ten delayed flushes", func() bool {
		r, _ := ruleByID(h.statusOf(t), 1)
		return r.Delays >= 10
	})
	st := h.statusOf(t)
	e.Cmd.Process.Signal(os.Interrupt)
	ops = testutil.ParseOps(e.Wait(t, 20*time.Second))
	r, _ := ruleByID(st, 1)
	if r.Delays != 10 || r.DelayNS < 10*uint64(time.Millisecond) || st.DelayNS != r.DelayNS {
		t.Fatalf("status after 10 delays of 1-3 ms: rule %+v, process delay %d ns", r, st.DelayNS)
	}
	for i, op := range ops[:10] {
		if op.US < 1000 {
			t.Fatalf("flush %d took %d us, want >= 1000", i, op.US)
		}
	}
}

func TestRuleBadSyntaxIsRefusedWithTheAcceptedForms(t *testing.T) {
	h := newHarness(t)
	for _, args := range [][]string{
		{"rule", "add", "--calls", "200..100"},
		{"rule", "add", "nonsense=1"},
		{"rule", "add", "--min-size", "64Q"},
		{"rule", "add", "--delay", "5ms..1ms"},
		{"rule", "add", "--probability", "50", "--pattern", "XO"},
		{"rule", "set", "calls=1; calls=oops"},
		{"inject", "--rule", "calls=..", "--", "/bin/true"},
	} {
		r := h.ctl(t, args...)
		if r.code != 2 {
			t.Fatalf("ucxfault %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
		// The command line points to rule --help rather than repeating
		// the grammar (the socket and UCX_FAULT_RULES still get it).
		if !strings.Contains(r.stderr, "ucxfault rule --help") && !strings.Contains(r.stderr, "accepted: 3, 5..") {
			t.Fatalf("ucxfault %v: message does not point to the accepted forms:\n%s", args, r.stderr)
		}
		if strings.Contains(r.stderr, "a rule is:") {
			t.Fatalf("ucxfault %v: message repeats the grammar:\n%s", args, r.stderr)
		}
	}
	r := h.ctl(t, "rule", "del", "x")
	if r.code != 2 {
		t.Fatalf("rule del x: exit %d, want 2", r.code)
	}
}

// failuresByThread returns, for each thread of ops, the iterations whose
// operation failed, sorted; the threads in the order of their lists (the
// injector numbers threads in the order they first call, which varies).
func failuresByThread(ops []testutil.Op) [][]int {
	by := map[int][]int{}
	for _, op := range ops {
		if _, ok := by[op.Thread]; !ok {
			by[op.Thread] = []int{}
		}
		if op.Status != 0 {
			by[op.Thread] = append(by[op.Thread], op.Iter)
		}
	}
	var out [][]int
	for _, f := range by {
		sort.Ints(f)
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return slices.Compare(out[i], out[j]) < 0 })
	return out
}

// TestRuleWithoutConditionsFailsTheSameCalls: a rule with no condition
// but sizes is decided by a countdown that lets the calls it passes take
// the fast half (docs/architecture.md, "The hot path"); the same rule with
// a call range every call meets, under the recording, is evaluated in the
// slow half on every call. Seeded, both fail the same calls of each thread,
// whether the size of the calls lies in a bucket the rule covers whole (the
// fast half) or in part (the rules half). The countdown rule counts every
// call as a match, across a configuration change in the middle of the run, and its
// failures stay those of the run without one.
func TestRuleWithoutConditionsFailsTheSameCalls(t *testing.T) {
	h := newHarness(t)
	runWith := func(flags []string, rule string, rmaArgs ...string) [][]int {
		ops, out := h.run(t, append([]string{"--seed", "7", "--rule", rule}, flags...), append([]string{"--seq", "put"}, rmaArgs...)...)
		if len(ops) == 0 {
			t.Fatalf("%s: no operations\n%s", rule, out)
		}
		return failuresByThread(ops)
	}
	run := func(rule string, rmaArgs ...string) [][]int { return runWith(nil, rule, rmaArgs...) }
	for _, c := range []struct{ rule, size string }{
		{"prob=10", "8"},
		{"prob=10 min-size=1K", "4096"},   // sizes 4096..8191, all matched
		{"prob=10 min-size=5000", "8000"}, // sizes 4096..8191, some matched
	} {
		fast := run("hooks=ucp_put_nbx "+c.rule, "--ops", "400", "--threads", "2", "--size", c.size)
		slow := runWith([]string{"--record"}, "hooks=ucp_put_nbx calls=0..1000000000 "+c.rule, "--ops", "400", "--threads", "2", "--size", c.size)
		if len(fast) != 2 || len(fast[0])+len(fast[1]) < 30 || len(fast[0])+len(fast[1]) > 140 {
			t.Fatalf("%s, size %s, over 2 threads of 400 puts: failures %v, want about 80 over two threads", c.rule, c.size, fast)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("seed 7, %s, size %s: failures without a call range %v, with one %v: want the same calls",
				c.rule, c.size, fast, slow)
		}
	}
	if got := run("hooks=ucp_put_nbx prob=100 min-size=1K", "--ops", "20", "--size", "512"); !reflect.DeepEqual(got, [][]int{{}}) {
		t.Fatalf("min-size=1K failed puts of 512 bytes: %v", got)
	}
	var want []int
	for k := 3; k < 40; k += 4 {
		want = append(want, k)
	}
	if got := run("hooks=ucp_put_nbx pattern=OOOX", "--ops", "40"); !reflect.DeepEqual(got, [][]int{want}) {
		t.Fatalf("pattern=OOOX failed puts %v, want %v", got, want)
	}

	// Matches: every call, counted by the hook's calls while a countdown
	// decides, and folded into the rule's counter at the configuration
	// change (rule 2); --linger-ms keeps the process for the status.
	alone := run("hooks=ucp_put_nbx prob=10 min-size=1K", "--ops", "300", "--size", "4096")
	e := h.start(t, []string{"--seed", "7", "--rule", "hooks=ucp_put_nbx prob=10 min-size=1K"},
		"--seq", "put", "--ops", "300", "--size", "4096", "--interval-us", "2000", "--linger-ms", "30000")
	waitFor(t, 20*time.Second, "50 puts", func() bool { return hookStatus(t, h.statusOf(t), "ucp_put_nbx").Calls >= 50 })
	h.mustCtl(t, "rule", "add", "--hooks", "ucp_get_nbx", "--max-faults", "1")
	waitFor(t, 30*time.Second, "300 puts", func() bool { return hookStatus(t, h.statusOf(t), "ucp_put_nbx").Calls >= 300 })
	time.Sleep(100 * time.Millisecond)
	st := h.statusOf(t)
	r, ok := ruleByID(st, 1)
	put := hookStatus(t, st, "ucp_put_nbx")
	e.Cmd.Process.Signal(os.Interrupt)
	got := failuresByThread(testutil.ParseOps(e.Wait(t, 20*time.Second)))
	if !ok || put.Calls != 300 || r.Matches != 300 || r.Faults != put.Faults {
		t.Fatalf("rule %+v, put hook %+v: want 300 calls, 300 matches and the hook's faults", r, put)
	}
	if !reflect.DeepEqual(got, alone) || len(got) != 1 || uint64(len(got[0])) != r.Faults {
		t.Fatalf("failures %v across a configuration change (rule counted %d), want %v as without one", got, r.Faults, alone)
	}
}

// TestRulesHalfDecidesAsTheSlowHalf: the calls that a rule with a call
// range, a step, an endpoint, a window, a size range covering their bucket
// in part or a spent fault budget may match (or a later rule decide), and
// that no rule fails, pass in the rules half (rules_fast.h) without
// ucxf_enter; with the recording on, every such call goes through
// ucxf_enter (the recording fast half leaves them to it).
// Seeded, both fail the same calls of each thread, and the rules count the
// same matches: a difference in what the two halves count or decide shows.
func TestRulesHalfDecidesAsTheSlowHalf(t *testing.T) {
	h := newHarness(t)
	type outcome struct {
		fails   [][]int
		matches []uint64 // per rule, by id
		faults  uint64   // the hook's
		since   uint64   // the hook's calls since the last fault, summed over the threads (exited)
	}
	run := func(rules []string, size, threads string, record bool) outcome {
		t.Helper()
		flags := []string{"--seed", "7"}
		for _, r := range rules {
			flags = append(flags, "--rule", "hooks=ucp_put_nbx "+r)
		}
		if record {
			flags = append(flags, "--record")
		}
		n, _ := strconv.Atoi(threads)
		e := h.start(t, flags, "--seq", "put", "--ops", "400", "--threads", threads, "--size", size, "--linger-ms", "30000")
		waitFor(t, 30*time.Second, "every put", func() bool {
			return hookStatus(t, h.statusOf(t), "ucp_put_nbx").Calls >= uint64(400*n)
		})
		st := h.statusOf(t)
		var o outcome
		for id := 1; id <= len(rules); id++ {
			r, ok := ruleByID(st, id)
			if !ok {
				t.Fatalf("%v: no rule %d in status", rules, id)
			}
			o.matches = append(o.matches, r.Matches)
		}
		o.faults = hookStatus(t, st, "ucp_put_nbx").Faults
		o.since = hookStatus(t, st, "ucp_put_nbx").CallsSinceFault
		e.Cmd.Process.Signal(os.Interrupt)
		o.fails = failuresByThread(testutil.ParseOps(e.Wait(t, 20*time.Second)))
		return o
	}
	// Each thread has its own endpoint, numbered in the order the threads
	// create them, and its own draws, by the order of its first call: the
	// endpoint rules run on one thread, so that the two runs agree on
	// which draws endpoint 0 sees.
	for _, c := range []struct {
		rules         []string
		size, threads string
		matches       []uint64
	}{
		{[]string{"prob=10 calls=50..349"}, "8", "2", []uint64{600}},
		{[]string{"pattern=OOX calls=10..300+2"}, "8", "2", []uint64{2 * 146}},
		{[]string{"prob=10 endpoint=1", "prob=10 endpoint=0"}, "8", "1", []uint64{0, 400}},
		{[]string{"prob=10 for=1h"}, "8", "2", []uint64{800}},
		{[]string{"prob=10 min-size=5000"}, "8000", "2", []uint64{800}},
		{[]string{"prob=10 calls=..99", "prob=20 calls=50.."}, "8", "2", []uint64{200, 600}},
		{[]string{"prob=30 max-faults=5 calls=1.."}, "8", "1", []uint64{399}}, // one thread: the budget, shared, goes to whichever thread draws first
		{[]string{"prob=100 max-faults=3"}, "8", "1", []uint64{400}},          // counts down to every call
	} {
		half, slow := run(c.rules, c.size, c.threads, false), run(c.rules, c.size, c.threads, true)
		n := 0
		for _, f := range half.fails {
			n += len(f)
		}
		if n == 0 || uint64(n) != half.faults {
			t.Fatalf("%v: failures %v, the hook counted %d: want some, all counted", c.rules, half.fails, half.faults)
		}
		var since uint64
		for _, f := range half.fails {
			last := -1
			if len(f) > 0 {
				last = f[len(f)-1]
			}
			since += uint64(400 - (last + 1)) // the thread's puts after its last failure
		}
		if half.since != since {
			t.Fatalf("%v: status says %d calls since the last fault over the exited threads, their failures %d", c.rules, half.since, since)
		}
		if !reflect.DeepEqual(half.matches, c.matches) {
			t.Fatalf("%v: the rules matched %v calls, want %v", c.rules, half.matches, c.matches)
		}
		if !reflect.DeepEqual(half, slow) {
			t.Fatalf("seed 7, %v, size %s: in the rules half %+v, through ucxf_enter %+v: want the same", c.rules, c.size, half, slow)
		}
	}
}

// TestRuleViaEnvironment sets UCX_FAULT_RULES directly (not through
// inject --rule), with two rules for two hooks, and a bad one.
func TestRuleViaEnvironment(t *testing.T) {
	h := newHarness(t)
	t.Setenv(control.EnvRules, "hooks=ucp_put_nbx calls=1..2 codes=-80; hooks=ucp_get_nbx pattern=OX")
	ops, _ := h.run(t, nil, "--seq", "put,get", "--ops", "6")
	puts, gets := opsOf(ops, "put"), opsOf(ops, "get")
	if got := failedIndices(puts); !reflect.DeepEqual(got, []int{1, 2}) || puts[1].Status != -80 {
		t.Fatalf("puts failed at %v (status %d), want [1 2] with -80", got, puts[1].Status)
	}
	if got := failedIndices(gets); !reflect.DeepEqual(got, []int{1, 3, 5}) {
		t.Fatalf("gets failed at %v, want [1 3 5]", got)
	}
	// A bad rule leaves the injector off, says why, and the host runs.
	t.Setenv(control.EnvRules, "calls=2..1")
	e := testutil.StartExample(t, h.cli, h.injectArgs([]string{"--probability", "100"}, "--seq", "put", "--ops", "5")...)
	out := e.Wait(t, 30*time.Second)
	if f := failedIndices(testutil.ParseOps(out)); len(f) != 0 {
		t.Fatalf("with a bad %s the injector failed %v", control.EnvRules, f)
	}
	if !strings.Contains(e.Stderr(), control.EnvRules) || !strings.Contains(e.Stderr(), "a rule is:") {
		t.Fatalf("stderr does not explain the bad rule:\n%s", e.Stderr())
	}
}

// TestRuleGlobalStrategyStaysForUncoveredHooks: rules alone decide for the
// hooks they cover; the other hooks keep the global strategy.
func TestRuleGlobalStrategyStaysForUncoveredHooks(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--probability", "100", "--rule", "hooks=ucp_put_nbx calls=1"},
		"--seq", "put,get", "--ops", "5")
	if got := failedIndices(opsOf(ops, "put")); !reflect.DeepEqual(got, []int{1}) {
		t.Fatalf("covered puts failed at %v, want [1]", got)
	}
	if got := failedIndices(opsOf(ops, "get")); len(got) != 5 {
		t.Fatalf("uncovered gets failed at %v, want all 5 (global random 100 %%)", got)
	}
}

// TestRuleViaCLIAndSocket adds, lists and deletes rules on a running
// process through the CLI and through a raw socket client, and checks the
// counters status reports.
func TestRuleViaCLIAndSocket(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, nil, "--seq", "put,flush", "--ops", "0", "--interval-us", "500")
	out := h.mustCtl(t, "rule", "add", "--hooks", "ucp_put_nbx", "--max-faults", "5", "--codes=-80")
	if !strings.Contains(out, "rule 1: hooks=ucp_put_nbx prob=100 codes=-80 max-faults=5") {
		t.Fatalf("rule add answered %q", out)
	}
	waitFor(t, 10*time.Second, "five faults by rule 1", func() bool {
		r, _ := ruleByID(h.statusOf(t), 1)
		return r.Faults >= 5
	})
	time.Sleep(100 * time.Millisecond)
	st := h.statusOf(t)
	r, _ := ruleByID(st, 1)
	put := hookStatus(t, st, "ucp_put_nbx")
	if r.Faults != 5 || put.Faults != 5 || r.Matches <= 5 || r.Matches > put.Calls || st.FaultCodes["-80"] != 5 {
		t.Fatalf("rule %+v, put hook %+v, codes %v: want 5 faults of -80 and more matches", r, put, st.FaultCodes)
	}

	// The socket takes the same text.
	conn, err := net.Dial("unix", h.socketOf(e.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	send := func(line string) control.Response {
		t.Helper()
		if _, err := conn.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := rd.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var r control.Response
		if err := json.Unmarshal(resp, &r); err != nil {
			t.Fatalf("%v: %s", err, resp)
		}
		return r
	}
	resp := send(`{"v":1,"cmd":"rules","rule_op":"add","rules":["hooks=ucp_ep_flush_nbx delay=1ms max-faults=3"]}`)
	if !resp.OK || len(resp.Status.Rules) != 2 || resp.Status.Rules[1].ID != 2 {
		t.Fatalf("socket rules add: %+v", resp)
	}
	resp = send(`{"v":1,"cmd":"rules","rule_op":"add","rules":["hooks=ucp_ep_flush_nbx delay=fast"]}`)
	if resp.OK || !strings.Contains(resp.Error, "a rule is:") {
		t.Fatalf("socket accepted a bad rule or did not show the forms: %+v", resp)
	}
	waitFor(t, 10*time.Second, "three delays by rule 2", func() bool {
		r, _ := ruleByID(h.statusOf(t), 2)
		return r.Delays >= 3
	})
	st = h.statusOf(t)
	r2, _ := ruleByID(st, 2)
	if r2.Delays != 3 || r2.Faults != 0 || r2.DelayNS < 3*uint64(time.Millisecond) || st.DelayNS < r2.DelayNS {
		t.Fatalf("rule 2 %+v, process delay %d ns: want 3 delays adding >= 3 ms", r2, st.DelayNS)
	}

	list := h.mustCtl(t, "rule", "list")
	for _, want := range []string{"2 rules", "hooks=ucp_put_nbx prob=100 codes=-80 max-faults=5",
		"hooks=ucp_ep_flush_nbx max-faults=3 delay=1ms"} {
		if !strings.Contains(list, want) {
			t.Fatalf("rule list lacks %q:\n%s", want, list)
		}
	}
	h.mustCtl(t, "rule", "del", "1")
	if r := h.ctl(t, "rule", "del", "1"); r.code == 0 || !strings.Contains(r.stderr, "no rule 1 (rules: 2)") {
		t.Fatalf("deleting a deleted rule: exit %d\n%s", r.code, r.stderr)
	}
	st = h.statusOf(t)
	if len(st.Rules) != 1 || st.Rules[0].ID != 2 {
		t.Fatalf("after rule del 1: %+v", st.Rules)
	}
	// Without rules the global strategy decides again: random 0 % fails nothing.
	h.mustCtl(t, "rule", "clear")
	before := hookStatus(t, h.statusOf(t), "ucp_put_nbx")
	time.Sleep(200 * time.Millisecond)
	after := h.statusOf(t)
	if len(after.Rules) != 0 || hookStatus(t, after, "ucp_put_nbx").Faults != before.Faults {
		t.Fatalf("after rule clear: rules %+v, put faults %d -> %d", after.Rules, before.Faults,
			hookStatus(t, after, "ucp_put_nbx").Faults)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	ops := testutil.ParseOps(e.Wait(t, 20*time.Second))
	if got := failedIndices(opsOf(ops, "put")); len(got) != 5 || !slices.Equal(got, []int{got[0], got[0] + 1, got[0] + 2, got[0] + 3, got[0] + 4}) {
		t.Fatalf("the program saw put failures at %v, want 5 in a row", got)
	}
}
