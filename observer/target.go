package observer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
)

// fileKey names a library file whatever path a process maps it by (a
// container's root, a symlink): a uprobe is set on an inode, for every
// process that maps it.
type fileKey struct {
	dev, ino uint64
}

// probedFile is a libucp (or injector) file and the probes set on it.
type probedFile struct {
	path  string
	links []link.Link
}

// probeFiles sets the probes on every libucp file pid maps, and on its
// ucxfault injector, unless they already are. filterPID sets them for pid
// alone (the kernel's filter) instead of for every process. Called with
// attachMu held.
func (n *Node) probeFiles(pid int, maps []mapping, filterPID bool) error {
	only := 0 // every process
	if filterPID {
		only = pid
	}
	for _, path := range proc.LibucpCopies(maps) {
		if err := n.probeLibucp(pid, path, only); err != nil {
			return err
		}
	}
	// Under the ucxfault injector, calls it fails never reach libucp: its
	// ucxf_fault_marker reports each of them.
	if inj, ok := injectorPath(maps); ok {
		key, full, err := fileOf(pid, inj)
		if err != nil {
			return err
		}
		if n.files[key] == nil {
			ex, err := link.OpenExecutable(full)
			if err != nil {
				return fmt.Errorf("opening %s: %w", inj, err)
			}
			l, err := ex.Uprobe("ucxf_fault_marker", n.objs.UcxfMarker, &link.UprobeOptions{PID: only})
			if err != nil {
				return attachError(pid, "ucxf_fault_marker", inj, err)
			}
			n.files[key] = &probedFile{path: inj, links: []link.Link{l}}
		}
	}
	return nil
}

// fileOf stats path as process pid sees it (through /proc/PID/root, so
// that a process in another mount namespace, a container, is probed in its
// own file).
func fileOf(pid int, path string) (fileKey, string, error) {
	full := fmt.Sprintf("/proc/%d/root%s", pid, path)
	fi, err := os.Stat(full)
	if err != nil {
		if !proc.Alive(pid) {
			return fileKey{}, "", fmt.Errorf("%w: %d exited", ErrNoProcess, pid)
		}
		return fileKey{}, "", fmt.Errorf("opening %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, "", fmt.Errorf("opening %s: no inode", path)
	}
	return fileKey{uint64(st.Dev), st.Ino}, full, nil
}

// probeLibucp sets one set of probes on the libucp file at path (as pid
// maps it), once per file.
func (n *Node) probeLibucp(pid int, path string, only int) error {
	key, full, err := fileOf(pid, path)
	if err != nil {
		return err
	}
	if n.files[key] != nil {
		return nil
	}
	ex, err := link.OpenExecutable(full)
	if err != nil {
		if !proc.Alive(pid) {
			return fmt.Errorf("%w: %d exited", ErrNoProcess, pid)
		}
		return fmt.Errorf("opening %s: %w", path, err)
	}
	f := &probedFile{path: path}
	fail := func(err error) error {
		for _, l := range f.links {
			l.Close()
		}
		return err
	}
	opts := func(cookie uint64) *link.UprobeOptions {
		return &link.UprobeOptions{PID: only, Cookie: cookie}
	}
	// Real endpoint failures: libucp calls an endpoint's error handler
	// through its exported ucp_ep_invoke_err_cb. A libucp without it
	// (not seen: 1.13.1 and 1.22.0 export it) records no endpoint events.
	if l, err := ex.Uprobe("ucp_ep_invoke_err_cb", n.objs.UcxfEpErr, opts(0)); err == nil {
		f.links = append(f.links, l)
	} else if !errors.Is(err, link.ErrNoSymbol) {
		return fail(attachError(pid, "ucp_ep_invoke_err_cb", path, err))
	}
	// Entries first: a call entered before its return probe exists leaves
	// a frame that the next return of its thread discards, while a return
	// without an entry would count as lost. (A process is watched only
	// once its file's probes are all set, so this matters only for a
	// process that maps a second copy while watched.)
	missing := map[hooks.ID]bool{}
	for _, id := range n.hookIDs {
		h := &hooks.Table[id]
		l, err := ex.Uprobe(h.Name, n.objs.UcxfEntry, opts(uint64(id)))
		if err != nil && h.Since != "" && errors.Is(err, link.ErrNoSymbol) {
			// Newer than this libucp (the GPU device API of 1.20+ on an
			// older UCX): nothing to probe, nothing ever called.
			missing[id] = true
			if !containsString(n.missing, h.Name) {
				n.missing = append(n.missing, h.Name)
			}
			continue
		}
		if err != nil {
			return fail(attachError(pid, h.Name, path, err))
		}
		f.links = append(f.links, l)
	}
	for _, id := range n.hookIDs {
		if missing[id] {
			continue
		}
		h := &hooks.Table[id]
		l, err := ex.Uretprobe(h.Name, n.objs.UcxfReturn, opts(uint64(id)))
		if err != nil {
			return fail(attachError(pid, h.Name, path, err))
		}
		f.links = append(f.links, l)
	}
	n.files[key] = f
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func attachError(pid int, fn, lib string, err error) error {
	if !proc.Alive(pid) {
		return fmt.Errorf("%w: %d exited while attaching", ErrNoProcess, pid)
	}
	return fmt.Errorf("attaching probes to %s in %s: %w", fn, lib, err)
}

// rescan is how often a process that maps no libucp is looked at again
// (it may load one later: a Python import): reading the map of every
// process at every scan would cost the node more than the observer's
// probes. A process that loads a libucp whose file is probed already is
// announced by the probes at its first call (HOOK_HELLO) and watched then.
const rescan = 2 * time.Second

// scanAll considers every process of /proc.
func (n *Node) scanAll() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	now := time.Now()
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			n.consider(pid, now, false)
		}
	}
	// Forget the processes that are gone.
	n.mu.Lock()
	for k, at := range n.checked {
		if now.Sub(at) > 4*rescan && !proc.Alive(k.pid) {
			delete(n.checked, k)
		}
	}
	n.mu.Unlock()
}

// candidateKey is pid's identity (its pid and start) for a node-wide
// attach to consider; false for this process itself and for a pid that
// names no process any more.
func candidateKey(pid int) (procKey, bool) {
	if pid == os.Getpid() {
		return procKey{}, false
	}
	start, err := proc.StartTime(pid)
	if err != nil {
		return procKey{}, false
	}
	return procKey{pid, start}, true
}

// consider watches process pid if it maps a libucp and passes the filters,
// and is not watched yet.
// announced: the probes saw it call a probed libucp (no need to wait for
// the next look at its map).
func (n *Node) consider(pid int, now time.Time, announced bool) {
	key, ok := candidateKey(pid)
	if !ok {
		return
	}
	n.mu.Lock()
	t := n.procs[pid]
	at, checked := n.checked[key]
	n.mu.Unlock()
	if t != nil && t.key == key {
		return // watched, or watched and exited
	}
	if checked && (at.IsZero() || !announced && now.Sub(at) < rescan) {
		return // rejected for good (zero time), or looked at recently
	}
	// The filters first: they read small files, the map is larger.
	if !n.filter.selects(pid) {
		n.mu.Lock()
		n.checked[key] = time.Time{} // name and cgroup do not change (exec aside)
		n.mu.Unlock()
		return
	}
	maps, err := readMaps(pid)
	if err != nil {
		return
	}
	if _, ok := libucpPath(maps); !ok {
		n.mu.Lock()
		n.checked[key] = now
		n.mu.Unlock()
		return
	}
	if err := n.watch(pid, maps, false); err != nil {
		n.mu.Lock()
		n.checked[key] = time.Time{}
		n.mu.Unlock()
		if n.opts.Log != nil {
			n.opts.Log("cannot watch process %d: %v", pid, err)
		}
	}
}

// procFilter is the choice of processes of a node-wide attach (observe
// --all, watch): by name (Comm, compared as the kernel keeps it) and by
// cgroup (as /proc/PID/cgroup gives it, cgroupPath); with pids and not all,
// those processes only.
type procFilter struct {
	pids   []int
	all    bool
	comm   string
	cgroup string
}

// selects reports whether process pid passes the filter.
func (f *procFilter) selects(pid int) bool {
	if len(f.pids) > 0 && !f.all && !slices.Contains(f.pids, pid) {
		return false
	}
	if f.comm != "" && readComm(pid) != commOf(f.comm) {
		return false
	}
	if f.cgroup != "" {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil || !inCgroup(string(data), f.cgroup) {
			return false
		}
	}
	return true
}

// readComm returns the process's name (/proc/PID/comm).
func readComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// commOf is name as the kernel keeps it in comm: at most 15 bytes
// (TASK_COMM_LEN 16 with the NUL).
func commOf(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}

// cgroupPath turns a cgroup given by the user into the form of
// /proc/PID/cgroup: a path from the hierarchy's root, without the mount
// point (/sys/fs/cgroup/kubepods.slice -> /kubepods.slice).
func cgroupPath(p string) string {
	if p == "" {
		return ""
	}
	for _, mnt := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if rest, ok := strings.CutPrefix(p, mnt); ok && (rest == "" || rest[0] == '/') {
			p = rest
			break
		}
	}
	// A v1 path names its controller first: /sys/fs/cgroup/cpu/slurm/...
	p = "/" + strings.Trim(p, "/")
	return p
}

// inCgroup reports whether a /proc/PID/cgroup text puts the process in
// cgroup want or below it, in any hierarchy (cgroup v2's single line
// "0::/path", or v1's "N:controllers:/path", where want may start with the
// controller's directory).
func inCgroup(text, want string) bool {
	under := func(path, root string) bool {
		return root == "/" || path == root || strings.HasPrefix(path, root+"/")
	}
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		if under(path, want) {
			return true
		}
		if parts[1] != "" && under("/"+parts[1]+path, want) {
			return true // the mount directory of the controllers (cpu,cpuacct)
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			if ctrl != "" && under("/"+strings.TrimPrefix(ctrl, "name=")+path, want) {
				return true
			}
		}
	}
	return false
}

// initPidNamespace is the inode of the initial pid namespace
// (PROC_PID_INIT_INO in the kernel's include/linux/proc_ns.h).
const initPidNamespace = 0xEFFFFFFC

// ownPidNamespace returns the device and inode of the observer's pid
// namespace when it is not the initial one (a container without the host's
// pids): the BPF programs then name processes as this namespace's /proc
// does (bpf_get_ns_current_pid_tgid, Linux 5.7 or later).
func ownPidNamespace() (dev, ino uint64, ok bool) {
	fi, err := os.Stat("/proc/self/ns/pid")
	if err != nil {
		return 0, 0, false
	}
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if !isStat || st.Ino == initPidNamespace {
		return 0, 0, false
	}
	return uint64(st.Dev), st.Ino, true
}
