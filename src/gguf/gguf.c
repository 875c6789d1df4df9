/*
 * gguf.c: the GGUF reader and the tensor type traits (the writer is in gguf_write.c).
 *
 * gguf_open maps the file; gguf_open_memory borrows bytes. Both run one validating parse
 * over the whole header (see gguf.h for the layout) before anything is handed out: every
 * count is bounded by the bytes that remain (so no allocation is larger than the file
 * justifies), every length is overflow-checked against the end of the file, keys and
 * tensor names go into open-addressing hash tables (duplicates rejected, lookup O(1)), and
 * string arrays get a per-element index so element i is found in O(1).
 *
 * Not here: anything about what the keys or tensors mean for a model (the model layer).
 * Q8_1 and Q8_K (activation formats) are accepted in files like any other known type: they
 * are well-defined block formats, and rejecting them is the model layer's decision.
 * Integers are decoded byte by byte, so the reader does not depend on host endianness.
 */
#include "gguf/gguf.h"

#include <string.h>

/* ------------------------------------------------------------------ type traits */

typedef struct type_trait {
    const char *name;
    size_t block_size;
    size_t block_bytes;
} type_trait;

/* Sizes as ggml defines its block structs (ggml-common.h). */
static const type_trait type_traits[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_F32] = {"F32", 1, 4},
    [GGUF_TYPE_F16] = {"F16", 1, 2},
    [GGUF_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [GGUF_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [GGUF_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [GGUF_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [GGUF_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [GGUF_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [GGUF_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [GGUF_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [GGUF_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [GGUF_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [GGUF_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [GGUF_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [GGUF_TYPE_BF16] = {"BF16", 1, 2},
};

bool gguf_type_is_known(int type)
{
    return type >= 0 && type < GGUF_TYPE_COUNT && type_traits[type].name != NULL;
}

size_t gguf_type_block_size(enum gguf_tensor_type type)
{
    return gguf_type_is_known((int)type) ? type_traits[type].block_size : 0;
}

size_t gguf_type_block_bytes(enum gguf_tensor_type type)
{
    return gguf_type_is_known((int)type) ? type_traits[type].block_bytes : 0;
}

const char *gguf_type_name(enum gguf_tensor_type type)
{
    return gguf_type_is_known((int)type) ? type_traits[type].name : NULL;
}

int gguf_type_from_name(const char *name)
{
    if (!name) return -1;
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        const char *n = type_traits[t].name;
        if (!n) continue;
        size_t i = 0;
        for (; n[i] && name[i]; i++) {
            char c = name[i];
            if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
            if (c != n[i]) break;
        }
        if (!n[i] && !name[i]) return t;
    }
    return -1;
}

int gguf_row_bytes(enum gguf_tensor_type type, int64_t n, size_t *out_bytes)
{
    *out_bytes = 0;
    if (!gguf_type_is_known((int)type) || n < 0) return DK_ERR_ARG;
    size_t bs = type_traits[type].block_size;
    if ((uint64_t)n % bs != 0) return DK_ERR_FORMAT;
    if ((uint64_t)n > SIZE_MAX) return DK_ERR_NOMEM;
    size_t bytes;
    if (dk_mul_size((size_t)n / bs, type_traits[type].block_bytes, &bytes)) return DK_ERR_NOMEM;
    *out_bytes = bytes;
    return DK_OK;
}

/* ------------------------------------------------------------------ reader structures */

typedef struct gguf_kv {
    char *key;                    /* NUL-terminated copy */
    enum gguf_value_type type;
    enum gguf_value_type arr_type; /* element type when type == ARRAY, else GGUF_VAL_COUNT */
    uint64_t arr_n;               /* elements when type == ARRAY */
    const uint8_t *raw;           /* the serialized value (after the u32 type) in the file */
    size_t raw_bytes;
    const uint8_t *body;          /* scalar bytes / string bytes / first array element */
    uint64_t str_len;             /* for STRING */
    const uint8_t **str_index;    /* for arrays of strings: [arr_n] pointers to each u64 length */
} gguf_kv;

struct gguf_file {
    dk_map map;                   /* zeroed for gguf_open_memory */
    const uint8_t *data;
    size_t size;
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int64_t n_kv;
    gguf_kv *kvs;                 /* [n_kv] */
    int64_t n_tensors;
    gguf_tensor *tensors;         /* [n_tensors] */
    uint32_t *kv_hash;            /* [kv_hash_cap] index+1, 0 = empty */
    size_t kv_hash_cap;           /* power of two */
    uint32_t *tensor_hash;        /* [tensor_hash_cap] */
    size_t tensor_hash_cap;
};

/* ------------------------------------------------------------------ byte cursor */

typedef struct cursor {
    const uint8_t *data;
    size_t size;
    size_t pos;
} cursor;

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p)
{
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static size_t remaining(const cursor *c) { return c->size - c->pos; }

static int read_u32(cursor *c, uint32_t *out)
{
    if (remaining(c) < 4) return -1;
    *out = load_u32(c->data + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *out)
{
    if (remaining(c) < 8) return -1;
    *out = load_u64(c->data + c->pos);
    c->pos += 8;
    return 0;
}

size_t gguf_value_type_size(enum gguf_value_type t)
{
    switch (t) {
    case GGUF_VAL_UINT8: case GGUF_VAL_INT8: case GGUF_VAL_BOOL: return 1;
    case GGUF_VAL_UINT16: case GGUF_VAL_INT16: return 2;
    case GGUF_VAL_UINT32: case GGUF_VAL_INT32: case GGUF_VAL_FLOAT32: return 4;
    case GGUF_VAL_UINT64: case GGUF_VAL_INT64: case GGUF_VAL_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *value_type_name(uint32_t t)
{
    static const char *const names[GGUF_VAL_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return t < GGUF_VAL_COUNT ? names[t] : "unknown";
}

/* ------------------------------------------------------------------ hashing */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int hash_alloc(uint32_t **table, size_t *cap, int64_t n)
{
    size_t c = 16;
    while (c < (size_t)n * 2) c *= 2; /* n is bounded by the file size, so this cannot overflow */
    *table = dk_calloc(c, sizeof **table);
    if (!*table) return -1;
    *cap = c;
    return 0;
}

/* ------------------------------------------------------------------ lookup */

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    if (!f || !key || !f->kv_hash) return -1;
    size_t n = strlen(key);
    size_t mask = f->kv_hash_cap - 1;
    for (size_t i = (size_t)hash_bytes(key, n) & mask;; i = (i + 1) & mask) {
        uint32_t e = f->kv_hash[i];
        if (e == 0) return -1;
        if (strcmp(f->kvs[e - 1].key, key) == 0) return (int64_t)e - 1;
    }
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f || !name || !f->tensor_hash) return NULL;
    size_t n = strlen(name);
    size_t mask = f->tensor_hash_cap - 1;
    for (size_t i = (size_t)hash_bytes(name, n) & mask;; i = (i + 1) & mask) {
        uint32_t e = f->tensor_hash[i];
        if (e == 0) return NULL;
        if (strcmp(f->tensors[e - 1].name, name) == 0) return &f->tensors[e - 1];
    }
}

/* Inserts entry idx with the given name; returns -1 if the name is already present. */
static int hash_insert(uint32_t *table, size_t cap, const char *name, uint32_t idx,
                       const char *(*name_of)(const gguf_file *, uint32_t), const gguf_file *f)
{
    size_t mask = cap - 1;
    for (size_t i = (size_t)hash_bytes(name, strlen(name)) & mask;; i = (i + 1) & mask) {
        uint32_t e = table[i];
        if (e == 0) {
            table[i] = idx + 1;
            return 0;
        }
        if (strcmp(name_of(f, e - 1), name) == 0) return -1;
    }
}

static const char *kv_name_of(const gguf_file *f, uint32_t i) { return f->kvs[i].key; }
static const char *tensor_name_of(const gguf_file *f, uint32_t i) { return f->tensors[i].name; }

/* ------------------------------------------------------------------ parsing */

/* Reads a gguf_string; *ptr points into the file. `what` names it for the message. */
static int read_string(cursor *c, const uint8_t **ptr, uint64_t *len, const char *what, char *err)
{
    size_t at = c->pos;
    uint64_t n;
    if (read_u64(c, &n)) return dk_fail(err, DK_ERR_FORMAT, "gguf: %s length at byte %zu is truncated", what, at);
    if (n > remaining(c))
        return dk_fail(err, DK_ERR_FORMAT, "gguf: %s at byte %zu has length %llu, past the end of the file (size %zu)",
                       what, at, (unsigned long long)n, c->size);
    *ptr = c->data + c->pos;
    *len = n;
    c->pos += (size_t)n;
    return DK_OK;
}

/* Copies a name out of the file, rejecting embedded NULs. */
static int copy_name(char **out, const uint8_t *p, uint64_t len, const char *what, size_t at, char *err)
{
    if (memchr(p, 0, (size_t)len))
        return dk_fail(err, DK_ERR_FORMAT, "gguf: %s at byte %zu contains a NUL byte", what, at);
    *out = dk_strndup((const char *)p, (size_t)len);
    if (!*out) return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
    return DK_OK;
}

static int parse_value(gguf_kv *kv, cursor *c, size_t at, char *err)
{
    kv->raw = c->data + c->pos;
    size_t start = c->pos;
    kv->arr_type = GGUF_VAL_COUNT;
    if (kv->type == GGUF_VAL_STRING) {
        uint64_t len;
        int rc = read_string(c, &kv->body, &len, "string value", err);
        if (rc) return rc;
        kv->str_len = len;
    } else if (kv->type == GGUF_VAL_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (read_u32(c, &et) || read_u64(c, &n))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: array header of key '%s' is truncated", kv->key);
        if (et == GGUF_VAL_ARRAY)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: key '%s' (byte %zu) is an array of arrays", kv->key, at);
        if (et >= GGUF_VAL_COUNT)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: key '%s' (byte %zu) is an array of unknown type %u",
                           kv->key, at, et);
        kv->arr_type = (enum gguf_value_type)et;
        kv->arr_n = n;
        kv->body = c->data + c->pos;
        if (et == GGUF_VAL_STRING) {
            /* every element takes at least its 8-byte length */
            if (n > remaining(c) / 8)
                return dk_fail(err, DK_ERR_FORMAT, "gguf: string array '%s' claims %llu elements, more than the file holds",
                               kv->key, (unsigned long long)n);
            kv->str_index = dk_malloc_array(n ? (size_t)n : 1, sizeof *kv->str_index);
            if (!kv->str_index) return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
            for (uint64_t i = 0; i < n; i++) {
                kv->str_index[i] = c->data + c->pos;
                const uint8_t *p;
                uint64_t len;
                int rc = read_string(c, &p, &len, "string array element", err);
                if (rc) return rc;
            }
        } else {
            size_t es = gguf_value_type_size(kv->arr_type);
            if (n > remaining(c) / es)
                return dk_fail(err, DK_ERR_FORMAT, "gguf: array '%s' of %llu %s elements runs past the end of the file (size %zu)",
                               kv->key, (unsigned long long)n, value_type_name(et), c->size);
            c->pos += (size_t)n * es;
        }
    } else {
        size_t es = gguf_value_type_size(kv->type);
        if (remaining(c) < es)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: value of key '%s' is truncated", kv->key);
        kv->body = c->data + c->pos;
        c->pos += es;
    }
    kv->raw_bytes = c->pos - start;
    return DK_OK;
}

static int parse_kvs(gguf_file *f, cursor *c, char *err)
{
    for (int64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        size_t at = c->pos;
        const uint8_t *kp;
        uint64_t klen;
        int rc = read_string(c, &kp, &klen, "key", err);
        if (rc) return rc;
        rc = copy_name(&kv->key, kp, klen, "key", at, err);
        if (rc) return rc;
        uint32_t t;
        if (read_u32(c, &t)) return dk_fail(err, DK_ERR_FORMAT, "gguf: type of key '%s' is truncated", kv->key);
        if (t >= GGUF_VAL_COUNT)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: key '%s' (byte %zu) has unknown value type %u", kv->key, at, t);
        kv->type = (enum gguf_value_type)t;
        rc = parse_value(kv, c, at, err);
        if (rc) return rc;
        if (hash_insert(f->kv_hash, f->kv_hash_cap, kv->key, (uint32_t)i, kv_name_of, f))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: duplicate key '%s' at byte %zu", kv->key, at);
    }
    return DK_OK;
}

static int parse_tensor_infos(gguf_file *f, cursor *c, char *err)
{
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        size_t at = c->pos;
        const uint8_t *np;
        uint64_t nlen;
        int rc = read_string(c, &np, &nlen, "tensor name", err);
        if (rc) return rc;
        char *name;
        rc = copy_name(&name, np, nlen, "tensor name", at, err);
        if (rc) return rc;
        t->name = name;
        uint32_t n_dims;
        if (read_u32(c, &n_dims)) return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' info is truncated", name);
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' (byte %zu) has %u dimensions (must be 1..%d)",
                           name, at, n_dims, GGUF_MAX_DIMS);
        t->n_dims = n_dims;
        int64_t n_elements = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if ((uint32_t)d < n_dims && read_u64(c, &ne))
                return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' info is truncated", name);
            if (ne > (uint64_t)INT64_MAX)
                return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' has negative dimension ne[%d]", name, d);
            t->ne[d] = (int64_t)ne;
            if (__builtin_mul_overflow(n_elements, t->ne[d], &n_elements))
                return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' element count overflows", name);
        }
        t->n_elements = n_elements;
        uint32_t type;
        uint64_t offset;
        if (read_u32(c, &type) || read_u64(c, &offset))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' info is truncated", name);
        if (!gguf_type_is_known((int)type))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' has unknown type %u", name, type);
        t->type = (enum gguf_tensor_type)type;
        t->offset = offset;
        size_t row;
        rc = gguf_row_bytes(t->type, t->ne[0], &row);
        if (rc == DK_ERR_FORMAT)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' row of %lld values is not a multiple of the %s block size %zu",
                           name, (long long)t->ne[0], gguf_type_name(t->type), gguf_type_block_size(t->type));
        size_t n_bytes = row;
        if (rc || dk_mul_size(n_bytes, (size_t)t->ne[1], &n_bytes) || dk_mul_size(n_bytes, (size_t)t->ne[2], &n_bytes) ||
            dk_mul_size(n_bytes, (size_t)t->ne[3], &n_bytes))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' byte size overflows", name);
        t->n_bytes = n_bytes;
        if (hash_insert(f->tensor_hash, f->tensor_hash_cap, name, (uint32_t)i, tensor_name_of, f))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: duplicate tensor name '%s' at byte %zu", name, at);
    }
    return DK_OK;
}

static int check_alignment(gguf_file *f, char *err)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(f, "general.alignment");
    if (i < 0) return DK_OK;
    if (f->kvs[i].type != GGUF_VAL_UINT32)
        return dk_fail(err, DK_ERR_FORMAT, "gguf: general.alignment has type %s, expected u32",
                       value_type_name(f->kvs[i].type));
    uint32_t a = load_u32(f->kvs[i].body);
    if (a == 0 || (a & (a - 1)) != 0)
        return dk_fail(err, DK_ERR_FORMAT, "gguf: general.alignment %u is not a power of two", a);
    f->alignment = a;
    return DK_OK;
}

static int check_tensor_data(gguf_file *f, char *err)
{
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' offset %llu is not a multiple of the alignment %zu",
                           t->name, (unsigned long long)t->offset, f->alignment);
        uint64_t begin, end;
        if (dk_add_u64(f->data_offset, t->offset, &begin) || dk_add_u64(begin, t->n_bytes, &end))
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' data at offset %llu lies outside the file (size %zu)",
                           t->name, (unsigned long long)t->offset, f->size);
        if (end > f->size)
            return dk_fail(err, DK_ERR_FORMAT, "gguf: tensor '%s' data [%llu..%llu) lies outside the file (size %zu)",
                           t->name, (unsigned long long)begin, (unsigned long long)end, f->size);
        t->data = f->data + begin;
    }
    return DK_OK;
}

static int parse(gguf_file *f, char *err)
{
    cursor c = {f->data, f->size, 0};
    uint32_t magic, version;
    if (read_u32(&c, &magic)) return dk_fail(err, DK_ERR_FORMAT, "gguf: file of %zu bytes is too short for a header", f->size);
    if (magic != GGUF_MAGIC) return dk_fail(err, DK_ERR_FORMAT, "gguf: bad magic 0x%08x (not a GGUF file)", magic);
    if (read_u32(&c, &version)) return dk_fail(err, DK_ERR_FORMAT, "gguf: header is truncated");
    if (version != 2 && version != 3)
        return dk_fail(err, DK_ERR_FORMAT, "gguf: unsupported version %u (only 2 and 3)", version);
    f->version = version;
    uint64_t n_tensors, n_kv;
    if (read_u64(&c, &n_tensors) || read_u64(&c, &n_kv)) return dk_fail(err, DK_ERR_FORMAT, "gguf: header is truncated");
    /* a kv takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 8 + 4 + 8 */
    if (n_kv > remaining(&c) / 13 || n_kv > UINT32_MAX - 1)
        return dk_fail(err, DK_ERR_FORMAT, "gguf: header claims %llu keys, more than the file (size %zu) can hold",
                       (unsigned long long)n_kv, f->size);
    if (n_tensors > remaining(&c) / 32 || n_tensors > UINT32_MAX - 1)
        return dk_fail(err, DK_ERR_FORMAT, "gguf: header claims %llu tensors, more than the file (size %zu) can hold",
                       (unsigned long long)n_tensors, f->size);
    f->n_kv = (int64_t)n_kv;
    f->n_tensors = (int64_t)n_tensors;
    f->kvs = dk_calloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kvs);
    f->tensors = dk_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors || hash_alloc(&f->kv_hash, &f->kv_hash_cap, f->n_kv) ||
        hash_alloc(&f->tensor_hash, &f->tensor_hash_cap, f->n_tensors))
        return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
    int rc = parse_kvs(f, &c, err);
    if (!rc) rc = check_alignment(f, err);
    if (!rc) rc = parse_tensor_infos(f, &c, err);
    if (rc) return rc;
    size_t pad = (f->alignment - c.pos % f->alignment) % f->alignment;
    if (dk_add_size(c.pos, pad, &f->data_offset)) return dk_fail(err, DK_ERR_FORMAT, "gguf: data offset overflows");
    return check_tensor_data(f, err);
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    if (f->kvs) {
        for (int64_t i = 0; i < f->n_kv; i++) {
            dk_free(f->kvs[i].key);
            dk_free(f->kvs[i].str_index);
        }
    }
    if (f->tensors) {
        for (int64_t i = 0; i < f->n_tensors; i++) dk_free((char *)f->tensors[i].name);
    }
    dk_free(f->kvs);
    dk_free(f->tensors);
    dk_free(f->kv_hash);
    dk_free(f->tensor_hash);
    dk_map_close(&f->map);
    dk_free(f);
}

int gguf_open_memory(gguf_file **out, const void *data, size_t size, char *err)
{
    *out = NULL;
    if (!data && size) return dk_fail(err, DK_ERR_ARG, "gguf: NULL data");
    gguf_file *f = dk_calloc(1, sizeof *f);
    if (!f) return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
    f->data = data;
    f->size = size;
    int rc = parse(f, err);
    if (rc) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return DK_OK;
}

int gguf_open(gguf_file **out, const char *path, char *err)
{
    *out = NULL;
    dk_map map;
    int rc = dk_map_open(&map, path, err);
    if (rc) return rc;
    gguf_file *f = dk_calloc(1, sizeof *f);
    if (!f) {
        dk_map_close(&map);
        return dk_fail(err, DK_ERR_NOMEM, "gguf: out of memory");
    }
    f->map = map;
    f->data = map.data;
    f->size = map.size;
    char inner[DK_ERRLEN];
    rc = parse(f, inner);
    if (rc) {
        /* "gguf: X" becomes "gguf: path: X" */
        dk_fail(err, rc, "gguf: %s: %s", path, strncmp(inner, "gguf: ", 6) == 0 ? inner + 6 : inner);
        gguf_close(f);
        return rc;
    }
    *out = f;
    return DK_OK;
}

/* ------------------------------------------------------------------ accessors */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
size_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

static const gguf_kv *kv_at(const gguf_file *f, int64_t i)
{
    return (f && i >= 0 && i < f->n_kv) ? &f->kvs[i] : NULL;
}

const char *gguf_kv_key(const gguf_file *f, int64_t i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv ? kv->key : NULL;
}

enum gguf_value_type gguf_kv_type(const gguf_file *f, int64_t i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv ? kv->type : GGUF_VAL_COUNT;
}

enum gguf_value_type gguf_kv_arr_type(const gguf_file *f, int64_t i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv ? kv->arr_type : GGUF_VAL_COUNT;
}

uint64_t gguf_kv_arr_n(const gguf_file *f, int64_t i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv && kv->type == GGUF_VAL_ARRAY ? kv->arr_n : 0;
}

int gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *n_bytes)
{
    const gguf_kv *kv = kv_at(f, i);
    if (!kv) return DK_ERR_NOTFOUND;
    *data = kv->raw;
    *n_bytes = kv->raw_bytes;
    return DK_OK;
}

const gguf_tensor *gguf_get_tensor(const gguf_file *f, int64_t i)
{
    return (f && i >= 0 && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

/* Integer value of a scalar kv; -1 if it is not an integer type. is_signed tells how to read v. */
static int kv_integer(const gguf_kv *kv, uint64_t *u, int64_t *s, bool *is_signed)
{
    const uint8_t *p = kv->body;
    *is_signed = false;
    switch (kv->type) {
    case GGUF_VAL_UINT8: *u = p[0]; return 0;
    case GGUF_VAL_UINT16: *u = (uint64_t)p[0] | (uint64_t)p[1] << 8; return 0;
    case GGUF_VAL_UINT32: *u = load_u32(p); return 0;
    case GGUF_VAL_UINT64: *u = load_u64(p); return 0;
    case GGUF_VAL_INT8: *s = (int8_t)p[0]; break;
    case GGUF_VAL_INT16: *s = (int16_t)(uint16_t)((uint16_t)p[0] | (uint16_t)p[1] << 8); break;
    case GGUF_VAL_INT32: *s = (int32_t)load_u32(p); break;
    case GGUF_VAL_INT64: *s = (int64_t)load_u64(p); break;
    default: return -1;
    }
    *is_signed = true;
    return 0;
}

static int find_integer(const gguf_file *f, const char *key, int64_t lo, uint64_t hi, uint64_t *u, int64_t *s)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    bool is_signed;
    uint64_t uv = 0;
    int64_t sv = 0;
    if (kv_integer(kv, &uv, &sv, &is_signed)) return DK_ERR_FORMAT;
    if (is_signed) {
        if (sv < lo || (sv > 0 && (uint64_t)sv > hi)) return DK_ERR_FORMAT;
        *s = sv;
        *u = (uint64_t)sv;
    } else {
        if (uv > hi) return DK_ERR_FORMAT;
        *u = uv;
        *s = (int64_t)uv;
    }
    return DK_OK;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    uint64_t u;
    int64_t s;
    int rc = find_integer(f, key, 0, UINT32_MAX, &u, &s);
    if (!rc) *out = (uint32_t)u;
    return rc;
}

int gguf_get_i32(const gguf_file *f, const char *key, int32_t *out)
{
    uint64_t u;
    int64_t s;
    int rc = find_integer(f, key, INT32_MIN, INT32_MAX, &u, &s);
    if (!rc) *out = (int32_t)s;
    return rc;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    uint64_t u;
    int64_t s;
    int rc = find_integer(f, key, 0, UINT64_MAX, &u, &s);
    if (!rc) *out = u;
    return rc;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    if (kv->type == GGUF_VAL_FLOAT32) {
        uint32_t b = load_u32(kv->body);
        memcpy(out, &b, 4);
    } else if (kv->type == GGUF_VAL_FLOAT64) {
        uint64_t b = load_u64(kv->body);
        double d;
        memcpy(&d, &b, 8);
        *out = (float)d;
    } else {
        return DK_ERR_FORMAT;
    }
    return DK_OK;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    if (kv->type != GGUF_VAL_BOOL) return DK_ERR_FORMAT;
    *out = kv->body[0] != 0;
    return DK_OK;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    if (kv->type != GGUF_VAL_STRING) return DK_ERR_FORMAT;
    out->ptr = (const char *)kv->body;
    out->len = (size_t)kv->str_len;
    return DK_OK;
}

int gguf_get_arr(const gguf_file *f, const char *key, enum gguf_value_type *elem_type, uint64_t *n, const void **data)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    if (kv->type != GGUF_VAL_ARRAY) return DK_ERR_FORMAT;
    *elem_type = kv->arr_type;
    *n = kv->arr_n;
    *data = kv->body;
    return DK_OK;
}

int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out)
{
    const gguf_kv *kv = kv_at(f, gguf_find_key(f, key));
    if (!kv) return DK_ERR_NOTFOUND;
    if (kv->type != GGUF_VAL_ARRAY || kv->arr_type != GGUF_VAL_STRING || i >= kv->arr_n) return DK_ERR_FORMAT;
    const uint8_t *p = kv->str_index[i];
    out->len = (size_t)load_u64(p);
    out->ptr = (const char *)p + 8;
    return DK_OK;
}

double gguf_arr_get_f64(enum gguf_value_type elem_type, const void *data, uint64_t i)
{
    const uint8_t *p = (const uint8_t *)data + i * gguf_value_type_size(elem_type);
    if (elem_type == GGUF_VAL_FLOAT32) {
        uint32_t b = load_u32(p);
        float v;
        memcpy(&v, &b, 4);
        return v;
    }
    if (elem_type == GGUF_VAL_FLOAT64) {
        uint64_t b = load_u64(p);
        double v;
        memcpy(&v, &b, 8);
        return v;
    }
    switch (elem_type) {
    case GGUF_VAL_UINT64: return (double)load_u64(p);
    default: return (double)gguf_arr_get_i64(elem_type, data, i);
    }
}

int64_t gguf_arr_get_i64(enum gguf_value_type elem_type, const void *data, uint64_t i)
{
    const uint8_t *p = (const uint8_t *)data + i * gguf_value_type_size(elem_type);
    switch (elem_type) {
    case GGUF_VAL_UINT8: case GGUF_VAL_BOOL: return p[0];
    case GGUF_VAL_INT8: return (int8_t)p[0];
    case GGUF_VAL_UINT16: return (int64_t)((uint16_t)p[0] | (uint16_t)p[1] << 8);
    case GGUF_VAL_INT16: return (int16_t)(uint16_t)((uint16_t)p[0] | (uint16_t)p[1] << 8);
    case GGUF_VAL_UINT32: return (int64_t)load_u32(p);
    case GGUF_VAL_INT32: return (int32_t)load_u32(p);
    case GGUF_VAL_UINT64: return (int64_t)load_u64(p);
    case GGUF_VAL_INT64: return (int64_t)load_u64(p);
    case GGUF_VAL_FLOAT32: case GGUF_VAL_FLOAT64: {
        double d = gguf_arr_get_f64(elem_type, data, i); /* truncated; NaN and out of range give 0 */
        return (d > -9.2e18 && d < 9.2e18) ? (int64_t)d : 0;
    }
    default: return 0;
    }
}
