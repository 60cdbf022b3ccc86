import { Cron } from 'croner';
import type { Issue } from '../errors.ts';

/**
 * Unix cron for DAG schedules, compiled to EventBridge Scheduler and evaluated with its semantics.
 *
 * EventBridge Scheduler evaluates cron in the schedule's time zone; "when the time shifts forward
 * in Spring, your schedule invocation gets skipped if the cron expression falls on a non-existent
 * date and time. When the time shifts back in the Fall, your schedule runs only once"
 * (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#daylist-savings-time).
 * croner enumerates candidate times but follows Vixie cron at DST edges (it fires a skipped 02:30
 * at 03:00, and a repeated 01:30 twice), so {@link nextRuns} keeps only the candidates that
 * EventBridge would fire.
 */

export const PRESETS: Readonly<Record<string, string>> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
};

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

interface FieldSpec {
  readonly name: string;
  readonly min: number;
  readonly max: number;
  readonly names?: readonly string[];
  /** The first name's number: JAN is 1, SUN is 0. */
  readonly namesFrom?: number;
}

const FIELDS: readonly FieldSpec[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTHS, namesFrom: 1 },
  // 7 is Sunday too, as in Vixie cron; it folds to 0 after parsing.
  { name: 'day-of-week', min: 0, max: 7, names: DAYS, namesFrom: 0 },
];

/** A parsed cron expression: the sorted values each field allows. */
export interface CronSpec {
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: readonly number[];
  readonly months: readonly number[];
  /** 0 is Sunday. */
  readonly daysOfWeek: readonly number[];
  readonly domRestricted: boolean;
  readonly dowRestricted: boolean;
}

export type CronParse = { ok: true; spec: CronSpec } | { ok: false; message: string };

function parseValue(text: string, f: FieldSpec): number | string {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    return n >= f.min && n <= f.max ? n : `${f.name} value ${n} is out of range ${f.min}-${f.max}`;
  }
  const i = f.names?.indexOf(text.toUpperCase()) ?? -1;
  if (i >= 0) return i + (f.namesFrom ?? 0);
  return `${f.name} has an invalid value "${text}"`;
}

function parseField(text: string, f: FieldSpec): Set<number> | string {
  const out = new Set<number>();
  for (const item of text.split(',')) {
    const m = /^([^/]+)(?:\/(\d+))?$/.exec(item);
    if (!m) return `${f.name} has an invalid item "${item}"`;
    const [, range = '', stepText] = m;
    const step = stepText === undefined ? 1 : Number(stepText);
    if (step < 1) return `${f.name} step must be at least 1 in "${item}"`;
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = f.min;
      hi = f.max;
    } else {
      const [a, b, ...extra] = range.split('-');
      if (extra.length > 0 || a === undefined) return `${f.name} has an invalid range "${range}"`;
      const av = parseValue(a, f);
      if (typeof av === 'string') return av;
      lo = av;
      if (b === undefined) {
        // `a/s` means from a to the end of the field, stepping by s.
        hi = stepText === undefined ? av : f.max;
      } else {
        const bv = parseValue(b, f);
        if (typeof bv === 'string') return bv;
        if (bv < av) return `${f.name} range "${range}" runs backwards`;
        hi = bv;
      }
    }
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);

/** Parses a 5-field Unix cron expression or a preset. */
export function parseCron(expression: string): CronParse {
  const text = PRESETS[expression.trim()] ?? expression.trim();
  if (text.startsWith('@')) {
    return {
      ok: false,
      message: `unknown preset "${text}"; use ${Object.keys(PRESETS).join(' ')}`,
    };
  }
  const parts = text.split(/\s+/);
  if (parts.length !== 5) {
    return {
      ok: false,
      message: `expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`,
    };
  }
  const sets: Set<number>[] = [];
  for (const [i, f] of FIELDS.entries()) {
    const r = parseField(parts[i] as string, f);
    if (typeof r === 'string') return { ok: false, message: r };
    sets.push(r);
  }
  const [minutes, hours, dom, months, dowRaw] = sets as [
    Set<number>,
    Set<number>,
    Set<number>,
    Set<number>,
    Set<number>,
  ];
  const dow = new Set([...dowRaw].map((d) => d % 7));
  const domRestricted = dom.size < 31;
  const dowRestricted = dow.size < 7;
  if (domRestricted && dowRestricted) {
    return {
      ok: false,
      message:
        'day-of-month and day-of-week are both restricted: Unix cron fires when either matches, ' +
        'which EventBridge Scheduler cannot express; restrict only one and use * for the other',
    };
  }
  if (domRestricted && !canEverFire(sorted(dom), sorted(months))) {
    return { ok: false, message: 'the day-of-month never occurs in the given months' };
  }
  return {
    ok: true,
    spec: {
      minutes: sorted(minutes),
      hours: sorted(hours),
      daysOfMonth: sorted(dom),
      months: sorted(months),
      daysOfWeek: sorted(dow),
      domRestricted,
      dowRestricted,
    },
  };
}

const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function canEverFire(dom: readonly number[], months: readonly number[]): boolean {
  const first = dom[0] ?? 32;
  return months.some((m) => first <= (DAYS_IN_MONTH[m - 1] ?? 0));
}

/**
 * Renders a set of values as a short cron field: `*`, a list of values and ranges, or (EventBridge
 * only, `stepForm`) `start/step`, which Unix cron spells differently.
 */
function renderField(
  values: readonly number[],
  min: number,
  max: number,
  stepForm = false,
): string {
  if (values.length === max - min + 1) return '*';
  const [first, second] = values;
  if (first === undefined) return '*';
  if (stepForm && second !== undefined && values.length > 2) {
    const step = second - first;
    const arithmetic = values.every((v, i) => v === first + i * step);
    const last = values[values.length - 1] as number;
    if (step > 1 && arithmetic && last + step > max) return `${first}/${step}`;
  }
  const out: string[] = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j + 1 < values.length && (values[j + 1] as number) === (values[j] as number) + 1) j++;
    const a = values[i] as number;
    const b = values[j] as number;
    if (j - i >= 2) out.push(`${a}-${b}`);
    else for (let k = i; k <= j; k++) out.push(String(values[k]));
    i = j + 1;
  }
  return out.join(',');
}

/** The same schedule as a canonical 5-field Unix expression (days of week 0-6). */
export function toUnixExpression(spec: CronSpec): string {
  return [
    renderField(spec.minutes, 0, 59),
    renderField(spec.hours, 0, 23),
    renderField(spec.daysOfMonth, 1, 31),
    renderField(spec.months, 1, 12),
    renderField(spec.daysOfWeek, 0, 6),
  ].join(' ');
}

/**
 * The EventBridge Scheduler form: `cron(minutes hours day-of-month month day-of-week year)`,
 * where one day field must be `?` and days of week run 1-7 from Sunday
 * (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#cron-based).
 */
export function toEventBridgeExpression(spec: CronSpec): string {
  const field = (values: readonly number[], min: number, max: number) =>
    renderField(values, min, max, true);
  const dom = spec.dowRestricted ? '?' : field(spec.daysOfMonth, 1, 31);
  const dow = spec.dowRestricted
    ? field(
        spec.daysOfWeek.map((d) => d + 1),
        1,
        7,
      )
    : '?';
  const [minutes, hours, months] = [
    field(spec.minutes, 0, 59),
    field(spec.hours, 0, 23),
    field(spec.months, 1, 12),
  ];
  return `cron(${minutes} ${hours} ${dom} ${months} ${dow} *)`;
}

export type TimeZoneResult = { ok: true; timezone: string } | { ok: false; message: string };

const zones = new Map<string, TimeZoneResult>();

/**
 * The canonical IANA name of a time zone, as this runtime's ICU spells it
 * (`Intl.DateTimeFormat(undefined, { timeZone }).resolvedOptions().timeZone`): `utc` → `UTC`,
 * `america/new_york` → `America/New_York`, and, on Node 20's ICU, links to their target
 * (`US/Eastern` → `America/New_York`, `Asia/Kolkata` → `Asia/Calcutta`, the name CLDR keeps).
 * Every name stored or given to EventBridge Scheduler (`ScheduleExpressionTimezone`) goes
 * through here.
 *
 * Refused: names this runtime does not know, and bare names other than the UTC aliases (`EST`,
 * `EST5EDT`, `CET`, `MST`, `Japan`): these are legacy abbreviations and aliases kept only for
 * compatibility, whose meaning changed in tzdata 2024b (`EST` is now a link to America/Panama,
 * with no daylight saving time) and may differ between this runtime's tz database and
 * EventBridge's. A DAG must name the Area/Location it means.
 */
export function canonicalTimeZone(tz: string): TimeZoneResult {
  let r = zones.get(tz);
  if (r === undefined) {
    r = resolveTimeZone(tz);
    zones.set(tz, r);
  }
  return r;
}

function resolveTimeZone(tz: string): TimeZoneResult {
  let canonical: string;
  try {
    canonical = new Intl.DateTimeFormat(undefined, { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return { ok: false, message: `unknown time zone "${tz}" (use an IANA name)` };
  }
  if (tz.length === 0 || !canonical) {
    return { ok: false, message: `unknown time zone "${tz}" (use an IANA name)` };
  }
  if (canonical !== 'UTC' && !tz.includes('/')) {
    return {
      ok: false,
      message:
        `"${tz}" is a legacy time zone abbreviation or alias (this runtime reads it as ` +
        `"${canonical}"); use an IANA Area/Location name such as America/New_York, or UTC`,
    };
  }
  return { ok: true, timezone: canonical };
}

/** Whether `tz` is a time zone name a schedule may use (see {@link canonicalTimeZone}). */
export function isValidTimeZone(tz: string): boolean {
  return canonicalTimeZone(tz).ok;
}

export interface CompiledSchedule {
  readonly spec: CronSpec;
  /** For `ScheduleExpression`. */
  readonly expression: string;
  /** For `ScheduleExpressionTimezone`: the canonical IANA name. */
  readonly timezone: string;
}

export type CompileResult = ({ ok: true } & CompiledSchedule) | { ok: false; issues: Issue[] };

/**
 * Compiles a DAG's `schedule.cron` and `schedule.timezone`, with the time zone canonicalized;
 * issue paths are relative to `schedule`.
 */
export function compileSchedule(cron: string, timezone = 'UTC'): CompileResult {
  const issues: Issue[] = [];
  const parsed = parseCron(cron);
  if (!parsed.ok) issues.push({ path: 'cron', message: parsed.message });
  const zone = canonicalTimeZone(timezone);
  if (!zone.ok) issues.push({ path: 'timezone', message: zone.message });
  if (!parsed.ok || !zone.ok) return { ok: false, issues };
  return {
    ok: true,
    spec: parsed.spec,
    expression: toEventBridgeExpression(parsed.spec),
    timezone: zone.timezone,
  };
}

interface Wall {
  readonly y: number;
  readonly mo: number;
  readonly d: number;
  readonly h: number;
  readonly mi: number;
  readonly dow: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function wallTime(ms: number, tz: string): Wall {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      weekday: 'short',
    });
    formatters.set(tz, f);
  }
  const p: Record<string, string> = {};
  for (const part of f.formatToParts(ms)) p[part.type] = part.value;
  return {
    y: Number(p.year),
    mo: Number(p.month),
    d: Number(p.day),
    h: Number(p.hour),
    mi: Number(p.minute),
    dow: DAYS.indexOf((p.weekday ?? '').toUpperCase()),
  };
}

const wallMs = (w: Wall) => Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi);
const offsetAt = (ms: number, tz: string) =>
  wallMs(wallTime(ms, tz)) - Math.floor(ms / 60_000) * 60_000;

function matches(spec: CronSpec, w: Wall): boolean {
  return (
    spec.minutes.includes(w.mi) &&
    spec.hours.includes(w.h) &&
    spec.months.includes(w.mo) &&
    (spec.domRestricted ? spec.daysOfMonth.includes(w.d) : true) &&
    (spec.dowRestricted ? spec.daysOfWeek.includes(w.dow) : true)
  );
}

/** The earliest instant whose local time in `tz` is `w`, or undefined if `w` never occurs. */
function firstInstant(w: Wall, tz: string, near: number): number | undefined {
  const local = wallMs(w);
  // The offsets in force a few hours either side cover any DST shift (all are under 3 hours).
  const offsets = new Set([-6, 0, 6].map((h) => offsetAt(near + h * 3_600_000, tz)));
  let best: number | undefined;
  for (const off of offsets) {
    const u = local - off;
    if (wallMs(wallTime(u, tz)) === local && (best === undefined || u < best)) best = u;
  }
  return best;
}

/** Whether EventBridge Scheduler fires `spec` in `tz` at the instant `ms`. */
export function firesAt(spec: CronSpec, tz: string, ms: number): boolean {
  if (ms % 60_000 !== 0) return false;
  const w = wallTime(ms, tz);
  return matches(spec, w) && firstInstant(w, tz, ms) === ms;
}

/**
 * The next `n` times, strictly after `after`, at which EventBridge Scheduler fires the schedule.
 * Pure: the caller passes `after` (the clock).
 */
export function nextRuns(
  spec: CronSpec,
  timezone: string,
  after: Date,
  n: number,
  /** Stop at this time: none later is returned, and none is computed. */
  until?: Date,
): Date[] {
  const job = new Cron(toUnixExpression(spec), { timezone, paused: true });
  const out: Date[] = [];
  let cursor = after;
  // Each DST edge costs at most one rejected candidate per wall time, so this bound is generous.
  for (let i = 0; out.length < n && i < n * 4 + 64; i++) {
    const next = job.nextRun(cursor);
    if (!next) break;
    if (until && next.getTime() > until.getTime()) break;
    if (next.getTime() > after.getTime() && firesAt(spec, timezone, next.getTime())) out.push(next);
    cursor = next;
  }
  return out;
}

/**
 * The latest time at or before `at` at which EventBridge Scheduler fires the schedule, if any
 * within the croner search. Pure: the caller passes `at`.
 */
export function previousRun(spec: CronSpec, timezone: string, at: Date): Date | undefined {
  const job = new Cron(toUnixExpression(spec), { timezone, paused: true });
  // previousRuns is strictly before its reference: start a millisecond after `at`.
  for (const t of job.previousRuns(8, new Date(at.getTime() + 1))) {
    if (t.getTime() <= at.getTime() && firesAt(spec, timezone, t.getTime())) return t;
  }
  return undefined;
}
