package main

/*
#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"
*/
import "C"

import (
	"sync"
	"time"

	"github.com/ucxfault/ucxfault/control"
)

// timedPoll is how often the timer looks for an endpoint that a timed kill
// waits for: its creation time is taken by the hot path (ucxf_ep_created),
// so the kill's moment does not depend on when the timer sees it, unless
// the moment is less than timedPoll after the creation. Only while some
// kill waits for its endpoint: an armed kill sleeps until its moment.
const timedPoll = time.Millisecond

// timedKills runs the replay's kills placed by time (control.TimedKill) in
// the control plane: the hot path only stamps each endpoint's creation,
// and a goroutine here kills at creation + AfterNS through the same
// function as kill-ep (ucxf_ep_kill_ordinal), so the kill delivers what
// kill-ep delivers: the error handler once, from the worker's next
// progress, and the operations in flight failed.
type timedKills struct {
	mu    sync.Mutex
	state []control.TimedKillStatus
	stop  chan struct{}
	done  chan struct{}
}

// start replaces the running kills (if any) with ks; inflight is the
// process's --inflight-code, for kills that carry none. kill does the kill
// (under the backend's lock for kills).
func (t *timedKills) start(ks []control.TimedKill, inflight int, kill func(k control.TimedKill, inflight int)) {
	t.halt()
	t.mu.Lock()
	t.state = nil
	for _, k := range ks {
		t.state = append(t.state, control.TimedKillStatus{TimedKill: k, State: control.TimedWaiting})
	}
	if len(ks) == 0 {
		t.mu.Unlock()
		return
	}
	t.stop, t.done = make(chan struct{}), make(chan struct{})
	stop, done := t.stop, t.done
	t.mu.Unlock()
	go t.run(stop, done, inflight, kill)
}

// halt stops the goroutine of the previous schedule and waits for it, so
// that a kill of an old schedule never fires after a new one is in force.
func (t *timedKills) halt() {
	t.mu.Lock()
	stop, done := t.stop, t.done
	t.stop, t.done = nil, nil
	t.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// snapshot returns the kills with their state, for status. An armed kill
// sleeps until its moment: whether its endpoint was closed meanwhile is
// looked up now (the timer drops the kill when it wakes).
func (t *timedKills) snapshot() []control.TimedKillStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.state {
		k := &t.state[i]
		if k.State != control.TimedArmed {
			continue
		}
		var created C.uint64_t
		var closed C.int
		if found := C.ucxf_ep_created(C.int32_t(k.Endpoint), &created, &closed); found == 0 || closed != 0 {
			k.State = control.TimedClosed // closed, or retired by a new endpoint at its address
		}
	}
	return append([]control.TimedKillStatus(nil), t.state...)
}

func (t *timedKills) run(stop, done chan struct{}, inflight int, kill func(control.TimedKill, int)) {
	defer close(done)
	// missing counts, per kill, the looks that found its number handed
	// out but not in the table: twice means retired (closed, its address
	// taken by a new endpoint), once may be the instant of its insertion.
	missing := map[int]int{}
	for {
		now := uint64(C.ucxf_now_ns())
		wait := time.Duration(-1)
		t.mu.Lock()
		for i := range t.state {
			k := &t.state[i]
			if k.State == control.TimedFired || k.State == control.TimedClosed {
				continue
			}
			var created C.uint64_t
			var closed C.int
			if C.ucxf_ep_created(C.int32_t(k.Endpoint), &created, &closed) == 0 || created == 0 {
				if int(C.ucxf_ep_numbered()) > k.Endpoint {
					if missing[i]++; missing[i] >= 2 {
						k.State = control.TimedClosed
						continue
					}
				}
				k.State = control.TimedWaiting
				wait = minWait(wait, timedPoll)
				continue
			}
			if closed != 0 {
				k.State = control.TimedClosed
				continue
			}
			k.State = control.TimedArmed
			at := uint64(created) + k.AfterNS
			if now < at {
				wait = minWait(wait, time.Duration(at-now))
				continue
			}
			kill(k.TimedKill, inflight)
			k.State, k.FiredAfterNS = control.TimedFired, uint64(C.ucxf_now_ns())-uint64(created)
		}
		t.mu.Unlock()
		if wait < 0 {
			return // every kill fired or was dropped
		}
		tm := time.NewTimer(wait)
		select {
		case <-stop:
			tm.Stop()
			return
		case <-tm.C:
		}
	}
}

func minWait(a, b time.Duration) time.Duration {
	if a < 0 || b < a {
		return b
	}
	return a
}
