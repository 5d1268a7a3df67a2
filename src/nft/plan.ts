// The planner: (networks, config, live ruleset) -> one nft JSON batch.
// Pure: no I/O, no clock. An empty batch means the live ruleset already is
// what we want, which is what keeps reconciles from looping on their own
// monitor events.
import type { Config } from '../config/config.js';
import type { Network, NetworkParse } from '../libvirt/model.js';
import { desiredState, NAT_BASE_CHAIN, natBaseSpec, networkTag, OWN_FORWARD_CHAIN, OWN_INPUT_CHAIN, TAG, withInvalidGuard, type DesiredChain, type DesiredState } from './desired.js';
import type { Batch, ChainObject, Command, NftFamily, RuleSpec, TableRef } from './json.js';
import { ruleKey, tableKey, type LiveChain, type LiveRule, type LiveTable, type Ruleset } from './ruleset.js';

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
}

/**
 * `inputs` are the parse results of every ACTIVE network. Invalid ones are
 * skipped with an error note, but keep whatever rules they already have.
 * Pass no inputs to plan the removal of everything kvmnftd owns.
 */
export function plan(inputs: readonly NetworkParse[], config: Config, live: Ruleset): Plan {
  const notes: PlanNote[] = [];
  const networks: Network[] = [];
  const retained = new Map<string, string>(); // tag -> network name
  const bridges = new Map<string, string>();
  for (const input of inputs) {
    if (input.kind === 'ignored') {
      notes.push({ level: 'info', network: input.name, message: `forward mode '${input.mode}' needs no firewall rules; ignored` });
    } else if (input.kind === 'invalid') {
      notes.push({ level: 'error', network: input.name, field: input.field, message: `skipped: ${input.field}: ${input.message}` });
      retained.set(networkTag(input.name), input.name);
    } else if (bridges.has(input.network.bridge)) {
      notes.push({ level: 'error', network: input.network.name, field: 'bridge/@name', message: `skipped: bridge ${input.network.bridge} is already used by network ${bridges.get(input.network.bridge)}` });
    } else {
      bridges.set(input.network.bridge, input.network.name);
      networks.push(input.network);
      if (input.network.mode === 'open' && !config.filter.acceptOpenNetworks.includes(input.network.name)) {
        notes.push({ level: 'info', network: input.network.name, message: "forward mode 'open': no rules, as libvirt (list it in filter.accept_open_networks to accept its traffic)" });
      }
    }
  }

  const desired = desiredState(networks, config);
  keepRetained(desired, retained, live, config, notes);
  desired.input = withInvalidGuard(desired.input);
  desired.forward = withInvalidGuard(desired.forward);
  const commands = [...planOwnTable(desired, config, live), ...planAdminTable(desired, config, live, notes)];
  return { batch: { nftables: commands }, notes, networks, desired };
}

// ---- kvmnftd's own table: owned whole, managed chain by chain -----------

function planOwnTable(desired: DesiredState, config: Config, live: Ruleset): Command[] {
  const table: TableRef = { family: 'inet', name: config.nat.table };
  const liveTable = live.tables.get(tableKey(table.family, table.name));
  if (desired.natChains.length === 0) return liveTable ? [{ delete: { table } }] : [];

  const adds: Command[] = [];
  const fills: Command[] = [];
  const deletes: Command[] = [];
  if (!liveTable) adds.push({ add: { table } });
  // Regular chains first: the base chain's jumps need their targets to exist.
  const ordered = [...desired.natChains.filter((c) => !c.base), ...desired.natChains.filter((c) => c.base)];
  for (const chain of ordered) {
    const current = liveTable?.chains.get(chain.name);
    const ref = chainRef(table, chain.name);
    if (current && !sameBase(current, chain)) {
      // A base chain's hook or priority cannot be changed in place.
      deletes.push({ flush: { chain: ref } }, { delete: { chain: ref } });
      adds.push({ add: { chain: { ...ref, ...chain.base } } });
      fills.push(...addRules(table, chain.name, chain.rules));
    } else if (!current) {
      adds.push({ add: { chain: { ...ref, ...chain.base } } });
      fills.push(...addRules(table, chain.name, chain.rules));
    } else if (!sameRules(current.rules, chain.rules)) {
      fills.push({ flush: { chain: ref } }, ...addRules(table, chain.name, chain.rules));
    }
  }
  const wanted = new Set(desired.natChains.map((c) => c.name));
  for (const name of liveTable?.chains.keys() ?? []) {
    if (!wanted.has(name)) deletes.push({ flush: { chain: chainRef(table, name) } }, { delete: { chain: chainRef(table, name) } });
  }
  // Re-created base chains must go before their replacements are added; the
  // rest of the deletes come after the refills that drop jumps to them.
  const [early, late] = splitRecreated(deletes, adds);
  return [...early, ...adds, ...fills, ...late];
}

function splitRecreated(deletes: Command[], adds: Command[]): [Command[], Command[]] {
  const added = new Set(adds.flatMap((c) => ('add' in c && 'chain' in c.add ? [c.add.chain.name] : [])));
  const early: Command[] = [];
  const late: Command[] = [];
  for (const c of deletes) {
    const name = 'flush' in c ? c.flush.chain.name : 'delete' in c && 'chain' in c.delete ? c.delete.chain.name : '';
    (added.has(name) ? early : late).push(c);
  }
  return [early, late];
}

// ---- the admin's table: two chains of ours, one tagged jump each -------

function planAdminTable(desired: DesiredState, config: Config, live: Ruleset, notes: PlanNote[]): Command[] {
  const { family, table: name, jump } = config.filter;
  const table: TableRef = { family, name };
  const liveTable = live.tables.get(tableKey(family, name));
  if (!liveTable) {
    if (desired.input.length + desired.forward.length > 0) {
      notes.push({ level: 'warn', message: `table ${family} ${name} does not exist: only the NAT part is applied (guests behind a drop policy elsewhere stay blocked)` });
    }
    return [];
  }
  const guards: Command[] = [];
  const body: Command[] = [];
  const pairs: Array<[string, string, RuleSpec[]]> = [
    [config.filter.inputChain, OWN_INPUT_CHAIN, desired.input],
    [config.filter.forwardChain, OWN_FORWARD_CHAIN, desired.forward],
  ];
  for (const [baseName, ownName, rules] of pairs) {
    const base = liveTable.chains.get(baseName);
    const own = liveTable.chains.get(ownName);
    const ownRef = chainRef(table, ownName);
    const tagged = base ? base.rules.filter(isOurJump) : [];
    const jumpRule: RuleSpec = { expr: [{ jump: { target: ownName } }], comment: TAG };
    const wantJump = jump !== 'none' && base !== undefined && rules.length > 0;

    if (jump === 'none' && !own && rules.length > 0) {
      notes.push({ level: 'warn', message: `jump = "none" but chain ${family} ${name} ${ownName} does not exist: add it, and a jump to it from ${baseName}, to your ruleset` });
    }
    if (jump !== 'none' && !base && rules.length > 0) {
      notes.push({ level: 'warn', message: `base chain ${family} ${name} ${baseName} does not exist: no ${ownName} rules applied` });
    }

    let jumpInPlace = tagged.length === 0;
    if (wantJump) {
      const position = jump === 'first' ? 0 : base.rules.length - 1;
      jumpInPlace = tagged.length === 1 && base.rules[position] === tagged[0] && ruleKey(tagged[0]!) === ruleKey(jumpRule);
    }
    let refill = false;
    const jumpDeletes: Command[] = [];
    if (!jumpInPlace && tagged.length > 0) {
      if (own) {
        // Rule handles restart when a table is re-created, so a delete by
        // handle from a stale snapshot could hit an admin's rule. Flushing
        // our chain first makes the whole batch fail then: a re-created
        // admin table does not contain it. Its rules are re-added below.
        guards.push({ flush: { chain: ownRef } });
        refill = true;
        jumpDeletes.push(...tagged.map((r) => deleteRule(table, baseName, r)));
      } else {
        notes.push({ level: 'warn', message: `rules tagged "${TAG}" in ${family} ${name} ${baseName} jump to chains kvmnftd does not own; left alone` });
      }
    }

    const chainOps: Command[] = [];
    const wantChain = jump === 'none' ? own !== undefined : wantJump;
    if (wantChain) {
      if (!own) chainOps.push({ add: { chain: ownRef } }, ...addRules(table, ownName, rules));
      else if (refill || !sameRules(own.rules, rules)) chainOps.push({ flush: { chain: ownRef } }, ...addRules(table, ownName, rules));
    } else if (own) {
      chainOps.push({ flush: { chain: ownRef } }, { delete: { chain: ownRef } });
    }
    const jumpAdd: Command[] = [];
    if (wantJump && !jumpInPlace) {
      const rule = { family, table: name, chain: baseName, ...jumpRule };
      jumpAdd.push(jump === 'first' ? { insert: { rule } } : { add: { rule } });
    }
    body.push(...jumpDeletes, ...chainOps, ...jumpAdd);
  }
  return [...guards, ...body];
}

function isOurJump(rule: LiveRule): boolean {
  return (rule.comment === TAG || rule.comment?.startsWith(`${TAG} `) === true) && jumpTarget(rule) !== undefined;
}

function jumpTarget(rule: LiveRule): string | undefined {
  for (const e of rule.expr) {
    const j = e['jump'];
    if (typeof j === 'object' && j !== null && !Array.isArray(j) && typeof j['target'] === 'string') return j['target'];
  }
  return undefined;
}

/** An invalid network that already has rules keeps them until it validates again. */
function keepRetained(desired: DesiredState, retained: Map<string, string>, live: Ruleset, config: Config, notes: PlanNote[]): void {
  if (retained.size === 0) return;
  const admin = live.tables.get(tableKey(config.filter.family, config.filter.table));
  const own = live.tables.get(tableKey('inet', config.nat.table));
  const kept = new Set<string>();
  const keep = (chain: LiveChain | undefined): RuleSpec[] =>
    (chain?.rules ?? []).flatMap((r) => {
      if (r.comment === undefined || !retained.has(r.comment)) return [];
      kept.add(r.comment);
      return [{ expr: r.expr, comment: r.comment }];
    });
  desired.input.push(...keep(admin?.chains.get(OWN_INPUT_CHAIN)));
  desired.forward.push(...keep(admin?.chains.get(OWN_FORWARD_CHAIN)));
  for (const jump of keep(own?.chains.get(NAT_BASE_CHAIN))) {
    const target = jumpTarget({ handle: 0, expr: jump.expr });
    const chain = target === undefined ? undefined : own?.chains.get(target);
    if (!chain || desired.natChains.some((c) => c.name === chain.name)) continue;
    desired.natChains.push({ name: chain.name, rules: chain.rules.map((r) => ({ expr: r.expr, ...(r.comment === undefined ? {} : { comment: r.comment }) })) });
    let base = desired.natChains.find((c) => c.base !== undefined);
    if (!base) {
      base = { name: NAT_BASE_CHAIN, base: natBaseSpec(config), rules: [] };
      desired.natChains.unshift(base);
    }
    base.rules.push(jump);
  }
  for (const tag of kept) notes.push({ level: 'warn', network: retained.get(tag)!, message: 'keeps the rules it already has until its definition is valid again' });
}

// ---- small helpers --------------------------------------------------------

function chainRef(table: TableRef, name: string): ChainObject {
  return { family: table.family, table: table.name, name };
}

function addRules(table: TableRef, chain: string, rules: RuleSpec[]): Command[] {
  return rules.map((r) => ({ add: { rule: { family: table.family as NftFamily, table: table.name, chain, ...r } } }));
}

function deleteRule(table: TableRef, chain: string, rule: LiveRule): Command {
  return { delete: { rule: { family: table.family, table: table.name, chain, handle: rule.handle } } };
}

function sameRules(live: LiveRule[], wanted: RuleSpec[]): boolean {
  return live.length === wanted.length && live.every((r, i) => ruleKey(r) === ruleKey(wanted[i]!));
}

function sameBase(live: LiveChain, wanted: DesiredChain): boolean {
  if (!wanted.base) return live.hook === undefined;
  const b = wanted.base;
  return live.type === b.type && live.hook === b.hook && live.prio === b.prio && live.policy === b.policy;
}
