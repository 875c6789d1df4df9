/*
 * bm25.c: the keyword index of rag.h and reciprocal-rank fusion. An inverted index: a hash
 * table of words (open addressing, the words' bytes in one growing arena), each word with a
 * growable array of postings (document id, term frequency) in document order, and the length
 * in words of every document. A word is a maximal run of Unicode letters and digits (and the
 * combining marks that follow them), lowercased code point by code point with utf8proc
 * (simple case folding: "Éclair" is "éclair", but "Straße" stays apart from "STRASSE");
 * invalid UTF-8 bytes separate words; words longer than BM25_MAX_WORD bytes are cut there.
 * A short list of English stopwords is dropped from documents and queries alike.
 *
 * Scoring is Okapi BM25 with k1 = 1.2 and b = 0.75 and Lucene's non-negative IDF:
 *   score(d, q) = sum over the distinct words t of q found in d of
 *     idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl)),
 *   idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),
 * N documents, df of them containing t, |d| the words of d, avgdl their mean.
 *
 * Not for: the store's persistence (the store rebuilds the index from its chunks), phrase or
 * prefix queries, stemming.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "rag/rag.h"

#define BM25_K1 1.2
#define BM25_B 0.75
#define BM25_MAX_WORD 128   /* bytes of a word kept (cut at a code point boundary) */
#define RRF_DEFAULT_K 60

typedef struct bm25_posting {
    uint32_t doc;
    uint32_t tf;
} bm25_posting;

typedef struct bm25_term {
    size_t word_off;        /* the word's bytes: words[word_off, word_off + word_len) */
    uint32_t word_len;
    uint32_t hash;
    bm25_posting *postings; /* n_postings, in increasing doc order */
    uint32_t n_postings, cap_postings;
} bm25_term;

struct rag_bm25 {
    bm25_term *terms;       /* n_terms */
    size_t n_terms, cap_terms;
    uint32_t *slots;        /* n_slots (a power of two): term index + 1, 0 empty */
    size_t n_slots;
    char *words;            /* words_len bytes of the words, back to back */
    size_t words_len, words_cap;
    uint32_t *doc_len;      /* n_docs: words of each document */
    size_t n_docs, cap_docs;
    uint64_t total_len;     /* sum of doc_len */
};

static int nomem(char *err) { return dk_fail(err, DK_ERR_NOMEM, "out of memory"); }

/* ---- words ---- */

static const char *const STOPWORDS[] = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "if", "in", "into", "is", "it",
    "its", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they",
    "this", "to", "was", "were", "will", "with",
};

static bool is_stopword(const char *w, size_t n)
{
    if (n > 5) return false; /* the longest stopword has 5 bytes */
    for (size_t i = 0; i < sizeof STOPWORDS / sizeof STOPWORDS[0]; i++)
        if (STOPWORDS[i][0] == w[0] && strncmp(STOPWORDS[i], w, n) == 0 && STOPWORDS[i][n] == 0) return true;
    return false;
}

static bool is_word_category(utf8proc_int32_t c, bool in_word)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
        return in_word; /* an accent written as a combining mark stays in its word */
    default:
        return false;
    }
}

/* Reads words of text[0, n) one at a time. */
typedef struct word_reader {
    const uint8_t *p, *end;
    char word[BM25_MAX_WORD + 4];
    size_t len;
} word_reader;

/* The next word (lowercased) into r->word / r->len; false at the end of the text. ASCII
 * takes a shortcut past utf8proc (the same answers: letters, digits, and lowercase A-Z). */
static bool word_next(word_reader *r)
{
    r->len = 0;
    bool cut = false;
    while (r->p < r->end) {
        uint8_t c0 = *r->p;
        uint8_t enc[4];
        size_t m;
        if (c0 < 0x80) {
            r->p++;
            bool alnum = (c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9');
            if (!alnum) {
                if (r->len) return true;
                cut = false;
                continue;
            }
            enc[0] = c0 >= 'A' && c0 <= 'Z' ? (uint8_t)(c0 + 32) : c0;
            m = 1;
        } else {
            utf8proc_int32_t c;
            utf8proc_ssize_t k = utf8proc_iterate(r->p, r->end - r->p, &c);
            if (k < 0) { /* an invalid byte: a separator */
                r->p++;
                if (r->len) return true;
                cut = false;
                continue;
            }
            r->p += k;
            if (!is_word_category(c, r->len > 0 || cut)) {
                if (r->len) return true;
                cut = false;
                continue;
            }
            m = (size_t)utf8proc_encode_char(utf8proc_tolower(c), enc);
        }
        if (cut) continue;
        if (r->len + m > BM25_MAX_WORD) {
            cut = true; /* the rest of this word is skipped */
            continue;
        }
        memcpy(r->word + r->len, enc, m);
        r->len += m;
    }
    return r->len > 0;
}

/* FNV-1a. */
static uint32_t word_hash(const char *w, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)w[i]) * 16777619u;
    return h;
}

/* ---- the word table ---- */

/* The index of word's term, or -1. */
static long term_find(const rag_bm25 *b, const char *w, size_t n, uint32_t h)
{
    if (!b->n_slots) return -1;
    for (size_t i = h & (b->n_slots - 1);; i = (i + 1) & (b->n_slots - 1)) {
        uint32_t s = b->slots[i];
        if (!s) return -1;
        const bm25_term *t = &b->terms[s - 1];
        if (t->hash == h && t->word_len == n && memcmp(b->words + t->word_off, w, n) == 0) return (long)(s - 1);
    }
}

static int slots_grow(rag_bm25 *b)
{
    size_t n = b->n_slots ? b->n_slots * 2 : 1024;
    uint32_t *slots = dk_calloc(n, sizeof *slots);
    if (!slots) return -1;
    for (size_t t = 0; t < b->n_terms; t++) {
        size_t i = b->terms[t].hash & (n - 1);
        while (slots[i]) i = (i + 1) & (n - 1);
        slots[i] = (uint32_t)(t + 1);
    }
    dk_free(b->slots);
    b->slots = slots;
    b->n_slots = n;
    return 0;
}

/* The index of word's term, added when new; -1 when out of memory. */
static long term_get(rag_bm25 *b, const char *w, size_t n)
{
    uint32_t h = word_hash(w, n);
    long t = term_find(b, w, n, h);
    if (t >= 0) return t;
    if (b->n_terms >= UINT32_MAX - 1) return -1;
    if ((b->n_terms + 1) * 2 > b->n_slots && slots_grow(b) != 0) return -1; /* load <= 1/2 */
    if (b->n_terms == b->cap_terms) {
        size_t cap = b->cap_terms ? b->cap_terms * 2 : 256;
        bm25_term *terms = dk_realloc(b->terms, cap * sizeof *terms);
        if (!terms) return -1;
        b->terms = terms;
        b->cap_terms = cap;
    }
    if (b->words_len + n > b->words_cap) {
        size_t cap = b->words_cap ? b->words_cap : 4096;
        while (cap < b->words_len + n) cap *= 2;
        char *words = dk_realloc(b->words, cap);
        if (!words) return -1;
        b->words = words;
        b->words_cap = cap;
    }
    memcpy(b->words + b->words_len, w, n);
    bm25_term *term = &b->terms[b->n_terms];
    memset(term, 0, sizeof *term);
    term->word_off = b->words_len;
    term->word_len = (uint32_t)n;
    term->hash = h;
    b->words_len += n;
    size_t i = h & (b->n_slots - 1);
    while (b->slots[i]) i = (i + 1) & (b->n_slots - 1);
    b->slots[i] = (uint32_t)(b->n_terms + 1);
    return (long)b->n_terms++;
}

/* One more occurrence of term in document doc (the one being added). */
static int term_count(bm25_term *t, uint32_t doc)
{
    if (t->n_postings && t->postings[t->n_postings - 1].doc == doc) {
        t->postings[t->n_postings - 1].tf++;
        return 0;
    }
    if (t->n_postings == t->cap_postings) {
        uint32_t cap = t->cap_postings ? t->cap_postings * 2 : 2;
        bm25_posting *p = dk_realloc(t->postings, (size_t)cap * sizeof *p);
        if (!p) return -1;
        t->postings = p;
        t->cap_postings = cap;
    }
    t->postings[t->n_postings++] = (bm25_posting){.doc = doc, .tf = 1};
    return 0;
}

/* ---- the index ---- */

int rag_bm25_new(rag_bm25 **out, char *err)
{
    *out = dk_calloc(1, sizeof **out);
    return *out ? DK_OK : nomem(err);
}

void rag_bm25_free(rag_bm25 *b)
{
    if (!b) return;
    for (size_t i = 0; i < b->n_terms; i++) dk_free(b->terms[i].postings);
    dk_free(b->terms);
    dk_free(b->slots);
    dk_free(b->words);
    dk_free(b->doc_len);
    dk_free(b);
}

size_t rag_bm25_count(const rag_bm25 *b) { return b->n_docs; }

/* Takes the occurrences of document doc back out (after a failed add). */
static void doc_undo(rag_bm25 *b, uint32_t doc)
{
    for (size_t i = 0; i < b->n_terms; i++) {
        bm25_term *t = &b->terms[i];
        if (t->n_postings && t->postings[t->n_postings - 1].doc == doc) t->n_postings--;
    }
}

int rag_bm25_add(rag_bm25 *b, const char *text, size_t n, char *err)
{
    if (!text && n) return dk_fail(err, DK_ERR_ARG, "bm25: no text");
    if (b->n_docs >= UINT32_MAX) return dk_fail(err, DK_ERR_LIMIT, "bm25: at most %u documents", UINT32_MAX);
    if (b->n_docs == b->cap_docs) {
        size_t cap = b->cap_docs ? b->cap_docs * 2 : 1024;
        uint32_t *len = dk_realloc(b->doc_len, cap * sizeof *len);
        if (!len) return nomem(err);
        b->doc_len = len;
        b->cap_docs = cap;
    }
    uint32_t doc = (uint32_t)b->n_docs;
    word_reader r = {.p = (const uint8_t *)text, .end = (const uint8_t *)text + n};
    uint32_t n_words = 0;
    while (word_next(&r)) {
        if (is_stopword(r.word, r.len)) continue;
        long t = term_get(b, r.word, r.len);
        if (t < 0 || term_count(&b->terms[t], doc) != 0) {
            doc_undo(b, doc);
            return nomem(err);
        }
        if (n_words < UINT32_MAX) n_words++;
    }
    b->doc_len[doc] = n_words;
    b->total_len += n_words;
    b->n_docs++;
    return DK_OK;
}

/* Best first, ties: lower id first. */
static int hit_cmp(const void *pa, const void *pb)
{
    const rag_hit *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int long_cmp(const void *pa, const void *pb)
{
    long a = *(const long *)pa, b = *(const long *)pb;
    return a < b ? -1 : a > b;
}

static bool allowed(const uint8_t *allow, uint32_t id) { return !allow || (allow[id / 8] >> (id % 8)) & 1; }

/* The distinct indexed terms of query into *terms (dk_free'd by the caller). */
static int query_terms(const rag_bm25 *b, const char *query, long **terms, size_t *n_terms, char *err)
{
    *terms = NULL;
    *n_terms = 0;
    size_t cap = 0, n = 0;
    long *t = NULL;
    word_reader r = {.p = (const uint8_t *)query, .end = (const uint8_t *)query + strlen(query)};
    while (word_next(&r)) {
        if (is_stopword(r.word, r.len)) continue;
        long i = term_find(b, r.word, r.len, word_hash(r.word, r.len));
        if (i < 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            long *grown = dk_realloc(t, cap * sizeof *grown);
            if (!grown) {
                dk_free(t);
                return nomem(err);
            }
            t = grown;
        }
        t[n++] = i;
    }
    if (n > 1) qsort(t, n, sizeof *t, long_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || t[u - 1] != t[i]) t[u++] = t[i];
    *terms = t;
    *n_terms = u;
    return DK_OK;
}

int rag_bm25_search(const rag_bm25 *b, const char *query, size_t k, const uint8_t *allow, rag_hit *out,
                    size_t *n_out, char *err)
{
    *n_out = 0;
    if (!query) return dk_fail(err, DK_ERR_ARG, "bm25: no query");
    if (k == 0 || b->n_docs == 0) return DK_OK;
    long *terms;
    size_t n_terms;
    int rc = query_terms(b, query, &terms, &n_terms, err);
    if (rc != DK_OK || n_terms == 0) {
        dk_free(terms);
        return rc;
    }
    double *score = dk_calloc(b->n_docs, sizeof *score);
    uint32_t *touched = NULL;
    size_t n_touched = 0, cap_touched = 0;
    if (!score) goto oom;
    double n_docs = (double)b->n_docs, avgdl = (double)b->total_len / n_docs;
    for (size_t q = 0; q < n_terms; q++) {
        const bm25_term *t = &b->terms[terms[q]];
        double df = t->n_postings;
        double idf = log(1.0 + (n_docs - df + 0.5) / (df + 0.5));
        for (uint32_t i = 0; i < t->n_postings; i++) {
            uint32_t d = t->postings[i].doc;
            if (!allowed(allow, d)) continue;
            double tf = t->postings[i].tf;
            double norm = BM25_K1 * (1.0 - BM25_B + BM25_B * (double)b->doc_len[d] / avgdl);
            if (score[d] == 0) {
                if (n_touched == cap_touched) {
                    size_t cap = cap_touched ? cap_touched * 2 : 256;
                    uint32_t *grown = dk_realloc(touched, cap * sizeof *grown);
                    if (!grown) goto oom;
                    touched = grown;
                    cap_touched = cap;
                }
                touched[n_touched++] = d;
            }
            score[d] += idf * tf * (BM25_K1 + 1.0) / (tf + norm);
        }
    }
    rag_hit *hits = dk_malloc_array(n_touched ? n_touched : 1, sizeof *hits);
    if (!hits) goto oom;
    for (size_t i = 0; i < n_touched; i++) hits[i] = (rag_hit){.id = touched[i], .score = (float)score[touched[i]]};
    qsort(hits, n_touched, sizeof *hits, hit_cmp);
    size_t n = n_touched < k ? n_touched : k;
    memcpy(out, hits, n * sizeof *hits);
    *n_out = n;
    dk_free(hits);
    dk_free(touched);
    dk_free(score);
    dk_free(terms);
    return DK_OK;
oom:
    dk_free(touched);
    dk_free(score);
    dk_free(terms);
    return nomem(err);
}

/* ---- reciprocal-rank fusion ---- */

typedef struct rrf_entry {
    uint32_t id;
    uint32_t list;
    double score;
} rrf_entry;

/* By id, then list, then best (highest) contribution first. */
static int rrf_entry_cmp(const void *pa, const void *pb)
{
    const rrf_entry *a = pa, *b = pb;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    if (a->list != b->list) return a->list < b->list ? -1 : 1;
    return a->score > b->score ? -1 : a->score < b->score;
}

/* Best first by the exact sum, ties: lower id first. */
static int rrf_sum_cmp(const void *pa, const void *pb)
{
    const rrf_entry *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

int rag_rrf_fuse(const rag_hit *const *lists, const size_t *list_lens, size_t n_lists, size_t k_rrf, size_t k,
                 rag_hit *out, size_t *n_out, char *err)
{
    *n_out = 0;
    if (n_lists && (!lists || !list_lens)) return dk_fail(err, DK_ERR_ARG, "rrf: no lists");
    if (n_lists > UINT32_MAX) return dk_fail(err, DK_ERR_ARG, "rrf: too many lists");
    size_t total = 0;
    for (size_t l = 0; l < n_lists; l++) {
        if (list_lens[l] && !lists[l]) return dk_fail(err, DK_ERR_ARG, "rrf: list %zu is missing", l);
        if (dk_add_size(total, list_lens[l], &total) != 0) return nomem(err);
    }
    if (k == 0 || total == 0) return DK_OK;
    double kr = k_rrf ? (double)k_rrf : RRF_DEFAULT_K;
    rrf_entry *e = dk_malloc_array(total, sizeof *e);
    if (!e) return nomem(err);
    size_t n = 0;
    for (size_t l = 0; l < n_lists; l++)
        for (size_t r = 0; r < list_lens[l]; r++)
            e[n++] = (rrf_entry){.id = lists[l][r].id, .list = (uint32_t)l, .score = 1.0 / (kr + (double)(r + 1))};
    qsort(e, n, sizeof *e, rrf_entry_cmp);
    /* one sum per id; an id repeated within one list counts at its best rank only */
    size_t m = 0;
    uint32_t prev_list = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t list = e[i].list;
        if (m && e[m - 1].id == e[i].id) {
            if (list != prev_list) e[m - 1].score += e[i].score;
        } else {
            e[m++] = e[i];
        }
        prev_list = list;
    }
    qsort(e, m, sizeof *e, rrf_sum_cmp);
    size_t n_best = m < k ? m : k;
    for (size_t i = 0; i < n_best; i++) out[i] = (rag_hit){.id = e[i].id, .score = (float)e[i].score};
    *n_out = n_best;
    dk_free(e);
    return DK_OK;
}
