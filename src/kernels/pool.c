/*
 * pool.c: the thread pool behind kern_pool_run. A decode step runs hundreds of short
 * parallel sections (a few microseconds each), so waking sleeping threads through a
 * condition variable for each one would cost more than the work. Instead:
 *
 *   - a run publishes (fn, ctx, n_tasks) and then bumps an atomic generation number;
 *   - workers spin on the generation for a while (pause instruction) and only then fall
 *     asleep on a condition variable; the caller signals it only when someone sleeps;
 *   - everyone, the caller included, claims task indices from one atomic counter;
 *   - the caller spins until every worker has reported the generation done.
 *
 * The sleeping handshake is a Dekker pair of sequentially consistent operations: a worker
 * announces itself in n_sleeping and then re-reads the generation; the caller bumps the
 * generation and then reads n_sleeping. One of the two always sees the other.
 * Not for: nested runs (fn must not call kern_pool_run on the same pool).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "kernels/kern_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax(void) { _mm_pause(); }
#elif defined(__aarch64__)
static inline void cpu_relax(void) { __asm__ volatile("yield" ::: "memory"); }
#else
static inline void cpu_relax(void) {}
#endif

/* Spins before a worker sleeps: long enough to bridge the serial gaps of a forward pass
 * (norms, rope, sampling between tokens), short enough not to burn a core when idle. */
#define POOL_SPIN_ROUNDS 50000

typedef struct pool_worker {
    kern_pool *p;
    int i_thread;
} pool_worker;

struct kern_pool {
    int n_threads;              /* including the caller */
    int n_workers;              /* n_threads - 1 started threads */
    pthread_t *threads;         /* (n_workers) */
    pool_worker *workers;       /* (n_workers) their arguments */
    void (*fn)(void *ctx, int i_task, int n_tasks, int i_thread); /* written before generation is bumped */
    void *ctx;
    void (*plain_fn)(void *ctx, int i_task, int n_tasks);         /* kern_pool_run's, called through plain_task */
    void *plain_ctx;
    int n_tasks;
    _Alignas(64) atomic_uint_least64_t generation;   /* bumped once per run */
    _Alignas(64) atomic_int next_task;
    _Alignas(64) atomic_int n_done;                  /* workers done with the current generation */
    _Alignas(64) atomic_int n_sleeping;
    atomic_bool quit;
    pthread_mutex_t mu;
    pthread_cond_t wake;
};

static void pool_work(kern_pool *p, int i_thread)
{
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->ctx, i, p->n_tasks, i_thread);
    }
}

/* Waits until the generation differs from seen (or quit); returns the new generation. */
static uint64_t pool_wait_generation(kern_pool *p, uint64_t seen)
{
    for (long r = 0; r < POOL_SPIN_ROUNDS; r++) {
        uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    uint64_t g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *pool_main(void *arg)
{
    pool_worker *w = arg;
    kern_pool *p = w->p;
    uint64_t seen = 0;
    for (;;) {
        seen = pool_wait_generation(p, seen);
        if (atomic_load(&p->quit)) break;
        pool_work(p, w->i_thread);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
    return NULL;
}

kern_pool *kern_pool_new(int n_threads)
{
    if (n_threads < 1) return NULL;
    kern_pool *p = dk_calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = n_threads;
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->n_done, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->quit, false);
    if (pthread_mutex_init(&p->mu, NULL) != 0) { dk_free(p); return NULL; }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        dk_free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->threads = dk_calloc((size_t)n_threads - 1, sizeof(pthread_t));
        p->workers = dk_calloc((size_t)n_threads - 1, sizeof(pool_worker));
        if (!p->threads || !p->workers) { kern_pool_free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i] = (pool_worker){p, i + 1};
            if (pthread_create(&p->threads[i], NULL, pool_main, &p->workers[i]) != 0) { kern_pool_free(p); return NULL; }
            p->n_workers++;
        }
    }
    return p;
}

void kern_pool_free(kern_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    dk_free(p->threads);
    dk_free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    dk_free(p);
}

int kern_pool_threads(const kern_pool *p) { return p ? p->n_threads : 1; }

void kern_pool_run_threads(kern_pool *p, void (*fn)(void *ctx, int i_task, int n_tasks, int i_thread), void *ctx,
                           int n_tasks)
{
    if (n_tasks <= 0) return;
    if (!p || p->n_workers == 0 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: publishes the fields above, pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, 0);
    for (long r = 0; atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n_workers; r++) {
        if (r < POOL_SPIN_ROUNDS) cpu_relax();
        else sched_yield(); /* a worker was descheduled (more threads than cores) */
    }
}

static void plain_task(void *ctx, int i_task, int n_tasks, int i_thread)
{
    kern_pool *p = ctx;
    (void)i_thread;
    p->plain_fn(p->plain_ctx, i_task, n_tasks);
}

void kern_pool_run(kern_pool *p, void (*fn)(void *ctx, int i_task, int n_tasks), void *ctx, int n_tasks)
{
    if (n_tasks <= 0) return;
    if (!p || p->n_workers == 0 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks);
        return;
    }
    p->plain_fn = fn;
    p->plain_ctx = ctx;
    kern_pool_run_threads(p, plain_task, p, n_tasks);
}
