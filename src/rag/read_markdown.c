/*
 * read_markdown.c: Markdown into blocks, line by line, in the spirit of CommonMark's block
 * structure without its every corner: ATX headings ("## Text ##") and setext headings (a
 * paragraph underlined with === or ---) become heading blocks; a fenced code block (``` or
 * ~~~, closed by a fence of the same character at least as long, or by the end of the file) is
 * one paragraph block whatever it holds; each list item and each paragraph is a paragraph
 * block; thematic breaks are dropped; YAML front matter at the very top is skipped and its
 * `title:` becomes the title. Inline markup stays as written except links and images,
 * "[text](url)" and "![alt](url)", which become their text. loc: the bytes of the block in
 * the file, from its first to its last non-space character (fences included for code).
 * Not for: HTML inside Markdown (kept as text), reference-style link definitions.
 */
#include <string.h>

#include "rag/read_internal.h"

#define MD_LINK_TEXT_MAX 512  /* how far "[" looks for its "]": bounded, so no quadratic scans */
#define MD_LINK_URL_MAX 2048  /* and "](" for its ")" */
#define MD_LINK_DEPTH 4       /* links in link texts ([![img](a)](b)) resolved this deep */

typedef struct md_line {
    size_t start;   /* first byte of the line */
    size_t end;     /* end of its content: before "\n", and before a "\r" ending it */
    size_t next;    /* start of the next line (n at the end) */
    size_t indent;  /* leading spaces and tabs */
} md_line;

static md_line md_line_at(const char *s, size_t n, size_t i)
{
    md_line l = {.start = i};
    const char *nl = memchr(s + i, '\n', n - i);
    l.end = nl ? (size_t)(nl - s) : n;
    l.next = nl ? l.end + 1 : n;
    while (l.end > i && (s[l.end - 1] == '\r' || s[l.end - 1] == ' ' || s[l.end - 1] == '\t')) l.end--;
    while (i + l.indent < l.end && (s[i + l.indent] == ' ' || s[i + l.indent] == '\t')) l.indent++;
    return l;
}

static int md_line_blank(const md_line *l) { return l->start + l->indent == l->end; }

/* A run of at least three of c, only c and spaces (thematic break "* * *") or only c
 * (setext underline, fence-free). spaces_ok chooses which. */
static int md_line_all(const char *s, const md_line *l, char c, int spaces_ok)
{
    if (l->indent > 3) return 0;
    size_t n_c = 0;
    for (size_t i = l->start + l->indent; i < l->end; i++) {
        if (s[i] == c) n_c++;
        else if (!(spaces_ok && (s[i] == ' ' || s[i] == '\t'))) return 0;
    }
    return n_c >= (spaces_ok ? 3u : 1u);
}

/* The fence of a line: its character and length (0 when it is not a fence). */
static size_t md_fence(const char *s, const md_line *l, char *c)
{
    if (l->indent > 3) return 0;
    size_t i = l->start + l->indent;
    if (i >= l->end || (s[i] != '`' && s[i] != '~')) return 0;
    size_t n = 0;
    while (i + n < l->end && s[i + n] == s[i]) n++;
    if (n < 3) return 0;
    if (s[i] == '`' && memchr(s + i + n, '`', l->end - i - n)) return 0; /* inline code, not a fence */
    *c = s[i];
    return n;
}

/* The ATX heading level of a line (1..6), or 0. */
static int md_atx_level(const char *s, const md_line *l)
{
    if (l->indent > 3) return 0;
    size_t i = l->start + l->indent, n = 0;
    while (i + n < l->end && s[i + n] == '#') n++;
    if (n < 1 || n > 6) return 0;
    if (i + n < l->end && s[i + n] != ' ' && s[i + n] != '\t') return 0;
    return (int)n;
}

/* A list item marker ("- ", "* ", "+ ", "1. ", "1) ") at the line's start. */
static int md_list_item(const char *s, const md_line *l)
{
    size_t i = l->start + l->indent;
    if (i >= l->end) return 0;
    if (s[i] == '-' || s[i] == '*' || s[i] == '+') return i + 1 == l->end || s[i + 1] == ' ' || s[i + 1] == '\t';
    size_t n = 0;
    while (i + n < l->end && n < 10 && s[i + n] >= '0' && s[i + n] <= '9') n++;
    if (n == 0 || i + n >= l->end || (s[i + n] != '.' && s[i + n] != ')')) return 0;
    return i + n + 1 == l->end || s[i + n + 1] == ' ' || s[i + n + 1] == '\t';
}

/* The end of the bracketed run opening at s[i] (open, close: "[" "]" or "(" ")") within
 * limit bytes, nesting counted: the index of the closing byte, or 0. */
static size_t md_match(const char *s, size_t n, size_t i, char open, char close, size_t limit)
{
    int depth = 0;
    size_t stop = n - i > limit ? i + limit : n;
    for (size_t j = i; j < stop; j++) {
        if (s[j] == '\\' && j + 1 < stop) {
            j++;
            continue;
        }
        if (s[j] == open) depth++;
        else if (s[j] == close && --depth == 0) return j;
    }
    return 0;
}

/* Appends s[0..n) with "[text](url)" and "![alt](url)" written as their text, line ends as
 * "\n" (or, for headings, as spaces). */
static void md_append_inline(rag_builder *b, const char *s, size_t n, int depth, int flatten)
{
    size_t i = 0, done = 0;
    while (i < n) {
        if (s[i] == '[' && depth < MD_LINK_DEPTH) {
            size_t close = md_match(s, n, i, '[', ']', MD_LINK_TEXT_MAX);
            size_t paren = 0;
            if (close && close + 1 < n && s[close + 1] == '(') paren = md_match(s, n, close + 1, '(', ')', MD_LINK_URL_MAX);
            if (paren) {
                size_t lead = i > done && s[i - 1] == '!' ? 1 : 0; /* an image's "!" */
                rag_builder_append_lf(b, s + done, i - lead - done);
                md_append_inline(b, s + i + 1, close - i - 1, depth + 1, flatten);
                i = done = paren + 1;
                continue;
            }
        }
        if (flatten && (s[i] == '\n' || s[i] == '\r')) {
            rag_builder_append_lf(b, s + done, i - done);
            dk_buf_putc(&b->text, ' ');
            done = i + 1;
        }
        i++;
    }
    rag_builder_append_lf(b, s + done, n - done);
}

/* The open paragraph: [start, end) of the source, or start == SIZE_MAX. */
typedef struct md_para {
    size_t start;
    size_t end;
} md_para;

static void md_emit(rag_builder *b, const char *s, size_t start, size_t end, rag_block_kind kind, int level,
                    int64_t base, char **title)
{
    rag_builder_begin(b);
    md_append_inline(b, s + start, end - start, 0, kind == RAG_BLOCK_HEADING);
    size_t text_start = b->open_start;
    if (rag_builder_end(b, kind, level, base + (int64_t)start, base + (int64_t)end) && kind == RAG_BLOCK_HEADING &&
        !*title) {
        rag_block *h = &b->blocks[b->n_blocks - 1];
        *title = dk_strndup(b->text.data + text_start, h->text_end - h->text_start);
        if (!*title) b->failed = 1;
    }
}

static void md_flush(rag_builder *b, const char *s, md_para *p, int64_t base, char **title)
{
    if (p->start == SIZE_MAX) return;
    md_emit(b, s, p->start, p->end, RAG_BLOCK_PARAGRAPH, 0, base, title);
    p->start = SIZE_MAX;
}

/* YAML front matter: "---" on the first line up to a "---" or "..." line. Returns where the
 * document proper starts (0 when there is none) and sets *title from a `title:` line. */
static size_t md_front_matter(const char *s, size_t n, char **title)
{
    md_line first = md_line_at(s, n, 0);
    if (first.indent || first.end - first.start != 3 || memcmp(s, "---", 3) != 0) return 0;
    for (size_t i = first.next; i < n;) {
        md_line l = md_line_at(s, n, i);
        size_t len = l.end - l.start;
        if (!l.indent && len == 3 && (memcmp(s + i, "---", 3) == 0 || memcmp(s + i, "...", 3) == 0)) {
            /* found the end: now take the title */
            for (size_t k = first.next; k < i;) {
                md_line t = md_line_at(s, n, k);
                if (!t.indent && t.end - t.start > 6 && memcmp(s + k, "title:", 6) == 0 && !*title) {
                    size_t a = k + 6, z = t.end;
                    while (a < z && (s[a] == ' ' || s[a] == '\t')) a++;
                    if (z - a >= 2 && (s[a] == '"' || s[a] == '\'') && s[z - 1] == s[a]) a++, z--;
                    if (z > a) *title = dk_strndup(s + a, z - a);
                }
                k = t.next;
            }
            return l.next;
        }
        i = l.next;
    }
    return 0; /* never closed: not front matter */
}

int rag_parse_markdown(rag_builder *b, const char *s, size_t n, int64_t base, char **title)
{
    *title = NULL;
    md_para p = {.start = SIZE_MAX};
    size_t i = md_front_matter(s, n, title);
    while (i < n && !b->failed) {
        md_line l = md_line_at(s, n, i);
        char fence_c = 0;
        size_t fence_n = md_fence(s, &l, &fence_c);
        int level;
        if (md_line_blank(&l)) {
            md_flush(b, s, &p, base, title);
        } else if (fence_n) {
            md_flush(b, s, &p, base, title);
            size_t body = l.next, body_end = l.next, stop = n, k = l.next;
            while (k < n) {
                md_line c = md_line_at(s, n, k);
                char c_c = 0;
                size_t c_n = md_fence(s, &c, &c_c);
                if (c_n >= fence_n && c_c == fence_c && c.end == c.start + c.indent + c_n) {
                    stop = c.end;
                    k = c.next;
                    break;
                }
                body_end = c.end;
                stop = c.end;
                k = c.next;
            }
            rag_builder_begin(b);
            if (body_end > body) rag_builder_append_lf(b, s + body, body_end - body);
            rag_builder_end(b, RAG_BLOCK_PARAGRAPH, 0, base + (int64_t)(l.start + l.indent), base + (int64_t)stop);
            i = k;
            continue;
        } else if ((level = md_atx_level(s, &l)) > 0) {
            md_flush(b, s, &p, base, title);
            size_t a = l.start + l.indent + (size_t)level, z = l.end;
            while (a < z && (s[a] == ' ' || s[a] == '\t')) a++;
            /* a closing sequence of #s, when a space precedes it (or it is all there is) */
            size_t h = z;
            while (h > a && s[h - 1] == '#') h--;
            if (h == a || s[h - 1] == ' ' || s[h - 1] == '\t') z = h;
            while (z > a && (s[z - 1] == ' ' || s[z - 1] == '\t')) z--;
            rag_builder_begin(b);
            md_append_inline(b, s + a, z - a, 0, 1);
            size_t text_start = b->open_start;
            if (rag_builder_end(b, RAG_BLOCK_HEADING, level, base + (int64_t)(l.start + l.indent), base + (int64_t)l.end) &&
                !*title) {
                *title = dk_strndup(b->text.data + text_start, b->blocks[b->n_blocks - 1].text_end - text_start);
                if (!*title) b->failed = 1;
            }
        } else if (p.start != SIZE_MAX && (md_line_all(s, &l, '=', 0) || md_line_all(s, &l, '-', 0))) {
            /* setext: the open paragraph is the heading's text */
            md_emit(b, s, p.start, p.end, RAG_BLOCK_HEADING, s[l.start + l.indent] == '=' ? 1 : 2, base, title);
            p.start = SIZE_MAX;
        } else if (md_line_all(s, &l, '-', 1) || md_line_all(s, &l, '*', 1) || md_line_all(s, &l, '_', 1)) {
            md_flush(b, s, &p, base, title); /* a thematic break */
        } else {
            if (md_list_item(s, &l)) md_flush(b, s, &p, base, title);
            if (p.start == SIZE_MAX) p.start = l.start + l.indent;
            p.end = l.end;
        }
        i = l.next;
    }
    md_flush(b, s, &p, base, title);
    if (b->failed) {
        dk_free(*title);
        *title = NULL;
        return DK_ERR_NOMEM;
    }
    return DK_OK;
}
