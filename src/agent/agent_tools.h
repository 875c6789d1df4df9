/*
 * agent_tools.h: inside agent/, the prompt and tools of the SQL agent (agent_tools.c), used by
 * the loop in agent.c, and the numbered sources and citations that search_docs and
 * agent_ask_docs share (agent_docs.c). Not part of the module's interface (agent.h).
 */
#ifndef DK_AGENT_TOOLS_H
#define DK_AGENT_TOOLS_H

#include "agent/agent.h"

/* The system message: instructions (with docs: how to use search_docs) and the schema
 * description (sql_describe). */
int agent_system_prompt(sql_db *db, const char *question, int max_tables, size_t max_rows, bool docs, dk_buf *out,
                        char *err);

/* The tools array [run_sql, describe_table] (new reference in *out). for_grammar: run_sql's
 * "sql" names the rule "agent-sql" with "x-gbnf" (local models); without, plain JSON schema. */
int agent_tools_build(sql_db *db, bool for_grammar, json_t **out, char *err);

/* The GBNF rules of "agent-sql" (SQL inside a JSON string) for db; *out is dk_free'd by the caller. */
int agent_sql_grammar(sql_db *db, const char *question, int max_tables, char **out, char *err);

/* Runs a model's query. DK_OK: *result (caller frees) and its table in text. A query DuckDB
 * refuses or that fails: its code and message, and in text the error for the model.
 * DK_ERR_NOMEM is the agent's own failure. */
int agent_run_sql(sql_db *db, const char *sql, const sql_limits *limits, sql_result **result, dk_buf *text, char *err);

/* describe_table: the columns and first rows of a table, into text (an error text when the
 * table does not exist, with its code). */
int agent_describe_table(sql_db *db, const char *table, dk_buf *text, char *err);

/* ---- documents (agent_docs.c) ---- */

/* Adds the passages of r to sources, a JSON array of source objects {"n", "path", "heading",
 * "start", "end", "unit", "score", "text", "chunk_id"} numbered from 1 in the order they were
 * first shown (a passage of the same chunk already there keeps its number and is not added
 * again), and writes them for the model into text: "[n] path § heading\ntext\n\n" each, the
 * texts cut to max_bytes together (each to an even share of what the ones before left, at
 * least 80 bytes; at a word, marked "..."). */
int agent_sources_add(json_t *sources, const rag_results *r, size_t max_bytes, dk_buf *text, char *err);

/* The source numbers answer cites ("[2]", "[1, 3]", "[1][4]"): those in 1..n_sources into
 * *valid, the others into *invalid (new arrays of integers, each number once, in order of
 * first appearance; the caller json_decref's them). */
int agent_citations(const char *answer, size_t n_sources, json_t **valid, json_t **invalid, char *err);

/* The search_docs tool (OpenAI form, new reference; NULL when out of memory). */
json_t *agent_search_docs_tool(void);

#endif
