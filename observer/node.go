package observer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// NodeOptions configure StartNode. The processes watched are those named in
// PIDs, plus, with All, every process that maps a libucp now or later and
// passes the Comm and Cgroup filters.
type NodeOptions struct {
	// PIDs are processes to observe (a thread's id names its process).
	PIDs []int
	// All watches every process of this pid namespace (as /proc shows it)
	// that maps a libucp, including the ones that start or load libucp
	// while the observer runs.
	All bool
	// Comm, when set, keeps only the processes whose name
	// (/proc/PID/comm, at most 15 bytes) is Comm. Implies All when PIDs is
	// empty.
	Comm string
	// Cgroup, when set, keeps only the processes in this cgroup or below
	// it: a path as /proc/PID/cgroup shows it (/kubepods/pod1234) or under
	// /sys/fs/cgroup. A Kubernetes pod or a Slurm job is a cgroup. Implies
	// All when PIDs is empty.
	Cgroup string
	// Hooks selects the functions to probe; nil means every row of
	// hooks.Table that is probed by default.
	Hooks []hooks.ID
	// Wait makes StartNode wait until each process of PIDs maps libucp
	// instead of failing with ErrNoLibucp.
	Wait bool
	// RingSize is the ring buffer's size in bytes (see Options.RingSize).
	RingSize int
	// Scan is how often the watched processes are checked for exit;
	// /proc is read for new processes and for the libraries the watched
	// ones load later at four times it. Zero means DefaultScan.
	Scan time.Duration
	// Flight, when not nil, keeps only a window of each process's calls
	// and writes incidents (see FlightOptions).
	Flight *FlightOptions
	// Log, when not nil, receives one line for each process watched or
	// exited and each incident written.
	Log func(format string, args ...any)
}

// DefaultScan is NodeOptions.Scan's default: an exit is seen within this
// time, and (at four times it) the libraries a watched process loads and a
// process that loads a libucp file not probed yet. A process that calls a
// libucp whose file is probed already is announced by the probes at its
// first call and watched at once. Calls before a process is watched are
// not recorded.
const DefaultScan = 250 * time.Millisecond

// maxProcs is how many processes one observer watches at once (the size of
// the procs and counters maps).
const maxProcs = 1024

// Node observes the processes of one machine in one set of kernel objects:
// one ring buffer, and one set of probes per libucp file, shared by every
// process that maps it. Start it with StartNode, end it with Stop.
type Node struct {
	opts    NodeOptions
	hookIDs []hooks.ID
	created time.Time
	armedNS uint64
	host    string

	objs     observerObjects
	reader   *ringbuf.Reader
	readDone chan struct{}
	readErr  error
	quit     chan struct{}
	bg       sync.WaitGroup
	filter   procFilter // the processes All takes

	attachMu sync.Mutex // files, and the order of attaching and watching
	files    map[fileKey]*probedFile
	missing  []string

	mu      sync.Mutex
	procs   map[int]*target       // watched (and exited ones until replaced), by tgid
	parts   []*target             // every process ever watched, in order
	checked map[procKey]time.Time // looked at with All and not watched: when (zero: for good)
	hellos  chan int              // processes the probes announced (HOOK_HELLO)
	calls   atomic.Uint64
	flight  *flightRecorder

	stopOnce sync.Once
	stopped  bool
}

// procKey names one process across pid reuse.
type procKey struct {
	pid   int
	start uint64
}

// target is one watched process: its part of the recording.
type target struct {
	pid    int
	key    procKey
	info   processInfo
	comm   string
	ranges []ucxRange
	corr   *correlator
	flight *flightBuffer
	exited chan struct{}
	calls  uint64 // application calls received
	// fns counts the calls by function in flight mode, where the calls
	// themselves are not all kept.
	fns     map[hooks.ID]*FuncSummary
	gone    bool  // exited and released from the kernel maps
	final   Stats // kernel counters read when it exited
	watched time.Time
}

// StartNode loads the eBPF objects, attaches the probes to the libucp of
// every process of opts.PIDs (and, with All, of every process that maps
// one) and starts recording. With PIDs it fails as Start does (ErrNoProcess,
// ErrNoLibucp, ErrPermission, ErrKernelSupport) when one of them cannot be
// observed. Call Stop to detach.
func StartNode(ctx context.Context, opts *NodeOptions) (_ *Node, err error) {
	if opts == nil {
		opts = &NodeOptions{}
	}
	o := *opts
	if len(o.PIDs) == 0 && (o.Comm != "" || o.Cgroup != "") {
		o.All = true
	}
	if len(o.PIDs) == 0 && !o.All {
		return nil, fmt.Errorf("observing: no PID given (or --all)")
	}
	if o.Scan <= 0 {
		o.Scan = DefaultScan
	}
	ids, err := selectHooks(o.Hooks)
	if err != nil {
		return nil, err
	}
	if o.RingSize != 0 {
		if err := checkRingSize(o.RingSize); err != nil {
			return nil, fmt.Errorf("observing: %w", err)
		}
	}
	if o.Flight != nil {
		if err := o.Flight.check(); err != nil {
			return nil, fmt.Errorf("observing: %w", err)
		}
	}
	var pids []int
	for _, pid := range o.PIDs {
		if pid <= 0 {
			return nil, fmt.Errorf("observing: PID %d is not a process", pid)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil || !proc.Alive(pid) {
			return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
		}
		if tgid, err := proc.Tgid(pid); err == nil {
			pid = tgid // the probes and the filter work per process
		}
		if !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	if err := CheckSupport(); err != nil {
		return nil, err
	}
	// The explicit processes first: waiting for them (Wait) happens before
	// anything is loaded.
	maps := make([][]mapping, len(pids))
	for i, pid := range pids {
		if maps[i], _, err = waitForLibucp(ctx, pid, o.Wait); err != nil {
			return nil, err
		}
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock limit: %w", err)
	}
	host, _ := os.Hostname()
	n := &Node{
		opts:     o,
		hookIDs:  ids,
		created:  time.Now().UTC(),
		host:     host,
		readDone: make(chan struct{}),
		quit:     make(chan struct{}),
		files:    map[fileKey]*probedFile{},
		procs:    map[int]*target{},
		checked:  map[procKey]time.Time{},
		hellos:   make(chan int, 256),
		filter:   procFilter{all: true, comm: o.Comm, cgroup: cgroupPath(o.Cgroup)},
	}
	if o.Flight != nil {
		n.flight = newFlightRecorder(n, o.Flight)
	}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	if err := n.load(); err != nil {
		return nil, err
	}
	// One explicit process on its own keeps the kernel's own filter:
	// the other processes that map the same libucp take no trap at all.
	solo := len(pids) == 1 && !o.All
	for i, pid := range pids {
		if err := n.watch(pid, maps[i], solo); err != nil {
			return nil, err
		}
	}
	n.armedNS = monotonicNS()
	if err := n.objs.ArmedNs.Set(n.armedNS); err != nil {
		return nil, fmt.Errorf("arming probes: %w", err)
	}
	if o.All {
		n.scanAll()
	}
	go n.readLoop()
	n.bg.Add(1)
	go n.follow()
	if n.flight != nil {
		n.bg.Add(1)
		go n.flight.run()
	}
	return n, nil
}

// load loads the eBPF objects and configures the hooks.
func (n *Node) load() error {
	spec, err := loadObserver()
	if err != nil {
		return fmt.Errorf("loading eBPF spec: %w", err)
	}
	if n.opts.RingSize != 0 {
		spec.Maps[observerMapEvents].MaxEntries = uint32(n.opts.RingSize)
	}
	spec.Maps[observerMapProcs].MaxEntries = maxProcs
	spec.Maps[observerMapCounters].MaxEntries = maxProcs
	if n.opts.All {
		if err := spec.Variables[observerVarDiscover].Set(uint8(1)); err != nil {
			return fmt.Errorf("setting discovery: %w", err)
		}
	}
	if dev, ino, ok := ownPidNamespace(); ok {
		if err := spec.Variables[observerVarPidnsDev].Set(dev); err != nil {
			return fmt.Errorf("setting pid namespace: %w", err)
		}
		if err := spec.Variables[observerVarPidnsIno].Set(ino); err != nil {
			return fmt.Errorf("setting pid namespace: %w", err)
		}
	}
	if err := spec.LoadAndAssign(&n.objs, nil); err != nil {
		return fmt.Errorf("loading eBPF objects: %w", err)
	}
	for _, id := range n.hookIDs {
		h := &hooks.Table[id]
		cfg := observerHookCfg{
			SizeArg:  uint8(h.ArgIndex(h.Size)),
			EpArg:    uint8(h.ArgIndex(h.Endpoint)),
			OutEpArg: uint8(h.ArgIndex(h.OutEndpoint)),
			RaddrArg: uint8(h.ArgIndex(h.RemoteAddr)),
			ReqArg:   uint8(h.ArgIndex(h.Request)),
			RetKind:  uint8(h.Return),
			Enabled:  1,
		}
		if err := n.objs.HookCfgs.Put(uint32(id), &cfg); err != nil {
			return fmt.Errorf("configuring hook %s: %w", h.Name, err)
		}
	}
	n.reader, err = ringbuf.NewReader(n.objs.Events)
	if err != nil {
		return fmt.Errorf("opening ring buffer: %w", err)
	}
	return nil
}

// watch probes the libucp files pid maps (once per file) and adds pid to the
// watched processes. The process is added to the kernel's filter only once
// the probes of its libucp are in place, so that none of its calls is half
// seen.
func (n *Node) watch(pid int, maps []mapping, solo bool) error {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	if err := n.probeFiles(pid, maps, solo); err != nil {
		return err
	}
	start, _ := proc.StartTime(pid)
	t := &target{
		pid:     pid,
		key:     procKey{pid, start},
		info:    readProcessInfo(pid),
		comm:    readComm(pid),
		corr:    newCorrelator(),
		exited:  make(chan struct{}),
		watched: time.Now(),
	}
	if n.flight != nil {
		t.flight = n.flight.newBuffer()
	}
	n.mu.Lock()
	old := n.procs[pid]
	n.mu.Unlock()
	if old != nil && !old.gone {
		return nil // watched already
	}
	// Zeroed counters first (the programs only look them up), then the
	// process's entry, which turns its probes on.
	zero := make([]observerCounts, ebpf.MustPossibleCPU())
	if err := n.objs.Counters.Put(uint32(pid), zero); err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	n.mu.Lock()
	n.procs[pid] = t
	n.parts = append(n.parts, t)
	n.mu.Unlock()
	if err := n.setRanges(t, maps); err != nil {
		return err
	}
	if n.opts.Log != nil {
		n.opts.Log("watching process %d (%s, rank %d)", pid, t.comm, t.info.rank)
	}
	return nil
}

// setRanges writes the process's entry: its UCX code and the injector's,
// which tell internal calls apart.
func (n *Node) setRanges(t *target, maps []mapping) error {
	rs, fw := ucxRanges(maps), forwarderRanges(maps)
	var p observerProc
	fill := func(lr *observerLibRanges, rs []ucxRange) {
		k := min(len(rs), len(lr.R))
		for i, r := range rs[:k] {
			lr.R[i].Start, lr.R[i].End = r.start, r.end
		}
		lr.Count = uint32(k)
	}
	fill(&p.Internal, rs)
	fill(&p.Forwarder, fw)
	if err := n.objs.Procs.Put(uint32(t.pid), &p); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("setting UCX address ranges of process %d: %w", t.pid, err)
	}
	t.ranges = append(rs, fw...)
	return nil
}

// release removes an exited process from the kernel's maps, after reading
// its final counters and counting the calls it left in progress.
func (n *Node) release(t *target) {
	k, _ := n.countersOf(t.pid)
	var st Stats
	addKernel(&st, k)
	st.UnmatchedEntries += n.dropStacks(t.pid)
	_ = n.objs.Procs.Delete(uint32(t.pid))
	_ = n.objs.Counters.Delete(uint32(t.pid))
	_ = n.objs.Seen.Delete(uint32(t.pid)) // a process that reuses the pid is announced
	n.mu.Lock()
	t.final = st
	t.gone = true
	n.mu.Unlock()
	close(t.exited)
	if n.opts.Log != nil {
		n.opts.Log("process %d exited", t.pid)
	}
	if t.flight != nil {
		n.flight.exited(t)
	}
}

// follow watches the processes exit, follows the libraries they load later
// (transport plugins, a second copy of libucp) and, with All, finds new
// processes.
func (n *Node) follow() {
	defer n.bg.Done()
	tick := time.NewTicker(n.opts.Scan)
	defer tick.Stop()
	for k := 1; ; k++ {
		select {
		case <-n.quit:
			return
		case pid := <-n.hellos:
			n.consider(pid, time.Now(), true)
			k--
			continue
		case <-tick.C:
		}
		// Exits at every tick (a read of /proc/PID/stat each); maps, which
		// are larger (a Python process maps a thousand files), and new
		// processes at every mapsEvery-th.
		slow := k%mapsEvery == 0
		n.mu.Lock()
		live := make([]*target, 0, len(n.procs))
		for _, t := range n.procs {
			if !t.gone {
				live = append(live, t)
			}
		}
		n.mu.Unlock()
		for _, t := range live {
			if !proc.Alive(t.pid) || !sameProcess(t) {
				n.release(t)
				continue
			}
			if !slow {
				continue
			}
			maps, err := readMaps(t.pid)
			if err != nil {
				continue // exiting: the next tick releases it
			}
			if rs := append(ucxRanges(maps), forwarderRanges(maps)...); !slices.Equal(rs, t.ranges) {
				n.attachMu.Lock()
				_ = n.probeFiles(t.pid, maps, false) // best effort: a new copy
				n.attachMu.Unlock()
				_ = n.setRanges(t, maps) // best effort; the old ranges stay
			}
		}
		if n.opts.All && slow {
			n.scanAll()
		}
	}
}

// mapsEvery is how many ticks of NodeOptions.Scan pass between two reads of
// the watched processes' maps and two scans of /proc for new processes.
const mapsEvery = 4

// sameProcess reports whether t's pid still names the process watched.
func sameProcess(t *target) bool {
	start, err := proc.StartTime(t.pid)
	return err == nil && (t.key.start == 0 || start == t.key.start)
}

// readPoll bounds how long an event can wait in the ring buffer.
const readPoll = 20 * time.Millisecond

// readLoop drains the ring buffer until it is flushed or closed, and hands
// each event to its process.
func (n *Node) readLoop() {
	defer close(n.readDone)
	var rec ringbuf.Record
	for {
		// The probes do not wake the reader for each event (submit() in
		// bpf/observer.bpf.c): poll at least this often.
		n.reader.SetDeadline(time.Now().Add(readPoll))
		err := n.reader.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
			return
		default:
			n.readErr = fmt.Errorf("reading ring buffer: %w", err)
			return
		}
		ev, pid, ok := decodeEvent(rec.RawSample)
		if !ok {
			continue
		}
		if ev.Hook == hookHello {
			select {
			case n.hellos <- pid:
			default: // the next scan of /proc finds it
			}
			continue
		}
		n.mu.Lock()
		t := n.procs[pid]
		if t == nil {
			n.mu.Unlock()
			continue
		}
		if t.flight != nil {
			t.flight.add(ev, uint64(n.opts.Flight.Window.Nanoseconds()))
			t.count(ev)
		} else {
			t.corr.add(ev)
		}
		if !ev.Completion && !ev.EPFailure {
			t.calls++ // a delivery is not a call
			n.calls.Add(1)
		}
		n.mu.Unlock()
		if n.flight != nil && eventFailed(ev) {
			n.flight.failed(t, ev)
		}
	}
}

// countersOf sums the per-CPU counters of process pid.
func (n *Node) countersOf(pid int) ([observerCounterCNT_MAX]uint64, error) {
	var out [observerCounterCNT_MAX]uint64
	var per []observerCounts
	if err := n.objs.Counters.Lookup(uint32(pid), &per); err != nil {
		return out, fmt.Errorf("reading counters of process %d: %w", pid, err)
	}
	for _, c := range per {
		for i := range out {
			out[i] += c.C[i]
		}
	}
	return out, nil
}

func addKernel(st *Stats, k [observerCounterCNT_MAX]uint64) {
	st.Internal += k[observerCounterCNT_INTERNAL]
	st.DroppedEvents += k[observerCounterCNT_DROPPED]
	st.UnmatchedReturns += k[observerCounterCNT_UNMATCHED_RET]
	st.UnmatchedEntries += k[observerCounterCNT_OVERWRITTEN] + k[observerCounterCNT_STALE] + k[observerCounterCNT_NO_STACK]
}

// dropStacks deletes the per-thread stacks of process pid and returns the
// application calls they held: entered, never returned while probed.
func (n *Node) dropStacks(pid int) uint64 {
	var (
		key   uint64
		st    observerStack
		left  uint64
		drops []uint64
	)
	it := n.objs.Stacks.Iterate()
	for it.Next(&key, &st) {
		if pid >= 0 && int(key>>32) != pid {
			continue
		}
		for i := uint32(0); i < st.Count && i < uint32(len(st.F)); i++ {
			f := st.F[(st.Top-1-i)%uint32(len(st.F))]
			if f.Flags&(frameInternal|framePrearm) == 0 {
				left++
			}
		}
		drops = append(drops, key)
	}
	for _, k := range drops {
		_ = n.objs.Stacks.Delete(k)
	}
	return left
}

// ProcessStats are one watched process's counters.
type ProcessStats struct {
	PID  int
	Comm string
	Rank int
	// Exited is true once the process has exited; its part stays.
	Exited bool
	// Functions are the calls by function (without durations) in flight
	// mode, whose recording holds only the last window; nil otherwise.
	Functions []FuncSummary
	Stats
}

// Stats returns the live counters of every process watched so far, and
// their sum.
func (n *Node) Stats() ([]ProcessStats, Stats) {
	n.mu.Lock()
	parts := slices.Clone(n.parts)
	n.mu.Unlock()
	var total Stats
	out := make([]ProcessStats, 0, len(parts))
	for _, t := range parts {
		n.mu.Lock()
		ps := ProcessStats{PID: t.pid, Comm: t.comm, Rank: t.info.rank, Exited: t.gone}
		ps.Calls, ps.Errors = t.calls, t.corr.errors
		if t.fns != nil {
			ps.Functions = t.functions()
		}
		if t.flight != nil {
			ps.Errors = t.flight.errors
			ps.DroppedEvents += t.flight.lost
		}
		gone, final := t.gone, t.final
		n.mu.Unlock()
		if gone {
			final.Calls, final.Errors = ps.Calls, ps.Errors
			final.DroppedEvents += ps.DroppedEvents
			ps.Stats = final
		} else if k, err := n.countersOf(t.pid); err == nil {
			addKernel(&ps.Stats, k)
		}
		total.add(ps.Stats)
		out = append(out, ps)
	}
	total.Calls = n.calls.Load()
	return out, total
}

func (s *Stats) add(o Stats) {
	s.Calls += o.Calls
	s.Errors += o.Errors
	s.Internal += o.Internal
	s.DroppedEvents += o.DroppedEvents
	s.UnmatchedReturns += o.UnmatchedReturns
	s.UnmatchedEntries += o.UnmatchedEntries
}

// Watching returns how many processes are watched now (not exited).
func (n *Node) Watching() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, t := range n.procs {
		if !t.gone {
			k++
		}
	}
	return k
}

// Files returns the libucp files probed, one set of probes each.
func (n *Node) Files() []string {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	var out []string
	for _, f := range n.files {
		out = append(out, f.path)
	}
	sort.Strings(out)
	return out
}

// Missing names the selected hooks that a probed libucp does not export.
func (n *Node) Missing() []string {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	return slices.Clone(n.missing)
}

// Hooks returns the probed functions.
func (n *Node) Hooks() []hooks.ID { return slices.Clone(n.hookIDs) }

// Stop detaches all probes, drains the events still in the ring buffer and
// returns the recording, one part per process watched (in the order they
// were watched, exited ones included), and the final counters. In flight
// mode the parts hold the calls of the window when FlightOptions.Final is
// set, and none otherwise. Stop may be called once.
func (n *Node) Stop() (*recording.File, []ProcessStats, error) {
	var (
		f   *recording.File
		ps  []ProcessStats
		err error
	)
	called := false
	n.stopOnce.Do(func() {
		called = true
		f, ps, err = n.stop()
	})
	if !called {
		return nil, nil, fmt.Errorf("stopping observer: already stopped")
	}
	return f, ps, err
}

// settle is how long Stop lets calls in progress return before detaching.
const settle = 20 * time.Millisecond

func (n *Node) stop() (*recording.File, []ProcessStats, error) {
	defer n.closeAll()
	var errs []error
	// No new entries from now on; calls in progress may still return.
	if err := n.objs.StopNs.Set(monotonicNS()); err != nil {
		errs = append(errs, fmt.Errorf("stopping probes: %w", err))
	}
	time.Sleep(settle)
	close(n.quit)
	n.bg.Wait()
	if err := n.detach(); err != nil {
		errs = append(errs, err)
	}
	if err := n.reader.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("flushing ring buffer: %w", err))
		n.reader.Close()
	}
	<-n.readDone
	if n.readErr != nil {
		errs = append(errs, n.readErr)
	}
	if n.flight != nil {
		n.flight.flush(true)
	}
	// The processes still running: their calls in progress are lost.
	n.mu.Lock()
	live := []*target{}
	for _, t := range n.parts {
		if !t.gone {
			live = append(live, t)
		}
	}
	n.mu.Unlock()
	for _, t := range live {
		k, err := n.countersOf(t.pid)
		if err != nil {
			errs = append(errs, err)
		}
		var st Stats
		addKernel(&st, k)
		st.UnmatchedEntries += n.dropStacks(t.pid)
		n.mu.Lock()
		t.final, t.gone = st, true
		n.mu.Unlock()
	}
	stats, _ := n.Stats()
	f := recording.New(recording.SourceObserver)
	f.Created = n.created
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, t := range n.parts {
		var (
			calls    []recording.Call
			events   []recording.EndpointEvent
			attached []int
		)
		if t.flight != nil {
			if n.opts.Flight.Final {
				calls, events, _ = t.flight.build(0)
			}
		} else {
			calls, events, attached = t.corr.finishAll(n.armedNS)
		}
		st := &stats[i]
		st.Errors = 0
		for _, c := range calls {
			if c.Failed() {
				st.Errors++ // exact now that requests are followed
			}
		}
		f.Processes = append(f.Processes, n.part(t, st.Stats, calls, events, attached))
	}
	return f, stats, errors.Join(errs...)
}

// part is the recording of process t.
func (n *Node) part(t *target, st Stats, calls []recording.Call, events []recording.EndpointEvent, attached []int) recording.Process {
	names := make([]string, len(n.hookIDs))
	for i, id := range n.hookIDs {
		names[i] = hooks.Table[id].Name
	}
	lost := recording.Lost{
		DroppedEvents:    st.DroppedEvents,
		UnmatchedEntries: st.UnmatchedEntries,
		UnmatchedReturns: st.UnmatchedReturns,
	}
	return recording.Process{
		Host:      n.host,
		PID:       t.pid,
		Rank:      t.info.rank,
		Command:   t.info.command,
		StartTime: t.info.startTime,
		Hooks:     names,
		Lost:      lost,
		Complete:  !lost.Any(),
		// Endpoint numbers are the calls': order of creation (the
		// ucp_ep_create probe), and for endpoints already open when the
		// probes were armed, order of first use (AttachedEndpoints).
		EndpointEvents:    events,
		AttachedEndpoints: attached,
		Calls:             calls,
	}
}

// closeAll releases everything; safe on a partly started node.
func (n *Node) closeAll() {
	if n.stopped {
		return
	}
	n.stopped = true
	select {
	case <-n.quit:
	default:
		close(n.quit)
	}
	n.bg.Wait()
	_ = n.detach()
	if n.reader != nil {
		n.reader.Close()
	}
	n.objs.Close()
}

// detach closes every probe link (closeLinks).
func (n *Node) detach() error {
	n.attachMu.Lock()
	var links []link.Link
	for _, f := range n.files {
		links = append(links, f.links...)
		f.links = nil
	}
	n.attachMu.Unlock()
	return closeLinks(links)
}

// closeLinks closes probe links all at once: the kernel waits for a grace
// period when a uprobe goes (measured: about 0.4 s per link on a loaded
// 2-vCPU VM, 30 s and more for one libucp's 77 links one after another),
// and concurrent closes share their waits.
func closeLinks(links []link.Link) error {
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Close(); err != nil {
				errs[i] = fmt.Errorf("detaching probe: %w", err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// count counts ev by function (flight mode). Called with Node.mu held.
func (t *target) count(ev rawCall) {
	if ev.Completion || ev.EPFailure || int(ev.Hook) >= len(hooks.Table) {
		return
	}
	if t.fns == nil {
		t.fns = map[hooks.ID]*FuncSummary{}
	}
	f := t.fns[ev.Hook]
	if f == nil {
		f = &FuncSummary{Fn: hooks.Table[ev.Hook].Name, Errors: map[string]uint64{}}
		t.fns[ev.Hook] = f
	}
	f.Calls++
	if st := toRaw(ev).Status; st < 0 {
		f.Errors[ucs.Status(st).String()]++
	}
}

// functions returns t.fns in hooks.Table order. Called with Node.mu held.
func (t *target) functions() []FuncSummary {
	out := make([]FuncSummary, 0, len(t.fns))
	for id := range hooks.Table {
		if f := t.fns[hooks.ID(id)]; f != nil {
			c := *f
			c.Errors = maps.Clone(f.Errors)
			out = append(out, c)
		}
	}
	return out
}
