// `kvmnftd plan --diff`: what the next apply adds and removes, as a readable
// diff against the live ruleset. Pure: the planner's batch is applied to the
// live ruleset index by the model of nft (batch-model.ts; a batch nft would
// refuse throws BatchRefused) and every chain the batch touches is compared
// before and after, rule by rule (ruleKey: counters ignored), aligned as the
// planner edits a chain (chain-edit.ts: a longest common subsequence).
import { applyBatch } from './batch-model.js';
import { alignKeys } from './chain-edit.js';
import type { Batch, Command } from './json.js';
import { describeRule } from './render-text.js';
import { ruleKey, tableKey, type LiveChain, type LiveTable, type Ruleset } from './ruleset.js';

export type DiffOp = ' ' | '-' | '+';

export interface DiffLine {
  op: DiffOp;
  /** 0 table, 1 chain, 2 rule. */
  depth: 0 | 1 | 2;
  text: string;
}

/** A rule as the diff shows and compares it. */
interface ShownRule {
  key: string;
  text: string;
}

function chainHeader(c: LiveChain): string {
  return c.hook
    ? `chain ${c.name} { type ${c.type ?? 'filter'} hook ${c.hook} priority ${c.prio ?? 0}; policy ${c.policy ?? 'accept'}; }`
    : `chain ${c.name}`;
}

function shownRules(c: LiveChain): ShownRule[] {
  return c.rules.map((r) => ({ key: ruleKey(r), text: describeRule(r.expr, r.comment) }));
}

/** Tables and chains a command names. */
function touched(commands: readonly Command[]): { tables: Set<string>; chains: Set<string> } {
  const tables = new Set<string>();
  const chains = new Set<string>();
  const mark = (family: string, table: string, chain?: string): void => {
    tables.add(tableKey(family, table));
    if (chain !== undefined) chains.add(`${tableKey(family, table)} ${chain}`);
  };
  for (const cmd of commands) {
    if ('add' in cmd) {
      const o = cmd.add;
      if ('table' in o) mark(o.table.family, o.table.name);
      else if ('chain' in o) mark(o.chain.family, o.chain.table, o.chain.name);
      else mark(o.rule.family, o.rule.table, o.rule.chain);
    } else if ('insert' in cmd) mark(cmd.insert.rule.family, cmd.insert.rule.table, cmd.insert.rule.chain);
    else if ('replace' in cmd) mark(cmd.replace.rule.family, cmd.replace.rule.table, cmd.replace.rule.chain);
    else if ('flush' in cmd) mark(cmd.flush.chain.family, cmd.flush.chain.table, cmd.flush.chain.name);
    else {
      const d = cmd.delete;
      if ('table' in d) mark(d.table.family, d.table.name);
      else if ('chain' in d) mark(d.chain.family, d.chain.table, d.chain.name);
      else mark(d.rule.family, d.rule.table, d.rule.chain);
    }
  }
  return { tables, chains };
}

/** Runs of more than this many unchanged rules are folded into one line. */
const CONTEXT = 2;

function ruleDiff(before: ShownRule[], after: ShownRule[]): DiffLine[] {
  const pairs = alignKeys(
    before.map((r) => r.key),
    after.map((r) => r.key),
  );
  const out: DiffLine[] = [];
  let same: string[] = [];
  const flushSame = (): void => {
    if (same.length > CONTEXT) out.push({ op: ' ', depth: 2, text: `... ${same.length} unchanged rules` });
    else out.push(...same.map((text) => ({ op: ' ' as const, depth: 2 as const, text })));
    same = [];
  };
  let i = 0;
  let j = 0;
  for (const [pi, pj] of [...pairs, [before.length, after.length] as const]) {
    if (i < pi || j < pj) flushSame();
    for (; i < pi; i++) out.push({ op: '-', depth: 2, text: before[i]!.text });
    for (; j < pj; j++) out.push({ op: '+', depth: 2, text: after[j]!.text });
    if (pi < before.length) {
      same.push(before[pi]!.text);
      i++;
      j++;
    }
  }
  flushSame();
  return out;
}

function whole(op: '-' | '+', c: LiveChain): DiffLine[] {
  return [
    { op, depth: 1, text: chainHeader(c) },
    ...c.rules.map((r) => ({ op, depth: 2 as const, text: describeRule(r.expr, r.comment) })),
  ];
}

/**
 * The difference the batch makes to the live ruleset: only the tables and
 * chains it touches, and within a chain only what changes (with a little
 * context). Empty when the batch changes nothing.
 */
export function planDiff(live: Ruleset, batch: Batch): DiffLine[] {
  const after = applyBatch(live, batch);
  const { tables, chains } = touched(batch.nftables);
  const out: DiffLine[] = [];
  for (const key of tables) {
    const b: LiveTable | undefined = live.tables.get(key);
    const a: LiveTable | undefined = after.tables.get(key);
    const t = (a ?? b)!;
    const head = `table ${t.family} ${t.name}`;
    if (!b && a) {
      out.push({ op: '+', depth: 0, text: head }, ...[...a.chains.values()].flatMap((c) => whole('+', c)));
      continue;
    }
    if (b && !a) {
      out.push({ op: '-', depth: 0, text: head }, ...[...b.chains.values()].flatMap((c) => whole('-', c)));
      continue;
    }
    if (!a || !b) continue;
    const lines: DiffLine[] = [];
    const names = [...new Set([...b.chains.keys(), ...a.chains.keys()])].filter((n) => chains.has(`${key} ${n}`));
    for (const name of names) {
      const cb = b.chains.get(name);
      const ca = a.chains.get(name);
      if (!cb && ca) lines.push(...whole('+', ca));
      else if (cb && !ca) lines.push(...whole('-', cb));
      else if (cb && ca) {
        const rules = ruleDiff(shownRules(cb), shownRules(ca));
        const [hb, ha] = [chainHeader(cb), chainHeader(ca)];
        if (hb === ha && rules.every((l) => l.op === ' ')) continue;
        if (hb !== ha) lines.push({ op: '-', depth: 1, text: hb }, { op: '+', depth: 1, text: ha });
        else lines.push({ op: ' ', depth: 1, text: hb });
        lines.push(...rules);
      }
    }
    if (lines.length > 0) out.push({ op: ' ', depth: 0, text: head }, ...lines);
  }
  return out;
}

export function renderDiff(lines: readonly DiffLine[]): string {
  return lines.map((l) => `${l.op} ${'  '.repeat(l.depth)}${l.text}\n`).join('');
}
