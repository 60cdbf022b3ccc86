// `airless logs DAG RUN TASK [--attempt N] [--map-index N] [--follow]`.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import type { RunView, TaskView } from './format.ts';
import { apiError, CliError, runPath, type Session, taskPath, wholeNumber } from './session.ts';

/** How long a cancelled attempt's worker may take to stop: twice the default heartbeat. */
const CANCEL_GRACE_MS = 60_000;

const ENDED = new Set(['success', 'failed', 'upstream_failed', 'skipped', 'cancelled']);

/**
 * Whether attempt `attempt` of the task is over, so that its log is final: the task has moved
 * on to a later attempt, waits to retry after this one, or has ended (an ended task makes no
 * further attempt, even one that was awaited).
 */
export function attemptFinished(task: Pick<TaskView, 'status' | 'attempt'>, attempt: number) {
  if (task.attempt > attempt) return true;
  if (ENDED.has(task.status)) return true;
  return task.status === 'up_for_retry' && task.attempt === attempt;
}

async function taskOf(
  s: Session,
  dag: string,
  run: string,
  task: string,
  mapIndex: number | undefined,
): Promise<TaskView> {
  const res = await s.call<RunView>('GET', runPath(dag, run));
  const t = res.body.tasks.find((x) => x.taskId === task && x.mapIndex === mapIndex);
  const name = mapIndex === undefined ? task : `${task}[${mapIndex}]`;
  if (!t) throw new CliError(`task ${name} is not in run ${run} of DAG ${dag}`);
  return t;
}

export function registerLogs(cli: Command, s: Session): void {
  cli
    .command('logs')
    .description("Print a task attempt's log. With --follow, wait for the attempt to finish.")
    .argument('<dag>', 'the DAG id')
    .argument('<run>', 'the run id')
    .argument('<task>', 'the task id')
    .option('--attempt <n>', 'which attempt (default: the latest)', wholeNumber(1, 10_000))
    .option('--map-index <n>', 'one instance of a mapped task', wholeNumber(0, 9_999))
    .option('--follow', 'print new text as it comes, until the attempt has finished')
    .option(
      '--timeout <seconds>',
      'with --follow, give up (exit 1) after this many seconds',
      wholeNumber(1, 30 * 24 * 3600),
      3600,
    )
    .action(
      async (
        dag: string,
        run: string,
        task: string,
        opts: { attempt?: number; mapIndex?: number; follow?: boolean; timeout: number },
      ) => {
        const logPath = (attempt: number | undefined) => {
          const q = [
            ...(attempt ? [`attempt=${attempt}`] : []),
            ...(opts.mapIndex === undefined ? [] : [`mapIndex=${opts.mapIndex}`]),
          ];
          return `${taskPath(dag, run, task)}/logs${q.length ? `?${q.join('&')}` : ''}`;
        };
        const print = (text: string) => {
          if (text) s.io.write(text);
        };
        if (!opts.follow) {
          const res = await s.call('GET', logPath(opts.attempt));
          print(res.text.endsWith('\n') || res.text === '' ? res.text : `${res.text}\n`);
          return;
        }

        const deadline = Date.now() + opts.timeout * 1000;
        let attempt = opts.attempt;
        let printed = '';
        let found = false;
        let stoppingSince: number | undefined;
        const stopping = (t: TaskView) =>
          t.status === 'cancelled' && t.attempt === attempt && t.startTime !== null;
        for (;;) {
          // Read the status before the log: a worker stores the log before it records the end,
          // so an attempt seen finished here has its whole log in the read that follows.
          const t = await taskOf(s, dag, run, task, opts.mapIndex);
          attempt ??= Math.max(t.attempt, 1);
          let finished = attemptFinished(t, attempt);
          const res = await s.send('GET', logPath(attempt));
          if (res.status === 200) {
            const text = res.text;
            found = true;
            print(text.startsWith(printed) ? text.slice(printed.length) : text);
            printed = text;
          } else if (res.status !== 404) {
            const { message, details } = apiError(res);
            throw new CliError(message, 1, details);
          } else if (finished && stopping(t)) {
            // Cancelled while running: its worker stores the log when its next heartbeat finds
            // the attempt cancelled (app/tasks.ts).
            if (stoppingSince === undefined) {
              stoppingSince = Date.now();
              s.io.err(
                '(cancelled while running: waiting for its worker to stop and store the log)',
              );
            }
            if (Date.now() - stoppingSince < CANCEL_GRACE_MS) finished = false;
          }
          if (finished && !found) {
            const { message, details } = apiError(res);
            throw new CliError(message, 1, details);
          }
          if (finished) {
            if (!printed.endsWith('\n') && printed !== '') s.io.write('\n');
            return;
          }
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new CliError(
              `timed out after ${opts.timeout}s waiting for attempt ${attempt} of task ${task} ` +
                `to finish (it is ${t.status})`,
            );
          }
          await sleep(Math.min(1000, left));
        }
      },
    );
}
