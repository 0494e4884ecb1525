/* The avx2 level's float32 products: conversions, dot/axpy, the small-matrix linear, the packed
 * GEMM for prefill, the decode GEMVs over bf16 and q8/q4 weights, and the read/FMA probes.
 * 256-bit vectors (8 floats) in 16 registers, no masks: tails use vmaskmovps loads or scalar code. */
#include "avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <math.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* lanes [8 − t, 16 − t) of this table are a vmaskmovps mask selecting the first t lanes */
static const int32_t tail_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

AVX2_INLINE __m256i tail_mask(int64_t t) { return _mm256_loadu_si256((const __m256i *)(tail_lanes + 8 - t)); }


/* 8 bf16 values widened exactly: a bf16 is the high half of its float32 */
AVX2_INLINE __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

AVX2 static void convert_row_avx2(const void *W, int format, int64_t K, int64_t row, float *out) {
    if (format == CK_F32) {
        memcpy(out, (const float *)W + row * K, (size_t)K * sizeof(float));
        return;
    }
    const uint16_t *p = (const uint16_t *)W + row * K;
    int64_t k = 0;
    if (format == CK_BF16) {
        for (; k + 16 <= K; k += 16) {
            _mm256_storeu_ps(out + k, bf16x8(p + k));
            _mm256_storeu_ps(out + k + 8, bf16x8(p + k + 8));
        }
        for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, bf16x8(p + k));
        for (; k < K; k++) out[k] = ck_bf16_value(p[k]);
    } else if (format == CK_F16) {
        /* F16C's conversion is exact for every half, subnormals included */
        for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + k))));
        for (; k < K; k++) out[k] = ck_f16_value(p[k]);
    }
}

/* Four accumulators: an FMA's latency is hidden behind the other three chains' work. */
AVX2 static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
    }
    for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    if (k < n) {
        __m256i m = tail_mask(n - k);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m), _mm256_maskload_ps(b + k, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/* Four dot products sharing each load of b; two vectors per step give each row two chains. */
AVX2 static void dot4_avx2(const float *a0, const float *a1, const float *a2, const float *a3, const float *b,
                           int64_t n, float out[4]) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m256 b0 = _mm256_loadu_ps(b + k), b1 = _mm256_loadu_ps(b + k + 8);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k), b0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + k), b0, s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + k), b0, s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + k), b0, s3);
        t0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k + 8), b1, t0);
        t1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + k + 8), b1, t1);
        t2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + k + 8), b1, t2);
        t3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + k + 8), b1, t3);
    }
    for (; k < n; k += 8) {
        __m256i m = tail_mask(n - k < 8 ? n - k : 8);
        __m256 bv = _mm256_maskload_ps(b + k, m);
        s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a0 + k, m), bv, s0);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a1 + k, m), bv, s1);
        s2 = _mm256_fmadd_ps(_mm256_maskload_ps(a2 + k, m), bv, s2);
        s3 = _mm256_fmadd_ps(_mm256_maskload_ps(a3 + k, m), bv, s3);
    }
    out[0] = hsum(_mm256_add_ps(s0, t0));
    out[1] = hsum(_mm256_add_ps(s1, t1));
    out[2] = hsum(_mm256_add_ps(s2, t2));
    out[3] = hsum(_mm256_add_ps(s3, t3));
}

AVX2 static void axpy_avx2(float a, const float *x, float *y, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        _mm256_storeu_ps(y + k, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
        _mm256_storeu_ps(y + k + 8, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(y + k + 8)));
    }
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] = fmaf(a, x[k], y[k]);
}

/* y_r += p_r · x for four rows sharing the loads of x. A row with p_r == 0 is left untouched, as
 * generic does (0 · inf would otherwise write NaN), so those calls go row by row. */
AVX2 static void axpy4_avx2(const float p[4], const float *x, float *y0, float *y1, float *y2, float *y3, int64_t n) {
    if (p[0] == 0.0f || p[1] == 0.0f || p[2] == 0.0f || p[3] == 0.0f) {
        float *ys[4] = {y0, y1, y2, y3};
        for (int r = 0; r < 4; r++)
            if (p[r] != 0.0f) axpy_avx2(p[r], x, ys[r], n);
        return;
    }
    __m256 p0 = _mm256_set1_ps(p[0]), p1 = _mm256_set1_ps(p[1]), p2 = _mm256_set1_ps(p[2]), p3 = _mm256_set1_ps(p[3]);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k);
        _mm256_storeu_ps(y0 + k, _mm256_fmadd_ps(p0, xv, _mm256_loadu_ps(y0 + k)));
        _mm256_storeu_ps(y1 + k, _mm256_fmadd_ps(p1, xv, _mm256_loadu_ps(y1 + k)));
        _mm256_storeu_ps(y2 + k, _mm256_fmadd_ps(p2, xv, _mm256_loadu_ps(y2 + k)));
        _mm256_storeu_ps(y3 + k, _mm256_fmadd_ps(p3, xv, _mm256_loadu_ps(y3 + k)));
    }
    for (; k < n; k++) {
        y0[k] = fmaf(p[0], x[k], y0[k]);
        y1[k] = fmaf(p[1], x[k], y1[k]);
        y2[k] = fmaf(p[2], x[k], y2[k]);
        y3[k] = fmaf(p[3], x[k], y3[k]);
    }
}

AVX2 static void scale_avx2(float a, float *y, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        _mm256_storeu_ps(y + k, _mm256_mul_ps(av, _mm256_loadu_ps(y + k)));
        _mm256_storeu_ps(y + k + 8, _mm256_mul_ps(av, _mm256_loadu_ps(y + k + 8)));
    }
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(y + k, _mm256_mul_ps(av, _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] *= a;
}

/* ---- linear: few input rows, any weight format but quantized ---- */

/* Up to 2 input rows × 4 weight rows (float32, rows K apart) over all of K: 8 accumulators, six
 * loads per eight FMAs. Missing rows repeat a present one; their sums are not stored. */
AVX2 static void linear_tile_2x4(const float *x0, const float *x1, const float *const w[4], int64_t K,
                                 float out[2][4]) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 u = _mm256_loadu_ps(x0 + k), v = _mm256_loadu_ps(x1 + k);
        __m256 w0 = _mm256_loadu_ps(w[0] + k), w1 = _mm256_loadu_ps(w[1] + k);
        a00 = _mm256_fmadd_ps(u, w0, a00);
        a10 = _mm256_fmadd_ps(v, w0, a10);
        a01 = _mm256_fmadd_ps(u, w1, a01);
        a11 = _mm256_fmadd_ps(v, w1, a11);
        __m256 w2 = _mm256_loadu_ps(w[2] + k), w3 = _mm256_loadu_ps(w[3] + k);
        a02 = _mm256_fmadd_ps(u, w2, a02);
        a12 = _mm256_fmadd_ps(v, w2, a12);
        a03 = _mm256_fmadd_ps(u, w3, a03);
        a13 = _mm256_fmadd_ps(v, w3, a13);
    }
    if (k < K) {
        __m256i m = tail_mask(K - k);
        __m256 u = _mm256_maskload_ps(x0 + k, m), v = _mm256_maskload_ps(x1 + k, m);
        __m256 w0 = _mm256_maskload_ps(w[0] + k, m), w1 = _mm256_maskload_ps(w[1] + k, m);
        __m256 w2 = _mm256_maskload_ps(w[2] + k, m), w3 = _mm256_maskload_ps(w[3] + k, m);
        a00 = _mm256_fmadd_ps(u, w0, a00);
        a10 = _mm256_fmadd_ps(v, w0, a10);
        a01 = _mm256_fmadd_ps(u, w1, a01);
        a11 = _mm256_fmadd_ps(v, w1, a11);
        a02 = _mm256_fmadd_ps(u, w2, a02);
        a12 = _mm256_fmadd_ps(v, w2, a12);
        a03 = _mm256_fmadd_ps(u, w3, a03);
        a13 = _mm256_fmadd_ps(v, w3, a13);
    }
    out[0][0] = hsum(a00); out[0][1] = hsum(a01); out[0][2] = hsum(a02); out[0][3] = hsum(a03);
    out[1][0] = hsum(a10); out[1][1] = hsum(a11); out[1][2] = hsum(a12); out[1][3] = hsum(a13);
}

/* Four weight rows at a time (float32 rows read in place, others widened into scratch: 4·K
 * floats), every input row against them two at a time. */
AVX2 static void linear_avx2(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format,
                             const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
    for (int64_t n = n0; n < n1; n += 4) {
        int64_t nrows = n1 - n < 4 ? n1 - n : 4;
        const float *w[4];
        for (int64_t j = 0; j < 4; j++) {
            int64_t jj = j < nrows ? j : nrows - 1;
            if (format == CK_F32) {
                w[j] = (const float *)W + (n + jj) * K;
            } else {
                if (j < nrows) convert_row_avx2(W, format, K, n + j, scratch + j * K);
                w[j] = scratch + jj * K;
            }
        }
        for (int64_t m = 0; m < M; m += 2) {
            int64_t mrows = M - m < 2 ? M - m : 2;
            float out[2][4];
            linear_tile_2x4(x + m * ldx, x + (m + mrows - 1) * ldx, w, K, out);
            for (int64_t i = 0; i < mrows; i++)
                for (int64_t j = 0; j < nrows; j++) y[(m + i) * ldy + n + j] = out[i][j] + (bias ? bias[n + j] : 0.0f);
        }
    }
}

/* ---- the packed float32 GEMM (prefill) ----
 *
 * Broadcast form: a panel of 16 weight rows is widened to float32 and stored transposed,
 * pack[k][16] (one 64-byte line per k), and a 6-row × 16-column tile of y accumulates in 12
 * registers: per k, two panel vectors and six broadcast inputs feed 12 FMAs (8 loads per 12
 * FMAs, within two loads a cycle). Columns go up to GROUP panels at a time and K in slices of
 * KC: each slice of the group is packed (GROUP·16·KC floats of the 64·K scratch; every weight
 * is packed once), then every 6-row tile runs over the group's panels in turn, so its six input
 * rows' slice (6·KC floats) is read once and stays in L1 while the panels' slices (GROUP·KC
 * lines) stream from L2. Tiles load and store y once per slice; the weights the next packing
 * reads are prefetched while the slice computes. */
enum { GEMM_MR = 6, GEMM_NR = 16, GEMM_GROUP = 8, GEMM_KC = 512 };


/* Weights k ..< k+8 of one row as float32 (before any group scale); `row` is the row's start.
 * q4: inside group g = k/32, elements 0–15 are the low nibbles of the group's 16 bytes and
 * 16–31 the high nibbles, each value nibble − 8. */
AVX2_INLINE __m256 load_row8(const void *row, int format, int64_t k) {
    switch (format) {
    case CK_F32: return _mm256_loadu_ps((const float *)row + k);
    case CK_BF16: return bf16x8((const uint16_t *)row + k);
    case CK_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
    case CK_Q8:
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)row + k))));
    default: {
        int64_t o = k & 31;
        const uint8_t *q = (const uint8_t *)row + (k >> 5) * 16 + (o & 15);
        __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
        b = o < 16 ? _mm256_and_si256(b, _mm256_set1_epi32(0xF)) : _mm256_srli_epi32(b, 4);
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(b, _mm256_set1_epi32(8)));
    }
    }
}

/* Weight (row, k) as float32, the scale of its group applied: tails of the vector packing. */
static float weight_value(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t k) {
    switch (format) {
    case CK_F32: return ((const float *)W)[n * K + k];
    case CK_BF16: return ck_bf16_value(((const uint16_t *)W)[n * K + k]);
    case CK_F16: return ck_f16_value(((const uint16_t *)W)[n * K + k]);
    default:
        return (float)ck_q_weight(W, format, K, n, k / 32, (int)(k % 32)) *
               ck_f16_value(scales[n * ck_groups(K) + k / 32]);
    }
}

/* Packs weights k0 ..< k1 of rows n ..< n+nc (nc ≤ 16) as pack[k − k0][16], 8 rows at a time:
 * 8 consecutive k of each row are widened and transposed in registers; quantized values are then
 * multiplied by the 8 rows' scales of their group (q·s is exact in float32, as generic's
 * dequantization). Columns past nc repeat row n+nc−1; their sums are never stored. */
AVX2_INLINE void pack_panel_format(const void *W, const uint16_t *scales, const int format, int64_t K, int64_t n,
                                   int64_t nc, int64_t k0, int64_t k1, float *pack) {
    const int64_t rowBytes = format == CK_F32 ? 4 * K : format == CK_Q8 ? K : format == CK_Q4 ? K / 2 : 2 * K;
    const int64_t G = ck_groups(K);
    const int quantized = format == CK_Q8 || format == CK_Q4;
    for (int h = 0; h < 2; h++) {
        int64_t rows[8];
        const char *src[8];
        for (int j = 0; j < 8; j++) {
            rows[j] = n + (h * 8 + j < nc ? h * 8 + j : nc - 1);
            src[j] = (const char *)W + rows[j] * rowBytes;
        }
        float *dst = pack + h * 8 - k0 * GEMM_NR;
        __m256 sv = _mm256_setzero_ps();
        int64_t k = k0;
        for (; k + 8 <= k1; k += 8) {
            if (quantized && ((k & 31) == 0 || k == k0)) {
                int64_t g = k >> 5;
                __m128i s16 = _mm_setr_epi16((short)scales[rows[0] * G + g], (short)scales[rows[1] * G + g],
                                             (short)scales[rows[2] * G + g], (short)scales[rows[3] * G + g],
                                             (short)scales[rows[4] * G + g], (short)scales[rows[5] * G + g],
                                             (short)scales[rows[6] * G + g], (short)scales[rows[7] * G + g]);
                sv = _mm256_cvtph_ps(s16);
            }
            __m256 r[8];
            for (int j = 0; j < 8; j++) r[j] = load_row8(src[j], format, k);
            transpose8(r);
            for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (k + i) * GEMM_NR, quantized ? _mm256_mul_ps(r[i], sv) : r[i]);
        }
        for (; k < k1; k++)
            for (int j = 0; j < 8; j++) dst[k * GEMM_NR + j] = weight_value(W, scales, format, K, rows[j], k);
    }
}

AVX2 static void pack_panel(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t nc,
                            int64_t k0, int64_t k1, float *pack) {
    switch (format) {
    case CK_F32: pack_panel_format(W, scales, CK_F32, K, n, nc, k0, k1, pack); break;
    case CK_BF16: pack_panel_format(W, scales, CK_BF16, K, n, nc, k0, k1, pack); break;
    case CK_F16: pack_panel_format(W, scales, CK_F16, K, n, nc, k0, k1, pack); break;
    case CK_Q8: pack_panel_format(W, scales, CK_Q8, K, n, nc, k0, k1, pack); break;
    default: pack_panel_format(W, scales, CK_Q4, K, n, nc, k0, k1, pack); break;
    }
}

/* One register tile: mr rows × 16 columns over kc inputs. acc = (first ? 0 : y) + Σ_k x[r][k]·pack[k];
 * then + bias when given (the last K block); y rows are ldy apart. */
AVX2_INLINE void gemm_tile(const float *x, int64_t ldx, const float *pack, int64_t kc, float *y, int64_t ldy,
                           int first, const float *bias, const int mr) {
    __m256 acc[GEMM_MR][2];
    for (int r = 0; r < mr; r++) {
        if (first) {
            acc[r][0] = _mm256_setzero_ps();
            acc[r][1] = _mm256_setzero_ps();
        } else {
            acc[r][0] = _mm256_loadu_ps(y + r * ldy);
            acc[r][1] = _mm256_loadu_ps(y + r * ldy + 8);
        }
    }
    /* Six row pointers indexed by one k: each broadcast is base + k·4, so the loop itself only
     * advances k and the panel. The empty asm hides that the rows are ldx apart, which would
     * otherwise be folded back into per-iteration address arithmetic. Unrolled by 4 to stay
     * within a 4-wide front end (12 FMAs take 6 cycles). */
    const float *xr[GEMM_MR];
    for (int r = 0; r < mr; r++) {
        xr[r] = x + r * ldx;
        __asm__("" : "+r"(xr[r]));
    }
    const float *pw = pack;
#define CK_TILE_STEP(u)                                                                                  \
    do {                                                                                                 \
        __m256 w0 = _mm256_load_ps(pw + (u) * GEMM_NR), w1 = _mm256_load_ps(pw + (u) * GEMM_NR + 8);     \
        for (int r = 0; r < mr; r++) {                                                                   \
            __m256 xv = _mm256_broadcast_ss(xr[r] + k + (u));                                            \
            acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);                                              \
            acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);                                              \
        }                                                                                                \
    } while (0)
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        CK_TILE_STEP(0);
        CK_TILE_STEP(1);
        CK_TILE_STEP(2);
        CK_TILE_STEP(3);
        pw += 4 * GEMM_NR;
    }
    for (; k < kc; k++) {
        CK_TILE_STEP(0);
        pw += GEMM_NR;
    }
#undef CK_TILE_STEP
    __m256 b0 = _mm256_setzero_ps(), b1 = b0;
    if (bias) {
        b0 = _mm256_loadu_ps(bias);
        b1 = _mm256_loadu_ps(bias + 8);
    }
    for (int r = 0; r < mr; r++) {
        _mm256_storeu_ps(y + r * ldy, _mm256_add_ps(acc[r][0], b0));
        _mm256_storeu_ps(y + r * ldy + 8, _mm256_add_ps(acc[r][1], b1));
    }
}

AVX2 static void gemm_tile_rows(const float *x, int64_t ldx, const float *pack, int64_t kc, float *y, int64_t ldy,
                                int first, const float *bias, int mr) {
    switch (mr) {
    case 6: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 6); break;
    case 5: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 5); break;
    case 4: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 4); break;
    case 3: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 3); break;
    case 2: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 2); break;
    default: gemm_tile(x, ldx, pack, kc, y, ldy, first, bias, 1); break;
    }
}

/* Software prefetch of the weight rows' slice the next packing reads (rows n ..< n+cols, bytes
 * b0 ..< b1 of each), spread over the tiles of the current slice so that the packing finds it in
 * L2 instead of waiting on memory. */
typedef struct {
    const char *base;
    int64_t rowBytes, b0, lines_per_row, total, done;
} slice_prefetch;

static void prefetch_start(slice_prefetch *pf, const void *W, int64_t rowBytes, int64_t n, int64_t cols, int64_t b0,
                           int64_t b1) {
    pf->base = (const char *)W + n * rowBytes;
    pf->rowBytes = rowBytes;
    pf->b0 = b0 & ~(int64_t)63;
    pf->lines_per_row = (b1 - pf->b0 + 63) / 64;
    pf->total = cols * pf->lines_per_row;
    pf->done = 0;
}

static inline void prefetch_some(slice_prefetch *pf, int64_t count) {
    for (; count > 0 && pf->done < pf->total; count--, pf->done++) {
        int64_t r = pf->done / pf->lines_per_row, l = pf->done - r * pf->lines_per_row;
        _mm_prefetch(pf->base + r * pf->rowBytes + pf->b0 + l * 64, _MM_HINT_T1);
    }
}

/* Byte offset of input k within a weight row (q4: two inputs per byte). */
static int64_t row_offset(int format, int64_t k) {
    switch (format) {
    case CK_F32: return 4 * k;
    case CK_BF16: case CK_F16: return 2 * k;
    case CK_Q8: return k;
    default: return k / 2;
    }
}

AVX2 static void gemm_f32_packed_avx2(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                      const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                      int64_t n0, int64_t n1, float *scratch) {
    const int64_t kcmax = K < GEMM_KC ? K : GEMM_KC;
    const int64_t panel = GEMM_NR * kcmax;
    /* Scratch (64·K floats): the group's panels, 64-byte aligned; up to GEMM_GROUP of them (each
     * more per input tile saves a pass over x), as many as fit: 16·kcmax·group + 15 ≤ 64·K, at
     * least 3 since kcmax ≤ K. */
    float *pack = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int64_t group = (64 * K - 15) / panel;
    group = group < GEMM_GROUP ? group : GEMM_GROUP;
    const int64_t rowBytes = row_offset(format, K);
    const int64_t tilesM = (M + GEMM_MR - 1) / GEMM_MR;
    slice_prefetch pf;
    for (int64_t n = n0; n < n1; n += group * GEMM_NR) {
        const int64_t cols = n1 - n < group * GEMM_NR ? n1 - n : group * GEMM_NR;
        const int panels = (int)((cols + GEMM_NR - 1) / GEMM_NR);
        float bvec[GEMM_GROUP][GEMM_NR];
        int64_t pc[GEMM_GROUP];
        for (int p = 0; p < panels; p++) {
            pc[p] = cols - p * GEMM_NR < GEMM_NR ? cols - p * GEMM_NR : GEMM_NR;
            for (int j = 0; j < GEMM_NR; j++) bvec[p][j] = bias && j < pc[p] ? bias[n + p * GEMM_NR + j] : 0.0f;
        }
        for (int64_t kb = 0; kb < K; kb += GEMM_KC) {
            const int64_t kc = K - kb < GEMM_KC ? K - kb : GEMM_KC;
            const int first = kb == 0, last = kb + kc == K;
            for (int p = 0; p < panels; p++) pack_panel(W, scales, format, K, n + p * GEMM_NR, pc[p], kb, kb + kc, pack + p * panel);
            /* what the next packing reads: this group's next slice, or the next group's first */
            if (!last) {
                int64_t ke = kb + kc + GEMM_KC < K ? kb + kc + GEMM_KC : K;
                prefetch_start(&pf, W, rowBytes, n, cols, row_offset(format, kb + kc), row_offset(format, ke));
            } else if (n + cols < n1) {
                int64_t nn = n1 - (n + cols) < group * GEMM_NR ? n1 - (n + cols) : group * GEMM_NR;
                prefetch_start(&pf, W, rowBytes, n + cols, nn, 0, row_offset(format, kcmax));
            } else {
                prefetch_start(&pf, W, rowBytes, n, 0, 0, 0);
            }
            const int64_t per_tile = (pf.total + tilesM * panels - 1) / (tilesM * panels);
            for (int64_t m = 0; m < M; m += GEMM_MR) {
                const int mr = M - m < GEMM_MR ? (int)(M - m) : GEMM_MR;
                const float *xt = x + m * ldx + kb;
                for (int p = 0; p < panels; p++) {
                    const float *pp = pack + p * panel;
                    const float *bp = last ? bvec[p] : NULL;
                    float *yp = y + m * ldy + n + p * GEMM_NR;
                    prefetch_some(&pf, per_tile);
                    if (pc[p] == GEMM_NR) {
                        gemm_tile_rows(xt, ldx, pp, kc, yp, ldy, first, bp, mr);
                    } else {
                        /* a narrow last panel accumulates in a full-width copy of its columns */
                        float part[GEMM_MR * GEMM_NR];
                        for (int r = 0; r < mr; r++)
                            for (int j = 0; j < GEMM_NR; j++) part[r * GEMM_NR + j] = !first && j < pc[p] ? yp[r * ldy + j] : 0.0f;
                        gemm_tile_rows(xt, ldx, pp, kc, part, GEMM_NR, first, bp, mr);
                        for (int r = 0; r < mr; r++)
                            for (int j = 0; j < pc[p]; j++) yp[r * ldy + j] = part[r * GEMM_NR + j];
                    }
                }
            }
        }
    }
}

/* ---- decode GEMVs ---- */

/* bf16 rows of up to GEMV_SHORT inputs go one at a time: the input (≤ 16 KB) stays in L1 beside the
 * weights, and consecutive rows are one contiguous stream, which the hardware prefetcher follows
 * better than four short interleaved ones (K = 2304 bf16: about twice the rate). Longer rows go
 * four at a time so that each input load, then from L2, serves four rows. */
enum { GEMV_SHORT = 4096 };

/* bf16 weights against x split by ck_split_even_odd: a 256-bit load holds 16 bf16, i.e. the
 * pairs (k+2i, k+2i+1) for i < 8; `w << 16` is the even elements as float32, `w & 0xFFFF0000`
 * the odd ones. Per 32-chunk: xeo[0..16) are the chunk's even inputs, xeo[16..32) its odd ones.
 * Long rows: four per pass share the input loads; the next four rows are prefetched at the same
 * place, 4·K elements on, into L2 (T1: into L1 the prefetches compete with the demand loads). The
 * same place in the next rows beats a fixed distance within the row: the prefetch stream then
 * follows the demand stream line for line, one pass ahead, across all four rows. */
AVX2 static void gemv_bf16_avx2(const float *xeo, int64_t K, const void *Wv, const float *bias, float *y, int64_t n0,
                                int64_t n1) {
    const uint16_t *W = (const uint16_t *)Wv;
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    const int64_t K32 = K & ~(int64_t)31;
    const int64_t ahead = 4 * K;
    int64_t n = n0;
    for (; K > GEMV_SHORT && n + 4 <= n1; n += 4) {
        const uint16_t *w0 = W + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t k = 0; k < K32; k += 32) {
            _mm_prefetch((const char *)(w0 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w1 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w2 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w3 + k + ahead), _MM_HINT_T1);
            __m256 xe0 = _mm256_loadu_ps(xeo + k), xe1 = _mm256_loadu_ps(xeo + k + 8);
            __m256 xo0 = _mm256_loadu_ps(xeo + k + 16), xo1 = _mm256_loadu_ps(xeo + k + 24);
#define CK_BF16_ROW(wr, a, b)                                                                              \
    do {                                                                                                   \
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(wr + k));                                        \
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(wr + k + 16));                                   \
        a = _mm256_fmadd_ps(xe0, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), a);                       \
        b = _mm256_fmadd_ps(xo0, _mm256_castsi256_ps(_mm256_and_si256(v0, hi)), b);                        \
        a = _mm256_fmadd_ps(xe1, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), a);                       \
        b = _mm256_fmadd_ps(xo1, _mm256_castsi256_ps(_mm256_and_si256(v1, hi)), b);                        \
    } while (0)
            CK_BF16_ROW(w0, a0, b0);
            CK_BF16_ROW(w1, a1, b1);
            CK_BF16_ROW(w2, a2, b2);
            CK_BF16_ROW(w3, a3, b3);
        }
        float r[4] = {hsum(_mm256_add_ps(a0, b0)), hsum(_mm256_add_ps(a1, b1)), hsum(_mm256_add_ps(a2, b2)),
                      hsum(_mm256_add_ps(a3, b3))};
        const uint16_t *ws[4] = {w0, w1, w2, w3};
        for (int j = 0; j < 4; j++) {
            /* past the last 32-chunk xeo holds x unsplit */
            for (int64_t k = K32; k < K; k++) r[j] += xeo[k] * ck_bf16_value(ws[j][k]);
            y[n + j] = r[j] + (bias ? bias[n + j] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const uint16_t *w0 = W + n * K;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        for (int64_t k = 0; k < K32; k += 32) {
            __m256 xe0 = _mm256_loadu_ps(xeo + k), xe1 = _mm256_loadu_ps(xeo + k + 8);
            __m256 xo0 = _mm256_loadu_ps(xeo + k + 16), xo1 = _mm256_loadu_ps(xeo + k + 24);
            CK_BF16_ROW(w0, a0, b0);
        }
#undef CK_BF16_ROW
        float r = hsum(_mm256_add_ps(a0, b0));
        for (int64_t k = K32; k < K; k++) r += xeo[k] * ck_bf16_value(w0[k]);
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

/* gemv_bf16_avx2 for M inputs (decode of M sequences at once, input m at xeo + m·ldx): per weight
 * row and input the same two chains (even and odd elements) over the same 32-chunks, in the same
 * order, with the same reduction and tail as the one-input kernel, whose result for a row does not
 * depend on how many rows share a pass, so every row of y is its bit for bit; but each weight row
 * is read and widened once for several inputs.
 *
 * The inputs' loads are M times the weights': two weight rows per pass share each input load,
 * and the inputs go in pairs (4·2 accumulators and a row's four widened vectors fill the 16
 * registers; two inputs of K ≤ 3072 also fit in L1 beside the weight stream), over a block of
 * BF16_NB rows at a time, so that the pairs after the first find the block's weights in L2. M is
 * a compile-time constant in each specialisation. */
#define BF16_ROWS_MAX 2
#define BF16_NB 16
AVX2_INLINE void gemv_bf16_batch(const float *xeo, const int M, int64_t K, int64_t ldx, const uint16_t *W,
                                 const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    const int64_t K32 = K & ~(int64_t)31;
    for (int64_t n = n0; n < n1; n += 2) {
        const int nr = n1 - n < 2 ? 1 : 2;
        const uint16_t *w[2] = {W + n * K, W + (n + nr - 1) * K};
        __m256 a[2][BF16_ROWS_MAX], b[2][BF16_ROWS_MAX];
        for (int i = 0; i < 2; i++)
            for (int m = 0; m < M; m++) a[i][m] = b[i][m] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            for (int i = 0; i < 2; i++) {
                /* the rows two passes on at the same place: the prefetches follow the stream */
                _mm_prefetch((const char *)(w[i] + k + 4 * K), _MM_HINT_T1);
                __m256i v0 = _mm256_loadu_si256((const __m256i *)(w[i] + k));
                __m256i v1 = _mm256_loadu_si256((const __m256i *)(w[i] + k + 16));
                const __m256 we0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), wo0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi));
                const __m256 we1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), wo1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi));
                /* the one-input kernel's order: xe0·we0, xo0·wo0, xe1·we1, xo1·wo1 */
                for (int m = 0; m < M; m++) {
                    const float *x = xeo + m * ldx + k;
                    a[i][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x), we0, a[i][m]);
                    b[i][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), wo0, b[i][m]);
                    a[i][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), we1, a[i][m]);
                    b[i][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), wo1, b[i][m]);
                }
            }
        }
        for (int i = 0; i < nr; i++)
            for (int m = 0; m < M; m++) {
                const float *x = xeo + m * ldx;
                float r = hsum(_mm256_add_ps(a[i][m], b[i][m]));
                /* past the last 32-chunk xeo holds x unsplit */
                for (int64_t k = K32; k < K; k++) r += x[k] * ck_bf16_value(w[i][k]);
                y[m * ldy + n + i] = r + (bias ? bias[n + i] : 0.0f);
            }
    }
}

AVX2 static void gemv_bf16_rows_avx2(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W,
                                     const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    for (int64_t nb = n0; nb < n1; nb += BF16_NB) {
        const int64_t ne = n1 - nb < BF16_NB ? n1 : nb + BF16_NB;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) gemv_bf16_batch(xeo + m * ldx, 2, K, ldx, W, bias, y + m * ldy, ldy, nb, ne);
        if (m < M) gemv_bf16_batch(xeo + m * ldx, 1, K, ldx, W, bias, y + m * ldy, ldy, nb, ne);
    }
}

/* Quantized weights against a float32 input, whole groups (K % 32 == 0). Per row and group:
 * part = Σ_i x_i·q_i over four 8-lane vectors, then acc += part · scale (generic's order within a
 * group). Four rows per pass share the input loads, short rows too (the widening work, not the
 * stream, bounds this kernel, so every load saved counts); the scales of 8 groups are widened at
 * a time (F16C) into a small buffer and broadcast from it, and the next rows are prefetched into
 * L2 at the same place (at least 4 KB ahead). */
AVX2_INLINE __m256 q8_group(const int8_t *q, __m256 xa, __m256 xb, __m256 xc, __m256 xd) {
    __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
    __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8))));
    __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 16))));
    __m256 d = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 24))));
    return _mm256_fmadd_ps(a, xa, _mm256_fmadd_ps(b, xb, _mm256_fmadd_ps(c, xc, _mm256_mul_ps(d, xd))));
}

/* q4 group: byte j holds element j (low nibble) and j + 16 (high nibble), each nibble − 8 */
AVX2_INLINE __m256 q4_group(const uint8_t *q, __m256 xa, __m256 xb, __m256 xc, __m256 xd) {
    const __m256i low = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8);
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8)));
    __m256 a = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(u, low), eight));
    __m256 b = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, low), eight));
    __m256 c = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 4), eight));
    __m256 d = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight));
    return _mm256_fmadd_ps(a, xa, _mm256_fmadd_ps(b, xb, _mm256_fmadd_ps(c, xc, _mm256_mul_ps(d, xd))));
}

/* rows rows n ..< n+R (R ≤ 4) of a q8 (q4) matrix over all groups */
AVX2_INLINE void gemv_q_rows(const float *x, int64_t K, const void *W, const uint16_t *scales, const int q4,
                             const float *bias, float *y, int64_t n, const int R) {
    const int64_t G = K / CK_GROUP, rowBytes = q4 ? K / 2 : K, gbytes = q4 ? 16 : 32;
    const int64_t pf = R * rowBytes > 4096 ? R * rowBytes : 4096;
    const char *w = (const char *)W + n * rowBytes;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    float sf[4][8];
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        const int64_t gn = G - g0 < 8 ? G - g0 : 8;
        for (int r = 0; r < R; r++) {
            const uint16_t *s = scales + (n + r) * G + g0;
            if (gn == 8) {
                _mm256_storeu_ps(sf[r], _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s)));
            } else {
                for (int64_t i = 0; i < gn; i++) sf[r][i] = ck_f16_value(s[i]);
            }
        }
        /* 8 groups of a row are 256 (q8) or 128 (q4) bytes */
        for (int r = 0; r < R; r++)
            for (int64_t b = 0; b < 8 * gbytes; b += 64)
                _mm_prefetch(w + r * rowBytes + g0 * gbytes + pf + b, _MM_HINT_T1);
        for (int64_t i = 0; i < gn; i++) {
            const int64_t g = g0 + i;
            __m256 xa = _mm256_loadu_ps(x + g * 32), xb = _mm256_loadu_ps(x + g * 32 + 8);
            __m256 xc = _mm256_loadu_ps(x + g * 32 + 16), xd = _mm256_loadu_ps(x + g * 32 + 24);
            for (int r = 0; r < R; r++) {
                const char *q = w + r * rowBytes + g * gbytes;
                __m256 part = q4 ? q4_group((const uint8_t *)q, xa, xb, xc, xd) : q8_group((const int8_t *)q, xa, xb, xc, xd);
                acc[r] = _mm256_fmadd_ps(part, _mm256_broadcast_ss(&sf[r][i]), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) y[n + r] = hsum(acc[r]) + (bias ? bias[n + r] : 0.0f);
}

AVX2 static void gemv_q8_avx2(const float *x, int64_t K, const void *W, const uint16_t *scales, const float *bias,
                              float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) gemv_q_rows(x, K, W, scales, 0, bias, y, n, 4);
    for (; n < n1; n++) gemv_q_rows(x, K, W, scales, 0, bias, y, n, 1);
}

AVX2 static void gemv_q4_avx2(const float *x, int64_t K, const void *W, const uint16_t *scales, const float *bias,
                              float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) gemv_q_rows(x, K, W, scales, 1, bias, y, n, 4);
    for (; n < n1; n++) gemv_q_rows(x, K, W, scales, 1, bias, y, n, 1);
}

static void gemv_q_avx2(const float *x, int64_t K, const void *W, const uint16_t *scales, int format,
                        const float *bias, float *y, int64_t n0, int64_t n1) {
    if (format == CK_Q4) gemv_q4_avx2(x, K, W, scales, bias, y, n0, n1);
    else gemv_q8_avx2(x, K, W, scales, bias, y, n0, n1);
}

/* ---- probes ---- */

/* Sums n floats, four 256-bit loads per step into four accumulators. */
AVX2 static float read_all_avx2(const float *p, int64_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (; i < n; i++) s += p[i];
    return s;
}

/* Twelve independent FMA chains: more than latency × issue width (4–5 × 2) on the CPUs this
 * level targets, so the FMA units never wait. */
AVX2 static double fma_probe_avx2(int64_t iterations, float *sink) {
    __m256 a[12], x = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, c);
    __m256 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
    *sink = hsum(s);
    return (double)iterations * 12 * 8 * 2;
}

void ck_fill_avx2_products(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->convert_row = convert_row_avx2;
    t->dot = dot_avx2;
    t->dot4 = dot4_avx2;
    t->axpy = axpy_avx2;
    t->axpy4 = axpy4_avx2;
    t->scale = scale_avx2;
    t->linear = linear_avx2;
    t->gemv_bf16 = gemv_bf16_avx2;
    t->gemv_bf16_rows = gemv_bf16_rows_avx2;
    t->gemm_f32_packed = gemm_f32_packed_avx2;
    t->gemv_q = gemv_q_avx2;
    t->read_all = read_all_avx2;
    t->fma_probe = fma_probe_avx2;
}
#else
void ck_fill_avx2_products(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
