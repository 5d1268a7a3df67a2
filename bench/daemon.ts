/**
 * Daemon benchmark: `kvmnftd run` in the hermetic libvirt lab (test/lab).
 * Not a test: nothing is asserted beyond "the daemon did its job"; figures are
 * printed as a table and, with BENCH_OUT=FILE, written as JSON.
 *
 *   npm run build && npx vitest run --config bench/vitest.config.ts
 *
 * Per transport (--events dbus, --events virsh), a fresh lab and daemon:
 *   1. N start/stop cycles (`virsh net-start` / `virsh net-destroy`) of one
 *      small NAT network without DHCP. Per change:
 *        (a) the daemon's own latency_ms of the first applied transaction whose
 *            `networks` field is the expected set;
 *        (b) external: an independent D-Bus client in this process (on the
 *            lab bus socket) timestamps libvirt-dbus's NetworkEvent signal, and
 *            `nft -j monitor` running in the lab timestamps the first ruleset
 *            notification that names kvmnftd (the daemon's commit); both
 *            stamps are taken in this process (performance.now()).
 *   2. RSS of the daemon (VmRSS of child.pid) after READY, again after
 *      BENCH_IDLE_MS (30 s) of idling, then every 100
 *      events: lifecycle events of the cycles, then synthetic ones up to
 *      BENCH_EVENTS: a base chain on the forward hook created in, then deleted
 *      from, a scratch table (`table ip kvmbench_x`, chain `kvmbench_fwd`); the
 *      monitor scope (src/nft/monitor-scope.ts) starts a pass for each, and
 *      the bench waits for that pass. A bare node process is the baseline.
 *      Memory stays flat (issue 11): over 10,000 events (BENCH_EVENTS=10000),
 *      the RSS after event 10,000 is at most 2 MiB above the RSS after event
 *      1,000; the report says PASS or FAIL whenever BENCH_EVENTS > 1000.
 *   3. With the daemon stopped, the steps of one pass timed separately inside
 *      the lab with the daemon's own built modules (dist/): libvirt-dbus
 *      ListNetworks + GetXMLDesc, virsh net-list + net-dumpxml (one-shot, and
 *      through the daemon's virsh shell), nft -j list
 *      ruleset, plan, nft -j -f.
 *   4. What-if: --events dbus again (fresh lab), the daemon started with the
 *      node options in BENCH_WHATIF_NODE_FLAGS (default "--max-semi-space-size=1
 *      --trace-gc": a small young generation, and V8's GC trace, from which the
 *      heap still in use after each mark-compact is read: the live-heap trend).
 *
 * Knobs (env): BENCH_CYCLES_DBUS (default 100), BENCH_CYCLES_VIRSH (60),
 * BENCH_EVENTS (1000), BENCH_BREAKDOWN_ITERS (40), BENCH_WHATIF_NODE_FLAGS
 * ("" skips run 4), BENCH_TRACE_GC=1 (--trace-gc in runs 1 and 2 too),
 * BENCH_TRACE=N (timeline of the first N changes to stderr), BENCH_OUT (JSON
 * file), BENCH_IDLE_MS (30000: the idle wait after READY before the second
 * RSS sample), BENCH_EXTRA_NODE_OPTIONS and BENCH_DAEMON_ENV ("NAME=VALUE ...")
 * for the main runs' daemon on top of the unit's NODE_OPTIONS and other
 * Environment= lines (what-ifs without editing the unit), BENCH_CLI (another
 * build's dist/cli/main.js as the daemon: before and after on one machine). About 4 minutes with the defaults. Memory stays flat, about 45
 * minutes on a 2-core machine shared with other work:
 *   BENCH_EVENTS=10000 BENCH_CYCLES_VIRSH=1 BENCH_WHATIF_NODE_FLAGS= npm run bench:daemon
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { it } from 'vitest';
import { sleep, waitUntil } from '../test/helpers/wait.js';
import { startLab, type Lab } from '../test/lab/lab.js';
import { LabMonitor } from '../test/integration/daemon-harness.js';
import { childrenOf, DaemonProc, Observer, procStatus } from './lib/daemon-proc.js';
import { loadavg, machineFacts, unitEnv, unitNodeFlags } from './lib/machine.js';
import { NET, NET_XML, networkChange, type ChangeSample } from './lib/network-cycle.js';
import { median, round, stats, type Stats } from './lib/stats.js';
import { table } from './lib/text-table.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** BENCH_CLI=path/to/dist/cli/main.js runs another build's daemon (before/after on one machine); the breakdown always uses this build's modules. */
const CLI_MAIN = process.env['BENCH_CLI'] ?? join(REPO, 'dist', 'cli', 'main.js');

const envInt = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : dflt;
};
const CYCLES = { dbus: envInt('BENCH_CYCLES_DBUS', 100), virsh: envInt('BENCH_CYCLES_VIRSH', 60) } as const;
const TOTAL_EVENTS = envInt('BENCH_EVENTS', 1000);
const BREAKDOWN_ITERS = envInt('BENCH_BREAKDOWN_ITERS', 40);
/** A third run, --events dbus again, with these node options for the daemon ("" to skip): how much of the RSS is V8's young generation. */
const WHATIF_FLAGS = (process.env['BENCH_WHATIF_NODE_FLAGS'] ?? '--max-semi-space-size=1 --trace-gc')
  .split(/\s+/)
  .filter(Boolean);
/** The node options the shipped unit gives the daemon: the main runs use them too. */
const UNIT_NODE_FLAGS = unitNodeFlags();
/** BENCH_TRACE_GC=1: the main runs' daemon also prints V8's GC trace (the live-heap trend, without a what-if run). */
const MAIN_NODE_FLAGS = [
  ...UNIT_NODE_FLAGS,
  ...(process.env['BENCH_EXTRA_NODE_OPTIONS'] ?? '').split(/\s+/).filter(Boolean),
  ...(process.env['BENCH_TRACE_GC'] === '1' ? ['--trace-gc'] : []),
];
/** The unit's other Environment= lines (e.g. MALLOC_ARENA_MAX), then BENCH_DAEMON_ENV's: every daemon run gets them. */
const DAEMON_ENV: Record<string, string> = {
  ...unitEnv(),
  ...Object.fromEntries(
    (process.env['BENCH_DAEMON_ENV'] ?? '')
      .split(/\s+/)
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  ),
};
/** RSS is sampled at READY and again after this long idle (a one-off drop at READY must last). */
const IDLE_MS = Number(process.env['BENCH_IDLE_MS'] ?? 30_000);
const SAMPLE_EVERY = 100;
/** Memory stays flat: the RSS after the last event at most this far above the RSS after event FLAT_FROM. */
const FLAT_FROM = 1000;
const FLAT_MIB = 2;
/** The synthetic events' scratch table and its forward-hook base chain. */
const SCRATCH = { family: 'ip', table: 'kvmbench_x', chain: 'kvmbench_fwd' } as const;
/** BENCH_TRACE=N: print the timeline of the first N changes per transport to stderr. */
const TRACE = Number(process.env['BENCH_TRACE'] ?? 0);

const now = (): number => performance.now();

// ---------------------------------------------------------------------------
// one transport

interface RssSample {
  events: number;
  passes: number;
  rssMiB: number;
  hwmMiB: number;
  anonMiB: number;
  fileMiB: number;
  /** with --trace-gc: mark-compacts so far, and the heap in use after the last one (MB). */
  majorGcs?: number;
  heapAfterLastMajorGcMB?: number;
}

interface TransportResult {
  transport: 'dbus' | 'virsh';
  label: string;
  nodeFlags: string[];
  env: Record<string, string>;
  cycles: number;
  labStartMs: number;
  readyMs: number;
  samples: ChangeSample[];
  rss: RssSample[];
  /** The sample at READY, and the one IDLE_MS later (no events in between). */
  idle: { ready: RssSample; after: RssSample; ms: number };
  children: Array<{ pid: number; comm: string; rssMiB: number }>;
  anomalies: string[];
  breakdown?: Breakdown;
  /** RSS of a bare node process in the same lab. */
  bare?: { rssMiB: number; anonMiB: number };
}

interface Breakdown {
  iters: number;
  dbusListMs: Stats;
  virshListMs: Stats;
  virshShellListMs: Stats;
  nftListMs: Stats;
  planMs: Stats;
  applyAddMs: Stats;
  applyRemoveMs: Stats;
  passAddMs: Stats;
  passRemoveMs: Stats;
  spawnTrueMs: Stats;
  commandsAdd: number;
  commandsRemove: number;
}

interface RunOptions {
  transport: 'dbus' | 'virsh';
  cycles: number;
  /** RSS every 100 events and synthetic events up to BENCH_EVENTS (else RSS at READY and after the cycles). */
  withRss: boolean;
  /** Bare-node RSS and the pass-step breakdown in this lab. */
  extras: boolean;
  /** node options for the daemon process (what-if runs). */
  nodeFlags: string[];
}

async function runTransport(opts: RunOptions, work: string): Promise<TransportResult> {
  const { transport, cycles, withRss, extras, nodeFlags } = opts;
  const envText = Object.entries(DAEMON_ENV)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const label = [
    transport,
    ...(nodeFlags.length > 0 ? [`(node ${nodeFlags.join(' ')})`] : []),
    ...(envText ? [`(${envText})`] : []),
  ].join(' ');
  const anomalies: string[] = [];
  const t0 = now();
  const lab = await startLab({ defaultNetwork: 'none' });
  const labStartMs = round(now() - t0, 0);
  let observer: Observer | undefined;
  try {
    const xml = join(work, `${NET}.xml`);
    writeFileSync(xml, NET_XML);
    await lab.virsh('net-define', xml);
    observer = await Observer.connect(lab);
    const monitor = await LabMonitor.start(lab);

    const bare = extras ? await bareNodeRss(lab) : undefined;
    const config = join(work, 'kvmnftd.toml');
    writeFileSync(config, '# defaults\n');
    const env = { ...DAEMON_ENV, KVMNFTD_RUNTIME_DIR: join(work, `run-${transport}`), KVMNFTD_LOG_FORMAT: 'json' };
    const spawnedAt = now();
    const d = new DaemonProc(
      lab.spawnInLab(
        lab.node,
        [...nodeFlags, CLI_MAIN, 'run', '--events', transport, '--config', config, '--log-level', 'debug'],
        env,
      ),
    );
    const readyLine = await waitUntil(
      'READY (the "ready:" log line)',
      30_000,
      () => d.find(0, (l) => l.rec.msg.startsWith('ready:')),
      { intervalMs: 5, detail: () => d.tail() },
    );
    const readyMs = round(readyLine.at - spawnedAt, 0);
    const transportLine = d.find(0, (l) => l.rec['transport'] === transport && l.rec.msg.startsWith('events:'));
    if (!transportLine) anomalies.push(`no "events:" line with transport=${transport}`);
    await d.quiet(200);

    const rss: RssSample[] = [];
    let events = 0;
    const passes = () => d.logs.filter((l) => DaemonProc.isPass(l)).length;
    const sample = () => {
      const s = procStatus(d.pid);
      const mib = (k: string) => round((s[k] ?? NaN) / 1024);
      const gc =
        d.majorGcs.length > 0
          ? { majorGcs: d.majorGcs.length, heapAfterLastMajorGcMB: d.majorGcs[d.majorGcs.length - 1]!.afterMB }
          : {};
      rss.push({
        events,
        passes: passes(),
        rssMiB: mib('VmRSS'),
        hwmMiB: mib('VmHWM'),
        anonMiB: mib('RssAnon'),
        fileMiB: mib('RssFile'),
        ...gc,
      });
    };
    sample();
    const ready = rss[0]!;
    await sleep(IDLE_MS);
    sample();
    const idle = { ready, after: rss.pop()!, ms: IDLE_MS };

    const samples: ChangeSample[] = [];
    const cycle = { lab, daemon: d, monitor, observer: observer, label, anomalies };
    const step = async (kind: 'start' | 'stop'): Promise<void> => {
      const n = samples.length;
      samples.push(await networkChange(cycle, kind, n, TRACE > 0 && n < TRACE));
      events++;
      if (withRss && events % SAMPLE_EVERY === 0) sample();
    };

    for (let i = 0; i < cycles; i++) {
      await step('start');
      await step('stop');
    }
    if (!withRss) sample();

    // Synthetic events: a forward-hook base chain created or deleted in a
    // scratch table, each answered by one (no-op) pass. The table itself is
    // foreign and holds no base chain yet: creating it starts no pass.
    if (withRss) {
      const { family, table, chain } = SCRATCH;
      await lab.nft('add', 'table', family, table);
      let synthetic = 0;
      while (events < TOTAL_EVENTS) {
        const from = d.logs.length;
        if (synthetic % 2 === 0)
          await lab.nft('add', 'chain', family, table, chain, '{ type filter hook forward priority 0 ; }');
        else await lab.nft('delete', 'chain', family, table, chain);
        synthetic++;
        const reason = `base chain ${family} ${table} ${chain}`;
        await waitUntil(
          `a pass for synthetic event ${synthetic} ("${reason} ...")`,
          5000,
          () => d.find(from, (l) => DaemonProc.isPass(l) && String(l.rec['event']).startsWith(reason)),
          { intervalMs: 1, detail: () => d.tail() },
        );
        const extra = d.logs.slice(from).filter(DaemonProc.isApplied);
        if (extra.length > 0)
          anomalies.push(
            `synthetic event ${synthetic}: ${extra.length} transaction(s) applied: ${JSON.stringify(extra[0]!.rec)}`,
          );
        events++;
        if (events % SAMPLE_EVERY === 0) sample();
      }
      await lab.nft('delete', 'table', family, table);
      if (rss[rss.length - 1]!.events !== events) sample();
      await d.quiet(200);
    }
    const children = childrenOf(d.pid);

    const warnings = d.logs.filter((l) => l.rec.level >= 40);
    for (const w of warnings.slice(0, 5)) anomalies.push(`daemon logged level ${w.rec.level}: ${w.rec.msg}`);

    // Stop the daemon; time the steps of a pass with its own modules.
    d.child.kill('SIGTERM');
    const code = await Promise.race([d.exited, sleep(5000).then(() => 'timeout' as const)]);
    if (code !== 0) anomalies.push(`daemon exit after SIGTERM: ${String(code)}`);
    let breakdown: Breakdown | undefined;
    if (extras) {
      await lab.virsh('net-start', NET);
      breakdown = await timePassSteps(lab, config, join(work, 'run-breakdown'));
      await lab.virsh('net-destroy', NET);
    }
    return {
      transport,
      label,
      nodeFlags,
      env: DAEMON_ENV,
      cycles,
      labStartMs,
      readyMs,
      samples,
      rss,
      idle,
      children,
      anomalies,
      ...(breakdown ? { breakdown } : {}),
      ...(bare ? { bare } : {}),
    };
  } finally {
    observer?.close();
    const report = await lab.stop();
    if (report.remaining.length > 0 || report.errors.length > 0)
      process.stderr.write(`lab stop: ${JSON.stringify(report)}\n`);
  }
}

/**
 * The steps of one pass, timed inside the lab by a node process that imports
 * the daemon's built modules. Alternates "no networks" and "the network" as
 * the desired state, so the transactions are the stop and start ones.
 */
async function timePassSteps(lab: Lab, config: string, runDir: string): Promise<Breakdown> {
  const dist = pathToFileURL(join(REPO, 'dist')).href;
  const execaUrl = pathToFileURL(join(REPO, 'node_modules', 'execa', 'index.js')).href;
  const code = `
const a = JSON.parse(process.env.KVMNFTD_BENCH_ARGS);
const { plan } = await import(a.dist + '/nft/plan.js');
const { nftRunner } = await import(a.dist + '/nft/nft-runner.js');
const { loadConfig } = await import(a.dist + '/config/config.js');
const { LibvirtDbusClient } = await import(a.dist + '/libvirt/dbus-client.js');
const { activeNetworkXml } = await import(a.dist + '/libvirt/virsh.js');
const { VirshShell } = await import(a.dist + '/libvirt/virsh-shell.js');
const shell = new VirshShell('qemu:///system');
const { parseNetworkXml } = await import(a.dist + '/libvirt/parse-network-xml.js');
const { execa } = await import(a.execa);
const fs = await import('node:fs');
fs.mkdirSync(a.runDir, { recursive: true });
const config = loadConfig(a.config).config;
const nft = nftRunner(a.runDir);
const client = await LibvirtDbusClient.connect('/org/libvirt/QEMU', { onNetworkEvent() {}, onOwnerChange() {}, onFault() {} });
const t = () => performance.now();
const r = { dbusList: [], virshList: [], virshShellList: [], nftList: [], plan: [], applyAdd: [], applyRemove: [], passAdd: [], passRemove: [], spawnTrue: [], commandsAdd: 0, commandsRemove: 0 };
for (let i = -2; i < a.iters; i++) {
  const keep = i >= 0;
  let s = t(); const nets = await client.activeNetworks(); const dl = t() - s;
  s = t(); await activeNetworkXml('qemu:///system').then((l) => l.map(({ name, xml }) => parseNetworkXml(xml, name))); const vl = t() - s;
  s = t(); await shell.activeNetworks().then((l) => l.map(({ name, xml }) => parseNetworkXml(xml, name))); const vs = t() - s;
  s = t(); await execa('true', [], { stdin: 'ignore' }); const st = t() - s;
  if (nets.length !== 1) throw new Error('expected one active network, got ' + nets.length);
  const add = (i + 2) % 2 === 0; // the network was started with the daemon stopped: add first
  const p0 = t();
  s = t(); const live = await nft.readRuleset(); const nl = t() - s;
  s = t(); const p = plan(add ? nets : [], config, live); const pl = t() - s;
  if (p.batch.nftables.length === 0) throw new Error('empty plan at iteration ' + i);
  s = t(); await nft.apply(p.batch); const ap = t() - s;
  const pass = t() - p0;
  if (!keep) continue;
  r.dbusList.push(dl); r.virshList.push(vl); r.virshShellList.push(vs); r.spawnTrue.push(st); r.nftList.push(nl); r.plan.push(pl);
  if (add) { r.applyAdd.push(ap); r.passAdd.push(pass); r.commandsAdd = p.batch.nftables.length; }
  else { r.applyRemove.push(ap); r.passRemove.push(pass); r.commandsRemove = p.batch.nftables.length; }
}
client.close();
shell.close();
process.stdout.write(JSON.stringify(r) + '\\n');
`;
  const args = JSON.stringify({ dist, execa: execaUrl, config, runDir, iters: BREAKDOWN_ITERS });
  const r = await lab.exec(process.execPath, ['--input-type=module', '-e', code], {
    env: { KVMNFTD_BENCH_ARGS: args },
    timeoutMs: 120_000,
  });
  rmSync(runDir, { recursive: true, force: true });
  const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number[]> & {
    commandsAdd: number;
    commandsRemove: number;
  };
  return {
    iters: BREAKDOWN_ITERS,
    dbusListMs: stats(j['dbusList']!),
    virshListMs: stats(j['virshList']!),
    virshShellListMs: stats(j['virshShellList']!),
    nftListMs: stats(j['nftList']!),
    planMs: stats(j['plan']!),
    applyAddMs: stats(j['applyAdd']!),
    applyRemoveMs: stats(j['applyRemove']!),
    passAddMs: stats(j['passAdd']!),
    passRemoveMs: stats(j['passRemove']!),
    spawnTrueMs: stats(j['spawnTrue']!),
    commandsAdd: j.commandsAdd,
    commandsRemove: j.commandsRemove,
  };
}

/** RSS of a bare `node -e "setInterval(()=>{},1000)"` in the lab, measured the same way. */
async function bareNodeRss(lab: Lab): Promise<{ rssMiB: number; anonMiB: number }> {
  const child = lab.spawnInLab(process.execPath, ['-e', 'setInterval(()=>{},1000)']);
  child.stdout?.resume();
  child.stderr?.resume();
  try {
    await sleep(1500);
    if (child.pid === undefined) throw new Error('bare node: no pid');
    const st = procStatus(child.pid);
    return { rssMiB: round((st['VmRSS'] ?? NaN) / 1024), anonMiB: round((st['RssAnon'] ?? NaN) / 1024) };
  } finally {
    child.kill('SIGTERM');
  }
}

// ---------------------------------------------------------------------------
// machine facts and report

/** One row per statistic, in the order given; a label's trailing blanks only keep object keys apart. */
function statTable(rows: Record<string, Stats>): string {
  return table(
    ['ms', 'n', 'p50', 'p95', 'p99', 'max', 'mean'],
    Object.entries(rows).map(([name, s]) => [name.trimEnd(), s.n, s.p50, s.p95, s.p99, s.max, s.mean]),
  );
}

function countBy(xs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

/** The RSS after the last event against the RSS after event FLAT_FROM (when there were more events). */
function memoryFlat(rss: readonly RssSample[]) {
  const from = rss.find((x) => x.events === FLAT_FROM);
  const to = rss[rss.length - 1];
  if (!from || !to || to.events <= FLAT_FROM) return undefined;
  const diffMiB = round(to.rssMiB - from.rssMiB);
  return {
    fromEvents: FLAT_FROM,
    toEvents: to.events,
    fromMiB: from.rssMiB,
    toMiB: to.rssMiB,
    diffMiB,
    anonDiffMiB: round(to.anonMiB - from.anonMiB),
    targetMiB: FLAT_MIB,
    pass: diffMiB <= FLAT_MIB,
  };
}

function summarize(r: TransportResult) {
  const all = r.samples;
  const start = all.filter((s) => s.kind === 'start');
  const stop = all.filter((s) => s.kind === 'stop');
  return {
    transport: r.transport,
    label: r.label,
    nodeFlags: r.nodeFlags,
    env: r.env,
    cycles: r.cycles,
    changes: all.length,
    labStartMs: r.labStartMs,
    readyMs: r.readyMs,
    daemonLatencyMs: stats(all.map((s) => s.daemonLatencyMs)),
    daemonLatencyStartMs: stats(start.map((s) => s.daemonLatencyMs)),
    daemonLatencyStopMs: stats(stop.map((s) => s.daemonLatencyMs)),
    externalMs: stats(all.map((s) => s.externalMs)),
    externalStartMs: stats(start.map((s) => s.externalMs)),
    externalStopMs: stats(stop.map((s) => s.externalMs)),
    daemonEventToCommitMs: stats(all.map((s) => s.daemonEventToCommitMs).filter((x) => !Number.isNaN(x))),
    daemonDurationMs: stats(all.map((s) => s.daemonDurationMs)),
    cmdToSignalMs: stats(all.map((s) => s.cmdToSignalMs)),
    endToEndMs: stats(all.map((s) => s.endToEndMs)),
    virshMs: stats(all.map((s) => s.virshMs)),
    logAfterCommitMs: stats(all.map((s) => s.logAfterCommitMs)),
    commands: { start: median(start.map((s) => s.commands)), stop: median(stop.map((s) => s.commands)) },
    triggerOfReflectingTransaction: countBy(all.map((s) => s.event)),
    transactionsPerChange: countBy(all.map((s) => String(s.transactions))),
    passesPerChange: countBy(all.map((s) => String(s.passes))),
    passReasons: countBy(all.flatMap((s) => s.passReasons)),
    rss: r.rss,
    idle: r.idle,
    memoryFlat: memoryFlat(r.rss),
    children: r.children,
    anomalies: r.anomalies,
    ...(r.breakdown ? { breakdown: r.breakdown } : {}),
  };
}

function report(
  facts: Record<string, string | number>,
  results: TransportResult[],
  bare: { rssMiB: number; anonMiB: number },
  totalMs: number,
): string {
  const out: string[] = [];
  out.push('kvmnftd daemon benchmark');
  out.push(
    Object.entries(facts)
      .map(([k, v]) => `  ${k}: ${v}`)
      .join('\n'),
  );
  out.push('');
  for (const r of results) {
    const s = summarize(r);
    out.push(
      `== --events ${r.label}: ${r.cycles} start/stop cycles (${s.changes} changes), lab start ${r.labStartMs} ms, daemon spawn -> READY ${r.readyMs} ms`,
    );
    out.push(
      statTable({
        '(a) daemon latency_ms': s.daemonLatencyMs,
        '    start': s.daemonLatencyStartMs,
        '    stop': s.daemonLatencyStopMs,
        '(b) NetworkEvent -> nft monitor': s.externalMs,
        '    start ': s.externalStartMs,
        '    stop ': s.externalStopMs,
        '(c) daemon "event:" line -> nft monitor': s.daemonEventToCommitMs,
        'daemon duration_ms': s.daemonDurationMs,
        'virsh cmd -> NetworkEvent': s.cmdToSignalMs,
        'virsh cmd -> nft monitor': s.endToEndMs,
        'monitor -> daemon log line': s.logAfterCommitMs,
      }),
    );
    // Issue 15's "event -> commit" is (b): the NetworkEvent to the commit. (a)
    // starts at libvirt's first firewall change, long before the event (libvirt
    // writes its rules, then finishes the start or stop, then announces it), so
    // it is mostly libvirt's own work (docs/performance.md, "Why (a) is so large").
    const p99 = s.externalMs.p99;
    out.push(
      `target p99 <= 30 ms (b, NetworkEvent -> commit): ${p99} ms -> ${p99 <= 30 ? `met by ${round(30 - p99)} ms` : `missed by ${round(p99 - 30)} ms`}` +
        ` ((a), from libvirt's first firewall change: ${s.daemonLatencyMs.p99} ms)`,
    );
    out.push(`nft commands: start ${s.commands.start}, stop ${s.commands.stop}`);
    out.push(`trigger of the reflecting transaction: ${JSON.stringify(s.triggerOfReflectingTransaction)}`);
    out.push(
      `transactions per change: ${JSON.stringify(s.transactionsPerChange)}; passes per change: ${JSON.stringify(s.passesPerChange)}`,
    );
    out.push(`pass triggers (all passes in the cycles): ${JSON.stringify(s.passReasons)}`);
    out.push(
      `RSS (MiB) by events: ${r.rss.map((x) => `${x.events}:${x.rssMiB}`).join('  ')}  (VmHWM ${Math.max(...r.rss.map((x) => x.hwmMiB))})`,
    );
    out.push(`  of which RssAnon:   ${r.rss.map((x) => `${x.events}:${x.anonMiB}`).join('  ')}`);
    out.push(
      `RSS at READY ${r.idle.ready.rssMiB} MiB (RssAnon ${r.idle.ready.anonMiB}, RssFile ${r.idle.ready.fileMiB}); ` +
        `${r.idle.ms / 1000} s later, idle: ${r.idle.after.rssMiB} MiB (RssAnon ${r.idle.after.anonMiB}, RssFile ${r.idle.after.fileMiB})`,
    );
    out.push(`passes run by then:  ${r.rss.map((x) => `${x.events}:${x.passes}`).join('  ')}`);
    if (r.rss.some((x) => x.majorGcs !== undefined)) {
      out.push(
        `V8 heap in use after the last mark-compact (MB) [mark-compacts so far]: ${r.rss.map((x) => `${x.events}:${x.heapAfterLastMajorGcMB ?? '-'}[${x.majorGcs ?? 0}]`).join('  ')}`,
      );
    }
    out.push(`daemon children: ${r.children.map((c) => `${c.comm}(${c.rssMiB} MiB)`).join(', ') || 'none'}`);
    if (r.breakdown) {
      const b = r.breakdown;
      out.push(
        `pass steps timed in the lab with dist/ modules, daemon stopped (${b.iters} iterations, commands add ${b.commandsAdd} / remove ${b.commandsRemove}):`,
      );
      out.push(
        statTable({
          'D-Bus ListNetworks+GetXMLDesc': b.dbusListMs,
          'virsh net-list+net-dumpxml': b.virshListMs,
          'the same through the virsh shell': b.virshShellListMs,
          'nft -j list ruleset (parsed, indexed)': b.nftListMs,
          'plan (incl. index)': b.planMs,
          'nft -j -f (start batch)': b.applyAddMs,
          'nft -j -f (stop batch)': b.applyRemoveMs,
          'list+plan+apply (start)': b.passAddMs,
          'list+plan+apply (stop)': b.passRemoveMs,
          'execa("true") spawn': b.spawnTrueMs,
        }),
      );
    }
    if (r.anomalies.length > 0) out.push(`anomalies:\n  ${r.anomalies.slice(0, 20).join('\n  ')}`);
    out.push('');
  }
  for (const d of results.filter((r) => r.rss.length > 2)) {
    const first = d.rss[0]!.rssMiB;
    const last = d.rss[d.rss.length - 1]!.rssMiB;
    const max = Math.max(...d.rss.map((x) => x.rssMiB));
    // Issue 15's target is the RSS at READY; the later samples are issue 11's flatness.
    out.push(
      `RSS (--events ${d.label}): ${first} MiB after READY, ${last} MiB after ${d.rss[d.rss.length - 1]!.events} events (max ${max}); ` +
        `target at READY <= 60 MiB ${first <= 60 ? 'met' : `MISSED by ${round(first - 60)} MiB`}; bare node ${bare.rssMiB} MiB (RssAnon ${bare.anonMiB})`,
    );
  }
  for (const d of results) {
    const flat = memoryFlat(d.rss);
    if (!flat) continue;
    out.push(
      `Memory flat (--events ${d.label}): VmRSS ${flat.fromMiB} MiB after event ${FLAT_FROM}, ${flat.toMiB} MiB after ` +
        `event ${flat.toEvents}: ${flat.diffMiB >= 0 ? '+' : ''}${flat.diffMiB} MiB (RssAnon ${flat.anonDiffMiB >= 0 ? '+' : ''}` +
        `${flat.anonDiffMiB} MiB); target at most +${FLAT_MIB} MiB: ${flat.pass ? 'PASS' : 'FAIL'}`,
    );
  }
  out.push(
    `total benchmark time ${round(totalMs / 1000)} s; load average at the end ${loadavg()} (other work on the machine skews every figure)`,
  );
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------

it('kvmnftd daemon benchmark', async () => {
  if (!existsSync(CLI_MAIN)) throw new Error(`${CLI_MAIN} is missing: run npm run build first`);
  const started = now();
  const facts = machineFacts();
  const work = mkdtempSync(join(os.tmpdir(), 'kvmnftd-bench-daemon-'));
  try {
    const results: TransportResult[] = [];
    results.push(
      await runTransport(
        { transport: 'dbus', cycles: CYCLES.dbus, withRss: true, extras: true, nodeFlags: MAIN_NODE_FLAGS },
        work,
      ),
    );
    results.push(
      await runTransport(
        { transport: 'virsh', cycles: CYCLES.virsh, withRss: false, extras: false, nodeFlags: MAIN_NODE_FLAGS },
        work,
      ),
    );
    if (WHATIF_FLAGS.length > 0) {
      results.push(
        await runTransport(
          { transport: 'dbus', cycles: CYCLES.dbus, withRss: true, extras: false, nodeFlags: WHATIF_FLAGS },
          work,
        ),
      );
    }
    const bare = results.find((r) => r.bare)?.bare ?? { rssMiB: NaN, anonMiB: NaN };
    const text = report(facts, results, bare, now() - started);
    process.stdout.write(`\n${text}`);
    if (process.env['BENCH_OUT']) {
      const json = {
        facts,
        loadavgAtEnd: loadavg(),
        bareNode: bare,
        totalS: round((now() - started) / 1000),
        transports: results.map(summarize),
        samples: Object.fromEntries(results.map((r) => [r.label, r.samples])),
      };
      writeFileSync(process.env['BENCH_OUT'], `${JSON.stringify(json, null, 2)}\n`);
      process.stdout.write(`JSON written to ${process.env['BENCH_OUT']}\n`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
