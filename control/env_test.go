package control

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// envOf turns assignments into the getenv FromEnv reads.
func envOf(assignments []string) Env {
	m := map[string]string{}
	for _, kv := range assignments {
		name, value, _ := strings.Cut(kv, "=")
		m[name] = value
	}
	return func(name string) string { return m[name] }
}

func withRules(t *testing.T, s Settings, text string) Settings {
	t.Helper()
	rs, err := ParseRules(text)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		r.ID = i + 1
		s.Rules = append(s.Rules, *r)
	}
	SwitchOnNamedHooks(&s, s.Rules)
	return s
}

func hooksOn(t *testing.T, s Settings, list string) Settings {
	t.Helper()
	ids, err := hooks.ParseFaultList(list)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.HookEnabled {
		s.HookEnabled[i] = false
	}
	for _, id := range ids {
		s.HookEnabled[id] = true
	}
	return s
}

// What ucxfault inject writes is what the injector reads: settings encoded
// to UCX_FAULT_* and decoded again are the same settings, and encode again
// to the same assignments.
func TestEnvRoundTrip(t *testing.T) {
	full := DefaultSettings()
	full.Enabled, full.Recording = true, true
	full.Strategy, full.Pattern = StrategyPattern, "XOOXO"
	full.Probability = 12.34
	full.Codes = []ucs.Status{-3, -80, -100}
	full.Seed = 1<<63 + 12345 // above 2^53: a float64 would round it
	full.Mode = ModeDeferred
	full.InflightCode = -16
	full = hooksOn(t, full, "ucp_put_nbx,ucp_get_nbx")
	full = withRules(t, full, "hooks=ucp_ep_create delay=1ms..5ms after=2s for=3s; hooks=ucp_put_nbx min-size=64K max-size=1M endpoint=1 calls=100..200+10 max-faults=3 codes=-25 pattern=OX; prob=2.5 from-start after=1s")

	random := DefaultSettings()
	random.Enabled, random.Probability = true, 0.01
	random.Seed = ^uint64(0)
	random = hooksOn(t, random, "all")

	optIn := withRules(t, DefaultSettings(), "hooks=ucp_mem_map prob=100")

	for name, tc := range map[string]struct {
		s      Settings
		seeded bool
	}{
		"default":              {DefaultSettings(), false},
		"everything":           {full, true},
		"random, all hooks":    {random, true},
		"rule names an opt-in": {optIn, false},
	} {
		env, err := EncodeEnv(tc.s, tc.seeded)
		if err != nil {
			t.Fatalf("%s: encoding: %v", name, err)
		}
		got, seeded, err := FromEnv(envOf(env))
		if err != nil {
			t.Fatalf("%s: decoding %q: %v", name, env, err)
		}
		if seeded != tc.seeded {
			t.Errorf("%s: seeded %v, want %v", name, seeded, tc.seeded)
		}
		if !tc.seeded {
			got.Seed = tc.s.Seed
		}
		for i := range got.Rules {
			if time.Since(got.Rules[i].SetAt) > time.Minute {
				t.Errorf("%s: rule %d set at %v, want now", name, i+1, got.Rules[i].SetAt)
			}
			got.Rules[i].SetAt = tc.s.Rules[i].SetAt
		}
		if !reflect.DeepEqual(got, tc.s) {
			t.Errorf("%s: %q decodes to\n%+v\nwant\n%+v", name, env, got, tc.s)
		}
		again, err := EncodeEnv(got, seeded)
		if err != nil || !reflect.DeepEqual(again, env) {
			t.Errorf("%s: encoded again %q, %v; want %q", name, again, err, env)
		}
	}
	env, _ := EncodeEnv(full, true)
	for _, want := range []string{EnvSeed + "=9223372036854788153", EnvPattern + "=XOOXO", EnvMode + "=deferred",
		EnvCodes + "=-3,-80,-100", EnvHooks + "=ucp_put_nbx,ucp_get_nbx,ucp_ep_create"} {
		if !strings.Contains(strings.Join(env, "\n")+"\n", want+"\n") {
			t.Errorf("encoding lacks %s: %q", want, env)
		}
	}
}

// Settings the environment cannot say are refused, not lost.
func TestEnvRefusesWhatItCannotCarry(t *testing.T) {
	killed := DefaultSettings()
	killed.Kills = []Kill{{Endpoint: 0, Code: -80}}
	replay := DefaultSettings()
	replay.Replay = &Replay{}
	none := DefaultSettings()
	for i := range none.HookEnabled {
		none.HookEnabled[i] = false
	}
	// On by default and never faulted: a hook list switches it off.
	counted := hooksOn(t, DefaultSettings(), "ucp_put_nbx")
	for i, h := range hooks.Table {
		if !h.Faultable {
			counted.HookEnabled[i] = true
			break
		}
	}
	for name, s := range map[string]Settings{"kills": killed, "replay": replay, "no hook": none, "a non-faultable hook with a list": counted} {
		if env, err := EncodeEnv(s, false); !errors.Is(err, ErrNotInEnv) {
			t.Errorf("%s: encoded as %q, %v; want ErrNotInEnv", name, env, err)
		}
	}
}
