/**
 * VirshShell against the real libvirtd of the hermetic lab (test/lab). The
 * shell and one-shot virsh run here, outside the lab, on the lab's libvirtd
 * socket (qemu+unix:///system?socket=..., reached through /proc/PID/root):
 * the real virsh binary, no fake and no namespace wrapper.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirshShell } from '../../src/libvirt/virsh-shell.js';
import { activeNetworkXml, runningDomainXml } from '../../src/libvirt/virsh.js';
import { waitUntil } from '../helpers/wait.js';
import { startLab, type Lab } from '../lab/lab.js';
import { networkXml } from './daemon-harness.js';

/** Alive and not a zombie. */
const running = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
};

describe('VirshShell on the lab libvirtd', () => {
  let lab: Lab;
  let uri: string;
  let shell: VirshShell;
  const faults: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-vshell-lab-'));

  beforeAll(async () => {
    lab = await startLab({ defaultNetwork: 'start' });
    uri = `qemu+unix:///system?socket=${lab.path('/run/libvirt/libvirt-sock')}`;
    shell = new VirshShell(uri, { onFault: (r) => faults.push(r) });
  }, 60_000);

  afterAll(async () => {
    shell?.close();
    rmSync(work, { recursive: true, force: true });
    if (lab) {
      const report = await lab.stop();
      expect(report.remaining).toEqual([]);
    }
  }, 60_000);

  it("lists the lab's networks and domains with the same names and XML as one-shot virsh", async () => {
    const nets = await shell.activeNetworks();
    expect(nets.map((n) => n.name)).toEqual(['default']);
    expect(nets).toEqual(await activeNetworkXml(uri));
    expect(await shell.runningDomains()).toEqual(await runningDomainXml(uri));
    expect(shell.pid).toBeDefined();
    expect(faults).toEqual([]);
  }, 30_000);

  it('a network started, then stopped, between two calls is seen, by the same virsh', async () => {
    const pid = shell.pid;
    const file = join(work, 'lab2.xml');
    writeFileSync(file, networkXml('lab2', 'virbr1', 1, 'route'));
    await lab.virsh('net-define', file);
    await lab.virsh('net-start', 'lab2');
    const two = await shell.activeNetworks();
    expect(two.map((n) => n.name).sort()).toEqual(['default', 'lab2']);
    expect(two).toEqual(await activeNetworkXml(uri));
    expect(two.find((n) => n.name === 'lab2')!.xml).toContain("<bridge name='virbr1'");
    await lab.virsh('net-destroy', 'lab2');
    expect((await shell.activeNetworks()).map((n) => n.name)).toEqual(['default']);
    expect(shell.pid).toBe(pid);
    expect(faults).toEqual([]);
  }, 30_000);

  it('after a libvirtd restart the next call still answers, and so do the following ones', async () => {
    await lab.restartLibvirtd();
    // virsh 9 reconnects by itself (notes on stderr); a virsh that exits instead is a fault, answered by one-shot virsh.
    expect((await shell.activeNetworks()).map((n) => n.name)).toEqual(['default']);
    expect((await shell.activeNetworks()).map((n) => n.name)).toEqual(['default']);
    console.log(`after the libvirtd restart: faults ${JSON.stringify(faults)}, shell pid ${String(shell.pid)}`);
  }, 60_000);

  it('the virsh child killed: one-shot virsh answers the same, then a new virsh after the back-off', async () => {
    let t = 0;
    const own: string[] = [];
    const s = new VirshShell(uri, { now: () => t, onFault: (r) => own.push(r) });
    try {
      const before = await s.activeNetworks();
      const pid = s.pid!;
      process.kill(pid, 'SIGKILL');
      await waitUntil('the shell sees its virsh exit', 5000, () => s.pid === undefined);
      expect(own).toEqual([expect.stringContaining('exited (SIGKILL)')]);
      expect(await s.activeNetworks()).toEqual(before); // in back-off: one-shot virsh answers
      expect(s.pid).toBeUndefined();
      t += 500;
      expect(await s.activeNetworks()).toEqual(before);
      expect(s.pid).toBeGreaterThan(0);
      expect(s.pid).not.toBe(pid);
    } finally {
      s.close();
    }
  }, 30_000);

  it('close() leaves no virsh process', async () => {
    await shell.activeNetworks();
    const pid = shell.pid!;
    expect(running(pid)).toBe(true);
    expect(readFileSync(`/proc/${pid}/comm`, 'utf8').trim()).toBe('virsh');
    shell.close();
    await waitUntil(`virsh ${pid} gone`, 5000, () => !running(pid));
    expect(shell.pid).toBeUndefined();
  }, 30_000);
});
