/*
 * openai_standin.c: the scripted OpenAI-compatible endpoint of openai_standin.h. One
 * libmicrohttpd daemon (a thread per connection) on 127.0.0.1:0; the script, the position in
 * each model's replies and the record of requests sit behind one mutex, and every reply is
 * built from a copy taken under it, so requests may come from several threads at once.
 * Not for: checking what a client sends (the tests read standin_requests for that).
 */
#include "openai_standin.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"

#define STANDIN_MAX_BODY_BYTES ((size_t)64 << 20)
#define STANDIN_MAX_DELAY_MS 10000

struct standin {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;     /* guards everything below */
    json_t *script;           /* {"MODEL": [reply, ...]} */
    json_t *next;             /* {"MODEL": index of its next reply} */
    json_t *requests;         /* what standin_requests returns a copy of */
    size_t n_model_lists;
    size_t n_calls;           /* tool-call ids handed out ("call_N") */
    char url[64];
};

/* One request, from its first callback to its completion. */
typedef struct standin_call {
    dk_buf body;
    bool too_large;
} standin_call;

/* What to answer: status and body text (malloc'ed, freed after queueing). */
typedef struct standin_out {
    unsigned status;
    char *text;
    long delay_ms;
} standin_out;

/* ---- replies ---- */

static void out_json(standin_out *o, unsigned status, json_t *body)
{
    o->status = status;
    o->text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
}

static void out_error(standin_out *o, unsigned status, const char *message)
{
    const char *type = status == 404 ? "not_found_error" : status >= 500 ? "server_error" : "invalid_request_error";
    out_json(o, status, json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", message, "type", type, "param", "code"));
}

static json_t *tool_calls_render(const json_t *calls, size_t first_id)
{
    json_t *out = json_array();
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        const json_t *args = json_object_get(call, "arguments");
        char *dumped = args && !json_is_string(args) ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        const char *text = json_is_string(args) ? json_string_value(args) : dumped;
        const char *name = json_string_value(json_object_get(call, "name"));
        char id[32];
        snprintf(id, sizeof id, "call_%zu", first_id + i);
        json_array_append_new(out, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function", "name",
                                             name ? name : "", "arguments", text ? text : "{}"));
        free(dumped); /* jansson's allocation */
    }
    return out;
}

static json_t *logprobs_render(const json_t *logprobs)
{
    if (!json_is_array(logprobs)) return json_null();
    json_t *content = json_array();
    size_t i;
    const json_t *lp;
    json_array_foreach(logprobs, i, lp) {
        char token[32];
        snprintf(token, sizeof token, "tok%zu", i);
        json_array_append_new(content, json_pack("{s:s, s:f, s:n, s:[]}", "token", token, "logprob", json_number_value(lp),
                                                 "bytes", "top_logprobs"));
    }
    return json_pack("{s:o}", "content", content);
}

static json_int_t count_or(const json_t *reply, const char *key, json_int_t fallback)
{
    const json_t *v = json_object_get(reply, key);
    return json_is_integer(v) ? json_integer_value(v) : fallback;
}

/* A chat.completion for reply; n_message_bytes: the request's messages as compact JSON. */
static void completion_render(standin_out *o, const json_t *reply, const char *model, size_t n_message_bytes,
                              size_t first_id)
{
    const json_t *calls = json_object_get(reply, "tool_calls");
    size_t n_calls = json_array_size(calls);
    const char *content = json_string_value(json_object_get(reply, "content"));
    json_t *message = json_pack("{s:s}", "role", "assistant");
    json_object_set_new(message, "content", content ? json_string(content) : n_calls ? json_null() : json_string(""));
    if (n_calls) json_object_set_new(message, "tool_calls", tool_calls_render(calls, first_id));
    const json_t *logprobs = json_object_get(reply, "logprobs");
    json_int_t prompt = count_or(reply, "prompt_tokens", 1 + (json_int_t)(n_message_bytes / 4));
    json_int_t fallback = json_is_array(logprobs) ? (json_int_t)json_array_size(logprobs)
                                                  : 1 + (json_int_t)((content ? strlen(content) : 0) / 4 + 4 * n_calls);
    json_int_t completion = count_or(reply, "completion_tokens", fallback);
    out_json(o, 200,
             json_pack("{s:s, s:s, s:i, s:s, s:[{s:i, s:o, s:o, s:s}], s:{s:I, s:I, s:I}}", "id", "chatcmpl-standin",
                       "object", "chat.completion", "created", 0, "model", model, "choices", "index", 0, "message",
                       message, "logprobs", logprobs_render(logprobs), "finish_reason", n_calls ? "tool_calls" : "stop",
                       "usage", "prompt_tokens", prompt, "completion_tokens", completion, "total_tokens",
                       prompt + completion));
}

static void reply_render(standin_out *o, const json_t *reply, const char *model, size_t n_message_bytes, size_t first_id)
{
    json_int_t delay = count_or(reply, "delay_ms", 0);
    o->delay_ms = delay < 0 ? 0 : delay > STANDIN_MAX_DELAY_MS ? STANDIN_MAX_DELAY_MS : (long)delay;
    const json_t *error = json_object_get(reply, "error");
    json_int_t status = count_or(reply, "status", error ? 500 : 200);
    if (status < 100 || status > 599) status = 500;
    const json_t *raw = json_object_get(reply, "raw");
    if (json_is_string(raw)) {
        o->status = (unsigned)status;
        o->text = strdup(json_string_value(raw)); /* freed with free(), as json_dumps' texts */
    } else if (json_object_get(reply, "body")) {
        out_json(o, (unsigned)status, json_deep_copy(json_object_get(reply, "body")));
    } else if (status >= 400 || error) {
        char msg[256];
        snprintf(msg, sizeof msg, "scripted HTTP %d", (int)status);
        out_error(o, (unsigned)status, json_is_string(error) ? json_string_value(error) : msg);
    } else {
        completion_render(o, reply, model, n_message_bytes, first_id);
    }
}

/* ---- the endpoints ---- */

static void on_models(standin *s, standin_out *o)
{
    json_t *data = json_array();
    pthread_mutex_lock(&s->lock);
    s->n_model_lists++;
    const char *model;
    json_t *replies;
    json_object_foreach(s->script, model, replies) {
        json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s}", "id", model, "object", "model", "created", 0,
                                              "owned_by", "standin"));
    }
    pthread_mutex_unlock(&s->lock);
    out_json(o, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static json_t *header_or_null(struct MHD_Connection *conn, const char *name)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    return v ? json_string(v) : json_null();
}

static void on_chat(standin *s, struct MHD_Connection *conn, const standin_call *call, standin_out *o)
{
    json_t *body = json_loadb(call->body.data ? call->body.data : "", call->body.len, 0, NULL);
    const char *model_name = json_string_value(json_object_get(body, "model"));
    char *model = model_name ? dk_strdup(model_name) : NULL;
    char *messages = json_dumps(json_object_get(body, "messages"), JSON_COMPACT);
    size_t n_message_bytes = messages ? strlen(messages) : 0;
    free(messages);
    bool body_is_object = json_is_object(body); /* body itself goes to the record */
    json_t *record = json_pack("{s:o, s:o, s:o, s:o}", "model", model ? json_string(model) : json_null(), "body",
                               body ? body : json_null(), "authorization", header_or_null(conn, "Authorization"),
                               "content_type", header_or_null(conn, MHD_HTTP_HEADER_CONTENT_TYPE));
    json_t *reply = NULL;
    size_t used = 0, first_id = 0;
    pthread_mutex_lock(&s->lock);
    json_array_append_new(s->requests, record);
    const json_t *replies = model ? json_object_get(s->script, model) : NULL;
    if (replies) {
        used = (size_t)json_integer_value(json_object_get(s->next, model));
        if (used < json_array_size(replies)) {
            reply = json_deep_copy(json_array_get(replies, used));
            json_object_set_new(s->next, model, json_integer((json_int_t)used + 1));
            first_id = s->n_calls + 1;
            s->n_calls += json_array_size(json_object_get(reply, "tool_calls"));
        }
    }
    pthread_mutex_unlock(&s->lock);
    char msg[512];
    if (!body_is_object) {
        out_error(o, 400, "the request body is not a JSON object");
    } else if (!model) {
        out_error(o, 400, "the request names no model");
    } else if (!replies) {
        snprintf(msg, sizeof msg, "model '%s' not found", model);
        out_error(o, 404, msg);
    } else if (!reply) {
        snprintf(msg, sizeof msg, "the stand-in's script for '%s' is used up (%zu replies)", model, used);
        out_error(o, 500, msg);
    } else {
        reply_render(o, reply, model, n_message_bytes, first_id);
    }
    json_decref(reply);
    dk_free(model);
}

static void route(standin *s, struct MHD_Connection *conn, const char *url, const char *method,
                  const standin_call *call, standin_out *o)
{
    if (call->too_large) out_error(o, 413, "request body too large");
    else if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/chat/completions") == 0) on_chat(s, conn, call, o);
    else if (strcmp(method, "GET") == 0 && strcmp(url, "/v1/models") == 0) on_models(s, o);
    else {
        char msg[512];
        snprintf(msg, sizeof msg, "no route for %.16s %.400s", method, url);
        out_error(o, 404, msg);
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static enum MHD_Result queue(struct MHD_Connection *conn, const standin_out *o)
{
    static const char fallback[] = "{\"error\":{\"message\":\"stand-in out of memory\"}}";
    const char *text = o->text ? o->text : fallback;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result r = MHD_queue_response(conn, o->text ? o->status : 500, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    standin *s = cls;
    standin_call *call = *con_cls;
    if (!call) {
        if (!(call = dk_calloc(1, sizeof *call))) return MHD_NO;
        *con_cls = call;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (call->too_large || call->body.len + n > STANDIN_MAX_BODY_BYTES) {
            call->too_large = true;
            dk_buf_free(&call->body);
        } else if (dk_buf_append(&call->body, upload_data, n) != 0) {
            return MHD_NO;
        }
        return MHD_YES;
    }
    standin_out o = {0};
    route(s, conn, url, method, call, &o);
    if (o.delay_ms > 0) sleep_ms(o.delay_ms);
    enum MHD_Result r = queue(conn, &o);
    free(o.text);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    standin_call *call = *con_cls;
    if (!call) return;
    *con_cls = NULL;
    dk_buf_free(&call->body);
    dk_free(call);
}

/* ---- start and stop ---- */

static int script_check(json_t *script, char *err)
{
    if (!json_is_object(script)) return dk_fail(err, DK_ERR_ARG, "stand-in: the script is not a JSON object");
    const char *model;
    json_t *replies;
    json_object_foreach(script, model, replies) {
        if (!json_is_array(replies)) return dk_fail(err, DK_ERR_ARG, "stand-in: the replies of '%s' are not an array", model);
        size_t i;
        json_t *reply;
        json_array_foreach(replies, i, reply) {
            if (!json_is_object(reply)) return dk_fail(err, DK_ERR_ARG, "stand-in: reply %zu of '%s' is not an object", i, model);
        }
    }
    return DK_OK;
}

int standin_start(standin **out, const char *script_json, char *err)
{
    *out = NULL;
    json_error_t je;
    json_t *script = json_loads(script_json ? script_json : "", 0, &je);
    if (!script) return dk_fail(err, DK_ERR_ARG, "stand-in: the script is not JSON: %s", je.text);
    int rc = script_check(script, err);
    if (rc != DK_OK) {
        json_decref(script);
        return rc;
    }
    standin *s = dk_calloc(1, sizeof *s);
    if (!s) {
        json_decref(script);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s->lock, NULL);
    s->script = script;
    s->next = json_object();
    s->requests = json_array();
    if (!s->next || !s->requests) {
        standin_stop(s);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = 0; /* the kernel picks a free port */
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
                                 NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_END);
    const union MHD_DaemonInfo *info = s->daemon ? MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!info || info->port == 0) {
        standin_stop(s);
        return dk_fail(err, DK_ERR_IO, "stand-in: cannot listen on 127.0.0.1");
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u/v1", (unsigned)info->port);
    *out = s;
    return DK_OK;
}

const char *standin_url(const standin *s) { return s ? s->url : ""; }

json_t *standin_requests(standin *s)
{
    pthread_mutex_lock(&s->lock);
    json_t *copy = json_deep_copy(s->requests);
    pthread_mutex_unlock(&s->lock);
    return copy;
}

size_t standin_n_requests(standin *s, const char *model_or_null)
{
    size_t n = 0, i;
    json_t *record;
    pthread_mutex_lock(&s->lock);
    json_array_foreach(s->requests, i, record) {
        const char *model = json_string_value(json_object_get(record, "model"));
        if (!model_or_null || (model && strcmp(model, model_or_null) == 0)) n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t standin_n_model_lists(standin *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n_model_lists;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void standin_stop(standin *s)
{
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon); /* joins the connection threads */
    json_decref(s->script);
    json_decref(s->next);
    json_decref(s->requests);
    pthread_mutex_destroy(&s->lock);
    dk_free(s);
}
