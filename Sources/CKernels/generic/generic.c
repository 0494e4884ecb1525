/* Level "generic": plain C for every kernel. It runs on any CPU and is the oracle every vector
 * level is tested against, so it favours the obvious loop over speed. */
#include "../ck_table.h"
#include <math.h>

static void convert_row(const void *W, int format, int64_t K, int64_t row, float *out) {
    switch (format) {
    case CK_F32:
        memcpy(out, (const float *)W + row * K, (size_t)K * sizeof(float));
        break;
    case CK_BF16: {
        const uint16_t *p = (const uint16_t *)W + row * K;
        for (int64_t k = 0; k < K; k++) out[k] = ck_bf16_value(p[k]);
        break;
    }
    case CK_F16: {
        const uint16_t *p = (const uint16_t *)W + row * K;
        for (int64_t k = 0; k < K; k++) out[k] = ck_f16_value(p[k]);
        break;
    }
    }
}

static float dot(const float *a, const float *b, int64_t n) {
    /* Eight partial sums: vectorisable and closer to a pairwise sum than a single chain. */
    float s[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) s[j] += a[k + j] * b[k + j];
    float t = 0;
    for (; k < n; k++) t += a[k] * b[k];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

static void dot4(const float *a0, const float *a1, const float *a2, const float *a3, const float *b, int64_t n,
                 float out[4]) {
    out[0] = dot(a0, b, n);
    out[1] = dot(a1, b, n);
    out[2] = dot(a2, b, n);
    out[3] = dot(a3, b, n);
}

static void axpy(float a, const float *x, float *y, int64_t n) {
    for (int64_t k = 0; k < n; k++) y[k] += a * x[k];
}

static void axpy4(const float p[4], const float *x, float *y0, float *y1, float *y2, float *y3, int64_t n) {
    float *ys[4] = {y0, y1, y2, y3};
    for (int r = 0; r < 4; r++)
        if (p[r] != 0.0f) axpy(p[r], x, ys[r], n);
}

static void scale(float a, float *y, int64_t n) {
    for (int64_t k = 0; k < n; k++) y[k] *= a;
}

static void linear(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, int format, const float *bias,
                   float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch) {
    for (int64_t n = n0; n < n1; n++) {
        const float *w;
        if (format == CK_F32) {
            w = (const float *)W + n * K;
        } else {
            convert_row(W, format, K, n, scratch);
            w = scratch;
        }
        for (int64_t m = 0; m < M; m++) y[m * ldy + n] = dot(x + m * ldx, w, K) + (bias ? bias[n] : 0.0f);
    }
}

/* x given split by ck_split_even_odd: undo the split on the fly */
static void gemv_bf16(const float *xeo, int64_t K, const void *W, const float *bias, float *y, int64_t n0, int64_t n1) {
    const uint16_t *w = (const uint16_t *)W;
    int64_t K32 = K & ~(int64_t)31;
    for (int64_t n = n0; n < n1; n++) {
        const uint16_t *row = w + n * K;
        float s = 0;
        for (int64_t k = 0; k < K32; k += 32)
            for (int i = 0; i < 16; i++)
                s += xeo[k + i] * ck_bf16_value(row[k + 2 * i]) + xeo[k + 16 + i] * ck_bf16_value(row[k + 2 * i + 1]);
        for (int64_t k = K32; k < K; k++) s += xeo[k] * ck_bf16_value(row[k]);
        y[n] = s + (bias ? bias[n] : 0.0f);
    }
}

/* The plain twin of a batched bf16 GEMV: each input through the active level's own GEMV, so the
 * rows are that kernel's bit for bit (the weights are read M times). */
static void gemv_bf16_rows(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W, const float *bias,
                           float *y, int64_t ldy, int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m++) ck_active()->gemv_bf16(xeo + m * ldx, K, W, bias, y + m * ldy, n0, n1);
}

static void to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < Kp; k++) out[m * Kp + k] = k < K ? ck_bf16_round(x[m * ldx + k]) : 0;
}

static void gemm_bf16(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y,
                      int64_t ldy, int64_t n0, int64_t n1) {
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    const uint16_t *w = (const uint16_t *)W;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t m = 0; m < M; m++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s += ck_bf16_value(xb[m * Kp + k]) * ck_bf16_value(w[n * K + k]);
            y[m * ldy + n] = s + (bias ? bias[n] : 0.0f);
        }
}

/* one weight row at a time, widened into the scratch */
static void gemm_f32_packed(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, const uint16_t *scales,
                            int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1,
                            float *scratch) {
    for (int64_t n = n0; n < n1; n++) {
        if (format == CK_Q8 || format == CK_Q4) ck_convert_row_q(W, scales, format, K, n, scratch);
        else convert_row(W, format, K, n, scratch);
        for (int64_t m = 0; m < M; m++) y[m * ldy + n] = dot(x + m * ldx, scratch, K) + (bias ? bias[n] : 0.0f);
    }
}

static void gemv_q(const float *x, int64_t K, const void *W, const uint16_t *scales, int format, const float *bias,
                   float *y, int64_t n0, int64_t n1) {
    float row[CK_GROUP];
    const int64_t G = K / CK_GROUP;
    for (int64_t n = n0; n < n1; n++) {
        float acc = 0;
        for (int64_t g = 0; g < G; g++) {
            /* dequantize one group at a time (no K-sized buffer needed) */
            float s = ck_f16_value(scales[n * G + g]), part = 0;
            for (int i = 0; i < 32; i++) row[i] = (float)ck_q_weight(W, format, K, n, g, i);
            for (int i = 0; i < 32; i++) part += row[i] * x[g * 32 + i];
            acc += part * s;
        }
        y[n] = acc + (bias ? bias[n] : 0.0f);
    }
}

static void quantize_input(const float *x, int64_t K, ck_qinput *out) {
    const int64_t G = K / CK_GROUP;
    for (int64_t g = 0; g < G; g++) {
        const float *v = x + g * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
        float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
        out->scale[g] = s;
        uint64_t neg = 0;
        for (int i = 0; i < 32; i++) {
            float r = nearbyintf(v[i] * inv);
            int q = (int)(r > 127 ? 127 : (r < -127 ? -127 : r));
            out->value[g * 32 + i] = (int8_t)q;
            out->magnitude[g * 32 + i] = (uint8_t)(q < 0 ? -q : q);
            if (q < 0) neg |= 1ull << i;
        }
        if (g % 2 == 0) out->negative[g / 2] = neg; else out->negative[g / 2] |= neg << 32;
        for (int i = 0; i < 8; i++)
            out->sum4[g * 8 + i] = out->value[g * 32 + 4 * i] + out->value[g * 32 + 4 * i + 1] +
                                   out->value[g * 32 + 4 * i + 2] + out->value[g * 32 + 4 * i + 3];
    }
    ck_quantize_input_q4_order(G, out);
}

/* The plain twin of a batched int8 GEMV: each input through the active level's own GEMV, so the
 * rows are that kernel's bit for bit (the weights are read M times). */
static void gemv_q_int8_rows(const ck_qinput *in, int64_t M, int64_t K, const void *W, const uint16_t *scales,
                             int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m++) ck_active()->gemv_q_int8(&in[m], K, W, scales, format, bias, y + m * ldy, n0, n1);
}

static void gemv_q_int8(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                        const float *bias, float *y, int64_t n0, int64_t n1) {
    const int64_t G = K / CK_GROUP;
    for (int64_t n = n0; n < n1; n++) {
        float r = 0;
        for (int64_t g = 0; g < G; g++) r += ck_q_group_dot(in, W, format, K, n, g, ck_f16_value(scales[n * G + g]));
        y[n] = r + (bias ? bias[n] : 0.0f);
    }
}

/* Offset-u8 activations: per row and group of 32, xs = max|x|/127, q = round(x/xs) in
 * [-127, 127], stored as u = q + 128 (the form unsigned × signed dot products take). */
static void quantize_rows_u8(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs) {
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t g = 0; g < G; g++) {
            const float *v = x + m * ldx + g * 32;
            const int len = ck_group_length(K, g);
            float amax = 0;
            for (int i = 0; i < len; i++) amax = fmaxf(amax, fabsf(v[i]));
            float inv = amax > 0 ? 127.0f / amax : 0.0f;
            xs[m * G + g] = amax / 127.0f;
            for (int i = 0; i < 32; i++) {
                float r = i < len ? nearbyintf(v[i] * inv) : 0.0f; /* past K: x = 0 */
                int q = (int)(r > 127 ? 127 : (r < -127 ? -127 : r));
                xq[m * Kp + g * 32 + i] = (uint8_t)(q + 128);
            }
        }
    }
}

static void gemm_q_int8(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W,
                        const uint16_t *scales, int format, const float *bias, float *y, int64_t ldy, int64_t n0,
                        int64_t n1, void *scratch) {
    (void)scratch;
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = n0; n < n1; n++) {
            float r = 0;
            for (int64_t g = 0; g < G; g++) {
                int32_t dot = 0, wsum = 0;
                for (int i = 0; i < 32; i++) {
                    int w = ck_q_weight(W, format, K, n, g, i);
                    dot += (int32_t)xq[m * Kp + g * 32 + i] * w;
                    wsum += w;
                }
                r += (float)(dot - 128 * wsum) * (ck_f16_value(scales[n * G + g]) * xs[m * G + g]);
            }
            y[m * ldy + n] = r + (bias ? bias[n] : 0.0f);
        }
    }
}

static void gelu_tanh(const float *a, const float *b, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = a[i];
        float g = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        out[i] = b ? g * b[i] : g;
    }
}

static void softcap(float *x, int64_t n, float cap) {
    for (int64_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

static float exp_shift(const float *x, float *out, int64_t n, float shift) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float e = expf(x[i] - shift);
        if (out) out[i] = e;
        sum += e;
    }
    return sum;
}

static float max_value(const float *x, int64_t n) {
    float best = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > best) best = x[i];
    return best;
}

static float read_all(const float *p, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += p[i];
    return s;
}

/* 64 independent multiply-add chains in a loop the compiler vectorises as it does the generic
 * products (baseline vector multiply and add, or fused where the baseline has it): the ceiling
 * of this level's own code. */
static double fma_probe(int64_t iterations, float *sink) {
    float a[64];
    for (int i = 0; i < 64; i++) a[i] = (float)i;
    for (int64_t k = 0; k < iterations; k++)
        for (int i = 0; i < 64; i++) a[i] = a[i] * 0.999f + 1e-3f;
    float s = 0;
    for (int i = 0; i < 64; i++) s += a[i];
    *sink = s;
    return (double)iterations * 64 * 2;
}

static double no_probe(int64_t iterations, float *sink) {
    (void)iterations;
    *sink = 0;
    return 0;
}

void ck_fill_generic(ck_kernels *t) {
    t->name = "generic";
    t->int8_products = 0;
    t->bf16_products = 0;
    t->convert_row = convert_row;
    t->dot = dot;
    t->dot4 = dot4;
    t->axpy = axpy;
    t->axpy4 = axpy4;
    t->scale = scale;
    t->linear = linear;
    t->gemv_bf16 = gemv_bf16;
    t->gemv_bf16_rows = gemv_bf16_rows;
    t->to_bf16_rows = to_bf16_rows;
    t->gemm_bf16 = gemm_bf16;
    t->gemm_f32_packed = gemm_f32_packed;
    t->gemv_q = gemv_q;
    t->quantize_input = quantize_input;
    t->gemv_q_int8 = gemv_q_int8;
    t->gemv_q_int8_rows = gemv_q_int8_rows;
    t->quantize_rows_u8 = quantize_rows_u8;
    t->gemm_q_int8 = gemm_q_int8;
    t->attention_block = ck_attention_rows;
    t->gelu_tanh = gelu_tanh;
    t->softcap = softcap;
    t->exp_shift = exp_shift;
    t->max = max_value;
    t->read_all = read_all;
    t->fma_probe = fma_probe;
    t->int8_probe = no_probe;
    t->bf16_probe = no_probe;
}
