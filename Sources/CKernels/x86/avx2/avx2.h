/* The avx2 level's parts (one file each), filled in order by ck_fill_avx2 (level.c). */
#pragma once
#include "../../ck_table.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* Helpers the level's files share. */
#define CK_AVX2_SHARED static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Sum of the 8 lanes. */
CK_AVX2_SHARED float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8×8 transpose: rows r[j] (8 consecutive k of weight row j) become columns (one k, 8 rows). */
CK_AVX2_SHARED void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* 8 rows' 8 dwords → dword j of each row in vector j (three unpack rounds: 32, 64, 128 bits) */
CK_AVX2_SHARED void transpose8_epi32(__m256i r[8]) {
    __m256i a0 = _mm256_unpacklo_epi32(r[0], r[1]), a1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i a2 = _mm256_unpacklo_epi32(r[2], r[3]), a3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i a4 = _mm256_unpacklo_epi32(r[4], r[5]), a5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i a6 = _mm256_unpacklo_epi32(r[6], r[7]), a7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i b0 = _mm256_unpacklo_epi64(a0, a2), b1 = _mm256_unpackhi_epi64(a0, a2);
    __m256i b2 = _mm256_unpacklo_epi64(a1, a3), b3 = _mm256_unpackhi_epi64(a1, a3);
    __m256i b4 = _mm256_unpacklo_epi64(a4, a6), b5 = _mm256_unpackhi_epi64(a4, a6);
    __m256i b6 = _mm256_unpacklo_epi64(a5, a7), b7 = _mm256_unpackhi_epi64(a5, a7);
    r[0] = _mm256_permute2x128_si256(b0, b4, 0x20), r[4] = _mm256_permute2x128_si256(b0, b4, 0x31);
    r[1] = _mm256_permute2x128_si256(b1, b5, 0x20), r[5] = _mm256_permute2x128_si256(b1, b5, 0x31);
    r[2] = _mm256_permute2x128_si256(b2, b6, 0x20), r[6] = _mm256_permute2x128_si256(b2, b6, 0x31);
    r[3] = _mm256_permute2x128_si256(b3, b7, 0x20), r[7] = _mm256_permute2x128_si256(b3, b7, 0x31);
}

/* w_scale · x_scale of groups g0 ..< g0 + count (≤ 8; the rest 0) of one row */
CK_AVX2_SHARED __m256 row_scales(const uint16_t *sc, const float *xsc, int64_t count) {
    if (count == 8) return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc)), _mm256_loadu_ps(xsc));
    float cs[8];
    for (int64_t j = 0; j < 8; j++) cs[j] = j < count ? ck_f16_value(sc[j]) * xsc[j] : 0.0f;
    return _mm256_loadu_ps(cs);
}

/* the sums of R (≤ 4) rows' 8 lanes, plus bias, into y[n ..< n+R] */
CK_AVX2_SHARED void store_rows(const __m256 *acc, const int R, const float *bias, float *y, int64_t n) {
    __m256 h01 = _mm256_hadd_ps(acc[0], R > 1 ? acc[1] : acc[0]);
    __m256 h23 = R > 2 ? _mm256_hadd_ps(acc[2], R > 3 ? acc[3] : acc[2]) : h01;
    __m256 h = _mm256_hadd_ps(h01, h23);
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    float r[4];
    _mm_storeu_ps(r, t);
    for (int i = 0; i < R; i++) y[n + i] = r[i] + (bias ? bias[n + i] : 0.0f);
}

/* 4-bit GEMVs: the up to three groups past the last block of four, in scalar code, added to lane
 * 0 of each of R (≤ 4) rows' accumulators, then store_rows. */
CK_AVX2_SHARED void store_q4_rows(const ck_qinput *in, const void *W, int64_t K, const uint16_t *sc, __m256 *acc,
                                  const int R, const float *bias, float *y, int64_t n) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    float t[4] = {0, 0, 0, 0};
    for (int64_t g = G4; g < G; g++)
        for (int r = 0; r < R; r++) t[r] += ck_q_group_dot(in, W, CK_Q4, K, n + r, g, ck_f16_value(sc[r * G + g]));
    if (G4 < G)
        for (int r = 0; r < R; r++) acc[r] = _mm256_add_ps(acc[r], _mm256_setr_ps(t[r], 0, 0, 0, 0, 0, 0, 0));
    store_rows(acc, R, bias, y, n);
}
#endif

/* float32 products: GEMM, GEMVs, conversions, dot/axpy, read and FMA probes (products.c) */
void ck_fill_avx2_products(ck_kernels *t, const ck_cpu *cpu);
/* int8 inputs × q8/q4 weights without integer dot-product instructions: input quantization,
 * decode GEMV, probe (int8.c); prefill GEMM (int8_gemm.c) */
void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu);
void ck_fill_avx2_int8_gemm(ck_kernels *t, const ck_cpu *cpu);
/* exp/tanh-based elementwise passes, max, and attention (math.c) */
void ck_fill_avx2_math(ck_kernels *t, const ck_cpu *cpu);
