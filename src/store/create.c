/*
 * create.c: store_create, a model from a Modelfile. The base is a GGUF file (copied in as a
 * blob, unless it is one already) or a model of either store (its layers reused); the GGUF is
 * re-quantized into a new blob when asked (convert/); the Modelfile's template, system,
 * messages and license become layers that replace the base's, its parameters are merged into
 * the base's; a config blob describes the GGUF (family, parameter size, file type); the
 * manifest is written last. Not for: parsing Modelfiles (modelfile.c).
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/convert.h"

typedef struct create_job {
    store *st;
    const store_create_params *cp;
    store_layer *layers;  /* the new manifest's layers */
    size_t n_layers, cap_layers;
    char *err;
} create_job;

static int report(create_job *job, const char *status, const char *digest, uint64_t total, uint64_t completed)
{
    if (!job->cp || !job->cp->progress) return DK_OK;
    if (job->cp->progress(job->cp->user, status, digest, total, completed) != 0)
        return dk_fail(job->err, DK_ERR_LIMIT, "cancelled");
    return DK_OK;
}

static int layer_add(create_job *job, const char *media, const char *digest, uint64_t size)
{
    if (job->n_layers == job->cap_layers) {
        size_t cap = job->cap_layers ? job->cap_layers * 2 : 8;
        store_layer *grown = dk_realloc(job->layers, cap * sizeof(*grown));
        if (!grown) return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
        job->layers = grown;
        job->cap_layers = cap;
    }
    store_layer *l = &job->layers[job->n_layers++];
    memset(l, 0, sizeof(*l));
    dk_strlcpy(l->media_type, media, sizeof l->media_type);
    dk_strlcpy(l->digest, digest, sizeof l->digest);
    l->size = size;
    return DK_OK;
}

static void layers_drop(create_job *job, const char *media)
{
    size_t k = 0;
    for (size_t i = 0; i < job->n_layers; i++)
        if (strcmp(job->layers[i].media_type, media) != 0) job->layers[k++] = job->layers[i];
    job->n_layers = k;
}

static store_layer *layer_find(create_job *job, const char *media)
{
    for (size_t i = 0; i < job->n_layers; i++)
        if (strcmp(job->layers[i].media_type, media) == 0) return &job->layers[i];
    return NULL;
}

/* A small layer from bytes: written as a blob, replacing the base's layer of that type. */
static int layer_put(create_job *job, const char *media, const char *data, size_t n)
{
    char digest[72];
    bool existed = false;
    int rc = store_blob_put_bytes(job->st, data, n, digest, &existed, job->err);
    if (rc != DK_OK) return rc;
    char status[128];
    snprintf(status, sizeof status, "%s %s", existed ? "using existing layer" : "creating new layer", digest);
    rc = report(job, status, digest, 0, 0);
    if (rc != DK_OK) return rc;
    layers_drop(job, media);
    return layer_add(job, media, digest, n);
}

static int layer_put_json(create_job *job, const char *media, const json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text) return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    int rc = layer_put(job, media, text, strlen(text));
    free(text);
    return rc;
}

/* "DIR/blobs/sha256-HEX" of either store: the digest, without hashing the file again. */
static bool path_is_blob(store *st, const char *path, char digest[72])
{
    const char *base = strrchr(path, '/');
    if (!base || strncmp(base + 1, "sha256-", 7) != 0) return false;
    char hex[65], e[DK_ERRLEN];
    if (store_digest_parse(base + 1, hex, e) != DK_OK) return false;
    char *known = NULL;
    if (store_blob_path(st, base + 1, &known, e) != DK_OK) return false;
    char *a = realpath(known, NULL), *b = realpath(path, NULL);
    bool same = a && b && strcmp(a, b) == 0;
    free(a);
    free(b);
    dk_free(known);
    if (same) snprintf(digest, 72, "sha256:%s", hex);
    return same;
}

static int base_from_file(create_job *job, const char *path)
{
    store_gguf_info info;
    int rc = store_gguf_info_read(path, &info, job->err);
    if (rc != DK_OK) return rc;
    store_gguf_info_free(&info);
    struct stat sb;
    if (stat(path, &sb) != 0) return dk_fail(job->err, DK_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    char digest[72];
    if (!path_is_blob(job->st, path, digest)) {
        rc = report(job, "copying file", NULL, (uint64_t)sb.st_size, 0);
        if (rc == DK_OK) rc = store_blob_put_file(job->st, path, digest, job->err);
        if (rc != DK_OK) return rc;
        char status[128];
        snprintf(status, sizeof status, "copying file %s", digest);
        rc = report(job, status, digest, (uint64_t)sb.st_size, (uint64_t)sb.st_size);
        if (rc != DK_OK) return rc;
    }
    return layer_add(job, STORE_MEDIA_MODEL, digest, (uint64_t)sb.st_size);
}

static int base_from_model(create_job *job, const store_model *base)
{
    store_name name;
    int rc = store_parse_name(base->name, &name, job->err);
    store_manifest mf;
    if (rc == DK_OK) rc = store_manifest_read(job->st, &name, &mf, job->err);
    if (rc != DK_OK) return rc;
    for (size_t i = 0; i < mf.n_layers && rc == DK_OK; i++) {
        char status[128];
        snprintf(status, sizeof status, "using existing layer %s", mf.layers[i].digest);
        rc = report(job, status, mf.layers[i].digest, 0, 0);
        if (rc == DK_OK) rc = layer_add(job, mf.layers[i].media_type, mf.layers[i].digest, mf.layers[i].size);
    }
    store_manifest_free(&mf);
    return rc;
}

static int quantize_model_layer(create_job *job, const char *type)
{
    enum gguf_tensor_type base_type;
    if (convert_ftype_from_name(type, &base_type) < 0)
        return dk_fail(job->err, DK_ERR_ARG, "unknown quantization type '%s'", type);
    store_layer *model = layer_find(job, STORE_MEDIA_MODEL);
    char *in = NULL;
    int rc = store_blob_path(job->st, model->digest, &in, job->err);
    if (rc != DK_OK) return rc;
    store_gguf_info info;
    rc = store_gguf_info_read(in, &info, job->err);
    if (rc != DK_OK) {
        dk_free(in);
        return rc;
    }
    char status[160];
    snprintf(status, sizeof status, "quantizing %s model to %s", info.file_type[0] ? info.file_type : "the", type);
    store_gguf_info_free(&info);
    rc = report(job, status, NULL, 0, 0);
    dk_buf tmp = {0};
    dk_buf_printf(&tmp, "%s/blobs", store_root(job->st));
    if (rc == DK_OK && !tmp.failed) rc = store_mkdirs(tmp.data, job->err);
    dk_buf_puts(&tmp, "/.tmp-quantize-XXXXXX");
    if (rc == DK_OK && tmp.failed) rc = dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    int fd = rc == DK_OK ? mkstemp(tmp.data) : -1;
    if (rc == DK_OK && fd < 0) rc = dk_fail(job->err, DK_ERR_IO, "cannot create %s: %s", tmp.data, strerror(errno));
    if (fd >= 0) close(fd);
    if (rc == DK_OK) rc = convert_quantize(in, tmp.data, type, 0, NULL, job->err);
    char digest[72];
    struct stat sb;
    if (rc == DK_OK && stat(tmp.data, &sb) != 0) rc = dk_fail(job->err, DK_ERR_IO, "cannot stat %s", tmp.data);
    if (rc == DK_OK) rc = store_blob_adopt(job->st, tmp.data, digest, job->err);
    if (rc == DK_OK) {
        snprintf(status, sizeof status, "creating new layer %s", digest);
        rc = report(job, status, digest, 0, 0);
        dk_strlcpy(model->digest, digest, sizeof model->digest);
        model->size = (uint64_t)sb.st_size;
    }
    if (rc != DK_OK && fd >= 0) unlink(tmp.data);
    dk_buf_free(&tmp);
    dk_free(in);
    return rc;
}

/* The base's parameters with the Modelfile's on top (a key the Modelfile sets replaces the
 * base's value, "stop" included). NULL params in both: no layer. */
static int merge_params(create_job *job, const json_t *base, const json_t *given)
{
    if (!given || json_object_size(given) == 0) return DK_OK;
    json_t *merged = json_is_object(base) ? json_deep_copy(base) : json_object();
    if (!merged || json_object_update(merged, (json_t *)given) != 0) {
        json_decref(merged);
        return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    }
    int rc = layer_put_json(job, STORE_MEDIA_PARAMS, merged);
    json_decref(merged);
    return rc;
}

static int config_put(create_job *job, const char *parent, store_layer *config)
{
    store_layer *model = layer_find(job, STORE_MEDIA_MODEL);
    char *path = NULL;
    int rc = store_blob_path(job->st, model->digest, &path, job->err);
    if (rc != DK_OK) return rc;
    store_gguf_info info;
    rc = store_gguf_info_read(path, &info, job->err);
    dk_free(path);
    if (rc != DK_OK) return rc;
    json_t *diff_ids = json_array();
    for (size_t i = 0; diff_ids && i < job->n_layers; i++) json_array_append_new(diff_ids, json_string(job->layers[i].digest));
    json_t *j = json_pack("{s:s, s:s, s:[s], s:s, s:s, s:{s:s, s:o}}", "model_format", "gguf", "model_family",
                          info.arch, "model_families", info.arch, "model_type", info.parameter_size, "file_type",
                          info.file_type, "rootfs", "type", "layers", "diff_ids", diff_ids);
    store_gguf_info_free(&info);
    if (j && parent) json_object_set_new(j, "parent_model", json_string(parent));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    bool existed = false;
    rc = store_blob_put_bytes(job->st, text, strlen(text), config->digest, &existed, job->err);
    dk_strlcpy(config->media_type, STORE_MEDIA_CONFIG, sizeof config->media_type);
    config->size = strlen(text);
    free(text);
    return rc;
}

static int write_manifest(create_job *job, const store_name *name, const store_layer *config)
{
    store_manifest mf = {.config = *config, .layers = job->layers, .n_layers = job->n_layers};
    char *text = store_manifest_dump(&mf);
    char *path = store_manifest_write_path(job->st, name);
    int rc = text && path ? DK_OK : dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    /* the manifest this one replaces, for its blobs that nothing uses any more */
    store_manifest old;
    char *old_text = NULL;
    size_t n_old = 0;
    char e[DK_ERRLEN];
    bool have_old = rc == DK_OK && access(path, F_OK) == 0 &&
                    dk_file_read(path, STORE_MANIFEST_MAX_BYTES, &old_text, &n_old, e) == DK_OK &&
                    store_manifest_parse(old_text, n_old, &old, e) == DK_OK;
    dk_free(old_text);
    if (rc == DK_OK) rc = report(job, "writing manifest", NULL, 0, 0);
    if (rc == DK_OK) rc = store_write_atomic(path, text, strlen(text), job->err);
    if (have_old) {
        if (rc == DK_OK) store_blobs_collect(job->st, &old);
        store_manifest_free(&old);
    }
    dk_free(text);
    dk_free(path);
    return rc;
}

int store_create(store *st, const char *name_text, const store_modelfile *mf, const store_create_params *params, char *err)
{
    store_name name;
    int rc = store_parse_name(name_text, &name, err);
    if (rc != DK_OK) return rc;
    if (!mf || !mf->from || !*mf->from) return dk_fail(err, DK_ERR_ARG, "the Modelfile has no FROM");
    create_job job = {.st = st, .cp = params, .err = err};
    store_model *base = NULL;
    rc = report(&job, "gathering model components", NULL, 0, 0);
    if (rc == DK_OK) rc = store_resolve(st, mf->from, &base, err);
    if (rc == DK_OK) rc = base->is_file ? base_from_file(&job, base->gguf_path) : base_from_model(&job, base);
    if (rc == DK_OK && !layer_find(&job, STORE_MEDIA_MODEL)) rc = dk_fail(err, DK_ERR_FORMAT, "'%s' has no model layer", mf->from);
    if (rc == DK_OK && params && params->quantize && *params->quantize) rc = quantize_model_layer(&job, params->quantize);
    if (rc == DK_OK && mf->template_text) rc = layer_put(&job, STORE_MEDIA_TEMPLATE, mf->template_text, strlen(mf->template_text));
    if (rc == DK_OK && mf->system) rc = layer_put(&job, STORE_MEDIA_SYSTEM, mf->system, strlen(mf->system));
    if (rc == DK_OK) rc = merge_params(&job, base->params, mf->params);
    if (rc == DK_OK && mf->messages) rc = layer_put_json(&job, STORE_MEDIA_MESSAGES, mf->messages);
    if (rc == DK_OK && mf->license) {
        layers_drop(&job, STORE_MEDIA_LICENSE);
        rc = layer_put(&job, STORE_MEDIA_LICENSE, mf->license, strlen(mf->license));
    }
    store_layer config;
    if (rc == DK_OK) rc = config_put(&job, base->is_file ? NULL : base->name, &config);
    if (rc == DK_OK) rc = write_manifest(&job, &name, &config);
    if (rc == DK_OK) rc = report(&job, "success", NULL, 0, 0);
    store_model_free(base);
    dk_free(job.layers);
    return rc;
}
