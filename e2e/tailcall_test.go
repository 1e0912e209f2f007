package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
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
	checkTailCalls(t, "objdump", lib, x86Branch)
}

// TestWrappersTailCallArm64: the same on the arm64 library the release
// ships (scripts/dist.sh cross-builds it the same way): the compiler's
// choice of a tail call is per target, so x86 passing says nothing of arm64.
func TestWrappersTailCallArm64(t *testing.T) {
	cc := os.Getenv("CC_ARM64")
	if cc == "" {
		cc = "aarch64-linux-gnu-gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("%s not installed (the arm64 cross compiler: scripts/deps.sh dist): cannot build the arm64 library", cc)
	}
	objdump := "aarch64-linux-gnu-objdump"
	if _, err := exec.LookPath(objdump); err != nil {
		t.Skipf("%s (binutils-aarch64-linux-gnu) not installed: cannot read the arm64 wrappers' code", objdump)
	}
	inc, err := exec.Command("pkg-config", "--variable=includedir", "ucx").Output()
	if err != nil {
		t.Skipf("pkg-config finds no ucx.pc (scripts/deps.sh base): no UCX headers to build with: %v", err)
	}
	// Only UCX's headers, as in scripts/dist.sh: no host libc header may
	// reach the cross compiler.
	dir := t.TempDir()
	include := filepath.Join(dir, "include")
	if err := os.Mkdir(include, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"ucp", "ucs", "uct", "ucm"} {
		src := filepath.Join(strings.TrimSpace(string(inc)), d)
		if _, err := os.Stat(src); err == nil {
			if err := os.Symlink(src, filepath.Join(include, d)); err != nil {
				t.Fatal(err)
			}
		}
	}
	lib := filepath.Join(dir, "libucxfault.so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", lib, "./preload")
	build.Dir = testutil.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH=arm64", "CC="+cc,
		"CGO_CFLAGS=-O2 -g -isystem "+include)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cross-building the arm64 library: %v\n%s", err, out)
	}
	checkTailCalls(t, objdump, lib, arm64Branch)
}

// x86Branch classifies an x86-64 mnemonic as a jump or a call.
func x86Branch(m string) (jump, call bool) {
	return strings.HasPrefix(m, "jmp"), strings.HasPrefix(m, "call")
}

// arm64Branch classifies an AArch64 mnemonic: b, b.cond, cbz/cbnz and
// tbz/tbnz jump; bl and blr call (they write the link register, the return
// address the slow half reads).
func arm64Branch(m string) (jump, call bool) {
	switch {
	case m == "bl" || m == "blr":
		return false, true
	case m == "b" || strings.HasPrefix(m, "b.") || m == "cbz" || m == "cbnz" || m == "tbz" || m == "tbnz":
		return true, false
	}
	return false, false
}

// checkTailCalls disassembles lib with objdump and checks that every hook's
// wrapper reaches its fast half (where there is one) and that reaches the
// slow half only by jumps.
func checkTailCalls(t *testing.T, objdump, lib string, branch func(mnemonic string) (jump, call bool)) {
	t.Helper()
	out, err := exec.Command(objdump, "-d", "--no-show-raw-insn", lib).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", objdump, lib, err)
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
	// reach reports how body refers to target: by jumps, by calls.
	reach := func(body, target string) (jumps, calls bool) {
		for _, line := range strings.Split(body, "\n") {
			if !strings.Contains(line, "<"+target+">") {
				continue
			}
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			j, c := branch(f[1])
			jumps, calls = jumps || j, calls || c
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
			// The recording, deferred and rules halves (ucxf_rec_*,
			// ucxf_trk_*, ucxf_rul_*) are jumped to as well: the fast
			// half keeps no frame and saves no register on any of its
			// ways out. The rules half reaches the slow half by a jump.
			for _, half := range []string{"ucxf_rec_" + h.Name, "ucxf_trk_" + h.Name, "ucxf_rul_" + h.Name} {
				if _, ok := funcs[half]; !ok {
					continue
				}
				if jumps, calls := reach(funcs[fast], half); !jumps || calls {
					t.Errorf("%s: %s reaches %s by jump=%v call=%v; want a jump only", h.Name, fast, half, jumps, calls)
				}
				if strings.HasPrefix(half, "ucxf_rul_") {
					if jumps, calls := reach(funcs[half], slow); !jumps || calls {
						t.Errorf("%s: %s reaches %s by jump=%v call=%v; want a jump only", h.Name, half, slow, jumps, calls)
					}
				}
			}
		}
		jumps, calls := reach(body, next)
		if !jumps || calls {
			t.Errorf("%s: the wrapper reaches %s by jump=%v call=%v; want a jump only", h.Name, next, jumps, calls)
		}
	}
}
