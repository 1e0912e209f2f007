package observer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	perms      string
	path       string
}

func (m mapping) executable() bool { return len(m.perms) >= 3 && m.perms[2] == 'x' }

// readMaps parses /proc/PID/maps. A process that is gone gives ErrNoProcess.
func readMaps(pid int) ([]mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
		}
		return nil, fmt.Errorf("reading memory map of process %d: %w", pid, err)
	}
	return parseMaps(data), nil
}

func parseMaps(data []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		addr := strings.SplitN(fields[0], "-", 2)
		if len(addr) != 2 {
			continue
		}
		start, err1 := strconv.ParseUint(addr[0], 16, 64)
		end, err2 := strconv.ParseUint(addr[1], 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: start, end: end, perms: fields[1]}
		if len(fields) >= 6 {
			m.path = strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		}
		out = append(out, m)
	}
	return out
}

// libucpPath returns the path of the libucp the process has mapped.
func libucpPath(maps []mapping) (string, bool) {
	for _, m := range maps {
		if strings.Contains(filepath.Base(m.path), "libucp.so") {
			return m.path, true
		}
	}
	return "", false
}

// ucxRange is an executable mapping of a UCX library: a call whose return
// address lies in one is internal.
type ucxRange struct{ start, end uint64 }

// ucxRanges returns the executable mappings of libucp, libucs and libuct
// (including libuct's transport plugins).
func ucxRanges(maps []mapping) []ucxRange {
	var out []ucxRange
	for _, m := range maps {
		if !m.executable() || m.path == "" {
			continue
		}
		base := filepath.Base(m.path)
		if strings.HasPrefix(base, "libucp") || strings.HasPrefix(base, "libucs") || strings.HasPrefix(base, "libuct") {
			out = append(out, ucxRange{m.start, m.end})
		}
	}
	return out
}

// injectorPath returns the path of the ucxfault injector when the process
// has it mapped.
func injectorPath(maps []mapping) (string, bool) {
	for _, m := range maps {
		if m.executable() && strings.HasPrefix(filepath.Base(m.path), "libucxfault") {
			return m.path, true
		}
	}
	return "", false
}

// forwarderRanges returns the executable mappings of the ucxfault injector
// (libucxfault.so), whose wrappers call the real functions on behalf of the
// application.
func forwarderRanges(maps []mapping) []ucxRange {
	var out []ucxRange
	for _, m := range maps {
		if m.executable() && strings.HasPrefix(filepath.Base(m.path), "libucxfault") {
			out = append(out, ucxRange{m.start, m.end})
		}
	}
	return out
}

// tgidOf returns the process (thread group) that pid belongs to: a PID
// given by the user may name one of its threads.
func tgidOf(pid int) (int, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil && n > 0
		}
	}
	return 0, false
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	st := data[i+2]
	return st != 'Z' && st != 'X'
}

// processInfo is what the recording says about the observed process.
type processInfo struct {
	command   []string
	startTime time.Time
	rank      int
}

// readProcessInfo reads what it can; missing pieces stay empty.
func readProcessInfo(pid int) processInfo {
	var info processInfo
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		for _, a := range bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0}) {
			if len(a) > 0 || len(info.command) > 0 {
				info.command = append(info.command, string(a))
			}
		}
	}
	info.startTime = processStart(pid)
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
		info.rank = rankFromEnviron(data)
	}
	return info
}

// rankFromEnviron finds the process's rank in the launcher's variables
// (Open MPI, PMIx, PMI, Slurm); 0 when none is set.
func rankFromEnviron(environ []byte) int {
	vars := map[string]string{}
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			vars[k] = v
		}
	}
	for _, k := range []string{"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"} {
		if n, err := strconv.Atoi(vars[k]); err == nil && n >= 0 {
			return n
		}
	}
	return 0
}

// clockTicks is USER_HZ, which Linux fixes at 100 on every architecture
// ucxfault supports.
const clockTicks = 100

// processStart returns the wall-clock start time of pid, or the zero time.
func processStart(pid int) time.Time {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return time.Time{}
	}
	// Fields after comm start at field 3 (state); starttime is field 22.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	procStat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(procStat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}
			}
			ns := int64(ticks) * int64(time.Second) / clockTicks
			return time.Unix(btime, ns).UTC()
		}
	}
	return time.Time{}
}
