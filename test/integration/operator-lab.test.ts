/**
 * kvmnftd status and doctor on a real libvirt host (the hermetic lab: real
 * libvirtd 9 with its iptables backend, a lab system bus with D-Bus-activated
 * libvirt-dbus, real nft) with the daemon running, stopped, and after a
 * foreign `flush ruleset`. No --from-xml here: networks come from libvirt.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor/index.js';
import type { StatusReport } from '../../src/status/evaluate.js';
import { waitUntil } from '../helpers/wait.js';
import { ruleset } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

describe('status and doctor in the libvirt lab', () => {
  const f = useLibvirtLab({ tag: 'operator-lab', lab: { defaultNetwork: 'start' }, daemon: 'dbus' });

  const cli = async (...args: string[]): Promise<{ code: number; out: string; err: string }> => {
    const r = await f.cli(...args);
    return { code: r.exitCode, out: r.stdout, err: r.stderr };
  };
  const status = async (): Promise<{ code: number; report: StatusReport }> => {
    const r = await cli('status', '--json');
    return { code: r.code, report: JSON.parse(r.out) as StatusReport };
  };
  const doctor = async (): Promise<DoctorReport> => JSON.parse((await cli('doctor', '--json')).out) as DoctorReport;

  beforeAll(async () => {
    await waitUntil('nat_virbr0', 10_000, async () => (await ruleset(f.lab)).natChains.includes('nat_virbr0'));
  });

  it('status: exit 0 with the daemon running, its PID, transport and last pass (no systemd: "unknown")', async () => {
    const { code, report } = await waitUntil('status to settle at exit 0', 10_000, async () => {
      const s = await status();
      return s.code === 0 ? s : undefined;
    });
    expect(code).toBe(0);
    expect(report.libvirt).toEqual({ source: 'libvirt', reachable: true, error: null });
    const counted = { packets: expect.any(Number) as number, bytes: expect.any(Number) as number };
    expect(report.networks).toEqual([
      {
        name: 'default',
        bridge: 'virbr0',
        mode: 'nat',
        subnets: ['192.168.122.0/24'],
        nat: 'ok',
        input: 'ok',
        forward: 'ok',
        ok: true,
        // Live counters: values depend on what passed (DHCP, ARP-less broadcasts); which kinds exist does not.
        counters: {
          nat: counted,
          port_forwards: null,
          accepted_in: counted,
          accepted_out: counted,
          host_services: counted,
          dropped_by_policy: null,
        },
      },
    ]);
    expect(report.daemon).toMatchObject({ running: true, transport: 'dbus', systemd: { available: false } });
    expect(report.daemon.pid).toEqual(expect.any(Number));
    expect(report.daemon.last_pass_at).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(report.daemon.status_text).toMatch(/^1 network \(default\)/);
    const text = await cli('status');
    expect(text.out).toContain('events via libvirt-dbus');
    expect(text.out).toContain('systemd: unknown (systemd is not running)');
  }, 30_000);

  it('doctor: real bus facts (libvirt-dbus activatable, no firewalld), libvirt 9 iptables backend, nothing above info', async () => {
    const report = await doctor();
    const ids = report.findings.map((f) => f.id);
    expect(ids).not.toContain('libvirt-dbus-unavailable');
    expect(ids).not.toContain('firewalld-running');
    expect(report.findings.find((f) => f.id === 'libvirt-firewall-backend')?.title).toContain('iptables');
    // The lab's namespaces start with br_netfilter's default (1) when the module is loaded.
    expect(
      report.findings.filter((f) => f.severity !== 'info' && f.id !== 'br-netfilter' && f.id !== 'nft-too-old'),
      JSON.stringify(report, null, 1),
    ).toEqual([]);
  }, 30_000);

  it('after SIGTERM the rules stay: status still 0, daemon not running; a flush then gives exit 3 and libvirt-chains-missing', async () => {
    f.daemon.child.kill('SIGTERM');
    await f.daemon.exited;
    const after = await status();
    expect(after.code).toBe(0);
    expect(after.report.daemon).toMatchObject({ running: false, pid: null, transport: null });

    await f.lab.nft('flush', 'ruleset');
    const flushed = await status();
    expect(flushed.code).toBe(3);
    expect(flushed.report.networks[0]).toMatchObject({ nat: 'missing', ok: false });
    const report = await doctor();
    expect(report.exit_code).toBe(3);
    const ids = report.findings.map((f) => f.id);
    expect(ids).toContain('libvirt-chains-missing');
    expect(ids).toContain('admin-table-missing');
  }, 30_000);
});
