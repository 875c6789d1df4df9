/*
 * pool.c: the thread pool behind kern_pool_run. A decode step runs hundreds of short
 * parallel sections (a few microseconds each), so waking sleeping threads through a
 * condition variable for each one would cost more than the work. Instead:
 *
 *   - a run publishes (fn, ctx, n_tasks), opens its claim counter and then bumps an atomic
 *     generation number;
 *   - workers spin on the generation for a while (pause instruction) and only then fall
 *     asleep on a condition variable; the caller signals it only when someone sleeps;
 *   - everyone, the caller included, claims task indices from one atomic counter that also
 *     holds the run's generation (gen << 32 | index), so a worker that wakes late cannot
 *     claim a task of a later run with the state of an earlier one;
 *   - the caller waits until every task is done, not until every worker has looked: a worker
 *     the OS has not scheduled (more runnable threads than cores, as in a server whose request
 *     threads sample between steps) holds nothing up unless it is inside a task.
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

/* Spins before a worker sleeps: long enough to bridge the serial gaps inside a forward pass
 * (norms, rope, attention bookkeeping), short enough not to take a core from the threads
 * that sample between forward passes. */
#define POOL_SPIN_ROUNDS 20000
/* The caller spins this long for the last tasks before it yields its core. */
#define POOL_WAIT_SPIN_ROUNDS 50000
#define CLAIM_CLOSED 0xffffffffu /* the index of a finished run: nothing left to claim */

typedef void (*kern_pool_task_fn)(void *ctx, int i_task, int n_tasks, int i_thread);

typedef struct pool_worker {
    kern_pool *p;
    int i_thread;
} pool_worker;

struct kern_pool {
    int n_threads;              /* including the caller */
    int n_workers;              /* n_threads - 1 started threads */
    pthread_t *threads;         /* (n_workers) */
    pool_worker *workers;       /* (n_workers) their arguments */
    /* the run's work, written before its claim counter opens; atomic because a late worker may
     * read them while the caller writes the next run's (it then fails to claim) */
    _Atomic(kern_pool_task_fn) fn;
    _Atomic(void *) ctx;
    void (*plain_fn)(void *ctx, int i_task, int n_tasks);         /* kern_pool_run's, called through plain_task */
    void *plain_ctx;
    atomic_int n_tasks;
    uint64_t run;                                    /* the caller's count of runs (== generation) */
    _Alignas(64) atomic_uint_least64_t generation;   /* bumped once per run */
    _Alignas(64) atomic_uint_least64_t claim;        /* run << 32 | next task index */
    _Alignas(64) atomic_int n_done;                  /* tasks done in the current run */
    _Alignas(64) atomic_int n_sleeping;
    atomic_bool quit;
    pthread_mutex_t mu;
    pthread_cond_t wake;
};

/* Claims and runs tasks of run `run` until none is left (or a later run has begun). */
static void pool_work(kern_pool *p, uint64_t run, int i_thread)
{
    for (;;) {
        uint64_t v = atomic_load(&p->claim);
        if (v >> 32 != (run & 0xffffffffu)) return;
        /* read before the claim; a successful claim proves they were this run's (the caller
         * closes a run before it writes the next one's fields, and the counter never repeats) */
        kern_pool_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        int n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
        uint32_t i = (uint32_t)v;
        if (i == CLAIM_CLOSED || (int64_t)i >= n_tasks) return;
        if (!atomic_compare_exchange_weak(&p->claim, &v, v + 1)) continue;
        fn(ctx, (int)i, n_tasks, i_thread);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
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
        pool_work(p, seen, w->i_thread);
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
    atomic_init(&p->claim, (uint64_t)CLAIM_CLOSED);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->n_tasks, 0);
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
    uint64_t run = ++p->run;
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store(&p->n_done, 0);
    atomic_store(&p->claim, (run & 0xffffffffu) << 32); /* open: index 0 */
    atomic_fetch_add(&p->generation, 1); /* seq_cst: publishes the fields above, pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, run, 0);
    for (long r = 0; atomic_load_explicit(&p->n_done, memory_order_acquire) < n_tasks; r++) {
        if (r < POOL_WAIT_SPIN_ROUNDS) cpu_relax();
        else sched_yield(); /* a worker inside a task was descheduled */
    }
    /* closed before the next run writes its fields, so no late worker claims with these */
    atomic_store(&p->claim, ((run & 0xffffffffu) << 32) | CLAIM_CLOSED);
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
