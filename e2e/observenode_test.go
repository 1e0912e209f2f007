package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/observer"
	"github.com/ucxfault/ucxfault/recording"
)

// nodeObserver is a running `ucxfault observe`, its output going to pipes.
type nodeObserver struct {
	cmd    *exec.Cmd
	stdout *bannerWriter
	stderr *bannerWriter
	done   chan error
}

// startNodeObserver starts `ucxfault observe ARGS` and returns once it prints
// its banner (the probes are attached).
func (h *harness) startNodeObserver(t *testing.T, args ...string) *nodeObserver {
	t.Helper()
	return h.startAttached(t, "observe", "observing ", args...)
}

// startAttached starts `ucxfault CMD ARGS` and returns once its stderr shows
// banner, which it prints when its probes are attached.
func (h *harness) startAttached(t *testing.T, cmd, banner string, args ...string) *nodeObserver {
	t.Helper()
	attached := make(chan struct{})
	r := &nodeObserver{
		cmd:    exec.Command(h.cli, append([]string{cmd}, args...)...),
		stdout: &bannerWriter{banner: "\x00", seen: func() {}},
		stderr: &bannerWriter{banner: banner, seen: func() { close(attached) }},
		done:   make(chan error, 1),
	}
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	select {
	case <-attached:
	case err := <-r.done:
		t.Fatalf("%s ended before attaching: %v\n%s", cmd, err, r.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not attach in 60 s\n%s", cmd, r.stderr.String())
	}
	return r
}

// wait waits for the observer to end by itself.
func (r *nodeObserver) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("observe: %v\n%s", err, r.stderr.String())
		}
	case <-time.After(timeout):
		t.Fatalf("observe did not end in %v\n%s", timeout, r.stderr.String())
	}
}

// stop interrupts the observer and waits for it.
func (r *nodeObserver) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(os.Interrupt)
	r.wait(t, 60*time.Second)
}

// partOf returns the part of f recorded from pid.
func partOf(t *testing.T, f *recording.File, pid int) *recording.Process {
	t.Helper()
	for i := range f.Processes {
		if f.Processes[i].PID == pid {
			return &f.Processes[i]
		}
	}
	t.Fatalf("no part for pid %d among %d parts", pid, len(f.Processes))
	return nil
}

// matchOps checks that p holds exactly the operations the program printed,
// with their statuses.
func matchOps(t *testing.T, p *recording.Process, ops []testutil.Op) {
	t.Helper()
	total := 0
	for op, fn := range fnOfOp {
		printed, calls := opsOf(ops, op), callsOf(p, fn)
		total += len(printed)
		if len(printed) != len(calls) {
			t.Fatalf("pid %d %s: observed %d calls, the program made %d", p.PID, fn, len(calls), len(printed))
		}
		for i := range calls {
			if calls[i].Status != printed[i].Status {
				t.Fatalf("pid %d %s %d: observed %+v, program printed %+v", p.PID, fn, i, calls[i], printed[i])
			}
		}
	}
	if total == 0 {
		t.Fatalf("pid %d: the program made no operation: the test proves nothing", p.PID)
	}
}

// TestObserveTwoProcessesAtOnce: `observe PID PID` writes one recording
// with one part per process, each matching what its program printed, rank
// -1 for processes no launcher started; the table lists only the functions
// called, per process and in total; output to a pipe carries no live line.
func TestObserveTwoProcessesAtOnce(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	a := testutil.StartExample(t, h.rma, "--ops", "30", "--seq", "put,flush", "--wait-before-start-ms", "60000")
	b := testutil.StartExample(t, h.rma, "--ops", "20", "--seq", "get,put", "--wait-before-start-ms", "60000")
	path := filepath.Join(t.TempDir(), "two.json")
	r := h.startNodeObserver(t, strconv.Itoa(a.PID), strconv.Itoa(b.PID), "--recording", path)
	for _, e := range []*testutil.Example{a, b} {
		if err := syscall.Kill(e.PID, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	opsA := testutil.ParseOps(a.Wait(t, 30*time.Second))
	opsB := testutil.ParseOps(b.Wait(t, 30*time.Second))
	// Both exited: the observer ends by itself.
	r.wait(t, 30*time.Second)
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.stderr.String())
	}
	if len(f.Processes) != 2 {
		t.Fatalf("%d parts, want 2", len(f.Processes))
	}
	for _, c := range []struct {
		e   *testutil.Example
		ops []testutil.Op
	}{{a, opsA}, {b, opsB}} {
		p := partOf(t, f, c.e.PID)
		if !p.Complete {
			t.Fatalf("pid %d: incomplete %+v", p.PID, p.Lost)
		}
		if p.Rank != -1 {
			t.Fatalf("pid %d: rank %d without a launcher, want -1", p.PID, p.Rank)
		}
		matchOps(t, p, c.ops)
	}
	table, errOut := r.stdout.String(), r.stderr.String()
	if strings.Contains(table, "ucp_tag_send_nbx") || !strings.Contains(table, "ucp_get_nbx") || !strings.Contains(table, "all") {
		t.Fatalf("the table should list the called functions only, and a total:\n%s", table)
	}
	if strings.ContainsAny(errOut+table, "\r\033") {
		t.Fatalf("a live line was written to a pipe:\n%q", errOut)
	}
}

// uniqueComm copies the example under a name of its own (its comm), so
// that --comm selects it and no other program on the machine.
func uniqueComm(t *testing.T, bin string) (string, string) {
	t.Helper()
	name := fmt.Sprintf("obs%d", time.Now().UnixNano()%1e9)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return name, path
}

// wheelCopy copies the libucp of the UCX in use under a name as a Python
// wheel gives its bundled copy.
func wheelCopy(t *testing.T) string {
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
	path := filepath.Join(t.TempDir(), "libucp-1a2b3c4d.so.0")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestObserveAllFollowsNewProcessesByName: `observe --all --comm NAME`
// attached before the program starts records it, although it maps a
// wheel-style renamed copy of libucp (the copy gets its own probes), and
// leaves out a process of another name that makes calls meanwhile; -o json
// prints the summary.
func TestObserveAllFollowsNewProcessesByName(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	name, bin := uniqueComm(t, h.rma)
	path := filepath.Join(t.TempDir(), "all.json")
	r := h.startNodeObserver(t, "--all", "--comm", name, "--recording", path, "-o", "json")

	// Started after the observer attached, on a libucp no probe is set on
	// yet: its name is a wheel's copy, preloaded so that it satisfies
	// the program's libucp.so.0 and is the only libucp mapped.
	cmd := exec.Command(bin, "--ops", "30", "--seq", "put,get,flush", "--wait-before-start-ms", "60000")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+wheelCopy(t))
	e := testutil.StartCmd(t, cmd)
	other := testutil.StartExample(t, h.rma, "--ops", "0", "--seq", "put", "--interval-us", "2000")
	watching := fmt.Sprintf("watching process %d ", e.PID)
	waitFor(t, 30*time.Second, "the observer to watch the new process", func() bool { return strings.Contains(r.stderr.String(), watching) })
	if err := syscall.Kill(e.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ops := testutil.ParseOps(e.Wait(t, 30*time.Second))
	// Its exit is seen, and its part stays.
	waitFor(t, 10*time.Second, "the observer to see the exit", func() bool {
		return strings.Contains(r.stderr.String(), fmt.Sprintf("process %d exited", e.PID))
	})
	r.stop(t)
	other.Cmd.Process.Kill()

	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.stderr.String())
	}
	if len(f.Processes) != 1 {
		t.Fatalf("%d parts, want only the process named %s (not pid %d)\n%s", len(f.Processes), name, other.PID, r.stderr.String())
	}
	p := partOf(t, f, e.PID)
	if !p.Complete {
		t.Fatalf("incomplete %+v", p.Lost)
	}
	matchOps(t, p, ops)
	var sum observer.Summary
	if err := json.Unmarshal([]byte(r.stdout.String()), &sum); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout.String())
	}
	if len(sum.Processes) != 1 || sum.Processes[0].PID != e.PID || sum.Total.Calls != uint64(len(p.Calls)) || len(sum.Total.Functions) == 0 {
		t.Fatalf("-o json summary %+v does not match the recording (%d calls)", sum, len(p.Calls))
	}
}

// TestFlightRecorderWritesOneIncident: the flight recorder on a program
// that fails once (its TCP peer dies) after about 2 s of clean traffic
// writes exactly one incident file, named by host and pid, which replays
// the failure op for op into the same program with a healthy peer; SIGUSR1
// writes one snapshot. (The 20 s of clean traffic is cut to 2 s,
// with a 10 s window, to keep the test short: the window still covers the
// run, and the recorder does not depend on the length.)
func TestFlightRecorderWritesOneIncident(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	args := []string{"--transport", "tcp", "--ops", "50", "--seq", "put,get,flush", "--interval-us", "50000", "--wait-before-start-ms", "60000"}
	real := testutil.StartExample(t, h.rma, append(args, "--kill-peer-at", "120")...)
	dir := t.TempDir()
	r := h.startNodeObserver(t, strconv.Itoa(real.PID), "--flight", "10s", "--on-error", dir, "--after", "3s")
	if !strings.Contains(r.stderr.String(), "flight recorder: last 10s") {
		t.Fatalf("the flight recorder's bound is not shown:\n%s", r.stderr.String())
	}
	if err := syscall.Kill(real.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// A snapshot on demand, during the clean traffic.
	waitFor(t, 30*time.Second, "clean traffic", func() bool { return strings.Count(real.Output(), "OP ") >= 30 })
	if err := r.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the snapshot", func() bool { return strings.Contains(r.stderr.String(), "snapshot written to") })
	realOps := testutil.ParseOps(real.Wait(t, 30*time.Second))
	r.wait(t, 30*time.Second)
	if len(failedIndices(realOps)) == 0 || len(failedIndices(realOps[:120])) != 0 {
		t.Fatalf("the real run should fail only from op 120 on: failed at %v", failedIndices(realOps))
	}
	host, _ := os.Hostname()
	incidents, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("ucxfault-incident-%s-%d-*.json", host, real.PID)))
	snaps, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("ucxfault-incident-%s-all-*.json", host)))
	all, _ := os.ReadDir(dir)
	if len(incidents) != 1 || len(snaps) != 1 || len(all) != 2 {
		t.Fatalf("want one incident and one snapshot, got %d files: %v\n%s", len(all), all, r.stderr.String())
	}
	snap, err := recording.ReadFile(snaps[0])
	if err != nil {
		t.Fatal(err)
	}
	if p := partOf(t, snap, real.PID); len(p.Calls) < 30 || p.Calls[len(p.Calls)-1].Failed() {
		t.Fatalf("the snapshot, taken during the clean traffic, holds %d calls", len(p.Calls))
	}
	f, err := recording.ReadFile(incidents[0])
	if err != nil {
		t.Fatal(err)
	}
	p := partOf(t, f, real.PID)
	if !p.Complete {
		t.Fatalf("incident incomplete: %+v", p.Lost)
	}
	matchOps(t, p, realOps)

	// The incident replays the failure into a healthy run.
	e := h.start(t, []string{"--disabled"}, args...)
	h.mustCtl(t, "replay", "--from", incidents[0], "--part", "pid:"+strconv.Itoa(real.PID))
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

// testCgroup makes a cgroup for the test and returns its directory under
// /sys/fs/cgroup: cgroup v2 where /sys/fs/cgroup is one, else the v1 pids
// hierarchy. It skips when neither can be written.
func testCgroup(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("ucxf-test-%d", os.Getpid())
	var fs syscall.Statfs_t
	base := "/sys/fs/cgroup/pids"
	if syscall.Statfs("/sys/fs/cgroup", &fs) == nil && fs.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
		base = "/sys/fs/cgroup"
	}
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under %s: %v", base, err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	return dir
}

// TestObserveCgroupFilters: `observe --cgroup DIR` records the process in
// that cgroup and not one outside it that calls the same libucp.
func TestObserveCgroupFilters(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	cg := testCgroup(t)
	in := testutil.StartExample(t, h.rma, "--ops", "20", "--seq", "put,flush", "--wait-before-start-ms", "60000")
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(in.PID)), 0o644); err != nil {
		t.Skipf("cannot move a process into %s: %v", cg, err)
	}
	out := testutil.StartExample(t, h.rma, "--ops", "0", "--seq", "put", "--interval-us", "2000")
	path := filepath.Join(t.TempDir(), "cg.json")
	r := h.startNodeObserver(t, "--cgroup", cg, "--recording", path)
	if !strings.Contains(r.stderr.String(), fmt.Sprintf("watching process %d ", in.PID)) {
		t.Fatalf("the process in %s is not watched:\n%s", cg, r.stderr.String())
	}
	if err := syscall.Kill(in.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ops := testutil.ParseOps(in.Wait(t, 30*time.Second))
	r.stop(t)
	out.Cmd.Process.Kill()
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.stderr.String())
	}
	if len(f.Processes) != 1 {
		t.Fatalf("%d parts, want only pid %d of the cgroup (not %d)", len(f.Processes), in.PID, out.PID)
	}
	matchOps(t, partOf(t, f, in.PID), ops)
}

// TestObserveAllInAPidNamespace: the observer in a pid namespace of its own
// (a container without the host's pids) watches the processes its /proc
// shows, by the pids it shows, and no other.
func TestObserveAllInAPidNamespace(t *testing.T) {
	testutil.RequireBPF(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1) to make a pid namespace")
	}
	h := newHarness(t)
	dir := t.TempDir()
	rec, out, errs := filepath.Join(dir, "ns.json"), filepath.Join(dir, "rma.out"), filepath.Join(dir, "observe.err")
	// In the namespace: the example waits; the observer attaches; the
	// example is released once watched and past READY (its SIGUSR1 handler
	// is set by then: the observer may watch it from its exec, before its
	// main runs), runs, and exits; the observer is interrupted.
	script := fmt.Sprintf(`%[1]s --ops 20 --seq put,flush --wait-before-start-ms 60000 >%[2]s 2>&1 &
p=$!
%[3]s observe --all --recording %[4]s 2>%[5]s &
o=$!
i=0
until grep -q "watching process $p " %[5]s && grep -q "^READY " %[2]s; do i=$((i+1)); [ $i -lt 600 ] || exit 3; sleep 0.1; done
kill -USR1 $p
wait $p
kill -INT $o
wait $o`, h.rma, out, h.cli, rec, errs)
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "sh", "-ec", script)
	if b, err := cmd.CombinedOutput(); err != nil {
		stderr, _ := os.ReadFile(errs)
		t.Fatalf("in a pid namespace: %v\n%s\n%s", err, b, stderr)
	}
	f, err := recording.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	printed, _ := os.ReadFile(out)
	pid := 0
	fmt.Sscanf(string(printed), "READY pid=%d", &pid)
	if len(f.Processes) != 1 || f.Processes[0].PID != pid {
		var pids []int
		for _, p := range f.Processes {
			pids = append(pids, p.PID)
		}
		t.Fatalf("parts for pids %v, want only the example, pid %d in the namespace", pids, pid)
	}
	matchOps(t, &f.Processes[0], testutil.ParseOps(string(printed)))
}
