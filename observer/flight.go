package observer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"github.com/ucxfault/ucxfault/recording"
)

// FlightOptions configure the flight recorder: instead of every call since
// the start, the observer keeps the last Window of each process's calls,
// and writes a recording of one process to Dir (an incident) when one of
// its calls returns or completes with an error, or a real endpoint failure
// happens, once After has passed since. An operator leaves it running on a
// node to catch the failure that happens once a day.
type FlightOptions struct {
	// Window is how much of each process's past is kept, and written
	// before the error.
	Window time.Duration
	// After is how long the incident keeps recording after the error
	// (errors meanwhile join the same incident). A process that exits
	// meanwhile has its incident written at once.
	After time.Duration
	// Dir is where incidents go, one file each (at most one per process
	// and Window: errors within a window after an incident was written
	// start none, Node.Suppressed counts them):
	// ucxfault-incident-HOST-PID-TIME.json (TIME in UTC, 20060102T150405Z).
	Dir string
	// MaxCalls bounds the calls kept per process (and so the memory, at
	// FlightCallBytes each); zero means (Window+After) times
	// DefaultFlightRate. A call that finds the buffer full while the
	// oldest call is still inside the window drops that call, counted as
	// lost.
	MaxCalls int
	// Final makes Node.Stop's recording hold each process's last window;
	// without it the parts hold no calls (building a window of 600,000
	// calls takes memory and time an operator who only wants the
	// incidents does not need to spend).
	Final bool
}

// DefaultFlightRate is the call rate, in calls per second and process, that
// the default bound of FlightOptions.MaxCalls keeps without loss.
const DefaultFlightRate = 20000

// FlightCallBytes is the memory one kept call takes.
const FlightCallBytes = int(unsafe.Sizeof(rawCall{}))

func (o *FlightOptions) check() error {
	if o.Window <= 0 {
		return fmt.Errorf("flight window %v: want a positive duration", o.Window)
	}
	if o.After < 0 {
		return fmt.Errorf("flight recording after an error %v: want zero or more", o.After)
	}
	if o.MaxCalls < 0 {
		return fmt.Errorf("flight bound %d calls: want zero (the default) or more", o.MaxCalls)
	}
	if o.Dir == "" {
		return fmt.Errorf("flight recorder: no directory for incidents")
	}
	if fi, err := os.Stat(o.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("flight recorder: %s is not a directory", o.Dir)
	}
	return nil
}

// CallBound returns the most calls kept per process: MaxCalls, or its
// default.
func (o *FlightOptions) CallBound() int {
	if o.MaxCalls > 0 {
		return o.MaxCalls
	}
	return int((o.Window + o.After).Seconds() * DefaultFlightRate)
}

// flightBuffer holds a process's last calls: a ring that grows up to its
// bound, then overwrites its oldest entry. Guarded by Node.mu.
type flightBuffer struct {
	ring   []rawCall
	head   int // index of the oldest entry once the ring is full
	full   bool
	errors uint64 // failures seen
	lost   uint64 // calls dropped inside the window (the bound was reached)
	max    int
	// keepFrom: calls entered at or after it are kept (an incident's
	// window); 0 when none is pending.
	keepFrom uint64
}

func (b *flightBuffer) len() int { return len(b.ring) }

// at returns the i-th oldest entry.
func (b *flightBuffer) at(i int) *rawCall {
	return &b.ring[(b.head+i)%len(b.ring)]
}

// add keeps ev, dropping what the window no longer needs.
func (b *flightBuffer) add(ev rawCall, window uint64) {
	if toRaw(ev).Status < 0 || ev.EPFailure {
		b.errors++
	}
	if len(b.ring) < b.max && !b.full {
		if len(b.ring) == cap(b.ring) {
			// Grow as append would, but never past the bound.
			grown := make([]rawCall, len(b.ring), min(max(2*cap(b.ring), 1024), b.max))
			copy(grown, b.ring)
			b.ring = grown
		}
		b.ring = append(b.ring, ev)
		return
	}
	b.full = true
	oldest := b.at(0)
	horizon := uint64(0)
	if ev.EntryNS > window {
		horizon = ev.EntryNS - window
	}
	if b.keepFrom != 0 && b.keepFrom < horizon {
		horizon = b.keepFrom
	}
	if oldest.EntryNS >= horizon {
		b.lost++ // still wanted: the bound is too small for this rate
	}
	*oldest = ev
	b.head = (b.head + 1) % len(b.ring)
}

// since returns the kept calls entered at or after from, oldest first.
func (b *flightBuffer) since(from uint64) []rawCall {
	var out []rawCall
	for i := 0; i < b.len(); i++ {
		if ev := b.at(i); ev.EntryNS >= from {
			out = append(out, *ev)
		}
	}
	return out
}

// build returns the recording of the calls entered at or after from.
func (b *flightBuffer) build(from uint64) ([]recording.Call, []recording.EndpointEvent, uint64) {
	evs := b.since(from)
	c := newCorrelator()
	base := from
	for i, ev := range evs {
		if i == 0 || ev.EntryNS < base {
			base = ev.EntryNS
		}
		c.add(ev)
	}
	calls, events, _ := c.finishAll(base)
	return calls, events, base
}

// flightRecorder writes the incidents of a Node.
type flightRecorder struct {
	n    *Node
	opts FlightOptions

	mu      sync.Mutex
	pending map[*target]*incident
	last    map[*target]time.Time // when its last incident was written
	quiet   map[*target]uint64    // errors in a cooldown, not incidents
	written []string
	werr    error
}

// incident is an error whose recording is not written yet.
type incident struct {
	errNS uint64    // the first error's time (CLOCK_MONOTONIC)
	at    time.Time // the same, wall clock
	due   time.Time // when to write
}

func newFlightRecorder(n *Node, o *FlightOptions) *flightRecorder {
	return &flightRecorder{n: n, opts: *o, pending: map[*target]*incident{}, last: map[*target]time.Time{},
		quiet: map[*target]uint64{}}
}

func (r *flightRecorder) newBuffer() *flightBuffer {
	return &flightBuffer{max: r.opts.CallBound()}
}

// eventFailed reports whether ev starts an incident: a call that failed at
// once, a failure delivered on completion, a real endpoint failure.
func eventFailed(ev rawCall) bool {
	return ev.EPFailure || toRaw(ev).Status < 0
}

// failed notes an error of process t.
func (r *flightRecorder) failed(t *target, ev rawCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending[t] != nil {
		return // joins the pending incident
	}
	now := time.Now()
	// A process that keeps failing writes at most one incident per
	// window: the next one would hold mostly the same calls, and a day of
	// them could fill the disk.
	if last, ok := r.last[t]; ok && now.Sub(last) < r.opts.Window {
		r.quiet[t]++
		return
	}
	r.pending[t] = &incident{errNS: ev.EntryNS, at: now, due: now.Add(r.opts.After)}
	window := uint64(r.opts.Window.Nanoseconds())
	from := uint64(1)
	if ev.EntryNS > window {
		from = ev.EntryNS - window
	}
	r.n.mu.Lock()
	if t.flight.keepFrom == 0 {
		t.flight.keepFrom = from
	}
	r.n.mu.Unlock()
}

// exited writes a pending incident of t at once.
func (r *flightRecorder) exited(t *target) {
	r.mu.Lock()
	if in := r.pending[t]; in != nil {
		in.due = time.Time{}
	}
	r.mu.Unlock()
	r.flush(false)
	// Its calls are no longer needed: the memory goes back.
	r.n.mu.Lock()
	t.flight.ring, t.flight.head, t.flight.full = nil, 0, false
	r.n.mu.Unlock()
}

// run writes the incidents that are due.
func (r *flightRecorder) run() {
	defer r.n.bg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.n.quit:
			return // Stop writes what is pending once the last events are in
		case <-tick.C:
			r.flush(false)
		}
	}
}

// flush writes the incidents that are due, or all of them.
func (r *flightRecorder) flush(all bool) {
	r.mu.Lock()
	var due []*target
	now := time.Now()
	for t, in := range r.pending {
		if all || !now.Before(in.due) {
			due = append(due, t)
		}
	}
	r.mu.Unlock()
	for _, t := range due {
		r.mu.Lock()
		in := r.pending[t]
		delete(r.pending, t)
		r.mu.Unlock()
		path, err := r.writeIncident(t, in)
		r.mu.Lock()
		r.last[t] = time.Now()
		if err != nil {
			r.werr = errors.Join(r.werr, err)
		} else {
			r.written = append(r.written, path)
		}
		r.mu.Unlock()
		if r.n.opts.Log != nil {
			if err != nil {
				r.n.opts.Log("incident of process %d not written: %v", t.pid, err)
			} else {
				r.n.opts.Log("incident of process %d written to %s", t.pid, path)
			}
		}
	}
}

// writeIncident writes one process's window around its error.
func (r *flightRecorder) writeIncident(t *target, in *incident) (string, error) {
	window := uint64(r.opts.Window.Nanoseconds())
	from := uint64(1)
	if in.errNS > window {
		from = in.errNS - window
	}
	f := recording.New(recording.SourceObserver)
	f.Created = in.at.UTC()
	f.Processes = []recording.Process{r.n.flightPart(t, from)}
	name := fmt.Sprintf("ucxfault-incident-%s-%d-%s", r.n.host, t.pid, in.at.UTC().Format("20060102T150405Z"))
	return writeUnique(r.opts.Dir, name, f)
}

// flightPart is process t's part of an incident: its calls from from on,
// with what its buffer and the kernel lost.
func (n *Node) flightPart(t *target, from uint64) recording.Process {
	n.mu.Lock()
	calls, events, _ := t.flight.build(from)
	t.flight.keepFrom = 0
	lostFlight := t.flight.lost
	gone, final := t.gone, t.final
	n.mu.Unlock()
	st := final
	if !gone {
		st = Stats{}
		if k, err := n.countersOf(t.pid); err == nil {
			addKernel(&st, k)
		}
	}
	st.DroppedEvents += lostFlight
	return n.part(t, st, calls, events, nil)
}

// writeUnique writes f to dir/name.json, or name-2.json, ... when taken.
func writeUnique(dir, name string, f *recording.File) (string, error) {
	for i := 1; ; i++ {
		p := filepath.Join(dir, name+".json")
		if i > 1 {
			p = filepath.Join(dir, fmt.Sprintf("%s-%d.json", name, i))
		}
		fd, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("writing incident: %w", err)
		}
		fd.Close()
		if err := f.WriteFile(p); err != nil {
			return "", fmt.Errorf("writing incident: %w", err)
		}
		return p, nil
	}
}

// Snapshot writes one recording of every watched process's flight window
// (what SIGUSR1 asks for) to the incident directory and returns its path.
// It fails when the flight recorder is off.
func (n *Node) Snapshot() (string, error) {
	if n.flight == nil {
		return "", fmt.Errorf("writing snapshot: the flight recorder is off")
	}
	now := monotonicNS()
	window := uint64(n.flight.opts.Window.Nanoseconds())
	from := uint64(1)
	if now > window {
		from = now - window
	}
	n.mu.Lock()
	parts := make([]*target, 0, len(n.parts))
	for _, t := range n.parts {
		if t.flight != nil && !t.gone {
			parts = append(parts, t)
		}
	}
	n.mu.Unlock()
	at := time.Now().UTC()
	f := recording.New(recording.SourceObserver)
	f.Created = at
	for _, t := range parts {
		f.Processes = append(f.Processes, n.flightPart(t, from))
	}
	name := fmt.Sprintf("ucxfault-incident-%s-all-%s", n.host, at.Format("20060102T150405Z"))
	return writeUnique(n.flight.opts.Dir, name, f)
}

// FlightMemory returns the memory the flight recorder's buffers use now and
// the most they may use for the processes watched now, in bytes.
func (n *Node) FlightMemory() (used, bound int64) {
	if n.flight == nil {
		return 0, 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.parts {
		if t.flight == nil || t.gone {
			continue
		}
		used += int64(cap(t.flight.ring)) * int64(FlightCallBytes)
		bound += int64(t.flight.max) * int64(FlightCallBytes)
	}
	return used, bound
}

// Incidents returns the incident files written so far, and the errors of
// those that could not be.
func (n *Node) Incidents() ([]string, error) {
	if n.flight == nil {
		return nil, nil
	}
	n.flight.mu.Lock()
	defer n.flight.mu.Unlock()
	return append([]string(nil), n.flight.written...), n.flight.werr
}

// Suppressed returns the errors that started no incident because their
// process had one written less than a window before.
func (n *Node) Suppressed() uint64 {
	if n.flight == nil {
		return 0
	}
	n.flight.mu.Lock()
	defer n.flight.mu.Unlock()
	var k uint64
	for _, v := range n.flight.quiet {
		k += v
	}
	return k
}
