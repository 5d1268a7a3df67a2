/**
 * A network start, and its firewall rules in place: kvmnftd's part against
 * libvirt's own, in one libvirt lab (libvirt 9 on this machine, or libvirt 11
 * in the Debian 13 test root).
 *
 * libvirt: `virsh net-start` of a small NAT network (bench/lib/network-cycle.ts)
 * with no kvmnftd running, watched by a text-mode `nft monitor` in the lab.
 * Text mode ends every transaction with "# new generation N by process PID
 * (COMM)", so the lines tell how many transactions libvirt made, from which
 * processes. The figure is the time from the first line of libvirt's first
 * transaction to the end of its last one, both stamped on arrival here. It
 * leaves out the start of the first process (nothing shows before its
 * commit), so it is a lower bound of libvirt's firewall work.
 *
 * kvmnftd: the same net-starts with `kvmnftd run --events dbus` (the unit's
 * node options), timed as bench/daemon.ts times them: from libvirt-dbus's
 * NetworkEvent at an independent D-Bus client to the first line of kvmnftd's
 * transaction on an `nft -j monitor` (its read of libvirt's state and of the
 * ruleset, planning, and one `nft -j -f`).
 *
 * Each phase starts with one untimed start/stop cycle: libvirt creates its
 * private chains (or tables) at the first start after libvirtd started.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_MAIN } from '../../test/helpers/cli.js';
import { waitUntil } from '../../test/helpers/wait.js';
import { LabMonitor } from '../../test/integration/daemon-harness.js';
import type { Lab } from '../../test/lab/lab.js';
import { DaemonProc, Observer } from '../lib/daemon-proc.js';
import { unitNodeFlags } from '../lib/machine.js';
import { NET, NET_XML, networkChange, type ChangeSample } from '../lib/network-cycle.js';
import { median, stats } from '../lib/stats.js';
import { comparison, figure, type Comparison } from './results.js';

/** The monitor is done with a change when it has printed nothing for this long. */
const MONITOR_QUIET_MS = 250;

/** One libvirt net-start as the text monitor saw it. */
interface LibvirtStart {
  /** First line of the first transaction -> the generation line of the last, ms. */
  spanMs: number;
  transactions: number;
  processes: number;
  /** Transactions per process name (COMM). */
  byCommand: Record<string, number>;
  /** "add rule" / "insert rule" lines. */
  rules: number;
}

const GENERATION = /^# new generation \d+ by process (\d+) \((.*)\)$/;

/** Waits until the monitor has printed nothing for `quietMs`. */
export async function monitorQuiet(m: LabMonitor, quietMs = MONITOR_QUIET_MS): Promise<void> {
  let n = -1;
  let since = performance.now();
  await waitUntil('the nft monitor to go quiet', 20_000, () => {
    if (m.lines.length !== n) {
      n = m.lines.length;
      since = performance.now();
    }
    return performance.now() - since >= quietMs;
  });
}

/** libvirt's transactions among the text monitor's lines. */
export function libvirtStart(lines: ReadonlyArray<{ text: string; at: number }>): LibvirtStart {
  const gens = lines.flatMap((l) => {
    const m = GENERATION.exec(l.text);
    return m ? [{ at: l.at, pid: m[1]!, comm: m[2]! }] : [];
  });
  const first = lines[0];
  const last = gens.at(-1);
  if (first === undefined || last === undefined) throw new Error('net-start: no transaction on the monitor');
  const byCommand: Record<string, number> = {};
  for (const g of gens) byCommand[g.comm] = (byCommand[g.comm] ?? 0) + 1;
  return {
    spanMs: last.at - first.at,
    transactions: gens.length,
    processes: new Set(gens.map((g) => g.pid)).size,
    byCommand,
    rules: lines.filter((l) => /^(add|insert) rule /.test(l.text)).length,
  };
}

async function libvirtAlone(lab: Lab, runs: number): Promise<LibvirtStart[]> {
  const monitor = await LabMonitor.start(lab, { json: false });
  try {
    await lab.virsh('net-start', NET);
    await lab.virsh('net-destroy', NET);
    await monitorQuiet(monitor);
    const out: LibvirtStart[] = [];
    for (let i = 0; i < runs; i++) {
      const from = monitor.lines.length;
      await lab.virsh('net-start', NET);
      await monitorQuiet(monitor);
      out.push(libvirtStart(monitor.lines.slice(from)));
      await lab.virsh('net-destroy', NET);
      await monitorQuiet(monitor);
    }
    return out;
  } finally {
    monitor.stop();
  }
}

async function withKvmnftd(
  lab: Lab,
  work: string,
  runs: number,
  label: string,
): Promise<{ starts: ChangeSample[]; anomalies: string[] }> {
  const config = join(work, `${label}.toml`);
  writeFileSync(config, '# defaults\n');
  const observer = await Observer.connect(lab);
  const monitor = await LabMonitor.start(lab);
  const env = { KVMNFTD_RUNTIME_DIR: join(work, `run-${label}`), KVMNFTD_LOG_FORMAT: 'json' };
  const args = [...unitNodeFlags(), CLI_MAIN, 'run', '--events', 'dbus', '--config', config, '--log-level', 'debug'];
  const daemon = new DaemonProc(lab.spawnInLab(lab.node, args, env));
  try {
    await waitUntil(
      'READY (the "ready:" log line)',
      30_000,
      () => daemon.find(0, (l) => l.rec.msg.startsWith('ready:')),
      {
        detail: () => daemon.tail(),
      },
    );
    await daemon.quiet(200);
    const ctx = { lab, daemon, monitor, observer, label, anomalies: [] as string[] };
    await networkChange(ctx, 'start', -1);
    await networkChange(ctx, 'stop', -1);
    const starts: ChangeSample[] = [];
    for (let i = 0; i < runs; i++) {
      starts.push(await networkChange(ctx, 'start', i));
      await networkChange(ctx, 'stop', i);
    }
    const errors = daemon.logs.filter((l) => l.rec.level >= 50);
    if (errors.length > 0) throw new Error(`${label}: the daemon logged errors:\n${daemon.tail()}`);
    return { starts, anomalies: ctx.anomalies };
  } finally {
    daemon.child.kill('SIGTERM');
    await daemon.exited;
    monitor.stop();
    observer.close();
  }
}

/** Versions of the lab's own libvirtd, nft and node. */
export async function labVersions(lab: Lab): Promise<Record<string, string>> {
  const first = async (cmd: string, ...args: string[]) =>
    (await lab.exec(cmd, args)).stdout.trim().split('\n')[0] ?? '';
  return {
    libvirt: await first('libvirtd', '--version'),
    nft: await first('nft', '--version'),
    node: await first(lab.node, '--version'),
  };
}

export interface LabKind {
  id: string;
  /** e.g. "libvirt 9 (Debian 12, iptables-nft)". */
  name: string;
}

/** Both phases in `lab` (its network NET defined here), as one comparison. */
export async function networkStart(lab: Lab, kind: LabKind, work: string, runs: number): Promise<Comparison> {
  const xml = join(work, `${NET}.xml`);
  writeFileSync(xml, NET_XML);
  await lab.virsh('net-define', xml);
  try {
    const versions = await labVersions(lab);
    const theirs = await libvirtAlone(lab, runs);
    const { starts: ours, anomalies } = await withKvmnftd(lab, work, runs, kind.id);
    const commands = Object.entries(theirs[0]!.byCommand)
      .map(([comm, n]) => `${comm} ×${n}`)
      .join(', ');
    const txs = median(theirs.map((s) => s.transactions));
    const procs = median(theirs.map((s) => s.processes));
    return comparison(
      `network-start-${kind.id}`,
      `A network start: ${kind.name}`,
      versions,
      figure(
        'kvmnftd: NetworkEvent → its one transaction committed',
        ours.map((s) => s.externalMs),
        {
          transport: 'dbus',
          commands: median(ours.map((s) => s.commands)),
          daemonDurationMs: stats(ours.map((s) => s.daemonDurationMs)),
          netStartToCommitMs: stats(ours.map((s) => s.endToEndMs)),
          // A pass started by libvirt's own rule changes can commit before the event reaches the observer.
          commitBeforeEvent: ours.filter((s) => s.externalMs < 0).length,
          anomalies,
        },
      ),
      figure(
        `libvirt's own firewall setup in net-start: ${txs} transactions by ${procs} processes (${commands})`,
        theirs.map((s) => s.spanMs),
        {
          transactions: stats(theirs.map((s) => s.transactions)),
          processes: stats(theirs.map((s) => s.processes)),
          rules: stats(theirs.map((s) => s.rules)),
          byCommandFirstRun: theirs[0]!.byCommand,
        },
      ),
    );
  } finally {
    await lab.exec('virsh', ['-c', 'qemu:///system', 'net-undefine', NET], { reject: false });
  }
}
