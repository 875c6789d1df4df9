/*
 * toolcall_internal.h: the pieces the tool-call parser (toolcall.c) is built from, shared only
 * between the toolcall_*.c files of the chat module.
 *
 * - toolcall_jscan: an incremental JSON syntax checker that finds where an object or array
 *   ends (honouring strings and escapes) and notices malformed text at its first bad byte, so
 *   that a would-be call is released as content as soon as it cannot be JSON any more.
 * - toolcall_calls_from_json: the shapes of call objects the model families write, turned into
 *   the {"id","type","function":{"name","arguments"}} objects of chat_parser_tool_calls.
 * - toolcall_builtin_parse: Python-style calls, Llama 3.1's builtin tools `name.call(k="v")` and
 *   Gemma's tool_code `name(k="v")`.
 *
 * Not for: anything outside src/chat/toolcall*.c; the public contract is chat.h.
 */
#ifndef DK_CHAT_TOOLCALL_INTERNAL_H
#define DK_CHAT_TOOLCALL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Most bytes the parser holds back for one undecided thing (a call, a run of whitespace that
 * may be trimmed): past it the text is given up on and released as content. The decision is
 * taken at a fixed byte position, so it is the same whatever the chunking. */
#define TOOLCALL_HOLD_MAX ((size_t)1 << 20)
/* The builtin form is re-read from its start when it may have ended, so it gets a smaller cap. */
#define TOOLCALL_BUILTIN_MAX ((size_t)64 << 10)
/* Nesting depth the JSON checker follows; deeper values are malformed (jansson stops at 2048). */
#define TOOLCALL_JSON_MAX_DEPTH 512

/* Results of the incremental scanners. */
enum toolcall_scan {
    TOOLCALL_MORE = 0, /* everything so far is a valid beginning; needs more bytes */
    TOOLCALL_DONE = 1, /* the value ended */
    TOOLCALL_BAD = 2,  /* not valid: this text is not what was looked for */
};

typedef struct toolcall_jscan {
    uint8_t state;     /* enum in toolcall_json.c */
    uint8_t in_key;    /* the string being read is an object key */
    uint8_t n_hex;     /* hex digits still expected after \u */
    uint8_t lit_pos;   /* bytes of a literal (true/false/null) matched so far */
    const char *lit;   /* the literal being matched */
    size_t depth;      /* open containers */
    uint8_t stack[TOOLCALL_JSON_MAX_DEPTH]; /* '{' or '[' per open container, (depth) used */
} toolcall_jscan;

/* Starts checking a value that must be an object or an array. */
void toolcall_jscan_init(toolcall_jscan *scan);
/* Checks the next bytes. TOOLCALL_DONE: the value ended, *used = bytes of data[0..n) up to and
 * including its closing bracket; TOOLCALL_BAD: data[*used] is the first byte that cannot
 * continue JSON; TOOLCALL_MORE: all n bytes consumed (*used = n). */
int toolcall_jscan_feed(toolcall_jscan *scan, const char *data, size_t n, size_t *used);

/* Which wrappers a call object may come in and what a missing "arguments" means. */
typedef struct toolcall_shape {
    bool allow_no_arguments; /* a missing or null "arguments" is {} (inside explicit markers) */
} toolcall_shape;

/* Turns a parsed JSON value into calls appended to out (an array): an object
 * {"name": S, "arguments"|"parameters": OBJECT or a string holding an object}, the wrappers
 * {"function": {...}} and {"tool_calls": [...]}, or a non-empty array of those. An "id" string
 * the model wrote is kept; otherwise the id is "call_<n>" with n = first_index + position.
 * Returns 0, -1 when the value is not a (complete, well-formed) call, or -2 when memory ran
 * out; on -1 and -2 nothing is appended. */
int toolcall_calls_from_json(const json_t *value, const toolcall_shape *shape, size_t first_index,
                             json_t *out);

/* One call object {"id", "type": "function", "function": {"name", "arguments"}}; takes the
 * reference to arguments (even on failure). id NULL or "": "call_<index>". NULL when out of
 * memory. */
json_t *toolcall_call_new(const char *name, json_t *arguments, const char *id, size_t index);

/* Parses `name.call(key=value, ...)` (dot_call: Llama 3.1's builtin tools) or `name(key=value,
 * ...)` / `print(name(...))` (Gemma's tool_code) at data[0..n): values are Python string
 * literals ('...' or "..."), numbers, True, False, None. TOOLCALL_DONE: *end = bytes through the
 * last ')', *name_out (dk_malloc'd) and *args_out set; TOOLCALL_MORE: a valid beginning (eof
 * false); TOOLCALL_BAD: not this form (or out of memory: *nomem set). */
int toolcall_builtin_parse(const char *data, size_t n, bool eof, bool dot_call, size_t *end, char **name_out,
                           json_t **args_out, bool *nomem);

/* JSON/ASCII whitespace (space, tab, newline, carriage return). */
static inline bool toolcall_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

#endif
