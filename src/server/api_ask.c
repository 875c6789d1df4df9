/*
 * api_ask.c: POST /api/ask, the SQL agent (agent/) over HTTP. The request names a model the
 * server serves (or an OpenAI-compatible endpoint URL[#MODEL]), the data (a .duckdb file,
 * opened read-only, or CSV / Parquet / JSON files as views), and the question; the reply is
 * agent_ask's object (sql, columns, rows, answer, model, steps, usage). With "stream": true
 * the steps come first as NDJSON lines {"step": {...}} and the answer last, with "done": true.
 * Local models are leased from the scheduler like any chat request, the two of an escalation
 * in name order so that two requests cannot each hold the model the other waits for.
 */
#include <string.h>

#include "agent/agent.h"
#include "server/srv_internal.h"

#define ASK_MAX_FILES 32

typedef struct ask_job {
    srv *server;
    json_t *body;                /* owned: the strings below point into it */
    const char *question;
    const char *names[2];        /* the model, the larger model (or NULL) */
    const char *files[ASK_MAX_FILES]; /* into body */
    size_t n_files;
    agent_config cfg;
    srv_lease leases[2];
    bool leased[2];
    agent_llm *llms[2];
    sql_db *db;
    srv_stream *stream;          /* while streaming */
    bool stream_gone;
} ask_job;

static void ask_job_free(ask_job *j)
{
    for (int i = 0; i < 2; i++) {
        agent_llm_free(j->llms[i]);
        if (j->leased[i]) srv_sched_release(j->server->sched, &j->leases[i], NULL);
    }
    sql_db_free(j->db);
    json_decref(j->body);
    dk_free(j);
}

/* "db": a path, or an array of paths. */
static int ask_parse_files(ask_job *j, char *err)
{
    const json_t *db = json_object_get(j->body, "db");
    if (json_is_string(db)) j->files[j->n_files++] = json_string_value(db);
    else if (json_is_array(db) && json_array_size(db) > 0 && json_array_size(db) <= ASK_MAX_FILES) {
        size_t i;
        const json_t *f;
        json_array_foreach(db, i, f) {
            if (!json_is_string(f)) return dk_fail(err, DK_ERR_ARG, "db must be a path or an array of paths");
            j->files[j->n_files++] = json_string_value(f);
        }
    } else
        return dk_fail(err, DK_ERR_ARG, "db is required: the path of a .duckdb file (or an array of data files)");
    for (size_t i = 0; i < j->n_files; i++)
        if (!j->files[i][0]) return dk_fail(err, DK_ERR_ARG, "db: empty path");
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
    if (rc == DK_OK) rc = ask_parse_files(j, err);
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

/* Leases the local models (in name order) and makes the agent_llms. Replies on failure. */
static int ask_models(ask_job *j, srv_request *rq)
{
    char err[DK_ERRLEN] = "";
    int order[2] = {0, 1};
    if (j->names[1] && strcmp(j->names[1], j->names[0]) < 0) order[0] = 1, order[1] = 0;
    for (int k = 0; k < 2; k++) {
        int i = order[k];
        const char *name = j->names[i];
        if (!name || agent_spec_is_url(name)) continue;
        srv_load_opts load = {.keep_alive_ns = SRV_KEEP_ALIVE_DEFAULT};
        int rc = srv_sched_acquire(j->server->sched, name, &load, NULL, &j->server->stopping, &j->leases[i], err);
        if (rc != DK_OK) {
            if (rc == DK_ERR_NOTFOUND) srv_reply_error(rq, 404, "model \"%s\" not found, try pulling it first", name);
            else if (rc == DK_ERR_LIMIT && strstr(err, "busy")) srv_reply_error(rq, 503, "%s", err);
            else srv_reply_error(rq, srv_status_of(rc), "%s", err);
            return -1;
        }
        j->leased[i] = true;
        if (!j->leases[i].session) {
            srv_reply_error(rq, 400, "%s is an embedding model; the agent needs a chat model", name);
            return -1;
        }
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
    return 0;
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
    int rc = agent_ask(&j->cfg, j->db, j->question, &answer, err);
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
    rc = sql_db_open_data(&j->db, j->files, j->n_files, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        ask_job_free(j);
        return;
    }
    if (ask_models(j, rq) != 0) {
        ask_job_free(j);
        return;
    }
    if (stream) {
        if (srv_stream_start(rq, "application/x-ndjson", ask_stream_run, j) != 0) ask_job_free(j);
        return;
    }
    json_t *answer = NULL;
    rc = agent_ask(&j->cfg, j->db, j->question, &answer, err);
    if (rc != DK_OK) srv_reply_error(rq, rc == DK_ERR_IO ? 502 : srv_status_of(rc), "%s", err);
    else srv_reply_json(rq, 200, answer);
    ask_job_free(j);
}
