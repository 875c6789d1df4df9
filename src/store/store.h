/*
 * store: the local model store. Models have names ("qwen2.5:0.5b", "user/model:tag",
 * "hf.co/USER/REPO:Q4_K_M", "127.0.0.1:5000/library/tiny:latest") and live in Ollama's layout
 * under a root ($DUCKLING_MODELS, default ~/.duckling/models):
 *
 *   manifests/HOST/NAMESPACE/MODEL/TAG   a JSON manifest (schemaVersion 2): config + layers
 *   blobs/sha256-HEX                     content-addressed files (the GGUF, template, params...)
 *
 * An existing Ollama store ($OLLAMA_MODELS, default ~/.ollama/models) is read in place (never
 * written); a path to a .gguf file is a model too. The store also pulls models from registries
 * that speak the Ollama registry protocol (registry.ollama.ai, hf.co, a stand-in on loopback)
 * over HTTP(S) with libcurl: resumable, sha256-verified, atomic (the manifest is written last,
 * so a model appears only when every blob is complete and verified), and creates models from
 * Modelfiles (FROM, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, LICENSE; optional quantization).
 *
 * Not for: loading models (engine/), HTTP serving (server/).
 * Thread safety: a store may be used from several threads; writes to the same name race
 * as on a file system (last writer wins, never a torn manifest: writes go through rename).
 */
#ifndef DK_STORE_H
#define DK_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"

typedef struct store store;

/* ---- names ---- */
typedef struct store_name {
    char host[256];      /* default "registry.ollama.ai" */
    char ns[128];        /* default "library" */
    char model[128];
    char tag[128];       /* default "latest" */
} store_name;

/* Parses "[HOST/][NAMESPACE/]MODEL[:TAG]" (HOST: has a dot or a colon, e.g. hf.co or
 * 127.0.0.1:5000). Names are case-insensitive and limited to [A-Za-z0-9._-] parts.
 * DK_ERR_ARG with a reason for anything else. */
int store_parse_name(const char *text, store_name *out, char *err);
/* The short form: "MODEL:TAG" for registry.ollama.ai/library, "NS/MODEL:TAG" for other
 * namespaces there, "HOST/NS/MODEL:TAG" otherwise. */
void store_format_name(const store_name *name, char *buf, size_t n);

/* ---- opening ---- */
/* root: NULL for $DUCKLING_MODELS or ~/.duckling/models (created when first written);
 * ollama_root: NULL for $OLLAMA_MODELS or ~/.ollama/models, "" for none. Free with store_free. */
int store_open(store **out, const char *root, const char *ollama_root, char *err);
void store_free(store *st); /* NULL is fine */
const char *store_root(const store *st);

/* ---- models ---- */
typedef struct store_model {
    char *name;          /* the short name ("qwen2.5:0.5b"), or the path for a GGUF file */
    char *gguf_path;     /* the file to load: a blob path, or the GGUF file itself */
    char digest[72];     /* "sha256:HEX" of the manifest (of the file itself for a path: its
                            first 64 KiB and size hashed, cheap) */
    uint64_t size;       /* bytes of all layers (the file's size for a path) */
    int64_t modified;    /* unix seconds */
    char *template_text; /* the TEMPLATE layer (a Jinja chat template), or NULL */
    char *system;        /* the SYSTEM layer, or NULL */
    char *license;       /* the LICENSE layer(s), joined, or NULL */
    json_t *params;      /* the params layer: {"temperature":0.7,"stop":["..."],...}, or NULL */
    json_t *messages;    /* the MESSAGE layer: [{"role","content"}...], or NULL */
    char *parent;        /* the FROM it was created from, or NULL */
    bool read_only;      /* found in the Ollama store or a path: rm/cp-as-destination refuse */
    bool is_file;        /* a path to a GGUF file, not a store entry */
    json_t *config;      /* the config blob ({"model_format":"gguf","model_family":...,
                            "model_type":"8.0B","file_type":"Q4_K_M",...}), or NULL */
} store_model;

/* Resolves a name in the store (then the Ollama store), or a path to an existing file
 * (absolute, ./relative, or ending in .gguf). DK_ERR_NOTFOUND: "model 'x' not found".
 * The caller frees *out with store_model_free. */
int store_resolve(store *st, const char *name_or_path, store_model **out, char *err);
void store_model_free(store_model *m); /* NULL is fine */

/* Every model of both stores (names in the duckling store hide the same in Ollama's), by
 * name. The caller frees each with store_model_free and the array with dk_free. */
int store_list(store *st, store_model ***out, size_t *n_out, char *err);

/* Removes the manifest (and the blobs no other manifest uses). DK_ERR_NOTFOUND if absent. */
int store_remove(store *st, const char *name, char *err);
/* A second name for the same blobs (a new manifest). */
int store_copy(store *st, const char *source, const char *destination, char *err);

/* ---- blobs ---- */
/* Path of the blob with digest "sha256:HEX" (or "sha256-HEX") if present (in either store).
 * DK_ERR_NOTFOUND otherwise, DK_ERR_ARG for a malformed digest. Caller frees *path. */
int store_blob_path(store *st, const char *digest, char **path, char *err);
/* Writes data as a blob after checking that its sha256 is digest (DK_ERR_FORMAT if not).
 * Used by POST /api/blobs/:digest. The file is written whole, then renamed. */
int store_blob_put(store *st, const char *digest, const void *data, size_t n, char *err);
/* Same from a file (copied; sha256 computed while copying); *digest_out ("sha256:HEX",
 * 72 bytes) may be NULL. */
int store_blob_put_file(store *st, const char *path, char digest_out[72], char *err);

/* ---- what a GGUF file says about itself (for the config blob, show, details) ---- */
typedef struct store_gguf_info {
    char arch[64];              /* general.architecture ("llama", "qwen2", "bert", ...) */
    uint64_t n_params;          /* general.parameter_count, else the elements of all tensors */
    char parameter_size[24];    /* n_params as Ollama prints it: "8.0B", "494.03M", "260K" */
    char file_type[24];         /* "Q4_K_M", "F16", ...: general.file_type, else the most
                                   common type of the 2-D tensors */
    uint64_t context_length;    /* ARCH.context_length, 0 if absent */
    uint64_t embedding_length;  /* ARCH.embedding_length, 0 if absent */
    bool embedding;             /* an encoder (bert family, or ARCH.pooling_type set) */
    char *chat_template;        /* tokenizer.chat_template, or NULL; freed by store_gguf_info_free */
} store_gguf_info;

/* Opens (and validates) a GGUF only to read these. Free with store_gguf_info_free. */
int store_gguf_info_read(const char *path, store_gguf_info *out, char *err);
/* The same from a file already open (gguf/gguf.h; borrowed). */
struct gguf_file;
int store_gguf_info_of(const struct gguf_file *f, store_gguf_info *out, char *err);
void store_gguf_info_free(store_gguf_info *info);

/* ---- progress (pull and create) ---- */
/* status: "pulling manifest", "pulling 6a0746a1ec1a" (the first 12 hex digits of the blob, as
 * Ollama says it; digest is then the whole "sha256:HEX"), "verifying sha256 digest",
 * "writing manifest", "success"; create: "gathering model components", "copying file
 * sha256:...", "quantizing F32 model to Q4_K_M", "using existing layer sha256:...",
 * "creating new layer sha256:...", "writing manifest", "success"; digest may be NULL; total/completed in
 * bytes (0 when not a transfer). Return non-zero to cancel (the operation fails with DK_ERR_LIMIT
 * "cancelled" and leaves partial blobs for a resume, never a manifest). */
typedef int (*store_progress_fn)(void *user, const char *status, const char *digest, uint64_t total,
                                 uint64_t completed);

/* ---- pull ---- */
typedef struct store_pull_params {
    bool insecure;              /* plain HTTP (and unverified TLS) allowed */
    store_progress_fn progress; /* may be NULL */
    void *user;
    const atomic_int *cancel;   /* may be NULL */
} store_pull_params;

/* Downloads a model with the Ollama registry protocol: GET /v2/NS/MODEL/manifests/TAG, then
 * every layer's GET /v2/NS/MODEL/blobs/sha256:HEX (following redirects), each into
 * blobs/sha256-HEX-partial, resumed with a Range request when a partial file is there,
 * verified (sha256 and size) and renamed; the manifest is written last. The registry's URL
 * is https://HOST, http://HOST when insecure; $DUCKLING_REGISTRY (a URL) replaces it for
 * registry.ollama.ai (hf.co/USER/REPO:QUANT is https://hf.co, which serves the same API).
 * Blobs already in the duckling store are skipped; a dropped connection is retried 3 times
 * from where it stopped within one call; 30 s connect timeout, and a transfer under 1 byte/s
 * for 60 s is dropped. Concurrent pulls of the same blob (threads or processes) take turns
 * on its partial file. Errors: DK_ERR_NOTFOUND (404 from the registry), DK_ERR_IO (network,
 * with the reason; the partial is kept for the next pull), DK_ERR_FORMAT (a bad manifest or a
 * digest mismatch: the bad blob is deleted), DK_ERR_LIMIT ("cancelled"). No manifest is
 * written on any error. Public models only (no registry authentication). */
int store_pull(store *st, const char *name, const store_pull_params *params, char *err);

/* ---- Modelfile and create ---- */
typedef struct store_modelfile {
    char *from;          /* a model name or a GGUF path (required) */
    char *template_text; /* or NULL */
    char *system;
    char *license;
    json_t *params;      /* object: PARAMETER lines; "stop" collects into an array, numbers
                            and booleans typed as Ollama types them */
    json_t *messages;    /* array of {"role","content"} or NULL */
} store_modelfile;

/* Parses a Modelfile: instructions are case-insensitive, values may be "quoted" or
 * """multi-line"""; # comments. DK_ERR_FORMAT with the line number on error (unknown
 * instruction, unknown PARAMETER, bad value, ADAPTER: DK_ERR_UNSUPPORTED). Free with
 * store_modelfile_free. */
int store_modelfile_parse(const char *text, store_modelfile *out, char *err);
void store_modelfile_free(store_modelfile *mf);
/* Same for the fields of a JSON create request ({from, template, system, license,
 * parameters, messages, files}) as /api/create receives them; files maps file names to
 * blob digests already in the store (the first .gguf becomes FROM when from is absent). */
int store_modelfile_from_json(store *st, const json_t *request, store_modelfile *out, char *err);
/* The Modelfile text of a model (as `ollama show --modelfile` prints it). Caller frees. */
char *store_modelfile_text(const store_model *m);

typedef struct store_create_params {
    const char *quantize;       /* NULL, or a type such as "q4_K_M", "q8_0" (convert/) */
    store_progress_fn progress; /* may be NULL */
    void *user;
} store_create_params;

/* Creates (or replaces) the model name from a Modelfile: the base's layers (the GGUF copied in
 * as a blob when FROM is a path, quantized into a new blob when asked), plus layers for the
 * template, system, params, messages and license that the Modelfile gives (they replace the
 * base's; parameters are merged into the base's, the Modelfile's winning, so that a model made
 * FROM another keeps its stop strings). A FROM path that is itself a blob of either store is
 * used without copying. Blobs of a replaced manifest that nothing uses any more are deleted. */
int store_create(store *st, const char *name, const store_modelfile *mf, const store_create_params *params, char *err);

#endif
