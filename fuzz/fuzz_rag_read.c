/*
 * fuzz_rag_read.c: fuzz target for the text, Markdown and HTML readers of rag/
 * (rag_read_buffer) and the chunker that follows them (rag_chunk_doc).
 *
 * Input: byte 0 chooses the kind (text, Markdown, HTML) and a small max_line, byte 1 the
 * chunker's max_tokens and overlap, byte 2 the token counter (words, bytes, or a counter that
 * is not additive: it charges extra for every "e"); the rest is the file. Whatever the reader
 * accepts must be a well-formed document (block texts in range, each followed by "\n\n", valid
 * UTF-8, loc inside the input, heading levels 1..6), and its chunks must keep every promise of
 * rag_chunk_doc (none empty or blank, none above max_tokens unless one character, n_tokens
 * exact, every byte of every non-heading block covered but white space that fits nowhere).
 * A broken promise aborts.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "rag/rag_internal.h"

static int fz_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static size_t fz_count_words(void *ud, const char *text, size_t n)
{
    (void)ud;
    size_t words = 0;
    for (size_t i = 0; i < n; i++) words += !fz_space(text[i]) && (i == 0 || fz_space(text[i - 1]));
    return words;
}

static size_t fz_count_bytes(void *ud, const char *text, size_t n)
{
    (void)ud;
    (void)text;
    return n;
}

/* words, plus one per "e" not followed by a space: longer text may count fewer tokens */
static size_t fz_count_odd(void *ud, const char *text, size_t n)
{
    size_t c = fz_count_words(ud, text, n);
    for (size_t i = 0; i < n; i++) c += text[i] == 'e' && (i + 1 == n || !fz_space(text[i + 1]));
    return c;
}

static int fz_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static void fz_check_doc(const rag_doc *doc, size_t n_input)
{
    if (!doc->text || doc->text[doc->text_len] != 0 || strlen(doc->text) != doc->text_len) abort();
    if (!fz_utf8_valid((const unsigned char *)doc->text, doc->text_len)) abort();
    for (size_t i = 0; i < doc->n_blocks; i++) {
        const rag_block *b = &doc->blocks[i];
        if (b->text_start >= b->text_end || b->text_end + 2 > doc->text_len) abort();
        if (memcmp(doc->text + b->text_end, "\n\n", 2) != 0) abort();
        if (fz_space(doc->text[b->text_start]) || fz_space(doc->text[b->text_end - 1])) abort();
        if (b->loc_start < 0 || b->loc_start >= b->loc_end || b->loc_end > (int64_t)n_input) abort();
        if (b->kind == RAG_BLOCK_HEADING ? b->level < 1 || b->level > 6 : b->level != 0) abort();
        if (i && b->text_start != doc->blocks[i - 1].text_end + 2) abort();
    }
}

static void fz_check_chunks(const rag_doc *doc, const rag_chunk_opts *o, const rag_chunk *chunks, size_t n)
{
    unsigned char *covered = calloc(doc->text_len + 1, 1);
    if (!covered) return;
    for (size_t i = 0; i < n; i++) {
        const rag_chunk *c = &chunks[i];
        if (c->text_start >= c->text_end || c->text_end > doc->text_len || !c->heading) abort();
        size_t len = c->text_end - c->text_start;
        if (o->count(o->ud, doc->text + c->text_start, len) != c->n_tokens) abort();
        if (c->n_tokens > o->max_tokens) {
            /* allowed only for one character */
            size_t first = 1;
            while (first < len && (doc->text[c->text_start + first] & 0xC0) == 0x80) first++;
            if (first != len) abort();
        }
        if ((doc->text[c->text_start] & 0xC0) == 0x80 || (doc->text[c->text_end] & 0xC0) == 0x80) abort();
        int blank = 1;
        for (size_t k = c->text_start; k < c->text_end; k++) blank &= fz_space(doc->text[k]);
        if (blank) abort();
        if (i && (c->text_start < chunks[i - 1].text_start || c->text_end <= chunks[i - 1].text_end)) abort();
        memset(covered + c->text_start, 1, len);
    }
    for (size_t k = 0; k < doc->n_blocks; k++) {
        const rag_block *b = &doc->blocks[k];
        if (b->kind == RAG_BLOCK_HEADING) continue;
        for (size_t j = b->text_start; j < b->text_end; j++)
            if (!covered[j] && !fz_space(doc->text[j])) abort(); /* white space may not fit anywhere */
    }
    free(covered);
}

int fuzz_rag_read_one(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    static const char *const names[] = {"f.txt", "f.md", "f.html", "f.htm"};
    static const rag_count_fn counters[] = {fz_count_words, fz_count_bytes, fz_count_odd};
    rag_read_limits limits = {.max_line = data[0] & 0x10 ? 32 : 0, .max_bytes = 1 << 20};
    const char *name = names[data[0] & 3];
    rag_chunk_opts o = {.max_tokens = 1 + (data[1] & 0x3F), .count = counters[data[2] % 3]};
    o.overlap_tokens = (data[1] >> 6) * o.max_tokens / 8; /* 0, 1/8, 2/8, 3/8 of max */
    if (o.overlap_tokens >= o.max_tokens / 2) o.overlap_tokens = 0; /* the contract: below max / 2 */
    rag_doc *doc = NULL;
    char err[DK_ERRLEN];
    if (rag_read_buffer(name, (const char *)data + 3, size - 3, &limits, &doc, err) != DK_OK) {
        if (doc || !memchr(err, 0, sizeof err) || !err[0]) abort();
        return 0;
    }
    fz_check_doc(doc, size - 3);
    rag_chunk *chunks = NULL;
    size_t n = 0;
    if (rag_chunk_doc(doc, &o, &chunks, &n, err) != DK_OK) abort();
    fz_check_chunks(doc, &o, chunks, n);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_rag_read_one(data, size); }
#endif
