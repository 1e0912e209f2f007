package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

var exampleBuilds sync.Map // name -> *cbuild

type cbuild struct {
	once sync.Once
	path string
	err  error
}

// buildExampleC compiles an example into a directory that outlives the test, once
// per test binary.
func buildExampleC(t *testing.T, name, cc string, args ...string) string {
	t.Helper()
	u := testutil.UCX(t)
	v, _ := exampleBuilds.LoadOrStore(name, &cbuild{})
	b := v.(*cbuild)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "ucxf-c-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		argv := append([]string{"-O2", "-g", "-Wall", "-Wextra", "-o", b.path}, args...)
		if cc == "gcc" {
			argv = u.GCC(argv...)
		}
		cmd := exec.Command(cc, argv...)
		cmd.Dir = testutil.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (h *harness) msg(t *testing.T) string {
	return buildExampleC(t, "msg", "gcc", "examples/msg/msg.c", "-lpthread")
}

// runProgram runs prog under the injector to completion.
func (h *harness) runProgram(t *testing.T, flags []string, prog string, args ...string) string {
	t.Helper()
	full := append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet"}, flags...)
	full = append(append(full, "--", prog), args...)
	e := testutil.StartExample(t, h.cli, full...)
	return e.Wait(t, 60*time.Second)
}

// msgOps returns the OP lines of msg's local side for fn, as key=value maps.
func msgOps(out, fn string) []map[string]string {
	var ops []map[string]string
	for _, kv := range testutil.OpFields(out) {
		if kv["fn"] == fn && kv["side"] == "local" {
			ops = append(ops, kv)
		}
	}
	return ops
}

type hookCase struct {
	hook, fn string
	args     []string
}

var msgCases = []hookCase{
	{"ucp_tag_send_nbx", "tag_send", []string{"--api", "tag"}},
	{"ucp_tag_recv_nbx", "tag_recv", []string{"--api", "tag"}},
	{"ucp_tag_send_sync_nbx", "tag_send_sync", []string{"--api", "tag", "--sync"}},
	{"ucp_stream_send_nbx", "stream_send", []string{"--api", "stream"}},
	{"ucp_stream_recv_nbx", "stream_recv", []string{"--api", "stream"}},
	{"ucp_am_send_nbx", "am_send", []string{"--api", "am"}},
	{"ucp_worker_flush_nbx", "worker_flush", []string{"--api", "tag", "--flush", "worker"}},
	{"ucp_ep_flush_nbx", "ep_flush", []string{"--api", "tag", "--flush", "ep"}},
}

var oldAPICases = []hookCase{
	{"ucp_tag_send_nb", "tag_send", []string{"--api", "tag", "--old-api"}},
	{"ucp_tag_recv_nb", "tag_recv", []string{"--api", "tag", "--old-api"}},
	{"ucp_stream_send_nb", "stream_send", []string{"--api", "stream", "--old-api"}},
	{"ucp_stream_recv_nb", "stream_recv", []string{"--api", "stream", "--old-api"}},
}

func TestEveryHookFailsAtOnce(t *testing.T) {
	h := newHarness(t)
	msg := h.msg(t)
	for _, tc := range append(append([]hookCase{}, msgCases...), oldAPICases...) {
		t.Run(tc.hook, func(t *testing.T) {
			out := h.runProgram(t, []string{"--probability", "100", "--codes", "-3", "--hooks", tc.hook}, msg,
				append([]string{"--ops", "3", "--op-timeout-ms", "300"}, tc.args...)...)
			ops := msgOps(out, tc.fn)
			if len(ops) == 0 {
				t.Fatalf("no %s operations:\n%s", tc.fn, out)
			}
			for _, op := range ops {
				if op["status"] != "-3" || op["how"] != "immediate" {
					t.Fatalf("%s with %s at 100%%: %v", tc.fn, tc.hook, op)
				}
			}
		})
	}
}

func TestDeferredFailuresArriveOnCompletion(t *testing.T) {
	h := newHarness(t)
	msg := h.msg(t)
	for _, tc := range msgCases {
		t.Run(tc.hook, func(t *testing.T) {
			statuses := map[string][]string{}
			for _, completion := range []string{"callback", "poll"} {
				out := h.runProgram(t, []string{"--mode", "deferred", "--pattern", "XO", "--codes", "-25", "--hooks", tc.hook}, msg,
					append([]string{"--ops", "6", "--op-timeout-ms", "300", "--completion", completion}, tc.args...)...)
				ops := msgOps(out, tc.fn)
				if len(ops) < 6 {
					t.Fatalf("%d %s operations:\n%s", len(ops), tc.fn, out)
				}
				for i, op := range ops[:6] {
					// UCX 1.13.1 completes a flush over self at once even
					// under UCP_OP_ATTR_FLAG_NO_IMM_CMPL: no request, so the
					// failure falls back to the return value.
					atOnce := strings.HasSuffix(tc.fn, "flush") && op["how"] == "immediate" && op["via"] == "return"
					if i%2 == 0 && (op["status"] != "-25" || !atOnce && (op["how"] != "completion" || op["via"] != completion)) {
						t.Fatalf("%s %d (%s): %v, want -25 learned on completion by %s", tc.fn, i, completion, op, completion)
					}
					statuses[completion] = append(statuses[completion], op["status"])
				}
			}
			if strings.Join(statuses["callback"], ",") != strings.Join(statuses["poll"], ",") {
				t.Fatalf("callback saw %v, polling saw %v", statuses["callback"], statuses["poll"])
			}
		})
	}
	t.Run("ucp_put_nbx", func(t *testing.T) {
		for _, completion := range []string{"callback", "poll", "callback --app-request", "poll --app-request"} {
			// With --app-request every operation reuses one request of the
			// program's own memory: a failure attached to it must end with
			// the operation, not leak into the next one.
			args := append([]string{"--ops", "10", "--seq", "put,get", "--completion"}, strings.Fields(completion)...)
			ops, out := h.run(t, []string{"--mode", "deferred", "--pattern", "XO", "--hooks", "ucp_put_nbx,ucp_get_nbx"}, args...)
			for _, fn := range []string{"put", "get"} {
				for i, op := range opsOf(ops, fn) {
					failed := op.Status != 0
					if failed != (i%2 == 0) || (failed && op.How != "completion") {
						t.Fatalf("%s %d (%s): %+v\n%s", fn, i, completion, op, out)
					}
				}
			}
		}
	})
}

func TestAMReceiveDataFailsOnlyOnCompletion(t *testing.T) {
	h := newHarness(t)
	out := h.runProgram(t, []string{"--probability", "100", "--codes", "-3", "--hooks", "ucp_am_recv_data_nbx"}, h.msg(t),
		"--api", "am", "--size", "1048576", "--ops", "3", "--op-timeout-ms", "1000")
	ops := msgOps(out, "am_recv_data")
	if len(ops) != 3 {
		t.Fatalf("%d am_recv_data operations:\n%s", len(ops), out)
	}
	for _, op := range ops {
		if op["status"] != "-3" || op["how"] != "completion" {
			t.Fatalf("am_recv_data: %v, want -3 on completion (it never fails at once)", op)
		}
	}
}

func TestRefusedAndNeverFaultedHooks(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ hook, want string }{
		{"ucp_mem_query", "never faulted"},
		{"ucp_device_mem_list_release", "never faulted"},
		{"ucp_request_free", "never faulted"},
		{"ucp_worker_progress", "never faulted"},
	} {
		r := h.ctl(t, "inject", "--hooks", tc.hook, "--", "true")
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("inject --hooks %s: exit %d, %q; want exit 2 and %q", tc.hook, r.code, r.stderr, tc.want)
		}
	}
}

func TestKillEndpointLikeADeadPeer(t *testing.T) {
	h := newHarness(t)
	// kill-ep's default is the running libucp's code for a dead TCP peer.
	dead := testutil.DeadPeerCode(testutil.UCX(t).Major, testutil.UCX(t).Minor)
	deadErr := fmt.Sprintf("EPERR thread=0 status=%d", dead)
	t.Run("error handler once, then every operation fails", func(t *testing.T) {
		e := h.start(t, []string{"--disabled"}, "--transport", "tcp", "--ops", "0", "--interval-us", "500", "--seq", "put,get,flush")
		waitFor(t, 20*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) > 30 })
		before := len(testutil.ParseOps(e.Output()))
		h.mustCtl(t, "kill-ep", "0")
		mark := len(testutil.ParseOps(e.Output()))
		waitFor(t, 20*time.Second, "operations after the kill", func() bool { return len(testutil.ParseOps(e.Output())) > mark+60 })
		st := h.status(t)[0]
		e.Cmd.Process.Signal(os.Interrupt)
		out := e.Wait(t, 30*time.Second)
		if n := strings.Count(out, deadErr); n != 1 {
			t.Fatalf("error handler called %d times with %d, want once:\n%s", n, dead, out)
		}
		ops := testutil.ParseOps(out)
		if len(failedIndices(ops[:before])) != 0 {
			t.Fatalf("operations failed before the kill: %v", failedIndices(ops[:before]))
		}
		for _, op := range ops[mark+5:] {
			if op.Status != dead || op.How != "immediate" {
				t.Fatalf("after the kill: %+v, want %d at once", op, dead)
			}
		}
		if len(st.Killed) != 1 || st.Killed[0].Endpoint != 0 || int(st.Killed[0].Code) != dead {
			t.Fatalf("status shows killed endpoints %+v", st.Killed)
		}
	})
	t.Run("another endpoint keeps working", func(t *testing.T) {
		e := h.start(t, []string{"--disabled"}, "--threads", "2", "--ops", "0", "--interval-us", "500", "--seq", "put")
		waitFor(t, 20*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) > 20 })
		// A kill that fails changes nothing and does not stand in the way
		// of the next one.
		if r := h.ctl(t, "kill-ep", "7"); r.code != 1 || !strings.Contains(r.stderr, "no endpoint 7") {
			t.Fatalf("kill-ep 7 of a process with two endpoints: exit %d, %q", r.code, r.stderr)
		}
		if st := h.status(t)[0]; len(st.Killed) != 0 {
			t.Fatalf("a failed kill-ep left killed endpoints %+v", st.Killed)
		}
		h.mustCtl(t, "kill-ep", "1", "--code", "CONNECTION_RESET")
		mark := len(testutil.ParseOps(e.Output()))
		waitFor(t, 20*time.Second, "operations after the kill", func() bool { return len(testutil.ParseOps(e.Output())) > mark+100 })
		e.Cmd.Process.Signal(os.Interrupt)
		ops := testutil.ParseOps(e.Wait(t, 30*time.Second))
		failedBy := map[int]int{}
		after := map[int]int{}
		for _, op := range ops[mark+10:] {
			after[op.Thread]++
			if op.Status == -25 {
				failedBy[op.Thread]++
			}
		}
		dead, alive := 0, 0
		for th, n := range after {
			switch failedBy[th] {
			case n:
				dead++
			case 0:
				alive++
			}
		}
		if dead != 1 || alive != 1 {
			t.Fatalf("after killing endpoint 1: per-thread ops %v, failed %v; want one thread all -25, the other none", after, failedBy)
		}
	})
	for _, completion := range []string{"poll", "callback"} {
		t.Run("requests in flight complete with the code, "+completion, func(t *testing.T) {
			// Each get's request is held unprogressed for 200 ms, so the
			// kill almost always arrives while one is in flight; when it
			// lands between two operations instead, try again.
			for attempt := 1; attempt <= 3; attempt++ {
				e := h.start(t, []string{"--mode", "deferred", "--probability", "0", "--hooks", "ucp_get_nbx"},
					"--transport", "tcp", "--ops", "0", "--seq", "get", "--size", "65536", "--hold-us", "200000",
					"--completion", completion)
				waitFor(t, 20*time.Second, "operations", func() bool { return len(testutil.ParseOps(e.Output())) >= 2 })
				h.mustCtl(t, "kill-ep", "0")
				mark := len(testutil.ParseOps(e.Output()))
				waitFor(t, 20*time.Second, "operations after the kill", func() bool { return len(testutil.ParseOps(e.Output())) >= mark+3 })
				st := h.status(t)[0]
				e.Cmd.Process.Signal(os.Interrupt)
				out := e.Wait(t, 30*time.Second)
				ops := testutil.ParseOps(out)
				if len(failedIndices(ops[:mark])) != 0 {
					t.Fatalf("operations failed before the kill: %v\n%s", failedIndices(ops[:mark]), out)
				}
				first := ops[mark]
				if first.Status == dead && first.How == "immediate" && st.KilledRequests == 0 {
					t.Logf("attempt %d: the kill came between two operations; again", attempt)
					continue
				}
				if first.Status != dead || first.How != "completion" {
					t.Fatalf("the get in flight at the kill: %+v, want %d on completion\n%s", first, dead, out)
				}
				for _, op := range ops[mark+1:] {
					if op.Status != dead || op.How != "immediate" {
						t.Fatalf("after the kill: %+v, want %d at once\n%s", op, dead, out)
					}
				}
				if st.KilledRequests != 1 {
					t.Fatalf("status killed_requests = %d, want 1", st.KilledRequests)
				}
				if n := strings.Count(out, deadErr); n != 1 {
					t.Fatalf("error handler called %d times with %d, want once:\n%s", n, dead, out)
				}
				return
			}
			t.Fatal("in three attempts the kill never arrived while a request was in flight")
		})
	}
	if r := h.ctl(t, "kill-ep", "x"); r.code != 2 {
		t.Fatalf("kill-ep x: exit %d", r.code)
	}
}

func TestPluginOpenedLocalIsFaultedDeepbindIsReported(t *testing.T) {
	h := newHarness(t)
	plugin := buildExampleC(t, "plugin.so", "gcc", "-shared", "-fPIC", "examples/plugin/plugin.c")
	loader := buildExampleC(t, "loader", "gcc", "examples/plugin/loader.c", "-ldl")
	out := h.runProgram(t, []string{"--probability", "100", "--codes", "-6", "--hooks", "ucp_put_nbx"}, loader,
		"--mode", "local", "--ops", "5", plugin)
	puts := opsOf(testutil.ParseOps(out), "put")
	if len(puts) != 5 || len(failedIndices(puts)) != 5 {
		t.Fatalf("plugin opened RTLD_LOCAL: puts %+v, want 5 failed\n%s", puts, out)
	}
	// The loader dlcloses the plugin (and so libucp) before it exits: the
	// exit summary, with its seed, is still written.
	summary := filepath.Join(t.TempDir(), "summary.log")
	sum := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "100",
		"--hooks", "ucp_put_nbx", "--seed", "9", "--", loader, "--mode", "local", "--ops", "5", plugin)
	sum.Env = append(os.Environ(), "UCX_FAULT_SUMMARY_FILE="+summary)
	if b, err := sum.CombinedOutput(); err != nil {
		t.Fatalf("summary run: %v\n%s", err, b)
	}
	if b, _ := os.ReadFile(summary); !strings.Contains(string(b), "exit: 5 faults in ") || !strings.Contains(string(b), "seed 9,") {
		t.Fatalf("exit summary of a run whose plugin was dlclosed: %q, want 5 faults and seed 9", b)
	}
	cmd := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "100",
		"--hooks", "ucp_put_nbx", "--", loader, "--mode", "deepbind", "--ops", "5", plugin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("deepbind run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "RTLD_DEEPBIND") || !strings.Contains(stderr.String(), "bypass the injector") {
		t.Fatalf("a RTLD_DEEPBIND plugin was not reported:\n%s", stderr.String())
	}
	if n := len(failedIndices(testutil.ParseOps(stdout.String()))); n != 0 {
		t.Fatalf("deepbind: %d failures; its calls cannot be reached", n)
	}
}

// TestTwoLibucpCopiesEachCallToItsOwn maps two libucp files, as a Python
// wheel with its own bundled UCX does next to the system's: the second is a
// copy renamed the way wheels rename it, and each plugin links one. Every
// hooked call must reach the copy its caller is linked with.
func TestTwoLibucpCopiesEachCallToItsOwn(t *testing.T) {
	h := newHarness(t)
	u := testutil.UCX(t)
	sysPath, err := filepath.EvalSymlinks(filepath.Join(u.LibDir, "libucp.so.0"))
	if err != nil {
		t.Fatalf("libucp.so.0 not found: %v", err)
	}
	data, err := os.ReadFile(sysPath)
	if err != nil {
		t.Fatal(err)
	}
	// Same length, so the ELF stays valid: only the soname changes.
	renamed := bytes.Replace(data, []byte("libucp.so.0\x00"), []byte("libucp-2.so\x00"), 1)
	if bytes.Equal(renamed, data) {
		t.Fatalf("%s has no soname libucp.so.0", sysPath)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "libucp-2.so")
	if err := os.WriteFile(copyPath, renamed, 0o755); err != nil {
		t.Fatal(err)
	}
	plugin1 := buildExampleC(t, "plugin.so", "gcc", "-shared", "-fPIC", "examples/plugin/plugin.c")
	plugin2 := filepath.Join(dir, "plugin2.so")
	argv := append(append([]string{}, u.CFlags...), "-O2", "-g", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", plugin2,
		"examples/plugin/plugin.c", "-L"+dir, "-l:libucp-2.so", "-L"+u.LibDir, "-lucs", "-Wl,-rpath,"+dir)
	cmd := exec.Command("gcc", argv...)
	cmd.Dir = testutil.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building plugin2: %v\n%s", err, out)
	}
	loader := buildExampleC(t, "loader", "gcc", "examples/plugin/loader.c", "-ldl")
	e := testutil.StartExample(t, h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "100",
		"--codes", "-6", "--hooks", "ucp_put_nbx", "--", loader, "--mode", "local", "--ops", "5", "--linger-ms", "20000", plugin1, plugin2)
	waitFor(t, 30*time.Second, "both plugins", func() bool { return strings.Contains(e.Output(), "DONE") })
	st := h.status(t)[0]
	e.Cmd.Process.Signal(os.Interrupt)
	out := e.Wait(t, 30*time.Second)
	for _, p := range []string{plugin1, plugin2} {
		if !strings.Contains(out, "PLUGIN "+p+" failed=5") {
			t.Fatalf("%s: want its 5 puts failed\n%s", p, out)
		}
	}
	calls := map[string]uint64{}
	for _, c := range st.LibucpCopies {
		real, err := filepath.EvalSymlinks(c.Path)
		if err != nil {
			real = c.Path
		}
		calls[real] = c.Calls
	}
	if len(st.LibucpCopies) != 2 || calls[sysPath] == 0 || calls[copyPath] == 0 {
		t.Fatalf("calls routed per copy %+v; want calls to both %s and %s (warnings %q)", st.LibucpCopies, sysPath, copyPath, st.Warnings)
	}
	// status names both files, each with the version it reports.
	if len(st.Libucp) != 2 || st.Libucp[0].Version != u.Version || st.Libucp[1].Version != u.Version {
		t.Fatalf("status libucp %+v; want both copies with version %s", st.Libucp, u.Version)
	}
}

func TestOpenMPIOverUCX(t *testing.T) {
	testutil.RequireMPI(t)
	h := newHarness(t)
	ring := buildExampleC(t, "ring", "mpicc", "examples/mpi/ring.c")
	mpirun := func(flags ...string) (string, error) {
		args := []string{"--allow-run-as-root", "--oversubscribe", "-np", "2", "--mca", "pml", "ucx", "--mca", "osc", "ucx",
			"--mca", "pml_ucx_tls", "any", "--mca", "pml_ucx_devices", "any",
			h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet"}
		args = append(append(args, flags...), "--", ring)
		cmd := exec.Command("mpirun", args...)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
			return string(out), fmt.Errorf("mpirun did not end within 60 s (the program hung)")
		}
		return string(out), err
	}
	out, err := mpirun("--probability", "0")
	if err != nil || !strings.Contains(out, "RING-OK") {
		t.Fatalf("MPI ring without faults: %v\n%s", err, out)
	}
	// Every tag send from the 20th on fails. (Failing the first ones, which
	// MPI_Win_allocate makes, crashes Open MPI 4.1.4's osc/ucx with SIGSEGV
	// in its error path: a finding, not what this test is about.)
	out, err = mpirun("--rule", "hooks=ucp_tag_send_nbx calls=20.. prob=100")
	if err == nil || !strings.Contains(out, "MPIERR") {
		t.Fatalf("MPI ring with every tag send failed: err %v, want an MPI error and a non-zero exit\n%s", err, out)
	}
}

// TestPerftestRunsUnchangedUnderTheInjector: UCX's own benchmark runs to the
// end under the injector with no fault set. The injector's debug lines prove
// it loaded in both processes and found their libucp (the control socket is
// opened only then); without them an exit status of 0 proves nothing.
func TestPerftestRunsUnchangedUnderTheInjector(t *testing.T) {
	u := testutil.UCX(t)
	perftest := u.Tool("ucx_perftest")
	if perftest == "" {
		t.Skipf("no ucx_perftest in %s (install ucx-utils: make deps)", u.BinDir)
	}
	h := newHarness(t)
	loaded := func(who string, pid int, out string) {
		t.Helper()
		for _, want := range []string{fmt.Sprintf("ucxfault[%d]: loaded: enabled=true", pid),
			fmt.Sprintf("ucxfault[%d]: control socket %s", pid, h.socketOf(pid))} {
			if !strings.Contains(out, want) {
				t.Errorf("ucx_perftest %s: the injector did not say %q, so it did not load or did not find libucp:\n%s", who, want, out)
			}
		}
	}
	for i, test := range []string{"tag_bw", "ucp_put_bw", "ucp_am_bw"} {
		port := strconv.Itoa(13337 + i + os.Getpid()%1000)
		var serverOut bytes.Buffer
		server := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--debug", "--", perftest, "-p", port)
		server.Stdout, server.Stderr = &serverOut, &serverOut
		if err := server.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		client := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--debug", "--",
			perftest, "127.0.0.1", "-p", port, "-t", test, "-s", "8", "-n", "20000")
		out, err := client.CombinedOutput()
		server.Process.Kill()
		server.Wait()
		if err != nil {
			t.Fatalf("ucx_perftest -t %s under the injector: %v\n%s", test, err, out)
		}
		loaded("client -t "+test, client.Process.Pid, string(out))
		loaded("server -t "+test, server.Process.Pid, serverOut.String())
	}
}

// TestObserverRecordsTheNewHooks: the observer probes every row of the
// table, so tag, stream and active-message calls of an uninstrumented
// program are recorded one for one with what it printed.
func TestObserverRecordsTheNewHooks(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	msg := h.msg(t)
	for _, tc := range []struct {
		api string
		fns map[string]string // printed fn -> recorded function
	}{
		{"tag", map[string]string{"tag_send": "ucp_tag_send_nbx", "tag_recv": "ucp_tag_recv_nbx"}},
		{"stream", map[string]string{"stream_send": "ucp_stream_send_nbx", "stream_recv": "ucp_stream_recv_nbx"}},
		{"am", map[string]string{"am_send": "ucp_am_send_nbx"}},
	} {
		t.Run(tc.api, func(t *testing.T) {
			e := testutil.StartExample(t, msg, "--api", tc.api, "--ops", "12", "--wait-before-start-ms", "60000")
			p := h.observe(t, e)
			out := e.Wait(t, 30*time.Second)
			if !p.Complete {
				t.Fatalf("recording incomplete: %+v", p.Lost)
			}
			for printed, fn := range tc.fns {
				ops, calls := msgOps(out, printed), callsOf(p, fn)
				if len(ops) != 12 || len(calls) != 12 {
					t.Fatalf("%s: the program printed %d, the observer recorded %d %s calls, want 12", printed, len(ops), len(calls), fn)
				}
				for i, c := range calls {
					if c.Status != 0 || c.Size != 8 {
						t.Fatalf("%s call %d: %+v", fn, i, c)
					}
				}
			}
		})
	}
}
