// Hostile input, property-based (fast-check): arbitrary and adversarial
// network XML and configuration documents never make the parser, the config
// validator, the planner or the text renderer throw; every batch the planner
// produces touches only what kvmnftd owns (checked against generated live
// rulesets: extra admin rules and chains, stray tagged jumps, foreign tables,
// foreign chains in our own table); applying a batch (src/nft/batch-model.ts,
// which throws where nft would) converges in one step.
//
// Seeded: the seed is printed; FC_SEED=<seed> re-runs the same cases.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseToml } from 'smol-toml';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, configFromObject, defaultConfig, type Config } from '../../src/config/config.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { isSafeIfname } from '../../src/net/ifname.js';
import { ipFamily, reservedHit } from '../../src/net/ip.js';
import { plan } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import type { Expr } from '../../src/nft/json.js';
import { indexRuleset, type Ruleset } from '../../src/nft/ruleset.js';
import {
  foreignState,
  fuzzSeed,
  hostileConfigDocArb,
  planCaseArb,
  planInputs,
  mutatedXml,
  netSpecArb,
  networksArb,
  networkXml,
  ownershipViolations,
  parseAll,
  validConfigDocArb,
  xmlishString,
} from '../helpers/arbitraries.js';
import { LIVE_LIBVIRT9 } from '../helpers/golden.js';
import { applyBatch } from '../../src/nft/batch-model.js';

const seed = fuzzSeed();
let cases = 0;
const started = Date.now();
const params = (numRuns: number): fc.Parameters<unknown> => ({ seed, numRuns, endOnFailure: false });

afterAll(() => {
  console.log(
    `fuzz: ${cases} cases in ${((Date.now() - started) / 1000).toFixed(1)} s (seed ${seed}; re-run with FC_SEED=${seed})`,
  );
});

/** What a successful parse guarantees to everything downstream. */
function checkParse(result: NetworkParse): void {
  expect(['ok', 'ignored', 'invalid']).toContain(result.kind);
  if (result.kind !== 'ok') {
    expect(typeof result.name).toBe('string');
    return;
  }
  const n = result.network;
  // No control, bidi-override or separator characters, space, quote, backslash or slash.
  expect(n.name).toMatch(/^[^\p{Cc}\u202a-\u202e\u2066-\u2069\u2028\u2029 "'\\/]{1,200}$/u);
  expect(isSafeIfname(n.bridge)).toBe(true);
  if (n.forwardDev !== undefined) expect(isSafeIfname(n.forwardDev)).toBe(true);
  expect(['nat', 'route', 'open', 'isolated']).toContain(n.mode);
  for (const ip of n.ips) {
    expect(ipFamily(ip.address)).toBe(ip.cidr.family);
    // Never wider than /8 (IPv4) or /16 (IPv6), never in a reserved block.
    expect(ip.cidr.prefix).toBeGreaterThanOrEqual(ip.cidr.family === 4 ? 8 : 16);
    expect(reservedHit(ip.address, ip.cidr.prefix)).toBeUndefined();
    expect(ip.cidr.prefix).toBeLessThanOrEqual(ip.cidr.family === 4 ? 32 : 128);
    for (const r of ip.dhcpRanges) {
      expect(ipFamily(r.start)).toBe(ip.cidr.family);
      expect(ipFamily(r.end)).toBe(ip.cidr.family);
    }
  }
  if (n.nat) {
    expect(n.nat.ports.start).toBeGreaterThanOrEqual(1);
    expect(n.nat.ports.end).toBeLessThanOrEqual(65535);
    expect(n.nat.ports.start).toBeLessThanOrEqual(n.nat.ports.end);
    if (n.nat.address) expect(ipFamily(n.nat.address.start)).toBe(4);
  }
}

/** What an accepted configuration guarantees. */
function checkConfig(c: Config): void {
  const NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
  expect(['inet', 'ip', 'ip6']).toContain(c.filter.family);
  expect(['first', 'last', 'none']).toContain(c.filter.jump);
  for (const n of [c.filter.table, c.filter.inputChain, c.filter.forwardChain, c.nat.table]) expect(n).toMatch(NAME);
  expect(Number.isInteger(c.nat.priority) && c.nat.priority >= -199 && c.nat.priority <= 400).toBe(true);
  expect(
    Array.isArray(c.filter.acceptOpenNetworks) && c.filter.acceptOpenNetworks.every((x) => typeof x === 'string'),
  ).toBe(true);
  expect(typeof c.forwarding.manageIpv4).toBe('boolean');
  expect(
    Number.isInteger(c.daemon.resyncInterval) && c.daemon.resyncInterval >= 0 && c.daemon.resyncInterval <= 86_400,
  ).toBe(true);
  expect(typeof c.daemon.restoreLibvirtRules).toBe('boolean');
  expect(c.filter.table).not.toBe(c.nat.table);
  expect(c.filter.inputChain).not.toBe(c.filter.forwardChain);
}

/**
 * The planner properties for one case: no exception from plan/renderBatch,
 * ownership of every command, the foreign part of the ruleset unchanged,
 * convergence, and the same again for removing everything.
 */
export function checkPlan(inputs: NetworkParse[], config: Config, live: Ruleset): void {
  const first = plan(inputs, config, live);
  renderBatch(first.batch.nftables);
  expect(ownershipViolations(first.batch, config, live)).toEqual([]);
  const after = applyBatch(live, first.batch);
  expect(foreignState(after, config)).toEqual(foreignState(live, config));
  const second = plan(inputs, config, after);
  expect(second.batch.nftables).toEqual([]);

  const removal = plan([], config, after);
  renderBatch(removal.batch.nftables);
  expect(ownershipViolations(removal.batch, config, after)).toEqual([]);
  const removed = applyBatch(after, removal.batch);
  expect(foreignState(removed, config)).toEqual(foreignState(live, config));
  expect(plan([], config, removed).batch.nftables).toEqual([]);
}

describe('hostile network XML', () => {
  const xmlCases: Array<[string, fc.Arbitrary<string>, number]> = [
    ['arbitrary strings', xmlishString, 2500],
    ['libvirt-shaped XML with hostile values, and what it accepts is safe', netSpecArb.map(networkXml), 3000],
    ['mutated network XML', mutatedXml, 1000],
  ];
  it.each(xmlCases)('parseNetworkXml never throws on %s', (_what, xmlArb, runs) => {
    fc.assert(
      fc.property(xmlArb, (xml) => {
        cases++;
        checkParse(parseNetworkXml(xml, 'fuzz'));
      }),
      params(runs),
    );
  });
});

describe('hostile configuration documents', () => {
  it('configFromObject returns a valid config or throws a ConfigError, nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(hostileConfigDocArb, validConfigDocArb), (doc) => {
        cases++;
        let config: Config;
        try {
          config = configFromObject(doc, 'fuzz.toml');
        } catch (err) {
          if (!(err instanceof ConfigError))
            throw new Error(`configFromObject threw ${String(err)} instead of a ConfigError`, { cause: err });
          return;
        }
        checkConfig(config);
      }),
      params(2000),
    );
  });
});

describe('planner on hostile input', () => {
  it('against the captured libvirt 9 ruleset: no exception, owned objects only, converges', () => {
    fc.assert(
      fc.property(networksArb, validConfigDocArb, (specs, doc) => {
        cases++;
        checkPlan(parseAll(specs), configFromObject(doc, 'fuzz.toml'), LIVE_LIBVIRT9);
      }),
      params(1000),
    );
  });

  it('against random live rulesets: no exception, owned objects only, converges', () => {
    fc.assert(
      fc.property(planCaseArb, (c) => {
        cases++;
        const { inputs, config, live } = planInputs(c);
        checkPlan(inputs, config, indexRuleset(live));
      }),
      params(3000),
    );
  });
});

// Minimal counterexamples of bugs the properties above found (shrunk by
// fast-check, then reduced by hand). Each fails until src/ is fixed.
describe('regressions found by fuzzing', () => {
  const config = defaultConfig();
  const NAT_XML = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'default.xml'), 'utf8');
  const applied = (inputs: NetworkParse[], c: Config = config): Ruleset =>
    applyBatch(LIVE_LIBVIRT9, plan(inputs, c, LIVE_LIBVIRT9).batch);
  const addRule = (live: Ruleset, chain: string, expr: Expr[], comment?: string): Ruleset =>
    applyBatch(live, {
      nftables: [
        {
          add: {
            rule: { family: 'inet', table: 'filter', chain, expr, ...(comment === undefined ? {} : { comment }) },
          },
        },
      ],
    });
  const addChain = (live: Ruleset, table: string, name: string): Ruleset =>
    applyBatch(live, { nftables: [{ add: { chain: { family: 'inet', table, name } } }] });

  it("a retained network's tagged jump into the marker chain: not a NAT chain to keep (FC_SEED=1112784623)", () => {
    const invalid = parseNetworkXml('<network><name>x</name><forward mode="nat"/></network>', 'x.xml');
    expect(invalid.kind).toBe('invalid');
    const live = applyBatch(applied([]), {
      nftables: [
        { add: { table: { family: 'inet', name: 'kvmnftd' } } },
        { add: { chain: { family: 'inet', table: 'kvmnftd', name: 'kvmnftd_owner' } } },
        {
          add: {
            chain: {
              family: 'inet',
              table: 'kvmnftd',
              name: 'postrouting',
              type: 'nat',
              hook: 'postrouting',
              prio: 0,
              policy: 'accept',
            },
          },
        },
        {
          add: {
            rule: {
              family: 'inet',
              table: 'kvmnftd',
              chain: 'postrouting',
              expr: [{ jump: { target: 'kvmnftd_owner' } }],
              comment: 'kvmnftd net=x',
            },
          },
        },
        {
          add: {
            rule: {
              family: 'inet',
              table: 'kvmnftd',
              chain: 'kvmnftd_owner',
              expr: [{ accept: null }],
              comment: 'kvmnftd net=x',
            },
          },
        },
      ],
    });
    checkPlan([invalid], config, live);
  });

  it('configFromObject: a key that exists on Object.prototype throws a ConfigError, not a TypeError', () => {
    // smol-toml returns these as own keys of null-prototype objects; SCHEMA is a plain object.
    for (const toml of ['[filter]\ntoString = 1\n', '[constructor]\nname = 1\n', '[nat]\nhasOwnProperty = "x"\n']) {
      expect(() => configFromObject(parseToml(toml) as Record<string, unknown>, 'k.toml'), toml).toThrow(ConfigError);
    }
  });

  it('configFromObject: a bigint inside a wrong-typed value throws a ConfigError, not a TypeError', () => {
    expect(() => configFromObject({ libvirt_uri: [0n] }, 'k.toml')).toThrow(ConfigError);
  });

  it('parseNetworkXml: netmask 0.0.0.0 is refused like prefix 0 (a /0 "subnet" matches every address)', () => {
    const xml = `<network><name>z</name><forward mode='route'/><bridge name='virbr9'/><ip address='10.0.0.1' netmask='0.0.0.0'/></network>`;
    expect(parseNetworkXml(xml).kind).toBe('invalid');
  });

  it('input_chain = forward_chain (it could never converge) is a config error naming the key', () => {
    expect(() => configFromObject({ filter: { forward_chain: 'input' } }, 'k.toml')).toThrow(
      /filter\.forward_chain: must differ from filter\.input_chain/,
    );
  });

  it('a "kvmnftd" jump to kvmnftd_forward from the input chain blocks removal (nft: chain busy)', () => {
    const live = addRule(
      applied([parseNetworkXml(NAT_XML)]),
      'input',
      [{ jump: { target: 'kvmnftd_forward' } }],
      'kvmnftd',
    );
    const withoutInputChain = applyBatch(live, {
      nftables: [{ flush: { chain: { family: 'inet', table: 'filter', name: 'kvmnftd_input' } } }],
    });
    const noInput = applyBatch(withoutInputChain, {
      nftables: [
        ...withoutInputChain.tables
          .get('inet filter')!
          .chains.get('input')!
          .rules.filter((r) => JSON.stringify(r.expr).includes('"kvmnftd_input"'))
          .map((r) => ({
            delete: { rule: { family: 'inet' as const, table: 'filter', chain: 'input', handle: r.handle } },
          })),
        { delete: { chain: { family: 'inet', table: 'filter', name: 'kvmnftd_input' } } },
      ],
    });
    expect(() => applyBatch(noInput, plan([], config, noInput).batch)).not.toThrow();
  });

  it("an admin's own (untagged) jump to kvmnftd_forward blocks removal forever (nft: chain busy)", () => {
    const live = addRule(applied([parseNetworkXml(NAT_XML)]), 'forward', [{ jump: { target: 'kvmnftd_forward' } }]);
    expect(() => applyBatch(live, plan([], config, live).batch)).not.toThrow();
  });

  it('deletes an admin jump commented "kvmnftd net=..." although only comment "kvmnftd" marks a jump as ours', () => {
    let live = addChain(applied([parseNetworkXml(NAT_XML)]), 'filter', 'admin_vm');
    live = addRule(live, 'input', [{ jump: { target: 'admin_vm' } }], 'kvmnftd net=default');
    expect(ownershipViolations(plan([parseNetworkXml(NAT_XML)], config, live).batch, config, live)).toEqual([]);
  });

  it('a stray "kvmnftd" jump to a foreign chain: "left alone" in the first plan, deleted in the second (no one-step convergence)', () => {
    let live = addChain(LIVE_LIBVIRT9, 'filter', 'admin_vm');
    live = addRule(live, 'input', [{ jump: { target: 'admin_vm' } }], 'kvmnftd');
    const inputs = [parseNetworkXml(NAT_XML)];
    const after = applyBatch(live, plan(inputs, config, live).batch);
    expect(plan(inputs, config, after).batch.nftables).toEqual([]);
  });

  it('re-creating "postrouting" in its own table while a foreign chain there jumps to it (nft: chain busy)', () => {
    const live = indexRuleset({
      nftables: [
        { table: { family: 'inet', name: 'kvmnftd', handle: 1 } },
        { chain: { family: 'inet', table: 'kvmnftd', name: 'postrouting', handle: 1 } },
        {
          chain: {
            family: 'inet',
            table: 'kvmnftd',
            name: 'other',
            handle: 2,
            type: 'filter',
            hook: 'input',
            prio: 0,
            policy: 'accept',
          },
        },
        {
          rule: {
            family: 'inet',
            table: 'kvmnftd',
            chain: 'other',
            handle: 3,
            expr: [{ jump: { target: 'postrouting' } }],
          },
        },
      ],
    });
    expect(() => applyBatch(live, plan([parseNetworkXml(NAT_XML)], config, live).batch)).not.toThrow();
  });

  it("renderBatch throws on an invalid network's kept rules when one has a statement the renderer does not know", () => {
    const live = addRule(applied([parseNetworkXml(NAT_XML)]), 'kvmnftd_input', [{ drop: null }], 'kvmnftd net=default');
    const broken = parseNetworkXml(NAT_XML.replace("name='virbr0'", "name='v*'"));
    const other = parseNetworkXml(
      `<network><name>routed</name><forward mode='route'/><bridge name='virbr1'/><ip address='10.1.0.1' prefix='24'/></network>`,
    );
    const result = plan([broken, other], config, live);
    expect(() => renderBatch(result.batch.nftables)).not.toThrow();
  });
});
