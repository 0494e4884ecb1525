/* Level "avx2": AVX2 + FMA + F16C (Intel since Haswell, AMD Zen 1–3, and every later x86-64 that
 * people run this on). 256-bit vectors, 16 registers. */
#include "avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
void ck_fill_avx2(ck_kernels *t, const ck_cpu *cpu) {
    t->name = "avx2";
    ck_fill_avx2_products(t, cpu);
    ck_fill_avx2_int8(t, cpu);
    ck_fill_avx2_int8_gemm(t, cpu);
    ck_fill_avx2_math(t, cpu);
}
#else
void ck_fill_avx2(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
