// What `kvmnftd doctor` knows about the host (gathered by gather.ts) and what
// it reports. Every check is a pure function Facts -> Finding[].
import type { Config } from '../config/config.js';
import type { HostListener } from '../host/listeners.js';
import type { IgnoredMetadata } from '../libvirt/metadata-forwards.js';
import type { Network, NetworkParse } from '../libvirt/model.js';
import type { ForwardOutcome } from '../nft/port-forward.js';
import type { Ruleset } from '../nft/ruleset.js';

export type Severity = 'error' | 'warning' | 'info';

/** Every finding the doctor can report; docs/troubleshooting.md explains each (checked by a test). */
export const FINDING_IDS = [
  'ruleset-unreadable',
  'libvirt-unreachable',
  'network-invalid',
  'rules-not-applied',
  'admin-table-missing',
  'admin-chain-missing',
  'nat-table-not-owned',
  'foreign-drop-chain',
  'br-netfilter',
  'ipv4-forwarding-off',
  'ipv6-forwarding-off',
  'libvirt-firewall-backend',
  'libvirt-chains-missing',
  'libvirt-dbus-unavailable',
  'nft-unusable',
  'nft-too-old',
  'iptables-table-collision',
  'firewalld-running',
  'iptables-legacy-rules',
  'forward-target-not-on-network',
  'forward-guest-no-address',
  'forward-port-shadowed',
  'forward-blocked-by-libvirt',
  'metadata-forward-ignored',
  'network-policy-refused',
  'policy-drops',
] as const;

export type FindingId = (typeof FINDING_IDS)[number];

/**
 * Findings renamed to say what they report, with the id kvmnftd 0.1 reported
 * them under. For one release `doctor --json` still puts that old id in `id`
 * (scripts matching it keep working) and lists the new one first in `ids`;
 * the release after, `id` is the new id. docs/operation.md documents it.
 */
export const FINDING_ALIASES: Partial<Record<FindingId, string>> = {
  // was also raised when nft cannot run at all
  'nft-unusable': 'nft-too-old',
  // covers ip/ip6 filter and mangle too, not only nat
  'iptables-table-collision': 'ip-nat-collision',
  // the table exists, its base chains do not
  'admin-chain-missing': 'admin-table-missing',
};

export interface Finding {
  id: FindingId;
  severity: Severity;
  /** One line: what is wrong, naming the objects. */
  title: string;
  /** What was seen, one fact per line. */
  evidence: string[];
  /** The exact fix: commands or configuration to change. */
  fix: string;
  /** Networks whose guests are affected, when that can be said. */
  networks?: string[];
}

export interface DoctorFacts {
  config: Config;
  /** Active networks as parsed, or why they could not be read. */
  libvirt: { networks: NetworkParse[] } | { error: string };
  /** The live ruleset, and the plan against it: how many commands, and what became of each port forward. */
  ruleset: { live: Ruleset; plannedCommands: number; forwards: ForwardOutcome[] } | { error: string };
  /** The host's listening sockets (/proc/net/tcp, tcp6, udp, udp6); none when they cannot be read. */
  listeners: HostListener[];
  /** Values of /proc/sys files; absent key = file absent or unreadable. */
  sysctl: {
    ipv4Forward?: string;
    ipv6Forward?: string;
    bridgeNfCallIptables?: string;
    bridgeNfCallIp6tables?: string;
    /** Interfaces with accept_ra = 1 (they would stop taking RAs with IPv6 forwarding on). */
    ipv6AcceptRa1: string[];
  };
  /** `nft --version`, e.g. "1.0.6", or why it could not be run. */
  nft: { version: string } | { error: string };
  /** System bus probe: who owns / can activate the names kvmnftd cares about. */
  bus: { libvirtDbus: 'running' | 'activatable' | 'absent'; firewalld: boolean } | { error: string };
  /** Why the running daemon says it is degraded (its state file), when it runs and is. */
  daemonDegraded?: string;
  /** firewall_backend from /etc/libvirt/network.conf, when set. */
  libvirtConfiguredBackend?: string;
  /** Entries of domains' metadata forwards left out, and why (libvirt/metadata-forwards.ts); absent: not read. */
  metadataIgnored?: IgnoredMetadata[];
  /** The kernel log's records of kvmnftd's log_drops (host/kernel-log.ts), or why they could not be read. */
  dropLog?: { lines: string[] } | { error: string };
  /** iptables-legacy-save / ip6tables-legacy-save output, when those exist. */
  iptablesLegacy: { installed: false } | { installed: true; ipv4: string; ipv6: string };
}

/** The one finding for a fact that could not be gathered: why not is its evidence. */
export function cannotGather(error: string, finding: Omit<Finding, 'evidence'>): Finding[] {
  return [{ ...finding, evidence: [error] }];
}

/** The valid active networks, or [] when libvirt could not be read. */
export function activeNetworks(facts: DoctorFacts): Network[] {
  if (!('networks' in facts.libvirt)) return [];
  return facts.libvirt.networks.flatMap((p) => (p.kind === 'ok' ? [p.network] : []));
}

/** Every port forward as the plan saw it, or [] when the plan could not be made. */
export function forwardOutcomes(facts: DoctorFacts): ForwardOutcome[] {
  return 'forwards' in facts.ruleset ? facts.ruleset.forwards : [];
}

export function liveRuleset(facts: DoctorFacts): Ruleset | undefined {
  return 'live' in facts.ruleset ? facts.ruleset.live : undefined;
}
