package recording

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestWriteMatchesTheEncoder checks that Write, which encodes one call at a
// time, writes exactly what json.Encoder with the same indentation writes.
func TestWriteMatchesTheEncoder(t *testing.T) {
	two := sample()
	two.Processes = append(two.Processes, Process{PID: 8, Rank: 1, Host: "h", Command: []string{"a", "b"},
		Calls: []Call{{Seq: 0, Fn: "ucp_tag_send_nbx", Size: 1 << 20, Endpoint: 3, Status: -80, How: HowCompletion, Injected: true, TimeNS: 5, DurationNS: 7}}})
	empty := sample()
	empty.Processes[0].Calls = []Call{}
	nilCalls := sample()
	nilCalls.Processes[0].Calls = nil
	noProcs := New(SourceObserver)
	noProcs.Processes = []Process{}
	nilProcs := New(SourceObserver)
	for name, f := range map[string]*File{"one": sample(), "two": two, "no calls": empty, "nil calls": nilCalls,
		"no processes": noProcs, "nil processes": nilProcs} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", " ")
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
		if err := f.Write(&got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%s: Write wrote\n%s\nthe encoder\n%s", name, got.Bytes(), want.Bytes())
		}
	}
}
