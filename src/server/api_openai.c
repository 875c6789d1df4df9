/*
 * api_openai.c: OpenAI's generation and embedding endpoints, field for field as the `openai`
 * client library sends and reads them (docs/api.md):
 *
 *   POST /v1/chat/completions  a conversation through engine_chat; tools, tool_choice,
 *                              response_format, logprobs; SSE chunks when streamed
 *   POST /v1/completions       a raw prompt (no chat template), echo, logprobs
 *   POST /v1/embeddings        float or base64 (little-endian float32) vectors
 *
 * Errors come out in OpenAI's shape (srv_reply_error does it under /v1/; mid-stream as a
 * `data: {"error": {...}}` event, which the client raises). Generation is request.c's
 * srv_gen_run, shared with api_ollama.c.
 * Not for: Ollama's endpoints (api_ollama.c), request field parsing (request.c).
 */
#include "server/srv_internal.h"

#include <string.h>

/* What the OpenAI side keeps per request besides the job. */
typedef struct openai_state {
    bool completions;   /* /v1/completions (text) rather than chat */
    bool include_usage; /* stream_options.include_usage */
    bool first_sent;    /* chat: the {"role":"assistant"} delta went out */
    const char *echo;   /* completions: the prompt to print before the text, or NULL */
} openai_state;

static void openai_id(char *buf, size_t n, const char *prefix)
{
    static atomic_ulong counter;
    uint64_t x = dk_now_ns() ^ ((uint64_t)atomic_fetch_add(&counter, 1) << 40);
    x += 0x9e3779b97f4a7c15ull; /* splitmix64: ids that do not look sequential */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    snprintf(buf, n, "%s%016llx", prefix, (unsigned long long)x);
}

static json_t *openai_usage(const srv_gen_job *job)
{
    size_t prompt = job->timings.n_prompt + job->n_prompt_reused, completion = job->timings.n_eval;
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)prompt, "completion_tokens", (json_int_t)completion,
                     "total_tokens", (json_int_t)(prompt + completion), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)job->n_prompt_reused);
}

/* {"id","object","created","model","system_fingerprint","choices":[choice]} */
static json_t *openai_envelope(const srv_gen_job *job, const char *object, json_t *choice)
{
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[]}", "id", job->id, "object", object, "created", (json_int_t)job->created,
                          "model", job->model_name, "system_fingerprint", "fp_duckling", "choices");
    if (o && choice) json_array_append(json_object_get(o, "choices"), choice);
    json_decref(choice);
    return o;
}

static const char *openai_finish_reason(const srv_gen_job *job)
{
    if (job->tool_calls && json_array_size(job->tool_calls)) return "tool_calls";
    return srv_gen_done_reason(job);
}

/* OpenAI's tool calls: arguments as a JSON string. index: for stream deltas. */
static json_t *openai_tool_calls(const json_t *calls, bool with_index)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function");
        char *args = json_dumps(json_object_get(fn, "arguments"), JSON_COMPACT | JSON_ENCODE_ANY);
        char id[40];
        const char *given = json_string_value(json_object_get(c, "id"));
        if (!given) {
            openai_id(id, sizeof id, "call_");
            given = id;
        }
        json_t *o = json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", given, "type", "function", "function", "name",
                              json_object_get(fn, "name"), "arguments", args ? args : "{}");
        free(args);
        if (o && with_index) json_object_set_new(o, "index", json_integer((json_int_t)i));
        if (o) json_array_append_new(out, o);
    }
    return out;
}

/* Chat logprobs: {"content": [...], "refusal": null}; entries as srv_logprob_json makes them. */
static json_t *chat_logprobs(const json_t *entries)
{
    return json_pack("{s:O,s:n}", "content", entries, "refusal");
}

/* Completions logprobs: {"tokens","token_logprobs","top_logprobs":[{token: logprob}],"text_offset"}. */
static json_t *completion_logprobs(const json_t *entries, size_t *offset)
{
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offsets = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const json_t *token = json_object_get(e, "token");
        json_array_append(tokens, (json_t *)token);
        json_array_append(lps, json_object_get(e, "logprob"));
        json_t *top = json_object();
        size_t j;
        json_t *alt;
        json_array_foreach(json_object_get(e, "top_logprobs"), j, alt)
            json_object_set(top, json_string_value(json_object_get(alt, "token")), json_object_get(alt, "logprob"));
        json_array_append_new(tops, top);
        json_array_append_new(offsets, json_integer((json_int_t)*offset));
        *offset += json_string_length(token);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops, "text_offset", offsets);
}

/* ---- streaming ---- */

static int openai_write(srv_gen_job *job, json_t *chunk)
{
    int rc = chunk ? srv_stream_write_sse(job->stream, chunk) : 0;
    json_decref(chunk);
    return rc != 0;
}

static json_t *chat_chunk(const srv_gen_job *job, json_t *delta, json_t *logprobs, const char *finish)
{
    json_t *choice = json_pack("{s:i,s:o,s:o,s:s?}", "index", 0, "delta", delta ? delta : json_object(), "logprobs",
                               logprobs ? logprobs : json_null(), "finish_reason", finish);
    if (choice && !finish) json_object_set_new(choice, "finish_reason", json_null());
    json_t *o = openai_envelope(job, "chat.completion.chunk", choice);
    const openai_state *s = job->api;
    if (o && s->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

static json_t *text_chunk(const srv_gen_job *job, const char *text, size_t n, json_t *logprobs, const char *finish)
{
    json_t *choice = json_pack("{s:s%,s:i,s:o,s:s?}", "text", text, n, "index", 0, "logprobs", logprobs ? logprobs : json_null(),
                               "finish_reason", finish);
    if (choice && !finish) json_object_set_new(choice, "finish_reason", json_null());
    return openai_envelope(job, "text_completion", choice);
}

static int openai_delta(srv_gen_job *job, const char *content, size_t n_content, const char *reasoning,
                        size_t n_reasoning, const json_t *logprobs)
{
    openai_state *s = job->api;
    if (s->completions) {
        size_t offset = (s->echo ? strlen(s->echo) : 0) + job->content.len - n_content;
        json_t *lp = logprobs ? completion_logprobs(logprobs, &offset) : NULL;
        return openai_write(job, text_chunk(job, content, n_content, lp, NULL));
    }
    json_t *delta = json_object();
    if (delta && n_content) json_object_set_new(delta, "content", json_stringn(content, n_content));
    if (delta && n_reasoning) json_object_set_new(delta, "reasoning", json_stringn(reasoning, n_reasoning));
    return openai_write(job, chat_chunk(job, delta, logprobs ? chat_logprobs(logprobs) : NULL, NULL));
}

static void openai_stream_error(srv_stream *st, const char *message)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", message, "type", "server_error", "param", "code");
    if (e) srv_stream_write_sse(st, e);
    json_decref(e);
}

static void openai_worker(srv_stream *st, void *ctx)
{
    srv_gen_job *job = ctx;
    openai_state *s = job->api;
    job->stream = st;
    if (!s->completions) /* the role comes first, as OpenAI sends it */
        job->gone = openai_write(job, chat_chunk(job, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL));
    else if (s->echo)
        job->gone = openai_write(job, text_chunk(job, s->echo, strlen(s->echo), NULL, NULL));
    if (!job->gone) srv_gen_run(job);
    if (!job->gone && job->rc != DK_OK) {
        openai_stream_error(st, job->err);
    } else if (!job->gone) {
        const json_t *pending = job->logprobs_pending && json_array_size(job->logprobs_pending) ? job->logprobs_pending : NULL;
        json_t *last;
        if (s->completions) {
            size_t offset = (s->echo ? strlen(s->echo) : 0) + job->content.len;
            last = text_chunk(job, "", 0, pending ? completion_logprobs(pending, &offset) : NULL, srv_gen_done_reason(job));
        } else {
            if (json_array_size(job->tool_calls))
                job->gone = openai_write(job, chat_chunk(job, json_pack("{s:o}", "tool_calls", openai_tool_calls(job->tool_calls, true)),
                                                         NULL, NULL));
            last = chat_chunk(job, json_object(), pending ? chat_logprobs(pending) : NULL, openai_finish_reason(job));
        }
        if (!job->gone) job->gone = openai_write(job, last);
        else json_decref(last);
        if (!job->gone && s->include_usage) {
            json_t *u = openai_envelope(job, s->completions ? "text_completion" : "chat.completion.chunk", NULL);
            if (u) json_object_set_new(u, "usage", openai_usage(job));
            job->gone = openai_write(job, u);
        }
        if (!job->gone) srv_stream_write_sse_done(st);
    }
    dk_free(s);
    srv_gen_job_free(job);
}

/* Streams or answers a prepared job; takes job and state (heap). */
static void openai_run(srv_request *rq, srv_gen_job *job, openai_state *s, bool stream)
{
    job->api = s;
    if (stream) {
        job->on_delta = openai_delta;
        if (srv_stream_start(rq, "text/event-stream", openai_worker, job) != 0) {
            dk_free(s);
            srv_gen_job_free(job);
        }
        return;
    }
    srv_gen_run(job);
    if (job->rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(job->rc), "%s", job->err);
    } else if (s->completions) {
        dk_buf text = {0};
        if (s->echo) dk_buf_puts(&text, s->echo);
        size_t offset = text.len;
        dk_buf_append(&text, job->content.data ? job->content.data : "", job->content.len);
        json_t *lp = job->logprobs && job->logprobs_all ? completion_logprobs(job->logprobs_all, &offset) : NULL;
        json_t *o = openai_envelope(job, "text_completion", NULL);
        json_array_append_new(json_object_get(o, "choices"), json_pack("{s:s%,s:i,s:o,s:s}", "text", text.data ? text.data : "",
                                                                       text.len, "index", 0, "logprobs", lp ? lp : json_null(),
                                                                       "finish_reason", srv_gen_done_reason(job)));
        json_object_set_new(o, "usage", openai_usage(job));
        dk_buf_free(&text);
        srv_reply_json(rq, 200, o);
    } else {
        bool calls = json_array_size(job->tool_calls) > 0;
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        if (calls && job->content.len == 0) json_object_set_new(msg, "content", json_null());
        else json_object_set_new(msg, "content", json_stringn(job->content.data ? job->content.data : "", job->content.len));
        if (calls) json_object_set_new(msg, "tool_calls", openai_tool_calls(job->tool_calls, false));
        if (job->reasoning_text.len)
            json_object_set_new(msg, "reasoning", json_stringn(job->reasoning_text.data, job->reasoning_text.len));
        json_t *lp = job->logprobs ? chat_logprobs(job->logprobs_all ? job->logprobs_all : json_array()) : NULL;
        json_t *choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "message", msg, "logprobs", lp ? lp : json_null(),
                                   "finish_reason", openai_finish_reason(job));
        json_t *o = openai_envelope(job, "chat.completion", choice);
        if (o) json_object_set_new(o, "usage", openai_usage(job));
        srv_reply_json(rq, 200, o);
    }
    dk_free(s);
    srv_gen_job_free(job);
}

/* stream, stream_options.include_usage, and the sampling fields as options. */
static int openai_common(srv_gen_job *job, openai_state *s, long default_max_tokens, bool *stream, char *err)
{
    const json_t *body = job->body;
    int rc = srv_parse_model(body, &job->model_name, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "stream", false, stream, err);
    const json_t *so = json_object_get(body, "stream_options");
    if (rc == DK_OK && so && !json_is_null(so)) {
        if (!json_is_object(so)) rc = dk_fail(err, DK_ERR_ARG, "stream_options must be an object");
        else rc = srv_field_bool(so, "include_usage", false, &s->include_usage, err);
    }
    if (rc == DK_OK) rc = srv_openai_options(body, default_max_tokens, &job->options_json, err);
    srv_gen_options probe;
    if (rc == DK_OK) rc = srv_options_layered(NULL, job->options_json, &probe, err);
    return rc;
}

/* After loading: a generative model, options over the Modelfile's params. */
static int openai_loaded(srv_gen_job *job, char *err)
{
    if (engine_is_embedding(job->lease.model) || !job->lease.session)
        return dk_fail(err, DK_ERR_ARG, "\"%s\" is an embedding model: it does not generate text", job->model_name);
    return srv_options_layered(job->lease.info ? job->lease.info->params : NULL, job->options_json, &job->opts, err);
}

/* Parses the body and makes the job and state; replies and returns NULL on failure. */
static srv_gen_job *openai_begin(srv_request *rq, openai_state **state)
{
    *state = NULL;
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return NULL;
    openai_state *s = dk_calloc(1, sizeof(*s));
    if (!s) {
        srv_gen_job_free(job);
        dk_free(s);
        srv_reply_error(rq, 500, "out of memory");
        return NULL;
    }
    *state = s;
    return job;
}

static void openai_fail(srv_request *rq, srv_gen_job *job, openai_state *s, int rc, const char *err)
{
    if (rc != DK_OK) srv_reply_error(rq, srv_status_of(rc), "%s", err);
    dk_free(s);
    srv_gen_job_free(job);
}

/* ---- /v1/chat/completions ---- */

static int chat_fields(srv_gen_job *job, char *err)
{
    const json_t *body = job->body;
    int rc = srv_openai_messages(json_object_get(body, "messages"), &job->request_messages, err);
    if (rc == DK_OK && (!job->request_messages || json_array_size(job->request_messages) == 0))
        rc = dk_fail(err, DK_ERR_ARG, "messages is required");
    if (rc == DK_OK) rc = srv_parse_tools(json_object_get(body, "tools"), &job->tools, err);
    if (rc == DK_OK) rc = srv_parse_tool_choice(json_object_get(body, "tool_choice"), &job->tool_choice, &job->tool_name, err);
    if (rc == DK_OK) rc = srv_check_tool_choice(job->tools, job->tool_choice, job->tool_name, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "parallel_tool_calls", true, &job->parallel_tool_calls, err);
    if (rc == DK_OK) rc = srv_openai_response_format(json_object_get(body, "response_format"), &job->format, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "logprobs", false, &job->logprobs, err);
    long long top = 0;
    if (rc == DK_OK) rc = srv_field_int(body, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, 0, &top, err);
    job->top_logprobs = (int)top;
    if (rc == DK_OK) rc = srv_openai_reasoning_effort(body, &job->think, err);
    return rc;
}

void srv_openai_chat(srv_request *rq)
{
    char err[DK_ERRLEN];
    openai_state *s;
    srv_gen_job *job = openai_begin(rq, &s);
    if (!job) return;
    job->chat = true;
    openai_id(job->id, sizeof job->id, "chatcmpl-");
    bool stream;
    int rc = openai_common(job, s, -1, &stream, err);
    if (rc == DK_OK) rc = chat_fields(job, err);
    if (rc != DK_OK) { openai_fail(rq, job, s, rc, err); return; }
    if (srv_gen_acquire(job, rq, true) != 0) { openai_fail(rq, job, s, DK_OK, NULL); return; }
    rc = openai_loaded(job, err);
    if (rc == DK_OK) rc = srv_conversation_with_model(job->lease.info, job->request_messages, &job->messages, err);
    if (rc == DK_OK) rc = srv_gen_fit_chat(job, err);
    if (rc != DK_OK) { openai_fail(rq, job, s, rc, err); return; }
    openai_run(rq, job, s, stream);
}

/* ---- /v1/completions ---- */

/* prompt: a string, an array of one string, or an array of token ids. */
static int completion_prompt(srv_gen_job *job, const json_t *prompt, char *err)
{
    const json_t *p = prompt;
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    size_t n_vocab = engine_n_vocab(job->lease.model);
    int rc = DK_OK;
    if (json_is_string(p)) {
        int32_t *tokens = NULL;
        size_t n = 0;
        rc = engine_tokenize(job->lease.model, json_string_value(p), json_string_length(p), true, true, &tokens, &n, err);
        job->prompt = tokens;
        job->n_prompt = n;
    } else if (json_is_array(p) && json_array_size(p) > 0 && json_is_integer(json_array_get(p, 0))) {
        job->n_prompt = json_array_size(p);
        if (!(job->prompt = dk_malloc_array(job->n_prompt, sizeof(int32_t)))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        for (size_t i = 0; rc == DK_OK && i < job->n_prompt; i++) {
            const json_t *t = json_array_get(p, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || (size_t)json_integer_value(t) >= n_vocab)
                rc = dk_fail(err, DK_ERR_ARG, "prompt[%zu] is not a token id of the vocabulary", i);
            else job->prompt[i] = (int32_t)json_integer_value(t);
        }
    } else if (json_is_array(p) && json_array_size(p) > 1) {
        rc = dk_fail(err, DK_ERR_ARG, "prompt: only one prompt per request is supported");
    } else {
        rc = dk_fail(err, DK_ERR_ARG, "prompt must be a string, an array of one string or an array of token ids");
    }
    size_t n_ctx = engine_session_n_ctx(job->lease.session);
    if (rc == DK_OK && job->n_prompt == 0) rc = dk_fail(err, DK_ERR_ARG, "the prompt gives no tokens");
    if (rc == DK_OK && job->n_prompt >= n_ctx)
        rc = dk_fail(err, DK_ERR_ARG, "the prompt is too long: %zu tokens, the context holds %zu", job->n_prompt, n_ctx);
    return rc;
}

void srv_openai_completions(srv_request *rq)
{
    char err[DK_ERRLEN];
    openai_state *s;
    srv_gen_job *job = openai_begin(rq, &s);
    if (!job) return;
    s->completions = true;
    openai_id(job->id, sizeof job->id, "cmpl-");
    bool stream, echo;
    const char *suffix = NULL;
    long long n_logprobs = -1;
    int rc = openai_common(job, s, 16, &stream, err);
    const json_t *body = job->body, *prompt = json_object_get(body, "prompt");
    if (rc == DK_OK) rc = srv_field_bool(body, "echo", false, &echo, err);
    if (rc == DK_OK) rc = srv_field_string(body, "suffix", &suffix, err);
    if (rc == DK_OK) rc = srv_field_int(body, "logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, -1, &n_logprobs, err);
    if (rc == DK_OK && suffix && suffix[0]) rc = dk_fail(err, DK_ERR_ARG, "suffix is not supported");
    if (rc == DK_OK && (!prompt || json_is_null(prompt))) rc = dk_fail(err, DK_ERR_ARG, "prompt is required");
    if (rc != DK_OK) { openai_fail(rq, job, s, rc, err); return; }
    job->logprobs = n_logprobs >= 0;
    job->top_logprobs = n_logprobs > 0 ? (int)n_logprobs : 0;
    if (echo) {
        const json_t *p = json_is_array(prompt) && json_array_size(prompt) == 1 ? json_array_get(prompt, 0) : prompt;
        s->echo = json_string_value(p);
    }
    if (srv_gen_acquire(job, rq, true) != 0) { openai_fail(rq, job, s, DK_OK, NULL); return; }
    rc = openai_loaded(job, err);
    if (rc == DK_OK) rc = completion_prompt(job, prompt, err);
    if (rc != DK_OK) { openai_fail(rq, job, s, rc, err); return; }
    openai_run(rq, job, s, stream);
}

/* ---- /v1/embeddings ---- */

/* The text of a token array (the pieces joined). */
static int tokens_text(engine_model *model, const json_t *ids, char **out, char *err)
{
    dk_buf text = {0};
    size_t i;
    json_t *t;
    json_array_foreach(ids, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || (size_t)json_integer_value(t) >= engine_n_vocab(model)) {
            dk_buf_free(&text);
            return dk_fail(err, DK_ERR_ARG, "input: token %zu is not an id of the vocabulary (%zu tokens)", i,
                           engine_n_vocab(model));
        }
        int rc = engine_token_piece(model, (int32_t)json_integer_value(t), &text, err);
        if (rc != DK_OK) {
            dk_buf_free(&text);
            return rc;
        }
    }
    if (!text.data) dk_buf_puts(&text, "");
    *out = dk_buf_detach(&text);
    return *out ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

/* input as a list of texts: a string, strings, a token array or token arrays. owned[] holds
 * the texts made from tokens (the caller frees each and the arrays). */
static int embedding_inputs(engine_model *model, const json_t *input, const char ***texts, char ***owned, size_t *n,
                            char *err)
{
    bool one_token_array = json_is_array(input) && json_array_size(input) > 0 && json_is_integer(json_array_get(input, 0));
    *n = json_is_string(input) || one_token_array ? 1 : json_array_size(input);
    *texts = dk_calloc(*n + 1, sizeof(**texts));
    *owned = dk_calloc(*n + 1, sizeof(**owned));
    if (!*texts || !*owned) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        const json_t *item = json_is_string(input) || one_token_array ? input : json_array_get(input, i);
        if (json_is_string(item)) {
            (*texts)[i] = json_string_value(item);
        } else if (json_is_array(item)) {
            int rc = tokens_text(model, item, &(*owned)[i], err);
            if (rc != DK_OK) return rc;
            (*texts)[i] = (*owned)[i];
        } else {
            return dk_fail(err, DK_ERR_ARG, "input must be a string, an array of strings or of token arrays");
        }
        if (!(*texts)[i][0]) return dk_fail(err, DK_ERR_ARG, "input[%zu] is empty", i);
    }
    return DK_OK;
}

void srv_openai_embeddings(srv_request *rq)
{
    char err[DK_ERRLEN];
    openai_state *s;
    srv_gen_job *job = openai_begin(rq, &s);
    if (!job) return;
    const json_t *body = job->body, *input = json_object_get(body, "input");
    const char *encoding = NULL;
    long long dimensions;
    int rc = srv_parse_model(body, &job->model_name, err);
    if (rc == DK_OK) rc = srv_field_string(body, "encoding_format", &encoding, err);
    if (rc == DK_OK && encoding && strcmp(encoding, "float") != 0 && strcmp(encoding, "base64") != 0)
        rc = dk_fail(err, DK_ERR_ARG, "encoding_format must be \"float\" or \"base64\"");
    if (rc == DK_OK) rc = srv_field_int(body, "dimensions", 1, 1 << 20, 0, &dimensions, err);
    if (rc == DK_OK && !json_is_string(input) && !(json_is_array(input) && json_array_size(input) > 0))
        rc = dk_fail(err, DK_ERR_ARG, "input must be a string, an array of strings or of token arrays");
    if (rc != DK_OK) { openai_fail(rq, job, s, rc, err); return; }
    if (srv_gen_acquire(job, rq, true) != 0) { openai_fail(rq, job, s, DK_OK, NULL); return; }
    if (!engine_is_embedding(job->lease.model))
        { openai_fail(rq, job, s, DK_ERR_ARG, "this model does not support embeddings"); return; }
    if (engine_is_reranker(job->lease.model))
        { openai_fail(rq, job, s, DK_ERR_ARG, "this model is a reranker: it does not support embeddings (use /v1/rerank)"); return; }

    const char **texts = NULL;
    char **owned = NULL;
    size_t n = 0, n_dim = 0, n_tokens = 0;
    float *vectors = NULL;
    rc = embedding_inputs(job->lease.model, input, &texts, &owned, &n, err);
    if (rc == DK_OK) rc = srv_embed_texts(job->lease.model, texts, n, true, dimensions, &vectors, &n_dim, &n_tokens, err);
    if (rc == DK_OK) {
        bool base64 = encoding && strcmp(encoding, "base64") == 0;
        json_t *data = json_array();
        for (size_t i = 0; data && i < n; i++) {
            const float *v = vectors + i * n_dim;
            json_t *emb;
            if (base64) {
                dk_buf b = {0};
                srv_base64_floats(v, n_dim, &b);
                emb = json_stringn(b.data ? b.data : "", b.len);
                dk_buf_free(&b);
            } else {
                emb = json_array();
                for (size_t d = 0; emb && d < n_dim; d++) json_array_append_new(emb, json_real(v[d]));
            }
            json_array_append_new(data, json_pack("{s:s,s:o,s:I}", "object", "embedding", "embedding", emb, "index", (json_int_t)i));
        }
        json_t *o = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model", job->model_name, "usage",
                              "prompt_tokens", (json_int_t)n_tokens, "total_tokens", (json_int_t)n_tokens);
        atomic_fetch_add(&rq->server->n_prompt_tokens, (unsigned long)n_tokens);
        srv_reply_json(rq, 200, o);
    }
    for (size_t i = 0; owned && i < n; i++) dk_free(owned[i]);
    dk_free(owned);
    dk_free(texts);
    dk_free(vectors);
    openai_fail(rq, job, s, rc, err);
}
