import type { Issue } from './errors.ts';

/**
 * Checks that a parsed JSON value can be stored and read back unchanged, before anything is
 * written. `JSON.parse` accepts input that does not survive the trip: `1e999` becomes Infinity
 * (and `JSON.stringify` then writes `null`), integers past 2^53 lose digits, a lone surrogate is
 * not Unicode (UTF-8 encoders refuse or mangle it), a `__proto__` key is dropped by any code that
 * copies the object by assignment, and very deep nesting overflows the stack of every recursive
 * reader (`JSON.stringify`, schema validators). Walks the value without recursion, so the check
 * itself cannot overflow.
 */

/** How deep a user value may nest: enough for real configs, far below any stack limit. */
export const MAX_JSON_DEPTH = 64;

const MAX_ISSUES = 20;

// With the `u` flag a surrogate pair reads as one code point, so only a lone surrogate matches.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
const wellFormed = (s: string) => !LONE_SURROGATE.test(s);

export interface JsonCheckOptions {
  readonly maxDepth?: number;
}

/** Formats a path as the issues elsewhere do: `$.conf.a[2]`. */
function pathText(path: readonly (string | number)[]): string {
  let out = '$';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p)) out += `.${p}`;
    else out += `[${JSON.stringify(wellFormed(p) ? p : p.replace(/[\uD800-\uDFFF]/gu, '\uFFFD'))}]`;
  }
  return out;
}

export function jsonValueIssues(
  value: unknown,
  path: readonly (string | number)[] = [],
  options: JsonCheckOptions = {},
): Issue[] {
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH;
  const issues: Issue[] = [];
  const stack: { v: unknown; path: readonly (string | number)[] }[] = [{ v: value, path }];
  const base = path.length;
  while (stack.length > 0 && issues.length < MAX_ISSUES) {
    const { v, path: p } = stack.pop() as (typeof stack)[number];
    const add = (message: string) => issues.push({ path: pathText(p), message });
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) add('is not a finite number (JSON has no Infinity or NaN)');
      else if (Number.isInteger(v) && !Number.isSafeInteger(v))
        add('is a number beyond ±2^53−1 that cannot be kept exactly; send it as a string');
    } else if (typeof v === 'string') {
      if (!wellFormed(v)) add('holds a lone surrogate, which is not valid Unicode');
    } else if (v !== null && typeof v === 'object') {
      if (p.length - base >= maxDepth) {
        add(`is nested more than ${maxDepth} levels deep`);
        continue;
      }
      if (Array.isArray(v)) {
        for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: [...p, i] });
      } else {
        const keys = Object.keys(v);
        for (let i = keys.length - 1; i >= 0; i--) {
          const k = keys[i] as string;
          if (k === '__proto__') {
            issues.push({
              path: pathText([...p, k]),
              message: 'the key "__proto__" is not allowed',
            });
          } else if (!wellFormed(k)) {
            issues.push({
              path: pathText([...p, k]),
              message: 'the key holds a lone surrogate, which is not valid Unicode',
            });
          } else {
            stack.push({ v: (v as Record<string, unknown>)[k], path: [...p, k] });
          }
        }
      }
    }
  }
  if (stack.length > 0 && issues.length >= MAX_ISSUES) {
    issues.push({ path: pathText(path), message: 'more problems not listed' });
  }
  return issues;
}

/** UTF-8 bytes of a value's JSON text: what a store keeps for it. */
export function jsonByteLength(value: unknown): number {
  return new TextEncoder().encode(JSON.stringify(value) ?? '').length;
}
