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

export function formatIp(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on ties.
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
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
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

export function cidrText(cidr: Cidr): string {
  return `${cidr.network}/${cidr.prefix}`;
}
