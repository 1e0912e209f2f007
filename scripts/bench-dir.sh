#!/bin/sh
# Makes build/bench-dir: the thread sweep of `make bench`, self-contained,
# to run on a machine where ucxfault is not built (and UCX, Go or a
# compiler may be missing): the library, the CLI, the benchmark programs,
# the driver, Debian's UCX libraries with the C libraries they and the
# programs link, and the loader that runs them all (ld-linux-x86-64.so.2,
# or the machine's own, --library-path lib). Copy the directory over and run ./run.sh there.
# Needs `make all` first (make bench-dir does it).
set -eu
cd "$(dirname "$0")/.."
BUILD=build
OUT=$BUILD/bench-dir
CC=${CC:-gcc}
GO=${GO:-go}
for f in ucxfault libucxfault.so; do
	[ -e "$BUILD/$f" ] || { echo "bench-dir.sh: $BUILD/$f missing: run make all" >&2; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT/lib/ucx"
ucx_cflags=$(pkg-config --cflags ucx | sed 's/-I/-isystem /g')
$CC -O2 -g -Wall -Wextra -Werror $ucx_cflags -o "$OUT/putbench" bench/c/putbench.c $(pkg-config --libs ucx) -lpthread
$CC -O2 -g -Wall -Wextra -Werror -shared -fPIC -o "$OUT/libmininterpose.so" bench/c/mininterpose.c -ldl
CGO_ENABLED=0 $GO build -o "$OUT/benchdrv" ./bench
cp "$BUILD/ucxfault" "$BUILD/libucxfault.so" "$OUT/"

# UCX loads its transport modules from the directory "ucx" next to
# libucs: the shared-memory one (cma) comes along, the InfiniBand ones
# would need the verbs libraries and are left out (UCX skips what is not
# there).
ucs=$(ldd "$OUT/putbench" | awk '$1 ~ /^libucs\.so/ {print $3}')
moddir=$(dirname "$ucs")/ucx
for m in "$moddir"/libuct_cma.so.0; do
	[ -e "$m" ] && cp -L "$m" "$OUT/lib/ucx/"
done
# Every library the programs and modules link, by the name they ask for,
# and the loader.
for bin in "$OUT/putbench" "$OUT/libucxfault.so" "$OUT/libmininterpose.so" "$OUT/ucxfault" "$OUT"/lib/ucx/*; do
	[ -e "$bin" ] || continue
	ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
		[ -e "$OUT/lib/$name" ] || cp -L "$path" "$OUT/lib/$name"
	done
done
loader=$(ldd "$OUT/putbench" | awk '$1 ~ /ld-linux/ {print $1}')
cp -L "$loader" "$OUT/lib/$(basename "$loader")"

cat >"$OUT/run.sh" <<'RUN'
#!/bin/sh
# The thread sweep of ucxfault's `make bench`, from this directory:
#   ./run.sh            1, 2, 4, 8 and 16 threads, every variant, best of three
#   ./run.sh -sweep-threads 64 threads
# Everything runs through the loader in lib/ with the libraries in lib/
# (Debian's UCX and C libraries), whatever the machine has installed.
# Tables go to stdout (markdown), the samples to bench.json here
# (BENCH_JSON to change it).
set -eu
d=$(cd "$(dirname "$0")" && pwd)
echo "## machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), $(date -u +%Y-%m-%d)"
[ $# -eq 0 ] && set -- threads
ld=$(ls "$d"/lib/ld-linux-*)
exec "$d/benchdrv" -build "$d" -loader "$ld" -libpath "$d/lib" \
	-json "${BENCH_JSON:-$d/bench.json}" "$@"
RUN
chmod +x "$OUT/run.sh" scripts/bench-dir.sh 2>/dev/null || true
du -sh "$OUT" | awk '{print "bench-dir.sh: " $2 " (" $1 "): copy it over and run ./run.sh there"}'
