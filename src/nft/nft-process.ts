// Every nft process kvmnftd starts (the monitor, the session, the spare and
// one-shot nft) starts here, with glibc's malloc tuned for nft.
//
// nft 1.0.6 gives every table it caches four hash tables of 128 KiB
// (cache_init: 8,192 list heads each), allocated with malloc. That is glibc's
// default mmap threshold, so each is a fresh mmap whose 32 pages fault in one
// by one, and a munmap when the table leaves the cache. `nft -j monitor` keeps
// such a cache: a `flush ruleset` that deletes and re-creates eight tables
// costs it 64 mmaps and munmaps and about 1,000 page faults: it printed its
// last line 22-57 ms after the flushing nft had returned (at most 2 ms with
// the tunables below; docs/performance.md). A one-shot `nft -j -f` of a
// start's 24 commands spends the same on its cache and on freeing it.
//
// An mmap threshold above those 128 KiB puts them on the heap, where what a
// deleted table frees is reused by the next; a trim threshold of a few MiB
// keeps the heap from being handed back (and faulted in again) after each
// flush. musl and other C libraries ignore GLIBC_TUNABLES. On a reused heap,
// nft 1.0.6's misprint of a table with one flag (table-by-table.ts) shows up
// more often: reads that get no JSON fall back to one table at a time.
import { spawnChild, type SpawnOptions } from '../util/child.js';

const NFT_TUNABLES = 'glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=8388608';

/**
 * The variables to add to an nft child's environment. GLIBC_TUNABLES already
 * set for kvmnftd comes after ours: glibc applies them in order, so the
 * admin's own settings win.
 */
export function nftProcessEnv(inherited: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const theirs = inherited['GLIBC_TUNABLES'];
  return { GLIBC_TUNABLES: theirs ? `${NFT_TUNABLES}:${theirs}` : NFT_TUNABLES };
}

/** spawnChild for nft: the same, with nftProcessEnv() added to the environment. */
export function spawnNft(
  nft: string,
  args: readonly string[],
  options: SpawnOptions = {},
): ReturnType<typeof spawnChild> {
  return spawnChild(nft, args, { ...options, env: { ...options.env, ...nftProcessEnv() } });
}
