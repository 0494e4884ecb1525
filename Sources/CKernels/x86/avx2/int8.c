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

/* ---------------- decode GEMV ----------------
 *
 * Decode reads every weight byte once per token, so these kernels are built around the memory
 * stream. Four rows per pass share each input load and keep four weight streams in flight; the
 * next four rows are prefetched at the same place in the row, into L2 (T1: prefetches into L1
 * hold its few miss buffers and delay the demand loads; on Zen 4 they halved the rate). The
 * scales of 8 groups per row are widened together (F16C) and kept in a register; each group's
 * scale is spread over the lanes with one vpermps. */

/* group g of one q8 row against the input: |x| (u8) × sign(x)·w (vpsignb, which also zeroes w
 * where x = 0) in vpmaddubsw, pair sums ≤ 2·127·127 = 32258 (exact in int16), then vpmaddwd
 * against ones: the group's 8 int32 partial sums */
AVX2 static INLINE __m256i q8_group(const int8_t *w, __m256i v, __m256i mg, __m256i ones) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)w), v)), ones);
}

/* rows n ..< n+R (R ≤ 4) of 8-bit weights: per group and row one 32-byte load, its 8 int32 sums
 * scaled by w_scale·x_scale into float32 (fma). pf: the prefetch distance in bytes. */
AVX2 static INLINE void gemv_q8_rows(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                                     const float *bias, float *y, int64_t n, const int R, int64_t pf) {
    const int64_t G = K / CK_GROUP;
    const __m256i ones = _mm256_set1_epi16(1), one = _mm256_set1_epi32(1);
    const int8_t *w = W + n * K;
    const uint16_t *sc = scales + n * G;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        const int64_t gn = G - g0 < 8 ? G - g0 : 8;
        __m256 c[4];
        for (int r = 0; r < R; r++) c[r] = row_scales(sc + r * G + g0, in->scale + g0, gn);
        /* 8 groups of a row are 256 bytes: 4 lines per row */
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 4; i++) _mm_prefetch((const char *)(w + r * K + g0 * 32) + pf + 64 * i, _MM_HINT_T1);
        __m256i sel = _mm256_setzero_si256();
        for (int64_t j = 0; j < gn; j++, sel = _mm256_add_epi32(sel, one)) {
            const int64_t g = g0 + j;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(in->value + g * 32));
            const __m256i mg = _mm256_loadu_si256((const __m256i *)(in->magnitude + g * 32));
            for (int r = 0; r < R; r++) {
                __m256i d = q8_group(w + r * K + g * 32, v, mg, ones);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[r], sel), acc[r]);
            }
        }
    }
    store_rows(acc, R, bias, y, n);
}

AVX2 static void gemv_q8_avx2(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                              const float *bias, float *y, int64_t n0, int64_t n1) {
    /* the next four rows at the same place: 4·K bytes ahead */
    const int64_t pf = 4 * K;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) gemv_q8_rows(in, K, W, scales, bias, y, n, 4, pf);
    if (n + 2 <= n1) gemv_q8_rows(in, K, W, scales, bias, y, n, 2, pf), n += 2;
    if (n < n1) gemv_q8_rows(in, K, W, scales, bias, y, n, 1, pf);
}

/* rows n ..< n+R (R ≤ 4) of 4-bit weights, four groups (two 32-byte loads per row) per step. The
 * low nibbles of groups g, g+1 are their elements 0–15 and the high nibbles their elements 16–31;
 * value_q4 holds x in that order (per four groups: elements 0–15 of each, then 16–31 of each).
 * vpmaddubsw multiplies the nibbles (u8, ≤ 15) by x (s8): both halves' pair sums added stay
 * ≤ 4·15·127 = 7620 in int16, so vphaddw may pair them once more (≤ 15240) across the two loads:
 * per 128-bit lane it leaves group g (g+1) in words 0–3 and g+2 (g+3) in words 4–7. vpmaddwd
 * against ones then gives int32 lanes for groups g, g, g+2, g+2 | g+1, g+1, g+3, g+3, started from
 * offset_q4 = −8·Σx (the nibbles' offset of 8) paired the same way by vphaddd: one conversion and
 * one fma per four groups. */
AVX2 static INLINE void gemv_q4_rows(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                                     const float *bias, float *y, int64_t n, const int R, int64_t pf) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3, rb = K / 2;
    const __m256i ones = _mm256_set1_epi16(1), nib = _mm256_set1_epi8(0x0F);
    /* the scale of each lane's group in a block of 8 (steps of four groups) */
    const __m256i spread0 = _mm256_setr_epi32(0, 0, 2, 2, 1, 1, 3, 3), step = _mm256_set1_epi32(4);
    const uint8_t *w = W + n * rb;
    const uint16_t *sc = scales + n * G;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G4; g0 += 8) {
        const int64_t gn = G4 - g0 < 8 ? G4 - g0 : 8;
        __m256 c[4];
        for (int r = 0; r < R; r++) c[r] = row_scales(sc + r * G + g0, in->scale + g0, gn);
        /* 8 groups of a row are 128 bytes: 2 lines per row */
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 2; i++) _mm_prefetch((const char *)(w + r * rb + g0 * 16) + pf + 64 * i, _MM_HINT_T1);
        __m256i sel = spread0;
        for (int64_t j = 0; j < gn; j += 4, sel = _mm256_add_epi32(sel, step)) {
            const int64_t g = g0 + j;
            const int8_t *xb = in->value_q4 + g * 32;
            const __m256i xlo0 = _mm256_loadu_si256((const __m256i *)xb), xlo1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
            const __m256i xhi0 = _mm256_loadu_si256((const __m256i *)(xb + 64)), xhi1 = _mm256_loadu_si256((const __m256i *)(xb + 96));
            const __m256i off = _mm256_hadd_epi32(_mm256_loadu_si256((const __m256i *)(in->offset_q4 + g * 4)),
                                                  _mm256_loadu_si256((const __m256i *)(in->offset_q4 + g * 4 + 8)));
            for (int r = 0; r < R; r++) {
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16 + 32));
                __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v0, nib), xlo0),
                                              _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), nib), xhi0));
                __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v1, nib), xlo1),
                                              _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), nib), xhi1));
                __m256i d = _mm256_add_epi32(_mm256_madd_epi16(_mm256_hadd_epi16(s0, s1), ones), off);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[r], sel), acc[r]);
            }
        }
    }
    store_q4_rows(in, W, K, sc, acc, R, bias, y, n);
}

AVX2 static void gemv_q4_avx2(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                              const float *bias, float *y, int64_t n0, int64_t n1) {
    /* two passes on (8 rows, 4·K bytes) at the same place: 4-bit rows pass quickly, and with the
     * next pass's rows (2·K bytes) the reads arrived too late, about 10 % slower on a Zen 4 */
    const int64_t pf = 4 * K;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) gemv_q4_rows(in, K, W, scales, bias, y, n, 4, pf);
    if (n + 2 <= n1) gemv_q4_rows(in, K, W, scales, bias, y, n, 2, pf), n += 2;
    if (n < n1) gemv_q4_rows(in, K, W, scales, bias, y, n, 1, pf);
}

AVX2 static void gemv_q_int8_avx2(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                                  const float *bias, float *y, int64_t n0, int64_t n1) {
    if (format == CK_Q4) gemv_q4_avx2(in, K, (const uint8_t *)W, scales, bias, y, n0, n1);
    else gemv_q8_avx2(in, K, (const int8_t *)W, scales, bias, y, n0, n1);
}

/* gemv_q8_avx2 and gemv_q4_avx2 for M inputs (decode of M sequences at once). Per weight row and
 * input the same groups, steps and instructions as the one-input kernels, whose result for a row
 * does not depend on how many rows share a pass (store_rows reduces each row alike), so every
 * row of y is theirs bit for bit; but each weight load (and, for q4, the nibble unpacking) serves
 * several inputs. Two weight rows per pass and at most ROWS_MAX inputs per chunk keep the 2·M
 * accumulators, two rows' weights and the constants in the 16 registers; larger M runs in chunks
 * over blocks of ROWS_NB rows. R and M are compile-time constants in each specialisation. */
#define ROWS_MAX CK_ROWS_CHUNK
#define ROWS_NB 16

AVX2 static INLINE void gemv_q8_batch(const ck_qinput *in, const int M, int64_t K, const int8_t *W,
                                      const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                      const int R) {
    const int64_t G = K / CK_GROUP;
    const __m256i ones = _mm256_set1_epi16(1), one = _mm256_set1_epi32(1);
    const int8_t *w = W + n * K;
    const uint16_t *sc = scales + n * G;
    __m256 acc[ROWS_MAX][2];
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) acc[m][r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        const int64_t gn = G - g0 < 8 ? G - g0 : 8;
        __m256 c[ROWS_MAX][2];
        for (int m = 0; m < M; m++)
            for (int r = 0; r < R; r++) c[m][r] = row_scales(sc + r * G + g0, in[m].scale + g0, gn);
        /* the rows two passes on (4·K bytes), as the one-input kernel's next four */
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 4; i++) _mm_prefetch((const char *)(w + r * K + g0 * 32) + 4 * K + 64 * i, _MM_HINT_T1);
        __m256i sel = _mm256_setzero_si256();
        for (int64_t j = 0; j < gn; j++, sel = _mm256_add_epi32(sel, one)) {
            const int64_t g = g0 + j;
            __m256i wv[2];
            for (int r = 0; r < R; r++) wv[r] = _mm256_loadu_si256((const __m256i *)(w + r * K + g * 32));
            for (int m = 0; m < M; m++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(in[m].value + g * 32));
                const __m256i mg = _mm256_loadu_si256((const __m256i *)(in[m].magnitude + g * 32));
                for (int r = 0; r < R; r++) {
                    /* q8_group on a loaded row */
                    __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(mg, _mm256_sign_epi8(wv[r], v)), ones);
                    acc[m][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[m][r], sel), acc[m][r]);
                }
            }
        }
    }
    for (int m = 0; m < M; m++) store_rows(acc[m], R, bias, y + m * ldy, n);
}

AVX2 static INLINE void gemv_q4_batch(const ck_qinput *in, const int M, int64_t K, const uint8_t *W,
                                      const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                      const int R) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3, rb = K / 2;
    const __m256i ones = _mm256_set1_epi16(1), nib = _mm256_set1_epi8(0x0F);
    const __m256i spread0 = _mm256_setr_epi32(0, 0, 2, 2, 1, 1, 3, 3), step = _mm256_set1_epi32(4);
    const uint8_t *w = W + n * rb;
    const uint16_t *sc = scales + n * G;
    __m256 acc[ROWS_MAX][2];
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) acc[m][r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G4; g0 += 8) {
        const int64_t gn = G4 - g0 < 8 ? G4 - g0 : 8;
        __m256 c[ROWS_MAX][2];
        for (int m = 0; m < M; m++)
            for (int r = 0; r < R; r++) c[m][r] = row_scales(sc + r * G + g0, in[m].scale + g0, gn);
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 2; i++) _mm_prefetch((const char *)(w + r * rb + g0 * 16) + 4 * K + 64 * i, _MM_HINT_T1);
        __m256i sel = spread0;
        for (int64_t j = 0; j < gn; j += 4, sel = _mm256_add_epi32(sel, step)) {
            const int64_t g = g0 + j;
            /* per row: low and high nibbles of both 32-byte loads */
            __m256i lo0[2], hi0[2], lo1[2], hi1[2];
            for (int r = 0; r < R; r++) {
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16 + 32));
                lo0[r] = _mm256_and_si256(v0, nib), hi0[r] = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
                lo1[r] = _mm256_and_si256(v1, nib), hi1[r] = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
            }
            for (int m = 0; m < M; m++) {
                const int8_t *xb = in[m].value_q4 + g * 32;
                const __m256i xlo0 = _mm256_loadu_si256((const __m256i *)xb), xlo1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
                const __m256i xhi0 = _mm256_loadu_si256((const __m256i *)(xb + 64)), xhi1 = _mm256_loadu_si256((const __m256i *)(xb + 96));
                const __m256i off = _mm256_hadd_epi32(_mm256_loadu_si256((const __m256i *)(in[m].offset_q4 + g * 4)),
                                                      _mm256_loadu_si256((const __m256i *)(in[m].offset_q4 + g * 4 + 8)));
                for (int r = 0; r < R; r++) {
                    __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0[r], xlo0), _mm256_maddubs_epi16(hi0[r], xhi0));
                    __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1[r], xlo1), _mm256_maddubs_epi16(hi1[r], xhi1));
                    __m256i d = _mm256_add_epi32(_mm256_madd_epi16(_mm256_hadd_epi16(s0, s1), ones), off);
                    acc[m][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[m][r], sel), acc[m][r]);
                }
            }
        }
    }
    for (int m = 0; m < M; m++) store_q4_rows(&in[m], W, K, sc, acc[m], R, bias, y + m * ldy, n);
}

/* Blocks of ROWS_NB weight rows, each for every chunk of inputs in turn: the chunks after the
 * first find the block's weights in L2. */
AVX2 static void gemv_q_int8_rows_avx2(const ck_qinput *in, int64_t M, int64_t K, const void *W, const uint16_t *scales,
                                       int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    CK_Q_INT8_ROWS_BODY(gemv_q4_batch, gemv_q8_batch, ROWS_NB)
}

/* 12 independent chains of the q8 prefill tile's step (vpmaddwd of int16 pairs, vpaddd into
 * int32): 16 multiply-adds per vpmaddwd, counted 2 operations each. */
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

/* 12 independent chains of the q4 prefill tile's step (vpmaddubsw of u8 by s8 pairs into int16,
 * vpaddw): 32 multiply-adds per vpmaddubsw, counted 2 operations each. */
AVX2 static double int8_probe_q4_avx2(int64_t n, float *sink) {
    __m256i a[12];
    const __m256i w = _mm256_set1_epi8(-3);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi8((char)(i + 1));
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm256_add_epi16(a[i], _mm256_maddubs_epi16(a[i], w));
    __m256i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_epi16(s, a[i]);
    *sink = (float)_mm256_extract_epi16(s, 0);
    return (double)n * 12 * 32 * 2;
}

void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->int8_products = 1;
    t->quantize_input = quantize_input_avx2;
    t->gemv_q_int8 = gemv_q_int8_avx2;
    t->gemv_q_int8_rows = gemv_q_int8_rows_avx2;
    t->quantize_rows_u8 = quantize_rows_u8_avx2;
    t->int8_probe = int8_probe_avx2;
    t->int8_probe_q4 = int8_probe_q4_avx2;
}
#else
void ck_fill_avx2_int8(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
