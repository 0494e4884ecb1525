/* The avx2 level's parts (one file each), filled in order by ck_fill_avx2 (level.c). */
#pragma once
#include "../../ck_table.h"

/* float32 products: GEMM, GEMVs, conversions, dot/axpy, read and FMA probes (products.c) */
void ck_fill_avx2_products(ck_kernels *t, const ck_cpu *cpu);
/* int8 inputs × q8/q4 weights without integer dot-product instructions: input quantization,
 * decode GEMV, probe (int8.c); prefill GEMM (int8_gemm.c) */
void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu);
void ck_fill_avx2_int8_gemm(ck_kernels *t, const ck_cpu *cpu);
/* exp/tanh-based elementwise passes, max, and attention (math.c) */
void ck_fill_avx2_math(ck_kernels *t, const ck_cpu *cpu);
