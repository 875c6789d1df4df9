/*
 * gguf: read and write GGUF model files (versions 2 and 3, little-endian).
 *
 * The reader maps the file read-only and validates all of it before handing anything out,
 * so the layers above can trust what they get: every count, length and offset is checked
 * against the file size with overflow-checked arithmetic, value and tensor types must be
 * known, tensor data must lie inside the data section, be aligned, and have exactly the size
 * its shape and type imply. A hostile file yields DK_ERR_FORMAT and a one-line message,
 * never a crash or an allocation larger than the file justifies. Whether the tensors make
 * sense for an architecture is the model layer's business, not this one's.
 *
 * The byte layout (all integers little-endian):
 *
 *   u32  magic            "GGUF" (0x46554747)
 *   u32  version          2 or 3
 *   u64  n_tensors
 *   u64  n_kv
 *   n_kv times:           key: gguf_string, u32 value_type, value
 *   n_tensors times:      name: gguf_string, u32 n_dims (1..4), u64 ne[n_dims],
 *                         u32 tensor_type, u64 offset (relative to the data section)
 *   padding               to general.alignment (default 32)
 *   data section          tensor bytes, each at its offset, each offset aligned
 *
 *   gguf_string = u64 length, then that many bytes (UTF-8, no NUL)
 *   value       = scalar of its type | gguf_string | array: u32 elem_type, u64 n, n elements
 *                 (arrays of arrays are not allowed here)
 *
 * Tensor shapes are ggml's: ne[0] is the contiguous dimension, so a weight [n_in, n_out] is
 * n_out rows of n_in values. Rows are stored as blocks of the tensor type (see below).
 *
 * Thread safety: a gguf_file is immutable after gguf_open and may be read from any number
 * of threads. A gguf_writer belongs to one thread.
 */
#ifndef DK_GGUF_H
#define DK_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define GGUF_MAGIC 0x46554747u
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* Metadata value types, as numbered in the file. */
enum gguf_value_type {
    GGUF_VAL_UINT8 = 0,
    GGUF_VAL_INT8 = 1,
    GGUF_VAL_UINT16 = 2,
    GGUF_VAL_INT16 = 3,
    GGUF_VAL_UINT32 = 4,
    GGUF_VAL_INT32 = 5,
    GGUF_VAL_FLOAT32 = 6,
    GGUF_VAL_BOOL = 7,
    GGUF_VAL_STRING = 8,
    GGUF_VAL_ARRAY = 9,
    GGUF_VAL_UINT64 = 10,
    GGUF_VAL_INT64 = 11,
    GGUF_VAL_FLOAT64 = 12,
    GGUF_VAL_COUNT
};

/* Tensor types, numbered as ggml numbers them (the numbers are part of the file format).
 * Only these are accepted by the reader; Q8_1 and Q8_K are accepted in files too (they are
 * well-defined block formats; whether a model may use them is the model layer's call). */
enum gguf_tensor_type {
    GGUF_TYPE_F32 = 0,
    GGUF_TYPE_F16 = 1,
    GGUF_TYPE_Q4_0 = 2,
    GGUF_TYPE_Q4_1 = 3,
    GGUF_TYPE_Q5_0 = 6,
    GGUF_TYPE_Q5_1 = 7,
    GGUF_TYPE_Q8_0 = 8,
    GGUF_TYPE_Q8_1 = 9,   /* activation format only; never in files written by duckling */
    GGUF_TYPE_Q2_K = 10,
    GGUF_TYPE_Q3_K = 11,
    GGUF_TYPE_Q4_K = 12,
    GGUF_TYPE_Q5_K = 13,
    GGUF_TYPE_Q6_K = 14,
    GGUF_TYPE_Q8_K = 15,  /* activation format only */
    GGUF_TYPE_BF16 = 30,
    GGUF_TYPE_COUNT = 31  /* upper bound of the numbering, not a type */
};

/* Bytes of one scalar of a numeric value type (BOOL is 1); 0 for STRING, ARRAY or unknown. */
size_t gguf_value_type_size(enum gguf_value_type t);

/* Type traits. For an unknown type: block_size 0, block_bytes 0, name NULL. */
bool gguf_type_is_known(int type);
size_t gguf_type_block_size(enum gguf_tensor_type type);   /* values per block: 1, 32 or 256 */
size_t gguf_type_block_bytes(enum gguf_tensor_type type);  /* bytes per block */
const char *gguf_type_name(enum gguf_tensor_type type);    /* "F32", "Q4_K", ... */
/* Parses a type name ("q4_k", "Q8_0", "bf16"; case-insensitive); -1 if unknown. */
int gguf_type_from_name(const char *name);
/* Bytes of one row of n values; 0 (and DK_ERR) if n is not a multiple of the block size
 * or the size overflows. */
int gguf_row_bytes(enum gguf_tensor_type type, int64_t n, size_t *out_bytes);

/* ------------------------------------------------------------------ reader */

typedef struct gguf_file gguf_file;

/* A string inside the mapped file: NOT NUL-terminated; valid while the gguf_file is open. */
typedef struct gguf_str {
    const char *ptr;
    size_t len;
} gguf_str;

typedef struct gguf_tensor {
    const char *name;           /* NUL-terminated copy, owned by the gguf_file */
    enum gguf_tensor_type type;
    uint32_t n_dims;            /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS];  /* ne[i] = 1 for i >= n_dims; all >= 0 (0: an empty tensor) */
    int64_t n_elements;         /* product of ne */
    uint64_t offset;            /* within the data section */
    size_t n_bytes;             /* exact size implied by type and shape */
    const void *data;           /* points into the mapping, at an aligned file offset (mappings are
                                   page-aligned, so gguf_open gives aligned pointers) */
} gguf_tensor;

/* Opens and validates a file. On success *out owns the mapping; free with gguf_close. On
 * failure *out is NULL and the result is DK_ERR_IO (cannot open or map), DK_ERR_NOMEM, or
 * DK_ERR_FORMAT with one line naming the file and what is wrong where. Besides the checks
 * listed at the top: keys and tensor names must be unique and contain no NUL byte, and
 * general.alignment, if present, must be a u32 power of two. Counts and lengths are checked
 * against the bytes left before anything is allocated for them, so allocations stay
 * proportional to the file size. Tensors may leave gaps or overlap (only bounds and
 * alignment are checked). */
int gguf_open(gguf_file **out, const char *path, char *err);
/* The same validation over bytes in memory (fuzzing, tests). The bytes are borrowed and
 * must outlive the gguf_file. */
int gguf_open_memory(gguf_file **out, const void *data, size_t size, char *err);
void gguf_close(gguf_file *f); /* NULL is fine */

uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);
size_t gguf_file_size(const gguf_file *f);
/* Byte offset of the data section from the start of the file. */
size_t gguf_data_offset(const gguf_file *f);

/* Metadata: index access and lookup by key. gguf_find_key returns -1 when absent. */
int64_t gguf_n_kv(const gguf_file *f);
int64_t gguf_find_key(const gguf_file *f, const char *key);
const char *gguf_kv_key(const gguf_file *f, int64_t i);        /* NUL-terminated, owned by f */
enum gguf_value_type gguf_kv_type(const gguf_file *f, int64_t i);
enum gguf_value_type gguf_kv_arr_type(const gguf_file *f, int64_t i); /* element type of an array */
uint64_t gguf_kv_arr_n(const gguf_file *f, int64_t i);         /* elements of an array, else 0 */
/* (Out-of-range i: gguf_kv_key NULL, the type getters GGUF_VAL_COUNT; gguf_kv_arr_type is
 * GGUF_VAL_COUNT for a value that is not an array.) */
/* The serialized value of kv i exactly as in the file (the bytes after its u32 value type:
 * scalar, or u64 length + bytes, or u32 elem_type + u64 n + elements). Points into f.
 * DK_ERR_NOTFOUND if i is out of range. */
int gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *n_bytes);

/* Typed getters by key. They return DK_OK, DK_ERR_NOTFOUND (no such key) or DK_ERR_FORMAT
 * (the value has another type or does not fit). Integer getters accept any integer value
 * type whose value fits; float getters accept FLOAT32 and FLOAT64. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i32(const gguf_file *f, const char *key, int32_t *out);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

/* Arrays. Numeric arrays: *data points at n little-endian elements of elem_type inside the
 * mapping (possibly unaligned: read with memcpy or the helpers below). String arrays:
 * element access by index in O(1) (the reader indexes them at open); for them gguf_get_arr
 * gives elem_type GGUF_VAL_STRING and *data at the first element's u64 length.
 * gguf_get_arr_str returns DK_ERR_FORMAT if the key is not a string array or i >= n. */
int gguf_get_arr(const gguf_file *f, const char *key, enum gguf_value_type *elem_type,
                 uint64_t *n, const void **data);
int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out);
/* Element i of a numeric array converted to double / int64 (caller checks i < n). Floats
 * convert to int64 by truncation (NaN or out of range: 0); BOOL reads as 0/1. */
double gguf_arr_get_f64(enum gguf_value_type elem_type, const void *data, uint64_t i);
int64_t gguf_arr_get_i64(enum gguf_value_type elem_type, const void *data, uint64_t i);

/* Tensors: index access and lookup by name (NULL when absent). */
int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_get_tensor(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* ------------------------------------------------------------------ writer */

typedef struct gguf_writer gguf_writer;

/* Produces the bytes of one tensor at write time (so large models need not sit in memory).
 * Must write exactly n_bytes into dst; returns DK_OK or an error code with err filled. */
typedef int (*gguf_fill_fn)(void *user, const char *tensor_name, void *dst, size_t n_bytes, char *err);

gguf_writer *gguf_writer_new(void);   /* NULL on allocation failure; free with gguf_writer_free */
void gguf_writer_free(gguf_writer *w);

/* Setting a key that was already set replaces its value. Strings are copied. */
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s);
int gguf_writer_set_arr(gguf_writer *w, const char *key, enum gguf_value_type elem_type,
                        const void *data, uint64_t n);      /* numeric elements, copied */
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            const size_t *lens, uint64_t n); /* lens may be NULL (strlen) */
/* Copies one key/value (any type, arrays included) from an open file. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, int64_t i_kv);
int gguf_writer_remove_key(gguf_writer *w, const char *key);

/* Tensor names longer than this are refused by the writer (ggml's GGML_MAX_NAME is 64 with
 * the NUL, and llama.cpp rejects longer names); the reader accepts any length. */
#define GGUF_WRITER_MAX_NAME 63

/* Adding a tensor returns DK_ERR_ARG for a duplicate or empty or too long name, an unknown
 * type, n_dims outside 1..4, a negative ne, a row (ne[0]) that is not a whole number of
 * blocks, or (gguf_writer_add_tensor) n_bytes different from the size the shape implies.
 *
 * Adds a tensor whose bytes are copied now (data holds exactly the row-major blocks). */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum gguf_tensor_type type,
                           uint32_t n_dims, const int64_t *ne, const void *data, size_t n_bytes);
/* Adds a tensor whose bytes come from fill(user, ...) when the file is written. */
int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, enum gguf_tensor_type type,
                                uint32_t n_dims, const int64_t *ne, gguf_fill_fn fill, void *user);

/* Writes version 3, atomically (temporary file + rename in the target's directory). The
 * alignment is 32, or general.alignment if that key was set (it must then be a u32 power of
 * two, else DK_ERR_ARG). Fill callbacks run here, one tensor at a time, in insertion order;
 * a failing callback's code and message are returned and no file is left behind. */
int gguf_writer_write(gguf_writer *w, const char *path, char *err);

#endif
