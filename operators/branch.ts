import { branchConfig } from '../core/dag/operators.ts';
import { UnrecoverableError } from '../core/errors.ts';
import type { RunOperator } from './registry.ts';

/**
 * Chooses which of its direct downstream tasks run (DESIGN.md section 10): its output is the
 * list of the chosen task ids, and readiness (app/advance.ts, app/branch.ts) skips every other
 * direct downstream task, as Airflow does; the skip spreads by the rules of the tasks after
 * them. Naming a task that is not directly downstream fails the attempt for good: the next
 * would name it again.
 */
export const branch: RunOperator<typeof branchConfig._output> = {
  name: 'branch',
  config: branchConfig,
  async run(config, ctx) {
    const follow = [
      ...new Set(typeof config.follow === 'string' ? [config.follow] : config.follow),
    ];
    const direct = new Set(ctx.downstream ?? []);
    const wrong = follow.filter((t) => !direct.has(t));
    if (wrong.length > 0) {
      throw new UnrecoverableError(
        `branch: ${wrong.map((t) => `"${t}"`).join(', ')} ${wrong.length === 1 ? 'is' : 'are'} not directly downstream of ${ctx.task.taskId}; expected some of: ${[...direct].join(', ') || '(none)'}`,
      );
    }
    const skipped = [...direct].filter((t) => !follow.includes(t));
    ctx.log(`following ${follow.join(', ') || 'none'}; skipping ${skipped.join(', ') || 'none'}`);
    return follow;
  },
};
