/*
 * docs_corpus.c: the test store of docs_corpus.h: the files are written under the test run's
 * temporary directory and ingested once; later calls return the same path.
 */
#include "docs_corpus.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "test.h"

static const struct {
    const char *name, *text;
} CORPUS[] = {
    {"volcano.md", "# Volcanoes\n\nMount Zyxor erupted in 1872 and buried the town of Quelm under ash.\n\n"
                   "## Lava\n\nZyxor lava is basaltic and flows at twelve kilometres an hour.\n"},
    {"tea.txt", "The Brindle tea plantation harvests its leaves every April. Brindle tea is smoked over pine "
                "wood for three days, which gives it a taste of resin.\n"},
    {"harbor.md", "# Harbor\n\nThe harbor of Varn handles forty ships a day. Its lighthouse is painted green.\n"},
    {"robots.md", "# Robots\n\nThe robot Kappa-7 was built in Oslo in 2031; it sorts parcels for the post office.\n"},
};

static char corpus_dir[1024], corpus_store[1100], bert_path[1024];
static int corpus_state; /* 0: not built, 1: built, -1: failed */

const char *docs_corpus_dir(void) { return corpus_dir; }

const char *docs_corpus_embedder_path(void)
{
    return test_kit_file(bert_path, sizeof bert_path, "forward/bert-tiny/bert-tiny.F32.gguf");
}

engine_model *docs_corpus_embedder(void)
{
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    char err[DK_ERRLEN];
    if (engine_model_load(&m, docs_corpus_embedder_path(), &lp, err) != DK_OK) {
        test_log("cannot load bert-tiny: %s", err);
        return NULL;
    }
    return m;
}

static int corpus_build(void)
{
    char err[DK_ERRLEN];
    snprintf(corpus_dir, sizeof corpus_dir, "%s/docs_corpus", test_tmpdir());
    snprintf(corpus_store, sizeof corpus_store, "%s/docs_corpus.duckdb", test_tmpdir());
    mkdir(corpus_dir, 0700);
    for (size_t i = 0; i < sizeof CORPUS / sizeof CORPUS[0]; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", corpus_dir, CORPUS[i].name);
        if (dk_file_write(path, CORPUS[i].text, strlen(CORPUS[i].text), err) != DK_OK) {
            test_log("corpus: %s", err);
            return -1;
        }
    }
    engine_model *bert = docs_corpus_embedder();
    if (!bert) return -1;
    rag_store *s = NULL;
    int rc = rag_store_open(&s, corpus_store, true, err);
    rag_ingest_stats st;
    if (rc == DK_OK) {
        rag_ingest_opts o = {.embedder = bert, .model_name = docs_corpus_embedder_path()};
        const char *paths[] = {corpus_dir};
        rc = rag_ingest(s, paths, 1, &o, &st, err);
    }
    if (rc != DK_OK) test_log("corpus ingest: %s", err);
    else if (st.added != sizeof CORPUS / sizeof CORPUS[0]) {
        test_log("corpus ingest: %zu sources added, %zu skipped", st.added, st.skipped);
        rc = DK_ERR_FORMAT;
    }
    rag_store_close(s);
    engine_model_free(bert);
    return rc == DK_OK ? 0 : -1;
}

const char *docs_corpus_store(void)
{
    if (corpus_state == 0) corpus_state = corpus_build() == 0 ? 1 : -1;
    return corpus_state == 1 ? corpus_store : NULL;
}

rag_store *docs_corpus_open(void)
{
    const char *path = docs_corpus_store();
    if (!path) return NULL;
    rag_store *s = NULL;
    char err[DK_ERRLEN];
    if (rag_store_open(&s, path, false, err) != DK_OK) {
        test_log("open %s: %s", path, err);
        return NULL;
    }
    return s;
}
