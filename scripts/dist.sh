#!/bin/sh
# Builds the release archives into dist/:
#   dist/ucxfault-linux-amd64.tar.gz
#   dist/ucxfault-linux-arm64.tar.gz   (cross-compiled)
#   dist/SHA256SUMS
# Each holds one directory ucxfault-linux-ARCH/ with the CLI, libucxfault.so
# beside it (where `ucxfault inject` looks first), README.md, LICENSE, man
# pages (man/man1) and bash, zsh and fish completions (completions/).
#
# The CLI is pure Go and built with CGO_ENABLED=0: a static binary that runs
# on any distribution. The injector is cgo and needs a C compiler for its
# architecture (aarch64-linux-gnu-gcc for arm64: scripts/deps.sh dist) and the
# UCX headers, but no UCX library: it finds libucp at run time with dlsym. The
# cross compiler is pointed at a directory that holds only the host's UCX
# headers (ucp, ucs, uct, ucm), so that no host libc header gets mixed in.
#
# Man pages and archive entries are dated SOURCE_DATE_EPOCH when it is set.
set -eu

GO=${GO:-go}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$root/dist
epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
export SOURCE_DATE_EPOCH=$epoch

die() {
	echo "dist.sh: $*" >&2
	exit 1
}

for f in README.md LICENSE; do
	[ -f "$f" ] || die "$f is missing at the repository root; the archives ship it"
done
ucx_inc=$(pkg-config --variable=includedir ucx 2>/dev/null) || die "pkg-config finds no ucx.pc: scripts/deps.sh base, or set PKG_CONFIG_PATH"
[ -f "$ucx_inc/ucp/api/ucp.h" ] || die "UCX headers not found ($ucx_inc/ucp/api/ucp.h): scripts/deps.sh base"
command -v file >/dev/null || die "file not found: scripts/deps.sh dist"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Headers of UCX only, for the cross compiler.
mkdir "$work/include"
for d in ucp ucs uct ucm; do
	[ -d "$ucx_inc/$d" ] && ln -s "$ucx_inc/$d" "$work/include/$d"
done

# Man pages and completions do not depend on the architecture: generate them
# once with a CLI for this machine.
CGO_ENABLED=0 "$GO" build -o "$work/ucxfault-host" ./cmd/ucxfault
"$work/ucxfault-host" gen-docs "$work/docs"
[ -f "$work/docs/man/man1/ucxfault-inject.1" ] || die "gen-docs wrote no man page for inject"
grep -q 'UCX_FAULT_' "$work/docs/man/man1/ucxfault-inject.1" || die "the inject man page lost the underscores of UCX_FAULT_*"

# check FILE WANT: `file` must say WANT (x86-64 or ARM aarch64).
check() {
	desc=$(file -b "$1")
	case "$desc" in
	*"$2"*) echo "  $(basename "$1"): $desc" | cut -c1-140 ;;
	*) die "$1 is not $2: $desc" ;;
	esac
}

# The version both programs report (ucxfault version, status).
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
vflag="-X github.com/ucxfault/ucxfault/internal/version.Version=$version"

mkdir -p "$out"
for arch in amd64 arm64; do
	case "$arch" in
	amd64) cc=${CC_AMD64:-gcc} want=x86-64 ;;
	arm64) cc=${CC_ARM64:-aarch64-linux-gnu-gcc} want="ARM aarch64" ;;
	esac
	command -v "$cc" >/dev/null || die "$cc not found (the $arch C compiler): scripts/deps.sh dist"
	name=ucxfault-linux-$arch
	dir=$work/$name
	mkdir -p "$dir"
	echo "building $name"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch \
		"$GO" build -trimpath -ldflags="-s -w $vflag" -o "$dir/ucxfault" ./cmd/ucxfault
	CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc \
		CGO_CFLAGS="-O2 -g -isystem $work/include" \
		"$GO" build -trimpath -ldflags="-s -w $vflag" -buildmode=c-shared -o "$dir/libucxfault.so" ./preload
	rm -f "$dir/libucxfault.h"
	check "$dir/ucxfault" "$want"
	check "$dir/libucxfault.so" "$want"
	# The injector must not link libucp: it binds to the application's.
	if readelf -d "$dir/libucxfault.so" | grep NEEDED | grep -q 'libuc[ps]'; then
		die "$dir/libucxfault.so links a UCX library; it must resolve libucp at run time"
	fi
	glibc=$(readelf --dyn-syms -W "$dir/libucxfault.so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
	echo "  libucxfault.so needs glibc ${glibc#GLIBC_} or later"
	cp README.md LICENSE "$dir/"
	cp -R "$work/docs/man" "$work/docs/completions" "$dir/"
	tar -C "$work" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
		-cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"
	echo "wrote dist/$name.tar.gz ($(du -k "$out/$name.tar.gz" | cut -f1) KiB)"
done
(cd "$out" && sha256sum ucxfault-linux-amd64.tar.gz ucxfault-linux-arm64.tar.gz >SHA256SUMS)
echo "wrote dist/SHA256SUMS"
