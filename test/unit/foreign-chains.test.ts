// Docker's and ufw's drop-policy chains (issue 12), planned through the model
// of nft (batch-model.ts) on the golden hosts made from real iptables-nft:
// the owners table, the mark accept and its ownership, the marking chains,
// placement, duplicates, the plan without the foreign part, and the
// retry-then-degrade of sync.ts with the chain vanishing between read and
// commit. Real nft and iptables-nft: test/integration/foreign-chains.test.ts.
import { describe, expect, it } from 'vitest';
import { defaultConfig, type Config } from '../../src/config/config.js';
import { marking, markingChains } from '../../src/nft/accept-mark.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { dockerBridges, foreignTables, foreignTargets, presentTargets } from '../../src/nft/foreign-chains.js';
import type { Batch, RuleSpec } from '../../src/nft/json.js';
import { monitorLineReason, monitorScope, ownedOrWrittenTables } from '../../src/nft/monitor-scope.js';
import { NftError, type NftRunner } from '../../src/nft/nft-runner.js';
import {
  foreignDigest,
  isOurMarkAccept,
  markAcceptBit,
  markAcceptRule,
  markAcceptsIn,
} from '../../src/nft/ownership.js';
import { plan } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import { cloneRuleset, indexRuleset, ruleKey, tableKey, type LiveChain, type Ruleset } from '../../src/nft/ruleset.js';
import { applyWithRetry } from '../../src/nft/sync.js';
import { LIVE_LIBVIRT9, loadCase } from '../helpers/golden.js';

const docker = loadCase('foreign-docker');
const ufw = loadCase('foreign-ufw');
const nat = loadCase('nat-default').inputs;
const config = defaultConfig();
const withConfig = (filter: Partial<Config['filter']>): Config => ({
  ...config,
  filter: { ...config.filter, ...filter },
});

const chain = (r: Ruleset, family: string, table: string, name: string): LiveChain =>
  r.tables.get(tableKey(family, table))!.chains.get(name)!;
const dockerUser = (r: Ruleset): LiveChain => chain(r, 'ip', 'filter', 'DOCKER-USER');
const applied = (live: Ruleset, c: Config = config, inputs = nat): Ruleset =>
  applyBatch(live, plan(inputs, c, live).batch);
const insertRule = (family: 'ip' | 'ip6', table: string, name: string, rule: RuleSpec, first = true): Batch => ({
  nftables: [
    first
      ? { insert: { rule: { family, table, chain: name, ...rule } } }
      : { add: { rule: { family, table, chain: name, ...rule } } },
  ],
});
const DROP_FROM_TEST_NET: RuleSpec = {
  expr: [
    { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '192.0.2.7' } },
    { drop: null },
  ],
};

describe('the mark accept', () => {
  it('is exactly `meta mark & BIT == BIT accept` with the comment kvmnftd, no counter', () => {
    expect(markAcceptRule(0x2000)).toEqual({
      expr: [{ match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, 8192] }, right: 8192 } }, { accept: null }],
      comment: 'kvmnftd',
    });
    expect(renderBatch(insertRule('ip', 'filter', 'DOCKER-USER', markAcceptRule(0x2000)).nftables)).toBe(
      'insert rule ip filter DOCKER-USER meta mark & 0x00002000 == 0x00002000 accept comment "kvmnftd"\n',
    );
  });

  it('is recognised with any single bit, and nothing else is', () => {
    expect(markAcceptBit(markAcceptRule(0x2000))).toBe(0x2000);
    expect(markAcceptBit(markAcceptRule(0x8000_0000))).toBe(0x8000_0000);
    const r = markAcceptRule(0x2000);
    expect(isOurMarkAccept({ ...r, comment: 'admin' })).toBe(false);
    expect(isOurMarkAccept({ expr: r.expr })).toBe(false);
    expect(isOurMarkAccept({ ...r, expr: [r.expr[0]!, { counter: null }, { accept: null }] })).toBe(false);
    expect(isOurMarkAccept({ ...r, expr: [r.expr[0]!, { drop: null }] })).toBe(false);
    const twoBits = { op: '==', left: { '&': [{ meta: { key: 'mark' } }, 0x3000] }, right: 0x3000 };
    expect(isOurMarkAccept({ ...r, expr: [{ match: twoBits }, { accept: null }] })).toBe(false);
  });
});

describe('the owners table', () => {
  it('lists Docker and ufw per family, then the extras, each chain once', () => {
    const names = (c: Config): string[] => foreignTargets(c).map((t) => `${t.owner} ${t.family} ${t.table} ${t.chain}`);
    expect(names(config)).toEqual([
      'docker ip filter DOCKER-USER',
      'docker ip6 filter DOCKER-USER',
      'ufw ip filter ufw-before-forward',
      'ufw ip filter ufw-before-input',
      'ufw ip6 filter ufw6-before-forward',
      'ufw ip6 filter ufw6-before-input',
    ]);
    const extra = withConfig({ foreignChainsExtra: ['ip filter DOCKER-USER', 'inet other  forward'] });
    expect(names(extra).slice(6)).toEqual(['admin-extra inet other forward']);
    expect(foreignTargets(extra).every((t) => t.placement === 'anywhere')).toBe(true);
  });

  it('finds the chains that exist: Docker ip only (no IPv6 in Docker 20.10 by default), ufw in both families', () => {
    const present = (live: Ruleset): string[] => presentTargets(live, config).map((t) => `${t.family} ${t.chain}`);
    expect(present(docker.live)).toEqual(['ip DOCKER-USER']);
    expect(present(ufw.live)).toEqual([
      'ip ufw-before-forward',
      'ip ufw-before-input',
      'ip6 ufw6-before-forward',
      'ip6 ufw6-before-input',
    ]);
    expect(present(LIVE_LIBVIRT9)).toEqual([]);
  });

  it("reads Docker's bridges from its -o BRIDGE -j DOCKER rules, in FORWARD or DOCKER-FORWARD", () => {
    expect(dockerBridges(docker.live)).toEqual(['docker0']);
    expect(dockerBridges(ufw.live)).toEqual([]);
    // Docker 28 jumps to DOCKER from DOCKER-BRIDGE (reached through DOCKER-FORWARD), one rule per bridge.
    const jumpOut = (oif: unknown) => ({
      rule: {
        family: 'ip',
        table: 'filter',
        chain: 'DOCKER-BRIDGE',
        handle: 9,
        expr: [{ match: { op: '==', left: { meta: { key: 'oifname' } }, right: oif } }, { jump: { target: 'DOCKER' } }],
      },
    });
    const newer = indexRuleset({
      nftables: [
        { table: { family: 'ip', name: 'filter', handle: 1 } },
        { chain: { family: 'ip', table: 'filter', name: 'DOCKER-BRIDGE', handle: 2 } },
        jumpOut('docker0'),
        jumpOut('br-5f1d2a3b4c5d'),
        jumpOut({ set: ['br-a', 'docker0'] }),
      ],
    });
    expect(dockerBridges(newer)).toEqual(['br-5f1d2a3b4c5d', 'br-a', 'docker0']);
  });

  it('keeps docker0 out of the marking while dockerd restarts (its -o docker0 -j DOCKER briefly gone)', () => {
    const restarting = cloneRuleset(docker.live);
    for (const c of restarting.tables.get(tableKey('ip', 'filter'))!.chains.values())
      c.rules = c.rules.filter((r) => !JSON.stringify(r.expr).includes('"target":"DOCKER"'));
    expect(dockerBridges(restarting)).toEqual(['docker0']);
    expect(plan(nat, config, restarting).batch).toEqual(plan(nat, config, docker.live).batch);
  });

  it('puts the foreign tables into the monitor scope with foreign_chains = "accept" only', () => {
    expect(ownedOrWrittenTables(config)).toEqual([
      'inet kvmnftd',
      'bridge kvmnftd',
      'inet filter',
      'ip filter',
      'ip6 filter',
    ]);
    expect(foreignTables(withConfig({ foreignChainsExtra: ['inet other forward'] }))).toContain('inet other');
    expect(ownedOrWrittenTables(withConfig({ foreignChains: 'report' }))).toEqual([
      'inet kvmnftd',
      'bridge kvmnftd',
      'inet filter',
    ]);
  });

  it('starts a pass when ufw reload or Docker takes the mark accept out, or creates DOCKER-USER late', () => {
    const scope = monitorScope(docker.live, ownedOrWrittenTables(config));
    const event = (op: string, kind: string, body: object): string =>
      JSON.stringify({ [op]: { [kind]: { family: 'ip', table: 'filter', ...body } } });
    expect(monitorLineReason(event('delete', 'rule', { chain: 'ufw-before-forward', handle: 7 }), scope)).toBe(
      'rule in ip filter changed',
    );
    expect(monitorLineReason(event('add', 'chain', { name: 'DOCKER-USER', handle: 9 }), scope)).toBe(
      'chain ip filter DOCKER-USER changed',
    );
    const report = monitorScope(docker.live, ownedOrWrittenTables(withConfig({ foreignChains: 'report' })));
    expect(monitorLineReason(event('add', 'chain', { name: 'DOCKER-USER', handle: 9 }), report)).toBeUndefined();
  });
});

describe('the marking chains', () => {
  it('turn a final accept into "set the bit, accept", and leave a return alone', () => {
    const accept: RuleSpec = { expr: [{ counter: null }, { accept: null }], comment: 'x' };
    expect(marking(accept, 0x2000)[0]!.expr).toEqual([
      { counter: null },
      { mangle: { key: { meta: { key: 'mark' } }, value: { '|': [{ meta: { key: 'mark' } }, 0x2000] } } },
      { accept: null },
    ]);
    const ret: RuleSpec = { expr: [{ return: null }], comment: 'x' };
    expect(marking(ret, 0x2000)).toEqual([ret]);
  });

  it('turn a policy drop into a return, and leave its log rule out (logged once, where it is dropped)', () => {
    const drop: RuleSpec = { expr: [{ counter: null }, { drop: null }], comment: 'x' };
    expect(marking(drop, 0x2000)).toEqual([{ expr: [{ counter: null }, { return: null }], comment: 'x' }]);
    const log: RuleSpec = { expr: [{ log: { prefix: 'p' } }], comment: 'x' };
    expect(marking(log, 0x2000)).toEqual([]);
  });

  it('mark what kvmnftd_forward accepts, after the cleared bit, the invalid guard and Docker bridges', () => {
    const p = plan(nat, config, docker.live);
    const forward = p.desired.marking.find((c) => c.name === 'mark_forward')!;
    const strip = (rules: RuleSpec[]): string[] =>
      rules.map((r) => ruleKey({ ...r, expr: r.expr.filter((e) => !('mangle' in e)) }));
    // Clear, guard, Docker's bridges, then kvmnftd_forward's rules one for one.
    expect(
      renderBatch(
        forward.rules
          .slice(0, 3)
          .map((r) => ({ add: { rule: { family: 'inet', table: 'kvmnftd', chain: 'mark_forward', ...r } } })),
      ),
    ).toBe(
      [
        'add rule inet kvmnftd mark_forward meta mark set meta mark & 0xffffdfff comment "kvmnftd"',
        'add rule inet kvmnftd mark_forward ct state invalid return comment "kvmnftd"',
        'add rule inet kvmnftd mark_forward oifname "docker0" return comment "kvmnftd"',
        '',
      ].join('\n'),
    );
    expect(strip(forward.rules.slice(3))).toEqual(strip(p.desired.forward.slice(1)));
    const setsBit = forward.rules.slice(3).filter((r) => r.expr.some((e) => 'mangle' in e));
    expect(setsBit.length).toBe(p.desired.forward.filter((r) => r.expr.some((e) => 'accept' in e)).length);
    expect(markingChains([], [], config, ['docker0'])).toEqual([]);
  });

  it('exist only with a handled chain present: a quiet host plans none', () => {
    expect(plan(nat, config, LIVE_LIBVIRT9).desired.marking).toEqual([]);
    expect(plan(nat, withConfig({ foreignChains: 'report' }), docker.live).desired.marking).toEqual([]);
    expect(plan([], config, docker.live).batch.nftables).toEqual([]);
  });
});

describe('planning the mark accepts', () => {
  it('inserts one at the top, and never moves it when an admin puts a drop above it', () => {
    let live = applied(docker.live);
    expect(isOurMarkAccept(dockerUser(live).rules[0]!)).toBe(true);
    live = applyBatch(live, insertRule('ip', 'filter', 'DOCKER-USER', DROP_FROM_TEST_NET));
    expect(isOurMarkAccept(dockerUser(live).rules[1]!)).toBe(true);
    expect(plan(nat, config, live).batch.nftables).toEqual([]);
  });

  it('keeps one of duplicates (the topmost), and deletes a mark accept of another bit', () => {
    let live = applied(docker.live);
    const keep = dockerUser(live).rules[0]!;
    live = applyBatch(live, insertRule('ip', 'filter', 'DOCKER-USER', markAcceptRule(0x2000), false));
    live = applyBatch(live, insertRule('ip', 'filter', 'DOCKER-USER', markAcceptRule(0x10), false));
    expect(dockerUser(live).rules.filter(isOurMarkAccept)).toHaveLength(3);
    const fix = plan(nat, config, live).batch.nftables;
    expect(fix.every((c) => 'delete' in c && 'rule' in c.delete)).toBe(true);
    live = applyBatch(live, { nftables: fix });
    expect(dockerUser(live).rules.filter(isOurMarkAccept)).toEqual([keep]);
    expect(plan(nat, config, live).batch.nftables).toEqual([]);
  });

  it('moves to a new accept_mark: marking chains refilled, the old accept replaced, in one batch', () => {
    const live = applied(docker.live);
    const moved = withConfig({ acceptMark: 0x40_0000 });
    const after = applied(live, moved);
    expect(dockerUser(after).rules.filter(isOurMarkAccept).map(markAcceptBit)).toEqual([0x40_0000]);
    expect(plan(nat, moved, after).batch.nftables).toEqual([]);
  });

  it('takes every mark accept and marking chain out when no network is left, and nothing else', () => {
    const live = applied(applied(ufw.live, config, ufw.inputs));
    expect(markAcceptsIn(live, config)).toHaveLength(4);
    const removed = applied(live, config, []);
    expect(markAcceptsIn(removed, config)).toEqual([]);
    expect(removed).toEqual(ufw.live);
  });

  it('without the foreign part, adds none and leaves the ones in place as they are', () => {
    expect(plan(nat, config, docker.live, { foreign: false }).batch).toEqual(
      plan(nat, withConfig({ foreignChains: 'report' }), docker.live).batch,
    );
    const live = applied(docker.live);
    // A second network comes up while the foreign part cannot be applied: its rules go in, the marks stay.
    const two = loadCase('two-networks').inputs;
    const partial = applyBatch(live, plan(two, config, live, { foreign: false }).batch);
    expect(partial.tables.get(tableKey('inet', 'kvmnftd'))!.chains.get('mark_forward')).toEqual(
      live.tables.get(tableKey('inet', 'kvmnftd'))!.chains.get('mark_forward'),
    );
    expect(dockerUser(partial)).toEqual(dockerUser(live));
    // Nor are they removed with the last network: the next whole plan does that.
    expect(applyBatch(live, plan([], config, live, { foreign: false }).batch).tables.has('inet kvmnftd')).toBe(true);
    expect(plan(two, config, partial).batch.nftables.length).toBeGreaterThan(0);
  });

  it('writes nothing when the own table is not kvmnftd’s (nat.table taken)', () => {
    const taken = applyBatch(docker.live, {
      nftables: [
        { add: { table: { family: 'inet', name: 'kvmnftd' } } },
        { add: { chain: { family: 'inet', table: 'kvmnftd', name: 'someone' } } },
      ],
    });
    const p = plan(nat, config, taken);
    expect(p.foreign.handled).toEqual([]);
    expect(p.batch.nftables.some((c) => JSON.stringify(c).includes('DOCKER-USER'))).toBe(false);
  });
});

describe('retry once, then apply without the foreign part (sync.ts)', () => {
  /** An nft over the model whose DOCKER-USER vanishes between every read and commit, `vanishing` times. */
  function flappingDocker(start: Ruleset, vanishing: number, comesBack: boolean) {
    const nft: NftRunner & { ruleset: Ruleset; applies: number; failures: number } = {
      ruleset: start,
      applies: 0,
      failures: 0,
      readRuleset() {
        return Promise.resolve(this.ruleset);
      },
      apply(batch) {
        this.applies++;
        const before = this.ruleset;
        if (this.failures < vanishing) this.ruleset = deleteChain(this.ruleset, 'DOCKER-USER');
        try {
          this.ruleset = applyBatch(this.ruleset, batch);
          return Promise.resolve();
        } catch (err) {
          this.failures++;
          if (comesBack) this.ruleset = before; // Docker re-creates it
          return Promise.reject(new NftError(`nft failed applying the batch: ${(err as Error).message}`, ''));
        }
      },
    };
    return nft;
  }

  it('a chain gone for good: the retry plans from a fresh read and applies whole', async () => {
    const nft = flappingDocker(docker.live, 1, false);
    const first = plan(nat, config, docker.live);
    const out = await applyWithRetry(nat, config, nft, { live: docker.live, plan: first });
    expect(out.foreignDegraded).toBeUndefined();
    expect(nft.applies).toBe(2);
    expect(plan(nat, config, nft.ruleset).batch.nftables).toEqual([]);
  });

  it('a chain that keeps vanishing: degraded, the networks’ rules in, the next pass applies whole', async () => {
    const nft = flappingDocker(docker.live, 2, true);
    const first = plan(nat, config, docker.live);
    const out = await applyWithRetry(nat, config, nft, { live: docker.live, plan: first });
    expect(nft.applies).toBe(3);
    expect(out.foreignDegraded).toMatch(/^applied without the mark accepts in ip filter DOCKER-USER: nft failed/);
    expect(out.plan.foreign.planned).toBe(false);
    expect(chain(nft.ruleset, 'inet', 'filter', 'kvmnftd_forward').rules.length).toBeGreaterThan(1);
    expect(nft.ruleset.tables.get(tableKey('inet', 'kvmnftd'))!.chains.has('mark_forward')).toBe(false);
    // The next pass: Docker stays put; the whole plan goes in and converges.
    const next = plan(nat, config, nft.ruleset);
    expect(next.foreign.handled.map((h) => h.chain)).toEqual(['DOCKER-USER']);
    const again = await applyWithRetry(nat, config, nft, { live: nft.ruleset, plan: next });
    expect(again.foreignDegraded).toBeUndefined();
    expect(plan(nat, config, nft.ruleset).batch.nftables).toEqual([]);
  });

  it('a failure the foreign part does not explain stands', async () => {
    const broken: NftRunner = {
      readRuleset: () => Promise.resolve(LIVE_LIBVIRT9),
      apply: () => Promise.reject(new NftError('nft failed applying the batch: Operation not permitted', '')),
    };
    const first = plan(nat, config, LIVE_LIBVIRT9);
    await expect(applyWithRetry(nat, config, broken, { live: LIVE_LIBVIRT9, plan: first })).rejects.toThrow(
      /Operation not permitted/,
    );
  });
});

function deleteChain(live: Ruleset, name: string): Ruleset {
  const copy = cloneRuleset(live);
  const filter = copy.tables.get(tableKey('ip', 'filter'))!;
  for (const c of filter.chains.values())
    c.rules = c.rules.filter((r) => !JSON.stringify(r.expr).includes(`"${name}"`));
  filter.chains.delete(name);
  return copy;
}

describe("foreignDigest: what is not kvmnftd's, an input of the convergence guard", () => {
  const both = loadCase('foreign-both');
  it("is not changed by kvmnftd's own transactions (apply, then remove)", () => {
    const before = foreignDigest(both.live, config);
    const after = applied(both.live, config, both.inputs);
    expect(markAcceptsIn(after, config).length).toBeGreaterThan(0);
    expect(foreignDigest(after, config)).toBe(before);
    expect(foreignDigest(applied(after, config, []), config)).toBe(before);
  });
  it("changes when someone else's rules change: ufw rewriting a chain, Docker's rules going", () => {
    const after = applied(both.live, config, both.inputs);
    const digest = foreignDigest(after, config);
    const ufwFlushed = cloneRuleset(after);
    chain(ufwFlushed, 'ip', 'filter', 'ufw-before-forward').rules = [];
    expect(foreignDigest(ufwFlushed, config)).not.toBe(digest);
    const dockerChanged = cloneRuleset(after);
    dockerUser(dockerChanged).rules.push({ handle: 999, expr: [{ drop: null }] });
    expect(foreignDigest(dockerChanged, config)).not.toBe(digest);
  });
  it('changes when ufw flushes a chain and refills it with the same rules, only without the mark accept', () => {
    // `ufw reload` does this chain by chain; the repair after it is not an echo of kvmnftd's own commit.
    const after = applied(both.live, config, both.inputs);
    const digest = foreignDigest(after, config);
    const refilled = cloneRuleset(after);
    const forward = chain(refilled, 'ip', 'filter', 'ufw-before-forward');
    let next =
      Math.max(
        ...[...refilled.tables.values()].flatMap((t) =>
          [...t.chains.values()].flatMap((c) => c.rules.map((r) => r.handle)),
        ),
      ) + 1;
    forward.rules = forward.rules.filter((r) => r.comment !== 'kvmnftd').map((r) => ({ ...r, handle: next++ }));
    expect(foreignDigest(refilled, config)).not.toBe(digest);
    expect(foreignDigest(applied(refilled, config, both.inputs), config)).toBe(foreignDigest(refilled, config));
  });
});
