// Host sockets that listen on a port (/proc/net/tcp, tcp6, udp, udp6 of the
// reading process's network namespace, like nft itself). A port forward's
// DNAT in prerouting takes every new connection to its host port before the
// host's own socket sees it: such a socket is shadowed (doctor says so), and
// a domain's metadata forward may never take its port.
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import type { PortRange } from '../config/kinds.js';
import { sourceCidr, type Protocol } from '../config/port-forward.js';
import { formatIp, type Family } from '../net/ip.js';

export interface HostListener {
  proto: Protocol;
  /** The local address, canonical; `0.0.0.0` or `::` for any. */
  address: string;
  port: number;
}

const TCP_LISTEN = '0A';
/** An unconnected (bound) UDP socket: TCP_CLOSE in the kernel's numbering. */
const UDP_UNCONNECTED = '07';

/**
 * The listening sockets of one /proc/net file's text: TCP in LISTEN, UDP bound and not connected. The kernel
 * prints each 32-bit word of the address in host byte order (`littleEndian`: this host's). An IPv4-mapped
 * address (`::ffff:a.b.c.d`, a dual-stack socket bound to an IPv4 address) is given as that IPv4 address.
 */
export function parseProcNet(
  text: string,
  proto: Protocol,
  family: Family,
  littleEndian = endianness() === 'LE',
): HostListener[] {
  const wanted = proto === 'tcp' ? TCP_LISTEN : UDP_UNCONNECTED;
  return text
    .split('\n')
    .slice(1)
    .flatMap((line) => {
      const [, local, , state] = line.trim().split(/\s+/);
      const m = /^([0-9A-Fa-f]+):([0-9A-Fa-f]{4})$/.exec(local ?? '');
      if (!m || state?.toUpperCase() !== wanted) return [];
      const hex = m[1]!;
      if (hex.length !== (family === 4 ? 8 : 32)) return [];
      const words = hex.match(/.{8}/g)!.map((w) => (littleEndian ? w.match(/../g)!.reverse().join('') : w));
      const value = BigInt(`0x${words.join('')}`);
      const mapped = family === 6 && value >> 32n === 0xffffn;
      const address = mapped ? formatIp(4, value & 0xffffffffn) : formatIp(family, value);
      return [{ proto, address, port: parseInt(m[2]!, 16) }];
    });
}

const FILES: ReadonlyArray<[string, Protocol, Family]> = [
  ['tcp', 'tcp', 4],
  ['tcp6', 'tcp', 6],
  ['udp', 'udp', 4],
  ['udp6', 'udp', 6],
];

/**
 * This namespace's listening sockets (`dir`: /proc/net, or a copy for tests). A missing file (tcp6, udp6
 * without IPv6 in the kernel) adds none; any other failure throws, so that a caller for whom "nothing
 * listens" opens ports (domain metadata forwards) never mistakes "unreadable" for it.
 */
export async function readHostListeners(dir = '/proc/net'): Promise<HostListener[]> {
  const per = await Promise.all(
    FILES.map(async ([file, proto, family]) => {
      try {
        return parseProcNet(await readFile(join(dir, file), 'utf8'), proto, family);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
    }),
  );
  return per.flat();
}

/** This namespace's listening sockets, none when they cannot be read (doctor: a finding less, never a failure). */
export async function hostListeners(dir = '/proc/net'): Promise<HostListener[]> {
  return readHostListeners(dir).catch(() => []);
}

const ANY = new Set(['0.0.0.0', '::']);
const isLoopback = (a: string): boolean => a.startsWith('127.') || a === '::1' || a.startsWith('::ffff:127.');

/**
 * The sockets a forward (proto, host ports, optional host address) would shadow: same protocol, a port in the
 * range, on any address or on the forward's host address. Loopback-only sockets are not: no forward DNATs
 * to 127.0.0.1 or ::1 (docs/rules.md).
 */
export function shadowedListeners(
  listeners: readonly HostListener[],
  forward: { proto: Protocol; hostPort: PortRange; hostAddress?: string | undefined },
): HostListener[] {
  return listeners.filter(
    (l) =>
      l.proto === forward.proto &&
      l.port >= forward.hostPort.start &&
      l.port <= forward.hostPort.end &&
      !isLoopback(l.address) &&
      (forward.hostAddress === undefined ||
        ANY.has(l.address) ||
        l.address === sourceCidr(forward.hostAddress)?.network),
  );
}
