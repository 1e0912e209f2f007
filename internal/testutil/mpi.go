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

var mpich struct {
	once sync.Once
	path string
	skip string
}

// RequireMPICH skips the test unless MPICH's launcher (mpiexec.mpich) and
// compiler wrapper (mpicc.mpich) are installed (or, with
// UCXFAULT_REQUIRE_BPF=1, fails it), and returns the launcher's path.
// `make deps-mpi` installs MPICH beside Open MPI.
func RequireMPICH(tb testing.TB) string {
	tb.Helper()
	mpich.once.Do(func() {
		path, err := exec.LookPath("mpiexec.mpich")
		if err != nil {
			mpich.skip = "mpiexec.mpich not found (install MPICH: make deps-mpi)"
			return
		}
		if _, err := exec.LookPath("mpicc.mpich"); err != nil {
			mpich.skip = "mpicc.mpich not found (install libmpich-dev: make deps-mpi)"
			return
		}
		mpich.path = path
	})
	if mpich.skip != "" {
		skip(tb, mpich.skip)
	}
	return mpich.path
}
