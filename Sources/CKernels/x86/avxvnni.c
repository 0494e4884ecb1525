/* Level "avx-vnni": the avx2 level plus 256-bit vpdpbusd integer dot products (Alder Lake and
 * later; on AVX-512 CPUs the same instruction in its EVEX encoding). */
#include "../ck_table.h"

#if defined(__x86_64__) || defined(_M_X64)
void ck_fill_avxvnni(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->name = "avx-vnni";
}
#else
void ck_fill_avxvnni(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
