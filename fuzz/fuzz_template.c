/*
 * fuzz_template.c: fuzz target for the chat-template interpreter (chat_template_parse and
 * chat_template_render).
 *
 * The input is a template source. If it parses, it is rendered with a small fixed
 * conversation (system, user, an assistant tool call, a tool result; tools; enable_thinking),
 * with and without the generation prompt, so that whatever the parser accepts is also run
 * through the evaluator and its limits. Not a test of the output itself.
 */
#include "fuzz.h"

#include <string.h>

#include "chat/chat.h"

static const char fuzz_conversation[] =
    "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Weather in Paris? \\u00e9\\u6771 \\ud83d\\ude00\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call12345\", \"type\": \"function\","
    "   \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 1.5, \"2\": [true, null]}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"18 C\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nok\\n</think>\\n\\nIt is 18 C.\", \"reasoning_content\": \"r\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Thanks\"}, {\"type\": \"image\"}]}]";

static const char fuzz_tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather.\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}]";

int fuzz_template_one(const uint8_t *data, size_t size)
{
    char err[DK_ERRLEN];
    chat_template *tmpl = NULL;
    if (chat_template_parse(&tmpl, (const char *)data, size, err) != DK_OK) return 0;
    json_t *messages = json_loads(fuzz_conversation, 0, NULL);
    json_t *tools = json_loads(fuzz_tools, 0, NULL);
    json_t *extra = json_pack("{s:b}", "enable_thinking", 0);
    for (int gen = 0; gen < 2 && messages && tools && extra; gen++) {
        chat_render_params p = {
            .messages = messages,
            .tools = gen ? tools : NULL,
            .add_generation_prompt = gen,
            .bos_token = "<s>",
            .eos_token = "</s>",
            .extra = extra,
        };
        dk_buf out = {0};
        (void)chat_template_render(tmpl, &p, &out, err);
        dk_buf_free(&out);
    }
    json_decref(messages);
    json_decref(tools);
    json_decref(extra);
    chat_template_free(tmpl);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_template_one(data, size); }
#endif
