/* Level "neon", elementwise math and attention: exp/expm1-based passes four lanes at a time, the
 * NaN-skipping max, and two attention kernels (a few queries sharing key/value loads for
 * decode; up to 32 queries in lanes for prefill blocks). Tails run through the same vector code
 * on a padded copy, so every element gets the same arithmetic. */
#include "neon.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

/* ---- exp and tanh ---- */

/* expm1(r) for |r| ≤ ln2/2 as r + r²·(1/2 + r/6 + … + r⁵/5040) (Taylor to degree 7: truncation
 * below 2e-8 relative, and no cancellation for small r). */
static inline float32x4_t expm1_reduced(float32x4_t r) {
    float32x4_t p = vdupq_n_f32(1.0f / 5040);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    return vfmaq_f32(r, p, vmulq_f32(r, r));
}

/* x = n·ln2 + r with n = round(x/ln2) and ln2 split in two (Cody–Waite) so n·ln2_hi is exact;
 * returns r and 2ⁿ (built in the exponent field: needs −126 ≤ n ≤ 127, which the callers'
 * clamps keep). */
static inline float32x4_t reduce_ln2(float32x4_t x, float32x4_t *two_n) {
    int32x4_t n = vcvtnq_s32_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t nf = vcvtq_f32_s32(n);
    float32x4_t r = vfmsq_f32(x, nf, vdupq_n_f32(0.693145751953125f));
    r = vfmsq_f32(r, nf, vdupq_n_f32(1.428606765330187045e-06f));
    *two_n = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n, vdupq_n_s32(127)), 23));
    return r;
}

/* exp(x) = 2ⁿ·(1 + expm1(r)), relative error about 2e-7. Below −87.3 (where 2ⁿ would leave the
 * normal range) the result is 0, so exp(−∞) = 0; above 88.3 it saturates near FLT_MAX. */
static inline float32x4_t exp_neon(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(-87.3f);
    uint32x4_t under = vcltq_f32(x, lo);
    float32x4_t s, xc = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(88.3f));
    float32x4_t q = expm1_reduced(reduce_ln2(xc, &s));
    float32x4_t e = vfmaq_f32(s, s, q);
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), under));
}

/* expm1(x) for 0 ≤ x ≤ 88 = 2ⁿ·expm1(r) + (2ⁿ − 1): relative error a few 1e-7 for every x,
 * small ones included (for n = 0 it is expm1(r) itself). */
static inline float32x4_t expm1_neon(float32x4_t x) {
    float32x4_t s, q = expm1_reduced(reduce_ln2(x, &s));
    return vfmaq_f32(vsubq_f32(s, vdupq_n_f32(1.0f)), s, q);
}

/* tanh(u) = sign(u)·e/(e + 2) with e = expm1(2|u|): no cancellation near 0, so the relative
 * error stays about 3e-7 everywhere; 2|u| is clamped at 88, where the quotient is 1 already. */
static inline float32x4_t tanh_neon(float32x4_t u) {
    float32x4_t a = vminq_f32(vabsq_f32(vaddq_f32(u, u)), vdupq_n_f32(88.0f));
    float32x4_t e = expm1_neon(a);
    float32x4_t t = vdivq_f32(e, vaddq_f32(e, vdupq_n_f32(2.0f)));
    return vbslq_f32(vdupq_n_u32(0x80000000u), u, t); /* the sign bit of u, the rest of t */
}

/* gelu_tanh(x) = 0.5·x·(1 + tanh(z)) = x / (1 + exp(−2z)), z = √(2/π)(x + 0.044715x³): one exp and
 * one division, and no cancellation of 1 + tanh for negative x. */
static inline float32x4_t gelu_neon(float32x4_t x) {
    float32x4_t x2 = vmulq_f32(x, x);
    float32x4_t z = vmulq_f32(vmulq_f32(x, vdupq_n_f32(-2 * 0.7978845608028654f)),
                              vfmaq_f32(vdupq_n_f32(1.0f), x2, vdupq_n_f32(0.044715f)));
    return vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), exp_neon(z)));
}

/* Loads the n < 4 values of a tail into a vector padded with `pad`. */
static inline float32x4_t load_tail(const float *p, int64_t n, float pad) {
    float t[4] = {pad, pad, pad, pad};
    for (int64_t i = 0; i < n; i++) t[i] = p[i];
    return vld1q_f32(t);
}

static inline void store_tail(float *p, int64_t n, float32x4_t v) {
    float t[4];
    vst1q_f32(t, v);
    for (int64_t i = 0; i < n; i++) p[i] = t[i];
}

static void gelu_tanh_neon(const float *a, const float *b, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t g0 = gelu_neon(vld1q_f32(a + i)), g1 = gelu_neon(vld1q_f32(a + i + 4));
        if (b) {
            g0 = vmulq_f32(g0, vld1q_f32(b + i));
            g1 = vmulq_f32(g1, vld1q_f32(b + i + 4));
        }
        vst1q_f32(out + i, g0);
        vst1q_f32(out + i + 4, g1);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t g = gelu_neon(vld1q_f32(a + i));
        if (b) g = vmulq_f32(g, vld1q_f32(b + i));
        vst1q_f32(out + i, g);
    }
    if (i < n) {
        float32x4_t g = gelu_neon(load_tail(a + i, n - i, 0));
        if (b) g = vmulq_f32(g, load_tail(b + i, n - i, 0));
        store_tail(out + i, n - i, g);
    }
}

static void softcap_neon(float *x, int64_t n, float cap) {
    const float inv = 1.0f / cap;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(x + i, vmulq_n_f32(tanh_neon(vmulq_n_f32(vld1q_f32(x + i), inv)), cap));
        vst1q_f32(x + i + 4, vmulq_n_f32(tanh_neon(vmulq_n_f32(vld1q_f32(x + i + 4), inv)), cap));
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(tanh_neon(vmulq_n_f32(vld1q_f32(x + i), inv)), cap));
    if (i < n) store_tail(x + i, n - i, vmulq_n_f32(tanh_neon(vmulq_n_f32(load_tail(x + i, n - i, 0), inv)), cap));
}

/* Σ exp(x[i] − shift), each term written to out when out is not NULL (out may be x). The tail
 * is padded with −∞, whose terms are 0. */
static float exp_shift_neon(const float *x, float *out, int64_t n, float shift) {
    const float32x4_t sh = vdupq_n_f32(shift);
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t e0 = exp_neon(vsubq_f32(vld1q_f32(x + i), sh));
        float32x4_t e1 = exp_neon(vsubq_f32(vld1q_f32(x + i + 4), sh));
        if (out) {
            vst1q_f32(out + i, e0);
            vst1q_f32(out + i + 4, e1);
        }
        s0 = vaddq_f32(s0, e0);
        s1 = vaddq_f32(s1, e1);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = exp_neon(vsubq_f32(vld1q_f32(x + i), sh));
        if (out) vst1q_f32(out + i, e);
        s0 = vaddq_f32(s0, e);
    }
    if (i < n) {
        float32x4_t e = exp_neon(vsubq_f32(load_tail(x + i, n - i, -INFINITY), sh));
        if (out) store_tail(out + i, n - i, e);
        s1 = vaddq_f32(s1, e);
    }
    return vaddvq_f32(vaddq_f32(s0, s1));
}

/* The largest value with generic's rule, lane by lane: v replaces best only when v > best, so
 * NaNs (false in every comparison) are skipped and the result is always one of the elements. */
static float max_neon(const float *x, int64_t n) {
    float32x4_t b[4];
    for (int j = 0; j < 4; j++) b[j] = vdupq_n_f32(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) {
            float32x4_t v = vld1q_f32(x + i + 4 * j);
            b[j] = vbslq_f32(vcgtq_f32(v, b[j]), v, b[j]);
        }
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        b[0] = vbslq_f32(vcgtq_f32(v, b[0]), v, b[0]);
    }
    /* the lanes hold no NaN: an ordinary maximum combines them */
    float best = vmaxvq_f32(vmaxq_f32(vmaxq_f32(b[0], b[1]), vmaxq_f32(b[2], b[3])));
    for (; i < n; i++)
        if (x[i] > best) best = x[i];
    return best;
}

/* ---- attention ---- */

enum { TILE = 64, FEWQ = 4, AHEAD = 4 };

/* Scores of keys j and j+1 against four queries: 16 accumulators (two keys × four queries ×
 * even/odd vectors of the feature loop), each key and query vector loaded once per pair.
 * out[r][0], out[r][1]: query r against key 0, key 1 (before scaling). */
static inline void few_scores(const float *const qr[FEWQ], const float *k0, const float *k1, int64_t d,
                              float out[FEWQ][2]) {
    float32x4_t a[2][FEWQ][2];
    for (int j = 0; j < 2; j++)
        for (int r = 0; r < FEWQ; r++) a[j][r][0] = a[j][r][1] = vdupq_n_f32(0);
    int64_t c = 0;
    for (; c + 8 <= d; c += 8) {
        float32x4_t ka0 = vld1q_f32(k0 + c), ka1 = vld1q_f32(k0 + c + 4);
        float32x4_t kb0 = vld1q_f32(k1 + c), kb1 = vld1q_f32(k1 + c + 4);
        for (int r = 0; r < FEWQ; r++) {
            float32x4_t q0 = vld1q_f32(qr[r] + c), q1 = vld1q_f32(qr[r] + c + 4);
            a[0][r][0] = vfmaq_f32(a[0][r][0], q0, ka0);
            a[0][r][1] = vfmaq_f32(a[0][r][1], q1, ka1);
            a[1][r][0] = vfmaq_f32(a[1][r][0], q0, kb0);
            a[1][r][1] = vfmaq_f32(a[1][r][1], q1, kb1);
        }
    }
    if (c + 4 <= d) {
        float32x4_t ka = vld1q_f32(k0 + c), kb = vld1q_f32(k1 + c);
        for (int r = 0; r < FEWQ; r++) {
            float32x4_t q0 = vld1q_f32(qr[r] + c);
            a[0][r][0] = vfmaq_f32(a[0][r][0], q0, ka);
            a[1][r][0] = vfmaq_f32(a[1][r][0], q0, kb);
        }
        c += 4;
    }
    float s[2][FEWQ];
    for (int j = 0; j < 2; j++)
        vst1q_f32(s[j], vpaddq_f32(vpaddq_f32(vaddq_f32(a[j][0][0], a[j][0][1]), vaddq_f32(a[j][1][0], a[j][1][1])),
                                   vpaddq_f32(vaddq_f32(a[j][2][0], a[j][2][1]), vaddq_f32(a[j][3][0], a[j][3][1]))));
    for (int r = 0; r < FEWQ; r++) {
        float t0 = s[0][r], t1 = s[1][r];
        for (int64_t cc = c; cc < d; cc++) {
            t0 += qr[r][cc] * k0[cc];
            t1 += qr[r][cc] * k1[cc];
        }
        out[r][0] = t0;
        out[r][1] = t1;
    }
}

/* acc rows (4 queries, features c ..< c + 4·nv) += Σ_j pt[j] lane r · V[j]: 4·nv accumulators,
 * per key nv value vectors and one vector holding the four queries' weights. */
static inline __attribute__((always_inline)) void few_pv(float *acc, int64_t d, const float *pt, const float *v,
                                                         int64_t ldv, int64_t len, int64_t c, const int nv) {
    float32x4_t o[FEWQ][4];
    for (int r = 0; r < FEWQ; r++)
        for (int i = 0; i < nv; i++) o[r][i] = vld1q_f32(acc + r * d + c + 4 * i);
    for (int64_t j = 0; j < len; j++) {
        const float *vr = v + j * ldv + c;
        float32x4_t p = vld1q_f32(pt + 4 * j);
        for (int i = 0; i < nv; i++) {
            float32x4_t vv = vld1q_f32(vr + 4 * i);
            o[0][i] = vfmaq_laneq_f32(o[0][i], vv, p, 0);
            o[1][i] = vfmaq_laneq_f32(o[1][i], vv, p, 1);
            o[2][i] = vfmaq_laneq_f32(o[2][i], vv, p, 2);
            o[3][i] = vfmaq_laneq_f32(o[3][i], vv, p, 3);
        }
    }
    for (int r = 0; r < FEWQ; r++)
        for (int i = 0; i < nv; i++) vst1q_f32(acc + r * d + c + 4 * i, o[r][i]);
}

/* Up to four queries sharing their keys and values (decode: the query heads of one GQA group),
 * d ≤ 256. Each key and value row is loaded once for all of them, which is the traffic that
 * bounds decode at long contexts. Per tile of 64 keys: scores two keys at a time, then per
 * query its valid range (lo..<hi is contiguous), softcap and online softmax
 * (ck_softmax_tile), the weights transposed to [key][query] (one vector per key), and
 * O += P·V in registers, 16 features × 4 queries (16 accumulators) at a time. Missing
 * queries compute on zero weights and a zeroed row and are never written out. */
static void attention_few_neon(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                               int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                               float *out, int64_t ldo, float *scratch) {
    float *acc = scratch;            /* 4 × d running weighted sums */
    float *s = acc + FEWQ * 256;     /* 4 × TILE scores, then weights */
    float *pt = s + FEWQ * TILE;     /* TILE × 4 weights, transposed */
    float m[FEWQ], l[FEWQ];
    int64_t first, last;
    ck_softmax_start(nq, d, lo, hi, acc, m, l, &first, &last);
    memset(acc + nq * d, 0, (size_t)((FEWQ - nq) * d) * sizeof(float));
    const float *qr[FEWQ];
    for (int r = 0; r < FEWQ; r++) qr[r] = q + (r < nq ? r : 0) * ldq;
    const int64_t d4 = d & ~(int64_t)3;
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        int64_t len = last - t0 < TILE ? last - t0 : TILE;
        for (int64_t j = 0; j < len; j += 2) {
            const float *k0 = k + (t0 + j) * ldk, *k1 = j + 1 < len ? k0 + ldk : k0;
            /* one head's cache rows lie a stride of all heads apart, which hardware prefetchers
             * follow poorly: fetch the key rows a few keys ahead, and these keys' value rows
             * for the P·V pass that follows the scores */
            const float *v0 = v + (t0 + j) * ldv, *v1 = j + 1 < len ? v0 + ldv : v0;
            for (int64_t c = 0; c < d; c += 16) {
                if (t0 + j + AHEAD + 1 < last) {
                    __builtin_prefetch(k0 + AHEAD * ldk + c);
                    __builtin_prefetch(k1 + AHEAD * ldk + c);
                }
                __builtin_prefetch(v0 + c);
                __builtin_prefetch(v1 + c);
            }
            float sc[FEWQ][2];
            few_scores(qr, k0, k1, d, sc);
            for (int r = 0; r < FEWQ; r++) {
                s[r * TILE + j] = sc[r][0] * scale;
                if (j + 1 < len) s[r * TILE + j + 1] = sc[r][1] * scale;
            }
        }
        for (int r = 0; r < FEWQ; r++) {
            float *sr = s + r * TILE;
            int64_t ra = 0, rb = 0;
            if (r < nq) {
                ra = (lo[r] > t0 ? lo[r] : t0) - t0;
                rb = (hi[r] < t0 + len ? hi[r] : t0 + len) - t0;
            }
            if (ra >= rb) {
                memset(sr, 0, TILE * sizeof(float));
                continue;
            }
            ck_softmax_tile(sr + ra, rb - ra, cap, &m[r], &l[r], acc + r * d, d);
            memset(sr, 0, (size_t)ra * sizeof(float));
            memset(sr + rb, 0, (size_t)(TILE - rb) * sizeof(float));
        }
        /* [query][key] → [key][query]: ST4 interleaves four query rows four keys at a time */
        for (int64_t j = 0; j < TILE; j += 4) {
            float32x4x4_t w = {{vld1q_f32(s + j), vld1q_f32(s + TILE + j), vld1q_f32(s + 2 * TILE + j),
                                vld1q_f32(s + 3 * TILE + j)}};
            vst4q_f32(pt + 4 * j, w);
        }
        const float *vt = v + t0 * ldv;
        int64_t c = 0;
        for (; c + 16 <= d4; c += 16) few_pv(acc, d, pt, vt, ldv, len, c, 4);
        switch ((d4 - c) / 4) {
        case 3: few_pv(acc, d, pt, vt, ldv, len, c, 3); break;
        case 2: few_pv(acc, d, pt, vt, ldv, len, c, 2); break;
        case 1: few_pv(acc, d, pt, vt, ldv, len, c, 1); break;
        default: break;
        }
        for (c = d4; c < d; c++)
            for (int64_t j = 0; j < len; j++)
                for (int r = 0; r < FEWQ; r++) acc[r * d + c] += pt[4 * j + r] * vt[j * ldv + c];
    }
    ck_softmax_finish(nq, d, acc, l, out, ldo);
}

/* A block of 16–32 queries with the queries in the lanes (eight 4-lane vectors), so nothing is
 * transposed per key tile and the softmax needs no horizontal reductions. Qᵀ (d × 32, times
 * scale) is built once; per tile of 64 keys:
 *   Sᵀ[j] = Σ_c K[j, c]·Qᵀ[c]                       4 keys × 16 queries register tiles
 *   mask (key outside lo..<hi → −∞), softcap, running max m, Pᵀ[j] = exp(Sᵀ[j] − m)
 *   Oᵀ[c] = Oᵀ[c]·exp(m_old − m) + Σ_j V[j, c]·Pᵀ[j]    4 features × 16 queries tiles
 * Both products take four consecutive inputs of K or V as one vector and use its lanes in turn
 * (vfmaq_laneq_f32): 16 accumulators + 4 + 4 operands. Oᵀ is transposed back and divided by
 * the running denominators at the end. */
enum { QL = 32, QV = QL / 4 };

static inline void lanes_scores(const float *qt, const float *const kr[4], int64_t d, int h, float *st) {
    float32x4_t a[4][4];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) a[r][i] = vdupq_n_f32(0);
    const float *qh = qt + 16 * h;
    int64_t c = 0;
    for (; c + 4 <= d; c += 4) {
        float32x4_t kv[4];
        for (int r = 0; r < 4; r++) kv[r] = vld1q_f32(kr[r] + c);
#define LANES_STEP(l)                                                                 \
    do {                                                                              \
        const float *qc = qh + (c + (l)) * QL;                                        \
        float32x4_t q0 = vld1q_f32(qc), q1 = vld1q_f32(qc + 4), q2 = vld1q_f32(qc + 8), \
                    q3 = vld1q_f32(qc + 12);                                          \
        for (int r = 0; r < 4; r++) {                                                 \
            a[r][0] = vfmaq_laneq_f32(a[r][0], q0, kv[r], l);                         \
            a[r][1] = vfmaq_laneq_f32(a[r][1], q1, kv[r], l);                         \
            a[r][2] = vfmaq_laneq_f32(a[r][2], q2, kv[r], l);                         \
            a[r][3] = vfmaq_laneq_f32(a[r][3], q3, kv[r], l);                         \
        }                                                                             \
    } while (0)
        LANES_STEP(0);
        LANES_STEP(1);
        LANES_STEP(2);
        LANES_STEP(3);
#undef LANES_STEP
    }
    for (; c < d; c++) {
        const float *qc = qh + c * QL;
        float32x4_t q0 = vld1q_f32(qc), q1 = vld1q_f32(qc + 4), q2 = vld1q_f32(qc + 8), q3 = vld1q_f32(qc + 12);
        for (int r = 0; r < 4; r++) {
            float kc = kr[r][c];
            a[r][0] = vfmaq_n_f32(a[r][0], q0, kc);
            a[r][1] = vfmaq_n_f32(a[r][1], q1, kc);
            a[r][2] = vfmaq_n_f32(a[r][2], q2, kc);
            a[r][3] = vfmaq_n_f32(a[r][3], q3, kc);
        }
    }
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) vst1q_f32(st + r * QL + 16 * h + 4 * i, a[r][i]);
}

/* Oᵀ rows c ..< c+4 (queries 16h ..< 16h+16) = Oᵀ·f + Σ_j V[j, c..c+3]·Pᵀ[j] */
static inline void lanes_pv(float *ot, const float *st, const float *v, int64_t ldv, int64_t len, int64_t c, int h,
                            const float32x4_t f[QV]) {
    float32x4_t o[4][4];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) o[r][i] = vmulq_f32(vld1q_f32(ot + (c + r) * QL + 16 * h + 4 * i), f[4 * h + i]);
    for (int64_t j = 0; j < len; j++) {
        float32x4_t vv = vld1q_f32(v + j * ldv + c);
        const float *pj = st + j * QL + 16 * h;
        float32x4_t p0 = vld1q_f32(pj), p1 = vld1q_f32(pj + 4), p2 = vld1q_f32(pj + 8), p3 = vld1q_f32(pj + 12);
#define PV_ROW(r)                                            \
    do {                                                     \
        o[r][0] = vfmaq_laneq_f32(o[r][0], p0, vv, r);       \
        o[r][1] = vfmaq_laneq_f32(o[r][1], p1, vv, r);       \
        o[r][2] = vfmaq_laneq_f32(o[r][2], p2, vv, r);       \
        o[r][3] = vfmaq_laneq_f32(o[r][3], p3, vv, r);       \
    } while (0)
        PV_ROW(0);
        PV_ROW(1);
        PV_ROW(2);
        PV_ROW(3);
#undef PV_ROW
    }
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) vst1q_f32(ot + (c + r) * QL + 16 * h + 4 * i, o[r][i]);
}

/* the same for one feature c (the d mod 4 last ones) */
static inline void lanes_pv1(float *ot, const float *st, const float *v, int64_t ldv, int64_t len, int64_t c, int h,
                             const float32x4_t f[QV]) {
    float32x4_t o[4];
    for (int i = 0; i < 4; i++) o[i] = vmulq_f32(vld1q_f32(ot + c * QL + 16 * h + 4 * i), f[4 * h + i]);
    for (int64_t j = 0; j < len; j++) {
        float vc = v[j * ldv + c];
        for (int i = 0; i < 4; i++) o[i] = vfmaq_n_f32(o[i], vld1q_f32(st + j * QL + 16 * h + 4 * i), vc);
    }
    for (int i = 0; i < 4; i++) vst1q_f32(ot + c * QL + 16 * h + 4 * i, o[i]);
}

static void attention_lanes_neon(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                                 int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                                 float *out, int64_t ldo, float *scratch) {
    float *qt = (float *)(((uintptr_t)scratch + 15) & ~(uintptr_t)15); /* d × 32 */
    float *ot = qt + d * QL;                                            /* d × 32 running weighted sums */
    float *st = ot + d * QL;                                            /* TILE × 32 scores, then weights */
    const int halves = nq > 16 ? 2 : 1;
    int64_t first = INT64_MAX, last = 0;
    int32_t lo32[QL], hi32[QL];
    for (int64_t i = 0; i < QL; i++) {
        int64_t a = i < nq ? lo[i] : 0, b = i < nq ? hi[i] : 0;
        if (a < b) {
            if (a < first) first = a;
            if (b > last) last = b;
        }
        lo32[i] = (int32_t)a;
        hi32[i] = (int32_t)b;
    }
    /* Qᵀ·scale by 4×4 transposes (queries past nq are zero) */
    const int64_t d4 = d & ~(int64_t)3;
    for (int64_t i0 = 0; i0 < QL; i0 += 4) {
        const float *qr[4];
        int live[4];
        for (int r = 0; r < 4; r++) {
            live[r] = i0 + r < nq;
            qr[r] = q + (live[r] ? i0 + r : 0) * ldq;
        }
        for (int64_t c = 0; c < d4; c += 4) {
            float32x4_t b[4];
            for (int r = 0; r < 4; r++) b[r] = live[r] ? vmulq_n_f32(vld1q_f32(qr[r] + c), scale) : vdupq_n_f32(0);
            transpose4(b);
            for (int r = 0; r < 4; r++) vst1q_f32(qt + (c + r) * QL + i0, b[r]);
        }
        for (int64_t c = d4; c < d; c++)
            for (int r = 0; r < 4; r++) qt[c * QL + i0 + r] = live[r] ? qr[r][c] * scale : 0.0f;
    }
    memset(ot, 0, (size_t)(d * QL) * sizeof(float));
    int32x4_t lov[QV], hiv[QV];
    float32x4_t m[QV], l[QV];
    const float32x4_t ninf = vdupq_n_f32(-INFINITY), zero = vdupq_n_f32(0), one = vdupq_n_f32(1.0f);
    for (int i = 0; i < QV; i++) {
        lov[i] = vld1q_s32(lo32 + 4 * i);
        hiv[i] = vld1q_s32(hi32 + 4 * i);
        m[i] = ninf;
        l[i] = zero;
    }
    const float inv_cap = cap > 0 ? 1.0f / cap : 0.0f;
    const int nv = 4 * halves; /* live query vectors */
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        int64_t len = last - t0 < TILE ? last - t0 : TILE;
        for (int64_t j0 = 0; j0 < len; j0 += 4) {
            const float *kr[4];
            for (int r = 0; r < 4; r++) kr[r] = k + (t0 + (j0 + r < len ? j0 + r : j0)) * ldk;
            for (int h = 0; h < halves; h++) lanes_scores(qt, kr, d, h, st + j0 * QL);
        }
        /* mask, softcap, running max */
        float32x4_t nm[QV];
        for (int i = 0; i < nv; i++) nm[i] = m[i];
        for (int64_t j = 0; j < len; j++) {
            int32x4_t pos = vdupq_n_s32((int32_t)(t0 + j));
            for (int i = 0; i < nv; i++) {
                uint32x4_t valid = vandq_u32(vcleq_s32(lov[i], pos), vcgtq_s32(hiv[i], pos));
                float32x4_t x = vld1q_f32(st + j * QL + 4 * i);
                if (cap > 0) x = vmulq_n_f32(tanh_neon(vmulq_n_f32(x, inv_cap)), cap);
                x = vbslq_f32(valid, x, ninf);
                vst1q_f32(st + j * QL + 4 * i, x);
                nm[i] = vmaxq_f32(nm[i], x);
            }
        }
        /* rescale factors: exp(m_old − m) once a query has a finite maximum; 1 while it has
         * none (nothing to rescale), and the old sums are 0 when m_old was −∞ */
        float32x4_t f[QV];
        for (int i = 0; i < nv; i++) {
            uint32x4_t seen = vmvnq_u32(vceqq_f32(nm[i], ninf)), had = vmvnq_u32(vceqq_f32(m[i], ninf));
            f[i] = vbslq_f32(seen, exp_neon(vsubq_f32(m[i], nm[i])), one);
            f[i] = vbslq_f32(had, f[i], zero);
            m[i] = nm[i];
            l[i] = vmulq_f32(l[i], f[i]);
        }
        for (int i = nv; i < QV; i++) f[i] = zero;
        for (int64_t j = 0; j < len; j++)
            for (int i = 0; i < nv; i++) {
                float32x4_t x = vld1q_f32(st + j * QL + 4 * i);
                uint32x4_t keep = vmvnq_u32(vceqq_f32(x, ninf));
                float32x4_t e = vreinterpretq_f32_u32(
                    vandq_u32(vreinterpretq_u32_f32(exp_neon(vsubq_f32(x, m[i]))), keep));
                vst1q_f32(st + j * QL + 4 * i, e);
                l[i] = vaddq_f32(l[i], e);
            }
        const float *vt = v + t0 * ldv;
        for (int h = 0; h < halves; h++) {
            int64_t c = 0;
            for (; c < d4; c += 4) lanes_pv(ot, st, vt, ldv, len, c, h, f);
            for (; c < d; c++) lanes_pv1(ot, st, vt, ldv, len, c, h, f);
        }
    }
    /* out = (Oᵀ)ᵀ / l, 4×4 blocks at a time (a query with no key gets 0) */
    float32x4_t inv[QV];
    for (int i = 0; i < QV; i++) {
        uint32x4_t pos = vcgtq_f32(l[i], zero);
        inv[i] = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vdivq_f32(one, l[i])), pos));
    }
    for (int64_t i0 = 0; i0 < nq; i0 += 4) {
        int rows = nq - i0 < 4 ? (int)(nq - i0) : 4;
        float iv[4];
        vst1q_f32(iv, inv[i0 / 4]);
        for (int64_t c = 0; c < d4; c += 4) {
            float32x4_t b[4];
            for (int r = 0; r < 4; r++) b[r] = vld1q_f32(ot + (c + r) * QL + i0);
            transpose4(b);
            for (int r = 0; r < rows; r++) vst1q_f32(out + (i0 + r) * ldo + c, vmulq_n_f32(b[r], iv[r]));
        }
        for (int64_t c = d4; c < d; c++)
            for (int r = 0; r < rows; r++) out[(i0 + r) * ldo + c] = ot[c * QL + i0 + r] * iv[r];
    }
}

static void attention_neon(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                           int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                           float *out, int64_t ldo, float *scratch) {
    if (nq <= FEWQ && d <= 256)
        attention_few_neon(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    else if (nq >= 16 && nq <= QL) /* from 16 queries the lanes are full enough to pay */
        attention_lanes_neon(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    else
        ck_attention_rows(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
}

void ck_fill_neon_math(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->gelu_tanh = gelu_tanh_neon;
    t->softcap = softcap_neon;
    t->exp_shift = exp_shift_neon;
    t->max = max_neon;
    t->attention_block = attention_neon;
}
#else
void ck_fill_neon_math(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
