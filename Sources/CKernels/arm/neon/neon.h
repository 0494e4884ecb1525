/* The neon level's parts (one file each), filled in order by ck_fill_neon (level.c). */
#pragma once
#include "../../ck_table.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* Four vectors as the columns of a 4×4 block: r[i] lane j = a[j] lane i. */
static inline void transpose4(float32x4_t a[4]) {
    float32x4_t t0 = vtrn1q_f32(a[0], a[1]), t1 = vtrn2q_f32(a[0], a[1]);
    float32x4_t t2 = vtrn1q_f32(a[2], a[3]), t3 = vtrn2q_f32(a[2], a[3]);
    a[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    a[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    a[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    a[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}
#endif

/* float32 products: GEMM, GEMVs, conversions, dot/axpy, read and FMA probes (products.c) */
void ck_fill_neon_products(ck_kernels *t, const ck_cpu *cpu);
/* exp/tanh-based elementwise passes, max, and attention (math.c) */
void ck_fill_neon_math(ck_kernels *t, const ck_cpu *cpu);
