/*
 * fuzz_sql_text.c: fuzz target for the shell's SQL text lexer: sql_text_complete (sql.h), which
 * decides whether the lines typed so far end a statement, and sql_lex_skip (sql_internal.h),
 * the piece-skipper under it. The input is the text, cut at its first NUL as the shell would
 * hold it, in an exact-size copy so that ASan sees any read past the NUL. Walking the text
 * piece by piece (and, for short texts, from every offset), every length must stay inside the
 * text, an open piece must reach its end, and every opener ("--", block comment, quotes)
 * must give a piece. sql_text_complete must also agree with the walk (an open piece:
 * incomplete), ignore trailing spaces, and find any text without an open piece complete once
 * "\n;" follows it. A violation aborts.
 */
#include "fuzz.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql.h"
#include "sql/sql_internal.h"

#define FUZZ_SQL_EVERY_OFFSET_MAX 1024

/* Walks text with sql_lex_skip; *open_at_end: the walk ended inside an open piece.
 * false when a piece broke the lexer's contract. */
static bool fuzz_sql_walk(const char *text, size_t len, bool *open_at_end)
{
    *open_at_end = false;
    const char *end = text + len;
    for (const char *p = text; p < end;) {
        int open = -1;
        size_t n = sql_lex_skip(p, &open);
        if (open != 0 && open != 1) return false;
        if (n > (size_t)(end - p)) return false;
        if (open && (n == 0 || p + n != end)) return false;
        bool opener = (p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*') || p[0] == '\'' || p[0] == '"';
        if (opener && n < ((p[0] == '\'' || p[0] == '"') ? 1u : 2u)) return false;
        if (open) *open_at_end = true;
        p += n ? n : 1;
    }
    return true;
}

/* sql_lex_skip from every offset, not only where a piece starts (a caller may land inside
 * one): each length stays inside the text, each open piece reaches its end. Only for short
 * texts, as this is quadratic. */
static bool fuzz_sql_every_offset(const char *text, size_t len)
{
    if (len > FUZZ_SQL_EVERY_OFFSET_MAX) return true;
    for (size_t i = 0; i < len; i++) {
        int open;
        size_t n = sql_lex_skip(text + i, &open);
        if (n > len - i || (open && i + n != len)) return false;
    }
    return true;
}

/* text followed by suffix, in a new exact-size allocation (dk_free), or NULL. */
static char *fuzz_sql_concat(const char *text, size_t len, const char *suffix)
{
    size_t n_suffix = strlen(suffix);
    char *s = dk_malloc(len + n_suffix + 1);
    if (!s) return NULL;
    memcpy(s, text, len);
    memcpy(s + len, suffix, n_suffix + 1);
    return s;
}

int fuzz_sql_text_one(const uint8_t *data, size_t size)
{
    size_t len = strnlen((const char *)data, size);
    char *text = dk_strndup((const char *)data, len);
    if (!text) return 0;
    bool ok = true, open_at_end;
    if (!fuzz_sql_walk(text, len, &open_at_end) || !fuzz_sql_every_offset(text, len)) ok = false;
    int complete = sql_text_complete(text);
    if (complete != 0 && complete != 1) ok = false;
    if (complete && (open_at_end || !strchr(text, ';'))) ok = false;
    char *spaced = fuzz_sql_concat(text, len, " \n\t ");
    if (spaced && sql_text_complete(spaced) != complete) ok = false;
    char *ended = fuzz_sql_concat(text, len, "\n;");
    if (ended && !open_at_end && sql_text_complete(ended) != 1) ok = false;
    dk_free(spaced);
    dk_free(ended);
    dk_free(text);
    if (!ok) abort();
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_sql_text_one(data, size); }
#endif
