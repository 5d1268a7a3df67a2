/**
 * announceFirewallReload() against a real, private dbus-daemon: it broadcasts
 * org.fedoraproject.FirewallD1.Reloaded, and stays silent while something
 * (a real firewalld) owns org.fedoraproject.FirewallD1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dbus from 'dbus-next';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { announceFirewallReload } from '../../src/libvirt/firewalld-reload.js';
import { waitUntil } from '../helpers/wait.js';

const CONFIG = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_type="signal"/><allow receive_type="signal"/><allow eavesdrop="true"/></policy>
</busconfig>`;

describe('FirewallD1.Reloaded broadcast', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-bus-'));
  const socket = join(dir, 'bus');
  let bus: ChildProcess | undefined;
  const saved = process.env['DBUS_SYSTEM_BUS_ADDRESS'];

  beforeAll(async () => {
    writeFileSync(join(dir, 'bus.conf'), CONFIG.replace('SOCKET', socket));
    bus = spawn('dbus-daemon', [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile'], {
      stdio: 'ignore',
    });
    await waitUntil('private bus socket', 5000, async () => (await import('node:fs')).existsSync(socket));
    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = `unix:path=${socket}`;
  });

  afterAll(() => {
    if (saved === undefined) delete process.env['DBUS_SYSTEM_BUS_ADDRESS'];
    else process.env['DBUS_SYSTEM_BUS_ADDRESS'] = saved;
    bus?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('broadcasts the signal that libvirt listens for', async () => {
    const listener = dbus.systemBus();
    const seen: string[] = [];
    listener.on('message', (m) => {
      if (m.interface === 'org.fedoraproject.FirewallD1' && m.member === 'Reloaded') seen.push(m.path ?? '');
    });
    await listener.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'AddMatch',
        signature: 's',
        body: ["type='signal',interface='org.fedoraproject.FirewallD1'"],
      }),
    );
    expect(await announceFirewallReload()).toEqual({ sent: true });
    await waitUntil('the signal arrives', 3000, () => seen.length === 1);
    expect(seen).toEqual(['/org/fedoraproject/FirewallD1']);
    listener.disconnect();
  });

  it('stays silent while a real firewalld owns org.fedoraproject.FirewallD1', async () => {
    const firewalld = dbus.systemBus();
    await firewalld.requestName('org.fedoraproject.FirewallD1', 0);
    const outcome = await announceFirewallReload();
    expect(outcome.sent).toBe(false);
    expect(outcome.sent === false && outcome.reason).toContain('firewalld is running');
    firewalld.disconnect();
  });

  it('reports an unreachable bus instead of throwing', async () => {
    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = `unix:path=${join(dir, 'nothing-here')}`;
    const outcome = await announceFirewallReload();
    expect(outcome.sent).toBe(false);
    expect(outcome.sent === false && outcome.reason).toContain('cannot use the system bus');
    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = `unix:path=${socket}`;
  });
});
