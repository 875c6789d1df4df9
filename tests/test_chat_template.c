/*
 * test_chat_template.c: the chat-template interpreter (suite `chat_template`): expressions,
 * filters, tests, loops, assignments, macros, whitespace control (trim_blocks, lstrip_blocks,
 * {%- -%}), errors with their positions, the limits that stop hostile templates, allocation
 * failures, and renders of real template excerpts and of the built-in ChatML template.
 * Expected outputs are what @huggingface/jinja prints for the same input (tests/node checks
 * whole real templates against it).
 */
#include <stdlib.h>

#include "chat/chat.h"
#include "test.h"

/* Renders src with vars (a JSON object: messages, tools, add_generation_prompt, bos_token,
 * eos_token and extra keys). Returns the status; *out (dk_free) or err. */
static int render_vars(const char *src, const char *vars_json, char **out, char *err)
{
    *out = NULL;
    json_t *vars = json_loads(vars_json ? vars_json : "{}", 0, NULL);
    if (!vars) return dk_fail(err, DK_ERR_ARG, "bad test JSON");
    chat_template *t = NULL;
    int rc = chat_template_parse(&t, src, strlen(src), err);
    if (rc == DK_OK) {
        json_t *extra = json_deep_copy(vars);
        json_object_del(extra, "messages");
        json_object_del(extra, "tools");
        json_object_del(extra, "add_generation_prompt");
        json_object_del(extra, "bos_token");
        json_object_del(extra, "eos_token");
        json_t *msgs = json_object_get(vars, "messages");
        json_t *empty = json_array();
        chat_render_params p = {
            .messages = msgs ? msgs : empty,
            .tools = json_object_get(vars, "tools"),
            .add_generation_prompt = json_is_true(json_object_get(vars, "add_generation_prompt")),
            .bos_token = json_string_value(json_object_get(vars, "bos_token")),
            .eos_token = json_string_value(json_object_get(vars, "eos_token")),
            .extra = extra,
        };
        dk_buf b = {0};
        rc = chat_template_render(t, &p, &b, err);
        if (rc == DK_OK) *out = b.data ? dk_buf_detach(&b) : dk_strdup("");
        dk_buf_free(&b);
        json_decref(extra);
        json_decref(empty);
    }
    chat_template_free(t);
    json_decref(vars);
    return rc;
}

/* Checks that src renders (with vars) to want. */
#define CHECK_RENDER(src, vars, want) \
    do { char *out_; char err_[DK_ERRLEN] = ""; \
         int rc_ = render_vars((src), (vars), &out_, err_); \
         CHECK_MSG(rc_ == DK_OK, "render of %s failed: %s", (src), err_); \
         if (rc_ == DK_OK) CHECK_EQ_STR(out_, (want)); \
         dk_free(out_); } while (0)

/* Checks that src fails with code and an error message containing part. */
#define CHECK_FAIL(src, vars, code, part) \
    do { char *out_; char err_[DK_ERRLEN] = ""; \
         int rc_ = render_vars((src), (vars), &out_, err_); \
         CHECK_MSG(rc_ == (code), "%s: rc %d (want %d), out \"%s\", err \"%s\"", (src), rc_, (code), out_ ? out_ : "", err_); \
         CHECK_MSG(strstr(err_, (part)) != NULL, "%s: error \"%s\" lacks \"%s\"", (src), err_, (part)); \
         dk_free(out_); } while (0)

TEST(chat_template, literals_and_printing)
{
    CHECK_RENDER("{{ 1 }} {{ -2 }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 2.5 if false else 1.25 }}", NULL, "1 -2 1.0 0.30000000000000004 1.25");
    CHECK_RENDER("{{ true }} {{ False }} [{{ none }}] [{{ None }}] [{{ nothing }}]", NULL, "true false [] [] []");
    CHECK_RENDER("{{ 'a\\n\\t\\'\"' }}|{{ \"x\\u00e9\\x41\" }}|{{ 'ab' 'cd' }}", NULL, "a\n\t'\"|x\xc3\xa9" "A|abcd");
    CHECK_RENDER("{{ [1, 'a', none, [true]] }}", NULL, "[1, \"a\", null, [true]]");
    CHECK_RENDER("{{ {'b': 1, 'a': {'x': 1.5}} }}", NULL, "{\"b\": 1, \"a\": {\"x\": 1.5}}");
    CHECK_RENDER("{{ (1, 2) }}{{ [] }}{{ {} }}", NULL, "[1, 2][]{}");
}

TEST(chat_template, arithmetic)
{
    CHECK_RENDER("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 6 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }}", NULL, "7 9 3.5 3.0 3 -4");
    CHECK_RENDER("{{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 * 2 }} {{ 1 - 0.5 }}", NULL, "1 -1 1024 0.5 3.0 0.5");
    CHECK_RENDER("{{ 'a' + 'b' }} {{ 'a' + 1 }} {{ 1.0 ~ 'x' ~ true }} {{ [1] + [2, 3] }}", NULL, "ab a1 1xtrue [1, 2, 3]");
    CHECK_RENDER("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ none == undefined_thing }}", NULL,
                 "true false true true true");
    CHECK_FAIL("{{ 1 // 0 }}", NULL, DK_ERR_FORMAT, "division by zero");
    CHECK_FAIL("{{ 9223372036854775807 + 1 }}", NULL, DK_ERR_FORMAT, "overflow");
    CHECK_FAIL("{{ 'a' - 1 }}", NULL, DK_ERR_FORMAT, "line 1, column 8: unknown operator '-'");
    CHECK_FAIL("{{ x + 1 }}", NULL, DK_ERR_FORMAT, "undefined");
    CHECK_FAIL("{{ none + 1 }}", NULL, DK_ERR_FORMAT, "none");
}

TEST(chat_template, logic_membership_ternary)
{
    CHECK_RENDER("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ [] or 'empty' }} {{ not '' }} {{ not not 3 }}", NULL, "x y empty true true");
    CHECK_RENDER("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'z' in undefined_x }}", NULL,
                 "true true true true false");
    CHECK_RENDER("{{ 'yes' if 1 > 0 else 'no' }} {{ 'a' if false else 'b' if true else 'c' }} [{{ 'x' if false }}]", NULL, "yes b []");
}

TEST(chat_template, member_access_and_slices)
{
    const char *v = "{\"m\": {\"role\": \"user\", \"items\": 5, \"list\": [10, 20, 30]}, \"s\": \"h\\u00e9llo\"}";
    CHECK_RENDER("{{ m.role }} {{ m['role'] }} {{ m.list[1] }} {{ m.list[-1] }} [{{ m.list[9] }}] [{{ m.nope.deeper }}]", v,
                 "user user 20 30 [] []");
    CHECK_RENDER("{{ m.items }} {{ m.list | length }} {{ m.list.length }} {{ s.length }} {{ s[1] }} {{ s[-1] }}", v, "5 3 3 5 \xc3\xa9 o");
    CHECK_RENDER("{{ m.list[1:] }} {{ m.list[:-1] }} {{ m.list[::-1] }} {{ m.list[::2] }} {{ s[1:3] }} {{ s[::-1] }}", v,
                 "[20, 30] [10, 20] [30, 20, 10] [10, 30] \xc3\xa9l oll\xc3\xa9h");
    CHECK_FAIL("{{ m[0] }}", v, DK_ERR_FORMAT, "line 1, column 5");
}

TEST(chat_template, string_methods)
{
    CHECK_RENDER("{{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hello'.capitalize() }}", NULL,
                 "HELLO hello Hello World Hello");
    CHECK_RENDER("[{{ '  x \\n'.strip() }}] [{{ '\\n\\nx\\n'.lstrip('\\n') }}] [{{ ' x '.rstrip() }}]", NULL, "[x] [x\n] [ x]");
    CHECK_RENDER("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'abc'.startswith('b') }}", NULL, "true true false");
    CHECK_RENDER("{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.split(none, 1) }}", NULL,
                 "[\"a\", \"b\", \"\", \"c\"] [\"a\", \"b\"] [\"a\", \"b,c\"] [\"a\", \"b c\"]");
    CHECK_RENDER("{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'ab'.replace('', '-') }}", NULL, "bbb bba -a-b-");
    CHECK_RENDER("{{ 'x</think>y'.split('</think>')[-1] }}", NULL, "y");
    CHECK_FAIL("{{ 'a'.split('') }}", NULL, DK_ERR_FORMAT, "empty separator");
}

TEST(chat_template, filters)
{
    const char *v = "{\"ms\": [{\"role\": \"user\", \"c\": \"a\"}, {\"role\": \"tool\", \"c\": \"b\"}, {\"role\": \"user\", \"c\": \"c\"}],"
                    " \"d\": {\"b\": 2, \"a\": 1}}";
    CHECK_RENDER("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | join(',') }}", v, "a,c");
    CHECK_RENDER("{{ ms | rejectattr('role', 'equalto', 'user') | map(attribute='c') | list }}", v, "[\"b\"]");
    CHECK_RENDER("{{ ms | selectattr('missing', 'undefined') | length }}", v, "0"); /* as HF: a missing attribute never matches */
    CHECK_RENDER("{{ d | items | list }} {{ d | dictsort }} {{ d.keys() }} {{ d.values() }} {{ d.get('a') }} {{ d.get('z', 9) }}", v,
                 "[[\"b\", 2], [\"a\", 1]] [[\"a\", 1], [\"b\", 2]] [\"b\", \"a\"] [2, 1] 1 9");
    CHECK_RENDER("{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ [1, 2, 1] | unique }}", NULL,
                 "[1, 2, 3] [\"A\", \"b\", \"c\"] [3, 2, 1] [1, 2]");
    CHECK_RENDER("{{ [1, 2] | first }} {{ [1, 2] | last }} {{ [1, 2] | reverse }} {{ 'abc' | length }} {{ '\xc3\xa9\xf0\x9f\x98\x80' | length }}", NULL,
                 "1 2 [2, 1] 3 2");
    CHECK_RENDER("{{ ' x ' | trim }}|{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}", NULL, "x|a\n    b\n\n    c|  a\n  b");
    /* trim(chars): code points, from both ends, never through the middle */
    CHECK_RENDER("{{ 'xyhixyx' | trim('xy') }}|{{ '\xc3\xa9" "a\xc3\xa9" "b\xc3\xa9' | trim('\xc3\xa9') }}|{{ 'xx' | trim('x') }}|",
                 NULL, "hi|a\xc3\xa9" "b||");
    CHECK_RENDER("{{ '42' | int }} {{ ' 7x' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} {{ 3.9 | int }} {{ '1.5' | float }} {{ 2 | float }}", NULL,
                 "42 7 0 5 3 1.5 2.0");
    CHECK_RENDER("{{ -3 | abs }} {{ 1 | string }} {{ true | string }} {{ [1] | string }} {{ 'x' | safe }}", NULL, "3 1 true [1] x");
    CHECK_RENDER("{{ u | default('d') }} {{ '' | default('d', true) }} {{ 'v' | default('d') }} {{ u | d('e') }}", NULL, "d d v e");
    CHECK_RENDER("{{ 'HeLLo' | upper }} {{ 'HeLLo' | lower }} {{ 'a b' | title }} {{ 'ab' | capitalize }} {{ 'ab' | join('-') }}", NULL,
                 "HELLO hello A B Ab a-b");
    CHECK_RENDER("{{ 'a<b&\"' | e }} {{ [1, 2, 3] | select('odd') | list }} {{ ['a', 'b'] | map('upper') | join }} {{ 2.567 | round(2) }}", NULL,
                 "a&lt;b&amp;&#34; [1, 3] AB 2.57");
    CHECK_FAIL("{{ 1 | upper }}", NULL, DK_ERR_FORMAT, "unknown filter 'upper'");
    CHECK_FAIL("{{ none | length }}", NULL, DK_ERR_FORMAT, "cannot apply filter 'length'");
}

TEST(chat_template, tojson)
{
    const char *v = "{\"o\": {\"name\": \"f\", \"args\": {\"q\": \"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\\u0001\", \"n\": 1.0, \"x\": 0.5,"
                    " \"z\": null, \"l\": [], \"e\": {}, \"10\": 1, \"2\": 2}}}";
    CHECK_RENDER("{{ o | tojson }}", v,
                 "{\"name\": \"f\", \"args\": {\"2\": 2, \"10\": 1, \"q\": \"a\\\"b\\\\c\\n\xc3\xa9\xf0\x9f\x98\x80\\u0001\", \"n\": 1, \"x\": 0.5,"
                 " \"z\": null, \"l\": [], \"e\": {}}}");
    CHECK_RENDER("{{ {'a': [1, {'b': none}], 'c': {}} | tojson(indent=2) }}", NULL,
                 "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": {}\n}");
    CHECK_RENDER("{{ '\xc3\xa9\xf0\x9f\x98\x80' | tojson(ensure_ascii=true) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", NULL,
                 "\"\\u00e9\\ud83d\\ude00\" {\"a\": 2, \"b\": 1}");
    CHECK_RENDER("{{ [1, 2] | tojson(separators=(',', ':')) }} {{ u | tojson }} {{ [u] | string }}", NULL, "[1,2] null [undefined]");
    CHECK_FAIL("{{ range | tojson }}", NULL, DK_ERR_FORMAT, "cannot convert a function to JSON");
}

TEST(chat_template, tests)
{
    CHECK_RENDER("{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 1 is not none }} {{ 'a' is string }}", NULL,
                 "false true true true true");
    CHECK_RENDER("{{ 1 is number }} {{ 1.5 is integer }} {{ true is boolean }} {{ {} is mapping }} {{ [] is iterable }} {{ {} is iterable }}", NULL,
                 "true false true true true false");
    CHECK_RENDER("{{ 3 is odd }} {{ 4 is even }} {{ false is false }} {{ 1 is true }} {{ 'ab' is lower }} {{ 'AB' is upper }}", NULL,
                 "true true true false true true");
    CHECK_RENDER("{{ 9 is divisibleby(3) }} {{ 2 is in([1, 2]) }} {{ range is callable }} {{ 'a' is sequence }}", NULL, "true true true true");
    CHECK_FAIL("{{ 1.5 is odd }}", NULL, DK_ERR_FORMAT, "odd");
    CHECK_FAIL("{{ 1 is frobnicated }}", NULL, DK_ERR_FORMAT, "unknown test 'frobnicated'");
}

TEST(chat_template, loops)
{
    CHECK_RENDER("{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}|{% endfor %}", NULL,
                 "103truefalse|212falsefalse|321falsetrue|");
    CHECK_RENDER("{% for x in ['a', 'b'] %}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}", NULL, "2b;2a;");
    CHECK_RENDER("{% for x in [] %}x{% else %}empty{% endfor %}{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.index }}{% endfor %}", NULL,
                 "empty2142");
    CHECK_RENDER("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'x': 1} %}{{ k }}{% endfor %}", NULL,
                 "a=1;b=2;x");
    /* HF drops the output of the iteration a break or continue interrupts */
    CHECK_RENDER("{% for x in [1, 2, 3] %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% endfor %}", NULL, "1");
    CHECK_RENDER("{% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}", NULL, "13");
    CHECK_RENDER("{% for x in [1] %}{% set y = x %}{% endfor %}[{{ y }}]{% for i in range(3) %}{{ i }}{% endfor %}{{ range(1, 7, 2) }}", NULL,
                 "[]012[1, 3, 5]");
    CHECK_FAIL("{% for x in 'abc' %}{% endfor %}", NULL, DK_ERR_FORMAT, "cannot loop over a string");
    CHECK_FAIL("{% for a, b in [[1, 2, 3]] %}{% endfor %}", NULL, DK_ERR_FORMAT, "too many items to unpack");
    CHECK_FAIL("{% break %}", NULL, DK_ERR_FORMAT, "outside of a loop");
}

TEST(chat_template, assignments_and_macros)
{
    CHECK_RENDER("{% set x = 1 %}{% set a, b = 2, 3 %}{{ x }}{{ a }}{{ b }}{% set s %}  in {{ x }} {% endset %}[{{ s }}]", NULL, "123[  in 1 ]");
    CHECK_RENDER("{% set ns = namespace(found=false, n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}{{ ns.found }}",
                 NULL, "3false");
    CHECK_RENDER("{% if true %}{% set g = 'global' %}{% endif %}{{ g }}{{ namespace({'a': 1}, b=2) }}", NULL, "global{\"a\": 1, \"b\": 2}");
    CHECK_RENDER("{% macro m(a, b='B', c=a ~ '!') %}<{{ a }}{{ b }}{{ c }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m('x', c='C') }}", NULL,
                 "<1B1!><121!><xBC>");
    CHECK_RENDER("{% filter upper %}shout {{ 'this' }}{% endfilter %}", NULL, "SHOUT THIS");
    CHECK_FAIL("{% set x.y = 1 %}", NULL, DK_ERR_FORMAT, "namespace");
    CHECK_FAIL("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", NULL, DK_ERR_FORMAT, "takes not more than 1");
    CHECK_FAIL("{% macro m(a) %}{% endmacro %}{{ m(z=1) }}", NULL, DK_ERR_FORMAT, "no keyword argument 'z'");
}

TEST(chat_template, whitespace_control)
{
    /* trim_blocks + lstrip_blocks, HF's preprocessing */
    CHECK_RENDER("a\n  {% if true %}\n  b\n  {% endif %}\nc\n", NULL, "a\n  b\nc");
    CHECK_RENDER("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    CHECK_RENDER("x  {{- 'y' -}}  \n z {#- comment -#} w", NULL, "xyzw");
    CHECK_RENDER("{# a comment #}k{{ 'v' }}\n\n", NULL, "kv\n");
    CHECK_RENDER("{%- for x in [1, 2] %}\n{{ x }}\n{%- endfor %}", NULL, "12");
    CHECK_RENDER("a {% generation %} b {% endgeneration %} c|{%- generation -%} d {%- endgeneration %}|", NULL, "a  b  c|d|");
    CHECK_RENDER("\xc2\xa0\xe3\x80\x80x {%- if true %}y{% endif %}", NULL, "\xc2\xa0\xe3\x80\x80xy");
    CHECK_RENDER("  \xe3\x80\x80 {%- if true %}y{% endif %}", NULL, "y"); /* JavaScript's trimEnd knows U+3000 */
}

TEST(chat_template, syntax_errors_have_positions)
{
    char *out;
    char err[DK_ERRLEN];
    CHECK_EQ_INT(render_vars("ab\n  {{ 'x' + }}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "line 2, column 12: unexpected token") != NULL, "%s", err);
    CHECK_EQ_INT(render_vars("{% if x %}\nno end", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "line 2, column 7: unexpected end of template, expected {% endif %}") != NULL, "%s", err);
    CHECK_EQ_INT(render_vars("\xc3\xa9\xc3\xa9{{ \"unterminated }}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "line 1, column 6: unterminated string") != NULL, "%s", err);
    CHECK_EQ_INT(render_vars("{% frobnicate %}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "line 1, column 4: unknown statement 'frobnicate'") != NULL, "%s", err);
    CHECK_EQ_INT(render_vars("{{ 'a\\q' }}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_EQ_INT(render_vars("{{ x $ y }}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "unexpected character: $") != NULL, "%s", err);
    CHECK_EQ_INT(render_vars("{# never closed", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_EQ_INT(render_vars("{{ f(a=1, 2) }}", NULL, &out, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "positional argument after keyword") != NULL, "%s", err);
}

TEST(chat_template, raise_exception_and_runtime_positions)
{
    CHECK_FAIL("line one\n{%- if true %}{{ raise_exception('Roles must alternate!') }}{% endif %}", NULL, DK_ERR_FORMAT,
               "line 2, column 18: Roles must alternate!");
    CHECK_FAIL("{{ undefined_fn() }}", NULL, DK_ERR_FORMAT, "cannot call a undefined");
}

TEST(chat_template, strftime_now)
{
    char *out;
    char err[DK_ERRLEN];
    REQUIRE(render_vars("{{ strftime_now('%Y-%m-%d %%') }}|{{ strftime_now('%d %b %Y') }}", NULL, &out, err) == DK_OK);
    CHECK_EQ_INT(strlen(out), 12 + 1 + 11);
    CHECK(out[4] == '-' && out[7] == '-' && out[10] == ' ' && out[11] == '%' && out[12] == '|');
    dk_free(out);
}

TEST(chat_template, limits)
{
    CHECK_FAIL("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", NULL, DK_ERR_LIMIT, "loop iterations");
    CHECK_FAIL("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", NULL, DK_ERR_LIMIT, "nested deeper");
    CHECK_FAIL("{{ range(100000000) }}", NULL, DK_ERR_LIMIT, "range()");
    CHECK_FAIL("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", NULL,
               DK_ERR_LIMIT, "");
    /* Deep nesting fails cleanly instead of exhausting the stack. */
    dk_buf deep = {0};
    for (int i = 0; i < 5000; i++) dk_buf_putc(&deep, '(');
    char *out;
    char err[DK_ERRLEN];
    CHECK_EQ_INT(render_vars(deep.data, NULL, &out, err), DK_OK); /* plain text: no tags */
    CHECK_EQ_INT(strlen(out), 5000);
    dk_free(out);
    dk_buf_clear(&deep);
    dk_buf_puts(&deep, "{{ ");
    for (int i = 0; i < 5000; i++) dk_buf_putc(&deep, '(');
    CHECK_EQ_INT(render_vars(deep.data, NULL, &out, err) == DK_OK ? 0 : 1, 1);
    CHECK_MSG(strstr(err, "nesting deeper") != NULL, "%s", err);
    dk_buf_clear(&deep);
    dk_buf_puts(&deep, "{{ 1");
    for (int i = 0; i < 20000; i++) dk_buf_puts(&deep, " + 1");
    dk_buf_puts(&deep, " }}");
    CHECK_EQ_INT(render_vars(deep.data, NULL, &out, err), DK_ERR_LIMIT);
    CHECK_MSG(strstr(err, "nested too deeply") != NULL, "%s", err);
    dk_buf_free(&deep);
}

static const char *const conversation_vars =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi \\u00e9\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\","
    "   \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"18 C\"},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c2\", \"content\": \"19 C\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}],"
    " \"add_generation_prompt\": true}";

TEST(chat_template, builtin_chatml)
{
    CHECK_RENDER(chat_template_chatml(), conversation_vars,
                 "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                 "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
                 "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}\n</tools>\n\n"
                 "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
                 "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
                 "<|im_start|>user\nHi \xc3\xa9<|im_end|>\n"
                 "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"
                 "<|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n<tool_response>\n19 C\n</tool_response><|im_end|>\n"
                 "<|im_start|>assistant\n");
    CHECK_RENDER(chat_template_chatml(),
                 "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"image\"},"
                 " {\"type\": \"text\", \"text\": \"b\"}]}, {\"role\": \"assistant\", \"content\": \"ok\"}]}",
                 "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n");
}

/* The Qwen 3 template's thinking logic (an excerpt of the real one). */
TEST(chat_template, qwen3_excerpt)
{
    const char *src =
        "{%- for message in messages %}\n"
        "    {%- if message.role == \"assistant\" %}\n"
        "        {%- set content = message.content %}\n"
        "        {%- if '</think>' in message.content %}\n"
        "            {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
        "        {%- endif %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}\n"
        "    {%- else %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|im_start|>assistant\\n' }}\n"
        "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
        "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endif %}\n";
    CHECK_RENDER(src,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"<think>r</think>\\n\\nA\"}],"
                 " \"add_generation_prompt\": true, \"enable_thinking\": false}",
                 "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(chat_template, extra_overrides_and_tokens)
{
    CHECK_RENDER("{{ bos_token }}|{{ eos_token }}|{{ tools }}|{{ add_generation_prompt }}|{{ messages | length }}",
                 "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}", "<s>|</s>||false|0");
    CHECK_RENDER("{{ add_generation_prompt }} {{ custom }}", "{\"add_generation_prompt\": true, \"custom\": [1]}", "true [1]");
}

TEST(chat_template, template_reuse_and_null_args)
{
    chat_template *t = NULL;
    char err[DK_ERRLEN];
    REQUIRE(chat_template_parse(&t, "{{ messages[0].content }}!", 26, err) == DK_OK);
    json_t *m = json_loads("[{\"role\": \"user\", \"content\": \"x\"}]", 0, NULL);
    chat_render_params p = {.messages = m};
    dk_buf b = {0};
    dk_buf_puts(&b, "pre:");
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(chat_template_render(t, &p, &b, err), DK_OK);
    CHECK_EQ_STR(b.data, "pre:x!x!x!");
    CHECK_EQ_INT(chat_template_render(t, NULL, &b, err), DK_ERR_ARG);
    json_t *notarray = json_object();
    p.messages = notarray;
    CHECK_EQ_INT(chat_template_render(t, &p, &b, err), DK_ERR_ARG);
    CHECK_EQ_STR(b.data, "pre:x!x!x!");
    json_decref(notarray);
    json_decref(m);
    dk_buf_free(&b);
    chat_template_free(t);
    chat_template_free(NULL);
    /* a failed render leaves the buffer as it was */
    REQUIRE(chat_template_parse(&t, "abc{{ raise_exception('no') }}", 30, err) == DK_OK);
    chat_render_params q = {0};
    dk_buf c = {0};
    dk_buf_puts(&c, "keep");
    CHECK_EQ_INT(chat_template_render(t, &q, &c, err), DK_ERR_FORMAT);
    CHECK_EQ_STR(c.data, "keep");
    dk_buf_free(&c);
    chat_template_free(t);
}

/* Every allocation of a parse and a render can fail; each failure must be reported (no crash,
 * no leak under ASan), and with no failure injected the result is the normal one. */
TEST(chat_template, allocation_failures)
{
    const char *src = chat_template_chatml();
    json_t *vars = json_loads(conversation_vars, 0, NULL);
    REQUIRE(vars);
    int n_ok = 0, n_fail = 0;
    for (long n = 0; n < 400; n++) {
        char err[DK_ERRLEN];
        chat_template *t = NULL;
        dk_buf b = {0};
        dk_alloc_fail_after(n);
        int rc = chat_template_parse(&t, src, strlen(src), err);
        if (rc == DK_OK) {
            chat_render_params p = {.messages = json_object_get(vars, "messages"), .tools = json_object_get(vars, "tools"),
                                    .add_generation_prompt = true};
            rc = chat_template_render(t, &p, &b, err);
        }
        dk_alloc_fail_after(-1);
        CHECK_MSG(rc == DK_OK || rc == DK_ERR_NOMEM, "n=%ld: rc %d: %s", n, rc, err);
        if (rc == DK_OK) {
            n_ok++;
            CHECK(b.len > 100);
        } else {
            n_fail++;
        }
        dk_buf_free(&b);
        chat_template_free(t);
    }
    CHECK(n_fail > 5);
    CHECK(n_ok > 0);
    json_decref(vars);
}
