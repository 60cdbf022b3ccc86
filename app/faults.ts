import type { Dag } from '../core/dag/schema.ts';
import { type FaultPoint, faultsAt, faultUseName } from '../core/faults.ts';
import type { Deps } from './deps.ts';

/** The failure a `crash` fault throws: not an AirlessError, so every handler lets it escape. */
export class InjectedCrash extends Error {
  constructor(point: FaultPoint) {
    super(`injected crash at ${point}`);
    this.name = 'InjectedCrash';
  }
}

/**
 * Runs the faults a DAG asks for at this point, if the deployment allows them: throws for a
 * crash, waits for a stall, and answers `repeat` when the caller should deliver its step's
 * effect twice. Costs nothing when faults are off or the DAG asks for none.
 */
export async function injectFault(
  deps: Deps,
  dag: Pick<Dag, 'params'>,
  point: FaultPoint,
  where: { dagId: string; runId: string; taskId?: string; attempt?: number },
): Promise<'repeat' | undefined> {
  if (!deps.faultsEnabled) return undefined;
  let repeat = false;
  for (const { rule, index } of faultsAt(dag.params ?? {}, point, where)) {
    if (!(await deps.store.countUse(faultUseName(rule, where, index), rule.times ?? 1))) continue;
    if (rule.action === 'crash') throw new InjectedCrash(point);
    if (rule.action === 'stall') {
      await new Promise((r) => setTimeout(r, (rule.stallSeconds ?? 30) * 1000));
    }
    if (rule.action === 'repeat') repeat = true;
  }
  return repeat ? 'repeat' : undefined;
}
