/*
 * jinja.c: evaluation of a parsed template, with @huggingface/jinja's semantics: scopes (a
 * for loop gets one, shared by its iterations; if does not; a macro's scope hangs off the
 * scope it is called from), its operators (JavaScript arithmetic on int64/double, `+` joins
 * strings with anything, `==` is JavaScript's loose equality, `in` works on lists, strings and
 * dict keys), member access (missing things are undefined; a dict's own keys win over its
 * methods), loops (loop.index & co, `if` filtering, else when nothing ran, break/continue
 * dropping their iteration's output), set (names, tuples, namespace attributes, blocks) and
 * macros. Output goes straight into the caller's dk_buf; undefined and none print nothing.
 * Every hostile-template bound is checked here: output size, loop iterations, call and
 * evaluation depth, and (through the arena) memory.
 * Not for: filters, tests and methods (jinja_filters.c), parsing, values' text forms.
 */
#include "chat/jinja_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define JINJA_BREAK 1
#define JINJA_CONTINUE 2
#define JINJA_MAX_EVAL_DEPTH 1000

struct jinja_scope {
    jinja_scope *parent;
    jinja_dict *vars;
};

static int eval(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out);
static int exec_block(jinja_ctx *ctx, jinja_scope *scope, const jinja_nodes *body);

/* ---- errors and helpers ---- */

int jinja_error(jinja_ctx *ctx, int code, size_t pos, const char *fmt, ...)
{
    dk_buf b = {0};
    jinja_pos_format(ctx->program->source, ctx->program->n_source, pos, &b);
    va_list ap;
    va_start(ap, fmt);
    dk_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    dk_fail(ctx->err, code, "%s", b.data ? b.data : "error");
    dk_buf_free(&b);
    return code;
}

int jinja_nomem(jinja_ctx *ctx, size_t pos)
{
    if (ctx->arena.over_limit)
        return jinja_error(ctx, DK_ERR_LIMIT, pos, "the template uses more than %zu MiB", JINJA_MAX_RENDER_BYTES >> 20);
    return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
}

int jinja_work(jinja_ctx *ctx, size_t pos, size_t n)
{
    ctx->n_work += n;
    if (ctx->n_work > JINJA_MAX_WORK) return jinja_error(ctx, DK_ERR_LIMIT, pos, "the template does too much work");
    return DK_OK;
}

const char *jinja_type_name(jinja_value v)
{
    static const char *const names[] = {"undefined", "none", "boolean", "integer", "float", "string",
                                        "list", "dict", "namespace", "function"};
    return names[v.type];
}

const jinja_value *jinja_args_kw(const jinja_args *args, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; args && i < args->n_kw; i++)
        if (args->kw_names[i].n == len && memcmp(args->kw_names[i].p, name, len) == 0) return &args->kw_values[i];
    return NULL;
}

int jinja_new_str(jinja_ctx *ctx, size_t pos, const char *s, size_t n, jinja_value *out)
{
    char *p = jinja_strndup(&ctx->arena, s, n);
    if (!p) return jinja_nomem(ctx, pos);
    *out = jinja_str(p, n);
    return DK_OK;
}

int jinja_buf_str(jinja_ctx *ctx, size_t pos, dk_buf *b, jinja_value *out)
{
    if (b->failed) {
        dk_buf_free(b);
        return jinja_nomem(ctx, pos);
    }
    if (b->len > JINJA_MAX_OUTPUT_BYTES) {
        dk_buf_free(b);
        return jinja_error(ctx, DK_ERR_LIMIT, pos, "a string of more than %zu MiB", JINJA_MAX_OUTPUT_BYTES >> 20);
    }
    int rc = jinja_new_str(ctx, pos, b->data ? b->data : "", b->len, out);
    dk_buf_free(b);
    return rc;
}

static int emit(jinja_ctx *ctx, size_t pos, const char *s, size_t n)
{
    if (ctx->out->len + n > JINJA_MAX_OUTPUT_BYTES)
        return jinja_error(ctx, DK_ERR_LIMIT, pos, "the output is longer than %zu MiB", JINJA_MAX_OUTPUT_BYTES >> 20);
    if (dk_buf_append(ctx->out, s, n)) return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

/* Prints v as a statement's result does (undefined and none print nothing). */
static int emit_value(jinja_ctx *ctx, size_t pos, jinja_value v)
{
    if (v.type == JV_UNDEFINED || v.type == JV_NONE) return DK_OK;
    if (v.type == JV_STRING) return emit(ctx, pos, v.u.s.p, v.u.s.n);
    dk_buf b = {0};
    int rc = jinja_print(v, &b);
    if (rc == DK_OK) rc = emit(ctx, pos, b.data ? b.data : "", b.len);
    else rc = rc == DK_ERR_NOMEM ? jinja_nomem(ctx, pos) : jinja_error(ctx, rc, pos, "cannot print a %s", jinja_type_name(v));
    dk_buf_free(&b);
    return rc;
}

/* ---- scopes ---- */

static jinja_scope *scope_new(jinja_ctx *ctx, jinja_scope *parent)
{
    jinja_scope *s = jinja_alloc(&ctx->arena, sizeof *s);
    if (!s) return NULL;
    s->parent = parent;
    s->vars = jinja_dict_new(&ctx->arena, 0);
    return s->vars ? s : NULL;
}

static jinja_value scope_lookup(const jinja_scope *s, const char *name, size_t len)
{
    for (; s; s = s->parent) {
        const jinja_value *v = jinja_dict_get(s->vars, name, len);
        if (v) return *v;
    }
    return jinja_undef();
}

static int scope_set(jinja_ctx *ctx, jinja_scope *s, size_t pos, const char *name, size_t len, jinja_value v)
{
    return jinja_dict_set(&ctx->arena, s->vars, name, len, v) ? jinja_nomem(ctx, pos) : DK_OK;
}

/* ---- output capture (set blocks, macros, filter blocks) ---- */

static int capture(jinja_ctx *ctx, jinja_scope *scope, const jinja_nodes *body, size_t pos, jinja_value *out)
{
    dk_buf b = {0}, *saved = ctx->out;
    ctx->out = &b;
    int rc = exec_block(ctx, scope, body);
    ctx->out = saved;
    if (rc == JINJA_BREAK || rc == JINJA_CONTINUE) {
        dk_buf_free(&b);
        return jinja_error(ctx, DK_ERR_FORMAT, pos, "break or continue outside of a loop");
    }
    if (rc) {
        dk_buf_free(&b);
        return rc;
    }
    return jinja_buf_str(ctx, pos, &b, out);
}

/* ---- operators ---- */

static int op_error(jinja_ctx *ctx, const jinja_node *n, jinja_value a, jinja_value b)
{
    static const char *const names[] = {"", "+", "-", "~", "*", "/", "//", "%", "**", "==", "!=", "<", ">",
                                        "<=", ">=", "in", "not in", "and", "or", "not", "-", "+"};
    return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "unknown operator '%s' between %s and %s", names[n->op],
                       jinja_type_name(a), jinja_type_name(b));
}

static int arith_int(jinja_ctx *ctx, const jinja_node *n, int64_t a, int64_t b, jinja_value *out)
{
    int64_t r = 0;
    bool overflow = false;
    switch (n->op) {
    case JOP_ADD: overflow = __builtin_add_overflow(a, b, &r); break;
    case JOP_SUB: overflow = __builtin_sub_overflow(a, b, &r); break;
    case JOP_MUL: overflow = __builtin_mul_overflow(a, b, &r); break;
    case JOP_FLOORDIV:
    case JOP_MOD:
        if (b == 0) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "division by zero");
        if (a == INT64_MIN && b == -1) {
            overflow = n->op == JOP_FLOORDIV;
            r = 0;
            break;
        }
        if (n->op == JOP_MOD) {
            r = a % b; /* JavaScript's %: the sign of the dividend */
        } else {
            r = a / b;
            if ((a % b != 0) && ((a < 0) != (b < 0))) r--;
        }
        break;
    default: return op_error(ctx, n, jinja_int(a), jinja_int(b));
    }
    if (overflow) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "integer overflow");
    *out = jinja_int(r);
    return DK_OK;
}

static int power(jinja_ctx *ctx, const jinja_node *n, jinja_value l, jinja_value r, jinja_value *out)
{
    double a = jinja_num(l), b = jinja_num(r);
    if (a == 0 && b < 0) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "0.0 cannot be raised to a negative power");
    bool is_float = l.type == JV_FLOAT || r.type == JV_FLOAT || b < 0;
    if (!is_float) {
        int64_t base = l.type == JV_BOOL ? l.u.b : l.u.i, e = r.type == JV_BOOL ? r.u.b : r.u.i, acc = 1;
        for (; e > 0; e >>= 1) {
            if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "integer overflow");
            if (e > 1 && __builtin_mul_overflow(base, base, &base)) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "integer overflow");
        }
        *out = jinja_int(acc);
        return DK_OK;
    }
    double v = pow(a, b);
    if (!isfinite(v)) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "exponentiation result is not a finite real number");
    *out = jinja_float(v);
    return DK_OK;
}

static int arith(jinja_ctx *ctx, const jinja_node *n, jinja_value l, jinja_value r, jinja_value *out)
{
    if (l.type == JV_INT && r.type == JV_INT && n->op != JOP_DIV && n->op < JOP_EQ) return arith_int(ctx, n, l.u.i, r.u.i, out);
    double a = jinja_num(l), b = jinja_num(r);
    switch (n->op) {
    case JOP_ADD: *out = jinja_float(a + b); return DK_OK;
    case JOP_SUB: *out = jinja_float(a - b); return DK_OK;
    case JOP_MUL: *out = jinja_float(a * b); return DK_OK;
    case JOP_DIV: *out = jinja_float(a / b); return DK_OK;
    case JOP_FLOORDIV: *out = jinja_float(floor(a / b)); return DK_OK;
    case JOP_MOD: *out = jinja_float(fmod(a, b)); return DK_OK;
    case JOP_LT: *out = jinja_bool(l.type == JV_INT && r.type == JV_INT ? l.u.i < r.u.i : a < b); return DK_OK;
    case JOP_GT: *out = jinja_bool(l.type == JV_INT && r.type == JV_INT ? l.u.i > r.u.i : a > b); return DK_OK;
    case JOP_LE: *out = jinja_bool(l.type == JV_INT && r.type == JV_INT ? l.u.i <= r.u.i : a <= b); return DK_OK;
    case JOP_GE: *out = jinja_bool(l.type == JV_INT && r.type == JV_INT ? l.u.i >= r.u.i : a >= b); return DK_OK;
    default: return op_error(ctx, n, l, r);
    }
}

static bool str_contains(jinja_value hay, jinja_value needle)
{
    if (needle.u.s.n == 0) return true;
    if (needle.u.s.n > hay.u.s.n) return false;
    return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
}

static int concat(jinja_ctx *ctx, const jinja_node *n, jinja_value l, jinja_value r, jinja_value *out)
{
    dk_buf b = {0};
    int rc = jinja_js_string(l, &b);
    if (rc == DK_OK) rc = jinja_js_string(r, &b);
    if (rc) {
        dk_buf_free(&b);
        return jinja_nomem(ctx, n->pos);
    }
    return jinja_buf_str(ctx, n->pos, &b, out);
}

static int binary(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_value l, r;
    int rc = eval(ctx, scope, n->a, &l);
    if (rc) return rc;
    if (n->op == JOP_AND) return jinja_truthy(l) ? eval(ctx, scope, n->b, out) : (*out = l, DK_OK);
    if (n->op == JOP_OR) return jinja_truthy(l) ? (*out = l, DK_OK) : eval(ctx, scope, n->b, out);
    if ((rc = eval(ctx, scope, n->b, &r))) return rc;
    if (n->op == JOP_EQ || n->op == JOP_NE) {
        *out = jinja_bool(jinja_loose_eq(l, r) == (n->op == JOP_EQ));
        return DK_OK;
    }
    bool membership = n->op == JOP_IN || n->op == JOP_NOT_IN;
    if (l.type == JV_UNDEFINED || r.type == JV_UNDEFINED) {
        if (r.type == JV_UNDEFINED && membership) {
            *out = jinja_bool(n->op == JOP_NOT_IN);
            return DK_OK;
        }
        return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "cannot apply an operator to an undefined value");
    }
    if (l.type == JV_NONE || r.type == JV_NONE)
        return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "cannot apply an operator to none");
    if (n->op == JOP_CONCAT) return concat(ctx, n, l, r, out);
    if (n->op == JOP_POW && (jinja_is_num(l) || l.type == JV_BOOL) && (jinja_is_num(r) || r.type == JV_BOOL))
        return power(ctx, n, l, r, out);
    if (jinja_is_num(l) && jinja_is_num(r)) return arith(ctx, n, l, r, out);
    if (l.type == JV_ARRAY && r.type == JV_ARRAY && n->op == JOP_ADD) {
        jinja_list *list = jinja_list_new(&ctx->arena, l.u.list->n + r.u.list->n);
        if (!list) return jinja_nomem(ctx, n->pos);
        if (l.u.list->n) memcpy(list->items, l.u.list->items, l.u.list->n * sizeof(jinja_value));
        if (r.u.list->n) memcpy(list->items + l.u.list->n, r.u.list->items, r.u.list->n * sizeof(jinja_value));
        list->n = l.u.list->n + r.u.list->n;
        *out = jinja_list_value(list);
        return DK_OK;
    }
    if (r.type == JV_ARRAY && membership) {
        bool found = false;
        for (size_t i = 0; i < r.u.list->n && !found; i++) found = jinja_strict_eq(r.u.list->items[i], l);
        *out = jinja_bool(found == (n->op == JOP_IN));
        return DK_OK;
    }
    if ((l.type == JV_STRING || r.type == JV_STRING) && n->op == JOP_ADD) return concat(ctx, n, l, r, out);
    if (l.type == JV_STRING && r.type == JV_STRING && membership) {
        *out = jinja_bool(str_contains(r, l) == (n->op == JOP_IN));
        return DK_OK;
    }
    if (l.type == JV_STRING && r.type == JV_OBJECT && membership) {
        bool found = jinja_dict_get(r.u.dict, l.u.s.p, l.u.s.n) != NULL;
        *out = jinja_bool(found == (n->op == JOP_IN));
        return DK_OK;
    }
    return op_error(ctx, n, l, r);
}

static int unary(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_value v;
    int rc = eval(ctx, scope, n->a, &v);
    if (rc) return rc;
    if (n->op == JOP_NOT) {
        *out = jinja_bool(!jinja_truthy(v));
        return DK_OK;
    }
    bool neg = n->op == JOP_NEG;
    if (v.type == JV_FLOAT) *out = jinja_float(neg ? -v.u.f : v.u.f);
    else if (v.type == JV_BOOL) *out = jinja_int(neg ? -(int64_t)v.u.b : v.u.b);
    else if (v.type == JV_INT) {
        if (neg && v.u.i == INT64_MIN) return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "integer overflow");
        *out = jinja_int(neg ? -v.u.i : v.u.i);
    } else {
        return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "unary %c on a %s", neg ? '-' : '+', jinja_type_name(v));
    }
    return DK_OK;
}

/* ---- member access and slices ---- */

/* Python slice bounds, as HF's slice() computes them. */
static void slice_bounds(int64_t len, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
                         int64_t *from, int64_t *to)
{
    if (step > 0) {
        start = !has_start ? 0 : start < 0 ? (len + start > 0 ? len + start : 0) : (start < len ? start : len);
        stop = !has_stop ? len : stop < 0 ? (len + stop > 0 ? len + stop : 0) : (stop < len ? stop : len);
    } else {
        start = !has_start ? len - 1 : start < 0 ? (len + start > -1 ? len + start : -1) : (start < len - 1 ? start : len - 1);
        stop = !has_stop ? -1 : stop < -1 ? (len + stop > -1 ? len + stop : -1) : (stop < len - 1 ? stop : len - 1);
    }
    *from = start;
    *to = stop;
}

static int slice_part(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *part, const jinja_node *at, bool *has, int64_t *v)
{
    *has = false;
    if (!part) return DK_OK;
    jinja_value x;
    int rc = eval(ctx, scope, part, &x);
    if (rc) return rc;
    if (x.type == JV_UNDEFINED) return DK_OK;
    if (x.type != JV_INT) return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "slice indices must be integers, not %s", jinja_type_name(x));
    *has = true;
    *v = x.u.i;
    return DK_OK;
}

static int slice(jinja_ctx *ctx, jinja_scope *scope, jinja_value obj, const jinja_node *s, jinja_value *out)
{
    if (obj.type != JV_ARRAY && obj.type != JV_STRING)
        return jinja_error(ctx, DK_ERR_FORMAT, s->pos, "cannot slice a %s", jinja_type_name(obj));
    bool has_start, has_stop, has_step;
    int64_t start = 0, stop = 0, step = 1;
    int rc;
    if ((rc = slice_part(ctx, scope, s->a, s, &has_start, &start)) || (rc = slice_part(ctx, scope, s->b, s, &has_stop, &stop)) ||
        (rc = slice_part(ctx, scope, s->c, s, &has_step, &step)))
        return rc;
    if (!has_step) step = 1;
    if (step == 0) return jinja_error(ctx, DK_ERR_FORMAT, s->pos, "slice step cannot be zero");
    if (obj.type == JV_ARRAY) {
        int64_t from, to, len = (int64_t)obj.u.list->n;
        slice_bounds(len, has_start, start, has_stop, stop, step, &from, &to);
        jinja_list *l = jinja_list_new(&ctx->arena, 0);
        if (!l) return jinja_nomem(ctx, s->pos);
        for (int64_t i = from; step > 0 ? i < to : i > to; i += step)
            if (jinja_list_push(&ctx->arena, l, obj.u.list->items[i])) return jinja_nomem(ctx, s->pos);
        *out = jinja_list_value(l);
        return DK_OK;
    }
    /* Strings slice by code point (Array.from). */
    size_t n_cp = jinja_utf8_count(obj.u.s.p, obj.u.s.n);
    size_t *offs = dk_malloc_array(n_cp + 1, sizeof *offs);
    if (!offs) return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < obj.u.s.n;) {
        offs[k++] = i;
        jinja_utf8_next(obj.u.s.p, obj.u.s.n, &i);
    }
    offs[k] = obj.u.s.n;
    int64_t from, to;
    slice_bounds((int64_t)n_cp, has_start, start, has_stop, stop, step, &from, &to);
    dk_buf b = {0};
    for (int64_t i = from; step > 0 ? i < to : i > to; i += step)
        dk_buf_append(&b, obj.u.s.p + offs[i], offs[i + 1] - offs[i]);
    dk_free(offs);
    return jinja_buf_str(ctx, s->pos, &b, out);
}

/* The code point at index i of a string (negative from the end), or undefined. */
static int string_index(jinja_ctx *ctx, size_t pos, jinja_value s, int64_t i, jinja_value *out)
{
    int64_t n = (int64_t)jinja_utf8_count(s.u.s.p, s.u.s.n);
    if (i < 0) i += n;
    *out = jinja_undef();
    if (i < 0 || i >= n) return DK_OK;
    size_t at = 0;
    for (int64_t k = 0; k < i; k++) jinja_utf8_next(s.u.s.p, s.u.s.n, &at);
    size_t end = at;
    jinja_utf8_next(s.u.s.p, s.u.s.n, &end);
    *out = jinja_str(s.u.s.p + at, end - at);
    (void)ctx;
    (void)pos;
    return DK_OK;
}

static int get_item(jinja_ctx *ctx, const jinja_node *n, jinja_value obj, jinja_value key, jinja_value *out)
{
    *out = jinja_undef();
    if (jinja_is_dict(obj)) {
        if (key.type != JV_STRING)
            return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "cannot access a dict with a %s key", jinja_type_name(key));
        const jinja_value *v = jinja_dict_get(obj.u.dict, key.u.s.p, key.u.s.n);
        if (v) {
            *out = *v;
            return DK_OK;
        }
        return obj.type == JV_OBJECT ? jinja_builtin_attr(ctx, n, obj, key.u.s.p, key.u.s.n, out) : DK_OK;
    }
    if (obj.type == JV_ARRAY || obj.type == JV_STRING) {
        if (key.type == JV_INT) {
            if (obj.type == JV_STRING) return string_index(ctx, n->pos, obj, key.u.i, out);
            int64_t i = key.u.i, len = (int64_t)obj.u.list->n;
            if (i < 0) i += len;
            if (i >= 0 && i < len) *out = obj.u.list->items[i];
            return DK_OK;
        }
        if (key.type == JV_STRING) return jinja_builtin_attr(ctx, n, obj, key.u.s.p, key.u.s.n, out);
        return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "cannot index a %s with a %s", jinja_type_name(obj), jinja_type_name(key));
    }
    if (key.type != JV_STRING)
        return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "cannot access a %s with a %s key", jinja_type_name(obj), jinja_type_name(key));
    return DK_OK; /* numbers, booleans, none and undefined have no attributes */
}

static int member(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_value obj, key;
    int rc = eval(ctx, scope, n->a, &obj);
    if (rc) return rc;
    if (n->flag) {
        if (n->b->kind == JN_SLICE) return slice(ctx, scope, obj, n->b, out);
        if ((rc = eval(ctx, scope, n->b, &key))) return rc;
    } else if (n->b->kind == JN_INT) {
        key = jinja_int(n->b->i);
    } else {
        key = jinja_str(n->b->str, n->b->len);
    }
    return get_item(ctx, n, obj, key, out);
}

/* ---- calls ---- */

static int eval_args(jinja_ctx *ctx, jinja_scope *scope, const jinja_nodes *list, jinja_args *args)
{
    memset(args, 0, sizeof *args);
    size_t n_kw = 0;
    for (size_t i = 0; i < list->n; i++) n_kw += list->items[i]->kind == JN_KWARG;
    size_t n_pos = list->n - n_kw;
    if (n_pos && !(args->pos = jinja_alloc(&ctx->arena, n_pos * sizeof(jinja_value)))) return jinja_nomem(ctx, 0);
    if (n_kw && (!(args->kw_names = jinja_alloc(&ctx->arena, n_kw * sizeof(jinja_slice))) ||
                 !(args->kw_values = jinja_alloc(&ctx->arena, n_kw * sizeof(jinja_value)))))
        return jinja_nomem(ctx, 0);
    /* Positional arguments first, then keyword ones, as HF evaluates them. */
    for (size_t i = 0; i < list->n; i++) {
        if (list->items[i]->kind == JN_KWARG) continue;
        int rc = eval(ctx, scope, list->items[i], &args->pos[args->n_pos]);
        if (rc) return rc;
        args->n_pos++;
    }
    for (size_t i = 0; i < list->n; i++) {
        const jinja_node *kw = list->items[i];
        if (kw->kind != JN_KWARG) continue;
        for (size_t k = 0; k < args->n_kw; k++)
            if (args->kw_names[k].n == kw->len && memcmp(args->kw_names[k].p, kw->str, kw->len) == 0)
                return jinja_error(ctx, DK_ERR_FORMAT, kw->pos, "got multiple values for keyword argument '%.*s'", (int)kw->len, kw->str);
        int rc = eval(ctx, scope, kw->a, &args->kw_values[args->n_kw]);
        if (rc) return rc;
        args->kw_names[args->n_kw].p = kw->str;
        args->kw_names[args->n_kw].n = kw->len;
        args->n_kw++;
    }
    return DK_OK;
}

static int bind_macro_args(jinja_ctx *ctx, const jinja_node *at, const jinja_node *m, const jinja_args *args, jinja_scope *ms)
{
    const jinja_nodes *params = &m->alt;
    bool used[64] = {0};
    if (args->n_kw > 64) return jinja_error(ctx, DK_ERR_LIMIT, at->pos, "too many keyword arguments");
    for (size_t i = 0; i < params->n; i++) {
        const jinja_node *p = params->items[i];
        jinja_value v = jinja_undef();
        bool have = i < args->n_pos;
        if (have) v = args->pos[i];
        for (size_t k = 0; !have && k < args->n_kw; k++) {
            if (!used[k] && args->kw_names[k].n == p->len && memcmp(args->kw_names[k].p, p->str, p->len) == 0) {
                v = args->kw_values[k];
                used[k] = have = true;
            }
        }
        int rc = scope_set(ctx, ms, at->pos, p->str, p->len, v);
        if (rc) return rc;
    }
    for (size_t k = 0; k < args->n_kw; k++)
        if (!used[k])
            return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "macro '%.*s' takes no keyword argument '%.*s'", (int)m->len, m->str,
                               (int)args->kw_names[k].n, args->kw_names[k].p);
    if (args->n_pos > params->n)
        return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "macro '%.*s' takes not more than %zu argument(s)", (int)m->len, m->str, params->n);
    /* Defaults are evaluated after every parameter is bound, in the macro's scope. */
    for (size_t i = 0; i < params->n; i++) {
        const jinja_node *p = params->items[i];
        if (p->kind != JN_KWARG) continue;
        bool given = i < args->n_pos;
        for (size_t k = 0; !given && k < args->n_kw; k++)
            given = args->kw_names[k].n == p->len && memcmp(args->kw_names[k].p, p->str, p->len) == 0;
        if (given) continue;
        jinja_value v;
        int rc = eval(ctx, ms, p->a, &v);
        if (rc || (rc = scope_set(ctx, ms, at->pos, p->str, p->len, v))) return rc;
    }
    return DK_OK;
}

int jinja_call(jinja_ctx *ctx, const jinja_node *at, jinja_value fn, const jinja_args *args, jinja_value *out)
{
    if (fn.type != JV_FUNC) return jinja_error(ctx, DK_ERR_FORMAT, at->pos, "cannot call a %s", jinja_type_name(fn));
    if (fn.u.fn->kind != JF_MACRO) return jinja_call_builtin(ctx, at, fn.u.fn, args, out);
    if (ctx->call_depth >= JINJA_MAX_CALL_DEPTH)
        return jinja_error(ctx, DK_ERR_LIMIT, at->pos, "macro calls nested deeper than %d", JINJA_MAX_CALL_DEPTH);
    const jinja_node *m = fn.u.fn->macro;
    jinja_scope *caller = ctx->scope, *ms = scope_new(ctx, caller);
    if (!ms) return jinja_nomem(ctx, at->pos);
    int rc = bind_macro_args(ctx, at, m, args, ms);
    if (rc) return rc;
    ctx->call_depth++;
    rc = capture(ctx, ms, &m->body, at->pos, out);
    ctx->call_depth--;
    ctx->scope = caller;
    return rc;
}

static int call(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_args args;
    jinja_value fn;
    int rc = eval_args(ctx, scope, &n->body, &args);
    if (rc || (rc = eval(ctx, scope, n->a, &fn))) return rc;
    ctx->scope = scope;
    return jinja_call(ctx, n, fn, &args, out);
}

static int filter(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value operand, jinja_value *out)
{
    jinja_args args;
    int rc = DK_OK;
    if (n->flag && (rc = eval_args(ctx, scope, &n->body, &args))) return rc;
    ctx->scope = scope;
    return jinja_filter(ctx, n, n->str, n->len, operand, n->flag ? &args : NULL, out);
}

static int test(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_value v;
    jinja_args args;
    int rc = eval(ctx, scope, n->a, &v);
    if (rc || (n->i && (rc = eval_args(ctx, scope, &n->body, &args)))) return rc;
    bool r;
    ctx->scope = scope;
    if ((rc = jinja_test(ctx, n, n->str, n->len, v, n->i ? &args : NULL, &r))) return rc;
    *out = jinja_bool(r != n->flag);
    return DK_OK;
}

/* ---- expressions ---- */

static int literal_list(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_list *l = jinja_list_new(&ctx->arena, n->body.n);
    if (!l) return jinja_nomem(ctx, n->pos);
    for (size_t i = 0; i < n->body.n; i++) {
        int rc = eval(ctx, scope, n->body.items[i], &l->items[i]);
        if (rc) return rc;
        l->n++;
    }
    *out = jinja_list_value(l);
    out->is_tuple = n->kind == JN_TUPLE;
    return DK_OK;
}

static int literal_dict(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_dict *d = jinja_dict_new(&ctx->arena, n->body.n);
    if (!d) return jinja_nomem(ctx, n->pos);
    for (size_t i = 0; i < n->body.n; i++) {
        jinja_value k, v;
        int rc = eval(ctx, scope, n->body.items[i], &k);
        if (rc) return rc;
        if (k.type != JV_STRING)
            return jinja_error(ctx, DK_ERR_FORMAT, n->body.items[i]->pos, "dict keys must be strings, not %s", jinja_type_name(k));
        if ((rc = eval(ctx, scope, n->alt.items[i], &v))) return rc;
        if (jinja_dict_set(&ctx->arena, d, k.u.s.p, k.u.s.n, v)) return jinja_nomem(ctx, n->pos);
    }
    *out = jinja_dict_value(d);
    return DK_OK;
}

static int eval_inner(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    jinja_value v;
    int rc;
    switch (n->kind) {
    case JN_INT: *out = jinja_int(n->i); return DK_OK;
    case JN_FLOAT: *out = jinja_float(n->f); return DK_OK;
    case JN_STR: *out = jinja_str(n->str, n->len); return DK_OK;
    case JN_NAME: *out = scope_lookup(scope, n->str, n->len); return DK_OK;
    case JN_LIST: case JN_TUPLE: return literal_list(ctx, scope, n, out);
    case JN_DICT: return literal_dict(ctx, scope, n, out);
    case JN_UNARY: return unary(ctx, scope, n, out);
    case JN_BINARY: return binary(ctx, scope, n, out);
    case JN_MEMBER: return member(ctx, scope, n, out);
    case JN_CALL: return call(ctx, scope, n, out);
    case JN_FILTER:
        if ((rc = eval(ctx, scope, n->a, &v))) return rc;
        return filter(ctx, scope, n, v, out);
    case JN_TEST: return test(ctx, scope, n, out);
    case JN_TERNARY:
        if ((rc = eval(ctx, scope, n->a, &v))) return rc;
        return eval(ctx, scope, jinja_truthy(v) ? n->b : n->c, out);
    case JN_SELECT:
        if ((rc = eval(ctx, scope, n->b, &v))) return rc;
        if (!jinja_truthy(v)) {
            *out = jinja_undef();
            return DK_OK;
        }
        return eval(ctx, scope, n->a, out);
    default: return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "this is not an expression");
    }
}

static int eval(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_value *out)
{
    static _Thread_local int depth;
    if (depth >= JINJA_MAX_EVAL_DEPTH) return jinja_error(ctx, DK_ERR_LIMIT, n->pos, "expression nested too deeply");
    depth++;
    int rc = eval_inner(ctx, scope, n, out);
    depth--;
    return rc;
}

/* ---- statements ---- */

static int assign(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *target, jinja_value v)
{
    if (target->kind == JN_NAME) return scope_set(ctx, scope, target->pos, target->str, target->len, v);
    if (target->kind == JN_TUPLE) {
        if (v.type != JV_ARRAY) return jinja_error(ctx, DK_ERR_FORMAT, target->pos, "cannot unpack a %s", jinja_type_name(v));
        if (v.u.list->n != target->body.n)
            return jinja_error(ctx, DK_ERR_FORMAT, target->pos, "too %s items to unpack", target->body.n > v.u.list->n ? "few" : "many");
        for (size_t i = 0; i < target->body.n; i++) {
            const jinja_node *t = target->body.items[i];
            if (t->kind != JN_NAME) return jinja_error(ctx, DK_ERR_FORMAT, t->pos, "can only unpack into names");
            int rc = scope_set(ctx, scope, t->pos, t->str, t->len, v.u.list->items[i]);
            if (rc) return rc;
        }
        return DK_OK;
    }
    if (target->kind == JN_MEMBER) {
        jinja_value obj;
        int rc = eval(ctx, scope, target->a, &obj);
        if (rc) return rc;
        if (obj.type != JV_NAMESPACE)
            return jinja_error(ctx, DK_ERR_FORMAT, target->pos, "cannot assign an attribute of a %s (only of a namespace)", jinja_type_name(obj));
        if (target->flag || target->b->kind != JN_NAME)
            return jinja_error(ctx, DK_ERR_FORMAT, target->pos, "can only assign a namespace attribute by name");
        return jinja_dict_set(&ctx->arena, obj.u.dict, target->b->str, target->b->len, v) ? jinja_nomem(ctx, target->pos) : DK_OK;
    }
    return jinja_error(ctx, DK_ERR_FORMAT, target->pos, "cannot assign to this expression");
}

static int exec_set(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n)
{
    jinja_value v;
    int rc = n->b ? eval(ctx, scope, n->b, &v) : capture(ctx, scope, &n->body, n->pos, &v);
    return rc ? rc : assign(ctx, scope, n->a, v);
}

static int loop_object(jinja_ctx *ctx, const jinja_list *items, size_t i, size_t pos, jinja_value *out)
{
    static const char *const keys[] = {"index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem"};
    jinja_dict *d = jinja_dict_new(&ctx->arena, 9);
    if (!d) return jinja_nomem(ctx, pos);
    int64_t n = (int64_t)items->n, k = (int64_t)i;
    jinja_value vals[9] = {
        jinja_int(k + 1), jinja_int(k), jinja_int(n - k), jinja_int(n - k - 1), jinja_bool(k == 0), jinja_bool(k == n - 1),
        jinja_int(n), k > 0 ? items->items[i - 1] : jinja_undef(), k < n - 1 ? items->items[i + 1] : jinja_undef(),
    };
    for (size_t j = 0; j < 9; j++) {
        d->keys[j].p = keys[j];
        d->keys[j].n = strlen(keys[j]);
        d->values[j] = vals[j];
    }
    d->n = 9;
    *out = jinja_dict_value(d);
    return DK_OK;
}

static int count_iteration(jinja_ctx *ctx, size_t pos)
{
    if (++ctx->n_iterations > JINJA_MAX_ITERATIONS)
        return jinja_error(ctx, DK_ERR_LIMIT, pos, "more than %d loop iterations", JINJA_MAX_ITERATIONS);
    return DK_OK;
}

/* The loop's items: the iterable (a dict gives its keys), filtered by `if`. */
static int loop_items(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n, jinja_list **out)
{
    const jinja_node *iter = n->b->kind == JN_SELECT ? n->b->a : n->b, *cond = n->b->kind == JN_SELECT ? n->b->b : NULL;
    jinja_value it;
    int rc = eval(ctx, scope, iter, &it);
    if (rc) return rc;
    jinja_list *src;
    if (it.type == JV_ARRAY) {
        src = it.u.list;
    } else if (it.type == JV_OBJECT) {
        if (!(src = jinja_list_new(&ctx->arena, it.u.dict->n))) return jinja_nomem(ctx, n->pos);
        for (size_t i = 0; i < it.u.dict->n; i++) src->items[i] = jinja_str(it.u.dict->keys[i].p, it.u.dict->keys[i].n);
        src->n = it.u.dict->n;
    } else {
        return jinja_error(ctx, DK_ERR_FORMAT, iter->pos, "cannot loop over a %s", jinja_type_name(it));
    }
    jinja_list *items = jinja_list_new(&ctx->arena, 0);
    if (!items) return jinja_nomem(ctx, n->pos);
    for (size_t i = 0; i < src->n; i++) {
        jinja_value cur = src->items[i];
        if (n->a->kind == JN_TUPLE) {
            if (cur.type != JV_ARRAY || cur.is_tuple)
                return jinja_error(ctx, DK_ERR_FORMAT, n->a->pos, "cannot unpack a %s", cur.is_tuple ? "tuple" : jinja_type_name(cur));
            if (cur.u.list->n != n->a->body.n)
                return jinja_error(ctx, DK_ERR_FORMAT, n->a->pos, "too %s items to unpack", n->a->body.n > cur.u.list->n ? "few" : "many");
        }
        if (cond) {
            if ((rc = count_iteration(ctx, n->pos))) return rc;
            jinja_scope *ls = scope_new(ctx, scope);
            jinja_value keep;
            if (!ls) return jinja_nomem(ctx, n->pos);
            if ((rc = assign(ctx, ls, n->a, cur)) || (rc = eval(ctx, ls, cond, &keep))) return rc;
            if (!jinja_truthy(keep)) continue;
        }
        if (jinja_list_push(&ctx->arena, items, cur)) return jinja_nomem(ctx, n->pos);
    }
    *out = items;
    return DK_OK;
}

static int exec_for(jinja_ctx *ctx, jinja_scope *outer, const jinja_node *n)
{
    jinja_scope *scope = scope_new(ctx, outer);
    if (!scope) return jinja_nomem(ctx, n->pos);
    jinja_list *items = NULL;
    int rc = loop_items(ctx, scope, n, &items);
    if (rc) return rc;
    bool none_ran = true;
    for (size_t i = 0; i < items->n; i++) {
        jinja_value loop;
        if ((rc = count_iteration(ctx, n->pos)) || (rc = loop_object(ctx, items, i, n->pos, &loop)) ||
            (rc = scope_set(ctx, scope, n->pos, "loop", 4, loop)) || (rc = assign(ctx, scope, n->a, items->items[i])))
            return rc;
        size_t mark = ctx->out->len;
        rc = exec_block(ctx, scope, &n->body);
        if (rc == JINJA_CONTINUE || rc == JINJA_BREAK) {
            /* HF's loop drops what the interrupted iteration printed. */
            ctx->out->len = mark;
            if (ctx->out->data) ctx->out->data[mark] = 0;
            if (rc == JINJA_BREAK) break;
            continue;
        }
        if (rc) return rc;
        none_ran = false;
    }
    return none_ran ? exec_block(ctx, scope, &n->alt) : DK_OK;
}

static int exec_macro(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n)
{
    jinja_func *f = jinja_alloc(&ctx->arena, sizeof *f);
    if (!f) return jinja_nomem(ctx, n->pos);
    memset(f, 0, sizeof *f);
    f->kind = JF_MACRO;
    f->macro = n;
    jinja_value v = {.type = JV_FUNC, .u.fn = f};
    return scope_set(ctx, scope, n->pos, n->str, n->len, v);
}

static int exec_one(jinja_ctx *ctx, jinja_scope *scope, const jinja_node *n)
{
    jinja_value v;
    int rc;
    switch (n->kind) {
    case JN_TEXT: return emit(ctx, n->pos, n->str, n->len);
    case JN_OUTPUT:
        if ((rc = eval(ctx, scope, n->a, &v))) return rc;
        return emit_value(ctx, n->pos, v);
    case JN_IF:
        if ((rc = eval(ctx, scope, n->a, &v))) return rc;
        return exec_block(ctx, scope, jinja_truthy(v) ? &n->body : &n->alt);
    case JN_FOR: return exec_for(ctx, scope, n);
    case JN_SET: return exec_set(ctx, scope, n);
    case JN_MACRO: return exec_macro(ctx, scope, n);
    case JN_BREAK: return JINJA_BREAK;
    case JN_CONTINUE: return JINJA_CONTINUE;
    case JN_FILTER_BLOCK:
        if ((rc = capture(ctx, scope, &n->body, n->pos, &v)) || (rc = filter(ctx, scope, n->b, v, &v))) return rc;
        return emit_value(ctx, n->pos, v);
    default: return jinja_error(ctx, DK_ERR_FORMAT, n->pos, "this is not a statement");
    }
}

static int exec_block(jinja_ctx *ctx, jinja_scope *scope, const jinja_nodes *body)
{
    for (size_t i = 0; i < body->n; i++) {
        int rc = exec_one(ctx, scope, body->items[i]);
        if (rc) return rc;
    }
    return DK_OK;
}

/* ---- entry points ---- */

int jinja_ctx_init(jinja_ctx *ctx, const jinja_program *program, dk_buf *out, char *err)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->program = program;
    ctx->out = out;
    ctx->err = err;
    ctx->arena.max_bytes = JINJA_MAX_RENDER_BYTES;
    if (!(ctx->globals = scope_new(ctx, NULL))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    ctx->scope = ctx->globals;
    static const char *const names[] = {"true", "false", "none", "True", "False", "None"};
    for (size_t i = 0; i < 6; i++) {
        jinja_value v = i % 3 == 2 ? jinja_none() : jinja_bool(i % 3 == 0);
        if (jinja_dict_set(&ctx->arena, ctx->globals->vars, names[i], strlen(names[i]), v))
            return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return jinja_define_globals(ctx, ctx->globals->vars);
}

void jinja_ctx_free(jinja_ctx *ctx)
{
    jinja_arena_free(&ctx->arena);
}

int jinja_render(const jinja_program *program, const jinja_dict *vars, jinja_ctx *ctx)
{
    (void)program;
    for (size_t i = 0; vars && i < vars->n; i++)
        if (jinja_dict_set(&ctx->arena, ctx->globals->vars, vars->keys[i].p, vars->keys[i].n, vars->values[i]))
            return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
    size_t start = ctx->out->len;
    int rc = exec_block(ctx, ctx->globals, &ctx->program->body);
    if (rc == JINJA_BREAK || rc == JINJA_CONTINUE) rc = dk_fail(ctx->err, DK_ERR_FORMAT, "break or continue outside of a loop");
    if (rc) {
        ctx->out->len = start;
        if (ctx->out->data) ctx->out->data[start] = 0;
    }
    return rc;
}
