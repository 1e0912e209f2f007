package observer

import (
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
	// EPFailure: not a call but libucp invoking the error handler of
	// endpoint EP (ucp_ep_invoke_err_cb) with the status byte in Ret.
	EPFailure bool
}

// errPtrMin is UCS_STATUS_PTR(UCS_ERR_LAST) = (void *)-100: a status
// pointer in [errPtrMin, max] is UCS_PTR_IS_ERR, anything else but NULL a
// request.
const errPtrMin = ^uint64(100) + 1

func isErrPtr(p uint64) bool { return p >= errPtrMin }

// correlator collects the probes' calls and the injector's markers as
// recording.Raw, and hands them to recording's request follower, the one
// the injector's call log goes through too, so that both recordings of the
// same calls agree.
type correlator struct {
	raws []recording.Raw
	// errors counts the failures seen so far, calls and deliveries: a
	// live estimate (a delivery may fail an operation already counted, a
	// poll's failure is also its operation's); finish sets it to the
	// number of failed calls in the recording.
	errors uint64
}

func newCorrelator() *correlator { return &correlator{} }

// toRaw decodes a call or marker as the follower takes it: the status as
// the hook's return kind encodes it in Ret, the request it returned (a
// StatusPtr hook) or examined (a hook taking a request), and the size and
// endpoint only where the hook has them.
func toRaw(ev rawCall) recording.Raw {
	h := &hooks.Table[ev.Hook]
	r := recording.Raw{TimeNS: ev.EntryNS, DurationNS: ev.DurationNS, ThreadKey: uint64(ev.TID), Hook: ev.Hook,
		Injected: ev.Injected, Completion: ev.Completion, Unlearned: ev.Unlearned}
	if h.Size != "" {
		r.Size = ev.Size
	}
	if h.Endpoint != "" {
		r.EndpointKey = ev.EP
	}
	switch h.Return {
	case hooks.StatusPtr:
		switch {
		case ev.Ret == 0:
		case isErrPtr(ev.Ret):
			r.Status = int(int64(ev.Ret))
		case ev.Completion:
			// A delivery's status is success or an error pointer.
		default:
			r.Status, r.Request = int(ucs.InProgress), ev.Ret
		}
	case hooks.Status:
		if st := ucs.FromRaw(ev.Ret); st < 0 || st == ucs.InProgress && !ev.Completion {
			r.Status = int(st)
		}
		if h.Request != "" {
			r.Request = ev.Req
		}
	}
	if ev.Completion {
		r.Request = ev.Req
	}
	return r
}

// add takes one call or marker, in any order. Calls of hooks not in
// hooks.Table are ignored.
func (c *correlator) add(ev rawCall) {
	if ev.EPFailure {
		// A real endpoint failure: the endpoint failed and its handler
		// runs, at once, with the same code (ucp_ep_invoke_err_cb).
		code := int(ucs.FromRaw(ev.Ret))
		for _, kind := range []string{recording.EventFailure, recording.EventHandler} {
			c.raws = append(c.raws, recording.Raw{TimeNS: ev.EntryNS, ThreadKey: uint64(ev.TID),
				EndpointKey: ev.EP, Event: kind, Code: code})
		}
		return
	}
	if int(ev.Hook) >= len(hooks.Table) {
		return
	}
	r := toRaw(ev)
	if r.Status < 0 {
		c.errors++
	}
	h := &hooks.Table[ev.Hook]
	if h.ClosesEndpoint && r.EndpointKey != 0 && !ev.Completion {
		// The close, just before the call (the same time, and first:
		// the follower's sort is stable), as the injector logs it.
		c.raws = append(c.raws, recording.Raw{TimeNS: r.TimeNS, ThreadKey: r.ThreadKey, EndpointKey: r.EndpointKey,
			Event: recording.EventClose})
	}
	c.raws = append(c.raws, r)
	if h.OutEndpoint != "" && ev.EP != 0 && !ev.Completion {
		// A new endpoint (the probe read it only when the call returned
		// UCS_OK): numbered from here, after the call, as the injector
		// logs it.
		c.raws = append(c.raws, recording.Raw{TimeNS: ev.EntryNS + ev.DurationNS, ThreadKey: r.ThreadKey,
			EndpointKey: ev.EP, Event: recording.EventCreate})
	}
}

// finish returns the calls as recording.BuildSince orders and resolves
// them, with times relative to base (CLOCK_MONOTONIC), and counts the
// failed ones in errors.
func (c *correlator) finish(base uint64) []recording.Call {
	calls, _, _ := c.finishAll(base)
	return calls
}

// finishAll is finish with the endpoint events and the endpoints that
// were open before the probes were armed (numbered by first use).
func (c *correlator) finishAll(base uint64) ([]recording.Call, []recording.EndpointEvent, []int) {
	calls, st := recording.BuildSince(c.raws, base)
	c.errors = 0
	for _, call := range calls {
		if call.Failed() {
			c.errors++
		}
	}
	return calls, st.Events, st.FirstUse
}
