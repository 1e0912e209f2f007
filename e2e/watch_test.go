package e2e

// `ucxfault watch`: the always-on failure watch, on real programs and real
// probes. It must report a real peer death as the program saw it, and take
// no trap on the data path.

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/observer"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// startWatch starts `ucxfault watch ARGS` and returns once it has attached
// (its banner).
func (h *harness) startWatch(t *testing.T, args ...string) *nodeObserver {
	t.Helper()
	return h.startAttached(t, "watch", "for endpoint failures", args...)
}

// failures parses the watch's -o jsonl output.
func watchFailures(t *testing.T, out string) []observer.Failure {
	t.Helper()
	var fs []observer.Failure
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var f observer.Failure
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("watch line %q: %v", sc.Text(), err)
		}
		fs = append(fs, f)
	}
	return fs
}

var watchEventsRE = regexp.MustCompile(`stopped: (\d+) processes watched, (\d+) failures, (\d+) events, (\d+) lost`)

// TestWatchRealPeerDeath: a real TCP peer death (SIGKILL, requests in
// flight) in a program that starts after the watch is reported once, with
// the code its handler got, its endpoint and peer, and as many purged
// requests as the program saw fail on completion. The watch runs with
// --all --comm, so the program is found by the probes on its first
// endpoint call (its libucp file is probed already, for a first process
// found by the scan of /proc).
func TestWatchRealPeerDeath(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	prog := buildPeerdeath(t)
	dir := t.TempDir()
	w := h.startWatch(t, "--all", "--comm", "peerdeath", "-o", "jsonl", "--incidents", dir)

	// A first process, found by the scan: its libucp file is probed from
	// then on.
	first := exec.Command(prog, "server", "--hello", filepath.Join(dir, "first"))
	first.Env = peerEnv(nil)
	fp := testutil.StartCmd(t, first)
	t.Cleanup(func() { fp.Cmd.Process.Kill() })
	want := fmt.Sprintf("watching process %d ", fp.PID)
	waitFor(t, 20*time.Second, "the watch to find the first process", func() bool { return strings.Contains(w.stderr.String(), want) })

	r := runPeer(t, nil, peerRun{scenario: "rma", stopFirst: true, death: deathKill,
		args: []string{"--size", "1048576", "--close", "force"}})
	pid := readyPID(t, r.out)
	// An emulated kill through the injector (kill-ep), the peer alive.
	emu := runPeer(t, h, peerRun{scenario: "idle", death: deathEmulated,
		inject: []string{"--mode", "deferred", "--probability", "0"}})
	emuPID := readyPID(t, emu.out)
	failedOnCompletion := 0
	for _, e := range r.events {
		if e.Kind != "handler" && e.Via != "immediate" && e.Status < 0 && (e.Phase == "inflight" || e.Phase == "pending") {
			failedOnCompletion++
		}
	}
	time.Sleep(time.Second) // the watch reports a failure once settled (200 ms)
	w.stop(t)
	var mine, emulated []observer.Failure
	for _, f := range watchFailures(t, w.stdout.String()) {
		switch f.PID {
		case pid:
			mine = append(mine, f)
		case emuPID:
			emulated = append(emulated, f)
		}
	}
	if len(emulated) != 1 || !emulated[0].Injected || emulated[0].Code != emu.code || emulated[0].Endpoint != 0 || !emulated[0].Handler {
		t.Fatalf("emulated kill of the client %d: %+v, want one injected failure with code %d on endpoint 0:\n%s", emuPID, emulated, emu.code, w.stderr.String())
	}
	t.Logf("emulated: %+v", emulated[0])
	if len(mine) != 1 {
		t.Fatalf("%d failures of the client %d, want 1:\n%s\n%s", len(mine), pid, w.stdout.String(), w.stderr.String())
	}
	f := mine[0]
	t.Logf("failure: %+v", f)
	if f.Code != r.code || !f.Handler || f.Endpoint != 0 || f.Injected || f.CreatedBefore {
		t.Fatalf("failure %+v, want code %d through the handler on endpoint 0, real, created after the watch", f, r.code)
	}
	if !strings.HasPrefix(f.Peer, "w:") || f.AgeNS <= 0 {
		t.Fatalf("failure %+v: want a w: peer and an age", f)
	}
	if failedOnCompletion == 0 || len(f.Purged) != failedOnCompletion {
		t.Fatalf("%d purged requests reported, the program saw %d fail on completion:\n%s", len(f.Purged), failedOnCompletion, r.out)
	}
	for _, p := range f.Purged {
		if p.Code != r.code {
			t.Fatalf("purged request %+v, want code %d", p, r.code)
		}
	}
	// The incident: one recording of endpoint events.
	names, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("ucxfault-incident-*-%d-ep0-*.json", pid)))
	if len(names) != 1 {
		t.Fatalf("incidents %v, want one", names)
	}
	rec, err := recording.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	fails := rec.Processes[0].Failures()
	if len(fails) != 1 || fails[0].Code != r.code || fails[0].Endpoint != 0 || fails[0].TimeNS != uint64(f.AgeNS) {
		t.Fatalf("incident failures %+v, want one of code %d on endpoint 0 at %d ns", fails, r.code, f.AgeNS)
	}
}

// TestWatchLeavesTheDataPathAlone: a program doing thousands of puts under
// `watch --all` adds no event beyond its endpoint's creation and close, and
// every probe the watch holds (as the kernel lists them, bpftool perf) is
// on a failure-path or lifetime function, none on a data-path one.
func TestWatchLeavesTheDataPathAlone(t *testing.T) {
	testutil.RequireBPF(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("bpftool is needed to list the watch's probes")
	}
	h := newHarness(t)
	name, bin := uniqueComm(t, h.rma)
	w := h.startWatch(t, "--all", "--comm", name)
	ex := testutil.StartExample(t, bin, "--ops", "3000", "--seq", "putnbi,put", "--quiet", "--wait-before-start-ms", "60000")
	want := fmt.Sprintf("watching process %d ", ex.PID)
	waitFor(t, 20*time.Second, "the watch to find the program", func() bool { return strings.Contains(w.stderr.String(), want) })

	// The probes, by file offset, mapped back to their functions.
	out, err := exec.Command("bpftool", "perf", "list", "-j").Output()
	if err != nil {
		t.Fatalf("bpftool perf list: %v", err)
	}
	var links []struct {
		PID      int    `json:"pid"`
		Type     string `json:"fd_type"`
		Filename string `json:"filename"`
		Offset   uint64 `json:"offset"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatal(err)
	}
	allowed := observer.WatchSymbolNames()
	probed := map[string]int{}
	for _, l := range links {
		if l.PID != w.cmd.Process.Pid {
			continue
		}
		fn := symbolAt(t, l.Filename, l.Offset)
		probed[fn]++
		if !slices.Contains(allowed, fn) {
			t.Fatalf("the watch probes %s (%s in %s), not a failure-path or lifetime function", fn, l.Type, l.Filename)
		}
	}
	if probed["ucp_ep_invoke_err_cb"] == 0 || probed["ucp_ep_create"] != 2 {
		t.Fatalf("probes %v: want ucp_ep_invoke_err_cb, and ucp_ep_create at entry and return", probed)
	}
	t.Logf("probes of the watch: %v", probed)

	ex.Cmd.Process.Signal(syscall.SIGUSR1) // ends --wait-before-start-ms early
	res := ex.Wait(t, 60*time.Second)
	if !strings.Contains(res, "DONE") {
		t.Fatalf("the program did not finish:\n%s", res)
	}
	w.stop(t)
	m := watchEventsRE.FindStringSubmatch(w.stderr.String())
	if m == nil {
		t.Fatalf("no stopped line:\n%s", w.stderr.String())
	}
	events, _ := strconv.Atoi(m[3])
	// 6000 puts; the endpoint's create and its close (ucp_ep_close_nbx,
	// and what it calls of ucp_ep_close_nb and ucp_ep_destroy) are the
	// only events.
	if events > 4 || events == 0 {
		t.Fatalf("%d events for a program of 6000 puts, want its create and close only:\n%s", events, w.stderr.String())
	}
	t.Logf("6000 puts: %d watch events", events)
}

// symbolAt names the function at file offset off of the ELF file path.
func symbolAt(t *testing.T, path string, off uint64) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value == 0 {
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && s.Value >= p.Vaddr && s.Value < p.Vaddr+p.Memsz && s.Value-p.Vaddr+p.Off == off {
				return s.Name
			}
		}
	}
	return fmt.Sprintf("offset %#x", off)
}

// strippedLibucp copies the libucp in use with ucp_ep_invoke_err_cb renamed
// in its dynamic string table: a libucp that does not export it.
func strippedLibucp(t *testing.T) string {
	t.Helper()
	u := testutil.UCX(t)
	real, err := filepath.EvalSymlinks(filepath.Join(u.LibDir, "libucp.so.0"))
	if err != nil {
		t.Fatalf("libucp.so.0 not found: %v", err)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	patched := bytes.ReplaceAll(data, []byte("\x00ucp_ep_invoke_err_cb\x00"), []byte("\x00ucp_ep_invoke_err_cX\x00"))
	if bytes.Equal(patched, data) {
		t.Fatal("ucp_ep_invoke_err_cb not found in libucp")
	}
	path := filepath.Join(t.TempDir(), "libucp.so.0")
	if err := os.WriteFile(path, patched, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWatchRefusesALibucpWithoutItsFailurePath: a process whose libucp does
// not export ucp_ep_invoke_err_cb gets a clear refusal naming the UCX
// version (exit 2), not a watch that shows nothing.
func TestWatchRefusesALibucpWithoutItsFailurePath(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	lib := strippedLibucp(t)
	sleeper := exec.Command("sleep", "60")
	sleeper.Env = append(os.Environ(), "LD_PRELOAD="+lib)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	waitFor(t, 10*time.Second, "the process to map the copy", func() bool {
		m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", sleeper.Process.Pid))
		return strings.Contains(string(m), lib)
	})
	out, err := exec.Command(h.cli, "watch", strconv.Itoa(sleeper.Process.Pid), "--duration", "1s").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("watch of a libucp without its failure path: %v, want exit 2\n%s", err, out)
	}
	for _, want := range []string{"ucp_ep_invoke_err_cb", lib, "UCX " + libVersion(t)} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("refusal %q does not name %q", out, want)
		}
	}
	t.Logf("refusal: %s", strings.TrimSpace(string(out)))
}

// libVersion is the version of the UCX in use, as pkg-config says.
func libVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("pkg-config", "--modversion", "ucx").Output()
	if err != nil {
		t.Skipf("pkg-config --modversion ucx: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// readyPID returns the pid of a peerdeath client's READY line.
func readyPID(t *testing.T, out string) int {
	t.Helper()
	var pid int
	i := strings.Index(out, "READY pid=")
	if i < 0 {
		t.Fatalf("no READY line:\n%s", out)
	}
	if _, err := fmt.Sscanf(out[i:], "READY pid=%d", &pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestWatchIncidentReplaysAsAKill: the incident the watch writes for a real
// TCP peer death (SIGKILL) replays into a fresh run of the same program,
// whose peer stays alive, as a kill of the same endpoint with the same
// code, as long after the endpoint's creation as the failure came: armed
// before the endpoint exists, it waits for its creation (status says so),
// fires no earlier than its moment, and the program's handler runs once
// with the recorded code on endpoint 0. Without the replay nothing would
// fail (the peer lives), so the test fails if the replay does nothing. The
// watch sees the replayed kill go through libucp's own failure path,
// marked injected. A malformed incident is refused (exit 2), and one that
// names an endpoint the program never creates waits, as status shows.
func TestWatchIncidentReplaysAsAKill(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	prog := buildPeerdeath(t)
	dir := t.TempDir()
	w := h.startWatch(t, "--all", "--comm", "peerdeath", "-o", "jsonl", "--incidents", dir)
	first := exec.Command(prog, "server", "--hello", filepath.Join(dir, "first"))
	first.Env = peerEnv(nil)
	fp := testutil.StartCmd(t, first)
	t.Cleanup(func() { fp.Cmd.Process.Kill() })
	want := fmt.Sprintf("watching process %d ", fp.PID)
	waitFor(t, 20*time.Second, "the watch to find the first process", func() bool { return strings.Contains(w.stderr.String(), want) })

	// The recorded run: the endpoint is 300 ms old or more at the death,
	// far longer than the replayed run takes to check it (a put, a get
	// and a flush) before it waits.
	args := []string{"--size", "1048576", "--close", "force", "--wait-ms", "2000"}
	r := runPeer(t, nil, peerRun{scenario: "rma", stopFirst: true, death: deathKill, goAfter: 300 * time.Millisecond, args: args})
	pid := readyPID(t, r.out)
	var incident string
	waitFor(t, 10*time.Second, "the incident file", func() bool {
		names, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("ucxfault-incident-*-%d-ep0-*.json", pid)))
		if len(names) == 1 {
			incident = names[0]
		}
		return incident != ""
	})
	rec, err := recording.ReadFile(incident)
	if err != nil {
		t.Fatal(err)
	}
	fails := rec.Processes[0].Failures()
	if len(fails) != 1 || fails[0].Code != r.code || fails[0].Endpoint != 0 || fails[0].TimeNS < uint64(300*time.Millisecond) {
		t.Fatalf("incident failures %+v, want one of code %d on endpoint 0, 300 ms or more after the creation", fails, r.code)
	}
	age := fails[0].TimeNS

	// Bad input: a malformed incident (a failure code outside -1..-100).
	bad := filepath.Join(t.TempDir(), "bad.json")
	data, _ := os.ReadFile(incident)
	if err := os.WriteFile(bad, bytes.Replace(data, []byte(fmt.Sprintf(`"code": %d`, r.code)), []byte(`"code": 5`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	// One that names an endpoint the program never creates.
	other := filepath.Join(t.TempDir(), "ep7.json")
	if err := os.WriteFile(other, bytes.ReplaceAll(data, []byte(`"ep": 0`), []byte(`"ep": 7`)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The fresh run, under the injector, its peer alive; it waits before
	// creating its endpoint.
	hello := filepath.Join(t.TempDir(), "hello")
	srv := exec.Command(prog, "server", "--hello", hello)
	srv.Env = peerEnv(nil)
	server := testutil.StartCmd(t, srv)
	t.Cleanup(func() { server.Cmd.Process.Kill() })
	waitFor(t, 20*time.Second, "the server", func() bool { return strings.Contains(server.Output(), "READY") })
	t.Cleanup(func() { server.Cmd.Process.Signal(syscall.SIGCONT) })
	cli := exec.Command(h.cli, append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--mode", "deferred",
		"--probability", "0", "--", prog, "client", "--hello", hello, "--scenario", "rma", "--start-line"}, args...)...)
	cli.Env = peerEnv(nil)
	stdin, err := cli.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	client := testutil.StartCmd(t, cli)
	cpid := client.PID // from its first READY line, before the endpoint exists
	target := strconv.Itoa(cpid)

	res := h.ctl(t, "replay", "--from", bad, "--pid", target)
	if res.code != 2 || !strings.Contains(res.stderr, bad) || !strings.Contains(res.stderr, "5") {
		t.Fatalf("replay of a malformed incident: exit %d, want 2 and a message naming the file and the code\n%s%s", res.code, res.stdout, res.stderr)
	}
	t.Logf("malformed: %s", strings.TrimSpace(res.stderr))
	h.mustCtl(t, "replay", "--from", other, "--pid", target)
	if st := h.mustCtl(t, "status", "--pid", target); !strings.Contains(st, "replay kills endpoint 7") || !strings.Contains(st, "waiting for endpoint 7 to be created") {
		t.Fatalf("status after replaying an incident of endpoint 7:\n%s", st)
	}
	msg := h.mustCtl(t, "replay", "--from", incident, "--pid", target)
	t.Logf("replay: %s", strings.TrimSpace(msg))
	st := h.mustCtl(t, "status", "--pid", target)
	if !strings.Contains(st, "waiting for endpoint 0 to be created") || strings.Contains(st, "endpoint 7") {
		t.Fatalf("status before the endpoint exists:\n%s", st)
	}
	t.Logf("status: %s", st)

	// As in the recorded run: the batch in flight to a stopped server
	// when the endpoint dies, here by the replayed kill alone.
	io.WriteString(stdin, "start\n")
	waitFor(t, 20*time.Second, "the client's READY line", func() bool { return strings.Count(client.Output(), "READY pid=") == 2 })
	if err := server.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "go\n")
	waitFor(t, 20*time.Second, "the client's POSTED line", func() bool { return strings.Contains(client.Output(), "\nPOSTED ") })
	posted := client.Output()
	var fired control.TimedKillStatus
	waitFor(t, 20*time.Second, "the timed kill to fire", func() bool {
		for _, s := range h.status(t, "--pid", target) {
			if len(s.TimedKills) == 1 && s.TimedKills[0].State == control.TimedFired {
				fired = s.TimedKills[0]
				return true
			}
		}
		return false
	})
	if fired.Endpoint != 0 || fired.Code != ucs.Status(r.code) || fired.FiredAfterNS < age {
		t.Fatalf("timed kill %+v: want endpoint 0, code %d, fired %d ns or more after the creation", fired, r.code, age)
	}
	t.Logf("recorded failure %v after the creation, replayed kill %v after it", time.Duration(age), time.Duration(fired.FiredAfterNS))
	if strings.Contains(posted, "kind=handler") {
		t.Fatalf("the kill fired before the batch was posted:\n%s", posted)
	}
	time.Sleep(time.Second) // a live peer answers late, not never
	server.Cmd.Process.Signal(syscall.SIGCONT)
	rout := client.Wait(t, 40*time.Second)
	stdin.Close()
	events, err := testutil.ParsePeerEvents(rout)
	if err != nil {
		t.Fatal(err)
	}
	var hs []testutil.PeerEvent
	for _, e := range events {
		if e.Kind == "handler" {
			hs = append(hs, e)
		}
	}
	if len(hs) != 1 || hs[0].Status != r.code || hs[0].EP != 0 || !strings.Contains(rout, "DONE handlers=1") {
		t.Fatalf("replayed run: handler calls %v, want one with %d on endpoint 0:\n%s", hs, r.code, rout)
	}
	// The oracle: what the recorded run's program saw of the real death.
	if err := testutil.ComparePeerLogs(r.events, events); err != nil {
		t.Fatalf("%v\nreal:\n%s\nreplayed:\n%s", err, r.out, rout)
	}
	time.Sleep(time.Second) // the watch reports a failure once settled
	w.stop(t)
	var seen []observer.Failure
	for _, f := range watchFailures(t, w.stdout.String()) {
		if f.PID == cpid {
			seen = append(seen, f)
		}
	}
	if len(seen) != 1 || !seen[0].Injected || seen[0].Code != r.code || seen[0].Endpoint != 0 {
		t.Fatalf("the watch saw %+v in the replayed run, want one injected failure with %d on endpoint 0", seen, r.code)
	}
}

// TestTimedKillOfAClosedEndpointDoesNothing: a replayed incident whose
// moment (1.5 s after the creation) comes after the program closed the
// endpoint (about 0.3 s) and while it still progresses (3 s) kills nothing:
// a closed endpoint cannot die. Status says so, and the handler never runs.
// Needs no probe: the incident is written here.
func TestTimedKillOfAClosedEndpointDoesNothing(t *testing.T) {
	h := newHarness(t)
	prog := buildPeerdeath(t)
	rf := recording.New(recording.SourceObserver)
	rf.Processes = []recording.Process{{Host: "h", PID: 1, Rank: -1, Command: []string{"peerdeath"}, Hooks: []string{}, Complete: true,
		Calls: []recording.Call{}, EndpointEvents: []recording.EndpointEvent{
			{Endpoint: 0, Event: recording.EventCreate},
			{Endpoint: 0, Event: recording.EventFailure, Code: -80, TimeNS: uint64(1500 * time.Millisecond)},
		}}}
	incident := filepath.Join(t.TempDir(), "incident.json")
	if err := rf.WriteFile(incident); err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(t.TempDir(), "hello")
	srv := exec.Command(prog, "server", "--hello", hello)
	srv.Env = peerEnv(nil)
	server := testutil.StartCmd(t, srv)
	t.Cleanup(func() { server.Cmd.Process.Kill() })
	cli := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--disabled", "--", prog,
		"client", "--hello", hello, "--scenario", "idle", "--close", "flush", "--wait-ms", "200", "--linger-ms", "3000", "--start-line")
	cli.Env = peerEnv(nil)
	stdin, err := cli.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	client := testutil.StartCmd(t, cli)
	target := strconv.Itoa(client.PID)
	h.mustCtl(t, "replay", "--from", incident, "--pid", target)
	io.WriteString(stdin, "start\ngo\n")
	waitFor(t, 20*time.Second, "the close", func() bool { return strings.Contains(client.Output(), "kind=close") })
	waitFor(t, 5*time.Second, "status to say the endpoint closed first", func() bool {
		return strings.Contains(h.mustCtl(t, "status", "--pid", target), "replay kills endpoint 0 with -80 (ENDPOINT_TIMEOUT) 1.5s after its creation: not fired: the endpoint was closed first")
	})
	out := client.Wait(t, 30*time.Second)
	stdin.Close()
	if !strings.Contains(out, "DONE handlers=0") {
		t.Fatalf("the handler ran:\n%s", out)
	}
}

// TestWatchOfGivenProcessesEndsWithThem: `watch PID` ends by itself, exit
// 0, once its process has exited, as observe does (with --all it runs until
// stopped).
func TestWatchOfGivenProcessesEndsWithThem(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	ex := testutil.StartExample(t, h.rma, "--ops", "0", "--seq", "put", "--interval-us", "2000", "--quiet")
	w := h.startWatch(t, strconv.Itoa(ex.PID))
	select {
	case err := <-w.done:
		t.Fatalf("the watch ended while its process runs: %v\n%s", err, w.stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	ex.Cmd.Process.Kill()
	<-ex.Done()
	w.wait(t, 30*time.Second)
	if !strings.Contains(w.stderr.String(), "every watched process has exited") || !watchEventsRE.MatchString(w.stderr.String()) {
		t.Fatalf("the watch did not say why it ended, or gave no stopped line:\n%s", w.stderr.String())
	}
}
