package main

import (
	"errors"
	"os"
	"path/filepath"
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

// TestInjectBadInputIsAUsageError: an empty --rule, a library that is not
// there or is not a shared object, and a program that is not there are
// refused with exit 2 before anything runs (ld.so would only warn about a
// bad preload and run the program without the injector).
func TestInjectBadInputIsAUsageError(t *testing.T) {
	notLib := filepath.Join(t.TempDir(), "notalib.so")
	if err := os.WriteFile(notLib, []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable() // an ELF executable, not a shared library
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"inject", "--rule", "", "--", "true"},
		{"inject", "--rule", "  ", "--", "true"},
		{"inject", "--lib", "/nonexistent/libucxfault.so", "--", "true"},
		{"inject", "--lib", notLib, "--", "true"},
		{"inject", "--lib", self, "--", "true"},
	} {
		out, err := runRoot(t, args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v (%s), want a usage error (exit 2)", args, err, out)
		}
	}
	// A shared object stands in for the library: the program is looked up
	// after it, and is not there.
	if libc, err := filepath.Glob("/lib/*/libc.so.6"); err == nil && len(libc) > 0 {
		_, err := runRoot(t, "inject", "--lib", libc[0], "--", "/nonexistent/program")
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "finding program") {
			t.Errorf("a missing program: got %v, want a usage error (exit 2)", err)
		}
	}
}
