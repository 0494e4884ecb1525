/* Level "neon-dotprod" (arm64). */
#include "../ck_table.h"

#if defined(__aarch64__)
void ck_fill_dotprod(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->name = "neon-dotprod";
}
#else
void ck_fill_dotprod(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
