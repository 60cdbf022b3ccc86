// `airless pools list|set|delete`: the pools that tasks name with `pool` (DESIGN.md section 11).
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { POOL_PATTERN } from '../core/dag/schema.ts';
import { MAX_POOL_SLOTS } from '../core/pools/index.ts';
import { renderTable } from './format.ts';
import { type Session, wholeNumber } from './session.ts';

interface PoolView {
  pool: string;
  /** null: tasks wait for it, but the pool does not exist. */
  slots: number | null;
  used: number;
  queued: number;
}

function poolName(value: string): string {
  if (!POOL_PATTERN.test(value)) {
    throw new InvalidArgumentError(`must match ${POOL_PATTERN.source}`);
  }
  return value;
}

const poolPath = (pool: string) => `/v1/pools/${encodeURIComponent(pool)}`;

export function registerPools(cli: Command, s: Session): void {
  const pools = cli
    .command('pools')
    .description('Pools: slots shared by every DAG, taken by the tasks that name the pool');

  pools
    .command('list')
    .description(
      'List the pools: slots, slots in use, tasks waiting. A pool that tasks wait for but that ' +
        'does not exist shows "missing" slots: create it with pools set.',
    )
    .option('--json', "print the API's JSON")
    .action(async (opts: { json?: boolean }) => {
      const res = await s.call<{ pools: PoolView[] }>('GET', '/v1/pools');
      if (opts.json) return s.printJson(res);
      if (res.body.pools.length === 0) return s.io.err('no pools yet');
      const style = s.style();
      s.io.out(
        renderTable(
          [
            { header: 'POOL', min: 12 },
            { header: 'SLOTS', paint: (t, c) => (t === 'missing' ? c.red(t) : t) },
            { header: 'USED' },
            { header: 'WAITING' },
          ],
          res.body.pools.map((p) => [
            p.pool,
            p.slots === null ? 'missing' : String(p.slots),
            String(p.used),
            String(p.queued),
          ]),
          style,
        ),
      );
    });

  pools
    .command('set')
    .description(
      'Create a pool or change its slots. Fewer slots than in use lets running tasks finish and ' +
        'starts none until it is under the limit; more starts waiting tasks at once.',
    )
    .argument('<pool>', 'the pool name', poolName)
    .argument(
      '<slots>',
      `how many tasks may run in it at once (0-${MAX_POOL_SLOTS})`,
      wholeNumber(0, MAX_POOL_SLOTS),
    )
    .option('--json', "print the API's JSON")
    .action(async (pool: string, slots: number, opts: { json?: boolean }) => {
      const res = await s.call<PoolView>('PUT', poolPath(pool), { slots });
      if (opts.json) return s.printJson(res);
      s.io.out(
        `${res.body.pool}: ${res.body.slots} slots, ${res.body.used} used, ${res.body.queued} waiting`,
      );
    });

  pools
    .command('delete')
    .description('Delete a pool; refused while tasks run in it or wait for it')
    .argument('<pool>', 'the pool name', poolName)
    .action(async (pool: string) => {
      await s.call('DELETE', poolPath(pool));
      s.io.out(`${pool} deleted`);
    });
}
