// doctor on [networks.<name>] policies: a refused key is an error naming it; a policy that drops is named with
// what it allows and how much it dropped (the counters of kvmnftd's own drop rules).
import { describe, expect, it } from 'vitest';
import { checkPolicies } from '../../src/doctor/policy.js';
import type { DoctorFacts } from '../../src/doctor/types.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { loadCase } from '../helpers/golden.js';

function factsOf(name: string, count?: (chain: string, rule: number) => number): DoctorFacts {
  const c = loadCase(name);
  const live: Ruleset = applyBatch(c.live, plan(c.inputs, c.config, c.live, c.facts).batch);
  if (count)
    for (const table of live.tables.values())
      for (const chain of table.chains.values())
        chain.rules.forEach((r, i) => {
          r.expr = r.expr.map((e) => ('counter' in e ? { counter: { packets: count(chain.name, i), bytes: 0 } } : e));
        });
  const facts: Partial<DoctorFacts> = {
    config: c.config,
    libvirt: { networks: c.inputs },
    ruleset: { live, plannedCommands: 0, forwards: [] },
  };
  return facts as DoctorFacts;
}

describe('doctor: policies', () => {
  it('names the policy that drops, with what it allows and the count', () => {
    const findings = checkPolicies(factsOf('policy-egress', () => 3));
    expect(findings.map((f) => [f.id, f.severity, f.title])).toEqual([
      [
        'policy-drops',
        'info',
        'network default: egress allows only 10.0.0.0/9, 10.128.0.0/9, 192.0.2.1, 172.16.0.0/16, 172.17.0.0/16, 172.18.0.0/16, tcp/443, udp/8000-8010, tcp/8005, ' +
          '203.0.113.7:tcp/25, 10.1.2.3:tcp/80, [2001:db8::1]:tcp/25, 2001:db8:1::/48; 6 packets dropped',
      ],
    ]);
  });

  it('counts isolation drops in the bridge table, not egress', () => {
    // Two ports (bridge-ports.json), a drop each way: four drops of 5 frames each.
    const findings = checkPolicies(factsOf('policy-log-drops', (chain) => (chain === 'forward' ? 5 : 0)));
    expect(findings.map((f) => f.title)).toEqual([
      'network default: isolate_guests drops traffic between its guests; 20 frames dropped',
    ]);
    expect(factsOf('policy-log-drops').ruleset).toHaveProperty('live');
    const live = (factsOf('policy-log-drops').ruleset as { live: Ruleset }).live;
    expect(live.tables.has(tableKey('bridge', 'kvmnftd'))).toBe(true);
  });

  it('with log_drops, names the destinations dropped most, from the kernel log', () => {
    const facts = factsOf('policy-log-drops', (chain) => (chain === 'kvmnftd_forward' ? 4 : 0));
    const line = (rest: string): string => `4,1203,7000,-;kvmnftd default drop: ${rest}`;
    facts.dropLog = {
      lines: [
        line('IN=virbr0 OUT=eth0 SRC=192.168.122.50 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=40000 DPT=443 SYN'),
        line('IN=virbr0 OUT=eth0 SRC=192.168.122.50 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=40002 DPT=443 SYN'),
        // IPv6 as the kernel writes it: every group in full.
        line(
          'IN=virbr0 OUT=eth0 SRC=fd00:0000:0000:0000:0000:0000:0000:0050 DST=2001:0db8:0000:0000:0000:0000:0000:0009 ' +
            'LEN=80 PROTO=UDP SPT=5000 DPT=53',
        ),
        // Not egress: routed guest to guest (back into the bridge), and bridged between two ports.
        line('IN=virbr0 OUT=virbr0 SRC=192.168.122.50 DST=192.168.122.60 PROTO=TCP SPT=1 DPT=22'),
        line('IN=vnet0 OUT=vnet1 SRC=192.168.122.50 DST=192.168.122.60 PROTO=TCP SPT=1 DPT=22'),
        '4,1204,7001,-;kvmnftd other drop: IN=virbr0 OUT=eth0 SRC=10.0.0.5 DST=198.51.100.1 PROTO=TCP DPT=80',
      ],
    };
    const egress = checkPolicies(facts).find((f) => f.title.includes('egress'));
    expect(egress?.title).toMatch(
      /^network default: egress allows only tcp\/443; 203\.0\.113\.9:tcp\/443, \[2001:db8::9\]:udp\/53 are dropped; \d+ packets dropped$/,
    );
    expect(egress?.evidence).toContain(
      'kernel log ("kvmnftd default drop: "): 2 logged packets to 203.0.113.9:tcp/443',
    );
  });

  it('says nothing when nothing was dropped', () => {
    expect(checkPolicies(factsOf('policy-log-drops', () => 0))).toEqual([]);
  });

  it('reports a key the mode cannot use as an error naming it', () => {
    const findings = checkPolicies(factsOf('policy-modes'));
    expect(findings.map((f) => [f.id, f.networks, f.title.split(':').slice(0, 2).join(':')])).toEqual([
      ['network-policy-refused', ['isolated'], 'network isolated: networks.isolated.egress'],
      ['network-policy-refused', ['opennet'], 'network opennet: networks.opennet.egress'],
    ]);
    const family = checkPolicies(factsOf('policy-ip-family'));
    expect(family.map((f) => f.title)).toEqual([expect.stringContaining('cannot be enforced on IPv6')]);
  });
});
