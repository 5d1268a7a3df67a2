// Does libvirt still have its own firewall chains? A `flush ruleset` (what
// `systemctl reload nftables` does) removes them, and libvirt creates them
// only once per process: running networks lose libvirt's rules and every
// later `virsh net-start` fails. Pure: reads the ruleset index.
import { libvirtWritesRules, type Network } from '../libvirt/model.js';
import { tableKey, type Ruleset } from './ruleset.js';

export type LibvirtBackend = 'iptables' | 'nftables';

/** Which of libvirt's backends left its private chains in the ruleset. */
export function libvirtBackendsPresent(live: Ruleset): LibvirtBackend[] {
  const found: LibvirtBackend[] = [];
  // libvirt >= 10.4, nftables backend: its own tables.
  if (live.tables.has(tableKey('ip', 'libvirt_network'))) found.push('nftables');
  // libvirt's iptables backend (through iptables-nft): LIBVIRT_* chains in ip filter/nat.
  const filter = live.tables.get(tableKey('ip', 'filter'));
  if (filter && [...filter.chains.keys()].some((c) => isLibvirtChain('ip', 'filter', c))) found.push('iptables');
  return found;
}

/**
 * True when libvirt runs networks that need its own rules (every mode but
 * 'open') and none of its chains exist: the post-flush trap.
 */
export function libvirtChainsMissing(live: Ruleset, active: readonly Network[]): boolean {
  return active.some((n) => libvirtWritesRules(n.mode)) && libvirtBackendsPresent(live).length === 0;
}

/** A chain libvirt creates: LIBVIRT_* through iptables-nft, or anything in its nftables backend's tables. */
export function isLibvirtChain(family: string, table: string, chain: string): boolean {
  if (table === 'libvirt_network') return family === 'ip' || family === 'ip6';
  return (family === 'ip' || family === 'ip6') && chain.startsWith('LIBVIRT_');
}
