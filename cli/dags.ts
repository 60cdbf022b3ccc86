// `airless dags list|show|push|pause|unpause|delete`.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { type DagView, dagDetails, dagsTable } from './format.ts';
import { apiError, dagPath, type Session, wholeNumber } from './session.ts';

interface JsonOpt {
  json?: boolean;
}

export function registerDags(cli: Command, s: Session): void {
  const dags = cli.command('dags').description('List, read, upload, pause and delete DAGs');

  dags
    .command('list')
    .description('List the DAGs, a page at a time')
    .option('--limit <n>', 'DAGs per page (1-100)', wholeNumber(1, 100), 50)
    .option('--next-token <token>', 'the page after the one that printed this token')
    .option('--json', "print the API's JSON")
    .action(async (opts: JsonOpt & { limit: number; nextToken?: string }) => {
      const q = new URLSearchParams({ limit: String(opts.limit) });
      if (opts.nextToken) q.set('nextToken', opts.nextToken);
      const res = await s.call<{ dags: DagView[]; nextToken?: string }>('GET', `/v1/dags?${q}`);
      if (opts.json) return s.printJson(res);
      if (res.body.dags.length === 0 && !opts.nextToken) s.io.err('no DAGs yet');
      else s.io.out(dagsTable(res.body.dags, s.style()));
      if (res.body.nextToken) s.io.err(`more: --next-token ${res.body.nextToken}`);
    });

  dags
    .command('show')
    .description('Show a DAG: its latest version, whether it is paused, its next runs')
    .argument('<dag>', 'the DAG id')
    .option('--json', "print the API's JSON")
    .action(async (dag: string, opts: JsonOpt) => {
      const res = await s.call<DagView>('GET', dagPath(dag));
      if (opts.json) return s.printJson(res);
      s.io.out(dagDetails(res.body, s.style()));
    });

  dags
    .command('push')
    .description(
      'Create or update DAGs from JSON files, as they are. Prints DAG_ID VERSION created or ' +
        'unchanged; a refused file gets one FILE: PATH: MESSAGE line per problem. An accepted ' +
        'file that will not run as it stands (a pool that does not exist) gets a ' +
        'FILE: PATH: warning: MESSAGE line on stderr.',
    )
    .argument('<file...>', 'DAG JSON files')
    .option('--json', "print the API's JSON answer (or refusal) for each file, one a line")
    .action(async (files: string[], opts: JsonOpt) => {
      let bad = false;
      for (const file of files) {
        let text: string;
        try {
          text = await readFile(file, 'utf8');
        } catch (e) {
          bad = true;
          const line = `${file}: $: cannot read file: ${(e as Error).message}`;
          // As `validate` says it; off stdout when stdout is for JSON.
          if (opts.json) s.io.err(line);
          else s.io.out(line);
          continue;
        }
        // The file's text as it is: the API validates exactly what it will store.
        const res = await s.send<{
          dagId: string;
          version: number;
          warnings?: { path: string; message: string }[];
        }>('POST', '/v1/dags', text);
        const accepted = res.status === 200 || res.status === 201;
        if (!accepted) bad = true;
        if (opts.json) {
          s.printJson(res);
          continue;
        }
        if (accepted) {
          const what = res.status === 201 ? 'created' : 'unchanged';
          s.io.out(`${res.body.dagId} ${res.body.version} ${what}`);
          // Accepted, but it will not run as it stands: said on stderr, the exit code stays 0.
          for (const w of res.body.warnings ?? []) {
            s.io.err(`${file}: ${w.path}: warning: ${w.message}`);
          }
          continue;
        }
        const { message, details } = apiError(res);
        if (details.length > 0 && (res.status === 400 || res.status === 413)) {
          for (const d of details) s.io.out(`${file}: ${d}`);
        } else {
          s.io.err(`airless: ${file}: ${message}`);
        }
      }
      if (bad) s.exitCode = 1;
    });

  for (const [name, paused] of [
    ['pause', true],
    ['unpause', false],
  ] as const) {
    dags
      .command(name)
      .description(
        paused
          ? 'Pause a DAG: its schedule stops; triggered runs wait queued'
          : 'Unpause a DAG: its schedule resumes and queued runs start',
      )
      .argument('<dag>', 'the DAG id')
      .option('--json', "print the API's JSON")
      .action(async (dag: string, opts: JsonOpt) => {
        const res = await s.call<DagView>('PATCH', dagPath(dag), { paused });
        if (opts.json) return s.printJson(res);
        s.io.out(`${res.body.dagId} ${paused ? 'paused' : 'unpaused'}`);
      });
  }

  dags
    .command('delete')
    .description('Delete a DAG and its schedule; its run history is kept')
    .argument('<dag>', 'the DAG id')
    .action(async (dag: string) => {
      await s.call('DELETE', dagPath(dag));
      s.io.out(`${dag} deleted`);
    });
}
