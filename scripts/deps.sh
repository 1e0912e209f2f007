#!/bin/sh
# Installs what ucxfault needs on Debian/Ubuntu, skipping what is there.
# Usage: scripts/deps.sh [base|generate|mpi|bench|dist]...
set -eu

want=""
for set in "${@:-base}"; do
	case "$set" in
	base) want="$want gcc make pkg-config libucx-dev ucx-utils bpftool python3" ;;
	generate) want="$want clang llvm libbpf-dev libclang-rt-dev" ;;
	mpi) want="$want openmpi-bin libopenmpi-dev mpich libmpich-dev" ;;
	bench) want="$want bpftrace linux-perf valgrind hyperfine python3" ;;
	dist) want="$want gcc-aarch64-linux-gnu libc6-dev-arm64-cross file" ;;
	*) echo "deps.sh: unknown set '$set' (accepted: base generate mpi bench dist)" >&2; exit 2 ;;
	esac
done

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing packages:$missing; this script installs them with apt-get (Debian/Ubuntu) only" >&2
	exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	sudo=sudo
fi
echo "installing:$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
