// Address arithmetic for the subnets libvirt hands us. nft prints addresses
// in canonical form (RFC 5952 for IPv6), so we produce the same form: the
// planner compares its output with `nft -j list ruleset` textually.
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address, canonical text (host bits cleared). */
  network: string;
  prefix: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export function ipFamily(text: string): Family | undefined {
  if (isIPv4(text)) return 4;
  if (isIPv6(text) && !text.includes('%')) return 6;
  return undefined;
}

export function parseIp(text: string): { family: Family; value: bigint } | undefined {
  const family = ipFamily(text);
  if (family === 4) {
    return { family, value: text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n) };
  }
  if (family === 6) return { family, value: parseIPv6(text) };
  return undefined;
}

function parseIPv6(text: string): bigint {
  let head = text;
  let tail4: bigint | undefined;
  // Embedded IPv4 tail (::ffff:1.2.3.4).
  const lastColon = text.lastIndexOf(':');
  const maybe4 = text.slice(lastColon + 1);
  if (isIPv4(maybe4)) {
    tail4 = parseIp(maybe4)?.value;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const [left = '', right] = head.split('::');
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [...leftGroups, ...Array<string>(right === undefined ? 0 : missing).fill('0'), ...rightGroups];
  let value = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tail4 !== undefined) value = (value & ~0xffffffffn) | tail4;
  return value;
}

/**
 * An address as nft prints it: nft formats IPv6 with glibc's inet_ntop, which
 * follows RFC 5952 (lower case, the longest run of two or more zero groups as
 * `::`, the first on ties) and writes IPv4-mapped (`::ffff:0:0/96`) and
 * IPv4-compatible (`::/96`, other than `::` and `::1`) addresses with a dotted
 * IPv4 tail. Measured with nft 1.0.6: `::ffff:a00:0` lists as `::ffff:10.0.0.0`.
 */
export function formatIp(family: Family, value: bigint): string {
  if (family === 4) return formatIpv4(value);
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  // inet_ntop's test for an embedded IPv4 address, word for word.
  if (bestStart === 0 && (bestLen === 6 || (bestLen === 5 && groups[5] === 0xffff))) {
    return `::${bestLen === 5 ? 'ffff:' : ''}${formatIpv4(value & 0xffffffffn)}`;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

export function maskOf(family: Family, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return (all >> BigInt(prefix)) ^ all;
}

export function isValidPrefix(family: Family, prefix: number): boolean {
  return Number.isInteger(prefix) && prefix >= 0 && prefix <= BITS[family];
}

/** Converts a dotted netmask to a prefix length; undefined if the mask is not contiguous. */
export function netmaskToPrefix(mask: string): number | undefined {
  const parsed = parseIp(mask);
  if (!parsed || parsed.family !== 4) return undefined;
  for (let prefix = 0; prefix <= 32; prefix++) {
    if (maskOf(4, prefix) === parsed.value) return prefix;
  }
  return undefined;
}

export function cidrOf(address: string, prefix: number): Cidr | undefined {
  const parsed = parseIp(address);
  if (!parsed || !isValidPrefix(parsed.family, prefix)) return undefined;
  return {
    family: parsed.family,
    network: formatIp(parsed.family, parsed.value & maskOf(parsed.family, prefix)),
    prefix,
  };
}

export function canonicalIp(text: string): string | undefined {
  const parsed = parseIp(text);
  return parsed ? formatIp(parsed.family, parsed.value) : undefined;
}

/**
 * An address range that is exactly one prefix block (start aligned, 2^n
 * addresses), as nft lists it: `snat to 10.0.0.4-10.0.0.7` reads back as
 * `10.0.0.4/30`. Undefined for any other range, and for a single address.
 */
export function rangeAsCidr(start: string, end: string): Cidr | undefined {
  const a = parseIp(start);
  const b = parseIp(end);
  if (!a || !b || a.family !== b.family || a.value >= b.value) return undefined;
  const bits = BITS[a.family];
  for (let prefix = bits - 1; prefix >= 0; prefix--) {
    const mask = maskOf(a.family, prefix);
    if ((a.value & mask) !== a.value) return undefined; // start not aligned to this block size
    const last = a.value | (~mask & ((1n << BigInt(bits)) - 1n));
    if (last === b.value) return { family: a.family, network: formatIp(a.family, a.value), prefix };
    if (last > b.value) return undefined;
  }
  return undefined;
}

/** The first and last address of network/prefix, e.g. 10.0.0.4/30 -> 10.0.0.4, 10.0.0.7. */
export function cidrBounds(network: string, prefix: number): [string, string] | undefined {
  const parsed = parseIp(network);
  if (!parsed || !isValidPrefix(parsed.family, prefix)) return undefined;
  const [lo, hi] = bounds(parsed.family, parsed.value, prefix);
  return [formatIp(parsed.family, lo), formatIp(parsed.family, hi)];
}

export function cidrText(cidr: Cidr): string {
  return `${cidr.network}/${cidr.prefix}`;
}

/** The shortest prefix a libvirt network may have: anything wider is a typo, never a guest subnet. */
export const MIN_PREFIX: Record<Family, number> = { 4: 8, 6: 16 };

/** Address blocks no guest network can live in, in the order they are reported. */
const RESERVED: Record<Family, ReadonlyArray<{ kind: string; block: string; value: bigint; prefix: number }>> = {
  4: [
    { kind: 'unspecified', block: '0.0.0.0', value: 0n, prefix: 32 },
    { kind: 'loopback', block: '127.0.0.0/8', value: 0x7f000000n, prefix: 8 },
    { kind: 'multicast', block: '224.0.0.0/4', value: 0xe0000000n, prefix: 4 },
    { kind: 'broadcast', block: '255.255.255.255', value: 0xffffffffn, prefix: 32 },
  ],
  6: [
    { kind: 'unspecified', block: '::', value: 0n, prefix: 128 },
    { kind: 'loopback', block: '::1', value: 1n, prefix: 128 },
    { kind: 'IPv4-compatible', block: '::/96', value: 0n, prefix: 96 },
    { kind: 'IPv4-mapped', block: '::ffff:0:0/96', value: 0xffffn << 32n, prefix: 96 },
    { kind: 'multicast', block: 'ff00::/8', value: 0xffn << 120n, prefix: 8 },
  ],
};

export interface ReservedHit {
  /** unspecified, loopback, multicast, broadcast, IPv4-compatible, IPv4-mapped */
  kind: string;
  /** The reserved block as text, e.g. `::ffff:0:0/96`. */
  block: string;
  /** Whether the address itself lies in the block, or only the range address/prefix overlaps it. */
  address: boolean;
}

function bounds(family: Family, value: bigint, prefix: number): [bigint, bigint] {
  const mask = maskOf(family, prefix);
  return [value & mask, (value & mask) | (~mask & maskOf(family, BITS[family]))];
}

/**
 * The reserved block (loopback, multicast, unspecified, broadcast; for IPv6
 * also IPv4-mapped and IPv4-compatible) that the address lies in, or else the
 * first one its network address/prefix overlaps; undefined for a usable network.
 */
export function reservedHit(address: string, prefix: number): ReservedHit | undefined {
  const parsed = parseIp(address);
  if (!parsed || !isValidPrefix(parsed.family, prefix)) return undefined;
  const blocks = RESERVED[parsed.family];
  const [lo, hi] = bounds(parsed.family, parsed.value, prefix);
  for (const address of [true, false]) {
    for (const b of blocks) {
      const [blo, bhi] = bounds(parsed.family, b.value, b.prefix);
      const hit = address ? parsed.value >= blo && parsed.value <= bhi : lo <= bhi && blo <= hi;
      if (hit) return { kind: b.kind, block: b.block, address };
    }
  }
  return undefined;
}

/** Like reservedHit, for an address range start-end (same family, start <= end): where the range meets a block. */
export function reservedInRange(
  start: string,
  end: string,
): (ReservedHit & { where: 'start' | 'end' | 'inside' }) | undefined {
  const a = parseIp(start);
  const b = parseIp(end);
  if (!a || !b || a.family !== b.family) return undefined;
  const full = BITS[a.family];
  const atStart = reservedHit(start, full);
  if (atStart) return { ...atStart, where: 'start' };
  const atEnd = reservedHit(end, full);
  if (atEnd) return { ...atEnd, where: 'end' };
  for (const block of RESERVED[a.family]) {
    const [blo, bhi] = bounds(a.family, block.value, block.prefix);
    if (a.value <= bhi && blo <= b.value)
      return { kind: block.kind, block: block.block, address: false, where: 'inside' };
  }
  return undefined;
}

/** Whether `outer` holds every address of `inner` (same family). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.prefix > inner.prefix) return false;
  const o = parseIp(outer.network);
  const i = parseIp(inner.network);
  return o !== undefined && i !== undefined && (i.value & maskOf(outer.family, outer.prefix)) === o.value;
}
