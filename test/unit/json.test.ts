import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { boundIssues, MAX_IMPORT_ISSUES } from '../../app/dags.ts';
import { checkConf, MAX_CONF_BYTES } from '../../app/runs.ts';
import { validateDagText } from '../../core/dag/validate.ts';
import { InvalidTransitionError, TooLargeError, ValidationError } from '../../core/errors.ts';
import { jsonValueIssues, MAX_JSON_DEPTH } from '../../core/json.ts';
import {
  checkRunTransition,
  finishTask,
  MAX_ERROR_CHARS,
  triesSoFar,
} from '../../core/state/index.ts';

const nested = (depth: number) => JSON.parse(`${'['.repeat(depth)}${']'.repeat(depth)}`);

describe('values that JSON cannot carry through storage', () => {
  it.each([
    ['1e999', '$.a', /finite/],
    ['-1e999', '$.a', /finite/],
    ['9007199254740993', '$.a', /2\^53/],
    ['-9007199254740993', '$.a', /2\^53/],
    ['1e300', '$.a', /2\^53/],
    ['"\\ud800"', '$.a', /lone surrogate/],
    ['"x\\udc00y"', '$.a', /lone surrogate/],
  ])('refuses %s, naming the field', (text, path, message) => {
    const issues = jsonValueIssues(JSON.parse(`{"a": ${text}}`));
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe(path);
    expect(issues[0]?.message).toMatch(message);
  });

  it('refuses a __proto__ key and a key with a lone surrogate, where they are', () => {
    const v = JSON.parse('{"conf": {"ok": 1, "deep": [{"__proto__": {"x": 1}}], "\\ud83d": 2}}');
    const issues = jsonValueIssues(v);
    expect(issues.map((i) => i.path).sort()).toEqual(
      ['$.conf.deep[0].__proto__', '$.conf["\ufffd"]'].sort(),
    );
  });

  it('refuses nesting past the limit without overflowing the stack, at 100,000 levels too', () => {
    expect(jsonValueIssues(nested(MAX_JSON_DEPTH))).toEqual([]);
    expect(jsonValueIssues(nested(MAX_JSON_DEPTH + 1))[0]?.message).toMatch(/nested more than/);
    expect(jsonValueIssues(nested(100_000))[0]?.message).toMatch(/nested more than/);
  });

  it('accepts what round-trips: every value that JSON.stringify/parse keeps equal', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
        const back = JSON.parse(JSON.stringify(v));
        // (A "__proto__" key is refused, so never asserted on; "__proto__" as a string value is
        // accepted and round-trips like any other string.)
        const kept = JSON.stringify(back) === JSON.stringify(v);
        // Whatever it accepts survives the trip unchanged.
        if (jsonValueIssues(v).length === 0) expect(kept).toBe(true);
      }),
    );
  });

  it('a DAG document with such a value is refused before the schema, with its path', () => {
    const doc = (params: string) =>
      `{"dagId":"d","params":${params},"tasks":[{"taskId":"a","operator":"noop","config":{"output":1e999}}]}`;
    const r = validateDagText(doc('{"x": 9007199254740993}'));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.issues.map((i) => i.path).sort()).toEqual(
        ['$.params.x', '$.tasks[0].config.output'].sort(),
      );
    }
    const deep = validateDagText(
      `{"dagId":"d","params":${'['.repeat(100_000)}${']'.repeat(100_000)},"tasks":[]}`,
    );
    expect(deep.ok).toBe(false);
  });

  it('a stored document over the upload limit is read back when asked to (no byte limit)', () => {
    const text = JSON.stringify({
      dagId: 'd',
      description: 'x'.repeat(2000),
      tasks: [{ taskId: 'a', operator: 'noop' }],
    });
    expect(validateDagText(text, { maxBytes: 100 }).ok).toBe(false);
    expect(validateDagText(text, { maxBytes: Number.POSITIVE_INFINITY }).ok).toBe(true);
  });
});

describe('conf', () => {
  it('is refused over the limit with the limit in the message, and accepted at it', () => {
    const at = { s: 'x'.repeat(MAX_CONF_BYTES - 8) }; // {"s":"…"} is 8 bytes of overhead
    expect(() => checkConf(at)).not.toThrow();
    const over = { s: 'x'.repeat(MAX_CONF_BYTES - 7) };
    expect(() => checkConf(over)).toThrow(TooLargeError);
    expect(() => checkConf(over)).toThrow(new RegExp(`limit is ${MAX_CONF_BYTES}`));
    // Multi-byte characters count as bytes, not characters.
    expect(() => checkConf({ s: 'é'.repeat(MAX_CONF_BYTES / 2) })).toThrow(TooLargeError);
  });

  it('with an unstorable value is a ValidationError naming $.conf…', () => {
    expect(() => checkConf({ n: Number.POSITIVE_INFINITY })).toThrow(ValidationError);
    expect(() => checkConf(JSON.parse('{"__proto__": 1}'))).toThrow(/\$\.conf\.__proto__/);
  });
});

describe('bounded stored values', () => {
  it('an import error keeps the first issues and counts the rest', () => {
    const issues = Array.from({ length: 10_000 }, (_, i) => ({
      path: `$.tasks[${i}]`,
      message: 'm'.repeat(5000),
    }));
    const kept = boundIssues(issues);
    expect(kept).toHaveLength(MAX_IMPORT_ISSUES + 1);
    expect(kept.at(-1)?.message).toBe(`and ${10_000 - MAX_IMPORT_ISSUES} more problems`);
    expect(Math.max(...kept.map((i) => i.message.length))).toBeLessThanOrEqual(500);
    expect(boundIssues(issues.slice(0, 3))).toHaveLength(3);
  });

  it('a task error is cut to MAX_ERROR_CHARS', () => {
    const t = finishTask(
      { status: 'running', attempt: 1, leaseToken: 'l' },
      { ok: false, error: 'e'.repeat(100_000), retryAt: null },
      new Date(),
    );
    expect(t.set.error?.length).toBe(MAX_ERROR_CHARS);
  });
});

describe('run transitions and retries', () => {
  it('a store-level run change is checked against RUN_TRANSITIONS', () => {
    expect(() => checkRunTransition(['running'], 'success')).not.toThrow();
    expect(() => checkRunTransition(['queued', 'running'], 'failed')).not.toThrow();
    expect(() => checkRunTransition(['success'], 'failed')).toThrow(InvalidTransitionError);
    expect(() => checkRunTransition(['running', 'cancelled'], 'success')).toThrow(
      InvalidTransitionError,
    );
  });

  it('a cleared task counts its tries from the clear', () => {
    expect(triesSoFar({ attempt: 3 })).toBe(3);
    expect(triesSoFar({ attempt: 4, retryBase: 3 })).toBe(1);
  });
});
