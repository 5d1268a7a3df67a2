// libvirt's facts about guests that port forwards resolve from (issue 13),
// gathered once per pass and fed to every plan() call site (the daemon's
// pass and its convergence guard, plan, apply, plan --diff, status, doctor),
// so that they all see the same targets:
//
//   guestFactsNeeded(config)   whether anything must be asked at all (a forward
//                              names its guest by domain name or MAC, metadata
//                              forwards are on, or a network isolates guests);
//   gatherGuestFacts(...)      the adapter: the running domains' XML (virsh, or
//                              the daemon's D-Bus connection), the networks'
//                              DHCP leases (libvirt's dnsmasq status files) and
//                              the isolating networks' bridge ports (sysfs);
//   forwardTargetsFrom(...)    pure: the forwards with their guest addresses,
//                              the config's and then the domains' metadata
//                              forwards (metadata-forwards.ts), in one list;
//   metadataForwardsFrom(...)  pure: those metadata forwards, and what was left
//                              out of them and why (doctor).
//
// A failure to read them leaves the lists empty (those forwards wait), or
// keeps what the caller knew before (options.previous): it never fails a pass.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { metadataForwardsOn, targetRef } from '../config/port-forward.js';
import { mayIsolateGuests, networkPolicy } from '../config/network-policy.js';
import { readBridgePorts } from '../host/bridge-ports.js';
import { readHostListeners, type HostListener } from '../host/listeners.js';
import type { BridgePorts } from '../nft/desired.js';
import type { PlanFacts } from '../nft/plan.js';
import type { ForwardTarget } from '../nft/port-forward.js';
import {
  domainNetworkInterfaces,
  parseDnsmasqStatus,
  resolveForwardTargets,
  type DhcpLease,
} from './forward-targets.js';
import { metadataForwards, type MetadataForwards } from './metadata-forwards.js';
import type { Network, NetworkParse } from './model.js';
import { domainUri } from './uri.js';
import { runningDomainXml } from './virsh.js';

export type { DhcpLease } from './forward-targets.js';

/** Where libvirt's dnsmasq keeps the leases, one `<bridge>.status` file per network (leaseshelper's). */
export const DNSMASQ_STATUS_DIR = '/var/lib/libvirt/dnsmasq';

/** A running domain: its name and its XML (`virsh dumpxml`, or org.libvirt.Domain.GetXMLDesc). */
export interface DomainXml {
  name: string;
  xml: string;
}

/** What libvirt says about guests, for resolving forwards. */
export interface GuestFacts {
  /** The running domains. */
  domains: DomainXml[];
  /** The DHCP leases of the active networks. */
  leases: DhcpLease[];
  /**
   * The host's listening sockets, read while metadata forwards are on (no metadata forward may take their
   * ports); absent: not read, or unreadable, which keeps every metadata forward off.
   */
  listeners?: HostListener[];
  /** The ports of the bridges of networks that isolate their guests (isolate_guests); absent: none does. */
  bridgePorts?: BridgePorts;
}

export interface GuestFactsOptions {
  /** The running domains (default: virsh on the domain URI of config.libvirt_uri: uri.ts). */
  domains?: () => Promise<DomainXml[]>;
  /** Where the lease status files are (default DNSMASQ_STATUS_DIR). */
  statusDir?: string;
  /** What to keep of a part that cannot be read now (libvirt away): the daemon passes its last facts. */
  previous?: GuestFacts;
  /** The listening sockets (default: /proc/net of this network namespace; throws when unreadable). */
  listeners?: () => Promise<HostListener[]>;
  /** The bridges' ports (default: sysfs, host/bridge-ports.ts). */
  bridgePorts?: (bridges: readonly string[]) => Promise<BridgePorts>;
}

/** Whether libvirt's guests must be asked: a forward names its guest by domain name or MAC, or metadata forwards are on. */
function forwardsNeedGuests(config: Config): boolean {
  return config.portForward.some((f) => targetRef(f.to).kind !== 'address') || metadataForwardsOn(config);
}

/**
 * Whether guests matter to the plan: forwards resolve them, or a network isolates them (its bridge ports). The
 * daemon then follows the domains' lifecycle events, a guest's start being a change of the plan's input.
 */
export function guestFactsNeeded(config: Config): boolean {
  return forwardsNeedGuests(config) || mayIsolateGuests(config);
}

/** The facts forwards and isolation plan from; asks nothing when guestFactsNeeded(config) is false. Never throws. */
export async function gatherGuestFacts(
  config: Config,
  inputs: readonly NetworkParse[],
  options: GuestFactsOptions = {},
): Promise<GuestFacts> {
  if (!guestFactsNeeded(config)) return { domains: [], leases: [] };
  const isolating = isolatingBridges(config, inputs);
  const bridgePorts = isolating.length > 0 ? await (options.bridgePorts ?? readBridgePorts)(isolating) : undefined;
  const ports = bridgePorts === undefined ? {} : { bridgePorts };
  if (!forwardsNeedGuests(config)) return { domains: [], leases: [], ...ports };
  // Every network's leases, not only the forwards' networks': a MAC leased elsewhere says "not on that network".
  const networks = okNetworks(inputs);
  const [domains, leases, listeners] = await Promise.all([
    (options.domains ?? (() => runningDomainXml(domainUri(config.libvirtUri))))().catch(
      () => options.previous?.domains ?? [], // libvirt away: what was known, or named forwards wait
    ),
    networkLeases(networks, options.statusDir ?? DNSMASQ_STATUS_DIR),
    // Unreadable: left out, and every metadata forward stays off (a port a service listens on is never theirs).
    metadataForwardsOn(config)
      ? (options.listeners ?? readHostListeners)().catch(() => undefined)
      : Promise.resolve(undefined),
  ]);
  return listeners === undefined ? { domains, leases, ...ports } : { domains, leases, listeners, ...ports };
}

/** The bridges of the active networks that isolate their guests: the ones whose ports the plan needs. */
export function isolatingBridges(config: Config, inputs: readonly NetworkParse[]): string[] {
  return okNetworks(inputs)
    .filter((n) => networkPolicy(config, n.name).isolateGuests)
    .map((n) => n.bridge);
}

/** What every plan() call site passes besides the networks (pure): the forwards' targets, the bridges' ports. */
export function planFactsFrom(config: Config, inputs: readonly NetworkParse[], facts: GuestFacts): PlanFacts {
  const forwardTargets = forwardTargetsFrom(config, inputs, facts);
  return facts.bridgePorts === undefined ? { forwardTargets } : { forwardTargets, bridgePorts: facts.bridgePorts };
}

/** The forwards with their guest addresses (pure): what every plan() call site passes as forwardTargets. */
export function forwardTargetsFrom(
  config: Config,
  inputs: readonly NetworkParse[],
  facts: GuestFacts,
): ForwardTarget[] {
  return resolveForwardTargets(
    [
      ...config.portForward.map((forward, index) => ({ origin: { kind: 'config' as const, index }, forward })),
      ...metadataForwardsFrom(config, inputs, facts).forwards,
    ],
    okNetworks(inputs),
    { interfaces: facts.domains.flatMap((d) => domainNetworkInterfaces(d.xml)), leases: facts.leases },
  );
}

/**
 * The forwards the running domains carry in their metadata that apply, and the entries left out with why
 * (pure). None while metadata forwards are off: kvmnftd then does not read domains' metadata at all.
 */
export function metadataForwardsFrom(
  config: Config,
  inputs: readonly NetworkParse[],
  facts: GuestFacts,
): MetadataForwards {
  if (!metadataForwardsOn(config)) return { forwards: [], ignored: [] };
  return metadataForwards(facts.domains, config, okNetworks(inputs), facts.listeners);
}

/** gatherGuestFacts then planFactsFrom: for the one-shot commands. */
export async function gatherPlanFacts(
  config: Config,
  inputs: readonly NetworkParse[],
  options: GuestFactsOptions = {},
): Promise<PlanFacts> {
  return planFactsFrom(config, inputs, await gatherGuestFacts(config, inputs, options));
}

/**
 * The bridges of the active networks forwards use: their lease files are the ones that matter. Every active
 * network's while metadata forwards are on (any domain on any network may carry one).
 */
export function forwardBridges(config: Config, inputs: readonly NetworkParse[]): Set<string> {
  const used = new Set(config.portForward.map((f) => f.network));
  return new Set(
    okNetworks(inputs)
      .filter((n) => metadataForwardsOn(config) || used.has(n.name))
      .map((n) => n.bridge),
  );
}

function okNetworks(inputs: readonly NetworkParse[]): Network[] {
  return inputs.flatMap((i) => (i.kind === 'ok' ? [i.network] : []));
}

/** The lease status file of a network's bridge. */
export function leaseFile(bridge: string, dir = DNSMASQ_STATUS_DIR): string {
  return join(dir, `${bridge}.status`);
}

async function networkLeases(networks: readonly Network[], dir: string): Promise<DhcpLease[]> {
  const per = await Promise.all(
    networks.map(async (n) => {
      try {
        return parseDnsmasqStatus(await readFile(leaseFile(n.bridge, dir), 'utf8'), n.name);
      } catch {
        return []; // no lease file yet (no DHCP, or no lease handed out)
      }
    }),
  );
  return per.flat();
}
