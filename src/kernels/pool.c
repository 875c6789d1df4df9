/*
 * pool.c: the thread pool behind kern_pool_run. Persistent workers sleep on a condition
 * variable; a run publishes (fn, ctx, n_tasks) under a new generation number, everyone
 * (the calling thread included) claims task indices from one atomic counter, and the
 * caller waits until every worker has left the generation. Simple and correct; not yet
 * tuned for very short tasks (no spinning).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "kernels/kern_internal.h"

struct kern_pool {
    int n_threads;              /* including the caller */
    int n_workers;              /* n_threads - 1 started threads */
    pthread_t *threads;         /* (n_workers) */
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* workers wait here for a new generation */
    pthread_cond_t done;        /* the caller waits here for n_busy == 0 */
    uint64_t generation;        /* under mu */
    int n_busy;                 /* workers still in the current generation, under mu */
    bool quit;                  /* under mu */
    void (*fn)(void *ctx, int i_task, int n_tasks);
    void *ctx;
    int n_tasks;
    atomic_int next_task;
};

static void pool_work(kern_pool *p)
{
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->ctx, i, p->n_tasks);
    }
}

static void *pool_main(void *arg)
{
    kern_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        pool_work(p);
        pthread_mutex_lock(&p->mu);
        if (--p->n_busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

kern_pool *kern_pool_new(int n_threads)
{
    if (n_threads < 1) return NULL;
    kern_pool *p = dk_calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = n_threads;
    atomic_init(&p->next_task, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) { dk_free(p); return NULL; }
    if (pthread_cond_init(&p->wake, NULL) != 0) { pthread_mutex_destroy(&p->mu); dk_free(p); return NULL; }
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mu);
        dk_free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->threads = dk_calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->threads) { kern_pool_free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0) { kern_pool_free(p); return NULL; }
            p->n_workers++;
        }
    }
    return p;
}

void kern_pool_free(kern_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    dk_free(p->threads);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    dk_free(p);
}

int kern_pool_threads(const kern_pool *p) { return p ? p->n_threads : 1; }

void kern_pool_run(kern_pool *p, void (*fn)(void *ctx, int i_task, int n_tasks), void *ctx, int n_tasks)
{
    if (n_tasks <= 0) return;
    if (!p || p->n_workers == 0 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    p->n_busy = p->n_workers;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pool_work(p);
    pthread_mutex_lock(&p->mu);
    while (p->n_busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
