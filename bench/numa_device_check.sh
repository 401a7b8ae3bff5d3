#!/usr/bin/env bash
# numa_device_check.sh: what NUMA topology does this machine have, does binding memory to a node
# work, and what does a remote read cost? Needs only bash, gcc and this repository (no network,
# no libnuma, no poolalloc install). Runs in well under 2 minutes.
#
#   bash bench/numa_device_check.sh            # buffer 256 MiB per node, 7 passes
#   NUMA_CHECK_MB=512 NUMA_CHECK_REPS=9 bash bench/numa_device_check.sh
#
# Everything printed is also written to $OUT/numa_device_check.txt when OUT is set.
# When python3 can import cffi, numpy and pytest (and has its headers), it also builds
# poolalloc's C core in a copy of the repository (cffi only, no pip, no network), runs tests/numa
# against the real topology and bench/bench_numa.py; NUMA_CHECK_TESTS=0 skips that step.
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
    local py=python3 src=$work/src
    [ "${NUMA_CHECK_TESTS:-1}" = 0 ] && { echo "skipped (NUMA_CHECK_TESTS=0)"; return; }
    if ! $py -c 'import cffi, numpy, pytest' 2>/dev/null; then
        echo "python3 lacks cffi/numpy/pytest: poolalloc tests skipped (no network here)"
        return
    fi
    mkdir -p "$src"  # build in a copy: no pip, no setuptools version floor, repository untouched
    tar -C "$repo" --exclude='./.venv*' --exclude=./.git --exclude=./build -cf - . |
        tar -C "$src" -xf -
    # cffi's compile step reads the pyproject.toml of its working directory, so run it
    # elsewhere (old setuptools rejects our metadata) and copy the module into the copy.
    mkdir -p "$work/build"
    (cd "$work/build" && timeout 90 $py "$src/native/build_ffi.py" >"$work/build.log" 2>&1 &&
        cp poolalloc/_native*.so "$src/poolalloc/") ||
        { echo "build failed:"; grep -iE "error" "$work/build.log" | head -15; return; }
    (cd "$work" && PYTHONPATH=$src timeout 60 $py -m pytest -q -p no:cacheprovider \
        -p no:memray -o addopts="--import-mode=importlib" "$src/tests/numa" 2>&1 | tail -25)
    section "bench/bench_numa.py (local vs remote read, numa_node='local' vs unbound)"
    (cd "$work" && PYTHONPATH=$src timeout 60 $py "$src/bench/bench_numa.py" \
        --repeats 5 --mib "$mb" --pairs 5000 2>&1)
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
