// Package version says which build of ucxfault is running: the CLI prints
// it (ucxfault version) and each injector reports its own in status, so
// that a CLI and an injector from different builds are told apart.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set at link time by the Makefile
// (-ldflags "-X github.com/ucxfault/ucxfault/internal/version.Version=..."),
// from git describe. Empty in a plain go build: String then falls back on
// the module's build information.
var Version string

var (
	once     sync.Once
	computed string
)

// String returns the version: the one set at link time, else the VCS
// revision Go recorded in the binary (12 hex digits, "-dirty" when the tree
// had changes), else "devel".
func String() string {
	once.Do(func() {
		computed = fromBuildInfo()
	})
	return computed
}

func fromBuildInfo() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel-" + rev + dirty
}
