/**
 * Proves the libvirt lab (test/lab/lab.ts) with real components: private
 * namespaces, dbus-daemon with D-Bus activation of libvirt-dbus, libvirtd,
 * libvirt's dnsmasq, busybox udhcpc, real packets; and that stop() leaves
 * nothing behind.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onLines } from '../helpers/lines.js';
import { sleep, waitUntil } from '../helpers/wait.js';
import {
  BUS,
  busCall,
  busOwnerPid,
  HOST_WAN_ADDR,
  LAB_FILES,
  LabStartError,
  LIBVIRT_DBUS,
  WAN_ADDR,
  startLab,
  type Lab,
  type StopReport,
} from './lab.js';

/** Mounts of the real mount namespace, minus other test suites' `ip netns` mounts (they come and go concurrently). */
function realMounts(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !/ \/run\/netns\/(?!kvl-)/.test(l))
    .sort();
}

function realLinkExists(name: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function readProc(pid: number, file: string): string {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Collects a child's stdout lines. */
function lines(child: ChildProcess): string[] {
  const out: string[] = [];
  onLines(child.stdout, (line) => out.push(line));
  child.stderr?.resume();
  return out;
}

/** NetworkEvent signals seen by dbus-monitor: [network object path, event number]. */
function networkEvents(monitorLines: readonly string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i < monitorLines.length; i++) {
    if (!/member=NetworkEvent\b/.test(monitorLines[i] ?? '')) continue;
    const path = monitorLines[i + 1]?.match(/object path "([^"]+)"/)?.[1];
    const ev = monitorLines[i + 2]?.match(/int32 (-?\d+)/)?.[1];
    if (path !== undefined && ev !== undefined) out.push([path, Number(ev)]);
  }
  return out;
}

const SENTINEL_XML = `<network>
  <name>labsentinel</name>
  <bridge name='virbr-sen' stp='off' delay='0'/>
</network>
`;

const EVT_NET_XML = `<network>
  <name>labevt</name>
  <bridge name='virbr-evt' stp='off' delay='0'/>
  <ip address='198.51.100.1' netmask='255.255.255.0'/>
</network>
`;

describe('libvirt lab', () => {
  let lab: Lab | undefined;
  let stopReport: StopReport | undefined;
  const mountsBefore = realMounts();
  const netnsBefore = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const timings: Record<string, number> = {};
  let monitor: string[] = [];
  let virshEvents: string[] = [];

  beforeAll(async () => {
    const t = Date.now();
    lab = await startLab();
    timings.startLab = Date.now() - t;
  }, 60_000);

  afterAll(async () => {
    if (lab && !stopReport) await lab.stop();
    console.log(`lab timings (ms): ${JSON.stringify({ ...timings, phases: lab?.timings })}`);
  }, 60_000);

  it('runs libvirtd, the bus and D-Bus-activated libvirt-dbus in private namespaces', async () => {
    const l = lab!;
    expect(l.namespaces.mnt).toMatch(/^mnt:\[\d+\]$/);
    expect(l.namespaces.mnt).not.toBe(readlinkSync('/proc/self/ns/mnt'));
    expect(l.namespaces.hostNet).not.toBe(readlinkSync('/proc/self/ns/net'));
    expect(l.libvirtdPid()).toBeGreaterThan(1);
    // Only the lab's /run has the bus socket and libvirt's sockets.
    const labRun = (await l.exec('ls', ['/run/dbus', '/run/libvirt'])).stdout;
    expect(labRun).toContain('system_bus_socket');
    expect(labRun).toContain('libvirt-sock');

    // The first call to org.libvirt activates libvirt-dbus through the bus (launch helper).
    expect(await busCall(l, BUS, 'org.freedesktop.DBus.NameHasOwner', 'string:org.libvirt')).toContain('boolean false');
    expect(await busCall(l, LIBVIRT_DBUS, 'org.libvirt.Connect.ListNetworks', 'uint32:0')).toContain('array [');
    const owner = await busCall(l, BUS, 'org.freedesktop.DBus.GetConnectionUnixUser', 'string:org.libvirt');
    const uid = Number(/uint32 (\d+)/.exec(owner)?.[1]);
    expect(uid).toBe(Number(execFileSync('id', ['-u', 'libvirtdbus'], { encoding: 'utf8' }).trim()));
    const pid = await busOwnerPid(l, 'org.libvirt');
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toEqual([
      '/usr/sbin/libvirt-dbus',
      '--system',
      '',
    ]);
    expect(l.processes()).toContain(pid);
    // The bus runs as messagebus and cannot setuid: libvirt-dbus running as
    // libvirtdbus proves activation went through the setuid launch helper.
    expect(readProc(l.busPid, 'status')).toMatch(
      new RegExp(`^Uid:\\s+${execFileSync('id', ['-u', 'messagebus'], { encoding: 'utf8' }).trim()}\\s`, 'm'),
    );
  }, 30_000);

  it('defines and starts the default network: virbr0 and dnsmasq in the lab only; events on D-Bus and virsh', async () => {
    const l = lab!;
    const mon = l.spawnInLab('dbus-monitor', ['--system', "type='signal',interface='org.libvirt.Connect'"]);
    monitor = lines(mon);
    const ev = l.spawnInLab('virsh', ['-c', 'qemu:///system', 'net-event', '--loop', '--event', 'lifecycle']);
    virshEvents = lines(ev);
    // Both must be subscribed before anything happens: define/undefine a sentinel
    // network until both have seen it, then look only at what follows.
    writeFileSync(l.path('/run/labsentinel.xml'), SENTINEL_XML);
    await waitUntil(
      'dbus-monitor and virsh net-event to see a sentinel network undefined',
      15_000,
      async () => {
        await l.virsh('net-define', '/run/labsentinel.xml');
        await l.virsh('net-undefine', 'labsentinel');
        return (
          virshEvents.includes("event 'lifecycle' for network labsentinel: Undefined") &&
          networkEvents(monitor).some(([, n]) => n === 1)
        );
      },
      { intervalMs: 100 },
    );
    monitor.splice(0);
    virshEvents.splice(0);

    await l.virsh('net-define', LAB_FILES.defaultNetworkXml);
    let t = Date.now();
    await l.virsh('net-start', 'default');
    timings.netStart = Date.now() - t;

    expect((await l.exec('ip', ['-br', 'link', 'show', 'dev', 'virbr0'])).stdout).toMatch(/^virbr0\b/);
    expect((await l.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', 'virbr0'])).stdout).toContain('192.168.122.1/24');
    expect(realLinkExists('virbr0')).toBe(false);
    const dns = l.dnsmasqPids();
    expect(dns.length).toBe(1);
    expect(readFileSync(`/proc/${dns[0]}/cmdline`, 'utf8')).toContain('/var/lib/libvirt/dnsmasq/default.conf');
    // libvirt 9's iptables-nft tables sit next to the admin's inet filter
    const tables = (await l.nft('list', 'tables')).stdout;
    expect(tables).toContain('table inet filter');
    expect(tables).toContain('table ip nat');
    const json = await l.nftJson();
    expect(json.nftables.some((o) => (o.table as { family?: string; name?: string } | undefined)?.name === 'nat')).toBe(
      true,
    );

    expect(await busCall(l, LIBVIRT_DBUS, 'org.libvirt.Connect.ListNetworks', 'uint32:0')).toContain(
      'object path "/org/libvirt/QEMU/network/_9a05da11_e96b_47f3_8253_a3a482e445f5"',
    );

    // a full lifecycle on a second network: define, start, destroy, undefine
    t = Date.now();
    // write the XML into the lab's private /run through /proc/PID/root
    writeFileSync(l.path('/run/labevt.xml'), EVT_NET_XML);
    await l.virsh('net-define', '/run/labevt.xml');
    await l.virsh('net-start', 'labevt');
    await l.virsh('net-destroy', 'labevt');
    await l.virsh('net-undefine', 'labevt');
    timings.labevtCycle = Date.now() - t;

    const evs = await waitUntil('6 NetworkEvent signals', 5000, () => {
      const e = networkEvents(monitor);
      return e.length >= 6 ? e : undefined;
    });
    const dflt = '/org/libvirt/QEMU/network/_9a05da11_e96b_47f3_8253_a3a482e445f5';
    // 0 = defined, 2 = started, 3 = stopped, 1 = undefined
    expect(evs[0]).toEqual([dflt, 0]);
    expect(evs[1]).toEqual([dflt, 2]);
    expect(evs.slice(2).map(([, n]) => n)).toEqual([0, 2, 3, 1]);
    expect(evs[2]?.[0]).toMatch(/^\/org\/libvirt\/QEMU\/network\/_[0-9a-f_]{36}$/);

    // virsh net-event --loop line format (libvirt 9.0):
    //   event 'lifecycle' for network default: Defined
    //   event 'lifecycle' for network default: Started
    //   event 'lifecycle' for network labevt: Stopped
    //   event 'lifecycle' for network labevt: Undefined
    const vs = await waitUntil('6 virsh net-event lines', 5000, () =>
      virshEvents.filter((x) => x.startsWith('event ')).length >= 6
        ? virshEvents.filter((x) => x.startsWith('event '))
        : undefined,
    );
    expect(vs).toEqual([
      "event 'lifecycle' for network default: Defined",
      "event 'lifecycle' for network default: Started",
      "event 'lifecycle' for network labevt: Defined",
      "event 'lifecycle' for network labevt: Started",
      "event 'lifecycle' for network labevt: Stopped",
      "event 'lifecycle' for network labevt: Undefined",
    ]);
  }, 30_000);

  it('guest DHCP fails behind the drop policy (no rules for guests yet)', async () => {
    const l = lab!;
    const t = Date.now();
    await expect(l.dhcp({ tries: 6 })).rejects.toThrow(/guest DHCP/);
    timings.dhcpFail = Date.now() - t;
    expect((await l.inGuest('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).not.toContain('inet ');
  }, 30_000);

  it('with the input and forward accepts added by hand, the guest gets a lease and reaches wan through libvirt NAT', async () => {
    const l = lab!;
    await l.nft('insert', 'rule', 'inet', 'filter', 'input', 'iifname', 'virbr0', 'accept');
    await l.nft('insert', 'rule', 'inet', 'filter', 'forward', 'accept');
    let t = Date.now();
    const addr = await l.dhcp();
    timings.dhcpLease = Date.now() - t;
    expect(addr).toMatch(/^192\.168\.122\.(\d+)$/);
    const route = (await l.inGuest('ip', ['route', 'show', 'default'])).stdout;
    expect(route).toContain('via 192.168.122.1');

    // wan cannot reach the guest subnet (no route back): success means NAT
    expect((await l.inWan('ip', ['route', 'get', addr], { reject: false })).exitCode).not.toBe(0);
    const listener = await l.tcpListen(8080);
    t = Date.now();
    const probe = await l.tcpProbe(WAN_ADDR, 8080, 3000);
    timings.tcpProbe = Date.now() - t;
    expect(probe.ok, probe.output).toBe(true);
    expect(probe.localAddress).toBe(addr);
    expect(await listener.waitForPeer(3000, 0)).toBe(HOST_WAN_ADDR);
    await listener.close();
  }, 40_000);

  it('restartLibvirtd() keeps the running network and accepts commands again', async () => {
    const l = lab!;
    const before = l.libvirtdPid();
    const t = Date.now();
    await l.restartLibvirtd();
    timings.restartLibvirtd = Date.now() - t;
    expect(l.libvirtdPid()).not.toBe(before);
    expect((await l.virsh('net-list', '--name')).stdout).toContain('default');

    // libvirt-dbus survives the restart (same process) but emits NO NetworkEvent
    // until a method call makes it reopen its libvirt connection.
    const mon = lines(l.spawnInLab('dbus-monitor', ['--system', "type='signal',interface='org.libvirt.Connect'"]));
    await waitUntil('dbus-monitor up', 5000, () => mon.length > 0);
    await l.virsh('net-destroy', 'default');
    await sleep(700); // a window in which no event may arrive
    expect(networkEvents(mon)).toEqual([]);
    await busCall(l, LIBVIRT_DBUS, 'org.libvirt.Connect.ListNetworks', 'uint32:0');
    await l.virsh('net-start', 'default');
    expect((await waitUntil('NetworkEvent after a call', 5000, () => networkEvents(mon)[0]))[1]).toBe(2);
  }, 30_000);

  it("libvirtd listens on the lab's bus: FirewallD1.Reloaded re-creates its chains after a flush", async () => {
    const l = lab!;
    await l.nft('flush', 'ruleset');
    expect((await l.nft('list', 'tables')).stdout).toBe('');
    await l.exec('dbus-send', [
      '--system',
      '--type=signal',
      '/org/fedoraproject/FirewallD1',
      'org.fedoraproject.FirewallD1.Reloaded',
    ]);
    const t = Date.now();
    await waitUntil("libvirt's LIBVIRT_INP and LIBVIRT_PRT chains back", 5000, async () => {
      const listed = (await l.nft('list', 'chains')).stdout;
      return listed.includes('LIBVIRT_INP') && listed.includes('LIBVIRT_PRT');
    });
    timings.firewalldReloaded = Date.now() - t;
  }, 30_000);

  it('stop() leaves no process, namespace or mount behind', async () => {
    const l = lab!;
    const pids = l.processes();
    expect(pids.length).toBeGreaterThanOrEqual(6); // helper, 2 holders, bus, libvirtd, dnsmasq, libvirt-dbus, monitors
    const t = Date.now();
    stopReport = await l.stop();
    timings.stop = Date.now() - t;
    expect(stopReport.errors).toEqual([]);
    expect(stopReport.remaining).toEqual([]);
    // (No namespace-inode scan after stop: a freed namespace's inode number can
    // belong to another test's new namespace by now. Every lab PID is checked.)
    // gone, not even a zombie (orphans are reaped by PID 1, our own children by Node)
    for (const pid of pids) {
      await waitUntil(`lab pid ${pid} (${readProc(pid, 'comm')}) gone`, 3000, () => readProc(pid, 'stat') === '');
    }
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain('kvl-');
    expect(
      execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
        .split('\n')
        .filter((x) => x.startsWith('kvl-')),
    ).toEqual(netnsBefore.split('\n').filter((x) => x.startsWith('kvl-')));
    expect(realMounts()).toEqual(mountsBefore);
    expect(realLinkExists('virbr0')).toBe(false);
    console.log(`stop report: ${JSON.stringify(stopReport)}`);
  }, 30_000);
});

describe('startLab failing halfway', () => {
  it('cleans up everything it started and says why', async () => {
    const mountsBefore = realMounts();
    const err = await startLab({ networks: ['/nonexistent/lab-network.xml'] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LabStartError);
    const e = err as LabStartError;
    expect(e.message).toMatch(/net-define/);
    expect(e.message).toContain('last 50 lines');
    // it got as far as libvirtd: the bus and libvirtd were killed
    expect(e.stopReport.killed.map((k) => k.role)).toEqual(
      expect.arrayContaining(['libvirtd', 'dbus-daemon', 'lab-ns.sh']),
    );
    expect(e.stopReport.remaining).toEqual([]);
    for (const { pid } of e.stopReport.killed)
      await waitUntil(`pid ${pid} gone`, 3000, () => readProc(pid, 'stat') === '');
    expect(realMounts()).toEqual(mountsBefore);
  }, 30_000);
});
