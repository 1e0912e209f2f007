package main

import (
	"strings"
	"testing"

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
