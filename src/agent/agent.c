/*
 * agent.c: the SQL agent's loop and the escalation router (the contract is in agent.h).
 *
 * One model's attempt is a conversation: system (instructions + schema), user (the question),
 * then turns. The first turn must call a tool (tool_choice required): a question about the
 * data starts with a query. After describe_table the next turn must call run_sql. After a
 * failing query the next turn must call a tool again (the repair), up to max_repairs times. After a query that worked, a local model is asked for the
 * answer (tool_choice none: its turn is the words that quote the result), an endpoint may
 * still choose to query again (auto). The router runs the small model first and hands the
 * question to the larger one, starting afresh, when its SQL still fails after the repairs,
 * when the tokens of its working SQL were unlikely (confidence below min_confidence), when
 * it cannot be run at all, or at once when the user asks.
 *
 * With documents (cfg->docs) there is a third tool, search_docs: its passages are numbered
 * across the attempt's searches and kept as the attempt's sources; after a search the model
 * chooses (tool_choice auto, for local models too: it may query a table next or answer from
 * the passages), and an answer needs a query that worked or a search, no longer a query.
 */
#include "agent/agent.h"

#include <math.h>
#include <string.h>

#include "agent/agent_tools.h"

#define AGENT_DEFAULT_MAX_ROWS 100
#define AGENT_DEFAULT_TIMEOUT_MS 10000
#define AGENT_CALL_MIN_TOKENS 1536
#define AGENT_DEFAULT_MIN_CONFIDENCE 0.5
#define AGENT_DEFAULT_DOCS_MAX_BYTES 3000

void agent_config_default(agent_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_repairs = 2;
    cfg->max_steps = 6;
    cfg->max_tables = 12;
    cfg->max_tokens = 512;
    cfg->min_confidence = -1;
}

/* How one model's attempt ended. */
enum attempt_end {
    ATTEMPT_ANSWERED = 0, /* it ran SQL and answered */
    ATTEMPT_SQL_FAILED,   /* no query worked within the repairs (or it never queried) */
    ATTEMPT_MODEL_ERROR,  /* the model could not be run (endpoint down, engine error) */
};

/* What the loop shares across both models' attempts. */
typedef struct ask_state {
    const agent_config *cfg;
    sql_db *db;
    const char *question;
    bool docs;              /* search_docs is offered */
    sql_limits limits;
    json_t *tools_grammar;  /* tools for local models (run_sql under "x-gbnf") */
    json_t *tools_plain;    /* tools for endpoints */
    char *grammar;          /* the "agent-sql" rules */
    char *system;           /* the system message */
    json_t *steps;          /* every step of both models */
    json_t *usage;          /* {model: {prompt_tokens, completion_tokens}} */
} ask_state;

/* The result of one attempt. */
typedef struct attempt {
    enum attempt_end end;
    char *answer;           /* the model's words (dk_strdup'ed), or NULL */
    char *sql;              /* the last query that worked */
    sql_result *result;     /* its result */
    double confidence;      /* of the turn that wrote that query; NAN when unknown */
    json_t *sources;        /* the passages its searches showed (agent_sources_add), or NULL */
    bool searched;          /* a search_docs call ran */
    char last_error[DK_ERRLEN];
} attempt;

static void attempt_free(attempt *a)
{
    dk_free(a->answer);
    dk_free(a->sql);
    sql_result_free(a->result);
    json_decref(a->sources);
    memset(a, 0, sizeof *a);
}

static int nomem(char *err) { return dk_fail(err, DK_ERR_NOMEM, "out of memory"); }

/* ---- bookkeeping: usage and steps ---- */

static void add_usage(ask_state *st, const char *model, const agent_llm_reply *r)
{
    json_t *u = json_object_get(st->usage, model);
    if (!u) {
        u = json_pack("{s:I, s:I}", "prompt_tokens", (json_int_t)0, "completion_tokens", (json_int_t)0);
        if (!u || json_object_set_new(st->usage, model, u) != 0) return;
    }
    json_int_t p = json_integer_value(json_object_get(u, "prompt_tokens")) + (json_int_t)r->prompt_tokens;
    json_int_t c = json_integer_value(json_object_get(u, "completion_tokens")) + (json_int_t)r->completion_tokens;
    json_object_set_new(u, "prompt_tokens", json_integer(p));
    json_object_set_new(u, "completion_tokens", json_integer(c));
}

static double reply_confidence(const agent_llm_reply *r)
{
    return r->n_logprobs ? exp(r->logprob_sum / (double)r->n_logprobs) : NAN;
}

/* Starts a step object for the turn r of model. */
static json_t *step_new(const char *model, const char *kind, const agent_llm_reply *r)
{
    json_t *s = json_pack("{s:s, s:s, s:I, s:I, s:f}", "model", model, "kind", kind, "prompt_tokens",
                          (json_int_t)(r ? r->prompt_tokens : 0), "completion_tokens",
                          (json_int_t)(r ? r->completion_tokens : 0), "ms", r ? r->ms : 0.0);
    if (!s) return NULL;
    double conf = r ? reply_confidence(r) : NAN;
    json_object_set_new(s, "confidence", isnan(conf) ? json_null() : json_real(conf));
    return s;
}

static int step_add(ask_state *st, json_t *step, char *err)
{
    if (!step || json_array_append_new(st->steps, step) != 0) return nomem(err);
    if (st->cfg->on_step) st->cfg->on_step(st->cfg->user, step);
    return DK_OK;
}

/* ---- messages ---- */

static int push_message(json_t *messages, json_t *m, char *err)
{
    if (!m || json_array_append_new(messages, m) != 0) return nomem(err);
    return DK_OK;
}

/* The assistant turn that made call (content kept, one call: the one answered). */
static int push_call(json_t *messages, const agent_llm_reply *r, json_t *call, char *err)
{
    return push_message(messages,
                        json_pack("{s:s, s:s%, s:[O]}", "role", "assistant", "content",
                                  r->content.data ? r->content.data : "", r->content.len, "tool_calls", call),
                        err);
}

static int push_tool_result(json_t *messages, const json_t *call, const char *name, const dk_buf *text, char *err)
{
    const char *id = json_string_value(json_object_get(call, "id"));
    return push_message(messages,
                        json_pack("{s:s, s:s, s:s, s:s%}", "role", "tool", "tool_call_id", id ? id : "call_0",
                                  "name", name, "content", text->data ? text->data : "", text->len),
                        err);
}

/* ---- one model ---- */

/* The string argument key of call, or NULL. */
static const char *call_arg(const json_t *call, const char *key)
{
    const json_t *args = json_object_get(json_object_get(call, "function"), "arguments");
    return json_string_value(json_object_get(args, key));
}

static const char *call_name(const json_t *call)
{
    const char *n = json_string_value(json_object_get(json_object_get(call, "function"), "name"));
    return n ? n : "";
}

/* Handles a run_sql call: runs it, records the step, appends the tool result. *ok tells
 * whether the query worked. */
static int handle_run_sql(ask_state *st, attempt *a, const char *model, const agent_llm_reply *r, const json_t *call,
                          json_t *messages, bool *ok, char *err)
{
    *ok = false;
    const char *sql = call_arg(call, "sql");
    dk_buf text = {0};
    sql_result *res = NULL;
    char why[DK_ERRLEN] = "";
    int rc;
    if (!sql) {
        dk_buf_puts(&text, "Error: run_sql needs an argument \"sql\" with one SELECT query as a string.");
        snprintf(why, sizeof why, "run_sql called without a \"sql\" string");
        rc = DK_ERR_ARG;
    } else {
        rc = agent_run_sql(st->db, sql, &st->limits, &res, &text, why);
        if (rc == DK_ERR_NOMEM) {
            dk_buf_free(&text);
            return dk_fail(err, rc, "%s", why);
        }
    }
    json_t *step = step_new(model, "sql", r);
    if (step) {
        json_object_set_new(step, "sql", sql ? json_string(sql) : json_null());
        json_object_set_new(step, "ok", json_boolean(rc == DK_OK));
        json_object_set_new(step, "error", rc == DK_OK ? json_null() : json_string(why));
        json_object_set_new(step, "rows", json_integer((json_int_t)sql_result_n_rows(res)));
    }
    int rc2 = step_add(st, step, err);
    if (rc2 == DK_OK) rc2 = push_tool_result(messages, call, "run_sql", &text, err);
    dk_buf_free(&text);
    if (rc2 != DK_OK) {
        sql_result_free(res);
        return rc2;
    }
    if (rc == DK_OK) {
        char *copy = dk_strdup(sql);
        if (!copy) {
            sql_result_free(res);
            return nomem(err);
        }
        dk_free(a->sql);
        sql_result_free(a->result);
        a->sql = copy;
        a->result = res;
        a->confidence = reply_confidence(r);
        *ok = true;
    } else {
        snprintf(a->last_error, sizeof a->last_error, "%s", why);
    }
    return DK_OK;
}

static int handle_describe(ask_state *st, const char *model, const agent_llm_reply *r, const json_t *call,
                           json_t *messages, char *err)
{
    const char *table = call_arg(call, "table");
    dk_buf text = {0};
    char why[DK_ERRLEN] = "";
    int rc = DK_ERR_ARG;
    if (!table) dk_buf_puts(&text, "Error: describe_table needs an argument \"table\".");
    else rc = agent_describe_table(st->db, table, &text, why);
    if (rc == DK_ERR_NOMEM) {
        dk_buf_free(&text);
        return dk_fail(err, rc, "%s", why);
    }
    json_t *step = step_new(model, "describe", r);
    if (step) {
        json_object_set_new(step, "table", table ? json_string(table) : json_null());
        json_object_set_new(step, "ok", json_boolean(rc == DK_OK));
    }
    int rc2 = step_add(st, step, err);
    if (rc2 == DK_OK) rc2 = push_tool_result(messages, call, "describe_table", &text, err);
    dk_buf_free(&text);
    return rc2;
}

/* Handles a search_docs call: searches, records the step and the passages, appends the
 * numbered passages as the tool result. *ok tells whether the search ran. */
static int handle_search_docs(ask_state *st, attempt *a, const char *model, const agent_llm_reply *r,
                              const json_t *call, json_t *messages, bool *ok, char *err)
{
    const agent_config *cfg = st->cfg;
    *ok = false;
    const char *query = call_arg(call, "query");
    dk_buf text = {0};
    char why[DK_ERRLEN] = "";
    rag_results *found = NULL;
    int rc = DK_ERR_ARG;
    if (!query || !query[0]) {
        dk_buf_puts(&text, "Error: search_docs needs an argument \"query\" with the words to look for.");
        snprintf(why, sizeof why, "search_docs called without a \"query\" string");
    } else {
        rc = rag_search(cfg->docs, cfg->embedder, query, &cfg->docs_search, &found, why);
        if (rc == DK_ERR_NOMEM) return dk_fail(err, rc, "%s", why);
        if (rc != DK_OK) dk_buf_printf(&text, "Error: the search failed: %s", why);
    }
    if (rc == DK_OK && !a->sources && !(a->sources = json_array())) rc = DK_ERR_NOMEM;
    if (rc == DK_OK && rag_results_count(found) == 0) dk_buf_printf(&text, "No passages match \"%s\".", query);
    else if (rc == DK_OK) {
        size_t max_bytes = cfg->docs_max_chars ? cfg->docs_max_chars : AGENT_DEFAULT_DOCS_MAX_BYTES;
        rc = agent_sources_add(a->sources, found, max_bytes, &text, why);
    }
    size_t n_found = found ? rag_results_count(found) : 0;
    rag_results_free(found);
    if (rc == DK_ERR_NOMEM) {
        dk_buf_free(&text);
        return nomem(err);
    }
    json_t *step = step_new(model, "search", r);
    if (step) {
        json_object_set_new(step, "query", query ? json_string(query) : json_null());
        json_object_set_new(step, "ok", json_boolean(rc == DK_OK));
        json_object_set_new(step, "passages", json_integer((json_int_t)n_found));
        json_object_set_new(step, "error", rc == DK_OK ? json_null() : json_string(why));
    }
    int rc2 = step_add(st, step, err);
    if (rc2 == DK_OK) rc2 = push_tool_result(messages, call, "search_docs", &text, err);
    dk_buf_free(&text);
    if (rc2 != DK_OK) return rc2;
    if (rc == DK_OK) {
        a->searched = true;
        *ok = true;
    } else {
        snprintf(a->last_error, sizeof a->last_error, "%s", why);
    }
    return DK_OK;
}

static int handle_unknown_tool(ask_state *st, const char *model, const agent_llm_reply *r, const json_t *call,
                               json_t *messages, char *err)
{
    dk_buf text = {0};
    dk_buf_printf(&text, "Error: there is no tool %s; the tools are %s.", call_name(call),
                  st->docs ? "run_sql, describe_table and search_docs" : "run_sql and describe_table");
    json_t *step = step_new(model, "error", r);
    if (step) json_object_set_new(step, "error", json_string(text.data ? text.data : ""));
    int rc = step_add(st, step, err);
    if (rc == DK_OK) rc = push_tool_result(messages, call, call_name(call), &text, err);
    dk_buf_free(&text);
    return rc;
}

static json_t *conversation_new(const ask_state *st)
{
    return json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content", st->system, "role", "user", "content",
                     st->question);
}

/* Tokens a turn may take. A local model's call must be able to finish: its SQL grammar
 * allows sentences of about a thousand characters, and a small vocabulary may spend a token
 * on each, so a turn that must call gets at least AGENT_CALL_MIN_TOKENS. */
static long turn_max_tokens(const agent_config *cfg, bool local, enum engine_tool_choice choice)
{
    long n = cfg->max_tokens > 0 ? cfg->max_tokens : 512;
    bool must_call = choice == ENGINE_TOOL_REQUIRED || choice == ENGINE_TOOL_NAMED;
    if (local && must_call && n < AGENT_CALL_MIN_TOKENS) n = AGENT_CALL_MIN_TOKENS;
    return n;
}

/* Runs the loop with one model. Only the agent's own failures (memory) are errors; a model
 * that cannot be run ends the attempt with ATTEMPT_MODEL_ERROR. */
static int run_attempt(ask_state *st, agent_llm *llm, attempt *a, char *err)
{
    const agent_config *cfg = st->cfg;
    const char *model = agent_llm_name(llm);
    bool local = agent_llm_is_local(llm);
    json_t *messages = conversation_new(st);
    if (!messages) return nomem(err);
    a->confidence = NAN;
    int max_steps = cfg->max_steps > 0 ? cfg->max_steps : 6;
    int max_failures = (cfg->max_repairs >= 0 ? cfg->max_repairs : 2) + 1;
    int failures = 0, rc = DK_OK;
    enum engine_tool_choice choice = ENGINE_TOOL_REQUIRED;
    a->end = ATTEMPT_SQL_FAILED;
    for (int n_steps = 0;; n_steps++) {
        bool last = n_steps >= max_steps;
        if (last && !a->sql && !a->searched) break; /* out of steps without a result */
        if (last) choice = ENGINE_TOOL_NONE;
        agent_llm_request req = {
            .messages = messages,
            .tools = local ? st->tools_grammar : st->tools_plain,
            .tool_choice = choice,
            .tool_name = choice == ENGINE_TOOL_NAMED ? "run_sql" : NULL,
            .grammar_extra = local ? st->grammar : NULL,
            .max_tokens = turn_max_tokens(cfg, local, choice),
            .temperature = cfg->temperature,
            .seed = cfg->seed,
        };
        agent_llm_reply r;
        char why[DK_ERRLEN];
        int turn = agent_llm_chat(llm, &req, &r, why);
        if (turn == DK_ERR_NOMEM) {
            rc = dk_fail(err, turn, "%s", why);
            agent_llm_reply_free(&r);
            break;
        }
        if (turn != DK_OK) {
            json_t *step = step_new(model, "error", NULL);
            if (step) json_object_set_new(step, "error", json_string(why));
            rc = step_add(st, step, err);
            snprintf(a->last_error, sizeof a->last_error, "%s", why);
            a->end = ATTEMPT_MODEL_ERROR;
            agent_llm_reply_free(&r);
            break;
        }
        add_usage(st, model, &r);
        json_t *call = json_array_size(r.tool_calls) && choice != ENGINE_TOOL_NONE ? json_array_get(r.tool_calls, 0) : NULL;
        if (!call) {
            /* words: the answer, once there is a result (or passages) to answer from */
            if (a->sql || a->searched) {
                json_t *step = step_new(model, "answer", &r);
                if (step) json_object_set_new(step, "answer", json_stringn(r.content.data ? r.content.data : "", r.content.len));
                rc = step_add(st, step, err);
                a->answer = dk_strndup(r.content.data ? r.content.data : "", r.content.len);
                if (rc == DK_OK && !a->answer) rc = nomem(err);
                a->end = ATTEMPT_ANSWERED;
                agent_llm_reply_free(&r);
                break;
            }
            /* it answered without querying, or its call was cut: ask again (a failure of its own) */
            char why_not[DK_ERRLEN];
            if (r.cut) snprintf(why_not, sizeof why_not, "the model's turn was cut at %ld tokens before a tool call was complete", req.max_tokens);
            else if (st->docs) snprintf(why_not, sizeof why_not, "the model answered without a query or a search");
            else snprintf(why_not, sizeof why_not, "the model answered without running a query");
            json_t *step = step_new(model, "error", &r);
            if (step) json_object_set_new(step, "error", json_string(why_not));
            rc = step_add(st, step, err);
            snprintf(a->last_error, sizeof a->last_error, "%s", why_not);
            if (rc == DK_OK) rc = push_message(messages, json_pack("{s:s, s:s%}", "role", "assistant", "content",
                                                                    r.content.data ? r.content.data : "", r.content.len), err);
            const char *nudge = st->docs ? "Call run_sql or search_docs to get the answer from the data."
                                         : "Call run_sql to get the answer from the data.";
            if (rc == DK_OK) rc = push_message(messages, json_pack("{s:s, s:s}", "role", "user", "content", nudge), err);
            agent_llm_reply_free(&r);
            if (rc != DK_OK || ++failures >= max_failures) break;
            choice = ENGINE_TOOL_REQUIRED;
            continue;
        }
        const char *name = call_name(call);
        bool is_sql = strcmp(name, "run_sql") == 0, is_describe = strcmp(name, "describe_table") == 0;
        bool is_search = st->docs && strcmp(name, "search_docs") == 0;
        bool ok = false;
        rc = push_call(messages, &r, call, err);
        if (rc == DK_OK && is_sql) rc = handle_run_sql(st, a, model, &r, call, messages, &ok, err);
        else if (rc == DK_OK && is_describe) rc = handle_describe(st, model, &r, call, messages, err);
        else if (rc == DK_OK && is_search) rc = handle_search_docs(st, a, model, &r, call, messages, &ok, err);
        else if (rc == DK_OK) rc = handle_unknown_tool(st, model, &r, call, messages, err);
        agent_llm_reply_free(&r);
        if (rc != DK_OK) break;
        if (is_search && ok) {
            choice = ENGINE_TOOL_AUTO; /* passages in hand: answer from them, or query a table too */
        } else if (is_describe) {
            choice = ENGINE_TOOL_NAMED; /* it has looked (not a failure): now it queries, no describe loops */
        } else if (ok) {
            choice = local ? ENGINE_TOOL_NONE : ENGINE_TOOL_AUTO;
        } else {
            if (++failures >= max_failures) break;
            choice = ENGINE_TOOL_REQUIRED;
        }
    }
    json_decref(messages);
    return rc;
}

/* ---- the router ---- */

static const char *escalation_reason(const agent_config *cfg, const attempt *small)
{
    if (small->end == ATTEMPT_SQL_FAILED) return "sql_failed";
    if (small->end == ATTEMPT_MODEL_ERROR) return "model_error";
    double min_confidence = cfg->min_confidence < 0 ? AGENT_DEFAULT_MIN_CONFIDENCE : cfg->min_confidence;
    if (min_confidence > 0 && !isnan(small->confidence) && small->confidence < min_confidence)
        return "low_confidence";
    return NULL;
}

static int ask_state_init(ask_state *st, const agent_config *cfg, sql_db *db, const char *question, char *err)
{
    memset(st, 0, sizeof *st);
    st->cfg = cfg;
    st->db = db;
    st->question = question;
    st->docs = cfg->docs != NULL;
    st->limits = cfg->limits;
    if (!st->limits.max_rows) st->limits.max_rows = AGENT_DEFAULT_MAX_ROWS;
    if (!st->limits.timeout_ms) st->limits.timeout_ms = AGENT_DEFAULT_TIMEOUT_MS;
    int max_tables = cfg->max_tables > 0 ? cfg->max_tables : 12;
    dk_buf system = {0};
    int rc = agent_system_prompt(db, question, max_tables, st->limits.max_rows, st->docs, &system, err);
    if (rc == DK_OK) st->system = dk_buf_detach(&system);
    dk_buf_free(&system);
    bool any_local = agent_llm_is_local(cfg->model) || agent_llm_is_local(cfg->escalate_to);
    if (rc == DK_OK) rc = agent_tools_build(db, false, &st->tools_plain, err);
    if (rc == DK_OK && any_local) rc = agent_tools_build(db, true, &st->tools_grammar, err);
    if (rc == DK_OK && st->docs && (json_array_append_new(st->tools_plain, agent_search_docs_tool()) != 0 ||
                                    (st->tools_grammar &&
                                     json_array_append_new(st->tools_grammar, agent_search_docs_tool()) != 0)))
        rc = nomem(err);
    if (rc == DK_OK && any_local) rc = agent_sql_grammar(db, question, max_tables, &st->grammar, err);
    st->steps = json_array();
    st->usage = json_object();
    if (rc == DK_OK && (!st->steps || !st->usage)) rc = nomem(err);
    return rc;
}

static void ask_state_free(ask_state *st)
{
    json_decref(st->tools_grammar);
    json_decref(st->tools_plain);
    dk_free(st->grammar);
    dk_free(st->system);
    json_decref(st->steps);
    json_decref(st->usage);
}

/* The words of an answer that has no working query behind it. */
static char *failure_answer(const attempt *a)
{
    dk_buf b = {0};
    if (a->end == ATTEMPT_MODEL_ERROR) dk_buf_printf(&b, "I could not ask the model: %s", a->last_error);
    else if (a->last_error[0]) dk_buf_printf(&b, "I could not write a query that works; the last error was: %s", a->last_error);
    else dk_buf_puts(&b, "I could not write a query that works.");
    char *s = b.failed ? NULL : dk_buf_detach(&b);
    dk_buf_free(&b);
    return s;
}

/* With documents: the attempt's sources and the citations of its answer, into o. */
static int answer_add_sources(json_t *o, const attempt *a, const char *answer, char *err)
{
    json_t *valid = NULL, *invalid = NULL;
    size_t n_sources = json_array_size(a->sources);
    int rc = agent_citations(answer, n_sources, &valid, &invalid, err);
    if (rc != DK_OK) return rc;
    if (json_object_set_new(o, "sources", a->sources ? json_incref(a->sources) : json_array()) != 0 ||
        json_object_set_new(o, "citations", valid) != 0 || json_object_set_new(o, "invalid_citations", invalid) != 0)
        return nomem(err);
    return DK_OK;
}

static int answer_build(ask_state *st, const attempt *a, const char *model, bool escalated, const char *reason,
                        json_t **out, char *err)
{
    bool answered = a->sql || a->end == ATTEMPT_ANSWERED;
    char *words = answered ? NULL : failure_answer(a);
    const char *answer = answered ? (a->answer ? a->answer : "") : words;
    json_t *res = a->result ? sql_result_json(a->result) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:b, s:o, s:O, s:O}", "question", st->question, "answer",
                          answer ? answer : "", "sql", a->sql ? json_string(a->sql) : json_null(), "model", model,
                          "escalated", escalated, "escalation_reason", reason ? json_string(reason) : json_null(),
                          "steps", st->steps, "usage", st->usage);
    int rc = o && st->docs ? answer_add_sources(o, a, answer, err) : DK_OK;
    dk_free(words);
    if (!o || rc != DK_OK) {
        json_decref(o);
        json_decref(res);
        return o ? rc : nomem(err);
    }
    json_object_set_new(o, "columns", res ? json_incref(json_object_get(res, "columns")) : json_array());
    json_object_set_new(o, "rows", res ? json_incref(json_object_get(res, "rows")) : json_array());
    json_object_set_new(o, "truncated", json_boolean(res && json_is_true(json_object_get(res, "truncated"))));
    if (!answered && a->last_error[0]) json_object_set_new(o, "error", json_string(a->last_error));
    json_decref(res);
    *out = o;
    return DK_OK;
}

int agent_ask(const agent_config *cfg, sql_db *db, const char *question, json_t **answer, char *err)
{
    *answer = NULL;
    if (!cfg || !cfg->model || !db || !question || !question[0])
        return dk_fail(err, DK_ERR_ARG, "agent: a model, a database and a question are needed");
    ask_state st;
    int rc = ask_state_init(&st, cfg, db, question, err);
    attempt small = {0}, large = {0};
    const char *reason = NULL;
    bool escalated = false;
    if (rc == DK_OK && cfg->escalate_now && cfg->escalate_to) reason = "requested";
    else if (rc == DK_OK) {
        rc = run_attempt(&st, cfg->model, &small, err);
        if (rc == DK_OK && cfg->escalate_to) reason = escalation_reason(cfg, &small);
    }
    if (rc == DK_OK && reason) {
        escalated = true;
        rc = run_attempt(&st, cfg->escalate_to, &large, err);
    }
    if (rc == DK_OK) {
        /* the larger model's answer, unless it could not be run and the small one had one */
        bool use_small = !escalated || (large.end != ATTEMPT_ANSWERED && small.end == ATTEMPT_ANSWERED);
        const attempt *final = use_small ? &small : &large;
        const char *model = agent_llm_name(use_small ? cfg->model : cfg->escalate_to);
        if (final->end == ATTEMPT_MODEL_ERROR && !(escalated && use_small))
            rc = dk_fail(err, DK_ERR_IO, "%s: %s", model, final->last_error);
        else
            rc = answer_build(&st, final, model, escalated, reason, answer, err);
        if (rc == DK_OK && escalated && use_small && large.last_error[0])
            json_object_set_new(*answer, "escalation_error", json_string(large.last_error));
    }
    attempt_free(&small);
    attempt_free(&large);
    ask_state_free(&st);
    return rc;
}
