package observer

import (
	"testing"
	"time"
)

// A flight buffer never holds more than its bound, drops calls older than
// the window silently, and counts as lost the calls it must drop while they
// are still inside the window (or an incident's).
func TestFlightBufferBound(t *testing.T) {
	const window = uint64(time.Second)
	b := &flightBuffer{max: 100}
	// 1,000 calls per second for 2 s: the window holds 1,000, the bound
	// 100, so every call dropped after the first 100 was still wanted.
	for i := 0; i < 2000; i++ {
		b.add(rawCall{Hook: 0, EntryNS: uint64(i) * uint64(time.Millisecond)}, window)
		if len(b.ring) > b.max || cap(b.ring) > b.max {
			t.Fatalf("after %d calls the ring holds %d (capacity %d), bound %d", i+1, len(b.ring), cap(b.ring), b.max)
		}
	}
	if b.lost != 1900 {
		t.Errorf("lost %d, want 1900", b.lost)
	}
	// 10 calls per second: the window needs 10 of the 100 kept.
	b = &flightBuffer{max: 100}
	for i := 0; i < 1000; i++ {
		b.add(rawCall{EntryNS: uint64(i) * uint64(100*time.Millisecond)}, window)
	}
	if b.lost != 0 {
		t.Errorf("lost %d at a rate the bound holds", b.lost)
	}
	got := b.since(uint64(99) * uint64(time.Second))
	if len(got) != 10 || got[0].EntryNS != 99*uint64(time.Second) {
		t.Errorf("since the last second: %d calls from %d", len(got), got[0].EntryNS)
	}
	// A pending incident keeps what lies before the window: dropping it
	// is a loss.
	b.keepFrom = 1
	b.add(rawCall{EntryNS: 1000 * uint64(100*time.Millisecond)}, window)
	if b.lost != 1 {
		t.Errorf("lost %d with an incident pending, want 1", b.lost)
	}
}

func TestFlightOptionsCheck(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []FlightOptions{
		{Window: 0, Dir: dir},
		{Window: time.Second, After: -1, Dir: dir},
		{Window: time.Second, MaxCalls: -1, Dir: dir},
		{Window: time.Second},
		{Window: time.Second, Dir: dir + "/missing"},
	} {
		if err := o.check(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	o := FlightOptions{Window: 30 * time.Second, Dir: dir}
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	if got := o.CallBound(); got != 30*DefaultFlightRate {
		t.Errorf("default bound %d calls, want %d", got, 30*DefaultFlightRate)
	}
}
