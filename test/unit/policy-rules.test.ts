// The rules of a network's policy (src/nft/policy.ts): order, families, merged sets, log prefixes.
import { describe, expect, it } from 'vitest';
import { configFromObject, configProblems } from '../../src/config/config.js';
import { networkPolicy } from '../../src/config/network-policy.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { Network } from '../../src/libvirt/model.js';
import { cidrOf } from '../../src/net/ip.js';
import { desiredState } from '../../src/nft/desired.js';
import { logPrefix, networkTag } from '../../src/nft/ownership.js';
import { addressIntervals, forwardPolicyRules } from '../../src/nft/policy.js';
import { renderRule } from '../../src/nft/render-text.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { emptyRuleset, tableKey } from '../../src/nft/ruleset.js';
import { loadCase } from '../helpers/golden.js';

const NAT = parseNetworkXml(
  `<network><name>lab</name><forward mode='nat'/><bridge name='virbr9'/>
   <ip address='192.168.9.1' prefix='24'/><ip family='ipv6' address='fd00:9::1' prefix='64'/></network>`,
  'lab.xml',
);
const lab = (NAT as { network: Network }).network;

const rulesFor = (networks: Record<string, unknown>, family = 'inet'): string[] => {
  const config = configFromObject({ networks, filter: { family } }, 't.toml');
  const fams = new Set(family === 'ip' ? ([4] as const) : ([4, 6] as const));
  return forwardPolicyRules(lab, networkPolicy(config, 'lab'), fams, family === 'inet').map((r) =>
    renderRule(r.expr, r.comment),
  );
};

describe('policy rules', () => {
  it('an IPv4-only list drops every new forwarded IPv6 packet but the services allowed anywhere', () => {
    expect(rulesFor({ lab: { egress: ['10.0.0.0/8'] } })).toEqual([
      'iifname "virbr9" oifname != "virbr9" ct state untracked counter drop comment "kvmnftd net=lab"',
      'iifname "virbr9" oifname != "virbr9" ct direction original ip daddr != 10.0.0.0/8 counter drop comment "kvmnftd net=lab"',
      'iifname "virbr9" oifname != "virbr9" ct direction original meta nfproto ipv6 counter drop comment "kvmnftd net=lab"',
    ]);
  });

  it('egress = [] drops all of both families; an ip table gets no nfproto match', () => {
    const judged = (rules: string[]) =>
      rules.filter((r) => r.includes(' original ')).map((r) => r.split(' original ')[1]);
    expect(judged(rulesFor({ lab: { egress: [] } }))).toEqual([
      'meta nfproto ipv4 counter drop comment "kvmnftd net=lab"',
      'meta nfproto ipv6 counter drop comment "kvmnftd net=lab"',
    ]);
    expect(judged(rulesFor({ lab: { egress: [] } }, 'ip'))).toEqual(['counter drop comment "kvmnftd net=lab"']);
  });

  it('egress drops come before isolation, each after its log when log_drops', () => {
    const rules = rulesFor({ lab: { egress: ['tcp/443'], isolate_guests: true, log_drops: true } });
    expect(
      rules.map((r) => (r.includes(' log ') ? 'log' : r.includes('oifname "virbr9"') ? 'isolate' : 'egress')),
    ).toEqual(['log', 'egress', 'log', 'egress', 'log', 'egress', 'log', 'isolate']);
    expect(rules[0]).toContain('limit rate 5/second burst 10 packets log prefix "kvmnftd lab drop: "');
  });

  it('comes first in kvmnftd_forward, and isolation replaces the guest-to-guest accept', () => {
    const config = configFromObject({ networks: { lab: { egress: [], isolate_guests: true } } }, 't.toml');
    const forward = desiredState([lab], config).forward.map((r) => renderRule(r.expr));
    expect(forward.slice(0, 4).every((r) => r.endsWith('drop'))).toBe(true);
    expect(forward).not.toContain('iifname "virbr9" oifname "virbr9" counter accept');
    expect(desiredState([lab], config, new Map(), { virbr9: ['vnet0'] }).bridge.map((r) => renderRule(r.expr))).toEqual(
      ['iifname "vnet0" counter drop', 'oifname "vnet0" counter drop'],
    );
  });

  it('merges destinations as nft lists a merged interval set', () => {
    const c = (a: string, p: number) => cidrOf(a, p)!;
    expect(addressIntervals([c('10.128.0.0', 9), c('10.0.0.0', 9)])).toEqual([
      { prefix: { addr: '10.0.0.0', len: 8 } },
    ]);
    expect(addressIntervals([c('11.0.0.0', 8), c('12.0.0.0', 8), c('12.1.0.0', 16)])).toEqual([
      { range: ['11.0.0.0', '12.255.255.255'] },
    ]);
    expect(addressIntervals([c('192.0.2.9', 32), c('192.0.2.1', 32)])).toEqual(['192.0.2.1', '192.0.2.9']);
  });

  it('cuts a long network name in the log prefix to 127 bytes with a hash', () => {
    expect(logPrefix('lab')).toBe('kvmnftd lab drop: ');
    const long = 'ä'.repeat(200);
    const p = logPrefix(long);
    expect(Buffer.byteLength(p)).toBeLessThanOrEqual(127);
    expect(p).toMatch(/^kvmnftd ä+\/[0-9a-f]{16} drop: $/);
    expect(logPrefix(`${long}x`)).not.toBe(p);
    expect(networkTag(long)).not.toBe(p);
  });

  it('refuses DEST:PROTO/PORT entries nft cannot hold in one set', () => {
    const problems = configProblems(
      { networks: { lab: { egress: ['10.0.0.0/8:tcp/80-90', '10.1.0.0/16:tcp/85-95', '10.2.0.0/16:tcp/80'] } } },
      'k',
    );
    expect(problems.map((p) => p.key)).toEqual(['networks.lab.egress[1]']);
    expect(problems[0]!.expected).toContain('overlaps "10.0.0.0/8:tcp/80-90" (egress[0])');
  });
});

describe('the bridge table (isolate_guests)', () => {
  const c = loadCase('policy-isolate');

  it('exists only while a network isolates, and remove deletes it', () => {
    const after = applyBatch(c.live, plan(c.inputs, c.config, c.live, c.facts).batch);
    expect(after.tables.get(tableKey('bridge', 'kvmnftd'))?.chains.has('kvmnftd_owner')).toBe(true);
    const lifted = configFromObject({}, 't.toml');
    const without = applyBatch(after, plan(c.inputs, lifted, after, c.facts).batch);
    expect(without.tables.has(tableKey('bridge', 'kvmnftd'))).toBe(false);
    expect(without.tables.has(tableKey('inet', 'kvmnftd'))).toBe(true);
    const again = applyBatch(without, plan(c.inputs, c.config, without, c.facts).batch);
    const removed = applyBatch(again, plan([], c.config, again).batch);
    expect(removed.tables.has(tableKey('bridge', 'kvmnftd'))).toBe(false);
  });

  it("leaves someone else's bridge table of that name alone, and says so", () => {
    const theirs = applyBatch(c.live, {
      nftables: [
        { add: { table: { family: 'bridge', name: 'kvmnftd' } } },
        { add: { chain: { family: 'bridge', table: 'kvmnftd', name: 'mine' } } },
      ],
    });
    const p = plan(c.inputs, c.config, theirs, c.facts);
    expect(JSON.stringify(p.batch)).not.toContain('"bridge"');
    expect(p.notes.map((n) => n.message)).toContainEqual(
      expect.stringContaining("table bridge kvmnftd exists and is not kvmnftd's"),
    );
    expect(plan([], c.config, theirs).batch.nftables.some((x) => JSON.stringify(x).includes('"bridge"'))).toBe(false);
  });
});

describe('isolate_guests: the bridge ports', () => {
  const config = configFromObject({ networks: { lab: { isolate_guests: true, log_drops: true } } }, 't.toml');
  const bridgeText = (ports: Record<string, string[]>): { rules: string[]; notes: string[] } => {
    const p = plan([NAT], config, emptyRuleset(), { bridgePorts: ports });
    return { rules: p.desired.bridge.map((r) => renderRule(r.expr, r.comment)), notes: p.notes.map((n) => n.message) };
  };

  it('each port of the bridge gets a drop of what comes in through it and of what goes out to it', () => {
    const { rules } = bridgeText({ virbr9: ['vnet1', 'vnet0'], virbr7: ['vnet5'] });
    const prefix = 'limit rate 5/second burst 10 packets log prefix "kvmnftd lab drop: " comment "kvmnftd net=lab"';
    expect(rules).toEqual([
      `iifname "vnet0" ${prefix}`,
      'iifname "vnet0" counter drop comment "kvmnftd net=lab"',
      `oifname "vnet0" ${prefix}`,
      'oifname "vnet0" counter drop comment "kvmnftd net=lab"',
      `iifname "vnet1" ${prefix}`,
      'iifname "vnet1" counter drop comment "kvmnftd net=lab"',
      `oifname "vnet1" ${prefix}`,
      'oifname "vnet1" counter drop comment "kvmnftd net=lab"',
    ]);
  });

  it('no port yet: no bridge table; a port whose name nft would read as a pattern is left out and reported', () => {
    expect(bridgeText({}).rules).toEqual([]);
    const { rules, notes } = bridgeText({ virbr9: ['vnet0', 'tap*'] });
    expect(rules.filter((r) => r.includes('tap'))).toEqual([]);
    expect(rules).toHaveLength(4);
    expect(notes).toContain(
      'network lab: networks.lab.isolate_guests: port "tap*" of bridge virbr9 is not isolated: nft cannot match ' +
        'that name exactly',
    );
  });

  it("a guest starting: its port's rules are added, every other rule of the table stays (handles, counters)", () => {
    const first = plan([NAT], config, emptyRuleset(), { bridgePorts: { virbr9: ['vnet0', 'vnet2'] } });
    const live = applyBatch(emptyRuleset(), first.batch);
    const next = plan([NAT], config, live, { bridgePorts: { virbr9: ['vnet0', 'vnet1', 'vnet2'] } });
    const verbs = next.batch.nftables.map((c) => Object.keys(c)[0]);
    expect(verbs.every((v) => v === 'add' || v === 'insert')).toBe(true);
    const texts = next.batch.nftables.map((c) => JSON.stringify(c));
    expect(texts).toHaveLength(4);
    expect(texts.every((t) => t.includes('"vnet1"'))).toBe(true);
    const after = applyBatch(live, next.batch);
    expect(plan([NAT], config, after, { bridgePorts: { virbr9: ['vnet0', 'vnet1', 'vnet2'] } }).batch.nftables).toEqual(
      [],
    );
  });
});
