/*
 * test_agent_docs.c: answers from documents (suite `agent_docs`): agent_ask_docs and the SQL
 * agent's search_docs tool over a real store (docs_corpus.c: four files ingested with the
 * kit's bert-tiny). The models are scripted OpenAI-compatible stand-ins (openai_standin.c),
 * whose recorded requests show what the model was given: the passages numbered right in the
 * prompt, the budget that cuts them, no tools; the answer's sources and its citations (valid
 * and invalid); filters that reach the search (and no model asked when nothing matches); the
 * SQL agent that searches, queries and answers with both; numbering across searches. Then a
 * real local model (stories260K) runs both paths end to end: its words are nonsense, the
 * structure is checked.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_tools.h"
#include "base/base.h"
#include "docs_corpus.h"
#include "openai_standin.h"
#include "sql/sql.h"
#include "test.h"
#include "test_duckdb.h"

static agent_llm *standin_model(standin *s, const char *model)
{
    char spec[256], err[DK_ERRLEN];
    snprintf(spec, sizeof spec, "%s#%s", standin_url(s), model);
    agent_llm *llm = NULL;
    if (agent_llm_openai(&llm, spec, NULL, err) != DK_OK) test_log("llm: %s", err);
    return llm;
}

/* One agent_ask_docs against a stand-in. */
typedef struct docs_run {
    standin *server;
    agent_llm *llm;
    rag_store *store;
    engine_model *bert;
    agent_docs_config cfg;
    json_t *answer;
    int rc;
    char err[DK_ERRLEN];
} docs_run;

static int docs_run_start(docs_run *r, const char *script)
{
    memset(r, 0, sizeof *r);
    agent_docs_config_default(&r->cfg);
    if (standin_start(&r->server, script, r->err) != DK_OK) {
        test_log("standin: %s", r->err);
        return -1;
    }
    r->llm = standin_model(r->server, "m");
    r->store = docs_corpus_open();
    r->bert = docs_corpus_embedder();
    r->cfg.model = r->llm;
    r->cfg.store = r->store;
    r->cfg.store_name = "corpus.duckdb";
    r->cfg.embedder = r->bert;
    r->cfg.search.mode = RAG_MODE_KEYWORD; /* bert-tiny's vectors rank at random: keywords are certain */
    return r->llm && r->store && r->bert ? 0 : -1;
}

static void docs_run_ask(docs_run *r, const char *question)
{
    json_decref(r->answer);
    r->answer = NULL;
    r->rc = agent_ask_docs(&r->cfg, question, &r->answer, r->err);
    if (r->rc != DK_OK) test_log("agent_ask_docs: %s", r->err);
}

static void docs_run_end(docs_run *r)
{
    json_decref(r->answer);
    agent_llm_free(r->llm);
    rag_store_close(r->store);
    engine_model_free(r->bert);
    standin_stop(r->server);
}

/* messages[i].content of the n-th request the stand-in received. */
static const char *request_message(json_t *requests, size_t n, size_t i)
{
    const json_t *msgs = json_object_get(json_object_get(json_array_get(requests, n), "body"), "messages");
    return json_string_value(json_object_get(json_array_get(msgs, i), "content"));
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = s ? strlen(s) : 0, m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

static json_int_t int_at(const json_t *arr, size_t i) { return json_integer_value(json_array_get(arr, i)); }

/* The citations of text against n sources as "valid|invalid", e.g. "2,1|7". */
static void citations_of(const char *text, size_t n, char *out, size_t size)
{
    json_t *valid = NULL, *invalid = NULL;
    char err[DK_ERRLEN];
    if (agent_citations(text, n, &valid, &invalid, err) != DK_OK) {
        dk_strlcpy(out, err, size);
        return;
    }
    dk_buf b = {0};
    size_t i;
    const json_t *x;
    json_array_foreach(valid, i, x) dk_buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(x));
    dk_buf_putc(&b, '|');
    json_array_foreach(invalid, i, x) dk_buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(x));
    snprintf(out, size, "%s", b.data ? b.data : "");
    dk_buf_free(&b);
    json_decref(valid);
    json_decref(invalid);
}

TEST(agent_docs, citation_forms)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"", "|"},
        {"no citations at all", "|"},
        {"a [2] b [1] c [2]", "2,1|"},
        {"both [1, 3] and [3,2]", "1,3,2|"},
        {"glued [1][4][2]", "1,2|4"},
        {"spaces [ 2 ] inside", "2|"},
        {"zero [0] and big [99]", "|0,99"},
        {"not citations: [a], [1a], [1,], [], [1 2], [1234567]", "|"},
        {"nested [[2]] and open [3", "2|"},
        {"a link [text](http://x) then [1]", "1|"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char got[128];
        citations_of(cases[i].text, 3, got, sizeof got);
        CHECK_MSG(strcmp(got, cases[i].want) == 0, "'%s': %s, not %s", cases[i].text, got, cases[i].want);
    }
}

TEST(agent_docs, prompt_sources_and_citations)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"content\": \"Zyxor erupted in 1872 [1]. See also [2] and [1, 9].\","
                               " \"prompt_tokens\": 321, \"completion_tokens\": 12}]}") == 0);
    r.cfg.search.k = 1;
    docs_run_ask(&r, "When did Mount Zyxor erupt?");
    REQUIRE(r.rc == DK_OK);
    json_t *reqs = standin_requests(r.server);
    REQUIRE(json_array_size(reqs) == 1);
    const json_t *body = json_object_get(json_array_get(reqs, 0), "body");
    CHECK(json_object_get(body, "tools") == NULL); /* one turn, no tools */
    const char *system = request_message(reqs, 0, 0), *user = request_message(reqs, 0, 1);
    CHECK(system && strstr(system, "only the numbered sources") && strstr(system, "[1]"));
    /* the passage, numbered, with its path and heading, then the question */
    char head[1400];
    snprintf(head, sizeof head, "[1] %s/volcano.md \xc2\xa7 Volcanoes\n", docs_corpus_dir());
    CHECK_MSG(user && strstr(user, head), "user message: %s", user ? user : "(null)");
    CHECK(user && strstr(user, "erupted in 1872"));
    CHECK(user && !strstr(user, "[2]"));
    CHECK(user && ends_with(user, "Question: When did Mount Zyxor erupt?"));
    json_decref(reqs);

    const json_t *a = r.answer;
    CHECK_EQ_STR(json_string_value(json_object_get(a, "answer")), "Zyxor erupted in 1872 [1]. See also [2] and [1, 9].");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "question")), "When did Mount Zyxor erupt?");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "m");
    const json_t *sources = json_object_get(a, "sources");
    REQUIRE(json_array_size(sources) == 1);
    const json_t *s0 = json_array_get(sources, 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(s0, "n")), 1);
    CHECK(ends_with(json_string_value(json_object_get(s0, "path")), "/volcano.md"));
    CHECK_EQ_STR(json_string_value(json_object_get(s0, "heading")), "Volcanoes");
    CHECK_EQ_STR(json_string_value(json_object_get(s0, "unit")), "byte");
    CHECK(strstr(json_string_value(json_object_get(s0, "text")), "1872") != NULL);
    json_int_t start = json_integer_value(json_object_get(s0, "start")), end = json_integer_value(json_object_get(s0, "end"));
    CHECK(start >= 0 && end > start);
    CHECK(json_real_value(json_object_get(s0, "score")) > 0);
    /* [1] valid (once, though cited twice); [2] and [9] are no sources */
    const json_t *cited = json_object_get(a, "citations"), *bad = json_object_get(a, "invalid_citations");
    CHECK_EQ_INT(json_array_size(cited), 1);
    CHECK_EQ_INT(int_at(cited, 0), 1);
    CHECK_EQ_INT(json_array_size(bad), 2);
    CHECK_EQ_INT(int_at(bad, 0), 2);
    CHECK_EQ_INT(int_at(bad, 1), 9);
    const json_t *usage = json_object_get(json_object_get(a, "usage"), "m");
    CHECK_EQ_INT(json_integer_value(json_object_get(usage, "prompt_tokens")), 321);
    CHECK_EQ_INT(json_integer_value(json_object_get(usage, "completion_tokens")), 12);
    const json_t *steps = json_object_get(a, "steps");
    CHECK_EQ_INT(json_array_size(steps), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(steps, 0), "kind")), "search");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(steps, 0), "passages")), 1);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(steps, 1), "kind")), "answer");
    docs_run_end(&r);
}

TEST(agent_docs, several_sources_in_rank_order)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"content\": \"Green [2], forty ships [1][2]; and [3,1].\"}]}") == 0);
    r.cfg.search.k = 3;
    docs_run_ask(&r, "Varn harbor lighthouse tea Brindle");
    REQUIRE(r.rc == DK_OK);
    const json_t *sources = json_object_get(r.answer, "sources");
    REQUIRE(json_array_size(sources) >= 2);
    json_t *reqs = standin_requests(r.server);
    const char *user = request_message(reqs, 0, 1);
    /* each source's number goes with its path, in the order of the sources */
    for (size_t i = 0; i < json_array_size(sources); i++) {
        const json_t *s = json_array_get(sources, i);
        char head[1400];
        snprintf(head, sizeof head, "[%zu] %s", i + 1, json_string_value(json_object_get(s, "path")));
        CHECK_MSG(user && strstr(user, head), "no '%s' in the prompt", head);
        CHECK_EQ_INT(json_integer_value(json_object_get(s, "n")), (json_int_t)i + 1);
        if (i) CHECK(json_real_value(json_object_get(s, "score")) <= json_real_value(json_object_get(json_array_get(sources, i - 1), "score")));
    }
    json_decref(reqs);
    const json_t *cited = json_object_get(r.answer, "citations");
    CHECK_EQ_INT(int_at(cited, 0), 2);
    CHECK_EQ_INT(int_at(cited, 1), 1);
    if (json_array_size(sources) >= 3) {
        CHECK_EQ_INT(json_array_size(cited), 3);
        CHECK_EQ_INT(int_at(cited, 2), 3);
    }
    docs_run_end(&r);
}

TEST(agent_docs, filters_reach_the_search)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"content\": \"Smoked over pine [1].\"}]}") == 0);
    char tea[1200];
    snprintf(tea, sizeof tea, "%s/tea.txt", docs_corpus_dir());
    /* only tea.txt may answer: a question about the volcano finds nothing, no model is asked */
    r.cfg.search.filter.source = tea;
    docs_run_ask(&r, "When did Mount Zyxor erupt?");
    REQUIRE(r.rc == DK_OK);
    CHECK_EQ_STR(json_string_value(json_object_get(r.answer, "answer")), "No matching passages in corpus.duckdb.");
    CHECK_EQ_INT(json_array_size(json_object_get(r.answer, "sources")), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(r.answer, "citations")), 0);
    CHECK(json_is_null(json_object_get(r.answer, "model")));
    CHECK_EQ_INT(standin_n_requests(r.server, NULL), 0);
    /* a path glob */
    r.cfg.search.filter.source = NULL;
    r.cfg.search.filter.path_glob = "*/tea.txt";
    docs_run_ask(&r, "Brindle tea and Mount Zyxor");
    REQUIRE(r.rc == DK_OK);
    const json_t *sources = json_object_get(r.answer, "sources");
    REQUIRE(json_array_size(sources) >= 1);
    for (size_t i = 0; i < json_array_size(sources); i++)
        CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(sources, i), "path")), tea);
    CHECK_EQ_INT(standin_n_requests(r.server, NULL), 1);
    /* dates: every file was written just now */
    r.cfg.search.filter.path_glob = NULL;
    r.cfg.search.filter.after = 4102444800; /* 2100-01-01 */
    docs_run_ask(&r, "Brindle tea");
    REQUIRE(r.rc == DK_OK);
    CHECK_EQ_INT(json_array_size(json_object_get(r.answer, "sources")), 0);
    r.cfg.store_name = NULL;
    docs_run_ask(&r, "Brindle tea");
    CHECK_EQ_STR(json_string_value(json_object_get(r.answer, "answer")), "No matching passages in the store.");
    CHECK_EQ_INT(standin_n_requests(r.server, NULL), 1);
    docs_run_end(&r);
}

TEST(agent_docs, the_budget_cuts_sources)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"content\": \"ok\"}]}") == 0);
    r.cfg.search.k = 1;
    r.cfg.max_source_chars = 60; /* below the minimum share: 80 bytes */
    docs_run_ask(&r, "Brindle tea plantation");
    REQUIRE(r.rc == DK_OK);
    json_t *reqs = standin_requests(r.server);
    const char *user = request_message(reqs, 0, 1);
    REQUIRE(user);
    const char *text = strstr(user, "[1] ");
    REQUIRE(text);
    text = strchr(text, '\n'); /* after the "[1] path" line */
    REQUIRE(text);
    const char *q = strstr(text, "\n\nQuestion:");
    REQUIRE(q);
    size_t n = (size_t)(q - text - 1);
    CHECK_MSG(n <= 80 + 4 && n > 40, "%zu bytes of passage: %.*s", n, (int)n, text + 1);
    CHECK(strstr(text, " ...\n\nQuestion:") != NULL);
    CHECK(strstr(text, "resin") == NULL);
    /* the source itself keeps its whole text */
    CHECK(strstr(json_string_value(json_object_get(json_array_get(json_object_get(r.answer, "sources"), 0), "text")),
                 "resin") != NULL);
    json_decref(reqs);
    docs_run_end(&r);
}

TEST(agent_docs, model_errors_and_bad_arguments)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"status\": 503, \"error\": \"overloaded\"}]}") == 0);
    docs_run_ask(&r, "Brindle tea");
    CHECK_EQ_INT(r.rc, DK_ERR_IO);
    CHECK(strstr(r.err, "overloaded") != NULL);
    CHECK(r.answer == NULL);
    json_t *a = NULL;
    char err[DK_ERRLEN];
    CHECK(agent_ask_docs(&r.cfg, "", &a, err) == DK_ERR_ARG);
    agent_docs_config no_store = r.cfg;
    no_store.store = NULL;
    CHECK(agent_ask_docs(&no_store, "tea?", &a, err) == DK_ERR_ARG);
    /* a vector search without the embedder is the search's error */
    agent_docs_config no_embedder = r.cfg;
    no_embedder.embedder = NULL;
    no_embedder.search.mode = RAG_MODE_VECTOR;
    CHECK(agent_ask_docs(&no_embedder, "tea?", &a, err) != DK_OK);
    CHECK(a == NULL);
    docs_run_end(&r);
}

TEST(agent_docs, hybrid_search_finds_the_keyword_passage)
{
    docs_run r;
    REQUIRE(docs_run_start(&r, "{\"m\": [{\"content\": \"[1]\"}]}") == 0);
    r.cfg.search.mode = RAG_MODE_HYBRID;
    r.cfg.search.k = 4;
    docs_run_ask(&r, "Kappa-7 robot Oslo");
    REQUIRE(r.rc == DK_OK);
    const json_t *sources = json_object_get(r.answer, "sources");
    bool found = false;
    for (size_t i = 0; i < json_array_size(sources); i++)
        found |= ends_with(json_string_value(json_object_get(json_array_get(sources, i), "path")), "/robots.md");
    CHECK(found);
    docs_run_end(&r);
}

/* ---- the SQL agent with search_docs ---- */

static const char docs_shop_schema[] =
    "CREATE TABLE ships (id INTEGER PRIMARY KEY, name VARCHAR, port VARCHAR);"
    "INSERT INTO ships VALUES (1, 'Aurora', 'Varn'), (2, 'Borealis', 'Varn'), (3, 'Cirrus', 'Quelm');"
    "CHECKPOINT;";

typedef struct sql_docs_run {
    standin *server;
    agent_llm *llm;
    rag_store *store;
    engine_model *bert;
    sql_db *db;
    agent_config cfg;
    json_t *answer;
    int rc;
    char err[DK_ERRLEN];
} sql_docs_run;

static int sql_docs_start(sql_docs_run *r, const char *script)
{
    memset(r, 0, sizeof *r);
    agent_config_default(&r->cfg);
    if (standin_start(&r->server, script, r->err) != DK_OK) {
        test_log("standin: %s", r->err);
        return -1;
    }
    r->llm = standin_model(r->server, "m");
    r->store = docs_corpus_open();
    r->bert = docs_corpus_embedder();
    r->db = test_duckdb_open("docs_ships", docs_shop_schema);
    r->cfg.model = r->llm;
    r->cfg.docs = r->store;
    r->cfg.embedder = r->bert;
    r->cfg.docs_search.mode = RAG_MODE_KEYWORD;
    r->cfg.docs_search.k = 1;
    return r->llm && r->store && r->bert && r->db ? 0 : -1;
}

static void sql_docs_end(sql_docs_run *r)
{
    json_decref(r->answer);
    sql_db_free(r->db);
    agent_llm_free(r->llm);
    rag_store_close(r->store);
    engine_model_free(r->bert);
    standin_stop(r->server);
}

/* The content of the last "tool" message of the n-th request. */
static const char *last_tool_result(json_t *requests, size_t n)
{
    const json_t *msgs = json_object_get(json_object_get(json_array_get(requests, n), "body"), "messages");
    const char *last = NULL;
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "tool") == 0) last = json_string_value(json_object_get(m, "content"));
    }
    return last;
}

static const char *step_kind(const json_t *answer, size_t i)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(answer, "steps"), i), "kind"));
}

TEST(agent_docs, sql_agent_searches_then_queries)
{
    sql_docs_run r;
    REQUIRE(sql_docs_start(&r,
                           "{\"m\": ["
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Varn harbor ships\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": "
                           "\"SELECT count(*) AS n FROM ships WHERE port = 'Varn'\"}}]},"
                           " {\"content\": \"Varn handles forty ships a day [1]; two of ours sail from it.\"}]}") == 0);
    r.rc = agent_ask(&r.cfg, r.db, "How busy is Varn, and how many of our ships sail from it?", &r.answer, r.err);
    REQUIRE_MSG(r.rc == DK_OK, "%s", r.err);
    json_t *reqs = standin_requests(r.server);
    REQUIRE(json_array_size(reqs) == 3);
    /* the three tools, and the system prompt tells of the documents */
    const json_t *tools = json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "tools");
    CHECK_EQ_INT(json_array_size(tools), 3);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_array_get(tools, 2), "function"), "name")),
                 "search_docs");
    const char *system = request_message(reqs, 0, 0);
    CHECK(system && strstr(system, "search_docs") && strstr(system, "ships"));
    /* the passages, numbered, went back to the model */
    const char *seen = last_tool_result(reqs, 1);
    char head[1400];
    snprintf(head, sizeof head, "[1] %s/harbor.md \xc2\xa7 Harbor\n", docs_corpus_dir());
    CHECK_MSG(seen && strstr(seen, head) && strstr(seen, "forty ships"), "tool result: %s", seen ? seen : "(null)");
    /* after a search the endpoint chooses */
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_array_get(reqs, 1), "body"), "tool_choice")), "auto");
    json_decref(reqs);
    const json_t *a = r.answer;
    CHECK_EQ_STR(json_string_value(json_object_get(a, "sql")), "SELECT count(*) AS n FROM ships WHERE port = 'Varn'");
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(json_object_get(a, "rows"), 0), 0)), 2);
    const json_t *sources = json_object_get(a, "sources");
    REQUIRE(json_array_size(sources) == 1);
    CHECK(ends_with(json_string_value(json_object_get(json_array_get(sources, 0), "path")), "/harbor.md"));
    CHECK_EQ_INT(json_array_size(json_object_get(a, "citations")), 1);
    CHECK_EQ_INT(int_at(json_object_get(a, "citations"), 0), 1);
    CHECK_EQ_INT(json_array_size(json_object_get(a, "invalid_citations")), 0);
    CHECK_EQ_STR(step_kind(a, 0), "search");
    CHECK_EQ_STR(step_kind(a, 1), "sql");
    CHECK_EQ_STR(step_kind(a, 2), "answer");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(a, "steps"), 0), "query")),
                 "Varn harbor ships");
    sql_docs_end(&r);
}

TEST(agent_docs, sql_agent_numbers_across_searches)
{
    sql_docs_run r;
    REQUIRE(sql_docs_start(&r,
                           "{\"m\": ["
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Varn lighthouse\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Brindle tea\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"lighthouse of Varn\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"nothing-like-this\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {}}]},"
                           " {\"content\": \"Green [1], smoked tea [2], and [3].\"}]}") == 0);
    r.cfg.max_steps = 8;
    r.rc = agent_ask(&r.cfg, r.db, "What colour is the lighthouse and how is the tea made?", &r.answer, r.err);
    REQUIRE_MSG(r.rc == DK_OK, "%s", r.err);
    json_t *reqs = standin_requests(r.server);
    REQUIRE(json_array_size(reqs) == 6);
    const char *second = last_tool_result(reqs, 2), *third = last_tool_result(reqs, 3);
    const char *fourth = last_tool_result(reqs, 4), *fifth = last_tool_result(reqs, 5);
    CHECK(second && strncmp(second, "[2] ", 4) == 0 && strstr(second, "tea.txt"));
    CHECK(third && strncmp(third, "[1] ", 4) == 0 && strstr(third, "harbor.md")); /* shown before: its number */
    CHECK(fourth && strstr(fourth, "No passages match"));
    CHECK(fifth && strstr(fifth, "Error: search_docs needs"));
    json_decref(reqs);
    const json_t *a = r.answer;
    CHECK(json_is_null(json_object_get(a, "sql"))); /* answered from the passages alone */
    CHECK_EQ_STR(json_string_value(json_object_get(a, "answer")), "Green [1], smoked tea [2], and [3].");
    CHECK(json_object_get(a, "error") == NULL);
    const json_t *sources = json_object_get(a, "sources");
    REQUIRE(json_array_size(sources) == 2);
    CHECK(ends_with(json_string_value(json_object_get(json_array_get(sources, 1), "path")), "/tea.txt"));
    CHECK_EQ_INT(json_array_size(json_object_get(a, "citations")), 2);
    CHECK_EQ_INT(int_at(json_object_get(a, "invalid_citations"), 0), 3);
    const json_t *bad_step = json_array_get(json_object_get(a, "steps"), 4);
    CHECK(json_is_false(json_object_get(bad_step, "ok")));
    sql_docs_end(&r);
}

TEST(agent_docs, sql_agent_without_docs_is_unchanged)
{
    sql_docs_run r;
    REQUIRE(sql_docs_start(&r,
                           "{\"m\": ["
                           " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Varn\"}}]},"
                           " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT 1 AS one\"}}]},"
                           " {\"content\": \"one\"}]}") == 0);
    r.cfg.docs = NULL;
    r.rc = agent_ask(&r.cfg, r.db, "One?", &r.answer, r.err);
    REQUIRE(r.rc == DK_OK);
    json_t *reqs = standin_requests(r.server);
    const json_t *tools = json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "tools");
    CHECK_EQ_INT(json_array_size(tools), 2);
    const char *seen = last_tool_result(reqs, 1);
    CHECK(seen && strstr(seen, "no tool search_docs; the tools are run_sql and describe_table."));
    CHECK(!strstr(request_message(reqs, 0, 0), "search_docs"));
    json_decref(reqs);
    CHECK(json_object_get(r.answer, "sources") == NULL);
    CHECK(json_object_get(r.answer, "citations") == NULL);
    CHECK_EQ_STR(step_kind(r.answer, 0), "error");
    sql_docs_end(&r);
}

/* ---- a real local model ---- */

static engine_model *load_stories(void)
{
    char path[1024], err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    if (engine_model_load(&m, test_kit_file(path, sizeof path, "forward/stories260K/stories260K.F32.gguf"), &lp, err) !=
        DK_OK)
        test_log("stories260K: %s", err);
    return m;
}

TEST(agent_docs, local_model_end_to_end)
{
    char err[DK_ERRLEN];
    engine_model *stories = load_stories(), *bert = docs_corpus_embedder();
    rag_store *store = docs_corpus_open();
    engine_session *session = NULL;
    agent_llm *llm = NULL;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 8192; /* past its 128 trained positions: the words are nonsense, the path is real */
    sp.n_threads = 1;
    REQUIRE(stories && bert && store);
    REQUIRE(engine_session_new(&session, stories, &sp, err) == DK_OK);
    REQUIRE(agent_llm_local(&llm, session, "stories260K", err) == DK_OK);

    agent_docs_config cfg;
    agent_docs_config_default(&cfg);
    cfg.model = llm;
    cfg.store = store;
    cfg.embedder = bert;
    cfg.search.k = 2;
    cfg.search.mode = RAG_MODE_KEYWORD;
    cfg.max_source_chars = 300;
    cfg.max_tokens = 24;
    json_t *a = NULL;
    int rc = agent_ask_docs(&cfg, "Where was the robot Kappa-7 built?", &a, err);
    CHECK_MSG(rc == DK_OK, "%s", err);
    if (rc == DK_OK) {
        const json_t *sources = json_object_get(a, "sources");
        CHECK(json_array_size(sources) >= 1 && json_array_size(sources) <= 2);
        CHECK(ends_with(json_string_value(json_object_get(json_array_get(sources, 0), "path")), "/robots.md"));
        CHECK(json_is_string(json_object_get(a, "answer")));
        CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "stories260K");
        const json_t *u = json_object_get(json_object_get(a, "usage"), "stories260K");
        CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) > 50);
        CHECK(json_integer_value(json_object_get(u, "completion_tokens")) >= 1);
        CHECK(json_is_array(json_object_get(a, "citations")) && json_is_array(json_object_get(a, "invalid_citations")));
    }
    json_decref(a);
    a = NULL;

    /* the SQL agent's grammar path with the third tool: every step is a tool the loop knows */
    sql_db *db = test_duckdb_open("docs_ships", docs_shop_schema);
    REQUIRE(db);
    agent_config ac;
    agent_config_default(&ac);
    ac.model = llm;
    ac.docs = store;
    ac.embedder = bert;
    ac.docs_search.k = 1;
    ac.docs_search.mode = RAG_MODE_KEYWORD;
    ac.docs_max_chars = 200;
    ac.max_tokens = 48;
    ac.max_steps = 3;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        ac.seed = seed;
        ac.temperature = 1.0f;
        rc = agent_ask(&ac, db, "Which ships sail from Varn?", &a, err);
        CHECK_MSG(rc == DK_OK, "seed %llu: %s", (unsigned long long)seed, err);
        size_t i;
        const json_t *st;
        dk_buf kinds = {0};
        json_array_foreach(json_object_get(a, "steps"), i, st) {
            const char *kind = json_string_value(json_object_get(st, "kind"));
            dk_buf_printf(&kinds, " %s", kind ? kind : "?");
            CHECK(kind && (strcmp(kind, "sql") == 0 || strcmp(kind, "search") == 0 || strcmp(kind, "describe") == 0 ||
                           strcmp(kind, "answer") == 0 || strcmp(kind, "error") == 0));
            if (kind && strcmp(kind, "search") == 0) CHECK(json_is_string(json_object_get(st, "query")));
        }
        CHECK(json_is_array(json_object_get(a, "sources")));
        test_log("stories260K, seed %llu, steps:%s", (unsigned long long)seed, kinds.data ? kinds.data : "");
        dk_buf_free(&kinds);
        json_decref(a);
        a = NULL;
    }
    sql_db_free(db);
    agent_llm_free(llm);
    engine_session_free(session);
    rag_store_close(store);
    engine_model_free(bert);
    engine_model_free(stories);
}
