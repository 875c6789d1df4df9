/*
 * api_ask.c: POST /api/ask, the SQL agent (agent/) over HTTP. The request names a model the
 * server serves (or an OpenAI-compatible endpoint URL[#MODEL]), the data (a .duckdb file,
 * opened read-only, or CSV / Parquet / JSON files as views), and the question; the reply is
 * agent_ask's object (sql, columns, rows, answer, model, steps, usage). With "stream": true
 * the steps come first as NDJSON lines {"step": {...}} and the answer last, with "done": true.
 * With "docs" (a retrieval store made by `duckling ingest`) the answer comes from documents:
 * alone, agent_ask_docs (numbered sources and citations); with "db" as well, the SQL agent with
 * its search_docs tool. The store's embedding model (or "embed_model") is leased like the chat
 * model. Local models are leased from the scheduler like any chat request, all of one request
 * in name order so that two requests cannot each hold a model the other waits for.
 */
#include <string.h>

#include "agent/agent.h"
#include "server/srv_internal.h"

#define ASK_MAX_FILES 32
#define ASK_CHAT 0
#define ASK_LARGER 1
#define ASK_EMBED 2
#define ASK_MODELS 3

typedef struct ask_job {
    srv *server;
    json_t *body;                /* owned: the strings below point into it */
    const char *question;
    const char *names[ASK_MODELS]; /* the model, the larger model, the embedding model (or NULL) */
    const char *files[ASK_MAX_FILES]; /* into body */
    size_t n_files;
    const char *docs_path;       /* into body, or NULL */
    agent_config cfg;
    rag_search_opts search;
    char *store_model;           /* the store's embedding model (owned), when names[ASK_EMBED] is it */
    srv_lease leases[ASK_MODELS];
    bool leased[ASK_MODELS];
    agent_llm *llms[2];
    sql_db *db;
    rag_store *docs;
    srv_stream *stream;          /* while streaming */
    bool stream_gone;
} ask_job;

static void ask_job_free(ask_job *j)
{
    for (int i = 0; i < 2; i++) agent_llm_free(j->llms[i]);
    for (int i = 0; i < ASK_MODELS; i++)
        if (j->leased[i]) srv_sched_release(j->server->sched, &j->leases[i], NULL);
    sql_db_free(j->db);
    rag_store_close(j->docs);
    dk_free(j->store_model);
    json_decref(j->body);
    dk_free(j);
}

/* "db": a path, or an array of paths. */
static int ask_parse_files(ask_job *j, char *err)
{
    const json_t *db = json_object_get(j->body, "db");
    if (!db && j->docs_path) return DK_OK; /* documents alone */
    if (json_is_string(db)) j->files[j->n_files++] = json_string_value(db);
    else if (json_is_array(db) && json_array_size(db) > 0 && json_array_size(db) <= ASK_MAX_FILES) {
        size_t i;
        const json_t *f;
        json_array_foreach(db, i, f) {
            if (!json_is_string(f)) return dk_fail(err, DK_ERR_ARG, "db must be a path or an array of paths");
            j->files[j->n_files++] = json_string_value(f);
        }
    } else
        return dk_fail(err, DK_ERR_ARG,
                       "db or docs is required: the path of a .duckdb file (or an array of data files), or of a store");
    for (size_t i = 0; i < j->n_files; i++)
        if (!j->files[i][0]) return dk_fail(err, DK_ERR_ARG, "db: empty path");
    return DK_OK;
}

/* "search": {"k", "mode", "exact", "source", "path", "after", "before"} (times in Unix seconds). */
static int ask_parse_search(ask_job *j, char *err)
{
    const json_t *o = json_object_get(j->body, "search");
    if (o && !json_is_object(o)) return dk_fail(err, DK_ERR_ARG, "search must be an object");
    long long k = 5, after = 0, before = 0;
    const char *mode = NULL;
    bool exact = false;
    int rc = srv_field_int(o, "k", 1, 100, 5, &k, err);
    if (rc == DK_OK) rc = srv_field_string(o, "mode", &mode, err);
    if (rc == DK_OK) rc = srv_field_bool(o, "exact", false, &exact, err);
    if (rc == DK_OK) rc = srv_field_string(o, "source", &j->search.filter.source, err);
    if (rc == DK_OK) rc = srv_field_string(o, "path", &j->search.filter.path_glob, err);
    if (rc == DK_OK) rc = srv_field_int(o, "after", 0, INT64_MAX, 0, &after, err);
    if (rc == DK_OK) rc = srv_field_int(o, "before", 0, INT64_MAX, 0, &before, err);
    if (rc != DK_OK) return rc;
    if (!mode || strcmp(mode, "hybrid") == 0) j->search.mode = RAG_MODE_HYBRID;
    else if (strcmp(mode, "vector") == 0) j->search.mode = RAG_MODE_VECTOR;
    else if (strcmp(mode, "keyword") == 0) j->search.mode = RAG_MODE_KEYWORD;
    else return dk_fail(err, DK_ERR_ARG, "search.mode must be hybrid, vector or keyword");
    j->search.k = (size_t)k;
    j->search.exact = exact;
    j->search.filter.after = after;
    j->search.filter.before = before;
    return DK_OK;
}

static int ask_parse(ask_job *j, char *err)
{
    agent_config_default(&j->cfg);
    const json_t *b = j->body;
    bool escalate = false;
    long long max_repairs = 2, max_rows = 100, timeout_ms = 10000, num_predict = 512, seed = 0;
    double min_conf = -1, temperature = 0; /* min_conf < 0: the agent's default */
    int rc = srv_parse_model(b, &j->names[0], err);
    if (rc == DK_OK) rc = srv_field_string(b, "question", &j->question, err);
    if (rc == DK_OK && (!j->question || !j->question[0])) rc = dk_fail(err, DK_ERR_ARG, "question is required");
    if (rc == DK_OK) rc = srv_field_string(b, "escalate_to", &j->names[1], err);
    if (rc == DK_OK) rc = srv_field_bool(b, "escalate", false, &escalate, err);
    if (rc == DK_OK) rc = srv_field_int(b, "max_repairs", 0, 20, 2, &max_repairs, err);
    if (rc == DK_OK) rc = srv_field_int(b, "max_rows", 1, 100000, 100, &max_rows, err);
    if (rc == DK_OK) rc = srv_field_int(b, "timeout_ms", 1, 3600000, 10000, &timeout_ms, err);
    const json_t *opts = json_object_get(b, "options");
    if (rc == DK_OK && opts && !json_is_object(opts)) rc = dk_fail(err, DK_ERR_ARG, "options must be an object");
    if (rc == DK_OK) rc = srv_field_int(opts, "num_predict", 1, 1 << 20, 512, &num_predict, err);
    if (rc == DK_OK) rc = srv_field_int(opts, "seed", 0, INT64_MAX, 0, &seed, err);
    const json_t *t = json_object_get(opts, "temperature"), *mc = json_object_get(b, "min_confidence");
    if (rc == DK_OK && t && !json_is_null(t)) {
        if (!json_is_number(t) || (temperature = json_number_value(t)) < 0 || temperature > 10)
            rc = dk_fail(err, DK_ERR_ARG, "options.temperature must be a number in [0, 10]");
    }
    if (rc == DK_OK && mc && !json_is_null(mc)) {
        if (!json_is_number(mc) || (min_conf = json_number_value(mc)) < 0 || min_conf > 1)
            rc = dk_fail(err, DK_ERR_ARG, "min_confidence must be a number in [0, 1]");
    }
    if (rc == DK_OK) rc = srv_field_string(b, "docs", &j->docs_path, err);
    if (rc == DK_OK && j->docs_path && !j->docs_path[0]) rc = dk_fail(err, DK_ERR_ARG, "docs: empty path");
    if (rc == DK_OK) rc = srv_field_string(b, "embed_model", &j->names[ASK_EMBED], err);
    if (rc == DK_OK && j->names[ASK_EMBED] && !j->docs_path) rc = dk_fail(err, DK_ERR_ARG, "embed_model needs docs");
    if (rc == DK_OK && json_object_get(b, "search") && !j->docs_path) rc = dk_fail(err, DK_ERR_ARG, "search needs docs");
    if (rc == DK_OK) rc = ask_parse_search(j, err);
    if (rc == DK_OK) rc = ask_parse_files(j, err);
    if (rc == DK_OK && j->docs_path && j->n_files == 0 && j->names[1])
        rc = dk_fail(err, DK_ERR_ARG, "escalate_to needs db (answers from documents alone are not escalated)");
    if (rc == DK_OK && escalate && !j->names[1]) rc = dk_fail(err, DK_ERR_ARG, "escalate needs escalate_to");
    if (rc == DK_OK && j->names[1] && strcmp(j->names[0], j->names[1]) == 0)
        rc = dk_fail(err, DK_ERR_ARG, "escalate_to must name another model");
    j->cfg.escalate_now = escalate;
    j->cfg.max_repairs = (int)max_repairs;
    j->cfg.limits.max_rows = (size_t)max_rows;
    j->cfg.limits.timeout_ms = (uint32_t)timeout_ms;
    j->cfg.max_tokens = (long)num_predict;
    j->cfg.seed = (uint64_t)seed;
    j->cfg.temperature = (float)temperature;
    j->cfg.min_confidence = min_conf;
    return rc;
}

static int ask_name_cmp(const ask_job *j, int a, int b)
{
    return strcmp(j->names[a], j->names[b]);
}

/* Leases one local model; replies on failure. */
static int ask_lease(ask_job *j, srv_request *rq, int i)
{
    char err[DK_ERRLEN] = "";
    const char *name = j->names[i];
    srv_load_opts load = {.keep_alive_ns = SRV_KEEP_ALIVE_DEFAULT};
    int rc = srv_sched_acquire(j->server->sched, name, &load, NULL, &j->server->stopping, &j->leases[i], err);
    if (rc != DK_OK) {
        if (rc == DK_ERR_NOTFOUND) srv_reply_error(rq, 404, "model \"%s\" not found, try pulling it first", name);
        else if (rc == DK_ERR_LIMIT && strstr(err, "busy")) srv_reply_error(rq, 503, "%s", err);
        else srv_reply_error(rq, srv_status_of(rc), "%s", err);
        return -1;
    }
    j->leased[i] = true;
    bool embedding = engine_is_embedding(j->leases[i].model) && !engine_is_reranker(j->leases[i].model);
    if (i == ASK_EMBED && !embedding) {
        srv_reply_error(rq, 400, "%s is not an embedding model", name);
        return -1;
    }
    if (i != ASK_EMBED && !j->leases[i].session) {
        srv_reply_error(rq, 400, "%s is an embedding model; the agent needs a chat model", name);
        return -1;
    }
    return 0;
}

/* Leases the local models (all of them in name order) and makes the agent_llms. Replies on
 * failure. */
static int ask_models(ask_job *j, srv_request *rq)
{
    char err[DK_ERRLEN] = "";
    int order[ASK_MODELS], n = 0;
    for (int i = 0; i < ASK_MODELS; i++)
        if (j->names[i] && !(i != ASK_EMBED && agent_spec_is_url(j->names[i]))) order[n++] = i;
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && ask_name_cmp(j, order[b], order[b - 1]) < 0; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int k = 0; k < n; k++) {
        /* One model named twice (chat and embedding cannot be, larger and chat are refused). */
        if (k > 0 && ask_name_cmp(j, order[k], order[k - 1]) == 0) {
            srv_reply_error(rq, 400, "%s cannot be both the chat and the embedding model", j->names[order[k]]);
            return -1;
        }
        if (ask_lease(j, rq, order[k]) != 0) return -1;
    }
    for (int i = 0; i < 2; i++) {
        const char *name = j->names[i];
        if (!name) continue;
        int rc = agent_spec_is_url(name) ? agent_llm_openai(&j->llms[i], name, NULL, err)
                                         : agent_llm_local(&j->llms[i], j->leases[i].session, name, err);
        if (rc != DK_OK) {
            srv_reply_error(rq, srv_status_of(rc), "%s", err);
            return -1;
        }
    }
    j->cfg.model = j->llms[0];
    j->cfg.escalate_to = j->llms[1];
    if (j->docs) {
        j->cfg.docs = j->docs;
        j->cfg.embedder = j->leased[ASK_EMBED] ? j->leases[ASK_EMBED].model : NULL;
        j->cfg.docs_search = j->search;
    }
    return 0;
}

/* Opens the store read-only and picks its embedding model (unless keyword search needs none). */
static int ask_open_docs(ask_job *j, srv_request *rq)
{
    char err[DK_ERRLEN];
    int rc = rag_store_open(&j->docs, j->docs_path, false, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        return -1;
    }
    if (j->names[ASK_EMBED] || j->search.mode == RAG_MODE_KEYWORD) return 0;
    const char *recorded = rag_store_embed_model(j->docs);
    if (!recorded) return 0; /* an empty store: the search finds nothing */
    if (!(j->store_model = dk_strdup(recorded))) {
        srv_reply_error(rq, 500, "out of memory");
        return -1;
    }
    j->names[ASK_EMBED] = j->store_model;
    return 0;
}

/* The answer from documents alone. */
static int ask_docs_answer(ask_job *j, json_t **answer, char *err)
{
    agent_docs_config dc;
    agent_docs_config_default(&dc);
    dc.model = j->cfg.model;
    dc.store = j->docs;
    dc.store_name = j->docs_path;
    dc.embedder = j->cfg.embedder;
    dc.search = j->search;
    dc.max_tokens = j->cfg.max_tokens;
    dc.temperature = j->cfg.temperature;
    dc.seed = j->cfg.seed;
    dc.on_step = j->cfg.on_step;
    dc.user = j->cfg.user;
    return agent_ask_docs(&dc, j->question, answer, err);
}

static int ask_run(ask_job *j, json_t **answer, char *err)
{
    if (j->docs && !j->db) return ask_docs_answer(j, answer, err);
    return agent_ask(&j->cfg, j->db, j->question, answer, err);
}

/* ---- streaming ---- */

static void ask_stream_step(void *user, const json_t *step)
{
    ask_job *j = user;
    if (j->stream_gone) return;
    json_t *line = json_pack("{s:O}", "step", step);
    if (!line || srv_stream_write_json_line(j->stream, line) != 0) j->stream_gone = true;
    json_decref(line);
}

static void ask_stream_run(srv_stream *st, void *ctx)
{
    ask_job *j = ctx;
    j->stream = st;
    j->cfg.on_step = ask_stream_step;
    j->cfg.user = j;
    json_t *answer = NULL;
    char err[DK_ERRLEN];
    int rc = ask_run(j, &answer, err);
    json_t *last = rc == DK_OK ? answer : json_pack("{s:s}", "error", err);
    if (last) {
        json_object_set_new(last, "done", json_true());
        srv_stream_write_json_line(st, last);
    }
    json_decref(last);
    ask_job_free(j);
}

void srv_api_ask(srv_request *rq)
{
    char err[DK_ERRLEN];
    ask_job *j = dk_calloc(1, sizeof *j);
    if (!j) {
        srv_reply_error(rq, 500, "out of memory");
        return;
    }
    j->server = rq->server;
    bool stream = false;
    int rc = srv_parse_body(rq->body, rq->body_len, &j->body, err);
    if (rc == DK_OK) rc = ask_parse(j, err);
    if (rc == DK_OK) rc = srv_field_bool(j->body, "stream", false, &stream, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        ask_job_free(j);
        return;
    }
    rc = j->n_files ? sql_db_open_data(&j->db, j->files, j->n_files, err) : DK_OK;
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        ask_job_free(j);
        return;
    }
    if ((j->docs_path && ask_open_docs(j, rq) != 0) || ask_models(j, rq) != 0) {
        ask_job_free(j);
        return;
    }
    if (stream) {
        if (srv_stream_start(rq, "application/x-ndjson", ask_stream_run, j) != 0) ask_job_free(j);
        return;
    }
    json_t *answer = NULL;
    rc = ask_run(j, &answer, err);
    if (rc != DK_OK) srv_reply_error(rq, rc == DK_ERR_IO ? 502 : srv_status_of(rc), "%s", err);
    else srv_reply_json(rq, 200, answer);
    ask_job_free(j);
}
