/*
 * json_schema.c: JSON schemas -> GBNF (sample_json_schema_to_gbnf), and the JSON-mode
 * grammar (sample_gbnf_json).
 *
 * Each sub-schema becomes one rule `name-N`; shared pieces (strings, numbers, any value,
 * whitespace) are emitted once as `name-string`, `name-value`, .... The grammar accepts a
 * subset of what the schema allows, chosen so that a model can always finish: whitespace
 * between tokens is at most one space or a newline and 20 indentation characters; numbers
 * have at most 16 integer and 16 fraction digits and a two-digit exponent (so that they fit
 * a double / int64 when parsed); \u escapes are never NUL or lone surrogates; properties
 * come in the schema's order; without additionalProperties no extra keys are written.
 * Keywords that constrain what this converter cannot express (not, if, multipleOf,
 * uniqueItems, ...) are refused with DK_ERR_UNSUPPORTED rather than ignored. oneOf is
 * treated as anyOf. Not for validating instances (tests/json_validate.c does that).
 */
#include "sample/sample.h"

#include <math.h>
#include <string.h>

/* ---- the JSON-mode grammar ---- */

#define SCHEMA_WS "( \" \" | \"\\n\" [ \\t]{0,20} )?"
#define SCHEMA_CHAR \
    "[^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" HEX4 )"
#define SCHEMA_HEX4                                                                                         \
    "[1-9a-cA-C] HEX HEX HEX | \"0\" ( [1-9a-fA-F] HEX HEX | \"0\" ( [1-9a-fA-F] HEX | \"0\" [1-9a-fA-F] ) )" \
    " | [dD] [0-7] HEX HEX | [eEfF] HEX HEX HEX | [dD] [89abAB] HEX HEX \"\\\\u\" [dD] [c-fC-F] HEX HEX"
#define SCHEMA_INT "\"-\"? ( \"0\" | [1-9] [0-9]{0,15} )"
#define SCHEMA_NUMBER SCHEMA_INT " ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?"

static const char schema_json_mode[] =
    "root ::= object\n"
    "value ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ws ( string ws \":\" ws value ws ( \",\" ws string ws \":\" ws value ws )* )? \"}\"\n"
    "array ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" hex4 )\n"
    "hex4 ::= [1-9a-cA-C] hex hex hex | \"0\" ( [1-9a-fA-F] hex hex | \"0\" ( [1-9a-fA-F] hex | \"0\" [1-9a-fA-F] ) )"
    " | [dD] [0-7] hex hex | [eEfF] hex hex hex | [dD] [89abAB] hex hex \"\\\\u\" [dD] [c-fC-F] hex hex\n"
    "hex ::= [0-9a-fA-F]\n"
    "number ::= " SCHEMA_NUMBER "\n"
    "ws ::= " SCHEMA_WS "\n";

const char *sample_gbnf_json(void) { return schema_json_mode; }

/* ---- the converter ---- */

#define SCHEMA_MAX_DEPTH 64
#define SCHEMA_MAX_OUTPUT ((size_t)32 << 20)

enum schema_shared {
    SCHEMA_USE_VALUE = 1 << 0, /* name-value and everything it needs */
    SCHEMA_USE_STRING = 1 << 1,
    SCHEMA_USE_NUMBER = 1 << 2,
    SCHEMA_USE_INTEGER = 1 << 3,
    SCHEMA_USE_CHAR = 1 << 4,
};

typedef struct schema_ref {
    char *ref;  /* "#/$defs/x" */
    char *rule; /* its rule name */
} schema_ref;

typedef struct schema_conv {
    const json_t *root;
    const char *name;
    dk_buf *out;
    unsigned used;      /* enum schema_shared */
    size_t n_rules;
    schema_ref *refs;   /* (n_refs) */
    size_t n_refs, cap_refs;
    int depth;
    char *err;
} schema_conv;

static int schema_nomem(schema_conv *c) { return dk_fail(c->err, DK_ERR_NOMEM, "json schema: out of memory"); }

static int schema_unsupported(schema_conv *c, const char *ptr, const char *what)
{
    return dk_fail(c->err, DK_ERR_UNSUPPORTED, "json schema: %s: %s", ptr[0] ? ptr : "#", what);
}

static int schema_bad(schema_conv *c, const char *ptr, const char *what)
{
    return dk_fail(c->err, DK_ERR_FORMAT, "json schema: %s: %s", ptr[0] ? ptr : "#", what);
}

/* A JSON pointer for error messages: parent + "/" + key (key not escaped; messages only). */
static void schema_ptr(char *dst, size_t size, const char *parent, const char *key)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/%s", parent, key);
    dk_strlcpy(dst, b.data ? b.data : "", size);
    dk_buf_free(&b);
}

void sample_gbnf_literal(dk_buf *b, const char *s, size_t n)
{
    dk_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"') dk_buf_puts(b, "\\\"");
        else if (ch == '\\') dk_buf_puts(b, "\\\\");
        else if (ch == '\n') dk_buf_puts(b, "\\n");
        else if (ch == '\r') dk_buf_puts(b, "\\r");
        else if (ch == '\t') dk_buf_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7f) dk_buf_printf(b, "\\x%02X", ch);
        else dk_buf_putc(b, (char)ch);
    }
    dk_buf_putc(b, '"');
}

/* Appends the GBNF literal of a JSON value's compact text. */
static int schema_literal_json(schema_conv *c, dk_buf *b, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) return schema_nomem(c);
    sample_gbnf_literal(b, text, strlen(text));
    free(text); /* jansson's allocator, not ours */
    return DK_OK;
}

/* Writes a fresh helper-rule name `name-N` into rule. */
static int schema_rule_new(schema_conv *c, dk_buf *rule)
{
    dk_buf_clear(rule);
    dk_buf_printf(rule, "%s-%zu", c->name, ++c->n_rules);
    return rule->failed ? schema_nomem(c) : DK_OK;
}

static int schema_rule_emit(schema_conv *c, const char *rule, const dk_buf *body)
{
    if (body->failed) return schema_nomem(c);
    dk_buf_printf(c->out, "%s ::= %s\n", rule, body->data ? body->data : "\"\"");
    if (c->out->failed) return schema_nomem(c);
    if (c->out->len > SCHEMA_MAX_OUTPUT) return dk_fail(c->err, DK_ERR_UNSUPPORTED, "json schema: grammar too large");
    return DK_OK;
}

static void schema_shared_ref(schema_conv *c, dk_buf *b, const char *what, unsigned flag)
{
    c->used |= flag;
    dk_buf_printf(b, "%s-%s", c->name, what);
}

static int schema_gen(schema_conv *c, const json_t *s, const char *ptr, dk_buf *rule);

/* ---- $ref ---- */

/* Resolves "#/a/b" (with ~0 ~1 escapes) from the root; NULL if absent. */
static const json_t *schema_resolve(const json_t *root, const char *ref)
{
    if (ref[0] != '#') return NULL;
    const json_t *cur = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        dk_buf key = {0};
        while (*p && *p != '/') {
            if (p[0] == '~' && p[1] == '0') {
                dk_buf_putc(&key, '~');
                p += 2;
            } else if (p[0] == '~' && p[1] == '1') {
                dk_buf_putc(&key, '/');
                p += 2;
            } else {
                dk_buf_putc(&key, *p++);
            }
        }
        const char *k = key.data ? key.data : "";
        if (json_is_object(cur)) cur = json_object_get(cur, k);
        else if (json_is_array(cur)) {
            char *end;
            unsigned long i = strtoul(k, &end, 10);
            cur = *k && !*end ? json_array_get(cur, i) : NULL;
        } else {
            cur = NULL;
        }
        dk_buf_free(&key);
        if (!cur) return NULL;
    }
    return *p ? NULL : cur;
}

static int schema_gen_ref(schema_conv *c, const char *ref, const char *ptr, dk_buf *rule)
{
    for (size_t i = 0; i < c->n_refs; i++) {
        if (strcmp(c->refs[i].ref, ref) == 0) {
            dk_buf_clear(rule);
            dk_buf_puts(rule, c->refs[i].rule);
            return rule->failed ? schema_nomem(c) : DK_OK;
        }
    }
    const json_t *target = schema_resolve(c->root, ref);
    if (!target) return schema_unsupported(c, ptr, "$ref must point into this schema (#/$defs/... or #/definitions/...)");
    if (c->n_refs == c->cap_refs) {
        size_t cap = c->cap_refs ? c->cap_refs * 2 : 8;
        schema_ref *r = dk_realloc(c->refs, cap * sizeof(*r));
        if (!r) return schema_nomem(c);
        c->refs = r;
        c->cap_refs = cap;
    }
    /* named before its body is generated, so a recursive reference finds it */
    dk_buf name = {0};
    dk_buf_printf(&name, "%s-%zu", c->name, ++c->n_rules);
    char *ref_copy = dk_strdup(ref);
    if (name.failed || !ref_copy) {
        dk_free(ref_copy);
        dk_buf_free(&name);
        return schema_nomem(c);
    }
    c->refs[c->n_refs++] = (schema_ref){ref_copy, name.data};
    dk_buf inner = {0}, body = {0};
    int rc = schema_gen(c, target, ref, &inner);
    if (rc == DK_OK) {
        dk_buf_puts(&body, inner.data);
        rc = schema_rule_emit(c, name.data, &body);
    }
    dk_buf_free(&inner);
    dk_buf_free(&body);
    if (rc != DK_OK) return rc;
    dk_buf_clear(rule);
    dk_buf_puts(rule, c->refs[c->n_refs - 1].rule);
    return rule->failed ? schema_nomem(c) : DK_OK;
}

/* ---- integers in a range ---- */

static int schema_digits(uint64_t x)
{
    int d = 1;
    while (x >= 10) {
        x /= 10;
        d++;
    }
    return d;
}

static uint64_t schema_pow10(int d)
{
    uint64_t p = 1;
    while (d-- > 0) p *= 10;
    return p;
}

/* Digit strings a..b of the same length n (a <= b, both n digits, leading zeros kept). */
static void schema_same_len(dk_buf *b, const char *lo, const char *hi, int n)
{
    if (n == 0 || b->failed) return;
    if (lo[0] == hi[0]) {
        dk_buf_printf(b, "\"%c\" ", lo[0]);
        schema_same_len(b, lo + 1, hi + 1, n - 1);
        return;
    }
    bool lo_zeros = true, hi_nines = true;
    for (int i = 1; i < n; i++) {
        lo_zeros &= lo[i] == '0';
        hi_nines &= hi[i] == '9';
    }
    dk_buf_puts(b, "( ");
    char lo_d = lo[0], hi_d = hi[0];
    if (!lo_zeros) { /* lo[0] followed by lo[1..] .. 99..9 */
        char nines[24];
        memset(nines, '9', sizeof nines);
        dk_buf_printf(b, "\"%c\" ( ", lo[0]);
        schema_same_len(b, lo + 1, nines, n - 1);
        dk_buf_puts(b, ") | ");
        lo_d++;
    }
    if (!hi_nines) hi_d--;
    if (lo_d <= hi_d) {
        dk_buf_printf(b, "[%c-%c]", lo_d, hi_d);
        if (n > 1) dk_buf_printf(b, " [0-9]{%d}", n - 1);
        dk_buf_puts(b, " | ");
    }
    if (!hi_nines) {
        char zeros[24];
        memset(zeros, '0', sizeof zeros);
        dk_buf_printf(b, "\"%c\" ( ", hi[0]);
        schema_same_len(b, zeros, hi + 1, n - 1);
        dk_buf_puts(b, ") | ");
    }
    if (b->failed) return;
    b->len -= 3; /* the last " | " */
    b->data[b->len] = 0;
    dk_buf_puts(b, " ) ");
}

/* Unsigned integers lo..hi without leading zeros, as alternatives "( .. | .. )". */
static void schema_uint_range(dk_buf *b, uint64_t lo, uint64_t hi)
{
    dk_buf_puts(b, "( ");
    bool first = true;
    for (int d = schema_digits(lo); d <= schema_digits(hi); d++) {
        uint64_t a = d == schema_digits(lo) ? lo : schema_pow10(d - 1);
        uint64_t z = d == schema_digits(hi) ? hi : schema_pow10(d) - 1;
        char sa[24], sz[24];
        dk_buf t = {0};
        dk_buf_printf(&t, "%0*llu%0*llu", d, (unsigned long long)a, d, (unsigned long long)z);
        if (t.failed) {
            b->failed = 1;
            return;
        }
        memcpy(sa, t.data, (size_t)d);
        memcpy(sz, t.data + d, (size_t)d);
        dk_buf_free(&t);
        if (!first) dk_buf_puts(b, "| ");
        first = false;
        schema_same_len(b, sa, sz, d);
    }
    dk_buf_puts(b, ") ");
}

#define SCHEMA_INT_MAX 999999999999999999ll /* 18 digits: beyond, bounds are refused */
#define SCHEMA_UNBOUNDED 9999999999999999ll  /* 16 digits, as the plain integer rule */

/* Integers in [lo, hi] (lo <= hi, |both| <= SCHEMA_INT_MAX). */
static void schema_int_range(dk_buf *b, long long lo, long long hi)
{
    dk_buf_puts(b, "( ");
    bool any = false;
    if (lo < 0) {
        uint64_t nlo = hi < 0 ? (uint64_t)(-hi) : 1, nhi = (uint64_t)(-lo);
        dk_buf_puts(b, "\"-\" ");
        schema_uint_range(b, nlo, nhi);
        any = true;
    }
    if (hi >= 0) {
        if (any) dk_buf_puts(b, "| ");
        schema_uint_range(b, lo > 0 ? (uint64_t)lo : 0, (uint64_t)hi);
    }
    dk_buf_puts(b, ")");
}

/* Reads an integer bound of an integer schema; *present false when absent. */
static int schema_int_bound(schema_conv *c, const json_t *s, const char *key, bool exclusive_up, const char *ptr,
                            long long *out, bool *present)
{
    const json_t *v = json_object_get(s, key);
    *present = false;
    if (!v) return DK_OK;
    if (!json_is_number(v)) return schema_bad(c, ptr, "bound is not a number");
    double d = json_number_value(v);
    bool exclusive = strncmp(key, "exclusive", 9) == 0;
    double r = exclusive_up ? (exclusive ? floor(d) + 1 : ceil(d)) : (exclusive ? ceil(d) - 1 : floor(d));
    if (!(fabs(r) <= (double)SCHEMA_INT_MAX)) return schema_unsupported(c, ptr, "integer bound too large");
    *out = (long long)r;
    *present = true;
    return DK_OK;
}

/* The integer range [*lo, *hi] of a schema's minimum/maximum/exclusive* bounds; *bounded is
 * false when it has none. */
static int schema_int_bounds(schema_conv *c, const json_t *s, const char *ptr, long long *lo, long long *hi, bool *bounded)
{
    long long v;
    bool have_lo = false, have_hi = false, p;
    static const char *const lows[] = {"minimum", "exclusiveMinimum"}, *const highs[] = {"maximum", "exclusiveMaximum"};
    *lo = -SCHEMA_UNBOUNDED;
    *hi = SCHEMA_UNBOUNDED;
    for (int k = 0; k < 2; k++) {
        int rc = schema_int_bound(c, s, lows[k], true, ptr, &v, &p);
        if (rc) return rc;
        if (p && (!have_lo || v > *lo)) *lo = v, have_lo = true;
        if ((rc = schema_int_bound(c, s, highs[k], false, ptr, &v, &p))) return rc;
        if (p && (!have_hi || v < *hi)) *hi = v, have_hi = true;
    }
    *bounded = have_lo || have_hi;
    if (!*bounded) return DK_OK;
    if (!have_lo) *lo = *hi < 0 ? *hi - SCHEMA_UNBOUNDED : -SCHEMA_UNBOUNDED;
    if (!have_hi) *hi = *lo > 0 ? *lo + SCHEMA_UNBOUNDED : SCHEMA_UNBOUNDED;
    if (*lo > *hi) return schema_unsupported(c, ptr, "no integer satisfies minimum/maximum");
    if (*lo < -SCHEMA_INT_MAX || *hi > SCHEMA_INT_MAX) return schema_unsupported(c, ptr, "integer bound too large");
    return DK_OK;
}

static int schema_gen_integer(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    long long lo, hi;
    bool bounded;
    int rc = schema_int_bounds(c, s, ptr, &lo, &hi, &bounded);
    if (rc) return rc;
    if (!bounded) schema_shared_ref(c, body, "integer", SCHEMA_USE_INTEGER);
    else schema_int_range(body, lo, hi);
    return DK_OK;
}

/* A number with bounds: the integers of the range, and decimals I.F (F ending in a non-zero
 * digit) whose integer part I is non-negative with I and I + 1 inside the integer range, so
 * that I < I.F < I + 1 holds the bounds. Narrower than the schema (no exponents, no negative
 * decimals, no decimals below the first integer), never wider. */
static int schema_gen_bounded_number(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    long long lo, hi;
    bool bounded;
    int rc = schema_int_bounds(c, s, ptr, &lo, &hi, &bounded);
    if (rc) return rc;
    long long f_lo = lo > 0 ? lo : 0, f_hi = hi - 1;
    dk_buf_puts(body, "( ");
    schema_int_range(body, lo, hi);
    if (f_lo <= f_hi) {
        dk_buf_puts(body, " | ( ");
        schema_int_range(body, f_lo, f_hi);
        dk_buf_puts(body, " ) \".\" [0-9]{0,15} [1-9]");
    }
    return dk_buf_puts(body, " )") < 0 || body->failed ? schema_nomem(c) : DK_OK;
}

/* ---- strings: formats and patterns ---- */

static const char *schema_format_gbnf(const char *format)
{
    static const char *const formats[][2] = {
        {"date", "[0-9]{4} \"-\" ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] )"},
        {"time", "( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? "
                 "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )"},
        {"date-time", "[0-9]{4} \"-\" ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] ) \"T\" "
                      "( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? "
                      "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )"},
        {"uuid", "[0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{12}"},
        {"email", "[a-zA-Z0-9_%+-]{1,32} ( \".\" [a-zA-Z0-9_%+-]{1,32} ){0,4} \"@\" [a-zA-Z0-9-]{1,32} ( \".\" [a-zA-Z0-9-]{1,32} ){1,4}"},
        {"uri", "[a-zA-Z] [a-zA-Z0-9+.-]{0,15} \":\" [a-zA-Z0-9._~:/?#@!$&'()*+,;=%\\[\\]-]{1,200}"},
    };
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strcmp(formats[i][0], format) == 0) return formats[i][1];
    return NULL;
}

/* A regular-expression subset -> GBNF over JSON string content: literals and escapes,
 * classes, ., groups, |, * + ? {m,n}, ^ and $ at the ends. */
typedef struct schema_regex {
    const char *p, *end;
    schema_conv *c;
    const char *ptr;
    int depth;
} schema_regex;

static int schema_rx_alt(schema_regex *rx, dk_buf *b, bool *nullable);

/* The JSON text of code point cp inside a string, as GBNF. */
static void schema_rx_char(dk_buf *b, uint32_t cp)
{
    if (cp == '"') dk_buf_puts(b, "\"\\\\\\\"\"");
    else if (cp == '\\') dk_buf_puts(b, "\"\\\\\\\\\"");
    else if (cp == '\n') dk_buf_puts(b, "\"\\\\n\"");
    else if (cp == '\t') dk_buf_puts(b, "\"\\\\t\"");
    else if (cp == '\r') dk_buf_puts(b, "\"\\\\r\"");
    else if (cp < 0x20) dk_buf_printf(b, "\"\\\\u%04X\"", cp);
    else dk_buf_printf(b, "[\\U%08X]", cp);
}

/* Appends [lo, hi] to a GBNF class without the characters JSON must escape (controls, the
 * quote and the backslash), which come back as escaped alternatives. */
static void schema_rx_range(dk_buf *b, uint32_t lo, uint32_t hi, bool *any)
{
    static const uint32_t cut[] = {'"', '\\'};
    if (lo < 0x20) lo = 0x20;
    for (size_t i = 0; i <= 2 && lo <= hi; i++) {
        uint32_t stop = i < 2 ? cut[i] : hi + 1;
        if (stop < lo) continue;
        uint32_t top = stop - 1 < hi ? stop - 1 : hi;
        if (lo <= top) {
            dk_buf_printf(b, "\\U%08X-\\U%08X", lo, top);
            *any = true;
        }
        lo = stop + 1;
    }
}

/* A regex class as GBNF over JSON string content. */
static void schema_rx_class(dk_buf *b, const uint32_t (*ranges)[2], size_t n, bool negated)
{
    bool quote = false, backslash = false, any = false;
    for (size_t i = 0; i < n; i++) {
        quote |= ranges[i][0] <= '"' && ranges[i][1] >= '"';
        backslash |= ranges[i][0] <= '\\' && ranges[i][1] >= '\\';
    }
    dk_buf_puts(b, "( [");
    if (negated) {
        dk_buf_puts(b, "^\"\\\\\\x00-\\x1F");
        for (size_t i = 0; i < n; i++) dk_buf_printf(b, "\\U%08X-\\U%08X", ranges[i][0], ranges[i][1]);
        any = true;
    } else {
        for (size_t i = 0; i < n; i++) schema_rx_range(b, ranges[i][0], ranges[i][1], &any);
    }
    if (!any) dk_buf_puts(b, "^\\x00-\\U0010FFFF");
    dk_buf_puts(b, "]");
    if (quote != negated) dk_buf_puts(b, " | \"\\\\\\\"\"");
    if (backslash != negated) dk_buf_puts(b, " | \"\\\\\\\\\"");
    dk_buf_puts(b, " )");
}

static int schema_rx_escape_class(uint32_t c, uint32_t (*ranges)[2], size_t *n, bool *negated)
{
    *negated = false;
    switch (c) {
    case 'D': *negated = true; /* fall through */
    case 'd': ranges[(*n)++][0] = '0', ranges[*n - 1][1] = '9'; return 1;
    case 'W': *negated = true; /* fall through */
    case 'w':
        ranges[*n][0] = 'a', ranges[*n][1] = 'z', ++*n;
        ranges[*n][0] = 'A', ranges[*n][1] = 'Z', ++*n;
        ranges[*n][0] = '0', ranges[*n][1] = '9', ++*n;
        ranges[*n][0] = '_', ranges[*n][1] = '_', ++*n;
        return 1;
    case 'S': *negated = true; /* fall through */
    case 's':
        ranges[*n][0] = ' ', ranges[*n][1] = ' ', ++*n;
        ranges[*n][0] = '\t', ranges[*n][1] = '\r', ++*n;
        return 1;
    default: return 0;
    }
}

static uint32_t schema_rx_simple_escape(uint32_t c)
{
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    default: return c;
    }
}

/* Decodes one UTF-8 character of the pattern (patterns come from valid JSON strings). */
static uint32_t schema_rx_next(schema_regex *rx)
{
    const unsigned char *s = (const unsigned char *)rx->p;
    uint32_t c = s[0];
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if ((size_t)(rx->end - rx->p) < len) len = 1;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    rx->p += len;
    return cp;
}

static int schema_rx_class_atom(schema_regex *rx, dk_buf *b)
{
    uint32_t ranges[256][2];
    size_t n = 0;
    bool negated = false;
    rx->p++; /* [ */
    if (rx->p < rx->end && *rx->p == '^') {
        negated = true;
        rx->p++;
    }
    bool first = true;
    while (rx->p < rx->end && (*rx->p != ']' || first)) {
        first = false;
        if (n + 4 >= 256) return schema_unsupported(rx->c, rx->ptr, "pattern class too long");
        uint32_t lo = schema_rx_next(rx);
        if (lo == '\\') {
            if (rx->p >= rx->end) break;
            uint32_t e = schema_rx_next(rx);
            bool neg_inner;
            size_t before = n;
            if (schema_rx_escape_class(e, ranges, &n, &neg_inner)) {
                if (neg_inner) return schema_unsupported(rx->c, rx->ptr, "negated escape inside a class in pattern");
                (void)before;
                continue;
            }
            lo = schema_rx_simple_escape(e);
        }
        uint32_t hi = lo;
        if (rx->p + 1 < rx->end && *rx->p == '-' && rx->p[1] != ']') {
            rx->p++;
            hi = schema_rx_next(rx);
            if (hi == '\\' && rx->p < rx->end) hi = schema_rx_simple_escape(schema_rx_next(rx));
            if (hi < lo) return schema_bad(rx->c, rx->ptr, "pattern: class range out of order");
        }
        ranges[n][0] = lo;
        ranges[n][1] = hi;
        n++;
    }
    if (rx->p >= rx->end) return schema_bad(rx->c, rx->ptr, "pattern: unterminated class");
    rx->p++; /* ] */
    schema_rx_class(b, (const uint32_t(*)[2])ranges, n, negated);
    return DK_OK;
}

static int schema_rx_atom(schema_regex *rx, dk_buf *b, bool *nullable)
{
    *nullable = false;
    char ch = *rx->p;
    if (ch == '(') {
        rx->p++;
        if (rx->p + 1 < rx->end && rx->p[0] == '?') {
            if (rx->p[1] != ':') return schema_unsupported(rx->c, rx->ptr, "pattern: lookaround and named groups");
            rx->p += 2;
        }
        if (++rx->depth > 32) return schema_unsupported(rx->c, rx->ptr, "pattern nested too deeply");
        dk_buf_puts(b, "( ");
        int rc = schema_rx_alt(rx, b, nullable);
        rx->depth--;
        if (rc) return rc;
        if (rx->p >= rx->end || *rx->p != ')') return schema_bad(rx->c, rx->ptr, "pattern: missing ')'");
        rx->p++;
        dk_buf_puts(b, " )");
        return DK_OK;
    }
    if (ch == '[') return schema_rx_class_atom(rx, b);
    if (ch == '.') {
        rx->p++;
        dk_buf_puts(b, "( [^\"\\\\\\x00-\\x1F] | \"\\\\\\\"\" | \"\\\\\\\\\" | \"\\\\t\" )");
        return DK_OK;
    }
    uint32_t cp = schema_rx_next(rx);
    if (cp == '\\') {
        if (rx->p >= rx->end) return schema_bad(rx->c, rx->ptr, "pattern ends with a backslash");
        uint32_t e = schema_rx_next(rx);
        uint32_t ranges[8][2];
        size_t n = 0;
        bool negated;
        if (schema_rx_escape_class(e, ranges, &n, &negated)) {
            schema_rx_class(b, (const uint32_t(*)[2])ranges, n, negated);
            return DK_OK;
        }
        if ((e >= '0' && e <= '9') || e == 'b' || e == 'B' || e == 'p' || e == 'P' || e == 'u' || e == 'x')
            return schema_unsupported(rx->c, rx->ptr, "pattern: backreferences, \\b, \\p, \\u and \\x");
        cp = schema_rx_simple_escape(e);
    }
    schema_rx_char(b, cp);
    return DK_OK;
}

/* One quantifier after an atom: *, +, ?, {m}, {m,}, {m,n} (a lazy ? after it is ignored). */
static int schema_rx_quant(schema_regex *rx, dk_buf *b, bool atom_nullable, bool *nullable)
{
    if (rx->p >= rx->end) return DK_OK;
    char ch = *rx->p;
    unsigned long lo = 0, hi = 0;
    bool unbounded = false;
    if (ch == '*' || ch == '+' || ch == '?') {
        rx->p++;
        lo = ch == '+';
        hi = 1;
        unbounded = ch != '?';
    } else if (ch == '{') {
        const char *q = rx->p + 1;
        char *e;
        if (q >= rx->end || *q < '0' || *q > '9') return DK_OK; /* a literal { */
        lo = strtoul(q, &e, 10);
        hi = lo;
        if (*e == ',') {
            if (e[1] == '}') unbounded = true, e++;
            else hi = strtoul(e + 1, &e, 10);
        }
        if (*e != '}') return schema_bad(rx->c, rx->ptr, "pattern: bad {m,n}");
        if (hi < lo || lo > 1000 || (!unbounded && hi > 1000)) return schema_unsupported(rx->c, rx->ptr, "pattern: repetition count");
        rx->p = e + 1;
    } else {
        return DK_OK;
    }
    if (rx->p < rx->end && *rx->p == '?') rx->p++;
    if (atom_nullable && (unbounded || hi > 1)) return schema_unsupported(rx->c, rx->ptr, "pattern: repeating something that can be empty");
    if (unbounded) {
        if (lo <= 1) dk_buf_puts(b, lo ? "+" : "*");
        else dk_buf_printf(b, "{%lu,}", lo);
    } else if (lo == 0 && hi == 1) {
        dk_buf_puts(b, "?");
    } else {
        dk_buf_printf(b, "{%lu,%lu}", lo, hi);
    }
    *nullable = atom_nullable || lo == 0;
    return DK_OK;
}

static int schema_rx_seq(schema_regex *rx, dk_buf *b, bool *nullable)
{
    *nullable = true;
    bool empty = true;
    while (rx->p < rx->end && *rx->p != '|' && *rx->p != ')') {
        if (*rx->p == '^' || *rx->p == '$') return schema_unsupported(rx->c, rx->ptr, "pattern: ^ and $ only at its ends");
        if (*rx->p == '*' || *rx->p == '+' || *rx->p == '?') return schema_bad(rx->c, rx->ptr, "pattern: nothing to repeat");
        bool an, qn;
        dk_buf_puts(b, "( ");
        int rc = schema_rx_atom(rx, b, &an);
        if (rc) return rc;
        dk_buf_puts(b, " )");
        qn = an;
        if ((rc = schema_rx_quant(rx, b, an, &qn))) return rc;
        dk_buf_putc(b, ' ');
        *nullable &= qn;
        empty = false;
    }
    if (empty) dk_buf_puts(b, "\"\" ");
    return DK_OK;
}

static int schema_rx_alt(schema_regex *rx, dk_buf *b, bool *nullable)
{
    int rc = schema_rx_seq(rx, b, nullable);
    while (rc == DK_OK && rx->p < rx->end && *rx->p == '|') {
        rx->p++;
        dk_buf_puts(b, "| ");
        bool n2;
        rc = schema_rx_seq(rx, b, &n2);
        *nullable |= n2;
    }
    return rc;
}

static int schema_gen_pattern(schema_conv *c, const char *pattern, const char *ptr, dk_buf *body)
{
    schema_regex rx = {pattern, pattern + strlen(pattern), c, ptr, 0};
    bool anchored_start = rx.p < rx.end && *rx.p == '^';
    if (anchored_start) rx.p++;
    bool anchored_end = rx.end > rx.p && rx.end[-1] == '$' && (rx.end - rx.p < 2 || rx.end[-2] != '\\');
    if (anchored_end) rx.end--;
    dk_buf_puts(body, "\"\\\"\" ");
    if (!anchored_start) schema_shared_ref(c, body, "char*", SCHEMA_USE_CHAR), dk_buf_putc(body, ' ');
    dk_buf_puts(body, "( ");
    bool nullable;
    int rc = schema_rx_alt(&rx, body, &nullable);
    if (rc) return rc;
    if (rx.p != rx.end) return schema_bad(c, ptr, "pattern: unbalanced ')'");
    dk_buf_puts(body, ") ");
    if (!anchored_end) schema_shared_ref(c, body, "char*", SCHEMA_USE_CHAR), dk_buf_putc(body, ' ');
    dk_buf_puts(body, "\"\\\"\"");
    return DK_OK;
}

/* "x-gbnf": RULE names a rule the caller supplies with the grammar text; it derives the
 * string's content, already JSON-escaped (e.g. SQL for a tool's argument, sql_grammar). */
static int schema_gen_external_string(schema_conv *c, const json_t *rule, const char *ptr, dk_buf *body)
{
    const char *name = json_string_value(rule);
    if (!name || !name[0]) return schema_bad(c, ptr, "x-gbnf must name a rule");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return schema_bad(c, ptr, "x-gbnf: a rule name is lowercase letters, digits and '-'");
    dk_buf_printf(body, "\"\\\"\" %s \"\\\"\"", name);
    return DK_OK;
}

static int schema_gen_string(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    const json_t *external = json_object_get(s, "x-gbnf");
    if (external) return schema_gen_external_string(c, external, ptr, body);
    const json_t *format = json_object_get(s, "format"), *pattern = json_object_get(s, "pattern");
    const json_t *min = json_object_get(s, "minLength"), *max = json_object_get(s, "maxLength");
    if ((min && !json_is_integer(min)) || (max && !json_is_integer(max)))
        return schema_bad(c, ptr, "minLength/maxLength must be integers");
    long long lo = min ? json_integer_value(min) : 0, hi = max ? json_integer_value(max) : -1;
    if ((pattern || (format && schema_format_gbnf(json_string_value(format) ? json_string_value(format) : ""))) && (min || max))
        return schema_unsupported(c, ptr, "minLength/maxLength together with pattern or format");
    if (pattern) {
        if (!json_is_string(pattern)) return schema_bad(c, ptr, "pattern must be a string");
        return schema_gen_pattern(c, json_string_value(pattern), ptr, body);
    }
    if (format && json_is_string(format)) {
        const char *g = schema_format_gbnf(json_string_value(format));
        if (g) {
            dk_buf_printf(body, "\"\\\"\" %s \"\\\"\"", g);
            return DK_OK;
        } /* other formats (hostname, ...) are annotations: any string */
    }
    if (!min && !max) {
        schema_shared_ref(c, body, "string", SCHEMA_USE_STRING);
        return DK_OK;
    }
    if (lo < 0 || (max && hi < lo) || lo > 10000 || hi > 10000)
        return schema_unsupported(c, ptr, "minLength/maxLength out of range (0..10000)");
    dk_buf_puts(body, "\"\\\"\" ");
    schema_shared_ref(c, body, "char", SCHEMA_USE_CHAR);
    if (max) dk_buf_printf(body, "{%lld,%lld}", lo, hi);
    else dk_buf_printf(body, "{%lld,}", lo);
    dk_buf_puts(body, " \"\\\"\"");
    return DK_OK;
}

/* ---- arrays ---- */

static int schema_gen_array(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    const json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    const json_t *jmin = json_object_get(s, "minItems"), *jmax = json_object_get(s, "maxItems");
    if ((jmin && !json_is_integer(jmin)) || (jmax && !json_is_integer(jmax))) return schema_bad(c, ptr, "minItems/maxItems must be integers");
    long long lo = jmin ? json_integer_value(jmin) : 0, hi = jmax ? json_integer_value(jmax) : -1;
    if (lo < 0 || lo > 1000 || hi > 1000 || (jmax && hi < lo)) return schema_unsupported(c, ptr, "minItems/maxItems out of range (0..1000)");
    if (json_is_array(items)) prefix = items, items = NULL; /* draft-07 tuple form */
    if (prefix && !json_is_array(prefix)) return schema_bad(c, ptr, "prefixItems must be an array");
    size_t n_prefix = prefix ? json_array_size(prefix) : 0;
    if (jmax && (long long)n_prefix > hi) return schema_unsupported(c, ptr, "more prefixItems than maxItems");
    char sub[512];
    dk_buf rule = {0};
    int rc = DK_OK;
    dk_buf_puts(body, "\"[\" ");
    schema_shared_ref(c, body, "ws", 0);
    dk_buf_putc(body, ' ');
    for (size_t i = 0; i < n_prefix && rc == DK_OK; i++) {
        dk_buf k = {0};
        dk_buf_printf(&k, "prefixItems/%zu", i);
        schema_ptr(sub, sizeof sub, ptr, k.data ? k.data : "");
        dk_buf_free(&k);
        if ((rc = schema_gen(c, json_array_get(prefix, i), sub, &rule))) break;
        if (i) dk_buf_puts(body, "\",\" "), schema_shared_ref(c, body, "ws", 0), dk_buf_putc(body, ' ');
        dk_buf_printf(body, "%s ", rule.data);
        schema_shared_ref(c, body, "ws", 0);
        dk_buf_putc(body, ' ');
    }
    bool more = items ? !json_is_false(items) : n_prefix == 0;
    if (rc == DK_OK && more) {
        long long extra_lo = lo > (long long)n_prefix ? lo - (long long)n_prefix : 0;
        long long extra_hi = jmax ? hi - (long long)n_prefix : -1;
        schema_ptr(sub, sizeof sub, ptr, "items");
        if (items) rc = schema_gen(c, items, sub, &rule);
        else {
            dk_buf_clear(&rule);
            schema_shared_ref(c, &rule, "value", SCHEMA_USE_VALUE);
        }
        if (rc == DK_OK && extra_hi != 0) {
            /* item (sep item){..}: the first item has no comma unless a prefix came before */
            dk_buf one = {0};
            if (n_prefix) dk_buf_puts(&one, "\",\" "), schema_shared_ref(c, &one, "ws", 0), dk_buf_putc(&one, ' ');
            dk_buf_printf(&one, "%s ", rule.data);
            schema_shared_ref(c, &one, "ws", 0);
            dk_buf rest = {0};
            dk_buf_puts(&rest, "\",\" ");
            schema_shared_ref(c, &rest, "ws", 0);
            dk_buf_printf(&rest, " %s ", rule.data);
            schema_shared_ref(c, &rest, "ws", 0);
            long long first_lo = extra_lo > 0 ? 1 : 0;
            long long rest_lo = extra_lo > 0 ? extra_lo - 1 : 0, rest_hi = extra_hi > 0 ? extra_hi - 1 : -1;
            dk_buf_printf(body, "( %s ( %s )", one.data, rest.data);
            if (rest_hi < 0) dk_buf_printf(body, "{%lld,}", rest_lo);
            else dk_buf_printf(body, "{%lld,%lld}", rest_lo, rest_hi);
            dk_buf_puts(body, " )");
            if (!first_lo) dk_buf_putc(body, '?');
            dk_buf_putc(body, ' ');
            if (one.failed || rest.failed) body->failed = 1;
            dk_buf_free(&one);
            dk_buf_free(&rest);
        }
    }
    dk_buf_puts(body, "\"]\"");
    dk_buf_free(&rule);
    return rc;
}

/* ---- objects ---- */

/* Whether key can be written as is inside a JSON string (no escapes needed). */
#define SCHEMA_MAX_KEYS 256
#define SCHEMA_MAX_KEY_BYTES 64

static bool schema_key_plain(const char *key)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++, n++)
        if (*p == '"' || *p == '\\' || *p < 0x20 || *p >= 0x80) return false;
    return n <= SCHEMA_MAX_KEY_BYTES;
}

/* A string rule for keys that are none of the declared ones: a trie over the keys, where a
 * key's own end is not allowed but any divergence is. */
static int schema_gen_other_key(schema_conv *c, const char *const *keys, size_t n_keys, size_t depth, dk_buf *body)
{
    /* distinct next characters among keys sharing this prefix */
    dk_buf_puts(body, "( ");
    bool is_end = false;
    char seen[256] = {0};
    dk_buf cls = {0};
    bool first = true;
    for (size_t i = 0; i < n_keys; i++) {
        unsigned char ch = (unsigned char)keys[i][depth];
        if (!ch) {
            is_end = true;
            continue;
        }
        if (seen[ch]) continue;
        seen[ch] = 1;
        dk_buf_printf(&cls, "\\x%02X", ch);
        const char *sub[SCHEMA_MAX_KEYS];
        size_t n_sub = 0;
        for (size_t j = 0; j < n_keys && n_sub < SCHEMA_MAX_KEYS; j++)
            if ((unsigned char)keys[j][depth] == ch) sub[n_sub++] = keys[j];
        if (!first) dk_buf_puts(body, "| ");
        first = false;
        dk_buf_printf(body, "\"\\x%02X\" ", ch);
        int rc = schema_gen_other_key(c, sub, n_sub, depth + 1, body);
        if (rc) {
            dk_buf_free(&cls);
            return rc;
        }
    }
    if (!first) dk_buf_puts(body, "| ");
    /* diverge here: a character no key has next (non-ASCII bytes are continued as is) */
    dk_buf_printf(body, "( [^\"\\\\\\x00-\\x1F%s] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" %s-hex4 ) ) %s-char* \"\\\"\" ",
                  cls.data ? cls.data : "", c->name, c->name);
    c->used |= SCHEMA_USE_CHAR;
    if (!is_end) dk_buf_puts(body, "| \"\\\"\" ");
    dk_buf_puts(body, ") ");
    dk_buf_free(&cls);
    return DK_OK;
}

static int schema_gen_object(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return schema_bad(c, ptr, "properties must be an object");
    if (req && !json_is_array(req)) return schema_bad(c, ptr, "required must be an array");
    if (addl && !json_is_boolean(addl) && !json_is_object(addl)) return schema_bad(c, ptr, "additionalProperties must be a boolean or a schema");
    size_t n = props ? json_object_size(props) : 0;
    /* required keys that are not properties: declare them as any value */
    bool extra_allowed = addl ? !json_is_false(addl) : n == 0;
    size_t n_req = req ? json_array_size(req) : 0;
    for (size_t i = 0; i < n_req; i++) {
        const json_t *k = json_array_get(req, i);
        if (!json_is_string(k)) return schema_bad(c, ptr, "required entries must be strings");
        if (!props || !json_object_get(props, json_string_value(k)))
            return schema_unsupported(c, ptr, "required key without a property schema");
    }
    int rc = DK_OK;
    const char **keys = dk_calloc(n + 1, sizeof(char *));
    char **kv = dk_calloc(n + 1, sizeof(char *)); /* rule of each "key": value */
    bool *required = dk_calloc(n + 1, sizeof(bool));
    dk_buf rule = {0}, tmp = {0};
    if (!keys || !kv || !required) {
        rc = schema_nomem(c);
        goto done;
    }
    size_t i = 0;
    const char *key;
    json_t *sub_schema;
    json_object_foreach((json_t *)props, key, sub_schema) {
        keys[i] = key;
        for (size_t r = 0; r < n_req; r++)
            if (strcmp(json_string_value(json_array_get(req, r)), key) == 0) required[i] = true;
        char sub[512];
        schema_ptr(sub, sizeof sub, ptr, key);
        if ((rc = schema_gen(c, sub_schema, sub, &rule))) goto done;
        /* the key as JSON-encoded text, then ": value" */
        json_t *kj = json_string(key);
        char *kt = kj ? json_dumps(kj, JSON_ENCODE_ANY) : NULL;
        json_decref(kj);
        if (!kt) {
            rc = schema_nomem(c);
            goto done;
        }
        dk_buf_clear(&tmp);
        sample_gbnf_literal(&tmp, kt, strlen(kt));
        free(kt);
        dk_buf_putc(&tmp, ' ');
        schema_shared_ref(c, &tmp, "ws", 0);
        dk_buf_puts(&tmp, " \":\" ");
        schema_shared_ref(c, &tmp, "ws", 0);
        dk_buf_printf(&tmp, " %s ", rule.data);
        schema_shared_ref(c, &tmp, "ws", 0);
        if (tmp.failed) {
            rc = schema_nomem(c);
            goto done;
        }
        kv[i] = dk_strdup(tmp.data);
        if (!kv[i]) {
            rc = schema_nomem(c);
            goto done;
        }
        i++;
    }
    /* additional key-value pairs */
    char *extra = NULL;
    if (extra_allowed) {
        dk_buf value = {0};
        if (addl && json_is_object(addl)) {
            char sub[512];
            schema_ptr(sub, sizeof sub, ptr, "additionalProperties");
            if ((rc = schema_gen(c, addl, sub, &value))) {
                dk_buf_free(&value);
                goto done;
            }
        } else {
            schema_shared_ref(c, &value, "value", SCHEMA_USE_VALUE);
        }
        bool plain = true;
        for (size_t k = 0; k < n; k++) plain &= schema_key_plain(keys[k]);
        dk_buf kvb = {0};
        if (n && plain && n <= SCHEMA_MAX_KEYS) {
            dk_buf_puts(&kvb, "\"\\\"\" ");
            if ((rc = schema_gen_other_key(c, keys, n, 0, &kvb))) {
                dk_buf_free(&value);
                dk_buf_free(&kvb);
                goto done;
            }
        } else {
            if (n) { /* keys needing escapes: cannot exclude them exactly */
                dk_buf_free(&value);
                dk_buf_free(&kvb);
                rc = schema_unsupported(c, ptr, "additionalProperties with over 256 properties or names that are long, non-ASCII or need escapes");
                goto done;
            }
            schema_shared_ref(c, &kvb, "string", SCHEMA_USE_STRING);
        }
        dk_buf_putc(&kvb, ' ');
        schema_shared_ref(c, &kvb, "ws", 0);
        dk_buf_puts(&kvb, " \":\" ");
        schema_shared_ref(c, &kvb, "ws", 0);
        dk_buf_printf(&kvb, " %s ", value.data);
        schema_shared_ref(c, &kvb, "ws", 0);
        dk_buf_free(&value);
        dk_buf name = {0};
        if ((rc = schema_rule_new(c, &name)) == DK_OK) rc = schema_rule_emit(c, name.data, &kvb);
        dk_buf_free(&kvb);
        if (rc) {
            dk_buf_free(&name);
            goto done;
        }
        extra = name.data;
    }
    /* T_i: the rest from property i once something was written (each item after a comma);
     * F_i: the rest from property i with nothing written yet. Built from the end. */
    dk_buf t_next = {0}, f_next = {0};
    if (extra) {
        dk_buf_printf(&t_next, "( \",\" %s-ws %s )*", c->name, extra);
        dk_buf_printf(&f_next, "( %s ( \",\" %s-ws %s )* )?", extra, c->name, extra);
    }
    for (size_t k = n; k-- > 0 && rc == DK_OK;) {
        dk_buf tn = {0}, fn = {0}, tb = {0}, fb = {0};
        rc = schema_rule_new(c, &tn);
        if (rc == DK_OK) rc = schema_rule_new(c, &fn);
        const char *tnext = t_next.data ? t_next.data : "";
        dk_buf_printf(&tb, "\",\" %s-ws %s %s", c->name, kv[k], tnext);
        if (!required[k]) dk_buf_printf(&tb, " | %s", t_next.data ? t_next.data : "\"\"");
        dk_buf_printf(&fb, "%s %s", kv[k], tnext);
        if (!required[k]) dk_buf_printf(&fb, " | %s", f_next.data ? f_next.data : "\"\"");
        if (rc == DK_OK) rc = schema_rule_emit(c, tn.data, &tb);
        if (rc == DK_OK) rc = schema_rule_emit(c, fn.data, &fb);
        dk_buf_free(&t_next);
        dk_buf_free(&f_next);
        t_next = tn;
        f_next = fn;
        dk_buf_free(&tb);
        dk_buf_free(&fb);
    }
    if (rc == DK_OK) dk_buf_printf(body, "\"{\" %s-ws %s \"}\"", c->name, f_next.data ? f_next.data : "");
    dk_buf_free(&t_next);
    dk_buf_free(&f_next);
    dk_free(extra);
done:
    for (size_t k = 0; kv && k < n; k++) dk_free(kv[k]);
    dk_free(kv);
    dk_free(keys);
    dk_free(required);
    dk_buf_free(&rule);
    dk_buf_free(&tmp);
    return rc;
}

/* ---- allOf: merge object schemas ---- */

static int schema_merge_into(schema_conv *c, json_t *merged, const json_t *s, const char *ptr, int depth)
{
    if (depth > SCHEMA_MAX_DEPTH) return schema_unsupported(c, ptr, "allOf/$ref nested too deeply");
    if (json_is_true(s)) return DK_OK;
    if (!json_is_object(s)) return schema_unsupported(c, ptr, "allOf of something other than schemas");
    const json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        const json_t *t = json_is_string(ref) ? schema_resolve(c->root, json_string_value(ref)) : NULL;
        if (!t) return schema_unsupported(c, ptr, "$ref must point into this schema");
        int rc = schema_merge_into(c, merged, t, ptr, depth + 1);
        if (rc) return rc;
    }
    const json_t *all = json_object_get(s, "allOf");
    for (size_t i = 0; json_is_array(all) && i < json_array_size(all); i++) {
        int rc = schema_merge_into(c, merged, json_array_get(all, i), ptr, depth + 1);
        if (rc) return rc;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)s, key, v) {
        if (strcmp(key, "$ref") == 0 || strcmp(key, "allOf") == 0) continue;
        if (strcmp(key, "properties") == 0 && json_is_object(v)) {
            json_t *mp = json_object_get(merged, "properties");
            if (!mp) {
                mp = json_object();
                if (!mp || json_object_set_new(merged, "properties", mp)) return schema_nomem(c);
            }
            if (json_object_update(mp, v)) return schema_nomem(c);
        } else if (strcmp(key, "required") == 0 && json_is_array(v)) {
            json_t *mr = json_object_get(merged, "required");
            if (!mr) {
                mr = json_array();
                if (!mr || json_object_set_new(merged, "required", mr)) return schema_nomem(c);
            }
            if (json_array_extend(mr, v)) return schema_nomem(c);
        } else if (!json_object_get(merged, key)) {
            if (json_object_set(merged, key, v)) return schema_nomem(c);
        }
    }
    return DK_OK;
}

/* ---- dispatch ---- */

static const char *const schema_refused[] = {"not", "if", "multipleOf", "patternProperties", "contains",
                                             "minProperties", "maxProperties", "propertyNames", "dependentRequired",
                                             "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "dependencies"};

/* One of several types (a type list), each with the same keywords. */
static int schema_gen_type(schema_conv *c, const json_t *s, const char *type, const char *ptr, dk_buf *body)
{
    if (strcmp(type, "string") == 0) return schema_gen_string(c, s, ptr, body);
    if (strcmp(type, "integer") == 0) return schema_gen_integer(c, s, ptr, body);
    if (strcmp(type, "number") == 0) {
        if (json_object_get(s, "minimum") || json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") ||
            json_object_get(s, "exclusiveMaximum"))
            return schema_gen_bounded_number(c, s, ptr, body);
        schema_shared_ref(c, body, "number", SCHEMA_USE_NUMBER);
        return DK_OK;
    }
    if (strcmp(type, "boolean") == 0) return dk_buf_puts(body, "( \"true\" | \"false\" )") < 0 ? schema_nomem(c) : DK_OK;
    if (strcmp(type, "null") == 0) return dk_buf_puts(body, "\"null\"") < 0 ? schema_nomem(c) : DK_OK;
    if (strcmp(type, "object") == 0) return schema_gen_object(c, s, ptr, body);
    if (strcmp(type, "array") == 0) return schema_gen_array(c, s, ptr, body);
    return schema_bad(c, ptr, "unknown type");
}

static int schema_gen_alternatives(schema_conv *c, const json_t *list, const char *ptr, const char *what, dk_buf *body)
{
    if (!json_is_array(list) || json_array_size(list) == 0) return schema_bad(c, ptr, "anyOf/oneOf must be a non-empty array");
    dk_buf rule = {0};
    int rc = DK_OK;
    dk_buf_puts(body, "( ");
    for (size_t i = 0; i < json_array_size(list) && rc == DK_OK; i++) {
        char sub[512];
        dk_buf k = {0};
        dk_buf_printf(&k, "%s/%zu", what, i);
        schema_ptr(sub, sizeof sub, ptr, k.data ? k.data : "");
        dk_buf_free(&k);
        if ((rc = schema_gen(c, json_array_get(list, i), sub, &rule))) break;
        dk_buf_printf(body, "%s%s ", i ? "| " : "", rule.data);
    }
    dk_buf_puts(body, ")");
    dk_buf_free(&rule);
    return rc;
}

static bool schema_is_object_like(const json_t *s)
{
    return json_object_get(s, "properties") || json_object_get(s, "additionalProperties") || json_object_get(s, "required");
}

/* Whether every keyword of s but $ref is an annotation (so the $ref can be shared as is). */
static bool schema_only_annotations(const json_t *s)
{
    static const char *const notes[] = {"$ref", "description", "title", "default", "examples", "$comment",
                                        "deprecated", "readOnly", "writeOnly", "$id", "$schema", "$defs", "definitions"};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)s, key, v) {
        bool note = false;
        for (size_t i = 0; i < sizeof notes / sizeof notes[0] && !note; i++) note = strcmp(key, notes[i]) == 0;
        if (!note) return false;
    }
    return true;
}

/* The body of the rule for schema s. */
static int schema_gen_body(schema_conv *c, const json_t *s, const char *ptr, dk_buf *body)
{
    if (json_is_true(s)) {
        schema_shared_ref(c, body, "value", SCHEMA_USE_VALUE);
        return DK_OK;
    }
    if (json_is_false(s)) return schema_unsupported(c, ptr, "schema false matches nothing");
    if (!json_is_object(s)) return schema_bad(c, ptr, "a schema must be an object or a boolean");
    for (size_t i = 0; i < sizeof schema_refused / sizeof schema_refused[0]; i++)
        if (json_object_get(s, schema_refused[i])) return schema_unsupported(c, ptr, schema_refused[i]);
    const json_t *unique = json_object_get(s, "uniqueItems");
    if (unique && json_is_true(unique)) return schema_unsupported(c, ptr, "uniqueItems");
    const json_t *ref = json_object_get(s, "$ref");
    const json_t *all = json_object_get(s, "allOf");
    if (all || ref) {
        if (ref && !all && schema_only_annotations(s)) {
            if (!json_is_string(ref)) return schema_bad(c, ptr, "$ref must be a string");
            dk_buf r = {0};
            int rc = schema_gen_ref(c, json_string_value(ref), ptr, &r);
            if (rc == DK_OK) dk_buf_puts(body, r.data);
            dk_buf_free(&r);
            return rc;
        }
        if (all && !json_is_array(all)) return schema_bad(c, ptr, "allOf must be an array");
        json_t *merged = json_object();
        if (!merged) return schema_nomem(c);
        int rc = schema_merge_into(c, merged, s, ptr, 0);
        if (rc == DK_OK) rc = schema_gen_body(c, merged, ptr, body);
        json_decref(merged);
        return rc;
    }
    const json_t *cst = json_object_get(s, "const");
    if (cst) return schema_literal_json(c, body, cst);
    const json_t *en = json_object_get(s, "enum");
    if (en) {
        if (!json_is_array(en) || json_array_size(en) == 0) return schema_bad(c, ptr, "enum must be a non-empty array");
        dk_buf_puts(body, "( ");
        for (size_t i = 0; i < json_array_size(en); i++) {
            if (i) dk_buf_puts(body, " | ");
            int rc = schema_literal_json(c, body, json_array_get(en, i));
            if (rc) return rc;
        }
        dk_buf_puts(body, " )");
        return DK_OK;
    }
    const json_t *any = json_object_get(s, "anyOf");
    if (!any) any = json_object_get(s, "oneOf");
    if (any) return schema_gen_alternatives(c, any, ptr, json_object_get(s, "anyOf") ? "anyOf" : "oneOf", body);
    const json_t *type = json_object_get(s, "type");
    if (json_is_string(type)) return schema_gen_type(c, s, json_string_value(type), ptr, body);
    if (json_is_array(type)) {
        if (json_array_size(type) == 0) return schema_bad(c, ptr, "empty type list");
        dk_buf_puts(body, "( ");
        for (size_t i = 0; i < json_array_size(type); i++) {
            const json_t *t = json_array_get(type, i);
            if (!json_is_string(t)) return schema_bad(c, ptr, "type entries must be strings");
            if (i) dk_buf_puts(body, " | ");
            int rc = schema_gen_type(c, s, json_string_value(t), ptr, body);
            if (rc) return rc;
        }
        dk_buf_puts(body, " )");
        return DK_OK;
    }
    if (type) return schema_bad(c, ptr, "type must be a string or a list");
    if (schema_is_object_like(s)) return schema_gen_object(c, s, ptr, body);
    if (json_object_get(s, "items") || json_object_get(s, "prefixItems")) return schema_gen_array(c, s, ptr, body);
    schema_shared_ref(c, body, "value", SCHEMA_USE_VALUE);
    return DK_OK;
}

/* Generates a rule for s and writes its name into rule. */
static int schema_gen(schema_conv *c, const json_t *s, const char *ptr, dk_buf *rule)
{
    if (c->depth >= SCHEMA_MAX_DEPTH) return schema_unsupported(c, ptr, "schema nested too deeply");
    c->depth++;
    dk_buf body = {0};
    int rc = schema_gen_body(c, s, ptr, &body);
    if (rc == DK_OK) rc = schema_rule_new(c, rule);
    if (rc == DK_OK) rc = schema_rule_emit(c, rule->data, &body);
    dk_buf_free(&body);
    c->depth--;
    return rc;
}

static void schema_emit_shared(schema_conv *c)
{
    const char *n = c->name;
    dk_buf *o = c->out;
    unsigned u = c->used;
    if (u & SCHEMA_USE_VALUE) u |= SCHEMA_USE_STRING | SCHEMA_USE_NUMBER;
    if (u & SCHEMA_USE_STRING) u |= SCHEMA_USE_CHAR;
    dk_buf_printf(o, "%s-ws ::= %s\n", n, SCHEMA_WS);
    if (u & SCHEMA_USE_VALUE) {
        dk_buf_printf(o, "%s-value ::= %s-object | %s-array | %s-string | %s-number | \"true\" | \"false\" | \"null\"\n", n, n, n, n, n);
        dk_buf_printf(o, "%s-object ::= \"{\" %s-ws ( %s-string %s-ws \":\" %s-ws %s-value %s-ws ( \",\" %s-ws %s-string %s-ws \":\" %s-ws %s-value %s-ws )* )? \"}\"\n",
                      n, n, n, n, n, n, n, n, n, n, n, n, n);
        dk_buf_printf(o, "%s-array ::= \"[\" %s-ws ( %s-value %s-ws ( \",\" %s-ws %s-value %s-ws )* )? \"]\"\n", n, n, n, n, n, n, n);
    }
    if (u & SCHEMA_USE_STRING) dk_buf_printf(o, "%s-string ::= \"\\\"\" %s-char* \"\\\"\"\n", n, n);
    if (u & SCHEMA_USE_CHAR) {
        dk_buf_printf(o, "%s-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" %s-hex4 )\n", n, n);
        dk_buf_printf(o, "%s-hex4 ::= [1-9a-cA-C] %s-hex %s-hex %s-hex | \"0\" ( [1-9a-fA-F] %s-hex %s-hex | \"0\" ( [1-9a-fA-F] %s-hex | \"0\" [1-9a-fA-F] ) )"
                         " | [dD] [0-7] %s-hex %s-hex | [eEfF] %s-hex %s-hex %s-hex | [dD] [89abAB] %s-hex %s-hex \"\\\\u\" [dD] [c-fC-F] %s-hex %s-hex\n",
                      n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n);
        dk_buf_printf(o, "%s-hex ::= [0-9a-fA-F]\n", n);
    }
    if (u & SCHEMA_USE_NUMBER) dk_buf_printf(o, "%s-number ::= %s\n", n, SCHEMA_NUMBER);
    if (u & SCHEMA_USE_INTEGER) dk_buf_printf(o, "%s-integer ::= %s\n", n, SCHEMA_INT);
}

int sample_json_schema_to_gbnf(const json_t *schema, const char *name, dk_buf *out, char *err)
{
    if (!name) name = "root";
    if (!schema) return dk_fail(err, DK_ERR_ARG, "json schema: no schema");
    if (!*name) return dk_fail(err, DK_ERR_ARG, "json schema: empty rule name");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return dk_fail(err, DK_ERR_ARG, "json schema: rule name '%s' has characters GBNF names cannot have", name);
    schema_conv c = {.root = schema, .name = name, .out = out, .err = err};
    size_t start = out->len;
    dk_buf rule = {0};
    int rc = schema_gen(&c, schema, "", &rule);
    if (rc == DK_OK) {
        dk_buf_printf(out, "%s ::= %s\n", name, rule.data);
        schema_emit_shared(&c);
        if (out->failed) rc = schema_nomem(&c);
    }
    dk_buf_free(&rule);
    for (size_t i = 0; i < c.n_refs; i++) {
        dk_free(c.refs[i].ref);
        dk_free(c.refs[i].rule);
    }
    dk_free(c.refs);
    if (rc != DK_OK && !out->failed) { /* leave out as it was */
        out->len = start;
        if (out->data) out->data[start] = 0;
    }
    return rc;
}
