/*
 * gguf_write.c: the GGUF writer (version 3, alignment 32 unless general.alignment says otherwise).
 *
 * Keys keep their first insertion order (setting an existing key replaces its value in
 * place); each value is held already serialized, so gguf_writer_copy_kv is a byte copy of
 * the source file's value. Tensors are laid out in insertion order, each at an offset
 * aligned to general.alignment (if the caller set it) or 32. Tensor bytes are either copied at add time or produced by a fill callback while
 * writing, one tensor at a time, so a large model never has to be held in memory whole.
 * The file is written to a temporary name next to the target and renamed into place.
 *
 * Not here: reading (gguf.c), quantization (the kernels and the convert tool).
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct writer_kv {
    char *key;
    enum gguf_value_type type;
    uint8_t *value;         /* serialized value, as it follows the type in the file */
    size_t value_bytes;
} writer_kv;

typedef struct writer_tensor {
    char *name;
    enum gguf_tensor_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t n_bytes;
    uint8_t *data;          /* owned copy, or NULL when fill is set */
    gguf_fill_fn fill;
    void *user;
} writer_tensor;

struct gguf_writer {
    writer_kv *kvs;         /* [n_kv] */
    size_t n_kv, cap_kv;
    writer_tensor *tensors; /* [n_tensors] */
    size_t n_tensors, cap_tensors;
};

gguf_writer *gguf_writer_new(void)
{
    return dk_calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        dk_free(w->kvs[i].key);
        dk_free(w->kvs[i].value);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        dk_free(w->tensors[i].name);
        dk_free(w->tensors[i].data);
    }
    dk_free(w->kvs);
    dk_free(w->tensors);
    dk_free(w);
}

static void put_le(dk_buf *b, uint64_t v, size_t n_bytes)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < n_bytes; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    dk_buf_append(b, tmp, n_bytes);
}

static void put_string(dk_buf *b, const char *s, size_t len)
{
    put_le(b, len, 8);
    dk_buf_append(b, s, len);
}

/* Takes ownership of value (dk_free'd on failure). Replaces an existing key in place. */
static int set_value(gguf_writer *w, const char *key, enum gguf_value_type type, dk_buf *value)
{
    if (!w || !key || !*key) {
        dk_buf_free(value);
        return DK_ERR_ARG;
    }
    if (value->failed) {
        dk_buf_free(value);
        return DK_ERR_NOMEM;
    }
    size_t n_bytes = value->len;
    uint8_t *bytes = (uint8_t *)dk_buf_detach(value);
    if (!bytes) return DK_ERR_NOMEM;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            dk_free(w->kvs[i].value);
            w->kvs[i].type = type;
            w->kvs[i].value = bytes;
            w->kvs[i].value_bytes = n_bytes;
            return DK_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        writer_kv *kvs = dk_realloc(w->kvs, cap * sizeof *kvs);
        if (!kvs) {
            dk_free(bytes);
            return DK_ERR_NOMEM;
        }
        w->kvs = kvs;
        w->cap_kv = cap;
    }
    char *k = dk_strdup(key);
    if (!k) {
        dk_free(bytes);
        return DK_ERR_NOMEM;
    }
    w->kvs[w->n_kv++] = (writer_kv){k, type, bytes, n_bytes};
    return DK_OK;
}

static int set_scalar(gguf_writer *w, const char *key, enum gguf_value_type type, uint64_t bits)
{
    dk_buf b = {0};
    put_le(&b, bits, gguf_value_type_size(type));
    return set_value(w, key, type, &b);
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_VAL_UINT32, v); }
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_VAL_INT32, (uint32_t)v);
}
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_VAL_UINT64, v); }
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_scalar(w, key, GGUF_VAL_FLOAT32, bits);
}
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) { return set_scalar(w, key, GGUF_VAL_BOOL, v ? 1 : 0); }

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s)
{
    if (!s) return DK_ERR_ARG;
    dk_buf b = {0};
    put_string(&b, s, strlen(s));
    return set_value(w, key, GGUF_VAL_STRING, &b);
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, enum gguf_value_type elem_type, const void *data, uint64_t n)
{
    size_t es = gguf_value_type_size(elem_type);
    size_t n_bytes;
    if (es == 0 || (n && !data) || n > SIZE_MAX || dk_mul_size((size_t)n, es, &n_bytes)) return DK_ERR_ARG;
    dk_buf b = {0};
    put_le(&b, (uint64_t)elem_type, 4);
    put_le(&b, n, 8);
    /* elements are taken in host order and written little-endian */
    const uint8_t *p = data;
    if (dk_buf_reserve(&b, n_bytes) == 0) {
        for (size_t i = 0; i < (size_t)n; i++) {
            uint64_t v = 0;
            if (es == 1) v = p[i];
            else if (es == 2) { uint16_t x; memcpy(&x, p + 2 * i, 2); v = x; }
            else if (es == 4) { uint32_t x; memcpy(&x, p + 4 * i, 4); v = x; }
            else memcpy(&v, p + 8 * i, 8);
            put_le(&b, v, es);
        }
    }
    return set_value(w, key, GGUF_VAL_ARRAY, &b);
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, const size_t *lens, uint64_t n)
{
    if (n && !strs) return DK_ERR_ARG;
    dk_buf b = {0};
    put_le(&b, GGUF_VAL_STRING, 4);
    put_le(&b, n, 8);
    for (uint64_t i = 0; i < n && !b.failed; i++) {
        if (!strs[i]) {
            dk_buf_free(&b);
            return DK_ERR_ARG;
        }
        put_string(&b, strs[i], lens ? lens[i] : strlen(strs[i]));
    }
    return set_value(w, key, GGUF_VAL_ARRAY, &b);
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, int64_t i_kv)
{
    const void *raw;
    size_t n_bytes;
    if (!src || gguf_kv_raw(src, i_kv, &raw, &n_bytes) != DK_OK) return DK_ERR_ARG;
    dk_buf b = {0};
    dk_buf_append(&b, raw, n_bytes);
    return set_value(w, gguf_kv_key(src, i_kv), gguf_kv_type(src, i_kv), &b);
}

int gguf_writer_remove_key(gguf_writer *w, const char *key)
{
    if (!w || !key) return DK_ERR_ARG;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            dk_free(w->kvs[i].key);
            dk_free(w->kvs[i].value);
            memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof *w->kvs);
            w->n_kv--;
            return DK_OK;
        }
    }
    return DK_ERR_NOTFOUND;
}

/* Validates a new tensor and appends its slot (data/fill left to the caller). */
static int add_tensor(gguf_writer *w, const char *name, enum gguf_tensor_type type, uint32_t n_dims,
                      const int64_t *ne, writer_tensor **out)
{
    if (!w || !name || !*name || strlen(name) > GGUF_WRITER_MAX_NAME || !gguf_type_is_known((int)type) || n_dims < 1 ||
        n_dims > GGUF_MAX_DIMS || !ne)
        return DK_ERR_ARG;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return DK_ERR_ARG;
    writer_tensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0) return DK_ERR_ARG;
    }
    size_t n_bytes;
    if (gguf_row_bytes(type, t.ne[0], &n_bytes) != DK_OK) return DK_ERR_ARG;
    for (int d = 1; d < GGUF_MAX_DIMS; d++)
        if ((uint64_t)t.ne[d] > SIZE_MAX || dk_mul_size(n_bytes, (size_t)t.ne[d], &n_bytes)) return DK_ERR_ARG;
    t.n_bytes = n_bytes;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        writer_tensor *ts = dk_realloc(w->tensors, cap * sizeof *ts);
        if (!ts) return DK_ERR_NOMEM;
        w->tensors = ts;
        w->cap_tensors = cap;
    }
    t.name = dk_strdup(name);
    if (!t.name) return DK_ERR_NOMEM;
    w->tensors[w->n_tensors] = t;
    *out = &w->tensors[w->n_tensors];
    return DK_OK;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum gguf_tensor_type type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t n_bytes)
{
    writer_tensor *t;
    int rc = add_tensor(w, name, type, n_dims, ne, &t);
    if (rc) return rc;
    if (n_bytes != t->n_bytes || (n_bytes && !data)) {
        dk_free(t->name);
        return DK_ERR_ARG;
    }
    if (n_bytes) {
        t->data = dk_malloc(n_bytes);
        if (!t->data) {
            dk_free(t->name);
            return DK_ERR_NOMEM;
        }
        memcpy(t->data, data, n_bytes);
    }
    w->n_tensors++;
    return DK_OK;
}

int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, enum gguf_tensor_type type, uint32_t n_dims,
                                const int64_t *ne, gguf_fill_fn fill, void *user)
{
    if (!fill) return DK_ERR_ARG;
    writer_tensor *t;
    int rc = add_tensor(w, name, type, n_dims, ne, &t);
    if (rc) return rc;
    t->fill = fill;
    t->user = user;
    w->n_tensors++;
    return DK_OK;
}

static size_t pad_to(size_t n, size_t align) { return (align - n % align) % align; }

/* The alignment the file will have: general.alignment if set (a u32 power of two), else 32.
 * 0 if the key is set to anything else. */
static size_t writer_alignment(const gguf_writer *w)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        if (w->kvs[i].type != GGUF_VAL_UINT32 || w->kvs[i].value_bytes != 4) return 0;
        const uint8_t *p = w->kvs[i].value;
        uint32_t a = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        return (a != 0 && (a & (a - 1)) == 0) ? a : 0;
    }
    return GGUF_DEFAULT_ALIGNMENT;
}

/* Appends n zero bytes. */
static void put_zeros(dk_buf *b, size_t n)
{
    static const uint8_t zeros[64];
    while (n > 0 && !b->failed) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        dk_buf_append(b, zeros, k);
        n -= k;
    }
}

/* Serializes everything before the data section, padding included. */
static int build_header(const gguf_writer *w, size_t align, dk_buf *b)
{
    put_le(b, GGUF_MAGIC, 4);
    put_le(b, 3, 4);
    put_le(b, w->n_tensors, 8);
    put_le(b, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_string(b, w->kvs[i].key, strlen(w->kvs[i].key));
        put_le(b, (uint64_t)w->kvs[i].type, 4);
        dk_buf_append(b, w->kvs[i].value, w->kvs[i].value_bytes);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        put_string(b, t->name, strlen(t->name));
        put_le(b, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) put_le(b, (uint64_t)t->ne[d], 8);
        put_le(b, (uint64_t)t->type, 4);
        put_le(b, offset, 8);
        if (dk_add_u64(offset, t->n_bytes, &offset) || dk_add_u64(offset, pad_to(offset, align), &offset))
            return DK_ERR_NOMEM;
    }
    put_zeros(b, pad_to(b->len, align));
    return b->failed ? DK_ERR_NOMEM : DK_OK;
}

static int write_all(FILE *fp, const void *data, size_t n, const char *path, char *err)
{
    if (n && fwrite(data, 1, n, fp) != n) return dk_fail(err, DK_ERR_IO, "gguf: cannot write %s: %s", path, strerror(errno));
    return DK_OK;
}

static int write_zeros(FILE *fp, size_t n, const char *path, char *err)
{
    static const uint8_t zeros[256];
    int rc = DK_OK;
    while (n > 0 && !rc) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        rc = write_all(fp, zeros, k, path, err);
        n -= k;
    }
    return rc;
}

static int write_body(const gguf_writer *w, FILE *fp, const char *path, char *err)
{
    size_t align = writer_alignment(w);
    if (align == 0) return dk_fail(err, DK_ERR_ARG, "gguf: general.alignment must be a u32 power of two");
    dk_buf header = {0};
    int rc = build_header(w, align, &header);
    if (rc) {
        dk_buf_free(&header);
        return dk_fail(err, rc, "gguf: out of memory building the header of %s", path);
    }
    rc = write_all(fp, header.data, header.len, path, err);
    dk_buf_free(&header);
    for (size_t i = 0; i < w->n_tensors && !rc; i++) {
        const writer_tensor *t = &w->tensors[i];
        if (t->fill && t->n_bytes) {
            uint8_t *buf = dk_malloc(t->n_bytes);
            if (!buf) return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory for tensor '%s' (%zu bytes)", t->name, t->n_bytes);
            rc = t->fill(t->user, t->name, buf, t->n_bytes, err);
            if (!rc) rc = write_all(fp, buf, t->n_bytes, path, err);
            dk_free(buf);
        } else {
            rc = write_all(fp, t->data, t->n_bytes, path, err);
        }
        if (!rc) rc = write_zeros(fp, pad_to(t->n_bytes, align), path, err);
    }
    return rc;
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err)
{
    if (!w || !path) return dk_fail(err, DK_ERR_ARG, "gguf: NULL writer or path");
    dk_buf tmp = {0};
    dk_buf_printf(&tmp, "%s.tmp.XXXXXX", path);
    if (tmp.failed) return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
    int fd = mkstemp(tmp.data);
    if (fd < 0) {
        int rc = dk_fail(err, DK_ERR_IO, "gguf: cannot create a temporary file for %s: %s", path, strerror(errno));
        dk_buf_free(&tmp);
        return rc;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        close(fd);
        unlink(tmp.data);
        dk_buf_free(&tmp);
        return dk_fail(err, DK_ERR_IO, "gguf: cannot write %s: %s", path, strerror(errno));
    }
    int rc = write_body(w, fp, path, err);
    if (fflush(fp) != 0 && !rc) rc = dk_fail(err, DK_ERR_IO, "gguf: cannot write %s: %s", path, strerror(errno));
    if (!rc && fsync(fileno(fp)) != 0) rc = dk_fail(err, DK_ERR_IO, "gguf: cannot sync %s: %s", path, strerror(errno));
    if (fclose(fp) != 0 && !rc) rc = dk_fail(err, DK_ERR_IO, "gguf: cannot write %s: %s", path, strerror(errno));
    /* mkstemp creates 0600; give the file the usual permissions */
    if (!rc && chmod(tmp.data, 0644) != 0) rc = dk_fail(err, DK_ERR_IO, "gguf: cannot chmod %s: %s", path, strerror(errno));
    if (!rc && rename(tmp.data, path) != 0)
        rc = dk_fail(err, DK_ERR_IO, "gguf: cannot rename into %s: %s", path, strerror(errno));
    if (rc) unlink(tmp.data);
    dk_buf_free(&tmp);
    return rc;
}
