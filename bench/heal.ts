/**
 * Self-healing benchmark: how fast `kvmnftd run` puts its rules back after
 * the admin reloads their ruleset (`nft -f` with `flush ruleset`, what
 * `systemctl reload nftables` does), in the hermetic libvirt lab (test/lab)
 * with the default network running. Not a test: prints figures.
 *
 *   npm run bench:heal            (BENCH_RELOADS=N, default 30; BENCH_GAP_MS, default 10000)
 *
 * Times are taken from one `nft -j monitor` stream in the lab, so both ends
 * are stamped by the same observer: from the admin's first change (the
 * flush) to (a) kvmnftd's table back, (b) kvmnftd's last jump back (the
 * whole transaction committed), and (c) libvirt's own chains back (after
 * kvmnftd's FirewallD1.Reloaded broadcast).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBuiltCli } from '../test/helpers/cli.js';
import { LabMonitor, spawnDaemon } from '../test/integration/daemon-harness.js';
import { sleep, waitUntil } from '../test/helpers/wait.js';
import { LAB_FILES, startLab, type Lab } from '../test/lab/lab.js';

const RELOADS = Number(process.env['BENCH_RELOADS'] ?? 30);
const GAP_MS = Number(process.env['BENCH_GAP_MS'] ?? 10_000);
const UNIT_NODE_FLAGS = (
  /^Environment=NODE_OPTIONS=(.*)$/m.exec(
    readFileSync(join(import.meta.dirname, '..', 'systemd', 'kvmnftd.service'), 'utf8'),
  )?.[1] ?? ''
).trim();

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function main(): Promise<void> {
  requireBuiltCli();
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-heal-'));
  let lab: Lab | undefined;
  try {
    lab = await startLab({ defaultNetwork: 'start' });
    const env = {
      KVMNFTD_RUNTIME_DIR: join(work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json' as const,
      NOTIFY_SOCKET: join(work, 'none'),
      ...(UNIT_NODE_FLAGS ? { NODE_OPTIONS: UNIT_NODE_FLAGS } : {}),
    };
    const daemon = spawnDaemon(lab, env, ['--events', 'dbus']);
    const monitor = await LabMonitor.start(lab);
    const lines = monitor.lines;
    await waitUntil('kvmnftd rules for default', 10_000, async () =>
      (await lab!.nft('list', 'tables')).stdout.includes('inet kvmnftd'),
    );
    await sleep(1000);

    const ours: number[] = [];
    const whole: number[] = [];
    const libvirt: number[] = [];
    const find = (from: number, pred: (t: string) => boolean) => monitor.find(from, pred);
    for (let i = 0; i < RELOADS; i++) {
      const from = lines.length;
      await lab.nft('-f', LAB_FILES.adminRuleset);
      const flush = await waitUntil('the flush on the monitor', 5000, () => find(from, (t) => t.includes('"delete"')));
      const table = await waitUntil('our table back', 5000, () =>
        find(from, (t) => t.includes('"add"') && t.includes('"table"') && t.includes('"kvmnftd"')),
      );
      // The jump into the forward chain is the batch's last command (an "insert" with jump = first).
      const jump = await waitUntil('our last jump back', 5000, () =>
        find(
          from,
          (t) =>
            !t.includes('"delete"') && t.includes('"target": "kvmnftd_forward"') && t.includes('"chain": "forward"'),
        ),
      );
      const chains = await waitUntil(
        "libvirt's chains back",
        15_000,
        () => find(from, (t) => !t.includes('"delete"') && t.includes('LIBVIRT_FWO')),
        {
          detail: () =>
            lines
              .slice(from)
              .map((l) => l.text.slice(0, 160))
              .join('\n'),
        },
      );
      ours.push(table.at - flush.at);
      whole.push(jump.at - flush.at);
      libvirt.push(chains.at - flush.at);
      // One reload every BENCH_GAP_MS (default 10 s, the pace the broadcast
      // rate limit — a bucket of 3, one back every 10 s — sustains); faster
      // reloads show the limit in (c).
      await sleep(GAP_MS);
    }
    const row = (label: string, xs: number[]) =>
      `${label.padEnd(44)} p50 ${percentile(xs, 50).toFixed(1).padStart(7)} ms   p99 ${percentile(xs, 99).toFixed(1).padStart(7)} ms   max ${Math.max(
        ...xs,
      )
        .toFixed(1)
        .padStart(7)} ms`;
    process.stdout.write(
      `kvmnftd self-healing: ${RELOADS} admin reloads (nft -f with flush ruleset), libvirt lab, --events dbus, node ${process.version}, NODE_OPTIONS=${UNIT_NODE_FLAGS || '(none)'}\n`,
    );
    process.stdout.write(`${row('flush -> kvmnftd table back', ours)}\n`);
    process.stdout.write(`${row('flush -> kvmnftd transaction committed', whole)}\n`);
    process.stdout.write(`${row("flush -> libvirt's chains back (rate-limited)", libvirt)}\n`);
    const errors = daemon.logs.filter((r) => r.level >= 50);
    process.stdout.write(`daemon errors: ${errors.length}\n`);
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
