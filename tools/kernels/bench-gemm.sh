#!/usr/bin/env bash
# Builds tools/kernels/bench-gemm.c with the kernel sources and runs it: the int8 prefill GEMM's
# rate in GMAC/s per level and weight format.
#   tools/kernels/bench-gemm.sh [M K N [RUNS [THREADS]]]
exec "$(dirname "$0")/run-native.sh" bench-gemm "$@"
