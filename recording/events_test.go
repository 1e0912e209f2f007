package recording

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// A version 1 file (no endpoint events) still parses, as it did.
func TestParseVersion1(t *testing.T) {
	v1 := `{"format": "ucxfault-recording", "version": 1, "source": "observer",
 "created": "2026-11-25T21:54:28Z", "processes": [{"host": "h", "pid": 1, "rank": -1,
 "command": ["./rma"], "start_time": "2026-11-25T21:54:23Z", "hooks": ["ucp_put_nbx"],
 "lost": {"dropped_events": 0, "overwritten_records": 0, "unmatched_entries": 0, "unmatched_returns": 0},
 "complete": true, "calls": [{"seq": 0, "thread": 0, "fn": "ucp_put_nbx", "size": 8, "ep": 0,
 "status": -80, "how": "immediate", "injected": false, "t_ns": 0}]}]}`
	f, err := Parse([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 1 || len(f.Processes[0].Calls) != 1 || len(f.Processes[0].Failures()) != 0 {
		t.Fatalf("version 1 file read as %+v", f)
	}
	// Endpoint events are a version 2 field.
	bad := strings.Replace(v1, `"complete": true,`, `"complete": true, "endpoint_events": [{"seq": 0, "ep": 0, "event": "failure", "code": -80, "t_ns": 0}],`, 1)
	if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalidContent) {
		t.Fatalf("version 1 file with endpoint events: %v, want %v", err, ErrInvalidContent)
	}
}

func TestEndpointEventsRoundTripAndRefusals(t *testing.T) {
	f := sample()
	if f.Version != 2 {
		t.Fatalf("new recordings are version %d, want 2", f.Version)
	}
	f.Processes[0].EndpointEvents = []EndpointEvent{
		{Seq: 0, Endpoint: 0, Event: EventCreate},
		{Seq: 1, Endpoint: 0, Event: EventFailure, Code: -80, Injected: true, TimeNS: 5},
		{Seq: 1, Endpoint: 0, Event: EventHandler, Code: -80, Injected: true, TimeNS: 6},
		{Seq: 2, Endpoint: 0, Event: EventClose, TimeNS: 9},
	}
	var buf bytes.Buffer
	if err := f.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	fs := got.Processes[0].Failures()
	if len(got.Processes[0].EndpointEvents) != 4 || len(fs) != 1 || fs[0].Seq != 1 || fs[0].Code != -80 || !fs[0].Injected {
		t.Fatalf("round trip: %+v", got.Processes[0].EndpointEvents)
	}
	good := buf.String()
	for name, data := range map[string]string{
		"event":       strings.Replace(good, `"event": "close"`, `"event": "explode"`, 1),
		"code":        strings.Replace(good, `"code": -80`, `"code": 3`, 1),
		"create code": strings.Replace(good, `"event": "create"`, `"event": "create", "code": -80`, 1),
		"endpoint": strings.Replace(good, `"seq": 2,
     "ep": 0`, `"seq": 2,
     "ep": -1`, 1),
		"seq goes back": strings.Replace(good, `"seq": 2,
     "ep": 0`, `"seq": 0,
     "ep": 0`, 1),
	} {
		if data == good {
			t.Fatalf("%s: the replacement changed nothing:\n%s", name, good)
		}
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrInvalidContent) {
			t.Errorf("%s: %v, want %v", name, err, ErrInvalidContent)
		}
	}
}

// Build places each endpoint event before the next call, numbers its
// endpoint as the calls', and gives an endpoint created at a closed one's
// address a new number.
func TestBuildEndpointEvents(t *testing.T) {
	put := hook(t, "ucp_put_nbx")
	calls, st := Build([]Raw{
		{TimeNS: 5, ThreadKey: 1, EndpointKey: 0xa, Event: EventCreate},
		{TimeNS: 10, ThreadKey: 1, Hook: put, EndpointKey: 0xa},
		{TimeNS: 20, ThreadKey: 1, Hook: put, EndpointKey: 0xa},
		{TimeNS: 25, ThreadKey: 9, EndpointKey: 0xa, Event: EventFailure, Code: -80, Injected: true},
		{TimeNS: 27, ThreadKey: 1, EndpointKey: 0xa, Event: EventHandler, Code: -80, Injected: true},
		{TimeNS: 30, ThreadKey: 1, Hook: put, EndpointKey: 0xa, Status: -80, Injected: true},
		{TimeNS: 40, ThreadKey: 1, EndpointKey: 0xa, Event: EventClose},
		{TimeNS: 50, ThreadKey: 1, EndpointKey: 0xa, Event: EventCreate},
		{TimeNS: 60, ThreadKey: 1, Hook: put, EndpointKey: 0xa},
	})
	if len(calls) != 4 || calls[3].Endpoint != 1 || calls[2].Endpoint != 0 {
		t.Fatalf("calls: %+v", calls)
	}
	want := []EndpointEvent{
		{Seq: 0, Endpoint: 0, Event: EventCreate, TimeNS: 0},
		{Seq: 2, Endpoint: 0, Event: EventFailure, Code: -80, Injected: true, TimeNS: 20},
		{Seq: 2, Endpoint: 0, Event: EventHandler, Code: -80, Injected: true, TimeNS: 22},
		{Seq: 3, Endpoint: 0, Event: EventClose, TimeNS: 35},
		{Seq: 3, Endpoint: 1, Event: EventCreate, TimeNS: 45},
	}
	if len(st.Events) != len(want) {
		t.Fatalf("events: %+v", st.Events)
	}
	for i := range want {
		if st.Events[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, st.Events[i], want[i])
		}
	}
}

// A close comes before its own close call, which keeps the closing
// endpoint's number; only a create makes a new endpoint at a known key.
// An endpoint first seen without its create is listed in FirstUse.
func TestBuildCloseAndFirstUse(t *testing.T) {
	put, closeNBX := hook(t, "ucp_put_nbx"), hook(t, "ucp_ep_close_nbx")
	calls, st := Build([]Raw{
		{TimeNS: 10, ThreadKey: 1, Hook: put, EndpointKey: 0xb}, // open before the recording
		{TimeNS: 20, ThreadKey: 1, EndpointKey: 0xb, Event: EventClose},
		{TimeNS: 20, ThreadKey: 1, Hook: closeNBX, EndpointKey: 0xb},
		{TimeNS: 30, ThreadKey: 1, EndpointKey: 0xb, Event: EventCreate}, // same address, new endpoint
		{TimeNS: 40, ThreadKey: 1, Hook: put, EndpointKey: 0xb},
		{TimeNS: 50, ThreadKey: 1, EndpointKey: 0xc, Event: EventCreate},
		{TimeNS: 60, ThreadKey: 1, Hook: put, EndpointKey: 0xc},
	})
	var eps []int
	for _, c := range calls {
		eps = append(eps, c.Endpoint)
	}
	if want := []int{0, 0, 1, 2}; !reflect.DeepEqual(eps, want) {
		t.Errorf("call endpoints %v, want %v", eps, want)
	}
	if !reflect.DeepEqual(st.FirstUse, []int{0}) {
		t.Errorf("first use %v, want [0]", st.FirstUse)
	}
	if len(st.Events) != 3 || st.Events[0].Seq != 1 || st.Events[0].Event != EventClose || st.Events[1].Seq != 2 {
		t.Errorf("events %+v: want the close at 1 (before its call), the create at 2", st.Events)
	}
}

// The injector's keys are the process's endpoint numbers: kept as they are,
// gaps and all, and never listed as numbered by first use.
func TestBuildKeepsGivenNumbers(t *testing.T) {
	put := hook(t, "ucp_put_nbx")
	calls, st := Build([]Raw{
		{TimeNS: 10, ThreadKey: 1, Hook: put, EndpointKey: 3 + 1, KeyIsNumber: true},
		{TimeNS: 20, ThreadKey: 1, EndpointKey: 5 + 1, KeyIsNumber: true, Event: EventCreate},
		{TimeNS: 30, ThreadKey: 1, Hook: put, EndpointKey: 5 + 1, KeyIsNumber: true},
	})
	if len(calls) != 2 || calls[0].Endpoint != 3 || calls[1].Endpoint != 5 || st.Events[0].Endpoint != 5 || len(st.FirstUse) != 0 {
		t.Errorf("calls %+v, events %+v, first use %v: want endpoints 3 and 5 as given", calls, st.Events, st.FirstUse)
	}
}
