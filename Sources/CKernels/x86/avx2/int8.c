/* The avx2 level's int8 products: quantized inputs × CK_Q8 / CK_Q4 weights with integer
 * arithmetic that stays exact without dot-product instructions.
 *
 * vpmaddubsw (u8 × s8, pairs summed into int16) saturates, so every use keeps a pair sum within
 * ±32767: the decode GEMV multiplies |x| (≤ 127) by sign(x)·w (q8) or nibbles (0…15) by x (q4);
 * the prefill GEMM multiplies offset-u8 activations (≤ 255) by q4 weights − 8 (|w| ≤ 8), and for
 * q8 weights widens both sides to int16 for vpmaddwd, whose pair sums are int32. */
#include "avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

/* ---------------- input quantization ---------------- */

/* max |a| over four vectors as a scalar */
AVX2 static INLINE float abs_max4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, a), _mm256_andnot_ps(sign, b)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, c), _mm256_andnot_ps(sign, d)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* round(v·inv) to nearest even (cvtps under the default MXCSR, as nearbyintf), clamped to
 * [−127, 127], narrowed to 32 int8 in element order */
AVX2 static INLINE __m256i round_to_s8(__m256 a, __m256 b, __m256 c, __m256 d, float inv) {
    const __m256 iv = _mm256_set1_ps(inv);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i qa = _mm256_cvtps_epi32(_mm256_mul_ps(a, iv)), qb = _mm256_cvtps_epi32(_mm256_mul_ps(b, iv));
    __m256i qc = _mm256_cvtps_epi32(_mm256_mul_ps(c, iv)), qd = _mm256_cvtps_epi32(_mm256_mul_ps(d, iv));
    qa = _mm256_max_epi32(_mm256_min_epi32(qa, lim), nlim);
    qb = _mm256_max_epi32(_mm256_min_epi32(qb, lim), nlim);
    qc = _mm256_max_epi32(_mm256_min_epi32(qc, lim), nlim);
    qd = _mm256_max_epi32(_mm256_min_epi32(qd, lim), nlim);
    /* the packs work per 128-bit lane: dwords come out as a0 b0 c0 d0 | a1 b1 c1 d1 (4 values
     * each), so one dword permute restores a0 a1 b0 b1 c0 c1 d0 d1 */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(qa, qb), _mm256_packs_epi32(qc, qd));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

AVX2 static void quantize_input_avx2(const float *x, int64_t K, ck_qinput *out) {
    const int64_t G = K / CK_GROUP;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < G; g++) {
        const float *v = x + g * 32;
        __m256 a = _mm256_loadu_ps(v), b = _mm256_loadu_ps(v + 8), c = _mm256_loadu_ps(v + 16),
               d = _mm256_loadu_ps(v + 24);
        float amax = abs_max4(a, b, c, d);
        out->scale[g] = amax / 127.0f;
        __m256i q = round_to_s8(a, b, c, d, amax > 0 ? 127.0f / amax : 0.0f);
        _mm256_storeu_si256((__m256i *)(out->value + g * 32), q);
        _mm256_storeu_si256((__m256i *)(out->magnitude + g * 32), _mm256_abs_epi8(q));
        uint64_t neg = (uint32_t)_mm256_movemask_epi8(q);
        if (g % 2 == 0) out->negative[g / 2] = neg; else out->negative[g / 2] |= neg << 32;
        /* sum4: 1·q pairs into int16, then int16 pairs into int32 = sums of 4 consecutive values */
        __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
        _mm256_storeu_si256((__m256i *)(out->sum4 + g * 8), s4);
    }
    ck_quantize_input_q4_order(G, out);
}

AVX2 static void quantize_rows_u8_avx2(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), flip = _mm256_set1_epi8((char)0x80);
    for (int64_t m = 0; m < M; m++) {
        for (int64_t g = 0; g < G; g++) {
            const float *v = x + m * ldx + g * 32;
            const int len = ck_group_length(K, g);
            __m256 a, b, c, d;
            if (len == 32) {
                a = _mm256_loadu_ps(v), b = _mm256_loadu_ps(v + 8), c = _mm256_loadu_ps(v + 16), d = _mm256_loadu_ps(v + 24);
            } else {
                /* a short last group reads only its own values; the rest load as 0 (x = 0 past K) */
                __m256i n = _mm256_set1_epi32(len);
                a = _mm256_maskload_ps(v, _mm256_cmpgt_epi32(n, lane));
                b = _mm256_maskload_ps(v + 8, _mm256_cmpgt_epi32(n, _mm256_add_epi32(lane, _mm256_set1_epi32(8))));
                c = _mm256_maskload_ps(v + 16, _mm256_cmpgt_epi32(n, _mm256_add_epi32(lane, _mm256_set1_epi32(16))));
                d = _mm256_maskload_ps(v + 24, _mm256_cmpgt_epi32(n, _mm256_add_epi32(lane, _mm256_set1_epi32(24))));
            }
            float amax = abs_max4(a, b, c, d);
            xs[m * G + g] = amax / 127.0f;
            __m256i q = round_to_s8(a, b, c, d, amax > 0 ? 127.0f / amax : 0.0f);
            /* q + 128 as a byte is q with its top bit flipped */
            _mm256_storeu_si256((__m256i *)(xq + m * Kp + g * 32), _mm256_xor_si256(q, flip));
        }
    }
}

/* ---------------- decode GEMV ---------------- */

/* cs[j] = w_scale[g0 + j] · x_scale[g0 + j] for j < count (≤ 8) */
AVX2 static INLINE void group_scales(const uint16_t *sc, const float *xsc, int64_t count, float cs[8]) {
    if (count == 8) {
        __m256 w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc));
        _mm256_storeu_ps(cs, _mm256_mul_ps(w, _mm256_loadu_ps(xsc)));
    } else {
        for (int64_t j = 0; j < count; j++) cs[j] = ck_f16_value(sc[j]) * xsc[j];
    }
}

/* 8-bit weights, two rows at a time, one group (32 bytes per row) per step. The sign of x moves
 * onto the weights (vpsignb, which also zeroes w where x = 0), so vpmaddubsw multiplies |x| (u8,
 * ≤ 127) by sign(x)·w (|·| ≤ 127): pair sums ≤ 32258, exact in int16; vpmaddwd against ones
 * widens them to the group's 8 int32 partial sums, scaled by w_scale·x_scale into float32. */
AVX2 static void gemv_q8_avx2(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                              const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP;
    const __m256i ones = _mm256_set1_epi16(1);
    /* the next pair of rows at the same place: two rows ahead in the contiguous stream, at least
     * 4 KB so short rows still get a useful distance */
    const int64_t pf = 2 * K > 4096 ? 2 * K : 4096;
    float cs0[8], cs1[8];
    int64_t n = n0;
    for (; n < n1; n += 2) {
        const int two = n + 1 < n1;  /* a last single row repeats itself into the unused half */
        const int8_t *w0 = W + n * K, *w1 = two ? w0 + K : w0;
        const uint16_t *sc0 = scales + n * G, *sc1 = two ? sc0 + G : sc0;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            const int64_t gn = G - g0 < 8 ? G - g0 : 8;
            group_scales(sc0 + g0, in->scale + g0, gn, cs0);
            group_scales(sc1 + g0, in->scale + g0, gn, cs1);
            /* 8 groups of a row are 256 bytes: 4 lines per row per block */
            for (int i = 0; i < 4; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 32) + pf + 64 * i, _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + g0 * 32) + pf + 64 * i, _MM_HINT_T0);
            }
            int64_t j = 0;
            for (; j + 2 <= gn; j += 2) {
                /* two groups per step into two accumulator pairs: independent FMA chains */
                const int64_t g = g0 + j;
                __m256i v = _mm256_loadu_si256((const __m256i *)(in->value + g * 32));
                __m256i mg = _mm256_loadu_si256((const __m256i *)(in->magnitude + g * 32));
                __m256i u = _mm256_loadu_si256((const __m256i *)(in->value + g * 32 + 32));
                __m256i mu = _mm256_loadu_si256((const __m256i *)(in->magnitude + g * 32 + 32));
                __m256i d0 = _mm256_maddubs_epi16(mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w0 + g * 32)), v));
                __m256i d1 = _mm256_maddubs_epi16(mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w1 + g * 32)), v));
                __m256i e0 = _mm256_maddubs_epi16(mu, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w0 + g * 32 + 32)), u));
                __m256i e1 = _mm256_maddubs_epi16(mu, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w1 + g * 32 + 32)), u));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(d0, ones)), _mm256_broadcast_ss(cs0 + j), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(d1, ones)), _mm256_broadcast_ss(cs1 + j), a1);
                b0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(e0, ones)), _mm256_broadcast_ss(cs0 + j + 1), b0);
                b1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(e1, ones)), _mm256_broadcast_ss(cs1 + j + 1), b1);
            }
            if (j < gn) {  /* an odd last group */
                const int64_t g = g0 + j;
                __m256i v = _mm256_loadu_si256((const __m256i *)(in->value + g * 32));
                __m256i mg = _mm256_loadu_si256((const __m256i *)(in->magnitude + g * 32));
                __m256i d0 = _mm256_maddubs_epi16(mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w0 + g * 32)), v));
                __m256i d1 = _mm256_maddubs_epi16(mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w1 + g * 32)), v));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(d0, ones)), _mm256_broadcast_ss(cs0 + j), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(d1, ones)), _mm256_broadcast_ss(cs1 + j), a1);
            }
        }
        float r[2];
        __m256 s0 = _mm256_add_ps(a0, b0), s1 = _mm256_add_ps(a1, b1);
        /* both rows' 8 lanes summed at once: hadd pairs rows, then the two halves */
        __m256 h = _mm256_hadd_ps(s0, s1);
        h = _mm256_hadd_ps(h, h);
        __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        r[0] = _mm_cvtss_f32(t);
        r[1] = _mm_cvtss_f32(_mm_shuffle_ps(t, t, 1));
        y[n] = r[0] + (bias ? bias[n] : 0.0f);
        if (two) y[n + 1] = r[1] + (bias ? bias[n + 1] : 0.0f);
    }
}

/* 4-bit weights, two rows at a time, two groups (one 32-byte load per row) per step. The low
 * nibbles of groups g, g+1 are their elements 0–15 and the high nibbles their elements 16–31;
 * ck_quantize_input's value_q4 holds x in that order (per four groups: elements 0–15 of each,
 * then 16–31 of each). vpmaddubsw multiplies the nibbles (u8, ≤ 15) by x (s8): both halves' pair
 * sums added stay ≤ 4·15·127 in int16; vpmaddwd against ones leaves group g in lanes 0–3 and g+1 in
 * lanes 4–7, started from offset_q4 = −8·Σx (the nibbles' offset of 8). */
AVX2 static void gemv_q4_avx2(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                              const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const __m256i ones = _mm256_set1_epi16(1), nib = _mm256_set1_epi8(0x0F);
    /* the scales of pair p of a block of 8 groups: lanes 0–3 group 2p, lanes 4–7 group 2p+1 */
    const __m256i spread0 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i step = _mm256_set1_epi32(2);
    const int64_t pf = K > 4096 ? K : 4096;  /* the next pair of rows (K bytes) at the same place */
    float cs0[8], cs1[8];
    int64_t n = n0;
    for (; n < n1; n += 2) {
        const int two = n + 1 < n1;
        const uint8_t *w0 = W + n * (K / 2), *w1 = two ? w0 + K / 2 : w0;
        const uint16_t *sc0 = scales + n * G, *sc1 = two ? sc0 + G : sc0;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        for (int64_t g0 = 0; g0 < G4; g0 += 8) {
            const int64_t gn = G4 - g0 < 8 ? G4 - g0 : 8;
            group_scales(sc0 + g0, in->scale + g0, gn, cs0);
            group_scales(sc1 + g0, in->scale + g0, gn, cs1);
            __m256 c0 = _mm256_loadu_ps(cs0), c1 = _mm256_loadu_ps(cs1);
            /* 8 groups of a row are 128 bytes: 2 lines per row per block */
            for (int i = 0; i < 2; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 16) + pf + 64 * i, _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + g0 * 16) + pf + 64 * i, _MM_HINT_T0);
            }
            __m256i idx = spread0;
            for (int64_t j = 0; j < gn; j += 2, idx = _mm256_add_epi32(idx, step)) {
                const int64_t g = g0 + j;
                const int8_t *xb = in->value_q4 + (g & ~(int64_t)3) * 32 + (g & 2) * 16;
                __m256i xlo = _mm256_loadu_si256((const __m256i *)xb);
                __m256i xhi = _mm256_loadu_si256((const __m256i *)(xb + 64));
                __m256i off = _mm256_loadu_si256((const __m256i *)(in->offset_q4 + g * 4));
                __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + g * 16));
                __m256i v1 = _mm256_loadu_si256((const __m256i *)(w1 + g * 16));
                __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v0, nib), xlo),
                                              _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), nib), xhi));
                __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v1, nib), xlo),
                                              _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), nib), xhi));
                __m256i d0 = _mm256_add_epi32(_mm256_madd_epi16(s0, ones), off);
                __m256i d1 = _mm256_add_epi32(_mm256_madd_epi16(s1, ones), off);
                __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(d0), _mm256_permutevar8x32_ps(c0, idx));
                __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(d1), _mm256_permutevar8x32_ps(c1, idx));
                /* alternate accumulators between steps: shorter dependency chains */
                if (j & 2) { b0 = _mm256_add_ps(b0, f0); b1 = _mm256_add_ps(b1, f1); }
                else { a0 = _mm256_add_ps(a0, f0); a1 = _mm256_add_ps(a1, f1); }
            }
        }
        __m256 s0 = _mm256_add_ps(a0, b0), s1 = _mm256_add_ps(a1, b1);
        __m256 h = _mm256_hadd_ps(s0, s1);
        h = _mm256_hadd_ps(h, h);
        __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        float r0 = _mm_cvtss_f32(t), r1 = _mm_cvtss_f32(_mm_shuffle_ps(t, t, 1));
        for (int64_t g = G4; g < G; g++) {  /* up to three last groups outside a block of four */
            r0 += ck_q_group_dot(in, W, CK_Q4, K, n, g, ck_f16_value(sc0[g]));
            if (two) r1 += ck_q_group_dot(in, W, CK_Q4, K, n + 1, g, ck_f16_value(sc1[g]));
        }
        y[n] = r0 + (bias ? bias[n] : 0.0f);
        if (two) y[n + 1] = r1 + (bias ? bias[n + 1] : 0.0f);
    }
}

AVX2 static void gemv_q_int8_avx2(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                                  const float *bias, float *y, int64_t n0, int64_t n1) {
    if (format == CK_Q4) gemv_q4_avx2(in, K, (const uint8_t *)W, scales, bias, y, n0, n1);
    else gemv_q8_avx2(in, K, (const int8_t *)W, scales, bias, y, n0, n1);
}

AVX2 static double int8_probe_avx2(int64_t n, float *sink) {
    __m256i a[12];
    const __m256i w = _mm256_set1_epi16(-2);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi32(i);
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(a[i], w));
    __m256i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, a[i]);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    *sink = (float)(_mm_cvtsi128_si32(h) + _mm_extract_epi32(h, 1) + _mm_extract_epi32(h, 2) + _mm_extract_epi32(h, 3));
    return (double)n * 12 * 16 * 2;
}

void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->int8_products = 1;
    t->quantize_input = quantize_input_avx2;
    t->gemv_q_int8 = gemv_q_int8_avx2;
    t->quantize_rows_u8 = quantize_rows_u8_avx2;
    t->int8_probe = int8_probe_avx2;
}
#else
void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
