// fast-check generators for libvirt networks that are well-formed XML in every
// address form a user (or libvirt) can write: IPv4 with host bits set, netmask
// or classful prefixes; IPv6 upper-case, zero-padded, compressed at any zero
// run, with a dotted IPv4 tail, IPv4-mapped and IPv4-compatible; every forward
// mode, <nat ipv6='yes'>, <forward dev>, NAT address and port ranges; names
// written with XML entities. Each generated network carries an oracle: the
// field the parser must refuse, computed here from the generated numbers (not
// with src/net/ip.ts), or nothing when it must be accepted.
// Used by test/integration/convergence.test.ts (real nft) and the unit tests.
import fc from 'fast-check';

// ---- address values and their spellings -------------------------------------------

const V4_BITS = 32n;
const V6_BITS = 128n;

/** Reserved blocks a network address must not fall into or overlap, in the order the parser reports them. */
export const SPECIAL_V4: ReadonlyArray<{ kind: string; value: bigint; prefix: number }> = [
  { kind: 'unspecified', value: 0n, prefix: 32 },
  { kind: 'loopback', value: 0x7f000000n, prefix: 8 },
  { kind: 'multicast', value: 0xe0000000n, prefix: 4 },
  { kind: 'broadcast', value: 0xffffffffn, prefix: 32 },
];
export const SPECIAL_V6: ReadonlyArray<{ kind: string; value: bigint; prefix: number }> = [
  { kind: 'unspecified', value: 0n, prefix: 128 },
  { kind: 'loopback', value: 1n, prefix: 128 },
  { kind: 'IPv4-compatible', value: 0n, prefix: 96 },
  { kind: 'IPv4-mapped', value: 0xffffn << 32n, prefix: 96 },
  { kind: 'multicast', value: 0xffn << 120n, prefix: 8 },
];

function range(value: bigint, prefix: number, bits: bigint): [bigint, bigint] {
  const host = (1n << (bits - BigInt(prefix))) - 1n;
  const low = value & ~host & ((1n << bits) - 1n);
  return [low, low | host];
}

/** The first reserved block that holds `value`, else the first that overlaps value/prefix. */
export function specialKind(family: 4 | 6, value: bigint, prefix: number): string | undefined {
  const bits = family === 4 ? V4_BITS : V6_BITS;
  const blocks = family === 4 ? SPECIAL_V4 : SPECIAL_V6;
  const [lo, hi] = range(value, prefix, bits);
  for (const b of blocks) {
    const [blo, bhi] = range(b.value, b.prefix, bits);
    if (value >= blo && value <= bhi) return b.kind;
  }
  for (const b of blocks) {
    const [blo, bhi] = range(b.value, b.prefix, bits);
    if (lo <= bhi && blo <= hi) return b.kind;
  }
  return undefined;
}

export function v4Text(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
}

/** How to spell one IPv6 value; every choice is a valid RFC 4291 text form. */
export interface V6Spelling {
  /** Which run of zero groups to write as `::` (index into the runs, modulo), or none. */
  compress: number | undefined;
  pad: boolean;
  upper: boolean;
  dotted: boolean;
}

export function v6Text(value: bigint, sp: V6Spelling): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  const hexCount = sp.dotted ? 6 : 8;
  const hex = groups.slice(0, hexCount).map((g) => (sp.pad ? g.toString(16).padStart(4, '0') : g.toString(16)));
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < hexCount;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < hexCount && groups[j] === 0) j++;
    runs.push([i, j]);
    i = j;
  }
  let head: string;
  if (sp.compress === undefined || runs.length === 0) {
    head = hex.join(':');
  } else {
    const [a, b] = runs[sp.compress % runs.length]!;
    const left = hex.slice(0, a).join(':');
    const right = hex.slice(b).join(':');
    head = `${left}::${right}`;
  }
  let text = head;
  if (sp.dotted) {
    const tail = v4Text(value & 0xffffffffn);
    text = head.endsWith('::') ? `${head}${tail}` : `${head}:${tail}`;
  }
  return sp.upper ? text.toUpperCase() : text;
}

const v6SpellingArb: fc.Arbitrary<V6Spelling> = fc.record({
  compress: fc.option(fc.nat(7), { nil: undefined, freq: 4 }),
  pad: fc.boolean(),
  upper: fc.boolean(),
  dotted: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

const u32 = fc.integer({ min: 0, max: 0xffffffff }).map(BigInt);
const octetsV4 = (...fixed: number[]): fc.Arbitrary<bigint> =>
  fc
    .array(fc.integer({ min: 0, max: 255 }), { minLength: 4 - fixed.length, maxLength: 4 - fixed.length })
    .map((rest) => [...fixed, ...rest].reduce((acc, o) => (acc << 8n) | BigInt(o), 0n));

export const v4ValueArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 6, arbitrary: octetsV4(192, 168) },
  { weight: 4, arbitrary: octetsV4(10) },
  { weight: 2, arbitrary: octetsV4(172, 16) },
  { weight: 3, arbitrary: u32 },
  { weight: 1, arbitrary: octetsV4(127) },
  { weight: 1, arbitrary: octetsV4(0) },
  { weight: 1, arbitrary: fc.constantFrom(0n, 0xffffffffn, 0xe0000001n, 0xefffffffn, 0x7f000001n) },
);

/** A 16-bit group, zero often so that zero runs of every length and position occur. */
const groupArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(0) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 0xff }) },
);
const groupsValue = (groups: number[]): bigint => groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);

const firstGroupArb = fc.oneof(
  fc.constantFrom(0x2001, 0xfe80, 0x100),
  fc.integer({ min: 0, max: 0xff }).map((x) => 0xfd00 | x),
  fc.integer({ min: 1, max: 0xfeff }),
);

export const v6ValueArb: fc.Arbitrary<bigint> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc
      .tuple(firstGroupArb, fc.array(groupArb, { minLength: 7, maxLength: 7 }))
      .map(([g0, rest]) => groupsValue([g0, ...rest])),
  },
  { weight: 1, arbitrary: fc.array(groupArb, { minLength: 8, maxLength: 8 }).map(groupsValue) },
  { weight: 1, arbitrary: v4ValueArb.map((v4) => (0xffffn << 32n) | v4) }, // IPv4-mapped
  { weight: 1, arbitrary: v4ValueArb }, // IPv4-compatible (and :: and ::1)
  { weight: 1, arbitrary: v4ValueArb.map((v4) => (0x64ff9bn << 96n) | v4) }, // NAT64: an ordinary prefix
  {
    weight: 1,
    arbitrary: fc.constantFrom(0n, 1n, (0xff02n << 112n) | 1n, (0xfe80n << 112n) | 1n, 0x20010db8n << 96n),
  },
);

// ---- networks ------------------------------------------------------------------------

export type IpRecipe =
  | { family: 4; value: bigint; how: 'prefix' | 'netmask' | 'classful'; prefix: number; tftp: boolean; dhcp: boolean }
  | { family: 6; value: bigint; how: 'prefix' | 'default'; prefix: number; spelling: V6Spelling; dhcp: boolean };

const v4PrefixArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 16, max: 30 }) },
  { weight: 3, arbitrary: fc.integer({ min: 8, max: 32 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) },
);
const v6PrefixArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(64) },
  { weight: 4, arbitrary: fc.integer({ min: 16, max: 128 }) },
  { weight: 2, arbitrary: fc.integer({ min: 96, max: 128 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 15 }) },
);

export const ipRecipeArb: fc.Arbitrary<IpRecipe> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      family: fc.constant(4 as const),
      value: v4ValueArb,
      how: fc.constantFrom('prefix' as const, 'prefix' as const, 'netmask' as const, 'classful' as const),
      prefix: v4PrefixArb,
      tftp: fc.boolean(),
      dhcp: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      family: fc.constant(6 as const),
      value: v6ValueArb,
      how: fc.constantFrom('prefix' as const, 'prefix' as const, 'prefix' as const, 'default' as const),
      prefix: v6PrefixArb,
      spelling: v6SpellingArb,
      dhcp: fc.boolean(),
    }),
  },
);

/** Network names as written in the XML, with the name libvirt (and the config) means by it, or the refusal. */
export interface NameRecipe {
  raw: (i: number) => string;
  /** The decoded name, or undefined when the parser must refuse it. */
  decoded: ((i: number) => string) | undefined;
}

const NAMES: NameRecipe[] = [
  { raw: (i) => `cn${i}`, decoded: (i) => `cn${i}` },
  { raw: (i) => `a&amp;b${i}`, decoded: (i) => `a&b${i}` },
  { raw: (i) => `&lt;x&gt;&#233;${i}`, decoded: (i) => `<x>é${i}` },
  { raw: (i) => `smile&#x1F642;${i}`, decoded: (i) => `smile🙂${i}` },
  { raw: (i) => `ünï-cødé${i}`, decoded: (i) => `ünï-cødé${i}` },
  { raw: (i) => `${'n'.repeat(130)}${i}`, decoded: (i) => `${'n'.repeat(130)}${i}` },
  { raw: (i) => `x&#x202E;y${i}`, decoded: undefined }, // right-to-left override
  { raw: (i) => `x\u2067y${i}`, decoded: undefined }, // first-strong isolate, written literally
  { raw: (i) => `x&#8232;y${i}`, decoded: undefined }, // line separator
  { raw: (i) => `x&#x85;y${i}`, decoded: undefined }, // C1 control (NEL)
  { raw: (i) => `x&#9;y${i}`, decoded: undefined }, // tab
  { raw: (i) => `x&quot;y${i}`, decoded: undefined },
  { raw: (i) => `x&nbsp;y${i}`, decoded: undefined }, // not an XML entity
  { raw: (i) => `x&#0;y${i}`, decoded: undefined }, // not an XML character
];

export interface NetRecipe {
  name: number;
  mode: 'nat' | 'route' | 'open' | 'isolated';
  acceptOpen: boolean;
  natIpv6: boolean;
  dev: string | undefined;
  natAddress: { start: bigint; size: 'one' | 'block' | 'any'; bits: number } | undefined;
  natPorts: { start: number; length: number } | undefined;
  dnsOff: boolean;
  ips: IpRecipe[];
}

export const netRecipeArb: fc.Arbitrary<NetRecipe> = fc.record({
  name: fc.oneof(
    { weight: 9, arbitrary: fc.integer({ min: 0, max: 5 }) },
    { weight: 1, arbitrary: fc.integer({ min: 6, max: NAMES.length - 1 }) },
  ),
  mode: fc.constantFrom('nat' as const, 'nat' as const, 'route' as const, 'open' as const, 'isolated' as const),
  acceptOpen: fc.boolean(),
  natIpv6: fc.boolean(),
  dev: fc.option(fc.constantFrom('eth0', 'uplink', 'en-p1s0.7'), { nil: undefined, freq: 3 }),
  natAddress: fc.option(
    fc.record({
      start: fc.oneof({ weight: 6, arbitrary: octetsV4(198, 51, 100) }, { weight: 1, arbitrary: v4ValueArb }),
      size: fc.constantFrom('one' as const, 'block' as const, 'any' as const),
      bits: fc.integer({ min: 0, max: 8 }),
    }),
    { nil: undefined, freq: 3 },
  ),
  natPorts: fc.option(
    fc.record({
      start: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom(1, 1024, 65535)),
      length: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 70000 })),
    }),
    { nil: undefined, freq: 3 },
  ),
  dnsOff: fc.boolean(),
  ips: fc.oneof(
    { weight: 1, arbitrary: fc.constant<IpRecipe[]>([]) },
    { weight: 7, arbitrary: fc.array(ipRecipeArb, { minLength: 1, maxLength: 2 }) },
    { weight: 1, arbitrary: fc.array(ipRecipeArb, { minLength: 3, maxLength: 3 }) },
  ),
});

export interface GeneratedNetwork {
  xml: string;
  origin: string;
  bridge: string;
  /** The decoded network name (the origin when the name itself is refused). */
  name: string;
  mode: NetRecipe['mode'];
  acceptOpen: boolean;
  /** The field the parser must name when it refuses this network, and a word its message must contain. */
  refuse: { field: string; word?: string } | undefined;
}

const NETMASK = (prefix: number): string => v4Text(((1n << 32n) - 1n) ^ ((1n << BigInt(32 - prefix)) - 1n));

function classful(value: bigint): number | undefined {
  const first = Number(value >> 24n);
  return first < 128 ? 8 : first < 192 ? 16 : first < 224 ? 24 : undefined;
}

/** Serialises recipe `i` of a batch: names and bridges are unique within the batch. */
export function buildNetwork(r: NetRecipe, i: number): GeneratedNetwork {
  const nameRecipe = NAMES[r.name]!;
  const origin = `net-${i}.xml`;
  const bridge = `cvb${i}`;
  let refuse: GeneratedNetwork['refuse'] = nameRecipe.decoded === undefined ? { field: 'name' } : undefined;
  const fail = (field: string, word?: string): void => {
    refuse ??= word === undefined ? { field } : { field, word };
  };
  const natRange = r.mode === 'nat' && r.natAddress ? natAddressRange(r.natAddress) : undefined;
  const lines = [`<network>`, `  <name>${nameRecipe.raw(i)}</name>`];
  if (r.mode !== 'isolated') {
    const attrs = [`mode='${r.mode}'`, ...(r.dev !== undefined ? [`dev='${r.dev}'`] : [])].join(' ');
    const nat: string[] = [];
    if (r.mode === 'nat') {
      if (natRange) nat.push(`<address start='${v4Text(natRange[0])}' end='${v4Text(natRange[1])}'/>`);
      if (r.natPorts) {
        const end = Math.min(65535, r.natPorts.start + r.natPorts.length);
        nat.push(`<port start='${r.natPorts.start}' end='${end}'/>`);
      }
    }
    const natAttr = r.mode === 'nat' && r.natIpv6 ? ` ipv6='yes'` : '';
    const natEl = r.mode === 'nat' && (nat.length > 0 || natAttr !== '') ? `<nat${natAttr}>${nat.join('')}</nat>` : '';
    lines.push(`  <forward ${attrs}>${natEl}</forward>`);
  }
  lines.push(`  <bridge name='${bridge}' stp='on' delay='0'/>`);
  if (r.dnsOff) lines.push(`  <dns enable='no'/>`);
  r.ips.forEach((ip, k) => {
    const field = `ip[${k + 1}]`;
    if (ip.family === 4) {
      let prefix: number | undefined = ip.prefix;
      let spec = ` prefix='${ip.prefix}'`;
      let prefixField = `${field}/@prefix`;
      if (ip.how === 'netmask') {
        spec = ` netmask='${NETMASK(ip.prefix)}'`;
        prefixField = `${field}/@netmask`;
      } else if (ip.how === 'classful') {
        spec = '';
        prefix = classful(ip.value);
        if (prefix === undefined) fail(`${field}/@address`);
      }
      if (prefix !== undefined) {
        if (prefix < 8) fail(prefixField);
        const kind = specialKind(4, ip.value, prefix);
        if (kind !== undefined) fail(`${field}/@address`, kind);
      }
      const inner = [
        ...(ip.dhcp ? [`<dhcp><range start='${v4Text(ip.value)}' end='${v4Text(ip.value)}'/></dhcp>`] : []),
        ...(ip.tftp ? [`<tftp root='/srv/tftp'/>`] : []),
      ].join('');
      lines.push(`  <ip address='${v4Text(ip.value)}'${spec}>${inner}</ip>`);
    } else {
      const prefix = ip.how === 'default' ? 64 : ip.prefix;
      if (prefix < 16) fail(`${field}/@prefix`);
      else {
        const kind = specialKind(6, ip.value, prefix);
        if (kind !== undefined) fail(`${field}/@address`, kind);
      }
      const text = v6Text(ip.value, ip.spelling);
      const spec = ip.how === 'default' ? '' : ` prefix='${ip.prefix}'`;
      const dhcp = ip.dhcp ? `<dhcp><range start='${text}' end='${text}'/></dhcp>` : '';
      lines.push(`  <ip family='ipv6' address='${text}'${spec}>${dhcp}</ip>`);
    }
  });
  if (natRange) {
    const [start, end] = natRange;
    const startKind = specialKind(4, start, 32);
    const endKind = specialKind(4, end, 32);
    if (startKind !== undefined) fail('forward/nat/address/@start', startKind);
    else if (endKind !== undefined) fail('forward/nat/address/@end', endKind);
    else if (SPECIAL_V4.some((x) => rangeOverlaps(start, end, x.value, x.prefix))) fail('forward/nat/address');
  }
  lines.push('</network>');
  const name = nameRecipe.decoded?.(i) ?? origin;
  return { xml: lines.join('\n'), origin, bridge, name, mode: r.mode, acceptOpen: r.acceptOpen, refuse };
}

/** start-end: one address, an aligned block of 2^bits addresses, or any run. */
function natAddressRange(a: NonNullable<NetRecipe['natAddress']>): [bigint, bigint] {
  if (a.size === 'one') return [a.start, a.start];
  if (a.size === 'block') {
    const start = a.start & ~((1n << BigInt(a.bits)) - 1n);
    return [start, start | ((1n << BigInt(a.bits)) - 1n)];
  }
  const end = a.start + BigInt(a.bits * 37);
  return [a.start, end > 0xffffffffn ? 0xffffffffn : end];
}

function rangeOverlaps(start: bigint, end: bigint, value: bigint, prefix: number): boolean {
  const [lo, hi] = range(value, prefix, V4_BITS);
  return start <= hi && lo <= end;
}

/** A batch of networks with unique names and bridges, at least `min` of them. */
export const networkBatchArb = (min: number, max: number): fc.Arbitrary<GeneratedNetwork[]> =>
  fc.array(netRecipeArb, { minLength: min, maxLength: max, size: 'max' }).map((rs) => rs.map(buildNetwork));
