/* Level "neon", float32 products: 128-bit Advanced SIMD (4 floats a vector, 32 registers).
 * Apple M-series and Neoverse V cores issue four vector FMAs a cycle with a latency of 4, so a
 * kernel needs about 16 independent accumulator chains to reach the FMA peak; the loops below
 * keep that many where the loads allow it. Loads are cheap (three a cycle), so register tiles
 * trade extra loads for accumulators. */
#include "neon.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* ---- widening helpers ---- */

/* bf16 is the top half of a float32: widen by a 16-bit shift */
static inline float32x4_t bf16x4(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

/* IEEE half to float32 (FCVTL, exact, part of the arm64 baseline) */
static inline float32x4_t f16x4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

/* 16 signed bytes to four float32 vectors, each times s */
static inline void s8x16_scaled(int8x16_t q, float s, float32x4_t out[4]) {
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    out[0] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), s);
    out[1] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), s);
    out[2] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), s);
    out[3] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), s);
}

/* A q4 group's 16 bytes as signed values: low nibbles − 8 are elements 0–15, high nibbles − 8
 * elements 16–31. */
static inline void q4_split(const uint8_t *p, int8x16_t *lo, int8x16_t *hi) {
    uint8x16_t b = vld1q_u8(p);
    const int8x16_t eight = vdupq_n_s8(8);
    *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F))), eight);
    *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), eight);
}

/* One weight as float32, exactly as ck_convert_row / ck_convert_row_q produce it: the scalar
 * path of the tails that do not fill a vector. */
static inline float weight_value(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t k) {
    switch (format) {
    case CK_F32: return ((const float *)W)[n * K + k];
    case CK_BF16: return ck_bf16_value(((const uint16_t *)W)[n * K + k]);
    case CK_F16: return ck_f16_value(((const uint16_t *)W)[n * K + k]);
    default: {
        int64_t g = k / CK_GROUP;
        return (float)ck_q_weight(W, format, K, n, g, (int)(k % CK_GROUP)) * ck_f16_value(scales[n * ck_groups(K) + g]);
    }
    }
}

/* Weights k ..< k+16 of row n as four float32 vectors (k a multiple of 16, k + 16 ≤ K). A q8/q4
 * group is 32 aligned values, so the 16 lie in one group. */
static inline void widen16(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t k,
                           float32x4_t out[4]) {
    switch (format) {
    case CK_F32: {
        const float *p = (const float *)W + n * K + k;
        for (int i = 0; i < 4; i++) out[i] = vld1q_f32(p + 4 * i);
        break;
    }
    case CK_BF16: {
        const uint16_t *p = (const uint16_t *)W + n * K + k;
        for (int i = 0; i < 4; i++) out[i] = bf16x4(p + 4 * i);
        break;
    }
    case CK_F16: {
        const uint16_t *p = (const uint16_t *)W + n * K + k;
        for (int i = 0; i < 4; i++) out[i] = f16x4(p + 4 * i);
        break;
    }
    case CK_Q8: {
        float s = ck_f16_value(scales[n * ck_groups(K) + k / CK_GROUP]);
        s8x16_scaled(vld1q_s8((const int8_t *)W + n * K + k), s, out);
        break;
    }
    default: {
        int64_t g = k / CK_GROUP;
        float s = ck_f16_value(scales[n * ck_groups(K) + g]);
        int8x16_t lo, hi;
        q4_split((const uint8_t *)W + n * (K / 2) + g * 16, &lo, &hi);
        s8x16_scaled(k % CK_GROUP ? hi : lo, s, out);
        break;
    }
    }
}

/* [a0 a1 a2 a3] → (Σa0, Σa1, Σa2, Σa3) with two pairwise-add steps */
static inline float32x4_t sum4(float32x4_t a0, float32x4_t a1, float32x4_t a2, float32x4_t a3) {
    return vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3));
}

/* ---- conversions, dot products, axpy ---- */

static void convert_row_neon(const void *W, int format, int64_t K, int64_t row, float *out) {
    if (format == CK_F32) {
        memcpy(out, (const float *)W + row * K, (size_t)K * sizeof(float));
        return;
    }
    const uint16_t *p = (const uint16_t *)W + row * K;
    int64_t k = 0;
    if (format == CK_BF16) {
        for (; k + 16 <= K; k += 16)
            for (int i = 0; i < 4; i++) vst1q_f32(out + k + 4 * i, bf16x4(p + k + 4 * i));
        for (; k + 4 <= K; k += 4) vst1q_f32(out + k, bf16x4(p + k));
        for (; k < K; k++) out[k] = ck_bf16_value(p[k]);
    } else {
        for (; k + 16 <= K; k += 16)
            for (int i = 0; i < 4; i++) vst1q_f32(out + k + 4 * i, f16x4(p + k + 4 * i));
        for (; k + 4 <= K; k += 4) vst1q_f32(out + k, f16x4(p + k));
        for (; k < K; k++) out[k] = ck_f16_value(p[k]);
    }
}

/* Eight accumulators: two loads per FMA make loads the limit, and 8 chains cover the FMA
 * latency at the rate three load ports feed. */
static float dot_neon(const float *a, const float *b, int64_t n) {
    float32x4_t s[8];
    for (int i = 0; i < 8; i++) s[i] = vdupq_n_f32(0);
    int64_t k = 0;
    for (; k + 32 <= n; k += 32)
        for (int i = 0; i < 8; i++) s[i] = vfmaq_f32(s[i], vld1q_f32(a + k + 4 * i), vld1q_f32(b + k + 4 * i));
    for (; k + 4 <= n; k += 4) s[0] = vfmaq_f32(s[0], vld1q_f32(a + k), vld1q_f32(b + k));
    for (int i = 0; i < 4; i++) s[i] = vaddq_f32(s[i], s[i + 4]);
    float r = vaddvq_f32(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])));
    for (; k < n; k++) r += a[k] * b[k];
    return r;
}

/* Four rows against one b: each b vector loaded once for four FMAs; two accumulators per row. */
static void dot4_neon(const float *a0, const float *a1, const float *a2, const float *a3, const float *b, int64_t n,
                      float out[4]) {
    const float *a[4] = {a0, a1, a2, a3};
    float32x4_t s[4][2];
    for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = vdupq_n_f32(0);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        float32x4_t b0 = vld1q_f32(b + k), b1 = vld1q_f32(b + k + 4);
        for (int r = 0; r < 4; r++) {
            s[r][0] = vfmaq_f32(s[r][0], vld1q_f32(a[r] + k), b0);
            s[r][1] = vfmaq_f32(s[r][1], vld1q_f32(a[r] + k + 4), b1);
        }
    }
    if (k + 4 <= n) {
        float32x4_t b0 = vld1q_f32(b + k);
        for (int r = 0; r < 4; r++) s[r][0] = vfmaq_f32(s[r][0], vld1q_f32(a[r] + k), b0);
        k += 4;
    }
    float32x4_t t = sum4(vaddq_f32(s[0][0], s[0][1]), vaddq_f32(s[1][0], s[1][1]), vaddq_f32(s[2][0], s[2][1]),
                         vaddq_f32(s[3][0], s[3][1]));
    vst1q_f32(out, t);
    for (; k < n; k++)
        for (int r = 0; r < 4; r++) out[r] += a[r][k] * b[k];
}

static void axpy_neon(float a, const float *x, float *y, int64_t n) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int i = 0; i < 4; i++) vst1q_f32(y + k + 4 * i, vfmaq_n_f32(vld1q_f32(y + k + 4 * i), vld1q_f32(x + k + 4 * i), a));
    for (; k + 4 <= n; k += 4) vst1q_f32(y + k, vfmaq_n_f32(vld1q_f32(y + k), vld1q_f32(x + k), a));
    for (; k < n; k++) y[k] += a * x[k];
}

/* y_r += p_r · x, each x vector loaded once for the four rows. A row whose p_r is 0 is left
 * untouched, as generic does (0 · inf would otherwise turn it into NaN). */
static void axpy4_neon(const float p[4], const float *x, float *y0, float *y1, float *y2, float *y3, int64_t n) {
    if (p[0] == 0.0f || p[1] == 0.0f || p[2] == 0.0f || p[3] == 0.0f) {
        float *ys[4] = {y0, y1, y2, y3};
        for (int r = 0; r < 4; r++)
            if (p[r] != 0.0f) axpy_neon(p[r], x, ys[r], n);
        return;
    }
    const float32x4_t pv = vld1q_f32(p);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        float32x4_t x0 = vld1q_f32(x + k), x1 = vld1q_f32(x + k + 4);
        vst1q_f32(y0 + k, vfmaq_laneq_f32(vld1q_f32(y0 + k), x0, pv, 0));
        vst1q_f32(y0 + k + 4, vfmaq_laneq_f32(vld1q_f32(y0 + k + 4), x1, pv, 0));
        vst1q_f32(y1 + k, vfmaq_laneq_f32(vld1q_f32(y1 + k), x0, pv, 1));
        vst1q_f32(y1 + k + 4, vfmaq_laneq_f32(vld1q_f32(y1 + k + 4), x1, pv, 1));
        vst1q_f32(y2 + k, vfmaq_laneq_f32(vld1q_f32(y2 + k), x0, pv, 2));
        vst1q_f32(y2 + k + 4, vfmaq_laneq_f32(vld1q_f32(y2 + k + 4), x1, pv, 2));
        vst1q_f32(y3 + k, vfmaq_laneq_f32(vld1q_f32(y3 + k), x0, pv, 3));
        vst1q_f32(y3 + k + 4, vfmaq_laneq_f32(vld1q_f32(y3 + k + 4), x1, pv, 3));
    }
    if (k + 4 <= n) {
        float32x4_t x0 = vld1q_f32(x + k);
        vst1q_f32(y0 + k, vfmaq_laneq_f32(vld1q_f32(y0 + k), x0, pv, 0));
        vst1q_f32(y1 + k, vfmaq_laneq_f32(vld1q_f32(y1 + k), x0, pv, 1));
        vst1q_f32(y2 + k, vfmaq_laneq_f32(vld1q_f32(y2 + k), x0, pv, 2));
        vst1q_f32(y3 + k, vfmaq_laneq_f32(vld1q_f32(y3 + k), x0, pv, 3));
        k += 4;
    }
    for (; k < n; k++) {
        y0[k] += p[0] * x[k];
        y1[k] += p[1] * x[k];
        y2[k] += p[2] * x[k];
        y3[k] += p[3] * x[k];
    }
}

static void scale_neon(float a, float *y, int64_t n) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int i = 0; i < 4; i++) vst1q_f32(y + k + 4 * i, vmulq_n_f32(vld1q_f32(y + k + 4 * i), a));
    for (; k + 4 <= n; k += 4) vst1q_f32(y + k, vmulq_n_f32(vld1q_f32(y + k), a));
    for (; k < n; k++) y[k] *= a;
}

/* ---- linear: 4 input rows × 4 weight rows, dot-product form ---- */

/* 16 accumulators (one per output) over K, then four pairwise-add reductions give each input
 * row's four outputs as one vector. w: four float32 rows of K (rows past nrows repeat row 0). */
static void linear_tile(const float *x, int64_t ldx, int64_t mrows, const float *w, int64_t K, int64_t nrows,
                        float32x4_t out[4], float tail[4][4]) {
    const float *xr[4], *wr[4];
    for (int i = 0; i < 4; i++) xr[i] = x + (i < mrows ? i : 0) * ldx;
    for (int j = 0; j < 4; j++) wr[j] = w + (j < nrows ? j : 0) * K;
    float32x4_t acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = vdupq_n_f32(0);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        float32x4_t wv[4];
        for (int j = 0; j < 4; j++) wv[j] = vld1q_f32(wr[j] + k);
        for (int i = 0; i < 4; i++) {
            float32x4_t xv = vld1q_f32(xr[i] + k);
            for (int j = 0; j < 4; j++) acc[i][j] = vfmaq_f32(acc[i][j], xv, wv[j]);
        }
    }
    for (int i = 0; i < 4; i++) {
        out[i] = sum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        for (int j = 0; j < 4; j++) {
            float t = 0;
            for (int64_t kk = k; kk < K; kk++) t += xr[i][kk] * wr[j][kk];
            tail[i][j] = t;
        }
    }
}

static void linear_neon(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format,
                        const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
    for (int64_t n = n0; n < n1; n += 4) {
        int64_t nrows = n1 - n < 4 ? n1 - n : 4;
        const float *w;
        if (format == CK_F32) {
            w = (const float *)W + n * K; /* rows are contiguous: read in place */
        } else {
            for (int64_t j = 0; j < nrows; j++) convert_row_neon(W, format, K, n + j, scratch + j * K);
            w = scratch;
        }
        float b[4] = {0, 0, 0, 0};
        for (int64_t j = 0; j < nrows; j++) b[j] = bias ? bias[n + j] : 0.0f;
        for (int64_t m = 0; m < M; m += 4) {
            int64_t mrows = M - m < 4 ? M - m : 4;
            float32x4_t out[4];
            float tail[4][4];
            linear_tile(x + m * ldx, ldx, mrows, w, K, nrows, out, tail);
            for (int64_t i = 0; i < mrows; i++) {
                float r[4];
                vst1q_f32(r, vaddq_f32(vaddq_f32(out[i], vld1q_f32(tail[i])), vld1q_f32(b)));
                if (nrows == 4) vst1q_f32(y + (m + i) * ldy + n, vld1q_f32(r));
                else
                    for (int64_t j = 0; j < nrows; j++) y[(m + i) * ldy + n + j] = r[j];
            }
        }
    }
}

/* ---- bf16 GEMV (decode) ---- */

/* Each 32-bit word of a bf16 row holds inputs k (low half) and k+1 (high half): `w << 16` is the
 * even one as float32, `w & 0xFFFF0000` the odd one, matched by x pre-split into even/odd halves
 * per 32-chunk (ck_split_even_odd). Four rows share the x loads; two accumulators per row. */
static void gemv_bf16_neon(const float *xeo, int64_t K, const void *Wv, const float *bias, float *y, int64_t n0,
                           int64_t n1) {
    const uint16_t *W = (const uint16_t *)Wv;
    const int64_t K32 = K & ~(int64_t)31;
    const uint32x4_t hi_mask = vdupq_n_u32(0xFFFF0000u);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const uint16_t *w[4] = {W + n * K, W + (n + 1) * K, W + (n + 2) * K, W + (n + 3) * K};
        float32x4_t e[4], o[4];
        for (int r = 0; r < 4; r++) e[r] = o[r] = vdupq_n_f32(0);
        for (int64_t k = 0; k < K32; k += 32) {
            for (int j = 0; j < 4; j++) {
                /* words 4j..4j+3 of the chunk: pairs 4j..4j+3, i.e. x even/odd entries 4j..4j+3 */
                float32x4_t xe = vld1q_f32(xeo + k + 4 * j), xo = vld1q_f32(xeo + k + 16 + 4 * j);
                for (int r = 0; r < 4; r++) {
                    uint32x4_t v = vld1q_u32((const uint32_t *)(w[r] + k + 8 * j));
                    e[r] = vfmaq_f32(e[r], xe, vreinterpretq_f32_u32(vshlq_n_u32(v, 16)));
                    o[r] = vfmaq_f32(o[r], xo, vreinterpretq_f32_u32(vandq_u32(v, hi_mask)));
                }
            }
        }
        float r4[4];
        vst1q_f32(r4, sum4(vaddq_f32(e[0], o[0]), vaddq_f32(e[1], o[1]), vaddq_f32(e[2], o[2]), vaddq_f32(e[3], o[3])));
        for (int r = 0; r < 4; r++) {
            /* past the last whole chunk xeo holds x as is */
            for (int64_t k = K32; k < K; k++) r4[r] += xeo[k] * ck_bf16_value(w[r][k]);
            y[n + r] = r4[r] + (bias ? bias[n + r] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const uint16_t *w0 = W + n * K;
        float32x4_t e = vdupq_n_f32(0), o = vdupq_n_f32(0), e2 = e, o2 = o;
        for (int64_t k = 0; k < K32; k += 32) {
            for (int j = 0; j < 4; j += 2) {
                uint32x4_t v = vld1q_u32((const uint32_t *)(w0 + k + 8 * j));
                uint32x4_t v2 = vld1q_u32((const uint32_t *)(w0 + k + 8 * j + 8));
                e = vfmaq_f32(e, vld1q_f32(xeo + k + 4 * j), vreinterpretq_f32_u32(vshlq_n_u32(v, 16)));
                o = vfmaq_f32(o, vld1q_f32(xeo + k + 16 + 4 * j), vreinterpretq_f32_u32(vandq_u32(v, hi_mask)));
                e2 = vfmaq_f32(e2, vld1q_f32(xeo + k + 4 * j + 4), vreinterpretq_f32_u32(vshlq_n_u32(v2, 16)));
                o2 = vfmaq_f32(o2, vld1q_f32(xeo + k + 20 + 4 * j), vreinterpretq_f32_u32(vandq_u32(v2, hi_mask)));
            }
        }
        float r = vaddvq_f32(vaddq_f32(vaddq_f32(e, o), vaddq_f32(e2, o2)));
        for (int64_t k = K32; k < K; k++) r += xeo[k] * ck_bf16_value(w0[k]);
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

/* ---- float32 GEMM over packed weight panels (prefill) ---- */

/* The broadcast form of a BLIS micro-kernel: a panel of NR = 12 weight rows is widened to float32
 * and packed as [k][12]; an 8-row × 12-column tile of y lives in 24 registers. Per 4 inputs each
 * x row is one vector load and vfmaq_laneq_f32 takes its lanes in turn, so the x rows need no
 * packing. The tile runs as two halves of 4 rows: 24 accumulators + 4 x vectors + 3 weight
 * vectors fit the 32 registers, at the cost of loading each weight vector twice (one load per
 * 3 FMAs, well within three load ports). Up to four panels (48 columns, 48·K floats of the
 * 64·K scratch) are packed at a time and each 8-row x tile is used for all of them while it sits
 * in L1; K is blocked by KC so that a panel's chunk (KC·12 floats) and the x tile (8·KC) stay
 * there too, at one store and reload of the accumulators per block. */
#define NR 12
#define MR 8
#define PANELS 4
#define KC 512

/* Packs weight rows n ..< n+cols (≤ 12; missing rows as zeros) into pack[k·12 + j]: rows are
 * widened 16 inputs at a time into vectors and 4×4 blocks transposed into place. */
static void pack_panel(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t cols,
                       float *pack) {
    const int64_t K16 = K & ~(int64_t)15;
    for (int j0 = 0; j0 < NR; j0 += 4) {
        for (int64_t k = 0; k < K16; k += 16) {
            float32x4_t v[4][4]; /* v[row][quarter] */
            for (int r = 0; r < 4; r++) {
                if (j0 + r < cols) widen16(W, scales, format, K, n + j0 + r, k, v[r]);
                else
                    for (int i = 0; i < 4; i++) v[r][i] = vdupq_n_f32(0);
            }
            for (int i = 0; i < 4; i++) {
                float32x4_t b[4] = {v[0][i], v[1][i], v[2][i], v[3][i]};
                transpose4(b);
                for (int c = 0; c < 4; c++) vst1q_f32(pack + (k + 4 * i + c) * NR + j0, b[c]);
            }
        }
        for (int64_t k = K16; k < K; k++) {
            float t[4];
            for (int r = 0; r < 4; r++) t[r] = j0 + r < cols ? weight_value(W, scales, format, K, n + j0 + r, k) : 0.0f;
            vst1q_f32(pack + k * NR + j0, vld1q_f32(t));
        }
    }
}

/* Rows h ..< min(h + 4, mr) of a tile take inputs k ..< k+4: one x vector per row, its lanes
 * against the panel's four weight rows (h and mr constants once inlined, so acc stays in
 * registers). */
static inline __attribute__((always_inline)) void f32_half(float32x4_t acc[MR][3], const float *x, int64_t ldx,
                                                           int64_t k, const float *p, const int h, const int mr) {
    /* an opaque copy of the panel pointer: the second half reloads the weight vectors instead
     * of the compiler keeping all twelve live (and spilling accumulators) */
    const float *ph = p;
    __asm__ volatile("" : "+r"(ph));
    float32x4_t xv[4];
    for (int i = 0; i < 4 && h + i < mr; i++) xv[i] = vld1q_f32(x + (h + i) * ldx + k);
#define F32_STEP(l)                                                                                   \
    do {                                                                                              \
        float32x4_t w0 = vld1q_f32(ph + (l) * NR), w1 = vld1q_f32(ph + (l) * NR + 4),                 \
                    w2 = vld1q_f32(ph + (l) * NR + 8);                                                \
        for (int i = 0; i < 4 && h + i < mr; i++) {                                                   \
            acc[h + i][0] = vfmaq_laneq_f32(acc[h + i][0], w0, xv[i], l);                             \
            acc[h + i][1] = vfmaq_laneq_f32(acc[h + i][1], w1, xv[i], l);                             \
            acc[h + i][2] = vfmaq_laneq_f32(acc[h + i][2], w2, xv[i], l);                             \
        }                                                                                             \
    } while (0)
    F32_STEP(0);
    F32_STEP(1);
    F32_STEP(2);
    F32_STEP(3);
#undef F32_STEP
}

/* y tile += x tile · panel over inputs kb ..< ke (mr ≤ 8 rows, a constant where inlined).
 * first: start from zero, else from what y holds; last: add the bias. */
static inline __attribute__((always_inline)) void f32_tile(const float *x, int64_t ldx, const float *pack, int64_t kb,
                                                           int64_t ke, float *y, int64_t ldy, int64_t cols,
                                                           const float *bias, int first, int last, const int mr) {
    float32x4_t acc[MR][3];
    for (int r = 0; r < mr; r++) {
        if (first) {
            acc[r][0] = acc[r][1] = acc[r][2] = vdupq_n_f32(0);
        } else if (cols == NR) {
            for (int c = 0; c < 3; c++) acc[r][c] = vld1q_f32(y + r * ldy + 4 * c);
        } else {
            float t[NR] = {0};
            memcpy(t, y + r * ldy, (size_t)cols * sizeof(float));
            for (int c = 0; c < 3; c++) acc[r][c] = vld1q_f32(t + 4 * c);
        }
    }
    int64_t k = kb;
    for (; k + 4 <= ke; k += 4) {
        f32_half(acc, x, ldx, k, pack + k * NR, 0, mr);
        if (mr > 4) f32_half(acc, x, ldx, k, pack + k * NR, 4, mr);
    }
    for (; k < ke; k++) {
        const float *p = pack + k * NR;
        float32x4_t w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4), w2 = vld1q_f32(p + 8);
        for (int r = 0; r < mr; r++) {
            float xs = x[r * ldx + k];
            acc[r][0] = vfmaq_n_f32(acc[r][0], w0, xs);
            acc[r][1] = vfmaq_n_f32(acc[r][1], w1, xs);
            acc[r][2] = vfmaq_n_f32(acc[r][2], w2, xs);
        }
    }
    float32x4_t b[3] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    if (last && bias) {
        float t[NR] = {0};
        memcpy(t, bias, (size_t)cols * sizeof(float));
        for (int c = 0; c < 3; c++) b[c] = vld1q_f32(t + 4 * c);
    }
    for (int r = 0; r < mr; r++) {
        if (cols == NR) {
            for (int c = 0; c < 3; c++) vst1q_f32(y + r * ldy + 4 * c, vaddq_f32(acc[r][c], b[c]));
        } else {
            float t[NR];
            for (int c = 0; c < 3; c++) vst1q_f32(t + 4 * c, vaddq_f32(acc[r][c], b[c]));
            memcpy(y + r * ldy, t, (size_t)cols * sizeof(float));
        }
    }
}

/* One function per tile height, so that each keeps its tile in registers on its own. */
typedef void (*f32_tile_fn)(const float *, int64_t, const float *, int64_t, int64_t, float *, int64_t, int64_t,
                            const float *, int, int);
#define F32_TILE(mr)                                                                                         \
    static void f32_tile_##mr(const float *x, int64_t ldx, const float *pack, int64_t kb, int64_t ke, float *y, \
                              int64_t ldy, int64_t cols, const float *bias, int first, int last) {               \
        f32_tile(x, ldx, pack, kb, ke, y, ldy, cols, bias, first, last, mr);                                  \
    }
F32_TILE(1)
F32_TILE(2)
F32_TILE(3)
F32_TILE(4)
F32_TILE(5)
F32_TILE(6)
F32_TILE(7)
F32_TILE(8)
#undef F32_TILE
static const f32_tile_fn f32_tiles[MR] = {f32_tile_1, f32_tile_2, f32_tile_3, f32_tile_4,
                                          f32_tile_5, f32_tile_6, f32_tile_7, f32_tile_8};

static void gemm_f32_packed_neon(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                 const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                 int64_t n0, int64_t n1, float *scratch) {
    for (int64_t nb = n0; nb < n1; nb += NR * PANELS) {
        int panels = 0;
        int64_t cols[PANELS];
        for (int p = 0; p < PANELS && nb + p * NR < n1; p++, panels++) {
            int64_t n = nb + p * NR;
            cols[p] = n1 - n < NR ? n1 - n : NR;
            pack_panel(W, scales, format, K, n, cols[p], scratch + p * NR * K);
        }
        for (int64_t kb = 0; kb < K; kb += KC) {
            int64_t ke = kb + KC < K ? kb + KC : K;
            int first = kb == 0, last = ke == K;
            for (int64_t m = 0; m < M; m += MR) {
                int64_t mr = M - m < MR ? M - m : MR;
                const float *xt = x + m * ldx;
                for (int p = 0; p < panels; p++) {
                    int64_t n = nb + p * NR;
                    const float *pk = scratch + p * NR * K;
                    const float *b = bias ? bias + n : NULL;
                    float *yt = y + m * ldy + n;
                    f32_tiles[mr - 1](xt, ldx, pk, kb, ke, yt, ldy, cols[p], b, first, last);
                }
            }
        }
    }
}

/* ---- quantized GEMV with a float32 input (decode) ---- */

/* Two rows per pass share the x loads. A group's 32 weights are widened to float32 in registers
 * (q8: sign-extend twice, convert; q4: mask/shift the nibbles, −8, then the same), multiplied
 * with x in two partial sums, and each partial sum is scaled once by the group's weight scale;
 * four groups' scales are widened by one FCVTL. */
static inline __attribute__((always_inline)) void q_group_parts(const void *W, int format, int64_t K, int64_t n,
                                                                int64_t g, const float32x4_t xv[8],
                                                                float32x4_t *p0, float32x4_t *p1) {
    int8x16_t a, b;
    if (format == CK_Q8) {
        const int8_t *q = (const int8_t *)W + n * K + g * CK_GROUP;
        a = vld1q_s8(q);
        b = vld1q_s8(q + 16);
    } else {
        q4_split((const uint8_t *)W + n * (K / 2) + g * 16, &a, &b);
    }
    int16x8_t a0 = vmovl_s8(vget_low_s8(a)), a1 = vmovl_high_s8(a);
    int16x8_t b0 = vmovl_s8(vget_low_s8(b)), b1 = vmovl_high_s8(b);
    float32x4_t s = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a0))), xv[0]);
    float32x4_t t = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(b0))), xv[4]);
    s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_high_s16(a0)), xv[1]);
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_high_s16(b0)), xv[5]);
    s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_s16(vget_low_s16(a1))), xv[2]);
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_s16(vget_low_s16(b1))), xv[6]);
    s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_high_s16(a1)), xv[3]);
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_high_s16(b1)), xv[7]);
    *p0 = s;
    *p1 = t;
}

static inline __attribute__((always_inline)) void gemv_q_rows(const float *x, int64_t K, const void *W,
                                                              const uint16_t *scales, const int format,
                                                              const float *bias, float *y, int64_t n, const int rows) {
    const int64_t G = K / CK_GROUP;
    float32x4_t acc[2][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0);
    for (int64_t g0 = 0; g0 < G; g0 += 4) {
        const int gn = G - g0 < 4 ? (int)(G - g0) : 4;
        float sf[2][4];
        for (int r = 0; r < rows; r++) {
            if (gn == 4) {
                vst1q_f32(sf[r], f16x4(scales + (n + r) * G + g0));
            } else {
                for (int i = 0; i < gn; i++) sf[r][i] = ck_f16_value(scales[(n + r) * G + g0 + i]);
            }
        }
        for (int i = 0; i < gn; i++) {
            const int64_t g = g0 + i;
            float32x4_t xv[8];
            for (int c = 0; c < 8; c++) xv[c] = vld1q_f32(x + g * CK_GROUP + 4 * c);
            for (int r = 0; r < rows; r++) {
                float32x4_t p0, p1;
                q_group_parts(W, format, K, n + r, g, xv, &p0, &p1);
                acc[r][0] = vfmaq_n_f32(acc[r][0], p0, sf[r][i]);
                acc[r][1] = vfmaq_n_f32(acc[r][1], p1, sf[r][i]);
            }
        }
    }
    for (int r = 0; r < rows; r++) y[n + r] = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1])) + (bias ? bias[n + r] : 0.0f);
}

static void gemv_q_neon(const float *x, int64_t K, const void *W, const uint16_t *scales, int format,
                        const float *bias, float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    if (format == CK_Q8) {
        for (; n + 2 <= n1; n += 2) gemv_q_rows(x, K, W, scales, CK_Q8, bias, y, n, 2);
        if (n < n1) gemv_q_rows(x, K, W, scales, CK_Q8, bias, y, n, 1);
    } else {
        for (; n + 2 <= n1; n += 2) gemv_q_rows(x, K, W, scales, CK_Q4, bias, y, n, 2);
        if (n < n1) gemv_q_rows(x, K, W, scales, CK_Q4, bias, y, n, 1);
    }
}

/* ---- probes ---- */

/* A bandwidth probe: eight independent add chains keep enough loads in flight. */
static float read_all_neon(const float *p, int64_t n) {
    float32x4_t s[8];
    for (int i = 0; i < 8; i++) s[i] = vdupq_n_f32(0);
    int64_t k = 0;
    for (; k + 32 <= n; k += 32)
        for (int i = 0; i < 8; i++) s[i] = vaddq_f32(s[i], vld1q_f32(p + k + 4 * i));
    for (; k + 4 <= n; k += 4) s[0] = vaddq_f32(s[0], vld1q_f32(p + k));
    for (int i = 0; i < 4; i++) s[i] = vaddq_f32(s[i], s[i + 4]);
    float r = vaddvq_f32(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])));
    for (; k < n; k++) r += p[k];
    return r;
}

/* 24 independent FMA chains: more than the 16 (4 pipes × latency 4) the widest cores need.
 * FMLA accumulates into its destination, so each chain is the addend (a += c·m), which keeps
 * every chain in its own register with no copies. */
#define PROBE_CHAINS 24
static double fma_probe_neon(int64_t iterations, float *sink) {
    float32x4_t a[PROBE_CHAINS];
    const float32x4_t m = vdupq_n_f32(0.999f), c = vdupq_n_f32(1e-3f);
    for (int i = 0; i < PROBE_CHAINS; i++) a[i] = vdupq_n_f32((float)i);
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < PROBE_CHAINS; i++) a[i] = vfmaq_f32(a[i], c, m);
    for (int i = 1; i < PROBE_CHAINS; i++) a[0] = vaddq_f32(a[0], a[i]);
    *sink = vaddvq_f32(a[0]);
    return (double)iterations * PROBE_CHAINS * 4 * 2;
}

void ck_fill_neon_products(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->convert_row = convert_row_neon;
    t->dot = dot_neon;
    t->dot4 = dot4_neon;
    t->axpy = axpy_neon;
    t->axpy4 = axpy4_neon;
    t->scale = scale_neon;
    t->linear = linear_neon;
    t->gemv_bf16 = gemv_bf16_neon;
    t->gemm_f32_packed = gemm_f32_packed_neon;
    t->gemv_q = gemv_q_neon;
    t->read_all = read_all_neon;
    t->fma_probe = fma_probe_neon;
}
#else
void ck_fill_neon_products(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
