import type { TaskMessage } from '../core/ports.ts';
import type { Deps } from './deps.ts';
import { type ExecuteOptions, type ExecuteOutcome, executeTask } from './tasks.ts';

/** One received task message, and what to do with it once its attempt is over. */
export interface Delivery {
  readonly message: TaskMessage;
  /** When the message was sent (ms since the epoch), if the queue says. */
  readonly sentAt?: number;
  /** The attempt is over, or was never ours: remove the message. */
  done(): Promise<void>;
  /** Let another worker have the message, after `delaySeconds`. */
  handBack(delaySeconds: number): Promise<void>;
  /**
   * Its attempt is claimed: keep the message from other workers a while longer. Called at the
   * claim and at every heartbeat, so that the message of a worker that died reappears soon.
   */
  keep(): Promise<void>;
}

/** Where a long-running worker gets task messages: the Fargate workers' SQS FIFO queue. */
export interface TaskSource {
  /**
   * At most `max` messages, waiting for some up to the source's long poll. It may return early
   * on abort only where no message can be lost by it (an SQS long poll cut short may still take
   * a message on the server side, so the SQS source lets it finish).
   */
  receive(max: number, signal: AbortSignal): Promise<Delivery[]>;
}

export interface WorkerLoopOptions
  extends Pick<ExecuteOptions, 'leaseSeconds' | 'heartbeatSeconds' | 'deferredCheckSeconds'> {
  /** Attempts run at once. */
  readonly concurrency: number;
  /** Aborted when the worker must stop (SIGTERM): no message is taken after it. */
  readonly stop: AbortSignal;
  /**
   * After `stop`, how long running attempts may go on to finish; then they are handed back to
   * the queue, unfinished and unchanged, for another worker. Keep it under the time the
   * platform gives a stopping worker (a Fargate task's stop timeout) minus the hand-back.
   */
  readonly drainMs: number;
  /** Seconds before a message whose attempt hit an error (the store unreachable) is retried. */
  readonly errorDelaySeconds?: number;
  readonly onOutcome?: (message: TaskMessage, outcome: ExecuteOutcome, startLagMs?: number) => void;
  readonly onError?: (message: TaskMessage | undefined, error: unknown) => void;
}

export interface WorkerLoopReport {
  readonly attempts: number;
  readonly handedBack: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });

/**
 * The Fargate worker: the same claim → run → complete as the Lambda worker (`executeTask`),
 * fed by long polling instead of an event source mapping. A worker process has no 15-minute
 * limit, so an attempt runs until its own `timeoutSeconds`. The message stays in flight while
 * its attempt runs (kept at every heartbeat) and is removed when the attempt is over; the state
 * store, not the queue, decides who runs an attempt, as for Lambda.
 *
 * On `stop` it takes no more messages, lets running attempts finish for `drainMs`, then hands
 * the rest back: each goes back to `queued` with the same attempt (no try is spent) and its
 * message becomes visible at once, for another worker.
 */
export async function runWorkerLoop(
  deps: Deps,
  source: TaskSource,
  opts: WorkerLoopOptions,
): Promise<WorkerLoopReport> {
  const running = new Set<Promise<void>>();
  const handBack = new AbortController();
  let attempts = 0;
  let handedBack = 0;

  const handle = async (d: Delivery) => {
    const claimedAt = deps.clock().getTime();
    let keeper: NodeJS.Timeout | undefined;
    let kept: Promise<void> = Promise.resolve();
    // Best effort: a message that could not be kept is at worst delivered again, and refused.
    const keep = () => {
      kept = d.keep().catch((e: unknown) => opts.onError?.(d.message, e));
      return kept;
    };
    // Stop keeping, and let a keep in flight land before the message is removed or handed back.
    const stopKeeping = async () => {
      clearInterval(keeper);
      await kept;
    };
    try {
      const outcome = await executeTask(deps, d.message, {
        leaseSeconds: opts.leaseSeconds,
        heartbeatSeconds: opts.heartbeatSeconds,
        ...(opts.deferredCheckSeconds ? { deferredCheckSeconds: opts.deferredCheckSeconds } : {}),
        remainingMs: () => Number.POSITIVE_INFINITY,
        handBack: handBack.signal,
        onClaimed: async () => {
          await keep();
          keeper = setInterval(keep, opts.heartbeatSeconds * 1000);
        },
      });
      await stopKeeping();
      attempts++;
      const lag =
        outcome !== 'not_claimed' && d.sentAt !== undefined
          ? Math.max(0, claimedAt - d.sentAt)
          : undefined;
      opts.onOutcome?.(d.message, outcome, lag);
      if (outcome === 'handed_back') {
        handedBack++;
        await d.handBack(0);
      } else {
        await d.done();
      }
    } catch (e) {
      // The store or queue could not be reached: the message comes back later. An attempt that
      // was claimed and then lost this way is the reaper's, by its lease.
      await stopKeeping();
      opts.onError?.(d.message, e);
      await d.handBack(opts.errorDelaySeconds ?? 30).catch((err: unknown) => {
        opts.onError?.(d.message, err);
      });
    }
  };

  while (!opts.stop.aborted) {
    const free = opts.concurrency - running.size;
    if (free <= 0) {
      await Promise.race([...running, sleep(60_000, opts.stop)]);
      continue;
    }
    let got: Delivery[];
    try {
      got = await source.receive(free, opts.stop);
    } catch (e) {
      if (opts.stop.aborted) break;
      opts.onError?.(undefined, e);
      await sleep(1000, opts.stop);
      continue;
    }
    if (opts.stop.aborted) {
      // Received as the worker stopped: not started, so straight back for another worker.
      await Promise.all(got.map((d) => d.handBack(0).catch((e) => opts.onError?.(d.message, e))));
      break;
    }
    for (const d of got) {
      const p: Promise<void> = handle(d).finally(() => running.delete(p));
      running.add(p);
    }
  }

  // Stopping: let what runs finish, up to drainMs; then hand the rest back and wait for that.
  const all = Promise.allSettled([...running]);
  const finished = await Promise.race([
    all.then(() => true),
    sleep(opts.drainMs).then(() => false),
  ]);
  if (!finished) {
    handBack.abort();
    await all;
  }
  return { attempts, handedBack };
}
