package main

import (
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
)

// inject's flags reach the injector as they were meant: the variables it
// writes decode (control.FromEnv) to the settings the flags name, and a
// variable no flag sets is left to the environment.
func TestInjectEnvironment(t *testing.T) {
	o := injectOptions{pattern: "xoo", codes: "IO_ERROR,-80", hooks: "ucp_put_nbx", seed: "0xffffffffffffffff",
		mode: "deferred", record: true, rules: []string{"hooks=ucp_ep_create delay=1ms"}}
	env, err := o.environment()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		vars[name] = value
	}
	if _, ok := vars[control.EnvProbability]; ok {
		t.Errorf("wrote %s though no flag set it: %q", control.EnvProbability, env)
	}
	s, seeded, err := control.FromEnv(func(name string) string { return vars[name] })
	if err != nil {
		t.Fatalf("%q: %v", env, err)
	}
	on := map[string]bool{}
	for i, h := range s.HookEnabled {
		on[hooks.Table[i].Name] = h
	}
	if !s.Enabled || s.Strategy != control.StrategyPattern || s.Pattern != "XOO" || len(s.Codes) != 2 || s.Codes[0] != -3 || s.Codes[1] != -80 ||
		!seeded || s.Seed != ^uint64(0) || s.Mode != control.ModeDeferred || !s.Recording || len(s.Rules) != 1 ||
		!on["ucp_put_nbx"] || !on["ucp_ep_create"] || on["ucp_get_nbx"] {
		t.Fatalf("%q decodes to %+v", env, s)
	}
}
