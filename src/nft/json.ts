// The slice of libnftables-json(5) kvmnftd writes, with small builders so
// rule templates read like nft rules. Everything is emitted in the exact form
// `nft -j list ruleset` prints back, which is what makes "live == desired"
// a plain structural comparison (see ruleset.ts).
import { rangeAsCidr, type Cidr, type Family } from '../net/ip.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Expr = { [statement: string]: Json };

/** A JSON value as text: strings and numbers as they are, anything else as JSON. */
export function scalar(v: Json | undefined): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v) ?? 'undefined';
}

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'bridge';

export interface TableRef {
  family: NftFamily;
  name: string;
}

export interface BaseChainSpec {
  type: 'filter' | 'nat';
  hook: 'input' | 'forward' | 'postrouting' | 'prerouting' | 'output';
  prio: number;
  policy: 'accept' | 'drop';
}

export interface RuleSpec {
  expr: Expr[];
  comment?: string;
}

export interface ChainObject {
  family: NftFamily;
  table: string;
  name: string;
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
}

export interface RuleObject {
  family: NftFamily;
  table: string;
  chain: string;
  expr?: Expr[];
  comment?: string;
  /**
   * delete, replace: the rule. insert: the rule to insert before (nft refuses
   * a handle that is not in that chain, ENOENT).
   */
  handle?: number;
}

/**
 * An appended rule has no handle: nft (1.0.6 and 1.1.3 measured) ignores a
 * handle in a JSON `add rule` and appends, while `nft add rule ... handle N`
 * in text adds after N and later nft versions follow suit in JSON. kvmnftd
 * positions a rule only with `insert` + handle, which every version honours.
 */
export type AppendedRule = Omit<RuleObject, 'handle'> & { handle?: never };

export type Command =
  | { add: { table: TableRef } }
  | { add: { chain: ChainObject } }
  | { add: { rule: AppendedRule } }
  | { insert: { rule: RuleObject } }
  | { replace: { rule: RuleObject & { handle: number } } }
  | { flush: { chain: ChainObject } }
  | { delete: { chain: ChainObject } }
  | { delete: { table: TableRef } }
  | { delete: { rule: RuleObject } };

export interface Batch {
  nftables: Command[];
}

// ---- expression builders -------------------------------------------------

const match = (op: '==' | '!=' | 'in', left: Json, right: Json): Expr => ({ match: { op, left, right } });
const meta = (key: string): Json => ({ meta: { key } });
const payload = (protocol: string, field: string): Json => ({ payload: { protocol, field } });

export const ipProto = (family: Family): 'ip' | 'ip6' => (family === 4 ? 'ip' : 'ip6');

/** A subnet as nft prints it: a full-length prefix is a plain address. */
export function addrValue(cidr: Cidr): Json {
  const full = cidr.family === 4 ? 32 : 128;
  return cidr.prefix === full ? cidr.network : { prefix: { addr: cidr.network, len: cidr.prefix } };
}

export const m = {
  iifname: (name: string): Expr => match('==', meta('iifname'), name),
  oifname: (name: string): Expr => match('==', meta('oifname'), name),
  l4proto: (proto: 'tcp' | 'udp'): Expr => match('==', meta('l4proto'), proto),
  saddr: (cidr: Cidr): Expr => match('==', payload(ipProto(cidr.family), 'saddr'), addrValue(cidr)),
  daddr: (cidr: Cidr): Expr => match('==', payload(ipProto(cidr.family), 'daddr'), addrValue(cidr)),
  daddrNot: (cidr: Cidr): Expr => match('!=', payload(ipProto(cidr.family), 'daddr'), addrValue(cidr)),
  dport: (proto: 'tcp' | 'udp', port: number): Expr => match('==', payload(proto, 'dport'), port),
  icmpv6Types: (types: string[]): Expr => match('==', payload('icmpv6', 'type'), { set: types }),
  ctState: (...states: string[]): Expr =>
    match('in', { ct: { key: 'state' } }, states.length === 1 ? states[0]! : states),
  /** `oifname "a"`, or `oifname { "a", "b" }` for several names. */
  oifnames: (names: readonly string[]): Expr =>
    match('==', meta('oifname'), names.length === 1 ? names[0]! : { set: [...names] }),
  /** `tcp dport 22`, `udp dport 8000-8010`. */
  dports: (proto: 'tcp' | 'udp', ports: { start: number; end: number }): Expr =>
    match('==', payload(proto, 'dport'), portValue(ports)),
  /** `ip saddr 198.51.100.0/24`, or an anonymous set `ip saddr { ... }` for several. */
  saddrs: (cidrs: readonly Cidr[]): Expr =>
    match(
      '==',
      payload(ipProto(cidrs[0]!.family), 'saddr'),
      cidrs.length === 1 ? addrValue(cidrs[0]!) : { set: cidrs.map(addrValue) },
    ),
  /** `fib daddr type local`: addressed to one of the host's own addresses. */
  localDaddr: (): Expr => match('==', { fib: { result: 'type', flags: ['daddr'] } }, 'local'),
  /** `ct status dnat`: the connection's destination was translated. */
  ctDnat: (): Expr => match('in', { ct: { key: 'status' } }, 'dnat'),
  /** `meta mark & BIT == BIT`: the bit is set. */
  markBit: (bit: number): Expr => match('==', { '&': [meta('mark'), bit] }, bit),
  /** `oifname != "a"`. */
  oifnameNot: (name: string): Expr => match('!=', meta('oifname'), name),
  /** `ct direction original` / `reply`. */
  ctDirection: (dir: 'original' | 'reply'): Expr => match('==', { ct: { key: 'direction' } }, dir),
  /** `meta nfproto ipv4` / `ipv6`. */
  nfproto: (family: Family): Expr => match('==', meta('nfproto'), family === 4 ? 'ipv4' : 'ipv6'),
  /**
   * `ip daddr != 10.0.0.0/8`, or `ip daddr != { ... }` for several: `values` are addresses, prefixes or ranges
   * already merged as nft merges an interval set (a set of one is listed as its element).
   */
  daddrsNot: (family: Family, values: readonly Json[]): Expr =>
    match('!=', payload(ipProto(family), 'daddr'), values.length === 1 ? values[0]! : { set: [...values] }),
  /** `meta l4proto . th dport != { tcp . 443, udp . 8000-8010 }` (a concatenation's set stays a set). */
  servicesNot: (services: readonly L4Service[]): Expr =>
    match(
      '!=',
      { concat: [meta('l4proto'), payload('th', 'dport')] },
      {
        set: services.map((x) => ({ concat: [x.proto, portValue(x.ports)] })),
      },
    ),
  /** `ip daddr . meta l4proto . th dport != { 203.0.113.7 . tcp . 25 }`; all of one family. */
  destServicesNot: (family: Family, entries: ReadonlyArray<{ dest: Cidr; service: L4Service }>): Expr =>
    match(
      '!=',
      { concat: [payload(ipProto(family), 'daddr'), meta('l4proto'), payload('th', 'dport')] },
      {
        set: entries.map((e) => ({ concat: [addrValue(e.dest), e.service.proto, portValue(e.service.ports)] })),
      },
    ),
};

/** A protocol and a port range (config/egress.ts's Service). */
export interface L4Service {
  proto: 'tcp' | 'udp';
  ports: { start: number; end: number };
}

/** A port range as nft lists it: one port is a number. */
function portValue(r: { start: number; end: number }): Json {
  return r.start === r.end ? r.start : { range: [r.start, r.end] };
}

/** All 32 bits of a packet mark: `~bit` as nft writes it, an unsigned number. */
const MARK_BITS = 0xffff_ffff;

export const s = {
  counter: (): Expr => ({ counter: null }),
  accept: (): Expr => ({ accept: null }),
  drop: (): Expr => ({ drop: null }),
  /** `limit rate RATE/second burst BURST packets`. */
  limit: (rate: number, burst: number): Expr => ({ limit: { rate, burst, per: 'second' } }),
  /** `log prefix "..."`. */
  log: (prefix: string): Expr => ({ log: { prefix } }),
  return: (): Expr => ({ return: null }),
  jump: (target: string): Expr => ({ jump: { target } }),
  /** `meta mark set meta mark | BIT`. */
  markSet: (bit: number): Expr => ({ mangle: { key: meta('mark'), value: { '|': [meta('mark'), bit] } } }),
  /** `meta mark set meta mark & ~BIT`. */
  markClear: (bit: number): Expr => ({
    mangle: { key: meta('mark'), value: { '&': [meta('mark'), (MARK_BITS ^ bit) >>> 0] } },
  }),
  /**
   * `dnat ip to ADDR[:PORT]`. `ports`: absent keeps the port; one port; or a
   * shifted range as the map `PROTO dport map { host : guest, ... }`.
   */
  dnat: (
    family: 'ip' | 'ip6',
    addr: string,
    ports?: { proto: 'tcp' | 'udp'; host: { start: number; end: number }; to: { start: number; end: number } },
  ): Expr => {
    const spec: { [key: string]: Json } = { family, addr };
    if (ports && ports.host.start === ports.host.end) spec['port'] = ports.to.start;
    else if (ports && ports.host.start !== ports.to.start) {
      const pairs: Json[] = [];
      for (let p = ports.host.start; p <= ports.host.end; p++) pairs.push([p, p - ports.host.start + ports.to.start]);
      spec['port'] = { map: { key: payload(ports.proto, 'dport'), data: { set: pairs } } };
    }
    return { dnat: spec };
  },
  masquerade: (ports?: { start: number; end: number }): Expr => ({
    masquerade: ports ? { port: { range: [ports.start, ports.end] } } : null,
  }),
  snat: (family: 'ip' | 'ip6', addr: { start: string; end: string }, ports?: { start: number; end: number }): Expr => {
    const spec: { [key: string]: Json } = { family, addr: snatAddr(addr) };
    if (ports) spec['port'] = { range: [ports.start, ports.end] };
    return { snat: spec };
  },
};

/** A SNAT address range as nft lists it: one address, a prefix when the range is exactly one block, else a range. */
function snatAddr(addr: { start: string; end: string }): Json {
  if (addr.start === addr.end) return addr.start;
  const block = rangeAsCidr(addr.start, addr.end);
  return block ? addrValue(block) : { range: [addr.start, addr.end] };
}
