#!/usr/bin/env bash
# Builds tools/kernels/check.c with this machine's compiler and checks every kernel level the CPU
# supports against the generic one (or the levels named): tools/kernels/check.sh [LEVEL ...]
exec "$(dirname "$0")/run-native.sh" check "$@"
