package recording

import (
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
)

func hook(t *testing.T, name string) hooks.ID {
	t.Helper()
	id, _, err := hooks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A delivery is given to the call it was made in: a marker without a
// request made as a send nested in ucp_worker_progress returned goes to
// the send, not to the progress call still running around it; an
// injector's failed query, whose record ends after the delivery it made,
// is not confused with an earlier successful query of the same request.
func TestBuildDeliveryFindsItsCall(t *testing.T) {
	progress, send := hook(t, "ucp_worker_progress"), hook(t, "ucp_tag_send_nbx")
	check := hook(t, "ucp_request_check_status")
	const req = 0xa000
	calls, st := Build([]Raw{
		{TimeNS: 100, DurationNS: 50, ThreadKey: 1, Hook: progress},
		{TimeNS: 110, DurationNS: 5, ThreadKey: 1, Hook: send, EndpointKey: 1, Size: 8},
		{TimeNS: 120, ThreadKey: 1, Hook: send, Status: -3, Injected: true, Completion: true},
		// a send in flight, polled to success twice, then a named poll
		// the injector fails (its record ends after its delivery)
		{TimeNS: 200, DurationNS: 5, ThreadKey: 1, Hook: send, EndpointKey: 1, Size: 8, Status: 1, Request: req},
		{TimeNS: 210, DurationNS: 5, ThreadKey: 1, Hook: check, Request: req},
		{TimeNS: 220, DurationNS: 9, ThreadKey: 1, Hook: check, Request: req, Status: -6, Injected: true},
		{TimeNS: 225, ThreadKey: 1, Hook: check, Request: req, Status: -6, Injected: true, Completion: true},
	})
	type row struct {
		Fn       string
		Status   int
		How      string
		Injected bool
	}
	want := []row{
		{"ucp_worker_progress", 0, HowImmediate, false},
		{"ucp_tag_send_nbx", -3, HowImmediate, true},
		{"ucp_tag_send_nbx", -6, HowCompletion, true},
		{"ucp_request_check_status", 0, HowImmediate, false},
		{"ucp_request_check_status", -6, HowImmediate, true},
	}
	if len(calls) != len(want) || st.Unknown != 0 {
		t.Fatalf("%d calls (%d unknown), want %d: %+v", len(calls), st.Unknown, len(want), calls)
	}
	for i, c := range calls {
		if got := (row{c.Fn, c.Status, c.How, c.Injected}); got != want[i] {
			t.Errorf("call %d: %+v, want %+v", i, got, want[i])
		}
	}
}
