/**
 * Busy-host benchmark (issue 11): what a fail2ban/CrowdSec-like storm and a
 * large foreign set cost `kvmnftd run`, in the hermetic libvirt lab (test/lab)
 * with the default network running. Not a test: prints figures, and the JSON
 * with --json.
 *
 *   npm run bench:busy       (BENCH_CLI=path/to/dist/cli/main.js measures another build,
 *                             e.g. the previous release; BENCH_STORM=300, BENCH_SET=20000,
 *                             BENCH_BIG_SET=100000, BENCH_PASSES=30)
 *
 * 1. Set storm: a foreign set of BENCH_SET elements, then BENCH_STORM single
 *    `nft add element` calls. Reported: passes the daemon started during the
 *    storm, and its CPU time over the storm (until the daemon is quiet again):
 *    its own, its reaped children's, and its live `nft monitor` child's (from
 *    /proc/PID/stat). Then the same figures for an idle window of the same
 *    wall time (the set still there, no storm): the daemon's baseline, which
 *    the storm's figure includes; the difference is what the storm cost.
 *    The periodic check is off (resync_interval = 0) so that both windows
 *    hold the same work: its cost is a pass's, measured in 2. Work deferred
 *    from before a window (V8's memory reducer collects garbage seconds
 *    after a burst of allocation, e.g. loading the set) is kept out of it:
 *    each window starts once the daemon has used no CPU for QUIET_S seconds,
 *    and the storm's ends so too (what the storm defers is the storm's).
 * 2. Pass cost: the median duration of a pass the daemon runs for a
 *    harmless change in the admin table (a rule added to a regular chain
 *    there), without and with a foreign set of BENCH_BIG_SET elements
 *    (BENCH_PASSES=0 skips it).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_MAIN, requireBuiltCli } from '../test/helpers/cli.js';
import { waitUntil as until } from '../test/helpers/wait.js';
import { Daemon } from '../test/integration/daemon-harness.js';
import { startLab, type Lab } from '../test/lab/lab.js';

const CLI = process.env['BENCH_CLI'] ?? CLI_MAIN;
const STORM = Number(process.env['BENCH_STORM'] ?? 300);
const SET = Number(process.env['BENCH_SET'] ?? 20_000);
const BIG_SET = Number(process.env['BENCH_BIG_SET'] ?? 100_000);
const PASSES = Number(process.env['BENCH_PASSES'] ?? 30);
const TICK_S = 1 / 100; // USER_HZ on Linux
/** No CPU for this long: deferred work is done (V8's memory reducer waits up to 8 s between its collections). */
const QUIET_S = 10;
/** The node options the shipped unit gives the daemon (Environment=NODE_OPTIONS=... in systemd/kvmnftd.service). */
const UNIT_NODE_OPTIONS = (
  /^Environment=NODE_OPTIONS=(.*)$/m.exec(
    readFileSync(join(import.meta.dirname, '..', 'systemd', 'kvmnftd.service'), 'utf8'),
  )?.[1] ?? ''
).trim();

/** utime, stime, cutime, cstime of a process, in seconds. */
function cpu(pid: number): { own: number; reaped: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after "(comm) ": state is f[0], utime f[11], stime f[12], cutime f[13], cstime f[14].
  return { own: (Number(f[11]) + Number(f[12])) * TICK_S, reaped: (Number(f[13]) + Number(f[14])) * TICK_S };
}

/** The daemon's live children (the nft monitor), their CPU in seconds. */
function liveChildren(pid: number): { count: number; cpu: number } {
  let count = 0;
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) !== pid) continue;
      count++;
      total += cpu(Number(entry)).own;
    } catch {
      /* exited meanwhile */
    }
  }
  return { count, cpu: total };
}

/** Pass records (every pass logs exactly one), except the periodic safety-net check. */
const passes = (d: Daemon, from = 0) =>
  d.logs
    .slice(from)
    .filter((r) => r.msg.includes('already up to date') || /applied \d+ nft commands/.test(r.msg))
    .filter((r) => !String(r['event']).includes('periodic'));

/** Waits until the daemon and its children have used no CPU for QUIET_S seconds. */
async function cpuQuiet(pid: number): Promise<void> {
  const total = (): number => {
    const c = cpu(pid);
    return c.own + c.reaped + liveChildren(pid).cpu;
  };
  let last = total();
  let quietSince = performance.now();
  await until(`the daemon to use no CPU for ${QUIET_S} s`, 180_000, async () => {
    await sleep(500);
    const now = total();
    if (now !== last) quietSince = performance.now();
    last = now;
    return performance.now() - quietSince >= QUIET_S * 1000;
  });
}

/** The daemon's CPU over a window: its own, its reaped children's, its live children's (the nft monitor). */
interface CpuWindow {
  wall_s: number;
  passes: number;
  /** Lines the daemon logged (debug included). */
  log_lines: number;
  cpu_own_s: number;
  cpu_reaped_children_s: number;
  cpu_live_children_s: number;
  cpu_total_s: number;
}

/** Runs `work` and then waits for the daemon to settle; the daemon's CPU meanwhile. */
async function cpuWindow(d: Daemon, work: () => Promise<void>, settled: () => Promise<void>): Promise<CpuWindow> {
  const pid = d.child.pid!;
  const from = d.logs.length;
  const cpu0 = cpu(pid);
  const kids0 = liveChildren(pid);
  const t0 = performance.now();
  await work();
  await settled();
  const wallS = (performance.now() - t0) / 1000;
  const cpu1 = cpu(pid);
  const kids1 = liveChildren(pid);
  const own = cpu1.own - cpu0.own;
  const reaped = cpu1.reaped - cpu0.reaped;
  const live = kids1.cpu - kids0.cpu;
  const s2 = (x: number) => Number(x.toFixed(2));
  return {
    wall_s: Number(wallS.toFixed(1)),
    passes: passes(d, from).length,
    log_lines: d.logs.length - from,
    cpu_own_s: s2(own),
    cpu_reaped_children_s: s2(reaped),
    cpu_live_children_s: s2(live),
    cpu_total_s: s2(own + reaped + live),
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function setFile(dir: string, name: string, size: number): string {
  const elems: string[] = [];
  for (let i = 0; i < size; i++) elems.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  const file = join(dir, `${name}.nft`);
  writeFileSync(
    file,
    `table inet ${name} {\n set bans {\n  type ipv4_addr\n  elements = { ${elems.join(',\n')} }\n }\n}\n`,
  );
  return file;
}

async function settle(d: Daemon, lab: Lab): Promise<void> {
  // Quiet when no new pass record appears for 1 s after the last one.
  let n = -1;
  await until('the daemon to settle', 30_000, async () => {
    const now = passes(d).length;
    const quiet = now === n;
    n = now;
    await new Promise((r) => setTimeout(r, 1000));
    return quiet && (await lab.nft('list', 'tables')).stdout.includes('inet kvmnftd');
  });
}

/** Median wall time of a pass (its own duration_ms) and its mean CPU time (daemon + reaped children). */
async function passCost(d: Daemon, lab: Lab): Promise<{ wall_ms: number; cpu_ms: number }> {
  await lab.nft('add', 'chain', 'inet', 'filter', 'bench_busy');
  await settle(d, lab);
  const durations: number[] = [];
  let cpuS = 0;
  for (let i = 0; i < PASSES; i++) {
    const from = d.logs.length;
    const before = cpu(d.child.pid!);
    await lab.nft('add', 'rule', 'inet', 'filter', 'bench_busy', 'counter');
    const rec = await until('a pass for the admin change', 10_000, () => passes(d, from)[0]);
    const after = cpu(d.child.pid!);
    cpuS += after.own + after.reaped - before.own - before.reaped;
    durations.push(Number(rec['duration_ms']));
  }
  await lab.nft('delete', 'chain', 'inet', 'filter', 'bench_busy');
  return { wall_ms: median(durations), cpu_ms: Number(((cpuS / PASSES) * 1000).toFixed(1)) };
}

async function main(): Promise<void> {
  requireBuiltCli();
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-busy-'));
  let lab: Lab | undefined;
  try {
    lab = await startLab({ defaultNetwork: 'start' });
    const env = {
      KVMNFTD_RUNTIME_DIR: join(work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json' as const,
      NOTIFY_SOCKET: join(work, 'none'),
      ...(UNIT_NODE_OPTIONS ? { NODE_OPTIONS: UNIT_NODE_OPTIONS } : {}),
    };
    const config = join(work, 'kvmnftd.toml');
    writeFileSync(config, '[daemon]\nresync_interval = 0\n');
    const daemon = new Daemon(
      lab.spawnInLab(lab.node, [CLI, 'run', '--log-level', 'debug', '--events', 'dbus', '--config', config], env),
    );
    const pid = daemon.child.pid!;
    await settle(daemon, lab);

    // 1. Set storm, then an idle window of the same wall time.
    await lab.nft('-f', setFile(work, 'f2b', SET));
    await settle(daemon, lab);
    await cpuQuiet(pid);
    let stormS = 0;
    const stormWindow = await cpuWindow(
      daemon,
      async () => {
        const t0 = performance.now();
        for (let i = 0; i < STORM; i++) {
          await lab!.nft('add', 'element', 'inet', 'f2b', 'bans', `{ 172.16.${i >> 8}.${i & 255} }`);
        }
        stormS = (performance.now() - t0) / 1000;
      },
      async () => {
        await settle(daemon, lab!);
        await cpuQuiet(pid);
      },
    );
    const idle = await cpuWindow(
      daemon,
      () => sleep(stormWindow.wall_s * 1000),
      () => Promise.resolve(),
    );
    const storm = {
      elements: STORM,
      set_size: SET,
      storm_s: Number(stormS.toFixed(1)),
      ...stormWindow,
      live_children: liveChildren(pid).count,
    };
    await lab.nft('delete', 'table', 'inet', 'f2b');
    await settle(daemon, lab);

    // 2. Pass cost without and with a large foreign set.
    const none = { wall_ms: NaN, cpu_ms: NaN };
    const without = PASSES > 0 ? await passCost(daemon, lab) : none;
    if (PASSES > 0) {
      await lab.nft('-f', setFile(work, 'big', BIG_SET));
      await settle(daemon, lab);
    }
    const withSet = PASSES > 0 ? await passCost(daemon, lab) : none;
    if (PASSES > 0) await lab.nft('delete', 'table', 'inet', 'big');

    const result = {
      cli: CLI,
      node: process.version,
      node_options: UNIT_NODE_OPTIONS,
      storm,
      idle,
      storm_minus_idle_cpu_s: Number((storm.cpu_total_s - idle.cpu_total_s).toFixed(2)),
      pass: {
        set_size: BIG_SET,
        without_set: without,
        with_set: withSet,
        wall_ratio: Number((withSet.wall_ms / without.wall_ms).toFixed(2)),
        cpu_ratio: Number((withSet.cpu_ms / without.cpu_ms).toFixed(2)),
      },
    };
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      const s = result.storm;
      process.stdout.write(
        `kvmnftd busy host (${CLI}), libvirt lab, --events dbus, node ${process.version}, ` +
          `NODE_OPTIONS=${UNIT_NODE_OPTIONS || '(none)'}\n` +
          `set storm: ${s.elements} single 'nft add element' into a ${s.set_size}-element foreign set (${s.storm_s} s): ` +
          `${s.passes} passes, ${s.log_lines} log lines; daemon CPU ${s.cpu_total_s} s (own ${s.cpu_own_s}, reaped children ${s.cpu_reaped_children_s}, ` +
          `live nft monitor ${s.cpu_live_children_s}) over ${s.wall_s} s, until ${QUIET_S} s without CPU\n` +
          `idle, same wall time (${idle.wall_s} s, the set still there): ${idle.passes} passes, ${idle.log_lines} log lines; daemon CPU ${idle.cpu_total_s} s ` +
          `(own ${idle.cpu_own_s}, reaped children ${idle.cpu_reaped_children_s}, live nft monitor ${idle.cpu_live_children_s})\n` +
          `storm minus idle: ${result.storm_minus_idle_cpu_s} s; target 0 passes and < 0.3 s: ` +
          `${s.passes === 0 && s.cpu_total_s < 0.3 ? 'PASS' : 'FAIL'} for the storm window as a whole, ` +
          `${s.passes === 0 && result.storm_minus_idle_cpu_s < 0.3 ? 'PASS' : 'FAIL'} for the storm's cost above idle\n` +
          `pass cost (${PASSES} passes): wall median ${without.wall_ms} ms without, ${withSet.wall_ms} ms with a ` +
          `${BIG_SET}-element foreign set (ratio ${result.pass.wall_ratio}); CPU mean ${without.cpu_ms} ms vs ` +
          `${withSet.cpu_ms} ms (ratio ${result.pass.cpu_ratio})\n`,
      );
    }
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  } finally {
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
