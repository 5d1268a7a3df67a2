/**
 * Port forward follow benchmark (issue 13): how fast `kvmnftd run` moves a
 * forward to its guest's new address after the guest's DHCP lease changes,
 * in the hermetic libvirt lab (real libvirtd 9, its dnsmasq and leaseshelper,
 * the lab guest's busybox udhcpc). Not a test: prints figures, and PASS/FAIL
 * against the issue's target (the forward follows within 2 s).
 *
 *   npm run bench:forward-follow         (BENCH_ROUNDS=N lease changes, default 20)
 *
 * One forward, `to = "<the guest's MAC>"`. Each round the guest's udhcpc
 * releases its lease and asks for the other of two addresses; dnsmasq calls
 * leaseshelper, which rewrites /var/lib/libvirt/dnsmasq/virbr0.status; the
 * daemon's lease watch starts a pass that commits the DNAT to the new address.
 * Stamped by this process (performance.now()): the rewrite of the status file
 * (an inotify watch on the lab's directory, the last event before the commit),
 * udhcpc's exit with the new lease, and the daemon's transaction as one
 * `nft -j monitor` of the lab prints it (its line with the new address; the
 * monitor is the same observer bench/heal.ts uses).
 */
import { watch, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBuiltCli } from '../test/helpers/cli.js';
import { changeLease, guestMac, LabMonitor, spawnDaemon } from '../test/integration/daemon-harness.js';
import { sleep, waitUntil } from '../test/helpers/wait.js';
import { startLab, type Lab } from '../test/lab/lab.js';
import { loggedAt } from './lib/log-time.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 20);
const TARGET_MS = 2000;
/** The two addresses the guest asks for in turn (inside the lab network's DHCP range). */
const ASK = ['192.168.122.150', '192.168.122.151'] as const;
const STATUS_DIR = '/var/lib/libvirt/dnsmasq';
/** BENCH_TRACE=1: each round's daemon passes (event, duration, latency) to stderr. */
const TRACE = process.env['BENCH_TRACE'] === '1';

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** The monitor line of a rule that DNATs to `address` (added, not deleted). */
const dnatTo = (address: string) => (text: string) =>
  text.startsWith('{"add"') && text.includes('"dnat"') && text.includes(`"${address}"`);

async function main(): Promise<void> {
  requireBuiltCli();
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-forward-'));
  let lab: Lab | undefined;
  try {
    lab = await startLab({ defaultNetwork: 'start' });
    await lab.attachGuest();
    const mac = await guestMac(lab);
    const config = join(work, 'kvmnftd.toml');
    writeFileSync(config, `[[port_forward]]\nnetwork = "default"\nproto = "tcp"\nhost_port = 2222\nto = "${mac}"\n`);
    const env = {
      KVMNFTD_RUNTIME_DIR: join(work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json' as const,
      NOTIFY_SOCKET: join(work, 'none'),
    };
    const daemon = spawnDaemon(lab, env, ['--events', 'dbus', '--config', config]);
    const monitor = await LabMonitor.start(lab);
    await changeLease(lab, ASK[0]);
    await waitUntil('the forward to the first lease', 15_000, () => monitor.find(0, dnatTo(ASK[0])));
    // The status file's rewrites, stamped here (inotify through the lab's mount namespace).
    const rewrites: number[] = [];
    const watcher = watch(lab.path(STATUS_DIR), (_type, name) => {
      if (name === 'virbr0.status') rewrites.push(performance.now());
    });
    await sleep(1000);

    const fromRewrite: number[] = [];
    const fromUdhcpc: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const next = ASK[(round + 1) % 2]!;
      const from = monitor.lines.length;
      const logFrom = daemon.logs.length;
      const roundStart = performance.now();
      const leased = await changeLease(lab, next, ASK[round % 2]);
      const bound = performance.now();
      if (leased !== next) throw new Error(`round ${round}: asked for ${next}, dnsmasq gave ${leased}`);
      const commit = await waitUntil(`round ${round}: the forward to ${next}`, 10_000, () =>
        monitor.find(from, dnatTo(next)),
      );
      const rewrite = [...rewrites].reverse().find((t) => t <= commit.at);
      if (rewrite === undefined) throw new Error(`round ${round}: no status file rewrite seen`);
      fromRewrite.push(commit.at - rewrite);
      fromUdhcpc.push(commit.at - bound);
      if (TRACE) await sleep(1500); // let the daemon log its commit
      if (TRACE)
        process.stderr.write(
          `round ${round}: rewrite->commit ${(commit.at - rewrite).toFixed(1)} ms; rewrites at ${rewrites
            .filter((t) => t > roundStart)
            .map((t) => (t - rewrite).toFixed(0))
            .join(', ')} ms; passes: ${daemon
            .passes(logFrom)
            .map((r) => `${String(r['event'])} ${String(r['duration_ms'])}/${String(r['latency_ms'])} ms`)
            .join(', ')}\n${daemon.logs
            .slice(logFrom)
            .map((r) => `    ${(loggedAt(r) - rewrite).toFixed(0)} ms ${r.msg}`)
            .join('\n')}\n`,
        );
      await sleep(300);
    }
    watcher.close();

    const row = (label: string, xs: number[]) =>
      `  ${label.padEnd(44)} n ${String(xs.length).padStart(3)}   p50 ${percentile(xs, 50).toFixed(1).padStart(7)} ms   ` +
      `p99 ${percentile(xs, 99).toFixed(1).padStart(7)} ms   max ${Math.max(...xs)
        .toFixed(1)
        .padStart(7)} ms   ` +
      `${percentile(xs, 99) <= TARGET_MS ? 'PASS' : 'FAIL'}`;
    const errors = daemon.logs.filter((r) => r.level >= 50);
    process.stdout.write(
      [
        `kvmnftd forward follow: ${ROUNDS} lease changes, libvirt lab, --events dbus, node ${process.version}`,
        `to the daemon's transaction with the new address (target within ${TARGET_MS} ms):`,
        row('from the status file rewrite (leaseshelper)', fromRewrite),
        row("from udhcpc's exit with the new lease", fromUdhcpc),
        `daemon errors: ${errors.length}; load average at the end ${readFileSync('/proc/loadavg', 'utf8').trim()}`,
        '',
      ].join('\n'),
    );
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
