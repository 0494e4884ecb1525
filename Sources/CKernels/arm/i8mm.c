/* Level "neon-i8mm" (arm64). */
#include "../ck_table.h"

#if defined(__aarch64__)
void ck_fill_i8mm(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->name = "neon-i8mm";
}
#else
void ck_fill_i8mm(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
