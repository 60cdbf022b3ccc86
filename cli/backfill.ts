// `airless backfill DAG --from ISO --to ISO [--wait]`.
import { setTimeout as sleep } from 'node:timers/promises';
import { type Command, InvalidArgumentError } from 'commander';
import { apiError, CliError, dagPath, type Session, wholeNumber } from './session.ts';

interface BackfillView {
  backfillId: string;
  from: string;
  to: string;
  runs: number;
  created: number;
  done: number;
  status: 'running' | 'success' | 'failed';
}

/** An ISO-8601 time with its zone, as the API takes it. */
function isoTime(value: string): string {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value)) {
    throw new InvalidArgumentError(
      'must be an ISO-8601 time with its zone, e.g. 2026-03-01T00:00:00Z',
    );
  }
  if (Number.isNaN(Date.parse(value))) throw new InvalidArgumentError('is not a valid time');
  return value;
}

const line = (b: BackfillView) =>
  `backfill ${b.backfillId}: ${b.runs} runs (${b.created} new), ${b.done} done, ${b.status}`;

export function registerBackfill(cli: Command, s: Session): void {
  cli
    .command('backfill')
    .description(
      'Create the runs of every scheduled time of a DAG in [--from, --to]; times that have a ' +
        'run already are left alone. With --wait, show progress until every run has ended, ' +
        'then exit 0 if all succeeded, else 1.',
    )
    .argument('<dag>', 'the DAG id')
    .requiredOption('--from <iso>', 'the first scheduled time to include', isoTime)
    .requiredOption('--to <iso>', 'the last scheduled time to include', isoTime)
    .option('--wait', 'follow the backfill until its runs have ended')
    .option(
      '--timeout <seconds>',
      'give up waiting (exit 1) after this many seconds',
      wholeNumber(1, 30 * 24 * 3600),
      3600,
    )
    .option('--json', "print the API's JSON (with --wait, the ended backfill's)")
    .action(
      async (
        dag: string,
        opts: { from: string; to: string; wait?: boolean; timeout: number; json?: boolean },
      ) => {
        const res = await s.call<BackfillView>('POST', `${dagPath(dag)}/backfills`, {
          from: opts.from,
          to: opts.to,
        });
        if (!opts.wait) {
          if (opts.json) return s.printJson(res);
          s.io.out(res.body.backfillId);
          s.io.err(line(res.body));
          return;
        }
        if (!opts.json) s.io.out(res.body.backfillId);
        const path = `${dagPath(dag)}/backfills/${encodeURIComponent(res.body.backfillId)}`;
        const deadline = Date.now() + opts.timeout * 1000;
        let last = '';
        let view = res.body;
        let text = res.text;
        while (view.status === 'running') {
          if (Date.now() > deadline) {
            throw new CliError(`gave up waiting after ${opts.timeout}s: ${line(view)}`, 1);
          }
          if (line(view) !== last) s.io.err(line(view));
          last = line(view);
          await sleep(1000);
          const r = await s.send<BackfillView>('GET', path);
          if (r.status >= 500) continue; // busy: read again
          if (r.status >= 300) {
            const { message, details } = apiError(r);
            throw new CliError(message, 1, details);
          }
          view = r.body;
          text = r.text;
        }
        if (opts.json) s.io.out(text);
        else s.io.err(line(view));
        if (view.status !== 'success') s.exitCode = Math.max(s.exitCode, 1);
      },
    );
}
