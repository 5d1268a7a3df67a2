/**
 * Docker and ufw on the same host as libvirt and kvmnftd (issue 12), with the
 * real components: Debian's dockerd (test/lab/docker.ts) and ufw
 * (test/lab/ufw.ts) run inside the libvirt lab's namespaces, on Debian 12
 * (libvirt 9) and Debian 13 (libvirt 11, test/lab/trixie-root.sh).
 *
 * Baseline (the problem, as kvmnftd 0.1 leaves it): Docker's
 * `iptables -P FORWARD DROP` and ufw's DEFAULT_FORWARD_POLICY="DROP" are base
 * chains `FORWARD` in iptables-nft's `table ip filter` with policy drop; an
 * accept in kvmnftd's chains (the admin's `inet filter`) cannot overrule them.
 * libvirt 9 puts its own accepts into that FORWARD chain, so its guests keep
 * working; libvirt 11 on its nftables backend does not, and its guests are cut
 * off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from '../helpers/cli.js';
import { startDockerd, forwardState, DOCKER0, type Dockerd } from '../lab/docker.js';
import { WAN_ADDR, type Lab, type LabOptions } from '../lab/lab.js';
import { ensureTrixieRoot } from '../lab/trixie-root.js';
import { enableUfw, type Ufw } from '../lab/ufw.js';
import { useLibvirtLab } from './libvirt-lab.js';

/** The admin's drop-policy ruleset, letting Docker's docker0 through its own forward chain. */
const ADMIN_RULESET = fixture('admin-ruleset-docker.nft');

type PlatformId = 'deb12' | 'deb13-nftables' | 'deb13-iptables';
interface Platform {
  title: string;
  /** libvirt's accepts are in iptables-nft's FORWARD chain (libvirt 9; libvirt 11 on its iptables backend). */
  libvirtInForward: boolean;
  lab: () => Promise<LabOptions>;
}

async function trixie(backend: 'nftables' | 'iptables'): Promise<LabOptions> {
  const root = await ensureTrixieRoot();
  return { root: root.path, firewallBackend: backend, defaultNetwork: 'start', ruleset: ADMIN_RULESET };
}

const PLATFORMS: Record<PlatformId, Platform> = {
  deb12: {
    title: 'Debian 12 (libvirt 9)',
    libvirtInForward: true,
    lab: () => Promise.resolve({ defaultNetwork: 'start', ruleset: ADMIN_RULESET }),
  },
  'deb13-nftables': {
    title: 'Debian 13 (libvirt 11, nftables backend)',
    libvirtInForward: false,
    lab: () => trixie('nftables'),
  },
  'deb13-iptables': {
    title: 'Debian 13 (libvirt 11, iptables backend)',
    libvirtInForward: true,
    lab: () => trixie('iptables'),
  },
};

type Firewall = 'docker' | 'ufw';

let port = 9400;

/** A new TCP connection from `from` (default: the guest) to a fresh listener on the wan; the peer address or undefined. */
async function reachesWan(
  lab: Lab,
  timeoutMs = 3000,
  from?: Parameters<Lab['tcpProbe']>[3],
): Promise<string | undefined> {
  const p = ++port;
  const listener = await lab.tcpListen(p);
  try {
    const probe = await lab.tcpProbe(WAN_ADDR, p, timeoutMs, from);
    return probe.ok ? await listener.waitForPeer(5000, 0) : undefined;
  } finally {
    await listener.close();
  }
}

/** A DHCP lease for the guest within `tries` attempts, or undefined. */
async function dhcp(lab: Lab, tries: number): Promise<string | undefined> {
  return lab.dhcp({ tries }).catch(() => undefined);
}

const baseline: Array<[PlatformId, Firewall]> = [
  ['deb12', 'docker'],
  ['deb12', 'ufw'],
  ['deb13-nftables', 'docker'],
  ['deb13-nftables', 'ufw'],
];

describe.each(baseline)('baseline without the feature: %s with %s', (platformId, firewall) => {
  const platform = PLATFORMS[platformId];
  const f = useLibvirtLab({
    tag: `foreign-base-${platformId}-${firewall}`,
    lab: platform.lab,
    daemon: 'auto',
    setupMs: 15 * 60_000,
  });
  let docker: Dockerd | undefined;
  let ufw: Ufw | undefined;
  afterAll(async () => {
    const c = await docker?.dispose();
    if (c) console.log(`[${platformId}/${firewall}] dockerd cleanup: br_netfilter ${c.brNetfilter}`);
    expect(c?.errors ?? []).toEqual([]);
    await ufw?.dispose();
  });

  beforeAll(async () => {
    // Control: before the foreign firewall, the guest gets a lease and NAT out.
    expect(await f.lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await reachesWan(f.lab)).toBe('192.0.2.1');
  }, 60_000);

  it(`with ${firewall}'s FORWARD DROP in place, ${platform.libvirtInForward ? 'the guest still works' : 'the guest is cut off'}`, async () => {
    const lab = f.lab;
    if (firewall === 'docker') {
      docker = await startDockerd(lab);
      const c = await docker.addContainer('ctr0', '172.17.0.2');
      // Docker's own traffic as Docker means it: out of docker0, masqueraded to the host's address.
      expect(await reachesWan(lab, 3000, { in: c.netns })).toBe('192.0.2.1');
      console.log(`[${platformId}] dockerd ${docker.version} on ${DOCKER0.name}`);
    } else {
      ufw = await enableUfw(lab);
      console.log(`[${platformId}] ufw ${await ufw.version()}`);
    }
    // Asserted before the guest's first packet: otherwise the test proves nothing.
    const fwd = await forwardState(lab);
    expect(fwd.policy, fwd.text).toBe('DROP');
    if (firewall === 'docker') expect(fwd.dockerUser).toBe(true);

    // NAT out first, on the lease of the control step (a failed DHCP deconfigures the guest's address).
    const wan = await reachesWan(lab);
    const lease = await dhcp(lab, 4);
    console.log(
      `[${platformId}/${firewall}] baseline: DHCP ${lease ?? 'FAILED'}, guest -> wan ${wan ?? 'cut off (timeout)'}`,
    );
    if (platform.libvirtInForward) {
      expect(lease).toMatch(/^192\.168\.122\./);
      expect(wan).toBe('192.0.2.1');
    } else {
      expect(wan).toBeUndefined();
      // Docker leaves INPUT alone; ufw's INPUT policy drops the guest's DHCP too.
      if (firewall === 'docker') expect(lease).toMatch(/^192\.168\.122\./);
      else expect(lease).toBeUndefined();
    }
  }, 120_000);
});
