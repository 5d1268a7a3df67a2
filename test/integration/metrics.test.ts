/**
 * `kvmnftd metrics` and the [metrics] textfile of a real daemon in the libvirt
 * lab: real packets from the lab's guest move the right network's counters,
 * the output and the textfile pass a real `promtool check metrics`, the file
 * is readable by user prometheus (mode 0644 although written by root), and a
 * pass caused by another network's start leaves the first network's counters
 * where they were (kvmnftd edits its chains in place). Prints the figures.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { promtoolCheck, sample, samples } from '../helpers/prometheus.js';
import { guestReachesWan, networkXml, ruleset } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

// node_exporter's textfile directory stand-in: world-readable, like Debian's /var/lib/prometheus/node-exporter.
const textDir = mkdtempSync(join(tmpdir(), 'kvmnftd-metrics-textfile-'));
chmodSync(textDir, 0o755);
const TEXTFILE = join(textDir, 'kvmnftd.prom');
afterAll(() => rmSync(textDir, { recursive: true, force: true }));

const f = useLibvirtLab({ tag: 'metrics', lab: { defaultNetwork: 'define' }, daemon: 'dbus' });
f.writeConfig(`[metrics]\ntextfile = "${TEXTFILE}"\ninterval = 1\n`);

const DEFAULT = { network: 'default' };
const out = (text: string) => sample(text, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind: 'accepted_out' }) ?? 0;

async function metrics(): Promise<string> {
  const r = await f.cli('metrics');
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

/** The textfile as user prometheus reads it (setpriv: no capabilities, no groups of root's). */
async function readAsPrometheus(): Promise<string> {
  const r = await f.lab.exec(
    'setpriv',
    ['--reuid=prometheus', '--regid=prometheus', '--clear-groups', 'cat', TEXTFILE],
    {
      reject: false,
    },
  );
  if (r.exitCode !== 0) throw new Error(`user prometheus cannot read ${TEXTFILE}: ${r.stderr}`);
  return r.stdout;
}

describe('kvmnftd metrics with a running daemon in the libvirt lab', () => {
  it('counters move with the guest traffic: default accepted_out grows; the output passes promtool', async () => {
    const { lab } = f;
    await lab.virsh('net-start', 'default');
    await waitUntil('nat_virbr0 in table inet kvmnftd', 10_000, async () =>
      (await ruleset(lab)).natChains.includes('nat_virbr0'),
    );
    await lab.dhcp();
    await guestReachesWan(lab, 8081, 10_000);
    const before = await metrics();
    const check = await promtoolCheck(before);
    expect(check, before).toEqual({ exitCode: 0, output: '' });
    expect(sample(before, 'kvmnftd_daemon_up')).toBe(1);
    expect(sample(before, 'kvmnftd_passes_total')).toBeGreaterThanOrEqual(1);
    expect(sample(before, 'kvmnftd_transactions_total')).toBeGreaterThanOrEqual(1);
    expect(sample(before, 'kvmnftd_degraded')).toBe(0);
    expect(sample(before, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind: 'nat' })).toBeGreaterThan(0);
    expect(sample(before, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind: 'host_services' })).toBeGreaterThan(0);

    for (let i = 0; i < 3; i++) await guestReachesWan(lab, 8082 + i);
    const after = await metrics();
    console.log(
      `[metrics] default accepted_out packets: ${out(before)} before, ${out(after)} after 3 more TCP connections; ` +
        `bytes ${sample(before, 'kvmnftd_rule_bytes_total', { ...DEFAULT, kind: 'accepted_out' })} -> ` +
        `${sample(after, 'kvmnftd_rule_bytes_total', { ...DEFAULT, kind: 'accepted_out' })}`,
    );
    // Three connections: at least SYN, ACK, data/FIN each way out.
    expect(out(after) - out(before)).toBeGreaterThanOrEqual(9);
    expect(sample(after, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind: 'accepted_in' })).toBeGreaterThan(
      sample(before, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind: 'accepted_in' }) ?? 0,
    );
  }, 90_000);

  it('the textfile appears, mode 0644, readable by user prometheus, passes promtool, and follows the traffic', async () => {
    const first = await waitUntil('the textfile with the default network', 10_000, async () => {
      const r = await f.lab.exec('cat', [TEXTFILE], { reject: false });
      return r.exitCode === 0 && r.stdout.includes('network="default"') ? r.stdout : undefined;
    });
    const mode = (await f.lab.exec('stat', ['-c', '%a %U', TEXTFILE])).stdout.trim();
    expect(mode).toBe('644 root');
    const asPrometheus = await readAsPrometheus();
    expect(await promtoolCheck(asPrometheus), asPrometheus).toEqual({ exitCode: 0, output: '' });
    expect(sample(first, 'kvmnftd_daemon_up')).toBe(1);
    // Never a temporary file left where node_exporter reads *.prom.
    expect((await f.lab.exec('ls', ['-A', textDir])).stdout.trim().split('\n')).toEqual(['kvmnftd.prom']);

    const was = out(await readAsPrometheus());
    await guestReachesWan(f.lab, 8090);
    const now = await waitUntil('the textfile to count the new connection', 10_000, async () => {
      const n = out(await readAsPrometheus());
      return n > was ? n : undefined;
    });
    console.log(`[metrics] textfile (interval 1 s): default accepted_out ${was} -> ${now} packets`);
  }, 60_000);

  it("counters survive a pass caused by another network's start", async () => {
    const before = samples(await metrics());
    const mine = [...before].filter(([k]) => k.includes('network="default"'));
    expect(mine.length).toBeGreaterThanOrEqual(8); // packets and bytes of nat, accepted_in/out, host_services
    const from = f.daemon.logs.length;
    await f.defineNetwork('lab2', networkXml('lab2', 'virbr1', 1, 'nat'));
    await f.lab.virsh('net-start', 'lab2');
    await waitUntil('the daemon applies lab2', 10_000, () =>
      f.daemon.applied(from).some((r) => r.msg.includes('network lab2 up')),
    );
    const afterText = await metrics();
    const after = samples(afterText);
    expect(await promtoolCheck(afterText)).toEqual({ exitCode: 0, output: '' });
    expect(after.get('kvmnftd_transactions_total')).toBeGreaterThan(before.get('kvmnftd_transactions_total')!);
    expect([...after.keys()].some((k) => k.includes('network="lab2"'))).toBe(true);
    const kept = mine.map(([k, v]) => `${k} ${v} -> ${after.get(k)}`);
    console.log(`[metrics] default's counters through lab2's transaction:\n  ${kept.join('\n  ')}`);
    for (const [k, v] of mine) expect(after.get(k), k).toBeGreaterThanOrEqual(v);
  }, 60_000);

  it('kvmnftd status shows the same counters for the network', async () => {
    const m = await metrics();
    const r = await f.cli('status', '--json');
    const report = JSON.parse(r.stdout) as {
      networks: Array<{ name: string; counters: Record<string, { packets: number } | null> }>;
    };
    const def = report.networks.find((n) => n.name === 'default')!;
    for (const kind of ['nat', 'accepted_in', 'accepted_out', 'host_services'])
      expect(def.counters[kind]!.packets, kind).toBeGreaterThanOrEqual(
        sample(m, 'kvmnftd_rule_packets_total', { ...DEFAULT, kind })!,
      );
    expect(def.counters['port_forwards']).toBeNull();
  }, 30_000);

  it('SIGTERM: the daemon stops cleanly (exit 0), the textfile stays; without a daemon kvmnftd_daemon_up 0', async () => {
    const d = f.daemon;
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    const text = await metrics();
    expect(sample(text, 'kvmnftd_daemon_up')).toBe(0);
    expect(sample(text, 'kvmnftd_passes_total')).toBeUndefined();
    expect(out(text)).toBeGreaterThan(0);
    expect(await promtoolCheck(text)).toEqual({ exitCode: 0, output: '' });
    expect((await f.lab.exec('cat', [TEXTFILE])).stdout).toContain('kvmnftd_daemon_up 1');
  }, 30_000);
});
