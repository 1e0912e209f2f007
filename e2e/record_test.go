package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// recordRun runs the example under the injector with recording on from the
// start, waits for it to finish its operations (it then waits for a signal,
// so the call log can be read) and writes the recording to a file.
func (h *harness) recordRun(t *testing.T, flags []string, rmaArgs ...string) ([]testutil.Op, *recording.Process, string) {
	t.Helper()
	// Recording starts after set-up, so that it holds the operations (and
	// the teardown after them), as a replay into a run that is already
	// set up needs.
	e := h.start(t, flags, append(rmaArgs, "--linger-ms", "60000", "--wait-before-start-ms", "1000")...)
	h.mustCtl(t, "record-toggle", "on")
	waitFor(t, 60*time.Second, "the example to finish its operations", func() bool {
		return strings.Contains(e.Output(), "DONE")
	})
	path := filepath.Join(t.TempDir(), "rec.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	e.Cmd.Process.Signal(os.Interrupt)
	out := e.Wait(t, 20*time.Second)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Processes) != 1 {
		t.Fatalf("recording holds %d processes, want 1", len(f.Processes))
	}
	return testutil.ParseOps(out), &f.Processes[0], path
}

// callsOf returns the recorded calls of one function.
func callsOf(p *recording.Process, fn string) []recording.Call {
	var out []recording.Call
	for _, c := range p.Calls {
		if c.Fn == fn {
			out = append(out, c)
		}
	}
	return out
}

var fnOfOp = map[string]string{"put": "ucp_put_nbx", "get": "ucp_get_nbx", "flush": "ucp_ep_flush_nbx"}

func TestRecordDumpPatternShowsThePattern(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--pattern", "XOOXO", "--hooks", "ucp_put_nbx", "--record"}, "--ops", "20", "--seq", "put", "--linger-ms", "60000")
	waitFor(t, 30*time.Second, "the operations", func() bool { return strings.Contains(e.Output(), "DONE") })
	out := h.mustCtl(t, "record-dump", "pattern", "--raw")
	want := strings.Repeat("XOOXO", 4)
	if !strings.Contains(out, "ucp_put_nbx") || !strings.Contains(out, want) {
		t.Fatalf("record-dump pattern:\n%s\nwant ucp_put_nbx %s", out, want)
	}
	if !strings.Contains(out, "codes -3,-6,-20,-3,-6,-20,-3,-6") {
		t.Fatalf("record-dump pattern does not list the codes in turn:\n%s", out)
	}
	sum := h.mustCtl(t, "record-dump", "summary")
	if !strings.Contains(sum, "ucp_put_nbx") || !strings.Contains(sum, "20") {
		t.Fatalf("summary:\n%s", sum)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
}

func TestRecordingHoldsEveryCallWithSizesAndStatuses(t *testing.T) {
	h := newHarness(t)
	ops, p, _ := h.recordRun(t, []string{"--probability", "25", "--seed", "9"}, "--ops", "200", "--seq", "put,get,flush", "--size", "4096")
	if !p.Complete || p.Lost.Any() {
		t.Fatalf("recording incomplete: %+v", p.Lost)
	}
	for op, fn := range fnOfOp {
		printed := opsOf(ops, op)
		calls := callsOf(p, fn)
		if len(calls) != 200 || len(printed) != 200 {
			t.Fatalf("%s: %d recorded calls and %d printed ops, want 200", fn, len(calls), len(printed))
		}
		for i, c := range calls {
			wantSize := uint64(4096)
			if op == "flush" {
				wantSize = 0
			}
			if c.Size != wantSize || c.Status != printed[i].Status || c.Injected != (c.Status != 0) || c.Endpoint != 0 {
				t.Fatalf("%s call %d: recorded %+v, program printed %+v", fn, i, c, printed[i])
			}
		}
	}
}

func TestReplayReproducesRecordedOutcomes(t *testing.T) {
	h := newHarness(t)
	ops, _, path := h.recordRun(t, []string{"--probability", "30", "--seed", "5"}, "--ops", "150", "--seq", "put,get,flush")
	if len(failedIndices(ops)) == 0 {
		t.Fatal("the recorded run has no failures to replay")
	}
	// A fresh run, nothing injected, waits before its first operation while
	// the recording is loaded.
	e := h.start(t, []string{"--disabled"}, "--ops", "150", "--seq", "put,get,flush", "--wait-before-start-ms", "60000")
	out := h.mustCtl(t, "replay", "--from", path)
	e.Release(t)
	if !strings.Contains(out, "replaying 45") { // 450 operations and the teardown
		t.Fatalf("replay: %s", out)
	}
	replayed := testutil.ParseOps(e.Wait(t, 60*time.Second))
	if len(replayed) != len(ops) {
		t.Fatalf("replayed run has %d ops, recorded %d", len(replayed), len(ops))
	}
	for i := range ops {
		if ops[i].Fn != replayed[i].Fn || ops[i].Status != replayed[i].Status {
			t.Fatalf("op %d: recorded %s status %d, replayed %s status %d", i, ops[i].Fn, ops[i].Status, replayed[i].Fn, replayed[i].Status)
		}
	}
}

func TestReplayByFunctionSurvivesOtherInterleaving(t *testing.T) {
	h := newHarness(t)
	ops, _, path := h.recordRun(t, []string{"--probability", "40", "--seed", "11"}, "--ops", "100", "--seq", "put,get")
	e := h.start(t, []string{"--disabled"}, "--ops", "50", "--seq", "get,get,put,put", "--wait-before-start-ms", "60000")
	h.mustCtl(t, "replay", "--from", path)
	e.Release(t)
	replayed := testutil.ParseOps(e.Wait(t, 60*time.Second))
	for _, op := range []string{"put", "get"} {
		rec, rep := opsOf(ops, op), opsOf(replayed, op)
		if len(rec) != 100 || len(rep) != 100 {
			t.Fatalf("%s: %d recorded, %d replayed", op, len(rec), len(rep))
		}
		for i := range rec {
			if rec[i].Status != rep[i].Status {
				t.Fatalf("%s %d: recorded %d, replayed %d", op, i, rec[i].Status, rep[i].Status)
			}
		}
	}
	// --key global keeps one cursor: with another interleaving the outcomes
	// land on other functions, which is why function is the default.
	e = h.start(t, []string{"--disabled"}, "--ops", "100", "--seq", "put,get", "--wait-before-start-ms", "60000")
	h.mustCtl(t, "replay", "--from", path, "--key", "global")
	e.Release(t)
	global := testutil.ParseOps(e.Wait(t, 60*time.Second))
	for i := range ops {
		if ops[i].Status != global[i].Status {
			t.Fatalf("global replay, same interleaving: op %d recorded %d, replayed %d", i, ops[i].Status, global[i].Status)
		}
	}
}

func TestReplayOwnRecordingAndCycle(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--pattern", "XO", "--hooks", "ucp_put_nbx", "--record"}, "--ops", "0", "--seq", "put", "--interval-us", "500")
	waitFor(t, 10*time.Second, "some puts", func() bool { return len(testutil.ParseOps(e.Output())) >= 10 })
	h.mustCtl(t, "record-toggle", "off")
	rec := h.mustCtl(t, "record-dump", "pattern", "--raw")
	pm := regexp.MustCompile(`(?m)^\s+ucp_put_nbx\s+([XO]+)$`).FindStringSubmatch(rec)
	if !strings.Contains(rec, "XOXO") || pm == nil {
		t.Fatalf("own recording: %s", rec)
	}
	// The recording stops wherever the toggle lands: an odd number of
	// puts (XO...X) replayed in a cycle fails two in a row at each turn.
	recorded := pm[1]
	out := h.mustCtl(t, "replay", "--cycle")
	if !strings.Contains(out, "replaying") {
		t.Fatalf("replay own: %s", out)
	}
	m := len(testutil.ParseOps(e.Output()))
	waitFor(t, 10*time.Second, "replayed puts", func() bool { return len(testutil.ParseOps(e.Output())) >= m+200 })
	window := testutil.ParseOps(e.Output())[m+10 : m+200]
	failed := len(failedIndices(window))
	want := len(window) * strings.Count(recorded, "X") / len(recorded)
	if failed < want-2 || failed > want+2 {
		t.Fatalf("cycled replay of %d outcomes %s: %d of %d failed, want %d", len(recorded), recorded, failed, len(window), want)
	}
	st := h.status(t)[0]
	if st.Strategy != "replay" || st.ReplayLen == 0 {
		t.Fatalf("status during replay: %+v", st)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
}

func TestTwoThreadsTotalsMatchWhatEachThreadPrinted(t *testing.T) {
	h := newHarness(t)
	ops, p, _ := h.recordRun(t, []string{"--probability", "20", "--seed", "3"}, "--ops", "100", "--seq", "put,get", "--threads", "2")
	type key struct {
		fn     string
		thread int
	}
	printed := map[string][2]int{} // fn -> calls, failures
	for _, op := range ops {
		v := printed[fnOfOp[op.Fn]]
		v[0]++
		if op.Status != 0 {
			v[1]++
		}
		printed[fnOfOp[op.Fn]] = v
	}
	recorded := map[string][2]int{}
	perThread := map[key]int{}
	for _, c := range p.Calls {
		v := recorded[c.Fn]
		v[0]++
		if c.Failed() {
			v[1]++
		}
		recorded[c.Fn] = v
		perThread[key{c.Fn, c.Thread}]++
	}
	for fn, v := range printed {
		if recorded[fn] != v {
			t.Fatalf("%s: recorded calls/failures %v, printed %v", fn, recorded[fn], v)
		}
		if perThread[key{fn, 0}] != 100 || perThread[key{fn, 1}] != 100 {
			t.Fatalf("%s: per-thread calls %d and %d, want 100 each", fn, perThread[key{fn, 0}], perThread[key{fn, 1}])
		}
	}
}

// TestRecordingOfEightThreadsKeepsEachThreadsOrder records eight threads
// that each log into their own part of the call log: the dump merges them
// into one sequence ordered by time, in which every thread's calls appear in
// the order that thread made them, with the outcomes it printed.
func TestRecordingOfEightThreadsKeepsEachThreadsOrder(t *testing.T) {
	h := newHarness(t)
	const threads, ops = 8, 200
	printedOps, p, _ := h.recordRun(t, []string{"--probability", "20", "--seed", "5"},
		"--ops", fmt.Sprint(ops), "--seq", "put,get", "--threads", fmt.Sprint(threads))
	if !p.Complete {
		t.Fatalf("recording incomplete: %+v", p.Lost)
	}
	// One string per thread: its puts and gets in order, with failures
	// marked; the recording numbers threads by first call, the example by
	// creation, so the two sets are compared sorted.
	printed := map[int][]string{}
	for _, op := range printedOps {
		printed[op.Thread] = append(printed[op.Thread], fmt.Sprintf("%s:%v", fnOfOp[op.Fn], op.Status != 0))
	}
	recorded := map[int][]string{}
	var last uint64
	for i, c := range p.Calls {
		if c.Seq != uint64(i) || c.TimeNS < last {
			t.Fatalf("call %d: seq %d at %d ns after one at %d ns: not one order by time", i, c.Seq, c.TimeNS, last)
		}
		last = c.TimeNS
		if c.Fn == "ucp_put_nbx" || c.Fn == "ucp_get_nbx" {
			recorded[c.Thread] = append(recorded[c.Thread], fmt.Sprintf("%s:%v", c.Fn, c.Failed()))
		}
	}
	join := func(m map[int][]string) []string {
		var out []string
		for _, v := range m {
			out = append(out, strings.Join(v, " "))
		}
		slices.Sort(out)
		return out
	}
	want, got := join(printed), join(recorded)
	if len(want) != threads || len(printedOps) != threads*ops*2 {
		t.Fatalf("the example printed %d operations of %d threads, want %d of %d", len(printedOps), len(want), threads*ops*2, threads)
	}
	if !slices.Equal(want, got) {
		t.Fatalf("per-thread sequences differ: recorded %d threads, printed %d\nrecorded: %.300q\nprinted:  %.300q", len(got), len(want), got, want)
	}
	failed := 0
	for _, c := range p.Calls {
		if c.Failed() {
			failed++
		}
	}
	if failed == 0 {
		t.Fatalf("no recorded failure at 20 %%: the injector did not act")
	}
}

// TestRecordingOfEightThreadsInASmallLog fills a call log of 1000 records
// from eight threads: it keeps exactly its capacity, and every other record
// is counted as lost, in status and in the dump.
func TestRecordingOfEightThreadsInASmallLog(t *testing.T) {
	h := newHarness(t)
	const capacity = 1000
	args := h.injectArgs([]string{"--record", "--probability", "0", "--hooks", "ucp_put_nbx"},
		"--seq", "put", "--ops", "500", "--threads", "8", "--quiet", "--linger-ms", "3600000")
	cmd := exec.Command(h.cli, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", control.EnvRecordCapacity, capacity))
	e := testutil.StartCmd(t, cmd)
	waitFor(t, 60*time.Second, "the puts", func() bool { return strings.Contains(e.Output(), "DONE") })
	st := h.statusOf(t)
	if st.Calls < 8*500 {
		t.Fatalf("status counts %d calls, the example made at least %d puts", st.Calls, 8*500)
	}
	total := st.Records + st.RecordsLost
	if st.Records != capacity || total < st.Calls {
		t.Fatalf("status: %d records, %d lost, %d calls; want %d held and every call counted", st.Records, st.RecordsLost, st.Calls, capacity)
	}
	path := filepath.Join(t.TempDir(), "rec.json")
	if r := h.ctl(t, "record-dump", "records", "-o", path); r.code != 0 {
		t.Fatalf("record-dump records: exit %d\n%s", r.code, r.stderr)
	}
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := f.Processes[0]
	held := uint64(len(p.Calls) + len(p.EndpointEvents))
	if held != capacity || p.Lost.OverwrittenRecords+p.Lost.OvertakenRecords != total-capacity || p.Complete {
		t.Fatalf("dump: %d records, %d overwritten, %d overtaken, complete %v; want %d and %d lost", held,
			p.Lost.OverwrittenRecords, p.Lost.OvertakenRecords, p.Complete, capacity, total-capacity)
	}
	threads := map[int]bool{}
	for _, c := range p.Calls {
		threads[c.Thread] = true
	}
	if len(threads) < 2 {
		t.Fatalf("the log kept the calls of %d threads of 8", len(threads))
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 60*time.Second)
}

func TestCorruptRecordingIsRefusedAndNothingSent(t *testing.T) {
	h := newHarness(t)
	_, _, path := h.recordRun(t, []string{"--probability", "50", "--seed", "1"}, "--ops", "10", "--seq", "put")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--seq", "put", "--interval-us", "1000")
	dir := t.TempDir()
	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated": {good[:len(good)/2], "truncated"},
		"foreign":   {[]byte(`{"name":"something else"}`), "not a ucxfault recording"},
		"version":   {[]byte(strings.Replace(string(good), `"version": 2`, `"version": 3`, 1)), "unsupported recording version 3"},
		"binary":    {[]byte{0x7f, 'E', 'L', 'F', 0, 1}, "not a ucxfault recording"},
		"bad code":  {[]byte(strings.Replace(string(good), `"status": -`, `"status": 5`, 1)), "status 5"},
	}
	for name, tc := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		os.WriteFile(p, tc.data, 0o644)
		r := h.ctl(t, "replay", "--from", p)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s recording: exit %d, stderr %q; want exit 2 and %q", name, r.code, r.stderr, tc.want)
		}
	}
	st := h.status(t)[0]
	if st.Strategy != "random" || st.ReplayLen != 0 {
		t.Fatalf("a refused recording reached the process: %+v", st)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
}

// TestGlobalReplayWithFreedRequests replays, with one cursor over all calls,
// a recording whose operations returned requests that the program freed:
// the recorded ucp_request_free calls take no outcome in the replaying
// process, so they must not be in the schedule, or every later outcome
// lands one call early.
func TestGlobalReplayWithFreedRequests(t *testing.T) {
	h := newHarness(t)
	// Deferred failures make the operations return requests, whatever
	// the UCX version, and the example frees each.
	args := []string{"--ops", "100", "--seq", "put,get"}
	ops, p, path := h.recordRun(t, []string{"--mode", "deferred", "--probability", "30", "--seed", "7"}, args...)
	if len(failedIndices(ops)) == 0 {
		t.Fatal("the recorded run has no failures to replay")
	}
	if n := len(callsOf(p, "ucp_request_free")); n == 0 {
		t.Fatal("the recording holds no ucp_request_free: the test would not see the drift")
	}
	want := 0
	for _, c := range p.Calls {
		if _, hk, err := hooks.Lookup(c.Fn); err == nil && hk.Faultable && hk.Refusal == "" && !hk.Polls {
			want++
		}
	}
	e := h.start(t, []string{"--disabled"}, append(args, "--wait-before-start-ms", "60000")...)
	if out := h.mustCtl(t, "replay", "--from", path, "--key", "global"); !strings.Contains(out, fmt.Sprintf("replaying %d outcomes", want)) {
		t.Errorf("replay: %s; want %d outcomes (the operations and the teardown, no request frees)", out, want)
	}
	e.Release(t)
	replayed := testutil.ParseOps(e.Wait(t, 60*time.Second))
	if len(replayed) != len(ops) {
		t.Fatalf("replayed run has %d ops, recorded %d", len(replayed), len(ops))
	}
	wrong := 0
	for i := range ops {
		if ops[i].Fn != replayed[i].Fn || ops[i].Status != replayed[i].Status {
			wrong++
		}
	}
	if wrong != 0 {
		t.Fatalf("global replay: %d of %d operations differ from the recording", wrong, len(ops))
	}
}
