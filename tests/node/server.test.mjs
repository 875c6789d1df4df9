// server.test.mjs: acceptance tests of `duckling serve` with the real client libraries, the
// npm packages `ollama` (0.6.3) and `openai` (5.23.2), used unchanged against a server
// started here on a free loopback port, with its own empty stores (DUCKLING_MODELS and
// OLLAMA_MODELS in a temporary folder).
//
// Models: the kit's real stories260K (greedy text known from llama.cpp), its bert-tiny for
// embeddings, its random-weight llama-tiny variants for pulls, and a random-weight tiny
// qwen3 with the real Qwen vocabulary and chat template (`duckling synth --preset
// qwen-vocab-tiny`) for tools, formats and thinking: its text is noise, only structure can
// be checked there. Models enter the store through the API (create from a GGUF path, create
// from uploaded blobs, pull from the registry stand-in of registry.mjs, which speaks the
// Ollama registry protocol and can cut a transfer or corrupt a blob).
//
// Covered: Ollama's generate/chat (streamed and not, options, format, tools, think), embed,
// embeddings, tags, show, ps, keep_alive, copy, delete, create, blobs, pull, version,
// errors and aborted streams; OpenAI's chat completions (stream, tools, tool_choice,
// response_format, logprobs, usage), completions, embeddings, models and errors; streams
// from both clients at once; `duckling run` through DUCKLING_HOST; a clean shutdown.
//
// Run: bash tests/node/setup.sh && node --test tests/node/server.test.mjs (or `make
// test-node`). DUCKLING_BIN selects the binary (default build/duckling), DUCKLING_KIT the
// kit (default ../shared/kit). Skipped (with the reason) when `serve` is not built yet.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Ollama } from 'ollama';
import { Ollama as BrowserOllama } from 'ollama/browser';
import OpenAI from 'openai';

import { bin, kitFile, tempDir, startServer, runCommand, collect, ndjson, sse, norm, maxAbsDiff, cosine,
         validate, sleep } from './helpers.mjs';
import { startRegistry, sha256, MANIFEST_TYPE } from './registry.mjs';

const STORIES = kitFile('forward/stories260K/stories260K.F32.gguf');
const BERT = kitFile('forward/bert-tiny/bert-tiny.F32.gguf');
const LLAMA_TINY = (t) => kitFile(`forward/llama-tiny/llama-tiny.${t}.gguf`);
const QWEN_VOCAB = kitFile('tokenizer/ggml-vocab-qwen2.gguf');
// llama.cpp's greedy continuation of "Once upon a time" with stories260K (kit README, 3).
const STORIES_GREEDY = ', there was a little girl named Lily. She loved to play outside in the park. One day,';

const GREEDY = { temperature: 0, num_predict: 30 };
const CHAT = [{ role: 'user', content: 'Once upon a time' }];

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 },
      unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city'], additionalProperties: false } } },
  { type: 'function', function: { name: 'add', description: 'Adds numbers',
    parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 999 },
      b: { type: 'integer', minimum: -5, maximum: 5 } }, required: ['a', 'b'], additionalProperties: false } } },
];
const toolSchema = (name) => TOOLS.find((t) => t.function.name === name)?.function.parameters;
// Bounded outputs, so that greedy or sampled generation finishes within num_predict.
const PERSON = { type: 'object', properties: { name: { type: 'string', maxLength: 10 },
  mood: { enum: ['happy', 'sad'] }, age: { type: 'integer', minimum: 0, maximum: 99 }, tall: { type: 'boolean' } },
  required: ['name', 'mood', 'age', 'tall'], additionalProperties: false };

// ---- the server (started once; every suite below uses it) ----
let skipReason = false;
if (!fs.existsSync(bin)) skipReason = `${bin} is not built`;
else {
  const probe = await runCommand(bin, ['serve', '--port', 'x'], { timeoutMs: 10000 });
  if (/not built yet/.test(probe.stderr)) skipReason = '`duckling serve` is not built yet';
}
for (const f of [STORIES, BERT, LLAMA_TINY('Q8_0'), QWEN_VOCAB]) {
  if (!skipReason && !fs.existsSync(f)) skipReason = `kit file ${f} is missing (DUCKLING_KIT)`;
}

const tmp = tempDir('duckling-server-test-');
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let server = null, ollama = null, openai = null, reg = null;
const QWEN = path.join(tmp, 'qwen-vocab-tiny.gguf');

before(async () => {
  if (skipReason) return;
  const synth = await runCommand(bin, ['synth', '--preset', 'qwen-vocab-tiny', '--quant', 'Q8_0', '--seed', '7',
    '--vocab-from', QWEN_VOCAB, '--out', QWEN], { timeoutMs: 60000 });
  if (synth.code !== 0) throw new Error(`synth: ${synth.stderr}`);
  // One forward-pass thread: on a busy 2-core machine a second one makes every step wait.
  server = await startServer({ env: { DUCKLING_NUM_PARALLEL: '4' }, args: ['--threads', '1'] });
  ollama = new Ollama({ host: server.url });
  openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60000 });
  // The node build of the ollama client refuses a local path in `from` ("not supported from
  // ollama-js"); the browser build sends the request as it is, which is what the API takes.
  const plain = new BrowserOllama({ host: server.url });
  for (const [name, file] of [['stories', STORIES], ['bert', BERT], ['qwen', QWEN]]) {
    const r = await plain.create({ model: name, from: file, stream: false });
    assert.equal(r.status, 'success', `create ${name}`);
  }
});

after(async () => {
  if (reg) await reg.close();
  if (server) await server.stop();
});

const api = (p, init = {}) => fetch(server.url + p, init);
const post = (p, body, init = {}) => api(p, { method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: typeof body === 'string' ? body : JSON.stringify(body), ...init });

async function metric(name) {
  const text = await (await api('/metrics')).text();
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text);
  assert.ok(m, `/metrics has ${name}`);
  return Number(m[1]);
}

function assertDurations(r, what) {
  for (const k of ['total_duration', 'eval_duration']) {
    assert.ok(Number.isInteger(r[k]) && r[k] > 0, `${what}: ${k} = ${r[k]} is a positive integer (ns)`);
  }
  for (const k of ['load_duration', 'prompt_eval_duration']) {
    assert.ok(Number.isInteger(r[k]) && r[k] >= 0, `${what}: ${k} = ${r[k]} is an integer (ns)`);
  }
  assert.ok(r.total_duration >= r.eval_duration, `${what}: total_duration >= eval_duration`);
  assert.ok(r.eval_count > 0 && Number.isInteger(r.eval_count), `${what}: eval_count ${r.eval_count}`);
  assert.ok(r.prompt_eval_count > 0, `${what}: prompt_eval_count ${r.prompt_eval_count}`);
}

const hasServer = () => (skipReason ? { skip: skipReason } : { timeout: 120000 });

// ---- the stand-in itself (no server needed) ----
describe('registry stand-in', fs.existsSync(STORIES) ? { timeout: 30000 } : { skip: 'no kit' }, () => {
  test('serves manifests and blobs with digests, ranges, faults and 404s', async () => {
    const r = await startRegistry();
    try {
      const m = r.addModel('library/tiny:latest', { gguf: STORIES, template: '{{ messages }}', params: { temperature: 0 } });
      const res = await fetch(`${r.url}/v2/library/tiny/manifests/latest`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), MANIFEST_TYPE);
      const manifest = await res.json();
      assert.equal(manifest.schemaVersion, 2);
      assert.deepEqual(manifest.layers.map((l) => l.mediaType),
        ['application/vnd.ollama.image.model', 'application/vnd.ollama.image.template', 'application/vnd.ollama.image.params']);
      const file = fs.readFileSync(STORIES);
      assert.equal(manifest.layers[0].digest, sha256(file));
      assert.equal(manifest.layers[0].size, file.length);
      const cfg = await fetch(`${r.url}/v2/library/tiny/blobs/${manifest.config.digest}`);
      assert.equal(sha256(Buffer.from(await cfg.arrayBuffer())), manifest.config.digest);
      const d = m.digests.model;
      const part = await fetch(`${r.url}/v2/library/tiny/blobs/${d}`, { headers: { Range: 'bytes=1000-' } });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get('content-range'), `bytes 1000-${file.length - 1}/${file.length}`);
      assert.ok(Buffer.from(await part.arrayBuffer()).equals(file.subarray(1000)));
      r.cutOnce(d);
      await assert.rejects(async () => (await fetch(`${r.url}/v2/library/tiny/blobs/${d}`)).arrayBuffer());
      const whole = Buffer.from(await (await fetch(`${r.url}/v2/library/tiny/blobs/${d}`)).arrayBuffer());
      assert.equal(sha256(whole), d, 'the cut is for one request only');
      r.corruptOnce(d);
      const bad = Buffer.from(await (await fetch(`${r.url}/v2/library/tiny/blobs/${d}`)).arrayBuffer());
      assert.equal(bad.length, file.length);
      assert.notEqual(sha256(bad), d);
      r.setRedirects(true);
      const redirected = await fetch(`${r.url}/v2/library/tiny/blobs/${d}`);
      assert.ok(redirected.redirected);
      assert.equal(sha256(Buffer.from(await redirected.arrayBuffer())), d);
      r.setRedirects(false);
      assert.equal((await fetch(`${r.url}/v2/library/nope/manifests/latest`)).status, 404);
      assert.equal((await fetch(`${r.url}/v2/library/tiny/blobs/sha256:${'0'.repeat(64)}`)).status, 404);
      assert.ok(r.blobRequests(d).some((q) => q.range === 'bytes=1000-' && q.status === 206));
    } finally {
      await r.close();
    }
  });
});

// ---- Ollama's API with the ollama client ----
describe('ollama client', hasServer(), () => {
  test('version and GET /', async () => {
    const v = await ollama.version();
    assert.match(v.version, /^\d+\.\d+\.\d+/);
    const root = await api('/');
    assert.equal(root.status, 200);
    assert.match(await root.text(), /running/i);
    const head = await api('/', { method: 'HEAD' });
    assert.equal(head.status, 200);
  });

  test('generate, not streamed: llama.cpp\'s greedy text, counts and durations', async () => {
    const r = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true, stream: false, options: GREEDY });
    assert.equal(r.response, STORIES_GREEDY);
    assert.equal(r.done, true);
    assert.equal(r.done_reason, 'length');
    assert.equal(r.eval_count, 30);
    assert.equal(r.prompt_eval_count, 5, 'BOS + 4 tokens');
    assert.match(r.model, /^stories/);
    assert.ok(!Number.isNaN(Date.parse(r.created_at)), `created_at ${r.created_at}`);
    assertDurations(r, 'generate');
    assert.ok(Array.isArray(r.context) && r.context.length === 35 && r.context[0] === 1, 'context: prompt + output tokens');
  });

  test('generate, streamed: the same text in pieces, done last', async () => {
    const parts = await collect(await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true,
      stream: true, options: GREEDY }));
    assert.ok(parts.length > 5, `${parts.length} pieces`);
    for (const p of parts.slice(0, -1)) assert.equal(p.done, false);
    const last = parts.at(-1);
    assert.equal(last.done, true);
    assert.equal(last.done_reason, 'length');
    assert.equal(parts.map((p) => p.response).join(''), STORIES_GREEDY);
    assert.equal(last.eval_count, 30);
    assertDurations(last, 'streamed generate');
  });

  test('wire formats: NDJSON for /api, SSE for /v1, JSON when not streamed', async () => {
    const nd = await post('/api/generate', { model: 'stories', prompt: 'Once upon a time', raw: true, options: GREEDY });
    assert.match(nd.headers.get('content-type'), /application\/x-ndjson/);
    const lines = ndjson(await nd.text());
    assert.equal(lines.map((l) => l.response).join(''), STORIES_GREEDY, 'streamed by default, one object a line');
    assert.equal(lines.filter((l) => l.done).length, 1);
    const ev = await post('/v1/chat/completions', { model: 'stories', messages: CHAT, temperature: 0, max_tokens: 5, stream: true });
    assert.match(ev.headers.get('content-type'), /text\/event-stream/);
    const events = sse(await ev.text());
    assert.equal(events.at(-1), '[DONE]');
    assert.equal(events[0].choices[0].delta.role, 'assistant');
    const plain = await post('/v1/chat/completions', { model: 'stories', messages: CHAT, temperature: 0, max_tokens: 5 });
    assert.match(plain.headers.get('content-type'), /application\/json/);
    assert.equal((await plain.json()).object, 'chat.completion');
  });

  test('generate with the template, and context continues a conversation', async () => {
    const a = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', stream: false, options: GREEDY });
    assert.ok(a.response.length > 0);
    assert.ok(a.prompt_eval_count > 5, 'the chat template wraps the prompt');
    const b = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', stream: false, options: GREEDY });
    assert.equal(b.response, a.response, 'greedy is deterministic');
    const c = await ollama.generate({ model: 'stories', prompt: 'and then', context: a.context, stream: false,
      options: { temperature: 0, num_predict: 8 } });
    assert.ok(c.prompt_eval_count > a.context.length, 'the context is prepended');
    assert.ok(c.context.length > a.context.length);
  });

  test('chat, streamed and not: same greedy text', async () => {
    const r = await ollama.chat({ model: 'stories', messages: CHAT, stream: false, options: GREEDY });
    assert.equal(r.message.role, 'assistant');
    assert.ok(r.message.content.length > 0);
    assert.equal(r.done, true);
    assert.ok(['stop', 'length'].includes(r.done_reason), r.done_reason);
    assertDurations(r, 'chat');
    const parts = await collect(await ollama.chat({ model: 'stories', messages: CHAT, stream: true, options: GREEDY }));
    assert.equal(parts.map((p) => p.message.content).join(''), r.message.content);
    assert.equal(parts.at(-1).done, true);
    assert.equal(parts.at(-1).eval_count, r.eval_count);
    assert.equal(parts.at(-1).done_reason, r.done_reason);
    // A second turn: the whole conversation is the prompt (stories260K holds 128 tokens, so
    // the turns are short here).
    const turn2 = await ollama.chat({ model: 'stories', stream: false, options: { temperature: 0, num_predict: 4 },
      messages: [...CHAT, { role: 'assistant', content: 'Lily ran.' }, { role: 'user', content: 'Next?' }] });
    assert.ok(turn2.message.content.length > 0);
    assert.ok(turn2.prompt_eval_count > r.prompt_eval_count + 10, `${turn2.prompt_eval_count} prompt tokens`);
    // A conversation longer than the context: the oldest turns are dropped, the answer comes.
    const long = [];
    for (let i = 0; i < 6; i++) long.push({ role: 'user', content: `Tell me story number ${i} about a cat.` },
      { role: 'assistant', content: 'The cat sat in the sun and was happy all day long.' });
    long.push({ role: 'user', content: 'The end?' });
    const fitted = await ollama.chat({ model: 'stories', stream: false, messages: long, options: { temperature: 0, num_predict: 4 } });
    assert.ok(fitted.prompt_eval_count < 128, `${fitted.prompt_eval_count} prompt tokens fit the context`);
    assert.ok(fitted.eval_count > 0);
  });

  test('options: num_predict, stop and seed', async () => {
    const five = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true, stream: false,
      options: { temperature: 0, num_predict: 5 } });
    assert.equal(five.eval_count, 5);
    assert.equal(five.done_reason, 'length');
    assert.ok(STORIES_GREEDY.startsWith(five.response));
    const stopped = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true, stream: false,
      options: { temperature: 0, num_predict: 30, stop: ['girl'] } });
    assert.equal(stopped.response, STORIES_GREEDY.slice(0, STORIES_GREEDY.indexOf('girl')));
    assert.equal(stopped.done_reason, 'stop');
    const streamedStop = await collect(await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true,
      stream: true, options: { temperature: 0, num_predict: 30, stop: ['park'] } }));
    assert.equal(streamedStop.map((p) => p.response).join(''), STORIES_GREEDY.slice(0, STORIES_GREEDY.indexOf('park')));
    const sampled = async (seed) => (await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true,
      stream: false, options: { temperature: 1, top_k: 100, seed, num_predict: 24 } })).response;
    const a = await sampled(42);
    assert.equal(await sampled(42), a, 'same seed, same text');
    const others = new Set([a, await sampled(1), await sampled(2), await sampled(3)]);
    assert.ok(others.size >= 2, 'different seeds give different samples');
  });

  test('format "json": output parses', async () => {
    // stories260K writes long strings and fills its 128-token context; the random qwen
    // often closes its object: what finishes must parse, what is cut must still be JSON's start.
    let finished = 0;
    for (const [model, seed] of [['stories', 1], ['qwen', 1], ['qwen', 2], ['qwen', 3], ['qwen', 4]]) {
      const r = await ollama.chat({ model, messages: [{ role: 'user', content: 'Describe Lily as JSON.' }],
        format: 'json', stream: false, think: model === 'qwen' ? false : undefined,
        options: { temperature: 0.7, seed, num_predict: 120 } });
      assert.match(r.message.content, /^\s*\{/, `${model} seed ${seed}: starts as a JSON object: ${r.message.content}`);
      if (r.done_reason === 'stop') {
        const v = JSON.parse(r.message.content);
        assert.equal(typeof v, 'object');
        finished++;
      }
    }
    assert.ok(finished >= 1, 'at least one JSON output finished within num_predict');
  });

  test('format as a JSON schema: output validates (both models)', async () => {
    for (const model of ['stories', 'qwen']) {
      for (const seed of [1, 2]) {
        const r = await ollama.chat({ model, messages: [{ role: 'user', content: 'Tell me about a person.' }],
          format: PERSON, stream: false, think: model === 'qwen' ? false : undefined,
          options: { temperature: seed === 1 ? 0 : 1, seed, num_predict: 120 } });
        assert.equal(r.done_reason, 'stop', `${model} seed ${seed} finished: ${r.message.content}`);
        const v = JSON.parse(r.message.content);
        assert.equal(validate(v, PERSON), null, `${model} seed ${seed}: ${r.message.content}`);
      }
    }
    const streamed = await collect(await ollama.chat({ model: 'stories', messages: CHAT, format: PERSON, stream: true,
      options: { temperature: 0, num_predict: 120 } }));
    assert.equal(validate(JSON.parse(streamed.map((p) => p.message.content).join('')), PERSON), null);
  });

  test('tools: the template shows them, calls come back well formed', async (t) => {
    const messages = [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content: 'Weather in Paris? And 2+3?' }];
    const plain = await ollama.chat({ model: 'qwen', messages, stream: false, think: false,
      options: { temperature: 0, num_predict: 1 } });
    let calls = 0;
    for (const seed of [1, 2, 3, 4]) {
      const r = await ollama.chat({ model: 'qwen', messages, tools: TOOLS, stream: false, think: false,
        options: { temperature: 1, seed, num_predict: 120 } });
      if (seed === 1) assert.ok(r.prompt_eval_count > plain.prompt_eval_count + 50, 'the tools are in the prompt');
      assert.equal(typeof r.message.content, 'string');
      assert.ok(!r.message.content.includes('<tool_call>'), `call markup leaked into content: ${r.message.content}`);
      for (const c of r.message.tool_calls || []) {
        calls++;
        const schema = toolSchema(c.function.name);
        assert.ok(schema, `call to a known tool: ${c.function.name}`);
        assert.equal(typeof c.function.arguments, 'object', 'arguments are an object, not a string');
        assert.equal(validate(c.function.arguments, schema), null, JSON.stringify(c.function.arguments));
      }
    }
    // A tool result as the next message is accepted (the template renders role "tool").
    const follow = await ollama.chat({ model: 'qwen', stream: false, think: false, tools: TOOLS,
      options: { temperature: 0, num_predict: 4 }, messages: [...messages,
        { role: 'assistant', content: '', tool_calls: [{ function: { name: 'add', arguments: { a: 2, b: 3 } } }] },
        { role: 'tool', content: '5', tool_name: 'add' }] });
    assert.equal(follow.done, true);
    t.diagnostic(`tool calls seen: ${calls}`);
  });

  test('think: reasoning comes apart from the answer', async () => {
    const show = await ollama.show({ model: 'qwen' });
    assert.ok(show.capabilities.includes('thinking'), `qwen3 template: ${show.capabilities}`);
    // The Qwen3 template closes an empty <think></think> itself when thinking is off, so
    // `think` must reach the template: the prompts differ.
    // (keep_alive 0: each request gets a fresh session, so prompt_eval_count, which counts
    // only the tokens not already in the KV cache, is the whole prompt)
    const ask = [{ role: 'user', content: '2+2?' }];
    const on = await ollama.chat({ model: 'qwen', messages: ask, think: true, stream: false, keep_alive: 0,
      options: { temperature: 0, num_predict: 20 } });
    const off = await ollama.chat({ model: 'qwen', messages: ask, think: false, stream: false, keep_alive: 0,
      options: { temperature: 0, num_predict: 20 } });
    assert.ok(off.prompt_eval_count > on.prompt_eval_count, `think false adds the empty section (${off.prompt_eval_count} vs ${on.prompt_eval_count})`);
    assert.equal(off.message.thinking, undefined, 'think false: no thinking');
    for (const r of [on, off]) assert.ok(!r.message.content.includes('<think>') && !r.message.content.includes('</think>'));
    // A prompt that opens <think> (a request template, as a thinking model's own would):
    // the random model never closes it, so everything it writes is reasoning.
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n<think>\n";
    const g = await ollama.generate({ model: 'qwen', prompt: '2+2?', template, think: true, stream: false,
      options: { temperature: 0, num_predict: 12 } });
    assert.ok(g.thinking && g.thinking.length > 0, `thinking: ${JSON.stringify(g)}`);
    assert.equal(g.response, '');
    assert.ok(!g.thinking.includes('<think>'));
    const parts = await collect(await ollama.generate({ model: 'qwen', prompt: '2+2?', template, think: true, stream: true,
      options: { temperature: 0, num_predict: 12 } }));
    assert.equal(parts.map((p) => p.thinking || '').join(''), g.thinking, 'streamed thinking, piece by piece');
    assert.equal(parts.map((p) => p.response).join(''), '');
    // think false: the same tokens come out as the answer.
    const noThink = await ollama.generate({ model: 'qwen', prompt: '2+2?', template, think: false, stream: false,
      options: { temperature: 0, num_predict: 12 } });
    assert.equal(noThink.thinking, undefined);
    assert.ok(noThink.response.length > 0);
    // A model without a thinking template refuses think (as Ollama does) or ignores it, never fails.
    const st = await ollama.chat({ model: 'stories', messages: CHAT, think: true, stream: false,
      options: { temperature: 0, num_predict: 4 } }).catch((e) => e);
    if (st instanceof Error) assert.match(st.message, /think/i);
    else assert.equal(st.message.thinking, undefined);
  });

  test('a Modelfile TEMPLATE applies to generate and to chat (both APIs)', async () => {
    // This template turns a conversation into its bare text: the chat prompt is then
    // exactly "Once upon a time" (BOS + 4 tokens), whose greedy text the kit knows.
    const template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    const created = await ollama.create({ model: 'stories-bare', from: 'stories', template, stream: false });
    assert.equal(created.status, 'success');
    const shown = await ollama.show({ model: 'stories-bare' });
    assert.equal(shown.template, template);
    assert.equal(shown.details.parent_model, 'stories:latest');
    const g = await ollama.generate({ model: 'stories-bare', prompt: 'Once upon a time', stream: false, options: GREEDY });
    assert.equal(g.prompt_eval_count, 5);
    assert.equal(g.response, STORIES_GREEDY);
    const c = await ollama.chat({ model: 'stories-bare', messages: CHAT, stream: false, options: GREEDY });
    assert.equal(c.prompt_eval_count, 5, '/api/chat renders with the TEMPLATE layer');
    assert.equal(c.message.content, STORIES_GREEDY);
    const o = await openai.chat.completions.create({ model: 'stories-bare', messages: CHAT, temperature: 0, max_tokens: 30 });
    assert.equal(o.usage.prompt_tokens, 5, '/v1/chat/completions renders with the TEMPLATE layer');
    assert.equal(o.choices[0].message.content, STORIES_GREEDY);
  });

  test('embed: one and several inputs, normalised, and the CLI agrees', async () => {
    const one = await ollama.embed({ model: 'bert', input: 'hello world' });
    assert.equal(one.embeddings.length, 1);
    const dim = one.embeddings[0].length;
    assert.equal(dim, 256, 'bert-tiny n_embd');
    assert.ok(Math.abs(norm(one.embeddings[0]) - 1) < 1e-4);
    assert.ok(one.prompt_eval_count > 0);
    const many = await ollama.embed({ model: 'bert', input: ['hello world', 'a cat sat on the mat', 'duckdb'] });
    assert.equal(many.embeddings.length, 3);
    for (const v of many.embeddings) {
      assert.equal(v.length, dim);
      assert.ok(Math.abs(norm(v) - 1) < 1e-4);
    }
    assert.ok(maxAbsDiff(many.embeddings[0], one.embeddings[0]) < 1e-5, 'batching does not change a vector');
    assert.ok(cosine(many.embeddings[0], many.embeddings[1]) < 0.9999, 'different texts, different vectors');
    const cli = await runCommand(bin, ['embed', BERT, 'hello world']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok(maxAbsDiff(JSON.parse(cli.stdout)[0], one.embeddings[0]) < 1e-5, 'same as `duckling embed`');
    await assert.rejects(ollama.embed({ model: 'stories', input: 'x' }), (e) => e.status_code === 400,
      'a generative model has no embeddings');
  });

  test('embeddings (legacy): the same direction', async () => {
    const legacy = await ollama.embeddings({ model: 'bert', prompt: 'hello world' });
    const one = await ollama.embed({ model: 'bert', input: 'hello world' });
    assert.equal(legacy.embedding.length, one.embeddings[0].length);
    assert.ok(cosine(legacy.embedding, one.embeddings[0]) > 0.99999);
  });

  test('list (tags) and show', async () => {
    const { models } = await ollama.list();
    const byName = Object.fromEntries(models.map((m) => [m.name, m]));
    for (const n of ['stories:latest', 'bert:latest', 'qwen:latest']) assert.ok(byName[n], `${n} listed: ${Object.keys(byName)}`);
    const s = byName['stories:latest'];
    // size: all layers of the manifest (the GGUF and the small config blob), as Ollama counts it
    assert.ok(s.size >= fs.statSync(STORIES).size && s.size < fs.statSync(STORIES).size + 4096, `size ${s.size}`);
    assert.match(s.digest, /^[0-9a-f]{64}$/);
    assert.ok(Date.parse(s.modified_at) > Date.now() - 3600e3);
    assert.equal(s.details.format, 'gguf');
    assert.equal(s.details.family, 'llama');
    assert.equal(s.details.quantization_level, 'F32');
    assert.equal(byName['qwen:latest'].details.family, 'qwen3');
    assert.equal(byName['qwen:latest'].details.quantization_level, 'Q8_0');

    const q = await ollama.show({ model: 'qwen' });
    assert.match(q.template, /<\|im_start\|>/);
    assert.equal(q.details.family, 'qwen3');
    assert.equal(q.model_info['general.architecture'], 'qwen3');
    assert.equal(q.model_info['qwen3.embedding_length'], 64);
    assert.ok(q.capabilities.includes('completion') && q.capabilities.includes('tools'), String(q.capabilities));
    assert.match(q.modelfile, /^FROM /m);
    const b = await ollama.show({ model: 'bert' });
    assert.deepEqual(b.capabilities, ['embedding']);
    assert.equal(b.model_info['bert.embedding_length'], 256);
    const st = await ollama.show({ model: 'stories' });
    assert.equal(st.model_info['llama.context_length'], 128);
    assert.ok(!st.capabilities.includes('tools'));
    await assert.rejects(ollama.show({ model: 'nope' }), (e) => e.status_code === 404 && /not found/i.test(e.message));
  });

  test('ps and keep_alive: loaded, expiry, unload', async () => {
    await ollama.generate({ model: 'stories', prompt: 'Once', raw: true, stream: false, keep_alive: '10m',
      options: { temperature: 0, num_predict: 2 } });
    let { models } = await ollama.ps();
    const entry = models.find((m) => m.name === 'stories:latest');
    assert.ok(entry, `stories in ps: ${JSON.stringify(models)}`);
    assert.ok(entry.size > 0);
    assert.match(entry.digest, /^[0-9a-f]{64}$/);
    assert.equal(entry.details.family, 'llama');
    assert.equal(entry.context_length, 128, 'num_ctx is bounded by the model\'s training context');
    const expires = Date.parse(entry.expires_at) - Date.now();
    assert.ok(expires > 9 * 60e3 && expires < 11 * 60e3, `expires in ${expires} ms, keep_alive 10m`);
    // keep_alive -1: forever
    const load = await ollama.generate({ model: 'stories', prompt: '', keep_alive: -1 });
    assert.equal(load.done, true);
    assert.equal(load.done_reason, 'load');
    ({ models } = await ollama.ps());
    assert.ok(Date.parse(models.find((m) => m.name === 'stories:latest').expires_at) > Date.now() + 365 * 86400e3);
    // keep_alive 0 with an empty prompt: unloaded
    const unload = await ollama.generate({ model: 'stories', prompt: '', keep_alive: 0 });
    assert.equal(unload.done_reason, 'unload');
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      ({ models } = await ollama.ps());
      gone = !models.some((m) => m.name === 'stories:latest');
      if (!gone) await sleep(100);
    }
    assert.ok(gone, 'stories no longer resident after keep_alive 0');
    // a request with keep_alive 0 runs, then the model goes
    const r = await ollama.chat({ model: 'stories', messages: CHAT, stream: false, keep_alive: 0,
      options: { temperature: 0, num_predict: 3 } });
    assert.equal(r.eval_count, 3);
    for (let i = 0, g = false; i < 50 && !g; i++) {
      g = !(await ollama.ps()).models.some((m) => m.name === 'stories:latest');
      if (g) gone = true; else await sleep(100);
    }
    assert.ok(gone);
    await assert.rejects(ollama.generate({ model: 'stories', prompt: 'x', keep_alive: 'soon' }), (e) => e.status_code === 400);
  });

  test('create from uploaded blobs (files), with parameters and system', async () => {
    const data = fs.readFileSync(STORIES);
    const digest = sha256(data);
    // Another digest first: an unknown blob is 404, a body that does not match its digest 400.
    const other = sha256(Buffer.from('not uploaded'));
    assert.equal((await api(`/api/blobs/${other}`, { method: 'HEAD' })).status, 404);
    const wrong = await api(`/api/blobs/${other}`, { method: 'POST', body: data });
    assert.equal(wrong.status, 400);
    assert.equal((await api(`/api/blobs/${other}`, { method: 'HEAD' })).status, 404, 'a bad upload is not kept');
    const put = await api(`/api/blobs/${digest}`, { method: 'POST', body: data });
    assert.equal(put.status, 201);
    assert.equal((await api(`/api/blobs/${digest}`, { method: 'HEAD' })).status, 200);
    const progress = await collect(await ollama.create({ model: 'stories-blob', files: { 'stories.gguf': digest },
      parameters: { temperature: 0, num_predict: 30, stop: ['<|im_end|>'] }, system: 'You tell stories.', stream: true }));
    assert.ok(progress.length >= 2);
    assert.equal(progress.at(-1).status, 'success');
    const shown = await ollama.show({ model: 'stories-blob' });
    assert.equal(shown.system, 'You tell stories.');
    assert.match(shown.parameters, /temperature\s+0/);
    assert.match(shown.parameters, /num_predict\s+30/);
    // The Modelfile's parameters apply: no options given, yet greedy and 30 tokens.
    const r = await ollama.generate({ model: 'stories-blob', prompt: 'Once upon a time', raw: true, stream: false });
    assert.equal(r.response, STORIES_GREEDY);
    // ... and its system prompt reaches the chat template.
    const withSystem = await ollama.chat({ model: 'stories-blob', messages: CHAT, stream: false });
    const without = await ollama.chat({ model: 'stories', messages: CHAT, stream: false, options: GREEDY });
    assert.ok(withSystem.prompt_eval_count > without.prompt_eval_count, 'the system message is in the prompt');
    // a file reference to a blob that is not there
    await assert.rejects(ollama.create({ model: 'broken', files: { 'x.gguf': other }, stream: false }),
      (e) => e.status_code >= 400 && e.status_code < 500);
  });

  test('copy and delete', async () => {
    await ollama.copy({ source: 'stories', destination: 'stories-copy:v1' });
    let { models } = await ollama.list();
    const a = models.find((m) => m.name === 'stories:latest');
    const b = models.find((m) => m.name === 'stories-copy:v1');
    assert.ok(b, 'the copy is listed');
    assert.equal(b.size, a.size);
    const r = await ollama.generate({ model: 'stories-copy:v1', prompt: 'Once upon a time', raw: true, stream: false,
      options: GREEDY });
    assert.equal(r.response, STORIES_GREEDY);
    await ollama.delete({ model: 'stories-copy:v1' });
    ({ models } = await ollama.list());
    assert.ok(!models.some((m) => m.name === 'stories-copy:v1'));
    assert.ok(models.some((m) => m.name === 'stories:latest'), 'the original stays (its blobs too)');
    const again = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true, stream: false, options: GREEDY });
    assert.equal(again.response, STORIES_GREEDY);
    await assert.rejects(ollama.delete({ model: 'stories-copy:v1' }), (e) => e.status_code === 404);
    await assert.rejects(ollama.copy({ source: 'nope', destination: 'x' }), (e) => e.status_code === 404);
  });

  test('errors: unknown model, malformed requests', async () => {
    await assert.rejects(ollama.generate({ model: 'no-such-model', prompt: 'hi', stream: false }),
      (e) => e.status_code === 404 && /no-such-model/.test(e.message) && /not found/i.test(e.message));
    await assert.rejects(async () => collect(await ollama.chat({ model: 'no-such-model', messages: CHAT, stream: true })),
      (e) => /not found/i.test(e.message));
    for (const [p, body, why] of [
      ['/api/generate', '{"model": "stories", "prompt": ', 'truncated JSON'],
      ['/api/generate', '[1, 2]', 'not an object'],
      ['/api/generate', { prompt: 'hi' }, 'no model'],
      ['/api/chat', { model: 'stories', messages: 'hi' }, 'messages not an array'],
      ['/api/chat', { model: 'stories', messages: CHAT, options: { temperature: 'hot' } }, 'option of the wrong type'],
      ['/api/embed', { model: 'bert', input: 42 }, 'input of the wrong type'],
    ]) {
      const r = await post(p, body);
      assert.equal(r.status, 400, why);
      assert.match(r.headers.get('content-type'), /application\/json/);
      const e = await r.json();
      assert.equal(typeof e.error, 'string', why);
      assert.ok(e.error.length > 0);
      if (why === 'option of the wrong type') assert.match(e.error, /temperature/);
    }
    assert.equal((await api('/api/no-such-endpoint')).status, 404);
    assert.equal((await api('/api/chat')).status, 405, 'GET on a POST endpoint');
    // Images on a text model: refused with Ollama's wording.
    await assert.rejects(ollama.generate({ model: 'stories', prompt: 'x', images: ['aGVsbG8='], stream: false }),
      (e) => e.status_code === 400);
  });

  test('abort a stream: generation stops, the server keeps serving', async () => {
    const before = await metric('duckling_generated_tokens_total');
    const stream = await ollama.generate({ model: 'qwen', prompt: 'Count', think: false, stream: true,
      options: { temperature: 1, seed: 1, num_predict: 3000 } });
    let n = 0;
    await assert.rejects(async () => {
      for await (const part of stream) {
        assert.equal(part.done, false);
        if (++n === 3) stream.abort();
      }
    }, (e) => e.name === 'AbortError' || /abort/i.test(e.message));
    // The server notices the client is gone and stops decoding well before 3000 tokens.
    let busy = 1;
    for (let i = 0; i < 50 && busy; i++) {
      busy = await metric('duckling_slots_busy');
      if (busy) await sleep(100);
    }
    assert.equal(busy, 0, 'no slot busy after the abort');
    const afterAbort = await metric('duckling_generated_tokens_total');
    assert.ok(afterAbort - before < 3000, `generation was cancelled (${afterAbort - before} tokens)`);
    await sleep(300);
    assert.equal(await metric('duckling_generated_tokens_total'), afterAbort, 'nothing more is generated');
    // The client's abort() of all its streams, on chat.
    const s2 = await ollama.chat({ model: 'stories', messages: CHAT, stream: true, options: { temperature: 0, num_predict: 100 } });
    const it = s2[Symbol.asyncIterator]();
    await it.next();
    ollama.abort();
    await assert.rejects(async () => { for (;;) { const x = await it.next(); if (x.done) break; } });
    const r = await ollama.generate({ model: 'stories', prompt: 'Once upon a time', raw: true, stream: false, options: GREEDY });
    assert.equal(r.response, STORIES_GREEDY);
  });
});

// ---- pulls from the registry stand-in ----
describe('pull from a registry (stand-in)', hasServer(), () => {
  const TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:";
  let pulledTiny;

  before(async () => {
    if (skipReason) return;
    reg = await startRegistry();
  });

  const listed = async () => (await ollama.list()).models.map((m) => m.name);
  const blobFiles = () => fs.readdirSync(path.join(server.modelsDir, 'blobs'));
  const manifestsUnder = (dir) => {
    const out = [];
    const walk = (d) => {
      if (!fs.existsSync(d)) return;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name)); else out.push(path.join(d, e.name));
      }
    };
    walk(dir);
    return out;
  };

  test('pull streams progress, follows redirects, and the model runs', async () => {
    pulledTiny = reg.addModel('library/tiny:latest', { gguf: LLAMA_TINY('Q8_0'), template: TEMPLATE,
      params: { temperature: 0, num_predict: 12 }, system: 'Be brief.' });
    reg.setRedirects(true);
    const name = `${reg.host}/library/tiny:latest`;
    const progress = await collect(await ollama.pull({ model: name, insecure: true, stream: true }));
    reg.setRedirects(false);
    assert.equal(progress[0].status, 'pulling manifest');
    assert.equal(progress.at(-1).status, 'success');
    const modelLines = progress.filter((p) => p.digest === pulledTiny.digests.model);
    assert.ok(modelLines.length >= 1, 'progress of the model layer');
    for (const p of modelLines) {
      assert.equal(p.total, pulledTiny.size);
      assert.ok(p.completed <= p.total);
    }
    assert.equal(modelLines.at(-1).completed, pulledTiny.size);
    assert.ok(progress.some((p) => /verifying/.test(p.status)));
    assert.ok(reg.requests.some((q) => q.status === 307), 'the registry redirected blobs');
    assert.ok((await listed()).includes(name), `listed: ${await listed()}`);
    const shown = await ollama.show({ model: name });
    assert.equal(shown.template, TEMPLATE);
    assert.equal(shown.system, 'Be brief.');
    assert.match(shown.parameters, /num_predict\s+12/);
    // The weights are the file's: same raw greedy text as the CLI on the original file.
    const g = await ollama.generate({ model: name, prompt: 'Once upon a time', raw: true, stream: false,
      options: { num_predict: 16 } });
    assert.equal(g.eval_count, 16);
    // The pulled params apply (temperature 0, num_predict 12) when the request gives none.
    const r = await ollama.generate({ model: name, prompt: 'Once upon a time', raw: true, stream: false });
    assert.equal(r.eval_count, 12, 'num_predict 12 from the params layer');
    assert.ok(g.response.startsWith(r.response), 'greedy from the params layer');
    const chat = await ollama.chat({ model: name, messages: CHAT, stream: false });
    assert.ok(chat.prompt_eval_count > 0 && chat.done);
    const cli = await runCommand(bin, ['run', LLAMA_TINY('Q8_0'), 'Once upon a time', '--raw', '--temperature', '0',
      '-n', '16'], { env: { DUCKLING_HOST: '', OLLAMA_HOST: '' } });
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout.replace(/\n$/, ''), g.response);
    // Pulling again: nothing to download, success without streaming.
    const n = reg.requests.length;
    const again = await ollama.pull({ model: name, insecure: true, stream: false });
    assert.equal(again.status, 'success');
    assert.ok(!reg.requests.slice(n).some((q) => q.path.includes(pulledTiny.digests.model) && q.method === 'GET'),
      'a blob already present is not downloaded again');
  });

  test('a dropped connection: the next pull resumes with a Range request', async () => {
    const m = reg.addModel('library/cut:latest', { gguf: LLAMA_TINY('Q4_0') });
    const name = `${reg.host}/library/cut:latest`;
    reg.cutOnce(m.digests.model);
    let firstError = null;
    try {
      await collect(await ollama.pull({ model: name, insecure: true, stream: true }));
    } catch (e) {
      firstError = e;
    }
    if (firstError) {
      assert.ok(!(await listed()).includes(name), 'no model after a failed pull');
      const progress = await collect(await ollama.pull({ model: name, insecure: true, stream: true }));
      assert.equal(progress.at(-1).status, 'success');
    }
    const gets = reg.blobRequests(m.digests.model).filter((q) => q.method === 'GET');
    assert.equal(gets[0].status, '200 cut');
    const resumed = gets.find((q) => /^bytes=[1-9]\d*-/.test(q.range || ''));
    assert.ok(resumed, `a Range request resumed the blob: ${JSON.stringify(gets)}`);
    assert.equal(resumed.status, 206);
    assert.ok((await listed()).includes(name));
    const r = await ollama.generate({ model: name, prompt: 'Once upon a time', raw: true, stream: false,
      options: { temperature: 0, num_predict: 8 } });
    assert.equal(r.eval_count, 8);
    const cli = await runCommand(bin, ['run', LLAMA_TINY('Q4_0'), 'Once upon a time', '--raw', '--temperature', '0', '-n', '8'],
      { env: { DUCKLING_HOST: '', OLLAMA_HOST: '' } });
    assert.equal(cli.stdout.replace(/\n$/, ''), r.response, 'the resumed file is whole');
  });

  test('wrong bytes: the pull fails naming the digest, nothing is kept', async () => {
    const m = reg.addModel('library/bad:latest', { gguf: LLAMA_TINY('Q4_K_M') });
    const name = `${reg.host}/library/bad:latest`;
    reg.corrupt(m.digests.model);
    const hex = m.digests.model.slice(7);
    await assert.rejects(async () => collect(await ollama.pull({ model: name, insecure: true, stream: true })),
      (e) => e.message.includes(hex.slice(0, 12)), 'the error names the digest');
    await assert.rejects(ollama.pull({ model: name, insecure: true, stream: false }),
      (e) => e.status_code >= 400 && e.message.includes(hex.slice(0, 12)));
    reg.clearFaults();
    assert.ok(!(await listed()).includes(name), 'not listed');
    await assert.rejects(ollama.show({ model: name }), (e) => e.status_code === 404);
    assert.ok(!manifestsUnder(path.join(server.modelsDir, 'manifests')).some((f) => f.includes(`${path.sep}bad${path.sep}`)),
      'no manifest written');
    assert.ok(!blobFiles().some((f) => f.includes(hex)), `the bad blob is deleted: ${blobFiles()}`);
  });

  test('an unknown model: 404 from the registry, a failed pull', async () => {
    const name = `${reg.host}/library/missing:latest`;
    await assert.rejects(async () => collect(await ollama.pull({ model: name, insecure: true, stream: true })),
      (e) => /not found|does not exist|404|manifest/i.test(e.message));
    assert.ok(reg.requests.some((q) => q.path === '/v2/library/missing/manifests/latest' && q.status === 404));
    assert.ok(!(await listed()).includes(name));
    // Without insecure, plain HTTP is refused (https to a plain server fails).
    await assert.rejects(async () => collect(await ollama.pull({ model: `${reg.host}/library/tiny:latest`, stream: true })));
  });
});

// ---- OpenAI's API with the openai client ----
describe('openai client', hasServer(), () => {
  test('chat.completions, not streamed: the same greedy text as Ollama\'s chat', async () => {
    const o = await ollama.chat({ model: 'stories', messages: CHAT, stream: false, options: GREEDY });
    const r = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 30 });
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.ok(Number.isInteger(r.created) && Math.abs(r.created - Date.now() / 1000) < 600);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, o.message.content);
    assert.equal(r.choices[0].finish_reason, o.done_reason);
    assert.equal(r.usage.completion_tokens, o.eval_count);
    assert.equal(r.usage.prompt_tokens, o.prompt_eval_count);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  test('chat.completions, streamed, with include_usage', async () => {
    const full = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 30 });
    const stream = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 30,
      stream: true, stream_options: { include_usage: true } });
    const chunks = await collect(stream);
    const withChoices = chunks.filter((c) => c.choices.length);
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for the stream');
    assert.equal(withChoices.map((c) => c.choices[0].delta.content || '').join(''), full.choices[0].message.content);
    assert.equal(withChoices.at(-1).choices[0].finish_reason, full.choices[0].finish_reason);
    const usage = chunks.at(-1);
    assert.equal(usage.choices.length, 0, 'the usage chunk comes last, without choices');
    assert.deepEqual(usage.usage, full.usage);
    // Without include_usage: no usage chunk.
    const plain = await collect(await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0,
      max_tokens: 5, stream: true }));
    assert.ok(plain.every((c) => c.choices.length === 1 && !c.usage));
  });

  test('max_tokens gives finish_reason "length"; stop strings', async () => {
    const r = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 3 });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 3);
    const full = (await openai.completions.create({ model: 'stories', prompt: 'Once upon a time', temperature: 0,
      max_tokens: 30 })).choices[0].text;
    assert.equal(full, STORIES_GREEDY, 'completions take the prompt raw');
    const stopped = await openai.completions.create({ model: 'stories', prompt: 'Once upon a time', temperature: 0,
      max_tokens: 30, stop: ['little', 'Lily'] });
    assert.equal(stopped.choices[0].text, STORIES_GREEDY.slice(0, STORIES_GREEDY.indexOf('little')));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    const chatStop = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0,
      max_tokens: 30, stop: 'e' });
    assert.ok(!chatStop.choices[0].message.content.includes('e'));
    assert.equal(chatStop.choices[0].finish_reason, 'stop');
  });

  test('tools with tool_choice "required" and a named function', async () => {
    const messages = [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content: 'Weather in Paris? And 2+3?' }];
    let finished = 0;
    for (const seed of [1, 2, 3]) {
      const r = await openai.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, tool_choice: 'required',
        temperature: seed === 1 ? 0 : 1, seed, max_tokens: 150, reasoning_effort: 'none' });
      const choice = r.choices[0];
      if (choice.finish_reason === 'length') continue;
      finished++;
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.ok(choice.message.tool_calls.length >= 1);
      for (const c of choice.message.tool_calls) {
        assert.equal(c.type, 'function');
        assert.ok(typeof c.id === 'string' && c.id.length > 0);
        const schema = toolSchema(c.function.name);
        assert.ok(schema, `a known tool: ${c.function.name}`);
        assert.equal(typeof c.function.arguments, 'string');
        assert.equal(validate(JSON.parse(c.function.arguments), schema), null, c.function.arguments);
      }
    }
    assert.ok(finished >= 2, `${finished} of 3 required calls finished`);
    const named = await openai.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, temperature: 0,
      tool_choice: { type: 'function', function: { name: 'add' } }, max_tokens: 150, reasoning_effort: 'none' });
    const calls = named.choices[0].message.tool_calls;
    assert.equal(calls.length, 1);
    assert.equal(calls[0].function.name, 'add');
    assert.equal(validate(JSON.parse(calls[0].function.arguments), toolSchema('add')), null);
    // Streamed: the call arrives as deltas by index; joined arguments parse.
    const chunks = await collect(await openai.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, temperature: 0,
      tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 150, stream: true,
      reasoning_effort: 'none' }));
    const acc = {};
    for (const c of chunks) {
      for (const d of c.choices[0]?.delta?.tool_calls || []) {
        acc[d.index] ??= { name: '', arguments: '' };
        if (d.function?.name) acc[d.index].name += d.function.name;
        if (d.function?.arguments) acc[d.index].arguments += d.function.arguments;
      }
    }
    assert.equal(Object.keys(acc).length, 1);
    assert.equal(acc[0].name, 'get_weather');
    assert.equal(validate(JSON.parse(acc[0].arguments), toolSchema('get_weather')), null);
    assert.equal(chunks.filter((c) => c.choices.length).at(-1).choices[0].finish_reason, 'tool_calls');
    // A named tool that is not among the tools: 400.
    await assert.rejects(openai.chat.completions.create({ model: 'qwen', messages, tools: TOOLS,
      tool_choice: { type: 'function', function: { name: 'nope' } } }), OpenAI.BadRequestError);
  });

  test('response_format json_object and json_schema', async () => {
    const obj = await openai.chat.completions.create({ model: 'stories', temperature: 0, max_tokens: 150,
      messages: [{ role: 'user', content: 'JSON please' }], response_format: { type: 'json_object' } });
    if (obj.choices[0].finish_reason === 'stop') {
      const v = JSON.parse(obj.choices[0].message.content);
      assert.equal(typeof v, 'object');
      assert.ok(!Array.isArray(v) && v !== null, 'json_object is an object');
    } else {
      assert.match(obj.choices[0].message.content, /^\s*\{/);
    }
    for (const model of ['stories', 'qwen']) {
      const r = await openai.chat.completions.create({ model, temperature: 0, max_tokens: 150, reasoning_effort: 'none',
        messages: [{ role: 'user', content: 'A person, please.' }],
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } } });
      assert.equal(r.choices[0].finish_reason, 'stop', `${model}: ${r.choices[0].message.content}`);
      assert.equal(validate(JSON.parse(r.choices[0].message.content), PERSON), null, r.choices[0].message.content);
    }
  });

  test('logprobs and top_logprobs', async () => {
    const r = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 12,
      logprobs: true, top_logprobs: 3 });
    const lp = r.choices[0].logprobs.content;
    assert.equal(lp.length, r.usage.completion_tokens);
    assert.equal(lp.map((e) => e.token).join(''), r.choices[0].message.content);
    for (const e of lp) {
      assert.ok(e.logprob <= 0 && Number.isFinite(e.logprob));
      assert.ok(Array.isArray(e.bytes));
      assert.equal(Buffer.from(e.bytes).toString('utf8'), e.token);
      assert.equal(e.top_logprobs.length, 3);
      for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob, 'best first');
      assert.equal(e.top_logprobs[0].token, e.token, 'greedy takes the most likely token');
      assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5);
    }
    const plain = await openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 0, max_tokens: 4 });
    assert.equal(plain.choices[0].logprobs, null);
  });

  test('completions, streamed and not', async () => {
    const r = await openai.completions.create({ model: 'stories', prompt: 'Once upon a time', temperature: 0, max_tokens: 30 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, STORIES_GREEDY);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 30);
    const chunks = await collect(await openai.completions.create({ model: 'stories', prompt: 'Once upon a time',
      temperature: 0, max_tokens: 30, stream: true }));
    assert.equal(chunks.map((c) => c.choices[0]?.text || '').join(''), STORIES_GREEDY);
    assert.equal(chunks.filter((c) => c.choices.length).at(-1).choices[0].finish_reason, 'length');
    const echo = await openai.completions.create({ model: 'stories', prompt: 'Once upon a time', temperature: 0,
      max_tokens: 5, echo: true });
    assert.ok(echo.choices[0].text.startsWith('Once upon a time, there'));
  });

  test('embeddings: base64 (the client\'s default) and float agree', async () => {
    const input = ['hello world', 'a cat sat on the mat'];
    const b64 = await openai.embeddings.create({ model: 'bert', input });
    const flt = await openai.embeddings.create({ model: 'bert', input, encoding_format: 'float' });
    assert.equal(b64.object, 'list');
    assert.equal(b64.data.length, 2);
    for (let i = 0; i < 2; i++) {
      assert.equal(b64.data[i].object, 'embedding');
      assert.equal(b64.data[i].index, i);
      assert.equal(b64.data[i].embedding.length, 256);
      assert.ok(maxAbsDiff(b64.data[i].embedding, flt.data[i].embedding) < 1e-6);
      assert.ok(Math.abs(norm(flt.data[i].embedding) - 1) < 1e-4);
    }
    assert.ok(flt.usage.prompt_tokens > 0);
    const o = await ollama.embed({ model: 'bert', input });
    assert.ok(maxAbsDiff(o.embeddings[1], flt.data[1].embedding) < 1e-5, 'the same vectors as /api/embed');
    // The raw reply really is base64 when asked.
    const raw = await (await post('/v1/embeddings', { model: 'bert', input: 'x', encoding_format: 'base64' })).json();
    assert.equal(typeof raw.data[0].embedding, 'string');
    assert.equal(Buffer.from(raw.data[0].embedding, 'base64').length, 256 * 4);
  });

  test('models.list and retrieve', async () => {
    const ids = [];
    for await (const m of openai.models.list()) {
      assert.equal(m.object, 'model');
      assert.ok(Number.isInteger(m.created));
      assert.equal(typeof m.owned_by, 'string');
      ids.push(m.id);
    }
    for (const n of ['stories:latest', 'bert:latest', 'qwen:latest']) assert.ok(ids.includes(n), `${n} in ${ids}`);
    const m = await openai.models.retrieve('stories:latest');
    assert.equal(m.id, 'stories:latest');
    await assert.rejects(openai.models.retrieve('nope'), OpenAI.NotFoundError);
  });

  test('errors: 404 NotFoundError, 400 BadRequestError, OpenAI\'s error shape', async () => {
    await assert.rejects(openai.chat.completions.create({ model: 'no-such-model', messages: CHAT }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && /no-such-model/.test(e.message));
    await assert.rejects(openai.chat.completions.create({ model: 'stories', messages: 'hi' }), OpenAI.BadRequestError);
    await assert.rejects(openai.chat.completions.create({ model: 'stories', messages: CHAT, temperature: 'hot' }),
      OpenAI.BadRequestError);
    await assert.rejects(openai.completions.create({ model: 'stories' }), OpenAI.BadRequestError);
    await assert.rejects(openai.embeddings.create({ model: 'stories', input: 'x' }), OpenAI.BadRequestError);
    await assert.rejects(async () => collect(await openai.chat.completions.create({ model: 'no-such-model', messages: CHAT,
      stream: true })), OpenAI.NotFoundError);
    const r = await post('/v1/chat/completions', '{"model": ');
    assert.equal(r.status, 400);
    const e = await r.json();
    assert.equal(typeof e.error.message, 'string');
    assert.equal(e.error.type, 'invalid_request_error');
  });

  test('abort a stream (AbortController): the server keeps serving', async () => {
    const ac = new AbortController();
    const stream = await openai.chat.completions.create({ model: 'qwen', messages: CHAT, temperature: 1, seed: 3,
      max_tokens: 3000, stream: true, reasoning_effort: 'none' }, { signal: ac.signal });
    // (the openai client ends the iteration quietly on an abort, or throws APIUserAbortError)
    let n = 0;
    try {
      for await (const c of stream) {
        assert.ok(c.choices.length <= 1);
        if (++n === 3) ac.abort();
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
    }
    assert.ok(n >= 3 && n < 100, `${n} chunks read`);
    let busy = 1;
    for (let i = 0; i < 50 && busy; i++) {
      busy = await metric('duckling_slots_busy');
      if (busy) await sleep(100);
    }
    assert.equal(busy, 0);
    const r = await openai.completions.create({ model: 'stories', prompt: 'Once upon a time', temperature: 0, max_tokens: 30 });
    assert.equal(r.choices[0].text, STORIES_GREEDY);
  });
});

// ---- several streams at once ----
describe('concurrency', hasServer(), () => {
  test('streams from both clients at once give the sequential greedy texts', async () => {
    const prompts = ['Once upon a time', 'Lily and Ben', 'The big dog'];
    const sequential = {};
    for (const p of prompts) {
      sequential[p] = (await ollama.chat({ model: 'stories', messages: [{ role: 'user', content: p }], stream: false,
        options: { temperature: 0, num_predict: 40 } })).message.content;
    }
    const viaOllama = async (p) => (await collect(await ollama.chat({ model: 'stories', stream: true,
      messages: [{ role: 'user', content: p }], options: { temperature: 0, num_predict: 40 } })))
      .map((x) => x.message.content).join('');
    const viaOpenAI = async (p) => (await collect(await openai.chat.completions.create({ model: 'stories', stream: true,
      messages: [{ role: 'user', content: p }], temperature: 0, max_tokens: 40 })))
      .map((c) => c.choices[0]?.delta?.content || '').join('');
    // 8 at once with 4 slots: half of them wait for a slot.
    const jobs = [];
    for (let i = 0; i < 8; i++) {
      const p = prompts[i % prompts.length];
      jobs.push((i % 2 ? viaOpenAI(p) : viaOllama(p)).then((text) => ({ p, text })));
    }
    for (const { p, text } of await Promise.all(jobs)) assert.equal(text, sequential[p], `prompt "${p}"`);
  });

  test('long streams overlap (slots busy at once) and batching keeps the greedy text', async () => {
    // The qwen model is slower per token (151936-row output), so 4 streams of 150 tokens
    // surely overlap; their texts must not depend on what else shares the forward passes.
    const asks = ['2+2?', 'Weather in Paris?', 'Hello', 'Tell me a joke.'];
    const one = (q) => ({ model: 'qwen', messages: [{ role: 'user', content: q }], think: false, stream: false,
      options: { temperature: 0, num_predict: 150 } });
    const sequential = [];
    for (const q of asks) sequential.push((await ollama.chat(one(q))).message.content);
    let maxBusy = 0, running = true;
    const poll = (async () => {
      while (running) {
        maxBusy = Math.max(maxBusy, await metric('duckling_slots_busy'));
        await sleep(10);
      }
    })();
    const texts = await Promise.all(asks.map(async (q, i) => {
      if (i % 2) {
        const chunks = await collect(await openai.chat.completions.create({ model: 'qwen', stream: true, temperature: 0,
          max_tokens: 150, reasoning_effort: 'none', messages: [{ role: 'user', content: q }] }));
        return chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
      }
      return (await collect(await ollama.chat({ ...one(q), stream: true }))).map((x) => x.message.content).join('');
    }));
    running = false;
    await poll;
    assert.ok(maxBusy >= 2, `streams ran at the same time (at most ${maxBusy} slots busy)`);
    for (let i = 0; i < asks.length; i++) assert.equal(texts[i], sequential[i], `"${asks[i]}" alone and batched`);
  });
});

// ---- duckling run through the server ----
describe('duckling run with DUCKLING_HOST', hasServer(), () => {
  test('answers through the server, with the API\'s greedy text', async (t) => {
    const empty = path.join(tmp, 'empty-store');
    fs.mkdirSync(empty, { recursive: true });
    // An empty local store: if `run` answers for "stories", it asked the server.
    const r = await runCommand(bin, ['run', 'stories', 'Once upon a time', '--temperature', '0', '-n', '30'],
      { env: { DUCKLING_HOST: `127.0.0.1:${server.port}`, DUCKLING_MODELS: empty, OLLAMA_MODELS: empty }, timeoutMs: 60000 });
    if (r.code !== 0 && /not found|unknown|no such/i.test(r.stderr)) {
      t.skip(`duckling run does not use DUCKLING_HOST yet: ${r.stderr.trim()}`);
      return;
    }
    assert.equal(r.code, 0, r.stderr);
    const o = await ollama.chat({ model: 'stories', messages: CHAT, stream: false, options: GREEDY });
    assert.equal(r.stdout.replace(/\n$/, ''), o.message.content);
    const raw = await runCommand(bin, ['run', 'stories', 'Once upon a time', '--raw', '--temperature', '0', '-n', '30'],
      { env: { DUCKLING_HOST: `127.0.0.1:${server.port}`, DUCKLING_MODELS: empty, OLLAMA_MODELS: empty } });
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(raw.stdout.replace(/\n$/, ''), STORIES_GREEDY);
  });
});

// ---- the end ----
describe('shutdown', hasServer(), () => {
  test('SIGTERM: the server exits cleanly and soon', async () => {
    const r = await server.stop();
    assert.equal(r.signal, null, `exited by itself, not killed (${r.signal})`);
    assert.equal(r.code, 0, server.log().slice(-2000));
    assert.ok(r.ms < 10000, `${r.ms} ms to stop`);
  });
});
