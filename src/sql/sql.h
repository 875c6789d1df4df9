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
 * Not for: the agent loop (agent/). The user's own read-write database (`duckling sql`) and
 * model calls inside SQL are in the section at the end.
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

/* ---- the user's data, whatever its form (sql_files.c) ---- */

/* Opens data read-only and sealed: one path of a .duckdb (or .db) file as sql_db_open does, or
 * data files (.csv .tsv .txt .parquet .json .jsonl .ndjson) as views of an in-memory database,
 * each named by sql_view_name_of. A database file cannot be mixed with data files (DK_ERR_ARG).
 * The caller frees *out with sql_db_free. */
int sql_db_open_data(sql_db **out, const char *const *paths, size_t n_paths, char *err);

/* The view name of a data file: its name up to the first '.', lowercased, characters other
 * than letters and digits as '_', prefixed with 't' when it does not start with a letter or
 * '_' ("data/Sales 2024.csv" -> "sales_2024", "2024.csv" -> "t2024"). Cut to size - 1. */
void sql_view_name_of(const char *path, char *out, size_t size);

/* ---- grammars of SQL (sql_grammar.c) ---- */

typedef struct sql_grammar_opts {
    const char *root;  /* the rule that derives one query; NULL: "sql". Every other rule is
                          named ROOT-..., so the text can join another grammar. */
    int json_string;   /* 1: the query is the content of a JSON string, so '"' and '\' are
                          written escaped (\" and \\); 0: plain SQL text */
    int max_tables;    /* tables/views the grammar knows, chosen as sql_describe chooses them
                          (relevance to question); 0: all. Never more than 8, and fewer when
                          they are wide (the matcher follows every table's parse at once while
                          the select list is written, and has a limit of parse stacks). */
} sql_grammar_opts;

/* Appends a GBNF grammar (sample.h) whose sentences are SELECT queries that DuckDB parses,
 * over the tables and columns of db: SELECT [DISTINCT] items FROM a table, or two tables
 * joined on a foreign key ([INNER | LEFT] JOIN ... ON a.x = b.y, either order), [WHERE]
 * [GROUP BY [HAVING]] [ORDER BY] [LIMIT n] [;]. Expressions are of bounded depth over the
 * FROM clause's own columns, type-aware (arithmetic and sum/avg on numbers, lower/LIKE on
 * text, year()/date_trunc/strftime on dates, comparisons of like with like), with literals,
 * CASE, coalesce, IS NULL, IN, BETWEEN, AND/OR, count(*), count(DISTINCT c), min/max; an
 * aggregate never nests, a select list with both aggregates and bare scalars must have GROUP
 * BY (its keys are not checked, so such a query may fail to bind). Single spaces, keywords
 * in upper, lower or title case. Names as DuckDB needs them: bare when a plain identifier
 * that is no reserved keyword, else "quoted"; names with '"', '\' or control characters are
 * left out, as are other schemas' tables unless qualified (schema.table). Aliases (AS n) are
 * lowercase identifiers that are no keyword; ORDER BY may name one once one was defined.
 * String literals hold up to 64 characters, numbers up to 12 digits and 6 decimals; the
 * longest sentence is about a thousand characters (its FROM clause's names make it vary).
 * A database without tables gets a grammar of SELECTs of literals. question may be NULL.
 * Errors: DK_ERR_ARG for a root that is not lowercase letters, digits and '-'; catalog
 * queries fail as sql_query does; DK_ERR_NOMEM (also when out failed). */
int sql_grammar(sql_db *db, const char *question, const sql_grammar_opts *opts, dk_buf *out, char *err);

/* ---- the shell and model calls inside SQL (sql_shell.c, sql_functions.c) ---- */

/* Opens the user's own database, for `duckling sql`: unlike sql_db_open it is not sealed.
 * path NULL: a fresh in-memory database; else a .duckdb file opened read-write (created when
 * missing), or READ_ONLY when read_only (then a missing file is DK_ERR_NOTFOUND). External
 * access stays on (read_csv, COPY, ATTACH, SET work as in DuckDB's own shell). sql_query,
 * sql_check_query and sql_describe work on it as on any sql_db (their guard still admits only
 * SELECTs); sql_exec runs anything. The caller frees *out with sql_db_free. */
int sql_db_open_shell(sql_db **out, const char *path, int read_only, char *err);

/* Receives each result of sql_exec that is a result set (SELECT, VALUES, SHOW, DESCRIBE,
 * PRAGMA, EXPLAIN, CALL, ...; not the counts of INSERT/UPDATE/DELETE, not DDL): i_statement
 * counts statements of the text from 0, res is borrowed for the call. Return DK_OK to go on,
 * or a DK_ERR_* code (after filling err) to stop sql_exec with it. */
typedef int (*sql_result_fn)(void *user, size_t i_statement, const sql_result *res, char *err);

/* Runs text, one or more ';'-separated statements of any kind, in order on db's connection,
 * as the user's shell does: no guard (writes, DDL, ATTACH, SET... run when the database allows
 * them). Each statement is prepared after the ones before it ran, so it sees what they made.
 * Result sets go to on_result (may be NULL) with at most max_rows rows kept (0: 10000; more:
 * sql_result_truncated). Stops at the first failing statement, the ones before it staying
 * done: DK_ERR_FORMAT with DuckDB's message on one line; after sql_db_interrupt, DuckDB's
 * "INTERRUPT Error" or DK_ERR_LIMIT "interrupted". Text of only spaces/comments is DK_OK. */
int sql_exec(sql_db *db, const char *text, size_t max_rows, sql_result_fn on_result, void *user, char *err);

/* Asks what runs on db to stop: the statement of sql_exec (duckdb_interrupt) and the model
 * calls inside it, and the statements of the text after it. Thread-safe: for another thread
 * (a Ctrl-C watcher) while sql_exec runs; the next sql_exec starts afresh. */
void sql_db_interrupt(sql_db *db);

/* ---- renderings for the shell (sql_shell.c) ---- */

/* Appends res as DuckDB's shell draws it in its default "box" mode: a frame of box-drawing
 * characters, column names and lowercase types centred in the header, numbers right-aligned,
 * other values left-aligned, NULL as "NULL"; a value with newlines takes several lines; lines
 * of a value longer than max_cell_width code points (0: no limit) are cut with "…". A
 * truncated result is followed by "(first N rows shown)". -1 if out failed. */
int sql_result_box(const sql_result *res, dk_buf *out, size_t max_cell_width);

/* Appends res as one line of JSON and '\n': an array with one object per row, {"column":
 * value, ...}, values as sql_result_json writes them (DuckDB's `.mode json`). -1 on failure. */
int sql_result_json_rows(const sql_result *res, dk_buf *out);

/* 1 when text ends a statement: its last significant character, outside '...' strings,
 * "..." identifiers, $$...$$ strings and comments, is ';'. The shell reads more lines until
 * then. 0 for text of only spaces and comments. */
int sql_text_complete(const char *text);

/* ---- model calls inside SQL (sql_functions.c) ----
 * prompt(text [, model := NAME] [, format := 'json' | SCHEMA]) -> VARCHAR: a chat model's answer
 *     to text as one user message (its chat template, greedy unless configured otherwise);
 *     format: JSON mode or a JSON schema (text), enforced by grammar.
 * embed(text [, model := NAME]) -> FLOAT[]: an embedding model's L2-normalised vector.
 * prompt_sql(question) -> VARCHAR: a SELECT over the database's tables that answers question,
 *     written by the chat model under the grammar of sql_grammar (so it parses, and its names
 *     are the schema's), from a prompt with sql_describe's description (of at most 16 tables,
 *     the most relevant to the question when it is a constant); a query DuckDB cannot
 *     bind is sent back with DuckDB's message for repair (sampled, temperature 0.7), four
 *     attempts in all, and the last attempt's query is returned as written.
 * They are C scalar functions duckling_prompt(VARCHAR, VARCHAR, VARCHAR), duckling_embed(
 * VARCHAR, VARCHAR) and duckling_prompt_sql(VARCHAR) behind TEMP MACROs of the connection (a C
 * function cannot take named parameters; a macro can, and works on a READ_ONLY database too).
 * NULL text gives NULL. A failing call (unknown model, bad schema, a prompt longer than the
 * context, no embedding model) fails the query with a message naming the cause; the database
 * goes on working.
 * Batching: DuckDB calls a function once per chunk of up to 2048 rows, possibly from several
 * threads at once. The rows of a chunk become jobs of the model's pool: `parallel` worker
 * threads, each with its own session in one engine_batcher, so the decode steps of many rows
 * share forward passes; results go back in row order.
 * prompt_sql and DuckDB: calling DuckDB on the query's own connection from inside its function
 * would deadlock. So the schema (sql_describe and sql_grammar, over the question when it is a
 * constant) is read at bind time, before execution, on a second connection of the same
 * database; it sees the committed tables (not TEMP tables or changes of an open transaction
 * of the shell's connection). */

typedef struct engine_model engine_model; /* engine/engine.h */
typedef struct sql_functions sql_functions;

/* Loads the model called name (for the caller: a path or a store name) into *out, or fails
 * with a message ("unknown model 'x'") in err. The functions own the model it gives and free
 * it with engine_model_free in sql_db_free. Called from DuckDB's threads, one call at a time. */
typedef int (*sql_model_load_fn)(void *user, const char *name, engine_model **out, char *err);

typedef struct sql_functions_config {
    engine_model *model;          /* chat model when none is named; borrowed (outlives the db);
                                     NULL: model_name, loaded on first use */
    const char *model_name;       /* (copied) NULL: none, prompt() then fails saying so */
    engine_model *embed_model;    /* embed()'s model when none is named; borrowed; NULL:
                                     embed_model_name, else the chat model if it embeds */
    const char *embed_model_name; /* (copied) */
    sql_model_load_fn load;       /* loads model_name, embed_model_name and names given in SQL
                                     (model := 'name'); NULL: only the models above */
    void *load_user;
    int n_threads;                /* threads of each forward pass; <= 0: the model's */
    int parallel;                 /* sessions (worker threads) per chat model; <= 0: 8 */
    size_t n_ctx;                 /* context of each session; 0: min(model's, 2048) */
    long num_predict;             /* tokens of one answer at most; 0: 256; < 0: no limit */
    float temperature;            /* 0: greedy (the default) */
    uint64_t seed;                /* sampling seed of every row, with temperature > 0 */
} sql_functions_config;

void sql_functions_config_default(sql_functions_config *cfg);

/* Registers the functions and macros on db (once per db; DK_ERR_ARG the second time). The
 * state (models loaded by name, pools, threads) belongs to db and is freed by sql_db_free,
 * which must come after the queries that use it have returned. *out (may be NULL) receives it,
 * borrowed, for sql_functions_get_stats. No model is loaded here. */
int sql_functions_register(sql_db *db, const sql_functions_config *cfg, sql_functions **out, char *err);

typedef struct sql_functions_stats {
    uint64_t n_prompts;      /* model calls of prompt() and prompt_sql() (a repair counts too) */
    uint64_t n_generated;    /* tokens generated for them */
    uint64_t n_embeds;       /* rows embedded */
    uint64_t n_steps;        /* forward passes of the batchers, all models */
    uint64_t n_rows;         /* tokens evaluated in them */
    uint64_t max_rows;       /* most rows in one pass */
} sql_functions_stats;

/* Counts since registration. Thread-safe. */
void sql_functions_get_stats(sql_functions *fns, sql_functions_stats *out);

/* ---- SQL text for other modules that talk to DuckDB (sql_describe.c) ---- */

/* Appends s as a SQL string literal ('it''s') / a quoted identifier ("my ""col"""). */
void sql_put_literal(dk_buf *b, const char *s);
void sql_put_ident(dk_buf *b, const char *s);

/* Appends DuckDB's error message (NULL: "unknown DuckDB error") as one line: its lines joined
 * with spaces, the caret lines dropped, and with keep_query 0 also the "LINE n: ..." lines that
 * quote the statement (useful to a model repairing its own SQL, noise in any other message). */
void sql_error_line(const char *message, int keep_query, dk_buf *out);
#endif
