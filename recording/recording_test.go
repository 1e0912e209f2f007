package recording

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
)

func sample() *File {
	f := New(SourceInjector)
	f.Processes = []Process{{PID: 7, Rank: -1, Hooks: hooks.Names(), Complete: true, Calls: []Call{
		{Seq: 0, Fn: "ucp_put_nbx", Size: 8, Status: 0, How: HowImmediate},
		{Seq: 1, Fn: "ucp_get_nbx", Size: 8, Status: -3, How: HowImmediate, Injected: true},
	}}}
	return f
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := sample().Write(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Processes[0].Calls) != 2 || f.Processes[0].Calls[1].Status != -3 {
		t.Fatalf("round trip lost data: %+v", f.Processes[0].Calls)
	}
}

func TestParseRefuses(t *testing.T) {
	var buf bytes.Buffer
	sample().Write(&buf)
	good := buf.String()
	for name, tc := range map[string]struct {
		data string
		want error
	}{
		"truncated": {good[:len(good)/2], ErrTruncated},
		"foreign":   {`{"a":1}`, ErrNotRecording},
		"array":     {`[1,2]`, ErrNotRecording},
		"version":   {strings.Replace(good, `"version": 2`, `"version": 9`, 1), ErrVersion},
		"fn":        {strings.Replace(good, `"fn": "ucp_get_nbx"`, `"fn": "ucp_launch_missiles"`, 1), ErrInvalidContent},
		"status":    {strings.Replace(good, `"status": -3`, `"status": -300`, 1), ErrInvalidContent},
		"how":       {strings.Replace(good, `"how": "immediate"`, `"how": "later"`, 1), ErrInvalidContent},
		"seq":       {strings.Replace(good, `"seq": 1`, `"seq": 0`, 1), ErrInvalidContent},
		"unknown":   {strings.Replace(good, `"source"`, `"extra": 1, "source"`, 1), ErrInvalidContent},
	} {
		if _, err := Parse([]byte(tc.data)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestBuildFollowsRequests(t *testing.T) {
	put, _, _ := hooks.Lookup("ucp_put_nbx")
	chk, _, _ := hooks.Lookup("ucp_request_check_status")
	recv, _, _ := hooks.Lookup("ucp_tag_recv_nbx")
	test, _, _ := hooks.Lookup("ucp_request_test")
	calls, st := Build([]Raw{
		{TimeNS: 10, ThreadKey: 5, Hook: put, EndpointKey: 0xa, Status: 1, Request: 0x100},
		{TimeNS: 20, ThreadKey: 5, Hook: chk, Status: 1, Request: 0x100},
		{TimeNS: 30, ThreadKey: 5, Hook: put, EndpointKey: 0xb, Status: 1, Request: 0x200},
		{TimeNS: 40, ThreadKey: 5, Hook: chk, Status: -80, Request: 0x100},
		{TimeNS: 50, ThreadKey: 6, Hook: put, EndpointKey: 0xa, Status: 0},
		{TimeNS: 60, ThreadKey: 5, Hook: recv, Status: 1, Request: 0x300},
		{TimeNS: 70, ThreadKey: 5, Hook: test, Status: 1, Request: 0x300},
		{TimeNS: 80, ThreadKey: 5, Hook: test, Status: -3, Request: 0x300, Injected: true},
	})
	if calls[0].Status != -80 || calls[0].How != HowCompletion || calls[0].Endpoint != 0 {
		t.Fatalf("first put: %+v", calls[0])
	}
	if calls[2].How != HowUnknown || calls[2].Endpoint != 1 || st.Unknown != 1 {
		t.Fatalf("second put (never completed): %+v, unknown %d", calls[2], st.Unknown)
	}
	if calls[4].Thread != 1 || calls[4].Endpoint != 0 || calls[4].TimeNS != 40 {
		t.Fatalf("third put: %+v", calls[4])
	}
	// ucp_request_test delivers a receive's outcome as check_status does.
	if calls[5].Status != -3 || calls[5].How != HowCompletion || !calls[5].Injected {
		t.Fatalf("receive failed through ucp_request_test: %+v", calls[5])
	}
}

// FuzzParseRecording: arbitrary bytes never panic, and whatever is accepted
// is valid and survives a round trip.
func FuzzParseRecording(f *testing.F) {
	var buf bytes.Buffer
	sample().Write(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"format":"ucxfault-recording","version":1}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := Parse(data)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := rec.Write(&out); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out.Bytes()); err != nil {
			t.Fatalf("accepted recording does not round trip: %v", err)
		}
	})
}
