/*
 * test_duckdb.c: builds the tests' DuckDB files once per test run (see test_duckdb.h).
 */
#include "test_duckdb.h"

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "sql/sql.h"
#include "test.h"

#define TEST_DUCKDB_MAX_FILES 32

static struct {
    char name[65];
    char path[600];
} built[TEST_DUCKDB_MAX_FILES];
static int n_built;

static int build(const char *path, const char *script)
{
    duckdb_database database;
    duckdb_connection conn;
    duckdb_result r;
    remove(path);
    if (duckdb_open(path, &database) == DuckDBError) {
        test_log("duckdb: cannot create %s", path);
        return -1;
    }
    int rc = duckdb_connect(database, &conn) == DuckDBError ? -1 : 0;
    if (rc == 0) {
        if (duckdb_query(conn, script, &r) == DuckDBError) {
            test_log("duckdb script for %s: %s", path, duckdb_result_error(&r));
            rc = -1;
        }
        duckdb_destroy_result(&r);
        duckdb_disconnect(&conn);
    }
    duckdb_close(&database);
    return rc;
}

const char *test_duckdb_file(const char *name, const char *script)
{
    for (int i = 0; i < n_built; i++)
        if (strcmp(built[i].name, name) == 0) return built[i].path;
    if (n_built == TEST_DUCKDB_MAX_FILES || strlen(name) > 64) return NULL;
    char path[600];
    snprintf(path, sizeof path, "%s/%s.duckdb", test_tmpdir(), name);
    if (build(path, script) != 0) return NULL;
    snprintf(built[n_built].name, sizeof built[n_built].name, "%s", name);
    snprintf(built[n_built].path, sizeof built[n_built].path, "%s", path);
    return built[n_built++].path;
}

sql_db *test_duckdb_open(const char *name, const char *script)
{
    const char *path = test_duckdb_file(name, script);
    if (!path) return NULL;
    sql_db *db = NULL;
    char err[DK_ERRLEN];
    if (sql_db_open(&db, path, err) != DK_OK) {
        test_log("open %s: %s", path, err);
        return NULL;
    }
    return db;
}
