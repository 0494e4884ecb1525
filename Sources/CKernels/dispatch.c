/* Chooses the kernel level once from the CPU's features and routes every public ck_* call through
 * that level's table. */
#include "ck_table.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#if defined(__x86_64__) || defined(_M_X64)
#define CK_ARCH_X86 1
#elif defined(__aarch64__)
#define CK_ARCH_ARM 1
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

#define MAX_LEVELS 4

static ck_kernels tables[MAX_LEVELS];
static int level_count = 1;
static _Atomic(int) active_level = 0;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *requested = NULL;
static int request_failed = 0;

static void detect(ck_cpu *cpu) {
    memset(cpu, 0, sizeof(*cpu));
#if CK_ARCH_X86
    __builtin_cpu_init();
    cpu->avx2 = __builtin_cpu_supports("avx2");
    cpu->fma = __builtin_cpu_supports("fma");
    {   /* F16C and AVX-VNNI through cpuid: not every compiler's __builtin_cpu_supports knows them */
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
        cpu->f16c = (c >> 29) & 1;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
        cpu->avxvnni = (a >> 4) & 1; /* CPUID.(7,1):EAX[4] AVX-VNNI */
    }
    cpu->avx512f = __builtin_cpu_supports("avx512f");
    cpu->avx512bw = __builtin_cpu_supports("avx512bw");
    cpu->avx512vl = __builtin_cpu_supports("avx512vl");
    cpu->avx512dq = __builtin_cpu_supports("avx512dq");
    cpu->avx512vnni = __builtin_cpu_supports("avx512vnni");
    cpu->avx512bf16 = __builtin_cpu_supports("avx512bf16");
    {   /* vendor and family: cpuid 0 names the vendor, cpuid 1 the (extended) family */
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
        const int amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* "AuthenticAMD" */
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
        const unsigned family = ((a >> 8) & 0xF) + (((a >> 8) & 0xF) == 0xF ? (a >> 20) & 0xFF : 0);
        cpu->avx512_halves = amd && family == 0x19 && cpu->avx512f;
    }
#elif CK_ARCH_ARM
    cpu->neon = 1; /* Advanced SIMD is part of every arm64 CPU */
#if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    cpu->dotprod = (hw >> 20) & 1; /* HWCAP_ASIMDDP */
    cpu->i8mm = (hw2 >> 13) & 1;   /* HWCAP2_I8MM */
    cpu->bf16 = (hw2 >> 14) & 1;   /* HWCAP2_BF16 */
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof(v);
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0) cpu->dotprod = v;
    v = 0; len = sizeof(v);
    if (sysctlbyname("hw.optional.arm.FEAT_I8MM", &v, &len, NULL, 0) == 0) cpu->i8mm = v;
    v = 0; len = sizeof(v);
    if (sysctlbyname("hw.optional.arm.FEAT_BF16", &v, &len, NULL, 0) == 0) cpu->bf16 = v;
#endif
#endif
}

/* Adds a level on top of the last one: a copy of it, then the level's own entries. A level that
 * replaces a one-input GEMV but not its batched form gets the plain batched twin (which calls the
 * active level's GEMV per input), so that the batched rows stay that GEMV's bit for bit; one that
 * replaces the int8 probe but not its 4-bit form probes 4-bit products with its int8 probe. */
#define ADD_LEVEL(fill)                                                              \
    do {                                                                             \
        if (!fill) break;                                                            \
        ck_kernels *below = &tables[level_count - 1], *t = &tables[level_count];     \
        *t = *below;                                                                 \
        fill(t, &cpu);                                                               \
        if (t->gemv_q_int8 != below->gemv_q_int8 && t->gemv_q_int8_rows == below->gemv_q_int8_rows) \
            t->gemv_q_int8_rows = tables[0].gemv_q_int8_rows;                        \
        if (t->gemv_bf16 != below->gemv_bf16 && t->gemv_bf16_rows == below->gemv_bf16_rows) \
            t->gemv_bf16_rows = tables[0].gemv_bf16_rows;                            \
        if (t->int8_probe != below->int8_probe && t->int8_probe_q4 == below->int8_probe_q4) \
            t->int8_probe_q4 = NULL;                                                 \
        level_count++;                                                               \
    } while (0)

static void setup(void) {
    ck_cpu cpu;
    detect(&cpu);
    ck_fill_generic(&tables[0]);
    level_count = 1;
#if CK_ARCH_X86
    if (cpu.avx2 && cpu.fma && cpu.f16c) {
        ADD_LEVEL(ck_fill_avx2);
        /* AVX-VNNI, or the same 256-bit instruction in its AVX-512 encoding */
        if (cpu.avxvnni || (cpu.avx512vnni && cpu.avx512vl)) ADD_LEVEL(ck_fill_avxvnni);
        if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq) ADD_LEVEL(ck_fill_avx512);
    }
#elif CK_ARCH_ARM
    ADD_LEVEL(ck_fill_neon);
    if (cpu.dotprod) {
        ADD_LEVEL(ck_fill_dotprod);
        if (cpu.i8mm) ADD_LEVEL(ck_fill_i8mm);
    }
#endif
    int level = level_count - 1;
    const char *env = getenv("PALIGEMMA_ISA");
    if (env && *env) {
        requested = env;
        int found = -1;
        for (int i = 0; i < level_count; i++)
            if (strcasecmp(tables[i].name, env) == 0) found = i;
        if (found >= 0) level = found;
        else request_failed = 1;
    }
    atomic_store(&active_level, level);
}

static inline void ensure(void) { pthread_once(&once, setup); }

const ck_kernels *ck_active(void) {
    ensure();
    return &tables[atomic_load_explicit(&active_level, memory_order_relaxed)];
}

int ck_level_count(void) {
    ensure();
    return level_count;
}

const char *ck_level_name(int level) {
    ensure();
    return level >= 0 && level < level_count ? tables[level].name : NULL;
}

int ck_level_index(const char *name) {
    ensure();
    for (int i = 0; i < level_count; i++)
        if (name && strcasecmp(tables[i].name, name) == 0) return i;
    return -1;
}

const char *ck_level_names(void) {
#if CK_ARCH_X86
    return "generic avx2 avx-vnni avx512";
#elif CK_ARCH_ARM
    return "generic neon neon-dotprod neon-i8mm";
#else
    return "generic";
#endif
}

int ck_level(void) {
    ensure();
    return atomic_load(&active_level);
}

int ck_set_level(int level) {
    ensure();
    if (level < 0) level = 0;
    if (level >= level_count) level = level_count - 1;
    return atomic_exchange(&active_level, level);
}

int ck_level_request_failed(void) {
    ensure();
    return request_failed;
}

const char *ck_level_request(void) {
    ensure();
    return requested;
}

int ck_has_vector_kernels(void) { return ck_level() > 0; }
int ck_has_int8_products(void) { return ck_active()->int8_products; }
int ck_has_bf16_products(void) { return ck_active()->bf16_products; }

/* ---------------- the public kernels, through the active table ---------------- */

void ck_linear(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format, const float *bias,
               float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
    ck_active()->linear(x, M, K, ldx, W, format, bias, y, ldy, n0, n1, scratch);
}

void ck_convert_row(const void *W, int format, int64_t K, int64_t row, float *out) {
    ck_active()->convert_row(W, format, K, row, out);
}

void ck_gemv_bf16(const float *xeo, int64_t K, const void *W, const float *bias, float *y, int64_t n0, int64_t n1) {
    ck_active()->gemv_bf16(xeo, K, W, bias, y, n0, n1);
}

void ck_gemv_bf16_rows(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W, const float *bias,
                       float *y, int64_t ldy, int64_t n0, int64_t n1) {
    ck_active()->gemv_bf16_rows(xeo, M, K, ldx, W, bias, y, ldy, n0, n1);
}

void ck_to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
    ck_active()->to_bf16_rows(x, M, K, ldx, out);
}

void ck_gemm_bf16(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y, int64_t ldy,
                  int64_t n0, int64_t n1) {
    ck_active()->gemm_bf16(xb, M, K, W, bias, y, ldy, n0, n1);
}

void ck_gemm_f32_packed(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, const uint16_t *scales,
                        int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
    ck_active()->gemm_f32_packed(x, M, K, ldx, W, scales, format, bias, y, ldy, n0, n1, scratch);
}

void ck_gemv_q(const float *x, int64_t K, const void *W, const uint16_t *scales, int format, const float *bias,
               float *y, int64_t n0, int64_t n1) {
    ck_active()->gemv_q(x, K, W, scales, format, bias, y, n0, n1);
}

void ck_quantize_input(const float *x, int64_t K, ck_qinput *out) { ck_active()->quantize_input(x, K, out); }

void ck_gemv_q_int8(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                    const float *bias, float *y, int64_t n0, int64_t n1) {
    ck_active()->gemv_q_int8(in, K, W, scales, format, bias, y, n0, n1);
}

void ck_gemv_q_int8_rows(const ck_qinput *in, int64_t M, int64_t K, const void *W, const uint16_t *scales, int format,
                         const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    ck_active()->gemv_q_int8_rows(in, M, K, W, scales, format, bias, y, ldy, n0, n1);
}

void ck_quantize_rows_u8(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs) {
    ck_active()->quantize_rows_u8(x, M, K, ldx, xq, xs);
}

void ck_gemm_q_int8(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W, const uint16_t *scales,
                    int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, void *scratch) {
    ck_active()->gemm_q_int8(xq, xs, M, K, W, scales, format, bias, y, ldy, n0, n1, scratch);
}

void ck_attention_block(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                        int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                        float *out, int64_t ldo, float *scratch) {
    ck_active()->attention_block(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
}

void ck_gelu_tanh(const float *a, const float *b, float *out, int64_t n) { ck_active()->gelu_tanh(a, b, out, n); }
void ck_softcap(float *x, int64_t n, float cap) { ck_active()->softcap(x, n, cap); }
float ck_sum_exp(const float *x, int64_t n, float shift) { return ck_active()->exp_shift(x, NULL, n, shift); }

int64_t ck_argmax(const float *x, int64_t n) {
    float best = ck_active()->max(x, n);
    for (int64_t i = 0; i < n; i++)
        if (x[i] == best) return i;
    return 0;
}

float ck_read_all(const float *p, int64_t n) { return ck_active()->read_all(p, n); }
float ck_dot(const float *a, const float *b, int64_t n) { return ck_active()->dot(a, b, n); }
void ck_axpy(float a, const float *x, float *y, int64_t n) { ck_active()->axpy(a, x, y, n); }

double ck_fma_probe(int64_t iterations, float *sink) { return ck_active()->fma_probe(iterations, sink); }
double ck_int8_probe(int64_t iterations, float *sink) { return ck_active()->int8_probe(iterations, sink); }
double ck_int8_probe_q4(int64_t iterations, float *sink) {
    const ck_kernels *t = ck_active();
    return (t->int8_probe_q4 ? t->int8_probe_q4 : t->int8_probe)(iterations, sink);
}
double ck_bf16_probe(int64_t iterations, float *sink) { return ck_active()->bf16_probe(iterations, sink); }
