/*
 * jinja_value.c: the Jinja interpreter's memory and values: the arena everything lives in,
 * lists and ordered dicts, conversion from jansson, truthiness and equality, and the two
 * ways a value becomes text (printing and JSON), written exactly as @huggingface/jinja writes
 * them (its numbers are JavaScript numbers: 1.0 prints "1.0" but serializes as 1).
 * Also the UTF-8 and JavaScript-whitespace helpers the other parts share.
 * Not for: evaluation (jinja.c) or filters (jinja_filters.c).
 */
#include "chat/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

#define JINJA_CHUNK_BYTES ((size_t)64 << 10)

struct jinja_chunk {
    jinja_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *jinja_alloc(jinja_arena *arena, size_t n_bytes)
{
    size_t need = (n_bytes + 15) & ~(size_t)15;
    if (need < n_bytes) return NULL;
    if (need == 0) need = 16;
    jinja_chunk *c = arena->head;
    if (c && c->cap - c->used >= need) {
        void *p = c->data + c->used;
        c->used += need;
        return p;
    }
    size_t cap = need > JINJA_CHUNK_BYTES / 4 ? need : JINJA_CHUNK_BYTES;
    size_t total;
    if (dk_add_size(sizeof(jinja_chunk), cap, &total)) return NULL;
    if (arena->max_bytes && (total > arena->max_bytes || arena->n_bytes > arena->max_bytes - total)) {
        arena->over_limit = true;
        return NULL;
    }
    jinja_chunk *nc = dk_malloc(total);
    if (!nc) {
        arena->over_limit = false;
        return NULL;
    }
    arena->n_bytes += total;
    nc->cap = cap;
    nc->used = need;
    /* A big one-off block goes behind the current chunk so its free space stays usable. */
    if (c && cap != JINJA_CHUNK_BYTES) {
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        arena->head = nc;
    }
    return nc->data;
}

char *jinja_strndup(jinja_arena *arena, const char *s, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *p = jinja_alloc(arena, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void jinja_arena_free(jinja_arena *arena)
{
    jinja_chunk *c = arena->head;
    while (c) {
        jinja_chunk *next = c->next;
        dk_free(c);
        c = next;
    }
    size_t max = arena->max_bytes;
    memset(arena, 0, sizeof *arena);
    arena->max_bytes = max;
}

/* ---- positions ---- */

void jinja_pos_format(const char *source, size_t n_source, size_t pos, dk_buf *b)
{
    size_t line = 1, col = 1;
    if (pos > n_source) pos = n_source;
    for (size_t i = 0; i < pos;) {
        if (source[i] == '\n') {
            line++;
            col = 1;
            i++;
            continue;
        }
        jinja_utf8_next(source, pos, &i);
        col++;
    }
    dk_buf_printf(b, "line %zu, column %zu: ", line, col);
}

/* ---- UTF-8 ---- */

uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = u[k];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len <= 1 || k + (size_t)len > n) {
        *i = k + 1;
        return c;
    }
    uint32_t cp = c & (0x7f >> len);
    for (int j = 1; j < len; j++) {
        if ((u[k + j] & 0xc0) != 0x80) {
            *i = k + 1;
            return c;
        }
        cp = (cp << 6) | (u[k + j] & 0x3f);
    }
    *i = k + (size_t)len;
    return cp;
}

void jinja_utf8_put(dk_buf *b, uint32_t cp)
{
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xc0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xe0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        t[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        t[0] = (char)(0xf0 | ((cp >> 18) & 0x07));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        t[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    dk_buf_append(b, t, n);
}

size_t jinja_utf8_count(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; count++) jinja_utf8_next(s, n, &i);
    return count;
}

bool jinja_js_space(uint32_t cp)
{
    switch (cp) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20: case 0xa0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000: case 0xfeff:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200a;
    }
}

/* Start of the code point that ends at s[end) (one byte back for invalid sequences). */
static size_t utf8_prev(const char *s, size_t end)
{
    size_t k = end - 1;
    for (int j = 0; j < 3 && k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80; j++) k--;
    size_t i = k;
    jinja_utf8_next(s, end, &i);
    return i == end ? k : end - 1;
}

jinja_slice jinja_js_trim(const char *s, size_t n, int which)
{
    size_t start = 0, end = n;
    if (which & 1) {
        while (start < end) {
            size_t i = start;
            if (!jinja_js_space(jinja_utf8_next(s, end, &i))) break;
            start = i;
        }
    }
    if (which & 2) {
        while (end > start) {
            size_t k = utf8_prev(s, end), i = k;
            if (!jinja_js_space(jinja_utf8_next(s, end, &i))) break;
            end = k;
        }
    }
    jinja_slice r = {s + start, end - start};
    return r;
}

/* ---- containers ---- */

jinja_list *jinja_list_new(jinja_arena *arena, size_t cap)
{
    jinja_list *l = jinja_alloc(arena, sizeof *l);
    if (!l) return NULL;
    l->n = 0;
    l->cap = cap;
    l->items = NULL;
    if (cap) {
        size_t bytes;
        if (dk_mul_size(cap, sizeof(jinja_value), &bytes) || !(l->items = jinja_alloc(arena, bytes))) return NULL;
    }
    return l;
}

int jinja_list_push(jinja_arena *arena, jinja_list *list, jinja_value v)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 4, bytes;
        if (dk_mul_size(cap, sizeof(jinja_value), &bytes)) return DK_ERR_NOMEM;
        jinja_value *items = jinja_alloc(arena, bytes);
        if (!items) return DK_ERR_NOMEM;
        if (list->n) memcpy(items, list->items, list->n * sizeof(jinja_value));
        list->items = items;
        list->cap = cap;
    }
    list->items[list->n++] = v;
    return DK_OK;
}

jinja_dict *jinja_dict_new(jinja_arena *arena, size_t cap)
{
    jinja_dict *d = jinja_alloc(arena, sizeof *d);
    if (!d) return NULL;
    memset(d, 0, sizeof *d);
    if (cap) {
        size_t kb, vb;
        if (dk_mul_size(cap, sizeof(jinja_slice), &kb) || dk_mul_size(cap, sizeof(jinja_value), &vb)) return NULL;
        if (!(d->keys = jinja_alloc(arena, kb)) || !(d->values = jinja_alloc(arena, vb))) return NULL;
        d->cap = cap;
    }
    return d;
}

static size_t dict_find(const jinja_dict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].n == len && (len == 0 || memcmp(d->keys[i].p, key, len) == 0)) return i;
    return SIZE_MAX;
}

const jinja_value *jinja_dict_get(const jinja_dict *dict, const char *key, size_t key_len)
{
    size_t i = dict_find(dict, key, key_len);
    return i == SIZE_MAX ? NULL : &dict->values[i];
}

int jinja_dict_set(jinja_arena *arena, jinja_dict *dict, const char *key, size_t key_len, jinja_value v)
{
    size_t i = dict_find(dict, key, key_len);
    if (i != SIZE_MAX) {
        dict->values[i] = v;
        return DK_OK;
    }
    if (dict->n == dict->cap) {
        size_t cap = dict->cap ? dict->cap * 2 : 8, kb, vb;
        if (dk_mul_size(cap, sizeof(jinja_slice), &kb) || dk_mul_size(cap, sizeof(jinja_value), &vb)) return DK_ERR_NOMEM;
        jinja_slice *keys = jinja_alloc(arena, kb);
        jinja_value *values = keys ? jinja_alloc(arena, vb) : NULL;
        if (!values) return DK_ERR_NOMEM;
        if (dict->n) {
            memcpy(keys, dict->keys, dict->n * sizeof(jinja_slice));
            memcpy(values, dict->values, dict->n * sizeof(jinja_value));
        }
        dict->keys = keys;
        dict->values = values;
        dict->cap = cap;
    }
    dict->keys[dict->n].p = key;
    dict->keys[dict->n].n = key_len;
    dict->values[dict->n++] = v;
    return DK_OK;
}

/* ---- from jansson ---- */

/* JavaScript objects list "array index" keys (canonical integers below 2^32 - 1) first, in
 * ascending order, whatever order JSON.parse saw them in. */
static bool index_key(const char *k, size_t n, uint64_t *out)
{
    if (n == 0 || n > 10 || (n > 1 && k[0] == '0')) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < '0' || k[i] > '9') return false;
        v = v * 10 + (uint64_t)(k[i] - '0');
    }
    if (v >= 0xffffffffu) return false;
    *out = v;
    return true;
}

static int object_from_json(jinja_arena *arena, const json_t *json, int depth, jinja_value *out);

static int value_from_json(jinja_arena *arena, const json_t *json, int depth, jinja_value *out)
{
    if (depth > 1000) return DK_ERR_LIMIT;
    switch (json_typeof(json)) {
    case JSON_NULL: *out = jinja_none(); return DK_OK;
    case JSON_TRUE: *out = jinja_bool(true); return DK_OK;
    case JSON_FALSE: *out = jinja_bool(false); return DK_OK;
    case JSON_INTEGER: *out = jinja_int((int64_t)json_integer_value(json)); return DK_OK;
    case JSON_REAL: {
        double d = json_real_value(json);
        /* Number.isInteger: JSON's 1.0 is the integer 1 for the JavaScript renderer. */
        if (d == floor(d) && fabs(d) < 9007199254740992.0) *out = jinja_int((int64_t)d);
        else *out = jinja_float(d);
        return DK_OK;
    }
    case JSON_STRING: *out = jinja_str(json_string_value(json), json_string_length(json)); return DK_OK;
    case JSON_ARRAY: {
        size_t n = json_array_size(json);
        jinja_list *l = jinja_list_new(arena, n);
        if (!l) return DK_ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
            int rc = value_from_json(arena, json_array_get(json, i), depth + 1, &l->items[i]);
            if (rc) return rc;
            l->n++;
        }
        *out = jinja_list_value(l);
        return DK_OK;
    }
    case JSON_OBJECT: return object_from_json(arena, json, depth, out);
    }
    *out = jinja_undef();
    return DK_OK;
}

static int object_from_json(jinja_arena *arena, const json_t *json, int depth, jinja_value *out)
{
    jinja_dict *d = jinja_dict_new(arena, json_object_size(json));
    if (!d) return DK_ERR_NOMEM;
    size_t n_index = 0;
    const char *key;
    json_t *v;
    /* Index-like keys first (insertion-sorted by value), then the others in order. */
    for (int pass = 0; pass < 2; pass++) {
        json_object_foreach((json_t *)json, key, v) {
            size_t len = strlen(key);
            uint64_t idx;
            bool is_index = index_key(key, len, &idx);
            if (is_index != (pass == 0)) continue;
            jinja_value jv;
            int rc = value_from_json(arena, v, depth + 1, &jv);
            if (rc) return rc;
            if ((rc = jinja_dict_set(arena, d, key, len, jv))) return rc;
            if (is_index) {
                size_t at = n_index++;
                while (at > 0) {
                    uint64_t prev = 0;
                    index_key(d->keys[at - 1].p, d->keys[at - 1].n, &prev);
                    if (prev < idx) break;
                    jinja_slice tk = d->keys[at - 1];
                    jinja_value tv = d->values[at - 1];
                    d->keys[at - 1] = d->keys[at];
                    d->values[at - 1] = d->values[at];
                    d->keys[at] = tk;
                    d->values[at] = tv;
                    at--;
                }
            }
        }
    }
    *out = jinja_dict_value(d);
    return DK_OK;
}

int jinja_from_json(jinja_arena *arena, const json_t *json, jinja_value *out)
{
    return value_from_json(arena, json, 0, out);
}

/* ---- truth and equality ---- */

bool jinja_truthy(jinja_value v)
{
    switch (v.type) {
    case JV_UNDEFINED: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0 && !isnan(v.u.f);
    case JV_STRING: return v.u.s.n > 0;
    case JV_ARRAY: return v.u.list->n > 0;
    case JV_OBJECT: return v.u.dict->n > 0;
    case JV_NAMESPACE: case JV_FUNC: return true;
    }
    return false;
}

/* JavaScript's ToNumber of a string: whitespace-trimmed decimal, hex, binary, octal or
 * Infinity; "" is 0; anything else NaN. */
static double js_to_number(const char *s, size_t n)
{
    jinja_slice t = jinja_js_trim(s, n, 3);
    if (t.n == 0) return 0;
    if (t.n > 64) return NAN;
    char buf[72];
    memcpy(buf, t.p, t.n);
    buf[t.n] = 0;
    if (buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X' || buf[1] == 'b' || buf[1] == 'B' || buf[1] == 'o' || buf[1] == 'O')) {
        int base = (buf[1] == 'x' || buf[1] == 'X') ? 16 : (buf[1] == 'b' || buf[1] == 'B') ? 2 : 8;
        if (!buf[2]) return NAN;
        double v = 0;
        for (const char *p = buf + 2; *p; p++) {
            int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                  : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10 : 99;
            if (d >= base) return NAN;
            v = v * base + d;
        }
        return v;
    }
    const char *p = buf;
    bool neg = false;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (strcmp(p, "Infinity") == 0) return neg ? -INFINITY : INFINITY;
    /* strtod also takes "inf", "nan" and hex floats: only plain decimals are numbers here. */
    for (const char *q = p; *q; q++)
        if (!((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) return NAN;
    char *end;
    double v = strtod(buf, &end);
    return *end ? NAN : v;
}

static bool is_primitive(jinja_value v)
{
    return v.type == JV_BOOL || v.type == JV_INT || v.type == JV_FLOAT || v.type == JV_STRING;
}

bool jinja_loose_eq(jinja_value a, jinja_value b)
{
    bool a_nil = a.type == JV_UNDEFINED || a.type == JV_NONE, b_nil = b.type == JV_UNDEFINED || b.type == JV_NONE;
    if (a_nil || b_nil) return a_nil && b_nil;
    if (a.type == JV_STRING && b.type == JV_STRING)
        return a.u.s.n == b.u.s.n && (a.u.s.n == 0 || memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0);
    if (is_primitive(a) && is_primitive(b)) {
        if (a.type == JV_INT && b.type == JV_INT) return a.u.i == b.u.i;
        double x = a.type == JV_STRING ? js_to_number(a.u.s.p, a.u.s.n) : jinja_num(a);
        double y = b.type == JV_STRING ? js_to_number(b.u.s.p, b.u.s.n) : jinja_num(b);
        return x == y;
    }
    return jinja_strict_eq(a, b);
}

bool jinja_strict_eq(jinja_value a, jinja_value b)
{
    if (jinja_is_num(a) && jinja_is_num(b)) {
        if (a.type == JV_INT && b.type == JV_INT) return a.u.i == b.u.i;
        return jinja_num(a) == jinja_num(b);
    }
    if (a.type != b.type) return false;
    switch (a.type) {
    case JV_UNDEFINED: case JV_NONE: return true;
    case JV_BOOL: return a.u.b == b.u.b;
    case JV_STRING: return a.u.s.n == b.u.s.n && (a.u.s.n == 0 || memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0);
    case JV_ARRAY: return a.u.list == b.u.list;
    case JV_OBJECT: case JV_NAMESPACE: return a.u.dict == b.u.dict;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

/* ---- numbers as JavaScript writes them ---- */

void jinja_js_number(double d, dk_buf *b)
{
    if (isnan(d)) { dk_buf_puts(b, "NaN"); return; }
    if (isinf(d)) { dk_buf_puts(b, d < 0 ? "-Infinity" : "Infinity"); return; }
    if (d == 0) { dk_buf_putc(b, '0'); return; }
    /* Shortest digits that read back as d, then JavaScript's layout rules. */
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    if (prec > 17) prec = 17;
    char digits[24];
    size_t k = 0;
    const char *p = tmp;
    if (*p == '-') {
        dk_buf_putc(b, '-');
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[k++] = *p;
    int e = atoi(p + 1);
    while (k > 1 && digits[k - 1] == '0') k--;
    int n = e + 1;
    if ((int)k <= n && n <= 21) {
        dk_buf_append(b, digits, k);
        for (int i = (int)k; i < n; i++) dk_buf_putc(b, '0');
    } else if (0 < n && n <= 21) {
        dk_buf_append(b, digits, (size_t)n);
        dk_buf_putc(b, '.');
        dk_buf_append(b, digits + n, k - (size_t)n);
    } else if (-6 < n && n <= 0) {
        dk_buf_puts(b, "0.");
        for (int i = 0; i < -n; i++) dk_buf_putc(b, '0');
        dk_buf_append(b, digits, k);
    } else {
        dk_buf_putc(b, digits[0]);
        if (k > 1) {
            dk_buf_putc(b, '.');
            dk_buf_append(b, digits + 1, k - 1);
        }
        dk_buf_printf(b, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
}

/* FloatValue.toString: integral values keep one decimal ("1.0"), -0 is "-0.0". */
static void print_float(double d, dk_buf *b)
{
    if (d == 0 && signbit(d)) dk_buf_puts(b, "-0.0");
    else if (isfinite(d) && d == floor(d) && fabs(d) < 1e21) dk_buf_printf(b, "%.1f", d);
    else jinja_js_number(d, b);
}

int jinja_print(jinja_value v, dk_buf *b)
{
    switch (v.type) {
    case JV_UNDEFINED: dk_buf_puts(b, "undefined"); break;
    case JV_NONE: dk_buf_puts(b, "null"); break;
    case JV_BOOL: dk_buf_puts(b, v.u.b ? "true" : "false"); break;
    case JV_INT: dk_buf_printf(b, "%lld", (long long)v.u.i); break;
    case JV_FLOAT: print_float(v.u.f, b); break;
    case JV_STRING: dk_buf_append(b, v.u.s.p, v.u.s.n); break;
    case JV_ARRAY: case JV_OBJECT: case JV_NAMESPACE: {
        jinja_json_opts o = {0};
        return jinja_to_json(v, &o, 0, b, NULL);
    }
    case JV_FUNC: dk_buf_puts(b, "[function]"); break;
    }
    return b->failed ? DK_ERR_NOMEM : DK_OK;
}

int jinja_js_string(jinja_value v, dk_buf *b)
{
    switch (v.type) {
    case JV_FLOAT: jinja_js_number(v.u.f, b); break;
    case JV_ARRAY:
        /* Array.prototype.toString: the elements' own toString joined with commas. */
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i) dk_buf_putc(b, ',');
            int rc = jinja_print(v.u.list->items[i], b);
            if (rc) return rc;
        }
        break;
    case JV_OBJECT: case JV_NAMESPACE: dk_buf_puts(b, "[object Map]"); break;
    default: return jinja_print(v, b);
    }
    return b->failed ? DK_ERR_NOMEM : DK_OK;
}

/* ---- JSON ---- */

/* JSON.stringify of a string (control characters as \uXXXX lowercase; nothing else escaped),
 * then ensure_ascii's \uXXXX for every UTF-16 unit from 0x7f up. */
static void json_quote(const char *s, size_t n, bool ascii, dk_buf *b)
{
    dk_buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        size_t start = i;
        uint32_t c = jinja_utf8_next(s, n, &i);
        switch (c) {
        case '"': dk_buf_puts(b, "\\\""); continue;
        case '\\': dk_buf_puts(b, "\\\\"); continue;
        case '\b': dk_buf_puts(b, "\\b"); continue;
        case '\f': dk_buf_puts(b, "\\f"); continue;
        case '\n': dk_buf_puts(b, "\\n"); continue;
        case '\r': dk_buf_puts(b, "\\r"); continue;
        case '\t': dk_buf_puts(b, "\\t"); continue;
        default: break;
        }
        if (c < 0x20) {
            dk_buf_printf(b, "\\u%04x", (unsigned)c);
        } else if (ascii && c >= 0x7f) {
            if (c >= 0x10000) {
                uint32_t u = c - 0x10000;
                dk_buf_printf(b, "\\u%04x\\u%04x", (unsigned)(0xd800 + (u >> 10)), (unsigned)(0xdc00 + (u & 0x3ff)));
            } else {
                dk_buf_printf(b, "\\u%04x", (unsigned)c);
            }
        } else {
            dk_buf_append(b, s + start, i - start);
        }
    }
    dk_buf_putc(b, '"');
}

static void json_newline(const jinja_json_opts *o, int depth, dk_buf *b)
{
    dk_buf_putc(b, '\n');
    for (int i = 0; i < depth * o->indent; i++) dk_buf_putc(b, ' ');
}

static int key_order(const jinja_dict *d, size_t *order)
{
    for (size_t i = 0; i < d->n; i++) order[i] = i;
    /* localeCompare, approximated: case-insensitive first, then bytewise. Insertion sort is
     * stable, as Array.prototype.sort is. */
    for (size_t i = 1; i < d->n; i++) {
        size_t k = order[i], j = i;
        while (j > 0) {
            const jinja_slice *x = &d->keys[order[j - 1]], *y = &d->keys[k];
            size_t m = x->n < y->n ? x->n : y->n;
            int c = strncasecmp(x->p, y->p, m);
            if (c == 0) c = x->n < y->n ? -1 : x->n > y->n ? 1 : 0;
            if (c == 0) c = memcmp(x->p, y->p, m);
            if (c <= 0) break;
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    return DK_OK;
}

int jinja_to_json(jinja_value v, const jinja_json_opts *o, int depth, dk_buf *b, char *err)
{
    if (depth > 500) return dk_fail(err, DK_ERR_LIMIT, "tojson: nesting too deep");
    const char *item_sep = o->item_sep ? o->item_sep : o->indent ? "," : ", ";
    size_t item_sep_len = o->item_sep ? o->item_sep_len : strlen(item_sep);
    const char *key_sep = o->key_sep ? o->key_sep : ": ";
    size_t key_sep_len = o->key_sep ? o->key_sep_len : strlen(key_sep);
    switch (v.type) {
    case JV_NONE: dk_buf_puts(b, "null"); break;
    case JV_UNDEFINED: dk_buf_puts(b, o->undefined_as_null ? "null" : "undefined"); break;
    case JV_BOOL: dk_buf_puts(b, v.u.b ? "true" : "false"); break;
    case JV_INT: dk_buf_printf(b, "%lld", (long long)v.u.i); break;
    case JV_FLOAT:
        if (isfinite(v.u.f)) jinja_js_number(v.u.f, b);
        else dk_buf_puts(b, "null");
        break;
    case JV_STRING: json_quote(v.u.s.p, v.u.s.n, o->ensure_ascii, b); break;
    case JV_ARRAY: {
        const jinja_list *l = v.u.list;
        dk_buf_putc(b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) dk_buf_append(b, item_sep, item_sep_len);
            if (o->indent) json_newline(o, depth + 1, b);
            int rc = jinja_to_json(l->items[i], o, depth + 1, b, err);
            if (rc) return rc;
        }
        if (o->indent && l->n) json_newline(o, depth, b);
        dk_buf_putc(b, ']');
        break;
    }
    case JV_OBJECT: case JV_NAMESPACE: {
        const jinja_dict *d = v.u.dict;
        size_t *order = NULL;
        if (o->sort_keys && d->n > 1) {
            order = dk_malloc_array(d->n, sizeof *order);
            if (!order) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
            key_order(d, order);
        }
        dk_buf_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            size_t k = order ? order[i] : i;
            if (i) dk_buf_append(b, item_sep, item_sep_len);
            if (o->indent) json_newline(o, depth + 1, b);
            json_quote(d->keys[k].p, d->keys[k].n, o->ensure_ascii, b);
            dk_buf_append(b, key_sep, key_sep_len);
            int rc = jinja_to_json(d->values[k], o, depth + 1, b, err);
            if (rc) {
                dk_free(order);
                return rc;
            }
        }
        dk_free(order);
        if (o->indent && d->n) json_newline(o, depth, b);
        dk_buf_putc(b, '}');
        break;
    }
    case JV_FUNC: return dk_fail(err, DK_ERR_FORMAT, "cannot convert a function to JSON");
    }
    return b->failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}
