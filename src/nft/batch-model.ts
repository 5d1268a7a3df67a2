// What nft does with a batch: the batch applied to a copy of the ruleset
// index, command by command, the way nft 1.0.6 and the kernel do it, or
// refused as a whole (one failing command fails the transaction). Pure. Used
// by `plan --diff` and by the unit tests; test/integration/batch-model.test.ts
// runs the same batches through real nft and checks that both agree.
//
// Modelled, as nft does it:
// - every object a command names must exist (ENOENT), except that `add table`
//   and `add chain` of an existing object change nothing;
// - a rule's jump or goto needs an existing target (ENOENT) that is not a
//   base chain (EOPNOTSUPP);
// - a rule handle is looked up in the chain the command names: a handle of
//   another chain is ENOENT;
// - `insert rule` with a handle puts the rule right before that rule, plain
//   `insert` at the top, `add` at the end; `replace rule` swaps a rule's
//   statements in place, keeping its handle (and resetting its counter);
// - a rule deleted or flushed earlier in the same batch is gone for `delete`
//   and `replace` (ENOENT) and no longer holds a chain as a jump, but an
//   `insert` before it is accepted and lands where it was (the kernel drops
//   it only when the transaction commits);
// - `delete chain` deletes the chain with its rules, but is refused (EBUSY)
//   while a rule in another chain still jumps to it;
// - `delete table` takes everything in it;
// - handles are per table and start again in a re-created table; a new
//   object gets the number after the highest one the table holds (nft counts
//   on and never reuses the number of a deleted object; the index does not
//   carry nft's counter).
// Not modelled (kvmnftd never writes them): sets and maps, positions by
// index, changing an existing chain's hook or priority, and `add rule` with a
// handle (nft 1.0.6 and 1.1.3 ignore it in JSON and append, later versions
// add after it: a programming error here).
import type { Batch, Command, RuleObject } from './json.js';
import { jumpTarget } from './ownership.js';
import { cloneRuleset, tableKey, type LiveChain, type LiveRule, type LiveTable, type Ruleset } from './ruleset.js';

export type NftErrno = 'ENOENT' | 'EBUSY' | 'EOPNOTSUPP';

/** How nft prints each errno. */
export const NFT_STRERROR: Record<NftErrno, string> = {
  ENOENT: 'No such file or directory',
  EBUSY: 'Device or resource busy',
  EOPNOTSUPP: 'Operation not supported',
};

/** nft refused the batch: nothing of it was applied. */
export class BatchRefused extends Error {
  constructor(
    readonly errno: NftErrno,
    /** Index of the refused command in the batch. */
    readonly command: number,
    what: string,
  ) {
    super(`${NFT_STRERROR[errno]}: ${what}`);
    this.name = 'BatchRefused';
  }
}

/** The ruleset after nft applied the batch; throws BatchRefused (and leaves `live` as it was) when nft would refuse it. */
export function applyBatch(live: Ruleset, batch: Batch): Ruleset {
  const next = cloneRuleset(live);
  const removed = new Set<LiveRule>();
  batch.nftables.forEach((cmd, i) => step(next, cmd, i, removed));
  // The commit: rules deleted or flushed in the batch go.
  if (removed.size > 0)
    for (const table of next.tables.values())
      for (const chain of table.chains.values()) chain.rules = chain.rules.filter((r) => !removed.has(r));
  return next;
}

export type BatchOutcome = { applied: Ruleset } | { refused: BatchRefused };

/** applyBatch, with a refusal as a value. */
export function tryBatch(live: Ruleset, batch: Batch): BatchOutcome {
  try {
    return { applied: applyBatch(live, batch) };
  } catch (err) {
    if (err instanceof BatchRefused) return { refused: err };
    throw err;
  }
}

/**
 * One command. `removed`: the rules deleted or flushed earlier in the batch,
 * still in their chains' lists (an insert before one lands where it was)
 * until applyBatch commits.
 */
function step(r: Ruleset, cmd: Command, index: number, removed: Set<LiveRule>): void {
  const refuse = (errno: NftErrno, what: string): never => {
    throw new BatchRefused(errno, index, what);
  };
  const tableOf = (family: string, name: string): LiveTable =>
    r.tables.get(tableKey(family, name)) ?? refuse('ENOENT', `table ${family} ${name}`);
  const chainOf = (family: string, table: string, name: string): LiveChain =>
    tableOf(family, table).chains.get(name) ?? refuse('ENOENT', `chain ${family} ${table} ${name}`);
  /** Where the rule with this handle is in the chain's list; `present`: not removed earlier in the batch. */
  const ruleAt = (rule: RuleObject, present: boolean): { chain: LiveChain; at: number } => {
    const chain = chainOf(rule.family, rule.table, rule.chain);
    const at = chain.rules.findIndex((x) => x.handle === rule.handle && !(present && removed.has(x)));
    if (at < 0)
      refuse('ENOENT', `rule handle ${String(rule.handle)} in chain ${rule.family} ${rule.table} ${rule.chain}`);
    return { chain, at };
  };
  const checkJump = (rule: RuleObject): void => {
    const target = jumpTarget({ expr: rule.expr ?? [] });
    if (target === undefined) return;
    const to = chainOf(rule.family, rule.table, target);
    if (to.hook !== undefined) refuse('EOPNOTSUPP', `jump to base chain ${rule.family} ${rule.table} ${target}`);
  };
  const newRule = (rule: RuleObject): LiveRule => {
    checkJump(rule);
    return {
      handle: nextHandle(tableOf(rule.family, rule.table)),
      expr: structuredClone(rule.expr ?? []),
      ...(rule.comment === undefined ? {} : { comment: rule.comment }),
    };
  };

  if ('add' in cmd) {
    const o = cmd.add;
    if ('table' in o) {
      const { family, name } = o.table;
      const handle = Math.max(0, ...[...r.tables.values()].map((t) => t.handle)) + 1;
      if (!r.tables.has(tableKey(family, name)))
        r.tables.set(tableKey(family, name), { family, name, handle, chains: new Map() });
    } else if ('chain' in o) {
      const c = o.chain;
      const table = tableOf(c.family, c.table);
      if (!table.chains.has(c.name)) {
        const chain: LiveChain = {
          family: c.family,
          table: c.table,
          name: c.name,
          handle: nextHandle(table),
          rules: [],
        };
        if (c.type !== undefined) chain.type = c.type;
        if (c.hook !== undefined) chain.hook = c.hook;
        if (c.prio !== undefined) chain.prio = c.prio;
        if (c.policy !== undefined) chain.policy = c.policy;
        table.chains.set(c.name, chain);
      }
    } else {
      if (o.rule.handle !== undefined)
        throw new Error('add rule with a handle: not modelled (nft 1.0.6 ignores it in JSON and appends)');
      const chain = chainOf(o.rule.family, o.rule.table, o.rule.chain);
      chain.rules.push(newRule(o.rule));
    }
  } else if ('insert' in cmd) {
    const rule = cmd.insert.rule;
    if (rule.handle === undefined) {
      const chain = chainOf(rule.family, rule.table, rule.chain);
      chain.rules.unshift(newRule(rule));
    } else {
      const { chain, at } = ruleAt(rule, false);
      chain.rules.splice(at, 0, newRule(rule));
    }
  } else if ('replace' in cmd) {
    const rule = cmd.replace.rule;
    const { chain, at } = ruleAt(rule, true);
    checkJump(rule);
    chain.rules[at] = {
      handle: rule.handle,
      expr: structuredClone(rule.expr ?? []),
      ...(rule.comment === undefined ? {} : { comment: rule.comment }),
    };
  } else if ('flush' in cmd) {
    const c = cmd.flush.chain;
    for (const rule of chainOf(c.family, c.table, c.name).rules) removed.add(rule);
  } else {
    const d = cmd.delete;
    if ('table' in d) {
      tableOf(d.table.family, d.table.name);
      r.tables.delete(tableKey(d.table.family, d.table.name));
    } else if ('chain' in d) {
      const c = d.chain;
      const table = tableOf(c.family, c.table);
      chainOf(c.family, c.table, c.name);
      for (const other of table.chains.values()) {
        if (other.name !== c.name && other.rules.some((rule) => !removed.has(rule) && jumpTarget(rule) === c.name))
          refuse('EBUSY', `chain ${c.family} ${c.table} ${c.name} is still jumped to from ${other.name}`);
      }
      table.chains.delete(c.name);
    } else {
      const { chain, at } = ruleAt(d.rule, true);
      removed.add(chain.rules[at]!);
    }
  }
}

function nextHandle(table: LiveTable): number {
  let max = 0;
  for (const c of table.chains.values()) {
    max = Math.max(max, c.handle);
    for (const rule of c.rules) max = Math.max(max, rule.handle);
  }
  return max + 1;
}
