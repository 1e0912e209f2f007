#!/bin/sh
# Benchmarks: builds the benchmark programs in bench/ and runs the driver.
# Usage: scripts/bench.sh [interpose|threads|perftest|observer|watch|control|startup|fork|nonucx|observer-rate|observer-flight|all]...
# threads (about a minute on 2 cores) is the thread sweep: every variant of
# the hot path at 1, 2, 4, 8 and 16 threads, best of three (make bench-dir
# packs it to run where the project is not built).
# fork (about 3 minutes) runs a fork-at-start-up UCX program 1000 times on an
# idle machine and 1000 times with every core busy; nonucx (about 2 minutes)
# measures what a process that never uses UCX pays, and runs a shell 10,000 times.
# watch (about a minute, root) runs `ucxfault watch --all` with 32 processes
# attached and up to 4000 process lifetimes with 20,000+ real endpoint failures: its
# resident memory at checkpoints, and what it adds to one failure
# (bench/c/failbench.c, with and without the watch).
# observer-rate (about 2 minutes, root) observes 20,000+ puts a second for a
# minute and reports the events lost (target: none), then runs the flight
# recorder (30 s window) at that rate for 40 s and reports its memory and
# losses (observer-flight alone: that last part, about 45 s).
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
# UCX as the Makefile finds it (pkg-config; its headers are system headers).
ucx_cflags=$(pkg-config --cflags ucx | sed 's/-I/-isystem /g')
$CC -O2 -g -Wall -Wextra -Werror $ucx_cflags -o $BUILD/putbench bench/c/putbench.c $(pkg-config --libs ucx) -lpthread
$CC -O2 -g -Wall -Wextra -Werror -shared -fPIC -o $BUILD/libmininterpose.so bench/c/mininterpose.c -ldl
$CC -O2 -g -Wall -Wextra -Werror -o $BUILD/forkinit e2e/testdata/forkinit.c -lucp -lucs
$CC -O2 -g -Wall -Wextra -Werror $ucx_cflags -o $BUILD/failbench bench/c/failbench.c $(pkg-config --libs ucx)
$GO build -o $BUILD/benchdrv ./bench
echo "## machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), $(ucx_info -v 2>/dev/null | sed -n "s/^# Version /UCX /p")"

# observer_rate: `ucxfault observe` on build/rma doing puts at more than
# 20,000 a second for 60 s; prints the rate and what was lost.
observer_rate() {
	echo "observer at 20,000+ calls/s for 60 s" >&2
	$BUILD/rma --ops 0 --seq put,put,put,put --interval-us 60 --quiet >/dev/null 2>&1 &
	pid=$!
	sleep 1
	rec=$BUILD/bench-observer-rate.json
	$BUILD/ucxfault observe "$pid" --duration 60s --functions ucp_put_nbx --recording "$rec" >/dev/null 2>&1 || true
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$rec" <<'PY' || echo "observer-rate: no recording (needs root)" >&2
import json, sys
p = json.load(open(sys.argv[1]))["processes"][0]
c, lost = p["calls"], p["lost"]
secs = (c[-1]["t_ns"] - c[0]["t_ns"]) / 1e9
n = sum(lost.values())
print("\n### 3b. Observer under a sustained rate\n")
print("| measurement | value | unit | target | verdict |")
print("|---|---:|---|---|---|")
print(f"| calls observed in {secs:.0f} s | {len(c)} | calls | | |")
print(f"| rate | {len(c)/secs:.0f} | calls/s | >= 20,000 | {'met' if len(c)/secs >= 20000 else 'MISSED'} |")
print(f"| events lost | {n} | events | 0 | {'met' if n == 0 else 'MISSED'} |")
PY
}

# observer_flight: the flight recorder (30 s window) on build/rma doing
# puts at more than 20,000 a second for 40 s: the memory its window takes
# and the events lost at that rate.
observer_flight() {
	echo "flight recorder, 30 s window, at 20,000+ calls/s for 40 s" >&2
	$BUILD/rma --ops 0 --seq put,put,put,put --interval-us 60 --quiet >/dev/null 2>&1 &
	pid=$!
	sleep 1
	dir=$(mktemp -d)
	$BUILD/ucxfault observe "$pid" --duration 40s --functions ucp_put_nbx --flight 30s --on-error "$dir" -o json \
		>"$dir/summary.json" 2>"$dir/err.txt" || true
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$dir/summary.json" "$dir/err.txt" <<'PY' || echo "observer-flight: no summary (needs root)" >&2
import json, re, sys
s = json.load(open(sys.argv[1]))["total"]
err = open(sys.argv[2]).read()
m = re.search(r"flight buffers (\S+ \S+) at the end \(bound (\S+ \S+)\), observer resident memory (\S+ \S+) before detaching, (\S+ \S+) at peak", err)
used, bound, rss, peak = m.groups() if m else ("?", "?", "?", "?")
rate = s["calls"] / 40
print("\n### 3c. Flight recorder, 30 s window\n")
print("| measurement | value | unit | target | verdict |")
print("|---|---:|---|---|---|")
print(f"| rate | {rate:.0f} | calls/s | >= 20,000 | {'met' if rate >= 20000 else 'MISSED'} |")
print(f"| window's buffers at the end | {used} | | <= bound {bound} | |")
print(f"| observer resident memory before detaching | {rss} | | | |")
print(f"| observer peak resident memory | {peak} | | | |")
print(f"| events lost | {s['lost']} | events | 0 | {'met' if s['lost'] == 0 else 'MISSED'} |")
PY
	rm -rf "$dir"
}

want_rate=0
want_flight=0
parts=""
for a in "$@"; do
	case "$a" in
	observer-rate) want_rate=1; want_flight=1 ;;
	observer-flight) want_flight=1 ;;
	all) want_rate=1; want_flight=1; parts="$parts all" ;;
	*) parts="$parts $a" ;;
	esac
done
[ $# -eq 0 ] && want_rate=1 && want_flight=1
if [ $# -eq 0 ] || [ -n "$parts" ]; then
	# shellcheck disable=SC2086 # parts is a list of words
	$BUILD/benchdrv -build $BUILD -reps "${BENCH_REPS:-5}" -json "${BENCH_JSON:-$BUILD/bench.json}" $parts
fi
if [ $want_rate = 1 ]; then
	observer_rate
fi
if [ $want_flight = 1 ]; then
	observer_flight
fi
