package control

import (
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
)

func hookOn(t *testing.T, s Settings, name string) bool {
	t.Helper()
	id, _, err := hooks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return s.HookEnabled[id]
}

func TestRuleNamingAHookSwitchesItOn(t *testing.T) {
	env := func(kv map[string]string) Env { return func(k string) string { return kv[k] } }
	s, _, err := FromEnv(env(map[string]string{EnvRules: "hooks=ucp_ep_create delay=2s"}))
	if err != nil {
		t.Fatal(err)
	}
	if !hookOn(t, s, "ucp_ep_create") {
		t.Error("UCX_FAULT_RULES naming ucp_ep_create left the opt-in hook off")
	}
	// hooks=all and the default list name no hook: opt-in hooks stay off.
	for _, text := range []string{"hooks=all delay=1ms", "min-size=1K"} {
		s, _, err := FromEnv(env(map[string]string{EnvRules: text}))
		if err != nil {
			t.Fatal(err)
		}
		if hookOn(t, s, "ucp_ep_create") || hookOn(t, s, "ucp_mem_map") {
			t.Errorf("rule %q switched an opt-in hook on", text)
		}
	}
	// After UCX_FAULT_HOOKS, whatever order the variables come in.
	s, _, err = FromEnv(env(map[string]string{EnvHooks: "ucp_get_nbx", EnvRules: "hooks=put_nbx codes=-3"}))
	if err != nil {
		t.Fatal(err)
	}
	if !hookOn(t, s, "ucp_put_nbx") || !hookOn(t, s, "ucp_get_nbx") || hookOn(t, s, "ucp_tag_send_nbx") {
		t.Error("UCX_FAULT_HOOKS=ucp_get_nbx with a rule on ucp_put_nbx: want exactly those two on")
	}

	e := NewEngine(&memBackend{}, DefaultSettings())
	r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpAdd, Rules: []string{"hooks=ucp_mem_map,ucp_put_nbx delay=1ms"}})
	if !r.OK || !strings.Contains(r.Message, "named by the rule, now on: ucp_mem_map;") || !strings.Contains(r.Message, "injection is off") {
		t.Fatalf("rules add: %+v; want ucp_mem_map (and only it) reported switched on", r)
	}
	if !hookOn(t, e.Settings(), "ucp_mem_map") {
		t.Error("rules add naming ucp_mem_map left it off")
	}
	// Deleting the rule leaves the hook on, as after `hook enable`.
	id := 1
	if r := e.Handle(&Request{V: 1, Cmd: CmdRules, RuleOp: RuleOpDel, RuleID: &id}); !r.OK || !hookOn(t, e.Settings(), "ucp_mem_map") {
		t.Errorf("after rules del: %+v, ucp_mem_map on = %v; want it still on", r, hookOn(t, e.Settings(), "ucp_mem_map"))
	}
}
