/*
 * jinja_filters.c: the Jinja interpreter's library: filters (`x | name(args)`), tests
 * (`x is name`), the methods of strings and dicts (`s.split(',')`, `d.items()`), the builtin
 * properties (`s.length`) and the global functions (namespace, range, raise_exception,
 * strftime_now, dict).
 *
 * Each does what @huggingface/jinja's does, errors included (a filter HF does not know for a
 * type is an error; `strip('\n')` trims all whitespace, as HF ignores the argument; `int` of a
 * float floors; selectattr with a missing attribute never matches). Where HF has nothing,
 * jinja2's meaning is used: the filters count, d, e/escape, round, select, reject, map with a
 * filter name, list of a string or dict, trim with characters; the tests divisibleby, in, ne,
 * gt/ge/lt/le, sameas; dict(). String lengths and indices count code points (as Python does;
 * HF counts UTF-16 units), case mapping is utf8proc's.
 * Not for: operators and statements (jinja.c).
 */
#include "chat/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

enum builtin_id { BI_NAMESPACE, BI_RANGE, BI_RAISE, BI_STRFTIME, BI_DICT };
enum method_id {
    M_UPPER, M_LOWER, M_STRIP, M_TITLE, M_CAPITALIZE, M_RSTRIP, M_LSTRIP, M_STARTSWITH, M_ENDSWITH,
    M_SPLIT, M_REPLACE, M_GET, M_ITEMS, M_KEYS, M_VALUES, M_DICTSORT,
};

static const char *const string_methods[] = {"upper", "lower", "strip", "title", "capitalize", "rstrip",
                                             "lstrip", "startswith", "endswith", "split", "replace", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", "dictsort", NULL};

static bool name_is(const char *name, size_t len, const char *s)
{
    return strlen(s) == len && memcmp(name, s, len) == 0;
}

static int fail(jinja_ctx *ctx, const jinja_node *at, const char *fmt, const char *a, const char *b)
{
    return jinja_error(ctx, DK_ERR_FORMAT, at->pos, fmt, a, b);
}

static size_t n_args(const jinja_args *args) { return args ? args->n_pos : 0; }

/* Positional i, else keyword name, else NULL. */
static const jinja_value *arg(const jinja_args *args, size_t i, const char *name)
{
    if (!args) return NULL;
    if (i < args->n_pos) return &args->pos[i];
    return name ? jinja_args_kw(args, name) : NULL;
}

static int make_func(jinja_ctx *ctx, const jinja_node *at, enum jinja_func_kind kind, int id, jinja_value self, jinja_value *out)
{
    jinja_func *f = jinja_alloc(&ctx->arena, sizeof *f);
    if (!f) return jinja_nomem(ctx, at ? at->pos : 0);
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->id = id;
    f->self = self;
    out->type = JV_FUNC;
    out->is_tuple = false;
    out->u.fn = f;
    return DK_OK;
}

/* ---- strings ---- */

static int case_map(jinja_ctx *ctx, const jinja_node *at, jinja_value s, int mode, jinja_value *out)
{
    /* mode: 0 upper, 1 lower, 2 title (HF: \b\w to upper, the rest unchanged), 3 capitalize */
    dk_buf b = {0};
    bool prev_word = false, first = true;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t c = jinja_utf8_next(s.u.s.p, s.u.s.n, &i);
        bool word = c < 0x80 && (c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'));
        uint32_t r = c;
        if (mode == 0 || (mode == 3 && first)) r = (uint32_t)utf8proc_toupper((utf8proc_int32_t)c);
        else if (mode == 1) r = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        else if (mode == 2 && word && !prev_word && c >= 'a' && c <= 'z') r = c - 32;
        jinja_utf8_put(&b, r);
        prev_word = word;
        first = false;
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

static bool str_eq(jinja_value a, const char *p, size_t n)
{
    return a.u.s.n == n && (n == 0 || memcmp(a.u.s.p, p, n) == 0);
}

static int starts_ends(jinja_ctx *ctx, const jinja_node *at, jinja_value s, const jinja_args *args, bool ends, jinja_value *out)
{
    const char *what = ends ? "endswith" : "startswith";
    if (n_args(args) == 0) return fail(ctx, at, "%s() requires at least one argument%s", what, "");
    jinja_value p = args->pos[0];
    jinja_value single[1];
    const jinja_value *cands = single;
    size_t n = 1;
    if (p.type == JV_STRING) single[0] = p;
    else if (p.type == JV_ARRAY) cands = p.u.list->items, n = p.u.list->n;
    else return fail(ctx, at, "%s() argument must be a string or tuple of strings%s", what, "");
    for (size_t i = 0; i < n; i++) {
        if (cands[i].type != JV_STRING) return fail(ctx, at, "%s() tuple elements must be strings%s", what, "");
        size_t m = cands[i].u.s.n;
        if (m <= s.u.s.n && (m == 0 || memcmp(s.u.s.p + (ends ? s.u.s.n - m : 0), cands[i].u.s.p, m) == 0)) {
            *out = jinja_bool(true);
            return DK_OK;
        }
    }
    *out = jinja_bool(false);
    return DK_OK;
}

static int split_whitespace(jinja_ctx *ctx, const jinja_node *at, jinja_value s, int64_t maxsplit, jinja_list *l)
{
    jinja_slice t = jinja_js_trim(s.u.s.p, s.u.s.n, 1);
    size_t i = 0;
    while (i < t.n) {
        size_t start = i, end;
        /* find the end of this run of non-space */
        while (i < t.n) {
            size_t k = i;
            if (jinja_js_space(jinja_utf8_next(t.p, t.n, &k))) break;
            i = k;
        }
        end = i;
        if (maxsplit != -1 && (int64_t)l->n >= maxsplit) end = t.n, i = t.n;
        if (jinja_list_push(&ctx->arena, l, jinja_str(t.p + start, end - start))) return jinja_nomem(ctx, at->pos);
        while (i < t.n) {
            size_t k = i;
            if (!jinja_js_space(jinja_utf8_next(t.p, t.n, &k))) break;
            i = k;
        }
    }
    return DK_OK;
}

static int method_split(jinja_ctx *ctx, const jinja_node *at, jinja_value s, const jinja_args *args, jinja_value *out)
{
    if (args && args->n_kw) return fail(ctx, at, "split() takes no keyword arguments%s%s", "", "");
    jinja_value sep = n_args(args) > 0 ? args->pos[0] : jinja_none();
    jinja_value maxv = n_args(args) > 1 ? args->pos[1] : jinja_int(-1);
    if (sep.type != JV_STRING && sep.type != JV_NONE) return fail(ctx, at, "sep argument must be a string or null%s%s", "", "");
    if (maxv.type != JV_INT) return fail(ctx, at, "maxsplit argument must be a number%s%s", "", "");
    int64_t maxsplit = maxv.u.i;
    jinja_list *l = jinja_list_new(&ctx->arena, 0);
    if (!l) return jinja_nomem(ctx, at->pos);
    *out = jinja_list_value(l);
    if (sep.type == JV_NONE) return split_whitespace(ctx, at, s, maxsplit, l);
    if (sep.u.s.n == 0) return fail(ctx, at, "empty separator%s%s", "", "");
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    for (;;) {
        const char *hit = memmem(p, (size_t)(end - p), sep.u.s.p, sep.u.s.n);
        if (!hit) break;
        if (jinja_list_push(&ctx->arena, l, jinja_str(p, (size_t)(hit - p)))) return jinja_nomem(ctx, at->pos);
        p = hit + sep.u.s.n;
    }
    if (jinja_list_push(&ctx->arena, l, jinja_str(p, (size_t)(end - p)))) return jinja_nomem(ctx, at->pos);
    if (maxsplit != -1 && (int64_t)l->n > maxsplit) {
        /* HF: result.push(result.splice(maxsplit).join(sep)) (a negative maxsplit counts from the end) */
        int64_t keep = maxsplit >= 0 ? maxsplit : ((int64_t)l->n + maxsplit > 0 ? (int64_t)l->n + maxsplit : 0);
        const char *rest = l->items[keep].u.s.p;
        l->n = (size_t)keep;
        if (jinja_list_push(&ctx->arena, l, jinja_str(rest, (size_t)(end - rest)))) return jinja_nomem(ctx, at->pos);
    }
    return DK_OK;
}

static int str_replace(jinja_ctx *ctx, const jinja_node *at, jinja_value s, const jinja_args *args, jinja_value *out)
{
    if (n_args(args) < 2) return fail(ctx, at, "replace() requires at least two arguments%s%s", "", "");
    jinja_value from = args->pos[0], to = args->pos[1];
    if (from.type != JV_STRING || to.type != JV_STRING) return fail(ctx, at, "replace() arguments must be strings%s%s", "", "");
    const jinja_value *c = arg(args, 2, "count");
    jinja_value count = c ? *c : jinja_none();
    if (count.type != JV_INT && count.type != JV_NONE) return fail(ctx, at, "replace() count argument must be a number or null%s%s", "", "");
    int64_t left = count.type == JV_NONE || count.u.i < 0 ? INT64_MAX : count.u.i;
    dk_buf b = {0};
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    if (from.u.s.n == 0) {
        /* An empty pattern matches before every code point and at the end. */
        for (size_t i = 0; i <= s.u.s.n;) {
            if (left > 0) {
                dk_buf_append(&b, to.u.s.p, to.u.s.n);
                left--;
            }
            if (i == s.u.s.n) break;
            size_t k = i;
            jinja_utf8_next(s.u.s.p, s.u.s.n, &k);
            dk_buf_append(&b, s.u.s.p + i, k - i);
            i = k;
            if (b.len > JINJA_MAX_OUTPUT_BYTES) break;
        }
        return jinja_buf_str(ctx, at->pos, &b, out);
    }
    while (left > 0 && p < end) {
        const char *hit = memmem(p, (size_t)(end - p), from.u.s.p, from.u.s.n);
        if (!hit) break;
        dk_buf_append(&b, p, (size_t)(hit - p));
        dk_buf_append(&b, to.u.s.p, to.u.s.n);
        p = hit + from.u.s.n;
        left--;
        if (b.len > JINJA_MAX_OUTPUT_BYTES) break;
    }
    dk_buf_append(&b, p, (size_t)(end - p));
    return jinja_buf_str(ctx, at->pos, &b, out);
}

static int trimmed(jinja_ctx *ctx, const jinja_node *at, jinja_value s, int which, jinja_value *out)
{
    (void)ctx;
    (void)at;
    jinja_slice t = jinja_js_trim(s.u.s.p, s.u.s.n, which);
    *out = jinja_str(t.p, t.n);
    return DK_OK;
}

/* Whether code point c is one of the code points of chars. */
static bool chars_has(jinja_value chars, uint32_t c)
{
    for (size_t j = 0; j < chars.u.s.n;)
        if (jinja_utf8_next(chars.u.s.p, chars.u.s.n, &j) == c) return true;
    return false;
}

/* jinja2's trim(chars) / strip(chars): remove any of chars' code points from both ends. */
static int trim_chars(jinja_value s, jinja_value chars, jinja_value *out)
{
    size_t start = 0, end = s.u.s.n;
    while (start < end) {
        size_t k = start;
        if (!chars_has(chars, jinja_utf8_next(s.u.s.p, end, &k))) break;
        start = k;
    }
    while (end > start) {
        size_t k = end - 1;
        while (k > start && ((unsigned char)s.u.s.p[k] & 0xc0) == 0x80) k--;
        size_t j0 = k;
        if (!chars_has(chars, jinja_utf8_next(s.u.s.p, end, &j0))) break;
        end = k;
    }
    *out = jinja_str(s.u.s.p + start, end - start);
    return DK_OK;
}

static int indent(jinja_ctx *ctx, const jinja_node *at, jinja_value s, int64_t width, bool first, bool blank, jinja_value *out)
{
    if (width < 0 || width > 4096) return fail(ctx, at, "indent width out of range%s%s", "", "");
    dk_buf b = {0};
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    for (size_t line = 0;; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (!((!first && line == 0) || (!blank && len == 0)))
            for (int64_t k = 0; k < width; k++) dk_buf_putc(&b, ' ');
        dk_buf_append(&b, p, len);
        if (!nl) break;
        dk_buf_putc(&b, '\n');
        p = nl + 1;
        if (b.len > JINJA_MAX_OUTPUT_BYTES) break;
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

/* JavaScript's parseInt(s, 10) and parseFloat(s); false for NaN. */
static bool js_parse_int(jinja_value s, int64_t *out)
{
    jinja_slice t = jinja_js_trim(s.u.s.p, s.u.s.n, 1);
    size_t i = 0;
    bool neg = false;
    if (i < t.n && (t.p[i] == '+' || t.p[i] == '-')) neg = t.p[i++] == '-';
    size_t start = i;
    int64_t v = 0;
    for (; i < t.n && t.p[i] >= '0' && t.p[i] <= '9'; i++) {
        int d = t.p[i] - '0';
        v = v > (INT64_MAX - d) / 10 ? INT64_MAX : v * 10 + d;
    }
    if (i == start) return false;
    *out = neg ? -v : v;
    return true;
}

static bool js_parse_float(jinja_value s, double *out)
{
    jinja_slice t = jinja_js_trim(s.u.s.p, s.u.s.n, 1);
    char buf[128];
    size_t i = 0, n = 0;
    if (i < t.n && (t.p[i] == '+' || t.p[i] == '-')) buf[n++] = t.p[i++];
    if (t.n - i >= 8 && memcmp(t.p + i, "Infinity", 8) == 0) {
        *out = n && buf[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    size_t digits = 0;
    while (i < t.n && n < 100 && t.p[i] >= '0' && t.p[i] <= '9') buf[n++] = t.p[i++], digits++;
    if (i < t.n && t.p[i] == '.') {
        buf[n++] = t.p[i++];
        while (i < t.n && n < 100 && t.p[i] >= '0' && t.p[i] <= '9') buf[n++] = t.p[i++], digits++;
    }
    if (!digits) return false;
    if (i < t.n && (t.p[i] == 'e' || t.p[i] == 'E')) {
        size_t save_n = n, save_i = i;
        buf[n++] = t.p[i++];
        if (i < t.n && (t.p[i] == '+' || t.p[i] == '-')) buf[n++] = t.p[i++];
        size_t ed = 0;
        while (i < t.n && n < 120 && t.p[i] >= '0' && t.p[i] <= '9') buf[n++] = t.p[i++], ed++;
        if (!ed) n = save_n, i = save_i;
    }
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return true;
}

static int html_escape(jinja_ctx *ctx, const jinja_node *at, jinja_value s, jinja_value *out)
{
    dk_buf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        switch (c) {
        case '&': dk_buf_puts(&b, "&amp;"); break;
        case '<': dk_buf_puts(&b, "&lt;"); break;
        case '>': dk_buf_puts(&b, "&gt;"); break;
        case '"': dk_buf_puts(&b, "&#34;"); break;
        case '\'': dk_buf_puts(&b, "&#39;"); break;
        default: dk_buf_putc(&b, c);
        }
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

/* ---- JSON and text of values ---- */

static int to_json(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_json_opts *o, jinja_value *out)
{
    dk_buf b = {0};
    char err[DK_ERRLEN];
    int rc = jinja_to_json(v, o, 0, &b, err);
    if (rc) {
        dk_buf_free(&b);
        return rc == DK_ERR_NOMEM ? jinja_nomem(ctx, at->pos) : jinja_error(ctx, rc, at->pos, "%s", err);
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

static int tojson_filter(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, jinja_value *out)
{
    jinja_json_opts o = {.undefined_as_null = true};
    const jinja_value *indent_v = args ? jinja_args_kw(args, "indent") : NULL;
    const jinja_value *ascii = args ? jinja_args_kw(args, "ensure_ascii") : NULL;
    const jinja_value *sort = args ? jinja_args_kw(args, "sort_keys") : NULL;
    const jinja_value *seps = args ? jinja_args_kw(args, "separators") : NULL;
    if (indent_v && indent_v->type != JV_INT && indent_v->type != JV_NONE) return fail(ctx, at, "if set, indent must be a number%s%s", "", "");
    if (indent_v && indent_v->type == JV_INT) {
        if (indent_v->u.i < 0 || indent_v->u.i > 1024) return fail(ctx, at, "indent out of range%s%s", "", "");
        o.indent = (int)indent_v->u.i;
    }
    if (ascii && ascii->type != JV_BOOL) return fail(ctx, at, "if set, ensure_ascii must be a boolean%s%s", "", "");
    if (sort && sort->type != JV_BOOL) return fail(ctx, at, "if set, sort_keys must be a boolean%s%s", "", "");
    o.ensure_ascii = ascii && ascii->u.b;
    o.sort_keys = sort && sort->u.b;
    if (seps && seps->type != JV_NONE) {
        if (seps->type != JV_ARRAY || seps->u.list->n != 2 || seps->u.list->items[0].type != JV_STRING ||
            seps->u.list->items[1].type != JV_STRING)
            return fail(ctx, at, "separators must be a tuple of two strings%s%s", "", "");
        o.item_sep = seps->u.list->items[0].u.s.p;
        o.item_sep_len = seps->u.list->items[0].u.s.n;
        o.key_sep = seps->u.list->items[1].u.s.p;
        o.key_sep_len = seps->u.list->items[1].u.s.n;
    }
    return to_json(ctx, at, v, &o, out);
}

/* Array.prototype.join of the underlying values (null and undefined join as ""). */
static int join_values(jinja_ctx *ctx, const jinja_node *at, const jinja_list *l, jinja_value sep, jinja_value *out)
{
    dk_buf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) dk_buf_append(&b, sep.u.s.p, sep.u.s.n);
        jinja_value x = l->items[i];
        if (x.type != JV_NONE && x.type != JV_UNDEFINED && jinja_js_string(x, &b)) break;
        if (b.len > JINJA_MAX_OUTPUT_BYTES) break;
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

static int join_chars(jinja_ctx *ctx, const jinja_node *at, jinja_value s, jinja_value sep, jinja_value *out)
{
    dk_buf b = {0};
    for (size_t i = 0; i < s.u.s.n;) {
        size_t k = i;
        jinja_utf8_next(s.u.s.p, s.u.s.n, &k);
        if (i) dk_buf_append(&b, sep.u.s.p, sep.u.s.n);
        dk_buf_append(&b, s.u.s.p + i, k - i);
        i = k;
        if (b.len > JINJA_MAX_OUTPUT_BYTES) break;
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

/* ---- comparison and sorting ---- */

int jinja_compare(jinja_ctx *ctx, const jinja_node *at, jinja_value a, jinja_value b, bool case_sensitive, int *out)
{
    if (a.type == JV_NONE || b.type == JV_NONE || a.type == JV_UNDEFINED || b.type == JV_UNDEFINED) {
        if (a.type == b.type) {
            *out = 0;
            return DK_OK;
        }
        return fail(ctx, at, "cannot compare %s with %s", jinja_type_name(a), jinja_type_name(b));
    }
    bool an = jinja_is_num(a) || a.type == JV_BOOL, bn = jinja_is_num(b) || b.type == JV_BOOL;
    if (an && bn) {
        double x = jinja_num(a), y = jinja_num(b);
        if (a.type == JV_INT && b.type == JV_INT) *out = a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
        else *out = x < y ? -1 : x > y;
        return DK_OK;
    }
    if (a.type != b.type) return fail(ctx, at, "cannot compare different types: %s and %s", jinja_type_name(a), jinja_type_name(b));
    if (a.type != JV_STRING) return fail(ctx, at, "cannot compare %s values%s", jinja_type_name(a), "");
    /* Code point order (UTF-8 bytes), lowered first unless case-sensitive. */
    size_t i = 0, j = 0;
    while (i < a.u.s.n && j < b.u.s.n) {
        uint32_t x = jinja_utf8_next(a.u.s.p, a.u.s.n, &i), y = jinja_utf8_next(b.u.s.p, b.u.s.n, &j);
        if (!case_sensitive) {
            x = (uint32_t)utf8proc_tolower((utf8proc_int32_t)x);
            y = (uint32_t)utf8proc_tolower((utf8proc_int32_t)y);
        }
        if (x != y) {
            *out = x < y ? -1 : 1;
            return DK_OK;
        }
    }
    *out = (i < a.u.s.n) - (j < b.u.s.n);
    return DK_OK;
}

typedef struct sort_job {
    jinja_ctx *ctx;
    const jinja_node *at;
    const jinja_value *keys;
    bool case_sensitive, reverse;
    int rc;
} sort_job;

static bool sort_less_eq(sort_job *job, size_t x, size_t y)
{
    int c = 0;
    if (job->rc) return true;
    if ((job->rc = jinja_work(job->ctx, job->at->pos, 1))) return true;
    job->rc = jinja_compare(job->ctx, job->at, job->keys[x], job->keys[y], job->case_sensitive, &c);
    if (job->reverse) c = -c;
    return c <= 0;
}

/* Stable merge sort of idx[0..n) by keys (Array.prototype.sort is stable). */
static void merge_sort(sort_job *job, size_t *idx, size_t *tmp, size_t n)
{
    if (n < 2 || job->rc) return;
    size_t h = n / 2;
    merge_sort(job, idx, tmp, h);
    merge_sort(job, idx + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = sort_less_eq(job, idx[i], idx[j]) ? idx[i++] : idx[j++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

/* items sorted by keys (same length); the result is a new list. */
static int sort_by(jinja_ctx *ctx, const jinja_node *at, const jinja_value *items, const jinja_value *keys, size_t n,
                   bool case_sensitive, bool reverse, jinja_value *out)
{
    jinja_list *l = jinja_list_new(&ctx->arena, n);
    size_t *idx = dk_malloc_array(n ? n : 1, sizeof *idx), *tmp = dk_malloc_array(n ? n : 1, sizeof *tmp);
    if (!l || !idx || !tmp) {
        dk_free(idx);
        dk_free(tmp);
        return l ? dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory") : jinja_nomem(ctx, at->pos);
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    sort_job job = {ctx, at, keys, case_sensitive, reverse, DK_OK};
    merge_sort(&job, idx, tmp, n);
    for (size_t i = 0; i < n; i++) l->items[i] = items[idx[i]];
    l->n = n;
    dk_free(idx);
    dk_free(tmp);
    *out = jinja_list_value(l);
    return job.rc;
}

/* HF's getAttributeValue: "a.b.0" through dicts and list indices; undefined when missing. */
static jinja_value attribute_path(jinja_value item, const char *path, size_t len)
{
    const char *p = path, *end = path + len;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        if (jinja_is_dict(item)) {
            const jinja_value *v = jinja_dict_get(item.u.dict, p, n);
            item = v ? *v : jinja_undef();
        } else if (item.type == JV_ARRAY) {
            jinja_value part = jinja_str(p, n);
            int64_t i;
            if (!js_parse_int(part, &i) || i < 0 || (uint64_t)i >= item.u.list->n) return jinja_undef();
            item = item.u.list->items[i];
        } else {
            return jinja_undef();
        }
        if (!dot) return item;
        p = dot + 1;
    }
}

static int sort_filter(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, jinja_value *out)
{
    const jinja_value *rev = arg(args, 0, "reverse"), *cs = arg(args, 1, "case_sensitive"), *attr = arg(args, 2, "attribute");
    if (rev && rev->type != JV_BOOL) return fail(ctx, at, "reverse must be a boolean%s%s", "", "");
    if (cs && cs->type != JV_BOOL) return fail(ctx, at, "case_sensitive must be a boolean%s%s", "", "");
    if (attr && attr->type != JV_STRING && attr->type != JV_INT && attr->type != JV_NONE)
        return fail(ctx, at, "attribute must be a string, integer, or null%s%s", "", "");
    const jinja_list *l = v.u.list;
    const jinja_value *keys = l->items;
    if (attr && attr->type != JV_NONE) {
        jinja_value *k = jinja_alloc(&ctx->arena, (l->n ? l->n : 1) * sizeof *k);
        if (!k) return jinja_nomem(ctx, at->pos);
        char num[32];
        const char *path = attr->type == JV_STRING ? attr->u.s.p : num;
        size_t len = attr->type == JV_STRING ? attr->u.s.n : (size_t)snprintf(num, sizeof num, "%lld", (long long)attr->u.i);
        for (size_t i = 0; i < l->n; i++) k[i] = attribute_path(l->items[i], path, len);
        keys = k;
    }
    return sort_by(ctx, at, l->items, keys, l->n, cs && cs->u.b, rev && rev->u.b, out);
}

static int dictsort(jinja_ctx *ctx, const jinja_node *at, jinja_value d, const jinja_args *args, jinja_value *out)
{
    const jinja_value *cs = arg(args, 0, "case_sensitive"), *by = arg(args, 1, "by"), *rev = arg(args, 2, "reverse");
    if (cs && cs->type != JV_BOOL) return fail(ctx, at, "case_sensitive must be a boolean%s%s", "", "");
    if (by && (by->type != JV_STRING || !(str_eq(*by, "key", 3) || str_eq(*by, "value", 5))))
        return fail(ctx, at, "by must be either 'key' or 'value'%s%s", "", "");
    if (rev && rev->type != JV_BOOL) return fail(ctx, at, "reverse must be a boolean%s%s", "", "");
    bool by_value = by && str_eq(*by, "value", 5);
    size_t n = d.u.dict->n;
    jinja_value *items = jinja_alloc(&ctx->arena, (n ? n : 1) * sizeof *items), *keys = jinja_alloc(&ctx->arena, (n ? n : 1) * sizeof *keys);
    if (!items || !keys) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < n; i++) {
        jinja_list *pair = jinja_list_new(&ctx->arena, 2);
        if (!pair) return jinja_nomem(ctx, at->pos);
        pair->items[0] = jinja_str(d.u.dict->keys[i].p, d.u.dict->keys[i].n);
        pair->items[1] = d.u.dict->values[i];
        pair->n = 2;
        items[i] = jinja_list_value(pair);
        keys[i] = pair->items[by_value ? 1 : 0];
    }
    return sort_by(ctx, at, items, keys, n, cs && cs->u.b, rev && rev->u.b, out);
}

static int dict_pairs(jinja_ctx *ctx, const jinja_node *at, jinja_value d, int which, jinja_value *out)
{
    /* which: 0 items ([key, value] lists), 1 keys, 2 values */
    size_t n = d.u.dict->n;
    jinja_list *l = jinja_list_new(&ctx->arena, n);
    if (!l) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < n; i++) {
        jinja_value key = jinja_str(d.u.dict->keys[i].p, d.u.dict->keys[i].n);
        if (which == 0) {
            jinja_list *pair = jinja_list_new(&ctx->arena, 2);
            if (!pair) return jinja_nomem(ctx, at->pos);
            pair->items[0] = key;
            pair->items[1] = d.u.dict->values[i];
            pair->n = 2;
            l->items[i] = jinja_list_value(pair);
        } else {
            l->items[i] = which == 1 ? key : d.u.dict->values[i];
        }
    }
    l->n = n;
    *out = jinja_list_value(l);
    return DK_OK;
}

/* ---- tests ---- */

static bool is_lower_upper(jinja_value v, bool upper)
{
    if (v.type != JV_STRING) return false;
    for (size_t i = 0; i < v.u.s.n;) {
        uint32_t c = jinja_utf8_next(v.u.s.p, v.u.s.n, &i);
        uint32_t m = (uint32_t)(upper ? utf8proc_toupper((utf8proc_int32_t)c) : utf8proc_tolower((utf8proc_int32_t)c));
        if (m != c) return false;
    }
    return true;
}

static int test_value(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t len, jinja_value v, const jinja_value *other,
                      bool *out)
{
#define T(s) name_is(name, len, s)
    if (T("boolean")) *out = v.type == JV_BOOL;
    else if (T("callable")) *out = v.type == JV_FUNC;
    else if (T("odd") || T("even")) {
        if (v.type != JV_INT) return fail(ctx, at, "cannot test %s on a %s", T("odd") ? "odd" : "even", jinja_type_name(v));
        *out = (v.u.i % 2 != 0) == T("odd");
    } else if (T("false")) *out = v.type == JV_BOOL && !v.u.b;
    else if (T("true")) *out = v.type == JV_BOOL && v.u.b;
    else if (T("none")) *out = v.type == JV_NONE;
    else if (T("string")) *out = v.type == JV_STRING;
    else if (T("number")) *out = jinja_is_num(v);
    else if (T("integer")) *out = v.type == JV_INT;
    else if (T("float")) *out = v.type == JV_FLOAT;
    else if (T("iterable")) *out = v.type == JV_ARRAY || v.type == JV_STRING;
    else if (T("mapping")) *out = v.type == JV_OBJECT;
    else if (T("sequence")) *out = v.type == JV_ARRAY || v.type == JV_OBJECT || v.type == JV_STRING;
    else if (T("lower")) *out = is_lower_upper(v, false);
    else if (T("upper")) *out = is_lower_upper(v, true);
    else if (T("defined")) *out = v.type != JV_UNDEFINED;
    else if (T("undefined")) *out = v.type == JV_UNDEFINED;
    else if (T("equalto") || T("eq") || T("==") || T("sameas") || T("ne") || T("!=")) {
        jinja_value o = other ? *other : jinja_undef();
        bool eq = T("sameas") ? jinja_strict_eq(v, o) && (v.type < JV_ARRAY || v.type == o.type) : jinja_strict_eq(v, o);
        *out = (T("ne") || T("!=")) ? !eq : eq;
    } else if (T("gt") || T("ge") || T("lt") || T("le") || T(">") || T(">=") || T("<") || T("<=")) {
        if (!other || !jinja_is_num(v) || !jinja_is_num(*other)) return fail(ctx, at, "comparison test needs two numbers%s%s", "", "");
        double a = jinja_num(v), b = jinja_num(*other);
        *out = (T("gt") || T(">")) ? a > b : (T("ge") || T(">=")) ? a >= b : (T("lt") || T("<")) ? a < b : a <= b;
    } else if (T("divisibleby")) {
        if (!other || other->type != JV_INT || v.type != JV_INT || other->u.i == 0)
            return fail(ctx, at, "divisibleby needs two integers (the divisor not 0)%s%s", "", "");
        *out = other->u.i == -1 || v.u.i % other->u.i == 0;
    } else if (T("in")) {
        if (!other) return fail(ctx, at, "the test 'in' needs an argument%s%s", "", "");
        if (other->type == JV_ARRAY) {
            *out = false;
            for (size_t i = 0; i < other->u.list->n && !*out; i++) *out = jinja_strict_eq(other->u.list->items[i], v);
        } else if (other->type == JV_STRING && v.type == JV_STRING) {
            *out = v.u.s.n == 0 || (v.u.s.n <= other->u.s.n && memmem(other->u.s.p, other->u.s.n, v.u.s.p, v.u.s.n));
        } else if (other->type == JV_OBJECT && v.type == JV_STRING) {
            *out = jinja_dict_get(other->u.dict, v.u.s.p, v.u.s.n) != NULL;
        } else {
            return fail(ctx, at, "cannot test 'in' on a %s%s", jinja_type_name(*other), "");
        }
    } else {
        return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "unknown test '%.*s'", (int)len, name);
    }
#undef T
    return DK_OK;
}

int jinja_test(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t name_len, jinja_value v, const jinja_args *args,
               bool *out)
{
    return test_value(ctx, at, name, name_len, v, args && args->n_pos ? &args->pos[0] : NULL, out);
}

/* ---- list filters with arguments ---- */

static int select_attr(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, bool select, jinja_value *out)
{
    const char *what = select ? "selectattr" : "rejectattr";
    const jinja_list *l = v.u.list;
    for (size_t i = 0; i < l->n; i++)
        if (!jinja_is_dict(l->items[i])) return fail(ctx, at, "`%s` can only be applied to array of objects%s", what, "");
    for (size_t i = 0; i < at->body.n; i++)
        if (at->body.items[i]->kind != JN_STR) return fail(ctx, at, "arguments of `%s` must be strings%s", what, "");
    if (!args || args->n_pos == 0) return fail(ctx, at, "`%s` needs an attribute name%s", what, "");
    jinja_value attr = args->pos[0];
    const jinja_value *test_name = args->n_pos > 1 ? &args->pos[1] : NULL, *other = args->n_pos > 2 ? &args->pos[2] : NULL;
    jinja_list *r = jinja_list_new(&ctx->arena, 0);
    if (!r) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < l->n; i++) {
        const jinja_value *a = jinja_dict_get(l->items[i].u.dict, attr.u.s.p, attr.u.s.n);
        bool hit = false;
        if (a) {
            if (test_name) {
                int rc = test_value(ctx, at, test_name->u.s.p, test_name->u.s.n, *a, other, &hit);
                if (rc) return rc;
            } else {
                hit = jinja_truthy(*a);
            }
        }
        if (hit == select && jinja_list_push(&ctx->arena, r, l->items[i])) return jinja_nomem(ctx, at->pos);
    }
    *out = jinja_list_value(r);
    return DK_OK;
}

/* jinja2's select/reject(test, args...) (HF lacks them). */
static int select_test(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, bool select, jinja_value *out)
{
    const jinja_list *l = v.u.list;
    jinja_list *r = jinja_list_new(&ctx->arena, 0);
    if (!r) return jinja_nomem(ctx, at->pos);
    if (n_args(args) > 0 && args->pos[0].type != JV_STRING) return fail(ctx, at, "the test name must be a string%s%s", "", "");
    for (size_t i = 0; i < l->n; i++) {
        bool hit;
        if (n_args(args) == 0) {
            hit = jinja_truthy(l->items[i]);
        } else {
            int rc = test_value(ctx, at, args->pos[0].u.s.p, args->pos[0].u.s.n, l->items[i], args->n_pos > 1 ? &args->pos[1] : NULL, &hit);
            if (rc) return rc;
        }
        if (hit == select && jinja_list_push(&ctx->arena, r, l->items[i])) return jinja_nomem(ctx, at->pos);
    }
    *out = jinja_list_value(r);
    return DK_OK;
}

static int map_filter(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, jinja_value *out)
{
    const jinja_list *l = v.u.list;
    jinja_list *r = jinja_list_new(&ctx->arena, l->n);
    if (!r) return jinja_nomem(ctx, at->pos);
    const jinja_value *attr = args ? jinja_args_kw(args, "attribute") : NULL;
    if (attr) {
        if (attr->type != JV_STRING) return fail(ctx, at, "attribute must be a string%s%s", "", "");
        const jinja_value *def = jinja_args_kw(args, "default");
        for (size_t i = 0; i < l->n; i++) {
            if (!jinja_is_dict(l->items[i])) return fail(ctx, at, "items in map must be an object%s%s", "", "");
            jinja_value x = attribute_path(l->items[i], attr->u.s.p, attr->u.s.n);
            r->items[i] = x.type == JV_UNDEFINED && def ? *def : x;
        }
    } else if (n_args(args) > 0 && args->pos[0].type == JV_STRING) {
        /* jinja2's map('filter', args...) */
        jinja_args rest = *args;
        rest.pos++;
        rest.n_pos--;
        bool with_args = rest.n_pos || rest.n_kw;
        for (size_t i = 0; i < l->n; i++) {
            int rc = jinja_filter(ctx, at, args->pos[0].u.s.p, args->pos[0].u.s.n, l->items[i], with_args ? &rest : NULL, &r->items[i]);
            if (rc) return rc;
        }
    } else {
        return fail(ctx, at, "`map` needs attribute= or a filter name%s%s", "", "");
    }
    r->n = l->n;
    *out = jinja_list_value(r);
    return DK_OK;
}

static int unique(jinja_ctx *ctx, const jinja_node *at, jinja_value v, jinja_value *out)
{
    const jinja_list *l = v.u.list;
    jinja_list *r = jinja_list_new(&ctx->arena, 0);
    if (!r) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < l->n; i++) {
        int rc = jinja_work(ctx, at->pos, r->n + 1);
        if (rc) return rc;
        bool seen = false;
        for (size_t j = 0; j < r->n && !seen; j++) seen = jinja_strict_eq(r->items[j], l->items[i]);
        if (!seen && jinja_list_push(&ctx->arena, r, l->items[i])) return jinja_nomem(ctx, at->pos);
    }
    *out = jinja_list_value(r);
    return DK_OK;
}

static int reverse_list(jinja_ctx *ctx, const jinja_node *at, const jinja_list *l, jinja_value *out)
{
    jinja_list *r = jinja_list_new(&ctx->arena, l->n);
    if (!r) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < l->n; i++) r->items[i] = l->items[l->n - 1 - i];
    r->n = l->n;
    *out = jinja_list_value(r);
    return DK_OK;
}

static int chars_list(jinja_ctx *ctx, const jinja_node *at, jinja_value s, jinja_value *out)
{
    jinja_list *r = jinja_list_new(&ctx->arena, 0);
    if (!r) return jinja_nomem(ctx, at->pos);
    for (size_t i = 0; i < s.u.s.n;) {
        size_t k = i;
        jinja_utf8_next(s.u.s.p, s.u.s.n, &k);
        if (jinja_list_push(&ctx->arena, r, jinja_str(s.u.s.p + i, k - i))) return jinja_nomem(ctx, at->pos);
        i = k;
    }
    *out = jinja_list_value(r);
    return DK_OK;
}

static int round_filter(jinja_ctx *ctx, const jinja_node *at, jinja_value v, const jinja_args *args, jinja_value *out)
{
    const jinja_value *prec = arg(args, 0, "precision"), *method = arg(args, 1, "method");
    if ((prec && prec->type != JV_INT) || (method && method->type != JV_STRING))
        return fail(ctx, at, "round(precision=int, method='common'|'floor'|'ceil')%s%s", "", "");
    int64_t p = prec ? prec->u.i : 0;
    if (p < -20 || p > 20) return fail(ctx, at, "round precision out of range%s%s", "", "");
    double scale = pow(10.0, (double)p), x = jinja_num(v) * scale, r;
    if (method && str_eq(*method, "floor", 5)) r = floor(x);
    else if (method && str_eq(*method, "ceil", 4)) r = ceil(x);
    else if (!method || str_eq(*method, "common", 6)) r = round(x);
    else return fail(ctx, at, "round method must be 'common', 'floor' or 'ceil'%s%s", "", "");
    *out = jinja_float(r / scale);
    return DK_OK;
}

/* ---- filters ---- */

static int unknown_filter(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t len, jinja_value v)
{
    return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "unknown filter '%.*s' for a %s", (int)len, name, jinja_type_name(v));
}

static int int_float(jinja_ctx *ctx, const jinja_node *at, bool to_int, jinja_value v, const jinja_args *args, jinja_value *out)
{
    const jinja_value *d = arg(args, 0, "default");
    jinja_value def = d ? *d : to_int ? jinja_int(0) : jinja_float(0);
    switch (v.type) {
    case JV_STRING:
        if (to_int) {
            int64_t i;
            *out = js_parse_int(v, &i) ? jinja_int(i) : def;
        } else {
            double f;
            *out = js_parse_float(v, &f) ? jinja_float(f) : def;
        }
        return DK_OK;
    case JV_INT: case JV_FLOAT:
        if (args) {
            *out = v; /* HF: int(default) / float(default) of a number is the number itself */
        } else if (to_int) {
            double f = floor(jinja_num(v));
            if (v.type == JV_FLOAT && !(f > -9.2e18 && f < 9.2e18)) return fail(ctx, at, "cannot convert %s to an integer%s", "this float", "");
            *out = v.type == JV_INT ? v : jinja_int((int64_t)f);
        } else {
            *out = jinja_float(jinja_num(v));
        }
        return DK_OK;
    case JV_BOOL: *out = to_int ? jinja_int(v.u.b) : jinja_float(v.u.b); return DK_OK;
    default: return unknown_filter(ctx, at, to_int ? "int" : "float", to_int ? 3 : 5, v);
    }
}

static int string_filter(jinja_ctx *ctx, const jinja_node *at, jinja_value v, jinja_value *out)
{
    if (v.type == JV_STRING) {
        *out = v;
        return DK_OK;
    }
    if (v.type == JV_ARRAY || jinja_is_dict(v)) {
        jinja_json_opts o = {0};
        return to_json(ctx, at, v, &o, out);
    }
    if (v.type == JV_INT || v.type == JV_FLOAT || v.type == JV_BOOL) {
        dk_buf b = {0};
        jinja_print(v, &b);
        return jinja_buf_str(ctx, at->pos, &b, out);
    }
    return unknown_filter(ctx, at, "string", 6, v);
}

static int filter_list(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t len, jinja_value v, const jinja_args *args,
                       jinja_value *out)
{
    const jinja_list *l = v.u.list;
#define F(s) name_is(name, len, s)
    if (args) {
        if (F("sort")) return sort_filter(ctx, at, v, args, out);
        if (F("selectattr") || F("rejectattr")) return select_attr(ctx, at, v, args, F("selectattr"), out);
        if (F("select") || F("reject")) return select_test(ctx, at, v, args, F("select"), out);
        if (F("map")) return map_filter(ctx, at, v, args, out);
        return unknown_filter(ctx, at, name, len, v);
    }
    if (F("list")) *out = v;
    else if (F("first")) *out = l->n ? l->items[0] : jinja_undef();
    else if (F("last")) *out = l->n ? l->items[l->n - 1] : jinja_undef();
    else if (F("length") || F("count")) *out = jinja_int((int64_t)l->n);
    else if (F("reverse")) return reverse_list(ctx, at, l, out);
    else if (F("sort")) return sort_filter(ctx, at, v, NULL, out);
    else if (F("join")) return join_values(ctx, at, l, jinja_str("", 0), out);
    else if (F("string")) return string_filter(ctx, at, v, out);
    else if (F("unique")) return unique(ctx, at, v, out);
    else if (F("select") || F("reject")) return select_test(ctx, at, v, NULL, F("select"), out);
    else return unknown_filter(ctx, at, name, len, v);
    return DK_OK;
}

static int filter_string(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t len, jinja_value v, const jinja_args *args,
                         jinja_value *out)
{
    if (args) {
        if (F("indent")) {
            const jinja_value *w = arg(args, 0, "width"), *first = arg(args, 1, "first"), *blank = arg(args, 2, "blank");
            if (w && w->type != JV_INT) return fail(ctx, at, "width must be a number%s%s", "", "");
            return indent(ctx, at, v, w ? w->u.i : 4, first && jinja_truthy(*first), blank && jinja_truthy(*blank), out);
        }
        if (F("replace")) return str_replace(ctx, at, v, args, out);
        if (F("trim") && n_args(args) == 1 && args->pos[0].type == JV_STRING) return trim_chars(v, args->pos[0], out);
        return unknown_filter(ctx, at, name, len, v);
    }
    if (F("length") || F("count")) *out = jinja_int((int64_t)jinja_utf8_count(v.u.s.p, v.u.s.n));
    else if (F("upper")) return case_map(ctx, at, v, 0, out);
    else if (F("lower")) return case_map(ctx, at, v, 1, out);
    else if (F("title")) return case_map(ctx, at, v, 2, out);
    else if (F("capitalize")) return case_map(ctx, at, v, 3, out);
    else if (F("trim")) return trimmed(ctx, at, v, 3, out);
    else if (F("indent")) return indent(ctx, at, v, 4, false, false, out);
    else if (F("join") || F("string")) *out = v;
    else if (F("int") || F("float")) return int_float(ctx, at, F("int"), v, NULL, out);
    else if (F("e") || F("escape")) return html_escape(ctx, at, v, out);
    else if (F("list")) return chars_list(ctx, at, v, out);
    else return unknown_filter(ctx, at, name, len, v);
    return DK_OK;
}

int jinja_filter(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t len, jinja_value v, const jinja_args *args,
                 jinja_value *out)
{
    if (F("safe")) {
        *out = v;
        return DK_OK;
    }
    if (F("tojson")) return tojson_filter(ctx, at, v, args, out);
    if (args && F("join")) {
        const jinja_value *sep = arg(args, 0, "separator");
        if (!sep) sep = jinja_args_kw(args, "d");
        jinja_value s = sep ? *sep : jinja_str("", 0);
        if (s.type != JV_STRING) return fail(ctx, at, "separator must be a string%s%s", "", "");
        if (v.type == JV_STRING) return join_chars(ctx, at, v, s, out);
        if (v.type == JV_ARRAY) return join_values(ctx, at, v.u.list, s, out);
        return unknown_filter(ctx, at, name, len, v);
    }
    if (args && (F("int") || F("float"))) return int_float(ctx, at, F("int"), v, args, out);
    if ((F("default") || F("d")) && (args || F("d"))) {
        const jinja_value *d = arg(args, 0, "default_value"), *boolean = arg(args, 1, "boolean");
        if (boolean && boolean->type != JV_BOOL) return fail(ctx, at, "`default` filter flag must be a boolean%s%s", "", "");
        bool use = v.type == JV_UNDEFINED || (boolean && boolean->u.b && !jinja_truthy(v));
        *out = use ? (d ? *d : jinja_str("", 0)) : v;
        return DK_OK;
    }
    switch (v.type) {
    case JV_ARRAY: return filter_list(ctx, at, name, len, v, args, out);
    case JV_STRING: return filter_string(ctx, at, name, len, v, args, out);
    case JV_INT: case JV_FLOAT:
        if (args && !F("round")) return unknown_filter(ctx, at, name, len, v);
        if (F("abs")) *out = v.type == JV_INT ? (v.u.i == INT64_MIN ? jinja_float(9223372036854775808.0) : jinja_int(v.u.i < 0 ? -v.u.i : v.u.i))
                                              : jinja_float(fabs(v.u.f));
        else if (F("int") || F("float")) return int_float(ctx, at, F("int"), v, NULL, out);
        else if (F("string")) return string_filter(ctx, at, v, out);
        else if (F("round")) return round_filter(ctx, at, v, args, out);
        else return unknown_filter(ctx, at, name, len, v);
        return DK_OK;
    case JV_OBJECT:
        if (!args && F("items")) return dict_pairs(ctx, at, v, 0, out);
        if (!args && (F("length") || F("count"))) {
            *out = jinja_int((int64_t)v.u.dict->n);
            return DK_OK;
        }
        if (!args && F("list")) return dict_pairs(ctx, at, v, 1, out);
        if (!args && F("string")) return string_filter(ctx, at, v, out);
        for (int i = 0; dict_methods[i]; i++) {
            if (!F(dict_methods[i])) continue;
            jinja_func fn = {.kind = JF_METHOD, .id = M_GET + i, .self = v};
            jinja_args none = {0};
            return jinja_call_builtin(ctx, at, &fn, args ? args : &none, out);
        }
        return unknown_filter(ctx, at, name, len, v);
    case JV_BOOL:
        if (args) return unknown_filter(ctx, at, name, len, v);
        if (F("bool")) *out = v;
        else if (F("int") || F("float")) return int_float(ctx, at, F("int"), v, NULL, out);
        else if (F("string")) return string_filter(ctx, at, v, out);
        else return unknown_filter(ctx, at, name, len, v);
        return DK_OK;
    default: return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "cannot apply filter '%.*s' to a %s", (int)len, name, jinja_type_name(v));
    }
#undef F
}

/* ---- attributes and methods ---- */

int jinja_builtin_attr(jinja_ctx *ctx, const jinja_node *at, jinja_value obj, const char *name, size_t len, jinja_value *out)
{
    *out = jinja_undef();
    if (obj.type == JV_STRING) {
        if (name_is(name, len, "length")) {
            *out = jinja_int((int64_t)jinja_utf8_count(obj.u.s.p, obj.u.s.n));
            return DK_OK;
        }
        for (int i = 0; string_methods[i]; i++)
            if (name_is(name, len, string_methods[i])) return make_func(ctx, at, JF_METHOD, M_UPPER + i, obj, out);
    } else if (obj.type == JV_ARRAY) {
        if (name_is(name, len, "length")) *out = jinja_int((int64_t)obj.u.list->n);
    } else if (obj.type == JV_OBJECT) {
        for (int i = 0; dict_methods[i]; i++)
            if (name_is(name, len, dict_methods[i])) return make_func(ctx, at, JF_METHOD, M_GET + i, obj, out);
    }
    return DK_OK;
}

static int call_method(jinja_ctx *ctx, const jinja_node *at, const jinja_func *fn, const jinja_args *args, jinja_value *out)
{
    jinja_value s = fn->self;
    switch ((enum method_id)fn->id) {
    case M_UPPER: return case_map(ctx, at, s, 0, out);
    case M_LOWER: return case_map(ctx, at, s, 1, out);
    case M_TITLE: return case_map(ctx, at, s, 2, out);
    case M_CAPITALIZE: return case_map(ctx, at, s, 3, out);
    /* HF's strip family ignores its argument and trims JavaScript whitespace. */
    case M_STRIP: return trimmed(ctx, at, s, 3, out);
    case M_LSTRIP: return trimmed(ctx, at, s, 1, out);
    case M_RSTRIP: return trimmed(ctx, at, s, 2, out);
    case M_STARTSWITH: return starts_ends(ctx, at, s, args, false, out);
    case M_ENDSWITH: return starts_ends(ctx, at, s, args, true, out);
    case M_SPLIT: return method_split(ctx, at, s, args, out);
    case M_REPLACE: return str_replace(ctx, at, s, args, out);
    case M_GET: {
        if (n_args(args) == 0 || args->pos[0].type != JV_STRING)
            return fail(ctx, at, "object key must be a string%s%s", "", "");
        const jinja_value *v = jinja_dict_get(s.u.dict, args->pos[0].u.s.p, args->pos[0].u.s.n);
        *out = v ? *v : args->n_pos > 1 ? args->pos[1] : jinja_none();
        return DK_OK;
    }
    case M_ITEMS: return dict_pairs(ctx, at, s, 0, out);
    case M_KEYS: return dict_pairs(ctx, at, s, 1, out);
    case M_VALUES: return dict_pairs(ctx, at, s, 2, out);
    case M_DICTSORT: return dictsort(ctx, at, s, args, out);
    }
    return fail(ctx, at, "unknown method%s%s", "", "");
}

/* ---- global functions ---- */

static int fn_namespace(jinja_ctx *ctx, const jinja_node *at, const jinja_args *args, bool as_dict, jinja_value *out)
{
    if (n_args(args) > 1) return fail(ctx, at, "%s expected at most 1 argument%s", as_dict ? "dict" : "namespace", "");
    jinja_dict *d = jinja_dict_new(&ctx->arena, 0);
    if (!d) return jinja_nomem(ctx, at->pos);
    if (n_args(args) == 1) {
        jinja_value src = args->pos[0];
        if (src.type == JV_OBJECT) {
            for (size_t i = 0; i < src.u.dict->n; i++)
                if (jinja_dict_set(&ctx->arena, d, src.u.dict->keys[i].p, src.u.dict->keys[i].n, src.u.dict->values[i]))
                    return jinja_nomem(ctx, at->pos);
        } else if (src.type == JV_ARRAY) {
            for (size_t i = 0; i < src.u.list->n; i++) {
                jinja_value pair = src.u.list->items[i];
                if (pair.type != JV_ARRAY || pair.u.list->n != 2 || pair.u.list->items[0].type != JV_STRING)
                    return fail(ctx, at, "namespace expected an object or an iterable of [key, value] pairs%s%s", "", "");
                jinja_value k = pair.u.list->items[0];
                if (jinja_dict_set(&ctx->arena, d, k.u.s.p, k.u.s.n, pair.u.list->items[1])) return jinja_nomem(ctx, at->pos);
            }
        } else {
            return fail(ctx, at, "'%s' object is not iterable%s", jinja_type_name(src), "");
        }
    }
    for (size_t i = 0; args && i < args->n_kw; i++)
        if (jinja_dict_set(&ctx->arena, d, args->kw_names[i].p, args->kw_names[i].n, args->kw_values[i])) return jinja_nomem(ctx, at->pos);
    out->type = as_dict ? JV_OBJECT : JV_NAMESPACE;
    out->is_tuple = false;
    out->u.dict = d;
    return DK_OK;
}

static int fn_range(jinja_ctx *ctx, const jinja_node *at, const jinja_args *args, jinja_value *out)
{
    size_t n = n_args(args);
    if (n < 1 || n > 3 || (args && args->n_kw)) return fail(ctx, at, "range() takes 1 to 3 integer arguments%s%s", "", "");
    for (size_t i = 0; i < n; i++)
        if (args->pos[i].type != JV_INT) return fail(ctx, at, "range() arguments must be integers, not %s%s", jinja_type_name(args->pos[i]), "");
    int64_t start = n == 1 ? 0 : args->pos[0].u.i, stop = n == 1 ? args->pos[0].u.i : args->pos[1].u.i;
    int64_t step = n == 3 ? args->pos[2].u.i : 1;
    if (step == 0) return fail(ctx, at, "range() step must not be zero%s%s", "", "");
    jinja_list *l = jinja_list_new(&ctx->arena, 0);
    if (!l) return jinja_nomem(ctx, at->pos);
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (l->n >= JINJA_MAX_ITERATIONS) return jinja_error(ctx, DK_ERR_LIMIT, at->pos, "range() of more than %d items", JINJA_MAX_ITERATIONS);
        if (jinja_list_push(&ctx->arena, l, jinja_int(i))) return jinja_nomem(ctx, at->pos);
        if (__builtin_add_overflow(i, step, &i)) break;
    }
    *out = jinja_list_value(l);
    return DK_OK;
}

static int fn_raise(jinja_ctx *ctx, const jinja_node *at, const jinja_args *args)
{
    dk_buf b = {0};
    if (n_args(args) > 0 && args->pos[0].type != JV_UNDEFINED) jinja_js_string(args->pos[0], &b);
    int rc = jinja_error(ctx, DK_ERR_FORMAT, at->pos, "%s", b.data ? b.data : "");
    dk_buf_free(&b);
    return rc;
}

static int fn_strftime(jinja_ctx *ctx, const jinja_node *at, const jinja_args *args, jinja_value *out)
{
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    if (n_args(args) < 1 || args->pos[0].type != JV_STRING) return fail(ctx, at, "strftime_now() needs a format string%s%s", "", "");
    jinja_value f = args->pos[0];
    time_t now = time(NULL);
    struct tm tm;
    if (!localtime_r(&now, &tm)) return fail(ctx, at, "cannot read the clock%s%s", "", "");
    dk_buf b = {0};
    for (size_t i = 0; i < f.u.s.n; i++) {
        char c = f.u.s.p[i], d = i + 1 < f.u.s.n ? f.u.s.p[i + 1] : 0;
        if (c != '%' || !d || !strchr("YmdbBHM%", d)) {
            dk_buf_putc(&b, c);
            continue;
        }
        i++;
        switch (d) {
        case 'Y': dk_buf_printf(&b, "%d", tm.tm_year + 1900); break;
        case 'm': dk_buf_printf(&b, "%02d", tm.tm_mon + 1); break;
        case 'd': dk_buf_printf(&b, "%02d", tm.tm_mday); break;
        case 'b': dk_buf_append(&b, months[tm.tm_mon], 3); break;
        case 'B': dk_buf_puts(&b, months[tm.tm_mon]); break;
        case 'H': dk_buf_printf(&b, "%02d", tm.tm_hour); break;
        case 'M': dk_buf_printf(&b, "%02d", tm.tm_min); break;
        default: dk_buf_putc(&b, '%');
        }
    }
    return jinja_buf_str(ctx, at->pos, &b, out);
}

int jinja_call_builtin(jinja_ctx *ctx, const jinja_node *at, const jinja_func *fn, const jinja_args *args, jinja_value *out)
{
    if (fn->kind == JF_METHOD) return call_method(ctx, at, fn, args, out);
    switch ((enum builtin_id)fn->id) {
    case BI_NAMESPACE: return fn_namespace(ctx, at, args, false, out);
    case BI_DICT: return fn_namespace(ctx, at, args, true, out);
    case BI_RANGE: return fn_range(ctx, at, args, out);
    case BI_RAISE: return fn_raise(ctx, at, args);
    case BI_STRFTIME: return fn_strftime(ctx, at, args, out);
    }
    return fail(ctx, at, "unknown function%s%s", "", "");
}

int jinja_define_globals(jinja_ctx *ctx, jinja_dict *d)
{
    static const struct { const char *name; enum builtin_id id; } fns[] = {
        {"namespace", BI_NAMESPACE}, {"range", BI_RANGE}, {"raise_exception", BI_RAISE},
        {"strftime_now", BI_STRFTIME}, {"dict", BI_DICT},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        jinja_value v;
        if (make_func(ctx, NULL, JF_BUILTIN, fns[i].id, jinja_undef(), &v) ||
            jinja_dict_set(&ctx->arena, d, fns[i].name, strlen(fns[i].name), v))
            return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
    }
    return DK_OK;
}
