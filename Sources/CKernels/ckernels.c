#include "ckernels.h"
#include <string.h>
#include <math.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CK_X86 1
#else
#define CK_X86 0
#endif

static int force_portable = 0;

int ck_force_portable(int on) {
    int old = force_portable;
    force_portable = on;
    return old;
}

int ck_has_avx512(void) {
#if CK_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
    }
    return cached && !force_portable;
#else
    return 0;
#endif
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
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

/* ---------------- portable paths ---------------- */

static void convert_row_portable(const void *W, int format, int64_t K, int64_t row, float *out) {
    switch (format) {
    case CK_F32:
        memcpy(out, (const float *)W + row * K, (size_t)K * sizeof(float));
        break;
    case CK_BF16: {
        const uint16_t *p = (const uint16_t *)W + row * K;
        for (int64_t k = 0; k < K; k++) out[k] = bf16_to_f32(p[k]);
        break;
    }
    case CK_F16: {
        const uint16_t *p = (const uint16_t *)W + row * K;
        for (int64_t k = 0; k < K; k++) out[k] = f16_to_f32(p[k]);
        break;
    }
    }
}

static float dot_portable(const float *a, const float *b, int64_t n) {
    /* Eight partial sums: vectorisable and closer to a pairwise sum than a single chain. */
    float s[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) s[j] += a[k + j] * b[k + j];
    float t = 0;
    for (; k < n; k++) t += a[k] * b[k];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

/* ---------------- AVX-512 paths ---------------- */
#if CK_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

AVX512 static void convert_row_avx512(const void *W, int format, int64_t K, int64_t row, float *out) {
    if (format == CK_BF16) {
        const uint16_t *p = (const uint16_t *)W + row * K;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(p + k));
            __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
            _mm512_storeu_ps(out + k, _mm512_castsi512_ps(w));
        }
        for (; k < K; k++) out[k] = bf16_to_f32(p[k]);
    } else if (format == CK_F16) {
        const uint16_t *p = (const uint16_t *)W + row * K;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(p + k));
            _mm512_storeu_ps(out + k, _mm512_cvtph_ps(h));
        }
        for (; k < K; k++) out[k] = f16_to_f32(p[k]);
    } else {
        convert_row_portable(W, format, K, row, out);
    }
}

AVX512 static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
    }
    for (; k + 16 <= n; k += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* 4 weight rows (already float32, in w[0..3]) against 4 input rows: 16 accumulators. */
AVX512 static void micro_4x4(const float *x, int64_t ldx, int64_t mrows, const float *w, int64_t K,
                             int64_t nrows, float out[4][4]) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    const float *xr[4], *wr[4];
    for (int i = 0; i < 4; i++) xr[i] = x + (i < mrows ? i : 0) * ldx;
    for (int j = 0; j < 4; j++) wr[j] = w + (j < nrows ? j : 0) * K;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv0 = _mm512_loadu_ps(wr[0] + k), wv1 = _mm512_loadu_ps(wr[1] + k);
        __m512 wv2 = _mm512_loadu_ps(wr[2] + k), wv3 = _mm512_loadu_ps(wr[3] + k);
        for (int i = 0; i < 4; i++) {
            __m512 xv = _mm512_loadu_ps(xr[i] + k);
            acc[i][0] = _mm512_fmadd_ps(xv, wv0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, wv1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(xv, wv2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(xv, wv3, acc[i][3]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_maskz_loadu_ps(m, wr[j] + k);
        for (int i = 0; i < 4; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, xr[i] + k);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

AVX512 static void linear_avx512(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                 int format, const float *bias, float *y, int64_t ldy, int64_t n0,
                                 int64_t n1, float *scratch) {
    for (int64_t n = n0; n < n1; n += 4) {
        int64_t nrows = n1 - n < 4 ? n1 - n : 4;
        const float *w;
        if (format == CK_F32) {
            /* Contiguous rows: read in place, no copy. */
            if (nrows == 4) {
                w = (const float *)W + n * K;
            } else {
                for (int64_t j = 0; j < nrows; j++) convert_row_portable(W, format, K, n + j, scratch + j * K);
                w = scratch;
            }
        } else {
            for (int64_t j = 0; j < nrows; j++) convert_row_avx512(W, format, K, n + j, scratch + j * K);
            w = scratch;
        }
        for (int64_t m = 0; m < M; m += 4) {
            int64_t mrows = M - m < 4 ? M - m : 4;
            float out[4][4];
            micro_4x4(x + m * ldx, ldx, mrows, w, K, nrows, out);
            for (int64_t i = 0; i < mrows; i++)
                for (int64_t j = 0; j < nrows; j++)
                    y[(m + i) * ldy + n + j] = out[i][j] + (bias ? bias[n + j] : 0.0f);
        }
    }
}

/* bf16 weights, one input row (decode): stream each weight byte once, widen in registers.
 * A 512-bit load holds 32 bf16 = 16 pairs; `w << 16` is the even elements as float32 and
 * `w & 0xFFFF0000` the odd ones, so x is pre-split into even/odd halves per 32-chunk. */
AVX512 static void gemv_bf16_avx512(const float *xeo, int64_t K, const uint16_t *W, const float *bias,
                                    float *y, int64_t n0, int64_t n1) {
    const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
    const int64_t K32 = K & ~(int64_t)31;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const uint16_t *w0 = W + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            __m512 xe = _mm512_loadu_ps(xeo + k), xo = _mm512_loadu_ps(xeo + k + 16);
            __m512i v0 = _mm512_loadu_si512((const void *)(w0 + k));
            __m512i v1 = _mm512_loadu_si512((const void *)(w1 + k));
            __m512i v2 = _mm512_loadu_si512((const void *)(w2 + k));
            __m512i v3 = _mm512_loadu_si512((const void *)(w3 + k));
            a0 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), a0);
            b0 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)), b0);
            a1 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)), a1);
            b1 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v1, hi_mask)), b1);
            a2 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v2, 16)), a2);
            b2 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v2, hi_mask)), b2);
            a3 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v3, 16)), a3);
            b3 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v3, hi_mask)), b3);
        }
        float r[4] = {_mm512_reduce_add_ps(_mm512_add_ps(a0, b0)), _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)), _mm512_reduce_add_ps(_mm512_add_ps(a3, b3))};
        const uint16_t *ws[4] = {w0, w1, w2, w3};
        for (int j = 0; j < 4; j++) {
            /* tail: xeo holds the plain x there (see ck_split_even_odd) */
            for (int64_t k = K32; k < K; k++) r[j] += xeo[k] * bf16_to_f32(ws[j][k]);
            y[n + j] = r[j] + (bias ? bias[n + j] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const uint16_t *w0 = W + n * K;
        __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            __m512i v0 = _mm512_loadu_si512((const void *)(w0 + k));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(xeo + k), _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), a0);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(xeo + k + 16), _mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)), b0);
        }
        float r = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        for (int64_t k = K32; k < K; k++) r += xeo[k] * bf16_to_f32(w0[k]);
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

/* bf16 weights, many input rows (prefill): x rounded to bf16 once, 4×4 tiles of
 * _mm512_dpbf16_ps dot products (32 MACs each), M blocked so the x block stays in L2. */
AVX512BF16 static void gemm_bf16_dp(const uint16_t *xb, int64_t M, int64_t K, const uint16_t *W,
                                    const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    /* K is padded to a multiple of 32 in xb (zeros); W rows are read with a masked tail. */
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    int64_t mblock = (512 * 1024) / (Kp * 2);
    mblock = mblock < 4 ? 4 : (mblock > 64 ? 64 : mblock & ~(int64_t)3);
    const int64_t K32 = K & ~(int64_t)31;
    const __mmask32 tail = (__mmask32)((K - K32) == 0 ? 0 : ((1ull << (K - K32)) - 1));
    for (int64_t mb = 0; mb < M; mb += mblock) {
        int64_t me = mb + mblock < M ? mb + mblock : M;
        for (int64_t n = n0; n < n1; n += 4) {
            int64_t nrows = n1 - n < 4 ? n1 - n : 4;
            const uint16_t *wr[4];
            for (int j = 0; j < 4; j++) wr[j] = W + (n + (j < nrows ? j : 0)) * K;
            for (int64_t m = mb; m < me; m += 4) {
                int64_t mrows = me - m < 4 ? me - m : 4;
                const uint16_t *xr[4];
                for (int i = 0; i < 4; i++) xr[i] = xb + (m + (i < mrows ? i : 0)) * Kp;
                __m512 acc[4][4];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
                for (int64_t k = 0; k < K32; k += 32) {
                    __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(wr[0] + k));
                    __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(wr[1] + k));
                    __m512bh w2 = (__m512bh)_mm512_loadu_si512((const void *)(wr[2] + k));
                    __m512bh w3 = (__m512bh)_mm512_loadu_si512((const void *)(wr[3] + k));
                    for (int i = 0; i < 4; i++) {
                        __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xr[i] + k));
                        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, w0);
                        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, w1);
                        acc[i][2] = _mm512_dpbf16_ps(acc[i][2], xv, w2);
                        acc[i][3] = _mm512_dpbf16_ps(acc[i][3], xv, w3);
                    }
                }
                if (tail) {
                    __m512bh wv[4];
                    for (int j = 0; j < 4; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(tail, wr[j] + K32);
                    for (int i = 0; i < 4; i++) {
                        __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xr[i] + K32));
                        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
                    }
                }
                for (int64_t i = 0; i < mrows; i++)
                    for (int64_t j = 0; j < nrows; j++)
                        y[(m + i) * ldy + n + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
            }
        }
    }
}

AVX512BF16 static void to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    for (int64_t m = 0; m < M; m++) {
        const float *src = x + m * ldx;
        uint16_t *dst = out + m * Kp;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16)
            _mm256_storeu_si256((__m256i *)(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
        for (; k < Kp; k++) {
            if (k < K) {
                uint32_t u;
                memcpy(&u, src + k, 4);
                u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even */
                dst[k] = (uint16_t)(u >> 16);
            } else {
                dst[k] = 0;
            }
        }
    }
}
#endif

/* ---------------- dispatch ---------------- */

void ck_convert_row(const void *W, int format, int64_t K, int64_t row, float *out) {
#if CK_X86
    if (ck_has_avx512()) { convert_row_avx512(W, format, K, row, out); return; }
#endif
    convert_row_portable(W, format, K, row, out);
}

float ck_dot(const float *a, const float *b, int64_t n) {
#if CK_X86
    if (ck_has_avx512()) return dot_avx512(a, b, n);
#endif
    return dot_portable(a, b, n);
}

int ck_has_avx512_bf16(void) {
#if CK_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
    }
    return cached && ck_has_avx512();
#else
    return 0;
#endif
}

void ck_split_even_odd(const float *x, int64_t K, float *out) {
    int64_t K32 = K & ~(int64_t)31;
    for (int64_t k = 0; k < K32; k += 32)
        for (int i = 0; i < 16; i++) {
            out[k + i] = x[k + 2 * i];
            out[k + 16 + i] = x[k + 2 * i + 1];
        }
    for (int64_t k = K32; k < K; k++) out[k] = x[k];
}

void ck_gemv_bf16(const float *xeo, int64_t K, const void *W, const float *bias, float *y, int64_t n0, int64_t n1) {
#if CK_X86
    if (ck_has_avx512()) { gemv_bf16_avx512(xeo, K, (const uint16_t *)W, bias, y, n0, n1); return; }
#endif
    /* portable: undo the even/odd split on the fly */
    const uint16_t *w = (const uint16_t *)W;
    int64_t K32 = K & ~(int64_t)31;
    for (int64_t n = n0; n < n1; n++) {
        const uint16_t *row = w + n * K;
        float s = 0;
        for (int64_t k = 0; k < K32; k += 32)
            for (int i = 0; i < 16; i++)
                s += xeo[k + i] * bf16_to_f32(row[k + 2 * i]) + xeo[k + 16 + i] * bf16_to_f32(row[k + 2 * i + 1]);
        for (int64_t k = K32; k < K; k++) s += xeo[k] * bf16_to_f32(row[k]);
        y[n] = s + (bias ? bias[n] : 0.0f);
    }
}

void ck_to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
#if CK_X86
    if (ck_has_avx512_bf16()) { to_bf16_rows(x, M, K, ldx, out); return; }
#endif
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < Kp; k++) {
            if (k < K) {
                uint32_t u;
                memcpy(&u, x + m * ldx + k, 4);
                u += 0x7FFF + ((u >> 16) & 1);
                out[m * Kp + k] = (uint16_t)(u >> 16);
            } else {
                out[m * Kp + k] = 0;
            }
        }
}

void ck_gemm_bf16(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y,
                  int64_t ldy, int64_t n0, int64_t n1) {
#if CK_X86
    if (ck_has_avx512_bf16()) { gemm_bf16_dp(xb, M, K, (const uint16_t *)W, bias, y, ldy, n0, n1); return; }
#endif
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    const uint16_t *w = (const uint16_t *)W;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t m = 0; m < M; m++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s += bf16_to_f32(xb[m * Kp + k]) * bf16_to_f32(w[n * K + k]);
            y[m * ldy + n] = s + (bias ? bias[n] : 0.0f);
        }
}

void ck_axpy(float a, const float *x, float *y, int64_t n) {
    for (int64_t k = 0; k < n; k++) y[k] += a * x[k];
}

void ck_linear(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format,
               const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
#if CK_X86
    if (ck_has_avx512()) {
        linear_avx512(x, M, K, ldx, W, format, bias, y, ldy, n0, n1, scratch);
        return;
    }
#endif
    for (int64_t n = n0; n < n1; n++) {
        const float *w;
        if (format == CK_F32) {
            w = (const float *)W + n * K;
        } else {
            convert_row_portable(W, format, K, n, scratch);
            w = scratch;
        }
        for (int64_t m = 0; m < M; m++)
            y[m * ldy + n] = dot_portable(x + m * ldx, w, K) + (bias ? bias[n] : 0.0f);
    }
}
