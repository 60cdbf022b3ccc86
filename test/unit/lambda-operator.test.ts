import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { takeRequestCounts } from '../../adapters/aws/clients.ts';
import type { Task } from '../../core/dag/schema.ts';
import { UnrecoverableError } from '../../core/errors.ts';
import { lambdaOperator } from '../../operators/lambda.ts';
import type { OperatorContext } from '../../operators/registry.ts';

/**
 * The built-in lambda operator on the process's shared client (adapters/aws/clients.ts), against
 * a fake Lambda endpoint: its requests are counted like every other AWS request, and Lambda's
 * own error responses map to retryable or unrecoverable failures.
 */
const ctx: OperatorContext = {
  dagId: 'd',
  runId: 'r',
  task: { taskId: 't' } as Task,
  attempt: 1,
  signal: new AbortController().signal,
  log: () => {},
  runInputs: async () => ({ conf: {}, params: {} }),
};

let server: Server;
const invoked: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    // POST /2015-03-31/functions/{name}/invocations
    const name = decodeURIComponent(
      /\/functions\/([^/]+)\/invocations/.exec(req.url ?? '')?.[1] ?? '',
    );
    invoked.push(name);
    req.resume();
    req.on('end', () => {
      if (name === 'missing') {
        res.writeHead(404, {
          'content-type': 'application/json',
          'x-amzn-errortype': 'ResourceNotFoundException',
        });
        return void res.end(JSON.stringify({ Type: 'User', Message: 'Function not found' }));
      }
      if (name === 'fails') {
        res.writeHead(200, { 'x-amz-function-error': 'Unhandled' });
        return void res.end(JSON.stringify({ errorMessage: 'no rows' }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ answer: 42 }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  vi.stubEnv('AWS_ENDPOINT_URL', `http://127.0.0.1:${port}`);
  vi.stubEnv('AWS_REGION', 'us-east-1');
  vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
  vi.stubEnv('AWS_SESSION_TOKEN', '');
  vi.stubEnv('AWS_PROFILE', '');
});

afterAll(async () => {
  vi.unstubAllEnvs();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('lambda operator on the shared client', () => {
  it('counts its requests with every other AWS request', async () => {
    takeRequestCounts();
    const out = await lambdaOperator.run(lambdaOperator.config.parse({ functionName: 'ok' }), ctx);
    expect(out).toEqual({ answer: 42 });
    expect(takeRequestCounts()).toEqual({ 'lambda Invoke': 1 });
  });

  it('fails for good when the function does not exist', async () => {
    const run = lambdaOperator.run(lambdaOperator.config.parse({ functionName: 'missing' }), ctx);
    await expect(run).rejects.toBeInstanceOf(UnrecoverableError);
    await expect(run).rejects.toThrow(/refused \(ResourceNotFoundException\)/);
  });

  it('leaves a function error retryable', async () => {
    const err = await lambdaOperator
      .run(lambdaOperator.config.parse({ functionName: 'fails' }), ctx)
      .catch((e: unknown) => e);
    expect(String(err)).toMatch(/fails failed \(Unhandled\): .*no rows/);
    expect(err).not.toBeInstanceOf(UnrecoverableError);
  });
});
