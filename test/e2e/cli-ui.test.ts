import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { local } from './stack.ts';

/**
 * `airless ui` as a user runs it: the built command, against the local stack, on a free port.
 * The browser tests (ui.test.ts) drive the same server in-process; this holds the command itself:
 * that it prints its URL, serves the page, signs what it forwards, refuses other origins and
 * hosts, and stops on SIGINT.
 */

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin', 'airless.mjs');
const env = {
  ...process.env,
  AIRLESS_API_URL: local.apiUrl,
  AWS_ACCESS_KEY_ID: 'test',
  AWS_SECRET_ACCESS_KEY: 'test',
  NO_COLOR: '1',
};

let child: ChildProcess;
let stdout = '';
let url = '';
let exited: Promise<number | null>;

beforeAll(async () => {
  child = spawn(process.execPath, [bin, 'ui', '--port', '0'], { cwd: root, env });
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  exited = new Promise((done) => child.once('exit', (code) => done(code)));
  const line = await waitFor(
    async () => /UI {2}(http:\/\/127\.0\.0\.1:\d+\/)/.exec(stdout),
    (m) => m !== null,
    { timeoutMs: 30_000, intervalMs: 100, what: 'airless ui to print its URL' },
  );
  url = line?.[1] ?? '';
});

afterAll(() => {
  if (child.exitCode === null) child.kill('SIGKILL');
});

/** A GET with headers of our choosing (fetch will not set Host). */
function get(path: string, headers: Record<string, string> = {}) {
  const u = new URL(path, url);
  return new Promise<{ status: number; body: string; type: string }>((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, path: u.pathname, method: 'GET', headers },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body,
            type: String(res.headers['content-type'] ?? ''),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('airless ui', () => {
  it('serves the built page on loopback, for any of its routes', async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    for (const path of ['/', '/dags/some_dag/runs/manual__2026-01-01T00:00:00.000Z__x1']) {
      const page = await get(path);
      expect(page.status, path).toBe(200);
      expect(page.type).toMatch(/text\/html/);
      expect(page.body).toContain('<script');
    }
  });

  it('forwards the API signed: the API, which refuses unsigned calls, answers', async () => {
    const unsigned = await fetch(`${local.apiUrl}/v1/dags`);
    expect(unsigned.status).toBe(403);
    const r = await get('/v1/dags');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toHaveProperty('dags');
  });

  it("refuses another site's page and another host name (DNS rebinding)", async () => {
    const port = new URL(url).port;
    expect((await get('/v1/dags', { origin: 'http://evil.example' })).status).toBe(403);
    expect((await get('/v1/dags', { host: `evil.example:${port}` })).status).toBe(403);
    expect((await get('/v1/dags', { origin: `http://127.0.0.1:${port}` })).status).toBe(200);
  });

  it('exits 2 on a bad port, and stops cleanly on SIGINT', async () => {
    const bad = await promisify(execFile)(process.execPath, [bin, 'ui', '--port', '70000'], {
      cwd: root,
      env,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(2);
    expect((bad as { stderr: string }).stderr).toMatch(/port/);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
