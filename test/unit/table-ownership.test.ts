// Tables that are not kvmnftd's are never adopted (issue 11): the own table
// carries a marker chain; an unmarked table of that name is left alone unless
// it has exactly the 0.1.0 layout, which is adopted and marked in one batch.
// Also: filter.jump = "none" never adds or deletes a jump, and 0.1.0's tags of
// long network names are replaced in one transaction.
import { describe, expect, it } from 'vitest';
import { configFromObject, defaultConfig } from '../../src/config/config.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import type { Batch } from '../../src/nft/json.js';
import { legacyNetworkTags, networkTag, OWNER_MARKER_CHAIN, ownTableClaim } from '../../src/nft/ownership.js';
import { plan } from '../../src/nft/plan.js';
import { indexRuleset, tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { LIVE_LIBVIRT9 } from '../helpers/golden.js';

const xml = (name: string, bridge = 'virbr0', third = 122): NetworkParse =>
  parseNetworkXml(
    `<network><name>${name}</name><forward mode='nat'/><bridge name='${bridge}'/>` +
      `<ip address='192.168.${third}.1' netmask='255.255.255.0'/></network>`,
  );
const config = defaultConfig();
const chainsOf = (r: Ruleset, table = 'kvmnftd'): string[] =>
  [...(r.tables.get(tableKey('inet', table))?.chains.keys() ?? [])].sort();

/** `nft -j` items of a table, as an admin's ruleset file would create them. */
function withTable(live: Ruleset, name: string, extra: Array<Record<string, unknown>>): Ruleset {
  const add: Batch = {
    nftables: [
      { add: { table: { family: 'inet', name } } },
      ...extra.map((e) => ({ add: e }) as Batch['nftables'][number]),
    ],
  };
  return applyBatch(live, add);
}

describe('own table ownership', () => {
  it('marks the table it creates', () => {
    const after = applyBatch(LIVE_LIBVIRT9, plan([xml('default')], config, LIVE_LIBVIRT9).batch);
    expect(chainsOf(after)).toContain(OWNER_MARKER_CHAIN);
    expect(ownTableClaim(after, config)).toEqual({ kind: 'ours' });
  });

  it('refuses an admin table of the same name: no change to it, not even on remove', () => {
    const cfg = configFromObject({ nat: { table: 'nat' } }, 'test.toml');
    const live = withTable(LIVE_LIBVIRT9, 'nat', [
      { chain: { family: 'inet', table: 'nat', name: 'prerouting', type: 'nat', hook: 'prerouting', prio: -100 } },
      { chain: { family: 'inet', table: 'nat', name: 'postrouting', type: 'nat', hook: 'postrouting', prio: 100 } },
    ]);
    expect(ownTableClaim(live, cfg)).toMatchObject({ kind: 'foreign' });
    const result = plan([xml('default')], cfg, live);
    expect(result.notes.find((n) => n.level === 'error')?.message).toMatch(
      /table inet nat exists and is not kvmnftd's \(it has a chain prerouting kvmnftd does not write\)/,
    );
    const touches = result.batch.nftables.filter((c) => JSON.stringify(c).includes('"table":"nat"'));
    expect(touches).toEqual([]);
    // remove (no networks) and the daemon with no NAT network: the table stays.
    expect(plan([], cfg, live).batch.nftables.filter((c) => JSON.stringify(c).includes('"nat"'))).toEqual([]);
  });

  it('refuses an unmarked table with kvmnftd-looking chains but other objects or untagged rules', () => {
    // The model of nft has no sets: index the listing nft would print instead.
    const withSet = indexRuleset({
      nftables: [
        { table: { family: 'inet', name: 'kvmnftd', handle: 1 } },
        { set: { family: 'inet', table: 'kvmnftd', name: 'bans', type: 'ipv4_addr', handle: 2 } },
      ],
    });
    expect(ownTableClaim(withSet, config)).toEqual({ kind: 'foreign', why: 'it holds set bans' });
    const untagged = withTable(LIVE_LIBVIRT9, 'kvmnftd', [
      { chain: { family: 'inet', table: 'kvmnftd', name: 'nat_virbr0' } },
      { rule: { family: 'inet', table: 'kvmnftd', chain: 'nat_virbr0', expr: [{ accept: null }] } },
    ]);
    expect(ownTableClaim(untagged, config)).toMatchObject({ kind: 'foreign' });
  });

  it("adopts 0.1.0's table (every chain and rule kvmnftd's) and marks it in the same transaction", () => {
    const marked = applyBatch(LIVE_LIBVIRT9, plan([xml('default')], config, LIVE_LIBVIRT9).batch);
    // 0.1.0 wrote the same table without the marker chain.
    const v010 = applyBatch(marked, {
      nftables: [{ delete: { chain: { family: 'inet', table: 'kvmnftd', name: OWNER_MARKER_CHAIN } } }],
    });
    expect(ownTableClaim(v010, config)).toEqual({ kind: 'adoptable' });
    const adopt = plan([xml('default')], config, v010).batch;
    expect(adopt.nftables).toEqual([
      { add: { chain: { family: 'inet', table: 'kvmnftd', name: OWNER_MARKER_CHAIN } } },
    ]);
    const after = applyBatch(v010, adopt);
    expect(plan([xml('default')], config, after).batch.nftables).toEqual([]);
    // And its removal deletes the adopted table.
    expect(plan([], config, v010).batch.nftables).toContainEqual({
      delete: { table: { family: 'inet', name: 'kvmnftd' } },
    });
  });
});

describe('filter.jump = "none"', () => {
  it('never deletes a jump tagged kvmnftd, nor adds one', () => {
    const first = applyBatch(LIVE_LIBVIRT9, plan([xml('default')], config, LIVE_LIBVIRT9).batch);
    const none = configFromObject({ filter: { jump: 'none' } }, 'test.toml');
    const batch = plan([xml('default')], none, first).batch;
    expect(batch.nftables.filter((c) => 'delete' in c && 'rule' in (c.delete as object))).toEqual([]);
    expect(JSON.stringify(batch)).not.toMatch(/"jump":\{"target":"kvmnftd_/);
    const removal = plan([], none, first).batch;
    expect(JSON.stringify(removal)).not.toMatch(/"delete":\{"rule"/);
  });
});

describe('tags', () => {
  const long = 'n'.repeat(150);

  it('cuts long names with a 64-bit hash after "/", which no valid name contains', () => {
    const tag = networkTag(long);
    expect(Buffer.byteLength(tag)).toBeLessThanOrEqual(127);
    expect(tag).toMatch(/^kvmnftd net=n+\/[0-9a-f]{16}$/);
    expect(networkTag(`${long}x`)).not.toBe(tag);
    expect(legacyNetworkTags(long)[0]).toMatch(/~[0-9a-f]{8}$/);
    expect(legacyNetworkTags('default')).toEqual([]);
  });

  it("replaces 0.1.0's tags of a long-named network in one transaction, then converges", () => {
    const net = xml(long);
    const now = applyBatch(LIVE_LIBVIRT9, plan([net], config, LIVE_LIBVIRT9).batch);
    // The same ruleset as 0.1.0 wrote it: every network tag in its old form.
    const [legacy] = legacyNetworkTags(long);
    const old = indexRuleset(JSON.parse(JSON.stringify(toJson(now)).split(networkTag(long)).join(legacy)) as unknown);
    const upgrade = plan([net], config, old).batch;
    expect(upgrade.nftables.length).toBeGreaterThan(0);
    const after = applyBatch(old, upgrade);
    expect(JSON.stringify(toJson(after))).not.toContain(legacy!);
    expect(plan([net], config, after).batch.nftables).toEqual([]);
  });

  it('never keeps rules of an invalid network under a tag a valid network produces', () => {
    const valid = xml('default');
    const applied = applyBatch(LIVE_LIBVIRT9, plan([valid], config, LIVE_LIBVIRT9).batch);
    // An invalid network parses to the same name: its "retained" rules would be the valid one's.
    const invalid: NetworkParse = { kind: 'invalid', name: 'default', field: 'ip/@address', message: 'bad' };
    const result = plan([valid, invalid], config, applied);
    expect(result.notes.some((n) => n.message.includes('keeps the rules'))).toBe(false);
    expect(result.batch.nftables).toEqual([]);
  });
});

/** The ruleset back as `nft -j list ruleset` items (enough for indexRuleset). */
function toJson(r: Ruleset): { nftables: unknown[] } {
  const items: unknown[] = [];
  for (const t of r.tables.values()) {
    items.push({ table: { family: t.family, name: t.name, handle: t.handle } });
    for (const c of t.chains.values()) {
      const { rules, ...chain } = c;
      items.push({ chain });
      for (const rule of rules) items.push({ rule: { family: t.family, table: t.name, chain: c.name, ...rule } });
    }
  }
  return { nftables: items };
}
