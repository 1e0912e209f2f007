package control

import (
	"fmt"
	"strings"
)

// EnvSummaryFile names a file the injector appends its exit summary line
// to, as well as writing it on stderr, so that a CI job keeps the seed of a
// run that failed.
const EnvSummaryFile = "UCX_FAULT_SUMMARY_FILE"

// EnvExitSummary, when 1, has the injector write its exit summary line on
// stderr. ucxfault inject sets it (unless --quiet); a program preloaded by
// hand gets nothing on its stderr it did not ask for (docs/safety.md).
// The file of EnvSummaryFile gets the line either way.
const EnvExitSummary = "UCX_FAULT_EXIT_SUMMARY"

// SettingsSummary describes s in one line for the injector's exit summary:
// what a person needs to repeat the run. "seed 1, random 5.00%, codes
// -3,-6,-20, immediate mode, rules: none". The C side prefixes the counts.
func SettingsSummary(s Settings) string {
	var parts []string
	parts = append(parts, "seed "+Seed(s.Seed).String())
	if !s.Enabled {
		parts = append(parts, "injection off")
	}
	switch s.Strategy {
	case StrategyRandom:
		parts = append(parts, fmt.Sprintf("random %.2f%%", s.Probability))
	case StrategyPattern:
		parts = append(parts, "pattern "+s.Pattern)
	case StrategyReplay:
		src := ""
		if s.Replay != nil {
			src = " (" + s.Replay.Source + ")"
		}
		parts = append(parts, "replay"+src)
	default:
		parts = append(parts, "no strategy")
	}
	codes := make([]string, len(s.Codes))
	for i, c := range s.Codes {
		codes[i] = fmt.Sprint(int(c))
	}
	parts = append(parts, "codes "+strings.Join(codes, ","), s.Mode+" mode")
	if len(s.Rules) == 0 {
		parts = append(parts, "rules: none")
	} else {
		texts := make([]string, len(s.Rules))
		for i := range s.Rules {
			texts[i] = s.Rules[i].String()
		}
		parts = append(parts, "rules: "+strings.Join(texts, "; "))
	}
	return strings.Join(parts, ", ")
}
