/*
 * test_agent.c: the SQL agent end to end (suite `agent`) on a real DuckDB file built here.
 * The models are scripted OpenAI-compatible stand-ins served on 127.0.0.1 (openai_standin.c:
 * each answers with the tool calls it is given), so the loop is checked step by step: a
 * correct query, a failing query repaired from DuckDB's error, every kind of write attempt
 * refused with the file byte-for-byte unchanged, a runaway query stopped by the limits,
 * escalation to the larger model (SQL still failing, low confidence, the user's flag, an
 * unreachable model). Then real local models (stories260K, qwen2-tiny: random or tiny
 * weights) run the loop with their SQL generated under the grammar: it always parses.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "base/base.h"
#include "openai_standin.h"
#include "sql/sql.h"
#include "test.h"
#include "test_duckdb.h"

static const char agent_schema[] =
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR, city VARCHAR);"
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),"
    "  amount DECIMAL(10,2), status VARCHAR, ordered_at DATE);"
    "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bob', 'Lyon'), (3, 'Chloe', 'Paris');"
    "INSERT INTO orders VALUES (10, 1, 12.50, 'paid', '2024-01-03'), (11, 1, 3.00, 'open', '2024-02-01'),"
    "  (12, 2, 99.99, 'paid', '2024-02-11'), (13, 3, 7.25, 'refunded', '2024-03-05');"
    "CHECKPOINT;";

static const char *agent_db_path(void) { return test_duckdb_file("agent_shop", agent_schema); }

static sql_db *agent_db_open(void) { return test_duckdb_open("agent_shop", agent_schema); }

/* The stand-in's endpoint for a model, "URL#MODEL". */
static agent_llm *standin_llm(standin *s, const char *model)
{
    char spec[256], err[DK_ERRLEN];
    snprintf(spec, sizeof spec, "%s#%s", standin_url(s), model);
    agent_llm *llm = NULL;
    if (agent_llm_openai(&llm, spec, NULL, err) != DK_OK) test_log("llm: %s", err);
    return llm;
}

/* Runs the agent with a small (and maybe a large) stand-in model. */
typedef struct agent_run {
    standin *server;
    agent_llm *small, *large;
    sql_db *db;
    agent_config cfg;
    json_t *answer;
    int rc;
    char err[DK_ERRLEN];
} agent_run;

static int agent_run_start(agent_run *r, const char *script, bool with_large)
{
    memset(r, 0, sizeof *r);
    if (standin_start(&r->server, script, r->err) != DK_OK) {
        test_log("standin: %s", r->err);
        return -1;
    }
    r->small = standin_llm(r->server, "small");
    r->large = with_large ? standin_llm(r->server, "large") : NULL;
    r->db = agent_db_open();
    agent_config_default(&r->cfg);
    r->cfg.model = r->small;
    r->cfg.escalate_to = r->large;
    return r->small && r->db && (!with_large || r->large) ? 0 : -1;
}

static void agent_run_ask(agent_run *r, const char *question)
{
    r->rc = agent_ask(&r->cfg, r->db, question, &r->answer, r->err);
    if (r->rc != DK_OK) test_log("agent_ask: %s", r->err);
}

static void agent_run_end(agent_run *r)
{
    json_decref(r->answer);
    sql_db_free(r->db);
    agent_llm_free(r->small);
    agent_llm_free(r->large);
    standin_stop(r->server);
}

static double test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *step_str(const json_t *answer, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(answer, "steps"), i), key));
}

static size_t n_steps(const json_t *answer) { return json_array_size(json_object_get(answer, "steps")); }

/* The content of the last "tool" message of the n-th chat request the stand-in received. */
static const char *tool_result_seen(json_t *requests, size_t n)
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

TEST(agent, correct_query_then_answer)
{
    agent_run r;
    REQUIRE(agent_run_start(&r,
                            "{\"small\": ["
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": "
                            "   \"SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY n DESC\"}}]},"
                            " {\"content\": \"Paris has 2 customers and Lyon 1.\"}]}",
                            false) == 0);
    agent_run_ask(&r, "How many customers per city?");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK_EQ_STR(json_string_value(json_object_get(a, "answer")), "Paris has 2 customers and Lyon 1.");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "sql")),
                 "SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY n DESC");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "small");
    CHECK(json_is_false(json_object_get(a, "escalated")));
    const json_t *rows = json_object_get(a, "rows");
    CHECK_EQ_INT(json_array_size(rows), 2);
    CHECK_EQ_STR(json_string_value(json_array_get(json_array_get(rows, 0), 0)), "Paris");
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(rows, 0), 1)), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(a, "columns"), 1), "name")), "n");
    CHECK_EQ_INT(n_steps(a), 2);
    CHECK_EQ_STR(step_str(a, 0, "kind"), "sql");
    CHECK_EQ_STR(step_str(a, 1, "kind"), "answer");
    /* the model saw the schema first and the result table after its call */
    json_t *reqs = standin_requests(r.server);
    CHECK_EQ_INT(json_array_size(reqs), 2);
    const char *system = json_string_value(json_object_get(
        json_array_get(json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "messages"), 0), "content"));
    CHECK(system && strstr(system, "TABLE orders") && strstr(system, "customer_id INTEGER"));
    const char *seen = tool_result_seen(reqs, 1);
    CHECK(seen && strstr(seen, "Paris") && strstr(seen, "2 rows"));
    /* first turn: a call is required; after the result: the model may answer */
    const json_t *tc0 = json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "tool_choice");
    CHECK_EQ_STR(json_string_value(tc0), "required");
    CHECK(json_object_get(json_object_get(a, "usage"), "small") != NULL);
    json_decref(reqs);
    agent_run_end(&r);
}

TEST(agent, failing_query_is_repaired_from_duckdbs_error)
{
    agent_run r;
    REQUIRE(agent_run_start(&r,
                            "{\"small\": ["
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT sum(amount) FROM order\"}}]},"
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT sum(amont) FROM orders\"}}]},"
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": "
                            "   \"SELECT sum(amount) AS total FROM orders WHERE status = 'paid'\"}}]},"
                            " {\"content\": \"Paid orders total 112.49.\"}]}",
                            false) == 0);
    agent_run_ask(&r, "What is the total of paid orders?");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK_EQ_INT(n_steps(a), 4);
    CHECK(json_is_false(json_object_get(json_array_get(json_object_get(a, "steps"), 0), "ok")));
    CHECK(json_is_false(json_object_get(json_array_get(json_object_get(a, "steps"), 1), "ok")));
    CHECK(json_is_true(json_object_get(json_array_get(json_object_get(a, "steps"), 2), "ok")));
    CHECK_EQ_STR(json_string_value(json_object_get(a, "sql")), "SELECT sum(amount) AS total FROM orders WHERE status = 'paid'");
    CHECK_NEAR(json_number_value(json_array_get(json_array_get(json_object_get(a, "rows"), 0), 0)), 112.49, 1e-9);
    json_t *reqs = standin_requests(r.server);
    /* DuckDB's own words reached the model, with the hint to fix the query */
    const char *seen1 = tool_result_seen(reqs, 1), *seen2 = tool_result_seen(reqs, 2);
    CHECK(seen1 && strstr(seen1, "Error") && strstr(seen1, "order"));
    CHECK(seen2 && strstr(seen2, "amont"));
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_array_get(reqs, 2), "body"), "tool_choice")),
                 "required");
    json_decref(reqs);
    agent_run_end(&r);
}

/* Every way to write: each must be refused before it runs. */
static const char *const agent_write_attempts[] = {
    "INSERT INTO orders VALUES (99, 1, 1.00, 'x', '2024-01-01')",
    "UPDATE orders SET amount = 0",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE evil (x INTEGER)",
    "COPY orders TO '/tmp/duckling_agent_copy.csv'",
    "ATTACH '/tmp/duckling_agent_other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "EXPORT DATABASE '/tmp/duckling_agent_export'",
    "CALL pragma_version()",
    "SELECT 1; DROP TABLE orders",
    "SELECT 1 /* harmless */; DELETE FROM orders",
    "-- a comment\nDELETE FROM orders",
    "/* SELECT */ UPDATE orders SET status = 'x'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "CHECKPOINT",
    "VACUUM",
};
#define N_WRITES (sizeof agent_write_attempts / sizeof agent_write_attempts[0])

TEST(agent, write_attempts_are_refused_and_the_file_is_unchanged)
{
    const char *path = agent_db_path();
    REQUIRE(path);
    char *before = NULL, *after = NULL;
    size_t n_before = 0, n_after = 0;
    char err[DK_ERRLEN];
    REQUIRE(dk_file_read(path, 64u << 20, &before, &n_before, err) == DK_OK);
    /* the script: every write attempt as a call, then a good query and an answer */
    json_t *calls = json_array();
    for (size_t i = 0; i < N_WRITES; i++)
        json_array_append_new(calls, json_pack("{s:[{s:s, s:{s:s}}]}", "tool_calls", "name", "run_sql", "arguments", "sql",
                                               agent_write_attempts[i]));
    json_array_append_new(calls, json_pack("{s:[{s:s, s:{s:s}}]}", "tool_calls", "name", "run_sql", "arguments", "sql",
                                           "SELECT count(*) FROM orders"));
    json_array_append_new(calls, json_pack("{s:s}", "content", "There are 4 orders."));
    json_t *script = json_pack("{s:o}", "small", calls);
    char *text = json_dumps(script, JSON_COMPACT);
    json_decref(script);
    agent_run r;
    int started = agent_run_start(&r, text, false);
    free(text);
    REQUIRE(started == 0);
    r.cfg.max_repairs = (int)N_WRITES + 1;
    r.cfg.max_steps = (int)N_WRITES + 4;
    agent_run_ask(&r, "Delete everything please");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK_EQ_INT(n_steps(a), N_WRITES + 2);
    for (size_t i = 0; i < N_WRITES; i++) {
        const json_t *st = json_array_get(json_object_get(a, "steps"), i);
        CHECK_MSG(json_is_false(json_object_get(st, "ok")), "write %zu ran: %s", i, agent_write_attempts[i]);
        const char *e = json_string_value(json_object_get(st, "error"));
        CHECK_MSG(e && e[0], "no error for %s", agent_write_attempts[i]);
    }
    CHECK_EQ_STR(json_string_value(json_object_get(a, "sql")), "SELECT count(*) FROM orders");
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(json_object_get(a, "rows"), 0), 0)), 4);
    agent_run_end(&r);
    REQUIRE(dk_file_read(path, 64u << 20, &after, &n_after, err) == DK_OK);
    CHECK_EQ_INT(n_after, n_before);
    CHECK(n_after == n_before && memcmp(before, after, n_before) == 0);
    dk_free(before);
    dk_free(after);
    FILE *f = fopen("/tmp/duckling_agent_copy.csv", "r");
    CHECK(f == NULL);
    if (f) fclose(f);
}

TEST(agent, runaway_query_is_stopped_by_the_limits)
{
    agent_run r;
    REQUIRE(agent_run_start(&r,
                            "{\"small\": ["
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": "
                            "   \"SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range = 7\"}}]},"
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT * FROM range(100000)\"}}]},"
                            " {\"content\": \"done\"}]}",
                            false) == 0);
    r.cfg.limits.timeout_ms = 300;
    r.cfg.limits.max_rows = 10;
    double t0 = test_now_ms();
    agent_run_ask(&r, "count forever");
    double ms = test_now_ms() - t0;
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK(ms < 10000);
    const char *e = step_str(a, 0, "error");
    CHECK_MSG(e && strstr(e, "timed out"), "error: %s", e ? e : "(none)");
    CHECK_EQ_INT(json_array_size(json_object_get(a, "rows")), 10);
    CHECK(json_is_true(json_object_get(a, "truncated")));
    agent_run_end(&r);
}

static const char escalation_script[] =
    "{\"small\": ["
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT nope FROM orders\"}}]},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT nope2 FROM orders\"}}]},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": \"not json at all\"}]}],"
    " \"large\": ["
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT max(amount) AS top FROM orders\"}}]},"
    " {\"content\": \"The largest order is 99.99.\"}]}";

TEST(agent, escalates_when_the_small_models_sql_keeps_failing)
{
    agent_run r;
    REQUIRE(agent_run_start(&r, escalation_script, true) == 0);
    agent_run_ask(&r, "What is the largest order?");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "large");
    CHECK(json_is_true(json_object_get(a, "escalated")));
    CHECK_EQ_STR(json_string_value(json_object_get(a, "escalation_reason")), "sql_failed");
    CHECK_EQ_STR(json_string_value(json_object_get(a, "answer")), "The largest order is 99.99.");
    CHECK_EQ_INT(n_steps(a), 5);
    CHECK_EQ_STR(step_str(a, 0, "model"), "small");
    CHECK_EQ_STR(step_str(a, 2, "model"), "small");
    CHECK_EQ_STR(step_str(a, 3, "model"), "large");
    const json_t *usage = json_object_get(a, "usage");
    CHECK(json_object_get(usage, "small") && json_object_get(usage, "large"));
    CHECK_EQ_INT(standin_n_requests(r.server, "small"), 3);
    CHECK_EQ_INT(standin_n_requests(r.server, "large"), 2);
    agent_run_end(&r);
}

TEST(agent, without_a_larger_model_a_failing_question_says_so)
{
    agent_run r;
    REQUIRE(agent_run_start(&r, escalation_script, false) == 0);
    agent_run_ask(&r, "What is the largest order?");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *a = r.answer;
    CHECK(json_is_null(json_object_get(a, "sql")));
    CHECK(json_is_false(json_object_get(a, "escalated")));
    const char *e = json_string_value(json_object_get(a, "error"));
    CHECK(e && strstr(e, "sql"));
    CHECK(strstr(json_string_value(json_object_get(a, "answer")), "could not"));
    agent_run_end(&r);
}

TEST(agent, escalates_on_low_confidence_and_not_on_high)
{
    const char *fmt = "{\"small\": ["
                      " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) FROM customers\"}}],"
                      "  \"logprobs\": [%s]},"
                      " {\"content\": \"3 customers.\"}],"
                      " \"large\": ["
                      " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(id) FROM customers\"}}]},"
                      " {\"content\": \"There are 3 customers.\"}]}";
    const char *lps[2] = {"-3.0, -2.5, -4.0", "-0.01, -0.02, -0.001"};
    for (int k = 0; k < 2; k++) {
        char script[1024];
        snprintf(script, sizeof script, fmt, lps[k]);
        agent_run r;
        REQUIRE(agent_run_start(&r, script, true) == 0);
        r.cfg.min_confidence = 0.5;
        agent_run_ask(&r, "How many customers?");
        CHECK_EQ_INT(r.rc, DK_OK);
        json_t *a = r.answer;
        double conf = json_number_value(json_object_get(json_array_get(json_object_get(a, "steps"), 0), "confidence"));
        if (k == 0) {
            CHECK_EQ_STR(json_string_value(json_object_get(a, "escalation_reason")), "low_confidence");
            CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "large");
            CHECK_NEAR(conf, exp(-9.5 / 3), 1e-6);
        } else {
            CHECK(json_is_false(json_object_get(a, "escalated")));
            CHECK_EQ_STR(json_string_value(json_object_get(a, "model")), "small");
            CHECK_EQ_INT(standin_n_requests(r.server, "large"), 0);
        }
        agent_run_end(&r);
    }
}

TEST(agent, escalates_at_once_when_asked)
{
    agent_run r;
    REQUIRE(agent_run_start(&r, escalation_script, true) == 0);
    r.cfg.escalate_now = true;
    agent_run_ask(&r, "What is the largest order?");
    CHECK_EQ_INT(r.rc, DK_OK);
    CHECK_EQ_STR(json_string_value(json_object_get(r.answer, "escalation_reason")), "requested");
    CHECK_EQ_INT(standin_n_requests(r.server, "small"), 0);
    CHECK_EQ_INT(n_steps(r.answer), 2);
    agent_run_end(&r);
}

TEST(agent, an_unreachable_small_model_escalates_or_fails_cleanly)
{
    agent_run r;
    /* "small" has no script: the stand-in answers with an HTTP error */
    REQUIRE(agent_run_start(&r,
                            "{\"large\": ["
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT 42 AS answer\"}}]},"
                            " {\"content\": \"42\"}]}",
                            true) == 0);
    agent_run_ask(&r, "What is the answer?");
    CHECK_EQ_INT(r.rc, DK_OK);
    CHECK_EQ_STR(json_string_value(json_object_get(r.answer, "escalation_reason")), "model_error");
    CHECK_EQ_STR(step_str(r.answer, 0, "kind"), "error");
    agent_run_end(&r);

    REQUIRE(agent_run_start(&r, "{\"large\": []}", false) == 0);
    agent_run_ask(&r, "What is the answer?");
    CHECK_EQ_INT(r.rc, DK_ERR_IO);
    CHECK(strstr(r.err, "small") != NULL);
    CHECK(r.answer == NULL);
    agent_run_end(&r);
}

TEST(agent, describe_table_then_query)
{
    agent_run r;
    REQUIRE(agent_run_start(&r,
                            "{\"small\": ["
                            " {\"tool_calls\": [{\"name\": \"describe_table\", \"arguments\": {\"table\": \"orders\"}}]},"
                            " {\"tool_calls\": [{\"name\": \"drop_everything\", \"arguments\": {}}]},"
                            " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) FROM orders\"}}]},"
                            " {\"content\": \"4\"}]}",
                            false) == 0);
    agent_run_ask(&r, "How many orders?");
    CHECK_EQ_INT(r.rc, DK_OK);
    json_t *reqs = standin_requests(r.server);
    const char *seen = tool_result_seen(reqs, 1);
    CHECK(seen && strstr(seen, "amount DECIMAL(10,2)") && strstr(seen, "refunded"));
    const char *seen2 = tool_result_seen(reqs, 2);
    CHECK(seen2 && strstr(seen2, "no tool drop_everything"));
    /* after a look at a table the model must query */
    const json_t *tc1 = json_object_get(json_object_get(json_array_get(reqs, 1), "body"), "tool_choice");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc1, "function"), "name")), "run_sql");
    /* describe_table offers the tables by name */
    const json_t *tools = json_object_get(json_object_get(json_array_get(reqs, 0), "body"), "tools");
    const json_t *en = json_object_get(
        json_object_get(json_object_get(json_object_get(json_object_get(json_array_get(tools, 1), "function"), "parameters"),
                                        "properties"),
                        "table"),
        "enum");
    CHECK_EQ_INT(json_array_size(en), 2);
    json_decref(reqs);
    CHECK_EQ_STR(step_str(r.answer, 0, "kind"), "describe");
    CHECK_EQ_STR(step_str(r.answer, 1, "kind"), "error");
    agent_run_end(&r);
}

/* ---- real local models: the grammar makes their SQL parse ---- */

static void agent_local_run(const char *kit_model, uint64_t seed, float temperature, int *n_sql, int *n_parse_errors)
{
    char path[1024], err[DK_ERRLEN];
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    if (engine_model_load(&model, test_kit_file(path, sizeof path, kit_model), &lp, err) != DK_OK) {
        CHECK_MSG(0, "load %s: %s", kit_model, err);
        return;
    }
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 4096;
    engine_session *session = NULL;
    agent_llm *llm = NULL;
    sql_db *db = agent_db_open();
    if (engine_session_new(&session, model, &sp, err) == DK_OK && agent_llm_local(&llm, session, kit_model, err) == DK_OK &&
        db) {
        agent_config cfg;
        agent_config_default(&cfg);
        cfg.model = llm;
        cfg.seed = seed;
        cfg.temperature = temperature;
        cfg.max_tokens = 200;
        json_t *answer = NULL;
        int rc = agent_ask(&cfg, db, "Which city has the most paid orders?", &answer, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", kit_model, err);
        size_t i;
        const json_t *st;
        json_array_foreach(json_object_get(answer, "steps"), i, st) {
            const char *kind = json_string_value(json_object_get(st, "kind"));
            CHECK_MSG(kind && strcmp(kind, "error") != 0, "%s step %zu: %s", kit_model, i,
                      json_string_value(json_object_get(st, "error")));
            if (!kind || strcmp(kind, "sql") != 0) continue;
            (*n_sql)++;
            const char *sql = json_string_value(json_object_get(st, "sql"));
            const char *e = json_string_value(json_object_get(st, "error"));
            CHECK_MSG(sql != NULL, "%s: a run_sql call without sql", kit_model);
            if (e && (strstr(e, "Parser Error") || strstr(e, "syntax"))) {
                (*n_parse_errors)++;
                test_log("%s: %s -> %s", kit_model, sql, e);
            }
        }
        json_decref(answer);
    } else {
        CHECK_MSG(0, "%s: %s", kit_model, err);
    }
    sql_db_free(db);
    agent_llm_free(llm);
    engine_session_free(session);
    engine_model_free(model);
}

TEST(agent, local_models_write_sql_that_always_parses)
{
    static const char *const models[] = {"forward/stories260K/stories260K.F32.gguf", "forward/qwen2-tiny/qwen2-tiny.Q8_0.gguf",
                                         "forward/llama3-tiny/llama3-tiny.Q8_0.gguf"};
    int n_sql = 0, n_parse_errors = 0;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
        for (uint64_t seed = 1; seed <= 2; seed++) agent_local_run(models[m], seed, seed == 1 ? 0.0f : 1.0f, &n_sql, &n_parse_errors);
    test_log("local models: %d queries, %d parse errors", n_sql, n_parse_errors);
    CHECK(n_sql >= 6);
    CHECK_EQ_INT(n_parse_errors, 0);
}

TEST(agent, a_local_small_model_escalates_to_an_endpoint)
{
    char path[1024], err[DK_ERRLEN];
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    REQUIRE(engine_model_load(&model, test_kit_file(path, sizeof path, "forward/stories260K/stories260K.F32.gguf"), &lp, err) ==
            DK_OK);
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 4096;
    engine_session *session = NULL;
    agent_llm *small = NULL;
    agent_run r;
    /* a story model's SQL binds rarely, and its tokens are never likely under the grammar:
     * either way the question goes to the larger model */
    REQUIRE(agent_run_start(&r, escalation_script, true) == 0);
    REQUIRE(engine_session_new(&session, model, &sp, err) == DK_OK);
    REQUIRE(agent_llm_local(&small, session, "stories", err) == DK_OK);
    r.cfg.model = small;
    r.cfg.max_repairs = 0;
    r.cfg.min_confidence = 0.9;
    r.cfg.max_tokens = 64;
    agent_run_ask(&r, "What is the largest order?");
    CHECK_EQ_INT(r.rc, DK_OK);
    CHECK(json_is_true(json_object_get(r.answer, "escalated")));
    const char *reason = json_string_value(json_object_get(r.answer, "escalation_reason"));
    CHECK(reason && (strcmp(reason, "sql_failed") == 0 || strcmp(reason, "low_confidence") == 0));
    CHECK_EQ_STR(json_string_value(json_object_get(r.answer, "model")), "large");
    CHECK_EQ_STR(step_str(r.answer, 0, "model"), "stories");
    CHECK(json_object_get(json_object_get(r.answer, "usage"), "stories") != NULL);
    CHECK_EQ_INT(standin_n_requests(r.server, "small"), 0);
    agent_llm_free(small);
    engine_session_free(session);
    engine_model_free(model);
    agent_run_end(&r);
}
