package control

import (
	"errors"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
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
