/*
 * test_rag_bm25.c: the keyword index and reciprocal-rank fusion of rag/bm25.c. BM25 scores of
 * a three-document corpus computed by hand (the formula of bm25.c's header, numbers below),
 * ranking and ties, distinct query words, stopwords, the allow bitmap, Unicode words and
 * case folding, invalid UTF-8, empty inputs; RRF sums by hand, ties, a repeated id, empty
 * lists; and the indexing speed of 100k documents of 50 words.
 */
#include <stdlib.h>

#include "base/base.h"
#include "rag/rag.h"
#include "test.h"

/* Built from texts (NUL-terminated); NULL on failure (reported). */
static rag_bm25 *index_of(const char *const *texts, size_t n)
{
    char err[DK_ERRLEN];
    rag_bm25 *b = NULL;
    if (rag_bm25_new(&b, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "rag_bm25_new: %s", err);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (rag_bm25_add(b, texts[i], strlen(texts[i]), err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "rag_bm25_add: %s", err);
            rag_bm25_free(b);
            return NULL;
        }
    return b;
}

static size_t search(const rag_bm25 *b, const char *q, size_t k, const uint8_t *allow, rag_hit *out)
{
    char err[DK_ERRLEN];
    size_t n = 99;
    int rc = rag_bm25_search(b, q, k, allow, out, &n, err);
    CHECK_MSG(rc == DK_OK, "search '%s': %s", q, err);
    return n;
}

/* N = 3 documents of 3, 2 and 3 indexed words ("the" is a stopword): avgdl = 8/3.
 * idf(df=1) = ln(1 + 2.5/1.5) = ln(8/3); idf(df=2) = ln(1 + 1.5/2.5) = ln(1.6).
 * tf part = tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl)). */
static const char *const CORPUS[] = {
    "Apple banana apple.",
    "banana, cherry",
    "The cherry cherry date",
};

TEST(rag_bm25, scores_by_hand)
{
    rag_bm25 *b = index_of(CORPUS, 3);
    REQUIRE(b);
    CHECK_EQ_INT(rag_bm25_count(b), 3);
    rag_hit h[5];
    /* apple: only doc 0, tf 2, dl 3: ln(8/3) * 4.4 / (2 + 1.3125) */
    size_t n = search(b, "apple", 5, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 0);
    CHECK_NEAR(h[0].score, 1.3028373474, 1e-5);
    /* banana cherry: doc 1 has both (dl 2), doc 2 cherry twice, doc 0 banana once */
    n = search(b, "banana cherry", 5, NULL, h);
    REQUIRE(n == 3);
    CHECK_EQ_INT(h[0].id, 1);
    CHECK_NEAR(h[0].score, 1.0470966930, 1e-5);
    CHECK_EQ_INT(h[1].id, 2);
    CHECK_NEAR(h[1].score, 0.6243067075, 1e-5);
    CHECK_EQ_INT(h[2].id, 0);
    CHECK_NEAR(h[2].score, 0.4471385878, 1e-5);
    /* k cuts the list, best first */
    n = search(b, "banana cherry", 2, NULL, h);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(h[1].id, 2);
    /* a word of a rarer term and a common one: date (df 1) in doc 2 */
    n = search(b, "DATE", 5, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 2);
    CHECK_NEAR(h[0].score, 0.9331132353, 1e-5);
    rag_bm25_free(b);
}

TEST(rag_bm25, distinct_words_and_stopwords)
{
    rag_bm25 *b = index_of(CORPUS, 3);
    REQUIRE(b);
    rag_hit h[5];
    /* a word repeated in the query counts once; case does not matter */
    size_t n = search(b, "apple Apple APPLE", 5, NULL, h);
    REQUIRE(n == 1);
    CHECK_NEAR(h[0].score, 1.3028373474, 1e-5);
    /* stopwords are not indexed nor searched */
    CHECK_EQ_INT(search(b, "the", 5, NULL, h), 0);
    n = search(b, "the apple of the", 5, NULL, h);
    REQUIRE(n == 1);
    CHECK_NEAR(h[0].score, 1.3028373474, 1e-5);
    /* no shared word, an empty query, k 0 */
    CHECK_EQ_INT(search(b, "zebra", 5, NULL, h), 0);
    CHECK_EQ_INT(search(b, "", 5, NULL, h), 0);
    CHECK_EQ_INT(search(b, "  ,;. ", 5, NULL, h), 0);
    CHECK_EQ_INT(search(b, "apple", 0, NULL, h), 0);
    rag_bm25_free(b);
}

TEST(rag_bm25, allow_bitmap)
{
    rag_bm25 *b = index_of(CORPUS, 3);
    REQUIRE(b);
    rag_hit h[5];
    uint8_t allow = (1u << 0) | (1u << 2); /* docs 0 and 2 */
    size_t n = search(b, "banana cherry", 5, &allow, h);
    REQUIRE(n == 2);
    CHECK_EQ_INT(h[0].id, 2);
    CHECK_EQ_INT(h[1].id, 0);
    /* filtered documents still count for the idf: the scores are those of the whole index */
    CHECK_NEAR(h[0].score, 0.6243067075, 1e-5);
    allow = 0;
    CHECK_EQ_INT(search(b, "banana cherry", 5, &allow, h), 0);
    rag_bm25_free(b);
}

TEST(rag_bm25, ties_lower_id_first)
{
    const char *texts[] = {"nothing here", "same words twice", "same words twice", "other", "same words twice"};
    rag_bm25 *b = index_of(texts, 5);
    REQUIRE(b);
    rag_hit h[5];
    size_t n = search(b, "twice words", 5, NULL, h);
    REQUIRE(n == 3);
    CHECK_EQ_INT(h[0].id, 1);
    CHECK_EQ_INT(h[1].id, 2);
    CHECK_EQ_INT(h[2].id, 4);
    CHECK(h[0].score == h[1].score && h[1].score == h[2].score);
    rag_bm25_free(b);
}

TEST(rag_bm25, unicode_words)
{
    const char *texts[] = {
        "Éclair au café, 2024.",        /* 0 */
        "Die Straße ist lang",          /* 1 */
        "ΣΟΦΙΑ και γνώση",              /* 2 */
        ("foo\xff" "bar e\xcc\x81t\xc3\xa9"), /* 3: an invalid byte between words; é as e + U+0301 */
        "東京 tokyo",                   /* 4 */
        "don't split-words here_too",   /* 5 */
    };
    rag_bm25 *b = index_of(texts, 6);
    REQUIRE(b);
    rag_hit h[6];
    size_t n = search(b, "éclair", 6, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 0);
    n = search(b, "ÉCLAIR", 6, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 0);
    CHECK_EQ_INT(search(b, "Café", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "cafe", 6, NULL, h), 0); /* no accent folding */
    CHECK_EQ_INT(search(b, "2024", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "STRAßE", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "σοφια", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "foobar", 6, NULL, h), 0);
    n = search(b, "bar", 6, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 3);
    CHECK_EQ_INT(search(b, "foo", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "E\xcc\x81T\xc3\x89", 6, NULL, h), 1); /* the combining mark stays in the word */
    CHECK_EQ_INT(search(b, "東京", 6, NULL, h), 1);
    /* punctuation splits words */
    CHECK_EQ_INT(search(b, "split", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "too", 6, NULL, h), 1);
    CHECK_EQ_INT(search(b, "don", 6, NULL, h), 1);
    rag_bm25_free(b);
}

TEST(rag_bm25, empty_documents_and_index)
{
    char err[DK_ERRLEN];
    rag_bm25 *b = NULL;
    REQUIRE(rag_bm25_new(&b, err) == DK_OK);
    rag_hit h[2];
    CHECK_EQ_INT(rag_bm25_count(b), 0);
    CHECK_EQ_INT(search(b, "anything", 2, NULL, h), 0);
    REQUIRE(rag_bm25_add(b, NULL, 0, err) == DK_OK);
    REQUIRE(rag_bm25_add(b, "the of and", 10, err) == DK_OK); /* only stopwords */
    REQUIRE(rag_bm25_add(b, "word", 4, err) == DK_OK);
    CHECK_EQ_INT(rag_bm25_count(b), 3);
    /* N = 3, df 1, avgdl 1/3, dl 1: ln(8/3) * 2.2 / (1 + 1.2 * (0.25 + 2.25)) */
    size_t n = search(b, "word", 2, NULL, h);
    REQUIRE(n == 1);
    CHECK_EQ_INT(h[0].id, 2);
    CHECK_NEAR(h[0].score, log(8.0 / 3.0) * 2.2 / 4.0, 1e-5);
    /* only n bytes are read */
    REQUIRE(rag_bm25_add(b, "wordy", 4, err) == DK_OK);
    CHECK_EQ_INT(search(b, "word", 2, NULL, h), 2);
    CHECK(rag_bm25_search(b, NULL, 2, NULL, h, &n, err) == DK_ERR_ARG);
    rag_bm25_free(b);
    rag_bm25_free(NULL);
}

TEST(rag_bm25, rrf_by_hand)
{
    char err[DK_ERRLEN];
    rag_hit a[] = {{5, 0.9f}, {3, 0.8f}, {1, 0.1f}};
    rag_hit bl[] = {{3, 7.0f}, {7, 2.0f}};
    const rag_hit *lists[] = {a, bl};
    size_t lens[] = {3, 2};
    rag_hit out[8];
    size_t n = 0;
    REQUIRE(rag_rrf_fuse(lists, lens, 2, 0, 8, out, &n, err) == DK_OK);
    REQUIRE(n == 4);
    /* 3: 1/62 + 1/61; 5: 1/61; 7: 1/62; 1: 1/63 */
    CHECK_EQ_INT(out[0].id, 3);
    CHECK_NEAR(out[0].score, 1.0 / 62 + 1.0 / 61, 1e-7);
    CHECK_EQ_INT(out[1].id, 5);
    CHECK_NEAR(out[1].score, 1.0 / 61, 1e-7);
    CHECK_EQ_INT(out[2].id, 7);
    CHECK_NEAR(out[2].score, 1.0 / 62, 1e-7);
    CHECK_EQ_INT(out[3].id, 1);
    CHECK_NEAR(out[3].score, 1.0 / 63, 1e-7);
    /* k cuts */
    REQUIRE(rag_rrf_fuse(lists, lens, 2, 0, 2, out, &n, err) == DK_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(out[1].id, 5);
    /* k_rrf 1: ranks 1, 2 in one list and 2, 1 in the other tie at 1/2 + 1/3; lower id first */
    rag_hit x[] = {{9, 0}, {4, 0}}, y[] = {{4, 0}, {9, 0}};
    const rag_hit *l2[] = {x, y};
    size_t lens2[] = {2, 2};
    REQUIRE(rag_rrf_fuse(l2, lens2, 2, 1, 8, out, &n, err) == DK_OK);
    REQUIRE(n == 2);
    CHECK_EQ_INT(out[0].id, 4);
    CHECK_EQ_INT(out[1].id, 9);
    CHECK_NEAR(out[0].score, 0.5 + 1.0 / 3, 1e-6);
    CHECK(out[0].score == out[1].score);
}

TEST(rag_bm25, rrf_edges)
{
    char err[DK_ERRLEN];
    rag_hit out[4];
    size_t n = 7;
    REQUIRE(rag_rrf_fuse(NULL, NULL, 0, 0, 4, out, &n, err) == DK_OK);
    CHECK_EQ_INT(n, 0);
    rag_hit a[] = {{2, 1}, {2, 1}, {1, 1}}; /* an id twice in one list: its best rank counts */
    const rag_hit *lists[] = {a, NULL};
    size_t lens[] = {3, 0};
    REQUIRE(rag_rrf_fuse(lists, lens, 2, 0, 4, out, &n, err) == DK_OK);
    REQUIRE(n == 2);
    CHECK_EQ_INT(out[0].id, 2);
    CHECK_NEAR(out[0].score, 1.0 / 61, 1e-7);
    CHECK_EQ_INT(out[1].id, 1);
    CHECK_NEAR(out[1].score, 1.0 / 63, 1e-7);
    REQUIRE(rag_rrf_fuse(lists, lens, 2, 0, 0, out, &n, err) == DK_OK);
    CHECK_EQ_INT(n, 0);
    size_t bad[] = {0, 2};
    CHECK(rag_rrf_fuse(lists, bad, 2, 0, 4, out, &n, err) == DK_ERR_ARG);
}

TEST(rag_bm25, index_speed)
{
    enum { N_DOCS = 100000, N_WORDS = 50, VOCAB = 30000 };
    char err[DK_ERRLEN];
    rag_bm25 *b = NULL;
    REQUIRE(rag_bm25_new(&b, err) == DK_OK);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    dk_buf text = {0};
    size_t *ends = dk_malloc_array(N_DOCS, sizeof *ends);
    REQUIRE(ends);
    for (int d = 0; d < N_DOCS; d++) {
        for (int w = 0; w < N_WORDS; w++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            /* a skewed vocabulary: the square of a uniform number favours small word ids */
            double u = (double)(rng >> 11) / (double)(1ull << 53);
            dk_buf_printf(&text, "w%u ", (unsigned)(u * u * VOCAB));
        }
        ends[d] = text.len;
    }
    REQUIRE(!text.failed);
    uint64_t t0 = dk_now_ns();
    int rc = DK_OK;
    for (int d = 0; d < N_DOCS && rc == DK_OK; d++) {
        size_t start = d ? ends[d - 1] : 0;
        rc = rag_bm25_add(b, text.data + start, ends[d] - start, err);
    }
    double add_ms = (double)(dk_now_ns() - t0) / 1e6;
    dk_buf_free(&text);
    dk_free(ends);
    REQUIRE_MSG(rc == DK_OK, "%s", err);
    CHECK_EQ_INT(rag_bm25_count(b), N_DOCS);
    rag_hit h[10];
    t0 = dk_now_ns();
    size_t n = search(b, "w1 w77 w2999 w29000", 10, NULL, h);
    double search_ms = (double)(dk_now_ns() - t0) / 1e6;
    CHECK_EQ_INT(n, 10);
    for (size_t i = 1; i < n; i++) CHECK(h[i - 1].score >= h[i].score);
    test_log("bm25: %d documents of %d words indexed in %.0f ms; a 4-word search %.1f ms",
             N_DOCS, N_WORDS, add_ms, search_ms);
    CHECK_MSG(add_ms < 30000, "indexing took %.0f ms", add_ms);
    rag_bm25_free(b);
}
