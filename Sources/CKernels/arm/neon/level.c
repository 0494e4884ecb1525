/* Level "neon": Advanced SIMD, part of every arm64 CPU. 128-bit vectors, 32 registers. */
#include "neon.h"

#if defined(__aarch64__)
void ck_fill_neon(ck_kernels *t, const ck_cpu *cpu) {
    t->name = "neon";
    ck_fill_neon_products(t, cpu);
    ck_fill_neon_math(t, cpu);
}
#else
void ck_fill_neon(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
