/*
 * test_rag_chunk.c: the token-aware chunker of rag/ (suite rag_chunk). Small documents whose
 * chunks are known exactly (packing, overlap, cuts at sentence ends, heading paths), and a
 * long generated Markdown document (sections, long paragraphs without sentence ends, text
 * without spaces in 2- and 3-byte characters, code) chunked with a word counter and with the
 * real WordPiece tokenizer of bert-tiny, checked against every invariant of rag_chunk_doc:
 * no chunk empty or above max_tokens, n_tokens exact, UTF-8 boundaries, every byte of every
 * non-heading block covered, heading paths, overlap present, at a word boundary and bounded.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "engine/engine.h"
#include "rag/rag_internal.h"
#include "test.h"

/* ---- token counters ---- */

typedef struct word_counter {
    size_t n_calls;
    size_t n_bytes; /* bytes counted, over all calls */
} word_counter;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Words: maximal runs of non-space bytes. */
static size_t count_words(void *ud, const char *text, size_t n)
{
    if (ud) {
        ((word_counter *)ud)->n_calls++;
        ((word_counter *)ud)->n_bytes += n;
    }
    size_t words = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_space(text[i]) && (i == 0 || is_space(text[i - 1]))) words++;
    return words;
}

typedef struct bert_counter {
    engine_model *model;
    size_t n_calls;
} bert_counter;

static size_t count_bert(void *ud, const char *text, size_t n)
{
    bert_counter *b = ud;
    b->n_calls++;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    char err[DK_ERRLEN];
    if (engine_tokenize(b->model, text, n, false, false, &tokens, &n_tokens, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "tokenize: %s", err);
        return (size_t)-1 / 2;
    }
    dk_free(tokens);
    return n_tokens;
}

/* ---- helpers ---- */

static rag_doc *doc_from(const char *name, const char *text)
{
    rag_doc *doc = NULL;
    char err[DK_ERRLEN];
    if (rag_read_buffer(name, text, strlen(text), NULL, &doc, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "read %s: %s", name, err);
        return NULL;
    }
    return doc;
}

static int chunk_is(const rag_doc *doc, const rag_chunk *c, const char *text)
{
    size_t n = strlen(text);
    return c->text_end - c->text_start == n && memcmp(doc->text + c->text_start, text, n) == 0;
}

#define CHECK_CHUNK(doc, c, want) \
    CHECK_MSG(chunk_is(doc, c, want), "chunk \"%.*s\", want \"%s\"", (int)((c)->text_end - (c)->text_start), \
              (doc)->text + (c)->text_start, want)

/* The heading path in force at each block (what the chunks of that block must carry). */
static char **expected_paths(const rag_doc *doc)
{
    char **paths = dk_calloc(doc->n_blocks + 1, sizeof *paths);
    const rag_block *heads[6] = {0};
    for (size_t i = 0; i < doc->n_blocks; i++) {
        const rag_block *b = &doc->blocks[i];
        if (b->kind == RAG_BLOCK_HEADING) {
            heads[b->level - 1] = b;
            for (int k = b->level; k < 6; k++) heads[k] = NULL;
        }
        dk_buf p = {0};
        dk_buf_puts(&p, "");
        for (int k = 0; k < 6; k++) {
            if (!heads[k]) continue;
            if (p.len) dk_buf_puts(&p, " > ");
            dk_buf_append(&p, doc->text + heads[k]->text_start, heads[k]->text_end - heads[k]->text_start);
        }
        if (b->kind == RAG_BLOCK_ROW && p.len == 0 && doc->title) dk_buf_puts(&p, doc->title);
        paths[i] = dk_buf_detach(&p);
    }
    return paths;
}

typedef struct chunk_stats {
    size_t n_pairs;        /* consecutive chunks of one section */
    size_t n_overlapping;  /* of those, how many overlap */
} chunk_stats;

/* Every promise of rag_chunk_doc. exact_overlap: the counter is count_words, so the overlap
 * is exactly overlap_tokens words when the chunk before has more words than that. */
static chunk_stats check_chunks(const rag_doc *doc, const rag_chunk *chunks, size_t n, const rag_chunk_opts *o,
                                int exact_overlap)
{
    chunk_stats st = {0};
    const char *t = doc->text;
    unsigned char *covered = dk_calloc(doc->text_len + 1, 1);
    char **paths = expected_paths(doc);
    for (size_t i = 0; i < n; i++) {
        const rag_chunk *c = &chunks[i];
        if (!(c->text_start < c->text_end && c->text_end <= doc->text_len)) {
            test_fail_at(__FILE__, __LINE__, "chunk %zu: [%zu, %zu)", i, c->text_start, c->text_end);
            goto done;
        }
        size_t len = c->text_end - c->text_start, n_real = o->count(o->ud, t + c->text_start, len);
        CHECK_MSG(c->n_tokens == n_real, "chunk %zu: n_tokens %zu, counted %zu", i, c->n_tokens, n_real);
        CHECK_MSG(c->n_tokens <= o->max_tokens, "chunk %zu has %zu tokens > %zu", i, c->n_tokens, o->max_tokens);
        CHECK_MSG(c->n_tokens > 0, "chunk %zu has no tokens", i);
        CHECK((t[c->text_start] & 0xC0) != 0x80);
        CHECK((t[c->text_end] & 0xC0) != 0x80);
        int blank = 1;
        for (size_t k = c->text_start; k < c->text_end; k++) blank &= is_space(t[k]);
        CHECK_MSG(!blank, "chunk %zu is blank", i);
        for (size_t k = c->text_start; k < c->text_end; k++) covered[k] = 1;
        if (i) {
            CHECK(c->text_start >= chunks[i - 1].text_start);
            CHECK(c->text_end > chunks[i - 1].text_end);
        }
        /* the heading path: that of the first block whose text the chunk holds */
        size_t first = 0;
        while (first < doc->n_blocks && doc->blocks[first].text_end <= c->text_start) first++;
        if (first >= doc->n_blocks) {
            test_fail_at(__FILE__, __LINE__, "chunk %zu is after every block", i);
            goto done;
        }
        CHECK_MSG(doc->blocks[first].kind != RAG_BLOCK_HEADING, "chunk %zu starts in a heading", i);
        CHECK_MSG(strcmp(c->heading, paths[first]) == 0, "chunk %zu: heading \"%s\", want \"%s\"", i, c->heading,
                  paths[first]);
        CHECK_EQ_INT(c->loc_start, doc->blocks[first].loc_start);
        /* overlap with the chunk before, when both are in one section */
        if (!i) continue;
        const rag_chunk *p = &chunks[i - 1];
        int heading_between = 0;
        for (size_t k = 0; k < doc->n_blocks; k++)
            if (doc->blocks[k].kind == RAG_BLOCK_HEADING && doc->blocks[k].text_start >= p->text_end &&
                doc->blocks[k].text_end <= c->text_start)
                heading_between = 1;
        if (heading_between) {
            CHECK(c->text_start >= p->text_end);
            continue;
        }
        st.n_pairs++;
        if (c->text_start < p->text_end) {
            st.n_overlapping++;
            size_t ov = o->count(o->ud, t + c->text_start, p->text_end - c->text_start);
            CHECK_MSG(ov <= o->overlap_tokens, "chunk %zu: overlap of %zu tokens > %zu", i, ov, o->overlap_tokens);
            CHECK(c->text_start > p->text_start);
            /* at a word start, or inside a long run without spaces (CJK text) */
            size_t run_start = c->text_start, run_end = c->text_start;
            while (run_start > 0 && !is_space(t[run_start - 1])) run_start--;
            while (run_end < doc->text_len && !is_space(t[run_end])) run_end++;
            CHECK_MSG(run_start == c->text_start || run_end - run_start > 32, "chunk %zu: overlap starts inside a word", i);
            if (exact_overlap && count_words(NULL, t + p->text_start, p->text_end - p->text_start) > o->overlap_tokens)
                CHECK_MSG(ov == o->overlap_tokens, "chunk %zu: overlap of %zu words, want %zu", i, ov, o->overlap_tokens);
        } else if (exact_overlap && o->overlap_tokens) {
            /* none: only when the chunk before has no word start to begin one at */
            size_t words = count_words(NULL, t + p->text_start, p->text_end - p->text_start);
            CHECK_MSG(words <= 1, "chunk %zu has no overlap with a chunk of %zu words", i, words);
        }
    }
    /* coverage: every byte of every non-heading block; no byte of a heading */
    for (size_t k = 0; k < doc->n_blocks; k++) {
        const rag_block *b = &doc->blocks[k];
        for (size_t j = b->text_start; j < b->text_end; j++) {
            if (b->kind == RAG_BLOCK_HEADING) {
                CHECK_MSG(!covered[j], "heading %zu is in a chunk", k);
                break;
            }
            if (!covered[j]) {
                test_fail_at(__FILE__, __LINE__, "block %zu: byte %zu is in no chunk", k, j);
                break;
            }
        }
    }
done:
    for (size_t k = 0; k < doc->n_blocks; k++) dk_free(paths[k]);
    dk_free(paths);
    dk_free(covered);
    return st;
}

/* ---- small documents, exact chunks ---- */

TEST(rag_chunk, packs_blocks_with_overlap)
{
    rag_doc *doc = doc_from("a.txt", "a b c\n\nd e\n\nf");
    REQUIRE(doc);
    rag_chunk_opts o = {.max_tokens = 4, .overlap_tokens = 1, .count = count_words};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE_MSG(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK, "%s", err);
    REQUIRE(n == 2);
    CHECK_CHUNK(doc, &chunks[0], "a b c");
    CHECK_CHUNK(doc, &chunks[1], "c\n\nd e\n\nf"); /* "c": the overlap */
    CHECK_EQ_INT(chunks[0].n_tokens, 3);
    CHECK_EQ_INT(chunks[1].n_tokens, 4);
    CHECK_EQ_INT(chunks[0].loc_start, 0);
    CHECK_EQ_INT(chunks[0].loc_end, 5);
    CHECK_EQ_INT(chunks[1].loc_start, 0); /* the overlap comes from the first block */
    CHECK_EQ_INT(chunks[1].loc_end, 13);
    CHECK_EQ_STR(chunks[0].heading, "");
    check_chunks(doc, chunks, n, &o, 1);
    rag_chunks_free(chunks, n);
    /* everything fits: one chunk */
    o.max_tokens = 100;
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    REQUIRE(n == 1);
    CHECK_CHUNK(doc, &chunks[0], "a b c\n\nd e\n\nf");
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, cuts_long_blocks_at_sentences_then_spaces)
{
    rag_doc *doc = doc_from("s.txt", "One two three. Four five six seven. Eight nine.");
    REQUIRE(doc);
    rag_chunk_opts o = {.max_tokens = 5, .count = count_words};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    REQUIRE(n == 3);
    CHECK_CHUNK(doc, &chunks[0], "One two three. ");
    CHECK_CHUNK(doc, &chunks[1], "Four five six seven. ");
    CHECK_CHUNK(doc, &chunks[2], "Eight nine.");
    check_chunks(doc, chunks, n, &o, 1);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
    /* no sentence end: at spaces, as many words as fit */
    doc = doc_from("w.txt", "w1 w2 w3 w4 w5 w6 w7 w8 w9");
    REQUIRE(doc);
    o = (rag_chunk_opts){.max_tokens = 4, .overlap_tokens = 1, .count = count_words};
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    REQUIRE(n == 3);
    CHECK_CHUNK(doc, &chunks[0], "w1 w2 w3 w4 ");
    CHECK_CHUNK(doc, &chunks[1], "w4 w5 w6 w7 ");
    CHECK_CHUNK(doc, &chunks[2], "w7 w8 w9");
    check_chunks(doc, chunks, n, &o, 1);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

/* Counts bytes: a text without spaces is cut at UTF-8 character boundaries. */
static size_t count_bytes(void *ud, const char *text, size_t n)
{
    (void)ud;
    (void)text;
    return n;
}

TEST(rag_chunk, cuts_at_character_boundaries)
{
    /* 2-byte é and 3-byte 漢 and a 4-byte emoji, no spaces */
    rag_doc *doc = doc_from("u.txt", "\u00E9\u00E9\u00E9\u6F22\u6F22\U0001F600\u00E9x");
    REQUIRE(doc);
    rag_chunk_opts o = {.max_tokens = 5, .count = count_bytes};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    REQUIRE(n == 5);
    CHECK_CHUNK(doc, &chunks[0], "\u00E9\u00E9");
    CHECK_CHUNK(doc, &chunks[1], "\u00E9\u6F22");
    CHECK_CHUNK(doc, &chunks[2], "\u6F22");
    CHECK_CHUNK(doc, &chunks[3], "\U0001F600");
    CHECK_CHUNK(doc, &chunks[4], "\u00E9x");
    rag_chunks_free(chunks, n);
    /* a character above max_tokens goes alone, the one case a chunk may exceed the limit */
    o.max_tokens = 3;
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    size_t over = 0;
    for (size_t i = 0; i < n; i++) {
        if (chunks[i].n_tokens > 3) {
            over++;
            CHECK_CHUNK(doc, &chunks[i], "\U0001F600");
        }
    }
    CHECK_EQ_INT(over, 1);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, no_blank_chunks_from_long_white_space)
{
    /* a counter that charges for white space, and a run of it longer than a chunk: the run
     * is not made into chunks of its own, every other byte is still covered */
    rag_doc *doc = doc_from("ws.html", "<pre>ab\t\t\t\t\t\t\t\t\t\t\t\t\t\tcd \t ef</pre>");
    REQUIRE(doc);
    REQUIRE(doc->n_blocks == 1);
    rag_chunk_opts o = {.max_tokens = 4, .count = count_bytes};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    unsigned char covered[64] = {0};
    for (size_t i = 0; i < n; i++) {
        int blank = 1;
        for (size_t k = chunks[i].text_start; k < chunks[i].text_end; k++) {
            blank &= is_space(doc->text[k]);
            if (k < sizeof covered) covered[k] = 1;
        }
        CHECK_MSG(!blank, "chunk %zu is blank", i);
        CHECK(chunks[i].n_tokens <= 4);
    }
    const rag_block *b = &doc->blocks[0];
    for (size_t k = b->text_start; k < b->text_end && k < sizeof covered; k++)
        CHECK_MSG(covered[k] || is_space(doc->text[k]), "byte %zu ('%c') is in no chunk", k, doc->text[k]);
    CHECK(n >= 3);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, heading_paths_and_no_overlap_across_sections)
{
    rag_doc *doc = doc_from("h.md", "Before any heading.\n\n# A\n\nalpha one\n\n## B\n\nbeta one two three four\n\n### C\n\n"
                                    "gamma\n\n## D\n\ndelta\n\n# E\n\n#### Deep\n\nepsilon\n\n# Empty\n\n# Last\n\nomega");
    REQUIRE(doc);
    rag_chunk_opts o = {.max_tokens = 4, .overlap_tokens = 1, .count = count_words};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    static const struct {
        const char *heading, *text;
    } want[] = {
        {"", "Before any heading."},
        {"A", "alpha one"},
        {"A > B", "beta one two three "},
        {"A > B", "three four"},
        {"A > B > C", "gamma"},
        {"A > D", "delta"},
        {"E > Deep", "epsilon"},
        {"Last", "omega"},
    };
    REQUIRE_MSG(n == sizeof want / sizeof want[0], "%zu chunks", n);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_STR(chunks[i].heading, want[i].heading);
        CHECK_CHUNK(doc, &chunks[i], want[i].text);
    }
    check_chunks(doc, chunks, n, &o, 1);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, rows_packed_under_the_title_without_overlap)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/rag_chunk", test_tmpdir());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/items.csv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f, "id,label\n");
    const char *long_tail = "x x x x x x x x x x x x x x x x x x x x x x x x"; /* row 7 is longer than a chunk */
    for (int i = 0; i < 200; i++) fprintf(f, "%d,word%d and some more words %s\n", i, i, i == 7 ? long_tail : "");
    fclose(f);
    rag_doc *doc = NULL;
    char err[DK_ERRLEN];
    REQUIRE_MSG(rag_read_file(path, NULL, &doc, err) == DK_OK, "%s", err);
    REQUIRE(doc->n_blocks == 200);
    word_counter wc = {0};
    rag_chunk_opts o = {.max_tokens = 20, .overlap_tokens = 5, .count = count_words, .ud = &wc};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    CHECK(n > 20 && n < 120);
    check_chunks(doc, chunks, n, &o, 0);
    int64_t next_row = 0;
    size_t multi = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_STR(chunks[i].heading, "items.csv");
        if (i) CHECK_MSG(chunks[i].text_start >= chunks[i - 1].text_end, "rows overlap at chunk %zu", i);
        /* rows in order: a chunk starts at the row after the last one (or inside a long one) */
        CHECK(chunks[i].loc_start == next_row || chunks[i].loc_start == next_row - 1);
        next_row = chunks[i].loc_end;
        multi += chunks[i].loc_end - chunks[i].loc_start > 1;
    }
    CHECK_EQ_INT(next_row, 200);
    CHECK(multi > n / 2); /* several rows per chunk */
    test_log("200 rows: %zu chunks, %zu counts", n, wc.n_calls);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, huge_block_costs_chunk_sized_counts)
{
    /* one paragraph of 1 MB: each chunk must cost counts of about its own size, never of the
     * whole remaining block */
    dk_buf b = {0};
    for (int i = 0; b.len < ((size_t)1 << 20); i++)
        dk_buf_printf(&b, "w%d%s", i, i % 17 == 16 ? ". " : i % 13 == 12 ? "\n" : " ");
    rag_doc *doc = doc_from("huge.txt", b.data);
    dk_buf_free(&b);
    REQUIRE(doc);
    REQUIRE(doc->n_blocks == 1);
    word_counter wc = {0};
    rag_chunk_opts o = {.max_tokens = 64, .overlap_tokens = 8, .count = count_words, .ud = &wc};
    rag_chunk *chunks = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    REQUIRE(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK);
    size_t calls = wc.n_calls, bytes = wc.n_bytes;
    check_chunks(doc, chunks, n, &o, 1);
    CHECK(n > 1000);
    CHECK_MSG(bytes < 40 * doc->text_len, "%zu bytes counted for a text of %zu", bytes, doc->text_len);
    CHECK_MSG(calls < 32 * n, "%zu counts for %zu chunks", calls, n);
    test_log("1 MB block: %zu chunks, %zu counts, %.1f bytes counted per byte", n, calls, (double)bytes / (double)doc->text_len);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

TEST(rag_chunk, rejects_bad_options)
{
    rag_doc *doc = doc_from("x.txt", "x");
    REQUIRE(doc);
    rag_chunk *chunks = NULL;
    size_t n = 7;
    char err[DK_ERRLEN];
    rag_chunk_opts o = {.max_tokens = 0, .count = count_words};
    CHECK_EQ_INT(rag_chunk_doc(doc, &o, &chunks, &n, err), DK_ERR_ARG);
    o = (rag_chunk_opts){.max_tokens = 10, .overlap_tokens = 5, .count = count_words};
    CHECK_EQ_INT(rag_chunk_doc(doc, &o, &chunks, &n, err), DK_ERR_ARG);
    CHECK(strstr(err, "overlap") != NULL);
    o = (rag_chunk_opts){.max_tokens = 10};
    CHECK_EQ_INT(rag_chunk_doc(doc, &o, &chunks, &n, err), DK_ERR_ARG);
    CHECK(chunks == NULL && n == 0);
    rag_doc_free(doc);
    /* an empty document: no chunks */
    doc = doc_from("e.md", "# only a heading\n");
    REQUIRE(doc);
    o = (rag_chunk_opts){.max_tokens = 10, .count = count_words};
    CHECK_EQ_INT(rag_chunk_doc(doc, &o, &chunks, &n, err), DK_OK);
    CHECK(n == 0);
    rag_chunks_free(chunks, n);
    rag_doc_free(doc);
}

/* ---- a long generated document ---- */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Markdown of about n_sections sections: headings of levels 1..3, paragraphs of 5 to 400
 * words with sentence ends, a paragraph without punctuation, runs of accented and CJK
 * characters without spaces, code blocks. */
static char *generate_markdown(int n_sections, uint32_t seed)
{
    static const char *const words[] = {"the", "duck", "swims", "across", "a", "quiet", "pond", "while",
                                        "engineers", "measure", "tokenization", "throughput", "naïve", "café",
                                        "unbelievably", "über", "x", "retrieval", "augmented", "generation"};
    dk_buf b = {0};
    uint32_t s = seed;
    for (int sec = 0; sec < n_sections; sec++) {
        int level = 1 + (int)(rng_next(&s) % 3);
        dk_buf_printf(&b, "%.*s Section %d\n\n", level, "###", sec);
        int n_paras = 1 + (int)(rng_next(&s) % 4);
        for (int p = 0; p < n_paras; p++) {
            uint32_t kind = rng_next(&s) % 10;
            if (kind == 0) {
                for (int k = 0; k < 150; k++) dk_buf_puts(&b, k % 3 ? "\u00E9" : "\u6F22");
                dk_buf_puts(&b, "\n\n");
                continue;
            }
            if (kind == 1) {
                dk_buf_puts(&b, "```\n# code, not a heading\n\nint main(void) { return 0; }\n```\n\n");
                continue;
            }
            int n_words = 5 + (int)(rng_next(&s) % (kind == 2 ? 400 : 120));
            for (int w = 0; w < n_words; w++) {
                dk_buf_puts(&b, words[rng_next(&s) % (sizeof words / sizeof words[0])]);
                if (kind != 3 && rng_next(&s) % 9 == 0) dk_buf_puts(&b, rng_next(&s) % 2 ? "." : "?");
                dk_buf_putc(&b, w + 1 < n_words ? (rng_next(&s) % 15 ? ' ' : '\n') : '.');
            }
            dk_buf_puts(&b, "\n\n");
        }
    }
    return dk_buf_detach(&b);
}

TEST(rag_chunk, long_document_invariants_with_word_counts)
{
    char *md = generate_markdown(60, 12345);
    REQUIRE(md);
    rag_doc *doc = doc_from("gen.md", md);
    REQUIRE(doc);
    static const size_t maxes[][2] = {{8, 3}, {32, 8}, {128, 40}, {512, 0}};
    for (size_t k = 0; k < sizeof maxes / sizeof maxes[0]; k++) {
        word_counter wc = {0};
        rag_chunk_opts o = {.max_tokens = maxes[k][0], .overlap_tokens = maxes[k][1], .count = count_words, .ud = &wc};
        rag_chunk *chunks = NULL;
        size_t n = 0;
        char err[DK_ERRLEN];
        REQUIRE_MSG(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK, "%s", err);
        size_t counts = wc.n_calls;
        chunk_stats st = check_chunks(doc, chunks, n, &o, 1);
        if (o.overlap_tokens) CHECK(st.n_overlapping > 0);
        /* sparing: a count per block and a few dozen per chunk, never per byte */
        CHECK_MSG(counts < 2 * doc->n_blocks + 64 * n, "%zu counts for %zu blocks, %zu chunks", counts, doc->n_blocks, n);
        test_log("max %zu overlap %zu: %zu blocks, %zu chunks (%zu of %zu same-section pairs overlap), %zu counts",
                 o.max_tokens, o.overlap_tokens, doc->n_blocks, n, st.n_overlapping, st.n_pairs, counts);
        rag_chunks_free(chunks, n);
    }
    rag_doc_free(doc);
    dk_free(md);
}

TEST(rag_chunk, long_document_invariants_with_bert_tokenizer)
{
    char path[512];
    test_kit_file(path, sizeof path, "forward/bert-tiny/bert-tiny.F32.gguf");
    engine_load_params params;
    engine_load_params_default(&params);
    params.vocab_only = true;
    bert_counter bc = {0};
    char err[DK_ERRLEN];
    REQUIRE_MSG(engine_model_load(&bc.model, path, &params, err) == DK_OK, "%s", err);
    char *md = generate_markdown(40, 777);
    rag_doc *doc = md ? doc_from("gen.md", md) : NULL;
    static const size_t maxes[][2] = {{16, 4}, {64, 16}, {256, 32}};
    for (size_t k = 0; doc && k < sizeof maxes / sizeof maxes[0]; k++) {
        bc.n_calls = 0;
        rag_chunk_opts o = {.max_tokens = maxes[k][0], .overlap_tokens = maxes[k][1], .count = count_bert, .ud = &bc};
        rag_chunk *chunks = NULL;
        size_t n = 0;
        REQUIRE_MSG(rag_chunk_doc(doc, &o, &chunks, &n, err) == DK_OK, "%s", err);
        size_t counts = bc.n_calls;
        chunk_stats st = check_chunks(doc, chunks, n, &o, 0);
        CHECK_MSG(st.n_overlapping * 20 >= st.n_pairs * 19, "only %zu of %zu pairs overlap", st.n_overlapping, st.n_pairs);
        size_t full = 0;
        for (size_t i = 0; i < n; i++) full += chunks[i].n_tokens * 2 > o.max_tokens;
        CHECK_MSG(full * 2 > n, "only %zu of %zu chunks are more than half full", full, n);
        test_log("bert max %zu overlap %zu: %zu chunks (%zu of %zu pairs overlap, %zu over half full), %zu counts",
                 o.max_tokens, o.overlap_tokens, n, st.n_overlapping, st.n_pairs, full, counts);
        rag_chunks_free(chunks, n);
    }
    rag_doc_free(doc);
    dk_free(md);
    engine_model_free(bc.model);
}

TEST(rag_chunk, allocation_failures_fail_cleanly)
{
    rag_doc *doc = doc_from("a.md", "# A\n\none two three four five six\n\n## B\n\nseven eight nine ten\n\neleven");
    REQUIRE(doc);
    rag_chunk_opts o = {.max_tokens = 4, .overlap_tokens = 1, .count = count_words};
    int ok_at = -1;
    for (int fail_at = 0; fail_at < 200 && ok_at < 0; fail_at++) {
        rag_chunk *chunks = NULL;
        size_t n = 0;
        char err[DK_ERRLEN];
        dk_alloc_fail_after(fail_at);
        int rc = rag_chunk_doc(doc, &o, &chunks, &n, err);
        dk_alloc_fail_after(-1);
        if (rc != DK_OK) {
            CHECK_MSG(rc == DK_ERR_NOMEM, "failing at %d: rc %d (%s)", fail_at, rc, err);
            CHECK(chunks == NULL && n == 0);
            continue;
        }
        ok_at = fail_at;
        check_chunks(doc, chunks, n, &o, 1);
        rag_chunks_free(chunks, n);
    }
    CHECK(ok_at > 0);
    rag_doc_free(doc);
}
