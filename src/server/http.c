/*
 * http.c: the server's HTTP layer over libmicrohttpd. One thread per connection; a request's
 * body is read whole into memory (at most config.max_body bytes: beyond that 413, without
 * reading the rest) before its handler runs; routing by method and path to the handlers of
 * srv_internal.h; JSON and error replies; CORS and the Host check that keeps web pages of other
 * sites away from a server bound to loopback; streamed replies (chunked transfer encoding) fed
 * by a worker thread per stream; the request log; srv_start / srv_free and the configuration
 * from the environment.
 *
 * Not for: what the endpoints do (api_*.c), which model serves a request (sched.c).
 */
#include "server/srv_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#define STREAM_MAX_QUEUED (64u << 20) /* bytes a stream may queue for a client that is not reading */
#define STREAM_POLL_MS 100            /* how often a waiting stream looks at its client and the server */
#define STREAM_BLOCK_BYTES (16u << 10)
#define DISCARD_MAX_BYTES (64u << 20) /* of a chunked body over the limit, read before giving up */

/* ---- the server's own state ---- */

struct srv_http {
    pthread_mutex_t lock;
    srv_stream *streams;   /* running streams (linked by next), for srv_free to cancel */
    char **origins;        /* OLLAMA_ORIGINS / DUCKLING_ORIGINS patterns (fnmatch) */
    size_t n_origins;
    bool loopback;         /* bound to a loopback address: the Host header is checked */
    atomic_int running;    /* srv_start is done: libmicrohttpd's messages go to stderr */
    char start_log[256];   /* before that, its last message (for srv_start's error) */
};

struct srv_reply {
    unsigned status;
    struct MHD_Response *response;
};

struct srv_stream {
    srv *server;
    struct MHD_Connection *conn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    dk_buf queue;          /* bytes not yet sent; queue.data[sent..len) are pending */
    size_t sent;
    bool done;             /* the worker has returned */
    atomic_int cancel;
    pthread_t thread;
    bool started;
    bool timeout_off;      /* the connection's idle timeout is suspended (stream_read) */
    srv_stream_fn fn;
    void *ctx;
    srv_stream *next;      /* in srv_http.streams */
};

/* Everything one request needs from its first callback to its completion. */
typedef struct http_call {
    srv_request rq;
    struct srv_reply reply;
    dk_buf body;
    bool too_large;
    size_t discarded;      /* bytes of a too large chunked body read and dropped */
    bool queued;           /* a response has been queued */
    bool counted_active;
    uint64_t start_ns;
    const char *endpoint;  /* route pattern for /metrics, or "other" */
    char method[16];
    char *path;
    srv_stream *stream;    /* owned: joined and freed at completion */
    /* a blob upload, streamed to a temporary file while its sha256 is computed */
    int upload_fd;         /* -1 when none */
    char *upload_path;     /* removed at completion */
    EVP_MD_CTX *upload_sha;
    bool upload_failed;
    char upload_digest[72];
} http_call;

/* ---- time ---- */

uint64_t srv_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void srv_time_rfc3339(char buf[40], uint64_t unix_ns)
{
    time_t secs = (time_t)(unix_ns / 1000000000ull);
    unsigned long nanos = (unsigned long)(unix_ns % 1000000000ull);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, 40, "%s.%09luZ", date, nanos);
}

/* ---- configuration ---- */

/* "HOST", "HOST:PORT", ":PORT", "[V6]:PORT", with an optional "http://" or "https://". */
static int parse_host(srv_config *c, const char *text, char *err)
{
    const char *s = text;
    const char *scheme = strstr(s, "://");
    if (scheme) s = scheme + 3;
    size_t n = strcspn(s, "/");
    char hostport[300];
    if (n >= sizeof hostport) return dk_fail(err, DK_ERR_ARG, "host '%s' is too long", text);
    memcpy(hostport, s, n);
    hostport[n] = 0;
    char *host = hostport, *port = NULL;
    if (host[0] == '[') {
        char *close = strchr(host, ']');
        if (!close) return dk_fail(err, DK_ERR_ARG, "host '%s': missing ']'", text);
        *close = 0;
        host++;
        if (close[1] == ':') port = close + 2;
        else if (close[1]) return dk_fail(err, DK_ERR_ARG, "host '%s' is malformed", text);
    } else {
        char *colon = strrchr(host, ':');
        if (colon && strchr(host, ':') == colon) {
            *colon = 0;
            port = colon + 1;
        }
    }
    if (host[0]) dk_strlcpy(c->host, host, sizeof c->host);
    if (port) {
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (!port[0] || *end || errno || p < 0 || p > 65535)
            return dk_fail(err, DK_ERR_ARG, "host '%s': bad port", text);
        c->port = (int)p;
    }
    return DK_OK;
}

/* The value of DUCKLING_<name>, else OLLAMA_<name>, else NULL. */
static const char *env_pair(const char *name, char *var, size_t n_var)
{
    snprintf(var, n_var, "DUCKLING_%s", name);
    const char *v = getenv(var);
    if (v && v[0]) return v;
    snprintf(var, n_var, "OLLAMA_%s", name);
    v = getenv(var);
    return v && v[0] ? v : NULL;
}

static int env_long(const char *name, long min, long max, long *out, char *err)
{
    char var[64];
    const char *v = env_pair(name, var, sizeof var);
    if (!v) return DK_OK;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*end || errno || x < min || x > max)
        return dk_fail(err, DK_ERR_ARG, "%s=%s: expected an integer in [%ld, %ld]", var, v, min, max);
    *out = x;
    return DK_OK;
}

/* Bytes with an optional K/M/G/T suffix (powers of 1024; "GB", "GiB" also accepted). */
static int parse_bytes(const char *var, const char *v, uint64_t *out, char *err)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || x < 0) return dk_fail(err, DK_ERR_ARG, "%s=%s: expected a size", var, v);
    double mult = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mult = 1024.0; end++; break;
    case 'M': mult = 1024.0 * 1024; end++; break;
    case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: return dk_fail(err, DK_ERR_ARG, "%s=%s: expected a size such as 8G", var, v);
    }
    if (*end == 'i') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end || x * mult > 1.8e19) return dk_fail(err, DK_ERR_ARG, "%s=%s: expected a size such as 8G", var, v);
    *out = (uint64_t)(x * mult);
    return DK_OK;
}

int srv_config_default(srv_config *c, char *err)
{
    memset(c, 0, sizeof *c);
    dk_strlcpy(c->host, "127.0.0.1", sizeof c->host);
    c->port = 11434;
    c->max_body = 32u << 20;
    c->max_connections = 256;
    c->connection_timeout_s = 60;
    c->num_parallel = 4;
    c->max_queue = 512;
    c->max_loaded_models = 3;
    c->max_memory = 0;
    c->keep_alive_ns = 5ll * 60 * 1000000000ll;
    c->num_ctx = 4096;
    c->n_threads = 0;

    const char *host = getenv("DUCKLING_HOST");
    if (!host || !host[0]) host = getenv("OLLAMA_HOST");
    if (host && host[0] && parse_host(c, host, err) != DK_OK) return DK_ERR_ARG;

    long v = c->num_parallel;
    if (env_long("NUM_PARALLEL", 1, 256, &v, err) != DK_OK) return DK_ERR_ARG;
    c->num_parallel = (int)v;
    v = c->max_queue;
    if (env_long("MAX_QUEUE", 0, 1000000, &v, err) != DK_OK) return DK_ERR_ARG;
    c->max_queue = (int)v;
    v = c->max_loaded_models;
    if (env_long("MAX_LOADED_MODELS", 1, 1024, &v, err) != DK_OK) return DK_ERR_ARG;
    c->max_loaded_models = (int)v;
    v = (long)c->num_ctx;
    if (env_long("CONTEXT_LENGTH", 16, 1 << 24, &v, err) != DK_OK) return DK_ERR_ARG;
    c->num_ctx = (size_t)v;

    char var[64];
    const char *ka = env_pair("KEEP_ALIVE", var, sizeof var);
    if (ka) {
        /* A bare number is seconds, as in a request; otherwise a duration ("5m", "1h30m"). */
        char *end;
        double secs = strtod(ka, &end);
        json_t *j = (*end == 0 && end != ka) ? json_real(secs) : json_string(ka);
        if (!j) return dk_fail(err, DK_ERR_ARG, "%s=%s: not a duration", var, ka);
        char e[DK_ERRLEN];
        int rc = srv_parse_keep_alive(j, &c->keep_alive_ns, e);
        json_decref(j);
        if (rc != DK_OK) return dk_fail(err, DK_ERR_ARG, "%s=%s: %s", var, ka, e);
    }
    const char *mem = getenv("DUCKLING_MAX_MEMORY");
    if (mem && mem[0] && parse_bytes("DUCKLING_MAX_MEMORY", mem, &c->max_memory, err) != DK_OK) return DK_ERR_ARG;
    return DK_OK;
}

/* ---- replies ---- */

static void add_common_headers(srv_request *rq, struct MHD_Response *resp);

static void set_reply(srv_request *rq, unsigned status, struct MHD_Response *resp)
{
    if (!resp) {
        /* Out of memory building a reply: an empty 500 is all that is left. */
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        status = 500;
        if (!resp) return;
    }
    if (rq->reply->response) {
        /* A handler replied twice: a bug; the first reply stands. */
        fprintf(stderr, "duckling: server: %s %s replied twice\n", rq->method, rq->path);
        MHD_destroy_response(resp);
        return;
    }
    add_common_headers(rq, resp);
    rq->reply->status = status;
    rq->reply->response = resp;
}

void srv_reply_text(srv_request *rq, unsigned status, const char *content_type, const char *text, size_t n)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (resp && content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    set_reply(rq, status, resp);
}

void srv_reply_json(srv_request *rq, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        srv_reply_text(rq, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
        return;
    }
    srv_reply_text(rq, status, "application/json; charset=utf-8", text, strlen(text));
    free(text); /* jansson's allocation */
}

static const char *openai_error_type(unsigned status)
{
    if (status == 404) return "not_found_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

void srv_reply_error(srv_request *rq, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *body;
    if (rq->openai)
        body = json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", msg, "type", openai_error_type(status),
                         "param", "code");
    else
        body = json_pack("{s:s}", "error", msg);
    srv_reply_json(rq, status, body);
}

unsigned srv_status_of(int dk_code)
{
    switch (dk_code) {
    case DK_OK: return 200;
    case DK_ERR_NOTFOUND: return 404;
    case DK_ERR_ARG:
    case DK_ERR_FORMAT:
    case DK_ERR_UNSUPPORTED:
    case DK_ERR_LIMIT: return 400;
    default: return 500;
    }
}

unsigned srv_status_of_error(int dk_code, const char *err)
{
    if (dk_code == DK_ERR_LIMIT && err && strncmp(err, "server busy", 11) == 0) return 503;
    return srv_status_of(dk_code);
}

const char *srv_request_header(srv_request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

/* ---- CORS and the Host check ---- */

static bool origin_is_default_allowed(const char *origin)
{
    static const char *const schemes[] = {"app://", "file://", "tauri://", "vscode-webview://", "vscode-file://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(origin, schemes[i], strlen(schemes[i])) == 0) return true;
    const char *host;
    if (strncmp(origin, "http://", 7) == 0) host = origin + 7;
    else if (strncmp(origin, "https://", 8) == 0) host = origin + 8;
    else return false;
    static const char *const hosts[] = {"localhost", "127.0.0.1", "[::1]", "0.0.0.0"};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        size_t n = strlen(hosts[i]);
        if (strncmp(host, hosts[i], n) == 0 && (host[n] == 0 || host[n] == ':')) return true;
    }
    return false;
}

static bool origin_allowed(const srv *server, const char *origin)
{
    if (origin_is_default_allowed(origin)) return true;
    for (size_t i = 0; i < server->http->n_origins; i++)
        if (fnmatch(server->http->origins[i], origin, 0) == 0) return true;
    return false;
}

/* A page of another site that reaches a loopback server through DNS rebinding sends its own
 * host name; only loopback names, IP literals and this machine's name are accepted. */
static bool host_allowed(const char *host_header)
{
    if (!host_header || !host_header[0]) return true;
    char host[256];
    if (host_header[0] == '[') {
        const char *close = strchr(host_header, ']');
        size_t n = close ? (size_t)(close - host_header - 1) : 0;
        if (!close || n >= sizeof host) return false;
        memcpy(host, host_header + 1, n);
        host[n] = 0;
    } else {
        size_t n = strcspn(host_header, ":");
        if (n >= sizeof host) return false;
        memcpy(host, host_header, n);
        host[n] = 0;
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) return true;
    if (strcasecmp(host, "localhost") == 0) return true;
    static const char *const suffixes[] = {".localhost", ".local", ".internal"};
    size_t len = strlen(host);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t n = strlen(suffixes[i]);
        if (len > n && strcasecmp(host + len - n, suffixes[i]) == 0) return true;
    }
    char self[256];
    if (gethostname(self, sizeof self) == 0) {
        self[sizeof self - 1] = 0;
        if (strcasecmp(host, self) == 0) return true;
    }
    return false;
}

static void add_common_headers(srv_request *rq, struct MHD_Response *resp)
{
    const char *origin = srv_request_header(rq, "Origin");
    if (origin && origin_allowed(rq->server, origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

static void reply_preflight(srv_request *rq)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
    const char *asked = srv_request_header(rq, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            asked ? asked : "Authorization, Content-Type, User-Agent, Accept, X-Requested-With");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "43200");
    set_reply(rq, 204, resp);
}

/* ---- routes ---- */

enum { M_GET = 1, M_HEAD = 2, M_POST = 4, M_DELETE = 8 };

static void api_health(srv_request *rq)
{
    srv_reply_text(rq, 200, "text/plain; charset=utf-8", "Ollama is running", 17);
}

typedef struct route {
    const char *path;       /* exact path, or a prefix when with_arg */
    unsigned methods;
    void (*fn)(srv_request *rq);
    void (*fn_arg)(srv_request *rq, const char *rest); /* prefix routes: the rest of the path */
} route;

static void api_blob_route(srv_request *rq, const char *digest) { srv_api_blob(rq, digest); }
static void openai_model_route(srv_request *rq, const char *id) { srv_openai_models(rq, id); }

static const route routes[] = {
    {"/", M_GET | M_HEAD, api_health, NULL},
    {"/api/version", M_GET | M_HEAD, srv_api_version, NULL},
    {"/api/tags", M_GET | M_HEAD, srv_api_tags, NULL},
    {"/api/ps", M_GET | M_HEAD, srv_api_ps, NULL},
    {"/api/show", M_POST, srv_api_show, NULL},
    {"/api/delete", M_DELETE, srv_api_delete, NULL},
    {"/api/copy", M_POST, srv_api_copy, NULL},
    {"/api/create", M_POST, srv_api_create, NULL},
    {"/api/pull", M_POST, srv_api_pull, NULL},
    {"/api/generate", M_POST, srv_api_generate, NULL},
    {"/api/chat", M_POST, srv_api_chat, NULL},
    {"/api/embed", M_POST, srv_api_embed, NULL},
    {"/api/embeddings", M_POST, srv_api_embeddings, NULL},
    {"/api/ask", M_POST, srv_api_ask, NULL},
    {"/api/rerank", M_POST, srv_api_rerank, NULL},
    {"/v1/chat/completions", M_POST, srv_openai_chat, NULL},
    {"/v1/completions", M_POST, srv_openai_completions, NULL},
    {"/v1/embeddings", M_POST, srv_openai_embeddings, NULL},
    {"/v1/rerank", M_POST, srv_openai_rerank, NULL},
    {"/v1/models", M_GET | M_HEAD, NULL, NULL},
    {"/metrics", M_GET | M_HEAD, srv_api_metrics, NULL},
    {"/api/blobs/", M_HEAD | M_POST, NULL, api_blob_route},
    {"/v1/models/", M_GET | M_HEAD, NULL, openai_model_route},
};

static unsigned method_bit(const char *method)
{
    if (strcmp(method, "GET") == 0) return M_GET;
    if (strcmp(method, "HEAD") == 0) return M_HEAD;
    if (strcmp(method, "POST") == 0) return M_POST;
    if (strcmp(method, "DELETE") == 0) return M_DELETE;
    return 0;
}

static void allow_header(char *buf, size_t n, unsigned methods)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "DELETE"};
    buf[0] = 0;
    size_t len = 0;
    for (unsigned i = 0; i < 4; i++) {
        if (!(methods & (1u << i))) continue;
        int k = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", names[i]);
        if (k < 0 || (size_t)k >= n - len) break;
        len += (size_t)k;
    }
}

static const route *route_find(const char *path, const char **rest)
{
    *rest = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const route *r = &routes[i];
        if (r->fn_arg) {
            size_t n = strlen(r->path);
            if (strncmp(path, r->path, n) == 0 && path[n]) {
                *rest = path + n;
                return r;
            }
        } else if (strcmp(path, r->path) == 0) {
            return r;
        }
    }
    return NULL;
}

static void dispatch(http_call *call)
{
    srv_request *rq = &call->rq;
    srv *server = rq->server;
    if (server->http->loopback && !host_allowed(srv_request_header(rq, "Host"))) {
        call->endpoint = "other";
        srv_reply_error(rq, 403, "forbidden host");
        return;
    }
    const char *origin = srv_request_header(rq, "Origin");
    if (origin && !origin_allowed(server, origin)) {
        call->endpoint = "other";
        srv_reply_error(rq, 403, "origin '%s' is not allowed (OLLAMA_ORIGINS)", origin);
        return;
    }
    const char *rest;
    const route *r = route_find(rq->path, &rest);
    call->endpoint = r ? r->path : "other";
    if (strcmp(rq->method, "OPTIONS") == 0) {
        reply_preflight(rq);
        return;
    }
    if (!r) {
        srv_reply_error(rq, 404, "404 page not found: %s", rq->path);
        return;
    }
    if (!(r->methods & method_bit(rq->method))) {
        srv_reply_error(rq, 405, "method %s not allowed on %s", rq->method, rq->path);
        if (rq->reply->response) {
            char allow[64];
            allow_header(allow, sizeof allow, r->methods);
            MHD_add_response_header(rq->reply->response, MHD_HTTP_HEADER_ALLOW, allow);
        }
        return;
    }
    if (r->fn_arg) r->fn_arg(rq, rest);
    else if (r->fn) r->fn(rq);
    else srv_openai_models(rq, NULL);
}

/* ---- streams ---- */

static void stream_list_remove(srv *server, srv_stream *st)
{
    pthread_mutex_lock(&server->http->lock);
    for (srv_stream **p = &server->http->streams; *p; p = &(*p)->next) {
        if (*p == st) {
            *p = st->next;
            break;
        }
    }
    pthread_mutex_unlock(&server->http->lock);
}

static void stream_cancel(srv_stream *st)
{
    atomic_store(&st->cancel, 1);
    pthread_mutex_lock(&st->lock);
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

/* Joins the worker (after cancelling it if the reply did not complete) and frees. */
static void stream_finish(srv_stream *st, bool completed)
{
    if (!completed) stream_cancel(st);
    if (st->started) pthread_join(st->thread, NULL);
    stream_list_remove(st->server, st);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->cond);
    dk_buf_free(&st->queue);
    dk_free(st);
}

static void *stream_main(void *arg)
{
    srv_stream *st = arg;
    st->fn(st, st->ctx);
    pthread_mutex_lock(&st->lock);
    st->done = true;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* True when the client has closed its end (a read would give end of file or an error). */
static bool client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info) return false;
    char c;
    ssize_t n = recv(info->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* The connection's idle timeout is for the client (a request it does not finish, a reply it
 * does not read), not for the time a generation takes to come up with its next token: it is
 * off while the stream waits for its worker, and back on (restarted) once there are bytes to
 * send. */
static void stream_client_timeout(srv_stream *st, bool on)
{
    if (st->timeout_off != on) return;
    st->timeout_off = !on;
    unsigned seconds = on ? st->server->config.connection_timeout_s : 0;
    MHD_set_connection_option(st->conn, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

/* MHD asks for the next bytes of the reply: blocks (in this connection's thread) until the
 * worker has queued some, or it is done, or the client or the server goes away. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    srv_stream *st = cls;
    pthread_mutex_lock(&st->lock);
    if (st->queue.len == st->sent && !st->done) stream_client_timeout(st, false);
    for (;;) {
        if (atomic_load(&st->cancel) || atomic_load(&st->server->stopping)) {
            atomic_store(&st->cancel, 1);
            pthread_mutex_unlock(&st->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        size_t pending = st->queue.len - st->sent;
        if (pending) {
            size_t n = pending < max ? pending : max;
            memcpy(buf, st->queue.data + st->sent, n);
            st->sent += n;
            if (st->sent == st->queue.len) {
                dk_buf_clear(&st->queue);
                st->sent = 0;
            }
            pthread_mutex_unlock(&st->lock);
            stream_client_timeout(st, true);
            return (ssize_t)n;
        }
        if (st->done) {
            pthread_mutex_unlock(&st->lock);
            stream_client_timeout(st, true);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += STREAM_POLL_MS * 1000000l;
        if (until.tv_nsec >= 1000000000l) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000l;
        }
        if (pthread_cond_timedwait(&st->cond, &st->lock, &until) == ETIMEDOUT && client_gone(st->conn))
            atomic_store(&st->cancel, 1);
    }
}

int srv_stream_start(srv_request *rq, const char *content_type, srv_stream_fn fn, void *ctx)
{
    http_call *call = (http_call *)rq; /* rq is the first member of its call */
    srv_stream *st = dk_calloc(1, sizeof *st);
    if (!st) {
        srv_reply_error(rq, 500, "out of memory");
        return -1;
    }
    st->server = rq->server;
    st->conn = rq->conn;
    st->fn = fn;
    st->ctx = ctx;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, NULL);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_BYTES, stream_read,
                                                                  st, NULL);
    if (!resp) {
        stream_finish(st, true);
        srv_reply_error(rq, 500, "out of memory");
        return -1;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    if (pthread_create(&st->thread, NULL, stream_main, st) != 0) {
        MHD_destroy_response(resp);
        stream_finish(st, true);
        srv_reply_error(rq, 500, "cannot start a thread");
        return -1;
    }
    st->started = true;
    pthread_mutex_lock(&rq->server->http->lock);
    st->next = rq->server->http->streams;
    rq->server->http->streams = st;
    pthread_mutex_unlock(&rq->server->http->lock);
    call->stream = st;
    set_reply(rq, 200, resp);
    return 0;
}

int srv_stream_write(srv_stream *st, const char *data, size_t n)
{
    if (atomic_load(&st->cancel)) return -1;
    pthread_mutex_lock(&st->lock);
    int rc = 0;
    if (st->queue.len - st->sent + n > STREAM_MAX_QUEUED || dk_buf_append(&st->queue, data, n) != 0) {
        atomic_store(&st->cancel, 1); /* the client does not read, or no memory: give up */
        rc = -1;
    }
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static int stream_write_json(srv_stream *st, const json_t *obj, const char *before, const char *after)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (!text) return -1;
    dk_buf b = {0};
    dk_buf_puts(&b, before);
    dk_buf_puts(&b, text);
    dk_buf_puts(&b, after);
    free(text);
    int rc = b.failed ? -1 : srv_stream_write(st, b.data, b.len);
    dk_buf_free(&b);
    return rc;
}

int srv_stream_write_json_line(srv_stream *st, const json_t *obj) { return stream_write_json(st, obj, "", "\n"); }
int srv_stream_write_sse(srv_stream *st, const json_t *obj) { return stream_write_json(st, obj, "data: ", "\n\n"); }
int srv_stream_write_sse_done(srv_stream *st) { return srv_stream_write(st, "data: [DONE]\n\n", 14); }
const atomic_int *srv_stream_cancel_flag(srv_stream *st) { return &st->cancel; }
srv *srv_stream_server(srv_stream *st) { return st->server; }

/* ---- the request cycle ---- */

static void call_free(http_call *call)
{
    if (!call) return;
    if (call->upload_fd >= 0) close(call->upload_fd);
    if (call->upload_path) unlink(call->upload_path);
    dk_free(call->upload_path);
    EVP_MD_CTX_free(call->upload_sha);
    if (call->reply.response) MHD_destroy_response(call->reply.response);
    dk_buf_free(&call->body);
    dk_free(call->path);
    dk_free(call);
}

static http_call *call_new(srv *server, struct MHD_Connection *conn, const char *url, const char *method)
{
    http_call *call = dk_calloc(1, sizeof *call);
    if (!call) return NULL;
    call->path = dk_strdup(url);
    if (!call->path) {
        dk_free(call);
        return NULL;
    }
    dk_strlcpy(call->method, method, sizeof call->method);
    call->upload_fd = -1;
    call->start_ns = dk_now_ns();
    call->endpoint = "other";
    call->rq.server = server;
    call->rq.conn = conn;
    call->rq.method = call->method;
    call->rq.path = call->path;
    call->rq.body = "";
    call->rq.openai = strncmp(url, "/v1/", 4) == 0;
    call->rq.reply = &call->reply;
    return call;
}

static enum MHD_Result queue_reply(http_call *call)
{
    if (!call->reply.response) srv_reply_error(&call->rq, 500, "the handler gave no reply");
    if (!call->reply.response) return MHD_NO;
    call->queued = true;
    enum MHD_Result r = MHD_queue_response(call->rq.conn, call->reply.status, call->reply.response);
    MHD_destroy_response(call->reply.response);
    call->reply.response = NULL;
    return r;
}

static void reply_too_large(http_call *call)
{
    srv_reply_error(&call->rq, 413, "request body larger than %zu bytes", call->rq.server->config.max_body);
    if (call->reply.response) MHD_add_response_header(call->reply.response, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* POST /api/blobs/...: a model file of any size, so it goes to a temporary file. */
static bool is_blob_upload(const char *method, const char *url)
{
    return strcmp(method, "POST") == 0 && strncmp(url, "/api/blobs/", 11) == 0;
}

static int upload_open(http_call *call)
{
    const char *dir = dk_getenv_or("TMPDIR", "/tmp");
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/duckling-upload-XXXXXX", dir);
    call->upload_path = dk_buf_detach(&b);
    if (!call->upload_path) return -1;
    call->upload_fd = mkstemp(call->upload_path);
    if (call->upload_fd < 0) {
        dk_free(call->upload_path);
        call->upload_path = NULL;
        return -1;
    }
    call->upload_sha = EVP_MD_CTX_new();
    if (!call->upload_sha || EVP_DigestInit_ex(call->upload_sha, EVP_sha256(), NULL) != 1) return -1;
    return 0;
}

static void upload_write(http_call *call, const char *data, size_t n)
{
    if (call->upload_failed) return;
    if (EVP_DigestUpdate(call->upload_sha, data, n) != 1) call->upload_failed = true;
    while (n && !call->upload_failed) {
        ssize_t k = write(call->upload_fd, data, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) call->upload_failed = true;
        else data += k, n -= (size_t)k;
    }
}

static int upload_finish(http_call *call)
{
    unsigned char md[32];
    unsigned int n_md = 0;
    if (call->upload_failed || EVP_DigestFinal_ex(call->upload_sha, md, &n_md) != 1 || n_md != 32) return -1;
    memcpy(call->upload_digest, "sha256:", 7);
    for (int i = 0; i < 32; i++) snprintf(call->upload_digest + 7 + 2 * i, 3, "%02x", md[i]);
    if (close(call->upload_fd) != 0) return -1;
    call->upload_fd = -1;
    call->rq.upload_path = call->upload_path;
    call->rq.upload_digest = call->upload_digest;
    return 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)version;
    srv *server = cls;
    http_call *call = *con_cls;
    if (!call) {
        call = call_new(server, conn, url, method);
        if (!call) return MHD_NO;
        *con_cls = call;
        atomic_fetch_add(&server->n_active, 1);
        call->counted_active = true;
        if (is_blob_upload(method, url)) {
            if (upload_open(call) != 0) {
                srv_reply_error(&call->rq, 500, "cannot store the upload: %s", strerror(errno));
                return queue_reply(call);
            }
            return MHD_YES;
        }
        const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length) {
            char *end;
            unsigned long long n = strtoull(length, &end, 10);
            if (*end == 0 && n > server->config.max_body) {
                /* Answer before reading it: MHD closes the connection after the reply. */
                call->too_large = true;
                reply_too_large(call);
                return queue_reply(call);
            }
        }
        return MHD_YES;
    }
    if (call->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (call->upload_path) {
            upload_write(call, upload_data, n);
            return MHD_YES;
        }
        if (call->too_large) {
            /* A chunked body over the limit: the rest is read and dropped, so that the client,
             * still sending, gets to read the 413 (closing on unread data resets the
             * connection and loses the reply) - but not forever. */
            call->discarded += n;
            if (call->discarded <= DISCARD_MAX_BYTES) return MHD_YES;
            reply_too_large(call);
            return queue_reply(call);
        }
        if (call->body.len + n > server->config.max_body) {
            call->too_large = true;
            call->discarded = call->body.len + n;
            dk_buf_free(&call->body);
            return MHD_YES;
        }
        if (dk_buf_append(&call->body, upload_data, n) != 0) {
            srv_reply_error(&call->rq, 500, "out of memory reading the request body");
            return queue_reply(call);
        }
        return MHD_YES;
    }
    if (call->too_large) {
        reply_too_large(call);
        return queue_reply(call);
    }
    if (call->upload_path && upload_finish(call) != 0) {
        srv_reply_error(&call->rq, 500, "cannot store the upload (disk full?)");
        return queue_reply(call);
    }
    if (call->body.data) {
        call->rq.body = call->body.data;
        call->rq.body_len = call->body.len;
    }
    dispatch(call);
    return queue_reply(call);
}

static void log_request(const http_call *call, unsigned status, struct MHD_Connection *conn)
{
    char when[40];
    srv_time_rfc3339(when, srv_unix_ns());
    when[19] = 0; /* seconds are enough in a log */
    char client[INET6_ADDRSTRLEN] = "-";
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info && info->client_addr) {
        const struct sockaddr *sa = info->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, client, sizeof client);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, client, sizeof client);
    }
    double ms = (double)(dk_now_ns() - call->start_ns) / 1e6;
    fprintf(stderr, "duckling: %s | %3u | %10.3fms | %15s | %-7s %s\n", when, status, ms, client, call->method,
            call->path);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv *server = cls;
    http_call *call = *con_cls;
    if (!call) return;
    *con_cls = NULL;
    bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (call->stream) stream_finish(call->stream, ok && !atomic_load(&call->stream->cancel));
    unsigned status = call->queued ? call->reply.status : 0;
    if (call->queued) {
        atomic_fetch_add(&server->n_requests, 1);
        if (status >= 400 && status < 500) atomic_fetch_add(&server->n_errors_4xx, 1);
        if (status >= 500) atomic_fetch_add(&server->n_errors_5xx, 1);
        srv_metrics_record(server->metrics, call->endpoint, status);
        if (!server->config.quiet) log_request(call, status, conn);
    }
    if (call->counted_active) atomic_fetch_sub(&server->n_active, 1);
    call_free(call);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    srv *server = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == '.')) msg[--n] = 0;
    if (!atomic_load(&server->http->running)) dk_strlcpy(server->http->start_log, msg, sizeof server->http->start_log);
    else if (!server->config.quiet) fprintf(stderr, "duckling: http: %s\n", msg);
}

/* ---- start and stop ---- */

static int origins_parse(struct srv_http *h, char *err)
{
    const char *v = getenv("DUCKLING_ORIGINS");
    if (!v || !v[0]) v = getenv("OLLAMA_ORIGINS");
    if (!v || !v[0]) return DK_OK;
    size_t n = 1;
    for (const char *p = v; *p; p++) n += *p == ',';
    h->origins = dk_calloc(n, sizeof *h->origins);
    if (!h->origins) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (const char *p = v; *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p;
        size_t k = len;
        while (k && isspace((unsigned char)*s)) s++, k--;
        while (k && isspace((unsigned char)s[k - 1])) k--;
        if (k) {
            h->origins[h->n_origins] = dk_strndup(s, k);
            if (!h->origins[h->n_origins]) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
            h->n_origins++;
        }
        p += len;
        if (*p == ',') p++;
    }
    return DK_OK;
}

static void http_state_free(struct srv_http *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n_origins; i++) dk_free(h->origins[i]);
    dk_free(h->origins);
    pthread_mutex_destroy(&h->lock);
    dk_free(h);
}

/* Resolves config.host into an address to bind (numeric or a name such as "localhost"). */
static int bind_address(const srv_config *c, struct sockaddr_storage *addr, bool *ipv6, bool *loopback, char *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    const char *host = c->host[0] ? c->host : "127.0.0.1";
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) return dk_fail(err, DK_ERR_ARG, "cannot resolve host '%s': %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *ipv6 = res->ai_family == AF_INET6;
    if (*ipv6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)res->ai_addr)->sin6_addr;
        *loopback = IN6_IS_ADDR_LOOPBACK(a);
    } else {
        const struct in_addr *a = &((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr;
        *loopback = (ntohl(a->s_addr) >> 24) == 127;
    }
    freeaddrinfo(res);
    return DK_OK;
}

int srv_start(srv **out, const srv_config *config, char *err)
{
    *out = NULL;
    srv *s = dk_calloc(1, sizeof *s);
    if (!s) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    s->config = *config;
    if (s->config.num_parallel < 1) s->config.num_parallel = 1;
    if (s->config.max_loaded_models < 1) s->config.max_loaded_models = 1;
    if (s->config.max_queue < 0) s->config.max_queue = 0;
    if (s->config.num_ctx == 0) s->config.num_ctx = 4096;
    s->started_ns = srv_unix_ns();
    int rc = DK_ERR_NOMEM;
    s->http = dk_calloc(1, sizeof *s->http);
    s->metrics = srv_metrics_new();
    if (!s->http || !s->metrics) {
        dk_fail(err, rc, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&s->http->lock, NULL);
    if ((rc = origins_parse(s->http, err)) != DK_OK) goto fail;
    if ((rc = store_open(&s->store, config->models_dir, config->ollama_dir, err)) != DK_OK) goto fail;
    if ((rc = srv_sched_new(&s->sched, s, err)) != DK_OK) goto fail;

    struct sockaddr_storage addr;
    bool ipv6 = false;
    if ((rc = bind_address(&s->config, &addr, &ipv6, &s->http->loopback, err)) != DK_OK) goto fail;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     MHD_USE_POLL | (ipv6 ? MHD_USE_IPv6 : 0);
    unsigned timeout = s->config.connection_timeout_s ? s->config.connection_timeout_s : 60;
    unsigned limit = s->config.max_connections > 0 ? (unsigned)s->config.max_connections : 256;
    s->daemon = MHD_start_daemon(flags, (uint16_t)s->config.port, NULL, NULL, on_access, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_CONNECTION_LIMIT, limit,
                                 MHD_OPTION_CONNECTION_TIMEOUT, timeout,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        rc = dk_fail(err, DK_ERR_IO, "cannot listen on %s:%d: %s", s->config.host, s->config.port,
                     s->http->start_log[0] ? s->http->start_log : errno ? strerror(errno) : "unknown error");
        goto fail;
    }
    atomic_store(&s->http->running, 1);
    *out = s;
    return DK_OK;
fail:
    srv_free(s);
    return rc;
}

int srv_port(const srv *server)
{
    if (!server || !server->daemon) return 0;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? (int)info->port : server->config.port;
}

void srv_free(srv *server)
{
    if (!server) return;
    atomic_store(&server->stopping, 1);
    if (server->sched) srv_sched_shutdown(server->sched);
    if (server->http) {
        pthread_mutex_lock(&server->http->lock);
        for (srv_stream *st = server->http->streams; st; st = st->next) stream_cancel(st);
        pthread_mutex_unlock(&server->http->lock);
    }
    /* Closes every connection; their threads finish their requests (joining stream workers). */
    if (server->daemon) MHD_stop_daemon(server->daemon);
    srv_sched_free(server->sched);
    store_free(server->store);
    srv_metrics_free(server->metrics);
    http_state_free(server->http);
    dk_free(server);
}
