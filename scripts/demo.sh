#!/bin/sh
# The main job on the bundled example: run it under the injector, watch it,
# change the faults while it runs, and show what the program saw.
# Usage: scripts/demo.sh build/ucxfault build/rma
set -eu
cli=$(realpath "$1")
rma=$(realpath "$2")
dir=$(mktemp -d /tmp/ucxf-demo.XXXXXX)
out="$dir/rma.out"
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
ucxf() { "$cli" --socket-dir "$dir" "$@"; }
ops() { grep -c '^OP ' "$out" || true; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "ucxfault inject --probability 5 --seed 1 -- rma --ops 0 --interval-us 1000 --seq put,get,flush"
# ucxfault inject replaces itself with the program: $! is the program's pid.
"$cli" --socket-dir "$dir" inject --probability 5 --seed 1 -- "$rma" --ops 0 --interval-us 1000 --seq put,get,flush >"$out" 2>&1 &
pid=$!
i=0
until grep -q '^READY' "$out"; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "the example did not start:"; cat "$out"; exit 1
	fi
	sleep 0.1
done
sleep 1
say "ucxfault status"
ucxf status
p1=$(ops)

say "ucxfault probability 50"
ucxf probability 50
sleep 1
p2=$(ops)

say "ucxfault error-codes -- ENDPOINT_TIMEOUT,CONNECTION_RESET"
ucxf error-codes -- ENDPOINT_TIMEOUT,CONNECTION_RESET
sleep 1
p3=$(ops)

say "ucxfault pattern XOOO"
ucxf pattern XOOO
sleep 1
say "ucxfault status --detailed"
ucxf status --detailed
p4=$(ops)
kill -TERM "$pid"
wait "$pid" || true
pid=""

say "what the program saw (its OP lines, by phase)"
awk -v p1="$p1" -v p2="$p2" -v p3="$p3" -v p4="$p4" '
/^OP / {
	n++
	phase = n <= p1 ? "1 random 5%" : n <= p2 ? "2 random 50%" : n <= p3 ? "3 random 50%, -80/-25" : n <= p4 ? "4 pattern XOOO" : "5 (after status)"
	ops[phase]++
	split($7, s, "="); split($8, name, "=")
	if (s[2] != 0) { failed[phase]++; codes[phase, s[2] " " name[2]]++ }
}
END {
	for (ph in ops) order[++k] = ph
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (order[j] < order[i]) { t = order[i]; order[i] = order[j]; order[j] = t }
	for (i = 1; i <= k; i++) {
		ph = order[i]
		printf "phase %-24s %6d ops %6d failed (%.1f%%)\n", ph, ops[ph], failed[ph], 100 * failed[ph] / ops[ph]
		for (key in codes) { split(key, kk, SUBSEP); if (kk[1] == ph) printf "      %-40s %6d\n", kk[2], codes[key] }
	}
}' "$out"
grep '^DONE' "$out"
