/*
 * read_internal.h: private to the readers (read.c, read_markdown.c, read_html.c). A document
 * builder that the text, Markdown and HTML parsers fill block by block, and the parsers' entry
 * points, which read.c calls after it has checked the bytes (size, binary, UTF-8, line length).
 * Nothing outside those three files includes this; rag_internal.h is the readers' interface.
 */
#ifndef DK_RAG_READ_INTERNAL_H
#define DK_RAG_READ_INTERNAL_H

#include "rag/rag_internal.h"

/* Blocks under construction. Zero-initialise; between rag_builder_begin and rag_builder_end
 * the caller appends the block's text to b->text (a dk_buf); rag_builder_finish hands the
 * result over as a rag_doc, rag_builder_free drops it (both safe after a failure). */
typedef struct rag_builder {
    dk_buf text;             /* the document's text so far: blocks each followed by "\n\n" */
    rag_block *blocks;       /* (n_blocks) of cap_blocks allocated */
    size_t n_blocks;
    size_t cap_blocks;
    size_t open_start;       /* text offset where the open block's text begins */
    int failed;              /* an allocation failed: finish reports DK_ERR_NOMEM */
} rag_builder;

void rag_builder_begin(rag_builder *b);
/* Closes the open block: its text is trimmed of ASCII white space at both ends; an empty
 * block is dropped (returns 0), otherwise it is recorded with the given kind, level and loc
 * and followed by "\n\n" (returns 1). */
int rag_builder_end(rag_builder *b, rag_block_kind kind, int level, int64_t loc_start, int64_t loc_end);
/* Appends text[0..n) to the open block with "\r\n" and lone "\r" written as "\n". */
void rag_builder_append_lf(rag_builder *b, const char *text, size_t n);
/* Moves everything into a new doc (kind and title copied, unit static) into *out. The
 * builder is empty afterwards. DK_ERR_NOMEM if any step failed. */
int rag_builder_finish(rag_builder *b, const char *kind, const char *title, const char *unit, rag_doc **out,
                       char *err);
void rag_builder_free(rag_builder *b);

/* ASCII white space, the bytes blocks are trimmed of */
static inline int rag_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The parsers. data[0..n) is checked UTF-8 without NUL bytes and without a BOM; base is the
 * file offset of data[0] (3 after a stripped BOM), added to every loc. *title is NULL or a
 * string the caller frees with dk_free. */
int rag_parse_text(rag_builder *b, const char *data, size_t n, int64_t base);
int rag_parse_markdown(rag_builder *b, const char *data, size_t n, int64_t base, char **title);
int rag_parse_html(rag_builder *b, const char *data, size_t n, int64_t base, char **title);

#endif
