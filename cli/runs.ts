// `airless runs trigger|list|get|wait|cancel` and `airless tasks clear`.
import { type Command, InvalidArgumentError } from 'commander';
import { type RunSummary, type RunView, runDetails, runsTable } from './format.ts';
import { dagPath, runPath, type Session, taskPath, wholeNumber } from './session.ts';
import { watchRun } from './watch.ts';

interface JsonOpt {
  json?: boolean;
}

/** `--conf`: a JSON object, as the API takes it. */
export function parseConf(value: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (e) {
    throw new InvalidArgumentError(`must be a JSON object: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidArgumentError('must be a JSON object, such as {"day": "2026-03-09"}');
  }
  return parsed as Record<string, unknown>;
}

/** Thirty days: a longer wait is better done by polling `runs get`. */
const MAX_TIMEOUT = 30 * 24 * 3600;
const timeoutOption = [
  '--timeout <seconds>',
  'give up waiting (exit 1) after this many seconds',
  wholeNumber(1, MAX_TIMEOUT),
  3600,
] as const;

export function registerRuns(cli: Command, s: Session): void {
  const runs = cli.command('runs').description('Trigger, follow, list and cancel DAG runs');

  runs
    .command('trigger')
    .description(
      'Start a run of a DAG and print its id. With --wait, show its progress until it ends, ' +
        'then exit 0 if it succeeded, else 1.',
    )
    .argument('<dag>', 'the DAG id')
    .option('--conf <json>', "the run's conf: a JSON object", parseConf)
    .option('--idempotency-key <key>', 'repeating a key gives the run it started, not a new one')
    .option('--wait', 'follow the run until it ends')
    .option(...timeoutOption)
    .option('--json', "print the API's JSON (with --wait, the ended run's)")
    .action(
      async (
        dag: string,
        opts: JsonOpt & {
          conf?: Record<string, unknown>;
          idempotencyKey?: string;
          wait?: boolean;
          timeout: number;
        },
      ) => {
        const body = {
          ...(opts.conf ? { conf: opts.conf } : {}),
          ...(opts.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}),
        };
        const res = await s.call<{ runId: string; status: string }>(
          'POST',
          `${dagPath(dag)}/runs`,
          body,
        );
        if (!opts.json) {
          s.io.out(res.body.runId);
          if (res.status === 200)
            s.io.err('(an existing run: the idempotency key was used before)');
        } else if (!opts.wait) {
          s.printJson(res);
        }
        if (opts.wait) {
          await watchRun(s, dag, res.body.runId, {
            timeoutSeconds: opts.timeout,
            json: opts.json ?? false,
          });
        }
      },
    );

  runs
    .command('list')
    .description("List a DAG's runs, newest first, a page at a time")
    .argument('<dag>', 'the DAG id')
    .option('--limit <n>', 'runs per page (1-100)', wholeNumber(1, 100), 20)
    .option('--next-token <token>', 'the page after the one that printed this token')
    .option('--json', "print the API's JSON")
    .action(async (dag: string, opts: JsonOpt & { limit: number; nextToken?: string }) => {
      const q = new URLSearchParams({ limit: String(opts.limit) });
      if (opts.nextToken) q.set('nextToken', opts.nextToken);
      const res = await s.call<{ runs: RunSummary[]; nextToken?: string }>(
        'GET',
        `${dagPath(dag)}/runs?${q}`,
      );
      if (opts.json) return s.printJson(res);
      if (res.body.runs.length === 0 && !opts.nextToken) s.io.err(`no runs of ${dag} yet`);
      else s.io.out(runsTable(res.body.runs, s.style(), new Date()));
      if (res.body.nextToken) s.io.err(`more: --next-token ${res.body.nextToken}`);
    });

  runs
    .command('get')
    .description('Show a run: its status, conf and every task')
    .argument('<dag>', 'the DAG id')
    .argument('<run>', 'the run id')
    .option('--json', "print the API's JSON")
    .action(async (dag: string, run: string, opts: JsonOpt) => {
      const res = await s.call<RunView>('GET', runPath(dag, run));
      if (opts.json) return s.printJson(res);
      s.io.out(runDetails(res.body, s.style(), new Date()));
    });

  runs
    .command('wait')
    .description('Show the progress of a run until it ends; exit 0 if it succeeded, else 1')
    .argument('<dag>', 'the DAG id')
    .argument('<run>', 'the run id')
    .option(...timeoutOption)
    .option('--json', "print the API's JSON of the ended run")
    .action(async (dag: string, run: string, opts: JsonOpt & { timeout: number }) => {
      await watchRun(s, dag, run, { timeoutSeconds: opts.timeout, json: opts.json ?? false });
    });

  runs
    .command('cancel')
    .description('Cancel a run: no further task starts, and running ones are stopped')
    .argument('<dag>', 'the DAG id')
    .argument('<run>', 'the run id')
    .option('--json', "print the API's JSON")
    .action(async (dag: string, run: string, opts: JsonOpt) => {
      const res = await s.call<RunSummary>('POST', `${runPath(dag, run)}/cancel`);
      if (opts.json) return s.printJson(res);
      s.io.out(`${res.body.runId} ${res.body.status}`);
    });

  cli
    .command('tasks')
    .description('Act on the tasks of a run')
    .command('clear')
    .description('Run a task again, and every task downstream of it, with new attempt numbers')
    .argument('<dag>', 'the DAG id')
    .argument('<run>', 'the run id')
    .argument('<task>', 'the task id')
    .option(
      '--map-index <n>',
      'one instance of a mapped task: run it again alone (and what depends on its task)',
      wholeNumber(0, 9_999),
    )
    .option('--json', "print the API's JSON")
    .action(
      async (dag: string, run: string, task: string, opts: JsonOpt & { mapIndex?: number }) => {
        const one = opts.mapIndex === undefined ? '' : `?mapIndex=${opts.mapIndex}`;
        const res = await s.call<RunSummary>('POST', `${taskPath(dag, run, task)}/clear${one}`);
        if (opts.json) return s.printJson(res);
        const name = opts.mapIndex === undefined ? task : `${task}[${opts.mapIndex}]`;
        s.io.out(`${name} cleared; run ${res.body.runId} is ${res.body.status}`);
      },
    );
}
