/*
 * llm_openai.c: the agent_llm backend for an OpenAI-compatible endpoint ("URL[#MODEL]"): one
 * non-streaming POST {base}/chat/completions per turn over libcurl, never through a proxy,
 * with a 10 s connect timeout and a 300 s (or $DUCKLING_REMOTE_TIMEOUT seconds) limit on the
 * whole exchange, a "Bearer" key when one is known and replies of at most 16 MiB. It turns
 * the agent's messages into OpenAI's wire form (a tool call's arguments as a JSON string,
 * content null for an assistant turn that only calls tools) and the reply back into
 * agent_llm_reply (arguments parsed to an object, usage, the sum of the token logprobs).
 * Without #MODEL the first model that GET {base}/models lists is used, asked once, at the
 * first turn. Replies are untrusted: every field is type-checked, a wrong structure is
 * DK_ERR_FORMAT, an HTTP error status DK_ERR_IO with the endpoint's own message.
 *
 * Not for: streaming, retries (the router decides what a failure means), local models.
 */
#include "agent/agent_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPENAI_CONNECT_TIMEOUT_MS 10000L
#define OPENAI_TOTAL_TIMEOUT_S 300.0
#define OPENAI_MAX_TIMEOUT_S (7.0 * 24 * 3600) /* a week: beyond that it is a typo */
#define OPENAI_MAX_REPLY_BYTES ((size_t)16 << 20)
#define OPENAI_DEFAULT_MAX_TOKENS 512

typedef struct openai_endpoint {
    char *base;       /* "http://HOST:PORT/v1": no trailing '/', no "#MODEL" */
    char *host;       /* "HOST:PORT" as the spec spells it, for messages */
    char *model;      /* NULL until known (without #MODEL: the first of GET /models) */
    char *auth;       /* "Authorization: Bearer KEY", or NULL without a key */
    long timeout_ms;  /* of a whole exchange */
} openai_endpoint;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- the spec, the key and the timeout ---- */

/* HOST[:PORT] (n bytes at hp) with HOST a name, an IPv4 address or "[IPv6]"; PORT 1..65535. */
static bool host_port_valid(const char *hp, size_t n)
{
    const char *end = hp + n, *colon;
    if (hp[0] == '[') {
        const char *close = memchr(hp, ']', n);
        if (!close || close == hp + 1) return false;
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':') return false;
    } else {
        colon = memchr(hp, ':', n);
        if (colon == hp) return false;
    }
    if (!colon) return true;
    const char *port = colon + 1;
    size_t n_port = (size_t)(end - port);
    if (n_port == 0 || n_port > 5) return false;
    long value = 0;
    for (const char *p = port; p < end; p++) {
        if (*p < '0' || *p > '9') return false; /* also a second ':' of an unbracketed IPv6 address */
        value = value * 10 + (*p - '0');
    }
    return value >= 1 && value <= 65535;
}

static int spec_parse(openai_endpoint *ep, const char *spec, char *err)
{
    if (!agent_spec_is_url(spec))
        return dk_fail(err, DK_ERR_ARG, "endpoint '%s' is not an http:// or https:// URL", spec ? spec : "(null)");
    for (const char *p = spec; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return dk_fail(err, DK_ERR_ARG, "endpoint URL '%s' has a space or a control character", spec);
    const char *host = spec + (spec[4] == 's' ? 8 : 7);
    size_t n_host = strcspn(host, "/?#");
    if (n_host == 0) return dk_fail(err, DK_ERR_ARG, "endpoint URL '%s' has no host", spec);
    if (memchr(host, '@', n_host))
        return dk_fail(err, DK_ERR_ARG, "endpoint URL '%s': credentials in the URL are not supported "
                                        "(use $DUCKLING_API_KEY)", spec);
    if (!host_port_valid(host, n_host)) return dk_fail(err, DK_ERR_ARG, "endpoint URL '%s': bad host or port", spec);
    const char *hash = strchr(spec, '#');
    size_t n_url = hash ? (size_t)(hash - spec) : strlen(spec);
    if (memchr(spec, '?', n_url))
        return dk_fail(err, DK_ERR_ARG, "endpoint URL '%s': a query string cannot be the base URL", spec);
    while (spec[n_url - 1] == '/') n_url--; /* the host is not empty: this stops before it */
    ep->base = dk_strndup(spec, n_url);
    ep->host = dk_strndup(host, n_host);
    if (hash && hash[1]) ep->model = dk_strdup(hash + 1);
    if (!ep->base || !ep->host || (hash && hash[1] && !ep->model)) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

/* api_key, else $DUCKLING_API_KEY, else $OPENAI_API_KEY, else none. */
static int key_set(openai_endpoint *ep, const char *api_key, char *err)
{
    const char *key = api_key && *api_key ? api_key : dk_getenv_or("DUCKLING_API_KEY", NULL);
    if (!key) key = dk_getenv_or("OPENAI_API_KEY", NULL);
    if (!key) return DK_OK;
    for (const char *p = key; *p; p++) /* a header line: CR or LF would start another one */
        if ((unsigned char)*p < ' ' || *p == 0x7f) return dk_fail(err, DK_ERR_ARG, "the API key has a control character");
    dk_buf b = {0};
    dk_buf_printf(&b, "Authorization: Bearer %s", key);
    if (b.failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    ep->auth = dk_buf_detach(&b);
    return DK_OK;
}

static int timeout_from_env(long *out_ms, char *err)
{
    *out_ms = (long)(OPENAI_TOTAL_TIMEOUT_S * 1000);
    const char *v = dk_getenv_or("DUCKLING_REMOTE_TIMEOUT", NULL);
    if (!v) return DK_OK;
    char *end;
    errno = 0;
    double secs = strtod(v, &end);
    if (end == v || *end || errno || !(secs > 0) || secs > OPENAI_MAX_TIMEOUT_S)
        return dk_fail(err, DK_ERR_ARG, "DUCKLING_REMOTE_TIMEOUT=%s: expected a number of seconds", v);
    *out_ms = (long)(secs * 1000);
    if (*out_ms < 1) *out_ms = 1;
    return DK_OK;
}

/* ---- one HTTP exchange ---- */

typedef struct exchange {
    dk_buf body;            /* the reply's body */
    bool too_big;           /* it passed OPENAI_MAX_REPLY_BYTES */
    long status;            /* HTTP status, 0 before one came */
    char status_line[128];  /* "HTTP/1.1 500 Internal Server Error", for error messages */
} exchange;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    exchange *x = user;
    size_t n = size * nmemb;
    if (n > OPENAI_MAX_REPLY_BYTES - x->body.len) {
        x->too_big = true;
        return 0;
    }
    return dk_buf_append(&x->body, data, n) == 0 ? n : 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user)
{
    exchange *x = user;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) { /* the last one wins (after a 100 Continue) */
        size_t k = n;
        while (k && (data[k - 1] == '\r' || data[k - 1] == '\n')) k--;
        if (k >= sizeof x->status_line) k = sizeof x->status_line - 1;
        memcpy(x->status_line, data, k);
        x->status_line[k] = 0;
    }
    return n;
}

static int header_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *grown = curl_slist_append(*list, line);
    if (!grown) return -1;
    *list = grown;
    return 0;
}

/* GET (post == NULL) or POST of the JSON text post to base + path. who names the endpoint in
 * messages ("MODEL at HOST"). DK_OK once a complete reply came, whatever its status. */
static int exchange_run(const openai_endpoint *ep, const char *path, const char *post, const char *who,
                        exchange *x, char *err)
{
    pthread_once(&curl_once, curl_init_once);
    dk_buf url = {0};
    dk_buf_puts(&url, ep->base);
    dk_buf_puts(&url, path);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    int rc = DK_OK;
    /* "Expect:" stops libcurl waiting for a 100 Continue before sending a large body. */
    if (url.failed || !curl || header_add(&headers, "Accept: application/json") || header_add(&headers, "Expect:") ||
        (post && header_add(&headers, "Content-Type: application/json")) || (ep->auth && header_add(&headers, ep->auth))) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url.data);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*"); /* as the CLI: the user's endpoint, directly */
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, OPENAI_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, ep->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "duckling");
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, ""); /* whatever libcurl can decode */
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (post) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post));
    }
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->body.failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory reading the reply of %s", who);
    else if (x->too_big)
        rc = dk_fail(err, DK_ERR_FORMAT, "%s: the reply is larger than %zu MiB", who, OPENAI_MAX_REPLY_BYTES >> 20);
    else if (cc != CURLE_OK)
        rc = dk_fail(err, DK_ERR_IO, "could not reach %s: %s", url.data, curl_err[0] ? curl_err : curl_easy_strerror(cc));
done:
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    dk_buf_free(&url);
    return rc;
}

/* The message of {"error": {"message": M}}, {"error": M} or {"message": M}, or NULL. */
static const char *error_message(const json_t *root)
{
    const json_t *e = json_object_get(root, "error");
    if (json_is_string(e)) return json_string_value(e);
    const json_t *m = json_object_get(e, "message");
    if (json_is_string(m)) return json_string_value(m);
    m = json_object_get(root, "message");
    return json_is_string(m) ? json_string_value(m) : NULL;
}

/* Copies text into out (n_out bytes) as one line: control characters become spaces. */
static void one_line(char *out, size_t n_out, const char *text)
{
    size_t i = 0;
    for (; text[i] && i + 1 < n_out; i++) out[i] = (unsigned char)text[i] < ' ' ? ' ' : text[i];
    out[i] = 0;
}

/* A reply with a status other than 2xx: the endpoint's message, else its status line. */
static int status_error(const exchange *x, const char *who, char *err)
{
    json_t *root = x->body.len ? json_loadb(x->body.data, x->body.len, 0, NULL) : NULL;
    const char *msg = error_message(root);
    char line[DK_ERRLEN];
    if (msg && *msg) one_line(line, sizeof line, msg);
    else if (x->status_line[0]) one_line(line, sizeof line, x->status_line);
    else snprintf(line, sizeof line, "HTTP %ld", x->status);
    int rc = dk_fail(err, DK_ERR_IO, "%s: %s", who, line);
    json_decref(root);
    return rc;
}

static bool status_ok(long status) { return status >= 200 && status < 300; }

/* ---- the request: the agent's messages in OpenAI's wire form ---- */

/* A tool call of the agent ({id, type, function: {name, arguments: object}}) as OpenAI takes
 * it: arguments a JSON string. id_fallback names a call without an id. */
static int wire_tool_call(const json_t *call, const char *id_fallback, json_t **out, char *err)
{
    *out = NULL;
    const json_t *fn = json_object_get(call, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    if (!name) return dk_fail(err, DK_ERR_ARG, "agent: a tool call has no function name");
    const json_t *args = json_object_get(fn, "arguments");
    const char *args_text = "{}";
    char *dumped = NULL; /* jansson's allocation */
    if (json_is_string(args)) {
        args_text = json_string_value(args);
    } else if (args && !json_is_null(args)) {
        if (!(dumped = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        args_text = dumped;
    }
    const char *id = json_string_value(json_object_get(call, "id"));
    *out = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id ? id : id_fallback, "type", "function", "function", "name",
                     name, "arguments", args_text);
    free(dumped);
    return *out ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

/* content as OpenAI takes it: a string (an array of parts passes as it is), null for an
 * assistant turn that only calls tools. */
static json_t *wire_content(const json_t *m, bool calls_tools)
{
    const json_t *content = json_object_get(m, "content");
    if (json_is_string(content) && (json_string_length(content) > 0 || !calls_tools)) return json_deep_copy(content);
    if (calls_tools) return json_null();
    if (!content || json_is_null(content)) return json_string("");
    if (json_is_array(content)) return json_deep_copy(content);
    char *text = json_dumps(content, JSON_COMPACT | JSON_ENCODE_ANY); /* e.g. a result object */
    json_t *s = text ? json_string(text) : NULL;
    free(text);
    return s;
}

/* The tool calls of assistant message i_msg in wire form (*out, also on error: the caller
 * frees it). */
static int wire_tool_calls(const json_t *calls, size_t i_msg, json_t **out, char *err)
{
    *out = json_array();
    if (!*out) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        char id[48];
        snprintf(id, sizeof id, "call_%zu_%zu", i_msg, i);
        json_t *wire;
        int rc = wire_tool_call(call, id, &wire, err);
        if (rc != DK_OK) return rc;
        if (json_array_append_new(*out, wire) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return DK_OK;
}

/* One message (*out, NULL on error). last_calls: the wire tool calls of the latest assistant
 * message, whose ids a tool message without tool_call_id takes in order (*i_pending counts). */
static int wire_message(const json_t *m, size_t i_msg, const json_t **last_calls, size_t *i_pending, json_t **out,
                        char *err)
{
    *out = NULL;
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!role) return dk_fail(err, DK_ERR_ARG, "agent: message %zu has no role", i_msg);
    json_t *w = json_pack("{s:s}", "role", role);
    if (!w) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const json_t *calls = json_object_get(m, "tool_calls");
    bool calls_tools = strcmp(role, "assistant") == 0 && json_array_size(calls) > 0;
    int rc = DK_OK;
    if (json_object_set_new(w, "content", wire_content(m, calls_tools)) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK && calls_tools) {
        json_t *wire_calls = NULL;
        rc = wire_tool_calls(calls, i_msg, &wire_calls, err);
        if (json_object_set_new(w, "tool_calls", wire_calls) != 0 && rc == DK_OK)
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        *last_calls = wire_calls; /* owned by w */
        *i_pending = 0;
    }
    if (rc == DK_OK && strcmp(role, "tool") == 0) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        if (!id) id = json_string_value(json_object_get(json_array_get(*last_calls, (*i_pending)++), "id"));
        if (json_object_set_new(w, "tool_call_id", json_string(id ? id : "call_unknown")) != 0)
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    } else if (rc == DK_OK && json_is_string(json_object_get(m, "name"))) {
        if (json_object_set_new(w, "name", json_deep_copy(json_object_get(m, "name"))) != 0)
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (rc != DK_OK) {
        json_decref(w);
        return rc;
    }
    *out = w;
    return DK_OK;
}

/* *out: the wire messages, also on error (the caller frees it). */
static int wire_messages(const json_t *messages, json_t **out, char *err)
{
    if (!json_is_array(messages)) return dk_fail(err, DK_ERR_ARG, "agent: the messages are not an array");
    if (!(*out = json_array())) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const json_t *last_calls = NULL; /* owned by *out */
    size_t i_pending = 0, i;
    const json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *w;
        int rc = wire_message(m, i, &last_calls, &i_pending, &w, err);
        if (rc != DK_OK) return rc;
        if (json_array_append_new(*out, w) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return DK_OK;
}

static int wire_tool_choice(const agent_llm_request *req, json_t **out, char *err)
{
    switch (req->tool_choice) {
    case ENGINE_TOOL_AUTO: *out = json_string("auto"); break;
    case ENGINE_TOOL_NONE: *out = json_string("none"); break;
    case ENGINE_TOOL_REQUIRED: *out = json_string("required"); break;
    case ENGINE_TOOL_NAMED:
        if (!req->tool_name || !*req->tool_name) return dk_fail(err, DK_ERR_ARG, "agent: a named tool choice without a name");
        *out = json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", req->tool_name);
        break;
    default: return dk_fail(err, DK_ERR_ARG, "agent: unknown tool choice %d", (int)req->tool_choice);
    }
    return *out ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

/* The JSON text of the request (*out freed with free(): jansson's allocation). tools and
 * tool_choice are sent only with a non-empty tools array (OpenAI refuses a choice without
 * tools). */
static int request_text(const openai_endpoint *ep, const agent_llm_request *req, char **out, char *err)
{
    *out = NULL;
    bool has_tools = json_array_size(req->tools) > 0;
    if (!has_tools && (req->tool_choice == ENGINE_TOOL_REQUIRED || req->tool_choice == ENGINE_TOOL_NAMED))
        return dk_fail(err, DK_ERR_ARG, "agent: a tool call was required but no tools were given");
    /* A float's value as written (0.7, not 0.699999988...), so that the endpoint reads it so. */
    char temp_text[32];
    snprintf(temp_text, sizeof temp_text, "%.6g", (double)req->temperature);
    double temperature = strtod(temp_text, NULL);
    json_t *body = json_pack("{s:s, s:I, s:f, s:I, s:b, s:b}", "model", ep->model, "max_tokens",
                             (json_int_t)(req->max_tokens > 0 ? req->max_tokens : OPENAI_DEFAULT_MAX_TOKENS),
                             "temperature", temperature, "seed", (json_int_t)(req->seed & INT64_MAX), "logprobs", 1,
                             "stream", 0);
    if (!body) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    json_t *messages = NULL, *choice = NULL;
    int rc = wire_messages(req->messages, &messages, err);
    if (rc == DK_OK && json_object_set_new(body, "messages", messages) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else if (rc != DK_OK) json_decref(messages);
    if (rc == DK_OK && has_tools) {
        rc = wire_tool_choice(req, &choice, err);
        if (rc == DK_OK && (json_object_set_new(body, "tools", json_deep_copy(req->tools)) != 0 ||
                            json_object_set_new(body, "tool_choice", choice) != 0))
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (rc == DK_OK && !(*out = json_dumps(body, JSON_COMPACT))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    json_decref(body);
    return rc;
}

/* ---- the reply ---- */

/* message.content: a string, null or absent (empty), or an array of {"type":"text","text"} parts. */
static int content_read(const json_t *content, dk_buf *out, const char *who, char *err)
{
    dk_buf_append(out, "", 0); /* content.data is a string also when empty */
    if (json_is_string(content)) dk_buf_append(out, json_string_value(content), json_string_length(content));
    else if (json_is_array(content)) {
        size_t i;
        const json_t *part;
        json_array_foreach(content, i, part) {
            const json_t *text = json_is_string(part) ? part : json_object_get(part, "text");
            if (!json_is_string(text)) return dk_fail(err, DK_ERR_FORMAT, "%s: a part of the content has no text", who);
            dk_buf_append(out, json_string_value(text), json_string_length(text));
        }
    } else if (content && !json_is_null(content)) {
        return dk_fail(err, DK_ERR_FORMAT, "%s: the reply's content is not a string", who);
    }
    return out->failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}

/* A call's arguments as the agent takes them: the object the JSON string spells, else that
 * string itself (so the agent can tell the model what it wrote); an empty string is {}. */
static json_t *arguments_read(const json_t *args)
{
    if (!args || json_is_null(args)) return json_object();
    if (json_is_object(args)) return json_deep_copy(args);
    if (!json_is_string(args)) {
        char *text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
        json_t *s = text ? json_string(text) : NULL;
        free(text);
        return s;
    }
    const char *text = json_string_value(args);
    if (text[strspn(text, " \t\r\n")] == 0) return json_object();
    json_t *parsed = json_loadb(text, json_string_length(args), 0, NULL);
    if (json_is_object(parsed)) return parsed;
    json_decref(parsed);
    return json_deep_copy(args);
}

static int tool_calls_read(const json_t *calls, json_t *out, const char *who, char *err)
{
    if (!calls || json_is_null(calls)) return DK_OK;
    if (!json_is_array(calls)) return dk_fail(err, DK_ERR_FORMAT, "%s: the reply's tool_calls is not an array", who);
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        const json_t *fn = json_object_get(call, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || !*name) return dk_fail(err, DK_ERR_FORMAT, "%s: tool call %zu has no function name", who, i);
        const char *id = json_string_value(json_object_get(call, "id"));
        char fallback[32];
        snprintf(fallback, sizeof fallback, "call_%zu", i);
        json_t *args = arguments_read(json_object_get(fn, "arguments"));
        json_t *agent_call = args ? json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", id && *id ? id : fallback, "type",
                                              "function", "function", "name", name, "arguments", args)
                                  : NULL;
        if (!agent_call || json_array_append_new(out, agent_call) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return DK_OK;
}

static size_t count_read(const json_t *usage, const char *key)
{
    json_int_t n = json_integer_value(json_object_get(usage, key)); /* 0 when absent or not an integer */
    return n > 0 ? (size_t)n : 0;
}

/* choices[0].logprobs.content[*].logprob; entries that are not finite numbers are skipped. */
static void logprobs_read(const json_t *choice, agent_llm_reply *reply)
{
    const json_t *entries = json_object_get(json_object_get(choice, "logprobs"), "content");
    size_t i;
    const json_t *entry;
    json_array_foreach(entries, i, entry) {
        const json_t *lp = json_object_get(entry, "logprob");
        double v = json_number_value(lp);
        /* a log probability is <= 0; a hostile endpoint's others are skipped, and very
         * negative ones are capped so that the sum stays finite */
        if (!json_is_number(lp) || !isfinite(v) || v > 0) continue;
        reply->logprob_sum += v < -1e4 ? -1e4 : v;
        reply->n_logprobs++;
    }
}

/* The body (n bytes) of a 2xx reply to POST /chat/completions into reply. */
static int reply_read(const char *body, size_t n, const char *who, agent_llm_reply *reply, char *err)
{
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", n, 0, &je);
    if (!root) return dk_fail(err, DK_ERR_FORMAT, "%s: the reply is not JSON (%s)", who, je.text);
    const json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    const json_t *message = json_object_get(choice, "message");
    int rc = DK_OK;
    if (!json_is_object(message)) {
        const char *msg = error_message(root); /* some endpoints answer 200 with an error object */
        char line[DK_ERRLEN];
        if (msg) one_line(line, sizeof line, msg);
        rc = msg ? dk_fail(err, DK_ERR_IO, "%s: %s", who, line)
                 : dk_fail(err, DK_ERR_FORMAT, "%s: the reply has no choices[0].message", who);
        goto done;
    }
    if ((rc = content_read(json_object_get(message, "content"), &reply->content, who, err)) != DK_OK) goto done;
    if (!(reply->tool_calls = json_array())) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = tool_calls_read(json_object_get(message, "tool_calls"), reply->tool_calls, who, err)) != DK_OK) goto done;
    const json_t *usage = json_object_get(root, "usage");
    reply->prompt_tokens = count_read(usage, "prompt_tokens");
    reply->completion_tokens = count_read(usage, "completion_tokens");
    logprobs_read(choice, reply);
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    reply->cut = finish && strcmp(finish, "length") == 0;
done:
    json_decref(root);
    return rc;
}

/* ---- the turn ---- */

/* GET /models, once: the first model listed becomes this endpoint's model and name. */
static int model_discover(agent_llm *llm, openai_endpoint *ep, char *err)
{
    exchange x = {0};
    int rc = exchange_run(ep, "/models", NULL, ep->host, &x, err);
    if (rc == DK_OK && !status_ok(x.status)) rc = status_error(&x, ep->host, err);
    json_t *root = NULL;
    if (rc == DK_OK) {
        root = json_loadb(x.body.data ? x.body.data : "", x.body.len, 0, NULL);
        const char *id = json_string_value(json_object_get(json_array_get(json_object_get(root, "data"), 0), "id"));
        if (!id || !*id)
            rc = dk_fail(err, DK_ERR_FORMAT, "%s: GET %s/models lists no model (name one: URL#MODEL)", ep->host, ep->base);
        else if (!(ep->model = dk_strdup(id)))
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        else
            rc = agent_llm_set_name(llm, id, err);
    }
    json_decref(root);
    dk_buf_free(&x.body);
    return rc;
}

static void reply_clear(agent_llm_reply *reply)
{
    agent_llm_reply_free(reply);
    reply->prompt_tokens = reply->completion_tokens = reply->n_logprobs = 0;
    reply->logprob_sum = 0;
}

static int openai_chat(agent_llm *llm, const agent_llm_request *req, agent_llm_reply *reply, char *err)
{
    uint64_t start_ns = dk_now_ns();
    openai_endpoint *ep = llm->impl;
    int rc = ep->model ? DK_OK : model_discover(llm, ep, err);
    char *text = NULL;
    if (rc == DK_OK) rc = request_text(ep, req, &text, err);
    char who[DK_ERRLEN];
    snprintf(who, sizeof who, "%s at %s", ep->model ? ep->model : "?", ep->host);
    exchange x = {0};
    if (rc == DK_OK) rc = exchange_run(ep, "/chat/completions", text, who, &x, err);
    if (rc == DK_OK)
        rc = status_ok(x.status) ? reply_read(x.body.data, x.body.len, who, reply, err) : status_error(&x, who, err);
    if (rc != DK_OK) reply_clear(reply);
    reply->ms = (double)(dk_now_ns() - start_ns) / 1e6;
    free(text); /* jansson's allocation */
    dk_buf_free(&x.body);
    return rc;
}

/* For tests and fuzzing (agent_internal.h): reply_read as a turn runs it, without the exchange. */
int agent_openai_reply_parse(const char *body, size_t n, agent_llm_reply *reply, char *err)
{
    memset(reply, 0, sizeof *reply);
    int rc = reply_read(body, n, "endpoint", reply, err);
    if (rc != DK_OK) reply_clear(reply);
    return rc;
}

static void endpoint_free(openai_endpoint *ep)
{
    if (!ep) return;
    dk_free(ep->base);
    dk_free(ep->host);
    dk_free(ep->model);
    dk_free(ep->auth);
    dk_free(ep);
}

static void openai_free(agent_llm *llm) { endpoint_free(llm->impl); }

static const agent_llm_ops openai_ops = {
    .chat = openai_chat,
    .free = openai_free,
    .is_local = false,
};

int agent_llm_openai(agent_llm **out, const char *spec, const char *api_key, char *err)
{
    *out = NULL;
    openai_endpoint *ep = dk_calloc(1, sizeof *ep);
    if (!ep) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = spec_parse(ep, spec, err);
    if (rc == DK_OK) rc = key_set(ep, api_key, err);
    if (rc == DK_OK) rc = timeout_from_env(&ep->timeout_ms, err);
    if (rc != DK_OK) {
        endpoint_free(ep);
        return rc;
    }
    /* Until GET /models names it, the endpoint's model is known by its URL. */
    return agent_llm_wrap(out, &openai_ops, ep->model ? ep->model : ep->base, ep, err);
}
