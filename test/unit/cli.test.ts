import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { findLocalFile, regionOfApiUrl, resolveTarget } from '../../cli/config.ts';
import { attemptFinished } from '../../cli/logs.ts';
import { parseConf } from '../../cli/runs.ts';

/** Runs the real `airless` command (bin/airless.mjs, bundled by the global setup). */
async function airless(args: string[], cwd = '.', env: NodeJS.ProcessEnv = process.env) {
  const bin = new URL('../../bin/airless.mjs', import.meta.url).pathname;
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], {
      cwd,
      env,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const INVALID = 'test/fixtures/dags/invalid';

describe('airless validate', () => {
  it('passes every example DAG', async () => {
    const files = readdirSync('examples/dags').map((f) => `examples/dags/${f}`);
    expect(files.length).toBeGreaterThanOrEqual(3);
    const r = await airless(['validate', ...files]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(files.length);
  });

  it.each(
    readdirSync(INVALID)
      .filter((f) => f.endsWith('.expected'))
      .map((f) => f.replace(/\.expected$/, '')),
  )('prints FILE: PATH: MESSAGE for each problem in %s.json', async (name) => {
    const r = await airless(['validate', `${name}.json`], INVALID);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(readFileSync(`${INVALID}/${name}.expected`, 'utf8'));
  });

  it('reports malformed JSON on one line at $', async () => {
    const r = await airless(['validate', 'malformed.json'], INVALID);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^malformed\.json: \$: invalid JSON: [^\n]+\n$/);
  });

  it('checks every file and fails if any is invalid', async () => {
    const r = await airless([
      'validate',
      'examples/dags/daily_sales.json',
      `${INVALID}/cycle.json`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('examples/dags/daily_sales.json: ok');
    expect(r.stdout).toContain('cycle.json: $.tasks[0].dependsOn[0]: dependency cycle');
  });

  it('reports a missing file', async () => {
    const r = await airless(['validate', 'no-such.json']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^no-such\.json: \$: cannot read file: ENOENT/);
  });
});

describe('airless next-runs', () => {
  it('prints UTC ISO-8601 times with milliseconds, one per line, skipping the DST gap', async () => {
    const r = await airless([
      'next-runs',
      'examples/dags/daily_sales.json',
      '-n',
      '3',
      '--after',
      '2026-03-06T12:00:00Z',
    ]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    // 02:30 New York does not exist on 2026-03-08.
    expect(r.stdout).toBe(
      '2026-03-07T07:30:00.000Z\n2026-03-09T06:30:00.000Z\n2026-03-10T06:30:00.000Z\n',
    );
  });

  it('defaults to 5 times after now', async () => {
    const before = Date.now();
    const r = await airless(['next-runs', 'examples/dags/ml_features.json']);
    const times = r.stdout
      .trim()
      .split('\n')
      .map((t) => new Date(t).getTime());
    expect(times).toHaveLength(5);
    // Strictly after the command's "now", which is no earlier than `before`.
    expect(times[0]).toBeGreaterThan(before);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
  });

  it('says so for a manual-only DAG', async () => {
    const r = await airless(['next-runs', 'examples/dags/customer_backfill.json']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      'examples/dags/customer_backfill.json: $.schedule: the DAG has no schedule; it runs only when triggered\n',
    );
  });

  it('validates the file first', async () => {
    const r = await airless(['next-runs', 'cycle.json'], INVALID);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('cycle.json: $.tasks[0].dependsOn[0]: dependency cycle');
  });

  it.each([
    [['-n', '0'], /option '-n <count>' argument '0' is invalid/],
    [['-n', 'lots'], /must be a whole number/],
    [['--after', 'yesterday'], /option '--after <iso>' argument 'yesterday' is invalid/],
  ])('refuses bad options %j, naming the option', async (opts, message) => {
    const r = await airless(['next-runs', 'examples/dags/daily_sales.json', ...opts]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});

describe('airless --help', () => {
  it.each([
    [[]],
    [['validate']],
    [['next-runs']],
    [['dags']],
    [['dags', 'push']],
    [['runs', 'trigger']],
    [['runs', 'wait']],
    [['tasks', 'clear']],
    [['logs']],
  ])('airless %j --help', async (cmd) => {
    const r = await airless([...cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: airless/);
  });

  it('an unknown command is a usage error', async () => {
    const r = await airless(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});

describe('which deployment the CLI calls', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airless-cli-'));
  mkdirSync(join(dir, '.airless'));
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
  writeFileSync(
    join(dir, '.airless', 'local.json'),
    JSON.stringify({ apiUrl: 'http://127.0.0.1:4566/_aws/execute-api/abc', region: 'eu-west-3' }),
  );
  const nowhere = mkdtempSync(join(tmpdir(), 'airless-none-'));

  it('finds .airless/local.json from a folder below it', () => {
    expect(findLocalFile(join(dir, 'sub', 'deeper'))).toBe(join(dir, '.airless', 'local.json'));
    expect(findLocalFile(nowhere)).toBeUndefined();
  });

  it('takes --api, then AIRLESS_API_URL, then local.json', () => {
    const env = { AIRLESS_API_URL: 'https://env.example.com/' };
    expect(resolveTarget({ api: 'https://flag.example.com/' }, env, dir).apiUrl).toBe(
      'https://flag.example.com/',
    );
    expect(resolveTarget({}, env, dir)).toMatchObject({
      apiUrl: 'https://env.example.com/',
      source: 'AIRLESS_API_URL',
      local: false,
    });
    expect(resolveTarget({}, {}, join(dir, 'sub'))).toEqual({
      apiUrl: 'http://127.0.0.1:4566/_aws/execute-api/abc',
      region: 'eu-west-3',
      source: join(dir, '.airless', 'local.json'),
      local: true,
    });
  });

  it('takes the region from --region, AWS_REGION, the API host, local.json', () => {
    const aws = 'https://a1b2c3.execute-api.ap-south-1.amazonaws.com/';
    expect(regionOfApiUrl(aws)).toBe('ap-south-1');
    expect(resolveTarget({ api: aws, region: 'us-west-2' }, { AWS_REGION: 'x' }, dir).region).toBe(
      'us-west-2',
    );
    expect(resolveTarget({ api: aws }, { AWS_REGION: 'eu-north-1' }, dir).region).toBe(
      'eu-north-1',
    );
    expect(resolveTarget({ api: aws }, {}, dir).region).toBe('ap-south-1');
    expect(resolveTarget({ api: 'http://localhost:9/' }, {}, dir).region).toBe('eu-west-3');
    expect(resolveTarget({ api: 'http://localhost:9/' }, {}, nowhere).region).toBe('us-east-1');
  });

  it('refuses no URL, or one that is not http(s)', () => {
    expect(() => resolveTarget({}, {}, nowhere)).toThrow(/no API URL: pass --api URL/);
    expect(() => resolveTarget({ api: 'ftp://x' }, {}, nowhere)).toThrow(/not an http\(s\) URL/);
  });

  it('says how to name a deployment when it has none, as a usage error', async () => {
    const env = { PATH: process.env.PATH ?? '' };
    const r = await airless(['dags', 'list'], nowhere, env);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toMatch(/^airless: no API URL: pass --api URL, set AIRLESS_API_URL/);
  });

  it('names the API it cannot reach, and exits 1', async () => {
    const r = await airless(['dags', 'show', 'x', '--api', 'http://127.0.0.1:9/'], nowhere);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^airless: cannot reach the API at http:\/\/127\.0\.0\.1:9\/ \(from --api\)/,
    );
  });
});

describe('deployment commands: usage errors exit 2 before any request', () => {
  it.each([
    [
      ['runs', 'trigger', 'd', '--conf', '[1, 2]'],
      /option '--conf <json>' argument '\[1, 2\]' is invalid\. must be a JSON object/,
    ],
    [
      ['runs', 'trigger', 'd', '--conf', '{nope'],
      /option '--conf <json>' .* must be a JSON object: /,
    ],
    [
      ['runs', 'wait', 'd', 'r', '--timeout', '0'],
      /option '--timeout <seconds>' argument '0' is invalid/,
    ],
    [
      ['logs', 'd', 'r', 't', '--attempt', 'last'],
      /option '--attempt <n>' argument 'last' is invalid/,
    ],
    [['dags', 'list', '--limit', '500'], /must be a whole number from 1 to 100/],
    [['runs', 'get', 'd'], /missing required argument 'run'/],
    [['dags', 'frobnicate'], /unknown command 'frobnicate'/],
    [['dags'], /Usage: airless dags/],
  ])('airless %j', async (args, message) => {
    // No deployment at all: the arguments are refused before one is looked for.
    const r = await airless([...args, '--api', 'http://127.0.0.1:9/']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('parses --conf as a JSON object only', () => {
    expect(parseConf('{"day": "2026-03-09", "n": [1]}')).toEqual({ day: '2026-03-09', n: [1] });
    for (const bad of ['null', '"x"', '3', '[]', '{']) expect(() => parseConf(bad)).toThrow();
  });
});

describe('logs --follow stops when the attempt has finished', () => {
  it.each([
    [{ status: 'running', attempt: 2 }, 2, false],
    [{ status: 'queued', attempt: 2 }, 2, false],
    [{ status: 'pending', attempt: 0 }, 1, false],
    [{ status: 'success', attempt: 2 }, 2, true],
    [{ status: 'up_for_retry', attempt: 2 }, 2, true],
    [{ status: 'running', attempt: 3 }, 2, true],
    [{ status: 'up_for_retry', attempt: 1 }, 2, false],
    [{ status: 'upstream_failed', attempt: 0 }, 1, true],
    [{ status: 'cancelled', attempt: 1 }, 1, true],
  ])('%j, attempt %d → %s', (task, attempt, finished) => {
    expect(attemptFinished(task, attempt)).toBe(finished);
  });
});
