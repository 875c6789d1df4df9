/*
 * srv_internal.h: what the files of the server module share. Nothing outside src/server/
 * includes it.
 *
 *   http.c      libmicrohttpd glue: one thread per connection, the whole body read (bounded)
 *               before a handler runs, routing by method and path, JSON and error replies,
 *               streamed replies fed by a worker thread, /metrics counters.
 *   sched.c     which models are resident: runners (a model, its batcher, its sessions),
 *               keep_alive expiry, a memory bound with least-recently-used unloading, the
 *               queue limit, the slot a request gets (the one whose conversation it continues).
 *   api_admin.c the management endpoints: /, /api/version, tags, show, ps, delete, copy,
 *               create, pull, blobs; /v1/models.
 *   request.c   request bodies to typed values: options, keep_alive, format, messages, tools
 *               (pure functions, fuzzed).
 *   api_ollama.c  /api/generate, /api/chat, /api/embed, /api/embeddings.
 *   api_openai.c  /v1/chat/completions, /v1/completions, /v1/embeddings.
 *   api_rerank.c  /api/rerank and /v1/rerank (cross-encoder reranking).
 */
#ifndef DK_SRV_INTERNAL_H
#define DK_SRV_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"
#include "engine/engine.h"
#include "server/server.h"
#include "store/store.h"

typedef struct srv_sched srv_sched;

/* ---- the server (http.c) ---- */
struct srv {
    srv_config config;
    store *store;        /* owned */
    srv_sched *sched;    /* owned */
    struct MHD_Daemon *daemon;
    uint64_t started_ns;
    /* counters for /metrics (atomic) */
    atomic_ulong n_requests, n_errors_4xx, n_errors_5xx, n_active, n_prompt_tokens, n_gen_tokens;
    /* Set once by srv_free before anything stops: waits in the scheduler give up, streams are
     * cancelled. A handler that runs long without a stream may pass it as engine cancel flag. */
    atomic_int stopping;
    struct srv_http *http;       /* http.c's own state (streams, allowed origins) */
    struct srv_metrics *metrics; /* requests by endpoint and status (metrics.c) */
};

/* One HTTP request whose body has been read whole (at most config.max_body bytes). */
typedef struct srv_request {
    srv *server;
    struct MHD_Connection *conn;
    const char *method;   /* "GET", "POST", "HEAD", "DELETE", ... */
    const char *path;     /* without the query string */
    const char *body;     /* NUL-terminated (body[body_len] == 0); "" when none */
    size_t body_len;
    bool openai;          /* path under /v1/: errors are {"error":{"message","type",...}} */
    /* POST /api/blobs/ only: the body was streamed to this temporary file instead (any size;
     * body is ""), with its sha256 ("sha256:HEX"); removed after the request. NULL otherwise. */
    const char *upload_path;
    const char *upload_digest;
    struct srv_reply *reply; /* set by exactly one srv_reply_* or srv_stream_start call */
} srv_request;

/* Handlers return nothing: they set the reply with one of these. */
/* body: stolen (decref'd by the server). */
void srv_reply_json(srv_request *rq, unsigned status, json_t *body);
void srv_reply_text(srv_request *rq, unsigned status, const char *content_type, const char *text, size_t n);
/* A JSON error: Ollama's {"error": "message"}, or OpenAI's {"error": {"message": ..., "type":
 * "invalid_request_error" | "not_found_error" | "server_error", "param": null, "code": null}}
 * under /v1/. status: 400 bad request, 404 unknown model or path, 405 method, 413 body too
 * large, 500, 501, 503 busy. */
void srv_reply_error(srv_request *rq, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps a DK_ERR_* code to an HTTP status (NOTFOUND 404, ARG/FORMAT/UNSUPPORTED 400, LIMIT 400
 * unless the scheduler says busy (503), IO/NOMEM 500). */
unsigned srv_status_of(int dk_code);
/* Same, knowing the message: DK_ERR_LIMIT "server busy" from srv_sched_acquire is 503. */
unsigned srv_status_of_error(int dk_code, const char *err);
/* A request header's value (case-insensitive name), or NULL. Valid during the request. */
const char *srv_request_header(srv_request *rq, const char *name);

/* Streamed replies: the handler hands its work to a worker thread and returns at once;
 * the worker writes chunks (srv_stream_write copies and queues them, never blocks on the
 * client), the connection thread sends them as they come. When the client goes away or
 * the connection times out, srv_stream_cancel_flag becomes non-zero (pass it to
 * engine_generate_params.cancel) and writes fail; the server joins the worker before it
 * frees the request. content_type: "application/x-ndjson" or "text/event-stream". */
typedef struct srv_stream srv_stream;
typedef void (*srv_stream_fn)(srv_stream *st, void *ctx);
/* ctx is owned by the worker (free it at the end of fn). On failure to start, replies 500
 * and calls nothing (ctx is then freed by the caller: returns -1). */
int srv_stream_start(srv_request *rq, const char *content_type, srv_stream_fn fn, void *ctx);
int srv_stream_write(srv_stream *st, const char *data, size_t n);     /* 0, or -1 when gone */
int srv_stream_write_json_line(srv_stream *st, const json_t *obj);    /* NDJSON: obj + "\n" */
int srv_stream_write_sse(srv_stream *st, const json_t *obj);          /* "data: {...}\n\n" */
int srv_stream_write_sse_done(srv_stream *st);                        /* "data: [DONE]\n\n" */
const atomic_int *srv_stream_cancel_flag(srv_stream *st);
srv *srv_stream_server(srv_stream *st);

/* Time stamps as the APIs write them: RFC 3339 with nanoseconds ("2026-12-01T11:37:16.123456789Z"). */
void srv_time_rfc3339(char buf[40], uint64_t unix_ns);
uint64_t srv_unix_ns(void);

/* ---- the scheduler (sched.c) ---- */
typedef struct srv_runner srv_runner;

/* keep_alive as the API gives it: < 0 forever, 0 unload when idle, > 0 nanoseconds. */
typedef struct srv_load_opts {
    int64_t keep_alive_ns;   /* SRV_KEEP_ALIVE_DEFAULT: config's (5 minutes) */
    size_t num_ctx;          /* 0: config's default */
    int num_thread;          /* 0: config's */
} srv_load_opts;
#define SRV_KEEP_ALIVE_DEFAULT INT64_MIN

/* What a request holds while it uses a model. */
typedef struct srv_lease {
    srv_runner *runner;
    engine_model *model;       /* the loaded model (borrowed from the runner) */
    engine_session *session;   /* a session of its own (NULL for an embedding model) */
    const store_model *info;   /* the store's record (name, digest, params, template, system...) */
    const char *name;          /* the name the model was asked by */
    double load_ms;            /* time this request waited for the model to load (0 if resident) */
    int slot;
    /* the scheduler's own: */
    int64_t keep_alive_ns;     /* the request's keep_alive, applied at release */
    size_t n_conversation_reused; /* messages of the slot's last conversation this one continues */
} srv_lease;

int srv_sched_new(srv_sched **out, srv *server, char *err);
void srv_sched_free(srv_sched *sched); /* unloads everything; no lease may be held */
/* Wakes every waiting srv_sched_acquire, which then fails (server->stopping is set). */
void srv_sched_shutdown(srv_sched *sched);

/* Finds (or loads) the model and gives the request a session. conversation: the messages
 * of a chat (borrowed, may be NULL): the slot whose last conversation they continue is
 * preferred, so its KV cache prefix is reused. Blocks while every slot of the model is busy;
 * fails with DK_ERR_LIMIT and "server busy" when config.max_queue requests already wait (the
 * caller answers 503), DK_ERR_NOTFOUND for an unknown model, the engine's error when it
 * cannot load. cancel may be NULL. Release with srv_sched_release. */
int srv_sched_acquire(srv_sched *sched, const char *name, const srv_load_opts *opts, const json_t *conversation,
                      const atomic_int *cancel, srv_lease *out, char *err);
/* Gives the slot back. conversation: the messages including the reply just generated
 * (copied, may be NULL), for the next turn's slot choice. The model's keep_alive is reset
 * from this request's (0 unloads it once no lease holds it). */
void srv_sched_release(srv_sched *sched, srv_lease *lease, const json_t *conversation);
/* Unloads a model now if no lease holds it (keep_alive 0 with no prompt), else once idle. */
void srv_sched_unload(srv_sched *sched, const char *name);
/* Loads without a request (an empty prompt): keeps it for keep_alive. */
int srv_sched_preload(srv_sched *sched, const char *name, const srv_load_opts *opts, double *load_ms, char *err);
/* The /api/ps list: [{name, model, size, digest, details, expires_at, size_vram, context_length}]. */
json_t *srv_sched_ps(srv_sched *sched);
/* Counters for /metrics. */
void srv_sched_stats(srv_sched *sched, size_t *n_loaded, size_t *n_waiting, size_t *n_busy, uint64_t *batch_steps,
                     uint64_t *batch_rows);

/* ---- model descriptions shared by show, tags and ps (api_admin.c) ---- */
/* {"parent_model","format":"gguf","family","families","parameter_size","quantization_level"} */
json_t *srv_model_details(const store_model *m, const engine_model *loaded_or_null);

/* ---- /metrics (metrics.c) ---- */
typedef struct srv_metrics srv_metrics;
srv_metrics *srv_metrics_new(void);            /* NULL on allocation failure; srv_metrics_free */
void srv_metrics_free(srv_metrics *m);
/* One finished request: endpoint is the route's path pattern (a static string). */
void srv_metrics_record(srv_metrics *m, const char *endpoint, unsigned status);
void srv_api_metrics(srv_request *rq);   /* GET /metrics: Prometheus text format */

/* ---- requests (request.c) ---- */
/* Ollama "options" (and the Modelfile's params under them) into generation parameters:
 * temperature, top_k, top_p, min_p, typical_p, repeat_penalty, repeat_last_n,
 * presence_penalty, frequency_penalty, seed, num_predict, stop, num_ctx, num_thread; unknown
 * keys are ignored as Ollama does, wrong types are DK_ERR_ARG naming the key. stops are
 * pointers into the json (valid while it lives), at most SRV_MAX_STOPS. */
#define SRV_MAX_STOPS 16
typedef struct srv_gen_options {
    sample_params sampling;
    long num_predict;
    const char *stops[SRV_MAX_STOPS];
    size_t n_stops;
    size_t num_ctx;
    int num_thread;
} srv_gen_options;
void srv_gen_options_default(srv_gen_options *o);
int srv_parse_options(const json_t *options, srv_gen_options *o, char *err);
/* keep_alive: a number of seconds (negative: forever) or a duration string ("5m", "1h30m",
 * "10s", "-1", "0"). */
int srv_parse_keep_alive(const json_t *v, int64_t *ns, char *err);

/* ---- the handlers (http.c routes to them; each sets rq's reply) ---- */
/* api_admin.c */
void srv_api_version(srv_request *rq);   /* GET /api/version */
void srv_api_tags(srv_request *rq);      /* GET /api/tags */
void srv_api_show(srv_request *rq);      /* POST /api/show */
void srv_api_ps(srv_request *rq);        /* GET /api/ps */
void srv_api_delete(srv_request *rq);    /* DELETE /api/delete */
void srv_api_copy(srv_request *rq);      /* POST /api/copy */
void srv_api_create(srv_request *rq);    /* POST /api/create */
void srv_api_pull(srv_request *rq);      /* POST /api/pull */
void srv_api_blob(srv_request *rq, const char *digest); /* HEAD / POST /api/blobs/:digest */
void srv_openai_models(srv_request *rq, const char *model_or_null); /* GET /v1/models[/M] */
/* api_ollama.c */
void srv_api_generate(srv_request *rq);  /* POST /api/generate */
void srv_api_chat(srv_request *rq);      /* POST /api/chat */
void srv_api_embed(srv_request *rq);     /* POST /api/embed */
void srv_api_embeddings(srv_request *rq);/* POST /api/embeddings (legacy) */
/* api_openai.c */
void srv_openai_chat(srv_request *rq);        /* POST /v1/chat/completions */
void srv_openai_completions(srv_request *rq); /* POST /v1/completions */
void srv_openai_embeddings(srv_request *rq);  /* POST /v1/embeddings */
void srv_api_ask(srv_request *rq);            /* POST /api/ask: the SQL agent (api_ask.c) */
/* api_rerank.c: cross-encoder reranking, {"model","query","documents",...} */
#define SRV_RERANK_MAX_DOCS 1000               /* documents per request */
void srv_api_rerank(srv_request *rq);         /* POST /api/rerank */
void srv_openai_rerank(srv_request *rq);      /* POST /v1/rerank */

/* ---- api handlers: request.c helpers ----
 * Parsers of request fields (pure, fuzzed) and the generation machinery both APIs share
 * (api_ollama.c, api_openai.c). Every parser returns DK_OK or DK_ERR_ARG with a message that
 * names the field (the handler answers 400 with it); json results are new references the
 * caller decrefs; const char * results point into the parsed json. */
/* The body as a JSON object ("invalid JSON: ..." otherwise). */
int srv_parse_body(const char *body, size_t n_bytes, json_t **out, char *err);
/* "model": a non-empty string ("model is required"). */
int srv_parse_model(const json_t *req, const char **model, char *err);
/* Typed optional fields: absent or null leaves the fallback (NULL for strings). */
int srv_field_string(const json_t *obj, const char *key, const char **out, char *err);
int srv_field_bool(const json_t *obj, const char *key, bool fallback, bool *out, char *err);
int srv_field_int(const json_t *obj, const char *key, long long lo, long long hi, long long fallback, long long *out,
                  char *err);
/* Defaults, then the Modelfile's params (may be NULL), then the request's options. */
int srv_options_layered(const json_t *model_params, const json_t *options, srv_gen_options *o, char *err);
/* think: true/false, "high"/"medium"/"low" (on); absent: -1 (the template's default). */
int srv_parse_think(const json_t *v, int *think, char *err);
/* Ollama's format: NULL (absent, null, ""), "json" or a schema object (new reference). */
int srv_parse_format(const json_t *v, json_t **format, char *err);
/* tools: NULL when absent or empty, else [{"type":"function","function":{name,...}}]. */
int srv_parse_tools(const json_t *v, json_t **tools, char *err);
/* OpenAI tool_choice: "auto" | "none" | "required" | {"type":"function","function":{"name"}}. */
int srv_parse_tool_choice(const json_t *v, enum engine_tool_choice *choice, const char **name, char *err);
/* A call-forcing tool_choice needs tools, and a named one one of them. */
int srv_check_tool_choice(const json_t *tools, enum engine_tool_choice choice, const char *name, char *err);
/* OpenAI response_format: NULL for text, "json" for json_object, the schema for json_schema. */
int srv_openai_response_format(const json_t *v, json_t **format, char *err);
/* Messages of each API into one shape: [{role (developer -> system), content (a string; text
 * parts joined), tool_calls [{"id"?, "type":"function","function":{"name","arguments":{}}}]
 * (string arguments parsed), tool_call_id, name (Ollama's tool_name), reasoning_content
 * (Ollama's thinking)}]. NULL for absent. Images are refused. */
int srv_ollama_messages(const json_t *v, json_t **out, char *err);
int srv_openai_messages(const json_t *v, json_t **out, char *err);
/* The store's system message (when the messages have none) and MESSAGE lines, then messages. */
int srv_conversation_with_model(const store_model *info, const json_t *messages, json_t **out, char *err);
/* OpenAI sampling fields as an Ollama options object (temperature, top_p, seed,
 * presence/frequency_penalty, max_tokens / max_completion_tokens -> num_predict (default
 * default_max_tokens unless < 0), stop); refuses n != 1. */
int srv_openai_options(const json_t *req, long default_max_tokens, json_t **options, char *err);
/* reasoning_effort: "none" -> 0, "minimal"/"low"/"medium"/"high" -> 1, absent -> -1. */
int srv_openai_reasoning_effort(const json_t *req, int *think, char *err);
/* {"token","logprob","bytes":[...]} (+ "top_logprobs":[...] when with_top). NULL: no memory. */
json_t *srv_logprob_json(const engine_model *model, int32_t token, float logprob, const engine_logprob *top, size_t n_top,
                         bool with_top);
/* Appends the base64 of v[0..n) as little-endian float32. 0, or -1 without memory. */
int srv_base64_floats(const float *v, size_t n, dk_buf *out);

/* One generation, as both APIs run it: filled by the handler, run inline or in a stream's
 * worker by srv_gen_run, then answered by the handler's API. */
typedef struct srv_gen_job srv_gen_job;
/* Streaming: a piece of content or reasoning (either may be empty) and the logprob entries
 * of the tokens since the last piece (an array, borrowed, or NULL). Non-zero: the client
 * is gone, stop. */
typedef int (*srv_delta_fn)(srv_gen_job *job, const char *content, size_t n_content, const char *reasoning,
                            size_t n_reasoning, const json_t *logprobs);
struct srv_gen_job {
    srv *server;
    srv_stream *stream;          /* set in the stream's worker; NULL inline */
    json_t *body;                /* the request (owned): the strings below point into it */
    json_t *options_json;        /* owned or NULL: options made from OpenAI fields */
    const char *model_name;
    srv_lease lease;
    bool leased;
    srv_load_opts load;
    /* what to run: a chat turn (engine_chat) or a prompt (engine_generate) */
    bool chat;
    json_t *request_messages;    /* owned: the request's messages (the scheduler's key) */
    json_t *messages;            /* owned: the conversation as rendered */
    json_t *tools;               /* owned or NULL */
    enum engine_tool_choice tool_choice;
    const char *tool_name;
    bool parallel_tool_calls;
    json_t *format;              /* owned or NULL */
    int think;
    int32_t *prompt;             /* (n_prompt) tokens for engine_generate, owned */
    size_t n_prompt;
    bool reasoning, in_reasoning;/* engine_generate: the output may open with <think> */
    srv_gen_options opts;
    bool logprobs;
    int top_logprobs;
    srv_delta_fn on_delta;       /* NULL: nothing streamed, the result is only accumulated */
    void *api;                   /* the API's own state (borrowed) */
    char id[64];                 /* the API's response id */
    int64_t created;             /* unix seconds */
    uint64_t t_start_ns;
    /* results */
    dk_buf content, reasoning_text;
    json_t *tool_calls;          /* owned array after srv_gen_run */
    json_t *logprobs_all;        /* owned array of every entry (logprobs) */
    json_t *logprobs_pending;    /* owned array of those not yet streamed */
    int32_t *out_tokens;         /* (n_out) generated tokens without a final EOG, owned */
    size_t n_out, cap_out;
    engine_timings timings;
    size_t n_prompt_reused;      /* chat: prompt tokens found in the KV cache (not in timings) */
    bool gone;                   /* the client went away */
    int rc;
    char err[DK_ERRLEN];
};
/* Allocates a zeroed job (body stolen) with opts defaulted and t_start_ns set. */
srv_gen_job *srv_gen_job_new(srv *server, json_t *body);
/* The job of a request: its body parsed (400 on malformed JSON) and a new job (500 when out of
 * memory); NULL after replying. */
srv_gen_job *srv_gen_job_from_request(srv_request *rq);
/* Releases the lease (with the conversation and reply for a chat) and frees everything. */
void srv_gen_job_free(srv_gen_job *job);
/* Acquires job->lease for job->model_name (the request's messages as the conversation).
 * On failure replies with the error (404 / 503 / ...) and returns non-zero; openai picks
 * the wording of "not found". */
int srv_gen_acquire(srv_gen_job *job, srv_request *rq, bool openai);
/* Fits job->messages in the session's context: drops the oldest non-system messages while
 * the rendered prompt does not fit; DK_ERR_ARG when even the last user message does not. */
int srv_gen_fit_chat(srv_gen_job *job, char *err);
/* Runs the job (job->rc, job->err); updates the server's token counters. */
void srv_gen_run(srv_gen_job *job);
/* Ollama's done_reason / OpenAI's finish_reason of the finished job. */
const char *srv_gen_done_reason(const srv_gen_job *job);
/* Embeddings of texts[0..n) (a borrowed array of strings) with an embedding model: out
 * (n, n_dim) row-major, owned by the caller (dk_free); n_dim = dimensions when 0 < dimensions
 * < n_embd (truncated, re-normalised). truncate: inputs longer than the context are cut, else
 * DK_ERR_ARG. *n_tokens: tokens evaluated in all. The server's messages over
 * engine_embed_batch (packed forward passes); a reranker is DK_ERR_ARG. */
int srv_embed_texts(engine_model *model, const char *const *texts, size_t n, bool truncate, long long dimensions,
                    float **out, size_t *n_dim, size_t *n_tokens, char *err);

#endif
