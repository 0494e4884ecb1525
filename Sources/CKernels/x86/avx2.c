/* Level "avx2": AVX2 + FMA + F16C (Haswell and later, AMD Zen 1–3). */
#include "../ck_table.h"

#if defined(__x86_64__) || defined(_M_X64)
void ck_fill_avx2(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->name = "avx2";
}
#else
void ck_fill_avx2(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
