// The `airless ui` server against a stub API on this machine: what it forwards, how it signs,
// and what it refuses.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_BODY_BYTES, startUiServer, type UiServer } from '../../cli/ui.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

const seen: Seen[] = [];
let upstream: Server;
let apiUrl: string;
let ui: UiServer;
let bare: UiServer;
const uiDir = mkdtempSync(join(tmpdir(), 'airless-ui-'));

beforeAll(async () => {
  mkdirSync(join(uiDir, 'assets'));
  writeFileSync(join(uiDir, 'index.html'), '<!doctype html><title>Airless</title>');
  writeFileSync(join(uiDir, 'assets', 'app.js'), 'console.log(1)');
  upstream = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (req.url?.endsWith('/logs?attempt=2')) {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('line 1\nline 2\n');
        return;
      }
      res.writeHead(req.url?.includes('missing') ? 404 : 201, {
        'content-type': 'application/json',
      });
      res.end(JSON.stringify({ error: 'as the API said it', echo: body }));
    });
  });
  await new Promise<void>((ok) => upstream.listen(0, '127.0.0.1', ok));
  // A path prefix, as the emulator's API URLs have.
  apiUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/_aws/execute-api/abc`;
  const credentials = async () => ({ accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' });
  ui = await startUiServer({ apiUrl, region: 'eu-west-1', port: 0, uiDir, credentials });
  bare = await startUiServer({
    apiUrl,
    region: 'eu-west-1',
    port: 0,
    uiDir: join(uiDir, 'nothing-here'),
    credentials,
  });
});

afterAll(async () => {
  await ui.close();
  await bare.close();
  await new Promise((ok) => upstream.close(ok));
});

const at = (path: string) => new URL(path, ui.url).href;

describe('airless ui server', () => {
  it('listens on loopback on the port it was given (0 picks one)', () => {
    expect(ui.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(ui.port).toBeGreaterThan(0);
  });

  it('forwards /v1 requests signed with SigV4, passing status and body through unchanged', async () => {
    seen.length = 0;
    const res = await fetch(at('/v1/dags/d1/runs/manual__2026-03-09T06%3A30%3A00%2B00'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"conf":{"a":1}}',
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ error: 'as the API said it', echo: '{"conf":{"a":1}}' });
    expect(seen).toHaveLength(1);
    const got = seen[0] as Seen;
    expect(got.method).toBe('POST');
    expect(got.url).toBe(
      '/_aws/execute-api/abc/v1/dags/d1/runs/manual__2026-03-09T06%3A30%3A00%2B00',
    );
    expect(got.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/eu-west-1\/execute-api\/aws4_request, /,
    );
    expect(got.headers['x-amz-date']).toBeTruthy();
  });

  it('passes refusals and text answers through with their status and type', async () => {
    const missing = await fetch(at('/v1/dags/missing'));
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBe('as the API said it');

    const log = await fetch(at('/v1/dags/d1/runs/r1/tasks/t1/logs?attempt=2'));
    expect(log.status).toBe(200);
    expect(log.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await log.text()).toBe('line 1\nline 2\n');
    expect(seen.at(-1)?.url).toBe(
      '/_aws/execute-api/abc/v1/dags/d1/runs/r1/tasks/t1/logs?attempt=2',
    );
  });

  it('refuses a body over 1 MiB before forwarding it', async () => {
    seen.length = 0;
    const res = await fetch(at('/v1/dags'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: 'x'.repeat(MAX_BODY_BYTES + 1),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toMatch(/over the 1048576-byte limit/);
    expect(seen).toHaveLength(0);
  });

  it('forwards only GET, POST, PATCH, PUT and DELETE', async () => {
    seen.length = 0;
    const res = await fetch(at('/v1/dags'), { method: 'OPTIONS' });
    expect(res.status).toBe(405);
    expect(((await res.json()) as { error: string }).error).toMatch(/OPTIONS is not forwarded/);
    expect(seen).toHaveLength(0);
  });

  it('refuses API calls from another origin', async () => {
    seen.length = 0;
    const res = await fetch(at('/v1/dags/d1'), {
      method: 'PATCH',
      headers: { origin: 'https://elsewhere.example', 'content-type': 'text/plain' },
      body: '{"paused":true}',
    });
    expect(res.status).toBe(403);
    expect(seen).toHaveLength(0);
  });

  it('serves the files of the build, and the page itself for every route', async () => {
    const asset = await fetch(at('/assets/app.js'));
    expect(asset.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await asset.text()).toBe('console.log(1)');
    // A run id holds dots and escaped colons: still a route, not a file.
    for (const path of ['/', '/dags', '/dags/d1/runs/manual__2026-03-09T06%3A30%3A00.000Z__ab']) {
      const page = await fetch(at(path));
      expect(page.status, path).toBe(200);
      expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
      expect(await page.text()).toContain('<title>Airless</title>');
    }
    expect((await fetch(at('/assets/nope.js'))).status).toBe(404);
    expect((await fetch(at('/assets/..%2f..%2fetc%2fpasswd'))).status).toBe(404);
  });

  it('survives request paths that are not URLs, as any web page can make a browser send', async () => {
    const port = ui.port;
    for (const path of ['//[', '//evil.example/v1/dags', '*']) {
      const status = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.write(
            `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
          );
        });
        let text = '';
        socket.on('data', (d: Buffer) => {
          text += d.toString();
        });
        socket.on('end', () => resolve(text.split('\r\n')[0] ?? ''));
        socket.on('error', reject);
      });
      expect(status, path).toMatch(/^HTTP\/1\.1 (200|400|404)/);
    }
    // Still serving.
    expect((await fetch(at('/'))).status).toBe(200);
  });

  it('says to build the UI when it is not built', async () => {
    const res = await fetch(new URL('/dags', bare.url));
    expect(res.status).toBe(503);
    expect(await res.text()).toContain('npm run build:ui');
  });
});
