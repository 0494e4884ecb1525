/* The neon level's parts (one file each), filled in order by ck_fill_neon (level.c). */
#pragma once
#include "../../ck_table.h"

/* float32 products: GEMM, GEMVs, conversions, dot/axpy, read and FMA probes (products.c) */
void ck_fill_neon_products(ck_kernels *t, const ck_cpu *cpu);
/* exp/tanh-based elementwise passes, max, and attention (math.c) */
void ck_fill_neon_math(ck_kernels *t, const ck_cpu *cpu);
