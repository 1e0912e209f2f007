package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// injectedPeerRun runs the conformance client under the injector against a
// live server. Once the client is READY, ready runs (it loads a replay or
// turns recording on); once it has POSTED, posted runs. The call log is
// dumped to dump (when not empty) once the client has closed its endpoint.
func injectedPeerRun(t *testing.T, h *harness, scenario string, args []string, ready, posted func(), dump string) peerResult {
	t.Helper()
	return injectedPeerRunWith(t, h, scenario, nil, args, ready, posted, dump)
}

// injectedPeerRunWith is injectedPeerRun with injector flags (inject).
func injectedPeerRunWith(t *testing.T, h *harness, scenario string, inject, args []string, ready, posted func(), dump string) peerResult {
	t.Helper()
	prog := buildPeerdeath(t)
	hello := filepath.Join(t.TempDir(), "hello")
	srv := exec.Command(prog, "server", "--hello", hello)
	srv.Env = peerEnv(nil)
	server := testutil.StartCmd(t, srv)
	t.Cleanup(func() {
		server.Cmd.Process.Signal(syscall.SIGCONT)
		server.Cmd.Process.Kill()
	})
	a := append(append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet"}, inject...), "--", prog,
		"client", "--hello", hello, "--scenario", scenario, "--linger-ms", "3000")
	cli := exec.Command(h.cli, append(a, args...)...)
	cli.Env = peerEnv(nil)
	stdin, err := cli.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	client := testutil.StartCmd(t, cli)
	waitFor(t, 20*time.Second, "the client's READY line", func() bool { return strings.Contains(client.Output(), "READY ") })
	ready()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the client's POSTED line", func() bool { return strings.Contains(client.Output(), "\nPOSTED ") })
	posted()
	if dump != "" {
		waitFor(t, 30*time.Second, "the client's close", func() bool {
			return strings.Contains(client.Output(), "phase=linger") || strings.Contains(client.Output(), "kind=close")
		})
		h.mustCtl(t, "record-dump", "records", "-o", dump)
	}
	var res peerResult
	res.out = client.Wait(t, 40*time.Second)
	stdin.Close()
	if res.events, err = testutil.ParsePeerEvents(res.out); err != nil {
		t.Fatal(err)
	}
	maj, min, _, err := testutil.UCXVersion(res.out)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.out)
	}
	res.code = testutil.DeadPeerCode(maj, min)
	i := strings.Index(res.out, "\nDONE ")
	if i < 0 {
		t.Fatalf("no DONE line:\n%s", res.out)
	}
	if _, err := fmt.Sscanf(res.out[i+1:], "DONE handlers=%d", &res.handlers); err != nil {
		t.Fatalf("parsing the DONE line: %v\n%s", err, res.out)
	}
	return res
}

// outcomes lists what the application saw, phase aside for the handler (a
// replayed kill is placed by call position, not by the wall clock): each
// operation's kind, index, status and delivery, and the handler calls.
func outcomes(r peerResult) (ops []string, handlers []string) {
	for _, e := range r.events {
		if e.Kind == "handler" {
			handlers = append(handlers, fmt.Sprintf("ep=%d status=%d via=%s", e.EP, e.Status, e.Via))
			continue
		}
		ops = append(ops, fmt.Sprintf("%s/%d %s status=%d via=%s", e.Kind, e.Op, e.Phase, e.Status, e.Via))
	}
	return ops, handlers
}

// A run with a kill-ep, recorded by the injector, replayed into a fresh run
// of the same program against a live peer: the recording carries the kill
// (an endpoint failure and the handler call), and the replayed run gets the
// same outcomes and the same handler call, though nobody sends kill-ep.
func TestReplayedKillCallsTheHandler(t *testing.T) {
	args := []string{"--count", "2", "--size", "65536", "--close", "force", "--wait-ms", "3000"}
	h1 := newHarness(t)
	path := filepath.Join(t.TempDir(), "rec.json")
	rec := injectedPeerRun(t, h1, "rma", args,
		func() { h1.mustCtl(t, "record-toggle", "on") },
		func() { h1.mustCtl(t, "kill-ep", "0") }, path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || len(f.Processes) != 1 {
		t.Fatalf("recording version %d with %d processes, want version 2 and 1", f.Version, len(f.Processes))
	}
	p := f.Processes[0]
	fails := p.Failures()
	var handlerEvents int
	for _, e := range p.EndpointEvents {
		if e.Event == recording.EventHandler {
			handlerEvents++
		}
	}
	// The handler call is logged whoever makes it: the injector's
	// emulation, or libucp's own failure path (through the injector's
	// trampoline).
	if len(fails) != 1 || fails[0].Endpoint != 0 || fails[0].Code >= 0 || !fails[0].Injected ||
		fails[0].Cause != recording.CauseCommand || handlerEvents != 1 {
		t.Fatalf("endpoint events %+v, want one failure of endpoint 0 by kill-ep and one handler call", p.EndpointEvents)
	}
	// The peer, as status names it: the endpoint is still in the table.
	for _, e := range p.EndpointEvents {
		if !workerPeer.MatchString(e.Peer) || e.Peer != fails[0].Peer {
			t.Fatalf("endpoint event %+v: peer %q, want the server's w:<12 hex digits>, the same on every event", e, e.Peer)
		}
	}
	recOps, recHandlers := outcomes(rec)
	if len(recHandlers) != 1 || rec.handlers != 1 {
		t.Fatalf("recorded run: handler calls %v (program counted %d), want one:\n%s", recHandlers, rec.handlers, rec.out)
	}

	h2 := newHarness(t)
	rep := injectedPeerRun(t, h2, "rma", args,
		func() {
			if out := h2.mustCtl(t, "replay", "--from", path); !strings.Contains(out, "replaying") {
				t.Fatalf("replay: %s", out)
			}
		},
		func() {}, "")
	repOps, repHandlers := outcomes(rep)
	if strings.Join(repHandlers, "\n") != strings.Join(recHandlers, "\n") || rep.handlers != rec.handlers {
		t.Errorf("handler calls: replayed %v (counted %d), recorded %v (counted %d)", repHandlers, rep.handlers, recHandlers, rec.handlers)
	}
	if strings.Join(repOps, "\n") != strings.Join(recOps, "\n") {
		t.Errorf("outcomes differ:\nrecorded:\n%s\nreplayed:\n%s", strings.Join(recOps, "\n"), strings.Join(repOps, "\n"))
	}
	if t.Failed() {
		t.Logf("recorded run:\n%s\nreplayed run:\n%s\nendpoint events: %+v", rec.out, rep.out, p.EndpointEvents)
		return
	}

	// The same recording as version 1 (no endpoint events) still replays:
	// the same outcomes, and no handler call, since nothing says the
	// endpoint failed. This is also the control that shows the handler
	// above came from the replayed kill.
	f.Version, f.Processes[0].EndpointEvents = 1, nil
	v1 := filepath.Join(t.TempDir(), "v1.json")
	if err := f.WriteFile(v1); err != nil {
		t.Fatal(err)
	}
	h3 := newHarness(t)
	old := injectedPeerRun(t, h3, "rma", args,
		func() { h3.mustCtl(t, "replay", "--from", v1) }, func() {}, "")
	oldOps, oldHandlers := outcomes(old)
	if len(oldHandlers) != 0 || old.handlers != 0 {
		t.Errorf("version 1 replay called the handler: %v", oldHandlers)
	}
	if strings.Join(oldOps, "\n") != strings.Join(recOps, "\n") {
		t.Errorf("version 1 replay: outcomes differ:\nrecorded:\n%s\nreplayed:\n%s", strings.Join(recOps, "\n"), strings.Join(oldOps, "\n"))
	}
}

// handlerLines returns the example's error-handler lines (EPERR), thread
// and status.
func handlerLines(out string) []string {
	var hs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "EPERR ") {
			hs = append(hs, strings.Fields(l)[1]+" "+strings.Fields(l)[2])
		}
	}
	return hs
}

// A real peer death, observed (libucp's own call of the error handler is
// probed), replayed into a fresh run against a live peer: the recording
// holds the endpoint's failure, and the replayed run gets the same outcomes
// and the same handler call, which a replay of outcomes alone never made.
func TestObservedPeerDeathReplaysTheHandler(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	args := []string{"--transport", "tcp", "--ops", "30", "--seq", "put,get,flush", "--wait-before-start-ms", "60000"}
	real := testutil.StartExample(t, h.rma, append(args, "--kill-peer-at", "40")...)
	p := h.observe(t, real) // releases the program once observing
	realOut := real.Wait(t, 30*time.Second)
	realOps, realHandlers := testutil.ParseOps(realOut), handlerLines(realOut)
	if len(realHandlers) != 1 {
		t.Fatalf("the real run called the handler %d times, want once:\n%s", len(realHandlers), realOut)
	}
	fails := p.Failures()
	if len(fails) != 1 || fails[0].Injected || fails[0].Endpoint != 0 {
		t.Fatalf("observed endpoint events %+v, want one real failure of endpoint 0", p.EndpointEvents)
	}
	if want := "status=" + fmt.Sprint(fails[0].Code); !strings.HasSuffix(realHandlers[0], want) {
		t.Fatalf("observed failure code %d, the handler got %s", fails[0].Code, realHandlers[0])
	}
	recPath := filepath.Join(t.TempDir(), "real.json")
	f := recording.New(recording.SourceObserver)
	f.Processes = []recording.Process{*p}
	if err := f.WriteFile(recPath); err != nil {
		t.Fatal(err)
	}

	e := h.start(t, []string{"--disabled"}, args...)
	h.mustCtl(t, "replay", "--from", recPath)
	e.Release(t)
	out := e.Wait(t, 60*time.Second)
	replayed, handlers := testutil.ParseOps(out), handlerLines(out)
	if strings.Join(handlers, "\n") != strings.Join(realHandlers, "\n") {
		t.Errorf("handler calls: replayed %v, real %v", handlers, realHandlers)
	}
	if len(replayed) != len(realOps) {
		t.Fatalf("replayed run: %d ops, real run %d", len(replayed), len(realOps))
	}
	for i := range realOps {
		if realOps[i].Fn != replayed[i].Fn || realOps[i].Status != replayed[i].Status {
			t.Fatalf("op %d: real %s %d, replayed %s %d", i, realOps[i].Fn, realOps[i].Status, replayed[i].Fn, replayed[i].Status)
		}
	}
}

// A run whose endpoint a rule kills, recorded by the injector from the
// start, replayed into a fresh run without the rule: the recording holds
// the rule's kill at the killed call's position (cause rule) and the error
// handler's call (libucp's, seen through the injector's trampoline), and
// the replayed run gets the same outcomes and the same handler call.
func TestRecordedRuleKillReplays(t *testing.T) {
	args := []string{"--count", "2", "--size", "65536", "--close", "force", "--wait-ms", "3000"}
	h1 := newHarness(t)
	path := filepath.Join(t.TempDir(), "rec.json")
	// The rule counts gets from the start: the check's get is the first,
	// the batch's first get (op 2) the second. Recording starts where the
	// replay will be loaded, once the client is READY.
	rec := injectedPeerRunWith(t, h1, "rma", []string{"--rule", "hooks=ucp_get_nbx calls=1 kill-ep"}, args,
		func() { h1.mustCtl(t, "record-toggle", "on") }, func() {}, path)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := f.Processes[0]
	var fails, handlers []recording.EndpointEvent
	for _, e := range p.EndpointEvents {
		switch e.Event {
		case recording.EventFailure:
			fails = append(fails, e)
		case recording.EventHandler:
			handlers = append(handlers, e)
		}
	}
	if len(fails) != 1 || fails[0].Endpoint != 0 || fails[0].Cause != recording.CauseRule || !fails[0].Injected ||
		fails[0].Code != rec.code {
		t.Fatalf("failure events %+v, want one injected by the rule on endpoint 0 with %d", fails, rec.code)
	}
	// The failure sits just before the get the rule killed, failed at
	// once with the kill's code.
	if s := fails[0].Seq; s >= uint64(len(p.Calls)) || p.Calls[s].Fn != "ucp_get_nbx" || p.Calls[s].Status != rec.code ||
		p.Calls[s].How != recording.HowImmediate {
		t.Fatalf("failure at seq %d, the call there: %+v", s, p.Calls[min(int(s), len(p.Calls)-1)])
	}
	if len(handlers) != 1 || handlers[0].Endpoint != 0 || handlers[0].Code != rec.code || handlers[0].Cause != recording.CauseKill {
		t.Fatalf("handler events %+v, want one on endpoint 0 with %d (cause kill)", handlers, rec.code)
	}
	recOps, recHandlers := outcomes(rec)
	if len(recHandlers) != 1 || rec.handlers != 1 {
		t.Fatalf("recorded run: handler calls %v (program counted %d), want one:\n%s", recHandlers, rec.handlers, rec.out)
	}

	h2 := newHarness(t)
	rep := injectedPeerRun(t, h2, "rma", args,
		func() {
			if out := h2.mustCtl(t, "replay", "--from", path); !strings.Contains(out, "replaying") {
				t.Fatalf("replay: %s", out)
			}
		},
		func() {}, "")
	repOps, repHandlers := outcomes(rep)
	if strings.Join(repHandlers, "\n") != strings.Join(recHandlers, "\n") || rep.handlers != rec.handlers {
		t.Errorf("handler calls: replayed %v (counted %d), recorded %v (counted %d)", repHandlers, rep.handlers, recHandlers, rec.handlers)
	}
	if strings.Join(repOps, "\n") != strings.Join(recOps, "\n") {
		t.Errorf("outcomes differ:\nrecorded:\n%s\nreplayed:\n%s", strings.Join(recOps, "\n"), strings.Join(repOps, "\n"))
	}
	if t.Failed() {
		t.Logf("recorded run:\n%s\nreplayed run:\n%s\nendpoint events: %+v", rec.out, rep.out, p.EndpointEvents)
	}
}
