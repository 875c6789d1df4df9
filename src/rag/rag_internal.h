/*
 * rag_internal.h: private to src/rag/. Faster scoring for code that scores one query against
 * many stored vectors (hnsw.c, the exact search): the query is prepared once (copied, and
 * normalised for cosine) and then scored against ids without repeating that work. Nothing
 * outside src/rag/ includes this file; rag.h is the interface.
 */
#ifndef DK_RAG_INTERNAL_H
#define DK_RAG_INTERNAL_H

#include "rag/rag.h"

/* Writes the prepared form of query (dim floats, as given) into qprep (room for dim floats,
 * owned by the caller): a copy, normalised for cosine (a zero query stays zero). */
void rag_vectors_prepare_query(const rag_vectors *v, const float *query, float *qprep);

/* rag_vectors_score(v, query, id) for qprep = the prepared query; the same number. id must
 * be < rag_vectors_count(v) (not checked). */
float rag_vectors_score_prepared(const rag_vectors *v, const float *qprep, uint32_t id);

/* The same as an object (what hnsw.c uses): a prepared query with its own buffer.
 * rag_query_new: DK_OK or DK_ERR_NOMEM; free with rag_query_free (NULL is fine).
 * rag_query_prepare: query (dim floats) into q; DK_ERR_ARG if a value is not finite (q is
 * then unusable until prepared again). rag_query_score: rag_vectors_score of that query. */
typedef struct rag_query rag_query;
int rag_query_new(const rag_vectors *v, rag_query **out);
int rag_query_prepare(const rag_vectors *v, const float *query, rag_query *q);
float rag_query_score(const rag_vectors *v, const rag_query *q, uint32_t id);
void rag_query_free(rag_query *q);

/* Stored vector id (< count, not checked) as dim floats into out: dequantised (F16, I8) and,
 * for cosine, the normalised vector that was stored. */
void rag_vectors_get(const rag_vectors *v, uint32_t id, float *out);

/* ==== readers (read.c) and the chunker (chunk.c) ==== */

/* A structural unit of a document: a heading, a paragraph (or list item, code block, table
 * of text), or a row of a table. Text of blocks is what will be indexed: plain UTF-8 (HTML
 * tags, entities and Markdown markup such as "## " resolved), in the document's text. */
typedef enum rag_block_kind { RAG_BLOCK_HEADING = 0, RAG_BLOCK_PARAGRAPH, RAG_BLOCK_ROW } rag_block_kind;

typedef struct rag_block {
    rag_block_kind kind;
    int level;               /* headings: 1..6; others 0 */
    size_t text_start;       /* the block's text is doc->text[text_start, text_end) */
    size_t text_end;
    int64_t loc_start;       /* where it came from: byte offsets in the file, [start, end), */
    int64_t loc_end;         /* or for rows the 0-based row number (loc_end = loc_start + 1) */
} rag_block;

typedef struct rag_doc {
    char *kind;              /* "text" "markdown" "html" "csv" "parquet" "json" "table" (a
                                .tsv is "csv"; a .json read as text is "text") */
    char *title;             /* HTML <title> (else its first heading), Markdown front matter's
                                title: (else its first heading), the data file's base name or
                                the table name; NULL for text */
    char *text;              /* the blocks' texts, each followed by "\n\n"; NUL-terminated */
    size_t text_len;
    rag_block *blocks;
    size_t n_blocks;
    const char *unit;        /* "byte" or "row" (static) */
} rag_doc;

typedef struct rag_read_limits {
    size_t max_bytes;        /* files larger than this are skipped; 0: 64 MiB */
    size_t max_line;         /* a line longer than this (bytes) makes the file skipped; 0: 1 MiB */
    size_t max_rows;         /* a table or data file with more rows is skipped (DK_ERR_LIMIT,
                                not cut short); 0: 1,000,000 */
} rag_read_limits;

/* Reads one file as a document, its kind chosen by extension (case-insensitive): .md
 * .markdown; .html .htm; .csv .tsv .parquet .json .jsonl .ndjson (through DuckDB in a fresh
 * in-memory database: each row a block "col: value; col: value", values cast to VARCHAR,
 * NULLs left out, a row of NULLs only has no block but keeps its number; a JSON file whose
 * first character is not [ or {, or that DuckDB cannot read as rows, is read as text);
 * anything else as text. Text paragraphs are runs of non-blank lines; a UTF-8 BOM is skipped
 * (loc still counts it) and line ends become "
". Refusals, each with one line in err
 * naming the reason, without the path (the caller skips the file): DK_ERR_NOTFOUND missing,
 * DK_ERR_IO unreadable or not a regular file, DK_ERR_LIMIT "file is larger than N bytes",
 * "line N is longer than M bytes" or "NAME has more than N rows", DK_ERR_FORMAT "binary file
 * (...)" (a NUL byte anywhere, or over 30% control bytes in the first 8 KiB), "invalid UTF-8
 * at byte N" (file offset), or DuckDB's message for a data file it cannot read. limits
 * NULL: the defaults. The caller frees *out with rag_doc_free. */
int rag_read_file(const char *path, const rag_read_limits *limits, rag_doc **out, char *err);

/* rag_read_file for bytes in memory (what the fuzz target uses): data[0..n) read as the kind
 * name's extension says, with the same checks and refusals. Text, Markdown and HTML only: a
 * data-file extension (.csv .parquet .json ...) is DK_ERR_UNSUPPORTED. loc: offsets in data. */
int rag_read_buffer(const char *name, const char *data, size_t n, const rag_read_limits *limits, rag_doc **out,
                    char *err);

/* Reads table (a table or view name, quoted as needed here) of the DuckDB database file
 * db_path (opened READ_ONLY) as a document of rows, kind "table", title the table's name. */
int rag_read_table(const char *db_path, const char *table, const rag_read_limits *limits, rag_doc **out,
                   char *err);

/* The names of the tables and views of a DuckDB file (main schema, name order): a
 * NULL-terminated array of strings; the caller frees with rag_strings_free. */
int rag_list_tables(const char *db_path, char ***out, char *err);
void rag_strings_free(char **list);

void rag_doc_free(rag_doc *doc); /* NULL is fine */

/* The token count of text[0..n) as the embedding model would see it (no special tokens). */
typedef size_t (*rag_count_fn)(void *ud, const char *text, size_t n);

typedef struct rag_chunk {
    size_t text_start;       /* the chunk's own text: doc->text[text_start, text_end), which */
    size_t text_end;         /* begins with the overlap taken from the chunk before */
    char *heading;           /* the headings above it joined by " > " ("" when none; owned) */
    int64_t loc_start;       /* the first and last covered block's loc_start / loc_end */
    int64_t loc_end;
    size_t n_tokens;         /* count(text) */
} rag_chunk;

typedef struct rag_chunk_opts {
    size_t max_tokens;       /* > 0 */
    size_t overlap_tokens;   /* < max_tokens / 2 */
    rag_count_fn count;
    void *ud;
} rag_chunk_opts;

/* Splits doc into chunks of at most max_tokens tokens: blocks are packed in order, a heading
 * starts a new chunk (and becomes part of the heading path of those below it, by level); a
 * block longer than max_tokens is cut at sentence ends, else at spaces, else at UTF-8
 * character boundaries. A chunk after another in the same section starts with about
 * overlap_tokens of the previous one's end (cut at a word boundary; at most overlap_tokens;
 * inside a long run without spaces, such as CJK text, at a character boundary). Rows are
 * packed like paragraphs, under the table's title (the chunk's heading when no heading is in
 * force), without overlap. Every byte of every non-heading block is in some chunk (except
 * white space that fits in no chunk: a run of it that alone counts more than max_tokens, only
 * possible with a counter that charges for white space); heading texts are only in the
 * heading paths, and a heading with nothing under it gives no chunk. No chunk is empty or
 * only white space; only a single character that alone counts more than max_tokens makes a
 * chunk above it. count is called per block and per candidate cut on chunk-sized
 * texts (about 10-20 calls per chunk), never on a whole long block per cut. *out NULL and
 * *n_out 0 when there is nothing to chunk. DK_ERR_ARG for bad options (overlap_tokens not
 * below max_tokens / 2, unless 0). The caller frees with rag_chunks_free. */
int rag_chunk_doc(const rag_doc *doc, const rag_chunk_opts *opts, rag_chunk **out, size_t *n_out, char *err);
void rag_chunks_free(rag_chunk *chunks, size_t n); /* NULL is fine */

#endif
