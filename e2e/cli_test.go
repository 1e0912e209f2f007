package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// TestCLIForScripts runs the CLI on a real injected program and checks
// what a script reads: the seed in the start-up line, in status -o json (a
// string, whole) and in the exit summary line (on stderr and in
// UCX_FAULT_SUMMARY_FILE); JSON from stats, hook list, rule list,
// record-dump and a control command; a status table within 80 columns;
// rules added while injection is off said to do nothing.
func TestCLIForScripts(t *testing.T) {
	h := newHarness(t)
	summary := filepath.Join(t.TempDir(), "summary.txt")
	cmd := exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--probability", "5", "--",
		h.rma, "--ops", "0", "--interval-us", "1000", "--seq", "put,get,flush")
	cmd.Env = append(os.Environ(), "UCX_FAULT_SUMMARY_FILE="+summary)
	e := testutil.StartCmd(t, cmd)

	m := regexp.MustCompile(`ucxfault: injecting into .*rma \(pid (\d+)\): random 5%, seed (\d+)`).FindStringSubmatch(e.Stderr())
	if m == nil || m[1] != strconv.Itoa(e.PID) {
		t.Fatalf("start-up line without the pid or the seed:\n%s", e.Stderr())
	}
	seed := m[2]

	// status -o json: the seed is a string, equal to the start-up line's.
	var raw []map[string]any
	if err := json.Unmarshal([]byte(h.mustCtl(t, "status", "-o", "json")), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("status -o json: %v %v", err, raw)
	}
	if got, ok := raw[0]["seed"].(string); !ok || got != seed {
		t.Fatalf("status -o json seed %#v, want the string %q", raw[0]["seed"], seed)
	}
	if _, err := time.Parse(time.RFC3339, raw[0]["started_at"].(string)); err != nil {
		t.Errorf("started_at is not RFC 3339: %v", err)
	}

	// A table that fits 80 columns, the seed left to -o wide.
	narrow := h.ctlEnv(t, []string{"COLUMNS=80"}, "status", "--detailed")
	if narrow.code != 0 {
		t.Fatalf("status --detailed: exit %d: %s", narrow.code, narrow.stderr)
	}
	for _, line := range strings.Split(narrow.stdout, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("status line of %d columns at COLUMNS=80: %s", n, line)
		}
	}
	if strings.Contains(narrow.stdout, seed) || !strings.Contains(narrow.stdout, "hooks without calls not shown (--all shows them)") ||
		strings.Contains(narrow.stdout, "ucp_tag_send_nbx") || !strings.Contains(narrow.stdout, "ucp_put_nbx") {
		t.Errorf("status --detailed at 80 columns:\n%s", narrow.stdout)
	}
	if wide := h.mustCtl(t, "status", "-o", "wide"); !strings.Contains(wide, seed) {
		t.Errorf("status -o wide lacks the seed %s:\n%s", seed, wide)
	}

	var stats struct {
		Processes int    `json:"processes"`
		Calls     uint64 `json:"calls"`
		Hooks     []struct {
			Name string `json:"name"`
		} `json:"hooks"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, "stats", "-o", "json")), &stats); err != nil || stats.Processes != 1 || stats.Calls == 0 {
		t.Errorf("stats -o json: %v %+v", err, stats)
	}
	var hl struct {
		Hooks     []map[string]string `json:"hooks"`
		Processes []map[string]any    `json:"processes"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, "hook", "list", "-o", "json")), &hl); err != nil || len(hl.Hooks) == 0 || len(hl.Processes) != 1 {
		t.Errorf("hook list -o json: %v %+v", err, hl)
	}

	// A rule added while injection is off says so, and rule list's state.
	h.mustCtl(t, "disable")
	if out := h.mustCtl(t, "rule", "add", "--hooks", "ucp_put_nbx", "--max-faults", "2"); !strings.Contains(out, "injection is off, so no rule acts until it is on") {
		t.Errorf("rule add with injection off: %s", out)
	}
	ruleState := func() string {
		var rl []struct {
			Rules []struct {
				State string `json:"state"`
			} `json:"rules"`
		}
		if err := json.Unmarshal([]byte(h.mustCtl(t, "rule", "list", "-o", "json")), &rl); err != nil || len(rl) != 1 || len(rl[0].Rules) != 1 {
			t.Fatalf("rule list -o json: %v %+v", err, rl)
		}
		return rl[0].Rules[0].State
	}
	if s := ruleState(); s != "injection off" {
		t.Errorf("rule state with injection off: %q", s)
	}
	var replies []struct {
		PID     int    `json:"pid"`
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, "enable", "-o", "json")), &replies); err != nil || len(replies) != 1 ||
		replies[0].PID != e.PID || !replies[0].OK || replies[0].Message != "injection on" {
		t.Fatalf("enable -o json: %v %+v", err, replies)
	}
	waitFor(t, 10*time.Second, "the rule's budget to be spent", func() bool { return ruleState() == "budget spent" })

	// record-dump: JSON summary, compressed pattern, and the old -o FILE.
	h.mustCtl(t, "record-toggle", "on")
	time.Sleep(300 * time.Millisecond)
	var sum []struct {
		PID       int `json:"pid"`
		Functions []struct {
			Fn    string `json:"fn"`
			Calls int    `json:"calls"`
		} `json:"functions"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, "record-dump", "-o", "json")), &sum); err != nil || len(sum) != 1 || len(sum[0].Functions) == 0 {
		t.Fatalf("record-dump -o json: %v %+v", err, sum)
	}
	if out := h.mustCtl(t, "record-dump", "pattern"); !regexp.MustCompile(`O x\d+`).MatchString(out) {
		t.Errorf("record-dump pattern has no compressed run:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "rec.json")
	r := h.ctl(t, "record-dump", "records", "-o", path)
	if r.code != 0 || !strings.Contains(r.stderr, "-o FILE is deprecated for record-dump records: use --file") {
		t.Errorf("record-dump records -o FILE: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := recording.ReadFile(path); err != nil {
		t.Errorf("record-dump records -o FILE wrote no recording: %v", err)
	}

	// The exit summary: on stderr and in the file, with the seed.
	syscall.Kill(e.PID, syscall.SIGTERM)
	e.Wait(t, 30*time.Second)
	exitLine := regexp.MustCompile(`ucxfault\[` + strconv.Itoa(e.PID) + `\]: exit: \d+ faults? in \d+ calls?; seed ` + seed + `, random 5\.00%, codes -3,-6,-20, immediate mode, rules: hooks=ucp_put_nbx .*max-faults=2`)
	if !exitLine.MatchString(e.Stderr()) {
		t.Errorf("no exit summary line on stderr:\n%s", e.Stderr())
	}
	b, err := os.ReadFile(summary)
	if err != nil || !exitLine.Match(b) {
		t.Errorf("UCX_FAULT_SUMMARY_FILE: %v %q", err, b)
	}
}

// TestCLIUsageErrors: every usage error exits 2 with a message that says
// what to type; nothing found is [] and 0 for a listing in JSON.
func TestCLIUsageErrors(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"error-codes", "-3,-6"}, "put -- before it: ucxfault --socket-dir " + h.dir + " error-codes -- -3,-6"},
		{[]string{"hook", "disable", "ucp_put_nbz"}, "did you mean ucp_put_nbx?"},
		{[]string{"rule", "add", "frob=1"}, "(ucxfault rule --help lists the tokens)"},
		{[]string{"status", "-o", "yaml"}, "accepted: table, wide, json"},
		{[]string{"record-dump", "-o", "out.txt", "--file", "x"}, "the file is --file"},
		{[]string{"replay", "--from", "/nonexistent.json"}, "nonexistent"},
		// Checked before attaching: the capture is not lost at the end.
		{[]string{"observe", "1", "--recording", "/nonexistent/dir/x.json"}, "the recording could not be written"},
		{[]string{"observe", "1", "--functions", "put_nbx", "--recording", "/nonexistent/x.json"}, "--functions is deprecated: use --hooks"},
	} {
		r := h.ctl(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ucxfault %v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
		if strings.Contains(r.stderr, "a rule is:") || strings.Contains(r.stderr, "ucp_tag_send_nbx") {
			t.Errorf("ucxfault %v repeats a grammar or the hook list:\n%s", tc.args, r.stderr)
		}
	}
	for _, args := range [][]string{{"status", "-o", "json"}, {"rule", "list", "-o", "json"}} {
		if r := h.ctl(t, args...); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("ucxfault %v with no process: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	r := h.ctl(t, "--pid", "999999999", "observe", "--recording", filepath.Join(t.TempDir(), "x.json"))
	if r.code == 0 || !strings.Contains(r.stderr, "the usual form is: ucxfault observe 999999999") {
		t.Errorf("observe --pid: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if r := h.ctl(t, args...); r.code != 0 || !strings.HasPrefix(r.stdout, "ucxfault ") {
			t.Errorf("ucxfault %v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
}

// TestCLIWaitAndReplayUX: a control command sent with --wait before the
// program has started reaches it once it has; record-dump leaves out a
// process that recorded nothing, so its file replays without --process,
// and --process takes a pid, and a wrong one gets the list of choices.
func TestCLIWaitAndReplayUX(t *testing.T) {
	h := newHarness(t)
	waiting := exec.Command(h.cli, "--socket-dir", h.dir, "--wait", "30s", "record-toggle", "on")
	out := &strings.Builder{}
	waiting.Stdout, waiting.Stderr = out, out
	if err := waiting.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	rec := h.start(t, []string{"--probability", "20", "--seed", "3"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	if err := waiting.Wait(); err != nil || !strings.Contains(out.String(), "pid "+strconv.Itoa(rec.PID)+": recording on") {
		t.Fatalf("--wait 30s record-toggle on: %v\n%s", err, out)
	}
	idle := h.start(t, nil, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	time.Sleep(300 * time.Millisecond)
	path := filepath.Join(t.TempDir(), "rec.json")
	r := h.ctl(t, "record-dump", "records", "--file", path)
	if r.code != 0 || !strings.Contains(r.stderr, "left out 1 process that recorded nothing") {
		t.Fatalf("record-dump records --file: exit %d\n%s", r.code, r.stderr)
	}
	f, err := recording.ReadFile(path)
	if err != nil || len(f.Processes) != 1 || f.Processes[0].PID != rec.PID {
		t.Fatalf("recording: %v, %d processes", err, len(f.Processes))
	}
	if out := h.mustCtl(t, "--pid", strconv.Itoa(idle.PID), "replay", "--from", path); !strings.Contains(out, "replay") {
		t.Errorf("replay --from a one-process file: %s", out)
	}
	if out := h.mustCtl(t, "--pid", strconv.Itoa(idle.PID), "replay", "--from", path, "--process", strconv.Itoa(rec.PID)); out == "" {
		t.Errorf("replay --process PID printed nothing")
	}
	r = h.ctl(t, "--pid", strconv.Itoa(idle.PID), "replay", "--from", path, "--process", "99999999")
	if r.code != 2 || !strings.Contains(r.stderr, "0 or pid "+strconv.Itoa(rec.PID)+" (no rank, ") {
		t.Errorf("replay --process 99999999: exit %d, stderr %q", r.code, r.stderr)
	}
}
