/*
 * convert_tokenizer: Hugging Face tokenizer.json (model BPE) + tokenizer_config.json ->
 * vocabulary-only GGUF, the way llama.cpp's convert_hf_to_gguf lays a vocabulary out.
 * Byte-level BPE -> tokenizer.ggml.model "gpt2" with merges and a pre-tokenizer name found
 * by matching the pre_tokenizer's Split regex; BPE with byte_fallback (Gemma 3 style) ->
 * model "llama" (SentencePiece) with scores from merge ranks (-rank of the merge that makes
 * the token, so SPM's highest-score-first merging follows the BPE order). Token types:
 * special added tokens (and added tokens that look special, <|...|>) CONTROL (3), other added
 * tokens USER_DEFINED (4), <0xXX> BYTE (6), padding UNUSED (5), the rest NORMAL (1).
 * WordPiece/Unigram models are refused. Qwen (pre qwen2) without a bos_token gets
 * <|endoftext|> as BOS id, as llama.cpp's Qwen GGUFs have it (add_bos stays false).
 */
#include "convert/convert_internal.h"

#include <jansson.h>
#include <string.h>

typedef struct tokv {
    int64_t n;
    char **tok;        /* [n] owned strings (NULL: hole, padded) */
    int32_t *type;     /* [n] */
    float *score;      /* [n] */
} tokv;

static void tokv_free(tokv *v)
{
    for (int64_t i = 0; v->tok && i < v->n; i++) dk_free(v->tok[i]);
    dk_free(v->tok);
    dk_free(v->type);
    dk_free(v->score);
}

/* flags: JSON_DECODE_INT_AS_REAL for configs (model_max_length may exceed int64). */
static json_t *load_json(const char *path, size_t flags, char *err)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_DECODE_ANY | flags, &je);
    if (!j) dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: %s:%d: %s", path, je.line, je.text);
    return j;
}

/* Token text of a config value: "str" or {"content": "str"}. */
static const char *tok_text(json_t *v)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

/* Whether a tokenizer.json normalizer is NFC (alone or inside a Sequence). The GGUF key
 * tokenizer.ggml.normalizer = "nfc" carries it to duckling's tokenizer; llama.cpp has no such
 * key and does not normalise, so its own vocabularies are unaffected. */
static bool normalizer_is_nfc(const json_t *n)
{
    if (!json_is_object(n)) return false;
    const char *type = json_string_value(json_object_get(n, "type"));
    if (type && strcmp(type, "NFC") == 0) return true;
    if (type && strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(n, "normalizers"), i, e) if (normalizer_is_nfc(e)) return true;
    }
    return false;
}

/* Finds the first Split regex in a pre_tokenizer (or a Sequence of them). */
static const char *find_regex(json_t *pt)
{
    if (!json_is_object(pt)) return NULL;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type && strcmp(type, "Split") == 0) {
        json_t *pat = json_object_get(pt, "pattern");
        return json_string_value(json_object_get(pat, "Regex"));
    }
    json_t *arr = json_object_get(pt, "pretokenizers");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *r = find_regex(e);
        if (r) return r;
    }
    return NULL;
}

static bool has_type(json_t *pt, const char *want)
{
    if (!json_is_object(pt)) return false;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type && strcmp(type, want) == 0) return true;
    json_t *arr = json_object_get(pt, "pretokenizers");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) if (has_type(e, want)) return true;
    return false;
}

/* The llama.cpp pre-tokenizer name for a byte-level BPE pre_tokenizer. */
static const char *detect_pre(json_t *pt)
{
    const char *re = find_regex(pt);
    if (!re) return has_type(pt, "ByteLevel") ? "gpt2" : "default";
    bool ci_contr = strstr(re, "(?i:'s|'t|'re|'ve|'m|'ll|'d)") != NULL;
    if (ci_contr && strstr(re, "\\p{N}{1,3}")) return "llama-bpe";
    if (ci_contr && strstr(re, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|")) return "qwen2";
    if (strstr(re, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+")) return "gpt2";
    return "default";
}

static bool is_byte_token(const char *s)
{
    return strlen(s) == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

/* llama.cpp's does_token_look_special: added tokens that look like control tokens are
 * CONTROL even when tokenizer.json does not flag them special (e.g. Qwen's <|fim_prefix|>). */
static bool looks_special(const char *s)
{
    size_t n = strlen(s);
    if (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0) return true;
    if (n >= 8 && strncmp(s, "<\xef\xbd\x9c", 4) == 0 && strcmp(s + n - 4, "\xef\xbd\x9c>") == 0) return true;
    return strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0 || strcmp(s, "<2mass>") == 0 || strcmp(s, "[@BOS@]") == 0;
}

static int find_id(json_t *vocab, json_t *added, const char *text, int64_t *out)
{
    if (!text) return DK_ERR_NOTFOUND;
    json_t *id = json_object_get(vocab, text);
    if (json_is_integer(id)) { *out = json_integer_value(id); return DK_OK; }
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && strcmp(c, text) == 0) { *out = json_integer_value(json_object_get(e, "id")); return DK_OK; }
    }
    return DK_ERR_NOTFOUND;
}

/* Does the post_processor's single template add the bos token? */
static bool template_adds(json_t *pp, const char *tok, bool at_start)
{
    if (!json_is_object(pp) || !tok) return false;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(pp, "processors"), i, e) if (template_adds(e, tok, at_start)) return true;
        return false;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return false;
    json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    if (n == 0) return false;
    json_t *e = json_array_get(single, at_start ? 0 : n - 1);
    json_t *sp = json_object_get(e, "SpecialToken");
    const char *id = json_string_value(json_object_get(sp, "id"));
    return id && strcmp(id, tok) == 0;
}

int convert_tokenizer(const convert_tok_opts *o, FILE *log, char *err)
{
    int rc = DK_OK;
    json_t *tj = NULL, *cj = NULL;
    tokv v = {0};
    gguf_writer *w = NULL;
    char **merges = NULL;
    size_t n_merges = 0;
    if (!o || !o->tokenizer_json || !o->out_path) return dk_fail(err, DK_ERR_ARG, "convert-tokenizer: missing path");
    if (o->pad_vocab_to > 10000000) return dk_fail(err, DK_ERR_ARG, "convert-tokenizer: --pad-vocab %lld too large", (long long)o->pad_vocab_to);
    if (!(tj = load_json(o->tokenizer_json, 0, err))) return DK_ERR_FORMAT;
    if (o->config_json && !(cj = load_json(o->config_json, JSON_DECODE_INT_AS_REAL, err))) { rc = DK_ERR_FORMAT; goto done; }
    json_t *model = json_object_get(tj, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    json_t *vocab = json_object_get(model, "vocab");
    json_t *jmerges = json_object_get(model, "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    if (!json_is_object(model) || !json_is_object(vocab)) {
        rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: %s: no model.vocab object", o->tokenizer_json);
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE") != 0) {
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "convert-tokenizer: model type %s not supported (BPE only)", mtype);
        goto done;
    }
    if (jmerges && !json_is_array(jmerges)) {
        rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: model.merges is not an array");
        goto done;
    }
    bool spm = json_is_true(json_object_get(model, "byte_fallback"));

    /* size: max id + 1 over vocab and added tokens */
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > 10000000) {
            rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: bad id for token \"%.40s\"", key);
            goto done;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t ai;
    json_t *ae;
    json_array_foreach(added, ai, ae) {
        json_t *id = json_object_get(ae, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > 10000000 ||
            !json_is_string(json_object_get(ae, "content"))) {
            rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: added_tokens[%zu] has no valid id/content", ai);
            goto done;
        }
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    v.n = max_id + 1;
    if (o->pad_vocab_to > v.n) v.n = o->pad_vocab_to;
    if (v.n <= 0) { rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: empty vocabulary"); goto done; }
    v.tok = dk_calloc((size_t)v.n, sizeof *v.tok);
    v.type = dk_calloc((size_t)v.n, sizeof *v.type);
    v.score = dk_calloc((size_t)v.n, sizeof *v.score);
    if (!v.tok || !v.type || !v.score) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
    json_object_foreach(vocab, key, val) {
        int64_t id = json_integer_value(val);
        if (v.tok[id]) continue;
        if (!(v.tok[id] = dk_strdup(key))) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
        v.type[id] = spm && is_byte_token(key) ? 6 : 1;
        v.score[id] = spm ? -1e9f : 0.0f;
    }
    json_array_foreach(added, ai, ae) {
        int64_t id = json_integer_value(json_object_get(ae, "id"));
        const char *c = json_string_value(json_object_get(ae, "content"));
        dk_free(v.tok[id]);
        if (!(v.tok[id] = dk_strdup(c))) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
        v.type[id] = json_is_true(json_object_get(ae, "special")) || looks_special(c) ? 3 : 4;
        v.score[id] = 0.0f;
    }
    /* merges: strings "a b" or arrays ["a", "b"] */
    n_merges = json_array_size(jmerges);
    merges = dk_calloc(n_merges ? n_merges : 1, sizeof *merges);
    if (!merges) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
    for (size_t i = 0; i < n_merges; i++) {
        json_t *m = json_array_get(jmerges, i);
        const char *a = NULL, *b = NULL;
        dk_buf buf = {0};
        if (json_is_string(m)) {
            dk_buf_puts(&buf, json_string_value(m));
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   (a = json_string_value(json_array_get(m, 0))) && (b = json_string_value(json_array_get(m, 1)))) {
            dk_buf_printf(&buf, "%s %s", a, b);
        } else {
            rc = dk_fail(err, DK_ERR_FORMAT, "convert-tokenizer: merges[%zu] is neither \"a b\" nor [a, b]", i);
            goto done;
        }
        if (buf.failed || !buf.data) { dk_buf_free(&buf); rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
        merges[i] = dk_buf_detach(&buf);
        if (spm) {
            /* the merged token is the pair without the separating space */
            char *sp = strchr(merges[i], ' ');
            if (!sp) continue;
            dk_buf cat = {0};
            dk_buf_append(&cat, merges[i], (size_t)(sp - merges[i]));
            dk_buf_puts(&cat, sp + 1);
            int64_t id;
            if (!cat.failed && cat.data && find_id(vocab, NULL, cat.data, &id) == DK_OK && id >= 0 && id < v.n &&
                v.type[id] == 1 && v.score[id] < -(float)i)
                v.score[id] = -(float)i;
            dk_buf_free(&cat);
        }
    }
    if (spm) {
        /* tokens no merge produces: single characters score 0 (never merged into), others stay very low */
        for (int64_t i = 0; i < v.n; i++) {
            if (!v.tok[i] || v.type[i] != 1 || v.score[i] > -1e9f) continue;
            const unsigned char *s = (const unsigned char *)v.tok[i];
            size_t len = strlen(v.tok[i]), cl = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
            if (len <= cl) v.score[i] = 0.0f;
        }
    }
    for (int64_t i = 0; i < v.n; i++) {
        if (v.tok[i]) continue;
        char b[32];
        snprintf(b, sizeof b, "[PAD%lld]", (long long)i);
        if (!(v.tok[i] = dk_strdup(b))) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
        v.type[i] = 5;
        v.score[i] = -1e9f;
    }

    w = gguf_writer_new();
    if (!w) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: out of memory"); goto done; }
    const char *pre = spm ? "default" : detect_pre(json_object_get(tj, "pre_tokenizer"));
    int r = gguf_writer_set_str(w, "general.architecture", o->arch ? o->arch : "llama");
    r |= gguf_writer_set_str(w, "general.type", "vocab");
    r |= gguf_writer_set_str(w, "general.name", "duckling convert-tokenizer");
    r |= gguf_writer_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    r |= gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    if (normalizer_is_nfc(json_object_get(tj, "normalizer")))
        r |= gguf_writer_set_str(w, "tokenizer.ggml.normalizer", "nfc");
    r |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, NULL, (uint64_t)v.n);
    r |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VAL_INT32, v.type, (uint64_t)v.n);
    if (spm) {
        r |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VAL_FLOAT32, v.score, (uint64_t)v.n);
        r |= gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    } else {
        r |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (uint64_t)n_merges);
    }
    /* special ids: tokenizer_config first, then the post_processor for add_bos/add_eos */
    static const struct { const char *cfg, *key; } specials[] = {
        {"bos_token", "tokenizer.ggml.bos_token_id"}, {"eos_token", "tokenizer.ggml.eos_token_id"},
        {"unk_token", "tokenizer.ggml.unknown_token_id"}, {"pad_token", "tokenizer.ggml.padding_token_id"},
    };
    const char *bos_text = NULL, *eos_text = NULL;
    for (size_t i = 0; i < 4; i++) {
        const char *text = tok_text(json_object_get(cj, specials[i].cfg));
        if (i == 0 && !text && strcmp(pre, "qwen2") == 0) text = "<|endoftext|>";
        if (i == 2 && !text) text = json_string_value(json_object_get(model, "unk_token"));
        int64_t id;
        if (find_id(vocab, added, text, &id) == DK_OK) {
            r |= gguf_writer_set_u32(w, specials[i].key, (uint32_t)id);
            if (i == 0) bos_text = text;
            if (i == 1) eos_text = text;
        } else if (text && log) {
            fprintf(log, "convert-tokenizer: %s \"%s\" is not in the vocabulary; not set\n", specials[i].cfg, text);
        }
    }
    json_t *pp = json_object_get(tj, "post_processor");
    json_t *ab = json_object_get(cj, "add_bos_token"), *ae2 = json_object_get(cj, "add_eos_token");
    bool add_bos = json_is_boolean(ab) ? json_is_true(ab) : template_adds(pp, bos_text, true);
    bool add_eos = json_is_boolean(ae2) ? json_is_true(ae2) : template_adds(pp, eos_text, false);
    r |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    r |= gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", add_eos);
    json_t *ct = json_object_get(cj, "chat_template");
    if (json_is_string(ct)) {
        r |= gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct));
    } else if (json_is_array(ct)) {
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *tmpl = json_string_value(json_object_get(e, "template"));
            if (!name || !tmpl) continue;
            if (strcmp(name, "default") == 0) {
                r |= gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
            } else {
                char k[128];
                snprintf(k, sizeof k, "tokenizer.chat_template.%s", name);
                r |= gguf_writer_set_str(w, k, tmpl);
            }
        }
    }
    if (r != DK_OK) { rc = dk_fail(err, DK_ERR_NOMEM, "convert-tokenizer: cannot set keys"); goto done; }
    if (log) fprintf(log, "convert-tokenizer: %lld tokens, %zu merges, model %s, pre %s, add_bos %d, add_eos %d\n",
                     (long long)v.n, n_merges, spm ? "llama" : "gpt2", pre, add_bos, add_eos);
    rc = gguf_writer_write(w, o->out_path, err);
done:
    for (size_t i = 0; merges && i < n_merges; i++) dk_free(merges[i]);
    dk_free(merges);
    gguf_writer_free(w);
    tokv_free(&v);
    json_decref(tj);
    json_decref(cj);
    return rc;
}
