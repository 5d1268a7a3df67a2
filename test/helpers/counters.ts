// Counters that survive kvmnftd's own transactions: helpers shared by the
// model property (test/unit/plan-properties.test.ts) and the one against real
// nft (test/integration/convergence.test.ts).
import type { Config } from '../../src/config/config.js';
import type { Batch, Command, Expr } from '../../src/nft/json.js';
import { OWN_FORWARD_CHAIN, OWN_INPUT_CHAIN } from '../../src/nft/ownership.js';
import { ruleKey, tableKey, type LiveRule, type Ruleset } from '../../src/nft/ruleset.js';

/**
 * The batch with every counter of the rules it adds set to non-zero values
 * (`counter packets N bytes M`, distinct per rule), as if traffic had passed:
 * a rule that is later re-created instead of kept shows 0 again.
 */
export function withCounters(batch: Batch, first = 1): Batch {
  let n = first - 1;
  const counted = (expr: Expr[] | undefined): Expr[] | undefined =>
    expr?.map((e) => {
      if (!('counter' in e)) return e;
      n++;
      return { counter: { packets: n, bytes: 100 * n } };
    });
  return {
    nftables: batch.nftables.map((cmd): Command => {
      if ('add' in cmd && 'rule' in cmd.add)
        return { add: { rule: { ...cmd.add.rule, expr: counted(cmd.add.rule.expr) } } };
      if ('insert' in cmd) return { insert: { rule: { ...cmd.insert.rule, expr: counted(cmd.insert.rule.expr) } } };
      return cmd;
    }),
  };
}

/** kvmnftd's chains: every chain of its own table, and kvmnftd_input/kvmnftd_forward in the admin's. */
function ownChains(r: Ruleset, config: Config): Map<string, LiveRule[]> {
  const out = new Map<string, LiveRule[]>();
  const own = r.tables.get(tableKey('inet', config.nat.table));
  for (const c of own?.chains.values() ?? []) out.set(`inet ${config.nat.table} ${c.name}`, c.rules);
  const admin = r.tables.get(tableKey(config.filter.family, config.filter.table));
  for (const name of [OWN_INPUT_CHAIN, OWN_FORWARD_CHAIN]) {
    const c = admin?.chains.get(name);
    if (c) out.set(`${config.filter.family} ${config.filter.table} ${name}`, c.rules);
  }
  return out;
}

/** Rules by key, for the keys that occur once in the chain. */
function unique(rules: readonly LiveRule[]): Map<string, LiveRule> {
  const seen = new Map<string, LiveRule | undefined>();
  for (const r of rules) {
    const key = ruleKey(r);
    seen.set(key, seen.has(key) ? undefined : r);
  }
  return new Map([...seen].filter((e): e is [string, LiveRule] => e[1] !== undefined));
}

/**
 * Every rule of kvmnftd's in `before` that is still wanted in `after` (same
 * chain, same ruleKey; keys that occur once in the chain on both sides): it
 * must be the same rule, with its handle and its statements including the
 * counter values. Returns how many rules were compared and what differs.
 */
export function keptRules(before: Ruleset, after: Ruleset, config: Config): { compared: number; changed: string[] } {
  const was = ownChains(before, config);
  let compared = 0;
  const changed: string[] = [];
  for (const [chain, rules] of ownChains(after, config)) {
    const old = unique(was.get(chain) ?? []);
    for (const [key, rule] of unique(rules)) {
      const prior = old.get(key);
      if (!prior) continue;
      compared++;
      if (prior.handle !== rule.handle || JSON.stringify(prior.expr) !== JSON.stringify(rule.expr))
        changed.push(
          `${chain}: handle ${prior.handle} -> ${rule.handle}, ${JSON.stringify(prior.expr)} -> ${JSON.stringify(rule.expr)}`,
        );
    }
  }
  return { compared, changed };
}
