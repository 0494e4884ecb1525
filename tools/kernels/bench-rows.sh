#!/usr/bin/env bash
# Builds tools/kernels/bench-rows.c with the kernel sources and runs it: the batched decode GEMVs'
# time for M = 1, 2, 4, 8 inputs per level, as a multiple of one input's.
#   tools/kernels/bench-rows.sh [K N [RUNS]]
exec "$(dirname "$0")/run-native.sh" bench-rows "$@"
