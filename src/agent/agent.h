/*
 * agent: duckling's "ask your data" loop. A model gets the question, a compact description of
 * the user's DuckDB schema and two tools, run_sql and describe_table; it calls them, duckling
 * runs the SQL read-only (sql/) and feeds back the result table or DuckDB's error, the model
 * repairs its SQL (a bounded number of attempts) and finally answers in words, quoting the
 * numbers it got. A router hands the question to a larger model (another local model or any
 * OpenAI-compatible endpoint) when the small one fails: SQL still failing after the repairs,
 * a low confidence (the mean token log-probability of its SQL), or the user's request.
 *
 * With a document store (rag/) the same loop gets a third tool, search_docs, and one question
 * may use documents and tables together; agent_ask_docs answers from documents alone, in one
 * turn, citing the numbered passages it was shown ("[2]").
 *
 * Models are reached through agent_llm, one chat turn at a time:
 *   agent_llm_local   an engine_session of a loaded model: tools in the model's own chat
 *                     template and call format, and the SQL argument of run_sql generated
 *                     under a grammar of DuckDB's SELECT syntax (sql_grammar), so it parses;
 *   agent_llm_openai  an OpenAI-compatible /v1/chat/completions endpoint over HTTP(S) (libcurl),
 *                     spelled "URL[#MODEL]", e.g. "http://127.0.0.1:8080/v1#gpt-4o-mini".
 *
 * Not for: running SQL or describing schemas (sql/), sampling and templates (engine/, chat/).
 * Thread safety: an agent_llm is used by one thread at a time; agent_ask is reentrant (with
 * docs: as long as no other thread uses that store meanwhile).
 * Errors: DK_OK or a DK_ERR_* code with one line in err (DK_ERRLEN bytes).
 */
#ifndef DK_AGENT_H
#define DK_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"
#include "engine/engine.h"
#include "rag/rag.h"
#include "sql/sql.h"

/* ==== models ==== */

typedef struct agent_llm agent_llm;

/* One chat turn asked of a model. */
typedef struct agent_llm_request {
    const json_t *messages;   /* array of {role, content, tool_calls, tool_call_id}; tool_calls
                                 as engine_chat_result gives them (arguments a JSON object) */
    const json_t *tools;      /* array of {"type":"function","function":{name, description,
                                 parameters}}, or NULL */
    enum engine_tool_choice tool_choice;
    const char *tool_name;    /* for ENGINE_TOOL_NAMED */
    /* GBNF rules that the tools' parameter schemas refer to with "x-gbnf" (see sample.h);
     * used by local models, ignored by remote ones. NULL: none. */
    const char *grammar_extra;
    long max_tokens;          /* <= 0: 512 */
    float temperature;        /* 0: greedy */
    uint64_t seed;
} agent_llm_request;

/* What the model answered. */
typedef struct agent_llm_reply {
    dk_buf content;           /* the text of the answer (no tool-call text) */
    json_t *tool_calls;       /* owned array of {"id","type":"function","function":{"name",
                                 "arguments"}}: arguments is an object, or the string the model
                                 wrote when that was not a JSON object; never NULL on success */
    size_t prompt_tokens;     /* tokens of the prompt as the backend counted them */
    size_t completion_tokens; /* tokens generated */
    double logprob_sum;       /* sum of the natural-log probabilities of the generated tokens */
    size_t n_logprobs;        /* how many tokens that sum covers (0: the backend gave none) */
    double ms;                /* wall time of the turn */
    bool cut;                 /* generation stopped at max_tokens (an unfinished call is lost) */
} agent_llm_reply;

/* Runs one turn. reply is filled (and must be freed with agent_llm_reply_free) also on error.
 * Errors: the engine's or the endpoint's (DK_ERR_IO for a connection failure or an HTTP error
 * status, with the endpoint's own error message; DK_ERR_FORMAT for a reply that is not what
 * the API says). */
int agent_llm_chat(agent_llm *llm, const agent_llm_request *req, agent_llm_reply *reply, char *err);
void agent_llm_reply_free(agent_llm_reply *reply);

/* The model's name as reported in answers ("qwen2.5:0.5b", "gpt-4o-mini"). Owned by llm. */
const char *agent_llm_name(const agent_llm *llm);
/* True for a model that runs here (engine), false for an endpoint. */
bool agent_llm_is_local(const agent_llm *llm);

/* A local model through one of its sessions (borrowed: it must outlive the agent_llm and is
 * used for nothing else meanwhile). name is copied. Free with agent_llm_free. */
int agent_llm_local(agent_llm **out, engine_session *session, const char *name, char *err);

/* An OpenAI-compatible endpoint. spec: "http[s]://HOST[:PORT]/PATH[#MODEL]", the base URL
 * under which /chat/completions and /models live (the "/v1" part included); without #MODEL the
 * first model of GET /models is used (asked at the first turn). api_key: NULL for
 * $DUCKLING_API_KEY, else $OPENAI_API_KEY, else none. DK_ERR_ARG for a spec that is not such a
 * URL. Nothing is connected until the first turn. Free with agent_llm_free. */
int agent_llm_openai(agent_llm **out, const char *spec, const char *api_key, char *err);

/* True when s names an endpoint (begins with http:// or https://), not a local model. */
bool agent_spec_is_url(const char *s);

void agent_llm_free(agent_llm *llm); /* NULL is fine */

/* ==== the SQL agent ==== */

/* What makes the router hand a question to the larger model. */
typedef struct agent_config {
    agent_llm *model;         /* the small model, asked first (borrowed) */
    agent_llm *escalate_to;   /* the larger one, or NULL for none (borrowed) */
    bool escalate_now;        /* the user's flag: ask the larger model at once */
    int max_repairs;          /* SQL attempts after the first failing one; < 0: 2 */
    int max_steps;            /* tool calls per model at most; <= 0: 6 */
    /* Escalate when the geometric-mean probability of the tokens of the small model's last
     * SQL turn is below this (0..1); 0: never on confidence; < 0 (the default): 0.5. Only
     * where logprobs are known, and only with escalate_to. */
    double min_confidence;
    sql_limits limits;        /* per query; zeros: 100 rows shown to the model, 10 s */
    int max_tables;           /* tables in the schema description; <= 0: 12 */
    long max_tokens;          /* per turn; <= 0: 512 */
    float temperature;        /* 0: greedy */
    uint64_t seed;
    /* Called for every step as it completes (the step object of agent_answer's "steps"), for
     * progress output; may be NULL. */
    void (*on_step)(void *user, const json_t *step);
    void *user;
    /* Documents (all optional; borrowed). With docs set the model gets a third tool,
     * search_docs {"query": string}: duckling runs rag_search(docs, embedder, query,
     * &docs_search) and feeds back the passages numbered "[n] path § heading", numbers that
     * go on across the calls of one model's attempt (a passage shown before keeps its number).
     * An answer may then rest on passages alone (no SQL), on a query, or on both. The turns:
     * the first must call a tool (any of the three); after search_docs the model chooses
     * (tool_choice auto, local models included: it may query a table or answer from the
     * passages); after a query that worked, as without documents (a local model answers, an
     * endpoint chooses). embedder may be NULL only for docs_search.mode RAG_MODE_KEYWORD. */
    rag_store *docs;
    engine_model *embedder;
    rag_search_opts docs_search;
    size_t docs_max_chars;    /* bytes of passage text per search_docs result (shared as in
                                 agent_docs_config); 0: 3000 */
} agent_config;

void agent_config_default(agent_config *cfg);

/* Answers question about db. On success *answer is a new JSON object (caller json_decref's):
 *   {"question", "answer": text, "sql": the last query that ran (or null), "columns": [..],
 *    "rows": [[..]] (its result, as sql_result_json), "truncated": bool,
 *    "model": the model that answered, "escalated": bool, "escalation_reason": null or
 *    "sql_failed" | "low_confidence" | "requested" | "model_error",
 *    "steps": [{"model", "kind": "sql" | "describe" | "search" | "answer" | "error", "sql", "ok",
 *               "error", "rows", "prompt_tokens", "completion_tokens", "confidence", "ms"}],
 *    "usage": {MODEL: {"prompt_tokens", "completion_tokens"}, ...}}
 * With docs, also "sources": [the passages shown to the answering model, as in
 * agent_ask_docs], "citations" and "invalid_citations" (likewise), and steps of kind "search"
 * ({"query", "ok", "passages": count, "error"}); "sql" is null for an answer from the passages.
 * An answer whose SQL never succeeded is still DK_OK ("sql": null, an answer saying so) when
 * no model was left to ask; errors are for a model that cannot be reached (after escalation
 * was tried), the database, and memory. */
int agent_ask(const agent_config *cfg, sql_db *db, const char *question, json_t **answer, char *err);

/* ==== answers from documents ==== */

typedef struct agent_docs_config {
    agent_llm *model;          /* borrowed */
    rag_store *store;          /* borrowed; read-only is enough */
    const char *store_name;    /* for the answer when nothing matches ("No matching passages in
                                  NAME."); NULL: "the store" */
    engine_model *embedder;    /* the store's embedding model; NULL only for RAG_MODE_KEYWORD */
    rag_search_opts search;    /* k, mode, filters, exact, reranker (rag.h) */
    size_t max_source_chars;   /* bytes of passage text in the prompt, shared by the sources
                                  (each gets an even share of what the ones before it left, at
                                  least 80; a longer one is cut at a word, marked "..."); 0: 4000 */
    long max_tokens;           /* of the answer; <= 0: 512 */
    float temperature;         /* 0: greedy */
    uint64_t seed;
    void (*on_step)(void *user, const json_t *step); /* as in agent_config; may be NULL */
    void *user;
} agent_docs_config;

void agent_docs_config_default(agent_docs_config *cfg);

/* Answers question from the store's passages: rag_search, then one turn of the model (no
 * tools) with a system message that asks it to answer only from the sources and to cite them
 * as [n], and a user message of the numbered sources ("[1] path § heading\ntext", cut to
 * max_source_chars together) and the question. On success *answer is a new JSON object
 * (caller json_decref's):
 *   {"question", "answer": the model's words,
 *    "sources": [{"n", "path", "heading", "start", "end", "unit", "score", "text",
 *                 "chunk_id"}] (the passages in the prompt, n from 1; text whole, as stored),
 *    "citations": [n, ...] (the valid source numbers the answer cites, as "[2]" or "[1, 3]",
 *                 each once, in order of first appearance), "invalid_citations": [n, ...]
 *                 (numbers cited that are no source, likewise),
 *    "model", "steps": [{"kind": "search", "query", "passages", "ms"},
 *                       {"kind": "answer", "model", "prompt_tokens", "completion_tokens",
 *                        "ms"}],
 *    "usage": {MODEL: {"prompt_tokens", "completion_tokens"}}}
 * When the search finds nothing the model is not asked: "answer" is "No matching passages in
 * NAME.", "sources" empty and "model" null. Errors: the search's (rag_search) and the model's
 * (DK_ERR_IO for an endpoint that fails, with its message). A rag_store serves one thread at
 * a time: asks over one store (this and agent_ask with docs) must not overlap. */
int agent_ask_docs(const agent_docs_config *cfg, const char *question, json_t **answer, char *err);

#endif
