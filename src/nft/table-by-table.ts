// The ruleset read one table at a time: what one-shot nft falls back to when
// `nft -j -t list ruleset` prints no JSON. nft 1.0.6 (Debian 12) frees a
// table's flag before printing it when the table has exactly one flag
// (`flags owner`, as a process holding its table sets, or `flags dormant`):
// json.c table_flags_json, fixed in nft 1.1.0. What it then prints depends on
// what the freed memory holds, i.e. on everything listed before it; measured
// here, a listing stopping right after `"flags": ` with exit code 0, on every
// try, while the same table listed alone printed JSON. A table listed alone
// leaves nft's heap small and predictable, so this reads each on its own, tersely
// and then in full (a different heap layout), and names the table that neither
// prints as JSON rather than planning around a table it could not see.
import { mapLimit } from '../util/map-limit.js';

/** Families `nft list tables` can print. */
const FAMILIES = new Set(['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev']);

/** How many nft processes list tables at once. */
const CONCURRENCY = 4;

export interface TableRef {
  family: string;
  name: string;
}

/** The tables in `nft list tables`' text (one `table FAMILY NAME` a line; no flags, so no JSON bug). */
export function parseTableList(text: string): TableRef[] {
  const tables: TableRef[] = [];
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (l === '') continue;
    const m = /^table (\S+) (\S+)$/.exec(l);
    if (!m || !FAMILIES.has(m[1]!)) throw new Error(`nft list tables printed an unexpected line: ${JSON.stringify(l)}`);
    tables.push({ family: m[1]!, name: m[2]! });
  }
  return tables;
}

/** nft with these arguments, its stdout when it exits 0 (otherwise it throws nft's error). */
export type NftOutput = (args: string[]) => Promise<string>;

/** The document nft printed, or undefined when it is no `{"nftables": [...]}`. */
export const parsed = (text: string): { nftables: unknown[] } | undefined => {
  try {
    const doc = JSON.parse(text) as unknown;
    const items = (doc as { nftables?: unknown } | null)?.nftables;
    return Array.isArray(items) ? { nftables: items } : undefined;
  } catch {
    return undefined;
  }
};

/** One table's listing: terse first, in full when that prints no JSON (a full one is asked twice). */
async function listTable(nft: NftOutput, t: TableRef, terse: boolean): Promise<unknown[]> {
  for (const options of terse ? [['-t'], []] : [[], []]) {
    const doc = parsed(await nft(['-j', ...options, 'list', 'table', t.family, t.name]));
    if (doc) return doc.nftables;
  }
  throw new Error(
    `nft prints no JSON for table ${t.family} ${t.name}, not even listed alone (nft 1.0.6 misprints a table with exactly one flag, e.g. "flags owner"; nft 1.1.0 does not)`,
  );
}

/** The document `nft -j [-t] list ruleset` would print, put together from a listing per table. */
export async function readTableByTable(nft: NftOutput, terse = true): Promise<{ nftables: unknown[] }> {
  const tables = parseTableList(await nft(['list', 'tables']));
  const listings = await mapLimit(tables, CONCURRENCY, (t) => listTable(nft, t, terse));
  // Each listing opens with nft's metainfo; the index skips it, as it does in one listing.
  return { nftables: listings.flat() };
}
