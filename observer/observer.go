// Package observer watches a running UCX application with eBPF: a uprobe and
// a uretprobe on every hooked ucp_* function of the libucp the process has
// mapped (under its usual name or a renamed copy such as a Python wheel's
// libucp-<hash>.so; internal/proc reads the process's map and says which
// files are UCX), one row of hooks.Table each, report every application call, its
// arguments, its return value and its duration, and the observer turns them
// into a recording (recording.SourceObserver) of what really happened,
// without touching the process.
//
// One Node (StartNode) watches many processes with one set of kernel
// objects: the probes are set once per libucp file for every process that
// maps it, and the BPF programs keep the calls of the processes in their
// map of watched ones, so watching more processes costs no call more. It
// follows processes that start later (NodeOptions.All, narrowed by Comm and
// Cgroup), keeps the part of those that exit, and can keep only a window of
// each process's calls and write an incident when one fails (the flight
// recorder, FlightOptions). Session (Start) is a Node of one process.
//
// Calls that libucp makes to its own exported functions (ucp_put_nbi calls
// ucp_put_nbx through its PLT) are recognised by their return address,
// counted and left out, so that the observer counts the same application
// calls as the injector. Every event lost on the way is counted; a recording
// that misses anything says so (Process.Complete is false).
//
// Observing needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and a
// kernel with uprobes, BTF and BPF ring buffers; attach cookies need Linux
// 5.15 or later.
package observer

import (
	"context"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/abi"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
)

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64,arm64 -cflags "-mcpu=v3 -Wall -Werror" -type event -type hook_cfg -type lib_ranges -type stack -type counter -type proc -type counts observer ../bpf/observer.bpf.c

// Options configure Start.
type Options struct {
	// PID is the process to observe.
	PID int
	// Hooks selects the functions to probe; nil means every row of
	// hooks.Table.
	Hooks []hooks.ID
	// Wait makes Start wait until the process maps libucp instead of
	// failing with ErrNoLibucp.
	Wait bool
	// RingSize is the size in bytes of the ring buffer that carries calls
	// from the kernel: a power of two and a multiple of the page size.
	// Zero means DefaultRingSize. A call that finds it full is lost and
	// counted (Stats.DroppedEvents); each call takes 80 bytes.
	RingSize int
}

// DefaultRingSize is the ring buffer's size when Options.RingSize is zero.
const DefaultRingSize = 8 << 20

// checkRingSize validates Options.RingSize.
func checkRingSize(n int) error {
	page := os.Getpagesize()
	if n < page || n > 1<<30 || n&(n-1) != 0 || n%page != 0 {
		return fmt.Errorf("ring buffer size %d: want a power of two from %d (the page size) to %d", n, page, 1<<30)
	}
	return nil
}

// Stats are a session's counters.
type Stats struct {
	// Calls counts the application calls received.
	Calls uint64
	// Errors counts the calls known to have failed, immediately or at
	// completion: while the session runs, an estimate (failures seen in
	// calls and deliveries); from Stop, the recording's failed calls.
	Errors uint64
	// Internal counts the calls libucp made to its own hooked functions,
	// dropped in the kernel.
	Internal uint64
	// DroppedEvents counts the calls the ring buffer could not take.
	DroppedEvents uint64
	// UnmatchedReturns counts returns whose entry was not recorded.
	UnmatchedReturns uint64
	// UnmatchedEntries counts entries whose return was never seen:
	// overwritten by a full per-thread stack, skipped by a later return,
	// not stored because the stack map was full, or (after Stop) still in
	// progress when the probes were detached.
	UnmatchedEntries uint64
}

// Lost returns the number of calls the recording misses or cannot trust.
func (s Stats) Lost() uint64 {
	return s.DroppedEvents + s.UnmatchedReturns + s.UnmatchedEntries
}

// Session is one observation of one process: a Node watching one PID.
// Start it with Start and end it with Stop, which detaches the probes.
type Session struct {
	// Missing names the selected hooks this process's libucp does not
	// export (rows newer than its release, hooks.Hook.Since): they are not
	// probed. Set by Start; read-only after.
	Missing []string

	n      *Node
	pid    int
	exited <-chan struct{}
}

// Start attaches the probes to the process opts.PID and starts recording.
// It fails with an error wrapping ErrNoProcess, ErrNoLibucp, ErrPermission
// or ErrKernelSupport when observing is impossible. Call Stop to detach.
func Start(opts *Options) (*Session, error) {
	return StartContext(context.Background(), opts)
}

// StartContext is Start; ctx bounds the wait for libucp when opts.Wait is
// set.
func StartContext(ctx context.Context, opts *Options) (*Session, error) {
	if opts == nil || opts.PID <= 0 {
		return nil, fmt.Errorf("observing: no PID given")
	}
	n, err := StartNode(ctx, &NodeOptions{PIDs: []int{opts.PID}, Hooks: opts.Hooks, Wait: opts.Wait, RingSize: opts.RingSize})
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	t := n.parts[0]
	n.mu.Unlock()
	return &Session{Missing: n.Missing(), n: n, pid: t.pid, exited: t.exited}, nil
}

// Exited is closed when the observed process exits (or is a zombie).
func (s *Session) Exited() <-chan struct{} { return s.exited }

// PID returns the observed process.
func (s *Session) PID() int { return s.pid }

// Hooks returns the probed functions.
func (s *Session) Hooks() []hooks.ID { return s.n.Hooks() }

// Stats returns the live counters. It may be called at any time, also
// concurrently with Stop.
func (s *Session) Stats() Stats {
	_, total := s.n.Stats()
	return total
}

// Stop detaches all probes, drains the events still in the ring buffer and
// returns the recording and the final counters. The recording is Complete
// only when nothing was lost. Stop may be called once; the session's kernel
// objects are released when it returns.
func (s *Session) Stop() (*recording.File, Stats, error) {
	f, ps, err := s.n.Stop()
	if f == nil {
		return nil, Stats{}, err
	}
	var st Stats
	for _, p := range ps {
		st.add(p.Stats)
	}
	return f, st, err
}

// selectHooks validates the requested hooks; nil selects the whole table.
func selectHooks(req []hooks.ID) ([]hooks.ID, error) {
	var ids []hooks.ID
	if req == nil {
		for i := range hooks.Table {
			if !hooks.Table[i].NoProbe {
				ids = append(ids, hooks.ID(i))
			}
		}
		return ids, nil
	}
	seen := map[hooks.ID]bool{}
	for _, id := range req {
		if int(id) >= len(hooks.Table) {
			return nil, fmt.Errorf("selecting hooks: no hook with id %d", id)
		}
		if hooks.Table[id].NoProbe {
			return nil, fmt.Errorf("selecting hooks: %s is never probed (called too often for a uprobe)", hooks.Table[id].Name)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("selecting hooks: empty selection")
	}
	return ids, nil
}

// waitForLibucp returns the process's mappings once libucp is among them.
func waitForLibucp(ctx context.Context, pid int, wait bool) ([]mapping, string, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		maps, err := readMaps(pid)
		if err != nil && (!wait || !proc.Alive(pid)) {
			return nil, "", err
		}
		// (While the process execs, its map may briefly be unreadable.)
		if path, ok := libucpPath(maps); ok {
			return maps, path, nil
		}
		if !wait {
			return nil, "", fmt.Errorf("%w: process %d has no libucp.so mapped (ucxfault observe --wait waits for it)", ErrNoLibucp, pid)
		}
		if !proc.Alive(pid) {
			return nil, "", fmt.Errorf("%w: %d exited before loading libucp", ErrNoProcess, pid)
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("waiting for process %d to load libucp: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
}

const eventSize = int(unsafe.Sizeof(observerEvent{}))

// hookHello is HOOK_HELLO of bpf/observer.bpf.c: not a call, but an
// unwatched process's first call of a probed function.
const hookHello = hooks.ID(0xffff)

// Event flags: UCXF_MARK_* of the injector's marker, which the BPF program
// passes on (generated from hooks.ABI into internal/abi and
// preload/abi_gen.h).
const (
	eventInjected   = uint16(abi.MarkInjected)
	eventCompletion = uint16(abi.MarkCompletion)
	eventUnlearned  = uint16(abi.MarkUnlearned)
	eventEPFailure  = uint16(abi.MarkEPFailure)
)

// decodeEvent reads a struct event (bpf/observer.bpf.c), in host byte
// order, into its bpf2go-generated type: bpf2go lays out observerEvent as
// clang laid out the struct, so the copy needs no offsets.
// It also returns the process (tgid) the event belongs to.
func decodeEvent(b []byte) (rawCall, int, bool) {
	if len(b) < eventSize {
		return rawCall{}, 0, false
	}
	var e observerEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&e)), eventSize), b)
	return rawCall{
		EntryNS:    e.EntryNs,
		DurationNS: e.DurationNs,
		Ret:        e.Ret,
		Size:       e.Size,
		EP:         e.Ep,
		Req:        e.Req,
		TID:        e.Tid,
		Hook:       hooks.ID(e.Hook),
		Injected:   e.Flags&eventInjected != 0,
		Completion: e.Flags&eventCompletion != 0,
		Unlearned:  e.Flags&eventUnlearned != 0,
		EPFailure:  e.Flags&eventEPFailure != 0,
	}, int(e.Pid), true
}

// frame flags of bpf/observer.bpf.c.
const (
	frameInternal = 1
	framePrearm   = 2
)

func monotonicNS() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
