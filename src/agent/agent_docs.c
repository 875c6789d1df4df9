/*
 * agent_docs.c: answers grounded in the user's documents (agent_ask_docs of agent.h) and what
 * the SQL agent's search_docs tool shares with it: the numbered sources a model is shown
 * ("[n] path § heading", then the passage, cut to a byte budget so that a small model's
 * context holds them), and the parser of the citations ("[2]", "[1, 3]") in its answer.
 *
 * agent_ask_docs is one retrieval and one turn, no tools: the model is told to answer only
 * from the sources and to cite them; when the search finds nothing, no model is asked.
 * Not for: the search itself (rag/), the tool loop (agent.c).
 */
#include "agent/agent.h"

#include <ctype.h>
#include <string.h>

#include "agent/agent_tools.h"

#define DOCS_DEFAULT_MAX_BYTES 4000
#define DOCS_MIN_PASSAGE_BYTES 80   /* each passage gets at least this much of the budget */
#define CITATION_MAX_DIGITS 6

static int nomem(char *err) { return dk_fail(err, DK_ERR_NOMEM, "out of memory"); }

void agent_docs_config_default(agent_docs_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_source_chars = DOCS_DEFAULT_MAX_BYTES;
    cfg->max_tokens = 512;
}

/* ---- sources ---- */

/* How many bytes of text[0, n) to keep within max: all of it, or up to the last space of the
 * second half of the cut (else the cut itself), never inside a UTF-8 sequence. */
static size_t cut_length(const char *text, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80) cut--;
    for (size_t i = cut; i > max / 2; i--)
        if (isspace((unsigned char)text[i - 1])) return i - 1;
    return cut;
}

/* The number of the source of chunk_id in sources, or 0. */
static size_t source_number(const json_t *sources, json_int_t chunk_id)
{
    size_t i;
    const json_t *s;
    json_array_foreach(sources, i, s) if (json_integer_value(json_object_get(s, "chunk_id")) == chunk_id) return i + 1;
    return 0;
}

static json_t *source_json(size_t n, const rag_passage *p)
{
    return json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:f, s:s, s:I}", "n", (json_int_t)n, "path", p->path ? p->path : "",
                     "heading", p->heading ? p->heading : "", "start", (json_int_t)p->start, "end", (json_int_t)p->end,
                     "unit", p->unit ? p->unit : "byte", "score", (double)p->score, "text", p->text ? p->text : "",
                     "chunk_id", (json_int_t)p->chunk_id);
}

/* Writes passage p as source n, its text cut to max_bytes; returns the bytes of text kept. */
static size_t source_write(dk_buf *text, size_t n, const rag_passage *p, size_t max_bytes)
{
    dk_buf_printf(text, "[%zu] %s", n, p->path ? p->path : "");
    if (p->heading && p->heading[0]) dk_buf_printf(text, " \xc2\xa7 %s", p->heading);
    dk_buf_putc(text, '\n');
    const char *body = p->text ? p->text : "";
    size_t len = strlen(body);
    while (len > 0 && isspace((unsigned char)body[len - 1])) len--;
    size_t keep = cut_length(body, len, max_bytes);
    dk_buf_append(text, body, keep);
    if (keep < len) dk_buf_puts(text, " ...");
    dk_buf_puts(text, "\n\n");
    return keep;
}

int agent_sources_add(json_t *sources, const rag_results *r, size_t max_bytes, dk_buf *text, char *err)
{
    size_t n_passages = rag_results_count(r), left = max_bytes;
    for (size_t i = 0; i < n_passages; i++) {
        /* an even share of what is left: what a short passage leaves goes to the later ones */
        size_t share = left / (n_passages - i);
        if (share < DOCS_MIN_PASSAGE_BYTES) share = DOCS_MIN_PASSAGE_BYTES;
        const rag_passage *p = rag_results_get(r, i);
        size_t n = source_number(sources, (json_int_t)p->chunk_id);
        if (!n) {
            n = json_array_size(sources) + 1;
            if (json_array_append_new(sources, source_json(n, p)) != 0) return nomem(err);
        }
        size_t used = source_write(text, n, p, share);
        left = left > used ? left - used : 0;
    }
    return text->failed ? nomem(err) : DK_OK;
}

/* ---- citations ---- */

/* Appends v to arr unless it is there. */
static int append_distinct(json_t *arr, json_int_t v)
{
    size_t i;
    const json_t *x;
    json_array_foreach(arr, i, x) if (json_integer_value(x) == v) return 0;
    return json_array_append_new(arr, json_integer(v));
}

/* Parses "[n]" or "[n, m, ...]" at p (p[0] == '['): the numbers into nums (room for cap),
 * their count, or 0 when the brackets hold anything else. *end: past the ']'. */
static size_t parse_bracket(const char *p, json_int_t *nums, size_t cap, const char **end)
{
    size_t n = 0;
    const char *q = p + 1;
    for (;;) {
        while (*q == ' ') q++;
        if (!isdigit((unsigned char)*q)) return 0;
        json_int_t v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*q)) {
            if (++digits > CITATION_MAX_DIGITS) return 0;
            v = v * 10 + (*q++ - '0');
        }
        if (n == cap) return 0;
        nums[n++] = v;
        while (*q == ' ') q++;
        if (*q == ']') {
            *end = q + 1;
            return n;
        }
        if (*q != ',') return 0;
        q++;
    }
}

int agent_citations(const char *answer, size_t n_sources, json_t **valid, json_t **invalid, char *err)
{
    *valid = json_array();
    *invalid = json_array();
    if (!*valid || !*invalid) goto oom;
    for (const char *p = answer ? strchr(answer, '[') : NULL; p; p = strchr(p, '[')) {
        json_int_t nums[16];
        const char *end = p + 1;
        size_t n = parse_bracket(p, nums, sizeof nums / sizeof nums[0], &end);
        for (size_t i = 0; i < n; i++) {
            bool ok = nums[i] >= 1 && (size_t)nums[i] <= n_sources;
            if (append_distinct(ok ? *valid : *invalid, nums[i]) != 0) goto oom;
        }
        p = end;
    }
    return DK_OK;
oom:
    json_decref(*valid);
    json_decref(*invalid);
    *valid = *invalid = NULL;
    return nomem(err);
}

json_t *agent_search_docs_tool(void)
{
    return json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}}, s:[s]}}}", "type", "function", "function", "name",
                     "search_docs", "description",
                     "Search the user's documents; returns numbered passages to answer from and to cite as [n].",
                     "parameters", "type", "object", "properties", "query", "type", "string", "description",
                     "what to look for, in a few words", "required", "query");
}

/* ---- agent_ask_docs ---- */

static const char DOCS_SYSTEM[] =
    "You answer the user's question using only the numbered sources you are given. After each "
    "statement, cite the source it comes from by its number in brackets, like [1] or [2][3]. If the "
    "sources do not contain the answer, say that you do not know. Answer briefly.";

/* The user message: the numbered sources, then the question. */
static int docs_prompt(const agent_docs_config *cfg, const char *question, const rag_results *r, json_t *sources,
                       dk_buf *out, char *err)
{
    dk_buf_puts(out, "Sources:\n\n");
    size_t budget = cfg->max_source_chars ? cfg->max_source_chars : DOCS_DEFAULT_MAX_BYTES;
    int rc = agent_sources_add(sources, r, budget, out, err);
    if (rc != DK_OK) return rc;
    dk_buf_printf(out, "Question: %s", question);
    return out->failed ? nomem(err) : DK_OK;
}

static json_t *usage_json(const char *model, const agent_llm_reply *reply)
{
    return json_pack("{s:{s:I, s:I}}", model, "prompt_tokens", (json_int_t)reply->prompt_tokens, "completion_tokens",
                     (json_int_t)reply->completion_tokens);
}

/* Reports step to the callback and keeps it. */
static int docs_step(const agent_docs_config *cfg, json_t *steps, json_t *step, char *err)
{
    if (!step || json_array_append_new(steps, step) != 0) return nomem(err);
    if (cfg->on_step) cfg->on_step(cfg->user, step);
    return DK_OK;
}

/* The answer object; takes the references of sources and steps. */
static int docs_answer(const char *question, const char *words, json_t *sources, const char *model, json_t *steps,
                       json_t *usage, json_t **out, char *err)
{
    json_t *valid = NULL, *invalid = NULL;
    int rc = agent_citations(words, json_array_size(sources), &valid, &invalid, err);
    if (rc != DK_OK) {
        json_decref(sources);
        json_decref(steps);
        json_decref(usage);
        return rc;
    }
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "question", question, "answer", words, "sources",
                          sources, "citations", valid, "invalid_citations", invalid, "model",
                          model ? json_string(model) : json_null(), "steps", steps, "usage", usage);
    if (!o) return nomem(err);
    *out = o;
    return DK_OK;
}

int agent_ask_docs(const agent_docs_config *cfg, const char *question, json_t **answer, char *err)
{
    *answer = NULL;
    if (!cfg || !cfg->model || !cfg->store || !question || !question[0])
        return dk_fail(err, DK_ERR_ARG, "agent: a model, a document store and a question are needed");
    rag_results *found = NULL;
    uint64_t t0 = dk_now_ns();
    int rc = rag_search(cfg->store, cfg->embedder, question, &cfg->search, &found, err);
    if (rc != DK_OK) return rc;
    json_t *steps = json_array(), *sources = json_array(), *messages = NULL;
    dk_buf prompt = {0};
    agent_llm_reply reply;
    memset(&reply, 0, sizeof reply);
    bool asked = false;
    if (!steps || !sources) {
        rc = nomem(err);
        goto done;
    }
    size_t n_found = rag_results_count(found);
    rc = docs_step(cfg, steps,
                   json_pack("{s:s, s:s, s:I, s:f}", "kind", "search", "query", question, "passages", (json_int_t)n_found,
                             "ms", (double)(dk_now_ns() - t0) / 1e6),
                   err);
    if (rc != DK_OK) goto done;
    if (n_found == 0) {
        dk_buf words = {0};
        dk_buf_printf(&words, "No matching passages in %s.", cfg->store_name ? cfg->store_name : "the store");
        if (words.failed) rc = nomem(err);
        else rc = docs_answer(question, words.data, sources, NULL, steps, json_object(), answer, err);
        sources = steps = NULL;
        dk_buf_free(&words);
        goto done;
    }
    rc = docs_prompt(cfg, question, found, sources, &prompt, err);
    if (rc != DK_OK) goto done;
    messages = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content", DOCS_SYSTEM, "role", "user", "content",
                         prompt.data);
    if (!messages) {
        rc = nomem(err);
        goto done;
    }
    agent_llm_request req = {
        .messages = messages,
        .tool_choice = ENGINE_TOOL_NONE,
        .max_tokens = cfg->max_tokens > 0 ? cfg->max_tokens : 512,
        .temperature = cfg->temperature,
        .seed = cfg->seed,
    };
    const char *model = agent_llm_name(cfg->model);
    char why[DK_ERRLEN];
    asked = true;
    rc = agent_llm_chat(cfg->model, &req, &reply, why);
    if (rc != DK_OK) {
        rc = dk_fail(err, rc, "%s: %s", agent_llm_name(cfg->model), why);
        goto done;
    }
    model = agent_llm_name(cfg->model); /* an endpoint without #MODEL knows its name now */
    json_t *step = json_pack("{s:s, s:s, s:I, s:I, s:f}", "kind", "answer", "model", model, "prompt_tokens",
                             (json_int_t)reply.prompt_tokens, "completion_tokens", (json_int_t)reply.completion_tokens,
                             "ms", reply.ms);
    rc = docs_step(cfg, steps, step, err);
    if (rc != DK_OK) goto done;
    rc = docs_answer(question, reply.content.data ? reply.content.data : "", sources, model, steps,
                     usage_json(model, &reply), answer, err);
    sources = steps = NULL;
done:
    if (asked) agent_llm_reply_free(&reply);
    json_decref(messages);
    json_decref(sources);
    json_decref(steps);
    dk_buf_free(&prompt);
    rag_results_free(found);
    return rc;
}
