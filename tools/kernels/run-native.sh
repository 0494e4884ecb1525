#!/usr/bin/env bash
# Builds tools/kernels/DRIVER.c with this machine's compiler and every kernel source of its
# architecture, then runs it with ARGS: tools/kernels/run-native.sh DRIVER [ARGS ...]
# (check.sh, bench-rows.sh and bench-gemm.sh use it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
driver="$1"; shift
src="$root/Sources/CKernels"
out="${TMPDIR:-/tmp}/ck-$driver-$(uname -m)-$$"
arch_dir=x86; [ "$(uname -m)" = aarch64 ] && arch_dir=arm
cc="${CC:-clang}"
mapfile -t levels < <(find "$src/$arch_dir" -name '*.c' | sort)
"$cc" -O2 -fno-math-errno -std=gnu11 -Wall -I"$src/include" -o "$out" "$root/tools/kernels/$driver.c" \
  "$src/common.c" "$src/dispatch.c" "$src/generic/"*.c "${levels[@]}" -lm -lpthread
trap 'rm -f "$out"' EXIT
"$out" "$@"
