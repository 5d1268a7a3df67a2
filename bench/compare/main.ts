/**
 * `npm run bench:compare`: the same work done by kvmnftd and by what a host
 * would use instead, measured side by side in one run, as one table of p50
 * and p99 per contender with kvmnftd's ratio to each (issue 15):
 *
 *   1. A network start, and its firewall rules in place: kvmnftd's
 *      NetworkEvent -> commit against libvirt's own firewall setup during
 *      `virsh net-start`, with libvirt 9 (this machine, iptables-nft) and with
 *      libvirt 11's nftables backend (the Debian 13 test root of
 *      test/lab/trixie-root.sh): bench/compare/network-start.ts.
 *   2. Drift after the admin's `nft -f` with `flush ruleset`: until a new
 *      guest connection passes again, kvmnftd against the reference loop an
 *      admin would write (bench/compare/admin-loop.sh): bench/compare/drift.ts.
 *   3. 1 and 100 networks in one transaction: kvmnftd's read+plan+commit
 *      against raw `nft -j -f` of the same batch: bench/compare/batch.ts.
 *
 * Each libvirt lab is built once (test/lab): the libvirt 9 lab serves 1 and 2.
 * Not a test: prints the table and writes the JSON (with the machine's facts
 * and every sample); bench/compare/results.ts renders both.
 *
 *   npm run bench:compare [-- --write-docs]
 *
 * Knobs (env): BENCH_COMPARE_RUNS (samples per contender, default 30),
 * BENCH_OUT (the JSON file, default bench/results/compare.json),
 * BENCH_COMPARE_ONLY (a comma list of network-start, drift, batch: a partial
 * run), BENCH_TRACE=1 (the drift rounds' timelines to stderr). With
 * --write-docs the section of docs/performance.md is regenerated from it
 * (also: npm run docs:compare). About 15 minutes with the defaults; the
 * smoke test (test/integration/bench-compare.test.ts) runs 3 samples each.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { requireBuiltCli } from '../../test/helpers/cli.js';
import { startLab, type Lab } from '../../test/lab/lab.js';
import { ensureTrixieRoot } from '../../test/lab/trixie-root.js';
import { loadavg, machineFacts } from '../lib/machine.js';
import { round } from '../lib/stats.js';
import { batches } from './batch.js';
import { drift } from './drift.js';
import { networkStart } from './network-start.js';
import { COMPARISON_IDS, consoleTable, withDocSection, type CompareResults, type Comparison } from './results.js';

const REPO = join(import.meta.dirname, '..', '..');
const DEFAULT_OUT = join(REPO, 'bench', 'results', 'compare.json');
const PERFORMANCE_MD = join(REPO, 'docs', 'performance.md');

const runs = Math.max(1, Math.floor(Number(process.env['BENCH_COMPARE_RUNS'] ?? 30)) || 30);
const outFile = process.env['BENCH_OUT'] ?? DEFAULT_OUT;
/** BENCH_COMPARE_ONLY=network-start,drift,batch (any of them): a partial run, e.g. to look into one figure. */
const only = new Set((process.env['BENCH_COMPARE_ONLY'] ?? 'network-start,drift,batch').split(','));
const partial = only.size < 3;

/** Runs `fn` in a fresh lab, always stopped. */
async function inLab<T>(opts: Parameters<typeof startLab>[0], fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = await startLab(opts);
  try {
    return await fn(lab);
  } finally {
    const report = await lab.stop();
    if (report.remaining.length > 0 || report.errors.length > 0)
      process.stderr.write(`lab stop: ${JSON.stringify(report)}\n`);
  }
}

const progress = (msg: string): void => void process.stderr.write(`bench:compare: ${msg}\n`);

async function main(): Promise<void> {
  requireBuiltCli();
  if (partial && process.argv.includes('--write-docs'))
    throw new Error('--write-docs needs the full run (BENCH_COMPARE_ONLY unset)');
  const started = performance.now();
  const facts = machineFacts();
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-compare-'));
  const comparisons: Comparison[] = [];
  try {
    if (only.has('network-start') || only.has('drift')) {
      progress(`libvirt 9 lab: network start, then drift (${runs} samples each)`);
      await inLab({ defaultNetwork: 'define' }, async (lab) => {
        const kind = { id: 'libvirt9', name: 'libvirt 9 (Debian 12), iptables-nft' };
        if (only.has('network-start')) comparisons.push(await networkStart(lab, kind, work, runs));
        if (only.has('drift')) comparisons.push(await drift(lab, work, runs));
      });
    }
    if (only.has('network-start')) {
      progress('libvirt 11 lab (Debian 13 root, nftables backend): network start');
      const root = await ensureTrixieRoot();
      await inLab({ root: root.path, firewallBackend: 'nftables' }, async (lab) => {
        const kind = { id: 'libvirt11-nftables', name: 'libvirt 11 (Debian 13), nftables backend' };
        comparisons.push(await networkStart(lab, kind, work, runs));
      });
    }
    if (only.has('batch')) {
      progress('1 and 100 networks in one transaction (bench/apply.mjs)');
      comparisons.push(...(await batches([1, 100], runs)));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const results: CompareResults = {
    runs,
    facts,
    loadavgAtEnd: loadavg(),
    totalS: round((performance.now() - started) / 1000),
    // The table's order (the libvirt 9 lab serves the drift too, so it is measured before libvirt 11).
    comparisons: COMPARISON_IDS.flatMap((id) => comparisons.filter((c) => c.id === id)),
  };
  process.stdout.write(
    `\nkvmnftd side by side (${runs} samples per contender; ratio = kvmnftd's time / the contender's)\n` +
      `${consoleTable(results)}\nload average ${String(facts['loadavgAtStart'])} at the start, ` +
      `${results.loadavgAtEnd} at the end; ${results.totalS} s\n`,
  );
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`JSON written to ${outFile}\n`);
  if (process.argv.includes('--write-docs')) {
    writeFileSync(PERFORMANCE_MD, withDocSection(readFileSync(PERFORMANCE_MD, 'utf8'), results));
    process.stdout.write(`${PERFORMANCE_MD}: section regenerated\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:compare failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
