/*
 * request.c: request bodies to typed values, for the generation and embedding handlers of
 * both APIs: Ollama "options" and keep_alive, format / response_format, think, tools and
 * tool_choice, and the messages of both APIs normalised into the one shape engine_chat and
 * the chat templates take ({role, content string, tool_calls with object arguments,
 * tool_call_id, name, reasoning_content}). Every function here is pure (no server, no model)
 * and checks types strictly: a wrong type is DK_ERR_ARG with a message naming the field, so
 * that the handler can answer 400 with it. fuzz/fuzz_request.c feeds them arbitrary JSON.
 *
 * The second half is what both APIs do alike once a request is parsed (srv_gen_job): acquire
 * the model, fit a conversation into the context, run engine_chat or engine_generate with
 * streaming, logprob and cancel callbacks, and embed with truncation. Each API file only
 * turns those results into its own JSON.
 *
 * Not for: HTTP (http.c), the field names of each API's replies (api_ollama.c, api_openai.c).
 */
#include "server/srv_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- options ---- */

void srv_gen_options_default(srv_gen_options *o)
{
    memset(o, 0, sizeof(*o));
    sample_params_default(&o->sampling);
    o->num_predict = -1;
    /* Ollama's default seed is random; a request that wants repeatable sampling sets one */
    static atomic_ulong n_calls;
    uint64_t mix = dk_now_ns() ^ ((uint64_t)atomic_fetch_add(&n_calls, 1) * 0x9e3779b97f4a7c15ull);
    o->sampling.seed = mix ? mix : 1;
}

/* A number that fits a float, or DK_ERR_ARG naming key. */
static int option_float(const json_t *v, const char *key, float *out, char *err)
{
    if (!json_is_number(v)) return dk_fail(err, DK_ERR_ARG, "options.%s must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > 1e30) return dk_fail(err, DK_ERR_ARG, "options.%s is out of range", key);
    *out = (float)d;
    return DK_OK;
}

/* An integral number (3 or 3.0) within [lo, hi]. */
static int option_int(const json_t *v, const char *key, long long lo, long long hi, long long *out, char *err)
{
    if (!json_is_number(v)) return dk_fail(err, DK_ERR_ARG, "options.%s must be an integer", key);
    double d = json_number_value(v);
    if (json_is_integer(v)) {
        long long i = json_integer_value(v);
        if (i < lo || i > hi) return dk_fail(err, DK_ERR_ARG, "options.%s is out of range", key);
        *out = i;
        return DK_OK;
    }
    if (!isfinite(d) || d != floor(d)) return dk_fail(err, DK_ERR_ARG, "options.%s must be an integer", key);
    if (d < (double)lo || d > (double)hi) return dk_fail(err, DK_ERR_ARG, "options.%s is out of range", key);
    *out = (long long)d;
    return DK_OK;
}

/* stop: a string or an array of strings; replaces what an earlier layer set. */
static int option_stops(const json_t *v, srv_gen_options *o, char *err)
{
    if (json_is_null(v)) {
        o->n_stops = 0;
        return DK_OK;
    }
    if (json_is_string(v)) {
        o->n_stops = 0;
        if (json_string_length(v) > 0) o->stops[o->n_stops++] = json_string_value(v);
        return DK_OK;
    }
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "options.stop must be an array of strings");
    if (json_array_size(v) > SRV_MAX_STOPS) return dk_fail(err, DK_ERR_ARG, "options.stop: at most %d stop strings", SRV_MAX_STOPS);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s)
        if (!json_is_string(s)) return dk_fail(err, DK_ERR_ARG, "options.stop must be an array of strings");
    o->n_stops = 0;
    json_array_foreach(v, i, s)
        if (json_string_length(s) > 0) o->stops[o->n_stops++] = json_string_value(s);
    return DK_OK;
}

typedef enum { OPT_FLOAT, OPT_INT } option_kind;
typedef struct option_field {
    const char *key;
    option_kind kind;
    size_t offset; /* into srv_gen_options */
    long long lo, hi;
} option_field;

#define OPT_F(key, member) {key, OPT_FLOAT, offsetof(srv_gen_options, member), 0, 0}
static const option_field option_fields[] = {
    OPT_F("temperature", sampling.temperature),
    OPT_F("top_p", sampling.top_p),
    OPT_F("min_p", sampling.min_p),
    OPT_F("repeat_penalty", sampling.repeat_penalty),
    OPT_F("presence_penalty", sampling.presence_penalty),
    OPT_F("frequency_penalty", sampling.frequency_penalty),
    {"top_k", OPT_INT, offsetof(srv_gen_options, sampling.top_k), -1, 1 << 30},
    {"repeat_last_n", OPT_INT, offsetof(srv_gen_options, sampling.repeat_last_n), -1, 1 << 30},
    {"num_thread", OPT_INT, offsetof(srv_gen_options, num_thread), 0, 4096},
};

int srv_parse_options(const json_t *options, srv_gen_options *o, char *err)
{
    if (!options || json_is_null(options)) return DK_OK;
    if (!json_is_object(options)) return dk_fail(err, DK_ERR_ARG, "options must be an object");
    for (size_t k = 0; k < sizeof option_fields / sizeof option_fields[0]; k++) {
        const option_field *f = &option_fields[k];
        const json_t *v = json_object_get(options, f->key);
        if (!v || json_is_null(v)) continue;
        char *at = (char *)o + f->offset;
        long long i;
        int rc = f->kind == OPT_FLOAT ? option_float(v, f->key, (float *)at, err)
                                      : option_int(v, f->key, f->lo, f->hi, &i, err);
        if (rc != DK_OK) return rc;
        if (f->kind == OPT_INT) *(int *)at = (int)i;
    }
    const json_t *v;
    long long i;
    if ((v = json_object_get(options, "typical_p")) && !json_is_null(v)) {
        float ignored; /* accepted for compatibility; the sampler has no typical-p filter */
        if (option_float(v, "typical_p", &ignored, err) != DK_OK) return DK_ERR_ARG;
    }
    if ((v = json_object_get(options, "seed")) && !json_is_null(v)) {
        if (option_int(v, "seed", INT64_MIN, INT64_MAX, &i, err) != DK_OK) return DK_ERR_ARG;
        if (i >= 0) o->sampling.seed = (uint64_t)i; /* negative: random, as Ollama's -1 */
    }
    if ((v = json_object_get(options, "num_predict")) && !json_is_null(v)) {
        if (option_int(v, "num_predict", INT32_MIN, INT32_MAX, &i, err) != DK_OK) return DK_ERR_ARG;
        o->num_predict = i < 0 ? -1 : (long)i; /* -1 infinite, -2 fill the context: both until done */
    }
    if ((v = json_object_get(options, "num_ctx")) && !json_is_null(v)) {
        if (option_int(v, "num_ctx", 0, 1 << 24, &i, err) != DK_OK) return DK_ERR_ARG;
        o->num_ctx = (size_t)i;
    }
    if ((v = json_object_get(options, "stop")) && option_stops(v, o, err) != DK_OK) return DK_ERR_ARG;
    return DK_OK;
}

int srv_options_layered(const json_t *model_params, const json_t *options, srv_gen_options *o, char *err)
{
    srv_gen_options_default(o);
    char why[DK_ERRLEN];
    if (model_params && srv_parse_options(model_params, o, why) != DK_OK)
        return dk_fail(err, DK_ERR_ARG, "the model's parameters: %s", why);
    return srv_parse_options(options, o, err);
}

/* ---- keep_alive ---- */

/* Go's time.ParseDuration units, in nanoseconds. */
static double duration_unit_ns(const char *s, size_t *n_unit)
{
    static const struct { const char *name; double ns; } units[] = {
        {"ns", 1}, {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9},
    };
    double best = 0;
    *n_unit = 0;
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        size_t n = strlen(units[k].name);
        if (n > *n_unit && strncmp(s, units[k].name, n) == 0) {
            best = units[k].ns;
            *n_unit = n;
        }
    }
    return best;
}

/* "5m", "1h30m", "1.5h", "300ms", "-1m"; a bare number is seconds ("-1", "0", "300"). */
static int duration_parse(const char *text, int64_t *ns, char *err)
{
    const char *p = text;
    bool negative = false;
    if (*p == '-' || *p == '+') negative = *p++ == '-';
    if (!*p) return dk_fail(err, DK_ERR_ARG, "keep_alive: invalid duration \"%s\"", text);
    double total = 0;
    bool bare = true;
    while (*p) {
        if (!((*p >= '0' && *p <= '9') || *p == '.')) return dk_fail(err, DK_ERR_ARG, "keep_alive: invalid duration \"%s\"", text);
        char *end;
        errno = 0;
        double value = strtod(p, &end);
        if (end == p || errno == ERANGE || !isfinite(value)) return dk_fail(err, DK_ERR_ARG, "keep_alive: invalid duration \"%s\"", text);
        for (const char *q = p; q < end; q++) /* strtod also reads exponents, hex, inf: refuse them */
            if (!((*q >= '0' && *q <= '9') || *q == '.')) return dk_fail(err, DK_ERR_ARG, "keep_alive: invalid duration \"%s\"", text);
        p = end;
        size_t n_unit;
        double unit = duration_unit_ns(p, &n_unit);
        if (n_unit == 0) {
            if (*p || !bare) return dk_fail(err, DK_ERR_ARG, "keep_alive: invalid duration \"%s\" (unknown unit)", text);
            unit = 1e9; /* a bare number: seconds */
        }
        bare = false;
        p += n_unit;
        total += value * unit;
        if (total > 9.2e18) return dk_fail(err, DK_ERR_ARG, "keep_alive: duration \"%s\" is out of range", text);
    }
    *ns = negative ? (total > 0 ? -1 : 0) : (int64_t)total;
    return DK_OK;
}

int srv_parse_keep_alive(const json_t *v, int64_t *ns, char *err)
{
    *ns = SRV_KEEP_ALIVE_DEFAULT;
    if (!v || json_is_null(v)) return DK_OK;
    if (json_is_number(v)) {
        double seconds = json_number_value(v);
        if (!isfinite(seconds)) return dk_fail(err, DK_ERR_ARG, "keep_alive is out of range");
        if (seconds < 0) *ns = -1;
        else if (seconds > 9.2e9) return dk_fail(err, DK_ERR_ARG, "keep_alive is out of range");
        else *ns = (int64_t)(seconds * 1e9);
        return DK_OK;
    }
    if (!json_is_string(v)) return dk_fail(err, DK_ERR_ARG, "keep_alive must be a duration string or a number of seconds");
    return duration_parse(json_string_value(v), ns, err);
}

/* ---- small typed fields ---- */

int srv_field_string(const json_t *obj, const char *key, const char **out, char *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_string(v)) return dk_fail(err, DK_ERR_ARG, "%s must be a string", key);
    *out = json_string_value(v);
    return DK_OK;
}

int srv_field_bool(const json_t *obj, const char *key, bool fallback, bool *out, char *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = fallback;
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_boolean(v)) return dk_fail(err, DK_ERR_ARG, "%s must be a boolean", key);
    *out = json_is_true(v);
    return DK_OK;
}

int srv_field_int(const json_t *obj, const char *key, long long lo, long long hi, long long fallback, long long *out,
                  char *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = fallback;
    if (!v || json_is_null(v)) return DK_OK;
    double d = json_number_value(v);
    if (!json_is_number(v) || (!json_is_integer(v) && (!isfinite(d) || d != floor(d))))
        return dk_fail(err, DK_ERR_ARG, "%s must be an integer", key);
    if (json_is_integer(v) ? (json_integer_value(v) < lo || json_integer_value(v) > hi) : (d < (double)lo || d > (double)hi))
        return dk_fail(err, DK_ERR_ARG, "%s is out of range (%lld to %lld)", key, lo, hi);
    *out = json_is_integer(v) ? json_integer_value(v) : (long long)d;
    return DK_OK;
}

int srv_parse_body(const char *body, size_t n_bytes, json_t **out, char *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", n_bytes, JSON_REJECT_DUPLICATES, &je);
    if (!root) return dk_fail(err, DK_ERR_ARG, "invalid JSON: %s", je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return dk_fail(err, DK_ERR_ARG, "the request body must be a JSON object");
    }
    *out = root;
    return DK_OK;
}

int srv_parse_model(const json_t *req, const char **model, char *err)
{
    int rc = srv_field_string(req, "model", model, err);
    if (rc != DK_OK) return rc;
    if (!*model || !**model) return dk_fail(err, DK_ERR_ARG, "model is required");
    return DK_OK;
}

int srv_parse_think(const json_t *v, int *think, char *err)
{
    *think = -1;
    if (!v || json_is_null(v)) return DK_OK;
    if (json_is_boolean(v)) {
        *think = json_is_true(v) ? 1 : 0;
        return DK_OK;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "high") == 0 || strcmp(s, "medium") == 0 || strcmp(s, "low") == 0) {
            *think = 1;
            return DK_OK;
        }
        return dk_fail(err, DK_ERR_ARG, "think must be a boolean or \"high\", \"medium\", \"low\", not \"%s\"", s);
    }
    return dk_fail(err, DK_ERR_ARG, "think must be a boolean or \"high\", \"medium\", \"low\"");
}

int srv_parse_format(const json_t *v, json_t **format, char *err)
{
    *format = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!*s) return DK_OK;
        if (strcmp(s, "json") != 0) return dk_fail(err, DK_ERR_ARG, "format must be \"json\" or a JSON schema, not \"%s\"", s);
    } else if (!json_is_object(v)) {
        return dk_fail(err, DK_ERR_ARG, "format must be \"json\" or a JSON schema object");
    }
    *format = json_incref((json_t *)v);
    return DK_OK;
}

/* ---- tools ---- */

int srv_parse_tools(const json_t *v, json_t **tools, char *err)
{
    *tools = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "tools must be an array");
    if (json_array_size(v) == 0) return DK_OK;
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        if (!json_is_object(t)) return dk_fail(err, DK_ERR_ARG, "tools[%zu] must be an object", i);
        const json_t *type = json_object_get(t, "type");
        if (type && !json_is_null(type) && (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0))
            return dk_fail(err, DK_ERR_ARG, "tools[%zu].type must be \"function\"", i);
        const json_t *fn = json_object_get(t, "function");
        if (!json_is_object(fn)) return dk_fail(err, DK_ERR_ARG, "tools[%zu].function must be an object", i);
        const json_t *name = json_object_get(fn, "name");
        if (!json_is_string(name) || json_string_length(name) == 0)
            return dk_fail(err, DK_ERR_ARG, "tools[%zu].function.name must be a non-empty string", i);
        const json_t *desc = json_object_get(fn, "description");
        if (desc && !json_is_null(desc) && !json_is_string(desc))
            return dk_fail(err, DK_ERR_ARG, "tools[%zu].function.description must be a string", i);
        const json_t *params = json_object_get(fn, "parameters");
        if (params && !json_is_null(params) && !json_is_object(params))
            return dk_fail(err, DK_ERR_ARG, "tools[%zu].function.parameters must be an object", i);
    }
    /* the templates and the tool grammar want {"type":"function","function":{...}} */
    json_t *out = json_array();
    if (!out) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    json_array_foreach(v, i, t) {
        json_t *fn = json_deep_copy(json_object_get(t, "function"));
        json_t *tool = fn ? json_pack("{s:s,s:o}", "type", "function", "function", fn) : NULL;
        if (!tool || json_array_append_new(out, tool) != 0) {
            json_decref(out);
            return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        }
    }
    *tools = out;
    return DK_OK;
}

int srv_parse_tool_choice(const json_t *v, enum engine_tool_choice *choice, const char **name, char *err)
{
    *choice = ENGINE_TOOL_AUTO;
    *name = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "auto") == 0) return DK_OK;
        if (strcmp(s, "none") == 0) *choice = ENGINE_TOOL_NONE;
        else if (strcmp(s, "required") == 0) *choice = ENGINE_TOOL_REQUIRED;
        else return dk_fail(err, DK_ERR_ARG, "tool_choice must be \"auto\", \"none\", \"required\" or a function, not \"%s\"", s);
        return DK_OK;
    }
    if (!json_is_object(v)) return dk_fail(err, DK_ERR_ARG, "tool_choice must be a string or an object");
    const json_t *type = json_object_get(v, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
        return dk_fail(err, DK_ERR_ARG, "tool_choice.type must be \"function\"");
    const json_t *fn = json_object_get(v, "function");
    const json_t *fname = json_is_object(fn) ? json_object_get(fn, "name") : NULL;
    if (!json_is_string(fname) || json_string_length(fname) == 0)
        return dk_fail(err, DK_ERR_ARG, "tool_choice.function.name must be a non-empty string");
    *choice = ENGINE_TOOL_NAMED;
    *name = json_string_value(fname);
    return DK_OK;
}

/* A named tool_choice must name one of the tools. */
int srv_check_tool_choice(const json_t *tools, enum engine_tool_choice choice, const char *name, char *err)
{
    if (choice != ENGINE_TOOL_REQUIRED && choice != ENGINE_TOOL_NAMED) return DK_OK;
    if (!tools || json_array_size(tools) == 0) return dk_fail(err, DK_ERR_ARG, "tool_choice requires tools");
    if (choice == ENGINE_TOOL_REQUIRED) return DK_OK;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && strcmp(n, name) == 0) return DK_OK;
    }
    return dk_fail(err, DK_ERR_ARG, "tool_choice names \"%s\", which is not one of the tools", name);
}

int srv_openai_response_format(const json_t *v, json_t **format, char *err)
{
    *format = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_object(v)) return dk_fail(err, DK_ERR_ARG, "response_format must be an object");
    const json_t *type = json_object_get(v, "type");
    if (!json_is_string(type)) return dk_fail(err, DK_ERR_ARG, "response_format.type must be a string");
    const char *t = json_string_value(type);
    if (strcmp(t, "text") == 0) return DK_OK;
    if (strcmp(t, "json_object") == 0) {
        *format = json_string("json");
        return *format ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (strcmp(t, "json_schema") != 0)
        return dk_fail(err, DK_ERR_ARG, "response_format.type must be \"text\", \"json_object\" or \"json_schema\", not \"%s\"", t);
    const json_t *js = json_object_get(v, "json_schema");
    if (!json_is_object(js)) return dk_fail(err, DK_ERR_ARG, "response_format.json_schema must be an object");
    const json_t *name = json_object_get(js, "name");
    if (name && !json_is_null(name) && !json_is_string(name))
        return dk_fail(err, DK_ERR_ARG, "response_format.json_schema.name must be a string");
    const json_t *strict = json_object_get(js, "strict");
    if (strict && !json_is_null(strict) && !json_is_boolean(strict))
        return dk_fail(err, DK_ERR_ARG, "response_format.json_schema.strict must be a boolean");
    const json_t *schema = json_object_get(js, "schema");
    if (!schema || json_is_null(schema)) {
        *format = json_string("json"); /* no schema: any JSON object */
        return *format ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (!json_is_object(schema)) return dk_fail(err, DK_ERR_ARG, "response_format.json_schema.schema must be an object");
    *format = json_incref((json_t *)schema);
    return DK_OK;
}

/* ---- messages ---- */

static int set_or_fail(json_t *obj, const char *key, json_t *value, char *err)
{
    if (!value || json_object_set_new(obj, key, value) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

/* One tool call into {"id"?, "type":"function","function":{"name","arguments":{...}}}.
 * arguments may be an object or (OpenAI) a JSON string holding one. */
static int tool_call_normalise(const json_t *call, size_t i_msg, size_t i_call, json_t *out_calls, char *err)
{
    if (!json_is_object(call)) return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu] must be an object", i_msg, i_call);
    const json_t *fn = json_object_get(call, "function");
    if (!json_is_object(fn))
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu].function must be an object", i_msg, i_call);
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_string(name))
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu].function.name must be a string", i_msg, i_call);
    const json_t *args = json_object_get(fn, "arguments");
    json_t *parsed = NULL;
    if (!args || json_is_null(args)) {
        parsed = json_object();
    } else if (json_is_string(args)) {
        json_error_t je;
        parsed = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, &je);
        if (!parsed || !json_is_object(parsed)) {
            json_decref(parsed);
            return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu].function.arguments is not a JSON object", i_msg, i_call);
        }
    } else if (json_is_object(args)) {
        parsed = json_deep_copy(args);
    } else {
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu].function.arguments must be an object", i_msg, i_call);
    }
    const json_t *id = json_object_get(call, "id");
    if (id && !json_is_null(id) && !json_is_string(id)) {
        json_decref(parsed);
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls[%zu].id must be a string", i_msg, i_call);
    }
    json_t *out_fn = parsed ? json_pack("{s:O,s:o}", "name", name, "arguments", parsed) : NULL;
    json_t *out = out_fn ? json_pack("{s:s,s:o}", "type", "function", "function", out_fn) : NULL;
    if (out && json_is_string(id) && json_object_set(out, "id", (json_t *)id) != 0) {
        json_decref(out);
        out = NULL;
    }
    if (!out || json_array_append_new(out_calls, out) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

/* content: a string, null, or (OpenAI) an array of {"type":"text","text"} parts, joined. */
static int content_normalise(const json_t *content, size_t i_msg, bool allow_parts, dk_buf *out, char *err)
{
    if (!content || json_is_null(content)) return DK_OK;
    if (json_is_string(content)) return dk_buf_append(out, json_string_value(content), json_string_length(content)) == 0
                                             ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (!allow_parts || !json_is_array(content))
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].content must be a string%s", i_msg, allow_parts ? " or an array of parts" : "");
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type)
            return dk_fail(err, DK_ERR_ARG, "messages[%zu].content[%zu] must be an object with a type", i_msg, i);
        if (strcmp(type, "image_url") == 0 || strcmp(type, "input_audio") == 0 || strcmp(type, "file") == 0)
            return dk_fail(err, DK_ERR_ARG, "messages[%zu].content[%zu]: this model does not support %s input", i_msg, i, type);
        if (strcmp(type, "text") != 0 && strcmp(type, "refusal") != 0)
            return dk_fail(err, DK_ERR_ARG, "messages[%zu].content[%zu].type \"%s\" is not supported", i_msg, i, type);
        const json_t *text = json_object_get(part, strcmp(type, "text") == 0 ? "text" : "refusal");
        if (!json_is_string(text)) return dk_fail(err, DK_ERR_ARG, "messages[%zu].content[%zu].text must be a string", i_msg, i);
        if (dk_buf_append(out, json_string_value(text), json_string_length(text)) != 0)
            return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return DK_OK;
}

static bool images_present(const json_t *msg)
{
    const json_t *images = json_object_get(msg, "images");
    return images && !json_is_null(images) && !(json_is_array(images) && json_array_size(images) == 0);
}

/* One message of either API into the normalised shape, appended to out. */
static int message_normalise(const json_t *msg, size_t i, bool openai, json_t *out, char *err)
{
    if (!json_is_object(msg)) return dk_fail(err, DK_ERR_ARG, "messages[%zu] must be an object", i);
    const json_t *role_v = json_object_get(msg, "role");
    if (!json_is_string(role_v)) return dk_fail(err, DK_ERR_ARG, "messages[%zu].role must be a string", i);
    const char *role = json_string_value(role_v);
    if (openai && strcmp(role, "developer") == 0) role = "system";
    if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0)
        return dk_fail(err, DK_ERR_ARG, "messages[%zu].role must be system, user, assistant or tool, not \"%s\"", i, role);
    if (images_present(msg)) return dk_fail(err, DK_ERR_ARG, "messages[%zu]: this model does not support images", i);

    json_t *m = json_object();
    dk_buf content = {0};
    int rc = m ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) rc = set_or_fail(m, "role", json_string(role), err);
    if (rc == DK_OK) rc = content_normalise(json_object_get(msg, "content"), i, openai, &content, err);
    if (rc == DK_OK) rc = set_or_fail(m, "content", json_stringn(content.data ? content.data : "", content.len), err);

    /* reasoning of earlier turns: Ollama's "thinking", OpenAI-compatible servers' "reasoning"
     * or "reasoning_content"; templates read reasoning_content */
    static const char *const reasoning_keys[] = {"thinking", "reasoning_content", "reasoning"};
    for (size_t k = 0; rc == DK_OK && k < 3; k++) {
        const json_t *r = json_object_get(msg, reasoning_keys[k]);
        if (!r || json_is_null(r)) continue;
        if (!json_is_string(r)) rc = dk_fail(err, DK_ERR_ARG, "messages[%zu].%s must be a string", i, reasoning_keys[k]);
        else if (json_string_length(r) && !json_object_get(m, "reasoning_content"))
            rc = set_or_fail(m, "reasoning_content", json_incref((json_t *)r), err);
    }

    const json_t *calls = json_object_get(msg, "tool_calls");
    if (rc == DK_OK && calls && !json_is_null(calls)) {
        if (!json_is_array(calls)) rc = dk_fail(err, DK_ERR_ARG, "messages[%zu].tool_calls must be an array", i);
        json_t *out_calls = rc == DK_OK ? json_array() : NULL;
        if (rc == DK_OK && !out_calls) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        size_t j;
        json_t *call;
        if (rc == DK_OK) json_array_foreach(calls, j, call) {
            if ((rc = tool_call_normalise(call, i, j, out_calls, err)) != DK_OK) break;
        }
        if (rc == DK_OK && json_array_size(out_calls)) rc = set_or_fail(m, "tool_calls", json_incref(out_calls), err);
        json_decref(out_calls);
    }

    /* tool results: OpenAI's tool_call_id; Ollama's tool_name (templates print it as name) */
    static const char *const string_keys[] = {"tool_call_id", "tool_name", "name"};
    for (size_t k = 0; rc == DK_OK && k < 3; k++) {
        const json_t *s = json_object_get(msg, string_keys[k]);
        if (!s || json_is_null(s)) continue;
        if (!json_is_string(s)) rc = dk_fail(err, DK_ERR_ARG, "messages[%zu].%s must be a string", i, string_keys[k]);
        else rc = set_or_fail(m, k == 0 ? "tool_call_id" : "name", json_incref((json_t *)s), err);
    }
    if (rc == DK_OK && json_array_append(out, m) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    dk_buf_free(&content);
    json_decref(m);
    return rc;
}

static int messages_normalise(const json_t *v, bool openai, json_t **out, char *err)
{
    *out = NULL;
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "messages must be an array");
    json_t *msgs = json_array();
    if (!msgs) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        int rc = message_normalise(m, i, openai, msgs, err);
        if (rc != DK_OK) {
            json_decref(msgs);
            return rc;
        }
    }
    *out = msgs;
    return DK_OK;
}

int srv_ollama_messages(const json_t *v, json_t **out, char *err) { return messages_normalise(v, false, out, err); }
int srv_openai_messages(const json_t *v, json_t **out, char *err) { return messages_normalise(v, true, out, err); }

int srv_conversation_with_model(const store_model *info, const json_t *messages, json_t **out, char *err)
{
    *out = NULL;
    json_t *conv = json_array();
    if (!conv) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    bool has_system = false;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "system") == 0) has_system = true;
    }
    int rc = DK_OK;
    if (info && info->system && info->system[0] && !has_system) {
        json_t *sys = json_pack("{s:s,s:s}", "role", "system", "content", info->system);
        if (!sys || json_array_append_new(conv, sys) != 0) rc = DK_ERR_NOMEM;
    }
    if (rc == DK_OK && info && json_is_array(info->messages)) {
        /* the Modelfile's MESSAGE lines go first, after the system message (as Ollama) */
        json_t *norm = NULL;
        char why[DK_ERRLEN];
        if (srv_ollama_messages(info->messages, &norm, why) != DK_OK) {
            json_decref(conv);
            return dk_fail(err, DK_ERR_FORMAT, "the model's messages: %s", why);
        }
        if (json_array_extend(conv, norm) != 0) rc = DK_ERR_NOMEM;
        json_decref(norm);
    }
    if (rc == DK_OK && messages && json_array_extend(conv, (json_t *)messages) != 0) rc = DK_ERR_NOMEM;
    if (rc != DK_OK) {
        json_decref(conv);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = conv;
    return DK_OK;
}

/* ---- OpenAI fields into Ollama options ---- */

/* Copies an OpenAI number field into options under another key, type-checked. */
static int openai_number(const json_t *req, const char *key, const char *option, bool integer, json_t *options, char *err)
{
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_number(v)) return dk_fail(err, DK_ERR_ARG, "%s must be a%s", key, integer ? "n integer" : " number");
    if (integer && !json_is_integer(v)) {
        double d = json_number_value(v);
        if (!isfinite(d) || d != floor(d)) return dk_fail(err, DK_ERR_ARG, "%s must be an integer", key);
    }
    return json_object_set(options, option, (json_t *)v) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

int srv_openai_options(const json_t *req, long default_max_tokens, json_t **options, char *err)
{
    *options = json_object();
    if (!*options) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    static const struct { const char *key, *option; bool integer; } fields[] = {
        {"temperature", "temperature", false},   {"top_p", "top_p", false},
        {"seed", "seed", true},                  {"presence_penalty", "presence_penalty", false},
        {"frequency_penalty", "frequency_penalty", false}, {"max_tokens", "num_predict", true},
        {"max_completion_tokens", "num_predict", true},
    };
    int rc = DK_OK;
    for (size_t k = 0; rc == DK_OK && k < sizeof fields / sizeof fields[0]; k++)
        rc = openai_number(req, fields[k].key, fields[k].option, fields[k].integer, *options, err);
    if (rc == DK_OK && !json_object_get(*options, "num_predict") && default_max_tokens >= 0 &&
        json_object_set_new(*options, "num_predict", json_integer(default_max_tokens)) != 0)
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const json_t *stop = json_object_get(req, "stop");
    if (rc == DK_OK && stop && !json_is_null(stop)) {
        bool ok = json_is_string(stop) || json_is_array(stop);
        size_t i;
        json_t *s;
        if (json_is_array(stop)) json_array_foreach(stop, i, s) ok = ok && json_is_string(s);
        if (!ok) rc = dk_fail(err, DK_ERR_ARG, "stop must be a string or an array of strings");
        else if (json_is_array(stop) && json_array_size(stop) > SRV_MAX_STOPS)
            rc = dk_fail(err, DK_ERR_ARG, "stop: at most %d stop strings", SRV_MAX_STOPS);
        else if (json_object_set(*options, "stop", (json_t *)stop) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    const json_t *n = json_object_get(req, "n");
    if (rc == DK_OK && n && !json_is_null(n)) {
        if (!json_is_integer(n)) rc = dk_fail(err, DK_ERR_ARG, "n must be an integer");
        else if (json_integer_value(n) != 1) rc = dk_fail(err, DK_ERR_ARG, "n: only 1 choice is supported");
    }
    if (rc == DK_OK) {
        const json_t *user = json_object_get(req, "user");
        if (user && !json_is_null(user) && !json_is_string(user)) rc = dk_fail(err, DK_ERR_ARG, "user must be a string");
    }
    if (rc != DK_OK) {
        json_decref(*options);
        *options = NULL;
    }
    return rc;
}

int srv_openai_reasoning_effort(const json_t *req, int *think, char *err)
{
    *think = -1;
    const json_t *v = json_object_get(req, "reasoning_effort");
    if (!v || json_is_null(v)) return DK_OK;
    if (!json_is_string(v)) return dk_fail(err, DK_ERR_ARG, "reasoning_effort must be a string");
    const char *s = json_string_value(v);
    if (strcmp(s, "none") == 0) *think = 0;
    else if (strcmp(s, "minimal") == 0 || strcmp(s, "low") == 0 || strcmp(s, "medium") == 0 || strcmp(s, "high") == 0) *think = 1;
    else return dk_fail(err, DK_ERR_ARG, "reasoning_effort must be \"none\", \"minimal\", \"low\", \"medium\" or \"high\"");
    return DK_OK;
}

/* ---- response pieces shared by both APIs ---- */

static json_t *srv_logprob_token_json(const engine_model *model, int32_t token, float logprob)
{
    dk_buf piece = {0};
    char err[DK_ERRLEN];
    if (engine_token_piece(model, token, &piece, err) != DK_OK) dk_buf_clear(&piece);
    json_t *bytes = json_array();
    for (size_t i = 0; bytes && i < piece.len; i++) json_array_append_new(bytes, json_integer((unsigned char)piece.data[i]));
    /* a piece may end inside a UTF-8 sequence: the text shows what is valid, bytes have it all */
    json_t *text = json_stringn(piece.data ? piece.data : "", piece.len);
    if (!text) {
        dk_buf out = {0};
        for (size_t i = 0; i < piece.len; i++) {
            unsigned char c = (unsigned char)piece.data[i];
            if (c < 0x80) dk_buf_putc(&out, (char)c);
            else dk_buf_puts(&out, "\xef\xbf\xbd");
        }
        text = json_stringn(out.data ? out.data : "", out.len);
        dk_buf_free(&out);
    }
    dk_buf_free(&piece);
    json_t *o = json_pack("{s:o,s:f,s:o}", "token", text, "logprob", (double)logprob, "bytes", bytes);
    return o;
}

json_t *srv_logprob_json(const engine_model *model, int32_t token, float logprob, const engine_logprob *top, size_t n_top,
                         bool with_top)
{
    json_t *o = srv_logprob_token_json(model, token, logprob);
    if (!o || !with_top) return o;
    json_t *alts = json_array();
    for (size_t i = 0; alts && i < n_top; i++) json_array_append_new(alts, srv_logprob_token_json(model, top[i].token, top[i].logprob));
    if (!alts || json_object_set_new(o, "top_logprobs", alts) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int srv_base64_floats(const float *v, size_t n, dk_buf *out)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n_bytes = n * 4;
    unsigned char *bytes = dk_malloc(n_bytes ? n_bytes : 1);
    if (!bytes) return -1;
    for (size_t i = 0; i < n; i++) { /* little-endian float32, as the openai client decodes */
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; b++) bytes[i * 4 + (size_t)b] = (unsigned char)(u >> (8 * b));
    }
    for (size_t i = 0; i < n_bytes; i += 3) {
        uint32_t w = (uint32_t)bytes[i] << 16;
        if (i + 1 < n_bytes) w |= (uint32_t)bytes[i + 1] << 8;
        if (i + 2 < n_bytes) w |= bytes[i + 2];
        char q[4] = {alphabet[(w >> 18) & 63], alphabet[(w >> 12) & 63], i + 1 < n_bytes ? alphabet[(w >> 6) & 63] : '=',
                     i + 2 < n_bytes ? alphabet[w & 63] : '='};
        dk_buf_append(out, q, 4);
    }
    dk_free(bytes);
    if (!out->data) dk_buf_puts(out, "");
    return out->failed ? -1 : 0;
}

/* ==== running a generation (shared by api_ollama.c and api_openai.c) ==== */

srv_gen_job *srv_gen_job_new(srv *server, json_t *body)
{
    srv_gen_job *job = dk_calloc(1, sizeof(*job));
    if (!job) {
        json_decref(body);
        return NULL;
    }
    job->server = server;
    job->body = body;
    job->think = -1;
    job->parallel_tool_calls = true;
    job->load.keep_alive_ns = SRV_KEEP_ALIVE_DEFAULT;
    job->t_start_ns = dk_now_ns();
    job->created = (int64_t)(srv_unix_ns() / 1000000000u);
    srv_gen_options_default(&job->opts);
    return job;
}

srv_gen_job *srv_gen_job_from_request(srv_request *rq)
{
    char err[DK_ERRLEN];
    json_t *body;
    if (srv_parse_body(rq->body, rq->body_len, &body, err) != DK_OK) {
        srv_reply_error(rq, 400, "%s", err);
        return NULL;
    }
    srv_gen_job *job = srv_gen_job_new(rq->server, body);
    if (!job) srv_reply_error(rq, 500, "out of memory");
    return job;
}

/* The request's messages and the reply: what the next turn of this chat will start with. */
static json_t *job_conversation_after(const srv_gen_job *job)
{
    if (!job->chat || !job->request_messages || job->rc != DK_OK || job->gone) return NULL;
    json_t *conv = json_copy(job->request_messages);
    json_t *reply = json_pack("{s:s,s:s%}", "role", "assistant", "content", job->content.data ? job->content.data : "",
                              job->content.len);
    if (reply && job->tool_calls && json_array_size(job->tool_calls)) json_object_set(reply, "tool_calls", job->tool_calls);
    if (!conv || !reply || json_array_append_new(conv, reply) != 0) {
        json_decref(conv);
        return NULL;
    }
    return conv;
}

void srv_gen_job_free(srv_gen_job *job)
{
    if (!job) return;
    if (job->leased) {
        json_t *conv = job_conversation_after(job);
        srv_sched_release(job->server->sched, &job->lease, conv);
        json_decref(conv);
    }
    json_decref(job->body);
    json_decref(job->options_json);
    json_decref(job->request_messages);
    json_decref(job->messages);
    json_decref(job->tools);
    json_decref(job->format);
    json_decref(job->tool_calls);
    json_decref(job->logprobs_all);
    json_decref(job->logprobs_pending);
    dk_free(job->prompt);
    dk_free(job->out_tokens);
    dk_buf_free(&job->content);
    dk_buf_free(&job->reasoning_text);
    dk_free(job);
}

int srv_gen_acquire(srv_gen_job *job, srv_request *rq, bool openai)
{
    char err[DK_ERRLEN] = "";
    const json_t *conversation = job->chat ? job->request_messages : NULL;
    int rc = srv_sched_acquire(job->server->sched, job->model_name, &job->load, conversation, NULL, &job->lease, err);
    if (rc == DK_OK) {
        job->leased = true;
        return 0;
    }
    if (rc == DK_ERR_NOTFOUND && openai) srv_reply_error(rq, 404, "model '%s' not found", job->model_name);
    else if (rc == DK_ERR_NOTFOUND) srv_reply_error(rq, 404, "model \"%s\" not found, try pulling it first", job->model_name);
    else if (rc == DK_ERR_LIMIT && strstr(err, "busy")) srv_reply_error(rq, 503, "%s", err);
    else srv_reply_error(rq, srv_status_of(rc), "%s", err);
    return -1;
}

/* The prompt the chat template makes of the conversation, tokenized; *n_tokens only. */
static int chat_prompt_tokens(srv_gen_job *job, const chat_template *tmpl, size_t n_ctx, size_t *n_tokens, char *err)
{
    engine_model *m = job->lease.model;
    json_t *extra = json_object();
    if (!extra) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (job->think >= 0) json_object_set_new(extra, "enable_thinking", json_boolean(job->think > 0));
    chat_render_params rp = {
        .messages = job->messages,
        .tools = job->tool_choice != ENGINE_TOOL_NONE ? job->tools : NULL,
        .add_generation_prompt = true,
        .bos_token = engine_bos_text(m),
        .eos_token = engine_eos_text(m),
        .extra = extra,
    };
    dk_buf prompt = {0};
    char why[DK_ERRLEN];
    int rc = chat_template_render(tmpl, &rp, &prompt, why);
    json_decref(extra);
    if (rc != DK_OK) {
        dk_buf_free(&prompt);
        return dk_fail(err, rc, "chat template: %s", why);
    }
    /* a token covers at least one byte (special tokens included), so a short prompt fits */
    if (prompt.len + 8 < n_ctx) {
        *n_tokens = prompt.len;
        dk_buf_free(&prompt);
        return DK_OK;
    }
    int32_t *tokens = NULL;
    const char *bos = engine_bos_text(m);
    bool add_special = !(bos[0] && strncmp(prompt.data, bos, strlen(bos)) == 0);
    rc = engine_tokenize(m, prompt.data, prompt.len, add_special, true, &tokens, n_tokens, err);
    dk_free(tokens);
    dk_buf_free(&prompt);
    return rc;
}

static const char *message_role(const json_t *messages, size_t i)
{
    const char *role = json_string_value(json_object_get(json_array_get(messages, i), "role"));
    return role ? role : "";
}

/* The store's TEMPLATE when it is a Jinja chat template (Ollama's own stores hold Go
 * templates, which do not parse: the model's template is used then); parsed into *out. */
static const char *stored_template(const srv_gen_job *job, chat_template **out)
{
    const char *stored = job->lease.info ? job->lease.info->template_text : NULL;
    char why[DK_ERRLEN];
    *out = NULL;
    if (!stored || !stored[0] || chat_template_parse(out, stored, strlen(stored), why) != DK_OK) return NULL;
    return stored;
}

static int fit_chat(srv_gen_job *job, const chat_template *tmpl, char *err);

int srv_gen_fit_chat(srv_gen_job *job, char *err)
{
    chat_template *stored = NULL;
    const chat_template *tmpl = NULL;
    int rc = DK_OK;
    if (stored_template(job, &stored)) tmpl = stored;
    else rc = engine_chat_template_get(job->lease.model, &tmpl, err);
    if (rc == DK_OK) rc = fit_chat(job, tmpl, err);
    chat_template_free(stored);
    return rc;
}

/* Drops the oldest turns until the prompt tmpl makes fits the context. */
static int fit_chat(srv_gen_job *job, const chat_template *tmpl, char *err)
{
    int rc;
    size_t n_ctx = engine_session_n_ctx(job->lease.session);
    for (;;) {
        size_t n_tokens;
        if ((rc = chat_prompt_tokens(job, tmpl, n_ctx, &n_tokens, err)) != DK_OK) return rc;
        if (n_tokens < n_ctx) return DK_OK;
        size_t n = json_array_size(job->messages), first = 0, last_user = n;
        while (first < n && strcmp(message_role(job->messages, first), "system") == 0) first++;
        for (size_t i = n; i-- > first;)
            if (strcmp(message_role(job->messages, i), "user") == 0) {
                last_user = i;
                break;
            }
        if (last_user == n || first >= last_user)
            return dk_fail(err, DK_ERR_ARG, "the prompt is too long: %zu tokens, the context holds %zu", n_tokens, n_ctx);
        /* drop the oldest turn: the message, then what answers it, up to the next user message */
        json_array_remove(job->messages, first);
        while (first < json_array_size(job->messages) && strcmp(message_role(job->messages, first), "user") != 0 &&
               strcmp(message_role(job->messages, first), "system") != 0)
            json_array_remove(job->messages, first);
    }
}

/* Hands a piece to the API's stream, with the logprob entries gathered since the last one. */
static int job_delta(srv_gen_job *job, const char *content, size_t n_content, const char *reasoning, size_t n_reasoning)
{
    if (n_content) dk_buf_append(&job->content, content, n_content);
    if (n_reasoning) dk_buf_append(&job->reasoning_text, reasoning, n_reasoning);
    if (!job->on_delta) return 0;
    const json_t *pending = job->logprobs_pending && json_array_size(job->logprobs_pending) ? job->logprobs_pending : NULL;
    int gone = job->on_delta(job, content ? content : "", n_content, reasoning ? reasoning : "", n_reasoning, pending);
    if (pending) json_array_clear(job->logprobs_pending);
    if (gone) job->gone = true;
    return gone;
}

static int job_on_content(void *user, const char *text, size_t n_bytes) { return job_delta(user, text, n_bytes, NULL, 0); }
static int job_on_reasoning(void *user, const char *text, size_t n_bytes) { return job_delta(user, NULL, 0, text, n_bytes); }

static int job_on_token(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    srv_gen_job *job = user;
    if (engine_token_is_eog(job->lease.model, token)) return 0;
    if (job->n_out == job->cap_out) {
        size_t cap = job->cap_out ? job->cap_out * 2 : 256;
        int32_t *grown = dk_realloc(job->out_tokens, cap * sizeof(int32_t));
        if (!grown) return 1;
        job->out_tokens = grown;
        job->cap_out = cap;
    }
    job->out_tokens[job->n_out++] = token;
    if (!job->logprobs) return 0;
    if (!job->logprobs_all) job->logprobs_all = json_array();
    if (!job->logprobs_pending) job->logprobs_pending = json_array();
    json_t *entry = srv_logprob_json(job->lease.model, token, logprob, top, n_top, true);
    if (!entry || !job->logprobs_all || !job->logprobs_pending) {
        json_decref(entry);
        return 1;
    }
    json_array_append(job->logprobs_all, entry);
    json_array_append_new(job->logprobs_pending, entry);
    return 0;
}

static void job_gen_params(srv_gen_job *job, engine_generate_params *g, bool want_tokens)
{
    engine_generate_params_default(g);
    g->sampling = job->opts.sampling;
    g->num_predict = job->opts.num_predict;
    g->stops = job->opts.stops;
    g->n_stops = job->opts.n_stops;
    g->on_text = job_on_content;
    g->user = job;
    if (job->logprobs || want_tokens) {
        g->on_token = job_on_token;
        g->top_logprobs = job->logprobs ? job->top_logprobs : 0;
    }
    /* a streamed generation stops when its client goes; any stops when the server does */
    g->cancel = job->stream ? srv_stream_cancel_flag(job->stream) : &job->server->stopping;
}

static int job_run_chat(srv_gen_job *job)
{
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = job->messages;
    cp.tools = job->tools;
    cp.tool_choice = job->tool_choice;
    cp.tool_name = job->tool_name;
    cp.parallel_tool_calls = job->parallel_tool_calls;
    cp.format = job->format;
    cp.think = job->think;
    job_gen_params(job, &cp.gen, false);
    cp.on_reasoning = job_on_reasoning;
    chat_template *stored = NULL;
    cp.template_text = stored_template(job, &stored);
    chat_template_free(stored);
    engine_chat_result res;
    int rc = engine_chat(job->lease.session, &cp, &res, job->err);
    if (rc == DK_OK) {
        job->timings = res.timings;
        job->n_prompt_reused = res.n_prompt_reused;
        job->tool_calls = res.tool_calls;
        res.tool_calls = NULL;
    }
    engine_chat_result_free(&res);
    return rc;
}

typedef struct raw_turn {
    srv_gen_job *job;
    chat_parser *parser;
    dk_buf content, reasoning;
} raw_turn;

static int raw_forward(raw_turn *t)
{
    int stop = (t->content.len || t->reasoning.len)
                   ? job_delta(t->job, t->content.data, t->content.len, t->reasoning.data, t->reasoning.len) : 0;
    dk_buf_clear(&t->content);
    dk_buf_clear(&t->reasoning);
    return stop;
}

static int raw_on_text(void *user, const char *text, size_t n_bytes)
{
    raw_turn *t = user;
    if (!t->parser) return job_delta(t->job, text, n_bytes, NULL, 0);
    chat_delta d = {.content = &t->content, .reasoning = &t->reasoning};
    if (chat_parser_feed(t->parser, text, n_bytes, &d) != DK_OK) return 1;
    return raw_forward(t);
}

static int raw_on_token(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    raw_turn *t = user;
    return job_on_token(t->job, token, logprob, top, n_top);
}

/* A prompt of tokens through engine_generate (no chat template), reasoning split when the
 * prompt came from a thinking template; the session starts empty. */
static int job_run_prompt(srv_gen_job *job)
{
    raw_turn t = {.job = job};
    sample_grammar *grammar = NULL;
    engine_generate_params g;
    job_gen_params(job, &g, true);
    g.on_text = raw_on_text;
    g.on_token = raw_on_token;
    g.user = &t;
    int rc = DK_OK;
    if (job->format && (rc = engine_format_grammar(job->format, &grammar, job->err)) != DK_OK) return rc;
    if (grammar) {
        g.grammar = grammar;
        g.grammar_after_reasoning = job->reasoning && !job->in_reasoning;
        g.in_reasoning = job->in_reasoning;
    }
    if (job->reasoning) {
        chat_parse_params pp = {.format = CHAT_FORMAT_GENERIC, .parse_tools = false, .reasoning = true,
                                .in_reasoning = job->in_reasoning};
        rc = chat_parser_new(&t.parser, &pp, job->err);
    }
    if (rc == DK_OK) {
        engine_session_clear(job->lease.session);
        rc = engine_generate(job->lease.session, job->prompt, job->n_prompt, &g, &job->timings, job->err);
    }
    if (rc == DK_OK && t.parser && !job->gone) {
        chat_delta d = {.content = &t.content, .reasoning = &t.reasoning};
        if (chat_parser_finish(t.parser, &d) != DK_OK) rc = dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
        else raw_forward(&t);
    }
    chat_parser_free(t.parser);
    dk_buf_free(&t.content);
    dk_buf_free(&t.reasoning);
    sample_grammar_free(grammar);
    return rc;
}

void srv_gen_run(srv_gen_job *job)
{
    job->rc = job->chat ? job_run_chat(job) : job_run_prompt(job);
    if (job->rc == DK_OK && (job->content.failed || job->reasoning_text.failed))
        job->rc = dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    if (job->rc == DK_OK && !job->tool_calls) job->tool_calls = json_array();
    if (job->rc == DK_OK && !job->tool_calls) job->rc = dk_fail(job->err, DK_ERR_NOMEM, "out of memory");
    if (job->timings.done == ENGINE_DONE_CANCEL && job->stream) job->gone = true;
    atomic_fetch_add(&job->server->n_prompt_tokens, (unsigned long)job->timings.n_prompt);
    atomic_fetch_add(&job->server->n_gen_tokens, (unsigned long)job->timings.n_eval);
}

const char *srv_gen_done_reason(const srv_gen_job *job)
{
    switch (job->timings.done) {
    case ENGINE_DONE_LENGTH:
    case ENGINE_DONE_CONTEXT: return "length";
    default: return "stop";
    }
}

/* ---- embeddings ---- */

int srv_embed_texts(engine_model *model, const char *const *texts, size_t n, bool truncate, long long dimensions,
                    float **out, size_t *n_dim, size_t *n_tokens, char *err)
{
    *out = NULL;
    *n_tokens = 0;
    if (!engine_is_embedding(model)) return dk_fail(err, DK_ERR_ARG, "this model does not support embeddings");
    if (engine_is_reranker(model))
        return dk_fail(err, DK_ERR_ARG, "this model is a reranker: it does not support embeddings (use /api/rerank)");
    size_t n_embd = engine_n_embd(model);
    if (dimensions < 0) return dk_fail(err, DK_ERR_ARG, "dimensions must be positive");
    *n_dim = dimensions > 0 && (size_t)dimensions < n_embd ? (size_t)dimensions : n_embd;
    float *vectors = dk_malloc_array(n ? n : 1, *n_dim * sizeof(float));
    if (!vectors) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = engine_embed_batch(model, texts, n, truncate, (size_t)dimensions, vectors, n_tokens, err);
    if (rc != DK_OK) {
        dk_free(vectors);
        return rc;
    }
    *out = vectors;
    return DK_OK;
}
