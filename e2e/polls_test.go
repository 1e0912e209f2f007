package e2e

// Status polls (ucp_request_check_status, ucp_request_test) report the
// outcome of the operation that made the request: by default they are not
// fault sites. A poll named by the user is drawn on its own, but may fail
// only a request whose operation has completed. testdata/polls.c polls each
// request a random number of times while it is in flight, and checks every
// error a poll reports against libucp's own ucp_request_check_status.

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// pollsOps is the number of operations of each polls run: a third each of
// puts, gets and receives, about 0.1 s.
const pollsOps = 1500

// pollsRun is one run of testdata/polls.c.
type pollsRun struct {
	ops []testutil.Op
	// early counts the polls made before progress, earlyInFlight those
	// that found their request in flight.
	early, earlyInFlight int
	out                  string
}

func parsePollsRun(t *testing.T, out string) pollsRun {
	t.Helper()
	r := pollsRun{ops: testutil.ParseOps(out), out: out}
	if strings.Contains(out, "VIOLATION") {
		t.Fatalf("a poll reported a request in flight as finished:\n%s", grepLines(out, "VIOLATION"))
	}
	if len(r.ops) != pollsOps || !strings.Contains(out, "\nDONE") {
		t.Fatalf("%d of %d operations, or no DONE:\n%s", len(r.ops), pollsOps, out)
	}
	for _, f := range strings.Fields(grepLines(out, "POLLS ")) {
		k, v, _ := strings.Cut(f, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "early":
			r.early = n
		case "early_inflight":
			r.earlyInFlight = n
		}
	}
	if r.earlyInFlight == 0 {
		t.Fatalf("no poll found its request in flight: the test saw nothing\n%s", grepLines(out, "POLLS "))
	}
	return r
}

// grepLines returns the lines of out that contain text.
func grepLines(out, text string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, text) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// runPolls runs the fixture under `ucxfault inject flags` to completion.
func (h *harness) runPolls(t *testing.T, bin string, flags []string) pollsRun {
	t.Helper()
	e := h.startProg(t, flags, bin, strconv.Itoa(pollsOps), "8")
	return parsePollsRun(t, e.Wait(t, 60*time.Second))
}

// failedSeqs lists the seq of each failed operation, and how each failure
// was learned.
func failedSeqs(ops []testutil.Op) (seqs []int, hows map[string]int) {
	hows = map[string]int{}
	for _, op := range ops {
		if op.Status != 0 {
			seqs = append(seqs, op.Seq)
			hows[op.How]++
		}
	}
	return seqs, hows
}

// within checks k successes of n trials against p, five standard deviations.
func within(t *testing.T, what string, k, n int, p float64) {
	t.Helper()
	mean, sd := float64(n)*p, math.Sqrt(float64(n)*p*(1-p))
	if f := float64(k); f < mean-5*sd || f > mean+5*sd {
		t.Fatalf("%s: %d of %d at %.0f%%: outside %.1f +/- %.1f", what, k, n, p*100, mean, 5*sd)
	}
	t.Logf("%s: %d of %d (expected %.1f +/- %.1f)", what, k, n, mean, 5*sd)
}

// requireEachFailed fails unless every kind of operation failed at least once.
func requireEachFailed(t *testing.T, ops []testutil.Op, how string) {
	t.Helper()
	for _, fn := range []string{"put", "get", "recv"} {
		n := 0
		for _, op := range opsOf(ops, fn) {
			if op.Status != 0 && (how == "" || op.How == how) {
				n++
			}
		}
		if n == 0 {
			t.Fatalf("no %s failed (how=%q): the injector did nothing to it", fn, how)
		}
	}
}

// By default each operation is decided once, at its call: the same
// operations fail run after run, at the configured rate, however often the
// program polls, and in deferred mode the same ones fail through their polls.
func TestPollsDeliverTheOperationsOutcome(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "polls")
	flags := []string{"--probability", "5", "--seed", "1"}
	a, b := h.runPolls(t, bin, flags), h.runPolls(t, bin, flags)
	d := h.runPolls(t, bin, append(flags, "--mode", "deferred"))
	t.Logf("polls before progress: %d and %d (%d and %d in flight), deferred %d",
		a.early, b.early, a.earlyInFlight, b.earlyInFlight, d.early)

	sa, howA := failedSeqs(a.ops)
	sb, _ := failedSeqs(b.ops)
	sd, howD := failedSeqs(d.ops)
	within(t, "operations failed", len(sa), pollsOps, 0.05)
	if !reflect.DeepEqual(sa, sb) {
		t.Fatalf("same seed, different operations failed:\n%v\n%v", sa, sb)
	}
	if !reflect.DeepEqual(sa, sd) {
		t.Fatalf("deferred mode failed other operations than immediate mode:\n%v\n%v", sa, sd)
	}
	if howA["immediate"] != len(sa) {
		t.Fatalf("immediate mode: failures learned %v, want all immediate (no poll fails on its own)", howA)
	}
	if howD["completion"] != len(sd) {
		t.Fatalf("deferred mode: failures learned %v, want all on completion, through the polls", howD)
	}
	requireEachFailed(t, a.ops, "immediate")
	requireEachFailed(t, d.ops, "completion")
}

// `hook disable ucp_get_nbx` protects gets whose requests are polled: their
// polls are not fault sites, and only the get's own decision could fail it.
func TestPollsHookDisableProtectsRequests(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "polls")
	for _, mode := range []string{"immediate", "deferred"} {
		t.Run(mode, func(t *testing.T) {
			gate := filepath.Join(t.TempDir(), "go")
			e := h.startProg(t, []string{"--probability", "5", "--seed", "1", "--mode", mode},
				bin, strconv.Itoa(pollsOps), "8", gate)
			h.mustCtl(t, "--pid", strconv.Itoa(e.PID), "hook", "disable", "ucp_get_nbx")
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			r := parsePollsRun(t, e.Wait(t, 60*time.Second))
			if f := failedIndices(opsOf(r.ops, "get")); len(f) != 0 {
				t.Fatalf("ucp_get_nbx disabled, yet %d gets failed", len(f))
			}
			for _, fn := range []string{"put", "recv"} {
				if len(failedIndices(opsOf(r.ops, fn))) == 0 {
					t.Fatalf("no %s failed: the injector did nothing", fn)
				}
			}
		})
	}
}

// Named in --hooks, polls are drawn on their own again (timing-dependent),
// but only a poll that finds its operation completed may fail: every
// failure learned through a poll replaces a completed status, at the
// configured rate per completed request, and no request in flight is ever
// reported finished.
func TestPollsNamedFailOnlyCompletedRequests(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "polls")
	r := h.runPolls(t, bin, []string{"--probability", "5", "--seed", "1",
		"--hooks", "ucp_put_nbx,ucp_get_nbx,ucp_tag_recv_nbx,ucp_request_check_status,ucp_request_test"})
	_, hows := failedSeqs(r.ops)
	within(t, "operations failed at their call", hows["immediate"], pollsOps, 0.05)
	// Every operation that passed its call was polled until a poll found it
	// complete: that poll failed it with the configured probability.
	within(t, "completed requests failed by their poll", hows["completion"], pollsOps-hows["immediate"], 0.05)
	requireEachFailed(t, r.ops, "completion")
	if hows["timeout"] != 0 {
		t.Fatalf("%d operations timed out", hows["timeout"])
	}
}

// Open MPI's pml ucx keeps requests on its stack and returns as soon as a
// poll says the operation finished. A named poll fault that said so while
// libucp still owned the request made it reuse that memory: every run of a
// rendezvous-size Sendrecv aborted inside libucp. A poll fault now reaches
// Open MPI only for a request that completed.
func TestMPIPollFaultKeepsOnStackRequests(t *testing.T) {
	mpirun := testutil.RequireMPI(t)
	mpicc := filepath.Join(filepath.Dir(mpirun), "mpicc")
	if _, err := exec.LookPath(mpicc); err != nil {
		t.Skipf("mpicc not found beside %s (install libopenmpi-dev: make deps-mpi)", mpirun)
	}
	h := newHarness(t)
	src, err := filepath.Abs(filepath.Join("testdata", "mpiring.c"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "mpiring")
	if msg, err := exec.Command(mpicc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, msg)
	}
	job := func(rule string) (string, int) {
		args := append(append([]string{}, mpirunFlags...), "-np", "2", "--mca", "pml", "ucx", "--mca", "osc", "ucx",
			"--mca", "pml_ucx_tls", "any", "--mca", "pml_ucx_devices", "any",
			h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet",
			"--hooks", "ucp_request_check_status,ucp_request_test", "--rule", rule, "--", bin, "3")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, mpirun, args...)
		cmd.Env = append(os.Environ(), mpiEnv...)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		text := string(out)
		for _, bad := range []string{"Assertion", "Caught signal", "Bad address", "Signal:", "exited on signal"} {
			if strings.Contains(text, bad) {
				t.Fatalf("rule %q: the job crashed (%q):\n%s", rule, bad, text)
			}
		}
		if err != nil || !strings.Contains(text, "DONE rank=0") || !strings.Contains(text, "DONE rank=1") {
			t.Fatalf("rule %q: the job did not end cleanly: %v\n%s", rule, err, text)
		}
		return text, strings.Count(text, "MPIERR")
	}
	const runs = 20
	for i := 0; i < runs; i++ {
		job("hooks=ucp_request_check_status calls=10 codes=IO_ERROR")
	}
	// Every poll from the tenth on fails once its request completed: the
	// faults do reach Open MPI, as MPI errors, and nothing breaks.
	for _, hook := range []string{"ucp_request_check_status", "ucp_request_test"} {
		out, n := job(fmt.Sprintf("hooks=%s calls=10.. codes=IO_ERROR", hook))
		if n == 0 {
			t.Fatalf("%s failed from its tenth call on, yet Open MPI reported no error:\n%s", hook, out)
		}
		t.Logf("%s: %d MPI errors reported", hook, n)
	}
}

// A recording made with the polls named gives each failure a poll delivered
// to the operation that made the request; replay keys on operations, never
// on polls, and fails the same operations the same way (on completion where
// a poll delivered the failure), however often the new run polls.
func TestPollsNamedFaultsReplayOnTheirOperations(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "polls")
	dir := t.TempDir()
	hold, gate, path := filepath.Join(dir, "hold"), filepath.Join(dir, "gate"), filepath.Join(dir, "rec.json")
	ops := strconv.Itoa(pollsOps)
	e := h.startProg(t, []string{"--probability", "5", "--seed", "1", "--record",
		"--hooks", "ucp_put_nbx,ucp_get_nbx,ucp_tag_recv_nbx,ucp_request_check_status,ucp_request_test"},
		bin, ops, "8", "-", hold)
	waitFor(t, 60*time.Second, "the operations", func() bool { return strings.Contains(e.Output(), "POLLS ") })
	h.mustCtl(t, "--pid", strconv.Itoa(e.PID), "record-dump", "records", "-o", path)
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	recorded := parsePollsRun(t, e.Wait(t, 60*time.Second)).ops
	_, hows := failedSeqs(recorded)
	if hows["immediate"] == 0 || hows["completion"] == 0 {
		t.Fatalf("the recorded run needs failures at the call and through polls: %v", hows)
	}
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for fn, hook := range map[string]string{"put": "ucp_put_nbx", "get": "ucp_get_nbx", "recv": "ucp_tag_recv_nbx"} {
		calls, printed := callsOf(&f.Processes[0], hook), opsOf(recorded, fn)
		if len(calls) != len(printed) {
			t.Fatalf("%d calls of %s recorded, the program made %d", len(calls), hook, len(printed))
		}
		for i, c := range calls {
			if c.Status != printed[i].Status || (c.Status != 0 && (c.How != printed[i].How || !c.Injected)) {
				t.Fatalf("%s %d: recorded %+v, the program saw %+v", fn, i, c, printed[i])
			}
		}
	}

	e = h.startProg(t, []string{"--disabled"}, bin, ops, "8", gate)
	h.mustCtl(t, "--pid", strconv.Itoa(e.PID), "replay", "--from", path)
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	replayed := parsePollsRun(t, e.Wait(t, 60*time.Second)).ops
	for i := range recorded {
		if replayed[i].Status != recorded[i].Status || (recorded[i].Status != 0 && replayed[i].How != recorded[i].How) {
			t.Fatalf("%s %d: recorded %d (%s), replayed %d (%s)", recorded[i].Fn, recorded[i].Seq, recorded[i].Status,
				recorded[i].How, replayed[i].Status, replayed[i].How)
		}
	}
}

// Before a named poll could fail only a completed request, a poll fault
// told the example that a request still in flight had failed: it freed the
// request and went on, and at the end closed its endpoint while UCX still
// worked for it. Over TCP the peer process (which runs without the
// injector) then died in 2 of 12 runs of this very command, on a UCX
// assertion about a wireup reply ("ucp_request.c:684 ... got REP message");
// first reported as a fatal "unexpected error: Endpoint timeout", libucp's
// ucp_request_try_send on a send whose connection went away, which these
// runs did not show. No real UCX failure leads there. A poll fault now
// lands only on a completed request, and the peer lives.
func TestPollFaultsEveryPollTCPPeerLives(t *testing.T) {
	h := newHarness(t)
	const runs = 12
	for i := 0; i < runs; i++ {
		e := h.start(t, []string{"--hooks", "ucp_request_check_status", "--probability", "100"},
			"--transport", "tcp", "--ops", "50")
		ops := testutil.ParseOps(e.Wait(t, 60*time.Second))
		if len(ops) != 150 {
			t.Fatalf("run %d: %d operations, want 150\n%s", i, len(ops), e.Stderr())
		}
		// The faults happened: every get and flush returned a request, and
		// every poll of it failed once it completed.
		for _, op := range ops {
			if (op.Fn == "get" || op.Fn == "flush") && (op.Status == 0 || op.How != "completion") {
				t.Fatalf("run %d: %s seq %d: status %d how %s; want a failure on completion", i, op.Fn, op.Seq, op.Status, op.How)
			}
		}
		for _, bad := range []string{"Assertion", "unexpected error", "Caught signal", "backtrace", "Fatal"} {
			if strings.Contains(e.Stderr(), bad) {
				t.Fatalf("run %d: the TCP peer crashed (%q):\n%s", i, bad, e.Stderr())
			}
		}
	}
}
