/* Level "neon-dotprod" (arm64): SDOT (4-way int8 dot products into int32 lanes) for the
 * quantized products, on top of the neon level's float kernels. Inputs are rounded to int8 per
 * group of 32 (ck_quantize_input, ck_quantize_rows_u8); SDOT multiplies signed × signed, so the
 * int8 values meet the weights as they are: no sign moves, no compensation. */
#include "arm_int8.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define DOTPROD __attribute__((target("dotprod")))
#define INLINE static inline __attribute__((always_inline))

/* ---------------- rounding inputs to int8 ---------------- */

/* max|v| over a group of 32, NaNs skipped as fmaxf skips them (FMAXNM) */
INLINE float group_amax(const float *v) {
    /* from 0 as the generic loop starts, so that a group of NaNs gives 0 there too */
    float32x4_t m = vdupq_n_f32(0);
    for (int i = 0; i < 32; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(v + i)));
    return vmaxnmvq_f32(m);
}

/* 16 values → round(v·inv) clamped to [−127, 127] as int8: FRINTN-style rounding (to nearest
 * even, nearbyintf's default mode) of the same float32 products the generic code forms */
INLINE int8x16_t round16(const float *v, float32x4_t inv) {
    const int32x4_t hi = vdupq_n_s32(127), lo = vdupq_n_s32(-127);
    int32x4_t q[4];
    for (int i = 0; i < 4; i++)
        q[i] = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_f32(vld1q_f32(v + 4 * i), inv)), hi), lo);
    int16x8_t a = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
    int16x8_t b = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
    return vcombine_s8(vmovn_s16(a), vmovn_s16(b));
}

/* bit i of the result set when lane i of a (i < 16) or lane i − 16 of b is negative: each lane's
 * sign mask keeps one weight 2^(i mod 8), and three pairwise adds sum every 8 lanes into a byte */
INLINE uint32_t negative_bits(int8x16_t a, int8x16_t b) {
    const uint8x16_t weight = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t ma = vandq_u8(vcltzq_s8(a), weight), mb = vandq_u8(vcltzq_s8(b), weight);
    uint8x16_t p = vpaddq_u8(ma, mb);
    p = vpaddq_u8(p, p);
    p = vpaddq_u8(p, p);
    return vgetq_lane_u32(vreinterpretq_u32_u8(p), 0);
}

DOTPROD static void quantize_input_dotprod(const float *x, int64_t K, ck_qinput *out) {
    const int64_t G = K / CK_GROUP;
    const int8x16_t ones = vdupq_n_s8(1);
    for (int64_t g = 0; g < G; g++) {
        const float *v = x + g * 32;
        float amax = group_amax(v);
        out->scale[g] = amax / 127.0f;
        float32x4_t inv = vdupq_n_f32(amax > 0 ? 127.0f / amax : 0.0f);
        int8x16_t a = round16(v, inv), b = round16(v + 16, inv);
        vst1q_s8(out->value + g * 32, a);
        vst1q_s8(out->value + g * 32 + 16, b);
        /* |q| ≤ 127, so the absolute value never wraps */
        vst1q_u8(out->magnitude + g * 32, vreinterpretq_u8_s8(vabsq_s8(a)));
        vst1q_u8(out->magnitude + g * 32 + 16, vreinterpretq_u8_s8(vabsq_s8(b)));
        uint64_t neg = negative_bits(a, b);
        if (g % 2 == 0) out->negative[g / 2] = neg;
        else out->negative[g / 2] |= neg << 32;
        /* SDOT against ones sums each 4 consecutive values into a lane: sum4 as it is laid out */
        vst1q_s32(out->sum4 + g * 8, vdotq_s32(vdupq_n_s32(0), a, ones));
        vst1q_s32(out->sum4 + g * 8 + 4, vdotq_s32(vdupq_n_s32(0), b, ones));
    }
    ck_quantize_input_q4_order(G, out);
}

/* u = q + 128 is q's byte with its top bit flipped (q in [−127, 127]) */
DOTPROD static void quantize_rows_u8_dotprod(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq,
                                             float *xs) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    float pad[32];
    for (int64_t m = 0; m < M; m++) {
        for (int64_t g = 0; g < G; g++) {
            const float *v = x + m * ldx + g * 32;
            const int len = ck_group_length(K, g);
            if (len < 32) {
                /* a short last group: its own values, then zeros (q = 0, u = 128) */
                for (int i = 0; i < 32; i++) pad[i] = i < len ? v[i] : 0.0f;
                v = pad;
            }
            float amax = group_amax(v);
            xs[m * G + g] = amax / 127.0f;
            float32x4_t inv = vdupq_n_f32(amax > 0 ? 127.0f / amax : 0.0f);
            uint8_t *dst = xq + m * Kp + g * 32;
            vst1q_u8(dst, veorq_u8(vreinterpretq_u8_s8(round16(v, inv)), flip));
            vst1q_u8(dst + 16, veorq_u8(vreinterpretq_u8_s8(round16(v + 16, inv)), flip));
        }
    }
}

/* ---------------- decode: one input row against weight rows ---------------- */

INLINE float32x4_t f16x4(const uint16_t *h) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))); }

/* Decode kernels walk four groups per step: the four groups' w_scale·x_scale products of a row
 * form one vector, and each group's exact int32 lanes are converted and added with the FMA's
 * by-element form taking that group's lane. The rows of a pass are independent FMA chains; the
 * 8-bit kernel, with twice the weight bytes per group, also splits each row into even and odd
 * groups (the 4-bit one has no registers left for that: it would spill). */
#define GROUP_FMA(acc, d, s, lane) acc = vfmaq_laneq_f32(acc, vcvtq_f32_s32(d), s, lane)

/* 8-bit weights, nr (≤ 4) rows per pass sharing each input load: a group is two SDOTs per row
 * (32 products in four int32 lanes). */
DOTPROD INLINE void gemv_q8_rows(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                                 const float *bias, float *y, int64_t n, const int nr) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const int32x4_t zero = vdupq_n_s32(0);
    float32x4_t acc[4][2];
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0);
#define Q8_GROUP(q)                                                                                 \
    do {                                                                                            \
        int8x16_t x0 = vld1q_s8(in->value + (g + q) * 32), x1 = vld1q_s8(in->value + (g + q) * 32 + 16); \
        for (int r = 0; r < nr; r++) {                                                              \
            const int8_t *w = W + (n + r) * K + (g + q) * 32;                                       \
            int32x4_t d = vdotq_s32(vdotq_s32(zero, vld1q_s8(w), x0), vld1q_s8(w + 16), x1);        \
            GROUP_FMA(acc[r][q & 1], d, s[r], q);                                                   \
        }                                                                                           \
    } while (0)
    for (int64_t g = 0; g < G4; g += 4) {
        float32x4_t sx = vld1q_f32(in->scale + g), s[4];
        for (int r = 0; r < nr; r++) s[r] = vmulq_f32(f16x4(scales + (n + r) * G + g), sx);
        Q8_GROUP(0);
        Q8_GROUP(1);
        Q8_GROUP(2);
        Q8_GROUP(3);
    }
#undef Q8_GROUP
    for (int r = 0; r < nr; r++) {
        float t = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1]));
        for (int64_t g = G4; g < G; g++) { /* up to three last groups */
            const int8_t *w = W + (n + r) * K + g * 32;
            int32x4_t d = vdotq_s32(vdotq_s32(zero, vld1q_s8(w), vld1q_s8(in->value + g * 32)), vld1q_s8(w + 16),
                                    vld1q_s8(in->value + g * 32 + 16));
            t += (float)vaddvq_s32(d) * (ck_f16_value(scales[(n + r) * G + g]) * in->scale[g]);
        }
        y[n + r] = t + (bias ? bias[n + r] : 0.0f);
    }
}

/* 4-bit weights: a group's 16 bytes hold elements 0–15 in their low nibbles and 16–31 in their
 * high ones, so one mask and one shift give two vectors in the input's own order. The nibbles
 * (0…15) go into SDOT unshifted; lane i of a group's sum starts from offset_q4 = −8·(the 8
 * inputs that lane meets), which is the −8 of every nibble (the offsets come per four groups,
 * as the steps do); nr (≤ 4) rows share each input load. */
DOTPROD INLINE void gemv_q4_rows(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                                 const float *bias, float *y, int64_t n, const int nr) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const uint8x16_t low = vdupq_n_u8(0x0F);
    float32x4_t acc[4];
    for (int r = 0; r < nr; r++) acc[r] = vdupq_n_f32(0);
#define Q4_GROUP(q)                                                                                 \
    do {                                                                                            \
        int8x16_t x0 = vld1q_s8(in->value + (g + q) * 32), x1 = vld1q_s8(in->value + (g + q) * 32 + 16); \
        int32x4_t off = vld1q_s32(in->offset_q4 + (g + q) * 4);                                     \
        for (int r = 0; r < nr; r++) {                                                              \
            uint8x16_t w = vld1q_u8(W + (n + r) * (K / 2) + (g + q) * 16);                          \
            int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(w, low));                                   \
            int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(w, 4));                                   \
            int32x4_t d = vdotq_s32(vdotq_s32(off, lo, x0), hi, x1);                                \
            GROUP_FMA(acc[r], d, s[r], q);                                                          \
        }                                                                                           \
    } while (0)
    for (int64_t g = 0; g < G4; g += 4) {
        float32x4_t sx = vld1q_f32(in->scale + g), s[4];
        for (int r = 0; r < nr; r++) s[r] = vmulq_f32(f16x4(scales + (n + r) * G + g), sx);
        Q4_GROUP(0);
        Q4_GROUP(1);
        Q4_GROUP(2);
        Q4_GROUP(3);
    }
#undef Q4_GROUP
    const int8x16_t eight = vdupq_n_s8(8);
    for (int r = 0; r < nr; r++) {
        float t = vaddvq_f32(acc[r]);
        for (int64_t g = G4; g < G; g++) { /* up to three last groups: nibbles − 8 as s8 */
            uint8x16_t w = vld1q_u8(W + (n + r) * (K / 2) + g * 16);
            int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(w, low)), eight);
            int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(w, 4)), eight);
            int32x4_t d = vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(in->value + g * 32)), hi,
                                    vld1q_s8(in->value + g * 32 + 16));
            t += (float)vaddvq_s32(d) * (ck_f16_value(scales[(n + r) * G + g]) * in->scale[g]);
        }
        y[n + r] = t + (bias ? bias[n + r] : 0.0f);
    }
}

DOTPROD static void gemv_q_int8_dotprod(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales,
                                        int format, const float *bias, float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    if (format == CK_Q8) {
        for (; n + 4 <= n1; n += 4) gemv_q8_rows(in, K, W, scales, bias, y, n, 4);
        switch (n1 - n) {
        case 3: gemv_q8_rows(in, K, W, scales, bias, y, n, 3); break;
        case 2: gemv_q8_rows(in, K, W, scales, bias, y, n, 2); break;
        case 1: gemv_q8_rows(in, K, W, scales, bias, y, n, 1); break;
        default: break;
        }
    } else {
        for (; n + 4 <= n1; n += 4) gemv_q4_rows(in, K, W, scales, bias, y, n, 4);
        switch (n1 - n) {
        case 3: gemv_q4_rows(in, K, W, scales, bias, y, n, 3); break;
        case 2: gemv_q4_rows(in, K, W, scales, bias, y, n, 2); break;
        case 1: gemv_q4_rows(in, K, W, scales, bias, y, n, 1); break;
        default: break;
        }
    }
}

/* gemv_q8_rows and gemv_q4_rows for M inputs (decode of M sequences at once). Per weight row and
 * input the same steps of four groups, the same chains, SDOTs and by-element FMAs in the same
 * order, and the same reduction and last groups as the one-input kernels, whose result for a row
 * does not depend on how many rows share a pass, so every row of y is theirs bit for bit; but
 * each weight load (and the nibble unpacking) serves several inputs. Two weight rows per pass and
 * at most ROWS_MAX inputs per chunk keep the accumulators and the rows' w_scale·x_scale vectors
 * in the 32 registers; larger M runs in chunks over blocks of ROWS_NB rows, whose weights the
 * later chunks find in L2. R and M are compile-time constants in each specialisation. */
#define ROWS_MAX CK_ROWS_CHUNK
#define ROWS_NB 16

DOTPROD INLINE void gemv_q8_batch(const ck_qinput *in, const int M, int64_t K, const int8_t *W,
                                  const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                  const int R) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const int32x4_t zero = vdupq_n_s32(0);
    float32x4_t acc[ROWS_MAX][2][2];
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) acc[m][r][0] = acc[m][r][1] = vdupq_n_f32(0);
#define Q8_GROUP(q)                                                                                 \
    do {                                                                                            \
        int8x16_t w0[2], w1[2];                                                                     \
        for (int r = 0; r < R; r++) {                                                               \
            const int8_t *w = W + (n + r) * K + (g + q) * 32;                                       \
            w0[r] = vld1q_s8(w), w1[r] = vld1q_s8(w + 16);                                          \
        }                                                                                           \
        for (int m = 0; m < M; m++) {                                                               \
            int8x16_t x0 = vld1q_s8(in[m].value + (g + q) * 32), x1 = vld1q_s8(in[m].value + (g + q) * 32 + 16); \
            for (int r = 0; r < R; r++) {                                                           \
                int32x4_t d = vdotq_s32(vdotq_s32(zero, w0[r], x0), w1[r], x1);                     \
                GROUP_FMA(acc[m][r][q & 1], d, s[m][r], q);                                         \
            }                                                                                       \
        }                                                                                           \
    } while (0)
    for (int64_t g = 0; g < G4; g += 4) {
        float32x4_t ws[2], s[ROWS_MAX][2];
        for (int r = 0; r < R; r++) ws[r] = f16x4(scales + (n + r) * G + g);
        for (int m = 0; m < M; m++) {
            const float32x4_t sx = vld1q_f32(in[m].scale + g);
            for (int r = 0; r < R; r++) s[m][r] = vmulq_f32(ws[r], sx);
        }
        Q8_GROUP(0);
        Q8_GROUP(1);
        Q8_GROUP(2);
        Q8_GROUP(3);
    }
#undef Q8_GROUP
    for (int m = 0; m < M; m++) {
        const ck_qinput *x = &in[m];
        for (int r = 0; r < R; r++) {
            float t = vaddvq_f32(vaddq_f32(acc[m][r][0], acc[m][r][1]));
            for (int64_t g = G4; g < G; g++) { /* up to three last groups */
                const int8_t *w = W + (n + r) * K + g * 32;
                int32x4_t d = vdotq_s32(vdotq_s32(zero, vld1q_s8(w), vld1q_s8(x->value + g * 32)), vld1q_s8(w + 16),
                                        vld1q_s8(x->value + g * 32 + 16));
                t += (float)vaddvq_s32(d) * (ck_f16_value(scales[(n + r) * G + g]) * x->scale[g]);
            }
            y[m * ldy + n + r] = t + (bias ? bias[n + r] : 0.0f);
        }
    }
}

DOTPROD INLINE void gemv_q4_batch(const ck_qinput *in, const int M, int64_t K, const uint8_t *W,
                                  const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                  const int R) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const uint8x16_t low = vdupq_n_u8(0x0F);
    float32x4_t acc[ROWS_MAX][2];
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) acc[m][r] = vdupq_n_f32(0);
#define Q4_GROUP(q)                                                                                 \
    do {                                                                                            \
        int8x16_t lo[2], hi[2];                                                                     \
        for (int r = 0; r < R; r++) {                                                               \
            uint8x16_t w = vld1q_u8(W + (n + r) * (K / 2) + (g + q) * 16);                          \
            lo[r] = vreinterpretq_s8_u8(vandq_u8(w, low));                                          \
            hi[r] = vreinterpretq_s8_u8(vshrq_n_u8(w, 4));                                          \
        }                                                                                           \
        for (int m = 0; m < M; m++) {                                                               \
            int8x16_t x0 = vld1q_s8(in[m].value + (g + q) * 32), x1 = vld1q_s8(in[m].value + (g + q) * 32 + 16); \
            int32x4_t off = vld1q_s32(in[m].offset_q4 + (g + q) * 4);                               \
            for (int r = 0; r < R; r++) {                                                           \
                int32x4_t d = vdotq_s32(vdotq_s32(off, lo[r], x0), hi[r], x1);                      \
                GROUP_FMA(acc[m][r], d, s[m][r], q);                                                \
            }                                                                                       \
        }                                                                                           \
    } while (0)
    for (int64_t g = 0; g < G4; g += 4) {
        float32x4_t ws[2], s[ROWS_MAX][2];
        for (int r = 0; r < R; r++) ws[r] = f16x4(scales + (n + r) * G + g);
        for (int m = 0; m < M; m++) {
            const float32x4_t sx = vld1q_f32(in[m].scale + g);
            for (int r = 0; r < R; r++) s[m][r] = vmulq_f32(ws[r], sx);
        }
        Q4_GROUP(0);
        Q4_GROUP(1);
        Q4_GROUP(2);
        Q4_GROUP(3);
    }
#undef Q4_GROUP
    const int8x16_t eight = vdupq_n_s8(8);
    for (int m = 0; m < M; m++) {
        const ck_qinput *x = &in[m];
        for (int r = 0; r < R; r++) {
            float t = vaddvq_f32(acc[m][r]);
            for (int64_t g = G4; g < G; g++) { /* up to three last groups: nibbles − 8 as s8 */
                uint8x16_t w = vld1q_u8(W + (n + r) * (K / 2) + g * 16);
                int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(w, low)), eight);
                int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(w, 4)), eight);
                int32x4_t d = vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(x->value + g * 32)), hi,
                                        vld1q_s8(x->value + g * 32 + 16));
                t += (float)vaddvq_s32(d) * (ck_f16_value(scales[(n + r) * G + g]) * x->scale[g]);
            }
            y[m * ldy + n + r] = t + (bias ? bias[n + r] : 0.0f);
        }
    }
}

DOTPROD static void gemv_q_int8_rows_dotprod(const ck_qinput *in, int64_t M, int64_t K, const void *W,
                                             const uint16_t *scales, int format, const float *bias, float *y,
                                             int64_t ldy, int64_t n0, int64_t n1) {
    CK_Q_INT8_ROWS_BODY(gemv_q4_batch, gemv_q8_batch, ROWS_NB)
}

/* ---------------- prefill: many input rows ---------------- */

/* Blocking: weights are packed 32 columns per call-panel as four sub-panels of 8 (one register
 * tile's width); K is walked in blocks of 32 groups so that a block of the panel (32 KB) stays
 * in L1 while every 4-row tile of activations passes over it, and a tile's activation block
 * (4 KB) stays in L1 across the four sub-panels. Float32 partial sums wait in y between
 * blocks. */

/* Packs columns n ..< n + cols (≤ 8; the rest zero) for the SDOT tile: per group g and 4-byte
 * chunk c, 8 columns × 4 consecutive weights (32 bytes: columns 0–3, then 4–7), so one vector
 * holds 4 columns' chunk and SDOT's lane form pairs it with 4 bytes of one activation row; then
 * per group the 8 weight scales. Each 4 columns × 4 chunks block is a 4×4 transpose of 32-bit
 * lanes. */
DOTPROD static void pack_sub_dot(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int cols,
                                 int8_t *pw, float *ws) {
    const int64_t G = ck_groups(K), rowBytes = format == CK_Q8 ? K : K / 2;
    const void *rows[QP_SUB];
    for (int j = 0; j < QP_SUB; j++) rows[j] = j < cols ? (const char *)W + (n + j) * rowBytes : NULL;
    for (int64_t g = 0; g < G; g++) {
        uint32x4_t v[QP_SUB][2];
        for (int j = 0; j < QP_SUB; j++) {
            int8x16_t a, b;
            load_group(format, K, rows[j], g, &a, &b);
            v[j][0] = vreinterpretq_u32_s8(a);
            v[j][1] = vreinterpretq_u32_s8(b);
        }
        int8_t *dst = pw + g * 8 * QP_SUB * 4;
        for (int j0 = 0; j0 < QP_SUB; j0 += 4)
            for (int h = 0; h < 2; h++) {
                uint32x4_t t0 = vtrn1q_u32(v[j0][h], v[j0 + 1][h]), t1 = vtrn2q_u32(v[j0][h], v[j0 + 1][h]);
                uint32x4_t t2 = vtrn1q_u32(v[j0 + 2][h], v[j0 + 3][h]), t3 = vtrn2q_u32(v[j0 + 2][h], v[j0 + 3][h]);
                uint64x2_t u0 = vreinterpretq_u64_u32(t0), u1 = vreinterpretq_u64_u32(t1);
                uint64x2_t u2 = vreinterpretq_u64_u32(t2), u3 = vreinterpretq_u64_u32(t3);
                /* chunk 4h + c of columns j0 … j0+3 */
                vst1q_u64((uint64_t *)(dst + (4 * h + 0) * 32 + j0 * 4), vtrn1q_u64(u0, u2));
                vst1q_u64((uint64_t *)(dst + (4 * h + 1) * 32 + j0 * 4), vtrn1q_u64(u1, u3));
                vst1q_u64((uint64_t *)(dst + (4 * h + 2) * 32 + j0 * 4), vtrn2q_u64(u0, u2));
                vst1q_u64((uint64_t *)(dst + (4 * h + 3) * 32 + j0 * 4), vtrn2q_u64(u1, u3));
            }
    }
    /* scales: 4 groups of a column widened at once, stored across the per-group rows */
    for (int j = 0; j < QP_SUB; j++) {
        int64_t g = 0;
        if (j < cols) {
            const uint16_t *sc = scales + (n + j) * G;
            for (; g + 4 <= G; g += 4) {
                float32x4_t s = f16x4(sc + g);
                ws[(g + 0) * QP_SUB + j] = vgetq_lane_f32(s, 0);
                ws[(g + 1) * QP_SUB + j] = vgetq_lane_f32(s, 1);
                ws[(g + 2) * QP_SUB + j] = vgetq_lane_f32(s, 2);
                ws[(g + 3) * QP_SUB + j] = vgetq_lane_f32(s, 3);
            }
            for (; g < G; g++) ws[g * QP_SUB + j] = ck_f16_value(sc[g]);
        } else {
            for (; g < G; g++) ws[g * QP_SUB + j] = 0.0f;
        }
    }
}

/* one SDOT step of chunk `lane` of the activation vectors: two weight vectors (columns 0–3,
 * 4–7) against 4 bytes of each row */
#define SDOT_STEP(lane)                                                       \
    do {                                                                      \
        int8x16_t w0 = vld1q_s8(p + (lane) * 32), w1 = vld1q_s8(p + (lane) * 32 + 16); \
        for (int r = 0; r < mr; r++) {                                        \
            d[r][0] = vdotq_laneq_s32(d[r][0], w0, a[r], lane);               \
            d[r][1] = vdotq_laneq_s32(d[r][1], w1, a[r], lane);               \
        }                                                                     \
    } while (0)

/* A tile of mr (≤ 4) rows × 8 columns over groups g0 ..< g1 of one sub-panel. Per group, eight
 * int32 vectors take the exact sums (activations flipped back to q as s8), then
 * · w_scale · x_scale into float32 accumulators. y (stride ldy) holds the running float sums:
 * read unless `first`, bias added when `last`. */
DOTPROD INLINE void tile_dot(const uint8_t *xq, int64_t Kp, const float *xs, int64_t G, const int8_t *pw,
                             const float *ws, int64_t g0, int64_t g1, int first, int last, const float *bias,
                             float *y, int64_t ldy, const int mr) {
    const uint8x16_t flip = vdupq_n_u8(0x80);
    float32x4_t acc[QP_ROWS][2];
    for (int r = 0; r < mr; r++) {
        acc[r][0] = first ? vdupq_n_f32(0) : vld1q_f32(y + r * ldy);
        acc[r][1] = first ? vdupq_n_f32(0) : vld1q_f32(y + r * ldy + 4);
    }
    for (int64_t g = g0; g < g1; g++) {
        int32x4_t d[QP_ROWS][2];
        for (int r = 0; r < mr; r++) d[r][0] = d[r][1] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            int8x16_t a[QP_ROWS];
            for (int r = 0; r < mr; r++)
                a[r] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(xq + r * Kp + g * 32 + 16 * h), flip));
            const int8_t *p = pw + g * 8 * QP_SUB * 4 + h * 4 * QP_SUB * 4;
            SDOT_STEP(0);
            SDOT_STEP(1);
            SDOT_STEP(2);
            SDOT_STEP(3);
        }
        float32x4_t s0 = vld1q_f32(ws + g * QP_SUB), s1 = vld1q_f32(ws + g * QP_SUB + 4);
        for (int r = 0; r < mr; r++) {
            float32x4_t sx = vld1q_dup_f32(xs + r * G + g);
            acc[r][0] = vfmaq_f32(acc[r][0], vcvtq_f32_s32(d[r][0]), vmulq_f32(s0, sx));
            acc[r][1] = vfmaq_f32(acc[r][1], vcvtq_f32_s32(d[r][1]), vmulq_f32(s1, sx));
        }
    }
    float32x4_t b0 = vdupq_n_f32(0), b1 = b0;
    if (last && bias) {
        b0 = vld1q_f32(bias);
        b1 = vld1q_f32(bias + 4);
    }
    for (int r = 0; r < mr; r++) {
        vst1q_f32(y + r * ldy, vaddq_f32(acc[r][0], b0));
        vst1q_f32(y + r * ldy + 4, vaddq_f32(acc[r][1], b1));
    }
}

/* One tile call (a narrow sub-panel through a local copy: narrow_tile). */
DOTPROD static void run_tile_dot(const uint8_t *xq, int64_t Kp, const float *xs, int64_t G, const int8_t *pw,
                                 const float *ws, int64_t g0, int64_t g1, const float *bias, float *y, int64_t ldy,
                                 int cols, int mr) {
    const int first = g0 == 0, last = g1 == G;
    narrow_tile copy;
    float *yt = y;
    int64_t ldt = ldy;
    if (cols < QP_SUB) narrow_tile_in(&copy, first, cols, mr, &yt, &ldt, &bias);
    switch (mr) {
    case 4: tile_dot(xq, Kp, xs, G, pw, ws, g0, g1, first, last, bias, yt, ldt, 4); break;
    case 3: tile_dot(xq, Kp, xs, G, pw, ws, g0, g1, first, last, bias, yt, ldt, 3); break;
    case 2: tile_dot(xq, Kp, xs, G, pw, ws, g0, g1, first, last, bias, yt, ldt, 2); break;
    default: tile_dot(xq, Kp, xs, G, pw, ws, g0, g1, first, last, bias, yt, ldt, 1); break;
    }
    if (cols < QP_SUB) narrow_tile_out(&copy, cols, mr, y, ldy);
}

DOTPROD static void gemm_q_int8_dotprod(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                                        const uint16_t *scales, int format, const float *bias, float *y,
                                        int64_t ldy, int64_t n0, int64_t n1, void *scratch) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    /* scratch: 32 columns × Kp weight bytes, then 32 × G scales (within the public size) */
    int8_t *pw = (int8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *ws = (float *)(pw + QP_COLS * Kp);
    for (int64_t n = n0; n < n1; n += QP_COLS) {
        const int width = n1 - n < QP_COLS ? (int)(n1 - n) : QP_COLS;
        const int subs = (width + QP_SUB - 1) / QP_SUB;
        for (int s = 0; s < subs; s++) {
            int cols = width - s * QP_SUB < QP_SUB ? width - s * QP_SUB : QP_SUB;
            pack_sub_dot(W, scales, format, K, n + s * QP_SUB, cols, pw + s * QP_SUB * Kp, ws + s * QP_SUB * G);
        }
        for (int64_t g0 = 0; g0 < G; g0 += QP_GROUPS) {
            const int64_t g1 = g0 + QP_GROUPS < G ? g0 + QP_GROUPS : G;
            for (int64_t m = 0; m < M; m += QP_ROWS) {
                const int mr = M - m < QP_ROWS ? (int)(M - m) : QP_ROWS;
                for (int s = 0; s < subs; s++) {
                    int cols = width - s * QP_SUB < QP_SUB ? width - s * QP_SUB : QP_SUB;
                    int64_t c = n + s * QP_SUB;
                    run_tile_dot(xq + m * Kp, Kp, xs + m * G, G, pw + s * QP_SUB * Kp, ws + s * QP_SUB * G, g0, g1,
                                 bias ? bias + c : NULL, y + m * ldy + c, ldy, cols, mr);
                }
            }
        }
    }
}

/* Twelve independent SDOT chains (16 multiply-adds each per step). */
DOTPROD static double int8_probe_dotprod(int64_t iterations, float *sink) {
    int32x4_t a[12];
    int8x16_t x = vdupq_n_s8(3), w = vdupq_n_s8(-2);
    __asm__ volatile("" : "+w"(x), "+w"(w)); /* opaque operands: nothing to fold */
    for (int i = 0; i < 12; i++) a[i] = vdupq_n_s32(i);
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < 12; i++) a[i] = vdotq_s32(a[i], x, w);
    int32x4_t s = a[0];
    for (int i = 1; i < 12; i++) s = vaddq_s32(s, a[i]);
    *sink = (float)vaddvq_s32(s);
    return (double)iterations * 12 * 16 * 2;
}

void ck_fill_dotprod(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->name = "neon-dotprod";
    t->int8_products = 1;
    t->quantize_input = quantize_input_dotprod;
    t->quantize_rows_u8 = quantize_rows_u8_dotprod;
    t->gemv_q_int8 = gemv_q_int8_dotprod;
    t->gemv_q_int8_rows = gemv_q_int8_rows_dotprod;
    t->gemm_q_int8 = gemm_q_int8_dotprod;
    t->int8_probe = int8_probe_dotprod;
}
#else
void ck_fill_dotprod(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
