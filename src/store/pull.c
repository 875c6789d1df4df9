/*
 * pull.c: store_pull, the Ollama registry protocol over libcurl.
 *
 *   GET {base}/v2/{ns}/{model}/manifests/{tag}   Accept: application/vnd.docker...manifest.v2+json
 *   GET {base}/v2/{ns}/{model}/blobs/{digest}    for the config and every layer, redirects
 *                                                followed (registries send blobs from a CDN)
 *
 * {base} is https://HOST (http:// when insecure), or $DUCKLING_REGISTRY for registry.ollama.ai.
 * Each blob goes to blobs/sha256-HEX-partial; a partial left by an earlier try is resumed with
 * "Range: bytes=N-" (a 206 appends, a 200 starts over). A dropped connection is retried a few
 * times from where it stopped; after that the pull fails and the partial stays for the next
 * one. Once every blob is down, each is checked (size and sha256) and renamed to its content
 * address; a mismatch deletes it. The manifest is written last, so a model appears whole or
 * not at all. Stalls are bounded: 30 s to connect, and a transfer slower than 1 byte/s for
 * 60 s ($DUCKLING_PULL_STALL_S seconds, for tests) is dropped. Not for: HTTP serving, registry authentication (public models only).
 */
#include "store/store_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PULL_ATTEMPTS 3
#define PULL_CONNECT_TIMEOUT_S 30L
#define PULL_LOW_SPEED_TIME_S 60L
#define PULL_PROGRESS_EVERY_NS 100000000ull /* progress callbacks at most every 100 ms */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct pull_job {
    store *st;
    const store_pull_params *pp;
    store_name name;
    char shown[700];   /* the name as the user reads it */
    char base[512];    /* registry URL without a trailing slash */
    bool plain_http;   /* base is http:// */
    char *err;
} pull_job;

static int pull_report(pull_job *job, const char *status, const char *digest, uint64_t total, uint64_t completed)
{
    if (job->pp && job->pp->cancel && atomic_load(job->pp->cancel)) return dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
    if (!job->pp || !job->pp->progress) return DK_OK;
    if (job->pp->progress(job->pp->user, status, digest, total, completed) != 0)
        return dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
    return DK_OK;
}

static bool pull_cancelled(const pull_job *job) { return job->pp && job->pp->cancel && atomic_load(job->pp->cancel); }

static int registry_base(pull_job *job)
{
    const char *env = getenv("DUCKLING_REGISTRY");
    if (strcasecmp(job->name.host, "registry.ollama.ai") == 0 && env && *env) {
        if (strncmp(env, "http://", 7) != 0 && strncmp(env, "https://", 8) != 0)
            return dk_fail(job->err, DK_ERR_ARG, "DUCKLING_REGISTRY must be an http:// or https:// URL, not '%s'", env);
        if (dk_strlcpy(job->base, env, sizeof job->base) >= sizeof job->base)
            return dk_fail(job->err, DK_ERR_ARG, "DUCKLING_REGISTRY is too long");
    } else {
        bool insecure = job->pp && job->pp->insecure;
        snprintf(job->base, sizeof job->base, "%s://%s", insecure ? "http" : "https", job->name.host);
    }
    size_t n = strlen(job->base);
    while (n > 0 && job->base[n - 1] == '/') job->base[--n] = 0;
    job->plain_http = strncmp(job->base, "http://", 7) == 0;
    return DK_OK;
}

static int xfer_check(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return pull_cancelled(user) ? 1 : 0;
}

/* $DUCKLING_PULL_STALL_S (1..3600) shortens the stall limit, for tests of a stalled server. */
static long stall_seconds(void)
{
    const char *env = getenv("DUCKLING_PULL_STALL_S");
    long v = env ? strtol(env, NULL, 10) : 0;
    return v >= 1 && v <= 3600 ? v : PULL_LOW_SPEED_TIME_S;
}

static CURL *pull_easy(pull_job *job, const char *url, struct curl_slist *headers)
{
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* a redirect may not downgrade an https registry to plain http */
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, job->plain_http ? "http,https" : "https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, PULL_CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall_seconds());
    curl_easy_setopt(c, CURLOPT_USERAGENT, "duckling (ollama registry client)");
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xfer_check);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, job);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (job->pp && job->pp->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return c;
}

/* ------------------------------------------------------------------ manifest */

typedef struct mem_sink {
    dk_buf buf;
    size_t limit;
    bool too_big;
} mem_sink;

static size_t mem_write(char *data, size_t size, size_t nmemb, void *user)
{
    mem_sink *s = user;
    size_t n = size * nmemb;
    if (s->buf.len + n > s->limit) {
        s->too_big = true;
        return 0;
    }
    return dk_buf_append(&s->buf, data, n) == 0 ? n : 0;
}

/* The message of a registry error body ({"errors":[{"code","message"}]}), or "". */
static void registry_message(const char *body, char *out, size_t cap)
{
    out[0] = 0;
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_array_get(json_object_get(j, "errors"), 0), "message"));
    if (!msg) msg = json_string_value(json_object_get(j, "error"));
    if (msg) snprintf(out, cap, ": %s", msg);
    json_decref(j);
}

static int fetch_manifest(pull_job *job, char **text, size_t *n_text)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/v2/%s/%s/manifests/%s", job->base, job->name.ns, job->name.model, job->name.tag);
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: " STORE_MEDIA_MANIFEST);
    CURL *c = headers ? pull_easy(job, url, headers) : NULL;
    if (!c) {
        curl_slist_free_all(headers);
        return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    }
    mem_sink sink = {.limit = STORE_MANIFEST_MAX_BYTES};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    CURLcode res = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    int rc = DK_OK;
    char msg[200];
    registry_message(sink.buf.data, msg, sizeof msg);
    if (pull_cancelled(job)) rc = dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
    else if (sink.too_big) rc = dk_fail(job->err, DK_ERR_FORMAT, "the registry's manifest for '%s' is too large", job->shown);
    else if (res != CURLE_OK) rc = dk_fail(job->err, DK_ERR_IO, "cannot reach %s: %s", job->base, curl_easy_strerror(res));
    else if (code == 404) rc = dk_fail(job->err, DK_ERR_NOTFOUND, "model '%s' not found in the registry%s", job->shown, msg);
    else if (code != 200) rc = dk_fail(job->err, DK_ERR_IO, "the registry answered HTTP %ld for '%s'%s", code, job->shown, msg);
    else if (sink.buf.failed) rc = dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    if (rc != DK_OK) {
        dk_buf_free(&sink.buf);
        return rc;
    }
    *n_text = sink.buf.len;
    *text = dk_buf_detach(&sink.buf);
    if (!*text) return dk_fail(job->err, DK_ERR_FORMAT, "the registry sent an empty manifest for '%s'", job->shown);
    return DK_OK;
}

/* ------------------------------------------------------------------ one blob */

typedef struct blob_dl {
    pull_job *job;
    CURL *curl;
    const store_layer *layer;
    int fd;
    uint64_t offset;        /* where this transfer writes its first byte */
    uint64_t received;      /* bytes of this transfer written */
    int64_t range_start;    /* of the last response's Content-Range, -1 if none */
    bool started;
    long bad_status;        /* an HTTP status whose body was not written */
    bool too_big, bad_range, cancelled;
    int write_errno;
    uint64_t last_report_ns;
} blob_dl;

static size_t blob_header(char *data, size_t size, size_t nmemb, void *user)
{
    blob_dl *d = user;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) d->range_start = -1; /* a new response (after a redirect) */
    if (n > 14 && strncasecmp(data, "content-range:", 14) == 0) {
        unsigned long long start = 0;
        if (sscanf(data + 14, " bytes %llu-", &start) == 1) d->range_start = (int64_t)start;
    }
    return n;
}

/* The first bytes of a body: decide from the status whether they extend the partial file. */
static bool blob_body_start(blob_dl *d)
{
    d->started = true;
    long code = 0;
    curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code == 200) {
        if (d->offset > 0 && ftruncate(d->fd, 0) != 0) {
            d->write_errno = errno;
            return false;
        }
        d->offset = 0; /* the server ignored the Range: start over */
        return true;
    }
    if (code == 206) {
        if (d->range_start != (int64_t)d->offset) {
            d->bad_range = true;
            return false;
        }
        return true;
    }
    d->bad_status = code;
    return false;
}

static size_t blob_write(char *data, size_t size, size_t nmemb, void *user)
{
    blob_dl *d = user;
    size_t n = size * nmemb;
    if (!d->started && !blob_body_start(d)) return 0;
    if (d->offset + d->received + n > d->layer->size) {
        d->too_big = true;
        return 0;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(d->fd, data + done, n - done, (off_t)(d->offset + d->received + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            d->write_errno = errno ? errno : EIO;
            return 0;
        }
        done += (size_t)k;
    }
    d->received += n;
    uint64_t now = dk_now_ns();
    uint64_t completed = d->offset + d->received;
    if (now - d->last_report_ns >= PULL_PROGRESS_EVERY_NS || completed == d->layer->size) {
        d->last_report_ns = now;
        char status[64];
        snprintf(status, sizeof status, "pulling %.12s", d->layer->digest + 7);
        char e[DK_ERRLEN];
        pull_job *job = d->job;
        char *saved = job->err;
        job->err = e;
        int rc = pull_report(job, status, d->layer->digest, d->layer->size, completed);
        job->err = saved;
        if (rc != DK_OK) {
            d->cancelled = true;
            return 0;
        }
    }
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int partial_size(int fd, uint64_t *out)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) return -1;
    *out = (uint64_t)sb.st_size;
    return 0;
}

/* One GET of the blob from *have bytes on. Returns DK_OK when the partial is complete, 1 when
 * the transfer stopped early and may be retried (reason in why), or an error. */
static int blob_transfer(pull_job *job, const store_layer *layer, int fd, uint64_t have, char *why, size_t n_why)
{
    char url[1024], range[64];
    snprintf(url, sizeof url, "%s/v2/%s/%s/blobs/%s", job->base, job->name.ns, job->name.model, layer->digest);
    CURL *c = pull_easy(job, url, NULL);
    if (!c) return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    blob_dl d = {.job = job, .curl = c, .layer = layer, .fd = fd, .offset = have, .range_start = -1};
    if (have > 0) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, blob_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &d);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, blob_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
    CURLcode res = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (!d.started && res == CURLE_OK && code != 200 && code != 206) d.bad_status = code;
    if (d.cancelled || pull_cancelled(job)) return dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
    if (d.write_errno) return dk_fail(job->err, DK_ERR_IO, "cannot write blob %s: %s", layer->digest, strerror(d.write_errno));
    if (d.too_big) return dk_fail(job->err, DK_ERR_FORMAT, "blob %s is larger than the manifest says", layer->digest);
    if (d.bad_status == 404) return dk_fail(job->err, DK_ERR_NOTFOUND, "blob %s not found in the registry", layer->digest);
    if (d.bad_status == 416 || d.bad_range) {
        /* the server cannot continue this partial: start it over */
        if (ftruncate(fd, 0) != 0) return dk_fail(job->err, DK_ERR_IO, "cannot truncate a partial blob: %s", strerror(errno));
        snprintf(why, n_why, "the server could not resume at byte %llu", (unsigned long long)have);
        return 1;
    }
    if (d.bad_status >= 500) {
        snprintf(why, n_why, "HTTP %ld", d.bad_status);
        return 1;
    }
    if (d.bad_status) return dk_fail(job->err, DK_ERR_IO, "the registry answered HTTP %ld for blob %s", d.bad_status, layer->digest);
    uint64_t now_have = 0;
    if (partial_size(fd, &now_have) != 0) return dk_fail(job->err, DK_ERR_IO, "cannot stat a partial blob: %s", strerror(errno));
    if (res == CURLE_OK && now_have == layer->size) return DK_OK;
    if (res == CURLE_OK) snprintf(why, n_why, "the connection closed at byte %llu of %llu", (unsigned long long)now_have,
                                  (unsigned long long)layer->size);
    else snprintf(why, n_why, "%s", curl_easy_strerror(res));
    return 1;
}

static char *partial_path(pull_job *job, const store_layer *layer)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/blobs/sha256-%s-partial", store_root(job->st), layer->digest + 7);
    return dk_buf_detach(&b);
}

/* Brings blobs/sha256-HEX-partial to the layer's full size (or finds the blob already there:
 * *done_already). The partial is kept on every failure except a blob that cannot be right. */
static int pull_blob(pull_job *job, const store_layer *layer, bool *done_already)
{
    *done_already = false;
    char status[64];
    snprintf(status, sizeof status, "pulling %.12s", layer->digest + 7);
    char *final_path = store_blob_local_path(job->st, layer->digest + 7);
    char *part = partial_path(job, layer);
    int rc = final_path && part ? DK_OK : dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    struct stat sb;
    if (rc == DK_OK && stat(final_path, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == layer->size) {
        *done_already = true;
        rc = pull_report(job, status, layer->digest, layer->size, layer->size);
        dk_free(final_path);
        dk_free(part);
        return rc;
    }
    int fd = rc == DK_OK ? open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (rc == DK_OK && fd < 0) rc = dk_fail(job->err, DK_ERR_IO, "cannot open %s: %s", part, strerror(errno));
    /* one writer per partial: a second pull of the same blob waits, then finds it done */
    while (rc == DK_OK && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) break; /* no locks here: go on without */
        if (pull_cancelled(job)) rc = dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
        else sleep_ms(100);
    }
    if (rc == DK_OK && stat(final_path, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == layer->size) {
        *done_already = true;
        close(fd);
        dk_free(final_path);
        dk_free(part);
        return pull_report(job, status, layer->digest, layer->size, layer->size);
    }
    char why[256] = "";
    for (int attempt = 0; rc == DK_OK; attempt++) {
        uint64_t have = 0;
        if (partial_size(fd, &have) != 0) {
            rc = dk_fail(job->err, DK_ERR_IO, "cannot stat %s: %s", part, strerror(errno));
            break;
        }
        if (have > layer->size) {
            if (ftruncate(fd, 0) != 0) rc = dk_fail(job->err, DK_ERR_IO, "cannot truncate %s", part);
            have = 0;
        }
        if (rc == DK_OK) rc = pull_report(job, status, layer->digest, layer->size, have);
        if (rc != DK_OK || have == layer->size) break;
        if (attempt == PULL_ATTEMPTS) {
            rc = dk_fail(job->err, DK_ERR_IO, "download of %s stopped at %llu of %llu bytes: %s (pull again to resume)",
                         layer->digest, (unsigned long long)have, (unsigned long long)layer->size, why);
            break;
        }
        if (attempt > 0) sleep_ms(200L * attempt);
        int got = blob_transfer(job, layer, fd, have, why, sizeof why);
        if (got < 0) rc = got;
        else if (got == DK_OK) rc = pull_report(job, status, layer->digest, layer->size, layer->size);
        if (got == DK_OK) break;
    }
    if (fd >= 0) close(fd);
    if (rc == DK_ERR_FORMAT && part) unlink(part); /* too big: no resume can fix it */
    dk_free(final_path);
    dk_free(part);
    return rc;
}

/* Checks a complete partial against its digest and moves it to its content address. */
static int verify_blob(pull_job *job, const store_layer *layer)
{
    char *part = partial_path(job, layer);
    char *final_path = store_blob_local_path(job->st, layer->digest + 7);
    int rc = part && final_path ? DK_OK : dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    char actual[72];
    uint64_t size = 0;
    struct stat sb;
    if (rc == DK_OK && access(part, F_OK) != 0 && stat(final_path, &sb) == 0 && (uint64_t)sb.st_size == layer->size) {
        /* a concurrent pull of the same blob verified and renamed it first */
        dk_free(part);
        dk_free(final_path);
        return DK_OK;
    }
    if (rc == DK_OK) rc = store_sha256_file(part, actual, &size, job->err);
    if (rc == DK_OK && (size != layer->size || strcmp(actual, layer->digest) != 0)) {
        unlink(part);
        rc = dk_fail(job->err, DK_ERR_FORMAT, "digest mismatch for %s: the download (%llu bytes) is %s; it was removed",
                     layer->digest, (unsigned long long)size, actual);
    }
    if (rc == DK_OK && rename(part, final_path) != 0 &&
        !(errno == ENOENT && stat(final_path, &sb) == 0 && (uint64_t)sb.st_size == layer->size))
        rc = dk_fail(job->err, DK_ERR_IO, "cannot rename %s: %s", part, strerror(errno));
    dk_free(part);
    dk_free(final_path);
    return rc;
}

/* ------------------------------------------------------------------ the pull */

static int pull_blobs(pull_job *job, const store_manifest *mf)
{
    size_t n = mf->n_layers + 1;
    bool *present = dk_calloc(n, sizeof(bool));
    if (!present) return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    int rc = DK_OK;
    /* config last, as Ollama does; a digest listed twice is fetched once */
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        const store_layer *l = i < mf->n_layers ? &mf->layers[i] : &mf->config;
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = strcmp((k < mf->n_layers ? &mf->layers[k] : &mf->config)->digest, l->digest) == 0;
        if (dup) present[i] = true;
        else rc = pull_blob(job, l, &present[i]);
    }
    if (rc == DK_OK) rc = pull_report(job, "verifying sha256 digest", NULL, 0, 0);
    for (size_t i = 0; i < n && rc == DK_OK; i++)
        if (!present[i]) rc = verify_blob(job, i < mf->n_layers ? &mf->layers[i] : &mf->config);
    dk_free(present);
    return rc;
}

int store_pull(store *st, const char *name_text, const store_pull_params *params, char *err)
{
    pthread_once(&curl_once, curl_init_once);
    pull_job job = {.st = st, .pp = params, .err = err};
    int rc = store_parse_name(name_text, &job.name, err);
    if (rc != DK_OK) return rc;
    store_format_name(&job.name, job.shown, sizeof job.shown);
    rc = registry_base(&job);
    if (rc == DK_OK) rc = pull_report(&job, "pulling manifest", NULL, 0, 0);
    char *text = NULL;
    size_t n_text = 0;
    if (rc == DK_OK) rc = fetch_manifest(&job, &text, &n_text);
    store_manifest mf = {0};
    if (rc == DK_OK) rc = store_manifest_parse(text, n_text, &mf, err);
    if (rc == DK_OK) {
        dk_buf blobs = {0};
        dk_buf_printf(&blobs, "%s/blobs", store_root(st));
        rc = blobs.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : store_mkdirs(blobs.data, err);
        dk_buf_free(&blobs);
    }
    if (rc == DK_OK) rc = pull_blobs(&job, &mf);
    if (rc == DK_OK) rc = pull_report(&job, "writing manifest", NULL, 0, 0);
    if (rc == DK_OK) {
        char *path = store_manifest_write_path(st, &job.name);
        rc = path ? store_write_atomic(path, text, n_text, err) : dk_fail(err, DK_ERR_NOMEM, "out of memory");
        dk_free(path);
    }
    if (rc == DK_OK) rc = pull_report(&job, "success", NULL, 0, 0);
    store_manifest_free(&mf);
    dk_free(text);
    return rc;
}
