/*
 * test_cli_sql.c: `duckling sql` end to end (suite `cli_sql`): the built binary with a
 * query (prompt() with stories260K, embed() with bert-tiny, JSON and box output), a failing
 * model call (exit 1, one line on stderr), statements piped on stdin (multi-line statements,
 * dot commands, an error in the middle), the database read-write by default and --read-only
 * refusing writes, $DUCKLING_SQL_MODEL, and bad options.
 */
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/base.h"
#include "test.h"
#include "test_proc.h"

#define STORIES "forward/stories260K/stories260K.F32.gguf"
#define BERT "forward/bert-tiny/bert-tiny.F32.gguf"

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A fresh database path under the test run's directory. */
static const char *fresh_db(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", test_tmpdir(), name);
    unlink(buf);
    return buf;
}

/* The environment of every run here: an empty model store, so no name resolves by accident. */
static const char *const *no_store_env(void)
{
    static char models[600], ollama[600];
    static const char *env[3];
    snprintf(models, sizeof models, "DUCKLING_MODELS=%s/no-store", test_tmpdir());
    snprintf(ollama, sizeof ollama, "OLLAMA_MODELS=%s/no-store", test_tmpdir());
    env[0] = models;
    env[1] = ollama;
    env[2] = NULL;
    return env;
}

TEST(cli_sql, query_with_prompt_prints_json_rows)
{
    if (!binary_ready()) return;
    char model[1024], db[600];
    test_kit_file(model, sizeof model, STORIES);
    fresh_db(db, sizeof db, "cli_prompt.duckdb");
    const char *args[] = {"sql", db,
                          "CREATE TABLE t AS SELECT range AS x FROM range(3);"
                          "SELECT x, prompt('Once upon a time ' || x) AS p FROM t ORDER BY x",
                          "--model", model, "-n", "4", "--json", NULL};
    proc_result r;
    REQUIRE(spawn_env(&r, NULL, args, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(r.n_err, 0);
    test_log("%s", r.out);
    json_t *rows = json_loads(r.out, 0, NULL);
    CHECK(json_is_array(rows) && json_array_size(rows) == 3);
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *row = json_array_get(rows, i);
        CHECK_EQ_INT(json_integer_value(json_object_get(row, "x")), (long long)i);
        CHECK(json_is_string(json_object_get(row, "p")));
    }
    json_decref(rows);
    proc_free(&r);
    /* the table was written to the file (read-write by default): another run sees it, as a box */
    const char *again[] = {"sql", db, "SELECT count(*) AS n FROM t", NULL};
    REQUIRE(spawn_env(&r, NULL, again, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "│   n    │\n") != NULL);
    CHECK(strstr(r.out, "│      3 │\n") != NULL);
    proc_free(&r);
}

TEST(cli_sql, embed_with_an_embedding_model)
{
    if (!binary_ready()) return;
    char bert[1024];
    test_kit_file(bert, sizeof bert, BERT);
    const char *args[] = {"sql", "SELECT len(embed('hello')) AS d, embed(NULL) AS n", "--embed-model", bert, "--json", NULL};
    proc_result r;
    REQUIRE(spawn_env(&r, NULL, args, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "[{\"d\":256,\"n\":null}]\n");
    proc_free(&r);
    /* --model an embedding model serves embed() too */
    const char *args2[] = {"sql", "SELECT embed('hello')[1] = embed('hello')[1] AS same", "--model", bert, "--json", NULL};
    REQUIRE(spawn_env(&r, NULL, args2, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "[{\"same\":true}]\n");
    proc_free(&r);
}

TEST(cli_sql, failing_call_exits_1_with_one_line)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"sql", "SELECT 1 AS a; SELECT prompt('hi', model := 'nope-model')", "--model", model, NULL};
    proc_result r;
    REQUIRE(spawn_env(&r, NULL, args, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 1);
    test_log("stderr: %s", r.err);
    CHECK_EQ_INT(count_lines(r.err), 1);
    CHECK(strncmp(r.err, "duckling sql: ", 14) == 0);
    CHECK(strstr(r.err, "nope-model") != NULL);
    CHECK(strstr(r.out, "│    a    │\n") != NULL); /* the first statement's result came */
    proc_free(&r);
    const char *bad_sql[] = {"sql", "SELEC 1", NULL};
    REQUIRE(spawn_env(&r, NULL, bad_sql, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_INT(count_lines(r.err), 1);
    CHECK(strstr(r.err, "syntax error") != NULL);
    proc_free(&r);
    const char *no_model[] = {"sql", "SELECT prompt('hi')", NULL};
    const char *env[] = {"DUCKLING_SQL_MODEL=", NULL};
    REQUIRE(spawn_env(&r, NULL, no_model, env) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.err, "no default model") != NULL);
    proc_free(&r);
}

TEST(cli_sql, model_from_the_environment)
{
    if (!binary_ready()) return;
    char model[1024], env_model[1100];
    test_kit_file(model, sizeof model, STORIES);
    snprintf(env_model, sizeof env_model, "DUCKLING_SQL_MODEL=%s", model);
    const char *args[] = {"sql", "SELECT prompt('Once') IS NOT NULL AS ok", "-n", "2", "--json", NULL};
    const char *env[] = {env_model, NULL};
    proc_result r;
    REQUIRE(spawn_env(&r, NULL, args, env) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "[{\"ok\":true}]\n");
    proc_free(&r);
}

TEST(cli_sql, piped_statements)
{
    if (!binary_ready()) return;
    char db[600];
    fresh_db(db, sizeof db, "cli_piped.duckdb");
    const char *args[] = {"sql", db, NULL};
    proc_result r;
    REQUIRE(spawn_env(&r,
                      "CREATE TABLE u (i INTEGER);\n"
                      "INSERT INTO u VALUES (1),\n"
                      "  (2), (39);\n"
                      "\n"
                      ".tables\n"
                      "SELECT sum(i) AS total\n"
                      "FROM u;\n"
                      ".mode json\n"
                      "SELECT 'semi;colon' AS s;\n"
                      "SELECT 7 AS last_without_semicolon\n",
                      args, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(r.n_err, 0);
    test_log("%s", r.out);
    CHECK(strstr(r.out, "│ u       │\n") != NULL); /* .tables */
    CHECK(strstr(r.out, " 42 │\n") != NULL);
    CHECK(strstr(r.out, "[{\"s\":\"semi;colon\"}]\n") != NULL);
    CHECK(strstr(r.out, "[{\"last_without_semicolon\":7}]\n") != NULL);
    proc_free(&r);
    /* an error in the middle: reported on one line, the rest runs, exit 1 */
    REQUIRE(spawn_env(&r, "SELECT nope;\nSELECT 5 AS five;\n.bogus\n.quit\nSELECT 6 AS never;\n", args, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 1);
    test_log("stderr: %s", r.err);
    CHECK_EQ_INT(count_lines(r.err), 2); /* the SQL error and the unknown command */
    CHECK(strstr(r.err, "nope") != NULL);
    CHECK(strstr(r.out, "five") != NULL);
    CHECK(strstr(r.out, "never") == NULL); /* .quit ended it */
    proc_free(&r);
}

TEST(cli_sql, read_only_refuses_writes)
{
    if (!binary_ready()) return;
    char db[600];
    fresh_db(db, sizeof db, "cli_ro.duckdb");
    const char *missing[] = {"sql", db, "--read-only", "SELECT 1", NULL};
    proc_result r;
    REQUIRE(spawn_env(&r, NULL, missing, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 1); /* read-only never creates the file */
    CHECK(access(db, F_OK) != 0);
    proc_free(&r);
    const char *create[] = {"sql", db, "CREATE TABLE t AS SELECT 1 AS i", NULL};
    REQUIRE(spawn_env(&r, NULL, create, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(r.n_out, 0); /* no result set, nothing printed */
    proc_free(&r);
    const char *insert[] = {"sql", db, "--read-only", "INSERT INTO t VALUES (2)", NULL};
    REQUIRE(spawn_env(&r, NULL, insert, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_INT(count_lines(r.err), 1);
    test_log("stderr: %s", r.err);
    proc_free(&r);
    const char *count[] = {"sql", db, "--read-only", "--json", "SELECT count(*) AS n FROM t", NULL};
    REQUIRE(spawn_env(&r, NULL, count, no_store_env()) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "[{\"n\":1}]\n");
    proc_free(&r);
}

TEST(cli_sql, bad_options)
{
    if (!binary_ready()) return;
    const char *const cases[][4] = {
        {"sql", "--bogus", NULL, NULL},
        {"sql", "--threads", "zero", NULL},
        {"sql", "--model", NULL, NULL},
        {"sql", "a.duckdb", "SELECT 1", "SELECT 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[5] = {cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL};
        proc_result r;
        REQUIRE(spawn_env(&r, NULL, args, no_store_env()) == 0);
        CHECK_EQ_INT(r.status, 1);
        CHECK_EQ_INT(count_lines(r.err), 1);
        proc_free(&r);
    }
}
