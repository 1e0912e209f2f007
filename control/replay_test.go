package control

import (
	"strings"
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

// A failure that no replayed call follows is placed by time when its
// endpoint's creation is recorded: an incident of `ucxfault watch` (no
// calls; the creation at 0, the failure at its age) becomes one timed kill
// of the same endpoint with the same code at the same age. A schedule of
// timed kills alone is a schedule; bad timed kills are refused.
func TestScheduleFromIncidentIsATimedKill(t *testing.T) {
	p := &recording.Process{Calls: []recording.Call{}, EndpointEvents: []recording.EndpointEvent{
		{Endpoint: 2, Event: recording.EventCreate, TimeNS: 0},
		{Endpoint: 2, Event: recording.EventFailure, Code: -80, TimeNS: 28_000_000},
		{Endpoint: 2, Event: recording.EventHandler, Code: -80, TimeNS: 28_000_000},
		{Endpoint: 3, Event: recording.EventFailure, Code: -25, TimeNS: 30_000_000}, // no creation: left out
	}}
	w, dropped := ScheduleFromProcess(p, "function", false, "incident")
	if dropped != 1 || len(w.Timed) != 1 || w.Timed[0] != (TimedKill{Endpoint: 2, Code: -80, AfterNS: 28_000_000}) {
		t.Fatalf("timed kills %+v, %d left out: want endpoint 2 with -80 at 28 ms, 1 left out", w.Timed, dropped)
	}
	r, err := ReplayFromWire(w)
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 || len(r.Timed) != 1 || !r.HasKills() {
		t.Fatalf("replay %+v: want no outcome and one timed kill", r)
	}
	e := NewEngine(&memBackend{}, DefaultSettings())
	if resp := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdReplay, Schedule: w}); !resp.OK || !strings.Contains(resp.Message, "endpoint 2 dies with -80") {
		t.Fatalf("replay of an incident: %+v", resp)
	}
	for _, k := range []TimedKill{{Endpoint: -1, Code: -80}, {Endpoint: 0, Code: 0}, {Endpoint: 0, Code: -80, InflightCode: 3}} {
		if _, err := ReplayFromWire(&WireReplay{Key: "function", Timed: []TimedKill{k}}); err == nil {
			t.Errorf("timed kill %+v accepted", k)
		}
	}
	if _, err := ReplayFromWire(&WireReplay{Key: "function", Timed: []TimedKill{{Code: -80}, {Code: -25}}}); err == nil {
		t.Error("two timed kills of one endpoint accepted")
	}
}
