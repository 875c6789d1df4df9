/*
 * chat: turning a conversation into the prompt a model was trained on, and the model's output
 * back into content, reasoning and tool calls.
 *
 * Two halves:
 * - Templates. A Jinja interpreter for the subset that chat templates use (the
 *   `tokenizer.chat_template` of a GGUF file, or a Hugging Face tokenizer_config.json), rendering
 *   messages, tools, add_generation_prompt, bos/eos tokens and extra keyword arguments
 *   (enable_thinking, ...) byte for byte as Hugging Face's own renderer (@huggingface/jinja,
 *   which follows Python jinja2 with trim_blocks and lstrip_blocks) does. Files without a
 *   template get a built-in ChatML one.
 * - Output parsing. Each model family writes tool calls its own way (Qwen's `<tool_call>` JSON,
 *   Llama 3.x's bare JSON or `<|python_tag|>`, Mistral's `[TOOL_CALLS]`, Phi-4-mini's
 *   `<|tool_call|>`, Gemma's fenced JSON) and thinking models open with a `<think>` section.
 *   chat_parser reads streamed text and separates content, reasoning and complete tool calls,
 *   never letting the text of a call leak into content; malformed calls become content.
 *
 * JSON values (messages, tools, arguments) are jansson values; functions that take them borrow
 * them (no reference is kept after the call returns) unless they say otherwise.
 * Not for: tokenization (tokenize/), grammars (sample/), HTTP field mapping (server/).
 * Thread safety: a parsed chat_template is immutable and may be rendered from many threads; a
 * chat_parser belongs to one thread at a time.
 */
#ifndef DK_CHAT_H
#define DK_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"

/* ==== templates ==== */

typedef struct chat_template chat_template;

/* Parses a Jinja template source[0..n_bytes). The caller frees *out with chat_template_free.
 * Errors: DK_ERR_FORMAT with "line L, column C: what" in err for syntax the interpreter does
 * not know or cannot parse; DK_ERR_LIMIT for a source over 4 MiB or nested too deeply. */
int chat_template_parse(chat_template **out, const char *source, size_t n_bytes, char *err);
void chat_template_free(chat_template *tmpl); /* NULL is fine */

typedef struct chat_render_params {
    const json_t *messages;     /* array of message objects: role, content (string, null or an
                                   array of parts), tool_calls, tool_call_id, name, ... */
    const json_t *tools;        /* array of tools ({"type":"function","function":{...}}) or NULL */
    bool add_generation_prompt; /* end with the opening of an assistant turn */
    const char *bos_token;      /* texts of the special tokens the template may print; NULL: "" */
    const char *eos_token;
    const json_t *extra;        /* object of extra variables (enable_thinking, ...) or NULL; its
                                   keys are set after the ones above and may override them */
} chat_render_params;

/* Renders the template with the variables of params (messages, tools, add_generation_prompt,
 * bos_token, eos_token, the keys of extra; also the functions raise_exception and
 * strftime_now). Appends the text to out. Errors: DK_ERR_FORMAT with "line L, column C: what"
 * (including the message of a raise_exception the template calls), DK_ERR_NOMEM, DK_ERR_LIMIT
 * (too much output, too many loop iterations, macro recursion, memory: hostile templates),
 * DK_ERR_ARG (messages not an array). On error out is left as it was. */
int chat_template_render(const chat_template *tmpl, const chat_render_params *params, dk_buf *out,
                         char *err);

/* The built-in template for models that ship none (ChatML, with tools and tool results in
 * the Qwen 2.5 style). A static string. */
const char *chat_template_chatml(void);

/* ==== output: reasoning and tool calls ==== */

/* How a model family writes tool calls in its output. */
enum chat_format {
    CHAT_FORMAT_GENERIC = 0, /* a JSON object {"name":..., "arguments"|"parameters":...} or an
                                array of them, alone or in a ``` fence */
    CHAT_FORMAT_HERMES,      /* Qwen 2.5 / Qwen 3, Hermes, SmolLM3: <tool_call>{json}</tool_call> */
    CHAT_FORMAT_LLAMA3,      /* Llama 3.1 / 3.2 / 3.3: {"name":..., "parameters":...} (bare JSON,
                                several separated by ';' or newlines) or <|python_tag|>... */
    CHAT_FORMAT_MISTRAL,     /* Mistral / Nemo: [TOOL_CALLS][{"name":..., "arguments":...}, ...]
                                (also the v11 form [TOOL_CALLS]name[ARGS]{json}) */
    CHAT_FORMAT_PHI4,        /* Phi-4-mini: <|tool_call|>[{...}]<|/tool_call|> */
    CHAT_FORMAT_GEMMA,       /* Gemma 2 / 3: ```tool_code / ```json fenced or bare JSON calls */
};

/* Picks the format from a chat template's source (the markers it prints) and the GGUF
 * general.architecture (either may be NULL). Unknown: CHAT_FORMAT_GENERIC. */
enum chat_format chat_format_detect(const char *template_source, const char *arch);
const char *chat_format_name(enum chat_format format); /* "hermes", "llama3", ... */

typedef struct chat_parse_params {
    enum chat_format format;
    bool parse_tools;      /* look for tool calls (false: all text is content) */
    bool reasoning;        /* the output may open with a <think>...</think> section */
    bool in_reasoning;     /* the prompt already opened <think> (the text starts inside it) */
} chat_parse_params;

typedef struct chat_parser chat_parser;

int chat_parser_new(chat_parser **out, const chat_parse_params *params, char *err);
void chat_parser_free(chat_parser *parser); /* NULL is fine */

/* What one feed produced: text that is now certain to be content or reasoning (appended to
 * the caller's buffers) and how many tool calls were completed by it. */
typedef struct chat_delta {
    dk_buf *content;   /* appended to; may be NULL to discard */
    dk_buf *reasoning; /* appended to; may be NULL to discard */
    size_t n_new_calls;
} chat_delta;

/* Feeds the next piece of generated text. Text that could still be the start of a marker or
 * of a call is held back until it is decided. Returns DK_OK or DK_ERR_NOMEM. */
int chat_parser_feed(chat_parser *parser, const char *text, size_t n_bytes, chat_delta *delta);
/* End of output: decides what was held back (an unfinished or malformed call becomes
 * content). Returns DK_OK or DK_ERR_NOMEM. */
int chat_parser_finish(chat_parser *parser, chat_delta *delta);

/* The tool calls completed so far, in order, as an array of
 * {"id": "call_<n>", "type": "function", "function": {"name": S, "arguments": OBJECT}}
 * (arguments always a JSON object, whatever form the model wrote it in). Borrowed: valid until
 * the next feed/finish or chat_parser_free. */
const json_t *chat_parser_tool_calls(const chat_parser *parser);

/* ==== tool choice as a grammar (tool_grammar.c) ==== */

/* Appends to out a GBNF grammar (start rule `root`, NULL: "root") whose sentences are exactly the tool calls
 * `format` writes: calls to the functions of tools (an array of {"type":"function",
 * "function":{"name", "parameters"}}), or only to the one named only_name when it is not NULL,
 * with arguments valid under each function's parameters schema (sample_json_schema_to_gbnf).
 * parallel allows several calls in one turn. With it, tool_choice "required" and a named
 * tool_choice are enforced. Errors: DK_ERR_ARG (no tools, unknown only_name, a tool without a
 * name), the schema converter's errors naming the tool. Other rules are named tc-* and
 * tool<i>*, so the text can be combined with another grammar under a different root. */
int chat_tool_grammar(enum chat_format format, const json_t *tools, const char *only_name, bool parallel,
                      const char *root, dk_buf *out, char *err);

/* The text of the token that opens a tool call in format ("<tool_call>", "<|python_tag|>",
 * "[TOOL_CALLS]", "<|tool_call|>"), or NULL for formats whose calls begin with plain JSON. A
 * static string. */
const char *chat_format_call_marker(enum chat_format format);

#endif
