/*
 * openai_standin.h: a scripted stand-in for an OpenAI-compatible model endpoint, for tests of
 * code that talks to one (agent/llm_openai.c). It is a real HTTP server (libmicrohttpd, its own
 * threads) on 127.0.0.1 with an ephemeral port, answering from a script instead of a model:
 *
 *   script: {"MODEL": [reply, reply, ...], ...}
 *
 * Each POST /v1/chat/completions whose body names "model": MODEL gets MODEL's next reply (in
 * order, each used once). A reply is an object, every field optional:
 *   "content": "text"                    the message's content (absent: "", or null when
 *                                        there are tool calls)
 *   "tool_calls": [{"name": N, "arguments": OBJECT or STRING}, ...]
 *                                        sent with ids "call_1", "call_2", ... (numbered
 *                                        across the whole stand-in) and arguments as a JSON
 *                                        string (an object is serialised, a string sent as it
 *                                        is); finish_reason becomes "tool_calls"
 *   "logprobs": [-0.1, -0.2, ...]        choices[0].logprobs.content, one entry per number
 *   "prompt_tokens": n, "completion_tokens": n
 *                                        usage; by default prompt_tokens is 1 + a quarter of
 *                                        the bytes of the request's messages (as compact JSON),
 *                                        completion_tokens the number of logprobs if given,
 *                                        else 1 + a quarter of the content's bytes + 4 per call
 *   "status": 500, "error": "msg"        an error reply: that status (500 when only "error" is
 *                                        given) with {"error": {"message", "type", ...}}
 *   "raw": "text"                        the body sent verbatim (with "status", default 200)
 *   "body": JSON                         that JSON value as the whole body (likewise)
 *   "delay_ms": n                        wait that long before answering (at most 10 s)
 * A model whose script is used up gets 500, an unknown model 404, a body that is not JSON 400,
 * each with an OpenAI error body. GET /v1/models lists the script's models in script order.
 * Anything else is 404.
 *
 * Thread safety: every function may be called from any thread while requests are served.
 * Not for: streaming (SSE), anything but the two endpoints above.
 */
#ifndef DK_OPENAI_STANDIN_H
#define DK_OPENAI_STANDIN_H

#include <jansson.h>
#include <stddef.h>

typedef struct standin standin;

/* Starts serving script_json (a JSON text, see above). On success *out is the running
 * stand-in (stop it with standin_stop). DK_ERR_ARG for a malformed script, DK_ERR_IO when
 * the server cannot start; err is DK_ERRLEN bytes. */
int standin_start(standin **out, const char *script_json, char *err);

/* The base URL, "http://127.0.0.1:PORT/v1" (owned by s, valid until standin_stop). */
const char *standin_url(const standin *s);

/* A new reference (the caller json_decref's it): an array with one object per chat request
 * received, in order: {"model": the body's model or null, "body": the parsed body (null when
 * it was not JSON), "authorization": the Authorization header or null, "content_type": the
 * Content-Type header or null}. */
json_t *standin_requests(standin *s);

/* How many chat requests named model_or_null (NULL: all of them). */
size_t standin_n_requests(standin *s, const char *model_or_null);

/* How many GET /v1/models requests came. */
size_t standin_n_model_lists(standin *s);

/* Stops the server (waits for requests in flight) and frees everything. NULL is fine. */
void standin_stop(standin *s);

#endif
