// registry.mjs: a stand-in for an Ollama model registry (registry.ollama.ai) on loopback, for
// the tests of `duckling pull` and POST /api/pull. It speaks the registry protocol the real
// one speaks (the Docker/OCI distribution API as Ollama uses it):
//
//   GET|HEAD /v2/                                    200 {}  (API version check)
//   GET|HEAD /v2/NS/MODEL/manifests/TAG              the manifest, Content-Type
//            application/vnd.docker.distribution.manifest.v2+json: schemaVersion 2, a config
//            blob (application/vnd.docker.container.image.v1+json) and layers
//            (application/vnd.ollama.image.model = the GGUF, .template, .system, .params, ...),
//            each {mediaType, digest: "sha256:HEX", size} with the real digest and size
//   GET|HEAD /v2/NS/MODEL/blobs/sha256:HEX           the blob; honours "Range: bytes=A-[B]"
//            (206 + Content-Range; 416 past the end); or a 307 redirect to /cdn/sha256:HEX
//            when redirects are on (the real registry sends blobs to a CDN that way)
//   unknown names or digests: 404 {"errors":[{"code":"MANIFEST_UNKNOWN"|"BLOB_UNKNOWN",...}]}
//
// Faults can be switched on per blob, for the next request only: `cutOnce(digest)` sends
// the headers and half of the body, then destroys the socket (a dropped connection: the
// client must resume with a Range request); `corruptOnce(digest)` / `corrupt(digest)` sends
// the right number of bytes with different content (the client must reject the digest).
// Every request is logged in `requests` ({method, path, range, status}) for the tests to
// assert on.
//
// Not for: pushing (no uploads), authentication tokens (loopback needs none).
//
// Use:
//   const reg = await startRegistry();
//   const m = reg.addModel('library/tiny:latest', { gguf: '/path/model.gguf', template: '...',
//                                                   params: { temperature: 0 } });
//   // pull `${reg.host}/library/tiny:latest` with insecure: true
//   await reg.close();
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

export const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
export const CONFIG_TYPE = 'application/vnd.docker.container.image.v1+json';
export const LAYER_TYPES = {
  model: 'application/vnd.ollama.image.model',
  template: 'application/vnd.ollama.image.template',
  system: 'application/vnd.ollama.image.system',
  params: 'application/vnd.ollama.image.params',
  license: 'application/vnd.ollama.image.license',
  messages: 'application/vnd.ollama.image.messages',
};

export function sha256(buf) {
  return 'sha256:' + crypto.createHash('sha256').update(buf).digest('hex');
}

// "[NS/]MODEL[:TAG]" -> "NS/MODEL" and TAG (defaults: library, latest), lower case as
// Ollama's names are case-insensitive.
function splitName(name) {
  let tag = 'latest';
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  if (!name.includes('/')) name = 'library/' + name;
  return { repo: name.toLowerCase(), tag: tag.toLowerCase() };
}

function parseRange(header, size) {
  // Only the single-range forms clients use: bytes=A- and bytes=A-B.
  const m = /^bytes=(\d+)-(\d*)$/.exec(header || '');
  if (!m) return null;
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { start, end };
}

export async function startRegistry({ host = '127.0.0.1', port = 0 } = {}) {
  const blobs = new Map();      // digest -> Buffer
  const manifests = new Map();  // "ns/model:tag" -> Buffer (the manifest's JSON bytes)
  const faults = new Map();     // digest -> {kind: 'cut'|'corrupt', once: bool}
  const requests = [];
  let redirects = false;
  let delayMs = 0;              // per blob chunk, to make a transfer slow enough to cancel

  function addBlob(buf) {
    const digest = sha256(buf);
    blobs.set(digest, buf);
    return { digest, size: buf.length };
  }

  // Registers a model; returns {name, manifest, digests: {model, template, params, ..., config}}.
  function addModel(name, { gguf, template, system, params, license, messages, family = 'llama' }) {
    const data = Buffer.isBuffer(gguf) ? gguf : fs.readFileSync(gguf);
    const layers = [];
    const digests = {};
    const add = (kind, buf) => {
      const b = addBlob(buf);
      layers.push({ mediaType: LAYER_TYPES[kind], digest: b.digest, size: b.size });
      digests[kind] = b.digest;
    };
    add('model', data);
    if (template !== undefined) add('template', Buffer.from(template));
    if (system !== undefined) add('system', Buffer.from(system));
    if (license !== undefined) add('license', Buffer.from(license));
    if (params !== undefined) add('params', Buffer.from(JSON.stringify(params)));
    if (messages !== undefined) add('messages', Buffer.from(JSON.stringify(messages)));
    const configJson = {
      model_format: 'gguf', model_family: family, model_families: [family],
      model_type: '', file_type: '', architecture: 'amd64', os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    };
    const cfg = addBlob(Buffer.from(JSON.stringify(configJson)));
    digests.config = cfg.digest;
    const manifest = {
      schemaVersion: 2, mediaType: MANIFEST_TYPE,
      config: { mediaType: CONFIG_TYPE, digest: cfg.digest, size: cfg.size },
      layers,
    };
    const { repo, tag } = splitName(name);
    manifests.set(`${repo}:${tag}`, Buffer.from(JSON.stringify(manifest)));
    return { name: `${repo}:${tag}`, manifest, digests, size: data.length };
  }

  function removeModel(name) {
    const { repo, tag } = splitName(name);
    manifests.delete(`${repo}:${tag}`);
  }

  function sendError(res, status, code, message) {
    const body = JSON.stringify({ errors: [{ code, message, detail: {} }] });
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return status;
  }

  async function writeSlowly(res, buf) {
    const step = 64 * 1024;
    for (let i = 0; i < buf.length; i += step) {
      if (res.destroyed) return;
      const ok = res.write(buf.subarray(i, Math.min(buf.length, i + step)));
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      else if (!ok) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  }

  function serveBlob(req, res, digest) {
    const data = blobs.get(digest);
    if (!data) return sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
    const headers = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes',
                      'Docker-Content-Digest': digest };
    let body = data;
    let status = 200;
    const range = req.headers.range ? parseRange(req.headers.range, data.length) : null;
    if (req.headers.range && !range) return sendError(res, 416, 'RANGE_INVALID', 'bad range');
    if (range) {
      if (range.start >= data.length || range.start > range.end) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
        res.end();
        return 416;
      }
      body = data.subarray(range.start, range.end + 1);
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${data.length}`;
      status = 206;
    }
    headers['Content-Length'] = body.length;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return status;
    }
    const fault = faults.get(digest);
    if (fault && fault.once) faults.delete(digest);
    if (fault && fault.kind === 'cut') {
      // Half of what was asked for, then a dropped connection (no clean end of the body).
      const half = body.subarray(0, Math.max(1, Math.floor(body.length / 2)));
      res.write(half, () => setTimeout(() => res.destroy(), 50));
      return `${status} cut`;
    }
    if (fault && fault.kind === 'corrupt') {
      const bad = Buffer.from(body);
      for (let i = 0; i < bad.length; i += 997) bad[i] ^= 0x5a;
      bad[bad.length - 1] ^= 0xff;
      writeSlowly(res, bad);
      return `${status} corrupt`;
    }
    writeSlowly(res, body);
    return status;
  }

  function handle(req, res) {
    const url = new URL(req.url, 'http://x');
    const path = decodeURIComponent(url.pathname);
    const entry = { method: req.method, path, range: req.headers.range || null, status: 0 };
    requests.push(entry);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      entry.status = sendError(res, 405, 'UNSUPPORTED', 'method not allowed');
      return;
    }
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' });
      res.end('{}');
      entry.status = 200;
      return;
    }
    let m = /^\/cdn\/(sha256:[0-9a-f]{64})$/.exec(path);
    if (m) {
      entry.status = serveBlob(req, res, m[1]);
      return;
    }
    m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
    if (m) {
      const manifest = manifests.get(`${m[1].toLowerCase()}:${m[2].toLowerCase()}`);
      if (!manifest) {
        entry.status = sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${m[1]}:${m[2]}`);
        return;
      }
      res.writeHead(200, { 'Content-Type': MANIFEST_TYPE, 'Content-Length': manifest.length,
                           'Docker-Content-Digest': sha256(manifest) });
      res.end(req.method === 'HEAD' ? undefined : manifest);
      entry.status = 200;
      return;
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
    if (m) {
      if (redirects && blobs.has(m[2])) {
        res.writeHead(307, { Location: `/cdn/${m[2]}`, 'Content-Length': 0 });
        res.end();
        entry.status = 307;
        return;
      }
      entry.status = serveBlob(req, res, m[2]);
      return;
    }
    entry.status = sendError(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry');
  }

  const server = http.createServer(handle);
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address().port;

  return {
    port: bound,
    host: `${host}:${bound}`,             // the HOST part of a model name
    url: `http://${host}:${bound}`,
    requests,
    blobs,
    addModel,
    removeModel,
    addBlob,
    cutOnce(digest) { faults.set(digest, { kind: 'cut', once: true }); },
    corruptOnce(digest) { faults.set(digest, { kind: 'corrupt', once: true }); },
    corrupt(digest) { faults.set(digest, { kind: 'corrupt', once: false }); },
    clearFaults() { faults.clear(); },
    setRedirects(on) { redirects = !!on; },
    setDelay(ms) { delayMs = ms; },
    // The requests for one blob (by digest), e.g. to find the resuming Range request.
    blobRequests(digest) { return requests.filter((r) => r.path.endsWith('/' + digest)); },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
