package observer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/observer"
	"github.com/ucxfault/ucxfault/recording"
)

// fnOf maps the example's operation names to libucp functions.
var fnOf = map[string]string{
	"put":   "ucp_put_nbx",
	"get":   "ucp_get_nbx",
	"flush": "ucp_ep_flush_nbx",
}

// observe starts the example with args, attaches after READY, releases the
// example's --wait-before-start-ms sleep with SIGUSR1 once attached, waits
// for the example to exit and stops the session.
func observe(t *testing.T, args ...string) (*recording.Process, observer.Stats, string) {
	t.Helper()
	testutil.RequireBPF(t)
	bin := testutil.BuildExample(t)
	ex := testutil.StartExample(t, bin, args...)
	t0 := time.Now()
	s, err := observer.Start(&observer.Options{PID: ex.PID})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("probes attached in %v", time.Since(t0).Round(time.Millisecond))
	if strings.Contains(ex.Output(), "\nOP ") {
		s.Stop()
		t.Fatalf("the example started its operations before the probes were attached; raise --wait-before-start-ms")
	}
	// The example sleeps after READY until SIGUSR1 (or its bound): it starts
	// its operations only now that every probe is attached, however long
	// attaching took on a loaded machine.
	if err := syscall.Kill(ex.PID, syscall.SIGUSR1); err != nil {
		t.Fatalf("releasing the example: %v", err)
	}
	out := ex.Wait(t, 2*time.Minute)
	select {
	case <-s.Exited():
	case <-time.After(10 * time.Second):
		t.Errorf("Exited() not closed 10s after the example exited")
	}
	f, st, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("recording does not validate: %v", err)
	}
	if f.Source != recording.SourceObserver || len(f.Processes) != 1 {
		t.Fatalf("recording: source %q with %d processes", f.Source, len(f.Processes))
	}
	p := &f.Processes[0]
	t.Logf("stats: %+v", st)
	if p.PID != ex.PID {
		t.Errorf("recording PID %d, want %d", p.PID, ex.PID)
	}
	return p, st, out
}

func countFn(p *recording.Process) map[string]int {
	n := map[string]int{}
	for _, c := range p.Calls {
		n[c.Fn]++
	}
	return n
}

func requireComplete(t *testing.T, p *recording.Process, st observer.Stats) {
	t.Helper()
	if !p.Complete || p.Lost.Any() || st.Lost() != 0 {
		t.Errorf("recording incomplete: complete=%v lost=%+v stats=%+v", p.Complete, p.Lost, st)
	}
}

func TestObserveCountsCalls(t *testing.T) {
	const n = 25
	p, st, out := observe(t, "--ops", fmt.Sprint(n), "--seq", "put,get,flush", "--size", "4096",
		"--wait-before-start-ms", "60000")
	requireComplete(t, p, st)
	ops := testutil.ParseOps(out)
	if len(ops) != 3*n {
		t.Fatalf("example printed %d OP lines, want %d", len(ops), 3*n)
	}
	got := countFn(p)
	for fn, want := range map[string]int{"ucp_put_nbx": n, "ucp_get_nbx": n, "ucp_ep_flush_nbx": n} {
		if got[fn] != want {
			t.Errorf("%s: %d calls recorded, want %d", fn, got[fn], want)
		}
	}
	for _, c := range p.Calls {
		switch c.Fn {
		case "ucp_put_nbx", "ucp_get_nbx":
			if c.Size != 4096 || c.Endpoint != 0 {
				t.Errorf("call %d %s: size %d ep %d, want 4096 and 0", c.Seq, c.Fn, c.Size, c.Endpoint)
			}
		case "ucp_ep_flush_nbx":
			if c.Size != 0 || c.Endpoint != 0 {
				t.Errorf("call %d %s: size %d ep %d, want 0 and 0", c.Seq, c.Fn, c.Size, c.Endpoint)
			}
		case "ucp_request_check_status":
			if c.Endpoint != -1 || c.Size != 0 {
				t.Errorf("call %d %s: size %d ep %d, want 0 and -1", c.Seq, c.Fn, c.Size, c.Endpoint)
			}
		}
		if c.Status != 0 || c.Thread != 0 || c.Injected {
			t.Errorf("call %+v: want status 0, thread 0, not injected", c)
		}
		if c.DurationNS == 0 {
			t.Errorf("call %d %s: no duration", c.Seq, c.Fn)
		}
	}
	// The application's own calls, in order: put, get, flush, ...
	i := 0
	for _, c := range p.Calls {
		if c.Fn != "ucp_put_nbx" && c.Fn != "ucp_get_nbx" && c.Fn != "ucp_ep_flush_nbx" {
			continue // status queries, and the teardown's ucp_ep_close_nbx
		}
		if want := fnOf[ops[i].Fn]; c.Fn != want {
			t.Fatalf("application call %d is %s, the example's op %d is %s", i, c.Fn, i, want)
		}
		i++
	}
	var want []string
	for _, h := range hooks.Table {
		if !h.NoProbe {
			want = append(want, h.Name)
		}
	}
	if strings.Join(p.Hooks, ",") != strings.Join(want, ",") {
		t.Errorf("hooks %v, want %v", p.Hooks, want)
	}
	if st.Calls != uint64(len(p.Calls)) {
		t.Errorf("Stats.Calls %d, recording has %d calls", st.Calls, len(p.Calls))
	}
	t.Logf("%d calls recorded (%v), %d internal calls dropped", len(p.Calls), got, st.Internal)
}

func TestObserveDropsInternalCalls(t *testing.T) {
	const n = 20
	p, st, out := observe(t, "--ops", fmt.Sprint(n), "--seq", "putnbi", "--wait-before-start-ms", "60000")
	requireComplete(t, p, st)
	if ops := testutil.ParseOps(out); len(ops) != n {
		t.Fatalf("example printed %d OP lines, want %d", len(ops), n)
	}
	// ucp_put_nbi calls ucp_put_nbx through libucp's PLT: those calls are
	// internal, and ucp_put_nbi itself is not hooked.
	if got := countFn(p)["ucp_put_nbx"]; got != 0 {
		t.Errorf("%d ucp_put_nbx calls recorded, want 0 (all were made by ucp_put_nbi)", got)
	}
	if st.Internal < n {
		t.Errorf("%d internal calls counted, want at least %d", st.Internal, n)
	}
	t.Logf("%d calls recorded (%v), %d internal calls dropped", len(p.Calls), countFn(p), st.Internal)
}

func TestObserveRealFailure(t *testing.T) {
	p, st, out := observe(t, "--transport", "tcp", "--ops", "10", "--seq", "put,get,flush",
		"--kill-peer-at", "14", "--wait-before-start-ms", "60000")
	requireComplete(t, p, st)
	ops := testutil.ParseOps(out)
	if len(ops) != 30 {
		t.Fatalf("example printed %d OP lines, want 30:\n%s", len(ops), out)
	}
	byFn := map[string][]recording.Call{}
	for _, c := range p.Calls {
		byFn[c.Fn] = append(byFn[c.Fn], c)
	}
	next := map[string]int{}
	failed := 0
	for i, op := range ops {
		fn := fnOf[op.Fn]
		k := next[fn]
		next[fn]++
		if k >= len(byFn[fn]) {
			t.Fatalf("op %d (%s): only %d %s calls recorded", i, op.Fn, len(byFn[fn]), fn)
		}
		c := byFn[fn][k]
		if c.Status != op.Status || c.How != op.How {
			t.Errorf("op %d %s: recorded status %d how %s, the program saw %d %s", i, op.Fn, c.Status, c.How, op.Status, op.How)
		}
		if op.Fn == "put" {
			want := 0
			if i >= 14 {
				// What the running libucp reports for a SIGKILLed TCP peer.
				want = testutil.DeadPeerCode(testutil.UCX(t).Major, testutil.UCX(t).Minor)
			}
			if op.Status != want {
				t.Errorf("op %d put: the program saw %d, want %d", i, op.Status, want)
			}
		}
		if c.Status != 0 {
			failed++
		}
	}
	for fn, calls := range byFn {
		switch fn {
		case "ucp_request_check_status", "ucp_request_free", "ucp_ep_close_nbx":
			continue // polls, and the example's completion and teardown calls
		}
		if len(calls) != next[fn] {
			t.Errorf("%s: %d calls recorded, the program made %d", fn, len(calls), next[fn])
		}
	}
	t.Logf("%d calls recorded (%v), %d of the program's operations failed", len(p.Calls), countFn(p), failed)
}

func TestObserveTargetExits(t *testing.T) {
	testutil.RequireBPF(t)
	bin := testutil.BuildExample(t)
	ex := testutil.StartExample(t, bin, "--ops", "0", "--seq", "put,flush", "--interval-us", "2000",
		"--wait-before-start-ms", "60000")
	s, err := observer.Start(&observer.Options{PID: ex.PID})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ex.Release(t) // every probe attached: the program may start
	waitOps(t, ex, 100)
	if st := s.Stats(); st.Calls == 0 {
		t.Errorf("no calls seen while the example runs: %+v", st)
	}
	// The example stops cleanly on SIGTERM, in the middle of the
	// observation.
	ex.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("Exited() not closed after the example exited")
	}
	out := ex.Wait(t, 10*time.Second)
	f, st, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &f.Processes[0]
	requireComplete(t, p, st)
	want := map[string]int{}
	for _, op := range testutil.ParseOps(out) {
		want[fnOf[op.Fn]]++
	}
	got := countFn(p)
	if want["ucp_put_nbx"] == 0 || got["ucp_put_nbx"] != want["ucp_put_nbx"] || got["ucp_ep_flush_nbx"] != want["ucp_ep_flush_nbx"] {
		t.Errorf("recorded %v, the program printed %v", got, want)
	}
	t.Logf("%d calls recorded (%v)", len(p.Calls), got)
}

func TestObserveKilledTarget(t *testing.T) {
	testutil.RequireBPF(t)
	bin := testutil.BuildExample(t)
	ex := testutil.StartExample(t, bin, "--ops", "0", "--seq", "put,get", "--interval-us", "500",
		"--wait-before-start-ms", "60000")
	s, err := observer.Start(&observer.Options{PID: ex.PID, Hooks: []hooks.ID{0}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ex.Release(t) // every probe attached: the program may start
	waitOps(t, ex, 100)
	ex.Cmd.Process.Kill()
	<-ex.Done()
	select {
	case <-s.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited() not closed after the example was killed")
	}
	f, _, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &f.Processes[0]
	puts := 0
	for _, op := range testutil.ParseOps(ex.Output()) {
		if op.Fn == "put" {
			puts++
		}
	}
	got := countFn(p)
	// A put may have returned (and been recorded) before the kill, but
	// not yet printed.
	if d := got["ucp_put_nbx"] - puts; d < 0 || d > 1 || len(got) != 1 {
		t.Errorf("recorded %v, the program printed %d puts", got, puts)
	}
	if strings.Join(p.Hooks, ",") != "ucp_put_nbx" {
		t.Errorf("hooks %v, want [ucp_put_nbx]", p.Hooks)
	}
	t.Logf("%d calls recorded, complete=%v, lost %+v", len(p.Calls), p.Complete, p.Lost)
}

func TestStartNoProcess(t *testing.T) {
	testutil.RequireBPF(t)
	_, err := observer.Start(&observer.Options{PID: 1 << 30})
	if !errors.Is(err, observer.ErrNoProcess) {
		t.Fatalf("Start on a missing PID: %v, want ErrNoProcess", err)
	}
	t.Log(err)
}

func TestStartNoLibucp(t *testing.T) {
	testutil.RequireBPF(t)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	_, err := observer.Start(&observer.Options{PID: cmd.Process.Pid})
	if !errors.Is(err, observer.ErrNoLibucp) || !strings.Contains(err.Error(), "--wait") {
		t.Fatalf("Start on sleep: %v, want ErrNoLibucp mentioning --wait", err)
	}
	t.Log(err)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = observer.StartContext(ctx, &observer.Options{PID: cmd.Process.Pid, Wait: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for libucp in sleep: %v, want a deadline error", err)
	}
}

func TestStartWaitsForLibucp(t *testing.T) {
	testutil.RequireBPF(t)
	// sh maps no libucp until it execs the example.
	bin := testutil.BuildExample(t)
	// The example waits after READY until released (SIGUSR1) once the
	// probes are attached: under load, attaching took longer than the
	// 1.5 s it used to wait.
	cmd := exec.Command("sh", "-c", "sleep 0.5; exec \"$0\" --ops 5 --seq put --wait-before-start-ms 60000 --quiet", bin)
	out := &lockedBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	s, err := observer.Start(&observer.Options{PID: cmd.Process.Pid, Wait: true})
	if err != nil {
		t.Fatalf("Start with Wait: %v", err)
	}
	// Not before READY: until then SIGUSR1 would still kill it.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "READY") {
		if time.Now().After(deadline) {
			t.Fatal("the example printed no READY in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("example: %v", err)
	}
	f, st, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	p := &f.Processes[0]
	requireComplete(t, p, st)
	if got := countFn(p)["ucp_put_nbx"]; got != 5 {
		t.Errorf("%d puts recorded, want 5", got)
	}
}

func TestObserveThreads(t *testing.T) {
	const threads, n = 3, 40
	p, st, out := observe(t, "--threads", fmt.Sprint(threads), "--ops", fmt.Sprint(n), "--seq", "put,get",
		"--size", "128", "--wait-before-start-ms", "60000")
	requireComplete(t, p, st)
	if ops := testutil.ParseOps(out); len(ops) != threads*n*2 {
		t.Fatalf("example printed %d OP lines, want %d", len(ops), threads*n*2)
	}
	// Each thread has its own endpoint: thread and endpoint ordinals
	// follow first use, so a thread's calls all share one endpoint.
	perThread := map[int]map[string]int{}
	epOf := map[int]int{}
	for _, c := range p.Calls {
		if perThread[c.Thread] == nil {
			perThread[c.Thread] = map[string]int{}
		}
		perThread[c.Thread][c.Fn]++
		if c.Endpoint < 0 {
			continue
		}
		if ep, ok := epOf[c.Thread]; ok && ep != c.Endpoint {
			t.Errorf("thread %d uses endpoints %d and %d", c.Thread, ep, c.Endpoint)
		}
		epOf[c.Thread] = c.Endpoint
	}
	if len(perThread) != threads {
		t.Fatalf("%d threads recorded, want %d", len(perThread), threads)
	}
	for th, fns := range perThread {
		if fns["ucp_put_nbx"] != n || fns["ucp_get_nbx"] != n {
			t.Errorf("thread %d: %v, want %d puts and %d gets", th, fns, n, n)
		}
	}
	seen := map[int]bool{}
	for _, ep := range epOf {
		if ep >= threads || seen[ep] {
			t.Errorf("endpoint ordinals %v: want %d distinct ordinals from 0", epOf, threads)
		}
		seen[ep] = true
	}
}

// waitOps waits until the example has printed n operations (the probes are
// attached before its first one).
func waitOps(t *testing.T, ex *testutil.Example, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(testutil.ParseOps(ex.Output())) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the example printed fewer than %d operations in 30 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestObserveRenamedLibucp observes a process whose only libucp is a
// renamed copy, as a Python wheel bundles it (libucp-<hash>.so.0), and
// that no launcher started: the probes go on the copy, and the recording
// says rank -1.
func TestObserveRenamedLibucp(t *testing.T) {
	testutil.RequireBPF(t)
	bin := testutil.BuildExample(t)
	// The copy is the libucp of the UCX under test, the one the example
	// was built against: another version's would not match its headers.
	lib, err := os.ReadFile(filepath.Join(testutil.UCX(t).LibDir, "libucp.so.0"))
	if err != nil {
		t.Fatalf("reading the libucp of the UCX under test: %v", err)
	}
	copyPath := filepath.Join(t.TempDir(), "libucp-deadbeef.so.0")
	if err := os.WriteFile(copyPath, lib, 0o755); err != nil {
		t.Fatal(err)
	}
	// Preloaded, the copy (whose SONAME is still libucp.so.0) satisfies
	// the example's dependency on libucp.so.0, so the system's file is
	// never mapped.
	// Released by SIGUSR1 once the probes are attached (attaching to a
	// file no probe was set on yet took over 2 s under load).
	cmd := exec.Command(bin, "--ops", "5", "--seq", "put", "--wait-before-start-ms", "60000", "--quiet")
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "LD_PRELOAD" && !slices.Contains(proc.RankVars, name) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LD_PRELOAD="+copyPath)
	ex := testutil.StartCmd(t, cmd)
	maps, err := proc.Maps(ex.PID)
	if err != nil {
		t.Fatal(err)
	}
	if got := proc.LibucpCopies(maps); !slices.Equal(got, []string{copyPath}) {
		t.Fatalf("the example maps libucp files %q, want only %s", got, copyPath)
	}
	s, err := observer.Start(&observer.Options{PID: ex.PID})
	if err != nil {
		t.Fatalf("Start on a renamed libucp: %v", err)
	}
	if err := syscall.Kill(ex.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ex.Wait(t, 2*time.Minute)
	f, st, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	p := &f.Processes[0]
	requireComplete(t, p, st)
	if got := countFn(p)["ucp_put_nbx"]; got != 5 {
		t.Errorf("%d puts recorded from the renamed copy, want 5", got)
	}
	if p.Rank != -1 {
		t.Errorf("recording of a process no launcher started has rank %d, want -1", p.Rank)
	}
}

// lockedBuffer collects a command's output for reading while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
