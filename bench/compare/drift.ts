/**
 * Drift after `flush ruleset`: how long guests are cut off after the admin
 * reloads their ruleset (`nft -f` of a file that starts with `flush ruleset`,
 * what `systemctl reload nftables` does), with kvmnftd, and with the reference
 * loop an admin would write without it (bench/compare/admin-loop.sh: `nft
 * monitor` piped into a shell that re-applies the manual recipe,
 * bench/compare/recipe.nft, when its rules are missing).
 *
 * One libvirt 9 lab, its default network running (virbr0), the lab's guest at
 * 192.168.122.50 and a TCP listener on the wan. Per round: a prober in the
 * guest (test/lab/tcp-prober.mjs) opens a NEW connection to the wan every
 * 5 ms (each needs the forward accepts and the masquerade: the wan has no
 * route back to the guests); the admin's `nft -f`. The figure, "a guest packet
 * is forwarded again", the same criterion for both contenders, is the guests'
 * outage by the prober's own clock: from the start of the first attempt that
 * failed (dropped by the flushed ruleset) to the end of the first attempt
 * after it that connected (resolution: the 5 ms between attempts). Noted
 * too, by the stamps of an `nft -j monitor` in the lab: from the flush's first
 * line to the repairing transaction's first line ("the rules are listed
 * again").
 *
 * kvmnftd first (`kvmnftd run --events dbus`, default config: after its repair
 * it makes libvirt restore its own chains; a round starts once they are back
 * and the daemon is quiet), then the daemon is stopped, the admin's file
 * loaded once more (kvmnftd's and libvirt's rules gone), and the loop runs.
 * One untimed round per contender first.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_MAIN } from '../../test/helpers/cli.js';
import { waitUntil } from '../../test/helpers/wait.js';
import { Daemon, LabMonitor, libvirtChainsPresent, type DaemonEnv } from '../../test/integration/daemon-harness.js';
import { TcpProber, type ProbeAttempt } from '../../test/integration/forward-lab.js';
import { LAB_FILES, WAN_ADDR, type Lab } from '../../test/lab/lab.js';
import { harnessQuiet } from '../lib/daemon-proc.js';
import { unitNodeFlags } from '../lib/machine.js';
import { median, stats } from '../lib/stats.js';
import { comparison, figure, type Comparison } from './results.js';
import { labVersions, monitorQuiet } from './network-start.js';

const HERE = import.meta.dirname;
export const ADMIN_LOOP = join(HERE, 'admin-loop.sh');
export const RECIPE = join(HERE, 'recipe.nft');
const GUEST = '192.168.122.50/24';
const PORT = 9700;
const PROBE_EVERY_MS = 5;
const WAIT_MS = 30_000;
/** A round starts once the lab's ruleset has not changed for this long. */
const SETTLE_QUIET_MS = 1000;
/** BENCH_TRACE=1: each round's timeline (monitor lines, connection attempts) to stderr. */
const TRACE = process.env['BENCH_TRACE'] === '1';

/** The daemon's own figures of its repair (its "applied" log line), ms. */
interface Repair {
  /** From the first trigger coalesced into the pass to the end of its `nft -j -f`. */
  latencyMs: number;
  /** Read + plan + commit. */
  durationMs: number;
}

interface Round {
  /** The first connection attempt cut off -> the end of the first one through after it (the prober's clock). */
  packetMs: number;
  /** The flush's first line -> the repairing transaction's first line (the monitor's stamps). */
  rulesMs: number;
  /** Connection attempts that failed in between. */
  cutOff: number;
}

interface Contender {
  /** The repairing transaction's first monitor line. */
  isRepair: (text: string) => boolean;
  /** Everything back and nothing left running from the last round. */
  settled: () => Promise<void>;
}

/**
 * The guests' outage as the prober saw it, by its own clock alone (stamps of
 * two processes are not compared): the first attempt after `n0` that failed
 * (the cut: its packets met the flushed ruleset), and the first attempt after
 * it that connected. A failed attempt reports when its time-out ends (500 ms).
 */
function outage(prober: TcpProber, n0: number): { cut: ProbeAttempt; ok: ProbeAttempt } | undefined {
  const after = prober.attempts.filter((a) => a.n > n0).sort((a, b) => a.n - b.n);
  const cut = after.find((a) => !a.ok);
  if (cut === undefined) return undefined;
  const ok = after.filter((a) => a.ok && a.n > cut.n).sort((a, b) => a.ended - b.ended)[0];
  if (ok === undefined) return undefined;
  return { cut, ok };
}

async function round(lab: Lab, monitor: LabMonitor, c: Contender): Promise<Round> {
  await c.settled();
  // libvirt restores its chains one rule (one process) at a time, seconds after they exist again: let it finish.
  await monitorQuiet(monitor, SETTLE_QUIET_MS);
  const prober = await TcpProber.start(lab, 'guest', WAN_ADDR, PORT, PROBE_EVERY_MS);
  try {
    await waitUntil('a connection before the flush', WAIT_MS, () => prober.attempts.some((a) => a.ok));
    // Every attempt reported so far ended before the flush.
    const n0 = Math.max(...prober.attempts.map((a) => a.n));
    const from = monitor.lines.length;
    await lab.nft('-f', LAB_FILES.adminRuleset);
    const first = await waitUntil('the flush on the monitor', 5000, () => monitor.lines[from]);
    const { cut, ok } = await waitUntil('the guest cut off, then a connection through', WAIT_MS, () =>
      outage(prober, n0),
    );
    const repair = await waitUntil('the repairing transaction on the monitor', WAIT_MS, () =>
      monitor.find(from, c.isRepair),
    );
    // Every attempt before the first one through has reported (a failed one when its time-out ends).
    const reported = () => new Set(prober.attempts.filter((a) => a.n > n0 && a.n < ok.n).map((a) => a.n)).size;
    await waitUntil('the attempts of the outage', WAIT_MS, () => reported() === ok.n - n0 - 1);
    const cutOff = prober.attempts.filter((a) => !a.ok && a.n > n0 && a.n < ok.n).length;
    if (TRACE) {
      const ev: Array<[number, string]> = [
        ...monitor.lines.slice(from).map((l): [number, string] => [l.at, `monitor: ${l.text.slice(0, 120)}`]),
        ...prober.attempts
          .filter((a) => a.n > n0 && a.n <= ok.n)
          .map((a): [number, string] => [a.started, `attempt ${a.n} ${a.ok ? 'OK' : 'FAIL'} ${a.ended - a.started}`]),
      ];
      ev.sort((a, b) => a[0] - b[0]);
      process.stderr.write(
        `--- round\n${ev.map(([t, x]) => `${(t - first.at).toFixed(1).padStart(8)} ${x}`).join('\n')}\n`,
      );
    }
    return { packetMs: ok.ended - cut.started, rulesMs: repair.at - first.at, cutOff };
  } finally {
    prober.stop();
  }
}

async function rounds(lab: Lab, monitor: LabMonitor, c: Contender, runs: number): Promise<Round[]> {
  await round(lab, monitor, c);
  const out: Round[] = [];
  for (let i = 0; i < runs; i++) out.push(await round(lab, monitor, c));
  await c.settled();
  return out;
}

/** The daemon has logged nothing for 300 ms. */
const quiet = (daemon: Daemon): Promise<void> => harnessQuiet(daemon, WAIT_MS);

async function withKvmnftd(
  lab: Lab,
  monitor: LabMonitor,
  work: string,
  runs: number,
): Promise<{ rounds: Round[]; repairs: Repair[] }> {
  const env: DaemonEnv = {
    KVMNFTD_RUNTIME_DIR: join(work, 'run-drift'),
    KVMNFTD_LOG_FORMAT: 'json',
    NOTIFY_SOCKET: join(work, 'no-notify'),
    NODE_OPTIONS: unitNodeFlags().join(' '),
  };
  const args = [CLI_MAIN, 'run', '--log-level', 'debug', '--events', 'dbus'];
  const daemon = new Daemon(lab.spawnInLab(lab.node, args, env));
  try {
    /** The daemon's log length at each settled state: round i's lines lie between marks i and i + 1. */
    const marks: number[] = [];
    const settled = async () => {
      await waitUntil(
        "kvmnftd's rules and libvirt's chains in place",
        WAIT_MS,
        async () => {
          const tables = (await lab.nft('list', 'tables')).stdout;
          const forward = (await lab.nft('list', 'chain', 'inet', 'filter', 'forward')).stdout;
          return (
            tables.includes('inet kvmnftd') && forward.includes('jump kvmnftd_') && (await libvirtChainsPresent(lab))
          );
        },
        { detail: () => daemon.dump().split('\n').slice(-20).join('\n') },
      );
      await quiet(daemon);
      marks.push(daemon.logs.length);
    };
    const isRepair = (t: string) => t.includes('kvmnftd') && !t.startsWith('{"delete"');
    const out = await rounds(lab, monitor, { isRepair, settled }, runs);
    const errors = daemon.logs.filter((r) => r.level >= 50);
    if (errors.length > 0) throw new Error(`drift: the daemon logged errors:\n${JSON.stringify(errors)}`);
    // marks[0] precedes the untimed round.
    const repairs = marks.slice(1, -1).map((m, i): Repair => {
      const applied = daemon.applied(m).find((r) => daemon.logs.indexOf(r) < marks[i + 2]!);
      if (applied === undefined) throw new Error(`drift: no repair logged in round ${i}`);
      return { latencyMs: Number(applied['latency_ms']), durationMs: Number(applied['duration_ms']) };
    });
    return { rounds: out, repairs };
  } finally {
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  }
}

/** The processes below `pid` (its children, theirs...). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let kids: string[];
    try {
      kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      return;
    }
    for (const k of kids.map(Number)) {
      out.push(k);
      walk(k);
    }
  };
  walk(pid);
  return out;
}

/** A process of the loop that is neither one of its shells nor its `nft monitor`: it is working off a line. */
function working(pid: number): boolean {
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sh') return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') !== 'nft monitor';
  } catch {
    return false; // gone
  }
}

async function withAdminLoop(lab: Lab, monitor: LabMonitor, runs: number): Promise<Round[]> {
  const loop = lab.spawnInLab('sh', [ADMIN_LOOP, RECIPE]);
  loop.stdout?.resume();
  let stderr = '';
  loop.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const pid = loop.pid;
  if (pid === undefined) throw new Error('the admin loop did not start');
  const present = async () =>
    (await lab.nft('list', 'chain', 'inet', 'filter', 'forward')).stdout.includes(
      'iifname "virbr0" oifname "eth0" accept',
    );
  try {
    // Its first job: the rules are missing; any change makes it look (a probe table, added and deleted).
    await waitUntil(
      'the admin loop to apply the recipe',
      WAIT_MS,
      async () => {
        if (loop.exitCode !== null) throw new Error(`the admin loop exited (${loop.exitCode}): ${stderr}`);
        await lab.nft('add', 'table', 'ip', 'kvmcompare_probe');
        await lab.nft('delete', 'table', 'ip', 'kvmcompare_probe');
        return present();
      },
      { intervalMs: 200 },
    );
    // Settled: the recipe in place, and the loop has worked off every line (only the shells and `nft monitor` left).
    let idleChecks = 0;
    const settled = async () => {
      await waitUntil('the recipe in place', WAIT_MS, present);
      await waitUntil(
        'the admin loop to go idle',
        WAIT_MS,
        () => {
          const busy = descendants(pid).some(working);
          idleChecks = busy ? 0 : idleChecks + 1;
          return idleChecks >= 5;
        },
        { intervalMs: 30 },
      );
    };
    const isRepair = (t: string) => t.includes('"virbr0"') && !t.startsWith('{"delete"');
    const out = await rounds(lab, monitor, { isRepair, settled }, runs);
    if (loop.exitCode !== null) throw new Error(`the admin loop exited (${loop.exitCode}): ${stderr}`);
    return out;
  } finally {
    for (const p of [...descendants(pid).reverse(), pid]) {
      try {
        process.kill(p, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
  }
}

/** Both contenders in `lab` (libvirt 9, its default network defined), as one comparison. */
export async function drift(lab: Lab, work: string, runs: number): Promise<Comparison> {
  await lab.virsh('net-start', 'default');
  await lab.guestStatic(GUEST);
  const listener = await lab.tcpListen(PORT);
  const monitor = await LabMonitor.start(lab);
  try {
    const versions = await labVersions(lab);
    const { rounds: ours, repairs } = await withKvmnftd(lab, monitor, work, runs);
    // kvmnftd gone: the admin's file once more leaves only the admin's rules, as on a host without kvmnftd.
    await lab.nft('-f', LAB_FILES.adminRuleset);
    const theirs = await withAdminLoop(lab, monitor, runs);
    const notes = (rs: Round[]) => ({
      rulesListedAgainMs: rs.map((r) => Math.round(r.rulesMs * 10) / 10),
      cutOffAttemptsP50: median(rs.map((r) => r.cutOff)),
    });
    return comparison(
      'drift-flush',
      "Drift: the admin's `nft -f` with `flush ruleset` (libvirt 9 lab)",
      versions,
      figure(
        'kvmnftd: guests cut off → a new connection through',
        ours.map((r) => r.packetMs),
        {
          ...notes(ours),
          daemonLatencyMs: stats(repairs.map((r) => r.latencyMs)),
          daemonDurationMs: stats(repairs.map((r) => r.durationMs)),
        },
      ),
      figure(
        'admin loop (`nft monitor` | sh re-applying the recipe): guests cut off → a new connection through',
        theirs.map((r) => r.packetMs),
        notes(theirs),
      ),
    );
  } finally {
    monitor.stop();
    await listener.close();
  }
}
