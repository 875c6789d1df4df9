/*
 * test_store.c: the model store (suite `store`): names, blobs, creating models from the kit's
 * stories260K GGUF with a Modelfile and reading them back, list/cp/rm with blob collection,
 * an Ollama store read in place, Modelfile errors with their line numbers, /api/create
 * requests, and pulls from a registry stand-in (libmicrohttpd on 127.0.0.1, started here)
 * that can redirect, cut a download in the middle, send corrupt bytes or answer 404. Then
 * the store commands through the built binary (DUCKLING_BIN), each against its own store.
 */
#include "test.h"

#include <dirent.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/base.h"
#include "store/store.h"


#define STORIES "forward/stories260K/stories260K.F32.gguf"

/* ------------------------------------------------------------------ helpers */

/* A fresh directory under the test run's temporary directory. */
static const char *fresh_dir(char *buf, size_t n, const char *name)
{
    static int counter;
    snprintf(buf, n, "%s/store-%s-%d", test_tmpdir(), name, ++counter);
    mkdir(buf, 0755);
    return buf;
}

static void sha256_of(const void *data, size_t n, char digest[72])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n_md = 0;
    EVP_Digest(data, n, md, &n_md, EVP_sha256(), NULL);
    strcpy(digest, "sha256:");
    for (int i = 0; i < 32; i++) snprintf(digest + 7 + 2 * i, 3, "%02x", md[i]);
}

static int file_sha256(const char *path, char digest[72], size_t *size)
{
    char *data = NULL, e[DK_ERRLEN];
    size_t n = 0;
    if (dk_file_read(path, 1u << 30, &data, &n, e) != DK_OK) return -1;
    sha256_of(data, n, digest);
    if (size) *size = n;
    dk_free(data);
    return 0;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Number of entries of dir/blobs named sha256-<64 hex> (complete blobs). */
static int count_blobs(const char *root)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/blobs", root);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, "sha256-", 7) == 0 && strlen(e->d_name) == 71;
    closedir(d);
    return n;
}

static bool kit_model(char *path, size_t n)
{
    test_kit_file(path, n, STORIES);
    if (!file_exists(path)) {
        test_fail_at(__FILE__, __LINE__, "kit model %s missing (set DUCKLING_KIT)", path);
        return false;
    }
    return true;
}

typedef struct status_log {
    char statuses[64][96];
    int n;
    int cancel_at_pulling; /* 1: cancel at the first "pulling <hex>" */
} status_log;

static int log_status(void *user, const char *status, const char *digest, uint64_t total, uint64_t completed)
{
    (void)digest;
    (void)completed;
    status_log *log = user;
    if (log->n < 64 && (log->n == 0 || strcmp(log->statuses[log->n - 1], status) != 0))
        snprintf(log->statuses[log->n++], sizeof log->statuses[0], "%s", status);
    if (log->cancel_at_pulling && strncmp(status, "pulling ", 8) == 0 && strcmp(status, "pulling manifest") != 0 && total)
        return 1;
    return 0;
}

static bool log_has(const status_log *log, const char *prefix)
{
    for (int i = 0; i < log->n; i++)
        if (strncmp(log->statuses[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

static const char full_modelfile_fmt[] =
    "# a tiny model\n"
    "FROM %s\n"
    "parameter temperature 0.5\n"
    "PARAMETER num_ctx 256\n"
    "PARAMETER stop \"<|end|>\"\n"
    "PARAMETER stop User:\n"
    "PARAMETER use_mmap false\n"
    "TEMPLATE \"\"\"{%% for m in messages %%}{{ m.role }}: {{ m.content }}\n"
    "{%% endfor %%}\"\"\"\n"
    "SYSTEM \"You are \\\"tiny\\\".\"\n"
    "MESSAGE user Hello there\n"
    "MESSAGE assistant \"\"\"Hi!\n"
    "How can I help?\"\"\"\n"
    "LICENSE MIT\n"
    "license \"\"\"Second\n"
    "license\"\"\"\n";

/* Creates name in st from the kit model with the Modelfile above. */
static int create_full(store *st, const char *name, char *err)
{
    char model[1024];
    if (!kit_model(model, sizeof model)) return DK_ERR_IO;
    char text[4096];
    snprintf(text, sizeof text, full_modelfile_fmt, model);
    store_modelfile mf;
    int rc = store_modelfile_parse(text, &mf, err);
    if (rc != DK_OK) return rc;
    rc = store_create(st, name, &mf, NULL, err);
    store_modelfile_free(&mf);
    return rc;
}

static int create_plain(store *st, const char *name, char *err)
{
    char model[1024];
    if (!kit_model(model, sizeof model)) return DK_ERR_IO;
    store_modelfile mf = {.from = model};
    return store_create(st, name, &mf, NULL, err);
}

/* ------------------------------------------------------------------ names */

TEST(store, names_parse_and_format)
{
    char e[DK_ERRLEN], buf[800];
    store_name n;
    REQUIRE(store_parse_name("qwen2.5:0.5b", &n, e) == DK_OK);
    CHECK_EQ_STR(n.host, "registry.ollama.ai");
    CHECK_EQ_STR(n.ns, "library");
    CHECK_EQ_STR(n.model, "qwen2.5");
    CHECK_EQ_STR(n.tag, "0.5b");
    store_format_name(&n, buf, sizeof buf);
    CHECK_EQ_STR(buf, "qwen2.5:0.5b");

    REQUIRE(store_parse_name("llama3.2", &n, e) == DK_OK);
    CHECK_EQ_STR(n.tag, "latest");
    store_format_name(&n, buf, sizeof buf);
    CHECK_EQ_STR(buf, "llama3.2:latest");

    REQUIRE(store_parse_name("user/my-model_1", &n, e) == DK_OK);
    CHECK_EQ_STR(n.ns, "user");
    CHECK_EQ_STR(n.model, "my-model_1");
    store_format_name(&n, buf, sizeof buf);
    CHECK_EQ_STR(buf, "user/my-model_1:latest");

    REQUIRE(store_parse_name("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", &n, e) == DK_OK);
    CHECK_EQ_STR(n.host, "hf.co");
    CHECK_EQ_STR(n.ns, "bartowski");
    CHECK_EQ_STR(n.model, "Llama-3.2-1B-Instruct-GGUF");
    CHECK_EQ_STR(n.tag, "Q4_K_M");
    store_format_name(&n, buf, sizeof buf);
    CHECK_EQ_STR(buf, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M");

    REQUIRE(store_parse_name("127.0.0.1:5000/library/tiny:latest", &n, e) == DK_OK);
    CHECK_EQ_STR(n.host, "127.0.0.1:5000");
    CHECK_EQ_STR(n.model, "tiny");
    store_format_name(&n, buf, sizeof buf);
    CHECK_EQ_STR(buf, "127.0.0.1:5000/library/tiny:latest");

    /* HOST/MODEL when the first part looks like a host */
    REQUIRE(store_parse_name("example.com/tiny", &n, e) == DK_OK);
    CHECK_EQ_STR(n.host, "example.com");
    CHECK_EQ_STR(n.ns, "library");

    const char *bad[] = {"", ":tag", "model:", "a//b", "../x", "a/b/c/d", "model:ta g", ".hidden", "a/.b:c",
                         "x:y:z", "sp ace", "a/b/", "/abs", "model:-tag", "ns/../m", "m\nx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = store_parse_name(bad[i], &n, e);
        CHECK_MSG(rc == DK_ERR_ARG, "'%s' should be invalid (got %d)", bad[i], rc);
        if (rc == DK_ERR_ARG) CHECK(strstr(e, "invalid model name") != NULL);
    }
    char long_name[300];
    memset(long_name, 'a', 200);
    long_name[200] = 0;
    CHECK_EQ_INT(store_parse_name(long_name, &n, e), DK_ERR_ARG);
}

/* ------------------------------------------------------------------ blobs */

TEST(store, blob_put_checks_the_digest)
{
    char root[512], e[DK_ERRLEN];
    fresh_dir(root, sizeof root, "blobs");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    CHECK_EQ_STR(store_root(st), root);
    const char data[] = "hello blob";
    char digest[72];
    sha256_of(data, strlen(data), digest);

    char wrong[72];
    sha256_of("other", 5, wrong);
    CHECK_EQ_INT(store_blob_put(st, wrong, data, strlen(data), e), DK_ERR_FORMAT);
    CHECK(strstr(e, "mismatch") != NULL);
    CHECK_EQ_INT(count_blobs(root), 0);
    CHECK_EQ_INT(store_blob_put(st, "sha256:1234", data, strlen(data), e), DK_ERR_ARG);
    CHECK_EQ_INT(store_blob_put(st, "md5:abcd", data, strlen(data), e), DK_ERR_ARG);
    char *path = NULL;
    CHECK_EQ_INT(store_blob_path(st, digest, &path, e), DK_ERR_NOTFOUND);
    CHECK_EQ_INT(store_blob_path(st, "sha256:../../etc/passwd", &path, e), DK_ERR_ARG);

    REQUIRE(store_blob_put(st, digest, data, strlen(data), e) == DK_OK);
    REQUIRE(store_blob_path(st, digest, &path, e) == DK_OK);
    char *back = NULL;
    size_t n = 0;
    REQUIRE(dk_file_read(path, 1024, &back, &n, e) == DK_OK);
    CHECK(n == strlen(data) && memcmp(back, data, n) == 0);
    CHECK(strstr(path, digest + 7) != NULL);
    dk_free(back);
    dk_free(path);
    /* the other spelling and upper-case hex name the same blob; putting it twice is fine */
    char dash[72];
    snprintf(dash, sizeof dash, "sha256-%s", digest + 7);
    for (char *p = dash + 7; *p; p++) *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
    REQUIRE(store_blob_path(st, dash, &path, e) == DK_OK);
    dk_free(path);
    CHECK_EQ_INT(store_blob_put(st, digest, data, strlen(data), e), DK_OK);
    CHECK_EQ_INT(count_blobs(root), 1);

    /* from a file */
    char model[1024], file_digest[72], put_digest[72];
    if (kit_model(model, sizeof model)) {
        REQUIRE(file_sha256(model, file_digest, NULL) == 0);
        REQUIRE(store_blob_put_file(st, model, put_digest, e) == DK_OK);
        CHECK_EQ_STR(put_digest, file_digest);
        REQUIRE(store_blob_path(st, put_digest, &path, e) == DK_OK);
        CHECK_EQ_INT(file_size(path), file_size(model));
        dk_free(path);
    }
    CHECK_EQ_INT(store_blob_put_file(st, "/nonexistent/file.gguf", put_digest, e), DK_ERR_IO);
    store_free(st);
}

/* ------------------------------------------------------------------ create and read back */

TEST(store, create_from_gguf_and_read_back)
{
    char root[512], e[DK_ERRLEN], model[1024];
    if (!kit_model(model, sizeof model)) return;
    fresh_dir(root, sizeof root, "create");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    REQUIRE_MSG(create_full(st, "tiny", e) == DK_OK, "%s", e);

    store_model *m = NULL;
    REQUIRE_MSG(store_resolve(st, "tiny", &m, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(m->name, "tiny:latest");
    CHECK(!m->read_only && !m->is_file);
    CHECK(m->parent == NULL);
    char want[72], got[72];
    size_t model_bytes = 0;
    REQUIRE(file_sha256(model, want, &model_bytes) == 0);
    REQUIRE(m->gguf_path && file_sha256(m->gguf_path, got, NULL) == 0);
    CHECK_EQ_STR(got, want);
    CHECK(strncmp(m->gguf_path, root, strlen(root)) == 0);
    CHECK_EQ_STR(m->template_text, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
    CHECK_EQ_STR(m->system, "You are \"tiny\".");
    CHECK_EQ_STR(m->license, "MIT\n\nSecond\nlicense");
    REQUIRE(json_is_object(m->params));
    CHECK(json_is_real(json_object_get(m->params, "temperature")));
    CHECK_NEAR(json_real_value(json_object_get(m->params, "temperature")), 0.5, 1e-12);
    CHECK(json_is_integer(json_object_get(m->params, "num_ctx")));
    CHECK_EQ_INT(json_integer_value(json_object_get(m->params, "num_ctx")), 256);
    CHECK(json_is_false(json_object_get(m->params, "use_mmap")));
    const json_t *stop = json_object_get(m->params, "stop");
    REQUIRE(json_array_size(stop) == 2);
    CHECK_EQ_STR(json_string_value(json_array_get(stop, 0)), "<|end|>");
    CHECK_EQ_STR(json_string_value(json_array_get(stop, 1)), "User:");
    REQUIRE(json_array_size(m->messages) == 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(m->messages, 1), "role")), "assistant");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(m->messages, 1), "content")), "Hi!\nHow can I help?");
    REQUIRE(json_is_object(m->config));
    CHECK_EQ_STR(json_string_value(json_object_get(m->config, "model_format")), "gguf");
    CHECK_EQ_STR(json_string_value(json_object_get(m->config, "model_family")), "llama");
    CHECK_EQ_STR(json_string_value(json_object_get(m->config, "file_type")), "F32");
    CHECK(m->size > model_bytes && m->size < model_bytes + 4096);
    CHECK(m->modified > (int64_t)time(NULL) - 600);
    CHECK(strncmp(m->digest, "sha256:", 7) == 0 && strlen(m->digest) == 71);

    /* the Modelfile text parses back into the same model */
    char *text = store_modelfile_text(m);
    REQUIRE(text);
    CHECK(strstr(text, "FROM ") != NULL);
    store_modelfile back;
    REQUIRE_MSG(store_modelfile_parse(text, &back, e) == DK_OK, "%s\n%s", e, text);
    CHECK_EQ_STR(back.from, m->gguf_path);
    CHECK_EQ_STR(back.template_text, m->template_text);
    CHECK_EQ_STR(back.system, m->system);
    CHECK_EQ_STR(back.license, m->license);
    CHECK(json_equal(back.params, m->params));
    CHECK(json_equal(back.messages, m->messages));
    /* and creating from it (FROM is the blob itself: reused, not copied) gives the same layers */
    int n_blobs = count_blobs(root);
    REQUIRE_MSG(store_create(st, "again", &back, NULL, e) == DK_OK, "%s", e);
    CHECK_EQ_INT(count_blobs(root), n_blobs);
    store_modelfile_free(&back);
    dk_free(text);

    /* FROM a store model: layers reused, parameters merged, system replaced */
    status_log log = {0};
    store_modelfile mf2;
    REQUIRE(store_modelfile_parse("FROM tiny\nPARAMETER temperature 0.9\nSYSTEM Be brief.\n", &mf2, e) == DK_OK);
    store_create_params cp = {.progress = log_status, .user = &log};
    REQUIRE_MSG(store_create(st, "tiny-brief:v1", &mf2, &cp, e) == DK_OK, "%s", e);
    store_modelfile_free(&mf2);
    CHECK(log.n > 0 && strcmp(log.statuses[log.n - 1], "success") == 0);
    CHECK(log_has(&log, "writing manifest") && log_has(&log, "using existing layer sha256:"));
    store_model *d = NULL;
    REQUIRE_MSG(store_resolve(st, "tiny-brief:v1", &d, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(d->gguf_path, m->gguf_path);
    CHECK_EQ_STR(d->system, "Be brief.");
    CHECK_EQ_STR(d->template_text, m->template_text);
    CHECK_EQ_STR(d->parent, "tiny:latest");
    CHECK_NEAR(json_real_value(json_object_get(d->params, "temperature")), 0.9, 1e-12);
    CHECK_EQ_INT(json_array_size(json_object_get(d->params, "stop")), 2);
    CHECK_EQ_INT(json_array_size(d->messages), 2);
    store_model_free(d);

    /* quantized into a new blob */
    store_modelfile mf3 = {.from = (char *)"tiny"};
    store_create_params q = {.quantize = "q8_0"};
    REQUIRE_MSG(store_create(st, "tiny-q8", &mf3, &q, e) == DK_OK, "%s", e);
    REQUIRE(store_resolve(st, "tiny-q8", &d, e) == DK_OK);
    CHECK(strcmp(d->gguf_path, m->gguf_path) != 0);
    store_gguf_info info;
    REQUIRE_MSG(store_gguf_info_read(d->gguf_path, &info, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(info.file_type, "Q8_0");
    CHECK_EQ_STR(info.arch, "llama");
    CHECK(info.n_params > 200000 && info.n_params < 400000);
    store_gguf_info_free(&info);
    CHECK_EQ_STR(json_string_value(json_object_get(d->config, "file_type")), "Q8_0");
    store_model_free(d);
    store_create_params bad_q = {.quantize = "q9_9"};
    CHECK_EQ_INT(store_create(st, "tiny-q9", &mf3, &bad_q, e), DK_ERR_ARG);

    /* bad inputs */
    store_modelfile none = {.from = (char *)"no-such-model"};
    CHECK_EQ_INT(store_create(st, "x", &none, NULL, e), DK_ERR_NOTFOUND);
    store_modelfile notgguf = {.from = (char *)"/etc/hostname"};
    CHECK(store_create(st, "x", &notgguf, NULL, e) != DK_OK);
    CHECK_EQ_INT(store_create(st, "bad name!", &mf3, NULL, e), DK_ERR_ARG);
    CHECK_EQ_INT(store_resolve(st, "x", &d, e), DK_ERR_NOTFOUND);

    /* a path resolves to the file itself */
    REQUIRE(store_resolve(st, model, &d, e) == DK_OK);
    CHECK(d->is_file && d->read_only);
    CHECK_EQ_STR(d->gguf_path, model);
    CHECK_EQ_INT(d->size, model_bytes);
    store_model_free(d);
    CHECK_EQ_INT(store_resolve(st, "/nonexistent/model.gguf", &d, e), DK_ERR_NOTFOUND);
    store_model_free(m);
    store_free(st);
}

/* ------------------------------------------------------------------ list, cp, rm */

TEST(store, list_copy_remove_collects_blobs)
{
    char root[512], e[DK_ERRLEN];
    fresh_dir(root, sizeof root, "gc");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    REQUIRE_MSG(create_full(st, "a", e) == DK_OK, "%s", e);
    int n_blobs = count_blobs(root);
    CHECK(n_blobs >= 7); /* model, template, system, params, messages, license, config */
    REQUIRE(store_copy(st, "a", "ns/b:v2", e) == DK_OK);
    CHECK_EQ_INT(store_copy(st, "nothere", "c", e), DK_ERR_NOTFOUND);
    CHECK_EQ_INT(store_copy(st, "a", "bad name", e), DK_ERR_ARG);
    REQUIRE_MSG(create_plain(st, "plain", e) == DK_OK, "%s", e);

    store_model **models = NULL;
    size_t n = 0;
    REQUIRE(store_list(st, &models, &n, e) == DK_OK);
    REQUIRE(n == 3);
    CHECK_EQ_STR(models[0]->name, "a:latest");
    CHECK_EQ_STR(models[1]->name, "ns/b:v2");
    CHECK_EQ_STR(models[2]->name, "plain:latest");
    CHECK_EQ_STR(models[0]->digest, models[1]->digest);
    CHECK(models[2]->template_text == NULL && models[2]->params == NULL);
    CHECK_EQ_STR(models[0]->gguf_path, models[2]->gguf_path); /* the same GGUF blob */
    for (size_t i = 0; i < n; i++) store_model_free(models[i]);
    dk_free(models);

    /* removing a shares-everything copy frees nothing; the last user frees its blobs */
    REQUIRE(store_remove(st, "a", e) == DK_OK);
    CHECK_EQ_INT(count_blobs(root), n_blobs + 1); /* + plain's config */
    CHECK_EQ_INT(store_remove(st, "a", e), DK_ERR_NOTFOUND);
    store_model *m = NULL;
    CHECK_EQ_INT(store_resolve(st, "a", &m, e), DK_ERR_NOTFOUND);
    REQUIRE(store_remove(st, "NS/B:V2", e) == DK_OK); /* names are case-insensitive */
    CHECK_EQ_INT(count_blobs(root), 2);              /* plain's model and config */
    REQUIRE(store_resolve(st, "plain", &m, e) == DK_OK);
    CHECK(file_exists(m->gguf_path));
    store_model_free(m);
    REQUIRE(store_remove(st, "plain", e) == DK_OK);
    CHECK_EQ_INT(count_blobs(root), 0);
    REQUIRE(store_list(st, &models, &n, e) == DK_OK);
    CHECK_EQ_INT(n, 0);
    dk_free(models);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/manifests/registry.ollama.ai", root);
    CHECK(!file_exists(dir)); /* empty directories go too */
    CHECK_EQ_INT(store_remove(st, "bad name", e), DK_ERR_ARG);
    store_free(st);
}

/* ------------------------------------------------------------------ an Ollama store in place */

static void write_blob(const char *root, const void *data, size_t n, char digest[72])
{
    char path[1024], e[DK_ERRLEN];
    sha256_of(data, n, digest);
    snprintf(path, sizeof path, "%s/blobs", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/blobs/sha256-%s", root, digest + 7);
    if (dk_file_write(path, data, n, e) != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", e);
}

/* Lays out root as Ollama does: blobs and manifests/registry.ollama.ai/library/NAME/latest. */
static bool make_ollama_store(const char *root, const char *name, char model_digest[72])
{
    char model[1024], e[DK_ERRLEN];
    if (!kit_model(model, sizeof model)) return false;
    char *gguf = NULL;
    size_t n_gguf = 0;
    if (dk_file_read(model, 1u << 30, &gguf, &n_gguf, e) != DK_OK) return false;
    char tmpl[72], params[72], config[72];
    write_blob(root, gguf, n_gguf, model_digest);
    dk_free(gguf);
    const char *t = "{{ .System }} {{ .Prompt }}";
    const char *p = "{\"stop\":[\"<|x|>\"],\"temperature\":0.3}";
    const char *c = "{\"model_format\":\"gguf\",\"model_family\":\"llama\",\"model_families\":[\"llama\"],"
                    "\"model_type\":\"293K\",\"file_type\":\"F32\"}";
    write_blob(root, t, strlen(t), tmpl);
    write_blob(root, p, strlen(p), params);
    write_blob(root, c, strlen(c), config);
    char manifest[2048], path[1024];
    snprintf(manifest, sizeof manifest,
             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
             "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
             "\"layers\":[{\"mediaType\":\"application/vnd.ollama.image.model\",\"digest\":\"%s\",\"size\":%zu},"
             "{\"mediaType\":\"application/vnd.ollama.image.template\",\"digest\":\"%s\",\"size\":%zu},"
             "{\"mediaType\":\"application/vnd.ollama.image.params\",\"digest\":\"%s\",\"size\":%zu}]}",
             config, strlen(c), model_digest, n_gguf, tmpl, strlen(t), params, strlen(p));
    const char *dirs[] = {"manifests", "manifests/registry.ollama.ai", "manifests/registry.ollama.ai/library"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        mkdir(path, 0755);
    }
    snprintf(path, sizeof path, "%s/manifests/registry.ollama.ai/library/%s", root, name);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/manifests/registry.ollama.ai/library/%s/latest", root, name);
    return dk_file_write(path, manifest, strlen(manifest), e) == DK_OK;
}

TEST(store, reads_an_ollama_store_in_place)
{
    char root[512], oroot[512], e[DK_ERRLEN], model_digest[72];
    fresh_dir(root, sizeof root, "mine");
    fresh_dir(oroot, sizeof oroot, "ollama");
    REQUIRE(make_ollama_store(oroot, "olla", model_digest));
    int n_ollama_blobs = count_blobs(oroot);
    store *st = NULL;
    REQUIRE(store_open(&st, root, oroot, e) == DK_OK);

    store_model *m = NULL;
    REQUIRE_MSG(store_resolve(st, "olla", &m, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(m->name, "olla:latest");
    CHECK(m->read_only);
    CHECK(strncmp(m->gguf_path, oroot, strlen(oroot)) == 0);
    CHECK_EQ_STR(m->template_text, "{{ .System }} {{ .Prompt }}");
    CHECK_NEAR(json_real_value(json_object_get(m->params, "temperature")), 0.3, 1e-9);
    CHECK_EQ_STR(json_string_value(json_object_get(m->config, "model_type")), "293K");
    store_model_free(m);
    REQUIRE(store_resolve(st, "OLLA:Latest", &m, e) == DK_OK); /* case-insensitive, on disk as it is */
    CHECK_EQ_STR(m->name, "olla:latest");
    store_model_free(m);
    char *path = NULL;
    REQUIRE(store_blob_path(st, model_digest, &path, e) == DK_OK);
    CHECK(strncmp(path, oroot, strlen(oroot)) == 0);
    dk_free(path);

    /* read only: rm refuses; cp makes a duckling manifest over Ollama's blobs */
    CHECK_EQ_INT(store_remove(st, "olla", e), DK_ERR_UNSUPPORTED);
    REQUIRE(store_copy(st, "olla", "mine", e) == DK_OK);
    REQUIRE(store_resolve(st, "mine", &m, e) == DK_OK);
    CHECK(!m->read_only);
    CHECK(strncmp(m->gguf_path, oroot, strlen(oroot)) == 0);
    store_model_free(m);
    /* a model created from it reuses Ollama's blob without copying it */
    store_modelfile mf = {.from = (char *)"olla", .system = (char *)"hi"};
    REQUIRE_MSG(store_create(st, "derived", &mf, NULL, e) == DK_OK, "%s", e);
    REQUIRE(store_resolve(st, "derived", &m, e) == DK_OK);
    CHECK(strncmp(m->gguf_path, oroot, strlen(oroot)) == 0);
    CHECK_EQ_STR(m->template_text, "{{ .System }} {{ .Prompt }}");
    CHECK_EQ_STR(m->parent, "olla:latest");
    store_model_free(m);

    /* a duckling model of the same name hides Ollama's in the list */
    REQUIRE_MSG(create_plain(st, "olla", e) == DK_OK, "%s", e);
    store_model **models = NULL;
    size_t n = 0;
    REQUIRE(store_list(st, &models, &n, e) == DK_OK);
    REQUIRE(n == 3);
    CHECK_EQ_STR(models[1]->name, "mine:latest");
    CHECK_EQ_STR(models[2]->name, "olla:latest");
    CHECK(!models[2]->read_only);
    CHECK(models[2]->template_text == NULL);
    for (size_t i = 0; i < n; i++) store_model_free(models[i]);
    dk_free(models);

    REQUIRE(store_remove(st, "mine", e) == DK_OK);
    REQUIRE(store_remove(st, "derived", e) == DK_OK);
    REQUIRE(store_remove(st, "olla", e) == DK_OK);
    CHECK_EQ_INT(count_blobs(oroot), n_ollama_blobs); /* Ollama's blobs are never touched */
    REQUIRE(store_resolve(st, "olla", &m, e) == DK_OK);  /* Ollama's shows again */
    CHECK(m->read_only);
    store_model_free(m);
    store_free(st);
}

/* ------------------------------------------------------------------ Modelfiles */

TEST(store, modelfile_parse)
{
    char e[DK_ERRLEN];
    store_modelfile mf;
    const char *text = "  # comment\r\nfrom  base:7b  \r\n\nPaRaMeTeR top_k 40\r\nparameter seed -1\n"
                       "parameter penalize_newline T\nparameter mirostat_eta 0.25\nSYSTEM a # not a comment\n"
                       "MESSAGE SYSTEM \"\"\n";
    REQUIRE_MSG(store_modelfile_parse(text, &mf, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(mf.from, "base:7b");
    CHECK_EQ_INT(json_integer_value(json_object_get(mf.params, "top_k")), 40);
    CHECK_EQ_INT(json_integer_value(json_object_get(mf.params, "seed")), -1);
    CHECK(json_is_true(json_object_get(mf.params, "penalize_newline")));
    CHECK_NEAR(json_real_value(json_object_get(mf.params, "mirostat_eta")), 0.25, 1e-12);
    CHECK_EQ_STR(mf.system, "a # not a comment");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(mf.messages, 0), "role")), "system");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(mf.messages, 0), "content")), "");
    CHECK(mf.template_text == NULL && mf.license == NULL);
    store_modelfile_free(&mf);
}

TEST(store, modelfile_errors_name_the_line)
{
    typedef struct bad_case {
        const char *text;
        int code;
        const char *needle1, *needle2;
    } bad_case;
    static const bad_case cases[] = {
        {"FROM x\nPARAMETER bogus 1\n", DK_ERR_FORMAT, "line 2", "unknown parameter 'bogus'"},
        {"FROM x\n\n# c\nPARAMETER num_ctx abc\n", DK_ERR_FORMAT, "line 4", "not an integer"},
        {"FROM x\nPARAMETER temperature hot\n", DK_ERR_FORMAT, "line 2", "not a number"},
        {"FROM x\nPARAMETER use_mmap yes\n", DK_ERR_FORMAT, "line 2", "true or false"},
        {"FROM x\nPARAMETER\n", DK_ERR_FORMAT, "line 2", "parameter name"},
        {"FROM x\nPARAMETER top_k\n", DK_ERR_FORMAT, "line 2", "missing"},
        {"FROM x\nTEMPLATE \"\"\"never\nclosed\n", DK_ERR_FORMAT, "line 2", "unterminated"},
        {"FROM x\nSYSTEM \"open\n", DK_ERR_FORMAT, "line 2", "unterminated"},
        {"FROM x\nSYSTEM \"a\" b\n", DK_ERR_FORMAT, "line 2", "after the closing quote"},
        {"FROM x\n\n\nFROB y\n", DK_ERR_FORMAT, "line 4", "unknown instruction 'FROB'"},
        {"FROM x\nMESSAGE robot hi\n", DK_ERR_FORMAT, "line 2", "robot"},
        {"FROM x\nMESSAGE user\n", DK_ERR_FORMAT, "line 2", "missing"},
        {"FROM x\nFROM y\n", DK_ERR_FORMAT, "line 2", "second FROM"},
        {"FROM\n", DK_ERR_FORMAT, "line 1", "missing"},
        {"FROM x\nADAPTER ./lora.gguf\n", DK_ERR_UNSUPPORTED, "line 2", "ADAPTER"},
        {"SYSTEM hi\n", DK_ERR_FORMAT, "no FROM", ""},
        {"", DK_ERR_FORMAT, "no FROM", ""},
        {"FROM x\nSYSTEM \"\xff\"\n", DK_ERR_FORMAT, "UTF-8", ""},
        {"FROM x\n\"quoted\" instruction\n", DK_ERR_FORMAT, "line 2", "unknown instruction"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char e[DK_ERRLEN] = "";
        store_modelfile mf;
        int rc = store_modelfile_parse(cases[i].text, &mf, e);
        CHECK_MSG(rc == cases[i].code, "case %zu: code %d, want %d (%s)", i, rc, cases[i].code, e);
        CHECK_MSG(strstr(e, cases[i].needle1) && strstr(e, cases[i].needle2), "case %zu: message '%s'", i, e);
        if (rc == DK_OK) store_modelfile_free(&mf);
    }
}

TEST(store, modelfile_text_round_trips_odd_values)
{
    const char *values[] = {"plain", " leading", "trailing ", "multi\nline", "\"quoted\"", "ends with quote\"",
                            "has \"\"\" inside", "back\\slash\\", "\"\"\"", "", "tab\there", "cr\rin", "# hash"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        store_model m = {.name = (char *)"x:latest", .gguf_path = (char *)values[i], .system = (char *)values[i],
                         .template_text = (char *)values[i], .license = (char *)values[i]};
        m.params = json_pack("{s:[s,s], s:f, s:i}", "stop", values[i], "x", "temperature", 0.1, "top_k", 5);
        m.messages = json_pack("[{s:s, s:s}]", "role", "user", "content", values[i]);
        char *text = store_modelfile_text(&m);
        REQUIRE(text);
        store_modelfile mf;
        char e[DK_ERRLEN];
        int rc = store_modelfile_parse(text, &mf, e);
        if (values[i][0] == 0) {
            /* an empty FROM is not a model: it must not parse */
            CHECK(rc != DK_OK);
        } else {
            CHECK_MSG(rc == DK_OK, "value %zu: %s\n%s", i, e, text);
        }
        if (rc == DK_OK) {
            CHECK_EQ_STR(mf.from, values[i]);
            CHECK_EQ_STR(mf.system, values[i]);
            CHECK_EQ_STR(mf.template_text, values[i]);
            CHECK_EQ_STR(mf.license, values[i]);
            CHECK(json_equal(mf.params, m.params));
            CHECK(json_equal(mf.messages, m.messages));
            store_modelfile_free(&mf);
        }
        json_decref(m.params);
        json_decref(m.messages);
        dk_free(text);
    }
}

TEST(store, modelfile_from_json)
{
    char root[512], e[DK_ERRLEN];
    fresh_dir(root, sizeof root, "json");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    json_t *req = json_loads("{\"model\":\"m\",\"from\":\"base\",\"template\":\"T\",\"system\":\"S\","
                             "\"license\":[\"L1\",\"L2\"],\"parameters\":{\"temperature\":1,\"num_ctx\":2048.0,"
                             "\"stop\":\"<e>\",\"use_mmap\":false},\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                             "\"quantize\":\"q4_K_M\"}",
                             0, NULL);
    REQUIRE(req);
    store_modelfile mf;
    REQUIRE_MSG(store_modelfile_from_json(st, req, &mf, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(mf.from, "base");
    CHECK_EQ_STR(mf.template_text, "T");
    CHECK_EQ_STR(mf.system, "S");
    CHECK_EQ_STR(mf.license, "L1\n\nL2");
    CHECK(json_is_real(json_object_get(mf.params, "temperature")));
    CHECK(json_is_integer(json_object_get(mf.params, "num_ctx")));
    CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(mf.params, "stop"), 0)), "<e>");
    CHECK_EQ_INT(json_array_size(mf.messages), 1);
    store_modelfile_free(&mf);
    json_decref(req);

    /* files: a blob already in the store becomes FROM */
    const char data[] = "GGUF-ish";
    char digest[72];
    sha256_of(data, strlen(data), digest);
    REQUIRE(store_blob_put(st, digest, data, strlen(data), e) == DK_OK);
    req = json_pack("{s:s, s:{s:s}}", "model", "m", "files", "model.gguf", digest);
    REQUIRE_MSG(store_modelfile_from_json(st, req, &mf, e) == DK_OK, "%s", e);
    CHECK(mf.from && strstr(mf.from, digest + 7));
    store_modelfile_free(&mf);
    json_decref(req);

    /* the legacy "modelfile" string, overridden by explicit fields */
    req = json_pack("{s:s, s:s}", "modelfile", "FROM legacy\nSYSTEM old\nPARAMETER top_k 3\n", "system", "new");
    REQUIRE_MSG(store_modelfile_from_json(st, req, &mf, e) == DK_OK, "%s", e);
    CHECK_EQ_STR(mf.from, "legacy");
    CHECK_EQ_STR(mf.system, "new");
    CHECK_EQ_INT(json_integer_value(json_object_get(mf.params, "top_k")), 3);
    store_modelfile_free(&mf);
    json_decref(req);

    const char *bad[] = {
        "{\"from\":\"x\",\"parameters\":{\"bogus\":1}}",
        "{\"from\":\"x\",\"parameters\":{\"num_ctx\":1.5}}",
        "{\"from\":\"x\",\"parameters\":{\"stop\":[1]}}",
        "{\"from\":\"x\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}",
        "{\"from\":\"x\",\"system\":5}",
        "{\"from\":\"x\",\"license\":[1]}",
        "{\"files\":{\"model.gguf\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}}",
        "{\"files\":{\"model.safetensors\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}}",
        "{\"system\":\"no from\"}",
        "{\"modelfile\":\"FROM x\\nFROB\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req = json_loads(bad[i], 0, NULL);
        REQUIRE(req);
        int rc = store_modelfile_from_json(st, req, &mf, e);
        CHECK_MSG(rc != DK_OK, "request %zu accepted: %s", i, bad[i]);
        if (rc == DK_OK) store_modelfile_free(&mf);
        json_decref(req);
    }
    store_free(st);
}

/* ------------------------------------------------------------------ the registry stand-in */

/* NORMAL: as a registry; CUT_*: the model blob's connection closes halfway (the first time or
 * every time); IGNORE_RANGE: Range headers are ignored (200 and the whole blob); STALL: the
 * model blob's headers, then no byte while the connection stays open. */
enum reg_mode { REG_NORMAL, REG_CUT_ONCE, REG_CUT_ALWAYS, REG_IGNORE_RANGE, REG_STALL };

typedef struct reg_blob {
    char digest[72];
    char *data;
    size_t n;
} reg_blob;

typedef struct registry {
    struct MHD_Daemon *daemon;
    uint16_t port;
    _Atomic int mode;
    reg_blob blobs[4]; /* 0: the model (the one cut or corrupted), 1: template, 2: params, 3: config */
    char manifest[4096];
    atomic_int n_blob_gets;   /* GETs of /cdn/ (after the redirect) */
    atomic_int n_cuts;
    atomic_llong last_range;  /* start of the last Range header of a model-blob GET, -1 none */
    atomic_int n_ranges;
} registry;

typedef struct reg_stream {
    const char *data;   /* the bytes of the response (from the requested offset on) */
    size_t n;           /* declared length */
    size_t cut_at;      /* stop with an error after this many bytes (n: never) */
    bool stall;         /* at cut_at, send nothing (for at most 10 s) instead */
    uint64_t stalled_ns;
} reg_stream;

static ssize_t reg_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    reg_stream *s = cls;
    if (pos >= s->cut_at && s->stall) {
        if (!s->stalled_ns) s->stalled_ns = dk_now_ns();
        if (dk_now_ns() - s->stalled_ns > 10000000000ull) return MHD_CONTENT_READER_END_WITH_ERROR;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
        return 0; /* nothing yet: MHD asks again */
    }
    if (pos >= s->cut_at) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t k = s->cut_at - (size_t)pos;
    if (k > max) k = max;
    memcpy(buf, s->data + pos, k);
    return (ssize_t)k;
}

static void reg_stream_free(void *cls)
{
    reg_stream *s = cls;
    free(s);
}

static enum MHD_Result reg_queue(struct MHD_Connection *conn, unsigned status, const char *type, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reg_serve_blob(registry *reg, struct MHD_Connection *conn, int i)
{
    const reg_blob *b = &reg->blobs[i];
    atomic_fetch_add(&reg->n_blob_gets, 1);
    const char *range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Range");
    unsigned long long start = 0;
    if (range && sscanf(range, "bytes=%llu-", &start) != 1) start = 0;
    if (i == 0) {
        atomic_store(&reg->last_range, range ? (long long)start : -1LL);
        if (range) atomic_fetch_add(&reg->n_ranges, 1);
    }
    int mode = atomic_load(&reg->mode);
    if (mode == REG_IGNORE_RANGE) {
        range = NULL;
        start = 0;
    }
    if (start >= b->n && range) return reg_queue(conn, 416, "text/plain", "range not satisfiable");
    reg_stream *s = calloc(1, sizeof(*s));
    if (!s) return MHD_NO;
    s->data = b->data + start;
    s->n = b->n - start;
    s->cut_at = s->n;
    if (i == 0 && mode == REG_STALL) {
        s->cut_at = 0;
        s->stall = true;
        atomic_fetch_add(&reg->n_cuts, 1);
    }
    if (i == 0 && (mode == REG_CUT_ALWAYS || (mode == REG_CUT_ONCE && atomic_load(&reg->n_cuts) == 0))) {
        s->cut_at = s->n / 2;
        atomic_fetch_add(&reg->n_cuts, 1);
    }
    struct MHD_Response *r = MHD_create_response_from_callback(s->n, 4096, reg_read, s, reg_stream_free);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    unsigned status = MHD_HTTP_OK;
    if (range) {
        char cr[128];
        snprintf(cr, sizeof cr, "bytes %llu-%zu/%zu", start, b->n - 1, b->n);
        MHD_add_response_header(r, "Content-Range", cr);
        status = MHD_HTTP_PARTIAL_CONTENT;
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reg_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version, (void)upload_data, (void)upload_size, (void)con_cls;
    registry *reg = cls;
    if (strcmp(method, "GET") != 0) return reg_queue(conn, 405, "text/plain", "GET only");
    if (strcmp(url, "/v2/library/tiny/manifests/latest") == 0) {
        const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
        if (!accept || !strstr(accept, "application/vnd.docker.distribution.manifest.v2+json"))
            return reg_queue(conn, 400, "text/plain", "no Accept header");
        return reg_queue(conn, 200, "application/vnd.docker.distribution.manifest.v2+json", reg->manifest);
    }
    const char *blob_prefix = "/v2/library/tiny/blobs/sha256:";
    if (strncmp(url, blob_prefix, strlen(blob_prefix)) == 0) {
        /* registries answer blob GETs with a redirect to their CDN */
        char location[256];
        snprintf(location, sizeof location, "/cdn/%s", url + strlen(blob_prefix));
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", location);
        enum MHD_Result ret = MHD_queue_response(conn, 307, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strncmp(url, "/cdn/", 5) == 0) {
        for (int i = 0; i < 4; i++)
            if (strcmp(url + 5, reg->blobs[i].digest + 7) == 0) return reg_serve_blob(reg, conn, i);
    }
    return reg_queue(conn, 404, "application/json", "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}");
}

static void reg_blob_set(reg_blob *b, const char *data, size_t n)
{
    b->data = malloc(n);
    memcpy(b->data, data, n);
    b->n = n;
    sha256_of(data, n, b->digest);
}

static void registry_stop(registry *reg)
{
    if (reg->daemon) MHD_stop_daemon(reg->daemon);
    for (int i = 0; i < 4; i++) free(reg->blobs[i].data);
    memset(reg, 0, sizeof(*reg));
}

/* Serves library/tiny:latest: the kit model, a template, params and a config. */
static bool registry_start(registry *reg)
{
    memset(reg, 0, sizeof(*reg));
    atomic_store(&reg->last_range, -1LL);
    char model[1024], e[DK_ERRLEN];
    if (!kit_model(model, sizeof model)) return false;
    char *gguf = NULL;
    size_t n = 0;
    if (dk_file_read(model, 1u << 30, &gguf, &n, e) != DK_OK) return false;
    reg_blob_set(&reg->blobs[0], gguf, n);
    dk_free(gguf);
    const char *t = "{{ .Prompt }}", *p = "{\"temperature\":0.1}",
               *c = "{\"model_format\":\"gguf\",\"model_family\":\"llama\",\"file_type\":\"F32\"}";
    reg_blob_set(&reg->blobs[1], t, strlen(t));
    reg_blob_set(&reg->blobs[2], p, strlen(p));
    reg_blob_set(&reg->blobs[3], c, strlen(c));
    snprintf(reg->manifest, sizeof reg->manifest,
             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
             "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
             "\"layers\":[{\"mediaType\":\"application/vnd.ollama.image.model\",\"digest\":\"%s\",\"size\":%zu},"
             "{\"mediaType\":\"application/vnd.ollama.image.template\",\"digest\":\"%s\",\"size\":%zu},"
             "{\"mediaType\":\"application/vnd.ollama.image.params\",\"digest\":\"%s\",\"size\":%zu}]}",
             reg->blobs[3].digest, reg->blobs[3].n, reg->blobs[0].digest, reg->blobs[0].n, reg->blobs[1].digest,
             reg->blobs[1].n, reg->blobs[2].digest, reg->blobs[2].n);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    reg->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                                   reg_handle, reg, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_END);
    if (!reg->daemon) {
        test_fail_at(__FILE__, __LINE__, "cannot start the registry stand-in");
        registry_stop(reg);
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(reg->daemon, MHD_DAEMON_INFO_BIND_PORT);
    reg->port = info ? info->port : 0;
    if (!reg->port) {
        test_fail_at(__FILE__, __LINE__, "the registry stand-in has no port");
        registry_stop(reg);
        return false;
    }
    return true;
}

static void reg_name(const registry *reg, char *buf, size_t n, const char *model)
{
    snprintf(buf, n, "127.0.0.1:%u/library/%s", (unsigned)reg->port, model);
}

/* ------------------------------------------------------------------ pull */

TEST(store, pull_from_a_registry)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "pull");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    status_log log = {0};
    store_pull_params pp = {.insecure = true, .progress = log_status, .user = &log};
    int rc = store_pull(st, name, &pp, e);
    CHECK_MSG(rc == DK_OK, "%s", e);
    CHECK(log.n > 0 && strcmp(log.statuses[0], "pulling manifest") == 0);
    char want_status[64];
    snprintf(want_status, sizeof want_status, "pulling %.12s", reg.blobs[0].digest + 7);
    CHECK(log_has(&log, want_status));
    CHECK(log_has(&log, "verifying sha256 digest") && log_has(&log, "writing manifest"));
    CHECK(log.n > 0 && strcmp(log.statuses[log.n - 1], "success") == 0);
    CHECK_EQ_INT(atomic_load(&reg.n_blob_gets), 4);
    CHECK_EQ_INT(atomic_load(&reg.n_ranges), 0);

    store_model *m = NULL;
    char model_name[160];
    snprintf(model_name, sizeof model_name, "%s:latest", name);
    REQUIRE_MSG(store_resolve(st, model_name, &m, e) == DK_OK, "%s", e);
    char got[72];
    REQUIRE(file_sha256(m->gguf_path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);
    CHECK_EQ_STR(m->template_text, "{{ .Prompt }}");
    CHECK_NEAR(json_real_value(json_object_get(m->params, "temperature")), 0.1, 1e-9);
    CHECK_EQ_STR(m->name, model_name);
    /* the manifest is the registry's, byte for byte: its digest is the model's ID */
    char manifest_digest[72];
    sha256_of(reg.manifest, strlen(reg.manifest), manifest_digest);
    CHECK_EQ_STR(m->digest, manifest_digest);
    store_model_free(m);

    /* a second pull downloads nothing */
    REQUIRE(store_pull(st, name, &pp, e) == DK_OK);
    CHECK_EQ_INT(atomic_load(&reg.n_blob_gets), 4);

    /* $DUCKLING_REGISTRY stands in for registry.ollama.ai */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)reg.port);
    setenv("DUCKLING_REGISTRY", url, 1);
    store_pull_params plain = {0};
    rc = store_pull(st, "tiny", &plain, e);
    CHECK_MSG(rc == DK_OK, "%s", e);
    CHECK_EQ_INT(store_pull(st, "nothere", &plain, e), DK_ERR_NOTFOUND);
    CHECK(strstr(e, "nothere") && strstr(e, "manifest unknown"));
    setenv("DUCKLING_REGISTRY", "ftp://example.com", 1);
    CHECK_EQ_INT(store_pull(st, "tiny", &plain, e), DK_ERR_ARG);
    unsetenv("DUCKLING_REGISTRY");
    REQUIRE(store_resolve(st, "tiny", &m, e) == DK_OK);
    store_model_free(m);

    /* 404 for an unknown model, a refused connection for a port nobody listens on */
    reg_name(&reg, name, sizeof name, "unknown");
    CHECK_EQ_INT(store_pull(st, name, &pp, e), DK_ERR_NOTFOUND);
    CHECK(strstr(e, "not found") != NULL);
    CHECK_EQ_INT(store_pull(st, "127.0.0.1:1/library/tiny", &pp, e), DK_ERR_IO);
    CHECK_EQ_INT(store_pull(st, "bad name!", &pp, e), DK_ERR_ARG);
    store_free(st);
    registry_stop(&reg);
}

TEST(store, pull_resumes_a_cut_download)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "resume");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    store_pull_params pp = {.insecure = true};
    char partial[1024], final_path[1024];
    snprintf(partial, sizeof partial, "%s/blobs/sha256-%.64s-partial", root, reg.blobs[0].digest + 7);
    snprintf(final_path, sizeof final_path, "%s/blobs/sha256-%.64s", root, reg.blobs[0].digest + 7);

    /* every response is cut: the pull retries from where it stopped, then gives up */
    atomic_store(&reg.mode, REG_CUT_ALWAYS);
    CHECK_EQ_INT(store_pull(st, name, &pp, e), DK_ERR_IO);
    CHECK(strstr(e, "pull again to resume") != NULL);
    CHECK_EQ_INT(atomic_load(&reg.n_cuts), 3);
    CHECK(atomic_load(&reg.n_ranges) >= 1);
    long have = file_size(partial);
    CHECK_MSG(have > 0 && have < (long)reg.blobs[0].n, "partial is %ld of %zu bytes", have, reg.blobs[0].n);
    CHECK(!file_exists(final_path));
    store_model *m = NULL;
    char model_name[160];
    snprintf(model_name, sizeof model_name, "%s:latest", name);
    CHECK_EQ_INT(store_resolve(st, model_name, &m, e), DK_ERR_NOTFOUND); /* no manifest */

    /* the next pull continues the partial with a Range request */
    atomic_store(&reg.mode, REG_NORMAL);
    REQUIRE_MSG(store_pull(st, name, &pp, e) == DK_OK, "%s", e);
    CHECK_EQ_INT(atomic_load(&reg.last_range), have);
    CHECK(!file_exists(partial));
    char got[72];
    REQUIRE(file_sha256(final_path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);
    REQUIRE(store_resolve(st, model_name, &m, e) == DK_OK);
    store_model_free(m);

    /* a single cut is retried within the same pull */
    REQUIRE(store_remove(st, model_name, e) == DK_OK);
    CHECK(!file_exists(final_path));
    atomic_store(&reg.n_cuts, 0);
    atomic_store(&reg.n_ranges, 0);
    atomic_store(&reg.mode, REG_CUT_ONCE);
    REQUIRE_MSG(store_pull(st, name, &pp, e) == DK_OK, "%s", e);
    CHECK_EQ_INT(atomic_load(&reg.n_cuts), 1);
    CHECK_EQ_INT(atomic_load(&reg.n_ranges), 1);
    CHECK(atomic_load(&reg.last_range) > 0);
    REQUIRE(file_sha256(final_path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);

    /* a server that ignores Range (200, the whole blob) overwrites the partial from byte 0 */
    REQUIRE(store_remove(st, model_name, e) == DK_OK);
    char *wrong = calloc(1, reg.blobs[0].n / 2);
    REQUIRE(wrong && dk_file_write(partial, wrong, reg.blobs[0].n / 2, e) == DK_OK);
    free(wrong);
    atomic_store(&reg.mode, REG_IGNORE_RANGE);
    REQUIRE_MSG(store_pull(st, name, &pp, e) == DK_OK, "%s", e);
    REQUIRE(file_sha256(final_path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);

    /* a partial longer than the blob is thrown away and fetched again */
    REQUIRE(store_remove(st, model_name, e) == DK_OK);
    char *junk = calloc(1, reg.blobs[0].n + 10);
    REQUIRE(junk && dk_file_write(partial, junk, reg.blobs[0].n + 10, e) == DK_OK);
    free(junk);
    atomic_store(&reg.mode, REG_NORMAL);
    REQUIRE_MSG(store_pull(st, name, &pp, e) == DK_OK, "%s", e);
    REQUIRE(file_sha256(final_path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);
    store_free(st);
    registry_stop(&reg);
}

TEST(store, pull_gives_up_on_a_stalled_server)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "stall");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    atomic_store(&reg.mode, REG_STALL);
    setenv("DUCKLING_PULL_STALL_S", "1", 1);
    store_pull_params pp = {.insecure = true};
    uint64_t t0 = dk_now_ns();
    int rc = store_pull(st, name, &pp, e);
    double seconds = (double)(dk_now_ns() - t0) / 1e9;
    unsetenv("DUCKLING_PULL_STALL_S");
    CHECK_EQ_INT(rc, DK_ERR_IO);
    CHECK_MSG(seconds < 9, "gave up after %.1f s: %s", seconds, e);
    char partial[1024];
    snprintf(partial, sizeof partial, "%s/blobs/sha256-%.64s-partial", root, reg.blobs[0].digest + 7);
    CHECK(file_size(partial) == 0); /* kept for the next pull, however little it holds */
    CHECK_EQ_INT(atomic_load(&reg.n_cuts), 3);
    store_free(st);
    registry_stop(&reg);
}

TEST(store, pull_rejects_a_corrupt_blob)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "corrupt");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    reg.blobs[0].data[reg.blobs[0].n / 3] ^= 0x55; /* same size, other bytes (CORRUPT) */
    store_pull_params pp = {.insecure = true};
    CHECK_EQ_INT(store_pull(st, name, &pp, e), DK_ERR_FORMAT);
    CHECK(strstr(e, "digest mismatch") != NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/blobs/sha256-%.64s-partial", root, reg.blobs[0].digest + 7);
    CHECK(!file_exists(path));
    snprintf(path, sizeof path, "%s/blobs/sha256-%.64s", root, reg.blobs[0].digest + 7);
    CHECK(!file_exists(path));
    snprintf(path, sizeof path, "%s/manifests", root);
    CHECK(!file_exists(path));
    store_model **models = NULL;
    size_t n = 0;
    REQUIRE(store_list(st, &models, &n, e) == DK_OK);
    CHECK_EQ_INT(n, 0);
    dk_free(models);
    store_free(st);
    registry_stop(&reg);
}

TEST(store, pull_can_be_cancelled)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "cancel");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    status_log log = {.cancel_at_pulling = 1};
    store_pull_params pp = {.insecure = true, .progress = log_status, .user = &log};
    CHECK_EQ_INT(store_pull(st, name, &pp, e), DK_ERR_LIMIT);
    CHECK(strstr(e, "cancelled") != NULL);
    atomic_int flag = 1;
    store_pull_params flagged = {.insecure = true, .cancel = &flag};
    CHECK_EQ_INT(store_pull(st, name, &flagged, e), DK_ERR_LIMIT);
    char path[1024];
    snprintf(path, sizeof path, "%s/manifests", root);
    CHECK(!file_exists(path));
    store_free(st);
    registry_stop(&reg);
}

typedef struct pull_thread_arg {
    store *st;
    const char *name;
    int rc;
    char err[DK_ERRLEN];
} pull_thread_arg;

static void *pull_thread(void *user)
{
    pull_thread_arg *a = user;
    store_pull_params pp = {.insecure = true};
    a->rc = store_pull(a->st, a->name, &pp, a->err);
    return NULL;
}

TEST(store, concurrent_pulls_of_one_model)
{
    registry reg;
    if (!registry_start(&reg)) return;
    char root[512], e[DK_ERRLEN], name[128];
    fresh_dir(root, sizeof root, "concurrent");
    store *st = NULL;
    REQUIRE(store_open(&st, root, "", e) == DK_OK);
    reg_name(&reg, name, sizeof name, "tiny");
    pull_thread_arg args[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (pull_thread_arg){.st = st, .name = name};
        REQUIRE(pthread_create(&threads[i], NULL, pull_thread, &args[i]) == 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        CHECK_MSG(args[i].rc == DK_OK, "pull %d: %s", i, args[i].err);
    }
    char path[1024], got[72];
    snprintf(path, sizeof path, "%s/blobs/sha256-%.64s", root, reg.blobs[0].digest + 7);
    REQUIRE(file_sha256(path, got, NULL) == 0);
    CHECK_EQ_STR(got, reg.blobs[0].digest);
    CHECK_EQ_INT(count_blobs(root), 4);
    store_free(st);
    registry_stop(&reg);
}

/* ------------------------------------------------------------------ the commands */

typedef struct cli_out {
    int status;
    char *out, *err;
} cli_out;

static void cli_out_free(cli_out *r)
{
    dk_free(r->out);
    dk_free(r->err);
    memset(r, 0, sizeof(*r));
}

/* Runs the binary with args (NULL-terminated) against the store at models_dir (and no Ollama
 * store), in directory cwd (NULL: here). */
static int run_cli(cli_out *r, const char *models_dir, const char *cwd, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    static int counter;
    char out_path[512], err_path[512], no_ollama[512], e[DK_ERRLEN];
    counter++;
    snprintf(out_path, sizeof out_path, "%s/store-cli-%d.out", test_tmpdir(), counter);
    snprintf(err_path, sizeof err_path, "%s/store-cli-%d.err", test_tmpdir(), counter);
    snprintf(no_ollama, sizeof no_ollama, "%s/no-ollama-store", test_tmpdir());
    char bin[1024];
    if (!realpath(test_cli_path(), bin)) return -1;
    const char *argv[32];
    size_t n = 0;
    argv[n++] = bin;
    for (size_t i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0 || (cwd && chdir(cwd) != 0)) _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        setenv("DUCKLING_MODELS", models_dir, 1);
        setenv("OLLAMA_MODELS", no_ollama, 1);
        unsetenv("DUCKLING_REGISTRY");
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    size_t k;
    if (dk_file_read(out_path, 1 << 24, &r->out, &k, e) != DK_OK) return -1;
    if (dk_file_read(err_path, 1 << 24, &r->err, &k, e) != DK_OK) return -1;
    return 0;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A failing command: exit 1, nothing on stdout, one line on stderr naming the command. */
static void check_cli_fails(const char *models, const char *const *args, const char *needle)
{
    cli_out r;
    if (run_cli(&r, models, NULL, args) != 0) {
        test_fail_at(__FILE__, __LINE__, "cannot run %s", args[0]);
        return;
    }
    CHECK_MSG(r.status == 1, "%s %s: status %d", args[0], args[1] ? args[1] : "", r.status);
    CHECK_MSG(count_lines(r.err) == 1 && strncmp(r.err, "duckling ", 9) == 0, "%s: stderr '%s'", args[0], r.err);
    CHECK_MSG(!needle || strstr(r.err, needle), "%s: stderr '%s' lacks '%s'", args[0], r.err, needle);
    CHECK_EQ_STR(r.out, "");
    cli_out_free(&r);
}

TEST(store, cli_commands)
{
    if (access(test_cli_path(), X_OK) != 0) {
        test_fail_at(__FILE__, __LINE__, "no binary at %s (build it first)", test_cli_path());
        return;
    }
    char model[1024], models[512], work[512], e[DK_ERRLEN];
    if (!kit_model(model, sizeof model)) return;
    fresh_dir(models, sizeof models, "cli-models");
    fresh_dir(work, sizeof work, "cli-work");
    /* a Modelfile beside a copy of the model, FROM relative to the Modelfile */
    char path[1024], text[4096];
    char *gguf = NULL;
    size_t n_gguf = 0;
    REQUIRE(dk_file_read(model, 1u << 30, &gguf, &n_gguf, e) == DK_OK);
    snprintf(path, sizeof path, "%s/tiny.gguf", work);
    REQUIRE(dk_file_write(path, gguf, n_gguf, e) == DK_OK);
    dk_free(gguf);
    snprintf(text, sizeof text, full_modelfile_fmt, "./tiny.gguf");
    snprintf(path, sizeof path, "%s/Modelfile", work);
    REQUIRE(dk_file_write(path, text, strlen(text), e) == DK_OK);

    cli_out r;
    const char *create[] = {"create", "tiny", "-f", path, NULL};
    REQUIRE(run_cli(&r, models, "/", create) == 0);
    CHECK_MSG(r.status == 0, "create: %s", r.err);
    CHECK(strstr(r.err, "writing manifest\n") && strstr(r.err, "success\n"));
    CHECK_EQ_STR(r.out, "");
    cli_out_free(&r);

    const char *list[] = {"list", NULL};
    REQUIRE(run_cli(&r, models, NULL, list) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strncmp(r.out, "NAME", 4) == 0 && strstr(r.out, "ID") && strstr(r.out, "SIZE") && strstr(r.out, "MODIFIED"));
    CHECK_EQ_INT(count_lines(r.out), 2);
    const char *row = strchr(r.out, '\n');
    REQUIRE(row);
    row++;
    CHECK(strncmp(row, "tiny:latest ", 12) == 0);
    CHECK(strstr(row, " 1.2 MB ") != NULL);
    CHECK(strstr(row, "ago\n") != NULL);
    /* ID: the first 12 hex digits of the manifest's digest */
    store *st = NULL;
    store_model *m = NULL;
    REQUIRE(store_open(&st, models, "", e) == DK_OK);
    REQUIRE(store_resolve(st, "tiny", &m, e) == DK_OK);
    char id[16];
    snprintf(id, sizeof id, " %.12s ", m->digest + 7);
    CHECK_MSG(strstr(row, id) != NULL, "list row '%s' lacks id '%s'", row, id);
    store_model_free(m);
    m = NULL;
    cli_out_free(&r);

    const char *show[] = {"show", "tiny", NULL};
    REQUIRE(run_cli(&r, models, NULL, show) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "architecture        llama\n") != NULL);
    CHECK(strstr(r.out, "    context length      128\n") && strstr(r.out, "    embedding length    64\n"));
    CHECK(strstr(r.out, "quantization        F32\n") != NULL);
    CHECK(strstr(r.out, "Capabilities\n    completion\n") != NULL);
    CHECK(strstr(r.out, "temperature") && strstr(r.out, "\"<|end|>\""));
    CHECK(strstr(r.out, "  System\n    You are \"tiny\".\n") != NULL);
    CHECK(strstr(r.out, "  License\n    MIT\n") != NULL);
    cli_out_free(&r);

    const char *show_sys[] = {"show", "tiny", "--system", NULL};
    REQUIRE(run_cli(&r, models, NULL, show_sys) == 0);
    CHECK_EQ_STR(r.out, "You are \"tiny\".\n");
    cli_out_free(&r);
    const char *show_tmpl[] = {"show", "tiny", "--template", NULL};
    REQUIRE(run_cli(&r, models, NULL, show_tmpl) == 0);
    CHECK_EQ_STR(r.out, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\n");
    cli_out_free(&r);
    const char *show_params[] = {"show", "tiny", "--parameters", NULL};
    REQUIRE(run_cli(&r, models, NULL, show_params) == 0);
    CHECK_EQ_INT(count_lines(r.out), 5);
    CHECK(strstr(r.out, "num_ctx                        256\n") != NULL);
    cli_out_free(&r);
    const char *show_license[] = {"show", "tiny", "--license", NULL};
    REQUIRE(run_cli(&r, models, NULL, show_license) == 0);
    CHECK_EQ_STR(r.out, "MIT\n\nSecond\nlicense\n");
    cli_out_free(&r);
    const char *show_mf[] = {"show", "tiny", "--modelfile", NULL};
    REQUIRE(run_cli(&r, models, NULL, show_mf) == 0);
    CHECK_EQ_INT(r.status, 0);
    store_modelfile mf;
    CHECK(store_modelfile_parse(r.out, &mf, e) == DK_OK);
    store_modelfile_free(&mf);
    cli_out_free(&r);

    /* MODEL names from the store work where paths did: run by name == run by path */
    const char *run_name[] = {"run", "tiny", "Once upon a time", "--temperature", "0", "-n", "12", "--raw", NULL};
    const char *run_path[] = {"run", model, "Once upon a time", "--temperature", "0", "-n", "12", "--raw", NULL};
    cli_out a, b;
    REQUIRE(run_cli(&a, models, NULL, run_name) == 0);
    REQUIRE(run_cli(&b, models, NULL, run_path) == 0);
    CHECK_MSG(a.status == 0, "run tiny: %s", a.err);
    CHECK(a.out[0] != 0);
    CHECK_EQ_STR(a.out, b.out);
    cli_out_free(&a);
    cli_out_free(&b);

    /* run of a store model applies its Modelfile: TEMPLATE and PARAMETERs (flags still win) */
    snprintf(text, sizeof text,
             "FROM ./tiny.gguf\nTEMPLATE \"\"\"{%% for m in messages %%}{{ m.content }}{%% endfor %%} upon a\"\"\"\n"
             "PARAMETER temperature 0\nPARAMETER num_predict 8\n");
    snprintf(path, sizeof path, "%s/Modelfile.styled", work);
    REQUIRE(dk_file_write(path, text, strlen(text), e) == DK_OK);
    const char *create_styled[] = {"create", "styled", "-f", path, NULL};
    REQUIRE(run_cli(&r, models, "/", create_styled) == 0);
    CHECK_MSG(r.status == 0, "create styled: %s", r.err);
    cli_out_free(&r);
    const char *run_styled[] = {"run", "styled", "Once", "--local", NULL};
    const char *run_rendered[] = {"run", model, "Once upon a", "--raw", "--temperature", "0", "-n", "8", NULL};
    const char *run_styled_n[] = {"run", "styled", "Once", "--local", "-n", "3", NULL};
    REQUIRE(run_cli(&a, models, NULL, run_styled) == 0);
    REQUIRE(run_cli(&b, models, NULL, run_rendered) == 0);
    CHECK_MSG(a.status == 0, "run styled: %s", a.err);
    CHECK(a.out[0] != 0);
    CHECK_EQ_STR(a.out, b.out);
    cli_out_free(&a);
    REQUIRE(run_cli(&a, models, NULL, run_styled_n) == 0);
    CHECK(strlen(a.out) < strlen(b.out) && strncmp(a.out, b.out, strlen(a.out)) == 0);
    cli_out_free(&a);
    cli_out_free(&b);
    const char *rm_styled[] = {"rm", "styled", NULL};
    REQUIRE(run_cli(&r, models, NULL, rm_styled) == 0);
    CHECK_EQ_INT(r.status, 0);
    cli_out_free(&r);

    const char *cp[] = {"cp", "tiny", "me/tiny:copy", NULL};
    REQUIRE(run_cli(&r, models, NULL, cp) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "copied 'tiny' to 'me/tiny:copy'\n");
    cli_out_free(&r);
    const char *rm[] = {"rm", "tiny", "me/tiny:copy", NULL};
    REQUIRE(run_cli(&r, models, NULL, rm) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "deleted 'tiny'\ndeleted 'me/tiny:copy'\n");
    cli_out_free(&r);
    CHECK_EQ_INT(count_blobs(models), 0);
    REQUIRE(run_cli(&r, models, NULL, list) == 0);
    CHECK_EQ_INT(count_lines(r.out), 1);
    cli_out_free(&r);

    /* pull through the binary, progress as plain lines on stderr (not a terminal) */
    registry reg;
    if (registry_start(&reg)) {
        char name[128];
        reg_name(&reg, name, sizeof name, "tiny");
        const char *pull[] = {"pull", name, "--insecure", NULL};
        REQUIRE(run_cli(&r, models, NULL, pull) == 0);
        CHECK_MSG(r.status == 0, "pull: %s", r.err);
        CHECK(strncmp(r.err, "pulling manifest\n", 17) == 0);
        CHECK(strstr(r.err, "verifying sha256 digest\nwriting manifest\nsuccess\n") != NULL);
        CHECK(strstr(r.err, "\r") == NULL);
        cli_out_free(&r);
        char full[160];
        snprintf(full, sizeof full, "%s:latest", name);
        CHECK(store_resolve(st, full, &m, e) == DK_OK);
        store_model_free(m);
        reg_name(&reg, name, sizeof name, "nothere");
        const char *pull404[] = {"pull", name, "--insecure", NULL};
        /* progress lines first, then the one error line */
        REQUIRE(run_cli(&r, models, NULL, pull404) == 0);
        CHECK_EQ_INT(r.status, 1);
        CHECK_EQ_STR(r.out, "");
        const char *last = strstr(r.err, "duckling pull: ");
        CHECK_MSG(last && strstr(last, "not found") && count_lines(last) == 1, "pull: stderr '%s'", r.err);
        cli_out_free(&r);
        registry_stop(&reg);
    }
    store_free(st);

    const char *f1[] = {"show", "nothere", NULL};
    const char *f2[] = {"rm", "nothere", NULL};
    const char *f3[] = {"cp", "tiny", NULL};
    const char *f4[] = {"cp", "nothere", "x", NULL};
    const char *f5[] = {"show", "tiny", "--bogus", NULL};
    const char *f6[] = {"pull", NULL};
    const char *f7[] = {"create", "x", "-f", "/nonexistent/Modelfile", NULL};
    const char *f8[] = {"show", NULL};
    const char *f9[] = {"rm", NULL};
    const char *f10[] = {"list", "extra", NULL};
    const char *f11[] = {"pull", "bad name!", NULL};
    const char *f12[] = {"run", "nothere", "hi", NULL};
    check_cli_fails(models, f1, "not found");
    check_cli_fails(models, f2, "not found");
    check_cli_fails(models, f3, "usage");
    check_cli_fails(models, f4, "not found");
    check_cli_fails(models, f5, "--bogus");
    check_cli_fails(models, f6, "usage");
    check_cli_fails(models, f7, "Modelfile");
    check_cli_fails(models, f8, "usage");
    check_cli_fails(models, f9, "usage");
    check_cli_fails(models, f10, "extra");
    check_cli_fails(models, f11, "invalid model name");
    check_cli_fails(models, f12, "not found");
    /* a Modelfile error names the file and the line */
    snprintf(path, sizeof path, "%s/Bad", work);
    REQUIRE(dk_file_write(path, "FROM x\nPARAMETER nope 1\n", 24, e) == DK_OK);
    const char *f13[] = {"create", "x", "-f", path, NULL};
    check_cli_fails(models, f13, "line 2");
    const char *f14[] = {"create", "x", "-f", path, "--quantize", "q9", NULL};
    check_cli_fails(models, f14, "line 2");
}
