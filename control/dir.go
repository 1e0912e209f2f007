package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Where the control sockets live. By default each user has a private
// directory, as tmux and ssh-agent do: in a directory that only its owner
// may enter, nobody else can take the name of a future process's socket,
// nor plant a socket that answers in its place. The original tool's layout
// (/tmp) is still there for whoever asks for it (UCX_FAULT_SOCKET_DIR or
// --socket-dir), with what it gives up said in SECURITY.md.

// PrivateDirName is the directory made under $XDG_RUNTIME_DIR.
const PrivateDirName = "ucxfault"

// tmpRoot holds /tmp/ucxfault-<uid> when $XDG_RUNTIME_DIR is not usable.
// It is not $TMPDIR: the CLI and the injected programs must agree on the
// place without sharing an environment (an MPI launcher's ranks do not
// always get the caller's).
const tmpRoot = "/tmp"

// runUserRoot is where systemd-logind makes each user's $XDG_RUNTIME_DIR
// (/run/user/<uid>); root's status looks there for other users' processes.
const runUserRoot = "/run/user"

// ErrUnsafeDir is wrapped by the errors about a socket directory that
// another user could write or has planted.
var ErrUnsafeDir = errors.New("unsafe socket directory")

// PrivateDir returns uid's own socket directory: $XDG_RUNTIME_DIR/ucxfault
// when $XDG_RUNTIME_DIR is set and usable (a directory owned by uid that
// nobody else may enter, as the XDG base directory specification demands:
// one inherited from another user, through su or sudo, is not), else
// /tmp/ucxfault-<uid>.
func PrivateDir(getenv Env, uid int) string {
	if x := getenv("XDG_RUNTIME_DIR"); x != "" && filepath.IsAbs(x) {
		if fi, err := os.Stat(x); err == nil && fi.IsDir() && ownerOf(fi) == uid && fi.Mode().Perm()&0o077 == 0 {
			return filepath.Join(x, PrivateDirName)
		}
	}
	return TmpPrivateDir(uid)
}

// TmpPrivateDir is uid's private directory under /tmp.
func TmpPrivateDir(uid int) string {
	return filepath.Join(tmpRoot, fmt.Sprintf("ucxfault-%d", uid))
}

func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// CheckPrivateDir checks that path is uid's private directory: a directory
// (not a link to one), owned by uid, that nobody else may enter (mode 0700
// or narrower). A missing directory gives an error wrapping
// fs.ErrNotExist; anything else wrong, one wrapping ErrUnsafeDir that says
// how to fix it.
func CheckPrivateDir(path string, uid int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link, not a directory of your own (remove it; ucxfault makes the directory itself)", ErrUnsafeDir, path)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory (remove it; ucxfault makes the directory itself)", ErrUnsafeDir, path)
	}
	if o := ownerOf(fi); o != uid {
		return fmt.Errorf("%w: %s belongs to uid %d, not to uid %d: another user made it, and could answer in your processes' place (have it removed, or choose another directory with %s or --socket-dir)",
			ErrUnsafeDir, path, o, uid, EnvSocketDir)
	}
	if p := fi.Mode().Perm(); p&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o: other users may enter it (chmod 700 %s)", ErrUnsafeDir, path, p, path)
	}
	return nil
}

// EnsurePrivateDir makes uid's private directory at path with mode 0700
// if it is missing, and checks it (CheckPrivateDir) whether it was made
// now or found. Only the last component is made: its parent ($XDG_RUNTIME_DIR
// or /tmp) exists.
func EnsurePrivateDir(path string, uid int) error {
	// The umask can only narrow 0700; the check below sees the result.
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("making socket directory: %w", err)
	}
	return CheckPrivateDir(path, uid)
}

// CheckChosenDir checks a directory chosen on purpose (UCX_FAULT_SOCKET_DIR,
// --socket-dir) for uid. Such a directory may be shared, as /tmp is in the
// original tool's layout, but nobody but uid and root may remove or rename
// what uid puts there: it belongs to uid or root (root may choose any
// user's), and if others may write it, it has the sticky bit (as /tmp has).
func CheckChosenDir(path string, uid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafeDir, path)
	}
	if o := ownerOf(fi); o != uid && o != 0 && uid != 0 {
		return fmt.Errorf("%w: %s belongs to uid %d, who could replace the sockets of uid %d there (choose a directory of your own)", ErrUnsafeDir, path, o, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%w: %s has mode %#o without the sticky bit: any user who may write it could replace your sockets (chmod +t or 700 it)", ErrUnsafeDir, path, fi.Mode().Perm())
	}
	return nil
}

// PrepareDir returns the directory an injected process of uid puts its
// socket (or state file) in, made if missing and checked: chosen, when
// not empty (UCX_FAULT_SOCKET_DIR; made with mode 0700 if missing, checked
// with CheckChosenDir), else uid's private directory (EnsurePrivateDir).
func PrepareDir(chosen string, getenv Env, uid int) (string, error) {
	if chosen != "" {
		if err := os.MkdirAll(chosen, 0o700); err != nil {
			return chosen, fmt.Errorf("making socket directory: %w", err)
		}
		return chosen, CheckChosenDir(chosen, uid)
	}
	dir := PrivateDir(getenv, uid)
	return dir, EnsurePrivateDir(dir, uid)
}

// SearchDir is one directory the CLI looks for control sockets in, and the
// user whose private directory it is (-1 for a directory chosen on purpose).
type SearchDir struct {
	Path string
	UID  int
}

// SearchDirs lists the directories the CLI of uid looks in. chosen, when
// not empty, is the only one (it must pass CheckChosenDir). Otherwise they
// are uid's private directories, $XDG_RUNTIME_DIR's and /tmp's (a program
// started without the CLI's $XDG_RUNTIME_DIR, by a launcher, uses the
// latter), and for root also every other user's: /tmp/ucxfault-<uid> and
// /run/user/<uid>/ucxfault. A private directory that is missing is left
// out; one that fails CheckPrivateDir is left out and its error returned in
// refused, for the caller to say.
func SearchDirs(chosen string, getenv Env, uid int) (dirs []SearchDir, refused []error, err error) {
	if chosen != "" {
		if err := CheckChosenDir(chosen, uid); err != nil {
			return nil, nil, err
		}
		return []SearchDir{{Path: chosen, UID: -1}}, nil, nil
	}
	cands := []SearchDir{{PrivateDir(getenv, uid), uid}, {TmpPrivateDir(uid), uid}}
	if uid == 0 {
		others := map[string]int{}
		globUIDs(others, filepath.Join(tmpRoot, "ucxfault-*"), func(m string) string {
			return strings.TrimPrefix(filepath.Base(m), "ucxfault-")
		})
		globUIDs(others, filepath.Join(runUserRoot, "*", PrivateDirName), func(m string) string {
			return filepath.Base(filepath.Dir(m))
		})
		paths := make([]string, 0, len(others))
		for p := range others {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			cands = append(cands, SearchDir{p, others[p]})
		}
	}
	seen := map[string]bool{}
	for _, c := range cands {
		if seen[c.Path] {
			continue
		}
		seen[c.Path] = true
		if err := CheckPrivateDir(c.Path, c.UID); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				refused = append(refused, err)
			}
			continue
		}
		dirs = append(dirs, c)
	}
	return dirs, refused, nil
}

// globUIDs adds to out each match of pattern whose uid (read by uidOf
// from the path) is a number.
func globUIDs(out map[string]int, pattern string, uidOf func(string) string) {
	matches, _ := filepath.Glob(pattern)
	for _, m := range matches {
		if u, err := strconv.Atoi(uidOf(m)); err == nil && u >= 0 {
			out[m] = u
		}
	}
}
