package main

// The failure watch, left running: its resident memory as processes come,
// fail and go, and what it adds to one endpoint failure in the failing
// process (every probe of the failure path is a trap there).

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	failRe = regexp.MustCompile(`pid=(\d+) failed=(\d+) total_us=([0-9.]+) per_failure_us=([0-9.]+)`)
	wpidRe = regexp.MustCompile(` pid=(\d+) `)
	rssRe  = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`)
)

// failbenchEndpoints is how many endpoints fail in one timed run.
const failbenchEndpoints = 200

// failbenchRun runs bench/c/failbench with n endpoints and returns the
// microseconds per failure, or -1, and the program's pid.
func failbenchRun(n int) (float64, int) {
	o, err := run([]string{"UCX_WARN_UNUSED_ENV_VARS=n"}, time.Minute, b("failbench"), "-n", strconv.Itoa(n))
	m := failRe.FindStringSubmatch(o)
	if err != nil || m == nil || m[2] != strconv.Itoa(n) {
		progress("failbench -n %d: %v: %s", n, err, strings.TrimSpace(o))
		return -1, 0
	}
	v, _ := strconv.ParseFloat(m[4], 64)
	pid, _ := strconv.Atoi(m[1])
	return v, pid
}

// rssKiB is the resident memory of pid in KiB, or -1.
func rssKiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	m := rssRe.FindSubmatch(data)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// lineCounter counts the watch's failure lines per pid (other processes
// of the node may fail too).
type lineCounter struct {
	mu    sync.Mutex
	part  []byte
	byPID map[int]int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.part = append(c.part, p...)
	for {
		i := bytes.IndexByte(c.part, '\n')
		if i < 0 {
			break
		}
		if m := wpidRe.FindSubmatch(c.part[:i]); m != nil {
			pid, _ := strconv.Atoi(string(m[1]))
			c.byPID[pid]++
		}
		c.part = c.part[i+1:]
	}
	c.mu.Unlock()
	return len(p), nil
}

// count sums the failures of pids.
func (c *lineCounter) count(pids []int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range pids {
		n += c.byPID[p]
	}
	return n
}

func partWatch() {
	if os.Geteuid() != 0 {
		printTable("8. Failure watch", []row{{Part: "watch", Name: "skipped: needs root", Value: -1}})
		return
	}
	// idle processes attached; failbench runs (two process lifetimes and
	// 10 failures each) at the memory checkpoints; the churn stops at the
	// checkpoint after churnCap on a slow or loaded machine.
	const idle, churnCap = 32, 90 * time.Second
	checkpoints := []int{200, 1000, 2000}
	var without, with []float64
	var pids []int // failbench runs under the watch
	measure := func(into *[]float64, watched bool) {
		for r := 0; r < *reps; r++ {
			if v, pid := failbenchRun(failbenchEndpoints); v >= 0 {
				*into = append(*into, v)
				if watched {
					pids = append(pids, pid)
				}
			}
		}
	}
	progress("watch: %d runs of %d endpoint failures without the watch", *reps, failbenchEndpoints)
	measure(&without, false)

	w := exec.Command(b("ucxfault"), "watch", "--all")
	if d := os.Getenv("BENCH_WATCH_LOG"); d != "" {
		w.Args = append(w.Args, "--incidents", d)
	}
	failures := &lineCounter{byPID: map[int]int{}}
	w.Stdout = failures
	stderr, err := w.StderrPipe()
	if err != nil {
		progress("watch: %v", err)
		return
	}
	if err := w.Start(); err != nil {
		progress("watch: %v", err)
		return
	}
	var (
		mu       sync.Mutex
		watched  int
		stopLine string
		banner   = make(chan struct{})
		once     sync.Once
	)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l := sc.Text()
			mu.Lock()
			switch {
			case strings.HasPrefix(l, "watching process ") && strings.Contains(l, " (rma, "):
				watched++
			case strings.HasPrefix(l, "stopped: "):
				stopLine = l
			}
			mu.Unlock()
			if strings.Contains(l, "for endpoint failures") {
				once.Do(func() { close(banner) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	stopWatch := func() {
		w.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { w.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			w.Process.Kill()
			<-done
		}
	}
	select {
	case <-banner:
	case <-time.After(60 * time.Second):
		progress("watch: no banner within 60 s")
		stopWatch()
		return
	}
	rssStart := rssKiB(w.Process.Pid)

	progress("watch: attaching to %d idle processes", idle)
	var procs []*exec.Cmd
	for i := 0; i < idle; i++ {
		c := exec.Command(b("rma"), "--ops", "0", "--seq", "put", "--interval-us", "100000", "--quiet")
		if err := c.Start(); err == nil {
			procs = append(procs, c)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := watched
		mu.Unlock()
		if n >= len(procs) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	mu.Lock()
	attached := watched
	mu.Unlock()
	rssAttached := rssKiB(w.Process.Pid)

	progress("watch: %d runs of %d endpoint failures with the watch", *reps, failbenchEndpoints)
	measure(&with, true)

	// Churn: each failbench run is two process lifetimes (the program and
	// its peer) and 10 real endpoint failures.
	churn := func(runs int) {
		for i := 0; i < runs; i++ {
			if v, pid := failbenchRun(10); v >= 0 {
				pids = append(pids, pid)
			}
		}
		time.Sleep(time.Second) // failures are reported once settled (200 ms)
	}
	t0 := time.Now()
	type point struct {
		lifetimes, failures int
		rss                 float64
	}
	var points []point
	done := 0
	for _, cp := range checkpoints {
		progress("watch: churn up to %d process lifetimes", 2*cp)
		churn(cp - done)
		done = cp
		points = append(points, point{2 * len(pids), len(with)*failbenchEndpoints + 10*(len(pids)-len(with)), rssKiB(w.Process.Pid)})
		if time.Since(t0) > churnCap {
			break
		}
	}
	churnSecs := time.Since(t0).Seconds()
	for _, c := range procs {
		c.Process.Kill()
		c.Wait()
	}
	time.Sleep(2 * time.Second)
	rssAfterExit := rssKiB(w.Process.Pid)
	seen := failures.count(pids)
	for i, pid := range pids {
		want := 10
		if i < len(with) {
			want = failbenchEndpoints
		}
		if got := failures.count([]int{pid}); got != want {
			progress("watch: failbench pid %d: %d failures reported, want %d", pid, got, want)
		}
	}
	stopWatch()
	progress("watch: %s", stopLine)
	expected := len(with)*failbenchEndpoints + 10*(len(pids)-len(with))

	mw, mo := median(with), median(without)
	mib := func(kib float64) float64 { return kib / 1024 }
	rows := []row{
		{Part: "watch", Name: "one endpoint failure, no watch (failure path in the failing process)", Value: mo, Unit: "us/failure", Samples: without},
		{Part: "watch", Name: "one endpoint failure, watch --all attached", Value: mw, Unit: "us/failure", Samples: with,
			Compare: fmt.Sprintf("%+.1f us/failure", mw-mo)},
		{Part: "watch", Name: "watch resident memory at start", Value: mib(rssStart), Unit: "MiB"},
		{Part: "watch", Name: fmt.Sprintf("watch resident memory, %d processes attached", attached), Value: mib(rssAttached), Unit: "MiB"},
		{Part: "watch", Name: fmt.Sprintf("watch resident memory, the %d idle processes exited", len(procs)), Value: mib(rssAfterExit), Unit: "MiB"},
		{Part: "watch", Name: "failures reported", Value: float64(seen), Unit: "failures", Target: fmt.Sprintf("= %d", expected),
			Verdict: verdict(seen == expected), Note: stopLine},
	}
	for i, pt := range points {
		r := row{Part: "watch", Name: fmt.Sprintf("watch resident memory after %d process lifetimes, %d failures", pt.lifetimes, pt.failures),
			Value: mib(pt.rss), Unit: "MiB"}
		if i == len(points)-1 && i > 0 {
			r.Name += fmt.Sprintf(" (%.0f s of churn)", churnSecs)
			// The Go heap's collection cycle alone moves RSS by about a MiB.
			r.Target, r.Compare = "no growth (< +2 MiB)", fmt.Sprintf("%+.2f MiB since %d lifetimes", mib(pt.rss-points[0].rss), points[0].lifetimes)
			r.Verdict = verdict(pt.rss-points[0].rss < 2048)
		}
		rows = append(rows[:len(rows)-2], append([]row{r}, rows[len(rows)-2:]...)...)
	}
	printTable(fmt.Sprintf("8. Failure watch: memory and the cost of one failure (failbench: %d endpoints to a TCP peer that is SIGKILLed; per failure = (last handler - first handler) / (handlers - 1); median of %d runs)",
		failbenchEndpoints, *reps), rows)
}
