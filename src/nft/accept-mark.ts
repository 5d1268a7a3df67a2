// The marking chains: base chains of kvmnftd's own table that set the bit
// filter.accept_mark on exactly the packets kvmnftd's own chains accept, one
// priority before the filter chains (`filter - 1`), so that the one mark
// accept in Docker's and ufw's chains (foreign-chains.ts) lets exactly that
// traffic through them. Pure.
//
//   mark_input   hook input,   priority -1, policy accept
//   mark_forward hook forward, priority -1, policy accept
//
// Contents, in order:
// 1. `meta mark set meta mark & ~BIT`: the bit means "kvmnftd accepted this
//    packet on this hook" and nothing else; a packet arriving with it loses it;
// 2. `ct state invalid return`, as in kvmnftd's own chains;
// 3. (mark_forward) `oifname { Docker's bridges } return`: guest-to-container
//    traffic stays as Docker means it (unpublished ports closed); replies to
//    guests are still marked by the rules into the guest bridge;
// 4. the very rules desired.ts builds for kvmnftd_input / kvmnftd_forward,
//    each final `accept` replaced by `meta mark set meta mark | BIT accept`;
//    a `return` stays a return (not accepted: no bit); a policy drop
//    (policy.ts) becomes a `return` (kvmnftd's own chain drops it; the
//    marking chain only leaves it unmarked), and its `log` rule is left out
//    (logged once, where it is dropped).
import type { Config } from '../config/config.js';
import type { DesiredChain } from './desired.js';
import { withInvalidGuard } from './desired.js';
import { m, s, type BaseChainSpec, type Expr, type RuleSpec } from './json.js';
import { MARK_CHAINS, MARK_FORWARD_CHAIN, MARK_INPUT_CHAIN, TAG } from './ownership.js';
import type { LiveTable } from './ruleset.js';

/** `filter - 1`: before every filter chain at the standard priority (iptables-nft's, ufw's, Docker's). */
export const MARK_PRIORITY = -1;

export function markBaseSpec(hook: 'input' | 'forward'): BaseChainSpec {
  return { type: 'filter', hook, prio: MARK_PRIORITY, policy: 'accept' };
}

/**
 * The marking chains for kvmnftd's input and forward rules (before their
 * invalid guard is added). A chain whose rules are empty is not wanted.
 */
export function markingChains(
  input: readonly RuleSpec[],
  forward: readonly RuleSpec[],
  config: Config,
  dockerBridges: readonly string[],
): DesiredChain[] {
  const bit = config.filter.acceptMark;
  const clear: RuleSpec = { expr: [s.markClear(bit)], comment: TAG };
  const narrowing: RuleSpec[] =
    dockerBridges.length > 0 ? [{ expr: [m.oifnames(dockerBridges), s.return()], comment: TAG }] : [];
  const chains: DesiredChain[] = [];
  if (input.length > 0)
    chains.push({
      name: MARK_INPUT_CHAIN,
      base: markBaseSpec('input'),
      rules: [clear, ...withInvalidGuard(input.flatMap((r) => marking(r, bit)))],
    });
  if (forward.length > 0) {
    const [guard, ...rules] = withInvalidGuard(forward.flatMap((r) => marking(r, bit)));
    chains.push({
      name: MARK_FORWARD_CHAIN,
      base: markBaseSpec('forward'),
      rules: [clear, guard!, ...narrowing, ...rules],
    });
  }
  return chains;
}

/**
 * The rule with its final accept turned into "set the bit, accept", a final drop into `return`, a `log` rule
 * left out; any other rule as it is.
 */
export function marking(rule: RuleSpec, bit: number): RuleSpec[] {
  const last = rule.expr[rule.expr.length - 1];
  if (rule.expr.some((e) => 'log' in e)) return [];
  if (last && 'drop' in last) {
    const expr: Expr[] = [...rule.expr.slice(0, -1), s.return()];
    return [rule.comment === undefined ? { expr } : { expr, comment: rule.comment }];
  }
  if (!last || !('accept' in last)) return [rule];
  const expr: Expr[] = [...rule.expr.slice(0, -1), s.markSet(bit), s.accept()];
  return [rule.comment === undefined ? { expr } : { expr, comment: rule.comment }];
}

/** The marking chains of kvmnftd's own table as they are: what a plan without the foreign part keeps. */
export function markingChainsInPlace(own: LiveTable | undefined): DesiredChain[] {
  return MARK_CHAINS.flatMap((name) => {
    const chain = own?.chains.get(name);
    if (!chain) return [];
    const rules = chain.rules.map((r) =>
      r.comment === undefined ? { expr: r.expr } : { expr: r.expr, comment: r.comment },
    );
    return [{ name, base: markBaseSpec(name === MARK_INPUT_CHAIN ? 'input' : 'forward'), rules }];
  });
}
