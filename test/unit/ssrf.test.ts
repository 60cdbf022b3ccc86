import type { LookupAddress } from 'node:dns';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, BlockList, isIP } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Task } from '../../core/dag/schema.ts';
import { UnrecoverableError } from '../../core/errors.ts';
import {
  AddressGuard,
  isBlockedAddress,
  parseAddress,
  parseNetwork,
  parseNetworkList,
} from '../../operators/address-guard.ts';
import { createHttpOperator, guardedLookup, httpOperator } from '../../operators/http.ts';
import type { OperatorContext } from '../../operators/registry.ts';

/** Names the fake resolver answers; every other name goes to the real one. */
const fakeDns = new Map<string, string[]>();
vi.mock('node:dns', async (importOriginal) => {
  const dns = await importOriginal<typeof import('node:dns')>();
  const lookup = (
    hostname: string,
    options: object,
    callback: (err: Error | null, addresses: LookupAddress[]) => void,
  ) => {
    const fake = fakeDns.get(hostname);
    if (!fake) return dns.lookup(hostname, options as { all: true }, callback);
    process.nextTick(() =>
      callback(
        null,
        fake.map((address) => ({ address, family: isIP(address) })),
      ),
    );
  };
  return { ...dns, default: { ...dns, lookup }, lookup };
});

// --- Generating every IPv6 spelling of an IPv4 address ------------------------------------------

const v4Number = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const hex = (n: number) => n.toString(16);
const pad = (n: number) => n.toString(16).padStart(4, '0');

/** The 8 groups of an IPv6 address, written fully: 0064:ff9b:0000:... */
const full = (groups: number[]) => groups.map(pad).join(':');
/** Zero groups written out, without padding: 64:ff9b:0:0:... */
const expanded = (groups: number[]) => groups.map(hex).join(':');
/** The shortest form: the longest run of zero groups as `::` (RFC 5952). */
function compressed(groups: number[]): string {
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i > 1) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  if (best.at < 0) return expanded(groups);
  const head = groups.slice(0, best.at).map(hex).join(':');
  const tail = groups
    .slice(best.at + best.len)
    .map(hex)
    .join(':');
  return `${head}::${tail}`;
}

/** Every IPv6 form that embeds `v4`, by embedding, in hex and dotted, short, long and upper case. */
function embeddings(v4: string): Record<string, string[]> {
  const n = v4Number(v4);
  const hi = Math.floor(n / 65536);
  const lo = n % 65536;
  const [a = 0, b = 0, c = 0, d = 0] = v4.split('.').map(Number);
  const forms = (prefix: number[], dotted: string[]) => {
    const groups = [...prefix, hi, lo];
    const out = [compressed(groups), expanded(groups), full(groups), ...dotted];
    return [...out, ...out.map((f) => f.toUpperCase())];
  };
  const inv = 0xffffffff - n;
  const teredo = (server: number[]) => [
    0x2001,
    0,
    ...server,
    0x8000,
    0xffff - 443,
    Math.floor(inv / 65536),
    inv % 65536,
  ];
  const sixToFour = (iface: number[]) => [0x2002, hi, lo, 0, ...iface];
  const variants = (groups: number[]) => {
    const out = [compressed(groups), expanded(groups), full(groups)];
    return [...out, ...out.map((f) => f.toUpperCase())];
  };
  return {
    mapped: forms(
      [0, 0, 0, 0, 0, 0xffff],
      [
        `::ffff:${v4}`,
        `::FFFF:${v4}`,
        `0:0:0:0:0:ffff:${v4}`,
        `0000:0000:0000:0000:0000:FFFF:${v4}`,
        `::0:ffff:${v4}`,
      ],
    ),
    compatible: forms([0, 0, 0, 0, 0, 0], [`::${v4}`, `0:0:0:0:0:0:${v4}`]),
    translated: forms([0, 0, 0, 0, 0xffff, 0], [`::ffff:0:${v4}`, `0:0:0:0:ffff:0:${v4}`]),
    nat64: forms(
      [0x64, 0xff9b, 0, 0, 0, 0],
      [`64:ff9b::${v4}`, `64:FF9B::${v4}`, `0064:ff9b:0000:0000:0000:0000:${v4}`],
    ),
    // RFC 6052 with a /48 prefix: a.b in bits 48-63, then the zero u-octet, then c.d.
    nat64Local: [
      ...variants([0x64, 0xff9b, 1, a * 256 + b, c, d * 256, 0, 0]),
      ...forms([0x64, 0xff9b, 1, 0, 0, 0], [`64:ff9b:1::${v4}`]),
    ],
    sixToFour: [...variants(sixToFour([0, 0, 0, 0])), ...variants(sixToFour([0, 0, 0, 1]))],
    teredo: [
      ...variants(teredo([0x4136, 0xe378])),
      // The sample as the Teredo server, too.
      ...variants([0x2001, 0, hi, lo, 0, 0, 0, 1]),
    ],
  };
}

/** IPv4 addresses no task may reach by default. */
const REFUSED_V4 = [
  '127.0.0.1',
  '127.255.255.254',
  '10.1.2.3',
  '172.16.0.1',
  '172.31.255.255',
  '192.168.1.1',
  '169.254.169.254', // EC2 instance metadata
  '169.254.170.2', // ECS task credentials
  '100.64.0.1',
  '0.0.0.0',
  '0.1.2.3',
  '192.0.0.1',
  '192.0.2.1',
  '198.18.0.1',
  '198.51.100.1',
  '203.0.113.1',
  '224.0.0.1',
  '239.255.255.250',
  '240.0.0.1',
  '255.255.255.255',
];
const PUBLIC_V4 = ['93.184.216.34', '8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1'];

describe('SSRF guard: a generated table of IPv6 spellings of refused IPv4 addresses', () => {
  const rows = REFUSED_V4.flatMap((v4) =>
    Object.entries(embeddings(v4)).flatMap(([kind, forms]) =>
      [...new Set(forms)].map((form) => [v4, kind, form] as const),
    ),
  );

  it('generates valid addresses, and many of them', () => {
    expect(rows.length).toBeGreaterThan(REFUSED_V4.length * 60);
    for (const [, kind, form] of rows) expect(isIP(form), `${kind} ${form}`).toBe(6);
  });

  it('parses every spelling of one address to the same value', () => {
    for (const v4 of REFUSED_V4) {
      const { mapped = [], nat64 = [] } = embeddings(v4);
      for (const forms of [mapped, nat64]) {
        const values = new Set(forms.map((f) => parseAddress(f)?.value));
        expect(values.size, forms.join(' ')).toBe(1);
      }
      expect(parseAddress(`::ffff:${v4}`)?.value).toBe((0xffffn << 32n) | BigInt(v4Number(v4)));
    }
  });

  it('refuses the IPv4 addresses themselves', () => {
    for (const v4 of REFUSED_V4) expect(isBlockedAddress(v4), v4).toBe(true);
  });

  it('refuses every embedding of every one, by literal address', () => {
    const guard = new AddressGuard();
    for (const [v4, kind, form] of rows) {
      expect(isBlockedAddress(form), `${kind} ${form} (${v4})`).toBe(true);
      expect(guard.refusal(form), `${kind} ${form} (${v4})`).toBeDefined();
    }
  });

  it('says which IPv4 address a mapped or NAT64 form reaches', () => {
    const guard = new AddressGuard();
    expect(guard.refusal('::ffff:a9fe:a9fe')).toMatch(/IPv4-mapped 169\.254\.169\.254: link-local/);
    expect(guard.refusal('64:ff9b::a00:1')).toMatch(/NAT64 of 10\.0\.0\.1: private/);
  });

  it('refuses them after DNS too: a name that resolves to any of them', async () => {
    const lookup = guardedLookup(new AddressGuard(), false);
    for (const [v4, kind, form] of rows.filter((_, i) => i % 7 === 0)) {
      fakeDns.set('evil.test', ['93.184.216.34', form]);
      const err = await new Promise<Error | null>((resolve) =>
        lookup('evil.test', {}, (e) => resolve(e)),
      );
      expect(err, `${kind} ${form} (${v4})`).toBeInstanceOf(UnrecoverableError);
      expect(err?.message).toContain(`refused to connect to evil.test (${form})`);
    }
  });

  it('judges mapped and NAT64 forms of a public IPv4 address by it; other embeddings are refused whole', () => {
    for (const v4 of PUBLIC_V4) {
      expect(isBlockedAddress(v4), v4).toBe(false);
      const e = embeddings(v4);
      for (const form of [...(e.mapped ?? []), ...(e.nat64 ?? [])]) {
        expect(isBlockedAddress(form), form).toBe(false);
      }
      for (const kind of ['compatible', 'translated', 'nat64Local', 'sixToFour', 'teredo']) {
        for (const form of e[kind] ?? [])
          expect(isBlockedAddress(form), `${kind} ${form}`).toBe(true);
      }
    }
  });
});

describe('SSRF guard: IPv6 ranges', () => {
  it.each([
    ['::', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['fc00::1', true], // unique local
    ['fd00:ec2::254', true], // EC2 metadata over IPv6
    ['fe80::1', true], // link-local
    ['fe80::1%eth0', true],
    ['febf:ffff::1', true],
    ['fec0::1', true], // site-local
    ['feff::1', true],
    ['ff02::1', true], // multicast
    ['ff05::1:3', true],
    ['2001:db8::1', true], // documentation
    ['3fff::1', true], // documentation
    ['2001:2::1', true], // benchmarking
    ['2001:10::1', true], // ORCHID
    ['100::1', true], // discard-only
    ['::2', true], // IPv4-compatible
    ['400::1', true], // outside 2000::/3
    ['4000::1', true],
    ['2606:4700::1', false],
    ['2606:4700:4700::1111', false],
    ['2a00:1450:4001:80b::200e', false],
    ['2001:4860:4860::8888', false],
    ['2600:1f18::1', false],
    ['2001:200::1', false], // outside the special blocks of 2001::/23
    ['not-an-ip', true],
    ['', true],
  ])('%s refused: %s', (ip, refused) => {
    expect(isBlockedAddress(ip)).toBe(refused);
  });

  it('a random global unicast address outside the special blocks is allowed', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0x2400, max: 0x2fff }),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 }),
        (first, rest) => !isBlockedAddress([first, ...rest].map(hex).join(':')),
      ),
    );
  });
});

describe('SSRF guard: property, against an independent IPv4 oracle', () => {
  // Only IPv4 rules, checked only with IPv4 addresses: a BlockList also checks IPv4 addresses
  // against IPv6 rules, which is why the guard itself does not use one.
  const oracle = new BlockList();
  for (const cidr of [
    '0.0.0.0/8',
    '10.0.0.0/8',
    '100.64.0.0/10',
    '127.0.0.0/8',
    '169.254.0.0/16',
    '172.16.0.0/12',
    '192.0.0.0/24',
    '192.0.2.0/24',
    '192.88.99.0/24',
    '192.168.0.0/16',
    '198.18.0.0/15',
    '198.51.100.0/24',
    '203.0.113.0/24',
    '224.0.0.0/4',
    '240.0.0.0/4',
  ]) {
    const [net = '', prefix = ''] = cidr.split('/');
    oracle.addSubnet(net, Number(prefix), 'ipv4');
  }
  // Half the samples in refused ranges, where the interesting edges are.
  const v4 = fc.oneof(
    fc.ipV4(),
    fc
      .tuple(
        fc.constantFrom(0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 239, 240, 255),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
      )
      .map((o) => o.join('.')),
  );

  it('an IPv4 address, and its mapped and NAT64 forms, are refused exactly when the oracle refuses it', () => {
    fc.assert(
      fc.property(v4, (ip) => {
        const refused = oracle.check(ip, 'ipv4');
        const e = embeddings(ip);
        return [ip, ...(e.mapped ?? []), ...(e.nat64 ?? [])].every(
          (form) => isBlockedAddress(form) === refused,
        );
      }),
      { numRuns: 500 },
    );
  });

  it('every other embedding of any IPv4 address is refused', () => {
    fc.assert(
      fc.property(v4, (ip) => {
        const { mapped: _m, nat64: _n, ...rest } = embeddings(ip);
        return Object.values(rest).every((forms) => forms.every(isBlockedAddress));
      }),
      { numRuns: 300 },
    );
  });
});

describe('allowed networks: the deployer opens them, for literal and resolved addresses', () => {
  it('parses CIDRs and single addresses, and refuses anything else', () => {
    expect(parseNetwork('10.0.0.0/8')).toMatchObject({ family: 4, prefix: 8 });
    expect(parseNetwork('127.0.0.1')).toMatchObject({ family: 4, prefix: 32 });
    expect(parseNetwork('::1/128')).toMatchObject({ family: 6, prefix: 128 });
    expect(parseNetwork('fd00::/8')).toMatchObject({ family: 6, prefix: 8 });
    // An IPv4-mapped block is the IPv4 block.
    expect(parseNetwork('::ffff:7f00:0/104')).toMatchObject({ family: 4, prefix: 8 });
    expect(parseNetworkList(' 10.0.0.0/8, ,::1/128 ')).toHaveLength(2);
    expect(parseNetworkList('')).toEqual([]);
    for (const [bad, why] of [
      ['10.0.0.1/8', /host bits set: did you mean 10\.0\.0\.0\/8/],
      ['10.0.0.0/33', /prefix length: expected 0 to 32/],
      ['::/129', /prefix length: expected 0 to 128/],
      ['10.0.0.0/-1', /prefix length/],
      ['10.0.0.0/', /prefix length/],
      ['10.0.0.0/8/9', /not a network/],
      ['10.0.0/8', /not a network/],
      ['example.com/32', /not a network/],
      ['', /not a network/],
      ['fe80::%eth0/64', /not a network/],
    ] as const) {
      expect(() => parseNetwork(bad), bad).toThrow(why);
    }
  });

  it('allows addresses inside the networks, and nothing else', () => {
    const guard = new AddressGuard(['10.0.0.0/8', '127.0.0.1/32', 'fd00:ec2::/32', '::1/128']);
    for (const ip of [
      '10.0.0.1',
      '10.255.255.255',
      '::ffff:10.1.2.3', // the same socket as 10.1.2.3
      '::ffff:a01:203',
      '127.0.0.1',
      '::1',
      '0:0:0:0:0:0:0:1',
      'fd00:ec2::254',
    ]) {
      expect(guard.refusal(ip), ip).toBeUndefined();
      expect(guard.refusal(ip, { plainHttp: true }), ip).toBeUndefined();
    }
    for (const ip of [
      '127.0.0.2',
      '169.254.169.254',
      '172.16.0.1',
      '::ffff:127.0.0.2',
      '::2',
      // Embeddings other than mapped reach another host (a translator or relay).
      '64:ff9b::a00:1',
      '::a00:1',
      '2002:a00:1::',
      'fd00:ec3::1',
    ]) {
      expect(guard.refusal(ip), ip).toBeDefined();
    }
  });

  it('https reaches public addresses; plain http only the allowed networks', () => {
    const guard = new AddressGuard(['10.0.0.0/8']);
    for (const ip of ['93.184.216.34', '2606:4700::1', '::ffff:93.184.216.34']) {
      expect(guard.refusal(ip), ip).toBeUndefined();
      expect(guard.refusal(ip, { plainHttp: true }), ip).toMatch(/plain http/);
    }
    expect(guard.refusal('10.1.1.1', { plainHttp: true })).toBeUndefined();
  });

  it('the DNS guard applies them: every address of the name must pass', async () => {
    const resolve = (lookup: ReturnType<typeof guardedLookup>, all: boolean) =>
      new Promise<{ err: Error | null; address: unknown }>((done) =>
        lookup('internal.test', { all }, (err, address) => done({ err, address })),
      );
    const guard = new AddressGuard(['10.0.0.0/8', 'fd00::/8']);
    fakeDns.set('internal.test', ['10.0.0.7', 'fd00::7']);
    expect(await resolve(guardedLookup(guard, true), false)).toEqual({
      err: null,
      address: '10.0.0.7',
    });
    expect(await resolve(guardedLookup(guard, false), true)).toEqual({
      err: null,
      address: [
        { address: '10.0.0.7', family: 4 },
        { address: 'fd00::7', family: 6 },
      ],
    });
    // One address outside them refuses the name, whichever the socket would pick.
    fakeDns.set('internal.test', ['10.0.0.7', '192.168.0.7']);
    const { err } = await resolve(guardedLookup(guard, false), false);
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err?.message).toMatch(/192\.168\.0\.7.*private/);
    // A public address passes over https, not over plain http.
    fakeDns.set('internal.test', ['2606:4700::1']);
    expect((await resolve(guardedLookup(guard, false), false)).err).toBeNull();
    expect((await resolve(guardedLookup(guard, true), false)).err?.message).toMatch(/plain http/);
  });
});

describe('http operator: the guard before any connection', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((_req, res) => res.end('inside'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const ctx: OperatorContext = {
    dagId: 'd',
    runId: 'r',
    task: { taskId: 't' } as Task,
    attempt: 1,
    signal: new AbortController().signal,
    log: () => {},
    runInputs: async () => ({ conf: {}, params: {} }),
  };

  it('refuses URL spellings of refused addresses for good', async () => {
    for (const host of [
      '[::ffff:127.0.0.1]',
      '[::ffff:7f00:1]',
      '[0:0:0:0:0:FFFF:7F00:1]',
      '[::127.0.0.1]',
      '[64:ff9b::169.254.169.254]',
      '[2002:a9fe:a9fe::]',
      '[2001:0:4136:e378:8000:63bf:80ff:fffe]',
      '[fd00:ec2::254]',
      '0x7f.1',
      '0177.0.0.1',
      '2130706433',
      '169.254.169.254.',
    ]) {
      const run = httpOperator.run(httpOperator.config.parse({ url: `https://${host}/` }), ctx);
      await expect(run, host).rejects.toBeInstanceOf(UnrecoverableError);
      await expect(run, host).rejects.toThrow(/refused to connect/);
    }
  });

  it('reaches a server by a name that resolves into an allowed network', async () => {
    fakeDns.set('service.internal.test', ['127.0.0.1']);
    const url = `http://service.internal.test:${port}/`;
    const allowed = createHttpOperator({ allowedNetworks: ['127.0.0.0/8'] });
    expect(await allowed.run(allowed.config.parse({ url }), ctx)).toEqual({
      status: 200,
      body: 'inside',
    });
    const closed = createHttpOperator();
    await expect(closed.run(closed.config.parse({ url }), ctx)).rejects.toBeInstanceOf(
      UnrecoverableError,
    );
  });
});
