import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RetrySettings } from '../../core/dag/schema.ts';
import { nextRetryAt, retryDelayMs } from '../../core/retry/index.ts';

const fixed: RetrySettings = {
  retries: 3,
  retryDelaySeconds: 10,
  retryBackoff: 'fixed',
  maxRetryDelaySeconds: 600,
};
const exponential: RetrySettings = { ...fixed, retryBackoff: 'exponential' };
const failedAt = new Date('2026-03-09T06:30:00.000Z');

describe('retry policy', () => {
  it('fixed: the same delay each time, capped', () => {
    expect([1, 2, 3].map((a) => retryDelayMs(fixed, a, () => 0.5))).toEqual([
      10_000, 10_000, 10_000,
    ]);
    expect(retryDelayMs({ ...fixed, maxRetryDelaySeconds: 4 }, 1, () => 0.5)).toBe(4_000);
  });

  it('exponential: full jitter under base × 2^(attempt-1), capped', () => {
    const top = () => 0.999_999;
    expect([1, 2, 3, 4].map((a) => retryDelayMs(exponential, a, top))).toEqual([
      9_999, 19_999, 39_999, 79_999,
    ]);
    expect(retryDelayMs(exponential, 20, top)).toBe(599_999);
    expect(retryDelayMs(exponential, 3, () => 0)).toBe(0);
    expect(retryDelayMs(exponential, 3, () => 0.5)).toBe(20_000);
  });

  it('is deterministic under an injected random source', () => {
    const seq = () => {
      let x = 0.1;
      return () => (x = (x * 7.3) % 1);
    };
    const a = seq();
    const b = seq();
    const run = (r: () => number) => [1, 2, 3].map((n) => retryDelayMs(exponential, n, r));
    expect(run(a)).toEqual(run(b));
  });

  it('counts the delay from the failure, and stops after `retries` retries', () => {
    expect(nextRetryAt(fixed, 1, failedAt, () => 0)?.toISOString()).toBe(
      '2026-03-09T06:30:10.000Z',
    );
    expect(nextRetryAt(fixed, 3, failedAt, () => 0)).not.toBeNull();
    expect(nextRetryAt(fixed, 4, failedAt, () => 0)).toBeNull();
    expect(nextRetryAt({ ...fixed, retries: 0 }, 1, failedAt, () => 0)).toBeNull();
  });

  it('delays stay within their bounds (property)', () => {
    // Found by this property once: a zero base at attempt 1025 (0 × 2^1024 = NaN).
    expect(
      retryDelayMs(
        { ...exponential, retryDelaySeconds: 0, maxRetryDelaySeconds: 0 },
        1025,
        () => 0,
      ),
    ).toBe(0);
    const policy = fc.record({
      retries: fc.integer({ min: 0, max: 100 }),
      retryDelaySeconds: fc.double({ min: 0, max: 86_400, noNaN: true }),
      retryBackoff: fc.constantFrom('fixed' as const, 'exponential' as const),
      maxRetryDelaySeconds: fc.double({ min: 0, max: 86_400, noNaN: true }),
    });
    fc.assert(
      fc.property(
        policy,
        fc.integer({ min: 1, max: 2000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (p, attempt, r) => {
          const d = retryDelayMs(p, attempt, () => r);
          expect(Number.isInteger(d)).toBe(true);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThanOrEqual(p.maxRetryDelaySeconds * 1000);
          if (p.retryBackoff === 'fixed') {
            const ms = (s: number) => Math.floor(s * 1000);
            expect(d).toBe(Math.min(ms(p.retryDelaySeconds), ms(p.maxRetryDelaySeconds)));
          } else {
            // 0 × 2^1024 is NaN in floating point; a zero base bounds the delay at zero.
            const bound =
              p.retryDelaySeconds === 0 ? 0 : p.retryDelaySeconds * 1000 * 2 ** (attempt - 1);
            expect(d).toBeLessThanOrEqual(bound);
          }
          const at = nextRetryAt(p, attempt, failedAt, () => r);
          expect(at === null).toBe(attempt > p.retries);
          if (at) expect(at.getTime() - failedAt.getTime()).toBe(d);
        },
      ),
    );
  });
});
