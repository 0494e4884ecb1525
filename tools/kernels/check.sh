#!/usr/bin/env bash
# Builds tools/kernels/check.c with this machine's compiler and checks every kernel level the CPU
# supports against the generic one (or the levels named): tools/kernels/check.sh [LEVEL ...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="$root/Sources/CKernels"
out="${TMPDIR:-/tmp}/ck-check-$(uname -m)-$$"
arch_dir=x86; [ "$(uname -m)" = aarch64 ] && arch_dir=arm
cc="${CC:-clang}"
mapfile -t levels < <(find "$src/$arch_dir" -name '*.c' | sort)
"$cc" -O2 -fno-math-errno -std=gnu11 -Wall -I"$src/include" -o "$out" "$root/tools/kernels/check.c" \
  "$src/common.c" "$src/dispatch.c" "$src/generic/"*.c "${levels[@]}" -lm -lpthread
trap 'rm -f "$out"' EXIT
"$out" "$@"
