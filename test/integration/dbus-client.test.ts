/**
 * A failed LibvirtDbusClient.connect must not leave its bus connection open:
 * an open socket keeps Node's event loop alive, and `kvmnftd run` hung on
 * SIGTERM after falling back to virsh because libvirt-dbus was refused (seen
 * under systemd: the stop waited for the kill). A child process connects to a
 * private dbus-daemon that has no org.libvirt and must exit by itself.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBuiltCli } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';

const CLIENT = join(import.meta.dirname, '..', '..', 'dist', 'libvirt', 'dbus-client.js');
const CONFIG = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_type="signal"/><allow receive_type="signal"/><allow receive_type="method_call"/><allow receive_type="method_return"/><allow receive_type="error"/></policy>
</busconfig>`;

describe('LibvirtDbusClient.connect against a bus without libvirt-dbus', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-dbus-client-'));
  const socket = join(dir, 'bus.sock');
  let bus: ChildProcess | undefined;

  beforeAll(async () => {
    requireBuiltCli();
    writeFileSync(join(dir, 'bus.conf'), CONFIG.replace('SOCKET', socket));
    bus = spawn('dbus-daemon', [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile'], {
      stdio: 'ignore',
    });
    await waitUntil(`bus socket ${socket}`, 5000, () => existsSync(socket));
  });

  afterAll(() => {
    bus?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects, and leaves nothing that keeps the process alive', () => {
    const script = `
      import { LibvirtDbusClient } from ${JSON.stringify(CLIENT)};
      const noop = () => undefined;
      LibvirtDbusClient.connect('/org/libvirt/QEMU', { onNetworkEvent: noop, onOwnerChange: noop, onFault: noop })
        .then(() => console.log('connected'), (err) => console.log('rejected: ' + err.message));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socket}` },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.stdout).toMatch(/^rejected: ListNetworks on org\.libvirt failed: .*ServiceUnknown/);
    expect(r.signal, 'the child was still running after 20 s: the bus connection kept it alive').toBeNull();
    expect(r.status).toBe(0);
  });
});
