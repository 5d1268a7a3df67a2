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
// - `delete chain` deletes the chain with its rules, but is refused (EBUSY)
//   while a rule in another chain still jumps to it: a jump deleted earlier
//   in the same batch no longer counts;
// - `delete table` takes everything in it;
// - handles are per table and start again in a re-created table; a new
//   object gets the number after the highest one the table holds (nft counts
//   on and never reuses the number of a deleted object; the index does not
//   carry nft's counter).
// Not modelled (kvmnftd never writes them): sets and maps, insert/add at a
// position, changing an existing chain's hook or priority.
import type { Batch, Command, RuleObject } from './json.js';
import { jumpTarget } from './ownership.js';
import { cloneRuleset, tableKey, type LiveChain, type LiveTable, type Ruleset } from './ruleset.js';

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
  batch.nftables.forEach((cmd, i) => step(next, cmd, i));
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

function step(r: Ruleset, cmd: Command, index: number): void {
  const refuse = (errno: NftErrno, what: string): never => {
    throw new BatchRefused(errno, index, what);
  };
  const tableOf = (family: string, name: string): LiveTable =>
    r.tables.get(tableKey(family, name)) ?? refuse('ENOENT', `table ${family} ${name}`);
  const chainOf = (family: string, table: string, name: string): LiveChain =>
    tableOf(family, table).chains.get(name) ?? refuse('ENOENT', `chain ${family} ${table} ${name}`);

  const addRule = (rule: RuleObject, first: boolean): void => {
    const table = tableOf(rule.family, rule.table);
    const chain = chainOf(rule.family, rule.table, rule.chain);
    const expr = rule.expr ?? [];
    const target = jumpTarget({ expr });
    if (target !== undefined) {
      const to = chainOf(rule.family, rule.table, target);
      if (to.hook !== undefined) refuse('EOPNOTSUPP', `jump to base chain ${rule.family} ${rule.table} ${target}`);
    }
    const added = {
      handle: nextHandle(table),
      expr: structuredClone(expr),
      ...(rule.comment === undefined ? {} : { comment: rule.comment }),
    };
    if (first) chain.rules.unshift(added);
    else chain.rules.push(added);
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
    } else addRule(o.rule, false);
  } else if ('insert' in cmd) addRule(cmd.insert.rule, true);
  else if ('flush' in cmd) {
    const c = cmd.flush.chain;
    chainOf(c.family, c.table, c.name).rules = [];
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
        if (other.name !== c.name && other.rules.some((rule) => jumpTarget(rule) === c.name))
          refuse('EBUSY', `chain ${c.family} ${c.table} ${c.name} is still jumped to from ${other.name}`);
      }
      table.chains.delete(c.name);
    } else {
      const { family, table, chain, handle } = d.rule;
      const from = chainOf(family, table, chain);
      const at = from.rules.findIndex((x) => x.handle === handle);
      if (at < 0) refuse('ENOENT', `rule handle ${String(handle)} in chain ${family} ${table} ${chain}`);
      from.rules.splice(at, 1);
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
