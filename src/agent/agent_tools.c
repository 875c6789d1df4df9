/*
 * agent_tools.c: what the SQL agent shows a model and what its tools do. The system prompt
 * (instructions and the schema description), the two tools in the OpenAI form (run_sql, whose
 * "sql" argument a local model writes under the DuckDB SELECT grammar through "x-gbnf", and
 * describe_table, whose "table" is one of the schema's names), and their execution through
 * sql/: a query behind the read-only guard and the limits, its result as the compact table the
 * model reads, DuckDB's error as text the model can repair from.
 */
#include "agent/agent_tools.h"

#include <string.h>

#define AGENT_SQL_RULE "agent-sql"
#define AGENT_DESCRIBE_SAMPLE_ROWS 5
#define AGENT_MAX_TABLE_ENUM 200

int agent_system_prompt(sql_db *db, const char *question, int max_tables, size_t max_rows, bool docs, dk_buf *out,
                        char *err)
{
    dk_buf_printf(out,
                  "You answer questions about the user's DuckDB database. Call the run_sql tool with one "
                  "DuckDB SELECT query; you get its result (at most %zu rows) or DuckDB's error, and when it "
                  "is an error you fix the query and call run_sql again. describe_table shows a table's "
                  "columns and a few rows. Once you have the result, answer the question in one or two "
                  "plain sentences that quote the numbers of the result. Only SELECT queries can run: "
                  "the data cannot be changed.\n\n",
                  max_rows);
    if (docs)
        dk_buf_puts(out, "The user's documents can be searched with search_docs: it returns numbered passages. "
                         "When the question is about the documents, search them and answer from the passages, "
                         "citing each one you use by its number in brackets, like [1]. A question may need both "
                         "the documents and the database.\n\n");
    dk_buf_puts(out, "The database:\n");
    sql_describe_opts o = {.n_samples = 3, .max_tables = max_tables};
    int rc = sql_describe(db, question, &o, out, err);
    if (rc == DK_OK && out->failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return rc;
}

/* The names of the tables and views (for describe_table's enum), at most AGENT_MAX_TABLE_ENUM. */
static int agent_table_names(sql_db *db, json_t *names, char *err)
{
    sql_result *r = NULL;
    int rc = sql_query(db,
                       "SELECT table_name FROM duckdb_tables() WHERE NOT internal UNION "
                       "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1",
                       &(sql_limits){.max_rows = AGENT_MAX_TABLE_ENUM, .timeout_ms = 5000}, &r, err);
    for (size_t i = 0; rc == DK_OK && i < sql_result_n_rows(r); i++)
        if (json_array_append_new(names, json_string(sql_result_value(r, i, 0))) != 0)
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    sql_result_free(r);
    return rc;
}

static json_t *agent_tool(const char *name, const char *description, json_t *parameters)
{
    return json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function", "function", "name", name, "description",
                     description, "parameters", parameters);
}

int agent_tools_build(sql_db *db, bool for_grammar, json_t **out, char *err)
{
    *out = NULL;
    json_t *names = json_array();
    if (!names) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = agent_table_names(db, names, err);
    if (rc != DK_OK) {
        json_decref(names);
        return rc;
    }
    json_t *sql = json_pack("{s:s, s:s}", "type", "string", "description", "one DuckDB SELECT query");
    if (sql && for_grammar) json_object_set_new(sql, "x-gbnf", json_string(AGENT_SQL_RULE));
    json_t *table = json_pack("{s:s, s:s}", "type", "string", "description", "a table or view name");
    if (table && json_array_size(names) > 0) json_object_set(table, "enum", names);
    json_decref(names);
    json_t *run = sql ? agent_tool("run_sql", "Run one read-only DuckDB SELECT query and return its result rows.",
                                   json_pack("{s:s, s:{s:o}, s:[s]}", "type", "object", "properties", "sql", sql,
                                             "required", "sql"))
                      : NULL;
    json_t *describe = table ? agent_tool("describe_table", "Show a table's columns, types and a few example rows.",
                                          json_pack("{s:s, s:{s:o}, s:[s]}", "type", "object", "properties", "table",
                                                    table, "required", "table"))
                             : NULL;
    json_t *tools = run && describe ? json_pack("[oo]", run, describe) : NULL;
    if (!tools) {
        if (!run || !describe) {
            json_decref(run);
            json_decref(describe);
        }
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = tools;
    return DK_OK;
}

int agent_sql_grammar(sql_db *db, const char *question, int max_tables, char **out, char *err)
{
    *out = NULL;
    dk_buf g = {0};
    sql_grammar_opts o = {.root = AGENT_SQL_RULE, .json_string = 1, .max_tables = max_tables};
    int rc = sql_grammar(db, question, &o, &g, err);
    if (rc == DK_OK && g.failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) *out = dk_buf_detach(&g);
    dk_buf_free(&g);
    return rc;
}

int agent_run_sql(sql_db *db, const char *sql, const sql_limits *limits, sql_result **result, dk_buf *text, char *err)
{
    *result = NULL;
    char why[DK_ERRLEN];
    int rc = sql_query(db, sql, limits, result, why);
    if (rc == DK_ERR_NOMEM) return dk_fail(err, rc, "%s", why);
    if (rc != DK_OK) {
        /* not the agent's failure: the model reads the error and repairs its query */
        dk_buf_printf(text, "Error: %s\nFix the query and call run_sql again.", why);
        dk_fail(err, rc, "%s", why);
        return rc;
    }
    size_t n = sql_result_n_rows(*result);
    if (n == 0) dk_buf_puts(text, "The query returned no rows.");
    else {
        dk_buf_printf(text, "%zu row%s:\n", n, n == 1 ? "" : "s");
        if (sql_result_table(*result, text, 0) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (text->failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

/* "name" quoted as a DuckDB identifier. */
static void agent_put_ident(dk_buf *b, const char *name)
{
    dk_buf_putc(b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"') dk_buf_putc(b, '"');
        dk_buf_putc(b, *p);
    }
    dk_buf_putc(b, '"');
}

int agent_describe_table(sql_db *db, const char *table, dk_buf *text, char *err)
{
    dk_buf q = {0};
    dk_buf_puts(&q, "SELECT * FROM ");
    agent_put_ident(&q, table);
    dk_buf_printf(&q, " LIMIT %d", AGENT_DESCRIBE_SAMPLE_ROWS);
    if (q.failed) {
        dk_buf_free(&q);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    sql_result *r = NULL;
    char why[DK_ERRLEN];
    int rc = sql_query(db, q.data, &(sql_limits){.max_rows = AGENT_DESCRIBE_SAMPLE_ROWS, .timeout_ms = 5000}, &r, why);
    dk_buf_free(&q);
    if (rc == DK_ERR_NOMEM) return dk_fail(err, rc, "%s", why);
    if (rc != DK_OK) {
        dk_buf_printf(text, "Error: no table %s (%s)", table, why);
        return dk_fail(err, rc, "%s", why);
    }
    dk_buf_printf(text, "Table %s, columns:\n", table);
    for (size_t c = 0; c < sql_result_n_cols(r); c++)
        dk_buf_printf(text, "  %s %s\n", sql_result_col_name(r, c), sql_result_col_type_name(r, c));
    dk_buf_printf(text, "First %zu rows:\n", sql_result_n_rows(r));
    if (sql_result_table(r, text, 0) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    sql_result_free(r);
    if (rc == DK_OK && text->failed) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return rc;
}
