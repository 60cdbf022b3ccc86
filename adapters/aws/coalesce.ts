/**
 * Group commit for hot items. The writes to an item made in one turn of the event loop go out
 * together; while one write to an item is in flight from this process, the writes that arrive
 * for the same item wait, and go out together as the next write, at most `max` at a time.
 * `write` receives them in arrival order and settles each, in that order: one caller's failure
 * need not be another's.
 *
 * What it is for: the counts a join's task instance takes from its upstream tasks and a run's
 * progress shard, written once per finished task. A worker runs a batch's records at once, so
 * their writes to one join arrive together: one write counts them all, which saves requests, and
 * write units that grow with the item's size (a large join's set of counted outcomes). DynamoDB
 * applies the writes to one item one at a time anyway.
 *
 * A write that throws fails every caller that waited for it; each caller's own retry (its message
 * returning) repeats it, as it would a write of its own. A caller waits for the write in flight
 * before its own: one that never settles holds up the item's later writes in this process (on
 * Lambda, until the invocation times out and its execution environment is reset).
 */
export class Coalescer<K, Op, R> {
  readonly #queues = new Map<string, Waiting<Op, R>[]>();

  constructor(
    private readonly write: (key: K, ops: readonly Op[]) => Promise<PromiseSettledResult<R>[]>,
    private readonly max: number,
  ) {}

  /** `id` names the item `key` addresses: the writes with one id go together. */
  run(id: string, key: K, op: Op): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const waiting = this.#queues.get(id);
      if (waiting) {
        waiting.push({ op, resolve, reject });
        return;
      }
      const queue = [{ op, resolve, reject }];
      this.#queues.set(id, queue);
      // The writes made in the same turn go with the first.
      setImmediate(() => void this.#drain(id, key, queue));
    });
  }

  async #drain(id: string, key: K, queue: Waiting<Op, R>[]): Promise<void> {
    while (queue.length > 0) {
      await answer(queue.splice(0, this.max), (ops) => this.write(key, ops));
    }
    // Nothing awaits between the last look at the queue and this: no arrival can be missed.
    this.#queues.delete(id);
  }
}

interface Waiting<Op, R> {
  readonly op: Op;
  readonly resolve: (r: R) => void;
  readonly reject: (e: unknown) => void;
}

/** The settled result of `p`, which never rejects. */
export async function settle<R>(p: Promise<R>): Promise<PromiseSettledResult<R>> {
  try {
    return { status: 'fulfilled', value: await p };
  } catch (reason) {
    return { status: 'rejected', reason };
  }
}

/**
 * Writes to different items that arrive in one turn of the event loop go out together, at most
 * `max` to a request (DynamoDB's BatchExecuteStatement). A worker runs a batch's records at once,
 * so their claims, and then their outcomes, arrive together; a fan-out's root queues its
 * downstream tasks at once. The first write waits only for the end of the turn it arrived in.
 *
 * At most `inFlight` requests are out at a time; the rest wait their turn, in order. A 10,000-task
 * fan-out's root makes 400 requests at once: all sent together, they queue for the client's
 * sockets (and, on the emulator, for its one lock) for longer than the connection timeout lets a
 * request wait, and fail.
 *
 * `write` receives the writes in arrival order and settles each; a write that throws fails every
 * caller in its request, as a write of its own would.
 */
export class Batcher<Op, R> {
  #pending: Waiting<Op, R>[] = [];
  /** Requests made but not sent, for want of room in flight. */
  readonly #queued: (readonly Waiting<Op, R>[])[] = [];
  #sending = 0;

  constructor(
    private readonly write: (ops: readonly Op[]) => Promise<PromiseSettledResult<R>[]>,
    private readonly max: number,
    private readonly inFlight = Number.POSITIVE_INFINITY,
  ) {
    if (!(max >= 1)) throw new Error(`Batcher: max must be at least 1, not ${max}`);
    if (!(inFlight >= 1)) throw new Error(`Batcher: inFlight must be at least 1, not ${inFlight}`);
  }

  run(op: Op): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      if (this.#pending.length === 0) setImmediate(() => this.#flush());
      this.#pending.push({ op, resolve, reject });
    });
  }

  #flush(): void {
    const all = this.#pending;
    this.#pending = [];
    for (let i = 0; i < all.length; i += this.max) this.#queued.push(all.slice(i, i + this.max));
    this.#send();
  }

  #send(): void {
    while (this.#sending < this.inFlight) {
      const batch = this.#queued.shift();
      if (!batch) return;
      this.#sending++;
      // answer never rejects: each caller is settled with its own answer or the request's error.
      void answer(batch, this.write).finally(() => {
        this.#sending--;
        this.#send();
      });
    }
  }
}

/** Makes one write of `batch` and settles each of its callers with its own answer. */
async function answer<Op, R>(
  batch: readonly Waiting<Op, R>[],
  write: (ops: readonly Op[]) => Promise<PromiseSettledResult<R>[]>,
): Promise<void> {
  try {
    const results = await write(batch.map((w) => w.op));
    if (results.length !== batch.length) {
      throw new Error(`grouped write: ${results.length} answers for ${batch.length} writes`);
    }
    batch.forEach((w, i) => {
      const r = results[i] as PromiseSettledResult<R>;
      if (r.status === 'fulfilled') w.resolve(r.value);
      else w.reject(r.reason);
    });
  } catch (e) {
    for (const w of batch) w.reject(e);
  }
}
