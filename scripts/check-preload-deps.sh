#!/bin/sh
# Fails when a file of preload/ depends on a file that depends on it.
#
# Each preload/*.c is compiled alone with the compiler command given as
# arguments (the flags of `make lint`); file A depends on file B when nm
# lists a symbol that A leaves undefined and B defines. The edges go to
# tsort, which reports any cycle between two or more files. The layout this
# keeps is described in docs/architecture.md ("How ucxfault is built").
#
# Usage: scripts/check-preload-deps.sh CC [FLAGS...]
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

for src in preload/*.c; do
	f=$(basename "$src" .c)
	"$@" -c -o "$tmp/$f.o" "$src"
	nm --defined-only -g "$tmp/$f.o" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/$f.def"
	nm -u "$tmp/$f.o" | awk '{ print $NF }' | sort -u >"$tmp/$f.undef"
done

: >"$tmp/edges"
for a in "$tmp"/*.undef; do
	fa=$(basename "$a" .undef)
	echo "$fa $fa" >>"$tmp/edges" # every file is a node, even with no edge
	for b in "$tmp"/*.def; do
		fb=$(basename "$b" .def)
		[ "$fa" = "$fb" ] && continue
		syms=$(comm -12 "$a" "$b" | tr '\n' ' ')
		if [ -n "$syms" ]; then
			echo "$fa $fb" >>"$tmp/edges"
			echo "$fa.c -> $fb.c: $syms" >>"$tmp/why"
		fi
	done
done

if ! tsort "$tmp/edges" >/dev/null 2>"$tmp/loop"; then
	echo "preload/: files that depend on each other (a cycle):" >&2
	sed 's/^tsort: /  /' "$tmp/loop" >&2
	echo "dependencies (file -> file: symbols):" >&2
	sed 's/^/  /' "$tmp/why" >&2
	exit 1
fi
