/*
 * sql_internal.h: what sql_describe.c and sql_grammar.c share inside the sql module: the list
 * of tables and views with their columns, read from DuckDB's catalog functions through
 * sql_query (so through the same read-only guard as user SQL), and the choice of the tables
 * most relevant to a question (the rule is sql_describe's, in sql.h); and what sql.c,
 * sql_shell.c and sql_functions.c share about the connection and the model functions. Not a
 * public contract: sql.h is.
 */
#ifndef DK_SQL_INTERNAL_H
#define DK_SQL_INTERNAL_H

#include "sql/sql.h"

/* Wall-clock limit of each internal catalog query. */
#define SQL_CATALOG_TIMEOUT_MS 5000

typedef struct sql_table_info {
    char *schema, *name, *kind; /* kind: "TABLE" or "VIEW" */
    sql_result *columns;        /* (column_name, data_type) in column order */
    int score;                  /* relevance to the question (set by sql_tables_choose) */
    size_t i_order;             /* position in name order */
    int keep;                   /* chosen by sql_tables_choose */
} sql_table_info;

/* Reads every non-internal table and view, ordered by (name, schema), each with its columns.
 * The caller frees *out with sql_tables_free(*out, *n_out). An empty database gives
 * *n_out == 0 (and a non-NULL *out). */
int sql_tables_load(sql_db *db, sql_table_info **out, size_t *n_out, char *err);
void sql_tables_free(sql_table_info *tables, size_t n); /* NULL is fine */

/* Sets keep to 1 on all tables, or on the max_tables most relevant to question (sql.h
 * describes the score) and to 0 on the others; max_tables <= 0: all. question may be NULL.
 * May be called again with another max_tables. -1 when out of memory. */
int sql_tables_choose(sql_table_info *tables, size_t n, const char *question, int max_tables);


/* Runs an internal catalog query built in b (b is freed here, also on failure) with the
 * catalog timeout and max_rows kept. The caller frees *out with sql_result_free. */
int sql_run_built(sql_db *db, dk_buf *b, size_t max_rows, sql_result **out, char *err);

/* For this module's own files: the DuckDB connection under db (duckdb_connection of
 * duckdb.h, borrowed); a second handle on db's database with its own connection (db must
 * outlive it; freed with sql_db_free, which leaves the database open); the hand-over of the
 * functions' state to db; cancelling (on = 1) and re-allowing (0) model calls (sql_db_interrupt
 * and sql_exec do it); the destructor that sql_db_free calls (NULL is fine). */
struct _duckdb_connection *sql_db_duckdb_connection(sql_db *db);
int sql_db_connect_more(sql_db *db, sql_db **out, char *err);
int sql_db_attach_functions(sql_db *db, sql_functions *fns, char *err);
void sql_functions_cancel(sql_functions *fns, int on);
void sql_functions_free(sql_functions *fns);

/* The lexer's pieces of SQL text that are not code, at p: a -- comment, a nested block
 * comment, a '...' string, a "..." identifier (doubled quotes inside) or a $tag$...$tag$
 * string. Its length (0 when p starts none), and *open = 1 when it runs unterminated to the
 * end of the text. */
size_t sql_lex_skip(const char *p, int *open);

#endif
