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
