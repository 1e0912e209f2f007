// Command bench runs the ucxfault benchmarks (scripts/bench.sh builds and
// calls it): it prints one table per part and writes the results as JSON.
// Every comparison is measured in the same run, repeated, with the order of
// the variants rotated on every repetition, and reported as a median.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ucxfault/ucxfault/recording"
)

var (
	buildDir = flag.String("build", "build", "directory holding ucxfault, libucxfault.so, rma, putbench, libmininterpose.so")
	reps     = flag.Int("reps", 5, "repetitions per measurement")
	out      = flag.String("json", "build/bench.json", "JSON output")
	calls    = flag.Int("calls", 2000000, "puts per timed run (interposition)")
)

type row struct {
	Part    string    `json:"part"`
	Name    string    `json:"name"`
	Value   float64   `json:"value"`
	Unit    string    `json:"unit"`
	Target  string    `json:"target,omitempty"`
	Compare string    `json:"compare,omitempty"`
	Verdict string    `json:"verdict,omitempty"`
	Samples []float64 `json:"samples,omitempty"`
	Note    string    `json:"note,omitempty"`
}

var results []row

func b(name string) string { p, _ := filepath.Abs(filepath.Join(*buildDir, name)); return p }

// median of the measurements in v; a negative value is a failed run.
func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if x >= 0 {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return -1
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedDiff is the median over rounds of a[i] - b[i]: this VM switches
// between a fast and a slow mode for seconds at a time (ns per put of 11 or
// 18 on the same binary), and runs of one round share the mode, where a
// difference of medians would mix them.
func pairedDiff(a, b []float64) float64 {
	var d []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] >= 0 && b[i] >= 0 {
			d = append(d, a[i]-b[i]+1e9) // median() ignores negatives: shift
		}
	}
	m := median(d)
	if m < 0 {
		return math.NaN()
	}
	return m - 1e9
}

// pairedRatio is the median over rounds of a[i] / b[i].
func pairedRatio(a, b []float64) float64 {
	var q []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] >= 0 && b[i] > 0 {
			q = append(q, a[i]/b[i])
		}
	}
	m := median(q)
	if m < 0 {
		return math.NaN()
	}
	return m
}

func progress(f string, a ...any) { fmt.Fprintf(os.Stderr, "  .. "+f+"\n", a...) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func printTable(title string, rows []row) {
	fmt.Printf("\n### %s\n\n| measurement | value | unit | target | compared | verdict |\n|---|---:|---|---|---|---|\n", title)
	for _, r := range rows {
		v := fmt.Sprintf("%.2f", r.Value)
		if r.Value < 0 {
			v = "n/a"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", r.Name, v, r.Unit, r.Target, r.Compare, r.Verdict)
		if r.Note != "" {
			fmt.Printf("|   ↳ %s | | | | | |\n", r.Note)
		}
	}
	results = append(results, rows...)
}

// run runs a command with extra environment and returns its combined output.
func run(env []string, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	o, err := cmd.CombinedOutput()
	return string(o), err
}

var (
	nsRe      = regexp.MustCompile(`(?m)^ns_per_call=([0-9.]+)`)
	nsChunkRe = regexp.MustCompile(`(?m)^ns_min_chunk=([0-9.]+)`)
)

func parseNs(s string) float64 { return parseFloat(nsRe, s) }

func parseFloat(re *regexp.Regexp, s string) float64 {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

type variant struct {
	name string
	env  []string
	// setup, when set, runs once putbench is ready and before its puts,
	// with the process id (a control command, such as a replay).
	setup func(pid int) error
}

// runPutbench runs putbench (under the command prefix, if any, such as
// valgrind) with the variant's environment and returns its output.
func runPutbench(v variant, timeout time.Duration, prefix []string, args ...string) (string, error) {
	argv := append(append(append([]string(nil), prefix...), b("putbench")), args...)
	if v.setup == nil {
		return run(v.env, timeout, argv[0], argv[1:]...)
	}
	dir, err := os.MkdirTemp("", "ucxfault-bench")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	gofile := filepath.Join(dir, "go")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], "-g", gofile)...)
	cmd.Env = append(os.Environ(), v.env...)
	var out strings.Builder
	cmd.Stderr = &syncWriter{b: &out}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "READY") {
			break
		}
	}
	if err := v.setup(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("setting up %s: %w", v.name, err)
	}
	if err := os.WriteFile(gofile, nil, 0o644); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return "", err
	}
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	return strings.Join(lines, "\n") + "\n" + trOutString(&out), err
}

// replaySetup returns a setup that replays, cycled, a recording of calls of
// fn that all passed: the replay cursor's cost without changing the puts.
func replaySetup(fn string) func(pid int) error {
	return func(pid int) error {
		dir, err := os.MkdirTemp("", "ucxfault-bench-rec")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f := recording.New(recording.SourceInjector)
		p := recording.Process{PID: pid, Hooks: []string{fn}, Complete: true}
		for i := 0; i < 1000; i++ {
			p.Calls = append(p.Calls, recording.Call{Seq: uint64(i), Fn: fn, Size: 8, How: recording.HowImmediate})
		}
		f.Processes = []recording.Process{p}
		path := filepath.Join(dir, "rec.json")
		if err := f.WriteFile(path); err != nil {
			return err
		}
		o, err := run(nil, 30*time.Second, b("ucxfault"), "--socket-dir", sockTmp(), "--pid", strconv.Itoa(pid),
			"replay", "--from", path, "--cycle")
		if err != nil {
			return fmt.Errorf("ucxfault replay: %v: %s", err, o)
		}
		return nil
	}
}

func lib(extra ...string) []string {
	return append([]string{"LD_PRELOAD=" + b("libucxfault.so"), "UCX_FAULT_SOCKET_DIR=" + sockTmp()}, extra...)
}

var sockDir string

func sockTmp() string {
	if sockDir == "" {
		sockDir, _ = os.MkdirTemp("", "ucxfault-bench-sock")
	}
	return sockDir
}

// interleave runs each variant reps times, rotating the start each round.
// Sample i of every variant comes from round i (-1 where a run failed), so
// that variants can be compared round by round (paired).
func interleave(vs []variant, rounds int, measure func(v variant) float64) map[string][]float64 {
	res := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for i := range vs {
			v := vs[(i+r)%len(vs)]
			res[v.name] = append(res[v.name], measure(v))
		}
		progress("round %d/%d done", r+1, rounds)
	}
	return res
}

// deferredVariant is part 1's row for the armed path in deferred mode, where
// every operation's request is followed for kill-ep.
const deferredVariant = "ucxfault enabled 0 %, deferred (requests followed)"

func partInterpose() {
	vs := []variant{
		{"no preload", nil, nil},
		{"minimal C interposer (floor)", []string{"LD_PRELOAD=" + b("libmininterpose.so")}, nil},
		{"ucxfault disabled", lib("UCX_FAULT_ENABLED=0"), nil},
		{"ucxfault enabled 0 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0"), nil},
		{"ucxfault enabled 1 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=1"), nil},
		{"ucxfault enabled 100 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=100"), nil},
		{"ucxfault recording", lib("UCX_FAULT_RECORD=1"), nil},
		{"ucxfault rule never matching", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_RULES=hooks=ucp_put_nbx min-size=1M prob=100"), nil},
		{"ucxfault replay (cycled, all pass)", lib(), replaySetup("ucp_put_nbx")},
		// Deferred mode follows every counted operation on an endpoint
		// (ucxf_tracks), so that kill-ep can fail it while in flight: what
		// that costs a call that passes.
		{deferredVariant, lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0", "UCX_FAULT_MODE=deferred"), nil},
	}
	all := append([]variant(nil), vs...)
	for _, i := range []int{0, 1, 2, 3} {
		all = append(all, variant{vs[i].name + ", 2 threads", vs[i].env, vs[i].setup})
	}
	// A run takes a fraction of a second and lands in this VM's fast or
	// slow mode as a whole: at least eleven repetitions for a median.
	rounds := max(*reps, 11)
	progress("interposition: %d variants x %d reps x %d puts", len(all), rounds, *calls)
	res := interleave(all, rounds, func(v variant) float64 {
		args := []string{"-n", strconv.Itoa(*calls)}
		if strings.HasSuffix(v.name, "2 threads") {
			args = append(args, "-t", "2")
		}
		o, err := runPutbench(v, 2*time.Minute, nil, args...)
		if err != nil {
			progress("%s: %v: %s", v.name, err, o)
		}
		// The fastest chunk of each run: this VM's speed changes for
		// seconds at a time (the same binary runs at 11 or 18 ns per
		// put), which the mean of a run mixes in.
		return parseFloat(nsChunkRe, o)
	})
	med := func(n string) float64 { return median(res[n]) }
	var rows []row
	for _, v := range all {
		r := row{Part: "interpose", Name: v.name, Value: med(v.name), Unit: "ns/call", Samples: res[v.name]}
		d := pairedDiff(res[v.name], res[vs[1].name])
		switch v.name {
		case "ucxfault disabled":
			r.Target, r.Compare, r.Verdict = "<= floor + 1 ns", fmt.Sprintf("%+.2f ns", d), verdict(d <= 1)
		case "ucxfault enabled 0 %", "ucxfault rule never matching", deferredVariant:
			r.Target, r.Compare, r.Verdict = "<= floor + 5 ns", fmt.Sprintf("%+.2f ns", d), verdict(d <= 5)
		default:
			if strings.HasSuffix(v.name, "2 threads") {
				ratio := pairedRatio(res[v.name], res[strings.TrimSuffix(v.name, ", 2 threads")])
				r.Target, r.Compare, r.Verdict = "<= 1.3x 1 thread", fmt.Sprintf("%.2fx", ratio), verdict(ratio <= 1.3)
			} else if v.name != vs[1].name {
				r.Compare = fmt.Sprintf("%+.2f ns vs floor", d)
			}
		}
		rows = append(rows, r)
	}
	printTable("1. Interposition, 8-byte ucp_put_nbx over a self endpoint (per run the fastest 50,000-put chunk, ns per call and thread; median over runs; compared: median of the differences within each round)", rows)
	instructions(vs)
}

var irRe = regexp.MustCompile(`Collected : ([0-9]+)`)

func instructions(vs []variant) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		printTable("1b. Instructions per call", []row{{Part: "instr", Name: "valgrind not installed", Value: -1}})
		return
	}
	n1, n2 := 20000, 120000
	progress("instructions per call with callgrind (N=%d and N=%d)", n1, n2)
	var rows []row
	var floor float64
	for i, v := range vs {
		irs := [2]float64{}
		for j, n := range []int{n1, n2} {
			// Go's preemption signals (SIGURG) crash callgrind 3.19 in the
			// preloaded Go runtime; the C hot path does not depend on them.
			cv := v
			cv.env = append([]string{"GODEBUG=asyncpreemptoff=1"}, v.env...)
			o, err := runPutbench(cv, 5*time.Minute, []string{"valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"},
				"-n", strconv.Itoa(n), "-w", "0")
			m := irRe.FindStringSubmatch(o)
			if err != nil || m == nil {
				progress("callgrind %s: %v", v.name, err)
				irs[j] = -1
				continue
			}
			irs[j], _ = strconv.ParseFloat(m[1], 64)
		}
		per := -1.0
		if irs[0] >= 0 && irs[1] >= 0 {
			per = (irs[1] - irs[0]) / float64(n2-n1)
		}
		if i == 1 {
			floor = per
		}
		r := row{Part: "instr", Name: v.name, Value: per, Unit: "instr/call"}
		if i > 1 && per >= 0 {
			r.Compare = fmt.Sprintf("%+.1f vs floor", per-floor)
		}
		rows = append(rows, r)
	}
	printTable(fmt.Sprintf("1b. Instructions per call (callgrind, (Ir(%d)-Ir(%d))/%d; perf counters not available in this VM)", n2, n1, n2-n1), rows)
}

var rateRe = regexp.MustCompile(`(?m)^Final:\s+(.*)$`)

// pinned prefixes a command with taskset on one CPU, when the machine has
// two and taskset is there: both sides of ucx_perftest spin, and left to the
// scheduler they trade cores and the rates scatter.
func pinned(cpu int, argv ...string) []string {
	if _, err := exec.LookPath("taskset"); err != nil || runtime.NumCPU() < 2 {
		return argv
	}
	return append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

func perftestRate(test string, env []string, port int) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sargv := pinned(0, "ucx_perftest", "-p", strconv.Itoa(port))
	srv := exec.CommandContext(ctx, sargv[0], sargv[1:]...)
	srv.Env = append(os.Environ(), env...)
	if err := srv.Start(); err != nil {
		return -1
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		cargv := pinned(1, "ucx_perftest", "127.0.0.1", "-p", strconv.Itoa(port), "-t", test, "-s", "8", "-n", "1000000")
		o, err := run(env, 30*time.Second, cargv[0], cargv[1:]...)
		if err != nil && strings.Contains(o, "connect") {
			continue // server not listening yet
		}
		m := rateRe.FindStringSubmatch(o)
		if m == nil {
			progress("perftest %s: %v %s", test, err, o)
			return -1
		}
		f := strings.Fields(m[1])
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		return v
	}
	return -1
}

func partPerftest() {
	if _, err := exec.LookPath("ucx_perftest"); err != nil {
		printTable("2. ucx_perftest", []row{{Part: "perftest", Name: "ucx_perftest not installed", Value: -1}})
		return
	}
	port := 13400
	var rows []row
	for _, test := range []string{"ucp_put_bw", "tag_bw"} {
		vs := []variant{
			{"without the library", nil, nil},
			{"loaded, disabled", lib("UCX_FAULT_ENABLED=0"), nil},
			{"enabled 0 %", lib("UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0"), nil},
		}
		// Rates on a small VM come out in two modes (two spinning processes
		// and their neighbours): at least nine repetitions for a median.
		rounds := max(*reps, 9)
		progress("ucx_perftest %s: %d variants x %d reps", test, len(vs), rounds)
		res := interleave(vs, rounds, func(v variant) float64 { port++; return perftestRate(test, v.env, port) })
		for _, v := range vs {
			r := row{Part: "perftest", Name: test + ": " + v.name, Value: median(res[v.name]) / 1e6, Unit: "M msg/s", Samples: res[v.name]}
			if v.name != vs[0].name {
				pct := 100 * pairedRatio(res[v.name], res[vs[0].name])
				r.Compare = fmt.Sprintf("%.1f %% of without", pct)
				if v.name == vs[1].name { // the target is for the library loaded and disabled
					r.Target, r.Compare, r.Verdict = ">= 98 % of without", fmt.Sprintf("%.1f %%", pct), verdict(pct >= 98)
				}
			}
			rows = append(rows, r)
		}
	}
	printTable("2. ucx_perftest message rate, 8 bytes, 1,000,000 messages (library in server and client; compared: median of the ratios within each round)", rows)
}

// probeRun runs putbench with a tracer (if any) attached once it is set up
// and ready, before the puts start, and returns ns per call plus the
// tracer's output.
func probeRun(n int, tracer func(pid int) *exec.Cmd, ready string) (float64, string) {
	o, tracerOut, err := probeRunOut(n, tracer, ready)
	if err != nil {
		return -1, err.Error()
	}
	return parseNs(o), tracerOut
}

// probeRunOut runs putbench (n calls, extra arguments) under tracer and
// returns putbench's output and the tracer's.
func probeRunOut(n int, tracer func(pid int) *exec.Cmd, ready string, extra ...string) (string, string, error) {
	var tr *exec.Cmd
	var trOut strings.Builder
	v := variant{name: "probe"}
	if tracer != nil {
		v.setup = func(pid int) error {
			tr = tracer(pid)
			tr.Stdout, tr.Stderr = &syncWriter{b: &trOut}, &syncWriter{b: &trOut}
			if err := tr.Start(); err != nil {
				tr = nil
				return err
			}
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(trOutString(&trOut), ready) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			return nil
		}
	}
	o, err := runPutbench(v, 2*time.Minute, nil, append([]string{"-n", strconv.Itoa(n), "-w", "1000"}, extra...)...)
	if tr != nil {
		tr.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { tr.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			tr.Process.Kill()
			<-done
		}
	}
	return o, trOutString(&trOut), err
}

func partObserver() {
	if os.Geteuid() != 0 {
		printTable("3. Observer", []row{{Part: "observer", Name: "skipped: needs root", Value: -1}})
		return
	}
	// The libucp the benchmark programs were linked with (the Makefile's
	// pkg-config), else the loader's.
	libucp := ""
	if o, err := exec.Command("pkg-config", "--variable=libdir", "ucx").Output(); err == nil && len(strings.TrimSpace(string(o))) > 0 {
		libucp = filepath.Join(strings.TrimSpace(string(o)), "libucp.so.0")
	} else if o, err := exec.Command("sh", "-c", "ldconfig -p | awk '/libucp.so.0 /{print $NF; exit}'").Output(); err == nil && len(strings.TrimSpace(string(o))) > 0 {
		libucp = strings.TrimSpace(string(o))
	}
	libucp, _ = filepath.EvalSymlinks(libucp)
	haveBT := true
	if _, err := exec.LookPath("bpftrace"); err != nil {
		haveBT = false
	}
	empty := fmt.Sprintf("uprobe:%s:ucp_put_nbx {} uretprobe:%s:ucp_put_nbx {}", libucp, libucp)
	capture := fmt.Sprintf(`uprobe:%[1]s:ucp_put_nbx { @ts[tid] = nsecs; @ep[tid] = arg0; @sz[tid] = arg2; }
uretprobe:%[1]s:ucp_put_nbx /@ts[tid]/ { printf("%%d %%d %%lx %%ld %%d\n", tid, @sz[tid], @ep[tid], (int64)retval, nsecs - @ts[tid]); delete(@ts[tid]); delete(@ep[tid]); delete(@sz[tid]); }`, libucp)
	bt := func(prog string) func(int) *exec.Cmd {
		return func(pid int) *exec.Cmd {
			return exec.Command("bpftrace", "-o", "/dev/null", "-p", strconv.Itoa(pid), "-e", prog)
		}
	}
	n := 20000
	type tv struct {
		name   string
		tracer func(int) *exec.Cmd
		ready  string
	}
	vs := []tv{{"no probe", nil, ""}}
	if haveBT {
		vs = append(vs, tv{"empty uprobe+uretprobe (floor, bpftrace)", bt(empty), ""})
	}
	// A recording file of its own: WriteFile renames a temporary file into
	// place, which would replace /dev/null itself.
	recDir, err := os.MkdirTemp("", "ucxf-bench-")
	if err != nil {
		progress("observer: %v", err)
		return
	}
	defer os.RemoveAll(recDir)
	rec := filepath.Join(recDir, "observed.json")
	vs = append(vs, tv{"ucxfault observe --functions ucp_put_nbx (1 watched process)", func(pid int) *exec.Cmd {
		return exec.Command(b("ucxfault"), "observe", strconv.Itoa(pid), "--functions", "ucp_put_nbx", "--recording", rec)
	}, "observing process"})
	// 8 watched processes: the benchmark and 7 others that call slowly.
	// The probes are then set once on the libucp file for every process
	// and the BPF program filters by its map of watched processes.
	var others []*exec.Cmd
	for i := 0; i < 7; i++ {
		c := exec.Command(b("rma"), "--ops", "0", "--seq", "put", "--interval-us", "100000", "--quiet")
		if err := c.Start(); err == nil {
			others = append(others, c)
		}
	}
	defer func() {
		for _, c := range others {
			c.Process.Kill()
			c.Wait()
		}
	}()
	vs = append(vs, tv{"ucxfault observe --functions ucp_put_nbx (8 watched processes)", func(pid int) *exec.Cmd {
		args := []string{"observe", strconv.Itoa(pid), "--functions", "ucp_put_nbx", "--recording", rec}
		for _, c := range others {
			args = append(args, strconv.Itoa(c.Process.Pid))
		}
		return exec.Command(b("ucxfault"), args...)
	}, "observing processes"})
	if haveBT {
		vs = append(vs, tv{"bpftrace capture (tid,size,ep,ret,duration)", bt(capture), ""})
	}
	// The failure watch probes no data-path function: a put takes no trap.
	vs = append(vs, tv{watchVariant, func(int) *exec.Cmd {
		return exec.Command(b("ucxfault"), "watch", "--all")
	}, "for endpoint failures"})
	if len(others) != 7 {
		progress("observer: only %d of the 7 other processes started", len(others))
	}
	progress("observer: %d variants x %d reps x %d puts", len(vs), *reps, n)
	res := map[string][]float64{}
	lost := map[string]string{}
	lostRe := regexp.MustCompile(`\d+ lost \([^)]*\)`)
	btLost := regexp.MustCompile(`Lost (\d+) events`)
	for r := 0; r < *reps; r++ {
		for i := range vs {
			v := vs[(i+r)%len(vs)]
			ns, o := probeRun(n, v.tracer, v.ready)
			if ns < 0 {
				progress("%s: failed: %s", v.name, o)
				continue
			}
			res[v.name] = append(res[v.name], ns)
			if m := lostRe.FindString(o); m != "" {
				lost[v.name] = m
			}
			if m := btLost.FindString(o); m != "" {
				lost[v.name] = m
			}
		}
		progress("round %d/%d done", r+1, *reps)
	}
	base := median(res["no probe"])
	floor := -1.0
	if haveBT {
		floor = median(res[vs[1].name]) - base
	}
	btCost := -1.0
	if haveBT {
		btCost = median(res["bpftrace capture (tid,size,ep,ret,duration)"]) - base
	}
	var rows []row
	for _, v := range vs {
		m := median(res[v.name])
		r := row{Part: "observer", Name: v.name, Value: m, Unit: "ns/call", Samples: res[v.name], Note: lost[v.name]}
		if v.tracer != nil {
			cost := m - base
			r.Compare = fmt.Sprintf("+%.0f ns/call", cost)
			if floor > 0 {
				r.Compare += fmt.Sprintf(", %.2fx floor", cost/floor)
			}
			if v.name == watchVariant {
				r.Compare = fmt.Sprintf("%+.1f ns/call (%+.2f%%)", cost, 100*cost/base)
				r.Target = "< 1% of no probe (noise)"
				r.Verdict = verdict(cost < 0.01*base)
			} else if strings.HasPrefix(v.name, "ucxfault") && floor > 0 {
				r.Target = "<= 1.1x floor, < bpftrace"
				r.Verdict = verdict(cost <= 1.1*floor && (btCost < 0 || cost < btCost))
			}
		}
		rows = append(rows, r)
	}
	printTable(fmt.Sprintf("3. Observer cost per probed call (putbench, %d puts; overhead = minus no-probe)", n), rows)

	// The watch on the data path: a put, a get and a poll
	// (ucp_worker_progress with nothing to do) take no trap.
	var wrows []row
	watch := func(int) *exec.Cmd { return exec.Command(b("ucxfault"), "watch", "--all") }
	// As part 1: each run's fastest 50,000-call chunk (this VM runs at two
	// speeds for seconds at a time), a million calls a run.
	const wn = 1000000
	chunk := func(tracer func(int) *exec.Cmd, ready, o string) float64 {
		out, _, err := probeRunOut(wn, tracer, ready, "-o", o)
		if err != nil {
			return -1
		}
		return parseFloat(nsChunkRe, out)
	}
	for _, o := range []string{"put", "get", "progress"} {
		var without, with []float64
		for r := 0; r < *reps; r++ {
			if ns := chunk(nil, "", o); ns >= 0 {
				without = append(without, ns)
			}
			if ns := chunk(watch, "for endpoint failures", o); ns >= 0 {
				with = append(with, ns)
			}
		}
		// The fastest run: this VM's two speeds put the median of five
		// runs on either side (samples of one run: put 7.4, 8.0, 11.1 and
		// 13.3 ns without the watch, 7.3, 9.3 and 13.3 ns with it).
		m0, m1 := slices.Min(append(without, math.Inf(1))), slices.Min(append(with, math.Inf(1)))
		wrows = append(wrows, row{Part: "observer", Name: o + ", no watch", Value: m0, Unit: "ns/call", Samples: without},
			row{Part: "observer", Name: o + ", " + watchVariant, Value: m1, Unit: "ns/call", Samples: with,
				Compare: fmt.Sprintf("%+.1f ns/call (%+.2f%%)", m1-m0, 100*(m1-m0)/m0),
				Target:  "< 1% (noise)", Verdict: verdict(m1-m0 < 0.01*m0)})
	}
	printTable(fmt.Sprintf("3c. The failure watch on put, get and poll (putbench -o put|get|progress, %d calls a run, fastest 50,000-call chunk, fastest of %d runs)", wn, *reps), wrows)
}

// watchVariant is the failure watch's row of the observer table.
const watchVariant = "ucxfault watch --all (failure path only)"

type syncWriter struct{ b *strings.Builder }

var twMu = make(chan struct{}, 1)

func (w *syncWriter) Write(p []byte) (int, error) {
	twMu <- struct{}{}
	defer func() { <-twMu }()
	return w.b.Write(p)
}

func trOutString(b *strings.Builder) string {
	twMu <- struct{}{}
	defer func() { <-twMu }()
	return b.String()
}

func partControl() {
	var rows []row
	for _, n := range []int{1, 10, 100} {
		dir, _ := os.MkdirTemp("", "ucxfault-bench-ctl")
		progress("control plane: starting %d injected processes", n)
		var procs []*exec.Cmd
		for i := 0; i < n; i++ {
			c := exec.Command(b("ucxfault"), "inject", "--socket-dir", dir, "--", b("rma"), "--ops", "0", "--interval-us", "100000", "--quiet")
			c.Env = append(os.Environ(), "UCX_FAULT_SOCKET_DIR="+dir)
			if err := c.Start(); err == nil {
				procs = append(procs, c)
			}
		}
		// Wait until status answers for all of them.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			o, _ := exec.Command(b("ucxfault"), "--socket-dir", dir, "status", "-o", "json").Output()
			if strings.Count(string(o), `"pid"`) >= n {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		timeCmd := func(args ...string) float64 {
			t0 := time.Now()
			o, err := exec.Command(b("ucxfault"), append([]string{"--socket-dir", dir}, args...)...).CombinedOutput()
			if err != nil {
				progress("%v: %v %s", args, err, o)
				return -1
			}
			return float64(time.Since(t0).Microseconds()) / 1000
		}
		var prob, stat []float64
		for r := 0; r < *reps; r++ {
			if v := timeCmd("probability", "1"); v >= 0 {
				prob = append(prob, v)
			}
			if n == 100 {
				if v := timeCmd("status"); v >= 0 {
					stat = append(stat, v)
				}
			}
		}
		r := row{Part: "control", Name: fmt.Sprintf("`probability 1` to %d processes", n), Value: median(prob), Unit: "ms", Samples: prob}
		if n == 100 {
			r.Target, r.Compare, r.Verdict = "< 100 ms", fmt.Sprintf("%.2fx target", r.Value/100), verdict(r.Value < 100)
		}
		rows = append(rows, r)
		if n == 100 {
			rs := row{Part: "control", Name: "`status` over 100 processes", Value: median(stat), Unit: "ms", Samples: stat}
			rs.Target, rs.Compare, rs.Verdict = "< 200 ms", fmt.Sprintf("%.2fx target", rs.Value/200), verdict(rs.Value < 200)
			rows = append(rows, rs)
		}
		for _, c := range procs {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range procs {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				c.Process.Kill()
				<-done
			}
		}
		os.RemoveAll(dir)
	}
	printTable("4. Control plane (wall time of the CLI process, including its start; median)", rows)
}

func partStartup() {
	type sv struct {
		name string
		env  []string
		argv []string
	}
	rmaArgs := []string{b("rma"), "--ops", "1", "--quiet"}
	vs := []sv{
		{"/bin/true", nil, []string{"/bin/true"}},
		{"/bin/true + libucxfault.so", lib(), []string{"/bin/true"}},
		{"rma --ops 1", nil, rmaArgs},
		{"rma --ops 1 + libucxfault.so", lib(), rmaArgs},
	}
	runs := 10 * *reps
	progress("start-up: %d variants x %d runs", len(vs), runs)
	tm := map[string][]float64{}
	rss := map[string][]float64{}
	for r := 0; r < runs; r++ {
		for i := range vs {
			v := vs[(i+r)%len(vs)]
			c := exec.Command(v.argv[0], v.argv[1:]...)
			c.Env = append(os.Environ(), v.env...)
			t0 := time.Now()
			if err := c.Run(); err != nil {
				progress("%s: %v", v.name, err)
				continue
			}
			tm[v.name] = append(tm[v.name], float64(time.Since(t0).Microseconds())/1000)
			if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
				rss[v.name] = append(rss[v.name], float64(ru.Maxrss)/1024)
			}
		}
	}
	var rows []row
	for i, v := range vs {
		r := row{Part: "startup", Name: v.name + ": time", Value: median(tm[v.name]), Unit: "ms", Samples: tm[v.name]}
		m := row{Part: "startup", Name: v.name + ": max RSS", Value: median(rss[v.name]), Unit: "MB"}
		if i%2 == 1 {
			d := r.Value - median(tm[vs[i-1].name])
			r.Target, r.Compare, r.Verdict = "< +3 ms", fmt.Sprintf("%+.2f ms", d), verdict(d < 3)
			m.Compare = fmt.Sprintf("%+.1f MB", m.Value-median(rss[vs[i-1].name]))
		}
		rows = append(rows, r, m)
	}
	printTable(fmt.Sprintf("5. Start-up and memory (fork+exec+wait from the driver, %d interleaved runs, median)", runs), rows)
}

func main() {
	flag.Parse()
	parts := flag.Args()
	if len(parts) == 0 || (len(parts) == 1 && parts[0] == "all") {
		parts = []string{"interpose", "threads", "perftest", "observer", "watch", "control", "startup", "fork", "nonucx"}
	}
	fns := map[string]func(){"interpose": partInterpose, "perftest": partPerftest, "observer": partObserver, "control": partControl,
		"startup": partStartup, "fork": partFork, "nonucx": partNonUCX, "threads": partThreads, "watch": partWatch}
	for _, p := range parts {
		if fns[p] == nil {
			fmt.Fprintf(os.Stderr, "bench: unknown part %q (interpose threads perftest observer watch control startup fork nonucx all)\n", p)
			os.Exit(2)
		}
	}
	start := time.Now()
	for _, p := range parts {
		fmt.Fprintf(os.Stderr, "== %s\n", p)
		fns[p]()
	}
	if sockDir != "" {
		os.RemoveAll(sockDir)
	}
	host, _ := os.Hostname()
	doc := map[string]any{"date": start.UTC().Format(time.RFC3339), "host": host, "parts": parts, "reps": *reps, "results": results}
	data, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "results written to %s (%.0f s)\n", *out, time.Since(start).Seconds())
}
