/*
 * test_cli_ask.c: `duckling ask` end to end (suite `cli_ask`): the binary against a scripted
 * OpenAI-compatible stand-in (openai_standin.c) on a real DuckDB file and on CSV files, its
 * text and --json output, escalation from the command line, exit statuses, bad input with one
 * line on stderr; and a real local model (stories260K) whose SQL, made under the grammar,
 * parses.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
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
