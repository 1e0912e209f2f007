package observer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ucxfault/ucxfault/internal/proc"
)

// mapping is one line of /proc/PID/maps.
type mapping = proc.Mapping

// readMaps reads /proc/PID/maps. A process that is gone gives ErrNoProcess.
func readMaps(pid int) ([]mapping, error) {
	maps, err := proc.Maps(pid)
	if errors.Is(err, proc.ErrNoProcess) {
		return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
	}
	if err != nil {
		return nil, fmt.Errorf("reading memory map of process %d: %w", pid, err)
	}
	return maps, nil
}

// libucpPath returns the path of the libucp the process has mapped, under
// its usual name or a renamed copy (proc.IsUCXLibrary). Where a process
// maps several copies, the probes go on the first.
func libucpPath(maps []mapping) (string, bool) {
	if copies := proc.LibucpCopies(maps); len(copies) > 0 {
		return copies[0], true
	}
	return "", false
}

// ucxRange is an executable mapping of a UCX library: a call whose return
// address lies in one is internal.
type ucxRange struct{ start, end uint64 }

// ucxRanges returns the executable mappings of the UCX libraries
// (proc.IsUCXLibrary: the injector counts the same ones).
func ucxRanges(maps []mapping) []ucxRange {
	var out []ucxRange
	for _, m := range maps {
		if !m.Executable() || m.Path == "" {
			continue
		}
		if ucx, _ := proc.IsUCXLibrary(m.Path); ucx {
			out = append(out, ucxRange{m.Start, m.End})
		}
	}
	return out
}

// injectorPath returns the path of the ucxfault injector when the process
// has it mapped.
func injectorPath(maps []mapping) (string, bool) {
	for _, m := range maps {
		if m.Executable() && strings.HasPrefix(filepath.Base(m.Path), "libucxfault") {
			return m.Path, true
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
		if m.Executable() && strings.HasPrefix(filepath.Base(m.Path), "libucxfault") {
			out = append(out, ucxRange{m.Start, m.End})
		}
	}
	return out
}

// processInfo is what the recording says about the observed process.
type processInfo struct {
	command   []string
	startTime time.Time
	rank      int
}

// readProcessInfo reads what it can; missing pieces stay empty, and the
// rank is proc.NoRank (-1) when no launcher set one or the environment
// cannot be read.
func readProcessInfo(pid int) processInfo {
	info := processInfo{rank: proc.NoRank}
	info.command, _ = proc.Command(pid)
	info.startTime, _ = proc.StartWall(pid)
	if r, err := proc.ProcessRank(pid); err == nil {
		info.rank = r
	}
	return info
}
