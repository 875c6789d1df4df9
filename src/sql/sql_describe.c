/*
 * sql_describe.c: the compact schema description a model reads before writing SQL (tables and
 * views, row counts, columns with types and keys, a few sample values of text columns), and
 * the choice of the most relevant tables when there are too many (the rule is in sql.h).
 * Everything is read through sql_query, i.e. through the same read-only guard as user SQL,
 * from DuckDB's catalog functions duckdb_tables(), duckdb_views(), duckdb_columns() and
 * duckdb_constraints(). The table list and the relevance choice are shared with sql_grammar.c
 * through sql_internal.h. Also the SQL-text helpers of sql.h (quoting, DuckDB's errors as one
 * line) that this module and rag/ use.
 */
#include "sql/sql_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define SQL_SAMPLE_MAX_CHARS 40
#define SQL_WORD_MAX 32
#define SQL_QUESTION_WORDS_MAX 64

void sql_put_literal(dk_buf *b, const char *s)
{
    dk_buf_putc(b, '\'');
    for (; *s; s++) {
        if (*s == '\'') dk_buf_putc(b, '\'');
        dk_buf_putc(b, *s);
    }
    dk_buf_putc(b, '\'');
}

void sql_put_ident(dk_buf *b, const char *s)
{
    dk_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"') dk_buf_putc(b, '"');
        dk_buf_putc(b, *s);
    }
    dk_buf_putc(b, '"');
}

void sql_error_line(const char *message, int keep_query, dk_buf *out)
{
    const char *p = message ? message : "unknown DuckDB error";
    size_t start = out->len;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        size_t blank = strspn(p, " ^");
        if (n > 0 && blank < n && (keep_query || strncmp(p, "LINE ", 5) != 0)) {
            if (out->len > start) dk_buf_putc(out, ' ');
            dk_buf_append(out, p, n);
        }
        p += n + (eol != NULL);
    }
    if (out->len == start) dk_buf_puts(out, "unknown DuckDB error");
}

int sql_run_built(sql_db *db, dk_buf *b, size_t max_rows, sql_result **out, char *err)
{
    int rc;
    if (b->failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else rc = sql_query(db, b->data, &(sql_limits){.max_rows = max_rows, .timeout_ms = SQL_CATALOG_TIMEOUT_MS}, out, err);
    dk_buf_free(b);
    return rc;
}

/* ---- relevance ---- */

/* Reads the next word (letters and digits, lowercased, cut to SQL_WORD_MAX-1) from *p. */
static int sql_next_word(const char **p, char word[SQL_WORD_MAX])
{
    const unsigned char *s = (const unsigned char *)*p;
    while (*s && !isalnum(*s)) s++;
    if (!*s) return 0;
    size_t n = 0;
    for (; *s && isalnum(*s); s++)
        if (n < SQL_WORD_MAX - 1) word[n++] = (char)tolower(*s);
    word[n] = '\0';
    *p = (const char *)s;
    return 1;
}

static int sql_words_match(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    size_t shorter = na < nb ? na : nb;
    if (na == nb) return strcmp(a, b) == 0;
    return shorter >= 3 && strncmp(a, b, shorter) == 0;
}

static int sql_text_has_word(const char *text, const char *word)
{
    char w[SQL_WORD_MAX];
    while (sql_next_word(&text, w))
        if (sql_words_match(w, word)) return 1;
    return 0;
}

static int sql_table_score(const sql_table_info *t, const char *question)
{
    char words[SQL_QUESTION_WORDS_MAX][SQL_WORD_MAX];
    int n_words = 0, score = 0;
    char w[SQL_WORD_MAX];
    while (n_words < SQL_QUESTION_WORDS_MAX && sql_next_word(&question, w)) {
        if (strlen(w) < 3) continue;
        int seen = 0;
        for (int i = 0; i < n_words && !seen; i++) seen = strcmp(words[i], w) == 0;
        if (seen) continue;
        memcpy(words[n_words++], w, sizeof w);
        int hit = sql_text_has_word(t->name, w);
        for (size_t c = 0; !hit && c < sql_result_n_rows(t->columns); c++)
            hit = sql_text_has_word(sql_result_value(t->columns, c, 0), w);
        score += hit;
    }
    return score;
}

static int sql_by_relevance(const void *pa, const void *pb)
{
    const sql_table_info *a = *(sql_table_info *const *)pa, *b = *(sql_table_info *const *)pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->i_order < b->i_order ? -1 : a->i_order > b->i_order;
}

int sql_tables_choose(sql_table_info *tables, size_t n, const char *question, int max_tables)
{
    if (max_tables <= 0 || n <= (size_t)max_tables) {
        for (size_t i = 0; i < n; i++) tables[i].keep = 1;
        return 0;
    }
    sql_table_info **order = dk_malloc_array(n, sizeof *order);
    if (!order) return -1;
    for (size_t i = 0; i < n; i++) {
        tables[i].score = question ? sql_table_score(&tables[i], question) : 0;
        tables[i].keep = 0;
        order[i] = &tables[i];
    }
    qsort(order, n, sizeof *order, sql_by_relevance);
    for (size_t i = 0; i < (size_t)max_tables; i++) order[i]->keep = 1;
    dk_free(order);
    return 0;
}

/* ---- one table ---- */

static void sql_qualified(dk_buf *b, const sql_table_info *t)
{
    sql_put_ident(b, t->schema);
    dk_buf_putc(b, '.');
    sql_put_ident(b, t->name);
}

static int sql_describe_keys(sql_db *db, const sql_table_info *t, sql_result **out, char *err)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "SELECT constraint_type, array_to_string(constraint_column_names, ', '), referenced_table, "
                    "array_to_string(referenced_column_names, ', '), len(constraint_column_names) "
                    "FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') AND schema_name = ");
    sql_put_literal(&b, t->schema);
    dk_buf_puts(&b, " AND table_name = ");
    sql_put_literal(&b, t->name);
    dk_buf_puts(&b, " ORDER BY constraint_index");
    return sql_run_built(db, &b, 1000, out, err);
}

/* Appends " PRIMARY KEY" / " REFERENCES t(c)" for the single-column keys on column. */
static void sql_put_column_keys(dk_buf *out, const sql_result *keys, const char *column)
{
    for (size_t k = 0; k < sql_result_n_rows(keys); k++) {
        if (strcmp(sql_result_value(keys, k, 4), "1") != 0 || strcmp(sql_result_value(keys, k, 1), column) != 0) continue;
        if (strcmp(sql_result_value(keys, k, 0), "PRIMARY KEY") == 0) dk_buf_puts(out, " PRIMARY KEY");
        else dk_buf_printf(out, " REFERENCES %s(%s)", sql_result_value(keys, k, 2), sql_result_value(keys, k, 3));
    }
}

static int sql_put_samples(sql_db *db, const sql_table_info *t, const char *column, int n_samples, dk_buf *out, char *err)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "SELECT DISTINCT ");
    sql_put_ident(&b, column);
    dk_buf_puts(&b, " AS v FROM ");
    sql_qualified(&b, t);
    dk_buf_puts(&b, " WHERE ");
    sql_put_ident(&b, column);
    dk_buf_printf(&b, " IS NOT NULL AND length(");
    sql_put_ident(&b, column);
    dk_buf_printf(&b, ") <= %d ORDER BY 1", SQL_SAMPLE_MAX_CHARS);
    sql_result *samples = NULL;
    int rc = sql_run_built(db, &b, (size_t)n_samples, &samples, err);
    if (rc != DK_OK) return rc;
    for (size_t s = 0; s < sql_result_n_rows(samples); s++) {
        dk_buf_puts(out, s ? ", " : "  -- e.g. ");
        dk_buf_putc(out, '\'');
        for (const char *p = sql_result_value(samples, s, 0); *p; p++)
            dk_buf_putc(out, (*p == '\n' || *p == '\r') ? ' ' : *p);
        dk_buf_putc(out, '\'');
    }
    sql_result_free(samples);
    return DK_OK;
}

static int sql_describe_table(sql_db *db, const sql_table_info *t, int n_samples, dk_buf *out, char *err)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "SELECT count(*) FROM ");
    sql_qualified(&b, t);
    sql_result *count = NULL, *keys = NULL;
    int rc = sql_run_built(db, &b, 1, &count, err);
    if (rc == DK_OK) rc = sql_describe_keys(db, t, &keys, err);
    if (rc != DK_OK) goto done;
    dk_buf_printf(out, "%s ", t->kind);
    if (strcmp(t->schema, "main") != 0) dk_buf_printf(out, "%s.", t->schema);
    dk_buf_printf(out, "%s (%s rows)\n", t->name, sql_result_value(count, 0, 0));
    for (size_t c = 0; c < sql_result_n_rows(t->columns); c++) {
        const char *name = sql_result_value(t->columns, c, 0), *type = sql_result_value(t->columns, c, 1);
        dk_buf_printf(out, "  %s %s", name, type);
        sql_put_column_keys(out, keys, name);
        if (n_samples > 0 && strcmp(type, "VARCHAR") == 0) {
            rc = sql_put_samples(db, t, name, n_samples, out, err);
            if (rc != DK_OK) goto done;
        }
        dk_buf_putc(out, '\n');
    }
    for (size_t k = 0; k < sql_result_n_rows(keys); k++) {
        if (strcmp(sql_result_value(keys, k, 4), "1") == 0) continue; /* shown on its column */
        if (strcmp(sql_result_value(keys, k, 0), "PRIMARY KEY") == 0)
            dk_buf_printf(out, "  PRIMARY KEY (%s)\n", sql_result_value(keys, k, 1));
        else
            dk_buf_printf(out, "  FOREIGN KEY (%s) REFERENCES %s(%s)\n", sql_result_value(keys, k, 1),
                          sql_result_value(keys, k, 2), sql_result_value(keys, k, 3));
    }
done:
    sql_result_free(count);
    sql_result_free(keys);
    return rc;
}

/* ---- the whole schema ---- */

void sql_tables_free(sql_table_info *tables, size_t n)
{
    for (size_t i = 0; tables && i < n; i++) {
        dk_free(tables[i].schema);
        dk_free(tables[i].name);
        dk_free(tables[i].kind);
        sql_result_free(tables[i].columns);
    }
    dk_free(tables);
}

int sql_tables_load(sql_db *db, sql_table_info **out, size_t *n_out, char *err)
{
    *out = NULL;
    *n_out = 0;
    sql_result *list = NULL;
    int rc = sql_query(db,
                       "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE NOT internal "
                       "UNION ALL SELECT schema_name, view_name, 'VIEW' FROM duckdb_views() WHERE NOT internal "
                       "ORDER BY 2, 1",
                       &(sql_limits){.max_rows = 100000, .timeout_ms = SQL_CATALOG_TIMEOUT_MS}, &list, err);
    if (rc != DK_OK) return rc;
    size_t n = sql_result_n_rows(list);
    sql_table_info *tables = dk_calloc(n ? n : 1, sizeof *tables);
    if (!tables) {
        sql_result_free(list);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        sql_table_info *t = &tables[i];
        t->schema = dk_strdup(sql_result_value(list, i, 0));
        t->name = dk_strdup(sql_result_value(list, i, 1));
        t->kind = dk_strdup(sql_result_value(list, i, 2));
        t->i_order = i;
        if (!t->schema || !t->name || !t->kind) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            break;
        }
        dk_buf b = {0};
        dk_buf_puts(&b, "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ");
        sql_put_literal(&b, t->schema);
        dk_buf_puts(&b, " AND table_name = ");
        sql_put_literal(&b, t->name);
        dk_buf_puts(&b, " ORDER BY column_index");
        rc = sql_run_built(db, &b, 100000, &t->columns, err);
    }
    sql_result_free(list);
    if (rc != DK_OK) {
        sql_tables_free(tables, n);
        return rc;
    }
    *out = tables;
    *n_out = n;
    return DK_OK;
}

int sql_describe(sql_db *db, const char *question, const sql_describe_opts *opts, dk_buf *out, char *err)
{
    if (!db || !out) return dk_fail(err, DK_ERR_ARG, "missing database or output");
    sql_describe_opts o = opts ? *opts : (sql_describe_opts){.n_samples = 3, .max_tables = 0};
    sql_table_info *tables = NULL;
    size_t n = 0;
    int rc = sql_tables_load(db, &tables, &n, err);
    if (rc != DK_OK) return rc;
    if (sql_tables_choose(tables, n, question, o.max_tables)) {
        sql_tables_free(tables, n);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    size_t n_left_out = 0;
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        if (!tables[i].keep) {
            n_left_out++;
            continue;
        }
        rc = sql_describe_table(db, &tables[i], o.n_samples, out, err);
    }
    if (rc == DK_OK && n_left_out) dk_buf_printf(out, "(%zu more tables not shown)\n", n_left_out);
    if (rc == DK_OK && out->failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    sql_tables_free(tables, n);
    return rc;
}
