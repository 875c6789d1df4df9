/*
 * convert_internal.h: shared between the files of src/convert only (not an interface).
 * convert_fill is the user data of convert_fill_fn, the gguf writer fill callback that
 * produces a tensor row by row: from src (dequantized) when src is set, else random values.
 */
#ifndef DK_CONVERT_INTERNAL_H
#define DK_CONVERT_INTERNAL_H

#include "convert/convert.h"
#include "kernels/kernels.h"

/* LLAMA3_ROPE: Llama 3.x rope_freqs factors (factor 32, low 1, high 4, original context 8192)
 * for head_dim = 2 * ne0 and rope base = scale. */
enum { CONVERT_RAND_UNIFORM = 0, CONVERT_RAND_ONES = 1, CONVERT_RAND_ONES_JITTER = 2, CONVERT_RAND_LLAMA3_ROPE = 3 };

typedef struct convert_fill {
    enum gguf_tensor_type type;  /* target type */
    int64_t ne0, n_elements;
    size_t row_bytes;            /* target bytes per row */
    const gguf_tensor *src;      /* source tensor (borrowed) or NULL */
    size_t src_row_bytes;
    uint64_t seed, name_hash;    /* random source */
    int rand_kind;
    float scale;                 /* uniform in [-scale, scale] */
    kern_pool *pool;             /* borrowed, may be NULL */
    FILE *log;
    int verbose;
} convert_fill;

int convert_fill_init(convert_fill *f, enum gguf_tensor_type type, const int64_t *ne, uint32_t n_dims, char *err);
int convert_fill_fn(void *user, const char *tensor_name, void *dst, size_t n_bytes, char *err);
uint64_t convert_hash_name(const char *s);
int convert_threads(int n);

#endif
