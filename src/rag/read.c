/*
 * read.c: the readers of duckling ingest. They turn one file (text, Markdown, HTML, or a
 * CSV/TSV/Parquet/JSON data file) or one table of a DuckDB database into a rag_doc: a list of
 * blocks (headings, paragraphs, rows) whose texts are plain UTF-8, each with where it came
 * from (byte offsets in the file, or row numbers). This file holds the checks every text file
 * passes first (size, binary, UTF-8, line length), the plain-text parser, the DuckDB readers
 * and the document builder; Markdown and HTML are read_markdown.c and read_html.c.
 * Not for: chunking (chunk.c), storing or embedding anything (store.c, ingest.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include "duckdb.h"
#pragma GCC diagnostic pop

#include "rag/read_internal.h"
#include "sql/sql.h"

#define RAG_DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define RAG_DEFAULT_MAX_LINE ((size_t)1 << 20)
#define RAG_DEFAULT_MAX_ROWS ((size_t)1000000)
#define RAG_SNIFF_BYTES 8192 /* binary detection looks at this much of the start */

/* ---- the document builder ---- */

void rag_builder_begin(rag_builder *b) { b->open_start = b->text.len; }

void rag_builder_append_lf(rag_builder *b, const char *text, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && text[j] != '\r') j++;
        dk_buf_append(&b->text, text + i, j - i);
        if (j == n) break;
        /* "\r\n" and a lone "\r" are both one line end */
        dk_buf_putc(&b->text, '\n');
        i = j + 1;
        if (i < n && text[i] == '\n') i++;
    }
}

int rag_builder_end(rag_builder *b, rag_block_kind kind, int level, int64_t loc_start, int64_t loc_end)
{
    if (b->text.failed) {
        b->failed = 1;
        return 0;
    }
    size_t start = b->open_start, end = b->text.len;
    size_t lead = start;
    while (lead < end && rag_is_space((unsigned char)b->text.data[lead])) lead++;
    while (end > lead && rag_is_space((unsigned char)b->text.data[end - 1])) end--;
    if (lead > start) memmove(b->text.data + start, b->text.data + lead, end - lead);
    end -= lead - start;
    b->text.len = end;
    if (b->text.data) b->text.data[end] = 0;
    if (end == start) return 0;
    if (b->n_blocks == b->cap_blocks) {
        size_t cap = b->cap_blocks ? b->cap_blocks * 2 : 64;
        rag_block *grown = dk_realloc(b->blocks, cap * sizeof *grown);
        if (!grown || cap < b->cap_blocks) {
            b->failed = 1;
            return 0;
        }
        b->blocks = grown;
        b->cap_blocks = cap;
    }
    b->blocks[b->n_blocks++] = (rag_block){
        .kind = kind,
        .level = level,
        .text_start = start,
        .text_end = end,
        .loc_start = loc_start,
        .loc_end = loc_end,
    };
    dk_buf_append(&b->text, "\n\n", 2);
    if (b->text.failed) b->failed = 1;
    return 1;
}

void rag_builder_free(rag_builder *b)
{
    dk_buf_free(&b->text);
    dk_free(b->blocks);
    memset(b, 0, sizeof *b);
}

int rag_builder_finish(rag_builder *b, const char *kind, const char *title, const char *unit, rag_doc **out,
                       char *err)
{
    *out = NULL;
    rag_doc *doc = dk_calloc(1, sizeof *doc);
    if (doc) {
        doc->kind = dk_strdup(kind);
        doc->title = title ? dk_strdup(title) : NULL;
        doc->unit = unit;
        doc->text_len = b->text.len;
        doc->text = b->text.data ? dk_buf_detach(&b->text) : dk_strdup("");
        doc->blocks = b->blocks;
        doc->n_blocks = b->n_blocks;
        b->blocks = NULL;
        b->n_blocks = b->cap_blocks = 0;
    }
    int failed = b->failed || b->text.failed || !doc || !doc->kind || !doc->text || (title && !doc->title);
    rag_builder_free(b);
    if (failed) {
        rag_doc_free(doc);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = doc;
    return DK_OK;
}

void rag_doc_free(rag_doc *doc)
{
    if (!doc) return;
    dk_free(doc->kind);
    dk_free(doc->title);
    dk_free(doc->text);
    dk_free(doc->blocks);
    dk_free(doc);
}

void rag_strings_free(char **list)
{
    if (!list) return;
    for (size_t i = 0; list[i]; i++) dk_free(list[i]);
    dk_free(list);
}

/* ---- limits and the checks of text files ---- */

static rag_read_limits rag_limits_or_default(const rag_read_limits *limits)
{
    rag_read_limits l = limits ? *limits : (rag_read_limits){0};
    if (!l.max_bytes) l.max_bytes = RAG_DEFAULT_MAX_BYTES;
    if (!l.max_line) l.max_line = RAG_DEFAULT_MAX_LINE;
    if (!l.max_rows) l.max_rows = RAG_DEFAULT_MAX_ROWS;
    return l;
}

/* Length of the valid UTF-8 sequence at s[0..n) (strict: no overlong forms, surrogates or
 * code points above U+10FFFF), or 0 when it is not one. */
static size_t rag_utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* C0 controls and DEL, except tab, line ends, form feed and ESC (ANSI colours in logs) */
static int rag_is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1b) || c == 0x7f;
}

/* The refusals of rag_read_file for text: binary, invalid UTF-8, a line too long. base is
 * the file offset of data[0], for the messages. */
static int rag_text_check(const char *data, size_t n, size_t base, const rag_read_limits *l, char *err)
{
    const unsigned char *s = (const unsigned char *)data;
    if (memchr(s, 0, n)) return dk_fail(err, DK_ERR_FORMAT, "binary file (a NUL byte)");
    size_t sniff = n < RAG_SNIFF_BYTES ? n : RAG_SNIFF_BYTES, n_control = 0;
    for (size_t i = 0; i < sniff; i++) n_control += rag_is_control(s[i]);
    if (sniff && n_control * 10 > sniff * 3) return dk_fail(err, DK_ERR_FORMAT, "binary file (mostly control bytes)");
    size_t line = 1, line_start = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] == '\n') {
            line++;
            line_start = i + 1;
            i++;
            continue;
        }
        if (i - line_start >= l->max_line && !(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
            return dk_fail(err, DK_ERR_LIMIT, "line %zu is longer than %zu bytes", line, l->max_line);
        size_t len = s[i] < 0x80 ? 1 : rag_utf8_sequence(s + i, n - i);
        if (!len) return dk_fail(err, DK_ERR_FORMAT, "invalid UTF-8 at byte %zu", base + i);
        i += len;
    }
    return DK_OK;
}

/* ---- plain text ---- */

static int rag_line_is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!rag_is_space((unsigned char)s[i])) return 0;
    return 1;
}

/* Paragraphs are runs of non-blank lines; each is one block, its loc the bytes from its first
 * to its last non-space character. */
int rag_parse_text(rag_builder *b, const char *data, size_t n, int64_t base)
{
    size_t i = 0;
    while (i < n) {
        /* skip blank lines */
        size_t para = SIZE_MAX, end = i;
        while (i < n) {
            const char *nl = memchr(data + i, '\n', n - i);
            size_t line_end = nl ? (size_t)(nl - data) : n;
            int blank = rag_line_is_blank(data + i, line_end - i);
            if (blank && para != SIZE_MAX) break;
            if (!blank) {
                if (para == SIZE_MAX) para = i;
                end = line_end;
            }
            i = nl ? line_end + 1 : n;
        }
        if (para == SIZE_MAX) break;
        while (rag_is_space((unsigned char)data[para])) para++;
        while (end > para && rag_is_space((unsigned char)data[end - 1])) end--;
        rag_builder_begin(b);
        rag_builder_append_lf(b, data + para, end - para);
        rag_builder_end(b, RAG_BLOCK_PARAGRAPH, 0, base + (int64_t)para, base + (int64_t)end);
    }
    return b->failed ? DK_ERR_NOMEM : DK_OK;
}

/* ---- kinds by extension ---- */

typedef enum rag_kind {
    RAG_KIND_TEXT,
    RAG_KIND_MARKDOWN,
    RAG_KIND_HTML,
    RAG_KIND_CSV,
    RAG_KIND_TSV,
    RAG_KIND_PARQUET,
    RAG_KIND_JSON,
} rag_kind;

static int rag_has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), m = strlen(ext);
    return n > m && strcasecmp(name + n - m, ext) == 0;
}

static rag_kind rag_kind_of(const char *name)
{
    if (rag_has_ext(name, ".md") || rag_has_ext(name, ".markdown")) return RAG_KIND_MARKDOWN;
    if (rag_has_ext(name, ".html") || rag_has_ext(name, ".htm")) return RAG_KIND_HTML;
    if (rag_has_ext(name, ".csv")) return RAG_KIND_CSV;
    if (rag_has_ext(name, ".tsv")) return RAG_KIND_TSV;
    if (rag_has_ext(name, ".parquet")) return RAG_KIND_PARQUET;
    if (rag_has_ext(name, ".json") || rag_has_ext(name, ".jsonl") || rag_has_ext(name, ".ndjson")) return RAG_KIND_JSON;
    return RAG_KIND_TEXT;
}

static const char *rag_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* ---- text, Markdown and HTML from memory ---- */

static int rag_read_text_kind(rag_kind kind, const char *data, size_t n, const rag_read_limits *limits, rag_doc **out,
                              char *err)
{
    *out = NULL;
    rag_read_limits l = rag_limits_or_default(limits);
    if (n > l.max_bytes) return dk_fail(err, DK_ERR_LIMIT, "file is larger than %zu bytes", l.max_bytes);
    size_t skip = n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    int rc = rag_text_check(data + skip, n - skip, skip, &l, err);
    if (rc) return rc;
    rag_builder b = {0};
    char *title = NULL;
    const char *name = "text";
    if (kind == RAG_KIND_MARKDOWN) {
        name = "markdown";
        rc = rag_parse_markdown(&b, data + skip, n - skip, (int64_t)skip, &title);
    } else if (kind == RAG_KIND_HTML) {
        name = "html";
        rc = rag_parse_html(&b, data + skip, n - skip, (int64_t)skip, &title);
    } else {
        rc = rag_parse_text(&b, data + skip, n - skip, (int64_t)skip);
    }
    if (rc == DK_OK) rc = rag_builder_finish(&b, name, title, "byte", out, err);
    else rc = dk_fail(err, rc, "out of memory");
    rag_builder_free(&b);
    dk_free(title);
    return rc;
}

int rag_read_buffer(const char *name, const char *data, size_t n, const rag_read_limits *limits, rag_doc **out,
                    char *err)
{
    *out = NULL;
    if (!name || (!data && n)) return dk_fail(err, DK_ERR_ARG, "missing name or data");
    rag_kind kind = rag_kind_of(name);
    if (kind != RAG_KIND_TEXT && kind != RAG_KIND_MARKDOWN && kind != RAG_KIND_HTML)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "%s: data files are read from disk, through DuckDB", name);
    return rag_read_text_kind(kind, data ? data : "", n, limits, out, err);
}

/* ---- DuckDB ---- */

/* DuckDB's message as one line, after what it was about. */
static int rag_fail_duckdb(char *err, const char *what, const char *message)
{
    dk_buf b = {0};
    sql_error_line(message, 0, &b);
    int rc = dk_fail(err, DK_ERR_FORMAT, "%s: %s", what, b.data ? b.data : "unknown DuckDB error");
    dk_buf_free(&b);
    return rc;
}

typedef struct rag_duck {
    duckdb_database db;
    duckdb_connection conn;
} rag_duck;

static void rag_duck_close(rag_duck *d)
{
    if (d->conn) duckdb_disconnect(&d->conn);
    if (d->db) duckdb_close(&d->db);
}

/* Opens path read-only (NULL: a fresh in-memory database). No extension is ever downloaded. */
static int rag_duck_open(rag_duck *d, const char *path, char *err)
{
    memset(d, 0, sizeof *d);
    if (path) {
        struct stat st;
        if (stat(path, &st) != 0)
            return dk_fail(err, errno == ENOENT ? DK_ERR_NOTFOUND : DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode)) return dk_fail(err, DK_ERR_IO, "%s is not a regular file", path);
    }
    duckdb_config config = NULL;
    if (duckdb_create_config(&config) == DuckDBError) return dk_fail(err, DK_ERR_NOMEM, "duckdb_create_config failed");
    int rc = DK_OK;
    char *open_error = NULL;
    if ((path && duckdb_set_config(config, "access_mode", "READ_ONLY") == DuckDBError) ||
        duckdb_set_config(config, "autoinstall_known_extensions", "false") == DuckDBError) {
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "DuckDB refused its configuration");
    } else if (duckdb_open_ext(path, &d->db, config, &open_error) == DuckDBError) {
        rc = rag_fail_duckdb(err, path ? path : ":memory:", open_error);
        d->db = NULL;
    } else if (duckdb_connect(d->db, &d->conn) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "cannot connect to %s", path ? path : ":memory:");
        d->conn = NULL;
    }
    if (open_error) duckdb_free(open_error);
    duckdb_destroy_config(&config);
    if (rc) rag_duck_close(d);
    return rc;
}

/* Runs sql into *r; on failure *r is destroyed and err holds DuckDB's message. */
static int rag_duck_query(rag_duck *d, const char *sql, const char *what, duckdb_result *r, char *err)
{
    if (duckdb_query(d->conn, sql, r) == DuckDBError) {
        int rc = rag_fail_duckdb(err, what, duckdb_result_error(r));
        duckdb_destroy_result(r);
        return rc;
    }
    return DK_OK;
}

/* Appends value to b, NUL bytes (which a VARCHAR may hold) as spaces. */
static void rag_append_value(dk_buf *b, const char *value, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *nul = memchr(value + i, 0, n - i);
        size_t j = nul ? (size_t)(nul - value) : n;
        dk_buf_append(b, value + i, j - i);
        if (j < n) dk_buf_putc(b, ' ');
        i = j + 1;
    }
}

/* Reads the rows of source (a FROM clause: a table function call or a quoted table name)
 * into b: each row one block "col: value; col: value" without its NULLs, loc its row number.
 * More than max_rows rows: DK_ERR_LIMIT (the file is skipped, not cut short). */
static int rag_duck_rows(rag_duck *d, const char *source, const char *what, size_t max_rows, rag_builder *b,
                         char *err)
{
    dk_buf sql = {0};
    duckdb_result names, values;
    /* the column names from a first query: the casts of the second would rename them */
    dk_buf_printf(&sql, "SELECT * FROM %s LIMIT 0", source);
    if (sql.failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = rag_duck_query(d, sql.data, what, &names, err);
    if (rc) {
        dk_buf_free(&sql);
        return rc;
    }
    idx_t n_cols = duckdb_column_count(&names);
    dk_buf_clear(&sql);
    dk_buf_printf(&sql, "SELECT CAST(COLUMNS(*) AS VARCHAR) FROM %s LIMIT %zu", source,
                  max_rows < SIZE_MAX ? max_rows + 1 : max_rows);
    rc = sql.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : rag_duck_query(d, sql.data, what, &values, err);
    dk_buf_free(&sql);
    if (rc) {
        duckdb_destroy_result(&names);
        return rc;
    }
    if (duckdb_column_count(&values) != n_cols) {
        rc = dk_fail(err, DK_ERR_FORMAT, "%s: the columns changed between two reads", what);
        goto done;
    }
    size_t row = 0;
    for (;;) {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(values);
        if (!chunk) break;
        idx_t n_rows = duckdb_data_chunk_get_size(chunk);
        if (row + n_rows > max_rows) {
            duckdb_destroy_data_chunk(&chunk);
            rc = dk_fail(err, DK_ERR_LIMIT, "%s has more than %zu rows", what, max_rows);
            goto done;
        }
        for (idx_t r = 0; r < n_rows; r++, row++) {
            rag_builder_begin(b);
            int first = 1;
            for (idx_t c = 0; c < n_cols; c++) {
                duckdb_vector vec = duckdb_data_chunk_get_vector(chunk, c);
                uint64_t *validity = duckdb_vector_get_validity(vec);
                if (validity && !duckdb_validity_row_is_valid(validity, r)) continue;
                duckdb_string_t *strings = (duckdb_string_t *)duckdb_vector_get_data(vec);
                if (!first) dk_buf_puts(&b->text, "; ");
                first = 0;
                const char *col = duckdb_column_name(&names, c);
                dk_buf_puts(&b->text, col ? col : "?");
                dk_buf_puts(&b->text, ": ");
                rag_append_value(&b->text, duckdb_string_t_data(&strings[r]), duckdb_string_t_length(strings[r]));
            }
            rag_builder_end(b, RAG_BLOCK_ROW, 0, (int64_t)row, (int64_t)row + 1);
        }
        duckdb_destroy_data_chunk(&chunk);
        if (b->failed) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
done:
    duckdb_destroy_result(&values);
    duckdb_destroy_result(&names);
    return rc;
}

/* The first byte that is not white space, or 0. */
static int rag_first_char(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int c;
    while ((c = fgetc(f)) != EOF && (rag_is_space((unsigned char)c) || c == 0xEF || c == 0xBB || c == 0xBF)) {
    }
    fclose(f);
    return c == EOF ? 0 : c;
}

static int rag_read_text_file(rag_kind kind, const char *path, const rag_read_limits *l, rag_doc **out, char *err)
{
    char *data = NULL;
    size_t n = 0;
    int rc = dk_file_read(path, l->max_bytes, &data, &n, err);
    if (rc == DK_ERR_LIMIT) return dk_fail(err, DK_ERR_LIMIT, "file is larger than %zu bytes", l->max_bytes);
    if (rc) return rc;
    rc = rag_read_text_kind(kind, data, n, l, out, err);
    dk_free(data);
    return rc;
}

/* DuckDB's readers take a path as a glob pattern: "a*.csv" would also read "ab.csv". A path
 * with a glob character is read through a link without one, "data.EXT" in a fresh directory
 * under $TMPDIR (or /tmp); alias receives the path to read (path itself when it is plain) and
 * dir the directory to remove afterwards ("" when none). */
#define RAG_ALIAS_DIR_MAX 4096
#define RAG_ALIAS_MAX (RAG_ALIAS_DIR_MAX + 64)

static int rag_glob_safe_path(const char *path, char alias[RAG_ALIAS_MAX], char dir[RAG_ALIAS_DIR_MAX], char *err)
{
    dir[0] = '\0';
    if (!strpbrk(path, "*?[]{}")) {
        if (dk_strlcpy(alias, path, RAG_ALIAS_MAX) >= RAG_ALIAS_MAX) return dk_fail(err, DK_ERR_ARG, "path too long: %s", path);
        return DK_OK;
    }
    const char *tmp = getenv("TMPDIR");
    int n_dir = snprintf(dir, RAG_ALIAS_DIR_MAX, "%s/duckling-read-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (n_dir < 0 || n_dir >= RAG_ALIAS_DIR_MAX) {
        dir[0] = '\0';
        return dk_fail(err, DK_ERR_ARG, "$TMPDIR is too long");
    }
    const char *dot = strrchr(rag_basename(path), '.');
    if (!dot || strlen(dot) > 16) dot = ""; /* the extension tells DuckDB the format */
    char *target = realpath(path, NULL);
    int rc = DK_OK;
    if (!target) rc = dk_fail(err, DK_ERR_IO, "cannot resolve %s: %s", path, strerror(errno));
    else if (!mkdtemp(dir)) rc = dk_fail(err, DK_ERR_IO, "cannot make a temporary directory: %s", strerror(errno));
    else {
        snprintf(alias, RAG_ALIAS_MAX, "%s/data%s", dir, dot);
        if (symlink(target, alias) != 0) {
            rc = dk_fail(err, DK_ERR_IO, "cannot link %s: %s", path, strerror(errno));
            rmdir(dir);
        }
    }
    if (rc != DK_OK) dir[0] = '\0';
    free(target); /* realpath's malloc */
    return rc;
}

static void rag_glob_safe_done(const char alias[RAG_ALIAS_MAX], const char dir[RAG_ALIAS_DIR_MAX])
{
    if (!dir[0]) return;
    unlink(alias);
    rmdir(dir);
}

/* A data file through DuckDB's readers; a JSON file they cannot read as rows is text. */
static int rag_read_data_file(rag_kind kind, const char *path, const rag_read_limits *l, rag_doc **out, char *err)
{
    if (kind == RAG_KIND_JSON) {
        int c = rag_first_char(path);
        if (c != '[' && c != '{') return rag_read_text_file(RAG_KIND_TEXT, path, l, out, err);
    }
    char alias[RAG_ALIAS_MAX], dir[RAG_ALIAS_DIR_MAX];
    int rc = rag_glob_safe_path(path, alias, dir, err);
    if (rc) return rc;
    rag_duck d;
    if ((rc = rag_duck_open(&d, NULL, err)) != DK_OK) {
        rag_glob_safe_done(alias, dir);
        return rc;
    }
    dk_buf source = {0};
    const char *kind_name = "csv";
    switch (kind) {
    case RAG_KIND_TSV: dk_buf_puts(&source, "read_csv_auto("); break;
    case RAG_KIND_PARQUET: dk_buf_puts(&source, "read_parquet("), kind_name = "parquet"; break;
    case RAG_KIND_JSON: dk_buf_puts(&source, "read_json_auto("), kind_name = "json"; break;
    default: dk_buf_puts(&source, "read_csv_auto("); break;
    }
    sql_put_literal(&source, alias);
    dk_buf_puts(&source, kind == RAG_KIND_TSV ? ", delim = '\t')" : ")");
    rag_builder b = {0};
    if (source.failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else rc = rag_duck_rows(&d, source.data, rag_basename(path), l->max_rows, &b, err);
    dk_buf_free(&source);
    rag_duck_close(&d);
    rag_glob_safe_done(alias, dir);
    if (rc == DK_ERR_FORMAT && kind == RAG_KIND_JSON) {
        rag_builder_free(&b);
        return rag_read_text_file(RAG_KIND_TEXT, path, l, out, err);
    }
    if (rc == DK_OK) rc = rag_builder_finish(&b, kind_name, rag_basename(path), "row", out, err);
    rag_builder_free(&b);
    return rc;
}

int rag_read_file(const char *path, const rag_read_limits *limits, rag_doc **out, char *err)
{
    *out = NULL;
    if (!path || !*path) return dk_fail(err, DK_ERR_ARG, "missing path");
    rag_read_limits l = rag_limits_or_default(limits);
    struct stat st;
    if (stat(path, &st) != 0)
        return dk_fail(err, errno == ENOENT ? DK_ERR_NOTFOUND : DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return dk_fail(err, DK_ERR_IO, "%s is not a regular file", path);
    if ((uint64_t)st.st_size > (uint64_t)l.max_bytes)
        return dk_fail(err, DK_ERR_LIMIT, "file is larger than %zu bytes", l.max_bytes);
    rag_kind kind = rag_kind_of(rag_basename(path));
    if (kind == RAG_KIND_TEXT || kind == RAG_KIND_MARKDOWN || kind == RAG_KIND_HTML)
        return rag_read_text_file(kind, path, &l, out, err);
    return rag_read_data_file(kind, path, &l, out, err);
}

int rag_read_table(const char *db_path, const char *table, const rag_read_limits *limits, rag_doc **out, char *err)
{
    *out = NULL;
    if (!db_path || !table || !*table) return dk_fail(err, DK_ERR_ARG, "missing database or table name");
    rag_read_limits l = rag_limits_or_default(limits);
    rag_duck d;
    int rc = rag_duck_open(&d, db_path, err);
    if (rc) return rc;
    dk_buf sql = {0};
    dk_buf_puts(&sql, "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                      "AND table_schema = 'main' AND table_name = ");
    sql_put_literal(&sql, table);
    duckdb_result r;
    rc = sql.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : rag_duck_query(&d, sql.data, table, &r, err);
    dk_buf_free(&sql);
    if (rc == DK_OK) {
        int64_t n = duckdb_value_int64(&r, 0, 0);
        duckdb_destroy_result(&r);
        if (n == 0) rc = dk_fail(err, DK_ERR_NOTFOUND, "%s has no table or view %s", db_path, table);
    }
    rag_builder b = {0};
    if (rc == DK_OK) {
        dk_buf source = {0};
        sql_put_ident(&source, table);
        rc = source.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory")
                           : rag_duck_rows(&d, source.data, table, l.max_rows, &b, err);
        dk_buf_free(&source);
    }
    rag_duck_close(&d);
    if (rc == DK_OK) rc = rag_builder_finish(&b, "table", table, "row", out, err);
    rag_builder_free(&b);
    return rc;
}

int rag_list_tables(const char *db_path, char ***out, char *err)
{
    *out = NULL;
    if (!db_path) return dk_fail(err, DK_ERR_ARG, "missing database");
    rag_duck d;
    int rc = rag_duck_open(&d, db_path, err);
    if (rc) return rc;
    duckdb_result r;
    rc = rag_duck_query(&d,
                        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                        "AND table_schema = 'main' ORDER BY table_name",
                        db_path, &r, err);
    if (rc == DK_OK) {
        idx_t n = duckdb_row_count(&r);
        char **list = dk_calloc(n + 1, sizeof *list);
        if (!list) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        for (idx_t i = 0; list && i < n; i++) {
            char *name = duckdb_value_varchar(&r, 0, i);
            list[i] = dk_strdup(name ? name : "");
            if (name) duckdb_free(name);
            if (!list[i]) {
                rag_strings_free(list);
                list = NULL;
                rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            }
        }
        duckdb_destroy_result(&r);
        *out = list;
    }
    rag_duck_close(&d);
    return rc;
}
