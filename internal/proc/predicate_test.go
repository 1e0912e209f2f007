package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cPredicate builds the injector's C predicate (preload/ucx_object.h)
// into a small program now, from the header as it is (a cgo package
// including it from another directory could run a stale copy from the
// build cache), and returns a function that asks it.
func cPredicate(t *testing.T) func(paths []string) []string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to build the injector's predicate: %v", cc, err)
	}
	bin := filepath.Join(t.TempDir(), "ucx_object_driver")
	out, err := exec.Command(cc, "-Wall", "-Wextra", "-Werror", "-I../../preload", "-o", bin, "testdata/ucx_object_driver.c").CombinedOutput()
	if err != nil {
		t.Fatalf("building the C predicate: %v\n%s", err, out)
	}
	return func(paths []string) []string {
		cmd := exec.Command(bin)
		cmd.Stdin = strings.NewReader(strings.Join(paths, "\n") + "\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("running the C predicate: %v", err)
		}
		return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	}
}

// TestPredicatesAgree holds the injector's C predicate, ucxf_is_ucx_object,
// and IsUCXLibrary, which the observer and the CLI use, to the same answer
// on every name, and both to the answer written here.
func TestPredicatesAgree(t *testing.T) {
	cases := []struct {
		path        string
		ucx, libucp bool
	}{
		{"/usr/lib/x86_64-linux-gnu/libucp.so.0", true, true},
		{"/usr/lib/x86_64-linux-gnu/libucp.so.0.0.0", true, true},
		{"libucp.so", true, true},
		// Wheel copies renamed by auditwheel, and a vendor's build.
		{"/venv/lib/python3.12/site-packages/ucx_py.libs/libucp-1a2b3c4d.so.0.0.0", true, true},
		{"/opt/nixl/lib/libucp-nixl.so.0", true, true},
		{"/usr/lib/x86_64-linux-gnu/libucs.so.0", true, false},
		{"/venv/ucx.libs/libucs-5e6f7a8b.so.0.0.0", true, false},
		{"/usr/lib/x86_64-linux-gnu/libuct.so.0.0.0", true, false},
		{"/usr/lib/x86_64-linux-gnu/libuct-9c0d.so.0", true, false},
		{"/usr/lib/x86_64-linux-gnu/libucm.so.0", true, false},
		{"/usr/lib/x86_64-linux-gnu/libucm-ab12.so.0", true, false},
		// Plugins, loaded from the ucx/ directory: not counted.
		{"/usr/lib/x86_64-linux-gnu/ucx/libuct_ib.so.0", false, false},
		{"/usr/lib/x86_64-linux-gnu/ucx/libuct_cma.so.0.0.0", false, false},
		{"/usr/lib/x86_64-linux-gnu/ucx/libucm_cuda.so.0", false, false},
		{"/usr/lib/x86_64-linux-gnu/ucx/libucx_perftest_cuda.so.0", false, false},
		// Names that only start like UCX.
		{"/usr/lib/libucpfoo.so", false, false},
		{"/usr/lib/libucpx.so.0", false, false},
		{"/usr/lib/libucq.so.0", false, false},
		{"libucp", false, false},
		{"libuc", false, false},
		{"/usr/lib/libucp.a", false, false},
		{"/usr/lib/libucp-static.a", false, false},
		// Unrelated libraries, and a directory named like UCX.
		{"/usr/lib/x86_64-linux-gnu/libc.so.6", false, false},
		{"/build/libucxfault.so", false, false},
		{"/libucp.so.0/libfoo.so", false, false},
		{"/usr/bin/rma", false, false},
		{"", false, false},
	}
	paths := make([]string, len(cases))
	for i, c := range cases {
		paths[i] = c.path
	}
	answers := cPredicate(t)(paths)
	if len(answers) != len(cases) {
		t.Fatalf("the C predicate answered %d names of %d", len(answers), len(cases))
	}
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	for i, c := range cases {
		want := fmt.Sprintf("%d %d", b(c.ucx), b(c.libucp))
		if answers[i] != want {
			t.Errorf("C ucxf_is_ucx_object(%q) = %s; want %s (ucx, libucp)", c.path, answers[i], want)
		}
		if gu, gl := IsUCXLibrary(c.path); gu != c.ucx || gl != c.libucp {
			t.Errorf("Go IsUCXLibrary(%q) = %v, %v; want %v, %v", c.path, gu, gl, c.ucx, c.libucp)
		}
	}
}
