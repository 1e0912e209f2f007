// Package observer watches a running UCX application with eBPF: a uprobe and
// a uretprobe on every hooked ucp_* function of the libucp the process has
// mapped (under its usual name or a renamed copy such as a Python wheel's
// libucp-<hash>.so; internal/proc reads the process's map and says which
// files are UCX), one row of hooks.Table each, report every application call, its
// arguments, its return value and its duration, and the observer turns them
// into a recording (recording.SourceObserver) of what really happened,
// without touching the process.
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
	"errors"
	"fmt"
	"github.com/cilium/ebpf"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/abi"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
)

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64,arm64 -cflags "-mcpu=v3 -Wall -Werror" -type event -type hook_cfg -type lib_ranges -type stack -type counter observer ../bpf/observer.bpf.c

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

// Session is one observation of one process. Start it with Start and end it
// with Stop, which detaches the probes.
type Session struct {
	// Missing names the selected hooks this process's libucp does not
	// export (rows newer than its release, hooks.Hook.Since): they are not
	// probed. Set by Start; read-only after.
	Missing []string

	pid      int
	hookIDs  []hooks.ID
	info     processInfo
	created  time.Time
	armedNS  uint64
	objs     observerObjects
	links    []link.Link // uprobes first, then uretprobes
	reader   *ringbuf.Reader
	readDone chan struct{}
	readErr  error
	exited   chan struct{}
	quit     chan struct{}
	bg       sync.WaitGroup

	mu     sync.Mutex
	corr   *correlator
	calls  atomic.Uint64
	ranges []ucxRange

	stopOnce sync.Once
	stopped  bool
}

// Start attaches the probes to the process opts.PID and starts recording.
// It fails with an error wrapping ErrNoProcess, ErrNoLibucp, ErrPermission
// or ErrKernelSupport when observing is impossible. Call Stop to detach.
func Start(opts *Options) (*Session, error) {
	return StartContext(context.Background(), opts)
}

// StartContext is Start; ctx bounds the wait for libucp when opts.Wait is
// set.
func StartContext(ctx context.Context, opts *Options) (_ *Session, err error) {
	if opts == nil || opts.PID <= 0 {
		return nil, fmt.Errorf("observing: no PID given")
	}
	pid := opts.PID
	ids, err := selectHooks(opts.Hooks)
	if err != nil {
		return nil, err
	}
	if opts.RingSize != 0 {
		if err := checkRingSize(opts.RingSize); err != nil {
			return nil, fmt.Errorf("observing: %w", err)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil || !proc.Alive(pid) {
		return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
	}
	if tgid, err := proc.Tgid(pid); err == nil {
		pid = tgid // the probes and the filter work per process
	}
	if err := CheckSupport(); err != nil {
		return nil, err
	}

	maps, libPath, err := waitForLibucp(ctx, pid, opts.Wait)
	if err != nil {
		return nil, err
	}

	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock limit: %w", err)
	}

	s := &Session{
		pid:      pid,
		hookIDs:  ids,
		info:     readProcessInfo(pid),
		created:  time.Now().UTC(),
		readDone: make(chan struct{}),
		exited:   make(chan struct{}),
		quit:     make(chan struct{}),
		corr:     newCorrelator(),
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()

	spec, err := loadObserver()
	if err != nil {
		return nil, fmt.Errorf("loading eBPF spec: %w", err)
	}
	if opts.RingSize != 0 {
		spec.Maps[observerMapEvents].MaxEntries = uint32(opts.RingSize)
	}
	if err := spec.Variables[observerVarTargetTgid].Set(uint32(pid)); err != nil {
		return nil, fmt.Errorf("setting target PID: %w", err)
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("loading eBPF objects: %w", err)
	}
	for _, id := range ids {
		h := &hooks.Table[id]
		cfg := observerHookCfg{
			SizeArg:  uint8(h.ArgIndex(h.Size)),
			EpArg:    uint8(h.ArgIndex(h.Endpoint)),
			RaddrArg: uint8(h.ArgIndex(h.RemoteAddr)),
			ReqArg:   uint8(h.ArgIndex(h.Request)),
			RetKind:  uint8(h.Return),
			Enabled:  1,
		}
		if err := s.objs.HookCfgs.Put(uint32(id), &cfg); err != nil {
			return nil, fmt.Errorf("configuring hook %s: %w", h.Name, err)
		}
	}
	if err := s.setRanges(maps); err != nil {
		return nil, err
	}
	s.reader, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}

	// Through /proc/PID/root, so that a process in another mount
	// namespace (a container) is probed in its own libucp.
	ex, err := link.OpenExecutable(fmt.Sprintf("/proc/%d/root%s", pid, libPath))
	if err != nil {
		if !proc.Alive(pid) {
			return nil, fmt.Errorf("%w: %d exited", ErrNoProcess, pid)
		}
		return nil, fmt.Errorf("opening %s: %w", libPath, err)
	}
	// Under the ucxfault injector, calls it fails never reach libucp: its
	// ucxf_fault_marker reports each of them.
	if inj, ok := injectorPath(maps); ok {
		injEx, err := link.OpenExecutable(fmt.Sprintf("/proc/%d/root%s", pid, inj))
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", inj, err)
		}
		l, err := injEx.Uprobe("ucxf_fault_marker", s.objs.UcxfMarker, &link.UprobeOptions{PID: pid})
		if err != nil {
			return nil, s.attachError("ucxf_fault_marker", inj, err)
		}
		s.links = append(s.links, l)
	}
	// Real endpoint failures: libucp calls an endpoint's error handler
	// through its exported ucp_ep_invoke_err_cb. A libucp without it
	// (not seen: 1.13.1 and 1.22.0 export it) records no endpoint events.
	if l, err := ex.Uprobe("ucp_ep_invoke_err_cb", s.objs.UcxfEpErr, &link.UprobeOptions{PID: pid}); err == nil {
		s.links = append(s.links, l)
	} else if !errors.Is(err, link.ErrNoSymbol) {
		return nil, s.attachError("ucp_ep_invoke_err_cb", libPath, err)
	}
	// Entries first: a call entered before its return probe exists is
	// discarded by the BPF program (it is entered before armed_ns is set),
	// while a return without an entry would count as lost.
	missing := map[hooks.ID]bool{}
	for _, id := range ids {
		h := &hooks.Table[id]
		l, err := ex.Uprobe(h.Name, s.objs.UcxfEntry, &link.UprobeOptions{PID: pid, Cookie: uint64(id)})
		if err != nil && h.Since != "" && errors.Is(err, link.ErrNoSymbol) {
			// Newer than this libucp (the GPU device API of 1.20+ on an
			// older UCX): nothing to probe, nothing ever called.
			missing[id] = true
			s.Missing = append(s.Missing, h.Name)
			continue
		}
		if err != nil {
			return nil, s.attachError(h.Name, libPath, err)
		}
		s.links = append(s.links, l)
	}
	for _, id := range ids {
		h := &hooks.Table[id]
		if missing[id] {
			continue
		}
		l, err := ex.Uretprobe(h.Name, s.objs.UcxfReturn, &link.UprobeOptions{PID: pid, Cookie: uint64(id)})
		if err != nil {
			return nil, s.attachError(h.Name, libPath, err)
		}
		s.links = append(s.links, l)
	}
	// The loader may have mapped more of UCX since the first look
	// (Options.Wait attaches as soon as libucp appears).
	if maps, err := readMaps(pid); err == nil {
		if err := s.setRanges(maps); err != nil {
			return nil, err
		}
	}
	s.armedNS = monotonicNS()
	if err := s.objs.ArmedNs.Set(s.armedNS); err != nil {
		return nil, fmt.Errorf("arming probes: %w", err)
	}

	go s.readLoop()
	s.bg.Add(2)
	go s.watchExit()
	go s.refreshRanges()
	return s, nil
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
			return nil, "", fmt.Errorf("%w: process %d has no libucp.so mapped (--wait, or Options.Wait, waits for it)", ErrNoLibucp, pid)
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

func (s *Session) attachError(fn, lib string, err error) error {
	if !proc.Alive(s.pid) {
		return fmt.Errorf("%w: %d exited while attaching", ErrNoProcess, s.pid)
	}
	return fmt.Errorf("attaching probes to %s in %s: %w", fn, lib, err)
}

// setRanges tells the BPF program which return addresses are internal,
// and which belong to the injector's wrappers.
func (s *Session) setRanges(maps []mapping) error {
	rs, fw := ucxRanges(maps), forwarderRanges(maps)
	for _, set := range []struct {
		m  *ebpf.Map
		rs []ucxRange
	}{{s.objs.InternalRanges, rs}, {s.objs.ForwarderRanges, fw}} {
		var lr observerLibRanges
		n := min(len(set.rs), len(lr.R))
		for i, r := range set.rs[:n] {
			lr.R[i].Start, lr.R[i].End = r.start, r.end
		}
		lr.Count = uint32(n)
		if err := set.m.Put(uint32(0), &lr); err != nil {
			return fmt.Errorf("setting UCX address ranges: %w", err)
		}
	}
	s.ranges = append(rs, fw...)
	return nil
}

// refreshRanges follows libraries UCX loads later (transport plugins).
func (s *Session) refreshRanges() {
	defer s.bg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		maps, err := readMaps(s.pid)
		if err != nil {
			return
		}
		if rs := append(ucxRanges(maps), forwarderRanges(maps)...); !slices.Equal(rs, s.ranges) {
			_ = s.setRanges(maps) // best effort; the old ranges stay
		}
	}
}

// watchExit closes s.exited when the process exits.
func (s *Session) watchExit() {
	defer s.bg.Done()
	fd, err := unix.PidfdOpen(s.pid, 0)
	if err == nil {
		defer unix.Close(fd)
	}
	for {
		if err == nil {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, perr := unix.Poll(fds, 100)
			if perr == nil && n > 0 {
				close(s.exited)
				return
			}
		} else {
			if !proc.Alive(s.pid) {
				close(s.exited)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		select {
		case <-s.quit:
			return
		default:
		}
	}
}

// Exited is closed when the observed process exits (or is a zombie).
func (s *Session) Exited() <-chan struct{} { return s.exited }

// PID returns the observed process.
func (s *Session) PID() int { return s.pid }

// Hooks returns the probed functions.
func (s *Session) Hooks() []hooks.ID { return slices.Clone(s.hookIDs) }

// readPoll bounds how long an event can wait in the ring buffer.
const readPoll = 20 * time.Millisecond

// readLoop drains the ring buffer until it is flushed or closed.
func (s *Session) readLoop() {
	defer close(s.readDone)
	var rec ringbuf.Record
	for {
		// The probes do not wake the reader for each event (submit() in
		// bpf/observer.bpf.c): poll at least this often.
		s.reader.SetDeadline(time.Now().Add(readPoll))
		err := s.reader.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
			return
		default:
			s.readErr = fmt.Errorf("reading ring buffer: %w", err)
			return
		}
		ev, ok := decodeEvent(rec.RawSample)
		if !ok {
			continue
		}
		s.mu.Lock()
		s.corr.add(ev)
		s.mu.Unlock()
		if !ev.Completion {
			s.calls.Add(1) // a delivery is not a call
		}
	}
}

const eventSize = int(unsafe.Sizeof(observerEvent{}))

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
func decodeEvent(b []byte) (rawCall, bool) {
	if len(b) < eventSize {
		return rawCall{}, false
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
	}, true
}

// kernelCounters sums the per-CPU counters of the BPF program.
func (s *Session) kernelCounters() ([observerCounterCNT_MAX]uint64, error) {
	var out [observerCounterCNT_MAX]uint64
	for i := range out {
		var per []uint64
		if err := s.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("reading counters: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// Stats returns the live counters. It may be called at any time, also
// concurrently with Stop.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	st := Stats{Calls: s.calls.Load(), Errors: s.corr.errors}
	s.mu.Unlock()
	if k, err := s.kernelCounters(); err == nil {
		s.addKernel(&st, k)
	}
	return st
}

func (s *Session) addKernel(st *Stats, k [observerCounterCNT_MAX]uint64) {
	st.Internal = k[observerCounterCNT_INTERNAL]
	st.DroppedEvents = k[observerCounterCNT_DROPPED]
	st.UnmatchedReturns = k[observerCounterCNT_UNMATCHED_RET]
	st.UnmatchedEntries = k[observerCounterCNT_OVERWRITTEN] + k[observerCounterCNT_STALE] + k[observerCounterCNT_NO_STACK]
}

// frame flags of bpf/observer.bpf.c.
const (
	frameInternal = 1
	framePrearm   = 2
)

// inProgress counts the application calls left on the per-thread stacks:
// entered but never returned while probed.
func (s *Session) inProgress() (uint64, error) {
	var (
		tid uint32
		st  observerStack
		n   uint64
	)
	it := s.objs.Stacks.Iterate()
	for it.Next(&tid, &st) {
		for i := uint32(0); i < st.Count && i < uint32(len(st.F)); i++ {
			f := st.F[(st.Top-1-i)%uint32(len(st.F))]
			if f.Flags&(frameInternal|framePrearm) == 0 {
				n++
			}
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading thread stacks: %w", err)
	}
	return n, nil
}

// settle is how long Stop lets calls in progress return before detaching.
const settle = 20 * time.Millisecond

// Stop detaches all probes, drains the events still in the ring buffer and
// returns the recording and the final counters. The recording is Complete
// only when nothing was lost. Stop may be called once; the session's kernel
// objects are released when it returns.
func (s *Session) Stop() (*recording.File, Stats, error) {
	var (
		f   *recording.File
		st  Stats
		err error
	)
	called := false
	s.stopOnce.Do(func() {
		called = true
		f, st, err = s.stop()
	})
	if !called {
		return nil, Stats{}, fmt.Errorf("stopping observer: already stopped")
	}
	return f, st, err
}

func (s *Session) stop() (*recording.File, Stats, error) {
	defer s.closeAll()
	var errs []error
	// No new entries from now on; calls in progress may still return.
	if err := s.objs.StopNs.Set(monotonicNS()); err != nil {
		errs = append(errs, fmt.Errorf("stopping probes: %w", err))
	}
	time.Sleep(settle)
	for _, l := range s.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching probe: %w", err))
		}
	}
	s.links = nil
	if err := s.reader.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("flushing ring buffer: %w", err))
		s.reader.Close()
	}
	<-s.readDone
	if s.readErr != nil {
		errs = append(errs, s.readErr)
	}

	st := s.Stats()
	k, err := s.kernelCounters()
	if err != nil {
		errs = append(errs, err)
	}
	s.addKernel(&st, k)
	left, err := s.inProgress()
	if err != nil {
		errs = append(errs, err)
	}
	st.UnmatchedEntries += left

	s.mu.Lock()
	calls, events := s.corr.finishAll(s.armedNS)
	st.Errors = s.corr.errors // exact now that requests are followed
	s.mu.Unlock()

	names := make([]string, len(s.hookIDs))
	for i, id := range s.hookIDs {
		names[i] = hooks.Table[id].Name
	}
	host, _ := os.Hostname()
	lost := recording.Lost{
		DroppedEvents:    st.DroppedEvents,
		UnmatchedEntries: st.UnmatchedEntries,
		UnmatchedReturns: st.UnmatchedReturns,
	}
	f := recording.New(recording.SourceObserver)
	f.Created = s.created
	f.Processes = []recording.Process{{
		Host:      host,
		PID:       s.pid,
		Rank:      s.info.rank,
		Command:   s.info.command,
		StartTime: s.info.startTime,
		Hooks:     names,
		Lost:      lost,
		Complete:  !lost.Any(),
		// Endpoint numbers are the calls' (order of first use since the
		// probes were armed).
		EndpointEvents: events,
		Calls:          calls,
	}}
	return f, st, errors.Join(errs...)
}

// closeAll releases everything; safe on a partly started session.
func (s *Session) closeAll() {
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.quit)
	for _, l := range s.links {
		l.Close()
	}
	s.links = nil
	if s.reader != nil {
		s.reader.Close()
	}
	s.bg.Wait()
	s.objs.Close()
}

func monotonicNS() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
