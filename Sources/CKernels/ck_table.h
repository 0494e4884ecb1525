/* The kernel table: one function pointer per kernel, filled once per instruction-set level.
 *
 * Levels form chains, lowest first: generic → avx2 → avx-vnni → avx512 on x86-64, generic → neon
 * → neon-dotprod → neon-i8mm on arm64. A level's table starts as a copy of the level below it and
 * its fill function replaces the entries it implements, so every entry is always set and each
 * level only writes what its instructions do better. The public ck_* functions (dispatch.c) call
 * through the active table; nothing outside CKernels sees a level's instructions.
 *
 * Contracts every level keeps (the tests compare each level with generic under them):
 * - quantize_input fills every field of ck_qinput exactly as generic does (bit for bit), so any
 *   level's int8 GEMV can read the fields it wants;
 * - quantize_rows_u8 writes generic's offset-u8 rows bit for bit;
 * - integer sums are exact; only the float32 order of group scaling may differ;
 * - scratch sizes are the public ones (ck_gemm_q_int8_scratch_bytes, 64·K floats for
 *   gemm_f32_packed, ck_attention_scratch_floats). */
#pragma once
#include "ckernels.h"
#include <string.h>

typedef struct ck_kernels {
    const char *name;
    /* 1 when gemv_q_int8 / gemm_q_int8 use integer dot products worth rounding inputs to int8 */
    int int8_products;
    /* 1 when gemm_bf16 uses native bf16 dot products */
    int bf16_products;

    void (*convert_row)(const void *W, int format, int64_t K, int64_t row, float *out);
    float (*dot)(const float *a, const float *b, int64_t n);
    /* out[r] = a_r · b for four rows */
    void (*dot4)(const float *a0, const float *a1, const float *a2, const float *a3, const float *b, int64_t n,
                 float out[4]);
    void (*axpy)(float a, const float *x, float *y, int64_t n);
    /* y_r += p_r · x for four rows */
    void (*axpy4)(const float p[4], const float *x, float *y0, float *y1, float *y2, float *y3, int64_t n);
    void (*scale)(float a, float *y, int64_t n);
    void (*linear)(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format, const float *bias,
                   float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch);
    void (*gemv_bf16)(const float *xeo, int64_t K, const void *W, const float *bias, float *y, int64_t n0, int64_t n1);
    /* gemv_bf16 for M split inputs (row stride ldx) at once: row m of y (stride ldy) must equal
     * gemv_bf16(xeo + m·ldx, …) bit for bit; a level may read each weight row once for all M */
    void (*gemv_bf16_rows)(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W, const float *bias,
                           float *y, int64_t ldy, int64_t n0, int64_t n1);
    void (*to_bf16_rows)(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out);
    void (*gemm_bf16)(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y,
                      int64_t ldy, int64_t n0, int64_t n1);
    void (*gemm_f32_packed)(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, const uint16_t *scales,
                            int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1,
                            float *scratch);
    void (*gemv_q)(const float *x, int64_t K, const void *W, const uint16_t *scales, int format, const float *bias,
                   float *y, int64_t n0, int64_t n1);
    void (*quantize_input)(const float *x, int64_t K, ck_qinput *out);
    void (*gemv_q_int8)(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                        const float *bias, float *y, int64_t n0, int64_t n1);
    /* gemv_q_int8 for M inputs at once (decode of several sequences): row m of y (stride ldy) must
     * equal gemv_q_int8(&in[m], …) bit for bit; a level may read each weight row once for all M */
    void (*gemv_q_int8_rows)(const ck_qinput *in, int64_t M, int64_t K, const void *W, const uint16_t *scales,
                             int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1);
    void (*quantize_rows_u8)(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs);
    void (*gemm_q_int8)(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                        const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy, int64_t n0,
                        int64_t n1, void *scratch);
    void (*attention_block)(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                            int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                            float *out, int64_t ldo, float *scratch);
    void (*gelu_tanh)(const float *a, const float *b, float *out, int64_t n);
    void (*softcap)(float *x, int64_t n, float cap);
    /* Σ exp(x[i] − shift), writing each term to out when out is not NULL (out may be x) */
    float (*exp_shift)(const float *x, float *out, int64_t n, float shift);
    /* the largest value, NaNs skipped (−∞ for none) */
    float (*max)(const float *x, int64_t n);
    float (*read_all)(const float *p, int64_t n);
    double (*fma_probe)(int64_t iterations, float *sink);
    double (*int8_probe)(int64_t iterations, float *sink);
    /* the 4-bit weights' int8 products where their instructions differ from int8_probe's (avx2:
     * vpmaddubsw on nibbles, sums kept in 16 bits); NULL: the same as int8_probe */
    double (*int8_probe_q4)(int64_t iterations, float *sink);
    double (*bf16_probe)(int64_t iterations, float *sink);
} ck_kernels;

/* The active table (dispatch.c). */
const ck_kernels *ck_active(void);

/* CPU features a fill function may look at beyond its level's baseline. */
typedef struct {
    int avx2, fma, f16c, avxvnni, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16;
    /* 512-bit operations issue as two 256-bit halves (AMD Zen 4: family 19h) */
    int avx512_halves;
    int neon, dotprod, i8mm, bf16;
} ck_cpu;

/* Fill functions, one per level (each file defines its own; a level whose file is compiled for
 * another architecture is never called). Weak, so that a test driver may link only some level
 * files: a missing level is then skipped. */
void ck_fill_generic(ck_kernels *t);
__attribute__((weak)) void ck_fill_avx2(ck_kernels *t, const ck_cpu *cpu);
__attribute__((weak)) void ck_fill_avxvnni(ck_kernels *t, const ck_cpu *cpu);
__attribute__((weak)) void ck_fill_avx512(ck_kernels *t, const ck_cpu *cpu);
__attribute__((weak)) void ck_fill_neon(ck_kernels *t, const ck_cpu *cpu);
__attribute__((weak)) void ck_fill_dotprod(ck_kernels *t, const ck_cpu *cpu);
__attribute__((weak)) void ck_fill_i8mm(ck_kernels *t, const ck_cpu *cpu);

/* The avx512 level's int8 prefill GEMM: 1 for its 512-bit kernel, 0 for the level below's 256-bit
 * one (its default on CPUs with avx512_halves); returns the previous choice. For tests, which
 * check both. */
__attribute__((weak)) int ck_avx512_wide_int8_gemm(int wide);

/* ---- helpers every level may use ---- */

/* The body of a level's gemv_q_int8_rows (its parameters in scope: in, M, K, W, scales, format,
 * bias, y, ldy, n0, n1) over batch kernels q4_batch / q8_batch(inputs, M, K, W, scales, bias, y,
 * ldy, first row, R) that take M ≤ CK_ROWS_CHUNK inputs and R ∈ {1, 2} rows, both compile-time
 * constants in each call: blocks of nb_rows weight rows, each for every chunk of inputs in turn
 * (the chunks after the first find the block's weights in L2), pairs of rows, then a last one. */
#define CK_ROWS_CHUNK 4
#define CK_ROWS_BATCH_CASE(batch, T, MM)                                                                    \
    case MM: {                                                                                              \
        int64_t n = nb;                                                                                     \
        for (; n + 2 <= ne; n += 2) batch(in + m, MM, K, (const T *)W, scales, bias, ym, ldy, n, 2);        \
        if (n < ne) batch(in + m, MM, K, (const T *)W, scales, bias, ym, ldy, n, 1);                        \
        break;                                                                                              \
    }
#define CK_Q_INT8_ROWS_BODY(q4_batch, q8_batch, nb_rows)                                                    \
    for (int64_t nb = n0; nb < n1; nb += (nb_rows)) {                                                       \
        const int64_t ne = n1 - nb < (nb_rows) ? n1 : nb + (nb_rows);                                       \
        for (int64_t m = 0; m < M; m += CK_ROWS_CHUNK) {                                                    \
            float *ym = y + m * ldy;                                                                        \
            const int64_t chunk = M - m < CK_ROWS_CHUNK ? M - m : CK_ROWS_CHUNK;                            \
            if (format == CK_Q4) {                                                                          \
                switch (chunk) {                                                                            \
                    CK_ROWS_BATCH_CASE(q4_batch, uint8_t, 1) CK_ROWS_BATCH_CASE(q4_batch, uint8_t, 2)       \
                    CK_ROWS_BATCH_CASE(q4_batch, uint8_t, 3) CK_ROWS_BATCH_CASE(q4_batch, uint8_t, 4)       \
                }                                                                                           \
            } else {                                                                                        \
                switch (chunk) {                                                                            \
                    CK_ROWS_BATCH_CASE(q8_batch, int8_t, 1) CK_ROWS_BATCH_CASE(q8_batch, int8_t, 2)         \
                    CK_ROWS_BATCH_CASE(q8_batch, int8_t, 3) CK_ROWS_BATCH_CASE(q8_batch, int8_t, 4)         \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }

static inline float ck_bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float ck_f16_value(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    uint32_t u;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-08f; /* 2^-24 */
        return sign ? -v : v;
    } else if (exp == 31) {
        u = sign | 0x7F800000u | (mant << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float32 → bf16, round to nearest even (as torch's .to(bfloat16)) */
static inline uint16_t ck_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Values in group g of a row of K: 32, or K mod 32 for a short last group (q8 only). */
static inline int ck_group_length(int64_t K, int64_t g) {
    int64_t left = K - g * CK_GROUP;
    return left < CK_GROUP ? (int)left : CK_GROUP;
}

/* Weight value i of group g in row n, as a signed integer. */
static inline int ck_q_weight(const void *W, int format, int64_t K, int64_t n, int64_t g, int i) {
    if (format == CK_Q8) return g * 32 + i < K ? ((const int8_t *)W)[n * K + g * 32 + i] : 0;
    uint8_t b = ((const uint8_t *)W)[n * (K / 2) + g * 16 + (i & 15)];
    return (int)(i < 16 ? (b & 0xF) : (b >> 4)) - 8;
}

/* Group g of row n against the int8 input, scaled (weight scale `ws` × input scale): the
 * portable GEMV and the vector GEMVs' last groups that do not fill a vector step. */
static inline float ck_q_group_dot(const ck_qinput *in, const void *W, int format, int64_t K, int64_t n, int64_t g,
                                   float ws) {
    int32_t dot = 0;
    for (int i = 0; i < 32; i++) dot += in->value[g * 32 + i] * ck_q_weight(W, format, K, n, g, i);
    return (float)dot * ws * in->scale[g];
}

/* Fills value_q4 and offset_q4 from value and sum4 (G groups): every quantize_input ends with it. */
void ck_quantize_input_q4_order(int64_t G, ck_qinput *out);

/* Attention one row at a time (four rows share each key and value load) with an online
 * softmax, through the active table's dot4/axpy4/softcap/exp_shift/scale: the generic kernel,
 * and the fallback of the vector levels for block sizes their own kernels do not take. */
void ck_attention_rows(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                       int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                       float *out, int64_t ldo, float *scratch);

/* The online softmax shared by attention kernels that keep one row of sums per query. */
void ck_softmax_start(int64_t nq, int64_t d, const int64_t *lo, const int64_t *hi, float *acc, float *m, float *l,
                      int64_t *first, int64_t *last);
void ck_softmax_tile(float *s, int64_t n, float cap, float *m, float *l, float *acc, int64_t d);
void ck_softmax_finish(int64_t nq, int64_t d, const float *acc, const float *l, float *out, int64_t ldo);
