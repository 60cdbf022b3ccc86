import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InvokeCommand } from '@aws-sdk/client-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Task } from '../../core/dag/schema.ts';
import { validateDag } from '../../core/dag/validate.ts';
import { UnrecoverableError } from '../../core/errors.ts';
import { createHttpOperator, httpOperator } from '../../operators/http.ts';
import { builtInOperators, type OperatorContext, parseTaskConfig } from '../../operators/index.ts';
import { createLambdaOperator, type InvokeClient } from '../../operators/lambda.ts';
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

describe('http operator (against a server on 127.0.0.1)', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 5000);
      const status = /^\/status\/(\d{3})$/.exec(req.url ?? '');
      if (status) {
        res.statusCode = Number(status[1]);
        return void res.end(`status ${status[1]}`);
      }
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

  // As a deployer would allow a local server: `httpAllowedNetworks: ['127.0.0.1/32']`.
  const local = createHttpOperator({ allowedNetworks: ['127.0.0.1/32'] });
  const config = (url: string, extra: object = {}) => local.config.parse({ url, ...extra });

  it('refuses loopback by literal address and by name, for good, unless the deployer allows it', async () => {
    for (const host of ['127.0.0.1', 'localhost', '[::1]', '[::ffff:127.0.0.1]', '2130706433']) {
      const cfg = httpOperator.config.parse({ url: `https://${host}:${port}/` });
      const run = httpOperator.run(cfg, context().ctx);
      await expect(run, host).rejects.toThrow(/refused to connect .*httpAllowedNetworks/);
      await expect(run, host).rejects.toBeInstanceOf(UnrecoverableError);
    }
    await expect(
      httpOperator.run(
        httpOperator.config.parse({ url: 'https://169.254.169.254/latest/meta-data/' }),
        context().ctx,
      ),
    ).rejects.toThrow(/refused to connect to 169\.254\.169\.254 .*link-local/);
  });

  it('no DAG config can open a network', () => {
    expect(() =>
      httpOperator.config.parse({ url: 'https://127.0.0.1/', allowPrivateNetwork: true }),
    ).toThrow(/allowPrivateNetwork/);
  });

  it('plain http reaches only the allowed networks; elsewhere it needs https', async () => {
    // A public address, refused before any connection is made.
    const run = httpOperator.run(
      httpOperator.config.parse({ url: 'http://93.184.216.34/' }),
      context().ctx,
    );
    await expect(run).rejects.toThrow(/plain http may reach only .*use https/);
    await expect(run).rejects.toBeInstanceOf(UnrecoverableError);
    // Allowed 127.0.0.1 does not allow 127.0.0.2, nor ::1.
    const other = local.run(config(`http://127.0.0.2:${port}/`), context().ctx);
    await expect(other).rejects.toBeInstanceOf(UnrecoverableError);
  });

  it('reaches an allowed network by name too: every address the name resolves to must be allowed', async () => {
    const cfg = (op: typeof local) => op.config.parse({ url: `http://localhost:${port}/echo` });
    const both = createHttpOperator({ allowedNetworks: ['127.0.0.0/8', '::1/128'] });
    expect(await both.run(cfg(both), context().ctx)).toMatchObject({ status: 200 });
    await expect(httpOperator.run(cfg(httpOperator), context().ctx)).rejects.toBeInstanceOf(
      UnrecoverableError,
    );
  });

  it('calls the endpoint when allowed, sending the JSON body and returning the parsed response', async () => {
    const out = await local.run(
      config(`http://127.0.0.1:${port}/echo`, { method: 'POST', body: { a: 1 } }),
      context().ctx,
    );
    expect(out).toEqual({ status: 200, body: { method: 'POST', body: '{"a":1}' } });
  });

  it('fails on an unexpected status, and accepts it when listed in expectedStatus', async () => {
    await expect(
      local.run(config(`http://127.0.0.1:${port}/teapot`), context().ctx),
    ).rejects.toThrow(/answered 418: short and stout/);
    const ok = await local.run(
      config(`http://127.0.0.1:${port}/teapot`, { expectedStatus: [418] }),
      context().ctx,
    );
    expect(ok).toMatchObject({ status: 418 });
  });

  it.each([400, 401, 403, 404, 405, 410, 413, 418, 422, 451])(
    'fails for good on %i: the request itself is wrong',
    async (status) => {
      const run = local.run(config(`http://127.0.0.1:${port}/status/${status}`), context().ctx);
      await expect(run).rejects.toThrow(`answered ${status}`);
      await expect(run).rejects.toBeInstanceOf(UnrecoverableError);
      // Also when expectedStatus lists other statuses.
      await expect(
        local.run(
          config(`http://127.0.0.1:${port}/status/${status}`, { expectedStatus: [200, 201] }),
          context().ctx,
        ),
      ).rejects.toBeInstanceOf(UnrecoverableError);
    },
  );

  it.each([408, 425, 429, 500, 502, 503, 504, 302])('leaves %i retryable', async (status) => {
    const err = await local
      .run(config(`http://127.0.0.1:${port}/status/${status}`), context().ctx)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(UnrecoverableError);
    expect(String(err)).toContain(`answered ${status}`);
  });

  it('fails for good on headers Node refuses to send', async () => {
    for (const headers of [{ 'bad header': 'x' }, { 'x-ok': 'line\r\nInjected: 1' }]) {
      const run = local.run(config(`http://127.0.0.1:${port}/echo`, { headers }), context().ctx);
      await expect(run).rejects.toThrow(/invalid request/);
      await expect(run).rejects.toBeInstanceOf(UnrecoverableError);
    }
  });

  it('times out', async () => {
    const run = local.run(
      config(`http://127.0.0.1:${port}/slow`, { timeoutSeconds: 0.3 }),
      context().ctx,
    );
    await expect(run).rejects.toThrow();
    await expect(run).rejects.not.toBeInstanceOf(UnrecoverableError);
  });

  it('stops when the attempt is aborted (timeout or lost lease)', async () => {
    const abort = new AbortController();
    const run = local.run(config(`http://127.0.0.1:${port}/slow`), context(1, abort.signal).ctx);
    abort.abort(new Error('the lease on this attempt was lost'));
    await expect(run).rejects.toThrow();
  });

  it('builtInOperators gives the http operator the deployer networks', async () => {
    const op = builtInOperators({ httpAllowedNetworks: ['127.0.0.1/32'] }).runner('http');
    expect(
      await op?.run(op.config.parse({ url: `http://127.0.0.1:${port}/echo` }), context().ctx),
    ).toMatchObject({ status: 200 });
    const closed = builtInOperators().runner('http');
    await expect(
      closed?.run(closed.config.parse({ url: `http://127.0.0.1:${port}/echo` }), context().ctx),
    ).rejects.toBeInstanceOf(UnrecoverableError);
  });
});

describe('lambda operator (a fake client)', () => {
  const fake = (respond: (cmd: InvokeCommand) => unknown) => {
    const sent: InvokeCommand[] = [];
    const client: InvokeClient = {
      send: async (cmd) => {
        sent.push(cmd);
        return respond(cmd) as never;
      },
    };
    return { op: createLambdaOperator(() => client), sent };
  };
  const awsError = (name: string) => Object.assign(new Error(`${name} message`), { name });
  const cfg = { functionName: 'transform', qualifier: 'live' };

  it('sends the attempt identity and run inputs, and returns the parsed result', async () => {
    const { op, sent } = fake(() => ({
      StatusCode: 200,
      Payload: new TextEncoder().encode('{"rows":3}'),
    }));
    expect(await op.run(op.config.parse(cfg), context(2).ctx)).toEqual({ rows: 3 });
    const input = sent[0]?.input;
    expect(input).toMatchObject({ FunctionName: 'transform', Qualifier: 'live' });
    expect(JSON.parse(new TextDecoder().decode(input?.Payload as Uint8Array))).toEqual({
      dagId: 'd',
      runId: 'r',
      taskId: 't',
      attempt: 2,
      conf: {},
      params: {},
    });
  });

  it.each([
    'ResourceNotFoundException',
    'AccessDeniedException',
    'InvalidRequestContentException',
    'RequestTooLargeException',
    'InvalidParameterValueException',
    'UnsupportedMediaTypeException',
    'ValidationException',
  ])('fails for good when Lambda refuses the request: %s', async (name) => {
    const { op } = fake(() => {
      throw awsError(name);
    });
    const run = op.run(op.config.parse(cfg), context().ctx);
    await expect(run).rejects.toThrow(`invoking transform:live was refused (${name})`);
    await expect(run).rejects.toBeInstanceOf(UnrecoverableError);
  });

  it.each([
    'TooManyRequestsException',
    'ServiceException',
    'ResourceNotReadyException',
    'ResourceConflictException',
    'EC2ThrottledException',
    'AbortError',
  ])('leaves %s retryable', async (name) => {
    const { op } = fake(() => {
      throw awsError(name);
    });
    const err = await op.run(op.config.parse(cfg), context().ctx).catch((e: unknown) => e);
    expect(err).toMatchObject({ name });
    expect(err).not.toBeInstanceOf(UnrecoverableError);
  });

  it('leaves an error of the function itself retryable', async () => {
    const { op } = fake(() => ({
      StatusCode: 200,
      FunctionError: 'Unhandled',
      Payload: new TextEncoder().encode('{"errorMessage":"no rows"}'),
    }));
    const err = await op.run(op.config.parse(cfg), context().ctx).catch((e: unknown) => e);
    expect(String(err)).toMatch(/transform failed \(Unhandled\): .*no rows/);
    expect(err).not.toBeInstanceOf(UnrecoverableError);
  });
});

describe('parseTaskConfig', () => {
  it('returns the parsed config, with defaults', () => {
    expect(parseTaskConfig(httpOperator, { url: 'https://example.com/' })).toMatchObject({
      method: 'GET',
      timeoutSeconds: 30,
    });
  });

  it('fails for good on a config that does not parse, naming the fields', () => {
    const parse = () =>
      parseTaskConfig(httpOperator, { url: 'nope', allowPrivateNetwork: true, method: 'FETCH' });
    expect(parse).toThrow(UnrecoverableError);
    expect(parse).toThrow(/invalid http config: .*\$\.config\.url.*\$\.config\.method/);
    expect(() => parseTaskConfig(noop, { failAttempts: -1 })).toThrow(UnrecoverableError);
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
    expect(await registry.runner('spark_submit')?.run({ jar: 'job.jar' }, context().ctx)).toEqual({
      submitted: 'job.jar',
    });
  });

  it('validates DAGs for every built-in config, even without a runner here', () => {
    const registry = builtInOperators();
    expect(registry.get('ecs')).toBeUndefined();
    expect(registry.schemas().names()).toEqual([
      'noop',
      'branch',
      'http',
      'lambda',
      'stepfunctions',
      'ecs',
    ]);
  });

  it('refuses a second operator of the same name', () => {
    expect(() => new OperatorRegistry().register(spark).register(spark)).toThrow(
      /already registered/,
    );
  });
});
