// Pure formatting for the deployment commands: tables, statuses, times and the progress line.
// Nothing here does I/O, so every function is tested on its own (test/unit/cli-format.test.ts).
import Table from 'cli-table3';
import pc from 'picocolors';

/** The colour functions picocolors makes. */
type Colors = ReturnType<typeof pc.createColors>;

/** What the API returns (DESIGN.md section 5); only the fields the tables show. */
export interface DagView {
  dagId: string;
  latestVersion: number;
  paused: boolean;
  description: string | null;
  owner: string | null;
  schedule: { cron: string; timezone?: string } | null;
  nextRunTimes: string[];
  updatedAt?: string;
}

export interface RunSummary {
  runId: string;
  status: string;
  logicalDate: string;
  startTime: string | null;
  endTime: string | null;
}

export interface TaskView {
  taskId: string;
  mapIndex?: number;
  status: string;
  attempt: number;
  startTime: string | null;
  endTime: string | null;
  error?: string;
}

export interface RunView extends RunSummary {
  dagId: string;
  dagVersion?: number;
  conf: Record<string, unknown>;
  error?: string;
  tasks: TaskView[];
}

/** The width every table and progress line fits when stdout is not a terminal. */
export const DEFAULT_WIDTH = 80;

const TERMINAL_RUN = new Set(['success', 'failed', 'cancelled']);
const DONE_TASK = new Set(['success', 'failed', 'upstream_failed', 'skipped', 'cancelled']);

export const isTerminalRun = (status: string) => TERMINAL_RUN.has(status);
export const isDoneTask = (status: string) => DONE_TASK.has(status);

/**
 * Whether to colour a stream: only a terminal, and never when `NO_COLOR` is set to anything
 * (https://no-color.org). `FORCE_COLOR` (as in Node and most tools) colours a pipe too.
 */
export function useColor(isTty: boolean, env: NodeJS.ProcessEnv): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0') {
    return true;
  }
  return isTty;
}

/** The colour functions, or identity functions when `enabled` is false. */
export const colors = (enabled: boolean): Colors => pc.createColors(enabled);

/** A run or task status in its colour: green ends well, red badly, cyan is under way. */
export function paintStatus(status: string, c: Colors): string {
  switch (status) {
    case 'success':
      return c.green(status);
    case 'failed':
    case 'upstream_failed':
      return c.red(status);
    case 'running':
      return c.cyan(status);
    case 'up_for_retry':
    case 'cancelled':
      return c.yellow(status);
    case 'skipped':
      return c.magenta(status);
    default:
      return c.dim(status);
  }
}

/**
 * A UTC time, short: `second` gives `2026-03-09 06:30:05Z`, `minute` `2026-03-09 06:30Z` and
 * `clock` `06:30:05Z`; `-` for none.
 */
export function shortTime(
  iso: string | null | undefined,
  precision: 'second' | 'minute' | 'clock' = 'second',
): string {
  if (!iso) return '-';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const full = d.toISOString();
  if (precision === 'clock') return `${full.slice(11, 19)}Z`;
  return `${full.slice(0, precision === 'minute' ? 16 : 19).replace('T', ' ')}Z`;
}

/** A duration as `850ms`, `12s`, `4m05s` or `2h03m`. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** From start to end, or to `now` while it is still going; `-` before it starts. */
export function span(start: string | null, end: string | null, now: Date): string {
  if (!start) return '-';
  const to = end ? Date.parse(end) : now.getTime();
  return duration(to - Date.parse(start));
}

export interface Column {
  readonly header: string;
  /**
   * Columns with a `drop` rank are left out, highest rank first, while the table cannot fit
   * with every column at its `min`; the others stay and are cut instead.
   */
  readonly drop?: number;
  /** The width below which the column would rather be left out (default 8). */
  readonly min?: number;
  /** Wraps onto more lines instead of being truncated (default false). */
  readonly wrap?: boolean;
  /** Colours a cell; applied after the widths are measured on the plain text. */
  readonly paint?: (text: string, c: Colors) => string;
}

const GAP = 2;
const BORDERLESS = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: ' '.repeat(GAP),
};

/** Below its `min`, a column is cut only when nothing else fits, and never below this. */
const LAST_RESORT_WIDTH = 4;

/**
 * Chooses which columns to show and how wide, so that the table fits `width`. Droppable
 * columns are left out, highest rank first, while the columns' minimum widths do not fit; then
 * the column with the most room above its minimum is narrowed a character at a time; and only
 * if that is not enough, the columns are cut below their minimums. Returns the shown columns'
 * indexes and their widths.
 */
export function fitColumns(
  columns: readonly Column[],
  natural: readonly number[],
  width: number,
): { shown: number[]; widths: number[] } {
  const total = (ws: readonly number[]) =>
    ws.reduce((a, b) => a + b, 0) + GAP * Math.max(0, ws.length - 1);
  const floorOf = (i: number) => Math.min(natural[i] ?? 0, columns[i]?.min ?? 8);
  let shown = columns.map((_, i) => i);
  while (total(shown.map(floorOf)) > width) {
    const droppable = shown.filter((i) => columns[i]?.drop !== undefined);
    if (droppable.length === 0) break;
    const worst = droppable.reduce((a, b) =>
      (columns[b]?.drop ?? 0) > (columns[a]?.drop ?? 0) ? b : a,
    );
    shown = shown.filter((i) => i !== worst);
  }
  const widths = shown.map((i) => natural[i] ?? 0);
  const narrow = (floor: readonly number[]) => {
    while (total(widths) > width) {
      let pick = -1;
      let most = 0;
      for (let k = 0; k < widths.length; k++) {
        const slack = (widths[k] ?? 0) - (floor[k] ?? 0);
        if (slack > most) {
          most = slack;
          pick = k;
        }
      }
      if (pick < 0) return;
      widths[pick] = (widths[pick] ?? 0) - 1;
    }
  };
  narrow(shown.map(floorOf));
  narrow(shown.map((i) => Math.min(natural[i] ?? 0, LAST_RESORT_WIDTH)));
  return { shown, widths };
}

/**
 * A borderless table (a header row, then one row per item) that fits `width` columns, with the
 * painted cells coloured only when `color` is true. Lines carry no trailing spaces.
 */
export function renderTable(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  opts: { width: number; color: boolean; header?: boolean },
): string {
  const c = colors(opts.color);
  const showHeader = opts.header ?? true;
  const natural = columns.map((col, i) =>
    Math.max(showHeader ? col.header.length : 0, ...rows.map((r) => (r[i] ?? '').length), 1),
  );
  const { shown, widths } = fitColumns(columns, natural, opts.width);
  const table = new Table({
    ...(showHeader ? { head: shown.map((i) => c.bold(columns[i]?.header ?? '')) } : {}),
    chars: BORDERLESS,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
    colWidths: widths,
  });
  for (const r of rows) {
    table.push(
      shown.map((i) => {
        const col = columns[i];
        const text = r[i] ?? '';
        const content = col?.paint && text !== '' ? col.paint(text, c) : text;
        return col?.wrap ? { content, wordWrap: true, wrapOnWordBoundary: true } : content;
      }),
    );
  }
  return table
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n');
}

export interface Style {
  readonly width: number;
  readonly color: boolean;
}

const statusColumn = (header = 'STATUS'): Column => ({
  header,
  // upstream_failed, the longest status, stays whole.
  min: 15,
  paint: (t, c) => paintStatus(t, c),
});

function scheduleText(s: DagView['schedule']): string {
  if (!s) return 'manual';
  return s.timezone && s.timezone !== 'UTC' ? `${s.cron} ${s.timezone}` : s.cron;
}

/** `airless dags list`. */
export function dagsTable(dags: readonly DagView[], style: Style): string {
  const columns: Column[] = [
    { header: 'DAG ID', min: 20 },
    { header: 'VER', min: 3 },
    { header: 'PAUSED', min: 6, paint: (t, c) => (t === 'yes' ? c.yellow(t) : t) },
    { header: 'SCHEDULE', min: 20 },
    { header: 'NEXT RUN', drop: 1, min: 17 },
    { header: 'DESCRIPTION', drop: 2, min: 24 },
  ];
  const rows = dags.map((d) => [
    d.dagId,
    String(d.latestVersion),
    d.paused ? 'yes' : 'no',
    scheduleText(d.schedule),
    shortTime(d.nextRunTimes[0], 'minute'),
    d.description ?? '',
  ]);
  return renderTable(columns, rows, style);
}

/** Label and value lines: the value column wraps rather than losing text. */
function details(pairs: readonly (readonly [string, string])[], style: Style): string {
  return renderTable(
    [
      { header: '', paint: (t, c) => c.bold(t) },
      { header: '', wrap: true, min: 20 },
    ],
    pairs,
    { ...style, header: false },
  );
}

/** `airless dags show DAG`. */
export function dagDetails(d: DagView, style: Style): string {
  const c = colors(style.color);
  return details(
    [
      ['DAG', d.dagId],
      ['Version', String(d.latestVersion)],
      ['Paused', d.paused ? c.yellow('yes') : 'no'],
      ['Schedule', d.schedule ? scheduleText(d.schedule) : 'none: runs only when triggered'],
      [
        'Next runs',
        d.nextRunTimes.length ? d.nextRunTimes.map((t) => shortTime(t)).join(', ') : '-',
      ],
      ['Owner', d.owner ?? '-'],
      ['Description', d.description ?? '-'],
      ['Updated', shortTime(d.updatedAt)],
    ],
    style,
  );
}

/** `airless runs list DAG`. */
export function runsTable(runs: readonly RunSummary[], style: Style, now: Date): string {
  const columns: Column[] = [
    // Run ids are copied into other commands: cut one only when nothing else can give.
    { header: 'RUN ID', min: 200 },
    statusColumn(),
    { header: 'STARTED', drop: 1, min: 17 },
    { header: 'TOOK', min: 4 },
  ];
  const rows = runs.map((r) => [
    r.runId,
    r.status,
    shortTime(r.startTime, 'minute'),
    span(r.startTime, r.endTime, now),
  ]);
  return renderTable(columns, rows, style);
}

const taskName = (t: TaskView) =>
  t.mapIndex === undefined ? t.taskId : `${t.taskId}[${t.mapIndex}]`;

/** The tasks of a run: `airless runs get` and the end of a failed wait. */
export function tasksTable(tasks: readonly TaskView[], style: Style, now: Date): string {
  const columns: Column[] = [
    { header: 'TASK', min: 20 },
    statusColumn(),
    { header: 'TRY', min: 3 },
    { header: 'STARTED', min: 9 },
    { header: 'TOOK', min: 4 },
    { header: 'ERROR', min: 12, paint: (t, c) => c.red(t) },
  ];
  const rows = tasks.map((t) => [
    taskName(t),
    t.status,
    String(t.attempt),
    shortTime(t.startTime, 'clock'),
    span(t.startTime, t.endTime, now),
    (t.error ?? '').replace(/\s+/g, ' '),
  ]);
  return renderTable(columns, rows, style);
}

/** `airless runs get DAG RUN`: the run, then its tasks. */
export function runDetails(run: RunView, style: Style, now: Date): string {
  const c = colors(style.color);
  const pairs: [string, string][] = [
    ['Run', run.runId],
    ['DAG', run.dagVersion === undefined ? run.dagId : `${run.dagId} (version ${run.dagVersion})`],
    ['Status', paintStatus(run.status, c)],
    ['Logical date', shortTime(run.logicalDate)],
    ['Started', shortTime(run.startTime)],
    ['Ended', shortTime(run.endTime)],
    ['Duration', span(run.startTime, run.endTime, now)],
    ['Conf', JSON.stringify(run.conf ?? {})],
  ];
  if (run.error) pairs.push(['Error', c.red(run.error)]);
  return `${details(pairs, style)}\n\n${tasksTable(run.tasks, style, now)}`;
}

/** Counts and names for the progress line. */
export function progressOf(run: RunView) {
  const done = run.tasks.filter((t) => isDoneTask(t.status));
  return {
    status: run.status,
    done: done.length,
    total: run.tasks.length,
    failed: done.filter((t) => t.status === 'failed' || t.status === 'upstream_failed').length,
    running: run.tasks.filter((t) => t.status === 'running').map(taskName),
    retrying: run.tasks.filter((t) => t.status === 'up_for_retry').map(taskName),
  };
}

/** What the progress line says apart from the clock: a new one is printed when this changes. */
export function progressKey(run: RunView): string {
  return JSON.stringify(progressOf(run));
}

/** Cuts `text` to `width` characters, ending in `…` when cut. */
export function clip(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? text.slice(0, width) : `${text.slice(0, width - 1)}…`;
}

/**
 * One line of progress, at most `width` characters:
 * `running  3/10 done, 1 failed  running: extract, load  1m05s`. The task names are what gives
 * way to fit.
 */
export function progressLine(run: RunView, elapsedMs: number, style: Style): string {
  const c = colors(style.color);
  const p = progressOf(run);
  const counts = `${p.done}/${p.total} done${p.failed ? `, ${p.failed} failed` : ''}`;
  const clock = duration(elapsedMs);
  const names = [
    p.running.length ? `running: ${p.running.join(', ')}` : '',
    p.retrying.length ? `retrying: ${p.retrying.join(', ')}` : '',
  ]
    .filter(Boolean)
    .join('  ');
  const fixed = p.status.length + counts.length + clock.length + 2 * GAP;
  const room = style.width - fixed - GAP;
  const middle = names && room >= 12 ? clip(names, room) : '';
  const plain = [p.status, counts, middle, clock].filter(Boolean);
  if (plain.join('  ').length > style.width) return clip(plain.join('  '), style.width);
  return [paintStatus(p.status, c), p.failed ? c.red(counts) : counts, middle, c.dim(clock)]
    .filter(Boolean)
    .join('  ');
}

/** The line a wait ends with: `RUN success after 12s (4/4 tasks done)`. */
export function outcomeLine(run: RunView, style: Style, now: Date): string {
  const c = colors(style.color);
  const p = progressOf(run);
  return `${run.runId} ${paintStatus(run.status, c)} after ${span(run.startTime, run.endTime, now)} (${p.done}/${p.total} tasks done)`;
}
