// Following a run to its end: `airless runs wait` and `airless runs trigger --wait`.
import { setTimeout as sleep } from 'node:timers/promises';
import {
  isTerminalRun,
  outcomeLine,
  progressKey,
  progressLine,
  type RunView,
  tasksTable,
} from './format.ts';
import { apiError, CliError, runPath, type Session } from './session.ts';

/** Clears the terminal line the cursor is on. */
const CLEAR_LINE = '\r\x1b[2K';
/** Reads in a row that may fail (a 5xx, the network) before the wait gives up. */
const MAX_FAILED_READS = 5;

export interface WatchOptions {
  readonly timeoutSeconds: number;
  readonly json: boolean;
  /** The pause between two reads of the run. */
  readonly intervalMs?: number;
}

/**
 * Reads the run until it ends, showing progress on stderr: one line redrawn in place on a
 * terminal, else a line each time the progress changes. Then prints how it ended (the run's JSON
 * with `json`) and sets the exit code: 0 for `success`, 1 otherwise. Times out with a CliError.
 */
export async function watchRun(
  s: Session,
  dagId: string,
  runId: string,
  opts: WatchOptions,
): Promise<void> {
  const started = Date.now();
  const deadline = started + opts.timeoutSeconds * 1000;
  const interval = opts.intervalMs ?? 1000;
  const tty = s.io.stderrTty;
  const style = s.style('err');
  // Writing the last column of a terminal wraps in some terminals: leave it free.
  const lineStyle = tty ? { ...style, width: Math.max(20, style.width - 1) } : style;
  let drawn = false;
  let lastKey = '';
  let failedReads = 0;
  const clear = () => {
    if (drawn) s.io.writeErr(CLEAR_LINE);
    drawn = false;
  };

  for (;;) {
    const res = await s.send<RunView>('GET', runPath(dagId, runId)).catch((e: unknown) => {
      if (e instanceof CliError && ++failedReads < MAX_FAILED_READS) return undefined;
      clear();
      throw e;
    });
    if (res && res.status >= 200 && res.status < 300) {
      failedReads = 0;
      const run = res.body;
      if (isTerminalRun(run.status)) {
        clear();
        finish(s, res.text, run, opts.json);
        return;
      }
      const elapsed = Date.now() - (run.startTime ? Date.parse(run.startTime) : started);
      const line = progressLine(run, Math.max(0, elapsed), lineStyle);
      if (tty) {
        s.io.writeErr(CLEAR_LINE + line);
        drawn = true;
      } else if (progressKey(run) !== lastKey) {
        s.io.err(line);
      }
      lastKey = progressKey(run);
    } else if (res) {
      // Busy or failing on the server side: try again; a refusal (4xx) will not change.
      if (res.status < 500 || ++failedReads >= MAX_FAILED_READS) {
        clear();
        const { message, details } = apiError(res);
        throw new CliError(message, 1, details);
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      clear();
      throw new CliError(
        `timed out after ${opts.timeoutSeconds}s waiting for run ${runId} of DAG ${dagId} to ` +
          `end; it goes on. Wait again with: airless runs wait ${dagId} ${runId}`,
      );
    }
    await sleep(Math.min(interval, left));
  }
}

function finish(s: Session, text: string, run: RunView, json: boolean): void {
  s.exitCode = run.status === 'success' ? 0 : 1;
  if (json) {
    s.io.out(text.trimEnd());
    return;
  }
  const style = s.style();
  const now = new Date();
  s.io.out(outcomeLine(run, style, now));
  if (run.error) s.io.out(`error: ${run.error}`);
  const notOk = run.tasks.filter((t) => t.status !== 'success' && t.status !== 'skipped');
  if (run.status !== 'success' && notOk.length > 0) s.io.out(tasksTable(notOk, style, now));
}
