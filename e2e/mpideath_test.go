package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// mpiDeathLauncher is one MPI under the peer-death comparison.
type mpiDeathLauncher struct {
	name, cc string
	require  func(testing.TB) string
	// args are the launcher's flags before the program; env its additions.
	args []string
	env  []string
	// wrap runs each rank as the child of a shell that waits for it: Hydra
	// (MPICH 4.0.2's launcher) SIGKILLs the surviving ranks when one dies,
	// -disable-auto-cleanup or not (measured; MPIR_CVAR_ENABLE_FT=1 makes
	// 4.0.2 abort in its first MPI_Sendrecv instead). It kills the process
	// it started, the shell, and rank 0 lives on to report what MPI says.
	wrap bool
}

// Both MPIs on UCX over TCP on loopback, so that a SIGKILLed rank is a dead
// TCP peer (over shared memory UCX 1.13 notices no death at all).
var mpiDeathLaunchers = []mpiDeathLauncher{
	{"openmpi", "mpicc.openmpi", testutil.RequireMPI,
		append(append([]string{}, mpirunFlags...), "-np", "2", "--mca", "pml", "ucx",
			"--mca", "pml_ucx_tls", "any", "--mca", "pml_ucx_devices", "any",
			// Without it mpirun ends the whole job when a rank dies.
			"--mca", "orte_enable_recovery", "1",
			"-x", "UCX_TLS=tcp,self", "-x", "UCX_NET_DEVICES=lo"),
		mpiEnv, false},
	{"mpich", "mpicc.mpich", testutil.RequireMPICH,
		[]string{"-n", "2", "-disable-auto-cleanup"},
		[]string{"MPIR_CVAR_NOLOCAL=1", "UCX_TLS=tcp,self", "UCX_NET_DEVICES=lo"}, true},
}

// mdLine is one line of mpideath's report: `MD op=... post=... ...`.
var mdLine = regexp.MustCompile(`^MD op=(\S+) post=(-?\d+) post_class=(-?\d+) done=([01]) rc=(-?\d+) class=(-?\d+)$`)

// mpiDeathRun is one job of mpideath: its launcher, rank pids and report.
type mpiDeathRun struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	dir  string
	done chan struct{}
	pids map[int]int
}

// startMPIDeath launches mpideath on 2 ranks, each under prefix (empty, or
// `ucxfault inject ... --`), and returns once both ranks are READY.
func startMPIDeath(t *testing.T, l mpiDeathLauncher, launch, prog string, prefix []string) *mpiDeathRun {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{}, l.args...)
	if l.wrap {
		args = append(args, "sh", "-c", `"$@" & wait`, "sh")
	}
	args = append(append(args, prefix...), prog, dir)
	r := &mpiDeathRun{cmd: exec.Command(launch, args...), out: &syncBuffer{}, dir: dir, done: make(chan struct{}), pids: map[int]int{}}
	r.cmd.Env = append(os.Environ(), l.env...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", launch, err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	ready := regexp.MustCompile(`READY pid=(\d+) rank=(\d)`)
	waitFor(t, 60*time.Second, "both ranks READY", func() bool {
		for _, m := range ready.FindAllStringSubmatch(r.out.String(), -1) {
			pid, _ := strconv.Atoi(m[1])
			rank, _ := strconv.Atoi(m[2])
			r.pids[rank] = pid
		}
		select {
		case <-r.done:
			t.Fatalf("%s ended before both ranks were READY\n%s", launch, r.out)
		default:
		}
		return len(r.pids) == 2
	})
	return r
}

// stop ends the job: the ranks by pid (a wrapped rank is no longer the
// launcher's child), then the launcher's group.
func (r *mpiDeathRun) stop() {
	for _, pid := range r.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.done
}

// report lets rank 0 go on and returns its MD lines, each reduced to what
// MPI shows the application: the operation, whether posting it failed and
// with which error class, whether it completed and with which class (MPICH's
// error codes carry a message index that differs from run to run).
func (r *mpiDeathRun) report(t *testing.T) []string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.dir, "rank0.out")
	var text string
	waitFor(t, 30*time.Second, "rank 0's DONE", func() bool {
		b, _ := os.ReadFile(path)
		text = string(b)
		return strings.Contains(text, "DONE rank=0")
	})
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		m := mdLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s post_failed=%t post_class=%s done=%s class=%s", m[1], m[2] != "0", m[3], m[4], m[6]))
	}
	if len(lines) != 5 {
		t.Fatalf("rank 0 reported %d operations, want 5:\n%s\nlauncher:\n%s", len(lines), text, r.out)
	}
	return lines
}

// TestMPIPeerDeathConformance kills rank 0's endpoint to rank 1 with a rule
// and compares what rank 0's MPI calls return with a real death of rank 1
// (SIGKILL), under Open MPI (pml ucx) and MPICH (ch4:ucx). Both create their
// endpoints at MPI_Init: Open MPI from its own rank on (rank r's endpoint k
// goes to rank (r+k) mod n), MPICH in rank order (endpoint k goes to rank
// k); in a 2-rank job rank 0's endpoint 0 is its own and endpoint 1 is rank
// 1 under both, which the test checks with a rule on endpoint 0 that must
// fail nothing.
func TestMPIPeerDeathConformance(t *testing.T) {
	h := newHarness(t)
	for _, l := range mpiDeathLaunchers {
		t.Run(l.name, func(t *testing.T) {
			launch := l.require(t)
			prog := buildExampleC(t, "mpideath-"+l.name, l.cc, "e2e/testdata/mpideath.c")

			// Real: rank 1 SIGKILLed, rank 0 told to go once it is gone.
			dead := startMPIDeath(t, l, launch, prog, nil)
			if err := syscall.Kill(dead.pids[1], syscall.SIGKILL); err != nil {
				t.Fatalf("killing rank 1: %v", err)
			}
			waitFor(t, 10*time.Second, "rank 1 reaped", func() bool { return syscall.Kill(dead.pids[1], 0) != nil })
			want := dead.report(t)
			// The oracle itself: sends to the dead rank fail, the receive
			// from it stays pending. Were it otherwise the comparison
			// could pass without any kill.
			if !strings.HasPrefix(want[0], "small post_failed=true") || want[2] != "recv post_failed=false post_class=0 done=0 class=0" {
				t.Fatalf("real death of rank 1: rank 0 saw\n%s\nwant a failed send and a pending receive", strings.Join(want, "\n"))
			}

			// Emulated: rank 1 alive, rank 0's endpoint 1 killed by a rule
			// at its first send after the go.
			inject := []string{h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "0", "--"}
			emu := func(endpoint int) (*mpiDeathRun, []string) {
				r := startMPIDeath(t, l, launch, prog, inject)
				rule := fmt.Sprintf("hooks=ucp_tag_send_nbx endpoint=%d kill-ep", endpoint)
				out := h.mustCtl(t, "--rank", "0", "rule", "add", rule)
				if strings.Count(out, "pid ") != 1 || !strings.Contains(out, fmt.Sprintf("pid %d: rule 1:", r.pids[0])) {
					t.Fatalf("--rank 0 rule add %s answered:\n%s\nwant one answer, from rank 0 (pid %d)", rule, out, r.pids[0])
				}
				got := r.report(t)
				if err := syscall.Kill(r.pids[1], 0); err != nil {
					t.Fatalf("rank 1 (pid %d) is gone after the emulated kill: %v\n%s", r.pids[1], err, r.out)
				}
				return r, got
			}
			dead.stop()
			r, got := emu(1)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("kill-ep on rank 0's endpoint 1 against a real death of rank 1:\n got %s\nwant %s\nlauncher:\n%s",
					strings.Join(got, "\n     "), strings.Join(want, "\n     "), r.out)
			}
			st := h.status(t, "--pid", strconv.Itoa(r.pids[0]))
			if len(st) != 1 || hookStatus(t, st[0], "ucp_tag_send_nbx").Faults == 0 {
				t.Errorf("rank 0's status counts no fault on ucp_tag_send_nbx: %+v", st)
			}
			r.stop()
			// Endpoint 0 is rank 0's own: killing it leaves rank 1 reachable.
			_, self := emu(0)
			if !strings.HasPrefix(self[0], "small post_failed=false post_class=0 done=1 class=0") {
				t.Errorf("kill-ep on rank 0's endpoint 0 failed its send to rank 1: endpoint 1 is not rank 1\n%s", strings.Join(self, "\n"))
			}
			t.Logf("%s: rank 0 saw, for a real and an emulated death of rank 1:\n%s", l.name, strings.Join(want, "\n"))
		})
	}
}
