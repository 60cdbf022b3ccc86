import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../adapters/aws/coalesce.ts';

/**
 * A write whose calls are recorded: it throws when its ops include `fail`, answers fewer than
 * asked when they include `short`, and fails only the op `bad` when they include it.
 */
function recorder() {
  const writes: string[][] = [];
  const coalescer = new Coalescer<string, string, string>(async (key, ops) => {
    writes.push([key, ...ops]);
    await new Promise((r) => setImmediate(r));
    if (ops.includes('fail')) throw new Error(`refused: ${ops.join(',')}`);
    const results = ops.map(
      (op): PromiseSettledResult<string> =>
        op === 'bad'
          ? { status: 'rejected', reason: new Error('bad') }
          : { status: 'fulfilled', value: `${key}:${op}` },
    );
    return ops.includes('short') ? results.slice(1) : results;
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

  it('fails one caller alone when the write says so, and every caller of a write that throws', async () => {
    const { writes, coalescer } = recorder();
    const ops = ['a', 'b', 'bad', 'c', 'd', 'fail', 'e', 'f', 'short', 'g'];
    const results = await Promise.allSettled(ops.map((op) => coalescer.run('item', 'k', op)));
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled', // a
      'fulfilled', // b
      'rejected', // bad, alone
      'fulfilled', // c
      'rejected', // d, e: written with fail, which threw
      'rejected',
      'rejected',
      'rejected', // f, short, g: fewer answers than writes
      'rejected',
      'rejected',
    ]);
    expect(writes).toEqual([
      ['k', 'a'],
      ['k', 'b', 'bad', 'c'],
      ['k', 'd', 'fail', 'e'],
      ['k', 'f', 'short', 'g'],
    ]);
    expect(await coalescer.run('item', 'k', 'h')).toBe('k:h');
  });
});
