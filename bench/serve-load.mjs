// bench/serve-load.mjs: load on `duckling serve`. Streaming chat clients run back to back
// against one model, at 1, 2, 4 and 8 at once (--levels), each level for --seconds; for each
// level it prints the aggregate generated tokens/s, the per-stream tokens/s (each request's
// eval tokens over its decode time), first-token latency p50/p95 and the error count. The soak
// mode (--soak SECONDS --clients N) runs N streaming clients for that long, samples the
// server's resident memory (/proc/PID/status VmRSS) every 5 s, and prints the series, the
// errors (must be 0: the exit status is 1 otherwise) and the RSS growth from the 30 s mark
// to the end (a leak shows as steady growth).
//
//   bench/serve-load [--url http://127.0.0.1:11434 | --bin build/duckling] [--model NAME|F.gguf]
//                    [--api ollama|openai] [--levels 1,2,4,8] [--seconds 20] [--num-predict 64]
//                    [--temperature 0.8] [--parallel 8] [--threads N] [--soak SECONDS --clients N]
//                    [--pid PID] [--json] [--verbose]
//
// Without --url it starts `duckling serve` itself on a free loopback port, with a temporary
// DUCKLING_MODELS (removed at the end), DUCKLING_NUM_PARALLEL=--parallel (and serve --threads
// when given), and creates the
// model there from a GGUF (POST /api/create with "from": the path): by default a
// random-weight smollm2-135m-shape Q8_0 model written once by `duckling synth` into
// $DUCKLING_BENCH_MODELS (default build/bench-models), as bench/compare makes them (speed does
// not depend on the weights' values). With --url it uses that server and --model as named
// (the RSS is sampled only with --pid PID or when the server is on this machine and was
// started here). Requests: Ollama's POST /api/chat (options temperature, num_predict), or
// with --api openai POST /v1/chat/completions (temperature, max_tokens, stream_options
// include_usage). Bounded in time: each request is aborted 60 s after its level ends.
// --json prints one JSON object on stdout (the human-readable lines then go to stderr).
// A benchmark, not a test.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function usage(code) {
  const text = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n');
  const end = text.findIndex((l) => !l.startsWith('//'));
  process.stderr.write(text.slice(0, end).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
  process.exit(code);
}

function parseArgs(argv) {
  const a = {
    url: null, bin: process.env.DUCKLING_BIN || 'build/duckling', model: null, api: 'ollama',
    levels: [1, 2, 4, 8], seconds: 20, numPredict: 64, temperature: 0.8, parallel: 8,
    soak: 0, clients: 8, json: false, pid: 0, threads: 0, verbose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) { process.stderr.write(`serve-load: ${k} needs a value\n`); process.exit(2); }
      return argv[++i];
    };
    const num = () => {
      const s = v(), n = Number(s);
      if (!Number.isFinite(n) || n < 0) { process.stderr.write(`serve-load: ${k}: bad number '${s}'\n`); process.exit(2); }
      return n;
    };
    switch (k) {
      case '--url': a.url = v().replace(/\/+$/, ''); break;
      case '--bin': a.bin = v(); break;
      case '--model': a.model = v(); break;
      case '--api': a.api = v(); break;
      case '--levels': a.levels = v().split(',').map(Number); break;
      case '--seconds': a.seconds = num(); break;
      case '--num-predict': a.numPredict = num(); break;
      case '--temperature': a.temperature = num(); break;
      case '--parallel': a.parallel = num(); break;
      case '--soak': a.soak = num(); break;
      case '--clients': a.clients = num(); break;
      case '--pid': a.pid = num(); break;
      case '--threads': a.threads = num(); break;
      case '--json': a.json = true; break;
      case '-v': case '--verbose': a.verbose = true; break;
      case '-h': case '--help': usage(0); break;
      default: process.stderr.write(`serve-load: unknown option ${k}\n`); process.exit(2);
    }
  }
  if (a.api !== 'ollama' && a.api !== 'openai') { process.stderr.write('serve-load: --api ollama|openai\n'); process.exit(2); }
  if (a.levels.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) { process.stderr.write('serve-load: bad --levels\n'); process.exit(2); }
  if (a.soak > 3600 || a.seconds > 3600) { process.stderr.write('serve-load: at most 3600 s\n'); process.exit(2); }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const say = (line) => (args.json ? process.stderr : process.stdout).write(line + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function runChild(cmd, argv, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${argv.join(' ')}: exit ${code}: ${err.trim()}`))));
  });
}

// The default model: smollm2-135m shapes, Q8_0, synthesised once.
async function defaultModel(bin) {
  const dir = path.resolve(root, process.env.DUCKLING_BENCH_MODELS || 'build/bench-models');
  const file = path.join(dir, 'smollm2-135m.Q8_0.gguf');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    say(`synth ${file}`);
    await runChild(bin, ['synth', '--preset', 'smollm2-135m', '--quant', 'Q8_0', '--out', file]);
  }
  return file;
}

async function startServer(bin) {
  const port = await freePort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duckling-serve-load-'));
  const env = {
    DUCKLING_MODELS: path.join(tmp, 'models'), OLLAMA_MODELS: path.join(tmp, 'ollama'),
    DUCKLING_NUM_PARALLEL: String(args.parallel), DUCKLING_HOST: '', OLLAMA_HOST: '',
  };
  fs.mkdirSync(env.OLLAMA_MODELS);
  const extra = args.threads ? ['--threads', String(args.threads)] : [];
  const child = spawn(bin, ['serve', '--host', '127.0.0.1', '--port', String(port), ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env },
  });
  let log = '';
  child.stderr.on('data', (d) => { log = (log + d).slice(-4000); });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`duckling serve exited (${child.exitCode}): ${log.trim()}`);
    try {
      if ((await fetch(url + '/')).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('duckling serve did not answer GET / within 20 s'); }
    await sleep(100);
  }
  return {
    url, pid: child.pid, log: () => log,
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15000);
      const r = await exited;
      clearTimeout(t);
      fs.rmSync(tmp, { recursive: true, force: true });
      return r;
    },
  };
}

async function postJson(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${url}: ${r.status} ${text.slice(0, 300)}`);
  return text;
}

const prompts = [
  'Tell me a short story about a duck who learns to fly.',
  'Write three sentences about the sea.',
  'Explain why the sky is blue in simple words.',
  'Describe a busy market in the morning.',
  'What makes a good friend? Answer briefly.',
  'List a few things you can do on a rainy day.',
  'Write a haiku about autumn leaves.',
  'Summarise the plot of a fairy tale you like.',
];

// Reads a streamed body line by line (NDJSON, or SSE "data: ..." lines).
async function* lines(body) {
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) yield line;
    }
  }
  if (buf.trim()) yield buf.trim();
}

// One streamed chat request; resolves {tokens, ttft_ms, decode_ms, total_ms} or throws.
async function oneRequest(url, model, i, signal) {
  const messages = [{ role: 'user', content: prompts[i % prompts.length] }];
  const t0 = performance.now();
  let first = 0, tokens = 0, done = false, chunks = 0;
  const openai = args.api === 'openai';
  const body = openai
    ? { model, messages, stream: true, temperature: args.temperature, max_tokens: args.numPredict,
        stream_options: { include_usage: true } }
    : { model, messages, stream: true, options: { temperature: args.temperature, num_predict: args.numPredict } };
  const r = await fetch(url + (openai ? '/v1/chat/completions' : '/api/chat'), {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal,
  });
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`);
  for await (const line of lines(r.body)) {
    let obj;
    if (openai) {
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') { done = true; break; }
      obj = JSON.parse(data);
      if (obj.error) throw new Error(obj.error.message || JSON.stringify(obj.error));
      const delta = obj.choices?.[0]?.delta;
      if (delta && (delta.content || delta.reasoning || delta.tool_calls)) {
        chunks++;
        if (!first) first = performance.now();
      }
      if (obj.usage) tokens = obj.usage.completion_tokens;
    } else {
      obj = JSON.parse(line);
      if (obj.error) throw new Error(obj.error);
      if (!obj.done && obj.message && (obj.message.content || obj.message.thinking || obj.message.tool_calls)) {
        chunks++;
        if (!first) first = performance.now();
      }
      if (obj.done) { tokens = obj.eval_count ?? chunks; done = true; break; }
    }
  }
  if (!done) throw new Error('stream ended without its final message');
  const t1 = performance.now();
  if (!first) first = t1;
  if (!tokens) tokens = chunks;
  return { tokens, ttft_ms: first - t0, decode_ms: t1 - first, total_ms: t1 - t0 };
}

function pct(values, p) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

// n clients back to back for seconds; returns the level's statistics.
async function runLevel(url, model, n, seconds, onSample) {
  const results = [], errors = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const abort = new AbortController();
  const guard = setTimeout(() => abort.abort(), seconds * 1000 + 60000);
  let sampler = null;
  if (onSample) sampler = setInterval(() => onSample((performance.now() - t0) / 1000), 5000);
  let counter = 0;
  const client = async (c) => {
    while (performance.now() < end && !abort.signal.aborted) {
      try {
        const r = await oneRequest(url, model, c + n * counter++, abort.signal);
        results.push(r);
        if (args.verbose) {
          say(`    client ${c}: ${r.tokens} tokens, first ${r.ttft_ms.toFixed(0)} ms, decode ${r.decode_ms.toFixed(0)} ms, ` +
              `total ${r.total_ms.toFixed(0)} ms, done at ${((performance.now() - t0) / 1000).toFixed(2)} s`);
        }
      } catch (e) {
        errors.push(String(e.message || e));
        if (abort.signal.aborted) break;
        await sleep(200); // a failing server must not turn this into a busy loop
      }
    }
  };
  await Promise.all(Array.from({ length: n }, (_, c) => client(c)));
  clearTimeout(guard);
  if (sampler) clearInterval(sampler);
  const elapsed = (performance.now() - t0) / 1000;
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  const perStream = results.filter((r) => r.decode_ms > 0 && r.tokens > 1).map((r) => (r.tokens - 1) / (r.decode_ms / 1000));
  const ttft = results.map((r) => r.ttft_ms);
  return {
    clients: n, seconds: +elapsed.toFixed(2), requests: results.length, errors: errors.length,
    error_samples: [...new Set(errors)].slice(0, 3), tokens,
    aggregate_tps: +(tokens / elapsed).toFixed(2),
    per_stream_tps_mean: +(perStream.reduce((s, x) => s + x, 0) / (perStream.length || 1)).toFixed(2),
    per_stream_tps_p50: +pct(perStream, 50).toFixed(2),
    ttft_ms_p50: +pct(ttft, 50).toFixed(1), ttft_ms_p95: +pct(ttft, 95).toFixed(1),
  };
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function main() {
  let server = null;
  let url = args.url, pid = args.pid || 0, model = args.model;
  const out = { machine: `${os.cpus()[0]?.model || '?'}, ${os.cpus().length} cores`, api: args.api,
                num_predict: args.numPredict, temperature: args.temperature };
  let failed = false;
  // Bounded: the whole run may not exceed its planned time by more than 5 minutes.
  const planned = args.soak ? args.soak : args.seconds * args.levels.length;
  const killer = setTimeout(() => { process.stderr.write('serve-load: over time, giving up\n'); process.exit(3); },
                            (planned + 300) * 1000);
  killer.unref();
  try {
    if (!url) {
      const bin = path.resolve(root, args.bin);
      if (!fs.existsSync(bin)) throw new Error(`${bin} not found (make first, or --bin)`);
      const gguf = model && model.endsWith('.gguf') ? path.resolve(model) : (model ? null : await defaultModel(bin));
      server = await startServer(bin);
      url = server.url;
      pid = server.pid;
      if (gguf) {
        model = 'bench:latest';
        const t = performance.now();
        await postJson(url + '/api/create', { model, from: gguf, stream: false });
        say(`created ${model} from ${path.relative(root, gguf) || gguf} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      }
      out.parallel = args.parallel;
    } else if (!model) {
      throw new Error('--url needs --model NAME');
    }
    out.url = url;
    out.model = model;
    const warm = performance.now();
    await oneRequest(url, model, 0, AbortSignal.timeout(300000));
    say(`server ${url}, model ${model}, ${out.machine}; warm-up request ${((performance.now() - warm) / 1000).toFixed(1)} s (load included)`);

    if (args.soak) {
      const series = [];
      const sample = (t) => {
        const kib = pid ? rssKiB(pid) : null;
        series.push({ t: Math.round(t), rss_mib: kib === null ? null : +(kib / 1024).toFixed(1) });
        say(`  t=${String(Math.round(t)).padStart(4)} s  rss ${kib === null ? '?' : (kib / 1024).toFixed(1) + ' MiB'}`);
      };
      say(`soak: ${args.clients} streaming clients for ${args.soak} s, RSS every 5 s`);
      sample(0);
      const level = await runLevel(url, model, args.clients, args.soak, sample);
      sample(level.seconds);
      // From the 30 s mark (allocator and caches warm by then); from the start in a shorter run.
      const from = args.soak >= 35 ? 30 : 0;
      const base = series.find((s) => s.t >= from && s.rss_mib !== null);
      const last = series[series.length - 1];
      const growth = base && last.rss_mib !== null ? +(last.rss_mib - base.rss_mib).toFixed(1) : null;
      out.soak = { ...level, rss_series: series, rss_growth_from_s: from, rss_growth_mib: growth };
      say(`soak: ${level.requests} requests, ${level.tokens} tokens, ${level.aggregate_tps} tok/s aggregate, errors ${level.errors}` +
          (level.errors ? ` (${level.error_samples.join(' | ')})` : ''));
      say(`soak: RSS growth from the ${from} s mark to the end: ${growth === null ? '? (no RSS: pass --pid)' : growth + ' MiB'}`);
      if (level.errors) failed = true;
    } else {
      out.levels = [];
      say(`${'clients'.padStart(7)} ${'requests'.padStart(8)} ${'tokens'.padStart(7)} ${'agg tok/s'.padStart(10)} ` +
          `${'stream tok/s'.padStart(12)} ${'ttft p50'.padStart(9)} ${'ttft p95'.padStart(9)} ${'errors'.padStart(6)}`);
      for (const n of args.levels) {
        const l = await runLevel(url, model, n, args.seconds);
        out.levels.push(l);
        say(`${String(n).padStart(7)} ${String(l.requests).padStart(8)} ${String(l.tokens).padStart(7)} ` +
            `${l.aggregate_tps.toFixed(2).padStart(10)} ${l.per_stream_tps_mean.toFixed(2).padStart(12)} ` +
            `${(l.ttft_ms_p50.toFixed(0) + ' ms').padStart(9)} ${(l.ttft_ms_p95.toFixed(0) + ' ms').padStart(9)} ` +
            `${String(l.errors).padStart(6)}` + (l.errors ? `  (${l.error_samples.join(' | ')})` : ''));
        if (l.errors) failed = true;
      }
    }
  } catch (e) {
    process.stderr.write(`serve-load: ${e.message || e}\n`);
    if (server) process.stderr.write(`server log tail:\n${server.log()}\n`);
    failed = true;
    out.error = String(e.message || e);
  } finally {
    if (server) {
      const r = await server.stop();
      out.server_exit = r.signal ? r.signal : r.code;
      if (r.code !== 0) say(`server exit: ${r.signal || r.code}`);
    }
  }
  if (args.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  process.exit(failed ? 1 : 0);
}

main();
