import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Task } from '../../core/dag/schema.ts';
import { validateDag } from '../../core/dag/validate.ts';
import { httpOperator, isBlockedAddress } from '../../operators/http.ts';
import { builtInOperators, type OperatorContext } from '../../operators/index.ts';
import { noop } from '../../operators/noop.ts';
import { OperatorRegistry } from '../../operators/registry.ts';

function context(attempt = 1, signal = new AbortController().signal) {
  const lines: string[] = [];
  const ctx: OperatorContext = {
    dagId: 'd',
    runId: 'r',
    task: { taskId: 't' } as Task,
    attempt,
    signal,
    log: (l) => lines.push(l),
    runInputs: async () => ({ conf: {}, params: {} }),
  };
  return { ctx, lines };
}

describe('SSRF guard: addresses a task may not reach by default', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['169.254.169.254', true], // EC2 instance metadata
    ['169.254.170.2', true], // ECS task credentials
    ['10.1.2.3', true],
    ['172.16.0.1', true],
    ['172.31.255.255', true],
    ['192.168.1.1', true],
    ['100.64.0.1', true],
    ['0.0.0.0', true],
    ['224.0.0.1', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['::ffff:169.254.169.254', true],
    ['::ffff:a9fe:a9fe', true], // the same, in hex
    ['::ffff:8.8.8.8', false],
    ['fe80::1', true],
    ['fd00:ec2::254', true], // EC2 metadata over IPv6
    ['not-an-ip', true],
    ['8.8.8.8', false],
    ['172.32.0.1', false],
    ['93.184.215.14', false],
    ['2606:4700::1111', false],
  ])('%s blocked: %s', (ip, blocked) => {
    expect(isBlockedAddress(ip)).toBe(blocked);
  });
});

describe('http operator (against a server on 127.0.0.1)', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 5000);
      if (req.url === '/teapot') {
        res.statusCode = 418;
        return void res.end('short and stout');
      }
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ method: req.method, body }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const config = (url: string, extra: object = {}) =>
    httpOperator.config.parse({ url, allowPrivateNetwork: true, ...extra });

  it('refuses loopback by literal address and by name unless allowPrivateNetwork', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const cfg = httpOperator.config.parse({ url: `https://${host}:${port}/` });
      await expect(httpOperator.run(cfg, context().ctx)).rejects.toThrow(
        /refused to connect .* allowPrivateNetwork/,
      );
    }
    await expect(
      httpOperator.run(
        httpOperator.config.parse({ url: 'https://169.254.169.254/latest/meta-data/' }),
        context().ctx,
      ),
    ).rejects.toThrow(/refused to connect to 169\.254\.169\.254/);
  });

  it('calls the endpoint when allowed, sending the JSON body and returning the parsed response', async () => {
    const out = await httpOperator.run(
      config(`http://127.0.0.1:${port}/echo`, { method: 'POST', body: { a: 1 } }),
      context().ctx,
    );
    expect(out).toEqual({ status: 200, body: { method: 'POST', body: '{"a":1}' } });
  });

  it('fails on an unexpected status, and accepts it when listed in expectedStatus', async () => {
    await expect(
      httpOperator.run(config(`http://127.0.0.1:${port}/teapot`), context().ctx),
    ).rejects.toThrow(/answered 418: short and stout/);
    const ok = await httpOperator.run(
      config(`http://127.0.0.1:${port}/teapot`, { expectedStatus: [418] }),
      context().ctx,
    );
    expect(ok).toMatchObject({ status: 418 });
  });

  it('times out', async () => {
    await expect(
      httpOperator.run(
        config(`http://127.0.0.1:${port}/slow`, { timeoutSeconds: 0.3 }),
        context().ctx,
      ),
    ).rejects.toThrow();
  });

  it('stops when the attempt is aborted (timeout or lost lease)', async () => {
    const abort = new AbortController();
    const run = httpOperator.run(
      config(`http://127.0.0.1:${port}/slow`),
      context(1, abort.signal).ctx,
    );
    abort.abort(new Error('the lease on this attempt was lost'));
    await expect(run).rejects.toThrow();
  });
});

describe('noop operator', () => {
  it('fails attempts 1..failAttempts, then returns its output', async () => {
    const cfg = noop.config.parse({ failAttempts: 2, output: { ok: 1 } });
    await expect(noop.run(cfg, context(1).ctx)).rejects.toThrow(/failing attempt 1 of 2/);
    await expect(noop.run(cfg, context(2).ctx)).rejects.toThrow(/failing attempt 2 of 2/);
    expect(await noop.run(cfg, context(3).ctx)).toEqual({ ok: 1 });
  });

  it('sleeps, and an abort ends the sleep', async () => {
    const abort = new AbortController();
    const run = noop.run(noop.config.parse({ sleepSeconds: 30 }), context(1, abort.signal).ctx);
    abort.abort(new Error('timed out after 1s'));
    await expect(run).rejects.toThrow('timed out after 1s');
  });
});

describe('operator registry', () => {
  const spark = {
    name: 'spark_submit',
    config: z.strictObject({ jar: z.string().endsWith('.jar') }),
    run: async (c: { jar: string }) => ({ submitted: c.jar }),
  };

  it('custom operators join with their own config schema, used to validate DAGs', async () => {
    const registry = builtInOperators().register(spark);
    const dag = (jar: string) => ({
      dagId: 'd',
      tasks: [{ taskId: 's', operator: 'spark_submit', config: { jar } }],
    });
    expect(validateDag(dag('job.jar'), { operators: registry.schemas() }).ok).toBe(true);
    expect(validateDag(dag('job.py'), { operators: registry.schemas() }).ok).toBe(false);
    expect(await registry.get('spark_submit')?.run({ jar: 'job.jar' }, context().ctx)).toEqual({
      submitted: 'job.jar',
    });
  });

  it('validates DAGs for every built-in config, even without a runner here', () => {
    const registry = builtInOperators();
    expect(registry.get('ecs')).toBeUndefined();
    expect(registry.schemas().names()).toEqual(['noop', 'http', 'lambda', 'stepfunctions', 'ecs']);
  });

  it('refuses a second operator of the same name', () => {
    expect(() => new OperatorRegistry().register(spark).register(spark)).toThrow(
      /already registered/,
    );
  });
});
