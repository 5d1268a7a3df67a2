// What a rule of kvmnftd's counts: the network it belongs to (its comment
// tag) and the kind of traffic its counter measures, read from the chain it
// sits in and the rule's own structure and verdict. The one home of this
// classification: `kvmnftd metrics`, the daemon's textfile, `status` and
// `doctor` all call it. Pure.
//
//   nat                a masquerade/SNAT of the network's own NAT chain
//                      (nat chains see only the first packet of a connection)
//   port_forwards      a port forward's DNAT (pf_prerouting, pf_output: again
//                      the first packet of each forwarded connection)
//   accepted_in        an accept of kvmnftd_forward into the network's bridge
//                      (its first interface match is `oifname`), a port
//                      forward's accept included
//   accepted_out       an accept of kvmnftd_forward out of the bridge (its
//                      first interface match is `iifname`), guest to guest
//                      across the bridge included
//   host_services      an accept of kvmnftd_input (guest to the host: DHCP,
//                      DNS, TFTP, and any host services)
//   dropped_by_policy  any rule of the network whose verdict is drop or reject
//
// Not counted: jumps, `return`s, the marking chains (copies of kvmnftd_input's
// and kvmnftd_forward's rules), and a forward's hairpin
// masquerade (its DNAT counts the connection already). kvmnftd writes every
// forward-chain rule with the network's bridge as the first interface match,
// so the direction never needs libvirt (test/unit/rule-kind.test.ts checks
// that against the planner's output).
import type { Expr } from './json.js';
import { MARK_CHAINS, OWN_FORWARD_CHAIN, OWN_INPUT_CHAIN, taggedNetwork } from './ownership.js';
import { ruleCounter, type Ruleset } from './ruleset.js';

export const RULE_KINDS = [
  'nat',
  'port_forwards',
  'accepted_in',
  'accepted_out',
  'host_services',
  'dropped_by_policy',
] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

/** What a rule's counter counts towards. */
export interface RuleClass {
  network: string;
  kind: RuleKind;
}

const VERDICTS = ['accept', 'drop', 'reject', 'return', 'jump', 'goto', 'masquerade', 'snat', 'dnat', 'redirect'];

/** The rule's verdict (or NAT statement), the last one it has; undefined for a rule without one. */
export function ruleVerdict(rule: { expr: readonly Expr[] }): string | undefined {
  let verdict: string | undefined;
  for (const e of rule.expr) for (const k of Object.keys(e)) if (VERDICTS.includes(k)) verdict = k;
  return verdict;
}

/** `meta iifname`/`meta oifname` (or `meta iif`/`oif`) of the first interface match, if any. */
function firstInterfaceMatch(rule: { expr: readonly Expr[] }): 'in' | 'out' | undefined {
  for (const e of rule.expr) {
    const match = e['match'];
    if (typeof match !== 'object' || match === null || Array.isArray(match)) continue;
    const left = match['left'];
    const meta = typeof left === 'object' && left !== null && !Array.isArray(left) ? left['meta'] : undefined;
    const key = typeof meta === 'object' && meta !== null && !Array.isArray(meta) ? meta['key'] : undefined;
    if (key === 'iifname' || key === 'iif') return 'in';
    if (key === 'oifname' || key === 'oif') return 'out';
  }
  return undefined;
}

/** `ct status dnat` among the rule's matches: a port forward's hairpin masquerade or forward accept. */
function matchesCtDnat(rule: { expr: readonly Expr[] }): boolean {
  return rule.expr.some((e) => {
    const match = e['match'];
    if (typeof match !== 'object' || match === null || Array.isArray(match)) return false;
    const left = match['left'];
    const ct = typeof left === 'object' && left !== null && !Array.isArray(left) ? left['ct'] : undefined;
    const key = typeof ct === 'object' && ct !== null && !Array.isArray(ct) ? ct['key'] : undefined;
    const right = match['right'];
    return key === 'status' && (right === 'dnat' || (Array.isArray(right) && right.includes('dnat')));
  });
}

/**
 * The network and kind a rule counts towards, or undefined when its counter is not one of the figures (not a
 * network's rule, or a jump, return, marking rule or hairpin masquerade). `chain`: the name of its chain.
 */
export function ruleKind(chain: string, rule: { expr: readonly Expr[]; comment?: string }): RuleClass | undefined {
  const network = taggedNetwork(rule.comment);
  // The marking chains repeat kvmnftd_input's and kvmnftd_forward's rules (accept-mark.ts): counted there.
  if (network === undefined || MARK_CHAINS.includes(chain)) return undefined;
  const kind = kindOf(chain, rule);
  return kind === undefined ? undefined : { network, kind };
}

function kindOf(chain: string, rule: { expr: readonly Expr[] }): RuleKind | undefined {
  switch (ruleVerdict(rule)) {
    case 'drop':
    case 'reject':
      return 'dropped_by_policy';
    case 'masquerade':
    case 'snat':
      return matchesCtDnat(rule) ? undefined : 'nat';
    case 'dnat':
    case 'redirect':
      return 'port_forwards';
    case 'accept':
      if (chain === OWN_INPUT_CHAIN) return 'host_services';
      if (chain !== OWN_FORWARD_CHAIN) return undefined;
      switch (firstInterfaceMatch(rule)) {
        case 'out':
          return 'accepted_in';
        case 'in':
          return 'accepted_out';
        default:
          return undefined;
      }
    default:
      return undefined;
  }
}

/** Packets and bytes of a set of rules, and how many rules they are. */
export interface Tally {
  packets: number;
  bytes: number;
  rules: number;
}

/** Per network (sorted by name), per kind (in RULE_KINDS order): the sum of the counters of its rules. */
export type CounterTally = Map<string, Map<RuleKind, Tally>>;

/**
 * Every counted rule of the live ruleset, summed per network and kind. A kind appears once the network has a
 * rule of it (with a counter); kinds it has no rule of are absent.
 */
export function tallyCounters(live: Ruleset): CounterTally {
  const found = new Map<string, Map<RuleKind, Tally>>();
  for (const table of live.tables.values())
    for (const chain of table.chains.values())
      for (const rule of chain.rules) {
        const cls = ruleKind(chain.name, rule);
        const counter = cls && ruleCounter(rule);
        if (!cls || !counter) continue;
        const kinds = found.get(cls.network) ?? new Map<RuleKind, Tally>();
        found.set(cls.network, kinds);
        const t = kinds.get(cls.kind) ?? { packets: 0, bytes: 0, rules: 0 };
        kinds.set(cls.kind, {
          packets: t.packets + counter.packets,
          bytes: t.bytes + counter.bytes,
          rules: t.rules + 1,
        });
      }
  const sorted: CounterTally = new Map();
  for (const name of [...found.keys()].sort()) {
    const kinds = found.get(name)!;
    sorted.set(name, new Map(RULE_KINDS.filter((k) => kinds.has(k)).map((k) => [k, kinds.get(k)!])));
  }
  return sorted;
}
