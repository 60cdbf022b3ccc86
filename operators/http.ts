import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { httpConfig } from '../core/dag/operators.ts';
import { UnrecoverableError } from '../core/errors.ts';
import { AddressGuard, type Network } from './address-guard.ts';
import type { OperatorContext, RunOperator } from './registry.ts';

export interface HttpOperatorOptions {
  /**
   * Networks the operator may reach although the SSRF guard refuses them by default, and the
   * only ones plain http may reach: the deployer's choice (`httpAllowedNetworks` of the
   * `AirlessScheduler` construct), never a DAG's.
   * @default - none
   */
  readonly allowedNetworks?: readonly (string | Network)[];
}

/** Connecting to a refused address cannot succeed on a later attempt either. */
const refused = (host: string, address: string, why: string) =>
  new UnrecoverableError(`refused to connect to ${host} (${address}): ${why}`);

type LookupCallback = (
  err: Error | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A DNS lookup for the socket that refuses addresses the guard refuses. Checking here, at connect
 * time, rather than resolving first and connecting later, leaves no window for DNS rebinding.
 * Every address of the name must pass, whichever one the socket would pick.
 */
export function guardedLookup(guard: AddressGuard, plainHttp: boolean) {
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      for (const a of addresses) {
        const why = guard.refusal(a.address, { plainHttp });
        if (why) return callback(refused(hostname, a.address, why), []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(new Error(`${hostname} has no address`), []);
      callback(null, first.address, first.family);
    });
  };
}

const MAX_BODY = 1024 * 1024;

/**
 * 4xx statuses that mean "try again later" rather than "this request is wrong": 408 Request
 * Timeout, 425 Too Early, 429 Too Many Requests. Every other 4xx fails the attempt for good.
 */
const RETRYABLE_CLIENT_ERRORS = new Set([408, 425, 429]);

/**
 * Calls an HTTP(S) endpoint; a status outside `expectedStatus` (default 2xx) fails the attempt,
 * for good on a 4xx other than 408, 425 and 429. Loopback, private, link-local and other
 * non-public addresses are refused (see address-guard.ts) unless the deployer allows their
 * network; plain http may reach only those allowed networks.
 */
export function createHttpOperator(
  options: HttpOperatorOptions = {},
): RunOperator<typeof httpConfig._output> {
  const guard = new AddressGuard(options.allowedNetworks ?? []);
  // Agents of this operator only: a kept-alive socket is reused without a new lookup, so a pool
  // shared with other code (Node's global agents) would hand this operator sockets its guard
  // never checked, and hand others sockets checked against other networks.
  const agents: Agents = {
    http: new HttpAgent({ keepAlive: true, lookup: guardedLookup(guard, true) as never }),
    https: new HttpsAgent({ keepAlive: true, lookup: guardedLookup(guard, false) as never }),
  };
  return {
    name: 'http',
    config: httpConfig,
    run: (config, ctx) => call(config, ctx, guard, agents),
  };
}

interface Agents {
  readonly http: HttpAgent;
  readonly https: HttpsAgent;
}

/** The `http` operator with no allowed networks. */
export const httpOperator = createHttpOperator();

async function call(
  config: typeof httpConfig._output,
  ctx: OperatorContext,
  guard: AddressGuard,
  agents: Agents,
): Promise<unknown> {
  const url = new URL(config.url);
  const plainHttp = url.protocol === 'http:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  // Literal IP addresses skip the DNS lookup, so check them here.
  if (isIP(host)) {
    const why = guard.refusal(host, { plainHttp });
    if (why) throw refused(host, host, why);
  }
  const body =
    config.body === undefined
      ? undefined
      : typeof config.body === 'string'
        ? config.body
        : JSON.stringify(config.body);
  const headers: Record<string, string> = {
    'user-agent': 'airless-http-operator',
    ...(body !== undefined && typeof config.body !== 'string'
      ? { 'content-type': 'application/json' }
      : {}),
    ...config.headers,
  };
  const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(config.timeoutSeconds * 1000)]);
  ctx.log(`${config.method} ${url.origin}${url.pathname}`);
  const send = plainHttp ? httpRequest : httpsRequest;
  const res = await new Promise<{ status: number; type: string; text: string }>(
    (resolve, reject) => {
      let req: ReturnType<typeof send>;
      try {
        req = send(
          url,
          {
            method: config.method,
            headers,
            signal,
            agent: plainHttp ? agents.http : agents.https,
          },
          (response: IncomingMessage) => {
            const chunks: Buffer[] = [];
            let size = 0;
            response.on('data', (c: Buffer) => {
              size += c.length;
              if (size <= MAX_BODY) chunks.push(c);
            });
            response.on('end', () =>
              resolve({
                status: response.statusCode ?? 0,
                type: String(response.headers['content-type'] ?? ''),
                text: Buffer.concat(chunks).toString('utf8'),
              }),
            );
            response.on('error', reject);
          },
        );
      } catch (e) {
        // Node checks the method and headers before sending: the config itself is wrong.
        return reject(
          new UnrecoverableError(`invalid request: ${(e as Error).message}`, { cause: e }),
        );
      }
      req.on('error', (e) =>
        reject(
          signal.aborted
            ? new Error(`${config.method} ${url.origin}: ${String(signal.reason)}`)
            : e,
        ),
      );
      req.end(body);
    },
  );
  ctx.log(`status ${res.status}, ${res.text.length} bytes`);
  const ok = config.expectedStatus
    ? config.expectedStatus.includes(res.status)
    : res.status >= 200 && res.status < 300;
  if (!ok) {
    const message = `${config.method} ${url.origin}${url.pathname} answered ${res.status}: ${res.text.slice(0, 500)}`;
    if (res.status >= 400 && res.status < 500 && !RETRYABLE_CLIENT_ERRORS.has(res.status)) {
      throw new UnrecoverableError(`${message} (a client error: retrying cannot help)`);
    }
    throw new Error(message);
  }
  let parsed: unknown = res.text;
  if (res.type.includes('json')) {
    try {
      parsed = JSON.parse(res.text);
    } catch {
      // keep the text
    }
  }
  return { status: res.status, body: parsed };
}
