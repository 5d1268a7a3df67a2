// The chains of other programs kvmnftd writes one rule into: ONE TABLE of
// entries, no code path per owner. Docker's iptables backend and ufw put a
// drop policy on the iptables-nft base chains (`table ip filter`, chain
// FORWARD or INPUT); an accept in any other table cannot overrule it, so the
// guests' traffic must be accepted in a chain that policy's chain runs. Each
// program leaves one chain for that (Docker: DOCKER-USER; ufw: its
// ufw-before-* chains, which `ufw allow` does not rewrite). kvmnftd writes
// there only its mark accept (ownership.ts), which reads the bit its marking
// chains set (accept-mark.ts): the decision stays in kvmnftd's own table,
// where nft may use conntrack, and the iptables-nft table stays readable by
// iptables. Pure.
import { chainRefText, parseChainRef } from '../config/chain-ref.js';
import type { Config } from '../config/config.js';
import { forwardsPossible } from '../config/port-forward.js';
import type { Json, NftFamily, RuleSpec } from './json.js';
import { markAcceptRule } from './ownership.js';
import { tableKey, type LiveChain, type Ruleset } from './ruleset.js';

export type ForeignOwner = 'docker' | 'ufw' | 'admin-extra' | 'libvirt';

/**
 * Where the rule goes. 'anywhere': inserted at the top once, and never moved
 * when something is put above it later (an admin's deliberate drop in
 * DOCKER-USER above it must keep working). 'first': kept as the chain's first
 * rule (for chains whose owner inserts above it on every start).
 */
export type Placement = 'anywhere' | 'first';

export interface ForeignChainEntry {
  owner: ForeignOwner;
  families: readonly NftFamily[];
  table: string;
  chain: string;
  placement: Placement;
  /** The one rule kvmnftd writes into the chain. */
  rule: (config: Config) => RuleSpec;
  /** Whether the config needs the chain at all (absent: always, while it exists). */
  wanted?: (config: Config) => boolean;
}

const markAccept = (config: Config): RuleSpec => markAcceptRule(config.filter.acceptMark);

/** The chains kvmnftd knows, with their owners. filter.foreign_chains_extra adds the admin's. */
export const FOREIGN_CHAINS: readonly ForeignChainEntry[] = [
  {
    owner: 'docker',
    families: ['ip', 'ip6'],
    table: 'filter',
    chain: 'DOCKER-USER',
    placement: 'anywhere',
    rule: markAccept,
  },
  {
    owner: 'ufw',
    families: ['ip'],
    table: 'filter',
    chain: 'ufw-before-forward',
    placement: 'anywhere',
    rule: markAccept,
  },
  {
    owner: 'ufw',
    families: ['ip'],
    table: 'filter',
    chain: 'ufw-before-input',
    placement: 'anywhere',
    rule: markAccept,
  },
  {
    owner: 'ufw',
    families: ['ip6'],
    table: 'filter',
    chain: 'ufw6-before-forward',
    placement: 'anywhere',
    rule: markAccept,
  },
  {
    owner: 'ufw',
    families: ['ip6'],
    table: 'filter',
    chain: 'ufw6-before-input',
    placement: 'anywhere',
    rule: markAccept,
  },
  // libvirt's own chains reject every new connection into a NAT bridge (iptables backend: `LIBVIRT_FWI: -o
  // virbr0 -j REJECT`; nftables backend: `guest_input ... reject`), in base chains of their own that no accept
  // elsewhere overrules. A port forward's DNATed connection must pass them: the mark accept, kept FIRST
  // because libvirt inserts its rules at the top again on every net-start. The mark is set only on what
  // kvmnftd_forward accepts: into a NAT bridge that is replies (which libvirt accepts itself) and exactly the
  // DNATed connections of port forwards, so this opens nothing else. Written only while forwards can exist: a
  // `[[port_forward]]`, or metadata forwards on (a domain's metadata may add one at any time).
  ...(['LIBVIRT_FWI', 'guest_input'] as const).map((chain): ForeignChainEntry => ({
    owner: 'libvirt',
    families: ['ip', 'ip6'],
    table: chain === 'LIBVIRT_FWI' ? 'filter' : 'libvirt_network',
    chain,
    placement: 'first',
    rule: markAccept,
    wanted: forwardsPossible,
  })),
];

/** One entry in one family: a chain kvmnftd may write into. */
export interface ForeignTarget {
  owner: ForeignOwner;
  family: NftFamily;
  table: string;
  chain: string;
  placement: Placement;
  rule: RuleSpec;
}

export const targetText = (t: { family: string; table: string; chain: string }): string =>
  `${t.family} ${t.table} ${t.chain}`;

/** Every chain kvmnftd may write its rule into under this config: the table's entries, then the admin's extras. */
export function foreignTargets(config: Config): ForeignTarget[] {
  const extras: ForeignChainEntry[] = config.filter.foreignChainsExtra.flatMap((text) => {
    const ref = parseChainRef(text); // the config's rules refused everything else
    return ref
      ? [
          {
            owner: 'admin-extra',
            families: [ref.family],
            table: ref.table,
            chain: ref.chain,
            placement: 'anywhere',
            rule: markAccept,
          },
        ]
      : [];
  });
  const seen = new Set<string>();
  const out: ForeignTarget[] = [];
  for (const e of [...FOREIGN_CHAINS, ...extras]) {
    if (e.wanted && !e.wanted(config)) continue;
    for (const family of e.families) {
      const t = {
        owner: e.owner,
        family,
        table: e.table,
        chain: e.chain,
        placement: e.placement,
        rule: e.rule(config),
      };
      if (seen.has(targetText(t))) continue;
      seen.add(targetText(t));
      out.push(t);
    }
  }
  return out;
}

/** A target whose chain exists in the live ruleset: one kvmnftd handles (with foreign_chains = "accept"). */
export interface HandledChain extends ForeignTarget {
  live: LiveChain;
}

export function presentTargets(live: Ruleset, config: Config): HandledChain[] {
  return foreignTargets(config).flatMap((t) => {
    const chain = live.tables.get(tableKey(t.family, t.table))?.chains.get(t.chain);
    return chain ? [{ ...t, live: chain }] : [];
  });
}

/** `family name` of the tables the targets live in: kvmnftd writes there (the monitor scope). */
export function foreignTables(config: Config): string[] {
  if (config.filter.foreignChains !== 'accept') return [];
  return [...new Set(foreignTargets(config).map((t) => tableKey(t.family, t.table)))];
}

/** Names of the extras as the config writes them (for messages). */
export function extraTexts(config: Config): string[] {
  return config.filter.foreignChainsExtra.flatMap((text) => {
    const ref = parseChainRef(text);
    return ref ? [chainRefText(ref)] : [];
  });
}

// ---- Docker's bridges -------------------------------------------------------

/** Docker's chain for the traffic into its bridges: published ports are accepted there, the rest falls through. */
const DOCKER_CHAIN = 'DOCKER';
const DOCKER_USER_CHAIN = 'DOCKER-USER';
/** The bridge of Docker's default network (dockerd --bridge can name another, which its rules then show). */
const DOCKER_DEFAULT_BRIDGE = 'docker0';

/**
 * Docker's bridges, read from its iptables rules: the output interface of
 * every rule in `ip`/`ip6 filter` that jumps to chain DOCKER (`-o docker0 -j
 * DOCKER`, in FORWARD or, on newer Docker, in DOCKER-FORWARD). Traffic into
 * them stays as Docker means it: kvmnftd never marks it (accept-mark.ts).
 * Sorted, without duplicates.
 */
export function dockerBridges(live: Ruleset): string[] {
  const names = new Set<string>();
  for (const family of ['ip', 'ip6']) {
    const table = live.tables.get(tableKey(family, 'filter'));
    if (!table) continue;
    // While dockerd restarts, its `-o docker0 -j DOCKER` is briefly gone but its chains are not: its default
    // bridge stays excluded through that window (a user-defined br-* one is known from its rule only).
    if (table.chains.has(DOCKER_CHAIN) || table.chains.has(DOCKER_USER_CHAIN)) names.add(DOCKER_DEFAULT_BRIDGE);
    for (const chain of table.chains.values()) {
      for (const rule of chain.rules) {
        if (!rule.expr.some((e) => target(e['jump']) === DOCKER_CHAIN || target(e['goto']) === DOCKER_CHAIN)) continue;
        for (const name of oifnames(rule.expr)) names.add(name);
      }
    }
  }
  return [...names].sort();
}

function target(v: Json | undefined): string | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && typeof v['target'] === 'string'
    ? v['target']
    : undefined;
}

/** The names an expression list matches as `oifname == NAME` or `oifname { ... }`. */
function oifnames(expr: ReadonlyArray<{ [key: string]: Json }>): string[] {
  const out: string[] = [];
  for (const e of expr) {
    const match = e['match'];
    if (typeof match !== 'object' || match === null || Array.isArray(match) || match['op'] !== '==') continue;
    const left = match['left'];
    const meta = typeof left === 'object' && left !== null && !Array.isArray(left) ? left['meta'] : undefined;
    if (typeof meta !== 'object' || meta === null || Array.isArray(meta) || meta['key'] !== 'oifname') continue;
    const right = match['right'];
    if (typeof right === 'string') out.push(right);
    else if (typeof right === 'object' && right !== null && !Array.isArray(right) && Array.isArray(right['set']))
      for (const x of right['set']) if (typeof x === 'string') out.push(x);
  }
  return out;
}
