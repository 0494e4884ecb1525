/* Level "avx-vnni": the avx2 level plus 256-bit vpdpbusd integer dot products (Alder Lake and
 * later; on AVX-512 CPUs the same instruction in its EVEX encoding).
 *
 * vpdpbusd multiplies u8 × s8 in groups of 4 and adds them to int32 lanes without saturating, so
 * the GEMV takes |x| (u8) against sign(x)·w (q8) or nibbles against x (q4), and the GEMM takes
 * offset-u8 activations u = q + 128 against s8 weights with the sums started at −128·Σw.
 *
 * The kernels below the first #else are compiled twice by including this file into itself: once
 * for the VEX encoding (target avxvnni, _mm256_dpbusd_avx_epi32), once for the EVEX one (targets
 * avx512vl + avx512vnni, _mm256_dpbusd_epi32); ck_fill_avxvnni picks by cpu->avxvnni. */
#if !defined(CK_VNNI_BODY)
#include "avx2/avx2.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

/* A GEMM register tile is VR activation rows × VC vectors of 8 columns (int32 sums accumulate in
 * place, so 12 accumulators + VC weights + one broadcast fit in 16 registers); a packed panel holds
 * VN = 8·VC weight rows. Per group g and 4-byte chunk ch, each vector holds 8 columns × 4 s8
 * weights (q4: nibble − 8); per group follow VN compensations −128·Σw (int32) and VN weight
 * scales (float). */
#define VR 4
#define VC 3
#define VN (VC * 8)

/* The batched decode GEMVs (gemv_q_int8_rows) take up to ROWS_MAX inputs per chunk, two weight
 * rows per pass: 2·ROWS_MAX accumulators, two rows' weights and the constants fit in 16 registers.
 * Larger M runs in chunks over blocks of ROWS_NB rows. */
#define ROWS_MAX CK_ROWS_CHUNK
#define ROWS_NB 16

/* Packs weight rows n ..< n + cols (≤ VN; the rest zero) in the layout above. Each 8 rows of a
 * group are loaded as 32 s8 in element order (q4 unpacked, a short q8 last group zero-filled),
 * transposed so vector ch holds chunk ch of every row, and summed (1·w pairs, then pairs of
 * pairs) for the compensation. */
AVX2 static void pack_panel(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n, int64_t cols,
                            int8_t *pw, int32_t *comp, float *ws) {
    const int64_t G = ck_groups(K);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const __m128i nib = _mm_set1_epi8(0x0F);
    for (int c = 0; c < VC; c++) {
        int live = (int)(cols - 8 * c);
        live = live < 0 ? 0 : (live > 8 ? 8 : live);
        for (int64_t g = 0; g < G; g++) {
            const int len = ck_group_length(K, g);
            __m256i r[8];
            for (int j = 0; j < 8; j++) {
                const int64_t row = n + 8 * c + j;
                if (j >= live) {
                    r[j] = _mm256_setzero_si256();
                } else if (format == CK_Q4) {
                    __m128i b = _mm_loadu_si128((const __m128i *)((const uint8_t *)W + row * (K / 2) + g * 16));
                    __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), nib), _mm_and_si128(b, nib));
                    r[j] = _mm256_sub_epi8(v, _mm256_set1_epi8(8));
                } else if (len == 32) {
                    r[j] = _mm256_loadu_si256((const __m256i *)((const int8_t *)W + row * K + g * 32));
                } else {
                    int8_t tmp[32] = {0};
                    memcpy(tmp, (const int8_t *)W + row * K + g * 32, (size_t)len);
                    r[j] = _mm256_loadu_si256((const __m256i *)tmp);
                }
            }
            transpose8_epi32(r);
            __m256i sum = _mm256_setzero_si256();
            for (int ch = 0; ch < 8; ch++) {
                _mm256_store_si256((__m256i *)(pw + ((g * 8 + ch) * VC + c) * 32), r[ch]);
                sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(ones8, r[ch]));
            }
            __m256i s = _mm256_madd_epi16(sum, ones16);
            _mm256_store_si256((__m256i *)(comp + g * VN + 8 * c), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s, 7)));
            uint16_t half[8];
            for (int j = 0; j < 8; j++) half[j] = j < live ? scales[(n + 8 * c + j) * G + g] : 0;
            _mm256_store_ps(ws + g * VN + 8 * c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)half)));
        }
    }
}

/* The body, once per encoding. */
#define CK_VNNI_BODY 1
#define VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define DPBUSD _mm256_dpbusd_avx_epi32
#define V(name) name##_vex
#include "avxvnni.c"
#undef VNNI
#undef DPBUSD
#undef V
#define VNNI __attribute__((target("avx2,fma,f16c,avx512vl,avx512vnni")))
#define DPBUSD _mm256_dpbusd_epi32
#define V(name) name##_evex
#include "avxvnni.c"
#undef VNNI
#undef DPBUSD
#undef V

void ck_fill_avxvnni(ck_kernels *t, const ck_cpu *cpu) {
    t->name = "avx-vnni";
    t->int8_products = 1;
    if (cpu->avxvnni) {
        t->gemv_q_int8 = gemv_q_int8_vex;
        t->gemv_q_int8_rows = gemv_q_int8_rows_vex;
        t->gemm_q_int8 = gemm_q_int8_vex;
        t->int8_probe = int8_probe_vex;
    } else {
        t->gemv_q_int8 = gemv_q_int8_evex;
        t->gemv_q_int8_rows = gemv_q_int8_rows_evex;
        t->gemm_q_int8 = gemm_q_int8_evex;
        t->int8_probe = int8_probe_evex;
    }
}
#else
void ck_fill_avxvnni(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif

#else /* CK_VNNI_BODY: the kernels, under VNNI / DPBUSD / V(name) */

/* Decode GEMVs. Four rows per pass share each input load and keep four weight streams in flight;
 * the next four rows are prefetched at the same place in the row into L2 (T1: prefetches into L1
 * delay the demand loads). The scales of 8 groups per row are widened together and each group's
 * spread over the lanes by one vpermps. */

/* rows n ..< n+R (R ≤ 4) of 8-bit weights, one group per step: vpdpbusd of |x| (u8) against
 * sign(x)·w (vpsignb) leaves the group's 8 int32 partial sums, scaled by w_scale·x_scale. */
VNNI static INLINE void V(gemv_q8_rows)(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                                        const float *bias, float *y, int64_t n, const int R) {
    const int64_t G = K / CK_GROUP;
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
    const int8_t *w = W + n * K;
    const uint16_t *sc = scales + n * G;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        const int64_t gn = G - g0 < 8 ? G - g0 : 8;
        __m256 c[4];
        for (int r = 0; r < R; r++) c[r] = row_scales(sc + r * G + g0, in->scale + g0, gn);
        /* 8 groups of a row are 256 bytes; the next four rows are 4·K bytes on */
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 4; i++) _mm_prefetch((const char *)(w + r * K + g0 * 32) + 4 * K + 64 * i, _MM_HINT_T1);
        __m256i sel = zero;
        for (int64_t j = 0; j < gn; j++, sel = _mm256_add_epi32(sel, one)) {
            const int64_t g = g0 + j;
            const __m256i v = _mm256_loadu_si256((const __m256i *)(in->value + g * 32));
            const __m256i mg = _mm256_loadu_si256((const __m256i *)(in->magnitude + g * 32));
            for (int r = 0; r < R; r++) {
                __m256i d = DPBUSD(zero, mg, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w + r * K + g * 32)), v));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[r], sel), acc[r]);
            }
        }
    }
    store_rows(acc, R, bias, y, n);
}

VNNI static void V(gemv_q8)(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                            const float *bias, float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) V(gemv_q8_rows)(in, K, W, scales, bias, y, n, 4);
    if (n + 2 <= n1) V(gemv_q8_rows)(in, K, W, scales, bias, y, n, 2), n += 2;
    if (n < n1) V(gemv_q8_rows)(in, K, W, scales, bias, y, n, 1);
}

/* rows n ..< n+R (R ≤ 4) of 4-bit weights, two groups (one 32-byte load per row) per step: low
 * nibbles (elements 0–15 of groups g, g+1) against value_q4's matching x, high nibbles (elements
 * 16–31) likewise, both into sums started at offset_q4 = −8·Σx; lanes 0–3 hold group g, 4–7 g+1. */
VNNI static INLINE void V(gemv_q4_rows)(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                                        const float *bias, float *y, int64_t n, const int R) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3, rb = K / 2;
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i spread0 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), step = _mm256_set1_epi32(2);
    const uint8_t *w = W + n * rb;
    const uint16_t *sc = scales + n * G;
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < G4; g0 += 8) {
        const int64_t gn = G4 - g0 < 8 ? G4 - g0 : 8;
        __m256 c[4];
        for (int r = 0; r < R; r++) c[r] = row_scales(sc + r * G + g0, in->scale + g0, gn);
        /* 8 groups of a row are 128 bytes; the rows two passes on are 8·K/2 bytes on (as on avx2) */
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 2; i++) _mm_prefetch((const char *)(w + r * rb + g0 * 16) + 4 * K + 64 * i, _MM_HINT_T1);
        __m256i sel = spread0;
        for (int64_t j = 0; j < gn; j += 2, sel = _mm256_add_epi32(sel, step)) {
            const int64_t g = g0 + j;
            const int8_t *xb = in->value_q4 + (g & ~(int64_t)3) * 32 + (g & 2) * 16;
            const __m256i xlo = _mm256_loadu_si256((const __m256i *)xb);
            const __m256i xhi = _mm256_loadu_si256((const __m256i *)(xb + 64));
            const __m256i off = _mm256_loadu_si256((const __m256i *)(in->offset_q4 + g * 4));
            for (int r = 0; r < R; r++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16));
                __m256i d = DPBUSD(off, _mm256_and_si256(v, nib), xlo);
                d = DPBUSD(d, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib), xhi);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[r], sel), acc[r]);
            }
        }
    }
    store_q4_rows(in, W, K, sc, acc, R, bias, y, n);
}

VNNI static void V(gemv_q4)(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                            const float *bias, float *y, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) V(gemv_q4_rows)(in, K, W, scales, bias, y, n, 4);
    if (n + 2 <= n1) V(gemv_q4_rows)(in, K, W, scales, bias, y, n, 2), n += 2;
    if (n < n1) V(gemv_q4_rows)(in, K, W, scales, bias, y, n, 1);
}

VNNI static void V(gemv_q_int8)(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                                const float *bias, float *y, int64_t n0, int64_t n1) {
    if (format == CK_Q4) V(gemv_q4)(in, K, (const uint8_t *)W, scales, bias, y, n0, n1);
    else V(gemv_q8)(in, K, (const int8_t *)W, scales, bias, y, n0, n1);
}

/* V(gemv_q8) and V(gemv_q4) for M inputs (decode of M sequences at once). Per weight row and input
 * the same groups, steps and instructions as the one-input kernels, whose result for a row does
 * not depend on how many rows share a pass (store_rows reduces each row alike), so every row of y
 * is theirs bit for bit; but each weight load (and the nibble unpacking) serves all M inputs. R
 * (rows per pass, ≤ 2) and M (≤ ROWS_MAX) are compile-time constants in each specialisation. */
VNNI static INLINE void V(gemv_q8_batch)(const ck_qinput *in, const int M, int64_t K, const int8_t *W,
                                         const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                         const int R) {
    const int64_t G = K / CK_GROUP;
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
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
        __m256i sel = zero;
        for (int64_t j = 0; j < gn; j++, sel = _mm256_add_epi32(sel, one)) {
            const int64_t g = g0 + j;
            __m256i wv[2];
            for (int r = 0; r < R; r++) wv[r] = _mm256_loadu_si256((const __m256i *)(w + r * K + g * 32));
            for (int m = 0; m < M; m++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(in[m].value + g * 32));
                const __m256i mg = _mm256_loadu_si256((const __m256i *)(in[m].magnitude + g * 32));
                for (int r = 0; r < R; r++) {
                    __m256i d = DPBUSD(zero, mg, _mm256_sign_epi8(wv[r], v));
                    acc[m][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[m][r], sel), acc[m][r]);
                }
            }
        }
    }
    for (int m = 0; m < M; m++) store_rows(acc[m], R, bias, y + m * ldy, n);
}

VNNI static INLINE void V(gemv_q4_batch)(const ck_qinput *in, const int M, int64_t K, const uint8_t *W,
                                         const uint16_t *scales, const float *bias, float *y, int64_t ldy, int64_t n,
                                         const int R) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3, rb = K / 2;
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i spread0 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), step = _mm256_set1_epi32(2);
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
        for (int64_t j = 0; j < gn; j += 2, sel = _mm256_add_epi32(sel, step)) {
            const int64_t g = g0 + j;
            __m256i lo[2], hi[2];
            for (int r = 0; r < R; r++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(w + r * rb + g * 16));
                lo[r] = _mm256_and_si256(v, nib), hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
            }
            for (int m = 0; m < M; m++) {
                const int8_t *xb = in[m].value_q4 + (g & ~(int64_t)3) * 32 + (g & 2) * 16;
                const __m256i xlo = _mm256_loadu_si256((const __m256i *)xb);
                const __m256i xhi = _mm256_loadu_si256((const __m256i *)(xb + 64));
                const __m256i off = _mm256_loadu_si256((const __m256i *)(in[m].offset_q4 + g * 4));
                for (int r = 0; r < R; r++) {
                    __m256i d = DPBUSD(off, lo[r], xlo);
                    d = DPBUSD(d, hi[r], xhi);
                    acc[m][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[m][r], sel), acc[m][r]);
                }
            }
        }
    }
    for (int m = 0; m < M; m++) store_q4_rows(&in[m], W, K, sc, acc[m], R, bias, y + m * ldy, n);
}

/* Blocks of ROWS_NB weight rows, each for every chunk of inputs in turn: the chunks after the
 * first find the block's weights in L2. */
VNNI static void V(gemv_q_int8_rows)(const ck_qinput *in, int64_t M, int64_t K, const void *W,
                                     const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                     int64_t n0, int64_t n1) {
    CK_Q_INT8_ROWS_BODY(V(gemv_q4_batch), V(gemv_q8_batch), ROWS_NB)
}

/* One register tile: mr (≤ VR) rows × VN columns over all of K. Per group the int32 sums start at
 * the compensation −128·Σw, take 8 vpdpbusd per accumulator (a broadcast 4-byte chunk of u8
 * activations against 8 columns × 4 weights), then · w_scale · x_scale into float32 sums kept in a
 * stack tile (the registers hold the integer ones). */
VNNI static INLINE void V(tile)(const uint8_t *xq, const float *xs, int64_t K, const int8_t *pw, const int32_t *comp,
                                const float *ws, const float *bias, float *y, int64_t ldy, int64_t cols, const int mr) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    __attribute__((aligned(32))) float acc[VR][VN];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < VC; c++) _mm256_store_ps(acc[r] + 8 * c, _mm256_setzero_ps());
    for (int64_t g = 0; g < G; g++) {
        __m256i d[VR][VC];
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < VC; c++) d[r][c] = _mm256_load_si256((const __m256i *)(comp + g * VN + 8 * c));
        const int8_t *p = pw + g * 8 * VN * 4;
        for (int ch = 0; ch < 8; ch++) {
            __m256i w[VC];
            for (int c = 0; c < VC; c++) w[c] = _mm256_load_si256((const __m256i *)(p + (ch * VC + c) * 32));
            for (int r = 0; r < mr; r++) {
                int32_t chunk;
                memcpy(&chunk, xq + r * Kp + g * 32 + ch * 4, 4);
                __m256i a = _mm256_set1_epi32(chunk);
                for (int c = 0; c < VC; c++) d[r][c] = DPBUSD(d[r][c], a, w[c]);
            }
        }
        for (int r = 0; r < mr; r++) {
            __m256 sx = _mm256_broadcast_ss(xs + r * G + g);
            for (int c = 0; c < VC; c++) {
                __m256 s = _mm256_mul_ps(_mm256_load_ps(ws + g * VN + 8 * c), sx);
                _mm256_store_ps(acc[r] + 8 * c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r][c]), s, _mm256_load_ps(acc[r] + 8 * c)));
            }
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int c = 0; c < VC; c++) {
        const int64_t live = cols - 8 * c;
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

VNNI static void V(gemm_q_int8)(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                                const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                int64_t n0, int64_t n1, void *scratch) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    /* scratch: the panel (VN bytes per feature), then VN compensations and VN scales per group,
     * within ck_gemm_q_int8_scratch_bytes (64 per feature + 256 per group + 64) */
    int8_t *pw = (int8_t *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31);
    int32_t *comp = (int32_t *)(pw + Kp * VN);
    float *ws = (float *)(comp + G * VN);
    const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
    for (int64_t n = n0; n < n1; n += VN) {
        const int64_t cols = n1 - n < VN ? n1 - n : VN;
        pack_panel(W, scales, format, K, n, cols, pw, comp, ws);
        const float *b = bias ? bias + n : NULL;
        /* the next panel's rows are one contiguous block: bring it into L2 a slice per tile */
        const char *next = (const char *)W + (n + VN) * rowBytes;
        const int64_t lines = n + VN < n1 ? (VN * rowBytes) / 64 : 0;
        const int64_t tiles = M / VR + 1, perTile = (lines + tiles - 1) / tiles;
        int64_t fetched = 0;
        for (int64_t m = 0; m < M; m += VR) {
            for (int64_t j = 0; j < perTile && fetched < lines; j++, fetched++) _mm_prefetch(next + fetched * 64, _MM_HINT_T1);
            const uint8_t *xr = xq + m * Kp;
            const float *sr = xs + m * G;
            float *yr = y + m * ldy + n;
            switch (M - m >= VR ? VR : (int)(M - m)) {
            case 4: V(tile)(xr, sr, K, pw, comp, ws, b, yr, ldy, cols, 4); break;
            case 3: V(tile)(xr, sr, K, pw, comp, ws, b, yr, ldy, cols, 3); break;
            case 2: V(tile)(xr, sr, K, pw, comp, ws, b, yr, ldy, cols, 2); break;
            default: V(tile)(xr, sr, K, pw, comp, ws, b, yr, ldy, cols, 1); break;
            }
        }
    }
}

/* 12 independent chains of the GEMM's instruction: 32 multiply-adds per vpdpbusd, counted 2 each. */
VNNI static double V(int8_probe)(int64_t n, float *sink) {
    __m256i a[12];
    const __m256i x = _mm256_set1_epi8(3), w = _mm256_set1_epi8(-2);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi32(i);
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = DPBUSD(a[i], x, w);
    __m256i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, a[i]);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    *sink = (float)(_mm_cvtsi128_si32(h) + _mm_extract_epi32(h, 1) + _mm_extract_epi32(h, 2) + _mm_extract_epi32(h, 3));
    return (double)n * 12 * 32 * 2;
}

#endif /* CK_VNNI_BODY */
