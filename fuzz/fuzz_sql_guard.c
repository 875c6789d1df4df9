/*
 * fuzz_sql_guard.c: fuzz target for the read-only SQL guard (sql_check_query).
 *
 * The input is SQL text (cut at its first NUL, as DuckDB would see it) checked against an
 * in-memory database with one table. Whatever the guard accepts is checked again by DuckDB
 * itself: it must extract to exactly one statement that prepares as a SELECT; anything else
 * aborts, so libFuzzer reports it. The database is opened once and reused.
 */
#include "fuzz.h"

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sql/sql.h"

static sql_db *fuzz_sql_db;
static duckdb_database fuzz_sql_raw_db;
static duckdb_connection fuzz_sql_raw_conn;

/* The guarded db has one table, a view "t" over a small CSV file written to a fresh temporary
 * directory; a second, unguarded connection gets the same view to classify accepted text. */
static char fuzz_sql_dir[] = "/tmp/dk_fuzz_sql_XXXXXX";
static char fuzz_sql_csv[64];

/* The CSV and its folder go when the process ends (the view reads the file until then). */
static void fuzz_sql_cleanup(void)
{
    remove(fuzz_sql_csv);
    rmdir(fuzz_sql_dir);
}

static int fuzz_sql_setup(void)
{
    char *csv = fuzz_sql_csv, err[DK_ERRLEN];
    if (fuzz_sql_db) return 0;
    if (!mkdtemp(fuzz_sql_dir)) return -1;
    snprintf(fuzz_sql_csv, sizeof fuzz_sql_csv, "%s/t.csv", fuzz_sql_dir);
    atexit(fuzz_sql_cleanup);
    if (dk_file_write(csv, "id,name\n1,a\n2,b\n", 16, err) != DK_OK) return -1;
    dk_buf view = {0};
    dk_buf_printf(&view, "CREATE VIEW t AS SELECT * FROM read_csv_auto('%s')", csv);
    duckdb_result r;
    int bad = view.failed || duckdb_open(NULL, &fuzz_sql_raw_db) == DuckDBError ||
              duckdb_connect(fuzz_sql_raw_db, &fuzz_sql_raw_conn) == DuckDBError;
    if (!bad) {
        bad = duckdb_query(fuzz_sql_raw_conn, view.data, &r) == DuckDBError;
        duckdb_destroy_result(&r);
    }
    dk_buf_free(&view);
    if (bad || sql_db_open(&fuzz_sql_db, NULL, err) != DK_OK) return -1;
    return sql_db_add_file_view(fuzz_sql_db, csv, "t", err) == DK_OK ? 0 : -1;
}

static int fuzz_sql_is_one_select(const char *sql)
{
    duckdb_extracted_statements ext = NULL;
    duckdb_prepared_statement prep = NULL;
    int ok = 0;
    if (duckdb_extract_statements(fuzz_sql_raw_conn, sql, &ext) == 1 &&
        duckdb_prepare_extracted_statement(fuzz_sql_raw_conn, ext, 0, &prep) == DuckDBSuccess)
        ok = duckdb_prepared_statement_type(prep) == DUCKDB_STATEMENT_TYPE_SELECT;
    if (prep) duckdb_destroy_prepare(&prep);
    duckdb_destroy_extracted(&ext);
    return ok;
}

int fuzz_sql_guard_one(const uint8_t *data, size_t size)
{
    if (fuzz_sql_setup() != 0) abort();
    char *sql = dk_strndup((const char *)data, size);
    if (!sql) return 0;
    char err[DK_ERRLEN];
    if (sql_check_query(fuzz_sql_db, sql, err) == DK_OK && !fuzz_sql_is_one_select(sql)) abort();
    dk_free(sql);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_sql_guard_one(data, size); }
#endif
