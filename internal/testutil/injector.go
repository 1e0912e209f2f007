package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var injector struct {
	once     sync.Once
	cli, lib string
	err      error
}

// BuildInjector returns the paths of the ucxfault CLI and of
// libucxfault.so. `make test` builds them first and passes them in
// UCXFAULT_CLI and UCXFAULT_LIB; otherwise they are built once per test
// binary into a temporary directory (the library beside the CLI, where
// `ucxfault inject` looks for it).
func BuildInjector(tb testing.TB) (cli, lib string) {
	tb.Helper()
	injector.once.Do(func() {
		if c, l := os.Getenv("UCXFAULT_CLI"), os.Getenv("UCXFAULT_LIB"); c != "" && l != "" {
			injector.cli, injector.lib = c, l
			return
		}
		root, err := repoRoot()
		if err != nil {
			injector.err = err
			return
		}
		dir, err := os.MkdirTemp("", "ucxfault-build-")
		if err != nil {
			injector.err = fmt.Errorf("creating build directory: %w", err)
			return
		}
		injector.cli = filepath.Join(dir, "ucxfault")
		injector.lib = filepath.Join(dir, "libucxfault.so")
		for _, args := range [][]string{
			{"build", "-o", injector.cli, "./cmd/ucxfault"},
			{"build", "-buildmode=c-shared", "-o", injector.lib, "./preload"},
		} {
			cmd := exec.Command("go", args...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				injector.err = fmt.Errorf("go %v: %w\n%s", args, err, out)
				return
			}
		}
	})
	if injector.err != nil {
		tb.Fatal(injector.err)
	}
	return injector.cli, injector.lib
}
