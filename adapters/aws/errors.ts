import {
  AirlessError,
  ConflictError,
  NotFoundError,
  ThrottledError,
  ValidationError,
} from '../../core/errors.ts';

/** Error names the AWS services use for "slow down" (DynamoDB, SQS, S3, Scheduler). */
/**
 * Why DynamoDB cancels a transaction that a repeat can get past: a concurrent transaction on
 * one of its items, or load. The SDK retries neither.
 */
export const PASSING_CANCELLATIONS: ReadonlySet<string> = new Set([
  'TransactionConflict',
  'ThrottlingError',
  'ProvisionedThroughputExceeded',
]);

const THROTTLING = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
  'SlowDown',
  'RequestThrottled',
  'RequestThrottledException',
]);

const NOT_FOUND = new Set(['ResourceNotFoundException', 'NoSuchKey', 'NoSuchBucket', 'NotFound']);

interface AwsError {
  name?: string;
  message?: string;
  Item?: unknown;
  CancellationReasons?: { Code?: string; Item?: unknown }[];
  $metadata?: { httpStatusCode?: number };
}

/**
 * Turns an AWS SDK error into a domain error, as Powertools' DynamoDB persistence layer does
 * for idempotency. What it does not recognise it passes through unchanged.
 */
export function toDomainError(e: unknown, what: string): unknown {
  if (e instanceof AirlessError || typeof e !== 'object' || e === null) return e;
  const err = e as AwsError;
  const name = err.name ?? '';
  // S3's conditional write (If-None-Match) found the object there.
  if (name === 'PreconditionFailed' || err.$metadata?.httpStatusCode === 412) {
    return new ConflictError(`${what}: the object exists`, undefined, { cause: e });
  }
  if (name === 'ConditionalCheckFailedException') {
    return new ConflictError(`${what}: the item changed first`, err.Item, { cause: e });
  }
  if (name === 'TransactionCanceledException') {
    const reasons = err.CancellationReasons ?? [];
    if (reasons.some((r) => r.Code === 'ConditionalCheckFailed')) {
      const item = reasons.find((r) => r.Code === 'ConditionalCheckFailed')?.Item;
      return new ConflictError(`${what}: the item changed first`, item, { cause: e });
    }
    if (reasons.some((r) => PASSING_CANCELLATIONS.has(r.Code ?? ''))) {
      return new ThrottledError(`${what}: ${err.message ?? name}`, { cause: e });
    }
  }
  if (THROTTLING.has(name) || err.$metadata?.httpStatusCode === 429) {
    return new ThrottledError(`${what}: throttled (${name})`, { cause: e });
  }
  if (NOT_FOUND.has(name)) return new NotFoundError(`${what}: not found`, { cause: e });
  return e;
}

/** Runs an SDK call and rethrows its failure as a domain error. */
export async function aws<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw toDomainError(e, what);
  }
}

/** Pagination tokens are opaque to callers: the last evaluated key, as base64url JSON. */
export function encodeToken(key: Record<string, unknown> | undefined): string | undefined {
  return key ? Buffer.from(JSON.stringify(key)).toString('base64url') : undefined;
}

export function decodeToken(token: string | undefined): Record<string, unknown> | undefined {
  if (token === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (typeof v === 'object' && v !== null && !Array.isArray(v))
      return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new ValidationError([{ path: 'nextToken', message: 'is not a token this API returned' }]);
}
