// Resolving a port forward's `to` (issue 13): an address stays as it is; a
// libvirt domain name or a MAC address becomes the guest's address on the
// forward's network, from what libvirt reports. Pure: the adapter
// (guest-facts.ts: the running domains' XML, the networks' lease files)
// gathers the facts, this decides. The planner (src/nft/port-forward.ts)
// takes the result as PlanOptions.forwardTargets.
//
// A domain name gives the MACs of its interfaces on the forward's network
// (its XML); the network's DHCP leases give their addresses, the lease that
// expires last winning (an older lease of the same MAC is a previous
// address). One address per family: two DNAT rules for one host port would
// make the second dead. A guest with a static address and no lease cannot be
// resolved this way: give its address as `to`.
import { targetRef, type TargetRef } from '../config/port-forward.js';
import { libvirtXmlParser } from './xml-parser.js';
import { cidrOf, ipFamily, type Cidr } from '../net/ip.js';
import type { ForwardTarget, Unresolved } from '../nft/port-forward.js';
import type { Network } from './model.js';

/** One network interface of a running domain (from its XML). */
export interface GuestInterface {
  domain: string;
  /** The libvirt network it is attached to (`<source network=.../>`). */
  network: string;
  mac: string;
}

/** One DHCP lease of a libvirt network. */
export interface DhcpLease {
  network: string;
  mac: string;
  address: string;
  /** Seconds since the epoch; 0 when unknown. */
  expiry: number;
}

/** What a forward's `to` resolves from. */
export interface ResolutionFacts {
  interfaces: readonly GuestInterface[];
  leases: readonly DhcpLease[];
}

/**
 * The forwards with their guest addresses: an address as it is; a domain name through the MACs of its
 * interfaces on the forward's network; a MAC as it is; then the network's leases for those MACs, one address
 * per family, the lease that expires last winning, and only addresses inside the network's subnets. A forward
 * whose network is not active, or whose guest has no lease, gets no address (it waits).
 */
export function resolveForwardTargets(
  forwards: ReadonlyArray<Pick<ForwardTarget, 'origin' | 'forward'>>,
  networks: readonly Network[],
  facts: ResolutionFacts,
): ForwardTarget[] {
  return forwards.map(({ origin, forward }) => {
    const ref = targetRef(forward.to);
    if (ref.kind === 'address') return { origin, forward, addresses: [ref.address] };
    const net = networks.find((n) => n.name === forward.network);
    if (!net) return { origin, forward, addresses: [] }; // the planner says the network is not active
    const here = facts.interfaces.filter((i) => i.network === forward.network);
    let macs: string[];
    if (ref.kind === 'mac') macs = [ref.mac];
    else {
      macs = here.filter((i) => i.domain === ref.name).map((i) => i.mac);
      if (macs.length === 0) {
        const running = facts.interfaces.some((i) => i.domain === ref.name);
        const unresolved: Unresolved = running
          ? { kind: 'not-on-network', message: `domain ${ref.name} has no interface on network ${forward.network}` }
          : { kind: 'not-running', message: `domain ${ref.name} is not running` };
        return { origin, forward, addresses: [], unresolved };
      }
    }
    const leased = facts.leases
      .filter((l) => l.network === forward.network && macs.includes(l.mac))
      .sort((x, y) => y.expiry - x.expiry)
      .map((l) => l.address);
    const addresses: string[] = [];
    for (const family of [4, 6] as const) {
      const first = leased.find((a) => ipFamily(a) === family && inside(a, subnets(net)));
      if (first) addresses.push(cidrOf(first, family === 4 ? 32 : 128)!.network);
    }
    if (addresses.length > 0) return { origin, forward, addresses };
    return { origin, forward, addresses: [], unresolved: noAddress(ref, macs, forward.network, facts) };
  });
}

const subnets = (net: Network): Cidr[] => net.ips.map((ip) => ip.cidr);

/**
 * Why a guest found by MAC has no address: the MAC is on another network (an interface of a domain there, or a
 * lease there), or it has no lease yet.
 */
function noAddress(ref: TargetRef, macs: readonly string[], network: string, facts: ResolutionFacts): Unresolved {
  if (ref.kind === 'mac') {
    const onNetwork = facts.interfaces.some((i) => i.mac === ref.mac && i.network === network);
    const iface = facts.interfaces.find((i) => i.mac === ref.mac && i.network !== network);
    const lease = facts.leases.find((l) => l.mac === ref.mac && l.network !== network);
    if (!onNetwork && iface)
      return {
        kind: 'not-on-network',
        message: `${ref.mac} is an interface of domain ${iface.domain} on network ${iface.network}, not on ${network}`,
      };
    if (!onNetwork && lease)
      return {
        kind: 'not-on-network',
        message: `${ref.mac} has a lease (${lease.address}) on network ${lease.network}, not on ${network}`,
      };
  }
  const who = ref.kind === 'domain' ? `domain ${ref.name} (${macs.join(', ')})` : macs.join(', ');
  return { kind: 'no-lease', message: `${who} has no DHCP lease on network ${network} yet` };
}

function inside(address: string, subnets: readonly Cidr[]): boolean {
  const family = ipFamily(address);
  return subnets.some((s) => s.family === family && cidrOf(address, s.prefix)?.network === s.network);
}

const parser = libvirtXmlParser((name) => name === 'interface');

type Node = { $?: Record<string, string> } & { [child: string]: unknown };

function domainNode(xml: string): Node | undefined {
  try {
    return (parser.parse(xml) as { domain?: Node }).domain;
  } catch {
    return undefined;
  }
}

/** A domain XML's `<name>`; undefined when the XML has none. */
export function domainXmlName(xml: string): string | undefined {
  const name = domainNode(xml)?.['name'];
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** The network interfaces of a domain's XML (`virsh dumpxml`): MAC and network. */
export function domainNetworkInterfaces(xml: string): GuestInterface[] {
  const domain = domainNode(xml);
  const name = typeof domain?.['name'] === 'string' ? domain['name'] : undefined;
  const devices = domain?.['devices'] as Node | undefined;
  const ifaces = (devices?.['interface'] as Node[] | undefined) ?? [];
  if (name === undefined) return [];
  return ifaces.flatMap((i) => {
    const mac = (i['mac'] as Node | undefined)?.$?.['address'];
    const network = (i['source'] as Node | undefined)?.$?.['network'];
    return i.$?.['type'] === 'network' && mac && network ? [{ domain: name, network, mac: mac.toLowerCase() }] : [];
  });
}

/**
 * The leases in libvirt's dnsmasq status file (`/var/lib/libvirt/dnsmasq/<bridge>.status`, written by
 * libvirt's leaseshelper on every lease change: a JSON array of `{"ip-address", "mac-address",
 * "expiry-time", ...}`). The file's change is the lease event libvirt does not have: watching it lets a
 * forward follow a new address at once. Entries without an address or a MAC are skipped; unreadable text
 * gives no leases.
 */
export function parseDnsmasqStatus(text: string, network: string): DhcpLease[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(doc)) return [];
  return doc.flatMap((e: unknown) => {
    if (typeof e !== 'object' || e === null) return [];
    const o = e as Record<string, unknown>;
    const address = o['ip-address'];
    const mac = o['mac-address'];
    const expiry = o['expiry-time'];
    if (typeof address !== 'string' || ipFamily(address) === undefined || typeof mac !== 'string') return [];
    return [{ network, mac: mac.toLowerCase(), address, expiry: typeof expiry === 'number' ? expiry : 0 }];
  });
}
