import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { httpConfig } from '../core/dag/operators.ts';
import type { Operator } from './registry.ts';

/**
 * Addresses a task may not reach unless its config says `allowPrivateNetwork`: loopback,
 * link-local (which holds the EC2 and ECS metadata endpoints 169.254.169.254 and 169.254.170.2),
 * private, shared, multicast and reserved ranges. A DAG author must not be able to make the
 * worker read its own credentials or probe the VPC.
 */
const blockedV4 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blockedV4.addSubnet(net, prefix, 'ipv4');
}
// A separate list: a BlockList also checks IPv4 addresses against its IPv6 rules, as
// IPv4-mapped addresses, so one list holding ::ffff:0:0/96 would refuse every IPv4 address.
const blockedV6 = new BlockList();
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blockedV6.addSubnet(net, prefix, 'ipv6');
}

export function isBlockedAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 4) return blockedV4.check(ip, 'ipv4');
  if (family !== 6) return true;
  // An IPv4-mapped address (::ffff:a.b.c.d, or its hex form) is the IPv4 address it maps.
  const mapped = /^::ffff:(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(ip);
  if (mapped) {
    const v4 =
      mapped[1] ??
      [mapped[2], mapped[3]]
        .flatMap((h) => {
          const n = Number.parseInt(h ?? '0', 16);
          return [n >> 8, n & 255];
        })
        .join('.');
    return blockedV4.check(v4, 'ipv4');
  }
  return blockedV6.check(ip, 'ipv6');
}

class RefusedAddressError extends Error {
  constructor(host: string, address: string) {
    super(
      `refused to connect to ${host} (${address}): a loopback, link-local or private address; ` +
        'set allowPrivateNetwork: true in the task config to allow it',
    );
  }
}

type LookupCallback = (
  err: Error | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A DNS lookup for the socket that refuses blocked addresses. Checking here, at connect time,
 * rather than resolving first and connecting later, leaves no window for DNS rebinding.
 */
function guardedLookup(hostname: string, options: { all?: boolean }, callback: LookupCallback) {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    const bad = addresses.find((a) => isBlockedAddress(a.address));
    if (bad) return callback(new RefusedAddressError(hostname, bad.address), []);
    if (options.all) return callback(null, addresses);
    const first = addresses[0];
    if (!first) return callback(new Error(`${hostname} has no address`), []);
    callback(null, first.address, first.family);
  });
}

const MAX_BODY = 1024 * 1024;

/** Calls an HTTPS endpoint; a status outside `expectedStatus` (default 2xx) fails the attempt. */
export const httpOperator: Operator<typeof httpConfig._output> = {
  name: 'http',
  config: httpConfig,
  async run(config, ctx) {
    const url = new URL(config.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // Literal IP addresses skip the DNS lookup, so check them here.
    if (!config.allowPrivateNetwork && isIP(host) && isBlockedAddress(host)) {
      throw new RefusedAddressError(host, host);
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
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const res = await new Promise<{ status: number; type: string; text: string }>(
      (resolve, reject) => {
        const req = send(
          url,
          {
            method: config.method,
            headers,
            signal,
            ...(config.allowPrivateNetwork ? {} : { lookup: guardedLookup as never }),
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
    if (!ok)
      throw new Error(
        `${config.method} ${url.origin}${url.pathname} answered ${res.status}: ${res.text.slice(0, 500)}`,
      );
    let parsed: unknown = res.text;
    if (res.type.includes('json')) {
      try {
        parsed = JSON.parse(res.text);
      } catch {
        // keep the text
      }
    }
    return { status: res.status, body: parsed };
  },
};
