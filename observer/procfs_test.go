package observer

import (
	"reflect"
	"testing"

	"github.com/ucxfault/ucxfault/internal/proc"
)

func TestUCXMappings(t *testing.T) {
	maps := proc.ParseMaps([]byte(`55d4c0a00000-55d4c0a02000 r--p 00000000 08:01 1234 /usr/bin/rma
55d4c0a02000-55d4c0a04000 r-xp 00002000 08:01 1234 /usr/bin/rma
7f10a0000000-7f10a0020000 r--p 00000000 08:01 42 /venv/ucx.libs/libucp-1a2b3c4d.so.0.0.0
7f10a0020000-7f10a00a0000 r-xp 00020000 08:01 42 /venv/ucx.libs/libucp-1a2b3c4d.so.0.0.0
7f10b0020000-7f10b00a0000 r-xp 00020000 08:01 43 /usr/lib/x86_64-linux-gnu/libucs.so.0.0.0 (deleted)
7f10c0020000-7f10c00a0000 r-xp 00020000 08:01 44 /usr/lib/x86_64-linux-gnu/ucx/libuct_cma.so.0.0.0
7f10d0020000-7f10d00a0000 r-xp 00020000 08:01 45 /usr/lib/x86_64-linux-gnu/libucm.so.0.0.0
7f10e0020000-7f10e00a0000 r-xp 00020000 08:01 46 /usr/lib/x86_64-linux-gnu/libucp.so.0.0.0
7f10f0020000-7f10f00a0000 r-xp 00020000 08:01 47 /build/libucxfault.so
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
`))
	if len(maps) != 10 {
		t.Fatalf("%d mappings, want 10", len(maps))
	}
	// A wheel's renamed copy counts as libucp; the first copy is probed.
	path, ok := libucpPath(maps)
	if !ok || path != "/venv/ucx.libs/libucp-1a2b3c4d.so.0.0.0" {
		t.Errorf("libucpPath = %q, %v", path, ok)
	}
	if got, want := proc.LibucpCopies(maps), []string{"/venv/ucx.libs/libucp-1a2b3c4d.so.0.0.0", "/usr/lib/x86_64-linux-gnu/libucp.so.0.0.0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("LibucpCopies = %q, want %q", got, want)
	}
	// The same libraries the injector counts (preload/ucx_object.h):
	// executable mappings of libucp, libucs, libucm; not the plugins.
	want := []ucxRange{
		{0x7f10a0020000, 0x7f10a00a0000},
		{0x7f10b0020000, 0x7f10b00a0000},
		{0x7f10d0020000, 0x7f10d00a0000},
		{0x7f10e0020000, 0x7f10e00a0000},
	}
	if got := ucxRanges(maps); !reflect.DeepEqual(got, want) {
		t.Errorf("ucxRanges = %x, want %x", got, want)
	}
	if got := forwarderRanges(maps); !reflect.DeepEqual(got, []ucxRange{{0x7f10f0020000, 0x7f10f00a0000}}) {
		t.Errorf("forwarderRanges = %x", got)
	}
	if _, ok := libucpPath(maps[:2]); ok {
		t.Error("libucpPath found libucp in a process without it")
	}
}
