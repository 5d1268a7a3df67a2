// Which monitor events start a pass. The event lines are what `nft -j monitor`
// (nft 1.0.6) printed here for: loading a table with a set and two drop-policy
// base chains and an iptables-style nat table, adding and deleting a set
// element, adding a rule, changing a base chain's policy, `flush ruleset`.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  libvirtActed,
  isForeignElementLine,
  monitorLineReason,
  monitorScope,
  parsedLineReason,
} from '../../src/nft/monitor-scope.js';
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
    // libvirt acting is news of libvirt: the daemon asks it afresh; any other change is drift.
    for (const line of [add, del, JSON.stringify({ add: { rule } })])
      expect(libvirtActed(monitorLineReason(line, scope)!)).toBe(true);
    for (const n of [0, 3, 4])
      expect(libvirtActed(monitorLineReason(at(n), monitorScope(live, ['inet filter']))!)).toBe(false);
  });

  it('reacts to what it cannot read precisely: lost events, unknown kinds, garbage', () => {
    expect(monitorLineReason('# ERROR: We lost some netlink events!', scope)).toBe('nft monitor reported a problem');
    expect(monitorLineReason(JSON.stringify({ add: { widget: { family: 'ip' } } }), scope)).toMatch(/widget/);
    expect(monitorLineReason('[1,2]', scope)).toBeDefined();
    expect(monitorLineReason('', scope)).toBeUndefined();
  });
});

/** JSON laid out as nft (jansson) prints a monitor line: one line, `", "` and `": "` separators. */
const nftStyle = (v: unknown): string =>
  Array.isArray(v)
    ? `[${v.map(nftStyle).join(', ')}]`
    : typeof v === 'object' && v !== null
      ? `{${Object.entries(v)
          .map(([k, x]) => `${JSON.stringify(k)}: ${nftStyle(x)}`)
          .join(', ')}}`
      : JSON.stringify(v);

describe('monitor scope: the fast path for set element events', () => {
  const own = monitorScope(live, ['inet filter']);

  it('lays lines out as nft does (so the properties below cover what nft prints)', () => {
    for (const line of lines) expect(nftStyle(JSON.parse(line))).toBe(line);
  });

  it("skips JSON.parse for a foreign set's element added or deleted", () => {
    for (const n of [7, 8]) {
      expect(isForeignElementLine(at(n), scope)).toBe(true);
      expect(monitorLineReason(at(n), scope)).toBeUndefined();
    }
  });

  it('still starts a pass for an element change in a set of a table kvmnftd owns or writes into', () => {
    for (const n of [7, 8]) {
      expect(isForeignElementLine(at(n), own)).toBe(false);
      expect(monitorLineReason(at(n), own)).toBe('element in inet filter changed');
    }
    const mine = nftStyle({
      add: { element: { family: 'inet', table: 'kvmnftd', name: 'guests', elem: { set: ['10.0.0.1'] } } },
    });
    expect(isForeignElementLine(mine, scope)).toBe(false);
    expect(monitorLineReason(mine, scope)).toBe('element in inet kvmnftd changed');
  });

  it('leaves every other line to the full reading', () => {
    for (const line of lines.filter((l) => !l.includes('"element"'))) {
      expect(isForeignElementLine(line, scope)).toBe(false);
      expect(isForeignElementLine(line, own)).toBe(false);
    }
    expect(isForeignElementLine('# ERROR: We lost some netlink events!', scope)).toBe(false);
    // Cut short: the full reading reports it as a problem.
    const cut = at(7).slice(0, -2);
    expect(isForeignElementLine(cut, scope)).toBe(false);
    expect(monitorLineReason(cut, scope)).toBe('nft monitor reported a problem');
  });

  it('decides exactly as the full reading for any element event nft can print', () => {
    const name = fc.oneof(
      fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_./-]{0,15}$/),
      fc.constantFrom('kvmnftd', 'filter', 'admin', 'f2b'),
      fc.string({ maxLength: 12 }), // quotes, backslashes, control characters: escaped by nft
    );
    const family = fc.constantFrom('ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev');
    const event = fc.record({
      op: fc.constantFrom('add', 'delete'),
      family,
      table: name,
      set: name,
      elem: fc.jsonValue({ maxDepth: 3 }),
      // The tables kvmnftd owns or writes into: names as odd as the event's.
      owned: fc.array(fc.tuple(family, name), { maxLength: 3 }),
      isOwn: fc.boolean(),
    });
    fc.assert(
      fc.property(event, ({ op, family, table, set, elem, owned, isOwn }) => {
        const sc = monitorScope(live, [
          ...owned.map(([f, t]) => `${f} ${t}`),
          ...(isOwn ? [`${family} ${table}`] : []),
        ]);
        const line = nftStyle({ [op]: { element: { family, table, name: set, elem } } });
        const reason = monitorLineReason(line, sc);
        expect(reason).toBe(parsedLineReason(line, sc));
        const foreign = !sc.tables.has(`${family} ${table}`);
        expect(reason === undefined).toBe(foreign);
        // The fast path is taken whenever the table name needs no escape.
        const plain = [...table].every((c) => c !== '"' && c !== '\\' && c >= ' ');
        if (foreign && plain) expect(isForeignElementLine(line, sc)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
