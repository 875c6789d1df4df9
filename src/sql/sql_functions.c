/*
 * sql_functions.c: model calls inside SQL: prompt(), embed() and prompt_sql() as DuckDB scalar
 * functions (the contract is in sql.h, "model calls inside SQL").
 *
 * How a call runs. DuckDB hands a function a chunk of up to 2048 rows, from any of its threads.
 * prompt() and prompt_sql() turn the chunk's rows into jobs and queue them on the pool of their
 * model: `parallel` worker threads, each with its own engine_session in one engine_batcher, so
 * the decode steps of all the rows in flight share forward passes. The DuckDB thread waits for
 * its chunk's jobs and writes the answers in row order. The first failing row cancels the
 * rest of its chunk (engine cancel flag) and fails the query with its message.
 * embed() runs its rows one after the other in DuckDB's thread (DuckDB runs chunks in
 * parallel already, and a bert forward pass is one batch).
 *
 * Why prompt_sql reads the schema at bind time: DuckDB calls the function while its
 * connection is busy with the query, and a query on that connection from inside would
 * deadlock. Binding happens before execution, so the bind callback reads the description and
 * the grammar on a second connection of the same database and hands them to execution as
 * bind data (shared, reference-counted: DuckDB copies bind data freely).
 *
 * Not for: the shell (cli/cmd_sql.c), model files and names (the caller's load callback).
 */
#include "sql/sql_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop

#define FN_DEFAULT_PARALLEL 8
#define FN_DEFAULT_NUM_PREDICT 256
#define FN_DEFAULT_MAX_CTX 2048
#define FN_SQL_DESCRIBE_SAMPLES 3
#define FN_SQL_MAX_TABLES 16 /* tables prompt_sql shows the model: the most relevant to a constant question */
#define FN_SQL_ATTEMPTS 4 /* prompt_sql: a first query and three repairs */
#define FN_SQL_REPAIR_TEMPERATURE 0.7f

typedef struct fn_pool fn_pool;
typedef struct fn_batch fn_batch;

/* A loaded model, by the name it was asked for (NULL: given in the configuration). */
typedef struct fn_model {
    char *name;
    engine_model *model;
    bool owned;           /* loaded through cfg.load: freed here */
    fn_pool *pool;        /* chat models: made on first use */
    struct fn_model *next;
} fn_model;

/* A format text and its grammar. */
typedef struct fn_grammar {
    char *format;
    sample_grammar *grammar;
    struct fn_grammar *next;
} fn_grammar;

/* One row's model call. */
typedef struct fn_job {
    fn_batch *batch;
    fn_pool *pool;                 /* of its model */
    const char *system;            /* system message, or NULL (borrowed) */
    const char *text;              /* the user message (borrowed: a DuckDB vector or owned_text) */
    size_t n_text;
    char *owned_text;              /* prompt_sql's built message (owned) */
    char *previous;                /* prompt_sql's repair: the refused query (owned) ... */
    char *feedback;                /* ... and what DuckDB said of it (owned), or both NULL */
    const sample_grammar *grammar; /* NULL or borrowed */
    long num_predict;
    bool resample;                 /* a repair: sampled (FN_SQL_REPAIR_TEMPERATURE, seed), not greedy */
    uint64_t seed;
    dk_buf answer;
    size_t n_generated;
    struct fn_job *next;
} fn_job;

/* The jobs of one chunk: the DuckDB thread waits until n_pending is 0. */
struct fn_batch {
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t n_pending;
    atomic_int cancel;   /* set by the first failure, or by sql_functions_cancel */
    int rc;              /* the first failure */
    char err[DK_ERRLEN];
    struct fn_batch *next_active;
};

/* The worker threads and sessions of one chat model. */
struct fn_pool {
    sql_functions *fns;
    engine_model *model;
    engine_batcher *batcher;
    size_t n_ctx;
    int n_workers;
    engine_session **sessions; /* (n_workers) */
    pthread_t *threads;        /* (n_workers) */
    int n_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    fn_job *head, *tail;       /* queued jobs, oldest first */
    bool stopping;
};

typedef struct fn_worker_arg {
    fn_pool *pool;
    int i_worker;
} fn_worker_arg;

/* What prompt_sql's bind read: shared by the copies DuckDB makes of bind data. */
typedef struct fn_schema {
    atomic_int refs;
    char *description;        /* sql_describe's text (owned) */
    sample_grammar *grammar;  /* sql_grammar's, parsed (owned) */
    char error[DK_ERRLEN];    /* non-empty: reading it failed, reported when a row runs */
} fn_schema;

struct sql_functions {
    sql_functions_config cfg;   /* the strings point at the copies below */
    char *model_name, *embed_model_name;
    sql_db *schema_db;          /* the second connection (prompt_sql's bind) */
    pthread_mutex_t schema_lock;/* one bind at a time on it */
    pthread_mutex_t lock;       /* models (and cfg.load), grammars, active batches */
    fn_model *models;
    fn_grammar *grammars;
    fn_batch *active;
    atomic_int cancelled;
    atomic_ullong n_prompts, n_generated, n_embeds;
};

/* ---- configuration ---- */

void sql_functions_config_default(sql_functions_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->parallel = FN_DEFAULT_PARALLEL;
    cfg->num_predict = FN_DEFAULT_NUM_PREDICT;
}

/* ---- models ---- */

static fn_model *fn_model_find(sql_functions *fns, const char *name)
{
    for (fn_model *m = fns->models; m; m = m->next)
        if ((!name && !m->name) || (name && m->name && strcmp(name, m->name) == 0)) return m;
    return NULL;
}

static fn_model *fn_model_add(sql_functions *fns, const char *name, engine_model *model, bool owned)
{
    fn_model *m = dk_calloc(1, sizeof *m);
    if (!m) return NULL;
    if (name && !(m->name = dk_strdup(name))) {
        dk_free(m);
        return NULL;
    }
    m->model = model;
    m->owned = owned;
    m->next = fns->models;
    fns->models = m;
    return m;
}

/* The model called name, loaded through cfg.load on first use. Under fns->lock. */
static int fn_model_by_name(sql_functions *fns, const char *name, fn_model **out, char *err)
{
    fn_model *m = fn_model_find(fns, name);
    if (m) {
        *out = m;
        return DK_OK;
    }
    if (!fns->cfg.load) return dk_fail(err, DK_ERR_NOTFOUND, "unknown model '%s' (no model loader is configured)", name);
    engine_model *model = NULL;
    char why[DK_ERRLEN] = "";
    int rc = fns->cfg.load(fns->cfg.load_user, name, &model, why); /* one at a time: under fns->lock */
    if (rc != DK_OK) return dk_fail(err, rc, "cannot load model '%s': %s", name, why[0] ? why : dk_status_name(rc));
    if (!model) return dk_fail(err, DK_ERR_NOTFOUND, "cannot load model '%s'", name);
    m = fn_model_add(fns, name, model, true);
    if (!m) {
        engine_model_free(model);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = m;
    return DK_OK;
}

/* The chat model for a call: name, or the configured one. Under fns->lock. */
static int fn_chat_model(sql_functions *fns, const char *name, fn_model **out, char *err)
{
    int rc;
    if (name) {
        rc = fn_model_by_name(fns, name, out, err);
    } else if (fns->cfg.model) {
        fn_model *m = fn_model_find(fns, NULL);
        if (!m && !(m = fn_model_add(fns, NULL, fns->cfg.model, false))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        *out = m;
        rc = DK_OK;
    } else if (fns->model_name) {
        rc = fn_model_by_name(fns, fns->model_name, out, err);
    } else {
        return dk_fail(err, DK_ERR_NOTFOUND, "no default model is set; name one with model := 'NAME'");
    }
    if (rc != DK_OK) return rc;
    if (engine_is_embedding((*out)->model) || !engine_has_weights((*out)->model))
        return dk_fail(err, DK_ERR_UNSUPPORTED, "%s is %s, not a chat model", name ? name : "the default model",
                       engine_is_embedding((*out)->model) ? "an embedding model" : "a vocabulary without weights");
    return DK_OK;
}

/* The embedding model for a call. Under fns->lock. */
static int fn_embed_model(sql_functions *fns, const char *name, engine_model **out, char *err)
{
    fn_model *m = NULL;
    int rc = DK_OK;
    const char *label = name;
    if (name) {
        rc = fn_model_by_name(fns, name, &m, err);
        if (rc != DK_OK) return rc;
        *out = m->model;
    } else if (fns->cfg.embed_model) {
        *out = fns->cfg.embed_model;
    } else if (fns->embed_model_name) {
        label = fns->embed_model_name;
        rc = fn_model_by_name(fns, fns->embed_model_name, &m, err);
        if (rc != DK_OK) return rc;
        *out = m->model;
    } else {
        char why[DK_ERRLEN];
        if (fns->cfg.model) {
            *out = fns->cfg.model;
        } else if (!fns->model_name || fn_model_by_name(fns, fns->model_name, &m, why) != DK_OK) {
            return dk_fail(err, DK_ERR_NOTFOUND, "no embedding model is set; name one with model := 'NAME'");
        } else {
            *out = m->model;
        }
        if (!engine_is_embedding(*out))
            return dk_fail(err, DK_ERR_NOTFOUND, "no embedding model is set (the default model is %s, not an "
                                                 "embedding model); name one with model := 'NAME'", engine_arch(*out));
        return DK_OK;
    }
    if (!engine_is_embedding(*out))
        return dk_fail(err, DK_ERR_UNSUPPORTED, "%s is not an embedding model (%s)", label ? label : "the embedding model",
                       engine_arch(*out));
    return DK_OK;
}

/* ---- grammars of formats ---- */

/* The grammar of a format text ('json' or a JSON schema), made once per text. Under fns->lock. */
static int fn_format_grammar(sql_functions *fns, const char *format, size_t n_format, const sample_grammar **out,
                             char *err)
{
    for (fn_grammar *g = fns->grammars; g; g = g->next)
        if (strlen(g->format) == n_format && memcmp(g->format, format, n_format) == 0) {
            *out = g->grammar;
            return DK_OK;
        }
    json_t *value = NULL;
    if (n_format == 4 && memcmp(format, "json", 4) == 0) {
        value = json_string("json");
    } else {
        json_error_t je;
        value = json_loadb(format, n_format, 0, &je);
        if (!value) return dk_fail(err, DK_ERR_ARG, "format is not 'json' or a JSON schema: %s", je.text);
        if (!json_is_object(value)) {
            json_decref(value);
            return dk_fail(err, DK_ERR_ARG, "format is not 'json' or a JSON schema object");
        }
    }
    if (!value) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    sample_grammar *grammar = NULL;
    char why[DK_ERRLEN];
    int rc = engine_format_grammar(value, &grammar, why);
    json_decref(value);
    if (rc != DK_OK) return dk_fail(err, rc, "bad format: %s", why);
    fn_grammar *g = dk_calloc(1, sizeof *g);
    if (!g || !(g->format = dk_strndup(format, n_format))) {
        dk_free(g);
        sample_grammar_free(grammar);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    g->grammar = grammar;
    g->next = fns->grammars;
    fns->grammars = g;
    *out = grammar;
    return DK_OK;
}

/* ---- batches ---- */

static void fn_batch_init(fn_batch *b, size_t n_jobs)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->done, NULL);
    b->n_pending = n_jobs;
    atomic_init(&b->cancel, 0);
}

static void fn_batch_destroy(fn_batch *b)
{
    pthread_cond_destroy(&b->done);
    pthread_mutex_destroy(&b->lock);
}

/* A job is over: the first failure is kept and stops the batch's other rows. */
static void fn_batch_finish(fn_batch *b, int rc, const char *err)
{
    pthread_mutex_lock(&b->lock);
    if (rc != DK_OK && b->rc == DK_OK) {
        b->rc = rc;
        dk_strlcpy(b->err, err, sizeof b->err);
        atomic_store(&b->cancel, 1);
    }
    if (--b->n_pending == 0) pthread_cond_broadcast(&b->done);
    pthread_mutex_unlock(&b->lock);
}

/* Makes b visible to sql_functions_cancel (DK_ERR_LIMIT when model calls are cancelled now). */
static int fn_batch_activate(sql_functions *fns, fn_batch *b, char *err)
{
    pthread_mutex_lock(&fns->lock);
    int rc = DK_OK;
    if (atomic_load(&fns->cancelled)) rc = dk_fail(err, DK_ERR_LIMIT, "interrupted");
    else b->next_active = fns->active, fns->active = b;
    pthread_mutex_unlock(&fns->lock);
    return rc;
}

static void fn_batch_deactivate(sql_functions *fns, fn_batch *b)
{
    pthread_mutex_lock(&fns->lock);
    for (fn_batch **p = &fns->active; *p; p = &(*p)->next_active)
        if (*p == b) {
            *p = b->next_active;
            break;
        }
    pthread_mutex_unlock(&fns->lock);
}

/* ---- the pools ---- */

/* Runs one job on a worker's session. */
static int fn_job_run(sql_functions *fns, engine_session *session, fn_job *job, char *err)
{
    if (atomic_load(&job->batch->cancel)) return dk_fail(err, DK_ERR_LIMIT, "cancelled");
    json_t *messages = json_array();
    json_t *user = json_stringn(job->text, job->n_text);
    if (!messages || !user) {
        json_decref(messages);
        if (!user) return dk_fail(err, DK_ERR_ARG, "the text is not valid UTF-8");
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    int rc = DK_OK;
    if (job->system && json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "system", "content", job->system)))
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK && json_array_append_new(messages, json_pack("{s:s,s:o}", "role", "user", "content", user)))
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else if (rc != DK_OK)
        json_decref(user);
    if (rc == DK_OK && job->previous &&
        (json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "assistant", "content", job->previous)) ||
         json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", job->feedback))))
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc != DK_OK) {
        json_decref(messages);
        return rc;
    }
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = messages;
    cp.think = 0; /* a row's answer, not a reasoning trace: thinking models answer at once */
    cp.gen.sampling.temperature = fns->cfg.temperature;
    cp.gen.sampling.seed = fns->cfg.seed;
    if (job->resample) {
        if (cp.gen.sampling.temperature < FN_SQL_REPAIR_TEMPERATURE) cp.gen.sampling.temperature = FN_SQL_REPAIR_TEMPERATURE;
        cp.gen.sampling.seed = job->seed;
    }
    cp.gen.num_predict = job->num_predict;
    cp.gen.grammar = job->grammar;
    cp.gen.cancel = &job->batch->cancel;
    engine_chat_result res;
    rc = engine_chat(session, &cp, &res, err);
    if (rc == DK_OK && res.timings.done == ENGINE_DONE_CANCEL) rc = dk_fail(err, DK_ERR_LIMIT, "cancelled");
    if (rc == DK_OK) {
        job->answer = res.content; /* taken over */
        memset(&res.content, 0, sizeof res.content);
        job->n_generated = res.timings.n_eval;
    } else if (rc == DK_ERR_LIMIT && strstr(err, "context full")) {
        char why[DK_ERRLEN];
        dk_strlcpy(why, err, sizeof why);
        dk_fail(err, rc, "the prompt is longer than the context (%s)", why);
    }
    engine_chat_result_free(&res);
    json_decref(messages);
    return rc;
}

static void *fn_worker_main(void *arg)
{
    fn_worker_arg *wa = arg;
    fn_pool *pool = wa->pool;
    engine_session *session = pool->sessions[wa->i_worker];
    dk_free(wa);
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stopping) pthread_cond_wait(&pool->wake, &pool->lock);
        fn_job *job = pool->head;
        if (job) {
            pool->head = job->next;
            if (!pool->head) pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!job) break; /* stopping, and nothing left */
        char err[DK_ERRLEN] = "";
        int rc = fn_job_run(pool->fns, session, job, err);
        fn_batch_finish(job->batch, rc, err);
    }
    return NULL;
}

static void fn_pool_free(fn_pool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->threads[i], NULL);
    for (int i = 0; pool->sessions && i < pool->n_workers; i++) engine_session_free(pool->sessions[i]);
    engine_batcher_free(pool->batcher);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    dk_free(pool->sessions);
    dk_free(pool->threads);
    dk_free(pool);
}

static int fn_pool_new(sql_functions *fns, engine_model *model, fn_pool **out, char *err)
{
    fn_pool *pool = dk_calloc(1, sizeof *pool);
    if (!pool) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    pool->fns = fns;
    pool->model = model;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->n_workers = fns->cfg.parallel;
    size_t n_ctx = fns->cfg.n_ctx;
    if (!n_ctx) {
        size_t train = engine_n_ctx_train(model);
        n_ctx = train && train < FN_DEFAULT_MAX_CTX ? train : FN_DEFAULT_MAX_CTX;
    }
    pool->n_ctx = n_ctx;
    pool->sessions = dk_calloc((size_t)pool->n_workers, sizeof *pool->sessions);
    pool->threads = dk_calloc((size_t)pool->n_workers, sizeof *pool->threads);
    int rc = DK_OK;
    if (!pool->sessions || !pool->threads) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto fail;
    }
    rc = engine_batcher_new(&pool->batcher, model, n_ctx, 0, fns->cfg.n_threads, err);
    if (rc != DK_OK) goto fail;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = n_ctx;
    sp.n_threads = fns->cfg.n_threads;
    sp.batcher = pool->batcher;
    for (int i = 0; i < pool->n_workers; i++)
        if ((rc = engine_session_new(&pool->sessions[i], model, &sp, err)) != DK_OK) goto fail;
    for (int i = 0; i < pool->n_workers; i++) {
        fn_worker_arg *wa = dk_malloc(sizeof *wa);
        if (!wa) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            goto fail;
        }
        *wa = (fn_worker_arg){pool, i};
        if (pthread_create(&pool->threads[i], NULL, fn_worker_main, wa) != 0) {
            dk_free(wa);
            rc = dk_fail(err, DK_ERR_NOMEM, "cannot start a worker thread");
            goto fail;
        }
        pool->n_started++;
    }
    *out = pool;
    return DK_OK;
fail:
    fn_pool_free(pool);
    return rc;
}

/* The pool of a chat model, started on first use. Under fns->lock. */
static int fn_model_pool(sql_functions *fns, fn_model *m, fn_pool **out, char *err)
{
    if (!m->pool) {
        int rc = fn_pool_new(fns, m->model, &m->pool, err);
        if (rc != DK_OK) return rc;
    }
    *out = m->pool;
    return DK_OK;
}

static void fn_pool_push(fn_pool *pool, fn_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->tail) pool->tail->next = job;
    else pool->head = job;
    pool->tail = job;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
}

/* ---- reading DuckDB vectors ---- */

typedef struct fn_column {
    duckdb_string_t *data;
    uint64_t *validity;
} fn_column;

static fn_column fn_column_of(duckdb_data_chunk input, idx_t i_col)
{
    duckdb_vector v = duckdb_data_chunk_get_vector(input, i_col);
    return (fn_column){duckdb_vector_get_data(v), duckdb_vector_get_validity(v)};
}

/* Row i's string (not NUL-terminated), or NULL for SQL NULL. */
static const char *fn_column_string(fn_column *c, idx_t i, size_t *n)
{
    if (c->validity && !duckdb_validity_row_is_valid(c->validity, i)) return NULL;
    *n = duckdb_string_t_length(c->data[i]);
    return duckdb_string_t_data(&c->data[i]);
}

static void fn_set_null(duckdb_vector output, idx_t i)
{
    duckdb_vector_ensure_validity_writable(output);
    duckdb_validity_set_row_invalid(duckdb_vector_get_validity(output), i);
}

static void fn_error(duckdb_function_info info, const char *function, const char *message)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s(): %s", function, message);
    duckdb_scalar_function_set_error(info, b.data ? b.data : message);
    dk_buf_free(&b);
}

/* ---- running a chunk of jobs ---- */

/* Runs the jobs as one batch on their pools, waits for all, and fails with the batch's
 * first error. */
static int fn_jobs_run(sql_functions *fns, fn_job **jobs, size_t n_jobs, char *err)
{
    fn_batch batch;
    fn_batch_init(&batch, n_jobs);
    int rc = fn_batch_activate(fns, &batch, err);
    if (rc != DK_OK) {
        fn_batch_destroy(&batch);
        return rc;
    }
    for (size_t i = 0; i < n_jobs; i++) {
        jobs[i]->batch = &batch;
        fn_pool_push(jobs[i]->pool, jobs[i]);
    }
    pthread_mutex_lock(&batch.lock);
    while (batch.n_pending > 0) pthread_cond_wait(&batch.done, &batch.lock);
    pthread_mutex_unlock(&batch.lock);
    fn_batch_deactivate(fns, &batch);
    if (atomic_load(&fns->cancelled)) rc = dk_fail(err, DK_ERR_LIMIT, "interrupted");
    else if (batch.rc != DK_OK) rc = dk_fail(err, batch.rc, "%s", batch.err);
    fn_batch_destroy(&batch);
    if (rc != DK_OK) return rc;
    uint64_t n_generated = 0;
    for (size_t i = 0; i < n_jobs; i++) n_generated += jobs[i]->n_generated;
    atomic_fetch_add(&fns->n_prompts, n_jobs);
    atomic_fetch_add(&fns->n_generated, n_generated);
    return DK_OK;
}

/* The jobs of a chunk as a list of pointers (what fn_jobs_run takes). NULL: out of memory. */
static fn_job **fn_job_list(fn_job *jobs, size_t n_jobs)
{
    fn_job **list = dk_calloc(n_jobs ? n_jobs : 1, sizeof *list);
    for (size_t i = 0; list && i < n_jobs; i++) list[i] = &jobs[i];
    return list;
}

static void fn_jobs_free(fn_job *jobs, size_t n_jobs)
{
    for (size_t i = 0; jobs && i < n_jobs; i++) {
        dk_buf_free(&jobs[i].answer);
        dk_free(jobs[i].owned_text);
        dk_free(jobs[i].previous);
        dk_free(jobs[i].feedback);
    }
    dk_free(jobs);
}

/* Writes the answers of jobs (rows[i] is the row of job i) and NULL for the other rows. */
static void fn_write_answers(duckdb_vector output, idx_t n_rows, const fn_job *jobs, const idx_t *rows, size_t n_jobs)
{
    size_t k = 0;
    for (idx_t i = 0; i < n_rows; i++) {
        if (k < n_jobs && rows[k] == i) {
            const dk_buf *a = &jobs[k].answer;
            duckdb_vector_assign_string_element_len(output, i, a->data ? a->data : "", a->len);
            k++;
        } else {
            fn_set_null(output, i);
        }
    }
}

/* ---- prompt(text, model, format) ---- */

static void fn_prompt(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    sql_functions *fns = duckdb_scalar_function_get_extra_info(info);
    idx_t n_rows = duckdb_data_chunk_get_size(input);
    fn_column text = fn_column_of(input, 0), model = fn_column_of(input, 1), format = fn_column_of(input, 2);
    fn_job *jobs = dk_calloc(n_rows ? n_rows : 1, sizeof *jobs);
    idx_t *rows = dk_calloc(n_rows ? n_rows : 1, sizeof *rows);
    char err[DK_ERRLEN] = "";
    int rc = jobs && rows ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    size_t n_jobs = 0;
    pthread_mutex_lock(&fns->lock);
    for (idx_t i = 0; i < n_rows && rc == DK_OK; i++) {
        size_t n_text = 0, n_model = 0, n_format = 0;
        const char *t = fn_column_string(&text, i, &n_text);
        if (!t) continue;
        const char *m = fn_column_string(&model, i, &n_model), *f = fn_column_string(&format, i, &n_format);
        char *name = m ? dk_strndup(m, n_model) : NULL;
        fn_model *fm = NULL;
        if (m && !name) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        if (rc == DK_OK) rc = fn_chat_model(fns, name, &fm, err);
        dk_free(name);
        fn_pool *pool = NULL;
        if (rc == DK_OK) rc = fn_model_pool(fns, fm, &pool, err);
        const sample_grammar *g = NULL;
        if (rc == DK_OK && f) rc = fn_format_grammar(fns, f, n_format, &g, err);
        if (rc != DK_OK) break;
        jobs[n_jobs] = (fn_job){.pool = pool, .text = t, .n_text = n_text, .grammar = g,
                                .num_predict = fns->cfg.num_predict};
        rows[n_jobs++] = i;
    }
    pthread_mutex_unlock(&fns->lock);
    fn_job **list = rc == DK_OK ? fn_job_list(jobs, n_jobs) : NULL;
    if (rc == DK_OK && !list) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) rc = fn_jobs_run(fns, list, n_jobs, err);
    if (rc == DK_OK) fn_write_answers(output, n_rows, jobs, rows, n_jobs);
    else fn_error(info, "prompt", err);
    fn_jobs_free(jobs, n_jobs);
    dk_free(list);
    dk_free(rows);
}

/* ---- embed(text, model) ---- */

/* Embeds the rows of one model (models[i] == em) together: engine_embed_batch, the path of
 * /api/embed and of ingest, packs them into shared forward passes. */
static int fn_embed_group(engine_model *em, engine_model **models, char **texts, float **vectors, idx_t n_rows, char *err)
{
    const char **batch = dk_malloc_array(n_rows, sizeof *batch);
    idx_t *where = dk_malloc_array(n_rows, sizeof *where);
    size_t n = 0, dim = engine_n_embd(em);
    int rc = batch && where ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (idx_t i = 0; rc == DK_OK && i < n_rows; i++) {
        if (models[i] != em) continue;
        batch[n] = texts[i];
        where[n++] = i;
        models[i] = NULL; /* done */
    }
    float *out = rc == DK_OK ? dk_malloc_array(n * dim, sizeof(float)) : NULL;
    if (rc == DK_OK && !out) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) rc = engine_embed_batch(em, batch, n, false, 0, out, NULL, err);
    for (size_t k = 0; rc == DK_OK && k < n; k++) {
        if (!(vectors[where[k]] = dk_malloc_array(dim, sizeof(float)))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        else memcpy(vectors[where[k]], out + k * dim, dim * sizeof(float));
    }
    dk_free(out);
    dk_free(batch);
    dk_free(where);
    return rc;
}

/* The model of every row with a text (models[i] NULL for NULL texts); texts[i] a copy. */
static int fn_embed_models(sql_functions *fns, duckdb_data_chunk input, engine_model **models, char **texts, char *err)
{
    idx_t n_rows = duckdb_data_chunk_get_size(input);
    fn_column text = fn_column_of(input, 0), model = fn_column_of(input, 1);
    int rc = DK_OK;
    for (idx_t i = 0; i < n_rows && rc == DK_OK; i++) {
        size_t n_text = 0, n_model = 0;
        const char *t = fn_column_string(&text, i, &n_text);
        if (!t) continue;
        const char *m = fn_column_string(&model, i, &n_model);
        char *name = m ? dk_strndup(m, n_model) : NULL;
        if ((m && !name) || !(texts[i] = dk_strndup(t, n_text))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        if (rc == DK_OK) {
            pthread_mutex_lock(&fns->lock);
            rc = fn_embed_model(fns, name, &models[i], err);
            pthread_mutex_unlock(&fns->lock);
        }
        dk_free(name);
    }
    return rc;
}

static void fn_embed(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    sql_functions *fns = duckdb_scalar_function_get_extra_info(info);
    idx_t n_rows = duckdb_data_chunk_get_size(input);
    char err[DK_ERRLEN] = "";
    int rc = DK_OK;
    float **vectors = dk_calloc(n_rows ? n_rows : 1, sizeof *vectors);
    size_t *dims = dk_calloc(n_rows ? n_rows : 1, sizeof *dims);
    engine_model **models = dk_calloc(n_rows ? n_rows : 1, sizeof *models);
    char **texts = dk_calloc(n_rows ? n_rows : 1, sizeof *texts);
    size_t total = 0;
    if (!vectors || !dims || !models || !texts) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) rc = fn_embed_models(fns, input, models, texts, err);
    for (idx_t i = 0; rc == DK_OK && i < n_rows; i++) {
        if (models[i]) dims[i] = engine_n_embd(models[i]);
        total += dims[i];
    }
    for (idx_t i = 0; rc == DK_OK && i < n_rows; i++) {
        if (atomic_load(&fns->cancelled)) rc = dk_fail(err, DK_ERR_LIMIT, "interrupted");
        else if (models[i]) rc = fn_embed_group(models[i], models, texts, vectors, n_rows, err);
    }
    if (rc == DK_OK && duckdb_list_vector_reserve(output, total) == DuckDBError)
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) {
        duckdb_list_vector_set_size(output, total);
        float *values = duckdb_vector_get_data(duckdb_list_vector_get_child(output));
        duckdb_list_entry *entries = duckdb_vector_get_data(output);
        size_t offset = 0;
        uint64_t n_embedded = 0;
        for (idx_t i = 0; i < n_rows; i++) {
            if (!vectors[i]) {
                entries[i] = (duckdb_list_entry){offset, 0};
                fn_set_null(output, i);
                continue;
            }
            memcpy(values + offset, vectors[i], dims[i] * sizeof(float));
            entries[i] = (duckdb_list_entry){offset, dims[i]};
            offset += dims[i];
            n_embedded++;
        }
        atomic_fetch_add(&fns->n_embeds, n_embedded);
    } else {
        fn_error(info, "embed", err);
    }
    for (idx_t i = 0; i < n_rows; i++) {
        if (vectors) dk_free(vectors[i]);
        if (texts) dk_free(texts[i]);
    }
    dk_free(vectors);
    dk_free(dims);
    dk_free(models);
    dk_free(texts);
}

/* ---- prompt_sql(question) ---- */

static const char fn_sql_system[] =
    "You write DuckDB SQL. Answer the question with one SELECT query over the tables below. "
    "Reply with the query only.";

static void fn_schema_release(void *p)
{
    fn_schema *s = p;
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    dk_free(s->description);
    sample_grammar_free(s->grammar);
    dk_free(s);
}

static void *fn_schema_copy(void *p)
{
    fn_schema *s = p;
    atomic_fetch_add(&s->refs, 1);
    return s;
}

/* Reads the description and the grammar of the schema on the second connection. */
static void fn_schema_read(sql_functions *fns, const char *question, fn_schema *s)
{
    dk_buf description = {0}, gbnf = {0};
    char err[DK_ERRLEN];
    sql_describe_opts opts = {.n_samples = FN_SQL_DESCRIBE_SAMPLES, .max_tables = FN_SQL_MAX_TABLES};
    sql_grammar_opts gopts = {.root = "root", .json_string = 0, .max_tables = FN_SQL_MAX_TABLES};
    pthread_mutex_lock(&fns->schema_lock);
    int rc = sql_describe(fns->schema_db, question, &opts, &description, err);
    if (rc == DK_OK) rc = sql_grammar(fns->schema_db, question, &gopts, &gbnf, err);
    pthread_mutex_unlock(&fns->schema_lock);
    if (rc == DK_OK && (description.failed || gbnf.failed)) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) {
        char why[DK_ERRLEN];
        rc = sample_grammar_parse(&s->grammar, gbnf.data, gbnf.len, "root", why);
        if (rc != DK_OK) dk_fail(err, rc, "the SQL grammar does not parse: %s", why);
    }
    if (rc == DK_OK) s->description = dk_buf_detach(&description);
    else dk_strlcpy(s->error, err, sizeof s->error);
    dk_buf_free(&description);
    dk_buf_free(&gbnf);
}

/* The question when the argument is a constant, else NULL (caller frees with dk_free). */
static char *fn_constant_question(duckdb_bind_info info, duckdb_expression arg)
{
    if (!duckdb_expression_is_foldable(arg)) return NULL;
    duckdb_client_context context = NULL;
    duckdb_scalar_function_get_client_context(info, &context);
    duckdb_value value = NULL;
    duckdb_error_data e = duckdb_expression_fold(context, arg, &value);
    char *question = NULL;
    if (!duckdb_error_data_has_error(e) && value && !duckdb_is_null_value(value)) {
        char *s = duckdb_get_varchar(value);
        if (s) question = dk_strdup(s);
        duckdb_free(s);
    }
    if (value) duckdb_destroy_value(&value);
    duckdb_destroy_error_data(&e);
    duckdb_destroy_client_context(&context);
    return question;
}

static void fn_prompt_sql_bind(duckdb_bind_info info)
{
    sql_functions *fns = duckdb_scalar_function_bind_get_extra_info(info);
    duckdb_expression arg = duckdb_scalar_function_bind_get_argument(info, 0);
    duckdb_logical_type type = duckdb_expression_return_type(arg);
    /* A macro's body is bound once when the macro is made, with the parameter still untyped:
     * no query will run that binding, so the schema is not read for it. */
    bool in_macro = duckdb_get_type_id(type) == DUCKDB_TYPE_INVALID;
    duckdb_destroy_logical_type(&type);
    fn_schema *s = NULL;
    if (!in_macro && (s = dk_calloc(1, sizeof *s))) {
        atomic_init(&s->refs, 1);
        char *question = fn_constant_question(info, arg);
        fn_schema_read(fns, question, s);
        dk_free(question);
        duckdb_scalar_function_set_bind_data(info, s, fn_schema_release);
        duckdb_scalar_function_set_bind_data_copy(info, fn_schema_copy);
    } else if (!in_macro) {
        duckdb_scalar_function_bind_set_error(info, "prompt_sql(): out of memory");
    }
    duckdb_destroy_expression(&arg);
}

/* The user message of prompt_sql: the schema, then the question. */
static char *fn_sql_message(const fn_schema *s, const char *question, size_t n_question)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "Tables:\n");
    dk_buf_puts(&b, s->description ? s->description : "");
    dk_buf_puts(&b, "\nQuestion: ");
    dk_buf_append(&b, question, n_question);
    return b.failed ? (dk_buf_free(&b), NULL) : dk_buf_detach(&b);
}

/* Trims the spaces and newlines a model writes around its query. */
static void fn_trim(dk_buf *b)
{
    size_t start = 0, end = b->len;
    while (start < end && strchr(" \t\r\n", b->data[start])) start++;
    while (end > start && strchr(" \t\r\n", b->data[end - 1])) end--;
    if (start) memmove(b->data, b->data + start, end - start);
    b->len = end - start;
    if (b->data) b->data[b->len] = '\0';
}

/* Checks the queries of the jobs just answered on the second connection (prepared, not
 * run). A refused one gets its query and DuckDB's message as the repair turn of its next
 * attempt (sampled, so that it differs), loses its answer and stays in jobs; the accepted
 * ones leave it. */
static int fn_sql_check(sql_functions *fns, fn_job **jobs, size_t *n_jobs, int attempt, char *err)
{
    size_t n_refused = 0;
    for (size_t k = 0; k < *n_jobs; k++) {
        fn_job *job = jobs[k];
        char why[DK_ERRLEN];
        pthread_mutex_lock(&fns->schema_lock);
        int rc = sql_check_query(fns->schema_db, job->answer.data ? job->answer.data : "", why);
        pthread_mutex_unlock(&fns->schema_lock);
        if (rc == DK_OK) continue;
        dk_free(job->previous);
        dk_free(job->feedback);
        dk_buf feedback = {0};
        dk_buf_printf(&feedback, "DuckDB refused that query: %s\nWrite a corrected query.", why);
        job->previous = dk_strdup(job->answer.data ? job->answer.data : "");
        job->feedback = feedback.failed ? NULL : dk_buf_detach(&feedback);
        dk_buf_free(&feedback);
        dk_buf_free(&job->answer);
        if (!job->previous || !job->feedback) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        /* a greedy model that wrote the query once writes it again: the repair samples */
        job->resample = true;
        job->seed = fns->cfg.seed + (uint64_t)attempt * 0x9E3779B97F4A7C15ull + (uint64_t)k;
        jobs[n_refused++] = job;
    }
    *n_jobs = n_refused;
    return DK_OK;
}

static void fn_prompt_sql(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    sql_functions *fns = duckdb_scalar_function_get_extra_info(info);
    const fn_schema *schema = duckdb_scalar_function_get_bind_data(info);
    idx_t n_rows = duckdb_data_chunk_get_size(input);
    fn_column question = fn_column_of(input, 0);
    fn_job *jobs = dk_calloc(n_rows ? n_rows : 1, sizeof *jobs);
    idx_t *rows = dk_calloc(n_rows ? n_rows : 1, sizeof *rows);
    fn_job **list = dk_calloc(n_rows ? n_rows : 1, sizeof *list);
    char err[DK_ERRLEN] = "";
    int rc = jobs && rows && list ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    size_t n_jobs = 0;
    fn_pool *pool = NULL;
    for (idx_t i = 0; i < n_rows && rc == DK_OK; i++) {
        size_t n_q = 0;
        const char *q = fn_column_string(&question, i, &n_q);
        if (!q) continue;
        if (!pool) {
            /* the first row that asks reads the state: an all-NULL column needs no model */
            if (!schema) rc = dk_fail(err, DK_ERR_ARG, "the schema was not read at bind time");
            else if (schema->error[0]) rc = dk_fail(err, DK_ERR_FORMAT, "cannot read the schema: %s", schema->error);
            fn_model *fm = NULL;
            pthread_mutex_lock(&fns->lock);
            if (rc == DK_OK) rc = fn_chat_model(fns, NULL, &fm, err);
            if (rc == DK_OK) rc = fn_model_pool(fns, fm, &pool, err);
            pthread_mutex_unlock(&fns->lock);
            if (rc != DK_OK) break;
        }
        char *message = fn_sql_message(schema, q, n_q);
        if (!message) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            break;
        }
        /* the grammar bounds a query's length, the context bounds the rest */
        jobs[n_jobs] = (fn_job){.pool = pool, .system = fn_sql_system, .text = message, .n_text = strlen(message),
                                .owned_text = message, .grammar = schema->grammar, .num_predict = -1};
        list[n_jobs] = &jobs[n_jobs];
        rows[n_jobs++] = i;
    }
    /* The grammar makes queries that parse; one that does not bind (a name used wrongly) is
     * sent back with DuckDB's message, up to FN_SQL_ATTEMPTS attempts in all; the last
     * attempt's query stands as written. */
    size_t n_run = n_jobs;
    for (int attempt = 1; rc == DK_OK && n_run > 0; attempt++) {
        rc = fn_jobs_run(fns, list, n_run, err);
        for (size_t k = 0; rc == DK_OK && k < n_run; k++) fn_trim(&list[k]->answer);
        if (rc != DK_OK || attempt == FN_SQL_ATTEMPTS) break;
        rc = fn_sql_check(fns, list, &n_run, attempt, err);
    }
    if (rc == DK_OK) fn_write_answers(output, n_rows, jobs, rows, n_jobs);
    else fn_error(info, "prompt_sql", err);
    fn_jobs_free(jobs, n_jobs);
    dk_free(list);
    dk_free(rows);
}

/* ---- registration ---- */

typedef struct fn_spec {
    const char *name;
    int n_params;                /* VARCHAR parameters */
    bool returns_list;           /* FLOAT[] instead of VARCHAR */
    duckdb_scalar_function_t fn;
    duckdb_scalar_function_bind_t bind;
} fn_spec;

static int fn_register_one(sql_functions *fns, duckdb_connection conn, const fn_spec *spec, char *err)
{
    duckdb_scalar_function f = duckdb_create_scalar_function();
    duckdb_logical_type varchar = duckdb_create_logical_type(DUCKDB_TYPE_VARCHAR);
    duckdb_logical_type flt = duckdb_create_logical_type(DUCKDB_TYPE_FLOAT);
    duckdb_logical_type list = duckdb_create_list_type(flt);
    duckdb_scalar_function_set_name(f, spec->name);
    for (int i = 0; i < spec->n_params; i++) duckdb_scalar_function_add_parameter(f, varchar);
    duckdb_scalar_function_set_return_type(f, spec->returns_list ? list : varchar);
    duckdb_scalar_function_set_function(f, spec->fn);
    if (spec->bind) duckdb_scalar_function_set_bind(f, spec->bind);
    duckdb_scalar_function_set_extra_info(f, fns, NULL);
    /* NULL model and format arguments mean "the default", so NULLs are ours to handle */
    duckdb_scalar_function_set_special_handling(f);
    if (fns->cfg.temperature > 0) duckdb_scalar_function_set_volatile(f);
    duckdb_state state = duckdb_register_scalar_function(conn, f);
    duckdb_destroy_logical_type(&list);
    duckdb_destroy_logical_type(&flt);
    duckdb_destroy_logical_type(&varchar);
    duckdb_destroy_scalar_function(&f);
    return state == DuckDBSuccess ? DK_OK : dk_fail(err, DK_ERR_ARG, "cannot register %s", spec->name);
}

static const char *const fn_macros[] = {
    "CREATE OR REPLACE TEMP MACRO prompt(text, model := NULL, format := NULL) AS "
    "duckling_prompt(CAST(text AS VARCHAR), CAST(model AS VARCHAR), CAST(format AS VARCHAR))",
    "CREATE OR REPLACE TEMP MACRO embed(text, model := NULL) AS "
    "duckling_embed(CAST(text AS VARCHAR), CAST(model AS VARCHAR))",
    "CREATE OR REPLACE TEMP MACRO prompt_sql(question) AS duckling_prompt_sql(CAST(question AS VARCHAR))",
};

void sql_functions_free(sql_functions *fns)
{
    if (!fns) return;
    for (fn_model *m = fns->models; m; m = m->next) fn_pool_free(m->pool);
    for (fn_model *m = fns->models, *next; m; m = next) {
        next = m->next;
        if (m->owned) engine_model_free(m->model);
        dk_free(m->name);
        dk_free(m);
    }
    for (fn_grammar *g = fns->grammars, *next; g; g = next) {
        next = g->next;
        sample_grammar_free(g->grammar);
        dk_free(g->format);
        dk_free(g);
    }
    sql_db_free(fns->schema_db);
    pthread_mutex_destroy(&fns->schema_lock);
    pthread_mutex_destroy(&fns->lock);
    dk_free(fns->model_name);
    dk_free(fns->embed_model_name);
    dk_free(fns);
}

int sql_functions_register(sql_db *db, const sql_functions_config *cfg, sql_functions **out, char *err)
{
    if (out) *out = NULL;
    if (!db || !cfg) return dk_fail(err, DK_ERR_ARG, "missing database or configuration");
    sql_functions *fns = dk_calloc(1, sizeof *fns);
    if (!fns) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    fns->cfg = *cfg;
    if (fns->cfg.parallel <= 0) fns->cfg.parallel = FN_DEFAULT_PARALLEL;
    if (fns->cfg.num_predict == 0) fns->cfg.num_predict = FN_DEFAULT_NUM_PREDICT;
    pthread_mutex_init(&fns->schema_lock, NULL);
    pthread_mutex_init(&fns->lock, NULL);
    fns->model_name = cfg->model_name ? dk_strdup(cfg->model_name) : NULL;
    fns->embed_model_name = cfg->embed_model_name ? dk_strdup(cfg->embed_model_name) : NULL;
    fns->cfg.model_name = fns->model_name;
    fns->cfg.embed_model_name = fns->embed_model_name;
    if ((cfg->model_name && !fns->model_name) || (cfg->embed_model_name && !fns->embed_model_name)) {
        sql_functions_free(fns);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    int rc = sql_db_connect_more(db, &fns->schema_db, err);
    if (rc == DK_OK) rc = sql_db_attach_functions(db, fns, err);
    if (rc != DK_OK) {
        sql_functions_free(fns);
        return rc;
    }
    /* From here fns belongs to db: DuckDB's function entries point at it until sql_db_free. */
    duckdb_connection conn = sql_db_duckdb_connection(db);
    const fn_spec specs[] = {
        {"duckling_prompt", 3, false, fn_prompt, NULL},
        {"duckling_embed", 2, true, fn_embed, NULL},
        {"duckling_prompt_sql", 1, false, fn_prompt_sql, fn_prompt_sql_bind},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0] && rc == DK_OK; i++) rc = fn_register_one(fns, conn, &specs[i], err);
    for (size_t i = 0; i < sizeof fn_macros / sizeof fn_macros[0] && rc == DK_OK; i++) {
        duckdb_result r;
        if (duckdb_query(conn, fn_macros[i], &r) == DuckDBError)
            rc = dk_fail(err, DK_ERR_FORMAT, "cannot create the SQL macros: %s", duckdb_result_error(&r));
        duckdb_destroy_result(&r);
    }
    if (rc == DK_OK && out) *out = fns;
    return rc;
}

void sql_functions_cancel(sql_functions *fns, int on)
{
    if (!fns) return;
    pthread_mutex_lock(&fns->lock);
    atomic_store(&fns->cancelled, on ? 1 : 0);
    if (on)
        for (fn_batch *b = fns->active; b; b = b->next_active) atomic_store(&b->cancel, 1);
    pthread_mutex_unlock(&fns->lock);
}

void sql_functions_get_stats(sql_functions *fns, sql_functions_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!fns) return;
    out->n_prompts = atomic_load(&fns->n_prompts);
    out->n_generated = atomic_load(&fns->n_generated);
    out->n_embeds = atomic_load(&fns->n_embeds);
    pthread_mutex_lock(&fns->lock);
    for (fn_model *m = fns->models; m; m = m->next) {
        if (!m->pool) continue;
        engine_batcher_stats st;
        engine_batcher_get_stats(m->pool->batcher, &st);
        out->n_steps += st.steps;
        out->n_rows += st.rows;
        if (st.max_rows > out->max_rows) out->max_rows = st.max_rows;
    }
    pthread_mutex_unlock(&fns->lock);
}
