// Address arithmetic for the subnets libvirt hands us. nft prints addresses
// in canonical form (RFC 5952 for IPv6), so we produce the same form: the
// planner compares its output with `nft -j list ruleset` textually.
export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address, canonical text (host bits cleared). */
  network: string;
  prefix: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export function ipFamily(text: string): Family | undefined {
  return scanIp(text);
}

/**
 * The family of an address, accepting exactly what node:net's isIPv4/isIPv6
 * accept (lib/internal/net.js), except that an IPv6 zone (`%eth0`) is refused:
 * no libvirt subnet carries one. A scan over char codes because node:net's
 * isIPv6 compiles a large regular expression on its first call (4-15 ms per
 * process, on the CLI's critical path).
 */
export function scanIp(text: string): Family | undefined {
  if (scanIpv4(text, 0)) return 4;
  return scanIpv6(text) ? 6 : undefined;
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);

/** Dotted quad from `start` to the end of `text`: four octets 0-255, no leading zeros (node refuses "01"). */
function scanIpv4(text: string, start: number): boolean {
  const end = text.length;
  let i = start;
  for (let octet = 0; octet < 4; octet++) {
    if (octet > 0) {
      if (text.charCodeAt(i) !== 0x2e) return false; // '.'
      i++;
    }
    const from = i;
    let value = 0;
    while (i < end && i - from < 4 && isDigit(text.charCodeAt(i))) value = value * 10 + text.charCodeAt(i++) - 0x30;
    const digits = i - from;
    if (digits === 0 || digits > 3 || value > 255) return false;
    if (digits > 1 && text.charCodeAt(from) === 0x30) return false;
  }
  return i === end;
}

/**
 * node's IPv6 grammar without the zone: groups of 1-4 hex digits; without
 * `::` exactly 8 of them, with one `::` (which stands for at least one group)
 * at most 7; a dotted IPv4 tail counts as two groups and may only end the address.
 */
function scanIpv6(text: string): boolean {
  const end = text.length;
  let i = 0;
  let groups = 0;
  let gap = false;
  if (text.charCodeAt(0) === 0x3a) {
    // A leading ':' only as the start of '::'.
    if (text.charCodeAt(1) !== 0x3a) return false;
    gap = true;
    i = 2;
    if (i === end) return true;
  }
  for (;;) {
    const from = i;
    while (i < end && isHex(text.charCodeAt(i))) i++;
    if (i < end && text.charCodeAt(i) === 0x2e) {
      // Digits then '.': the IPv4 tail, read again from the group's start.
      return (gap ? groups + 2 <= 7 : groups + 2 === 8) && scanIpv4(text, from);
    }
    if (i === from || i - from > 4) return false;
    groups++;
    if (i === end) return gap ? groups <= 7 : groups === 8;
    if (text.charCodeAt(i) !== 0x3a || groups === 8) return false;
    i++;
    if (text.charCodeAt(i) === 0x3a) {
      if (gap) return false;
      gap = true;
      i++;
      if (i === end) return groups <= 7;
    }
  }
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
  if (scanIp(maybe4) === 4) {
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
