package observer

import (
	"sort"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// rawCall is one completed application call as the BPF program reports it:
// the entry's arguments, the raw return register and the kernel-measured
// duration.
type rawCall struct {
	Hook       hooks.ID
	TID        uint32
	EntryNS    uint64 // CLOCK_MONOTONIC
	DurationNS uint64
	Ret        uint64 // raw return register
	Size       uint64
	EP         uint64
	Req        uint64
	// Injected: the ucxfault injector failed the call without calling
	// libucp, or (with Completion) made the failure it delivered.
	Injected bool
	// Completion: not a call but the injector's marker of an outcome it
	// handed the application on completion (a callback or a status
	// query): Ret is that status, as Hook returns it, for the operation
	// that returned Req (Req 0: this thread's call of Hook that just
	// returned).
	Completion bool
	// Unlearned, with Completion: the request was freed before the
	// application could learn its failure.
	Unlearned bool
}

// errPtrMin is UCS_STATUS_PTR(UCS_ERR_LAST) = (void *)-100: a status
// pointer in [errPtrMin, max] is UCS_PTR_IS_ERR, anything else but NULL a
// request.
const errPtrMin = ^uint64(100) + 1

func isErrPtr(p uint64) bool { return p >= errPtrMin }

// callState is a call and what is known of its final status so far.
type callState struct {
	raw      rawCall
	status   int
	how      string
	injected bool // given an injected failure by a marker of its completion
}

// correlator turns rawCalls, in the order they returned, into recorded
// calls: a request returned by a StatusPtr hook stays pending until a later
// call of a request-examining hook (ucp_request_check_status) with that
// request reports a status other than UCS_INPROGRESS.
type correlator struct {
	calls   []callState
	pending map[uint64]int // request pointer -> index in calls
	// last is the latest operation that returned each request, resolved
	// or not: an injected failure delivered after a poll saw success
	// still belongs to it.
	last map[uint64]int
	// lastCall is each thread's latest call, where a marker delivered
	// inside a call (a status query, an operation failed as it returned)
	// finds that call.
	lastCall map[uint32]int
	errors   uint64
}

func newCorrelator() *correlator {
	return &correlator{pending: map[uint64]int{}, last: map[uint64]int{}, lastCall: map[uint32]int{}}
}

// markerStatus decodes the status a marker carries, as hook h returns it.
func markerStatus(h *hooks.Hook, ret uint64) int {
	if h.Return == hooks.StatusPtr {
		if isErrPtr(ret) {
			return int(int64(ret))
		}
		return 0
	}
	if st := ucs.FromRaw(ret); st < 0 {
		return int(st)
	}
	return 0
}

// deliver applies the injector's marker of an outcome delivered on
// completion, as recording.Build applies the injector's own record of it.
func (c *correlator) deliver(ev rawCall) {
	h := &hooks.Table[ev.Hook]
	st := markerStatus(h, ev.Ret)
	setFailed := func(p *callState) {
		if st < 0 && p.status >= 0 {
			c.errors++
		}
		p.status = min(st, 0)
		p.injected = ev.Injected && st < 0
	}
	prev, hasPrev := c.lastCall[ev.TID]
	if ev.Req == 0 {
		if hasPrev && c.calls[prev].raw.Hook == ev.Hook {
			setFailed(&c.calls[prev])
		}
		return
	}
	if hasPrev && ev.Injected && st < 0 {
		// A status query overridden by the injector returned the
		// failure; libucp's return the probe saw was success.
		p := &c.calls[prev]
		if ph := &hooks.Table[p.raw.Hook]; ph.Polls && p.raw.Req == ev.Req && p.status == 0 {
			setFailed(p)
		}
	}
	idx, ok := c.pending[ev.Req]
	if !ok {
		if idx, ok = c.last[ev.Req]; !ok || !ev.Injected || c.calls[idx].status < 0 {
			return
		}
	}
	delete(c.pending, ev.Req)
	p := &c.calls[idx]
	p.how = recording.HowCompletion
	if ev.Unlearned {
		p.how = recording.HowUnknown
	}
	setFailed(p)
}

// add takes one call, in return order. Calls of hooks not in hooks.Table
// are ignored.
func (c *correlator) add(ev rawCall) {
	if int(ev.Hook) >= len(hooks.Table) {
		return
	}
	if ev.Completion {
		c.deliver(ev)
		return
	}
	h := &hooks.Table[ev.Hook]
	cs := callState{raw: ev, how: recording.HowImmediate}
	switch h.Return {
	case hooks.StatusPtr:
		switch {
		case ev.Ret == 0:
		case isErrPtr(ev.Ret):
			cs.status = int(int64(ev.Ret))
			c.errors++
		default:
			// A request: its status arrives later, if at all. The
			// same pointer returned again means the old request was
			// freed without its status being seen.
			if old, ok := c.pending[ev.Ret]; ok {
				c.calls[old].how = recording.HowUnknown
			}
			cs.how = recording.HowUnknown
			c.pending[ev.Ret] = len(c.calls)
			c.last[ev.Ret] = len(c.calls)
		}
	case hooks.Status:
		st := ucs.FromRaw(ev.Ret)
		if st < 0 {
			cs.status = int(st)
			c.errors++
		}
		if h.Request != "" && st != ucs.InProgress {
			if idx, ok := c.pending[ev.Req]; ok {
				delete(c.pending, ev.Req)
				p := &c.calls[idx]
				p.how = recording.HowCompletion
				if st < 0 {
					p.status = int(st)
					c.errors++
				}
			}
		}
	}
	c.lastCall[ev.TID] = len(c.calls)
	c.calls = append(c.calls, cs)
}

// finish returns the calls ordered by entry time, with Seq, Thread and
// Endpoint ordinals assigned, and times relative to base (CLOCK_MONOTONIC).
// Requests still pending keep HowUnknown.
func (c *correlator) finish(base uint64) []recording.Call {
	order := make([]int, len(c.calls))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return c.calls[order[a]].raw.EntryNS < c.calls[order[b]].raw.EntryNS
	})
	threads := map[uint32]int{}
	eps := map[uint64]int{}
	out := make([]recording.Call, 0, len(c.calls))
	for seq, i := range order {
		cs := &c.calls[i]
		h := &hooks.Table[cs.raw.Hook]
		th, ok := threads[cs.raw.TID]
		if !ok {
			th = len(threads)
			threads[cs.raw.TID] = th
		}
		ep := -1
		if h.Endpoint != "" {
			var ok bool
			if ep, ok = eps[cs.raw.EP]; !ok {
				ep = len(eps)
				eps[cs.raw.EP] = ep
			}
		}
		var size uint64
		if h.Size != "" {
			size = cs.raw.Size
		}
		var t uint64
		if cs.raw.EntryNS > base {
			t = cs.raw.EntryNS - base
		}
		out = append(out, recording.Call{
			Seq:        uint64(seq),
			Thread:     th,
			Fn:         h.Name,
			Size:       size,
			Endpoint:   ep,
			Status:     cs.status,
			How:        cs.how,
			TimeNS:     t,
			DurationNS: cs.raw.DurationNS,
			Injected:   (cs.raw.Injected || cs.injected) && cs.status < 0,
		})
	}
	return out
}
