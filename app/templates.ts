import type { Dag } from '../core/dag/schema.ts';
import { UnrecoverableError } from '../core/errors.ts';
import { baseTaskId } from '../core/mapping/index.ts';
import type { TaskMessage } from '../core/ports.ts';
import { isTerminalTask } from '../core/state/index.ts';
import {
  dateStamp,
  hasPlaceholders,
  maskSecrets,
  referencedTasks,
  render,
  secretValues,
  TemplateError,
} from '../core/template/index.ts';
import type { Deps } from './deps.ts';
import { readOutput } from './outputs.ts';

export interface RenderedConfig {
  readonly config: unknown;
  /** The rendered config for the attempt's log, secrets masked; undefined when not templated. */
  readonly logged?: string;
  /** Secret values of the run's conf and the DAG's params, to mask in the rest of the log. */
  readonly secrets: ReadonlySet<string>;
}

/**
 * Renders a task's config for one attempt (DESIGN.md section 10), just before its operator runs:
 * the run's conf and logical date, the DAG's params, and the outputs of the upstream tasks it
 * names. A config without placeholders is returned as it is, at no cost. A path that does not
 * resolve fails the attempt for good: the next attempt would render the same.
 */
export async function renderConfig(
  deps: Deps,
  msg: TaskMessage,
  dag: Dag,
  config: unknown,
  /** A mapped task's instance (core/mapping): its item and index. */
  mapScope?: { readonly item: unknown; readonly mapIndex: number },
): Promise<RenderedConfig> {
  if (!hasPlaceholders(config)) return { config, secrets: new Set() };
  const run = await deps.store.getRun(msg.dagId, msg.runId);
  if (!run) throw new UnrecoverableError(`run ${msg.runId} is gone: its config cannot be rendered`);
  const tasks: Record<string, { output?: unknown }> = {};
  const ids = new Set(dag.tasks.map((t) => t.taskId));
  await Promise.all(
    [...referencedTasks(config, ids)].map(async (taskId) => {
      const ti = await deps.store.getTaskInstance({ dagId: msg.dagId, runId: msg.runId, taskId });
      const out = ti ? await readOutput(deps, ti) : undefined;
      // A finished task without an output (skipped on a branch not taken, a call that returned
      // nothing) reads as null, as Airflow renders None; an unfinished one does not resolve.
      tasks[taskId] = out
        ? { output: out.output }
        : ti && isTerminalTask(ti.status)
          ? { output: null }
          : {};
    }),
  );
  const logical = new Date(run.logicalDate);
  const scope = {
    conf: run.conf,
    params: dag.params,
    dagId: msg.dagId,
    runId: msg.runId,
    taskId: baseTaskId(msg.taskId),
    attempt: msg.attempt,
    logicalDate: logical.toISOString(),
    ds: dateStamp(logical, dag.schedule?.timezone ?? 'UTC'),
    tasks,
    ...(mapScope ? { item: mapScope.item, mapIndex: mapScope.mapIndex } : {}),
  };
  let rendered: unknown;
  try {
    rendered = render(config, scope);
  } catch (e) {
    if (!(e instanceof TemplateError)) throw e;
    throw new UnrecoverableError(`config: ${e.message}`);
  }
  const secrets = secretValues({ conf: run.conf, params: dag.params });
  return { config: rendered, logged: JSON.stringify(maskSecrets(rendered, secrets)), secrets };
}
