/*
 * metrics.c: GET /metrics in Prometheus' text format: requests by endpoint and status, the
 * requests running now, prompt and generated tokens, resident models, the scheduler's queue,
 * the batchers' forward passes and rows, the process's resident memory. The per-endpoint
 * counts are a small table under a mutex (endpoints are the routes' static path patterns).
 *
 * Not for: the counters that handlers bump themselves (atomics in struct srv).
 */
#include "server/srv_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define METRICS_MAX_ROWS 256 /* (endpoint, status) pairs; later ones are folded into "other" */

typedef struct metrics_row {
    const char *endpoint;
    unsigned status;
    uint64_t count;
} metrics_row;

struct srv_metrics {
    pthread_mutex_t lock;
    metrics_row rows[METRICS_MAX_ROWS];
    size_t n_rows;
};

srv_metrics *srv_metrics_new(void)
{
    srv_metrics *m = dk_calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->lock, NULL);
    return m;
}

void srv_metrics_free(srv_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    dk_free(m);
}

void srv_metrics_record(srv_metrics *m, const char *endpoint, unsigned status)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->n_rows && !(m->rows[i].status == status && strcmp(m->rows[i].endpoint, endpoint) == 0)) i++;
    if (i == m->n_rows) {
        if (m->n_rows == METRICS_MAX_ROWS) i = METRICS_MAX_ROWS - 1, endpoint = "other";
        else m->n_rows++;
        m->rows[i].endpoint = endpoint;
        m->rows[i].status = status;
    }
    m->rows[i].count++;
    pthread_mutex_unlock(&m->lock);
}

static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void metric_head(dk_buf *b, const char *name, const char *type, const char *help)
{
    dk_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void srv_api_metrics(srv_request *rq)
{
    srv *s = rq->server;
    dk_buf b = {0};
    metric_head(&b, "duckling_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    pthread_mutex_lock(&s->metrics->lock);
    for (size_t i = 0; i < s->metrics->n_rows; i++)
        dk_buf_printf(&b, "duckling_requests_total{endpoint=\"%s\",status=\"%u\"} %llu\n", s->metrics->rows[i].endpoint,
                      s->metrics->rows[i].status, (unsigned long long)s->metrics->rows[i].count);
    pthread_mutex_unlock(&s->metrics->lock);

    size_t n_loaded = 0, n_waiting = 0, n_busy = 0;
    uint64_t steps = 0, rows = 0;
    srv_sched_stats(s->sched, &n_loaded, &n_waiting, &n_busy, &steps, &rows);
    struct {
        const char *name, *type, *help;
        unsigned long long value;
    } const scalars[] = {
        {"duckling_requests_active", "gauge", "Requests being served now (this one included).",
         (unsigned long long)atomic_load(&s->n_active)},
        {"duckling_prompt_tokens_total", "counter", "Prompt tokens evaluated.",
         (unsigned long long)atomic_load(&s->n_prompt_tokens)},
        {"duckling_generated_tokens_total", "counter", "Tokens generated.",
         (unsigned long long)atomic_load(&s->n_gen_tokens)},
        {"duckling_models_loaded", "gauge", "Models resident in memory.", (unsigned long long)n_loaded},
        {"duckling_queue_depth", "gauge", "Requests waiting for a model or a slot.", (unsigned long long)n_waiting},
        {"duckling_slots_busy", "gauge", "Sessions in use by a request.", (unsigned long long)n_busy},
        {"duckling_batch_steps_total", "counter", "Forward passes run by the batchers.", (unsigned long long)steps},
        {"duckling_batch_rows_total", "counter", "Tokens evaluated in those forward passes.",
         (unsigned long long)rows},
        {"process_resident_memory_bytes", "gauge", "Resident memory of the process.",
         (unsigned long long)resident_bytes()},
        {"process_start_time_seconds", "gauge", "Start time of the server, seconds since the epoch.",
         (unsigned long long)(s->started_ns / 1000000000ull)},
    };
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        metric_head(&b, scalars[i].name, scalars[i].type, scalars[i].help);
        dk_buf_printf(&b, "%s %llu\n", scalars[i].name, scalars[i].value);
    }
    if (b.failed) srv_reply_error(rq, 500, "out of memory");
    else srv_reply_text(rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    dk_buf_free(&b);
}
