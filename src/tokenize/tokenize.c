/*
 * tokenize.c: vocabulary loading, the special-token partition and the three encoders of
 * tokenize.h. SPM and BPE share one merge loop (merge_pieces): split into UTF-8 characters,
 * then repeatedly merge the best adjacent pair (SPM: highest token score; BPE: lowest merge
 * rank; leftmost on ties). Pieces the vocabulary lacks fall back to byte tokens.
 */
#include "tokenize/tokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <stdlib.h>
#include <string.h>

struct tok_vocab {
    const gguf_file *f;
    enum tok_model model;
    size_t n_vocab;
    gguf_str *text;          /* (n_vocab) token texts, pointing into f */
    float *score;            /* (n_vocab) */
    uint8_t *type;           /* (n_vocab) enum tok_type */
    int32_t *slots;          /* (n_slots) open-addressing hash of text -> id, -1 empty */
    size_t n_slots;
    int32_t *specials;       /* (n_specials) special ids, longest text first */
    size_t n_specials;
    int32_t byte_token[256]; /* id of <0xXX>, or -1 */
    int32_t bos, eos, eot, eom, unk, sep;
    bool add_bos, add_eos, add_space_prefix;
    bool normalize_nfc;      /* tokenizer.ggml.normalizer = "nfc" (written by convert-tokenizer) */
    /* byte-level BPE */
    gguf_str *merges;        /* (n_merges) "left right", rank = index */
    size_t n_merges;
    int32_t *merge_slots;    /* (n_merge_slots) hash of merge text -> rank, -1 empty */
    size_t n_merge_slots;
    pcre2_code *pre_regex[6]; /* the pre-tokenizer of tokenizer.ggml.pre: applied in turn */
    size_t n_pre_regex;
    bool ignore_merges;      /* a word that is a token is taken whole (llama3) */
    char byte_char[256][3];  /* GPT-2's byte -> printable code point, as UTF-8 */
    uint8_t byte_char_len[256];
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    size_t mask = v->n_slots - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = v->slots[i];
        if (id < 0) return -1;
        if (v->text[id].len == n && memcmp(v->text[id].ptr, s, n) == 0) return id;
    }
}

static void index_insert(tok_vocab *v, int32_t id)
{
    size_t mask = v->n_slots - 1;
    size_t i = hash_bytes(v->text[id].ptr, v->text[id].len) & mask;
    while (v->slots[i] >= 0) {
        const gguf_str *t = &v->text[v->slots[i]];
        if (t->len == v->text[id].len && memcmp(t->ptr, v->text[id].ptr, t->len) == 0) return; /* first wins */
        i = (i + 1) & mask;
    }
    v->slots[i] = id;
}

static int32_t special_id(const gguf_file *f, const char *key, size_t n_vocab, int32_t fallback, char *err, int *rc)
{
    uint32_t id;
    int r = gguf_get_u32(f, key, &id);
    if (r == DK_ERR_NOTFOUND) return fallback;
    if (r != DK_OK) {
        *rc = dk_fail(err, DK_ERR_FORMAT, "tokenizer: %s is not an integer", key);
        return -1;
    }
    if (id >= n_vocab) return fallback; /* as llama.cpp: a bad special id falls back to the default */
    return (int32_t)id;
}

static bool get_flag(const gguf_file *f, const char *key, bool fallback)
{
    bool b;
    return gguf_get_bool(f, key, &b) == DK_OK ? b : fallback;
}

static int cmp_special_len_desc(const void *a, const void *b, void *ctx)
{
    const tok_vocab *v = ctx;
    size_t la = v->text[*(const int32_t *)a].len, lb = v->text[*(const int32_t *)b].len;
    if (la != lb) return la > lb ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

static int load_arrays(tok_vocab *v, const gguf_file *f, char *err)
{
    enum gguf_value_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &data) != DK_OK || et != GGUF_VAL_STRING || n == 0)
        return dk_fail(err, DK_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens is missing or not a string array");
    if (n > INT32_MAX) return dk_fail(err, DK_ERR_FORMAT, "tokenizer: %llu tokens is too many", (unsigned long long)n);
    v->n_vocab = (size_t)n;
    v->text = dk_malloc_array(n, sizeof *v->text);
    v->score = dk_calloc(n, sizeof *v->score);
    v->type = dk_malloc(n);
    if (!v->text || !v->score || !v->type) return dk_fail(err, DK_ERR_NOMEM, "tokenizer: out of memory");
    for (uint64_t i = 0; i < n; i++) gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &v->text[i]);
    memset(v->type, TOK_TYPE_NORMAL, n);

    uint64_t m;
    if (gguf_get_arr(f, "tokenizer.ggml.scores", &et, &m, &data) == DK_OK) {
        if (m != n || (et != GGUF_VAL_FLOAT32 && et != GGUF_VAL_FLOAT64))
            return dk_fail(err, DK_ERR_FORMAT, "tokenizer: tokenizer.ggml.scores has %llu entries for %llu tokens",
                           (unsigned long long)m, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) v->score[i] = (float)gguf_arr_get_f64(et, data, i);
    }
    if (gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &m, &data) == DK_OK) {
        if (m != n || et == GGUF_VAL_STRING || et == GGUF_VAL_FLOAT32 || et == GGUF_VAL_FLOAT64)
            return dk_fail(err, DK_ERR_FORMAT, "tokenizer: tokenizer.ggml.token_type has %llu entries for %llu tokens",
                           (unsigned long long)m, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            int64_t t = gguf_arr_get_i64(et, data, i);
            v->type[i] = (t >= TOK_TYPE_UNDEFINED && t <= TOK_TYPE_BYTE) ? (uint8_t)t : TOK_TYPE_UNDEFINED;
        }
    }
    return DK_OK;
}

static int build_index(tok_vocab *v, char *err)
{
    v->n_slots = 16;
    while (v->n_slots < v->n_vocab * 2) v->n_slots *= 2;
    v->slots = dk_malloc_array(v->n_slots, sizeof *v->slots);
    v->specials = dk_malloc_array(v->n_vocab, sizeof *v->specials);
    if (!v->slots || !v->specials) return dk_fail(err, DK_ERR_NOMEM, "tokenizer: out of memory");
    memset(v->slots, 0xff, v->n_slots * sizeof *v->slots);
    for (size_t i = 0; i < 256; i++) v->byte_token[i] = -1;
    for (size_t i = 0; i < v->n_vocab; i++) {
        index_insert(v, (int32_t)i);
        const gguf_str *t = &v->text[i];
        if (v->type[i] == TOK_TYPE_BYTE && t->len == 6 && memcmp(t->ptr, "<0x", 3) == 0 && t->ptr[5] == '>') {
            char hex[3] = {t->ptr[3], t->ptr[4], 0};
            char *end;
            unsigned long b = strtoul(hex, &end, 16);
            if (*end == 0 && v->byte_token[b] < 0) v->byte_token[b] = (int32_t)i;
        }
        uint8_t ty = v->type[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) && t->len > 0)
            v->specials[v->n_specials++] = (int32_t)i;
    }
    qsort_r(v->specials, v->n_specials, sizeof *v->specials, cmp_special_len_desc, v);
    return DK_OK;
}

/* ---- byte-level BPE: loading ---- */

/* Pre-tokenizer regexes by tokenizer.ggml.pre (the splits llama.cpp applies). */
static const char PRE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PRE_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PRE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char PRE_FALCON_PUNCT[] = "[\\p{P}\\$\\+<=>\\^~\\|`]+";
static const char PRE_GPT2_STRICT[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
static const char PRE_CJK[] = "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

static const char PRE_DEEPSEEK_LETTERS[] =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
static const char PRE_DEEPSEEK_PUNCT[] = "\\s?[!-/:-~！-／：-～‘-‟　-。]+";

/* Each pre-tokenizer is a list of regexes applied in turn: every regex splits each piece the
 * previous ones left into its matches and the text between them (llama.cpp's semantics). */
static const struct {
    const char *pre;
    const char *regex[6];
    bool ignore_merges;
} bpe_pre_table[] = {
    {"default", {PRE_GPT2}, false},
    {"gpt2", {PRE_GPT2}, false},
    {"gpt-2", {PRE_GPT2}, false},
    {"llama3", {PRE_LLAMA3}, true},
    {"llama-v3", {PRE_LLAMA3}, true},
    {"llama-bpe", {PRE_LLAMA3}, true},
    {"falcon3", {PRE_LLAMA3}, true},
    {"qwen2", {PRE_QWEN2}, false},
    {"deepseek-r1-qwen", {PRE_QWEN2}, false},
    {"starcoder", {"\\p{N}", PRE_GPT2_STRICT}, false},
    {"refact", {"\\p{N}", PRE_GPT2_STRICT}, false},
    {"smollm", {"\\p{N}", PRE_GPT2_STRICT}, false},
    {"falcon", {PRE_FALCON_PUNCT, PRE_GPT2_STRICT, "[0-9][0-9][0-9]"}, false},
    {"deepseek-llm", {"[\\r\\n]", PRE_DEEPSEEK_LETTERS, PRE_DEEPSEEK_PUNCT, "\\s+$", PRE_CJK, "\\p{N}+"}, false},
    {"deepseek-coder", {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", PRE_CJK, "\\p{N}"}, false},
};

static uint64_t hash_merge(const char *s, size_t n) { return hash_bytes(s, n) * 0x9E3779B97F4A7C15ull; }

static int32_t merge_rank(const tok_vocab *v, const char *s, size_t n)
{
    if (!v->n_merge_slots) return -1;
    size_t mask = v->n_merge_slots - 1;
    for (size_t i = hash_merge(s, n) & mask;; i = (i + 1) & mask) {
        int32_t r = v->merge_slots[i];
        if (r < 0) return -1;
        if (v->merges[r].len == n && memcmp(v->merges[r].ptr, s, n) == 0) return r;
    }
}

static void init_byte_chars(tok_vocab *v)
{
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        int cp = printable ? b : next++;
        if (cp < 0x80) {
            v->byte_char[b][0] = (char)cp;
            v->byte_char_len[b] = 1;
        } else {
            v->byte_char[b][0] = (char)(0xC0 | (cp >> 6));
            v->byte_char[b][1] = (char)(0x80 | (cp & 0x3F));
            v->byte_char_len[b] = 2;
        }
    }
}

static int load_bpe(tok_vocab *v, const gguf_file *f, char *err)
{
    init_byte_chars(v);
    enum gguf_value_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, "tokenizer.ggml.merges", &et, &n, &data) != DK_OK || et != GGUF_VAL_STRING)
        return dk_fail(err, DK_ERR_FORMAT, "tokenizer: a BPE vocabulary needs tokenizer.ggml.merges");
    if (n > INT32_MAX) return dk_fail(err, DK_ERR_FORMAT, "tokenizer: too many merges");
    v->n_merges = (size_t)n;
    v->merges = dk_malloc_array(n ? n : 1, sizeof *v->merges);
    v->n_merge_slots = 16;
    while (v->n_merge_slots < v->n_merges * 2) v->n_merge_slots *= 2;
    v->merge_slots = dk_malloc_array(v->n_merge_slots, sizeof *v->merge_slots);
    if (!v->merges || !v->merge_slots) return dk_fail(err, DK_ERR_NOMEM, "tokenizer: out of memory");
    memset(v->merge_slots, 0xff, v->n_merge_slots * sizeof *v->merge_slots);
    size_t mask = v->n_merge_slots - 1;
    for (uint64_t r = 0; r < n; r++) {
        gguf_get_arr_str(f, "tokenizer.ggml.merges", r, &v->merges[r]);
        const gguf_str *m = &v->merges[r];
        if (m->len < 3 || !memchr(m->ptr + 1, ' ', m->len - 1))
            return dk_fail(err, DK_ERR_FORMAT, "tokenizer: merge %llu is not \"left right\"", (unsigned long long)r);
        size_t i = hash_merge(m->ptr, m->len) & mask;
        while (v->merge_slots[i] >= 0) {
            const gguf_str *o = &v->merges[v->merge_slots[i]];
            if (o->len == m->len && memcmp(o->ptr, m->ptr, m->len) == 0) break;
            i = (i + 1) & mask;
        }
        if (v->merge_slots[i] < 0) v->merge_slots[i] = (int32_t)r;
    }
    gguf_str pre = {"default", 7};
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    const char *const *regex = NULL;
    for (size_t i = 0; i < sizeof bpe_pre_table / sizeof bpe_pre_table[0]; i++) {
        if (strlen(bpe_pre_table[i].pre) == pre.len && memcmp(bpe_pre_table[i].pre, pre.ptr, pre.len) == 0) {
            regex = bpe_pre_table[i].regex;
            v->ignore_merges = bpe_pre_table[i].ignore_merges;
        }
    }
    if (!regex)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer '%.*s' is not supported yet", (int)pre.len, pre.ptr);
    for (; v->n_pre_regex < 6 && regex[v->n_pre_regex]; v->n_pre_regex++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)regex[v->n_pre_regex], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | PCRE2_DOLLAR_ENDONLY, &code, &at, NULL);
        if (!re) return dk_fail(err, DK_ERR_FORMAT, "tokenizer: pre-tokenizer regex does not compile at %zu", (size_t)at);
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        v->pre_regex[v->n_pre_regex] = re;
    }
    return DK_OK;
}

int tok_vocab_load(tok_vocab **out, const gguf_file *f, char *err)
{
    *out = NULL;
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) != DK_OK)
        return dk_fail(err, DK_ERR_FORMAT, "tokenizer: tokenizer.ggml.model is missing");
    tok_vocab *v = dk_calloc(1, sizeof *v);
    if (!v) return dk_fail(err, DK_ERR_NOMEM, "tokenizer: out of memory");
    v->f = f;
    int rc = DK_OK;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) v->model = TOK_MODEL_SPM;
    else if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) v->model = TOK_MODEL_BPE;
    else if (model.len == 4 && memcmp(model.ptr, "bert", 4) == 0) v->model = TOK_MODEL_WPM;
    else {
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "tokenizer: model '%.*s' is not supported", (int)model.len, model.ptr);
        goto fail;
    }
    if ((rc = load_arrays(v, f, err)) != DK_OK || (rc = build_index(v, err)) != DK_OK) goto fail;
    if (v->model == TOK_MODEL_BPE && (rc = load_bpe(v, f, err)) != DK_OK) goto fail;

    bool spm = v->model == TOK_MODEL_SPM;
    v->bos = special_id(f, "tokenizer.ggml.bos_token_id", v->n_vocab, spm ? 1 : -1, err, &rc);
    v->eos = special_id(f, "tokenizer.ggml.eos_token_id", v->n_vocab, spm ? 2 : -1, err, &rc);
    v->eot = special_id(f, "tokenizer.ggml.eot_token_id", v->n_vocab, -1, err, &rc);
    v->eom = special_id(f, "tokenizer.ggml.eom_token_id", v->n_vocab, -1, err, &rc);
    v->unk = special_id(f, "tokenizer.ggml.unknown_token_id", v->n_vocab, spm ? 0 : -1, err, &rc);
    v->sep = special_id(f, "tokenizer.ggml.seperator_token_id", v->n_vocab, -1, err, &rc);
    if (v->model == TOK_MODEL_WPM) { /* bert: [CLS] text [SEP] */
        int32_t cls = special_id(f, "tokenizer.ggml.cls_token_id", v->n_vocab, -1, err, &rc);
        if (cls >= 0) v->bos = cls;
    }
    if (rc != DK_OK) goto fail;
    if (spm && (size_t)v->bos >= v->n_vocab) v->bos = -1;
    if (spm && (size_t)v->eos >= v->n_vocab) v->eos = -1;
    if (spm && (size_t)v->unk >= v->n_vocab) v->unk = -1;
    v->add_bos = get_flag(f, "tokenizer.ggml.add_bos_token", spm || v->model == TOK_MODEL_WPM);
    v->add_eos = get_flag(f, "tokenizer.ggml.add_eos_token", false);
    v->add_space_prefix = get_flag(f, "tokenizer.ggml.add_space_prefix", spm);
    gguf_str norm;
    v->normalize_nfc = gguf_get_str(f, "tokenizer.ggml.normalizer", &norm) == DK_OK && norm.len == 3 &&
                       memcmp(norm.ptr, "nfc", 3) == 0;
    *out = v;
    return DK_OK;
fail:
    tok_vocab_free(v);
    return rc;
}

void tok_vocab_free(tok_vocab *v)
{
    if (!v) return;
    dk_free(v->text);
    dk_free(v->score);
    dk_free(v->type);
    dk_free(v->slots);
    dk_free(v->specials);
    dk_free(v->merges);
    dk_free(v->merge_slots);
    for (size_t i = 0; i < v->n_pre_regex; i++) pcre2_code_free(v->pre_regex[i]);
    dk_free(v);
}

enum tok_model tok_vocab_model(const tok_vocab *v) { return v->model; }
size_t tok_n_vocab(const tok_vocab *v) { return v->n_vocab; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
    return id >= 0 && (id == v->eos || id == v->eot || id == v->eom);
}

enum tok_type tok_token_type(const tok_vocab *v, int32_t id)
{
    return (id >= 0 && (size_t)id < v->n_vocab) ? (enum tok_type)v->type[id] : TOK_TYPE_UNDEFINED;
}

gguf_str tok_token_text(const tok_vocab *v, int32_t id)
{
    gguf_str none = {"", 0};
    return (id >= 0 && (size_t)id < v->n_vocab) ? v->text[id] : none;
}

/* ---- output list ---- */

typedef struct id_list {
    int32_t *ids;
    size_t n, cap;
    int failed;
} id_list;

static void ids_push(id_list *l, int32_t id)
{
    if (l->failed) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *p = dk_realloc(l->ids, cap * sizeof *p);
        if (!p) {
            l->failed = 1;
            return;
        }
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
}

/* ---- SentencePiece ---- */

typedef struct spm_symbol {
    int prev, next;   /* indices in the symbol array, -1 at the ends */
    size_t start, len; /* bytes of the escaped text; len 0 once merged away */
} spm_symbol;

typedef struct spm_bigram {
    int left, right;
    float score;
    size_t len;       /* bytes of the merged text when queued (detects stale entries) */
} spm_bigram;

/* A binary max-heap ordered by score, then by lower left index. */
typedef struct spm_heap {
    spm_bigram *items;
    size_t n, cap;
    int failed;
} spm_heap;

static bool bigram_before(const spm_bigram *a, const spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm_heap *h, spm_bigram b)
{
    if (h->failed) return;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        spm_bigram *p = dk_realloc(h->items, cap * sizeof *p);
        if (!p) {
            h->failed = 1;
            return;
        }
        h->items = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    h->items[i] = b;
    while (i > 0 && bigram_before(&h->items[i], &h->items[(i - 1) / 2])) {
        spm_bigram t = h->items[i];
        h->items[i] = h->items[(i - 1) / 2];
        h->items[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static spm_bigram heap_pop(spm_heap *h)
{
    spm_bigram top = h->items[0];
    h->items[0] = h->items[--h->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->n && bigram_before(&h->items[l], &h->items[best])) best = l;
        if (r < h->n && bigram_before(&h->items[r], &h->items[best])) best = r;
        if (best == i) break;
        spm_bigram t = h->items[i];
        h->items[i] = h->items[best];
        h->items[best] = t;
        i = best;
    }
    return top;
}

static size_t utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

/* Emits the piece text[start, start+len): a token if the vocabulary has it, else the two
 * pieces some merge made it from, else its bytes. */
static void spm_emit(const tok_vocab *v, const char *text, size_t start, size_t len, id_list *out)
{
    int32_t id = tok_find(v, text + start, len);
    if (id >= 0) {
        ids_push(out, id);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        int32_t b = v->byte_token[(uint8_t)text[start + i]];
        ids_push(out, b >= 0 ? b : v->unk);
    }
}

/* Queues the merge of two adjacent pieces if the vocabulary allows it, ranked as the model
 * ranks merges: SPM by the score of the merged token, BPE by the merge's rank (key is
 * scratch space for the "left right" text). */
static void try_bigram(const tok_vocab *v, const char *text, const spm_symbol *sym, spm_heap *h, dk_buf *key,
                       int left, int right)
{
    if (left < 0 || right < 0) return;
    size_t len = sym[left].len + sym[right].len;
    float score;
    if (v->model == TOK_MODEL_SPM) {
        int32_t id = tok_find(v, text + sym[left].start, len);
        if (id < 0) return;
        score = v->score[id];
    } else {
        dk_buf_clear(key);
        dk_buf_append(key, text + sym[left].start, sym[left].len);
        dk_buf_putc(key, ' ');
        dk_buf_append(key, text + sym[right].start, sym[right].len);
        int32_t rank = key->failed ? -1 : merge_rank(v, key->data, key->len);
        if (rank < 0) return;
        score = -(float)rank;
    }
    heap_push(h, (spm_bigram){left, right, score, len});
}

/* Splits text[0, n) (n > 0) into UTF-8 characters and merges adjacent pieces best first.
 * Returns the symbols (caller frees with dk_free); the surviving pieces are linked from
 * index 0 through .next. NULL when memory runs out. */
static spm_symbol *merge_pieces(const tok_vocab *v, const char *text, size_t n)
{
    spm_symbol *sym = dk_malloc_array(n, sizeof *sym);
    if (!sym) return NULL;
    int n_sym = 0;
    for (size_t off = 0; off < n; n_sym++) {
        size_t l = utf8_len((unsigned char)text[off]);
        if (l > n - off) l = n - off;
        sym[n_sym] = (spm_symbol){n_sym - 1, -1, off, l};
        if (n_sym > 0) sym[n_sym - 1].next = n_sym;
        off += l;
    }
    spm_heap h = {0};
    dk_buf key = {0};
    for (int i = 1; i < n_sym; i++) try_bigram(v, text, sym, &h, &key, i - 1, i);
    while (h.n > 0 && !h.failed) {
        spm_bigram b = heap_pop(&h);
        spm_symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.len || l->next != b.right) continue; /* stale */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        try_bigram(v, text, sym, &h, &key, l->prev, b.left);
        try_bigram(v, text, sym, &h, &key, b.left, l->next);
    }
    int failed = h.failed || key.failed;
    dk_free(h.items);
    dk_buf_free(&key);
    if (failed) {
        dk_free(sym);
        return NULL;
    }
    return sym;
}

static int spm_tokenize(const tok_vocab *v, const char *text, size_t n, id_list *out)
{
    if (n == 0) return DK_OK;
    spm_symbol *sym = merge_pieces(v, text, n);
    if (!sym) return DK_ERR_NOMEM;
    for (int i = 0; i >= 0; i = sym[i].next) spm_emit(v, text, sym[i].start, sym[i].len, out);
    dk_free(sym);
    return DK_OK;
}

/* SPM fragment: optional leading space, then every ' ' becomes U+2581. */
static int spm_fragment(const tok_vocab *v, const char *text, size_t n, bool space_prefix, id_list *out)
{
    dk_buf esc = {0};
    if (space_prefix) dk_buf_puts(&esc, "\xe2\x96\x81");
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') dk_buf_puts(&esc, "\xe2\x96\x81");
        else dk_buf_putc(&esc, text[i]);
    }
    int rc = esc.failed ? DK_ERR_NOMEM : spm_tokenize(v, esc.data, esc.len, out);
    dk_buf_free(&esc);
    return rc;
}

/* ---- byte-level BPE: encoding ---- */

/* Merges one pre-tokenized word (already mapped to GPT-2's printable byte characters). */
static int bpe_word(const tok_vocab *v, const char *word, size_t n, id_list *out)
{
    if (v->ignore_merges) {
        int32_t id = tok_find(v, word, n);
        if (id >= 0) {
            ids_push(out, id);
            return DK_OK;
        }
    }
    spm_symbol *sym = merge_pieces(v, word, n);
    if (!sym) return DK_ERR_NOMEM;
    for (int i = 0; i >= 0; i = sym[i].next) {
        int32_t id = tok_find(v, word + sym[i].start, sym[i].len);
        if (id >= 0) {
            ids_push(out, id);
            continue;
        }
        for (size_t off = sym[i].start; off < sym[i].start + sym[i].len;) { /* character by character */
            size_t l = utf8_len((unsigned char)word[off]);
            int32_t c = tok_find(v, word + off, l);
            if (c >= 0) ids_push(out, c);
            off += l;
        }
    }
    dk_free(sym);
    return DK_OK;
}

static int bpe_emit_word(const tok_vocab *v, const char *text, size_t n, dk_buf *mapped, id_list *out)
{
    if (n == 0) return DK_OK;
    dk_buf_clear(mapped);
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)text[i];
        dk_buf_append(mapped, v->byte_char[b], v->byte_char_len[b]);
    }
    return mapped->failed ? DK_ERR_NOMEM : bpe_word(v, mapped->data, mapped->len, out);
}

/* A piece of text [start, start + len). */
typedef struct span {
    size_t start, len;
} span;

typedef struct span_list {
    span *items;
    size_t n, cap;
    int failed;
} span_list;

static void spans_push(span_list *l, size_t start, size_t len)
{
    if (len == 0 || l->failed) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        span *p = dk_realloc(l->items, cap * sizeof *p);
        if (!p) {
            l->failed = 1;
            return;
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = (span){start, len};
}

/* Splits every piece of in with re (matching each piece on its own, so lookaheads and $ see
 * the piece's end) into its matches and the text between them. */
static int split_spans(const pcre2_code *re, pcre2_match_data *md, const char *text, const span_list *in, span_list *out)
{
    for (size_t k = 0; k < in->n; k++) {
        const char *subject = text + in->items[k].start;
        size_t n = in->items[k].len, pos = 0, last = 0;
        while (pos < n) {
            int m = pcre2_match(re, (PCRE2_SPTR)subject, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (m < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t s = ov[0], e = ov[1];
            if (e == s) { /* empty match: step over one character */
                pos = s + utf8_len((unsigned char)subject[s]);
                continue;
            }
            spans_push(out, in->items[k].start + last, s - last);
            spans_push(out, in->items[k].start + s, e - s);
            pos = last = e;
        }
        spans_push(out, in->items[k].start + last, n - last);
    }
    return out->failed ? DK_ERR_NOMEM : DK_OK;
}

/* Pre-tokenizes a fragment with the vocabulary's regexes and merges each word on its own. */
static int bpe_fragment(const tok_vocab *v, const char *text, size_t n, id_list *out)
{
    span_list cur = {0}, next = {0};
    spans_push(&cur, 0, n);
    int rc = cur.failed ? DK_ERR_NOMEM : DK_OK;
    for (size_t r = 0; r < v->n_pre_regex && rc == DK_OK; r++) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(v->pre_regex[r], NULL);
        if (!md) {
            rc = DK_ERR_NOMEM;
            break;
        }
        next.n = 0;
        rc = split_spans(v->pre_regex[r], md, text, &cur, &next);
        pcre2_match_data_free(md);
        span_list t = cur;
        cur = next;
        next = t;
    }
    dk_buf mapped = {0};
    for (size_t k = 0; k < cur.n && rc == DK_OK; k++)
        rc = bpe_emit_word(v, text + cur.items[k].start, cur.items[k].len, &mapped, out);
    dk_buf_free(&mapped);
    dk_free(cur.items);
    dk_free(next.items);
    return rc;
}

/* Returns the byte a GPT-2 printable code point stands for, or -1. */
static int bpe_unmap(const tok_vocab *v, uint32_t cp)
{
    for (int b = 0; b < 256; b++) {
        uint32_t c = v->byte_char_len[b] == 1 ? (uint8_t)v->byte_char[b][0]
                                              : (((uint32_t)v->byte_char[b][0] & 0x1F) << 6) | ((uint8_t)v->byte_char[b][1] & 0x3F);
        if (c == cp) return b;
    }
    return -1;
}

/* ---- WordPiece (bert) ---- */

static bool wpm_is_whitespace(int32_t c)
{
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0x2028 || c == 0x2029 ||
           utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

static bool wpm_is_chinese(int32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Greedy longest match of "▁word" against the vocabulary; the whole word becomes [UNK] when
 * some part matches nothing. */
static void wpm_word(const tok_vocab *v, const dk_buf *word, id_list *out)
{
    if (word->len == 0) return;
    size_t n = word->len, mark = out->n;
    for (size_t i = 0; i < n;) {
        size_t j = n;
        int32_t id = -1;
        for (; j > i; j--)
            if ((id = tok_find(v, word->data + i, j - i)) >= 0) break;
        if (id < 0) {
            out->n = mark;
            ids_push(out, v->unk);
            return;
        }
        ids_push(out, id);
        i = j;
    }
}

static int wpm_fragment(const tok_vocab *v, const char *text, size_t n, id_list *out)
{
    utf8proc_uint8_t *nfd = NULL;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &nfd,
                                        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    if (len < 0) return DK_ERR_FORMAT;
    dk_buf word = {0};
    dk_buf_puts(&word, "\xe2\x96\x81");
    const size_t prefix = word.len;
    for (utf8proc_ssize_t i = 0; i < len;) {
        utf8proc_int32_t c;
        i += utf8proc_iterate(nfd + i, len - i, &c);
        if (wpm_is_whitespace(c)) {
            if (word.len > prefix) wpm_word(v, &word, out);
            word.len = prefix;
            continue;
        }
        utf8proc_category_t cat = utf8proc_category(c);
        /* controls go, and so do the marks NFD split off (accents, vowel signs) */
        if (c == 0 || c == 0xFFFD || cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_MN ||
            cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME)
            continue;
        /* The vowel and final jamo of a decomposed Hangul syllable go too: that is what the
         * reference (llama.cpp's WPM) produces for Korean (kit bert-bge extra case 4). */
        if (c >= 0x1160 && c <= 0x11FF) continue;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t el = utf8proc_encode_char(utf8proc_tolower(c), enc);
        bool punct = cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
        bool symbol = cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SO;
        if (punct || (c < 0x7F && symbol) || wpm_is_chinese(c)) {
            if (word.len > prefix) wpm_word(v, &word, out);
            word.len = prefix;
            dk_buf_append(&word, enc, (size_t)el);
            wpm_word(v, &word, out);
            word.len = prefix;
        } else {
            dk_buf_append(&word, enc, (size_t)el);
        }
    }
    if (word.len > prefix) wpm_word(v, &word, out);
    int rc = word.failed ? DK_ERR_NOMEM : DK_OK;
    dk_buf_free(&word);
    free(nfd); /* utf8proc allocates with malloc */
    return rc;
}

/* ---- special-token partition ---- */

/* A piece of the input: raw text (token < 0) or one special token. */
typedef struct fragment {
    int32_t token;
    size_t start, len;
} fragment;

typedef struct frag_list {
    fragment *items;
    size_t n, cap;
} frag_list;

static int frags_insert(frag_list *l, size_t at, fragment f)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        fragment *p = dk_realloc(l->items, cap * sizeof *p);
        if (!p) return -1;
        l->items = p;
        l->cap = cap;
    }
    memmove(&l->items[at + 1], &l->items[at], (l->n - at) * sizeof *l->items);
    l->items[at] = f;
    l->n++;
    return 0;
}

/* Splits raw fragments around every occurrence of each special token, longest tokens first,
 * as llama.cpp does. Control and unknown tokens only when parse_special. */
static int partition_specials(const tok_vocab *v, const char *text, frag_list *frags, bool parse_special)
{
    for (size_t s = 0; s < v->n_specials; s++) {
        int32_t id = v->specials[s];
        uint8_t ty = v->type[id];
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        const gguf_str *t = &v->text[id];
        for (size_t i = 0; i < frags->n; i++) {
            fragment f = frags->items[i];
            if (f.token >= 0 || f.len < t->len) continue;
            const char *hit = memmem(text + f.start, f.len, t->ptr, t->len);
            if (!hit) continue;
            size_t pos = (size_t)(hit - text);
            fragment left = {-1, f.start, pos - f.start};
            fragment tok = {id, pos, t->len};
            fragment right = {-1, pos + t->len, f.start + f.len - pos - t->len};
            size_t at = i;
            if (left.len) frags->items[at++] = left;
            else memmove(&frags->items[at], &frags->items[at + 1], (--frags->n - at) * sizeof *frags->items);
            if (frags_insert(frags, at, tok)) return DK_ERR_NOMEM;
            if (right.len && frags_insert(frags, at + 1, right)) return DK_ERR_NOMEM;
            i = at; /* continue scanning after the token (the right part is next) */
        }
    }
    return DK_OK;
}

static int encode_normalized(const tok_vocab *v, const char *text, size_t n_bytes, bool add_special,
                             bool parse_special, int32_t **ids, size_t *n_ids, char *err);

int tok_encode(const tok_vocab *v, const char *text, size_t n_bytes, bool add_special, bool parse_special,
               int32_t **ids, size_t *n_ids, char *err)
{
    if (!v->normalize_nfc || n_bytes == 0)
        return encode_normalized(v, text, n_bytes, add_special, parse_special, ids, n_ids, err);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n_bytes, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) { /* invalid UTF-8: tokenize the bytes as they are, like the byte-level BPE does */
        return encode_normalized(v, text, n_bytes, add_special, parse_special, ids, n_ids, err);
    }
    int rc = encode_normalized(v, (const char *)nfc, (size_t)n, add_special, parse_special, ids, n_ids, err);
    free(nfc); /* utf8proc allocates with malloc */
    return rc;
}

static int encode_normalized(const tok_vocab *v, const char *text, size_t n_bytes, bool add_special,
                             bool parse_special, int32_t **ids, size_t *n_ids, char *err)
{
    *ids = NULL;
    *n_ids = 0;
    frag_list frags = {0};
    id_list out = {0};
    int rc = DK_OK;
    if (n_bytes > 0) {
        fragment all = {-1, 0, n_bytes};
        if (frags_insert(&frags, 0, all) || partition_specials(v, text, &frags, parse_special)) rc = DK_ERR_NOMEM;
    }
    bool prev_special = true; /* a space prefix goes at the start and after special tokens */
    if (add_special && v->add_bos && v->bos >= 0) ids_push(&out, v->bos);
    for (size_t i = 0; i < frags.n && rc == DK_OK; i++) {
        fragment f = frags.items[i];
        if (f.token >= 0) {
            ids_push(&out, f.token);
            prev_special = true;
        } else {
            if (v->model == TOK_MODEL_BPE) rc = bpe_fragment(v, text + f.start, f.len, &out);
            else if (v->model == TOK_MODEL_WPM) rc = wpm_fragment(v, text + f.start, f.len, &out);
            else rc = spm_fragment(v, text + f.start, f.len, v->add_space_prefix && prev_special, &out);
            prev_special = false;
        }
    }
    if (add_special && v->add_eos && v->eos >= 0) ids_push(&out, v->eos);
    if (add_special && v->model == TOK_MODEL_WPM && v->sep >= 0) ids_push(&out, v->sep);
    dk_free(frags.items);
    if (rc == DK_OK && out.failed) rc = DK_ERR_NOMEM;
    if (rc != DK_OK) {
        dk_free(out.ids);
        return dk_fail(err, rc, "tokenizer: out of memory");
    }
    if (!out.ids) out.ids = dk_malloc(sizeof *out.ids);
    *ids = out.ids;
    *n_ids = out.n;
    return DK_OK;
}

int tok_piece(const tok_vocab *v, int32_t id, dk_buf *out, char *err)
{
    if (id < 0 || (size_t)id >= v->n_vocab)
        return dk_fail(err, DK_ERR_ARG, "token id %d is out of range (n_vocab %zu)", (int)id, v->n_vocab);
    const gguf_str *t = &v->text[id];
    switch (v->type[id]) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNUSED:
        return DK_OK;
    case TOK_TYPE_BYTE:
        if (t->len == 6) {
            char hex[3] = {t->ptr[3], t->ptr[4], 0};
            dk_buf_putc(out, (char)strtoul(hex, NULL, 16));
            return out->failed ? DK_ERR_NOMEM : DK_OK;
        }
        break;
    default:
        break;
    }
    if (v->model == TOK_MODEL_SPM) {
        for (size_t i = 0; i < t->len; i++) {
            if (i + 2 < t->len && memcmp(t->ptr + i, "\xe2\x96\x81", 3) == 0) {
                dk_buf_putc(out, ' ');
                i += 2;
            } else {
                dk_buf_putc(out, t->ptr[i]);
            }
        }
    } else if (v->model == TOK_MODEL_BPE && v->type[id] == TOK_TYPE_NORMAL) {
        for (size_t i = 0; i < t->len;) { /* printable code points back to bytes */
            unsigned char c = (unsigned char)t->ptr[i];
            size_t l = utf8_len(c);
            uint32_t cp = c;
            if (l == 2 && i + 1 < t->len) cp = ((uint32_t)(c & 0x1F) << 6) | ((unsigned char)t->ptr[i + 1] & 0x3F);
            int b = (l <= 2) ? bpe_unmap(v, cp) : -1;
            if (b >= 0) dk_buf_putc(out, (char)b);
            else dk_buf_append(out, t->ptr + i, l > t->len - i ? t->len - i : l);
            i += l;
        }
    } else {
        dk_buf_append(out, t->ptr, t->len);
    }
    return out->failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}
