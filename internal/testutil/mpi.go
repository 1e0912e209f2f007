package testutil

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var mpi struct {
	once sync.Once
	path string
	skip string
}

// RequireMPI skips the test unless Open MPI's mpirun is installed (or, with
// UCXFAULT_REQUIRE_BPF=1, fails it), and returns the path of mpirun. The
// tests pass Open MPI's own flags (--allow-run-as-root, --oversubscribe,
// --output-filename), so another MPI's mpirun counts as missing. `make deps-mpi`
// installs Open MPI.
func RequireMPI(tb testing.TB) string {
	tb.Helper()
	mpi.once.Do(func() {
		path, err := exec.LookPath("mpirun")
		if err != nil {
			mpi.skip = "mpirun not found (install Open MPI: make deps-mpi)"
			return
		}
		out, err := exec.Command(path, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Open MPI") {
			mpi.skip = "mpirun at " + path + " is not Open MPI's (install openmpi-bin: make deps-mpi)"
			return
		}
		mpi.path = path
	})
	if mpi.skip != "" {
		skip(tb, mpi.skip)
	}
	return mpi.path
}
