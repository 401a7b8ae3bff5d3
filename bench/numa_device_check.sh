#!/usr/bin/env bash
# numa_device_check.sh: what NUMA topology does this machine have, does binding memory to a node
# work, and what does a remote read cost? Needs only bash, gcc and this repository (no network,
# no libnuma, no poolalloc install). Runs in well under 2 minutes.
#
#   bash bench/numa_device_check.sh            # buffer 256 MiB per node, 7 passes
#   NUMA_CHECK_MB=512 NUMA_CHECK_REPS=9 bash bench/numa_device_check.sh
#
# Everything printed is also written to $OUT/numa_device_check.txt when OUT is set.
# When python3 can import cffi, numpy and pytest (and setuptools >= 77), it also builds
# poolalloc into a throw-away venv (no network: --no-index, --no-build-isolation) and runs
# tests/numa against the real topology; set NUMA_CHECK_TESTS=0 to skip that step.
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
report=$work/numa_device_check.txt
mb=${NUMA_CHECK_MB:-256}
reps=${NUMA_CHECK_REPS:-7}

section() { printf '\n== %s ==\n' "$1"; }

show_sysfs() {
    local root=/sys/devices/system/node f d
    if [ ! -d "$root" ]; then
        echo "no $root: the kernel publishes no NUMA tree (one node, or NUMA disabled)"
        return
    fi
    for f in online possible has_memory has_normal_memory has_cpu; do
        [ -r "$root/$f" ] && printf '%-18s %s\n' "$f:" "$(cat "$root/$f")"
    done
    for d in "$root"/node[0-9]*; do
        printf '%s: cpus %s; distance %s; %s\n' "$(basename "$d")" "$(cat "$d/cpulist")" \
            "$(cat "$d/distance")" \
            "$(grep -E 'MemTotal|MemFree' "$d/meminfo" | awk '{printf "%s %s kB  ", $3, $4}')"
    done
}

run_c_check() {
    if ! command -v gcc >/dev/null; then
        echo "gcc not found: placement and bandwidth check skipped"
        return
    fi
    gcc -O2 -std=c11 -Wall -Wextra -o "$work/numa_check" "$here/numa_check.c" || return
    timeout 90 "$work/numa_check" "$mb" "$reps"
    echo "(numa_check exit status $?)"
}

run_poolalloc_tests() {
    local py=python3
    [ "${NUMA_CHECK_TESTS:-1}" = 0 ] && { echo "skipped (NUMA_CHECK_TESTS=0)"; return; }
    if ! $py -c 'import cffi, numpy, pytest, setuptools' 2>/dev/null; then
        echo "python3 lacks cffi/numpy/pytest/setuptools: poolalloc tests skipped (no network here)"
        return
    fi
    $py -m venv --system-site-packages "$work/venv" || return
    mkdir -p "$work/src"  # build a copy: an in-tree build would litter the repository
    tar -C "$repo" --exclude='./.venv*' --exclude=./.git --exclude=./build -cf - . |
        tar -C "$work/src" -xf -
    timeout 60 "$work/venv/bin/pip" install -q --no-index --no-build-isolation --no-deps \
        "$work/src" >"$work/pip.log" 2>&1 || { echo "build failed:"; tail -5 "$work/pip.log"; return; }
    (cd "$work" && timeout 60 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
        -p no:memray -o addopts="--import-mode=importlib" "$work/src/tests/numa" 2>&1 | tail -25)
}

{
    section "machine"
    date -u
    uname -a
    section "lscpu"
    lscpu 2>/dev/null || grep -m1 'model name' /proc/cpuinfo
    section "sysfs node tree"
    show_sysfs
    section "this process may use"
    grep -E 'Cpus_allowed_list|Mems_allowed_list' /proc/self/status
    section "numactl -H"
    if command -v numactl >/dev/null; then numactl -H; else echo "numactl not installed"; fi
    section "placement (mbind, get_mempolicy, move_pages) and read bandwidth"
    run_c_check
    section "poolalloc tests/numa on this machine"
    run_poolalloc_tests
} 2>&1 | tee "$report"

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$report" "$OUT/numa_device_check.txt"
    echo "report written to $OUT/numa_device_check.txt"
fi
