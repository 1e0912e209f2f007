package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// UCXInstall is the UCX the tests build and run against: the one
// `pkg-config ucx` finds, as the Makefile does (PKG_CONFIG_PATH selects a
// source install, /opt/ucx/lib/pkgconfig for example).
type UCXInstall struct {
	// CFlags are the compiler flags for UCX's headers, as -isystem: from
	// 1.18 on, UCX's own ucp.h trips -Wsign-compare under -Wextra.
	CFlags []string
	// Libs are the linker flags for libucp and its dependencies.
	Libs []string
	// BinDir is where its tools are (ucx_perftest, ucx_info).
	BinDir string
	// Prefix is its installation prefix (/usr for Debian's packages).
	Prefix string
	// IncludeDir is where its headers are.
	IncludeDir string
	// LibDir is where its libraries are; the test process's LD_LIBRARY_PATH
	// starts with it, so every program a test starts loads this UCX.
	LibDir string
	// Major and Minor are the version of the running libucp, as
	// ucp_get_version() reports it (not the headers' version).
	Major, Minor int
	// Version is ucp_get_version_string() of the running libucp.
	Version string
}

// AtLeast reports whether the running libucp is major.minor or newer.
func (u *UCXInstall) AtLeast(major, minor int) bool {
	return u.Major > major || (u.Major == major && u.Minor >= minor)
}

// HeaderHas reports whether UCX's ucp.h mentions name (an API newer than
// some versions: UCP_OP_ATTR_FIELD_REMOTE_DATATYPE for 1.22's SGL puts).
func (u *UCXInstall) HeaderHas(name string) bool {
	b, err := os.ReadFile(filepath.Join(u.IncludeDir, "ucp", "api", "ucp.h"))
	return err == nil && strings.Contains(string(b), name)
}

// Tool returns the path of one of this UCX's programs (ucx_perftest), or ""
// when it has none: a tool from another UCX would load this one's libraries
// (LD_LIBRARY_PATH) and crash on their mismatch.
func (u *UCXInstall) Tool(name string) string {
	p := filepath.Join(u.BinDir, name)
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return ""
	}
	return p
}

// Example returns the path of one of the example programs this UCX ships
// (ucp_hello_world.c), or "" when it has none: a source install keeps them in
// PREFIX/share/ucx/examples, Debian's libucx-dev in
// /usr/share/doc/libucx-dev/examples.
func (u *UCXInstall) Example(name string) string {
	dirs := []string{filepath.Join(u.Prefix, "share", "ucx", "examples")}
	if u.Prefix == "/usr" {
		dirs = append(dirs, "/usr/share/doc/libucx-dev/examples")
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && !st.IsDir() {
			return filepath.Join(d, name)
		}
	}
	return ""
}

// GCC returns gcc arguments that add the UCX flags around args: the
// headers before, the libraries after.
func (u *UCXInstall) GCC(args ...string) []string {
	out := append([]string{}, u.CFlags...)
	out = append(out, args...)
	return append(out, u.Libs...)
}

var ucx struct {
	once sync.Once
	u    *UCXInstall
	skip string
	err  error
}

// versionProbe prints the running libucp's version.
const versionProbe = `#include <stdio.h>
#include <ucp/api/ucp.h>
int main(void)
{
    unsigned major, minor, release;
    ucp_get_version(&major, &minor, &release);
    printf("%u %u %s\n", major, minor, ucp_get_version_string());
    return 0;
}
`

// UCX returns the UCX install the tests use, found once per test binary.
// It sets LD_LIBRARY_PATH in the test process so that the programs tests
// start load the same UCX they were built against. It skips (or, with
// UCXFAULT_REQUIRE_BPF=1, fails) when gcc, pkg-config or ucx.pc is missing.
func UCX(tb testing.TB) *UCXInstall {
	tb.Helper()
	ucx.once.Do(func() { ucx.u, ucx.skip, ucx.err = findUCX() })
	if ucx.skip != "" {
		skip(tb, ucx.skip)
	}
	if ucx.err != nil {
		tb.Fatal(ucx.err)
	}
	return ucx.u
}

func findUCX() (*UCXInstall, string, error) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil, "gcc not found", nil
	}
	if _, err := exec.LookPath("pkg-config"); err != nil {
		return nil, "pkg-config not found (scripts/deps.sh base)", nil
	}
	pc := func(args ...string) ([]string, error) {
		out, err := exec.Command("pkg-config", append(args, "ucx")...).Output()
		if err != nil {
			return nil, err
		}
		return strings.Fields(string(out)), nil
	}
	cflags, err := pc("--cflags")
	if err != nil {
		return nil, "pkg-config finds no ucx.pc (install libucx-dev, or set PKG_CONFIG_PATH)", nil
	}
	u := &UCXInstall{}
	for _, f := range cflags {
		if strings.HasPrefix(f, "-I") {
			u.CFlags = append(u.CFlags, "-isystem", strings.TrimPrefix(f, "-I"))
		} else {
			u.CFlags = append(u.CFlags, f)
		}
	}
	if u.Libs, err = pc("--libs"); err != nil {
		return nil, "", fmt.Errorf("pkg-config --libs ucx: %w", err)
	}
	dir, err := pc("--variable=libdir")
	if err != nil || len(dir) != 1 {
		return nil, "", fmt.Errorf("pkg-config --variable=libdir ucx: %v %w", dir, err)
	}
	u.LibDir = dir[0]
	if pre, err := pc("--variable=prefix"); err == nil && len(pre) == 1 {
		u.Prefix = pre[0]
	}
	if bin, err := pc("--variable=bindir"); err == nil && len(bin) == 1 {
		u.BinDir = bin[0]
	}
	if inc, err := pc("--variable=includedir"); err == nil && len(inc) == 1 {
		u.IncludeDir = inc[0]
	}
	if cur := os.Getenv("LD_LIBRARY_PATH"); !strings.HasPrefix(cur, u.LibDir) {
		if cur != "" {
			cur = ":" + cur
		}
		if err := os.Setenv("LD_LIBRARY_PATH", u.LibDir+cur); err != nil {
			return nil, "", fmt.Errorf("setting LD_LIBRARY_PATH: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "ucxfault-ucxver-")
	if err != nil {
		return nil, "", fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	src, bin := filepath.Join(tmp, "v.c"), filepath.Join(tmp, "v")
	if err := os.WriteFile(src, []byte(versionProbe), 0o644); err != nil {
		return nil, "", fmt.Errorf("writing the version probe: %w", err)
	}
	if out, err := exec.Command("gcc", u.GCC("-o", bin, src)...).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("building the UCX version probe: %w\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		return nil, "", fmt.Errorf("running the UCX version probe: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		return nil, "", fmt.Errorf("UCX version probe printed %q", out)
	}
	u.Major, _ = strconv.Atoi(f[0])
	u.Minor, _ = strconv.Atoi(f[1])
	u.Version = f[2]
	return u, "", nil
}
