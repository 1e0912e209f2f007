package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/recording"
)

// An incomplete recording's pattern names what was lost, in words, and
// still prints the pattern of what it holds.
func TestPrintPatternNamesLosses(t *testing.T) {
	f := recording.New(recording.SourceInjector)
	f.Processes = []recording.Process{{PID: 42, Rank: -1, Lost: recording.Lost{OverwrittenRecords: 7, DroppedEvents: 2},
		Calls: []recording.Call{
			{Fn: "ucp_tag_send_nbx", Status: 0, How: recording.HowImmediate},
			{Seq: 1, Fn: "ucp_tag_send_nbx", Status: -3, How: recording.HowCompletion, Injected: true},
		}}}
	var b bytes.Buffer
	printPattern(&b, f, true, 0)
	out := b.String()
	for _, want := range []string{"incomplete: 7 overwritten", "UCX_FAULT_RECORD_CAPACITY",
		"2 dropped", "ucp_tag_send_nbx", "OX", "codes -3"} {
		if !strings.Contains(out, want) {
			t.Errorf("pattern of an incomplete recording lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "{}") || strings.Contains(out, "DroppedEvents") || strings.Contains(out, "0 unmatched") {
		t.Errorf("pattern prints an internal structure:\n%s", out)
	}
}
