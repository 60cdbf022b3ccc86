import { Logger } from '@aws-lambda-powertools/logger';
import type { Context } from 'aws-lambda';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CompactLogFormatter } from '../../lambdas/runtime.ts';

afterEach(() => vi.restoreAllMocks());

const context = {
  functionName: 'Airless-Worker',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:Airless-Worker',
  memoryLimitInMB: '1024',
  awsRequestId: 'req-1',
} as unknown as Context;

/** The lines a logger writes, parsed. */
function lines(log: (logger: Logger) => void): Record<string, unknown>[] {
  const out: string[] = [];
  // Powertools writes errors and warnings to stderr, the rest to stdout.
  for (const stream of [process.stdout, process.stderr])
    vi.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
  const logger = new Logger({ serviceName: 'airless', logFormatter: new CompactLogFormatter() });
  logger.addContext(context);
  log(logger);
  vi.restoreAllMocks();
  return out
    .join('')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('the compact log line', () => {
  it('keeps the level, message, time, service, request and the extra keys', () => {
    const [line, ...rest] = lines((l) =>
      l.info('attempt finished', { dagId: 'd', taskId: 't', outcome: 'success' }),
    );
    expect(rest).toEqual([]);
    expect(line).toMatchObject({
      level: 'INFO',
      message: 'attempt finished',
      service: 'airless',
      function_request_id: 'req-1',
      dagId: 'd',
      taskId: 't',
      outcome: 'success',
    });
    expect(Number.isNaN(Date.parse(String(line?.timestamp)))).toBe(false);
  });

  it('drops what the log group and the REPORT line say already', () => {
    const [line] = lines((l) => l.info('x'));
    for (const key of ['function_name', 'function_arn', 'function_memory_size', 'sampling_rate'])
      expect(line).not.toHaveProperty(key);
  });

  it('still formats an error with its name and message', () => {
    const [line] = lines((l) => l.error('failed', new Error('boom')));
    expect(line?.error).toMatchObject({ name: 'Error', message: 'boom' });
  });
});
