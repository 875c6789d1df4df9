/*
 * json_validate.c: the test-side JSON-schema validator of json_validate.h. Patterns and
 * formats are checked with PCRE2 regular expressions, so they are an independent check of
 * the grammar the converter built.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "json_validate.h"

#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int jv_fail(char *why, size_t why_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int jv_fail(char *why, size_t why_size, const char *fmt, ...)
{
    if (why && why_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_size, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* 1 match, 0 no match, -1 bad pattern. */
static int jv_regex(const char *pattern, const char *text, size_t n)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &errcode, &erroff, NULL);
    if (!re) return -1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = md ? pcre2_match(re, (PCRE2_SPTR)text, n, 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

static size_t jv_utf8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static const json_t *jv_resolve(const json_t *root, const char *ref)
{
    if (ref[0] != '#') return NULL;
    const json_t *cur = root;
    const char *p = ref + 1;
    while (*p == '/' && cur) {
        p++;
        char key[256];
        size_t k = 0;
        while (*p && *p != '/' && k + 1 < sizeof key) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                key[k++] = p[1] == '0' ? '~' : '/';
                p += 2;
            } else {
                key[k++] = *p++;
            }
        }
        key[k] = 0;
        cur = json_is_object(cur) ? json_object_get(cur, key) : json_is_array(cur) ? json_array_get(cur, strtoul(key, NULL, 10)) : NULL;
    }
    return cur;
}

static bool jv_type_is(const json_t *v, const char *t)
{
    if (strcmp(t, "string") == 0) return json_is_string(v);
    if (strcmp(t, "integer") == 0) return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (strcmp(t, "number") == 0) return json_is_number(v);
    if (strcmp(t, "boolean") == 0) return json_is_boolean(v);
    if (strcmp(t, "null") == 0) return json_is_null(v);
    if (strcmp(t, "object") == 0) return json_is_object(v);
    if (strcmp(t, "array") == 0) return json_is_array(v);
    return false;
}

static const char *const jv_formats[][2] = {
    {"date", "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"},
    {"time", "^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"},
    {"date-time", "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"},
    {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
    {"email", "^[^@\\s\"]+@[^@\\s\".]+(\\.[^@\\s\".]+)+$"},
    {"uri", "^[a-zA-Z][a-zA-Z0-9+.-]*:[^\\s\"<>{}|\\\\^`]+$"},
};

static int jv_string(const json_t *v, const json_t *s, char *why, size_t ws)
{
    const char *str = json_string_value(v);
    size_t n = json_string_length(v), len = jv_utf8_len(str, n);
    const json_t *x;
    if ((x = json_object_get(s, "minLength")) && (json_int_t)len < json_integer_value(x)) return jv_fail(why, ws, "string shorter than minLength");
    if ((x = json_object_get(s, "maxLength")) && (json_int_t)len > json_integer_value(x)) return jv_fail(why, ws, "string longer than maxLength");
    if ((x = json_object_get(s, "pattern")) && json_is_string(x) && jv_regex(json_string_value(x), str, n) != 1)
        return jv_fail(why, ws, "string \"%s\" does not match pattern %s", str, json_string_value(x));
    if ((x = json_object_get(s, "format")) && json_is_string(x)) {
        for (size_t i = 0; i < sizeof jv_formats / sizeof jv_formats[0]; i++)
            if (strcmp(jv_formats[i][0], json_string_value(x)) == 0 && jv_regex(jv_formats[i][1], str, n) != 1)
                return jv_fail(why, ws, "string \"%s\" is not a %s", str, jv_formats[i][0]);
    }
    return 1;
}

static int jv_number(const json_t *v, const json_t *s, char *why, size_t ws)
{
    double d = json_number_value(v);
    const json_t *x;
    if ((x = json_object_get(s, "minimum")) && json_is_number(x) && d < json_number_value(x)) return jv_fail(why, ws, "%g < minimum", d);
    if ((x = json_object_get(s, "maximum")) && json_is_number(x) && d > json_number_value(x)) return jv_fail(why, ws, "%g > maximum", d);
    if ((x = json_object_get(s, "exclusiveMinimum")) && json_is_number(x) && d <= json_number_value(x)) return jv_fail(why, ws, "%g <= exclusiveMinimum", d);
    if ((x = json_object_get(s, "exclusiveMaximum")) && json_is_number(x) && d >= json_number_value(x)) return jv_fail(why, ws, "%g >= exclusiveMaximum", d);
    return 1;
}

static int jv_object(const json_t *v, const json_t *s, const json_t *root, char *why, size_t ws)
{
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties");
    for (size_t i = 0; json_is_array(req) && i < json_array_size(req); i++) {
        const char *k = json_string_value(json_array_get(req, i));
        if (k && !json_object_get(v, k)) return jv_fail(why, ws, "required property \"%s\" missing", k);
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        const json_t *ps = json_is_object(props) ? json_object_get(props, key) : NULL;
        if (ps) {
            if (!json_validate(val, ps, root, why, ws)) return 0;
        } else if (json_is_false(addl)) {
            return jv_fail(why, ws, "additional property \"%s\"", key);
        } else if (json_is_object(addl) && !json_validate(val, addl, root, why, ws)) {
            return 0;
        }
    }
    return 1;
}

static int jv_array(const json_t *v, const json_t *s, const json_t *root, char *why, size_t ws)
{
    const json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems"), *x;
    if (json_is_array(items)) prefix = items, items = NULL;
    size_t n = json_array_size(v), n_prefix = json_is_array(prefix) ? json_array_size(prefix) : 0;
    if ((x = json_object_get(s, "minItems")) && (json_int_t)n < json_integer_value(x)) return jv_fail(why, ws, "fewer than minItems");
    if ((x = json_object_get(s, "maxItems")) && (json_int_t)n > json_integer_value(x)) return jv_fail(why, ws, "more than maxItems");
    for (size_t i = 0; i < n; i++) {
        const json_t *is = i < n_prefix ? json_array_get(prefix, i) : items;
        if (!is) continue;
        if (json_is_false(is)) return jv_fail(why, ws, "item %zu not allowed", i);
        if (!json_validate(json_array_get(v, i), is, root, why, ws)) return 0;
    }
    return 1;
}

int json_validate(const json_t *v, const json_t *s, const json_t *root, char *why, size_t ws)
{
    if (!root) root = s;
    if (json_is_true(s)) return 1;
    if (json_is_false(s)) return jv_fail(why, ws, "schema false");
    if (!json_is_object(s)) return jv_fail(why, ws, "schema is not an object");
    const json_t *x;
    if ((x = json_object_get(s, "$ref"))) {
        const json_t *t = json_is_string(x) ? jv_resolve(root, json_string_value(x)) : NULL;
        if (!t) return jv_fail(why, ws, "unresolved $ref");
        if (!json_validate(v, t, root, why, ws)) return 0;
    }
    if ((x = json_object_get(s, "allOf")))
        for (size_t i = 0; i < json_array_size(x); i++)
            if (!json_validate(v, json_array_get(x, i), root, why, ws)) return 0;
    if ((x = json_object_get(s, "anyOf"))) {
        bool ok = false;
        for (size_t i = 0; i < json_array_size(x) && !ok; i++) ok = json_validate(v, json_array_get(x, i), root, why, ws);
        if (!ok) return jv_fail(why, ws, "no anyOf branch matches");
    }
    if ((x = json_object_get(s, "oneOf"))) {
        int n_ok = 0;
        for (size_t i = 0; i < json_array_size(x); i++) n_ok += json_validate(v, json_array_get(x, i), root, why, ws);
        if (n_ok != 1) return jv_fail(why, ws, "%d oneOf branches match", n_ok);
    }
    if ((x = json_object_get(s, "const")) && !json_equal((json_t *)v, (json_t *)x)) return jv_fail(why, ws, "not the const value");
    if ((x = json_object_get(s, "enum"))) {
        bool ok = false;
        for (size_t i = 0; i < json_array_size(x) && !ok; i++) ok = json_equal((json_t *)v, json_array_get(x, i));
        if (!ok) return jv_fail(why, ws, "not one of the enum values");
    }
    if ((x = json_object_get(s, "type"))) {
        bool ok = false;
        if (json_is_string(x)) ok = jv_type_is(v, json_string_value(x));
        for (size_t i = 0; json_is_array(x) && i < json_array_size(x) && !ok; i++) ok = jv_type_is(v, json_string_value(json_array_get(x, i)));
        if (!ok) return jv_fail(why, ws, "wrong type");
    }
    if (json_is_string(v)) return jv_string(v, s, why, ws);
    if (json_is_number(v)) return jv_number(v, s, why, ws);
    if (json_is_object(v)) return jv_object(v, s, root, why, ws);
    if (json_is_array(v)) return jv_array(v, s, root, why, ws);
    return 1;
}
