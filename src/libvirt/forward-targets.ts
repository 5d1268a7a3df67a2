// Resolving a port forward's `to` (issue 13): an address stays as it is; a
// libvirt domain name or a MAC address becomes the guest's address on the
// forward's network, from what libvirt reports. Pure: the adapters (virsh /
// D-Bus: domain XML, domain interface addresses, the network's DHCP leases)
// gather the facts, this decides. The planner (src/nft/port-forward.ts)
// takes the result as PlanOptions.forwardTargets.
//
// Order of sources, per address family: the domain's interfaces on that
// network (addresses libvirt reports for them), then the network's DHCP
// leases for those MACs, the lease that expires last winning (an older lease
// of the same MAC is a previous address). One address per family: two DNAT
// rules for one host port would make the second dead.
import { XMLParser } from 'fast-xml-parser';
import type { Config } from '../config/config.js';
import { targetRef } from '../config/port-forward.js';
import { cidrOf, ipFamily, type Cidr } from '../net/ip.js';
import type { ForwardTarget } from '../nft/port-forward.js';
import type { Network } from './model.js';

/** One network interface of a running domain. */
export interface GuestInterface {
  domain: string;
  /** The libvirt network it is attached to (`<source network=.../>`). */
  network: string;
  mac: string;
  /** Addresses libvirt reports for it (domifaddr), possibly none yet. */
  addresses: string[];
}

/** One DHCP lease of a libvirt network. */
export interface DhcpLease {
  network: string;
  mac: string;
  address: string;
  /** Seconds since the epoch; 0 when unknown. */
  expiry: number;
}

export interface GuestFacts {
  interfaces: readonly GuestInterface[];
  leases: readonly DhcpLease[];
}

export function resolveForwardTargets(
  forwards: Config['portForward'],
  networks: readonly Network[],
  facts: GuestFacts,
): ForwardTarget[] {
  return forwards.map((forward, index) => {
    const ref = targetRef(forward.to);
    if (ref.kind === 'address') return { index, forward, addresses: [ref.address] };
    const net = networks.find((n) => n.name === forward.network);
    if (!net) return { index, forward, addresses: [] };
    const subnets = net.ips.map((ip) => ip.cidr);
    const ifaces = facts.interfaces.filter(
      (i) =>
        i.network === forward.network && (ref.kind === 'mac' ? i.mac.toLowerCase() === ref.mac : i.domain === ref.name),
    );
    const macs = ref.kind === 'mac' ? [ref.mac] : ifaces.map((i) => i.mac.toLowerCase());
    const reported = ifaces.flatMap((i) => i.addresses);
    const leased = facts.leases
      .filter((l) => l.network === forward.network && macs.includes(l.mac.toLowerCase()))
      .sort((a, b) => b.expiry - a.expiry)
      .map((l) => l.address);
    const addresses: string[] = [];
    for (const family of [4, 6] as const) {
      const first = [...reported, ...leased].find((a) => ipFamily(a) === family && inside(a, subnets));
      if (first) addresses.push(cidrOf(first, family === 4 ? 32 : 128)!.network);
    }
    return { index, forward, addresses };
  });
}

function inside(address: string, subnets: readonly Cidr[]): boolean {
  const family = ipFamily(address);
  return subnets.some((s) => s.family === family && cidrOf(address, s.prefix)?.network === s.network);
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  attributesGroupName: '$',
  parseAttributeValue: false,
  parseTagValue: false,
  processEntities: false,
  trimValues: true,
  isArray: (name) => name === 'interface',
});

type Node = { $?: Record<string, string> } & { [child: string]: unknown };

/** The network interfaces of a domain's XML (`virsh dumpxml`): MAC and network; addresses left empty. */
export function domainNetworkInterfaces(xml: string): GuestInterface[] {
  let doc: { domain?: Node };
  try {
    doc = parser.parse(xml) as { domain?: Node };
  } catch {
    return [];
  }
  const domain = doc.domain;
  const name = typeof domain?.['name'] === 'string' ? domain['name'] : undefined;
  const devices = domain?.['devices'] as Node | undefined;
  const ifaces = (devices?.['interface'] as Node[] | undefined) ?? [];
  if (name === undefined) return [];
  return ifaces.flatMap((i) => {
    const mac = (i['mac'] as Node | undefined)?.$?.['address'];
    const network = (i['source'] as Node | undefined)?.$?.['network'];
    return i.$?.['type'] === 'network' && mac && network
      ? [{ domain: name, network, mac: mac.toLowerCase(), addresses: [] }]
      : [];
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

/** Where libvirt's dnsmasq keeps a network's leases. */
export const dnsmasqStatusFile = (bridge: string): string => `/var/lib/libvirt/dnsmasq/${bridge}.status`;
