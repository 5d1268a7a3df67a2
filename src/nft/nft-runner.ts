// Reads the ruleset (`nft -j list ruleset`) and applies batches
// (`nft -j -f FILE`), one nft process each: with nft-session.ts (the daemon's
// long-lived nft, which falls back to this), the only modules that change the
// ruleset. nft also runs
// in monitor.ts (`nft -j monitor`, for the daemon) and in doctor/gather.ts
// (`nft --version`). JSON in, JSON out; the batch goes through a private file
// because `nft -f -` opens /dev/stdin by path, which fails (ENXIO) on the
// socket Node gives a child as its stdin.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RUNTIME_FILES } from '../host/runtime.js';
import { waitChild, type RunResult } from '../util/child.js';
import { spawnNft } from './nft-process.js';
import type { Batch } from './json.js';
import { indexRuleset, type Ruleset } from './ruleset.js';
import { parsed, readTableByTable } from './table-by-table.js';

/** How long one nft process may take (then SIGTERM, then SIGKILL: util/child.ts). */
export const NFT_TIMEOUT_MS = 15_000;

export class NftError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'NftError';
  }
}

export interface NftRunner {
  /**
   * `nft -j -t list ruleset`, indexed. Terse: named sets come without their
   * elements, so a host with 10^5 fail2ban addresses costs a pass nothing
   * extra. kvmnftd's own rules use anonymous sets only, which terse keeps.
   */
  readRuleset(): Promise<Ruleset>;
  apply(batch: Batch): Promise<void>;
}

/** One-shot nft: a process per request (the CLI; the daemon's session falls back to it). */
export interface OneShotNftRunner extends NftRunner {
  /** apply() of a batch already serialised. */
  applyJson(json: string): Promise<void>;
}

export function nftRunner(runtimeDir: string, nft = 'nft'): OneShotNftRunner {
  const applyJson = async (json: string): Promise<void> => {
    const dir = await mkdtemp(join(runtimeDir, RUNTIME_FILES.batchDirPrefix));
    const file = join(dir, RUNTIME_FILES.batchFile);
    try {
      await writeFile(file, json, { mode: 0o600 });
      await run(nft, ['-j', '-f', file], 'applying the batch');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  return {
    async readRuleset() {
      const result = await waitChild(spawnNft(nft, ['-j', '-t', 'list', 'ruleset']), NFT_TIMEOUT_MS);
      const doc = result.failed ? undefined : parsed(result.stdout);
      if (doc) return indexRuleset(doc);
      // nft 1.0.6 can print no JSON, or abort, on a ruleset with a table that has one flag (table-by-table.ts).
      const crashed = result.signal === 'SIGABRT' || result.signal === 'SIGSEGV';
      if (result.failed && !crashed) nftOutput(nft, 'reading the ruleset', result); // throws: nft's own error
      return indexRuleset(await readTableByTable((args) => run(nft, args, 'reading the ruleset')));
    },
    apply: (batch) => applyJson(JSON.stringify(batch)),
    applyJson,
  };
}

async function run(nft: string, args: string[], what: string): Promise<string> {
  return nftOutput(nft, what, await waitChild(spawnNft(nft, args), NFT_TIMEOUT_MS));
}

/** An nft process's stdout, or the error that says how it failed `what` (one-shot nft and the spare, nft-spare.ts). */
export function nftOutput(nft: string, what: string, result: RunResult): string {
  if (result.failed) {
    if (result.code === 'ENOENT') throw nftFailure(what, '', `${nft} not found: install the nftables package`);
    if (result.timedOut) throw nftFailure(what, '', `nft did not finish within ${NFT_TIMEOUT_MS / 1000} s`);
    throw nftFailure(
      what,
      result.stderr || result.stdout || '',
      `exit code ${String(result.exitCode ?? result.signal)}`,
    );
  }
  return result.stdout;
}

/** nft's error for `what` (e.g. "applying the batch"), each line of its output once: nft repeats one per failing command. */
export function nftFailure(what: string, output: string, otherwise = 'no message'): NftError {
  const detail = [
    ...new Set(
      output
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== ''),
    ),
  ].join('; ');
  return new NftError(`nft failed ${what}: ${detail || otherwise}`, detail);
}
