/*
 * test_rag_read.c: the document readers of rag/ (suite rag_read): text, Markdown and HTML
 * files written into the test's temporary directory, with their blocks, levels, titles and
 * byte offsets checked against the file's bytes; each refusal (binary, invalid UTF-8, long
 * lines, size, missing) with its message; CSV, TSV, JSON, JSONL and a Parquet file written by
 * DuckDB read as rows; and tables of a DuckDB file.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "rag/rag_internal.h"
#include "test.h"
#include "test_duckdb.h"

/* test_tmpdir()/rag_read/name, written with data[0..n) (n == SIZE_MAX: strlen). */
static const char *write_file(char *path, size_t path_size, const char *name, const char *data, size_t n)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/rag_read", test_tmpdir());
    mkdir(dir, 0700);
    snprintf(path, path_size, "%s/%s", dir, name);
    if (n == SIZE_MAX) n = strlen(data);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

/* Reads name written with data (rc expected); the doc or NULL, err filled. */
static rag_doc *read_written(const char *name, const char *data, size_t n, const rag_read_limits *limits, int want_rc,
                             char *err)
{
    char path[600];
    if (!write_file(path, sizeof path, name, data, n)) {
        test_fail_at(__FILE__, __LINE__, "cannot write %s", name);
        return NULL;
    }
    rag_doc *doc = NULL;
    int rc = rag_read_file(path, limits, &doc, err);
    if (rc != want_rc) test_fail_at(__FILE__, __LINE__, "%s: rc %d, want %d (%s)", name, rc, want_rc, rc ? err : "");
    if (rc) CHECK(doc == NULL);
    return rc ? NULL : doc;
}

static int block_is(const rag_doc *doc, size_t i, rag_block_kind kind, int level, const char *text)
{
    if (i >= doc->n_blocks) return 0;
    const rag_block *b = &doc->blocks[i];
    size_t n = strlen(text);
    return b->kind == kind && b->level == level && b->text_end - b->text_start == n &&
           memcmp(doc->text + b->text_start, text, n) == 0;
}

#define CHECK_BLOCK(doc, i, kind, level, want) \
    CHECK_MSG(block_is(doc, i, kind, level, want), "block %zu is not %d/%d \"%s\" but \"%.*s\"", (size_t)(i), kind, level, \
              want, (i) < (doc)->n_blocks ? (int)((doc)->blocks[i].text_end - (doc)->blocks[i].text_start) : 0, \
              (i) < (doc)->n_blocks ? (doc)->text + (doc)->blocks[i].text_start : "")

/* The doc's structural promises: texts in range, each followed by "\n\n", NUL at the end. */
static void check_doc_shape(const rag_doc *doc)
{
    CHECK(doc->text[doc->text_len] == 0);
    CHECK_EQ_INT(strlen(doc->text), doc->text_len);
    for (size_t i = 0; i < doc->n_blocks; i++) {
        const rag_block *b = &doc->blocks[i];
        CHECK(b->text_start < b->text_end);
        CHECK(b->text_end + 2 <= doc->text_len);
        CHECK(memcmp(doc->text + b->text_end, "\n\n", 2) == 0);
        if (i) CHECK(b->text_start == doc->blocks[i - 1].text_end + 2);
        CHECK(b->loc_start < b->loc_end);
    }
}

/* Text and Markdown blocks without markup: the file's bytes at loc are the block's text. */
static void check_loc_exact(const rag_doc *doc, const char *file, size_t i)
{
    REQUIRE(i < doc->n_blocks);
    const rag_block *b = &doc->blocks[i];
    size_t n = b->text_end - b->text_start;
    CHECK_MSG((size_t)(b->loc_end - b->loc_start) == n && memcmp(file + b->loc_start, doc->text + b->text_start, n) == 0,
              "block %zu: file[%lld, %lld) is \"%.*s\"", i, (long long)b->loc_start, (long long)b->loc_end,
              (int)(b->loc_end - b->loc_start), file + b->loc_start);
}

/* The file's bytes at loc contain text (Markdown headings with their #s, fenced code). */
static void check_loc_contains(const rag_doc *doc, const char *file, size_t i)
{
    REQUIRE(i < doc->n_blocks);
    const rag_block *b = &doc->blocks[i];
    char *want = dk_strndup(doc->text + b->text_start, b->text_end - b->text_start);
    char *span = dk_strndup(file + b->loc_start, (size_t)(b->loc_end - b->loc_start));
    CHECK_MSG(strstr(span, want) != NULL, "block %zu: \"%s\" not in \"%s\"", i, want, span);
    dk_free(want);
    dk_free(span);
}

/* ---- text ---- */

TEST(rag_read, text_paragraphs_and_offsets)
{
    const char *file = "First paragraph,\nstill the first.\n\n  \t\nSecond one.  \n\n\n   Third, indented.\nend";
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("plain.txt", file, SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->kind, "text");
    CHECK_EQ_STR(doc->unit, "byte");
    CHECK(doc->title == NULL);
    REQUIRE(doc->n_blocks == 3);
    check_doc_shape(doc);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_PARAGRAPH, 0, "First paragraph,\nstill the first.");
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "Second one.");
    CHECK_BLOCK(doc, 2, RAG_BLOCK_PARAGRAPH, 0, "Third, indented.\nend");
    for (size_t i = 0; i < doc->n_blocks; i++) check_loc_exact(doc, file, i);
    CHECK_EQ_INT(doc->blocks[2].loc_start, strstr(file, "Third") - file);
    rag_doc_free(doc);
}

TEST(rag_read, text_bom_and_crlf)
{
    const char *file = "\xEF\xBB\xBFHello\r\nworld\r\n\r\nNext\rline\r\n";
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("crlf.txt", file, SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    REQUIRE(doc->n_blocks == 2);
    check_doc_shape(doc);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_PARAGRAPH, 0, "Hello\nworld");
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "Next\nline");
    CHECK(strchr(doc->text, '\r') == NULL);
    CHECK(strstr(doc->text, "\xEF\xBB\xBF") == NULL);
    CHECK_EQ_INT(doc->blocks[0].loc_start, 3); /* offsets count the BOM */
    CHECK_EQ_INT(doc->blocks[0].loc_end, strstr(file, "world") - file + 5);
    CHECK_EQ_INT(doc->blocks[1].loc_start, strstr(file, "Next") - file);
    rag_doc_free(doc);
}

TEST(rag_read, empty_and_blank_files_have_no_blocks)
{
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("empty.txt", "", 0, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_INT(doc->n_blocks, 0);
    CHECK_EQ_INT(doc->text_len, 0);
    CHECK(doc->text && doc->text[0] == 0);
    rag_doc_free(doc);
    doc = read_written("blank.md", " \n\n\t\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_INT(doc->n_blocks, 0);
    rag_doc_free(doc);
}

/* ---- refusals ---- */

TEST(rag_read, refuses_binary_files)
{
    char err[DK_ERRLEN];
    static const char nul[] = "text with a \0 NUL byte";
    CHECK(read_written("nul.txt", nul, sizeof nul - 1, NULL, DK_ERR_FORMAT, err) == NULL);
    CHECK_MSG(strstr(err, "binary file") != NULL, "%s", err);
    char control[200];
    for (size_t i = 0; i < sizeof control; i++) control[i] = i % 2 ? 'a' : (char)(1 + i % 7); /* 50% control */
    CHECK(read_written("control.md", control, sizeof control, NULL, DK_ERR_FORMAT, err) == NULL);
    CHECK_MSG(strstr(err, "binary file") != NULL, "%s", err);
    /* a few control bytes (ANSI colours, a form feed) are still text */
    rag_doc *doc = read_written("few.txt", "a \x1b[1mbold\x1b[0m word\f\n", SIZE_MAX, NULL, DK_OK, err);
    CHECK(doc != NULL);
    rag_doc_free(doc);
}

TEST(rag_read, refuses_invalid_utf8_with_offset)
{
    char err[DK_ERRLEN];
    static const struct {
        const char *bytes;
        size_t at;
    } cases[] = {
        {"abcdefg\xFFxyz", 7},         /* a byte that never occurs */
        {"ab\xC3", 2},                 /* truncated at the end */
        {"abc\xC0\xAF", 3},            /* overlong "/" */
        {"x\xED\xA0\x80y", 1},         /* a surrogate */
        {"ok \xE2\x82\xAC then \x80", 12}, /* a lone continuation after a valid euro sign */
        {"\xF4\x90\x80\x80", 0},       /* above U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(read_written("bad.txt", cases[i].bytes, SIZE_MAX, NULL, DK_ERR_FORMAT, err) == NULL);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", cases[i].at);
        CHECK_MSG(strcmp(err, want) == 0, "case %zu: \"%s\", want \"%s\"", i, err, want);
    }
    /* after a BOM, offsets are still file offsets */
    CHECK(read_written("bom_bad.html", "\xEF\xBB\xBFok\xFF", SIZE_MAX, NULL, DK_ERR_FORMAT, err) == NULL);
    CHECK_EQ_STR(err, "invalid UTF-8 at byte 5");
}

TEST(rag_read, refuses_long_lines_and_large_files)
{
    char err[DK_ERRLEN];
    rag_read_limits limits = {.max_line = 10};
    const char *file = "short\nten bytes!\nthis line is too long\n";
    CHECK(read_written("long.md", file, SIZE_MAX, &limits, DK_ERR_LIMIT, err) == NULL);
    CHECK_EQ_STR(err, "line 3 is longer than 10 bytes");
    rag_doc *doc = read_written("ten.txt", "ten bytes!\r\nten bytes!", SIZE_MAX, &limits, DK_OK, err);
    CHECK(doc != NULL); /* exactly max_line is fine, "\r\n" not counted */
    rag_doc_free(doc);
    limits = (rag_read_limits){.max_bytes = 16};
    CHECK(read_written("big.txt", "seventeen bytes!!", SIZE_MAX, &limits, DK_ERR_LIMIT, err) == NULL);
    CHECK_MSG(strstr(err, "larger than 16 bytes") != NULL, "%s", err);
    CHECK(read_written("big.csv", "a,b\n1,2\n3,4\n5,6\n7,8\n", SIZE_MAX, &limits, DK_ERR_LIMIT, err) == NULL);
}

TEST(rag_read, refuses_missing_files_and_directories)
{
    char err[DK_ERRLEN], path[600];
    rag_doc *doc = NULL;
    snprintf(path, sizeof path, "%s/rag_read/none.txt", test_tmpdir());
    CHECK_EQ_INT(rag_read_file(path, NULL, &doc, err), DK_ERR_NOTFOUND);
    CHECK(doc == NULL);
    CHECK(strstr(err, "none.txt") != NULL);
    write_file(path, sizeof path, "x.txt", "x", 1);
    snprintf(path, sizeof path, "%s/rag_read", test_tmpdir());
    CHECK_EQ_INT(rag_read_file(path, NULL, &doc, err), DK_ERR_IO);
    CHECK_EQ_INT(rag_read_buffer("data.csv", "a,b\n", 4, NULL, &doc, err), DK_ERR_UNSUPPORTED);
    CHECK(doc == NULL);
}

/* ---- Markdown ---- */

TEST(rag_read, markdown_structure)
{
    const char *file = "---\n"
                       "author: someone\n"
                       "title: \"The Guide\"\n"
                       "---\n"
                       "# Introduction #\n"
                       "Some text with a [link](http://x.org/a_(b)) and ![an image](i.png).\n"
                       "Second line.\n"
                       "\n"
                       "## Install\n"
                       "- first item\n"
                       "- second item\n"
                       "  continued\n"
                       "1. numbered\n"
                       "\n"
                       "```sh\n"
                       "# not a heading\n"
                       "\n"
                       "make install\n"
                       "```\n"
                       "Setext Title\n"
                       "============\n"
                       "Sub title\n"
                       "---\n"
                       "***\n"
                       "~~~~\n"
                       "tilde code\n"
                       "~~~\n"
                       "still code\n"
                       "~~~~\n"
                       "###### Six\n"
                       "####### seven is text\n"
                       "#hashtag is text\n";
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("guide.md", file, SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    check_doc_shape(doc);
    CHECK_EQ_STR(doc->kind, "markdown");
    CHECK_EQ_STR(doc->title, "The Guide");
    REQUIRE_MSG(doc->n_blocks == 12, "%zu blocks:\n%s", doc->n_blocks, doc->text);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_HEADING, 1, "Introduction");
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "Some text with a link and an image.\nSecond line.");
    CHECK_BLOCK(doc, 2, RAG_BLOCK_HEADING, 2, "Install");
    CHECK_BLOCK(doc, 3, RAG_BLOCK_PARAGRAPH, 0, "- first item");
    CHECK_BLOCK(doc, 4, RAG_BLOCK_PARAGRAPH, 0, "- second item\n  continued");
    CHECK_BLOCK(doc, 5, RAG_BLOCK_PARAGRAPH, 0, "1. numbered");
    CHECK_BLOCK(doc, 6, RAG_BLOCK_PARAGRAPH, 0, "# not a heading\n\nmake install");
    CHECK_BLOCK(doc, 7, RAG_BLOCK_HEADING, 1, "Setext Title");
    CHECK_BLOCK(doc, 8, RAG_BLOCK_HEADING, 2, "Sub title");
    CHECK_BLOCK(doc, 9, RAG_BLOCK_PARAGRAPH, 0, "tilde code\n~~~\nstill code");
    CHECK_BLOCK(doc, 10, RAG_BLOCK_HEADING, 6, "Six");
    CHECK_BLOCK(doc, 11, RAG_BLOCK_PARAGRAPH, 0, "####### seven is text\n#hashtag is text");
    /* offsets: headings and code keep their markup in the file, the text is inside */
    for (size_t i = 0; i < doc->n_blocks; i++)
        if (i != 1) check_loc_contains(doc, file, i);
    check_loc_exact(doc, file, 3);
    check_loc_exact(doc, file, 4);
    CHECK_EQ_INT(doc->blocks[0].loc_start, strstr(file, "# Intro") - file);
    CHECK_EQ_INT(doc->blocks[6].loc_start, strstr(file, "```sh") - file);
    CHECK_EQ_INT(doc->blocks[6].loc_end, strstr(file, "```\nSetext") - file + 3);
    CHECK_EQ_INT(doc->blocks[1].loc_start, strstr(file, "Some text") - file);
    CHECK_EQ_INT(doc->blocks[1].loc_end, strstr(file, "Second line.") - file + 12);
    rag_doc_free(doc);
}

TEST(rag_read, markdown_title_unterminated_fence_and_front_matter)
{
    char err[DK_ERRLEN];
    /* no front matter: the first heading is the title; an open fence runs to the end */
    rag_doc *doc = read_written("t.markdown", "Intro text.\n\n## First *heading*\n```\ncode\n\n# x\n", SIZE_MAX, NULL,
                                DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->title, "First *heading*");
    REQUIRE(doc->n_blocks == 3);
    CHECK_BLOCK(doc, 2, RAG_BLOCK_PARAGRAPH, 0, "code\n\n# x");
    rag_doc_free(doc);
    /* "---" never closed is no front matter: a thematic break, then text */
    doc = read_written("u.MD", "---\ntitle: no\nbody\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK(doc->title == NULL);
    REQUIRE(doc->n_blocks == 1);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_PARAGRAPH, 0, "title: no\nbody");
    rag_doc_free(doc);
    /* CRLF Markdown */
    doc = read_written("w.md", "Title\r\n=====\r\nline one\r\nline two\r\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    REQUIRE(doc->n_blocks == 2);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_HEADING, 1, "Title");
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "line one\nline two");
    rag_doc_free(doc);
}

/* ---- HTML ---- */

TEST(rag_read, html_structure_entities_and_skipped_content)
{
    const char *file = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
                       "<title>  Caf&eacute; &amp; Bar </title>\n"
                       "<style>p { color: red; } h1 > p {}</style>\n"
                       "<script>var s = '<p>not text</p>'; if (a < b) {}</script>\n"
                       "</head><BODY>\n"
                       "<!-- a comment with <p>tags</p> -->\n"
                       "<H1 class=\"x\">Main   title</H1>\n"
                       "<p>Fish &amp; chips &lt;3 &quot;q&quot; &#39;s&#39; &#65;&#x42; a&nbsp;b &copy; &unknown; & so</p>\n"
                       "<div>one\n   two<br>three<span> four</span></div>\n"
                       "<noscript>enable JS</noscript><template><p>tpl</p></template>\n"
                       "<h3>Deep <em>heading</em></h3>\n"
                       "<pre>  keep\n    this  </pre>\n"
                       "<ul><li>item <a href=\"x>y\" title='a>b'>one</a></li><li>item two</li></ul>\n"
                       "<table><tr><td>c1</td><td>c2</td></tr></table>\n"
                       "<![CDATA[ hidden ]]>tail 5 > 3"
                       "</body></html>\n";
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("page.html", file, SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    check_doc_shape(doc);
    CHECK_EQ_STR(doc->kind, "html");
    CHECK_EQ_STR(doc->title, "Caf\u00E9 & Bar");
    REQUIRE_MSG(doc->n_blocks == 11, "%zu blocks:\n%s", doc->n_blocks, doc->text);
    CHECK_BLOCK(doc, 0, RAG_BLOCK_HEADING, 1, "Main title");
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "Fish & chips <3 \"q\" 's' AB a b \u00A9 &unknown; & so");
    CHECK_BLOCK(doc, 2, RAG_BLOCK_PARAGRAPH, 0, "one two");
    CHECK_BLOCK(doc, 3, RAG_BLOCK_PARAGRAPH, 0, "three four");
    CHECK_BLOCK(doc, 4, RAG_BLOCK_HEADING, 3, "Deep heading");
    CHECK_BLOCK(doc, 5, RAG_BLOCK_PARAGRAPH, 0, "keep\n    this");
    CHECK_BLOCK(doc, 6, RAG_BLOCK_PARAGRAPH, 0, "item one");
    CHECK_BLOCK(doc, 7, RAG_BLOCK_PARAGRAPH, 0, "item two");
    CHECK_BLOCK(doc, 8, RAG_BLOCK_PARAGRAPH, 0, "c1");
    CHECK_BLOCK(doc, 9, RAG_BLOCK_PARAGRAPH, 0, "c2");
    CHECK_BLOCK(doc, 10, RAG_BLOCK_PARAGRAPH, 0, "tail 5 > 3");
    CHECK(strstr(doc->text, "not text") == NULL);
    CHECK(strstr(doc->text, "color") == NULL);
    CHECK(strstr(doc->text, "comment") == NULL);
    CHECK(strstr(doc->text, "hidden") == NULL);
    CHECK(strstr(doc->text, "JS") == NULL);
    CHECK(strstr(doc->text, "tpl") == NULL);
    CHECK(strstr(doc->text, "Bar") == NULL); /* the title is not a block */
    /* loc: the source bytes from the first to the last character */
    const char *p1 = strstr(file, "Fish");
    CHECK_EQ_INT(doc->blocks[1].loc_start, p1 - file);
    CHECK_EQ_INT(doc->blocks[1].loc_end, strstr(file, "so</p>") - file + 2);
    CHECK_EQ_INT(doc->blocks[0].loc_start, strstr(file, "Main") - file);
    CHECK_EQ_INT(doc->blocks[0].loc_end, strstr(file, "title</H1>") - file + 5);
    CHECK_EQ_INT(doc->blocks[4].loc_end, strstr(file, "heading</em>") - file + 7);
    rag_doc_free(doc);
}

TEST(rag_read, html_malformed_never_fails)
{
    static const struct {
        const char *html;
        const char *text; /* all blocks' texts joined by "|" */
    } cases[] = {
        {"<p>before<!-- never closed <p>x", "before"},
        {"<p>a</p><div class=\"unterminated", "a"},
        {"<p>a<script>while(1){} </p> forever", "a"},
        {"x < y and y<3 and <> and </> and <<p>z", "x < y and y<3 and <> and </> and <|z"},
        {"<h2>open heading<p>body text", "open heading|body text"},
        {"</p></div></h1>text</li>", "text"},
        {"&#0;&#xD800;&#x110000;&#99999999999;&#;&#x;&", "\uFFFD\uFFFD\uFFFD\uFFFD&#;&#x;&"},
        {"<a href='x", ""},
        {"<title>never closed", ""},
        {"<pre>a\r\nb</pre><PRE>", "a\nb"},
        {"<![CDATA[ x", ""},
        {"<?xml version='1.0'?><p>ok</p><!doctype", "ok"},
        {"<veryveryverylongtagname>t</veryveryverylongtagname>", "t"},
        {"<scriptx>shown</scriptx><style", "shown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rag_doc *doc = NULL;
        char err[DK_ERRLEN];
        int rc = rag_read_buffer("m.html", cases[i].html, strlen(cases[i].html), NULL, &doc, err);
        CHECK_MSG(rc == DK_OK, "case %zu: %s", i, err);
        if (rc) continue;
        check_doc_shape(doc);
        dk_buf joined = {0};
        dk_buf_puts(&joined, "");
        for (size_t k = 0; k < doc->n_blocks; k++) {
            if (k) dk_buf_putc(&joined, '|');
            dk_buf_append(&joined, doc->text + doc->blocks[k].text_start, doc->blocks[k].text_end - doc->blocks[k].text_start);
        }
        CHECK_MSG(strcmp(joined.data, cases[i].text) == 0, "case %zu: \"%s\", want \"%s\"", i, joined.data, cases[i].text);
        for (size_t k = 0; k < doc->n_blocks; k++)
            CHECK(doc->blocks[k].loc_end <= (int64_t)strlen(cases[i].html));
        dk_buf_free(&joined);
        rag_doc_free(doc);
    }
}

/* ---- data files through DuckDB ---- */

static void check_rows(const rag_doc *doc, const char *const *rows, size_t n)
{
    CHECK_EQ_STR(doc->unit, "row");
    REQUIRE_MSG(doc->n_blocks == n, "%zu rows:\n%s", doc->n_blocks, doc->text);
    check_doc_shape(doc);
    for (size_t i = 0; i < n; i++) {
        CHECK_BLOCK(doc, i, RAG_BLOCK_ROW, 0, rows[i]);
    }
}

TEST(rag_read, csv_and_tsv_rows)
{
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("it's people.csv", "name,age,city\nalice,30,Paris\nbob,,\n\"carol, jr\",41,\"Z\"\"rich\"\n",
                                SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->kind, "csv");
    CHECK_EQ_STR(doc->title, "it's people.csv");
    static const char *const rows[] = {"name: alice; age: 30; city: Paris", "name: bob",
                                       "name: carol, jr; age: 41; city: Z\"rich"};
    check_rows(doc, rows, 3);
    for (size_t i = 0; i < doc->n_blocks; i++) {
        CHECK_EQ_INT(doc->blocks[i].loc_start, (int64_t)i);
        CHECK_EQ_INT(doc->blocks[i].loc_end, (int64_t)i + 1);
    }
    rag_doc_free(doc);
    doc = read_written("t.tsv", "k\tv\nx\t1\ny\t2\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    static const char *const tsv[] = {"k: x; v: 1", "k: y; v: 2"};
    check_rows(doc, tsv, 2);
    rag_doc_free(doc);
}

/* DuckDB would read "g*.csv" as a glob that also matches "gx.csv": the reader must not. */
TEST(rag_read, glob_characters_in_a_path_name_one_file)
{
    char err[DK_ERRLEN], other[600];
    REQUIRE(write_file(other, sizeof other, "gx.csv", "k\nfrom-the-other-file\n", SIZE_MAX));
    static const char *const names[] = {"g*.csv", "g?.csv", "g[x].csv"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        rag_doc *doc = read_written(names[i], "k\nfrom-this-file\n", SIZE_MAX, NULL, DK_OK, err);
        REQUIRE(doc);
        static const char *const rows[] = {"k: from-this-file"};
        check_rows(doc, rows, 1);
        CHECK_EQ_STR(doc->title, names[i]);
        rag_doc_free(doc);
    }
}

TEST(rag_read, json_rows_and_json_as_text)
{
    char err[DK_ERRLEN];
    rag_doc *doc = read_written("a.json", "[{\"id\": 1, \"tag\": \"x\"}, {\"id\": 2, \"tag\": null}]", SIZE_MAX, NULL, DK_OK,
                                err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->kind, "json");
    static const char *const rows[] = {"id: 1; tag: x", "id: 2"};
    check_rows(doc, rows, 2);
    rag_doc_free(doc);
    doc = read_written("b.jsonl", "{\"q\": \"why\", \"n\": [1, 2]}\n{\"q\": \"how\", \"n\": []}\n", SIZE_MAX, NULL, DK_OK,
                       err);
    REQUIRE(doc);
    static const char *const lines[] = {"q: why; n: [1, 2]", "q: how; n: []"};
    check_rows(doc, lines, 2);
    rag_doc_free(doc);
    /* a top level that is not rows, and JSON DuckDB cannot read: text */
    doc = read_written("c.json", "\"just a string\"\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->kind, "text");
    CHECK_EQ_INT(doc->n_blocks, 1);
    rag_doc_free(doc);
    doc = read_written("d.json", "{ this is not json }\n\nsecond part\n", SIZE_MAX, NULL, DK_OK, err);
    REQUIRE(doc);
    CHECK_EQ_STR(doc->kind, "text");
    REQUIRE(doc->n_blocks == 2);
    CHECK_BLOCK(doc, 1, RAG_BLOCK_PARAGRAPH, 0, "second part");
    rag_doc_free(doc);
}

TEST(rag_read, parquet_rows)
{
    char path[600];
    REQUIRE(write_file(path, sizeof path, "t.parquet", "", 0)); /* the directory, and the path */
    char script[1000];
    snprintf(script, sizeof script,
             "COPY (SELECT i AS n, 'word ' || i AS w, CASE WHEN i = 2 THEN NULL ELSE i * 1.5 END AS x "
             "FROM range(1, 4) t(i) ORDER BY i) TO '%s' (FORMAT parquet)",
             path);
    REQUIRE(test_duckdb_file("rag_parquet_writer", script) != NULL);
    rag_doc *doc = NULL;
    char err[DK_ERRLEN];
    REQUIRE_MSG(rag_read_file(path, NULL, &doc, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(doc->kind, "parquet");
    CHECK_EQ_STR(doc->title, "t.parquet");
    static const char *const rows[] = {"n: 1; w: word 1; x: 1.5", "n: 2; w: word 2", "n: 3; w: word 3; x: 4.5"};
    check_rows(doc, rows, 3);
    rag_doc_free(doc);
    /* the row limit refuses the file */
    rag_read_limits limits = {.max_rows = 2};
    CHECK_EQ_INT(rag_read_file(path, &limits, &doc, err), DK_ERR_LIMIT);
    CHECK_MSG(strstr(err, "more than 2 rows") != NULL, "%s", err);
    limits.max_rows = 3;
    CHECK_EQ_INT(rag_read_file(path, &limits, &doc, err), DK_OK);
    rag_doc_free(doc);
    /* not Parquet: DuckDB's message */
    write_file(path, sizeof path, "bad.parquet", "this is not parquet at all", SIZE_MAX);
    CHECK_EQ_INT(rag_read_file(path, NULL, &doc, err), DK_ERR_FORMAT);
    CHECK(doc == NULL);
    CHECK_MSG(strlen(err) > 10 && strchr(err, '\n') == NULL, "%s", err);
    test_log("bad parquet: %s", err);
}

/* ---- DuckDB tables ---- */

static const char *tables_db(void)
{
    return test_duckdb_file("rag_tables", "CREATE TABLE notes(id INTEGER, body VARCHAR, day DATE);"
                                          "INSERT INTO notes VALUES (1, 'first note', DATE '2024-01-02'), (2, NULL, NULL);"
                                          "CREATE TABLE \"we\"\"ird name\"(\"col \"\"q\"\"\" VARCHAR);"
                                          "INSERT INTO \"we\"\"ird name\" VALUES ('v');"
                                          "CREATE VIEW a_view AS SELECT id * 10 AS ten FROM notes;"
                                          "CREATE TABLE empty(x INTEGER);");
}

TEST(rag_read, duckdb_tables)
{
    const char *db = tables_db();
    REQUIRE(db);
    struct stat before, after;
    REQUIRE(stat(db, &before) == 0);
    char err[DK_ERRLEN];
    char **names = NULL;
    REQUIRE_MSG(rag_list_tables(db, &names, err) == DK_OK, "%s", err);
    static const char *const want[] = {"a_view", "empty", "notes", "we\"ird name"};
    size_t n = 0;
    while (names[n]) n++;
    CHECK_EQ_INT(n, 4);
    for (size_t i = 0; i < n && i < 4; i++) CHECK_EQ_STR(names[i], want[i]);
    rag_strings_free(names);

    rag_doc *doc = NULL;
    REQUIRE_MSG(rag_read_table(db, "notes", NULL, &doc, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(doc->kind, "table");
    CHECK_EQ_STR(doc->title, "notes");
    static const char *const rows[] = {"id: 1; body: first note; day: 2024-01-02", "id: 2"};
    check_rows(doc, rows, 2);
    rag_doc_free(doc);
    REQUIRE_MSG(rag_read_table(db, "we\"ird name", NULL, &doc, err) == DK_OK, "%s", err);
    static const char *const weird[] = {"col \"q\": v"};
    check_rows(doc, weird, 1);
    rag_doc_free(doc);
    REQUIRE_MSG(rag_read_table(db, "a_view", NULL, &doc, err) == DK_OK, "%s", err);
    static const char *const view[] = {"ten: 10", "ten: 20"};
    check_rows(doc, view, 2);
    rag_doc_free(doc);
    REQUIRE_MSG(rag_read_table(db, "empty", NULL, &doc, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(doc->n_blocks, 0);
    rag_doc_free(doc);
    rag_read_limits limits = {.max_rows = 1};
    CHECK_EQ_INT(rag_read_table(db, "notes", &limits, &doc, err), DK_ERR_LIMIT);
    CHECK_EQ_INT(rag_read_table(db, "missing", NULL, &doc, err), DK_ERR_NOTFOUND);
    CHECK(doc == NULL);
    CHECK_EQ_INT(rag_read_table(db, "x'); DROP TABLE notes; --", NULL, &doc, err), DK_ERR_NOTFOUND);
    char path[600];
    snprintf(path, sizeof path, "%s/none.duckdb", test_tmpdir());
    CHECK_EQ_INT(rag_read_table(path, "notes", NULL, &doc, err), DK_ERR_NOTFOUND);
    CHECK_EQ_INT(rag_list_tables(path, &names, err), DK_ERR_NOTFOUND);
    CHECK(names == NULL);
    /* still intact, and opened read-only: the file was not changed by any of this */
    REQUIRE(rag_read_table(db, "notes", NULL, &doc, err) == DK_OK);
    CHECK_EQ_INT(doc->n_blocks, 2);
    rag_doc_free(doc);
    REQUIRE(stat(db, &after) == 0);
    CHECK(before.st_size == after.st_size && before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
          before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    /* not a DuckDB file */
    const char *txt = write_file(path, sizeof path, "not.duckdb", "hello", 5);
    CHECK_EQ_INT(rag_list_tables(txt, &names, err), DK_ERR_FORMAT);
    test_log("not a database: %s", err);
}

/* ---- allocation failures ---- */

TEST(rag_read, allocation_failures_fail_cleanly)
{
    static const char *const inputs[][2] = {
        {"a.md", "---\ntitle: T\n---\n# H\ntext [l](u)\n\n```\ncode\n```\n- item\n"},
        {"a.html", "<title>T</title><h1>H</h1><p>a &amp; b</p><pre> x </pre>"},
        {"a.txt", "one\n\ntwo three four five six seven"},
    };
    for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
        int ok_at = -1;
        for (int fail_at = 0; fail_at < 200 && ok_at < 0; fail_at++) {
            rag_doc *doc = NULL;
            char err[DK_ERRLEN];
            dk_alloc_fail_after(fail_at);
            int rc = rag_read_buffer(inputs[k][0], inputs[k][1], strlen(inputs[k][1]), NULL, &doc, err);
            dk_alloc_fail_after(-1);
            if (rc != DK_OK) {
                CHECK_MSG(rc == DK_ERR_NOMEM, "%s, failing at %d: rc %d (%s)", inputs[k][0], fail_at, rc, err);
                CHECK(doc == NULL);
                continue;
            }
            ok_at = fail_at;
            check_doc_shape(doc);
            rag_doc_free(doc);
        }
        CHECK_MSG(ok_at > 0, "%s never succeeded", inputs[k][0]);
    }
}
