// The classification of kvmnftd's rules for metrics and status (src/nft/rule-kind.ts): every golden case's
// planned rules, as they land in the ruleset, and the structure the classification relies on.
import { describe, expect, it } from 'vitest';
import { applyBatch } from '../../src/nft/batch-model.js';
import type { Expr, RuleSpec } from '../../src/nft/json.js';
import { m, s } from '../../src/nft/json.js';
import { MARK_CHAINS, OWN_FORWARD_CHAIN, taggedNetwork } from '../../src/nft/ownership.js';
import { plan } from '../../src/nft/plan.js';
import { ruleKind, ruleVerdict, tallyCounters } from '../../src/nft/rule-kind.js';
import { withCounters } from '../helpers/counters.js';
import { goldenCases, loadCase } from '../helpers/golden.js';

const tag = 'kvmnftd net=lab';
const rule = (...expr: Expr[]): RuleSpec => ({ expr, comment: tag });

describe('ruleKind', () => {
  it.each([
    ['kvmnftd_input', rule(m.iifname('virbr1'), m.dport('udp', 67), s.counter(), s.accept()), 'host_services'],
    ['kvmnftd_forward', rule(m.oifname('virbr1'), m.iifname('eth0'), s.counter(), s.accept()), 'accepted_in'],
    ['kvmnftd_forward', rule(m.iifname('virbr1'), m.oifname('eth0'), s.counter(), s.accept()), 'accepted_out'],
    ['kvmnftd_forward', rule(m.iifname('virbr1'), m.oifname('virbr1'), s.counter(), s.accept()), 'accepted_out'],
    ['kvmnftd_forward', rule(m.oifname('virbr1'), m.ctDnat(), s.counter(), s.accept()), 'accepted_in'],
    ['kvmnftd_forward', rule(m.iifname('virbr1'), s.counter(), { drop: null }), 'dropped_by_policy'],
    ['kvmnftd_input', rule(m.iifname('virbr1'), s.counter(), { reject: null }), 'dropped_by_policy'],
    ['isolate', rule(m.iifname('vnet0'), s.counter(), { drop: null }), 'dropped_by_policy'],
    ['nat_virbr1', rule(m.l4proto('tcp'), s.counter(), s.masquerade()), 'nat'],
    ['pf_prerouting', rule(m.localDaddr(), s.counter(), s.dnat('ip', '10.0.0.2', undefined)), 'port_forwards'],
  ])('%s: %j is %s', (chain, r, kind) => {
    expect(ruleKind(chain, r)).toEqual({ network: 'lab', kind });
  });

  it.each([
    ['kvmnftd_forward', rule(m.oifname('virbr1'), s.counter(), s.return())],
    ['postrouting', rule(s.jump('nat_virbr1'))],
    ['pf_postrouting', rule(m.oifname('virbr1'), m.ctDnat(), s.counter(), s.masquerade())],
    ['kvmnftd_forward', { expr: [m.oifname('virbr1'), s.counter(), s.accept()], comment: 'kvmnftd' }],
    ['kvmnftd_forward', rule(s.counter(), s.accept())],
    ['elsewhere', rule(m.oifname('virbr1'), s.counter(), s.accept())],
    ['kvmnftd_forward', rule(m.oifname('virbr1'), { log: { prefix: 'x' } })],
  ])('%s: %j counts towards no kind', (chain, r) => {
    expect(ruleKind(chain, r)).toBeUndefined();
  });

  it('takes the last verdict of a rule', () => {
    expect(ruleVerdict({ expr: [{ log: null }, s.counter(), { drop: null }] })).toBe('drop');
    expect(ruleVerdict({ expr: [s.counter()] })).toBeUndefined();
  });
});

describe.each(goldenCases())('golden case %s', (name) => {
  const c = loadCase(name);
  const p = plan(c.inputs, c.config, c.live, c.facts);
  const live = applyBatch(c.live, withCounters(p.batch));
  const bridges = new Map(p.networks.map((n) => [n.name, n.bridge]));

  it("every accept of kvmnftd_forward names its network's bridge in its first interface match", () => {
    for (const table of live.tables.values()) {
      const chain = table.chains.get(OWN_FORWARD_CHAIN);
      for (const r of chain?.rules ?? []) {
        const network = taggedNetwork(r.comment);
        if (network === undefined || ruleVerdict(r) !== 'accept' || !bridges.has(network)) continue;
        const first = r.expr.find((e) => JSON.stringify(e).includes('"meta":{"key":"')) ?? {};
        expect(JSON.stringify(first), JSON.stringify(r)).toContain(`"right":"${bridges.get(network)}"`);
      }
    }
  });

  it('every rule with a counter of a planned network counts towards a kind, or is a return or a hairpin', () => {
    for (const table of live.tables.values())
      for (const chain of table.chains.values())
        for (const r of chain.rules) {
          const network = taggedNetwork(r.comment);
          if (network === undefined || !bridges.has(network) || !r.expr.some((e) => 'counter' in e)) continue;
          const cls = ruleKind(chain.name, r);
          const why = `${chain.name}: ${JSON.stringify(r)}`;
          if (cls !== undefined) expect(cls.network, why).toBe(network);
          else if (!MARK_CHAINS.includes(chain.name) && chain.name !== 'pf_postrouting')
            expect(ruleVerdict(r), why).toBe('return');
        }
  });

  it('the tally has a nat kind for each NAT network, and accepted_in/out for forwarding ones', () => {
    const tally = tallyCounters(live);
    const ownChains = [...live.tables.values()].some((t) => t.chains.has(OWN_FORWARD_CHAIN));
    for (const n of p.networks) {
      const kinds = [...(tally.get(n.name)?.keys() ?? [])];
      if (n.mode === 'nat') expect(kinds).toContain('nat');
      if ((n.mode === 'nat' || n.mode === 'route') && n.ips.length > 0 && ownChains)
        expect(kinds).toEqual(expect.arrayContaining(['accepted_in', 'accepted_out', 'host_services']));
    }
  });
});
