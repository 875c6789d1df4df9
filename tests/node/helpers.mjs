// helpers.mjs: what the server tests share: paths of the binary and the kit, starting and
// stopping `duckling serve` on a free loopback port with its own stores, running other
// duckling commands without blocking the event loop (the registry stand-in and the server's
// clients live in this process: a spawnSync would freeze them), reading NDJSON / SSE
// streams by hand, and a small JSON-schema checker for constrained outputs.
//
// Not for: the registry stand-in (registry.mjs), the tests themselves (server.test.mjs).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const bin = path.resolve(root, process.env.DUCKLING_BIN || 'build/duckling');
export const kit = path.resolve(root, process.env.DUCKLING_KIT || '../shared/kit');
export const kitFile = (rel) => path.join(kit, rel);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Runs a command to completion without blocking: {code, signal, stdout, stderr}.
export function runCommand(cmd, args, { env = {}, timeoutMs = 60000, input } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    if (input !== undefined) p.stdin.end(input); else p.stdin.end();
  });
}

// Starts `duckling serve --host 127.0.0.1 --port P [args]` with DUCKLING_MODELS and OLLAMA_MODELS
// in a fresh temporary folder and waits until GET / answers. Resolves
// {url, port, pid, modelsDir, log(), stop()} or rejects with the server's stderr.
export async function startServer({ env = {}, args = [], timeoutMs = 20000 } = {}) {
  const port = await freePort();
  const dir = tempDir('duckling-serve-test-');
  const modelsDir = path.join(dir, 'models');
  const ollamaDir = path.join(dir, 'ollama');
  fs.mkdirSync(ollamaDir);
  const child = spawn(bin, ['serve', '--host', '127.0.0.1', '--port', String(port), ...args], {
    env: { ...process.env, DUCKLING_HOST: '', OLLAMA_HOST: '', DUCKLING_MODELS: modelsDir, OLLAMA_MODELS: ollamaDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (d) => { log = (log + d).slice(-20000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`duckling serve exited (${child.exitCode ?? child.signalCode}): ${log.trim()}`);
    }
    try {
      const r = await fetch(url + '/');
      await r.arrayBuffer();
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`duckling serve did not answer GET / within ${timeoutMs} ms: ${log.trim()}`);
    }
    await sleep(100);
  }
  let stopped = null;
  return {
    url, port, pid: child.pid, dir, modelsDir,
    log: () => log,
    exited,
    // SIGTERM, then SIGKILL after killMs; resolves {code, signal, ms}; removes the folder.
    stop(killMs = 15000) {
      if (stopped) return stopped;
      stopped = (async () => {
        const t0 = Date.now();
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), killMs);
        const r = await exited;
        clearTimeout(timer);
        fs.rmSync(dir, { recursive: true, force: true });
        return { ...r, ms: Date.now() - t0 };
      })();
      return stopped;
    },
  };
}

// Parses a whole NDJSON body into objects.
export function ndjson(text) {
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

// Parses a whole SSE body into its data payloads ("[DONE]" kept as the string).
export function sse(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
    if (!data) continue;
    out.push(data === '[DONE]' ? data : JSON.parse(data));
  }
  return out;
}

export async function collect(iterable) {
  const out = [];
  for await (const x of iterable) out.push(x);
  return out;
}

export function norm(v) {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

export function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function cosine(a, b) {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += a[i] * b[i];
  return d / (norm(a) * norm(b));
}

// The subset of JSON Schema the tests' schemas use: type, properties, required,
// additionalProperties false, enum, maxLength, minLength, minimum, maximum, items, minItems,
// maxItems. Returns null when value is valid, else a reason.
export function validate(value, schema, where = '$') {
  const typeOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array'
    : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v);
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value)))
    return `${where}: ${JSON.stringify(value)} not in enum`;
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = typeOf(value);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) return `${where}: ${t}, not ${types.join('|')}`;
  }
  if (typeof value === 'string') {
    if (schema.maxLength !== undefined && [...value].length > schema.maxLength) return `${where}: longer than ${schema.maxLength}`;
    if (schema.minLength !== undefined && [...value].length < schema.minLength) return `${where}: shorter than ${schema.minLength}`;
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) return `${where}: below ${schema.minimum}`;
    if (schema.maximum !== undefined && value > schema.maximum) return `${where}: above ${schema.maximum}`;
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) return `${where}: fewer than ${schema.minItems} items`;
    if (schema.maxItems !== undefined && value.length > schema.maxItems) return `${where}: more than ${schema.maxItems} items`;
    if (schema.items) {
      for (let i = 0; i < value.length; i++) {
        const r = validate(value[i], schema.items, `${where}[${i}]`);
        if (r) return r;
      }
    }
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const k of schema.required || []) if (!(k in value)) return `${where}: missing ${k}`;
    const props = schema.properties || {};
    for (const [k, v] of Object.entries(value)) {
      if (props[k]) {
        const r = validate(v, props[k], `${where}.${k}`);
        if (r) return r;
      } else if (schema.additionalProperties === false) {
        return `${where}: unexpected key ${k}`;
      }
    }
  }
  return null;
}
