/*
 * test_sql.c: the sql module (suite `sql`) against a real DuckDB file built here through the
 * DuckDB C API: schema description, queries and their renderings, DuckDB errors passed through,
 * row limits, the timeout watchdog, the read-only guard (every kind of write refused, the file
 * byte-for-byte unchanged afterwards), external access switched off, and CSV file views.
 */
#include <stdlib.h>
#include <unistd.h>

#include "base/base.h"
#include "sql/sql.h"
#include "test.h"
#include "test_duckdb.h"

static const char test_sql_schema[] =
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR, city VARCHAR);"
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),"
    "  amount DECIMAL(10,2), status VARCHAR, note VARCHAR);"
    "CREATE TABLE audit_log (day DATE, message VARCHAR);"
    "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bob', 'Lyon'), (3, 'Chloé', 'Paris');"
    "INSERT INTO orders VALUES (10, 1, 12.50, 'paid', NULL), (11, 1, 3.00, 'open', 'a rather long note that goes on and on and on'),"
    "  (12, 2, 99.99, 'paid', 'line1\nline2'), (13, 3, 7.25, 'refunded', NULL);"
    "INSERT INTO audit_log VALUES ('2024-01-02', 'started');"
    "CHECKPOINT;";

/* Builds (once) the test database file and returns its path. */
static const char *test_sql_db_path(void) { return test_duckdb_file("shop", test_sql_schema); }

static sql_db *test_sql_open(void) { return test_duckdb_open("shop", test_sql_schema); }

TEST(sql, open_missing_file_is_not_created)
{
    char path[512], err[DK_ERRLEN];
    snprintf(path, sizeof path, "%s/nope.duckdb", test_tmpdir());
    sql_db *db = NULL;
    CHECK_EQ_INT(sql_db_open(&db, path, err), DK_ERR_NOTFOUND);
    CHECK(db == NULL);
    CHECK(access(path, F_OK) != 0);
}

TEST(sql, describe_lists_tables_types_keys_counts_samples)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    dk_buf out = {0};
    char err[DK_ERRLEN];
    sql_describe_opts opts = {.n_samples = 2, .max_tables = 0};
    REQUIRE_MSG(sql_describe(db, NULL, &opts, &out, err) == DK_OK, "%s", err);
    test_log("%s", out.data);
    CHECK(strstr(out.data, "TABLE customers (3 rows)\n"));
    CHECK(strstr(out.data, "TABLE orders (4 rows)\n"));
    CHECK(strstr(out.data, "TABLE audit_log (1 rows)\n"));
    CHECK(strstr(out.data, "  id INTEGER PRIMARY KEY\n"));
    CHECK(strstr(out.data, "  customer_id INTEGER REFERENCES customers(id)\n"));
    CHECK(strstr(out.data, "  amount DECIMAL(10,2)\n"));
    CHECK(strstr(out.data, "  day DATE\n"));
    CHECK(strstr(out.data, "  city VARCHAR  -- e.g. 'Lyon', 'Paris'\n")); /* distinct, two of them */
    CHECK(strstr(out.data, "  status VARCHAR  -- e.g. 'open', 'paid'\n"));
    CHECK(strstr(out.data, "on and on") == NULL); /* long values are not samples */
    dk_buf_free(&out);
    sql_db_free(db);
}

TEST(sql, describe_keeps_tables_relevant_to_the_question)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    dk_buf out = {0};
    char err[DK_ERRLEN];
    sql_describe_opts opts = {.n_samples = 0, .max_tables = 1};
    REQUIRE_MSG(sql_describe(db, "Which city has the most customers?", &opts, &out, err) == DK_OK, "%s", err);
    CHECK(strstr(out.data, "TABLE customers"));  /* city + customers beat customer_id */
    CHECK(strstr(out.data, "TABLE orders") == NULL);
    CHECK(strstr(out.data, "(2 more tables not shown)"));
    dk_buf_clear(&out);
    REQUIRE_MSG(sql_describe(db, "total amount by status", &opts, &out, err) == DK_OK, "%s", err);
    CHECK(strstr(out.data, "TABLE orders")); /* two column words */
    CHECK(strstr(out.data, "TABLE customers") == NULL);
    CHECK(strstr(out.data, "-- e.g.") == NULL); /* n_samples 0 */
    dk_buf_free(&out);
    sql_db_free(db);
}

TEST(sql, query_table_and_json)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    char err[DK_ERRLEN];
    sql_result *res = NULL;
    REQUIRE_MSG(sql_query(db,
                          "-- a comment first\nWITH t AS (SELECT c.name, o.amount, o.note, o.id > 11 AS late FROM orders o "
                          "JOIN customers c ON c.id = o.customer_id) SELECT * FROM t ORDER BY amount DESC;",
                          NULL, &res, err) == DK_OK,
                "%s", err);
    CHECK_EQ_INT(sql_result_n_rows(res), 4);
    CHECK_EQ_INT(sql_result_n_cols(res), 4);
    CHECK_EQ_STR(sql_result_col_name(res, 1), "amount");
    CHECK_EQ_STR(sql_result_col_type_name(res, 1), "DECIMAL(10,2)");
    CHECK_EQ_STR(sql_result_col_type_name(res, 3), "BOOLEAN");
    CHECK_EQ_STR(sql_result_value(res, 0, 0), "Bob"); /* ORDER BY survives the row-limit wrapper */
    CHECK_EQ_STR(sql_result_value(res, 0, 1), "99.99");
    CHECK_EQ_STR(sql_result_value(res, 1, 2), "NULL");
    CHECK(sql_result_is_null(res, 1, 2));
    CHECK(!sql_result_truncated(res));
    CHECK(sql_result_value(res, 4, 0) == NULL);

    dk_buf table = {0};
    REQUIRE(sql_result_table(res, &table, 12) == 0);
    test_log("\n%s", table.data);
    CHECK(strncmp(table.data, "name  | amount | note         | late\n", 37) == 0);
    CHECK(strstr(table.data, "Bob   | 99.99  | line1 line2  | true\n"));
    CHECK(strstr(table.data, "| a rather lo\xE2\x80\xA6 |")); /* 11 chars + ellipsis */
    CHECK(strstr(table.data, "Chloé | 7.25   | NULL         | true\n")); /* widths in code points */
    dk_buf_free(&table);

    json_t *j = sql_result_json(res);
    REQUIRE(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
    test_log("%s", text);
    CHECK(strstr(text, "\"columns\":[{\"name\":\"name\",\"type\":\"VARCHAR\"},{\"name\":\"amount\",\"type\":\"DECIMAL(10,2)\"}"));
    CHECK(strstr(text, "[\"Bob\",99.99,\"line1\\nline2\",true]"));
    CHECK(strstr(text, "[\"Ada\",12.5,null,false]"));
    CHECK(strstr(text, "\"truncated\":false"));
    free(text);
    json_decref(j);
    sql_result_free(res);

    REQUIRE_MSG(sql_query(db, "VALUES (1, 'x'), (2, 'y')", NULL, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(sql_result_n_rows(res), 2);
    j = sql_result_json(res);
    text = j ? json_dumps(json_object_get(j, "rows"), JSON_COMPACT) : NULL;
    CHECK_EQ_STR(text, "[[1,\"x\"],[2,\"y\"]]");
    free(text);
    json_decref(j);
    sql_result_free(res);
    sql_db_free(db);
}

TEST(sql, duckdb_error_message_comes_through)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    char err[DK_ERRLEN];
    sql_result *res = NULL;
    CHECK_EQ_INT(sql_query(db, "SELECT nme FROM customers", NULL, &res, err), DK_ERR_FORMAT);
    test_log("%s", err);
    CHECK(strstr(err, "nme") && strstr(err, "name")); /* DuckDB names the column and suggests one */
    CHECK(strchr(err, '\n') == NULL);
    CHECK(res == NULL);
    CHECK_EQ_INT(sql_query(db, "SELEC 1", NULL, &res, err), DK_ERR_FORMAT);
    CHECK(strstr(err, "syntax error"));
    CHECK_EQ_INT(sql_query(db, "SELECT 1/0::INTEGER + 'a'::INTEGER", NULL, &res, err), DK_ERR_FORMAT);
    CHECK(strstr(err, "Conversion"));
    sql_db_free(db);
}

TEST(sql, max_rows_truncates)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    char err[DK_ERRLEN];
    sql_result *res = NULL;
    sql_limits lim = {.max_rows = 5};
    REQUIRE_MSG(sql_query(db, "SELECT range AS i FROM range(1000000) ORDER BY i DESC", &lim, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(sql_result_n_rows(res), 5);
    CHECK(sql_result_truncated(res));
    CHECK_EQ_STR(sql_result_value(res, 0, 0), "999999");
    CHECK_EQ_STR(sql_result_value(res, 4, 0), "999995");
    dk_buf table = {0};
    sql_result_table(res, &table, 0);
    CHECK(strstr(table.data, "(first 5 rows shown, more were cut)\n"));
    dk_buf_free(&table);
    json_t *j = sql_result_json(res);
    CHECK(j && json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    sql_result_free(res);
    lim.max_rows = 4; /* exactly as many rows as there are: not truncated */
    REQUIRE_MSG(sql_query(db, "SELECT * FROM orders", &lim, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(sql_result_n_rows(res), 4);
    CHECK(!sql_result_truncated(res));
    sql_result_free(res);
    sql_db_free(db);
}

TEST(sql, runaway_query_times_out)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    char err[DK_ERRLEN];
    sql_result *res = NULL;
    sql_limits lim = {.max_rows = 10, .timeout_ms = 200};
    uint64_t t0 = dk_now_ns();
    int rc = sql_query(db, "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3", &lim, &res, err);
    double ms = (double)(dk_now_ns() - t0) / 1e6;
    test_log("rc %d after %.0f ms: %s", rc, ms, rc ? err : "");
    CHECK_EQ_INT(rc, DK_ERR_LIMIT);
    CHECK_EQ_STR(err, "query timed out after 200 ms");
    CHECK(ms >= 190 && ms < 3000);
    CHECK(res == NULL);
    /* The connection is usable afterwards. */
    REQUIRE_MSG(sql_query(db, "SELECT 42", &lim, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(sql_result_value(res, 0, 0), "42");
    sql_result_free(res);
    sql_db_free(db);
}

static const char *const test_sql_refused[] = {
    "INSERT INTO customers VALUES (4, 'Eve', 'Nice')",
    "UPDATE orders SET amount = 0",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE t (i INTEGER)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO m(x) AS x + 1",
    "ALTER TABLE orders ADD COLUMN x INTEGER",
    "COPY orders TO '/tmp/dk_sql_copy.csv'",
    "COPY (SELECT 1) TO '/tmp/dk_sql_copy.csv'",
    "ATTACH '/tmp/dk_sql_other.duckdb' AS other",
    "DETACH shop",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET threads",
    "EXPORT DATABASE '/tmp/dk_sql_export'",
    "IMPORT DATABASE '/tmp/dk_sql_export'",
    "CALL checkpoint()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "COMMIT",
    "EXPLAIN SELECT 1",
    "PREPARE p AS SELECT 1",
    "SELECT 1; DROP TABLE orders",
    "SELECT 1 --\n; DROP TABLE orders",
    "SELECT 1 /* ; */ ; DELETE FROM orders",
    "SELECT 1;SELECT 2",
    "",
    "  -- only a comment",
    ";",
};

TEST(sql, writes_are_refused_and_file_unchanged)
{
    const char *path = test_sql_db_path();
    REQUIRE(path);
    char *before = NULL, *after = NULL, err[DK_ERRLEN];
    size_t n_before = 0, n_after = 0;
    REQUIRE_MSG(dk_file_read(path, (size_t)1 << 28, &before, &n_before, err) == DK_OK, "%s", err);
    sql_db *db = test_sql_open();
    REQUIRE(db);
    for (size_t i = 0; i < sizeof test_sql_refused / sizeof test_sql_refused[0]; i++) {
        const char *q = test_sql_refused[i];
        int rc = sql_check_query(db, q, err);
        CHECK_MSG(rc != DK_OK, "accepted: %s", q);
        if (rc != DK_OK) test_log("%-45.45s -> %s", q, err);
        sql_result *res = NULL;
        CHECK_MSG(sql_query(db, q, NULL, &res, err) != DK_OK, "ran: %s", q);
        sql_result_free(res);
    }
    CHECK_EQ_INT(sql_check_query(db, "DROP TABLE orders", err), DK_ERR_UNSUPPORTED);
    CHECK_EQ_STR(err, "only SELECT queries are allowed, not DROP");
    CHECK_EQ_INT(sql_check_query(db, "SELECT 1; SELECT 2", err), DK_ERR_UNSUPPORTED);
    CHECK_EQ_STR(err, "only one statement is allowed, found 2");
    /* Accepted forms. */
    CHECK_EQ_INT(sql_check_query(db, "/* c */ SELECT 1; -- trailing", err), DK_OK);
    CHECK_EQ_INT(sql_check_query(db, "FROM customers", err), DK_OK);
    CHECK_EQ_INT(sql_check_query(db, "SELECT ';' AS semi", err), DK_OK);
    sql_result *res = NULL;
    REQUIRE_MSG(sql_query(db, "SELECT 'it''s; -- not a comment' AS s; -- done", NULL, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(sql_result_value(res, 0, 0), "it's; -- not a comment");
    sql_result_free(res);
    /* Nothing changed. */
    REQUIRE_MSG(sql_query(db, "SELECT count(*) FROM orders", NULL, &res, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(sql_result_value(res, 0, 0), "4");
    sql_result_free(res);
    sql_db_free(db);
    REQUIRE_MSG(dk_file_read(path, (size_t)1 << 28, &after, &n_after, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(n_after, n_before);
    CHECK(n_after == n_before && memcmp(before, after, n_before) == 0);
    char wal[600];
    snprintf(wal, sizeof wal, "%s.wal", path);
    CHECK(access(wal, F_OK) != 0);
    CHECK(access("/tmp/dk_sql_copy.csv", F_OK) != 0);
    CHECK(access("/tmp/dk_sql_export", F_OK) != 0);
    dk_free(before);
    dk_free(after);
}

TEST(sql, external_access_refused_on_a_file)
{
    sql_db *db = test_sql_open();
    REQUIRE(db);
    char csv[512], err[DK_ERRLEN];
    snprintf(csv, sizeof csv, "%s/secret.csv", test_tmpdir());
    REQUIRE(dk_file_write(csv, "a,b\n1,2\n", 8, err) == DK_OK);
    const char *const queries[] = {
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM read_json_auto('/tmp/x.json')",
        "SELECT * FROM sqlite_scan('/tmp/x.db', 't')",
        "SELECT * FROM query_table('orders') UNION ALL SELECT * FROM read_csv_auto('/etc/passwd')",
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        sql_result *res = NULL;
        int rc = sql_query(db, queries[i], NULL, &res, err);
        CHECK_MSG(rc != DK_OK, "ran: %s", queries[i]);
        if (rc != DK_OK) test_log("%-45.45s -> %s", queries[i], err);
        sql_result_free(res);
    }
    dk_buf q = {0};
    dk_buf_printf(&q, "SELECT * FROM read_csv_auto('%s')", csv);
    sql_result *res = NULL;
    CHECK(sql_query(db, q.data, NULL, &res, err) != DK_OK);
    dk_buf_free(&q);
    CHECK_EQ_INT(sql_db_add_file_view(db, csv, "secret", err), DK_ERR_ARG); /* not on a file db */
    sql_db_free(db);
}

TEST(sql, csv_file_as_a_view)
{
    char csv[512], other[512], err[DK_ERRLEN];
    snprintf(csv, sizeof csv, "%s/people.csv", test_tmpdir());
    snprintf(other, sizeof other, "%s/other.csv", test_tmpdir());
    static const char people[] = "name,age,town\nAda,36,Paris\nBob,41,Lyon\nCy,,Paris\n";
    REQUIRE(dk_file_write(csv, people, sizeof people - 1, err) == DK_OK);
    REQUIRE(dk_file_write(other, "x\n1\n", 4, err) == DK_OK);
    sql_db *db = NULL;
    REQUIRE_MSG(sql_db_open(&db, NULL, err) == DK_OK, "%s", err);
    REQUIRE_MSG(sql_db_add_file_view(db, csv, "people", err) == DK_OK, "%s", err);
    CHECK_EQ_INT(sql_db_add_file_view(db, "/nonexistent/x.csv", "x", err), DK_ERR_NOTFOUND);
    CHECK_EQ_INT(sql_db_add_file_view(db, csv, "x", err) == DK_OK, 1);
    CHECK_EQ_INT(sql_db_add_file_view(db, "/etc/passwd", "pw", err), DK_ERR_UNSUPPORTED);
    sql_result *res = NULL;
    REQUIRE_MSG(sql_query(db, "SELECT town, count(*) AS n, avg(age) AS a FROM people GROUP BY town ORDER BY town",
                          NULL, &res, err) == DK_OK,
                "%s", err);
    CHECK_EQ_INT(sql_result_n_rows(res), 2);
    CHECK_EQ_STR(sql_result_value(res, 1, 0), "Paris");
    CHECK_EQ_STR(sql_result_value(res, 1, 1), "2");
    CHECK_EQ_STR(sql_result_value(res, 1, 2), "36.0");
    sql_result_free(res);
    /* Sealed now: no new views, no other files, and the seal cannot be undone. */
    CHECK_EQ_INT(sql_db_add_file_view(db, other, "other", err), DK_ERR_ARG);
    dk_buf q = {0};
    dk_buf_printf(&q, "SELECT * FROM read_csv_auto('%s')", other);
    CHECK(sql_query(db, q.data, NULL, &res, err) != DK_OK);
    test_log("other file: %s", err);
    dk_buf_free(&q);
    CHECK(sql_query(db, "SELECT * FROM read_text('/etc/hostname')", NULL, &res, err) != DK_OK);
    CHECK(sql_check_query(db, "SET enable_external_access = true", err) != DK_OK);
    dk_buf d = {0};
    REQUIRE_MSG(sql_describe(db, "where do people live", NULL, &d, err) == DK_OK, "%s", err);
    test_log("%s", d.data);
    CHECK(strstr(d.data, "VIEW people (3 rows)\n"));
    CHECK(strstr(d.data, "  age BIGINT\n"));
    CHECK(strstr(d.data, "  town VARCHAR  -- e.g. 'Lyon', 'Paris'\n"));
    dk_buf_free(&d);
    sql_db_free(db);
}
