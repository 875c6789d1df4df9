/*
 * jinja_parse.c: tokens -> syntax tree, with @huggingface/jinja's grammar and precedence
 * (lowest first): `a if c else b` (and `a if c`, a select), or, and, not, comparisons and
 * `in`/`not in` (one level, left to right), + - ~, * / // %, **, `is` tests, `|` filters,
 * unary + -, calls / member access / slices, primaries. Statements: if/elif/else, for (with
 * `if` filtering and else), set (also tuple, attribute and block forms), macro, break,
 * continue, filter blocks. Tests may take arguments (`is divisibleby(3)`), which HF cannot.
 * Nesting is bounded (JINJA_MAX_PARSE_DEPTH) so the C stack cannot overflow.
 * Not for: evaluation (jinja.c).
 */
#include "chat/jinja_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    jinja_program *prog;
    const jinja_token *toks;
    size_t n, cur;
    int depth;
    char *err;
    int rc; /* first error; the parse functions return NULL after setting it */
} parser;

static jinja_node *parse_expr(parser *p);
static int parse_until(parser *p, const char *const *names, jinja_nodes *out);

static void *fail_at(parser *p, size_t tok_index, const char *fmt, const char *arg, size_t arg_len)
{
    if (p->rc) return NULL;
    size_t pos = tok_index < p->n ? p->toks[tok_index].pos : p->prog->n_source;
    dk_buf b = {0};
    jinja_pos_format(p->prog->source, p->prog->n_source, pos, &b);
    dk_buf_puts(&b, fmt);
    if (arg) {
        dk_buf_putc(&b, '\'');
        dk_buf_append(&b, arg, arg_len);
        dk_buf_putc(&b, '\'');
    }
    p->rc = dk_fail(p->err, DK_ERR_FORMAT, "%s", b.data ? b.data : "syntax error");
    dk_buf_free(&b);
    return NULL;
}

static void *nomem(parser *p)
{
    if (!p->rc)
        p->rc = p->prog->arena.over_limit ? dk_fail(p->err, DK_ERR_LIMIT, "template too big")
                                          : dk_fail(p->err, DK_ERR_NOMEM, "out of memory");
    return NULL;
}

static jinja_node *node_new(parser *p, enum jinja_node_kind kind, size_t tok_index)
{
    jinja_node *n = jinja_alloc(&p->prog->arena, sizeof *n);
    if (!n) return nomem(p);
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->pos = tok_index < p->n ? p->toks[tok_index].pos : p->prog->n_source;
    return n;
}

static int nodes_push(parser *p, jinja_nodes *list, jinja_node *n)
{
    if (!n) return -1;
    /* Grow by doubling; capacities are powers of two, so n alone tells when to grow. */
    if ((list->n & (list->n - 1)) == 0) {
        size_t cap = list->n ? list->n * 2 : 1, bytes;
        if (dk_mul_size(cap, sizeof(jinja_node *), &bytes)) return nomem(p), -1;
        jinja_node **items = jinja_alloc(&p->prog->arena, bytes);
        if (!items) return nomem(p), -1;
        if (list->n) memcpy(items, list->items, list->n * sizeof *items);
        list->items = items;
    }
    list->items[list->n++] = n;
    return 0;
}

/* ---- token tests ---- */

static bool is(const parser *p, enum jinja_tok type)
{
    return p->cur < p->n && p->toks[p->cur].type == type;
}

static bool is_name_at(const parser *p, size_t i, const char *name)
{
    return i < p->n && p->toks[i].type == JT_NAME && p->toks[i].len == strlen(name) &&
           memcmp(p->toks[i].text, name, p->toks[i].len) == 0;
}

static bool is_name(const parser *p, const char *name) { return is_name_at(p, p->cur, name); }

static bool is_text(const parser *p, const char *text)
{
    return p->cur < p->n && p->toks[p->cur].len == strlen(text) && memcmp(p->toks[p->cur].text, text, p->toks[p->cur].len) == 0;
}

static bool is_statement(const parser *p, const char *const *names)
{
    if (!is(p, JT_OPEN_STMT)) return false;
    for (; *names; names++)
        if (is_name_at(p, p->cur + 1, *names)) return true;
    return false;
}

static int expect(parser *p, enum jinja_tok type, const char *what)
{
    if (p->rc) return -1;
    if (!is(p, type)) {
        if (p->cur < p->n) {
            dk_buf b = {0};
            dk_buf_printf(&b, "expected %s, got ", what);
            fail_at(p, p->cur, b.data ? b.data : "unexpected token", p->toks[p->cur].text, p->toks[p->cur].len);
            dk_buf_free(&b);
        } else {
            dk_buf b = {0};
            dk_buf_printf(&b, "expected %s", what);
            fail_at(p, p->cur, b.data ? b.data : "unexpected end", NULL, 0);
            dk_buf_free(&b);
        }
        return -1;
    }
    p->cur++;
    return 0;
}

static int expect_name(parser *p, const char *name)
{
    if (p->rc) return -1;
    if (!is_name(p, name)) {
        dk_buf b = {0};
        dk_buf_printf(&b, "expected '%s'", name);
        fail_at(p, p->cur, b.data ? b.data : "unexpected token", NULL, 0);
        dk_buf_free(&b);
        return -1;
    }
    p->cur++;
    return 0;
}

static int enter(parser *p)
{
    if (++p->depth > JINJA_MAX_PARSE_DEPTH) {
        if (!p->rc) {
            dk_buf b = {0};
            jinja_pos_format(p->prog->source, p->prog->n_source, p->cur < p->n ? p->toks[p->cur].pos : p->prog->n_source, &b);
            p->rc = dk_fail(p->err, DK_ERR_LIMIT, "%snesting deeper than %d levels", b.data ? b.data : "", JINJA_MAX_PARSE_DEPTH);
            dk_buf_free(&b);
        }
        return -1;
    }
    return 0;
}

/* ---- expressions ---- */

static jinja_node *parse_primary(parser *p);

static jinja_node *parse_sequence(parser *p, bool primary)
{
    size_t start = p->cur;
    jinja_node *first = primary ? parse_primary(p) : parse_expr(p);
    if (!first || !is(p, JT_COMMA)) return first;
    jinja_node *t = node_new(p, JN_TUPLE, start);
    if (!t || nodes_push(p, &t->body, first)) return NULL;
    while (is(p, JT_COMMA)) {
        p->cur++;
        if (nodes_push(p, &t->body, primary ? parse_primary(p) : parse_expr(p))) return NULL;
    }
    return t;
}

static jinja_node *parse_number(parser *p, const jinja_token *t, size_t at)
{
    char buf[64];
    if (t->len >= sizeof buf) return fail_at(p, at, "number too long", NULL, 0);
    memcpy(buf, t->text, t->len);
    buf[t->len] = 0;
    bool is_float = memchr(buf, '.', t->len) != NULL;
    jinja_node *n = node_new(p, is_float ? JN_FLOAT : JN_INT, at);
    if (!n) return NULL;
    errno = 0;
    if (is_float) {
        n->f = strtod(buf, NULL);
    } else {
        n->i = strtoll(buf, NULL, 10);
        if (errno == ERANGE) return fail_at(p, at, "integer too large: ", t->text, t->len);
    }
    return n;
}

static jinja_node *parse_list_literal(parser *p, size_t at)
{
    jinja_node *n = node_new(p, JN_LIST, at);
    if (!n) return NULL;
    while (!is(p, JT_RBRACKET)) {
        if (p->cur >= p->n) return fail_at(p, p->cur, "unterminated list", NULL, 0);
        if (nodes_push(p, &n->body, parse_expr(p))) return NULL;
        if (is(p, JT_COMMA)) p->cur++;
    }
    p->cur++;
    return n;
}

static jinja_node *parse_dict_literal(parser *p, size_t at)
{
    jinja_node *n = node_new(p, JN_DICT, at);
    if (!n) return NULL;
    while (!is(p, JT_RBRACE)) {
        if (p->cur >= p->n) return fail_at(p, p->cur, "unterminated dict", NULL, 0);
        if (nodes_push(p, &n->body, parse_expr(p))) return NULL;
        if (expect(p, JT_COLON, "':' between key and value")) return NULL;
        if (nodes_push(p, &n->alt, parse_expr(p))) return NULL;
        if (is(p, JT_COMMA)) p->cur++;
    }
    p->cur++;
    return n;
}

static jinja_node *parse_primary_inner(parser *p)
{
    size_t at = p->cur;
    if (at >= p->n) return fail_at(p, at, "expected an expression", NULL, 0);
    const jinja_token *t = &p->toks[p->cur++];
    switch (t->type) {
    case JT_NUMBER: return parse_number(p, t, at);
    case JT_STRING: {
        jinja_node *n = node_new(p, JN_STR, at);
        if (!n) return NULL;
        n->str = t->text;
        n->len = t->len;
        if (is(p, JT_STRING)) {
            /* "a" "b": adjacent literals are one string. */
            dk_buf b = {0};
            dk_buf_append(&b, t->text, t->len);
            while (is(p, JT_STRING)) {
                dk_buf_append(&b, p->toks[p->cur].text, p->toks[p->cur].len);
                p->cur++;
            }
            char *s = b.failed ? NULL : jinja_strndup(&p->prog->arena, b.data ? b.data : "", b.len);
            n->len = b.len;
            dk_buf_free(&b);
            if (!s) return nomem(p);
            n->str = s;
        }
        return n;
    }
    case JT_NAME: {
        jinja_node *n = node_new(p, JN_NAME, at);
        if (!n) return NULL;
        n->str = t->text;
        n->len = t->len;
        return n;
    }
    case JT_LPAREN: {
        jinja_node *n = parse_sequence(p, false);
        if (!n || expect(p, JT_RPAREN, "')'")) return NULL;
        return n;
    }
    case JT_LBRACKET: return parse_list_literal(p, at);
    case JT_LBRACE: return parse_dict_literal(p, at);
    default: return fail_at(p, at, "unexpected token ", t->text, t->len);
    }
}

static jinja_node *parse_primary(parser *p)
{
    if (enter(p)) return NULL;
    jinja_node *n = parse_primary_inner(p);
    p->depth--;
    return n;
}

/* (a, b=c, ...) into list. params: a macro's parameter list (names, name=default). */
static int parse_args(parser *p, jinja_nodes *list, bool params)
{
    if (expect(p, JT_LPAREN, "'('")) return -1;
    bool saw_kw = false;
    while (!is(p, JT_RPAREN)) {
        size_t at = p->cur;
        if (at >= p->n) return fail_at(p, at, "unterminated argument list", NULL, 0), -1;
        if ((is(p, JT_MUL) && is_text(p, "*")) || is(p, JT_POW))
            return fail_at(p, at, "argument unpacking (* and **) is not supported", NULL, 0), -1;
        jinja_node *arg = parse_expr(p);
        if (!arg) return -1;
        if (is(p, JT_EQUALS)) {
            p->cur++;
            if (arg->kind != JN_NAME)
                return fail_at(p, at, params ? "expected a parameter name" : "expected a keyword argument name", NULL, 0), -1;
            jinja_node *kw = node_new(p, JN_KWARG, at);
            if (!kw) return -1;
            kw->str = arg->str;
            kw->len = arg->len;
            if (!(kw->a = parse_expr(p))) return -1;
            arg = kw;
            saw_kw = true;
        } else if (params && arg->kind != JN_NAME) {
            return fail_at(p, at, "expected a parameter name", NULL, 0), -1;
        } else if (saw_kw) {
            return fail_at(p, at, params ? "non-default parameter follows a default one" : "positional argument after keyword arguments", NULL, 0), -1;
        }
        if (params) {
            for (size_t k = 0; k < list->n; k++)
                if (list->items[k]->len == arg->len && memcmp(list->items[k]->str, arg->str, arg->len) == 0)
                    return fail_at(p, at, "duplicate parameter ", arg->str, arg->len), -1;
        }
        if (nodes_push(p, list, arg)) return -1;
        if (is(p, JT_COMMA)) p->cur++;
    }
    p->cur++;
    return 0;
}

/* The inside of [ ]: an index, or a slice a:b:c with any part left out. */
static jinja_node *parse_subscript(parser *p)
{
    size_t at = p->cur;
    jinja_node *parts[3] = {0};
    size_t n = 0;
    bool slice = false;
    while (!is(p, JT_RBRACKET)) {
        if (p->cur >= p->n) return fail_at(p, p->cur, "expected ']'", NULL, 0);
        jinja_node *e = NULL;
        if (is(p, JT_COLON)) {
            p->cur++;
            slice = true;
        } else {
            if (!(e = parse_expr(p))) return NULL;
            if (is(p, JT_COLON)) {
                p->cur++;
                slice = true;
            }
        }
        if (n == 3) return fail_at(p, at, "a slice has at most 3 parts", NULL, 0);
        parts[n++] = e;
    }
    if (n == 0) return fail_at(p, at, "expected an index or slice", NULL, 0);
    if (!slice) return parts[0];
    jinja_node *s = node_new(p, JN_SLICE, at);
    if (!s) return NULL;
    s->a = parts[0];
    s->b = parts[1];
    s->c = parts[2];
    return s;
}

static jinja_node *parse_member(parser *p, jinja_node *obj)
{
    while (obj && (is(p, JT_DOT) || is(p, JT_LBRACKET))) {
        size_t at = p->cur;
        bool computed = is(p, JT_LBRACKET);
        p->cur++;
        jinja_node *m = node_new(p, JN_MEMBER, at);
        if (!m) return NULL;
        m->a = obj;
        m->flag = computed;
        if (computed) {
            if (!(m->b = parse_subscript(p)) || expect(p, JT_RBRACKET, "']'")) return NULL;
        } else {
            if (!(m->b = parse_primary(p))) return NULL;
            if (m->b->kind != JN_NAME && m->b->kind != JN_INT)
                return fail_at(p, at + 1, "expected a name after '.'", NULL, 0);
        }
        obj = m;
    }
    return obj;
}

static jinja_node *parse_call(parser *p, jinja_node *callee)
{
    while (callee && is(p, JT_LPAREN)) {
        jinja_node *c = node_new(p, JN_CALL, p->cur);
        if (!c) return NULL;
        c->a = callee;
        c->pos = callee->pos;
        if (parse_args(p, &c->body, false)) return NULL;
        callee = parse_member(p, c);
    }
    return callee;
}

static jinja_node *parse_unary_sign(parser *p)
{
    if ((is(p, JT_UNARY) || is(p, JT_ADD)) && (is_text(p, "-") || is_text(p, "+"))) {
        jinja_node *n = node_new(p, JN_UNARY, p->cur);
        if (!n) return NULL;
        n->op = is_text(p, "-") ? JOP_NEG : JOP_POS;
        p->cur++;
        if (enter(p)) return NULL;
        n->a = parse_unary_sign(p);
        p->depth--;
        return n->a ? n : NULL;
    }
    return parse_call(p, parse_member(p, parse_primary(p)));
}

static jinja_node *parse_filter(parser *p)
{
    jinja_node *operand = parse_unary_sign(p);
    while (operand && is(p, JT_PIPE)) {
        p->cur++;
        size_t at = p->cur;
        if (!is(p, JT_NAME)) return fail_at(p, at, "expected a filter name", NULL, 0);
        jinja_node *f = node_new(p, JN_FILTER, at);
        if (!f) return NULL;
        f->a = operand;
        f->str = p->toks[at].text;
        f->len = p->toks[at].len;
        p->cur++;
        if (is(p, JT_LPAREN)) {
            f->flag = true;
            if (parse_args(p, &f->body, false)) return NULL;
        }
        operand = f;
    }
    return operand;
}

static jinja_node *parse_test(parser *p)
{
    jinja_node *operand = parse_filter(p);
    while (operand && is_name(p, "is")) {
        p->cur++;
        jinja_node *t = node_new(p, JN_TEST, p->cur);
        if (!t) return NULL;
        if (is_name(p, "not")) {
            t->flag = true;
            p->cur++;
        }
        if (!is(p, JT_NAME)) return fail_at(p, p->cur, "expected a test name", NULL, 0);
        t->pos = p->toks[p->cur].pos;
        t->str = p->toks[p->cur].text;
        t->len = p->toks[p->cur].len;
        t->a = operand;
        p->cur++;
        if (is(p, JT_LPAREN)) {
            t->i = 1;
            if (parse_args(p, &t->body, false)) return NULL;
        }
        operand = t;
    }
    return operand;
}

static jinja_node *binary(parser *p, size_t at, enum jinja_op op, jinja_node *a, jinja_node *b)
{
    if (!a || !b) return NULL;
    jinja_node *n = node_new(p, JN_BINARY, at);
    if (!n) return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static enum jinja_op op_of(const jinja_token *t)
{
    static const struct { const char *s; enum jinja_op op; } ops[] = {
        {"+", JOP_ADD}, {"-", JOP_SUB}, {"~", JOP_CONCAT}, {"*", JOP_MUL}, {"/", JOP_DIV},
        {"//", JOP_FLOORDIV}, {"%", JOP_MOD}, {"**", JOP_POW}, {"==", JOP_EQ}, {"!=", JOP_NE},
        {"<", JOP_LT}, {">", JOP_GT}, {"<=", JOP_LE}, {">=", JOP_GE},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strlen(ops[i].s) == t->len && memcmp(ops[i].s, t->text, t->len) == 0) return ops[i].op;
    return JOP_NONE;
}

static jinja_node *parse_power(parser *p)
{
    jinja_node *left = parse_test(p);
    while (left && is(p, JT_POW)) {
        size_t at = p->cur++;
        left = binary(p, at, JOP_POW, left, parse_test(p));
    }
    return left;
}

static jinja_node *parse_mul(parser *p)
{
    jinja_node *left = parse_power(p);
    while (left && is(p, JT_MUL)) {
        size_t at = p->cur++;
        left = binary(p, at, op_of(&p->toks[at]), left, parse_power(p));
    }
    return left;
}

static jinja_node *parse_add(parser *p)
{
    jinja_node *left = parse_mul(p);
    while (left && is(p, JT_ADD)) {
        size_t at = p->cur++;
        left = binary(p, at, op_of(&p->toks[at]), left, parse_mul(p));
    }
    return left;
}

static jinja_node *parse_compare(parser *p)
{
    jinja_node *left = parse_add(p);
    while (left) {
        size_t at = p->cur;
        enum jinja_op op;
        if (is_name(p, "not") && is_name_at(p, p->cur + 1, "in")) {
            op = JOP_NOT_IN;
            p->cur += 2;
        } else if (is_name(p, "in")) {
            op = JOP_IN;
            p->cur++;
        } else if (is(p, JT_CMP)) {
            op = op_of(&p->toks[p->cur++]);
        } else {
            break;
        }
        left = binary(p, at, op, left, parse_add(p));
    }
    return left;
}

static jinja_node *parse_not(parser *p)
{
    if (!is_name(p, "not")) return parse_compare(p);
    jinja_node *n = node_new(p, JN_UNARY, p->cur);
    if (!n) return NULL;
    n->op = JOP_NOT;
    p->cur++;
    if (enter(p)) return NULL;
    n->a = parse_not(p);
    p->depth--;
    return n->a ? n : NULL;
}

static jinja_node *parse_and(parser *p)
{
    jinja_node *left = parse_not(p);
    while (left && is_name(p, "and")) {
        size_t at = p->cur++;
        left = binary(p, at, JOP_AND, left, parse_not(p));
    }
    return left;
}

static jinja_node *parse_or(parser *p)
{
    jinja_node *left = parse_and(p);
    while (left && is_name(p, "or")) {
        size_t at = p->cur++;
        left = binary(p, at, JOP_OR, left, parse_and(p));
    }
    return left;
}

static jinja_node *parse_if_expr(parser *p)
{
    jinja_node *a = parse_or(p);
    if (!a || !is_name(p, "if")) return a;
    size_t at = p->cur++;
    jinja_node *test = parse_or(p);
    if (!test) return NULL;
    if (is_name(p, "else")) {
        p->cur++;
        jinja_node *t = node_new(p, JN_TERNARY, at);
        if (!t) return NULL;
        t->a = test;
        t->b = a;
        if (enter(p)) return NULL;
        t->c = parse_if_expr(p);
        p->depth--;
        return t->c ? t : NULL;
    }
    jinja_node *s = node_new(p, JN_SELECT, at);
    if (!s) return NULL;
    s->a = a;
    s->b = test;
    return s;
}

static jinja_node *parse_expr(parser *p)
{
    if (enter(p)) return NULL;
    jinja_node *n = parse_if_expr(p);
    p->depth--;
    return n;
}

/* ---- statements ---- */

static const char *const end_set[] = {"endset", NULL};
static const char *const end_if[] = {"elif", "else", "endif", NULL};
static const char *const end_endif[] = {"endif", NULL};
static const char *const end_for[] = {"endfor", "else", NULL};
static const char *const end_endfor[] = {"endfor", NULL};
static const char *const end_macro[] = {"endmacro", NULL};
static const char *const end_filter[] = {"endfilter", NULL};

/* {% NAME %} closing a block. */
static int parse_end(parser *p, const char *name)
{
    if (expect(p, JT_OPEN_STMT, "'{%'") || expect_name(p, name) || expect(p, JT_CLOSE_STMT, "'%}'")) return -1;
    return 0;
}

static jinja_node *parse_set(parser *p, jinja_node *n)
{
    n->kind = JN_SET;
    if (!(n->a = parse_sequence(p, false))) return NULL;
    if (is(p, JT_EQUALS)) {
        p->cur++;
        if (!(n->b = parse_sequence(p, false))) return NULL;
    } else {
        n->flag = true;
        if (expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_set, &n->body)) return NULL;
        p->cur++;
        if (expect_name(p, "endset")) return NULL;
    }
    return expect(p, JT_CLOSE_STMT, "'%}'") ? NULL : n;
}

/* After `if` or `elif`: the test, the body and the elif/else chain (not the endif). */
static jinja_node *parse_if_chain(parser *p, jinja_node *n)
{
    n->kind = JN_IF;
    if (!(n->a = parse_expr(p)) || expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_if, &n->body)) return NULL;
    if (is_name_at(p, p->cur + 1, "elif")) {
        jinja_node *e = node_new(p, JN_IF, p->cur + 1);
        p->cur += 2;
        if (!e || enter(p)) return NULL;
        jinja_node *r = parse_if_chain(p, e);
        p->depth--;
        if (!r || nodes_push(p, &n->alt, r)) return NULL;
    } else if (is_name_at(p, p->cur + 1, "else")) {
        p->cur += 2;
        if (expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_endif, &n->alt)) return NULL;
    }
    return n;
}

static jinja_node *parse_for(parser *p, jinja_node *n)
{
    n->kind = JN_FOR;
    size_t at = p->cur;
    if (!(n->a = parse_sequence(p, true))) return NULL;
    if (n->a->kind != JN_NAME && n->a->kind != JN_TUPLE) return fail_at(p, at, "expected a loop variable", NULL, 0);
    if (expect_name(p, "in") || !(n->b = parse_expr(p)) || expect(p, JT_CLOSE_STMT, "'%}'")) return NULL;
    if (parse_until(p, end_for, &n->body)) return NULL;
    if (is_name_at(p, p->cur + 1, "else")) {
        p->cur += 2;
        if (expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_endfor, &n->alt)) return NULL;
    }
    return parse_end(p, "endfor") ? NULL : n;
}

static jinja_node *parse_macro(parser *p, jinja_node *n)
{
    n->kind = JN_MACRO;
    if (!is(p, JT_NAME)) return fail_at(p, p->cur, "expected a macro name", NULL, 0);
    n->str = p->toks[p->cur].text;
    n->len = p->toks[p->cur].len;
    p->cur++;
    if (parse_args(p, &n->alt, true) || expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_macro, &n->body)) return NULL;
    return parse_end(p, "endmacro") ? NULL : n;
}

static jinja_node *parse_filter_block(parser *p, jinja_node *n)
{
    n->kind = JN_FILTER_BLOCK;
    if (!is(p, JT_NAME)) return fail_at(p, p->cur, "expected a filter name", NULL, 0);
    jinja_node *f = node_new(p, JN_FILTER, p->cur);
    if (!f) return NULL;
    f->str = p->toks[p->cur].text;
    f->len = p->toks[p->cur].len;
    p->cur++;
    if (is(p, JT_LPAREN)) {
        f->flag = true;
        if (parse_args(p, &f->body, false)) return NULL;
    }
    n->b = f;
    if (expect(p, JT_CLOSE_STMT, "'%}'") || parse_until(p, end_filter, &n->body)) return NULL;
    return parse_end(p, "endfilter") ? NULL : n;
}

static jinja_node *parse_statement(parser *p)
{
    p->cur++;
    if (!is(p, JT_NAME)) return fail_at(p, p->cur, "expected a statement name", NULL, 0);
    const jinja_token *name = &p->toks[p->cur];
    jinja_node *n = node_new(p, JN_TEXT, p->cur);
    if (!n) return NULL;
    p->cur++;
    if (is_name_at(p, p->cur - 1, "set")) return parse_set(p, n);
    if (is_name_at(p, p->cur - 1, "if")) {
        if (!parse_if_chain(p, n) || parse_end(p, "endif")) return NULL;
        return n;
    }
    if (is_name_at(p, p->cur - 1, "for")) return parse_for(p, n);
    if (is_name_at(p, p->cur - 1, "macro")) return parse_macro(p, n);
    if (is_name_at(p, p->cur - 1, "filter")) return parse_filter_block(p, n);
    if (is_name_at(p, p->cur - 1, "break") || is_name_at(p, p->cur - 1, "continue")) {
        n->kind = is_name_at(p, p->cur - 1, "break") ? JN_BREAK : JN_CONTINUE;
        return expect(p, JT_CLOSE_STMT, "'%}'") ? NULL : n;
    }
    return fail_at(p, p->cur - 1, "unknown statement ", name->text, name->len);
}

static jinja_node *parse_any(parser *p)
{
    const jinja_token *t = &p->toks[p->cur];
    switch (t->type) {
    case JT_TEXT: {
        jinja_node *n = node_new(p, JN_TEXT, p->cur++);
        if (!n) return NULL;
        n->str = t->text;
        n->len = t->len;
        return n;
    }
    case JT_OPEN_STMT: {
        if (enter(p)) return NULL;
        jinja_node *n = parse_statement(p);
        p->depth--;
        return n;
    }
    case JT_OPEN_EXPR: {
        jinja_node *n = node_new(p, JN_OUTPUT, p->cur++);
        if (!n || !(n->a = parse_expr(p)) || expect(p, JT_CLOSE_EXPR, "'}}'")) return NULL;
        return n;
    }
    default: return fail_at(p, p->cur, "unexpected ", t->text, t->len);
    }
}

/* Statements until one of {% names %} (left unconsumed). */
static int parse_until(parser *p, const char *const *names, jinja_nodes *out)
{
    while (!is_statement(p, names)) {
        if (p->cur >= p->n) {
            /* the last name is the block's end tag */
            const char *const *last = names;
            while (last[1]) last++;
            dk_buf b = {0};
            dk_buf_printf(&b, "unexpected end of template, expected {%% %s %%}", *last);
            fail_at(p, p->cur, b.data ? b.data : "unexpected end of template", NULL, 0);
            dk_buf_free(&b);
            return -1;
        }
        if (is(p, JT_COMMENT)) {
            p->cur++;
            continue;
        }
        if (nodes_push(p, out, parse_any(p))) return -1;
    }
    return 0;
}

void jinja_program_free(jinja_program *program)
{
    if (!program) return;
    jinja_arena_free(&program->arena);
    dk_free(program);
}

int jinja_program_parse(jinja_program **out, const char *source, size_t n_source, char *err)
{
    *out = NULL;
    jinja_program *prog = dk_calloc(1, sizeof *prog);
    if (!prog) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    prog->arena.max_bytes = JINJA_MAX_SOURCE_BYTES * 64;
    char *copy = jinja_strndup(&prog->arena, source ? source : "", source ? n_source : 0);
    if (!copy) {
        jinja_program_free(prog);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    prog->source = copy;
    prog->n_source = source ? n_source : 0;
    jinja_tokens toks;
    int rc = jinja_lex(&prog->arena, prog->source, prog->n_source, &toks, err);
    if (rc) {
        jinja_program_free(prog);
        return rc;
    }
    parser p = {.prog = prog, .toks = toks.items, .n = toks.n, .err = err};
    while (p.cur < p.n && !p.rc) {
        if (is(&p, JT_COMMENT)) {
            p.cur++;
            continue;
        }
        nodes_push(&p, &prog->body, parse_any(&p));
    }
    if (p.rc) {
        jinja_program_free(prog);
        return p.rc;
    }
    *out = prog;
    return DK_OK;
}
