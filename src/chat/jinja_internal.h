/*
 * jinja_internal.h: the private interface between the parts of chat/'s Jinja interpreter
 * (jinja_lex.c: preprocessing and tokens; jinja_parse.c: the syntax tree; jinja_value.c:
 * values, printing, JSON; jinja.c: evaluation; jinja_filters.c: filters, tests, methods and
 * global functions). template.c wraps it as the chat_template_* functions of chat.h.
 *
 * The semantics are those of @huggingface/jinja (the renderer of Hugging Face's JavaScript
 * libraries) with trim_blocks and lstrip_blocks, including its departures from Python jinja2
 * (null prints nothing, true prints "true", string strip methods ignore their argument, a
 * `break` drops the output of its own iteration, ...), so that prompts are byte for byte
 * those of apply_chat_template there. Filters it lacks (count, d, e, round, select, ...) are
 * added with jinja2's meaning.
 *
 * Memory: everything a parse or a render makes comes from a jinja_arena (chunks from
 * dk_malloc, freed together), so values are plain structs holding borrowed pointers and no
 * reference counting or cycle collection is needed. An arena has a byte limit: a template
 * that builds too much fails with DK_ERR_LIMIT instead of exhausting memory.
 * Not for: anything outside chat/; nothing here is part of the public interface.
 */
#ifndef DK_CHAT_JINJA_INTERNAL_H
#define DK_CHAT_JINJA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"

/* ---- limits: what a hostile template can make the renderer do ---- */
#define JINJA_MAX_SOURCE_BYTES ((size_t)4 << 20)   /* template source */
#define JINJA_MAX_PARSE_DEPTH 200                   /* nesting of expressions and blocks */
#define JINJA_MAX_CALL_DEPTH 100                    /* macro calls inside macro calls */
#define JINJA_MAX_ITERATIONS 200000                 /* loop iterations (and range() items) */
#define JINJA_MAX_WORK ((size_t)100 << 20)             /* sort comparisons and the like */
#define JINJA_MAX_OUTPUT_BYTES ((size_t)64 << 20)   /* rendered text */
#define JINJA_MAX_RENDER_BYTES ((size_t)512 << 20)  /* arena of one render */

/* ---- arena ---- */
typedef struct jinja_chunk jinja_chunk;
typedef struct jinja_arena {
    jinja_chunk *head;
    size_t n_bytes;     /* allocated so far */
    size_t max_bytes;   /* limit; 0: none */
    bool over_limit;    /* the last failure was the limit, not malloc */
} jinja_arena;

/* n_bytes of 16-aligned memory, or NULL (malloc failure or over the limit). Never freed alone. */
void *jinja_alloc(jinja_arena *arena, size_t n_bytes);
char *jinja_strndup(jinja_arena *arena, const char *s, size_t n); /* NUL-terminated copy */
void jinja_arena_free(jinja_arena *arena);                         /* all of it; zeroed after */

/* ---- source positions ---- */
/* Writes "line L, column C: " for byte offset pos of source into b (columns count code points). */
void jinja_pos_format(const char *source, size_t n_source, size_t pos, dk_buf *b);

/* ---- tokens (jinja_lex.c) ---- */
enum jinja_tok {
    JT_TEXT, JT_COMMENT, JT_NUMBER, JT_STRING, JT_NAME,
    JT_OPEN_STMT, JT_CLOSE_STMT, JT_OPEN_EXPR, JT_CLOSE_EXPR,
    JT_LPAREN, JT_RPAREN, JT_LBRACE, JT_RBRACE, JT_LBRACKET, JT_RBRACKET,
    JT_COMMA, JT_DOT, JT_COLON, JT_PIPE, JT_EQUALS,
    JT_ADD,     /* + - ~ (binary) */
    JT_MUL,     /* * / // % */
    JT_POW,     /* ** */
    JT_CMP,     /* < > <= >= == != */
    JT_UNARY,   /* + - before an operand */
};

typedef struct jinja_token {
    enum jinja_tok type;
    const char *text; /* the token's text (strings: decoded), in the lexer's buffers */
    size_t len;
    size_t pos;       /* byte offset in the original source */
} jinja_token;

typedef struct jinja_tokens {
    jinja_token *items;
    size_t n;
} jinja_tokens;

/* Tokenizes source as @huggingface/jinja does (trailing newline, lstrip_blocks, trim_blocks,
 * generation tags, whitespace control). Everything lives in arena. DK_ERR_FORMAT with a
 * positioned message, DK_ERR_NOMEM. */
int jinja_lex(jinja_arena *arena, const char *source, size_t n_source, jinja_tokens *out, char *err);

/* ---- syntax tree (jinja_parse.c) ---- */
enum jinja_node_kind {
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_MACRO, JN_BREAK, JN_CONTINUE, JN_FILTER_BLOCK,
    JN_CALL_BLOCK,
    /* expressions */
    JN_INT, JN_FLOAT, JN_STR, JN_NAME, JN_LIST, JN_TUPLE, JN_DICT,
    JN_UNARY, JN_BINARY, JN_MEMBER, JN_SLICE, JN_CALL, JN_KWARG, JN_FILTER, JN_TEST,
    JN_TERNARY, JN_SELECT,
};

enum jinja_op {
    JOP_NONE, JOP_ADD, JOP_SUB, JOP_CONCAT, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW,
    JOP_EQ, JOP_NE, JOP_LT, JOP_GT, JOP_LE, JOP_GE, JOP_IN, JOP_NOT_IN, JOP_AND, JOP_OR,
    JOP_NOT, JOP_NEG, JOP_POS,
};

typedef struct jinja_node jinja_node;
typedef struct jinja_nodes {
    jinja_node **items;
    size_t n;
} jinja_nodes;

/* One node; which fields mean what depends on kind (see jinja_parse.c's constructors):
 * a, b, c: operands / test, iterable, condition / slice start, stop, step; body and alt: the
 * statements of a block and of its else branch, or the elements, arguments and parameters. */
struct jinja_node {
    enum jinja_node_kind kind;
    enum jinja_op op;
    bool flag;          /* MEMBER: computed ([x]); TEST: negated; SET: block form */
    size_t pos;         /* byte offset of the node's first token in the source */
    const char *str;    /* NAME, STR, TEXT, KWARG name, FILTER/TEST name, MACRO name */
    size_t len;
    int64_t i;
    double f;
    jinja_node *a, *b, *c;
    jinja_nodes body, alt;
};

typedef struct jinja_program {
    jinja_arena arena;  /* owns every node and token */
    const char *source; /* copy of the source (for error positions) */
    size_t n_source;
    jinja_nodes body;
} jinja_program;

/* Parses source into *out (caller frees with jinja_program_free). */
int jinja_program_parse(jinja_program **out, const char *source, size_t n_source, char *err);
void jinja_program_free(jinja_program *program); /* NULL is fine */

/* ---- values (jinja_value.c) ---- */
enum jinja_type {
    JV_UNDEFINED, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STRING, JV_ARRAY, JV_OBJECT,
    JV_NAMESPACE, JV_FUNC,
};

typedef struct jinja_list jinja_list;
typedef struct jinja_dict jinja_dict;
typedef struct jinja_func jinja_func;

typedef struct jinja_value {
    enum jinja_type type;
    bool is_tuple;      /* ARRAY made by a tuple literal (unpacking rejects it, as HF does) */
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s; /* not NUL-terminated; borrowed */
        jinja_list *list;
        jinja_dict *dict;   /* OBJECT and NAMESPACE */
        jinja_func *fn;
    } u;
} jinja_value;

struct jinja_list {
    jinja_value *items;
    size_t n, cap;
};

typedef struct jinja_slice {
    const char *p;
    size_t n;
} jinja_slice;

struct jinja_dict {
    jinja_slice *keys;
    jinja_value *values;
    size_t n, cap;
};

enum jinja_func_kind { JF_BUILTIN, JF_METHOD, JF_MACRO };
struct jinja_func {
    enum jinja_func_kind kind;
    int id;                    /* BUILTIN, METHOD: which one (jinja_filters.c) */
    jinja_value self;          /* METHOD: the receiver */
    const jinja_node *macro;   /* MACRO: its definition */
};

static inline jinja_value jinja_undef(void) { jinja_value v = {.type = JV_UNDEFINED}; return v; }
static inline jinja_value jinja_none(void) { jinja_value v = {.type = JV_NONE}; return v; }
static inline jinja_value jinja_bool(bool b) { jinja_value v = {.type = JV_BOOL, .u.b = b}; return v; }
static inline jinja_value jinja_int(int64_t i) { jinja_value v = {.type = JV_INT, .u.i = i}; return v; }
static inline jinja_value jinja_float(double f) { jinja_value v = {.type = JV_FLOAT, .u.f = f}; return v; }
static inline jinja_value jinja_str(const char *p, size_t n)
{
    jinja_value v = {.type = JV_STRING};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline bool jinja_is_num(jinja_value v) { return v.type == JV_INT || v.type == JV_FLOAT; }
static inline bool jinja_is_dict(jinja_value v) { return v.type == JV_OBJECT || v.type == JV_NAMESPACE; }
static inline double jinja_num(jinja_value v)
{
    return v.type == JV_INT ? (double)v.u.i : v.type == JV_FLOAT ? v.u.f : v.type == JV_BOOL ? (double)v.u.b : 0.0;
}

/* Containers in arena; NULL on allocation failure. */
jinja_list *jinja_list_new(jinja_arena *arena, size_t cap);
int jinja_list_push(jinja_arena *arena, jinja_list *list, jinja_value v);
jinja_dict *jinja_dict_new(jinja_arena *arena, size_t cap);
/* Sets key (borrowed: it must outlive the arena's values) to v, keeping first-insertion order. */
int jinja_dict_set(jinja_arena *arena, jinja_dict *dict, const char *key, size_t key_len, jinja_value v);
const jinja_value *jinja_dict_get(const jinja_dict *dict, const char *key, size_t key_len);
static inline jinja_value jinja_list_value(jinja_list *l) { jinja_value v = {.type = JV_ARRAY, .u.list = l}; return v; }
static inline jinja_value jinja_dict_value(jinja_dict *d) { jinja_value v = {.type = JV_OBJECT, .u.dict = d}; return v; }

/* Converts a jansson value as JavaScript's JSON.parse + @huggingface/jinja would see it
 * (integral reals become integers; array-index keys come first, ascending). Strings are
 * borrowed from json. */
int jinja_from_json(jinja_arena *arena, const json_t *json, jinja_value *out);

bool jinja_truthy(jinja_value v);
/* `==` as @huggingface/jinja does it (JavaScript's loose equality of the underlying values:
 * null == undefined, 1 == 1.0 == true, "1" == 1; containers by identity). */
bool jinja_loose_eq(jinja_value a, jinja_value b);
/* JavaScript's === of the underlying values (membership tests, unique, equalto). */
bool jinja_strict_eq(jinja_value a, jinja_value b);

/* Text of a value as {{ v }} prints it (HF's toString: 1.0 -> "1.0", true -> "true", lists
 * and dicts as JSON with undefined kept). Undefined and none are handled by the caller. */
int jinja_print(jinja_value v, dk_buf *b);
/* Text of the underlying JavaScript value (what `~` and string `+` use: 1.0 -> "1"). */
int jinja_js_string(jinja_value v, dk_buf *b);
/* A double as JavaScript's Number.prototype.toString writes it. */
void jinja_js_number(double d, dk_buf *b);

typedef struct jinja_json_opts {
    int indent;               /* 0: single line */
    bool ensure_ascii;
    bool sort_keys;
    const char *item_sep, *key_sep; /* NULL: ", " (or "," when indenting) and ": " */
    size_t item_sep_len, key_sep_len;
    bool undefined_as_null;   /* tojson: true; printing: false ("undefined") */
} jinja_json_opts;

/* JSON text as HF's toJSON writes it. DK_ERR_FORMAT (message in err) for a function value. */
int jinja_to_json(jinja_value v, const jinja_json_opts *opts, int depth, dk_buf *b, char *err);

/* ---- UTF-8 and JavaScript string helpers (jinja_value.c) ---- */
/* Decodes one code point at s[*i] (invalid bytes decode as themselves, one at a time). */
uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i);
void jinja_utf8_put(dk_buf *b, uint32_t cp);
size_t jinja_utf8_count(const char *s, size_t n);
bool jinja_js_space(uint32_t cp); /* JavaScript's \s / String.prototype.trim */
/* Trims JavaScript whitespace: which & 1 the start, which & 2 the end. */
jinja_slice jinja_js_trim(const char *s, size_t n, int which);

/* ---- evaluation (jinja.c) ---- */
typedef struct jinja_scope jinja_scope;

typedef struct jinja_ctx {
    const jinja_program *program;
    jinja_arena arena;        /* everything the render makes */
    dk_buf *out;              /* where text goes now (swapped while capturing) */
    char *err;
    size_t n_iterations;      /* loop iterations so far (JINJA_MAX_ITERATIONS) */
    size_t n_work;            /* comparisons of sort/unique and the like (JINJA_MAX_WORK) */
    int call_depth;
    jinja_scope *globals;
    jinja_scope *scope;       /* the scope being evaluated (a macro's scope's parent) */
} jinja_ctx;

/* Charges n units of work (sort comparisons, ...); DK_ERR_LIMIT past JINJA_MAX_WORK. */
int jinja_work(jinja_ctx *ctx, size_t pos, size_t n);
/* Short English name of a value's type for messages ("string", "list", ...). */
const char *jinja_type_name(jinja_value v);

/* Writes "line L, column C: message" into ctx->err and returns code. */
int jinja_error(jinja_ctx *ctx, int code, size_t pos, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The error of a failed allocation (DK_ERR_NOMEM, or DK_ERR_LIMIT when the arena is full). */
int jinja_nomem(jinja_ctx *ctx, size_t pos);

/* Evaluated arguments of a call. */
typedef struct jinja_args {
    jinja_value *pos;
    size_t n_pos;
    jinja_slice *kw_names;
    jinja_value *kw_values;
    size_t n_kw;
} jinja_args;
const jinja_value *jinja_args_kw(const jinja_args *args, const char *name);

/* Copies s[0..n) into the render arena as a string value. */
int jinja_new_str(jinja_ctx *ctx, size_t pos, const char *s, size_t n, jinja_value *out);
/* Takes b's text into the arena (b is freed). */
int jinja_buf_str(jinja_ctx *ctx, size_t pos, dk_buf *b, jinja_value *out);
int jinja_call(jinja_ctx *ctx, const jinja_node *at, jinja_value fn, const jinja_args *args, jinja_value *out);
/* Runs a program with the variables of vars (an object; may be NULL). Appends to out. */
int jinja_render(const jinja_program *program, const jinja_dict *vars, jinja_ctx *ctx);
int jinja_ctx_init(jinja_ctx *ctx, const jinja_program *program, dk_buf *out, char *err);
void jinja_ctx_free(jinja_ctx *ctx);

/* ---- builtins (jinja_filters.c) ---- */
/* Applies filter `name` (args: NULL when written without parentheses) to v. */
int jinja_filter(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t name_len, jinja_value v,
                 const jinja_args *args, jinja_value *out);
/* Runs test `name`; args may be NULL. */
int jinja_test(jinja_ctx *ctx, const jinja_node *at, const char *name, size_t name_len, jinja_value v,
               const jinja_args *args, bool *out);
/* obj.name where obj has no such key: a bound method or builtin property, or undefined. */
int jinja_builtin_attr(jinja_ctx *ctx, const jinja_node *at, jinja_value obj, const char *name, size_t len,
                       jinja_value *out);
/* Calls a builtin function or method (fn->kind JF_BUILTIN or JF_METHOD). */
int jinja_call_builtin(jinja_ctx *ctx, const jinja_node *at, const jinja_func *fn, const jinja_args *args,
                       jinja_value *out);
/* Defines the global functions (namespace, range, raise_exception, strftime_now, dict) in d. */
int jinja_define_globals(jinja_ctx *ctx, jinja_dict *d);
/* Orders values for sort / dictsort as HF does; DK_ERR_FORMAT for incomparable types. */
int jinja_compare(jinja_ctx *ctx, const jinja_node *at, jinja_value a, jinja_value b, bool case_sensitive, int *out);

#endif
