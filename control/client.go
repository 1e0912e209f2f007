package control

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ucxfault/ucxfault/internal/proc"
)

// SocketDir returns the socket directory chosen in the environment
// (UCX_FAULT_SOCKET_DIR), or "" for the user's private directory
// (PrivateDir).
func SocketDir(getenv Env) string {
	return getenv(EnvSocketDir)
}

// SocketPath is the control socket of pid in dir.
func SocketPath(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("ucx-fault-%d.sock", pid))
}

var socketName = regexp.MustCompile(`^ucx-fault-([0-9]+)\.sock$`)

// Target is one injected process found by Discover or Lookup.
type Target struct {
	PID  int
	Path string
}

// Discovery is the result of scanning a socket directory.
type Discovery struct {
	Targets []Target
	// Removed lists sockets of processes proven gone, removed (see
	// RemoveIfStale).
	Removed []Removal
}

// Removal is a socket removed by RemoveIfStale, and the proof its process
// was gone.
type Removal struct {
	Target
	Why string
}

// Discover lists the control sockets in dir and removes those whose process
// is proven gone (see RemoveIfStale); every other socket is listed, whether
// or not its process will answer.
func Discover(dir string) (Discovery, error) {
	var d Discovery
	list, err := List(dir)
	if err != nil {
		return d, err
	}
	for _, t := range list {
		if removed, why := RemoveIfStale(t); removed {
			d.Removed = append(d.Removed, Removal{t, why})
			continue
		}
		d.Targets = append(d.Targets, t)
	}
	return d, nil
}

// List lists the control sockets in dir by pid, and touches none.
func List(dir string) ([]Target, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading socket directory: %w", err)
	}
	var list []Target
	for _, ent := range entries {
		m := socketName.FindStringSubmatch(ent.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 {
			continue
		}
		list = append(list, Target{PID: pid, Path: filepath.Join(dir, ent.Name())})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].PID < list[j].PID })
	return list, nil
}

// Lookup returns the control sockets of pids in dirs, and looks at no
// other socket: each pid's is the first in dirs' order whose process is not
// proven gone. A pid without a socket is an ErrNoProcess; a socket whose
// process is proven gone is removed and returned in removed instead.
func Lookup(dirs []string, pids []int) (targets []Target, removed []Removal, err error) {
	for _, pid := range pids {
		found := false
		for _, dir := range dirs {
			t := Target{PID: pid, Path: SocketPath(dir, pid)}
			if _, err := os.Lstat(t.Path); err != nil {
				continue
			}
			found = true
			if ok, why := RemoveIfStale(t); ok {
				removed = append(removed, Removal{t, why})
				continue
			}
			targets = append(targets, t)
			break
		}
		if !found {
			return nil, removed, fmt.Errorf("%w: no control socket for pid %d in %s (is it running under ucxfault inject?)", ErrNoProcess, pid, strings.Join(dirs, ", "))
		}
	}
	return targets, removed, nil
}

// ErrNotAnswering is returned by Broadcast for a live process that did not
// answer in time, or whose socket refused the connection while the process
// is not proven gone (a process between creating its socket and listening
// on it). Its socket is kept.
var ErrNotAnswering = errors.New("not answering")

// RemoveIfStale removes t's socket if, and only if, its process is proven
// gone, and says why. Proven gone means both:
//
//   - the pid names no process, or a process that started after the socket
//     was created (the socket's modification time: nothing writes a socket
//     file after bind), so the pid was reused; and
//   - nobody listens on the socket: a connection is refused. A socket that
//     accepts belongs to a live process, even one this pid namespace does
//     not show as t.PID.
//
// Anything less (the pid is alive and older than the socket, the start
// times cannot be read, the connection times out) keeps the socket. The
// file removed is the one judged: it is renamed aside first and removed
// only if it is still the same file, so a socket that its process re-created
// meanwhile under the same name stays.
func RemoveIfStale(t Target) (bool, string) {
	fi, err := os.Lstat(t.Path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false, ""
	}
	why := fmt.Sprintf("process %d no longer exists", t.PID)
	if proc.Alive(t.PID) {
		started, err := proc.StartWall(t.PID)
		if err != nil || !started.After(fi.ModTime()) {
			return false, ""
		}
		why = fmt.Sprintf("pid %d now belongs to a process started at %s, after the socket was created at %s",
			t.PID, started.Format("15:04:05.000"), fi.ModTime().Format("15:04:05.000"))
	}
	conn, err := net.DialTimeout("unix", t.Path, time.Second)
	if err == nil {
		conn.Close()
		return false, ""
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return false, ""
	}
	return removeSame(t.Path, fi), why
}

// removeSame removes path if it is still the file fi describes, and
// nobody listens on it. Unix has no "unlink if this inode": the file is
// renamed to a private name first (atomic), checked there, and put back
// with link(2) if it is another file or a live socket. The inode number and
// modification time identify the file (a file system hands a freed inode
// number to the next file, and timestamps are as coarse as a clock tick, so
// neither alone does); the connection decides when both match.
func removeSame(path string, fi os.FileInfo) bool {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return false
	}
	aside := filepath.Join(filepath.Dir(path), fmt.Sprintf(".ucx-fault-removing-%d-%x", os.Getpid(), rnd))
	if os.Rename(path, aside) != nil {
		return false
	}
	if now, err := os.Lstat(aside); err == nil && os.SameFile(fi, now) && fi.ModTime().Equal(now.ModTime()) {
		conn, err := net.DialTimeout("unix", aside, time.Second)
		if err == nil {
			conn.Close()
		} else if errors.Is(err, unix.ECONNREFUSED) {
			os.Remove(aside)
			return true
		}
	}
	// Another socket took the name between the judgement and the rename,
	// or this one listens now: it goes back (link fails only if yet
	// another took the name, and that one is newer still).
	os.Link(aside, path)
	os.Remove(aside)
	return false
}

// ErrStale is returned by Send when nobody listens on the socket (the
// connection is refused, or the file is gone). That alone does not prove
// the process gone: it may be about to listen (see RemoveIfStale).
var ErrStale = errors.New("stale control socket")

// Send sends one request to t's socket and returns the response. Before
// anything is sent, the kernel is asked who listens on the socket
// (CheckListener); the answer must then name that process (CheckIdentity). An
// answer that fails either check is never returned: the error wraps
// ErrWrongProcess.
func Send(t Target, req *Request, timeout time.Duration) (*Response, error) {
	resp, _, err := send(t, req, timeout)
	return resp, err
}

// send is Send, also returning the uid of the process that answered.
func send(t Target, req *Request, timeout time.Duration) (*Response, int, error) {
	path := t.Path
	line, err := req.Encode()
	if err != nil {
		return nil, -1, err
	}
	conn, uid, err := dial(t, timeout)
	if err != nil {
		return nil, -1, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(conn, 64<<10)
	if _, werr := conn.Write(line); werr != nil {
		// A process that refuses the connection (busy, or another
		// user) answers at once and closes: its answer may be waiting
		// even though our request could not be sent.
		if respLine, err := readLine(br); err == nil {
			var resp Response
			if json.Unmarshal(respLine, &resp) == nil && !resp.OK && resp.Error != "" {
				if err := CheckIdentity(t, &resp); err != nil {
					return nil, uid, err
				}
				return &resp, uid, nil
			}
		}
		return nil, uid, fmt.Errorf("sending to %s: %w", path, werr)
	}
	respLine, err := readAnswer(br, path)
	if err != nil {
		return nil, uid, err
	}
	var resp Response
	if err := json.Unmarshal(respLine, &resp); err != nil {
		return nil, uid, fmt.Errorf("decoding response from %s: %w", path, err)
	}
	if err := CheckIdentity(t, &resp); err != nil {
		return nil, uid, err
	}
	return &resp, uid, nil
}

// dial connects to t's socket and checks who listens on it (CheckListener),
// before a byte is sent: a request is never shown to an impostor.
func dial(t Target, timeout time.Duration) (net.Conn, int, error) {
	conn, err := net.DialTimeout("unix", t.Path, timeout)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return nil, -1, fmt.Errorf("%w: %s: %v", ErrStale, t.Path, err)
		}
		return nil, -1, fmt.Errorf("connecting to %s: %w", t.Path, err)
	}
	uid, err := CheckListener(t, conn)
	if err != nil {
		conn.Close()
		return nil, -1, err
	}
	return conn, uid, nil
}

// ErrImpostor is wrapped (with ErrWrongProcess) by CheckListener's error for a
// socket on which another process than the target listens.
var ErrImpostor = errors.New("impostor")

// CheckListener asks the kernel who listens on conn, connected to t's socket
// (SO_PEERCRED: the pid and effective uid of the process that called
// listen), and returns that uid if the listener is t: its pid is t.PID and
// its uid is the effective uid /proc shows for t.PID (proc.Owner).
// Anything else is an impostor (a socket planted by another user in a
// shared directory), a socket file moved or linked under another pid's
// name, or a process in another pid namespace (whose pid the kernel
// translates into ours, or reports as 0 when it has none here): the error
// wraps ErrWrongProcess and ErrImpostor and names the listener.
func CheckListener(t Target, conn net.Conn) (int, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return -1, fmt.Errorf("%w: %s is not a unix socket connection", ErrWrongProcess, t.Path)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("reading the credentials of %s: %w", t.Path, err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return -1, fmt.Errorf("reading the credentials of %s: %w", t.Path, errors.Join(err, cerr))
	}
	if int(cred.Pid) != t.PID {
		who := fmt.Sprintf("pid %d (uid %d)", cred.Pid, cred.Uid)
		if cred.Pid == 0 {
			who = fmt.Sprintf("a process of uid %d outside this pid namespace", cred.Uid)
		}
		return -1, fmt.Errorf("%w: %w: %s listens on %s, not pid %d (a socket planted by another user, a moved socket file, or a process in another pid namespace); its answer is refused",
			ErrWrongProcess, ErrImpostor, who, t.Path, t.PID)
	}
	owner, err := proc.Owner(t.PID)
	if err != nil {
		return -1, fmt.Errorf("%w: pid %d listens on %s, but its owner cannot be read here (another pid namespace?): %v", ErrWrongProcess, t.PID, t.Path, err)
	}
	if int(cred.Uid) != owner {
		return -1, fmt.Errorf("%w: %w: a process of uid %d listens on %s, but pid %d belongs to uid %d; its answer is refused",
			ErrWrongProcess, ErrImpostor, cred.Uid, t.Path, t.PID, owner)
	}
	return owner, nil
}

// ErrWrongProcess is returned by Broadcast when the process that answered
// on a socket is not the process that holds the socket's pid now: its answer
// is not reported as that pid's.
var ErrWrongProcess = errors.New("control socket answered by another process")

// ErrNoIdentity is wrapped by CheckIdentity's error for an answer that
// names no process.
var ErrNoIdentity = errors.New("answer carries no identity")

// CheckIdentity checks that resp, read from t's socket, comes from the
// process that holds t.PID now: the pid it reports is t.PID and its start
// time (field 22 of /proc/PID/stat, see proc.StartTime) is the one /proc
// shows for t.PID. They differ when the answering process lives in another
// pid namespace that shares the socket directory, or when the socket file
// was moved or linked. Every claim the answer makes is checked: its
// identity, and the pid and start time of its status and recording. Every
// answer carries an identity, refusals included: one without is refused
// (ErrNoIdentity), so that nothing unnamed is ever taken for a process's
// reply.
func CheckIdentity(t Target, resp *Response) error {
	if resp == nil {
		return fmt.Errorf("%w: %w: %s gave no answer", ErrWrongProcess, ErrNoIdentity, t.Path)
	}
	if resp.Identity == nil {
		return fmt.Errorf("%w: %w: %s (an injector older than this CLI, or not an injector); the answer is refused", ErrWrongProcess, ErrNoIdentity, t.Path)
	}
	claims := []Identity{*resp.Identity}
	if resp.Status != nil {
		claims = append(claims, Identity{PID: resp.Status.PID, StartTime: resp.Status.StartTime})
	}
	if resp.Recording != nil {
		claims = append(claims, Identity{PID: resp.Recording.PID}) // its start time is wall-clock
	}
	var now uint64
	for _, c := range claims {
		if c.PID != t.PID {
			return fmt.Errorf("%w: %s answered as pid %d (another pid namespace, or a moved socket file)", ErrWrongProcess, t.Path, c.PID)
		}
		if c.StartTime == 0 {
			continue // the process could not read its own start time
		}
		if now == 0 {
			var err error
			if now, err = proc.StartTime(t.PID); err != nil {
				return fmt.Errorf("%w: pid %d answered on %s, but here it is no process (another pid namespace?): %v", ErrWrongProcess, t.PID, t.Path, err)
			}
		}
		if now != c.StartTime {
			return fmt.Errorf("%w: the process that answered on %s started at tick %d, pid %d here started at tick %d (another pid namespace, or a reused pid)",
				ErrWrongProcess, t.Path, c.StartTime, t.PID, now)
		}
	}
	return nil
}

// Result is one process's answer to a broadcast request.
type Result struct {
	Target Target
	Resp   *Response
	Err    error
	// UID is the effective uid of the process that answered (checked by
	// CheckListener); -1 when none did.
	UID int
}

// Broadcast sends req to every target at once and returns the results in
// target order. A target whose socket refuses the connection is removed and
// reported with ErrStale only if its process is proven gone (see
// RemoveIfStale); a live process that refuses or does not answer in time is
// reported with ErrNotAnswering and its socket kept. An answer from a
// process that does not hold the target's pid (see CheckIdentity) is
// reported with ErrWrongProcess.
func Broadcast(targets []Target, req *Request, timeout time.Duration) []Result {
	out := make([]Result, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := *req
			resp, uid, err := send(t, &r, timeout)
			out[i] = Result{Target: t, Resp: resp, Err: judge(t, err), UID: uid}
		}()
	}
	wg.Wait()
	return out
}

// judge turns a failure to reach t into ErrStale (the process is gone, and
// its socket was removed or had already gone) or ErrNotAnswering (it may be
// alive: the socket stays).
func judge(t Target, err error) error {
	var ne net.Error
	switch {
	case err == nil || errors.Is(err, ErrWrongProcess):
		return err
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s is gone (the process exited)", ErrStale, t.Path)
	case errors.Is(err, ErrStale):
		if removed, why := RemoveIfStale(t); removed {
			return fmt.Errorf("removed stale socket: %w; %s", err, why)
		}
		return fmt.Errorf("%w: nobody listens on %s, but process %d is not proven gone (starting, or its control plane is off); the socket is kept",
			ErrNotAnswering, t.Path, t.PID)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %v (busy? the socket is kept)", ErrNotAnswering, err)
	default:
		return fmt.Errorf("%w: %v", ErrNotAnswering, err)
	}
}
