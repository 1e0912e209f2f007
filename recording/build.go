package recording

import (
	"sort"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// Raw is one call as the injector's log or the observer's probes saw it,
// before requests are followed to their final status.
type Raw struct {
	TimeNS     uint64
	DurationNS uint64
	// ThreadKey identifies the thread (a tid or an ordinal); Build turns it
	// into an ordinal in order of first call.
	ThreadKey uint64
	Hook      hooks.ID
	// EndpointKey identifies the endpoint (a pointer or ordinal+1); 0 when
	// the function takes none. Build assigns ordinals in order of first use.
	EndpointKey uint64
	Size        uint64
	// Status is what the call returned: 0, 1 (UCS_INPROGRESS: a request
	// was returned) or a negative code.
	Status int
	// Request is the request returned, or the one examined by
	// ucp_request_check_status.
	Request  uint64
	Injected bool
	// Completion marks a delivery, not a call: Status is the final status
	// the injector handed the application (through a callback or a status
	// query) for the operation that returned Request.
	Completion bool
	// Unlearned, with Completion: the request was freed before the
	// application could learn its failure.
	Unlearned bool
}

// polls reports whether hook is a status query (ucp_request_check_status,
// ucp_request_test): its returns give requests their final status.
func polls(hook hooks.ID) bool {
	return int(hook) < len(hooks.Table) && hooks.Table[hook].Polls
}

// BuildStats counts what Build could not resolve.
type BuildStats struct {
	// Unknown is the number of requests whose final status was never seen.
	Unknown uint64
}

// Build orders raw calls by time and gives each operation its final
// status: a call that returned a request takes the status of the first
// later status query (ucp_request_check_status, ucp_request_test) on that
// pointer that is not INPROGRESS, injected or not (a query delivers its
// operation's outcome, and is not itself a decision to replay), or of a
// delivery (Raw.Completion) for that pointer, whichever comes first; a later
// delivery of an injected failure overrides a query that saw success. A
// pointer returned again before it completed, or never completed, leaves
// the earlier operation with HowUnknown.
func Build(raws []Raw) ([]Call, BuildStats) {
	sorted := append([]Raw(nil), raws...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].TimeNS < sorted[j].TimeNS })
	var (
		st      BuildStats
		calls   = make([]Call, 0, len(sorted))
		threads = map[uint64]int{}
		eps     = map[uint64]int{}
		pending = map[uint64]int{}
		// last is the latest operation that returned each request,
		// resolved or not: a delivery after a poll still belongs to it.
		last = map[uint64]int{}
	)
	var t0 uint64
	for _, r := range sorted {
		if !r.Completion {
			t0 = r.TimeNS
			break
		}
	}
	for _, r := range sorted {
		if r.Completion {
			resolve(calls, pending, last, r)
			continue
		}
		th, ok := threads[r.ThreadKey]
		if !ok {
			th = len(threads)
			threads[r.ThreadKey] = th
		}
		ep := -1
		if r.EndpointKey != 0 {
			if ep, ok = eps[r.EndpointKey]; !ok {
				ep = len(eps)
				eps[r.EndpointKey] = ep
			}
		}
		name := "?"
		if int(r.Hook) < len(hooks.Table) {
			name = hooks.Table[r.Hook].Name
		}
		var rel uint64
		if r.TimeNS > t0 {
			rel = r.TimeNS - t0
		}
		c := Call{Seq: uint64(len(calls)), Thread: th, Fn: name, Size: r.Size, Endpoint: ep,
			How: HowImmediate, Injected: r.Injected && r.Status < 0,
			TimeNS: rel, DurationNS: r.DurationNS}
		switch {
		case r.Status < 0:
			c.Status = r.Status
		case r.Status == int(ucs.InProgress) && !polls(r.Hook) && r.Request != 0:
			if old, dup := pending[r.Request]; dup {
				calls[old].How = HowUnknown
				st.Unknown++
			}
			pending[r.Request] = len(calls)
			last[r.Request] = len(calls)
			c.How = HowUnknown // until its completion is seen
		}
		if polls(r.Hook) && r.Status != int(ucs.InProgress) {
			if op, ok := pending[r.Request]; ok {
				delete(pending, r.Request)
				calls[op].How = HowCompletion
				if r.Status < 0 {
					calls[op].Status = r.Status
					calls[op].Injected = r.Injected
				}
			}
		}
		calls = append(calls, c)
	}
	st.Unknown += uint64(len(pending))
	return calls, st
}

// resolve gives a delivery to the operation that returned its request.
func resolve(calls []Call, pending, last map[uint64]int, r Raw) {
	op, ok := pending[r.Request]
	if !ok {
		// Already resolved by a poll, or by an earlier delivery: only
		// an injected failure the poll could not see changes it.
		if op, ok = last[r.Request]; !ok || !r.Injected || calls[op].Failed() {
			return
		}
	}
	delete(pending, r.Request)
	c := &calls[op]
	c.How = HowCompletion
	if r.Unlearned {
		c.How = HowUnknown
	}
	c.Status = min(r.Status, 0)
	c.Injected = r.Injected && r.Status < 0
}
