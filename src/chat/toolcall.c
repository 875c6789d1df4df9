/*
 * toolcall.c: chat_parser, which splits a model's streamed output into content, reasoning and
 * tool calls for every model family of enum chat_format, and chat_format_detect.
 *
 * How it stays the same whatever the chunking: the undecided bytes wait in `pending`, and
 * every decision (this is content, this is a call, this marker is not one) is taken only when
 * the bytes seen so far settle it for every possible continuation, at a byte position that
 * does not depend on where chunks were cut. Whatever could still turn into a marker or a call
 * is held back, so content is never emitted and then retracted.
 *
 * The output, in order:
 * - Reasoning (params.reasoning): whitespace, then `<think>` opens it (with in_reasoning the
 *   text starts inside it and a redundant `<think>` is skipped); it runs to `</think>` or the
 *   end. As llama.cpp does, the reasoning is stripped of whitespace at both ends and the
 *   whitespace after `</think>` is dropped. An unterminated section stays reasoning.
 * - Content, in which calls are recognised where each family writes them:
 *   hermes   `<tool_call>` JSON `</tool_call>` anywhere (the closing tag is required);
 *   llama3   a JSON call at the start of content, several separated by ';' or whitespace, or
 *            `<|python_tag|>` (anywhere) followed by such JSON or by `name.call(k="v", ...)`;
 *   mistral  `[TOOL_CALLS]` (anywhere) followed by a JSON array or object of calls, or by
 *            `name[ARGS]{...}` / `name[CALL_ID]id[ARGS]{...}`; repeated markers repeat;
 *   phi4     `<|tool_call|>` JSON array or object `<|/tool_call|>` anywhere;
 *   gemma    a ``` fence (``` , ```json, ```tool_code, ```tool_call) of JSON calls anywhere
 *            (in ```tool_code also `name(k="v")` or `print(name(k="v"))`, as Google's
 *            examples write them), or JSON calls at the start of content (llama3 without ';');
 *   generic  a ``` fence as gemma, or output that is nothing but JSON calls (and whitespace).
 *   A call is {"name", "arguments"|"parameters"} (arguments an object or a string holding
 *   one), also wrapped as {"function": {...}} or {"tool_calls": [...]}, or an array of them.
 *   Inside explicit markers (hermes, phi4, mistral, python_tag) a missing or null arguments
 *   means {}; bare JSON must say "arguments" or "parameters" (else it is ordinary content).
 * - Whitespace between calls, before a marked call at the start of content and after the last
 *   call up to the end is dropped; ';' separators of llama3 too.
 * - Anything malformed (bad JSON, no name, arguments that are not an object, a missing closing
 *   tag, a call still open at the end, more than TOOLCALL_HOLD_MAX bytes) is content,
 *   verbatim; a marker group fails as a whole and its marker is content, and the text after
 *   it is read again as content (where later calls are still found).
 * Emitted content and reasoning never end inside a UTF-8 sequence before the end of output.
 *
 * Not for: the prompt side (template.c), grammars that force calls (tool_grammar.c).
 */
#include "chat/chat.h"

#include <string.h>
#include <strings.h>

#include "chat/toolcall_internal.h"

/* ---- chat_format_detect ---- */

const char *chat_format_name(enum chat_format format)
{
    switch (format) {
    case CHAT_FORMAT_GENERIC: return "generic";
    case CHAT_FORMAT_HERMES: return "hermes";
    case CHAT_FORMAT_LLAMA3: return "llama3";
    case CHAT_FORMAT_MISTRAL: return "mistral";
    case CHAT_FORMAT_PHI4: return "phi4";
    case CHAT_FORMAT_GEMMA: return "gemma";
    }
    return "unknown";
}

static bool has(const char *haystack, const char *needle) { return haystack && strstr(haystack, needle); }

/* The most specific markers first: a template that prints [TOOL_CALLS] or <|tool_call|> may
 * also mention other formats in its instructions, while <tool_call> is common to many.
 * Phi-4-mini's template prints the tools in <|tool|>...<|/tool|> and never the call marker. */
enum chat_format chat_format_detect(const char *template_source, const char *arch)
{
    const char *t = template_source;
    if (has(t, "[TOOL_CALLS]")) return CHAT_FORMAT_MISTRAL;
    if (has(t, "<|tool_call|>") || (has(t, "<|tool|>") && has(t, "<|/tool|>"))) return CHAT_FORMAT_PHI4;
    if (has(t, "<tool_call>")) return CHAT_FORMAT_HERMES;
    if (has(t, "<|python_tag|>")) return CHAT_FORMAT_LLAMA3;
    if (has(t, "<|start_header_id|>") && (has(t, "ipython") || has(t, "\"parameters\"")))
        return CHAT_FORMAT_LLAMA3;
    if (has(t, "<start_of_turn>") || (arch && strncmp(arch, "gemma", 5) == 0)) return CHAT_FORMAT_GEMMA;
    return CHAT_FORMAT_GENERIC;
}

/* ---- the parser's state ---- */

enum parser_phase {
    PHASE_THINK_OPEN,  /* reasoning: whitespace, maybe the start of <think> */
    PHASE_REASONING,   /* inside <think> */
    PHASE_AFTER_THINK, /* dropping whitespace after </think> */
    PHASE_CONTENT,     /* content, looking for the family's markers */
    PHASE_GROUP,       /* inside a would-be call group at pending[0] */
};

enum group_kind {
    GROUP_MARKED,   /* opener, calls, closing literal: all or nothing (hermes, phi4) */
    GROUP_FENCE,    /* ```lang, calls, ```: all or nothing */
    GROUP_ALONE,    /* generic bare JSON: calls, then the end of output: all or nothing */
    GROUP_SEQUENCE, /* llama3/gemma bare JSON, <|python_tag|>: each call taken as it ends */
    GROUP_MISTRAL,  /* [TOOL_CALLS] then one array/object or name[ARGS]{...} */
};

enum group_step {
    STEP_FENCE_LANG, /* the language tag after ``` */
    STEP_SEP,        /* between values: separators, a value, the closer */
    STEP_VALUE,      /* inside a JSON value */
    STEP_BUILTIN,    /* inside name.call(...) */
    STEP_MISTRAL,    /* after [TOOL_CALLS]: which form */
};

typedef struct toolcall_group {
    enum group_kind kind;
    enum group_step step;
    size_t open_len;     /* bytes of the opener at pending[0] (0: none, or already consumed) */
    const char *closer;  /* GROUP_MARKED / GROUP_FENCE: the literal after the calls */
    size_t cur;          /* next byte to look at, from pending[0] */
    size_t value_start;  /* where the current value began */
    size_t n_values;     /* values read (GROUP_SEQUENCE: taken) */
    bool semicolons;     /* ';' separates values too (llama3) */
    bool python_tag;     /* after <|python_tag|>: the builtin form name.call(...) is allowed */
    bool tool_code;      /* in a ```tool_code fence: the form name(...) is allowed */
    size_t name_at, name_len, id_at, id_len; /* mistral name[CALL_ID]id[ARGS] (id_len 0: none) */
    bool mistral_args;   /* the value is the arguments of name[ARGS] */
    size_t builtin_checked; /* bytes of the builtin form already known not to end it */
    toolcall_shape shape;
    toolcall_jscan scan;
    json_t *calls;       /* calls read and not yet taken (all-or-nothing groups) */
} toolcall_group;

struct chat_parser {
    chat_parse_params params;
    enum parser_phase phase;
    dk_buf pending;      /* undecided bytes are pending.data[head .. pending.len) */
    size_t head;
    bool eof, failed;
    bool at_call_pos;    /* at the start of content: a bare JSON call may begin here */
    bool post_call;      /* just after calls: whitespace before the next call or the end drops */
    bool reasoning_lead; /* whitespace at the start of the reasoning is still dropped */
    size_t ws_dropped;   /* whitespace dropped in the current leading run (at most HOLD_MAX) */
    toolcall_group group;
    json_t *calls;       /* every call taken, in order */
    size_t n_new;        /* calls taken during the current feed/finish */
    chat_delta *delta;   /* where the current feed/finish writes (may be NULL) */
};

/* What one step of the state machine did. */
enum { RUN_PROGRESS = 1, RUN_MORE = 0 };

static const char THINK_OPEN[] = "<think>";
static const char THINK_CLOSE[] = "</think>";

static const char *pend(const chat_parser *p) { return p->pending.data ? p->pending.data + p->head : ""; }
static size_t avail(const chat_parser *p) { return p->pending.len - p->head; }

static void consume(chat_parser *p, size_t n)
{
    p->head += n;
    if (p->head == p->pending.len) {
        p->head = 0;
        dk_buf_clear(&p->pending);
    }
}

/* Moves the undecided bytes to the front once the decided ones dominate the buffer. */
static void compact(chat_parser *p)
{
    if (p->head < 4096 || p->head < p->pending.len / 2) return;
    size_t n = avail(p);
    memmove(p->pending.data, p->pending.data + p->head, n);
    p->pending.len = n;
    p->pending.data[n] = 0;
    p->head = 0;
}

/* Appends pending[0..n) to dst (NULL: discarded) and consumes it. */
static int emit(chat_parser *p, dk_buf *dst, size_t n)
{
    if (n && dst && dk_buf_append(dst, pend(p), n)) return DK_ERR_NOMEM;
    consume(p, n);
    return DK_OK;
}

static int emit_content(chat_parser *p, size_t n) { return emit(p, p->delta ? p->delta->content : NULL, n); }

static int emit_reasoning(chat_parser *p, size_t n)
{
    return emit(p, p->delta ? p->delta->reasoning : NULL, n);
}

/* n, moved back to the start of a UTF-8 sequence that data[..n) cuts short (more bytes of
 * it may still come). */
static size_t utf8_boundary(const char *data, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)data[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

/* Bytes of whitespace at data[0..n), counting at most limit + 1. */
static size_t space_run(const char *data, size_t n, size_t limit)
{
    size_t i = 0;
    while (i < n && i <= limit && toolcall_is_space(data[i])) i++;
    return i;
}

/* Whitespace just before data[n], at most limit bytes of it. */
static size_t space_before(const char *data, size_t n, size_t limit)
{
    size_t k = 0;
    while (k < n && k < limit && toolcall_is_space(data[n - 1 - k])) k++;
    return k;
}

enum match { MATCH_NONE, MATCH_PARTIAL, MATCH_FULL };

/* Whether data[0..n) starts with lit, or is a proper beginning of it. */
static enum match match_literal(const char *data, size_t n, const char *lit)
{
    size_t len = strlen(lit);
    size_t k = n < len ? n : len;
    if (memcmp(data, lit, k) != 0) return MATCH_NONE;
    return k == len ? MATCH_FULL : MATCH_PARTIAL;
}

/* The longest end of data[0..n) that is a proper beginning of lit. */
static size_t partial_suffix(const char *data, size_t n, const char *lit)
{
    size_t len = strlen(lit);
    for (size_t k = len - 1 < n ? len - 1 : n; k > 0; k--)
        if (memcmp(data + n - k, lit, k) == 0) return k;
    return 0;
}

/* The family's in-content opener (one per format). */
static const char *format_opener(enum chat_format format)
{
    const char *marker = chat_format_call_marker(format); /* Gemma and generic calls come fenced */
    return marker ? marker : "```";
}

static bool format_has_bare(enum chat_format format)
{
    return format == CHAT_FORMAT_LLAMA3 || format == CHAT_FORMAT_GEMMA || format == CHAT_FORMAT_GENERIC;
}

/* ---- groups ---- */

static void group_reset(chat_parser *p)
{
    json_decref(p->group.calls);
    memset(&p->group, 0, sizeof p->group);
}

static int group_begin(chat_parser *p, enum group_kind kind, size_t open_len)
{
    group_reset(p);
    toolcall_group *g = &p->group;
    g->kind = kind;
    g->open_len = open_len;
    g->cur = open_len;
    g->step = STEP_SEP;
    if (kind != GROUP_SEQUENCE && !(g->calls = json_array())) return DK_ERR_NOMEM;
    p->phase = PHASE_GROUP;
    return RUN_PROGRESS;
}

/* The opener of the family at pending[0] starts a group. */
static int group_begin_marked(chat_parser *p)
{
    enum chat_format f = p->params.format;
    const char *opener = format_opener(f);
    size_t len = strlen(opener);
    int rc;
    switch (f) {
    case CHAT_FORMAT_HERMES:
    case CHAT_FORMAT_PHI4:
        rc = group_begin(p, GROUP_MARKED, len);
        p->group.closer = f == CHAT_FORMAT_HERMES ? "</tool_call>" : "<|/tool_call|>";
        p->group.shape.allow_no_arguments = true;
        return rc;
    case CHAT_FORMAT_LLAMA3:
        rc = group_begin(p, GROUP_SEQUENCE, len);
        p->group.semicolons = true;
        p->group.python_tag = true;
        p->group.shape.allow_no_arguments = true;
        return rc;
    case CHAT_FORMAT_MISTRAL:
        rc = group_begin(p, GROUP_MISTRAL, len);
        p->group.step = STEP_MISTRAL;
        p->group.shape.allow_no_arguments = true;
        return rc;
    case CHAT_FORMAT_GEMMA:
    case CHAT_FORMAT_GENERIC: break;
    }
    rc = group_begin(p, GROUP_FENCE, len);
    p->group.step = STEP_FENCE_LANG;
    p->group.closer = "```";
    return rc;
}

/* Bare JSON at the start of content: pending[0..lead) is whitespace, the value starts at lead. */
static int group_begin_bare(chat_parser *p, size_t lead)
{
    enum chat_format f = p->params.format;
    int rc = group_begin(p, f == CHAT_FORMAT_GENERIC ? GROUP_ALONE : GROUP_SEQUENCE, 0);
    p->group.cur = lead;
    p->group.semicolons = f == CHAT_FORMAT_LLAMA3;
    return rc;
}

/* Takes calls (an array) as the parser's. */
static int take_calls(chat_parser *p, json_t *calls)
{
    p->n_new += json_array_size(calls);
    return json_array_extend(p->calls, calls) ? DK_ERR_NOMEM : DK_OK;
}

/* The all-or-nothing group ended well at pending[end]. */
static int group_succeed(chat_parser *p, size_t end)
{
    int rc = take_calls(p, p->group.calls);
    consume(p, end);
    group_reset(p);
    p->phase = PHASE_CONTENT;
    p->post_call = true;
    return rc ? rc : RUN_PROGRESS;
}

/* Not a call group: the opener is content and what follows it is read again; without an
 * opener, pending[0..at) is content and reading goes on from `at`. */
static int group_fail(chat_parser *p, size_t at)
{
    size_t n = p->group.open_len ? p->group.open_len : at;
    group_reset(p);
    p->phase = PHASE_CONTENT;
    p->at_call_pos = p->post_call = false;
    int rc = emit_content(p, n);
    return rc ? rc : RUN_PROGRESS;
}

/* A sequence of bare calls ends at pending[at]: the separators before it are dropped. */
static int sequence_end(chat_parser *p, size_t at)
{
    consume(p, at);
    group_reset(p);
    p->phase = PHASE_CONTENT;
    p->at_call_pos = false;
    p->post_call = false;
    return RUN_PROGRESS;
}

/* One value's calls are ready (in calls): a sequence takes them now, others keep them. */
static int group_value_done(chat_parser *p, json_t *calls, size_t end)
{
    toolcall_group *g = &p->group;
    g->n_values++;
    if (g->kind == GROUP_SEQUENCE) {
        int rc = take_calls(p, calls);
        json_decref(calls);
        if (rc) return rc;
        consume(p, end);
        g->open_len = 0; /* taken with the call: a later failure is plain content */
        g->cur = 0;
        g->step = STEP_SEP;
        return RUN_PROGRESS;
    }
    int rc = json_array_extend(g->calls, calls) ? DK_ERR_NOMEM : DK_OK;
    json_decref(calls);
    if (rc) return rc;
    if (g->kind == GROUP_MISTRAL) return group_succeed(p, end);
    g->cur = end;
    g->step = STEP_SEP;
    return RUN_PROGRESS;
}

static size_t calls_so_far(const chat_parser *p)
{
    return json_array_size(p->calls) + json_array_size(p->group.calls);
}

/* A JSON value pending[value_start..end) is complete: a call (or calls), or the group fails. */
static int group_parse_value(chat_parser *p, size_t end)
{
    toolcall_group *g = &p->group;
    const char *text = pend(p) + g->value_start;
    size_t n = end - g->value_start;
    json_t *value = json_loadb(text, n, 0, NULL);
    json_t *calls = json_array();
    int rc = calls ? -1 : -2;
    if (value && calls && g->mistral_args) {
        char *name = dk_strndup(pend(p) + g->name_at, g->name_len);
        char *id = g->id_len ? dk_strndup(pend(p) + g->id_at, g->id_len) : NULL;
        json_t *call = NULL;
        if (name && (id || !g->id_len))
            call = toolcall_call_new(name, json_incref(value), id, calls_so_far(p));
        rc = call && json_array_append_new(calls, call) == 0 ? 0 : -2;
        dk_free(name);
        dk_free(id);
    } else if (value && calls) {
        rc = toolcall_calls_from_json(value, &g->shape, calls_so_far(p), calls);
    }
    json_decref(value);
    if (rc == 0) return group_value_done(p, calls, end);
    json_decref(calls);
    if (rc == -2) return DK_ERR_NOMEM;
    return group_fail(p, end);
}

static int step_value(chat_parser *p)
{
    toolcall_group *g = &p->group;
    size_t n = avail(p);
    size_t lim = n < TOOLCALL_HOLD_MAX ? n : TOOLCALL_HOLD_MAX;
    size_t used = 0;
    int r = g->cur < lim ? toolcall_jscan_feed(&g->scan, pend(p) + g->cur, lim - g->cur, &used) : TOOLCALL_MORE;
    if (r == TOOLCALL_DONE) return group_parse_value(p, g->cur + used);
    if (r == TOOLCALL_BAD) return group_fail(p, g->cur + used);
    g->cur = lim > g->cur ? lim : g->cur;
    if (lim < n) return group_fail(p, lim); /* too long to hold back */
    return p->eof ? group_fail(p, n) : RUN_MORE;
}

/* Between values: separators, then a value, the closer, or the end of the group. */
static int step_sep(chat_parser *p)
{
    toolcall_group *g = &p->group;
    const char *d = pend(p);
    size_t n = avail(p), i = g->cur;
    while (i < n && i < TOOLCALL_HOLD_MAX && (toolcall_is_space(d[i]) || (g->semicolons && d[i] == ';'))) i++;
    g->cur = i;
    if (i >= TOOLCALL_HOLD_MAX) return group_fail(p, i);
    if (i == n) {
        if (!p->eof) return RUN_MORE;
        if (g->kind == GROUP_SEQUENCE && (g->n_values || !g->open_len)) return sequence_end(p, n);
        if (g->kind == GROUP_ALONE && g->n_values) return group_succeed(p, n);
        return group_fail(p, n);
    }
    if (g->closer && g->n_values) {
        enum match m = match_literal(d + i, n - i, g->closer);
        if (m == MATCH_FULL) return group_succeed(p, i + strlen(g->closer));
        if (m == MATCH_PARTIAL) return p->eof ? group_fail(p, n) : RUN_MORE;
    }
    if (d[i] == '{' || d[i] == '[') {
        if (g->kind == GROUP_SEQUENCE && g->n_values) { /* separators after a taken call drop */
            consume(p, i);
            i = 0;
        }
        g->cur = g->value_start = i;
        toolcall_jscan_init(&g->scan);
        g->step = STEP_VALUE;
        return RUN_PROGRESS;
    }
    bool ident = (d[i] >= 'a' && d[i] <= 'z') || (d[i] >= 'A' && d[i] <= 'Z') || d[i] == '_';
    if (ident && ((g->python_tag && g->n_values == 0) || g->tool_code)) {
        g->value_start = i;
        g->builtin_checked = i;
        g->step = STEP_BUILTIN;
        return RUN_PROGRESS;
    }
    if (g->kind == GROUP_SEQUENCE && (g->n_values || !g->open_len)) return sequence_end(p, i);
    return group_fail(p, i);
}

/* The builtin form can only end at a ')', so once its head up to the '(' has been checked it
 * is read again only when a ')' has arrived. */
static int step_builtin(chat_parser *p)
{
    toolcall_group *g = &p->group;
    const char *d = pend(p);
    size_t n = avail(p), start = g->value_start;
    size_t lim = n - start < TOOLCALL_BUILTIN_MAX ? n : start + TOOLCALL_BUILTIN_MAX;
    bool final = p->eof || lim < n;
    size_t seen = g->builtin_checked;
    bool head_done = memchr(d + start, '(', seen - start) != NULL;
    if (!final && head_done && !memchr(d + seen, ')', lim - seen)) {
        g->builtin_checked = lim;
        return RUN_MORE;
    }
    g->builtin_checked = lim;
    size_t end = 0;
    char *name = NULL;
    json_t *args = NULL;
    bool nomem = false;
    int r = toolcall_builtin_parse(d + start, lim - start, final, g->python_tag, &end, &name, &args, &nomem);
    if (nomem) return DK_ERR_NOMEM;
    if (r == TOOLCALL_MORE) return RUN_MORE;
    if (r == TOOLCALL_BAD) return group_fail(p, start);
    json_t *call = toolcall_call_new(name, args, NULL, calls_so_far(p));
    dk_free(name);
    json_t *calls = json_array();
    if (!call || !calls || json_array_append_new(calls, call)) {
        json_decref(calls);
        return DK_ERR_NOMEM;
    }
    return group_value_done(p, calls, start + end);
}

static bool is_name_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* Bytes of name characters at data[0..n), at most max + 1. */
static size_t name_run(const char *data, size_t n, size_t max)
{
    size_t i = 0;
    while (i < n && i <= max && is_name_byte(data[i])) i++;
    return i;
}

/* After [TOOL_CALLS]: a JSON array/object, or name [CALL_ID]id [ARGS] then the arguments. */
static int step_mistral(chat_parser *p)
{
    toolcall_group *g = &p->group;
    const char *d = pend(p);
    size_t n = avail(p), i = g->open_len;
    i += space_run(d + i, n - i, TOOLCALL_HOLD_MAX);
    if (i - g->open_len > TOOLCALL_HOLD_MAX) return group_fail(p, i);
    if (i == n) return p->eof ? group_fail(p, n) : RUN_MORE;
    if (d[i] == '[' || d[i] == '{') {
        g->cur = g->value_start = i;
        toolcall_jscan_init(&g->scan);
        g->step = STEP_VALUE;
        return RUN_PROGRESS;
    }
    size_t name = i, len = name_run(d + i, n - i, 256);
    if (len == 0 || len > 256) return group_fail(p, i);
    i += len;
    if (i == n) return p->eof ? group_fail(p, n) : RUN_MORE;
    size_t id = 0, id_len = 0;
    enum match m = match_literal(d + i, n - i, "[CALL_ID]");
    if (m == MATCH_FULL) {
        id = i + 9;
        id_len = name_run(d + id, n - id, 64);
        if (id_len > 64 || (id + id_len < n && id_len == 0)) return group_fail(p, id);
        i = id + id_len;
        if (i == n) return p->eof ? group_fail(p, n) : RUN_MORE;
    } else if (m == MATCH_PARTIAL) {
        return p->eof ? group_fail(p, n) : RUN_MORE;
    }
    m = match_literal(d + i, n - i, "[ARGS]");
    if (m == MATCH_NONE) return group_fail(p, i);
    if (m == MATCH_PARTIAL) return p->eof ? group_fail(p, n) : RUN_MORE;
    i += 6;
    i += space_run(d + i, n - i, 64);
    if (i == n) return p->eof ? group_fail(p, n) : RUN_MORE;
    if (d[i] != '{') return group_fail(p, i);
    g->name_at = name;
    g->name_len = len;
    g->id_at = id;
    g->id_len = id_len;
    g->mistral_args = true;
    g->cur = g->value_start = i;
    toolcall_jscan_init(&g->scan);
    g->step = STEP_VALUE;
    return RUN_PROGRESS;
}

/* The language tag after ```: one that may hold calls, then the values. */
static int step_fence_lang(chat_parser *p)
{
    toolcall_group *g = &p->group;
    const char *d = pend(p);
    size_t n = avail(p), i = g->open_len;
    i += name_run(d + i, n - i, 16);
    size_t len = i - g->open_len;
    if (len > 16) return group_fail(p, i);
    if (i == n) return p->eof ? group_fail(p, n) : RUN_MORE;
    static const char *const langs[] = {"", "json", "tool_code", "tool_call", "tool_calls"};
    for (size_t k = 0; k < sizeof langs / sizeof langs[0]; k++) {
        if (strlen(langs[k]) == len && strncasecmp(langs[k], d + g->open_len, len) == 0) {
            g->cur = i;
            g->step = STEP_SEP;
            g->tool_code = k == 2;
            return RUN_PROGRESS;
        }
    }
    return group_fail(p, i);
}

static int run_group(chat_parser *p)
{
    switch (p->group.step) {
    case STEP_FENCE_LANG: return step_fence_lang(p);
    case STEP_SEP: return step_sep(p);
    case STEP_VALUE: return step_value(p);
    case STEP_BUILTIN: return step_builtin(p);
    case STEP_MISTRAL: return step_mistral(p);
    }
    return group_fail(p, 0);
}

/* ---- reasoning ---- */

static int run_think_open(chat_parser *p)
{
    const char *d = pend(p);
    size_t n = avail(p);
    size_t w = space_run(d, n, TOOLCALL_HOLD_MAX);
    enum match m = MATCH_NONE;
    if (w <= TOOLCALL_HOLD_MAX) {
        if (w == n && !p->eof) return RUN_MORE;
        if (w < n) m = match_literal(d + w, n - w, THINK_OPEN);
        if (m == MATCH_PARTIAL && !p->eof) return RUN_MORE;
    }
    p->reasoning_lead = true;
    p->ws_dropped = 0;
    if (m == MATCH_FULL) {
        consume(p, w + strlen(THINK_OPEN));
        p->phase = PHASE_REASONING;
    } else {
        p->phase = p->params.in_reasoning ? PHASE_REASONING : PHASE_CONTENT;
        p->at_call_pos = true;
    }
    return RUN_PROGRESS;
}

/* Drops leading whitespace, at most TOOLCALL_HOLD_MAX bytes of a run. True when done. */
static bool drop_leading_space(chat_parser *p)
{
    const char *d = pend(p);
    size_t n = avail(p), k = 0;
    while (k < n && p->ws_dropped < TOOLCALL_HOLD_MAX && toolcall_is_space(d[k])) {
        k++;
        p->ws_dropped++;
    }
    consume(p, k);
    return avail(p) > 0 || p->ws_dropped >= TOOLCALL_HOLD_MAX;
}

static int run_reasoning(chat_parser *p)
{
    if (p->reasoning_lead) {
        if (!drop_leading_space(p)) return RUN_MORE;
        p->reasoning_lead = false;
    }
    const char *d = pend(p);
    size_t n = avail(p);
    const char *close = n ? memmem(d, n, THINK_CLOSE, strlen(THINK_CLOSE)) : NULL;
    if (close) {
        size_t at = (size_t)(close - d);
        size_t trailing = space_before(d, at, TOOLCALL_HOLD_MAX);
        int rc = emit_reasoning(p, at - trailing);
        if (rc) return rc;
        consume(p, trailing + strlen(THINK_CLOSE));
        p->phase = PHASE_AFTER_THINK;
        p->ws_dropped = 0;
        return RUN_PROGRESS;
    }
    if (p->eof) {
        int rc = emit_reasoning(p, n - space_before(d, n, TOOLCALL_HOLD_MAX));
        if (rc) return rc;
        consume(p, avail(p));
        return RUN_MORE;
    }
    size_t keep = partial_suffix(d, n, THINK_CLOSE);
    size_t e = n - keep;
    e -= space_before(d, e, TOOLCALL_HOLD_MAX);
    if (e == n) e = utf8_boundary(d, n);
    int rc = emit_reasoning(p, e);
    return rc ? rc : RUN_MORE;
}

static int run_after_think(chat_parser *p)
{
    if (!drop_leading_space(p)) return RUN_MORE;
    p->phase = PHASE_CONTENT;
    p->at_call_pos = true;
    return RUN_PROGRESS;
}

/* ---- content ---- */

/* At the start of content or after calls: whitespace, then maybe a call. */
static int run_call_pos(chat_parser *p)
{
    const char *d = pend(p);
    size_t n = avail(p);
    size_t w = space_run(d, n, TOOLCALL_HOLD_MAX);
    if (w > TOOLCALL_HOLD_MAX) {
        p->at_call_pos = p->post_call = false;
        return RUN_PROGRESS;
    }
    if (w == n) {
        if (!p->eof) return RUN_MORE;
        int rc = p->post_call ? emit(p, NULL, n) : emit_content(p, n);
        p->at_call_pos = p->post_call = false;
        return rc ? rc : RUN_MORE;
    }
    if (p->at_call_pos && format_has_bare(p->params.format) && (d[w] == '{' || d[w] == '[')) {
        p->at_call_pos = p->post_call = false;
        return group_begin_bare(p, w);
    }
    enum match m = match_literal(d + w, n - w, format_opener(p->params.format));
    if (m == MATCH_PARTIAL && !p->eof) return RUN_MORE;
    p->at_call_pos = p->post_call = false;
    if (m == MATCH_FULL) {
        consume(p, w);
        return group_begin_marked(p);
    }
    return RUN_PROGRESS;
}

static int run_content(chat_parser *p)
{
    if (!p->params.parse_tools) {
        size_t n = avail(p);
        int rc = emit_content(p, p->eof ? n : utf8_boundary(pend(p), n));
        return rc ? rc : RUN_MORE;
    }
    if (p->at_call_pos || p->post_call) return run_call_pos(p);
    const char *d = pend(p);
    size_t n = avail(p);
    const char *opener = format_opener(p->params.format);
    for (size_t i = 0; i < n; i++) {
        if (d[i] != opener[0]) continue;
        enum match m = match_literal(d + i, n - i, opener);
        if (m == MATCH_NONE || (m == MATCH_PARTIAL && p->eof)) continue;
        int rc = emit_content(p, i);
        if (rc) return rc;
        if (m == MATCH_PARTIAL) return RUN_MORE;
        return group_begin_marked(p);
    }
    int rc = emit_content(p, p->eof ? n : utf8_boundary(d, n));
    return rc ? rc : RUN_MORE;
}

/* Runs the state machine until it needs more bytes. */
static int parser_run(chat_parser *p)
{
    for (;;) {
        int r;
        switch (p->phase) {
        case PHASE_THINK_OPEN: r = run_think_open(p); break;
        case PHASE_REASONING: r = run_reasoning(p); break;
        case PHASE_AFTER_THINK: r = run_after_think(p); break;
        case PHASE_CONTENT: r = run_content(p); break;
        default: r = run_group(p); break;
        }
        if (r < 0) {
            p->failed = true;
            return r;
        }
        if (r == RUN_MORE) return DK_OK;
    }
}

/* ---- public ---- */

int chat_parser_new(chat_parser **out, const chat_parse_params *params, char *err)
{
    *out = NULL;
    if (!params || (unsigned)params->format > CHAT_FORMAT_GEMMA)
        return dk_fail(err, DK_ERR_ARG, "chat parser: unknown tool-call format");
    chat_parser *p = dk_calloc(1, sizeof *p);
    if (!p) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    p->params = *params;
    if (p->params.in_reasoning) p->params.reasoning = true;
    p->phase = p->params.reasoning ? PHASE_THINK_OPEN : PHASE_CONTENT;
    p->at_call_pos = true;
    p->calls = json_array();
    if (!p->calls) {
        chat_parser_free(p);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = p;
    return DK_OK;
}

void chat_parser_free(chat_parser *parser)
{
    if (!parser) return;
    group_reset(parser);
    json_decref(parser->calls);
    dk_buf_free(&parser->pending);
    dk_free(parser);
}

/* Bytes appended to pending per step: bounds what one large feed holds at once. */
#define FEED_PIECE ((size_t)64 << 10)

static int parser_step_in(chat_parser *p, chat_delta *delta)
{
    if (p->failed) return DK_ERR_NOMEM;
    p->delta = delta;
    p->n_new = 0;
    return DK_OK;
}

static void parser_step_out(chat_parser *p, chat_delta *delta)
{
    if (delta) delta->n_new_calls = p->n_new;
    p->delta = NULL;
}

int chat_parser_feed(chat_parser *parser, const char *text, size_t n_bytes, chat_delta *delta)
{
    if (parser->eof) return DK_ERR_ARG; /* fed after chat_parser_finish */
    int rc = parser_step_in(parser, delta);
    while (rc == DK_OK && n_bytes) {
        size_t k = n_bytes < FEED_PIECE ? n_bytes : FEED_PIECE;
        compact(parser);
        if (dk_buf_append(&parser->pending, text, k)) {
            parser->failed = true;
            rc = DK_ERR_NOMEM;
            break;
        }
        text += k;
        n_bytes -= k;
        rc = parser_run(parser);
    }
    parser_step_out(parser, delta);
    return rc;
}

int chat_parser_finish(chat_parser *parser, chat_delta *delta)
{
    if (parser->eof) return DK_OK;
    int rc = parser_step_in(parser, delta);
    parser->eof = true;
    if (rc == DK_OK) rc = parser_run(parser);
    if (rc == DK_OK && avail(parser)) { /* every phase decides all at the end; never lose text */
        group_reset(parser);
        rc = emit_content(parser, avail(parser));
        parser->failed = rc != DK_OK;
    }
    parser_step_out(parser, delta);
    return rc;
}

const json_t *chat_parser_tool_calls(const chat_parser *parser) { return parser->calls; }
