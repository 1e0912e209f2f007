package e2e

// Where the control sockets live and who answers on them: the private
// directory of each user, an impostor of another user who squats the name
// of a future process's socket, a planted private directory, the original
// tool's layout in /tmp, and MPI jobs with the default.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// TestSocketDirDefault: without --socket-dir, `ucxfault inject` and the
// CLI meet in the user's private directory: $XDG_RUNTIME_DIR/ucxfault, else
// /tmp/ucxfault-<uid>, made with mode 0700. The original tool's layout is
// still there with --socket-dir /tmp.
func TestSocketDirDefault(t *testing.T) {
	t.Run("xdg", func(t *testing.T) {
		h := newDefaultHarness(t)
		e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
		checkPrivateSocket(t, h.dir, e.PID)
		if st := h.status(t); len(st) != 1 || st[0].PID != e.PID || st[0].UID != os.Geteuid() {
			t.Fatalf("status by default: %+v, want pid %d of uid %d", st, e.PID, os.Geteuid())
		}
		h.mustCtl(t, "probability", "100")
		waitFor(t, 10*time.Second, "failures after probability 100", func() bool {
			ops := testutil.ParseOps(e.Output())
			return len(ops) > 0 && ops[len(ops)-1].Status != 0
		})
	})
	t.Run("tmp", func(t *testing.T) {
		// No XDG_RUNTIME_DIR: /tmp/ucxfault-<uid>, which other programs
		// of this user (other tests) may share: commands name the pid.
		h := newHarness(t)
		h.byDefault = true
		t.Setenv("XDG_RUNTIME_DIR", "")
		t.Setenv(control.EnvSocketDir, "")
		h.dir = control.TmpPrivateDir(os.Geteuid())
		e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
		checkPrivateSocket(t, h.dir, e.PID)
		pid := strconv.Itoa(e.PID)
		if st := h.status(t, "--pid", pid); len(st) != 1 || st[0].PID != e.PID {
			t.Fatalf("status --pid %s: %+v", pid, st)
		}
		if out := h.mustCtl(t, "--pid", pid, "probability", "5"); !strings.Contains(out, "pid "+pid+": strategy random") {
			t.Fatalf("probability: %q", out)
		}
	})
	t.Run("original layout", func(t *testing.T) {
		h := newHarness(t)
		h.dir = "/tmp"
		e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
		sock := h.socketOf(e.PID)
		if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket %s: %v (%v), want a socket of mode 0600", sock, fi, err)
		}
		pid := strconv.Itoa(e.PID)
		if st := h.status(t, "--pid", pid); len(st) != 1 || st[0].PID != e.PID {
			t.Fatalf("--socket-dir /tmp status --pid %s: %+v", pid, st)
		}
		h.mustCtl(t, "--pid", pid, "probability", "5")
	})
}

// checkPrivateSocket checks that dir is a private directory (0700, ours)
// holding pid's socket.
func checkPrivateSocket(t *testing.T, dir string, pid int) {
	t.Helper()
	waitFor(t, 10*time.Second, "the socket in the private directory", func() bool {
		_, err := os.Stat(control.SocketPath(dir, pid))
		return err == nil
	})
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Fatalf("private directory %s: %v (%v), want a directory of mode 0700 owned by uid %d", dir, fi.Mode(), err, os.Geteuid())
	}
}

// testUser returns the uid and gid of a system user made for these tests
// (useradd), made on first use.
func testUser(t *testing.T, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "already exists") {
			t.Fatalf("useradd %s: %v\n%s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// asUser runs cmd as uid:gid with no supplementary groups.
func asUser(cmd *exec.Cmd, uid, gid int) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd
}

// sharedCopies copies the CLI, the library and the example into a
// directory every user may read, for the test users to run.
func sharedCopies(t *testing.T, h *harness) (cli, lib, rma string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ucxf-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cp := func(src string) string {
		dst := filepath.Join(dir, filepath.Base(src))
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	return cp(h.cli), cp(h.lib), cp(h.rma)
}

// cleanEnv is the environment of the test users' processes: no
// XDG_RUNTIME_DIR nor socket directory of root's, so that they use their
// default, /tmp/ucxfault-<uid>.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "XDG_RUNTIME_DIR", control.EnvSocketDir, "HOME", "LD_PRELOAD":
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "HOME=/tmp", "UCX_WARN_UNUSED_ENV_VARS=n"), extra...)
}

// runCLI runs cli with args as uid:gid (root when uid is 0).
func runCLI(t *testing.T, cli string, uid, gid int, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command(cli, args...)
	if uid != 0 {
		asUser(cmd, uid, gid)
	}
	cmd.Env = cleanEnv()
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running ucxfault %v: %v", args, err)
	}
	return ctlResult{stdout: out.String(), stderr: errb.String(), code: code}
}

// heldProgram is the example, preloaded by hand, started by a shell that
// waits for a line on its stdin and then execs it: the program gets the
// shell's pid, known before the program starts.
type heldProgram struct {
	cmd     *exec.Cmd
	release io.WriteCloser
	out     *syncBuffer
	errb    *syncBuffer
	pid     int
}

func holdProgram(t *testing.T, uid, gid int, lib, rma string, env ...string) *heldProgram {
	t.Helper()
	cmd := exec.Command("sh", "-c", `read go; exec env "$@"`, "sh", "LD_PRELOAD="+lib, "UCX_FAULT_ENABLED=1", "UCX_FAULT_PROBABILITY=0",
		rma, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	if uid != 0 {
		asUser(cmd, uid, gid)
	}
	cmd.Env = cleanEnv(env...)
	p := &heldProgram{cmd: cmd, out: &syncBuffer{}, errb: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.errb
	var err error
	if p.release, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = cmd.Process.Pid
	t.Cleanup(func() {
		p.release.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// run lets the program start and waits for its READY line, under the
// shell's pid.
func (p *heldProgram) run(t *testing.T) {
	t.Helper()
	io.WriteString(p.release, "go\n")
	waitFor(t, 30*time.Second, "the program's READY line", func() bool {
		return lineValue(p.out.String(), "READY", "pid") != ""
	})
	if got := lineValue(p.out.String(), "READY", "pid"); got != strconv.Itoa(p.pid) {
		t.Fatalf("the program is pid %s, want the shell's %d", got, p.pid)
	}
}

func (p *heldProgram) ops() []testutil.Op { return testutil.ParseOps(p.out.String()) }

// impostorScript listens on argv[1] and answers every connection with a
// forged success that claims to be pid argv[2] (with start time 0, which
// the identity check alone lets pass: a process that could not read its
// own start time sends 0), as the original tool's answers looked.
const impostorScript = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.listen(16)
print("listening", flush=True)
forged = b'{"v":1,"ok":true,"message":"forged","identity":{"pid":%d,"start_time":0}}\n' % int(sys.argv[2])
while True:
    c, _ = s.accept()
    try:
        c.sendall(forged)
    except OSError:
        pass
    c.close()
`

// startImpostor runs impostorScript as uid:gid on path, claiming pid.
func startImpostor(t *testing.T, uid, gid int, path string, pid int) int {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Fatal("python3 not found (the impostor is a python script)")
		}
	}
	cmd := asUser(exec.Command(py, "-c", impostorScript, path, strconv.Itoa(pid)), uid, gid)
	cmd.Env = cleanEnv()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(path)
	})
	waitFor(t, 10*time.Second, "the impostor to listen", func() bool { return strings.Contains(out.String(), "listening") })
	return cmd.Process.Pid
}

// TestSocketDirImpostor: another user listens on /tmp/ucx-fault-<pid>.sock
// before an injected program of that pid starts (what squatted the
// original tool's socket and answered in its place). For an ordinary
// user's program and for root's: the program gets a working control socket
// in its private directory, the CLI reaches the real program, and the
// impostor, reached on purpose through --socket-dir /tmp, is refused and
// named, with exit 1.
func TestSocketDirImpostor(t *testing.T) {
	testutil.RequireRoot(t)
	h := newHarness(t)
	cli, lib, rma := sharedCopies(t, h)
	iuid, igid := testUser(t, "ucxf-impostor")
	vuid, vgid := testUser(t, "ucxf-victim")
	for _, tc := range []struct {
		name     string
		uid, gid int
	}{{"user", vuid, vgid}, {"root", 0, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			p := holdProgram(t, tc.uid, tc.gid, lib, rma)
			squat := control.SocketPath("/tmp", p.pid)
			os.Remove(squat) // a dead socket of an earlier process of this pid
			imp := startImpostor(t, iuid, igid, squat, p.pid)
			p.run(t)
			dir := control.TmpPrivateDir(tc.uid)
			waitFor(t, 10*time.Second, "the program's socket in its private directory", func() bool {
				_, err := os.Stat(control.SocketPath(dir, p.pid))
				return err == nil
			})
			if strings.Contains(p.errb.String(), "control socket off") || strings.Contains(p.errb.String(), "control plane off") {
				t.Fatalf("the program's control plane is off:\n%s", p.errb)
			}
			pid := strconv.Itoa(p.pid)

			// The impostor, reached on purpose: refused, named, exit 1,
			// and nothing of its answer printed as the program's.
			r := runCLI(t, cli, tc.uid, tc.gid, "--socket-dir", "/tmp", "--pid", pid, "probability", "100")
			if r.code != 1 || !strings.Contains(r.stderr, "impostor") || !strings.Contains(r.stderr, fmt.Sprintf("pid %d (uid %d)", imp, iuid)) ||
				strings.Contains(r.stdout+r.stderr, "forged") {
				t.Fatalf("probability through the impostor: exit %d, stdout %q, stderr %q; want exit 1 naming pid %d of uid %d as an impostor", r.code, r.stdout, r.stderr, imp, iuid)
			}
			r = runCLI(t, cli, tc.uid, tc.gid, "--socket-dir", "/tmp", "--pid", pid, "status", "-o", "json")
			if r.code != 1 || !strings.Contains(r.stderr, "impostor") || strings.TrimSpace(r.stdout) != "[]" {
				// JSON listings print [] when no process answered.
				t.Fatalf("status through the impostor: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if f := failedOps(p.ops()); f != 0 {
				t.Fatalf("%d operations failed after commands that were refused", f)
			}

			// The program, reached by default: its owner's CLI works.
			r = runCLI(t, cli, tc.uid, tc.gid, "--pid", pid, "probability", "100")
			if r.code != 0 || !strings.Contains(r.stdout, "pid "+pid+": strategy random") {
				t.Fatalf("probability by default: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			waitFor(t, 10*time.Second, "failures after probability 100", func() bool {
				ops := p.ops()
				return len(ops) > 0 && ops[len(ops)-1].Status != 0
			})

			// Root's status finds it among every user's, and says whose.
			r = runCLI(t, cli, 0, 0, "--pid", pid, "status")
			if r.code != 0 || !strings.Contains(r.stdout, pid) {
				t.Fatalf("root's status --pid %s: exit %d, stdout %q, stderr %q", pid, r.code, r.stdout, r.stderr)
			}
			if want := fmt.Sprintf("pid %s: user ucxf-victim (uid %d)", pid, vuid); tc.uid != 0 && !strings.Contains(r.stdout, want) {
				t.Fatalf("root's status does not say whose the process is (%q):\n%s", want, r.stdout)
			}
			r = runCLI(t, cli, 0, 0, "--pid", pid, "status", "-o", "json")
			var st []control.Status
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st) != 1 || st[0].UID != tc.uid {
				t.Fatalf("root's status -o json: %v, %+v; want uid %d", err, st, tc.uid)
			}

			// The original layout, chosen on purpose, with an impostor
			// on the program's future name: an ordinary user's program
			// cannot take the name and says why, and runs on; root's
			// takes it over, and its CLI reaches the real program.
			q := holdProgram(t, tc.uid, tc.gid, lib, rma, control.EnvSocketDir+"=/tmp")
			squat = control.SocketPath("/tmp", q.pid)
			os.Remove(squat)
			imp = startImpostor(t, iuid, igid, squat, q.pid)
			q.run(t)
			qpid := strconv.Itoa(q.pid)
			if tc.uid != 0 {
				waitFor(t, 10*time.Second, "the injector's refusal", func() bool { return strings.Contains(q.errb.String(), "control socket off") })
				if !strings.Contains(q.errb.String(), squat+" belongs to another user") {
					t.Fatalf("the injector does not say who holds its socket's name:\n%s", q.errb)
				}
				before := len(q.ops())
				waitFor(t, 10*time.Second, "the program to run on", func() bool { return len(q.ops()) > before+20 })
				r = runCLI(t, cli, tc.uid, tc.gid, "--socket-dir", "/tmp", "--pid", qpid, "status")
				if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("impostor: pid %d (uid %d)", imp, iuid)) {
					t.Fatalf("status through the squatted name: exit %d, stderr %q", r.code, r.stderr)
				}
				return
			}
			waitFor(t, 10*time.Second, "root's program to take its name", func() bool {
				return runCLI(t, cli, 0, 0, "--socket-dir", "/tmp", "--pid", qpid, "status").code == 0
			})
		})
	}
}

func failedOps(ops []testutil.Op) int {
	n := 0
	for _, op := range ops {
		if op.Status != 0 {
			n++
		}
	}
	return n
}

// TestSocketDirPlanted: a private directory made by another user before
// the program's (/tmp/ucxfault-<uid> is a name anyone can take), or one
// made world-writable, is refused by the injector and by the CLI, each
// saying what is wrong and how to fix it; the program runs on without a
// control plane.
func TestSocketDirPlanted(t *testing.T) {
	testutil.RequireRoot(t)
	h := newHarness(t)
	cli, lib, rma := sharedCopies(t, h)
	iuid, _ := testUser(t, "ucxf-impostor")
	vuid, vgid := testUser(t, "ucxf-victim")
	dir := control.TmpPrivateDir(vuid)
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, tc := range []struct {
		name  string
		owner int
		mode  os.FileMode
		want  string
	}{
		{"planted", iuid, 0o700, fmt.Sprintf("%s belongs to uid %d, not to uid %d", dir, iuid, vuid)},
		{"world-writable", vuid, 0o777, fmt.Sprintf("%s has mode 0777: other users may enter it (chmod 700 %s)", dir, dir)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, tc.owner, tc.owner); err != nil {
				t.Fatal(err)
			}
			p := holdProgram(t, vuid, vgid, lib, rma)
			p.run(t)
			waitFor(t, 10*time.Second, "the injector's refusal", func() bool {
				return strings.Contains(p.errb.String(), "control plane off, the program runs on")
			})
			if s := p.errb.String(); !strings.Contains(s, "unsafe socket directory: "+tc.want) {
				t.Fatalf("the injector's message %q does not say %q", s, tc.want)
			}
			before := len(p.ops())
			waitFor(t, 10*time.Second, "the program to run on", func() bool { return len(p.ops()) > before+20 })
			if _, err := os.Stat(control.SocketPath(dir, p.pid)); err == nil {
				t.Fatal("the injector put its socket in the refused directory")
			}
			r := runCLI(t, cli, vuid, vgid, "status")
			if r.code != 1 || !strings.Contains(r.stderr, "unsafe socket directory: "+tc.want) {
				t.Fatalf("status in a refused directory: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestMPIDefaultSocketDir: an MPI job started with `ucxfault inject` and no
// --socket-dir puts every rank's socket in the private directory, where the
// CLI finds them all: Open MPI's and MPICH's launchers pass the directory's
// environment ($XDG_RUNTIME_DIR here) to their ranks.
func TestMPIDefaultSocketDir(t *testing.T) {
	t.Run("openmpi", func(t *testing.T) {
		h := newDefaultHarness(t)
		j := h.startJob(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "2000", "--seq", "put")
		waitFor(t, 30*time.Second, "every rank's socket", func() bool {
			socks, _ := filepath.Glob(filepath.Join(h.dir, "ucx-fault-*.sock"))
			return len(socks) == jobRanks
		})
		var pids []string
		for _, pid := range j.pids {
			pids = append(pids, "--pid", strconv.Itoa(pid))
		}
		statusByRank(t, h.status(t, pids...), j)
		if out := h.mustCtl(t, "--rank", "1", "probability", "100"); !strings.Contains(out, fmt.Sprintf("pid %d: strategy random", j.pids[1])) {
			t.Fatalf("probability --rank 1: %q", out)
		}
		j.stop(t)
	})
	t.Run("mpich", func(t *testing.T) {
		launch := testutil.RequireMPICH(t)
		h := newDefaultHarness(t)
		ring := buildExampleC(t, "ring-mpich", "mpicc.mpich", "examples/mpi/ring.c")
		args := append([]string{"-n", "2", h.cli}, h.injectArgs([]string{"--probability", "0"})...)
		// injectArgs ends with the example's path: run ring instead.
		args = append(args[:len(args)-1], ring, "--iters", "100000000", "--quiet")
		cmd := exec.Command(launch, args...)
		cmd.Env = append(os.Environ(), "MPIR_CVAR_NOLOCAL=1")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var pids []int
		t.Cleanup(func() {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		})
		// Only this job's ranks, those with a socket in the private
		// directory of XDG_RUNTIME_DIR: root's CLI also lists every
		// other process in the private directories it reads.
		var ranks []int
		waitFor(t, 60*time.Second, "both ranks in status", func() bool {
			r := h.ctl(t, "status", "-o", "json")
			var st []control.Status
			json.Unmarshal([]byte(r.stdout), &st)
			pids, ranks = pids[:0], ranks[:0]
			for _, s := range st {
				if _, err := os.Stat(control.SocketPath(h.dir, s.PID)); err == nil {
					pids, ranks = append(pids, s.PID), append(ranks, s.Rank)
				}
			}
			return len(pids) == 2
		})
		if ranks[0]+ranks[1] != 1 || ranks[0]*ranks[1] != 0 {
			t.Fatalf("the MPICH job's ranks are %v, want 0 and 1", ranks)
		}
		sel := []string{"--pid", strconv.Itoa(pids[0]), "--pid", strconv.Itoa(pids[1])}
		h.mustCtl(t, append(sel, "probability", "5")...)
	})
}
