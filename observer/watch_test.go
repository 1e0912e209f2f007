package observer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestWatchSymbolsOfInstalledUCX reads what the installed libucp files
// export of the watch's functions: the table of docs/peer-death.md.
func TestWatchSymbolsOfInstalledUCX(t *testing.T) {
	cases := []struct {
		path, version string
		has, lacks    []string
	}{
		{"/usr/lib/x86_64-linux-gnu/libucp.so.0", "1.13.1",
			[]string{"ucp_ep_set_failed", "ucp_ep_invoke_err_cb", "ucp_ep_reqs_purge", "ucp_ep_req_purge", "ucp_ep_err_pending_purge", "ucp_ep_create"},
			[]string{"ucp_ep_set_lanes_failed"}},
		{"/opt/ucx-1.22/lib/libucp.so.0", "1.22.0",
			[]string{"ucp_ep_set_lanes_failed", "ucp_ep_invoke_err_cb", "ucp_ep_reqs_purge", "ucp_ep_req_purge", "ucp_ep_err_pending_purge", "ucp_ep_create"},
			[]string{"ucp_ep_set_failed"}},
	}
	seen := 0
	for _, c := range cases {
		if _, err := os.Stat(c.path); err != nil {
			t.Logf("%s: not installed", c.path)
			continue
		}
		seen++
		found, version, err := CheckFailurePath(c.path)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if version != c.version {
			t.Fatalf("%s: version %q, want %s", c.path, version, c.version)
		}
		for _, s := range c.has {
			if !slices.Contains(found, s) {
				t.Fatalf("%s (%s): %s not found in %v", c.path, version, s, found)
			}
		}
		for _, s := range c.lacks {
			if slices.Contains(found, s) {
				t.Fatalf("%s (%s): %s found, not exported by this release", c.path, version, s)
			}
		}
		t.Logf("UCX %s exports %v", version, found)
	}
	if seen == 0 {
		t.Skip("no libucp at the known paths")
	}
}

// TestCheckFailurePathRefuses: a copy without ucp_ep_invoke_err_cb in its
// dynamic symbols is refused, naming its version.
func TestCheckFailurePathRefuses(t *testing.T) {
	src := "/usr/lib/x86_64-linux-gnu/libucp.so.0"
	data, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("%s: %v", src, err)
	}
	data = []byte(strings.ReplaceAll(string(data), "\x00ucp_ep_invoke_err_cb\x00", "\x00ucp_ep_invoke_err_cX\x00"))
	path := filepath.Join(t.TempDir(), "libucp.so.0")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = CheckFailurePath(path)
	if !errors.Is(err, ErrNoFailurePath) || !strings.Contains(err.Error(), "UCX 1.13.1") {
		t.Fatalf("got %v, want ErrNoFailurePath naming UCX 1.13.1", err)
	}
}

// TestPeerName decodes the peers as the injector's status names them.
func TestPeerName(t *testing.T) {
	ev := &watchWevent{PeerKind: peerSockaddr}
	copy(ev.Peer[:], []byte{2, 0, 0x30, 0x39, 127, 0, 0, 1})
	if got := peerName(ev); got != "127.0.0.1:12345" {
		t.Fatalf("sockaddr: %q", got)
	}
	ev = &watchWevent{PeerKind: peerAddress}
	copy(ev.Peer[:], []byte{0x12, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01})
	if got := peerName(ev); got != "w:456789abcdef" {
		t.Fatalf("address: %q", got)
	}
}

// TestWatchAdoptsAnExitedProcess: a process whose first event is read after
// it exited (a program of a few milliseconds, a reader behind) is watched
// from its events with --all alone; with --comm, which can no longer be
// checked, its events are counted as unread instead of dropped in silence.
// A process still there is left to consider.
func TestWatchAdoptsAnExitedProcess(t *testing.T) {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	gone := c.Process.Pid
	w := &Watch{opts: WatchOptions{All: true}, filter: procFilter{all: true}, procs: map[int]*watchProc{}, rejected: map[procKey]bool{}}
	p := w.adoptExited(gone)
	if p == nil || w.procs[gone] != p || p.rank != -1 || w.stats.Processes != 1 {
		t.Fatalf("exited process %d not adopted with --all: %+v", gone, p)
	}
	if w.adoptExited(os.Getpid()) != nil {
		t.Fatal("a live process was adopted")
	}
	w = &Watch{opts: WatchOptions{All: true, Comm: "x"}, filter: procFilter{all: true, comm: "x"}, procs: map[int]*watchProc{}, rejected: map[procKey]bool{}}
	if w.adoptExited(gone) != nil || w.stats.Unread != 1 {
		t.Fatalf("with --comm: adopted, or not counted (%+v)", w.stats)
	}
}
