/**
 * The doctor's system-bus facts against a real, private dbus-daemon:
 * firewalld-running when something owns org.fedoraproject.FirewallD1, and
 * libvirt-dbus-unavailable unless org.libvirt runs or is activatable. The CLI
 * run goes through a throwaway network namespace with the admin ruleset.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dbus from 'dbus-next';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busFacts } from '../../src/doctor/gather.js';
import type { DoctorReport } from '../../src/doctor/index.js';
import { cliContext, describeRun, fixture, requireBuiltCli, runCli } from '../helpers/cli.js';
import { Lab, nftLoadFile, requireLabPrivileges } from '../helpers/netns.js';
import { waitUntil } from '../helpers/wait.js';

const CONFIG = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  SERVICEDIR
  <policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_type="signal"/><allow receive_type="signal"/><allow receive_type="method_call"/><allow receive_type="method_return"/><allow receive_type="error"/></policy>
</busconfig>`;

class PrivateBus {
  readonly socket: string;
  private readonly child: ChildProcess;
  constructor(
    readonly dir: string,
    name: string,
    activatable: string[] = [],
  ) {
    this.socket = join(dir, `${name}.sock`);
    const services = join(dir, `${name}-services`);
    mkdirSync(services, { recursive: true });
    for (const svc of activatable)
      writeFileSync(join(services, `${svc}.service`), `[D-BUS Service]\nName=${svc}\nExec=/bin/false\n`);
    const conf = join(dir, `${name}.conf`);
    writeFileSync(
      conf,
      CONFIG.replace('SOCKET', this.socket).replace('SERVICEDIR', `<servicedir>${services}</servicedir>`),
    );
    this.child = spawn('dbus-daemon', [`--config-file=${conf}`, '--nofork', '--nopidfile'], { stdio: 'ignore' });
  }
  get address(): string {
    return `unix:path=${this.socket}`;
  }
  ready(): Promise<boolean> {
    return waitUntil(`bus socket ${this.socket}`, 5000, () => existsSync(this.socket));
  }
  stop(): void {
    this.child.kill('SIGTERM');
  }
}

describe('doctor facts from the system bus', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-doctor-bus-'));
  const saved = process.env['DBUS_SYSTEM_BUS_ADDRESS'];
  let plain: PrivateBus;
  let activating: PrivateBus;

  beforeAll(async () => {
    plain = new PrivateBus(dir, 'plain');
    activating = new PrivateBus(dir, 'activating', ['org.libvirt']);
    await plain.ready();
    await activating.ready();
  });

  afterAll(() => {
    if (saved === undefined) delete process.env['DBUS_SYSTEM_BUS_ADDRESS'];
    else process.env['DBUS_SYSTEM_BUS_ADDRESS'] = saved;
    plain.stop();
    activating.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('absent / activatable / running org.libvirt; firewalld owner; unreachable bus', async () => {
    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = plain.address;
    expect(await busFacts()).toEqual({ libvirtDbus: 'absent', firewalld: false });

    const owner = dbus.systemBus();
    await owner.requestName('org.libvirt', 0);
    await owner.requestName('org.fedoraproject.FirewallD1', 0);
    expect(await busFacts()).toEqual({ libvirtDbus: 'running', firewalld: true });
    owner.disconnect();

    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = activating.address;
    expect(await busFacts()).toEqual({ libvirtDbus: 'activatable', firewalld: false });

    process.env['DBUS_SYSTEM_BUS_ADDRESS'] = `unix:path=${join(dir, 'nothing-here')}`;
    const gone = await busFacts();
    expect('error' in gone && gone.error).toContain('system bus');
  });

  it('kvmnftd doctor (in a netns): firewalld-running while something owns FirewallD1; libvirt-dbus-unavailable on a bus without org.libvirt', async () => {
    requireLabPrivileges();
    requireBuiltCli();
    const lab = new Lab();
    try {
      const ns = await lab.netns('host');
      await nftLoadFile(ns, fixture('admin-ruleset.nft'));
      const ctx = await cliContext(lab, '');
      const doctor = async (address: string): Promise<string[]> => {
        const r = await runCli(
          ns,
          ['doctor', '--json', '--from-xml', fixture('default.xml'), '--config', ctx.configFile],
          { runtimeDir: ctx.runtimeDir, env: { DBUS_SYSTEM_BUS_ADDRESS: address } },
        );
        expect([0, 3], describeRun(r)).toContain(r.exitCode);
        return (JSON.parse(r.stdout) as DoctorReport).findings.map((f) => f.id);
      };
      process.env['DBUS_SYSTEM_BUS_ADDRESS'] = plain.address;
      const firewalld = dbus.systemBus();
      await firewalld.requestName('org.fedoraproject.FirewallD1', 0);
      const withFirewalld = await doctor(plain.address);
      expect(withFirewalld[0]).toBe('firewalld-running'); // errors first, and this one first of all
      expect(withFirewalld).toContain('libvirt-dbus-unavailable');
      firewalld.disconnect();
      await waitUntil(
        'FirewallD1 released',
        3000,
        async () => !(await doctor(plain.address)).includes('firewalld-running'),
      );

      const activatable = await doctor(activating.address);
      expect(activatable).not.toContain('libvirt-dbus-unavailable');
      expect(activatable).not.toContain('firewalld-running');
    } finally {
      await lab.cleanup();
    }
  });
});
