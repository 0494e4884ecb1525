/* Times the batched decode GEMVs (gemv_q_int8_rows for q8/q4, gemv_bf16_rows for bf16) on one
 * thread for M = 1, 2, 4, 8 inputs against a K×N weight matrix, at each level, and prints each
 * time as a multiple of the one-input GEMV's (best of several runs): M means no gain over one
 * product per input, 1 means the extra inputs came for free. Each run reads the next of several
 * copies of the weights (together past COPIES_BYTES), so that they come from memory, as in the
 * decode of a model larger than the caches, not from the last level cache.
 *
 *   bench-rows [K N [RUNS]]   (default 2304 9216 7) */
#include "../../Sources/CKernels/ck_table.h"
#include <stdio.h>
#include <stdlib.h>
#include "bench.h"

#ifndef COPIES_BYTES
#define COPIES_BYTES (384ll << 20)
#endif

int main(int argc, char **argv) {
    const int64_t K = argc > 2 ? atoll(argv[1]) : 2304, N = argc > 2 ? atoll(argv[2]) : 9216;
    const int runs = argc > 3 ? atoi(argv[3]) : 7;
    enum { MMAX = 8 };
    const int ms[] = {1, 2, 4, 8};
    const int64_t G = K / CK_GROUP;
    float *w = malloc(N * K * 4), *x = malloc(MMAX * K * 4), *xeo = malloc(MMAX * K * 4), *y = malloc(MMAX * N * 4);
    for (int64_t i = 0; i < N * K; i++) w[i] = frand();
    for (int64_t i = 0; i < MMAX * K; i++) x[i] = frand();
    for (int m = 0; m < MMAX; m++) ck_split_even_odd(x + m * K, K, xeo + m * K);
    /* per format (q8, q4, bf16) `copies` copies of the same weights */
    const int64_t bytes[3] = {N * K, N * K / 2, N * K * 2};
    int copies[3];
    void *wq[3][64];
    uint16_t *sq[2][64];
    for (int f = 0; f < 3; f++) {
        copies[f] = (int)((COPIES_BYTES + bytes[f] - 1) / bytes[f]);
        if (copies[f] > 64) copies[f] = 64;
        for (int c = 0; c < copies[f]; c++) {
            wq[f][c] = malloc(bytes[f] + 64);
            if (f == 2) {
                for (int64_t i = 0; i < N * K; i++) ((uint16_t *)wq[f][c])[i] = ck_bf16_round(w[i]);
                continue;
            }
            const int format = f ? CK_Q4 : CK_Q8;
            const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
            sq[f][c] = malloc(N * G * 2);
            for (int64_t n = 0; n < N; n++)
                ck_quantize_row(w + n * K, K, format, (char *)wq[f][c] + n * rowBytes, sq[f][c] + n * G);
        }
    }
    free(w);
    /* quantized inputs in separate buffers, as FastBackend lays them out */
    ck_qinput in[MMAX];
    for (int m = 0; m < MMAX; m++) {
        in[m].value = malloc(K), in[m].magnitude = malloc(K), in[m].value_q4 = malloc(K);
        in[m].negative = malloc(((G + 1) / 2 + 1) * 8), in[m].sum4 = malloc(K), in[m].offset_q4 = malloc(K);
        in[m].scale = malloc(G * 4);
    }
    printf("K %lld, N %lld, one thread, weights from memory, best of %d; time for M inputs as a multiple of the\n"
           "one-input GEMV's\n", (long long)K, (long long)N, runs);
    printf("%-9s %-5s %10s %7s %7s %7s %7s\n", "level", "fmt", "M=1 (ms)", "M=1", "M=2", "M=4", "M=8");
    for (int level = 1; level < ck_level_count(); level++) {
        ck_set_level(level);
        for (int m = 0; m < MMAX; m++) ck_quantize_input(x + m * K, K, &in[m]);
        for (int f = 0; f < 3; f++) {
            const char *name = f == 0 ? "q8" : f == 1 ? "q4" : "bf16";
            if (f < 2 && !ck_active()->int8_products) continue;
            const int format = f ? CK_Q4 : CK_Q8;
            double one = 1e30, t[4];
            int c = 0;
            for (int r = 0; r < runs; r++, c = (c + 1) % copies[f]) {
                double t0 = now();
                if (f < 2) ck_gemv_q_int8(&in[0], K, wq[f][c], sq[f][c], format, NULL, y, 0, N);
                else ck_gemv_bf16(xeo, K, wq[f][c], NULL, y, 0, N);
                double dt = now() - t0;
                if (dt < one) one = dt;
            }
            for (int i = 0; i < 4; i++) {
                t[i] = 1e30;
                for (int r = 0; r < runs; r++, c = (c + 1) % copies[f]) {
                    double t0 = now();
                    if (f < 2) ck_gemv_q_int8_rows(in, ms[i], K, wq[f][c], sq[f][c], format, NULL, y, N, 0, N);
                    else ck_gemv_bf16_rows(xeo, ms[i], K, K, wq[f][c], NULL, y, N, 0, N);
                    double dt = now() - t0;
                    if (dt < t[i]) t[i] = dt;
                }
            }
            printf("%-9s %-5s %10.2f %7.2f %7.2f %7.2f %7.2f\n", ck_level_name(level), name, one * 1e3, t[0] / one,
                   t[1] / one, t[2] / one, t[3] / one);
        }
    }
    return 0;
}
