import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Task } from '../../core/dag/schema.ts';
import { UnrecoverableError } from '../../core/errors.ts';
import type { OperatorContext } from '../../operators/registry.ts';

/** lambdas/runtime.ts reads HTTP_ALLOWED_NETWORKS once, at cold start, for the http operator. */
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
let url: string;
beforeAll(async () => {
  server = createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
afterEach(() => vi.unstubAllEnvs());

/** A fresh container: the module, and so its cached environment, is loaded again. */
async function coldStart(networks?: string) {
  for (const [k, v] of Object.entries({
    TABLE_NAME: 't',
    QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo',
    RETRY_QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/123456789012/r',
    DAGS_BUCKET: 'dags',
    DATA_BUCKET: 'data',
    AWS_REGION: 'us-east-1',
  })) {
    vi.stubEnv(k, v);
  }
  if (networks !== undefined) vi.stubEnv('HTTP_ALLOWED_NETWORKS', networks);
  vi.resetModules();
  const { runtime } = await import('../../lambdas/runtime.ts');
  return runtime;
}

async function callLocal(runtime: Awaited<ReturnType<typeof coldStart>>) {
  const http = runtime().deps.operators.runner('http');
  if (!http) throw new Error('no http operator');
  return http.run(http.config.parse({ url }), ctx);
}

describe('HTTP_ALLOWED_NETWORKS', () => {
  it('absent: the http operator reaches no private network', async () => {
    const runtime = await coldStart();
    expect(runtime().env.HTTP_ALLOWED_NETWORKS).toEqual([]);
    await expect(callLocal(runtime)).rejects.toThrow(/refused to connect/);
  });

  it('set: the http operator reaches exactly those networks', async () => {
    const runtime = await coldStart('127.0.0.1/32, ::1/128');
    expect(runtime().env.HTTP_ALLOWED_NETWORKS.map((n) => n.text)).toEqual([
      '127.0.0.1/32',
      '::1/128',
    ]);
    expect(await callLocal(runtime)).toEqual({ status: 200, body: 'ok' });
  });

  it('a bad network stops the cold start, naming the variable', async () => {
    const runtime = await coldStart('10.0.0.1/8');
    expect(() => runtime()).toThrow(/bad environment: HTTP_ALLOWED_NETWORKS: .*host bits set/);
  });

  it('an error from a refused address is the one app/tasks.ts fails for good', async () => {
    const runtime = await coldStart();
    const err = await callLocal(runtime).catch((e: unknown) => e);
    // A fresh module graph has its own UnrecoverableError class: the name is what crosses it.
    expect((err as Error).name).toBe(UnrecoverableError.name);
  });
});
