/*
 * model.c: loading (hyperparameters, tensor binding and shape validation) and the forward
 * pass of every supported architecture, following llama.cpp's graphs (kit/README.md §4).
 * Not for: tokenization or sampling. The numeric work is done by kernels/; this file only
 * arranges it.
 */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"

/* ------------------------------------------------------------------ the model_weights */

/* A weight matrix as the file has it, and its FAST repacking (model_prepare_fast). */
typedef struct model_mat {
    kern_matrix w;
    const kern_packed *packed;
} model_mat;

typedef struct model_layer {
    float *attn_norm, *attn_norm_b;         /* (n_embd) */
    model_mat wq, wk, wv, wqkv, wo;         /* wqkv: phi3 fused (q|k|v rows) */
    bool has_wqkv;
    float *bq, *bk, *bv, *bo;               /* optional biases */
    float *q_norm, *k_norm;                 /* (head_dim_k), qwen3/gemma3 */
    float *post_attn_norm;                  /* gemma2/3 */
    float *attn_out_norm, *attn_out_norm_b; /* bert */
    float *ffn_norm;                        /* (n_embd) */
    model_mat ffn_gate, ffn_up, ffn_down;   /* phi3: ffn_up has 2*n_ff rows (gate|up) */
    bool has_gate;
    float *ffn_up_b, *ffn_down_b;           /* bert */
    float *post_ffw_norm;                   /* gemma2/3 */
    float *out_norm, *out_norm_b;           /* bert layer_output_norm */
    bool swa;                               /* sliding-window attention layer */
} model_layer;

struct model_weights {
    gguf_file *file;
    bool owns_file;
    model_hparams hp;
    kern_matrix tok_embd;        /* (n_vocab rows of n_embd) */
    model_mat output;            /* lm head; == tok_embd when tied */
    float *output_norm;          /* (n_embd) */
    float *rope_factors;         /* (n_rot/2) or NULL: rope_freqs times linear scale */
    float *rope_factors_swa;     /* (n_rot/2) or NULL: rope_freqs alone (SWA layers are not scaled) */
    kern_matrix type_embd, pos_embd; /* bert */
    float *embd_norm, *embd_norm_b;  /* bert */
    model_mat cls;                   /* bert classification head, optional: (n_embd -> n_embd) + tanh */
    float *cls_b;                    /* (n_embd) or NULL */
    model_mat cls_out;               /* optional: (n_embd -> n_cls_out) */
    float *cls_out_b;                /* (n_cls_out) or NULL */
    model_layer *layers;         /* (n_layer) */
    float **vectors;             /* every float vector allocated at load, freed at model_free */
    size_t n_vectors, cap_vectors;
    kern_packed **packs;         /* model_prepare_fast's repacked matrices, freed at model_free */
    size_t n_packs;
    bool prepared;
};

static const char *const arch_names[MODEL_ARCH_COUNT] = {
    "llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "bert",
};

static void shape_str(char *buf, size_t n, const int64_t *ne, uint32_t n_dims)
{
    if (n_dims <= 1) snprintf(buf, n, "[%lld]", (long long)ne[0]);
    else if (n_dims == 2) snprintf(buf, n, "[%lld, %lld]", (long long)ne[0], (long long)ne[1]);
    else snprintf(buf, n, "[%lld, %lld, %lld, ...]", (long long)ne[0], (long long)ne[1], (long long)ne[2]);
}

/* Finds a tensor and checks its shape (ne0, ne1; ne1 = 0 means a 1-D tensor). */
static int find_checked(const model_weights *m, const char *name, int64_t ne0, int64_t ne1, bool required,
                        const gguf_tensor **out, char *err)
{
    const gguf_tensor *t = gguf_find_tensor(m->file, name);
    *out = NULL;
    if (!t) {
        if (!required) return DK_OK;
        if (ne1) return dk_fail(err, DK_ERR_FORMAT, "missing tensor %s (expected [%lld, %lld])", name, (long long)ne0, (long long)ne1);
        return dk_fail(err, DK_ERR_FORMAT, "missing tensor %s (expected [%lld])", name, (long long)ne0);
    }
    uint32_t want_dims = ne1 ? 2 : 1;
    int64_t want[GGUF_MAX_DIMS] = {ne0, ne1 ? ne1 : 1, 1, 1};
    bool ok = true;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) if (t->ne[i] != want[i]) ok = false;
    if (!ok) {
        char a[96], b[96];
        shape_str(a, sizeof a, want, want_dims);
        shape_str(b, sizeof b, t->ne, t->n_dims);
        return dk_fail(err, DK_ERR_FORMAT, "tensor %s has shape %s, expected %s", name, b, a);
    }
    *out = t;
    return DK_OK;
}

static int bind_matrix(model_weights *m, const char *name, int64_t n_in, int64_t n_out, bool required,
                       kern_matrix *mat, bool *present, char *err)
{
    const gguf_tensor *t;
    int rc = find_checked(m, name, n_in, n_out, required, &t, err);
    if (present) *present = t != NULL;
    if (rc != DK_OK || !t) return rc;
    if (t->type == GGUF_TYPE_Q8_1 || t->type == GGUF_TYPE_Q8_K)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "tensor %s: type %s is not a weight type", name, gguf_type_name(t->type));
    return kern_matrix_from_tensor(mat, t, err);
}

static int push_vector(model_weights *m, float *v)
{
    if (m->n_vectors == m->cap_vectors) {
        size_t cap = m->cap_vectors ? 2 * m->cap_vectors : 64;
        float **p = dk_realloc(m->vectors, cap * sizeof *p);
        if (!p) return DK_ERR_NOMEM;
        m->vectors = p;
        m->cap_vectors = cap;
    }
    m->vectors[m->n_vectors++] = v;
    return DK_OK;
}

/* Reads a 1-D tensor of n values as floats (F32, F16, BF16 or any block type). */
static int bind_vector(model_weights *m, const char *name, int64_t n, bool required, float **out, char *err)
{
    const gguf_tensor *t;
    *out = NULL;
    int rc = find_checked(m, name, n, 0, required, &t, err);
    if (rc != DK_OK || !t) return rc;
    if (t->type == GGUF_TYPE_Q8_1 || t->type == GGUF_TYPE_Q8_K)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "tensor %s: type %s is not a weight type", name, gguf_type_name(t->type));
    float *v = dk_malloc_array((size_t)n, sizeof(float));
    if (!v) return dk_fail(err, DK_ERR_NOMEM, "out of memory reading %s", name);
    if (push_vector(m, v) != DK_OK) {
        dk_free(v);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory reading %s", name);
    }
    kern_dequantize_row(t->type, t->data, v, n);
    *out = v;
    return DK_OK;
}

static int get_u32_key(const gguf_file *f, const char *arch, const char *suffix, bool required,
                       int64_t def, int64_t *out, char *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == DK_OK) { *out = v; return DK_OK; }
    if (rc == DK_ERR_NOTFOUND && !required) { *out = def; return DK_OK; }
    if (rc == DK_ERR_NOTFOUND) return dk_fail(err, DK_ERR_FORMAT, "missing key %s", key);
    return dk_fail(err, DK_ERR_FORMAT, "key %s: not an unsigned 32-bit integer", key);
}

static int get_f32_key(const gguf_file *f, const char *arch, const char *suffix, float def,
                       float *out, bool *present, char *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(f, key, out);
    if (present) *present = rc == DK_OK;
    if (rc == DK_OK) return DK_OK;
    if (rc == DK_ERR_NOTFOUND) { *out = def; return DK_OK; }
    return dk_fail(err, DK_ERR_FORMAT, "key %s: not a float", key);
}

static int read_hparams(model_weights *m, char *err)
{
    const gguf_file *f = m->file;
    model_hparams *hp = &m->hp;
    gguf_str s;
    int rc = gguf_get_str(f, "general.architecture", &s);
    if (rc != DK_OK) return dk_fail(err, DK_ERR_FORMAT, "missing or invalid key general.architecture");
    int arch = -1;
    for (int i = 0; i < MODEL_ARCH_COUNT; i++)
        if (strlen(arch_names[i]) == s.len && memcmp(arch_names[i], s.ptr, s.len) == 0) arch = i;
    if (arch < 0)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "unsupported architecture '%.*s' (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3, bert)",
                       (int)(s.len > 64 ? 64 : s.len), s.ptr);
    hp->arch = (enum model_arch)arch;
    const char *a = arch_names[arch];
    hp->arch_name = a;

    if ((rc = get_u32_key(f, a, "context_length", false, 0, &hp->n_ctx_train, err))) return rc;
    if ((rc = get_u32_key(f, a, "embedding_length", true, 0, &hp->n_embd, err))) return rc;
    if ((rc = get_u32_key(f, a, "block_count", true, 0, &hp->n_layer, err))) return rc;
    if ((rc = get_u32_key(f, a, "feed_forward_length", true, 0, &hp->n_ff, err))) return rc;
    if ((rc = get_u32_key(f, a, "attention.head_count", true, 0, &hp->n_head, err))) return rc;
    if ((rc = get_u32_key(f, a, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv, err))) return rc;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_ff <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_embd > (1 << 20) || hp->n_layer > 4096 || hp->n_ff > (1 << 22) || hp->n_head > 4096 ||
        hp->n_head % hp->n_head_kv != 0)
        return dk_fail(err, DK_ERR_FORMAT, "invalid hyperparameters: n_embd %lld, n_layer %lld, n_ff %lld, n_head %lld, n_head_kv %lld",
                       (long long)hp->n_embd, (long long)hp->n_layer, (long long)hp->n_ff, (long long)hp->n_head, (long long)hp->n_head_kv);
    if ((rc = get_u32_key(f, a, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim_k, err))) return rc;
    if ((rc = get_u32_key(f, a, "attention.value_length", false, hp->head_dim_k, &hp->head_dim_v, err))) return rc;
    if ((rc = get_u32_key(f, a, "rope.dimension_count", false, hp->head_dim_k, &hp->n_rot, err))) return rc;
    if (hp->head_dim_k <= 0 || hp->head_dim_v <= 0 || hp->head_dim_k > 4096 || hp->head_dim_v > 4096 ||
        hp->n_rot <= 0 || hp->n_rot > hp->head_dim_k || hp->n_rot % 2)
        return dk_fail(err, DK_ERR_FORMAT, "invalid head dims: key %lld, value %lld, rope %lld",
                       (long long)hp->head_dim_k, (long long)hp->head_dim_v, (long long)hp->n_rot);

    bool bert = hp->arch == MODEL_ARCH_BERT;
    bool present;
    if (bert) {
        if ((rc = get_f32_key(f, a, "attention.layer_norm_epsilon", 1e-12f, &hp->norm_eps, NULL, err))) return rc;
    } else {
        if ((rc = get_f32_key(f, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps, NULL, err))) return rc;
    }
    if ((rc = get_f32_key(f, a, "rope.freq_base", 10000.0f, &hp->rope_base, NULL, err))) return rc;
    if ((rc = get_f32_key(f, a, "rope.freq_base_swa", 10000.0f, &hp->rope_base_swa, NULL, err))) return rc;
    hp->rope_scale_linear = 1.0f;
    {
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        gguf_str st;
        if (gguf_get_str(f, key, &st) == DK_OK) {
            float factor = 1.0f;
            if ((rc = get_f32_key(f, a, "rope.scaling.factor", 1.0f, &factor, NULL, err))) return rc;
            if (st.len == 6 && memcmp(st.ptr, "linear", 6) == 0) {
                if (factor > 0) hp->rope_scale_linear = factor;
            } else if (!(st.len == 4 && memcmp(st.ptr, "none", 4) == 0) && factor != 1.0f && factor != 0.0f) {
                return dk_fail(err, DK_ERR_UNSUPPORTED, "unsupported rope scaling type '%.*s'", (int)(st.len > 32 ? 32 : st.len), st.ptr);
            }
        }
    }
    hp->rope_neox = hp->arch == MODEL_ARCH_QWEN2 || hp->arch == MODEL_ARCH_QWEN3 || hp->arch == MODEL_ARCH_GEMMA2 ||
                    hp->arch == MODEL_ARCH_GEMMA3 || hp->arch == MODEL_ARCH_PHI3;
    hp->n_swa = 0;
    hp->swa_period = 0;
    if (hp->arch == MODEL_ARCH_GEMMA2 || hp->arch == MODEL_ARCH_GEMMA3) {
        /* gemma2 files may omit the window: llama.cpp's default is 4096 */
        if ((rc = get_u32_key(f, a, "attention.sliding_window", false, hp->arch == MODEL_ARCH_GEMMA2 ? 4096 : 0,
                              &hp->n_swa, err))) return rc;
        char key[128];
        snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", a);
        int64_t i_key = gguf_find_key(f, key);
        if (i_key >= 0 && gguf_kv_type(f, i_key) == GGUF_VAL_ARRAY) {
            hp->swa_period = 0; /* per-layer flags, read in bind_tensors */
        } else {
            if ((rc = get_u32_key(f, a, "attention.sliding_window_pattern", false,
                                  hp->arch == MODEL_ARCH_GEMMA2 ? 2 : 6, &hp->swa_period, err))) return rc;
            if (hp->swa_period <= 0) hp->swa_period = 1;
        }
    }
    float def_attn_cap = hp->arch == MODEL_ARCH_GEMMA2 ? 50.0f : 0.0f;
    float def_final_cap = hp->arch == MODEL_ARCH_GEMMA2 ? 30.0f : 0.0f;
    if ((rc = get_f32_key(f, a, "attn_logit_softcapping", def_attn_cap, &hp->attn_softcap, &present, err))) return rc;
    if (hp->arch != MODEL_ARCH_GEMMA2) hp->attn_softcap = 0; /* llama.cpp uses it only for gemma2 */
    if ((rc = get_f32_key(f, a, "final_logit_softcapping", def_final_cap, &hp->final_softcap, &present, err))) return rc;
    /* Q scaling: 1/sqrt(head_dim), except the 27B gemma2/gemma3 sizes (46 / 62 layers), which
     * llama.cpp scales by 1/sqrt(n_embd / n_head) */
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    if ((hp->arch == MODEL_ARCH_GEMMA2 && hp->n_layer == 46) || (hp->arch == MODEL_ARCH_GEMMA3 && hp->n_layer == 62))
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    hp->causal = !bert;
    hp->pooling = MODEL_POOLING_NONE;
    if (bert) {
        int64_t pt;
        if ((rc = get_u32_key(f, a, "pooling_type", false, MODEL_POOLING_CLS, &pt, err))) return rc;
        if (pt > MODEL_POOLING_RANK)
            return dk_fail(err, DK_ERR_UNSUPPORTED, "unsupported pooling_type %lld", (long long)pt);
        hp->pooling = (enum model_pooling)pt;
        /* as llama.cpp: one output unless the file names the classifier's labels */
        char key[128];
        snprintf(key, sizeof key, "%s.classifier.output_labels", a);
        enum gguf_value_type lt;
        uint64_t n_labels = 0;
        const void *labels;
        hp->n_cls_out = 1;
        if (gguf_get_arr(f, key, &lt, &n_labels, &labels) == DK_OK && n_labels > 0) {
            if (n_labels > (1 << 16)) return dk_fail(err, DK_ERR_FORMAT, "%s: %llu labels", key, (unsigned long long)n_labels);
            hp->n_cls_out = (int64_t)n_labels;
        }
    }

    /* vocab size: the token list, else the embedding matrix */
    enum gguf_value_type et;
    uint64_t n_tokens = 0;
    const void *data;
    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n_tokens, &data) == DK_OK && n_tokens > 0) {
        hp->n_vocab = (int64_t)n_tokens;
    } else if (te && te->n_dims == 2) {
        hp->n_vocab = te->ne[1];
    } else {
        return dk_fail(err, DK_ERR_FORMAT, "cannot determine the vocabulary size (no token list, no token_embd.weight)");
    }
    if (hp->n_vocab <= 0 || hp->n_vocab > (1 << 24))
        return dk_fail(err, DK_ERR_FORMAT, "invalid vocabulary size %lld", (long long)hp->n_vocab);
    return DK_OK;
}

/* bert's optional classification head (llama.cpp's names: cls = the pooler's dense layer,
 * cls.output = the classifier); a rank-pooled model must have one of the two. */
static int bind_cls_head(model_weights *m, char *err)
{
    model_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, C = hp->n_cls_out;
    bool has_cls = false, has_out = false;
    int rc;
    if ((rc = bind_matrix(m, "cls.weight", E, E, false, &m->cls.w, &has_cls, err))) return rc;
    if (has_cls && (rc = bind_vector(m, "cls.bias", E, false, &m->cls_b, err))) return rc;
    if ((rc = bind_matrix(m, "cls.output.weight", E, C, false, &m->cls_out.w, &has_out, err))) return rc;
    if (has_out && (rc = bind_vector(m, "cls.output.bias", C, false, &m->cls_out_b, err))) return rc;
    if (!has_out && C > E)
        return dk_fail(err, DK_ERR_FORMAT, "%lld classifier labels but no cls.output.weight", (long long)C);
    hp->has_cls_head = has_cls || has_out;
    if (hp->pooling == MODEL_POOLING_RANK && !hp->has_cls_head)
        return dk_fail(err, DK_ERR_FORMAT, "pooling_type 4 (rank) needs a classification head (cls.weight or cls.output.weight)");
    return DK_OK;
}

static int bind_tensors(model_weights *m, char *err)
{
    const model_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    int64_t q_dim = hp->n_head * hp->head_dim_k, k_dim = hp->n_head_kv * hp->head_dim_k;
    int64_t v_dim = hp->n_head_kv * hp->head_dim_v, o_in = hp->n_head * hp->head_dim_v;
    bool bert = hp->arch == MODEL_ARCH_BERT;
    bool gemma = hp->arch == MODEL_ARCH_GEMMA2 || hp->arch == MODEL_ARCH_GEMMA3;
    bool qk_norm = hp->arch == MODEL_ARCH_QWEN3 || hp->arch == MODEL_ARCH_GEMMA3;
    int rc;
    bool present;

    if ((rc = bind_matrix(m, "token_embd.weight", E, V, true, &m->tok_embd, NULL, err))) return rc;
    if (bert) {
        const gguf_tensor *t = gguf_find_tensor(m->file, "position_embd.weight");
        if (!t || t->n_dims != 2) return dk_fail(err, DK_ERR_FORMAT, "missing tensor position_embd.weight (expected [%lld, n_pos])", (long long)E);
        m->hp.n_pos_embd = t->ne[1];
        if ((rc = bind_matrix(m, "position_embd.weight", E, t->ne[1], true, &m->pos_embd, NULL, err))) return rc;
        t = gguf_find_tensor(m->file, "token_types.weight");
        if (!t || t->n_dims != 2 || t->ne[1] < 1)
            return dk_fail(err, DK_ERR_FORMAT, "missing tensor token_types.weight (expected [%lld, n_types])", (long long)E);
        if ((rc = bind_matrix(m, "token_types.weight", E, t->ne[1], true, &m->type_embd, NULL, err))) return rc;
        if ((rc = bind_vector(m, "token_embd_norm.weight", E, true, &m->embd_norm, err))) return rc;
        if ((rc = bind_vector(m, "token_embd_norm.bias", E, true, &m->embd_norm_b, err))) return rc;
        if ((rc = bind_cls_head(m, err))) return rc;
    } else {
        if ((rc = bind_vector(m, "output_norm.weight", E, true, &m->output_norm, err))) return rc;
        if ((rc = bind_matrix(m, "output.weight", E, V, false, &m->output.w, &present, err))) return rc;
        if (!present) m->output.w = m->tok_embd;
        const gguf_tensor *rf;
        if (gguf_find_tensor(m->file, "rope_factors_long.weight") || gguf_find_tensor(m->file, "rope_factors_short.weight"))
            return dk_fail(err, DK_ERR_UNSUPPORTED, "long-context rope factors (rope_factors_long/short, e.g. Phi-3 128k) are not supported");
        if ((rc = find_checked(m, "rope_freqs.weight", hp->n_rot / 2, 0, false, &rf, err))) return rc;
        float *ff = NULL;
        if (rf && (rc = bind_vector(m, "rope_freqs.weight", hp->n_rot / 2, true, &ff, err))) return rc;
        m->rope_factors_swa = ff;
        if (ff && hp->rope_scale_linear != 1.0f) {
            float *copy = dk_malloc_array((size_t)(hp->n_rot / 2), sizeof(float));
            if (!copy || push_vector(m, copy) != DK_OK) {
                dk_free(copy);
                return dk_fail(err, DK_ERR_NOMEM, "out of memory");
            }
            memcpy(copy, ff, (size_t)(hp->n_rot / 2) * sizeof(float));
            m->rope_factors_swa = copy;
        }
        if (ff || hp->rope_scale_linear != 1.0f) {
            if (!ff) {
                ff = dk_malloc_array((size_t)(hp->n_rot / 2), sizeof(float));
                if (!ff || push_vector(m, ff) != DK_OK) {
                    dk_free(ff);
                    return dk_fail(err, DK_ERR_NOMEM, "out of memory");
                }
                for (int64_t i = 0; i < hp->n_rot / 2; i++) ff[i] = 1.0f;
            }
            for (int64_t i = 0; i < hp->n_rot / 2; i++) ff[i] *= hp->rope_scale_linear;
            m->rope_factors = ff;
        }
    }

    m->layers = dk_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    {
        char key[128];
        snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", hp->arch_name);
        enum gguf_value_type et;
        uint64_t n_arr = 0;
        const void *arr = NULL;
        bool per_layer = hp->n_swa > 0 && hp->swa_period == 0;
        if (per_layer && (gguf_get_arr(m->file, key, &et, &n_arr, &arr) != DK_OK || et == GGUF_VAL_STRING ||
                          n_arr != (uint64_t)hp->n_layer))
            return dk_fail(err, DK_ERR_FORMAT, "%s: expected %lld per-layer flags", key, (long long)hp->n_layer);
        for (int64_t il = 0; il < hp->n_layer; il++)
            m->layers[il].swa = hp->n_swa > 0 && (per_layer ? gguf_arr_get_i64(et, arr, (uint64_t)il) != 0
                                                            : (il % hp->swa_period) < hp->swa_period - 1);
    }
    for (int64_t il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
        char n[96];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%lld.%s", (long long)il, suffix), n)
        if (hp->arch == MODEL_ARCH_PHI3) {
            if ((rc = bind_matrix(m, NAME("attn_qkv.weight"), E, q_dim + k_dim + v_dim, false, &L->wqkv.w, &L->has_wqkv, err))) return rc;
        }
        if (!L->has_wqkv) {
            if ((rc = bind_matrix(m, NAME("attn_q.weight"), E, q_dim, true, &L->wq.w, NULL, err))) return rc;
            if ((rc = bind_matrix(m, NAME("attn_k.weight"), E, k_dim, true, &L->wk.w, NULL, err))) return rc;
            if ((rc = bind_matrix(m, NAME("attn_v.weight"), E, v_dim, true, &L->wv.w, NULL, err))) return rc;
        }
        if ((rc = bind_matrix(m, NAME("attn_output.weight"), o_in, E, true, &L->wo.w, NULL, err))) return rc;
        bool need_bias = hp->arch == MODEL_ARCH_QWEN2 || bert;
        if ((rc = bind_vector(m, NAME("attn_q.bias"), q_dim, need_bias, &L->bq, err))) return rc;
        if ((rc = bind_vector(m, NAME("attn_k.bias"), k_dim, need_bias, &L->bk, err))) return rc;
        if ((rc = bind_vector(m, NAME("attn_v.bias"), v_dim, need_bias, &L->bv, err))) return rc;
        if ((rc = bind_vector(m, NAME("attn_output.bias"), E, bert, &L->bo, err))) return rc;
        if (bert) {
            if ((rc = bind_vector(m, NAME("attn_output_norm.weight"), E, true, &L->attn_out_norm, err))) return rc;
            if ((rc = bind_vector(m, NAME("attn_output_norm.bias"), E, true, &L->attn_out_norm_b, err))) return rc;
            if ((rc = bind_matrix(m, NAME("ffn_up.weight"), E, F, true, &L->ffn_up.w, NULL, err))) return rc;
            if ((rc = bind_vector(m, NAME("ffn_up.bias"), F, true, &L->ffn_up_b, err))) return rc;
            if ((rc = bind_matrix(m, NAME("ffn_down.weight"), F, E, true, &L->ffn_down.w, NULL, err))) return rc;
            if ((rc = bind_vector(m, NAME("ffn_down.bias"), E, true, &L->ffn_down_b, err))) return rc;
            if ((rc = bind_vector(m, NAME("layer_output_norm.weight"), E, true, &L->out_norm, err))) return rc;
            if ((rc = bind_vector(m, NAME("layer_output_norm.bias"), E, true, &L->out_norm_b, err))) return rc;
            continue;
        }
        if ((rc = bind_vector(m, NAME("attn_norm.weight"), E, true, &L->attn_norm, err))) return rc;
        if (qk_norm) {
            if ((rc = bind_vector(m, NAME("attn_q_norm.weight"), hp->head_dim_k, true, &L->q_norm, err))) return rc;
            if ((rc = bind_vector(m, NAME("attn_k_norm.weight"), hp->head_dim_k, true, &L->k_norm, err))) return rc;
        }
        if (gemma) {
            if ((rc = bind_vector(m, NAME("post_attention_norm.weight"), E, true, &L->post_attn_norm, err))) return rc;
            if ((rc = bind_vector(m, NAME("post_ffw_norm.weight"), E, true, &L->post_ffw_norm, err))) return rc;
        }
        if ((rc = bind_vector(m, NAME("ffn_norm.weight"), E, true, &L->ffn_norm, err))) return rc;
        if (hp->arch == MODEL_ARCH_PHI3) {
            if ((rc = bind_matrix(m, NAME("ffn_up.weight"), E, 2 * F, true, &L->ffn_up.w, NULL, err))) return rc;
        } else {
            if ((rc = bind_matrix(m, NAME("ffn_gate.weight"), E, F, true, &L->ffn_gate.w, NULL, err))) return rc;
            if ((rc = bind_matrix(m, NAME("ffn_up.weight"), E, F, true, &L->ffn_up.w, NULL, err))) return rc;
            L->has_gate = true;
        }
        if ((rc = bind_matrix(m, NAME("ffn_down.weight"), F, E, true, &L->ffn_down.w, NULL, err))) return rc;
#undef NAME
    }
    return DK_OK;
}

void model_free(model_weights *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_packs; i++) kern_packed_free(m->packs[i]);
    dk_free(m->packs);
    for (size_t i = 0; i < m->n_vectors; i++) dk_free(m->vectors[i]);
    dk_free(m->vectors);
    dk_free(m->layers);
    if (m->owns_file) gguf_close(m->file);
    dk_free(m);
}

int model_load_gguf(model_weights **out, gguf_file *f, bool take_file, char *err)
{
    *out = NULL;
    model_weights *m = dk_calloc(1, sizeof *m);
    if (!m) {
        if (take_file) gguf_close(f);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    m->file = f;
    m->owns_file = take_file;
    int rc = read_hparams(m, err);
    if (rc == DK_OK) rc = bind_tensors(m, err);
    if (rc != DK_OK) {
        model_free(m);
        return rc;
    }
    *out = m;
    return DK_OK;
}

int model_load(model_weights **out, const char *path, char *err)
{
    gguf_file *f;
    *out = NULL;
    int rc = gguf_open(&f, path, err);
    if (rc != DK_OK) return rc;
    return model_load_gguf(out, f, true, err);
}

/* Every weight matrix of the model that a forward pass multiplies with (not the
 * embedding tables, which are only looked up row by row). */
static size_t list_matrices(model_weights *m, model_mat **out, size_t cap)
{
    size_t n = 0;
#define ADD(mat) do { if ((mat)->w.data && n < cap) out[n++] = (mat); } while (0)
    ADD(&m->output);
    ADD(&m->cls);
    ADD(&m->cls_out);
    for (int64_t il = 0; il < m->hp.n_layer; il++) {
        model_layer *L = &m->layers[il];
        ADD(&L->wq); ADD(&L->wk); ADD(&L->wv); ADD(&L->wqkv); ADD(&L->wo);
        ADD(&L->ffn_gate); ADD(&L->ffn_up); ADD(&L->ffn_down);
    }
#undef ADD
    return n;
}

int model_prepare_fast(model_weights *m, int n_threads, char *err)
{
    if (m->prepared) return DK_OK;
    size_t cap = 3 + 8 * (size_t)m->hp.n_layer;
    model_mat **mats = dk_malloc_array(cap, sizeof *mats);
    m->packs = dk_calloc(cap, sizeof *m->packs);
    kern_pool *pool = n_threads > 1 ? kern_pool_new(n_threads) : NULL;
    int rc = DK_OK;
    if (!mats || !m->packs || (n_threads > 1 && !pool)) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory repacking weights");
    size_t n = rc == DK_OK ? list_matrices(m, mats, cap) : 0;
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        model_mat *w = mats[i];
        if (!kern_packable(w->w.type)) continue;
        kern_packed *p = NULL;
        if (kern_pack(&w->w, &p, pool) != DK_OK) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory repacking weights");
            break;
        }
        m->packs[m->n_packs++] = p;
        w->packed = p;
    }
    if (rc == DK_OK) {
        /* the file's copy of a repacked matrix is needed again only by EXACT contexts (and
         * token_embd rows, looked up from the file): let its pages go */
        for (size_t i = 0; i < n; i++)
            if (mats[i]->packed && mats[i]->w.data != m->tok_embd.data)
                dk_map_release(mats[i]->w.data, (size_t)mats[i]->w.n_out * mats[i]->w.row_bytes);
        m->prepared = true;
    } else {
        for (size_t i = 0; i < n; i++) mats[i]->packed = NULL;
        for (size_t i = 0; i < m->n_packs; i++) kern_packed_free(m->packs[i]);
        dk_free(m->packs); /* a later call starts over */
        m->packs = NULL;
        m->n_packs = 0;
    }
    kern_pool_free(pool);
    dk_free(mats);
    return rc;
}

const model_hparams *model_get_hparams(const model_weights *m) { return &m->hp; }
const gguf_file *model_get_file(const model_weights *m) { return m->file; }

/* ------------------------------------------------------------------ contexts */

struct model_ctx {
    const model_weights *m;
    kern_pool *pool;
    kern_workspace *ws;     /* FAST only: quantized activations and panels */
    enum kern_precision prec;
    int n_threads;
    int64_t n_ctx, n_batch, n_past;
    int64_t n_kv;           /* positions per kv head in the cache: n_ctx rounded up to KERN_KV_BLOCK */
    bool kv_f16;
    size_t kv_elem;         /* bytes per cache element: 2 or 4 */
    void *k_cache;          /* (n_layer, n_head_kv) heads of n_kv keys (transposed blocks) */
    void *v_cache;          /* (n_layer, n_head_kv, n_kv, head_dim_v) */
    /* scratch, sized for n_batch tokens */
    float *x;         /* (n_batch, n_embd) residual stream */
    float *cur;       /* (n_batch, n_embd) normed input */
    float *q;         /* (n_batch, n_head * head_dim_k) */
    float *k;         /* (n_batch, n_head_kv * head_dim_k) */
    float *v;         /* (n_batch, n_head_kv * head_dim_v) */
    float *qkv;       /* (n_batch, q+k+v dims), phi3 only */
    float *att;       /* (n_batch, n_head * head_dim_v) attention output */
    float *tmp;       /* (n_batch, n_embd) */
    float *gate;      /* (n_batch, 2 * n_ff) */
    float *up;        /* (n_batch, n_ff) */
    float *scores;    /* (n_threads, n_head / n_head_kv, n_kv) */
    float *attn_part; /* (n_head_kv, max_chunks, group, head_dim_v + 2) split attention of one token */
    int64_t max_chunks;
    /* each row of a forward pass: the context whose KV cache it goes to and its position */
    model_ctx **row_ctx; /* (n_batch) */
    int64_t *row_pos;    /* (n_batch) */
    int32_t *row_tok;    /* (n_batch) the tokens of a model_decode_batch / model_encode_batch, gathered */
    /* encoders: the cache slots [row_first[t], row_last[t]] of row t's sequence, which it
     * attends to (its position is row_pos[t] - row_first[t]) */
    int64_t *row_first;  /* (n_batch) */
    int64_t *row_last;   /* (n_batch) */
    enum model_ctx_kind kind;
};

model_ctx_params model_ctx_default_params(void)
{
    model_ctx_params p = {0, 0, 0, MODEL_NUMERICS_EXACT, MODEL_CTX_FULL};
    return p;
}

void model_ctx_free(model_ctx *c)
{
    if (!c) return;
    kern_pool_free(c->pool);
    kern_workspace_free(c->ws);
    void *bufs[] = {c->k_cache, c->v_cache, c->x, c->cur, c->q, c->k, c->v, c->qkv, c->att,
                    c->tmp, c->gate, c->up, c->scores, c->attn_part, c->row_ctx, c->row_pos, c->row_tok,
                    c->row_first, c->row_last};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dk_free(bufs[i]);
    dk_free(c);
}

/* a * b * cc elements of elem bytes, zeroed (the KV cache is read in whole blocks) */
static void *alloc_zeroed(size_t a, size_t b, size_t cc, size_t elem, bool *fail)
{
    size_t n;
    if (dk_mul_size(a, b, &n) || dk_mul_size(n, cc, &n) || dk_mul_size(n, elem, &n) || n == 0) {
        *fail = true;
        return NULL;
    }
    void *p = dk_calloc(1, n);
    if (!p) *fail = true;
    return p;
}

static float *alloc_floats(size_t a, size_t b, size_t cc, bool *fail) { return alloc_zeroed(a, b, cc, sizeof(float), fail); }

/* The buffers of a forward pass of n_batch rows, the thread pool and the FAST workspace. */
static void alloc_scratch(model_ctx *c, bool *fail)
{
    const model_hparams *hp = &c->m->hp;
    size_t B = (size_t)c->n_batch, C = (size_t)c->n_kv;
    size_t q_dim = (size_t)(hp->n_head * hp->head_dim_k), k_dim = (size_t)(hp->n_head_kv * hp->head_dim_k);
    size_t v_dim = (size_t)(hp->n_head_kv * hp->head_dim_v), o_in = (size_t)(hp->n_head * hp->head_dim_v);
    size_t E = (size_t)hp->n_embd, F = (size_t)hp->n_ff, group = (size_t)(hp->n_head / hp->n_head_kv);
    c->x = alloc_floats(B, E, 1, fail);
    c->cur = alloc_floats(B, E, 1, fail);
    c->q = alloc_floats(B, q_dim, 1, fail);
    c->k = alloc_floats(B, k_dim, 1, fail);
    c->v = alloc_floats(B, v_dim, 1, fail);
    if (hp->arch == MODEL_ARCH_PHI3) c->qkv = alloc_floats(B, q_dim + k_dim + v_dim, 1, fail);
    c->att = alloc_floats(B, o_in, 1, fail);
    c->tmp = alloc_floats(B, E, 1, fail);
    c->gate = alloc_floats(B, 2 * F, 1, fail);
    c->up = alloc_floats(B, F, 1, fail);
    c->scores = alloc_floats((size_t)c->n_threads, group, C, fail);
    /* enough chunks for 4 tasks per thread whatever the number of kv heads */
    c->max_chunks = (4 * c->n_threads + hp->n_head_kv - 1) / hp->n_head_kv;
    c->attn_part = alloc_floats((size_t)(hp->n_head_kv * c->max_chunks), group, (size_t)hp->head_dim_v + 2, fail);
    c->row_ctx = alloc_zeroed(B, 1, 1, sizeof(model_ctx *), fail);
    c->row_pos = alloc_zeroed(B, 1, 1, sizeof(int64_t), fail);
    c->row_tok = alloc_zeroed(B, 1, 1, sizeof(int32_t), fail);
    if (!hp->causal) {
        c->row_first = alloc_zeroed(B, 1, 1, sizeof(int64_t), fail);
        c->row_last = alloc_zeroed(B, 1, 1, sizeof(int64_t), fail);
    }
    if (!*fail && c->n_threads > 1) {
        c->pool = kern_pool_new(c->n_threads);
        if (!c->pool) *fail = true;
    }
    if (!*fail && c->prec == KERN_PRECISION_FAST) {
        size_t max_in = E > F ? E : F;
        if (q_dim > max_in) max_in = q_dim;
        if (o_in > max_in) max_in = o_in;
        c->ws = kern_workspace_new(c->n_batch, (int64_t)max_in, c->n_threads);
        if (!c->ws) *fail = true;
    }
}

int model_ctx_new(model_ctx **out, const model_weights *m, const model_ctx_params *params, char *err)
{
    *out = NULL;
    model_ctx_params p = params ? *params : model_ctx_default_params();
    const model_hparams *hp = &m->hp;
    if (p.n_ctx <= 0) p.n_ctx = hp->n_ctx_train > 0 ? (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096) : 512;
    if (p.n_batch <= 0) p.n_batch = p.n_ctx < 512 ? p.n_ctx : 512;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
    }
    if (p.n_ctx > (1 << 24)) return dk_fail(err, DK_ERR_ARG, "n_ctx %lld is too large", (long long)p.n_ctx);
    model_ctx *c = dk_calloc(1, sizeof *c);
    if (!c) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = p.n_ctx;
    c->n_batch = p.n_batch;
    c->n_threads = p.n_threads;
    c->prec = p.numerics == MODEL_NUMERICS_FAST ? KERN_PRECISION_FAST : KERN_PRECISION_EXACT;
    c->kv_f16 = p.numerics == MODEL_NUMERICS_FAST && hp->causal;
    c->kv_elem = c->kv_f16 ? 2 : 4;
    c->n_kv = (p.n_ctx + KERN_KV_BLOCK - 1) / KERN_KV_BLOCK * KERN_KV_BLOCK;
    size_t L = (size_t)hp->n_layer, C = (size_t)c->n_kv;
    size_t k_dim = (size_t)(hp->n_head_kv * hp->head_dim_k), v_dim = (size_t)(hp->n_head_kv * hp->head_dim_v);
    bool fail = false;
    c->kind = p.kind;
    if (p.kind != MODEL_CTX_SCRATCH_ONLY) {
        c->k_cache = alloc_zeroed(L, C, k_dim, c->kv_elem, &fail);
        c->v_cache = alloc_zeroed(L, C, v_dim, c->kv_elem, &fail);
    }
    if (p.kind != MODEL_CTX_KV_ONLY) alloc_scratch(c, &fail);
    if (fail) {
        model_ctx_free(c);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory allocating a context of %lld positions", (long long)p.n_ctx);
    }
    *out = c;
    return DK_OK;
}

int64_t model_ctx_n_ctx(const model_ctx *c) { return c->n_ctx; }
int64_t model_ctx_n_past(const model_ctx *c) { return c->n_past; }

int model_ctx_truncate(model_ctx *c, int64_t n_keep, char *err)
{
    if (n_keep < 0 || n_keep > c->n_past)
        return dk_fail(err, DK_ERR_ARG, "cannot truncate to %lld positions (%lld held)", (long long)n_keep, (long long)c->n_past);
    c->n_past = n_keep;
    return DK_OK;
}

/* ------------------------------------------------------------------ forward pass */

typedef struct attn_job {
    model_ctx *c;         /* the scratch; each row's cache is c->row_ctx[t]'s */
    int64_t il, n_tok, pos0;
    int64_t n_swa;   /* 0: no window */
    float scale, softcap;
    bool causal;
    int64_t n_chunks; /* attn_chunk_task: chunks per kv head */
} attn_job;

/* The cache of kv head hk of layer il: keys (transposed blocks) and values. */
static void *kv_head(const model_ctx *c, void *cache, int64_t il, int64_t hk, int64_t dim)
{
    size_t heads = (size_t)(il * c->m->hp.n_head_kv + hk);
    return (uint8_t *)cache + heads * (size_t)c->n_kv * (size_t)dim * c->kv_elem;
}

/* (token, kv head) pairs split over the tasks: the scores of the kv head's group of query
 * heads, their softmax, and the weighted values. Thread i_thread uses scores block i. */
/* The group of query heads qv of kv head hk against positions [p0, p1]: scores (into the
 * thread's sc), softcap, scale, softmax, and the weighted values into out (group rows of
 * out_stride). stats, when not NULL, receives each head's softmax max and sum at
 * stats[g * out_stride] and stats[g * out_stride + 1], for merging split softmaxes. */
static void attn_heads(const attn_job *j, const model_ctx *kv, const float *qv, int64_t hk, int64_t p0, int64_t p1,
                       float *sc, float *out, int64_t out_stride, float *stats)
{
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    int64_t dk = hp->head_dim_k, dv = hp->head_dim_v, group = hp->n_head / hp->n_head_kv, n = p1 - p0 + 1;
    kern_attn_scores(qv, (int)group, (int)dk, kv_head(kv, kv->k_cache, j->il, hk, dk), c->kv_f16, p0, p1, sc, c->n_kv);
    for (int64_t g = 0; g < group; g++) {
        float *s = sc + g * c->n_kv, max;
        if (j->softcap > 0) {
            for (int64_t i = 0; i < n; i++) s[i] = j->softcap * tanhf(s[i] / j->softcap);
        }
        if (j->scale != 1.0f) kern_scale(s, j->scale, n);
        double sum = kern_softmax_stats(s, n, &max);
        if (stats) {
            stats[g * out_stride] = max;
            stats[g * out_stride + 1] = (float)sum;
        }
    }
    kern_attn_values(sc, c->n_kv, (int)group, (int)dv, kv_head(kv, kv->v_cache, j->il, hk, dv), c->kv_f16, p0, p1, out,
                     out_stride);
}

static void attn_task(void *ctx, int i_task, int n_tasks, int i_thread)
{
    const attn_job *j = ctx;
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    int64_t H = hp->n_head, Hkv = hp->n_head_kv, dk = hp->head_dim_k, dv = hp->head_dim_v;
    int64_t group = H / Hkv;
    int64_t n_pairs = j->n_tok * Hkv;
    int64_t begin = n_pairs * i_task / n_tasks, end = n_pairs * (i_task + 1) / n_tasks;
    float *sc = c->scores + (size_t)i_thread * (size_t)group * (size_t)c->n_kv;
    for (int64_t p = begin; p < end; p++) {
        int64_t t = p / Hkv, hk = p % Hkv;
        int64_t qpos = c->row_pos[t];
        int64_t last = j->causal ? qpos : c->row_last[t];
        int64_t first = j->causal ? 0 : c->row_first[t]; /* encoders: the row's own sequence */
        if (j->n_swa > 0 && qpos - j->n_swa + 1 > first) first = qpos - j->n_swa + 1;
        attn_heads(j, c->row_ctx[t], c->q + (size_t)(t * H * dk + hk * group * dk), hk, first, last, sc,
                   c->att + (size_t)(t * H * dv + hk * group * dv), dv, NULL);
    }
}

/* Decoding one token over a long context has few (token, kv head) pairs, too few to keep the
 * threads busy, so each pair's positions are split in chunks over the tasks: every chunk
 * gets its own softmax (with its max and sum) and weighted values, and attn_merge combines
 * them exactly as one softmax over all positions would. */
#define ATTN_CHUNK_MIN 256  /* positions: below, one task per pair */

static void attn_chunk_task(void *ctx, int i_task, int n_tasks, int i_thread)
{
    const attn_job *j = ctx;
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    int64_t Hkv = hp->n_head_kv, H = hp->n_head, dk = hp->head_dim_k, dv = hp->head_dim_v, group = H / Hkv;
    (void)n_tasks;
    int64_t hk = i_task / j->n_chunks, ci = i_task % j->n_chunks; /* one token: pair = kv head */
    int64_t qpos = c->row_pos[0], last = qpos, first = 0;
    if (j->n_swa > 0 && qpos - j->n_swa + 1 > first) first = qpos - j->n_swa + 1;
    int64_t span = last - first + 1;
    int64_t chunk = ((span + j->n_chunks - 1) / j->n_chunks + KERN_KV_BLOCK - 1) / KERN_KV_BLOCK * KERN_KV_BLOCK;
    int64_t p0 = first + ci * chunk, p1 = p0 + chunk - 1 < last ? p0 + chunk - 1 : last;
    float *part = c->attn_part + (size_t)(i_task * group) * (size_t)(dv + 2); /* per head: (dv) values, max, sum */
    if (p0 > p1) {
        for (int64_t g = 0; g < group; g++) {
            part[g * (dv + 2) + dv] = -INFINITY;
            part[g * (dv + 2) + dv + 1] = 0.0f;
        }
        return;
    }
    float *sc = c->scores + (size_t)i_thread * (size_t)group * (size_t)c->n_kv;
    attn_heads(j, c->row_ctx[0], c->q + (size_t)(hk * group * dk), hk, p0, p1, sc, part, dv + 2, part + dv);
}

/* softmax(all) . V = sum_c w_c (softmax(chunk c) . V) / sum_c w_c with w_c = sum_c e^(max_c - max) */
static void attn_merge(model_ctx *c, const attn_job *j)
{
    const model_hparams *hp = &c->m->hp;
    int64_t Hkv = hp->n_head_kv, H = hp->n_head, dv = hp->head_dim_v, group = H / Hkv;
    for (int64_t hk = 0; hk < Hkv; hk++)
        for (int64_t g = 0; g < group; g++) {
            float max = -INFINITY;
            for (int64_t ci = 0; ci < j->n_chunks; ci++)
                max = fmaxf(max, c->attn_part[((hk * j->n_chunks + ci) * group + g) * (dv + 2) + dv]);
            float *o = c->att + (size_t)((hk * group + g) * dv);
            for (int64_t d = 0; d < dv; d++) o[d] = 0.0f;
            double total = 0;
            for (int64_t ci = 0; ci < j->n_chunks; ci++) {
                const float *part = c->attn_part + ((hk * j->n_chunks + ci) * group + g) * (dv + 2);
                if (part[dv + 1] == 0.0f) continue;
                double w = (double)part[dv + 1] * exp((double)part[dv] - (double)max);
                total += w;
                for (int64_t d = 0; d < dv; d++) o[d] += (float)w * part[d];
            }
            float inv = total > 0 ? (float)(1.0 / total) : 0.0f;
            for (int64_t d = 0; d < dv; d++) o[d] *= inv;
        }
}

/* y (n_tok, w->n_out) = x w^T with the context's precision */
static void mm(model_ctx *c, const model_mat *w, const float *x, int64_t n_tok, float *y)
{
    kern_mm one = {&w->w, w->packed, y};
    kern_matmul_many(&one, 1, x, n_tok, c->prec, c->ws, c->pool);
}

static void add_bias_rows(float *y, const float *b, int64_t n_tok, int64_t n)
{
    if (!b) return;
    for (int64_t t = 0; t < n_tok; t++) kern_add(y + t * n, y + t * n, b, n);
}

static void rms_rows(float *out, const float *x, const float *w, int64_t n_tok, int64_t n, float eps)
{
    for (int64_t t = 0; t < n_tok; t++) kern_rmsnorm(out + t * n, x + t * n, w, n, eps);
}


static void embed_row(const kern_matrix *m, int64_t row, float *dst)
{
    kern_dequantize_row(m->type, (const uint8_t *)m->data + (size_t)row * m->row_bytes, dst, m->n_in);
}

/* The per-token work between the matrix products of a layer (causal or bert). Each step is
 * independent across tokens, so a batch spreads it over the pool's threads (a decode step
 * of one token runs it inline). */
enum layer_phase {
    PHASE_ATTN_NORM,  /* cur = norm(x) */
    PHASE_QK,         /* q, k, v biases, q/k norms, RoPE, q prescale, K and V into the cache */
    PHASE_ATTN_OUT,   /* tmp += bias; x += post_norm(tmp); cur = ffn_norm(x) */
    PHASE_ACT,        /* gate = act(gate) * up */
    PHASE_FFN_OUT,    /* x += post_ffw_norm(tmp) */
    /* bert (post-norm): */
    PHASE_BERT_EMBED, /* x = layernorm(token + type 0 + position embedding) */
    PHASE_BERT_QKV,   /* q, k, v biases; K and V into the cache */
    PHASE_BERT_ATTN,  /* x = attn_out_norm(tmp + bias + x) */
    PHASE_BERT_ACT,   /* up = gelu(up + bias) */
    PHASE_BERT_FFN,   /* x = layer_output_norm(tmp + bias + x) */
};

typedef struct layer_step {
    model_ctx *c;
    const model_layer *L;
    int64_t il, pos0, n_tok;
    enum layer_phase phase;
    const int32_t *tokens; /* PHASE_BERT_EMBED */
} layer_step;

/* Tokens from which the per-token steps run in parallel. */
#define PAR_MIN_TOK 4

static void step_tokens(const layer_step *s, int64_t t0, int64_t t1)
{
    model_ctx *c = s->c;
    const model_weights *m = c->m;
    const model_hparams *hp = &m->hp;
    const model_layer *L = s->L;
    int64_t E = hp->n_embd, F = hp->n_ff, H = hp->n_head, Hkv = hp->n_head_kv;
    int64_t dk = hp->head_dim_k, dv = hp->head_dim_v;
    int64_t q_dim = H * dk, k_dim = Hkv * dk, v_dim = Hkv * dv;
    bool gemma = hp->arch == MODEL_ARCH_GEMMA2 || hp->arch == MODEL_ARCH_GEMMA3;
    float eps = hp->norm_eps;
    for (int64_t t = t0; t < t1; t++) {
        float *x = c->x + t * E, *cur = c->cur + t * E, *tmp = c->tmp + t * E;
        switch (s->phase) {
        case PHASE_ATTN_NORM: kern_rmsnorm(cur, x, L->attn_norm, E, eps); break;
        case PHASE_QK: {
            float *q = c->q + t * q_dim, *k = c->k + t * k_dim, *v = c->v + t * v_dim;
            if (L->bq) kern_add(q, q, L->bq, q_dim);
            if (L->bk) kern_add(k, k, L->bk, k_dim);
            if (L->bv) kern_add(v, v, L->bv, v_dim);
            if (L->q_norm) for (int64_t h = 0; h < H; h++) kern_rmsnorm(q + h * dk, q + h * dk, L->q_norm, dk, eps);
            if (L->k_norm) for (int64_t h = 0; h < Hkv; h++) kern_rmsnorm(k + h * dk, k + h * dk, L->k_norm, dk, eps);
            /* SWA layers: gemma3's own base, and no linear scaling (llama.cpp's freq_scale_swa = 1) */
            float base = (hp->arch == MODEL_ARCH_GEMMA3 && L->swa) ? hp->rope_base_swa : hp->rope_base;
            const float *factors = L->swa ? m->rope_factors_swa : m->rope_factors;
            int64_t pos = c->row_pos[t];
            const model_ctx *kv = c->row_ctx[t];
            kern_rope(q, (int)H, (int)dk, (int)hp->n_rot, pos, base, factors, hp->rope_neox);
            kern_rope(k, (int)Hkv, (int)dk, (int)hp->n_rot, pos, base, factors, hp->rope_neox);
            if (hp->arch == MODEL_ARCH_PHI3 || gemma) kern_scale(q, hp->attn_scale, q_dim);
            for (int64_t h = 0; h < Hkv; h++) {
                kern_kv_store_k(kv_head(kv, kv->k_cache, s->il, h, dk), c->kv_f16, (int)dk, pos, k + h * dk);
                kern_kv_store_v(kv_head(kv, kv->v_cache, s->il, h, dv), c->kv_f16, (int)dv, pos, v + h * dv);
            }
            break;
        }
        case PHASE_ATTN_OUT:
            if (L->bo) kern_add(tmp, tmp, L->bo, E);
            if (L->post_attn_norm) kern_rmsnorm(tmp, tmp, L->post_attn_norm, E, eps);
            kern_add(x, x, tmp, E);
            kern_rmsnorm(cur, x, L->ffn_norm, E, eps);
            break;
        case PHASE_ACT: {
            float *g = c->gate + t * F;
            if (gemma) kern_gelu(g, F);
            else kern_silu(g, F);
            kern_mul(g, g, c->up + t * F, F);
            break;
        }
        case PHASE_FFN_OUT:
            if (L->post_ffw_norm) kern_rmsnorm(tmp, tmp, L->post_ffw_norm, E, eps);
            kern_add(x, x, tmp, E);
            break;
        case PHASE_BERT_EMBED:
            embed_row(&m->tok_embd, s->tokens[t], x);
            embed_row(&m->type_embd, 0, tmp);
            kern_add(x, x, tmp, E);
            embed_row(&m->pos_embd, c->row_pos[t] - c->row_first[t], tmp);
            kern_add(x, x, tmp, E);
            kern_layernorm(x, x, m->embd_norm, m->embd_norm_b, E, eps);
            break;
        case PHASE_BERT_QKV: {
            float *q = c->q + t * q_dim, *k = c->k + t * k_dim, *v = c->v + t * v_dim;
            kern_add(q, q, L->bq, q_dim);
            kern_add(k, k, L->bk, k_dim);
            kern_add(v, v, L->bv, v_dim);
            for (int64_t h = 0; h < Hkv; h++) {
                kern_kv_store_k(kv_head(c, c->k_cache, s->il, h, dk), c->kv_f16, (int)dk, c->row_pos[t], k + h * dk);
                kern_kv_store_v(kv_head(c, c->v_cache, s->il, h, dv), c->kv_f16, (int)dv, c->row_pos[t], v + h * dv);
            }
            break;
        }
        case PHASE_BERT_ATTN:
            kern_add(tmp, tmp, L->bo, E);
            kern_add(tmp, tmp, x, E);
            kern_layernorm(x, tmp, L->attn_out_norm, L->attn_out_norm_b, E, eps);
            break;
        case PHASE_BERT_ACT: {
            float *u = c->up + t * F;
            kern_add(u, u, L->ffn_up_b, F);
            kern_gelu(u, F);
            break;
        }
        case PHASE_BERT_FFN:
            kern_add(tmp, tmp, L->ffn_down_b, E);
            kern_add(tmp, tmp, x, E);
            kern_layernorm(x, tmp, L->out_norm, L->out_norm_b, E, eps);
            break;
        }
    }
}

static void step_task(void *ctx, int i_task, int n_tasks)
{
    const layer_step *s = ctx;
    int64_t n = s->n_tok;
    step_tokens(s, n * i_task / n_tasks, n * (i_task + 1) / n_tasks);
}

static void run_step(model_ctx *c, const model_layer *L, int64_t il, int64_t pos0, int64_t n_tok, enum layer_phase phase)
{
    layer_step s = {c, L, il, pos0, n_tok, phase, NULL};
    if (n_tok < PAR_MIN_TOK || !c->pool) step_tokens(&s, 0, n_tok);
    else kern_pool_run(c->pool, step_task, &s, c->n_threads);
}

/* Runs n_tok <= n_batch rows through the layers with c's scratch; row t goes to the cache of
 * c->row_ctx[t] at position c->row_pos[t] (set by the caller). Leaves the final hidden
 * states (before the output norm) in c->x. Encoders: one sequence, c's own cache. */
static void forward_rows(model_ctx *c, const int32_t *tokens, int64_t n_tok)
{
    const model_weights *m = c->m;
    const model_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, F = hp->n_ff, H = hp->n_head, Hkv = hp->n_head_kv;
    int64_t dk = hp->head_dim_k, dv = hp->head_dim_v;
    int64_t q_dim = H * dk, k_dim = Hkv * dk, v_dim = Hkv * dv;
    int64_t pos0 = c->row_pos[0];
    bool bert = hp->arch == MODEL_ARCH_BERT;
    bool gemma = hp->arch == MODEL_ARCH_GEMMA2 || hp->arch == MODEL_ARCH_GEMMA3;
    kern_pool *pool = c->pool;

    if (bert) {
        layer_step s = {c, NULL, 0, pos0, n_tok, PHASE_BERT_EMBED, tokens};
        if (n_tok < PAR_MIN_TOK || !c->pool) step_tokens(&s, 0, n_tok);
        else kern_pool_run(c->pool, step_task, &s, c->n_threads);
    } else {
        for (int64_t t = 0; t < n_tok; t++) embed_row(&m->tok_embd, tokens[t], c->x + t * E);
    }
    if (gemma) kern_scale(c->x, sqrtf((float)E), n_tok * E);

    bool q_prescale = hp->arch == MODEL_ARCH_PHI3 || gemma;
    float inv_sqrt_dk = hp->attn_scale;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        bool swa = L->swa;
        const float *in = c->x;
        if (!bert) {
            run_step(c, L, il, pos0, n_tok, PHASE_ATTN_NORM);
            in = c->cur;
        }
        if (L->has_wqkv) {
            int64_t n3 = q_dim + k_dim + v_dim;
            mm(c, &L->wqkv, in, n_tok, c->qkv);
            for (int64_t t = 0; t < n_tok; t++) {
                memcpy(c->q + t * q_dim, c->qkv + t * n3, (size_t)q_dim * sizeof(float));
                memcpy(c->k + t * k_dim, c->qkv + t * n3 + q_dim, (size_t)k_dim * sizeof(float));
                memcpy(c->v + t * v_dim, c->qkv + t * n3 + q_dim + k_dim, (size_t)v_dim * sizeof(float));
            }
        } else {
            kern_mm qkv[3] = {{&L->wq.w, L->wq.packed, c->q}, {&L->wk.w, L->wk.packed, c->k}, {&L->wv.w, L->wv.packed, c->v}};
            kern_matmul_many(qkv, 3, in, n_tok, c->prec, c->ws, pool);
        }
        run_step(c, L, il, pos0, n_tok, bert ? PHASE_BERT_QKV : PHASE_QK);
        attn_job job = {c, il, n_tok, pos0, swa ? hp->n_swa : 0, q_prescale ? 1.0f : inv_sqrt_dk,
                        hp->attn_softcap, hp->causal, 0};
        int64_t n_pairs = n_tok * Hkv, span = pos0 + 1;
        if (n_tok == 1 && c->n_threads > 1 && span >= 2 * ATTN_CHUNK_MIN) {
            job.n_chunks = span / ATTN_CHUNK_MIN < c->max_chunks ? span / ATTN_CHUNK_MIN : c->max_chunks;
            kern_pool_run_threads(pool, attn_chunk_task, &job, (int)(Hkv * job.n_chunks));
            attn_merge(c, &job);
        } else {
            int n_tasks = n_pairs < (int64_t)c->n_threads * 4 ? (int)n_pairs : c->n_threads * 4;
            kern_pool_run_threads(pool, attn_task, &job, n_tasks);
        }
        mm(c, &L->wo, c->att, n_tok, c->tmp);

        if (bert) { /* the per-token steps spread over the pool, as the causal layers' */
            run_step(c, L, il, pos0, n_tok, PHASE_BERT_ATTN);
            mm(c, &L->ffn_up, c->x, n_tok, c->up);
            run_step(c, L, il, pos0, n_tok, PHASE_BERT_ACT);
            mm(c, &L->ffn_down, c->up, n_tok, c->tmp);
            run_step(c, L, il, pos0, n_tok, PHASE_BERT_FFN);
            continue;
        }
        run_step(c, L, il, pos0, n_tok, PHASE_ATTN_OUT);
        if (L->has_gate) {
            kern_mm gu[2] = {{&L->ffn_gate.w, L->ffn_gate.packed, c->gate}, {&L->ffn_up.w, L->ffn_up.packed, c->up}};
            kern_matmul_many(gu, 2, c->cur, n_tok, c->prec, c->ws, pool);
        } else { /* phi3: fused gate|up */
            mm(c, &L->ffn_up, c->cur, n_tok, c->gate);
            for (int64_t t = 0; t < n_tok; t++) {
                memcpy(c->up + t * F, c->gate + t * 2 * F + F, (size_t)F * sizeof(float));
                memmove(c->gate + t * F, c->gate + t * 2 * F, (size_t)F * sizeof(float));
            }
        }
        run_step(c, L, il, pos0, n_tok, PHASE_ACT);
        mm(c, &L->ffn_down, c->gate, n_tok, c->tmp);
        run_step(c, L, il, pos0, n_tok, PHASE_FFN_OUT);
    }
}

/* One batch (n_tok <= n_batch) of c's own sequence at positions n_past.. */
static void forward_batch(model_ctx *c, const int32_t *tokens, int64_t n_tok)
{
    for (int64_t t = 0; t < n_tok; t++) {
        c->row_ctx[t] = c;
        c->row_pos[t] = c->n_past + t;
    }
    forward_rows(c, tokens, n_tok);
    c->n_past += n_tok;
}

static int check_tokens(const model_weights *m, const int32_t *tokens, int64_t n_tok, char *err)
{
    for (int64_t i = 0; i < n_tok; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return dk_fail(err, DK_ERR_ARG, "token %d at index %lld is out of range (n_vocab %lld)",
                           tokens[i], (long long)i, (long long)m->hp.n_vocab);
    return DK_OK;
}

int model_decode(model_ctx *c, const int32_t *tokens, int64_t n_tok, bool all_logits,
                 float *logits, char *err)
{
    const model_weights *m = c->m;
    const model_hparams *hp = &m->hp;
    if (!hp->causal) return dk_fail(err, DK_ERR_ARG, "model_decode: %s is an encoder, use model_encode", hp->arch_name);
    if (c->kind != MODEL_CTX_FULL) return dk_fail(err, DK_ERR_ARG, "model_decode: the context has no scratch or no cache");
    if (n_tok <= 0) return dk_fail(err, DK_ERR_ARG, "model_decode: no tokens");
    int rc = check_tokens(m, tokens, n_tok, err);
    if (rc != DK_OK) return rc;
    if (n_tok > c->n_ctx - c->n_past)
        return dk_fail(err, DK_ERR_LIMIT, "context full: %lld positions held, %lld more do not fit in n_ctx %lld",
                       (long long)c->n_past, (long long)n_tok, (long long)c->n_ctx);
    int64_t E = hp->n_embd, V = hp->n_vocab;
    for (int64_t done = 0; done < n_tok;) {
        int64_t n = n_tok - done < c->n_batch ? n_tok - done : c->n_batch;
        forward_batch(c, tokens + done, n);
        bool last_chunk = done + n == n_tok;
        if (logits && (all_logits || last_chunk)) {
            int64_t first = all_logits ? 0 : n - 1;
            int64_t n_out = n - first;
            rms_rows(c->cur, c->x + first * E, m->output_norm, n_out, E, hp->norm_eps);
            float *dst = all_logits ? logits + done * V : logits;
            mm(c, &m->output, c->cur, n_out, dst);
            if (hp->final_softcap > 0) kern_softcap(dst, hp->final_softcap, n_out * V);
        }
        done += n;
    }
    return DK_OK;
}

/* Every check of model_decode_batch, before anything is evaluated; *rows: the total. */
static int check_seqs(const model_ctx *scratch, const model_seq *seqs, int64_t n_seqs, int64_t *rows, char *err)
{
    const model_weights *m = scratch->m;
    if (!m->hp.causal) return dk_fail(err, DK_ERR_ARG, "model_decode_batch: %s is an encoder", m->hp.arch_name);
    if (scratch->kind == MODEL_CTX_KV_ONLY) return dk_fail(err, DK_ERR_ARG, "model_decode_batch: the scratch context has no scratch");
    if (n_seqs <= 0) return dk_fail(err, DK_ERR_ARG, "model_decode_batch: no sequences");
    *rows = 0;
    for (int64_t i = 0; i < n_seqs; i++) {
        const model_ctx *c = seqs[i].ctx;
        if (!c || c->m != m || c->kind == MODEL_CTX_SCRATCH_ONLY || c->kv_f16 != scratch->kv_f16)
            return dk_fail(err, DK_ERR_ARG, "model_decode_batch: sequence %lld has no KV cache of this model and numerics", (long long)i);
        if (c->n_kv > scratch->n_kv)
            return dk_fail(err, DK_ERR_ARG, "model_decode_batch: sequence %lld has n_ctx %lld, more than the scratch's %lld",
                           (long long)i, (long long)c->n_ctx, (long long)scratch->n_ctx);
        for (int64_t j = 0; j < i; j++)
            if (seqs[j].ctx == c) return dk_fail(err, DK_ERR_ARG, "model_decode_batch: sequence %lld appears twice", (long long)i);
        if (seqs[i].n_tok <= 0) return dk_fail(err, DK_ERR_ARG, "model_decode_batch: sequence %lld has no tokens", (long long)i);
        if (seqs[i].n_tok > c->n_ctx - c->n_past)
            return dk_fail(err, DK_ERR_LIMIT, "context full: %lld positions held, %lld more do not fit in n_ctx %lld",
                           (long long)c->n_past, (long long)seqs[i].n_tok, (long long)c->n_ctx);
        int rc = check_tokens(m, seqs[i].tokens, seqs[i].n_tok, err);
        if (rc != DK_OK) return rc;
        *rows += seqs[i].n_tok;
    }
    if (*rows > scratch->n_batch)
        return dk_fail(err, DK_ERR_LIMIT, "model_decode_batch: %lld rows, more than n_batch %lld", (long long)*rows,
                       (long long)scratch->n_batch);
    return DK_OK;
}

int model_decode_batch(model_ctx *scratch, const model_seq *seqs, int64_t n_seqs, float *logits, char *err)
{
    int64_t rows = 0;
    int rc = check_seqs(scratch, seqs, n_seqs, &rows, err);
    if (rc != DK_OK) return rc;
    const model_weights *m = scratch->m;
    const model_hparams *hp = &m->hp;
    int64_t r = 0, E = hp->n_embd;
    for (int64_t i = 0; i < n_seqs; i++)
        for (int64_t t = 0; t < seqs[i].n_tok; t++, r++) {
            scratch->row_ctx[r] = seqs[i].ctx;
            scratch->row_pos[r] = seqs[i].ctx->n_past + t;
            scratch->row_tok[r] = seqs[i].tokens[t];
        }
    forward_rows(scratch, scratch->row_tok, rows);
    /* the lm head only for the sequences that want logits, computed compacted, then moved to
     * their rows (from the last, as a row only ever moves down; skipped rows keep garbage) */
    int64_t n_out = 0, V = hp->n_vocab;
    r = 0;
    for (int64_t i = 0; i < n_seqs; i++) {
        seqs[i].ctx->n_past += seqs[i].n_tok;
        r += seqs[i].n_tok;
        if (!seqs[i].no_logits)
            kern_rmsnorm(scratch->cur + n_out++ * E, scratch->x + (r - 1) * E, m->output_norm, E, hp->norm_eps);
    }
    if (n_out == 0) return DK_OK;
    mm(scratch, &m->output, scratch->cur, n_out, logits);
    if (hp->final_softcap > 0) kern_softcap(logits, hp->final_softcap, n_out * V);
    for (int64_t i = n_seqs - 1, j = n_out - 1; i >= 0 && j >= 0; i--) {
        if (seqs[i].no_logits) continue;
        if (i != j) memcpy(logits + i * V, logits + j * V, (size_t)V * sizeof(float));
        j--;
    }
    return DK_OK;
}

static void l2_normalize(float *v, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    float norm = (float)sqrt(s);
    float inv = norm > 0 ? 1.0f / norm : 0.0f;
    for (int64_t i = 0; i < n; i++) v[i] *= inv;
}

int64_t model_pooled_size(const model_weights *m, enum model_pooling pooling)
{
    if (pooling == MODEL_POOLING_UNSPECIFIED) pooling = m->hp.pooling;
    return pooling == MODEL_POOLING_RANK ? m->hp.n_cls_out : m->hp.n_embd;
}

/* The classification head over the (n_seqs, n_embd) [CLS] states gathered in c->cur:
 * out (n_seqs, n_cls_out) = cls_out(tanh(cls(x) + b)) + b_out, as llama.cpp's rank pooling. */
static void rank_head(model_ctx *c, int64_t n_seqs, float *out)
{
    const model_weights *m = c->m;
    int64_t E = m->hp.n_embd, C = m->hp.n_cls_out;
    const float *h = c->cur;
    if (m->cls.w.data) {
        mm(c, &m->cls, c->cur, n_seqs, c->tmp);
        add_bias_rows(c->tmp, m->cls_b, n_seqs, E);
        for (int64_t i = 0; i < n_seqs * E; i++) c->tmp[i] = tanhf(c->tmp[i]);
        h = c->tmp;
    }
    if (m->cls_out.w.data) {
        mm(c, &m->cls_out, h, n_seqs, out);
        add_bias_rows(out, m->cls_out_b, n_seqs, C);
    } else { /* no classifier (jina-reranker-v1 style): the first n_cls_out values of the head */
        for (int64_t s = 0; s < n_seqs; s++) memcpy(out + s * C, h + s * E, (size_t)C * sizeof(float));
    }
}

/* Pools sequence s (rows [first, first + n) of c->x) into out; RANK only gathers its [CLS]
 * row into c->cur row s, for rank_head. */
static void pool_seq(model_ctx *c, int64_t s, int64_t first, int64_t n, enum model_pooling pooling, bool normalize,
                     float *out)
{
    int64_t E = c->m->hp.n_embd;
    const float *x = c->x + first * E;
    switch (pooling) {
    case MODEL_POOLING_NONE:
        memcpy(out, x, (size_t)(n * E) * sizeof(float));
        if (normalize)
            for (int64_t t = 0; t < n; t++) l2_normalize(out + t * E, E);
        return;
    case MODEL_POOLING_MEAN:
        for (int64_t i = 0; i < E; i++) out[i] = 0;
        for (int64_t t = 0; t < n; t++) kern_add(out, out, x + t * E, E);
        kern_scale(out, 1.0f / (float)n, E);
        break;
    case MODEL_POOLING_CLS:
        memcpy(out, x, (size_t)E * sizeof(float));
        break;
    case MODEL_POOLING_LAST:
        memcpy(out, x + (n - 1) * E, (size_t)E * sizeof(float));
        break;
    case MODEL_POOLING_RANK:
        memcpy(c->cur + s * E, x, (size_t)E * sizeof(float));
        return;
    default:
        return;
    }
    if (normalize) l2_normalize(out, E);
}

int model_encode_batch(model_ctx *c, const int32_t *const *tokens, const int64_t *n_tok, int64_t n_seqs,
                       enum model_pooling pooling, bool normalize, float *out, char *err)
{
    const model_weights *m = c->m;
    const model_hparams *hp = &m->hp;
    if (hp->causal) return dk_fail(err, DK_ERR_ARG, "model_encode: %s is not an encoder", hp->arch_name);
    if (c->kind != MODEL_CTX_FULL) return dk_fail(err, DK_ERR_ARG, "model_encode: the context has no scratch or no cache");
    if (n_seqs <= 0) return dk_fail(err, DK_ERR_ARG, "model_encode: no sequences");
    if (pooling == MODEL_POOLING_UNSPECIFIED) pooling = hp->pooling;
    if (pooling < MODEL_POOLING_NONE || pooling > MODEL_POOLING_RANK)
        return dk_fail(err, DK_ERR_ARG, "unknown pooling %d", (int)pooling);
    if (pooling == MODEL_POOLING_RANK && !hp->has_cls_head)
        return dk_fail(err, DK_ERR_ARG, "model_encode: rank pooling needs a classification head, which this model has not");
    int64_t rows = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (n_tok[s] <= 0) return dk_fail(err, DK_ERR_ARG, "model_encode: sequence %lld has no tokens", (long long)s);
        int rc = check_tokens(m, tokens[s], n_tok[s], err);
        if (rc != DK_OK) return rc;
        if (n_tok[s] > c->n_batch - rows || n_tok[s] > hp->n_pos_embd) {
            if (n_seqs == 1)
                return dk_fail(err, DK_ERR_LIMIT, "sequence of %lld tokens exceeds the batch (%lld) or position limit (%lld)",
                               (long long)n_tok[s], (long long)c->n_batch, (long long)hp->n_pos_embd);
            return dk_fail(err, DK_ERR_LIMIT, "sequence %lld (%lld tokens) exceeds the batch (%lld rows in all) or position limit (%lld)",
                           (long long)s, (long long)n_tok[s], (long long)c->n_batch, (long long)hp->n_pos_embd);
        }
        rows += n_tok[s];
    }
    /* rows of all sequences, one after the other in the cache; each sees only its own span */
    for (int64_t s = 0, r = 0; s < n_seqs; s++) {
        int64_t first = r;
        for (int64_t t = 0; t < n_tok[s]; t++, r++) {
            c->row_ctx[r] = c;
            c->row_pos[r] = r;
            c->row_tok[r] = tokens[s][t];
            c->row_first[r] = first;
            c->row_last[r] = first + n_tok[s] - 1;
        }
    }
    c->n_past = 0;
    forward_rows(c, c->row_tok, rows);
    int64_t per_seq = model_pooled_size(m, pooling);
    float *dst = out;
    for (int64_t s = 0, r = 0; s < n_seqs; s++) {
        pool_seq(c, s, r, n_tok[s], pooling, normalize, dst);
        dst += pooling == MODEL_POOLING_NONE ? n_tok[s] * hp->n_embd : per_seq;
        r += n_tok[s];
    }
    if (pooling == MODEL_POOLING_RANK) rank_head(c, n_seqs, out);
    return DK_OK;
}

int model_encode(model_ctx *c, const int32_t *tokens, int64_t n_tok, enum model_pooling pooling,
                 bool normalize, float *out, char *err)
{
    if (n_tok <= 0) return dk_fail(err, DK_ERR_ARG, "model_encode: no tokens");
    return model_encode_batch(c, &tokens, &n_tok, 1, pooling, normalize, out, err);
}
