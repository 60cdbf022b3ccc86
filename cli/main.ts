import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { compileSchedule, nextRuns } from '../core/cron/index.ts';
import { type ValidationResult, validateDagText } from '../core/dag/index.ts';
import { registerBackfill } from './backfill.ts';
import { registerDags } from './dags.ts';
import { registerLogs } from './logs.ts';
import { registerPools } from './pools.ts';
import { registerRuns } from './runs.ts';
import { CliError, type Io, Session } from './session.ts';
import { registerUi } from './ui.ts';

export type { Io } from './session.ts';

const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  write: (text) => process.stdout.write(text),
  writeErr: (text) => process.stderr.write(text),
  stdoutTty: process.stdout.isTTY === true,
  stderrTty: process.stderr.isTTY === true,
  columns: process.stdout.columns || process.stderr.columns || undefined,
};

async function validateFile(file: string): Promise<ValidationResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return {
      ok: false,
      issues: [{ path: '$', message: `cannot read file: ${(e as Error).message}` }],
    };
  }
  return validateDagText(text);
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) {
    throw new InvalidArgumentError('must be a whole number from 1 to 10000');
  }
  return n;
}

function isoDate(value: string): Date {
  const d = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(d.getTime())) {
    throw new InvalidArgumentError('must be an ISO-8601 date-time, e.g. 2026-03-09T06:30:00Z');
  }
  return d;
}

function program(io: Io, setExit: (code: number) => void): { cli: Command; session: Session } {
  const cli = new Command('airless')
    .description('Airless: cron and DAG workflows on serverless AWS')
    .configureOutput({
      writeOut: (s) => io.out(s.trimEnd()),
      writeErr: (s) => io.err(s.trimEnd()),
    })
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .option(
      '--api <url>',
      "the deployment's API URL (default: $AIRLESS_API_URL, else apiUrl in .airless/local.json)",
    )
    .option('--region <region>', "the API's AWS region (default: $AWS_REGION, else from the URL)");
  const session = new Session(io, () => cli.opts<{ api?: string; region?: string }>());

  cli
    .command('validate')
    .description('Validate DAG files. Prints one FILE: PATH: MESSAGE line per problem.')
    .argument('<file...>', 'DAG JSON files')
    .action(async (files: string[]) => {
      let bad = false;
      for (const file of files) {
        const r = await validateFile(file);
        if (r.ok) io.out(`${file}: ok (${r.dag.tasks.length} tasks)`);
        else {
          bad = true;
          for (const i of r.issues) io.out(`${file}: ${i.path}: ${i.message}`);
        }
      }
      setExit(bad ? 1 : 0);
    });

  cli
    .command('next-runs')
    .description(
      "Print the DAG's next scheduled times as UTC ISO-8601, one per line, with EventBridge " +
        "Scheduler's semantics in the DAG's time zone.",
    )
    .argument('<file>', 'a DAG JSON file')
    .option('-n <count>', 'how many times to print', positiveInt, 5)
    .option('--after <iso>', 'print times strictly after this instant (default: now)', isoDate)
    .action(async (file: string, opts: { n: number; after?: Date }) => {
      const r = await validateFile(file);
      if (!r.ok) {
        for (const i of r.issues) io.out(`${file}: ${i.path}: ${i.message}`);
        return setExit(1);
      }
      const schedule = r.dag.schedule;
      if (!schedule) {
        io.out(`${file}: $.schedule: the DAG has no schedule; it runs only when triggered`);
        return setExit(1);
      }
      const compiled = compileSchedule(schedule.cron, schedule.timezone);
      if (!compiled.ok) throw new Error('a validated schedule failed to compile');
      for (const t of nextRuns(
        compiled.spec,
        compiled.timezone,
        opts.after ?? new Date(),
        opts.n,
      )) {
        io.out(t.toISOString());
      }
      setExit(0);
    });

  registerDags(cli, session);
  registerRuns(cli, session);
  registerBackfill(cli, session);
  registerPools(cli, session);
  registerLogs(cli, session);
  registerUi(cli, session);
  return { cli, session };
}

/** Runs the CLI on `argv` (without node and the script) and returns the exit code. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
  let code = 0;
  const { cli, session } = program(io, (c) => {
    code = c;
  });
  try {
    await cli.parseAsync([...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit 0; usage errors exit 2, as most Unix tools do.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof CliError) {
      io.err(`airless: ${e.message}`);
      for (const d of e.details) io.err(`  ${d}`);
      return e.exitCode;
    }
    throw e;
  }
  return Math.max(code, session.exitCode);
}
