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
 *    storm, and its CPU time over the storm: its own, its reaped children's,
 *    and its live `nft monitor` child's (from /proc/PID/stat).
 * 2. Pass cost: the median duration of a pass the daemon runs for a
 *    harmless change in the admin table (a rule added to a regular chain
 *    there), without and with a foreign set of BENCH_BIG_SET elements.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
    };
    const daemon = new Daemon(lab.spawnInLab(lab.node, [CLI, 'run', '--log-level', 'debug', '--events', 'dbus'], env));
    const pid = daemon.child.pid!;
    await settle(daemon, lab);

    // 1. Set storm.
    await lab.nft('-f', setFile(work, 'f2b', SET));
    await settle(daemon, lab);
    const from = daemon.logs.length;
    const cpu0 = cpu(pid);
    const kids0 = liveChildren(pid);
    const t0 = performance.now();
    for (let i = 0; i < STORM; i++) {
      await lab.nft('add', 'element', 'inet', 'f2b', 'bans', `{ 172.16.${i >> 8}.${i & 255} }`);
    }
    const stormS = (performance.now() - t0) / 1000;
    await settle(daemon, lab);
    const cpu1 = cpu(pid);
    const kids1 = liveChildren(pid);
    const storm = {
      elements: STORM,
      set_size: SET,
      storm_s: Number(stormS.toFixed(1)),
      passes: passes(daemon, from).length,
      cpu_own_s: Number((cpu1.own - cpu0.own).toFixed(2)),
      cpu_reaped_children_s: Number((cpu1.reaped - cpu0.reaped).toFixed(2)),
      cpu_live_children_s: Number((kids1.cpu - kids0.cpu).toFixed(2)),
      live_children: kids1.count,
    };
    await lab.nft('delete', 'table', 'inet', 'f2b');
    await settle(daemon, lab);

    // 2. Pass cost without and with a large foreign set.
    const without = await passCost(daemon, lab);
    await lab.nft('-f', setFile(work, 'big', BIG_SET));
    await settle(daemon, lab);
    const withSet = await passCost(daemon, lab);
    await lab.nft('delete', 'table', 'inet', 'big');

    const result = {
      cli: CLI,
      node: process.version,
      storm: {
        ...storm,
        cpu_total_s: Number((storm.cpu_own_s + storm.cpu_reaped_children_s + storm.cpu_live_children_s).toFixed(2)),
      },
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
        `kvmnftd busy host (${CLI}), libvirt lab, --events dbus, node ${process.version}\n` +
          `set storm: ${s.elements} single 'nft add element' into a ${s.set_size}-element foreign set (${s.storm_s} s): ` +
          `${s.passes} passes; daemon CPU ${s.cpu_total_s} s (own ${s.cpu_own_s}, reaped children ${s.cpu_reaped_children_s}, ` +
          `live nft monitor ${s.cpu_live_children_s})\n` +
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
