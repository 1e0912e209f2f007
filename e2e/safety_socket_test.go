package e2e

// Safety of the control channel: who may connect, stale and reused sockets,
// answers from the right process, the connection limit.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// ---------------------------------------------------------------------------
// The control channel

func TestSafetyPeerCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) not found")
	}
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	sock := h.socketOf(e.PID)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, want a socket with mode 0600", fi.Mode())
	}

	// Let user nobody reach the directory and run a copy of the CLI.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(h.dir, "ucxfault-cli")
	data, err := os.ReadFile(h.cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cli, data, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(caps bool, args ...string) ctlResult {
		t.Helper()
		argv := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
		if caps {
			// CAP_DAC_OVERRIDE gets past the socket's mode: what is
			// left to refuse the peer is its credentials.
			argv = append(argv, "--inh-caps=+dac_override", "--ambient-caps=+dac_override")
		}
		argv = append(argv, cli, "--socket-dir", h.dir)
		cmd := exec.Command("setpriv", append(argv, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running the CLI as nobody: %v", err)
		}
		return ctlResult{stdout: out.String(), stderr: errb.String(), code: code}
	}

	// The file mode alone keeps another user out.
	r := asNobody(false, "probability", "100")
	if r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("nobody without privileges: exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}
	// Past the mode, the peer's credentials refuse it, every time.
	for i := 0; i < 4; i++ {
		r := asNobody(true, "probability", "100")
		if r.code != 1 || !strings.Contains(r.stderr, "permission denied: uid 65534 may not control this process") {
			t.Fatalf("nobody with CAP_DAC_OVERRIDE, attempt %d: exit %d, stderr %q; want a refusal by credentials", i, r.code, r.stderr)
		}
	}
	// Nothing changed, the host runs on, and root still controls it.
	st := h.status(t)
	if len(st) != 1 || st[0].Probability != 0 {
		t.Fatalf("a refused peer changed the process: %+v", st)
	}
	stillRunning(t, e)
	const logged = "refused a control connection from uid 65534"
	if n := strings.Count(e.Stderr(), logged); n != 1 {
		t.Fatalf("the refusal appears %d times in the host's stderr, want once:\n%s", n, e.Stderr())
	}
}

// TestSafetyFileBackendCommandFile: with the file backend, a command file
// that another user owns (planted in a shared directory) is not obeyed;
// the refusal is logged once, and the user's own file works.
func TestSafetyFileBackendCommandFile(t *testing.T) {
	testutil.RequireRoot(t)
	h := newHarness(t)
	env := []string{"UCX_FAULT_IPC_BACKEND=file"}
	planted := filepath.Join(h.dir, "ucx-fault-commands.jsonl")
	if err := os.WriteFile(planted, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(planted, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.cli, h.injectArgs([]string{"--probability", "0"}, "--ops", "0", "--interval-us", "500", "--seq", "put")...)
	cmd.Env = append(os.Environ(), env...)
	e := testutil.StartCmd(t, cmd)
	waitFor(t, 5*time.Second, "the state file", func() bool {
		_, err := os.Stat(control.StateFile(h.dir, e.PID))
		return err == nil
	})
	for i := 0; i < 3; i++ {
		f, err := os.OpenFile(planted, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, `{"v":1,"cmd":"probability","probability":100}`+"\n")
		f.Close()
		time.Sleep(250 * time.Millisecond)
	}
	if f := failedIndices(testutil.ParseOps(e.Output())); len(f) != 0 {
		t.Fatalf("a command file owned by another user was obeyed: ops failed at %v", f[:min(len(f), 10)])
	}
	if n := strings.Count(e.Stderr(), "command file is owned by uid 65534"); n != 1 {
		t.Fatalf("the refusal appears %d times in the host's stderr, want once:\n%s", n, e.Stderr())
	}
	// Links planted under the names the injector and the CLI write are
	// never followed.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(planted)
	state := control.StateFile(h.dir, e.PID)
	for _, link := range []string{planted, state, state + ".tmp"} {
		os.Remove(link)
		if err := os.Symlink(victim, link); err != nil {
			t.Fatal(err)
		}
	}
	if r := h.ctlEnv(t, env, "probability", "100"); r.code == 0 || !strings.Contains(r.stderr, "opening command file") {
		t.Fatalf("the CLI wrote through a planted link: %+v", r)
	}
	waitFor(t, 5*time.Second, "the state file to be rewritten", func() bool {
		fi, err := os.Lstat(state)
		return err == nil && fi.Mode().IsRegular()
	})
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("a planted link was followed: the victim file now holds %q", b)
	}

	// The user's own command file is obeyed.
	os.Remove(planted)
	if r := h.ctlEnv(t, env, "probability", "100"); r.code != 0 {
		t.Fatalf("probability through the user's own command file: %+v", r)
	}
	m := len(testutil.ParseOps(e.Output()))
	waitFor(t, 10*time.Second, "failures after the command", func() bool {
		ops := testutil.ParseOps(e.Output())
		return len(ops) > m+20 && ops[len(ops)-1].Status != 0
	})
}

func TestSafetyStaleSocketOfKilledProcess(t *testing.T) {
	h := newHarness(t)
	live := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	dead := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	dead.Cmd.Process.Kill()
	<-dead.Done()
	if _, err := os.Stat(h.socketOf(dead.PID)); err != nil {
		t.Fatalf("SIGKILL should leave the socket behind (nothing runs at exit): %v", err)
	}
	st, r := h.statusJSON(t)
	if r.code != 0 || len(st) != 1 || st[0].PID != live.PID {
		t.Fatalf("status with a stale socket: exit %d, %d statuses, stderr %q", r.code, len(st), r.stderr)
	}
	if want := fmt.Sprintf("removed stale socket of dead process %d", dead.PID); !strings.Contains(r.stderr, want) {
		t.Fatalf("status did not say %q: %q", want, r.stderr)
	}
	if _, err := os.Stat(h.socketOf(dead.PID)); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there (stat: %v)", err)
	}
}

// A live process that does not answer in time (here: stopped) is reported
// as not answering and keeps its socket; commands given --pid look at that
// pid's socket only, and leave a stale socket of another process alone.
func TestSafetyLiveProcessKeepsItsSocket(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	waitFor(t, 10*time.Second, "the control socket", func() bool {
		_, err := os.Stat(h.socketOf(e.PID))
		return err == nil
	})
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	stale := h.socketOf(gone.Process.Pid)
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	if err := syscall.Kill(e.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// kill(2) returns before every thread has stopped: wait until each
	// one (the control plane's too) shows state T.
	waitFor(t, 10*time.Second, "every thread stopped", func() bool {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", e.PID))
		for _, p := range stats {
			b, err := os.ReadFile(p)
			if err != nil {
				return false
			}
			if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) == 0 || f[0] != "T" {
				return false
			}
		}
		return len(stats) > 0
	})
	r := h.ctl(t, "status", "--pid", strconv.Itoa(e.PID), "--timeout", "300ms")
	syscall.Kill(e.PID, syscall.SIGCONT)
	if want := fmt.Sprintf("pid %d: not answering", e.PID); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("status of a stopped process: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	if strings.Contains(r.stderr, strconv.Itoa(gone.Process.Pid)) {
		t.Fatalf("status --pid %d spoke of another pid's socket: %q", e.PID, r.stderr)
	}
	for _, p := range []string{h.socketOf(e.PID), stale} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("status --pid removed %s: %v", p, err)
		}
	}
	if st := h.status(t, "--pid", strconv.Itoa(e.PID)); len(st) != 1 || st[0].PID != e.PID {
		t.Fatalf("status --pid after SIGCONT: %+v", st)
	}
	// Without --pid the directory is swept: the stale socket goes.
	if r := h.ctl(t, "status"); r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("removed stale socket of dead process %d", gone.Process.Pid)) {
		t.Fatalf("status: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestSafetySocketOfReusedPid(t *testing.T) {
	h := newHarness(t)
	// A live process that was never injected, and a socket file named for
	// its pid that nobody listens on: what a SIGKILLed injected process
	// leaves when its pid is handed to another program.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	path := h.socketOf(other.Process.Pid)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	// The socket is younger than the process: for all the CLI can tell, a
	// live process between creating its socket and listening on it. It is
	// reported as not answering and kept.
	r := h.ctl(t, "status")
	if want := fmt.Sprintf("pid %d: not answering", other.Process.Pid); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("status with a socket younger than its live pid: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the socket of a live process that does not answer was removed: %v", err)
	}
	// Created before the process started: the pid was reused, and the
	// socket is stale.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	r = h.ctl(t, "status")
	want := fmt.Sprintf("removed stale socket of dead process %d", other.Process.Pid)
	if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "after the socket was created") {
		t.Fatalf("status: exit %d, stderr %q; want %q (pid reused after the socket was created)", r.code, r.stderr, want)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there (stat: %v)", err)
	}
	if r := h.ctl(t, "status"); r.code != 1 || !strings.Contains(r.stderr, "no injected process found") {
		t.Fatalf("second status: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestSafetyAnswerFromAnotherProcess: a socket answered by a process that
// does not hold the socket's pid here is never reported as that pid's, and
// is not removed (someone live answers on it).
func TestSafetyAnswerFromAnotherProcess(t *testing.T) {
	t.Run("linked socket", func(t *testing.T) {
		h := newHarness(t)
		e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
		other := exec.Command("sleep", "60")
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Process.Kill(); other.Wait() })
		if err := os.Link(h.socketOf(e.PID), h.socketOf(other.Process.Pid)); err != nil {
			t.Fatal(err)
		}
		st, r := h.statusJSON(t)
		if r.code != 1 || len(st) != 1 || st[0].PID != e.PID {
			t.Fatalf("status: exit %d, statuses %+v; want exit 1 and only pid %d", r.code, st, e.PID)
		}
		want := fmt.Sprintf("pid %d: control socket answered by another process", other.Process.Pid)
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("status stderr %q, want %q", r.stderr, want)
		}
		// A command's answer carries no status, only the identity: it
		// is checked the same way.
		r = h.ctl(t, "probability", "5")
		want = fmt.Sprintf("pid %d: control socket answered by another process", other.Process.Pid)
		if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stdout, fmt.Sprintf("pid %d: strategy random", e.PID)) ||
			strings.Contains(r.stdout, fmt.Sprintf("pid %d:", other.Process.Pid)) {
			t.Fatalf("probability: exit %d, stdout %q, stderr %q; want pid %d's answer only, and %q", r.code, r.stdout, r.stderr, e.PID, want)
		}
		if _, err := os.Stat(h.socketOf(e.PID)); err != nil {
			t.Fatalf("the live process's socket was removed: %v", err)
		}
	})
	t.Run("pid namespace", func(t *testing.T) {
		testutil.RequireRoot(t)
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Fatal("unshare (util-linux) not found")
		}
		h := newHarness(t)
		// In a pid namespace of its own, under the host's /proc, the
		// injected program is pid 1: its socket is ucx-fault-1.sock, and
		// pid 1 here is init.
		cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child",
			h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "0",
			"--", h.rma, "--ops", "0", "--interval-us", "1000", "--seq", "put")
		// UCX's shared memory transport finds its peer through
		// /proc/<pid>, which names another process here.
		cmd.Env = append(os.Environ(), "UCX_TLS=self")
		e := testutil.StartCmd(t, cmd)
		if e.PID != 1 {
			t.Fatalf("the program in the new pid namespace is pid %d, want 1", e.PID)
		}
		waitFor(t, 10*time.Second, "the socket", func() bool {
			_, err := os.Stat(h.socketOf(1))
			return err == nil
		})
		st, r := h.statusJSON(t)
		if r.code != 1 || len(st) != 0 {
			t.Fatalf("status: exit %d, statuses %+v; want exit 1 and none (pid 1 here is not the program)", r.code, st)
		}
		if !strings.Contains(r.stderr, "pid 1: control socket answered by another process") ||
			!strings.Contains(r.stderr, "pid namespace") {
			t.Fatalf("status stderr %q, want a start-time mismatch for pid 1", r.stderr)
		}
		// A command is refused the same way (it reached the program,
		// whose answer does not count as pid 1's), and the live socket stays.
		r = h.ctl(t, "probability", "5")
		if r.code != 1 || !strings.Contains(r.stderr, "answered by another process") {
			t.Fatalf("probability: exit %d, stderr %q", r.code, r.stderr)
		}
		if _, err := os.Stat(h.socketOf(1)); err != nil {
			t.Fatalf("the socket of a live process was removed: %v", err)
		}
		stillRunning(t, e)
	})
}

func TestSafetyConnectionLimit(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	path := h.socketOf(e.PID)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dialing: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// A client that connects and sends nothing holds up no one.
	idle := dial()
	// And one that sends half a line.
	half := dial()
	io.WriteString(half, `{"v":1,"cmd":"sta`)
	start := time.Now()
	h.status(t)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("status took %v beside idle clients", d)
	}

	// The slots fill up to control.MaxConnections; the next one is told so.
	conns := []net.Conn{idle, half}
	for len(conns) < control.MaxConnections {
		conns = append(conns, dial())
	}
	extra := dial()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, _ := bufio.NewReader(extra).ReadString('\n')
	want := fmt.Sprintf("busy: %d control connections already open", control.MaxConnections)
	if !strings.Contains(resp, `"ok":false`) || !strings.Contains(resp, want) {
		t.Fatalf("connection %d: response %q, want %q", control.MaxConnections+1, resp, want)
	}
	if r := h.ctl(t, "status"); r.code != 1 || !strings.Contains(r.stderr, "busy") {
		t.Fatalf("status with every slot taken: exit %d, stderr %q", r.code, r.stderr)
	}
	stillRunning(t, e)

	// Slots come back when clients leave.
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 10*time.Second, "a free slot", func() bool { return h.ctl(t, "status").code == 0 })
}
