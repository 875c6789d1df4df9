/*
 * chunk.c: the token-aware chunker of duckling ingest (rag_chunk_doc in rag_internal.h). It
 * walks a document's blocks in order and packs them into chunks of at most max_tokens tokens
 * as the embedding model counts them. A chunk is always one contiguous range of doc->text, so
 * the separators between the blocks it packs are part of it, and so is the overlap it takes
 * from the chunk before.
 *
 * How: each heading closes the open chunk and sets the heading path; each other block is
 * added whole if the chunk with it still fits (one count of the grown chunk per block; for a
 * long block, of windows growing from about a chunk's worth of bytes, so a huge block is
 * never tokenized whole again for every chunk cut from it), otherwise the chunk is emitted and
 * the block starts the next one (after the overlap). A block that does not fit even alone is
 * cut: a binary search over character boundaries finds the longest prefix that fits (about
 * log2(window bytes) counts), then the cut moves back to a sentence end, else to a space,
 * when one lies in the second half of that prefix. Overlap: the next
 * chunk of the same section starts at the word boundary nearest the previous chunk's end
 * whose tail has at most overlap_tokens tokens (another binary search). Rows are packed the
 * same way without overlap: a row is a record of its own, repeating the end of the previous
 * one adds nothing. Token counts are never assumed additive: every size decision is a count
 * of the exact text the chunk would hold.
 * Not for: reading files (read.c), embedding or storing the chunks (ingest.c, store.c).
 */
#include <string.h>

#include "rag/rag_internal.h"

/* A run without spaces longer than this may be cut inside for an overlap (CJK text). */
#define CK_LONG_RUN_BYTES 32

typedef struct chunker {
    const rag_doc *doc;
    const rag_chunk_opts *opts;
    rag_chunk *chunks;       /* (n_chunks) of cap_chunks */
    size_t n_chunks;
    size_t cap_chunks;
    const rag_block *heads[6]; /* the heading in force at each level, or NULL */
    char *path;              /* the heads joined by " > " (owned) */
    int failed;              /* an allocation failed */
    /* the open chunk: doc->text[start, end); new content begins at new_start */
    int open;
    size_t start;
    size_t end;
    size_t new_start;
    size_t n_tokens;         /* count(start, end) when end > new_start */
    const char *open_heading; /* the heading path of the open chunk */
    /* the chunk emitted last, when it is in the current section (the overlap's source) */
    int have_prev;
    size_t prev_start;
    size_t prev_end;
} chunker;

static size_t ck_count(const chunker *c, size_t a, size_t b) { return c->opts->count(c->opts->ud, c->doc->text + a, b - a); }

static int ck_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

static int ck_is_continuation(char ch) { return ((unsigned char)ch & 0xC0) == 0x80; }

/* The character boundary at or before i (never below lo). */
static size_t ck_char_floor(const chunker *c, size_t i, size_t lo)
{
    while (i > lo && ck_is_continuation(c->doc->text[i])) i--;
    return i;
}

/* The character boundary after the character at i. */
static size_t ck_char_next(const chunker *c, size_t i, size_t hi)
{
    i++;
    while (i < hi && ck_is_continuation(c->doc->text[i])) i++;
    return i;
}

/* The first word start (a non-space byte after a space) in [i, hi), or hi. */
static size_t ck_word_start(const chunker *c, size_t i, size_t hi)
{
    const char *t = c->doc->text;
    for (; i < hi; i++)
        if (i > 0 && ck_space(t[i - 1]) && !ck_space(t[i])) return i;
    return hi;
}

static int ck_blank(const chunker *c, size_t a, size_t b)
{
    for (size_t i = a; i < b; i++)
        if (!ck_space(c->doc->text[i])) return 0;
    return 1;
}

/* ---- the heading path ---- */

static void ck_set_heading(chunker *c, const rag_block *h)
{
    int level = h->level < 1 ? 1 : h->level > 6 ? 6 : h->level;
    c->heads[level - 1] = h;
    for (int k = level; k < 6; k++) c->heads[k] = NULL;
    dk_buf b = {0};
    dk_buf_puts(&b, "");
    for (int k = 0; k < 6; k++) {
        if (!c->heads[k]) continue;
        if (b.len) dk_buf_puts(&b, " > ");
        dk_buf_append(&b, c->doc->text + c->heads[k]->text_start, c->heads[k]->text_end - c->heads[k]->text_start);
    }
    char *path = dk_buf_detach(&b);
    if (!path) {
        c->failed = 1;
        return;
    }
    dk_free(c->path);
    c->path = path;
}

/* ---- emitting ---- */

/* The index of the first block whose text ends after pos (blocks are in text order). */
static size_t ck_block_after(const rag_doc *doc, size_t pos)
{
    size_t lo = 0, hi = doc->n_blocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (doc->blocks[mid].text_end <= pos) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void ck_emit(chunker *c)
{
    if (!c->open || c->end <= c->new_start) {
        c->open = 0;
        return;
    }
    c->open = 0;
    if (c->n_chunks == c->cap_chunks) {
        size_t cap = c->cap_chunks ? c->cap_chunks * 2 : 16;
        rag_chunk *grown = dk_realloc(c->chunks, cap * sizeof *grown);
        if (!grown) {
            c->failed = 1;
            return;
        }
        c->chunks = grown;
        c->cap_chunks = cap;
    }
    char *heading = dk_strdup(c->open_heading);
    if (!heading) {
        c->failed = 1;
        return;
    }
    const rag_doc *doc = c->doc;
    size_t first = ck_block_after(doc, c->start), last = ck_block_after(doc, c->end - 1);
    if (last >= doc->n_blocks) last = doc->n_blocks - 1;
    if (first > last) first = last;
    c->chunks[c->n_chunks++] = (rag_chunk){
        .text_start = c->start,
        .text_end = c->end,
        .heading = heading,
        .loc_start = doc->blocks[first].loc_start,
        .loc_end = doc->blocks[last].loc_end,
        .n_tokens = c->n_tokens,
    };
    c->have_prev = 1;
    c->prev_start = c->start;
    c->prev_end = c->end;
}

/* ---- overlap and cuts ---- */

/* The earliest boundary p in (lo, pe) whose tail [p, pe) has at most budget tokens, or pe:
 * boundaries are word starts (by_word) or character boundaries. A binary search: tails
 * shrink as p grows. */
static size_t ck_tail_search(const chunker *c, size_t lo_bound, size_t pe, size_t budget, int by_word)
{
    size_t lo = lo_bound + 1, hi = pe;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t p = by_word ? ck_word_start(c, mid, pe) : ck_char_floor(c, mid, lo_bound);
        /* no boundary after mid: an empty tail, which fits (keeps the search monotone) */
        if (p > lo_bound && (p == pe || ck_count(c, p, pe) <= budget)) hi = mid;
        else lo = mid + 1;
    }
    size_t p = by_word ? ck_word_start(c, lo, pe) : ck_char_floor(c, lo, lo_bound);
    return p > lo_bound && p < pe && ck_count(c, p, pe) <= budget ? p : pe;
}

/* Where the chunk after [prev_start, prev_end) begins its overlap: the earliest word start
 * whose tail to prev_end has at most overlap_tokens tokens; prev_end when none. When the last
 * word alone is too long and is a long run without spaces (CJK text, a URL, a hash), the
 * overlap may start at a character boundary inside that run instead. */
static size_t ck_overlap_start(const chunker *c)
{
    size_t budget = c->opts->overlap_tokens, ps = c->prev_start, pe = c->prev_end;
    if (!budget || pe - ps < 2) return pe;
    size_t p = ck_tail_search(c, ps, pe, budget, 1);
    if (p < pe) return p;
    /* the run of non-space bytes ending at pe, measured in the document (it may begin
     * before the chunk), and its part inside the chunk */
    size_t run = pe;
    while (run > 0 && pe - run <= CK_LONG_RUN_BYTES && !ck_space(c->doc->text[run - 1])) run--;
    if (pe - run <= CK_LONG_RUN_BYTES) return pe;
    size_t last_word = pe;
    while (last_word > ps && !ck_space(c->doc->text[last_word - 1])) last_word--;
    return ck_tail_search(c, last_word, pe, budget, 0);
}

static int ck_sentence_end(const char *t, size_t q, size_t lo)
{
    /* q follows white space; the text before that space ends a sentence or a line */
    size_t k = q;
    while (k > lo && ck_space(t[k - 1])) {
        if (t[k - 1] == '\n') return 1;
        k--;
    }
    while (k > lo && (t[k - 1] == '"' || t[k - 1] == '\'' || t[k - 1] == ')')) k--;
    return k > lo && (t[k - 1] == '.' || t[k - 1] == '!' || t[k - 1] == '?');
}

/* The end of the longest piece [start, e) with pos < e < hi that fits in max_tokens (the
 * piece [start, hi) does not), moved back to a sentence end or a space in its second half;
 * *n_tokens its count. 0 when not even the character at pos fits. */
static size_t ck_cut(const chunker *c, size_t start, size_t pos, size_t hi, size_t *n_tokens)
{
    size_t max = c->opts->max_tokens;
    size_t lo = pos, bad = hi, lo_tokens = 0; /* invariant: [start, lo) fits (or lo == pos), [start, bad) does not */
    while (bad - lo > 1) {
        size_t mid = ck_char_floor(c, lo + (bad - lo) / 2, lo);
        if (mid <= lo) mid = ck_char_next(c, lo, bad);
        if (mid >= bad) break;
        size_t n = ck_count(c, start, mid);
        if (n <= max) lo = mid, lo_tokens = n;
        else bad = mid;
    }
    if (lo == pos) return 0;
    const char *t = c->doc->text;
    size_t half = pos + (lo - pos) / 2;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t q = lo; q > half && q > pos; q--) {
            if (!ck_space(t[q - 1]) || ck_space(t[q])) continue;
            if (pass == 0 && !ck_sentence_end(t, q, pos)) continue;
            size_t n = ck_count(c, start, q);
            if (n <= max) {
                *n_tokens = n;
                return q;
            }
            break; /* tokens are not additive: that shorter piece did not fit, keep the longest */
        }
    }
    *n_tokens = lo_tokens;
    return lo;
}

/* ---- packing ---- */

static void ck_open(chunker *c, size_t pos, int overlap)
{
    c->open = 1;
    c->start = pos;
    c->end = pos;
    c->new_start = pos;
    c->n_tokens = 0;
    if (overlap && c->have_prev) {
        size_t p = ck_overlap_start(c);
        if (p < c->prev_end) c->start = p;
    }
}

/* Whether [start, be) fits, counted without ever tokenizing far more than a chunk can hold:
 * windows [start, w) growing fourfold from pos + 8 bytes per token. Returns 0 when the whole
 * fits (*n_tokens its count), else a w whose window does not fit (the bound for ck_cut). So a
 * block of megabytes costs a few chunk-sized counts per chunk, not its length each time. */
static size_t ck_probe(const chunker *c, size_t pos, size_t be, size_t *n_tokens)
{
    size_t max = c->opts->max_tokens, window = max < ((size_t)1 << 40) ? max * 8 + 64 : be - pos;
    for (;;) {
        size_t w = be - pos <= window ? be : ck_char_floor(c, pos + window, pos);
        if (w <= pos) w = ck_char_next(c, pos, be);
        size_t n = ck_count(c, c->start, w);
        if (n > max) return w;
        if (w == be) {
            *n_tokens = n;
            return 0;
        }
        window = window > ((size_t)1 << 60) ? be - pos : window * 4;
    }
}

static void ck_block(chunker *c, const rag_block *blk, const char *heading)
{
    size_t pos = blk->text_start, be = blk->text_end;
    int overlap = blk->kind != RAG_BLOCK_ROW;
    if (c->open && c->open_heading != heading) ck_emit(c);
    while (pos < be && !c->failed) {
        if (!c->open) {
            ck_open(c, pos, overlap);
            c->open_heading = heading;
        }
        size_t n = 0, bad = ck_probe(c, pos, be, &n);
        if (!bad) {
            c->end = be;
            c->n_tokens = n;
            return;
        }
        if (c->end > c->new_start) {
            ck_emit(c); /* the chunk holds whole blocks already: this one starts the next */
            continue;
        }
        size_t n_cut = 0, e = ck_cut(c, c->start, pos, bad, &n_cut);
        if (!e) {
            if (c->start < pos) {
                c->start = pos; /* not even one character fits after the overlap: drop it */
                continue;
            }
            e = ck_char_next(c, pos, be); /* one character above max_tokens: it goes alone */
            n_cut = ck_count(c, c->start, e);
        }
        if (ck_blank(c, c->start, e)) {
            /* only white space fits (a counter that charges for it, and a run of it longer
             * than a chunk): no blank chunk, the run is skipped up to the next word */
            while (e < be && ck_space(c->doc->text[e])) e++;
            c->open = 0;
            pos = e;
            continue;
        }
        c->end = e;
        c->n_tokens = n_cut;
        ck_emit(c);
        pos = e;
    }
}

int rag_chunk_doc(const rag_doc *doc, const rag_chunk_opts *opts, rag_chunk **out, size_t *n_out, char *err)
{
    *out = NULL;
    *n_out = 0;
    if (!doc || !opts || !opts->count) return dk_fail(err, DK_ERR_ARG, "missing document, options or token counter");
    if (!opts->max_tokens) return dk_fail(err, DK_ERR_ARG, "max_tokens must be > 0");
    if (opts->overlap_tokens && opts->overlap_tokens >= opts->max_tokens / 2)
        return dk_fail(err, DK_ERR_ARG, "overlap_tokens (%zu) must be below max_tokens / 2 (%zu)", opts->overlap_tokens,
                       opts->max_tokens / 2);
    chunker c = {.doc = doc, .opts = opts};
    c.path = dk_strdup("");
    const char *title = doc->title ? doc->title : "";
    if (!c.path) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < doc->n_blocks && !c.failed; i++) {
        const rag_block *blk = &doc->blocks[i];
        if (blk->text_start > blk->text_end || blk->text_end > doc->text_len) {
            rag_chunks_free(c.chunks, c.n_chunks);
            dk_free(c.path);
            return dk_fail(err, DK_ERR_ARG, "block %zu lies outside the document's text", i);
        }
        if (blk->kind == RAG_BLOCK_HEADING) {
            ck_emit(&c);
            c.have_prev = 0; /* a new section: no overlap from the one before */
            ck_set_heading(&c, blk);
            continue;
        }
        /* rows are "under the table's title" when no heading is in force */
        const char *heading = blk->kind == RAG_BLOCK_ROW && !*c.path ? title : c.path;
        ck_block(&c, blk, heading);
    }
    ck_emit(&c);
    dk_free(c.path);
    if (c.failed) {
        rag_chunks_free(c.chunks, c.n_chunks);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = c.chunks;
    *n_out = c.n_chunks;
    return DK_OK;
}

void rag_chunks_free(rag_chunk *chunks, size_t n)
{
    if (!chunks) return;
    for (size_t i = 0; i < n; i++) dk_free(chunks[i].heading);
    dk_free(chunks);
}
