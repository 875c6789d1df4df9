/*
 * api_ollama.c: Ollama's generation and embedding endpoints, field for field as the `ollama`
 * client library sends and reads them (docs/api.md):
 *
 *   POST /api/generate    a prompt through the model's chat template (or raw), "context"
 *                         tokens of an earlier exchange prepended; NDJSON stream by default
 *   POST /api/chat        a conversation through engine_chat (tools, format, think)
 *   POST /api/embed       embeddings of one or more inputs
 *   POST /api/embeddings  the legacy single-prompt form
 *
 * Requests are parsed and the model acquired on the connection's thread, so that a bad
 * request or an unknown model gets its status code; streamed replies then run in the
 * stream's worker. Generation itself is request.c's srv_gen_run, shared with api_openai.c.
 * Not for: the OpenAI endpoints (api_openai.c), request field parsing (request.c).
 */
#include "server/srv_internal.h"

#include <string.h>

/* ---- response pieces ---- */

/* {"model": ..., "created_at": now}, the head of every Ollama reply object. */
static json_t *ollama_head(const char *model)
{
    char at[40];
    srv_time_rfc3339(at, srv_unix_ns());
    return json_pack("{s:s,s:s}", "model", model, "created_at", at);
}

/* The counters of a finished reply (durations in nanoseconds). */
static void ollama_add_timings(json_t *o, const srv_gen_job *job)
{
    json_object_set_new(o, "total_duration", json_integer((json_int_t)(dk_now_ns() - job->t_start_ns)));
    json_object_set_new(o, "load_duration", json_integer((json_int_t)(job->lease.load_ms * 1e6)));
    /* as Ollama counts: the prompt tokens evaluated, not those found in the KV cache already */
    json_object_set_new(o, "prompt_eval_count", json_integer((json_int_t)job->timings.n_prompt));
    json_object_set_new(o, "prompt_eval_duration", json_integer((json_int_t)(job->timings.prompt_ms * 1e6)));
    json_object_set_new(o, "eval_count", json_integer((json_int_t)job->timings.n_eval));
    json_object_set_new(o, "eval_duration", json_integer((json_int_t)(job->timings.eval_ms * 1e6)));
}

/* Ollama's tool calls: [{"id", "function": {"index", "name", "arguments": {...}}}]. */
static json_t *ollama_tool_calls(const json_t *calls)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function");
        json_t *o = json_pack("{s:{s:I,s:O,s:O}}", "function", "index", (json_int_t)i, "name", json_object_get(fn, "name"),
                              "arguments", json_object_get(fn, "arguments"));
        if (o && json_is_string(json_object_get(c, "id"))) json_object_set(o, "id", json_object_get(c, "id"));
        if (o) json_array_append_new(out, o);
    }
    return out;
}

static json_t *ollama_message(const char *content, size_t n_content, const char *reasoning, size_t n_reasoning)
{
    json_t *m = json_pack("{s:s,s:s%}", "role", "assistant", "content", content ? content : "", content ? n_content : 0);
    if (m && n_reasoning) json_object_set_new(m, "thinking", json_stringn(reasoning, n_reasoning));
    return m;
}

/* Streams one piece of /api/generate or /api/chat. */
static int ollama_delta(srv_gen_job *job, const char *content, size_t n_content, const char *reasoning,
                        size_t n_reasoning, const json_t *logprobs)
{
    json_t *o = ollama_head(job->model_name);
    if (!o) return 0;
    if (job->chat) {
        json_object_set_new(o, "message", ollama_message(content, n_content, reasoning, n_reasoning));
    } else {
        json_object_set_new(o, "response", json_stringn(content, n_content));
        if (n_reasoning) json_object_set_new(o, "thinking", json_stringn(reasoning, n_reasoning));
    }
    json_object_set_new(o, "done", json_false());
    if (logprobs) json_object_set(o, "logprobs", (json_t *)logprobs);
    int rc = srv_stream_write_json_line(job->stream, o);
    json_decref(o);
    return rc != 0;
}

/* The final object; streamed: with empty text (the pieces went before), else all of it. */
static json_t *ollama_final(srv_gen_job *job, bool streamed)
{
    json_t *o = ollama_head(job->model_name);
    if (!o) return NULL;
    const char *content = streamed ? "" : job->content.data;
    size_t n_content = streamed ? 0 : job->content.len;
    size_t n_reasoning = streamed ? 0 : job->reasoning_text.len;
    if (job->chat) {
        json_t *m = ollama_message(content, n_content, job->reasoning_text.data, n_reasoning);
        if (m && !streamed && json_array_size(job->tool_calls)) json_object_set_new(m, "tool_calls", ollama_tool_calls(job->tool_calls));
        json_object_set_new(o, "message", m);
    } else {
        json_object_set_new(o, "response", json_stringn(content ? content : "", n_content));
        if (n_reasoning) json_object_set_new(o, "thinking", json_stringn(job->reasoning_text.data, n_reasoning));
    }
    json_object_set_new(o, "done", json_true());
    json_object_set_new(o, "done_reason", json_string(srv_gen_done_reason(job)));
    if (!job->chat) { /* the tokens of this exchange, for the next request's "context" */
        json_t *ctx = json_array();
        for (size_t i = 0; ctx && i < job->n_prompt; i++) json_array_append_new(ctx, json_integer(job->prompt[i]));
        for (size_t i = 0; ctx && i < job->n_out; i++) json_array_append_new(ctx, json_integer(job->out_tokens[i]));
        json_object_set_new(o, "context", ctx);
    }
    ollama_add_timings(o, job);
    json_t *lp = streamed ? job->logprobs_pending : job->logprobs_all;
    if (job->logprobs && lp && json_array_size(lp)) json_object_set(o, "logprobs", lp);
    return o;
}

static void ollama_worker(srv_stream *st, void *ctx)
{
    srv_gen_job *job = ctx;
    job->stream = st;
    srv_gen_run(job);
    if (!job->gone && job->rc != DK_OK) {
        json_t *e = json_pack("{s:s}", "error", job->err);
        if (e) srv_stream_write_json_line(st, e);
        json_decref(e);
    } else if (!job->gone) {
        if (job->chat && json_array_size(job->tool_calls)) {
            json_t *o = ollama_head(job->model_name);
            json_t *m = ollama_message("", 0, NULL, 0);
            if (m) json_object_set_new(m, "tool_calls", ollama_tool_calls(job->tool_calls));
            if (o) json_object_set_new(o, "message", m);
            else json_decref(m);
            if (o) json_object_set_new(o, "done", json_false());
            if (o && srv_stream_write_json_line(st, o) != 0) job->gone = true;
            json_decref(o);
        }
        json_t *f = job->gone ? NULL : ollama_final(job, true);
        if (f) srv_stream_write_json_line(st, f);
        json_decref(f);
    }
    srv_gen_job_free(job);
}

/* Runs a prepared job: streamed in a worker, or inline with one JSON reply. Takes job. */
static void ollama_run(srv_request *rq, srv_gen_job *job, bool stream)
{
    if (stream) {
        job->on_delta = ollama_delta;
        if (srv_stream_start(rq, "application/x-ndjson", ollama_worker, job) != 0) srv_gen_job_free(job);
        return;
    }
    srv_gen_run(job);
    if (job->rc != DK_OK) srv_reply_error(rq, srv_status_of(job->rc), "%s", job->err);
    else srv_reply_json(rq, 200, ollama_final(job, false));
    srv_gen_job_free(job);
}

/* ---- fields both /api/generate and /api/chat take ---- */

/* model, options (type-checked now, layered over the model's after loading), keep_alive,
 * format, think, logprobs, top_logprobs, stream; num_ctx and num_thread for loading. */
static int ollama_common(srv_gen_job *job, bool *stream, char *err)
{
    const json_t *body = job->body;
    int rc = srv_parse_model(body, &job->model_name, err);
    srv_gen_options probe;
    if (rc == DK_OK) rc = srv_options_layered(NULL, json_object_get(body, "options"), &probe, err);
    if (rc == DK_OK) {
        job->load.num_ctx = probe.num_ctx;
        job->load.num_thread = probe.num_thread;
        rc = srv_parse_keep_alive(json_object_get(body, "keep_alive"), &job->load.keep_alive_ns, err);
    }
    if (rc == DK_OK) rc = srv_parse_format(json_object_get(body, "format"), &job->format, err);
    if (rc == DK_OK) rc = srv_parse_think(json_object_get(body, "think"), &job->think, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "logprobs", false, &job->logprobs, err);
    long long top = 0;
    if (rc == DK_OK) rc = srv_field_int(body, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, 0, &top, err);
    job->top_logprobs = (int)top;
    if (rc == DK_OK) rc = srv_field_bool(body, "stream", true, stream, err);
    const json_t *images = json_object_get(body, "images");
    if (rc == DK_OK && images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0))
        rc = dk_fail(err, DK_ERR_ARG, "images: this model does not support images");
    return rc;
}

/* After loading: not an embedding model, options layered over the model's params. */
static int ollama_loaded(srv_gen_job *job, const char *endpoint, char *err)
{
    if (engine_is_embedding(job->lease.model) || !job->lease.session)
        return dk_fail(err, DK_ERR_ARG, "\"%s\" does not support %s", job->model_name, endpoint);
    return srv_options_layered(job->lease.info ? job->lease.info->params : NULL, json_object_get(job->body, "options"),
                               &job->opts, err);
}

/* An empty prompt or conversation: load the model (or unload it with keep_alive 0). */
static void ollama_load_only(srv_request *rq, srv_gen_job *job)
{
    srv *server = rq->server;
    char err[DK_ERRLEN] = "";
    const char *reason = "load";
    if (job->load.keep_alive_ns == 0) {
        store_model *m = NULL;
        if (store_resolve(server->store, job->model_name, &m, err) != DK_OK) {
            srv_reply_error(rq, 404, "model \"%s\" not found, try pulling it first", job->model_name);
            srv_gen_job_free(job);
            return;
        }
        store_model_free(m);
        srv_sched_unload(server->sched, job->model_name);
        reason = "unload";
    } else {
        double load_ms = 0;
        int rc = srv_sched_preload(server->sched, job->model_name, &job->load, &load_ms, err);
        if (rc == DK_ERR_NOTFOUND) {
            srv_reply_error(rq, 404, "model \"%s\" not found, try pulling it first", job->model_name);
            srv_gen_job_free(job);
            return;
        }
        if (rc != DK_OK) {
            srv_reply_error(rq, rc == DK_ERR_LIMIT && strstr(err, "busy") ? 503 : srv_status_of(rc), "%s", err);
            srv_gen_job_free(job);
            return;
        }
    }
    json_t *o = ollama_head(job->model_name);
    if (o) {
        if (job->chat) json_object_set_new(o, "message", ollama_message("", 0, NULL, 0));
        else json_object_set_new(o, "response", json_string(""));
        json_object_set_new(o, "done", json_true());
        json_object_set_new(o, "done_reason", json_string(reason));
    }
    srv_reply_json(rq, 200, o);
    srv_gen_job_free(job);
}

/* ---- /api/generate ---- */

/* The template a generate request renders with: the request's, the Modelfile's (when it is
 * a Jinja template; Ollama's Go templates are not, and give way to the model's own), or the
 * model's. *own is set when the template was parsed here (the caller frees it). */
static int generate_template(srv_gen_job *job, const char *requested, const chat_template **tmpl, chat_template **own,
                             const char **source, char *err)
{
    *own = NULL;
    char why[DK_ERRLEN];
    if (requested && requested[0]) {
        if (chat_template_parse(own, requested, strlen(requested), why) != DK_OK)
            return dk_fail(err, DK_ERR_ARG, "template: %s", why);
        *tmpl = *own;
        *source = requested;
        return DK_OK;
    }
    const char *stored = job->lease.info ? job->lease.info->template_text : NULL;
    if (stored && stored[0] && chat_template_parse(own, stored, strlen(stored), why) == DK_OK) {
        *tmpl = *own;
        *source = stored;
        return DK_OK;
    }
    int rc = engine_chat_template_get(job->lease.model, tmpl, err);
    const char *builtin = engine_chat_template(job->lease.model);
    *source = builtin ? builtin : chat_template_chatml();
    return rc;
}

static bool ends_with_think_open(const dk_buf *b)
{
    size_t n = b->len;
    while (n && (b->data[n - 1] == '\n' || b->data[n - 1] == ' ')) n--;
    return n >= 7 && memcmp(b->data + n - 7, "<think>", 7) == 0;
}

/* The prompt text of a non-raw generate: [system] [the Modelfile's messages] user prompt. */
static int generate_render(srv_gen_job *job, const char *prompt, bool with_context, dk_buf *out, char *err)
{
    const json_t *body = job->body;
    const char *system = NULL, *requested = NULL;
    int rc = srv_field_string(body, "system", &system, err);
    if (rc == DK_OK) rc = srv_field_string(body, "template", &requested, err);
    if (rc != DK_OK) return rc;
    const chat_template *tmpl;
    chat_template *own = NULL;
    const char *source = "";
    if ((rc = generate_template(job, requested, &tmpl, &own, &source, err)) != DK_OK) return rc;

    const store_model *info = job->lease.info;
    json_t *msgs = json_array();
    json_t *extra = json_object();
    if (!msgs || !extra) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK && system && system[0]) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", system));
    json_t *conv = NULL;
    if (rc == DK_OK) { /* the store's system when none is given; its messages unless a context continues */
        store_model view = {0};
        if (info) view = *info;
        if (system && system[0]) view.system = NULL;
        if (with_context) view.messages = NULL;
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", prompt));
        rc = srv_conversation_with_model(info ? &view : NULL, msgs, &conv, err);
    }
    if (rc == DK_OK && job->think >= 0) json_object_set_new(extra, "enable_thinking", json_boolean(job->think > 0));
    if (rc == DK_OK) {
        chat_render_params rp = {
            .messages = conv,
            .add_generation_prompt = true,
            .bos_token = engine_bos_text(job->lease.model),
            .eos_token = engine_eos_text(job->lease.model),
            .extra = extra,
        };
        char why[DK_ERRLEN];
        if ((rc = chat_template_render(tmpl, &rp, out, why)) != DK_OK) rc = dk_fail(err, rc, "chat template: %s", why);
    }
    if (rc == DK_OK) {
        job->reasoning = strstr(source, "<think>") && job->think != 0;
        job->in_reasoning = job->reasoning && ends_with_think_open(out);
    }
    json_decref(msgs);
    json_decref(conv);
    json_decref(extra);
    chat_template_free(own);
    return rc;
}

/* job->prompt: the context's tokens, then those of the (rendered or raw) prompt. */
static int generate_tokens(srv_gen_job *job, const char *prompt, bool raw, char *err)
{
    const json_t *context = json_object_get(job->body, "context");
    size_t n_context = json_is_array(context) ? json_array_size(context) : 0;
    size_t n_vocab = engine_n_vocab(job->lease.model);
    dk_buf text = {0};
    int rc = raw ? (dk_buf_puts(&text, prompt) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory"))
                 : generate_render(job, prompt, n_context > 0, &text, err);
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    if (rc == DK_OK) {
        const char *bos = engine_bos_text(job->lease.model);
        bool starts_with_bos = bos[0] && strncmp(text.data, bos, strlen(bos)) == 0;
        rc = engine_tokenize(job->lease.model, text.data, text.len, n_context == 0 && !starts_with_bos, true, &tokens,
                             &n_tokens, err);
    }
    if (rc == DK_OK && (job->prompt = dk_malloc_array(n_context + n_tokens + 1, sizeof(int32_t))) == NULL)
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == DK_OK && i < n_context; i++) {
        json_int_t id = json_integer_value(json_array_get(context, i));
        if (id < 0 || (size_t)id >= n_vocab) rc = dk_fail(err, DK_ERR_ARG, "context[%zu]: token %lld is not in the vocabulary", i, (long long)id);
        else job->prompt[i] = (int32_t)id;
    }
    if (rc == DK_OK) {
        if (n_tokens) memcpy(job->prompt + n_context, tokens, n_tokens * sizeof(int32_t));
        job->n_prompt = n_context + n_tokens;
        size_t n_ctx = engine_session_n_ctx(job->lease.session);
        if (job->n_prompt == 0) rc = dk_fail(err, DK_ERR_ARG, "the prompt gives no tokens");
        else if (job->n_prompt >= n_ctx)
            rc = dk_fail(err, DK_ERR_ARG, "the prompt is too long: %zu tokens, the context holds %zu", job->n_prompt, n_ctx);
    }
    dk_free(tokens);
    dk_buf_free(&text);
    return rc;
}

void srv_api_generate(srv_request *rq)
{
    char err[DK_ERRLEN];
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return;
    json_t *body = job->body;
    bool stream, raw;
    const char *prompt = NULL, *suffix = NULL, *ignored;
    int rc = ollama_common(job, &stream, err);
    if (rc == DK_OK) rc = srv_field_string(job->body, "prompt", &prompt, err);
    if (rc == DK_OK) rc = srv_field_string(body, "suffix", &suffix, err);
    if (rc == DK_OK) rc = srv_field_string(body, "system", &ignored, err);
    if (rc == DK_OK) rc = srv_field_string(body, "template", &ignored, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "raw", false, &raw, err);
    const json_t *context = json_object_get(body, "context");
    if (rc == DK_OK && context && !json_is_null(context)) {
        bool ok = json_is_array(context);
        size_t i;
        json_t *t;
        if (ok) json_array_foreach(context, i, t) ok = ok && json_is_integer(t);
        if (!ok) rc = dk_fail(err, DK_ERR_ARG, "context must be an array of token ids");
    }
    if (rc == DK_OK && suffix && suffix[0]) rc = dk_fail(err, DK_ERR_ARG, "suffix (fill-in-the-middle) is not supported");
    if (rc != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        srv_gen_job_free(job);
        return;
    }
    if (!prompt || !prompt[0]) {
        ollama_load_only(rq, job);
        return;
    }
    if (srv_gen_acquire(job, rq, false) != 0) {
        srv_gen_job_free(job);
        return;
    }
    if ((rc = ollama_loaded(job, "generate", err)) == DK_OK) rc = generate_tokens(job, prompt, raw, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        srv_gen_job_free(job);
        return;
    }
    ollama_run(rq, job, stream);
}

/* ---- /api/chat ---- */

void srv_api_chat(srv_request *rq)
{
    char err[DK_ERRLEN];
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return;
    json_t *body = job->body;
    job->chat = true;
    bool stream;
    int rc = ollama_common(job, &stream, err);
    if (rc == DK_OK) rc = srv_ollama_messages(json_object_get(job->body, "messages"), &job->request_messages, err);
    if (rc == DK_OK) rc = srv_parse_tools(json_object_get(body, "tools"), &job->tools, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        srv_gen_job_free(job);
        return;
    }
    if (!job->request_messages || json_array_size(job->request_messages) == 0) {
        ollama_load_only(rq, job);
        return;
    }
    if (srv_gen_acquire(job, rq, false) != 0) {
        srv_gen_job_free(job);
        return;
    }
    rc = ollama_loaded(job, "chat", err);
    if (rc == DK_OK) rc = srv_conversation_with_model(job->lease.info, job->request_messages, &job->messages, err);
    if (rc == DK_OK) rc = srv_gen_fit_chat(job, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        srv_gen_job_free(job);
        return;
    }
    ollama_run(rq, job, stream);
}

/* ---- /api/embed and /api/embeddings ---- */

/* Acquires an embedding model for job->model_name; replies and returns non-zero on failure. */
static int embed_acquire(srv_request *rq, srv_gen_job *job, bool openai)
{
    if (srv_gen_acquire(job, rq, openai) != 0) return -1;
    if (!engine_is_embedding(job->lease.model)) {
        srv_reply_error(rq, 400, "this model does not support embeddings");
        return -1;
    }
    if (engine_is_reranker(job->lease.model)) {
        srv_reply_error(rq, 400, "this model is a reranker: it does not support embeddings (use %s)",
                        openai ? "/v1/rerank" : "/api/rerank");
        return -1;
    }
    return 0;
}

static json_t *floats_json(const float *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

void srv_api_embed(srv_request *rq)
{
    char err[DK_ERRLEN];
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return;
    json_t *body = job->body;
    bool truncate;
    long long dimensions;
    srv_gen_options probe;
    int rc = srv_parse_model(job->body, &job->model_name, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "truncate", true, &truncate, err);
    if (rc == DK_OK) rc = srv_field_int(body, "dimensions", 1, 1 << 20, 0, &dimensions, err);
    if (rc == DK_OK) rc = srv_parse_keep_alive(json_object_get(body, "keep_alive"), &job->load.keep_alive_ns, err);
    if (rc == DK_OK) rc = srv_options_layered(NULL, json_object_get(body, "options"), &probe, err);
    const json_t *input = json_object_get(body, "input");
    const char **texts = NULL;
    size_t n_texts = 0;
    if (rc == DK_OK) {
        if (json_is_string(input)) n_texts = 1;
        else if (json_is_array(input)) n_texts = json_array_size(input);
        else if (input && !json_is_null(input)) rc = dk_fail(err, DK_ERR_ARG, "input must be a string or an array of strings");
    }
    if (rc == DK_OK && !(texts = dk_malloc_array(n_texts + 1, sizeof(*texts)))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == DK_OK && i < n_texts; i++) {
        const json_t *s = json_is_string(input) ? input : json_array_get(input, i);
        if (!json_is_string(s)) rc = dk_fail(err, DK_ERR_ARG, "input must be a string or an array of strings");
        else texts[i] = json_string_value(s);
    }
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        dk_free(texts);
        srv_gen_job_free(job);
        return;
    }
    if (embed_acquire(rq, job, false) != 0) {
        dk_free(texts);
        srv_gen_job_free(job);
        return;
    }
    float *vectors = NULL;
    size_t n_dim = 0, n_tokens = 0;
    rc = srv_embed_texts(job->lease.model, texts, n_texts, truncate, dimensions, &vectors, &n_dim, &n_tokens, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
    } else {
        json_t *embeddings = json_array();
        for (size_t i = 0; embeddings && i < n_texts; i++) json_array_append_new(embeddings, floats_json(vectors + i * n_dim, n_dim));
        json_t *o = json_pack("{s:s,s:o}", "model", job->model_name, "embeddings", embeddings);
        if (o) {
            json_object_set_new(o, "total_duration", json_integer((json_int_t)(dk_now_ns() - job->t_start_ns)));
            json_object_set_new(o, "load_duration", json_integer((json_int_t)(job->lease.load_ms * 1e6)));
            json_object_set_new(o, "prompt_eval_count", json_integer((json_int_t)n_tokens));
        }
        atomic_fetch_add(&rq->server->n_prompt_tokens, (unsigned long)n_tokens);
        srv_reply_json(rq, 200, o);
    }
    dk_free(vectors);
    dk_free(texts);
    srv_gen_job_free(job);
}

void srv_api_embeddings(srv_request *rq)
{
    char err[DK_ERRLEN];
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return;
    json_t *body = job->body;
    const char *prompt = NULL;
    srv_gen_options probe;
    int rc = srv_parse_model(job->body, &job->model_name, err);
    if (rc == DK_OK) rc = srv_field_string(body, "prompt", &prompt, err);
    if (rc == DK_OK) rc = srv_parse_keep_alive(json_object_get(body, "keep_alive"), &job->load.keep_alive_ns, err);
    if (rc == DK_OK) rc = srv_options_layered(NULL, json_object_get(body, "options"), &probe, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        srv_gen_job_free(job);
        return;
    }
    if (embed_acquire(rq, job, false) != 0) {
        srv_gen_job_free(job);
        return;
    }
    float *vector = NULL;
    size_t n_dim = 0, n_tokens = 0;
    rc = DK_OK;
    if (prompt && prompt[0]) rc = srv_embed_texts(job->lease.model, &prompt, 1, true, 0, &vector, &n_dim, &n_tokens, err);
    if (rc != DK_OK) srv_reply_error(rq, srv_status_of(rc), "%s", err);
    else srv_reply_json(rq, 200, json_pack("{s:o}", "embedding", floats_json(vector, n_dim)));
    atomic_fetch_add(&rq->server->n_prompt_tokens, (unsigned long)n_tokens);
    dk_free(vector);
    srv_gen_job_free(job);
}
