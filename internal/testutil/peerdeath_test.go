package testutil

import (
	"strings"
	"testing"
)

const realLog = `VERSION 1.13.1
PD ev=0 phase=warm ep=0 op=0 kind=put status=0 via=poll t_us=10
READY pid=1
POSTED t_us=20
PD ev=1 phase=inflight ep=0 op=-1 kind=handler status=-80 via=callback t_us=30
PD ev=2 phase=inflight ep=0 op=0 kind=get status=-80 via=poll t_us=31
DONE handlers=1
`

func TestParsePeerEvents(t *testing.T) {
	evs, err := ParsePeerEvents(realLog)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3: %+v", len(evs), evs)
	}
	want := PeerEvent{Phase: "inflight", EP: 0, Op: -1, Kind: "handler", Status: -80, Via: "callback", TUs: 30}
	if evs[1] != want {
		t.Fatalf("event 1 = %+v, want %+v", evs[1], want)
	}
	for _, bad := range []string{
		"PD ev=0 phase=warm ep=0 kind=put status=0 via=poll t_us=1",      // no op
		"PD ev=0 phase=warm ep=0 op=x kind=put status=0 via=poll t_us=1", // bad number
		"PD ev=0 ep=0 op=0 kind=put status=0 via=poll t_us=1",            // no phase
	} {
		if _, err := ParsePeerEvents(bad); err == nil {
			t.Errorf("ParsePeerEvents(%q) accepted a malformed line", bad)
		}
	}
}

func TestComparePeerLogs(t *testing.T) {
	real, err := ParsePeerEvents(realLog)
	if err != nil {
		t.Fatal(err)
	}
	// Times differ: still equal.
	same, _ := ParsePeerEvents(strings.ReplaceAll(realLog, "t_us=3", "t_us=9"))
	if err := ComparePeerLogs(real, same); err != nil {
		t.Fatalf("logs that differ only in time compared unequal: %v", err)
	}
	// The emulation completes the get before the handler: the first
	// difference is event 1.
	swapped := []PeerEvent{real[0], real[2], real[1]}
	err = ComparePeerLogs(real, swapped)
	if err == nil || !strings.Contains(err.Error(), "event 1 differs") || !strings.Contains(err.Error(), "kind=handler") {
		t.Fatalf("swapped order: %v", err)
	}
	// A second handler call in the emulated run.
	double := append(append([]PeerEvent{}, real...), real[1])
	err = ComparePeerLogs(real, double)
	if err == nil || !strings.Contains(err.Error(), "emulated goes on with") {
		t.Fatalf("extra handler call: %v", err)
	}
	// A request the emulation never completes.
	err = ComparePeerLogs(real, real[:2])
	if err == nil || !strings.Contains(err.Error(), "real goes on with") {
		t.Fatalf("missing completion: %v", err)
	}
}

func TestUCXVersionAndDeadPeerCode(t *testing.T) {
	maj, min, rel, err := UCXVersion(realLog)
	if err != nil || maj != 1 || min != 13 || rel != 1 {
		t.Fatalf("UCXVersion = %d.%d.%d, %v", maj, min, rel, err)
	}
	if _, _, _, err := UCXVersion("READY pid=1\n"); err == nil {
		t.Fatal("UCXVersion accepted a log without VERSION")
	}
	for _, tc := range []struct{ maj, min, want int }{{1, 13, -80}, {1, 14, -25}, {1, 22, -25}, {2, 0, -25}, {1, 9, -80}} {
		if got := DeadPeerCode(tc.maj, tc.min); got != tc.want {
			t.Errorf("DeadPeerCode(%d, %d) = %d, want %d", tc.maj, tc.min, got, tc.want)
		}
	}
}
