/**
 * One change of a libvirt network as the benchmarks time it: `virsh
 * net-start` or `net-destroy` of a small NAT network in the libvirt lab with
 * `kvmnftd run` watching, and the stamps around it (bench/daemon.ts,
 * bench/compare). The stamps are taken in the benchmark process on arrival:
 * the virsh command's start and return, libvirt-dbus's NetworkEvent at an
 * independent observer, the first line of an `nft -j monitor` in the lab that
 * names kvmnftd (the daemon's transaction committed), the daemon's log lines.
 */
import { waitUntil } from '../../test/helpers/wait.js';
import type { LabMonitor } from '../../test/integration/daemon-harness.js';
import type { Lab } from '../../test/lab/lab.js';
import { DaemonProc, type LogLine, type Observer } from './daemon-proc.js';
import { round } from './stats.js';

/** The benchmarks' network: NAT, no DHCP, stp off (a bridge port forwards at once). */
export const NET = 'kvmbench';
export const BRIDGE = 'virbr9';
export const NET_XML = `<network><name>${NET}</name><forward mode='nat'/><bridge name='${BRIDGE}' stp='off' delay='0'/>
  <ip address='10.79.9.1' prefix='24'/></network>\n`;

/** A step is over when the daemon has logged nothing for this long. */
export const QUIET_MS = 120;
/** The step lookups poll this often: the stamps are taken on arrival, the pace of the cycles follows it. */
const POLL = { intervalMs: 2 };

const now = (): number => performance.now();

export interface ChangeSample {
  kind: 'start' | 'stop';
  /** virsh command run from here (incl. nsenter), ms. */
  virshMs: number;
  /** virsh command start -> NetworkEvent seen by the observer. */
  cmdToSignalMs: number;
  /** (a) the daemon's latency_ms of the reflecting transaction. */
  daemonLatencyMs: number;
  /** the daemon's duration_ms (read + plan + commit) of it. */
  daemonDurationMs: number;
  /** (b) NetworkEvent at the observer -> first kvmnftd line of nft monitor. */
  externalMs: number;
  /** (c) the daemon's own "event:" debug line (its receipt of the lifecycle event) -> nft monitor. */
  daemonEventToCommitMs: number;
  /** virsh command start -> nft monitor shows the change. */
  endToEndMs: number;
  /** daemon log line of the transaction seen here, after the monitor line (ms). */
  logAfterCommitMs: number;
  event: string;
  commands: number;
  /** applied transactions / passes the daemon ran for this change (until quiet). */
  transactions: number;
  passes: number;
  passReasons: string[];
}

/** What one change is timed with. */
export interface CycleContext {
  lab: Lab;
  daemon: DaemonProc;
  monitor: LabMonitor;
  observer: Observer;
  /** Names the change in errors and traces (e.g. the transport). */
  label: string;
  /** Notes on odd orders of events are added here. */
  anomalies: string[];
}

/**
 * `virsh net-start` (kind start) or `net-destroy` (stop) of NET, then waits
 * for the daemon's transaction that reflects it, the NetworkEvent and the
 * commit on the monitor, and for the daemon to go quiet. `n` numbers the
 * change in messages; `traceIt` prints its timeline to stderr.
 */
export async function networkChange(
  ctx: CycleContext,
  kind: 'start' | 'stop',
  n: number,
  traceIt = false,
): Promise<ChangeSample> {
  const { lab, daemon: d, monitor, observer } = ctx;
  const logFrom = d.logs.length;
  const monFrom = monitor.lines.length;
  const sigFrom = observer.signals.length;
  const c0 = now();
  await lab.virsh(kind === 'start' ? 'net-start' : 'net-destroy', NET);
  const c1 = now();
  const want = kind === 'start' ? NET : '';
  const code = kind === 'start' ? 2 : 3;
  const what = `${ctx.label} ${kind} #${n}`;
  const applied = await waitUntil(
    `${what}: applied line with networks="${want}"`,
    10_000,
    () => d.find(logFrom, (l) => DaemonProc.isApplied(l) && l.rec['networks'] === want),
    { ...POLL, detail: () => d.tail() },
  );
  const sig = await waitUntil(
    `${what}: NetworkEvent ${code}`,
    5000,
    () => observer.signals.slice(sigFrom).find((s) => s.code === code),
    POLL,
  );
  const mon = await waitUntil(
    `${what}: nft monitor line naming kvmnftd`,
    5000,
    () => monitor.find(monFrom, (t) => t.includes('kvmnftd')),
    POLL,
  );
  const evLine = d.find(logFrom, (l) =>
    l.rec.msg.startsWith(`event: network ${kind === 'start' ? 'started' : 'stopped'}`),
  );
  await d.quiet(QUIET_MS);
  if (traceIt)
    trace(what, c0, c1, d.logs.slice(logFrom), monitor.lines.slice(monFrom), observer.signals.slice(sigFrom));
  const passLines = d.logs.slice(logFrom).filter((l) => DaemonProc.isPass(l));
  // Possible: the pass was already running (triggered by libvirt's own firewall changes) and read the new state first.
  if (mon.at < sig.at)
    ctx.anomalies.push(
      `note: ${what}: the commit reached nft monitor ${round(sig.at - mon.at)} ms before the NetworkEvent reached the observer`,
    );
  return {
    kind,
    virshMs: round(c1 - c0),
    cmdToSignalMs: round(sig.at - c0),
    daemonLatencyMs: Number(applied.rec['latency_ms']),
    daemonDurationMs: Number(applied.rec['duration_ms']),
    externalMs: round(mon.at - sig.at),
    daemonEventToCommitMs: evLine ? round(mon.at - evLine.at) : NaN,
    endToEndMs: round(mon.at - c0),
    logAfterCommitMs: round(applied.at - mon.at),
    event: String(applied.rec['event']),
    commands: Number(applied.rec['commands']),
    transactions: passLines.filter((l) => DaemonProc.isApplied(l)).length,
    passes: passLines.length,
    passReasons: passLines.map((l) => String(l.rec['event'])),
  };
}

function trace(
  what: string,
  c0: number,
  c1: number,
  logs: readonly LogLine[],
  mon: ReadonlyArray<{ text: string; at: number }>,
  sigs: ReadonlyArray<{ code: number; at: number }>,
): void {
  const ev: Array<[number, string]> = [
    [0, 'virsh command starts'],
    [c1 - c0, 'virsh command returns'],
  ];
  for (const l of logs) {
    const { level: _l, time: _t, msg, ...rest } = l.rec;
    ev.push([l.at - c0, `daemon: ${msg} ${JSON.stringify(rest)}`]);
  }
  for (const m of mon) ev.push([m.at - c0, `monitor: ${m.text.slice(0, 150)}`]);
  for (const s of sigs) ev.push([s.at - c0, `D-Bus NetworkEvent ${s.code}`]);
  ev.sort((a, b) => a[0] - b[0]);
  process.stderr.write(`--- ${what}\n${ev.map(([t, s]) => `${t.toFixed(1).padStart(8)} ms  ${s}`).join('\n')}\n`);
}
