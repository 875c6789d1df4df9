/*
 * bench/rag.c: what ingest and retrieval cost with a real-shaped embedding model. Writes a
 * corpus of D generated Markdown documents (sections of sentences drawn from a fixed word
 * list, so chunks have realistic lengths) into a temporary directory, ingests it into a fresh
 * store (chunks/s, the share of the time spent in the model, and the model's tokens/s, which
 * compare with llama-bench's pp on the same file), re-ingests it unchanged (which must embed
 * nothing), then runs Q searches of each mode (hybrid, vector, keyword) and prints searches/s.
 * Not a test: built as $(BUILD)/bench-rag.
 *
 *   build/bench-rag -m EMBED.gguf [-d DOCS (200)] [-q QUERIES (50)] [-c CHUNK_TOKENS (256)]
 *                   [-t THREADS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "engine/engine.h"
#include "rag/rag.h"

static const char *const WORDS[] = {
    "river", "stone", "ledger", "harbour", "orbit", "lantern", "copper", "meadow", "signal", "winter",
    "market", "engine", "garden", "falcon", "quarry", "bridge", "cipher", "forest", "mirror", "canyon",
    "the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from",
    "report", "season", "museum", "island", "pepper", "violin", "glacier", "tunnel", "archive", "orchard",
};
#define N_WORDS (sizeof WORDS / sizeof WORDS[0])

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void sentence(dk_buf *b)
{
    int n = 8 + (int)rnd(14);
    for (int i = 0; i < n; i++) dk_buf_printf(b, "%s%s", i ? " " : "", WORDS[rnd(N_WORDS)]);
    dk_buf_puts(b, ". ");
}

static int write_corpus(const char *dir, int n_docs)
{
    char err[DK_ERRLEN];
    for (int d = 0; d < n_docs; d++) {
        dk_buf b = {0};
        dk_buf_printf(&b, "# Document %d\n\n", d);
        for (int s = 0; s < 4; s++) {
            dk_buf_printf(&b, "## Section %d.%d\n\n", d, s);
            for (int p = 0; p < 3; p++) {
                for (int k = 0; k < 3; k++) sentence(&b);
                dk_buf_puts(&b, "\n\n");
            }
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/doc%05d.md", dir, d);
        int rc = dk_file_write(path, b.data, b.len, err);
        dk_buf_free(&b);
        if (rc != DK_OK) {
            fprintf(stderr, "bench-rag: %s\n", err);
            return 1;
        }
    }
    return 0;
}

static double now_s(void) { return (double)dk_now_ns() / 1e9; }

static int bench_search(rag_store *st, engine_model *m, rag_mode mode, const char *name, int n_queries)
{
    char err[DK_ERRLEN];
    rag_search_opts so = {.k = 5, .mode = mode};
    double t0 = now_s();
    for (int q = 0; q < n_queries; q++) {
        dk_buf b = {0};
        dk_buf_printf(&b, "%s %s %s %s", WORDS[rnd(20)], WORDS[rnd(20)], WORDS[35 + rnd(10)], WORDS[rnd(20)]);
        rag_results *r = NULL;
        int rc = rag_search(st, m, b.data, &so, &r, err);
        dk_buf_free(&b);
        rag_results_free(r);
        if (rc != DK_OK) {
            fprintf(stderr, "bench-rag: %s\n", err);
            return 1;
        }
    }
    double dt = now_s() - t0;
    printf("search %-8s %d queries, k 5: %.1f searches/s (%.2f ms each)\n", name, n_queries, n_queries / dt,
           1000 * dt / n_queries);
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL;
    int n_docs = 200, n_queries = 50, chunk_tokens = 256, n_threads = 0, opt;
    while ((opt = getopt(argc, argv, "m:d:q:c:t:")) != -1) {
        if (opt == 'm') model_path = optarg;
        else if (opt == 'd') n_docs = atoi(optarg);
        else if (opt == 'q') n_queries = atoi(optarg);
        else if (opt == 'c') chunk_tokens = atoi(optarg);
        else if (opt == 't') n_threads = atoi(optarg);
        else return 2;
    }
    if (!model_path || n_docs < 1 || n_queries < 1 || chunk_tokens < 16) {
        fprintf(stderr, "usage: bench-rag -m EMBED.gguf [-d DOCS] [-q QUERIES] [-c CHUNK_TOKENS] [-t THREADS]\n");
        return 2;
    }
    char err[DK_ERRLEN], dir[] = "/tmp/bench-rag-XXXXXX", store_path[64], cmd[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(store_path, sizeof store_path, "%s.duckdb", dir);
    engine_load_params lp;
    engine_load_params_default(&lp);
    if (n_threads > 0) lp.n_threads = n_threads;
    engine_model *m = NULL;
    rag_store *st = NULL;
    int status = 1;
    if (engine_model_load(&m, model_path, &lp, err) != DK_OK || write_corpus(dir, n_docs) ||
        rag_store_open(&st, store_path, true, err) != DK_OK) {
        fprintf(stderr, "bench-rag: %s\n", err);
        goto done;
    }
    const char *paths[] = {dir};
    rag_ingest_opts o = {.embedder = m, .model_name = model_path, .chunk_tokens = (size_t)chunk_tokens,
                         .n_threads = n_threads > 0 ? n_threads : 2};
    rag_ingest_stats s;
    double t0 = now_s();
    if (rag_ingest(st, paths, 1, &o, &s, err) != DK_OK) {
        fprintf(stderr, "bench-rag: %s\n", err);
        goto done;
    }
    double dt = now_s() - t0;
    printf("ingest   %d docs, %zu chunks (<= %d tokens): %.2f s, %.1f chunks/s, %.0f%% of it in the model"
           " (%zu tokens, %.0f tokens/s)\n", n_docs, s.chunks, chunk_tokens, dt, s.chunks / dt, 100 * s.embed_ms / 1000 / dt,
           s.embed_tokens, s.embed_tokens / (s.embed_ms / 1000));
    t0 = now_s();
    if (rag_ingest(st, paths, 1, &o, &s, err) != DK_OK) {
        fprintf(stderr, "bench-rag: %s\n", err);
        goto done;
    }
    printf("re-ingest unchanged: %.2f s, %zu embedded\n", now_s() - t0, s.embedded);
    if (bench_search(st, m, RAG_MODE_KEYWORD, "keyword", n_queries) || bench_search(st, m, RAG_MODE_VECTOR, "vector", n_queries) ||
        bench_search(st, m, RAG_MODE_HYBRID, "hybrid", n_queries))
        goto done;
    status = 0;
done:
    rag_store_close(st);
    engine_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s.wal'", dir, store_path, store_path);
    if (system(cmd) != 0) fprintf(stderr, "bench-rag: could not remove %s\n", dir);
    return status;
}
