/*
 * client.c: the CLI's HTTP client for a running duckling (or Ollama) server, on libcurl:
 * where the server is (DUCKLING_HOST / OLLAMA_HOST / --host), whether one answers (GET /),
 * plain JSON requests (GET /api/ps, POST /api/show) and streamed ones (POST /api/chat,
 * /api/generate), whose NDJSON body is cut into lines and handed to a callback one parsed
 * object at a time. An {"error": ...} object, in a stream or as an error reply, becomes the
 * function's one-line error. Not for: what the objects mean (cmd_run.c, cmd_ps.c read them).
 */
#include "cli/cli.h"

#include <curl/curl.h>
#include <string.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 11434
#define MAX_LINE_BYTES (64u << 20) /* one NDJSON object; more is not a sane reply */
#define MAX_REPLY_BYTES (64u << 20)

int cli_host_url(const char *host, dk_buf *url, char *err)
{
    if (!host || !*host) host = getenv("DUCKLING_HOST");
    if (!host || !*host) host = getenv("OLLAMA_HOST");
    if (!host || !*host) host = DEFAULT_HOST;
    const char *scheme = "http://";
    if (strncmp(host, "http://", 7) == 0) host += 7;
    else if (strncmp(host, "https://", 8) == 0) {
        host += 8;
        scheme = "https://";
    }
    size_t n = strcspn(host, "/");
    if (n == 0) return dk_fail(err, DK_ERR_ARG, "bad server address '%s'", host);
    /* A port is there when the last ':' comes after any IPv6 ']' ("[::1]:8080", "h:1"). */
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (host[i] == ':') colon = host + i;
    const char *bracket = memchr(host, ']', n);
    bool has_port = colon && (!bracket || colon > bracket);
    if (has_port && (colon + 1 == host + n)) return dk_fail(err, DK_ERR_ARG, "bad server address '%s'", host);
    dk_buf_clear(url);
    dk_buf_puts(url, scheme);
    dk_buf_append(url, host, n);
    if (!has_port) dk_buf_printf(url, ":%d", DEFAULT_PORT);
    return url->failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}

const char *cli_host_name(const char *url)
{
    if (strncmp(url, "http://", 7) == 0) return url + 7;
    if (strncmp(url, "https://", 8) == 0) return url + 8;
    return url;
}

/* ---- one transfer ---- */

typedef struct transfer {
    const char *url;           /* the server's base URL */
    dk_buf line;               /* the NDJSON line being received */
    dk_buf whole;              /* a non-streamed reply */
    bool streaming;
    cli_json_fn on_object;
    void *user;
    const atomic_int *cancel;
    bool stopped;              /* the callback or the cancel flag ended the transfer */
    bool too_big;
    char remote_error[DK_ERRLEN]; /* an {"error"} object's message, if one came */
    int cb_status;             /* non-zero: a callback failed with this DK_ERR code (message in cb_err) */
    char cb_err[DK_ERRLEN];
} transfer;

/* The message of an {"error": "..."} (or OpenAI's {"error": {"message": ...}}) object, or NULL. */
static const char *error_of(const json_t *obj)
{
    const json_t *e = json_object_get(obj, "error");
    if (json_is_string(e)) return json_string_value(e);
    if (json_is_object(e) && json_is_string(json_object_get(e, "message"))) return json_string_value(json_object_get(e, "message"));
    return NULL;
}

/* One complete line of a stream: parse it, report an error object, else pass it on. */
static int transfer_line(transfer *t, const char *line, size_t n)
{
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
    if (n == 0) return 0;
    json_error_t je;
    json_t *obj = json_loadb(line, n, 0, &je);
    if (!obj) {
        t->cb_status = DK_ERR_FORMAT;
        dk_fail(t->cb_err, DK_ERR_FORMAT, "the server sent a line that is not JSON: %s", je.text);
        return -1;
    }
    const char *msg = error_of(obj);
    int rc = 0;
    if (msg) {
        dk_strlcpy(t->remote_error, msg, sizeof t->remote_error);
        rc = -1;
    } else if (t->on_object) {
        int r = t->on_object(t->user, obj, t->cb_err);
        if (r < 0) {
            t->cb_status = r;
            rc = -1;
        } else if (r > 0) {
            t->stopped = true;
            rc = -1;
        }
    }
    json_decref(obj);
    return rc;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    transfer *t = user;
    size_t n = size * nmemb;
    if (t->cancel && atomic_load(t->cancel)) {
        t->stopped = true;
        return 0;
    }
    if (!t->streaming) {
        if (t->whole.len + n > MAX_REPLY_BYTES) {
            t->too_big = true;
            return 0;
        }
        return dk_buf_append(&t->whole, data, n) == 0 ? n : 0;
    }
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n') continue;
        int rc;
        if (t->line.len) {
            dk_buf_append(&t->line, data + start, i - start);
            rc = t->line.failed ? -1 : transfer_line(t, t->line.data, t->line.len);
            dk_buf_clear(&t->line);
        } else {
            rc = transfer_line(t, data + start, i - start);
        }
        if (rc) return 0;
        start = i + 1;
    }
    if (t->line.len + (n - start) > MAX_LINE_BYTES) {
        t->too_big = true;
        return 0;
    }
    if (start < n && dk_buf_append(&t->line, data + start, n - start) != 0) return 0;
    return n;
}

/* Lets Ctrl-C end a transfer that is still waiting for its first byte (a model loading). */
static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    transfer *t = user;
    if (t->cancel && atomic_load(t->cancel)) {
        t->stopped = true;
        return 1;
    }
    return 0;
}

/* Runs one request: GET when body is NULL, else POST of the JSON body. connect_ms/total_ms:
 * 0 for libcurl's defaults (none for the total). Fills *http_status. */
static int transfer_run(transfer *t, const char *path, const json_t *body, long connect_ms, long total_ms,
                        long *http_status, char *err)
{
    *http_status = 0;
    dk_buf url = {0};
    dk_buf_puts(&url, t->url);
    dk_buf_puts(&url, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    int rc = DK_OK;
    if (url.failed || !curl || !headers || (body && !text)) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url.data);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*"); /* a local server, never through a proxy */
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "duckling");
    if (connect_ms > 0) curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (total_ms > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, total_ms);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    }
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_status);
    /* The last line of a stream (or a one-object error reply) may come without a newline. */
    if (t->streaming && t->line.len && !t->stopped && !t->remote_error[0] && !t->cb_status) {
        if (transfer_line(t, t->line.data, t->line.len) == 0) dk_buf_clear(&t->line);
    }
    if (t->remote_error[0]) {
        rc = dk_fail(err, *http_status == 404 ? DK_ERR_NOTFOUND : DK_ERR_ARG, "%s", t->remote_error);
    } else if (t->cb_status && *http_status >= 400) {
        rc = dk_fail(err, DK_ERR_ARG, "the server answered HTTP %ld", *http_status);
    } else if (t->cb_status) {
        rc = dk_fail(err, t->cb_status, "%s", t->cb_err);
    } else if (t->stopped) {
        rc = DK_OK;
    } else if (t->too_big) {
        rc = dk_fail(err, DK_ERR_LIMIT, "the server's reply is too large");
    } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_OPERATION_TIMEDOUT) {
        rc = dk_fail(err, DK_ERR_IO, "could not connect to a running duckling server at %s", cli_host_name(t->url));
    } else if (cc != CURLE_OK) {
        rc = dk_fail(err, DK_ERR_IO, "%s: %s", cli_host_name(t->url), curl_err[0] ? curl_err : curl_easy_strerror(cc));
    }
done:
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(text); /* allocated by jansson */
    dk_buf_free(&url);
    return rc;
}

/* A non-streamed reply to JSON, or its error. */
static int transfer_reply(transfer *t, long http_status, json_t **out, char *err)
{
    json_error_t je;
    json_t *obj = t->whole.len ? json_loadb(t->whole.data, t->whole.len, 0, &je) : NULL;
    const char *msg = obj ? error_of(obj) : NULL;
    if (msg || http_status >= 400) {
        int code = http_status == 404 ? DK_ERR_NOTFOUND : DK_ERR_ARG;
        int rc = msg ? dk_fail(err, code, "%s", msg) : dk_fail(err, code, "the server answered HTTP %ld", http_status);
        json_decref(obj);
        return rc;
    }
    if (!obj) return dk_fail(err, DK_ERR_FORMAT, "the server's reply is not JSON");
    *out = obj;
    return DK_OK;
}

bool cli_client_ping(const char *url, long connect_ms)
{
    transfer t = {.url = url};
    long status = 0;
    char err[DK_ERRLEN];
    /* The connect is what tells whether a server is there; an answer may take a little longer
     * when the server is busy, but not seconds. */
    int rc = transfer_run(&t, "/", NULL, connect_ms, connect_ms + 2000, &status, err);
    dk_buf_free(&t.whole);
    return rc == DK_OK && status == 200;
}

int cli_client_get(const char *url, const char *path, json_t **out, char *err)
{
    transfer t = {.url = url};
    long status = 0;
    int rc = transfer_run(&t, path, NULL, 2000, 0, &status, err);
    if (rc == DK_OK) rc = transfer_reply(&t, status, out, err);
    dk_buf_free(&t.whole);
    return rc;
}

int cli_client_post(const char *url, const char *path, const json_t *body, json_t **out, char *err)
{
    transfer t = {.url = url};
    long status = 0;
    int rc = transfer_run(&t, path, body, 2000, 0, &status, err);
    if (rc == DK_OK) rc = transfer_reply(&t, status, out, err);
    dk_buf_free(&t.whole);
    return rc;
}

int cli_client_stream(const char *url, const char *path, const json_t *body, cli_json_fn on_object, void *user,
                      const atomic_int *cancel, char *err)
{
    transfer t = {.url = url, .streaming = true, .on_object = on_object, .user = user, .cancel = cancel};
    long status = 0;
    int rc = transfer_run(&t, path, body, 2000, 0, &status, err);
    if (rc == DK_OK && status >= 400 && !t.stopped) rc = dk_fail(err, DK_ERR_ARG, "the server answered HTTP %ld", status);
    dk_buf_free(&t.line);
    return rc;
}
