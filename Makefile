# ucxfault: the targets are the commands the README gives.
#   make          build the CLI, the injector library and the example
#   make demo     install what is missing, then run the main job on the example
#   make test     install what is missing, then run every test
#   make test-c   the shared C tables under many threads, with ThreadSanitizer
#   make bench    benchmarks (tables on stdout, JSON in build/bench.json)
#   make generate regenerate the C wrappers, the shared constants and the BPF objects
#   make deps     install the system packages (Debian/Ubuntu)
#   make dist     release archives for amd64 and arm64 in dist/

GO      ?= go
CC      ?= gcc
BUILD   := build
CLI     := $(BUILD)/ucxfault
LIB     := $(BUILD)/libucxfault.so
EXAMPLE := $(BUILD)/rma
GOFILES := $(shell find . -name '*.go' -not -path './build/*') go.mod go.sum
CFILES  := $(wildcard preload/*.c preload/*.h)
# The version the CLI and the injector report (ucxfault version, status):
# git describe, so that two builds of different commits are told apart.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
VERSION_LDFLAGS := -X github.com/ucxfault/ucxfault/internal/version.Version=$(VERSION)
export VERSION
# Bounded fuzzing inside `make test`; `make fuzz` runs longer. A count of
# inputs, not a duration: with a duration, Go's fuzzing coordinator up to
# 1.26 may end a run that found nothing with "context deadline exceeded"
# (go.dev/issue/75804, fixed in Go 1.27), seen on a loaded 2-core machine.
# 100,000 inputs take about 10 s a target here.
FUZZTIME ?= 100000x

# UCX is found with pkg-config: Debian's libucx-dev and a source install both
# ship ucx.pc, so `PKG_CONFIG_PATH=/opt/ucx/lib/pkgconfig make test` builds and
# tests against another UCX. Its headers are system headers to this project
# (-isystem): from 1.18 on, UCS_MASK in ucs/sys/compiler_def.h trips
# -Wsign-compare, which is UCX's to fix, not ours. The tests run with
# LD_LIBRARY_PATH set to the same UCX's libdir.
PKG_CONFIG ?= pkg-config
UCX_CFLAGS = $(patsubst -I%,-isystem %,$(shell $(PKG_CONFIG) --cflags ucx))
UCX_LIBS   = $(shell $(PKG_CONFIG) --libs ucx)
UCX_LIBDIR = $(shell $(PKG_CONFIG) --variable=libdir ucx)
# The injector includes ucp.h for its types only (it binds libucp at run
# time with dlsym), so cgo needs UCX's include path and no library.
export CGO_CFLAGS := $(or $(CGO_CFLAGS),-g -O2) $(UCX_CFLAGS)

.PHONY: all deps deps-generate deps-mpi deps-bench test test-go test-c lint demo bench bench-dir generate \
	check-generate fuzz clean

all: $(CLI) $(LIB) $(EXAMPLE)

$(CLI): $(GOFILES)
	@mkdir -p $(BUILD)
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o $@ ./cmd/ucxfault

$(LIB): $(GOFILES) $(CFILES)
	@mkdir -p $(BUILD)
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -buildmode=c-shared -o $@ ./preload
	@rm -f $(BUILD)/libucxfault.h

$(EXAMPLE): examples/rma/rma.c
	@mkdir -p $(BUILD)
	@$(PKG_CONFIG) --exists ucx || { echo "pkg-config finds no ucx.pc: make deps, or set PKG_CONFIG_PATH to your UCX's lib/pkgconfig"; exit 1; }
	$(CC) -O2 -g -Wall -Wextra -Werror $(UCX_CFLAGS) -o $@ $< $(UCX_LIBS) -lpthread

deps:
	@scripts/deps.sh base generate

deps-mpi:
	@scripts/deps.sh mpi

deps-bench:
	@scripts/deps.sh bench

# The injector's C must be clean under -Wall -Wextra (cgo's own generated
# prologue is not, so the check compiles our files alone).
# staticcheck is pinned and built into build/gobin so every checkout and CI
# run the same analyzers (the module proxy serves it).
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BUILD)/gobin/staticcheck
$(STATICCHECK):
	@mkdir -p $(BUILD)/gobin
	GOBIN=$(abspath $(BUILD)/gobin) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(CFILES) $(STATICCHECK)
	@test -z "$$(gofmt -l $$(find . -name '*.go' -not -path './build/*'))" || \
		{ echo "gofmt needed:"; gofmt -l $$(find . -name '*.go' -not -path './build/*'); exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(STATICCHECK) ./...
	$(CC) -fsyntax-only -Wall -Wextra -Werror $(UCX_CFLAGS) -Ipreload preload/*.c
	scripts/check-preload-deps.sh $(CC) -Wall -Wextra -Werror $(UCX_CFLAGS) -Ipreload

test: deps deps-mpi all lint check-generate check-vagrant test-c test-go

# The injector's shared tables (defer.c, endpoint.c with epfail.c and peer.c, record.c) under many
# threads, built with ThreadSanitizer: a wrong entry or a data race fails it
# (TSan exits 66).
STRESS := $(BUILD)/tables_stress_tsan
STRESS_C := preload/defer.c preload/endpoint.c preload/epfail.c preload/peer.c preload/record.c
$(STRESS): preload/testdata/tables_stress.c $(STRESS_C) $(wildcard preload/*.h)
	@mkdir -p $(BUILD)
	clang -O1 -g -fsanitize=thread -Wall -Wextra -Werror $(UCX_CFLAGS) -Ipreload -o $@ \
		preload/testdata/tables_stress.c $(STRESS_C) -lpthread

test-c: $(STRESS)
	TSAN_OPTIONS=halt_on_error=1 $(STRESS) 200

test-go: all
	UCXFAULT_CLI=$(abspath $(CLI)) UCXFAULT_LIB=$(abspath $(LIB)) UCXFAULT_EXAMPLE=$(abspath $(EXAMPLE)) \
		LD_LIBRARY_PATH=$(UCX_LIBDIR)$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH)) $(GO) test -count=1 -timeout 20m ./...
	$(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime $(FUZZTIME) ./control
	$(GO) test -run '^$$' -fuzz FuzzParseRule -fuzztime $(FUZZTIME) ./control
	$(GO) test -run '^$$' -fuzz FuzzParseRecording -fuzztime $(FUZZTIME) ./recording

fuzz:
	$(MAKE) test-go FUZZTIME=3000000x

demo: deps all
	@scripts/demo.sh $(CLI) $(EXAMPLE)

bench: deps deps-bench all
	@scripts/bench.sh

# The thread sweep, self-contained (build/bench-dir/run.sh), for a machine
# where the project is not built.
bench-dir: all
	@scripts/bench-dir.sh

generate:
	$(GO) generate ./hooks ./observer

# CI fails when the committed generated files differ from a fresh generation.
check-generate: generate
	@git diff --exit-code -- preload/hooks_gen.c preload/hooks_gen.h preload/hooks_table.c preload/abi_gen.h internal/abi/ observer/ || \
		{ echo "generated files are out of date: run make generate and commit"; exit 1; }

clean:
	rm -rf $(BUILD) dist

# Release: dist/ucxfault-linux-{amd64,arm64}.tar.gz, the arm64 one
# cross-compiled (scripts/dist.sh says what they hold).
.PHONY: dist deps-dist check-vagrant

dist: deps deps-dist
	@scripts/dist.sh

deps-dist:
	@scripts/deps.sh dist

# The development VM's definition stays valid where vagrant is installed.
check-vagrant:
	@if command -v vagrant >/dev/null 2>&1; then vagrant validate; \
	else echo "vagrant not installed: skipping vagrant validate"; fi
