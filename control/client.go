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
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading process start time: %w", err)
	}
	// The command name (field 2) may hold spaces and parentheses: parse
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no command field", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat start time: %w", pid, err)
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
	if _, err := conn.Write(line); err != nil {
		return nil, fmt.Errorf("sending to %s: %w", path, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
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

// Result is one process's answer to a broadcast request.
type Result struct {
	Target Target
	Resp   *Response
	Err    error
}

// Broadcast sends req to every target at once and returns the results in
// target order. A target whose socket is stale is removed and reported
// with ErrStale.
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
			if err == nil && resp.Status != nil && resp.Status.StartTime != 0 {
				// A pid reused by another injected program answers with
				// another start time than the process that owns the pid now.
				if st, e := ProcessStartTime(t.PID); e == nil && st != resp.Status.StartTime && resp.Status.PID == t.PID {
					err = fmt.Errorf("%w: pid %d was reused", ErrStale, t.PID)
				}
			}
			if errors.Is(err, ErrStale) {
				os.Remove(t.Path)
			}
			out[i] = Result{Target: t, Resp: resp, Err: err}
		}()
	}
	wg.Wait()
	return out
}
