/* A persistent pool of worker threads that spin briefly between parallel regions.
 *
 * Decode runs about 200 short parallel regions per token (a few tens of microseconds each).
 * Workers that go to sleep after each region must be woken for the next, and on a virtual
 * machine a sleeping vCPU's wake-up costs tens of microseconds: a simulated 3B q4 decode pass
 * (26 layers × 7 matrix-vector products, 2 threads) took 74.8 ms with workers sleeping on a
 * condition variable and 59.2 ms with workers spinning. So workers spin for a while (about a
 * millisecond) before they sleep, and a region costs a store and a few cache-line transfers. */
#include "ckernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CK_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CK_PAUSE() __asm__ __volatile__("yield")
#else
#define CK_PAUSE() ((void)0)
#endif

/* pause instructions a worker spins through before sleeping (~1 ms on current x86 cores) */
#define CK_POOL_SPINS (1 << 14)

struct ck_pool {
    int64_t threads;             /* including the caller */
    pthread_t *helpers;          /* threads − 1 */
    int64_t started;             /* helpers actually running */
    pthread_mutex_t run_lock;    /* one region at a time */
    pthread_mutex_t mutex;       /* guards sleepers and the wake-up */
    pthread_cond_t wake;
    int64_t sleepers;
    _Atomic uint64_t generation; /* bumped once per region */
    _Atomic int64_t pending;     /* helpers still inside the current region */
    _Atomic int stop;
    /* the current region, written before generation is bumped */
    ck_pool_task task;
    void *context;
    int64_t count, workers;
};

typedef struct {
    ck_pool *pool;
    int64_t index;
} helper_arg;

static void run_share(ck_pool *p, int64_t w) {
    if (w >= p->workers) return;
    int64_t start = p->count * w / p->workers, end = p->count * (w + 1) / p->workers;
    if (start < end) p->task(p->context, start, end, w);
}

static void *helper_main(void *raw) {
    helper_arg arg = *(helper_arg *)raw;
    free(raw);
    ck_pool *p = arg.pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g;
        int64_t spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&p->stop, memory_order_relaxed)) return NULL;
            if (++spins < CK_POOL_SPINS) {
                CK_PAUSE();
                continue;
            }
            pthread_mutex_lock(&p->mutex);
            p->sleepers++;
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->wake, &p->mutex);
            p->sleepers--;
            pthread_mutex_unlock(&p->mutex);
            spins = 0;
        }
        seen = g;
        run_share(p, arg.index);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

ck_pool *ck_pool_create(int64_t threads) {
    if (threads < 1) threads = 1;
    ck_pool *p = calloc(1, sizeof(ck_pool));
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->helpers = calloc((size_t)(threads > 1 ? threads - 1 : 1), sizeof(pthread_t));
    if (!p->helpers) {
        free(p);
        return NULL;
    }
    for (int64_t i = 1; i < threads; i++) {
        helper_arg *arg = malloc(sizeof(helper_arg));
        if (!arg) break;
        arg->pool = p;
        arg->index = i;
        if (pthread_create(&p->helpers[p->started], NULL, helper_main, arg) != 0) {
            free(arg);
            break;
        }
        p->started++;
    }
    return p;
}

void ck_pool_destroy(ck_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int64_t i = 0; i < p->started; i++) pthread_join(p->helpers[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    pthread_mutex_destroy(&p->run_lock);
    free(p->helpers);
    free(p);
}

int64_t ck_pool_threads(const ck_pool *p) { return p ? p->started + 1 : 1; }

int ck_pool_run(ck_pool *p, int64_t count, int64_t workers, ck_pool_task task, void *context) {
    if (!p || workers > p->started + 1) return 0;
    /* Busy (another caller's region, or a region started from inside one): the caller runs
     * the work some other way. */
    if (pthread_mutex_trylock(&p->run_lock) != 0) return 0;
    p->task = task;
    p->context = context;
    p->count = count;
    p->workers = workers;
    atomic_store_explicit(&p->pending, p->started, memory_order_relaxed);
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->sleepers > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    run_share(p, 0);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) CK_PAUSE();
    pthread_mutex_unlock(&p->run_lock);
    return 1;
}
