/* Times the int8 prefill GEMM (ck_gemm_q_int8, q8 and q4 weights) at each level with int8
 * products, for M activation rows against a K×N weight matrix, and prints the rate in GMAC/s
 * (M·K·N multiply-adds per call, best of RUNS calls).
 *
 *   bench-gemm [M K N [RUNS [THREADS]]]   (default 266 2304 9216 3 1: the 3B decoder's gate
 *   projection on one thread; THREADS split the columns in whole panels, as FastBackend does) */
#include "../../Sources/CKernels/ck_table.h"
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include "bench.h"

/* one worker's share of the columns, as FastBackend splits them: whole panels of 32 */
typedef struct {
    const uint8_t *xq;
    const float *xs;
    int64_t M, K, n0, n1, ldy;
    const void *W;
    const uint16_t *scales;
    int format;
    float *y;
    void *scratch;
} share;

static void *run_share(void *p) {
    const share *s = p;
    ck_gemm_q_int8(s->xq, s->xs, s->M, s->K, s->W, s->scales, s->format, NULL, s->y, s->ldy, s->n0, s->n1, s->scratch);
    return NULL;
}

int main(int argc, char **argv) {
    const int64_t M = argc > 3 ? atoll(argv[1]) : 266, K = argc > 3 ? atoll(argv[2]) : 2304,
                  N = argc > 3 ? atoll(argv[3]) : 9216;
    const int runs = argc > 4 ? atoi(argv[4]) : 3;
    const int threads = argc > 5 ? atoi(argv[5]) : 1;
    if (M < 1 || K < CK_GROUP || K % CK_GROUP || N < 1 || runs < 1 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: bench-gemm [M K N [RUNS [THREADS]]]: M, N ≥ 1, K a multiple of 32, RUNS ≥ 1, 1 ≤ THREADS ≤ 64\n");
        return 2;
    }
    const int64_t G = ck_groups(K), Kp = G * CK_GROUP;
    float *w = malloc(N * K * 4), *x = malloc(M * K * 4), *y = malloc(M * N * 4), *xs = malloc(M * G * 4);
    uint8_t *xq = malloc(M * Kp);
    for (int64_t i = 0; i < N * K; i++) w[i] = frand();
    for (int64_t i = 0; i < M * K; i++) x[i] = frand();
    void *wq[2];
    uint16_t *sq[2];
    for (int f = 0; f < 2; f++) {
        const int format = f ? CK_Q4 : CK_Q8;
        const int64_t rowBytes = format == CK_Q8 ? K : K / 2;
        wq[f] = malloc(N * rowBytes), sq[f] = malloc(N * G * 2);
        for (int64_t n = 0; n < N; n++) ck_quantize_row(w + n * K, K, format, (char *)wq[f] + n * rowBytes, sq[f] + n * G);
    }
    free(w);
    void *scratch[64];
    for (int t = 0; t < threads; t++) scratch[t] = malloc(ck_gemm_q_int8_scratch_bytes(K));
    printf("M %lld, K %lld, N %lld, %d thread(s), best of %d, GMAC/s\n", (long long)M, (long long)K, (long long)N,
           threads, runs);
    printf("%-9s %-4s %10s %8s\n", "level", "fmt", "time (ms)", "GMAC/s");
    for (int level = 1; level < ck_level_count(); level++) {
        ck_set_level(level);
        if (!ck_active()->int8_products) continue;
        ck_quantize_rows_u8(x, M, K, K, xq, xs);
        for (int f = 0; f < 2; f++) {
            const int format = f ? CK_Q4 : CK_Q8;
            double best = 1e30;
            for (int r = 0; r < runs; r++) {
                share sh[64];
                pthread_t tid[64];
                const int64_t panels = (N + 31) / 32;
                double t0 = now();
                for (int t = 0; t < threads; t++) {
                    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
                    sh[t] = (share){xq, xs, M, K, p0 * 32, p1 * 32 < N ? p1 * 32 : N, N, wq[f], sq[f], format, y, scratch[t]};
                    if (t) pthread_create(&tid[t], NULL, run_share, &sh[t]);
                }
                run_share(&sh[0]);
                for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
                double dt = now() - t0;
                if (dt < best) best = dt;
            }
            printf("%-9s %-4s %10.2f %8.1f\n", ck_level_name(level), f ? "q4" : "q8", best * 1e3,
                   (double)M * K * N / best * 1e-9);
        }
    }
    return 0;
}
