#!/usr/bin/env bash
# Checks the arm64 kernel levels on an x86-64 machine: cross-compiles tools/kernels/check.c with
# the kernel sources for aarch64 (clang --target=aarch64-linux-gnu over Debian's cross sysroot,
# crossbuild-essential-arm64) and runs it under qemu-user once per CPU model, so that each level
# runs on a CPU that has it and the level chain that dispatch.c detects is checked as well:
#   max          every level: generic neon neon-dotprod neon-i8mm
#   neoverse-n1  NEON + dotprod: generic neon neon-dotprod
#   cortex-a53   NEON only: generic neon
# Before that it compiles every kernel source on its own with -O2 -Wall -Werror, the way the
# Swift package builds them (no -march flags: extensions come from target attributes).
#
#   tools/kernels/check-arm64.sh [LEVEL ...]
# LEVELs are passed to the check binary of every CPU model that has them (models with none of
# them are skipped). Environment: CC (default clang), QEMU (default qemu-aarch64), SYSROOT
# (default /usr/aarch64-linux-gnu), CPUS (default "max neoverse-n1 cortex-a53"), LIMIT (seconds
# one run may take, default 1800: a kernel that never returns fails instead of hanging CI).
# Ends with "arm64 kernels: N passed, N failed"; exits 1 on any failure, 2 on a bad argument or
# a missing tool.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="$root/Sources/CKernels"
cc="${CC:-clang}"
qemu="${QEMU:-qemu-aarch64}"
sysroot="${SYSROOT:-/usr/aarch64-linux-gnu}"
read -r -a cpus <<< "${CPUS:-max neoverse-n1 cortex-a53}"
limit="${LIMIT:-1800}"
target=aarch64-linux-gnu
all_levels="generic neon neon-dotprod neon-i8mm"

for tool in "$cc" "$qemu" timeout; do
  command -v "$tool" > /dev/null || { echo "check-arm64: $tool not found (needs clang and qemu-user)"; exit 2; }
done
[ -d "$sysroot" ] || { echo "check-arm64: no aarch64 sysroot at $sysroot (crossbuild-essential-arm64)"; exit 2; }
for level in "$@"; do
  case " $all_levels " in *" $level "*) ;; *) echo "check-arm64: unknown level '$level' (levels: $all_levels)"; exit 2 ;; esac
done

# The levels dispatch.c must find on a CPU model (empty: not checked).
expected_levels() {
  case "$1" in
    max) echo "generic neon neon-dotprod neon-i8mm" ;;
    neoverse-n1) echo "generic neon neon-dotprod" ;;
    cortex-a53) echo "generic neon" ;;
    *) echo "" ;;
  esac
}

work="$(mktemp -d "${TMPDIR:-/tmp}/ck-check-arm64.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mapfile -t level_sources < <(find "$src/arm" -name '*.c' | sort)
sources=("$src/common.c" "$src/dispatch.c" "$src/generic/"*.c "${level_sources[@]}")
failed=0
passed=0

# 1. Each source alone, as the package compiles it, warnings being errors.
warned=0
for f in "${sources[@]}"; do
  if ! "$cc" --target="$target" -O2 -Wall -Werror -fno-math-errno -I"$src/include" -c "$f" -o "$work/unit.o" \
      > "$work/unit.log" 2>&1; then
    echo "compile FAILED: ${f#"$root"/}"
    cat "$work/unit.log"
    warned=$((warned + 1))
  fi
done
if [ "$warned" -eq 0 ]; then
  echo "compile -O2 -Wall: ${#sources[@]} sources clean"
else
  failed=$((failed + warned))
fi

# 2. The check binary.
bin="$work/check"
if ! "$cc" --target="$target" -O2 -fno-math-errno -std=gnu11 -Wall -I"$src/include" -o "$bin" \
    "$root/tools/kernels/check.c" "${sources[@]}" -lm -lpthread > "$work/build.log" 2>&1; then
  cat "$work/build.log"
  echo "arm64 kernels: $passed passed, $((failed + 1)) failed (the check did not build)"
  exit 1
fi
[ -s "$work/build.log" ] && cat "$work/build.log"

# 3. One run per CPU model, all at once (qemu is single-threaded per process); output in order.
pids=()
for cpu in "${cpus[@]}"; do
  (
    log="$work/run-$cpu.log"
    # a level name no chain has makes the binary list this CPU's levels and stop
    chain="$(timeout 120 "$qemu" -cpu "$cpu" -L "$sysroot" "$bin" '?' 2>&1 | sed -n 's/.*(levels: \(.*\))$/\1/p' || true)"
    echo "$chain" > "$work/chain-$cpu"
    args=()
    for level in "$@"; do
      case " $chain " in *" $level "*) args+=("$level") ;; esac
    done
    if [ "$#" -gt 0 ] && [ "${#args[@]}" -eq 0 ]; then
      echo "skipped" > "$work/rc-$cpu"
      exit 0
    fi
    set +e
    timeout "$limit" "$qemu" -cpu "$cpu" -L "$sysroot" "$bin" "${args[@]}" > "$log" 2>&1
    echo $? > "$work/rc-$cpu"
  ) &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done

for cpu in "${cpus[@]}"; do
  chain="$(cat "$work/chain-$cpu")"
  rc="$(cat "$work/rc-$cpu")"
  echo "== qemu -cpu $cpu: levels ${chain:-(none: the binary did not start)}"
  want="$(expected_levels "$cpu")"
  if [ -n "$want" ] && [ "$chain" != "$want" ]; then
    echo "FAIL level chain on $cpu: found '$chain', expected '$want'"
    failed=$((failed + 1))
  fi
  if [ "$rc" = skipped ]; then
    echo "   (no requested level on this CPU: skipped)"
    continue
  fi
  log="$work/run-$cpu.log"
  sed 's/^/   /' "$log"
  summary="$(grep -E '^kernels: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)"
  if [ -z "$summary" ]; then
    echo "FAIL $cpu: the check stopped without a summary (exit status $rc; 124: past LIMIT)"
    failed=$((failed + 1))
    continue
  fi
  p="$(echo "$summary" | sed -E 's/^kernels: ([0-9]+) passed.*/\1/')"
  f="$(echo "$summary" | sed -E 's/.* ([0-9]+) failed$/\1/')"
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$f" -eq 0 ] && [ "$rc" -ne 0 ]; then
    echo "FAIL $cpu: exit status $rc"
    failed=$((failed + 1))
  fi
done

echo "arm64 kernels: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
