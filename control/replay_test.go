package control

import (
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
)

// A global schedule holds only the calls that take an outcome: recorded
// request frees, cancels, progress and polls would each hold the cursor
// back one call; outcomes of hooks disabled in the replaying process too.
func TestGlobalScheduleSkipsCallsThatTakeNoOutcome(t *testing.T) {
	calls := []recording.Call{
		{Fn: "ucp_put_nbx", Status: -25, How: recording.HowCompletion},
		{Fn: "ucp_request_check_status", Status: -25},
		{Fn: "ucp_request_free"},
		{Fn: "ucp_get_nbx"},
		{Fn: "ucp_request_cancel"},
		{Fn: "ucp_request_release"},
		{Fn: "ucp_ep_create"},
		{Fn: "ucp_get_nbx", Status: -6},
	}
	r, err := ReplayFromWire(ScheduleFromCalls(calls, "global", false, "test"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 4 || r.All[0].Code != -25 || !r.All[0].Deferred || r.All[3].Code != -6 {
		t.Fatalf("schedule %+v, want put -25 on completion, get, ep_create, get -6", r.All)
	}
	enabled := DefaultSettings().HookEnabled // ucp_ep_create is opt-in: off
	d := r.WithoutDisabled(enabled)
	if d.Len() != 3 || d.All[2].Code != -6 || r.Len() != 4 {
		t.Fatalf("without disabled hooks: %+v (original %d), want put, get, get -6", d.All, r.Len())
	}
	id, _, _ := hooks.Lookup("ucp_ep_create")
	enabled[id] = true
	if r.WithoutDisabled(enabled).Len() != 4 {
		t.Fatal("an enabled opt-in hook lost its outcome")
	}
}

// A recorded endpoint failure becomes a kill of the same endpoint, with the
// same code, before the first call at or after its position that takes an
// outcome (a status query there takes none); one past the last such call is
// reported as left out.
func TestScheduleFromProcessPlacesKills(t *testing.T) {
	p := &recording.Process{Calls: []recording.Call{
		{Seq: 0, Fn: "ucp_put_nbx", Endpoint: 0},
		{Seq: 1, Fn: "ucp_get_nbx", Endpoint: 0},
		{Seq: 2, Fn: "ucp_request_check_status", Endpoint: -1, Status: -80},
		{Seq: 3, Fn: "ucp_get_nbx", Endpoint: 0, Status: -80, Injected: true},
		{Seq: 4, Fn: "ucp_put_nbx", Endpoint: 0, Status: -80, Injected: true},
	}, EndpointEvents: []recording.EndpointEvent{
		{Seq: 0, Endpoint: 0, Event: recording.EventCreate},
		{Seq: 2, Endpoint: 0, Event: recording.EventFailure, Code: -80, Injected: true},
		{Seq: 2, Endpoint: 0, Event: recording.EventHandler, Code: -80, Injected: true},
		{Seq: 5, Endpoint: 1, Event: recording.EventFailure, Code: -25},
	}}
	for _, key := range []string{"function", "global"} {
		w, dropped := ScheduleFromProcess(p, key, false, "test")
		if dropped != 1 {
			t.Errorf("%s: %d failures left out, want 1 (the one after the last call)", key, dropped)
		}
		r, err := ReplayFromWire(w)
		if err != nil {
			t.Fatal(err)
		}
		if !r.HasKills() {
			t.Fatalf("%s: no kill in %+v", key, r)
		}
		var killed []Outcome
		if key == "global" {
			killed = r.All
		} else {
			get, _, _ := hooks.Lookup("ucp_get_nbx")
			killed = r.PerHook[get]
		}
		// The kill sits on the get at seq 3 (the query at seq 2 takes no outcome).
		k := killed[len(killed)-1]
		if key == "global" {
			k = r.All[2]
		}
		if k.Kill == nil || k.Kill.Endpoint != 0 || k.Kill.Code != -80 || k.Code != -80 {
			t.Fatalf("%s: kill placed as %+v in %+v", key, k, killed)
		}
	}
	bad := &WireReplay{Key: "function", Calls: map[string][]Outcome{"ucp_put_nbx": {{Kill: &Kill{Endpoint: -1, Code: -80}}}}}
	if _, err := ReplayFromWire(bad); err == nil {
		t.Fatal("a kill of endpoint -1 was accepted")
	}
}
