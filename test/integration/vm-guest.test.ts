/**
 * Scenario 7: a REAL libvirt domain instead of the lab's veth guest. qemu with
 * software emulation (TCG) boots Debian's stock kernel with a busybox
 * initramfs (test/lab/vm.ts, test/lab/vm-init.sh) as a transient
 * `<domain type='qemu'>` on the lab's default network: libvirt makes the tap
 * and puts it on virbr0; the guest's own udhcpc asks libvirt's dnsmasq for a
 * lease, then the guest opens a TCP connection to a listener in the lab's wan
 * namespace, printing the outcome on its serial console.
 *
 * Behind the admin's drop-policy ruleset:
 *   - without kvmnftd the guest gets no lease (the input chain drops DHCP);
 *   - with `kvmnftd run` the guest gets a lease and reaches the wan, which sees
 *     the host's wan address (masqueraded by kvmnftd's rules).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { ruleset, spawnDaemon } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';
import { HOST_WAN_ADDR, LAB_FILES, WAN_ADDR, type TcpListener } from '../lab/lab.js';
import {
  buildVmArtifacts,
  prepareLabForQemu,
  requireQemu,
  startGuest,
  type Guest,
  type VmArtifacts,
} from '../lab/vm.js';

const PORT = 8080;

describe('a real libvirt domain (qemu TCG, Debian kernel, busybox udhcpc) behind the admin drop-policy ruleset', () => {
  // libvirtd starts once qemu.conf is set for the lab (prepareLabForQemu)
  const f = useLibvirtLab({ tag: 'vm', lab: { libvirtd: false } });
  let artifacts: VmArtifacts | undefined;
  let listener: TcpListener | undefined;
  const guests: Guest[] = [];
  const theArtifacts = (): VmArtifacts =>
    artifacts ??
    (() => {
      throw new Error('no VM artifacts');
    })();
  const t0 = Date.now();
  const timings: Record<string, number | string> = {};

  beforeAll(async () => {
    requireQemu(); // fails (not skips) with an install hint when qemu is missing
    let t = Date.now();
    artifacts = await buildVmArtifacts();
    timings['artifacts'] =
      `${Date.now() - t} ms (${artifacts.built.initrd || artifacts.built.kernel ? `built; downloaded: ${artifacts.built.downloaded.join(', ') || 'none'}` : 'cached'})`;
    t = Date.now();
    await prepareLabForQemu(f.lab);
    await f.lab.virsh('net-define', LAB_FILES.defaultNetworkXml);
    await f.lab.virsh('net-start', 'default');
    listener = await f.lab.tcpListen(PORT);
    timings['lab'] = Date.now() - t;
  }, 120_000);

  afterAll(async () => {
    for (const g of guests) await g.destroy().catch(() => undefined);
    timings['whole file'] = Date.now() - t0;
    console.log(`[vm-guest] timings: ${JSON.stringify(timings)}`);
  }, 60_000);

  it('the artifacts: Debian kernel, newc initramfs with a static busybox and the virtio NIC modules in load order', () => {
    const a = theArtifacts();
    expect(a.kernelPackage).toMatch(/^linux-image-\d.*-amd64$/);
    expect(a.modules).toEqual(expect.arrayContaining(['virtio_pci', 'virtio_net']));
    expect(a.modules.indexOf('virtio_ring')).toBeLessThan(a.modules.indexOf('virtio'));
    expect(a.modules.indexOf('failover')).toBeLessThan(a.modules.indexOf('net_failover'));
    expect(a.modules.indexOf('net_failover')).toBeLessThan(a.modules.indexOf('virtio_net'));
  });

  it('without kvmnftd: the domain boots and asks for DHCP, but gets no lease (the admin input chain drops it)', async () => {
    const lab = f.lab;
    const g = await startGuest(lab, {
      name: 'vm-nodaemon',
      artifacts: theArtifacts(),
      probe: { host: WAN_ADDR, port: PORT },
    });
    guests.push(g);
    expect(g.tap?.master, "libvirt put the domain's tap on virbr0").toBe('virbr0');
    expect(g.tap?.name).toMatch(/^vnet\d+$/);
    timings['virsh create (first domain)'] = g.createMs;
    const boot = await g.waitForLog(/^KVMNFTD-NIC eth0/m, 40_000);
    timings['boot to NIC (no daemon)'] = boot.ms;
    await g.waitForLog(/^KVMNFTD-DONE/m, 40_000);
    const rep = g.report();
    expect(rep.insmodFailures, g.serialLog()).toEqual([]);
    expect(rep.lease, g.serialLog()).toBeNull();
    expect(rep.probe).toBe('fail');
    // udhcpc really asked, all 15 times, and dnsmasq handed out nothing
    expect(g.serialLog().match(/^udhcpc: broadcasting discover/gm)?.length ?? 0, g.serialLog()).toBe(15);
    expect(g.serialLog()).toMatch(/^udhcpc: no lease, failing/m);
    expect(rep.mac).toMatch(/^52:54:00:/);
    expect((await lab.virsh('net-dhcp-leases', 'default')).stdout).not.toContain(rep.mac);
    expect(listener?.peers ?? []).toEqual([]);
    // it powered itself off; <on_poweroff>destroy</on_poweroff> and a transient domain: gone
    expect(await g.waitGone(15_000)).toBe(true);
    timings['no-daemon run'] = Date.now() - g.startedAt;
  }, 70_000);

  it('with kvmnftd run: the domain gets a lease from dnsmasq and reaches the wan, which sees 192.0.2.1', async () => {
    const lab = f.lab;
    const daemon = spawnDaemon(lab, f.env, ['--events', 'dbus', '--config', f.config]);
    const child = daemon.child;
    const dump = () => daemon.dump();
    await waitUntil(
      "kvmnftd's nat_virbr0 chain",
      15_000,
      async () =>
        (await ruleset(lab)).natChains.includes('nat_virbr0') || (child.exitCode !== null ? undefined : false),
      { detail: () => `--- daemon log ---\n${dump()}` },
    );
    expect(child.exitCode, dump()).toBeNull();

    const g = await startGuest(lab, {
      name: 'vm-daemon',
      artifacts: theArtifacts(),
      probe: { host: WAN_ADDR, port: PORT },
    });
    guests.push(g);
    expect(g.tap?.master).toBe('virbr0');
    const nic = await g.waitForLog(/^KVMNFTD-NIC eth0/m, 40_000);
    const lease = await g.waitForLog(/^KVMNFTD-LEASE (\S+)/m, 40_000);
    timings['virsh create'] = g.createMs;
    timings['boot to NIC'] = nic.ms;
    timings['boot to lease'] = lease.ms;
    await g.waitForLog(/^KVMNFTD-DONE/m, 30_000);
    const rep = g.report();
    timings['guest uptime at lease (s)'] = rep.uptime.lease ?? -1;
    expect(rep.lease, g.serialLog()).toMatch(/^192\.168\.122\.\d+$/);
    expect(rep.probe, g.serialLog()).toBe('ok');
    // libvirt's own view: dnsmasq leased that address to the guest's MAC
    const leases = (await lab.virsh('net-dhcp-leases', 'default')).stdout;
    expect(
      leases.split('\n').some((l) => l.includes(rep.mac ?? '?') && l.includes(`${rep.lease}/24`)),
      leases,
    ).toBe(true);
    expect(await listener!.waitForPeer(5000, 0)).toBe(HOST_WAN_ADDR);
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
    expect(await g.waitGone(15_000)).toBe(true);
    timings['daemon run'] = Date.now() - g.startedAt;
    expect(child.exitCode, dump()).toBeNull();
    const errors = daemon.logs.filter((r) => r.level >= 50);
    expect(errors, dump()).toEqual([]);
  }, 90_000);

  it("stop(): no qemu (or anything else) left in the lab's namespaces", async () => {
    const lab = f.lab;
    for (const g of guests) await g.destroy();
    const comm = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        return '';
      }
    };
    // both domains powered themselves off: no qemu is left before stop() either
    expect(
      lab
        .processes()
        .map(comm)
        .filter((c) => c.startsWith('qemu')),
    ).toEqual([]);
    const report = await lab.stop();
    expect(report.errors).toEqual([]);
    expect(report.remaining).toEqual([]);
    expect(report.stragglers.filter((s) => s.comm.startsWith('qemu'))).toEqual([]);
  }, 60_000);
});
