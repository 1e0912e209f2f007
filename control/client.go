package control

import (
	"bufio"
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
)

// DefaultSocketDir is where sockets live unless UCX_FAULT_SOCKET_DIR says
// otherwise; it is the original tool's directory.
const DefaultSocketDir = "/tmp"

// SocketDir returns the socket directory from the environment.
func SocketDir(getenv Env) string {
	if d := getenv(EnvSocketDir); d != "" {
		return d
	}
	return DefaultSocketDir
}

// SocketPath is the control socket of pid in dir.
func SocketPath(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("ucx-fault-%d.sock", pid))
}

var socketName = regexp.MustCompile(`^ucx-fault-([0-9]+)\.sock$`)

// Target is one injected process found by Discover.
type Target struct {
	PID  int
	Path string
}

// Discovery is the result of scanning a socket directory.
type Discovery struct {
	Targets []Target
	// Removed lists sockets of processes that no longer exist, removed.
	Removed []Target
}

// Discover lists the sockets in dir whose process is alive, and removes
// those whose process is gone.
func Discover(dir string) (Discovery, error) {
	var d Discovery
	entries, err := os.ReadDir(dir)
	if err != nil {
		return d, fmt.Errorf("reading socket directory: %w", err)
	}
	for _, ent := range entries {
		m := socketName.FindStringSubmatch(ent.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 {
			continue
		}
		t := Target{PID: pid, Path: filepath.Join(dir, ent.Name())}
		if !processAlive(pid) {
			if os.Remove(t.Path) == nil {
				d.Removed = append(d.Removed, t)
			}
			continue
		}
		d.Targets = append(d.Targets, t)
	}
	sort.Slice(d.Targets, func(i, j int) bool { return d.Targets[i].PID < d.Targets[j].PID })
	return d, nil
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// ProcessStartTime reads field 22 of /proc/PID/stat: the start time in
// clock ticks since boot. With the pid it identifies one process.
func ProcessStartTime(pid int) (uint64, error) {
	return startTime(fmt.Sprintf("/proc/%d/stat", pid))
}

// SelfStartTime is ProcessStartTime of the calling process. It reads
// /proc/self, which names this process even where /proc/<getpid()> does
// not (a process in a pid namespace of its own under the host's /proc).
func SelfStartTime() (uint64, error) {
	return startTime("/proc/self/stat")
}

func startTime(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading process start time: %w", err)
	}
	// The command name (field 2) may hold spaces and parentheses: parse
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing %s: no command field", path)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parsing %s: %d fields", path, len(fields)+2)
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s start time: %w", path, err)
	}
	return v, nil
}

// ErrStale is returned by Send when the socket's process is not the one that
// created it (it exited and its pid was reused) or no longer listens.
var ErrStale = errors.New("stale control socket")

// Send sends one request to the socket at path and returns the response.
func Send(path string, req *Request, timeout time.Duration) (*Response, error) {
	line, err := req.Encode()
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: %s: %v", ErrStale, path, err)
		}
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
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
				return &resp, nil
			}
		}
		return nil, fmt.Errorf("sending to %s: %w", path, werr)
	}
	respLine, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("reading response from %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(respLine, &resp); err != nil {
		return nil, fmt.Errorf("decoding response from %s: %w", path, err)
	}
	return &resp, nil
}

// ErrWrongProcess is returned by Broadcast when the process that answered
// on a socket is not the process that holds the socket's pid now: its answer
// is not reported as that pid's.
var ErrWrongProcess = errors.New("control socket answered by another process")

// CheckIdentity checks that resp, read from t's socket, comes from the
// process that holds t.PID now: the pid it reports is t.PID and its start
// time (field 22 of /proc/PID/stat, see ProcessStartTime) is the one /proc
// shows for t.PID. They differ when the answering process lives in another
// pid namespace that shares the socket directory, or when the socket file
// was moved or linked. A response without a status or a recording (an error
// response) carries no identity and passes.
func CheckIdentity(t Target, resp *Response) error {
	var (
		pid   int
		start uint64
	)
	switch {
	case resp == nil:
		return nil
	case resp.Status != nil:
		pid, start = resp.Status.PID, resp.Status.StartTime
	case resp.Recording != nil:
		pid = resp.Recording.PID
	default:
		return nil
	}
	if pid != t.PID {
		return fmt.Errorf("%w: %s answered as pid %d (another pid namespace, or a moved socket file)", ErrWrongProcess, t.Path, pid)
	}
	if start == 0 {
		return nil // the process could not read its own start time
	}
	now, err := ProcessStartTime(t.PID)
	if err != nil {
		return fmt.Errorf("%w: pid %d answered on %s, but here it is no process (another pid namespace?): %v", ErrWrongProcess, t.PID, t.Path, err)
	}
	if now != start {
		return fmt.Errorf("%w: the process that answered on %s started at tick %d, pid %d here started at tick %d (another pid namespace, or a reused pid)",
			ErrWrongProcess, t.Path, start, t.PID, now)
	}
	return nil
}

// Result is one process's answer to a broadcast request.
type Result struct {
	Target Target
	Resp   *Response
	Err    error
}

// Broadcast sends req to every target at once and returns the results in
// target order. A target whose socket is stale (nobody listens) is removed
// and reported with ErrStale; an answer from a process that does not hold
// the target's pid (see CheckIdentity) is reported with ErrWrongProcess.
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
			resp, err := Send(t.Path, &r, timeout)
			if err == nil {
				err = CheckIdentity(t, resp)
			}
			// Only a socket nobody listens on is removed: one that
			// answers belongs to a live process, even a misnamed one.
			if errors.Is(err, ErrStale) {
				os.Remove(t.Path)
			}
			out[i] = Result{Target: t, Resp: resp, Err: err}
		}()
	}
	wg.Wait()
	return out
}
