/*
 * server: duckling's HTTP API. Ollama's endpoints under /api/ (streamed as NDJSON) and
 * OpenAI's under /v1/ (streamed as server-sent events), field for field, so that the
 * `ollama` and `openai` client libraries work unchanged (docs/api.md). Requests run
 * concurrently, one thread per connection; generations of the same model share forward
 * passes (engine_batcher, continuous batching); models stay resident for their keep_alive,
 * within a memory bound, least recently used unloaded first.
 *
 * Not for: the model store itself (store/), inference (engine/).
 */
#ifndef DK_SERVER_H
#define DK_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

typedef struct srv srv;

typedef struct srv_config {
    char host[256];            /* "127.0.0.1" */
    int port;                  /* 11434; 0: any free port (srv_port tells which) */
    const char *models_dir;    /* NULL: $DUCKLING_MODELS or ~/.duckling/models */
    const char *ollama_dir;    /* NULL: $OLLAMA_MODELS or ~/.ollama/models; "" none */
    size_t max_body;           /* bytes of a request body; larger: 413 (default 32 MiB) */
    int max_connections;       /* default 256 */
    unsigned connection_timeout_s; /* idle connection (slow clients), default 60 */
    int num_parallel;          /* sessions per model (DUCKLING_NUM_PARALLEL / OLLAMA_NUM_PARALLEL), default 4 */
    int max_queue;             /* requests waiting for a slot before 503 (..._MAX_QUEUE), default 512 */
    int max_loaded_models;     /* (..._MAX_LOADED_MODELS) default 3 */
    uint64_t max_memory;       /* bytes of resident models (weights + KV); 0: 3/4 of RAM */
    int64_t keep_alive_ns;     /* default 5 minutes (..._KEEP_ALIVE) */
    size_t num_ctx;            /* default context per session (..._CONTEXT_LENGTH), 4096 */
    int n_threads;             /* forward-pass threads, <= 0: all cores */
    bool quiet;                /* no request log on stderr */
} srv_config;

/* Defaults, then the environment: DUCKLING_HOST (or OLLAMA_HOST) as HOST, HOST:PORT or
 * http://HOST:PORT; DUCKLING_/OLLAMA_ NUM_PARALLEL, MAX_QUEUE, MAX_LOADED_MODELS, KEEP_ALIVE,
 * CONTEXT_LENGTH; DUCKLING_MAX_MEMORY. DK_ERR_ARG for a malformed value. */
int srv_config_default(srv_config *config, char *err);

/* Binds and starts serving in background threads. The caller frees with srv_free. */
int srv_start(srv **out, const srv_config *config, char *err);
int srv_port(const srv *server);   /* the bound port */
/* Stops accepting, cancels running generations, waits for them, unloads, frees. */
void srv_free(srv *server);        /* NULL is fine */

#endif
