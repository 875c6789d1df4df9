/*
 * test_cli_ask.c: `duckling ask` end to end (suite `cli_ask`): the binary against a scripted
 * OpenAI-compatible stand-in (openai_standin.c) on a real DuckDB file and on CSV files, its
 * text and --json output, escalation from the command line, exit statuses, bad input with one
 * line on stderr; and a real local model (stories260K) whose SQL, made under the grammar,
 * parses. `ask --docs` over the test store of docs_corpus.c: answers with their cited
 * sources, alone and together with --db, and its errors.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "docs_corpus.h"
#include "openai_standin.h"
#include "test.h"
#include "test_duckdb.h"
#include "test_proc.h"

static const char *cli_ask_db(void)
{
    return test_duckdb_file("cli_ask", "CREATE TABLE sales (id INTEGER PRIMARY KEY, region VARCHAR, amount DOUBLE);"
                                       "INSERT INTO sales VALUES (1, 'north', 10.5), (2, 'south', 20), (3, 'north', 4.5);");
}

static const char ask_script[] =
    "{\"small\": ["
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT region, sum(amount) AS total FROM sales "
    "GROUP BY region ORDER BY total DESC\"}}]},"
    " {\"content\": \"north sold 15 and south 20.\"},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT broken FROM sales\"}}]},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT broken2 FROM sales\"}}]}],"
    " \"large\": ["
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) AS n FROM sales\"}}]},"
    " {\"content\": \"There are 3 sales.\"}]}";

static void spec_of(char *buf, size_t n, standin *s, const char *model)
{
    snprintf(buf, n, "%s#%s", standin_url(s), model);
}

TEST(cli_ask, text_and_json_through_an_endpoint)
{
    REQUIRE(binary_ready());
    const char *db = cli_ask_db();
    REQUIRE(db);
    standin *s = NULL;
    char err[DK_ERRLEN], small[256], large[256];
    REQUIRE(standin_start(&s, ask_script, err) == DK_OK);
    spec_of(small, sizeof small, s, "small");
    spec_of(large, sizeof large, s, "large");

    proc_result r;
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--db", db, "--model", small, "Sales by region?", NULL}) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "SQL: SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY total DESC"));
    CHECK(strstr(r.out, "south | 20"));
    CHECK(strstr(r.out, "north sold 15 and south 20."));
    CHECK(strstr(r.out, "(model: small)"));
    proc_free(&r);

    /* the next two small replies fail (max-repairs 1): the large model answers */
    REQUIRE(spawn(&r, NULL,
                  (const char *const[]){"ask", "--db", db, "--model", small, "--escalate-to", large, "--max-repairs", "1",
                                        "--json", "How many sales?", NULL}) == 0);
    CHECK_EQ_INT(r.status, 0);
    json_t *a = json_loads(r.out, 0, NULL);
    CHECK(a != NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "large");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "escalation_reason")), "sql_failed");
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(json_object_get(a, "rows"), 0), 0)), 3);
    CHECK_EQ_INT(json_array_size(json_object_get(a, "steps")), 4);
    json_decref(a);
    proc_free(&r);
    standin_stop(s);
}

TEST(cli_ask, csv_files_become_views)
{
    REQUIRE(binary_ready());
    char csv[512], err[DK_ERRLEN], spec[256];
    snprintf(csv, sizeof csv, "%s/Monthly Sales.csv", test_tmpdir());
    REQUIRE(dk_file_write(csv, "month,amount\n1,10\n2,32\n", 23, err) == DK_OK);
    standin *s = NULL;
    REQUIRE(standin_start(&s,
                          "{\"m\": [{\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": "
                          "\"SELECT sum(amount) AS s FROM monthly_sales\"}}]}, {\"content\": \"42\"}]}",
                          err) == DK_OK);
    spec_of(spec, sizeof spec, s, "m");
    proc_result r;
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--db", csv, "--model", spec, "--json", "total?", NULL}) == 0);
    CHECK_EQ_INT(r.status, 0);
    json_t *a = json_loads(r.out, 0, NULL);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(json_object_get(a, "rows"), 0), 0)), 42);
    /* the schema the model saw names the view */
    json_t *reqs = standin_requests(s);
    const char *system = json_string_value(json_object_get(
        json_array_get(json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "messages"), 0), "content"));
    CHECK(system && strstr(system, "monthly_sales"));
    json_decref(reqs);
    json_decref(a);
    proc_free(&r);
    standin_stop(s);
}

TEST(cli_ask, failing_sql_without_escalation_exits_1)
{
    REQUIRE(binary_ready());
    const char *db = cli_ask_db();
    REQUIRE(db);
    standin *s = NULL;
    char err[DK_ERRLEN], spec[256];
    REQUIRE(standin_start(&s,
                          "{\"m\": [{\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"DROP TABLE sales\"}}]},"
                          " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT nope FROM sales\"}}]}]}",
                          err) == DK_OK);
    spec_of(spec, sizeof spec, s, "m");
    proc_result r;
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--db", db, "--model", spec, "--max-repairs", "1", "drop it", NULL}) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.out, "could not write a query"));
    CHECK(strstr(r.err, "duckling ask: no query worked"));
    proc_free(&r);
    standin_stop(s);
}

TEST(cli_ask, bad_input_is_one_line_and_non_zero)
{
    REQUIRE(binary_ready());
    const char *db = cli_ask_db();
    REQUIRE(db);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.duckdb", test_tmpdir());
    const char *const cases[][10] = {
        {"ask", "--model", "x.gguf", "q", NULL},                              /* no --db */
        {"ask", "--db", db, "--model", "x.gguf", NULL},                       /* no question */
        {"ask", "--db", db, "q", NULL},                                       /* no model */
        {"ask", "--db", missing, "--model", "x.gguf", "q", NULL},             /* no such file */
        {"ask", "--db", db, "--model", "/nonexistent/model.gguf", "q", NULL}, /* no such model */
        {"ask", "--db", db, "--model", "http://127.0.0.1:1/v1#m", "q", NULL}, /* endpoint down */
        {"ask", "--db", db, "--model", "x", "--escalate", "q", NULL},         /* nothing to escalate to */
        {"ask", "--db", db, "--model", "x", "--max-repairs", "-3", "q", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proc_result r;
        REQUIRE(spawn_env(&r, NULL, cases[i], (const char *const[]){"DUCKLING_ASK_MODEL=", NULL}) == 0);
        CHECK_MSG(r.exited && r.status != 0, "case %zu: status %d", i, r.status);
        int lines = 0;
        for (const char *p = r.err; *p; p++) lines += *p == '\n';
        CHECK_MSG(lines == 1 && strncmp(r.err, "duckling ask: ", 14) == 0, "case %zu: stderr '%s'", i, r.err);
        proc_free(&r);
    }
}

TEST(cli_ask, a_local_model_runs_end_to_end_under_the_grammar)
{
    REQUIRE(binary_ready());
    const char *db = cli_ask_db();
    REQUIRE(db);
    char model[1024];
    test_kit_file(model, sizeof model, "forward/stories260K/stories260K.F32.gguf");
    proc_result r;
    REQUIRE(spawn(&r, NULL,
                  (const char *const[]){"ask", "--db", db, "--model", model, "--json", "-n", "120", "--threads", "1",
                                        "Which region sold the most?", NULL}) == 0);
    CHECK_MSG(r.exited && (r.status == 0 || r.status == 1), "status %d: %s", r.status, r.err);
    json_t *a = json_loads(r.out, 0, NULL);
    REQUIRE_MSG(a != NULL, "not JSON: %s / %s", r.out, r.err);
    size_t i, n_sql = 0;
    const json_t *st;
    json_array_foreach(json_object_get(a, "steps"), i, st) {
        const char *kind = json_string_value(json_object_get(st, "kind"));
        if (!kind || strcmp(kind, "sql") != 0) continue;
        n_sql++;
        const char *e = json_string_value(json_object_get(st, "error"));
        CHECK_MSG(!e || !strstr(e, "Parser Error"), "unparsable SQL: %s -> %s",
                  json_string_value(json_object_get(st, "sql")), e);
    }
    CHECK(n_sql >= 1);
    CHECK_EQ_INT(r.status, json_is_null(json_object_get(a, "sql")) ? 1 : 0);
    json_decref(a);
    proc_free(&r);
}

/* ---- --docs ---- */

TEST(cli_ask, docs_answers_with_their_sources)
{
    REQUIRE(binary_ready());
    const char *store = docs_corpus_store();
    REQUIRE(store);
    standin *s = NULL;
    char err[DK_ERRLEN], spec[256], line[1400];
    REQUIRE(standin_start(&s,
                          "{\"m\": [{\"content\": \"It erupted in 1872 [1].\"}, {\"content\": \"In 1872 [1][5].\"},"
                          " {\"content\": \"Pine [1].\"}]}",
                          err) == DK_OK);
    spec_of(spec, sizeof spec, s, "m");
    /* hybrid (the default): the store's own embedding model is loaded */
    proc_result r;
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--docs", store, "--model", spec, "-k", "2", "--threads", "1",
                                                  "When did Mount Zyxor erupt?", NULL}) == 0);
    CHECK_MSG(r.status == 0, "status %d: %s", r.status, r.err);
    const char *want = "It erupted in 1872 [1].\n\nSources:\n[1] ";
    CHECK_MSG(strncmp(r.out, want, strlen(want)) == 0, "output: %s", r.out);
    snprintf(line, sizeof line, "[1] %s/", docs_corpus_dir());
    CHECK_MSG(strstr(r.out, line), "output: %s", r.out);
    CHECK(strstr(r.out, "(model: m)"));
    proc_free(&r);

    /* keyword search, JSON: the sources and the citations, valid and not */
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--docs", store, "--model", spec, "--mode", "keyword", "-k", "1",
                                                  "--json", "When did Mount Zyxor erupt?", NULL}) == 0);
    CHECK_MSG(r.status == 0, "status %d: %s", r.status, r.err);
    json_t *a = json_loads(r.out, 0, NULL);
    REQUIRE_MSG(a, "not JSON: %s", r.out);
    const json_t *src = json_array_get(json_object_get(a, "sources"), 0);
    snprintf(line, sizeof line, "%s/volcano.md", docs_corpus_dir());
    CHECK_EQ_STR(json_string_value(json_object_get(src, "path")), line);
    CHECK_EQ_STR(json_string_value(json_object_get(src, "heading")), "Volcanoes");
    CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(a, "citations"), 0)), 1);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(a, "invalid_citations"), 0)), 5);
    json_decref(a);
    proc_free(&r);

    /* text: the cited source's line, with its heading and byte range; a path filter */
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--docs", store, "--model", spec, "--mode", "keyword", "--path",
                                                  "*tea.txt", "--after", "2000-01-01", "Brindle tea?", NULL}) == 0);
    CHECK_MSG(r.status == 0, "status %d: %s", r.status, r.err);
    snprintf(line, sizeof line, "Sources:\n[1] %s/tea.txt (0-", docs_corpus_dir());
    CHECK_MSG(strstr(r.out, line), "output: %s", r.out);
    proc_free(&r);

    /* nothing matches: said so, no model asked, exit 0 */
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--docs", store, "--model", spec, "--mode", "keyword", "--before",
                                                  "2001-02-03", "Brindle tea?", NULL}) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strncmp(r.out, "No matching passages in ", 24) == 0);
    CHECK(!strstr(r.out, "Sources"));
    proc_free(&r);
    CHECK_EQ_INT(standin_n_requests(s, NULL), 3);
    standin_stop(s);
}

TEST(cli_ask, docs_and_db_together)
{
    REQUIRE(binary_ready());
    const char *store = docs_corpus_store(), *db = cli_ask_db();
    REQUIRE(store && db);
    standin *s = NULL;
    char err[DK_ERRLEN], spec[256];
    REQUIRE(standin_start(&s,
                          "{\"m\": ["
                          " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Varn harbor\"}}]},"
                          " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) AS n FROM sales\"}}]},"
                          " {\"content\": \"Forty ships [1]; 3 sales.\"}]}",
                          err) == DK_OK);
    spec_of(spec, sizeof spec, s, "m");
    proc_result r;
    REQUIRE(spawn(&r, NULL, (const char *const[]){"ask", "--db", db, "--docs", store, "--model", spec, "--mode", "keyword",
                                                  "-k", "1", "--verbose", "Ships and sales?", NULL}) == 0);
    CHECK_MSG(r.status == 0, "status %d: %s", r.status, r.err);
    CHECK(strstr(r.out, "SQL: SELECT count(*) AS n FROM sales"));
    CHECK(strstr(r.out, "Forty ships [1]; 3 sales."));
    CHECK(strstr(r.out, "Sources:\n[1] ") && strstr(r.out, "harbor.md \xc2\xa7 Harbor ("));
    CHECK(strstr(r.err, "[m] search_docs: Varn harbor") && strstr(r.err, "  1 passage\n"));
    proc_free(&r);
    standin_stop(s);
}

TEST(cli_ask, docs_errors_are_one_line_and_non_zero)
{
    REQUIRE(binary_ready());
    const char *store = docs_corpus_store(), *db = cli_ask_db();
    REQUIRE(store && db);
    char missing[512], empty[512], err[DK_ERRLEN];
    snprintf(missing, sizeof missing, "%s/missing_store.duckdb", test_tmpdir());
    snprintf(empty, sizeof empty, "%s/empty_store.duckdb", test_tmpdir());
    rag_store *e = NULL;
    REQUIRE(rag_store_open(&e, empty, true, err) == DK_OK); /* a store without any ingest */
    rag_store_close(e);
    const char *const cases[][12] = {
        {"ask", "--docs", missing, "--model", "http://127.0.0.1:1/v1#m", "q", NULL},
        {"ask", "--docs", empty, "--model", "http://127.0.0.1:1/v1#m", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--embed-model", "/nonexistent/e.gguf", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--after", "2024-13-01", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--before", "yesterday", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--after", "2023-02-29", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--mode", "fuzzy", "q", NULL},
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "-k", "0", "q", NULL},
        {"ask", "--db", db, "--model", "http://127.0.0.1:1/v1#m", "-k", "3", "q", NULL}, /* -k without --docs */
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--mode", "keyword", "Brindle tea", NULL}, /* down */
        {"ask", "--docs", store, "--model", "http://127.0.0.1:1/v1#m", "--escalate-to", "http://127.0.0.1:1/v1#x", "q", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proc_result r;
        REQUIRE(spawn_env(&r, NULL, cases[i], (const char *const[]){"DUCKLING_ASK_MODEL=", NULL}) == 0);
        CHECK_MSG(r.exited && r.status != 0, "case %zu: status %d", i, r.status);
        int lines = 0;
        for (const char *p = r.err; *p; p++) lines += *p == '\n';
        CHECK_MSG(lines == 1 && strncmp(r.err, "duckling ask: ", 14) == 0, "case %zu: stderr '%s'", i, r.err);
        if (i == 1) CHECK_MSG(strstr(r.err, "no embedding model"), "stderr: %s", r.err);
        proc_free(&r);
    }
}
