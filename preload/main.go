// Command preload is the ucxfault injector, built with -buildmode=c-shared
// into libucxfault.so and loaded with LD_PRELOAD.
//
// The ucp_* wrappers and the fault decision are C (hooks_gen.c, decide.c and
// the files below it, docs/architecture.md "The C files") and never call Go.
// This package is the control plane: it reads the UCX_FAULT_* environment at
// start, publishes settings to the C side, and serves the control socket (or
// polls the command file).
//
// The runtime neither sizes GOMAXPROCS from the cgroup nor re-reads it
// every second: init sets one P, and the cgroup-aware default kept two
// descriptors of the host open for the process's life and read
// /proc/self/mountinfo at every start of every process that inherits the
// preload (shells, compilers). docs/safety.md.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

/*
#cgo CFLAGS: -O2 -g -Wall -fno-omit-frame-pointer
#cgo LDFLAGS: -ldl -lpthread -lm
// The library's own calls that can take a lock of the host's libraries go
// through forkgate.c, so that fork() never copies one held (docs/safety.md).
#cgo LDFLAGS: -Wl,--wrap=mmap -Wl,--wrap=munmap -Wl,--wrap=pthread_create
#cgo LDFLAGS: -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc -Wl,--wrap=free
#cgo LDFLAGS: -Wl,--wrap=dlsym -Wl,--wrap=dladdr -Wl,--wrap=dl_iterate_phdr
#include <stdlib.h>
#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"
#include "defer.h"
*/
import "C"

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"github.com/ucxfault/ucxfault/control"
)

func main() {}

var (
	debug   bool
	backend *cBackend
	engine  *control.Engine
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ucxfault[%d]: %s\n", os.Getpid(), fmt.Sprintf(format, args...))
}

func debugf(format string, args ...any) {
	if debug {
		logf(format, args...)
	}
}

func init() {
	if os.Getenv("GOMAXPROCS") == "" {
		// The control plane answers one short request at a time: one P
		// keeps the Go runtime from handing work between OS threads (a
		// futex wake-up and a context switch each) and off the host's
		// cores.
		runtime.GOMAXPROCS(1)
	}
	C.ucxf_init()
	debug, _ = control.ParseBool(os.Getenv(control.EnvDebug))
	backend = newCBackend()
	settings, seeded, err := control.FromEnv(os.Getenv)
	if err != nil {
		// Reported once; the injector stays off and the host runs on.
		logf("%v; injector off", err)
		settings = control.DefaultSettings()
		seeded = false
	}
	if !seeded {
		settings.Seed = randomSeed()
	}
	if err := backend.Apply(settings); err != nil {
		logf("applying start-up settings: %v; injector off", err)
		settings = control.DefaultSettings()
		backend.Apply(settings)
	}
	engine = control.NewEngine(backend, settings)
	debugf("loaded: enabled=%v strategy=%s seed=%d", settings.Enabled, settings.Strategy, settings.Seed)
	// The library's constructor waits for this before the host's main runs
	// (ucxf_constructor): every file descriptor the runtime and the control
	// plane open at start-up is open by then. Opened later, on a thread of
	// their own, they took the number a single-threaded host had just
	// closed on purpose (dash's redirections: close(1), then dup2(f, 1)),
	// and the runtime then closed the host's descriptor (docs/safety.md).
	defer C.ucxf_set_ready()

	ipc, err := control.ParseBackend(os.Getenv(control.EnvIPCBackend))
	if err != nil {
		logf("%v; control plane off", err)
		return
	}
	if C.ucxf_libucp_loaded() != 0 {
		startControl(ipc)
		return
	}
	// A process that never loads libucp gets no socket: wait, without a
	// thread of our own (the pipe is read through the runtime's poller),
	// for the first hook to find libucp.
	fd := int(C.ucxf_notify_fd())
	if fd < 0 {
		return
	}
	// Here, not in the goroutine: registering the pipe with the poller
	// opens the poller's own descriptors (epoll, eventfd).
	f := os.NewFile(uintptr(fd), "ucxfault-notify")
	go func() {
		var b [1]byte
		if n, _ := f.Read(b[:]); n == 1 {
			startControl(ipc)
		}
	}()
}

func randomSeed() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.LittleEndian.Uint64(b[:])
}

func startControl(ipc string) {
	pid := os.Getpid()
	if v := os.Getenv(control.EnvStatsLogInterval); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
			go logStats(time.Duration(secs * float64(time.Second)))
		} else {
			logf("%s=%q is not a positive number of seconds; statistics not logged", control.EnvStatsLogInterval, v)
		}
	}
	// The user's private directory unless one was chosen: in a directory
	// others may write, another user could take this socket's name first,
	// or plant one that answers in this process's place (SECURITY.md).
	dir, err := control.PrepareDir(control.SocketDir(os.Getenv), os.Getenv, os.Geteuid())
	if err != nil {
		logf("%v; control plane off, the program runs on", err)
		return
	}
	if ipc == control.BackendFile {
		path := control.StateFile(dir, pid)
		cpath := C.CString(path)
		C.ucxf_set_socket_path(cpath) // removed at exit like a socket
		C.free(unsafe.Pointer(cpath))
		w := &control.FileWatcher{Dir: dir, Engine: engine, PID: pid, Warn: logf}
		if debug {
			w.Log = logf
		}
		go w.Run(nil)
		debugf("file backend: commands from %s", control.CommandFile(dir))
		return
	}
	path := control.SocketPath(dir, pid)
	// The path goes to C before the socket exists: the host may exit at
	// any moment (this runs on a goroutine when libucp came late), and
	// its exit handler removes only a path it knows.
	cpath := C.CString(path)
	C.ucxf_set_socket_path(cpath)
	C.free(unsafe.Pointer(cpath))
	// The exit handler may already have run its unlink: then a socket made
	// now would outlive the process. ucxf_listen_begin says so, and makes
	// an exit that starts from now on wait for the socket to exist.
	if C.ucxf_listen_begin() != 0 {
		return
	}
	l, err := control.Listen(path)
	C.ucxf_listen_end()
	if err != nil {
		logf("%v; control socket off", err)
		return
	}
	debugf("control socket %s", path)
	go func() {
		if err := control.Serve(l, engine, &control.ServerOptions{Log: logf}); err != nil {
			logf("control socket stopped: %v", err)
		}
	}()
}

func logStats(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		r := engine.Handle(&control.Request{V: control.ProtocolVersion, Cmd: control.CmdStatus})
		if r.Status != nil {
			logf("calls=%d faults=%d enabled=%v strategy=%s", r.Status.Calls, r.Status.Faults, r.Status.Enabled, r.Status.Strategy)
		}
	}
}
