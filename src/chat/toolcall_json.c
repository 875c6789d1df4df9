/*
 * toolcall_json.c: the JSON side of tool-call parsing: an incremental syntax checker that
 * finds the end of an object or array in streamed text, the call shapes model families write
 * (turned into chat_parser_tool_calls' objects), and Llama 3.1's `name.call(k=v)` form.
 *
 * The checker only decides where a value ends and whether it can still be JSON; the value
 * itself is then parsed by jansson, which also rejects what the checker lets through (invalid
 * UTF-8, lone surrogates), so the checker never has to be the last word on validity.
 * Not for: deciding where calls may start (toolcall.c).
 */
#include "chat/toolcall_internal.h"

#include <stdio.h>
#include <string.h>

#include "base/base.h"

/* ---- incremental JSON checker ---- */

enum jscan_state {
    JS_VALUE,     /* a value is expected (whitespace first is fine) */
    JS_OBJ_FIRST, /* after '{': a key or '}' */
    JS_OBJ_KEY,   /* after ',' in an object: a key */
    JS_COLON,     /* after a key */
    JS_OBJ_NEXT,  /* after a member: ',' or '}' */
    JS_ARR_FIRST, /* after '[': a value or ']' */
    JS_ARR_NEXT,  /* after an element: ',' or ']' */
    JS_STR,
    JS_STR_ESC,
    JS_STR_HEX,
    JS_NUM_MINUS, /* '-' read: a digit must follow */
    JS_NUM_ZERO,  /* a leading 0: no more integer digits */
    JS_NUM_INT,
    JS_NUM_DOT,   /* '.' read: a digit must follow */
    JS_NUM_FRAC,
    JS_NUM_E,     /* 'e' read: sign or digit */
    JS_NUM_ESIGN, /* sign read: a digit must follow */
    JS_NUM_EXP,
    JS_LIT,       /* inside true / false / null */
    JS_DONE,
};

void toolcall_jscan_init(toolcall_jscan *scan)
{
    scan->state = JS_VALUE;
    scan->in_key = 0;
    scan->n_hex = 0;
    scan->lit_pos = 0;
    scan->lit = NULL;
    scan->depth = 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* A value has ended: the enclosing container decides what comes next. */
static int jscan_value_end(toolcall_jscan *s)
{
    if (s->depth == 0) {
        s->state = JS_DONE;
        return TOOLCALL_DONE;
    }
    s->state = s->stack[s->depth - 1] == '{' ? JS_OBJ_NEXT : JS_ARR_NEXT;
    return TOOLCALL_MORE;
}

static int jscan_open(toolcall_jscan *s, char c)
{
    if (s->depth >= TOOLCALL_JSON_MAX_DEPTH) return TOOLCALL_BAD;
    s->stack[s->depth++] = (uint8_t)c;
    s->state = c == '{' ? JS_OBJ_FIRST : JS_ARR_FIRST;
    return TOOLCALL_MORE;
}

static int jscan_close(toolcall_jscan *s)
{
    s->depth--;
    return jscan_value_end(s);
}

/* c is the first byte of a value. */
static int jscan_start_value(toolcall_jscan *s, char c)
{
    if (s->depth == 0 && c != '{' && c != '[') return TOOLCALL_BAD; /* calls are containers */
    switch (c) {
    case '{':
    case '[': return jscan_open(s, c);
    case '"': s->state = JS_STR; s->in_key = 0; return TOOLCALL_MORE;
    case '-': s->state = JS_NUM_MINUS; return TOOLCALL_MORE;
    case '0': s->state = JS_NUM_ZERO; return TOOLCALL_MORE;
    case 't': s->lit = "true"; break;
    case 'f': s->lit = "false"; break;
    case 'n': s->lit = "null"; break;
    default:
        if (c >= '1' && c <= '9') {
            s->state = JS_NUM_INT;
            return TOOLCALL_MORE;
        }
        return TOOLCALL_BAD;
    }
    s->state = JS_LIT;
    s->lit_pos = 1;
    return TOOLCALL_MORE;
}

/* The structural states (between tokens). *reprocess is never set here. */
static int jscan_structural(toolcall_jscan *s, char c)
{
    if (toolcall_is_space(c)) return TOOLCALL_MORE;
    switch (s->state) {
    case JS_VALUE: return jscan_start_value(s, c);
    case JS_OBJ_FIRST:
        if (c == '}') return jscan_close(s);
        /* fall through */
    case JS_OBJ_KEY:
        if (c != '"') return TOOLCALL_BAD;
        s->state = JS_STR;
        s->in_key = 1;
        return TOOLCALL_MORE;
    case JS_COLON:
        if (c != ':') return TOOLCALL_BAD;
        s->state = JS_VALUE;
        return TOOLCALL_MORE;
    case JS_OBJ_NEXT:
        if (c == ',') { s->state = JS_OBJ_KEY; return TOOLCALL_MORE; }
        return c == '}' ? jscan_close(s) : TOOLCALL_BAD;
    case JS_ARR_FIRST:
        if (c == ']') return jscan_close(s);
        return jscan_start_value(s, c);
    case JS_ARR_NEXT:
        if (c == ',') { s->state = JS_VALUE; return TOOLCALL_MORE; }
        return c == ']' ? jscan_close(s) : TOOLCALL_BAD;
    default: return TOOLCALL_BAD;
    }
}

static int jscan_string(toolcall_jscan *s, char c)
{
    switch (s->state) {
    case JS_STR:
        if (c == '"') {
            if (s->in_key) {
                s->state = JS_COLON;
                return TOOLCALL_MORE;
            }
            return jscan_value_end(s);
        }
        if (c == '\\') s->state = JS_STR_ESC;
        else if ((unsigned char)c < 0x20) return TOOLCALL_BAD;
        return TOOLCALL_MORE;
    case JS_STR_ESC:
        if (c == 'u') {
            s->state = JS_STR_HEX;
            s->n_hex = 4;
            return TOOLCALL_MORE;
        }
        if (!strchr("\"\\/bfnrt", c) || c == 0) return TOOLCALL_BAD;
        s->state = JS_STR;
        return TOOLCALL_MORE;
    default: /* JS_STR_HEX */
        if (!is_hex(c)) return TOOLCALL_BAD;
        if (--s->n_hex == 0) s->state = JS_STR;
        return TOOLCALL_MORE;
    }
}

/* Numbers end at the first byte that cannot continue them, which is then read again by the
 * container (*reprocess). */
static int jscan_number(toolcall_jscan *s, char c, bool *reprocess)
{
    bool digit = is_digit(c);
    switch (s->state) {
    case JS_NUM_MINUS:
        if (!digit) return TOOLCALL_BAD;
        s->state = c == '0' ? JS_NUM_ZERO : JS_NUM_INT;
        return TOOLCALL_MORE;
    case JS_NUM_DOT:
        if (!digit) return TOOLCALL_BAD;
        s->state = JS_NUM_FRAC;
        return TOOLCALL_MORE;
    case JS_NUM_E:
        if (c == '+' || c == '-') { s->state = JS_NUM_ESIGN; return TOOLCALL_MORE; }
        /* fall through */
    case JS_NUM_ESIGN:
        if (!digit) return TOOLCALL_BAD;
        s->state = JS_NUM_EXP;
        return TOOLCALL_MORE;
    default: break;
    }
    /* JS_NUM_ZERO, JS_NUM_INT, JS_NUM_FRAC, JS_NUM_EXP: the number may end here */
    if (digit && s->state != JS_NUM_ZERO) return TOOLCALL_MORE;
    if (c == '.' && (s->state == JS_NUM_ZERO || s->state == JS_NUM_INT)) {
        s->state = JS_NUM_DOT;
        return TOOLCALL_MORE;
    }
    if ((c == 'e' || c == 'E') && s->state != JS_NUM_EXP) {
        s->state = JS_NUM_E;
        return TOOLCALL_MORE;
    }
    if (digit) return TOOLCALL_BAD; /* 01 */
    *reprocess = true;
    return jscan_value_end(s); /* depth > 0: numbers are never the whole value */
}

static int jscan_byte(toolcall_jscan *s, char c, bool *reprocess)
{
    switch (s->state) {
    case JS_STR:
    case JS_STR_ESC:
    case JS_STR_HEX: return jscan_string(s, c);
    case JS_NUM_MINUS:
    case JS_NUM_ZERO:
    case JS_NUM_INT:
    case JS_NUM_DOT:
    case JS_NUM_FRAC:
    case JS_NUM_E:
    case JS_NUM_ESIGN:
    case JS_NUM_EXP: return jscan_number(s, c, reprocess);
    case JS_LIT:
        if (c != s->lit[s->lit_pos]) return TOOLCALL_BAD;
        if (s->lit[++s->lit_pos] == 0) return jscan_value_end(s);
        return TOOLCALL_MORE;
    case JS_DONE: return TOOLCALL_BAD;
    default: return jscan_structural(s, c);
    }
}

int toolcall_jscan_feed(toolcall_jscan *scan, const char *data, size_t n, size_t *used)
{
    size_t i = 0;
    while (i < n) {
        bool reprocess = false;
        int r = jscan_byte(scan, data[i], &reprocess);
        if (r == TOOLCALL_BAD) {
            *used = i;
            return TOOLCALL_BAD;
        }
        if (!reprocess) i++;
        if (r == TOOLCALL_DONE) {
            *used = i;
            return TOOLCALL_DONE;
        }
    }
    *used = n;
    return TOOLCALL_MORE;
}

/* ---- call shapes ---- */

json_t *toolcall_call_new(const char *name, json_t *arguments, const char *id, size_t index)
{
    char fallback[32];
    if (!id || !*id) {
        snprintf(fallback, sizeof fallback, "call_%zu", index);
        id = fallback;
    }
    /* json_object_set_new takes the reference it is given, also when it fails */
    json_t *fn = json_object();
    if (!fn) {
        json_decref(arguments);
        return NULL;
    }
    if (json_object_set_new(fn, "name", json_string(name)) || json_object_set_new(fn, "arguments", arguments)) {
        if (!json_object_get(fn, "name")) json_decref(arguments);
        json_decref(fn);
        return NULL;
    }
    json_t *call = json_object();
    if (!call || json_object_set_new(call, "id", json_string(id)) ||
        json_object_set_new(call, "type", json_string("function"))) {
        json_decref(call);
        json_decref(fn);
        return NULL;
    }
    if (json_object_set_new(call, "function", fn)) {
        json_decref(call);
        return NULL;
    }
    return call;
}

static bool only_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!toolcall_is_space(s[i])) return false;
    return true;
}

/* The arguments as a new object reference: an object, a string holding one (or nothing), or
 * absent/null where the shape allows it. NULL with *bad when it is none of those. */
static json_t *arguments_object(const json_t *args, const toolcall_shape *shape, bool *bad)
{
    *bad = false;
    if (json_is_object(args)) return json_deep_copy(args);
    if (json_is_string(args)) {
        const char *s = json_string_value(args);
        size_t n = json_string_length(args);
        if (only_space(s, n)) return json_object();
        json_t *v = json_loadb(s, n, 0, NULL);
        if (json_is_object(v)) return v;
        json_decref(v);
    } else if ((!args || json_is_null(args)) && shape->allow_no_arguments) {
        return json_object();
    }
    *bad = true;
    return NULL;
}

/* One call object, possibly wrapped as {"type":"function","function":{...},"id":...}. */
static int call_from_object(const json_t *obj, const toolcall_shape *shape, size_t index, json_t **out)
{
    if (!json_is_object(obj)) return -1;
    const json_t *fn = obj;
    const json_t *id = json_object_get(obj, "id");
    const json_t *inner = json_object_get(obj, "function");
    if (json_is_object(inner)) {
        fn = inner;
        if (!json_is_string(id)) id = json_object_get(inner, "id");
    }
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_string(name) || json_string_length(name) == 0) return -1;
    const json_t *args = json_object_get(fn, "arguments");
    if (!args) args = json_object_get(fn, "parameters");
    bool bad;
    json_t *arguments = arguments_object(args, shape, &bad);
    if (bad) return -1;
    if (!arguments) return -2;
    *out = toolcall_call_new(json_string_value(name), arguments, json_string_value(id), index);
    return *out ? 0 : -2;
}

/* A non-empty array of call objects into calls (all of them or none). */
static int calls_from_array(const json_t *array, const toolcall_shape *shape, size_t first_index, json_t *calls)
{
    size_t n = json_array_size(array);
    if (n == 0) return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *call;
        int rc = call_from_object(json_array_get(array, i), shape, first_index + i, &call);
        if (rc == 0 && json_array_append_new(calls, call)) rc = -2;
        if (rc != 0) return rc;
    }
    return 0;
}

int toolcall_calls_from_json(const json_t *value, const toolcall_shape *shape, size_t first_index, json_t *out)
{
    json_t *calls = json_array();
    if (!calls) return -2;
    int rc;
    const json_t *wrapped = json_object_get(value, "tool_calls");
    if (json_is_array(value)) rc = calls_from_array(value, shape, first_index, calls);
    else if (json_is_array(wrapped) && !json_object_get(value, "name")) rc = calls_from_array(wrapped, shape, first_index, calls);
    else {
        json_t *call;
        rc = call_from_object(value, shape, first_index, &call);
        if (rc == 0 && json_array_append_new(calls, call)) rc = -2;
    }
    if (rc == 0 && json_array_extend(out, calls)) rc = -2;
    json_decref(calls);
    return rc;
}

/* ---- Python-style calls: Llama 3.1's name.call(key="value"), Gemma's name(key="value") ---- */

typedef struct cursor {
    const char *s;
    size_t n, pos;
    bool more; /* ran out of bytes: the text may still become valid */
} cursor;

static bool cur_peek(cursor *c, char *ch)
{
    if (c->pos >= c->n) {
        c->more = true;
        return false;
    }
    *ch = c->s[c->pos];
    return true;
}

static void cur_skip_space(cursor *c)
{
    while (c->pos < c->n && toolcall_is_space(c->s[c->pos])) c->pos++;
}

static bool is_ident(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && is_digit(c));
}

/* An identifier of at most 128 bytes; [start, pos) is it. */
static bool cur_ident(cursor *c, size_t *start)
{
    char ch;
    *start = c->pos;
    if (!cur_peek(c, &ch) || !is_ident(ch, true)) return false;
    while (cur_peek(c, &ch) && is_ident(ch, false)) {
        if (++c->pos - *start > 128) {
            c->more = false;
            return false;
        }
    }
    return !c->more || c->pos < c->n;
}

static bool cur_literal(cursor *c, const char *lit)
{
    for (; *lit; lit++) {
        char ch;
        if (!cur_peek(c, &ch) || ch != *lit) return false;
        c->pos++;
    }
    return true;
}

/* Appends code point cp as UTF-8. */
static void put_utf8(dk_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else { u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[2] = (char)(0x80 | (cp & 0x3F)); n = 3; }
    dk_buf_append(b, u, n);
}

/* n_digits hex digits as a code point; false if they are not hex or name a surrogate. */
static bool cur_hex(cursor *c, int n_digits, uint32_t *cp)
{
    *cp = 0;
    for (int i = 0; i < n_digits; i++) {
        char ch;
        if (!cur_peek(c, &ch) || !is_hex(ch)) return false;
        c->pos++;
        *cp = *cp * 16 + (uint32_t)(is_digit(ch) ? ch - '0' : (ch | 0x20) - 'a' + 10);
    }
    return *cp < 0xD800 || *cp > 0xDFFF;
}

/* The escape after a backslash, as Python reads it (unknown ones keep their backslash). */
static bool cur_escape(cursor *c, dk_buf *b)
{
    char ch;
    if (!cur_peek(c, &ch)) return false;
    c->pos++;
    uint32_t cp;
    switch (ch) {
    case 'n': dk_buf_putc(b, '\n'); return true;
    case 't': dk_buf_putc(b, '\t'); return true;
    case 'r': dk_buf_putc(b, '\r'); return true;
    case '\\': case '\'': case '"': dk_buf_putc(b, ch); return true;
    case 'x': if (!cur_hex(c, 2, &cp)) return false; put_utf8(b, cp); return true;
    case 'u': if (!cur_hex(c, 4, &cp)) return false; put_utf8(b, cp); return true;
    default: dk_buf_putc(b, '\\'); dk_buf_putc(b, ch); return true;
    }
}

/* A '...' or "..." literal on one line. */
static json_t *cur_string(cursor *c, bool *nomem)
{
    char quote;
    cur_peek(c, &quote);
    c->pos++;
    dk_buf b = {0};
    json_t *v = NULL;
    for (;;) {
        char ch;
        if (!cur_peek(c, &ch) || ch == '\n') break;
        c->pos++;
        if (ch == quote) {
            if (b.failed) { *nomem = true; break; }
            v = json_stringn(b.data ? b.data : "", b.len); /* NULL for invalid UTF-8 too */
            break;
        }
        if (ch == '\\') {
            if (!cur_escape(c, &b)) break;
        } else {
            dk_buf_putc(&b, ch);
        }
    }
    dk_buf_free(&b);
    return v;
}

static json_t *cur_number(cursor *c)
{
    size_t start = c->pos;
    char ch;
    while (cur_peek(c, &ch) && (is_digit(ch) || strchr("+-.eE", ch))) {
        if (++c->pos - start > 64) return NULL;
    }
    if (c->more) return NULL;
    if (c->s[start] == '+') start++;
    json_t *v = json_loadb(c->s + start, c->pos - start, JSON_DECODE_ANY, NULL);
    if (!json_is_number(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static json_t *cur_value(cursor *c, bool *nomem)
{
    char ch;
    if (!cur_peek(c, &ch)) return NULL;
    if (ch == '"' || ch == '\'') return cur_string(c, nomem);
    if (is_digit(ch) || ch == '-' || ch == '+') return cur_number(c);
    size_t start;
    if (!cur_ident(c, &start)) return NULL;
    size_t len = c->pos - start;
    if (len == 4 && memcmp(c->s + start, "True", 4) == 0) return json_true();
    if (len == 5 && memcmp(c->s + start, "False", 5) == 0) return json_false();
    if (len == 4 && memcmp(c->s + start, "None", 4) == 0) return json_null();
    return NULL;
}

/* key=value pairs up to and including ')'. */
static bool cur_kwargs(cursor *c, json_t *args, bool *nomem)
{
    for (;;) {
        char ch;
        cur_skip_space(c);
        if (!cur_peek(c, &ch)) return false;
        if (ch == ')') {
            c->pos++;
            return true;
        }
        size_t key;
        if (!cur_ident(c, &key)) return false;
        size_t key_len = c->pos - key;
        cur_skip_space(c);
        if (!cur_literal(c, "=")) return false;
        cur_skip_space(c);
        json_t *v = cur_value(c, nomem);
        if (!v) return false;
        char *k = dk_strndup(c->s + key, key_len);
        if (!k) json_decref(v); /* json_object_set_new takes v only when it is called */
        if (!k || json_object_set_new(args, k, v)) {
            dk_free(k);
            *nomem = true;
            return false;
        }
        dk_free(k);
        cur_skip_space(c);
        if (!cur_peek(c, &ch)) return false;
        if (ch == ',') c->pos++;
        else if (ch != ')') return false;
    }
}

/* name.call(kwargs) (dot_call) or name(kwargs); *name and *name_len locate the name. */
static bool cur_call(cursor *c, bool dot_call, size_t *name, size_t *name_len, json_t *args, bool *nomem)
{
    if (!cur_ident(c, name)) return false;
    *name_len = c->pos - *name;
    if (!cur_literal(c, dot_call ? ".call(" : "(")) return false;
    return cur_kwargs(c, args, nomem);
}

int toolcall_builtin_parse(const char *data, size_t n, bool eof, bool dot_call, size_t *end, char **name_out,
                           json_t **args_out, bool *nomem)
{
    cursor c = {data, n, 0, false};
    *nomem = false;
    size_t name = 0, name_len = 0;
    json_t *args = json_object();
    bool ok = args != NULL;
    if (!args) *nomem = true;
    if (ok && !dot_call && n >= 6 && memcmp(data, "print(", 6) == 0) {
        /* Gemma's tool_code examples wrap the call: print(name(kwargs)) */
        c.pos = 6;
        cur_skip_space(&c);
        ok = cur_call(&c, false, &name, &name_len, args, nomem);
        cur_skip_space(&c);
        ok = ok && cur_literal(&c, ")");
    } else if (ok) {
        ok = cur_call(&c, dot_call, &name, &name_len, args, nomem);
    }
    if (!ok) {
        json_decref(args);
        return c.more && !eof && !*nomem ? TOOLCALL_MORE : TOOLCALL_BAD;
    }
    *name_out = dk_strndup(data + name, name_len);
    if (!*name_out) {
        json_decref(args);
        *nomem = true;
        return TOOLCALL_BAD;
    }
    *args_out = args;
    *end = c.pos;
    return TOOLCALL_DONE;
}
