/*
 * read_html.c: HTML into blocks with a small tolerant scanner (no DOM, no library). Tags are
 * recognised by name only: h1..h6 make heading blocks; p, li, pre, blockquote, td, div, br,
 * section and the other block-level elements end the paragraph before them and start a new
 * one; the content of script, style, noscript, template and of head is skipped (head's
 * <title> becomes the title; without one, the first heading does). Entities are decoded
 * (numeric ones and a handful of common names), white space is collapsed except inside pre,
 * comments, CDATA, doctypes and processing instructions are dropped. Malformed input never
 * fails: an unterminated tag, comment or raw-text element runs to the end of the file, a "<"
 * that starts no tag is text. loc: source bytes from a block's first to its last non-space
 * character (entities count whole).
 * Not for: rendering decisions (CSS display, hidden elements), character sets other than
 * UTF-8 (read.c refuses other bytes before this runs).
 */
#include <string.h>
#include <strings.h>

#include "rag/read_internal.h"

typedef struct html_scan {
    rag_builder *b;
    const char *s;           /* the source (n bytes) */
    size_t n;
    int64_t base;            /* file offset of s[0] */
    int open;                /* a block has begun */
    rag_block_kind kind;     /* of the open block: paragraph, or heading while inside hN */
    int level;
    size_t loc_start;        /* source span of its non-space text so far */
    size_t loc_end;
    int pending_space;       /* white space seen since the last text */
    int pre_depth;           /* inside this many <pre> */
    int in_head;             /* inside <head>: text is dropped */
    char *title;             /* the first <title>, owned */
} html_scan;

/* ---- text and blocks ---- */

static void html_flush(html_scan *h)
{
    if (h->open) rag_builder_end(h->b, h->kind, h->level, h->base + (int64_t)h->loc_start, h->base + (int64_t)h->loc_end);
    h->open = 0;
    h->pending_space = 0;
}

/* One decoded character (bytes c[0..len)) taken from the source s[src, src_end). */
static void html_char(html_scan *h, const char *c, size_t len, size_t src, size_t src_end)
{
    if (h->in_head) return;
    int space = len == 1 && rag_is_space((unsigned char)c[0]);
    if (space && !h->pre_depth) {
        h->pending_space = 1;
        return;
    }
    if (!h->open) {
        if (space) return;
        rag_builder_begin(h->b);
        h->open = 1;
        h->pending_space = 0;
        h->loc_start = SIZE_MAX;
    }
    if (h->pending_space) dk_buf_putc(&h->b->text, ' ');
    h->pending_space = 0;
    if (len == 1 && c[0] == '\r') {
        /* CRLF inside pre: the LF that follows is the line end */
    } else {
        dk_buf_append(&h->b->text, c, len);
    }
    if (!space) {
        if (h->loc_start == SIZE_MAX) h->loc_start = src;
        h->loc_end = src_end;
    }
}

/* ---- entities ---- */

typedef struct html_entity {
    const char *name;
    const char *text;
} html_entity;

static const html_entity html_entities[] = {
    {"amp", "&"},        {"lt", "<"},          {"gt", ">"},          {"quot", "\""},       {"apos", "'"},
    {"nbsp", " "},       {"copy", "\u00A9"},   {"reg", "\u00AE"},    {"trade", "\u2122"},  {"hellip", "\u2026"},
    {"mdash", "\u2014"}, {"ndash", "\u2013"},  {"lsquo", "\u2018"},  {"rsquo", "\u2019"},  {"ldquo", "\u201C"},
    {"rdquo", "\u201D"}, {"laquo", "\u00AB"},  {"raquo", "\u00BB"},  {"bull", "\u2022"},   {"middot", "\u00B7"},
    {"deg", "\u00B0"},   {"euro", "\u20AC"},   {"pound", "\u00A3"},  {"yen", "\u00A5"},    {"cent", "\u00A2"},
    {"sect", "\u00A7"},  {"para", "\u00B6"},   {"times", "\u00D7"},  {"divide", "\u00F7"}, {"plusmn", "\u00B1"},
    {"eacute", "\u00E9"}, {"egrave", "\u00E8"}, {"agrave", "\u00E0"}, {"uuml", "\u00FC"},  {"ouml", "\u00F6"},
    {"auml", "\u00E4"},  {"szlig", "\u00DF"},  {"shy", ""},          {"zwj", "\u200D"},    {"zwnj", "\u200C"},
};

static size_t html_utf8_encode(uint32_t cp, char *out)
{
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
    if (cp < 0x20 && cp != '\t' && cp != '\n') cp = ' '; /* no control bytes from &#1; */
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int html_hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int html_is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* The entity at s[i] == '&': its text into out (room for 4 bytes; *len) and the index after
 * it, or i when it is no entity (the "&" is then text). */
static size_t html_entity_at(const char *s, size_t n, size_t i, char *out, size_t *len, const char **named)
{
    *named = NULL;
    size_t j = i + 1;
    if (j < n && s[j] == '#') {
        j++;
        int hex = j < n && (s[j] == 'x' || s[j] == 'X');
        if (hex) j++;
        uint32_t cp = 0;
        size_t digits = 0;
        for (; j < n; j++, digits++) {
            int d = hex ? html_hex(s[j]) : (s[j] >= '0' && s[j] <= '9' ? s[j] - '0' : -1);
            if (d < 0) break;
            cp = cp > 0x10FFFF ? cp : cp * (hex ? 16u : 10u) + (uint32_t)d; /* saturates: U+FFFD */
        }
        if (!digits) return i;
        if (j < n && s[j] == ';') j++;
        *len = html_utf8_encode(cp, out);
        return j;
    }
    size_t k = j;
    while (k < n && k - j < 10 && html_is_alnum(s[k])) k++;
    if (k == j || k >= n || s[k] != ';') return i;
    for (size_t e = 0; e < sizeof html_entities / sizeof html_entities[0]; e++) {
        if (strlen(html_entities[e].name) == k - j && memcmp(html_entities[e].name, s + j, k - j) == 0) {
            *named = html_entities[e].text;
            *len = strlen(*named);
            return k + 1;
        }
    }
    return i;
}

/* Text s[i, end) into the open block, entities decoded. */
static void html_text(html_scan *h, size_t i, size_t end)
{
    while (i < end) {
        if (h->s[i] == '&') {
            char buf[4];
            size_t len = 0;
            const char *named;
            size_t next = html_entity_at(h->s, end, i, buf, &len, &named);
            if (next > i) {
                const char *t = named ? named : buf;
                /* &nbsp; is a space that collapses like the others */
                if (len) html_char(h, t, len, i, next);
                i = next;
                continue;
            }
        }
        html_char(h, h->s + i, 1, i, i + 1);
        i++;
    }
}

/* ---- tags ---- */

static size_t html_find(const char *s, size_t n, size_t i, const char *needle)
{
    size_t m = strlen(needle);
    while (i + m <= n) {
        const char *p = memchr(s + i, needle[0], n - i - m + 1);
        if (!p) return n;
        size_t at = (size_t)(p - s);
        if (memcmp(s + at, needle, m) == 0) return at;
        i = at + 1;
    }
    return n;
}

/* The index after the ">" closing the tag whose name ends at s[i]; quoted attribute values
 * (after "=") may hold ">". An unterminated tag runs to the end. */
static size_t html_tag_end(const char *s, size_t n, size_t i)
{
    char quote = 0;
    int after_eq = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (quote) {
            if (c == quote) quote = 0;
            continue;
        }
        if (c == '>') return i + 1;
        if ((c == '"' || c == '\'') && after_eq) {
            quote = c;
            after_eq = 0;
        } else if (c == '=') {
            after_eq = 1;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            after_eq = 0;
        }
    }
    return n;
}

static int html_is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int html_name_in(const char *name, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(name, list[i]) == 0) return 1;
    return 0;
}

static const char *const html_block_tags[] = {
    "p", "li", "pre", "blockquote", "td", "th", "tr", "div", "br", "section", "article", "header", "footer", "nav",
    "aside", "main", "ul", "ol", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "caption", "hr", "figure",
    "figcaption", "form", "fieldset", "details", "summary", "address", "body", "html", "hgroup", "option", "legend",
    NULL,
};
static const char *const html_raw_tags[] = {"script", "style", "noscript", "template", "textarea", "xmp", NULL};
static const char *const html_head_tags[] = {"title", "meta", "link", "base", "script", "style", "noscript", "template", NULL};

/* The index after the end tag "</name ...>" at or after i (case-insensitive), or n. */
static size_t html_skip_raw(const char *s, size_t n, size_t i, const char *name, size_t *content_end)
{
    size_t m = strlen(name);
    for (;;) {
        size_t at = html_find(s, n, i, "</");
        if (at + 2 + m > n) break;
        if (strncasecmp(s + at + 2, name, m) == 0 && (at + 2 + m == n || !html_is_alpha(s[at + 2 + m]))) {
            *content_end = at;
            return html_tag_end(s, n, at + 2 + m);
        }
        i = at + 1;
    }
    *content_end = n;
    return n;
}

/* <title>...</title>: its text, entities decoded and white space collapsed. */
static void html_title(html_scan *h, size_t start, size_t end)
{
    if (h->title) return;
    rag_builder tmp = {0};
    html_scan t = {.b = &tmp, .s = h->s, .n = end};
    html_text(&t, start, end);
    html_flush(&t);
    if (tmp.n_blocks) {
        h->title = dk_strndup(tmp.text.data + tmp.blocks[0].text_start, tmp.blocks[0].text_end - tmp.blocks[0].text_start);
        if (!h->title) h->b->failed = 1;
    }
    if (tmp.failed || tmp.text.failed) h->b->failed = 1;
    rag_builder_free(&tmp);
}

/* The tag whose name is s[name, name_end) (closing: it began with "</"); returns the index
 * to go on from. */
static size_t html_tag(html_scan *h, size_t name, size_t name_end, int closing)
{
    const char *s = h->s;
    size_t end = html_tag_end(s, h->n, name_end);
    char tag[16];
    size_t len = name_end - name;
    if (len >= sizeof tag) return end; /* no tag we know has a name this long */
    for (size_t k = 0; k < len; k++) tag[k] = (char)(s[name + k] | 0x20);
    tag[len] = 0;
    if (h->in_head && (closing ? strcmp(tag, "head") == 0 : !html_name_in(tag, html_head_tags))) h->in_head = 0;
    if (!closing && strcmp(tag, "head") == 0) {
        h->in_head = 1;
        return end;
    }
    if (!closing && strcmp(tag, "title") == 0) {
        size_t content_end;
        size_t after = html_skip_raw(s, h->n, end, "title", &content_end);
        html_title(h, end, content_end);
        return after;
    }
    if (!closing && html_name_in(tag, html_raw_tags)) {
        size_t content_end;
        return html_skip_raw(s, h->n, end, tag, &content_end);
    }
    if (len == 2 && tag[0] == 'h' && tag[1] >= '1' && tag[1] <= '6') {
        html_flush(h);
        h->kind = closing ? RAG_BLOCK_PARAGRAPH : RAG_BLOCK_HEADING;
        h->level = closing ? 0 : tag[1] - '0';
        return end;
    }
    if (html_name_in(tag, html_block_tags)) {
        if (h->kind == RAG_BLOCK_HEADING && strcmp(tag, "br") == 0) {
            h->pending_space = 1; /* a line break inside a heading: still the heading */
        } else {
            /* any other block ends a heading too, so that an unclosed <h1> cannot swallow
             * the page into a heading (headings are not chunk text) */
            html_flush(h);
            h->kind = RAG_BLOCK_PARAGRAPH;
            h->level = 0;
        }
        if (strcmp(tag, "pre") == 0) {
            if (!closing) h->pre_depth++;
            else if (h->pre_depth) h->pre_depth--;
        }
        return end;
    }
    /* an inline tag (a, b, span, ...) separates nothing, except img alt text is lost */
    return end;
}

int rag_parse_html(rag_builder *b, const char *s, size_t n, int64_t base, char **title)
{
    *title = NULL;
    html_scan h = {.b = b, .s = s, .n = n, .base = base, .kind = RAG_BLOCK_PARAGRAPH};
    size_t i = 0;
    while (i < n && !b->failed) {
        const char *lt = memchr(s + i, '<', n - i);
        size_t text_end = lt ? (size_t)(lt - s) : n;
        html_text(&h, i, text_end);
        i = text_end;
        if (i >= n) break;
        /* s[i] == '<' */
        if (i + 3 < n && memcmp(s + i, "<!--", 4) == 0) {
            size_t close = html_find(s, n, i + 4, "-->");
            i = close < n ? close + 3 : n;
        } else if (i + 8 < n && memcmp(s + i, "<![CDATA[", 9) == 0) {
            size_t close = html_find(s, n, i + 9, "]]>");
            i = close < n ? close + 3 : n;
        } else if (i + 1 < n && (s[i + 1] == '!' || s[i + 1] == '?')) {
            const char *gt = memchr(s + i, '>', n - i);
            i = gt ? (size_t)(gt - s) + 1 : n;
        } else {
            int closing = i + 1 < n && s[i + 1] == '/';
            size_t name = i + 1 + (size_t)closing, name_end = name;
            if (name_end < n && html_is_alpha(s[name_end])) {
                while (name_end < n && (html_is_alnum(s[name_end]) || s[name_end] == '-' || s[name_end] == ':')) name_end++;
                i = html_tag(&h, name, name_end, closing);
            } else {
                html_char(&h, "<", 1, i, i + 1); /* a "<" that starts no tag is text */
                i++;
            }
        }
    }
    html_flush(&h);
    if (!h.title) {
        for (size_t k = 0; k < b->n_blocks; k++) {
            if (b->blocks[k].kind != RAG_BLOCK_HEADING) continue;
            h.title = dk_strndup(b->text.data + b->blocks[k].text_start, b->blocks[k].text_end - b->blocks[k].text_start);
            if (!h.title) b->failed = 1;
            break;
        }
    }
    if (b->failed || b->text.failed) {
        dk_free(h.title);
        return DK_ERR_NOMEM;
    }
    *title = h.title;
    return DK_OK;
}
