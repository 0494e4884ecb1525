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
