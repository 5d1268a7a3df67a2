// The facts a port forward's `to` resolves from (forward-targets.ts decides):
// the running domains' network interfaces (virsh dumpxml) and the networks'
// DHCP leases (libvirt's dnsmasq status files). Asked only when a forward
// names its guest by domain name or MAC; a failure to read them leaves those
// forwards waiting, never fails the pass.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { targetRef } from '../config/port-forward.js';
import { addressTargets, type ForwardTarget } from '../nft/port-forward.js';
import {
  domainNetworkInterfaces,
  parseDnsmasqStatus,
  resolveForwardTargets,
  type DhcpLease,
  type GuestInterface,
} from './forward-targets.js';
import type { Network, NetworkParse } from './model.js';
import { runningDomainXml } from './virsh.js';

/** Where libvirt's dnsmasq keeps the leases, one `<bridge>.status` file per network. */
export const DNSMASQ_STATUS_DIR = '/var/lib/libvirt/dnsmasq';

export interface GuestFactsOptions {
  /** The running domains' XML (default: virsh on config.libvirt_uri). */
  domains?: () => Promise<Array<{ name: string; xml: string }>>;
  statusDir?: string;
}

/** Whether some forward names its guest by domain name or MAC (so libvirt must be asked). */
export function forwardsNeedLibvirt(config: Config): boolean {
  return config.portForward.some((f) => targetRef(f.to).kind !== 'address');
}

/** The forwards with their guest addresses, from libvirt's facts when a forward needs them. */
export async function forwardTargetsFor(
  config: Config,
  inputs: readonly NetworkParse[],
  options: GuestFactsOptions = {},
): Promise<ForwardTarget[]> {
  if (!forwardsNeedLibvirt(config)) return addressTargets(config.portForward);
  const networks = inputs.flatMap((i) => (i.kind === 'ok' ? [i.network] : []));
  const wanted = new Set(config.portForward.map((f) => f.network));
  const [interfaces, leases] = await Promise.all([
    domainInterfaces(options.domains ?? (() => runningDomainXml(config.libvirtUri))),
    networkLeases(
      networks.filter((n) => wanted.has(n.name)),
      options.statusDir ?? DNSMASQ_STATUS_DIR,
    ),
  ]);
  return resolveForwardTargets(config.portForward, networks, { interfaces, leases });
}

async function domainInterfaces(read: () => Promise<Array<{ name: string; xml: string }>>): Promise<GuestInterface[]> {
  try {
    return (await read()).flatMap((d) => domainNetworkInterfaces(d.xml));
  } catch {
    return []; // libvirt away: named forwards wait
  }
}

async function networkLeases(networks: readonly Network[], dir: string): Promise<DhcpLease[]> {
  const per = await Promise.all(
    networks.map(async (n) => {
      try {
        return parseDnsmasqStatus(await readFile(join(dir, `${n.bridge}.status`), 'utf8'), n.name);
      } catch {
        return []; // no lease file yet (no DHCP, or no lease handed out)
      }
    }),
  );
  return per.flat();
}
