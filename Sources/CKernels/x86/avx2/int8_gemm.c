/* The avx2 level's int8 prefill GEMM: offset-u8 activation rows × CK_Q8 / CK_Q4 weights with
 * exact integer sums and no dot-product instructions. vpmaddubsw (u8 × s8, pairs summed into
 * int16) saturates, so q4 weights − 8 (|w| ≤ 8) meet activations ≤ 255 there, and q8 weights are
 * widened to int16 for vpmaddwd, whose pair sums are int32. */
#include "avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

/* ---------------- prefill GEMM ---------------- */

/* A packed panel holds QN = 32 weight rows (columns of y) as QC = 4 vectors of 8 columns, split
 * into two halves of HC = 2 vectors. A register tile is QR activation rows × one half (QR·HC
 * int32 or int16 accumulators, HC weight vectors, a broadcast and a product: ≤ 16 registers);
 * per group the tile widens or reads its rows once and runs both halves, so the per-row work of
 * a group is shared by 32 columns.
 * q8: weights widened to int16, per group, half and pair of inputs k, k+1: 8 columns ×
 *     (w_k, w_k+1) per vector (2·QN bytes per input feature); the tile widens each row's group to
 *     int16 q = u − 128 and vpmaddwd multiplies a broadcast (q_k, q_k+1) into exact int32 pair
 *     sums, the first pair's products starting each sum (no zeroing, one addition fewer).
 * q4: weights as s8 w = nibble − 8, per group, half and 4-byte chunk: 8 columns × 4 weights per
 *     vector (QN bytes per feature); vpmaddubsw multiplies a broadcast chunk of offset-u8
 *     activations (u ≤ 255) by them, pair sums ≤ 2·255·8 = 4080, accumulated in int16 over the
 *     group's 8 chunks, then one vpmaddwd against ones. Each int16 lane sums 16 of the group's
 *     products, and starts from its share of the offset's compensation −128·Σw over the same 16
 *     weights: after j chunks a lane holds Σ_done q·w − 128·Σ_rest w, |·| ≤ 16·128·8 = 16384,
 *     so it never saturates and the compensation costs no instruction beyond a load.
 * Per group the panel also holds the q4 compensations (QC vectors of 16 int16) and QN weight
 * scales. */
#define QC 4
#define HC 2
#define QN (QC * 8)
#define QR 4

/* 8 rows' 16 words → per 128-bit lane an 8×8 transpose: vector j holds word j of each row in
 * its low lane and word j + 8 in its high lane */
AVX2 static INLINE void transpose8_epi16(__m256i r[8]) {
    __m256i a0 = _mm256_unpacklo_epi16(r[0], r[1]), a1 = _mm256_unpackhi_epi16(r[0], r[1]);
    __m256i a2 = _mm256_unpacklo_epi16(r[2], r[3]), a3 = _mm256_unpackhi_epi16(r[2], r[3]);
    __m256i a4 = _mm256_unpacklo_epi16(r[4], r[5]), a5 = _mm256_unpackhi_epi16(r[4], r[5]);
    __m256i a6 = _mm256_unpacklo_epi16(r[6], r[7]), a7 = _mm256_unpackhi_epi16(r[6], r[7]);
    __m256i b0 = _mm256_unpacklo_epi32(a0, a2), b1 = _mm256_unpackhi_epi32(a0, a2);
    __m256i b2 = _mm256_unpacklo_epi32(a1, a3), b3 = _mm256_unpackhi_epi32(a1, a3);
    __m256i b4 = _mm256_unpacklo_epi32(a4, a6), b5 = _mm256_unpackhi_epi32(a4, a6);
    __m256i b6 = _mm256_unpacklo_epi32(a5, a7), b7 = _mm256_unpackhi_epi32(a5, a7);
    r[0] = _mm256_unpacklo_epi64(b0, b4), r[1] = _mm256_unpackhi_epi64(b0, b4);
    r[2] = _mm256_unpacklo_epi64(b1, b5), r[3] = _mm256_unpackhi_epi64(b1, b5);
    r[4] = _mm256_unpacklo_epi64(b2, b6), r[5] = _mm256_unpackhi_epi64(b2, b6);
    r[6] = _mm256_unpacklo_epi64(b3, b7), r[7] = _mm256_unpackhi_epi64(b3, b7);
}

/* Group g of 8 weight rows (rows past `live` zero) as 32 s8 each in element order: q8 as
 * stored (a short last group zero-filled), q4 unpacked to nibble − 8. */
AVX2 static INLINE void load_group_rows(const void *W, int format, int64_t K, int64_t n, int live, int64_t g,
                                        __m256i r[8]) {
    const int len = ck_group_length(K, g);
    for (int j = 0; j < 8; j++) {
        if (j >= live) {
            r[j] = _mm256_setzero_si256();
        } else if (format == CK_Q4) {
            __m128i b = _mm_loadu_si128((const __m128i *)((const uint8_t *)W + (n + j) * (K / 2) + g * 16));
            __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
            r[j] = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
        } else if (len == 32) {
            r[j] = _mm256_loadu_si256((const __m256i *)((const int8_t *)W + (n + j) * K + g * 32));
        } else {
            int8_t tmp[32] = {0};
            memcpy(tmp, (const int8_t *)W + (n + j) * K + g * 32, (size_t)len);
            r[j] = _mm256_loadu_si256((const __m256i *)tmp);
        }
    }
}

/* Packs weight rows n ..< n + cols (≤ QN; the rest zero) in the layout above. */
AVX2 static void pack_panel(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t cols,
                            void *pw, int16_t *comp, float *ws) {
    const int64_t G = ck_groups(K);
    const __m256i ones8 = _mm256_set1_epi8(1);
    for (int c = 0; c < QC; c++) {
        int live = (int)(cols - 8 * c);
        live = live < 0 ? 0 : (live > 8 ? 8 : live);
        const int h = c / HC, ch2 = c % HC;
        for (int64_t g = 0; g < G; g++) {
            __m256i r[8];
            load_group_rows(W, format, K, n + 8 * c, live, g, r);
            if (format == CK_Q4) {
                transpose8_epi32(r);  /* r[ch]: chunk ch (4 weights) of each of the 8 rows */
                __m256i sum = _mm256_setzero_si256();
                int8_t *dst = (int8_t *)pw + (g * 2 + h) * 8 * HC * 32;
                for (int ch = 0; ch < 8; ch++) {
                    _mm256_store_si256((__m256i *)(dst + (ch * HC + ch2) * 32), r[ch]);
                    sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(ones8, r[ch]));
                }
                /* each int16 lane's −128·Σw over the 16 weights that lane accumulates */
                _mm256_store_si256((__m256i *)(comp + (g * QC + c) * 16), _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sum, 7)));
            } else {
                transpose8_epi16(r);  /* r[p]: input pair p (low lane) and p + 8 (high lane) of each row */
                int16_t *dst = (int16_t *)pw + (g * 2 + h) * 16 * HC * 16;
                for (int p = 0; p < 8; p++) {
                    _mm256_store_si256((__m256i *)(dst + (p * HC + ch2) * 16), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(r[p])));
                    _mm256_store_si256((__m256i *)(dst + ((p + 8) * HC + ch2) * 16), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(r[p], 1)));
                }
            }
            uint16_t half[8];
            for (int j = 0; j < 8; j++) half[j] = j < live ? scales[(n + 8 * c + j) * G + g] : 0;
            _mm256_store_ps(ws + g * QN + 8 * c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)half)));
        }
    }
}

/* acc[r][c] += float(d[r][c]) · w_scale[c] · x_scale[r] for one group and half; acc in memory */
AVX2 static INLINE void scale_half(__m256i d[QR][HC], float acc[QR][QN], const float *ws, const float *xs, int64_t G,
                                   const int mr) {
    for (int r = 0; r < mr; r++) {
        __m256 sx = _mm256_broadcast_ss(xs + r * G);
        for (int c = 0; c < HC; c++) {
            __m256 s = _mm256_mul_ps(_mm256_load_ps(ws + 8 * c), sx);
            _mm256_store_ps(acc[r] + 8 * c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r][c]), s, _mm256_load_ps(acc[r] + 8 * c)));
        }
    }
}

/* y rows of the tile (+ bias), the first `cols` columns */
AVX2 static INLINE void store_tile(float acc[QR][QN], const float *bias, float *y, int64_t ldy, int64_t cols,
                                   const int mr) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int c = 0; c < QC; c++) {
        int64_t live = cols - 8 * c;
        if (live <= 0) break;
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(live > 8 ? 8 : live)), lane);
        __m256 b = bias ? _mm256_maskload_ps(bias + 8 * c, mask) : _mm256_setzero_ps();
        for (int r = 0; r < mr; r++) {
            __m256 v = _mm256_add_ps(_mm256_load_ps(acc[r] + 8 * c), b);
            if (live >= 8) _mm256_storeu_ps(y + r * ldy + 8 * c, v);
            else _mm256_maskstore_ps(y + r * ldy + 8 * c, mask, v);
        }
    }
}

/* group g of mr activation rows (offset u8) as int16 q = u − 128 */
AVX2 static INLINE void widen_group(const uint8_t *xq, int64_t Kp, int64_t g, int16_t xw[QR][32], const int mr) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int r = 0; r < mr; r++) {
        __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(xq + r * Kp + g * 32)), flip);
        _mm256_store_si256((__m256i *)xw[r], _mm256_cvtepi8_epi16(_mm256_castsi256_si128(u)));
        _mm256_store_si256((__m256i *)(xw[r] + 16), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(u, 1)));
    }
}

/* q8 tile: mr (≤ QR) rows × `halves` halves of the panel over all of K */
AVX2 static INLINE void tile_q8(const uint8_t *xq, const float *xs, int64_t K, const int16_t *pw, const float *ws,
                                const float *bias, float *y, int64_t ldy, int64_t cols, int halves, const int mr) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    __attribute__((aligned(32))) float acc[QR][QN];
    /* each row's group as int16 q = u − 128, one group ahead: the broadcasts then read stores
     * made a group earlier rather than wait on fresh ones */
    __attribute__((aligned(32))) int16_t xw[2][QR][32];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < QC; c++) _mm256_store_ps(acc[r] + 8 * c, _mm256_setzero_ps());
    widen_group(xq, Kp, 0, xw[0], mr);
    for (int64_t g = 0; g < G; g++) {
        if (g + 1 < G) widen_group(xq, Kp, g + 1, xw[(g + 1) & 1], mr);
        int16_t(*xg)[32] = xw[g & 1];
        for (int h = 0; h < halves; h++) {
            const int16_t *p = pw + (g * 2 + h) * 16 * HC * 16;
            __m256i d[QR][HC];
            {
                __m256i w[HC];
                for (int c = 0; c < HC; c++) w[c] = _mm256_load_si256((const __m256i *)(p + c * 16));
                for (int r = 0; r < mr; r++) {
                    int32_t pair;
                    memcpy(&pair, xg[r], 4);
                    __m256i a = _mm256_set1_epi32(pair);
                    for (int c = 0; c < HC; c++) d[r][c] = _mm256_madd_epi16(a, w[c]);
                }
            }
            for (int k = 1; k < 16; k++) {
                __m256i w[HC];
                for (int c = 0; c < HC; c++) w[c] = _mm256_load_si256((const __m256i *)(p + (k * HC + c) * 16));
                for (int r = 0; r < mr; r++) {
                    int32_t pair;
                    memcpy(&pair, xg[r] + 2 * k, 4);
                    __m256i a = _mm256_set1_epi32(pair);
                    for (int c = 0; c < HC; c++) d[r][c] = _mm256_add_epi32(d[r][c], _mm256_madd_epi16(a, w[c]));
                }
            }
            scale_half(d, (float(*)[QN])(&acc[0][h * HC * 8]), ws + g * QN + h * HC * 8, xs + g, G, mr);
        }
    }
    store_tile(acc, bias, y, ldy, cols, mr);
}

/* q4 tile: mr (≤ QR) rows × `halves` halves of the panel over all of K */
AVX2 static INLINE void tile_q4(const uint8_t *xq, const float *xs, int64_t K, const int8_t *pw, const int16_t *comp,
                                const float *ws, const float *bias, float *y, int64_t ldy, int64_t cols, int halves,
                                const int mr) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    const __m256i ones = _mm256_set1_epi16(1);
    __attribute__((aligned(32))) float acc[QR][QN];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < QC; c++) _mm256_store_ps(acc[r] + 8 * c, _mm256_setzero_ps());
    for (int64_t g = 0; g < G; g++) {
        for (int h = 0; h < halves; h++) {
            __m256i s[QR][HC];
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < HC; c++)
                    s[r][c] = _mm256_load_si256((const __m256i *)(comp + (g * QC + h * HC + c) * 16));
            const int8_t *p = pw + (g * 2 + h) * 8 * HC * 32;
            for (int ch = 0; ch < 8; ch++) {
                __m256i w[HC];
                for (int c = 0; c < HC; c++) w[c] = _mm256_load_si256((const __m256i *)(p + (ch * HC + c) * 32));
                for (int r = 0; r < mr; r++) {
                    int32_t chunk;
                    memcpy(&chunk, xq + r * Kp + g * 32 + ch * 4, 4);
                    __m256i a = _mm256_set1_epi32(chunk);
                    for (int c = 0; c < HC; c++) s[r][c] = _mm256_add_epi16(s[r][c], _mm256_maddubs_epi16(a, w[c]));
                }
            }
            __m256i d[QR][HC];
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < HC; c++) d[r][c] = _mm256_madd_epi16(s[r][c], ones);
            scale_half(d, (float(*)[QN])(&acc[0][h * HC * 8]), ws + g * QN + h * HC * 8, xs + g, G, mr);
        }
    }
    store_tile(acc, bias, y, ldy, cols, mr);
}

AVX2 static void gemm_q_int8_avx2(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                                  const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                  int64_t n0, int64_t n1, void *scratch) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    /* scratch: the packed panel (q8: 2·QN = 64 bytes per feature, q4: QN), then per group the
     * compensations (QC·32 bytes) and scales (QN floats): ck_gemm_q_int8_scratch_bytes gives
     * 64 per feature + 256 per group + 64 */
    char *pw = (char *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31);
    int16_t *comp = (int16_t *)(pw + Kp * QN * (format == CK_Q8 ? 2 : 1));
    float *ws = (float *)(comp + G * QC * 16);
    const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
    for (int64_t n = n0; n < n1; n += QN) {
        const int64_t cols = n1 - n < QN ? n1 - n : QN;
        const int halves = cols > HC * 8 ? 2 : 1;
        pack_panel(W, scales, format, K, n, cols, pw, comp, ws);
        const float *b = bias ? bias + n : NULL;
        /* the next panel's rows are one contiguous block: bring it into L2 a slice per tile, so
         * the next pack finds it there */
        const char *next = (const char *)W + (n + QN) * rowBytes;
        const int64_t lines = n + QN < n1 ? (QN * rowBytes) / 64 : 0;
        const int64_t tiles = M / QR + 1, perTile = (lines + tiles - 1) / tiles;
        int64_t fetched = 0;
        for (int64_t m = 0; m < M; m += QR) {
            for (int64_t j = 0; j < perTile && fetched < lines; j++, fetched++) _mm_prefetch(next + fetched * 64, _MM_HINT_T1);
            const uint8_t *xr = xq + m * Kp;
            const float *sr = xs + m * G;
            float *yr = y + m * ldy + n;
            const int64_t rows = M - m;
            const int mr = rows >= QR ? QR : (int)rows;
            if (format == CK_Q8) {
                const int16_t *p16 = (const int16_t *)pw;
                switch (mr) {
                case QR: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, QR); break;
#if QR > 5
                case 5: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, 5); break;
#endif
#if QR > 4
                case 4: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, 4); break;
#endif
                case 3: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, 3); break;
                case 2: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, 2); break;
                default: tile_q8(xr, sr, K, p16, ws, b, yr, ldy, cols, halves, 1); break;
                }
            } else {
                const int8_t *p8 = (const int8_t *)pw;
                switch (mr) {
                case QR: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, QR); break;
#if QR > 5
                case 5: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, 5); break;
#endif
#if QR > 4
                case 4: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, 4); break;
#endif
                case 3: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, 3); break;
                case 2: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, 2); break;
                default: tile_q4(xr, sr, K, p8, comp, ws, b, yr, ldy, cols, halves, 1); break;
                }
            }
        }
    }
}

void ck_fill_avx2_int8_gemm(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->gemm_q_int8 = gemm_q_int8_avx2;
}
#else
void ck_fill_avx2_int8_gemm(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
