package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/olekukonko/tablewriter/pkg/twwidth"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/version"
	"github.com/ucxfault/ucxfault/recording"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/ from the output")

// golden compares got with testdata/name, or rewrites the file with
// -update. A difference prints both.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the output (go test -update rewrites it)\n--- want\n%s\n--- got\n%s", name, want, got)
	}
}

// fitsIn fails when a line of out is wider than width terminal columns.
func fitsIn(t *testing.T, out string, width int) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if w := twwidth.Width(line); w > width {
			t.Errorf("line of %d columns, want at most %d:\n%s", w, width, line)
		}
	}
}

// fixtureStatuses are two processes as an injector reports them: a long
// command, a seed above 2^53, three hooks called (one never faulted), the
// others not called, a rule.
func fixtureStatuses() []control.Status {
	mk := func(pid int, calls [3]uint64, faults [2]uint64) control.Status {
		st := control.Status{PID: pid, Host: "vm", Rank: -1, Enabled: true, Strategy: control.StrategyRandom, Probability: 5,
			Codes: []int{-3, -6, -20}, Seed: 12187480498957745315, Mode: control.ModeImmediate, Threads: 1, Version: version.String(),
			Command: []string{"/work/build/rma", "--ops", "0", "--interval-us", "1000", "--seq", "put,get,flush"}}
		for _, h := range hooks.Table {
			hs := control.HookStatus{Name: h.Name, Enabled: h.Faultable && !h.OptIn}
			switch h.Name {
			case "ucp_put_nbx":
				hs.Calls, hs.Faults, hs.CallsSinceFault = calls[0], faults[0], 7
				hs.FaultCodes = map[string]uint64{"-3": faults[0] - 1, "-20": 1}
			case "ucp_get_nbx":
				hs.Calls, hs.Faults, hs.CallsSinceFault = calls[1], faults[1], 3
				hs.FaultCodes = map[string]uint64{"-6": faults[1]}
			case "ucp_worker_progress":
				hs.Calls, hs.CallsSinceFault = calls[2], calls[2]
			}
			st.Calls += hs.Calls
			st.Faults += hs.Faults
			st.Hooks = append(st.Hooks, hs)
		}
		return st
	}
	a := mk(12027, [3]uint64{1557, 1557, 40211}, [2]uint64{78, 68})
	a.Rules = []control.RuleStatus{{ID: 1, Rule: "hooks=ucp_put_nbx prob=100 max-faults=3", Hooks: []string{"ucp_put_nbx"}, Matches: 3, Faults: 3}}
	b := mk(12031, [3]uint64{12, 12, 300}, [2]uint64{2, 1})
	b.Rank, b.Command = 1, []string{"rma"}
	return []control.Status{a, b}
}

func TestStatusTableGolden(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	for _, tc := range []struct {
		name string
		view statusView
		fits bool
	}{
		{"status_80.txt", statusView{}, true},
		{"status_detailed_80.txt", statusView{detailed: true}, true},
		{"status_wide.txt", statusView{wide: true}, false},
		{"status_detailed_all.txt", statusView{detailed: true, all: true}, false},
	} {
		var b bytes.Buffer
		if err := renderStatus(&b, fixtureStatuses(), tc.view); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		golden(t, tc.name, out)
		if tc.fits {
			fitsIn(t, out, 80)
		}
	}
}

// The default status leaves out the wide columns, and the detailed one the
// hooks without calls, with a footer; "-" stands for 0 and "n/a" for the
// faults of a hook that cannot fail.
func TestStatusHidesWhatIsEmpty(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	var b bytes.Buffer
	if err := renderStatus(&b, fixtureStatuses(), statusView{detailed: true}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "12187480498957745315") || strings.Contains(out, "SEED") {
		t.Errorf("the narrow table shows the seed:\n%s", out)
	}
	hidden := len(hooks.Table) - 3
	if !strings.Contains(out, plural(hidden, "hook")+" without calls not shown (--all shows them)") {
		t.Errorf("no footer for the %d hooks without calls:\n%s", hidden, out)
	}
	if strings.Contains(out, "ucp_tag_send_nbx") {
		t.Errorf("a hook without calls is shown:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "ucp_worker_progress") && !strings.Contains(line, "n/a") {
			t.Errorf("a hook that cannot fail shows no n/a: %s", line)
		}
	}
	b.Reset()
	if err := renderStatus(&b, fixtureStatuses(), statusView{wide: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "12187480498957745315") || !strings.Contains(b.String(), "INJECTOR") {
		t.Errorf("-o wide lacks the seed or the injector version:\n%s", b.String())
	}
}

func TestStatsGolden(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	var b bytes.Buffer
	if err := renderStats(&b, fixtureStatuses(), statsView{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats_80.txt", b.String())
	fitsIn(t, b.String(), 80)
	if !strings.HasPrefix(b.String(), "2 processes, 43649 calls, 149 faults\n") {
		t.Errorf("totals line: %q", strings.SplitN(b.String(), "\n", 2)[0])
	}
	b.Reset()
	if err := renderStats(&b, fixtureStatuses()[1:], statsView{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "1 process, ") {
		t.Errorf("one process is not singular: %q", strings.SplitN(b.String(), "\n", 2)[0])
	}
}

func TestHookListGolden(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	var b bytes.Buffer
	if err := renderHookTable(&b, false); err != nil {
		t.Fatal(err)
	}
	golden(t, "hook_list_80.txt", b.String())
	fitsIn(t, b.String(), 80)
}

func TestRuleListGolden(t *testing.T) {
	t.Setenv("COLUMNS", "80")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := fixtureStatuses()[0]
	st.Rules = []control.RuleStatus{
		{ID: 1, Rule: "hooks=ucp_put_nbx prob=100 max-faults=3", Matches: 3, Faults: 3, SetAt: now.Add(-time.Minute)},
		{ID: 2, Rule: "hooks=ucp_get_nbx prob=100 after=10s for=5s", SetAt: now.Add(-3 * time.Second)},
		{ID: 3, Rule: "hooks=ucp_get_nbx prob=100 after=1s for=5s", Matches: 9, Faults: 9, SetAt: now.Add(-3 * time.Second)},
		{ID: 4, Rule: "hooks=ucp_get_nbx prob=100 for=5s", Matches: 1, Faults: 1, SetAt: now.Add(-time.Minute)},
		{ID: 5, Rule: "hooks=ucp_ep_flush_nbx delay=1ms", Matches: 5, Delays: 5, DelayNS: 5e6, SetAt: now},
	}
	var b bytes.Buffer
	if err := renderRules(&b, st, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	golden(t, "rule_list_80.txt", out)
	fitsIn(t, out, 80)
	for _, want := range []string{"budget spent", "opens in 7s", "open, 3s left", "closed", "active"} {
		if !strings.Contains(out, want) {
			t.Errorf("rule list has no state %q:\n%s", want, out)
		}
	}
	st.Enabled = false
	b.Reset()
	if err := renderRules(&b, st, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "injection is off: no rule acts until it is on") {
		t.Errorf("rule list of a process with injection off does not say so:\n%s", b.String())
	}
}

func TestPatternCompressedGolden(t *testing.T) {
	if got := compressRuns([]byte("OOOOOXOOO")); got != "O x5 X O x3" {
		t.Errorf("compressRuns(OOOOOXOOO) = %q", got)
	}
	if got := compressRuns([]byte("XXOX")); got != "X x2 O X" {
		t.Errorf("compressRuns(XXOX) = %q", got)
	}
	f := recording.New(recording.SourceInjector)
	p := recording.Process{PID: 42, Rank: -1, Complete: true}
	for i := 0; i < 2000; i++ {
		st := 0
		if i%37 == 5 || i%101 == 0 {
			st = -3
		}
		p.Calls = append(p.Calls, recording.Call{Seq: uint64(i), Fn: "ucp_put_nbx", Status: st, How: recording.HowImmediate})
	}
	f.Processes = []recording.Process{p}
	var b bytes.Buffer
	printPattern(&b, f, false, 80)
	out := b.String()
	fitsIn(t, out, 80)
	golden(t, "pattern_80.txt", out)
	b.Reset()
	printPattern(&b, f, true, 80)
	if !strings.Contains(b.String(), strings.Repeat("O", 30)) {
		t.Errorf("--raw does not print the whole string")
	}
}

// JSON output: seeds are strings and come back whole; an empty list is [].
func TestJSONSeedsAndEmptyLists(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSON(&b, fixtureStatuses()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"seed": "12187480498957745315"`) {
		t.Errorf("the seed is not a JSON string:\n%s", b.String())
	}
	var back []control.Status
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back[0].Seed != 12187480498957745315 {
		t.Fatalf("seed did not survive the round trip: %v %v", err, back)
	}
	var req control.Request
	for _, line := range []string{`{"seed":"18446744073709551615"}`, `{"seed":18446744073709551615}`} {
		if err := json.Unmarshal([]byte(line), &req); err != nil || req.Seed == nil || *req.Seed != 18446744073709551615 {
			t.Errorf("%s: %v", line, err)
		}
	}
	b.Reset()
	if err := writeJSON(&b, aggregate(nil)); err != nil {
		t.Fatal(err)
	}
	var r statsReport
	if err := json.Unmarshal(b.Bytes(), &r); err != nil || r.Processes != 0 || len(r.Hooks) != len(hooks.Table) {
		t.Errorf("stats of no process: %v %+v", err, r)
	}
	b.Reset()
	if err := writeJSON(&b, summaryJSON(recording.New(recording.SourceInjector))); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("an empty summary is %q, want []", b.String())
	}
}

// A table shortens the command column first, and only as much as needed.
func TestTableShortensCommandFirst(t *testing.T) {
	tb := newTable(column{Name: "PID"}, column{Name: "Command", Shrink: 1, Min: 12}, column{Name: "Strategy", Shrink: 2, Min: 12})
	tb.add("1", strings.Repeat("c", 60), "random 5.00%")
	var b bytes.Buffer
	if err := tb.render(&b, 60, false); err != nil {
		t.Fatal(err)
	}
	fitsIn(t, b.String(), 60)
	if !strings.Contains(b.String(), "random 5.00%") || !strings.Contains(b.String(), "ccc...") {
		t.Errorf("the command was not shortened first:\n%s", b.String())
	}
	b.Reset()
	if err := tb.render(&b, 0, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), strings.Repeat("c", 60)) {
		t.Errorf("with no width limit the command was shortened:\n%s", b.String())
	}
}

func TestWithDashDash(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		value string
		want  string
	}{
		{[]string{"error-codes", "-3,-6"}, "-3,-6", "ucxfault error-codes -- -3,-6"},
		{[]string{"--pid", "7", "seed", "-1"}, "-1", "ucxfault --pid 7 seed -- -1"},
		{[]string{"inject", "--codes", "x", "-5", "--", "./app"}, "-5", "ucxfault inject --codes x -- -5 ./app"},
	} {
		if got := withDashDash(tc.args, tc.value); got != tc.want {
			t.Errorf("withDashDash(%q, %q) = %q, want %q", tc.args, tc.value, got, tc.want)
		}
	}
}

func TestClosestHook(t *testing.T) {
	for in, want := range map[string]string{"ucp_put_nbz": "ucp_put_nbx", "get_nb": "ucp_get_nbx", "frobnicate": ""} {
		if got := hooks.Closest(in); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
	_, _, err := hooks.Lookup("ucp_put_nbz")
	if err == nil || !strings.Contains(err.Error(), "did you mean ucp_put_nbx?") || strings.Contains(err.Error(), "ucp_tag_send_nbx") {
		t.Errorf("Lookup error: %v", err)
	}
}

func TestProcessChoices(t *testing.T) {
	f := recording.New(recording.SourceInjector)
	f.Processes = []recording.Process{{PID: 100, Rank: 0, Calls: make([]recording.Call, 3)}, {PID: 200, Rank: 1, Calls: make([]recording.Call, 1)}}
	for text, want := range map[string]int{"": -1, "0": 0, "1": 1, "200": 1, "100": 0} {
		if got, err := pickProcess(f, text, "x.json"); err != nil || got != want {
			t.Errorf("--process %q: %d, %v; want %d", text, got, err, want)
		}
	}
	_, err := pickProcess(f, "7", "x.json")
	if err == nil || !strings.Contains(err.Error(), "0 or pid 100 (rank 0, 3 calls), 1 or pid 200 (rank 1, 1 call)") {
		t.Errorf("--process 7: %v", err)
	}
}
