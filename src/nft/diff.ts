// `kvmnftd plan --diff`: what the next apply adds and removes, as a readable
// diff against the live ruleset. Pure: the planner's batch is played against a
// copy of the live ruleset index (the same semantics nft gives the commands)
// and every chain the batch touches is compared before and after, rule by rule
// (ruleKey: counters ignored), with a longest-common-subsequence alignment.
import type { Batch, Command, Expr } from './json.js';
import { renderRule } from './render-text.js';
import { ruleKey, tableKey, type LiveChain, type Ruleset } from './ruleset.js';

export type DiffOp = ' ' | '-' | '+';

export interface DiffLine {
  op: DiffOp;
  /** 0 table, 1 chain, 2 rule. */
  depth: 0 | 1 | 2;
  text: string;
}

interface SimRule {
  key: string;
  text: string;
  handle?: number;
}

interface SimChain {
  name: string;
  header: string;
  rules: SimRule[];
}

interface SimTable {
  family: string;
  name: string;
  chains: Map<string, SimChain>;
}

type Sim = Map<string, SimTable>;

/** A rule as nft text; statements the renderer does not know are shown in a short generic form. */
export function describeRule(expr: readonly Expr[], comment?: string): string {
  try {
    return renderRule(expr, comment);
  } catch {
    const parts = expr.map((e) => {
      try {
        return renderRule([e]);
      } catch {
        const [[kind, body] = ['?', null]] = Object.entries(e);
        if (kind === 'xt' && typeof body === 'object' && body !== null && !Array.isArray(body))
          return `xt ${String(body['type'])} ${String(body['name'])}`;
        if (kind === 'drop' || kind === 'reject' || kind === 'accept' || kind === 'return') return kind;
        if ((kind === 'jump' || kind === 'goto') && typeof body === 'object' && body !== null && !Array.isArray(body))
          return `${kind} ${String(body['target'])}`;
        return `${kind} ${JSON.stringify(body)}`;
      }
    });
    if (comment !== undefined) parts.push(`comment "${comment}"`);
    return parts.join(' ');
  }
}

function chainHeader(c: {
  name: string;
  type?: string | undefined;
  hook?: string | undefined;
  prio?: number | undefined;
  policy?: string | undefined;
}): string {
  return c.hook
    ? `chain ${c.name} { type ${c.type ?? 'filter'} hook ${c.hook} priority ${c.prio ?? 0}; policy ${c.policy ?? 'accept'}; }`
    : `chain ${c.name}`;
}

function fromLive(live: Ruleset): Sim {
  const sim: Sim = new Map();
  for (const [key, t] of live.tables) {
    const chains = new Map<string, SimChain>();
    for (const c of t.chains.values()) chains.set(c.name, simChain(c));
    sim.set(key, { family: t.family, name: t.name, chains });
  }
  return sim;
}

function simChain(c: LiveChain): SimChain {
  return {
    name: c.name,
    header: chainHeader(c),
    rules: c.rules.map((r) => ({ key: ruleKey(r), text: describeRule(r.expr, r.comment), handle: r.handle })),
  };
}

function clone(sim: Sim): Sim {
  const out: Sim = new Map();
  for (const [k, t] of sim)
    out.set(k, { ...t, chains: new Map([...t.chains].map(([n, c]) => [n, { ...c, rules: [...c.rules] }])) });
  return out;
}

/** Plays the batch on a copy of the ruleset; throws when a command could not apply (nft would refuse the batch too). */
function play(before: Sim, commands: readonly Command[]): Sim {
  const sim = clone(before);
  const table = (family: string, name: string): SimTable => {
    const t = sim.get(tableKey(family, name));
    if (!t) throw new Error(`table ${family} ${name} does not exist`);
    return t;
  };
  const chain = (family: string, tname: string, name: string): SimChain => {
    const c = table(family, tname).chains.get(name);
    if (!c) throw new Error(`chain ${family} ${tname} ${name} does not exist`);
    return c;
  };
  for (const cmd of commands) {
    if ('add' in cmd) {
      const o = cmd.add;
      if ('table' in o) {
        if (!sim.has(tableKey(o.table.family, o.table.name)))
          sim.set(tableKey(o.table.family, o.table.name), {
            family: o.table.family,
            name: o.table.name,
            chains: new Map(),
          });
      } else if ('chain' in o) {
        const t = table(o.chain.family, o.chain.table);
        if (!t.chains.has(o.chain.name))
          t.chains.set(o.chain.name, { name: o.chain.name, header: chainHeader(o.chain), rules: [] });
      } else {
        const r = o.rule;
        chain(r.family, r.table, r.chain).rules.push({
          key: ruleKey({ expr: r.expr ?? [], comment: r.comment }),
          text: renderRule(r.expr ?? [], r.comment),
        });
      }
    } else if ('insert' in cmd) {
      const r = cmd.insert.rule;
      chain(r.family, r.table, r.chain).rules.unshift({
        key: ruleKey({ expr: r.expr ?? [], comment: r.comment }),
        text: renderRule(r.expr ?? [], r.comment),
      });
    } else if ('flush' in cmd) {
      const c = cmd.flush.chain;
      chain(c.family, c.table, c.name).rules = [];
    } else {
      const d = cmd.delete;
      if ('table' in d) sim.delete(tableKey(d.table.family, d.table.name));
      else if ('chain' in d) table(d.chain.family, d.chain.table).chains.delete(d.chain.name);
      else {
        const c = chain(d.rule.family, d.rule.table, d.rule.chain);
        const at = c.rules.findIndex((r) => r.handle === d.rule.handle);
        if (at < 0)
          throw new Error(
            `rule handle ${String(d.rule.handle)} not in chain ${d.rule.family} ${d.rule.table} ${d.rule.chain}`,
          );
        c.rules.splice(at, 1);
      }
    }
  }
  return sim;
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

function ruleDiff(before: SimRule[], after: SimRule[]): DiffLine[] {
  const n = before.length;
  const m = after.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--)
      lcs[i]![j] =
        before[i]!.key === after[j]!.key ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  }
  const out: DiffLine[] = [];
  let same: string[] = [];
  const flushSame = (): void => {
    if (same.length > CONTEXT) out.push({ op: ' ', depth: 2, text: `... ${same.length} unchanged rules` });
    else out.push(...same.map((text) => ({ op: ' ' as const, depth: 2 as const, text })));
    same = [];
  };
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && before[i]!.key === after[j]!.key) {
      same.push(before[i]!.text);
      i++;
      j++;
    } else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      flushSame();
      out.push({ op: '-', depth: 2, text: before[i]!.text });
      i++;
    } else {
      flushSame();
      out.push({ op: '+', depth: 2, text: after[j]!.text });
      j++;
    }
  }
  flushSame();
  return out;
}

function whole(op: '-' | '+', c: SimChain): DiffLine[] {
  return [{ op, depth: 1, text: c.header }, ...c.rules.map((r) => ({ op, depth: 2 as const, text: r.text }))];
}

/**
 * The difference the batch makes to the live ruleset: only the tables and
 * chains it touches, and within a chain only what changes (with a little
 * context). Empty when the batch changes nothing.
 */
export function planDiff(live: Ruleset, batch: Batch): DiffLine[] {
  const before = fromLive(live);
  const after = play(before, batch.nftables);
  const { tables, chains } = touched(batch.nftables);
  const out: DiffLine[] = [];
  for (const key of tables) {
    const b = before.get(key);
    const a = after.get(key);
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
        const rules = ruleDiff(cb.rules, ca.rules);
        const headerChanged = cb.header !== ca.header;
        if (!headerChanged && rules.every((l) => l.op === ' ')) continue;
        if (headerChanged) lines.push({ op: '-', depth: 1, text: cb.header }, { op: '+', depth: 1, text: ca.header });
        else lines.push({ op: ' ', depth: 1, text: cb.header });
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
