package e2e

// Safety of the observer: it ends cleanly, two at once, a full ring buffer.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// ---------------------------------------------------------------------------
// The observer

// observedFns are the functions the observer tests probe.
const observedFns = "ucp_put_nbx,ucp_get_nbx,ucp_ep_flush_nbx"

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// observerRun is a running `ucxfault observe`.
type observerRun struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	path string
	done chan struct{}
	err  error
}

// startObserver starts `ucxfault observe PID` and returns once the probes
// are attached.
func (h *harness) startObserver(t *testing.T, pid int, extra ...string) *observerRun {
	t.Helper()
	o := &observerRun{out: &syncBuffer{}, path: filepath.Join(t.TempDir(), "observed.json"), done: make(chan struct{})}
	args := append([]string{"observe", strconv.Itoa(pid), "--recording", o.path, "--hooks", observedFns}, extra...)
	o.cmd = exec.Command(h.cli, args...)
	o.cmd.Stdout, o.cmd.Stderr = o.out, o.out
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		o.err = o.cmd.Wait()
		close(o.done)
	}()
	t.Cleanup(func() {
		select {
		case <-o.done:
		default:
			o.cmd.Process.Kill()
			<-o.done
		}
	})
	waitFor(t, 30*time.Second, "the observer to attach", func() bool {
		select {
		case <-o.done:
			t.Fatalf("the observer exited: %v\n%s", o.err, o.out)
		default:
		}
		return strings.Contains(o.out.String(), "observing process")
	})
	return o
}

// wait waits for the observer to exit and returns its recording.
func (o *observerRun) wait(t *testing.T) *recording.Process {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the observer did not exit\n%s", o.out)
	}
	if o.err != nil {
		t.Fatalf("observer: %v\n%s", o.err, o.out)
	}
	f, err := recording.ReadFile(o.path)
	if err != nil {
		t.Fatalf("reading the observer's recording: %v\n%s", err, o.out)
	}
	if len(f.Processes) != 1 {
		t.Fatalf("recording holds %d processes", len(f.Processes))
	}
	return &f.Processes[0]
}

// bpftool runs bpftool -j ARGS and decodes its output into v.
func bpftool(t *testing.T, v any, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Fatal("bpftool not found (make deps installs it)")
	}
	out, err := exec.Command("bpftool", append([]string{"-j"}, args...)...).Output()
	if err != nil {
		t.Fatalf("bpftool %v: %v", args, err)
	}
	if len(bytes.TrimSpace(out)) == 0 {
		out = []byte("[]")
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("decoding bpftool %v: %v\n%s", args, err, out)
	}
}

type bpfPerf struct {
	PID      int    `json:"pid"`
	ProgID   int    `json:"prog_id"`
	FdType   string `json:"fd_type"`
	Filename string `json:"filename"`
}

type bpfLink struct {
	ID     int    `json:"id"`
	Type   string `json:"type"`
	ProgID int    `json:"prog_id"`
}

// probesOf returns the BPF programs behind the uprobes that process holder
// has attached to target.
func probesOf(t *testing.T, holder, target int) map[int]bool {
	t.Helper()
	var perf []bpfPerf
	bpftool(t, &perf, "perf", "list")
	progs := map[int]bool{}
	n := 0
	for _, p := range perf {
		if p.PID == holder && strings.Contains(p.Filename, fmt.Sprintf("/proc/%d/", target)) {
			progs[p.ProgID] = true
			n++
		}
	}
	if n == 0 {
		t.Fatalf("bpftool shows no uprobe of the observer (pid %d) on process %d", holder, target)
	}
	return progs
}

// requireProbesGone fails unless no uprobe is attached to target any more
// and the observer's programs are unloaded.
func requireProbesGone(t *testing.T, progs map[int]bool, target int) {
	t.Helper()
	var last string
	gone := func() bool {
		var perf []bpfPerf
		bpftool(t, &perf, "perf", "list")
		for _, p := range perf {
			if progs[p.ProgID] || strings.Contains(p.Filename, fmt.Sprintf("/proc/%d/", target)) {
				last = fmt.Sprintf("uprobe left: %+v", p)
				return false
			}
		}
		var links []bpfLink
		bpftool(t, &links, "link", "list")
		for _, l := range links {
			if progs[l.ProgID] {
				last = fmt.Sprintf("link left: %+v", l)
				return false
			}
		}
		for id := range progs {
			if exec.Command("bpftool", "prog", "show", "id", strconv.Itoa(id)).Run() == nil {
				last = fmt.Sprintf("program %d still loaded", id)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone() {
		if time.Now().After(deadline) {
			t.Fatalf("probes not gone after the observer ended: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// matchObserved checks that the observed calls are the printed operations,
// status for status: all of them, or (prefix) the first ones.
func matchObserved(t *testing.T, p *recording.Process, ops []testutil.Op, prefix bool) {
	t.Helper()
	for op, fn := range fnOfOp {
		printed, calls := opsOf(ops, op), callsOf(p, fn)
		if len(calls) > len(printed) || (!prefix && len(calls) != len(printed)) {
			t.Fatalf("%s: observed %d calls, the program printed %d", fn, len(calls), len(printed))
		}
		for i := range calls {
			if calls[i].Status != printed[i].Status {
				t.Fatalf("%s %d: observed status %d, the program printed %d", fn, i, calls[i].Status, printed[i].Status)
			}
		}
	}
}

func TestSafetyObserverEnds(t *testing.T) {
	testutil.RequireBPF(t)
	for _, how := range []string{"target exits", "SIGINT", "SIGTERM", "SIGKILL"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t)
			ops := "0"
			if how == "target exits" {
				ops = "40"
			}
			e := h.start(t, []string{"--pattern", "XOO", "--hooks", "ucp_put_nbx"}, "--ops", ops,
				"--interval-us", "2000", "--seq", "put,get,flush", "--wait-before-start-ms", "60000")
			o := h.startObserver(t, e.PID)
			if len(testutil.ParseOps(e.Output())) != 0 {
				t.Fatalf("the example started before it was released")
			}
			// Released once the probes are attached: under load attaching
			// took more than the 3 s the example used to wait.
			if err := syscall.Kill(e.PID, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			progs := probesOf(t, o.cmd.Process.Pid, e.PID)
			switch how {
			case "target exits":
				out := e.Wait(t, 60*time.Second)
				p := o.wait(t)
				if !p.Complete || !strings.Contains(o.out.String(), "process exited") {
					t.Fatalf("recording complete=%v, lost %+v\n%s", p.Complete, p.Lost, o.out)
				}
				matchObserved(t, p, testutil.ParseOps(out), false)
			case "SIGINT", "SIGTERM":
				waitFor(t, 30*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) >= 60 })
				before := testutil.ParseOps(e.Output())
				sig := syscall.SIGINT
				if how == "SIGTERM" {
					sig = syscall.SIGTERM
				}
				// A second signal while it stops must not cut the
				// recording short.
				o.cmd.Process.Signal(sig)
				time.Sleep(5 * time.Millisecond)
				o.cmd.Process.Signal(sig)
				p := o.wait(t)
				if !p.Complete || !strings.Contains(o.out.String(), "stopped (interrupted)") {
					t.Fatalf("recording complete=%v, lost %+v\n%s", p.Complete, p.Lost, o.out)
				}
				matchObserved(t, p, testutil.ParseOps(e.Output()), true)
				for op, fn := range fnOfOp {
					if n, min := len(callsOf(p, fn)), len(opsOf(before, op)); n < min {
						t.Fatalf("%s: %d calls recorded, but %d were made before the signal", fn, n, min)
					}
				}
			case "SIGKILL":
				waitFor(t, 30*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) >= 30 })
				o.cmd.Process.Kill()
				<-o.done
			}
			requireProbesGone(t, progs, e.PID)
			if how != "target exits" {
				// The target runs on unprobed, its faults as before.
				stillRunning(t, e)
				e.Cmd.Process.Signal(os.Interrupt)
				out := e.Wait(t, 30*time.Second)
				for i, op := range opsOf(testutil.ParseOps(out), "put") {
					if (op.Status != 0) != (i%3 == 0) {
						t.Fatalf("put %d: status %d breaks pattern XOO", i, op.Status)
					}
				}
			}
		})
	}
}

func TestSafetyTwoObservers(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "30", "--seed", "5", "--hooks", "ucp_put_nbx,ucp_get_nbx"},
		"--ops", "60", "--interval-us", "1000", "--seq", "put,get,flush", "--wait-before-start-ms", "60000")
	a := h.startObserver(t, e.PID)
	b := h.startObserver(t, e.PID)
	if len(testutil.ParseOps(e.Output())) != 0 {
		t.Fatalf("the example started before it was released")
	}
	// Released once both are attached (see TestSafetyObserverEnds).
	if err := syscall.Kill(e.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	out := e.Wait(t, 60*time.Second)
	pa, pb := a.wait(t), b.wait(t)
	if !pa.Complete || !pb.Complete {
		t.Fatalf("recordings complete: %v and %v", pa.Complete, pb.Complete)
	}
	if len(pa.Calls) != len(pb.Calls) || len(pa.Calls) != 180 {
		t.Fatalf("the observers recorded %d and %d calls, want 180 each", len(pa.Calls), len(pb.Calls))
	}
	for i := range pa.Calls {
		x, y := pa.Calls[i], pb.Calls[i]
		if x.Fn != y.Fn || x.Status != y.Status || x.Size != y.Size || x.Injected != y.Injected || x.Endpoint != y.Endpoint {
			t.Fatalf("call %d: one observer saw %+v, the other %+v", i, x, y)
		}
	}
	matchObserved(t, pa, testutil.ParseOps(out), false)
}

func TestSafetyObserverRingOverflow(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	bin := buildFixture(t, "burst")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "UCX_WARN_UNUSED_ENV_VARS=n")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	e := testutil.StartCmd(t, cmd)
	page := os.Getpagesize()
	o := h.startObserver(t, e.PID, "--hooks", "ucp_request_check_status", "--ring-size", strconv.Itoa(page))

	// An observer that cannot read (stopped, as a descheduled reader would
	// be) under a burst: the ring fills and every call beyond is lost,
	// and counted.
	const burst = 3000
	if err := o.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(stdin, "%d\n", burst)
	waitFor(t, 60*time.Second, "the burst", func() bool { return strings.Contains(e.Output(), "BURST calls=") })
	o.cmd.Process.Signal(syscall.SIGCONT)
	stdin.Close()
	out := e.Wait(t, 30*time.Second)
	if lineValue(out, "DONE", "total") != strconv.Itoa(burst) {
		t.Fatalf("burst output:\n%s", out)
	}
	p := o.wait(t)
	got := uint64(len(callsOf(p, "ucp_request_check_status")))
	t.Logf("ring of %d bytes: %d calls delivered, %d dropped, of %d", page, got, p.Lost.DroppedEvents, burst)
	if p.Complete || p.Lost.DroppedEvents == 0 {
		t.Fatalf("recording complete=%v with %d dropped events, want an incomplete recording", p.Complete, p.Lost.DroppedEvents)
	}
	if got+p.Lost.DroppedEvents != burst || p.Lost.UnmatchedEntries != 0 || p.Lost.UnmatchedReturns != 0 {
		t.Fatalf("delivered %d + dropped %d != %d calls made (unmatched %d/%d)", got, p.Lost.DroppedEvents, burst,
			p.Lost.UnmatchedEntries, p.Lost.UnmatchedReturns)
	}
	if want := fmt.Sprintf("dropped %d", p.Lost.DroppedEvents); !strings.Contains(o.out.String(), want) ||
		!strings.Contains(o.out.String(), "INCOMPLETE") {
		t.Fatalf("the observer did not report %q and INCOMPLETE:\n%s", want, o.out)
	}

	// Replaying it warns first.
	target := h.start(t, []string{"--disabled"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	rc := exec.Command(h.cli, "--socket-dir", h.dir, "replay", "--from", o.path)
	combined, _ := rc.CombinedOutput()
	text := string(combined)
	warn := strings.Index(text, "warning: "+o.path+" process 0")
	if warn < 0 || !strings.Contains(text, "is incomplete") || !strings.Contains(text, fmt.Sprintf("%d dropped events", p.Lost.DroppedEvents)) {
		t.Fatalf("replay --from an incomplete recording did not warn:\n%s", text)
	}
	if i := strings.Index(text, fmt.Sprintf("pid %d:", target.PID)); i >= 0 && i < warn {
		t.Fatalf("the warning came after the replay:\n%s", text)
	}
}
