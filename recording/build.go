package recording

import (
	"sort"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// Raw is one call as the injector's log or the observer's probes saw it,
// before requests are followed to their final status. Both sources turn
// their records into Raws and hand them to Build, the one request follower.
type Raw struct {
	// TimeNS is the call's entry, or a delivery's time (CLOCK_MONOTONIC
	// or any clock shared by every Raw of a process).
	TimeNS     uint64
	DurationNS uint64
	// ThreadKey identifies the thread (a tid or an ordinal); Build turns it
	// into an ordinal in order of first call.
	ThreadKey uint64
	Hook      hooks.ID
	// EndpointKey identifies the endpoint (a pointer or ordinal+1); 0 when
	// the function takes none. Build assigns ordinals in order of creation
	// (create events) or first use, unless KeyIsNumber.
	EndpointKey uint64
	// KeyIsNumber: EndpointKey is the endpoint's number + 1, given by the
	// source (the injector numbers endpoints by creation in the process,
	// whether or not it was recording then).
	KeyIsNumber bool
	Size        uint64
	// Status is what the call returned: 0, 1 (UCS_INPROGRESS: a request
	// was returned, or a status query found it in flight) or a negative
	// code.
	Status int
	// Request is the request returned, or the one a status query (a hook
	// whose table row Polls) examined.
	Request  uint64
	Injected bool
	// Completion marks a delivery, not a call: Status is the final status
	// the injector handed the application (through a callback or a status
	// query) for the operation that returned Request; Request 0 (the
	// observer's marker of a failure attached to an operation that
	// completed at once): for this thread's call of Hook that just
	// returned.
	Completion bool
	// Unlearned, with Completion: the request was freed before the
	// application could learn its failure.
	Unlearned bool
	// Event marks an endpoint event, not a call (EventCreate, EventClose,
	// EventFailure, EventHandler) of the endpoint EndpointKey, with Code
	// for a failure or a handler call. It takes the position of the next
	// call in time order.
	Event string
	Code  int
	Peer  string
	// Cause and InflightCode: EndpointEvent's, for an injected event.
	Cause        string
	InflightCode int
}

// end is when the call returned.
func (r *Raw) end() uint64 { return r.TimeNS + r.DurationNS }

// polls reports whether hook is a status query (its row in hooks.Table
// Polls): its returns give requests their final status.
func polls(hook hooks.ID) bool {
	return int(hook) < len(hooks.Table) && hooks.Table[hook].Polls
}

// BuildStats counts what Build could not resolve.
type BuildStats struct {
	// Unknown is the number of requests whose final status was never seen.
	Unknown uint64
	// Events are the endpoint events among the Raws, in time order, each
	// placed before the next call and numbered as the calls' endpoints.
	Events []EndpointEvent
	// FirstUse lists, in order, the endpoints whose first Raw was not
	// their create event: open before the recording began, numbered in
	// order of first use.
	FirstUse []int
}

// recentCalls bounds how far back a delivery looks, among its thread's
// calls, for the call it was made in: calls nested in callbacks of that
// call are the only ones between.
const recentCalls = 16

// follower is Build's state while it walks the Raws in time order.
type follower struct {
	calls   []Call
	raws    []*Raw // the Raw of each call
	pending map[uint64]int
	// last is the latest operation that returned each request, resolved
	// or not: a delivery after a poll still belongs to it.
	last map[uint64]int
	// byThread holds each thread's latest calls (indices in calls), where
	// a delivery made inside a call finds that call.
	byThread map[uint64][]int
	st       BuildStats
}

// Build orders raw calls by time (entry for calls, delivery for
// deliveries; stable, so equal times keep their input order) and gives
// each operation its final status:
//   - a call that returned a request takes the status of the first later
//     status query (a hook whose row Polls) on that pointer that is not
//     INPROGRESS, injected or not (a query delivers its operation's
//     outcome, and is not itself a decision to replay), or of a delivery
//     (Raw.Completion) for that pointer, whichever comes first;
//   - a later delivery of an injected failure overrides a query that saw
//     success, and the query itself, when it is the thread's call the
//     delivery was made in (the observer saw libucp's success);
//   - a delivery without a request fails the thread's call of its hook
//     that returned last (entered by then, among its latest calls);
//   - Injected is moved to the operation with the failure that decided its
//     status, and is true only on failed calls.
//
// A pointer returned again before it completed, or never completed, leaves
// the earlier operation with HowUnknown. Seq, thread and endpoint ordinals
// follow the time order; times are relative to the first call.
func Build(raws []Raw) ([]Call, BuildStats) {
	t0, first := uint64(0), true
	for _, r := range raws {
		if !r.Completion && (first || r.TimeNS < t0) {
			t0, first = r.TimeNS, false
		}
	}
	return BuildSince(raws, t0)
}

// BuildSince is Build with times relative to base (a call before base
// gets time 0).
func BuildSince(raws []Raw, base uint64) ([]Call, BuildStats) {
	sorted := append([]Raw(nil), raws...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].TimeNS < sorted[j].TimeNS })
	f := &follower{calls: make([]Call, 0, len(sorted)), pending: map[uint64]int{}, last: map[uint64]int{},
		byThread: map[uint64][]int{}}
	threads := map[uint64]int{}
	eps := map[uint64]int{}
	nextEP := 0
	t0 := base
	for i := range sorted {
		r := &sorted[i]
		if r.Completion {
			f.deliver(r)
			continue
		}
		ep := -1
		if r.EndpointKey != 0 && r.KeyIsNumber {
			ep = int(r.EndpointKey - 1)
		} else if r.EndpointKey != 0 {
			if r.Event == EventCreate {
				// A new endpoint, even at a closed one's address (calls
				// on the old one up to its close keep the old number).
				delete(eps, r.EndpointKey)
			}
			var ok bool
			if ep, ok = eps[r.EndpointKey]; !ok {
				// Numbers are never reused, even after a close.
				ep = nextEP
				nextEP++
				eps[r.EndpointKey] = ep
				if r.Event != EventCreate {
					f.st.FirstUse = append(f.st.FirstUse, ep)
				}
			}
		}
		var rel uint64
		if r.TimeNS > t0 {
			rel = r.TimeNS - t0
		}
		if r.Event != "" {
			if ep >= 0 {
				f.st.Events = append(f.st.Events, EndpointEvent{Seq: uint64(len(f.calls)), Endpoint: ep,
					Event: r.Event, Code: r.Code, Peer: r.Peer, Injected: r.Injected, Cause: r.Cause,
					InflightCode: r.InflightCode, TimeNS: rel})
			}
			continue
		}
		th, ok := threads[r.ThreadKey]
		if !ok {
			th = len(threads)
			threads[r.ThreadKey] = th
		}
		name := "?"
		if int(r.Hook) < len(hooks.Table) {
			name = hooks.Table[r.Hook].Name
		}
		f.call(r, Call{Seq: uint64(len(f.calls)), Thread: th, Fn: name, Size: r.Size, Endpoint: ep,
			How: HowImmediate, TimeNS: rel, DurationNS: r.DurationNS})
	}
	f.st.Unknown += uint64(len(f.pending))
	for i := range f.calls {
		f.calls[i].Injected = f.calls[i].Injected && f.calls[i].Failed()
	}
	return f.calls, f.st
}

// call takes one call, in time order.
func (f *follower) call(r *Raw, c Call) {
	idx := len(f.calls)
	if r.Status < 0 {
		c.Status, c.Injected = r.Status, r.Injected
	}
	switch {
	case r.Status == int(ucs.InProgress) && !polls(r.Hook) && r.Request != 0:
		if old, dup := f.pending[r.Request]; dup {
			f.calls[old].How = HowUnknown
			f.st.Unknown++
		}
		f.pending[r.Request] = idx
		f.last[r.Request] = idx
		c.How = HowUnknown // until its completion is seen
	case polls(r.Hook) && r.Status != int(ucs.InProgress):
		if op, ok := f.pending[r.Request]; ok {
			delete(f.pending, r.Request)
			f.calls[op].How = HowCompletion
			if r.Status < 0 {
				f.calls[op].Status, f.calls[op].Injected = r.Status, r.Injected
			}
		}
	}
	f.calls = append(f.calls, c)
	f.raws = append(f.raws, r)
	th := append(f.byThread[r.ThreadKey], idx)
	if len(th) > recentCalls {
		th = th[len(th)-recentCalls:]
	}
	f.byThread[r.ThreadKey] = th
}

// inCall returns the call a delivery on r's thread at r.TimeNS was made
// in: of the thread's recent calls entered by then that match, the one
// that returned last. Matching first keeps a call nested in a callback of
// another (a send from inside ucp_worker_progress, whose marker comes
// before the outer call returns) and an injector's record that ends after
// the delivery it made (its log entry is written last) both found.
func (f *follower) inCall(r *Raw, match func(*Raw) bool) (int, bool) {
	best, found := 0, false
	for _, i := range f.byThread[r.ThreadKey] {
		if c := f.raws[i]; c.TimeNS <= r.TimeNS && match(c) && (!found || c.end() >= f.raws[best].end()) {
			best, found = i, true
		}
	}
	return best, found
}

// fail gives call idx the final status st.
func (f *follower) fail(idx int, st int, injected bool) {
	c := &f.calls[idx]
	c.Status = min(st, 0)
	c.Injected = injected && st < 0
}

// deliver gives a delivery to the operation it belongs to.
func (f *follower) deliver(r *Raw) {
	if r.Request == 0 {
		if idx, ok := f.inCall(r, func(c *Raw) bool { return c.Hook == r.Hook }); ok {
			f.fail(idx, r.Status, r.Injected)
		}
		return
	}
	if r.Injected && r.Status < 0 {
		// A status query overridden by the injector returned the
		// failure, where the observer saw libucp's success.
		query := func(c *Raw) bool { return polls(c.Hook) && c.Request == r.Request }
		if idx, ok := f.inCall(r, query); ok && f.calls[idx].Status == 0 {
			f.fail(idx, r.Status, true)
		}
	}
	op, ok := f.pending[r.Request]
	if !ok {
		// Already resolved by a poll, or by an earlier delivery: only
		// an injected failure the poll could not see changes it.
		if op, ok = f.last[r.Request]; !ok || !r.Injected || f.calls[op].Failed() {
			return
		}
	}
	delete(f.pending, r.Request)
	f.calls[op].How = HowCompletion
	if r.Unlearned {
		f.calls[op].How = HowUnknown
	}
	f.fail(op, r.Status, r.Injected)
}
