// C kernels behind the Swift `Kernels` module. Nothing here knows about any model: these are
// plain row-major float32 routines over weights stored as f32, bf16 or f16.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage formats of weight matrices (rows = output features, cols = input features).
/// Quantized formats hold groups of 32 consecutive input features with one f16 scale each
/// (scales: N × ck_groups(K)): CK_Q8 is int8 (value = q · scale); CK_Q4 packs a group in 16 bytes, byte j
/// holding element j in its low nibble and element j + 16 in its high nibble (value = (nibble − 8) · scale).
/// CK_Q4 needs K a multiple of 32. CK_Q8 only needs K a multiple of 4: a row's last group may be
/// short (K mod 32 values, e.g. SigLIP So400m's 4304 inputs), which ck_convert_row_q,
/// ck_rows_to_bf16, ck_quantize_row, ck_quantize_rows_u8, ck_gemm_q_int8 and ck_gemm_f32_packed
/// handle; the decode GEMVs (ck_gemv_q, ck_gemv_q_int8) need whole groups.
enum ck_format { CK_F32 = 0, CK_BF16 = 1, CK_F16 = 2, CK_Q8 = 3, CK_Q4 = 4 };
#define CK_GROUP 32
/// Scale groups in a row of K inputs (the last one may be short).
static inline int64_t ck_groups(int64_t K) { return (K + CK_GROUP - 1) / CK_GROUP; }

/// Kernel levels. Each is one instruction-set level with its own kernel file(s); the levels a
/// CPU supports form a chain from 0 (generic C, the portable twin every other level is tested
/// against) up to the best one, which is active unless capped: by the environment variable
/// PALIGEMMA_ISA=<name> (read once, at first use) or by ck_set_level. x86-64 chain: generic, avx2
/// (AVX2 + FMA + F16C), avx-vnni (256-bit integer dot products), avx512 (F/BW/VL, with VNNI and
/// BF16 where present). arm64 chain: generic, neon, neon-dotprod (SDOT), neon-i8mm (SMMLA, and
/// BFMMLA where the CPU has bf16).
/// Number of levels this CPU supports (at least 1).
int ck_level_count(void);
/// Name of supported level `level` (0 ..< ck_level_count()), or NULL.
const char *ck_level_name(int level);
/// Index of the supported level called `name`, or -1 (unknown name, or not on this CPU).
int ck_level_index(const char *name);
/// The active level.
int ck_level(void);
/// Makes `level` the active one (clamped to the supported range); returns the previous one.
/// Not for use while kernels run on other threads.
int ck_set_level(int level);
/// Names of every level this build knows on this architecture, space-separated (for messages).
const char *ck_level_names(void);
/// 1 when PALIGEMMA_ISA named a level this CPU lacks or that does not exist (the best level is
/// then used); its value is in ck_level_request().
int ck_level_request_failed(void);
const char *ck_level_request(void);

/// Capabilities of the active level, which is all callers need to choose an algorithm:
/// 1 when the level has vector kernels (anything but generic);
int ck_has_vector_kernels(void);
/// 1 when products with quantized weights have integer dot products (inputs rounded to int8 per
/// group of 32 pay off: ck_gemv_q_int8, ck_gemm_q_int8);
int ck_has_int8_products(void);
/// 1 when ck_gemm_bf16 uses native bf16 dot products.
int ck_has_bf16_products(void);

/// y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) for m < M and n0 <= n < n1.
/// x: M×K (row stride ldx), y: M×N (row stride ldy), W: N×K in `format`.
/// scratch: at least 4*K floats, owned by the calling thread.
void ck_linear(const float *x, int64_t M, int64_t K, int64_t ldx,
               const void *W, int format, const float *bias,
               float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch);

/// Converts row `row` of W (row length K, `format` F32/BF16/F16) to K float32 values.
void ck_convert_row(const void *W, int format, int64_t K, int64_t row, float *out);

/// Reorders x (length K) for ck_gemv_bf16: each 32-chunk becomes its 16 even then 16 odd
/// elements; the tail past the last full chunk is copied as is.
void ck_split_even_odd(const float *x, int64_t K, float *out);
/// y[n] = x · W[n] (+ bias[n]) for n0 <= n < n1, W: N×K bf16, x given split by ck_split_even_odd.
/// Float32 arithmetic on exactly widened weights; each weight byte is read once.
void ck_gemv_bf16(const float *xeo, int64_t K, const void *W, const float *bias, float *y, int64_t n0, int64_t n1);
/// ck_gemv_bf16 for M inputs at once (row m at xeo + m·ldx, each split by ck_split_even_odd), as
/// when several sequences decode together: row m of y (stride ldy) is bit for bit what
/// ck_gemv_bf16(xeo + m·ldx, …) writes, while levels with a batched kernel read each weight row
/// once for all M.
void ck_gemv_bf16_rows(const float *xeo, int64_t M, int64_t K, int64_t ldx, const void *W, const float *bias,
                       float *y, int64_t ldy, int64_t n0, int64_t n1);

/// Rounds x (M×K, row stride ldx) to bf16 rows padded with zeros to a multiple of 32.
void ck_to_bf16_rows(const float *x, int64_t M, int64_t K, int64_t ldx, uint16_t *out);
/// y[m, n] = xb[m] · W[n] (+ bias) for all m < M, n0 <= n < n1; xb from ck_to_bf16_rows, W: N×K bf16.
/// Products of bf16 values accumulated in float32 (the CPU's bf16 dot-product instruction).
void ck_gemm_bf16(const uint16_t *xb, int64_t M, int64_t K, const void *W, const float *bias, float *y,
                  int64_t ldy, int64_t n0, int64_t n1);

/// y[m, n] = x[m] · W[n] (+ bias) in exact float32 for all m < M, n0 <= n < n1, W in any format
/// (scales for CK_Q8/CK_Q4, else NULL): weights widened and packed per 32-row panel, 12×32
/// register tiles of fused multiply-adds. scratch: 64·K floats owned by the calling thread.
void ck_gemm_f32_packed(const float *x, int64_t M, int64_t K, int64_t ldx, const void *W, const uint16_t *scales,
                        int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, float *scratch);

/// Dequantizes row `row` of a quantized matrix (CK_Q8 / CK_Q4) to float32.
void ck_convert_row_q(const void *W, const uint16_t *scales, int format, int64_t K, int64_t row, float *out);
/// y[n] = x · dequant(W[n]) (+ bias) for n0 <= n < n1; quantized weights read once, float32 math.
void ck_gemv_q(const float *x, int64_t K, const void *W, const uint16_t *scales, int format, const float *bias,
               float *y, int64_t n0, int64_t n1);
/// An input row quantized for integer dot products (decode with quantized weights): per group of
/// 32, scale[g] = max|x|/127 and value = round(x/scale) in int8; magnitude = |value| (u8),
/// negative = sign bits (one 64-bit mask per two groups), sum4 = sums of 4 consecutive values;
/// for 4-bit weights, value_q4 = each four groups' values in the order their nibbles unpack
/// (g 0–15, g+1 0–15, g+2 0–15, g+3 0–15, then elements 16–31 likewise) and offset_q4 = −8 × the
/// sums of the 4 + 4 values each 32-bit lane meets (16 per four groups).
/// Arrays sized K, K, K/64 (at least 1), K/4, K/32, K and K/8 (or more); K a multiple of 32.
typedef struct {
    int8_t *value;
    uint8_t *magnitude;
    uint64_t *negative;
    int32_t *sum4;
    float *scale;
    int8_t *value_q4;
    int32_t *offset_q4;
} ck_qinput;

/// Quantizes x (length K) into `out`.
void ck_quantize_input(const float *x, int64_t K, ck_qinput *out);
/// y[n] = Σ_g scale_w[n,g]·scale_x[g]·(Σ_i q_w·q_x) (+ bias) for n0 <= n < n1: integer dot
/// products with int8 inputs, for decode with CK_Q8 / CK_Q4 weights (plain C on levels without them).
void ck_gemv_q_int8(const ck_qinput *in, int64_t K, const void *W, const uint16_t *scales, int format,
                    const float *bias, float *y, int64_t n0, int64_t n1);

/// ck_gemv_q_int8 for M quantized inputs (`in[0..<M]`) at once, as when several sequences decode
/// together: row m of y (stride ldy) is bit for bit what ck_gemv_q_int8(&in[m], …) writes, while
/// levels with a batched kernel read each weight row once for all M.
void ck_gemv_q_int8_rows(const ck_qinput *in, int64_t M, int64_t K, const void *W, const uint16_t *scales, int format,
                         const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1);

/// Rows of activations for ck_gemm_q_int8: per row and group of 32, xs = max|x|/127 and
/// q = round(x/xs) in [-127, 127], stored offset as u8 q + 128. x: M×K (row stride ldx);
/// xq: M rows of Kp = 32·ck_groups(K) bytes (past K: 128, i.e. x = 0); xs: M×ck_groups(K) floats.
void ck_quantize_rows_u8(const float *x, int64_t M, int64_t K, int64_t ldx, uint8_t *xq, float *xs);
/// Scratch bytes one ck_gemm_q_int8 caller needs for row length K.
int64_t ck_gemm_q_int8_scratch_bytes(int64_t K);
/// y[m, n] = Σ_g w_scale[n,g]·xs[m,g]·Σ_i q_w·q_x (+ bias) for m < M, n0 <= n < n1: integer dot
/// products for prefill with CK_Q8 / CK_Q4 weights, weight panels repacked per call into
/// `scratch` (ck_gemm_q_int8_scratch_bytes(K), owned by the calling thread). Levels without
/// integer dot products run the same integer arithmetic in plain C.
void ck_gemm_q_int8(const uint8_t *xq, const float *xs, int64_t M, int64_t K, const void *W, const uint16_t *scales,
                    int format, const float *bias, float *y, int64_t ldy, int64_t n0, int64_t n1, void *scratch);

/// Dequantizes rows n0 ..< n0+count to bf16 (row length K) for the bf16 GEMM.
void ck_rows_to_bf16(const void *W, const uint16_t *scales, int format, int64_t K, int64_t n0, int64_t count,
                     uint16_t *out);
/// Quantizes one float32 row (K a multiple of 32) into `format`; returns its scales through `scales`.
void ck_quantize_row(const float *w, int64_t K, int format, void *out, uint16_t *scales);
/// Float32 → IEEE half (round to nearest even) and back.
uint16_t ck_f32_to_f16(float f);
float ck_f16_to_f32(uint16_t h);

/// Attention for a block of query vectors against one key/value head, without materialising the
/// score matrix: keys are visited in tiles of 64 with an online (running max) softmax, so each key
/// and value row is read once per block. Query i (row i of q, stride ldq) sees keys lo[i] ..< hi[i];
/// scores are (q·k)·scale, then cap·tanh(s/cap) when cap > 0; softmax in float32.
/// out: row i (stride ldo) receives the weighted sum of values. scratch: ck_attention_scratch_floats(nq, d).
void ck_attention_block(const float *q, int64_t ldq, int64_t nq, const float *k, int64_t ldk,
                        const float *v, int64_t ldv, int64_t d, float scale, float cap,
                        const int64_t *lo, const int64_t *hi, float *out, int64_t ldo, float *scratch);
/// Scratch floats ck_attention_block needs for nq query rows of dimension d.
int64_t ck_attention_scratch_floats(int64_t nq, int64_t d);

/// out = gelu_tanh(a) · b (b may be NULL; out may alias a): 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).
/// Vectorised exp-based tanh, relative error about 1e-6.
void ck_gelu_tanh(const float *a, const float *b, float *out, int64_t n);
/// x = cap · tanh(x / cap), in place.
void ck_softcap(float *x, int64_t n, float cap);
/// Σ exp(x[i] − shift) in float32 (vectorised exp, relative error about 2e-7 per term).
float ck_sum_exp(const float *x, int64_t n, float shift);
/// Index of the first largest value (NaNs never win; 0 when n is 0 or all are NaN).
int64_t ck_argmax(const float *x, int64_t n);

/// Compute-ceiling probes of the active level: `iterations` rounds of independent float32 FMAs,
/// int8 dot products or bf16 dot products on its widest vectors, with the instructions its
/// products use; each returns the operations performed (a multiply-add counts 2), 0 where the
/// level has no such products. Time them per thread. ck_int8_probe uses the instructions of the
/// 8-bit weights' products, ck_int8_probe_q4 those of the 4-bit weights' (the same on every level
/// with a dot-product instruction; on avx2 4-bit products keep their sums in 16 bits, twice the
/// multiply-adds per instruction).
double ck_fma_probe(int64_t iterations, float *sink);
double ck_int8_probe(int64_t iterations, float *sink);
double ck_int8_probe_q4(int64_t iterations, float *sink);
double ck_bf16_probe(int64_t iterations, float *sink);

/// Sums n floats with the level's widest loads: a memory-read bandwidth probe.
float ck_read_all(const float *p, int64_t n);

/// Dot product of two float32 vectors.
float ck_dot(const float *a, const float *b, int64_t n);
/// y += a * x
void ck_axpy(float a, const float *x, float *y, int64_t n);

/// A persistent pool of worker threads for parallel regions (see pool.c for why they spin
/// briefly between regions). `threads` counts the caller, which runs share 0.
typedef struct ck_pool ck_pool;
/// Work for one share of a region: items start ..< end, run by worker `worker`.
typedef void (*ck_pool_task)(void *context, int64_t start, int64_t end, int64_t worker);
ck_pool *ck_pool_create(int64_t threads);
void ck_pool_destroy(ck_pool *pool);
/// Threads the pool really has (helpers that started, plus the caller).
int64_t ck_pool_threads(const ck_pool *pool);
/// Splits `count` items into `workers` contiguous shares, runs them (share 0 on the calling
/// thread) and returns 1 when all are done; returns 0 without running anything when the pool is
/// busy with another region or has fewer threads than `workers`.
int ck_pool_run(ck_pool *pool, int64_t count, int64_t workers, ck_pool_task task, void *context);

#ifdef __cplusplus
}
#endif
