package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// forkRun is what one run of testdata/forkinit printed.
type forkRun struct {
	out, stderr string
	err         error
	// The child's first hooked call (ucp_mem_map): its duration in
	// microseconds and its status; -1 when not printed.
	hookUS, hookStatus int
	hang               bool
}

// runForkinit runs the forkinit fixture n times, two at a time (two cores),
// each with env added to the environment and bounded by 30 s (the fixture
// bounds its own wait for the child at 10 s).
func runForkinit(t *testing.T, n int, env []string, argv ...string) []forkRun {
	t.Helper()
	runs := make([]forkRun, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				cmd.Env = append(os.Environ(), env...)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				o, err := cmd.Output()
				cancel()
				r := forkRun{out: string(o), stderr: stderr.String(), err: err, hookUS: -1, hookStatus: -1}
				if v, e := strconv.Atoi(lineValue(r.out, "CHILD pid=", "first-hook-us")); e == nil {
					r.hookUS = v
				}
				if v, e := strconv.Atoi(lineValue(r.out, "CHILD pid=", "first-hook-status")); e == nil {
					r.hookStatus = v
				}
				r.hang = lineValue(r.out, "CHILD-EXIT", "hang") != "0"
				runs[i] = r
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return runs
}

// TestSafetyForkAtStartup: a program that forks first thing in main and
// creates its UCP context in the child (ucp_config_read, ucp_init,
// ucp_worker_create), as launchers and Python multiprocessing workers do.
//
// Before the fork gate (preload/forkgate.c), 19 of 100 such children hung
// in ucp_init on a 2-core machine: a thread of the injector's Go runtime
// was inside libucm's mmap hook at the fork. And a child forked before the
// injector had read its settings waited 2 s on its first hooked call. Here,
// in 200 runs: no child hangs, every child's first hooked call fails as the
// settings say (pattern X on ucp_mem_map: the injector is loaded in the
// child and decides with the settings read from the environment), and it
// takes at most 50 ms more than the slowest of 20 runs without the injector.
func TestSafetyForkAtStartup(t *testing.T) {
	h := newHarness(t)
	bin := buildFixture(t, "forkinit")
	env := []string{"UCX_WARN_UNUSED_ENV_VARS=n"}

	base := runForkinit(t, 20, env, bin)
	var baseMax int
	for _, r := range base {
		if r.err != nil || r.hang || r.hookStatus != 0 {
			t.Fatalf("without the injector: %v\n%s%s", r.err, r.out, r.stderr)
		}
		baseMax = max(baseMax, r.hookUS)
	}

	const n = 200
	runs := runForkinit(t, n, env, h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet",
		"--pattern", "X", "--hooks", "ucp_mem_map", "--", bin)
	var hangs, slow, wrong []string
	var hook []int
	for i, r := range runs {
		switch {
		case r.hang:
			hangs = append(hangs, fmt.Sprintf("run %d: %s", i, strings.TrimSpace(r.out)))
		case r.err != nil || r.hookStatus == -1:
			t.Fatalf("run %d: %v\n%s%s", i, r.err, r.out, r.stderr)
		case r.hookStatus != -3: // the first code of the default rotation
			wrong = append(wrong, fmt.Sprintf("run %d: status %d", i, r.hookStatus))
		case r.hookUS > baseMax+50000:
			slow = append(slow, fmt.Sprintf("run %d: %d us", i, r.hookUS))
		}
		if r.stderr != "" {
			t.Errorf("run %d printed on stderr: %q", i, r.stderr)
		}
		hook = append(hook, r.hookUS)
	}
	sort.Ints(hook)
	t.Logf("%d runs: %d hangs; first hooked call in the child: median %d us, max %d us (without the injector: max %d us)",
		n, len(hangs), hook[n/2], hook[n-1], baseMax)
	if len(hangs) != 0 {
		t.Fatalf("%d of %d children hung after fork():\n%s", len(hangs), n, strings.Join(hangs, "\n"))
	}
	if len(wrong) != 0 {
		t.Fatalf("%d children did not apply the settings in force (want the injected status -3): %v", len(wrong), wrong)
	}
	if len(slow) != 0 {
		t.Fatalf("%d children's first hooked call took over %d us (50 ms more than without the injector): %v",
			len(slow), baseMax+50000, slow)
	}
	if got := h.sockets(t); len(got) != 0 {
		t.Fatalf("sockets left: %v", got)
	}
}

// TestSafetyNoDescriptorsAfterStart: in a process that never uses UCX, the
// injector opens and closes no file descriptor once the host's main runs.
// Before, the Go runtime's start-up (which ran alongside main) opened and
// closed descriptors, and dash's `echo x >/dev/null` (close(1), then
// dup2(f, 1)) sometimes had its new stdout closed under it: `echo: I/O
// error`, 3 runs in 10,000. The fixture lists its descriptors first thing
// in main and 200 ms later; they must be the same, and more than without
// the library (its pipe and the runtime's poller: proof that it loaded).
func TestSafetyNoDescriptorsAfterStart(t *testing.T) {
	h := newHarness(t)
	bin := buildC(t, "fdwatch", "fdwatch")
	plain, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("without the library: %v\n%s", err, plain)
	}
	without := strings.Split(lineValue(string(plain), "FDS", "start"), ",")
	for i := 0; i < 20; i++ {
		cmd := exec.Command(bin)
		cmd.Env = h.preloadEnv()
		o, err := cmd.Output()
		start, later := lineValue(string(o), "FDS", "start"), lineValue(string(o), "FDS", "later")
		if err != nil || start != later {
			t.Fatalf("run %d: the descriptors changed while main ran: %s (%v)", i, strings.TrimSpace(string(o)), err)
		}
		if n := len(strings.Split(start, ",")); n <= len(without) {
			t.Fatalf("run %d: %d descriptors, %d without the library: was it loaded? %s", i, n, len(without), o)
		}
	}
}
