/*
 * test_rag_store.c: the retrieval store end to end (rag/store.c, ingest.c, search.c) with the
 * kit's bert-tiny as the embedding model: a corpus written by the test (Markdown, text, HTML,
 * CSV and a DuckDB table) is ingested; keyword, vector and hybrid searches find the passages
 * of the right sources; re-ingesting the unchanged corpus embeds nothing and an edited file
 * re-embeds only its changed chunks; filters (source, path glob, dates) hold; bad files are
 * skipped with their reasons; a cancelled ingest leaves the store as it was before the file
 * in progress; the persisted index is read back after a reopen and gives the same results; a
 * cross-encoder reorders the candidates by its own scores.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/base.h"
#include "convert/convert.h"
#include "engine/engine.h"
#include "rag/rag.h"
#include "rag/store_internal.h"
#include "test.h"
#include "test_duckdb.h"

static engine_model *load_bert(void)
{
    char path[1024];
    test_kit_file(path, sizeof path, "forward/bert-tiny/bert-tiny.F32.gguf");
    engine_load_params lp;
    engine_load_params_default(&lp);
    engine_model *m = NULL;
    char err[DK_ERRLEN];
    if (engine_model_load(&m, path, &lp, err) != DK_OK) {
        test_log("cannot load %s: %s", path, err);
        return NULL;
    }
    return m;
}

/* test_tmpdir()/NAME, emptied. */
static const char *fresh_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", test_tmpdir(), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) test_log("cannot make %s", buf);
    return buf;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char err[DK_ERRLEN];
    if (dk_file_write(path, text, strlen(text), err) != DK_OK) test_log("%s", err);
}

static const char *FALCONS_MD =
    "---\ntitle: Birds of prey\n---\n"
    "# Falcons\n\nThe peregrine falcon is the fastest animal: it dives at 390 km/h.\n\n"
    "## Diet\n\nFalcons eat smaller birds, which they strike in the air.\n\n"
    "## Nesting\n\nPeregrines nest on cliff ledges and on tall buildings in cities.\n";

static const char *VOLCANO_TXT =
    "Mount Ruapehu is an active stratovolcano in New Zealand.\n\n"
    "Its crater lake, Te Wai a-moe, heats and cools in cycles.\n";

static const char *TEA_HTML =
    "<html><head><title>Tea guide</title><style>p { color: red }</style></head><body>"
    "<h1>Green tea</h1><p>Sencha is steamed &amp; rolled, then dried.</p>"
    "<script>var secret = 'zebracorn';</script>"
    "<h2>Matcha</h2><p>Matcha is stone-ground tencha powder.</p></body></html>";

static const char *CITIES_CSV = "city,country,population\nReykjavik,Iceland,139875\nWellington,New Zealand,215400\n";

/* The corpus: four files in dir. */
static void write_corpus(const char *dir)
{
    write_file(dir, "falcons.md", FALCONS_MD);
    write_file(dir, "volcano.txt", VOLCANO_TXT);
    write_file(dir, "tea.html", TEA_HTML);
    write_file(dir, "cities.csv", CITIES_CSV);
}

typedef struct skips {
    int n;
    char last[512];
} skips;

static void on_skip(void *ud, const char *path, const char *why)
{
    skips *s = ud;
    s->n++;
    snprintf(s->last, sizeof s->last, "%s: %s", path, why);
    test_log("skipped %s", s->last);
}

static int ingest(rag_store *st, engine_model *m, const char *const *paths, size_t n, rag_ingest_stats *stats, skips *sk)
{
    rag_ingest_opts o = {0};
    o.embedder = m;
    o.model_name = "bert-tiny";
    o.chunk_tokens = 48;
    o.overlap_tokens = 8;
    o.on_skip = on_skip;
    o.ud = sk;
    char err[DK_ERRLEN];
    int rc = rag_ingest(st, paths, n, &o, stats, err);
    if (rc != DK_OK) test_log("ingest: %s", err);
    return rc;
}

/* The path of the best passage for query, "" when none. */
static const char *best_path(rag_store *st, engine_model *m, const char *query, rag_mode mode, char *buf, size_t size)
{
    rag_search_opts so = {0};
    so.k = 3;
    so.mode = mode;
    rag_results *r = NULL;
    char err[DK_ERRLEN];
    buf[0] = '\0';
    if (rag_search(st, m, query, &so, &r, err) != DK_OK) {
        test_log("search: %s", err);
        return buf;
    }
    const rag_passage *p = rag_results_get(r, 0);
    if (p) {
        const char *slash = strrchr(p->path, '/');
        snprintf(buf, size, "%s", slash ? slash + 1 : p->path);
    }
    rag_results_free(r);
    return buf;
}

TEST(rag_store, ingest_search_and_reingest)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200];
    fresh_dir(dir, sizeof dir, "rag_corpus1");
    write_corpus(dir);
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    char err[DK_ERRLEN];
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir};
    rag_ingest_stats s1;
    skips sk = {0};
    REQUIRE(ingest(st, m, paths, 1, &s1, &sk) == DK_OK);
    CHECK_EQ_INT(s1.files, 4); /* the store itself is not ingested */
    CHECK_EQ_INT(s1.added, 4);
    CHECK_EQ_INT(sk.n, 0);
    CHECK(s1.chunks >= 4);
    CHECK_EQ_INT(s1.embedded, s1.chunks);
    CHECK_EQ_INT(rag_store_n_sources(st), 4);
    CHECK_EQ_INT(rag_store_n_chunks(st), s1.chunks);
    CHECK_EQ_STR(rag_store_embed_model(st), "bert-tiny");
    CHECK_EQ_INT(rag_store_dim(st), engine_n_embd(m));

    char got[256];
    CHECK_EQ_STR(best_path(st, m, "peregrine dives", RAG_MODE_KEYWORD, got, sizeof got), "falcons.md");
    CHECK_EQ_STR(best_path(st, m, "Ruapehu crater lake", RAG_MODE_KEYWORD, got, sizeof got), "volcano.txt");
    CHECK_EQ_STR(best_path(st, m, "matcha tencha", RAG_MODE_HYBRID, got, sizeof got), "tea.html");
    CHECK_EQ_STR(best_path(st, m, "Reykjavik population", RAG_MODE_HYBRID, got, sizeof got), "cities.csv");
    /* Script text is not content. */
    rag_search_opts so = {.k = 5, .mode = RAG_MODE_KEYWORD};
    rag_results *r = NULL;
    REQUIRE(rag_search(st, m, "zebracorn", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 0);
    rag_results_free(r);

    /* A chunk's own text (as embedded: heading, blank line, text) is its own nearest vector
     * (bert-tiny is random, so only identity is a fair test of the vector path). */
    so.k = 1;
    REQUIRE(rag_search(st, m, "Ruapehu", &so, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) == 1);
    dk_buf q = {0};
    const rag_passage *kp = rag_results_get(r, 0);
    if (kp->heading[0]) dk_buf_printf(&q, "%s\n\n", kp->heading);
    dk_buf_puts(&q, kp->text);
    int64_t want = kp->chunk_id;
    rag_results_free(r);
    so.mode = RAG_MODE_VECTOR;
    REQUIRE(rag_search(st, m, q.data, &so, &r, err) == DK_OK);
    dk_buf_free(&q);
    REQUIRE(rag_results_count(r) == 1);
    CHECK(rag_results_get(r, 0)->chunk_id == want);
    CHECK_NEAR(rag_results_get(r, 0)->score, 1.0, 1e-4);
    CHECK(rag_results_get(r, 0)->vector_rank == 1);
    rag_results_free(r);

    /* Offsets point into the file; heading paths and units. */
    so.mode = RAG_MODE_KEYWORD;
    so.k = 1;
    REQUIRE(rag_search(st, m, "cliff ledges", &so, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) == 1);
    const rag_passage *p = rag_results_get(r, 0);
    CHECK_EQ_STR(p->kind, "markdown");
    CHECK_EQ_STR(p->unit, "byte");
    CHECK(strstr(p->heading, "Nesting") != NULL);
    CHECK(p->start >= 0 && p->end <= (int64_t)strlen(FALCONS_MD) && p->start < p->end);
    CHECK(strstr(FALCONS_MD + p->start, "cliff ledges") != NULL);
    CHECK(p->keyword_rank == 1);
    rag_results_free(r);

    /* Unchanged corpus: nothing embedded. */
    rag_ingest_stats s2;
    REQUIRE(ingest(st, m, paths, 1, &s2, &sk) == DK_OK);
    CHECK_EQ_INT(s2.unchanged, 4);
    CHECK_EQ_INT(s2.embedded, 0);
    CHECK_EQ_INT(s2.added + s2.updated, 0);

    /* An edit re-embeds the changed chunks only. */
    char longdoc[8192] = "";
    for (int i = 0; i < 12; i++) {
        char para[256];
        snprintf(para, sizeof para, "Paragraph %d talks about topic number %d and nothing else at all.\n\n", i, i * 7);
        strcat(longdoc, para);
    }
    write_file(dir, "long.txt", longdoc);
    rag_ingest_stats s3;
    REQUIRE(ingest(st, m, paths, 1, &s3, &sk) == DK_OK);
    CHECK_EQ_INT(s3.added, 1);
    CHECK(s3.embedded >= 3);
    strcat(longdoc, "A new closing paragraph about quokkas.\n");
    write_file(dir, "long.txt", longdoc);
    rag_ingest_stats s4;
    REQUIRE(ingest(st, m, paths, 1, &s4, &sk) == DK_OK);
    CHECK_EQ_INT(s4.updated, 1);
    CHECK_EQ_INT(s4.unchanged, 4);
    CHECK(s4.reused >= 2);
    CHECK(s4.embedded >= 1 && s4.embedded < s4.chunks);
    test_log("edit: %zu chunks, %zu embedded, %zu reused", s4.chunks, s4.embedded, s4.reused);
    CHECK_EQ_STR(best_path(st, m, "quokkas", RAG_MODE_KEYWORD, got, sizeof got), "long.txt");
    rag_store_close(st);

    /* Another embedding model name on the same store is refused. */
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    rag_ingest_opts o = {.embedder = m, .model_name = "other-model"};
    CHECK(rag_ingest(st, paths, 1, &o, NULL, err) == DK_ERR_ARG);
    CHECK(strstr(err, "bert-tiny") != NULL);
    rag_store_close(st);
    engine_model_free(m);
}

TEST(rag_store, filters)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200], err[DK_ERRLEN];
    fresh_dir(dir, sizeof dir, "rag_corpus2");
    write_file(dir, "a-notes.md", "# A\n\nThe shared word is lantern. Alpha notes.\n");
    write_file(dir, "b-notes.md", "# B\n\nThe shared word is lantern. Beta notes.\n");
    write_file(dir, "c.txt", "The shared word is lantern. Gamma text.\n");
    /* Modification times: a 2020, b 2022, c 2024. */
    const char *names[] = {"a-notes.md", "b-notes.md", "c.txt"};
    const long years[] = {1577836800L, 1640995200L, 1704067200L};
    for (int i = 0; i < 3; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct timeval tv[2] = {{years[i], 0}, {years[i], 0}};
        CHECK(utimes(path, tv) == 0);
    }
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir};
    skips sk = {0};
    REQUIRE(ingest(st, m, paths, 1, NULL, &sk) == DK_OK);

    rag_search_opts so = {.k = 10, .mode = RAG_MODE_HYBRID};
    rag_results *r = NULL;
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 3);
    rag_results_free(r);

    char a_path[1200];
    snprintf(a_path, sizeof a_path, "%s/a-notes.md", dir);
    so.filter.source = a_path;
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) == 1);
    CHECK(strstr(rag_results_get(r, 0)->text, "Alpha") != NULL);
    rag_results_free(r);

    so.filter.source = NULL;
    so.filter.path_glob = "*.md";
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 2);
    for (size_t i = 0; i < rag_results_count(r); i++) CHECK(strstr(rag_results_get(r, i)->path, ".md") != NULL);
    rag_results_free(r);

    so.filter.path_glob = NULL;
    so.filter.after = 1609459200L; /* 2021 */
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 2);
    rag_results_free(r);
    so.filter.before = 1672531200L; /* 2023 */
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) == 1);
    CHECK(strstr(rag_results_get(r, 0)->text, "Beta") != NULL);
    rag_results_free(r);

    so.filter.after = 1893456000L; /* 2030: nothing */
    so.filter.before = 0;
    REQUIRE(rag_search(st, m, "lantern", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 0);
    rag_results_free(r);

    /* Bad arguments. */
    so = (rag_search_opts){.k = 5};
    CHECK(rag_search(st, m, "", &so, &r, err) == DK_ERR_ARG);
    so.k = 100000;
    CHECK(rag_search(st, m, "lantern", &so, &r, err) == DK_ERR_ARG);
    so.k = 5;
    CHECK(rag_search(st, NULL, "lantern", &so, &r, err) == DK_ERR_ARG); /* hybrid needs the model */
    so.mode = RAG_MODE_KEYWORD;
    CHECK(rag_search(st, NULL, "lantern", &so, &r, err) == DK_OK);
    CHECK_EQ_INT(rag_results_count(r), 3);
    rag_results_free(r);
    rag_store_close(st);
    engine_model_free(m);
}

TEST(rag_store, bad_files_are_skipped)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200], err[DK_ERRLEN];
    fresh_dir(dir, sizeof dir, "rag_corpus3");
    write_file(dir, "good.txt", "A good file about otters.\n");
    char path[1200];
    snprintf(path, sizeof path, "%s/binary.txt", dir);
    static const char binary[] = {'E', 'L', 'F', 0, 1, 2, 3, 0, 0, 0};
    REQUIRE(dk_file_write(path, binary, sizeof binary, err) == DK_OK);
    write_file(dir, "latin1.txt", "caf\xe9 au lait\n");
    size_t huge = (size_t)2 << 20;
    char *line = dk_malloc(huge + 2);
    REQUIRE(line);
    memset(line, 'x', huge);
    line[huge] = '\n';
    snprintf(path, sizeof path, "%s/huge-line.txt", dir);
    REQUIRE(dk_file_write(path, line, huge + 1, err) == DK_OK);
    dk_free(line);

    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir, "/nonexistent/file.md"};
    rag_ingest_stats s;
    skips sk = {0};
    REQUIRE(ingest(st, m, paths, 2, &s, &sk) == DK_OK);
    CHECK_EQ_INT(s.added, 1);
    CHECK_EQ_INT(s.skipped, 4);
    CHECK_EQ_INT(sk.n, 4);
    CHECK_EQ_INT(rag_store_n_sources(st), 1);
    rag_store_close(st);
    engine_model_free(m);
}

typedef struct cancel_at {
    int cancel;
    const char *file; /* cancel once this file has had a batch */
} cancel_at;

static void cancel_progress(void *ud, const rag_progress *p)
{
    cancel_at *c = ud;
    if (strstr(p->path, c->file) && p->chunks_done > 0) c->cancel = 1;
}

/* The text of every chunk of the store in order, joined. */
static char *all_text(const char *store_path)
{
    rag_store *st = NULL;
    char err[DK_ERRLEN];
    if (rag_store_open(&st, store_path, false, err) != DK_OK) return NULL;
    rag_search_opts so = {.k = 1000, .mode = RAG_MODE_KEYWORD};
    rag_results *r = NULL;
    dk_buf b = {0};
    if (rag_search(st, NULL, "paragraph file", &so, &r, err) == DK_OK) {
        for (size_t i = 0; i < rag_results_count(r); i++) dk_buf_puts(&b, rag_results_get(r, i)->text);
    }
    dk_buf_printf(&b, "|%zu|%zu", rag_store_n_sources(st), rag_store_n_chunks(st));
    rag_results_free(r);
    rag_store_close(st);
    return dk_buf_detach(&b);
}

TEST(rag_store, cancel_keeps_the_store_as_it_was)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200], err[DK_ERRLEN];
    fresh_dir(dir, sizeof dir, "rag_corpus4");
    dk_buf doc = {0};
    for (int i = 0; i < 40; i++) dk_buf_printf(&doc, "Paragraph %d of the first version, with some filler words.\n\n", i);
    write_file(dir, "a.txt", "A short first file.\n");
    write_file(dir, "b.txt", doc.data);
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir};
    skips sk = {0};
    REQUIRE(ingest(st, m, paths, 1, NULL, &sk) == DK_OK);
    rag_store_close(st);
    char *before = all_text(store_path);
    REQUIRE(before);

    /* A new version of b, cancelled after its first batch, and a new file c after it. */
    dk_buf_clear(&doc);
    for (int i = 0; i < 40; i++) dk_buf_printf(&doc, "Paragraph %d of the second version, other words here.\n\n", i);
    write_file(dir, "b.txt", doc.data);
    write_file(dir, "c.txt", "A third file.\n");
    dk_buf_free(&doc);
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    cancel_at ca = {0, "b.txt"};
    rag_ingest_opts o = {.embedder = m, .model_name = "bert-tiny", .chunk_tokens = 48, .overlap_tokens = 8,
                         .batch = 4, .on_progress = cancel_progress, .ud = &ca, .cancel = &ca.cancel};
    rag_ingest_stats s;
    CHECK(rag_ingest(st, paths, 1, &o, &s, err) == DK_ERR_CANCELLED);
    CHECK(s.embedded > 0);
    rag_store_close(st);
    char *after = all_text(store_path);
    REQUIRE(after);
    CHECK_EQ_STR(after, before);
    CHECK(strstr(after, "first version") != NULL);
    dk_free(before);
    dk_free(after);
    engine_model_free(m);
}

TEST(rag_store, index_survives_reopen)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200], err[DK_ERRLEN];
    fresh_dir(dir, sizeof dir, "rag_corpus5");
    dk_buf doc = {0};
    for (int i = 0; i < 60; i++) dk_buf_printf(&doc, "Note %d: item %d is stored on shelf %d.\n\n", i, i * 13, i % 7);
    write_file(dir, "notes.txt", doc.data);
    dk_buf_free(&doc);
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir};
    rag_ingest_opts o = {.embedder = m, .model_name = "bert-tiny", .chunk_tokens = 16, .overlap_tokens = 2,
                         .hnsw_min_chunks = 1};
    REQUIRE(rag_ingest(st, paths, 1, &o, NULL, err) == DK_OK);
    REQUIRE(st->hnsw != NULL); /* built at the end of the ingest */
    size_t n = rag_store_n_chunks(st);
    CHECK(n >= 20);
    rag_search_opts so = {.k = 5, .mode = RAG_MODE_VECTOR};
    rag_results *r1 = NULL, *r2 = NULL;
    REQUIRE(rag_search(st, m, "item 260 is stored on shelf 6", &so, &r1, err) == DK_OK);
    rag_store_close(st);

    REQUIRE(rag_store_open(&st, store_path, false, err) == DK_OK);
    REQUIRE(rag_search(st, m, "item 260 is stored on shelf 6", &so, &r2, err) == DK_OK);
    CHECK(st->index_from_store);
    CHECK(st->hnsw != NULL);
    REQUIRE(rag_results_count(r1) == rag_results_count(r2));
    for (size_t i = 0; i < rag_results_count(r1); i++) {
        CHECK(rag_results_get(r1, i)->chunk_id == rag_results_get(r2, i)->chunk_id);
        CHECK_NEAR(rag_results_get(r1, i)->score, rag_results_get(r2, i)->score, 1e-6);
    }
    /* HNSW agrees with exact search here. */
    rag_results *r3 = NULL;
    so.exact = true;
    REQUIRE(rag_search(st, m, "item 260 is stored on shelf 6", &so, &r3, err) == DK_OK);
    CHECK(rag_results_get(r3, 0)->chunk_id == rag_results_get(r2, 0)->chunk_id);
    rag_results_free(r1);
    rag_results_free(r2);
    rag_results_free(r3);
    rag_store_close(st);

    /* A new file only adds chunks: the graph is extended, saved, and finds them. */
    write_file(dir, "extra.txt", "The wombat's burrow has a single entrance.\n");
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    rag_ingest_stats s;
    REQUIRE(rag_ingest(st, paths, 1, &o, &s, err) == DK_OK);
    CHECK_EQ_INT(s.added, 1);
    CHECK_EQ_INT(s.unchanged, 1);
    REQUIRE(st->hnsw != NULL);
    CHECK_EQ_INT(rag_store_n_chunks(st), n + 1);
    rag_store_close(st);
    REQUIRE(rag_store_open(&st, store_path, false, err) == DK_OK);
    so.exact = false;
    so.k = 1;
    REQUIRE(rag_search(st, m, "The wombat's burrow has a single entrance.\n", &so, &r1, err) == DK_OK);
    CHECK(st->index_from_store);
    REQUIRE(rag_results_count(r1) == 1);
    CHECK(strstr(rag_results_get(r1, 0)->text, "wombat") != NULL);
    rag_results_free(r1);
    rag_store_close(st);
    engine_model_free(m);
}

TEST(rag_store, duckdb_tables_and_bad_stores)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    const char *db = test_duckdb_file("rag_shop", "CREATE TABLE products (id INTEGER, name VARCHAR, colour VARCHAR);"
                                                  "INSERT INTO products VALUES (1, 'kettle', 'teal'), (2, 'toaster', 'mauve');"
                                                  "CREATE TABLE staff (name VARCHAR, role VARCHAR);"
                                                  "INSERT INTO staff VALUES ('Ines', 'barista');");
    REQUIRE(db);
    char dir[1024], store_path[1200], err[DK_ERRLEN], one[1300];
    fresh_dir(dir, sizeof dir, "rag_corpus6");
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    snprintf(one, sizeof one, "%s:products", db);
    const char *paths[] = {one};
    skips sk = {0};
    rag_ingest_stats s;
    REQUIRE(ingest(st, m, paths, 1, &s, &sk) == DK_OK);
    CHECK_EQ_INT(s.added, 1);
    rag_search_opts so = {.k = 1, .mode = RAG_MODE_KEYWORD};
    rag_results *r = NULL;
    REQUIRE(rag_search(st, m, "mauve", &so, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) == 1);
    CHECK_EQ_STR(rag_results_get(r, 0)->unit, "row");
    CHECK_EQ_STR(rag_results_get(r, 0)->kind, "table");
    CHECK(strstr(rag_results_get(r, 0)->text, "toaster") != NULL);
    rag_results_free(r);
    /* The whole file: both tables; products unchanged. */
    const char *all[] = {db};
    REQUIRE(ingest(st, m, all, 1, &s, &sk) == DK_OK);
    CHECK_EQ_INT(s.added, 1);
    CHECK_EQ_INT(s.unchanged, 1);
    rag_store_close(st);

    /* Not a store; missing; read-only ingest. */
    CHECK(rag_store_open(&st, db, false, err) == DK_ERR_FORMAT);
    CHECK(strstr(err, "not a duckling store") != NULL);
    char missing[1200];
    snprintf(missing, sizeof missing, "%s/missing.duckdb", dir);
    CHECK(rag_store_open(&st, missing, false, err) == DK_ERR_NOTFOUND);
    REQUIRE(rag_store_open(&st, store_path, false, err) == DK_OK);
    rag_ingest_opts o = {.embedder = m, .model_name = "bert-tiny"};
    CHECK(rag_ingest(st, all, 1, &o, NULL, err) == DK_ERR_ARG);
    rag_store_close(st);
    engine_model_free(m);
}

/* A cross-encoder reorders the fused candidates by its own scores. */
TEST(rag_store, rerank_orders_by_the_cross_encoder)
{
    engine_model *m = load_bert();
    REQUIRE(m);
    char dir[1024], store_path[1200], err[DK_ERRLEN], vocab[1024], rr_path[1200];
    fresh_dir(dir, sizeof dir, "rag_corpus7");
    write_corpus(dir);
    snprintf(rr_path, sizeof rr_path, "%s/reranker.F32.gguf", dir);
    test_kit_file(vocab, sizeof vocab, "tokenizer/ggml-vocab-bert-bge.gguf");
    convert_synth_opts so_synth = {.preset = "bert-reranker-tiny", .quant = "F32", .out_path = rr_path, .seed = 7, .vocab_from = vocab};
    REQUIRE_MSG(convert_synth(&so_synth, NULL, err) == DK_OK, "synth: %s", err);
    engine_load_params lp;
    engine_load_params_default(&lp);
    engine_model *rr = NULL;
    REQUIRE_MSG(engine_model_load(&rr, rr_path, &lp, err) == DK_OK, "%s", err);
    snprintf(store_path, sizeof store_path, "%s/store.duckdb", dir);
    rag_store *st = NULL;
    REQUIRE(rag_store_open(&st, store_path, true, err) == DK_OK);
    const char *paths[] = {dir};
    skips sk = {0};
    REQUIRE(ingest(st, m, paths, 1, NULL, &sk) == DK_OK);

    const char *query = "what do falcons eat";
    rag_search_opts so = {.k = 3, .mode = RAG_MODE_HYBRID, .reranker = rr, .candidates = 50};
    rag_results *r = NULL;
    REQUIRE_MSG(rag_search(st, m, query, &so, &r, err) == DK_OK, "%s", err);
    size_t n = rag_results_count(r);
    CHECK_EQ_INT(n, 3);
    for (size_t i = 0; i < n; i++) {
        const rag_passage *p = rag_results_get(r, i);
        if (i) CHECK(p->score <= rag_results_get(r, i - 1)->score);
        /* the score is the cross-encoder's own for (query, heading + text) */
        dk_buf doc = {0};
        if (p->heading[0]) dk_buf_printf(&doc, "%s\n\n", p->heading);
        dk_buf_puts(&doc, p->text);
        const char *docs[1] = {doc.data};
        float score = 0;
        REQUIRE(engine_rerank(rr, query, docs, 1, &score, err) == DK_OK);
        CHECK_NEAR(p->score, score, 1e-4);
        dk_buf_free(&doc);
    }
    rag_results_free(r);
    /* No better passage was left out: every candidate scores at most the third one. */
    rag_search_opts all = {.k = 50, .mode = RAG_MODE_HYBRID, .reranker = rr, .candidates = 50};
    REQUIRE(rag_search(st, m, query, &all, &r, err) == DK_OK);
    REQUIRE(rag_results_count(r) >= 3);
    rag_results *top = NULL;
    REQUIRE(rag_search(st, m, query, &so, &top, err) == DK_OK);
    for (size_t i = 0; i < 3; i++) CHECK(rag_results_get(r, i)->chunk_id == rag_results_get(top, i)->chunk_id);
    rag_results_free(top);
    rag_results_free(r);
    /* An embedding model is no reranker. */
    so.reranker = m;
    CHECK(rag_search(st, m, query, &so, &r, err) == DK_ERR_ARG);
    CHECK(strstr(err, "reranker") != NULL);
    rag_store_close(st);
    engine_model_free(rr);
    engine_model_free(m);
}
