// The live ruleset (`nft -j list ruleset`) as an index the planner can query,
// and the normal form used to decide whether a live rule already is the rule
// we want: counters and handles are run-time state, not configuration.
import { canonicalIp, ipFamily } from '../net/ip.js';
import { scalar, type Expr, type Json } from './json.js';

export interface LiveRule {
  handle: number;
  expr: Expr[];
  comment?: string;
}

export interface LiveChain {
  family: string;
  table: string;
  name: string;
  handle: number;
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
  rules: LiveRule[];
}

export interface LiveTable {
  family: string;
  name: string;
  handle: number;
  chains: Map<string, LiveChain>;
  /** Its other named objects (sets, maps, flowtables, stateful objects) as `kind name`. */
  objects?: string[];
}

/** Kinds of `nft -j list ruleset` items that are a table's named objects besides chains. */
export const TABLE_OBJECTS: ReadonlySet<string> = new Set([
  'set',
  'map',
  'flowtable',
  'counter',
  'quota',
  'limit',
  'ct helper',
  'ct timeout',
  'ct expectation',
  'secmark',
  'synproxy',
]);

export interface Ruleset {
  tables: Map<string, LiveTable>;
}

export const tableKey = (family: string, name: string): string => `${family} ${name}`;

export function emptyRuleset(): Ruleset {
  return { tables: new Map() };
}

/** A deep copy: tables, chains and rules can be changed without touching the original. */
export function cloneRuleset(r: Ruleset): Ruleset {
  return structuredClone(r);
}

type Obj = { [key: string]: Json };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Indexes the parsed output of `nft -j list ruleset`. Unknown object kinds are ignored. */
export function indexRuleset(doc: unknown): Ruleset {
  const ruleset = emptyRuleset();
  const items = isObj(doc) && Array.isArray(doc['nftables']) ? doc['nftables'] : [];
  for (const item of items) {
    if (!isObj(item)) continue;
    const table = item['table'];
    const chain = item['chain'];
    const rule = item['rule'];
    if (isObj(table)) {
      const family = scalar(table['family']);
      const name = scalar(table['name']);
      ruleset.tables.set(tableKey(family, name), { family, name, handle: Number(table['handle']), chains: new Map() });
    } else if (isObj(chain)) {
      const owner = ruleset.tables.get(tableKey(scalar(chain['family']), scalar(chain['table'])));
      if (!owner) continue;
      const live: LiveChain = {
        family: owner.family,
        table: owner.name,
        name: scalar(chain['name']),
        handle: Number(chain['handle']),
        rules: [],
      };
      if (typeof chain['type'] === 'string') live.type = chain['type'];
      if (typeof chain['hook'] === 'string') live.hook = chain['hook'];
      if (typeof chain['prio'] === 'number') live.prio = chain['prio'];
      if (typeof chain['policy'] === 'string') live.policy = chain['policy'];
      owner.chains.set(live.name, live);
    } else if (isObj(rule)) {
      const owner = ruleset.tables
        .get(tableKey(scalar(rule['family']), scalar(rule['table'])))
        ?.chains.get(scalar(rule['chain']));
      if (!owner) continue;
      const live: LiveRule = {
        handle: Number(rule['handle']),
        expr: Array.isArray(rule['expr']) ? rule['expr'].filter(isObj) : [],
      };
      if (typeof rule['comment'] === 'string') live.comment = rule['comment'];
      owner.rules.push(live);
    } else {
      const kind = Object.keys(item).find((k) => TABLE_OBJECTS.has(k));
      const obj = kind === undefined ? undefined : item[kind];
      if (kind === undefined || !isObj(obj)) continue;
      const owner = ruleset.tables.get(tableKey(scalar(obj['family']), scalar(obj['table'])));
      if (owner) (owner.objects ??= []).push(`${kind} ${scalar(obj['name'])}`);
    }
  }
  return ruleset;
}

/**
 * A rule's identity for comparison: statements with counter values dropped,
 * object keys sorted, values in one normal form (below), plus the comment.
 * Two rules with the same key behave the same.
 */
export function ruleKey(rule: { expr: Expr[]; comment?: string | undefined }): string {
  return `{"comment":${JSON.stringify(rule.comment ?? null)},"expr":${canonical(rule.expr.map(stripCounter))}}`;
}

/**
 * `same(i, j)`: ruleKey(a[i]) === ruleKey(b[j]), fast. Rules written alike
 * (the same JSON, counters aside, as a live rule and the wanted rule it
 * matches usually are) are equal without their normal form; each distinct
 * JSON is put in normal form once, and only when it has to be.
 */
export function ruleMatcher(
  a: ReadonlyArray<{ expr: Expr[]; comment?: string | undefined }>,
  b: ReadonlyArray<{ expr: Expr[]; comment?: string | undefined }>,
): (i: number, j: number) => boolean {
  const raw = (rule: { expr: Expr[]; comment?: string | undefined }): string =>
    `${JSON.stringify(rule.comment ?? null)}${JSON.stringify(rule.expr.map(stripCounter))}`;
  const rawA = a.map(raw);
  const rawB = b.map(raw);
  const keys = new Map<string, string>();
  const key = (text: string, rule: { expr: Expr[]; comment?: string | undefined }): string => {
    let k = keys.get(text);
    if (k === undefined) {
      k = ruleKey(rule);
      keys.set(text, k);
    }
    return k;
  };
  return (i, j) => rawA[i] === rawB[j] || key(rawA[i]!, a[i]!) === key(rawB[j]!, b[j]!);
}

function stripCounter(expr: Expr): Json {
  return 'counter' in expr ? { counter: null } : expr;
}

/**
 * One spelling for values that nft versions (or C libraries) print
 * differently although they mean the same: a range of one value is that value
 * (nft 1.0.6 lists `masquerade to :1024-1024` as {"range":[1024,1024]},
 * nft 1.1.3 as 1024); a full-length prefix is the address; an IPv6 address
 * is in canonicalIp's form (inet_ntop's, whatever the C library printed); an
 * anonymous set's elements in one order (nft lists them in the order of its
 * set backend, not the order written).
 */
function normal(value: Json): Json {
  if (typeof value === 'string') return value.includes(':') ? (canonicalIp(value) ?? value) : value;
  if (!isObj(value)) return value;
  const keys = Object.keys(value);
  if (keys.length !== 1) return value;
  const set = value['set'];
  if (Array.isArray(set)) {
    const elements = set.map((e) => [canonical(e), e] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return { set: elements.map(([, e]) => e) };
  }
  const range = value['range'];
  if (Array.isArray(range) && range.length === 2 && typeof range[0] !== 'object' && range[0] === range[1])
    return normal(range[0]!);
  const prefix = value['prefix'];
  if (isObj(prefix) && typeof prefix['addr'] === 'string' && typeof prefix['len'] === 'number') {
    const family = ipFamily(prefix['addr']);
    if (family !== undefined && prefix['len'] === (family === 4 ? 32 : 128)) return normal(prefix['addr']);
  }
  return value;
}

function canonical(raw: Json): string {
  const value = normal(raw);
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isObj(value)) {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k]!)}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A live rule's counter (`counter` statement), when it has one. */
export function ruleCounter(rule: LiveRule): { packets: number; bytes: number } | undefined {
  for (const e of rule.expr) {
    const c = (e as { counter?: unknown }).counter;
    if (typeof c === 'object' && c !== null && 'packets' in c && 'bytes' in c)
      return { packets: Number(c.packets), bytes: Number(c.bytes) };
  }
  return undefined;
}
