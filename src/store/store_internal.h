/*
 * store_internal.h: what the files of the store module share among themselves (store.c:
 * names, paths, blobs, manifests; modelfile.c; create.c; pull.c). Not part of the module's
 * interface: other modules include store/store.h only.
 *
 * A manifest in memory is a store_manifest: the config blob and the layers, each a media type,
 * a digest "sha256:HEX" (64 lowercase hex digits, checked, so it is safe in a file name) and a
 * size in bytes.
 */
#ifndef DK_STORE_INTERNAL_H
#define DK_STORE_INTERNAL_H

#include "store/store.h"

#define STORE_MEDIA_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define STORE_MEDIA_CONFIG "application/vnd.docker.container.image.v1+json"
#define STORE_MEDIA_MODEL "application/vnd.ollama.image.model"
#define STORE_MEDIA_TEMPLATE "application/vnd.ollama.image.template"
#define STORE_MEDIA_SYSTEM "application/vnd.ollama.image.system"
#define STORE_MEDIA_PARAMS "application/vnd.ollama.image.params"
#define STORE_MEDIA_MESSAGES "application/vnd.ollama.image.messages"
#define STORE_MEDIA_LICENSE "application/vnd.ollama.image.license"

#define STORE_MANIFEST_MAX_BYTES (4u << 20)  /* a manifest is a few hundred bytes */
#define STORE_TEXT_MAX_BYTES (16u << 20)     /* template, system, params, license blobs */

typedef struct store_layer {
    char media_type[128];
    char digest[72];     /* "sha256:HEX" */
    uint64_t size;
} store_layer;

typedef struct store_manifest {
    store_layer config;
    store_layer *layers; /* n_layers, dk_malloc'd */
    size_t n_layers;
} store_manifest;

const char *store_ollama_root(const store *st); /* NULL when there is none */

/* "sha256:HEX" or "sha256-HEX" (hex in either case) -> 64 lowercase hex digits + NUL. */
int store_digest_parse(const char *digest, char hex[65], char *err);
/* sha256 of bytes / of a whole file, as "sha256:HEX". */
int store_sha256_bytes(const void *data, size_t n, char digest[72], char *err);
int store_sha256_file(const char *path, char digest[72], uint64_t *size_out, char *err);

/* mkdir -p. */
int store_mkdirs(const char *dir, char *err);
/* Writes a file whole under a unique temporary name in its directory (created if needed),
 * then renames it: readers never see a torn file, and concurrent writers do not collide. */
int store_write_atomic(const char *path, const void *data, size_t n, char *err);

/* Path of blobs/sha256-HEX in the duckling store (whether or not it exists); dk_free. */
char *store_blob_local_path(const store *st, const char *hex);
/* Moves a complete file (in the blobs directory) to its content address: hashes it and
 * renames it to blobs/sha256-HEX, or deletes it when that blob is already there. */
int store_blob_adopt(store *st, const char *tmp_path, char digest_out[72], char *err);
/* Writes bytes as a blob (digest computed here). *existed tells whether it was there. */
int store_blob_put_bytes(store *st, const void *data, size_t n, char digest_out[72], bool *existed, char *err);

/* Manifests. store_manifest_parse checks the JSON shape and every digest. */
int store_manifest_parse(const char *text, size_t n, store_manifest *out, char *err);
void store_manifest_free(store_manifest *m);
/* The manifest JSON (caller dk_frees). */
char *store_manifest_dump(const store_manifest *m);
/* Finds the manifest file of name under root (components matched case-insensitively);
 * DK_ERR_NOTFOUND when absent. actual (may be NULL) gets the components as on disk. */
int store_manifest_find(const char *root, const store_name *name, store_name *actual, char **path, char *err);
/* Where to write the manifest of name in the duckling store: an existing file of the same name
 * in another case, else the name as given. Caller dk_frees. */
char *store_manifest_write_path(const store *st, const store_name *name);
/* Reads and parses the manifest of name (duckling store first, then Ollama's). */
int store_manifest_read(store *st, const store_name *name, store_manifest *out, char *err);
/* Deletes the blobs of old (in the duckling store) that no manifest there references. */
void store_blobs_collect(store *st, const store_manifest *old);

/* Parameters: sets name to a value given as Modelfile text (typed as Ollama types it; "stop"
 * appends) or as JSON (numbers, booleans, strings; "stop" a string or an array). reason gets
 * a message without a line number. */
int store_param_set_text(json_t *params, const char *name, const char *value, char *reason);
int store_param_set_json(json_t *params, const char *name, const json_t *value, char *reason);
bool store_message_role_valid(const char *role);
/* A Modelfile value written so that store_modelfile_parse reads it back exactly. */
void store_modelfile_quote(dk_buf *b, const char *value);

#endif
