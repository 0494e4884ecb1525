/* Level "avx512": AVX-512 F/BW/VL/DQ with FMA and F16C, plus VNNI integer dot products and BF16
 * dot products where the CPU has them (checked when the table is filled). 512-bit vectors with
 * masked tails; the float32 GEMM keeps a 12×32 tile in 24 of the 32 registers. */
#include "../ck_table.h"
#include <math.h>
#include <stdatomic.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* f32 / bf16 / f16 rows to float32 for the rows a vector loop does not take */
static void ck_fill_generic_convert_row(const void *W, int format, int64_t K, int64_t row, float *out) {
    switch (format) {
    case CK_F32: memcpy(out, (const float *)W + row * K, (size_t)K * sizeof(float)); break;
    case CK_BF16: for (int64_t k = 0; k < K; k++) out[k] = ck_bf16_value(((const uint16_t *)W)[row * K + k]); break;
    case CK_F16: for (int64_t k = 0; k < K; k++) out[k] = ck_f16_value(((const uint16_t *)W)[row * K + k]); break;
    }
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))

AVX512 static void convert_row_avx512(const void *W, int format, int64_t K, int64_t row, float *out) {
    if (format == CK_BF16) {
        const uint16_t *p = (const uint16_t *)W + row * K;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(p + k));
            __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
            _mm512_storeu_ps(out + k, _mm512_castsi512_ps(w));
        }
        for (; k < K; k++) out[k] = ck_bf16_value(p[k]);
    } else if (format == CK_F16) {
        const uint16_t *p = (const uint16_t *)W + row * K;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(p + k));
            _mm512_storeu_ps(out + k, _mm512_cvtph_ps(h));
        }
        for (; k < K; k++) out[k] = ck_f16_value(p[k]);
    } else {
        ck_fill_generic_convert_row(W, format, K, row, out);
    }
}

AVX512 static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
    }
    for (; k + 16 <= n; k += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* 4 weight rows (already float32, in w[0..3]) against 4 input rows: 16 accumulators. */
AVX512 static void micro_4x4(const float *x, int64_t ldx, int64_t mrows, const float *w, int64_t K,
                             int64_t nrows, float out[4][4]) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    const float *xr[4], *wr[4];
    for (int i = 0; i < 4; i++) xr[i] = x + (i < mrows ? i : 0) * ldx;
    for (int j = 0; j < 4; j++) wr[j] = w + (j < nrows ? j : 0) * K;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv0 = _mm512_loadu_ps(wr[0] + k), wv1 = _mm512_loadu_ps(wr[1] + k);
        __m512 wv2 = _mm512_loadu_ps(wr[2] + k), wv3 = _mm512_loadu_ps(wr[3] + k);
        for (int i = 0; i < 4; i++) {
            __m512 xv = _mm512_loadu_ps(xr[i] + k);
            acc[i][0] = _mm512_fmadd_ps(xv, wv0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, wv1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(xv, wv2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(xv, wv3, acc[i][3]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_maskz_loadu_ps(m, wr[j] + k);
        for (int i = 0; i < 4; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, xr[i] + k);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

AVX512 static void linear_avx512(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                 int format, const float *bias, float *y, int64_t ldy, int64_t n0,
                                 int64_t n1, float *scratch) {
    for (int64_t n = n0; n < n1; n += 4) {
        int64_t nrows = n1 - n < 4 ? n1 - n : 4;
        const float *w;
        if (format == CK_F32) {
            /* Contiguous rows: read in place, no copy. */
            if (nrows == 4) {
                w = (const float *)W + n * K;
            } else {
                for (int64_t j = 0; j < nrows; j++) ck_fill_generic_convert_row(W, format, K, n + j, scratch + j * K);
                w = scratch;
            }
        } else {
            for (int64_t j = 0; j < nrows; j++) convert_row_avx512(W, format, K, n + j, scratch + j * K);
            w = scratch;
        }
        for (int64_t m = 0; m < M; m += 4) {
            int64_t mrows = M - m < 4 ? M - m : 4;
            float out[4][4];
            micro_4x4(x + m * ldx, ldx, mrows, w, K, nrows, out);
            for (int64_t i = 0; i < mrows; i++)
                for (int64_t j = 0; j < nrows; j++)
                    y[(m + i) * ldy + n + j] = out[i][j] + (bias ? bias[n + j] : 0.0f);
        }
    }
}

/* bf16 weights, one input row (decode): stream each weight byte once, widen in registers.
 * A 512-bit load holds 32 bf16 = 16 pairs; `w << 16` is the even elements as float32 and
 * `w & 0xFFFF0000` the odd ones, so x is pre-split into even/odd halves per 32-chunk. */
AVX512 static void gemv_bf16_avx512(const float *xeo, int64_t K, const void *Wv, const float *bias,
                                    float *y, int64_t n0, int64_t n1) {
    const uint16_t *W = (const uint16_t *)Wv;
    const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
    const int64_t K32 = K & ~(int64_t)31;
    /* Prefetch distance in elements: 2 KB ahead in each row, or for short rows (4 rows ≤ 32 KB)
     * the next 4 rows' same place, so that the last 2 KB of a row are not left to the hardware.
     * The decode GEMVs prefetch into L2, not L1: on AMD Zen 4 an L1 prefetch of the stream
     * ran at two thirds of the rate of an L2 one (the loads themselves bring lines to L1). */
    const int64_t ahead = 8 * K <= 32768 ? 4 * K : 1024;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const uint16_t *w0 = W + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            __m512 xe = _mm512_loadu_ps(xeo + k), xo = _mm512_loadu_ps(xeo + k + 16);
            _mm_prefetch((const char *)(w0 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w1 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w2 + k + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(w3 + k + ahead), _MM_HINT_T1);
            __m512i v0 = _mm512_loadu_si512((const void *)(w0 + k));
            __m512i v1 = _mm512_loadu_si512((const void *)(w1 + k));
            __m512i v2 = _mm512_loadu_si512((const void *)(w2 + k));
            __m512i v3 = _mm512_loadu_si512((const void *)(w3 + k));
            a0 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), a0);
            b0 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)), b0);
            a1 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)), a1);
            b1 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v1, hi_mask)), b1);
            a2 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v2, 16)), a2);
            b2 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v2, hi_mask)), b2);
            a3 = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v3, 16)), a3);
            b3 = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v3, hi_mask)), b3);
        }
        float r[4] = {_mm512_reduce_add_ps(_mm512_add_ps(a0, b0)), _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)), _mm512_reduce_add_ps(_mm512_add_ps(a3, b3))};
        const uint16_t *ws[4] = {w0, w1, w2, w3};
        for (int j = 0; j < 4; j++) {
            /* tail: xeo holds the plain x there (see ck_split_even_odd) */
            for (int64_t k = K32; k < K; k++) r[j] += xeo[k] * ck_bf16_value(ws[j][k]);
            y[n + j] = r[j] + (bias ? bias[n + j] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const uint16_t *w0 = W + n * K;
        __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            __m512i v0 = _mm512_loadu_si512((const void *)(w0 + k));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(xeo + k), _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), a0);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(xeo + k + 16), _mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)), b0);
        }
        float r = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        for (int64_t k = K32; k < K; k++) r += xeo[k] * ck_bf16_value(w0[k]);
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

/* gemv_bf16_avx512 for M inputs (decode of M sequences at once, input m at xeo + m·ldx): per
 * weight row and input the same two chains (even and odd elements) over the same 32-chunks, the
 * same reduction and tail as the one-input kernel, whose result for a row does not depend on
 * whether it runs in a pass of four, so every row of y is its bit for bit; but each weight row is
 * read and widened once for several inputs.
 *
 * The inputs' loads are M times the weights', so they had better come from L1: the inputs go in
 * chunks of at most BF16_L1_BYTES of floats (where not even two fit, they come from L2 whatever
 * the chunk, and the largest chunk reads the weights fewest times), over a block of BF16_NB rows
 * at a time, so that the chunks after the first find the block's weights in L2. Two weight rows
 * per pass share each input load; with at most BF16_ROWS_MAX inputs per chunk their 4·M
 * accumulators and four widened vectors stay in registers. R and M are compile-time constants in
 * each specialisation. */
#define BF16_ROWS_MAX 4
#define BF16_L1_BYTES (24 << 10)
#define BF16_NB 16
AVX512 static inline __attribute__((always_inline)) void
gemv_bf16_batch(const float *xeo, const int M, const int R, int64_t K, int64_t ldx, const uint16_t *W,
                const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
    const int64_t K32 = K & ~(int64_t)31;
    /* the rows two passes on at the same place: the prefetches follow the stream */
    const int64_t ahead = 2 * R * K;
    for (int64_t n = n0; n < n1; n += R) {
        const int nr = n1 - n < R ? 1 : R;
        const uint16_t *w[2] = {W + n * K, W + (n + nr - 1) * K};
        __m512 a[2][BF16_ROWS_MAX], b[2][BF16_ROWS_MAX];
        for (int i = 0; i < R; i++)
            for (int m = 0; m < M; m++) a[i][m] = b[i][m] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K32; k += 32) {
            __m512 we[2], wo[2];
            for (int i = 0; i < R; i++) {
                _mm_prefetch((const char *)(w[i] + k + ahead), _MM_HINT_T1);
                __m512i v = _mm512_loadu_si512((const void *)(w[i] + k));
                we[i] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                wo[i] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
            }
            for (int m = 0; m < M; m++) {
                const __m512 xe = _mm512_loadu_ps(xeo + m * ldx + k), xo = _mm512_loadu_ps(xeo + m * ldx + k + 16);
                for (int i = 0; i < R; i++) {
                    a[i][m] = _mm512_fmadd_ps(xe, we[i], a[i][m]);
                    b[i][m] = _mm512_fmadd_ps(xo, wo[i], b[i][m]);
                }
            }
        }
        for (int i = 0; i < nr; i++)
            for (int m = 0; m < M; m++) {
                const float *x = xeo + m * ldx;
                float r = _mm512_reduce_add_ps(_mm512_add_ps(a[i][m], b[i][m]));
                /* tail: xeo holds the plain x there (see ck_split_even_odd) */
                for (int64_t k = K32; k < K; k++) r += x[k] * ck_bf16_value(w[i][k]);
                y[m * ldy + n + i] = r + (bias ? bias[n + i] : 0.0f);
            }
    }
}

#define BF16_CASE(M) \
    case M: gemv_bf16_batch(x, M, 2, K, ldx, W, bias, ym, ldy, nb, ne); break;
AVX512 static void gemv_bf16_rows_avx512(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W,
                                         const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    int64_t chunk = BF16_L1_BYTES / (4 * K);
    chunk = chunk < 2 || chunk > BF16_ROWS_MAX ? BF16_ROWS_MAX : chunk;
    for (int64_t nb = n0; nb < n1; nb += BF16_NB) {
        const int64_t ne = n1 - nb < BF16_NB ? n1 : nb + BF16_NB;
        for (int64_t m = 0; m < M; m += chunk) {
            const float *x = xeo + m * ldx;
            float *ym = y + m * ldy;
            switch (M - m < chunk ? M - m : chunk) { BF16_CASE(1) BF16_CASE(2) BF16_CASE(3) default: BF16_CASE(4) }
        }
    }
}
#undef BF16_CASE

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

/* bf16 weights, many input rows (prefill): x rounded to bf16 once, 4×4 tiles of
 * _mm512_dpbf16_ps dot products (32 MACs each), M blocked so the x block stays in L2. */
AVX512BF16 static void gemm_bf16_avx512bf16(const uint16_t *xb, int64_t M, int64_t K, const void *Wv,
                                    const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    const uint16_t *W = (const uint16_t *)Wv;
    /* K is padded to a multiple of 32 in xb (zeros); W rows are read with a masked tail. */
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    int64_t mblock = (512 * 1024) / (Kp * 2);
    mblock = mblock < 4 ? 4 : (mblock > 64 ? 64 : mblock & ~(int64_t)3);
    const int64_t K32 = K & ~(int64_t)31;
    const __mmask32 tail = (__mmask32)((K - K32) == 0 ? 0 : ((1ull << (K - K32)) - 1));
    for (int64_t mb = 0; mb < M; mb += mblock) {
        int64_t me = mb + mblock < M ? mb + mblock : M;
        for (int64_t n = n0; n < n1; n += 4) {
            int64_t nrows = n1 - n < 4 ? n1 - n : 4;
            const uint16_t *wr[4];
            for (int j = 0; j < 4; j++) wr[j] = W + (n + (j < nrows ? j : 0)) * K;
            for (int64_t m = mb; m < me; m += 4) {
                int64_t mrows = me - m < 4 ? me - m : 4;
                const uint16_t *xr[4];
                for (int i = 0; i < 4; i++) xr[i] = xb + (m + (i < mrows ? i : 0)) * Kp;
                __m512 acc[4][4];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
                for (int64_t k = 0; k < K32; k += 32) {
                    __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(wr[0] + k));
                    __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(wr[1] + k));
                    __m512bh w2 = (__m512bh)_mm512_loadu_si512((const void *)(wr[2] + k));
                    __m512bh w3 = (__m512bh)_mm512_loadu_si512((const void *)(wr[3] + k));
                    for (int i = 0; i < 4; i++) {
                        __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xr[i] + k));
                        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, w0);
                        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, w1);
                        acc[i][2] = _mm512_dpbf16_ps(acc[i][2], xv, w2);
                        acc[i][3] = _mm512_dpbf16_ps(acc[i][3], xv, w3);
                    }
                }
                if (tail) {
                    __m512bh wv[4];
                    for (int j = 0; j < 4; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(tail, wr[j] + K32);
                    for (int i = 0; i < 4; i++) {
                        __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xr[i] + K32));
                        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
                    }
                }
                for (int64_t i = 0; i < mrows; i++)
                    for (int64_t j = 0; j < nrows; j++)
                        y[(m + i) * ldy + n + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
            }
        }
    }
}

/* float32 GEMM in the broadcast form (the classic BLIS micro-kernel): weights of a 32-row panel
 * are widened to float32 and packed as [k][32]; a 12-row × 32-column tile of y accumulates in
 * 24 registers, each step loading two weight vectors and broadcasting one input per row.
 * Exact float32 products; on CPUs whose FMA units outrun their bf16 dot products it is also the
 * faster path. K is blocked by 4096: the packed chunk (up to 512 KB) streams from L2 at two
 * vectors per 24 FMAs, and each tile's accumulators are stored and reloaded once per block.
 * Measured on a Xeon (AVX-512), one thread: blocks of 256 (chunk in L1) ran at 69–72% of the FMA
 * peak on 266×2304 and 266×9216 inputs, blocks of 4096 at 80–88%. Sums keep their order either way. */
#define F32_ROWS 12
#define F32_KC 4096
AVX512 static void gemm_f32_packed_core(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                   const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                   int64_t n0, int64_t n1, float *pack, float *row) {
    for (int64_t n = n0; n < n1; n += 32) {
        int64_t nc = n1 - n < 32 ? n1 - n : 32;
        const void *src = W;
        int src_format = format;
        int64_t src_n = n;
        if (format == CK_Q8 || format == CK_Q4) {
            /* Dequantize the panel's rows to float32 first (contiguous), then gather-pack them. */
            for (int64_t j = 0; j < nc; j++) ck_convert_row_q(W, scales, format, K, n + j, row + j * K);
            src = row;
            src_format = CK_F32;
            src_n = 0;
        }
        if ((src_format == CK_BF16 && K % 2 == 0) || src_format == CK_F32) {
            /* Gather 16 rows' elements per instruction: for bf16 a 32-bit word holds inputs k and
             * k+1 of one row, split by shift and mask; rows past nc repeat the last one. */
            for (int h = 0; h < 2; h++) {
                int idx[16];
                for (int j = 0; j < 16; j++) {
                    int64_t row_j = h * 16 + j < nc ? h * 16 + j : nc - 1;
                    idx[j] = (int)(row_j * (src_format == CK_BF16 ? K / 2 : K));
                }
                __m512i vi = _mm512_loadu_si512((const void *)idx);
                if (src_format == CK_BF16) {
                    const int *base = (const int *)((const uint16_t *)src + src_n * K);
                    for (int64_t k2 = 0; k2 < K / 2; k2++) {
                        __m512i g = _mm512_i32gather_epi32(_mm512_add_epi32(vi, _mm512_set1_epi32((int)k2)), base, 4);
                        _mm512_storeu_ps(pack + (2 * k2) * 32 + h * 16, _mm512_castsi512_ps(_mm512_slli_epi32(g, 16)));
                        _mm512_storeu_ps(pack + (2 * k2 + 1) * 32 + h * 16,
                                         _mm512_castsi512_ps(_mm512_and_si512(g, _mm512_set1_epi32((int)0xFFFF0000u))));
                    }
                } else {
                    const float *base = (const float *)src + src_n * K;
                    for (int64_t k = 0; k < K; k++)
                        _mm512_storeu_ps(pack + k * 32 + h * 16,
                                         _mm512_i32gather_ps(_mm512_add_epi32(vi, _mm512_set1_epi32((int)k)), base, 4));
                }
            }
        } else {
            for (int64_t j = 0; j < 32; j++) {
                if (j < nc) {
                    if (format == CK_Q8 || format == CK_Q4) ck_convert_row_q(W, scales, format, K, n + j, row);
                    else ck_convert_row(W, format, K, n + j, row);
                    for (int64_t k = 0; k < K; k++) pack[k * 32 + j] = row[k];
                } else {
                    for (int64_t k = 0; k < K; k++) pack[k * 32 + j] = 0;
                }
            }
        }
        __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
        __mmask16 m1 = nc <= 16 ? 0 : (nc >= 32 ? 0xFFFF : (__mmask16)((1u << (nc - 16)) - 1));
        for (int64_t kb = 0; kb < K; kb += F32_KC) {
            int64_t ke = kb + F32_KC < K ? kb + F32_KC : K;
            int last = ke == K;
            for (int64_t m = 0; m < M; m += F32_ROWS) {
                int64_t rows = M - m < F32_ROWS ? M - m : F32_ROWS;
                const float *xr[F32_ROWS];
                float *yr[F32_ROWS];
                for (int r = 0; r < F32_ROWS; r++) {
                    int64_t rr = m + (r < rows ? r : 0);
                    xr[r] = x + rr * ldx;
                    yr[r] = y + rr * ldy + n;
                }
                __m512 a0[F32_ROWS], a1[F32_ROWS];
                for (int r = 0; r < F32_ROWS; r++) {
                    if (kb == 0) {
                        a0[r] = _mm512_setzero_ps();
                        a1[r] = _mm512_setzero_ps();
                    } else {
                        a0[r] = _mm512_maskz_loadu_ps(m0, yr[r]);
                        a1[r] = _mm512_maskz_loadu_ps(m1, yr[r] + 16);
                    }
                }
                for (int64_t k = kb; k < ke; k++) {
                    __m512 w0 = _mm512_loadu_ps(pack + k * 32), w1 = _mm512_loadu_ps(pack + k * 32 + 16);
                    for (int r = 0; r < F32_ROWS; r++) {
                        __m512 xv = _mm512_set1_ps(xr[r][k]);
                        a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
                        a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
                    }
                }
                __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
                if (last && bias) {
                    b0 = _mm512_maskz_loadu_ps(m0, bias + n);
                    b1 = _mm512_maskz_loadu_ps(m1, bias + n + 16);
                }
                for (int r = 0; r < rows; r++) {
                    _mm512_mask_storeu_ps(yr[r], m0, _mm512_add_ps(a0[r], b0));
                    _mm512_mask_storeu_ps(yr[r] + 16, m1, _mm512_add_ps(a1[r], b1));
                }
            }
        }
    }
}

AVX512BF16 static void to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    for (int64_t m = 0; m < M; m++) {
        const float *src = x + m * ldx;
        uint16_t *dst = out + m * Kp;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16)
            _mm256_storeu_si256((__m256i *)(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
        for (; k < Kp; k++) {
            if (k < K) {
                uint32_t u;
                memcpy(&u, src + k, 4);
                u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even */
                dst[k] = (uint16_t)(u >> 16);
            } else {
                dst[k] = 0;
            }
        }
    }
}

/* Quantized GEMV: scales are widened 16 at a time (F16C) into a small buffer, then each group's
 * partial dot product is scaled once. Two rows per pass share the x loads. */
AVX512 static void gemv_q_avx512(const float *x, int64_t K, const void *W, const uint16_t *scales, int format,
                                 const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP;
    const __m512i low4 = _mm512_set1_epi32(0xF), eight = _mm512_set1_epi32(8);
    float sf[2][16];
    for (int64_t n = n0; n < n1; n += 2) {
        int two = n + 1 < n1;
        __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t g0 = 0; g0 < G; g0 += 16) {
            int64_t gn = G - g0 < 16 ? G - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            for (int r = 0; r <= two; r++)
                _mm512_storeu_ps(sf[r], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, scales + (n + r) * G + g0)));
            for (int64_t g = g0; g < g0 + gn; g++) {
                __m512 xa = _mm512_loadu_ps(x + g * 32), xb2 = _mm512_loadu_ps(x + g * 32 + 16);
                for (int r = 0; r <= two; r++) {
                    __m512 a, b;
                    if (format == CK_Q8) {
                        const int8_t *q = (const int8_t *)W + (n + r) * K + g * 32;
                        a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
                        b = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 16))));
                    } else {
                        const uint8_t *q = (const uint8_t *)W + (n + r) * (K / 2) + g * 16;
                        __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
                        a = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(bytes, low4), eight));
                        b = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bytes, 4), eight));
                    }
                    __m512 part = _mm512_fmadd_ps(a, xa, _mm512_mul_ps(b, xb2));
                    acc[r] = _mm512_fmadd_ps(part, _mm512_set1_ps(sf[r][g - g0]), acc[r]);
                }
            }
        }
        for (int r = 0; r <= two; r++) y[n + r] = _mm512_reduce_add_ps(acc[r]) + (bias ? bias[n + r] : 0.0f);
    }
}

#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

/* Integer GEMV for quantized weights (decode). The input row was quantized once per call by
 * ck_quantize_input: per group of 32, xs = max|x|/127 and xq = round(x/xs) in int8, kept as |xq|
 * (u8) plus a sign mask, and as the sum of each 4 consecutive xq. vpdpbusd then multiplies
 * u8 × s8 in groups of 4:
 *   q8: weights s8 with the sign of x applied → Σ|xq|·sign(xq)·w = Σ xq·w;
 *   q4: nibbles (0…15) as u8 against xq as s8 → Σ nib·xq, minus 8·Σxq for the −8 offset.
 * 64 inputs (two groups) per step: lanes 0–7 hold group g, lanes 8–15 group g+1, each scaled by
 * its weight scale × input scale. */
AVX512VNNI static void gemv_q_vnni(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales,
                                   int format, const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G2 = G & ~(int64_t)1;
    const __m256i nib = _mm256_set1_epi8(0x0F);
    float cs[16];
    for (int64_t n = n0; n < n1; n++) {
        __m512 acc = _mm512_setzero_ps();
        const uint16_t *sc = scales + n * G;
        for (int64_t g0 = 0; g0 < G2; g0 += 16) {
            int64_t gn = G2 - g0 < 16 ? G2 - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            __m512 ws = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc + g0));
            _mm512_storeu_ps(cs, _mm512_mul_ps(ws, _mm512_maskz_loadu_ps(gm, in->scale + g0)));
            /* Rows are short and contiguous: prefetch a few KB ahead in the weight stream (and the
             * scales) so each next row is already on its way. */
            const char *ahead = format == CK_Q8 ? (const char *)W + n * K + g0 * 32 + 4096
                                                : (const char *)W + n * (K / 2) + g0 * 16 + 4096;
            for (int i = 0; i < 8; i++) _mm_prefetch(ahead + 64 * i, _MM_HINT_T0);
            _mm_prefetch((const char *)(sc + g0) + 512, _MM_HINT_T0);
            for (int64_t g = g0; g < g0 + gn; g += 2) {
                __m512i d;
                if (format == CK_Q8) {
                    __m512i w = _mm512_loadu_si512((const void *)((const int8_t *)W + n * K + g * 32));
                    __mmask64 neg = in->negative[g / 2];
                    w = _mm512_mask_sub_epi8(w, neg, _mm512_setzero_si512(), w);
                    d = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                            _mm512_loadu_si512((const void *)(in->magnitude + g * 32)), w);
                } else {
                    __m256i v = _mm256_loadu_si256((const __m256i *)((const uint8_t *)W + n * (K / 2) + g * 16));
                    __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
                    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                    z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));  /* lo.g, hi.g, lo.g+1, hi.g+1 */
                    d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z,
                                            _mm512_loadu_si512((const void *)(in->value + g * 32)));
                    __m512i ls = _mm512_loadu_si512((const void *)(in->sum4 + g * 8));
                    d = _mm512_sub_epi32(d, _mm512_slli_epi32(ls, 3));
                }
                __m512 sv = _mm512_insertf32x8(_mm512_set1_ps(cs[g - g0]), _mm256_set1_ps(cs[g - g0 + 1]), 1);
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, acc);
            }
        }
        float r = _mm512_reduce_add_ps(acc);
        if (G2 < G) r += ck_q_group_dot(in, W, format, K, n, G2, ck_f16_value(sc[G2]));  /* an odd last group */
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

/* 8-bit weights, two rows at a time, two groups (one 64-byte load per row) per step. The sign
 * of x moves onto the weights (one masked subtract), so vpdpbusd takes |xq| as its unsigned
 * operand and leaves group g's sum in lanes 0–7 and group g+1's in lanes 8–15; one permute per
 * step spreads the pair's scales over those lanes. Two rows interleaved keep two weight streams
 * in flight and share each input load; the next pair of rows is prefetched at the same place. */
AVX512VNNI static void gemv_q8_vnni(const ck_qinput *in, int64_t K, const int8_t *W, const uint16_t *scales,
                                    const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G2 = G & ~(int64_t)1;
    const int64_t pf = 2 * K > 4096 ? 2 * K : 4096;
    __m512i spread[8];  /* spread[j]: lanes 0–7 take group 2j of a block of 16, lanes 8–15 group 2j+1 */
    for (int j = 0; j < 8; j++)
        spread[j] = _mm512_set_epi32(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
                                     2 * j + 1, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j);
    const __m512i zero = _mm512_setzero_si512();
    int64_t n = n0;
    for (; n + 1 < n1; n += 2) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        const int8_t *w0 = W + n * K, *w1 = w0 + K;
        const uint16_t *sc0 = scales + n * G, *sc1 = sc0 + G;
        for (int64_t g0 = 0; g0 < G2; g0 += 16) {
            int64_t gn = G2 - g0 < 16 ? G2 - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            __m512 xsv = _mm512_maskz_loadu_ps(gm, in->scale + g0);
            __m512 cs0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc0 + g0)), xsv);
            __m512 cs1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc1 + g0)), xsv);
            /* 16 groups of a row are 512 bytes: keep the next pair's lines on their way */
            for (int i = 0; i < 8; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 32) + pf + 64 * i, _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + g0 * 32) + pf + 64 * i, _MM_HINT_T1);
            }
            for (int64_t j = 0; j < gn / 2; j++) {
                int64_t g = g0 + 2 * j;
                __m512i mag = _mm512_loadu_si512((const void *)(in->magnitude + g * 32));
                __mmask64 neg = in->negative[g / 2];
                __m512i v0 = _mm512_loadu_si512((const void *)(w0 + g * 32));
                __m512i v1 = _mm512_loadu_si512((const void *)(w1 + g * 32));
                __m512i d0 = _mm512_dpbusd_epi32(zero, mag, _mm512_mask_sub_epi8(v0, neg, zero, v0));
                __m512i d1 = _mm512_dpbusd_epi32(zero, mag, _mm512_mask_sub_epi8(v1, neg, zero, v1));
                acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(spread[j], cs0), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(spread[j], cs1), acc1);
            }
        }
        float r0 = _mm512_reduce_add_ps(acc0), r1 = _mm512_reduce_add_ps(acc1);
        if (G2 < G) {  /* an odd last group in scalar code */
            r0 += ck_q_group_dot(in, W, CK_Q8, K, n, G2, ck_f16_value(sc0[G2]));
            r1 += ck_q_group_dot(in, W, CK_Q8, K, n + 1, G2, ck_f16_value(sc1[G2]));
        }
        y[n] = r0 + (bias ? bias[n] : 0.0f);
        y[n + 1] = r1 + (bias ? bias[n + 1] : 0.0f);
    }
    if (n < n1) gemv_q_vnni(in, K, W, scales, CK_Q8, bias, y, n, n1);
}

/* 4-bit weights, two rows at a time, four groups (128 weights, one 64-byte load per row) per
 * step. The low nibbles of the four groups' 64 bytes are their elements 0–15 and the high
 * nibbles their elements 16–31, so one shift and two masks unpack them, and two vpdpbusd against
 * the input reordered to match (ck_quantize_input: [g 0–15 | g+1 0–15 | g+2 0–15 | g+3 0–15]
 * then the same for elements 16–31) leave group g+q's sum in lanes 4q…4q+3. The sums start from
 * −8·Σx (the nibbles' offset), and one permute spreads the four groups' scales over their lanes. */
AVX512VNNI static void gemv_q4_vnni(const ck_qinput *in, int64_t K, const uint8_t *W, const uint16_t *scales,
                                    const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const __m512i nib = _mm512_set1_epi8(0x0F);
    /* Prefetch the rows two pairs on at the same place (a pair is K bytes), at least 8 KB ahead,
     * into L2 (see gemv_bf16_avx512): 4-bit rows pass quickly, and one pair (or 4 KB) ahead left
     * the reads arriving late when memory was fast (about a fifth slower on a Zen 4). */
    const int64_t pf = 2 * K > 8192 ? 2 * K : 8192;
    __m512i spread[4];  /* spread[j]: lanes 4q…4q+3 take group 4j+q of a block of 16 */
    for (int j = 0; j < 4; j++)
        spread[j] = _mm512_set_epi32(4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 2, 4 * j + 2, 4 * j + 2,
                                     4 * j + 2, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j, 4 * j, 4 * j, 4 * j);
    int64_t n = n0;
    for (; n + 1 < n1; n += 2) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        const uint8_t *w0 = W + n * (K / 2), *w1 = w0 + K / 2;
        const uint16_t *sc0 = scales + n * G, *sc1 = sc0 + G;
        for (int64_t g0 = 0; g0 < G4; g0 += 16) {
            int64_t gn = G4 - g0 < 16 ? G4 - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            __m512 xsv = _mm512_maskz_loadu_ps(gm, in->scale + g0);
            __m512 cs0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc0 + g0)), xsv);
            __m512 cs1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc1 + g0)), xsv);
            /* 16 groups of a row are 256 bytes: keep the next rows' lines on their way */
            for (int i = 0; i < 4; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 16) + pf + 64 * i, _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + g0 * 16) + pf + 64 * i, _MM_HINT_T1);
            }
            for (int64_t j = 0; j < gn / 4; j++) {
                int64_t g = g0 + 4 * j;
                __m512i xlo = _mm512_loadu_si512((const void *)(in->value_q4 + g * 32));
                __m512i xhi = _mm512_loadu_si512((const void *)(in->value_q4 + g * 32 + 64));
                __m512i off = _mm512_loadu_si512((const void *)(in->offset_q4 + g * 4));
                __m512i v0 = _mm512_loadu_si512((const void *)(w0 + g * 16));
                __m512i v1 = _mm512_loadu_si512((const void *)(w1 + g * 16));
                __m512i d0 = _mm512_dpbusd_epi32(off, _mm512_and_si512(v0, nib), xlo);
                __m512i d1 = _mm512_dpbusd_epi32(off, _mm512_and_si512(v1, nib), xlo);
                d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(_mm512_srli_epi16(v0, 4), nib), xhi);
                d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(_mm512_srli_epi16(v1, 4), nib), xhi);
                acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(spread[j], cs0), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(spread[j], cs1), acc1);
            }
        }
        float r0 = _mm512_reduce_add_ps(acc0), r1 = _mm512_reduce_add_ps(acc1);
        for (int64_t g = G4; g < G; g++) {  /* up to three last groups in scalar code */
            r0 += ck_q_group_dot(in, W, CK_Q4, K, n, g, ck_f16_value(sc0[g]));
            r1 += ck_q_group_dot(in, W, CK_Q4, K, n + 1, g, ck_f16_value(sc1[g]));
        }
        y[n] = r0 + (bias ? bias[n] : 0.0f);
        y[n + 1] = r1 + (bias ? bias[n + 1] : 0.0f);
    }
    if (n < n1) gemv_q_vnni(in, K, W, scales, CK_Q4, bias, y, n, n1);
}

/* gemv_q4_vnni and gemv_q8_vnni for M inputs (decode of M sequences at once): the same pairs of
 * weight rows, groups and instruction order per input as the one-input kernels, so every row of
 * y is theirs bit for bit, but each 64-byte weight load (and the nibble unpacking) serves all M
 * inputs. M is a compile-time constant in each specialisation, so the 2·M accumulators stay in
 * registers. */
#define CK_ROWS_MAX 8
AVX512VNNI static inline __attribute__((always_inline)) void
gemv_q4_rows_body(const ck_qinput *in, const int M, int64_t K, const uint8_t *W, const uint16_t *scales,
                  const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G4 = G & ~(int64_t)3;
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const int64_t pf = 2 * K > 8192 ? 2 * K : 8192;  /* as gemv_q4_vnni */
    __m512i spread[4];
    for (int j = 0; j < 4; j++)
        spread[j] = _mm512_set_epi32(4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 2, 4 * j + 2, 4 * j + 2,
                                     4 * j + 2, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j, 4 * j, 4 * j, 4 * j);
    int64_t n = n0;
    for (; n + 1 < n1; n += 2) {
        __m512 acc0[CK_ROWS_MAX], acc1[CK_ROWS_MAX];
        for (int m = 0; m < M; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
        const uint8_t *w0 = W + n * (K / 2), *w1 = w0 + K / 2;
        const uint16_t *sc0 = scales + n * G, *sc1 = sc0 + G;
        for (int64_t g0 = 0; g0 < G4; g0 += 16) {
            int64_t gn = G4 - g0 < 16 ? G4 - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            __m512 ws0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc0 + g0));
            __m512 ws1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc1 + g0));
            __m512 cs0[CK_ROWS_MAX], cs1[CK_ROWS_MAX];
            for (int m = 0; m < M; m++) {
                __m512 xsv = _mm512_maskz_loadu_ps(gm, in[m].scale + g0);
                cs0[m] = _mm512_mul_ps(ws0, xsv);
                cs1[m] = _mm512_mul_ps(ws1, xsv);
            }
            for (int i = 0; i < 4; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 16) + pf + 64 * i, _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + g0 * 16) + pf + 64 * i, _MM_HINT_T1);
            }
            for (int64_t j = 0; j < gn / 4; j++) {
                int64_t g = g0 + 4 * j;
                __m512i v0 = _mm512_loadu_si512((const void *)(w0 + g * 16));
                __m512i v1 = _mm512_loadu_si512((const void *)(w1 + g * 16));
                __m512i lo0 = _mm512_and_si512(v0, nib), lo1 = _mm512_and_si512(v1, nib);
                __m512i hi0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), nib);
                __m512i hi1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), nib);
                for (int m = 0; m < M; m++) {
                    __m512i xlo = _mm512_loadu_si512((const void *)(in[m].value_q4 + g * 32));
                    __m512i xhi = _mm512_loadu_si512((const void *)(in[m].value_q4 + g * 32 + 64));
                    __m512i off = _mm512_loadu_si512((const void *)(in[m].offset_q4 + g * 4));
                    __m512i d0 = _mm512_dpbusd_epi32(off, lo0, xlo);
                    __m512i d1 = _mm512_dpbusd_epi32(off, lo1, xlo);
                    d0 = _mm512_dpbusd_epi32(d0, hi0, xhi);
                    d1 = _mm512_dpbusd_epi32(d1, hi1, xhi);
                    acc0[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(spread[j], cs0[m]), acc0[m]);
                    acc1[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(spread[j], cs1[m]), acc1[m]);
                }
            }
        }
        for (int m = 0; m < M; m++) {
            float r0 = _mm512_reduce_add_ps(acc0[m]), r1 = _mm512_reduce_add_ps(acc1[m]);
            for (int64_t g = G4; g < G; g++) {
                r0 += ck_q_group_dot(&in[m], W, CK_Q4, K, n, g, ck_f16_value(sc0[g]));
                r1 += ck_q_group_dot(&in[m], W, CK_Q4, K, n + 1, g, ck_f16_value(sc1[g]));
            }
            y[m * ldy + n] = r0 + (bias ? bias[n] : 0.0f);
            y[m * ldy + n + 1] = r1 + (bias ? bias[n + 1] : 0.0f);
        }
    }
    if (n < n1)
        for (int m = 0; m < M; m++) gemv_q_vnni(&in[m], K, W, scales, CK_Q4, bias, y + m * ldy, n, n1);
}

AVX512VNNI static inline __attribute__((always_inline)) void
gemv_q8_rows_body(const ck_qinput *in, const int M, int64_t K, const int8_t *W, const uint16_t *scales,
                  const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP, G2 = G & ~(int64_t)1;
    const int64_t pf = 2 * K > 4096 ? 2 * K : 4096;
    __m512i spread[8];
    for (int j = 0; j < 8; j++)
        spread[j] = _mm512_set_epi32(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
                                     2 * j + 1, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j);
    const __m512i zero = _mm512_setzero_si512();
    int64_t n = n0;
    for (; n + 1 < n1; n += 2) {
        __m512 acc0[CK_ROWS_MAX], acc1[CK_ROWS_MAX];
        for (int m = 0; m < M; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
        const int8_t *w0 = W + n * K, *w1 = w0 + K;
        const uint16_t *sc0 = scales + n * G, *sc1 = sc0 + G;
        for (int64_t g0 = 0; g0 < G2; g0 += 16) {
            int64_t gn = G2 - g0 < 16 ? G2 - g0 : 16;
            __mmask16 gm = (__mmask16)((1u << gn) - 1);
            __m512 ws0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc0 + g0));
            __m512 ws1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, sc1 + g0));
            __m512 cs0[CK_ROWS_MAX], cs1[CK_ROWS_MAX];
            for (int m = 0; m < M; m++) {
                __m512 xsv = _mm512_maskz_loadu_ps(gm, in[m].scale + g0);
                cs0[m] = _mm512_mul_ps(ws0, xsv);
                cs1[m] = _mm512_mul_ps(ws1, xsv);
            }
            for (int i = 0; i < 8; i++) {
                _mm_prefetch((const char *)(w0 + g0 * 32) + pf + 64 * i, _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + g0 * 32) + pf + 64 * i, _MM_HINT_T1);
            }
            for (int64_t j = 0; j < gn / 2; j++) {
                int64_t g = g0 + 2 * j;
                __m512i v0 = _mm512_loadu_si512((const void *)(w0 + g * 32));
                __m512i v1 = _mm512_loadu_si512((const void *)(w1 + g * 32));
                for (int m = 0; m < M; m++) {
                    __m512i mag = _mm512_loadu_si512((const void *)(in[m].magnitude + g * 32));
                    __mmask64 neg = in[m].negative[g / 2];
                    __m512i d0 = _mm512_dpbusd_epi32(zero, mag, _mm512_mask_sub_epi8(v0, neg, zero, v0));
                    __m512i d1 = _mm512_dpbusd_epi32(zero, mag, _mm512_mask_sub_epi8(v1, neg, zero, v1));
                    acc0[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(spread[j], cs0[m]), acc0[m]);
                    acc1[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(spread[j], cs1[m]), acc1[m]);
                }
            }
        }
        for (int m = 0; m < M; m++) {
            float r0 = _mm512_reduce_add_ps(acc0[m]), r1 = _mm512_reduce_add_ps(acc1[m]);
            if (G2 < G) {
                r0 += ck_q_group_dot(&in[m], W, CK_Q8, K, n, G2, ck_f16_value(sc0[G2]));
                r1 += ck_q_group_dot(&in[m], W, CK_Q8, K, n + 1, G2, ck_f16_value(sc1[G2]));
            }
            y[m * ldy + n] = r0 + (bias ? bias[n] : 0.0f);
            y[m * ldy + n + 1] = r1 + (bias ? bias[n + 1] : 0.0f);
        }
    }
    if (n < n1)
        for (int m = 0; m < M; m++) gemv_q_vnni(&in[m], K, W, scales, CK_Q8, bias, y + m * ldy, n, n1);
}

#define CK_ROWS_CASE(body, T, k) \
    case k: body(in, k, K, (const T *)W, scales, bias, y, ldy, n0, n1); break;
AVX512VNNI static void gemv_q_int8_rows_vnni(const ck_qinput *in, int64_t M, int64_t K, const void *W,
                                             const uint16_t *scales, int format, const float *bias, float *y,
                                             int64_t ldy, int64_t n0, int64_t n1) {
    for (; M > 0; M -= CK_ROWS_MAX, in += CK_ROWS_MAX, y += CK_ROWS_MAX * ldy) {
        const int64_t m = M < CK_ROWS_MAX ? M : CK_ROWS_MAX;
        if (format == CK_Q4) {
            switch (m) {
                CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 1) CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 2)
                CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 3) CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 4)
                CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 5) CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 6)
                CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 7) CK_ROWS_CASE(gemv_q4_rows_body, uint8_t, 8)
            }
        } else {
            switch (m) {
                CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 1) CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 2)
                CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 3) CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 4)
                CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 5) CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 6)
                CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 7) CK_ROWS_CASE(gemv_q8_rows_body, int8_t, 8)
            }
        }
    }
}

/* exp(x) for float32 lanes: 2^n · p(r) with x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial
 * (relative error about 2e-7, below float32's rounding of the reference's own exp). */
AVX512 static inline __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* tanh(u) = sign(u)·(1 − 2/(exp(2|u|) + 1)); for tiny |u| the series u − u³/3 avoids cancellation. */
AVX512 static inline __m512 tanh_avx512(__m512 u) {
    __m512 a = _mm512_abs_ps(u);
    __m512 e = exp_avx512(_mm512_add_ps(a, a));
    __m512 t = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    __m512 u2 = _mm512_mul_ps(a, a);
    __m512 small = _mm512_fnmadd_ps(_mm512_mul_ps(u2, a), _mm512_set1_ps(1.0f / 3), a);
    t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(0.004f), _CMP_LT_OQ), t, small);
    /* copy the sign of u */
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t),
        _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32((int)0x80000000u))));
}

AVX512 static void gelu_tanh_avx512(const float *a, const float *b, float *out, int64_t n) {
    const __m512 c = _mm512_set1_ps(0.7978845608028654f), k = _mm512_set1_ps(0.044715f), half = _mm512_set1_ps(0.5f);
    int64_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(m, a + i);
        __m512 inner = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, x), _mm512_mul_ps(x, x), x));
        __m512 g = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(_mm512_set1_ps(1.0f), tanh_avx512(inner)));
        if (b) g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(out + i, m, g);
    }
}

/* Σ exp(x[i] − shift), writing each term to out when out is not NULL (out may be x). */
AVX512 static float exp_shift_avx512(const float *x, float *out, int64_t n, float shift) {
    __m512 sum = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh));
        e = _mm512_maskz_mov_ps(m, e);
        if (out) _mm512_mask_storeu_ps(out + i, m, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

/* The largest value (NaNs skipped: vmaxps returns its second operand when either is NaN). */
AVX512 static float max_avx512(const float *x, int64_t n) {
    __m512 best = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i);
        best = _mm512_max_ps(v, best);
    }
    return _mm512_reduce_max_ps(best);
}

AVX512 static void softcap_avx512(float *x, int64_t n, float cap) {
    const __m512 c = _mm512_set1_ps(cap), inv = _mm512_set1_ps(1.0f / cap);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(c, tanh_avx512(_mm512_mul_ps(v, inv))));
    }
}

/* ck_quantize_input's per-group part in vector code, bit for bit the same: the same float32
 * products rounded to nearest-even (the default MXCSR mode, as nearbyintf), clamped, narrowed. */
AVX512 static void quantize_groups_avx512(const float *x, int64_t G, ck_qinput *out) {
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    for (int64_t g = 0; g < G; g++) {
        __m512 a = _mm512_loadu_ps(x + g * 32), b = _mm512_loadu_ps(x + g * 32 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
        out->scale[g] = s;
        __m512 vinv = _mm512_set1_ps(inv);
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vinv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, vinv));
        qa = _mm512_max_epi32(_mm512_min_epi32(qa, lim), nlim);
        qb = _mm512_max_epi32(_mm512_min_epi32(qb, lim), nlim);
        __m128i va = _mm512_cvtepi32_epi8(qa), vb = _mm512_cvtepi32_epi8(qb);
        _mm_storeu_si128((__m128i *)(out->value + g * 32), va);
        _mm_storeu_si128((__m128i *)(out->value + g * 32 + 16), vb);
        _mm_storeu_si128((__m128i *)(out->magnitude + g * 32), _mm_abs_epi8(va));
        _mm_storeu_si128((__m128i *)(out->magnitude + g * 32 + 16), _mm_abs_epi8(vb));
        uint64_t neg = (uint64_t)(uint32_t)_mm_movemask_epi8(va) | ((uint64_t)(uint32_t)_mm_movemask_epi8(vb) << 16);
        if (g % 2 == 0) out->negative[g / 2] = neg; else out->negative[g / 2] |= neg << 32;
        /* sums of 4 consecutive values: lanes 4i..4i+3 of qa (i < 4), then of qb */
        int32_t q[32];
        _mm512_storeu_si512((void *)q, qa);
        _mm512_storeu_si512((void *)(q + 16), qb);
        for (int i = 0; i < 8; i++) out->sum4[g * 8 + i] = q[4 * i] + q[4 * i + 1] + q[4 * i + 2] + q[4 * i + 3];
    }
}

AVX512 static void axpy_avx512(float a, const float *x, float *y, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(y + k, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + k), _mm512_loadu_ps(y + k)));
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(y + k, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, y + k)));
    }
}

AVX512 static void scale_avx512(float a, float *y, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) _mm512_storeu_ps(y + k, _mm512_mul_ps(av, _mm512_loadu_ps(y + k)));
    for (; k < n; k++) y[k] *= a;
}

AVX512 static float read_all_avx512(const float *p, int64_t n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(p + i));
        b = _mm512_add_ps(b, _mm512_loadu_ps(p + i + 16));
        c = _mm512_add_ps(c, _mm512_loadu_ps(p + i + 32));
        d = _mm512_add_ps(d, _mm512_loadu_ps(p + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
    for (; i < n; i++) s += p[i];
    return s;
}

/* Four dot products sharing the loads of b: out[r] = a_r · b. */
AVX512 static void dot4_avx512(const float *a0, const float *a1, const float *a2, const float *a3, const float *b,
                               int64_t n, float out[4]) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? 0xFFFF : (__mmask16)((1u << (n - k)) - 1);
        __m512 bv = _mm512_maskz_loadu_ps(m, b + k);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a0 + k), bv, s0);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a1 + k), bv, s1);
        s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a2 + k), bv, s2);
        s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a3 + k), bv, s3);
    }
    out[0] = _mm512_reduce_add_ps(s0);
    out[1] = _mm512_reduce_add_ps(s1);
    out[2] = _mm512_reduce_add_ps(s2);
    out[3] = _mm512_reduce_add_ps(s3);
}

/* y_r += p_r · x for four rows, sharing the loads of x; rows with p_r == 0 are skipped. */
AVX512 static void axpy4_avx512(const float p[4], const float *x, float *y0, float *y1, float *y2, float *y3, int64_t n) {
    __m512 p0 = _mm512_set1_ps(p[0]), p1 = _mm512_set1_ps(p[1]), p2 = _mm512_set1_ps(p[2]), p3 = _mm512_set1_ps(p[3]);
    for (int64_t k = 0; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? 0xFFFF : (__mmask16)((1u << (n - k)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
        _mm512_mask_storeu_ps(y0 + k, m, _mm512_fmadd_ps(p0, xv, _mm512_maskz_loadu_ps(m, y0 + k)));
        _mm512_mask_storeu_ps(y1 + k, m, _mm512_fmadd_ps(p1, xv, _mm512_maskz_loadu_ps(m, y1 + k)));
        _mm512_mask_storeu_ps(y2 + k, m, _mm512_fmadd_ps(p2, xv, _mm512_maskz_loadu_ps(m, y2 + k)));
        _mm512_mask_storeu_ps(y3 + k, m, _mm512_fmadd_ps(p3, xv, _mm512_maskz_loadu_ps(m, y3 + k)));
    }
}

/* A block of up to 32 queries as small matrix products with the queries in the lanes (two
 * 16-lane vectors), so nothing is transposed per key tile and the softmax needs no horizontal
 * reductions. Qᵀ (d × 32) is built once per call; per tile of 64 keys:
 *   Sᵀ[j] = scale · Σ_c K[j, c] · Qᵀ[c]        (6 keys × 32 queries register tiles)
 *   mask (key outside lo..<hi → −∞), softcap, running max m, weights Pᵀ[j] = exp(Sᵀ[j] − m)
 *   Oᵀ[c] = Oᵀ[c] · exp(m_old − m) + Σ_j V[j, c] · Pᵀ[j]   (6 features × 32 queries tiles)
 * and Oᵀ is transposed back and divided by the running denominators at the end. */
AVX512 static void attention_block_avx512(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk,
                                          const float *v, int64_t ldv, int64_t d, float scale, float cap,
                                          const int64_t *lo, const int64_t *hi, float *out, int64_t ldo,
                                          float *scratch) {
    enum { TILE = 64, QL = 32 };
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *qt = base;              /* d × 32 */
    float *ot = qt + d * QL;       /* d × 32 running weighted sums */
    float *st = ot + d * QL;       /* TILE × 32 scores, then weights */
    int64_t first = INT64_MAX, last = 0;
    int32_t lo32[QL], hi32[QL];
    for (int64_t i = 0; i < QL; i++) {
        int64_t l = i < nq ? lo[i] : 0, h = i < nq ? hi[i] : 0;
        if (l < h) {
            if (l < first) first = l;
            if (h > last) last = h;
        }
        lo32[i] = (int32_t)l;
        hi32[i] = (int32_t)h;
    }
    for (int64_t c = 0; c < d; c++)
        for (int64_t i = 0; i < QL; i++) qt[c * QL + i] = i < nq ? q[i * ldq + c] * scale : 0.0f;
    memset(ot, 0, (size_t)(d * QL) * sizeof(float));
    const __m512i lo0 = _mm512_loadu_si512(lo32), lo1 = _mm512_loadu_si512(lo32 + 16);
    const __m512i hi0 = _mm512_loadu_si512(hi32), hi1 = _mm512_loadu_si512(hi32 + 16);
    const __m512 vcap = _mm512_set1_ps(cap), vinv = _mm512_set1_ps(cap > 0 ? 1.0f / cap : 0.0f);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = ninf, m1 = ninf, l0 = _mm512_setzero_ps(), l1 = _mm512_setzero_ps();
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        int64_t len = last - t0 < TILE ? last - t0 : TILE;
        /* Sᵀ = K·Qᵀ, six keys at a time */
        for (int64_t j0 = 0; j0 < len; j0 += 6) {
            int nj = len - j0 < 6 ? (int)(len - j0) : 6;
            __m512 a[6][2];
            for (int r = 0; r < 6; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
            const float *kr[6];
            for (int r = 0; r < 6; r++) kr[r] = k + (t0 + j0 + (r < nj ? r : 0)) * ldk;
            for (int64_t c = 0; c < d; c++) {
                __m512 q0 = _mm512_load_ps(qt + c * QL), q1 = _mm512_load_ps(qt + c * QL + 16);
                for (int r = 0; r < 6; r++) {
                    __m512 b = _mm512_set1_ps(kr[r][c]);
                    a[r][0] = _mm512_fmadd_ps(b, q0, a[r][0]);
                    a[r][1] = _mm512_fmadd_ps(b, q1, a[r][1]);
                }
            }
            for (int r = 0; r < nj; r++) {
                _mm512_store_ps(st + (j0 + r) * QL, a[r][0]);
                _mm512_store_ps(st + (j0 + r) * QL + 16, a[r][1]);
            }
        }
        /* mask, softcap, running max */
        __m512 n0 = m0, n1 = m1;
        for (int64_t j = 0; j < len; j++) {
            __m512i pos = _mm512_set1_epi32((int32_t)(t0 + j));
            __mmask16 v0 = _mm512_cmple_epi32_mask(lo0, pos) & _mm512_cmpgt_epi32_mask(hi0, pos);
            __mmask16 v1 = _mm512_cmple_epi32_mask(lo1, pos) & _mm512_cmpgt_epi32_mask(hi1, pos);
            __m512 x0 = _mm512_load_ps(st + j * QL), x1 = _mm512_load_ps(st + j * QL + 16);
            if (cap > 0) {
                x0 = _mm512_mul_ps(vcap, tanh_avx512(_mm512_mul_ps(x0, vinv)));
                x1 = _mm512_mul_ps(vcap, tanh_avx512(_mm512_mul_ps(x1, vinv)));
            }
            x0 = _mm512_mask_mov_ps(ninf, v0, x0);
            x1 = _mm512_mask_mov_ps(ninf, v1, x1);
            _mm512_store_ps(st + j * QL, x0);
            _mm512_store_ps(st + j * QL + 16, x1);
            n0 = _mm512_max_ps(n0, x0);
            n1 = _mm512_max_ps(n1, x1);
        }
        /* rescale what was accumulated under the old maxima (queries with no key yet keep 1) */
        __mmask16 seen0 = _mm512_cmp_ps_mask(n0, ninf, _CMP_NEQ_OQ), seen1 = _mm512_cmp_ps_mask(n1, ninf, _CMP_NEQ_OQ);
        __m512 f0 = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), seen0, exp_avx512(_mm512_sub_ps(m0, n0)));
        __m512 f1 = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), seen1, exp_avx512(_mm512_sub_ps(m1, n1)));
        f0 = _mm512_mask_mov_ps(f0, _mm512_cmp_ps_mask(m0, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        f1 = _mm512_mask_mov_ps(f1, _mm512_cmp_ps_mask(m1, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        m0 = n0;
        m1 = n1;
        l0 = _mm512_mul_ps(l0, f0);
        l1 = _mm512_mul_ps(l1, f1);
        for (int64_t j = 0; j < len; j++) {
            __m512 x0 = _mm512_load_ps(st + j * QL), x1 = _mm512_load_ps(st + j * QL + 16);
            __m512 e0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x0, ninf, _CMP_NEQ_OQ), exp_avx512(_mm512_sub_ps(x0, m0)));
            __m512 e1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x1, ninf, _CMP_NEQ_OQ), exp_avx512(_mm512_sub_ps(x1, m1)));
            _mm512_store_ps(st + j * QL, e0);
            _mm512_store_ps(st + j * QL + 16, e1);
            l0 = _mm512_add_ps(l0, e0);
            l1 = _mm512_add_ps(l1, e1);
        }
        /* Oᵀ = Oᵀ·f + Vᵀ·Pᵀ, six features at a time */
        for (int64_t c0 = 0; c0 < d; c0 += 6) {
            int nc = d - c0 < 6 ? (int)(d - c0) : 6;
            __m512 o[6][2];
            for (int r = 0; r < 6; r++) {
                int64_t c = c0 + (r < nc ? r : 0);
                o[r][0] = _mm512_mul_ps(_mm512_load_ps(ot + c * QL), f0);
                o[r][1] = _mm512_mul_ps(_mm512_load_ps(ot + c * QL + 16), f1);
            }
            for (int64_t j = 0; j < len; j++) {
                __m512 p0 = _mm512_load_ps(st + j * QL), p1 = _mm512_load_ps(st + j * QL + 16);
                const float *vr = v + (t0 + j) * ldv + c0;
                for (int r = 0; r < 6; r++) {
                    __m512 b = _mm512_set1_ps(vr[r < nc ? r : 0]);
                    o[r][0] = _mm512_fmadd_ps(b, p0, o[r][0]);
                    o[r][1] = _mm512_fmadd_ps(b, p1, o[r][1]);
                }
            }
            for (int r = 0; r < nc; r++) {
                _mm512_store_ps(ot + (c0 + r) * QL, o[r][0]);
                _mm512_store_ps(ot + (c0 + r) * QL + 16, o[r][1]);
            }
        }
    }
    float inv[QL];
    _mm512_storeu_ps(inv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(l0, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), l0));
    _mm512_storeu_ps(inv + 16, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(l1, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), l1));
    for (int64_t i = 0; i < nq; i++)
        for (int64_t c = 0; c < d; c++) out[i * ldo + c] = ot[c * QL + i] * inv[i];
}

/* Up to four queries that share their keys and values (decode: the query heads of one GQA
 * group, or a short block), head dimension ≤ 256. Each key and value row is loaded once for
 * all of them: the traffic that bounds decode at long contexts. Per tile of 64 keys: scores
 * as 16-lane products summed once, per query its valid range (lo..<hi is contiguous), softcap,
 * online softmax, then O += P·V in registers, 64 features at a time. */
AVX512 static void attention_few_queries_avx512(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk,
                                                const float *v, int64_t ldv, int64_t d, float scale, float cap,
                                                const int64_t *lo, const int64_t *hi, float *out, int64_t ldo,
                                                float *scratch) {
    enum { TILE = 64, MAXQ = 4, AHEAD = 12 };
    const int nv = (int)((d + 15) / 16);
    __mmask16 mk[16];
    for (int c = 0; c < 16; c++) {
        int64_t w = d - 16 * c;
        mk[c] = w >= 16 ? 0xFFFF : w <= 0 ? 0 : (__mmask16)((1u << w) - 1);
    }
    float *acc = scratch;             /* nq × d running weighted sums */
    float *s = acc + MAXQ * 256;      /* nq × TILE scores, then weights */
    float m[MAXQ], l[MAXQ];
    int64_t first, last;
    ck_softmax_start(nq, d, lo, hi, acc, m, l, &first, &last);
    for (int64_t t0 = first; t0 < last; t0 += TILE) {
        int64_t len = last - t0 < TILE ? last - t0 : TILE;
        for (int64_t j = 0; j < len; j++) {
            const float *kr = k + (t0 + j) * ldk;
            /* The key and value streams take turns with the arithmetic (and in projections one
             * head's rows are all heads' width apart), which the hardware prefetcher follows
             * poorly: fetch the rows AHEAD keys ahead ourselves, into L2 (L1 prefetches held
             * its miss buffers, and rows 4 KB apart shared its sets) */
            if (t0 + j + AHEAD < last)
                for (int64_t c = 0; c < d; c += 16) _mm_prefetch((const char *)(kr + AHEAD * ldk + c), _MM_HINT_T1);
            __m512 a0[MAXQ], a1[MAXQ];
            for (int r = 0; r < MAXQ; r++) a0[r] = a1[r] = _mm512_setzero_ps();
            for (int c = 0; c < nv; c++) {
                __m512 kv = _mm512_maskz_loadu_ps(mk[c], kr + 16 * c);
                for (int r = 0; r < MAXQ; r++) {
                    if (r >= nq) break;
                    __m512 qv = _mm512_maskz_loadu_ps(mk[c], q + r * ldq + 16 * c);
                    if (c & 1) a1[r] = _mm512_fmadd_ps(qv, kv, a1[r]);
                    else a0[r] = _mm512_fmadd_ps(qv, kv, a0[r]);
                }
            }
            for (int r = 0; r < nq; r++) s[r * TILE + j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r])) * scale;
        }
        for (int64_t r = 0; r < nq; r++) {
            float *sr = s + r * TILE;
            int64_t ra = (lo[r] > t0 ? lo[r] : t0) - t0, rb = (hi[r] < t0 + len ? hi[r] : t0 + len) - t0;
            if (ra >= rb) {
                memset(sr, 0, TILE * sizeof(float));
                continue;
            }
            ck_softmax_tile(sr + ra, rb - ra, cap, &m[r], &l[r], acc + r * d, d);
            for (int64_t j = 0; j < ra; j++) sr[j] = 0;
            for (int64_t j = rb; j < TILE; j++) sr[j] = 0;
        }
        for (int c0 = 0; c0 < nv; c0 += 4) {
            __m512 o[MAXQ][4];
            for (int r = 0; r < MAXQ; r++)
                for (int c = 0; c < 4; c++)
                    o[r][c] = r < nq && c0 + c < nv ? _mm512_maskz_loadu_ps(mk[c0 + c], acc + r * d + 16 * (c0 + c)) : _mm512_setzero_ps();
            for (int64_t j = 0; j < len; j++) {
                const float *vr = v + (t0 + j) * ldv + 16 * c0;
                if (t0 + j + AHEAD < last)
                    for (int c = 0; c < 4; c++) _mm_prefetch((const char *)(vr + AHEAD * ldv + 16 * c), _MM_HINT_T1);
                __m512 vv[4];
                for (int c = 0; c < 4; c++) vv[c] = c0 + c < nv ? _mm512_maskz_loadu_ps(mk[c0 + c], vr + 16 * c) : _mm512_setzero_ps();
                for (int r = 0; r < MAXQ; r++) {
                    if (r >= nq) break;
                    __m512 p = _mm512_set1_ps(s[r * TILE + j]);
                    for (int c = 0; c < 4; c++) o[r][c] = _mm512_fmadd_ps(p, vv[c], o[r][c]);
                }
            }
            for (int r = 0; r < nq; r++)
                for (int c = 0; c < 4; c++)
                    if (c0 + c < nv) _mm512_mask_storeu_ps(acc + r * d + 16 * (c0 + c), mk[c0 + c], o[r][c]);
        }
    }
    ck_softmax_finish(nq, d, acc, l, out, ldo);
}

AVX512 static void quantize_rows_u8_avx512(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t g = 0; g < G; g++) {
            const float *v = x + m * ldx + g * 32;
            /* a short last group reads only its own values; the rest count as 0 */
            const int len = ck_group_length(K, g);
            const __mmask16 ma = (__mmask16)(len >= 16 ? 0xFFFF : (1u << len) - 1);
            const __mmask16 mb = (__mmask16)(len >= 32 ? 0xFFFF : len <= 16 ? 0 : (1u << (len - 16)) - 1);
            __m512 a = _mm512_maskz_loadu_ps(ma, v), b = _mm512_maskz_loadu_ps(mb, v + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
            float inv = amax > 0 ? 127.0f / amax : 0.0f;
            xs[m * G + g] = amax / 127.0f;
            __m512 iv = _mm512_set1_ps(inv);
            /* round to nearest even as nearbyintf does; |x·inv| ≤ 127 by construction */
            __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, iv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, iv));
            const __m512i off = _mm512_set1_epi32(128);
            _mm_storeu_si128((__m128i *)(xq + m * Kp + g * 32), _mm512_cvtepi32_epi8(_mm512_add_epi32(qa, off)));
            _mm_storeu_si128((__m128i *)(xq + m * Kp + g * 32 + 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(qb, off)));
        }
    }
}

#define QG_NR 32 /* output columns per packed panel: two 16-lane vectors */
#define QG_MR 6  /* activation rows per register tile */

/* Packs columns n0 ..< n0+cols (≤ 32, the rest zero) of a quantized matrix for the VNNI tile:
 * per group g and 4-byte chunk c, 32 columns × 4 consecutive s8 weights (128 bytes), then per
 * group the 32 negated compensations −128·Σw (int32; the tile's integer sums start from them)
 * and the 32 weight scales (float).
 * For each group and 4-byte chunk one masked gather collects the chunk of 16 columns (4-bit:
 * then one mask or shift, minus 8), and vpdpbusd against ones sums each column's group for
 * the compensation. */
AVX512VNNI static void pack_q_panel(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n0,
                                           int64_t cols, int8_t *pw, int32_t *comp, float *ws) {
    const int64_t G = ck_groups(K);
    const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
    const __m512i ones = _mm512_set1_epi8(1), nib = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int32_t)rowBytes));
    for (int64_t c0 = 0; c0 < QG_NR; c0 += 16) {
        int64_t live = cols - c0;
        __mmask16 m = (__mmask16)(live >= 16 ? 0xFFFF : live <= 0 ? 0 : (1u << live) - 1);
        const char *base = (const char *)W + (n0 + (live > 0 ? c0 : 0)) * rowBytes;
        for (int64_t g = 0; g < G; g++) {
            __m512i sum = _mm512_setzero_si512();
            for (int c = 0; c < 8; c++) {
                __m512i v;
                if (format == CK_Q8) {
                    /* past K (a short last group; K is a multiple of 4): zeros */
                    __mmask16 mc = g * 32 + c * 4 < K ? m : 0;
                    v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mc, rows, base + g * 32 + c * 4, 1);
                } else {
                    v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, rows, base + g * 16 + (c & 3) * 4, 1);
                    v = _mm512_and_si512(c < 4 ? v : _mm512_srli_epi16(v, 4), nib);
                    v = _mm512_maskz_mov_epi32(m, _mm512_sub_epi8(v, eight));  /* missing columns stay 0 */
                }
                _mm512_store_si512((void *)(pw + ((g * 8 + c) * QG_NR + c0) * 4), v);
                sum = _mm512_dpbusd_epi32(sum, ones, v);
            }
            _mm512_store_si512((void *)(comp + g * QG_NR + c0), _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
            uint16_t half[16];
            for (int j = 0; j < 16; j++) half[j] = j < live ? scales[(n0 + c0 + j) * G + g] : 0;
            _mm512_store_ps(ws + g * QG_NR + c0, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)half)));
        }
    }
}

/* One register tile: mr (≤ 6) rows × 32 columns over all of K. Integer sums per group in int32
 * lanes, started at −compensation (a load, where a zeroing move plus a subtraction would cost two
 * vector-port operations per group), then · w_scale · x_scale accumulated in float32. */
AVX512VNNI static inline __attribute__((always_inline)) void q_tile(
    const uint8_t *xq, const float *xs, int64_t K, const int8_t *pw, const int32_t *comp, const float *ws,
    const float *bias, float *y, int64_t ldy, int64_t cols, const int mr) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    __m512 acc[QG_MR][2];
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        __m512i dot[QG_MR][2];
        for (int r = 0; r < mr; r++) {
            dot[r][0] = _mm512_load_si512((const void *)(comp + g * QG_NR));
            dot[r][1] = _mm512_load_si512((const void *)(comp + g * QG_NR + 16));
        }
        const int8_t *p = pw + g * 8 * QG_NR * 4;
        for (int c = 0; c < 8; c++) {
            __m512i w0 = _mm512_load_si512((const void *)(p + c * 128));
            __m512i w1 = _mm512_load_si512((const void *)(p + c * 128 + 64));
            for (int r = 0; r < mr; r++) {
                int32_t xv;
                memcpy(&xv, xq + r * Kp + g * 32 + c * 4, 4);
                __m512i b = _mm512_set1_epi32(xv);
                dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], b, w0);
                dot[r][1] = _mm512_dpbusd_epi32(dot[r][1], b, w1);
            }
        }
        __m512 s0 = _mm512_load_ps(ws + g * QG_NR), s1 = _mm512_load_ps(ws + g * QG_NR + 16);
        for (int r = 0; r < mr; r++) {
            __m512 sx = _mm512_set1_ps(xs[r * G + g]);
            acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][0]), _mm512_mul_ps(s0, sx), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][1]), _mm512_mul_ps(s1, sx), acc[r][1]);
        }
    }
    __mmask16 m0 = (__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
    __mmask16 m1 = (__mmask16)(cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (1u << (cols - 16)) - 1);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(y + r * ldy, m0, _mm512_add_ps(acc[r][0], b0));
        _mm512_mask_storeu_ps(y + r * ldy + 16, m1, _mm512_add_ps(acc[r][1], b1));
    }
}

AVX512VNNI static void gemm_q_int8_vnni(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                                        const uint16_t *scales, int format, const float *bias, float *y,
                                        int64_t ldy, int64_t n0, int64_t n1, void *scratch) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    int8_t *pw = (int8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int32_t *comp = (int32_t *)(pw + Kp * QG_NR);
    float *ws = (float *)(comp + G * QG_NR);
    const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
    for (int64_t n = n0; n < n1; n += QG_NR) {
        int64_t cols = n1 - n < QG_NR ? n1 - n : QG_NR;
        pack_q_panel(W, scales, format, K, n, cols, pw, comp, ws);
        const float *b = bias ? bias + n : NULL;
        /* The next panel's 32 weight rows are one contiguous block; fetching it into L2 a slice
         * per tile hides the latency of the packing gathers, which touch 16 rows at once. */
        const char *next = (const char *)W + (n + QG_NR) * rowBytes;
        const int64_t lines = n + QG_NR < n1 ? (QG_NR * rowBytes) / 64 : 0;
        const int64_t perTile = (lines + M / QG_MR) / (M / QG_MR + 1);
        int64_t fetched = 0;
        int64_t m = 0;
        for (; m + QG_MR <= M; m += QG_MR) {
            for (int64_t j = 0; j < perTile && fetched < lines; j++, fetched++)
                _mm_prefetch(next + fetched * 64, _MM_HINT_T1);
            q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, QG_MR);
        }
        switch (M - m) {
        case 5: q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, 5); break;
        case 4: q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, 4); break;
        case 3: q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, 3); break;
        case 2: q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, 2); break;
        case 1: q_tile(xq + m * Kp, xs + m * G, K, pw, comp, ws, b, y + m * ldy + n, ldy, cols, 1); break;
        default: break;
        }
    }
}

/* The level's int8 prefill GEMM. Where 512-bit operations issue as two halves (Zen 4), the level
 * below's 256-bit GEMM (vpdpbusd in its EVEX form) ran the 3B-224 prefill about 10 % faster than
 * gemm_q_int8_vnni (2.28–2.41 s to the first token against 2.56–2.68 s, q4 and q8), so the level
 * keeps it there; elsewhere the 512-bit one. ck_avx512_wide_int8_gemm switches (tests check both). */
static void (*gemm_q_int8_narrow)(const uint8_t *, const float *, int64_t, int64_t, const void *, const uint16_t *,
                                  int, const float *, float *, int64_t, int64_t, int64_t, void *);
static _Atomic(int) wide_int8_gemm = 1;

int ck_avx512_wide_int8_gemm(int wide) { return atomic_exchange(&wide_int8_gemm, wide && 1); }

static void gemm_q_int8_avx512(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                               const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                               int64_t n0, int64_t n1, void *scratch) {
    if (atomic_load_explicit(&wide_int8_gemm, memory_order_relaxed) || !gemm_q_int8_narrow)
        gemm_q_int8_vnni(xq, xs, M, K, W, scales, format, bias, y, ldy, n0, n1, scratch);
    else
        gemm_q_int8_narrow(xq, xs, M, K, W, scales, format, bias, y, ldy, n0, n1, scratch);
}

AVX512 static double fma_probe_avx512(int64_t n, float *sink) {
    __m512 a[12], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    __m512 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)n * 12 * 16 * 2;
}

AVX512VNNI static double int8_probe_vnni(int64_t n, float *sink) {
    __m512i a[12], x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], x, y);
    __m512i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, a[i]);
    *sink = (float)_mm512_reduce_add_epi32(s);
    return (double)n * 12 * 64 * 2;
}

AVX512BF16 static double bf16_probe_avx512(int64_t n, float *sink) {
    __m512 a[12];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3F80), y = (__m512bh)_mm512_set1_epi16(0x3A83);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (int64_t k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    __m512 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)n * 12 * 32 * 2;
}

static void gemm_f32_packed_avx512(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W,
                                   const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy,
                                   int64_t n0, int64_t n1, float *scratch) {
    gemm_f32_packed_core(x, M, K, ldx, W, scales, format, bias, y, ldy, n0, n1, scratch, scratch + 32 * K); /* row: 32·K */
}


AVX512 static void quantize_input_avx512(const float *x, int64_t K, ck_qinput *out) {
    quantize_groups_avx512(x, K / CK_GROUP, out);
    ck_quantize_input_q4_order(K / CK_GROUP, out);
}

AVX512 static void gemv_q_int8_vnni(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                                    const float *bias, float *y, int64_t n0, int64_t n1) {
    if (format == CK_Q4) gemv_q4_vnni(in, K, W, scales, bias, y, n0, n1);
    else gemv_q8_vnni(in, K, W, scales, bias, y, n0, n1);
}

static void attention_avx512(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk, const float *v,
                             int64_t ldv, int64_t d, float scale, float cap, const int64_t *lo, const int64_t *hi,
                             float *out, int64_t ldo, float *scratch) {
    if (nq <= 4 && d <= 256)
        attention_few_queries_avx512(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    else if (nq >= 16 && nq <= 32) /* with 16 or more queries the lanes-over-queries kernel fills its vectors */
        attention_block_avx512(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
    else
        ck_attention_rows(q, ldq, nq, k, ldk, v, ldv, d, scale, cap, lo, hi, out, ldo, scratch);
}

void ck_fill_avx512(ck_kernels *t, const ck_cpu *cpu) {
    t->name = "avx512";
    t->convert_row = convert_row_avx512;
    t->dot = dot_avx512;
    t->dot4 = dot4_avx512;
    t->axpy = axpy_avx512;
    t->axpy4 = axpy4_avx512;
    t->scale = scale_avx512;
    t->linear = linear_avx512;
    t->gemv_bf16 = gemv_bf16_avx512;
    t->gemv_bf16_rows = gemv_bf16_rows_avx512;
    t->gemm_f32_packed = gemm_f32_packed_avx512;
    t->gemv_q = gemv_q_avx512;
    t->quantize_input = quantize_input_avx512;
    t->quantize_rows_u8 = quantize_rows_u8_avx512;
    t->attention_block = attention_avx512;
    t->gelu_tanh = gelu_tanh_avx512;
    t->softcap = softcap_avx512;
    t->exp_shift = exp_shift_avx512;
    t->max = max_avx512;
    t->read_all = read_all_avx512;
    t->fma_probe = fma_probe_avx512;
    if (cpu->avx512vnni) {
        /* the level below's GEMM, when it has int8 products (avx-vnni: the same instruction) */
        gemm_q_int8_narrow = t->int8_products ? t->gemm_q_int8 : NULL;
        t->int8_products = 1;
        t->gemv_q_int8 = gemv_q_int8_vnni;
        t->gemv_q_int8_rows = gemv_q_int8_rows_vnni;
        atomic_store(&wide_int8_gemm, !cpu->avx512_halves);
        t->gemm_q_int8 = gemm_q_int8_avx512;
        t->int8_probe = int8_probe_vnni;
    }
    if (cpu->avx512bf16) {
        t->bf16_products = 1;
        t->to_bf16_rows = to_bf16_rows;
        t->gemm_bf16 = gemm_bf16_avx512bf16;
        t->bf16_probe = bf16_probe_avx512;
    }
}

#else
void ck_fill_avx512(ck_kernels *t, const ck_cpu *cpu) { (void)t; (void)cpu; }
#endif
