/*
 * sql_render.c: a query result as a compact text table (for a prompt) and as JSON (for the
 * HTTP API and tool results). Uses only the accessors of sql.h; widths are counted in UTF-8
 * code points, which is what a reader (and roughly a tokenizer) sees.
 */
#include "sql/sql.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SQL_DEFAULT_CELL_WIDTH 40

/* Number of code points in s (continuation bytes 10xxxxxx are not counted). */
static size_t sql_utf8_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

/* Byte length of the first max_points code points of s. */
static size_t sql_utf8_prefix(const char *s, size_t max_points)
{
    size_t i = 0, n = 0;
    while (s[i]) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (n == max_points) break;
            n++;
        }
        i++;
    }
    return i;
}

/* The displayed width of a cell: cut to max_width points, "…" counted as one. */
static size_t sql_cell_width(const char *s, size_t max_width)
{
    size_t w = sql_utf8_width(s);
    return w > max_width ? max_width : w;
}

/* Appends a cell cut to max_width points (newlines and tabs as spaces), padded to pad_to. */
static void sql_put_cell(dk_buf *out, const char *s, size_t max_width, size_t pad_to)
{
    size_t w = sql_utf8_width(s);
    size_t n_bytes = w > max_width ? sql_utf8_prefix(s, max_width - 1) : strlen(s);
    for (size_t i = 0; i < n_bytes; i++) {
        char c = s[i];
        dk_buf_putc(out, (c == '\n' || c == '\r' || c == '\t') ? ' ' : c);
    }
    if (w > max_width) dk_buf_puts(out, "\xE2\x80\xA6");
    for (size_t shown = w > max_width ? max_width : w; shown < pad_to; shown++) dk_buf_putc(out, ' ');
}

int sql_result_table(const sql_result *res, dk_buf *out, size_t max_cell_width)
{
    if (!max_cell_width) max_cell_width = SQL_DEFAULT_CELL_WIDTH;
    if (max_cell_width < 2) max_cell_width = 2;
    size_t n_rows = sql_result_n_rows(res), n_cols = sql_result_n_cols(res);
    size_t *widths = dk_calloc(n_cols ? n_cols : 1, sizeof *widths);
    if (!widths) {
        out->failed = 1;
        return -1;
    }
    for (size_t c = 0; c < n_cols; c++) {
        widths[c] = sql_cell_width(sql_result_col_name(res, c), max_cell_width);
        for (size_t r = 0; r < n_rows; r++) {
            size_t w = sql_cell_width(sql_result_value(res, r, c), max_cell_width);
            if (w > widths[c]) widths[c] = w;
        }
    }
    for (size_t r = 0; r <= n_rows; r++) { /* r == 0 is the header */
        for (size_t c = 0; c < n_cols; c++) {
            if (c) dk_buf_puts(out, " | ");
            const char *s = r ? sql_result_value(res, r - 1, c) : sql_result_col_name(res, c);
            sql_put_cell(out, s, max_cell_width, c + 1 < n_cols ? widths[c] : 0); /* no trailing pad */
        }
        dk_buf_putc(out, '\n');
    }
    if (sql_result_truncated(res)) dk_buf_printf(out, "(first %zu rows shown, more were cut)\n", n_rows);
    dk_free(widths);
    return out->failed ? -1 : 0;
}

/* One cell as JSON: numbers stay numbers where JSON can hold them exactly enough. */
static json_t *sql_cell_json(const sql_result *res, size_t r, size_t c)
{
    if (sql_result_is_null(res, r, c)) return json_null();
    const char *s = sql_result_value(res, r, c);
    char *end = NULL;
    switch (sql_result_col_kind(res, c)) {
    case SQL_KIND_INTEGER: {
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno == 0 && end != s && *end == '\0') return json_integer(v);
        break; /* beyond int64 (HUGEINT, UBIGINT): text */
    }
    case SQL_KIND_REAL: {
        double v = strtod(s, &end);
        if (end != s && *end == '\0' && isfinite(v)) return json_real(v);
        break;
    }
    case SQL_KIND_BOOL:
        return json_boolean(strcmp(s, "true") == 0);
    case SQL_KIND_TEXT:
        break;
    }
    json_t *text = json_string(s);
    return text ? text : json_string("(invalid UTF-8)");
}

json_t *sql_result_json(const sql_result *res)
{
    json_t *root = json_object(), *columns = json_array(), *rows = json_array();
    if (!root || !columns || !rows) {
        json_decref(root); /* NULL-safe */
        json_decref(columns);
        json_decref(rows);
        return NULL;
    }
    /* json_object_set_new takes the reference even when it fails. */
    if (json_object_set_new(root, "columns", columns)) {
        json_decref(rows);
        goto fail;
    }
    if (json_object_set_new(root, "rows", rows) ||
        json_object_set_new(root, "truncated", json_boolean(sql_result_truncated(res))))
        goto fail;
    size_t n_rows = sql_result_n_rows(res), n_cols = sql_result_n_cols(res);
    for (size_t c = 0; c < n_cols; c++) {
        json_t *col = json_pack("{s:s, s:s}", "name", sql_result_col_name(res, c), "type", sql_result_col_type_name(res, c));
        if (!col || json_array_append_new(columns, col)) goto fail;
    }
    for (size_t r = 0; r < n_rows; r++) {
        json_t *row = json_array();
        if (!row || json_array_append_new(rows, row)) goto fail;
        for (size_t c = 0; c < n_cols; c++) {
            json_t *cell = sql_cell_json(res, r, c);
            if (!cell || json_array_append_new(row, cell)) goto fail;
        }
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}
