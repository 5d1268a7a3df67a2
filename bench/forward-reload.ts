/**
 * Port forward benchmark (issue 13): how soon a forward works after a config
 * reload, after libvirt's net-start, and after the admin's `nft -f`, through
 * libvirt's own rejecting chain. Not a test: prints figures (and checks that
 * the forward did work, and stopped working when removed).
 *
 *   npm run bench:forward-reload
 *
 * Knobs (env): BENCH_BACKENDS (default "libvirt9,libvirt11-nftables"),
 * BENCH_RELOADS (forwards added and removed with a reload, default 20),
 * BENCH_STARTS (net-destroy + net-start rounds, default 10), BENCH_FLUSHES
 * (`nft -f` rounds, default 10), BENCH_GAP_MS (after each flush: kvmnftd's
 * FirewallD1.Reloaded broadcast is rate-limited to a bucket of 3, one back
 * every 10 s, and a slow restore can take two; default 15000), BENCH_TRACE=1
 * (each round's timeline, monitor and daemon lines, to stderr).
 *
 * Per backend, a fresh libvirt lab (test/lab): libvirt 9 on this machine
 * (iptables backend: LIBVIRT_FWI), or libvirt 11 in the Debian 13 test root
 * with firewall_backend = "nftables" (`libvirt_network guest_input`); the
 * default network running; the guest at 192.168.122.50 with a TCP listener
 * on :22; `kvmnftd run --events dbus` with the unit's node options; an `nft
 * -j monitor` in the lab; and, while a round runs, a prober in the wan
 * (test/lab/tcp-prober.mjs) that opens a NEW connection to 192.0.2.1:2222
 * every 5 ms. Every stamp is taken in this process (performance.now()): the
 * monitor's and the prober's lines on arrival, a command's start and return
 * around its execa call; an attempt's "connected" is the prober's own clock
 * (the same machine's realtime clock, converted).
 *
 * 1. Reload: the config gains the forward, then `kvmnftd reload` (what the
 *    unit's ExecReload runs: SIGHUP, then it waits for the daemon's reload
 *    state). From the command's start: kvmnftd's transaction committed (the
 *    last monitor line naming kvmnftd), the command's
 *    return, and the first attempt that connected; from the return to that
 *    connection (<= 0: working before `reload` returned); and from the
 *    daemon's "SIGHUP: configuration re-read" log line (its clock, to the
 *    millisecond) to the commit: the daemon's own part. Then the
 *    forward is removed the same way: every attempt started after that
 *    return must fail.
 * 2. net-start: with the forward and a second (routed) network that keeps
 *    kvmnftd's mark accept in place, `virsh net-destroy default`, then `virsh
 *    net-start default`, after which the bench puts the guest's port on the
 *    new bridge (libvirt does not re-attach existing ports: a running
 *    domain's tap needs the same). From net-start's return: the guest's port
 *    back on the bridge, libvirt's last rule added to the rejecting chain,
 *    kvmnftd's mark accept added first again (its last add there), the first
 *    attempt that connected.
 * 3. nft -f: the admin's ruleset with `flush ruleset`. From the flush's
 *    first monitor line: kvmnftd's repair committed (its table re-created),
 *    the first attempt that connected (kvmnftd's repair;
 *    libvirt's chains, and so its reject, are gone until kvmnftd's broadcast
 *    brings them back), libvirt's rejecting chain back, kvmnftd's mark accept
 *    first in it again, and the failed attempts started after the first
 *    success (while libvirt's restored reject sat above a missing accept).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_MAIN, requireBuiltCli } from '../test/helpers/cli.js';
import { sleep, waitUntil } from '../test/helpers/wait.js';
import { LabMonitor, libvirtChainsPresent, spawnDaemon, type Daemon } from '../test/integration/daemon-harness.js';
import {
  chainText,
  FORWARD_CONFIG,
  FWD,
  markAcceptsFirst,
  NO_FORWARDS,
  rejectChains,
  TcpProber,
  type ChainRef,
  type LibvirtBackend,
} from '../test/integration/forward-lab.js';
import { GUEST_PORT, HOST_WAN_ADDR, LAB_FILES, startLab, type Lab, type LabOptions } from '../test/lab/lab.js';
import { ensureTrixieRoot } from '../test/lab/trixie-root.js';
import { harnessQuiet } from './lib/daemon-proc.js';
import { loggedAt } from './lib/log-time.js';
import { unitNodeFlags } from './lib/machine.js';
import { percentile } from './lib/stats.js';

const int = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v >= 0 ? Math.floor(v) : dflt;
};
const RELOADS = int('BENCH_RELOADS', 20);
const STARTS = int('BENCH_STARTS', 10);
const FLUSHES = int('BENCH_FLUSHES', 10);
const GAP_MS = int('BENCH_GAP_MS', 15_000);
/** How long the bench waits for any one thing (a loaded machine slows libvirt's restore to many seconds). */
const WAIT_MS = 30_000;
const TRACE = process.env['BENCH_TRACE'] === '1';
const BACKENDS = (process.env['BENCH_BACKENDS'] ?? 'libvirt9,libvirt11-nftables').split(',').filter(Boolean);
const PROBE_EVERY_MS = 5;
const UNIT_NODE_FLAGS = unitNodeFlags().join(' ');

/** One figure: a name and its samples (ms). */
class Figures {
  readonly rows = new Map<string, number[]>();
  add(name: string, ms: number): void {
    const xs = this.rows.get(name) ?? [];
    xs.push(ms);
    this.rows.set(name, xs);
  }
  render(): string[] {
    return [...this.rows].map(
      ([name, xs]) =>
        `  ${name.padEnd(66)} n ${String(xs.length).padStart(3)}   p50 ${percentile(xs, 50).toFixed(1).padStart(7)}   ` +
        `p99 ${percentile(xs, 99).toFixed(1).padStart(7)}   min ${Math.min(...xs)
          .toFixed(1)
          .padStart(7)}   ` +
        `max ${Math.max(...xs)
          .toFixed(1)
          .padStart(7)} ms`,
    );
  }
}

interface Setup {
  lab: Lab;
  daemon: Daemon;
  monitor: LabMonitor;
  config: string;
  env: Record<string, string>;
  chains: ChainRef[];
}

interface RuleLine {
  at: number;
  op: 'add' | 'delete';
  family: string;
  table: string;
  chain: string;
  comment?: string;
}

/** Rule adds and deletes among the monitor's lines from index `from` on. */
function ruleLines(m: LabMonitor, from: number): RuleLine[] {
  return m.lines.slice(from).flatMap((l) => {
    let doc: Record<string, { rule?: Omit<RuleLine, 'at' | 'op'> }>;
    try {
      doc = JSON.parse(l.text) as typeof doc;
    } catch {
      return [];
    }
    for (const op of ['add', 'insert', 'delete'] as const) {
      const rule = doc[op]?.rule;
      if (rule) return [{ at: l.at, op: op === 'delete' ? ('delete' as const) : ('add' as const), ...rule }];
    }
    return [];
  });
}

const inChains = (chains: readonly ChainRef[]) => (r: RuleLine) =>
  chains.some((c) => c.family === r.family && c.table === r.table && c.chain === r.chain);

/** The last monitor line from `from` on that names kvmnftd: the end of kvmnftd's transaction (nobody else writes). */
function lastOurs(m: LabMonitor, from: number): number | undefined {
  return m.lines
    .slice(from)
    .filter((l) => l.text.includes('kvmnftd'))
    .at(-1)?.at;
}

function trace(name: string, t0: number, s: Setup, from: number, logFrom: number, prober: TcpProber): void {
  if (!TRACE) return;
  const okAt = prober.attempts.filter((a) => a.ok).map((a) => a.ended);
  const ev: Array<[number, string]> = [
    ...s.monitor.lines.slice(from).map((l): [number, string] => [l.at - t0, `monitor: ${l.text.slice(0, 150)}`]),
    ...s.daemon.logs
      .slice(logFrom)
      .map((r): [number, string] => [
        loggedAt(r) - t0,
        `daemon: ${r.msg} ${JSON.stringify({ event: r['event'], duration_ms: r['duration_ms'] })}`,
      ]),
    ...(okAt.length > 0 ? [[Math.min(...okAt) - t0, 'prober: first connection'] as [number, string]] : []),
  ];
  ev.sort((a, b) => a[0] - b[0]);
  process.stderr.write(`--- ${name}\n${ev.map(([t, x]) => `${t.toFixed(1).padStart(8)} ms  ${x}`).join('\n')}\n`);
}

async function labOptions(backend: string): Promise<LabOptions & { backend: LibvirtBackend }> {
  if (backend === 'libvirt9') return { defaultNetwork: 'start', backend: 'iptables' };
  if (backend === 'libvirt11-nftables' || backend === 'libvirt11-iptables') {
    const root = await ensureTrixieRoot();
    const fw = backend === 'libvirt11-nftables' ? 'nftables' : 'iptables';
    return { root: root.path, firewallBackend: fw, defaultNetwork: 'start', backend: fw };
  }
  throw new Error(`BENCH_BACKENDS: unknown backend ${backend} (libvirt9, libvirt11-nftables, libvirt11-iptables)`);
}

/** The daemon has logged nothing for 300 ms. */
const quiet = (daemon: Daemon): Promise<void> => harnessQuiet(daemon, WAIT_MS);

/** When (performance.now()) the daemon logged that it re-read its config, from log index `from` on. */
function sighupAt(daemon: Daemon, from: number): number | undefined {
  const r = daemon.logs.slice(from).find((x) => x.msg.startsWith('SIGHUP: configuration re-read'));
  return r === undefined ? undefined : loggedAt(r);
}

async function reloadWith(s: Setup, toml: string): Promise<{ start: number; ret: number }> {
  writeFileSync(s.config, toml);
  const start = performance.now();
  const r = await s.lab.exec(s.lab.node, [CLI_MAIN, 'reload'], { env: s.env, reject: false });
  const ret = performance.now();
  if (r.exitCode !== 0) throw new Error(`kvmnftd reload failed: ${r.stderr}`);
  return { start, ret };
}

async function reloads(s: Setup, fig: Figures): Promise<void> {
  for (let i = 0; i < RELOADS; i++) {
    const prober = await TcpProber.start(s.lab, 'wan', HOST_WAN_ADDR, FWD.tcpPort, PROBE_EVERY_MS);
    try {
      let from = s.monitor.lines.length;
      let logFrom = s.daemon.logs.length;
      const add = await reloadWith(s, FORWARD_CONFIG);
      const ok = await waitUntil('a connection through the added forward', WAIT_MS, () =>
        prober.firstOkSince(add.start),
      );
      await sleep(100);
      if (s.daemon.applied(logFrom).length === 0) throw new Error('the reload committed nothing');
      const commit = lastOurs(s.monitor, from);
      if (commit === undefined) throw new Error('no kvmnftd line on the monitor after the reload');
      fig.add('add: reload start -> transaction committed (monitor)', commit - add.start);
      const hup = sighupAt(s.daemon, logFrom);
      if (hup !== undefined) fig.add("add: the daemon's SIGHUP log line -> transaction committed", commit - hup);
      fig.add('add: reload start -> `kvmnftd reload` returned', add.ret - add.start);
      fig.add('add: reload start -> first connection through', ok.ended - add.start);
      fig.add('add: `kvmnftd reload` returned -> first connection through', ok.ended - add.ret);
      trace(`reload add ${i}`, add.start, s, from, logFrom, prober);

      from = s.monitor.lines.length;
      logFrom = s.daemon.logs.length;
      const del = await reloadWith(s, NO_FORWARDS);
      await sleep(600); // every attempt started after the return has ended (500 ms time-out)
      const through = prober.attempts.filter((a) => a.started >= del.ret && a.ok);
      if (through.length > 0) throw new Error(`${through.length} connections passed after the removing reload`);
      const gone = lastOurs(s.monitor, from);
      if (s.daemon.applied(logFrom).length === 0 || gone === undefined)
        throw new Error('the removal committed nothing');
      fig.add('remove: reload start -> transaction committed (monitor)', gone - del.start);
      fig.add('remove: reload start -> `kvmnftd reload` returned', del.ret - del.start);
    } finally {
      prober.stop();
    }
  }
}

async function netStarts(s: Setup, fig: Figures): Promise<void> {
  const { lab, chains } = s;
  const keep = join(tmpdir(), `kvmnftd-bench-fwdkeep-${process.pid}.xml`);
  writeFileSync(
    keep,
    "<network><name>fwdkeep</name><forward mode='route'/><bridge name='virbr5' stp='off' delay='0'/>" +
      "<ip address='10.77.5.1' prefix='24'/></network>\n",
  );
  await lab.virsh('net-define', keep);
  await lab.virsh('net-start', 'fwdkeep');
  await reloadWith(s, FORWARD_CONFIG);
  try {
    for (let i = 0; i < STARTS; i++) {
      await lab.virsh('net-destroy', 'default');
      await quiet(s.daemon);
      if (!(await markAcceptsFirst(lab, chains))) throw new Error('the mark accept did not stay while fwdkeep runs');
      const prober = await TcpProber.start(lab, 'wan', HOST_WAN_ADDR, FWD.tcpPort, PROBE_EVERY_MS);
      try {
        const from = s.monitor.lines.length;
        const logFrom = s.daemon.logs.length;
        await lab.virsh('net-start', 'default');
        const t0 = performance.now();
        await lab.exec('ip', ['link', 'set', GUEST_PORT, 'master', 'virbr0']);
        const attached = performance.now();
        const ok = await waitUntil('a connection through after net-start', WAIT_MS, () => prober.firstOkSince(t0));
        await waitUntil('the mark accept first again', WAIT_MS, () => markAcceptsFirst(lab, chains));
        await quiet(s.daemon);
        const lines = ruleLines(s.monitor, from).filter(inChains(chains));
        const adds = lines.filter((l) => l.op === 'add');
        const theirs = adds.filter((l) => l.comment !== 'kvmnftd');
        const ours = adds.filter((l) => l.comment === 'kvmnftd');
        if (theirs.length === 0 || ours.length === 0)
          throw new Error(`net-start: expected libvirt's adds and kvmnftd's in ${chains.map(chainText).join(', ')}`);
        fig.add("net-start returned -> guest port on the new bridge (the bench's ip link)", attached - t0);
        fig.add("net-start returned -> libvirt's last rule added to its rejecting chain", theirs.at(-1)!.at - t0);
        fig.add('net-start returned -> mark accept first again (its last add)', ours.at(-1)!.at - t0);
        fig.add('net-start returned -> first connection through', ok.ended - t0);
        trace(`net-start ${i}`, t0, s, from, logFrom, prober);
      } finally {
        prober.stop();
      }
    }
  } finally {
    await lab.virsh('net-destroy', 'fwdkeep');
    await lab.virsh('net-undefine', 'fwdkeep');
    rmSync(keep, { force: true });
  }
}

async function flushes(s: Setup, fig: Figures): Promise<string[]> {
  const { lab, chains } = s;
  await reloadWith(s, FORWARD_CONFIG);
  let brokenRounds = 0;
  const failedCounts: number[] = [];
  for (let i = 0; i < FLUSHES; i++) {
    await quiet(s.daemon);
    const prober = await TcpProber.start(lab, 'wan', HOST_WAN_ADDR, FWD.tcpPort, PROBE_EVERY_MS);
    try {
      const from = s.monitor.lines.length;
      const logFrom = s.daemon.logs.length;
      await lab.nft('-f', LAB_FILES.adminRuleset);
      const first = await waitUntil('the flush on the monitor', 5000, () => s.monitor.lines[from]);
      const t0 = first.at;
      const ok = await waitUntil('a connection through after the flush', WAIT_MS, () => prober.firstOkSince(t0));
      await waitUntil("libvirt's chains back", WAIT_MS, () => libvirtChainsPresent(lab));
      await waitUntil('the mark accept first again', WAIT_MS, () => markAcceptsFirst(lab, chains));
      await quiet(s.daemon);
      const lines = ruleLines(s.monitor, from).filter(inChains(chains));
      const theirs = lines.filter((l) => l.op === 'add' && l.comment !== 'kvmnftd');
      const ours = lines.filter((l) => l.op === 'add' && l.comment === 'kvmnftd');
      // kvmnftd's repair re-creates its table: the transaction's lines arrive together.
      const repair = s.monitor.find(from, (t) =>
        t.startsWith('{"add": {"table": {"family": "inet", "name": "kvmnftd"'),
      )?.at;
      if (repair !== undefined) {
        fig.add("flush -> kvmnftd's repair committed (monitor)", repair - t0);
        fig.add("kvmnftd's repair committed -> first connection through", ok.ended - repair);
      }
      fig.add('flush -> first connection through', ok.ended - t0);
      if (theirs.length > 0)
        fig.add("flush -> libvirt's rejecting chain refilled (its last add)", theirs.at(-1)!.at - t0);
      if (ours.length > 0) fig.add('flush -> mark accept first again (its last add)', ours.at(-1)!.at - t0);
      const failedAfter = prober.attempts.filter((a) => !a.ok && a.started > ok.ended);
      if (failedAfter.length > 0) {
        brokenRounds++;
        const last = Math.max(...failedAfter.map((a) => a.started));
        fig.add('flush -> last failed attempt after the first success (rounds with one)', last - t0);
      }
      failedCounts.push(failedAfter.length);
      trace(`flush ${i}`, t0, s, from, logFrom, prober);
    } finally {
      prober.stop();
    }
    await sleep(GAP_MS);
  }
  return [
    `  flush rounds with failed attempts after the first success: ${brokenRounds} of ${FLUSHES} ` +
      `(failed attempts per round: ${failedCounts.join(' ')})`,
  ];
}

async function bench(backend: string): Promise<string[]> {
  const opts = await labOptions(backend);
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-forward-'));
  let lab: Lab | undefined;
  try {
    lab = await startLab(opts);
    const config = join(work, 'kvmnftd.toml');
    writeFileSync(config, NO_FORWARDS);
    const env = {
      KVMNFTD_RUNTIME_DIR: join(work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json' as const,
      NOTIFY_SOCKET: join(work, 'none'),
      ...(UNIT_NODE_FLAGS ? { NODE_OPTIONS: UNIT_NODE_FLAGS } : {}),
    };
    await lab.guestStatic(`${FWD.guest}/24`);
    const listener = await lab.tcpListen(FWD.toPort, { in: 'guest' });
    const daemon = spawnDaemon(lab, env, ['--events', 'dbus', '--config', config]);
    const monitor = await LabMonitor.start(lab);
    await waitUntil('kvmnftd up', 20_000, () => daemon.applied().length > 0);
    await quiet(daemon);
    const s: Setup = { lab, daemon, monitor, config, env, chains: rejectChains(opts.backend) };
    const fig = new Figures();
    await reloads(s, fig);
    await netStarts(s, fig);
    const flushNotes = await flushes(s, fig);
    const errors = daemon.logs.filter((r) => r.level >= 50);
    daemon.child.kill('SIGTERM');
    await daemon.exited;
    await listener.close();
    const version = (await lab.exec('libvirtd', ['--version'])).stdout.trim();
    return [
      `${backend} (${version}, ${opts.backend} backend: ${s.chains.map(chainText).join(', ')}): ` +
        `${RELOADS} reloads each way, ${STARTS} net-starts, ${FLUSHES} flushes; prober every ${PROBE_EVERY_MS} ms`,
      ...fig.render(),
      ...flushNotes,
      `  daemon errors: ${errors.length}; load average at the end ${readFileSync('/proc/loadavg', 'utf8').trim()}`,
    ];
  } finally {
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  requireBuiltCli();
  const out: string[] = [
    `kvmnftd port forwards: node ${process.version}, NODE_OPTIONS=${UNIT_NODE_FLAGS || '(none)'}, ` +
      `${new Date().toISOString()}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  // Each backend's figures as soon as it is done.
  for (const b of BACKENDS) process.stdout.write(`${(await bench(b)).join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
