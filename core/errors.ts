/**
 * The one small error hierarchy of Airless. Every error says whether retrying the same call can
 * help, so that handlers can decide between "report a batch item failure" and "give up".
 */

/** One problem found in user input, located by a JSON path such as `$.tasks[2].dependsOn[0]`. */
export interface Issue {
  readonly path: string;
  readonly message: string;
}

export abstract class AirlessError extends Error {
  abstract readonly retryable: boolean;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** User input (a DAG, a cron expression, a request body) is invalid. Retrying cannot help. */
export class ValidationError extends AirlessError {
  readonly retryable = false;

  constructor(
    readonly issues: readonly Issue[],
    options?: { cause?: unknown },
  ) {
    super(issues.map((i) => `${i.path}: ${i.message}`).join('; '), options);
  }
}

/** A state change asked for a transition that the state machine does not allow. */
export class InvalidTransitionError extends AirlessError {
  readonly retryable = false;
}

/**
 * A conditional write found the item in another state than expected: someone else got there
 * first (another worker, a duplicate message, the reaper). The caller must re-read, not retry.
 */
export class ConflictError extends AirlessError {
  readonly retryable = false;

  constructor(
    message: string,
    /** What the store holds now, when it said. */
    readonly current?: unknown,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The thing asked for does not exist. */
export class NotFoundError extends AirlessError {
  readonly retryable = false;
}

/** The backing service shed load. The same call may succeed later. */
export class ThrottledError extends AirlessError {
  readonly retryable = true;
}

/**
 * A task attempt failed in a way that another attempt cannot fix: bad config found at run time,
 * an operator with no runner, an HTTP 4xx that means the request itself is wrong. The attempt
 * fails for good, whatever retries are left (Temporal's `nonRetryable`, BullMQ's
 * `UnrecoverableError`).
 */
export class UnrecoverableError extends AirlessError {
  readonly retryable = false;
}

/** User input is over a size limit; the message says the limit. Retrying cannot help. */
export class TooLargeError extends ValidationError {}
