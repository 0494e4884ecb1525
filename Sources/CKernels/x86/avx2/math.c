/* The avx2 level's exp/tanh-based passes (gelu_tanh, softcap, exp_shift), max, and attention:
 * eight float32 lanes per vector, 16 registers, no mask registers (compares and blends instead). */
#include "avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <math.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* ---------------- exp and tanh ---------------- */

/* Shared range reduction of exp: x = n·ln2 + r with n = round(x·log2 e), |r| ≤ ln2/2. Adding
 * 1.5·2²³ + 127 inside the FMA rounds x·log2 e to an integer in the low mantissa bits, already
 * biased by 127, so (bits << 23) is the float 2ⁿ (n in [−126, 127] after the clamp) without a
 * round or convert instruction. ln2 is split in two so n·ln2 is subtracted without rounding. */
AVX2_INLINE __m256 exp_reduce(__m256 x, __m256 *r) {
    const __m256 shifter = _mm256_set1_ps(12583039.0f); /* 1.5·2²³ + 127 */
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), shifter);
    __m256 n = _mm256_sub_ps(t, shifter);
    __m256 y = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    *r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606820309417e-06f), y);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
}

/* (e^r − 1)/r as the Taylor polynomial 1 + r/2 + r²/6 + … + r⁵/720: times r it is e^r − 1 with no
 * cancellation near 0, plus 1 it is e^r to degree 6 (remainder r⁷/7! ≤ 1.2e-7 at |r| = ln2/2). */
AVX2_INLINE __m256 expm1_over_r(__m256 r) {
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
}

/* exp(x) = 2ⁿ·e^r, relative error about 2e-7. Inputs are clamped to [−87.3, 88.3] so 2ⁿ stays a
 * normal float (results below 1.2e-38 come out as about that, never 0); NaN passes through
 * because vmaxps/vminps return their second operand when either is NaN. */
AVX2_INLINE __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
    __m256 r;
    __m256 s = exp_reduce(x, &r);
    __m256 e = _mm256_fmadd_ps(expm1_over_r(r), r, _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(e, s);
}

/* tanh(u) = sign(u)·m/(m + 2) with m = e^{2|u|} − 1 = 2ⁿ·(e^r − 1) + (2ⁿ − 1). Taking e^r − 1 from
 * the polynomial without its constant term keeps full relative precision for small |u| (where
 * 1 − 2/(e + 1) would cancel), so no separate series is needed; large |u| clamps to m ≈ 2¹²⁷,
 * giving exactly 1. */
AVX2_INLINE __m256 tanh_avx2(__m256 u) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, u);
    __m256 y = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_add_ps(a, a));
    __m256 r;
    __m256 s = exp_reduce(y, &r);
    __m256 m = _mm256_fmadd_ps(s, _mm256_mul_ps(expm1_over_r(r), r), _mm256_sub_ps(s, _mm256_set1_ps(1.0f)));
    __m256 t = _mm256_div_ps(m, _mm256_add_ps(m, _mm256_set1_ps(2.0f)));
    return _mm256_or_ps(t, _mm256_and_ps(sign, u));
}

/* Lanes of a partial last vector go through a padded copy so tails use the same vector formula. */
AVX2_INLINE __m256 load_tail(const float *p, int64_t n, float pad) {
    float buf[8];
    for (int i = 0; i < 8; i++) buf[i] = i < n ? p[i] : pad;
    return _mm256_loadu_ps(buf);
}

AVX2_INLINE void store_tail(float *p, int64_t n, __m256 v) {
    float buf[8];
    _mm256_storeu_ps(buf, v);
    for (int64_t i = 0; i < n; i++) p[i] = buf[i];
}

/* 0.5·x·(1 + tanh u) = x / (1 + e^{−2u}), u = √(2/π)(x + 0.044715x³): one exp and one division,
 * and no cancellation of 1 + tanh u for negative x. */
AVX2_INLINE __m256 gelu8(__m256 x) {
    /* −2u = x·(a + b·x²) with a = −2√(2/π), b = a·0.044715 folded: fewer roundings of the
     * exponent, whose absolute error becomes the result's relative error */
    const float a = -2.0f * 0.7978845608028654f;
    __m256 e = exp_avx2(_mm256_mul_ps(x, _mm256_fmadd_ps(_mm256_set1_ps(a * 0.044715f), _mm256_mul_ps(x, x), _mm256_set1_ps(a))));
    return _mm256_div_ps(x, _mm256_add_ps(e, _mm256_set1_ps(1.0f)));
}

AVX2 static void gelu_tanh_avx2(const float *a, const float *b, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = gelu8(_mm256_loadu_ps(a + i));
        if (b) g = _mm256_mul_ps(g, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(out + i, g);
    }
    if (i < n) {
        __m256 g = gelu8(load_tail(a + i, n - i, 0.0f));
        if (b) g = _mm256_mul_ps(g, load_tail(b + i, n - i, 0.0f));
        store_tail(out + i, n - i, g);
    }
}

AVX2 static void softcap_avx2(float *x, int64_t n, float cap) {
    const __m256 c = _mm256_set1_ps(cap), inv = _mm256_set1_ps(1.0f / cap);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(c, tanh_avx2(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv))));
    if (i < n) store_tail(x + i, n - i, _mm256_mul_ps(c, tanh_avx2(_mm256_mul_ps(load_tail(x + i, n - i, 0.0f), inv))));
}


/* Σ exp(x[i] − shift), writing each term to out when out is not NULL (out may be x). */
AVX2 static float exp_shift_avx2(const float *x, float *out, int64_t n, float shift) {
    const __m256 sh = _mm256_set1_ps(shift);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 e0 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        __m256 e1 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh));
        if (out) {
            _mm256_storeu_ps(out + i, e0);
            _mm256_storeu_ps(out + i + 8, e1);
        }
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    for (; i < n; i += 8) {
        int64_t w = n - i < 8 ? n - i : 8;
        /* padding lanes hold −∞ − shift, whose exp is cleared before the sum */
        __m256 v = w == 8 ? _mm256_loadu_ps(x + i) : load_tail(x + i, w, -INFINITY);
        __m256 e = exp_avx2(_mm256_sub_ps(v, sh));
        e = _mm256_and_ps(e, _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_NEQ_UQ));
        if (w < 8) {
            __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            e = _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), lane)));
        }
        if (out) {
            if (w == 8) _mm256_storeu_ps(out + i, e);
            else store_tail(out + i, w, e);
        }
        s0 = _mm256_add_ps(s0, e);
    }
    return hsum(_mm256_add_ps(s0, s1));
}

AVX2_INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* The largest value, NaNs skipped: vmaxps(v, best) returns best when v is NaN, and best starts at
 * −∞, so it only ever holds elements (or −∞), as ck_argmax needs. */
AVX2 static float max_avx2(const float *x, int64_t n) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 b0 = ninf, b1 = ninf, b2 = ninf, b3 = ninf;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        b0 = _mm256_max_ps(_mm256_loadu_ps(x + i), b0);
        b1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), b1);
        b2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), b2);
        b3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), b3);
    }
    for (; i + 8 <= n; i += 8) b0 = _mm256_max_ps(_mm256_loadu_ps(x + i), b0);
    float best = hmax8(_mm256_max_ps(_mm256_max_ps(b0, b1), _mm256_max_ps(b2, b3)));
    for (; i < n; i++)
        if (x[i] > best) best = x[i];
    return best;
}

/* ---------------- attention ---------------- */


/* Lanes where lo ≤ pos < hi: all ones, else zero. */
AVX2_INLINE __m256 in_range(__m256i pos, __m256i lo, __m256i hi) {
    return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(lo, pos), _mm256_cmpgt_epi32(hi, pos)));
}

/* A block of 16–32 queries as small matrix products with the queries in the lanes (one or two
 * halves of 16 lanes = two vectors each), so no key tile is transposed and the online softmax
 * works lane-wise without horizontal reductions. Qᵀ·scale (d × 32) is built once; per tile of 64 keys:
 *   Sᵀ[j] = Σ_c K[j, c]·Qᵀ[c]   6 keys × 16 queries per register tile (12 accumulators, 2 query
 *                              vectors, 1 broadcast key value: 15 of the 16 registers),
 *   mask (key outside lo..<hi → −∞) and softcap applied to the tile in registers, then the
 *   running max m, weights Pᵀ[j] = exp(Sᵀ[j] − m), denominators l,
 *   Oᵀ[c] = Oᵀ[c]·exp(m_old − m) + Σ_j V[j, c]·Pᵀ[j]   6 features × 16 queries per register tile,
 * and Oᵀ is transposed back and divided by l at the end. Tiles wholly inside every query's range
 * (and those of bidirectional blocks) skip the masking. */
AVX2 static void attention_lanes_avx2(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk,
                                      const float *v, int64_t ldv, int64_t d, float scale, float cap,
                                      const int64_t *lo, const int64_t *hi, float *out, int64_t ldo, float *scratch) {
    enum { TILE = 64, QL = 32, R = 6 };
    float *qt = (float *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31); /* d × QL */
    float *ot = qt + d * QL;                                           /* d × QL running sums */
    float *st = ot + d * QL;                                           /* TILE × QL scores, weights */
    const int halves = nq > 16 ? 2 : 1, nv = 2 * halves;
    int64_t first = INT64_MAX, last = 0, lo_max = 0, hi_min = INT64_MAX;
    int32_t lo32[QL], hi32[QL];
    for (int64_t i = 0; i < QL; i++) {
        /* lanes past nq see no key */
        int64_t l = i < nq ? lo[i] : 1, h = i < nq ? hi[i] : 0;
        if (l < h) {
            if (l < first) first = l;
            if (h > last) last = h;
        }
        if (i < nq) {
            if (l > lo_max) lo_max = l;
            if (h < hi_min) hi_min = h;
        }
        lo32[i] = (int32_t)l;
        hi32[i] = (int32_t)h;
    }
    /* Qᵀ·scale, 8 × 8 blocks through registers; rows past nq are zero */
    const __m256 vscale = _mm256_set1_ps(scale);
    const int64_t d8 = d & ~(int64_t)7;
    for (int i0 = 0; i0 < 16 * halves; i0 += 8) {
        for (int64_t c0 = 0; c0 < d8; c0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i0 + i < nq ? _mm256_mul_ps(_mm256_loadu_ps(q + (i0 + i) * ldq + c0), vscale) : _mm256_setzero_ps();
            transpose8(r);
            for (int c = 0; c < 8; c++) _mm256_store_ps(qt + (c0 + c) * QL + i0, r[c]);
        }
        for (int64_t c = d8; c < d; c++)
            for (int i = 0; i < 8; i++) qt[c * QL + i0 + i] = i0 + i < nq ? q[(i0 + i) * ldq + c] * scale : 0.0f;
    }
    memset(ot, 0, (size_t)(d * QL) * sizeof(float));

    const __m256 ninf = _mm256_set1_ps(-INFINITY), one = _mm256_set1_ps(1.0f);
    const __m256 vcap = _mm256_set1_ps(cap), vinv = _mm256_set1_ps(cap > 0 ? 1.0f / cap : 0.0f);
    __m256 m[4], l[4];
    for (int u = 0; u < 4; u++) {
        m[u] = ninf;
        l[u] = _mm256_setzero_ps();
    }
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        const int64_t len = last - t0 < TILE ? last - t0 : TILE;
        const int masked = !(lo_max <= t0 && t0 + len <= hi_min);
        __m256 tmax[4] = {ninf, ninf, ninf, ninf};
        for (int64_t j0 = 0; j0 < len; j0 += R) {
            const int nj = len - j0 < R ? (int)(len - j0) : R;
            const float *kr[R];
            for (int r = 0; r < R; r++) kr[r] = k + (t0 + j0 + (r < nj ? r : nj - 1)) * ldk;
            for (int h = 0; h < halves; h++) {
                __m256 a[R][2];
                for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
                const float *qc = qt + 16 * h;
                for (int64_t c = 0; c < d; c++, qc += QL) {
                    __m256 q0 = _mm256_load_ps(qc), q1 = _mm256_load_ps(qc + 8);
                    for (int r = 0; r < R; r++) {
                        __m256 b = _mm256_broadcast_ss(kr[r] + c);
                        a[r][0] = _mm256_fmadd_ps(b, q0, a[r][0]);
                        a[r][1] = _mm256_fmadd_ps(b, q1, a[r][1]);
                    }
                }
                for (int r = 0; r < nj; r++) {
                    const __m256i pos = _mm256_set1_epi32((int32_t)(t0 + j0 + r));
                    for (int u = 0; u < 2; u++) {
                        const int lane = 16 * h + 8 * u;
                        __m256 x = a[r][u];
                        if (cap > 0) x = _mm256_mul_ps(vcap, tanh_avx2(_mm256_mul_ps(x, vinv)));
                        if (masked)
                            x = _mm256_blendv_ps(ninf, x, in_range(pos, _mm256_loadu_si256((const __m256i *)(lo32 + lane)),
                                                                   _mm256_loadu_si256((const __m256i *)(hi32 + lane))));
                        _mm256_store_ps(st + (j0 + r) * QL + lane, x);
                        tmax[2 * h + u] = _mm256_max_ps(tmax[2 * h + u], x);
                    }
                }
            }
        }
        /* new maxima; the factor rescaling earlier sums is 1 for lanes that have seen no key yet
         * (whose m_old − m is −∞ − (−∞)) */
        __m256 f[4];
        for (int u = 0; u < nv; u++) {
            __m256 mn = _mm256_max_ps(m[u], tmax[u]);
            f[u] = _mm256_blendv_ps(exp_avx2(_mm256_sub_ps(m[u], mn)), one, _mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ));
            m[u] = mn;
            l[u] = _mm256_mul_ps(l[u], f[u]);
        }
        for (int64_t j = 0; j < len; j++)
            for (int u = 0; u < nv; u++) {
                __m256 x = _mm256_load_ps(st + j * QL + 8 * u);
                __m256 e = exp_avx2(_mm256_sub_ps(x, m[u]));
                /* masked scores (−∞) weigh 0, also where m is still −∞ and x − m is NaN */
                if (masked) e = _mm256_and_ps(e, _mm256_cmp_ps(x, ninf, _CMP_NEQ_UQ));
                _mm256_store_ps(st + j * QL + 8 * u, e);
                l[u] = _mm256_add_ps(l[u], e);
            }
        for (int64_t c0 = 0; c0 < d; c0 += R) {
            const int nc = d - c0 < R ? (int)(d - c0) : R;
            int off[R];
            for (int r = 0; r < R; r++) off[r] = r < nc ? r : nc - 1;
            for (int h = 0; h < halves; h++) {
                __m256 o[R][2];
                for (int r = 0; r < R; r++)
                    for (int u = 0; u < 2; u++) o[r][u] = _mm256_mul_ps(_mm256_load_ps(ot + (c0 + off[r]) * QL + 16 * h + 8 * u), f[2 * h + u]);
                const float *vr = v + t0 * ldv + c0;
                const float *pj = st + 16 * h;
                for (int64_t j = 0; j < len; j++, vr += ldv, pj += QL) {
                    __m256 p0 = _mm256_load_ps(pj), p1 = _mm256_load_ps(pj + 8);
                    for (int r = 0; r < R; r++) {
                        __m256 b = _mm256_broadcast_ss(vr + off[r]);
                        o[r][0] = _mm256_fmadd_ps(b, p0, o[r][0]);
                        o[r][1] = _mm256_fmadd_ps(b, p1, o[r][1]);
                    }
                }
                for (int r = 0; r < nc; r++)
                    for (int u = 0; u < 2; u++) _mm256_store_ps(ot + (c0 + r) * QL + 16 * h + 8 * u, o[r][u]);
            }
        }
    }
    /* out[i][c] = Oᵀ[c][i] / l[i] (0 for a query that saw no key), 8 × 8 blocks through registers */
    for (int u = 0; u < nv; u++) {
        const int i0 = 8 * u;
        __m256 inv = _mm256_and_ps(_mm256_div_ps(one, l[u]), _mm256_cmp_ps(l[u], _mm256_setzero_ps(), _CMP_GT_OQ));
        if (i0 >= nq) break;
        const int ni = nq - i0 < 8 ? (int)(nq - i0) : 8;
        for (int64_t c0 = 0; c0 < d8; c0 += 8) {
            __m256 r[8];
            for (int c = 0; c < 8; c++) r[c] = _mm256_mul_ps(_mm256_load_ps(ot + (c0 + c) * QL + i0), inv);
            transpose8(r);
            for (int i = 0; i < ni; i++) _mm256_storeu_ps(out + (i0 + i) * ldo + c0, r[i]);
        }
        float iv[8];
        _mm256_storeu_ps(iv, inv);
        for (int64_t c = d8; c < d; c++)
            for (int i = 0; i < ni; i++) out[(i0 + i) * ldo + c] = ot[c * QL + i0 + i] * iv[i];
    }
}

/* Sums of eight vectors: lane i of the result is the sum of a[i]'s lanes. */
AVX2_INLINE __m128 hsum4x8(const __m256 a[4]) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

AVX2_INLINE __m256 hsum8x8(const __m256 a[8]) {
    __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
    __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
    __m256 h0 = _mm256_hadd_ps(h01, h23), h1 = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

/* Combines lanes that belong to the same query (lane i holds query i mod NQP) with op, so every
 * lane ends with its query's total. */
#define ACROSS_KEYS(op, x, NQP)                                                         \
    do {                                                                                \
        x = op(x, _mm256_permute2f128_ps(x, x, 1));                                     \
        if ((NQP) <= 2) x = op(x, _mm256_shuffle_ps(x, x, _MM_SHUFFLE(1, 0, 3, 2)));    \
        if ((NQP) == 1) x = op(x, _mm256_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));    \
    } while (0)

/* Up to four queries sharing their keys and values (decode: the query heads of one GQA group),
 * d ≤ 256. Each key and value row is read once for all queries, the traffic that bounds decode
 * at long contexts. Rows lie ldk apart (d in the decoder's head-major cache, all heads' width in
 * projections) and the key and value streams take turns with the arithmetic, which hardware
 * prefetchers follow poorly, so rows AHEAD keys on are prefetched explicitly.
 * Queries are padded to NQP ∈ {1, 2, 4} and scores kept as s[key·NQP + query], so one vector
 * holds 8/NQP keys × NQP queries and the online softmax runs on whole vectors (lane i belongs to
 * query i mod NQP). Per tile of TILE keys:
 *   scores for 12/NQP keys at a time, 12 accumulators (key × query: more independent chains
 *   than FMA latency × issue width needs), summed by hadd trees;
 *   mask, softcap, max, exp in vectors;
 *   O[q] = O[q]·f + Σ_j P[j, q]·V[j] over feature chunks of 8 vectors in registers. */
AVX2_INLINE void attention_few_avx2(const int NQ, const float *q, int64_t ldq, const float *k, int64_t ldk,
                                    const float *v, int64_t ldv, int64_t d, float scale, float cap,
                                    const int64_t *lo, const int64_t *hi, float *out, int64_t ldo, float *scratch) {
    /* TILE is a multiple of every KB and of 8/NQP, so groups and vectors of scores align */
    enum { TILE = 24, AHEAD = 12 };
    const int NQP = NQ == 1 ? 1 : NQ == 2 ? 2 : 4, KB = 12 / NQP, CV = 8 / NQP;
    const int64_t dp = (d + 7) & ~(int64_t)7, d8 = d & ~(int64_t)7;
    float *acc = scratch;          /* NQ × dp running sums */
    float *s = scratch + 4 * 256;  /* TILE × NQP scores, then weights */
    int32_t lo32[8], hi32[8];
    int64_t first = INT64_MAX, last = 0, lo_max = 0, hi_min = INT64_MAX;
    for (int i = 0; i < 8; i++) {
        int r = i % NQP;
        int64_t l = r < NQ ? lo[r] : 1, h = r < NQ ? hi[r] : 0;
        lo32[i] = (int32_t)l;
        hi32[i] = (int32_t)h;
        if (i < NQ) {
            if (l < h && l < first) first = l;
            if (l < h && h > last) last = h;
            if (l > lo_max) lo_max = l;
            if (h < hi_min) hi_min = h;
        }
    }
    const __m256i vlo = _mm256_loadu_si256((const __m256i *)lo32), vhi = _mm256_loadu_si256((const __m256i *)hi32);
    /* key offset of each lane within its vector of 8/NQP keys */
    const __m256i lane_key = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), NQP == 1 ? 0 : NQP == 2 ? 1 : 2);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(d - d8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 ninf = _mm256_set1_ps(-INFINITY), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 vcap = _mm256_set1_ps(cap), vinv = _mm256_set1_ps(cap > 0 ? 1.0f / cap : 0.0f);
    for (int64_t i = 0; i < NQ * dp; i += 8) _mm256_storeu_ps(acc + i, zero);
    __m256 m = ninf, l = zero;
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        const int64_t len = last - t0 < TILE ? last - t0 : TILE;
        /* an even number of groups fills whole vectors (12 scores per group) */
        const int64_t groups = 2 * ((len + 2 * KB - 1) / (2 * KB)), vecs = groups * 12 / 8;
        const int masked = !(lo_max <= t0 && t0 + groups * KB <= hi_min);
        /* scores, KB keys at a time (the last group repeats the last key) */
        for (int64_t g = 0; g < groups; g++) {
            const float *kr[12], *pk[12], *pv[12];
            for (int kk = 0; kk < KB; kk++) {
                int64_t j = g * KB + kk, ahead = t0 + j + AHEAD < last ? t0 + j + AHEAD : last - 1;
                kr[kk] = k + (t0 + (j < len ? j : len - 1)) * ldk;
                pk[kk] = k + ahead * ldk;
                pv[kk] = v + ahead * ldv;
            }
            __m256 a[12];
            for (int i = 0; i < 12; i++) a[i] = zero;
            for (int64_t c = 0; c < d8; c += 8) {
                /* the rows AHEAD keys on, spread over the products, every cache line, into L2:
                 * L1 prefetches held its few miss buffers, and rows 4 KB apart (4 heads of 256
                 * floats, interleaved) evicted each other from its sets */
                if ((c & 15) == 0)
                    for (int kk = 0; kk < KB; kk++) {
                        _mm_prefetch((const char *)(pk[kk] + c), _MM_HINT_T1);
                        _mm_prefetch((const char *)(pv[kk] + c), _MM_HINT_T1);
                    }
                for (int kk = 0; kk < KB; kk++) {
                    __m256 kv = _mm256_loadu_ps(kr[kk] + c);
                    for (int r = 0; r < NQ; r++)
                        a[kk * NQP + r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * ldq + c), kv, a[kk * NQP + r]);
                }
            }
            if (d8 < d)
                for (int kk = 0; kk < KB; kk++) {
                    __m256 kv = _mm256_maskload_ps(kr[kk] + d8, tail);
                    for (int r = 0; r < NQ; r++)
                        a[kk * NQP + r] = _mm256_fmadd_ps(_mm256_maskload_ps(q + r * ldq + d8, tail), kv, a[kk * NQP + r]);
                }
            _mm256_storeu_ps(s + g * 12, _mm256_mul_ps(hsum8x8(a), _mm256_set1_ps(scale)));
            _mm_storeu_ps(s + g * 12 + 8, _mm_mul_ps(hsum4x8(a + 8), _mm_set1_ps(scale)));
        }
        /* softcap, mask, tile maximum per query */
        __m256 tm = ninf;
        for (int64_t g = 0; g < vecs; g++) {
            __m256 x = _mm256_loadu_ps(s + g * 8);
            if (cap > 0) x = _mm256_mul_ps(vcap, tanh_avx2(_mm256_mul_ps(x, vinv)));
            if (masked) {
                __m256i pos = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(t0 + g * (8 / NQP))), lane_key);
                x = _mm256_blendv_ps(ninf, x, in_range(pos, vlo, vhi));
            }
            _mm256_storeu_ps(s + g * 8, x);
            tm = _mm256_max_ps(tm, x);
        }
        ACROSS_KEYS(_mm256_max_ps, tm, NQP);
        __m256 mn = _mm256_max_ps(m, tm);
        /* 1 for queries that have seen no key yet (−∞ − (−∞)) */
        __m256 f = _mm256_blendv_ps(exp_avx2(_mm256_sub_ps(m, mn)), one, _mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ));
        m = mn;
        l = _mm256_mul_ps(l, f);
        for (int64_t g = 0; g < vecs; g++) {
            __m256 x = _mm256_loadu_ps(s + g * 8);
            __m256 e = exp_avx2(_mm256_sub_ps(x, m));
            if (masked) e = _mm256_and_ps(e, _mm256_cmp_ps(x, ninf, _CMP_NEQ_UQ));
            _mm256_storeu_ps(s + g * 8, e);
            l = _mm256_add_ps(l, e);
        }
        float fq[8];
        _mm256_storeu_ps(fq, f);
        /* O = O·f + P·V, CV vectors of features per pass over the tile's value rows */
        for (int64_t c0 = 0; c0 < dp; c0 += 8 * CV) {
            const int full = c0 + 8 * CV <= d8;
            __m256 o[4][8];
            for (int r = 0; r < NQ; r++)
                for (int u = 0; u < CV; u++)
                    o[r][u] = c0 + 8 * u < dp ? _mm256_mul_ps(_mm256_loadu_ps(acc + r * dp + c0 + 8 * u), _mm256_set1_ps(fq[r])) : zero;
            const float *vr = v + t0 * ldv + c0;
            if (full) {
                for (int64_t j = 0; j < len; j++, vr += ldv) {
                    __m256 vv[8];
                    for (int u = 0; u < CV; u++) vv[u] = _mm256_loadu_ps(vr + 8 * u);
                    for (int r = 0; r < NQ; r++) {
                        __m256 p = _mm256_broadcast_ss(s + j * NQP + r);
                        for (int u = 0; u < CV; u++) o[r][u] = _mm256_fmadd_ps(p, vv[u], o[r][u]);
                    }
                }
            } else {
                /* the last chunk: vectors past d are skipped, a partial one read under a mask */
                for (int64_t j = 0; j < len; j++, vr += ldv) {
                    __m256 vv[8];
                    for (int u = 0; u < CV; u++)
                        vv[u] = c0 + 8 * u + 8 <= d8 ? _mm256_loadu_ps(vr + 8 * u)
                              : c0 + 8 * u < d ? _mm256_maskload_ps(vr + 8 * u, tail) : zero;
                    for (int r = 0; r < NQ; r++) {
                        __m256 p = _mm256_broadcast_ss(s + j * NQP + r);
                        for (int u = 0; u < CV; u++) o[r][u] = _mm256_fmadd_ps(p, vv[u], o[r][u]);
                    }
                }
            }
            for (int r = 0; r < NQ; r++)
                for (int u = 0; u < CV; u++)
                    if (c0 + 8 * u < dp) _mm256_storeu_ps(acc + r * dp + c0 + 8 * u, o[r][u]);
        }
    }
    ACROSS_KEYS(_mm256_add_ps, l, NQP);
    float lq[8];
    _mm256_storeu_ps(lq, l);
    for (int r = 0; r < NQ; r++) {
        const __m256 inv = _mm256_set1_ps(lq[r] > 0 ? 1.0f / lq[r] : 0.0f);
        int64_t c = 0;
        for (; c < d8; c += 8) _mm256_storeu_ps(out + r * ldo + c, _mm256_mul_ps(_mm256_loadu_ps(acc + r * dp + c), inv));
        for (; c < d; c++) out[r * ldo + c] = acc[r * dp + c] * (lq[r] > 0 ? 1.0f / lq[r] : 0.0f);
    }
}

AVX2 static void attention_avx2(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                                int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                                float *out, int64_t ldo, float *scratch) {
    if (nq >= 1 && nq <= 4 && d <= 256) {
        /* one copy per query count, so loops over queries and keys unroll into registers */
        switch (nq) {
        case 1: attention_few_avx2(1, q, ldq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch); break;
        case 2: attention_few_avx2(2, q, ldq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch); break;
        case 3: attention_few_avx2(3, q, ldq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch); break;
        default: attention_few_avx2(4, q, ldq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch); break;
        }
    } else if (nq >= 16 && nq <= 32) {
        /* from 16 queries on, the lanes-over-queries kernel fills its vectors */
        attention_lanes_avx2(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    } else {
        ck_attention_rows(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    }
}

void ck_fill_avx2_math(ck_kernels *t, const ck_cpu *cpu) {
    (void)cpu;
    t->gelu_tanh = gelu_tanh_avx2;
    t->softcap = softcap_avx2;
    t->exp_shift = exp_shift_avx2;
    t->max = max_avx2;
    t->attention_block = attention_avx2;
}
#else
void ck_fill_avx2_math(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
