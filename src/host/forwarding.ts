// net.ipv4.ip_forward and the IPv6 forwarding trap. Reads and writes /proc
// directly: that is per network namespace, like nft itself.
import { readdir, readFile, writeFile } from 'node:fs/promises';

const V4 = '/proc/sys/net/ipv4/ip_forward';
const V6 = '/proc/sys/net/ipv6/conf/all/forwarding';

/** A /proc/sys value, trimmed; undefined when it does not exist (e.g. no IPv6, no br_netfilter). */
export async function readFlag(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Interfaces with accept_ra=1: they stop accepting router advertisements once IPv6 forwarding is on. */
export async function interfacesAcceptingRa(): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir('/proc/sys/net/ipv6/conf');
  } catch {
    names = [];
  }
  const out: string[] = [];
  for (const name of names) {
    if (name === 'all' || name === 'default' || name === 'lo') continue;
    if ((await readFlag(`/proc/sys/net/ipv6/conf/${name}/accept_ra`)) === '1') out.push(name);
  }
  return out;
}

export type ForwardingOutcome =
  { kind: 'on' } | { kind: 'enabled' } | { kind: 'off-unmanaged' } | { kind: 'failed'; error: string };

export async function ensureIpv4Forwarding(manage: boolean): Promise<ForwardingOutcome> {
  if ((await readFlag(V4)) === '1') return { kind: 'on' };
  if (!manage) return { kind: 'off-unmanaged' };
  try {
    await writeFile(V4, '1\n');
    return { kind: 'enabled' };
  } catch (err) {
    return { kind: 'failed', error: (err as Error).message };
  }
}

/**
 * IPv6 forwarding is never switched on for the admin: with it, interfaces
 * with accept_ra=1 stop accepting router advertisements and the host can lose
 * its own IPv6 default route. Returns those interfaces, for the warning.
 */
export async function ipv6ForwardingRisk(): Promise<{ on: boolean; raInterfaces: string[] }> {
  const on = (await readFlag(V6)) === '1';
  const raInterfaces = on ? [] : await interfacesAcceptingRa();
  return { on, raInterfaces };
}
