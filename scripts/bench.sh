#!/bin/sh
# Benchmarks: builds the benchmark programs in bench/ and runs the driver.
# Usage: scripts/bench.sh [interpose|perftest|observer|control|startup|all]...
# Environment: BENCH_REPS (default 5), BENCH_JSON (default build/bench.json).
# Tables go to stdout (markdown), progress to stderr, results to BENCH_JSON.
# Needs `make all` first (make bench does it); the observer part needs root.
set -eu
cd "$(dirname "$0")/.."
BUILD=build
CC=${CC:-gcc}
GO=${GO:-go}
for f in ucxfault libucxfault.so rma; do
	[ -e "$BUILD/$f" ] || { echo "bench.sh: $BUILD/$f missing: run make all" >&2; exit 1; }
done
echo "building the benchmark programs" >&2
$CC -O2 -g -Wall -Wextra -Werror -o $BUILD/putbench bench/c/putbench.c -lucp -lucs -lpthread
$CC -O2 -g -Wall -Wextra -Werror -shared -fPIC -o $BUILD/libmininterpose.so bench/c/mininterpose.c -ldl
$GO build -o $BUILD/benchdrv ./bench
echo "## machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), $(ucx_info -v 2>/dev/null | sed -n "s/^# Version /UCX /p")"
exec $BUILD/benchdrv -build $BUILD -reps "${BENCH_REPS:-5}" -json "${BENCH_JSON:-$BUILD/bench.json}" "$@"
