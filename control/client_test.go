package control

import (
	"errors"
	"os"
	"testing"

	"github.com/ucxfault/ucxfault/recording"
)

func TestCheckIdentity(t *testing.T) {
	pid := os.Getpid()
	start, err := SelfStartTime()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := ProcessStartTime(pid); err != nil || st != start {
		t.Fatalf("ProcessStartTime(self) = %d, %v; SelfStartTime = %d", st, err, start)
	}
	me := Target{PID: pid, Path: "/tmp/ucx-fault-self.sock"}
	for _, tc := range []struct {
		name string
		resp *Response
		ok   bool
	}{
		{"same process", &Response{OK: true, Status: &Status{PID: pid, StartTime: start}}, true},
		{"no start time", &Response{OK: true, Status: &Status{PID: pid}}, true},
		{"error response", &Response{Error: "busy"}, true},
		{"recording", &Response{OK: true, Recording: &recording.Process{PID: pid}}, true},
		{"another pid", &Response{OK: true, Status: &Status{PID: pid + 1, StartTime: start}}, false},
		{"another start time", &Response{OK: true, Status: &Status{PID: pid, StartTime: start + 1}}, false},
		{"recording of another pid", &Response{OK: true, Recording: &recording.Process{PID: 1}}, false},
	} {
		err := CheckIdentity(me, tc.resp)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrWrongProcess) {
			t.Errorf("%s: got %v, want ErrWrongProcess", tc.name, err)
		}
	}
}
