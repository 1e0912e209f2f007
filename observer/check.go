package observer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
)

// Sentinel errors of Start, checked with errors.Is.
var (
	// ErrNoProcess: the PID does not exist (or exited before the probes
	// were attached).
	ErrNoProcess = errors.New("no such process")
	// ErrNoLibucp: the process has not mapped libucp.so (yet).
	ErrNoLibucp = errors.New("libucp not loaded")
	// ErrPermission: the observer lacks the capabilities to load eBPF
	// programs and attach uprobes.
	ErrPermission = errors.New("not permitted to use eBPF")
	// ErrKernelSupport: the running kernel lacks uprobes, BTF or BPF ring
	// buffers.
	ErrKernelSupport = errors.New("kernel lacks what the observer needs")
)

// Capability bits of /proc/self/status's CapEff.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// Kernel interfaces the observer depends on.
const (
	uprobePMU  = "/sys/bus/event_source/devices/uprobe"
	vmlinuxBTF = "/sys/kernel/btf/vmlinux"
)

// CheckSupport reports whether this process may observe: it needs CAP_BPF
// and CAP_PERFMON (or CAP_SYS_ADMIN, which root has) and a kernel with
// uprobes, BTF and BPF ring buffers (Linux 5.8 or later; attach cookies need
// 5.15). The error wraps ErrPermission or ErrKernelSupport and names what is
// missing.
func CheckSupport() error {
	if err := checkCapabilities(); err != nil {
		return err
	}
	return checkKernel()
}

func checkCapabilities() error {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	var capEff uint64
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			capEff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return fmt.Errorf("parsing CapEff %q: %w", strings.TrimSpace(v), err)
			}
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("reading capabilities: no CapEff line in /proc/self/status")
	}
	return capabilityError(capEff)
}

// capabilityError says which capabilities capEff lacks, or returns nil.
func capabilityError(capEff uint64) error {
	has := func(bit uint) bool { return capEff&(1<<bit) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	var missing []string
	if !has(capBPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) {
		missing = append(missing, "CAP_PERFMON")
	}
	return fmt.Errorf("%w: missing %s (run as root, or grant CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
		ErrPermission, strings.Join(missing, " and "))
}

func checkKernel() error {
	var missing []string
	if _, err := os.Stat(uprobePMU); err != nil {
		missing = append(missing, "uprobes (no "+uprobePMU+"; needs CONFIG_UPROBE_EVENTS)")
	}
	if _, err := os.Stat(vmlinuxBTF); err != nil {
		missing = append(missing, "BTF (no "+vmlinuxBTF+"; needs CONFIG_DEBUG_INFO_BTF)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("probing for BPF ring buffers: %w", err)
		}
		missing = append(missing, "BPF ring buffers (needs Linux 5.8 or later)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrKernelSupport, strings.Join(missing, ", "))
	}
	return nil
}
