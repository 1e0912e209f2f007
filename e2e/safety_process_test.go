package e2e

// Safety of the host process over its life: fork, exec, a libucp loaded
// late, many short-lived processes.

import (
	"bytes"
	"context"
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
)

// ---------------------------------------------------------------------------
// The host process

func TestSafetyForkWithoutExec(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "forkchild")
	const parentPuts, childPuts = 40, 30
	e := h.startProg(t, []string{"--pattern", "XO", "--hooks", "ucp_put_nbx"}, bin,
		strconv.Itoa(parentPuts), strconv.Itoa(childPuts))
	parentSock := fmt.Sprintf("ucx-fault-%d.sock", e.PID)
	var foreign []string
	waitFor(t, 60*time.Second, "the child to be reaped", func() bool {
		for _, s := range h.sockets(t) {
			if s != parentSock {
				foreign = append(foreign, s)
			}
		}
		return strings.Contains(e.Output(), "CHILD-EXIT")
	})
	out := e.Output()
	child := lineValue(out, "CHILD pid=", "pid")
	if lineValue(out, "CHILD-EXIT", "status") != "0" || lineValue(out, "CHILD-EXIT", "timeout") != "0" {
		t.Fatalf("the child did not end normally:\n%s\nstderr:\n%s", out, e.Stderr())
	}
	if got := lineValue(out, "CHILD-DONE", "puts"); got != strconv.Itoa(childPuts) {
		t.Fatalf("the child did %q puts, want %d:\n%s", got, childPuts, out)
	}
	if len(foreign) != 0 {
		t.Fatalf("a socket other than the parent's appeared: %v (child pid %s)", foreign, child)
	}

	// The rules in force at fork() stay in force in the child, and its
	// counters go on from the parent's: the child's first put is the
	// parent's call number parentPuts, and its faults continue the code
	// rotation.
	ops := testutil.ParseOps(out)
	codes := []int{-3, -6, -20}
	var parent, kid []testutil.Op
	for _, op := range ops {
		if op.Thread == 0 {
			parent = append(parent, op)
		} else {
			kid = append(kid, op)
		}
	}
	if len(parent) != 2*parentPuts || len(kid) != childPuts {
		t.Fatalf("%d parent puts and %d child puts, want %d and %d", len(parent), len(kid), 2*parentPuts, childPuts)
	}
	for i, op := range parent {
		want := 0
		if i%2 == 0 {
			want = codes[(i/2)%3]
		}
		if op.Status != want {
			t.Fatalf("parent put %d: status %d, want %d", i, op.Status, want)
		}
	}
	for j, op := range kid {
		want := 0
		if (parentPuts+j)%2 == 0 {
			want = codes[(parentPuts/2+j/2)%3]
		}
		if op.Status != want {
			t.Fatalf("child put %d: status %d, want %d (pattern XO continued from the parent's %d calls)", j, op.Status, want, parentPuts)
		}
	}

	// The child's exit left the parent's socket alone; the parent's
	// counters hold its own calls only.
	if got := h.sockets(t); len(got) != 1 || got[0] != parentSock {
		t.Fatalf("sockets after the child's exit: %v, want [%s]", got, parentSock)
	}
	put := hookStatus(t, h.status(t)[0], "ucp_put_nbx")
	if put.Calls != 2*parentPuts || put.Faults != parentPuts {
		t.Fatalf("parent's status: %d calls, %d faults; want %d and %d", put.Calls, put.Faults, 2*parentPuts, parentPuts)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
	if got := h.sockets(t); len(got) != 0 {
		t.Fatalf("sockets left after the parent's exit: %v", got)
	}
}

func TestSafetyForkThenExec(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "forkchild")
	e := h.startProg(t, []string{"--probability", "0"}, bin, "3", "0",
		h.rma, "--ops", "0", "--interval-us", "1000", "--seq", "put", "--quiet")
	waitFor(t, 20*time.Second, "the child's pid", func() bool { return lineValue(e.Output(), "CHILD pid=", "pid") != "" })
	child, _ := strconv.Atoi(lineValue(e.Output(), "CHILD pid=", "pid"))
	// The exec'd program loads the injector afresh: a control plane of
	// its own, on its own socket.
	waitFor(t, 20*time.Second, "the child's own socket", func() bool {
		_, err := os.Stat(h.socketOf(child))
		return err == nil
	})
	h.mustCtl(t, "--pid", strconv.Itoa(child), "probability", "100")
	st := h.status(t)
	if len(st) != 2 {
		t.Fatalf("status lists %d processes, want the parent and the exec'd child", len(st))
	}
	for _, s := range st {
		switch s.PID {
		case e.PID:
			if s.Probability != 0 {
				t.Fatalf("the child's command reached the parent: %+v", s)
			}
		case child:
			if s.Probability != 100 || len(s.Command) == 0 || filepath.Base(s.Command[0]) != "rma" {
				t.Fatalf("child status: %+v", s)
			}
		default:
			t.Fatalf("status lists pid %d", s.PID)
		}
	}
	syscall.Kill(child, syscall.SIGINT)
	waitFor(t, 20*time.Second, "the child to be reaped", func() bool { return strings.Contains(e.Output(), "CHILD-EXIT") })
	if lineValue(e.Output(), "CHILD-EXIT", "status") != "0" {
		t.Fatalf("the exec'd child did not exit 0:\n%s", e.Output())
	}
	if got := h.sockets(t); len(got) != 1 || got[0] != fmt.Sprintf("ucx-fault-%d.sock", e.PID) {
		t.Fatalf("sockets after the child's exit: %v, want the parent's only", got)
	}
	e.Cmd.Process.Signal(os.Interrupt)
	e.Wait(t, 20*time.Second)
	if got := h.sockets(t); len(got) != 0 {
		t.Fatalf("sockets left: %v", got)
	}
}

// TestSafetyLateLibucp: a host that does not link libucp and opens a UCX
// plugin with dlopen(RTLD_LOCAL) later. The injector finds the real
// functions through the plugin's libucp, starts its control plane only then,
// and leaves no socket behind, even when the host exits at once.
func TestSafetyLateLibucp(t *testing.T) {
	h := newHarness(t)
	host := buildC(t, "dlhost", "dlhost", "-ldl")
	plugin := buildC(t, "plugin", "plugin.so", "-shared", "-fPIC")
	e := h.startProg(t, []string{"--pattern", "XO", "--hooks", "ucp_put_nbx"}, host, plugin, "20", "1500")
	waitFor(t, 20*time.Second, "the plugin's puts", func() bool { return strings.Contains(e.Output(), "DONE") })
	for i, op := range testutil.ParseOps(e.Output()) {
		if (op.Status != 0) != (i%2 == 0) {
			t.Fatalf("put %d: status %d breaks pattern XO", i, op.Status)
		}
	}
	waitFor(t, 5*time.Second, "the control socket", func() bool {
		_, err := os.Stat(h.socketOf(e.PID))
		return err == nil
	})
	put := hookStatus(t, h.status(t)[0], "ucp_put_nbx")
	if put.Calls != 20 || put.Faults != 10 {
		t.Fatalf("status: %d calls, %d faults; want 20 and 10", put.Calls, put.Faults)
	}
	e.Wait(t, 20*time.Second)
	if f := runMany(100, 4, h.preloadEnv("UCX_FAULT_ENABLED=1"), host, plugin, "1", "0"); len(f) != 0 {
		t.Fatalf("%d of 100 short runs failed; first: %s", len(f), f[0])
	}
	if got := h.sockets(t); len(got) != 0 {
		t.Fatalf("sockets left behind: %v", got)
	}
}

// runMany runs argv n times, par at a time, each bounded by 20 s, and
// returns a description of every run that did not exit 0 silently.
func runMany(n, par int, env []string, argv ...string) []string {
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
		next     = make(chan struct{})
	)
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				cmd.Env = env
				var errb bytes.Buffer
				cmd.Stderr = &errb
				err := cmd.Run()
				cancel()
				// dash's "echo: I/O error" is a failure like any other:
				// the runtime closed dash's new stdout under it, and no
				// longer can (TestSafetyNoDescriptorsAfterStart).
				if err != nil || errb.Len() > 0 {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%v: %v, stderr %q", argv, err, errb.String()))
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return failures
}

// meanRun is the mean wall time of one run of argv, over n runs in a row.
func meanRun(t *testing.T, n int, env []string, argv ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for i := 0; i < n; i++ {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
	}
	return time.Since(start) / time.Duration(n)
}

func TestSafetyShortLivedProcesses(t *testing.T) {
	h := newHarness(t)
	env := h.preloadEnv("UCX_FAULT_ENABLED=1")
	start := time.Now()
	for _, tc := range []struct {
		n    int
		argv []string
	}{
		{1000, []string{"/bin/true"}},
		{1000, []string{"sh", "-c", "echo x >/dev/null; true"}},
		// Children that exec under the preload too.
		{100, []string{"sh", "-c", "echo x | cat >/dev/null; /bin/true"}},
		{50, []string{h.rma, "--ops", "1", "--quiet"}},
	} {
		t0 := time.Now()
		if f := runMany(tc.n, 4, env, tc.argv...); len(f) != 0 {
			t.Fatalf("%d of %d runs of %v failed; first: %s", len(f), tc.n, tc.argv, f[0])
		}
		t.Logf("%4d runs of %v: %v", tc.n, tc.argv, time.Since(t0).Round(time.Millisecond))
	}
	if got := h.sockets(t); len(got) != 0 {
		t.Fatalf("sockets left behind: %v", got)
	}
	if entries, _ := os.ReadDir(h.dir); len(entries) != 0 {
		t.Fatalf("files left in the socket directory: %v", entries)
	}

	// Start-up time the library adds, measured in alternating rounds.
	var base, pre, ucxBase, ucxPre time.Duration
	plain := append(os.Environ(), "UCX_WARN_UNUSED_ENV_VARS=n")
	const rounds = 4
	for i := 0; i < rounds; i++ {
		base += meanRun(t, 50, plain, "/bin/true")
		pre += meanRun(t, 50, env, "/bin/true")
		ucxBase += meanRun(t, 10, plain, h.rma, "--ops", "1", "--quiet")
		ucxPre += meanRun(t, 10, env, h.rma, "--ops", "1", "--quiet")
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / rounds }
	t.Logf("start-up: /bin/true %.2f ms, preloaded %.2f ms (+%.2f ms); rma --ops 1 %.2f ms, preloaded %.2f ms (+%.2f ms)",
		ms(base), ms(pre), ms(pre-base), ms(ucxBase), ms(ucxPre), ms(ucxPre-ucxBase))
	if added := (pre - base) / rounds; added > 50*time.Millisecond {
		t.Fatalf("the library adds %v to each process start", added)
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}
