import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type CronSpec,
  canonicalTimeZone,
  compileSchedule,
  isValidTimeZone,
  nextRuns,
  parseCron,
  previousRun,
  toEventBridgeExpression,
} from '../../core/cron/index.ts';

function spec(expr: string): CronSpec {
  const p = parseCron(expr);
  if (!p.ok) throw new Error(p.message);
  return p.spec;
}

const runs = (expr: string, tz: string, after: string, n: number) =>
  nextRuns(spec(expr), tz, new Date(after), n).map((d) => d.toISOString());

describe('compiling to EventBridge Scheduler', () => {
  it.each([
    ['30 2 * * *', 'cron(30 2 * * ? *)'],
    ['0 9 * * 1-5', 'cron(0 9 ? * 2-6 *)'],
    ['0 9 * * MON-FRI', 'cron(0 9 ? * 2-6 *)'],
    ['0 12 * * 5-7', 'cron(0 12 ? * 1,6,7 *)'],
    ['5 4 * * 0', 'cron(5 4 ? * 1 *)'],
    ['5 4 * * 7', 'cron(5 4 ? * 1 *)'],
    ['5 4 * * sun', 'cron(5 4 ? * 1 *)'],
    ['*/15 * * * *', 'cron(0/15 * * * ? *)'],
    ['10-50/20 * * * *', 'cron(10/20 * * * ? *)'],
    ['0 */6 1,15 * *', 'cron(0 0/6 1,15 * ? *)'],
    ['0 0 1 * *', 'cron(0 0 1 * ? *)'],
    ['0 0 * JAN,jul *', 'cron(0 0 * 1,7 ? *)'],
    ['0 8-18 * * *', 'cron(0 8-18 * * ? *)'],
    ['0 0 * * 0-6', 'cron(0 0 * * ? *)'],
    ['* * * * *', 'cron(* * * * ? *)'],
    ['@hourly', 'cron(0 * * * ? *)'],
    ['@daily', 'cron(0 0 * * ? *)'],
    ['@weekly', 'cron(0 0 ? * 1 *)'],
    ['@monthly', 'cron(0 0 1 * ? *)'],
    ['@yearly', 'cron(0 0 1 1 ? *)'],
  ])('%s → %s', (unix, eventBridge) => {
    expect(toEventBridgeExpression(spec(unix))).toBe(eventBridge);
  });

  it('keeps the time zone beside the expression', () => {
    expect(compileSchedule('30 2 * * *', 'America/New_York')).toMatchObject({
      ok: true,
      expression: 'cron(30 2 * * ? *)',
      timezone: 'America/New_York',
    });
  });
});

describe('refusing what cannot be scheduled', () => {
  it.each([
    ['0 9 1 * 1', /both restricted.*EventBridge Scheduler cannot express/],
    ['0 9 1-7 * MON', /both restricted/],
    ['60 * * * *', /minute value 60 is out of range 0-59/],
    ['0 24 * * *', /hour value 24 is out of range 0-23/],
    ['0 0 0 * *', /day-of-month value 0 is out of range 1-31/],
    ['0 0 * 13 *', /month value 13 is out of range 1-12/],
    ['0 0 * * 8', /day-of-week value 8 is out of range 0-7/],
    ['* * *', /expected 5 fields .* got 3/],
    ['0 0 * * * *', /expected 5 fields .* got 6/],
    ['@reboot', /unknown preset "@reboot"/],
    ['5-1 * * * *', /minute range "5-1" runs backwards/],
    ['*/0 * * * *', /minute step must be at least 1/],
    ['0 0 31 2 *', /never occurs/],
    ['0 0 30,31 2 *', /never occurs/],
    ['x * * * *', /minute has an invalid value "x"/],
    ['0 0 ? * *', /day-of-month has an invalid value "\?"/],
    ['0 0 L * *', /day-of-month has an invalid value "L"/],
    ['1,,2 * * * *', /minute has an invalid/],
  ])('%s', (expr, message) => {
    const p = parseCron(expr);
    expect(p.ok).toBe(false);
    expect(p.ok ? '' : p.message).toMatch(message);
  });

  it('accepts February 29th, which exists in leap years', () => {
    expect(runs('0 0 29 2 *', 'UTC', '2026-01-01T00:00:00Z', 2)).toEqual([
      '2028-02-29T00:00:00.000Z',
      '2032-02-29T00:00:00.000Z',
    ]);
  });

  it('refuses unknown time zones, naming the field', () => {
    expect(isValidTimeZone('Europe/London')).toBe(true);
    expect(isValidTimeZone('Europe/Lundon')).toBe(false);
    expect(isValidTimeZone('')).toBe(false);
    expect(compileSchedule('0 0 1 * 1', 'Nowhere/City')).toEqual({
      ok: false,
      issues: [
        { path: 'cron', message: expect.stringContaining('both restricted') },
        { path: 'timezone', message: 'unknown time zone "Nowhere/City" (use an IANA name)' },
      ],
    });
  });
});

describe('time zone names', () => {
  it.each([
    ['UTC', 'UTC'],
    ['utc', 'UTC'],
    ['Etc/UTC', 'UTC'],
    ['GMT', 'UTC'],
    ['america/new_york', 'America/New_York'],
    ['AMERICA/NEW_YORK', 'America/New_York'],
    ['Europe/London', 'Europe/London'],
    ['europe/paris', 'Europe/Paris'],
    ['asia/tokyo', 'Asia/Tokyo'],
    ['Etc/GMT+5', 'Etc/GMT+5'],
  ])('%s compiles to the canonical %s', (tz, canonical) => {
    expect(canonicalTimeZone(tz)).toEqual({ ok: true, timezone: canonical });
    expect(compileSchedule('0 9 * * *', tz)).toMatchObject({ ok: true, timezone: canonical });
  });

  it('resolves a link with a slash (US/Eastern) to a zone of the same rules', () => {
    // Node 20's ICU resolves links to their target; runtimes that keep the name as written (the
    // Temporal-era behaviour) store US/Eastern, which EventBridge also accepts.
    const c = canonicalTimeZone('us/eastern');
    expect(c.ok && c.timezone).toMatch(/^(America\/New_York|US\/Eastern)$/);
  });

  it.each(['EST', 'est', 'EST5EDT', 'CET', 'MST', 'HST', 'PST8PDT', 'Japan', 'Cuba'])(
    'refuses the legacy abbreviation or alias %s, naming what it would mean',
    (tz) => {
      const c = canonicalTimeZone(tz);
      expect(c).toEqual({ ok: false, message: expect.stringMatching(/legacy .*Area\/Location/) });
      expect(compileSchedule('0 9 * * *', tz)).toEqual({
        ok: false,
        issues: [{ path: 'timezone', message: c.ok ? '' : c.message }],
      });
    },
  );

  it.each(['', 'Nowhere/City', 'Z', '+05:00', 'America/New York', 'UTC+1'])(
    'refuses %j as unknown',
    (tz) => {
      expect(canonicalTimeZone(tz)).toEqual({
        ok: false,
        message: `unknown time zone "${tz}" (use an IANA name)`,
      });
    },
  );

  it('canonicalizes every zone this runtime lists to itself or another listed zone', () => {
    const listed = Intl.supportedValuesOf('timeZone');
    for (const tz of listed) {
      const c = canonicalTimeZone(tz);
      expect(c.ok, tz).toBe(true);
      if (c.ok) expect(canonicalTimeZone(c.timezone)).toEqual(c);
    }
  });
});

/**
 * EventBridge Scheduler at DST edges: a local time that does not exist is skipped; one that
 * happens twice fires once, at its first occurrence.
 */
describe('next runs across DST, with EventBridge semantics', () => {
  it.each([
    // New York springs forward on 2026-03-08 at 02:00 (to 03:00 EDT): 02:30 does not exist.
    [
      'America/New_York',
      '30 2 * * *',
      '2026-03-07T00:00:00Z',
      ['2026-03-07T07:30:00.000Z', '2026-03-09T06:30:00.000Z', '2026-03-10T06:30:00.000Z'],
    ],
    // 03:00 does exist on that day.
    [
      'America/New_York',
      '0 3 * * *',
      '2026-03-07T12:00:00Z',
      ['2026-03-08T07:00:00.000Z', '2026-03-09T07:00:00.000Z'],
    ],
    // New York falls back on 2026-11-01 at 02:00 EDT (to 01:00 EST): 01:30 happens twice.
    [
      'America/New_York',
      '30 1 * * *',
      '2026-10-31T00:00:00Z',
      ['2026-10-31T05:30:00.000Z', '2026-11-01T05:30:00.000Z', '2026-11-02T06:30:00.000Z'],
    ],
    // Every 30 minutes through the repeated hour: 01:00 and 01:30 EST are not fired again.
    [
      'America/New_York',
      '*/30 * * * *',
      '2026-11-01T04:45:00Z',
      ['2026-11-01T05:00:00.000Z', '2026-11-01T05:30:00.000Z', '2026-11-01T07:00:00.000Z'],
    ],
    // London springs forward on 2026-03-29 at 01:00 (to 02:00 BST): 01:30 does not exist.
    [
      'Europe/London',
      '30 1 * * *',
      '2026-03-28T00:00:00Z',
      ['2026-03-28T01:30:00.000Z', '2026-03-30T00:30:00.000Z', '2026-03-31T00:30:00.000Z'],
    ],
    // London falls back on 2026-10-25 at 02:00 BST (to 01:00 GMT): 01:30 fires once, in BST.
    [
      'Europe/London',
      '30 1 * * *',
      '2026-10-24T00:00:00Z',
      ['2026-10-24T00:30:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z'],
    ],
    // Weekdays at 09:00 London, across the spring change.
    [
      'Europe/London',
      '0 9 * * MON-FRI',
      '2026-03-27T00:00:00Z',
      ['2026-03-27T09:00:00.000Z', '2026-03-30T08:00:00.000Z'],
    ],
    // Sydney (southern hemisphere) springs forward on 2026-10-04 at 02:00 (to 03:00 AEDT).
    [
      'Australia/Sydney',
      '0 2 * * *',
      '2026-10-02T00:00:00Z',
      ['2026-10-02T16:00:00.000Z', '2026-10-04T15:00:00.000Z', '2026-10-05T15:00:00.000Z'],
    ],
    // Sydney falls back on 2026-04-05 at 03:00 AEDT (to 02:00 AEST): 02:30 fires once.
    [
      'Australia/Sydney',
      '30 2 * * *',
      '2026-04-03T00:00:00Z',
      ['2026-04-03T15:30:00.000Z', '2026-04-04T15:30:00.000Z', '2026-04-05T16:30:00.000Z'],
    ],
  ])('%s %s after %s', (tz, expr, after, expected) => {
    expect(runs(expr, tz, after, expected.length)).toEqual(expected);
  });

  it('prints times strictly after --after', () => {
    expect(runs('30 6 * * *', 'UTC', '2026-03-09T06:30:00.000Z', 1)).toEqual([
      '2026-03-10T06:30:00.000Z',
    ]);
    expect(runs('30 6 * * *', 'UTC', '2026-03-09T06:29:59.999Z', 1)).toEqual([
      '2026-03-09T06:30:00.000Z',
    ]);
  });
});

/**
 * An independent oracle: step through every UTC minute, read its local time with Intl, and fire
 * when the fields match and the same local time has not already occurred in the last 3 hours.
 */
function bruteForce(expr: string, tz: string, after: Date, n: number): string[] {
  const fmt = new Intl.DateTimeFormat('en-GB', {
    timeZone: tz,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    weekday: 'short',
  });
  const s = spec(expr);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const cache = new Map<number, ReturnType<typeof read>>();
  const local = (ms: number) => {
    let w = cache.get(ms);
    if (!w) {
      w = read(ms);
      cache.set(ms, w);
    }
    return w;
  };
  const read = (ms: number) => {
    const p = Object.fromEntries(fmt.formatToParts(ms).map((x) => [x.type, x.value]));
    return {
      key: `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`,
      mi: Number(p.minute),
      h: Number(p.hour),
      d: Number(p.day),
      mo: Number(p.month),
      dow: days.indexOf(p.weekday as string),
    };
  };
  const out: string[] = [];
  const start = Math.floor(after.getTime() / 60_000) * 60_000 + 60_000;
  for (let t = start; out.length < n && t < start + 2 * 86_400_000; t += 60_000) {
    const w = local(t);
    const fields =
      s.minutes.includes(w.mi) &&
      s.hours.includes(w.h) &&
      s.months.includes(w.mo) &&
      (!s.domRestricted || s.daysOfMonth.includes(w.d)) &&
      (!s.dowRestricted || s.daysOfWeek.includes(w.dow));
    let repeated = false;
    for (let back = 15; fields && back <= 180 && !repeated; back += 15) {
      repeated = local(t - back * 60_000).key === w.key;
    }
    if (fields && !repeated) out.push(new Date(t).toISOString());
  }
  return out;
}

describe('next runs: property', () => {
  // Instants within a day of the 2026 DST changes of each zone.
  const edges: Record<string, string[]> = {
    'America/New_York': ['2026-03-08T06:00:00Z', '2026-11-01T05:00:00Z'],
    'Europe/London': ['2026-03-29T00:30:00Z', '2026-10-25T00:30:00Z'],
    'Australia/Sydney': ['2026-04-04T15:30:00Z', '2026-10-03T15:30:00Z'],
    'Australia/Lord_Howe': ['2026-04-04T14:30:00Z', '2026-10-03T15:30:00Z'],
  };
  const exprs = fc.tuple(
    fc.constantFrom('*', '*/15', '0', '30', '0,45', '15-45/15'),
    fc.constantFrom('*', '0-3', '1', '2', '1,2', '*/2', '23'),
    fc.constantFrom('* *', '* 0', '* 1-5', '1,4,25 *'),
  );

  it('matches a minute-by-minute oracle near DST changes in four zones', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(edges)),
        fc.integer({ min: 0, max: 1 }),
        fc.integer({ min: -24 * 60, max: 24 * 60 }),
        exprs,
        (tz, which, shiftMinutes, [m, h, rest]) => {
          const expr = `${m} ${h} ${rest.split(' ')[0]} * ${rest.split(' ')[1]}`;
          const after = new Date(
            new Date((edges[tz] as string[])[which] as string).getTime() + shiftMinutes * 60_000,
          );
          const n = 6;
          const got = nextRuns(spec(expr), tz, after, n).map((d) => d.toISOString());
          const want = bruteForce(expr, tz, after, n);
          expect(got.slice(0, want.length)).toEqual(want);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('previous run', () => {
  const prev = (expr: string, tz: string, at: string) =>
    previousRun(spec(expr), tz, new Date(at))?.toISOString();

  it('is the latest fire time at or before the instant', () => {
    expect(prev('* * * * *', 'UTC', '2026-03-09T06:30:40.123Z')).toBe('2026-03-09T06:30:00.000Z');
    expect(prev('* * * * *', 'UTC', '2026-03-09T06:30:00.000Z')).toBe('2026-03-09T06:30:00.000Z');
    expect(prev('30 2 * * *', 'UTC', '2026-03-09T02:29:59.000Z')).toBe('2026-03-08T02:30:00.000Z');
  });

  it('follows EventBridge at DST changes: the skipped 02:30 of 2026-03-08 in New York is not a run', () => {
    expect(prev('30 2 * * *', 'America/New_York', '2026-03-08T12:00:00Z')).toBe(
      '2026-03-07T07:30:00.000Z',
    );
    // The repeated 01:30 of 2026-11-01 fired at its first occurrence only.
    expect(prev('30 1 * * *', 'America/New_York', '2026-11-01T06:45:00Z')).toBe(
      '2026-11-01T05:30:00.000Z',
    );
  });

  it('agrees with next runs', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('*/15 * * * *', '0 * * * *', '30 2 * * *', '0 9 * * 1-5'),
        fc.constantFrom('UTC', 'America/New_York', 'Europe/London', 'Australia/Sydney'),
        fc.integer({ min: 0, max: 365 * 24 * 60 }),
        (expr, tz, minutes) => {
          const after = new Date(Date.UTC(2026, 0, 1) + minutes * 60_000);
          const [next] = nextRuns(spec(expr), tz, after, 1);
          if (!next) return;
          expect(previousRun(spec(expr), tz, next)?.toISOString()).toBe(next.toISOString());
        },
      ),
      { numRuns: 200 },
    );
  });
});
