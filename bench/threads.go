package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ucxfault/ucxfault/recording"
)

var (
	loader     = flag.String("loader", "", "run the benchmark programs through this dynamic loader (ld-linux-x86-64.so.2), as a self-contained directory does (make bench-dir)")
	libPath    = flag.String("libpath", "", "with -loader: the directory of the libraries it loads (--library-path)")
	sweepCalls = flag.Int("sweep-calls", 500000, "puts per thread and run (thread sweep)")
	sweepMax   = flag.Int("sweep-threads", 16, "most threads of the thread sweep (1, 2, 4, ... up to it)")
)

// viaLoader returns argv run through -loader when it is set: a directory
// made by `make bench-dir` carries Debian's UCX and C libraries and their
// loader, so that it runs where they are not installed.
func viaLoader(argv ...string) []string {
	if *loader == "" {
		return argv
	}
	pre := []string{*loader}
	if *libPath != "" {
		pre = append(pre, "--library-path", *libPath)
	}
	return append(pre, argv...)
}

// replayFile writes a recording of 1000 calls of fn, failing those at
// the positions in fails (code -3, UCS_ERR_NO_MESSAGE... any code does),
// and returns its path.
func replayFile(dir, fn string, pid int, fails ...int) (string, error) {
	f := recording.New(recording.SourceInjector)
	p := recording.Process{PID: pid, Hooks: []string{fn}, Complete: true}
	for i := 0; i < 1000; i++ {
		c := recording.Call{Seq: uint64(i), Fn: fn, Size: 8, How: recording.HowImmediate}
		for _, k := range fails {
			if k == i {
				c.Status, c.Injected = -3, true
			}
		}
		p.Calls = append(p.Calls, c)
	}
	f.Processes = []recording.Process{p}
	path := filepath.Join(dir, "rec.json")
	return path, f.WriteFile(path)
}

// replayWith returns a setup that replays, with the extra replay flags,
// a recording of calls of fn failing at the positions in fails.
func replayWith(fn string, flags []string, fails ...int) func(pid int) error {
	return func(pid int) error {
		dir, err := os.MkdirTemp("", "ucxfault-bench-rec")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path, err := replayFile(dir, fn, pid, fails...)
		if err != nil {
			return err
		}
		argv := viaLoader(append([]string{b("ucxfault"), "--socket-dir", sockTmp(), "--pid", strconv.Itoa(pid),
			"replay", "--from", path}, flags...)...)
		o, err := run(nil, 30*time.Second, argv[0], argv[1:]...)
		if err != nil {
			return fmt.Errorf("ucxfault replay: %v: %s", err, o)
		}
		return nil
	}
}

// partThreads is the thread sweep: every variant at 1, 2, 4, ... threads
// (each thread its own worker and self endpoint), each figure the best of
// reps runs (default three) of the mean over threads of each thread's
// fastest 50,000-put chunk. On a machine with fewer cores than threads,
// the threads share cores; a chunk is about a millisecond, under a
// scheduler's time slice, so the fastest chunk is still a thread's cost
// per call when it runs, and a cache line written by several threads
// still moves between the cores that run them.
func partThreads() {
	vs := []variant{
		{"no preload", nil, nil},
		{"minimal interposer", []string{"LD_PRELOAD=" + b("libmininterpose.so")}, nil},
		{"enabled 0 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0"), nil},
		// The pattern and a rule without conditions count down to the
		// next call that may fail; a rule with a call range or a window is
		// decided in the rules half on every call it can match, and the
		// window reads the clock on each.
		{"pattern (O)", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_STRATEGY=pattern", "UCX_FAULT_PATTERN=O"), nil},
		{"rule (prob=0)", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_RULES=hooks=ucp_put_nbx prob=0"), nil},
		{"rule, calls= (rules half)", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_RULES=hooks=ucp_put_nbx prob=0 calls=0..1000000000000"), nil},
		{"rule, for= (rules half)", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_RULES=hooks=ucp_put_nbx prob=0 for=24h"), nil},
		{"recording", lib("UCX_FAULT_RECORD=1"), nil},
		{"deferred, enabled 0 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0", "UCX_FAULT_MODE=deferred"), nil},
		{"replay (cycled, all pass)", lib(), replayWith("ucp_put_nbx", []string{"--cycle"})},
		{"replay (past its last failure)", lib(), replayWith("ucp_put_nbx", nil, 0)},
		{"replay (cycled, 1 failure in 1000)", lib(), replayWith("ucp_put_nbx", []string{"--cycle"}, 999)},
	}
	var counts []int
	for n := 1; n <= *sweepMax; n *= 2 {
		counts = append(counts, n)
	}
	best := 3
	if os.Getenv("BENCH_SWEEP_REPS") != "" {
		best, _ = strconv.Atoi(os.Getenv("BENCH_SWEEP_REPS"))
		best = max(best, 1)
	}
	progress("thread sweep: %d variants x %v threads x best of %d x %d puts per thread", len(vs), counts, best, *sweepCalls)
	res := map[string]map[int]float64{}
	samples := map[string]map[int][]float64{}
	for _, v := range vs {
		res[v.name], samples[v.name] = map[int]float64{}, map[int][]float64{}
	}
	for r := 0; r < best; r++ {
		for _, n := range counts {
			for i := range vs {
				v := vs[(i+r)%len(vs)]
				args := []string{"-n", strconv.Itoa(*sweepCalls), "-t", strconv.Itoa(n)}
				o, err := runPutbench(v, 3*time.Minute, viaLoader(), args...)
				x := parseFloat(nsChunkRe, o)
				if err != nil || x < 0 {
					progress("%s, %d threads: %v: %s", v.name, n, err, o)
					x = -1
				}
				samples[v.name][n] = append(samples[v.name][n], x)
				if old, ok := res[v.name][n]; x >= 0 && (!ok || old < 0 || x < old) {
					res[v.name][n] = x
				} else if !ok {
					res[v.name][n] = x
				}
			}
		}
		progress("round %d/%d done", r+1, best)
	}
	fmt.Printf("\n### Thread sweep: 8-byte ucp_put_nbx over a self endpoint, each thread its own worker (ns per call and thread: mean over threads of each thread's fastest 50,000-put chunk, best of %d)\n\n", best)
	fmt.Print("| threads |")
	for _, v := range vs {
		fmt.Printf(" %s |", v.name)
	}
	fmt.Print("\n|---:|")
	fmt.Print(strings.Repeat("---:|", len(vs)))
	fmt.Println()
	for _, n := range counts {
		fmt.Printf("| %d |", n)
		for _, v := range vs {
			x := res[v.name][n]
			if x < 0 {
				fmt.Print(" n/a |")
			} else {
				fmt.Printf(" %.1f |", x)
			}
			results = append(results, row{Part: "threads", Name: fmt.Sprintf("%s, %d threads", v.name, n), Value: x,
				Unit: "ns/call", Samples: samples[v.name][n]})
		}
		fmt.Println()
	}
	// The targets, against the minimal interposer at the same thread count.
	floor := func(n int) float64 { return res["minimal interposer"][n] }
	over := func(name string, n int) float64 {
		if res[name][n] < 0 || floor(n) < 0 {
			return math.NaN()
		}
		return res[name][n] - floor(n)
	}
	last := counts[len(counts)-1]
	threads := func(n int) string {
		if n == 1 {
			return "1 thread"
		}
		return fmt.Sprintf("%d threads", n)
	}
	var rows []row
	// Each row: the variant's figure, and its difference from the
	// interposer's at the same thread count (or the ratio) against the
	// target.
	add := func(name string, n int, target string, limit float64) {
		d := over(name, n)
		rows = append(rows, row{Part: "threads-targets", Name: name + ", " + threads(n), Value: res[name][n], Unit: "ns/call",
			Target: target, Compare: fmt.Sprintf("%+.2f ns", d), Verdict: verdict(d <= limit)})
	}
	// 1 and 2 threads (the 2-core machine's targets), and the most.
	rowCounts := []int{1}
	for _, n := range []int{2, last} {
		if n <= last && n != rowCounts[len(rowCounts)-1] {
			rowCounts = append(rowCounts, n)
		}
	}
	for _, n := range rowCounts {
		add("recording", n, "<= interposer + 20 ns", 20)
	}
	ratio := res["recording"][last] / res["recording"][1]
	rows = append(rows, row{Part: "threads-targets", Name: "recording, " + threads(last) + " / 1 thread", Value: ratio, Unit: "x",
		Target: "<= 1.3x", Verdict: verdict(ratio <= 1.3)})
	for _, name := range []string{"replay (cycled, all pass)", "replay (past its last failure)"} {
		for _, n := range rowCounts {
			add(name, n, "<= interposer + 10 ns", 10)
		}
	}
	for _, name := range []string{"pattern (O)", "rule (prob=0)", "rule, calls= (rules half)", "rule, for= (rules half)"} {
		for _, n := range rowCounts {
			add(name, n, "<= interposer + 15 ns", 15)
		}
	}
	for _, n := range rowCounts {
		add("deferred, enabled 0 %", n, "<= interposer + 5 ns", 5)
	}
	printTable("Thread sweep: targets (the same runs)", rows)
}
