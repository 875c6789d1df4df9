/*
 * fuzz_gguf.c: fuzz target for the GGUF reader.
 *
 * Opens the input with gguf_open_memory and, if it validates, walks every key/value and
 * every tensor through the public getters (every string array element, every numeric
 * element, the first and last byte of every tensor), so that anything the reader accepted
 * is also safe to use. Not a test of the values themselves.
 */
#include "fuzz.h"

#include "gguf/gguf.h"

static volatile uint64_t fuzz_sink; /* keeps the reads from being optimised away */

static void walk_kv(const gguf_file *f, int64_t i)
{
    const char *key = gguf_kv_key(f, i);
    uint64_t acc = (uint64_t)gguf_find_key(f, key);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    bool b;
    gguf_str s;
    if (gguf_get_u32(f, key, &u32) == DK_OK) acc += u32;
    if (gguf_get_i32(f, key, &i32) == DK_OK) acc += (uint32_t)i32;
    if (gguf_get_u64(f, key, &u64) == DK_OK) acc += u64;
    if (gguf_get_f32(f, key, &f32) == DK_OK) acc += (f32 == f32);
    if (gguf_get_bool(f, key, &b) == DK_OK) acc += b;
    if (gguf_get_str(f, key, &s) == DK_OK && s.len) acc += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
    enum gguf_value_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, key, &et, &n, &data) == DK_OK) {
        acc += gguf_kv_arr_n(f, i) + (uint64_t)gguf_kv_arr_type(f, i);
        for (uint64_t j = 0; j < n; j++) {
            if (et == GGUF_VAL_STRING) {
                if (gguf_get_arr_str(f, key, j, &s) == DK_OK && s.len) acc += (uint8_t)s.ptr[s.len - 1];
            } else {
                double d = gguf_arr_get_f64(et, data, j);
                acc += (uint64_t)gguf_arr_get_i64(et, data, j) + (d == d);
            }
        }
        (void)gguf_get_arr_str(f, key, n, &s);
    }
    const void *raw;
    size_t raw_bytes;
    if (gguf_kv_raw(f, i, &raw, &raw_bytes) == DK_OK && raw_bytes) acc += ((const uint8_t *)raw)[raw_bytes - 1];
    fuzz_sink += acc + (uint64_t)gguf_kv_type(f, i);
}

int fuzz_gguf_one(const uint8_t *data, size_t size)
{
    gguf_file *f;
    char err[DK_ERRLEN];
    if (gguf_open_memory(&f, data, size, err) != DK_OK) return 0;
    uint64_t acc = gguf_version(f) + gguf_alignment(f) + gguf_file_size(f) + gguf_data_offset(f);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) walk_kv(f, i);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_get_tensor(f, i);
        acc += (gguf_find_tensor(f, t->name) == t) + (uint64_t)t->n_elements + t->n_dims;
        if (t->n_bytes) {
            const uint8_t *p = t->data;
            acc += p[0] + p[t->n_bytes - 1];
        }
    }
    fuzz_sink += acc;
    gguf_close(f);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf_one(data, size); }
#endif
