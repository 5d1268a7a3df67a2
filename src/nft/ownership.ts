// What is kvmnftd's in a ruleset, and how to recognise it: the one home for
// the rules of ownership that the planner, `status` and `doctor` all apply.
// Pure. Ownership is by name and comment, never by a state file:
//
// - table `inet <nat.table>` belongs to kvmnftd entirely;
// - so does table `bridge <nat.table>` (isolate_guests), marked like it;
//   it exists only while some network isolates its guests;
// - in the admin's table (filter.family, filter.table) it owns the regular
//   chains kvmnftd_input and kvmnftd_forward, and in the admin's base chains
//   exactly the rule it writes there: a single jump to one of those two
//   chains with the comment "kvmnftd" (a "tagged jump");
// - every rule of one network carries the comment `kvmnftd net=<name>`;
// - in someone else's chain (Docker's DOCKER-USER, ufw's chains, the ones
//   of filter.foreign_chains_extra: foreign-chains.ts) exactly the rule it
//   writes there: `meta mark & BIT == BIT accept` with the comment
//   "kvmnftd" (a "mark accept"), for whichever single bit; the marking
//   chains that set the bit live in kvmnftd's own table (accept-mark.ts).
import { createHash } from 'node:crypto';
import type { Config } from '../config/config.js';
import { modeForwards, type Network } from '../libvirt/model.js';
import { m, s, type BaseChainSpec, type Expr, type RuleSpec } from './json.js';
import { ruleKey, tableKey, type LiveChain, type LiveRule, type LiveTable, type Ruleset } from './ruleset.js';

// ---- names ------------------------------------------------------------------

export const OWN_INPUT_CHAIN = 'kvmnftd_input';
export const OWN_FORWARD_CHAIN = 'kvmnftd_forward';
/** kvmnftd's regular chains in the admin's table. */
export const OWN_CHAINS: readonly string[] = [OWN_INPUT_CHAIN, OWN_FORWARD_CHAIN];
/**
 * An empty chain that marks kvmnftd's own table as kvmnftd's. Not a table
 * comment: nft 1.0.6 drops table and chain comments in JSON, written and
 * listed alike.
 */
export const OWNER_MARKER_CHAIN = 'kvmnftd_owner';
/** The NAT base chain of kvmnftd's own table. */
export const NAT_BASE_CHAIN = 'postrouting';
/** The comment of kvmnftd's jumps (and of the rules that are no single network's). */
export const TAG = 'kvmnftd';
/** The base chains of kvmnftd's own table that set filter.accept_mark on what kvmnftd accepts (accept-mark.ts). */
export const MARK_INPUT_CHAIN = 'mark_input';
export const MARK_FORWARD_CHAIN = 'mark_forward';
export const MARK_CHAINS: readonly string[] = [MARK_INPUT_CHAIN, MARK_FORWARD_CHAIN];

const NET_TAG_PREFIX = `${TAG} net=`;
const COMMENT_MAX_BYTES = 127; // nft refuses comments of 128 bytes and more

/** The base chain (hook forward) of kvmnftd's own `bridge` table: isolate_guests drops there. */
export const BRIDGE_FORWARD_CHAIN = 'forward';

/** One NAT network's chain in kvmnftd's own table. */
export const natChainName = (bridge: string): string => `nat_${bridge}`;

/**
 * The comment every rule of one network carries: `kvmnftd net=<name>`. A
 * name too long for nft's 127-byte comments is cut and ends in
 * `/<16 hex digits of its SHA-256>`: libvirt refuses `/` in a network name,
 * so no other network's full tag can look like it, and 64 bits keep two cut
 * names apart.
 */
export function networkTag(name: string): string {
  const full = `${NET_TAG_PREFIX}${name}`;
  if (Buffer.byteLength(full) <= COMMENT_MAX_BYTES) return full;
  return cutWithSuffix(full, `/${createHash('sha256').update(name).digest('hex').slice(0, 16)}`);
}

/**
 * Tags kvmnftd 0.1.0 wrote for the same network, when they differ from
 * today's: a cut name ended in `~<8 hex digits of FNV-1a>`. Rules carrying
 * them are still kvmnftd's, and are replaced by the next transaction.
 */
export function legacyNetworkTags(name: string): string[] {
  const full = `${NET_TAG_PREFIX}${name}`;
  if (Buffer.byteLength(full) <= COMMENT_MAX_BYTES) return [];
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(name)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return [cutWithSuffix(full, `~${hash.toString(16).padStart(8, '0')}`)];
}

function cutWithSuffix(full: string, suffix: string, max = COMMENT_MAX_BYTES): string {
  let cut = [...full];
  while (Buffer.byteLength(cut.join('') + suffix) > max) cut = cut.slice(0, -1);
  return cut.join('') + suffix;
}

const LOG_PREFIX_MAX_BYTES = 127; // nft refuses a log prefix of 128 bytes and more

/**
 * The log prefix of what a network's policy drops: `kvmnftd <name> drop: `. A name too long for nft's
 * 127-byte prefix is cut and ends in `/<16 hex digits of its SHA-256>`, as networkTag does.
 */
export function logPrefix(name: string): string {
  const full = `${TAG} ${name} drop: `;
  if (Buffer.byteLength(full) <= LOG_PREFIX_MAX_BYTES) return full;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 16);
  return `${cutWithSuffix(`${TAG} ${name}`, `/${hash}`, LOG_PREFIX_MAX_BYTES - ' drop: '.length)} drop: `;
}

/** A comment kvmnftd writes: its jump tag, or any network's tag (today's or 0.1.0's). */
export function isOurComment(comment: string | undefined): boolean {
  return comment === TAG || (comment?.startsWith(NET_TAG_PREFIX) ?? false);
}

/** The network a `kvmnftd net=<name>` comment names (a truncated tag gives the truncated name), or undefined. */
export function taggedNetwork(comment: string | undefined): string | undefined {
  return comment?.startsWith(NET_TAG_PREFIX) ? comment.slice(NET_TAG_PREFIX.length) : undefined;
}

export function isOwnChain(name: string): boolean {
  return OWN_CHAINS.includes(name);
}

/** kvmnftd's chain for the traffic of one hook. */
export function ownChainOn(hook: 'input' | 'forward'): string {
  return hook === 'input' ? OWN_INPUT_CHAIN : OWN_FORWARD_CHAIN;
}

/** The admin base chain whose tagged jump leads to one of kvmnftd's chains (filter.input_chain, filter.forward_chain). */
export function adminBaseChainOf(own: string, config: Config): string {
  return own === OWN_INPUT_CHAIN ? config.filter.inputChain : config.filter.forwardChain;
}

// ---- tables -----------------------------------------------------------------

/** The admin's table kvmnftd is configured to put its chains in, when it exists. */
export function adminTable(live: Ruleset, config: Config): LiveTable | undefined {
  return live.tables.get(tableKey(config.filter.family, config.filter.table));
}

export function isAdminTable(table: { family: string; name: string }, config: Config): boolean {
  return table.family === config.filter.family && table.name === config.filter.table;
}

/** kvmnftd's own (NAT) table, when it exists. */
export function ownTable(live: Ruleset, config: Config): LiveTable | undefined {
  return live.tables.get(tableKey('inet', config.nat.table));
}

/** kvmnftd's own `bridge` table (isolate_guests), when it exists. */
export function ownBridgeTable(live: Ruleset, config: Config): LiveTable | undefined {
  return live.tables.get(tableKey('bridge', config.nat.table));
}

/**
 * Whose is the table `bridge <nat.table>`? kvmnftd's when it has the marker chain (kvmnftd creates it with
 * one, and no release wrote it without); any other table of that name is someone else's: never touched.
 */
export function bridgeTableClaim(live: Ruleset, config: Config): OwnTableClaim {
  const table = ownBridgeTable(live, config);
  if (!table) return { kind: 'absent' };
  if (table.chains.has(OWNER_MARKER_CHAIN)) return { kind: 'ours' };
  return { kind: 'foreign', why: `it has no chain ${OWNER_MARKER_CHAIN}` };
}

/**
 * Whose is the table `inet <nat.table>`? kvmnftd manages (and deletes) it
 * only when it is marked as kvmnftd's, or when it has exactly the 0.1.0
 * layout (every chain and rule kvmnftd's, nothing else), which it adopts
 * and marks in the same transaction. Any other table of that name is
 * someone else's: never touched, reported.
 */
export type OwnTableClaim =
  { kind: 'absent' } | { kind: 'ours' } | { kind: 'adoptable' } | { kind: 'foreign'; why: string };

export function ownTableClaim(live: Ruleset, config: Config): OwnTableClaim {
  const table = ownTable(live, config);
  if (!table) return { kind: 'absent' };
  if (table.chains.has(OWNER_MARKER_CHAIN)) return { kind: 'ours' };
  const objects = table.objects ?? [];
  if (objects.length > 0) return { kind: 'foreign', why: `it holds ${objects.slice(0, 3).join(', ')}` };
  for (const chain of table.chains.values()) {
    const layout =
      chain.name === NAT_BASE_CHAIN
        ? chain.type === 'nat' && chain.hook === 'postrouting'
        : chain.hook === undefined && chain.name.startsWith('nat_');
    if (!layout) return { kind: 'foreign', why: `it has a chain ${chain.name} kvmnftd does not write` };
    const alien = chain.rules.find((r) => !isOurComment(r.comment));
    if (alien) return { kind: 'foreign', why: `chain ${chain.name} has a rule without kvmnftd's comment` };
  }
  return { kind: 'adoptable' };
}

/**
 * The configured base chains (filter.input_chain, filter.forward_chain) the
 * admin table lacks: kvmnftd has nowhere to put its jump there. None with
 * filter.jump = "none", where the admin writes the jumps.
 */
export function missingBaseChains(admin: LiveTable, config: Config): string[] {
  if (config.filter.jump === 'none') return [];
  return [config.filter.inputChain, config.filter.forwardChain].filter((c) => !admin.chains.has(c));
}

// ---- rules ------------------------------------------------------------------

/** The chain one statement jumps to (`jump` or `goto`). */
export function exprJumpTarget(e: Expr): string | undefined {
  for (const k of ['jump', 'goto']) {
    const v = e[k];
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && typeof v['target'] === 'string') return v['target'];
  }
  return undefined;
}

/** The chain a rule jumps to (`jump` or `goto`), if it does. */
export function jumpTarget(rule: { expr: readonly Expr[] }): string | undefined {
  for (const e of rule.expr) {
    const target = exprJumpTarget(e);
    if (target !== undefined) return target;
  }
  return undefined;
}

/**
 * Ours, in an admin base chain: exactly the rule kvmnftd writes, a single
 * jump to one of its own chains with the comment "kvmnftd". Nothing else,
 * whatever its comment says, is touched.
 */
export function isOurJump(rule: LiveRule): boolean {
  const target = jumpTarget(rule);
  return rule.comment === TAG && rule.expr.length === 1 && target !== undefined && isOwnChain(target);
}

/**
 * Our jump to `own` in the admin base chain, when it is in place: the only
 * tagged jump there, and the first (filter.jump = "first") or last rule.
 */
export function ourJumpInPlace(base: LiveChain, own: string, jump: 'first' | 'last'): LiveRule | undefined {
  const tagged = base.rules.filter(isOurJump);
  const candidate = base.rules[jump === 'first' ? 0 : base.rules.length - 1];
  return candidate && tagged.length === 1 && tagged[0] === candidate && jumpTarget(candidate) === own
    ? candidate
    : undefined;
}

/** Whether a live chain has the base-chain spec (type, hook, priority, policy) kvmnftd wants; none = a regular chain. */
export function sameBase(live: LiveChain, wanted: BaseChainSpec | undefined): boolean {
  if (!wanted) return live.hook === undefined;
  return (
    live.type === wanted.type && live.hook === wanted.hook && live.prio === wanted.prio && live.policy === wanted.policy
  );
}

// ---- networks ---------------------------------------------------------------

/**
 * Whether kvmnftd's rules accept the network's traffic: every mode it writes
 * rules for, and an `open` network only when listed in
 * filter.accept_open_networks (libvirt writes no rules for `open` either).
 */
export function networkAccepted(net: Network, config: Config): boolean {
  return net.mode !== 'open' || config.filter.acceptOpenNetworks.includes(net.name);
}

/** Whether kvmnftd's rules let the network's traffic be forwarded through the host. */
export function forwardsThroughOwnRules(net: Network, config: Config): boolean {
  return modeForwards(net.mode) && networkAccepted(net, config);
}

// ---- mark accepts in someone else's chains -------------------------------

/**
 * The rule kvmnftd writes into a foreign chain: the packet carries the bit
 * kvmnftd's marking chains set on what its own rules accept. No counter and
 * no native conntrack match, so that iptables-nft reads it back as
 * `-m mark --mark BIT/BIT -m comment --comment kvmnftd -j ACCEPT`.
 */
export function markAcceptRule(bit: number): RuleSpec {
  return { expr: [m.markBit(bit), s.accept()], comment: TAG };
}

/** The bit of a rule that is exactly a mark accept kvmnftd writes (any single bit), else undefined. */
export function markAcceptBit(rule: { expr: readonly Expr[]; comment?: string }): number | undefined {
  if (rule.comment !== TAG || rule.expr.length !== 2) return undefined;
  const match = rule.expr[0]?.['match'];
  const right = typeof match === 'object' && match !== null && !Array.isArray(match) ? match['right'] : undefined;
  if (typeof right !== 'number' || right <= 0 || !Number.isInteger(Math.log2(right))) return undefined;
  return ruleKey({ expr: [...rule.expr], comment: rule.comment }) === ruleKey(markAcceptRule(right))
    ? right
    : undefined;
}

export function isOurMarkAccept(rule: { expr: readonly Expr[]; comment?: string }): boolean {
  return markAcceptBit(rule) !== undefined;
}

/** Where a mark accept of kvmnftd's sits. */
export interface PlacedMarkAccept {
  family: string;
  table: string;
  chain: string;
  rule: LiveRule;
}

/** Every mark accept of kvmnftd's in the ruleset, whatever its bit, outside kvmnftd's own table. */
export function markAcceptsIn(live: Ruleset, config: Config): PlacedMarkAccept[] {
  const out: PlacedMarkAccept[] = [];
  const own = [tableKey('inet', config.nat.table), tableKey('bridge', config.nat.table)];
  for (const table of live.tables.values()) {
    if (own.includes(tableKey(table.family, table.name))) continue;
    for (const chain of table.chains.values())
      for (const rule of chain.rules)
        if (isOurMarkAccept(rule)) out.push({ family: table.family, table: table.name, chain: chain.name, rule });
  }
  return out;
}

// ---- what is not kvmnftd's ---------------------------------------------------

/**
 * A digest of everything in the ruleset that is not kvmnftd's: other tables,
 * chains with their base settings and named objects, and every rule that
 * carries none of kvmnftd's tags, with their handles (counters aside).
 * kvmnftd's own commit never changes it; Docker rebuilding its chains or
 * `ufw reload` does, even when a chain is flushed and refilled with the very
 * same rules: the refilled rules get new handles.
 * The convergence guard treats it as an input: a pass after someone else
 * changed the ruleset is not an echo of kvmnftd's own transaction.
 */
export function foreignDigest(live: Ruleset, config: Config): string {
  const hash = createHash('sha256');
  const ownIsOurs = ownTableClaim(live, config).kind !== 'foreign';
  const bridgeIsOurs = bridgeTableClaim(live, config).kind !== 'foreign';
  const tables = [...live.tables.values()].sort((a, b) => cmp(tableKey(a.family, a.name), tableKey(b.family, b.name)));
  for (const table of tables) {
    if (ownIsOurs && table.family === 'inet' && table.name === config.nat.table) continue;
    if (bridgeIsOurs && table.family === 'bridge' && table.name === config.nat.table) continue;
    const admin = isAdminTable(table, config);
    hash.update(`table ${tableKey(table.family, table.name)} ${table.handle} ${(table.objects ?? []).join(',')}\n`);
    for (const chain of [...table.chains.values()].sort((a, b) => cmp(a.name, b.name))) {
      if (admin && isOwnChain(chain.name)) continue;
      hash.update(
        `chain ${chain.name} ${chain.handle} ${chain.type ?? ''} ${chain.hook ?? ''} ${chain.prio ?? ''} ${chain.policy ?? ''}\n`,
      );
      for (const rule of chain.rules) if (!isOurComment(rule.comment)) hash.update(`${rule.handle} ${ruleKey(rule)}\n`);
    }
  }
  return hash.digest('hex');
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
