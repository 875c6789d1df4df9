/*
 * api_admin.c: the management endpoints of the Ollama API (/api/version, tags, show, ps,
 * delete, copy, create, pull, blobs) and OpenAI's model list (/v1/models), field for field
 * as the ollama and openai client libraries read them. Model descriptions (details,
 * model_info, capabilities) come from the store's record and the GGUF's metadata.
 *
 * Not for: generation and embeddings (api_ollama.c, api_openai.c), the store itself (store/).
 */
#include "server/srv_internal.h"

#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

#define DUCKLING_VERSION "0.1.0"
#define SHOW_ARRAY_MAX 16        /* longer GGUF arrays are null in /api/show unless verbose */
#define PROGRESS_INTERVAL_NS 100000000ull /* streamed transfer progress: at most every 100 ms */

/* ---- small helpers ---- */

/* The body as an object, or a 400 reply and NULL. */
static json_t *body_object(srv_request *rq)
{
    json_t *body;
    char err[DK_ERRLEN];
    if (srv_parse_body(rq->body, rq->body_len, &body, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        return NULL;
    }
    return body;
}

/* "model", or the legacy "name"; a 400 reply (and -1) when neither is a non-empty string. */
static int model_field(srv_request *rq, const json_t *body, const char *key, const char *legacy, const char **out)
{
    char err[DK_ERRLEN];
    if (srv_field_string(body, key, out, err) != DK_OK ||
        (!*out && legacy && srv_field_string(body, legacy, out, err) != DK_OK)) {
        srv_reply_error(rq, 400, "%s", err);
        return -1;
    }
    if (!*out || !**out) {
        srv_reply_error(rq, 400, "%s is required", key);
        return -1;
    }
    return 0;
}

static const char *digest_hex(const char *digest)
{
    return strncmp(digest, "sha256:", 7) == 0 ? digest + 7 : digest;
}

static void time_of_seconds(char buf[40], int64_t unix_seconds)
{
    srv_time_rfc3339(buf, unix_seconds > 0 ? (uint64_t)unix_seconds * 1000000000ull : 0);
}

/* ---- what the GGUF says (store_gguf_info) ---- */

static const char *config_string(const store_model *m, const char *key)
{
    return m->config ? json_string_value(json_object_get(m->config, key)) : NULL;
}

json_t *srv_model_details(const store_model *m, const engine_model *loaded_or_null)
{
    const char *family = config_string(m, "model_family");
    const char *size = config_string(m, "model_type");
    const char *quant = config_string(m, "file_type");
    store_gguf_info info = {0};
    if (!family || !size || !quant) {
        char err[DK_ERRLEN];
        if (store_gguf_info_read(m->gguf_path, &info, err) != DK_OK) memset(&info, 0, sizeof info);
        if (!family) family = info.arch[0] ? info.arch : loaded_or_null ? engine_arch(loaded_or_null) : "";
        if (!size) size = info.parameter_size;
        if (!quant) quant = info.file_type[0] ? info.file_type : "unknown";
    }
    json_t *families = m->config ? json_object_get(m->config, "model_families") : NULL;
    families = json_is_array(families) ? json_incref(families) : json_pack("[s]", family);
    json_t *out = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "parent_model", m->parent ? m->parent : "", "format", "gguf",
                            "family", family, "families", families, "parameter_size", size, "quantization_level", quant);
    store_gguf_info_free(&info);
    return out;
}

/* One GGUF metadata value as JSON (arrays longer than max_array as null; max_array 0: all). */
static json_t *kv_json(const gguf_file *f, int64_t i, uint64_t max_array)
{
    const char *key = gguf_kv_key(f, i);
    enum gguf_value_type t = gguf_kv_type(f, i);
    const void *raw;
    size_t n_raw;
    if (gguf_kv_raw(f, i, &raw, &n_raw) != DK_OK) return json_null();
    switch (t) {
    case GGUF_VAL_FLOAT32:
    case GGUF_VAL_FLOAT64: return json_real(gguf_arr_get_f64(t, raw, 0));
    case GGUF_VAL_BOOL: return json_boolean(gguf_arr_get_i64(t, raw, 0) != 0);
    case GGUF_VAL_STRING: {
        gguf_str s;
        if (gguf_get_str(f, key, &s) != DK_OK) return json_null();
        json_t *j = json_stringn(s.ptr, s.len);
        return j ? j : json_null();
    }
    case GGUF_VAL_ARRAY: {
        enum gguf_value_type et;
        uint64_t n;
        const void *data;
        if (gguf_get_arr(f, key, &et, &n, &data) != DK_OK || (max_array && n > max_array)) return json_null();
        json_t *arr = json_array();
        for (uint64_t k = 0; arr && k < n; k++) {
            json_t *e;
            if (et == GGUF_VAL_STRING) {
                gguf_str s;
                e = gguf_get_arr_str(f, key, k, &s) == DK_OK ? json_stringn(s.ptr, s.len) : NULL;
            } else if (et == GGUF_VAL_FLOAT32 || et == GGUF_VAL_FLOAT64) {
                e = json_real(gguf_arr_get_f64(et, data, k));
            } else {
                e = json_integer(gguf_arr_get_i64(et, data, k));
            }
            json_array_append_new(arr, e ? e : json_null());
        }
        return arr ? arr : json_null();
    }
    default: return json_integer(gguf_arr_get_i64(t, raw, 0));
    }
}

static json_t *model_info_json(const gguf_file *f, const store_gguf_info *s, bool verbose)
{
    json_t *info = json_object();
    for (int64_t i = 0; info && i < gguf_n_kv(f); i++)
        json_object_set_new(info, gguf_kv_key(f, i), kv_json(f, i, verbose ? 0 : SHOW_ARRAY_MAX));
    if (info && !json_object_get(info, "general.parameter_count"))
        json_object_set_new(info, "general.parameter_count", json_integer((json_int_t)s->n_params));
    return info;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The params layer as Ollama's show prints it: "key<padding> value" lines, sorted; a list
 * (stop) gives a line per element; strings quoted. */
static char *parameters_text(const json_t *params)
{
    dk_buf b = {0};
    if (!json_is_object(params)) return dk_strdup("");
    size_t n = 0, cap = 0;
    char **lines = NULL;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        size_t n_items = json_is_array(value) ? json_array_size(value) : 1;
        for (size_t k = 0; k < n_items; k++) {
            const json_t *v = json_is_array(value) ? json_array_get(value, k) : value;
            char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (!text) continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                char **grown = dk_realloc(lines, ncap * sizeof *lines);
                if (!grown) {
                    free(text);
                    break;
                }
                lines = grown;
                cap = ncap;
            }
            dk_buf line = {0};
            dk_buf_printf(&line, "%-30s %s", key, text);
            free(text);
            lines[n] = dk_buf_detach(&line);
            if (lines[n]) n++;
        }
    }
    qsort(lines, n, sizeof *lines, compare_strings);
    for (size_t i = 0; i < n; i++) {
        dk_buf_printf(&b, "%s%s", i ? "\n" : "", lines[i]);
        dk_free(lines[i]);
    }
    dk_free(lines);
    return b.data ? dk_buf_detach(&b) : dk_strdup("");
}

/* What a model can do: a bert with a classification head (cls.output.weight) is a
 * cross-encoder for /api/rerank, any other bert an embedding model. */
static json_t *capabilities_json(const gguf_file *f, const char *arch, const char *template_text)
{
    if (strstr(arch, "bert")) return json_pack("[s]", gguf_find_tensor(f, "cls.output.weight") ? "rerank" : "embedding");
    json_t *caps = json_pack("[s]", "completion");
    if (caps && template_text && strstr(template_text, "tools")) json_array_append_new(caps, json_string("tools"));
    if (caps && template_text && strstr(template_text, "<think>")) json_array_append_new(caps, json_string("thinking"));
    return caps;
}

/* ---- handlers ---- */

void srv_api_version(srv_request *rq)
{
    srv_reply_json(rq, 200, json_pack("{s:s}", "version", DUCKLING_VERSION));
}

static json_t *tag_json(const store_model *m)
{
    char when[40];
    time_of_seconds(when, m->modified);
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:o}", "name", m->name, "model", m->name, "modified_at", when, "size",
                     (json_int_t)m->size, "digest", digest_hex(m->digest), "details", srv_model_details(m, NULL));
}

void srv_api_tags(srv_request *rq)
{
    store_model **models = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    int rc = store_list(rq->server->store, &models, &n, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        if (list) json_array_append_new(list, tag_json(models[i]));
        store_model_free(models[i]);
    }
    dk_free(models);
    srv_reply_json(rq, 200, json_pack("{s:o}", "models", list));
}

void srv_api_show(srv_request *rq)
{
    json_t *body = body_object(rq);
    if (!body) return;
    const char *name;
    bool verbose = false;
    char err[DK_ERRLEN];
    store_model *m = NULL;
    gguf_file *f = NULL;
    if (model_field(rq, body, "model", "name", &name) != 0) goto done;
    if (srv_field_bool(body, "verbose", false, &verbose, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        goto done;
    }
    int rc = store_resolve(rq->server->store, name, &m, err);
    if (rc == DK_OK) rc = gguf_open(&f, m->gguf_path, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        goto done;
    }
    store_gguf_info s;
    if ((rc = store_gguf_info_of(f, &s, err)) != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        goto done;
    }
    const char *template_text = m->template_text ? m->template_text : s.chat_template;
    char *modelfile = store_modelfile_text(m);
    char *parameters = parameters_text(m->params);
    char when[40];
    time_of_seconds(when, m->modified);
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:s}", "license", m->license ? m->license : "",
                            "modelfile", modelfile ? modelfile : "", "parameters", parameters ? parameters : "",
                            "template", template_text ? template_text : "", "system", m->system ? m->system : "",
                            "details", srv_model_details(m, NULL), "model_info", model_info_json(f, &s, verbose),
                            "capabilities", capabilities_json(f, s.arch, template_text), "modified_at", when);
    if (out && json_is_array(m->messages)) json_object_set(out, "messages", m->messages);
    dk_free(modelfile);
    dk_free(parameters);
    store_gguf_info_free(&s);
    srv_reply_json(rq, out ? 200 : 500, out ? out : json_pack("{s:s}", "error", "out of memory"));
done:
    gguf_close(f);
    store_model_free(m);
    json_decref(body);
}

void srv_api_ps(srv_request *rq)
{
    json_t *list = srv_sched_ps(rq->server->sched);
    srv_reply_json(rq, 200, json_pack("{s:o}", "models", list ? list : json_array()));
}

void srv_api_delete(srv_request *rq)
{
    json_t *body = body_object(rq);
    if (!body) return;
    const char *name;
    if (model_field(rq, body, "model", "name", &name) == 0) {
        char err[DK_ERRLEN];
        store_model *m = NULL;
        int rc = store_resolve(rq->server->store, name, &m, err);
        if (rc == DK_OK && m->is_file) rc = dk_fail(err, DK_ERR_ARG, "'%s' is a file, not a model of the store", name);
        if (rc == DK_OK) {
            srv_sched_unload(rq->server->sched, m->name);
            rc = store_remove(rq->server->store, m->name, err);
        }
        if (rc == DK_OK) srv_reply_text(rq, 200, "application/json", "", 0);
        else srv_reply_error(rq, srv_status_of(rc), "%s", err);
        store_model_free(m);
    }
    json_decref(body);
}

void srv_api_copy(srv_request *rq)
{
    json_t *body = body_object(rq);
    if (!body) return;
    const char *source, *destination;
    if (model_field(rq, body, "source", NULL, &source) == 0 &&
        model_field(rq, body, "destination", NULL, &destination) == 0) {
        char err[DK_ERRLEN];
        int rc = store_copy(rq->server->store, source, destination, err);
        if (rc == DK_OK) srv_reply_text(rq, 200, "application/json", "", 0);
        else srv_reply_error(rq, srv_status_of(rc), "%s", err);
    }
    json_decref(body);
}

/* ---- create and pull: long operations with progress ---- */

/* Progress lines of one create or pull, streamed or not. */
typedef struct progress_ctx {
    srv_stream *stream;      /* NULL when not streaming */
    const atomic_int *cancel;
    char last_status[160];
    uint64_t last_ns;
    bool sent_success;
} progress_ctx;

static int on_progress(void *user, const char *status, const char *digest, uint64_t total, uint64_t completed)
{
    progress_ctx *p = user;
    if (p->cancel && atomic_load(p->cancel)) return 1;
    if (!p->stream) return 0;
    /* transfers report often: one line per status change, then at most every interval */
    uint64_t now = dk_now_ns();
    bool same = strcmp(p->last_status, status) == 0;
    if (same && total && completed < total && now - p->last_ns < PROGRESS_INTERVAL_NS) return 0;
    if (same && !total) return 0;
    dk_strlcpy(p->last_status, status, sizeof p->last_status);
    p->last_ns = now;
    if (strcmp(status, "success") == 0) p->sent_success = true;
    json_t *line = json_pack("{s:s}", "status", status);
    if (line && digest) json_object_set_new(line, "digest", json_string(digest));
    if (line && total) {
        json_object_set_new(line, "total", json_integer((json_int_t)total));
        json_object_set_new(line, "completed", json_integer((json_int_t)completed));
    }
    int rc = line ? srv_stream_write_json_line(p->stream, line) : 0;
    json_decref(line);
    return rc != 0;
}

/* The final line of a streamed operation: success, or the error as {"error": ...}. */
static void progress_finish(progress_ctx *p, int rc, const char *err)
{
    json_t *line = rc == DK_OK ? json_pack("{s:s}", "status", "success") : json_pack("{s:s}", "error", err);
    if (line && !(rc == DK_OK && p->sent_success)) srv_stream_write_json_line(p->stream, line);
    json_decref(line);
}

typedef struct create_job {
    char *name;
    char *quantize;
    store_modelfile mf;
} create_job;

static void create_job_free(create_job *job)
{
    if (!job) return;
    dk_free(job->name);
    dk_free(job->quantize);
    store_modelfile_free(&job->mf);
    dk_free(job);
}

static int create_run(srv *server, create_job *job, progress_ctx *p, char *err)
{
    store_create_params cp = {.quantize = job->quantize, .progress = on_progress, .user = p};
    int rc = store_create(server->store, job->name, &job->mf, &cp, err);
    /* a replaced model must not keep serving its old weights */
    if (rc == DK_OK) srv_sched_unload(server->sched, job->name);
    return rc;
}

static void create_stream(srv_stream *st, void *ctx)
{
    create_job *job = ctx;
    progress_ctx p = {.stream = st, .cancel = srv_stream_cancel_flag(st)};
    char err[DK_ERRLEN];
    int rc = create_run(srv_stream_server(st), job, &p, err);
    progress_finish(&p, rc, err);
    create_job_free(job);
}

void srv_api_create(srv_request *rq)
{
    json_t *body = body_object(rq);
    if (!body) return;
    char err[DK_ERRLEN];
    const char *name, *modelfile = NULL, *quantize = NULL, *legacy_quantize = NULL;
    bool stream = true;
    create_job *job = NULL;
    if (model_field(rq, body, "model", "name", &name) != 0) goto done;
    if (srv_field_string(body, "modelfile", &modelfile, err) != DK_OK ||
        srv_field_string(body, "quantize", &quantize, err) != DK_OK ||
        srv_field_string(body, "quantization", &legacy_quantize, err) != DK_OK ||
        srv_field_bool(body, "stream", true, &stream, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        goto done;
    }
    if (!quantize) quantize = legacy_quantize;
    job = dk_calloc(1, sizeof *job);
    if (!job || !(job->name = dk_strdup(name)) || (quantize && !(job->quantize = dk_strdup(quantize)))) {
        srv_reply_error(rq, 500, "out of memory");
        goto done;
    }
    int rc = modelfile ? store_modelfile_parse(modelfile, &job->mf, err)
                       : store_modelfile_from_json(rq->server->store, body, &job->mf, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        goto done;
    }
    if (stream) {
        if (srv_stream_start(rq, "application/x-ndjson", create_stream, job) == 0) job = NULL;
        goto done;
    }
    progress_ctx p = {.cancel = &rq->server->stopping};
    rc = create_run(rq->server, job, &p, err);
    if (rc == DK_OK) srv_reply_json(rq, 200, json_pack("{s:s}", "status", "success"));
    else srv_reply_error(rq, srv_status_of(rc), "%s", err);
done:
    create_job_free(job);
    json_decref(body);
}

typedef struct pull_job {
    char *name;
    bool insecure;
} pull_job;

static void pull_job_free(pull_job *job)
{
    if (!job) return;
    dk_free(job->name);
    dk_free(job);
}

static int pull_run(srv *server, const pull_job *job, progress_ctx *p, char *err)
{
    store_pull_params pp = {.insecure = job->insecure, .progress = on_progress, .user = p, .cancel = p->cancel};
    int rc = store_pull(server->store, job->name, &pp, err);
    if (rc == DK_OK) srv_sched_unload(server->sched, job->name); /* a newer version may have come */
    return rc;
}

static void pull_stream(srv_stream *st, void *ctx)
{
    pull_job *job = ctx;
    progress_ctx p = {.stream = st, .cancel = srv_stream_cancel_flag(st)};
    char err[DK_ERRLEN];
    int rc = pull_run(srv_stream_server(st), job, &p, err);
    progress_finish(&p, rc, err);
    pull_job_free(job);
}

void srv_api_pull(srv_request *rq)
{
    json_t *body = body_object(rq);
    if (!body) return;
    char err[DK_ERRLEN];
    const char *name;
    bool insecure = false, stream = true;
    pull_job *job = NULL;
    if (model_field(rq, body, "model", "name", &name) != 0) goto done;
    if (srv_field_bool(body, "insecure", false, &insecure, err) != DK_OK ||
        srv_field_bool(body, "stream", true, &stream, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        goto done;
    }
    store_name parsed;
    if (store_parse_name(name, &parsed, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        goto done;
    }
    job = dk_calloc(1, sizeof *job);
    if (!job || !(job->name = dk_strdup(name))) {
        srv_reply_error(rq, 500, "out of memory");
        goto done;
    }
    job->insecure = insecure;
    if (stream) {
        if (srv_stream_start(rq, "application/x-ndjson", pull_stream, job) == 0) job = NULL;
        goto done;
    }
    progress_ctx p = {.cancel = &rq->server->stopping};
    int rc = pull_run(rq->server, job, &p, err);
    if (rc == DK_OK) srv_reply_json(rq, 200, json_pack("{s:s}", "status", "success"));
    else srv_reply_error(rq, srv_status_of(rc), "%s", err);
done:
    pull_job_free(job);
    json_decref(body);
}

/* ---- blobs ---- */

void srv_api_blob(srv_request *rq, const char *digest)
{
    char err[DK_ERRLEN];
    int rc;
    if (strcmp(rq->method, "HEAD") == 0) {
        char *path = NULL;
        rc = store_blob_path(rq->server->store, digest, &path, err);
        dk_free(path);
        if (rc == DK_OK) srv_reply_text(rq, 200, NULL, "", 0);
        else srv_reply_error(rq, srv_status_of(rc), "%s", err);
        return;
    }
    if (rq->upload_path) {
        /* streamed to a file by http.c: checked here, so a wrong upload never becomes a blob */
        bool well_formed = (strncmp(digest, "sha256:", 7) == 0 || strncmp(digest, "sha256-", 7) == 0) &&
                           strlen(digest) == 71 && strspn(digest + 7, "0123456789abcdefABCDEF") == 64;
        if (!well_formed) {
            srv_reply_error(rq, 400, "malformed digest '%s' (sha256:<64 hex digits>)", digest);
            return;
        }
        if (strcasecmp(digest + 7, rq->upload_digest + 7) != 0) {
            srv_reply_error(rq, 400, "digest mismatch: the body's is %s", rq->upload_digest);
            return;
        }
        rc = store_blob_put_file(rq->server->store, rq->upload_path, NULL, err);
    } else {
        rc = store_blob_put(rq->server->store, digest, rq->body, rq->body_len, err);
    }
    if (rc == DK_OK) srv_reply_text(rq, 201, NULL, "", 0);
    else srv_reply_error(rq, rc == DK_ERR_FORMAT ? 400 : srv_status_of(rc), "%s", err);
}

/* ---- OpenAI's model list ---- */

static json_t *openai_model_json(const store_model *m)
{
    store_name parsed;
    char err[DK_ERRLEN];
    const char *owner = store_parse_name(m->name, &parsed, err) == DK_OK ? parsed.ns : "library";
    return json_pack("{s:s, s:s, s:I, s:s}", "id", m->name, "object", "model", "created", (json_int_t)m->modified,
                     "owned_by", owner);
}

void srv_openai_models(srv_request *rq, const char *model_or_null)
{
    char err[DK_ERRLEN];
    if (model_or_null) {
        store_model *m = NULL;
        int rc = store_resolve(rq->server->store, model_or_null, &m, err);
        if (rc == DK_OK) srv_reply_json(rq, 200, openai_model_json(m));
        else if (rc == DK_ERR_NOTFOUND) srv_reply_error(rq, 404, "The model '%s' does not exist", model_or_null);
        else srv_reply_error(rq, srv_status_of(rc), "%s", err);
        store_model_free(m);
        return;
    }
    store_model **models = NULL;
    size_t n = 0;
    int rc = store_list(rq->server->store, &models, &n, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        if (data) json_array_append_new(data, openai_model_json(models[i]));
        store_model_free(models[i]);
    }
    dk_free(models);
    srv_reply_json(rq, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}
