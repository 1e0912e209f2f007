package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// jobRanks is the size of every job these tests launch.
const jobRanks = 4

// mpiEnv keeps Open MPI on this machine: its runtime talks over loopback
// only, no byte-transfer layer looks for a network, and ranks are not bound
// to cores (four ranks share two cores with whatever else runs).
var mpiEnv = []string{
	"OMPI_MCA_btl=self,vader",
	"OMPI_MCA_btl_tcp_if_include=lo",
	"OMPI_MCA_oob_tcp_if_include=lo",
	"OMPI_MCA_hwloc_base_binding_policy=none",
}

// mpirunFlags are the flags of every mpirun these tests run: root is allowed
// (the tests run as root), and more ranks than cores are allowed.
var mpirunFlags = []string{"--allow-run-as-root", "--oversubscribe"}

// mpiJob is `mpirun -np 4 ucxfault inject ... -- rma ...`.
type mpiJob struct {
	cmd *exec.Cmd
	// out is what mpirun printed; dir holds each rank's own output.
	out  *syncBuffer
	dir  string
	done chan struct{}
	err  error
	// pids maps each rank to the pid on its READY line.
	pids map[int]int
}

// rankOutput returns the complete lines rank printed on stdout so far. mpirun's
// --tag-output is no help here: it tags each chunk it reads, so a line split
// across two reads comes out with a tag in its middle. --output-filename
// writes each rank's stdout to DIR/JOBID/rank.N/stdout instead.
func (j *mpiJob) rankOutput(rank int) string {
	files, _ := filepath.Glob(filepath.Join(j.dir, "*", fmt.Sprintf("rank.%d", rank), "stdout"))
	if len(files) != 1 {
		return ""
	}
	b, _ := os.ReadFile(files[0])
	return string(b[:bytes.LastIndexByte(b, '\n')+1])
}

// readyPids returns the ranks that printed READY so far, with their pids.
func (j *mpiJob) readyPids() map[int]int {
	pids := map[int]int{}
	for r := 0; r < jobRanks; r++ {
		for _, line := range strings.Split(j.rankOutput(r), "\n") {
			if rest, ok := strings.CutPrefix(line, "READY pid="); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if pid, err := strconv.Atoi(f[0]); err == nil {
						pids[r] = pid
					}
				}
			}
		}
	}
	return pids
}

// countRanksWith counts the ranks whose output holds text.
func (j *mpiJob) countRanksWith(text string) int {
	n := 0
	for r := 0; r < jobRanks; r++ {
		if strings.Contains(j.rankOutput(r), text) {
			n++
		}
	}
	return n
}

// startJob launches the example on 4 ranks, each under `ucxfault inject
// flags`, and returns once every rank printed READY. mpirun runs in a
// process group of its own; when the test ends, whatever is left of the job
// is killed.
func (h *harness) startJob(t *testing.T, flags []string, rmaArgs ...string) *mpiJob {
	t.Helper()
	mpirun := testutil.RequireMPI(t)
	dir := t.TempDir()
	args := append(append([]string{}, mpirunFlags...), "--output-filename", dir, "-np", strconv.Itoa(jobRanks), h.cli)
	args = append(args, h.injectArgs(flags, rmaArgs...)...)
	j := &mpiJob{cmd: exec.Command(mpirun, args...), out: &syncBuffer{}, dir: dir, done: make(chan struct{})}
	j.cmd.Env = append(os.Environ(), mpiEnv...)
	j.cmd.Stdout, j.cmd.Stderr = j.out, j.out
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	j.cmd.WaitDelay = 5 * time.Second
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("starting mpirun: %v", err)
	}
	go func() {
		j.err = j.cmd.Wait()
		close(j.done)
	}()
	t.Cleanup(func() { j.kill() })
	deadline := time.After(60 * time.Second)
	for {
		if j.pids = j.readyPids(); len(j.pids) == jobRanks {
			return j
		}
		select {
		case <-j.done:
			t.Fatalf("mpirun exited before %d ranks were READY: %v\n%s", jobRanks, j.err, j.out)
		case <-deadline:
			t.Fatalf("%d of %d ranks READY after 60s\n%s", len(j.pids), jobRanks, j.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill ends what is left of the job: the ranks it started, then mpirun's
// process group.
func (j *mpiJob) kill() {
	select {
	case <-j.done:
		return
	default:
	}
	for _, pid := range j.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	syscall.Kill(-j.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-j.cmd.Process.Pid, syscall.SIGKILL)
		<-j.done
	}
}

// stop asks every rank to finish (the example shuts down cleanly on
// SIGTERM, also while it lingers) and waits for the job.
func (j *mpiJob) stop(t *testing.T) {
	t.Helper()
	for _, pid := range j.pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	j.wait(t, 30*time.Second)
}

// wait waits for mpirun to exit and fails the test unless it exits 0.
func (j *mpiJob) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(timeout):
		t.Fatalf("job did not end within %v\n%s", timeout, j.out)
	}
	if j.err != nil && !errors.Is(j.err, exec.ErrWaitDelay) {
		t.Fatalf("mpirun: %v\n%s", j.err, j.out)
	}
}

// waitDone waits until every rank printed DONE (its operations are over).
func (j *mpiJob) waitDone(t *testing.T) {
	t.Helper()
	waitFor(t, 90*time.Second, "every rank's DONE", func() bool { return j.countRanksWith("DONE") == jobRanks })
}

// rankOps returns the operations each rank printed.
func (j *mpiJob) rankOps() [jobRanks][]testutil.Op {
	var ops [jobRanks][]testutil.Op
	for r := range ops {
		ops[r] = testutil.ParseOps(j.rankOutput(r))
	}
	return ops
}

// opOutcomes renders operations as "put:0 get:-3 ..." for comparisons.
func opOutcomes(ops []testutil.Op) string {
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = fmt.Sprintf("%s:%d", op.Fn, op.Status)
	}
	return strings.Join(parts, " ")
}

// statusByRank indexes statuses by rank and checks that they are exactly the
// job's ranks, on this host, with the pids the ranks printed.
func statusByRank(t *testing.T, sts []control.Status, j *mpiJob) map[int]control.Status {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	by := map[int]control.Status{}
	for _, st := range sts {
		if _, dup := by[st.Rank]; dup {
			t.Fatalf("status lists rank %d twice: %+v", st.Rank, sts)
		}
		by[st.Rank] = st
		if st.Host != host {
			t.Errorf("rank %d: host %q, want %q", st.Rank, st.Host, host)
		}
		if st.PID != j.pids[st.Rank] {
			t.Errorf("rank %d: status pid %d, READY pid %d", st.Rank, st.PID, j.pids[st.Rank])
		}
	}
	if len(sts) != jobRanks {
		t.Fatalf("status lists %d processes, want %d: %+v", len(sts), jobRanks, sts)
	}
	for r := 0; r < jobRanks; r++ {
		if _, ok := by[r]; !ok {
			t.Fatalf("status has no rank %d (ranks: %v)", r, sortedJobRanks(by))
		}
	}
	return by
}

func sortedJobRanks(by map[int]control.Status) []int {
	var rs []int
	for r := range by {
		rs = append(rs, r)
	}
	sort.Ints(rs)
	return rs
}

// rmaHookNames are the functions behind the example's put, get and flush.
var rmaHookNames = []string{"ucp_put_nbx", "ucp_get_nbx", "ucp_ep_flush_nbx"}

func TestMPIInjectsIntoEveryRank(t *testing.T) {
	h := newHarness(t)
	j := h.startJob(t, []string{"--probability", "40"}, "--ops", "30", "--linger-ms", "60000")
	j.waitDone(t)
	by := statusByRank(t, h.status(t), j)
	ops := j.rankOps()
	for r := 0; r < jobRanks; r++ {
		st := by[r]
		if st.Strategy != control.StrategyRandom || st.Probability != 40 || !st.Enabled {
			t.Errorf("rank %d: strategy %s, probability %v, enabled %v; want random 40%% on", r, st.Strategy, st.Probability, st.Enabled)
		}
		if len(ops[r]) != 90 {
			t.Fatalf("rank %d printed %d operations, want 90\n%s", r, len(ops[r]), j.out)
		}
		// Every failed operation is one injected fault in one of its hooks.
		var calls, faults uint64
		for _, name := range rmaHookNames {
			hs := hookStatus(t, st, name)
			calls += hs.Calls
			faults += hs.Faults
		}
		failed := uint64(len(failedIndices(ops[r])))
		if calls != 90 || faults != failed || failed == 0 || failed == 90 {
			t.Errorf("rank %d: %d calls and %d faults counted, %d of 90 operations failed", r, calls, faults, failed)
		}
	}
	// Without a seed each rank draws its own faults.
	if opOutcomes(ops[0]) == opOutcomes(ops[1]) && opOutcomes(ops[1]) == opOutcomes(ops[2]) && opOutcomes(ops[2]) == opOutcomes(ops[3]) {
		t.Errorf("four unseeded ranks failed the very same operations: %s", opOutcomes(ops[0]))
	}
	table := h.mustCtl(t, "status", "-o", "wide") // the host is a wide column
	host, _ := os.Hostname()
	for r := 0; r < jobRanks; r++ {
		if !strings.Contains(table, strconv.Itoa(j.pids[r])) {
			t.Errorf("status table has no row for rank %d (pid %d):\n%s", r, j.pids[r], table)
		}
	}
	if !strings.Contains(table, host) {
		t.Errorf("status table does not show the host %s:\n%s", host, table)
	}
	j.stop(t)
}

func TestMPIRankTargetsOneRank(t *testing.T) {
	h := newHarness(t)
	flags := []string{"--probability", "20", "--seed", "7"}
	rma := []string{"--ops", "30", "--seq", "put,get,flush"}
	// A lone run with the same seed: every rank draws the same faults.
	ref, _ := h.run(t, flags, rma...)
	if f := len(failedIndices(ref)); f == 0 || f == len(ref) {
		t.Fatalf("the seeded reference run failed %d of %d operations; the comparison would prove nothing", f, len(ref))
	}
	j := h.startJob(t, flags, append(rma, "--wait-before-start-ms", "4000")...)
	out := h.mustCtl(t, "--rank", "2", "probability", "100")
	if strings.Count(out, "pid ") != 1 || !strings.Contains(out, fmt.Sprintf("pid %d:", j.pids[2])) {
		t.Fatalf("--rank 2 probability 100 answered:\n%s\nwant one answer, from pid %d", out, j.pids[2])
	}
	j.wait(t, 90*time.Second)
	ops := j.rankOps()
	for r := 0; r < jobRanks; r++ {
		if len(ops[r]) != len(ref) {
			t.Fatalf("rank %d printed %d operations, want %d\n%s", r, len(ops[r]), len(ref), j.out)
		}
		if r == 2 {
			if f := failedIndices(ops[r]); len(f) != len(ops[r]) {
				t.Errorf("rank 2 at probability 100 failed %d of %d operations (did the first start before the command arrived?)\n%s",
					len(f), len(ops[r]), opOutcomes(ops[r]))
			}
			continue
		}
		if got, want := opOutcomes(ops[r]), opOutcomes(ref); got != want {
			t.Errorf("rank %d was affected by --rank 2:\n got %s\nwant %s", r, got, want)
		}
	}
}

func TestMPIRecordAndReplayRankByRank(t *testing.T) {
	h := newHarness(t)
	rma := []string{"--ops", "40", "--seq", "put,get,flush", "--wait-before-start-ms", "4000"}
	rec := h.startJob(t, []string{"--probability", "30"}, append(rma, "--linger-ms", "60000")...)
	if out := h.mustCtl(t, "record-toggle", "on"); strings.Count(out, "recording on") != jobRanks {
		t.Fatalf("record-toggle on:\n%s", out)
	}
	rec.waitDone(t)
	path := filepath.Join(t.TempDir(), "job.json")
	h.mustCtl(t, "record-dump", "records", "-o", path)
	rec.stop(t)
	recorded := rec.rankOps()

	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if len(f.Processes) != jobRanks {
		t.Fatalf("recording holds %d processes, want %d", len(f.Processes), jobRanks)
	}
	for i, p := range f.Processes {
		if p.Rank != i || p.Host != host || p.PID != rec.pids[i] {
			t.Fatalf("process %d of the recording: rank %d host %q pid %d; want rank %d host %q pid %d",
				i, p.Rank, p.Host, p.PID, i, host, rec.pids[i])
		}
		if !p.Complete {
			t.Fatalf("rank %d's recording is incomplete: %+v", i, p.Lost)
		}
		for _, fn := range rmaHookNames {
			if n := len(callsOf(&f.Processes[i], fn)); n != 40 {
				t.Fatalf("rank %d: %d recorded calls of %s, want 40", i, n, fn)
			}
		}
		if len(recorded[i]) != 120 {
			t.Fatalf("rank %d printed %d operations, want 120", i, len(recorded[i]))
		}
	}
	distinct := map[string]bool{}
	for r := 0; r < jobRanks; r++ {
		distinct[opOutcomes(recorded[r])] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("every rank recorded the same outcomes: replaying rank by rank could not be told from replaying one part")
	}

	// A new job, injection off: only the replay can fail its operations.
	rep := h.startJob(t, []string{"--disabled"}, rma...)
	out := h.mustCtl(t, "replay", "--from", path)
	// 120 operations, and the calls around them (ucp_ep_close_nbx...).
	if n := len(regexp.MustCompile(`replaying 1[2-9][0-9] outcomes`).FindAllString(out, -1)); n != jobRanks {
		t.Fatalf("replay --from answered:\n%s\nwant %d processes replaying 120 outcomes or a few more", out, jobRanks)
	}
	for r := 0; r < jobRanks; r++ {
		prefix, part := fmt.Sprintf("pid %d: ", rep.pids[r]), fmt.Sprintf("pid %d (rank %d on %s)", rec.pids[r], r, host)
		found := false
		for _, line := range strings.Split(out, "\n") {
			found = found || strings.HasPrefix(line, prefix) && strings.Contains(line, part)
		}
		if !found {
			t.Errorf("replay --from: no line for rank %d saying it replays the part of %s:\n%s", r, part, out)
		}
	}
	rep.wait(t, 90*time.Second)
	replayed := rep.rankOps()
	for r := 0; r < jobRanks; r++ {
		if got, want := opOutcomes(replayed[r]), opOutcomes(recorded[r]); got != want {
			t.Errorf("rank %d replayed other outcomes than it recorded:\n got %s\nwant %s", r, got, want)
		}
	}
}

func TestMPIControlThroughMpirun(t *testing.T) {
	h := newHarness(t)
	j := h.startJob(t, []string{"--probability", "0"}, "--ops", "20", "--wait-before-start-ms", "5000", "--linger-ms", "60000")
	mpirun := testutil.RequireMPI(t)
	// One control command per node, as on a cluster; this machine is the
	// only node, so it runs once.
	onEveryNode := func(args ...string) string {
		t.Helper()
		full := append(append([]string{}, mpirunFlags...), "--map-by", "ppr:1:node", h.cli, "--socket-dir", h.dir)
		cmd := exec.Command(mpirun, append(full, args...)...)
		cmd.Env = append(os.Environ(), mpiEnv...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("mpirun ... ucxfault %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	out := onEveryNode("--rank", "1,3", "probability", "100")
	for _, r := range []int{1, 3} {
		if strings.Count(out, fmt.Sprintf("pid %d:", j.pids[r])) != 1 {
			t.Fatalf("probability through mpirun answered:\n%s\nwant one answer from rank %d (pid %d)", out, r, j.pids[r])
		}
	}
	if strings.Count(out, "pid ") != 2 {
		t.Fatalf("probability through mpirun answered:\n%s\nwant answers from ranks 1 and 3 only", out)
	}
	j.waitDone(t)
	var sts []control.Status
	statusOut := onEveryNode("status", "-o", "json", "--detailed")
	if err := json.Unmarshal([]byte(statusOut), &sts); err != nil {
		t.Fatalf("decoding status run through mpirun: %v\n%s", err, statusOut)
	}
	by := statusByRank(t, sts, j)
	ops := j.rankOps()
	for r := 0; r < jobRanks; r++ {
		want, wantFailed := 0.0, 0
		if r == 1 || r == 3 {
			want, wantFailed = 100, 60
		}
		if by[r].Probability != want {
			t.Errorf("rank %d: probability %v, want %v", r, by[r].Probability, want)
		}
		if f := len(failedIndices(ops[r])); len(ops[r]) != 60 || f != wantFailed {
			t.Errorf("rank %d: %d of %d operations failed, want %d of 60", r, f, len(ops[r]), wantFailed)
		}
	}
	j.stop(t)
}

// mpiStarts is how many jobs TestMPIStatusDuringStartup starts per launcher
// and size: UCXFAULT_MPI_STARTS, or 2 (make test's bound); the figures in
// docs/safety.md come from 20.
func mpiStarts(t *testing.T) int {
	if v := os.Getenv("UCXFAULT_MPI_STARTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("UCXFAULT_MPI_STARTS=%q is not a positive count", v)
		}
		return n
	}
	return 2
}

// statusLine is a line `ucxfault status` may print on stderr while a job
// starts: a rank that is not answering yet, a socket of a dead process
// removed, the summary, or no process yet. Anything else is a failure.
var statusLine = regexp.MustCompile(`^(pid (\d+): not answering: .*|removed stale socket of dead process (\d+) .*|pid (\d+): removed stale socket: .*|ucxfault: \d+ of \d+ process(es)? did not apply status.*|ucxfault: \d+ of \d+ process(es)? did not answer status in time.*|ucxfault: no injected process found .*)$`)

// TestMPIStatusDuringStartup runs `status` again and again while MPICH and
// Open MPI jobs of 2 and 4 ranks start, from a moment that varies from job
// to job: a rank is listed or reported as not answering, never taken for
// dead, and in the end every rank is listed, so no live rank lost its
// socket. MPICH runs with MPIR_CVAR_NOLOCAL=1 (its ch4:ucx device for ranks
// on one host too), where live ranks once lost their sockets.
func TestMPIStatusDuringStartup(t *testing.T) {
	h := newHarness(t)
	starts := mpiStarts(t)
	type launcher struct {
		name, cc string
		require  func(testing.TB) string
		args     func(n int) []string
		env      []string
	}
	launchers := []launcher{
		{"mpich", "mpicc.mpich", testutil.RequireMPICH,
			func(n int) []string { return []string{"-n", strconv.Itoa(n)} },
			[]string{"MPIR_CVAR_NOLOCAL=1"}},
		{"openmpi", "mpicc.openmpi", testutil.RequireMPI,
			func(n int) []string {
				return append(append([]string{}, mpirunFlags...), "-np", strconv.Itoa(n), "--mca", "pml", "ucx",
					"--mca", "osc", "ucx", "--mca", "pml_ucx_tls", "any", "--mca", "pml_ucx_devices", "any")
			},
			mpiEnv},
	}
	for _, l := range launchers {
		t.Run(l.name, func(t *testing.T) {
			launch := l.require(t)
			ring := buildExampleC(t, "ring-"+l.name, l.cc, "examples/mpi/ring.c")
			var polls, notAnswering, removedDead int
			for _, n := range []int{2, 4} {
				for i := 0; i < starts; i++ {
					// From 0 to 0.95 s after the launch (the ranks create
					// their sockets within about 0.5 s here), a different
					// moment each job.
					delay := time.Duration((i*13+n/2-1)%20) * 50 * time.Millisecond
					p, na, rd := h.statusWhileStarting(t, launch, l.args(n), l.env, ring, n, delay)
					polls, notAnswering, removedDead = polls+p, notAnswering+na, removedDead+rd
				}
			}
			t.Logf("%s: %d jobs, %d status calls, %d times a rank was not answering yet, %d sockets of dead processes removed, no live rank's socket removed",
				l.name, 2*starts, polls, notAnswering, removedDead)
		})
	}
}

// statusWhileStarting starts one job of n ranks, waits delay, then runs
// status until every rank is listed, checking each answer. It returns the
// number of status calls, of not-answering reports and of dead sockets
// removed.
func (h *harness) statusWhileStarting(t *testing.T, launch string, args, env []string, ring string, n int, delay time.Duration) (polls, notAnswering, removedDead int) {
	t.Helper()
	args = append(args, h.cli)
	args = append(args, h.injectArgs([]string{"--mode", "deferred", "--probability", "0"})...)
	// injectArgs ends with the example's path: run ring instead.
	args = append(args[:len(args)-1], ring, "--iters", "100000000", "--quiet")
	cmd := exec.Command(launch, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", launch, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var ranks []int // the pids status listed, killed by pid too (the launcher may put them in another group)
	defer func() {
		for _, pid := range ranks {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		// The killed ranks leave their sockets: clear them for the next job.
		for _, s := range h.sockets(t) {
			os.Remove(filepath.Join(h.dir, s))
		}
	}()
	time.Sleep(delay)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("%s exited while starting\n%s", launch, out)
		default:
		}
		r := h.ctl(t, "status", "-o", "json", "--timeout", "2s")
		polls++
		var st []control.Status
		if strings.TrimSpace(r.stdout) != "" {
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("decoding status: %v\n%s", err, r.stdout)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if line == "" {
				continue
			}
			m := statusLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("status while %d ranks start: unexpected %q\nstderr: %s", n, line, r.stderr)
			}
			if m[2] != "" {
				notAnswering++
			}
			for _, dead := range []string{m[3], m[4]} {
				if dead == "" {
					continue
				}
				pid, _ := strconv.Atoi(dead)
				if syscall.Kill(pid, 0) == nil {
					t.Fatalf("status removed the socket of live process %d: %q", pid, line)
				}
				removedDead++
			}
		}
		for _, s := range st {
			if !slices.Contains(ranks, s.PID) {
				ranks = append(ranks, s.PID)
			}
		}
		if len(st) == n {
			for _, s := range st {
				if _, err := os.Stat(h.socketOf(s.PID)); err != nil {
					t.Fatalf("rank %d (pid %d) answered but its socket is gone: %v", s.Rank, s.PID, err)
				}
			}
			return polls, notAnswering, removedDead
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, %d of %d ranks listed; last status stderr %q\n%s", len(st), n, r.stderr, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
