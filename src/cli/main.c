/*
 * main.c: the duckling command: parses the subcommand and hands off to its cli_* function;
 * `duckling --help`, `duckling help CMD` and `duckling CMD --help` print usage text.
 * Exit status 0 on success; on error one line on stderr and a non-zero status.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *usage;
} cli_command;

static const cli_command commands[] = {
    {"run", cli_run, "generate text with a model (one prompt, or an interactive chat), locally or through a running server",
     "usage: duckling run MODEL [PROMPT] [options]\n"
     "  Without PROMPT, an interactive chat (/? lists its commands; \"\"\" opens a multi-line message).\n"
     "  Uses the server at $DUCKLING_HOST/$OLLAMA_HOST (default 127.0.0.1:11434) when one answers.\n"
     "  --local                load the model here even when a server answers\n"
     "  --host URL             use this server (it must answer)\n"
     "  --keepalive DURATION   the server's keep_alive for the model (5m, 1h, -1)\n"
     "  --system TEXT          system message (chat mode)\n"
     "  --raw                  no chat template: tokenize PROMPT as it is (BOS as the vocab says)\n"
     "  --format json|FILE     JSON mode, or a JSON schema (file or inline), enforced by grammar\n"
     "  --tools FILE.json      tools the model may call; calls are printed as JSON lines\n"
     "  --tool-choice C        auto (default), none, required, or a tool's name\n"
     "  --think, --no-think    reasoning on / off (default: the template's); --hide-thinking\n"
     "  --temperature F        0 = greedy (default 0.8)\n"
     "  --top-k N              (default 40, 0 = off)\n"
     "  --top-p F              (default 0.9, 1 = off)\n"
     "  --min-p F              (default 0 = off)\n"
     "  --repeat-penalty F     (default 1 = off)\n"
     "  --repeat-last-n N      tokens the penalties look back on (default 64, -1 = all)\n"
     "  --presence-penalty F, --frequency-penalty F   (default 0)\n"
     "  --seed N               random seed (default: random)\n"
     "  -n, --num-predict N    tokens to generate at most (default -1: until end or full context)\n"
     "  --stop TEXT            stop string, repeatable; not printed\n"
     "  --ctx N                context length (default: the model's, at most 4096)\n"
     "  --threads N            threads (default: all cores)\n"
     "  --verbose              print timings to stderr after the answer\n"
     "  --exact                reference numerics: F32 math on dequantized weights, F32 KV cache\n"
     "                         (default: int8 activations and an F16 KV cache, as llama.cpp)\n"},
    {"logits", cli_logits, "print the top logits of every position of a token sequence",
     "usage: duckling logits MODEL --tokens 1,2,3 [--top 10] [--json] [--gen N | --force 4,5,6]\n"
     "  Evaluates the ids in one batch and prints, per position, the top (id, logit) pairs,\n"
     "  highest first (ties: lower id first). --gen N then decodes N greedy tokens one at a time;\n"
     "  --force feeds the given ids one at a time instead; both add their positions.\n"
     "  --json prints {\"n_vocab\": N, \"positions\": [[[id, logit], ...], ...]}.\n"
     "  The logits are the reference numerics (F32 math on dequantized weights, F32 KV cache);\n"
     "  --fast gives those of run (int8 activations, F16 KV cache).\n"
     "  Also: --ctx N, --threads N.\n"},
    {"tokenize", cli_tokenize, "print the token ids of a text",
     "usage: duckling tokenize MODEL (TEXT | --file F) [--json] [--parse-special] [--add-special]\n"
     "  One line of ids separated by spaces, or a JSON array with --json. By default special\n"
     "  token texts are plain text and no BOS/EOS is added. Vocab-only GGUFs are fine.\n"},
    {"embed", cli_embed, "print normalised embeddings of texts",
     "usage: duckling embed MODEL TEXT... [--no-truncate] [--threads N] [--exact]\n"
     "  Prints one JSON array of L2-normalised vectors, one per TEXT. A text longer than the model's\n"
     "  context is cut to it (--no-truncate: an error instead). --exact: reference numerics.\n"},
    {"bench", cli_bench, "measure prompt (pp) and generation (tg) tokens/s, as llama-bench does",
     "usage: duckling bench MODEL [-p 512] [-n 128] [-d 0] [-t THREADS] [-r 5] [-b 512] [--json] [--exact]\n"
     "  -p N   prompt tokens per pp test (0 = none)      -n N   tokens generated per tg test (0 = none)\n"
     "  -d N   context depth: N tokens evaluated (untimed) before each repetition\n"
     "  -t N   threads (default: all cores)              -r N   repetitions (default 5)\n"
     "  -b N   prompt batch size (default 512)\n"
     "  --json one object per test: avg_ts, stddev_ts, samples_ts, avg_ns, ... (llama-bench's fields)\n"
     "  --exact  the reference numerics instead of the fast ones\n"
     "  One warmup run per test; each repetition starts from an empty KV cache. Random tokens.\n"},
    {"synth", cli_synth, "write a random-weight GGUF model with real shapes",
     "usage: duckling synth --preset NAME --quant TYPE --out F.gguf [--seed S] [--layers N]\n"
     "                      [--vocab-from TOKENIZER.gguf] [--threads N] | --list\n"},
    {"quantize", cli_quantize, "convert a GGUF model between tensor types",
     "usage: duckling quantize IN.gguf OUT.gguf TYPE\n"
     "  TYPE: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q3_K_M Q4_K_S Q4_K_M Q5_K_S Q5_K_M\n"},
    {"render", cli_render, "print the prompt a chat template makes of a conversation",
     "usage: duckling render (MODEL.gguf | --template FILE.jinja | --config tokenizer_config.json)\n"
     "                       MESSAGES.json [--tools TOOLS.json] [--no-generation-prompt]\n"
     "                       [--var KEY=JSON ...] [--bos TEXT] [--eos TEXT]\n"
     "  MESSAGES.json: an array of messages, or {\"messages\": [...], \"tools\": [...],\n"
     "  \"add_generation_prompt\": BOOL, ...extra variables}. Prints the prompt exactly.\n"},
    {"serve", cli_serve, "serve the Ollama and OpenAI HTTP APIs",
     "usage: duckling serve [--host 127.0.0.1] [--port 11434] [--parallel N] [--ctx N] [--threads N] [--quiet]\n"
     "  --parallel N   sessions per model, their generations batched together (default 4)\n"
     "  --ctx N        context of each session (default 4096, at most the model's)\n"
     "  Also configured by DUCKLING_HOST (or OLLAMA_HOST) as HOST[:PORT] or http://HOST:PORT.\n"
     "  See docs/api.md for the endpoints and the environment variables.\n"},
    {"pull", cli_pull, "download a model from a registry",
     "usage: duckling pull NAME [--insecure]\n"
     "  NAME: MODEL[:TAG], NS/MODEL[:TAG], hf.co/USER/REPO[:QUANT] or HOST[:PORT]/NS/MODEL[:TAG].\n"
     "  Resumes an interrupted download; every blob is sha256-verified.\n"},
    {"list", cli_list, "list the models in the store", "usage: duckling list\n"},
    {"ps", cli_ps, "list the models the running server has loaded", "usage: duckling ps [--host URL]\n"},
    {"show", cli_show, "show a model's information",
     "usage: duckling show MODEL [--modelfile | --template | --parameters | --system | --license]\n"},
    {"rm", cli_rm, "remove models from the store", "usage: duckling rm MODEL...\n"},
    {"cp", cli_cp, "copy a model to a new name", "usage: duckling cp SOURCE DESTINATION\n"},
    {"create", cli_create, "create a model from a Modelfile",
     "usage: duckling create NAME [-f Modelfile] [--quantize TYPE]\n"
     "  Modelfile instructions: FROM (a model or a GGUF path), PARAMETER, TEMPLATE, SYSTEM,\n"
     "  MESSAGE, LICENSE. Default file: ./Modelfile.\n"},
    {"ask", cli_ask, "ask a question about a DuckDB database (the SQL agent) or about documents",
     "usage: duckling ask (--db FILE.duckdb | --docs STORE.duckdb) [--model M] [--escalate-to URL_OR_MODEL]\n"
     "                    [options] QUESTION\n"
     "  The model writes SQL (run_sql / describe_table tools), duckling runs it read-only,\n"
     "  feeds back results or errors, and the model answers. Prints the SQL, the result and\n"
     "  the answer; --json prints one object with sql, rows, answer, model, steps, usage.\n"
     "  --db FILE            a .duckdb file (opened read-only), or a .csv/.parquet/.json file (a view)\n"
     "  --model M            the model: a .gguf path, a store name, or an endpoint URL[#MODEL]\n"
     "                       (default $DUCKLING_ASK_MODEL)\n"
     "  --escalate-to M      a larger model (same forms) for when the small one fails\n"
     "  --escalate           ask the larger model at once\n"
     "  --min-confidence P   escalate when the SQL's mean token probability is below P (default 0.5\n"
     "                       with --escalate-to, else off)\n"
     "  --api-key KEY        for endpoints (default $DUCKLING_API_KEY, then $OPENAI_API_KEY)\n"
     "  --max-repairs N      SQL attempts after a failing one (default 2)\n"
     "  --max-rows N         rows of a result shown to the model (default 100)\n"
     "  --timeout MS         time limit of one query (default 10000)\n"
     "  --ctx N, --threads N, --temperature T, --seed N, -n/--num-predict N (per turn)\n"
     "  --json               one JSON object on stdout\n"
     "  --verbose            every step on stderr as it happens\n"
     "  --docs STORE         a retrieval store (duckling ingest): alone, answer from the documents\n"
     "                       with numbered sources; with --db, the agent also gets a search_docs tool\n"
     "  -k N                 passages retrieved (default 5)\n"
     "  --mode M             hybrid (default), vector or keyword; --exact: exact vector search\n"
     "  --rerank-model M     a cross-encoder that reorders the retrieved passages\n"
     "  --embed-model M      the query's embedding model (default: the one the store was built with)\n"
     "  --source PATH, --path GLOB, --after DATE, --before DATE (YYYY-MM-DD)   search filters\n"},
    {"ingest", cli_ingest, "read files, directories and DuckDB tables into a retrieval store",
     "usage: duckling ingest --into STORE.duckdb [--model EMBED] [options] PATH...\n"
     "  Reads text, Markdown, HTML, CSV, TSV, Parquet, JSON/JSONL files (directories recursively)\n"
     "  and DuckDB tables (FILE.duckdb for all, FILE.duckdb:TABLE for one), splits them into\n"
     "  chunks along headings and paragraphs, embeds them and stores everything in STORE.duckdb.\n"
     "  Unchanged sources (same content hash) are skipped; changed ones re-embed only new chunks.\n"
     "  --into STORE         the store (created if missing)\n"
     "  --model EMBED        embedding model: a .gguf path or a store name (default: the model the\n"
     "                       store was built with, then $DUCKLING_EMBED_MODEL)\n"
     "  --chunk-tokens N     tokens per chunk at most (default 256)\n"
     "  --overlap N          tokens repeated from the previous chunk (default 32)\n"
     "  --batch N            chunks per embedding batch (default 32)\n"
     "  --threads N          threads of the model and of the index build\n"
     "  --json               the summary as one JSON object; --quiet: no progress\n"},
    {"sql", cli_sql, "a DuckDB shell with prompt(), embed() and prompt_sql() as SQL functions",
     "usage: duckling sql [FILE.duckdb] [QUERY] [options]\n"
     "  Opens FILE read-write (created if missing; in memory without FILE). With QUERY, runs its\n"
     "  statements and prints every result; without, an interactive shell (statements end with ';',\n"
     "  .help lists the dot commands), or the statements piped on stdin.\n"
     "  prompt(text [, model := M] [, format := 'json'|SCHEMA]), embed(text [, model := M]) and\n"
     "  prompt_sql(question) call models, loaded on first use.\n"
     "  --model M            model of prompt()/prompt_sql(): a .gguf path or a store name ($DUCKLING_SQL_MODEL)\n"
     "  --embed-model E      model of embed() (default: --model when it is an embedding model)\n"
     "  --read-only          open FILE read-only\n"
     "  --json               each result as one line of JSON rows\n"
     "  -n, --num-predict N  tokens per answer at most (default 256)\n"
     "  --temperature T      (default 0: greedy); --seed N\n"
     "  --parallel N         rows generated together per model (default 8)\n"
     "  --ctx N              context per row (default min(model's, 2048)); --threads N\n"},
    {"convert-tokenizer", cli_convert_tokenizer, "make a vocab-only GGUF from a tokenizer",
     "usage: duckling convert-tokenizer TOKENIZER.json [TOKENIZER_CONFIG.json] -o OUT.gguf\n"
     "                                  [--arch NAME] [--pad-vocab N]\n"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

const char *cli_usage(const char *cmd)
{
    const cli_command *c = find_command(cmd);
    return c ? c->usage : NULL;
}

static void print_help(void)
{
    printf("usage: duckling COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) printf("  %-18s %s\n", commands[i].name, commands[i].summary);
    printf("  %-18s %s\n", "help COMMAND", "usage of one command");
    printf("\nMODEL is a path to a .gguf file. See docs/cli.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help();
        return 1;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_help();
        return 0;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            print_help();
            return 0;
        }
        const char *usage = cli_usage(argv[2]);
        if (!usage) return cli_error("help", "unknown command '%s'", argv[2]);
        fputs(usage, stdout);
        return 0;
    }
    const cli_command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "duckling: unknown command '%s' (see duckling --help)\n", name);
        return 1;
    }
    if (argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        fputs(c->usage, stdout);
        return 0;
    }
    return c->fn(argc - 1, argv + 1);
}
