/* What the kernel benchmarks (bench-rows.c, bench-gemm.c) share: a monotonic clock and a
 * reproducible uniform source in [−1, 1). */
#pragma once
#include <stdint.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t seed = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (float)((seed >> 40) * (1.0 / 16777216.0)) * 2 - 1;
}
