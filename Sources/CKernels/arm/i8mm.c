/* Level "neon-i8mm" (arm64): the matrix-multiply instructions. USMMLA multiplies a 2×8 block
 * of u8 by an 8×2 block of s8 into a 2×2 block of int32 (32 multiply-adds, twice SDOT's), which
 * suits prefill: two activation rows × two weight columns per instruction. With FEAT_BF16,
 * BFMMLA does the same for bf16 into float32. Decode (one input row) keeps the SDOT GEMV of the
 * level below: a 2-row instruction would waste half its work there. */
#include "arm_int8.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define I8MM __attribute__((target("i8mm")))
#define BF16 __attribute__((target("bf16")))
#define INLINE static inline __attribute__((always_inline))

/* ---------------- int8 prefill ---------------- */

/* Blocking as the SDOT level's: 32-column panels in sub-panels of 8 (one tile's width), K in
 * blocks of 32 groups (32 KB of panel per block stays in L1 for every 4-row tile), float32
 * partial sums kept in y between blocks. */

INLINE uint64x2_t u64(int8x16_t v) { return vreinterpretq_u64_s8(v); }

/* Packs columns n ..< n + cols (≤ 8; the rest zero) for the USMMLA tile. Per group g and 8-byte
 * step s (4 per group), four column pairs p of 16 bytes: column 2p's weights 8s…8s+7, then
 * column 2p+1's — USMMLA's 8×2 operand. Per group and pair, then, the compensation −128·Σw in
 * the 2×2 result's order [c0, c1, c0, c1] (the activations are u = q + 128; the tile's sums
 * start from it), summed by the matrix instruction itself against a block of ones, and the two
 * weight scales in the same order. */
I8MM static void pack_sub_mm(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int cols,
                             int8_t *pw, int32_t *comp, float *ws) {
    const int64_t G = ck_groups(K), rowBytes = format == CK_Q8 ? K : K / 2;
    const int8x16_t ones = vdupq_n_s8(1);
    const void *rows[QP_SUB];
    for (int j = 0; j < QP_SUB; j++) rows[j] = j < cols ? (const char *)W + (n + j) * rowBytes : NULL;
    float sc[QP_SUB];
    for (int64_t g = 0; g < G; g++) {
        int8x16_t v[QP_SUB][2];
        for (int j = 0; j < QP_SUB; j++) load_group(format, K, rows[j], g, &v[j][0], &v[j][1]);
        int8_t *dst = pw + g * 4 * 4 * 16;
        for (int p = 0; p < 4; p++) {
            int32x4_t sum = vdupq_n_s32(0);
            for (int h = 0; h < 2; h++) {
                int8x16_t even = vreinterpretq_s8_u64(vzip1q_u64(u64(v[2 * p][h]), u64(v[2 * p + 1][h])));
                int8x16_t odd = vreinterpretq_s8_u64(vzip2q_u64(u64(v[2 * p][h]), u64(v[2 * p + 1][h])));
                vst1q_s8(dst + (2 * h) * 64 + p * 16, even);
                vst1q_s8(dst + (2 * h + 1) * 64 + p * 16, odd);
                sum = vmmlaq_s32(vmmlaq_s32(sum, ones, even), ones, odd);
            }
            vst1q_s32(comp + g * 16 + p * 4, vnegq_s32(vshlq_n_s32(sum, 7)));
        }
        /* the few scales of a group: one per column (packing cost, not the tile's) */
        for (int j = 0; j < QP_SUB; j++) sc[j] = j < cols ? ck_f16_value(scales[(n + j) * G + g]) : 0.0f;
        for (int p = 0; p < 4; p++) {
            float32x2_t pair = vld1_f32(sc + 2 * p);
            vst1q_f32(ws + g * 16 + p * 4, vcombine_f32(pair, pair));
        }
    }
}

/* A tile of 2·pairs rows (an odd last row is computed twice from the same bytes and stored once)
 * × 8 columns over groups g0 ..< g1 of one sub-panel. Per group and row pair, each 16-byte load
 * of two rows zips into two 2×8 operands; 4 steps × 4 column pairs of USMMLA give the exact
 * 2×2 sums [r0c0, r0c1, r1c0, r1c1], converted and scaled by w_scale·x_scale in that order into
 * float32 accumulators. y (stride ldy) holds the running sums: read unless `first`, bias added
 * when `last`. */
I8MM INLINE void tile_mm(const uint8_t *xq, int64_t Kp, const float *xs, int64_t G, const int8_t *pw,
                         const int32_t *comp, const float *ws, int64_t g0, int64_t g1, int first, int last,
                         const float *bias, float *y, int64_t ldy, int mr, const int pairs) {
    const uint8_t *xr[4];
    const float *sr[4];
    for (int r = 0; r < 4; r++) {
        int rr = r < mr ? r : mr - 1;
        xr[r] = xq + rr * Kp;
        sr[r] = xs + rr * G;
    }
    float32x4_t acc[2][4];
    for (int i = 0; i < pairs; i++)
        for (int p = 0; p < 4; p++) {
            if (first) {
                acc[i][p] = vdupq_n_f32(0);
            } else {
                /* rows 2i and 2i+1 (the latter may be the repeated row: any value, never stored) */
                float32x2_t a = vld1_f32(y + (2 * i) * ldy + 2 * p);
                float32x2_t b = 2 * i + 1 < mr ? vld1_f32(y + (2 * i + 1) * ldy + 2 * p) : a;
                acc[i][p] = vcombine_f32(a, b);
            }
        }
    for (int64_t g = g0; g < g1; g++) {
        int32x4x4_t c = vld1q_s32_x4(comp + g * 16);
        int32x4_t d[2][4];
        for (int i = 0; i < pairs; i++)
            for (int p = 0; p < 4; p++) d[i][p] = c.val[p];
        const int8_t *pg = pw + g * 4 * 4 * 16;
        for (int h = 0; h < 2; h++) {
            uint8x16_t a[2][2];
            for (int i = 0; i < pairs; i++) {
                uint64x2_t r0 = vreinterpretq_u64_u8(vld1q_u8(xr[2 * i] + g * 32 + 16 * h));
                uint64x2_t r1 = vreinterpretq_u64_u8(vld1q_u8(xr[2 * i + 1] + g * 32 + 16 * h));
                a[i][0] = vreinterpretq_u8_u64(vzip1q_u64(r0, r1));
                a[i][1] = vreinterpretq_u8_u64(vzip2q_u64(r0, r1));
            }
            for (int s = 0; s < 2; s++) {
                int8x16x4_t b = vld1q_s8_x4(pg + (2 * h + s) * 64);
                for (int i = 0; i < pairs; i++)
                    for (int p = 0; p < 4; p++) d[i][p] = vusmmlaq_s32(d[i][p], a[i][s], b.val[p]);
            }
        }
        float32x4x4_t wsp = vld1q_f32_x4(ws + g * 16);
        for (int i = 0; i < pairs; i++) {
            float32x4_t sx = vcombine_f32(vld1_dup_f32(sr[2 * i] + g), vld1_dup_f32(sr[2 * i + 1] + g));
            for (int p = 0; p < 4; p++)
                acc[i][p] = vfmaq_f32(acc[i][p], vcvtq_f32_s32(d[i][p]), vmulq_f32(wsp.val[p], sx));
        }
    }
    for (int i = 0; i < pairs; i++) {
        /* [r0c0, r0c1, r1c0, r1c1] pairs → rows of 4 columns */
        for (int q = 0; q < 2; q++) {
            uint64x2_t e = vreinterpretq_u64_f32(acc[i][2 * q]), o = vreinterpretq_u64_f32(acc[i][2 * q + 1]);
            float32x4_t top = vreinterpretq_f32_u64(vzip1q_u64(e, o)), bottom = vreinterpretq_f32_u64(vzip2q_u64(e, o));
            if (last && bias) {
                float32x4_t b = vld1q_f32(bias + 4 * q);
                top = vaddq_f32(top, b);
                bottom = vaddq_f32(bottom, b);
            }
            vst1q_f32(y + (2 * i) * ldy + 4 * q, top);
            if (2 * i + 1 < mr) vst1q_f32(y + (2 * i + 1) * ldy + 4 * q, bottom);
        }
    }
}

/* One tile call (a narrow sub-panel through a local copy: narrow_tile). */
I8MM static void run_tile_mm(const uint8_t *xq, int64_t Kp, const float *xs, int64_t G, const int8_t *pw,
                             const int32_t *comp, const float *ws, int64_t g0, int64_t g1, const float *bias,
                             float *y, int64_t ldy, int cols, int mr) {
    const int first = g0 == 0, last = g1 == G;
    narrow_tile copy;
    float *yt = y;
    int64_t ldt = ldy;
    if (cols < QP_SUB) narrow_tile_in(&copy, first, cols, mr, &yt, &ldt, &bias);
    if (mr > 2) tile_mm(xq, Kp, xs, G, pw, comp, ws, g0, g1, first, last, bias, yt, ldt, mr, 2);
    else tile_mm(xq, Kp, xs, G, pw, comp, ws, g0, g1, first, last, bias, yt, ldt, mr, 1);
    if (cols < QP_SUB) narrow_tile_out(&copy, cols, mr, y, ldy);
}

I8MM static void gemm_q_int8_i8mm(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                                  const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                  int64_t n0, int64_t n1, void *scratch) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    /* scratch: 32 columns × Kp weight bytes, then per sub-panel G × 16 compensations and G × 16
     * scales (32·Kp + 512·G bytes, within the public 64·Kp + 256·G) */
    int8_t *pw = (int8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int32_t *comp = (int32_t *)(pw + QP_COLS * Kp);
    float *ws = (float *)(comp + (QP_COLS / QP_SUB) * G * 16);
    for (int64_t n = n0; n < n1; n += QP_COLS) {
        const int width = n1 - n < QP_COLS ? (int)(n1 - n) : QP_COLS;
        const int subs = (width + QP_SUB - 1) / QP_SUB;
        for (int s = 0; s < subs; s++) {
            int cols = width - s * QP_SUB < QP_SUB ? width - s * QP_SUB : QP_SUB;
            pack_sub_mm(W, scales, format, K, n + s * QP_SUB, cols, pw + s * QP_SUB * Kp, comp + s * G * 16,
                        ws + s * G * 16);
        }
        for (int64_t g0 = 0; g0 < G; g0 += QP_GROUPS) {
            const int64_t g1 = g0 + QP_GROUPS < G ? g0 + QP_GROUPS : G;
            for (int64_t m = 0; m < M; m += QP_ROWS) {
                const int mr = M - m < QP_ROWS ? (int)(M - m) : QP_ROWS;
                for (int s = 0; s < subs; s++) {
                    int cols = width - s * QP_SUB < QP_SUB ? width - s * QP_SUB : QP_SUB;
                    int64_t c = n + s * QP_SUB;
                    run_tile_mm(xq + m * Kp, Kp, xs + m * G, G, pw + s * QP_SUB * Kp, comp + s * G * 16,
                                ws + s * G * 16, g0, g1, bias ? bias + c : NULL, y + m * ldy + c, ldy, cols, mr);
                }
            }
        }
    }
}

/* Twelve independent USMMLA chains (32 multiply-adds each per step). */
I8MM static double int8_probe_i8mm(int64_t iterations, float *sink) {
    int32x4_t a[12];
    uint8x16_t x = vdupq_n_u8(3);
    int8x16_t w = vdupq_n_s8(-2);
    __asm__ volatile("" : "+w"(x), "+w"(w)); /* opaque operands: nothing to fold */
    for (int i = 0; i < 12; i++) a[i] = vdupq_n_s32(i);
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < 12; i++) a[i] = vusmmlaq_s32(a[i], x, w);
    int32x4_t s = a[0];
    for (int i = 1; i < 12; i++) s = vaddq_s32(s, a[i]);
    *sink = (float)vaddvq_s32(s);
    return (double)iterations * 12 * 32 * 2;
}

/* ---------------- bf16 ---------------- */

/* float32 → bf16 rounded to nearest even in integer arithmetic (u + 0x7FFF + bit 16, top half),
 * bit for bit ck_bf16_round whatever the value, NaNs and subnormals included; zeros past K up
 * to the next multiple of 32. */
static void to_bf16_rows_neon(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    const uint32x4_t bias = vdupq_n_u32(0x7FFF), one = vdupq_n_u32(1);
    for (int64_t m = 0; m < M; m++) {
        const float *src = x + m * ldx;
        uint16_t *dst = out + m * Kp;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            uint32x4_t a = vreinterpretq_u32_f32(vld1q_f32(src + k));
            uint32x4_t b = vreinterpretq_u32_f32(vld1q_f32(src + k + 4));
            a = vaddq_u32(a, vaddq_u32(bias, vandq_u32(vshrq_n_u32(a, 16), one)));
            b = vaddq_u32(b, vaddq_u32(bias, vandq_u32(vshrq_n_u32(b, 16), one)));
            vst1q_u16(dst + k, vcombine_u16(vshrn_n_u32(a, 16), vshrn_n_u32(b, 16)));
        }
        for (; k < K; k++) dst[k] = ck_bf16_round(src[k]);
        for (; k < Kp; k++) dst[k] = 0;
    }
}

/* bf16 prefill. BFMMLA multiplies a 2×4 block of bf16 by a 4×2 block into a 2×2 block of
 * float32. Weights are packed per 16 columns and per block of BF_K inputs into a stack buffer
 * (16 KB, in L1 while all rows pass over it): per 4-input step, eight column pairs of 8 bf16
 * (column 2p's 4 values, then column 2p+1's). Activations need no packing: two rows' 8 values
 * zip into two steps' 2×4 operands. A tile is 4 rows × 16 columns (16 accumulators); partial
 * sums wait in y between input blocks. */
#define BF_COLS 16
#define BF_K 512

/* Packs columns n ..< n + cols (the rest zero) over inputs k0 ..< k0 + len (len a multiple of 8;
 * past K zero). */
static void pack_bf16(const uint16_t *W, int64_t K, int64_t n, int cols, int64_t k0, int64_t len, uint16_t *pb) {
    for (int p = 0; p < BF_COLS / 2; p++) {
        const uint16_t *c0 = 2 * p < cols ? W + (n + 2 * p) * K : NULL;
        const uint16_t *c1 = 2 * p + 1 < cols ? W + (n + 2 * p + 1) * K : NULL;
        for (int64_t k = 0; k < len; k += 8) {
            uint16x8_t a, b;
            if (k0 + k + 8 <= K) {
                a = c0 ? vld1q_u16(c0 + k0 + k) : vdupq_n_u16(0);
                b = c1 ? vld1q_u16(c1 + k0 + k) : vdupq_n_u16(0);
            } else {
                /* the row's end: its own values, then zeros */
                uint16_t ta[8], tb[8];
                for (int i = 0; i < 8; i++) {
                    int64_t kk = k0 + k + i;
                    ta[i] = c0 && kk < K ? c0[kk] : 0;
                    tb[i] = c1 && kk < K ? c1[kk] : 0;
                }
                a = vld1q_u16(ta);
                b = vld1q_u16(tb);
            }
            uint64x2_t ua = vreinterpretq_u64_u16(a), ub = vreinterpretq_u64_u16(b);
            uint16_t *dst = pb + (k / 4) * BF_COLS * 4 + p * 8;
            vst1q_u16(dst, vreinterpretq_u16_u64(vzip1q_u64(ua, ub)));
            vst1q_u16(dst + BF_COLS * 4, vreinterpretq_u16_u64(vzip2q_u64(ua, ub)));
        }
    }
}

BF16 INLINE bfloat16x8_t bf(uint64x2_t v) { return vreinterpretq_bf16_u64(v); }

/* mr (≤ 4) rows × 16 columns over packed inputs 0 ..< len of a block; an odd last row is
 * computed twice and stored once. */
BF16 INLINE void tile_bf16(const uint16_t *xb, int64_t Kp, const uint16_t *pb, int64_t len, int first,
                           const float *bias, float *y, int64_t ldy, int mr, const int pairs) {
    const uint16_t *xr[4];
    for (int r = 0; r < 4; r++) xr[r] = xb + (r < mr ? r : mr - 1) * Kp;
    float32x4_t acc[2][8];
    for (int i = 0; i < pairs; i++)
        for (int p = 0; p < 8; p++) {
            if (first) {
                acc[i][p] = vdupq_n_f32(0);
            } else {
                float32x2_t a = vld1_f32(y + (2 * i) * ldy + 2 * p);
                float32x2_t b = 2 * i + 1 < mr ? vld1_f32(y + (2 * i + 1) * ldy + 2 * p) : a;
                acc[i][p] = vcombine_f32(a, b);
            }
        }
    for (int64_t k = 0; k < len; k += 8) {
        bfloat16x8_t a[2][2];
        for (int i = 0; i < pairs; i++) {
            uint64x2_t r0 = vreinterpretq_u64_u16(vld1q_u16(xr[2 * i] + k));
            uint64x2_t r1 = vreinterpretq_u64_u16(vld1q_u16(xr[2 * i + 1] + k));
            a[i][0] = bf(vzip1q_u64(r0, r1));
            a[i][1] = bf(vzip2q_u64(r0, r1));
        }
        for (int s = 0; s < 2; s++) {
            const uint16_t *pk = pb + (k / 4 + s) * BF_COLS * 4;
            for (int p = 0; p < 8; p++) {
                bfloat16x8_t w = vreinterpretq_bf16_u16(vld1q_u16(pk + p * 8));
                for (int i = 0; i < pairs; i++) acc[i][p] = vbfmmlaq_f32(acc[i][p], a[i][s], w);
            }
        }
    }
    for (int i = 0; i < pairs; i++)
        for (int q = 0; q < 4; q++) {
            uint64x2_t e = vreinterpretq_u64_f32(acc[i][2 * q]), o = vreinterpretq_u64_f32(acc[i][2 * q + 1]);
            float32x4_t top = vreinterpretq_f32_u64(vzip1q_u64(e, o)), bottom = vreinterpretq_f32_u64(vzip2q_u64(e, o));
            if (bias) {
                float32x4_t b = vld1q_f32(bias + 4 * q);
                top = vaddq_f32(top, b);
                bottom = vaddq_f32(bottom, b);
            }
            vst1q_f32(y + (2 * i) * ldy + 4 * q, top);
            if (2 * i + 1 < mr) vst1q_f32(y + (2 * i + 1) * ldy + 4 * q, bottom);
        }
}

BF16 static void gemm_bf16_bfmmla(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y,
                                  int64_t ldy, int64_t n0, int64_t n1) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    uint16_t pb[BF_COLS * BF_K] __attribute__((aligned(64)));
    float tmp[4 * BF_COLS], tb[BF_COLS];
    for (int64_t n = n0; n < n1; n += BF_COLS) {
        const int cols = n1 - n < BF_COLS ? (int)(n1 - n) : BF_COLS;
        const float *bn = bias ? bias + n : NULL;
        if (bias && cols < BF_COLS) {
            for (int j = 0; j < BF_COLS; j++) tb[j] = j < cols ? bias[n + j] : 0.0f;
            bn = tb;
        }
        for (int64_t k0 = 0; k0 < Kp; k0 += BF_K) {
            const int64_t len = Kp - k0 < BF_K ? Kp - k0 : BF_K; /* a multiple of 32 */
            pack_bf16((const uint16_t *)W, K, n, cols, k0, len, pb);
            const int first = k0 == 0, last = k0 + len == Kp;
            for (int64_t m = 0; m < M; m += 4) {
                const int mr = M - m < 4 ? (int)(M - m) : 4;
                float *yt = y + m * ldy + n;
                int64_t ldt = ldy;
                if (cols < BF_COLS) {
                    /* a narrow last panel runs on a local copy of its y */
                    for (int r = 0; r < mr; r++)
                        for (int j = 0; j < BF_COLS; j++) tmp[r * BF_COLS + j] = !first && j < cols ? yt[r * ldy + j] : 0.0f;
                    yt = tmp;
                    ldt = BF_COLS;
                }
                const float *b = last ? bn : NULL;
                if (mr > 2) tile_bf16(xb + m * Kp + k0, Kp, pb, len, first, b, yt, ldt, mr, 2);
                else tile_bf16(xb + m * Kp + k0, Kp, pb, len, first, b, yt, ldt, mr, 1);
                if (cols < BF_COLS)
                    for (int r = 0; r < mr; r++)
                        for (int j = 0; j < cols; j++) y[(m + r) * ldy + n + j] = tmp[r * BF_COLS + j];
            }
        }
    }
}

/* Twelve independent BFMMLA chains (16 multiply-adds each per step). */
BF16 static double bf16_probe_bfmmla(int64_t iterations, float *sink) {
    float32x4_t a[12];
    uint16x8_t xu = vdupq_n_u16(0x3F80), wu = vdupq_n_u16(0x3A83); /* 1.0 and about 0.001 */
    __asm__ volatile("" : "+w"(xu), "+w"(wu)); /* opaque operands: nothing to fold */
    bfloat16x8_t x = vreinterpretq_bf16_u16(xu), w = vreinterpretq_bf16_u16(wu);
    for (int i = 0; i < 12; i++) a[i] = vdupq_n_f32((float)i);
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < 12; i++) a[i] = vbfmmlaq_f32(a[i], x, w);
    float32x4_t s = a[0];
    for (int i = 1; i < 12; i++) s = vaddq_f32(s, a[i]);
    *sink = vaddvq_f32(s);
    return (double)iterations * 12 * 16 * 2;
}

void ck_fill_i8mm(ck_kernels *t, const ck_cpu *cpu) {
    t->name = "neon-i8mm";
    t->int8_products = 1;
    t->gemm_q_int8 = gemm_q_int8_i8mm;
    t->int8_probe = int8_probe_i8mm;
    if (cpu->bf16) {
        t->bf16_products = 1;
        t->to_bf16_rows = to_bf16_rows_neon;
        t->gemm_bf16 = gemm_bf16_bfmmla;
        t->bf16_probe = bf16_probe_bfmmla;
    }
}
#else
void ck_fill_i8mm(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
