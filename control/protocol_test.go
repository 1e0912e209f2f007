package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// memBackend keeps what the engine applies, for tests of the engine alone.
type memBackend struct {
	applied []Settings
	cleared int
	fail    error
}

func (m *memBackend) Apply(s Settings) error {
	if m.fail != nil {
		return m.fail
	}
	m.applied = append(m.applied, s.Clone())
	return nil
}
func (m *memBackend) Counters() Counters {
	return Counters{Hooks: make([]HookCounters, len(hooks.Table))}
}
func (m *memBackend) Info() Status { return Status{PID: 1} }

// Identity is the test process's own: the engine answers for it.
func (m *memBackend) Identity() Identity { return selfIdentity() }

func selfIdentity() Identity {
	start, _ := proc.SelfStartTime()
	return Identity{PID: os.Getpid(), StartTime: start}
}

func (m *memBackend) Records(int) (*recording.Process, error) {
	return &recording.Process{Calls: []recording.Call{}}, nil
}
func (m *memBackend) RecordClear() { m.cleared++ }

func TestParseRequestRefusesBadInput(t *testing.T) {
	for line, want := range map[string]string{
		``:                                    "empty",
		`[]`:                                  "malformed",
		`{"v":1,"cmd":"status"} {"v":1}`:      "one JSON object",
		`{"v":2,"cmd":"status"}`:              "protocol version 2",
		`{"v":1,"cmd":"nope"}`:                "unknown command",
		`{"v":1,"cmd":"status","x":1}`:        "unknown field",
		`{"v":1,"cmd":"seed","seed":-1}`:      "malformed",
		`{"v":1,"cmd":"pattern","pattern":3}`: "malformed",
	} {
		_, err := ParseRequest([]byte(line))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRequest(%q) = %v, want an ErrInvalid with %q", line, err, want)
		}
	}
}

func TestEngineAppliesAllOrNothing(t *testing.T) {
	b := &memBackend{}
	e := NewEngine(b, DefaultSettings())
	resp, ok := e.HandleLine([]byte(`{"v":1,"cmd":"hooks","hooks":["put_nbx","bogus"],"on":false}`))
	if ok || len(b.applied) != 0 || !strings.Contains(string(resp), "unknown hook") {
		t.Fatalf("a request with one bad hook name applied something: %s (%d applies)", resp, len(b.applied))
	}
	if _, ok := e.HandleLine([]byte(`{"v":1,"cmd":"pattern","pattern":"xoo"}`)); !ok {
		t.Fatal("pattern xoo refused")
	}
	s := e.Settings()
	if s.Strategy != StrategyPattern || s.Pattern != "XOO" {
		t.Fatalf("after pattern: %+v", s)
	}
	b.fail = errors.New("no memory")
	if _, ok := e.HandleLine([]byte(`{"v":1,"cmd":"probability","probability":5}`)); ok {
		t.Fatal("a failed apply reported success")
	}
	if e.Settings().Strategy != StrategyPattern {
		t.Fatal("a failed apply changed the engine's settings")
	}
}

func TestFromEnv(t *testing.T) {
	env := map[string]string{EnvEnabled: "yes", EnvPattern: "xo", EnvCodes: "IO_ERROR,-80", EnvHooks: "get_nbx", EnvSeed: "0x10"}
	s, seeded, err := FromEnv(func(k string) string { return env[k] })
	if err != nil || !seeded || !s.Enabled || s.Strategy != StrategyPattern || s.Pattern != "XO" || s.Seed != 16 {
		t.Fatalf("FromEnv = %+v, %v, %v", s, seeded, err)
	}
	if len(s.Codes) != 2 || s.Codes[0] != ucs.ErrIOError || s.Codes[1] != ucs.ErrEndpointTimeout {
		t.Fatalf("codes %v", s.Codes)
	}
	id, _, _ := hooks.Lookup("ucp_get_nbx")
	for i, on := range s.HookEnabled {
		if on != (hooks.ID(i) == id) {
			t.Fatalf("hook %d enabled=%v", i, on)
		}
	}
	for k, v := range map[string]string{EnvProbability: "101", EnvPattern: "XQ", EnvCodes: "0", EnvHooks: "nope", EnvSeed: "x", EnvEnabled: "maybe", EnvStrategy: "chaos"} {
		if _, _, err := FromEnv(func(name string) string {
			if name == k {
				return v
			}
			return ""
		}); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: error %v, want one naming the variable", k, v, err)
		}
	}
}

func TestCheckProbabilityResolution(t *testing.T) {
	for _, p := range []float64{0, 0.01, 2.5, 99.99, 100} {
		if err := CheckProbability(p); err != nil {
			t.Errorf("%v refused: %v", p, err)
		}
	}
	for _, p := range []float64{-0.01, 100.01, 0.001, 150} {
		if err := CheckProbability(p); err == nil {
			t.Errorf("%v accepted", p)
		}
	}
	if ProbabilityUnits(2.5) != 250 || ProbabilityUnits(0.01) != 1 {
		t.Fatal("probability units")
	}
}

// FuzzParseRequest feeds arbitrary lines to the engine: nothing may panic,
// and every answer is one line of JSON.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"probability","probability":2.5}`,
		`{"v":1,"cmd":"error_codes","codes":[-3,-6]}`, `{"v":1,"cmd":"pattern","pattern":"XOO"}`,
		`{"v":1,"cmd":"replay","schedule":{"key":"global","global":[{"fn":"ucp_put_nbx","code":-3}]}}`,
		`{"v":1,"cmd":"hooks","hooks":["all"],"on":true}`, `not json`, `{"v":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e := NewEngine(&memBackend{}, DefaultSettings())
		resp, _ := e.HandleLine(line)
		if len(resp) == 0 || resp[len(resp)-1] != '\n' || strings.Count(string(resp), "\n") != 1 {
			t.Fatalf("response %q is not one line", resp)
		}
	})
}

// countingBackend is a memBackend whose counters grow with every read and
// whose call log holds one call, to see what a failed command changed.
type countingBackend struct {
	memBackend
	reads uint64
}

func (c *countingBackend) Counters() Counters {
	c.reads += 10
	cs := Counters{Hooks: make([]HookCounters, len(hooks.Table))}
	cs.Hooks[0].Calls = c.reads
	return cs
}

func (c *countingBackend) Records(int) (*recording.Process, error) {
	return &recording.Process{Calls: []recording.Call{{Fn: hooks.Table[0].Name, Status: -3}}}, nil
}

// A command whose settings the backend refuses changes nothing: not the
// settings, not the counters' baseline, not the call log; and a kill that
// failed does not count as done for the next one.
func TestEngineFailedCommandChangesNothing(t *testing.T) {
	b := &countingBackend{}
	e := NewEngine(b, DefaultSettings())
	before := e.Settings()
	calls := func() uint64 {
		r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdStatus})
		return r.Status.Calls
	}
	if got := calls(); got != 10 {
		t.Fatalf("first status: %d calls, want 10", got)
	}
	b.fail = errors.New("refused")
	for _, req := range []*Request{
		{Cmd: CmdReset},
		{Cmd: CmdReplaySelf},
		{Cmd: CmdKillEP, Endpoint: ptr(1)},
	} {
		req.V = ProtocolVersion
		r := e.Handle(req)
		if r.OK || !strings.Contains(r.Error, "refused") {
			t.Fatalf("%s with a refusing backend: %+v", req.Cmd, r)
		}
		if got := e.Settings(); !settingsEqual(got, before) {
			t.Fatalf("%s failed but changed the settings: %+v", req.Cmd, got)
		}
		if b.cleared != 0 {
			t.Fatalf("%s failed but cleared the call log", req.Cmd)
		}
	}
	b.fail = nil
	// The failed reset did not move the baseline: status still counts from
	// the start (each read of the counters adds 10; a reset that read them
	// as its baseline would leave 10 here).
	if got := calls(); got != 20 {
		t.Fatalf("after a failed reset status shows %d calls, want 20 (the baseline moved)", got)
	}
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Endpoint: ptr(2)}); !r.OK {
		t.Fatalf("kill-ep 2 after a failed kill-ep 1: %+v", r)
	}
	if k := e.Settings().Kills; len(k) != 1 || k[0].Endpoint != 2 {
		t.Fatalf("kills after a failed kill-ep 1 and kill-ep 2: %+v, want endpoint 2 only", k)
	}
	// A negative ordinal is named as such, not as a missing field.
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Endpoint: ptr(-1)}); r.OK || !strings.Contains(r.Error, `"endpoint" -1`) {
		t.Fatalf("kill_ep endpoint -1: %+v", r)
	}
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdRecordClear}); !r.OK || b.cleared != 1 {
		t.Fatalf("record-clear: %+v, %d clears", r, b.cleared)
	}
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdReset}); !r.OK || b.cleared != 2 {
		t.Fatalf("reset: %+v, %d clears", r, b.cleared)
	}
}

func ptr[T any](v T) *T { return &v }

func settingsEqual(a, b Settings) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// Every answer names the process, the failed ones included; only status
// and rules carry the full status (a command's answer does not sum the
// counters of every thread).
func TestEngineIdentityInEveryAnswer(t *testing.T) {
	b := &countingBackend{}
	e := NewEngine(b, DefaultSettings())
	for _, line := range []string{
		`{"v":1,"cmd":"status"}`,
		`{"v":1,"cmd":"enable"}`,
		`{"v":1,"cmd":"probability","probability":5}`,
		`{"v":1,"cmd":"probability","probability":500}`,
		`{"v":1,"cmd":"record_dump"}`,
		`{"v":1,"cmd":"rules","rule_op":"add","rules":["hooks=ucp_put_nbx calls=3"]}`,
		`{"v":1,"cmd":"nonsense"}`,
		`not json`,
	} {
		reads := b.reads
		out, _ := e.HandleLine([]byte(line))
		var r Response
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if r.Identity == nil || *r.Identity != selfIdentity() {
			t.Fatalf("%s: answer %s names no or another process", line, out)
		}
		wantStatus := r.OK && (strings.Contains(line, `"status"`) || strings.Contains(line, `"rules"`))
		if (r.Status != nil) != wantStatus || (b.reads != reads) != wantStatus {
			t.Fatalf("%s: status %v, counters read %d times; want a status: %v", line, r.Status != nil, (b.reads-reads)/10, wantStatus)
		}
	}
}

// A rules command that fails hands out no rule number.
func TestEngineFailedRulesKeepNumbers(t *testing.T) {
	b := &memBackend{}
	e := NewEngine(b, DefaultSettings())
	b.fail = errors.New("refused")
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"hooks=ucp_put_nbx"}}); r.OK {
		t.Fatalf("add with a refusing backend: %+v", r)
	}
	b.fail = nil
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"hooks=ucp_put_nbx"}}); !r.OK || !strings.HasPrefix(r.Message, "rule 1:") {
		t.Fatalf("add after a failed add: %+v, want rule 1", r)
	}
}

// Every command the protocol accepts has its handler, and no handler
// serves a command the protocol refuses.
func TestEngineHandlerForEveryCommand(t *testing.T) {
	for _, c := range commands {
		if _, ok := handlers[c]; !ok {
			t.Errorf("command %q has no handler", c)
		}
	}
	if len(handlers) != len(commands) {
		t.Errorf("%d handlers for %d commands", len(handlers), len(commands))
	}
}
