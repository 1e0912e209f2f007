package control

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrivateDir(t *testing.T) {
	uid := os.Geteuid()
	xdg := t.TempDir()
	if err := os.Chmod(xdg, 0o700); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) Env { return func(k string) string { return m[k] } }
	if got := PrivateDir(env(map[string]string{"XDG_RUNTIME_DIR": xdg}), uid); got != filepath.Join(xdg, "ucxfault") {
		t.Errorf("with a usable XDG_RUNTIME_DIR: %s", got)
	}
	tmp := TmpPrivateDir(uid)
	if got := PrivateDir(env(nil), uid); got != tmp {
		t.Errorf("without XDG_RUNTIME_DIR: %s, want %s", got, tmp)
	}
	// Inherited from another user (su, sudo), or open to others: not usable.
	if got := PrivateDir(env(map[string]string{"XDG_RUNTIME_DIR": xdg}), uid+1); got != TmpPrivateDir(uid+1) {
		t.Errorf("XDG_RUNTIME_DIR of another user: %s", got)
	}
	if err := os.Chmod(xdg, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := PrivateDir(env(map[string]string{"XDG_RUNTIME_DIR": xdg}), uid); got != tmp {
		t.Errorf("XDG_RUNTIME_DIR of mode 0755: %s, want %s", got, tmp)
	}
	if got := PrivateDir(env(map[string]string{"XDG_RUNTIME_DIR": "relative"}), uid); got != tmp {
		t.Errorf("relative XDG_RUNTIME_DIR: %s, want %s", got, tmp)
	}
}

func TestCheckPrivateDir(t *testing.T) {
	uid := os.Geteuid()
	base := t.TempDir()
	dir := filepath.Join(base, "ucxfault")
	if err := CheckPrivateDir(dir, uid); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if err := EnsurePrivateDir(dir, uid); err != nil {
		t.Fatalf("made: %v", err)
	}
	if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made with %v (%v), want 0700", fi.Mode(), err)
	}
	if err := EnsurePrivateDir(dir, uid); err != nil {
		t.Fatalf("found: %v", err)
	}
	unsafe := func(name string, err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrUnsafeDir saying %q", name, err, want)
		}
	}
	unsafe("another owner", CheckPrivateDir(dir, uid+1), "belongs to uid")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	unsafe("world-writable", EnsurePrivateDir(dir, uid), "chmod 700 "+dir)
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	unsafe("group may enter", CheckPrivateDir(dir, uid), "mode 0750")
	link := filepath.Join(base, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	unsafe("symbolic link", EnsurePrivateDir(link, uid), "symbolic link")
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	unsafe("a file", CheckPrivateDir(file, uid), "not a directory")
}

func TestCheckChosenDir(t *testing.T) {
	uid := os.Geteuid()
	// /tmp is shared but sticky: the original tool's layout is allowed.
	if err := CheckChosenDir("/tmp", uid); err != nil {
		t.Errorf("/tmp: %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckChosenDir(dir, uid); !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), "sticky") {
		t.Errorf("world-writable without the sticky bit: %v", err)
	}
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckChosenDir(dir, uid); err != nil {
		t.Errorf("sticky world-writable: %v", err)
	}
	// PrepareDir makes a chosen directory that is missing, private.
	made := filepath.Join(t.TempDir(), "a", "b")
	if got, err := PrepareDir(made, os.Getenv, uid); err != nil || got != made {
		t.Fatalf("PrepareDir(%s): %s, %v", made, got, err)
	}
	if fi, err := os.Stat(made); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v (%v), want 0700", fi.Mode(), err)
	}
}
