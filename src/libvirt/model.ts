import type { Cidr } from '../net/ip.js';

/** Forward modes kvmnftd writes rules for; `isolated` is a network without <forward>. */
export type ForwardMode = 'nat' | 'route' | 'open' | 'isolated';

export interface AddressRange {
  start: string;
  end: string;
}

export interface PortRange {
  start: number;
  end: number;
}

export interface NetworkIp {
  /** The host's own address on the bridge. */
  address: string;
  cidr: Cidr;
  dhcpRanges: AddressRange[];
  tftp: boolean;
}

export interface NatSettings {
  /** <nat><address start end/>: SNAT to this range instead of masquerading. */
  address?: AddressRange;
  /** <nat><port start end/>; libvirt's default is 1024-65535. */
  ports: PortRange;
  /** <nat ipv6='yes'>: masquerade IPv6 too (otherwise IPv6 in a NAT network is routed). */
  ipv6: boolean;
}

export interface Network {
  name: string;
  uuid?: string;
  bridge: string;
  mode: ForwardMode;
  /** <forward dev='...'>: forwarding is restricted to this uplink. */
  forwardDev?: string;
  nat?: NatSettings;
  ips: NetworkIp[];
  /** False when <dns enable='no'/>: libvirt's dnsmasq then serves no DNS. */
  dns: boolean;
}

/** Outcome of reading one network's XML. */
export type NetworkParse =
  | { kind: 'ok'; network: Network }
  /** A forward mode kvmnftd has nothing to do for (bridge, passthrough, hostdev...). */
  | { kind: 'ignored'; name: string; mode: string }
  | { kind: 'invalid'; name: string; field: string; message: string };

export const DEFAULT_NAT_PORTS: PortRange = { start: 1024, end: 65535 };

/** Whether the host routes the network's traffic (it crosses the forward hook): nat, route and open; not isolated. */
export function modeForwards(mode: ForwardMode): boolean {
  return mode === 'nat' || mode === 'route' || mode === 'open';
}

/** Whether libvirt writes firewall rules (and so needs its private chains) for the mode: all but open. */
export function libvirtWritesRules(mode: ForwardMode): boolean {
  return mode !== 'open';
}
