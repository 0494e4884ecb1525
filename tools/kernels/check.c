/* Every kernel level this CPU supports against the generic level, in plain C: the check that runs
 * the arm64 levels under qemu (tools/kernels/check-arm64.sh) and any x86 level natively
 * (tools/kernels/check.sh). Bounds are those of KernelsTests: a float32 sum of n products errs by
 * at most γ_n·Σ|terms| (γ_n = n·u/(1 − n·u), u = 2⁻²⁴) on either side; integer sums are exact;
 * quantized inputs must be bit for bit the generic ones.
 *
 *   check [LEVEL ...]     levels to check (default: every supported level above generic)
 * Prints one line per failing case, then "kernels: N passed, N failed". */
#include "../../Sources/CKernels/ck_table.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(float lo, float hi) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}
static float *frandom(int64_t n, float scale) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = frand(-scale, scale);
    return p;
}

static int passed = 0, failed = 0, level_under_test = 0;
static const char *case_name = "";
static char case_detail[160];

/* One comparison: |a − b| ≤ bound, else a line naming the case. Returns 1 when it holds. */
static int close_to(float a, float b, double bound, const char *what, int64_t i) {
    if (fabs((double)a - (double)b) <= bound || (isnan(a) && isnan(b))) return 1;
    printf("FAIL %s %s %s [%lld]: %s %.9g, generic %.9g, bound %.3g\n", ck_level_name(level_under_test),
           case_name, case_detail, (long long)i, what, a, b, bound);
    return 0;
}
static void result(int ok) {
    if (ok) passed++; else failed++;
}
static double gamma_n(int64_t n) { return n * 0x1p-24 / (1 - n * 0x1p-24); }

/* Runs `body` at the level under test into `a` and at generic into `b`. */
#define BOTH(body_a, body_b)            \
    do {                                \
        ck_set_level(level_under_test); \
        body_a;                         \
        ck_set_level(0);                \
        body_b;                         \
        ck_set_level(level_under_test); \
    } while (0)

/* ---- weights ---- */

typedef struct {
    void *data;
    uint16_t *scales;
    int format;
    int64_t N, K;
} weights;

static weights make_weights(int64_t N, int64_t K, int format) {
    weights w = {0};
    w.format = format;
    w.N = N;
    w.K = K;
    float *v = frandom(N * K, 1);
    if (format == CK_F32) {
        w.data = v;
        return w;
    }
    if (format == CK_BF16 || format == CK_F16) {
        uint16_t *p = malloc((size_t)(N * K) * 2);
        for (int64_t i = 0; i < N * K; i++) p[i] = format == CK_BF16 ? ck_bf16_round(v[i]) : ck_f32_to_f16(v[i]);
        w.data = p;
        free(v);
        return w;
    }
    int64_t rowBytes = format == CK_Q8 ? K : K / 2, G = ck_groups(K);
    w.data = malloc((size_t)(N * rowBytes + 64));
    w.scales = malloc((size_t)(N * G) * 2);
    for (int64_t n = 0; n < N; n++)
        ck_quantize_row(v + n * K, K, format, (char *)w.data + n * rowBytes, w.scales + n * G);
    free(v);
    return w;
}
static void free_weights(weights w) {
    free(w.data);
    free(w.scales);
}
/* exact float32 value of weight (n, k) */
static float wvalue(const weights *w, int64_t n, int64_t k) {
    switch (w->format) {
    case CK_F32: return ((const float *)w->data)[n * w->K + k];
    case CK_BF16: return ck_bf16_value(((const uint16_t *)w->data)[n * w->K + k]);
    case CK_F16: return ck_f16_value(((const uint16_t *)w->data)[n * w->K + k]);
    default: {
        int64_t g = k / 32;
        return (float)ck_q_weight(w->data, w->format, w->K, n, g, (int)(k % 32)) *
               ck_f16_value(w->scales[n * ck_groups(w->K) + g]);
    }
    }
}
static const char *format_name(int f) {
    static const char *names[] = {"f32", "bf16", "f16", "q8", "q4"};
    return names[f];
}

/* ---- the cases ---- */

static void check_conversions(void) {
    case_name = "convert_row";
    for (int f = CK_BF16; f <= CK_F16; f++) {
        for (int64_t K = 1; K <= 70; K += 23) {
            weights w = make_weights(3, K, f);
            float *a = malloc(K * 4), *b = malloc(K * 4);
            BOTH(ck_convert_row(w.data, f, K, 2, a), ck_convert_row(w.data, f, K, 2, b));
            snprintf(case_detail, sizeof case_detail, "%s K%lld", format_name(f), (long long)K);
            int ok = 1;
            for (int64_t i = 0; i < K; i++) ok &= close_to(a[i], b[i], 0, "value", i);
            result(ok);
            free(a); free(b); free_weights(w);
        }
    }
}

static void check_dot_axpy(void) {
    const ck_kernels *t;
    for (int64_t n = 1; n <= 300; n = n * 3 + 2) {
        float *x = frandom(n, 1), *y = frandom(n, 1), *z = frandom(n, 1), *u = frandom(n, 1), *v = frandom(n, 1);
        double mag = 0;
        for (int64_t i = 0; i < n; i++) mag += fabs(x[i] * y[i]);
        snprintf(case_detail, sizeof case_detail, "n%lld", (long long)n);
        case_name = "dot";
        float a, b;
        BOTH(a = ck_dot(x, y, n), b = ck_dot(x, y, n));
        result(close_to(a, b, 2 * gamma_n(n) * mag, "dot", 0));
        case_name = "dot4";
        float d4a[4], d4b[4];
        BOTH((t = ck_active(), t->dot4(x, y, z, u, v, n, d4a)), (t = ck_active(), t->dot4(x, y, z, u, v, n, d4b)));
        int ok = 1;
        for (int r = 0; r < 4; r++) {
            const float *rows[4] = {x, y, z, u};
            double m = 0;
            for (int64_t i = 0; i < n; i++) m += fabs(rows[r][i] * v[i]);
            ok &= close_to(d4a[r], d4b[r], 2 * gamma_n(n) * m, "dot4", r);
        }
        result(ok);
        case_name = "axpy/axpy4/scale";
        float *ya = malloc(4 * n * 4), *yb = malloc(4 * n * 4);
        for (int64_t i = 0; i < 4 * n; i++) ya[i] = yb[i] = frand(-1, 1);
        float p[4] = {0.5f, 0.0f, -1.25f, 3.0f};
        BOTH((t = ck_active(), t->axpy(0.75f, x, ya, n), t->axpy4(p, y, ya, ya + n, ya + 2 * n, ya + 3 * n, n),
              t->scale(1.5f, ya, 4 * n)),
             (t = ck_active(), t->axpy(0.75f, x, yb, n), t->axpy4(p, y, yb, yb + n, yb + 2 * n, yb + 3 * n, n),
              t->scale(1.5f, yb, 4 * n)));
        ok = 1;
        /* one fused or unfused multiply-add per step: a few ulps of values of size ≤ 10 */
        for (int64_t i = 0; i < 4 * n; i++) ok &= close_to(ya[i], yb[i], 8 * 0x1p-24 * 10, "y", i);
        result(ok);
        free(ya); free(yb); free(x); free(y); free(z); free(u); free(v);
    }
}

/* y = x·Wᵀ + bias by `kernel` at both levels; bound 2γ_{K+1}·Σ|terms| (+ activation rounding). */
static void compare_products(const char *name, int64_t M, int64_t N, int64_t K, const weights *w, const float *x,
                             const float *bias, const float *ya, const float *yb, double relative_extra,
                             double per_weight_extra) {
    case_name = name;
    snprintf(case_detail, sizeof case_detail, "%s M%lld K%lld N%lld", format_name(w->format), (long long)M,
             (long long)K, (long long)N);
    int ok = 1;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double mag = bias ? fabs(bias[n]) : 0, wsum = 0;
            for (int64_t k = 0; k < K; k++) {
                float wv = wvalue(w, n, k);
                mag += fabs(x[m * K + k] * wv);
                wsum += fabs(wv);
            }
            double bound = (2 * gamma_n(K + K / 32 + 3) + relative_extra) * mag + per_weight_extra * wsum + 1e-6;
            ok &= close_to(ya[m * N + n], yb[m * N + n], bound, "y", m * N + n);
            if (!ok) goto done;
        }
done:
    result(ok);
}

static void check_dense_products(void) {
    static const int64_t shapes[][3] = {{1, 7, 5},   {1, 64, 33},  {1, 300, 70}, {3, 100, 17}, {5, 257, 9},
                                        {9, 48, 64}, {16, 33, 3},  {70, 96, 13}, {13, 4500, 37}, {1, 2304, 64},
                                        {25, 160, 100}, {1, 4500, 37}, {1, 9216, 12}};
    for (int f = CK_F32; f <= CK_Q4; f++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            if (f == CK_Q4 && K % 32) continue;
            if (f == CK_Q8 && K % 4) continue;
            weights w = make_weights(N, K, f);
            float *x = frandom(M * K, 1), *bias = frandom(N, 1);
            float *ya = malloc(M * N * 4), *yb = malloc(M * N * 4);
            float *scratch = malloc((64 * K + 64) * 4);
            if (f <= CK_F16) {
                BOTH(ck_linear(x, M, K, K, w.data, f, bias, ya, N, 0, N, scratch),
                     ck_linear(x, M, K, K, w.data, f, bias, yb, N, 0, N, scratch));
                compare_products("linear", M, N, K, &w, x, bias, ya, yb, 0, 0);
            }
            BOTH(ck_gemm_f32_packed(x, M, K, K, w.data, w.scales, f, bias, ya, N, 0, N, scratch),
                 ck_gemm_f32_packed(x, M, K, K, w.data, w.scales, f, bias, yb, N, 0, N, scratch));
            compare_products("gemm_f32_packed", M, N, K, &w, x, bias, ya, yb, 0, 0);
            /* a column range that starts inside a panel */
            if (N > 5) {
                for (int64_t i = 0; i < M * N; i++) ya[i] = yb[i] = 7;
                BOTH(ck_gemm_f32_packed(x, M, K, K, w.data, w.scales, f, bias, ya, N, 3, N - 1, scratch),
                     ck_gemm_f32_packed(x, M, K, K, w.data, w.scales, f, bias, yb, N, 3, N - 1, scratch));
                compare_products("gemm_f32_packed n3..<N-1", M, N, K, &w, x, bias, ya, yb, 0, 0);
            }
            if (f == CK_BF16 && M == 1) {
                float *xeo = malloc(K * 4);
                ck_split_even_odd(x, K, xeo);
                BOTH(ck_gemv_bf16(xeo, K, w.data, bias, ya, 0, N), ck_gemv_bf16(xeo, K, w.data, bias, yb, 0, N));
                compare_products("gemv_bf16", M, N, K, &w, x, bias, ya, yb, 0, 0);
                free(xeo);
            }
            if (f == CK_BF16 && ck_active()->bf16_products) {
                int64_t Kp = (K + 31) & ~31;
                uint16_t *xb = malloc(M * Kp * 2), *xb0 = malloc(M * Kp * 2);
                BOTH(ck_to_bf16_rows(x, M, K, K, xb), ck_to_bf16_rows(x, M, K, K, xb0));
                int same = memcmp(xb, xb0, M * Kp * 2) == 0;
                case_name = "to_bf16_rows";
                if (!same) printf("FAIL %s to_bf16_rows differs\n", ck_level_name(level_under_test));
                result(same);
                BOTH(ck_gemm_bf16(xb, M, K, w.data, bias, ya, N, 0, N), ck_gemm_bf16(xb, M, K, w.data, bias, yb, N, 0, N));
                compare_products("gemm_bf16", M, N, K, &w, x, bias, ya, yb, 0x1p-8, 0);
                free(xb); free(xb0);
            }
            free(ya); free(yb); free(x); free(bias); free(scratch); free_weights(w);
        }
    }
}

/* Layout of a quantized input row as FastBackend lays it out. */
typedef struct {
    ck_qinput in;
    void *base;
} qinput_box;
static qinput_box make_qinput(int64_t K) {
    qinput_box b;
    int64_t G = K / 32;
    size_t bytes = (size_t)(3 * K + (G / 2 + 1) * 8 + K + K + 4 * G + 4 * 64 + 64);
    b.base = calloc(1, bytes + 4 * K);
    char *p = (char *)(((uintptr_t)b.base + 63) & ~(uintptr_t)63);
    b.in.value = (int8_t *)p; p += (K + 63) & ~63;
    b.in.magnitude = (uint8_t *)p; p += (K + 63) & ~63;
    b.in.value_q4 = (int8_t *)p; p += (K + 63) & ~63;
    b.in.negative = (uint64_t *)p; p += (((G + 1) / 2 > 0 ? (G + 1) / 2 : 1) * 8 + 63) & ~63;
    b.in.sum4 = (int32_t *)p; p += (K + 63) & ~63;
    b.in.offset_q4 = (int32_t *)p; p += (K + 63) & ~63;
    b.in.scale = (float *)p;
    return b;
}

static void check_quantized_products(void) {
    static const int64_t shapes[][3] = {{1, 64, 70},  {1, 256, 9}, {1, 224, 11},  {1, 544, 5},  {1, 640, 6},
                                        {3, 96, 17},  {20, 128, 130}, {7, 64, 33}, {1, 2304, 40}, {1, 9216, 3},
                                        {1, 52, 9},   {13, 80, 40}, {20, 116, 33}, {37, 4304, 20}, {64, 1152, 70},
                                        {1, 4128, 37}, {1, 9216, 16}};
    for (int f = CK_Q8; f <= CK_Q4; f++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            if (f == CK_Q4 && K % 32) continue;
            weights w = make_weights(N, K, f);
            float *x = frandom(M * K, 1), *bias = frandom(N, 1);
            float *ya = malloc(M * N * 4), *yb = malloc(M * N * 4);
            if (M == 1 && K % 32 == 0) {
                BOTH(ck_gemv_q(x, K, w.data, w.scales, f, bias, ya, 0, N), ck_gemv_q(x, K, w.data, w.scales, f, bias, yb, 0, N));
                compare_products("gemv_q", M, N, K, &w, x, bias, ya, yb, 0, 0);
                qinput_box qa = make_qinput(K), qb = make_qinput(K);
                BOTH(ck_quantize_input(x, K, &qa.in), ck_quantize_input(x, K, &qb.in));
                int64_t G = K / 32;
                int same = memcmp(qa.in.value, qb.in.value, K) == 0 && memcmp(qa.in.magnitude, qb.in.magnitude, K) == 0 &&
                           memcmp(qa.in.negative, qb.in.negative, ((G + 1) / 2) * 8) == 0 &&
                           memcmp(qa.in.sum4, qb.in.sum4, (K / 4) * 4) == 0 && memcmp(qa.in.scale, qb.in.scale, G * 4) == 0 &&
                           memcmp(qa.in.value_q4, qb.in.value_q4, (G / 4) * 128) == 0 &&
                           memcmp(qa.in.offset_q4, qb.in.offset_q4, (G / 4) * 64) == 0;
                case_name = "quantize_input";
                snprintf(case_detail, sizeof case_detail, "K%lld", (long long)K);
                if (!same) printf("FAIL %s quantize_input K%lld: fields differ from generic\n", ck_level_name(level_under_test), (long long)K);
                result(same);
                /* both levels' GEMV on the generic quantized input: the same integers */
                BOTH(ck_gemv_q_int8(&qb.in, K, w.data, w.scales, f, bias, ya, 0, N),
                     ck_gemv_q_int8(&qb.in, K, w.data, w.scales, f, bias, yb, 0, N));
                compare_products("gemv_q_int8", M, N, K, &w, x, bias, ya, yb, 0, 0);
                free(qa.base); free(qb.base);
            }
            int64_t G = ck_groups(K), Kp = G * 32;
            uint8_t *xq = malloc(M * Kp), *xq0 = malloc(M * Kp);
            float *xs = malloc(M * G * 4), *xs0 = malloc(M * G * 4);
            BOTH(ck_quantize_rows_u8(x, M, K, K, xq, xs), ck_quantize_rows_u8(x, M, K, K, xq0, xs0));
            int same = memcmp(xq, xq0, M * Kp) == 0 && memcmp(xs, xs0, M * G * 4) == 0;
            case_name = "quantize_rows_u8";
            if (!same) printf("FAIL %s quantize_rows_u8 M%lld K%lld differs\n", ck_level_name(level_under_test), (long long)M, (long long)K);
            result(same);
            void *scratch = malloc(ck_gemm_q_int8_scratch_bytes(K));
            BOTH(ck_gemm_q_int8(xq0, xs0, M, K, w.data, w.scales, f, bias, ya, N, 0, N, scratch),
                 ck_gemm_q_int8(xq0, xs0, M, K, w.data, w.scales, f, bias, yb, N, 0, N, scratch));
            /* the same integers; float32 group scaling in any order: relative to the int8 terms,
             * whose size is that of x·w within half a step per input */
            compare_products("gemm_q_int8", M, N, K, &w, x, bias, ya, yb, 0, 0.5 / 127 * 2);
            if (N > 40) {
                for (int64_t i = 0; i < M * N; i++) ya[i] = yb[i] = 7;
                BOTH(ck_gemm_q_int8(xq0, xs0, M, K, w.data, w.scales, f, bias, ya, N, 33, N - 2, scratch),
                     ck_gemm_q_int8(xq0, xs0, M, K, w.data, w.scales, f, bias, yb, N, 33, N - 2, scratch));
                compare_products("gemm_q_int8 n33..<N-2", M, N, K, &w, x, bias, ya, yb, 0, 0.5 / 127 * 2);
            }
            free(scratch); free(xq); free(xq0); free(xs); free(xs0);
            free(ya); free(yb); free(x); free(bias); free_weights(w);
        }
    }
}

/* The batched decode GEMVs (several inputs at once) against the same level's one-input GEMV on
 * each input: every row must be the same floats bit for bit, for 1…9 inputs (past the batched
 * kernels' chunks), whole and short-tailed K, odd row ranges that start inside a row pair,
 * columns outside the range left alone, and bf16 inputs at a stride past K. */
static void check_each_row(void) {
    static const int64_t qshapes[][2] = {{32, 5}, {96, 9}, {224, 11}, {544, 7}, {640, 6}, {2304, 13}, {4128, 5}, {9216, 3}};
    static const int64_t bshapes[][2] = {{7, 5}, {33, 9}, {64, 11}, {300, 7}, {2304, 13}, {4500, 9}, {4128, 6}, {9216, 3}};
    for (int f = CK_BF16; f <= CK_Q4; f++) {
        if (f == CK_F16) continue;
        const int64_t (*shapes)[2] = f == CK_BF16 ? bshapes : qshapes;
        for (int s = 0; s < 8; s++) {
            const int64_t K = shapes[s][0], N = shapes[s][1];
            weights w = make_weights(N, K, f);
            float *bias = frandom(N, 1);
            for (int64_t M = 1; M <= 9; M++) {
                float *x = frandom(M * K, 2);
                float *ya = malloc(M * N * 4), *yb = malloc(M * N * 4);
                for (int64_t i = 0; i < M * N; i++) ya[i] = yb[i] = 7;
                const int64_t n0 = N > 4 ? 1 : 0, n1 = N > 4 ? N - 1 : N;
                const float *b = M % 2 ? bias : NULL;
                ck_set_level(level_under_test);
                if (f == CK_BF16) {
                    /* inputs at a stride past K for half the cases */
                    const int64_t ldx = M % 2 ? K : K + 5;
                    float *xeo = malloc(M * ldx * 4);
                    for (int64_t m = 0; m < M; m++) ck_split_even_odd(x + m * K, K, xeo + m * ldx);
                    ck_gemv_bf16_rows(xeo, M, K, ldx, w.data, b, ya, N, n0, n1);
                    for (int64_t m = 0; m < M; m++) ck_gemv_bf16(xeo + m * ldx, K, w.data, b, yb + m * N, n0, n1);
                    free(xeo);
                    case_name = "gemv_bf16_rows";
                } else {
                    qinput_box *q = malloc(M * sizeof *q);
                    ck_qinput *in = malloc(M * sizeof *in);
                    for (int64_t m = 0; m < M; m++) {
                        q[m] = make_qinput(K);
                        ck_quantize_input(x + m * K, K, &q[m].in);
                        in[m] = q[m].in;
                    }
                    ck_gemv_q_int8_rows(in, M, K, w.data, w.scales, f, b, ya, N, n0, n1);
                    for (int64_t m = 0; m < M; m++) ck_gemv_q_int8(&in[m], K, w.data, w.scales, f, b, yb + m * N, n0, n1);
                    for (int64_t m = 0; m < M; m++) free(q[m].base);
                    free(q); free(in);
                    case_name = "gemv_q_int8_rows";
                }
                snprintf(case_detail, sizeof case_detail, "%s M%lld K%lld N%lld", format_name(f), (long long)M,
                         (long long)K, (long long)N);
                int same = memcmp(ya, yb, M * N * 4) == 0;
                if (!same) {
                    int64_t i = 0;
                    while (memcmp(ya + i, yb + i, 4) == 0) i++;
                    printf("FAIL %s %s %s: row %lld column %lld is %.9g, its one-input GEMV %.9g\n",
                           ck_level_name(level_under_test), case_name, case_detail, (long long)(i / N),
                           (long long)(i % N), ya[i], yb[i]);
                }
                result(same);
                free(x); free(ya); free(yb);
            }
            free(bias); free_weights(w);
        }
    }
}

static void check_attention(void) {
    static const int64_t cases[][3] = {{1, 256, 150}, {2, 72, 300}, {4, 20, 70}, {3, 8, 5},  {5, 16, 23},
                                       {16, 72, 140}, {20, 8, 150}, {32, 20, 45}, {32, 64, 256}, {12, 256, 40}};
    case_name = "attention_block";
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t nq = cases[c][0], d = cases[c][1], keys = cases[c][2];
        int64_t ldk = 2 * d, ldq = 3 * d, ldo = 2 * d;
        float *q = frandom(nq * ldq, 3 / sqrtf((float)d)), *k = frandom(keys * ldk, 3), *v = frandom(keys * ldk, 1);
        float *oa = malloc(nq * ldo * 4), *ob = malloc(nq * ldo * 4);
        float *scratch = malloc((ck_attention_scratch_floats(nq, d) + 64) * 4);
        int64_t lo[32], hi[32];
        for (int mask = 0; mask < 3; mask++) {
            for (int64_t i = 0; i < nq; i++) {
                if (mask == 0) { lo[i] = 0; hi[i] = keys; }                                  /* bidirectional */
                else if (mask == 1) { lo[i] = 0; hi[i] = keys - nq + i + 1; }                 /* causal */
                else { hi[i] = keys - nq + i + 1; lo[i] = hi[i] > 33 ? hi[i] - 33 : 0; }      /* window */
                if (mask == 2 && i == 1) lo[i] = hi[i];                                       /* a row with no key */
            }
            for (int capped = 0; capped < 2; capped++) {
                float cap = capped ? 50.0f : 0.0f;
                BOTH(ck_attention_block(q, ldq, nq, k, ldk, v, ldk, d, 0.5f, cap, lo, hi, oa, ldo, scratch),
                     ck_attention_block(q, ldq, nq, k, ldk, v, ldk, d, 0.5f, cap, lo, hi, ob, ldo, scratch));
                snprintf(case_detail, sizeof case_detail, "nq%lld d%lld keys%lld mask%d cap%g", (long long)nq,
                         (long long)d, (long long)keys, mask, cap);
                int ok = 1;
                for (int64_t i = 0; i < nq && ok; i++)
                    for (int64_t c2 = 0; c2 < d && ok; c2++)
                        ok &= close_to(oa[i * ldo + c2], ob[i * ldo + c2], 8 * gamma_n(keys + d) + 1e-6, "out", i * ldo + c2);
                result(ok);
            }
        }
        free(q); free(k); free(v); free(oa); free(ob); free(scratch);
    }
}

static void check_elementwise(void) {
    int64_t n = 6491;
    float *x = malloc(n * 4), *b = frandom(n, 2), *ya = malloc(n * 4), *yb = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
    case_name = "gelu_tanh";
    snprintf(case_detail, sizeof case_detail, "n%lld", (long long)n);
    BOTH(ck_gelu_tanh(x, b, ya, n), ck_gelu_tanh(x, b, yb, n));
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= close_to(ya[i], yb[i], 3e-6 * fmax(1, fabs(yb[i])), "gelu", i);
    result(ok);
    case_name = "softcap";
    for (int64_t i = 0; i < n; i++) ya[i] = yb[i] = x[i] * 10;
    BOTH(ck_softcap(ya, n, 30), ck_softcap(yb, n, 30));
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= close_to(ya[i], yb[i], 4e-6 * 30, "softcap", i);
    result(ok);
    case_name = "exp_shift/sum_exp";
    float sa, sb;
    const ck_kernels *t;
    BOTH((t = ck_active(), sa = t->exp_shift(x, ya, n, 12)), (t = ck_active(), sb = t->exp_shift(x, yb, n, 12)));
    ok = close_to(sa, sb, sb * (n * 0x1p-24 + 1e-6), "sum", 0);
    for (int64_t i = 0; i < n; i++) ok &= close_to(ya[i], yb[i], 1e-6 * yb[i] + 1e-30, "term", i);
    BOTH(sa = ck_sum_exp(x, n, 12), sb = ck_sum_exp(x, n, 12));
    ok &= close_to(sa, sb, sb * (n * 0x1p-24 + 1e-6), "sum_exp", 0);
    result(ok);
    case_name = "argmax/max/read_all";
    for (int64_t len = 1; len < n; len = len * 4 + 3) {
        float *r = frandom(len, 30);
        if (len > 20) { r[3] = NAN; r[len / 2] = 40; r[len - 1] = 40; }
        int64_t ia, ib;
        float ma, mb, ra, rb;
        BOTH((ia = ck_argmax(r, len), t = ck_active(), ma = t->max(r, len)), (ib = ck_argmax(r, len), t = ck_active(), mb = t->max(r, len)));
        snprintf(case_detail, sizeof case_detail, "n%lld", (long long)len);
        ok = ia == ib && ma == mb;
        if (!ok) printf("FAIL %s argmax n%lld: %lld / %g, generic %lld / %g\n", ck_level_name(level_under_test), (long long)len, (long long)ia, ma, (long long)ib, mb);
        if (len > 20) r[3] = 0;
        double mag = 0;
        for (int64_t i = 0; i < len; i++) mag += fabs(r[i]);
        BOTH(ra = ck_read_all(r, len), rb = ck_read_all(r, len));
        ok &= close_to(ra, rb, 2 * gamma_n(len) * mag, "read_all", 0);
        result(ok);
        free(r);
    }
    free(x); free(b); free(ya); free(yb);
}

static void check_probes(void) {
    case_name = "probes";
    float sink;
    ck_set_level(level_under_test);
    const ck_kernels *t = ck_active();
    double fma = ck_fma_probe(1000, &sink), i8 = ck_int8_probe(1000, &sink), bf = ck_bf16_probe(1000, &sink);
    double i4 = ck_int8_probe_q4(1000, &sink);
    /* the 4-bit probe is the int8 one, or (avx2) one with twice its multiply-adds per instruction */
    int ok = fma > 0 && (i8 > 0) == (t->int8_products != 0) && (bf > 0) == (t->bf16_products != 0) &&
             (i4 == i8 || (t->int8_probe_q4 && i4 == 2 * i8));
    if (!ok) printf("FAIL %s probes: fma %g int8 %g (4-bit %g) bf16 %g (int8 products %d, bf16 %d)\n", t->name, fma, i8, i4, bf, t->int8_products, t->bf16_products);
    result(ok);
}

int main(int argc, char **argv) {
    int levels[8], count = 0;
    for (int i = 1; i < argc; i++) {
        int l = ck_level_index(argv[i]);
        if (l < 0) {
            printf("level '%s' is not supported here (levels: ", argv[i]);
            for (int j = 0; j < ck_level_count(); j++) printf("%s%s", j ? " " : "", ck_level_name(j));
            printf(")\n");
            return 2;
        }
        levels[count++] = l;
    }
    if (count == 0)
        for (int l = 1; l < ck_level_count() && count < 8; l++) levels[count++] = l;
    for (int i = 0; i < count; i++) {
        level_under_test = levels[i];
        int before = failed, before_passed = passed;
        check_conversions();
        check_dot_axpy();
        check_dense_products();
        check_quantized_products();
        /* the avx512 level's int8 GEMM is its own 512-bit one or the level below's 256-bit one,
         * by CPU (ck_avx512_wide_int8_gemm): both are checked, the chosen one restored */
        if (ck_avx512_wide_int8_gemm && strcmp(ck_level_name(level_under_test), "avx512") == 0) {
            const int chosen = ck_avx512_wide_int8_gemm(0);
            ck_avx512_wide_int8_gemm(!chosen);
            check_quantized_products();
            ck_avx512_wide_int8_gemm(chosen);
        }
        check_each_row();
        check_attention();
        check_elementwise();
        check_probes();
        printf("level %s: %d cases, %d failed\n", ck_level_name(level_under_test), passed - before_passed + failed - before,
               failed - before);
    }
    if (count == 0) printf("only the generic level on this CPU\n");
    printf("kernels: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
