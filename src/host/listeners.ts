// The host's listening sockets, from /proc/net/{tcp,tcp6,udp,udp6} of the
// network namespace kvmnftd runs in: a port forward must not take a port a
// host service listens on (domain metadata forwards are refused there,
// libvirt/metadata-forwards.ts). A thin adapter: parseProcNet is pure, and
// hostListeners only reads the four files.
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';

/** A socket that receives new connections (TCP LISTEN) or datagrams (an unconnected bound UDP socket). */
export interface Listener {
  proto: 'tcp' | 'udp';
  /** The local address as the kernel shows it, decoded: `0.0.0.0`, `::`, `192.0.2.1`, `fd00:0:0:0:0:0:0:1`. */
  address: string;
  port: number;
}

/** TCP_LISTEN; for UDP, TCP_CLOSE (7) is a bound socket that is not connected to one peer. */
const LISTENING: Record<Listener['proto'], string> = { tcp: '0A', udp: '07' };

const HEX_ADDRESS = /^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})$/;

/**
 * The listening sockets in the text of one /proc/net/{tcp,tcp6,udp,udp6} file. The kernel prints each 32-bit
 * word of an address as a native integer, so on a little-endian host every word's bytes come reversed.
 * An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is given as the IPv4 address. Lines that do not read are
 * skipped.
 */
export function parseProcNet(text: string, proto: Listener['proto'], littleEndian = endianness() === 'LE'): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const [local, remote, state] = [fields[1], fields[2], fields[3]];
    if (local === undefined || remote === undefined || state !== LISTENING[proto]) continue;
    const l = HEX_ADDRESS.exec(local);
    const r = HEX_ADDRESS.exec(remote);
    if (!l || !r) continue;
    const port = parseInt(l[2]!, 16);
    // A UDP socket connected to one peer is a client, not a listener (TCP LISTEN sockets have no peer either).
    if (port === 0 || parseInt(r[2]!, 16) !== 0 || /[^0]/.test(r[1]!)) continue;
    out.push({ proto, address: decodeAddress(l[1]!, littleEndian), port });
  }
  return out;
}

function decodeAddress(hex: string, littleEndian: boolean): string {
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    bytes.push(...(littleEndian ? word.reverse() : word));
  }
  const mapped = bytes.length === 16 && bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255;
  if (bytes.length === 4 || mapped) return bytes.slice(-4).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':') === '0:0:0:0:0:0:0:0' ? '::' : groups.join(':');
}

/** The files read, per protocol. */
const FILES: ReadonlyArray<[string, Listener['proto']]> = [
  ['tcp', 'tcp'],
  ['tcp6', 'tcp'],
  ['udp', 'udp'],
  ['udp6', 'udp'],
];

/**
 * Every listening socket of this network namespace. A missing file (tcp6 and udp6 without IPv6 in the kernel)
 * has none; any other failure throws, so that the caller never mistakes "unreadable" for "nothing listens".
 */
export async function hostListeners(dir = '/proc/net'): Promise<Listener[]> {
  const per = await Promise.all(
    FILES.map(async ([file, proto]) => {
      try {
        return parseProcNet(await readFile(join(dir, file), 'utf8'), proto);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
    }),
  );
  return per.flat();
}
