/*
 * sql_shell.c: what `duckling sql` shows and reads that is not DuckDB's own work: a result as
 * DuckDB's shell draws it (the "box" mode) and as JSON rows (its `.mode json`), and whether the
 * lines typed so far end a statement. Uses only the accessors of sql.h; widths are counted in
 * UTF-8 code points. Not for: running statements (sql.c's sql_exec) or the terminal (cli/).
 */
#include "sql/sql_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---- the box ---- */

/* Code points of s[0..n). */
static size_t sql_utf8_points(const char *s, size_t n)
{
    size_t points = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) points++;
    return points;
}

/* Bytes of the first max_points code points of s[0..n). */
static size_t sql_utf8_bytes(const char *s, size_t n, size_t max_points)
{
    size_t points = 0, i = 0;
    for (; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (points == max_points) break;
            points++;
        }
    }
    return i;
}

/* The line i_line of a cell (lines split at '\n'), as a pointer and length; 0 past the end. */
static int sql_cell_line(const char *s, size_t i_line, const char **line, size_t *n)
{
    for (size_t i = 0; i < i_line; i++) {
        s = strchr(s, '\n');
        if (!s) return 0;
        s++;
    }
    const char *eol = strchr(s, '\n');
    *line = s;
    *n = eol ? (size_t)(eol - s) : strlen(s);
    if (*n && s[*n - 1] == '\r') (*n)--;
    return 1;
}

/* Lines of a cell, not counting the empty ones a trailing newline makes (a model's answer
 * often ends with one). */
static size_t sql_cell_n_lines(const char *s)
{
    size_t n = 1, len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r')) len--;
    for (size_t i = 0; i < len; i++) n += s[i] == '\n';
    return n;
}

/* Width of a cell line, cut to max_width (0: no limit). */
static size_t sql_line_width(const char *line, size_t n, size_t max_width)
{
    size_t w = sql_utf8_points(line, n);
    return max_width && w > max_width ? max_width : w;
}

/* Appends a cell line cut to max_width with "…" (tabs and stray control bytes as spaces). */
static size_t sql_put_line(dk_buf *out, const char *line, size_t n, size_t max_width)
{
    size_t w = sql_utf8_points(line, n);
    int cut = max_width && w > max_width;
    size_t n_bytes = cut ? sql_utf8_bytes(line, n, max_width - 1) : n;
    for (size_t i = 0; i < n_bytes; i++) {
        unsigned char c = (unsigned char)line[i];
        dk_buf_putc(out, c < 0x20 ? ' ' : (char)c);
    }
    if (cut) dk_buf_puts(out, "\xE2\x80\xA6");
    return cut ? max_width : w;
}

static void sql_pad(dk_buf *out, size_t n)
{
    for (size_t i = 0; i < n; i++) dk_buf_putc(out, ' ');
}

/* A frame line: left, then per column width+2 horizontal bars, joined by mid, then right. */
static void sql_frame(dk_buf *out, const size_t *widths, size_t n_cols, const char *left, const char *mid,
                      const char *right)
{
    dk_buf_puts(out, left);
    for (size_t c = 0; c < n_cols; c++) {
        if (c) dk_buf_puts(out, mid);
        for (size_t i = 0; i < widths[c] + 2; i++) dk_buf_puts(out, "\xE2\x94\x80"); /* ─ */
    }
    dk_buf_puts(out, right);
    dk_buf_putc(out, '\n');
}

#define SQL_BOX_V "\xE2\x94\x82" /* │ */

/* One header line of centred texts (names or types). */
static void sql_header_line(dk_buf *out, const char *const *texts, const size_t *widths, size_t n_cols,
                            size_t max_width)
{
    for (size_t c = 0; c < n_cols; c++) {
        dk_buf_puts(out, SQL_BOX_V " ");
        size_t n = strlen(texts[c]);
        size_t w = sql_line_width(texts[c], n, max_width);
        size_t left = (widths[c] - w) / 2;
        sql_pad(out, left);
        sql_put_line(out, texts[c], n, max_width);
        sql_pad(out, widths[c] - w - left);
        dk_buf_putc(out, ' ');
    }
    dk_buf_puts(out, SQL_BOX_V "\n");
}

/* The lowercase type name of column c, into buf. */
static const char *sql_type_lower(const sql_result *res, size_t c, char *buf, size_t size)
{
    const char *t = sql_result_col_type_name(res, c);
    size_t i = 0;
    for (; t && t[i] && i + 1 < size; i++) buf[i] = (char)tolower((unsigned char)t[i]);
    buf[i] = '\0';
    return buf;
}

int sql_result_box(const sql_result *res, dk_buf *out, size_t max_cell_width)
{
    size_t n_rows = sql_result_n_rows(res), n_cols = sql_result_n_cols(res);
    if (n_cols == 0) return out->failed ? -1 : 0;
    if (max_cell_width == 1) max_cell_width = 2; /* room for one point and the ellipsis */
    size_t *widths = dk_calloc(n_cols, sizeof *widths);
    const char **names = dk_calloc(n_cols, sizeof *names);
    char (*types)[48] = dk_calloc(n_cols, sizeof *types);
    const char **types_p = dk_calloc(n_cols, sizeof *types_p);
    if (!widths || !names || !types || !types_p) {
        out->failed = 1;
        goto done;
    }
    for (size_t c = 0; c < n_cols; c++) {
        names[c] = sql_result_col_name(res, c);
        types_p[c] = sql_type_lower(res, c, types[c], sizeof types[c]);
        size_t wn = sql_line_width(names[c], strlen(names[c]), max_cell_width);
        size_t wt = sql_line_width(types_p[c], strlen(types_p[c]), max_cell_width);
        widths[c] = wn > wt ? wn : wt;
        for (size_t r = 0; r < n_rows; r++) {
            const char *v = sql_result_value(res, r, c), *line;
            size_t n;
            for (size_t i = 0; sql_cell_line(v, i, &line, &n); i++) {
                size_t w = sql_line_width(line, n, max_cell_width);
                if (w > widths[c]) widths[c] = w;
            }
        }
    }
    sql_frame(out, widths, n_cols, "\xE2\x94\x8C", "\xE2\x94\xAC", "\xE2\x94\x90"); /* ┌ ┬ ┐ */
    sql_header_line(out, names, widths, n_cols, max_cell_width);
    sql_header_line(out, types_p, widths, n_cols, max_cell_width);
    sql_frame(out, widths, n_cols, "\xE2\x94\x9C", "\xE2\x94\xBC", "\xE2\x94\xA4"); /* ├ ┼ ┤ */
    for (size_t r = 0; r < n_rows; r++) {
        size_t n_lines = 1;
        for (size_t c = 0; c < n_cols; c++) {
            size_t n = sql_cell_n_lines(sql_result_value(res, r, c));
            if (n > n_lines) n_lines = n;
        }
        for (size_t i_line = 0; i_line < n_lines; i_line++) {
            for (size_t c = 0; c < n_cols; c++) {
                dk_buf_puts(out, SQL_BOX_V " ");
                const char *line = "";
                size_t n = 0;
                sql_cell_line(sql_result_value(res, r, c), i_line, &line, &n);
                size_t w = sql_line_width(line, n, max_cell_width);
                sql_kind kind = sql_result_col_kind(res, c);
                int right = (kind == SQL_KIND_INTEGER || kind == SQL_KIND_REAL) && !sql_result_is_null(res, r, c);
                if (right) sql_pad(out, widths[c] - w);
                sql_put_line(out, line, n, max_cell_width);
                if (!right) sql_pad(out, widths[c] - w);
                dk_buf_putc(out, ' ');
            }
            dk_buf_puts(out, SQL_BOX_V "\n");
        }
    }
    sql_frame(out, widths, n_cols, "\xE2\x94\x94", "\xE2\x94\xB4", "\xE2\x94\x98"); /* └ ┴ ┘ */
    if (sql_result_truncated(res)) dk_buf_printf(out, "(first %zu rows shown)\n", n_rows);
done:
    dk_free(widths);
    dk_free(names);
    dk_free(types);
    dk_free(types_p);
    return out->failed ? -1 : 0;
}

/* ---- JSON rows ---- */

/* A LIST or ARRAY value is DuckDB text such as [0.5, -1.0]: JSON when it parses as JSON
 * (lists of numbers do; lists of strings, written ['a', 'b'], do not), else the text. */
static json_t *sql_list_json(json_t *cell)
{
    const char *s = json_string_value(cell);
    if (!s || s[0] != '[') return cell;
    json_t *parsed = json_loads(s, JSON_DECODE_ANY, NULL);
    if (!parsed) return cell;
    json_decref(cell);
    return parsed;
}

int sql_result_json_rows(const sql_result *res, dk_buf *out)
{
    json_t *all = sql_result_json(res), *rows = json_array();
    json_t *cells = json_object_get(all, "rows");
    int rc = -1;
    if (!all || !rows) goto done;
    size_t n_cols = sql_result_n_cols(res), i_row;
    json_t *row;
    json_array_foreach(cells, i_row, row) {
        json_t *obj = json_object();
        if (!obj || json_array_append_new(rows, obj)) goto done;
        for (size_t c = 0; c < n_cols; c++) {
            json_t *cell = json_incref(json_array_get(row, c));
            const char *type = sql_result_col_type_name(res, c);
            size_t n_type = type ? strlen(type) : 0;
            if (n_type && type[n_type - 1] == ']') cell = sql_list_json(cell); /* FLOAT[], INTEGER[3] */
            if (!cell || json_object_set_new(obj, sql_result_col_name(res, c), cell)) goto done;
        }
    }
    char *text = json_dumps(rows, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!text) goto done;
    dk_buf_puts(out, text);
    dk_buf_putc(out, '\n');
    free(text); /* jansson's allocator */
    rc = out->failed ? -1 : 0;
done:
    json_decref(all);
    json_decref(rows);
    if (rc != 0) out->failed = 1;
    return rc;
}

/* ---- statement ends ---- */

int sql_text_complete(const char *text)
{
    char last = 0; /* last significant character outside strings and comments */
    for (const char *p = text; *p;) {
        int open;
        size_t n = sql_lex_skip(p, &open);
        if (open) return 0; /* an open string or comment */
        if (n) {
            if (*p == '\'' || *p == '"' || *p == '$') last = *p;
            p += n;
            continue;
        }
        if (!isspace((unsigned char)*p)) last = *p;
        p++;
    }
    return last == ';';
}
