/*
 * store.c: the store itself: model names, the directory layout (manifests/HOST/NS/MODEL/TAG
 * and blobs/sha256-HEX under the duckling root, the same read-only under Ollama's), blobs
 * (sha256 through OpenSSL's EVP, written under temporary names and renamed), manifests,
 * resolving a name or a path to a model, listing, removing (with the blobs nothing else uses)
 * and copying. Pulling is in pull.c, Modelfiles in modelfile.c, creating models in create.c.
 */
#include "store/store_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "convert/convert.h"
#include "gguf/gguf.h"

struct store {
    char *root;        /* the duckling store, written here */
    char *ollama_root; /* Ollama's, read only; NULL when none */
};

/* ------------------------------------------------------------------ names */

#define STORE_DEFAULT_HOST "registry.ollama.ai"
#define STORE_DEFAULT_NS "library"
#define STORE_DEFAULT_TAG "latest"

static bool name_char_ok(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-'; }

/* A part of a name: [A-Za-z0-9_][A-Za-z0-9._-]*, shorter than cap. The first character
 * rule keeps "." and ".." (and hidden temporary files) out of the paths built from names. */
static int name_part_copy(const char *what, const char *s, size_t n, char *dst, size_t cap, bool host, char *err)
{
    if (n == 0) return dk_fail(err, DK_ERR_ARG, "invalid model name: empty %s", what);
    if (n >= cap) return dk_fail(err, DK_ERR_ARG, "invalid model name: %s is longer than %zu characters", what, cap - 1);
    if (!isalnum((unsigned char)s[0]) && s[0] != '_')
        return dk_fail(err, DK_ERR_ARG, "invalid model name: %s must start with a letter, digit or '_'", what);
    for (size_t i = 0; i < n; i++) {
        if (name_char_ok(s[i]) || (host && s[i] == ':')) continue;
        return dk_fail(err, DK_ERR_ARG, "invalid model name: character '%c' in the %s", s[i], what);
    }
    memcpy(dst, s, n);
    dst[n] = 0;
    return DK_OK;
}

static bool looks_like_host(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.' || s[i] == ':') return true;
    return n == 9 && strncmp(s, "localhost", 9) == 0;
}

int store_parse_name(const char *text, store_name *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!text || !*text) return dk_fail(err, DK_ERR_ARG, "invalid model name: empty");
    const char *slash = strrchr(text, '/');
    const char *last = slash ? slash + 1 : text;
    const char *colon = strchr(last, ':');
    const char *tag = colon ? colon + 1 : STORE_DEFAULT_TAG;
    size_t n_model = colon ? (size_t)(colon - last) : strlen(last);
    int rc = name_part_copy("model", last, n_model, out->model, sizeof out->model, false, err);
    if (rc == DK_OK) rc = name_part_copy("tag", tag, strlen(tag), out->tag, sizeof out->tag, false, err);
    if (rc != DK_OK) return rc;

    /* the parts before the model: none, NS, HOST/NS, or HOST alone when it looks like one */
    dk_strlcpy(out->host, STORE_DEFAULT_HOST, sizeof out->host);
    dk_strlcpy(out->ns, STORE_DEFAULT_NS, sizeof out->ns);
    if (!slash) return DK_OK;
    const char *first_slash = strchr(text, '/');
    if (first_slash == slash) {
        size_t n = (size_t)(slash - text);
        if (looks_like_host(text, n)) return name_part_copy("host", text, n, out->host, sizeof out->host, true, err);
        return name_part_copy("namespace", text, n, out->ns, sizeof out->ns, false, err);
    }
    const char *ns = first_slash + 1;
    if (memchr(ns, '/', (size_t)(slash - ns)))
        return dk_fail(err, DK_ERR_ARG, "invalid model name '%s': at most HOST/NAMESPACE/MODEL:TAG", text);
    rc = name_part_copy("host", text, (size_t)(first_slash - text), out->host, sizeof out->host, true, err);
    if (rc == DK_OK) rc = name_part_copy("namespace", ns, (size_t)(slash - ns), out->ns, sizeof out->ns, false, err);
    return rc;
}

void store_format_name(const store_name *name, char *buf, size_t n)
{
    if (strcasecmp(name->host, STORE_DEFAULT_HOST) == 0) {
        if (strcasecmp(name->ns, STORE_DEFAULT_NS) == 0)
            snprintf(buf, n, "%s:%s", name->model, name->tag);
        else
            snprintf(buf, n, "%s/%s:%s", name->ns, name->model, name->tag);
    } else {
        snprintf(buf, n, "%s/%s/%s:%s", name->host, name->ns, name->model, name->tag);
    }
}

/* ------------------------------------------------------------------ opening */

static char *home_path(const char *relative)
{
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/%s", home, relative);
    return dk_buf_detach(&b);
}

int store_open(store **out, const char *root, const char *ollama_root, char *err)
{
    *out = NULL;
    store *st = dk_calloc(1, sizeof(*st));
    if (!st) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const char *env_root = getenv("DUCKLING_MODELS");
    if (root && *root) st->root = dk_strdup(root);
    else if (env_root && *env_root) st->root = dk_strdup(env_root);
    else st->root = home_path(".duckling/models");
    if (!st->root) {
        store_free(st);
        return dk_fail(err, DK_ERR_ARG, "no model store: set DUCKLING_MODELS or HOME");
    }
    const char *env_ollama = getenv("OLLAMA_MODELS");
    if (ollama_root) {
        if (*ollama_root) st->ollama_root = dk_strdup(ollama_root);
    } else if (env_ollama && *env_ollama) {
        st->ollama_root = dk_strdup(env_ollama);
    } else {
        st->ollama_root = home_path(".ollama/models");
    }
    /* the same directory twice is one (writable) store */
    if (st->ollama_root) {
        char *a = realpath(st->root, NULL), *b = realpath(st->ollama_root, NULL);
        bool same = a && b && strcmp(a, b) == 0;
        free(a);
        free(b);
        if (same) {
            dk_free(st->ollama_root);
            st->ollama_root = NULL;
        }
    }
    *out = st;
    return DK_OK;
}

void store_free(store *st)
{
    if (!st) return;
    dk_free(st->root);
    dk_free(st->ollama_root);
    dk_free(st);
}

const char *store_root(const store *st) { return st->root; }
const char *store_ollama_root(const store *st) { return st->ollama_root; }

/* ------------------------------------------------------------------ files */

int store_mkdirs(const char *dir, char *err)
{
    char *p = dk_strdup(dir);
    if (!p) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int rc = dk_fail(err, DK_ERR_IO, "cannot create %s: %s", p, strerror(errno));
            dk_free(p);
            return rc;
        }
        *s = c;
        if (c == 0) break;
    }
    dk_free(p);
    return DK_OK;
}

/* ".NAME.tmp-XXXXXX" beside path: the leading dot keeps it out of listings. */
static char *temp_name_for(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n_dir = slash ? (size_t)(slash - path + 1) : 0;
    dk_buf b = {0};
    dk_buf_append(&b, path, n_dir);
    dk_buf_printf(&b, ".%s.tmp-XXXXXX", path + n_dir);
    return dk_buf_detach(&b);
}

static int dir_of(const char *path, char **out)
{
    const char *slash = strrchr(path, '/');
    *out = slash ? dk_strndup(path, (size_t)(slash - path)) : dk_strdup(".");
    return *out ? DK_OK : DK_ERR_NOMEM;
}

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int store_write_atomic(const char *path, const void *data, size_t n, char *err)
{
    char *dir = NULL;
    if (dir_of(path, &dir) != DK_OK) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = store_mkdirs(dir, err);
    dk_free(dir);
    if (rc != DK_OK) return rc;
    char *tmp = temp_name_for(path);
    if (!tmp) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot create a file beside %s: %s", path, strerror(errno));
        dk_free(tmp);
        return rc;
    }
    fchmod(fd, 0644);
    bool ok = write_all(fd, data, n) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        dk_free(tmp);
        return rc;
    }
    dk_free(tmp);
    return DK_OK;
}

static bool is_regular_file(const char *path, struct stat *st_out)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    if (st_out) *st_out = st;
    return true;
}

/* ------------------------------------------------------------------ digests */

int store_digest_parse(const char *digest, char hex[65], char *err)
{
    if (!digest || strncmp(digest, "sha256", 6) != 0 || (digest[6] != ':' && digest[6] != '-'))
        return dk_fail(err, DK_ERR_ARG, "invalid digest '%s' (expected sha256:<64 hex digits>)", digest ? digest : "");
    const char *h = digest + 7;
    for (int i = 0; i < 64; i++) {
        if (!isxdigit((unsigned char)h[i]))
            return dk_fail(err, DK_ERR_ARG, "invalid digest '%s' (expected sha256:<64 hex digits>)", digest);
        hex[i] = (char)tolower((unsigned char)h[i]);
    }
    if (h[64] != 0) return dk_fail(err, DK_ERR_ARG, "invalid digest '%s' (expected sha256:<64 hex digits>)", digest);
    hex[64] = 0;
    return DK_OK;
}

static void digest_format(const unsigned char md[32], char digest[72])
{
    static const char hexdigits[] = "0123456789abcdef";
    memcpy(digest, "sha256:", 7);
    for (int i = 0; i < 32; i++) {
        digest[7 + 2 * i] = hexdigits[md[i] >> 4];
        digest[8 + 2 * i] = hexdigits[md[i] & 15];
    }
    digest[71] = 0;
}

int store_sha256_bytes(const void *data, size_t n, char digest[72], char *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n_md = 0;
    if (!EVP_Digest(data, n, md, &n_md, EVP_sha256(), NULL) || n_md != 32)
        return dk_fail(err, DK_ERR_NOMEM, "sha256 failed");
    digest_format(md, digest);
    return DK_OK;
}

/* Hashes what a file descriptor reads to its end, counting the bytes. */
static int sha256_fd(int fd, const char *path, char digest[72], uint64_t *size_out, char *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = dk_malloc(1 << 20);
    int rc = DK_OK;
    if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t k = read(fd, buf, 1 << 20);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = dk_fail(err, DK_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (k == 0) break;
        EVP_DigestUpdate(ctx, buf, (size_t)k);
        total += (uint64_t)k;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n_md = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &n_md) || n_md != 32) {
        rc = dk_fail(err, DK_ERR_NOMEM, "sha256 failed");
        goto done;
    }
    digest_format(md, digest);
    if (size_out) *size_out = total;
done:
    EVP_MD_CTX_free(ctx);
    dk_free(buf);
    return rc;
}

int store_sha256_file(const char *path, char digest[72], uint64_t *size_out, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    int rc = sha256_fd(fd, path, digest, size_out, err);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------ blobs */

static char *blob_path_in(const char *root, const char *hex)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/blobs/sha256-%s", root, hex);
    return dk_buf_detach(&b);
}

char *store_blob_local_path(const store *st, const char *hex) { return blob_path_in(st->root, hex); }

int store_blob_path(store *st, const char *digest, char **path, char *err)
{
    *path = NULL;
    char hex[65];
    int rc = store_digest_parse(digest, hex, err);
    if (rc != DK_OK) return rc;
    const char *roots[2] = {st->root, st->ollama_root};
    for (int i = 0; i < 2; i++) {
        if (!roots[i]) continue;
        char *p = blob_path_in(roots[i], hex);
        if (!p) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        if (is_regular_file(p, NULL)) {
            *path = p;
            return DK_OK;
        }
        dk_free(p);
    }
    return dk_fail(err, DK_ERR_NOTFOUND, "blob sha256:%s not found", hex);
}

static int blobs_dir(const store *st, char **out, char *err)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/blobs", st->root);
    *out = dk_buf_detach(&b);
    if (!*out) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = store_mkdirs(*out, err);
    if (rc != DK_OK) {
        dk_free(*out);
        *out = NULL;
    }
    return rc;
}

int store_blob_put(store *st, const char *digest, const void *data, size_t n, char *err)
{
    char hex[65], actual[72];
    int rc = store_digest_parse(digest, hex, err);
    if (rc != DK_OK) return rc;
    rc = store_sha256_bytes(data, n, actual, err);
    if (rc != DK_OK) return rc;
    if (strcmp(actual + 7, hex) != 0)
        return dk_fail(err, DK_ERR_FORMAT, "digest mismatch: the data is %s, not sha256:%s", actual, hex);
    char *path = store_blob_local_path(st, hex);
    if (!path) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    struct stat sb;
    if (!is_regular_file(path, &sb) || (uint64_t)sb.st_size != n) rc = store_write_atomic(path, data, n, err);
    dk_free(path);
    return rc;
}

int store_blob_put_bytes(store *st, const void *data, size_t n, char digest_out[72], bool *existed, char *err)
{
    int rc = store_sha256_bytes(data, n, digest_out, err);
    if (rc != DK_OK) return rc;
    char *path = store_blob_local_path(st, digest_out + 7);
    if (!path) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    struct stat sb;
    bool there = is_regular_file(path, &sb) && (uint64_t)sb.st_size == n;
    if (existed) *existed = there;
    if (!there) rc = store_write_atomic(path, data, n, err);
    dk_free(path);
    return rc;
}

int store_blob_adopt(store *st, const char *tmp_path, char digest_out[72], char *err)
{
    int rc = store_sha256_file(tmp_path, digest_out, NULL, err);
    if (rc != DK_OK) return rc;
    char *path = store_blob_local_path(st, digest_out + 7);
    if (!path) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (is_regular_file(path, NULL)) {
        unlink(tmp_path);
    } else if (rename(tmp_path, path) != 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path, strerror(errno));
    }
    dk_free(path);
    return rc;
}

int store_blob_put_file(store *st, const char *path, char digest_out[72], char *err)
{
    char *dir = NULL, *tmp = NULL;
    int in = -1, out = -1;
    unsigned char *buf = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc = blobs_dir(st, &dir, err);
    if (rc != DK_OK) return rc;
    in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }
    dk_buf t = {0};
    dk_buf_printf(&t, "%s/.tmp-copy-XXXXXX", dir);
    tmp = dk_buf_detach(&t);
    buf = dk_malloc(1 << 20);
    ctx = EVP_MD_CTX_new();
    if (!tmp || !buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    out = mkstemp(tmp);
    if (out < 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot create a file in %s: %s", dir, strerror(errno));
        dk_free(tmp);
        tmp = NULL;
        goto done;
    }
    fchmod(out, 0644);
    for (;;) {
        ssize_t k = read(in, buf, 1 << 20);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = dk_fail(err, DK_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (k == 0) break;
        EVP_DigestUpdate(ctx, buf, (size_t)k);
        if (write_all(out, buf, (size_t)k) != 0) {
            rc = dk_fail(err, DK_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
            goto done;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n_md = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &n_md) || n_md != 32) {
        rc = dk_fail(err, DK_ERR_NOMEM, "sha256 failed");
        goto done;
    }
    char digest[72];
    digest_format(md, digest);
    int closed = close(out);
    out = -1;
    if (closed != 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    char *final_path = store_blob_local_path(st, digest + 7);
    if (!final_path) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!is_regular_file(final_path, NULL) && rename(tmp, final_path) != 0)
        rc = dk_fail(err, DK_ERR_IO, "cannot rename %s: %s", tmp, strerror(errno));
    dk_free(final_path);
    if (rc == DK_OK && digest_out) memcpy(digest_out, digest, 72);
done:
    if (out >= 0) close(out);
    if (in >= 0) close(in);
    if (tmp) unlink(tmp); /* gone already after a successful rename */
    dk_free(tmp);
    dk_free(buf);
    dk_free(dir);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------------------ manifests */

static int layer_parse(const json_t *j, const char *what, store_layer *out, char *err)
{
    const char *media = json_string_value(json_object_get(j, "mediaType"));
    const char *digest = json_string_value(json_object_get(j, "digest"));
    const json_t *size = json_object_get(j, "size");
    if (!json_is_object(j) || !media || !digest || !json_is_integer(size) || json_integer_value(size) < 0)
        return dk_fail(err, DK_ERR_FORMAT, "bad manifest: %s needs mediaType, digest and size", what);
    if (strlen(media) >= sizeof out->media_type) return dk_fail(err, DK_ERR_FORMAT, "bad manifest: media type too long");
    char hex[65];
    if (store_digest_parse(digest, hex, err) != DK_OK) return dk_fail(err, DK_ERR_FORMAT, "bad manifest: digest '%s'", digest);
    dk_strlcpy(out->media_type, media, sizeof out->media_type);
    snprintf(out->digest, sizeof out->digest, "sha256:%s", hex);
    out->size = (uint64_t)json_integer_value(size);
    return DK_OK;
}

int store_manifest_parse(const char *text, size_t n, store_manifest *out, char *err)
{
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *j = json_loadb(text, n, 0, &je);
    if (!j) return dk_fail(err, DK_ERR_FORMAT, "bad manifest: %s (line %d)", je.text, je.line);
    int rc = DK_OK;
    const json_t *layers = json_object_get(j, "layers");
    if (!json_is_object(j) || !json_is_array(layers)) {
        rc = dk_fail(err, DK_ERR_FORMAT, "bad manifest: no layers");
        goto done;
    }
    const json_t *version = json_object_get(j, "schemaVersion");
    if (version && (!json_is_integer(version) || json_integer_value(version) != 2)) {
        rc = dk_fail(err, DK_ERR_FORMAT, "bad manifest: schemaVersion is not 2");
        goto done;
    }
    rc = layer_parse(json_object_get(j, "config"), "config", &out->config, err);
    if (rc != DK_OK) goto done;
    size_t n_layers = json_array_size(layers);
    out->layers = dk_calloc(n_layers ? n_layers : 1, sizeof(store_layer));
    if (!out->layers) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_layers; i++) {
        rc = layer_parse(json_array_get(layers, i), "a layer", &out->layers[i], err);
        if (rc != DK_OK) goto done;
        out->n_layers++;
    }
done:
    json_decref(j);
    if (rc != DK_OK) store_manifest_free(out);
    return rc;
}

void store_manifest_free(store_manifest *m)
{
    if (!m) return;
    dk_free(m->layers);
    memset(m, 0, sizeof(*m));
}

static json_t *layer_json(const store_layer *l)
{
    return json_pack("{s:s, s:s, s:I}", "mediaType", l->media_type, "digest", l->digest, "size", (json_int_t)l->size);
}

char *store_manifest_dump(const store_manifest *m)
{
    json_t *layers = json_array();
    for (size_t i = 0; layers && i < m->n_layers; i++) json_array_append_new(layers, layer_json(&m->layers[i]));
    json_t *j = json_pack("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType", STORE_MEDIA_MANIFEST, "config",
                          layer_json(&m->config), "layers", layers);
    if (!j) return NULL;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) return NULL;
    char *copy = dk_strdup(text);
    free(text);
    return copy;
}

/* dir/component, or the entry of dir that equals component ignoring case. */
static char *path_child_ci(const char *dir, const char *component, char *actual, size_t n_actual)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/%s", dir, component);
    char *p = dk_buf_detach(&b);
    struct stat sb;
    if (!p || stat(p, &sb) == 0) {
        if (p) dk_strlcpy(actual, component, n_actual);
        return p;
    }
    dk_free(p);
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *found = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcasecmp(e->d_name, component) != 0) continue;
        dk_buf f = {0};
        dk_buf_printf(&f, "%s/%s", dir, e->d_name);
        found = dk_buf_detach(&f);
        if (found) dk_strlcpy(actual, e->d_name, n_actual);
        break;
    }
    closedir(d);
    return found;
}

int store_manifest_find(const char *root, const store_name *name, store_name *actual, char **path, char *err)
{
    *path = NULL;
    store_name got;
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/manifests", root);
    char *p = dk_buf_detach(&b);
    if (!p) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const char *parts[4] = {name->host, name->ns, name->model, name->tag};
    char *outs[4] = {got.host, got.ns, got.model, got.tag};
    size_t caps[4] = {sizeof got.host, sizeof got.ns, sizeof got.model, sizeof got.tag};
    for (int i = 0; i < 4 && p; i++) {
        char *next = path_child_ci(p, parts[i], outs[i], caps[i]);
        dk_free(p);
        p = next;
    }
    char shown[700];
    store_format_name(name, shown, sizeof shown);
    if (!p || !is_regular_file(p, NULL)) {
        dk_free(p);
        return dk_fail(err, DK_ERR_NOTFOUND, "model '%s' not found", shown);
    }
    if (actual) *actual = got;
    *path = p;
    return DK_OK;
}

char *store_manifest_write_path(const store *st, const store_name *name)
{
    char *path = NULL;
    char e[DK_ERRLEN];
    if (store_manifest_find(st->root, name, NULL, &path, e) == DK_OK) return path;
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/manifests/%s/%s/%s/%s", st->root, name->host, name->ns, name->model, name->tag);
    return dk_buf_detach(&b);
}

static int manifest_load_file(const char *path, store_manifest *out, char *digest, char *err)
{
    char *text = NULL;
    size_t n = 0;
    int rc = dk_file_read(path, STORE_MANIFEST_MAX_BYTES, &text, &n, err);
    if (rc != DK_OK) return rc;
    rc = store_manifest_parse(text, n, out, err);
    if (rc == DK_OK && digest) rc = store_sha256_bytes(text, n, digest, err);
    if (rc != DK_OK) store_manifest_free(out);
    dk_free(text);
    return rc;
}

int store_manifest_read(store *st, const store_name *name, store_manifest *out, char *err)
{
    char *path = NULL;
    int rc = store_manifest_find(st->root, name, NULL, &path, err);
    if (rc == DK_ERR_NOTFOUND && st->ollama_root) rc = store_manifest_find(st->ollama_root, name, NULL, &path, err);
    if (rc != DK_OK) return rc;
    rc = manifest_load_file(path, out, NULL, err);
    dk_free(path);
    return rc;
}

/* ------------------------------------------------------------------ walking manifests */

typedef int (*manifest_visit_fn)(void *user, const char *path, const store_name *name);

/* Calls visit for every manifests/HOST/NS/MODEL/TAG file under root whose parts are a valid
 * name (temporary files start with a dot and are skipped). A non-zero return stops the walk. */
static int manifest_walk(const char *root, manifest_visit_fn visit, void *user)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/manifests", root);
    if (b.failed) return DK_ERR_NOMEM;
    int rc = DK_OK;
    DIR *hosts = opendir(b.data);
    struct dirent *h, *n, *m, *t;
    while (rc == DK_OK && hosts && (h = readdir(hosts))) {
        if (h->d_name[0] == '.') continue;
        dk_buf hp = {0};
        dk_buf_printf(&hp, "%s/%s", b.data, h->d_name);
        DIR *nss = hp.failed ? NULL : opendir(hp.data);
        while (rc == DK_OK && nss && (n = readdir(nss))) {
            if (n->d_name[0] == '.') continue;
            dk_buf np = {0};
            dk_buf_printf(&np, "%s/%s", hp.data, n->d_name);
            DIR *models = np.failed ? NULL : opendir(np.data);
            while (rc == DK_OK && models && (m = readdir(models))) {
                if (m->d_name[0] == '.') continue;
                dk_buf mp = {0};
                dk_buf_printf(&mp, "%s/%s", np.data, m->d_name);
                DIR *tags = mp.failed ? NULL : opendir(mp.data);
                while (rc == DK_OK && tags && (t = readdir(tags))) {
                    if (t->d_name[0] == '.') continue;
                    dk_buf text = {0}, tp = {0};
                    dk_buf_printf(&text, "%s/%s/%s:%s", h->d_name, n->d_name, m->d_name, t->d_name);
                    dk_buf_printf(&tp, "%s/%s", mp.data, t->d_name);
                    store_name name;
                    char e[DK_ERRLEN];
                    if (!text.failed && !tp.failed && is_regular_file(tp.data, NULL) &&
                        store_parse_name(text.data, &name, e) == DK_OK && strcmp(name.host, h->d_name) == 0)
                        rc = visit(user, tp.data, &name);
                    dk_buf_free(&text);
                    dk_buf_free(&tp);
                }
                if (tags) closedir(tags);
                dk_buf_free(&mp);
            }
            if (models) closedir(models);
            dk_buf_free(&np);
        }
        if (nss) closedir(nss);
        dk_buf_free(&hp);
    }
    if (hosts) closedir(hosts);
    dk_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------ models */

static int read_text_blob(store *st, const char *digest, char **out, char *err)
{
    char *path = NULL;
    int rc = store_blob_path(st, digest, &path, err);
    if (rc != DK_OK) return rc;
    size_t n = 0;
    rc = dk_file_read(path, STORE_TEXT_MAX_BYTES, out, &n, err);
    dk_free(path);
    return rc;
}

static int read_json_blob(store *st, const char *digest, json_t **out, char *err)
{
    char *text = NULL;
    int rc = read_text_blob(st, digest, &text, err);
    if (rc != DK_OK) return rc;
    json_error_t je;
    *out = json_loads(text, 0, &je);
    dk_free(text);
    if (!*out) return dk_fail(err, DK_ERR_FORMAT, "blob %s is not JSON: %s", digest, je.text);
    return DK_OK;
}

static int append_text(char **dst, const char *more)
{
    if (!*dst) {
        *dst = dk_strdup(more);
        return *dst ? DK_OK : DK_ERR_NOMEM;
    }
    dk_buf b = {0};
    dk_buf_printf(&b, "%s\n\n%s", *dst, more);
    if (b.failed) return DK_ERR_NOMEM;
    dk_free(*dst);
    *dst = dk_buf_detach(&b);
    return DK_OK;
}

/* Fills m's layers from the manifest: the model file, the texts and the JSON layers. */
/* A JSON layer (params, messages) into *slot, replacing what a base gave; it must be of type
 * `type` (else DK_ERR_FORMAT with why_fmt, which takes the digest). */
static int read_json_layer(store *st, const char *digest, json_type type, const char *why_fmt, json_t **slot, char *err)
{
    json_t *j = NULL;
    int rc = read_json_blob(st, digest, &j, err);
    if (rc == DK_OK && json_typeof(j) != type) rc = dk_fail(err, DK_ERR_FORMAT, why_fmt, digest);
    if (rc != DK_OK) {
        json_decref(j);
        return rc;
    }
    json_decref(*slot);
    *slot = j;
    return DK_OK;
}

static int model_fill_layers(store *st, store_model *m, const store_manifest *mf, char *err)
{
    int rc = DK_OK;
    m->size = mf->config.size;
    /* the config is optional for reading (an old or foreign manifest may point at none) */
    json_t *config = NULL;
    char e[DK_ERRLEN];
    if (read_json_blob(st, mf->config.digest, &config, e) == DK_OK && json_is_object(config)) {
        m->config = config;
        const char *parent = json_string_value(json_object_get(config, "parent_model"));
        if (parent && *parent && !(m->parent = dk_strdup(parent))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    } else {
        json_decref(config);
    }
    for (size_t i = 0; i < mf->n_layers && rc == DK_OK; i++) {
        const store_layer *l = &mf->layers[i];
        m->size += l->size;
        char *text = NULL;
        if (strcmp(l->media_type, STORE_MEDIA_MODEL) == 0) {
            if (!m->gguf_path) {
                rc = store_blob_path(st, l->digest, &m->gguf_path, err);
                if (rc == DK_ERR_NOTFOUND)
                    rc = dk_fail(err, DK_ERR_IO, "model '%s': its model blob %s is missing", m->name, l->digest);
            }
        } else if (strcmp(l->media_type, STORE_MEDIA_TEMPLATE) == 0) {
            rc = read_text_blob(st, l->digest, &text, err);
            if (rc == DK_OK) {
                dk_free(m->template_text);
                m->template_text = text;
            }
        } else if (strcmp(l->media_type, STORE_MEDIA_SYSTEM) == 0) {
            rc = read_text_blob(st, l->digest, &text, err);
            if (rc == DK_OK) {
                dk_free(m->system);
                m->system = text;
            }
        } else if (strcmp(l->media_type, STORE_MEDIA_LICENSE) == 0) {
            rc = read_text_blob(st, l->digest, &text, err);
            if (rc == DK_OK && append_text(&m->license, text) != DK_OK) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            dk_free(text);
        } else if (strcmp(l->media_type, STORE_MEDIA_PARAMS) == 0) {
            rc = read_json_layer(st, l->digest, JSON_OBJECT, "params blob %s is not an object", &m->params, err);
        } else if (strcmp(l->media_type, STORE_MEDIA_MESSAGES) == 0) {
            rc = read_json_layer(st, l->digest, JSON_ARRAY, "messages blob %s is not an array", &m->messages, err);
        }
    }
    if (rc == DK_OK && !m->gguf_path)
        rc = dk_fail(err, DK_ERR_FORMAT, "model '%s' has no model layer", m->name);
    return rc;
}

static int model_from_manifest(store *st, const char *path, const store_name *name, bool read_only, store_model **out,
                               char *err)
{
    *out = NULL;
    store_model *m = dk_calloc(1, sizeof(*m));
    if (!m) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    char shown[700];
    store_format_name(name, shown, sizeof shown);
    m->name = dk_strdup(shown);
    m->read_only = read_only;
    struct stat sb;
    if (stat(path, &sb) == 0) m->modified = (int64_t)sb.st_mtime;
    store_manifest mf;
    int rc = m->name ? manifest_load_file(path, &mf, m->digest, err) : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) {
        rc = model_fill_layers(st, m, &mf, err);
        store_manifest_free(&mf);
    }
    if (rc != DK_OK) {
        store_model_free(m);
        return rc;
    }
    *out = m;
    return DK_OK;
}

static bool looks_like_path(const char *s)
{
    size_t n = strlen(s);
    return s[0] == '/' || strncmp(s, "./", 2) == 0 || strncmp(s, "../", 3) == 0 || strncmp(s, "~/", 2) == 0 ||
           (n > 5 && strcasecmp(s + n - 5, ".gguf") == 0);
}

/* A GGUF file as a model: its digest hashes the size and the first 64 KiB (cheap and stable). */
static int model_from_file(const char *path, store_model **out, char *err)
{
    *out = NULL;
    struct stat sb;
    if (!is_regular_file(path, &sb)) return dk_fail(err, DK_ERR_NOTFOUND, "model '%s' not found (no such file)", path);
    store_model *m = dk_calloc(1, sizeof(*m));
    if (!m) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    m->name = dk_strdup(path);
    m->gguf_path = dk_strdup(path);
    m->size = (uint64_t)sb.st_size;
    m->modified = (int64_t)sb.st_mtime;
    m->read_only = true;
    m->is_file = true;
    unsigned char *head = dk_malloc((64 << 10) + sizeof(uint64_t));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = DK_OK;
    if (!m->name || !m->gguf_path || !head) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else if (fd < 0) rc = dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (rc == DK_OK) {
        ssize_t k = pread(fd, head, 64 << 10, 0);
        if (k < 0) {
            rc = dk_fail(err, DK_ERR_IO, "cannot read %s: %s", path, strerror(errno));
        } else {
            uint64_t size = m->size;
            memcpy(head + k, &size, sizeof size);
            rc = store_sha256_bytes(head, (size_t)k + sizeof size, m->digest, err);
        }
    }
    if (fd >= 0) close(fd);
    dk_free(head);
    if (rc != DK_OK) {
        store_model_free(m);
        return rc;
    }
    *out = m;
    return DK_OK;
}

int store_resolve(store *st, const char *name_or_path, store_model **out, char *err)
{
    *out = NULL;
    if (!name_or_path || !*name_or_path) return dk_fail(err, DK_ERR_ARG, "empty model name");
    if (looks_like_path(name_or_path)) {
        if (strncmp(name_or_path, "~/", 2) != 0) return model_from_file(name_or_path, out, err);
        char *p = home_path(name_or_path + 2);
        if (!p) return dk_fail(err, DK_ERR_ARG, "HOME is not set");
        int rc = model_from_file(p, out, err);
        dk_free(p);
        return rc;
    }
    store_name name, actual;
    int rc = store_parse_name(name_or_path, &name, err);
    if (rc != DK_OK) {
        if (is_regular_file(name_or_path, NULL)) return model_from_file(name_or_path, out, err);
        return rc;
    }
    char *path = NULL;
    bool read_only = false;
    rc = store_manifest_find(st->root, &name, &actual, &path, err);
    if (rc == DK_ERR_NOTFOUND && st->ollama_root) {
        rc = store_manifest_find(st->ollama_root, &name, &actual, &path, err);
        read_only = true;
    }
    if (rc == DK_ERR_NOTFOUND && is_regular_file(name_or_path, NULL)) return model_from_file(name_or_path, out, err);
    if (rc != DK_OK) return rc;
    rc = model_from_manifest(st, path, &actual, read_only, out, err);
    dk_free(path);
    return rc;
}

void store_model_free(store_model *m)
{
    if (!m) return;
    dk_free(m->name);
    dk_free(m->gguf_path);
    dk_free(m->template_text);
    dk_free(m->system);
    dk_free(m->license);
    json_decref(m->params);
    json_decref(m->messages);
    json_decref(m->config);
    dk_free(m->parent);
    dk_free(m);
}

/* ------------------------------------------------------------------ list */

typedef struct list_ctx {
    store *st;
    store_model **models;
    size_t n, cap;
    bool read_only;
    int rc;
} list_ctx;

static bool list_has(const list_ctx *lc, const char *name)
{
    for (size_t i = 0; i < lc->n; i++)
        if (strcasecmp(lc->models[i]->name, name) == 0) return true;
    return false;
}

static int list_visit(void *user, const char *path, const store_name *name)
{
    list_ctx *lc = user;
    char shown[700], e[DK_ERRLEN];
    store_format_name(name, shown, sizeof shown);
    if (list_has(lc, shown)) return DK_OK;
    store_model *m = NULL;
    /* a manifest that cannot be read (a blob missing, a stray file) is left out of the list */
    if (model_from_manifest(lc->st, path, name, lc->read_only, &m, e) != DK_OK) return DK_OK;
    if (lc->n == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 16;
        store_model **grown = dk_realloc(lc->models, cap * sizeof(*grown));
        if (!grown) {
            store_model_free(m);
            return DK_ERR_NOMEM;
        }
        lc->models = grown;
        lc->cap = cap;
    }
    lc->models[lc->n++] = m;
    return DK_OK;
}

static int model_cmp(const void *a, const void *b)
{
    return strcasecmp((*(store_model *const *)a)->name, (*(store_model *const *)b)->name);
}

int store_list(store *st, store_model ***out, size_t *n_out, char *err)
{
    *out = NULL;
    *n_out = 0;
    list_ctx lc = {.st = st};
    int rc = manifest_walk(st->root, list_visit, &lc);
    if (rc == DK_OK && st->ollama_root) {
        lc.read_only = true;
        rc = manifest_walk(st->ollama_root, list_visit, &lc);
    }
    if (rc != DK_OK) {
        for (size_t i = 0; i < lc.n; i++) store_model_free(lc.models[i]);
        dk_free(lc.models);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (lc.n > 1) qsort(lc.models, lc.n, sizeof(*lc.models), model_cmp);
    *out = lc.models;
    *n_out = lc.n;
    return DK_OK;
}

/* ------------------------------------------------------------------ remove, copy */

typedef struct collect_ctx {
    const store_manifest *old;
    bool *used; /* per digest of old: config, then layers */
} collect_ctx;

static int collect_visit(void *user, const char *path, const store_name *name)
{
    (void)name;
    collect_ctx *cc = user;
    store_manifest m;
    char e[DK_ERRLEN];
    if (manifest_load_file(path, &m, NULL, e) != DK_OK) return DK_OK;
    for (size_t i = 0; i <= cc->old->n_layers; i++) {
        const char *d = i == 0 ? cc->old->config.digest : cc->old->layers[i - 1].digest;
        if (strcmp(m.config.digest, d) == 0) cc->used[i] = true;
        for (size_t k = 0; k < m.n_layers && !cc->used[i]; k++)
            if (strcmp(m.layers[k].digest, d) == 0) cc->used[i] = true;
    }
    store_manifest_free(&m);
    return DK_OK;
}

void store_blobs_collect(store *st, const store_manifest *old)
{
    collect_ctx cc = {.old = old, .used = dk_calloc(old->n_layers + 1, sizeof(bool))};
    /* when in doubt (no memory, an unreadable store), keep every blob */
    if (!cc.used || manifest_walk(st->root, collect_visit, &cc) != DK_OK) {
        dk_free(cc.used);
        return;
    }
    for (size_t i = 0; i <= old->n_layers; i++) {
        if (cc.used[i]) continue;
        const char *d = i == 0 ? old->config.digest : old->layers[i - 1].digest;
        char *p = store_blob_local_path(st, d + 7);
        if (p) unlink(p);
        dk_free(p);
    }
    dk_free(cc.used);
}

/* Removes dir and its parents up to (not including) stop while they are empty. */
static void remove_empty_dirs(char *path, const char *stop)
{
    size_t n_stop = strlen(stop);
    for (;;) {
        char *slash = strrchr(path, '/');
        if (!slash || (size_t)(slash - path) <= n_stop) return;
        *slash = 0;
        if (rmdir(path) != 0) return;
    }
}

int store_remove(store *st, const char *name_text, char *err)
{
    store_name name;
    int rc = store_parse_name(name_text, &name, err);
    if (rc != DK_OK) return rc;
    char *path = NULL;
    rc = store_manifest_find(st->root, &name, NULL, &path, err);
    if (rc == DK_ERR_NOTFOUND && st->ollama_root) {
        char *other = NULL;
        char e[DK_ERRLEN];
        if (store_manifest_find(st->ollama_root, &name, NULL, &other, e) == DK_OK) {
            dk_free(other);
            return dk_fail(err, DK_ERR_UNSUPPORTED, "model '%s' is in the Ollama store, which duckling does not change",
                           name_text);
        }
    }
    if (rc != DK_OK) return rc;
    store_manifest old;
    bool have_old = manifest_load_file(path, &old, NULL, err) == DK_OK;
    if (unlink(path) != 0) {
        rc = dk_fail(err, DK_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    } else {
        dk_buf top = {0};
        dk_buf_printf(&top, "%s/manifests", st->root);
        if (!top.failed) remove_empty_dirs(path, top.data);
        dk_buf_free(&top);
        if (have_old) store_blobs_collect(st, &old);
    }
    if (have_old) store_manifest_free(&old);
    dk_free(path);
    return rc;
}

int store_copy(store *st, const char *source, const char *destination, char *err)
{
    store_name src, dst;
    int rc = store_parse_name(source, &src, err);
    if (rc == DK_OK) rc = store_parse_name(destination, &dst, err);
    if (rc != DK_OK) return rc;
    char *path = NULL;
    rc = store_manifest_find(st->root, &src, NULL, &path, err);
    if (rc == DK_ERR_NOTFOUND && st->ollama_root) rc = store_manifest_find(st->ollama_root, &src, NULL, &path, err);
    if (rc != DK_OK) return rc;
    char *text = NULL;
    size_t n = 0;
    rc = dk_file_read(path, STORE_MANIFEST_MAX_BYTES, &text, &n, err);
    dk_free(path);
    if (rc != DK_OK) return rc;
    store_manifest check;
    rc = store_manifest_parse(text, n, &check, err);
    if (rc == DK_OK) {
        store_manifest_free(&check);
        char *dst_path = store_manifest_write_path(st, &dst);
        rc = dst_path ? store_write_atomic(dst_path, text, n, err) : dk_fail(err, DK_ERR_NOMEM, "out of memory");
        dk_free(dst_path);
    }
    dk_free(text);
    return rc;
}

/* ------------------------------------------------------------------ GGUF facts */

static void human_count(uint64_t n, char *buf, size_t cap)
{
    /* Ollama's format.HumanNumber */
    if (n >= 1000000000ull) {
        double v = (double)n / 1e9;
        snprintf(buf, cap, v == (double)(uint64_t)v ? "%.0fB" : "%.1fB", v);
    } else if (n >= 1000000ull) {
        double v = (double)n / 1e6;
        snprintf(buf, cap, v == (double)(uint64_t)v ? "%.0fM" : "%.2fM", v);
    } else if (n >= 1000ull) {
        snprintf(buf, cap, "%.0fK", (double)n / 1e3);
    } else {
        snprintf(buf, cap, "%llu", (unsigned long long)n);
    }
}

int store_gguf_info_read(const char *path, store_gguf_info *out, char *err)
{
    memset(out, 0, sizeof(*out));
    gguf_file *f = NULL;
    int rc = gguf_open(&f, path, err);
    if (rc != DK_OK) return rc;
    rc = store_gguf_info_of(f, out, err);
    gguf_close(f);
    return rc;
}

int store_gguf_info_of(const gguf_file *f, store_gguf_info *out, char *err)
{
    memset(out, 0, sizeof(*out));
    int rc = DK_OK;
    gguf_str arch = {0};
    if (gguf_get_str(f, "general.architecture", &arch) == DK_OK && arch.len < sizeof out->arch) {
        memcpy(out->arch, arch.ptr, arch.len);
        out->arch[arch.len] = 0;
    }
    size_t n_by_type[GGUF_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_get_tensor(f, i);
        out->n_params += (uint64_t)t->n_elements;
        if (t->n_dims >= 2 && (int)t->type < GGUF_TYPE_COUNT) n_by_type[t->type]++;
    }
    uint64_t declared = 0;
    if (gguf_get_u64(f, "general.parameter_count", &declared) == DK_OK && declared > 0) out->n_params = declared;
    human_count(out->n_params, out->parameter_size, sizeof out->parameter_size);
    uint32_t ftype = 0;
    const char *ftype_name = gguf_get_u32(f, "general.file_type", &ftype) == DK_OK ? convert_ftype_name((int)ftype) : NULL;
    if (!ftype_name) {
        int best = -1;
        for (int t = 0; t < GGUF_TYPE_COUNT; t++)
            if (n_by_type[t] && (best < 0 || n_by_type[t] > n_by_type[best])) best = t;
        if (best >= 0) ftype_name = gguf_type_name((enum gguf_tensor_type)best);
    }
    if (ftype_name) dk_strlcpy(out->file_type, ftype_name, sizeof out->file_type);
    char key[128];
    snprintf(key, sizeof key, "%s.context_length", out->arch);
    if (gguf_get_u64(f, key, &out->context_length) != DK_OK) out->context_length = 0;
    snprintf(key, sizeof key, "%s.embedding_length", out->arch);
    if (gguf_get_u64(f, key, &out->embedding_length) != DK_OK) out->embedding_length = 0;
    snprintf(key, sizeof key, "%s.pooling_type", out->arch);
    out->embedding = strcmp(out->arch, "bert") == 0 || strcmp(out->arch, "nomic-bert") == 0 || gguf_find_key(f, key) >= 0;
    gguf_str tmpl = {0};
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl) == DK_OK) {
        out->chat_template = dk_strndup(tmpl.ptr, tmpl.len);
        if (!out->chat_template) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return rc;
}

void store_gguf_info_free(store_gguf_info *info)
{
    if (!info) return;
    dk_free(info->chat_template);
    info->chat_template = NULL;
}
