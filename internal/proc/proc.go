// Package proc is ucxfault's one reader of /proc and of the launcher's
// environment: a process's start time (which, with the pid, names one
// process across pid reuse), whether it is alive, its command line, its
// launcher rank (-1 when no launcher set one), its memory map, and which
// mapped files are UCX libraries and which are copies of libucp.
//
// The CLI, the control client, the observer and the Go half of the
// injector use it. The injector's C half, which runs inside the
// application before Go may be called, has its own small predicate for UCX
// libraries (preload/ucx_object.h); a table test (TestPredicatesAgree)
// builds that header and holds it and IsUCXLibrary to the same answers.
package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoProcess is wrapped by the readers of /proc/PID when the process
// does not exist (or exited while being read).
var ErrNoProcess = errors.New("no such process")

// UserHZ is the unit of the start time in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 on every architecture ucxfault supports (x86_64,
// arm64; see the kernel's include/asm-generic/param.h).
const UserHZ = 100

// readPID reads /proc/PID/name, wrapping ErrNoProcess when the process is gone.
func readPID(pid int, name string) ([]byte, error) {
	return readFile(fmt.Sprintf("/proc/%d/%s", pid, name), pid)
}

func readFile(path string, pid int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// ESRCH: the process exited between open and read.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return data, nil
}

// stat holds the fields of /proc/PID/stat that ucxfault reads.
type stat struct {
	state     byte   // field 3: R, S, D, Z, X, ...
	startTime uint64 // field 22: clock ticks (UserHZ) since boot
}

// parseStat parses one /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so the fields are counted after the last ')'.
func parseStat(data []byte) (stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return stat{}, errors.New("parsing process stat: no command field")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("parsing process stat: %d fields", len(f)+2)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("parsing process start time: %w", err)
	}
	return stat{state: f[0][0], startTime: st}, nil
}

func readStat(path string, pid int) (stat, error) {
	data, err := readFile(path, pid)
	if err != nil {
		return stat{}, err
	}
	return parseStat(data)
}

// StartTime returns field 22 of /proc/PID/stat: when pid started, in clock
// ticks (UserHZ) since boot. With the pid it names one process: a reused
// pid has a later start time. A missing process gives an error wrapping
// ErrNoProcess.
func StartTime(pid int) (uint64, error) {
	st, err := readStat(fmt.Sprintf("/proc/%d/stat", pid), pid)
	return st.startTime, err
}

// SelfStartTime is StartTime of the calling process. It reads /proc/self,
// which names this process even where /proc/<getpid()> does not (a process
// in a pid namespace of its own under the host's /proc).
func SelfStartTime() (uint64, error) {
	st, err := readStat("/proc/self/stat", os.Getpid())
	return st.startTime, err
}

// BootTime returns /proc/stat's btime: when the machine booted, in whole
// seconds (rounded down by the kernel).
func BootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("reading boot time: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("parsing boot time: %w", err)
			}
			return time.Unix(s, 0).UTC(), nil
		}
	}
	return time.Time{}, errors.New("reading boot time: no btime in /proc/stat")
}

// WallTime converts a start time in clock ticks since boot (StartTime) to
// the wall clock, in UTC. btime is rounded down to a second, so the result
// is never later than the true start, and up to one second earlier.
func WallTime(ticks uint64) (time.Time, error) {
	boot, err := BootTime()
	if err != nil {
		return time.Time{}, err
	}
	return boot.Add(time.Duration(ticks) * time.Second / UserHZ), nil
}

// StartWall is when pid started, on the wall clock (see WallTime).
func StartWall(pid int) (time.Time, error) {
	ticks, err := StartTime(pid)
	if err != nil {
		return time.Time{}, err
	}
	return WallTime(ticks)
}

// Alive reports whether pid names a process that can still run: it exists
// and is neither a zombie (Z) nor dead (X). A zombie holds its pid but can
// no longer answer on a socket nor load a library. Where /proc does not
// show the process (hidepid, another user's process) but signal 0 reaches
// it or is refused for permission, the process exists, and is taken as
// alive.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(fmt.Sprintf("/proc/%d/stat", pid), pid)
	if err == nil {
		return st.state != 'Z' && st.state != 'X'
	}
	// Not readable (hidepid hides it, or /proc is another pid
	// namespace's): ask the kernel.
	err = unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Tgid returns the process (thread group) that pid belongs to: a pid given
// by a user may name one of a process's threads.
func Tgid(pid int) (int, error) {
	data, err := readPID(pid, "status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("parsing Tgid of process %d: %q", pid, v)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("reading Tgid of process %d: no Tgid line", pid)
}

// Command returns pid's command line (/proc/PID/cmdline) split into
// arguments. A kernel thread or a zombie has an empty one.
func Command(pid int) ([]string, error) {
	data, err := readPID(pid, "cmdline")
	if err != nil {
		return nil, err
	}
	return splitNul(data), nil
}

// SelfCommand is Command of the calling process (through /proc/self).
func SelfCommand() ([]string, error) {
	data, err := readFile("/proc/self/cmdline", os.Getpid())
	if err != nil {
		return nil, err
	}
	return splitNul(data), nil
}

func splitNul(data []byte) []string {
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil
	}
	return strings.Split(string(data), "\x00")
}

// NoRank is the rank of a process that no launcher started (or whose
// launcher set none of RankVars).
const NoRank = -1

// RankVars are the launcher variables that carry a process's rank, in the
// order they are read: Open MPI, PMIx, MPICH's PMI (Hydra), Slurm.
var RankVars = []string{"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}

// Rank returns the rank the first of RankVars that holds a non-negative
// integer gives, looking each up with lookup (os.Getenv for the calling
// process), or NoRank.
func Rank(lookup func(string) string) int {
	for _, k := range RankVars {
		if n, err := strconv.Atoi(lookup(k)); err == nil && n >= 0 {
			return n
		}
	}
	return NoRank
}

// SelfRank is Rank of the calling process's environment.
func SelfRank() int { return Rank(os.Getenv) }

// RankFromEnviron is Rank of an environment block as /proc/PID/environ
// holds it (NUL-separated NAME=value).
func RankFromEnviron(environ []byte) int {
	vars := map[string]string{}
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			vars[k] = v
		}
	}
	return Rank(func(k string) string { return vars[k] })
}

// ProcessRank is the launcher rank of pid, read from the environment it
// started with (/proc/PID/environ: reading it needs the rights of ptrace),
// or NoRank.
func ProcessRank(pid int) (int, error) {
	data, err := readPID(pid, "environ")
	if err != nil {
		return NoRank, err
	}
	return RankFromEnviron(data), nil
}

// Mapping is one line of /proc/PID/maps: the addresses [Start, End), the
// permissions ("r-xp") and the file mapped there (empty for anonymous
// memory; " (deleted)" removed).
type Mapping struct {
	Start, End uint64
	Perms      string
	Path       string
}

// Executable reports whether the mapping holds code.
func (m Mapping) Executable() bool { return len(m.Perms) >= 3 && m.Perms[2] == 'x' }

// Maps reads /proc/PID/maps. A process that is gone gives an error
// wrapping ErrNoProcess.
func Maps(pid int) ([]Mapping, error) {
	data, err := readPID(pid, "maps")
	if err != nil {
		return nil, err
	}
	return ParseMaps(data), nil
}

// ParseMaps parses the text of /proc/PID/maps; malformed lines are skipped.
func ParseMaps(data []byte) []Mapping {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := Mapping{Start: start, End: end, Perms: fields[1]}
		if len(fields) >= 6 {
			m.Path = strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		}
		out = append(out, m)
	}
	return out
}

// IsUCXLibrary reports whether the file at path is one of UCX's core
// libraries (libucp, libucs, libuct, libucm), under its usual name
// (libucp.so.0) or a renamed copy (libucp-3f2a1b9c.so.0.0.0, the name
// auditwheel gives the copies Python wheels bundle), and whether it is a
// libucp. The name decides: "libuc" and one of p, s, t, m, then '.' or
// '-', and ".so" somewhere. UCX's plugins (libuct_ib.so, libucm_cuda.so,
// loaded from the ucx/ directory) are not counted: they never call the ucp
// API, so calls from them need no classification, and leaving them out
// keeps the injector's table of code ranges small.
//
// This is the Go twin of ucxf_is_ucx_object (preload/ucx_object.h), which
// the injector uses where it cannot call Go; TestPredicatesAgree builds
// that header and holds the two to the same answers.
func IsUCXLibrary(path string) (ucx, libucp bool) {
	base := filepath.Base(path)
	if len(base) < 7 || !strings.HasPrefix(base, "libuc") || !strings.ContainsRune("pstm", rune(base[5])) ||
		(base[6] != '.' && base[6] != '-') || !strings.Contains(base, ".so") {
		return false, false
	}
	return true, base[5] == 'p'
}

// LibucpCopies returns the distinct libucp files mapped in maps, in the
// order they appear (by address). More than one means the process holds
// copies of UCX side by side (a Python wheel's bundled copy beside the
// system's).
func LibucpCopies(maps []Mapping) []string {
	var out []string
	for _, m := range maps {
		if m.Path == "" {
			continue
		}
		if _, libucp := IsUCXLibrary(m.Path); libucp && !slices.Contains(out, m.Path) {
			out = append(out, m.Path)
		}
	}
	return out
}

// Owner returns the effective uid of pid: the second field of the Uid line
// of /proc/PID/status. It is the uid SO_PEERCRED reports for a socket the
// process listens on (the kernel records the listener's effective uid).
// /proc/PID's own owner is not used: the kernel shows root there for a
// process that is not dumpable.
func Owner(pid int) (int, error) {
	data, err := readPID(pid, "status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) < 2 {
				break
			}
			uid, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("parsing owner of %d: %w", pid, err)
			}
			return uid, nil
		}
	}
	return 0, fmt.Errorf("reading owner of %d: no Uid line in /proc/%d/status", pid, pid)
}
