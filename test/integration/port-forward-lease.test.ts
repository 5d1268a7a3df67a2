/**
 * Port forwards to a guest named by MAC and by domain name, resolved from the
 * real libvirt dnsmasq lease (the hermetic libvirt lab: libvirtd 9, its
 * dnsmasq and leaseshelper, a guest netns with busybox udhcpc), with
 * `kvmnftd run` following domain events and the lease status file:
 *
 *   wan 192.0.2.2 ══ host 192.0.2.1 [admin drop-policy ruleset, libvirt 9 LIBVIRT_FWI reject]
 *                    └ virbr0 192.168.122.1/24 ── guest netns (udhcpc, MAC M, TCP server on 2222)
 *                                              └─ domain web1: qemu, created PAUSED (never boots), whose
 *                                                 interface has the same MAC M: libvirt reports it running
 *                                                 on network default, the lease is the netns guest's.
 *
 * The domain never runs code: its tap carries libvirt's fe:54:... address, so the netns guest is the only
 * station with MAC M on the bridge, and packets for "web1" reach the netns guest.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor/index.js';
import type { ForwardStatus, StatusReport } from '../../src/status/evaluate.js';
import { waitUntil } from '../helpers/wait.js';
import { HOST_WAN_ADDR, WAN_ADDR, type Lab } from '../lab/lab.js';
import { prepareLabForQemu, QEMU_BINARY } from '../lab/vm.js';
import { changeLease, guestMac } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

const PORT = 2222;
/** Addresses the guest asks for in turn (inside the lab network's DHCP range). */
const ASK = ['192.168.122.150', '192.168.122.151'];

/** A domain that is never booted: created paused, an interface on `network` with `mac`. */
function pausedDomainXml(name: string, mac: string, network = 'default'): string {
  return `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices><emulator>${QEMU_BINARY}</emulator>
    <interface type='network'><source network='${network}'/><mac address='${mac}'/><model type='virtio'/>
      <rom enabled='no'/></interface>
    <controller type='usb' model='none'/><memballoon model='none'/>
  </devices></domain>`;
}

describe('port forwards resolved from real leases (MAC and domain name), following events', () => {
  const f = useLibvirtLab({ tag: 'pf-lease', lab: { defaultNetwork: 'start' } });
  let mac = '';

  const status = async (): Promise<StatusReport> => {
    const r = await f.cli('status', '--json');
    return JSON.parse(r.stdout) as StatusReport;
  };
  const forwards = async (): Promise<ForwardStatus[]> => (await status()).forwards;
  const doctor = async (): Promise<DoctorReport> =>
    JSON.parse((await f.cli('doctor', '--json')).stdout) as DoctorReport;
  /** Waits until the forward `name` is in `state` (and at `target`, when given). */
  const forwardIs = (name: string, state: ForwardStatus['state'], target?: string) =>
    waitUntil(`${name} ${state}${target ? ` at ${target}` : ''}`, 15_000, async () => {
      const fw = (await forwards()).find((x) => x.name === name);
      return fw?.state === state && (target === undefined || fw.target[0] === target) ? fw : undefined;
    });
  /** A new connection from the wan to the host's uplink address reaches the guest, which sees the wan address. */
  const wanReachesGuest = async (hostPort: number): Promise<void> => {
    const listener = await f.lab.tcpListen(PORT, { in: 'guest' });
    try {
      let last = '';
      await waitUntil(
        `wan -> ${HOST_WAN_ADDR}:${hostPort} -> guest:${PORT}`,
        10_000,
        async () => {
          const p = await f.lab.tcpProbe(HOST_WAN_ADDR, hostPort, 2000, { in: 'wan' });
          last = p.output;
          return p.ok;
        },
        { intervalMs: 200, detail: () => last },
      );
      expect(await listener.waitForPeer(5000, 0)).toBe(WAN_ADDR);
    } finally {
      await listener.close();
    }
  };

  beforeAll(async () => {
    mac = await guestMac(f.lab);
    await f.lab.attachGuest();
    await prepareLabForQemu(f.lab); // restarts the lab's libvirtd with a qemu.conf for the lab
    f.writeConfig(`
[[port_forward]]
network = "default"
proto = "tcp"
host_port = ${PORT}
to = "${mac}"

[[port_forward]]
network = "default"
proto = "tcp"
host_port = 2223
to = "web1"
to_port = ${PORT}

[[port_forward]]
network = "default"
proto = "tcp"
host_port = 2224
to = "10.9.9.9"

[[port_forward]]
network = "default"
proto = "udp"
host_port = 5300
to = "52:54:00:99:99:99"
`);
    await f.startDaemon('dbus');
  }, 60_000);

  it('status: "waiting" before the lease exists (and before the domain runs), "invalid" off the network', async () => {
    const fw = await forwards();
    expect(fw.map((x) => [x.name, x.state, x.reason])).toEqual([
      ['port_forward[0]', 'waiting', `waiting: ${mac} has no DHCP lease on network default yet`],
      ['port_forward[1]', 'waiting', 'waiting: domain web1 is not running'],
      ['port_forward[2]', 'invalid', expect.stringMatching(/10\.9\.9\.9 is not inside a subnet of network default/)],
      ['port_forward[3]', 'waiting', 'waiting: 52:54:00:99:99:99 has no DHCP lease on network default yet'],
    ]);
  }, 30_000);

  it('a lease (udhcpc in the guest) makes the MAC forward active: wan -> host:2222 -> guest, counters move', async () => {
    const from = f.daemon.logs.length;
    const leased = await changeLease(f.lab, ASK[0]!);
    const active = await forwardIs('port_forward[0]', 'active', leased);
    expect(active.rules).toBe('ok');
    // The lease watch started the pass (the periodic check is 60 s away).
    expect(f.daemon.applied(from).map((r) => r['event'])).toContain('lease change');
    await wanReachesGuest(PORT);
    const after = (await forwards())[0]!;
    expect(after.counters.dnat!.packets).toBeGreaterThan(active.counters.dnat!.packets);
    expect(after.counters.accept!.packets).toBeGreaterThan(active.counters.accept!.packets);
  }, 60_000);

  it("libvirt's status file has the fields the parser reads (leaseshelper's real output)", () => {
    const text = readLeaseFile(f.lab);
    const leases = JSON.parse(text) as Array<Record<string, unknown>>;
    const lease = leases.find((l) => l['mac-address'] === mac);
    expect(lease?.['ip-address']).toBe(ASK[0]);
    expect(typeof lease?.['expiry-time']).toBe('number');
  });

  it('a domain started with that MAC on the network: its name resolves (domain event), the forward works', async () => {
    const from = f.daemon.logs.length;
    const file = join(f.work, 'web1.xml');
    writeFileSync(file, pausedDomainXml('web1', mac));
    await f.lab.virsh('create', file, '--paused');
    await forwardIs('port_forward[1]', 'active', ASK[0]);
    expect(f.daemon.events(from).map((e) => e.msg)).toContain('event: domain started');
    await wanReachesGuest(2223);
  }, 90_000);

  it('the lease changes (release, another address): both forwards follow', async () => {
    const from = f.daemon.logs.length;
    const leased = await changeLease(f.lab, ASK[1]!, ASK[0]);
    expect(leased).toBe(ASK[1]);
    await forwardIs('port_forward[0]', 'active', leased);
    await forwardIs('port_forward[1]', 'active', leased);
    expect(f.daemon.applied(from).map((r) => r['event'])).toContain('lease change');
    await wanReachesGuest(PORT);
    await wanReachesGuest(2223);
  }, 60_000);

  it('doctor: target not on the network, no address, a host socket on a forwarded port', async () => {
    const listener = await f.lab.tcpListen(2224, { in: 'host' });
    try {
      const report = await doctor();
      const byId = (id: string) => report.findings.filter((x) => x.ids.includes(id));
      expect(byId('forward-target-not-on-network').map((x) => x.title)).toEqual([
        expect.stringMatching(/^port_forward\[2\] \(tcp 2224 -> 10\.9\.9\.9 on network default\)/),
      ]);
      expect(byId('forward-guest-no-address').map((x) => x.title)).toEqual([
        'port_forward[3] (udp 5300 -> 52:54:00:99:99:99 on network default) is waiting: the guest has no address yet',
      ]);
      expect(byId('forward-port-shadowed').map((x) => x.evidence)).toEqual([['listening: tcp 0.0.0.0:2224']]);
      expect(byId('forward-blocked-by-libvirt')).toEqual([]);
    } finally {
      await listener.close();
    }
  }, 60_000);

  it('the domain is destroyed: its forward waits again (domain event), the MAC forward stays', async () => {
    const from = f.daemon.logs.length;
    await f.lab.virsh('destroy', 'web1');
    await forwardIs('port_forward[1]', 'waiting');
    expect(f.daemon.events(from).map((e) => e.msg)).toContain('event: domain stopped');
    expect((await forwards())[0]!.state).toBe('active');
  }, 30_000);

  it("with --events virsh: the domains' own event stream (virsh event) starts the passes", async () => {
    f.daemon.child.kill('SIGTERM');
    await f.daemon.exited;
    const d = await f.startDaemon('virsh');
    expect(d.logs.map((r) => r.msg)).toContainEqual(
      expect.stringMatching(/domain events: virsh event on qemu:\/\/\/system/),
    );
    const from = d.logs.length;
    await f.lab.virsh('create', join(f.work, 'web1.xml'), '--paused');
    await forwardIs('port_forward[1]', 'active', ASK[1]);
    await f.lab.virsh('destroy', 'web1');
    await forwardIs('port_forward[1]', 'waiting');
    expect(d.events(from).map((e) => e.msg)).toEqual(
      expect.arrayContaining(['event: domain started', 'event: domain stopped']),
    );
  }, 60_000);
});

function readLeaseFile(lab: Lab): string {
  return readFileSync(lab.path('/var/lib/libvirt/dnsmasq/virbr0.status'), 'utf8');
}
