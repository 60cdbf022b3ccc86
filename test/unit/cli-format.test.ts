import { stripVTControlCharacters } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Column,
  type DagView,
  dagDetails,
  dagsTable,
  duration,
  fitColumns,
  outcomeLine,
  paintStatus,
  progressKey,
  progressLine,
  type RunView,
  renderTable,
  runDetails,
  runsTable,
  shortTime,
  tasksTable,
  useColor,
} from '../../cli/format.ts';
import { apiError } from '../../cli/session.ts';

const ESC = '\x1b[';
const NOW = new Date('2026-03-09T07:00:00.000Z');
const plain = { width: 80, color: false };
const colour = { width: 80, color: true };

/** Every line's width on screen, colours left out. */
const widths = (text: string) => text.split('\n').map((l) => stripVTControlCharacters(l).length);

const long = (n: number, c = 'x') => c.repeat(n);

const dag = (over: Partial<DagView> = {}): DagView => ({
  dagId: 'daily_sales',
  latestVersion: 3,
  paused: false,
  description: "Load yesterday's sales at 02:30 New York time, every day, DST included",
  owner: 'data-team',
  schedule: { cron: '30 2 * * *', timezone: 'America/New_York' },
  nextRunTimes: ['2026-03-10T06:30:00.000Z', '2026-03-11T06:30:00.000Z'],
  updatedAt: '2026-03-09T06:00:00.000Z',
  ...over,
});

const run = (over: Partial<RunView> = {}): RunView => ({
  runId: 'manual__2026-03-09T06:59:00.000Z__0a1b2c3d',
  dagId: 'daily_sales',
  dagVersion: 3,
  status: 'running',
  logicalDate: '2026-03-09T06:59:00.000Z',
  startTime: '2026-03-09T06:59:00.100Z',
  endTime: null,
  conf: { day: '2026-03-08' },
  tasks: [
    {
      taskId: 'extract',
      status: 'success',
      attempt: 1,
      startTime: '2026-03-09T06:59:01.000Z',
      endTime: '2026-03-09T06:59:03.000Z',
    },
    {
      taskId: 'clean',
      status: 'running',
      attempt: 2,
      startTime: '2026-03-09T06:59:04.000Z',
      endTime: null,
    },
    {
      taskId: 'enrich',
      status: 'failed',
      attempt: 3,
      startTime: '2026-03-09T06:59:04.000Z',
      endTime: '2026-03-09T06:59:05.000Z',
      error: `HTTP 503 from https://example.com/enrich ${long(120, 'e')}`,
    },
    { taskId: 'load', status: 'pending', attempt: 0, startTime: null, endTime: null },
  ],
  ...over,
});

describe('useColor', () => {
  it.each([
    [true, {}, true],
    [false, {}, false],
    [true, { NO_COLOR: '1' }, false],
    [true, { NO_COLOR: '' }, true],
    [false, { FORCE_COLOR: '1' }, true],
    [false, { FORCE_COLOR: '0' }, false],
    [true, { NO_COLOR: '1', FORCE_COLOR: '1' }, false],
  ])('tty %s with %j → %s', (tty, env, want) => {
    expect(useColor(tty, env)).toBe(want);
  });
});

describe('statuses, times and durations', () => {
  it('colours statuses only when asked', async () => {
    const { colors } = await import('../../cli/format.ts');
    expect(paintStatus('failed', colors(false))).toBe('failed');
    expect(paintStatus('success', colors(true))).toBe('\x1b[32msuccess\x1b[39m');
    expect(paintStatus('failed', colors(true))).toContain('\x1b[31m');
  });

  it.each([
    [0, '0ms'],
    [850, '850ms'],
    [12_400, '12s'],
    [245_000, '4m05s'],
    [7_380_000, '2h03m'],
    [-1, '-'],
  ])('duration(%d) = %s', (ms, text) => {
    expect(duration(ms)).toBe(text);
  });

  it('shows times in UTC, marked Z', () => {
    expect(shortTime('2026-03-09T06:30:05.123Z')).toBe('2026-03-09 06:30:05Z');
    expect(shortTime('2026-03-09T06:30:05.123Z', 'minute')).toBe('2026-03-09 06:30Z');
    expect(shortTime('2026-03-09T06:30:05.123Z', 'clock')).toBe('06:30:05Z');
    expect(shortTime(null)).toBe('-');
  });
});

describe('tables fit the terminal', () => {
  it('lists DAGs in aligned columns, without colour when told so', () => {
    const text = dagsTable(
      [dag(), dag({ dagId: 'ml_features', paused: true, schedule: null, nextRunTimes: [] })],
      {
        width: 200,
        color: false,
      },
    );
    expect(text).not.toContain(ESC);
    const [head, first, second] = text.split('\n');
    expect(head).toMatch(/^DAG ID\s+VER\s+PAUSED\s+SCHEDULE\s+NEXT RUN\s+DESCRIPTION$/);
    expect(first).toMatch(
      /^daily_sales\s+3\s+no\s+30 2 \* \* \* America\/New_York\s+2026-03-10 06:30/,
    );
    expect(second).toMatch(/^ml_features\s+3\s+yes\s+manual\s+-/);
    // Columns line up: each value starts under its header.
    expect(first?.indexOf('3')).toBe(head?.indexOf('VER'));
  });

  it('leaves out the optional columns rather than cutting the others short', () => {
    const text = dagsTable([dag(), dag({ dagId: 'customer_backfill_2' })], plain);
    expect(Math.max(...widths(text))).toBeLessThanOrEqual(80);
    expect(text).not.toContain('DESCRIPTION');
    expect(text).toContain('30 2 * * * America/New_York  2026-03-10 06:30Z');
  });

  it('truncates what does not fit with an ellipsis, never past 80 columns', () => {
    const text = dagsTable(
      [dag({ dagId: long(128, 'd'), schedule: { cron: '0 0 * * *', timezone: long(60, 't') } })],
      colour,
    );
    expect(Math.max(...widths(text))).toBeLessThanOrEqual(80);
    expect(text).toContain('…');
  });

  it('lists runs, keeping whole manual run ids', () => {
    const runs = [run(), run({ runId: 'scheduled__2026-03-09T06:30:00.000Z', status: 'success' })];
    const text = runsTable(runs, plain, NOW);
    expect(Math.max(...widths(text))).toBeLessThanOrEqual(80);
    expect(text).toContain(runs[0]?.runId);
    expect(text).toMatch(/scheduled__2026-03-09T06:30:00.000Z\s+success\s+2026-03-09 06:59Z/);
    expect(text).not.toContain(ESC);
  });

  it('shows a run and its tasks within 80 columns, errors cut short', () => {
    for (const style of [plain, colour]) {
      const painted = runDetails(run(), style, NOW);
      expect(painted.includes(ESC)).toBe(style.color);
      const text = stripVTControlCharacters(painted);
      expect(Math.max(...widths(text))).toBeLessThanOrEqual(80);
      expect(text).toMatch(/Conf\s+\{"day":"2026-03-08"\}/);
      expect(text).toMatch(/enrich\s+failed\s+3\s+.*HTTP 503/);
      expect(text).toMatch(/clean\s+running\s+2\s+06:59:04Z\s+56s/);
      expect(text).toMatch(/Started\s+2026-03-09 06:59:00Z/);
    }
  });

  it('wraps a long description in dags show instead of losing it', () => {
    const words = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const text = dagDetails(dag({ description: words }), plain);
    expect(Math.max(...widths(text))).toBeLessThanOrEqual(80);
    expect(text.replace(/\s+/g, ' ')).toContain(words);
  });

  it('colours the header and statuses on a terminal, and only there', () => {
    const tasks = run().tasks;
    expect(tasksTable(tasks, colour, NOW)).toContain('\x1b[1mTASK');
    expect(tasksTable(tasks, colour, NOW)).toContain('\x1b[31mfailed');
    expect(tasksTable(tasks, plain, NOW)).not.toContain(ESC);
  });

  it('drops optional columns only when the minimums do not fit, highest rank first', () => {
    const cols: Column[] = [
      { header: 'A', min: 20 },
      { header: 'B', drop: 1, min: 10 },
      { header: 'C', drop: 2, min: 10 },
    ];
    expect(fitColumns(cols, [30, 10, 10], 54)).toEqual({ shown: [0, 1, 2], widths: [30, 10, 10] });
    // 20 + 10 + 10 and the gaps fit 44: all stay, and A, with the most room, gives.
    expect(fitColumns(cols, [30, 10, 10], 44)).toEqual({ shown: [0, 1, 2], widths: [20, 10, 10] });
    expect(fitColumns(cols, [30, 10, 10], 40)).toEqual({ shown: [0, 1], widths: [28, 10] });
    expect(fitColumns(cols, [30, 10, 10], 25)).toEqual({ shown: [0], widths: [25] });
  });

  it('narrows the column with the most room, and cuts below minimums only as a last resort', () => {
    const cols: Column[] = [{ header: 'A', min: 28 }, { header: 'B' }];
    expect(fitColumns(cols, [30, 20], 40)).toEqual({ shown: [0, 1], widths: [29, 9] });
    expect(fitColumns([{ header: 'A', min: 50 }], [60], 40)).toEqual({ shown: [0], widths: [40] });
  });

  it('fits any text in any width the columns can shrink to (property)', () => {
    const columns: Column[] = [
      { header: 'ID', min: 10 },
      { header: 'STATUS', min: 6, paint: (t) => `\x1b[32m${t}\x1b[39m` },
      { header: 'NOTE', drop: 1 },
      { header: 'MORE', min: 4 },
    ];
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string(), fc.string(), fc.string(), fc.string()), { maxLength: 5 }),
        fc.integer({ min: 30, max: 200 }),
        fc.boolean(),
        (rows, width, color) => {
          const text = renderTable(columns, rows, { width, color });
          expect(Math.max(...widths(text))).toBeLessThanOrEqual(width);
          expect(text.split('\n').every((l) => l === l.trimEnd())).toBe(true);
        },
      ),
    );
  });
});

describe('the progress line', () => {
  it('says the status, tasks done of all, the running ones and the time', () => {
    const line = progressLine(run(), 65_000, plain);
    expect(line).toBe('running  2/4 done, 1 failed  running: clean  1m05s');
  });

  it('names retrying tasks too', () => {
    const r = run();
    r.tasks[3] = { ...(r.tasks[3] as RunView['tasks'][number]), status: 'up_for_retry' };
    expect(progressLine(r, 1000, plain)).toContain('retrying: load');
  });

  it('cuts the task names to fit, keeping the counts and the clock', () => {
    const many = Array.from({ length: 30 }, (_, i) => ({
      taskId: `transform_partition_${i}`,
      status: 'running',
      attempt: 1,
      startTime: NOW.toISOString(),
      endTime: null,
    }));
    for (const width of [40, 80, 200]) {
      for (const color of [false, true]) {
        const line = progressLine(run({ tasks: many }), 3_600_000, { width, color });
        expect(stripVTControlCharacters(line).length).toBeLessThanOrEqual(width);
        expect(line).toContain('0/30 done');
        expect(line).toContain('1h00m');
        expect(line.includes(ESC)).toBe(color);
      }
    }
    expect(progressLine(run({ tasks: many }), 1000, plain)).toContain('…');
  });

  it('changes its key only when the progress changes, not the clock', () => {
    expect(progressKey(run())).toBe(progressKey(run()));
    const moved = run();
    moved.tasks[1] = { ...(moved.tasks[1] as RunView['tasks'][number]), status: 'success' };
    expect(progressKey(moved)).not.toBe(progressKey(run()));
  });

  it('ends with the outcome', () => {
    const done = run({ status: 'failed', endTime: '2026-03-09T06:59:12.100Z' });
    expect(outcomeLine(done, plain, NOW)).toBe(`${done.runId} failed after 12s (2/4 tasks done)`);
  });
});

describe('API errors', () => {
  const res = (status: number, body: unknown) => ({
    status,
    body,
    text: typeof body === 'string' ? body : JSON.stringify(body),
  });

  it("gives the API's message and each detail's path", () => {
    expect(
      apiError(
        res(400, {
          error: 'invalid request',
          details: [{ path: '$.conf', message: 'expected object' }],
        }),
      ),
    ).toEqual({ message: 'invalid request (HTTP 400)', details: ['$.conf: expected object'] });
  });

  it("reads API Gateway's own refusals and plain text", () => {
    expect(apiError(res(403, { message: 'Forbidden' })).message).toBe('Forbidden (HTTP 403)');
    expect(apiError(res(502, 'Bad Gateway')).message).toBe('Bad Gateway (HTTP 502)');
  });
});
