// `filter.foreign_chains_extra` entries: "FAMILY TABLE CHAIN", an existing
// chain of someone else's that kvmnftd may write its one mark accept into.
// Parsed and judged here, in the config (pure), so that a refused entry is a
// config error naming the key; src/nft/foreign-chains.ts turns the accepted
// ones into entries of its owners table.

/** The families a chain kvmnftd writes a mark accept into may have. */
export const CHAIN_REF_FAMILIES = ['ip', 'ip6', 'inet'] as const;
export type ChainRefFamily = (typeof CHAIN_REF_FAMILIES)[number];

export interface ChainRef {
  family: ChainRefFamily;
  table: string;
  chain: string;
}

/**
 * Names nft accepts for a table or a chain written in JSON, as iptables-nft
 * and the tools that drive it name them too (`DOCKER-USER`, `ufw-before-forward`):
 * no blanks, no quotes or backslashes, at most 64 characters.
 */
const OBJECT_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

export const CHAIN_REF_EXPECTED =
  '"FAMILY TABLE CHAIN" (family ip, ip6 or inet; table and chain names matching ' + OBJECT_NAME.source + ')';

/** "ip filter DOCKER-USER" -> its parts; undefined when it is not of that form. */
export function parseChainRef(text: string): ChainRef | undefined {
  const parts = text.trim().split(/\s+/);
  if (parts.length !== 3) return undefined;
  const [family, table, chain] = parts as [string, string, string];
  if (!(CHAIN_REF_FAMILIES as readonly string[]).includes(family)) return undefined;
  if (!OBJECT_NAME.test(table) || !OBJECT_NAME.test(chain)) return undefined;
  return { family: family as ChainRefFamily, table, chain };
}

export const chainRefText = (r: ChainRef): string => `${r.family} ${r.table} ${r.chain}`;

/**
 * Tables whose drops are the point: a ban must stay a ban. And tables of
 * the programs that manage a firewall of their own, which kvmnftd does not
 * open from the side. Table names as those programs create them.
 */
const REFUSED_TABLES: ReadonlyArray<{ test: (table: string) => boolean; why: string }> = [
  { test: (t) => t === 'f2b-table' || t.startsWith('f2b-'), why: "it is fail2ban's table: a ban must stay a ban" },
  { test: (t) => t === 'crowdsec' || t === 'crowdsec6', why: "it is CrowdSec's table: a ban must stay a ban" },
  { test: (t) => t === 'sshguard', why: "it is sshguard's table: a ban must stay a ban" },
  {
    test: (t) => t === 'libvirt_network',
    why: "it is libvirt's own table: libvirt decides what its chains reject",
  },
  { test: (t) => t === 'firewalld', why: "it is firewalld's table: with firewalld, let its libvirt zone do this job" },
  {
    test: (t) => t === 'docker-bridges',
    why: "it is Docker's nftables table, owned whole by Docker (its chains drop only traffic of Docker's own bridges)",
  },
];

/** The same refusals for chains, whatever their table (fail2ban's f2b-* chains, libvirt's LIBVIRT_*). */
const REFUSED_CHAINS: ReadonlyArray<{ test: (chain: string) => boolean; why: string }> = [
  { test: (c) => c.startsWith('f2b-'), why: "it is one of fail2ban's chains: a ban must stay a ban" },
  { test: (c) => c.startsWith('LIBVIRT_'), why: "it is one of libvirt's chains: libvirt decides what they reject" },
];

/**
 * Why kvmnftd must not write into the chain, or undefined when it may.
 * `own`: kvmnftd's own table (nat.table, family inet), its chains in the
 * admin's table, and the admin base chains its jumps already go into.
 */
export function refusedChainRef(
  ref: ChainRef,
  own: { natTable: string; ownChains: readonly string[]; admin: { family: string; table: string; chains: string[] } },
): string | undefined {
  if (ref.family === 'inet' && ref.table === own.natTable) return `it is kvmnftd's own table (nat.table)`;
  if (own.ownChains.includes(ref.chain)) return `${ref.chain} is kvmnftd's own chain`;
  if (ref.family === own.admin.family && ref.table === own.admin.table && own.admin.chains.includes(ref.chain))
    return "kvmnftd's jump already goes into that chain (filter.table)";
  for (const r of REFUSED_TABLES) if (r.test(ref.table)) return r.why;
  for (const r of REFUSED_CHAINS) if (r.test(ref.chain)) return r.why;
  return undefined;
}
