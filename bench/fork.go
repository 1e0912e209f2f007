package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// forkOnce runs build/forkinit (e2e/testdata/forkinit.c: fork first thing
// in main, ucp_init and ucp_worker_create in the child, 10 s bound) under
// `ucxfault inject` and reports whether the child hung and how long its
// first hooked call took (microseconds, -1 when not printed; a run that
// printed no CHILD-EXIT line is neither, and comes back with -1).
func forkOnce(sock string) (hang bool, hookUS float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b("ucxfault"), "--socket-dir", sock, "inject", "--lib", b("libucxfault.so"),
		"--quiet", "--probability", "0", "--", b("forkinit"))
	cmd.Env = append(os.Environ(), "UCX_WARN_UNUSED_ENV_VARS=n")
	o, err := cmd.Output()
	hookUS = -1
	for _, f := range strings.Fields(string(o)) {
		if v, ok := strings.CutPrefix(f, "first-hook-us="); ok {
			hookUS, _ = strconv.ParseFloat(v, 64)
		}
		if f == "hang=1" {
			hang = true
		}
	}
	if hang {
		err = nil // a hang is a result, not a failure of the bench (the parent exits 1)
	}
	return hang, hookUS, err
}

// burn keeps every core busy until stop is closed: the "other load" of the
// fork part.
func burn(stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < runtime.NumCPU(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				for j := 0; j < 1e5; j++ {
					x += j
				}
			}
		}()
	}
	return &wg
}

// partFork: 1000 runs of forkinit under the injector, two at a time, on an
// otherwise idle machine and again with every core kept busy. Target: no
// child hangs (docs/safety.md, "A fresh UCP context in a fork()ed child").
func partFork() {
	const runs = 1000
	var rows []row
	for _, loaded := range []bool{false, true} {
		name := "no added load"
		var stop chan struct{}
		var wg *sync.WaitGroup
		if loaded {
			name = "every core kept busy"
			stop = make(chan struct{})
			wg = burn(stop)
		}
		progress("fork at start-up: %d runs, %s", runs, name)
		sock := sockTmp()
		var mu sync.Mutex
		hangs, failed := 0, 0
		var hook []float64
		next := make(chan int)
		var workers sync.WaitGroup
		t0 := time.Now()
		for w := 0; w < 2; w++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for range next {
					hang, us, err := forkOnce(sock)
					mu.Lock()
					switch {
					case hang:
						hangs++
					case err != nil || us < 0:
						failed++
					default:
						hook = append(hook, us)
					}
					mu.Unlock()
				}
			}()
		}
		for i := 0; i < runs; i++ {
			next <- i
		}
		close(next)
		workers.Wait()
		if loaded {
			close(stop)
			wg.Wait()
		}
		rows = append(rows,
			row{Part: "fork", Name: name + ": children hung", Value: float64(hangs), Unit: fmt.Sprintf("of %d", runs),
				Target: "0", Verdict: verdict(hangs == 0)},
			row{Part: "fork", Name: name + ": runs that failed otherwise", Value: float64(failed), Unit: fmt.Sprintf("of %d", runs)},
			row{Part: "fork", Name: name + ": child's first hooked call", Value: median(hook), Unit: "us",
				Note: fmt.Sprintf("%d runs in %.0f s", runs, time.Since(t0).Seconds())})
	}
	printTable("6. fork() at start-up, UCP context created in the child (forkinit under `ucxfault inject`)", rows)
}

// partNonUCX: what a process that never uses UCX pays for an inherited
// LD_PRELOAD: threads and resident memory of `sleep` (read from
// /proc/PID/status while it sleeps), and 10,000 runs of `sh -c 'echo x
// >/dev/null'` that must print nothing and exit 0. Start-up time is part 5.
func partNonUCX() {
	var rows []row
	for _, v := range []struct {
		name string
		env  []string
	}{{"sleep", nil}, {"sleep + libucxfault.so", lib()}} {
		var threads, rss []float64
		for r := 0; r < 2**reps; r++ {
			cmd := exec.Command("sleep", "0.3")
			cmd.Env = append(os.Environ(), v.env...)
			if err := cmd.Start(); err != nil {
				progress("sleep: %v", err)
				return
			}
			time.Sleep(150 * time.Millisecond)
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			for _, l := range strings.Split(string(st), "\n") {
				f := strings.Fields(l)
				if len(f) >= 2 && f[0] == "Threads:" {
					n, _ := strconv.ParseFloat(f[1], 64)
					threads = append(threads, n)
				}
				if len(f) >= 2 && f[0] == "VmRSS:" {
					n, _ := strconv.ParseFloat(f[1], 64)
					rss = append(rss, n/1024)
				}
			}
			cmd.Wait()
		}
		rows = append(rows,
			row{Part: "nonucx", Name: v.name + ": threads", Value: median(threads), Unit: "threads"},
			row{Part: "nonucx", Name: v.name + ": RSS", Value: median(rss), Unit: "MB"})
	}
	const shells = 10000
	progress("sh -c 'echo x >/dev/null' x %d under the library", shells)
	printed, nonzero := 0, 0
	var first string
	for i := 0; i < shells; i++ {
		cmd := exec.Command("sh", "-c", "echo x >/dev/null")
		cmd.Env = append(os.Environ(), lib()...)
		o, err := cmd.CombinedOutput()
		if len(o) != 0 {
			printed++
			if first == "" {
				first = strings.TrimSpace(string(o))
			}
		}
		if err != nil {
			if _, ok := err.(*exec.ExitError); !ok || cmd.ProcessState.Sys().(syscall.WaitStatus).ExitStatus() != 0 {
				nonzero++
			}
		}
	}
	r := row{Part: "nonucx", Name: fmt.Sprintf("sh -c 'echo x >/dev/null', %d runs: printed something", shells),
		Value: float64(printed), Unit: "runs", Target: "0", Verdict: verdict(printed == 0 && nonzero == 0), Note: first}
	rows = append(rows, r, row{Part: "nonucx", Name: "the same runs: exit status not 0", Value: float64(nonzero), Unit: "runs", Target: "0"})
	printTable("7. A process that never uses UCX, under an inherited LD_PRELOAD (median)", rows)
}
