package main

/*
#include <stdlib.h>
#include "ucxfault.h"
#include "rules.h"
#include "peer.h"
*/
import "C"

import (
	"fmt"
	"math"
	"time"
	"unsafe"

	"github.com/ucxfault/ucxfault/control"
)

// The Go and C bounds on rules must agree.
var (
	_ [control.MaxRules - C.UCXF_MAX_RULES]struct{}
	_ [C.UCXF_MAX_RULES - control.MaxRules]struct{}
)

// ruleSlot is what the backend keeps for one rule in force. A rule keeps its
// slot (its index in the C rule array and in the per-thread counters) for
// its whole life, so that its counters stay its own across configurations.
type ruleSlot struct {
	slot int
	// spent is the rule's shared fault budget (a C uint64), nil without
	// max-faults. It outlives configurations: it is freed with the last
	// configuration that used it.
	spent unsafe.Pointer
	// start and end are the window on CLOCK_MONOTONIC, fixed when the rule
	// is first published.
	start, end uint64
	// base holds the slot's counters when the rule took it: a slot reused
	// by a new rule starts from zero.
	base control.RuleCounters
}

// ruleSlots is the rule state of the backend.
type ruleSlots struct {
	startNS uint64 // CLOCK_MONOTONIC when the injector loaded (from-start)
	byID    map[int]*ruleSlot
	owner   [C.UCXF_MAX_RULES]int // rule ID holding each slot, 0 = free
	freed   [C.UCXF_MAX_RULES]time.Time
}

// fillRules writes the rules of s into cfg. The backend's rule state changes
// only when commit is called (after the configuration is published);
// removed are the budgets of rules s no longer holds, to be freed with the
// configuration being replaced.
func (b *cBackend) fillRules(cfg *C.struct_ucxf_config, s control.Settings) (commit func(), removed []unsafe.Pointer, err error) {
	if len(s.Rules) > C.UCXF_MAX_RULES {
		return nil, nil, fmt.Errorf("%d rules, at most %d", len(s.Rules), C.UCXF_MAX_RULES)
	}
	st := &b.rules
	next := make(map[int]*ruleSlot, len(s.Rules))
	owner, freed := st.owner, st.freed
	for _, r := range s.Rules {
		if rs, ok := st.byID[r.ID]; ok {
			next[r.ID] = rs
		}
	}
	now := time.Now()
	for id, rs := range st.byID {
		if next[id] == nil {
			owner[rs.slot], freed[rs.slot] = 0, now
			if rs.spent != nil {
				removed = append(removed, rs.spent)
			}
		}
	}
	var fresh []*ruleSlot
	rollback := func() {
		for _, rs := range fresh {
			if rs.spent != nil {
				C.free(rs.spent)
			}
		}
	}
	var sums *[C.UCXF_MAX_RULES]C.struct_ucxf_rule_counters
	nowC := uint64(C.ucxf_now_ns())
	for i := range s.Rules {
		r := &s.Rules[i]
		if next[r.ID] != nil {
			continue
		}
		// The free slot freed longest ago: a hook still reading a replaced
		// configuration may count one more call into a slot just freed.
		slot := -1
		for k := range owner {
			if owner[k] == 0 && (slot < 0 || freed[k].Before(freed[slot])) {
				slot = k
			}
		}
		if slot < 0 {
			rollback()
			return nil, nil, fmt.Errorf("no free rule slot (at most %d rules)", C.UCXF_MAX_RULES)
		}
		rs := &ruleSlot{slot: slot}
		if r.MaxFaults > 0 {
			if rs.spent = C.calloc(1, 8); rs.spent == nil {
				rollback()
				return nil, nil, fmt.Errorf("allocating a fault budget: out of memory")
			}
		}
		if r.Windowed() {
			from := st.startNS
			if !r.FromStart {
				from = nowC
				if age := now.Sub(r.SetAt); age > 0 && uint64(age) < nowC {
					from = nowC - uint64(age)
				}
			}
			rs.start, rs.end = from+uint64(r.After), math.MaxUint64
			if r.For > 0 {
				rs.end = rs.start + uint64(r.For)
			}
		}
		if sums == nil {
			sums = new([C.UCXF_MAX_RULES]C.struct_ucxf_rule_counters)
			C.ucxf_rule_stats_sum(&sums[0])
		}
		rs.base = ruleCounts(&sums[slot])
		owner[slot] = r.ID
		fresh = append(fresh, rs)
		next[r.ID] = rs
	}
	cfg.nrules = C.uint32_t(len(s.Rules))
	for i := range s.Rules {
		r := &s.Rules[i]
		rs := next[r.ID]
		b.fillRule(&cfg.rules[rs.slot], r, rs, s)
		for _, h := range r.Hooks {
			n := cfg.hook_nrules[h]
			cfg.hook_rules[h][n] = C.uint8_t(rs.slot)
			cfg.hook_nrules[h] = n + 1
		}
	}
	commit = func() {
		st.byID, st.owner, st.freed = next, owner, freed
	}
	return commit, removed, nil
}

// fillRule converts one rule.
func (b *cBackend) fillRule(cr *C.struct_ucxf_rule, r *control.Rule, rs *ruleSlot, s control.Settings) {
	cr.uid = C.uint64_t(r.ID)
	cr.min_size = C.uint64_t(r.MinSize)
	cr.max_size = C.uint64_t(math.MaxUint64)
	if r.HasMaxSize {
		cr.max_size = C.uint64_t(r.MaxSize)
	}
	cr.call_first = C.uint64_t(r.Calls.First)
	cr.call_last = C.uint64_t(math.MaxUint64)
	if !r.Calls.Open {
		cr.call_last = C.uint64_t(r.Calls.Last)
	}
	cr.call_step = C.uint64_t(max(r.Calls.Step, 1))
	if r.Windowed() {
		// Before the configuration is published: a call that reads the
		// window then reads the vDSO's clock directly.
		C.ucxf_rules_clock_resolve()
		cr.windowed = 1
		cr.t_start_ns, cr.t_end_ns = C.uint64_t(rs.start), C.uint64_t(rs.end)
	}
	cr.delay_min_ns, cr.delay_max_ns = C.uint64_t(r.DelayMin), C.uint64_t(r.DelayMax)
	cr.max_faults = C.uint64_t(r.MaxFaults)
	switch {
	case r.Hang:
		cr.hold_ns = C.uint64_t(math.MaxUint64) // UCXF_HOLD_HANG
	case r.CompletionDelay > 0:
		cr.hold_ns = C.uint64_t(r.CompletionDelay)
	}
	cr.spent = (*C.uint64_t)(rs.spent)
	cr.endpoint = C.int32_t(r.Endpoint)
	if r.Peer != "" {
		cs := C.CString(r.Peer)
		cr.peer = C.ucxf_peer_hash(cs)
		C.free(unsafe.Pointer(cs))
	}
	switch r.Strategy {
	case control.StrategyRandom:
		cr.strategy = C.UCXF_STRATEGY_RANDOM
		cr.prob_units = C.uint32_t(control.ProbabilityUnits(r.Probability))
	case control.StrategyPattern:
		cr.strategy = C.UCXF_STRATEGY_PATTERN
		if p := b.cBytes(len(r.Pattern)); p != nil {
			ps := unsafe.Slice((*uint8)(p), len(r.Pattern))
			for i := range r.Pattern {
				if r.Pattern[i] == 'X' {
					ps[i] = 1
				}
			}
			cr.pattern = (*C.uint8_t)(p)
			cr.pattern_len = C.uint32_t(len(r.Pattern))
		}
	default:
		cr.strategy = C.UCXF_STRATEGY_NONE
	}
	codes := r.Codes
	if codes == nil {
		codes = s.Codes // the global codes, as they are now
	}
	n := min(len(codes), C.UCXF_MAX_CODES)
	for i := 0; i < n; i++ {
		cr.codes[i] = C.int8_t(codes[i])
	}
	cr.ncodes = C.uint32_t(n)
	if r.KillEP {
		cr.kill_ep = 1
		cr.kill_code = C.int8_t(r.KillCode)
		cr.inflight_code = C.int8_t(r.InflightCode)
	}
}

func ruleCounts(c *C.struct_ucxf_rule_counters) control.RuleCounters {
	return control.RuleCounters{Matches: uint64(c.matches), Faults: uint64(c.faults),
		Delays: uint64(c.delays), DelayNS: uint64(c.delay_ns)}
}

// ruleCounters adds the rules' counters to out.
func (b *cBackend) ruleCounters(out *control.Counters) {
	var sums [C.UCXF_MAX_RULES]C.struct_ucxf_rule_counters
	C.ucxf_rule_stats_sum(&sums[0])
	out.Rules = make(map[int]control.RuleCounters, len(b.rules.byID))
	for k := range sums {
		out.DelayNS += uint64(sums[k].delay_ns)
	}
	for id, rs := range b.rules.byID {
		c := ruleCounts(&sums[rs.slot])
		out.Rules[id] = control.RuleCounters{Matches: c.Matches - rs.base.Matches, Faults: c.Faults - rs.base.Faults,
			Delays: c.Delays - rs.base.Delays, DelayNS: c.DelayNS - rs.base.DelayNS}
	}
}
