/*
 * kit_refs.c: reads the conformance kit's reference JSONs (jansson) and raw float files.
 * Not for: comparisons or tolerances (the tests own those).
 */
#include "kit_refs.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

static int fail(char *err, const char *what, const char *path)
{
    dk_fail(err, DK_ERR_FORMAT, "%s: %s", path, what);
    return -1;
}

long kit_base64_decode(const char *in, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        int v;
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '+') v = 62;
        else if (ch == '/') v = 63;
        else if (ch == '=') break;
        else return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap) return -1;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (long)n;
}

/* Reads a float32 file of exactly n values next to json_path. */
static float *read_floats(const char *json_path, const char *name, size_t n, char *err)
{
    char path[1024];
    const char *slash = strrchr(json_path, '/');
    int dir_len = slash ? (int)(slash - json_path) : 1;
    snprintf(path, sizeof path, "%.*s/%s", dir_len, slash ? json_path : ".", name);
    char *data = NULL;
    size_t len = 0;
    if (dk_file_read(path, (size_t)1 << 30, &data, &len, err) != DK_OK) return NULL;
    if (len != n * sizeof(float)) {
        dk_free(data);
        dk_fail(err, DK_ERR_FORMAT, "%s: %zu bytes, expected %zu", path, len, n * sizeof(float));
        return NULL;
    }
    float *f = dk_malloc_array(n, sizeof(float));
    if (f) memcpy(f, data, n * sizeof(float));
    dk_free(data);
    return f;
}

static int read_ids(json_t *arr, int32_t **out, int64_t *n)
{
    if (!json_is_array(arr)) return -1;
    *n = (int64_t)json_array_size(arr);
    *out = dk_calloc((size_t)*n + 1, sizeof(int32_t));
    if (!*out) return -1;
    for (size_t i = 0; i < json_array_size(arr); i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return 0;
}

static int read_top(json_t *arr, int64_t n, int32_t **ids, float **logits)
{
    if (!json_is_array(arr) || (int64_t)json_array_size(arr) != n) return -1;
    *ids = dk_calloc((size_t)n * KIT_TOP + 1, sizeof(int32_t));
    *logits = dk_calloc((size_t)n * KIT_TOP + 1, sizeof(float));
    if (!*ids || !*logits) return -1;
    for (int64_t i = 0; i < n; i++) {
        json_t *row = json_array_get(arr, (size_t)i);
        if (json_array_size(row) != KIT_TOP) return -1;
        for (int k = 0; k < KIT_TOP; k++) {
            json_t *pair = json_array_get(row, (size_t)k);
            (*ids)[i * KIT_TOP + k] = (int32_t)json_integer_value(json_array_get(pair, 0));
            (*logits)[i * KIT_TOP + k] = (float)json_number_value(json_array_get(pair, 1));
        }
    }
    return 0;
}

int kit_causal_ref_load(kit_causal_ref *r, const char *json_path, char *err)
{
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *root = json_load_file(json_path, JSON_ALLOW_NUL, &je);
    if (!root) return fail(err, je.text, json_path);
    int rc = -1;
    int64_t n;
    r->n_vocab = json_integer_value(json_object_get(root, "n_vocab"));
    if (r->n_vocab <= 0) { fail(err, "no n_vocab", json_path); goto done; }
    if (read_ids(json_object_get(root, "prompt_tokens"), &r->prompt_tokens, &r->n_prompt)) { fail(err, "bad prompt_tokens", json_path); goto done; }
    if (read_ids(json_object_get(root, "greedy_tokens"), &r->greedy_tokens, &r->n_greedy)) { fail(err, "bad greedy_tokens", json_path); goto done; }
    json_t *margins = json_object_get(root, "greedy_margins");
    r->greedy_margins = dk_calloc((size_t)r->n_greedy + 1, sizeof(double));
    if (!r->greedy_margins || (int64_t)json_array_size(margins) != r->n_greedy) { fail(err, "bad greedy_margins", json_path); goto done; }
    for (n = 0; n < r->n_greedy; n++) r->greedy_margins[n] = json_number_value(json_array_get(margins, (size_t)n));
    r->greedy_min_margin = json_number_value(json_object_get(root, "greedy_min_margin"));
    if (read_top(json_object_get(root, "prompt_top10"), r->n_prompt, &r->prompt_top_id, &r->prompt_top_logit) ||
        read_top(json_object_get(root, "greedy_top10"), r->n_greedy, &r->greedy_top_id, &r->greedy_top_logit)) {
        fail(err, "bad top10 lists", json_path);
        goto done;
    }
    const char *b64 = json_string_value(json_object_get(root, "last_logits_b64"));
    r->last_logits = dk_malloc_array((size_t)r->n_vocab, sizeof(float));
    if (!b64 || !r->last_logits ||
        kit_base64_decode(b64, (unsigned char *)r->last_logits, (size_t)r->n_vocab * sizeof(float)) != r->n_vocab * (long)sizeof(float)) {
        fail(err, "bad last_logits_b64", json_path);
        goto done;
    }
    const char *pf = json_string_value(json_object_get(root, "prompt_logits_file"));
    if (pf && !(r->prompt_logits = read_floats(json_path, pf, (size_t)(r->n_prompt * r->n_vocab), err))) goto done;
    const char *gf = json_string_value(json_object_get(root, "gen_logits_file"));
    if (gf && !(r->gen_logits = read_floats(json_path, gf, (size_t)(r->n_greedy * r->n_vocab), err))) goto done;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

void kit_causal_ref_free(kit_causal_ref *r)
{
    dk_free(r->prompt_tokens);
    dk_free(r->greedy_tokens);
    dk_free(r->greedy_margins);
    dk_free(r->prompt_top_id);
    dk_free(r->prompt_top_logit);
    dk_free(r->greedy_top_id);
    dk_free(r->greedy_top_logit);
    dk_free(r->last_logits);
    dk_free(r->prompt_logits);
    dk_free(r->gen_logits);
    memset(r, 0, sizeof *r);
}

static int read_vectors(json_t *arr, int64_t n_seq, int64_t n_embd, float **out)
{
    if ((int64_t)json_array_size(arr) != n_seq) return -1;
    *out = dk_calloc((size_t)(n_seq * n_embd) + 1, sizeof(float));
    if (!*out) return -1;
    for (int64_t s = 0; s < n_seq; s++) {
        json_t *row = json_array_get(arr, (size_t)s);
        if ((int64_t)json_array_size(row) != n_embd) return -1;
        for (int64_t i = 0; i < n_embd; i++) (*out)[s * n_embd + i] = (float)json_number_value(json_array_get(row, (size_t)i));
    }
    return 0;
}

int kit_embed_ref_load(kit_embed_ref *r, const char *json_path, char *err)
{
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *root = json_load_file(json_path, JSON_ALLOW_NUL, &je);
    if (!root) return fail(err, je.text, json_path);
    int rc = -1;
    r->n_embd = json_integer_value(json_object_get(root, "n_embd"));
    json_t *seqs = json_object_get(root, "sequences");
    r->n_seq = (int64_t)json_array_size(seqs);
    if (r->n_embd <= 0 || r->n_seq <= 0) { fail(err, "no n_embd or sequences", json_path); goto done; }
    r->seq_len = dk_calloc((size_t)r->n_seq, sizeof(int64_t));
    size_t total = 0;
    for (int64_t s = 0; s < r->n_seq; s++) total += json_array_size(json_array_get(seqs, (size_t)s));
    r->tokens = dk_calloc(total + 1, sizeof(int32_t));
    if (!r->seq_len || !r->tokens) { fail(err, "out of memory", json_path); goto done; }
    total = 0;
    for (int64_t s = 0; s < r->n_seq; s++) {
        json_t *seq = json_array_get(seqs, (size_t)s);
        r->seq_len[s] = (int64_t)json_array_size(seq);
        for (size_t i = 0; i < json_array_size(seq); i++) r->tokens[total++] = (int32_t)json_integer_value(json_array_get(seq, i));
    }
    if (read_vectors(json_object_get(root, "pooled"), r->n_seq, r->n_embd, &r->pooled) ||
        read_vectors(json_object_get(root, "pooled_normalized"), r->n_seq, r->n_embd, &r->pooled_normalized)) {
        fail(err, "bad pooled vectors", json_path);
        goto done;
    }
    const char *tf = json_string_value(json_object_get(root, "token_embd_file"));
    if (tf && !(r->token_embd = read_floats(json_path, tf, total * (size_t)r->n_embd, err))) goto done;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

void kit_embed_ref_free(kit_embed_ref *r)
{
    dk_free(r->seq_len);
    dk_free(r->tokens);
    dk_free(r->pooled);
    dk_free(r->pooled_normalized);
    dk_free(r->token_embd);
    memset(r, 0, sizeof *r);
}
