package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

func TestProbability100FailsEveryPutAndZeroNone(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--probability", "100", "--codes", "-3,UNREACHABLE", "--hooks", "ucp_put_nbx"},
		"--ops", "50", "--seq", "put,get,flush")
	puts := opsOf(ops, "put")
	if len(puts) != 50 {
		t.Fatalf("got %d puts, want 50", len(puts))
	}
	for _, op := range puts {
		if op.Status != -3 && op.Status != -6 {
			t.Fatalf("put %d: status %d, want -3 or -6", op.Seq, op.Status)
		}
	}
	for _, fn := range []string{"get", "flush"} {
		if f := failedIndices(opsOf(ops, fn)); len(f) != 0 {
			t.Fatalf("%s failed at %v although only ucp_put_nbx is hooked", fn, f)
		}
	}

	ops, _ = h.run(t, []string{"--probability", "0"}, "--ops", "50", "--seq", "put,get,flush")
	if f := failedIndices(ops); len(ops) != 150 || len(f) != 0 {
		t.Fatalf("probability 0: %d ops, failed at %v; want 150 ops, none failed", len(ops), f)
	}
}

func TestPatternXOOFailsExactlyEveryThirdPut(t *testing.T) {
	h := newHarness(t)
	ops, _ := h.run(t, []string{"--pattern", "XOO", "--hooks", "ucp_put_nbx"}, "--ops", "300", "--seq", "put,get")
	puts := opsOf(ops, "put")
	if len(puts) != 300 {
		t.Fatalf("got %d puts, want 300", len(puts))
	}
	codes := []int{-3, -6, -20} // the default codes, used in turn
	faults := 0
	for i, op := range puts {
		if i%3 == 0 {
			if want := codes[faults%3]; op.Status != want {
				t.Fatalf("put %d: status %d, want %d", i, op.Status, want)
			}
			faults++
		} else if op.Status != 0 {
			t.Fatalf("put %d: status %d, want 0", i, op.Status)
		}
	}
	if f := failedIndices(opsOf(ops, "get")); len(f) != 0 {
		t.Fatalf("gets failed at %v", f)
	}
}

// TestPatternCountsDownPerThread: the calls between a pattern's Xs pass in
// the fast half, each thread counting down to its own next X (the pattern
// indexes each thread's calls); the Xs still fail, in both threads.
func TestPatternCountsDownPerThread(t *testing.T) {
	h := newHarness(t)
	ops, out := h.run(t, []string{"--pattern", "OOOOOOX", "--hooks", "ucp_put_nbx"}, "--ops", "70", "--seq", "put", "--threads", "2")
	if len(ops) != 140 {
		t.Fatalf("%d operations, want 140\n%s", len(ops), out)
	}
	var want []int
	for k := 6; k < 70; k += 7 {
		want = append(want, k)
	}
	if got := failuresByThread(ops); !reflect.DeepEqual(got, [][]int{want, want}) {
		t.Fatalf("pattern OOOOOOX over 2 threads failed %v, want %v in each", got, want)
	}
}

func TestSeedRepeatsFaultPositions(t *testing.T) {
	h := newHarness(t)
	const n, p = 2000, 0.30
	run := func(seed string) []int {
		ops, _ := h.run(t, []string{"--probability", "30", "--seed", seed, "--hooks", "ucp_put_nbx"}, "--ops", "2000", "--seq", "put")
		return failedIndices(opsOf(ops, "put"))
	}
	a, b, c := run("42"), run("42"), run("43")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different fault positions: %d vs %d faults", len(a), len(b))
	}
	if reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same %d fault positions", len(a))
	}
	// Five standard deviations of the binomial around n*p.
	mean, sd := n*p, 20.5 // sqrt(2000*0.3*0.7) = 20.49
	if got := float64(len(a)); got < mean-5*sd || got > mean+5*sd {
		t.Fatalf("%d faults in %d calls at 30%%: outside %.0f +/- %.0f", len(a), n, mean, 5*sd)
	}
}

func TestDisabledHookIsNeverFaulted(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "100", "--disabled"}, "--ops", "0", "--interval-us", "500", "--seq", "put,get,flush")
	h.mustCtl(t, "hook", "disable", "get_nbx")
	h.mustCtl(t, "enable")
	time.Sleep(300 * time.Millisecond)
	st := h.status(t)
	e.Cmd.Process.Signal(os.Interrupt)
	out := e.Wait(t, 20*time.Second)
	ops := testutil.ParseOps(out)
	if f := failedIndices(opsOf(ops, "get")); len(f) != 0 {
		t.Fatalf("disabled ucp_get_nbx was faulted at %v", f)
	}
	if len(failedIndices(opsOf(ops, "put"))) == 0 || len(failedIndices(opsOf(ops, "flush"))) == 0 {
		t.Fatalf("enabled hooks were never faulted")
	}
	if len(st) != 1 || hookStatus(t, st[0], "ucp_get_nbx").Enabled || hookStatus(t, st[0], "ucp_get_nbx").Faults != 0 {
		t.Fatalf("status does not show ucp_get_nbx disabled and unfaulted: %+v", st)
	}
}

func TestLiveControlChangesWhatTheProgramSees(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "300", "--seq", "put")
	countPuts := func() int { return len(opsOf(testutil.ParseOps(e.Output()), "put")) }
	waitFor(t, 10*time.Second, "puts before any change", func() bool { return countPuts() >= 50 })

	mark := func() int { return countPuts() }
	settle := func(from int) []testutil.Op {
		waitFor(t, 10*time.Second, "puts after a change", func() bool { return countPuts() >= from+60 })
		// The first puts after a change may have started before it.
		return opsOf(testutil.ParseOps(e.Output()), "put")[from+5 : from+60]
	}

	h.mustCtl(t, "probability", "100")
	m := mark()
	for _, op := range settle(m) {
		if op.Status == 0 {
			t.Fatalf("after probability 100, put %d succeeded", op.Seq)
		}
	}

	h.mustCtl(t, "error-codes", "--", "-25")
	m = mark()
	for _, op := range settle(m) {
		if op.Status != -25 {
			t.Fatalf("after error-codes -25, put %d has status %d", op.Seq, op.Status)
		}
	}

	h.mustCtl(t, "pattern", "OX")
	m = mark()
	window := settle(m)
	failed := len(failedIndices(window))
	if failed < len(window)/2-1 || failed > len(window)/2+1 {
		t.Fatalf("after pattern OX, %d of %d puts failed, want half", failed, len(window))
	}

	// Status counts lie between what the program printed before and after
	// the status request.
	before := opsOf(testutil.ParseOps(e.Output()), "put")
	st := h.status(t)
	after := opsOf(testutil.ParseOps(e.Output()), "put")
	if len(st) != 1 || st[0].PID != e.PID {
		t.Fatalf("status lists %+v, want pid %d", st, e.PID)
	}
	put := hookStatus(t, st[0], "ucp_put_nbx")
	if put.Calls < uint64(len(before)) || put.Calls > uint64(len(after))+1 {
		t.Fatalf("status counts %d put calls; the program printed %d before and %d after", put.Calls, len(before), len(after))
	}
	failedBefore, failedAfter := len(failedIndices(before)), len(failedIndices(after))
	if put.Faults < uint64(failedBefore) || put.Faults > uint64(failedAfter)+1 {
		t.Fatalf("status counts %d put faults; the program saw %d before and %d after", put.Faults, failedBefore, failedAfter)
	}
	if st[0].Strategy != "pattern" || st[0].Pattern != "OX" || !reflect.DeepEqual(st[0].Codes, []int{-25}) {
		t.Fatalf("status settings: strategy %s pattern %s codes %v", st[0].Strategy, st[0].Pattern, st[0].Codes)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
	if _, err := os.Stat(h.socketOf(e.PID)); !os.IsNotExist(err) {
		t.Fatalf("socket %s left behind after exit (stat: %v)", h.socketOf(e.PID), err)
	}
}

func TestCallsLibucpMakesToItselfAreNotFaulted(t *testing.T) {
	h := newHarness(t)
	// ucp_put_nbi and ucp_get_nbi call ucp_put_nbx and ucp_get_nbx inside
	// libucp: those calls must pass and not be counted. The program's own
	// ucp_put_nbx calls all fail: the injector is loaded and faulting, so
	// the nbi calls passing proves something.
	e := h.start(t, []string{"--probability", "100", "--hooks", "ucp_put_nbx,ucp_get_nbx"}, "--ops", "100", "--seq", "putnbi,getnbi,put")
	out := e.Wait(t, 30*time.Second)
	ops := testutil.ParseOps(out)
	if len(ops) != 300 {
		t.Fatalf("got %d ops, want 300", len(ops))
	}
	var nbi []testutil.Op
	for _, op := range ops {
		if op.Fn != "put" {
			nbi = append(nbi, op)
		}
	}
	if f := failedIndices(nbi); len(f) != 0 {
		t.Fatalf("nbi operations failed at %v: internal calls were faulted", f)
	}
	if puts := opsOf(ops, "put"); len(puts) != 100 || len(failedIndices(puts)) != 100 {
		t.Fatalf("%d of the program's %d ucp_put_nbx calls failed, want all 100: the injector was not faulting", len(failedIndices(puts)), len(puts))
	}
}

// TestFailedCloseClosesInTheApplicationsMode: an injected failure of
// ucp_ep_close_nbx closes the real endpoint in the mode the application
// asked for. The example's self endpoint has no peer error handling, where
// UCP_EP_CLOSE_FLAG_FORCE is undefined (ucp.h); on UCX 1.22, whose 8-byte
// ucp_get_nbi over it is still in flight at the close, a forced close made
// ucp_worker_destroy abort (1.13 completes the get at once, so there the
// test proves only that the close was faulted and the program ran on).
func TestFailedCloseClosesInTheApplicationsMode(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "100", "--hooks", "ucp_ep_close_nbx"},
		"--ops", "20", "--seq", "putnbi,getnbi", "--linger-ms", "60000")
	waitFor(t, 30*time.Second, "DONE or the program's end", func() bool {
		select {
		case <-e.Done():
			return true
		default:
			return strings.Contains(e.Output(), "DONE failed=0")
		}
	})
	// The worker is destroyed before DONE: the program survived it.
	if !strings.Contains(e.Output(), "DONE failed=0") {
		t.Fatalf("the program ended before DONE:\n%s\nstderr:\n%s", e.Output(), e.Stderr())
	}
	if c := hookStatus(t, h.status(t)[0], "ucp_ep_close_nbx"); c.Calls != 1 || c.Faults != 1 {
		t.Fatalf("ucp_ep_close_nbx: %d calls, %d faults; want the one close failed", c.Calls, c.Faults)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 30*time.Second)
	if strings.Contains(e.Stderr(), "Assertion") {
		t.Fatalf("UCX asserted:\n%s", e.Stderr())
	}
}

func TestBadCLIInputIsRefusedWithExit2(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"probability", "150"}, "0 to 100"},
		{[]string{"probability", "abc"}, "not a number"},
		{[]string{"probability", "1.001"}, "resolution"},
		{[]string{"pattern", "XYZ"}, "only X"},
		{[]string{"error-codes", "--", "abc"}, "-1 to -100"},
		{[]string{"error-codes", "--", "7"}, "-1 to -100"},
		{[]string{"error-codes", "--", "-101"}, "-1 to -100"},
		{[]string{"hook", "disable", "ucp_nothing"}, "unknown hook"},
		{[]string{"seed", "--", "-1"}, "unsigned"},
		{[]string{"seed", "abc"}, "unsigned"},
		{[]string{"inject", "--probability", "x", "--", "true"}, "not a number"},
		{[]string{"status", "-o", "yaml"}, "table, wide, json"},
		{[]string{"kill-ep", "-1"}, "kill-ep -1: an endpoint is a number from 0, in order of creation"},
		{[]string{"--pid", "abc", "status"}, `--pid: "abc" is not a process id`},
		{[]string{"inject", "--pattern", "", "--", "true"}, "--pattern needs a value"},
	} {
		r := h.ctl(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ucxfault %v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	st := h.status(t)
	if st[0].Probability != 0 || st[0].Strategy != "random" {
		t.Fatalf("refused input changed the process: %+v", st[0])
	}
	select {
	case <-e.Done():
		t.Fatalf("the program exited: %s", e.Stderr())
	default:
	}
}

func TestBadSocketRequestsAreRefusedAndTheHostRuns(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	send := func(line string) string {
		conn, err := net.Dial("unix", h.socketOf(e.PID))
		if err != nil {
			t.Fatalf("dialing: %v", err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, line)
		resp, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatalf("reading response to %q: %v", line, err)
		}
		return resp
	}
	for _, tc := range []struct{ line, want string }{
		{"not json\n", "malformed"},
		{`{"v":1,"cmd":"explode"}` + "\n", "unknown command"},
		{`{"v":1,"cmd":"probability","probability":"high"}` + "\n", `field \"probability\": got a JSON string, want a number`},
		{`{"v":1,"cmd":"seed","seed":-1}` + "\n", `field \"seed\": got a JSON number -1, want an integer from 0`},
		{`{"v":1,"cmd":"probability","probability":101}` + "\n", "out of range"},
		{`{"cmd":"status"}` + "\n", "protocol version"},
		{`{"v":1,"cmd":"status","extra":1}` + "\n", "unknown field"},
		{`{"v":1,"cmd":"error_codes","codes":[1]}` + "\n", "-1 to -100"},
		{`{"v":1,"cmd":"hooks","hooks":["ucp_put_nbx","bogus"],"on":false}` + "\n", "unknown hook"},
	} {
		resp := send(tc.line)
		if !strings.Contains(resp, `"ok":false`) || !strings.Contains(resp, tc.want) || strings.Contains(resp, "Go struct") {
			t.Errorf("request %q: response %q, want an error with %q", tc.line, resp, tc.want)
		}
	}
	// A refused multi-hook request changed nothing, not even its valid part.
	if !hookStatus(t, h.status(t)[0], "ucp_put_nbx").Enabled {
		t.Fatalf("a refused hooks request disabled ucp_put_nbx")
	}
	// A line longer than the limit is refused and the connection closed.
	conn, err := net.Dial("unix", h.socketOf(e.PID))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		chunk := strings.Repeat("x", 1<<20)
		for i := 0; i < 40; i++ {
			if _, err := conn.Write([]byte(chunk)); err != nil {
				return
			}
		}
	}()
	resp, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(resp, "longer than") {
		t.Fatalf("oversized request: response %q", resp)
	}
	before := len(testutil.ParseOps(e.Output()))
	waitFor(t, 5*time.Second, "the program to keep running", func() bool { return len(testutil.ParseOps(e.Output())) > before+10 })
}

func TestNoProcessAndStaleSockets(t *testing.T) {
	h := newHarness(t)
	r := h.ctl(t, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "no injected process found") {
		t.Fatalf("status with no process: exit %d, stderr %q", r.code, r.stderr)
	}
	// A socket whose process is gone is removed and reported.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := h.socketOf(cmd.Process.Pid)
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	r = h.ctl(t, "toggle")
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("removed stale socket of dead process %d", cmd.Process.Pid)) {
		t.Fatalf("toggle with a stale socket: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there")
	}
	r = h.ctl(t, "--pid", "1", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "no control socket for pid 1") {
		t.Fatalf("--pid of a process without socket: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestProcessWithoutLibucpGetsNoSocket: a process that never loads libucp
// gets no control socket. The injector's debug line proves it loaded there;
// without it an empty directory proves nothing.
func TestProcessWithoutLibucpGetsNoSocket(t *testing.T) {
	h := newHarness(t)
	cmd := exec.Command("sleep", "1")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+h.lib, "UCX_FAULT_SOCKET_DIR="+h.dir, "UCX_FAULT_ENABLED=1", "UCX_FAULT_DEBUG=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	entries, _ := os.ReadDir(h.dir)
	cmd.Wait()
	if want := fmt.Sprintf("ucxfault[%d]: loaded: enabled=true", cmd.Process.Pid); !strings.Contains(stderr.String(), want) {
		t.Fatalf("the injector did not say %q, so it did not load:\n%s", want, stderr.String())
	}
	if len(entries) != 0 || strings.Contains(stderr.String(), "control socket") {
		t.Fatalf("a process that never loads libucp created %v\n%s", entries, stderr.String())
	}
}

// TestExitStatusAndSignalsPassThrough: inject becomes the program, so its
// exit status and the signal that killed it are the program's, with the
// injector loaded (its debug line says so: an exit status alone would pass
// without it).
func TestExitStatusAndSignalsPassThrough(t *testing.T) {
	h := newHarness(t)
	loaded := func(cmd *exec.Cmd, stderr *bytes.Buffer) {
		t.Helper()
		if want := fmt.Sprintf("ucxfault[%d]: loaded:", cmd.Process.Pid); !strings.Contains(stderr.String(), want) {
			t.Errorf("%v: the injector did not say %q, so it did not load:\n%s", cmd.Args, want, stderr.String())
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(h.cli, "inject", "--lib", h.lib, "--quiet", "--debug", "--", "sh", "-c", "exit 7")
	cmd.Stderr = &stderr
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 7 {
		t.Fatalf("inject -- sh -c 'exit 7': %v", err)
	}
	loaded(cmd, &stderr)
	stderr.Reset()
	cmd = exec.Command(h.cli, "inject", "--lib", h.lib, "--quiet", "--debug", "--", "sh", "-c", "kill -TERM $$")
	cmd.Stderr = &stderr
	cmd.Run()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("inject of a program killed by SIGTERM: %v", cmd.ProcessState)
	}
	loaded(cmd, &stderr)
}

func TestBadEnvironmentLeavesInjectorOffAndHostRunning(t *testing.T) {
	h := newHarness(t)
	cmd := exec.Command(h.rma, "--ops", "20", "--seq", "put")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+h.lib, "UCX_FAULT_SOCKET_DIR="+h.dir,
		"UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=lots", "UCX_WARN_UNUSED_ENV_VARS=n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("host failed: %v", err)
	}
	ops := testutil.ParseOps(string(out))
	if len(ops) != 20 || len(failedIndices(ops)) != 0 {
		t.Fatalf("with a bad probability the injector must stay off: %d ops, failed %v", len(ops), failedIndices(ops))
	}
	cmd = exec.Command(h.rma, "--ops", "1", "--seq", "put")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+h.lib, "UCX_FAULT_SOCKET_DIR="+h.dir,
		"UCX_FAULT_PROBABILITY=lots", "UCX_WARN_UNUSED_ENV_VARS=n")
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(errb.String(), "UCX_FAULT_PROBABILITY"); n != 1 {
		t.Fatalf("bad value reported %d times, want once: %q", n, errb.String())
	}
}

func TestFileBackend(t *testing.T) {
	h := newHarness(t)
	env := []string{"UCX_FAULT_IPC_BACKEND=file"}
	args := h.injectArgs([]string{"--probability", "0"}, "--ops", "0", "--interval-us", "500", "--seq", "put")
	cmd := exec.Command(h.cli, args...)
	cmd.Env = append(os.Environ(), env...)
	e := testutil.StartCmd(t, cmd)
	waitFor(t, 5*time.Second, "the state file", func() bool {
		_, err := os.Stat(fmt.Sprintf("%s/ucx-fault-state-%d.json", h.dir, e.PID))
		return err == nil
	})
	if r := h.ctlEnv(t, env, "probability", "100"); r.code != 0 {
		t.Fatalf("file backend probability: %+v", r)
	}
	m := len(testutil.ParseOps(e.Output()))
	waitFor(t, 10*time.Second, "failures after the command", func() bool {
		ops := testutil.ParseOps(e.Output())
		return len(ops) > m+40 && ops[len(ops)-1].Status != 0
	})
	r := h.ctlEnv(t, env, "status", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf(`"pid": %d`, e.PID)) || !strings.Contains(r.stdout, `"probability": 100`) {
		t.Fatalf("file backend status: %+v", r)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
	if _, err := os.Stat(fmt.Sprintf("%s/ucx-fault-state-%d.json", h.dir, e.PID)); !os.IsNotExist(err) {
		t.Fatalf("state file left after exit")
	}
}
