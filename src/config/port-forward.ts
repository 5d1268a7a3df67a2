// `[[port_forward]]` entries and `[metadata_forwards]`: the value checks the
// schema's kinds use, and the rules between keys and between forwards
// (families that agree, a to_port range that fits, no two forwards taking
// the same host port). Pure; the planner (src/nft/port-forward.ts) turns
// valid forwards into rules.
import { cidrOf, ipFamily, type Cidr, type Family } from '../net/ip.js';
import type { Config } from './config.js';
import { portRangeText, type PortRange } from './kinds.js';

export type PortForwardConfig = Config['portForward'][number];

export const PROTOCOLS = ['tcp', 'udp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/i;

/** What `to` names: a guest address, a MAC address, or a libvirt domain name. */
export type TargetRef =
  | { kind: 'address'; family: Family; address: string }
  | { kind: 'mac'; mac: string }
  | { kind: 'domain'; name: string };

export function targetRef(to: string): TargetRef {
  const family = ipFamily(to);
  if (family !== undefined) return { kind: 'address', family, address: cidrOf(to, family === 4 ? 32 : 128)!.network };
  if (MAC.test(to)) return { kind: 'mac', mac: to.toLowerCase() };
  return { kind: 'domain', name: to };
}

/**
 * A libvirt domain name (libvirt refuses `/` and control characters), a MAC
 * address or an IP address; no blank at either end.
 */
export function validTarget(to: string): boolean {
  // eslint-disable-next-line no-control-regex
  return to.length > 0 && to.length <= 255 && to.trim() === to && !/[/\u0000-\u001f\u007f]/.test(to);
}

/** A source of `from`: an address or a subnet `ADDR/PREFIX`, as a Cidr (host bits cleared); undefined when neither. */
export function sourceCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const family = ipFamily(text);
    return family === undefined ? undefined : cidrOf(text, family === 4 ? 32 : 128);
  }
  const prefix = text.slice(slash + 1);
  return /^[0-9]{1,3}$/.test(prefix) ? cidrOf(text.slice(0, slash), Number(prefix)) : undefined;
}

/** 127.0.0.0/8 or ::1. */
export function isLoopback(address: string): boolean {
  const c = sourceCidr(address);
  return c !== undefined && (c.family === 4 ? c.network.startsWith('127.') : c.network === '::1');
}

/** Whether domain metadata forwards are on: `[metadata_forwards] host_ports` lists a port (default: none, off). */
export function metadataForwardsOn(config: Pick<Config, 'metadataForwards'>): boolean {
  return config.metadataForwards.hostPorts.length > 0;
}

/** Whether a port forward can exist under this config: a `[[port_forward]]`, or metadata forwards on. */
export function forwardsPossible(config: Pick<Config, 'portForward' | 'metadataForwards'>): boolean {
  return config.portForward.length > 0 || metadataForwardsOn(config);
}

/** The guest port range a forward sends to: to_port's start, as long as host_port. */
export function toPortRange(f: Pick<PortForwardConfig, 'hostPort' | 'toPort'>): PortRange {
  const start = f.toPort?.start ?? f.hostPort.start;
  return { start, end: start + (f.hostPort.end - f.hostPort.start) };
}

/** A rule broken by one key of one forward: `port_forward[2].host_port`. */
export interface Broken {
  key: string;
  message: string;
}

const at = (i: number, key: string): string => `port_forward[${i}].${key}`;

/**
 * What one forward's keys say about each other, each naming its own key (`to_port`): the config prefixes
 * `port_forward[2].`, a domain's metadata forward (libvirt/metadata-forwards.ts) its own name.
 */
export function forwardProblems(f: PortForwardConfig): Broken[] {
  const out: Broken[] = [];
  const length = f.hostPort.end - f.hostPort.start;
  if (f.toPort !== undefined) {
    const toLength = f.toPort.end - f.toPort.start;
    if (toLength !== 0 && toLength !== length)
      out.push({
        key: 'to_port',
        message:
          `the range ${portRangeText(f.toPort)} must be as long as host_port ${portRangeText(f.hostPort)} ` +
          `(${length + 1} ports), or give only its start`,
      });
    else if (f.toPort.start + length > 65535)
      out.push({
        key: 'to_port',
        message: `${f.toPort.start} + the ${length + 1} ports of host_port ${portRangeText(f.hostPort)} ends past 65535`,
      });
  }
  if (f.hostAddress !== undefined && isLoopback(f.hostAddress))
    out.push({
      key: 'host_address',
      message:
        `${f.hostAddress} is a loopback address: the kernel never routes a connection to it out to a guest ` +
        '(IPv4 only with net.ipv4.conf.*.route_localnet=1, IPv6 never); use an address of the uplink',
    });
  const target = targetRef(f.to);
  const hostFamily = f.hostAddress === undefined ? undefined : ipFamily(f.hostAddress);
  if (target.kind === 'address' && hostFamily !== undefined && hostFamily !== target.family)
    out.push({
      key: 'host_address',
      message: `${f.hostAddress} is IPv${hostFamily} but to (${f.to}) is IPv${target.family}: nft cannot translate between families`,
    });
  const family = target.kind === 'address' ? target.family : hostFamily;
  if (family !== undefined) {
    const other = f.from.filter((src) => sourceCidr(src)?.family !== family);
    if (other.length > 0)
      out.push({
        key: 'from',
        message: `${other.join(', ')}: not IPv${family} like ${target.kind === 'address' ? 'to' : 'host_address'}, so never a source of this forward`,
      });
  }
  return out;
}

/** "tcp 2222 on 198.51.100.1", "udp 8000-8010 on every address": a forward's host side, for messages. */
export function hostSideText(f: PortForwardConfig): string {
  return `${f.proto} ${portRangeText(f.hostPort)} on ${f.hostAddress ?? 'every host address'}`;
}

/** Whether two forwards could take the same packet: same protocol, overlapping ports and host addresses. */
export function forwardsOverlap(a: PortForwardConfig, b: PortForwardConfig): boolean {
  if (a.proto !== b.proto) return false;
  if (a.hostPort.end < b.hostPort.start || b.hostPort.end < a.hostPort.start) return false;
  if (a.hostAddress === undefined || b.hostAddress === undefined) return true;
  return sourceCidr(a.hostAddress)?.network === sourceCidr(b.hostAddress)?.network;
}

/** Every broken rule of the forwards: each forward on its own, then each pair that takes the same host port. */
export function portForwardProblems(forwards: readonly PortForwardConfig[]): Broken[] {
  const out = forwards.flatMap((f, i) => forwardProblems(f).map((b) => ({ key: at(i, b.key), message: b.message })));
  forwards.forEach((f, j) => {
    const i = forwards.findIndex((e, k) => k < j && forwardsOverlap(e, f));
    if (i >= 0)
      out.push({
        key: at(j, 'host_port'),
        message:
          `${hostSideText(f)} overlaps port_forward[${i}] (${hostSideText(forwards[i]!)}): ` +
          'two forwards cannot take the same host port (a forward without host_address takes it on every address)',
      });
  });
  return out;
}
