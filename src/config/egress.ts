// The entries of a network's `host_services` and `egress` lists ([networks.<name>]): their one syntax, parsed
// into typed values. Pure. The schema (schema.ts) keeps them as the strings written, checks each with these
// parsers (errors name the entry: `networks.lab.egress[2]`), and the planner (nft/policy.ts) parses them again.
//
//   host_services   PROTO/PORT        "tcp/22", "udp/5353", "tcp/8000-8010"
//   egress          DEST              "10.0.0.0/8", "203.0.113.7", "2001:db8::/32"  any protocol to DEST
//                   PROTO/PORT        "tcp/443", "udp/8000-8010"                    that port, anywhere
//                   DEST:PROTO/PORT   "203.0.113.7:tcp/25", "[2001:db8::1]:tcp/25"  both (IPv6 DEST in [])
import type { Cidr } from '../net/ip.js';
import { PROTOCOLS, sourceCidr, type Protocol } from './port-forward.js';
import type { PortRange } from './kinds.js';

/** A protocol and a port range: one of `host_services`, or the port part of an `egress` entry. */
export interface Service {
  proto: Protocol;
  ports: PortRange;
}

/** One `egress` entry: a destination, a service, or both (never neither). */
export interface EgressEntry {
  dest?: Cidr;
  service?: Service;
}

export const SERVICE_SYNTAX = '"tcp/PORT" or "udp/PORT", PORT a port 1-65535 or a range "A-B"';
export const EGRESS_SYNTAX =
  'a destination ("10.0.0.0/8", "203.0.113.7", "2001:db8::/32"), a service ("tcp/443", "udp/8000-8010") ' +
  'or both ("203.0.113.7:tcp/25", "[2001:db8::1]:tcp/25")';

const SERVICE = /^(tcp|udp)\/([0-9]{1,5})(?:-([0-9]{1,5}))?$/;

/** `tcp/22`, `udp/8000-8010`; undefined when not that syntax or a port is out of range. */
export function parseService(text: string): Service | undefined {
  const match = SERVICE.exec(text);
  if (!match) return undefined;
  const proto = match[1] as Protocol;
  const start = Number(match[2]);
  const end = match[3] === undefined ? start : Number(match[3]);
  if (!PROTOCOLS.includes(proto) || start < 1 || end > 65535 || start > end) return undefined;
  return { proto, ports: { start, end } };
}

/** An `egress` entry; undefined when it is none of the three forms. */
export function parseEgress(text: string): EgressEntry | undefined {
  const service = parseService(text);
  if (service) return { service };
  // DEST:PROTO/PORT, the service being the part after the last ':' (an IPv6 DEST is written in brackets).
  const bracketed = /^\[([^\]]+)\]:(.+)$/.exec(text);
  if (bracketed) {
    const dest = sourceCidr(bracketed[1]!);
    const svc = parseService(bracketed[2]!);
    return dest?.family === 6 && svc ? { dest, service: svc } : undefined;
  }
  const colon = text.lastIndexOf(':');
  if (colon > 0 && text.indexOf(':') === colon) {
    const dest = sourceCidr(text.slice(0, colon));
    const svc = parseService(text.slice(colon + 1));
    return dest?.family === 4 && svc ? { dest, service: svc } : undefined;
  }
  const dest = sourceCidr(text);
  return dest ? { dest } : undefined;
}

/** An entry as the config writes it (the canonical form), for notes and doctor. */
export function egressText(e: EgressEntry): string {
  const svc = e.service ? serviceText(e.service) : undefined;
  if (!e.dest) return svc ?? '';
  const full = e.dest.family === 4 ? 32 : 128;
  const dest = e.dest.prefix === full ? e.dest.network : `${e.dest.network}/${e.dest.prefix}`;
  if (!svc) return dest;
  return e.dest.family === 6 ? `[${dest}]:${svc}` : `${dest}:${svc}`;
}

export function serviceText(s: Service): string {
  return `${s.proto}/${s.ports.start === s.ports.end ? s.ports.start : `${s.ports.start}-${s.ports.end}`}`;
}
