import { describe, expect, it } from 'vitest';
import { Batcher, Coalescer } from '../../adapters/aws/coalesce.ts';

/**
 * A write whose calls are recorded (as `record`): it throws when its ops include `fail`, answers
 * fewer than asked when they include `short`, fails only the op `bad` when they include it, and
 * answers each other op `${label}:${op}`.
 */
async function recordedWrite(
  writes: string[][],
  label: string,
  record: string[],
  ops: readonly string[],
): Promise<PromiseSettledResult<string>[]> {
  writes.push(record);
  await new Promise((r) => setImmediate(r));
  if (ops.includes('fail')) throw new Error(`refused: ${ops.join(',')}`);
  const results = ops.map(
    (op): PromiseSettledResult<string> =>
      op === 'bad'
        ? { status: 'rejected', reason: new Error('bad') }
        : { status: 'fulfilled', value: `${label}:${op}` },
  );
  return ops.includes('short') ? results.slice(1) : results;
}

function recorder() {
  const writes: string[][] = [];
  const coalescer = new Coalescer<string, string, string>(
    (key, ops) => recordedWrite(writes, key, [key, ...ops], ops),
    3,
  );
  return { writes, coalescer };
}

describe('Coalescer', () => {
  it('sends the writes of one turn together, and those that arrive meanwhile next, at most max', async () => {
    const { writes, coalescer } = recorder();
    const ops = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const first = ops.slice(0, 5).map((op) => coalescer.run('item', 'k', op));
    await new Promise((r) => setImmediate(r));
    // The first write is in flight: these wait for it.
    const later = ops.slice(5).map((op) => coalescer.run('item', 'k', op));
    const results = await Promise.all([...first, ...later]);
    expect(results).toEqual(ops.map((op) => `k:${op}`));
    expect(writes).toEqual([
      ['k', 'a', 'b', 'c'],
      ['k', 'd', 'e', 'f'],
      ['k', 'g'],
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
      ['k1', 'a', 'c'],
      ['k2', 'b'],
      ['k1', 'd'],
    ]);
  });

  it('fails one caller alone when the write says so, and every caller of a write that throws', async () => {
    const { writes, coalescer } = recorder();
    const ops = ['b', 'bad', 'c', 'd', 'fail', 'e', 'f', 'short', 'g'];
    const results = await Promise.allSettled(ops.map((op) => coalescer.run('item', 'k', op)));
    expect(results.map((r) => r.status)).toEqual([
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
      ['k', 'b', 'bad', 'c'],
      ['k', 'd', 'fail', 'e'],
      ['k', 'f', 'short', 'g'],
    ]);
    expect(await coalescer.run('item', 'k', 'h')).toBe('k:h');
  });
});

describe('Batcher', () => {
  function recorder() {
    const writes: string[][] = [];
    const batcher = new Batcher<string, string>(
      (ops) => recordedWrite(writes, 'done', [...ops], ops),
      3,
    );
    return { writes, batcher };
  }

  it('sends the writes of one turn together, at most max a write, and a later turn apart', async () => {
    const { writes, batcher } = recorder();
    const first = ['a', 'b', 'c', 'd'].map((op) => batcher.run(op));
    await new Promise((r) => setImmediate(r));
    // A write of the first turn is in flight: these go at the end of their own turn, not after it.
    const second = ['e', 'f'].map((op) => batcher.run(op));
    expect(await Promise.all([...first, ...second])).toEqual(
      ['a', 'b', 'c', 'd', 'e', 'f'].map((op) => `done:${op}`),
    );
    expect(writes).toEqual([['a', 'b', 'c'], ['d'], ['e', 'f']]);
  });

  it('has at most inFlight writes out at once; the rest go in order as those end, failed or not', async () => {
    let out = 0;
    let most = 0;
    const writes: string[][] = [];
    const batcher = new Batcher<string, string>(
      async (ops) => {
        out++;
        most = Math.max(most, out);
        try {
          return await recordedWrite(writes, 'done', [...ops], ops);
        } finally {
          out--;
        }
      },
      2,
      3,
    );
    const ops = Array.from({ length: 15 }, (_, i) => (i === 4 ? 'fail' : `o${i}`));
    const results = await Promise.allSettled(ops.map((op) => batcher.run(op)));
    expect(most).toBe(3);
    expect(writes).toEqual(Array.from({ length: 8 }, (_, i) => ops.slice(i * 2, i * 2 + 2)));
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(2); // o5 with fail
    expect(results[14]).toEqual({ status: 'fulfilled', value: 'done:o14' });
  });

  it('fails one caller alone when the write says so, and every caller of a write that throws', async () => {
    const { writes, batcher } = recorder();
    const ops = ['a', 'bad', 'b', 'c', 'fail', 'd', 'short', 'e', 'f'];
    const results = await Promise.allSettled(ops.map((op) => batcher.run(op)));
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled', // a
      'rejected', // bad, alone
      'fulfilled', // b
      'rejected', // c, fail, d: the write threw
      'rejected',
      'rejected',
      'rejected', // short, e, f: fewer answers than writes
      'rejected',
      'rejected',
    ]);
    expect(writes).toEqual([
      ['a', 'bad', 'b'],
      ['c', 'fail', 'd'],
      ['short', 'e', 'f'],
    ]);
    expect(await batcher.run('g')).toBe('done:g');
  });
});
