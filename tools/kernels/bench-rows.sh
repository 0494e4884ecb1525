#!/usr/bin/env bash
# Builds tools/kernels/bench-rows.c with the kernel sources (as check.sh builds the check) and runs
# it: the batched decode GEMVs' time for M = 1, 2, 4, 8 inputs per level, as a multiple of one
# input's.   tools/kernels/bench-rows.sh [K N [RUNS]]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="$root/Sources/CKernels"
out="${TMPDIR:-/tmp}/ck-bench-rows-$(uname -m)-$$"
arch_dir=x86; [ "$(uname -m)" = aarch64 ] && arch_dir=arm
cc="${CC:-clang}"
mapfile -t levels < <(find "$src/$arch_dir" -name '*.c' | sort)
"$cc" -O2 -fno-math-errno -std=gnu11 -Wall -I"$src/include" -o "$out" "$root/tools/kernels/bench-rows.c" \
  "$src/common.c" "$src/dispatch.c" "$src/generic/"*.c "${levels[@]}" -lm -lpthread
trap 'rm -f "$out"' EXIT
"$out" "$@"
