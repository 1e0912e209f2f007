package control

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

func TestParseCallRange(t *testing.T) {
	good := []struct {
		in   string
		want CallRange
		text string
	}{
		{"3", CallRange{First: 3, Last: 3, Step: 1}, "3"},
		{"5..", CallRange{First: 5, Open: true, Step: 1}, "5.."},
		{"..50", CallRange{First: 0, Last: 50, Step: 1}, "0..50"},
		{"100..200", CallRange{First: 100, Last: 200, Step: 1}, "100..200"},
		{"100..200+10", CallRange{First: 100, Last: 200, Step: 10}, "100..200+10"},
		{"5..+2", CallRange{First: 5, Open: true, Step: 2}, "5..+2"},
		{"7+", CallRange{First: 7, Open: true, Step: 1}, "7.."},
		{"7+3", CallRange{First: 7, Open: true, Step: 3}, "7..+3"},
		{"..9+3", CallRange{First: 0, Last: 9, Step: 3}, "0..9+3"},
		{" 4 ", CallRange{First: 4, Last: 4, Step: 1}, "4"},
		{"..0+100", CallRange{First: 0, Last: 0, Step: 1}, "0"}, // one call: the step selects nothing more
		{"5..5+3", CallRange{First: 5, Last: 5, Step: 1}, "5"},
	}
	for _, g := range good {
		got, err := ParseCallRange(g.in)
		if err != nil {
			t.Errorf("ParseCallRange(%q): %v", g.in, err)
			continue
		}
		if got != g.want {
			t.Errorf("ParseCallRange(%q) = %+v, want %+v", g.in, got, g.want)
		}
		if s := got.String(); s != g.text {
			t.Errorf("ParseCallRange(%q).String() = %q, want %q", g.in, s, g.text)
		}
	}
	for _, in := range []string{"", "..", "5..3", "a", "1..2+0", "+3", "1..2+x", "-1", "1...2", "1..2..3",
		"99999999999999999999", "3 4"} {
		_, err := ParseCallRange(in)
		if err == nil {
			t.Errorf("ParseCallRange(%q) accepted", in)
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "100..200+10") {
			t.Errorf("ParseCallRange(%q) error %q does not show the accepted forms", in, err)
		}
	}
}

func TestCallRangeContains(t *testing.T) {
	r, err := ParseCallRange("100..200+10")
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for k := uint64(0); k < 300; k++ {
		if r.Contains(k) {
			got = append(got, k)
		}
	}
	var want []uint64
	for k := uint64(100); k <= 200; k += 10 {
		want = append(want, k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("100..200+10 over 0..299 selects %v, want %v", got, want)
	}
	open, _ := ParseCallRange("5..")
	if open.Contains(4) || !open.Contains(5) || !open.Contains(1<<62) {
		t.Fatalf("5.. selects wrongly")
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"0": 0, "4096": 4096, "64K": 65536, "64k": 65536, "64KB": 65536, "64KiB": 65536,
		"1M": 1 << 20, "2G": 2 << 30, "1T": 1 << 40, "8B": 8, " 1m ": 1 << 20}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "1.5K", "1X", "-1", "1KK", "1 K", "99999999999999999999", "20000000T", "1iB"} {
		if _, err := ParseSize(in); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSize(%q) error = %v, want an ErrInvalid", in, err)
		}
	}
	for n, want := range map[uint64]string{0: "0", 100: "100", 1024: "1K", 65536: "64K", 1 << 20: "1M", 1536: "1536"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func hookIDs(t *testing.T, names ...string) []hooks.ID {
	t.Helper()
	var ids []hooks.ID
	for _, n := range names {
		id, _, err := hooks.Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestParseRuleFull(t *testing.T) {
	r, err := ParseRule("hooks=ucp_put_nbx,get_nbx prob=12.5 codes=-3,TIMED_OUT min-size=64K max-size=1M " +
		"calls=100..200+10 max-faults=3 after=10s for=5s delay=1ms..5ms endpoint=1 from-start")
	if err != nil {
		t.Fatal(err)
	}
	want := &Rule{
		HookNames: []string{"ucp_put_nbx", "ucp_get_nbx"},
		Hooks:     hookIDs(t, "ucp_put_nbx", "ucp_get_nbx"),
		Strategy:  StrategyRandom, Probability: 12.5,
		Codes:   []ucs.Status{-3, ucs.ErrTimedOut},
		MinSize: 64 << 10, MaxSize: 1 << 20, HasMaxSize: true,
		Endpoint: 1, Calls: CallRange{First: 100, Last: 200, Step: 10}, MaxFaults: 3,
		After: 10 * time.Second, For: 5 * time.Second, FromStart: true,
		DelayMin: time.Millisecond, DelayMax: 5 * time.Millisecond,
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
	const text = "hooks=ucp_put_nbx,ucp_get_nbx prob=12.5 codes=-3,-20 min-size=64K max-size=1M endpoint=1 " +
		"calls=100..200+10 max-faults=3 after=10s for=5s from-start delay=1ms..5ms"
	if s := r.String(); s != text {
		t.Fatalf("String() = %q\nwant       %q", s, text)
	}
}

func TestParseRuleDefaults(t *testing.T) {
	cases := []struct {
		in       string
		strategy string
		prob     float64
		hooks    []string
	}{
		// No action given: every matched call fails, with the global codes.
		{"calls=5", StrategyRandom, 100, faultableNames()},
		// A delay alone only delays.
		{"hooks=ucp_ep_flush_nbx delay=2ms", StrategyNone, 0, []string{"ucp_ep_flush_nbx"}},
		// A delay with codes fails after the delay.
		{"delay=2ms codes=-80", StrategyRandom, 100, faultableNames()},
		{"pattern=xo", StrategyPattern, 0, faultableNames()},
		// Size and endpoint conditions keep the default to hooks that have them.
		{"min-size=1K", StrategyRandom, 100, []string{"ucp_put_nbx", "ucp_get_nbx"}},
		{"endpoint=0", StrategyRandom, 100, []string{"ucp_put_nbx", "ucp_get_nbx", "ucp_ep_flush_nbx"}},
		{"hooks=all max-size=8", StrategyRandom, 100, []string{"ucp_put_nbx", "ucp_get_nbx"}},
	}
	for _, c := range cases {
		r, err := ParseRule(c.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", c.in, err)
			continue
		}
		var names []string
		for _, id := range r.Hooks {
			names = append(names, hooks.Table[id].Name)
		}
		// Only rows of the current table that fit are expected: other
		// rows may be added to the table later.
		for _, n := range c.hooks {
			if !slicesContains(names, n) {
				t.Errorf("ParseRule(%q) covers %v, missing %s", c.in, names, n)
			}
		}
		if r.Strategy != c.strategy || r.Probability != c.prob {
			t.Errorf("ParseRule(%q): strategy %s %v, want %s %v", c.in, r.Strategy, r.Probability, c.strategy, c.prob)
		}
		if r.Endpoint < 0 && strings.Contains(c.in, "endpoint") {
			t.Errorf("ParseRule(%q): endpoint lost", c.in)
		}
	}
	r, _ := ParseRule("min-size=1K")
	for _, id := range r.Hooks {
		if h := hooks.Table[id]; h.Size == "" || !h.Faultable {
			t.Errorf("min-size rule covers %s, which has no size or is not faultable", h.Name)
		}
	}
	if r, _ := ParseRule("calls=1"); len(r.Hooks) != len(faultableNames()) {
		t.Errorf("a rule without hooks= covers %d hooks, want the %d faultable ones", len(r.Hooks), len(faultableNames()))
	}
}

func faultableNames() []string {
	var out []string
	for _, h := range hooks.Table {
		if h.Faultable {
			out = append(out, h.Name)
		}
	}
	return out
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestParseRuleErrors(t *testing.T) {
	cases := map[string]string{
		"":                                  "empty rule",
		"   ":                               "empty rule",
		"foo=1":                             `unknown key "foo"`,
		"prob":                              "prob needs a value",
		"prob=":                             "prob needs a value",
		"prob=101":                          "out of range",
		"prob=5 pattern=XO":                 "not both",
		"prob=5 prob=6":                     "given twice",
		"pattern=XAX":                       "pattern",
		"codes=5":                           "injectable",
		"min-size=1X":                       "size",
		"min-size=2K max-size=1K":           "below min-size",
		"endpoint=-1":                       "endpoint",
		"endpoint=x":                        "endpoint",
		"calls=9..1":                        "before the first",
		"max-faults=0":                      "at least 1",
		"after=5":                           "duration",
		"for=0s":                            "for=",
		"after=-1s":                         "after=",
		"delay=0ms":                         "zero",
		"delay=5ms..1ms":                    "backwards",
		"delay=2m":                          "longer than",
		"delay=x":                           "delay",
		"from-start":                        "from-start needs",
		"from-start=maybe after=1s":         "boolean",
		"hooks=nope":                        "unknown hook",
		"hooks=ucp_ep_flush_nbx min-size=1": "no size argument",
		"hooks=ucp_request_check_status endpoint=0": "no endpoint argument",
	}
	for in, want := range cases {
		_, err := ParseRule(in)
		if err == nil {
			t.Errorf("ParseRule(%q) accepted", in)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRule(%q) error does not wrap ErrInvalid: %v", in, err)
		}
		if !strings.Contains(msg, want) {
			t.Errorf("ParseRule(%q) error %q does not mention %q", in, msg, want)
		}
		if !strings.Contains(msg, "a rule is: hooks=LIST") || !strings.Contains(msg, "calls=N|N..|N..M") {
			t.Errorf("ParseRule(%q) error does not show the accepted forms: %q", in, msg)
		}
	}
}

func TestParseRuleRoundTrip(t *testing.T) {
	for _, in := range []string{
		"calls=5",
		"HOOKS=put_nbx Prob=2.5 Min_Size=4KiB",
		"hooks=all max-size=8",
		"hooks=ucp_ep_flush_nbx delay=1ms..1ms",
		"pattern=xoox codes=-80,IO_ERROR endpoint=3 calls=7+ after=1m",
		"delay=250us for=1s from-start max-faults=9",
		"calls=0..",
	} {
		r, err := ParseRule(in)
		if err != nil {
			t.Fatalf("ParseRule(%q): %v", in, err)
		}
		again, err := ParseRule(r.String())
		if err != nil {
			t.Fatalf("ParseRule(String() = %q): %v", r.String(), err)
		}
		if !reflect.DeepEqual(r, again) {
			t.Errorf("%q -> %q -> %+v, want %+v", in, r.String(), again, r)
		}
	}
}

func TestParseRules(t *testing.T) {
	rs, err := ParseRules("hooks=ucp_put_nbx calls=3; ;\nhooks=ucp_ep_flush_nbx delay=2ms;")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Calls.First != 3 || rs[1].DelayMax != 2*time.Millisecond {
		t.Fatalf("ParseRules gave %+v", rs)
	}
	if rs, err := ParseRules(" ; "); err != nil || len(rs) != 0 {
		t.Fatalf("ParseRules of nothing = %v, %v", rs, err)
	}
	if _, err := ParseRules(strings.Repeat("calls=1;", MaxRules+1)); err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("%d rules accepted: %v", MaxRules+1, err)
	}
	if _, err := ParseRules("calls=1; calls=x"); err == nil {
		t.Fatal("a bad second rule was accepted")
	}
}

func TestFromEnvRules(t *testing.T) {
	env := map[string]string{EnvRules: "hooks=ucp_put_nbx calls=3; delay=1ms hooks=ucp_ep_flush_nbx"}
	s, _, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rules) != 2 || s.Rules[0].ID != 1 || s.Rules[1].ID != 2 || s.Rules[0].SetAt.IsZero() {
		t.Fatalf("rules from the environment: %+v", s.Rules)
	}
	env[EnvRules] = "calls=oops"
	if _, _, err := FromEnv(func(k string) string { return env[k] }); err == nil ||
		!strings.Contains(err.Error(), EnvRules) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad %s: %v", EnvRules, err)
	}
}

// fakeBackend records what the engine applies.
type fakeBackend struct {
	applied  []Settings
	counters Counters
}

func (f *fakeBackend) Apply(s Settings) error { f.applied = append(f.applied, s.Clone()); return nil }
func (f *fakeBackend) Counters() Counters     { return f.counters }
func (f *fakeBackend) Info() Status           { return Status{PID: 1} }
func (f *fakeBackend) Identity() Identity     { return selfIdentity() }
func (f *fakeBackend) RecordClear()           {}
func (f *fakeBackend) Records(int) (*recording.Process, error) {
	return &recording.Process{}, nil
}

func TestEngineRules(t *testing.T) {
	fb := &fakeBackend{counters: Counters{Rules: map[int]RuleCounters{}}}
	s := DefaultSettings()
	s.Rules = []Rule{{ID: 4, Strategy: StrategyNone, DelayMin: time.Millisecond, DelayMax: time.Millisecond,
		Endpoint: -1, Calls: CallRange{Open: true, Step: 1}, Hooks: hookIDs(t, "ucp_ep_flush_nbx")}}
	e := NewEngine(fb, s)
	line := `{"v":1,"cmd":"rules","rule_op":"add","rules":["hooks=ucp_put_nbx calls=3","max-faults=2; min-size=1K"]}`
	resp, ok := e.HandleLine([]byte(line))
	if !ok {
		t.Fatalf("add refused: %s", resp)
	}
	cur := e.Settings().Rules
	if len(cur) != 4 || cur[1].ID != 5 || cur[2].ID != 6 || cur[3].ID != 7 {
		t.Fatalf("after add: %+v", cur)
	}
	fb.counters.Rules[5] = RuleCounters{Matches: 10, Faults: 1}
	fb.counters.DelayNS = 3000
	r := e.Handle(&Request{V: 1, Cmd: CmdStatus})
	if len(r.Status.Rules) != 4 || r.Status.Rules[1].Matches != 10 || r.Status.Rules[1].Rule != "hooks=ucp_put_nbx prob=100 calls=3" ||
		r.Status.DelayNS != 3000 {
		t.Fatalf("status rules: %+v", r.Status.Rules)
	}
	id := 6
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpDel, RuleID: &id}); !r.OK {
		t.Fatalf("del: %s", r.Error)
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpDel, RuleID: &id}); r.OK || !strings.Contains(r.Error, "rules: 4, 5, 7") {
		t.Fatalf("del of a deleted rule: %+v", r)
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"calls=x"}}); r.OK ||
		!strings.Contains(r.Error, "a rule is:") {
		t.Fatalf("bad rule over the socket: %+v", r)
	}
	if n := len(e.Settings().Rules); n != 3 {
		t.Fatalf("a refused add changed the rules: %d stand", n)
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpSet, Rules: []string{"calls=1"}}); !r.OK {
		t.Fatalf("set: %s", r.Error)
	}
	if cur := e.Settings().Rules; len(cur) != 1 || cur[0].ID != 8 {
		t.Fatalf("after set: %+v", cur)
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpClear}); !r.OK || len(e.Settings().Rules) != 0 {
		t.Fatalf("clear: %+v", r)
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: "nope"}); r.OK || !strings.Contains(r.Error, "accepted: add, set, del, clear") {
		t.Fatalf("unknown rule_op: %+v", r)
	}
	many := make([]string, MaxRules+1)
	for i := range many {
		many[i] = "calls=1"
	}
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: many}); r.OK {
		t.Fatal("more than MaxRules rules accepted")
	}
	// Reset clears the rules; IDs are not reused.
	e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"calls=2"}})
	e.Handle(&Request{V: 1, Cmd: CmdReset})
	if n := len(e.Settings().Rules); n != 0 {
		t.Fatalf("reset left %d rules", n)
	}
	e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"calls=2"}})
	if cur := e.Settings().Rules; cur[0].ID != 10 {
		t.Fatalf("rule ID after reset = %d, want 10", cur[0].ID)
	}
}

func FuzzParseRule(f *testing.F) {
	for _, seed := range []string{
		"hooks=ucp_put_nbx,ucp_get_nbx prob=100 codes=-3 min-size=64K calls=100..200+10 max-faults=3 after=10s for=5s delay=2ms endpoint=1",
		"calls=5..", "calls=..50", "calls=7+3", "delay=1ms..5ms", "pattern=XOO codes=IO_ERROR", "hooks=all max-size=1M",
		"from-start after=1s", "prob=0.01", "min-size=1T", "codes=-1,-100", "", "=", "calls=1..2+",
		"hooks=ucp_get_nbx delay-completion=200ms", "hang calls=3 prob=50", "hang=1", "hang delay-completion=1s",
		"hooks=ucp_tag_recv_nbx hang", "delay-completion=2m", "hooks=ucp_put_nbi hang", "hang codes=-3",
		"peer=w:0123456789ab hooks=ucp_get_nbx", "peer=127.0.0.1:13337 kill-ep", "peer=[::1]:5 endpoint=2", "peer=a=b", "peer=x;y",
		"CAlls=..0+100",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseRule(text)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRule(%q): error without ErrInvalid: %v", text, err)
			}
			if !strings.Contains(err.Error(), "a rule is:") {
				t.Fatalf("ParseRule(%q): error without the accepted forms: %v", text, err)
			}
			return
		}
		if len(r.Hooks) == 0 {
			t.Fatalf("ParseRule(%q): a rule covering no hook", text)
		}
		if r.Strategy == StrategyNone && r.DelayMax == 0 && !r.Holds() {
			t.Fatalf("ParseRule(%q): a rule that does nothing", text)
		}
		s := r.String()
		if strings.ContainsAny(s, ";\n") {
			t.Fatalf("ParseRule(%q).String() = %q holds a rule separator", text, s)
		}
		again, err := ParseRule(s)
		if err != nil {
			t.Fatalf("ParseRule(%q) -> %q, which does not parse: %v", text, s, err)
		}
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("ParseRule(%q) -> %q -> %+v, want %+v", text, s, again, r)
		}
	})
}

func TestParseRuleKillEP(t *testing.T) {
	r, err := ParseRule("hooks=ucp_get_nbx calls=5 kill-ep")
	if err != nil {
		t.Fatal(err)
	}
	if !r.KillEP || r.KillCode != 0 || r.Strategy != StrategyRandom || r.Probability != 100 {
		t.Errorf("got KillEP=%v KillCode=%d strategy %s %v, want a kill at every matched call with the default code",
			r.KillEP, r.KillCode, r.Strategy, r.Probability)
	}
	if s := r.String(); s != "hooks=ucp_get_nbx prob=100 calls=5 kill-ep" {
		t.Errorf("String() = %q", s)
	}
	r, err = ParseRule("kill-ep=CONNECTION_RESET endpoint=2")
	if err != nil {
		t.Fatal(err)
	}
	if r.KillCode != -25 || r.Endpoint != 2 {
		t.Errorf("got code %d endpoint %d, want -25 and 2", r.KillCode, r.Endpoint)
	}
	for _, h := range r.Hooks {
		if hooks.Table[h].Endpoint == "" {
			t.Errorf("kill-ep rule covers %s, which has no endpoint", hooks.Table[h].Name)
		}
	}
	r, err = ParseRule("hooks=ucp_get_nbx kill-ep inflight-code=CANCELED")
	if err != nil {
		t.Fatal(err)
	}
	if r.InflightCode != -16 {
		t.Errorf("inflight-code=CANCELED: got %d, want -16", r.InflightCode)
	}
	if s := r.String(); s != "hooks=ucp_get_nbx prob=100 kill-ep inflight-code=-16" {
		t.Errorf("String() = %q", s)
	}
	for _, h := range r.Hooks {
		if !hooks.Table[h].Faultable {
			t.Errorf("kill-ep rule covers %s, which is never faulted", hooks.Table[h].Name)
		}
	}
	for _, bad := range []string{"kill-ep codes=-80", "kill-ep=-80,-25", "kill-ep=nope", "hooks=ucp_worker_flush_nbx kill-ep",
		"hooks=ucp_get_nbx inflight-code=-16", "kill-ep inflight-code=0", "kill-ep inflight-code=5", "kill-ep inflight-code=nope"} {
		if _, err := ParseRule(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRule(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestParseRuleHold covers delay-completion= and hang: what they parse to,
// the hooks they may cover (those returning a request with a callback
// member), and the combinations refused.
func TestParseRuleHold(t *testing.T) {
	r, err := ParseRule("hooks=ucp_get_nbx delay-completion=200ms")
	if err != nil {
		t.Fatal(err)
	}
	if r.CompletionDelay != 200*time.Millisecond || r.Hang || r.Strategy != StrategyNone {
		t.Fatalf("delay-completion: %+v", r)
	}
	r, err = ParseRule("hang calls=2")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Hang || r.Strategy != StrategyNone || len(r.Hooks) == 0 {
		t.Fatalf("hang: %+v", r)
	}
	for _, id := range r.Hooks {
		if h := hooks.Table[id]; !h.ReturnsRequest || h.Callback == "" {
			t.Fatalf("hang covers %s, which returns no request to hold", h.Name)
		}
	}
	for _, bad := range []string{"hang=yes", "hang delay-completion=1s", "delay-completion=0s",
		"delay-completion=2m", "hang codes=-3", "hooks=ucp_put_nbi hang", "hooks=ucp_request_check_status hang"} {
		if _, err := ParseRule(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRule(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
