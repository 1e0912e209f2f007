package observer

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/ucs"
)

// Kinds of watch events (enum wkind in bpf/watch.bpf.c).
const (
	wkSetFailed  = 1
	wkErrCB      = 2
	wkReqsPurge  = 3
	wkReqPurge   = 4
	wkCreate     = 5
	wkCloseNBX   = 6
	wkCloseNB    = 7
	wkDestroy    = 8
	wkPendPurge  = 10
	wkLanesFail  = 11
	wkSchedule   = 12
	peerSockaddr = 1
	peerAddress  = 2
)

// watchSymbol is a libucp function the watch probes, with its event kind.
type watchSymbol struct {
	name string
	kind uint64
	// need: a libucp without it cannot show failures (the watch refuses
	// it); the others are used where exported.
	need bool
}

// WatchSymbols are the functions `ucxfault watch` probes: libucp's failure
// path, which runs only when an endpoint fails, and the endpoint lifetime
// calls. None is on the data path. What each UCX release exports (nm -D
// --defined-only): 1.13.1 all of them; 1.22.0 all but ucp_ep_set_failed
// (src/ucp/core/ucp_ep.c made it static when ucp_ep_set_lanes_failed came).
var watchSymbols = []watchSymbol{
	{"ucp_ep_invoke_err_cb", wkErrCB, true},
	{"ucp_ep_set_failed", wkSetFailed, false},
	{"ucp_ep_set_lanes_failed", wkLanesFail, false},
	{"ucp_ep_set_failed_schedule", wkSchedule, false},
	{"ucp_ep_set_lanes_failed_schedule", wkSchedule, false},
	{"ucp_ep_reqs_purge", wkReqsPurge, false},
	{"ucp_ep_req_purge", wkReqPurge, false},
	{"ucp_ep_err_pending_purge", wkPendPurge, false},
	{"ucp_ep_close_nbx", wkCloseNBX, false},
	{"ucp_ep_close_nb", wkCloseNB, false},
	{"ucp_ep_destroy", wkDestroy, false},
}

// WatchSymbolNames are the libucp functions the watch may probe, in the
// order it tries them (ucp_ep_create, probed at entry and return, last).
func WatchSymbolNames() []string {
	out := make([]string, 0, len(watchSymbols)+1)
	for _, s := range watchSymbols {
		out = append(out, s.name)
	}
	return append(out, "ucp_ep_create")
}

// ErrNoFailurePath is returned for a libucp that does not export the
// failure path the watch needs (ucp_ep_invoke_err_cb): watching it would
// show nothing, so the watch refuses instead.
var ErrNoFailurePath = errors.New("libucp exports no failure path to watch")

// WatchOptions configure StartWatch.
type WatchOptions struct {
	// PIDs are processes to watch; with All (or Comm, Cgroup) every
	// process of the node that maps a libucp, now or later, that passes
	// the filters.
	PIDs   []int
	All    bool
	Comm   string
	Cgroup string
	// Scan is how often /proc is read for processes that map a libucp
	// file not probed yet (one already probed announces a process at its
	// first endpoint call). Zero means one second.
	Scan time.Duration
	// Settle is how long after the last event of an endpoint's failure
	// the failure is reported (the purges of its requests come around the
	// error handler's call). Zero means 200 ms.
	Settle time.Duration
	// OnFailure receives each endpoint failure, from one goroutine.
	OnFailure func(Failure)
	// Log, when not nil, receives a line for each process watched (with
	// the failure-path functions its libucp exports) and each refusal.
	Log func(format string, args ...any)
}

// PurgedRequest is one request UCX completed with an error because its
// endpoint failed (ucp_ep_req_purge).
type PurgedRequest struct {
	// Request identifies the request in the process: the ucp_request_t
	// address (ucp_ep_req_purge; the handle the application holds is the
	// address after it), or its transport pending entry inside it
	// (ucp_ep_err_pending_purge, for a request that waited for resources).
	Request uint64 `json:"request"`
	// Code is the status the request completed with.
	Code int `json:"code"`
}

// Failure is one endpoint failure seen by the watch.
type Failure struct {
	// Time is when libucp called the error handler (or failed the
	// endpoint, where no handler was called).
	Time time.Time `json:"time"`
	Host string    `json:"host"`
	PID  int       `json:"pid"`
	Comm string    `json:"comm"`
	// Rank is the launcher's rank, -1 when none.
	Rank int `json:"rank"`
	// Endpoint is the endpoint's number in its process, in creation order
	// as the watch saw the creations (as recordings number endpoints); an
	// endpoint created before the watch attached is numbered when first
	// seen, and Age is then unknown (0, CreatedBefore set).
	Endpoint      int  `json:"ep"`
	CreatedBefore bool `json:"created_before_watch,omitempty"`
	// Peer names the remote side as `status` does: "w:" and 48 bits of
	// the remote worker's id for an address endpoint, "IP:port" for a
	// client's sockaddr one; empty when unknown (a server's endpoint on a
	// connection request, an endpoint created before the watch).
	Peer string `json:"peer,omitempty"`
	// Code is the status given to the error handler (UCX code, negative).
	Code   int    `json:"code"`
	Status string `json:"status"`
	// Handler is true when libucp called the endpoint's error handler.
	Handler bool `json:"handler"`
	// Purged are the requests purged with an error, in order.
	Purged []PurgedRequest `json:"purged"`
	// Age is the endpoint's age at the failure (0 when unknown).
	AgeNS int64 `json:"age_ns"`
	// Injected is true when the ucxfault injector asked for this failure
	// (a kill-ep, or a kill-ep rule), false for a real one.
	Injected bool `json:"injected,omitempty"`
	// Libucp is the file and UCX version of the process's libucp.
	Libucp  string `json:"libucp"`
	Version string `json:"ucx_version,omitempty"`
}

// WatchStats are the watch's counters.
type WatchStats struct {
	// Processes counts the processes watched so far; Failures the
	// failures reported; Events the kernel events of watched processes
	// (all kinds; those of processes filtered out are not counted).
	Processes, Failures, Events uint64
	// Lost counts the events the ring buffer had no room for.
	Lost uint64
	// Unread counts the events of processes that exited before the watch
	// could read /proc for them, while --comm, --cgroup or a PID list
	// needed it to decide whether to watch them (with --all alone such a
	// process is watched from its events).
	Unread uint64
	// Probes is the number of uprobes attached now.
	Probes int
}

// Watch is a running failure watch (StartWatch).
type Watch struct {
	opts   WatchOptions
	host   string
	filter procFilter // the processes it takes
	objs   watchObjects
	reader *ringbuf.Reader

	attachMu sync.Mutex
	files    map[fileKey]*watchFile

	mu       sync.Mutex
	procs    map[int]*watchProc
	rejected map[procKey]bool
	stats    WatchStats

	quit     chan struct{}
	bg       sync.WaitGroup
	stopOnce sync.Once
}

// watchFile is one libucp file and its probes.
type watchFile struct {
	path    string
	version string
	found   []string
	links   []link.Link
	err     error // the refusal, for every process that maps it
}

type watchEP struct {
	num     int
	created time.Time // zero: before the watch
	peer    string
}

// pendingFailure gathers the events of one endpoint's failure.
type pendingFailure struct {
	f      Failure
	seen   map[uint64]bool
	last   time.Time
	failed bool // set_failed or the handler seen
	closed bool // the endpoint was closed meanwhile: forget it once reported
}

type watchProc struct {
	key      procKey
	comm     string
	rank     int
	libucp   string
	version  string
	eps      map[uint64]*watchEP
	next     int
	pending  map[uint64]*pendingFailure
	injected map[uint64]bool // endpoints the injector was asked to kill
	// injector is the code of the ucxfault injector in the process, as
	// mapped when it was first watched (it is preloaded, so there from
	// the start): a failure scheduled from it is an injected kill.
	injector []ucxRange
	// failing is, per thread, the endpoint of its last failure-path call:
	// a pending request purged (ucp_ep_err_pending_purge names no
	// endpoint) belongs to it.
	failing map[uint32]uint64
}

// StartWatch attaches the failure watch to the libucp of opts.PIDs (and,
// with All, of every process of the node that maps one, now or later). It
// fails with ErrNoFailurePath when the libucp of an explicit PID lacks
// the failure path; with All such a process is logged and skipped.
func StartWatch(ctx context.Context, opts *WatchOptions) (_ *Watch, err error) {
	o := *opts
	if len(o.PIDs) == 0 && (o.Comm != "" || o.Cgroup != "") {
		o.All = true
	}
	if len(o.PIDs) == 0 && !o.All {
		return nil, fmt.Errorf("watching: no PID given (or --all)")
	}
	if o.Scan <= 0 {
		o.Scan = time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 200 * time.Millisecond
	}
	for _, pid := range o.PIDs {
		if pid <= 0 || !proc.Alive(pid) {
			return nil, fmt.Errorf("%w: %d", ErrNoProcess, pid)
		}
	}
	if err := CheckSupport(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock limit: %w", err)
	}
	host, _ := os.Hostname()
	w := &Watch{
		opts:     o,
		host:     host,
		filter:   procFilter{pids: o.PIDs, all: o.All, comm: o.Comm, cgroup: cgroupPath(o.Cgroup)},
		files:    map[fileKey]*watchFile{},
		procs:    map[int]*watchProc{},
		rejected: map[procKey]bool{},
		quit:     make(chan struct{}),
	}
	spec, err := loadWatch()
	if err != nil {
		return nil, fmt.Errorf("loading eBPF spec: %w", err)
	}
	if dev, ino, ok := ownPidNamespace(); ok {
		if err := spec.Variables["pidns_dev"].Set(dev); err != nil {
			return nil, fmt.Errorf("setting pid namespace: %w", err)
		}
		if err := spec.Variables["pidns_ino"].Set(ino); err != nil {
			return nil, fmt.Errorf("setting pid namespace: %w", err)
		}
	}
	if err := spec.LoadAndAssign(&w.objs, nil); err != nil {
		return nil, fmt.Errorf("loading eBPF objects: %w", err)
	}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.reader, err = ringbuf.NewReader(w.objs.Wevents); err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	for _, pid := range o.PIDs {
		maps, _, err := waitForLibucp(ctx, pid, false)
		if err != nil {
			return nil, err
		}
		if err := w.watch(pid, maps); err != nil {
			return nil, err
		}
	}
	if o.All {
		w.scan()
	}
	w.bg.Add(2)
	go w.readLoop()
	go w.follow()
	return w, nil
}

// watchVersion reads the UCX version a libucp file carries in its
// read-only data (the string ucp_get_version_string returns).
var watchVersionRE = regexp.MustCompile(`([0-9]\.[0-9]{1,2}\.[0-9]{1,2})\x00`)

func libucpVersion(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sec := f.Section(".rodata")
	if sec == nil {
		return ""
	}
	data, err := sec.Data()
	if err != nil {
		return ""
	}
	if m := watchVersionRE.FindSubmatch(data); m != nil {
		return string(m[1])
	}
	return ""
}

// CheckFailurePath says which of the watch's functions the libucp file
// at path exports, and fails with ErrNoFailurePath (naming the UCX
// version) when it cannot show failures.
func CheckFailurePath(path string) (found []string, version string, err error) {
	return checkFailurePath(path, path)
}

// checkFailurePath is CheckFailurePath of the file at path, named shown in
// errors (the path the process maps, not /proc/PID/root/...).
func checkFailurePath(path, shown string) (found []string, version string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", path, err)
	}
	syms, err := f.DynamicSymbols()
	f.Close()
	if err != nil {
		return nil, "", fmt.Errorf("reading the dynamic symbols of %s: %w", path, err)
	}
	have := map[string]bool{}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			have[s.Name] = true
		}
	}
	version = libucpVersion(path)
	for _, n := range WatchSymbolNames() {
		if have[n] {
			found = append(found, n)
		}
	}
	for _, s := range watchSymbols {
		if s.need && !have[s.name] {
			v := version
			if v == "" {
				v = "of unknown version"
			}
			return found, version, fmt.Errorf("%w: %s (UCX %s) does not export %s, the function through which libucp calls an endpoint's error handler", ErrNoFailurePath, shown, v, s.name)
		}
	}
	return found, version, nil
}

// probe attaches the watch to the libucp file at path (as pid maps it),
// once per file. Called with attachMu held.
func (w *Watch) probe(pid int, path string) (*watchFile, error) {
	key, full, err := fileOf(pid, path)
	if err != nil {
		return nil, err
	}
	if f := w.files[key]; f != nil {
		return f, f.err
	}
	f := &watchFile{path: path}
	found, version, err := checkFailurePath(full, path)
	f.found, f.version = found, version
	if err != nil {
		err = fmt.Errorf("process %d: %w", pid, err)
		if errors.Is(err, ErrNoFailurePath) {
			f.err = err
			w.files[key] = f // refused for good: the file does not change
		}
		return f, err
	}
	ex, err := link.OpenExecutable(full)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	fail := func(err error) (*watchFile, error) {
		for _, l := range f.links {
			l.Close()
		}
		return nil, err
	}
	has := map[string]bool{}
	for _, n := range found {
		has[n] = true
	}
	for _, s := range watchSymbols {
		if !has[s.name] {
			continue
		}
		l, err := ex.Uprobe(s.name, w.objs.WatchFail, &link.UprobeOptions{Cookie: s.kind})
		if err != nil {
			return fail(attachError(pid, s.name, path, err))
		}
		f.links = append(f.links, l)
	}
	if has["ucp_ep_create"] {
		l, err := ex.Uprobe("ucp_ep_create", w.objs.WatchCreate, nil)
		if err != nil {
			return fail(attachError(pid, "ucp_ep_create", path, err))
		}
		f.links = append(f.links, l)
		if l, err = ex.Uretprobe("ucp_ep_create", w.objs.WatchCreated, nil); err != nil {
			return fail(attachError(pid, "ucp_ep_create", path, err))
		}
		f.links = append(f.links, l)
	}
	w.files[key] = f
	return f, nil
}

// watch probes pid's libucp and starts keeping its events.
func (w *Watch) watch(pid int, maps []mapping) error {
	w.attachMu.Lock()
	defer w.attachMu.Unlock()
	copies := proc.LibucpCopies(maps)
	if len(copies) == 0 {
		return fmt.Errorf("%w: %d", ErrNoLibucp, pid)
	}
	var last *watchFile
	for _, path := range copies {
		f, err := w.probe(pid, path)
		if err != nil {
			return err
		}
		last = f
	}
	start, _ := proc.StartTime(pid)
	info := readProcessInfo(pid)
	p := &watchProc{
		key:      procKey{pid, start},
		comm:     readComm(pid),
		rank:     info.rank,
		libucp:   last.path,
		version:  last.version,
		eps:      map[uint64]*watchEP{},
		pending:  map[uint64]*pendingFailure{},
		injected: map[uint64]bool{},
		failing:  map[uint32]uint64{},
		injector: forwarderRanges(maps),
	}
	w.mu.Lock()
	if old := w.procs[pid]; old != nil && old.key == p.key {
		w.mu.Unlock()
		return nil
	}
	w.procs[pid] = p
	w.stats.Processes++
	w.mu.Unlock()
	if w.opts.Log != nil {
		w.opts.Log("watching process %d (%s, rank %d): %s, UCX %s, probes %v", pid, p.comm, p.rank, last.path, last.version, last.found)
	}
	return nil
}

// consider watches pid if it maps a libucp and passes the filters.
func (w *Watch) consider(pid int) {
	key, ok := candidateKey(pid)
	if !ok {
		return
	}
	w.mu.Lock()
	p := w.procs[pid]
	rej := w.rejected[key]
	w.mu.Unlock()
	if rej || p != nil && p.key == key {
		return
	}
	if !w.filter.selects(pid) {
		w.mu.Lock()
		w.rejected[key] = true
		w.mu.Unlock()
		return
	}
	maps, err := readMaps(pid)
	if err != nil {
		return
	}
	if _, ok := libucpPath(maps); !ok {
		return
	}
	if err := w.watch(pid, maps); err != nil {
		w.mu.Lock()
		w.rejected[key] = true
		w.mu.Unlock()
		if w.opts.Log != nil {
			w.opts.Log("cannot watch process %d: %v", pid, err)
		}
	}
}

// adoptExited watches, from its events alone, a process that has exited
// (or is exiting) before the watch could read /proc for it: a program
// that lives a few milliseconds, or a reader behind on a loaded node. Its
// failures are reported without a name, a rank or the injector's marks
// (read from /proc). Nil when the process is still there (consider
// decided), or when a filter (--comm, --cgroup, PIDs) cannot be checked any
// more: those events are counted as Unread.
func (w *Watch) adoptExited(pid int) *watchProc {
	if maps, err := readMaps(pid); err == nil && len(maps) > 0 {
		return nil
	}
	f := &w.filter
	selected := f.all && f.comm == "" && f.cgroup == "" || !f.all && slices.Contains(f.pids, pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !selected {
		w.stats.Unread++
		return nil
	}
	p := &watchProc{
		key: procKey{pid, 0}, rank: -1,
		eps:      map[uint64]*watchEP{},
		pending:  map[uint64]*pendingFailure{},
		injected: map[uint64]bool{},
		failing:  map[uint32]uint64{},
	}
	w.procs[pid] = p
	w.stats.Processes++
	if w.opts.Log != nil {
		w.opts.Log("watching process %d from its events: it exited before the watch could read it (no name, rank or injector marks)", pid)
	}
	return p
}

// scan considers every process of /proc, and forgets the exited ones.
func (w *Watch) scan() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			w.consider(pid)
		}
	}
}

// follow scans /proc for new processes, drops the exited ones (bounded
// memory) and reports the failures that have settled.
func (w *Watch) follow() {
	defer w.bg.Done()
	tick := time.NewTicker(w.opts.Settle / 2)
	defer tick.Stop()
	lastScan := time.Now()
	for {
		select {
		case <-w.quit:
			w.flush(true)
			return
		case <-tick.C:
		}
		w.flush(false)
		if time.Since(lastScan) < w.opts.Scan {
			continue
		}
		lastScan = time.Now()
		if w.opts.All {
			w.scan()
		}
		w.mu.Lock()
		for pid, p := range w.procs {
			if len(p.pending) == 0 && !sameProcessKey(pid, p.key) {
				delete(w.procs, pid)
			}
		}
		for k := range w.rejected {
			if !proc.Alive(k.pid) {
				delete(w.rejected, k)
			}
		}
		w.mu.Unlock()
	}
}

func sameProcessKey(pid int, key procKey) bool {
	start, err := proc.StartTime(pid)
	return err == nil && start == key.start
}

// flush reports the failures whose last event is Settle old (all with
// force).
func (w *Watch) flush(force bool) {
	var out []Failure
	w.mu.Lock()
	for _, p := range w.procs {
		for ep, pf := range p.pending {
			if !force && time.Since(pf.last) < w.opts.Settle {
				continue
			}
			delete(p.pending, ep)
			if pf.closed {
				delete(p.eps, ep)
			}
			for tid, e := range p.failing {
				if e == ep {
					delete(p.failing, tid)
				}
			}
			if !pf.failed {
				continue // purges of a forced close: not a failure
			}
			out = append(out, pf.f)
			w.stats.Failures++
		}
	}
	w.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	if w.opts.OnFailure != nil {
		for _, f := range out {
			w.opts.OnFailure(f)
		}
	}
}

// bootOffset converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall time.
func monoToWall(ns uint64) time.Time {
	now := time.Now()
	return now.Add(-time.Duration(monotonicNS() - ns))
}

func (w *Watch) readLoop() {
	defer w.bg.Done()
	var rec ringbuf.Record
	for {
		if err := w.reader.ReadInto(&rec); err != nil {
			return // closed
		}
		var ev watchWevent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
			continue
		}
		w.handle(&ev)
	}
}

func (w *Watch) handle(ev *watchWevent) {
	pid := int(ev.Pid)
	w.mu.Lock()
	p := w.procs[pid]
	w.mu.Unlock()
	if p == nil {
		// A process that maps a probed libucp: watched from its first
		// endpoint call.
		w.consider(pid)
		w.mu.Lock()
		p = w.procs[pid]
		w.mu.Unlock()
		if p == nil {
			if p = w.adoptExited(pid); p == nil {
				return
			}
		}
	}
	at := monoToWall(ev.TsNs)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Events++
	endpoint := func(ep uint64) *watchEP {
		e := p.eps[ep]
		if e == nil {
			e = &watchEP{num: p.next}
			p.next++
			p.eps[ep] = e
		}
		return e
	}
	switch ev.Kind {
	case wkCreate:
		if ev.Status != 0 || ev.Ep == 0 {
			return
		}
		e := &watchEP{num: p.next, created: at, peer: peerName(ev)}
		p.next++
		p.eps[ev.Ep] = e
	case wkCloseNBX, wkCloseNB, wkDestroy:
		// The endpoint's number is kept until the failure, if one is
		// being gathered, is reported; a new endpoint at the same
		// address gets a new number.
		if pf := p.pending[ev.Ep]; pf != nil {
			pf.closed = true
		} else {
			delete(p.eps, ev.Ep)
		}
		delete(p.injected, ev.Ep)
	case wkSchedule:
		// Scheduled from the ucxfault injector's code: its kill, which
		// goes through this same failure path. Known from libucp's own
		// probe and the injector's address range, read when the
		// process was first watched.
		for _, r := range p.injector {
			if ev.Arg >= r.start && ev.Arg < r.end {
				p.injected[ev.Ep] = true
			}
		}
	case wkPendPurge:
		ep, ok := p.failing[ev.Tid]
		pf := p.pending[ep]
		if !ok || pf == nil {
			return
		}
		pf.last = time.Now()
		if !pf.seen[ev.Arg] {
			pf.seen[ev.Arg] = true
			pf.f.Purged = append(pf.f.Purged, PurgedRequest{Request: ev.Arg, Code: int(ev.Status)})
		}
	case wkSetFailed, wkLanesFail, wkErrCB, wkReqsPurge, wkReqPurge:
		p.failing[ev.Tid] = ev.Ep
		pf := p.pending[ev.Ep]
		if pf == nil {
			e := endpoint(ev.Ep)
			pf = &pendingFailure{seen: map[uint64]bool{}, f: Failure{
				Time: at, Host: w.host, PID: pid, Comm: p.comm, Rank: p.rank,
				Endpoint: e.num, CreatedBefore: e.created.IsZero(), Peer: e.peer,
				Code: int(ev.Status), Status: ucs.Status(ev.Status).String(),
				Purged: []PurgedRequest{}, Libucp: p.libucp, Version: p.version,
			}}
			if !e.created.IsZero() {
				pf.f.AgeNS = at.Sub(e.created).Nanoseconds()
			}
			p.pending[ev.Ep] = pf
		}
		pf.last = time.Now()
		if p.injected[ev.Ep] {
			// The injector asked for this failure (its kill goes
			// through this same failure path of libucp).
			pf.f.Injected = true
			delete(p.injected, ev.Ep)
		}
		switch ev.Kind {
		case wkSetFailed:
			pf.failed = true
		case wkErrCB:
			pf.failed, pf.f.Handler = true, true
			pf.f.Time, pf.f.Code, pf.f.Status = at, int(ev.Status), ucs.Status(ev.Status).String()
			if e := p.eps[ev.Ep]; e != nil && !e.created.IsZero() {
				pf.f.AgeNS = at.Sub(e.created).Nanoseconds()
			}
		case wkReqPurge:
			if !pf.seen[ev.Arg] {
				pf.seen[ev.Arg] = true
				pf.f.Purged = append(pf.f.Purged, PurgedRequest{Request: ev.Arg, Code: int(ev.Status)})
			}
		}
	}
}

// peerName names the peer of a created endpoint as the injector's status
// does (preload/peer.c).
func peerName(ev *watchWevent) string {
	b := ev.Peer[:]
	switch ev.PeerKind {
	case peerSockaddr:
		family := binary.NativeEndian.Uint16(b[0:2])
		port := binary.BigEndian.Uint16(b[2:4])
		switch family {
		case 2: // AF_INET
			return net.JoinHostPort(net.IP(b[4:8]).String(), strconv.Itoa(int(port)))
		case 10: // AF_INET6
			return net.JoinHostPort(net.IP(b[8:24]).String(), strconv.Itoa(int(port)))
		}
	case peerAddress:
		// A packed worker address starts with a one-byte header and the
		// worker's 64-bit uuid (src/ucp/wireup/address.c, 1.12 to 1.22),
		// what ucp_worker_address_query returns as worker_uid.
		uid := binary.NativeEndian.Uint64(b[1:9])
		if uid != 0 {
			return fmt.Sprintf("w:%012x", uid&0xffffffffffff)
		}
	}
	return ""
}

// Stats returns the watch's counters.
func (w *Watch) Stats() WatchStats {
	w.mu.Lock()
	st := w.stats
	w.mu.Unlock()
	var per []uint64
	if err := w.objs.Wlost.Lookup(uint32(0), &per); err == nil {
		for _, v := range per {
			st.Lost += v
		}
	}
	w.attachMu.Lock()
	for _, f := range w.files {
		st.Probes += len(f.links)
	}
	w.attachMu.Unlock()
	return st
}

// Stop detaches every probe, reports the failures still gathering and
// releases the kernel objects. It may be called more than once.
func (w *Watch) Stop() error {
	var err error
	w.stopOnce.Do(func() {
		if e := w.objs.Stop.Set(uint64(1)); e != nil {
			err = fmt.Errorf("stopping probes: %w", e)
		}
		err = errors.Join(err, w.detach())
		close(w.quit)
		w.reader.Close()
		w.bg.Wait()
		w.objs.Close()
	})
	return err
}

// close releases a partly started watch.
func (w *Watch) close() {
	_ = w.detach()
	if w.reader != nil {
		w.reader.Close()
	}
	w.objs.Close()
}

// detach closes every probe at once (closeLinks).
func (w *Watch) detach() error {
	w.attachMu.Lock()
	var links []link.Link
	for _, f := range w.files {
		links = append(links, f.links...)
		f.links = nil
	}
	w.attachMu.Unlock()
	return closeLinks(links)
}
