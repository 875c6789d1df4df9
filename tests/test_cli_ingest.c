/*
 * test_cli_ingest.c: `duckling ingest` end to end through the binary: a directory ingested
 * into a new store (summary line, exit 0), the JSON summary of a second run that embeds
 * nothing, the store's model reused without --model, a bad file named on stderr while the
 * rest goes in, and usage errors (no --into, a chat model as the embedder, another model on
 * an existing store) each a one-line message and a non-zero exit.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "test.h"
#include "test_proc.h"

static void put(const char *dir, const char *name, const char *text)
{
    char path[1200], err[DK_ERRLEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (dk_file_write(path, text, strlen(text), err) != DK_OK) test_log("%s", err);
}

static json_t *parse_stdout(const proc_result *r)
{
    json_error_t je;
    json_t *o = json_loads(r->out ? r->out : "", 0, &je);
    if (!o) test_log("not JSON (%s): %s", je.text, r->out ? r->out : "");
    return o;
}

TEST(cli_ingest, ingest_reingest_and_errors)
{
    if (!binary_ready()) return;
    char dir[1024], docs[1100], store[1100], bert[1024], chat[1024], cmd[2400];
    snprintf(dir, sizeof dir, "%s/cli_ingest", test_tmpdir());
    snprintf(docs, sizeof docs, "%s/docs", dir);
    snprintf(store, sizeof store, "%s/store.duckdb", dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, docs);
    REQUIRE(system(cmd) == 0);
    put(docs, "a.md", "# Alpha\n\nThe alpha document mentions aardvarks.\n");
    put(docs, "b.txt", "The beta document mentions badgers.\n");
    put(docs, "c.html", "<title>Gamma</title><p>The gamma page mentions capybaras.</p>");
    test_kit_file(bert, sizeof bert, "forward/bert-tiny/bert-tiny.F32.gguf");
    test_kit_file(chat, sizeof chat, "forward/stories260K/stories260K.F32.gguf");

    proc_result r;
    const char *a1[] = {"ingest", "--into", store, "--model", bert, docs, NULL};
    REQUIRE(spawn(&r, NULL, a1) == 0);
    CHECK_MSG(r.exited && r.status == 0, "status %d: %s", r.status, r.err);
    CHECK(strstr(r.out, "3 files: 3 added, 0 updated, 0 unchanged, 0 skipped") != NULL);
    CHECK(strstr(r.err, "[1/3]") != NULL); /* a line per file when stderr is not a terminal */
    proc_free(&r);

    /* Again, without --model (the store's) and with a binary file added: the new file is
     * skipped with its reason, the others are unchanged, nothing is embedded. */
    char bin[1200], err[DK_ERRLEN];
    snprintf(bin, sizeof bin, "%s/blob.dat", docs);
    static const char bytes[] = {1, 0, 2, 0, 3};
    REQUIRE(dk_file_write(bin, bytes, sizeof bytes, err) == DK_OK);
    const char *a2[] = {"ingest", "--into", store, "--json", docs, NULL};
    REQUIRE(spawn(&r, NULL, a2) == 0);
    CHECK_MSG(r.exited && r.status == 0, "status %d: %s", r.status, r.err);
    CHECK(strstr(r.err, "skipped") && strstr(r.err, "blob.dat") && strstr(r.err, "binary"));
    json_t *o = parse_stdout(&r);
    CHECK(o != NULL);
    if (o) {
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "unchanged")), 3);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "skipped")), 1);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "embedded")), 0);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "store_sources")), 3);
    }
    json_decref(o);
    proc_free(&r);

    /* Errors: one line on stderr, non-zero exit. */
    const char *bad[][8] = {
        {"ingest", docs, NULL},                                         /* no --into */
        {"ingest", "--into", store, NULL},                               /* no paths */
        {"ingest", "--into", store, "--model", chat, docs, NULL},        /* a chat model */
        {"ingest", "--into", store, "--chunk-tokens", "3", docs, NULL},  /* out of range */
        {"ingest", "--into", store, "--bogus", docs, NULL},
        {"ingest", "--into", docs, "--model", bert, docs, NULL},         /* a directory */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        REQUIRE(spawn(&r, NULL, bad[i]) == 0);
        CHECK_MSG(r.exited && r.status != 0, "case %zu: status %d", i, r.status);
        CHECK_MSG(r.err && strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "case %zu: %s", i, r.err);
        CHECK_MSG(strstr(r.err, "duckling ingest") != NULL, "case %zu: %s", i, r.err);
        proc_free(&r);
    }
    /* A store without duckling's tables. */
    char other[1200];
    snprintf(other, sizeof other, "%s/not_a_store.txt", dir);
    put(dir, "not_a_store.txt", "plain text, not DuckDB");
    const char *a3[] = {"ingest", "--into", other, "--model", bert, docs, NULL};
    REQUIRE(spawn(&r, NULL, a3) == 0);
    CHECK(r.exited && r.status != 0);
    CHECK(strstr(r.err, "not_a_store.txt") != NULL);
    proc_free(&r);
}
