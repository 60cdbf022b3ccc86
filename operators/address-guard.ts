import { isIP } from 'node:net';

/**
 * The SSRF guard of the `http` operator: which IP addresses a task may connect to. Pure (no I/O),
 * so the CDK construct can validate the deployer's networks at synth time with the same parser.
 *
 * Refused by default: every IPv4 range that is not globally reachable (loopback, private, shared,
 * link-local with the EC2 and ECS metadata endpoints 169.254.169.254 and 169.254.170.2,
 * documentation, benchmarking, multicast, reserved, broadcast), and every IPv6 address outside
 * global unicast 2000::/3 or in a special-purpose block of it. IPv6 forms that embed an IPv4
 * address are judged by it or refused whole (see {@link v6Refusal}).
 *
 * Addresses are parsed to integers rather than matched with a `net.BlockList`: a BlockList also
 * checks IPv4 addresses against its IPv6 rules (as IPv4-mapped addresses), so one IPv6 rule such as
 * ::ffff:0:0/96 would refuse, or allow, every IPv4 address.
 */

export interface Address {
  readonly family: 4 | 6;
  readonly value: bigint;
}

export interface Network {
  readonly family: 4 | 6;
  readonly base: bigint;
  readonly prefix: number;
  /** As the deployer wrote it. */
  readonly text: string;
}

const BITS = { 4: 32, 6: 128 } as const;

function parseV4(text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function parseV6(text: string): bigint {
  let s = text.toLowerCase();
  // A zone id (fe80::1%eth0) does not change which address it is.
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // A trailing dotted quad (::ffff:127.0.0.1) is the last two groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const v4 = parseV4(dotted[2] as string);
    s = `${dotted[1]}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = s.split('::');
  const groups = (g: string) => (g === '' ? [] : g.split(':'));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all =
    tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return all.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

/** An IPv4 or IPv6 address in any textual form Node accepts, or undefined. */
export function parseAddress(text: string): Address | undefined {
  const family = isIP(text);
  if (family === 4) return { family, value: parseV4(text) };
  if (family === 6) return { family, value: parseV6(text) };
  return undefined;
}

const MAPPED = { base: 0xffffn << 32n, prefix: 96 };

function within(value: bigint, family: 4 | 6, base: bigint, prefix: number): boolean {
  const shift = BigInt(BITS[family] - prefix);
  return value >> shift === base >> shift;
}

/**
 * IPv4-mapped addresses (::ffff:a.b.c.d) are the IPv4 address itself to the socket, so the
 * allowlist sees them as IPv4.
 */
function unmap(a: Address): Address {
  if (a.family === 6 && within(a.value, 6, MAPPED.base, MAPPED.prefix)) {
    return { family: 4, value: a.value & 0xffffffffn };
  }
  return a;
}

/**
 * Parses `10.0.0.0/8`, `::1/128`, or a bare address (one host). Throws on anything else,
 * including set host bits (`10.0.0.1/8`), which are almost always a typo.
 */
export function parseNetwork(text: string): Network {
  const [addr = '', prefixText, ...extra] = text.trim().split('/');
  const a = parseAddress(addr);
  if (!a || extra.length > 0 || addr.includes('%')) {
    throw new Error(`"${text}" is not a network: expected a CIDR such as 10.0.0.0/8 or fd00::/8`);
  }
  const max = BITS[a.family];
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText ?? String(max)) || prefix > max) {
    throw new Error(`"${text}" has an invalid prefix length: expected 0 to ${max}`);
  }
  const hostBits = (1n << BigInt(max - prefix)) - 1n;
  if ((a.value & hostBits) !== 0n) {
    const base = a.value & ~hostBits;
    throw new Error(
      `"${text}" has host bits set: did you mean ${formatAddress({ family: a.family, value: base })}/${prefix}?`,
    );
  }
  // An IPv4-mapped block is an IPv4 block, since mapped addresses are checked as IPv4.
  if (a.family === 6 && prefix >= 96 && within(a.value, 6, MAPPED.base, MAPPED.prefix)) {
    return { family: 4, base: a.value & 0xffffffffn, prefix: prefix - 96, text };
  }
  return { family: a.family, base: a.value, prefix, text };
}

/** Parses a comma-separated list of networks, as the worker's environment carries it. */
export function parseNetworkList(text: string): Network[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(parseNetwork);
}

function formatAddress(a: Address): string {
  if (a.family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((a.value >> s) & 0xffn)).join('.');
  }
  const groups = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((s) =>
    ((a.value >> s) & 0xffffn).toString(16),
  );
  return groups.join(':');
}

const contains = (n: Network, a: Address) =>
  n.family === a.family && within(a.value, a.family, n.base, n.prefix);

const rules = (list: readonly (readonly [string, string])[]) =>
  list.map(([cidr, why]) => ({ network: parseNetwork(cidr), why }));

/** IPv4 blocks that are not globally reachable (IANA special-purpose registry). */
const V4_REFUSED = rules([
  ['0.0.0.0/8', '"this network"'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared address space (carrier-grade NAT)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local (the EC2 and ECS metadata and credential endpoints)'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'IETF protocol assignments'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', '6to4 relay anycast'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved or broadcast'],
]);

/**
 * IPv6 blocks refused whole. The transition forms that embed an IPv4 address anywhere but in
 * ::ffff:0:0/96 and 64:ff9b::/96 are refused whole, whatever the address: they are deprecated or
 * local, and a relay or translator could forward them to a private IPv4 address.
 */
const V6_REFUSED = rules([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'IPv4-compatible (deprecated; embeds an IPv4 address)'],
  ['::ffff:0:0:0/96', 'IPv4-translated (embeds an IPv4 address)'],
  ['64:ff9b:1::/48', 'local-use NAT64'],
  ['100::/64', 'discard-only'],
  ['2001::/32', 'Teredo (embeds an IPv4 address)'],
  ['2001:2::/48', 'benchmarking'],
  ['2001:10::/28', 'ORCHID'],
  ['2001:20::/28', 'ORCHIDv2'],
  ['2001:db8::/32', 'documentation'],
  ['2002::/16', '6to4 (embeds an IPv4 address)'],
  ['3fff::/20', 'documentation'],
  ['5f00::/16', 'SRv6 segment identifiers'],
  ['fc00::/7', 'unique local (includes the EC2 metadata endpoint fd00:ec2::254)'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local (deprecated)'],
  ['ff00::/8', 'multicast'],
]);
const GLOBAL_UNICAST = parseNetwork('2000::/3');
const NAT64 = parseNetwork('64:ff9b::/96');

function v4Refusal(value: bigint): string | undefined {
  const a: Address = { family: 4, value };
  return V4_REFUSED.find((r) => contains(r.network, a))?.why;
}

/**
 * Why an IPv6 address is refused, or undefined. IPv4-mapped addresses are the IPv4 address; the
 * well-known NAT64 prefix (which DNS64 gives to IPv4-only hosts in an IPv6-only subnet) reaches
 * the IPv4 address it embeds, so both are judged by it.
 */
function v6Refusal(value: bigint): string | undefined {
  const a: Address = { family: 6, value };
  const embedded = value & 0xffffffffn;
  const v4 = formatAddress({ family: 4, value: embedded });
  if (contains({ ...MAPPED, family: 6, text: '' }, a)) {
    const why = v4Refusal(embedded);
    return why && `IPv4-mapped ${v4}: ${why}`;
  }
  if (contains(NAT64, a)) {
    const why = v4Refusal(embedded);
    return why && `NAT64 of ${v4}: ${why}`;
  }
  const rule = V6_REFUSED.find((r) => contains(r.network, a));
  if (rule) return rule.why;
  if (!contains(GLOBAL_UNICAST, a)) return 'not global unicast (outside 2000::/3)';
  return undefined;
}

/** Why the default rules refuse `ip` (no allowed networks), or undefined when they do not. */
export function refusalReason(ip: string): string | undefined {
  const a = parseAddress(ip);
  if (!a) return 'not an IP address';
  return a.family === 4 ? v4Refusal(a.value) : v6Refusal(a.value);
}

/** Whether the default rules refuse `ip`. */
export function isBlockedAddress(ip: string): boolean {
  return refusalReason(ip) !== undefined;
}

/**
 * The default rules, opened by the networks the deployer allows (`httpAllowedNetworks` of the
 * `AirlessScheduler` construct), never by a DAG.
 */
export class AddressGuard {
  readonly allowedNetworks: readonly Network[];

  constructor(allowedNetworks: readonly (string | Network)[] = []) {
    this.allowedNetworks = allowedNetworks.map((n) =>
      typeof n === 'string' ? parseNetwork(n) : n,
    );
  }

  /** Whether `ip` is inside one of the allowed networks. */
  isAllowedNetwork(ip: string): boolean {
    const a = parseAddress(ip);
    if (!a) return false;
    const u = unmap(a);
    return this.allowedNetworks.some((n) => contains(n, u));
  }

  /**
   * Why a connection to `ip` is refused, or undefined when it may go ahead. Plain http (no TLS,
   * so nothing proves which host answered) may reach only the allowed networks; https may reach
   * them and every address the default rules do not refuse.
   */
  refusal(ip: string, opts: { plainHttp: boolean } = { plainHttp: false }): string | undefined {
    if (this.isAllowedNetwork(ip)) return undefined;
    if (opts.plainHttp) {
      return 'plain http may reach only the networks the deployer allows (httpAllowedNetworks); use https';
    }
    const why = refusalReason(ip);
    return why && `${why}; only the deployer can allow it (httpAllowedNetworks)`;
  }
}
