#!/usr/bin/env bash
# Builds the libFuzzer harnesses in tools/fuzz and runs each for SECONDS (default 600), one at a
# time, with AddressSanitizer. Corpus growth, logs and crash files go to a scratch directory
# ($FUZZ_WORK, default tools/fuzz/.build/work; never committed); the committed seeds in
# tools/fuzz/corpus/<target> are only read.
#
#   tools/fuzz/run.sh [SECONDS] [TARGET...]      targets: see `tools/fuzz/run.sh --list`
#
# Environment: FUZZ_WORK (scratch directory), FUZZ_TMP (where harnesses that need a path write
# each input; default /dev/shm), FUZZ_JOBS (build jobs, default 1),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-max_len=65536"), FUZZ_SKIP_BUILD=1 (reuse the binaries).
# Prints, per target: executions, executions per second, new corpus units, peak memory, and
# whether it crashed (with the crash file). Exits 1 when any target crashed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${FUZZ_WORK:-$HERE/.build/work}"
JOBS="${FUZZ_JOBS:-1}"

# target name → SwiftPM product (or "clang" for the C harness), in run order.
TARGETS=(safetensors config tokenizer-json tokenizer-model npy npz bigvision image image-shims location server-json server-multipart)
product() {
    case "$1" in
        safetensors) echo FuzzSafeTensors ;;
        config) echo FuzzConfig ;;
        tokenizer-json) echo FuzzTokenizerJSON ;;
        tokenizer-model) echo FuzzTokenizerModel ;;
        npy) echo FuzzNpy ;;
        npz) echo FuzzNpz ;;
        bigvision) echo FuzzBigVision ;;
        image) echo FuzzImage ;;
        image-shims) echo clang ;;
        location) echo FuzzLocation ;;
        server-json) echo FuzzServerJSON ;;
        server-multipart) echo FuzzServerMultipart ;;
        *) return 1 ;;
    esac
}
# Seeds: the image-shims harness shares the image decoders' corpus.
seeds() { if [ "$1" = image-shims ]; then echo "$HERE/corpus/image"; else echo "$HERE/corpus/$1"; fi; }

if [ "${1:-}" = "--list" ] || [ "${1:-}" = "-l" ]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; fi
DURATION="${1:-600}"
case "$DURATION" in ''|*[!0-9]*) echo "run.sh: SECONDS must be a whole number, got '$DURATION'" >&2; exit 2 ;; esac
shift || true
if [ $# -gt 0 ]; then SELECTED=("$@"); else SELECTED=("${TARGETS[@]}"); fi
for t in "${SELECTED[@]}"; do
    product "$t" >/dev/null || { echo "run.sh: unknown target '$t' (known: ${TARGETS[*]})" >&2; exit 2; }
done

SWIFT="${SWIFT:-swift}"
CLANG="${CLANG:-$(dirname "$(command -v "$SWIFT")")/clang}"
[ -x "$CLANG" ] || CLANG="$(command -v clang || true)"
LIBFUZZER="$("$CLANG" -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null || true)"
[ "$(uname -m)" = aarch64 ] && LIBFUZZER="$("$CLANG" -print-file-name=libclang_rt.fuzzer_no_main-aarch64.a 2>/dev/null || true)"
if [ -z "$CLANG" ] || [ ! -f "$LIBFUZZER" ]; then
    echo "run.sh: this toolchain has no libFuzzer runtime (libclang_rt.fuzzer_no_main); use a swift.org Linux toolchain" >&2
    exit 2
fi
BIN="$HERE/.build/release"
mkdir -p "$WORK"

# Swift can only add libFuzzer's coverage instrumentation next to a sanitizer, and of those only
# AddressSanitizer makes sense here (`-sanitize=fuzzer` itself cannot build the root package: see
# Package.swift). Check that it works before a long build.
SANITIZER=address
probe="$WORK/probe"
mkdir -p "$probe"
echo 'public func f(_ x: [Int]) -> Int { x.count > 2 ? x[1] : 0 }' > "$probe/p.swift"
if ! "${SWIFT}c" -sanitize=address -sanitize-coverage=edge,trace-cmp,indirect-calls,inline-8bit-counters,pc-table \
        -parse-as-library -emit-library "$probe/p.swift" -o "$probe/libp.so" >"$probe/log" 2>&1; then
    echo "run.sh: this toolchain cannot build Swift with AddressSanitizer and coverage instrumentation:" >&2
    head -3 "$probe/log" >&2
    exit 2
fi
COVERAGE=edge,trace-cmp,indirect-calls,inline-8bit-counters,pc-table

build() {
    [ "${FUZZ_SKIP_BUILD:-0}" = 1 ] && return 0
    local t p
    for t in "${SELECTED[@]}"; do
        p="$(product "$t")"
        if [ "$p" = clang ]; then
            echo "== building fuzz-image-shims (the C shim alone) with clang -fsanitize=fuzzer,$SANITIZER"
            mkdir -p "$BIN"
            "$CLANG" -g -O1 -fsanitize=fuzzer,"$SANITIZER" -I"$ROOT/Sources/CImageShims/include" \
                "$ROOT/Sources/CImageShims/shims.c" "$HERE/shims/fuzz_image_shims.c" \
                -ljpeg -lpng16 -lz -ldl -lpthread -o "$BIN/fuzz-image-shims" || return 1
            continue
        fi
        echo "== building $p with -sanitize=$SANITIZER and libFuzzer coverage (the first build takes long)"
        # Flags for every module, the root package's and its dependencies' included, so that the
        # library code is instrumented; libFuzzer's driver is linked into every executable.
        if ! (cd "$HERE" && "$SWIFT" build -c release -j "$JOBS" --product "$p" \
                -Xswiftc -sanitize="$SANITIZER" -Xswiftc -sanitize-coverage="$COVERAGE" \
                -Xcc -fsanitize=fuzzer-no-link,"$SANITIZER" \
                -Xlinker "$LIBFUZZER" -Xlinker -lstdc++) >"$WORK/build-$p.log" 2>&1; then
            grep -E "error:" "$WORK/build-$p.log" | head -20 >&2
            echo "run.sh: building $p failed; see $WORK/build-$p.log" >&2
            return 1
        fi
    done
}
build || exit 1

binary() { if [ "$(product "$1")" = clang ]; then echo "$BIN/fuzz-image-shims"; else echo "$BIN/$(product "$1")"; fi; }

# Swift's runtime keeps caches alive to the end of the process, which LeakSanitizer reports.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Harnesses whose API takes a path rewrite a scratch file per input: keep it in memory when possible
# (several times faster than a disk).
if [ -z "${FUZZ_TMP:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then TMPROOT="/dev/shm/paligemma-fuzz-$$"
else TMPROOT="${FUZZ_TMP:-$WORK/tmp}"; fi

SUMMARY="$WORK/summary.tsv"
printf 'date\ttarget\tseconds\texecutions\texec_per_s\tnew_units\tpeak_rss_mb\tresult\tartifact\n' > "$SUMMARY.new"
failed=0
for t in "${SELECTED[@]}"; do
    corpus="$WORK/corpus/$t" artifacts="$WORK/artifacts/$t" log="$WORK/logs/$t.log" tmp="$TMPROOT/$t"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")" "$tmp"
    echo "== $t: ${DURATION}s ($(binary "$t"))"
    start=$(date +%s)
    # One process, no forking (-jobs/-workers left at their defaults); -timeout flags a hang,
    # -rss_limit_mb / -malloc_limit_mb an allocation a header could trick the code into.
    # shellcheck disable=SC2086
    TMPDIR="$tmp" "$(binary "$t")" -max_total_time="$DURATION" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" "$(seeds "$t")" >"$log" 2>&1
    rc=$?
    elapsed=$(( $(date +%s) - start ))
    rm -rf "$tmp"
    execs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    rate=$(grep -Eo '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    units=$(grep -Eo '^stat::new_units_added: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    rss=$(grep -Eo '^stat::peak_rss_mb: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    if [ -z "$execs" ]; then  # died before the final stats: take the last status line
        execs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
        rate=$(grep -Eo 'exec/s: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
    fi
    artifact=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
    if [ $rc -eq 0 ]; then result=ok; else
        result=crash; failed=1
        grep -q 'ERROR: libFuzzer: timeout' "$log" && result=timeout
        grep -q 'ERROR: libFuzzer: out-of-memory' "$log" && result=oom
        grep -q 'ERROR: libFuzzer: fuzz target exited' "$log" && result=exit
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$t" "$elapsed" "${execs:-0}" "${rate:-0}" \
        "${units:-0}" "${rss:-?}" "$result" "${artifact:--}" >> "$SUMMARY.new"
    echo "   $result after ${elapsed}s: ${execs:-0} executions, ${rate:-0} exec/s${artifact:+, crash file $artifact}"
    [ "$result" = ok ] || { echo "   log: $log"; grep -m3 -E 'ERROR|Fatal error|SUMMARY' "$log" | sed 's/^/   /'; }
done
mv "$SUMMARY.new" "$SUMMARY"
rm -rf "/dev/shm/paligemma-fuzz-$$"
echo
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
echo "(also in $SUMMARY; logs in $WORK/logs)"
exit $failed
