package cpredicate

import (
	"testing"

	"github.com/ucxfault/ucxfault/internal/proc"
)

// TestPredicatesAgree holds the injector's C predicate and the Go one the
// observer and the CLI use to the same answer on every name, and both to
// the answer written here.
func TestPredicatesAgree(t *testing.T) {
	for _, c := range []struct {
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
		{"/usr/lib/x86_64-linux-gnu/libucxfault.so", false, false},
		{"/build/libucxfault.so", false, false},
		{"/libucp.so.0/libfoo.so", false, false},
		{"/usr/bin/rma", false, false},
		{"", false, false},
	} {
		cu, cl := IsUCXObject(c.path)
		gu, gl := proc.IsUCXLibrary(c.path)
		if cu != c.ucx || cl != c.libucp {
			t.Errorf("C ucxf_is_ucx_object(%q) = %v, %v; want %v, %v", c.path, cu, cl, c.ucx, c.libucp)
		}
		if gu != c.ucx || gl != c.libucp {
			t.Errorf("Go proc.IsUCXLibrary(%q) = %v, %v; want %v, %v", c.path, gu, gl, c.ucx, c.libucp)
		}
	}
}
