/*
 * modelfile.c: Modelfiles, as Ollama writes them, in and out. The text form:
 *
 *   # a comment (a line whose first non-blank character is #)
 *   FROM llama3.2 | ./model.gguf          required, once
 *   PARAMETER NAME VALUE                  Ollama's option names, typed; stop repeats
 *   TEMPLATE """..."""                    a chat template (kept as text)
 *   SYSTEM "..."
 *   MESSAGE system|user|assistant VALUE   repeatable, in order
 *   LICENSE """..."""                     repeatable (joined by a blank line)
 *
 * Instructions are case-insensitive. A VALUE is the rest of the line (trimmed), or "quoted"
 * (\" and \\ are escapes, newlines allowed), or """raw, over several lines""". Also the JSON
 * fields of an /api/create request, and the text `show --modelfile` prints (written so that
 * parsing it gives the same model back). Not for: building the model (create.c).
 */
#include "store/store_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ parameters */

enum param_kind { PARAM_INT, PARAM_FLOAT, PARAM_BOOL, PARAM_STOP };

typedef struct param_def {
    const char *name;
    enum param_kind kind;
} param_def;

/* Ollama's api.Options (runner and predict options). */
static const param_def param_defs[] = {
    {"num_ctx", PARAM_INT},          {"num_batch", PARAM_INT},         {"num_gpu", PARAM_INT},
    {"main_gpu", PARAM_INT},         {"num_thread", PARAM_INT},        {"num_keep", PARAM_INT},
    {"seed", PARAM_INT},             {"num_predict", PARAM_INT},       {"top_k", PARAM_INT},
    {"repeat_last_n", PARAM_INT},    {"mirostat", PARAM_INT},          {"top_p", PARAM_FLOAT},
    {"min_p", PARAM_FLOAT},          {"typical_p", PARAM_FLOAT},       {"tfs_z", PARAM_FLOAT},
    {"temperature", PARAM_FLOAT},    {"repeat_penalty", PARAM_FLOAT},  {"presence_penalty", PARAM_FLOAT},
    {"frequency_penalty", PARAM_FLOAT}, {"mirostat_tau", PARAM_FLOAT}, {"mirostat_eta", PARAM_FLOAT},
    {"penalize_newline", PARAM_BOOL}, {"use_mmap", PARAM_BOOL},        {"use_mlock", PARAM_BOOL},
    {"numa", PARAM_BOOL},            {"low_vram", PARAM_BOOL},         {"f16_kv", PARAM_BOOL},
    {"vocab_only", PARAM_BOOL},      {"logits_all", PARAM_BOOL},       {"stop", PARAM_STOP},
};

static const param_def *param_find(const char *name)
{
    for (size_t i = 0; i < sizeof param_defs / sizeof param_defs[0]; i++)
        if (strcmp(param_defs[i].name, name) == 0) return &param_defs[i];
    return NULL;
}

/* Go's strconv.ParseBool, which Ollama uses. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (int i = 0; i < 6; i++) {
        if (strcmp(s, yes[i]) == 0) return (*out = true), 0;
        if (strcmp(s, no[i]) == 0) return (*out = false), 0;
    }
    return -1;
}

static int stop_append(json_t *params, json_t *value)
{
    if (!value) return -1;
    json_t *arr = json_object_get(params, "stop");
    if (!json_is_array(arr)) {
        arr = json_array();
        if (!arr || json_object_set_new(params, "stop", arr) != 0) {
            json_decref(value);
            return -1;
        }
    }
    return json_array_append_new(arr, value);
}

int store_param_set_text(json_t *params, const char *name, const char *value, char *reason)
{
    const param_def *def = param_find(name);
    if (!def) return dk_fail(reason, DK_ERR_FORMAT, "unknown parameter '%s'", name);
    json_t *v = NULL;
    char *end = NULL;
    errno = 0;
    switch (def->kind) {
    case PARAM_INT: {
        long long x = strtoll(value, &end, 10);
        if (errno || end == value || *end) return dk_fail(reason, DK_ERR_FORMAT, "%s: '%s' is not an integer", name, value);
        v = json_integer(x);
        break;
    }
    case PARAM_FLOAT: {
        double x = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(x))
            return dk_fail(reason, DK_ERR_FORMAT, "%s: '%s' is not a number", name, value);
        v = json_real(x);
        break;
    }
    case PARAM_BOOL: {
        bool b = false;
        if (parse_bool(value, &b) != 0) return dk_fail(reason, DK_ERR_FORMAT, "%s: '%s' is not true or false", name, value);
        v = json_boolean(b);
        break;
    }
    case PARAM_STOP:
        if (stop_append(params, json_string(value)) != 0) return dk_fail(reason, DK_ERR_NOMEM, "out of memory");
        return DK_OK;
    }
    if (!v || json_object_set_new(params, name, v) != 0) return dk_fail(reason, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

int store_param_set_json(json_t *params, const char *name, const json_t *value, char *reason)
{
    const param_def *def = param_find(name);
    if (!def) return dk_fail(reason, DK_ERR_FORMAT, "unknown parameter '%s'", name);
    if (json_is_string(value)) return store_param_set_text(params, name, json_string_value(value), reason);
    json_t *v = NULL;
    switch (def->kind) {
    case PARAM_INT:
        if (json_is_integer(value)) v = json_integer(json_integer_value(value));
        else if (json_is_real(value) && json_real_value(value) == floor(json_real_value(value)) &&
                 fabs(json_real_value(value)) < 9e18)
            v = json_integer((json_int_t)json_real_value(value));
        else return dk_fail(reason, DK_ERR_FORMAT, "%s must be an integer", name);
        break;
    case PARAM_FLOAT:
        if (!json_is_number(value)) return dk_fail(reason, DK_ERR_FORMAT, "%s must be a number", name);
        v = json_real(json_number_value(value));
        break;
    case PARAM_BOOL:
        if (!json_is_boolean(value)) return dk_fail(reason, DK_ERR_FORMAT, "%s must be true or false", name);
        v = json_boolean(json_is_true(value));
        break;
    case PARAM_STOP:
        if (!json_is_array(value)) return dk_fail(reason, DK_ERR_FORMAT, "stop must be a string or an array of strings");
        for (size_t i = 0; i < json_array_size(value); i++) {
            const char *s = json_string_value(json_array_get(value, i));
            if (!s) return dk_fail(reason, DK_ERR_FORMAT, "stop must be a string or an array of strings");
            if (stop_append(params, json_string(s)) != 0) return dk_fail(reason, DK_ERR_NOMEM, "out of memory");
        }
        return DK_OK;
    }
    if (!v || json_object_set_new(params, name, v) != 0) return dk_fail(reason, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

bool store_message_role_valid(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0;
}

/* ------------------------------------------------------------------ parsing */

typedef struct mf_parser {
    const char *p;
    int line;          /* of p */
    int line_start;    /* of the instruction being parsed */
    char instruction[16]; /* as written, for messages */
    char *err;
} mf_parser;

static int mf_fail(mf_parser *ps, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int mf_fail(mf_parser *ps, int code, const char *fmt, ...)
{
    char msg[DK_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dk_fail(ps->err, code, "Modelfile line %d: %s", ps->line_start, msg);
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static void skip_blanks(mf_parser *ps)
{
    while (is_blank(*ps->p)) ps->p++;
}

/* After a quoted value: only blanks until the end of the line. */
static int expect_line_end(mf_parser *ps)
{
    skip_blanks(ps);
    if (*ps->p && *ps->p != '\n') return mf_fail(ps, DK_ERR_FORMAT, "unexpected text after the closing quote");
    return DK_OK;
}

/* A word: up to the next blank or the end of the line. */
static int read_word(mf_parser *ps, const char *what, char *out, size_t cap)
{
    skip_blanks(ps);
    size_t n = 0;
    while (*ps->p && !is_blank(*ps->p) && *ps->p != '\n') {
        if (n + 1 >= cap) return mf_fail(ps, DK_ERR_FORMAT, "%s is too long", what);
        out[n++] = (char)tolower((unsigned char)*ps->p++);
    }
    out[n] = 0;
    if (n == 0) return mf_fail(ps, DK_ERR_FORMAT, "missing %s", what);
    return DK_OK;
}

/* A value in one of the three forms; *out is dk_malloc'd. */
static int read_value(mf_parser *ps, const char *what, char **out)
{
    *out = NULL;
    skip_blanks(ps);
    dk_buf b = {0};
    const char *p = ps->p;
    if (strncmp(p, "\"\"\"", 3) == 0) {
        const char *end = strstr(p + 3, "\"\"\"");
        if (!end) return mf_fail(ps, DK_ERR_FORMAT, "unterminated \"\"\" in %s", what);
        for (const char *q = p + 3; q < end; q++) ps->line += *q == '\n';
        dk_buf_append(&b, p + 3, (size_t)(end - p - 3));
        dk_buf_append(&b, "", 0);
        ps->p = end + 3;
    } else if (*p == '"') {
        p++;
        for (;; p++) {
            if (*p == 0) return dk_buf_free(&b), mf_fail(ps, DK_ERR_FORMAT, "unterminated quote in %s", what);
            if (*p == '"') break;
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
            ps->line += *p == '\n';
            dk_buf_putc(&b, *p);
        }
        dk_buf_append(&b, "", 0);
        ps->p = p + 1;
    } else {
        const char *start = p;
        while (*p && *p != '\n') p++;
        const char *end = p;
        while (end > start && is_blank(end[-1])) end--;
        if (end == start) return mf_fail(ps, DK_ERR_FORMAT, "missing %s", what);
        dk_buf_append(&b, start, (size_t)(end - start));
        ps->p = p;
        if (b.failed) return mf_fail(ps, DK_ERR_NOMEM, "out of memory");
        *out = dk_buf_detach(&b);
        return DK_OK;
    }
    if (b.failed) return mf_fail(ps, DK_ERR_NOMEM, "out of memory");
    int rc = expect_line_end(ps);
    if (rc != DK_OK) {
        dk_buf_free(&b);
        return rc;
    }
    *out = dk_buf_detach(&b);
    return DK_OK;
}

static bool utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        size_t n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (n == 9 || (n == 1 && c < 0xc2)) return false;
        unsigned cp = n == 0 ? c : c & (0x3fu >> n);
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

static int replace_text(char **dst, char *value)
{
    dk_free(*dst);
    *dst = value;
    return DK_OK;
}

static int parse_instruction(mf_parser *ps, const char *word, store_modelfile *mf)
{
    char *value = NULL;
    int rc;
    if (strcmp(word, "from") == 0) {
        if (mf->from) return mf_fail(ps, DK_ERR_FORMAT, "a second FROM");
        rc = read_value(ps, "the FROM model", &value);
        if (rc == DK_OK && !*value) {
            dk_free(value);
            return mf_fail(ps, DK_ERR_FORMAT, "FROM needs a model name or a path");
        }
        if (rc == DK_OK) mf->from = value;
        return rc;
    }
    if (strcmp(word, "template") == 0 || strcmp(word, "system") == 0) {
        rc = read_value(ps, word[0] == 't' ? "the TEMPLATE" : "the SYSTEM message", &value);
        if (rc != DK_OK) return rc;
        return replace_text(word[0] == 't' ? &mf->template_text : &mf->system, value);
    }
    if (strcmp(word, "license") == 0) {
        rc = read_value(ps, "the LICENSE", &value);
        if (rc != DK_OK) return rc;
        if (!mf->license) return replace_text(&mf->license, value);
        dk_buf b = {0};
        dk_buf_printf(&b, "%s\n\n%s", mf->license, value);
        dk_free(value);
        if (b.failed) return mf_fail(ps, DK_ERR_NOMEM, "out of memory");
        return replace_text(&mf->license, dk_buf_detach(&b));
    }
    if (strcmp(word, "parameter") == 0) {
        char name[64], reason[DK_ERRLEN];
        rc = read_word(ps, "parameter name", name, sizeof name);
        if (rc == DK_OK) rc = read_value(ps, "the parameter value", &value);
        if (rc != DK_OK) return rc;
        if (!mf->params && !(mf->params = json_object())) rc = mf_fail(ps, DK_ERR_NOMEM, "out of memory");
        else if ((rc = store_param_set_text(mf->params, name, value, reason)) != DK_OK) rc = mf_fail(ps, rc, "%s", reason);
        dk_free(value);
        return rc;
    }
    if (strcmp(word, "message") == 0) {
        char role[32];
        rc = read_word(ps, "message role", role, sizeof role);
        if (rc != DK_OK) return rc;
        if (!store_message_role_valid(role))
            return mf_fail(ps, DK_ERR_FORMAT, "message role '%s' is not system, user or assistant", role);
        rc = read_value(ps, "the message", &value);
        if (rc != DK_OK) return rc;
        if (!mf->messages) mf->messages = json_array();
        json_t *msg = json_pack("{s:s, s:s}", "role", role, "content", value);
        dk_free(value);
        if (!mf->messages || !msg || json_array_append_new(mf->messages, msg) != 0)
            return mf_fail(ps, DK_ERR_NOMEM, "out of memory");
        return DK_OK;
    }
    if (strcmp(word, "adapter") == 0) return mf_fail(ps, DK_ERR_UNSUPPORTED, "ADAPTER is not supported");
    return mf_fail(ps, DK_ERR_FORMAT, "unknown instruction '%s'", ps->instruction);
}

int store_modelfile_parse(const char *text, store_modelfile *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!utf8_valid((const unsigned char *)text)) return dk_fail(err, DK_ERR_FORMAT, "Modelfile is not valid UTF-8");
    mf_parser ps = {.p = text, .line = 1, .err = err};
    int rc = DK_OK;
    while (rc == DK_OK) {
        while (is_blank(*ps.p) || *ps.p == '\n') ps.line += *ps.p++ == '\n';
        if (!*ps.p) break;
        ps.line_start = ps.line;
        if (*ps.p == '#') {
            while (*ps.p && *ps.p != '\n') ps.p++;
            continue;
        }
        char word[16];
        size_t n = 0;
        while (isalpha((unsigned char)*ps.p) && n + 1 < sizeof word) word[n++] = (char)tolower((unsigned char)*ps.p++);
        word[n] = 0;
        memcpy(ps.instruction, ps.p - n, n);
        ps.instruction[n] = 0;
        if (n == 0 || (*ps.p && !is_blank(*ps.p) && *ps.p != '\n')) {
            const char *start = ps.p - n;
            size_t k = 0;
            while (start[k] && !is_blank(start[k]) && start[k] != '\n' && k < 32) k++;
            rc = mf_fail(&ps, DK_ERR_FORMAT, "unknown instruction '%.*s'", (int)k, start);
            break;
        }
        rc = parse_instruction(&ps, word, out);
    }
    if (rc == DK_OK && !out->from) rc = dk_fail(err, DK_ERR_FORMAT, "Modelfile has no FROM instruction");
    if (rc != DK_OK) store_modelfile_free(out);
    return rc;
}

void store_modelfile_free(store_modelfile *mf)
{
    if (!mf) return;
    dk_free(mf->from);
    dk_free(mf->template_text);
    dk_free(mf->system);
    dk_free(mf->license);
    json_decref(mf->params);
    json_decref(mf->messages);
    memset(mf, 0, sizeof(*mf));
}

/* ------------------------------------------------------------------ from JSON */

static int json_text_field(const json_t *req, const char *key, char **dst, char *err)
{
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_string(v)) return dk_fail(err, DK_ERR_ARG, "'%s' must be a string", key);
    char *s = dk_strdup(json_string_value(v));
    if (!s) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    dk_free(*dst);
    *dst = s;
    return DK_OK;
}

static int json_license(const json_t *req, store_modelfile *out, char *err)
{
    const json_t *v = json_object_get(req, "license");
    if (!v || json_is_null(v) || json_is_string(v)) return json_text_field(req, "license", &out->license, err);
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "'license' must be a string or an array of strings");
    dk_buf b = {0};
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s) {
            dk_buf_free(&b);
            return dk_fail(err, DK_ERR_ARG, "'license' must be a string or an array of strings");
        }
        if (i) dk_buf_puts(&b, "\n\n");
        dk_buf_puts(&b, s);
    }
    if (json_array_size(v) == 0) return DK_OK;
    if (b.failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    dk_free(out->license);
    out->license = dk_buf_detach(&b);
    return DK_OK;
}

static int json_params(const json_t *req, store_modelfile *out, char *err)
{
    const json_t *v = json_object_get(req, "parameters");
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_object(v)) return dk_fail(err, DK_ERR_ARG, "'parameters' must be an object");
    if (!out->params && !(out->params = json_object())) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    /* the request's stop strings replace the Modelfile's */
    if (json_object_get(v, "stop")) json_object_del(out->params, "stop");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)v, key, value) {
        char reason[DK_ERRLEN];
        int rc = store_param_set_json(out->params, key, value, reason);
        if (rc != DK_OK) return dk_fail(err, rc == DK_ERR_NOMEM ? rc : DK_ERR_ARG, "parameters: %s", reason);
    }
    return DK_OK;
}

static int json_messages(const json_t *req, store_modelfile *out, char *err)
{
    const json_t *v = json_object_get(req, "messages");
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "'messages' must be an array");
    json_t *arr = json_array();
    if (!arr) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *m = json_array_get(v, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        if (!role || !content || !store_message_role_valid(role)) {
            json_decref(arr);
            return dk_fail(err, DK_ERR_ARG, "messages[%zu] needs a role (system, user, assistant) and a content", i);
        }
        if (json_array_append_new(arr, json_pack("{s:s, s:s}", "role", role, "content", content)) != 0) {
            json_decref(arr);
            return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        }
    }
    json_decref(out->messages);
    out->messages = arr;
    return DK_OK;
}

/* files: {"model.gguf": "sha256:..."}: the first GGUF becomes FROM when there is none. */
static int json_files(store *st, const json_t *req, store_modelfile *out, char *err)
{
    const json_t *v = json_object_get(req, "files");
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_object(v)) return dk_fail(err, DK_ERR_ARG, "'files' must be an object of file names to digests");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)v, key, value) {
        size_t n = strlen(key);
        if (n < 5 || strcasecmp(key + n - 5, ".gguf") != 0)
            return dk_fail(err, DK_ERR_UNSUPPORTED, "file '%s': only GGUF files are supported", key);
        if (!json_is_string(value)) return dk_fail(err, DK_ERR_ARG, "file '%s': the digest must be a string", key);
        char *path = NULL, reason[DK_ERRLEN];
        int rc = store_blob_path(st, json_string_value(value), &path, reason);
        if (rc != DK_OK) return dk_fail(err, rc, "file '%s': %s", key, reason);
        if (out->from) {
            dk_free(path);
            continue;
        }
        out->from = path;
    }
    return DK_OK;
}

int store_modelfile_from_json(store *st, const json_t *request, store_modelfile *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(request)) return dk_fail(err, DK_ERR_ARG, "the request must be a JSON object");
    int rc = DK_OK;
    const json_t *legacy = json_object_get(request, "modelfile");
    if (json_is_string(legacy) && *json_string_value(legacy)) {
        rc = store_modelfile_parse(json_string_value(legacy), out, err);
        if (rc != DK_OK) return rc;
    }
    if (json_object_get(request, "adapters"))
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "adapters are not supported");
    if (rc == DK_OK) {
        const json_t *from = json_object_get(request, "from");
        if (from && !json_is_null(from) && !json_is_string(from)) rc = dk_fail(err, DK_ERR_ARG, "'from' must be a string");
        else if (json_is_string(from) && *json_string_value(from)) rc = json_text_field(request, "from", &out->from, err);
    }
    if (rc == DK_OK) rc = json_files(st, request, out, err);
    if (rc == DK_OK) rc = json_text_field(request, "template", &out->template_text, err);
    if (rc == DK_OK) rc = json_text_field(request, "system", &out->system, err);
    if (rc == DK_OK) rc = json_license(request, out, err);
    if (rc == DK_OK) rc = json_params(request, out, err);
    if (rc == DK_OK) rc = json_messages(request, out, err);
    if (rc == DK_OK && !out->from) rc = dk_fail(err, DK_ERR_ARG, "neither 'from' nor a GGUF file in 'files'");
    if (rc != DK_OK) store_modelfile_free(out);
    return rc;
}

/* ------------------------------------------------------------------ text */

static bool bare_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || v[0] == '"' || is_blank(v[0]) || is_blank(v[n - 1])) return false;
    return !strchr(v, '\n') && !strchr(v, '\r');
}

void store_modelfile_quote(dk_buf *b, const char *v)
{
    size_t n = strlen(v);
    if (bare_ok(v)) {
        dk_buf_puts(b, v);
    } else if (n > 0 && !strstr(v, "\"\"\"") && v[n - 1] != '"') {
        dk_buf_printf(b, "\"\"\"%s\"\"\"", v);
    } else {
        dk_buf_putc(b, '"');
        for (const char *p = v; *p; p++) {
            if (*p == '"' || *p == '\\') dk_buf_putc(b, '\\');
            dk_buf_putc(b, *p);
        }
        dk_buf_putc(b, '"');
    }
}

/* The shortest decimal form that reads back as the same double. */
static void put_real(dk_buf *b, double x)
{
    char s[40];
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(s, sizeof s, "%.*g", digits, x);
        if (strtod(s, NULL) == x) break;
    }
    dk_buf_puts(b, s);
}

static void put_param(dk_buf *b, const char *name, const json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) put_param(b, name, json_array_get(v, i));
        return;
    }
    dk_buf_printf(b, "PARAMETER %s ", name);
    if (json_is_integer(v)) dk_buf_printf(b, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) put_real(b, json_real_value(v));
    else if (json_is_boolean(v)) dk_buf_puts(b, json_is_true(v) ? "true" : "false");
    else if (json_is_string(v)) store_modelfile_quote(b, json_string_value(v));
    else dk_buf_puts(b, "null");
    dk_buf_putc(b, '\n');
}

char *store_modelfile_text(const store_model *m)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "# Modelfile generated by \"duckling show\"\n");
    if (!m->is_file) {
        dk_buf_puts(&b, "# To build a new Modelfile based on this, replace FROM with:\n# FROM ");
        dk_buf_puts(&b, m->name);
        dk_buf_puts(&b, "\n");
    }
    dk_buf_puts(&b, "\nFROM ");
    store_modelfile_quote(&b, m->gguf_path ? m->gguf_path : m->name);
    dk_buf_putc(&b, '\n');
    if (m->template_text) {
        dk_buf_puts(&b, "TEMPLATE ");
        store_modelfile_quote(&b, m->template_text);
        dk_buf_putc(&b, '\n');
    }
    if (m->system) {
        dk_buf_puts(&b, "SYSTEM ");
        store_modelfile_quote(&b, m->system);
        dk_buf_putc(&b, '\n');
    }
    const char *key;
    const json_t *value;
    if (json_is_object(m->params)) json_object_foreach((json_t *)m->params, key, value) put_param(&b, key, value);
    for (size_t i = 0; i < json_array_size(m->messages); i++) {
        const json_t *msg = json_array_get(m->messages, i);
        const char *role = json_string_value(json_object_get(msg, "role"));
        const char *content = json_string_value(json_object_get(msg, "content"));
        if (!role || !content) continue;
        dk_buf_printf(&b, "MESSAGE %s ", role);
        store_modelfile_quote(&b, content);
        dk_buf_putc(&b, '\n');
    }
    if (m->license) {
        dk_buf_puts(&b, "LICENSE ");
        store_modelfile_quote(&b, m->license);
        dk_buf_putc(&b, '\n');
    }
    return dk_buf_detach(&b);
}
