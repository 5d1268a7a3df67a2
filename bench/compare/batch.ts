/**
 * N networks in one transaction: `kvmnftd apply --from-xml` against raw `nft
 * -j -f` of the very same batch, measured by bench/apply.mjs (`npm run
 * bench`: a throwaway network namespace with the article's drop-policy
 * ruleset; kvmnftd's figure is the read+plan+commit duration it logs, raw is
 * `ip netns exec NS nft -j -f FILE`), run here with its --json output.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { cmdOut } from '../lib/machine.js';
import { comparison, figure, type Comparison } from './results.js';

const APPLY_BENCH = join(import.meta.dirname, '..', 'apply.mjs');

interface ApplyRow {
  count: number;
  commands: number;
  batchBytes: number;
  samples: { raw: number[]; internal: number[]; cli: number[]; noop: number[] };
}

export async function batches(counts: readonly number[], runs: number): Promise<Comparison[]> {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-compare-apply-'));
  try {
    const out = join(dir, 'apply.json');
    const args = [APPLY_BENCH, String(runs), '--counts', counts.join(','), '--no-change', '--json', out];
    await execa(process.execPath, args, { stdin: 'ignore', stdout: 'inherit', stderr: 'inherit' });
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { rows: ApplyRow[] };
    const lab = { nft: cmdOut('nft', ['--version']), node: process.version };
    return doc.rows.map((r) => {
      const notes = { commands: r.commands, batchKiB: Math.round(r.batchBytes / 102.4) / 10 };
      const what = `${r.count} network${r.count === 1 ? '' : 's'}`;
      return comparison(
        `batch-${r.count}`,
        `${what} in one transaction (${r.commands} nft commands, ${notes.batchKiB} KiB)`,
        lab,
        figure('kvmnftd apply: read ruleset + plan + commit', r.samples.internal, notes),
        figure('raw `nft -j -f` of the same batch', r.samples.raw, notes),
      );
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
