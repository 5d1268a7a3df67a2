// src/nft/nft-process.ts: glibc's malloc tunables for nft. Checked against
// the real glibc (its dynamic loader lists the tunables it parsed), since a
// misspelt tunable is ignored without a word.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nftProcessEnv } from '../../src/nft/nft-process.js';
import { runChild } from '../../src/util/child.js';

const LOADER = { x64: '/lib64/ld-linux-x86-64.so.2', arm64: '/lib/ld-linux-aarch64.so.1' }[process.arch as string];

/** The malloc tunables glibc's loader reports under `tunables`, as numbers. */
async function tunablesSeen(tunables: string): Promise<Record<string, number>> {
  if (!LOADER || !existsSync(LOADER)) throw new Error(`no glibc dynamic loader known for ${process.arch}`);
  const r = await runChild('env', [`GLIBC_TUNABLES=${tunables}`, LOADER, '--list-tunables'], 5000);
  expect(r.failed, r.stderr).toBe(false);
  const seen: Record<string, number> = {};
  for (const m of r.stdout.matchAll(/^glibc\.malloc\.(\w+): (0x[0-9a-f]+|\d+)/gm)) seen[m[1]!] = Number(m[2]);
  return seen;
}

describe('nftProcessEnv', () => {
  it('puts the 128 KiB hash tables nft 1.0.6 gives each cached table on the heap, and keeps the heap', async () => {
    const seen = await tunablesSeen(nftProcessEnv({}).GLIBC_TUNABLES!);
    expect(seen['mmap_threshold']).toBeGreaterThan(128 * 1024 + 16);
    expect(seen['trim_threshold']).toBeGreaterThanOrEqual(4 * 1024 * 1024);
  });

  it("the admin's own GLIBC_TUNABLES come after ours, and so win", async () => {
    const env = nftProcessEnv({ GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=200000' });
    expect(env.GLIBC_TUNABLES).toMatch(/:glibc\.malloc\.mmap_threshold=200000$/);
    expect((await tunablesSeen(env.GLIBC_TUNABLES!))['mmap_threshold']).toBe(200000);
  });
});
