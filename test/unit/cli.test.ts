import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/** Runs the real `airless` command (bin/airless.mjs, bundled by the global setup). */
async function airless(args: string[], cwd = '.') {
  const bin = new URL('../../bin/airless.mjs', import.meta.url).pathname;
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { cwd });
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
  it.each([[[]], [['validate']], [['next-runs']]])('airless %j --help', async (cmd) => {
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
