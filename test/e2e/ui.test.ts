// The web UI in a real browser (Debian's Chromium, driven by playwright-core) against the
// deployed local stack, through the `airless ui` server started in this process.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUiServer, type UiServer } from '../../cli/ui.ts';
import { waitFor } from '../poll.ts';
import { api, local, putDagFile, type RunView, uniqueDagId, waitForRun } from './stack.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const shots = join(root, '.airless', 'screenshots');
/** Debian's chromium package; `.ci/run` installs it. Playwright's own download is not used. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** How long the browser waits for something the page shows after an API round trip or a run. */
const RUN_MS = 90_000;
const PAGE_MS = 15_000;

const enc = encodeURIComponent;
const dagOf = (name: string) =>
  JSON.parse(readFileSync(join(root, 'examples', 'dags', `${name}.json`), 'utf8')) as {
    dagId: string;
  };

// The examples under unique ids (the e2e setup uploads none), and a DAG whose middle task fails
// its first attempt with no retry, to be cleared.
const sales = uniqueDagId('daily_sales');
const manual = uniqueDagId('customer_backfill');
const flaky = uniqueDagId('ui_flaky');
const badFile = `dags/${uniqueDagId('ui_broken')}.json`;

let ui: UiServer;
let browser: Browser;
let page: Page;

async function push(dag: unknown): Promise<void> {
  const res = await api.request('POST', '/v1/dags', dag);
  expect(res.status, res.text).toBe(201);
}

async function runsOf(dagId: string): Promise<{ runId: string; status: string }[]> {
  const res = await api.request<{ runs: { runId: string; status: string }[] }>(
    'GET',
    `/v1/dags/${dagId}/runs`,
  );
  expect(res.status, res.text).toBe(200);
  return res.body.runs;
}

async function dagPaused(dagId: string): Promise<boolean> {
  const res = await api.request<{ paused: boolean }>('GET', `/v1/dags/${dagId}`);
  expect(res.status, res.text).toBe(200);
  return res.body.paused;
}

const open = (path: string) => page.goto(new URL(path, ui.url).href);
const shot = (name: string) =>
  page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

/** Presses Tab until `target` has the focus; fails when it is not reached in `max` presses. */
async function tabTo(target: string, max = 80): Promise<void> {
  const focused = page.locator(`${target}:focus`);
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if ((await focused.count()) === 1) return;
  }
  throw new Error(`${target} was not reached by ${max} presses of Tab`);
}

beforeAll(async () => {
  // The e2e project does not run `npm ci`'s prepare: build the UI this run serves.
  execFileSync(
    process.execPath,
    [join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'ui'],
    {
      cwd: root,
      stdio: 'ignore',
    },
  );
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (see .ci/run)`);
  }
  mkdirSync(shots, { recursive: true });
  await push({ ...dagOf('daily_sales'), dagId: sales });
  await push({ ...dagOf('customer_backfill'), dagId: manual });
  await push({
    dagId: flaky,
    description: 'the middle task fails its first attempt, and has no retry',
    tasks: [
      { taskId: 'prepare', operator: 'noop' },
      {
        taskId: 'flaky',
        operator: 'noop',
        dependsOn: ['prepare'],
        retries: 0,
        config: { failAttempts: 1 },
      },
      { taskId: 'publish', operator: 'noop', dependsOn: ['flaky'] },
    ],
  });
  // An unknown operator: the registrar records an import error for the file.
  await putDagFile(
    badFile,
    JSON.stringify({ dagId: 'ui_broken', tasks: [{ taskId: 'a', operator: 'no_such_operator' }] }),
  );
  ui = await startUiServer({ apiUrl: local.apiUrl, region: local.region, port: 0 });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(PAGE_MS);
});

afterAll(async () => {
  await browser?.close();
  await ui?.close();
  for (const dagId of [sales, manual, flaky]) await api.request('DELETE', `/v1/dags/${dagId}`);
});

describe('web UI', () => {
  it('lists the DAGs with their schedule, next run and last runs, each status in words', async () => {
    const { body } = await api.request<{ runId: string }>('POST', `/v1/dags/${manual}/runs`, {});
    await waitForRun(manual, body.runId);

    await open('/');
    await page.getByRole('searchbox', { name: 'Search DAGs' }).fill(sales.slice(-8));
    const row = page.locator('tbody tr', { has: page.getByRole('link', { name: sales }) });
    await row.waitFor();
    expect(await page.locator('tbody tr').count()).toBe(1);
    expect(await row.textContent()).toContain('30 2 * * *');
    expect(await row.textContent()).toContain('America/New_York');

    await page.getByRole('searchbox', { name: 'Search DAGs' }).fill(manual);
    const square = page.getByRole('img', { name: `run ${body.runId}: success` });
    await square.waitFor();
    expect(await square.textContent()).toBe('✓');
    // Cleared, the search shows every DAG again: the other test files' too, of which the list
    // shows the first 50, so this test's own DAGs need not be among them.
    await page.getByRole('searchbox', { name: 'Search DAGs' }).fill('');
    await waitFor(
      () => page.locator('tbody tr').count(),
      (n) => n >= 3,
      { timeoutMs: PAGE_MS, intervalMs: 100, what: 'the whole list to show again' },
    );
    await waitFor(
      () => page.locator('.runs-loading').count(),
      (n) => n === 0,
      { timeoutMs: PAGE_MS, intervalMs: 100, what: 'every row to show its last runs' },
    );
    await shot('dags');
  });

  it('pauses and unpauses a DAG with its switch, by mouse and by keyboard', async () => {
    await open('/dags');
    await page.getByRole('searchbox', { name: 'Search DAGs' }).fill(sales);
    const toggle = page.getByRole('switch', { name: `${sales} active` });
    expect(await toggle.getAttribute('aria-checked')).toBe('true');

    await toggle.click();
    await page.locator(`[role=switch][aria-label="${sales} active"][aria-checked=false]`).waitFor();
    expect(await dagPaused(sales)).toBe(true);

    // From the search box, Tab reaches the switch; Space flips it.
    await page.getByRole('searchbox', { name: 'Search DAGs' }).focus();
    await tabTo(`[role=switch][aria-label="${sales} active"]`, 5);
    await page.keyboard.press('Space');
    await page.locator(`[role=switch][aria-label="${sales} active"][aria-checked=true]`).waitFor();
    expect(await dagPaused(sales)).toBe(false);
  });

  it('refuses conf that is not a JSON object, in words, and sends nothing', async () => {
    const before = (await runsOf(manual)).length;
    const posts: string[] = [];
    const onRequest = (r: { method(): string; url(): string }) => {
      if (r.method() === 'POST') posts.push(r.url());
    };
    page.on('request', onRequest);
    try {
      await open(`/dags/${manual}`);
      const conf = page.getByLabel('Conf (a JSON object)');
      await conf.fill('{"customerId": ');
      await page.getByRole('button', { name: 'Trigger run' }).click();
      const alert = page.locator('#conf-error');
      await alert.waitFor();
      expect(await alert.textContent()).toMatch(/^Conf is not valid JSON: /);

      await conf.fill('["c-1", "c-2"]');
      await page.getByRole('button', { name: 'Trigger run' }).click();
      await page.locator('#conf-error', { hasText: 'not an array' }).waitFor();
      expect(await alert.textContent()).toContain('Conf must be a JSON object');
      expect(await conf.getAttribute('aria-invalid')).toBe('true');
    } finally {
      page.off('request', onRequest);
    }
    expect(posts).toEqual([]);
    expect(await runsOf(manual)).toHaveLength(before);
  });

  it('triggers a run with conf from the keyboard, opens it, and watches it succeed', async () => {
    await open(`/dags/${manual}`);
    await page.getByRole('heading', { name: 'Trigger a run' }).waitFor();
    await tabTo('#conf');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('{"customerId": "c-42"}');
    await page.keyboard.press('Tab');
    expect(await page.locator(':focus').textContent()).toBe('Trigger run');
    await page.keyboard.press('Enter');

    await page.waitForURL(new RegExp(`/dags/${manual}/runs/manual__`));
    const runId = decodeURIComponent(new URL(page.url()).pathname.split('/').at(-1) ?? '');
    // The page refreshes itself: no reload until the run has ended.
    await page.locator('.page-head .badge', { hasText: 'success' }).waitFor({ timeout: RUN_MS });
    const run = (await api.request<RunView>('GET', `/v1/dags/${manual}/runs/${enc(runId)}`)).body;
    expect(run.status).toBe('success');
    expect(run.conf).toEqual({ customerId: 'c-42' });
    expect(await page.locator('.facts').textContent()).toContain('{"customerId":"c-42"}');
    for (const t of ['export_orders', 'export_tickets', 'bundle']) {
      const row = page.locator(`tr[data-task="${t}"]`);
      expect(await row.locator('.badge').textContent()).toContain('success');
    }

    // The log of a task's attempt, as the worker wrote it.
    const row = page.locator('tr[data-task="export_orders"]');
    await row.getByRole('button', { name: 'Log' }).click();
    const log = page.locator('#log-export_orders pre.log-text');
    await log.waitFor();
    expect(await log.textContent()).toContain('sleeping 1s');
    await shot('run');
  });

  it("draws the DAG's grid of runs × tasks and its graph, coloured by a run", async () => {
    const [latest] = await runsOf(manual);
    if (!latest) throw new Error(`${manual} has no run`);
    await open(`/dags/${manual}`);
    const node = page.locator('svg.graph g.node');
    await node.first().waitFor();
    expect(await node.count()).toBe(3);
    expect(
      await page.locator('svg.graph g.node[data-task="bundle"]').getAttribute('data-status'),
    ).toBe('success');
    // Two edges into bundle, drawn from dagre's points.
    expect(await page.locator('svg.graph path.edge').count()).toBe(2);
    expect(await page.locator('table.grid tbody tr').count()).toBe(3);
    await page.getByRole('img', { name: `bundle in run ${latest.runId}: success` }).waitFor();
    await shot('dag');
  });

  it('clears a failed task, and the run goes on to succeed with its second attempt', async () => {
    const { body } = await api.request<{ runId: string }>('POST', `/v1/dags/${flaky}/runs`, {});
    expect((await waitForRun(flaky, body.runId)).status).toBe('failed');

    await open(`/dags/${flaky}/runs/${enc(body.runId)}`);
    const flakyRow = page.locator('tr[data-task="flaky"]');
    await page.locator('.page-head .badge', { hasText: 'failed' }).waitFor();
    expect(await flakyRow.locator('.badge').textContent()).toContain('failed');
    expect(await page.locator('tr[data-task="publish"] .badge').textContent()).toContain(
      'upstream failed',
    );

    await page.getByRole('button', { name: 'Clear flaky' }).click();
    await page.locator('.page-head .badge', { hasText: 'success' }).waitFor({ timeout: RUN_MS });
    expect(await flakyRow.locator('td.num').first().textContent()).toBe('2');
    const run = (await api.request<RunView>('GET', `/v1/dags/${flaky}/runs/${enc(body.runId)}`))
      .body;
    expect(run.tasks.find((t) => t.taskId === 'flaky')).toMatchObject({
      status: 'success',
      attempt: 2,
    });

    // Each attempt keeps its own log.
    await flakyRow.getByRole('button', { name: 'Log' }).click();
    await page.locator('#log-flaky pre.log-text').waitFor();
    await page.getByRole('button', { name: 'Attempt 1' }).click();
    await page
      .locator('#log-flaky pre.log-text[data-attempt="1"]', { hasText: 'on purpose' })
      .waitFor();
  });

  it('lists a mapped task’s instances by index, each with its own log and its own clear', async () => {
    const dagId = uniqueDagId('ui_mapped');
    await push({
      dagId,
      tasks: [
        { taskId: 'each', operator: 'noop', mapOver: ['a', 'b'], config: { output: '{{ item }}' } },
      ],
    });
    try {
      const { body } = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
      expect((await waitForRun(dagId, body.runId)).status).toBe('success');
      await open(`/dags/${dagId}/runs/${enc(body.runId)}`);
      await page.locator('.page-head .badge', { hasText: 'success' }).waitFor();
      expect(await page.locator('tr[data-task="each"]').textContent()).toContain('mapped: 2');
      const row = page.locator('tr[data-task="each[1]"]');
      expect(await row.locator('.badge').textContent()).toContain('success');
      await row.getByRole('button', { name: 'Log' }).click();
      const log = page.locator('[id="log-each[1]"] pre.log-text');
      await log.waitFor();
      expect(await log.textContent()).toContain('each[1]');
      expect(await log.textContent()).toContain('"b"');
      // Clear that one instance: it runs again (attempt 2), its sibling does not.
      await page.getByRole('button', { name: 'Clear each[1]' }).click();
      await waitFor(
        () =>
          api.request<{ status: string; tasks: { mapIndex?: number; attempt: number }[] }>(
            'GET',
            `/v1/dags/${dagId}/runs/${enc(body.runId)}`,
          ),
        (r) =>
          r.body.status === 'success' &&
          r.body.tasks.some((t) => t.mapIndex === 1 && t.attempt === 2),
        { timeoutMs: RUN_MS, intervalMs: 500, what: 'instance 1 to run again' },
      );
      const after = await api.request<{ tasks: { mapIndex?: number; attempt: number }[] }>(
        'GET',
        `/v1/dags/${dagId}/runs/${enc(body.runId)}`,
      );
      expect(after.body.tasks.find((t) => t.mapIndex === 0)?.attempt).toBe(1);
    } finally {
      await api.request('DELETE', `/v1/dags/${dagId}`);
    }
  });

  it('lists import errors', async () => {
    await waitFor(
      () => api.request<{ importErrors: { key: string }[] }>('GET', '/v1/import-errors?limit=100'),
      (r) => r.status === 200 && r.body.importErrors.some((e) => e.key === badFile),
      { timeoutMs: 60_000, intervalMs: 500, what: `the import error of ${badFile}` },
    );
    await open('/');
    await page.getByRole('link', { name: 'Import errors' }).click();
    await page.waitForURL(/\/import-errors$/);
    const row = page.locator('tbody tr', { hasText: badFile });
    await row.waitFor();
    expect(await row.textContent()).toContain('unknown operator');
    await shot('import-errors');
  });

  it("shows the API's error in words for a run or a DAG that does not exist", async () => {
    const runId = 'manual__2000-01-01T00:00:00+00:00';
    await open(`/dags/${manual}/runs/${enc(runId)}`);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toBe(
      `Could not load run ${runId}: run ${runId} of DAG ${manual} not found (HTTP 404)`,
    );

    await open('/dags/no_such_dag_here');
    await page.getByRole('alert').waitFor();
    expect(await page.getByRole('alert').textContent()).toContain(
      'DAG no_such_dag_here not found (HTTP 404)',
    );
  });
});
