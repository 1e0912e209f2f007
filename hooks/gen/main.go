// Command gen writes the injector's C wrappers (hooks_gen.c, hooks_gen.h, hooks_table.c)
// from the hook table; `go generate ./hooks` runs it.
package main

import (
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/ucxfault/ucxfault/hooks"
)

func main() {
	out := flag.String("o", "../preload", "directory to write hooks_gen.c, hooks_gen.h and hooks_table.c into")
	flag.Parse()
	files, err := hooks.GenerateC()
	if err != nil {
		log.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(*out, name), body, 0o644); err != nil {
			log.Fatalf("writing %s: %v", name, err)
		}
	}
}
