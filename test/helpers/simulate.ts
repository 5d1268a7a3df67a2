// A model of what nft does with the commands the planner emits, over the
// planner's own Ruleset index. Lets unit tests check properties (idempotence,
// ownership) for every golden case without root. The real-nft integration
// tests keep this model honest.
import type { Batch, Command, Expr } from '../../src/nft/json.js';
import { tableKey, type LiveChain, type Ruleset } from '../../src/nft/ruleset.js';

export function cloneRuleset(r: Ruleset): Ruleset {
  return structuredClone(r);
}

/** Applies a batch atomically: throws (and leaves `live` untouched) like a failed nft transaction. */
export function simulate(live: Ruleset, batch: Batch): Ruleset {
  const next = cloneRuleset(live);
  let handle = 10_000;
  for (const cmd of batch.nftables) step(next, cmd, () => ++handle);
  return next;
}

function chainOf(r: Ruleset, family: string, table: string, name: string): LiveChain {
  const chain = r.tables.get(tableKey(family, table))?.chains.get(name);
  if (!chain) throw new Error(`No such file or directory: chain ${family} ${table} ${name}`);
  return chain;
}

function step(r: Ruleset, cmd: Command, nextHandle: () => number): void {
  if ('add' in cmd && 'table' in cmd.add) {
    const { family, name } = cmd.add.table;
    if (!r.tables.has(tableKey(family, name)))
      r.tables.set(tableKey(family, name), { family, name, handle: nextHandle(), chains: new Map() });
  } else if ('add' in cmd && 'chain' in cmd.add) {
    const c = cmd.add.chain;
    const table = r.tables.get(tableKey(c.family, c.table));
    if (!table) throw new Error(`No such file or directory: table ${c.family} ${c.table}`);
    if (!table.chains.has(c.name)) {
      const chain: LiveChain = { family: c.family, table: c.table, name: c.name, handle: nextHandle(), rules: [] };
      if (c.type !== undefined) chain.type = c.type;
      if (c.hook !== undefined) chain.hook = c.hook;
      if (c.prio !== undefined) chain.prio = c.prio;
      if (c.policy !== undefined) chain.policy = c.policy;
      table.chains.set(c.name, chain);
    }
  } else if ('add' in cmd || 'insert' in cmd) {
    const rule =
      'add' in cmd ? (cmd.add as { rule: import('../../src/nft/json.js').RuleObject }).rule : cmd.insert.rule;
    const chain = chainOf(r, rule.family, rule.table, rule.chain);
    for (const e of rule.expr ?? []) {
      const target = (e as Expr & { jump?: { target: string } }).jump?.target;
      if (target !== undefined) chainOf(r, rule.family, rule.table, target);
    }
    const live = {
      handle: nextHandle(),
      expr: structuredClone(rule.expr ?? []),
      ...(rule.comment === undefined ? {} : { comment: rule.comment }),
    };
    if ('add' in cmd) chain.rules.push(live);
    else chain.rules.unshift(live);
  } else if ('flush' in cmd) {
    const c = cmd.flush.chain;
    chainOf(r, c.family, c.table, c.name).rules = [];
  } else if ('delete' in cmd && 'table' in cmd.delete) {
    const { family, name } = cmd.delete.table;
    if (!r.tables.delete(tableKey(family, name))) throw new Error(`No such file or directory: table ${family} ${name}`);
  } else if ('delete' in cmd && 'chain' in cmd.delete) {
    const c = cmd.delete.chain;
    const chain = chainOf(r, c.family, c.table, c.name);
    if (chain.rules.length > 0) throw new Error(`Device or resource busy: chain ${c.name} is not empty`);
    const table = r.tables.get(tableKey(c.family, c.table))!;
    for (const other of table.chains.values()) {
      if (other.rules.some((x) => x.expr.some((e) => (e as { jump?: { target: string } }).jump?.target === c.name))) {
        throw new Error(`Device or resource busy: chain ${c.name} is still jumped to from ${other.name}`);
      }
    }
    table.chains.delete(c.name);
  } else if ('delete' in cmd && 'rule' in cmd.delete) {
    const d = cmd.delete.rule;
    const chain = chainOf(r, d.family, d.table, d.chain);
    const index = chain.rules.findIndex((x) => x.handle === d.handle);
    if (index < 0) throw new Error(`No such file or directory: rule handle ${String(d.handle)}`);
    chain.rules.splice(index, 1);
  }
}
