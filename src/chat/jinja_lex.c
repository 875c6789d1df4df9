/*
 * jinja_lex.c: template source -> tokens, exactly as @huggingface/jinja's lexer makes them.
 *
 * First the text passes through HF's preprocessing, in its order: one trailing newline is
 * dropped; lstrip_blocks removes spaces and tabs between a line start and "{%", "{#" (and
 * "{-"); trim_blocks removes the newline right after "%}", "#}" (and "-}"); the
 * transformers-specific {% generation %} / {% endgeneration %} tags vanish together with the
 * whitespace around them that their "-" markers ask to strip. Each pass keeps, for every byte,
 * its offset in the original source, so errors point at what the author wrote.
 * Then tokens: text, comments, and the inside of {{ }} and {% %} ({%- / -%} trim the
 * neighbouring text of JavaScript whitespace). Not for: parsing (jinja_parse.c).
 */
#include "chat/jinja_internal.h"

#include <string.h>

typedef struct lex_buf {
    char *p;
    uint32_t *pos; /* original offset of each byte */
    size_t n;
} lex_buf;

typedef struct lexer {
    jinja_arena *arena;
    const char *source;
    size_t n_source;
    lex_buf src;
    jinja_token *toks;
    size_t n_toks, cap_toks;
    size_t cur;
    int curly_depth;
    char *err;
} lexer;

static int lex_buf_alloc(jinja_arena *arena, lex_buf *b, size_t n)
{
    b->p = jinja_alloc(arena, n + 1);
    b->pos = jinja_alloc(arena, (n + 1) * sizeof(uint32_t));
    b->n = 0;
    return b->p && b->pos ? DK_OK : DK_ERR_NOMEM;
}

static void lex_buf_put(lex_buf *b, const lex_buf *from, size_t i)
{
    b->p[b->n] = from->p[i];
    b->pos[b->n++] = from->pos[i];
}

/* Bytes of the JavaScript whitespace code point at s[i], or 0. */
static size_t space_at(const char *s, size_t n, size_t i)
{
    if (i >= n) return 0;
    size_t k = i;
    uint32_t c = jinja_utf8_next(s, n, &k);
    return jinja_js_space(c) ? k - i : 0;
}

/* Bytes of the JavaScript whitespace code point ending at s[end), or 0. */
static size_t space_before(const char *s, size_t start, size_t end)
{
    for (size_t len = 1; len <= 3 && len <= end - start; len++)
        if (space_at(s, end, end - len) == len) return len;
    return 0;
}

static bool line_start(const lex_buf *b, size_t i)
{
    if (i == 0) return true;
    char c = b->p[i - 1];
    if (c == '\n' || c == '\r') return true;
    /* U+2028 and U+2029 end lines for JavaScript's multiline ^ too. */
    return i >= 3 && (unsigned char)b->p[i - 3] == 0xe2 && (unsigned char)b->p[i - 2] == 0x80 &&
           ((unsigned char)c == 0xa8 || (unsigned char)c == 0xa9);
}

/* template.replace(/^[ \t]*({[#%-])/gm, "$1") */
static int pass_lstrip(jinja_arena *arena, lex_buf *b)
{
    lex_buf out;
    if (lex_buf_alloc(arena, &out, b->n)) return DK_ERR_NOMEM;
    for (size_t i = 0; i < b->n;) {
        if (line_start(b, i)) {
            size_t j = i;
            while (j < b->n && (b->p[j] == ' ' || b->p[j] == '\t')) j++;
            if (j + 1 < b->n && b->p[j] == '{' && (b->p[j + 1] == '#' || b->p[j + 1] == '%' || b->p[j + 1] == '-')) {
                lex_buf_put(&out, b, j);
                lex_buf_put(&out, b, j + 1);
                i = j + 2;
                continue;
            }
        }
        lex_buf_put(&out, b, i++);
    }
    *b = out;
    return DK_OK;
}

/* template.replace(/([#%-]})\n/g, "$1") */
static int pass_trim(jinja_arena *arena, lex_buf *b)
{
    lex_buf out;
    if (lex_buf_alloc(arena, &out, b->n)) return DK_ERR_NOMEM;
    for (size_t i = 0; i < b->n; i++) {
        if (b->p[i] == '\n' && i >= 2 && b->p[i - 1] == '}' &&
            (b->p[i - 2] == '#' || b->p[i - 2] == '%' || b->p[i - 2] == '-'))
            continue;
        lex_buf_put(&out, b, i);
    }
    *b = out;
    return DK_OK;
}

/* Matches {%(-?)\s*(?:end)?generation\s*(-?)%} at b[i]: returns its end or 0. */
static size_t generation_tag(const lex_buf *b, size_t i, bool *lstrip, bool *rstrip)
{
    const char *s = b->p;
    size_t n = b->n, k = i + 2, w;
    if (k > n || s[i] != '{' || s[i + 1] != '%') return 0;
    *lstrip = k < n && s[k] == '-';
    if (*lstrip) k++;
    while ((w = space_at(s, n, k))) k += w;
    if (k + 3 <= n && memcmp(s + k, "end", 3) == 0 && !(k + 10 <= n && memcmp(s + k, "generation", 10) == 0)) k += 3;
    if (k + 10 > n || memcmp(s + k, "generation", 10) != 0) return 0;
    k += 10;
    while ((w = space_at(s, n, k))) k += w;
    *rstrip = k < n && s[k] == '-';
    if (*rstrip) k++;
    if (k + 2 > n || s[k] != '%' || s[k + 1] != '}') return 0;
    return k + 2;
}

/* template.replace(/(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs, ...) */
static int pass_generation(jinja_arena *arena, lex_buf *b)
{
    lex_buf out;
    if (lex_buf_alloc(arena, &out, b->n)) return DK_ERR_NOMEM;
    size_t floor_n = 0; /* a match's leading whitespace cannot reach into the previous match */
    for (size_t i = 0; i < b->n;) {
        bool lstrip, rstrip;
        size_t end = b->p[i] == '{' ? generation_tag(b, i, &lstrip, &rstrip) : 0;
        if (!end) {
            lex_buf_put(&out, b, i++);
            continue;
        }
        if (lstrip) {
            size_t w;
            while (out.n > floor_n && (w = space_before(out.p, floor_n, out.n))) out.n -= w;
        }
        i = end;
        size_t w;
        while ((w = space_at(b->p, b->n, i))) {
            for (size_t j = 0; j < w; j++)
                if (!rstrip) lex_buf_put(&out, b, i + j);
            i += w;
        }
        floor_n = out.n;
    }
    *b = out;
    return DK_OK;
}

static int preprocess(lexer *lx)
{
    size_t n = lx->n_source;
    if (n && lx->source[n - 1] == '\n') n--;
    lex_buf b;
    if (lex_buf_alloc(lx->arena, &b, n)) return DK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        b.p[i] = lx->source[i];
        b.pos[i] = (uint32_t)i;
    }
    b.n = n;
    int rc;
    if ((rc = pass_lstrip(lx->arena, &b)) || (rc = pass_trim(lx->arena, &b)) || (rc = pass_generation(lx->arena, &b))) return rc;
    b.p[b.n] = 0;
    b.pos[b.n] = (uint32_t)lx->n_source;
    lx->src = b;
    return DK_OK;
}

/* ---- tokens ---- */

static size_t src_pos(const lexer *lx, size_t i)
{
    return lx->src.pos[i < lx->src.n ? i : lx->src.n];
}

static int lex_error(lexer *lx, size_t i, const char *what, const char *detail, size_t detail_len)
{
    dk_buf b = {0};
    jinja_pos_format(lx->source, lx->n_source, src_pos(lx, i), &b);
    dk_buf_puts(&b, what);
    if (detail) dk_buf_append(&b, detail, detail_len);
    dk_fail(lx->err, DK_ERR_FORMAT, "%s", b.data ? b.data : "syntax error");
    dk_buf_free(&b);
    return DK_ERR_FORMAT;
}

static int push(lexer *lx, enum jinja_tok type, const char *text, size_t len, size_t at)
{
    if (lx->n_toks == lx->cap_toks) {
        size_t cap = lx->cap_toks ? lx->cap_toks * 2 : 64, bytes;
        if (dk_mul_size(cap, sizeof(jinja_token), &bytes)) return DK_ERR_NOMEM;
        jinja_token *t = jinja_alloc(lx->arena, bytes);
        if (!t) return lx->arena->over_limit ? DK_ERR_LIMIT : DK_ERR_NOMEM;
        if (lx->n_toks) memcpy(t, lx->toks, lx->n_toks * sizeof *t);
        lx->toks = t;
        lx->cap_toks = cap;
    }
    jinja_token *t = &lx->toks[lx->n_toks++];
    t->type = type;
    t->text = text;
    t->len = len;
    t->pos = src_pos(lx, at);
    return DK_OK;
}

static bool last_is(const lexer *lx, enum jinja_tok type)
{
    return lx->n_toks && lx->toks[lx->n_toks - 1].type == type;
}

static void strip_trailing(lexer *lx)
{
    if (!last_is(lx, JT_TEXT)) return;
    jinja_token *t = &lx->toks[lx->n_toks - 1];
    t->len = jinja_js_trim(t->text, t->len, 2).n;
    if (t->len == 0) lx->n_toks--;
}

static void skip_space(lexer *lx)
{
    size_t w;
    while ((w = space_at(lx->src.p, lx->src.n, lx->cur))) lx->cur += w;
}

static bool at(const lexer *lx, const char *s)
{
    size_t n = strlen(s);
    return lx->cur + n <= lx->src.n && memcmp(lx->src.p + lx->cur, s, n) == 0;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A quoted string; escapes as HF knows them (\n \t \r \b \f \v \' \" \\ \xHH \uHHHH). */
static int lex_string(lexer *lx)
{
    const char *s = lx->src.p;
    size_t n = lx->src.n, start = lx->cur;
    char quote = s[lx->cur++];
    dk_buf b = {0};
    uint32_t high = 0; /* a pending high surrogate from \uD8xx */
    int rc = DK_OK;
    while (lx->cur < n && s[lx->cur] != quote) {
        uint32_t cp;
        if (s[lx->cur] != '\\') {
            if (high) { jinja_utf8_put(&b, 0xfffd); high = 0; }
            dk_buf_putc(&b, s[lx->cur++]);
            continue;
        }
        if (++lx->cur >= n) break;
        char e = s[lx->cur++];
        if (e == 'x' || e == 'u') {
            size_t len = e == 'x' ? 2 : 4;
            cp = 0;
            for (size_t k = 0; k < len; k++) {
                int d = lx->cur + k < n ? hex_digit(s[lx->cur + k]) : -1;
                if (d < 0) {
                    rc = lex_error(lx, lx->cur - 2, "invalid hexadecimal escape sequence", NULL, 0);
                    goto done;
                }
                cp = cp * 16 + (uint32_t)d;
            }
            lx->cur += len;
        } else {
            static const char from[] = "ntrbfv'\"\\", to[] = "\n\t\r\b\f\v'\"\\";
            const char *f = memchr(from, e, sizeof from - 1);
            if (!f) {
                rc = lex_error(lx, lx->cur - 2, "unexpected escaped character: ", &e, 1);
                goto done;
            }
            cp = (unsigned char)to[f - from];
        }
        if (high && cp >= 0xdc00 && cp <= 0xdfff) {
            jinja_utf8_put(&b, 0x10000 + ((high - 0xd800) << 10) + (cp - 0xdc00));
            high = 0;
            continue;
        }
        if (high) { jinja_utf8_put(&b, 0xfffd); high = 0; }
        if (cp >= 0xd800 && cp <= 0xdbff) high = cp;
        else jinja_utf8_put(&b, cp >= 0xdc00 && cp <= 0xdfff ? 0xfffd : cp);
    }
    if (high) jinja_utf8_put(&b, 0xfffd);
    if (lx->cur >= n) {
        rc = lex_error(lx, start, "unterminated string", NULL, 0);
        goto done;
    }
    lx->cur++;
    if (b.failed) { rc = DK_ERR_NOMEM; goto done; }
    char *text = jinja_strndup(lx->arena, b.data ? b.data : "", b.len);
    rc = text ? push(lx, JT_STRING, text, b.len, start) : DK_ERR_NOMEM;
done:
    dk_buf_free(&b);
    return rc;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Digits, and ".digits" unless the number follows a dot (x.0.1). start: where the token began
 * (a sign before it belongs to it). */
static int lex_number(lexer *lx, size_t start, bool allow_frac)
{
    const char *s = lx->src.p;
    while (lx->cur < lx->src.n && is_digit(s[lx->cur])) lx->cur++;
    if (allow_frac && lx->cur + 1 < lx->src.n && s[lx->cur] == '.' && is_digit(s[lx->cur + 1])) {
        lx->cur++;
        while (lx->cur < lx->src.n && is_digit(s[lx->cur])) lx->cur++;
    }
    return push(lx, JT_NUMBER, s + start, lx->cur - start, start);
}

typedef struct op_entry {
    const char *text;
    enum jinja_tok type;
} op_entry;

static const op_entry op_table[] = {
    {"{%", JT_OPEN_STMT}, {"%}", JT_CLOSE_STMT}, {"{{", JT_OPEN_EXPR}, {"}}", JT_CLOSE_EXPR},
    {"(", JT_LPAREN}, {")", JT_RPAREN}, {"{", JT_LBRACE}, {"}", JT_RBRACE}, {"[", JT_LBRACKET},
    {"]", JT_RBRACKET}, {",", JT_COMMA}, {".", JT_DOT}, {":", JT_COLON}, {"|", JT_PIPE},
    {"<=", JT_CMP}, {">=", JT_CMP}, {"==", JT_CMP}, {"!=", JT_CMP}, {"<", JT_CMP}, {">", JT_CMP},
    {"+", JT_ADD}, {"-", JT_ADD}, {"~", JT_ADD}, {"**", JT_POW}, {"*", JT_MUL}, {"//", JT_MUL},
    {"/", JT_MUL}, {"%", JT_MUL}, {"=", JT_EQUALS},
};

static int lex_comment(lexer *lx)
{
    size_t start = lx->cur;
    lx->cur += 2;
    bool strip_before = lx->cur < lx->src.n && lx->src.p[lx->cur] == '-';
    if (strip_before) lx->cur++;
    size_t body = lx->cur;
    while (!(lx->cur + 1 < lx->src.n && lx->src.p[lx->cur] == '#' && lx->src.p[lx->cur + 1] == '}')) {
        if (lx->cur + 2 >= lx->src.n) return lex_error(lx, start, "missing end of comment tag", NULL, 0);
        lx->cur++;
    }
    size_t len = lx->cur - body;
    bool strip_after = len && lx->src.p[lx->cur - 1] == '-';
    if (strip_after) len--;
    if (strip_before) strip_trailing(lx);
    int rc = push(lx, JT_COMMENT, lx->src.p + body, len, start);
    lx->cur += 2;
    if (strip_after) skip_space(lx);
    return rc;
}

static int lex_text(lexer *lx, bool *pushed)
{
    const char *s = lx->src.p;
    size_t start = lx->cur;
    while (lx->cur < lx->src.n &&
           !(s[lx->cur] == '{' && lx->cur + 1 < lx->src.n && (s[lx->cur + 1] == '%' || s[lx->cur + 1] == '{' || s[lx->cur + 1] == '#')))
        lx->cur++;
    *pushed = lx->cur > start;
    return *pushed ? push(lx, JT_TEXT, s + start, lx->cur - start, start) : DK_OK;
}

/* One token (or text run) at lx->cur. */
static int lex_one(lexer *lx)
{
    const char *s = lx->src.p;
    int rc;
    if (lx->n_toks == 0 || last_is(lx, JT_CLOSE_STMT) || last_is(lx, JT_CLOSE_EXPR) || last_is(lx, JT_COMMENT)) {
        bool pushed;
        if ((rc = lex_text(lx, &pushed)) || pushed) return rc;
    }
    if (at(lx, "{#")) return lex_comment(lx);
    if (at(lx, "{%-") || at(lx, "{{-")) {
        bool stmt = s[lx->cur + 1] == '%';
        strip_trailing(lx);
        if (!stmt) lx->curly_depth = 0;
        rc = push(lx, stmt ? JT_OPEN_STMT : JT_OPEN_EXPR, s + lx->cur, 2, lx->cur);
        lx->cur += 3;
        return rc;
    }
    skip_space(lx);
    if (lx->cur >= lx->src.n) return DK_OK;
    if (at(lx, "-%}") || at(lx, "-}}")) {
        bool stmt = s[lx->cur + 1] == '%';
        rc = push(lx, stmt ? JT_CLOSE_STMT : JT_CLOSE_EXPR, s + lx->cur + 1, 2, lx->cur);
        lx->cur += 3;
        skip_space(lx);
        return rc;
    }
    char c = s[lx->cur];
    if (c == '-' || c == '+') {
        if (lx->n_toks == 0 || last_is(lx, JT_TEXT)) return lex_error(lx, lx->cur, "unexpected character: ", &c, 1);
        if (!(last_is(lx, JT_NAME) || last_is(lx, JT_NUMBER) || last_is(lx, JT_STRING) || last_is(lx, JT_RPAREN) ||
              last_is(lx, JT_RBRACKET))) {
            size_t start = lx->cur++;
            if (lx->cur < lx->src.n && is_digit(s[lx->cur])) return lex_number(lx, start, true);
            return push(lx, JT_UNARY, s + start, 1, start);
        }
    }
    for (size_t k = 0; k < sizeof op_table / sizeof op_table[0]; k++) {
        const op_entry *e = &op_table[k];
        if (e->type == JT_CLOSE_EXPR && lx->curly_depth > 0) continue;
        if (!at(lx, e->text)) continue;
        if (e->type == JT_OPEN_EXPR) lx->curly_depth = 0;
        else if (e->type == JT_LBRACE) lx->curly_depth++;
        else if (e->type == JT_RBRACE) lx->curly_depth--;
        size_t len = strlen(e->text);
        rc = push(lx, e->type, s + lx->cur, len, lx->cur);
        lx->cur += len;
        return rc;
    }
    if (c == '\'' || c == '"') return lex_string(lx);
    if (is_digit(c)) return lex_number(lx, lx->cur, !last_is(lx, JT_DOT));
    if (is_word(c)) {
        size_t start = lx->cur;
        while (lx->cur < lx->src.n && is_word(s[lx->cur])) lx->cur++;
        return push(lx, JT_NAME, s + start, lx->cur - start, start);
    }
    size_t k = lx->cur;
    jinja_utf8_next(s, lx->src.n, &k);
    return lex_error(lx, lx->cur, "unexpected character: ", s + lx->cur, k - lx->cur);
}

int jinja_lex(jinja_arena *arena, const char *source, size_t n_source, jinja_tokens *out, char *err)
{
    if (n_source > JINJA_MAX_SOURCE_BYTES)
        return dk_fail(err, DK_ERR_LIMIT, "template of %zu bytes is over the limit of %zu", n_source, JINJA_MAX_SOURCE_BYTES);
    lexer lx = {.arena = arena, .source = source, .n_source = n_source, .err = err};
    int rc = preprocess(&lx);
    while (rc == DK_OK && lx.cur < lx.src.n) rc = lex_one(&lx);
    if (rc == DK_ERR_NOMEM || rc == DK_ERR_LIMIT)
        return dk_fail(err, rc, rc == DK_ERR_LIMIT ? "template too big" : "out of memory");
    if (rc) return rc;
    out->items = lx.toks;
    out->n = lx.n_toks;
    return DK_OK;
}
