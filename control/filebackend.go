package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ucxfault/ucxfault/internal/proc"
)

// The file backend is the original tool's IPC for setups where sockets are
// not an option: commands are appended to one shared file under a lock and
// every injected process applies the commands written after it started;
// each process writes its status to a file of its own.

// BackendSocket and BackendFile name the IPC backends (UCX_FAULT_IPC_BACKEND).
const (
	BackendSocket = "socket"
	BackendFile   = "file"
)

// ParseBackend reads UCX_FAULT_IPC_BACKEND.
func ParseBackend(text string) (string, error) {
	switch text {
	case "", BackendSocket:
		return BackendSocket, nil
	case BackendFile:
		return BackendFile, nil
	}
	return "", fmt.Errorf("%w: %s=%q (accepted: socket, file)", ErrInvalid, EnvIPCBackend, text)
}

// CommandFile is the shared command file in dir.
func CommandFile(dir string) string { return filepath.Join(dir, "ucx-fault-commands.jsonl") }

// StateFile is the status file of pid in dir.
func StateFile(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("ucx-fault-state-%d.json", pid))
}

var stateName = regexp.MustCompile(`^ucx-fault-state-([0-9]+)\.json$`)

// AppendCommand appends req to the command file under an exclusive lock.
func AppendCommand(dir string, req *Request) error {
	line, err := req.Encode()
	if err != nil {
		return err
	}
	// O_NOFOLLOW: in a shared directory, a link planted under the command
	// file's name must not make us append to whatever it points to.
	f, err := os.OpenFile(CommandFile(dir), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("opening command file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return fmt.Errorf("opening command file: %w", err)
	} else if err := checkCommandFile(fi); err != nil {
		return fmt.Errorf("%w; the injected processes would ignore it (use a directory of your own: UCX_FAULT_SOCKET_DIR)", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking command file: %w", err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("appending to command file: %w", err)
	}
	return nil
}

// FileWatcher applies the commands appended to the command file.
type FileWatcher struct {
	Dir    string
	Engine *Engine
	PID    int
	// Interval between polls of the command file.
	Interval time.Duration
	Log      func(format string, args ...any)
	// Warn receives one line the first time the command file is refused
	// (see checkCommandFile).
	Warn    func(format string, args ...any)
	offset  int64
	file    fileID // the command file offset belongs to
	refused bool
}

// fileID names a file across renames: a command file replaced by another
// is read from its start.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(st.Dev), st.Ino}
	}
	return fileID{}
}

// checkCommandFile refuses a command file that someone other than this
// process's user or root could have written: the file backend's
// counterpart of the socket's SO_PEERCRED check.
func checkCommandFile(fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("command file: no owner known")
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("command file is owned by uid %d (only uid %d and root may control this process)", uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("command file has mode %v: others may write it", fi.Mode().Perm())
	}
	return nil
}

// Run polls until stop is closed. Commands already in the file when Run
// starts are not applied: they were meant for the processes alive then.
func (w *FileWatcher) Run(stop <-chan struct{}) {
	if fi, err := os.Stat(CommandFile(w.Dir)); err == nil {
		w.offset, w.file = fi.Size(), idOf(fi)
	}
	if w.Interval == 0 {
		w.Interval = 100 * time.Millisecond
	}
	w.writeState()
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	lastState := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		applied := w.poll()
		if applied || time.Since(lastState) >= time.Second {
			w.writeState()
			lastState = time.Now()
		}
	}
}

func (w *FileWatcher) poll() bool {
	f, err := os.Open(CommandFile(w.Dir))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && idOf(fi) != w.file {
		w.offset, w.file = 0, idOf(fi) // a new file: all of it is new
	}
	if err != nil || fi.Size() <= w.offset {
		if err == nil && fi.Size() < w.offset {
			w.offset = 0 // the file was truncated or replaced
		}
		return false
	}
	if err := checkCommandFile(fi); err != nil {
		if !w.refused && w.Warn != nil {
			w.Warn("%v; its commands are ignored", err)
		}
		w.refused = true
		w.offset = fi.Size() // never apply them later either
		return false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		return false
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if _, err := f.Seek(w.offset, io.SeekStart); err != nil {
		return false
	}
	br := bufio.NewReader(io.LimitReader(f, MaxLine*4))
	applied := false
	for {
		line, err := readLine(br)
		if err != nil {
			break
		}
		if !bytes.HasSuffix(line, []byte("\n")) {
			break // a writer is mid-line; read it next time
		}
		w.offset += int64(len(line))
		resp, _ := w.Engine.HandleLine(line)
		applied = true
		if w.Log != nil {
			w.Log("file command %s -> %s", bytes.TrimSpace(line), bytes.TrimSpace(resp))
		}
	}
	return applied
}

func (w *FileWatcher) writeState() {
	resp := w.Engine.Handle(&Request{V: ProtocolVersion, Cmd: CmdStatus, Detailed: true})
	if resp.Status == nil {
		return
	}
	b, err := json.Marshal(resp.Status)
	if err != nil {
		return
	}
	// A fresh file (O_EXCL, a random name) renamed into place: a link
	// planted in a shared directory is never followed, only replaced.
	tmp, err := os.CreateTemp(w.Dir, ".ucx-fault-state-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), StateFile(w.Dir, w.PID)) != nil {
		os.Remove(tmp.Name())
	}
}

// RemoveState deletes pid's state file (at exit).
func RemoveState(dir string, pid int) { os.Remove(StateFile(dir, pid)) }

// ReadStates reads the state files in dir; those of dead processes are
// removed and their pids returned in removed.
func ReadStates(dir string) (states []Status, removed []int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading state directory: %w", err)
	}
	for _, ent := range entries {
		m := stateName.FindStringSubmatch(ent.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		path := filepath.Join(dir, ent.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var st Status
		if err := json.Unmarshal(b, &st); err != nil {
			continue
		}
		if !proc.Alive(pid) {
			os.Remove(path)
			removed = append(removed, pid)
			continue
		}
		if cur, err := proc.StartTime(pid); err == nil && st.StartTime != 0 && cur != st.StartTime {
			os.Remove(path)
			removed = append(removed, pid)
			continue
		}
		states = append(states, st)
	}
	return states, removed, nil
}

// ErrNoProcess is returned when no injected process is found.
var ErrNoProcess = errors.New("no injected process found")
