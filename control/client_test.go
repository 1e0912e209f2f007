package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
)

func TestCheckIdentity(t *testing.T) {
	pid := os.Getpid()
	start, err := proc.SelfStartTime()
	if err != nil {
		t.Fatal(err)
	}
	me := Target{PID: pid, Path: "/tmp/ucx-fault-self.sock"}
	id := &Identity{PID: pid, StartTime: start}
	for _, tc := range []struct {
		name string
		resp *Response
		ok   bool
	}{
		{"same process", &Response{OK: true, Identity: id, Status: &Status{PID: pid, StartTime: start}}, true},
		{"no start time", &Response{OK: true, Identity: &Identity{PID: pid}, Status: &Status{PID: pid}}, true},
		{"recording", &Response{OK: true, Identity: id, Recording: &recording.Process{PID: pid}}, true},
		{"another pid", &Response{OK: true, Identity: id, Status: &Status{PID: pid + 1, StartTime: start}}, false},
		{"another start time", &Response{OK: true, Identity: id, Status: &Status{PID: pid, StartTime: start + 1}}, false},
		{"recording of another pid", &Response{OK: true, Identity: id, Recording: &recording.Process{PID: 1}}, false},
		// Without an identity nothing passes, not even a status naming
		// the right process, nor an error: an unnamed line is never
		// taken for a process's reply.
		{"status without identity", &Response{OK: true, Status: &Status{PID: pid, StartTime: start}}, false},
		{"error without identity", &Response{Error: "busy"}, false},
		{"forged success", &Response{OK: true, Message: "forged"}, false},
		{"no answer", nil, false},
		{"identity", &Response{OK: true, Identity: &Identity{PID: pid, StartTime: start}}, true},
		{"error with identity", &Response{Error: "invalid value", Identity: &Identity{PID: pid, StartTime: start}}, true},
		{"error of another process", &Response{Error: "invalid value", Identity: &Identity{PID: pid, StartTime: start + 1}}, false},
		{"identity of another start time", &Response{OK: true, Identity: &Identity{PID: pid, StartTime: start + 1}}, false},
		{"identity of another pid", &Response{OK: true, Identity: &Identity{PID: pid + 1, StartTime: start}}, false},
		{"status disagreeing with identity", &Response{OK: true, Identity: &Identity{PID: pid, StartTime: start},
			Status: &Status{PID: pid, StartTime: start + 1}}, false},
		{"success without identity", &Response{OK: true, Message: "injection on"}, false},
	} {
		err := CheckIdentity(me, tc.resp)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrWrongProcess) {
			t.Errorf("%s: got %v, want ErrWrongProcess", tc.name, err)
		}
	}
}

// TestCheckListener: the kernel's word on who listens decides, before any
// answer is read. This process listens on sockets named for itself and for
// another live pid: the first passes, the second is an impostor.
func TestCheckListener(t *testing.T) {
	dir := t.TempDir()
	other := os.Getppid()
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"the listener itself", os.Getpid(), true},
		{"another live pid", other, false},
	} {
		tg := Target{PID: tc.pid, Path: filepath.Join(dir, tc.name+".sock")}
		l, err := net.Listen("unix", tg.Path)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		conn, err := net.Dial("unix", tg.Path)
		if err != nil {
			t.Fatal(err)
		}
		uid, err := CheckListener(tg, conn)
		conn.Close()
		l.Close()
		if tc.ok && (err != nil || uid != os.Geteuid()) {
			t.Errorf("%s: uid %d, %v; want uid %d", tc.name, uid, err, os.Geteuid())
		}
		if !tc.ok && (!errors.Is(err, ErrImpostor) || !errors.Is(err, ErrWrongProcess) ||
			!strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())+" (uid")) {
			t.Errorf("%s: got %v, want an impostor named by its pid", tc.name, err)
		}
	}
	// Send checks before it writes: the impostor never sees the request.
	tg := Target{PID: other, Path: filepath.Join(dir, "send.sock")}
	l, err := net.Listen("unix", tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"v":1,"ok":true,"message":"forged"}` + "\n"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := c.Read(make([]byte, 100))
		got <- n
	}()
	resp, err := Send(tg, &Request{Cmd: CmdStatus}, 2*time.Second)
	if resp != nil || !errors.Is(err, ErrImpostor) {
		t.Fatalf("Send to an impostor: %+v, %v", resp, err)
	}
	if n := <-got; n != 0 {
		t.Fatalf("the impostor read %d bytes of the request", n)
	}
}

// deadSocket leaves a socket file at SocketPath(dir, pid) that nobody
// listens on, as a process killed with SIGKILL leaves it.
func deadSocket(t *testing.T, dir string, pid int) Target {
	t.Helper()
	tg := Target{PID: pid, Path: SocketPath(dir, pid)}
	l, err := net.Listen("unix", tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	return tg
}

func TestRemoveIfStaleNeedsProof(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)

	// No such pid, nobody listens: gone.
	gone := deadSocket(t, dir, pidMax+1)
	if ok, why := RemoveIfStale(gone); !ok || !strings.Contains(why, "no longer exists") {
		t.Fatalf("socket of pid %d (above pid_max): removed %v (%q), want removed", gone.PID, ok, why)
	}
	// A live pid older than the socket, nobody listens: a process about
	// to listen, kept.
	self := deadSocket(t, dir, os.Getpid())
	if ok, _ := RemoveIfStale(self); ok {
		t.Fatal("the socket of a live process older than the socket was removed")
	}
	// The same socket made older than the process: the pid was reused.
	if err := os.Chtimes(self.Path, old, old); err != nil {
		t.Fatal(err)
	}
	if ok, why := RemoveIfStale(self); !ok || !strings.Contains(why, "after the socket was created") {
		t.Fatalf("socket older than its live pid: removed %v (%q), want removed", ok, why)
	}
	// Proven gone by pid, but someone listens: kept.
	listening := Target{PID: pidMax + 2, Path: SocketPath(dir, pidMax+2)}
	l, err := net.Listen("unix", listening.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if ok, _ := RemoveIfStale(listening); ok {
		t.Fatal("a socket someone listens on was removed")
	}
	// The file judged is the one removed: a live socket that took the
	// name since (here often with the same inode number) is put back.
	judged := deadSocket(t, dir, pidMax+3)
	fi, err := os.Lstat(judged.Path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(judged.Path)
	l2, err := net.Listen("unix", judged.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if removeSame(judged.Path, fi) {
		t.Fatal("removeSame removed a live socket that replaced the one judged")
	}
	if c, err := net.Dial("unix", judged.Path); err != nil {
		t.Fatalf("the replacing socket is not back in place: %v", err)
	} else {
		c.Close()
	}
	// A dead socket that took the name since, told apart by its time, is
	// put back too: it is not the file judged.
	judged = deadSocket(t, dir, pidMax+4)
	if fi, err = os.Lstat(judged.Path); err != nil {
		t.Fatal(err)
	}
	os.Remove(judged.Path)
	deadSocket(t, dir, pidMax+4)
	if err := os.Chtimes(judged.Path, old, old); err != nil {
		t.Fatal(err)
	}
	if removeSame(judged.Path, fi) {
		t.Fatal("removeSame removed a socket other than the one judged")
	}
	if _, err := os.Lstat(judged.Path); err != nil {
		t.Fatalf("the replacing socket is not back in place: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".ucx-fault-removing-*")); len(left) != 0 {
		t.Fatalf("files left aside: %v", left)
	}
}

// TestLookupAcrossDirs: a pid's socket is the first, in the directories'
// order, whose process is not proven gone; a stale one before it is removed
// and reported, and a pid with no socket anywhere is an ErrNoProcess.
func TestLookupAcrossDirs(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	pid := pidMax + 1 // no such process
	first, second := t.TempDir(), t.TempDir()
	stale := deadSocket(t, first, pid)
	live := Target{PID: pid, Path: SocketPath(second, pid)}
	l, err := net.Listen("unix", live.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	targets, removed, err := Lookup([]string{first, second}, []int{pid})
	if err != nil || len(targets) != 1 || targets[0] != live || len(removed) != 1 || removed[0].Target != stale {
		t.Fatalf("Lookup: %+v, removed %+v, %v; want %s, and %s removed", targets, removed, err, live.Path, stale.Path)
	}
	if _, _, err := Lookup([]string{first, second}, []int{pid + 1}); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Lookup of a pid without a socket: %v", err)
	}
}
