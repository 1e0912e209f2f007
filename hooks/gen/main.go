// Command gen writes the injector's C wrappers (hooks_gen.c, hooks_gen.h,
// hooks_table.c) from the hook table, and the constants Go, C and BPF share
// (abi_gen.h next to them, abi_gen.go in internal/abi) from hooks.ABI;
// `go generate ./hooks` runs it.
package main

import (
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/ucxfault/ucxfault/hooks"
)

func main() {
	out := flag.String("o", "../preload", "directory to write hooks_gen.c, hooks_gen.h, hooks_table.c and abi_gen.h into")
	abiOut := flag.String("abi", "../internal/abi", "directory to write abi_gen.go into")
	flag.Parse()
	files, err := hooks.GenerateC()
	if err != nil {
		log.Fatal(err)
	}
	header, goFile, err := hooks.GenerateABI()
	if err != nil {
		log.Fatal(err)
	}
	files["abi_gen.h"] = header
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(*out, name), body, 0o644); err != nil {
			log.Fatalf("writing %s: %v", name, err)
		}
	}
	if err := os.MkdirAll(*abiOut, 0o755); err != nil {
		log.Fatalf("creating %s: %v", *abiOut, err)
	}
	if err := os.WriteFile(filepath.Join(*abiOut, "abi_gen.go"), goFile, 0o644); err != nil {
		log.Fatalf("writing abi_gen.go: %v", err)
	}
}
