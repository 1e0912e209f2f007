package e2e

import (
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

// observe runs `ucxfault observe PID -o FILE` until the target exits and
// returns the recording.
func (h *harness) observe(t *testing.T, e *testutil.Example) *recording.Process {
	t.Helper()
	p, err := h.observeErr(t.TempDir(), e.PID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// bannerWriter collects a command's output and calls seen once, when a
// complete line holding banner has arrived.
type bannerWriter struct {
	mu     sync.Mutex
	buf    strings.Builder
	banner string
	seen   func()
	done   bool
}

func (w *bannerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done {
		text := w.buf.String()
		if i := strings.LastIndexByte(text, '\n'); i >= 0 && strings.Contains(text[:i], w.banner) {
			w.done = true
			w.seen()
		}
	}
	return len(p), nil
}

func (w *bannerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// observeErr is observe for use off the test's goroutine.
func (h *harness) observeErr(dir string, pid int) (*recording.Process, error) {
	path := filepath.Join(dir, "observed.json")
	cmd := exec.Command(h.cli, "observe", strconv.Itoa(pid), "-o", path)
	// The target (the bundled rma or msg example) sleeps after READY until
	// SIGUSR1 or its --wait-before-start-ms bound: it is released once the
	// observer says it is observing, so no operation is missed however long
	// attaching takes on a loaded machine.
	out := &bannerWriter{banner: "observing process", seen: func() { syscall.Kill(pid, syscall.SIGUSR1) }}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("observe: %v\n%s", err, out.String())
		}
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("observe did not end with its target\n%s", out.String())
	}
	// -o FILE is the old spelling, still taken with a notice; the
	// banner counts probes, and detaching is announced.
	for _, want := range []string{"-o FILE is deprecated", "detaching"} {
		if !strings.Contains(out.String(), want) {
			return nil, fmt.Errorf("observe printed no %q:\n%s", want, out.String())
		}
	}
	f, err := recording.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the observer's recording: %v\n%s", err, out.String())
	}
	if f.Source != recording.SourceObserver || len(f.Processes) != 1 {
		return nil, fmt.Errorf("recording source %s with %d processes", f.Source, len(f.Processes))
	}
	return &f.Processes[0], nil
}

// TestObserveThenReplayReproducesARealFailure is the round trip the tool
// exists for: an uninstrumented program loses its TCP peer for real; the
// observer records it; the same program, with a healthy peer, under the
// injector replaying that recording, sees the same outcomes, op for op.
func TestObserveThenReplayReproducesARealFailure(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	args := []string{"--transport", "tcp", "--ops", "30", "--seq", "put,get,flush", "--wait-before-start-ms", "60000"}
	// Uninstrumented: no preload at all.
	real := testutil.StartExample(t, h.rma, append(args, "--kill-peer-at", "40")...)
	p := h.observe(t, real)
	realOps := testutil.ParseOps(real.Wait(t, 30*time.Second))
	if !p.Complete {
		t.Fatalf("observer recording incomplete: %+v", p.Lost)
	}
	if len(failedIndices(realOps)) == 0 || len(failedIndices(realOps[:40])) != 0 {
		t.Fatalf("the real run should fail only from op 40 on: failed at %v", failedIndices(realOps))
	}
	for op, fn := range fnOfOp {
		printed, calls := opsOf(realOps, op), callsOf(p, fn)
		if len(printed) != len(calls) {
			t.Fatalf("%s: observed %d calls, the program made %d", fn, len(calls), len(printed))
		}
		for i := range calls {
			if calls[i].Status != printed[i].Status || calls[i].Injected {
				t.Fatalf("%s %d: observed %+v, program printed %+v", fn, i, calls[i], printed[i])
			}
		}
	}
	recPath := filepath.Join(t.TempDir(), "real.json")
	f := recording.New(recording.SourceObserver)
	f.Processes = []recording.Process{*p}
	if err := f.WriteFile(recPath); err != nil {
		t.Fatal(err)
	}

	// Reproduce: the peer stays alive; the recording supplies the failure.
	e := h.start(t, []string{"--disabled"}, args...)
	h.mustCtl(t, "replay", "--from", recPath)
	// The replay is in force: end the example's wait after READY.
	if err := syscall.Kill(e.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	replayed := testutil.ParseOps(e.Wait(t, 60*time.Second))
	if len(replayed) != len(realOps) {
		t.Fatalf("replayed run: %d ops, real run %d", len(replayed), len(realOps))
	}
	for i := range realOps {
		if realOps[i].Fn != replayed[i].Fn || realOps[i].Status != replayed[i].Status {
			t.Fatalf("op %d: real %s %d, replayed %s %d", i, realOps[i].Fn, realOps[i].Status, replayed[i].Fn, replayed[i].Status)
		}
	}
}

// TestObserverAndInjectorCountAlike: the observer on a process that is also
// under the injector sees the same application calls as the injector's own
// recording, internal calls left out by both.
func TestObserverAndInjectorCountAlike(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "20", "--seed", "4", "--record"},
		"--ops", "60", "--seq", "put,putnbi,get,flush", "--wait-before-start-ms", "60000", "--linger-ms", "60000")
	type result struct {
		p   *recording.Process
		err error
	}
	obsDone := make(chan result, 1)
	dir := t.TempDir()
	go func() {
		p, err := h.observeErr(dir, e.PID)
		obsDone <- result{p, err}
	}()
	waitFor(t, 60*time.Second, "the operations", func() bool { return strings.Contains(e.Output(), "DONE") })
	dump := filepath.Join(t.TempDir(), "inj.json")
	h.mustCtl(t, "record-dump", "records", "-o", dump)
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
	res := <-obsDone
	if res.err != nil {
		t.Fatal(res.err)
	}
	obs := res.p
	inj, err := recording.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"ucp_put_nbx", "ucp_get_nbx", "ucp_ep_flush_nbx"} {
		a, b := callsOf(obs, fn), callsOf(&inj.Processes[0], fn)
		if len(a) != 60 || len(b) != 60 {
			t.Fatalf("%s: observer %d calls, injector %d, want 60 (internal calls of put_nbi left out)", fn, len(a), len(b))
		}
		for i := range a {
			if a[i].Status != b[i].Status {
				t.Fatalf("%s %d: observer saw %d, injector recorded %d", fn, i, a[i].Status, b[i].Status)
			}
		}
	}
}

// TestObserverAndInjectorAgreeOnFailuresOnCompletion: in deferred mode the
// injector hands its failures to the application through the polls (or
// callbacks) of operations that returned requests; its marker carries the
// request, so the observer gives each failure to the same operation, and to
// the poll that returned it, as the injector's recording does.
func TestObserverAndInjectorAgreeOnFailuresOnCompletion(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	for _, tc := range []struct{ name, completion, mode, hooks string }{
		{"deferred, poll", "poll", "deferred", "ucp_put_nbx,ucp_get_nbx,ucp_ep_flush_nbx"},
		{"deferred, callback", "callback", "deferred", "ucp_put_nbx,ucp_get_nbx,ucp_ep_flush_nbx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := h.start(t, []string{"--mode", tc.mode, "--probability", "30", "--seed", "4", "--record",
				"--hooks", tc.hooks},
				"--ops", "40", "--seq", "put,get,flush", "--size", "65536", "--completion", tc.completion,
				"--wait-before-start-ms", "60000", "--linger-ms", "60000")
			type result struct {
				p   *recording.Process
				err error
			}
			obsDone := make(chan result, 1)
			dir := t.TempDir()
			go func() {
				p, err := h.observeErr(dir, e.PID)
				obsDone <- result{p, err}
			}()
			waitFor(t, 60*time.Second, "the operations", func() bool { return strings.Contains(e.Output(), "DONE") })
			dump := filepath.Join(t.TempDir(), "inj.json")
			h.mustCtl(t, "record-dump", "records", "-o", dump)
			e.Cmd.Process.Signal(os.Interrupt)
			ops := testutil.ParseOps(e.Wait(t, 20*time.Second))
			res := <-obsDone
			if res.err != nil {
				t.Fatal(res.err)
			}
			inj, err := recording.ReadFile(dump)
			if err != nil {
				t.Fatal(err)
			}
			onCompletion := 0
			for _, fn := range []string{"ucp_put_nbx", "ucp_get_nbx", "ucp_ep_flush_nbx", "ucp_request_check_status"} {
				a, b := callsOf(res.p, fn), callsOf(&inj.Processes[0], fn)
				if len(a) != len(b) {
					t.Fatalf("%s: observer %d calls, injector %d", fn, len(a), len(b))
				}
				for i := range a {
					if a[i].Status != b[i].Status || a[i].Injected != b[i].Injected || a[i].How != b[i].How {
						t.Fatalf("%s %d: observer %+v, injector %+v", fn, i, a[i], b[i])
					}
					if b[i].Injected && b[i].How == recording.HowCompletion {
						onCompletion++
					}
				}
			}
			for op, fn := range fnOfOp {
				printed, calls := opsOf(ops, op), callsOf(&inj.Processes[0], fn)
				if len(printed) != len(calls) {
					t.Fatalf("%s: program made %d, injector recorded %d", fn, len(printed), len(calls))
				}
				for i := range calls {
					if calls[i].Status != printed[i].Status {
						t.Fatalf("%s %d: recorded %+v, the program saw %+v", fn, i, calls[i], printed[i])
					}
				}
			}
			if onCompletion == 0 {
				t.Fatal("no failure was delivered on completion: the test proves nothing")
			}
		})
	}
}
