// The planner: (networks, config, live ruleset) -> one nft JSON batch.
// Pure: no I/O, no clock. An empty batch means the live ruleset already is
// what we want, which is what keeps reconciles from looping on their own
// monitor events.
import type { Config } from '../config/config.js';
import type { Network, NetworkParse } from '../libvirt/model.js';
import { markingChains, markingChainsInPlace } from './accept-mark.js';
import { chainEdit } from './chain-edit.js';
import {
  desiredState,
  familiesOf,
  invalidGuard,
  natBaseSpec,
  withInvalidGuard,
  type BridgePorts,
  type DesiredChain,
  type DesiredState,
} from './desired.js';
import {
  addressTargets,
  forwardRules,
  pfBaseSpec,
  PF_OUTPUT_CHAIN,
  PF_POSTROUTING_CHAIN,
  PF_PREROUTING_CHAIN,
  type ForwardOutcome,
  type ForwardRules,
  type ForwardTarget,
} from './port-forward.js';
import { dockerBridges, extraTexts, presentTargets, targetText, type HandledChain } from './foreign-chains.js';
import type { Batch, ChainObject, Command, Expr, RuleSpec, TableRef } from './json.js';
import { BRIDGE_FORWARD_SPEC } from './policy.js';
import {
  adminBaseChainOf,
  adminTable,
  BRIDGE_FORWARD_CHAIN,
  bridgeTableClaim,
  ownBridgeTable,
  isOurJump,
  legacyNetworkTags,
  markAcceptsIn,
  OWNER_MARKER_CHAIN,
  ownTableClaim,
  isOwnChain,
  jumpTarget,
  missingBaseChains,
  NAT_BASE_CHAIN,
  natChainName,
  networkAccepted,
  networkTag,
  OWN_CHAINS,
  OWN_FORWARD_CHAIN,
  OWN_INPUT_CHAIN,
  ourJumpInPlace,
  ownTable,
  sameBase,
  TAG,
} from './ownership.js';
import { isRenderable } from './render-text.js';
import { ruleKey, type LiveChain, type LiveRule, type LiveTable, type Ruleset } from './ruleset.js';

export interface PlanNote {
  level: 'info' | 'warn' | 'error';
  message: string;
  network?: string;
  field?: string;
}

export interface Plan {
  batch: Batch;
  notes: PlanNote[];
  /** Networks the batch is planned for (valid and active). */
  networks: Network[];
  desired: DesiredState;
  foreign: ForeignPart;
  /** Every port forward and what became of it: active, waiting or invalid (status, doctor). */
  forwards: ForwardOutcome[];
}

/** The foreign part of a plan: Docker's, ufw's and the admin's extra chains (foreign-chains.ts). */
export interface ForeignPart {
  /** false: planned without it (PlanOptions.foreign), nothing there added or removed. */
  planned: boolean;
  /** The chains whose mark accept the batch puts or keeps in place. */
  handled: HandledChain[];
}

/** What the plan knows of guests besides the networks: gathered once per pass (libvirt/guest-facts.ts). */
export type PlanFacts = Pick<PlanOptions, 'forwardTargets' | 'bridgePorts'>;

export interface PlanOptions {
  /**
   * false plans without the foreign part: no marking chains and no mark
   * accepts are added, and the ones in place are left as they are. The
   * daemon's fallback when the whole transaction keeps failing (sync.ts).
   */
  foreign?: boolean;
  /**
   * The port forwards with their resolved guest addresses. Absent: only forwards whose `to` is an address
   * have one (names and MACs are resolved through libvirt by the caller).
   */
  forwardTargets?: readonly ForwardTarget[];
  /** Per bridge, its ports (host/bridge-ports.ts); absent: none known, so isolate_guests drops nothing yet. */
  bridgePorts?: BridgePorts;
}

/**
 * `inputs` are the parse results of every ACTIVE network. Invalid ones are
 * skipped with an error note, but keep whatever rules they already have.
 * Pass no inputs to plan the removal of everything kvmnftd owns.
 */
export function plan(inputs: readonly NetworkParse[], config: Config, live: Ruleset, options: PlanOptions = {}): Plan {
  const notes: PlanNote[] = [];
  const networks: Network[] = [];
  const retained = new Map<string, string>(); // tag -> network name
  const bridges = new Map<string, string>();
  for (const input of inputs) {
    if (input.kind === 'ignored') {
      notes.push({
        level: 'info',
        network: input.name,
        message: `forward mode '${input.mode}' needs no firewall rules; ignored`,
      });
    } else if (input.kind === 'invalid') {
      notes.push({
        level: 'error',
        network: input.name,
        field: input.field,
        message: `skipped: ${input.field}: ${input.message}`,
      });
      for (const tag of [networkTag(input.name), ...legacyNetworkTags(input.name)]) retained.set(tag, input.name);
    } else if (bridges.has(input.network.bridge)) {
      notes.push({
        level: 'error',
        network: input.network.name,
        field: 'bridge/@name',
        message: `skipped: bridge ${input.network.bridge} is already used by network ${bridges.get(input.network.bridge)}`,
      });
    } else {
      bridges.set(input.network.bridge, input.network.name);
      networks.push(input.network);
      if (!networkAccepted(input.network, config)) {
        notes.push({
          level: 'info',
          network: input.network.name,
          message:
            "forward mode 'open': no rules, as libvirt (list it in filter.accept_open_networks to accept its traffic)",
        });
      }
    }
  }

  // A tag a valid network produces is that network's, never an invalid one's to keep.
  for (const n of networks) for (const tag of [networkTag(n.name), ...legacyNetworkTags(n.name)]) retained.delete(tag);
  const claim = ownTableClaim(live, config);
  if (claim.kind === 'foreign') {
    notes.push({
      level: 'error',
      field: 'nat.table',
      message:
        `table inet ${config.nat.table} exists and is not kvmnftd's (${claim.why}): kvmnftd neither changes ` +
        'nor deletes it, and applies no NAT rules: set nat.table to a name no other table uses',
    });
  }
  const forwarded = forwardRules(
    options.forwardTargets ?? addressTargets(config.portForward),
    networks,
    familiesOf(config),
  );
  // Not a network's note (status counts a network's error as a skipped network): the forward's.
  for (const n of forwarded.notes)
    notes.push({
      level: n.level,
      field: n.forward,
      message: `${n.forward}: ${n.message}`,
    });
  const desired = desiredState(networks, config, forwarded.accepts, options.bridgePorts);
  for (const p of desired.policyProblems)
    notes.push({ level: p.level, field: p.key, message: `network ${p.network}: ${p.key}: ${p.message}` });
  desired.forwardChains = forwardChains(forwarded, config);
  keepRetained(desired, retained, live, config, notes);
  const foreign = foreignPart(desired, config, live, claim.kind === 'foreign', options.foreign !== false, notes);
  desired.input = withInvalidGuard(desired.input);
  desired.forward = withInvalidGuard(desired.forward);
  const commands = [
    ...(claim.kind === 'foreign' ? [] : planOwnTable(desired, config, live)),
    ...planBridgeTable(desired, config, live, notes),
    ...planAdminTable(desired, config, live, notes, foreign.handled),
    ...(foreign.planned ? planForeignChains(foreign.handled, config, live) : []),
  ];
  return { batch: { nftables: commands }, notes, networks, desired, foreign, forwards: forwarded.outcomes };
}

/** The port forwards' base chains of kvmnftd's own table; a chain without rules is not wanted. */
function forwardChains(rules: ForwardRules, config: Config): DesiredChain[] {
  const chains: Array<[string, 'prerouting' | 'output' | 'postrouting', RuleSpec[]]> = [
    [PF_PREROUTING_CHAIN, 'prerouting', rules.prerouting],
    [PF_OUTPUT_CHAIN, 'output', rules.output],
    [PF_POSTROUTING_CHAIN, 'postrouting', rules.postrouting],
  ];
  return chains.flatMap(([name, hook, r]) =>
    r.length === 0 ? [] : [{ name, base: pfBaseSpec(hook, config.nat.priority), rules: r }],
  );
}

// ---- someone else's chains: one mark accept each, the marks in our table --

/**
 * Decides the foreign part and sets desired.marking. With foreign_chains =
 * "accept", a chain of the owners table that exists gets the mark accept
 * while kvmnftd has rules to mark with; planned without the foreign part,
 * the marking chains in place are kept as they are.
 */
function foreignPart(
  desired: DesiredState,
  config: Config,
  live: Ruleset,
  ownTableForeign: boolean,
  planned: boolean,
  notes: PlanNote[],
): ForeignPart {
  if (!planned) {
    desired.marking = markingChainsInPlace(ownTableForeign ? undefined : ownTable(live, config));
    return { planned, handled: [] };
  }
  const present = presentTargets(live, config);
  if (config.filter.foreignChains === 'report') {
    if (present.length > 0)
      notes.push({
        level: 'info',
        message:
          `filter.foreign_chains = "report": kvmnftd writes nothing into ${present.map(targetText).join(', ')} ` +
          '(kvmnftd doctor tells whether they drop guest traffic)',
      });
    return { planned, handled: [] };
  }
  const missing = extraTexts(config).filter((t) => !present.some((p) => targetText(p) === t));
  for (const t of missing)
    notes.push({
      level: 'warn',
      field: 'filter.foreign_chains_extra',
      message: `chain ${t} (filter.foreign_chains_extra) does not exist: nothing written there`,
    });
  if (ownTableForeign || present.length === 0) return { planned, handled: [] };
  desired.marking = markingChains(desired.input, desired.forward, config, dockerBridges(live));
  return { planned, handled: desired.marking.length > 0 ? present : [] };
}

/**
 * The mark accepts: one in each handled chain (kept where it is, or kept
 * first with placement 'first'), inserted at the top when missing; every
 * other mark accept of kvmnftd's is deleted (duplicates, another bit, a
 * chain no longer handled). Deleted by handle: unlike the admin's table,
 * these tables hold no chain of kvmnftd's to flush as a guard against a
 * snapshot from before the table was re-created, so such a delete relies on
 * the chain still holding a rule with that handle, which a re-created
 * table rarely gives; kvmnftd deletes there only when something changed.
 */
function planForeignChains(handled: HandledChain[], config: Config, live: Ruleset): Command[] {
  const keep = new Set<LiveRule>();
  const inserts: Command[] = [];
  for (const h of handled) {
    const want = ruleKey(h.rule);
    const rules = h.live.rules;
    const inPlace = h.placement === 'first' ? rules.slice(0, 1) : rules;
    const kept = inPlace.find((r) => ruleKey(r) === want);
    if (kept) keep.add(kept);
    else inserts.push({ insert: { rule: { family: h.family, table: h.table, chain: h.chain, ...h.rule } } });
  }
  const deletes = markAcceptsIn(live, config)
    .filter((p) => !keep.has(p.rule))
    .map((p): Command => deleteRule({ family: p.family as TableRef['family'], name: p.table }, p.chain, p.rule));
  return [...deletes, ...inserts];
}

// ---- kvmnftd's own table: owned whole, managed chain by chain -----------

/** A 0.1.0 table (every chain and rule kvmnftd's, no marker) gets its marker like any missing chain. */
function planOwnTable(desired: DesiredState, config: Config, live: Ruleset): Command[] {
  const table: TableRef = { family: 'inet', name: config.nat.table };
  return planOwnedTable(table, ownTable(live, config), [
    ...desired.natChains,
    ...desired.forwardChains,
    ...desired.marking,
  ]);
}

/**
 * kvmnftd's `bridge` table (isolate_guests): there while some network isolates its guests, owned whole like
 * the `inet` one; a table of that name without kvmnftd's marker is someone else's, never touched.
 */
function planBridgeTable(desired: DesiredState, config: Config, live: Ruleset, notes: PlanNote[]): Command[] {
  const claim = bridgeTableClaim(live, config);
  if (claim.kind === 'foreign') {
    if (desired.bridge.length > 0)
      notes.push({
        level: 'error',
        field: 'nat.table',
        message:
          `table bridge ${config.nat.table} exists and is not kvmnftd's (${claim.why}): isolate_guests drops no ` +
          'bridged frames: set nat.table to a name no other table uses',
      });
    return [];
  }
  const table: TableRef = { family: 'bridge', name: config.nat.table };
  const chains: DesiredChain[] =
    desired.bridge.length > 0 ? [{ name: BRIDGE_FORWARD_CHAIN, base: BRIDGE_FORWARD_SPEC, rules: desired.bridge }] : [];
  return planOwnedTable(table, ownBridgeTable(live, config), chains);
}

/** A table kvmnftd owns whole, managed chain by chain; no chains wanted: no table. */
function planOwnedTable(table: TableRef, liveTable: LiveTable | undefined, owned: DesiredChain[]): Command[] {
  if (owned.length === 0) return liveTable ? [{ delete: { table } }] : [];
  // The marker chain says "kvmnftd's" to the next pass (and the next version).
  const chains: DesiredChain[] = [{ name: OWNER_MARKER_CHAIN, rules: [] }, ...owned];
  // A base chain's type, hook or priority cannot change in place, and a
  // chain of that name may be jumped to: re-create the whole table (it is
  // ours alone), atomically within the batch.
  if (
    liveTable &&
    chains.some((c) => {
      const cur = liveTable.chains.get(c.name);
      return cur !== undefined && !sameBase(cur, c.base);
    })
  ) {
    return [{ delete: { table } }, ...createOwnTable(table, chains)];
  }
  if (!liveTable) return createOwnTable(table, chains);

  const adds: Command[] = [];
  const fills: Command[] = [];
  const deletes: Command[] = [];
  for (const chain of regularFirst(chains)) {
    const current = liveTable.chains.get(chain.name);
    if (!current) {
      adds.push({ add: { chain: { ...chainRef(table, chain.name), ...chain.base } } });
      fills.push(...addRules(table, chain.name, chain.rules));
    } else {
      // Edited in place: the rules that stay keep their handles and counters. No
      // guard is needed: the table and everything in it are kvmnftd's, so even a
      // delete by a stale handle could only hit a rule of kvmnftd's own, and the
      // next pass repairs what a stale snapshot got wrong.
      fills.push(...chainEdit(table, chain.name, current.rules, chain.rules));
    }
  }
  const wanted = new Set(chains.map((c) => c.name));
  const stale = [...liveTable.chains.keys()].filter((name) => !wanted.has(name));
  // Empty every stale chain before deleting any: they may jump to each other.
  for (const name of stale) deletes.push({ flush: { chain: chainRef(table, name) } });
  for (const name of stale) deletes.push({ delete: { chain: chainRef(table, name) } });
  // Deletes come after the refills that drop the jumps to them.
  return [...adds, ...fills, ...deletes];
}

function createOwnTable(table: TableRef, wanted: DesiredChain[]): Command[] {
  const chains = regularFirst(wanted);
  return [
    { add: { table } },
    ...chains.map((c): Command => ({ add: { chain: { ...chainRef(table, c.name), ...c.base } } })),
    ...chains.flatMap((c) => addRules(table, c.name, c.rules)),
  ];
}

/** Regular chains before base chains: a base chain's jumps need their targets. */
function regularFirst(chains: DesiredChain[]): DesiredChain[] {
  return [...chains.filter((c) => !c.base), ...chains.filter((c) => c.base)];
}

// ---- the admin's table: two chains of ours, one tagged jump each -------

function planAdminTable(
  desired: DesiredState,
  config: Config,
  live: Ruleset,
  notes: PlanNote[],
  handled: HandledChain[],
): Command[] {
  const { family, table: name, jump } = config.filter;
  const table: TableRef = { family, name };
  const liveTable = adminTable(live, config);
  const wanted: Record<string, RuleSpec[]> = { [OWN_INPUT_CHAIN]: desired.input, [OWN_FORWARD_CHAIN]: desired.forward };
  if (!liveTable) {
    if (desired.input.length + desired.forward.length > 0) {
      const applied =
        handled.length > 0
          ? `only the NAT part and the mark accepts in ${handled.map(targetText).join(', ')} are applied`
          : 'only the NAT part is applied';
      notes.push({
        level: 'warn',
        message:
          `table ${family} ${name} does not exist: ${applied} ` +
          '(guests behind a drop policy elsewhere stay blocked)',
      });
    }
    return [];
  }
  // Our names taken by base chains: the kernel refuses a jump to a base chain.
  const taken = OWN_CHAINS.filter((c) => liveTable.chains.get(c)?.hook !== undefined);
  if (taken.length > 0) {
    notes.push({
      level: 'error',
      message: `table ${family} ${name} has a base chain named ${taken.join(' and ')}, a name kvmnftd needs for a regular chain: rename it in your ruleset; until then only the NAT part is applied`,
    });
    return [];
  }

  const jumpDeletes: Command[] = [];
  const deleted = new Set<LiveRule>();
  const jumpAdds: Command[] = [];
  /** Our chains a guard command names, and whether the guard flushed it. */
  const guarded = new Map<string, 'kept' | 'flushed'>();
  const guards: Command[] = [];
  const missingBases = missingBaseChains(liveTable, config);
  const wantJumpFor = (own: string): boolean =>
    jump !== 'none' && !missingBases.includes(adminBaseChainOf(own, config)) && wanted[own]!.length > 0;

  // filter.jump = "none": the admin writes the jumps; kvmnftd never adds or deletes one.
  for (const own of jump === 'none' ? [] : OWN_CHAINS) {
    const baseName = adminBaseChainOf(own, config);
    const base = liveTable.chains.get(baseName);
    if (!base) continue;
    const tagged = base.rules.filter(isOurJump);
    let keep: LiveRule | undefined;
    if (jump !== 'none' && wantJumpFor(own)) {
      keep = ourJumpInPlace(base, own, jump);
      if (!keep) jumpAdds.push(jumpCommand(table, baseName, own, jump === 'first'));
    }
    for (const rule of tagged) {
      if (rule === keep) continue;
      // Rule handles restart when a table is re-created, so a delete by
      // handle from a stale snapshot could hit an admin's rule. A command
      // first that names the chain the tagged jump targets (ours, so it
      // exists in this snapshot) makes the whole batch fail then: a
      // re-created admin table does not contain it (guardCommand).
      const target = jumpTarget(rule)!;
      if (!guarded.has(target)) {
        const guard = guardCommand(table, target, liveTable.chains.get(target));
        guards.push(guard.command);
        guarded.set(target, guard.flushes ? 'flushed' : 'kept');
      }
      jumpDeletes.push(deleteRule(table, baseName, rule));
      deleted.add(rule);
    }
  }

  const chainOps: Command[] = [];
  const chainDeletes: Command[] = [];
  for (const own of OWN_CHAINS) {
    const rules = wanted[own]!;
    const current = liveTable.chains.get(own);
    const ref = chainRef(table, own);
    const baseName = adminBaseChainOf(own, config);
    if (jump === 'none' && !current && rules.length > 0) {
      notes.push({
        level: 'warn',
        message: `jump = "none" but chain ${family} ${name} ${own} does not exist: add it, and a jump to it from ${baseName}, to your ruleset`,
      });
    }
    if (missingBases.includes(baseName) && rules.length > 0) {
      notes.push({
        level: 'warn',
        message: `base chain ${family} ${name} ${baseName} does not exist: no ${own} rules applied`,
      });
    }
    // Any other rule that jumps to our chain (an admin's) keeps it alive.
    const referenced = [...liveTable.chains.values()].some(
      (c) => !isOwnChain(c.name) && c.rules.some((r) => !deleted.has(r) && jumpTarget(r) === own),
    );
    const keepChain =
      jump === 'none' ? current !== undefined : wantJumpFor(own) || (referenced && current !== undefined);
    const fill = jump === 'none' || wantJumpFor(own) ? rules : [];
    if (keepChain) {
      if (!current) chainOps.push({ add: { chain: ref } }, ...addRules(table, own, fill));
      // Emptied by its guard: refilled whole.
      else if (guarded.get(own) === 'flushed') chainOps.push(...addRules(table, own, fill));
      // Edited in place: the rules that stay keep their handles and counters.
      else chainOps.push(...chainEdit(table, own, current.rules, fill));
    } else if (current) {
      // Emptied first, deleted after every other flush: our chains may jump to each other.
      chainOps.push({ flush: { chain: ref } });
      chainDeletes.push({ delete: { chain: ref } });
    }
  }
  // Jumps go before the chains they target are deleted, and after the chains they target exist.
  return [...guards, ...jumpDeletes, ...chainOps, ...chainDeletes, ...jumpAdds];
}

/**
 * The command that makes a batch deleting a tagged jump by handle fail as a
 * whole when the admin's table was re-created since the snapshot: it names
 * our `chain` (which such a table does not hold) and, where it can, a rule
 * handle in it, without changing what the chain does:
 * - `replace` of the chain's `ct state invalid return` with itself: that
 *   rule has no counter, so nothing is lost, and every other rule stays;
 * - `flush` of a chain without rules (nothing to lose);
 * - `flush` otherwise (no such rule: a chain someone edited): the chain is
 *   refilled whole and its counters start again, the price of the guard. nft
 *   has no command that names a chain, fails when it is missing and changes
 *   nothing.
 */
function guardCommand(
  table: TableRef,
  name: string,
  chain: LiveChain | undefined,
): { command: Command; flushes: boolean } {
  const guard = invalidGuard();
  const key = ruleKey(guard);
  const same = chain?.rules.find((r) => ruleKey(r) === key);
  if (same) {
    const rule = { family: table.family, table: table.name, chain: name, handle: same.handle, ...guard };
    return { command: { replace: { rule } }, flushes: false };
  }
  return { command: { flush: { chain: chainRef(table, name) } }, flushes: (chain?.rules.length ?? 0) > 0 };
}

function jumpCommand(table: TableRef, chain: string, target: string, first: boolean): Command {
  const rule = {
    family: table.family,
    table: table.name,
    chain,
    expr: [{ jump: { target } }],
    comment: TAG,
  };
  return first ? { insert: { rule } } : { add: { rule } };
}

/** An invalid network that already has rules keeps them until it validates again. */
function keepRetained(
  desired: DesiredState,
  retained: Map<string, string>,
  live: Ruleset,
  config: Config,
  notes: PlanNote[],
): void {
  if (retained.size === 0) return;
  const admin = adminTable(live, config);
  const own = ownTableClaim(live, config).kind === 'foreign' ? undefined : ownTable(live, config);
  const kept = new Set<string>();
  // Only rules made of statements kvmnftd itself writes are carried over: a
  // tagged rule someone edited into something else is not ours to keep.
  const keep = (
    chain: LiveChain | undefined,
    acceptable: (expr: readonly Expr[]) => boolean = isRetainable,
  ): RuleSpec[] =>
    (chain?.rules ?? []).flatMap((r) => {
      if (r.comment === undefined || !retained.has(r.comment) || !acceptable(r.expr)) return [];
      kept.add(r.comment);
      return [{ expr: r.expr, comment: r.comment }];
    });
  desired.input.push(...keep(admin?.chains.get(OWN_INPUT_CHAIN)));
  desired.forward.push(...keep(admin?.chains.get(OWN_FORWARD_CHAIN)));
  if (bridgeTableClaim(live, config).kind === 'ours')
    desired.bridge.push(...keep(ownBridgeTable(live, config)?.chains.get(BRIDGE_FORWARD_CHAIN)));
  // The NAT dispatcher's rules are single jumps to the network's chain: a chain natChainName names, never
  // the marker chain or another chain kvmnftd plans itself (a tagged jump there is not a network's to keep).
  const isDispatch = (expr: readonly Expr[]): boolean =>
    expr.length === 1 && (jumpTarget({ expr }) ?? '').startsWith(natChainName(''));
  for (const jump of keep(own?.chains.get(NAT_BASE_CHAIN), isDispatch)) {
    const target = jumpTarget(jump);
    const chain = target === undefined ? undefined : own?.chains.get(target);
    if (
      !chain ||
      desired.natChains.some((c) => c.name === chain.name) ||
      !chain.rules.every((r) => isRetainable(r.expr))
    )
      continue;
    desired.natChains.push({
      name: chain.name,
      rules: chain.rules.map((r) => ({ expr: r.expr, ...(r.comment === undefined ? {} : { comment: r.comment }) })),
    });
    let base = desired.natChains.find((c) => c.base !== undefined);
    if (!base) {
      base = { name: NAT_BASE_CHAIN, base: natBaseSpec(config), rules: [] };
      desired.natChains.unshift(base);
    }
    base.rules.push(jump);
  }
  for (const tag of kept)
    notes.push({
      level: 'warn',
      network: retained.get(tag)!,
      message: 'keeps the rules it already has until its definition is valid again',
    });
}

/** Statements kvmnftd writes in a network's rules: renderable, and never a jump (those are ours only in dispatch positions). */
function isRetainable(expr: readonly Expr[]): boolean {
  return isRenderable(expr) && jumpTarget({ expr }) === undefined;
}

// ---- small helpers --------------------------------------------------------

function chainRef(table: TableRef, name: string): ChainObject {
  return { family: table.family, table: table.name, name };
}

function addRules(table: TableRef, chain: string, rules: RuleSpec[]): Command[] {
  return rules.map((r) => ({ add: { rule: { family: table.family, table: table.name, chain, ...r } } }));
}

function deleteRule(table: TableRef, chain: string, rule: LiveRule): Command {
  return { delete: { rule: { family: table.family, table: table.name, chain, handle: rule.handle } } };
}
