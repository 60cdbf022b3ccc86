import {
  ConditionalCheckFailedException,
  ProvisionedThroughputExceededException,
  TransactionCanceledException,
} from '@aws-sdk/client-dynamodb';
import { ResourceNotFoundException, ThrottlingException } from '@aws-sdk/client-scheduler';
import { describe, expect, it } from 'vitest';
import { decodeToken, encodeToken, toDomainError } from '../../adapters/aws/errors.ts';
import {
  ConflictError,
  NotFoundError,
  ThrottledError,
  ValidationError,
} from '../../core/errors.ts';

// The emulator never throttles, so these faults are built from the SDK's own exception classes
// rather than provoked: the mapping is the unit under test, not a client.
const meta = { $metadata: {}, message: 'x', Message: 'x' };

describe('toDomainError', () => {
  it('maps a failed condition to ConflictError, keeping the current item', () => {
    const e = new ConditionalCheckFailedException({ ...meta, Item: { status: { S: 'running' } } });
    const mapped = toDomainError(e, 'claim');
    expect(mapped).toBeInstanceOf(ConflictError);
    expect((mapped as ConflictError).current).toEqual({ status: { S: 'running' } });
    expect((mapped as ConflictError).retryable).toBe(false);
  });

  it('maps a transaction cancelled by a condition to ConflictError', () => {
    const e = new TransactionCanceledException({
      ...meta,
      CancellationReasons: [{ Code: 'None' }, { Code: 'ConditionalCheckFailed' }],
    });
    expect(toDomainError(e, 'createRun')).toBeInstanceOf(ConflictError);
  });

  it('maps throttling from any service to a retryable ThrottledError', () => {
    for (const e of [
      new ProvisionedThroughputExceededException(meta),
      new ThrottlingException(meta),
      new TransactionCanceledException({
        ...meta,
        CancellationReasons: [{ Code: 'ThrottlingError' }],
      }),
      Object.assign(new Error('slow down'), { name: 'SlowDown' }),
    ]) {
      const mapped = toDomainError(e, 'op');
      expect(mapped).toBeInstanceOf(ThrottledError);
      expect((mapped as ThrottledError).retryable).toBe(true);
      expect((mapped as Error).cause).toBe(e);
    }
  });

  it('maps missing resources to NotFoundError and passes unknown errors through', () => {
    expect(toDomainError(new ResourceNotFoundException(meta), 'get')).toBeInstanceOf(NotFoundError);
    const other = new Error('boom');
    expect(toDomainError(other, 'op')).toBe(other);
  });
});

describe('page tokens', () => {
  it('round-trip, and a forged token is a ValidationError', () => {
    const key = { pk: 'RUN#d#r', sk: 'RUN' };
    expect(decodeToken(encodeToken(key))).toEqual(key);
    expect(encodeToken(undefined)).toBeUndefined();
    expect(() => decodeToken('%%%')).toThrow(ValidationError);
    expect(() => decodeToken(Buffer.from('[1]').toString('base64url'))).toThrow(ValidationError);
  });
});
