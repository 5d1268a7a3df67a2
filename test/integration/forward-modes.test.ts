/**
 * Every libvirt forward mode with real packets, behind the admin's drop-policy
 * ruleset, with `kvmnftd run` (D-Bus events) keeping the rules, on
 *   - Debian 12: the machine's libvirt 9 (iptables-nft backend), and
 *   - Debian 13: libvirt 11 in the trixie test root, nftables backend
 *     (test/lab/trixie-root.sh; the root's tc ignores exactly the failing
 *     `tc filter add ... action csum` this kernel cannot do, printed below).
 *
 * Topology (test/lab/lab.ts plus a second uplink):
 *   guest  ══ vguest0 ─ <network bridge>        host         eth0 ══ wan   192.0.2.2/24, 2001:db8:ff::2/64
 *   guest2 ══ vguest1 ─ (second network case)                eth1 ══ wan2  198.51.100.2/24
 * host eth0 192.0.2.1/24 + 2001:db8:ff::1/64 (default routes via wan), eth1 198.51.100.1/24.
 * The admin ruleset has no rule for ICMPv6 on eth0, so host and wan know each
 * other's MAC as permanent neighbour entries. IPv6 forwarding is switched on
 * here, in the lab host (kvmnftd never does). Only documentation prefixes and
 * ULA, only inside the lab's namespaces.
 *
 * Each case checks what must pass (with retries: a new bridge may take a moment)
 * and what must not (one probe, after the must-pass part proved the wiring).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { type Lab, type LabNetns, type TcpProbeResult, type TcpWhere } from '../lab/lab.js';
import { ensureTrixieRoot } from '../lab/trixie-root.js';
import { useLibvirtLab } from './libvirt-lab.js';

const WAN = '192.0.2.2';
const HOST_WAN = '192.0.2.1';
const WAN6 = '2001:db8:ff::2';
const HOST_WAN6 = '2001:db8:ff::1';
const WAN2 = '198.51.100.2';

interface Distro {
  name: string;
  root: boolean;
  backend?: 'nftables' | 'iptables';
}
const distros: Distro[] = [
  { name: 'Debian 12 (libvirt 9, iptables-nft)', root: false },
  { name: 'Debian 13 (libvirt 11, nftables backend)', root: true, backend: 'nftables' },
  { name: 'Debian 13 (libvirt 11, iptables backend)', root: true, backend: 'iptables' },
];

describe.each(distros)('forward modes with real packets: $name', (distro) => {
  const f = useLibvirtLab({
    tag: `modes-${distro.root ? `d13-${distro.backend}` : 'd12'}`,
    lab: async () => ({
      root: distro.root ? (await ensureTrixieRoot()).path : undefined,
      firewallBackend: distro.backend,
    }),
    setupMs: 15 * 60_000,
  });
  const L = (): Lab => f.lab;
  let wan2: LabNetns | undefined;
  let port = 10_000;
  const t0 = Date.now();

  const host = (cmd: string, ...args: string[]) => L().exec(cmd, args);
  const sh = (where: 'host' | 'wan' | 'guest', script: string) =>
    where === 'host'
      ? L().exec('sh', ['-c', script])
      : where === 'wan'
        ? L().inWan('sh', ['-c', script])
        : L().inGuest('sh', ['-c', script]);
  const cli = (...args: string[]) => f.cli(...args);
  /** kvmnftd's plan for the running networks is empty: the daemon has caught up. */
  const converged = () => f.converged();

  const startNetwork = async (name: string, xml: string): Promise<void> => {
    await f.defineNetwork(name, xml);
    await L().virsh('net-start', name);
    await converged();
  };
  const stopNetwork = async (name: string): Promise<void> => {
    await L().virsh('net-destroy', name);
    await L().virsh('net-undefine', name);
    await converged();
  };

  /** Guest addresses: flush, then static v4 (and v6) with default routes. */
  const guestAddrs = async (
    run: (cmd: string, args: string[]) => Promise<unknown>,
    v4: string,
    gw4: string,
    v6?: string,
    gw6?: string,
  ) => {
    await run('ip', ['-4', 'addr', 'flush', 'dev', 'eth0']);
    await run('ip', ['-6', 'addr', 'flush', 'dev', 'eth0', 'scope', 'global']);
    await run('ip', ['addr', 'add', v4, 'dev', 'eth0']);
    await run('ip', ['route', 'replace', 'default', 'via', gw4, 'dev', 'eth0']);
    if (v6 !== undefined && gw6 !== undefined) {
      await run('ip', ['-6', 'addr', 'add', v6, 'dev', 'eth0', 'nodad']);
      await run('ip', ['-6', 'route', 'replace', 'default', 'via', gw6, 'dev', 'eth0']);
    }
  };
  const guest = (cmd: string, args: string[]) => L().inGuest(cmd, args);

  /** The wan's route back to a guest subnet through the host (`replace`), or its removal (`del`). */
  const wanRoute = (op: 'replace' | 'del', cidr: string) => {
    const v6 = cidr.includes(':');
    const via = op === 'replace' ? ['via', v6 ? HOST_WAN6 : HOST_WAN] : [];
    return L().inWan('ip', [...(v6 ? ['-6'] : []), 'route', op, cidr, ...via]);
  };
  /**
   * One case's network, for the describe block it is called in: started (kvmnftd caught up), then
   * `setup` (the guest's side), then the wan's routes back to `routesFromWan`; all undone afterwards.
   */
  const useNetwork = (
    name: string,
    xml: string,
    opts: { setup?: () => Promise<unknown>; routesFromWan?: string[]; teardown?: () => Promise<unknown> } = {},
  ) => {
    beforeAll(async () => {
      await startNetwork(name, xml);
      await opts.setup?.();
      for (const cidr of opts.routesFromWan ?? []) await wanRoute('replace', cidr);
    }, 60_000);
    afterAll(async () => {
      await opts.teardown?.();
      for (const cidr of opts.routesFromWan ?? []) await wanRoute('del', cidr);
      await stopNetwork(name);
    }, 30_000);
  };
  /** The lab's guest on `bridge` with static addresses. */
  const staticGuest = (bridge: string, v4: string, gw4: string, v6?: string, gw6?: string) => async () => {
    await L().attachGuest(bridge);
    await guestAddrs(guest, v4, gw4, v6, gw6);
  };

  /** A fresh listener; probe (new flows for up to retryMs, or once); returns the last probe and what the listener saw. */
  async function probe(
    target: string,
    opts: { listen?: TcpWhere; from?: TcpWhere; retryMs?: number } = {},
  ): Promise<{ result: TcpProbeResult; peers: string[]; ports: number[] }> {
    const p = ++port; // own copy: probes may run concurrently
    const listener = await L().tcpListen(p, { address: target.includes(':') ? '::' : '0.0.0.0', ...opts.listen });
    try {
      // New flows until one gets through, for up to retryMs (0: one probe); a failure is the caller's to judge.
      const probes: TcpProbeResult[] = [];
      const passed = await waitUntil(
        `a connection to ${target}:${p}`,
        opts.retryMs ?? 0,
        async () => {
          const r = await L().tcpProbe(target, p, 2000, opts.from);
          probes.push(r);
          return r.ok || undefined;
        },
        { intervalMs: 200 },
      ).catch((e: unknown) => {
        if (probes.length === 0) throw e;
        return false;
      });
      if (passed) await listener.waitForPeer(3000, 0);
      return { result: probes.at(-1)!, peers: [...listener.peers], ports: [...listener.peerPorts] };
    } finally {
      await listener.close();
    }
  }
  const mustPass = async (target: string, opts: { listen?: TcpWhere; from?: TcpWhere } = {}) => {
    const r = await probe(target, { ...opts, retryMs: 10_000 });
    expect(r.result.ok, `must pass: ${target} from ${JSON.stringify(opts.from ?? 'guest')}: ${r.result.output}`).toBe(
      true,
    );
    return r;
  };
  const mustNotPass = async (target: string, opts: { listen?: TcpWhere; from?: TcpWhere } = {}) => {
    const r = await probe(target, opts);
    expect(
      r.result.ok,
      `must NOT pass: ${target} from ${JSON.stringify(opts.from ?? 'guest')}: ${r.result.output}`,
    ).toBe(false);
    expect(r.peers).toEqual([]);
    return r;
  };

  beforeAll(async () => {
    const lab = L();
    // IPv6 in the lab host: forwarding on (the test's job, not kvmnftd's), no DAD delays.
    await sh(
      'host',
      'for k in all default; do echo 0 >/proc/sys/net/ipv6/conf/$k/accept_dad; done; echo 1 >/proc/sys/net/ipv6/conf/all/forwarding',
    );
    await host('ip', '-6', 'addr', 'add', `${HOST_WAN6}/64`, 'dev', 'eth0', 'nodad');
    await lab.inWan('ip', ['-6', 'addr', 'add', `${WAN6}/64`, 'dev', 'eth0', 'nodad']);
    await host('ip', '-6', 'route', 'add', 'default', 'via', WAN6);
    const mac = async (r: Promise<{ stdout: string }>) =>
      (JSON.parse((await r).stdout) as Array<{ address: string }>)[0]!.address;
    const hostMac = await mac(lab.exec('ip', ['-j', 'link', 'show', 'dev', 'eth0']));
    const wanMac = await mac(lab.inWan('ip', ['-j', 'link', 'show', 'dev', 'eth0']));
    await host('ip', '-6', 'neigh', 'replace', WAN6, 'lladdr', wanMac, 'dev', 'eth0', 'nud', 'permanent');
    await lab.inWan('ip', ['-6', 'neigh', 'replace', HOST_WAN6, 'lladdr', hostMac, 'dev', 'eth0', 'nud', 'permanent']);
    // the second uplink
    wan2 = await lab.addNetns('wan2');
    await host('ip', 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(wan2.pid));
    await host('ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'eth1');
    await host('ip', 'link', 'set', 'eth1', 'up');
    await wan2.exec('ip', ['addr', 'add', `${WAN2}/24`, 'dev', 'eth0']);
    await wan2.exec('ip', ['link', 'set', 'eth0', 'up']);
    // static guest addresses only: no DAD, and no SLAAC address from libvirt's router advertisements
    await sh(
      'guest',
      'for k in all default eth0; do for s in accept_dad autoconf accept_ra; do echo 0 >/proc/sys/net/ipv6/conf/$k/$s; done; done',
    );

    await f.startDaemon('dbus');
  }, 15 * 60_000);

  afterAll(() => {
    console.log(`[${distro.name}] forward modes suite: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  it('wiring: the host reaches wan (IPv4, IPv6) and wan2', async () => {
    expect((await mustPass(WAN, { from: { in: 'host' } })).peers).toEqual([HOST_WAN]);
    expect((await mustPass(WAN6, { from: { in: 'host' } })).peers).toEqual([HOST_WAN6]);
    expect((await mustPass(WAN2, { from: { in: 'host' }, listen: { in: wan2! } })).peers).toEqual(['198.51.100.1']);
  });

  describe('nat with <nat ipv6="yes"/> (IPv4 + IPv6 masquerade)', () => {
    useNetwork(
      'fmnat',
      `<network><name>fmnat</name><forward mode='nat'><nat ipv6='yes'/></forward><bridge name='virbr10' stp='off' delay='0'/>
       <ip address='10.77.10.1' prefix='24'><dhcp><range start='10.77.10.10' end='10.77.10.99'/></dhcp></ip>
       <ip family='ipv6' address='fd00:77:10::1' prefix='64'/></network>`,
      {
        setup: async () => {
          await L().attachGuest('virbr10');
          await L().inGuest('ip', ['-6', 'addr', 'flush', 'dev', 'eth0', 'scope', 'global']);
        },
        routesFromWan: ['10.77.10.0/24', 'fd00:77:10::/64'],
      },
    );

    it('nat (IPv4): DHCP lease, out masqueraded to the host; no new connection in from the wan', async () => {
      const lease = await L().dhcp({ bridge: 'virbr10' });
      expect(lease).toMatch(/^10\.77\.10\./);
      expect((await mustPass(WAN)).peers).toEqual([HOST_WAN]);
      await mustNotPass(lease, { from: { in: 'wan' }, listen: { in: 'guest' } });
    }, 60_000);

    it('nat ipv6="yes": out masqueraded to the host\'s IPv6 address; no new connection in', async () => {
      await L().inGuest('ip', ['-6', 'addr', 'add', 'fd00:77:10::50/64', 'dev', 'eth0', 'nodad']);
      await L().inGuest('ip', ['-6', 'route', 'replace', 'default', 'via', 'fd00:77:10::1', 'dev', 'eth0']);
      const out = await mustPass(WAN6);
      expect(out.peers).toEqual([HOST_WAN6]);
      await mustNotPass('fd00:77:10::50', { from: { in: 'wan' }, listen: { in: 'guest', address: '::' } });
    }, 60_000);
  });

  describe('route (IPv4 and IPv6; the wan has routes back)', () => {
    useNetwork(
      'fmroute',
      `<network><name>fmroute</name><forward mode='route'/><bridge name='virbr11' stp='off' delay='0'/>
       <ip address='10.77.11.1' prefix='24'/><ip family='ipv6' address='2001:db8:77:11::1' prefix='64'/></network>`,
      {
        setup: staticGuest('virbr11', '10.77.11.50/24', '10.77.11.1', '2001:db8:77:11::50/64', '2001:db8:77:11::1'),
        routesFromWan: ['10.77.11.0/24', '2001:db8:77:11::/64'],
      },
    );

    it("IPv4: out with the guest's own address; new connections in reach the guest; a spoofed source does not get out", async () => {
      expect((await mustPass(WAN)).peers).toEqual(['10.77.11.50']);
      expect((await mustPass('10.77.11.50', { from: { in: 'wan' }, listen: { in: 'guest' } })).peers).toEqual([WAN]);
      // a source outside the network's subnet (routes exist both ways, so only the firewall can stop it)
      await L().inGuest('ip', ['addr', 'add', '10.99.0.50/32', 'dev', 'eth0']);
      await L().exec('ip', ['route', 'replace', '10.99.0.50/32', 'dev', 'virbr11']);
      await L().inWan('ip', ['route', 'replace', '10.99.0.0/24', 'via', HOST_WAN]);
      try {
        await mustNotPass(WAN, { from: { address: '10.99.0.50' } });
      } finally {
        await L().inWan('ip', ['route', 'del', '10.99.0.0/24']);
        await L().exec('ip', ['route', 'del', '10.99.0.50/32']);
        await L().inGuest('ip', ['addr', 'del', '10.99.0.50/32', 'dev', 'eth0']);
      }
    }, 60_000);

    it("IPv6: out with the guest's own address; new connections in reach the guest", async () => {
      expect((await mustPass(WAN6)).peers).toEqual(['2001:db8:77:11::50']);
      expect(
        (await mustPass('2001:db8:77:11::50', { from: { in: 'wan' }, listen: { in: 'guest', address: '::' } })).peers,
      ).toEqual([WAN6]);
    }, 60_000);
  });

  describe('open (libvirt adds no firewall rules)', () => {
    useNetwork(
      'fmopen',
      `<network><name>fmopen</name><forward mode='open'/><bridge name='virbr12' stp='off' delay='0'/><ip address='10.77.12.1' prefix='24'/></network>`,
      {
        setup: staticGuest('virbr12', '10.77.12.50/24', '10.77.12.1'),
        routesFromWan: ['10.77.12.0/24'],
        teardown: async () => {
          f.writeConfig('# defaults\n');
          await cli('reload');
        },
      },
    );

    it("without filter.accept_open_networks: the admin's drop policy stands, nothing in or out", async () => {
      // wiring control: the guest reaches its gateway only once accepted (below); here everything is dropped
      await mustNotPass(WAN);
      await mustNotPass('10.77.12.50', { from: { in: 'wan' }, listen: { in: 'guest' } });
    }, 30_000);

    it('with filter.accept_open_networks = ["fmopen"]: out un-NATed, and in', async () => {
      f.writeConfig('[filter]\naccept_open_networks = ["fmopen"]\n');
      const r = await cli('reload');
      expect(r.exitCode, r.stderr).toBe(0);
      await converged();
      expect((await mustPass(WAN)).peers).toEqual(['10.77.12.50']);
      expect((await mustPass('10.77.12.50', { from: { in: 'wan' }, listen: { in: 'guest' } })).peers).toEqual([WAN]);
    }, 60_000);
  });

  describe('isolated (no <forward>)', () => {
    useNetwork(
      'fmiso',
      `<network><name>fmiso</name><bridge name='virbr13' stp='off' delay='0'/>
       <ip address='10.77.13.1' prefix='24'><dhcp><range start='10.77.13.10' end='10.77.13.99'/></dhcp></ip></network>`,
      { routesFromWan: ['10.77.13.0/24'] },
    );

    it('DHCP works; the wan is not reachable, nor the guest from the wan', async () => {
      const lease = await L().dhcp({ bridge: 'virbr13' });
      expect(lease).toMatch(/^10\.77\.13\./);
      await mustNotPass(WAN);
      await mustNotPass(lease, { from: { in: 'wan' }, listen: { in: 'guest' } });
    }, 60_000);
  });

  describe("nat with <forward dev='eth0'> (a second uplink eth1 -> wan2)", () => {
    useNetwork(
      'fmdev',
      `<network><name>fmdev</name><forward mode='nat' dev='eth0'/><bridge name='virbr14' stp='off' delay='0'/><ip address='10.77.14.1' prefix='24'/></network>`,
      { setup: staticGuest('virbr14', '10.77.14.50/24', '10.77.14.1') },
    );

    it('out of eth0 masqueraded; nothing out of eth1 (the host itself reaches wan2)', async () => {
      expect((await mustPass(WAN)).peers).toEqual([HOST_WAN]);
      expect((await mustPass(WAN2, { from: { in: 'host' }, listen: { in: wan2! } })).peers).toEqual(['198.51.100.1']);
      await mustNotPass(WAN2, { listen: { in: wan2! } });
    }, 60_000);
  });

  describe('nat <address> range (SNAT to 192.0.2.100)', () => {
    // The SNAT address on the host before the network, gone after it (hooks run in order, after-hooks reversed).
    beforeAll(() => host('ip', 'addr', 'add', '192.0.2.100/32', 'dev', 'eth0'));
    afterAll(() => host('ip', 'addr', 'del', '192.0.2.100/32', 'dev', 'eth0'));
    useNetwork(
      'fmaddr',
      `<network><name>fmaddr</name><forward mode='nat'><nat><address start='192.0.2.100' end='192.0.2.100'/></nat></forward>
       <bridge name='virbr15' stp='off' delay='0'/><ip address='10.77.15.1' prefix='24'/></network>`,
      { setup: staticGuest('virbr15', '10.77.15.50/24', '10.77.15.1') },
    );

    it("the wan sees the SNAT address, never the host's own address or the guest", async () => {
      for (let i = 0; i < 3; i++) {
        const r = await mustPass(WAN);
        expect(r.peers).toEqual(['192.0.2.100']);
      }
    }, 60_000);
  });

  describe('nat <port> range (20000-20099)', () => {
    useNetwork(
      'fmport',
      `<network><name>fmport</name><forward mode='nat'><nat><port start='20000' end='20099'/></nat></forward>
       <bridge name='virbr16' stp='off' delay='0'/><ip address='10.77.16.1' prefix='24'/></network>`,
      { setup: staticGuest('virbr16', '10.77.16.50/24', '10.77.16.1') },
    );

    it("every connection leaves with a source port in the range (the guest's own ports are outside it)", async () => {
      for (let i = 0; i < 4; i++) {
        const r = await mustPass(WAN);
        expect(r.peers).toEqual([HOST_WAN]);
        const seen = r.ports[0]!;
        expect(seen, `wan saw source port ${seen}`).toBeGreaterThanOrEqual(20000);
        expect(seen, `wan saw source port ${seen}`).toBeLessThanOrEqual(20099);
        const local = /CONNECTED \S+ (\d+)/.exec(r.result.output)?.[1];
        expect(Number(local)).not.toBe(seen);
      }
    }, 60_000);
  });

  describe('two networks at once (nat fmtwoa with guest, route fmtwob with guest2)', () => {
    let guest2: LabNetns | undefined;
    beforeAll(async () => {
      await startNetwork(
        'fmtwoa',
        `<network><name>fmtwoa</name><forward mode='nat'/><bridge name='virbr17' stp='off' delay='0'/><ip address='10.77.17.1' prefix='24'/></network>`,
      );
      await startNetwork(
        'fmtwob',
        `<network><name>fmtwob</name><forward mode='route'/><bridge name='virbr18' stp='off' delay='0'/><ip address='10.77.18.1' prefix='24'/></network>`,
      );
      await L().attachGuest('virbr17');
      await guestAddrs(guest, '10.77.17.50/24', '10.77.17.1');
      guest2 = await L().addNetns('guest2');
      await host('ip', 'link', 'add', 'vguest1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(guest2.pid));
      await host('ip', 'link', 'set', 'vguest1', 'master', 'virbr18');
      await host('ip', 'link', 'set', 'vguest1', 'up');
      await guest2.exec('ip', ['link', 'set', 'eth0', 'up']);
      await guestAddrs((c, a) => guest2!.exec(c, a), '10.77.18.50/24', '10.77.18.1');
      await L().inWan('ip', ['route', 'replace', '10.77.17.0/24', 'via', HOST_WAN]);
      await L().inWan('ip', ['route', 'replace', '10.77.18.0/24', 'via', HOST_WAN]);
    }, 60_000);
    afterAll(async () => {
      await L().inWan('ip', ['route', 'del', '10.77.17.0/24']);
      await L().inWan('ip', ['route', 'del', '10.77.18.0/24']);
      await host('ip', 'link', 'del', 'vguest1');
      await stopNetwork('fmtwoa');
      await stopNetwork('fmtwob');
    }, 30_000);

    it('both guests get out at once (a masqueraded, b routed); the wan reaches b, not a; b cannot open a connection to a', async () => {
      const g2: TcpWhere = { in: guest2! };
      const [a, b] = await Promise.all([mustPass(WAN), mustPass(WAN, { from: g2 })]);
      expect(a.peers).toEqual([HOST_WAN]);
      expect(b.peers).toEqual(['10.77.18.50']);
      expect((await mustPass('10.77.18.50', { from: { in: 'wan' }, listen: g2 })).peers).toEqual([WAN]);
      // a (NAT) may open connections to b (routed), masqueraded to b's bridge address as libvirt does
      // (a NAT network masquerades everything leaving its subnet); the reverse is inbound to a NAT network
      expect((await mustPass('10.77.18.50', { listen: g2 })).peers).toEqual(['10.77.18.1']);
      await mustNotPass('10.77.17.50', { from: { in: 'wan' }, listen: { in: 'guest' } });
      await mustNotPass('10.77.17.50', { from: g2, listen: { in: 'guest' } });
    }, 60_000);
  });
});
