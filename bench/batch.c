/*
 * bench/batch.c: what continuous batching buys. N threads each generate tokens from their
 * own session (random sampling, temperature 0.8), once with every session on its own (one
 * forward pass per token, the passes of different sessions serialized by a lock, as a server
 * without batching would run them) and once through one engine_batcher (shared passes).
 * Prints aggregate tokens/s per N. Not a test: never timed by `make test`.
 *
 *   build/bench-batch MODEL.gguf [-t THREADS] [-n TOKENS] [-c 1,2,4,8]
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

typedef struct job {
    engine_session *session;
    pthread_mutex_t *serial; /* NULL with a batcher */
    long n_predict;
    size_t n_out;
    int rc;
    char err[DK_ERRLEN];
    unsigned seed;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    engine_generate_params gp;
    engine_generate_params_default(&gp);
    gp.sampling.temperature = 0.8f;
    gp.sampling.seed = j->seed;
    gp.num_predict = j->n_predict;
    int32_t prompt[16];
    for (int i = 0; i < 16; i++) prompt[i] = (int32_t)(100 + i * 7 + (int)j->seed);
    if (!j->serial) {
        engine_timings t;
        j->rc = engine_generate(j->session, prompt, 16, &gp, &t, j->err);
        j->n_out = t.n_eval;
        return NULL;
    }
    /* unbatched: one token at a time under the shared lock */
    engine_session_clear(j->session);
    pthread_mutex_lock(j->serial);
    j->rc = engine_session_eval(j->session, prompt, 16, NULL, j->err);
    pthread_mutex_unlock(j->serial);
    for (long i = 0; i < j->n_predict && j->rc == DK_OK; i++) {
        int32_t tok = (int32_t)((i * 31 + j->seed) % 1000);
        pthread_mutex_lock(j->serial);
        j->rc = engine_session_eval(j->session, &tok, 1, NULL, j->err);
        pthread_mutex_unlock(j->serial);
        j->n_out++;
    }
    return NULL;
}

static double run_level(engine_model *model, engine_batcher *b, bool serial_mode, int n_clients, long n_predict, char *err)
{
    job jobs[64];
    pthread_t th[64];
    pthread_mutex_t serial = PTHREAD_MUTEX_INITIALIZER;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 512;
    sp.batcher = b;
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < n_clients; i++) {
        if (engine_session_new(&jobs[i].session, model, &sp, err) != DK_OK) return -1;
        jobs[i].serial = serial_mode ? &serial : NULL;
        jobs[i].n_predict = n_predict;
        jobs[i].seed = (unsigned)(i + 1);
    }
    uint64_t t0 = dk_now_ns();
    for (int i = 0; i < n_clients; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    size_t total = 0;
    for (int i = 0; i < n_clients; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].rc != DK_OK) fprintf(stderr, "client %d: %s\n", i, jobs[i].err);
        total += jobs[i].n_out;
        engine_session_free(jobs[i].session);
    }
    double s = (double)(dk_now_ns() - t0) / 1e9;
    return (double)total / s;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *levels = "1,2,4,8";
    int n_threads = 0;
    long n_predict = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_predict = atol(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) levels = argv[++i];
        else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: bench-batch MODEL.gguf [-t THREADS] [-n TOKENS] [-c 1,2,4,8]\n");
        return 2;
    }
    char err[DK_ERRLEN];
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = n_threads;
    if (engine_model_load(&model, path, &lp, err) != DK_OK) {
        fprintf(stderr, "bench-batch: %s\n", err);
        return 1;
    }
    engine_batcher *b = NULL;
    if (engine_batcher_new(&b, model, 512, 0, n_threads, err) != DK_OK) {
        fprintf(stderr, "bench-batch: %s\n", err);
        return 1;
    }
    printf("one session alone, no batcher (engine_generate): %.1f t/s\n", run_level(model, NULL, false, 1, n_predict, err));
    printf("%-8s %14s %14s %8s\n", "clients", "serial t/s", "batched t/s", "ratio");
    double base = 0;
    for (const char *p = levels; *p;) {
        int n = atoi(p);
        if (n < 1 || n > 64) break;
        double serial = run_level(model, NULL, true, n, n_predict, err);
        double batched = run_level(model, b, false, n, n_predict, err);
        if (base == 0) base = batched;
        printf("%-8d %14.1f %14.1f %8.2f   (batched vs 1 client batched: %.2fx)\n", n, serial, batched,
               batched / serial, batched / base);
        fflush(stdout);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    engine_batcher_stats st;
    engine_batcher_get_stats(b, &st);
    printf("batcher: %llu steps, %llu rows, at most %llu rows in a step\n", (unsigned long long)st.steps,
           (unsigned long long)st.rows, (unsigned long long)st.max_rows);
    engine_batcher_free(b);
    engine_model_free(model);
    return 0;
}
