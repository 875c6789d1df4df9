/*
 * convert_rows: the row engine shared by quantize and synth. A fill callback for the gguf
 * writer that produces one tensor's bytes row by row from a source (another GGUF tensor,
 * dequantized, or deterministic random values), converting each row to the target type,
 * with the rows spread over a kern_pool. Also the type-picking rules for quantization mixes.
 * Not a public interface: convert_internal.h declares it for the module's own files.
 */
#include "convert/convert_internal.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "kernels/kernels.h"

/* llama.cpp's LLAMA_FTYPE numbers (general.file_type). */
static const struct { const char *name; int ftype; enum gguf_tensor_type base; } k_ftypes[] = {
    {"F32", 0, GGUF_TYPE_F32},     {"F16", 1, GGUF_TYPE_F16},     {"Q4_0", 2, GGUF_TYPE_Q4_0},
    {"Q4_1", 3, GGUF_TYPE_Q4_1},   {"Q8_0", 7, GGUF_TYPE_Q8_0},   {"Q5_0", 8, GGUF_TYPE_Q5_0},
    {"Q5_1", 9, GGUF_TYPE_Q5_1},   {"Q2_K", 10, GGUF_TYPE_Q2_K},  {"Q3_K", 11, GGUF_TYPE_Q3_K},
    {"Q3_K_S", 11, GGUF_TYPE_Q3_K}, {"Q3_K_M", 12, GGUF_TYPE_Q3_K}, {"Q4_K", 14, GGUF_TYPE_Q4_K},
    {"Q4_K_S", 14, GGUF_TYPE_Q4_K}, {"Q4_K_M", 15, GGUF_TYPE_Q4_K}, {"Q5_K", 16, GGUF_TYPE_Q5_K},
    {"Q5_K_S", 16, GGUF_TYPE_Q5_K}, {"Q5_K_M", 17, GGUF_TYPE_Q5_K}, {"Q6_K", 18, GGUF_TYPE_Q6_K},
    {"BF16", 32, GGUF_TYPE_BF16},
};

const char *convert_ftype_name(int ftype)
{
    const char *name = NULL; /* the last match: Q4_K_S rather than Q4_K for 14 */
    for (size_t i = 0; i < sizeof k_ftypes / sizeof k_ftypes[0]; i++)
        if (k_ftypes[i].ftype == ftype) name = k_ftypes[i].name;
    return name;
}

int convert_ftype_from_name(const char *name, enum gguf_tensor_type *base)
{
    if (!name) return -1;
    for (size_t i = 0; i < sizeof k_ftypes / sizeof k_ftypes[0]; i++) {
        if (strcasecmp(name, k_ftypes[i].name) == 0) {
            if (base) *base = k_ftypes[i].base;
            return k_ftypes[i].ftype;
        }
    }
    return -1;
}

static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0) return -1;
    int v = 0;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
    return v;
}

/* llama.cpp's use_more_bits: first and last eighth of the layers and every third between. */
static bool more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool has(const char *name, const char *part) { return strstr(name, part) != NULL; }

enum gguf_tensor_type convert_pick_type(const char *mix, const char *name, uint32_t n_dims,
                                        int64_t ne0, int n_layers, bool has_output, bool *fallback)
{
    if (fallback) *fallback = false;
    enum gguf_tensor_type base = GGUF_TYPE_F32;
    if (convert_ftype_from_name(mix, &base) < 0) return GGUF_TYPE_F32;
    /* never quantized (llama.cpp keeps them too): 1-D tensors, bert's position and token-type embeddings */
    if (n_dims < 2 || strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0)
        return GGUF_TYPE_F32;
    enum gguf_tensor_type t = base;
    int il = layer_of(name);
    bool m4 = strcasecmp(mix, "Q4_K_M") == 0, m5 = strcasecmp(mix, "Q5_K_M") == 0;
    bool m3 = strcasecmp(mix, "Q3_K_M") == 0, s4 = strcasecmp(mix, "Q4_K_S") == 0;
    bool is_mix = m4 || m5 || m3 || s4 || strcasecmp(mix, "Q5_K_S") == 0 || strcasecmp(mix, "Q3_K_S") == 0;
    if (is_mix && (strcmp(name, "output.weight") == 0 || (!has_output && strcmp(name, "token_embd.weight") == 0)))
        t = GGUF_TYPE_Q6_K;
    else if ((has(name, "attn_v.weight") || has(name, "attn_qkv.weight")) && il >= 0) {
        /* llama.cpp counts a fused qkv as the layer's attn_v */
        if ((m4 || m5) && more_bits(il, n_layers)) t = GGUF_TYPE_Q6_K;
        else if (m3) t = il < 2 ? GGUF_TYPE_Q5_K : GGUF_TYPE_Q4_K;
    } else if (has(name, "ffn_down") && il >= 0) {
        if ((m4 || m5) && more_bits(il, n_layers)) t = GGUF_TYPE_Q6_K;
        else if (m3) t = il < n_layers / 16 ? GGUF_TYPE_Q5_K : GGUF_TYPE_Q4_K;
        else if (s4 && il < n_layers / 8) t = GGUF_TYPE_Q5_K;
    } else if (has(name, "attn_output.weight") && m3) {
        t = GGUF_TYPE_Q4_K;
    }
    if (ne0 % (int64_t)gguf_type_block_size(t) == 0) return t;
    if (fallback) *fallback = true;
    switch (t) {
    case GGUF_TYPE_Q2_K: case GGUF_TYPE_Q3_K: t = GGUF_TYPE_Q4_0; break;
    case GGUF_TYPE_Q4_K: t = GGUF_TYPE_Q5_0; break;
    case GGUF_TYPE_Q5_K: t = GGUF_TYPE_Q5_1; break;
    case GGUF_TYPE_Q6_K: t = GGUF_TYPE_Q8_0; break;
    default: t = GGUF_TYPE_F16; break;
    }
    if (ne0 % (int64_t)gguf_type_block_size(t) != 0) t = GGUF_TYPE_F16;
    return t;
}

/* ---- random numbers: splitmix64, keyed by (seed, tensor, row) ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t convert_hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void random_row(const convert_fill *f, int64_t row, float *dst, int64_t n)
{
    uint64_t st = f->seed ^ (f->name_hash + 0x632BE59BD9B4E019ull * (uint64_t)(row + 1));
    switch (f->rand_kind) {
    case CONVERT_RAND_ONES:
        for (int64_t i = 0; i < n; i++) dst[i] = 1.0f;
        break;
    case CONVERT_RAND_LLAMA3_ROPE: {
        const double factor = 32.0, low = 1.0, high = 4.0, orig = 8192.0, pi = 3.14159265358979323846;
        for (int64_t i = 0; i < n; i++) {
            double freq = pow((double)f->scale, -(double)(2 * i) / (double)(2 * n));
            double wavelen = 2.0 * pi / freq, r;
            if (wavelen < orig / high) r = 1.0;
            else if (wavelen > orig / low) r = factor;
            else {
                double smooth = (orig / wavelen - low) / (high - low);
                r = 1.0 / ((1.0 - smooth) / factor + smooth);
            }
            dst[i] = (float)r;
        }
        break;
    }
    case CONVERT_RAND_ONES_JITTER:
        for (int64_t i = 0; i < n; i++)
            dst[i] = 1.0f + f->scale * ((float)(splitmix(&st) >> 40) / 16777216.0f * 2.0f - 1.0f);
        break;
    default:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f->scale * ((float)(splitmix(&st) >> 40) / 16777216.0f * 2.0f - 1.0f);
        break;
    }
}

typedef struct rows_job {
    convert_fill *f;
    uint8_t *dst;
    int64_t n_rows;
    int failed;
} rows_job;

static void rows_task(void *ctx, int i_task, int n_tasks)
{
    rows_job *j = ctx;
    convert_fill *f = j->f;
    int64_t r0 = j->n_rows * i_task / n_tasks, r1 = j->n_rows * (i_task + 1) / n_tasks;
    if (r0 >= r1) return;
    float *tmp = dk_malloc_array((size_t)f->ne0, sizeof(float));
    if (!tmp) { __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED); return; }
    for (int64_t r = r0; r < r1; r++) {
        if (f->src) kern_dequantize_row(f->src->type, (const uint8_t *)f->src->data + (size_t)r * f->src_row_bytes, tmp, f->ne0);
        else random_row(f, r, tmp, f->ne0);
        kern_quantize_row(f->type, tmp, j->dst + (size_t)r * f->row_bytes, f->ne0);
    }
    dk_free(tmp);
}

int convert_fill_fn(void *user, const char *tensor_name, void *dst, size_t n_bytes, char *err)
{
    convert_fill *f = user;
    if (f->ne0 <= 0 || n_bytes == 0) return DK_OK;
    int64_t n_rows = f->n_elements / f->ne0;
    if ((size_t)n_rows * f->row_bytes != n_bytes)
        return dk_fail(err, DK_ERR_ARG, "convert: size mismatch for tensor %s", tensor_name);
    rows_job j = {f, dst, n_rows, 0};
    int n_tasks = n_rows < 64 ? 1 : (int)(n_rows < 4096 ? n_rows / 16 : 256);
    if (f->pool) kern_pool_run(f->pool, rows_task, &j, n_tasks);
    else rows_task(&j, 0, 1);
    if (j.failed) return dk_fail(err, DK_ERR_NOMEM, "convert: out of memory converting %s", tensor_name);
    if (f->log && f->verbose) fprintf(f->log, "  %-32s %-5s\n", tensor_name, gguf_type_name(f->type));
    return DK_OK;
}

int convert_fill_init(convert_fill *f, enum gguf_tensor_type type, const int64_t *ne, uint32_t n_dims,
                      char *err)
{
    f->type = type;
    f->ne0 = ne[0];
    int64_t n = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] < 0 || (ne[i] && n > INT64_MAX / ne[i])) return dk_fail(err, DK_ERR_ARG, "convert: tensor too large");
        n *= ne[i];
    }
    f->n_elements = n;
    if (gguf_row_bytes(type, ne[0], &f->row_bytes) != DK_OK)
        return dk_fail(err, DK_ERR_ARG, "convert: row of %lld values does not fit type %s",
                       (long long)ne[0], gguf_type_name(type));
    return DK_OK;
}
