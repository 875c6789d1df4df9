/*
 * sql: duckling's bridge to DuckDB (C API, libduckdb 1.4.4) for "ask your data".
 *
 * It opens the user's data read-only, describes its schema compactly for a prompt, and runs
 * the SQL a model wrote behind a guard: exactly one statement, and DuckDB itself must classify
 * it as a SELECT (duckdb_extract_statements + duckdb_prepared_statement_type); everything else
 * (INSERT ... VACUUM, PRAGMA, SET, ATTACH, multi-statement text) is refused with a message.
 * Functions that could reach the file system or other databases from inside a SELECT
 * (read_csv('/etc/passwd'), read_text, glob, ...) are switched off in DuckDB itself: the
 * database is "sealed" with enable_external_access=false and lock_configuration=true, so no
 * later statement can switch them back on. A .duckdb file is sealed as soon as it is opened;
 * an in-memory database is sealed at its first sql_check_query / sql_query / sql_describe,
 * after its file views were added, with allowed_paths listing exactly those view files (so
 * the views keep working and no other file can be read). sql_db_add_file_view fails after that.
 * Queries run with a row limit and a timeout (a watchdog thread calls duckdb_interrupt).
 *
 * Not for: writing data, model calls, the agent loop (agent/ does that).
 * Thread safety: one sql_db is used by one thread at a time (the watchdog is internal).
 * Errors: DK_OK or a DK_ERR_* code with one line in err (DK_ERRLEN bytes). DuckDB's own error
 * text is passed through (DK_ERR_FORMAT) so that a model can repair its SQL.
 */
#ifndef DK_SQL_H
#define DK_SQL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

typedef struct sql_db sql_db;
typedef struct sql_result sql_result;

/* Opens a DuckDB database. path: a .duckdb file, opened READ_ONLY (it is never created or
 * modified; a missing file is DK_ERR_NOTFOUND), sealed at once. path NULL: a fresh in-memory
 * database for file views. The caller frees *out with sql_db_free. */
int sql_db_open(sql_db **out, const char *path, char *err);

/* Adds a data file as a view named view_name over read_csv_auto (.csv .tsv .txt),
 * read_parquet (.parquet) or read_json_auto (.json .jsonl .ndjson), chosen by extension
 * (case-insensitive). Only for an in-memory database that is not sealed yet (DK_ERR_ARG
 * otherwise); a missing file is DK_ERR_NOTFOUND, another extension DK_ERR_UNSUPPORTED. */
int sql_db_add_file_view(sql_db *db, const char *file, const char *view_name, char *err);

void sql_db_free(sql_db *db); /* NULL is fine */

/* The read-only guard: DK_OK when sql is exactly one statement that DuckDB classifies as a
 * SELECT (WITH ... SELECT, VALUES, FROM t, comments, a trailing ';' all count). Refusals:
 * DK_ERR_UNSUPPORTED ("only SELECT queries are allowed, not DROP"; "only one statement ...");
 * text DuckDB cannot parse or bind: DK_ERR_FORMAT with DuckDB's message. EXPLAIN is refused. */
int sql_check_query(sql_db *db, const char *sql, char *err);

typedef struct sql_limits {
    size_t max_rows;      /* rows kept in the result (more: truncated); 0 means 1000 */
    uint32_t timeout_ms;  /* wall-clock limit of the execution; 0 means none */
} sql_limits;

/* Checks sql with sql_check_query and runs it. limits NULL: the defaults above. A timeout is
 * DK_ERR_LIMIT "query timed out after N ms"; a DuckDB error is DK_ERR_FORMAT with its text.
 * The caller frees *out with sql_result_free. */
int sql_query(sql_db *db, const char *sql, const sql_limits *limits, sql_result **out, char *err);

/* What a column's values are, for renderings that keep numbers numbers. */
typedef enum sql_kind {
    SQL_KIND_TEXT = 0,    /* strings, dates, lists, ... (rendered as DuckDB's text) */
    SQL_KIND_INTEGER,     /* TINYINT .. BIGINT, unsigned ones, HUGEINT */
    SQL_KIND_REAL,        /* FLOAT, DOUBLE, DECIMAL */
    SQL_KIND_BOOL,
} sql_kind;

/* Result accessors; indices out of range give 0 / NULL. Strings live as long as res. */
size_t sql_result_n_rows(const sql_result *res);
size_t sql_result_n_cols(const sql_result *res);
const char *sql_result_col_name(const sql_result *res, size_t i_col);
const char *sql_result_col_type_name(const sql_result *res, size_t i_col); /* "BIGINT" */
sql_kind sql_result_col_kind(const sql_result *res, size_t i_col);
int sql_result_truncated(const sql_result *res); /* 1 when rows beyond max_rows were dropped */
int sql_result_is_null(const sql_result *res, size_t i_row, size_t i_col);
/* The value as DuckDB writes it as text; "NULL" for NULL. */
const char *sql_result_value(const sql_result *res, size_t i_row, size_t i_col);
void sql_result_free(sql_result *res); /* NULL is fine */

/* Appends a compact text table for a prompt: a header line of column names, one line per row,
 * cells separated by " | ", padded to the column width, newlines in cells shown as spaces, and
 * cells longer than max_cell_width characters (UTF-8 code points; 0 means 40) cut with "…".
 * A truncated result ends with a line "(first N rows shown, more were cut)". -1 if out failed. */
int sql_result_table(const sql_result *res, dk_buf *out, size_t max_cell_width);

/* {"columns":[{"name":..,"type":..}],"rows":[[..]],"truncated":bool}: integers and reals as
 * JSON numbers (non-finite reals and integers beyond int64 as strings), booleans as JSON
 * booleans, NULL as null. New reference (caller json_decref's it); NULL when out of memory. */
json_t *sql_result_json(const sql_result *res);

typedef struct sql_describe_opts {
    int n_samples;       /* distinct sample values per text column (<= 40 chars); 0: none */
    int max_tables;      /* tables/views described at most; 0: all */
} sql_describe_opts;

/* Appends a schema description for a prompt, one block per table or view (name order):
 *   TABLE orders (3 rows)
 *     id INTEGER PRIMARY KEY
 *     customer_id INTEGER REFERENCES customers(id)
 *     status VARCHAR  -- e.g. 'open', 'paid'
 * Keys come from duckdb_constraints(). With more tables than opts->max_tables, the ones most
 * relevant to question are kept: each table scores the number of distinct question words
 * (lowercase letters/digits, 3+ characters) that match a word of its name or of a column name
 * (words split at '_' and non-alphanumerics), where two words match when equal or one is a
 * prefix of the other and the shorter has 3+ characters ("customers" ~ "customer"); highest
 * scores first, name order among equals. A line "(N more tables not shown)" follows.
 * question may be NULL (then the first max_tables by name). opts NULL: {3, 0}. */
int sql_describe(sql_db *db, const char *question, const sql_describe_opts *opts, dk_buf *out, char *err);

#endif
