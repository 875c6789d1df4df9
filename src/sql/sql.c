/*
 * sql.c: opening and sealing DuckDB databases, the read-only guard, and query execution with
 * a row limit and a timeout watchdog; the result object and its accessors.
 *
 * Why the query is wrapped: the C API's text accessors (duckdb_value_varchar) need a
 * materialized result, so to keep max_rows from materializing a whole table the accepted query
 * runs as `SELECT * FROM (\n<query>\n) AS dk_query LIMIT max_rows+1`. The wrapped text goes
 * through the guard again, so a trick that fools the small lexer here (which only strips a
 * trailing ';') can at worst make the query fail, never let a non-SELECT through.
 * Also the user's own, unsealed database of `duckling sql` and sql_exec, which runs any
 * statements there; results with nested values (LIST, STRUCT, ...) are read by chunks, since
 * the legacy per-cell accessors give nothing for them. Second handles on a database and the
 * hand-over of the model functions' state (sql_functions.c) are here too, since they touch
 * struct sql_db. Renderings are in sql_render.c and sql_shell.c, the schema description in
 * sql_describe.c.
 */
#include "sql/sql_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop

#define SQL_DEFAULT_MAX_ROWS 1000
#define SQL_EXEC_DEFAULT_MAX_ROWS 10000 /* rows of one shell result kept for rendering */

struct sql_db {
    duckdb_database database;
    duckdb_connection conn;
    int is_file;          /* opened from a .duckdb file (sealed at open) */
    int sealed;           /* external access off and configuration locked */
    char **view_files;    /* (n_view_files) absolute paths behind the file views */
    size_t n_view_files;
    int is_shell;         /* the user's own database (sql_db_open_shell): never sealed */
    int borrows_database; /* a second handle (sql_db_connect_more): database not ours to close */
    atomic_int interrupted; /* set by sql_db_interrupt, cleared when sql_exec starts */
    sql_functions *functions; /* model functions registered on it (owned), or NULL */
};

struct sql_result {
    size_t n_rows, n_cols;
    int truncated;
    char **names;         /* (n_cols) */
    char **types;         /* (n_cols) DuckDB type names */
    sql_kind *kinds;      /* (n_cols) */
    char **cells;         /* (n_rows * n_cols), row-major; NULL for SQL NULL */
};

/* ---- small helpers ---- */

/* Fails with DuckDB's message made one line: lines joined with spaces, the caret line
 * under "LINE 1: ..." dropped (its column is meaningless once joined). */
static int sql_fail_duckdb(char *err, const char *message)
{
    dk_buf b = {0};
    sql_error_line(message, 1, &b);
    int rc = dk_fail(err, DK_ERR_FORMAT, "%s", b.data ? b.data : "unknown DuckDB error");
    dk_buf_free(&b);
    return rc;
}

/* Runs an internal statement (never user text) and fails with DuckDB's message. */
static int sql_exec_internal(sql_db *db, const char *sql, char *err)
{
    duckdb_result r;
    if (duckdb_query(db->conn, sql, &r) == DuckDBError) {
        int rc = sql_fail_duckdb(err, duckdb_result_error(&r));
        duckdb_destroy_result(&r);
        return rc;
    }
    duckdb_destroy_result(&r);
    return DK_OK;
}

/* Seals an in-memory database: only the view files stay readable, nothing can undo it. */
static int sql_db_seal(sql_db *db, char *err)
{
    if (db->sealed || db->is_shell) return DK_OK;
    dk_buf b = {0};
    dk_buf_puts(&b, "SET allowed_paths = [");
    for (size_t i = 0; i < db->n_view_files; i++) {
        if (i) dk_buf_puts(&b, ", ");
        sql_put_literal(&b, db->view_files[i]);
    }
    dk_buf_puts(&b, "]");
    if (b.failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = DK_OK;
    if (db->n_view_files) rc = sql_exec_internal(db, b.data, err);
    dk_buf_free(&b);
    if (rc == DK_OK) rc = sql_exec_internal(db, "SET enable_external_access = false", err);
    if (rc == DK_OK) rc = sql_exec_internal(db, "SET lock_configuration = true", err);
    if (rc == DK_OK) db->sealed = 1;
    return rc;
}

/* ---- opening ---- */

/* Opens path (NULL: in memory) with DuckDB settings (NULL-terminated name, value pairs)
 * into a new sql_db. must_exist: a missing file is DK_ERR_NOTFOUND instead of created. */
static int sql_db_open_with(sql_db **out, const char *path, const char *const *settings, int must_exist, char *err)
{
    *out = NULL;
    if (path && must_exist) {
        struct stat st;
        if (stat(path, &st) != 0)
            return dk_fail(err, errno == ENOENT ? DK_ERR_NOTFOUND : DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode)) return dk_fail(err, DK_ERR_IO, "%s is not a regular file", path);
    }
    sql_db *db = dk_calloc(1, sizeof *db);
    if (!db) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    duckdb_config config = NULL;
    char *open_error = NULL;
    int rc = DK_OK;
    if (duckdb_create_config(&config) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_NOMEM, "duckdb_create_config failed");
        goto fail;
    }
    for (size_t i = 0; settings[i]; i += 2) {
        if (duckdb_set_config(config, settings[i], settings[i + 1]) == DuckDBError) {
            rc = dk_fail(err, DK_ERR_UNSUPPORTED, "DuckDB refused the setting %s = %s", settings[i], settings[i + 1]);
            goto fail;
        }
    }
    if (duckdb_open_ext(path, &db->database, config, &open_error) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path ? path : ":memory:", open_error ? open_error : "?");
        goto fail;
    }
    if (duckdb_connect(db->database, &db->conn) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "cannot connect to %s", path ? path : ":memory:");
        goto fail;
    }
    db->is_file = path != NULL;
    duckdb_destroy_config(&config);
    *out = db;
    return DK_OK;
fail:
    if (open_error) duckdb_free(open_error);
    if (config) duckdb_destroy_config(&config);
    sql_db_free(db);
    return rc;
}

int sql_db_open(sql_db **out, const char *path, char *err)
{
    /* A file is sealed from the start: read-only, no file system, no extension downloads. */
    static const char *const sealed_file[] = {"access_mode", "READ_ONLY", "enable_external_access", "false",
                                              "autoinstall_known_extensions", "false", "lock_configuration", "true",
                                              NULL};
    static const char *const memory[] = {"autoinstall_known_extensions", "false", NULL};
    int rc = sql_db_open_with(out, path, path ? sealed_file : memory, 1, err);
    if (rc == DK_OK) (*out)->sealed = path != NULL;
    return rc;
}

void sql_db_free(sql_db *db)
{
    if (!db) return;
    /* the functions' worker threads and second connection go before the database */
    sql_functions_free(db->functions);
    if (db->conn) duckdb_disconnect(&db->conn);
    if (db->database && !db->borrows_database) duckdb_close(&db->database);
    for (size_t i = 0; i < db->n_view_files; i++) dk_free(db->view_files[i]);
    dk_free(db->view_files);
    dk_free(db);
}

static int sql_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* The DuckDB table function that reads file, or NULL for an unknown extension. */
static const char *sql_reader_for(const char *file)
{
    if (sql_ends_with(file, ".csv") || sql_ends_with(file, ".tsv") || sql_ends_with(file, ".txt")) return "read_csv_auto";
    if (sql_ends_with(file, ".parquet")) return "read_parquet";
    if (sql_ends_with(file, ".json") || sql_ends_with(file, ".jsonl") || sql_ends_with(file, ".ndjson"))
        return "read_json_auto";
    return NULL;
}

int sql_db_add_file_view(sql_db *db, const char *file, const char *view_name, char *err)
{
    if (!db || !file || !view_name || !*view_name) return dk_fail(err, DK_ERR_ARG, "missing file or view name");
    if (db->is_file) return dk_fail(err, DK_ERR_ARG, "file views need an in-memory database");
    if (db->sealed) return dk_fail(err, DK_ERR_ARG, "file views must be added before the first query");
    const char *reader = sql_reader_for(file);
    if (!reader) return dk_fail(err, DK_ERR_UNSUPPORTED, "%s: not a .csv, .tsv, .parquet or .json file", file);
    char *abs = realpath(file, NULL); /* libc malloc: copied into our allocator below */
    if (!abs) return dk_fail(err, errno == ENOENT ? DK_ERR_NOTFOUND : DK_ERR_IO, "cannot open %s: %s", file, strerror(errno));
    char *owned = dk_strdup(abs);
    free(abs);
    char **files = owned ? dk_realloc(db->view_files, (db->n_view_files + 1) * sizeof *files) : NULL;
    if (!files) {
        dk_free(owned);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    db->view_files = files;
    dk_buf b = {0};
    dk_buf_puts(&b, "CREATE VIEW ");
    sql_put_ident(&b, view_name);
    dk_buf_printf(&b, " AS SELECT * FROM %s(", reader);
    sql_put_literal(&b, owned);
    dk_buf_puts(&b, ")");
    int rc = b.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : sql_exec_internal(db, b.data, err);
    dk_buf_free(&b);
    if (rc != DK_OK) {
        dk_free(owned);
        return rc;
    }
    db->view_files[db->n_view_files++] = owned;
    return DK_OK;
}

/* ---- the guard ---- */

static const char *sql_statement_type_name(duckdb_statement_type t)
{
    static const char *const names[] = {
        "an invalid statement", "SELECT", "INSERT", "UPDATE", "EXPLAIN", "DELETE", "PREPARE", "CREATE",
        "EXECUTE", "ALTER", "TRANSACTION", "COPY", "ANALYZE", "SET", "CREATE FUNCTION", "DROP", "EXPORT",
        "PRAGMA", "VACUUM", "CALL", "SET", "INSTALL or LOAD", "RELATION", "EXTENSION", "LOGICAL PLAN", "ATTACH",
        "DETACH", "MULTI",
    };
    if ((size_t)t < sizeof names / sizeof names[0]) return names[t];
    return "an unknown statement";
}

/* Prepares sql if it is exactly one SELECT; *out (may be NULL) receives the statement. */
static int sql_guard_prepare(sql_db *db, const char *sql, duckdb_prepared_statement *out, char *err)
{
    if (out) *out = NULL;
    if (!db || !sql) return dk_fail(err, DK_ERR_ARG, "missing database or query");
    int rc = sql_db_seal(db, err);
    if (rc != DK_OK) return rc;
    duckdb_extracted_statements extracted = NULL;
    idx_t n = duckdb_extract_statements(db->conn, sql, &extracted);
    duckdb_prepared_statement prepared = NULL;
    if (n == 0) {
        const char *why = extracted ? duckdb_extract_statements_error(extracted) : NULL;
        rc = why ? sql_fail_duckdb(err, why) : dk_fail(err, DK_ERR_FORMAT, "the query is empty");
        goto done;
    }
    if (n > 1) {
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "only one statement is allowed, found %llu", (unsigned long long)n);
        goto done;
    }
    if (duckdb_prepare_extracted_statement(db->conn, extracted, 0, &prepared) == DuckDBError) {
        const char *why = duckdb_prepare_error(prepared);
        rc = sql_fail_duckdb(err, why ? why : "the query could not be prepared");
        goto done;
    }
    duckdb_statement_type type = duckdb_prepared_statement_type(prepared);
    if (type != DUCKDB_STATEMENT_TYPE_SELECT) {
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "only SELECT queries are allowed, not %s", sql_statement_type_name(type));
        goto done;
    }
    if (out) {
        *out = prepared;
        prepared = NULL;
    }
done:
    if (prepared) duckdb_destroy_prepare(&prepared);
    duckdb_destroy_extracted(&extracted);
    return rc;
}

int sql_check_query(sql_db *db, const char *sql, char *err)
{
    return sql_guard_prepare(db, sql, NULL, err);
}

/* Length of the $tag$ opening a dollar-quoted string at p ("$$" or "$name$"), or 0. */
static size_t sql_dollar_tag(const char *p)
{
    if (p[0] != '$') return 0;
    size_t i = 1;
    while (isalnum((unsigned char)p[i]) || p[i] == '_') i++;
    if (i > 1 && isdigit((unsigned char)p[1])) return 0; /* $1 is a parameter */
    return p[i] == '$' ? i + 1 : 0;
}

size_t sql_lex_skip(const char *p, int *open)
{
    const char *start = p;
    *open = 0;
    if (p[0] == '-' && p[1] == '-') {
        while (*p && *p != '\n') p++;
        return (size_t)(p - start);
    }
    if (p[0] == '/' && p[1] == '*') {
        int depth = 0;
        do {
            if (p[0] == '/' && p[1] == '*') depth++, p += 2;
            else if (p[0] == '*' && p[1] == '/') depth--, p += 2;
            else p++;
        } while (*p && depth > 0);
        *open = depth > 0;
        return (size_t)(p - start);
    }
    if (*p == '\'' || *p == '"') {
        char q = *p++;
        for (;; p++) {
            if (!*p) {
                *open = 1;
                return (size_t)(p - start);
            }
            if (p[0] == q && p[1] == q) p++;
            else if (*p == q) return (size_t)(p + 1 - start);
        }
    }
    size_t n = sql_dollar_tag(p);
    if (n) {
        const char *body = p + n;
        while (*body && strncmp(body, p, n) != 0) body++;
        *open = !*body;
        return (size_t)((*body ? body + n : body) - start);
    }
    return 0;
}

/* Length of sql without a trailing ';' and what follows it (spaces, comments). */
static size_t sql_body_length(const char *sql)
{
    size_t end = 0; /* one past the last significant character */
    const char *p = sql;
    while (*p) {
        int open;
        size_t n = sql_lex_skip(p, &open);
        if (n && (*p == '\'' || *p == '"' || *p == '$')) end = (size_t)(p + n - sql);
        if (n) {
            p += n;
            continue;
        }
        if (*p != ';' && !isspace((unsigned char)*p)) end = (size_t)(p + 1 - sql);
        p++;
    }
    return end;
}

/* ---- the timeout watchdog ---- */

typedef struct sql_watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    duckdb_connection conn;
    uint32_t timeout_ms;
    int done;      /* set by the query thread when execution returned */
    int fired;     /* set by the watchdog when it interrupted */
} sql_watchdog;

static void sql_deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static void *sql_watchdog_main(void *arg)
{
    sql_watchdog *w = arg;
    struct timespec deadline;
    sql_deadline_after(&deadline, w->timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) == ETIMEDOUT && !w->done) {
            /* Interrupt again every 50 ms: one sent before execution began could be lost. */
            w->fired = 1;
            duckdb_interrupt(w->conn);
            sql_deadline_after(&deadline, 50);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- results ---- */

static const char *sql_type_name(duckdb_type t)
{
    switch (t) {
    case DUCKDB_TYPE_BOOLEAN: return "BOOLEAN";
    case DUCKDB_TYPE_TINYINT: return "TINYINT";
    case DUCKDB_TYPE_SMALLINT: return "SMALLINT";
    case DUCKDB_TYPE_INTEGER: return "INTEGER";
    case DUCKDB_TYPE_BIGINT: return "BIGINT";
    case DUCKDB_TYPE_UTINYINT: return "UTINYINT";
    case DUCKDB_TYPE_USMALLINT: return "USMALLINT";
    case DUCKDB_TYPE_UINTEGER: return "UINTEGER";
    case DUCKDB_TYPE_UBIGINT: return "UBIGINT";
    case DUCKDB_TYPE_HUGEINT: return "HUGEINT";
    case DUCKDB_TYPE_UHUGEINT: return "UHUGEINT";
    case DUCKDB_TYPE_FLOAT: return "FLOAT";
    case DUCKDB_TYPE_DOUBLE: return "DOUBLE";
    case DUCKDB_TYPE_DECIMAL: return "DECIMAL";
    case DUCKDB_TYPE_VARCHAR: return "VARCHAR";
    case DUCKDB_TYPE_BLOB: return "BLOB";
    case DUCKDB_TYPE_DATE: return "DATE";
    case DUCKDB_TYPE_TIME: return "TIME";
    case DUCKDB_TYPE_TIMESTAMP: return "TIMESTAMP";
    case DUCKDB_TYPE_TIMESTAMP_S: return "TIMESTAMP_S";
    case DUCKDB_TYPE_TIMESTAMP_MS: return "TIMESTAMP_MS";
    case DUCKDB_TYPE_TIMESTAMP_NS: return "TIMESTAMP_NS";
    case DUCKDB_TYPE_TIMESTAMP_TZ: return "TIMESTAMP WITH TIME ZONE";
    case DUCKDB_TYPE_TIME_TZ: return "TIME WITH TIME ZONE";
    case DUCKDB_TYPE_INTERVAL: return "INTERVAL";
    case DUCKDB_TYPE_UUID: return "UUID";
    case DUCKDB_TYPE_ENUM: return "ENUM";
    case DUCKDB_TYPE_LIST: return "LIST";
    case DUCKDB_TYPE_STRUCT: return "STRUCT";
    case DUCKDB_TYPE_MAP: return "MAP";
    case DUCKDB_TYPE_ARRAY: return "ARRAY";
    case DUCKDB_TYPE_UNION: return "UNION";
    case DUCKDB_TYPE_BIT: return "BIT";
    case DUCKDB_TYPE_SQLNULL: return "NULL";
    default: return "OTHER";
    }
}

static sql_kind sql_kind_of(duckdb_type t)
{
    switch (t) {
    case DUCKDB_TYPE_TINYINT: case DUCKDB_TYPE_SMALLINT: case DUCKDB_TYPE_INTEGER: case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT: case DUCKDB_TYPE_USMALLINT: case DUCKDB_TYPE_UINTEGER: case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT: case DUCKDB_TYPE_UHUGEINT:
        return SQL_KIND_INTEGER;
    case DUCKDB_TYPE_FLOAT: case DUCKDB_TYPE_DOUBLE: case DUCKDB_TYPE_DECIMAL:
        return SQL_KIND_REAL;
    case DUCKDB_TYPE_BOOLEAN:
        return SQL_KIND_BOOL;
    default:
        return SQL_KIND_TEXT;
    }
}

void sql_result_free(sql_result *res)
{
    if (!res) return;
    for (size_t i = 0; i < res->n_cols; i++) {
        if (res->names) dk_free(res->names[i]);
        if (res->types) dk_free(res->types[i]);
    }
    if (res->cells)
        for (size_t i = 0; i < res->n_rows * res->n_cols; i++) dk_free(res->cells[i]);
    dk_free(res->names);
    dk_free(res->types);
    dk_free(res->kinds);
    dk_free(res->cells);
    dk_free(res);
}

/* ---- nested values (LIST, ARRAY, STRUCT, MAP) ----
 * The legacy per-cell accessors (duckdb_value_varchar) give nothing for nested types, and a
 * result read by chunks cannot use them at all. So a result with a nested column is read by
 * chunks: each cell becomes a duckdb_value built from its vector (recursively for nested
 * types) and DuckDB writes it as text (duckdb_value_to_string, SQL literal syntax, whose
 * outer quotes and ::TYPE are dropped for the top-level value). */

static int sql_type_is_nested(duckdb_type t)
{
    return t == DUCKDB_TYPE_LIST || t == DUCKDB_TYPE_ARRAY || t == DUCKDB_TYPE_STRUCT || t == DUCKDB_TYPE_MAP ||
           t == DUCKDB_TYPE_UNION;
}

/* Appends the SQL name of a logical type: FLOAT[], INTEGER[3], STRUCT(a INTEGER), MAP(K, V). */
static void sql_logical_type_name(duckdb_logical_type lt, dk_buf *out)
{
    duckdb_type t = duckdb_get_type_id(lt);
    duckdb_logical_type child = NULL;
    switch (t) {
    case DUCKDB_TYPE_LIST:
        child = duckdb_list_type_child_type(lt);
        sql_logical_type_name(child, out);
        dk_buf_puts(out, "[]");
        break;
    case DUCKDB_TYPE_ARRAY:
        child = duckdb_array_type_child_type(lt);
        sql_logical_type_name(child, out);
        dk_buf_printf(out, "[%llu]", (unsigned long long)duckdb_array_type_array_size(lt));
        break;
    case DUCKDB_TYPE_MAP: {
        duckdb_logical_type key = duckdb_map_type_key_type(lt), value = duckdb_map_type_value_type(lt);
        dk_buf_puts(out, "MAP(");
        sql_logical_type_name(key, out);
        dk_buf_puts(out, ", ");
        sql_logical_type_name(value, out);
        dk_buf_puts(out, ")");
        duckdb_destroy_logical_type(&key);
        duckdb_destroy_logical_type(&value);
        break;
    }
    case DUCKDB_TYPE_STRUCT: {
        dk_buf_puts(out, "STRUCT(");
        idx_t n = duckdb_struct_type_child_count(lt);
        for (idx_t i = 0; i < n; i++) {
            char *name = duckdb_struct_type_child_name(lt, i);
            duckdb_logical_type ct = duckdb_struct_type_child_type(lt, i);
            if (i) dk_buf_puts(out, ", ");
            dk_buf_printf(out, "%s ", name ? name : "?");
            sql_logical_type_name(ct, out);
            duckdb_free(name);
            duckdb_destroy_logical_type(&ct);
        }
        dk_buf_puts(out, ")");
        break;
    }
    case DUCKDB_TYPE_DECIMAL:
        dk_buf_printf(out, "DECIMAL(%u,%u)", (unsigned)duckdb_decimal_width(lt), (unsigned)duckdb_decimal_scale(lt));
        break;
    default:
        dk_buf_puts(out, sql_type_name(t));
    }
    if (child) duckdb_destroy_logical_type(&child);
}

static duckdb_value sql_vector_value(duckdb_vector v, duckdb_logical_type lt, idx_t row);

/* The values of child[offset .. offset+n), or NULL when out of memory (destroyed with
 * sql_values_free). */
static duckdb_value *sql_child_values(duckdb_vector child, duckdb_logical_type ct, idx_t offset, idx_t n)
{
    duckdb_value *values = dk_calloc(n ? n : 1, sizeof *values);
    if (!values) return NULL;
    for (idx_t i = 0; i < n; i++) values[i] = sql_vector_value(child, ct, offset + i);
    return values;
}

static void sql_values_free(duckdb_value *values, idx_t n)
{
    for (idx_t i = 0; values && i < n; i++)
        if (values[i]) duckdb_destroy_value(&values[i]);
    dk_free(values);
}

static duckdb_value sql_decimal_value(const void *data, duckdb_logical_type lt, idx_t row)
{
    duckdb_decimal d = {.width = duckdb_decimal_width(lt), .scale = duckdb_decimal_scale(lt)};
    int64_t small = 0;
    switch (duckdb_decimal_internal_type(lt)) {
    case DUCKDB_TYPE_SMALLINT: small = ((const int16_t *)data)[row]; break;
    case DUCKDB_TYPE_INTEGER: small = ((const int32_t *)data)[row]; break;
    case DUCKDB_TYPE_BIGINT: small = ((const int64_t *)data)[row]; break;
    default: d.value = ((const duckdb_hugeint *)data)[row]; return duckdb_create_decimal(d);
    }
    d.value.lower = (uint64_t)small;
    d.value.upper = small < 0 ? -1 : 0;
    return duckdb_create_decimal(d);
}

static duckdb_value sql_vector_value(duckdb_vector v, duckdb_logical_type lt, idx_t row)
{
    uint64_t *validity = duckdb_vector_get_validity(v);
    if (validity && !duckdb_validity_row_is_valid(validity, row)) return duckdb_create_null_value();
    const void *data = duckdb_vector_get_data(v);
    duckdb_type t = duckdb_get_type_id(lt);
    switch (t) {
    case DUCKDB_TYPE_BOOLEAN: return duckdb_create_bool(((const bool *)data)[row]);
    case DUCKDB_TYPE_TINYINT: return duckdb_create_int8(((const int8_t *)data)[row]);
    case DUCKDB_TYPE_SMALLINT: return duckdb_create_int16(((const int16_t *)data)[row]);
    case DUCKDB_TYPE_INTEGER: return duckdb_create_int32(((const int32_t *)data)[row]);
    case DUCKDB_TYPE_BIGINT: return duckdb_create_int64(((const int64_t *)data)[row]);
    case DUCKDB_TYPE_UTINYINT: return duckdb_create_uint8(((const uint8_t *)data)[row]);
    case DUCKDB_TYPE_USMALLINT: return duckdb_create_uint16(((const uint16_t *)data)[row]);
    case DUCKDB_TYPE_UINTEGER: return duckdb_create_uint32(((const uint32_t *)data)[row]);
    case DUCKDB_TYPE_UBIGINT: return duckdb_create_uint64(((const uint64_t *)data)[row]);
    case DUCKDB_TYPE_HUGEINT: return duckdb_create_hugeint(((const duckdb_hugeint *)data)[row]);
    case DUCKDB_TYPE_UHUGEINT: return duckdb_create_uhugeint(((const duckdb_uhugeint *)data)[row]);
    case DUCKDB_TYPE_FLOAT: return duckdb_create_float(((const float *)data)[row]);
    case DUCKDB_TYPE_DOUBLE: return duckdb_create_double(((const double *)data)[row]);
    case DUCKDB_TYPE_DATE: return duckdb_create_date(((const duckdb_date *)data)[row]);
    case DUCKDB_TYPE_TIME: return duckdb_create_time(((const duckdb_time *)data)[row]);
    case DUCKDB_TYPE_TIME_TZ: return duckdb_create_time_tz_value(((const duckdb_time_tz *)data)[row]);
    case DUCKDB_TYPE_TIMESTAMP: return duckdb_create_timestamp(((const duckdb_timestamp *)data)[row]);
    case DUCKDB_TYPE_TIMESTAMP_TZ: return duckdb_create_timestamp_tz(((const duckdb_timestamp *)data)[row]);
    case DUCKDB_TYPE_TIMESTAMP_S: return duckdb_create_timestamp_s(((const duckdb_timestamp_s *)data)[row]);
    case DUCKDB_TYPE_TIMESTAMP_MS: return duckdb_create_timestamp_ms(((const duckdb_timestamp_ms *)data)[row]);
    case DUCKDB_TYPE_TIMESTAMP_NS: return duckdb_create_timestamp_ns(((const duckdb_timestamp_ns *)data)[row]);
    case DUCKDB_TYPE_INTERVAL: return duckdb_create_interval(((const duckdb_interval *)data)[row]);
    case DUCKDB_TYPE_DECIMAL: return sql_decimal_value(data, lt, row);
    case DUCKDB_TYPE_UUID: {
        /* stored as a HUGEINT with the top bit flipped (so that they sort as text) */
        duckdb_hugeint h = ((const duckdb_hugeint *)data)[row];
        duckdb_uhugeint u = {.lower = h.lower, .upper = (uint64_t)h.upper ^ ((uint64_t)1 << 63)};
        return duckdb_create_uuid(u);
    }
    case DUCKDB_TYPE_VARCHAR: {
        duckdb_string_t s = ((const duckdb_string_t *)data)[row];
        return duckdb_create_varchar_length(duckdb_string_t_data(&s), duckdb_string_t_length(s));
    }
    case DUCKDB_TYPE_BLOB: {
        duckdb_string_t s = ((const duckdb_string_t *)data)[row];
        return duckdb_create_blob((const uint8_t *)duckdb_string_t_data(&s), duckdb_string_t_length(s));
    }
    case DUCKDB_TYPE_ENUM: {
        uint64_t index;
        switch (duckdb_enum_internal_type(lt)) {
        case DUCKDB_TYPE_UTINYINT: index = ((const uint8_t *)data)[row]; break;
        case DUCKDB_TYPE_USMALLINT: index = ((const uint16_t *)data)[row]; break;
        default: index = ((const uint32_t *)data)[row]; break;
        }
        return duckdb_create_enum_value(lt, index);
    }
    case DUCKDB_TYPE_LIST: {
        duckdb_list_entry e = ((const duckdb_list_entry *)data)[row];
        duckdb_logical_type ct = duckdb_list_type_child_type(lt);
        duckdb_value *values = sql_child_values(duckdb_list_vector_get_child(v), ct, e.offset, e.length);
        duckdb_value out = values ? duckdb_create_list_value(ct, values, e.length) : NULL;
        sql_values_free(values, e.length);
        duckdb_destroy_logical_type(&ct);
        return out;
    }
    case DUCKDB_TYPE_ARRAY: {
        idx_t n = duckdb_array_type_array_size(lt);
        duckdb_logical_type ct = duckdb_array_type_child_type(lt);
        duckdb_value *values = sql_child_values(duckdb_array_vector_get_child(v), ct, row * n, n);
        duckdb_value out = values ? duckdb_create_array_value(ct, values, n) : NULL;
        sql_values_free(values, n);
        duckdb_destroy_logical_type(&ct);
        return out;
    }
    case DUCKDB_TYPE_STRUCT: {
        idx_t n = duckdb_struct_type_child_count(lt);
        duckdb_value *values = dk_calloc(n ? n : 1, sizeof *values);
        if (!values) return NULL;
        for (idx_t i = 0; i < n; i++) {
            duckdb_logical_type ct = duckdb_struct_type_child_type(lt, i);
            values[i] = sql_vector_value(duckdb_struct_vector_get_child(v, i), ct, row);
            duckdb_destroy_logical_type(&ct);
        }
        duckdb_value out = duckdb_create_struct_value(lt, values);
        sql_values_free(values, n);
        return out;
    }
    case DUCKDB_TYPE_MAP: {
        /* a LIST of STRUCT(key, value) */
        duckdb_list_entry e = ((const duckdb_list_entry *)data)[row];
        duckdb_vector entries = duckdb_list_vector_get_child(v);
        duckdb_logical_type kt = duckdb_map_type_key_type(lt), vt = duckdb_map_type_value_type(lt);
        duckdb_value *keys = sql_child_values(duckdb_struct_vector_get_child(entries, 0), kt, e.offset, e.length);
        duckdb_value *vals = sql_child_values(duckdb_struct_vector_get_child(entries, 1), vt, e.offset, e.length);
        duckdb_value out = keys && vals ? duckdb_create_map_value(lt, keys, vals, e.length) : NULL;
        sql_values_free(keys, e.length);
        sql_values_free(vals, e.length);
        duckdb_destroy_logical_type(&kt);
        duckdb_destroy_logical_type(&vt);
        return out;
    }
    default:
        return duckdb_create_varchar("(a value of an unsupported type)");
    }
}

/* The text of a top-level value: DuckDB's SQL literal without outer quotes and ::TYPE. */
static char *sql_value_text(duckdb_value value)
{
    char *s = value ? duckdb_value_to_string(value) : NULL;
    if (!s) return NULL;
    char *text = NULL;
    if (s[0] == '\'') {
        size_t i = 1;
        dk_buf b = {0};
        for (; s[i]; i++) {
            if (s[i] == '\'' && s[i + 1] == '\'') dk_buf_putc(&b, '\''), i++;
            else if (s[i] == '\'') break;
            else dk_buf_putc(&b, s[i]);
        }
        if (s[i] == '\'' && (s[i + 1] == '\0' || strncmp(s + i + 1, "::", 2) == 0))
            text = b.data ? dk_buf_detach(&b) : dk_strdup("");
        dk_buf_free(&b);
    }
    if (!text) text = dk_strdup(s);
    duckdb_free(s);
    return text;
}

/* Fills the cells of res (n_rows rows) from the chunks of r. */
static int sql_result_cells_from_chunks(duckdb_result *r, sql_result *res)
{
    size_t n_cols = res->n_cols, row = 0;
    duckdb_logical_type *types = dk_calloc(n_cols ? n_cols : 1, sizeof *types);
    if (!types) return -1;
    for (size_t c = 0; c < n_cols; c++) types[c] = duckdb_column_logical_type(r, c);
    int rc = 0;
    idx_t n_chunks = duckdb_result_chunk_count(*r);
    for (idx_t ci = 0; ci < n_chunks && row < res->n_rows && rc == 0; ci++) {
        duckdb_data_chunk chunk = duckdb_result_get_chunk(*r, ci);
        if (!chunk) break;
        idx_t n = duckdb_data_chunk_get_size(chunk);
        for (idx_t i = 0; i < n && row < res->n_rows && rc == 0; i++, row++) {
            for (size_t c = 0; c < n_cols && rc == 0; c++) {
                duckdb_vector v = duckdb_data_chunk_get_vector(chunk, c);
                uint64_t *validity = duckdb_vector_get_validity(v);
                if (validity && !duckdb_validity_row_is_valid(validity, i)) continue;
                duckdb_value value = sql_vector_value(v, types[c], i);
                char *text = sql_value_text(value);
                if (value) duckdb_destroy_value(&value);
                if (!text) rc = -1;
                res->cells[row * n_cols + c] = text;
            }
        }
        duckdb_destroy_data_chunk(&chunk);
    }
    for (size_t c = 0; c < n_cols; c++) duckdb_destroy_logical_type(&types[c]);
    dk_free(types);
    return rc;
}

/* Copies the first max_rows rows of a materialized result into our own object. */
static int sql_result_build(duckdb_result *r, size_t max_rows, sql_result **out, char *err)
{
    size_t n_cols = (size_t)duckdb_column_count(r);
    size_t n_all = (size_t)duckdb_row_count(r);
    sql_result *res = dk_calloc(1, sizeof *res);
    if (!res) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    res->n_rows = n_all < max_rows ? n_all : max_rows;
    res->truncated = n_all > max_rows;
    res->n_cols = n_cols;
    int any_nested = 0; /* read by chunks (see sql_result_cells_from_chunks) */
    size_t n_cells;
    if (dk_mul_size(res->n_rows, n_cols, &n_cells)) goto nomem;
    res->names = dk_calloc(n_cols ? n_cols : 1, sizeof *res->names);
    res->types = dk_calloc(n_cols ? n_cols : 1, sizeof *res->types);
    res->kinds = dk_calloc(n_cols ? n_cols : 1, sizeof *res->kinds);
    res->cells = dk_calloc(n_cells ? n_cells : 1, sizeof *res->cells);
    if (!res->names || !res->types || !res->kinds || !res->cells) goto nomem;
    for (size_t c = 0; c < n_cols; c++) {
        duckdb_type t = duckdb_column_type(r, c);
        const char *name = duckdb_column_name(r, c);
        res->names[c] = dk_strdup(name ? name : "");
        res->kinds[c] = sql_kind_of(t);
        if (sql_type_is_nested(t)) {
            duckdb_logical_type lt = duckdb_column_logical_type(r, c);
            dk_buf name_buf = {0};
            sql_logical_type_name(lt, &name_buf);
            duckdb_destroy_logical_type(&lt);
            res->types[c] = name_buf.failed ? NULL : dk_buf_detach(&name_buf);
            dk_buf_free(&name_buf);
            any_nested = 1;
        } else if (t == DUCKDB_TYPE_DECIMAL) {
            duckdb_logical_type lt = duckdb_column_logical_type(r, c);
            char tmp[48];
            snprintf(tmp, sizeof tmp, "DECIMAL(%u,%u)", (unsigned)duckdb_decimal_width(lt), (unsigned)duckdb_decimal_scale(lt));
            duckdb_destroy_logical_type(&lt);
            res->types[c] = dk_strdup(tmp);
        } else {
            res->types[c] = dk_strdup(sql_type_name(t));
        }
        if (!res->names[c] || !res->types[c]) goto nomem;
    }
    if (any_nested) {
        if (sql_result_cells_from_chunks(r, res) != 0) goto nomem;
        *out = res;
        return DK_OK;
    }
    for (size_t row = 0; row < res->n_rows; row++) {
        for (size_t c = 0; c < n_cols; c++) {
            if (duckdb_value_is_null(r, c, row)) continue;
            char *v = duckdb_value_varchar(r, c, row);
            char *copy = dk_strdup(v ? v : "");
            if (v) duckdb_free(v);
            if (!copy) goto nomem;
            res->cells[row * n_cols + c] = copy;
        }
    }
    *out = res;
    return DK_OK;
nomem:
    sql_result_free(res);
    return dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

int sql_query(sql_db *db, const char *sql, const sql_limits *limits, sql_result **out, char *err)
{
    *out = NULL;
    int rc = sql_check_query(db, sql, err);
    if (rc != DK_OK) return rc;
    size_t max_rows = limits && limits->max_rows ? limits->max_rows : SQL_DEFAULT_MAX_ROWS;
    uint32_t timeout_ms = limits ? limits->timeout_ms : 0;
    if (max_rows > (size_t)LLONG_MAX - 1) max_rows = (size_t)LLONG_MAX - 1;

    dk_buf wrapped = {0};
    dk_buf_puts(&wrapped, "SELECT * FROM (\n");
    dk_buf_append(&wrapped, sql, sql_body_length(sql));
    dk_buf_printf(&wrapped, "\n) AS dk_query LIMIT %zu", max_rows + 1);
    if (wrapped.failed) {
        dk_buf_free(&wrapped);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    duckdb_prepared_statement prepared = NULL;
    rc = sql_guard_prepare(db, wrapped.data, &prepared, err);
    dk_buf_free(&wrapped);
    if (rc != DK_OK) return rc;

    sql_watchdog w = {.conn = db->conn, .timeout_ms = timeout_ms};
    pthread_t thread;
    int watching = 0;
    if (timeout_ms) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_mutex_init(&w.mu, NULL);
        pthread_cond_init(&w.cv, &attr);
        pthread_condattr_destroy(&attr);
        if (pthread_create(&thread, NULL, sql_watchdog_main, &w) != 0) {
            pthread_cond_destroy(&w.cv);
            pthread_mutex_destroy(&w.mu);
            duckdb_destroy_prepare(&prepared);
            return dk_fail(err, DK_ERR_NOMEM, "cannot start the query watchdog");
        }
        watching = 1;
    }
    duckdb_result r;
    duckdb_state state = duckdb_execute_prepared(prepared, &r);
    int fired = 0;
    if (watching) {
        pthread_mutex_lock(&w.mu);
        w.done = 1;
        pthread_cond_signal(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(thread, NULL);
        fired = w.fired;
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
    }
    if (state == DuckDBError) {
        if (fired) rc = dk_fail(err, DK_ERR_LIMIT, "query timed out after %u ms", (unsigned)timeout_ms);
        else rc = sql_fail_duckdb(err, duckdb_result_error(&r));
    } else {
        rc = sql_result_build(&r, max_rows, out, err);
    }
    duckdb_destroy_result(&r);
    duckdb_destroy_prepare(&prepared);
    return rc;
}

/* ---- accessors ---- */

size_t sql_result_n_rows(const sql_result *res) { return res ? res->n_rows : 0; }
size_t sql_result_n_cols(const sql_result *res) { return res ? res->n_cols : 0; }
int sql_result_truncated(const sql_result *res) { return res ? res->truncated : 0; }

const char *sql_result_col_name(const sql_result *res, size_t i_col)
{
    return res && i_col < res->n_cols ? res->names[i_col] : NULL;
}

const char *sql_result_col_type_name(const sql_result *res, size_t i_col)
{
    return res && i_col < res->n_cols ? res->types[i_col] : NULL;
}

sql_kind sql_result_col_kind(const sql_result *res, size_t i_col)
{
    return res && i_col < res->n_cols ? res->kinds[i_col] : SQL_KIND_TEXT;
}

int sql_result_is_null(const sql_result *res, size_t i_row, size_t i_col)
{
    if (!res || i_row >= res->n_rows || i_col >= res->n_cols) return 0;
    return res->cells[i_row * res->n_cols + i_col] == NULL;
}

const char *sql_result_value(const sql_result *res, size_t i_row, size_t i_col)
{
    if (!res || i_row >= res->n_rows || i_col >= res->n_cols) return NULL;
    const char *v = res->cells[i_row * res->n_cols + i_col];
    return v ? v : "NULL";
}

/* ---- the user's own database: the shell (sql.h, "the shell and model calls inside SQL") ---- */

int sql_db_open_shell(sql_db **out, const char *path, int read_only, char *err)
{
    static const char *const read_only_file[] = {"access_mode", "READ_ONLY", NULL};
    static const char *const none[] = {NULL};
    int rc = sql_db_open_with(out, path, read_only ? read_only_file : none, path && read_only, err);
    if (rc == DK_OK) (*out)->is_shell = 1;
    return rc;
}

int sql_db_connect_more(sql_db *db, sql_db **out, char *err)
{
    *out = NULL;
    if (!db) return dk_fail(err, DK_ERR_ARG, "missing database");
    /* seal first, so that the new handle never needs to (the seal is database-wide) */
    int rc = sql_db_seal(db, err);
    if (rc != DK_OK) return rc;
    sql_db *more = dk_calloc(1, sizeof *more);
    if (!more) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    more->database = db->database;
    more->borrows_database = 1;
    more->is_file = db->is_file;
    more->sealed = db->sealed;
    more->is_shell = db->is_shell;
    if (duckdb_connect(db->database, &more->conn) == DuckDBError) {
        sql_db_free(more);
        return dk_fail(err, DK_ERR_IO, "cannot open a second connection to the database");
    }
    *out = more;
    return DK_OK;
}

struct _duckdb_connection *sql_db_duckdb_connection(sql_db *db) { return db ? db->conn : NULL; }

int sql_db_attach_functions(sql_db *db, sql_functions *fns, char *err)
{
    if (!db || db->borrows_database) return dk_fail(err, DK_ERR_ARG, "functions need a database of their own");
    if (db->functions) return dk_fail(err, DK_ERR_ARG, "the model functions are registered on this database already");
    db->functions = fns;
    return DK_OK;
}

void sql_db_interrupt(sql_db *db)
{
    if (!db) return;
    atomic_store(&db->interrupted, 1);
    duckdb_interrupt(db->conn);
    if (db->functions) sql_functions_cancel(db->functions, 1);
}

/* Runs the prepared statement i_statement of sql_exec and hands its rows on. */
static int sql_exec_one(sql_db *db, duckdb_extracted_statements extracted, size_t i_statement, size_t max_rows,
                        sql_result_fn on_result, void *user, char *err)
{
    duckdb_prepared_statement prepared = NULL;
    if (duckdb_prepare_extracted_statement(db->conn, extracted, i_statement, &prepared) == DuckDBError) {
        const char *why = duckdb_prepare_error(prepared);
        int rc = sql_fail_duckdb(err, why ? why : "the statement could not be prepared");
        duckdb_destroy_prepare(&prepared);
        return rc;
    }
    duckdb_result r;
    int rc = DK_OK;
    if (duckdb_execute_prepared(prepared, &r) == DuckDBError) {
        rc = sql_fail_duckdb(err, duckdb_result_error(&r));
    } else if (on_result && duckdb_result_return_type(r) == DUCKDB_RESULT_TYPE_QUERY_RESULT) {
        sql_result *res = NULL;
        rc = sql_result_build(&r, max_rows, &res, err);
        if (rc == DK_OK) rc = on_result(user, i_statement, res, err);
        sql_result_free(res);
    }
    duckdb_destroy_result(&r);
    duckdb_destroy_prepare(&prepared);
    return rc;
}

int sql_exec(sql_db *db, const char *text, size_t max_rows, sql_result_fn on_result, void *user, char *err)
{
    if (!db || !text) return dk_fail(err, DK_ERR_ARG, "missing database or statements");
    if (!max_rows) max_rows = SQL_EXEC_DEFAULT_MAX_ROWS;
    atomic_store(&db->interrupted, 0);
    if (db->functions) sql_functions_cancel(db->functions, 0);
    duckdb_extracted_statements extracted = NULL;
    size_t n = (size_t)duckdb_extract_statements(db->conn, text, &extracted);
    int rc = DK_OK;
    if (n == 0) {
        const char *why = extracted ? duckdb_extract_statements_error(extracted) : NULL;
        if (why) rc = sql_fail_duckdb(err, why);
    }
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        /* statements are prepared one at a time: each sees what the ones before it made */
        if (atomic_load(&db->interrupted)) rc = dk_fail(err, DK_ERR_LIMIT, "interrupted");
        else rc = sql_exec_one(db, extracted, i, max_rows, on_result, user, err);
    }
    duckdb_destroy_extracted(&extracted);
    return rc;
}
