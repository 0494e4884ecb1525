/* Routines that are the same on every level: format conversions done once at load time, layout
 * helpers, scratch sizes, and the row-at-a-time attention that runs on the active table's
 * vector primitives. */
#include "ck_table.h"
#include <math.h>

void ck_split_even_odd(const float *x, int64_t K, float *out) {
    int64_t K32 = K & ~(int64_t)31;
    for (int64_t k = 0; k < K32; k += 32)
        for (int i = 0; i < 16; i++) {
            out[k + i] = x[k + 2 * i];
            out[k + 16 + i] = x[k + 2 * i + 1];
        }
    for (int64_t k = K32; k < K; k++) out[k] = x[k];
}

uint16_t ck_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = u & 0x7FFFFF;
    if (((u >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7C00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

float ck_f16_to_f32(uint16_t h) { return ck_f16_value(h); }

void ck_convert_row_q(const void *W, const uint16_t *scales, int format, int64_t K, int64_t row, float *out) {
    const int64_t G = ck_groups(K);
    const uint16_t *sc = scales + row * G;
    for (int64_t g = 0; g < G; g++) {
        float s = ck_f16_value(sc[g]);
        if (format == CK_Q8) {
            const int8_t *q = (const int8_t *)W + row * K + g * 32;
            for (int i = 0; i < ck_group_length(K, g); i++) out[g * 32 + i] = (float)q[i] * s;
        } else {
            const uint8_t *q = (const uint8_t *)W + row * (K / 2) + g * 16;
            for (int i = 0; i < 16; i++) {
                out[g * 32 + i] = (float)((int)(q[i] & 0xF) - 8) * s;
                out[g * 32 + 16 + i] = (float)((int)(q[i] >> 4) - 8) * s;
            }
        }
    }
}

void ck_rows_to_bf16(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n0, int64_t count,
                     uint16_t *out) {
    float tmp[CK_GROUP];
    const int64_t G = ck_groups(K);
    for (int64_t r = 0; r < count; r++) {
        int64_t n = n0 + r;
        for (int64_t g = 0; g < G; g++) {
            float s = ck_f16_value(scales[n * G + g]);
            const int len = ck_group_length(K, g);
            for (int i = 0; i < len; i++) tmp[i] = (float)ck_q_weight(W, format, K, n, g, i) * s;
            for (int i = 0; i < len; i++) out[r * K + g * 32 + i] = ck_bf16_round(tmp[i]);
        }
    }
}

void ck_quantize_row(const float *w, int64_t K, int format, void *out, uint16_t *scales) {
    const int64_t G = ck_groups(K);
    for (int64_t g = 0; g < G; g++) {
        const float *v = w + g * 32;
        const int len = ck_group_length(K, g);
        float amax = 0;
        for (int i = 0; i < len; i++) amax = fmaxf(amax, fabsf(v[i]));
        /* symmetric: q8 in [-127, 127], q4 in [-8, 7] with the scale set by the largest magnitude */
        float limit = format == CK_Q8 ? 127.0f : 7.0f;
        uint16_t sh = ck_f32_to_f16(amax / limit);
        scales[g] = sh;
        float s = ck_f16_value(sh);
        float inv = s > 0 ? 1.0f / s : 0.0f;
        if (format == CK_Q8) {
            int8_t *q = (int8_t *)out + g * 32;
            for (int i = 0; i < len; i++) {
                float r = nearbyintf(v[i] * inv);
                q[i] = (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
            }
        } else {
            uint8_t *q = (uint8_t *)out + g * 16;
            for (int i = 0; i < 16; i++) {
                float a = nearbyintf(v[i] * inv), b = nearbyintf(v[16 + i] * inv);
                int ia = (int)(a > 7 ? 7 : (a < -8 ? -8 : a)) + 8, ib = (int)(b > 7 ? 7 : (b < -8 ? -8 : b)) + 8;
                q[i] = (uint8_t)(ia | (ib << 4));
            }
        }
    }
}

/* the 4-bit kernels' order: per four groups, their elements 0–15 then their elements 16–31;
 * lane i of a block pairs elements 4(i%4)…+3 and 16+4(i%4)…+3 of group g + i/4, whose sums
 * sum4 already holds */
void ck_quantize_input_q4_order(int64_t G, ck_qinput *out) {
    for (int64_t g = 0; g + 3 < G; g += 4) {
        int8_t *dst = out->value_q4 + g * 32;
        for (int q = 0; q < 4; q++) {
            memcpy(dst + 16 * q, out->value + (g + q) * 32, 16);
            memcpy(dst + 64 + 16 * q, out->value + (g + q) * 32 + 16, 16);
        }
        for (int i = 0; i < 16; i++) {
            const int32_t *s4 = out->sum4 + (g + i / 4) * 8;
            out->offset_q4[g * 4 + i] = -8 * (s4[i % 4] + s4[4 + i % 4]);
        }
    }
}

int64_t ck_gemm_q_int8_scratch_bytes(int64_t K) {
    /* a panel of 32 weight rows widened to 16 bits (64 bytes per input feature; the 8-bit
     * panels take half), plus per group 32 compensations and 32 scales (4 bytes each), plus
     * alignment */
    return ck_groups(K) * CK_GROUP * 64 + ck_groups(K) * 32 * 8 + 64;
}

int64_t ck_attention_scratch_floats(int64_t nq, int64_t d) {
    /* running sums, maxima and denominators; transposed key tile; score tile; alignment */
    int64_t small = nq * (d + 2) + 4 * 64 + 256; /* row-at-a-time kernel: sums, maxima, scores */
    int64_t few = 4 * 256 + 4 * 64;              /* up to four queries: sums, scores */
    if (few > small) small = few;
    int64_t lanes = 2 * d * 32 + 64 * 32 + 16;   /* queries in lanes: Qᵀ, Oᵀ, Sᵀ, alignment */
    return small > lanes ? small : lanes;
}

/* ---------------- online softmax ---------------- */

/* Zero sums, −∞ maxima, zero denominators for nq rows; the keys any row sees are
 * *first ..< *last (empty when first ≥ last). */
void ck_softmax_start(int64_t nq, int64_t d, const int64_t *lo, const int64_t *hi, float *acc, float *m, float *l,
                      int64_t *first, int64_t *last) {
    *first = INT64_MAX;
    *last = 0;
    for (int64_t i = 0; i < nq; i++) {
        memset(acc + i * d, 0, (size_t)d * sizeof(float));
        m[i] = -INFINITY;
        l[i] = 0;
        if (lo[i] < hi[i]) {
            if (lo[i] < *first) *first = lo[i];
            if (hi[i] > *last) *last = hi[i];
        }
    }
}

/* Folds one tile into a row: the n scores s of the keys it sees are softcapped (cap > 0), the
 * running maximum *m raised (rescaling what acc and *l hold), s replaced by exp(s − *m), and *l
 * grows by their sum. */
void ck_softmax_tile(float *s, int64_t n, float cap, float *m, float *l, float *acc, int64_t d) {
    const ck_kernels *t = ck_active();
    if (cap > 0) t->softcap(s, n, cap);
    float tile_max = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        if (s[j] > tile_max) tile_max = s[j];
    if (tile_max > *m) {
        if (*m != -INFINITY) {
            float f = expf(*m - tile_max);
            t->scale(f, acc, d);
            *l *= f;
        }
        *m = tile_max;
    }
    *l += t->exp_shift(s, s, n, *m);
}

/* out row i = acc row i / l[i] (0 for a row that saw no key). */
void ck_softmax_finish(int64_t nq, int64_t d, const float *acc, const float *l, float *out, int64_t ldo) {
    for (int64_t i = 0; i < nq; i++) {
        float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f;
        for (int64_t c = 0; c < d; c++) out[i * ldo + c] = acc[i * d + c] * inv;
    }
}

void ck_attention_rows(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                       int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                       float *out, int64_t ldo, float *scratch) {
    enum { TILE = 64 };
    const ck_kernels *t = ck_active();
    float *acc = scratch;     /* nq × d running weighted sums */
    float *mx = acc + nq * d; /* nq running maxima */
    float *sum = mx + nq;     /* nq running denominators */
    float *s = sum + nq;      /* 4 × TILE scores of the current rows */
    int64_t first, last;
    ck_softmax_start(nq, d, lo, hi, acc, mx, sum, &first, &last);
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        int64_t t1 = t0 + TILE < last ? t0 + TILE : last;
        /* Rows go four at a time so each key and value row is loaded once for all four. */
        for (int64_t i0 = 0; i0 < nq; i0 += 4) {
            int64_t nr = nq - i0 < 4 ? nq - i0 : 4;
            int64_t ra[4], rb[4], a = INT64_MAX, b = 0;
            for (int r = 0; r < 4; r++) {
                int64_t i = i0 + (r < nr ? r : 0);
                ra[r] = lo[i] > t0 ? lo[i] : t0;
                rb[r] = hi[i] < t1 ? hi[i] : t1;
                if (r >= nr) rb[r] = ra[r]; /* padding rows see nothing */
                if (ra[r] < rb[r]) {
                    if (ra[r] < a) a = ra[r];
                    if (rb[r] > b) b = rb[r];
                }
            }
            if (a >= b) continue;
            const float *qr[4];
            for (int r = 0; r < 4; r++) qr[r] = q + (i0 + (r < nr ? r : 0)) * ldq;
            for (int64_t j = a; j < b; j++) {
                float dots[4];
                t->dot4(qr[0], qr[1], qr[2], qr[3], k + j * ldk, d, dots);
                for (int r = 0; r < 4; r++) s[r * TILE + (j - t0)] = dots[r] * scale;
            }
            for (int r = 0; r < 4; r++) {
                if (ra[r] >= rb[r]) continue;
                int64_t i = i0 + r;
                ck_softmax_tile(s + r * TILE + (ra[r] - t0), rb[r] - ra[r], cap, &mx[i], &sum[i], acc + i * d, d);
            }
            for (int64_t j = a; j < b; j++) {
                float p[4];
                for (int r = 0; r < 4; r++) p[r] = (j >= ra[r] && j < rb[r]) ? s[r * TILE + (j - t0)] : 0.0f;
                if (nr == 4) {
                    t->axpy4(p, v + j * ldv, acc + i0 * d, acc + (i0 + 1) * d, acc + (i0 + 2) * d,
                             acc + (i0 + 3) * d, d);
                    continue;
                }
                for (int r = 0; r < nr; r++)
                    if (p[r] != 0.0f) t->axpy(p[r], v + j * ldv, acc + (i0 + r) * d, d);
            }
        }
    }
    ck_softmax_finish(nq, d, acc, sum, out, ldo);
}
