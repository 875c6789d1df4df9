/*
 * grammar_parse.c: GBNF text -> the compiled grammar of grammar_internal.h.
 *
 * A recursive-descent parser over llama.cpp's GBNF syntax (written from its documentation):
 * rules `name ::= alternatives`, literals, character classes, `.`, groups, `|`, the
 * repetitions * + ? {m} {m,} {m,n}, # comments. A rule ends at the end of its line unless
 * the next line starts with `|` or a group is still open. Groups become anonymous rules and
 * repetitions are expanded into helper rules (x{2,4} -> x x R2, R2 ::= x R1 | "", R1 ::= x | ""),
 * so the matcher only ever sees sequences, alternatives and references. After parsing it
 * checks that every referenced rule is defined, that the start rule exists, and that no rule
 * can reach itself without consuming a character (left recursion, which would make the
 * matcher loop). Not for matching: grammar_match.c.
 */
#include "sample/grammar_internal.h"

#include <string.h>

typedef struct grammar_rule_build {
    grammar_elem *elems; /* (n) */
    size_t n, cap;
    char *name;          /* NULL for helper rules */
    size_t def_at;       /* byte offset of the definition (or of the group / repetition) */
    size_t ref_at;       /* byte offset of the first reference */
    bool defined, referenced;
} grammar_rule_build;

typedef struct grammar_parser {
    const char *src;
    size_t n_src, at;
    grammar_rule_build *rules; /* (n_rules) */
    size_t n_rules, cap_rules;
    uint32_t *names;           /* (cap_names) open-addressing table of named rule ids, UINT32_MAX empty */
    size_t cap_names, n_names;
    size_t n_elems;            /* over all rules, for the limit */
    int depth;
    char *err;
} grammar_parser;

/* ---- errors with positions ---- */

static void grammar_line_col(const grammar_parser *p, size_t at, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at && i < p->n_src; i++) {
        if (p->src[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

static int grammar_fail_at(grammar_parser *p, size_t at, int code, const char *what, const char *name)
{
    size_t line, col;
    grammar_line_col(p, at, &line, &col);
    if (name) return dk_fail(p->err, code, "grammar: line %zu, column %zu: %s '%s'", line, col, what, name);
    return dk_fail(p->err, code, "grammar: line %zu, column %zu: %s", line, col, what);
}

static int grammar_nomem(grammar_parser *p) { return dk_fail(p->err, DK_ERR_NOMEM, "grammar: out of memory"); }

/* ---- rules and names ---- */

static uint64_t grammar_hash_name(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int grammar_rule_add(grammar_parser *p, size_t at, uint32_t *out)
{
    if (p->n_rules >= GRAMMAR_MAX_RULES) return grammar_fail_at(p, at, DK_ERR_LIMIT, "too many rules", NULL);
    if (p->n_rules == p->cap_rules) {
        size_t cap = p->cap_rules ? p->cap_rules * 2 : 64;
        grammar_rule_build *r = dk_realloc(p->rules, cap * sizeof(*r));
        if (!r) return grammar_nomem(p);
        p->rules = r;
        p->cap_rules = cap;
    }
    grammar_rule_build *r = &p->rules[p->n_rules];
    memset(r, 0, sizeof(*r));
    r->def_at = at;
    r->ref_at = at;
    *out = (uint32_t)p->n_rules++;
    return DK_OK;
}

static int grammar_names_grow(grammar_parser *p)
{
    size_t cap = p->cap_names ? p->cap_names * 2 : 64;
    uint32_t *t = dk_malloc_array(cap, sizeof(uint32_t));
    if (!t) return grammar_nomem(p);
    memset(t, 0xff, cap * sizeof(uint32_t));
    for (size_t i = 0; i < p->cap_names; i++) {
        uint32_t id = p->names[i];
        if (id == UINT32_MAX) continue;
        const char *nm = p->rules[id].name;
        size_t h = (size_t)grammar_hash_name(nm, strlen(nm)) & (cap - 1);
        while (t[h] != UINT32_MAX) h = (h + 1) & (cap - 1);
        t[h] = id;
    }
    dk_free(p->names);
    p->names = t;
    p->cap_names = cap;
    return DK_OK;
}

/* The id of the rule named s[0..n), created (undefined) on first sight. */
static int grammar_rule_named(grammar_parser *p, const char *s, size_t n, size_t at, uint32_t *out)
{
    if ((p->n_names + 1) * 2 > p->cap_names && grammar_names_grow(p) != DK_OK) return DK_ERR_NOMEM;
    size_t mask = p->cap_names - 1;
    size_t h = (size_t)grammar_hash_name(s, n) & mask;
    while (p->names[h] != UINT32_MAX) {
        const char *nm = p->rules[p->names[h]].name;
        if (strlen(nm) == n && memcmp(nm, s, n) == 0) {
            *out = p->names[h];
            return DK_OK;
        }
        h = (h + 1) & mask;
    }
    char *name = dk_strndup(s, n);
    if (!name) return grammar_nomem(p);
    uint32_t id;
    int rc = grammar_rule_add(p, at, &id);
    if (rc != DK_OK) {
        dk_free(name);
        return rc;
    }
    p->rules[id].name = name;
    p->names[h] = id;
    p->n_names++;
    *out = id;
    return DK_OK;
}

static int grammar_emit(grammar_parser *p, uint32_t rule, uint32_t type, uint32_t lo, uint32_t hi)
{
    if (p->n_elems >= GRAMMAR_MAX_ELEMS)
        return grammar_fail_at(p, p->at, DK_ERR_LIMIT, "grammar too large (repetitions expand to too many elements)", NULL);
    grammar_rule_build *r = &p->rules[rule];
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        grammar_elem *e = dk_realloc(r->elems, cap * sizeof(*e));
        if (!e) return grammar_nomem(p);
        r->elems = e;
        r->cap = cap;
    }
    r->elems[r->n++] = (grammar_elem){type, lo, hi};
    p->n_elems++;
    return DK_OK;
}

/* ---- lexical helpers ---- */

static int grammar_peek(const grammar_parser *p) { return p->at < p->n_src ? (uint8_t)p->src[p->at] : -1; }

static bool grammar_is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips blanks and comments; newlines too when newline_ok (inside groups, after ::= and |). */
static void grammar_skip_space(grammar_parser *p, bool newline_ok)
{
    while (p->at < p->n_src) {
        char c = p->src[p->at];
        if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
            p->at++;
        } else if (c == '#') {
            while (p->at < p->n_src && p->src[p->at] != '\n') p->at++;
        } else {
            break;
        }
    }
}

/* Decodes one UTF-8 code point of the source; -1 when invalid. */
static int64_t grammar_utf8(grammar_parser *p)
{
    const uint8_t *s = (const uint8_t *)p->src + p->at;
    size_t left = p->n_src - p->at;
    uint32_t c = s[0];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
    if (len == 0 || len > left) return -1;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > GRAMMAR_MAX_CODEPOINT || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    p->at += len;
    return cp;
}

static int64_t grammar_hex(grammar_parser *p, int digits)
{
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int c = grammar_peek(p);
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + (uint32_t)d;
        p->at++;
    }
    return v > GRAMMAR_MAX_CODEPOINT ? -1 : (int64_t)v;
}

/* One character of a literal or class, escapes decoded. */
static int grammar_char(grammar_parser *p, uint32_t *out)
{
    size_t at = p->at;
    if (p->at >= p->n_src) return grammar_fail_at(p, at, DK_ERR_FORMAT, "unexpected end of grammar", NULL);
    if (p->src[p->at] == '\n' || p->src[p->at] == '\r')
        return grammar_fail_at(p, at, DK_ERR_FORMAT, "unterminated literal or class", NULL);
    if (p->src[p->at] != '\\') {
        int64_t cp = grammar_utf8(p);
        if (cp < 0) return grammar_fail_at(p, at, DK_ERR_FORMAT, "invalid UTF-8", NULL);
        *out = (uint32_t)cp;
        return DK_OK;
    }
    p->at++;
    int c = grammar_peek(p);
    p->at++;
    int64_t v;
    switch (c) {
    case 'x': v = grammar_hex(p, 2); break;
    case 'u': v = grammar_hex(p, 4); break;
    case 'U': v = grammar_hex(p, 8); break;
    case 'n': v = '\n'; break;
    case 'r': v = '\r'; break;
    case 't': v = '\t'; break;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '/': case '\'': v = c; break;
    default: v = -2; break;
    }
    if (v == -2) return grammar_fail_at(p, at, DK_ERR_FORMAT, "unknown escape", NULL);
    if (v < 0) return grammar_fail_at(p, at, DK_ERR_FORMAT, "bad hexadecimal escape", NULL);
    *out = (uint32_t)v;
    return DK_OK;
}

/* ---- symbols ---- */

static int grammar_literal(grammar_parser *p, uint32_t rule)
{
    p->at++; /* opening quote */
    for (;;) {
        if (p->at >= p->n_src) return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "unterminated literal", NULL);
        if (p->src[p->at] == '"') {
            p->at++;
            return DK_OK;
        }
        uint32_t cp;
        int rc = grammar_char(p, &cp);
        if (rc == DK_OK) rc = grammar_emit(p, rule, GRAMMAR_CHAR, cp, cp);
        if (rc != DK_OK) return rc;
    }
}

static int grammar_class(grammar_parser *p, uint32_t rule)
{
    size_t start = p->at++;
    bool negated = grammar_peek(p) == '^';
    if (negated) p->at++;
    size_t n_ranges = 0;
    for (;;) {
        if (p->at >= p->n_src) return grammar_fail_at(p, start, DK_ERR_FORMAT, "unterminated character class", NULL);
        if (p->src[p->at] == ']') {
            p->at++;
            break;
        }
        uint32_t lo, hi;
        int rc = grammar_char(p, &lo);
        if (rc != DK_OK) return rc;
        hi = lo;
        if (grammar_peek(p) == '-' && p->at + 1 < p->n_src && p->src[p->at + 1] != ']') {
            p->at++;
            size_t at = p->at;
            if ((rc = grammar_char(p, &hi)) != DK_OK) return rc;
            if (hi < lo) return grammar_fail_at(p, at, DK_ERR_FORMAT, "character range out of order", NULL);
        }
        uint32_t type = n_ranges ? GRAMMAR_CHAR_MORE : negated ? GRAMMAR_CHAR_NOT : GRAMMAR_CHAR;
        if ((rc = grammar_emit(p, rule, type, lo, hi)) != DK_OK) return rc;
        n_ranges++;
    }
    if (n_ranges == 0) return grammar_emit(p, rule, negated ? GRAMMAR_CHAR_NOT : GRAMMAR_CHAR, 1, 0);
    return DK_OK;
}

static int grammar_alternates(grammar_parser *p, uint32_t rule, bool nested);

static int grammar_group(grammar_parser *p, uint32_t rule)
{
    size_t start = p->at++;
    if (p->depth >= GRAMMAR_MAX_NESTING) return grammar_fail_at(p, start, DK_ERR_LIMIT, "groups nested too deeply", NULL);
    uint32_t sub;
    int rc = grammar_rule_add(p, start, &sub);
    if (rc != DK_OK) return rc;
    p->rules[sub].defined = true;
    grammar_skip_space(p, true);
    p->depth++;
    rc = grammar_alternates(p, sub, true);
    p->depth--;
    if (rc != DK_OK) return rc;
    if (grammar_peek(p) != ')') return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "expected ')'", NULL);
    p->at++;
    return grammar_emit(p, rule, GRAMMAR_REF, sub, 0);
}

/* Parses {m}, {m,}, {m,n} after the '{'; *max = UINT32_MAX for no upper bound. */
static int grammar_braces(grammar_parser *p, uint32_t *min, uint32_t *max)
{
    size_t start = p->at++;
    uint32_t v[2] = {0, 0};
    bool has_max = true;
    for (int k = 0; k < 2; k++) {
        grammar_skip_space(p, false);
        int c = grammar_peek(p);
        if (k == 1 && c == '}') {
            has_max = false;
            break;
        }
        if (c < '0' || c > '9') return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "expected a number in { }", NULL);
        uint64_t n = 0;
        while ((c = grammar_peek(p)) >= '0' && c <= '9') {
            n = n * 10 + (uint64_t)(c - '0');
            if (n > GRAMMAR_MAX_REPEAT) return grammar_fail_at(p, start, DK_ERR_LIMIT, "repetition count too large", NULL);
            p->at++;
        }
        v[k] = (uint32_t)n;
        grammar_skip_space(p, false);
        if (k == 0) {
            if (grammar_peek(p) == '}') {
                v[1] = v[0];
                break;
            }
            if (grammar_peek(p) != ',') return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "expected ',' or '}'", NULL);
            p->at++;
        }
    }
    grammar_skip_space(p, false);
    if (grammar_peek(p) != '}') return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "expected '}'", NULL);
    p->at++;
    if (has_max && v[1] < v[0]) return grammar_fail_at(p, start, DK_ERR_FORMAT, "repetition {m,n} with n < m", NULL);
    *min = v[0];
    *max = has_max ? v[1] : UINT32_MAX;
    return DK_OK;
}

/* Whether elems[from..n) of a rule is one copyable symbol (a reference or one class). */
static bool grammar_is_one_symbol(const grammar_rule_build *r, size_t from)
{
    if (r->n - from == 1) return true;
    if (!grammar_elem_is_char(&r->elems[from])) return false;
    for (size_t i = from + 1; i < r->n; i++)
        if (r->elems[i].type != GRAMMAR_CHAR_MORE) return false;
    return true;
}

/* Replaces the symbol at elems[from..) of rule by its repetition {min,max}. */
static int grammar_repeat(grammar_parser *p, uint32_t rule, size_t from, uint32_t min, uint32_t max, size_t at)
{
    grammar_rule_build *r = &p->rules[rule];
    if (r->n == from) return grammar_fail_at(p, at, DK_ERR_FORMAT, "nothing to repeat", NULL);
    grammar_elem sym[1 + 64];
    size_t n_sym = r->n - from;
    int rc;
    if (!grammar_is_one_symbol(r, from) || n_sym > 64) {
        /* a literal of several characters: move it into a helper rule, repeat the reference */
        uint32_t sub;
        if ((rc = grammar_rule_add(p, at, &sub)) != DK_OK) return rc;
        r = &p->rules[rule];
        p->rules[sub].defined = true;
        for (size_t i = from; i < r->n; i++) {
            grammar_elem e = p->rules[rule].elems[i];
            if ((rc = grammar_emit(p, sub, e.type, e.lo, e.hi)) != DK_OK) return rc;
        }
        if ((rc = grammar_emit(p, sub, GRAMMAR_END, 0, 0)) != DK_OK) return rc;
        sym[0] = (grammar_elem){GRAMMAR_REF, sub, 0};
        n_sym = 1;
    } else {
        memcpy(sym, r->elems + from, n_sym * sizeof(grammar_elem));
    }
    p->n_elems -= p->rules[rule].n - from;
    p->rules[rule].n = from;
    for (uint32_t k = 0; k < min; k++)
        for (size_t i = 0; i < n_sym; i++)
            if ((rc = grammar_emit(p, rule, sym[i].type, sym[i].lo, sym[i].hi)) != DK_OK) return rc;
    if (max == min) return DK_OK;
    /* unbounded: S ::= sym S | ""; bounded: R1 ::= sym | "", Rk ::= sym R(k-1) | "" */
    uint32_t n_opt = max == UINT32_MAX ? 1 : max - min;
    uint32_t prev = UINT32_MAX;
    for (uint32_t k = 0; k < n_opt; k++) {
        uint32_t sub;
        if ((rc = grammar_rule_add(p, at, &sub)) != DK_OK) return rc;
        p->rules[sub].defined = true;
        for (size_t i = 0; i < n_sym; i++)
            if ((rc = grammar_emit(p, sub, sym[i].type, sym[i].lo, sym[i].hi)) != DK_OK) return rc;
        uint32_t tail = max == UINT32_MAX ? sub : prev;
        if (tail != UINT32_MAX && (rc = grammar_emit(p, sub, GRAMMAR_REF, tail, 0)) != DK_OK) return rc;
        if ((rc = grammar_emit(p, sub, GRAMMAR_ALT, 0, 0)) != DK_OK || (rc = grammar_emit(p, sub, GRAMMAR_END, 0, 0)) != DK_OK)
            return rc;
        prev = sub;
    }
    return grammar_emit(p, rule, GRAMMAR_REF, prev, 0);
}

static int grammar_reference(grammar_parser *p, uint32_t rule)
{
    size_t start = p->at;
    while (grammar_is_name_char(grammar_peek(p))) p->at++;
    uint32_t id;
    int rc = grammar_rule_named(p, p->src + start, p->at - start, start, &id);
    if (rc != DK_OK) return rc;
    if (!p->rules[id].referenced) {
        p->rules[id].referenced = true;
        p->rules[id].ref_at = start;
    }
    return grammar_emit(p, rule, GRAMMAR_REF, id, 0);
}

static int grammar_sequence(grammar_parser *p, uint32_t rule, bool nested)
{
    size_t last = SIZE_MAX; /* start of the last symbol, for a following repetition */
    for (;;) {
        int c = grammar_peek(p);
        size_t at = p->at, before = p->rules[rule].n;
        int rc = DK_OK;
        if (c == '"') {
            rc = grammar_literal(p, rule);
        } else if (c == '[') {
            rc = grammar_class(p, rule);
        } else if (c == '.') {
            p->at++;
            rc = grammar_emit(p, rule, GRAMMAR_CHAR, 0, GRAMMAR_MAX_CODEPOINT);
        } else if (c == '(') {
            rc = grammar_group(p, rule);
        } else if (c >= 0 && grammar_is_name_char(c)) {
            rc = grammar_reference(p, rule);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == SIZE_MAX) return grammar_fail_at(p, at, DK_ERR_FORMAT, "repetition without a symbol before it", NULL);
            uint32_t min = c == '+' ? 1 : 0, max = c == '?' ? 1 : UINT32_MAX;
            if (c == '{') rc = grammar_braces(p, &min, &max);
            else p->at++;
            if (rc == DK_OK) rc = grammar_repeat(p, rule, last, min, max, at);
            before = SIZE_MAX;
        } else {
            return DK_OK;
        }
        if (rc != DK_OK) return rc;
        last = before;
        grammar_skip_space(p, nested);
    }
}

static int grammar_alternates(grammar_parser *p, uint32_t rule, bool nested)
{
    for (;;) {
        int rc = grammar_sequence(p, rule, nested);
        if (rc != DK_OK) return rc;
        if (!nested) {
            /* a rule may continue on the next line when that line starts with '|' */
            size_t save = p->at;
            grammar_skip_space(p, true);
            if (grammar_peek(p) != '|') p->at = save;
        }
        if (grammar_peek(p) != '|') return grammar_emit(p, rule, GRAMMAR_END, 0, 0);
        p->at++;
        if ((rc = grammar_emit(p, rule, GRAMMAR_ALT, 0, 0)) != DK_OK) return rc;
        grammar_skip_space(p, true);
    }
}

static int grammar_rule(grammar_parser *p)
{
    size_t start = p->at;
    while (grammar_is_name_char(grammar_peek(p))) p->at++;
    if (p->at == start) return grammar_fail_at(p, start, DK_ERR_FORMAT, "expected a rule name", NULL);
    uint32_t id;
    int rc = grammar_rule_named(p, p->src + start, p->at - start, start, &id);
    if (rc != DK_OK) return rc;
    if (p->rules[id].defined) return grammar_fail_at(p, start, DK_ERR_FORMAT, "rule defined twice:", p->rules[id].name);
    p->rules[id].defined = true;
    p->rules[id].def_at = start;
    grammar_skip_space(p, false);
    if (p->n_src - p->at < 3 || memcmp(p->src + p->at, "::=", 3) != 0)
        return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "expected '::='", NULL);
    p->at += 3;
    grammar_skip_space(p, true);
    if ((rc = grammar_alternates(p, id, false)) != DK_OK) return rc;
    int c = grammar_peek(p);
    if (c != -1 && c != '\n' && c != '\r') return grammar_fail_at(p, p->at, DK_ERR_FORMAT, "unexpected character", NULL);
    return DK_OK;
}

/* ---- checks over the whole grammar ---- */

static int grammar_check_defined(grammar_parser *p)
{
    for (size_t r = 0; r < p->n_rules; r++)
        if (!p->rules[r].defined)
            return grammar_fail_at(p, p->rules[r].ref_at, DK_ERR_FORMAT, "undefined rule", p->rules[r].name);
    return DK_OK;
}

/* nullable[r]: rule r can match the empty string (iterated to a fixed point). */
static void grammar_nullable(const sample_grammar *g, bool *nullable)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t r = g->n_rules; r-- > 0;) {
            if (nullable[r]) continue;
            for (uint32_t a = g->rule_alts[r]; a < g->rule_alts[r + 1] && !nullable[r]; a++) {
                const grammar_elem *e = g->elems + g->alt_first[a];
                while (e->type == GRAMMAR_REF && nullable[e->lo]) e++;
                if (grammar_elem_is_end(e)) nullable[r] = changed = true;
            }
        }
    }
}

/* Left edges r -> s: s appears in an alternative of r after only nullable symbols. A cycle
 * over them is left recursion. Iterative depth-first search (grammars can be deep). */
static int grammar_check_left_recursion(grammar_parser *p, const sample_grammar *g)
{
    int rc = DK_OK;
    bool *nullable = dk_calloc(g->n_rules, sizeof(bool));
    uint8_t *color = dk_calloc(g->n_rules, 1); /* 0 new, 1 on the path, 2 done */
    uint32_t *stack_rule = dk_malloc_array(g->n_rules, sizeof(uint32_t));
    uint32_t *stack_alt = dk_malloc_array(g->n_rules, sizeof(uint32_t));
    uint32_t *stack_elem = dk_malloc_array(g->n_rules, sizeof(uint32_t));
    if (!nullable || !color || !stack_rule || !stack_alt || !stack_elem) {
        rc = grammar_nomem(p);
        goto done;
    }
    grammar_nullable(g, nullable);
    for (uint32_t start = 0; start < g->n_rules && rc == DK_OK; start++) {
        if (color[start]) continue;
        size_t n = 0;
        stack_rule[n] = start;
        stack_alt[n] = g->rule_alts[start];
        stack_elem[n] = 0;
        color[start] = 1;
        n++;
        while (n > 0) {
            size_t top = n - 1;
            uint32_t r = stack_rule[top];
            if (stack_alt[top] >= g->rule_alts[r + 1]) {
                color[r] = 2;
                n--;
                continue;
            }
            const grammar_elem *e = g->elems + g->alt_first[stack_alt[top]] + stack_elem[top];
            if (e->type != GRAMMAR_REF) {
                stack_alt[top]++;
                stack_elem[top] = 0;
                continue;
            }
            uint32_t s = e->lo;
            if (nullable[s]) stack_elem[top]++;
            else {
                stack_alt[top]++;
                stack_elem[top] = 0;
            }
            if (color[s] == 1) {
                const grammar_rule_build *rb = &p->rules[s];
                rc = rb->name ? grammar_fail_at(p, rb->def_at, DK_ERR_FORMAT, "left recursion in rule", rb->name)
                              : grammar_fail_at(p, rb->def_at, DK_ERR_FORMAT,
                                                "left recursion (a group or repetition that can match nothing, repeated or reached again first)", NULL);
                break;
            }
            if (color[s] == 0) {
                color[s] = 1;
                stack_rule[n] = s;
                stack_alt[n] = g->rule_alts[s];
                stack_elem[n] = 0;
                n++;
            }
        }
    }
done:
    dk_free(nullable);
    dk_free(color);
    dk_free(stack_rule);
    dk_free(stack_alt);
    dk_free(stack_elem);
    return rc;
}

/* Lays the rules out one after another and indexes their alternatives. */
static int grammar_compile(grammar_parser *p, sample_grammar *g)
{
    size_t n_elems = 0, n_alts = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        n_elems += p->rules[r].n;
        for (size_t i = 0; i < p->rules[r].n; i++) n_alts += grammar_elem_is_end(&p->rules[r].elems[i]);
    }
    g->elems = dk_malloc_array(n_elems + 1, sizeof(grammar_elem));
    g->rule_first = dk_malloc_array(p->n_rules + 1, sizeof(uint32_t));
    g->rule_alts = dk_malloc_array(p->n_rules + 1, sizeof(uint32_t));
    g->alt_first = dk_malloc_array(n_alts + 1, sizeof(uint32_t));
    if (!g->elems || !g->rule_first || !g->rule_alts || !g->alt_first) return grammar_nomem(p);
    size_t at = 0, alt = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        const grammar_rule_build *rb = &p->rules[r];
        g->rule_first[r] = (uint32_t)at;
        g->rule_alts[r] = (uint32_t)alt;
        g->alt_first[alt++] = (uint32_t)at;
        memcpy(g->elems + at, rb->elems, rb->n * sizeof(grammar_elem));
        for (size_t i = 0; i < rb->n; i++)
            if (rb->elems[i].type == GRAMMAR_ALT) g->alt_first[alt++] = (uint32_t)(at + i + 1);
        at += rb->n;
    }
    g->rule_alts[p->n_rules] = (uint32_t)alt;
    g->n_elems = at;
    g->n_rules = p->n_rules;
    g->n_alts = alt;
    return DK_OK;
}

static void grammar_parser_free(grammar_parser *p)
{
    for (size_t r = 0; r < p->n_rules; r++) {
        dk_free(p->rules[r].elems);
        dk_free(p->rules[r].name);
    }
    dk_free(p->rules);
    dk_free(p->names);
}

static int grammar_parse_all(grammar_parser *p, sample_grammar *g, const char *root)
{
    int rc;
    grammar_skip_space(p, true);
    while (p->at < p->n_src) {
        if ((rc = grammar_rule(p)) != DK_OK) return rc;
        grammar_skip_space(p, true);
    }
    if ((rc = grammar_check_defined(p)) != DK_OK) return rc;
    uint32_t root_id = UINT32_MAX;
    size_t n_root = strlen(root);
    if (p->cap_names) {
        size_t mask = p->cap_names - 1;
        for (size_t h = (size_t)grammar_hash_name(root, n_root) & mask; p->names[h] != UINT32_MAX; h = (h + 1) & mask)
            if (strcmp(p->rules[p->names[h]].name, root) == 0) root_id = p->names[h];
    }
    if (root_id == UINT32_MAX) return grammar_fail_at(p, p->n_src, DK_ERR_FORMAT, "no start rule named", root);
    g->root = root_id;
    if ((rc = grammar_compile(p, g)) != DK_OK) return rc;
    return grammar_check_left_recursion(p, g);
}

int sample_grammar_parse(sample_grammar **out, const char *gbnf, size_t n_bytes, const char *root, char *err)
{
    *out = NULL;
    if (!gbnf && n_bytes) return dk_fail(err, DK_ERR_ARG, "grammar: no text");
    grammar_parser p = {.src = gbnf ? gbnf : "", .n_src = n_bytes, .err = err};
    sample_grammar *g = dk_calloc(1, sizeof(*g));
    if (!g) return dk_fail(err, DK_ERR_NOMEM, "grammar: out of memory");
    int rc = grammar_parse_all(&p, g, root ? root : "root");
    grammar_parser_free(&p);
    if (rc != DK_OK) {
        sample_grammar_free(g);
        return rc;
    }
    *out = g;
    return DK_OK;
}

void sample_grammar_free(sample_grammar *grammar)
{
    if (!grammar) return;
    dk_free(grammar->elems);
    dk_free(grammar->rule_first);
    dk_free(grammar->rule_alts);
    dk_free(grammar->alt_first);
    dk_free(grammar);
}
