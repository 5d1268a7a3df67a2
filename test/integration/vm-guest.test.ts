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
 *     the host's wan address (masqueraded by kvmnftd's rules);
 *   - a port forward set in the RUNNING domain's <metadata> with `virsh
 *     metadata --live --config` carries real packets from the wan to a TCP
 *     server in the guest, without restarting the domain (libvirt's
 *     metadata-change event, over D-Bus, then over `virsh event`); a port
 *     outside `[metadata_forwards] host_ports` is ignored and doctor says so;
 *     removing the metadata removes the rules.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { ruleset, spawnDaemon, type Daemon } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';
import { HOST_WAN_ADDR, LAB_FILES, WAN_ADDR, type Lab, type TcpListener } from '../lab/lab.js';
import { METADATA_NAMESPACE } from '../../src/libvirt/metadata-forwards.js';
import {
  buildVmArtifacts,
  prepareLabForQemu,
  requireQemu,
  startGuest,
  type Guest,
  type VmArtifacts,
} from '../lab/vm.js';

const PORT = 8080;
/** Host ports the admin lets domain metadata forwards use in this file. */
const METADATA_HOST_PORTS = '[2222, "2300-2309"]';

/** ms from `t` (Date.now()) to the daemon's first transaction applied after log index `from` (its log record). */
async function appliedAfter(d: Daemon, from: number, t: number): Promise<number> {
  // The record may reach the test's pipe a little after the rules work.
  const record = await waitUntil('an applied transaction in the daemon log', 5_000, () => d.applied(from)[0], {
    detail: () => d.dump(),
  });
  const time = record['time']; // ISO 8601 (KVMNFTD_LOG_FORMAT=json)
  return typeof time === 'string' ? Date.parse(time) - t : -1;
}

/** The rules of kvmnftd's pf_prerouting chain (DNAT from outside), as nft prints them; none when it is gone. */
async function dnatRules(lab: Lab): Promise<string[]> {
  const r = await lab.exec('nft', ['list', 'chain', 'inet', 'kvmnftd', 'pf_prerouting'], { reject: false });
  return r.exitCode === 0
    ? r.stdout
        .split('\n')
        .filter((l) => l.includes('dnat'))
        .map((l) => l.trim())
    : [];
}

describe('a real libvirt domain (qemu TCG, Debian kernel, busybox udhcpc) behind the admin drop-policy ruleset', () => {
  // libvirtd starts once qemu.conf is set for the lab (prepareLabForQemu)
  const f = useLibvirtLab({ tag: 'vm', lab: { libvirtd: false } });
  let artifacts: VmArtifacts | undefined;
  let listener: TcpListener | undefined;
  const guests: Guest[] = [];
  let daemon: Daemon | undefined;
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
    // Metadata forwards on from the start: the daemon's passes read the running domains all along.
    f.writeConfig(`[metadata_forwards]\nhost_ports = ${METADATA_HOST_PORTS}\n`);
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
    const d = spawnDaemon(lab, f.env, ['--events', 'dbus', '--config', f.config]);
    daemon = d;
    const child = d.child;
    const dump = () => d.dump();
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
    const errors = d.logs.filter((r) => r.level >= 50);
    expect(errors, dump()).toEqual([]);
  }, 90_000);

  it("a forward in the RUNNING domain's metadata (virsh metadata --live --config) carries real packets, no restart", async () => {
    const lab = f.lab;
    const d = daemon;
    if (!d) throw new Error('the daemon of the previous test is not running');
    const dump = () => d.dump();
    const g = await startGuest(lab, {
      name: 'vm-meta',
      artifacts: theArtifacts(),
      probe: 'none',
      serve: 22,
      persistent: true, // --config needs a persistent domain
    });
    guests.push(g);
    const lease = (await g.waitForLog(/^KVMNFTD-LEASE (\S+)/m, 40_000)).match[1];
    expect(lease, g.serialLog()).toMatch(/^192\.168\.122\.\d+$/);
    await g.waitForLog(/^KVMNFTD-SERVE 22/m, 10_000);
    expect(await g.running(), g.serialLog()).toBe(true);
    const domid = (await lab.virsh('domid', 'vm-meta')).stdout.trim();
    const wanProbe = (port: number, ms = 1500) => lab.tcpProbe(HOST_WAN_ADDR, port, ms, { in: 'wan' });
    // Nothing forwards 2222 yet.
    expect((await wanProbe(2222)).ok).toBe(false);
    expect(await dnatRules(lab)).toEqual([]);

    const metadata =
      '<forwards><forward proto="tcp" host_port="2222" to_port="22"/>' +
      '<forward proto="tcp" host_port="2399" to_port="22"/></forwards>';
    const from = d.logs.length;
    const t = Date.now();
    await lab.virsh(
      'metadata',
      'vm-meta',
      METADATA_NAMESPACE,
      '--key',
      'kvmnftd',
      '--set',
      metadata,
      '--live',
      '--config',
    );
    const probe = await waitUntil(
      'wan -> host:2222 -> vm-meta:22',
      15_000,
      async () => {
        const p = await wanProbe(2222, 1000);
        return p.ok ? p : undefined;
      },
      { detail: () => `--- daemon log ---\n${d.dump()}` },
    );
    timings['virsh metadata -> forward works (ms)'] = Date.now() - t;
    timings['virsh metadata -> rules applied (ms)'] = await appliedAfter(d, from, t);
    const event = d.events(from).find((r) => r.msg.includes('metadata'))?.['time'];
    timings['virsh metadata -> event received (ms)'] = typeof event === 'string' ? Date.parse(event) - t : -1;
    expect(probe.ok).toBe(true);
    // The guest saw the wan client's own address: DNAT, no SNAT.
    const conn = await g.waitForLog(/^KVMNFTD-CONN (\S+) 22/m, 5_000);
    expect(conn.match[1], g.serialLog()).toBe(WAN_ADDR);
    // The event, not the periodic check, brought it (resync_interval is 60 s).
    expect(
      d
        .events(from)
        .map((r) => r.msg)
        .join('\n'),
      dump(),
    ).toMatch(/metadata/);
    // The same domain, never restarted.
    expect((await lab.virsh('domid', 'vm-meta')).stdout.trim()).toBe(domid);
    // What libvirt stores (test/fixtures/metadata-forwards/libvirt9 is one such capture).
    const liveXml = (await lab.virsh('dumpxml', 'vm-meta')).stdout;
    expect(liveXml).toContain(`<kvmnftd:forwards xmlns:kvmnftd="${METADATA_NAMESPACE}">`);
    if (process.env['KVMNFTD_CAPTURE_XML']) writeFileSync(process.env['KVMNFTD_CAPTURE_XML'], liveXml);
    // --config: the persistent definition carries it too.
    expect((await lab.virsh('dumpxml', '--inactive', 'vm-meta')).stdout).toContain(METADATA_NAMESPACE);

    // status lists it like a config forward: named after the domain and entry, active, its DNAT counted.
    const status = await f.cli('status', '--json');
    const forwards = (
      JSON.parse(status.stdout) as {
        forwards: Array<{ name: string; state: string; to: string; target: string[]; counters: { dnat: unknown } }>;
      }
    ).forwards;
    expect(
      forwards.map((x) => `${x.name} ${x.state} ${x.target.join(',')}`),
      status.stdout,
    ).toEqual([`domain vm-meta metadata forward[0] active ${lease}`]);
    // At least the probe's connection went through its DNAT.
    expect((forwards[0]!.counters.dnat as { packets: number } | null)?.packets, status.stdout).toBeGreaterThan(0);

    // 2399 is outside host_ports: no rule, no forward, and doctor says which entry and why.
    expect((await dnatRules(lab)).filter((r) => r.includes('2399'))).toEqual([]);
    expect((await wanProbe(2399)).ok).toBe(false);
    const doctor = await f.cli('doctor', '--json');
    const findings = (JSON.parse(doctor.stdout) as { findings: Array<{ ids: string[]; title: string }> }).findings;
    expect(
      findings.filter((x) => x.ids.includes('metadata-forward-ignored')).map((x) => x.title),
      doctor.stdout,
    ).toEqual([
      'domain vm-meta metadata forward[1]: ignored: host_port 2399 is not inside [metadata_forwards] host_ports ' +
        '(2222, 2300-2309)',
    ]);

    // Removing the metadata removes the rules.
    await lab.virsh('metadata', 'vm-meta', METADATA_NAMESPACE, '--remove', '--live', '--config');
    await waitUntil('no DNAT rule left', 15_000, async () => (await dnatRules(lab)).length === 0, {
      detail: () => `--- daemon log ---\n${d.dump()}`,
    });
    expect((await wanProbe(2222)).ok).toBe(false);
    expect(d.child.exitCode, dump()).toBeNull();
    expect(
      d.logs.filter((r) => r.level >= 50),
      dump(),
    ).toEqual([]);
  }, 120_000);

  it('the same over the virsh transport (virsh event --event metadata-change): a new metadata forward works', async () => {
    const lab = f.lab;
    const old = daemon;
    old?.child.kill('SIGTERM');
    if (old) await old.exited;
    // READY=1 follows its first pass: a metadata change after it can only reach it as an event.
    const d = await f.startDaemon('virsh');
    daemon = d;
    const g = guests.find((x) => x.name === 'vm-meta');
    if (!g) throw new Error('vm-meta is not running');
    const from = d.logs.length;
    const t = Date.now();
    await lab.virsh(
      'metadata',
      'vm-meta',
      METADATA_NAMESPACE,
      '--key',
      'kvmnftd',
      '--live',
      '--config',
      '--set',
      '<forwards><forward proto="tcp" host_port="2305" to_port="22"/></forwards>',
    );
    await waitUntil(
      'wan -> host:2305 -> vm-meta:22',
      15_000,
      async () => (await lab.tcpProbe(HOST_WAN_ADDR, 2305, 1000, { in: 'wan' })).ok || undefined,
      { detail: () => `--- daemon log ---\n${d.dump()}` },
    );
    timings['virsh metadata -> forward works, virsh transport (ms)'] = Date.now() - t;
    timings['virsh metadata -> rules applied, virsh transport (ms)'] = await appliedAfter(d, from, t);
    expect(
      d
        .events(from)
        .map((r) => r.msg)
        .join('\n'),
      d.dump(),
    ).toMatch(/metadata/);
    await lab.virsh('metadata', 'vm-meta', METADATA_NAMESPACE, '--remove', '--live', '--config');
    await waitUntil('no DNAT rule left', 15_000, async () => (await dnatRules(lab)).length === 0, {
      detail: () => `--- daemon log ---\n${d.dump()}`,
    });
    await g.destroy();
    expect(
      d.logs.filter((r) => r.level >= 50),
      d.dump(),
    ).toEqual([]);
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
