/*
 * test_duckdb.h: DuckDB files for the tests of the modules that read the user's data (sql,
 * agent, server, cli), built through DuckDB's own C API from a SQL script (test_duckdb.c).
 */
#ifndef DK_TEST_DUCKDB_H
#define DK_TEST_DUCKDB_H

/* The path of test_tmpdir()/NAME.duckdb, built by running script on a fresh file the first
 * time a test asks for NAME (later calls give the same path without rebuilding it). NULL,
 * after test_log with DuckDB's message, when the script fails. name: at most 64 bytes. */
const char *test_duckdb_file(const char *name, const char *script);

typedef struct sql_db sql_db; /* sql/sql.h */

/* test_duckdb_file's database opened with sql_db_open (read-only, sealed); NULL after
 * test_log when it cannot be built or opened. The caller frees it with sql_db_free. */
sql_db *test_duckdb_open(const char *name, const char *script);

#endif
