import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../adapters/aws/coalesce.ts';

/** A write whose calls are recorded, and which fails when its ops include `fail`. */
function recorder() {
  const writes: string[][] = [];
  const coalescer = new Coalescer<string, string, string>(async (key, ops) => {
    writes.push([key, ...ops]);
    await new Promise((r) => setImmediate(r));
    if (ops.includes('fail')) throw new Error(`refused: ${ops.join(',')}`);
    return ops.map((op) => `${key}:${op}`);
  }, 3);
  return { writes, coalescer };
}

describe('Coalescer', () => {
  it('sends the first write at once and the writes that arrive meanwhile together, at most max', async () => {
    const { writes, coalescer } = recorder();
    const ops = ['a', 'b', 'c', 'd', 'e', 'f'];
    const results = await Promise.all(ops.map((op) => coalescer.run('item', 'k', op)));
    expect(results).toEqual(ops.map((op) => `k:${op}`));
    expect(writes).toEqual([
      ['k', 'a'],
      ['k', 'b', 'c', 'd'],
      ['k', 'e', 'f'],
    ]);
  });

  it('keeps items apart, and starts afresh once an item has nothing waiting', async () => {
    const { writes, coalescer } = recorder();
    await Promise.all([
      coalescer.run('one', 'k1', 'a'),
      coalescer.run('two', 'k2', 'b'),
      coalescer.run('one', 'k1', 'c'),
    ]);
    await coalescer.run('one', 'k1', 'd');
    expect(writes).toEqual([
      ['k1', 'a'],
      ['k2', 'b'],
      ['k1', 'c'],
      ['k1', 'd'],
    ]);
  });

  it('fails the callers of a failed write only, and goes on with those that wait', async () => {
    const { writes, coalescer } = recorder();
    const results = await Promise.allSettled(
      ['a', 'b', 'fail', 'c', 'd'].map((op) => coalescer.run('item', 'k', op)),
    );
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'rejected',
      'rejected',
      'rejected',
      'fulfilled',
    ]);
    expect(writes).toEqual([
      ['k', 'a'],
      ['k', 'b', 'fail', 'c'],
      ['k', 'd'],
    ]);
    expect(await coalescer.run('item', 'k', 'e')).toBe('k:e');
  });
});
