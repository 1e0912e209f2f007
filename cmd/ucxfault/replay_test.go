package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/observer"
	"github.com/ucxfault/ucxfault/recording"
)

func TestPickPart(t *testing.T) {
	f := recording.New(recording.SourceObserver)
	f.Processes = []recording.Process{{PID: 100, Rank: -1}, {PID: 200, Rank: 3}, {PID: 300, Rank: 0}}
	for sel, want := range map[string]int{"1": 1, "pid:300": 2, "rank:3": 1, "rank:0": 2, "0": 0} {
		if got, err := pickPart(f, sel); err != nil || got != want {
			t.Errorf("pickPart(%q) = %d, %v; want %d", sel, got, err, want)
		}
	}
	for _, sel := range []string{"3", "pid:400", "rank:7", "host:1", "x", "pid:"} {
		_, err := pickPart(f, sel)
		if err == nil {
			t.Errorf("pickPart(%q) accepted", sel)
		}
	}
	if _, err := pickPart(f, "pid:400"); err == nil || !strings.Contains(err.Error(), "1: pid 200 rank 3") {
		t.Errorf("the error should list the parts: %v", err)
	}
}

// An incident of an endpoint the watch saw created holds its creation, and
// replays as a timed kill at the failure's age; one of an endpoint created
// before the watch holds no creation (the endpoint is listed as attached)
// and is refused as holding nothing to replay, before any process is
// asked.
func TestIncidentReplay(t *testing.T) {
	seen := observer.Failure{Time: time.Now(), Host: "h", PID: 42, Rank: -1, Endpoint: 1, Code: -80, Handler: true, AgeNS: 28e6}
	p := incident(&seen).Processes[0]
	w, dropped := control.ScheduleFromProcess(&p, "function", false, "x")
	if dropped != 0 || len(w.Timed) != 1 || w.Timed[0] != (control.TimedKill{Endpoint: 1, Code: -80, AfterNS: 28e6}) {
		t.Fatalf("incident %+v scheduled as %+v (%d left out), want a kill of endpoint 1 with -80 at 28 ms", p.EndpointEvents, w.Timed, dropped)
	}
	before := seen
	before.CreatedBefore, before.AgeNS = true, 0
	rf := incident(&before)
	if len(rf.Processes[0].AttachedEndpoints) != 1 || len(rf.Processes[0].EndpointEvents) != 2 {
		t.Fatalf("incident of an endpoint created before the watch: %+v", rf.Processes[0])
	}
	path := filepath.Join(t.TempDir(), "incident.json")
	if err := rf.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	out, err := runRoot(t, "--socket-dir", t.TempDir(), "replay", "--from", path)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "nothing to replay") || !strings.Contains(err.Error(), "no recorded creation") {
		t.Fatalf("replay of an incident without a creation: %v, want a usage error saying why\n%s", err, out)
	}
}
