package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// TestWrappersTailCall reads the built library's machine code: every
// wrapper must reach its halves by a jump, never a call, because the slow
// half takes the application's return address from its own frame to tell
// application calls from libucp's calls to itself.
func TestWrappersTailCall(t *testing.T) {
	_, lib := testutil.BuildInjector(t)
	if _, err := exec.LookPath("objdump"); err != nil {
		t.Skip("objdump (binutils) not installed: cannot read the wrappers' code")
	}
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", lib).Output()
	if err != nil {
		t.Fatalf("objdump %s: %v", lib, err)
	}
	funcs := map[string]string{}
	fn := regexp.MustCompile(`^[0-9a-f]+ <([^>]+)>:$`)
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		if m := fn.FindStringSubmatch(line); m != nil {
			cur = m[1]
			continue
		}
		if cur != "" {
			funcs[cur] += line + "\n"
		}
	}
	// reach reports how body refers to target: "jmp", "call" or "".
	reach := func(body, target string) (jumps, calls bool) {
		for _, line := range strings.Split(body, "\n") {
			if !strings.Contains(line, "<"+target+">") {
				continue
			}
			f := strings.Fields(line)
			if len(f) >= 2 && strings.HasPrefix(f[1], "call") {
				calls = true
			} else if len(f) >= 2 && strings.HasPrefix(f[1], "jmp") {
				jumps = true
			}
		}
		return jumps, calls
	}
	for _, h := range hooks.Table {
		body, ok := funcs[h.Name]
		if !ok {
			t.Errorf("%s: no wrapper in %s", h.Name, lib)
			continue
		}
		slow, fast := "ucxf_slow_"+h.Name, "ucxf_fast_"+h.Name
		next := slow
		if _, ok := funcs[fast]; ok {
			next = fast
			jumps, calls := reach(funcs[fast], slow)
			if !jumps || calls {
				t.Errorf("%s: %s reaches %s by jump=%v call=%v; want a jump only", h.Name, fast, slow, jumps, calls)
			}
		}
		jumps, calls := reach(body, next)
		if !jumps || calls {
			t.Errorf("%s: the wrapper reaches %s by jump=%v call=%v; want a jump only", h.Name, next, jumps, calls)
		}
	}
}
