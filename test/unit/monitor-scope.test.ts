// Which monitor events start a pass. The event lines are what `nft -j monitor`
// (nft 1.0.6) printed here for: loading a table with a set and two drop-policy
// base chains and an iptables-style nat table, adding and deleting a set
// element, adding a rule, changing a base chain's policy, `flush ruleset`.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { monitorLineReason, monitorScope } from '../../src/nft/monitor-scope.js';
import { indexRuleset } from '../../src/nft/ruleset.js';

const lines = readFileSync(new URL('../fixtures/monitor-events-nft106.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l !== '');

// The ruleset a pass read after the load: inet filter (input, forward, x, set bans), ip nat POSTROUTING.
const live = indexRuleset({
  nftables: lines.slice(0, 7).map((l) => (JSON.parse(l) as { add: unknown }).add),
});
const ours = ['inet kvmnftd', 'inet admin'];
const scope = monitorScope(live, ours);
const at = (n: number): string => lines[n]!;

describe('monitor scope', () => {
  it('ignores element updates and rule changes in tables kvmnftd neither owns nor writes into', () => {
    expect(at(7)).toContain('"element"');
    expect(monitorLineReason(at(7), scope)).toBeUndefined();
    expect(monitorLineReason(at(8), scope)).toBeUndefined();
    expect(at(9)).toContain('"rule"');
    expect(monitorLineReason(at(9), scope)).toBeUndefined();
    expect(monitorLineReason(at(4), scope)).toBeUndefined(); // a foreign set created
  });

  it('reacts to base chains on watched hooks being created, changed or deleted, in any table', () => {
    expect(monitorLineReason(at(1), scope)).toMatch(/base chain inet filter input \(hook input\)/);
    expect(at(10)).toContain('"policy": "accept"');
    expect(monitorLineReason(at(10), scope)).toMatch(/inet filter forward/);
    expect(monitorLineReason(at(13), scope)).toBe('base chain inet filter input deleted');
    expect(monitorLineReason(at(17), scope)).toBe('base chain ip nat POSTROUTING deleted');
    expect(monitorLineReason(at(16), scope)).toBe('table inet filter deleted');
  });

  it('ignores regular chains of foreign tables, and deleting a table without watched base chains', () => {
    expect(monitorLineReason(at(3), scope)).toBeUndefined(); // chain x added
    expect(monitorLineReason(at(15), scope)).toBeUndefined(); // chain x deleted
    const none = monitorScope(indexRuleset({ nftables: [] }), ours);
    expect(monitorLineReason(at(16), none)).toBeUndefined();
    expect(monitorLineReason(at(0), none)).toBeUndefined(); // a foreign table created
  });

  it('reacts to every change in the tables kvmnftd owns or writes into', () => {
    const own = monitorScope(live, ['inet filter']);
    for (const n of [0, 3, 4, 7, 8, 9, 11, 12, 15, 16]) expect(monitorLineReason(at(n), own)).toBeDefined();
  });

  it("reacts to libvirt's chains appearing, disappearing and being rewritten, not to Docker's", () => {
    const add = JSON.stringify({ add: { chain: { family: 'ip', table: 'filter', name: 'LIBVIRT_FWI', handle: 9 } } });
    const del = JSON.stringify({ delete: { chain: { family: 'ip', table: 'libvirt_network', name: 'guest_input' } } });
    expect(monitorLineReason(add, scope)).toBe('libvirt chain LIBVIRT_FWI added');
    expect(monitorLineReason(del, scope)).toBe('libvirt chain guest_input deleted');
    const rule = { family: 'ip', table: 'filter', chain: 'LIBVIRT_FWO', handle: 3, expr: [{ accept: null }] };
    expect(monitorLineReason(JSON.stringify({ add: { rule } }), scope)).toBe('libvirt changed its rules');
    const docker = { ...rule, chain: 'DOCKER' };
    expect(monitorLineReason(JSON.stringify({ add: { rule: docker } }), scope)).toBeUndefined();
  });

  it('reacts to what it cannot read precisely: lost events, unknown kinds, garbage', () => {
    expect(monitorLineReason('# ERROR: We lost some netlink events!', scope)).toBe('nft monitor reported a problem');
    expect(monitorLineReason(JSON.stringify({ add: { widget: { family: 'ip' } } }), scope)).toMatch(/widget/);
    expect(monitorLineReason('[1,2]', scope)).toBeDefined();
    expect(monitorLineReason('', scope)).toBeUndefined();
  });
});
