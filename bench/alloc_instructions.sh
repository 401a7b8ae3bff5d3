#!/usr/bin/env bash
# Instructions per alloc+free pair of the native allocator, counted by callgrind (deterministic,
# unlike time on a shared machine). Builds bench/alloc_instructions.c against a core source
# folder (default native/core; pass another, e.g. a copy of an older tree's native/core, to
# compare) and runs it at two lengths for each workload; prints the difference per pair (the
# driver's loop and wrappers included) and the hit paths' share (pa_alloc + pa_free only).
# Args: [core folder] [include folder]. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
core="${1:-native/core}"
inc="${2:-native/include}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
gcc -std=c11 -D_GNU_SOURCE -O2 -I"$inc" -I"$core" bench/alloc_instructions.c "$core"/*.c \
  -o "$out/ai" -ldl -pthread
ir() { # total Ir, pa_alloc Ir, pa_free Ir of one run
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$out/ai" "$1" "$2" >/dev/null 2>&1
  callgrind_annotate "$out/cg" 2>/dev/null | awk '
    /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
    /:pa_alloc / { gsub(",", "", $1); a = $1 }
    /:pa_free / { gsub(",", "", $1); f = $1 }
    END { print total, a + 0, f + 0 }'
}
printf '| workload | instructions per pair | pa_alloc + pa_free per pair |\n|---|---|---|\n'
for size in 64 4096 65536 0; do
  read -r t1 a1 f1 < <(ir "$size" 200)
  read -r t2 a2 f2 < <(ir "$size" 1200)
  name=$([ "$size" = 0 ] && echo mixed || echo "fixed $size B")
  awk -v n="$name" -v t="$((t2 - t1))" -v h="$((a2 + f2 - a1 - f1))" \
    'BEGIN { printf "| %s | %.1f | %.1f |\n", n, t / 1e6, h / 1e6 }'
done
