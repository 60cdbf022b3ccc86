import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, local, type RunView, uniqueDagId } from './stack.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin', 'airless.mjs');

/** The environment with no colour forced, no credentials and no API URL of its own. */
function bareEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of [
    'FORCE_COLOR',
    'NO_COLOR',
    'AIRLESS_API_URL',
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN',
    'AWS_PROFILE',
  ]) {
    delete env[k];
  }
  return env;
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built `airless` command against the local stack, by default with its API URL in
 * AIRLESS_API_URL and the emulator's `test` credentials, as a user would after `npm start`.
 */
async function airless(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<Result> {
  const env = opts.env ?? {
    ...bareEnv(),
    AIRLESS_API_URL: local.apiUrl,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  };
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], {
      cwd: opts.cwd ?? root,
      env,
      maxBuffer: 16 * 1024 * 1024,
      // A hung command fails the test rather than the whole run.
      timeout: 240_000,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const lines = (text: string) => text.trimEnd().split('\n');
const json = <T>(r: Result): T => JSON.parse(r.stdout) as T;
const ESC = '\x1b[';

function expectFits80(text: string) {
  for (const line of lines(text)) expect(line.length).toBeLessThanOrEqual(80);
  expect(text).not.toContain(ESC);
}

/** Every DAG id the API lists, following --next-token. */
async function listedDagIds(): Promise<string[]> {
  const ids: string[] = [];
  let token: string | undefined;
  for (let page = 0; page < 100; page++) {
    const r = await airless([
      'dags',
      'list',
      '--json',
      '--limit',
      '100',
      ...(token ? ['--next-token', token] : []),
    ]);
    expect(r.code).toBe(0);
    const body = json<{ dags: { dagId: string }[]; nextToken?: string }>(r);
    ids.push(...body.dags.map((d) => d.dagId));
    token = body.nextToken;
    if (!token) break;
  }
  return ids;
}

const dir = mkdtempSync(join(tmpdir(), 'airless-cli-e2e-'));
const ok = uniqueDagId('cli_ok');
const failing = uniqueDagId('cli_fail');
const sleepy = uniqueDagId('cli_sleep');
const files = {
  ok: join(dir, 'ok.json'),
  failing: join(dir, 'failing.json'),
  sleepy: join(dir, 'sleepy.json'),
};
const runOf = (dagId: string, runId: string) =>
  api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`);

beforeAll(() => {
  // The e2e project does not run the unit project's setup, which bundles the CLI.
  execFileSync(process.execPath, [join(root, 'scripts', 'build-cli.mjs')], { cwd: root });
  const write = (file: string, dag: unknown) =>
    writeFileSync(file, `${JSON.stringify(dag, null, 2)}\n`);
  write(files.ok, {
    dagId: ok,
    description: 'two steps that succeed',
    tasks: [
      { taskId: 'extract', operator: 'noop' },
      // Long enough that `runs trigger --wait` sees the run before it ends: a chain of noops
      // can end before the first read, and then no progress line is drawn.
      { taskId: 'load', operator: 'noop', dependsOn: ['extract'], config: { sleepSeconds: 2 } },
    ],
  });
  write(files.failing, {
    dagId: failing,
    tasks: [
      { taskId: 'start', operator: 'noop' },
      // Fails its first attempt only: a clear gives it attempt 2, which succeeds.
      { taskId: 'boom', operator: 'noop', dependsOn: ['start'], config: { failAttempts: 1 } },
      { taskId: 'after', operator: 'noop', dependsOn: ['boom'] },
    ],
  });
  write(files.sleepy, {
    dagId: sleepy,
    tasks: [{ taskId: 'nap', operator: 'noop', config: { sleepSeconds: 5 } }],
  });
});

describe('airless against the deployed local stack', () => {
  it('dags push creates DAGs from files, then finds them unchanged', async () => {
    const r = await airless(['dags', 'push', files.ok, files.failing, files.sleepy]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(lines(r.stdout)).toEqual([
      `${ok} 1 created`,
      `${failing} 1 created`,
      `${sleepy} 1 created`,
    ]);

    const again = await airless(['dags', 'push', files.ok, '--json']);
    expect(again.code).toBe(0);
    expect(json(again)).toEqual({ dagId: ok, version: 1 });
    expect(lines((await airless(['dags', 'push', files.ok])).stdout)).toEqual([
      `${ok} 1 unchanged`,
    ]);
  });

  it('dags push prints FILE: PATH: MESSAGE for a refused file, as validate does, and exits 1', async () => {
    const cycle = 'test/fixtures/dags/invalid/cycle.json';
    const validated = await airless(['validate', cycle]);
    const r = await airless(['dags', 'push', cycle, files.ok]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`${validated.stdout}${ok} 1 unchanged\n`);
    expect(r.stdout).toContain(`${cycle}: $.tasks[0].dependsOn[0]: dependency cycle`);

    const missing = await airless(['dags', 'push', join(dir, 'none.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toMatch(/none\.json: \$: cannot read file: ENOENT/);
  });

  it('dags list and show: a table within 80 columns, or the JSON', async () => {
    expect(await listedDagIds()).toEqual(expect.arrayContaining([ok, failing, sleepy]));
    const table = await airless(['dags', 'list', '--limit', '100']);
    expect(table.code).toBe(0);
    expect(lines(table.stdout)[0]).toMatch(/^DAG ID\s+VER\s+PAUSED\s+SCHEDULE/);
    expectFits80(table.stdout);

    const shown = await airless(['dags', 'show', ok, '--json']);
    expect(shown.code).toBe(0);
    expect(json(shown)).toMatchObject({
      dagId: ok,
      latestVersion: 1,
      paused: false,
      schedule: null,
      description: 'two steps that succeed',
    });
    const human = await airless(['dags', 'show', ok]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^DAG\\s+${ok}\\nVersion\\s+1\\nPaused\\s+no\\n`));
    expectFits80(human.stdout);
  });

  it('dags pause and unpause', async () => {
    const paused = await airless(['dags', 'pause', ok, '--json']);
    expect(paused.code).toBe(0);
    expect(json(paused)).toMatchObject({ dagId: ok, paused: true });
    expect(json(await airless(['dags', 'show', ok, '--json']))).toMatchObject({ paused: true });

    const unpaused = await airless(['dags', 'unpause', ok]);
    expect(unpaused).toMatchObject({ code: 0, stdout: `${ok} unpaused\n` });
    expect(json(await airless(['dags', 'show', ok, '--json']))).toMatchObject({ paused: false });
  });

  let okRun = '';
  it('runs trigger --conf --wait shows progress and exits 0 on success', async () => {
    const conf = { day: '2026-03-09', n: 3 };
    const r = await airless([
      'runs',
      'trigger',
      ok,
      '--conf',
      JSON.stringify(conf),
      '--idempotency-key',
      'cli-key-1',
      '--wait',
    ]);
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    okRun = out[0] ?? '';
    expect(okRun).toMatch(/^manual__/);
    expect(out[1]).toMatch(
      new RegExp(`^${okRun.replace(/[.+]/g, '\\$&')} success after \\S+ \\(2/2 tasks done\\)$`),
    );
    // Not a terminal: a plain progress line per change, on stderr, uncoloured.
    expect(r.stderr).toMatch(/^(queued|running) {2}\d\/2 done/m);
    expect(r.stderr).not.toContain(ESC);

    // The same idempotency key gives the same run.
    const again = await airless([
      'runs',
      'trigger',
      ok,
      '--idempotency-key',
      'cli-key-1',
      '--json',
    ]);
    expect(again.code).toBe(0);
    expect(json(again)).toEqual({ runId: okRun, status: 'success' });

    const got = await airless(['runs', 'get', ok, okRun, '--json']);
    expect(got.code).toBe(0);
    const view = json<RunView>(got);
    expect(view).toMatchObject({ runId: okRun, dagId: ok, status: 'success', conf });
    expect(view.tasks.map((t) => [t.taskId, t.status]).sort()).toEqual([
      ['extract', 'success'],
      ['load', 'success'],
    ]);
    const human = await airless(['runs', 'get', ok, okRun]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^Conf\s+\{"day":"2026-03-09","n":3\}$/m);
    expect(human.stdout).toMatch(/^extract\s+success\s+1\s+/m);
    expectFits80(human.stdout);
  });

  it('runs list and runs wait on an ended run', async () => {
    const listed = await airless(['runs', 'list', ok, '--json']);
    expect(listed.code).toBe(0);
    expect(json<{ runs: { runId: string }[] }>(listed).runs.map((r) => r.runId)).toContain(okRun);
    const table = await airless(['runs', 'list', ok]);
    expect(table.code).toBe(0);
    expect(lines(table.stdout)[0]).toMatch(/^RUN ID\s+STATUS/);
    expect(table.stdout).toMatch(new RegExp(`^${okRun.replace(/[.+]/g, '\\$&')}\\s+success`, 'm'));
    expectFits80(table.stdout);

    const waited = await airless(['runs', 'wait', ok, okRun, '--json']);
    expect(waited.code).toBe(0);
    expect(json(waited)).toMatchObject({ runId: okRun, status: 'success' });
    expect((await airless(['runs', 'wait', ok, okRun])).code).toBe(0);
  });

  it('logs prints an attempt log', async () => {
    const r = await airless(['logs', ok, okRun, 'extract']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('noop extract');
    expect(r.stdout).toMatch(/success\n$/);
    const none = await airless(['logs', ok, okRun, 'extract', '--attempt', '2']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no log for attempt 2 of task extract (HTTP 404)');
  });

  it('a failing run exits 1; tasks clear reruns the task, and the run then succeeds', async () => {
    const r = await airless(['runs', 'trigger', failing, '--wait']);
    expect(r.code).toBe(1);
    const runId = lines(r.stdout)[0] ?? '';
    expect(r.stdout).toContain(`${runId} failed after`);
    expect(r.stdout).toMatch(/^boom\s+failed\s+1\s+.*failing attempt 1/m);
    expect(r.stdout).toMatch(/^after\s+upstream_failed/m);

    const cleared = await airless(['tasks', 'clear', failing, runId, 'boom', '--json']);
    expect(cleared.code).toBe(0);
    expect(json(cleared)).toMatchObject({ runId, status: 'running' });
    const waited = await airless(['runs', 'wait', failing, runId]);
    expect(waited.code).toBe(0);
    expect(waited.stdout).toContain(`${runId} success after`);

    const first = await airless(['logs', failing, runId, 'boom', '--attempt', '1']);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('failing attempt 1 of 1 on purpose');
    const latest = await airless(['logs', failing, runId, 'boom']);
    expect(latest.code).toBe(0);
    expect(latest.stdout).toMatch(/attempt 2 .*: noop boom/);
  });

  it('a mapped task: runs get lists its instances, logs and tasks clear take --map-index', async () => {
    const dagId = uniqueDagId('cli_map');
    const created = await api.request('POST', '/v1/dags', {
      dagId,
      tasks: [
        {
          taskId: 'each',
          operator: 'noop',
          mapOver: [0, 1],
          config: { failAttempts: '{{ item }}', output: '{{ mapIndex }}' },
        },
      ],
    });
    expect(created.status).toBe(201);
    const r = await airless(['runs', 'trigger', dagId, '--wait']);
    expect(r.code).toBe(1);
    const runId = lines(r.stdout)[0] ?? '';
    expect(r.stdout).toMatch(/^each\[1\]\s+failed\s+1/m);
    const got = await airless(['runs', 'get', dagId, runId]);
    expect(got.stdout).toMatch(/^each\[0\]\s+success\s+1/m);
    expect(got.stdout).toMatch(/^each\[1\]\s+failed\s+1/m);
    const log = await airless(['logs', dagId, runId, 'each', '--map-index', '1']);
    expect(log.code).toBe(0);
    expect(log.stdout).toContain('failing attempt 1 of 1 on purpose');
    const cleared = await airless(['tasks', 'clear', dagId, runId, 'each', '--map-index', '1']);
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(cleared.stdout).toContain(`each[1] cleared; run ${runId} is running`);
    const waited = await airless(['runs', 'wait', dagId, runId]);
    expect(waited.code).toBe(0);
    const again = await airless(['logs', dagId, runId, 'each', '--map-index', '1']);
    expect(again.stdout).toMatch(/attempt 2 .*: noop each\[1\]/);
    const bad = await airless(['tasks', 'clear', dagId, runId, 'each', '--map-index', 'x']);
    expect(bad.code).toBe(2);
    await api.request('DELETE', `/v1/dags/${dagId}`);
  });

  it('logs --follow waits for a running attempt to finish and prints its log once', async () => {
    const r = await airless(['runs', 'trigger', sleepy]);
    expect(r.code).toBe(0);
    const runId = r.stdout.trim();
    await waitFor(
      () => runOf(sleepy, runId),
      (res) => res.body.tasks?.[0]?.status === 'running',
      { timeoutMs: 60_000, intervalMs: 200, what: `task nap of ${runId} to start` },
    );
    const followed = await airless(['logs', sleepy, runId, 'nap', '--follow']);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toContain('sleeping 5s');
    expect(followed.stdout).toMatch(/success\n$/);
    expect(followed.stdout.match(/noop nap/g)).toHaveLength(1);
    expect((await runOf(sleepy, runId)).body.tasks[0]?.status).toBe('success');
  });

  it('runs wait --timeout gives up with exit 1; runs cancel ends a run once', async () => {
    const r = await airless(['runs', 'trigger', sleepy, '--json']);
    expect(r.code).toBe(0);
    const { runId } = json<{ runId: string }>(r);

    // The run's only task sleeps 5 s: it cannot end within the 1 s the wait allows.
    const waited = await airless(['runs', 'wait', sleepy, runId, '--timeout', '1']);
    expect(waited.code).toBe(1);
    expect(waited.stderr).toContain(`airless: timed out after 1s waiting for run ${runId}`);

    const cancelled = await airless(['runs', 'cancel', sleepy, runId, '--json']);
    expect(cancelled.code).toBe(0);
    expect(json(cancelled)).toMatchObject({ runId, status: 'cancelled' });
    const after = await airless(['runs', 'wait', sleepy, runId]);
    expect(after.code).toBe(1);
    expect(after.stdout).toContain(`${runId} cancelled after`);

    const twice = await airless(['runs', 'cancel', sleepy, runId]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain(`run ${runId} has already ended (cancelled) (HTTP 409)`);
  });

  it("bad input: the API's message and exit 1, or a usage error and exit 2", async () => {
    const unknown = uniqueDagId('cli_unknown');
    const show = await airless(['dags', 'show', unknown]);
    expect(show).toMatchObject({ code: 1, stdout: '' });
    expect(show.stderr).toBe(`airless: DAG ${unknown} not found (HTTP 404)\n`);
    const trig = await airless(['runs', 'trigger', unknown, '--json']);
    expect(trig).toMatchObject({ code: 1, stdout: '' });
    expect(trig.stderr).toContain(`DAG ${unknown} not found`);
    const run = await airless(['runs', 'get', ok, 'manual__nope']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`run manual__nope of DAG ${ok} not found`);

    // The API refuses the key, naming the field.
    const key = await airless(['runs', 'trigger', ok, '--idempotency-key', 'not a key!']);
    expect(key.code).toBe(1);
    expect(key.stderr).toMatch(/^airless: invalid request \(HTTP 400\)\n {2}\$\.idempotencyKey: /);

    const conf = await airless(['runs', 'trigger', ok, '--conf', '["not", "an object"]']);
    expect(conf).toMatchObject({ code: 2, stdout: '' });
    expect(conf.stderr).toMatch(
      /option '--conf <json>' argument .* is invalid\. must be a JSON object/,
    );
  });

  it('finds the local stack with no flags and no credentials, or takes --api', async () => {
    // From .airless/local.json (found from a folder below it) with test/test credentials.
    const r = await airless(['dags', 'show', ok, '--json'], {
      env: bareEnv(),
      cwd: join(root, 'cli'),
    });
    expect(r.code).toBe(0);
    expect(json(r)).toMatchObject({ dagId: ok });
    const flagged = await airless(['dags', 'show', ok, '--json', '--api', local.apiUrl], {
      env: bareEnv(),
      cwd: dir,
    });
    expect(flagged.code).toBe(0);
  });

  it('colours only when asked, and never with NO_COLOR', async () => {
    const forced = await airless(['runs', 'list', ok], {
      env: { ...bareEnv(), AIRLESS_API_URL: local.apiUrl, FORCE_COLOR: '1' },
    });
    expect(forced.stdout).toContain(`${ESC}32msuccess`);
    const none = await airless(['runs', 'list', ok], {
      env: { ...bareEnv(), AIRLESS_API_URL: local.apiUrl, FORCE_COLOR: '1', NO_COLOR: '1' },
    });
    expect(none.code).toBe(0);
    expect(none.stdout).not.toContain(ESC);
  });

  it('backfill --wait creates the runs of a range, shows progress, exits 0; repeated, it creates none', async () => {
    const dagId = uniqueDagId('cli_backfill');
    const created = await api.request('POST', '/v1/dags', {
      dagId,
      schedule: { cron: '0 0 1 1 *' },
      tasks: [{ taskId: 't', operator: 'noop' }],
    });
    expect(created.status).toBe(201);
    const range = ['--from', '2020-01-01T00:00:00Z', '--to', '2022-01-01T00:00:00Z'];
    const r = await airless(['backfill', dagId, ...range, '--wait']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^bf_\w+\n$/);
    expect(r.stderr).toMatch(/3 runs \(3 new\), 3 done, success\n$/);
    const again = await airless(['backfill', dagId, ...range, '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ runs: 3, created: 0 });
    const bad = await airless([
      'backfill',
      dagId,
      '--from',
      '2022-01-01',
      '--to',
      '2020-01-01T00:00:00Z',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('must be an ISO-8601 time with its zone');
    const refused = await airless([
      'backfill',
      dagId,
      '--from',
      '2022-01-01T00:00:00Z',
      '--to',
      '2020-01-01T00:00:00Z',
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('$.to');
  });

  it('pools set, list and delete; bad names and slots are usage errors', async () => {
    const pool = `cli_pool_${Math.random().toString(36).slice(2, 10)}`;
    const set = await airless(['pools', 'set', pool, '3']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe(`${pool}: 3 slots, 0 used, 0 waiting\n`);
    const list = await airless(['pools', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${pool}\\s+3\\s+0\\s+0`));
    const json = await airless(['pools', 'list', '--json']);
    expect(JSON.parse(json.stdout).pools).toContainEqual({ pool, slots: 3, used: 0, queued: 0 });
    for (const args of [
      ['pools', 'set', 'no spaces!', '1'],
      ['pools', 'set', pool, '-1'],
      ['pools', 'set', pool, 'two'],
    ]) {
      const bad = await airless(args);
      expect(bad.code, args.join(' ')).toBe(2);
    }
    expect((await airless(['pools', 'delete', pool])).stdout).toBe(`${pool} deleted\n`);
    const gone = await airless(['pools', 'delete', pool]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('not found');
  });

  it('a DAG naming a pool that does not exist: push warns, its task waits, pools set starts it', async () => {
    const pool = `cli_missing_${Math.random().toString(36).slice(2, 10)}`;
    const dagId = uniqueDagId('cli_missing_pool');
    const file = join(dir, `${dagId}.json`);
    writeFileSync(
      file,
      JSON.stringify({ dagId, tasks: [{ taskId: 'only', operator: 'noop', config: {}, pool }] }),
    );
    const push = await airless(['dags', 'push', file]);
    expect(push.code, push.stderr).toBe(0);
    expect(push.stdout).toBe(`${dagId} 1 created\n`);
    expect(push.stderr).toBe(
      `${file}: $.tasks[0].pool: warning: pool "${pool}" does not exist: its tasks wait until it is created (airless pools set ${pool} SLOTS)\n`,
    );
    const runId = lines((await airless(['runs', 'trigger', dagId])).stdout)[0] ?? '';
    expect(runId).toMatch(/^manual__/);
    // It waits for the pool, and the list says what for.
    const waiting = new RegExp(`${pool}\\s+missing\\s+0\\s+1`);
    await waitFor(
      () => airless(['pools', 'list']),
      (r) => waiting.test(r.stdout),
      { timeoutMs: 60_000, intervalMs: 500, what: `pool ${pool} listed missing, 1 waiting` },
    );
    const view = await api.request<RunView>(
      'GET',
      `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`,
    );
    expect(view.body.tasks.map((t) => t.status)).toEqual(['queued']);
    expect((await airless(['pools', 'set', pool, '1'])).code).toBe(0);
    const waited = await airless(['runs', 'wait', dagId, runId]);
    expect(waited.code, waited.stderr).toBe(0);
    expect(waited.stdout).toContain('success');
  });

  it('dags delete removes the DAG; then it is not found', async () => {
    const r = await airless(['dags', 'delete', ok]);
    expect(r).toMatchObject({ code: 0, stdout: `${ok} deleted\n` });
    const shown = await airless(['dags', 'show', ok, '--json']);
    expect(shown.code).toBe(1);
    expect(shown.stderr).toContain(`DAG ${ok} not found`);
    expect((await airless(['dags', 'delete', ok])).code).toBe(1);
    expect(await listedDagIds()).not.toContain(ok);
  });
});
