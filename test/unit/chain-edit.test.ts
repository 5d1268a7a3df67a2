// The narrow chain edit (src/nft/chain-edit.ts), through the model of nft:
// the edited chain is exactly the wanted one, in order; every rule that
// stays keeps its handle (and with it its counter); as many rules stay as a
// longest common subsequence allows; positions only name rules that stay.
// test/integration/batch-model.test.ts runs such edits through real nft.
//
// Seeded: the seed is printed; FC_SEED=<seed> re-runs the same cases.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { applyBatch } from '../../src/nft/batch-model.js';
import { alignKeys, chainEdit, MAX_EDIT_DISTANCE } from '../../src/nft/chain-edit.js';
import type { Expr, RuleSpec, TableRef } from '../../src/nft/json.js';
import { ruleKey, tableKey, type LiveRule, type Ruleset } from '../../src/nft/ruleset.js';
import { fuzzSeed } from '../helpers/arbitraries.js';

const seed = fuzzSeed();
let runs = 0;
afterAll(() => console.log(`chain-edit: ${runs} cases (seed ${seed}; re-run with FC_SEED=${seed})`));

const T: TableRef = { family: 'inet', name: 't' };

/** Rule `n`: `tcp dport n counter accept`, with counter values when given. */
function spec(n: number, counter?: number): RuleSpec {
  const c: Expr = counter === undefined ? { counter: null } : { counter: { packets: counter, bytes: counter * 60 } };
  return { expr: [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: n } }, c] };
}

/** A table `inet t` with chain `c` holding rules `ports` (handles from 10 on, counters = handle) and chain `other`. */
function liveWith(ports: readonly number[]): Ruleset {
  const rules: LiveRule[] = ports.map((p, i) => ({ handle: 10 + i, ...spec(p, 10 + i) }));
  return {
    tables: new Map([
      [
        tableKey('inet', 't'),
        {
          family: 'inet',
          name: 't',
          handle: 1,
          chains: new Map([
            ['c', { family: 'inet', table: 't', name: 'c', handle: 2, rules }],
            ['other', { family: 'inet', table: 't', name: 'other', handle: 3, rules: [] }],
          ]),
        },
      ],
    ]),
  };
}

const chainC = (r: Ruleset): LiveRule[] => r.tables.get(tableKey('inet', 't'))!.chains.get('c')!.rules;

/** The length of a longest common subsequence, by the textbook table. */
function lcsLength(a: readonly number[], b: readonly number[]): number {
  const t = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      t[i]![j] = a[i - 1] === b[j - 1] ? t[i - 1]![j - 1]! + 1 : Math.max(t[i - 1]![j]!, t[i]![j - 1]!);
  return t[a.length]![b.length]!;
}

// Small port alphabets make repeated and shared rules common.
const portsArb = fc.array(fc.integer({ min: 1, max: 8 }), { maxLength: 14 });

describe('chainEdit', () => {
  it('makes the chain exactly the wanted rules, keeping a longest common subsequence in place', () => {
    fc.assert(
      fc.property(portsArb, portsArb, (have, want) => {
        runs++;
        const live = liveWith(have);
        const before = chainC(live);
        const commands = chainEdit(
          T,
          'c',
          before,
          want.map((p) => spec(p)),
        );
        const after = chainC(applyBatch(live, { nftables: commands }));
        expect(after.map(ruleKey)).toEqual(want.map((p) => ruleKey(spec(p))));

        const stayed = after.filter((r) => before.some((b) => b.handle === r.handle));
        // A rule that stays is the very rule it was: handle, statements, counter values.
        for (const r of stayed) expect(r).toEqual(before.find((b) => b.handle === r.handle));
        expect(stayed).toHaveLength(lcsLength(have, want));
        // The minimal edit: one command per rule that goes or comes (a single flush when none stays).
        const goes = have.length - stayed.length;
        const comes = want.length - stayed.length;
        expect(commands).toHaveLength((stayed.length === 0 && goes > 0 ? 1 : goes) + comes);
        if (have.length === want.length && stayed.length === have.length) expect(commands).toEqual([]);

        const handles = new Set(stayed.map((r) => r.handle));
        for (const c of commands) {
          if ('insert' in c) expect(handles.has(c.insert.rule.handle!), JSON.stringify(c)).toBe(true);
          if ('add' in c && 'rule' in c.add) expect(c.add.rule.handle).toBeUndefined();
        }
      }),
      { seed, numRuns: 1500 },
    );
  });

  it('inserts before the next rule that stays, appends after the last one', () => {
    const live = liveWith([1, 2, 3]);
    const commands = chainEdit(
      T,
      'c',
      chainC(live),
      [0, 1, 5, 6, 3, 7].map((p) => spec(p)),
    );
    const ref = { family: 'inet', table: 't', chain: 'c' } as const;
    expect(commands).toEqual([
      { delete: { rule: { ...ref, handle: 11 } } },
      { insert: { rule: { ...ref, ...spec(0), handle: 10 } } },
      { insert: { rule: { ...ref, ...spec(5), handle: 12 } } },
      { insert: { rule: { ...ref, ...spec(6), handle: 12 } } },
      { add: { rule: { ...ref, ...spec(7) } } },
    ]);
  });

  it('keeps a rule nft lists in another spelling than kvmnftd writes it (ruleKey: set order, counter values)', () => {
    const live = liveWith([1, 2]);
    const rules = chainC(live);
    const names = (set: string[], counter: Expr): Expr[] => [
      { match: { op: '==', left: { meta: { key: 'oifname' } }, right: { set } } },
      counter,
      { accept: null },
    ];
    rules.splice(1, 0, { handle: 40, expr: names(['b', 'a'], { counter: { packets: 4, bytes: 400 } }) });
    const wanted = [spec(1), { expr: names(['a', 'b'], { counter: null }) }, spec(2)];
    expect(chainEdit(T, 'c', rules, wanted)).toEqual([]);
    expect(chainEdit(T, 'c', rules, [spec(1), { expr: names(['a', 'c'], { counter: null }) }, spec(2)])).toEqual([
      { delete: { rule: { family: 'inet', table: 't', chain: 'c', handle: 40 } } },
      {
        insert: {
          rule: { family: 'inet', table: 't', chain: 'c', expr: names(['a', 'c'], { counter: null }), handle: 11 },
        },
      },
    ]);
  });

  it('flushes a chain none of whose rules stays', () => {
    const live = liveWith([1, 2]);
    expect(chainEdit(T, 'c', chainC(live), [spec(3)])).toEqual([
      { flush: { chain: { family: 'inet', table: 't', name: 'c' } } },
      { add: { rule: { family: 'inet', table: 't', chain: 'c', ...spec(3) } } },
    ]);
    expect(chainEdit(T, 'c', [], [])).toEqual([]);
  });
});

describe('alignKeys', () => {
  it('pairs equal keys, ascending in both, as many as a longest common subsequence has', () => {
    const keysArb = fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { maxLength: 20 });
    fc.assert(
      fc.property(keysArb, keysArb, (a, b) => {
        runs++;
        const pairs = alignKeys(a, b);
        pairs.forEach(([i, j], k) => {
          expect(a[i]).toBe(b[j]);
          if (k > 0) {
            expect(i).toBeGreaterThan(pairs[k - 1]![0]);
            expect(j).toBeGreaterThan(pairs[k - 1]![1]);
          }
        });
        const code = (s: string): number => s.charCodeAt(0);
        expect(pairs).toHaveLength(lcsLength(a.map(code), b.map(code)));
      }),
      { seed, numRuns: 3000 },
    );
  });

  it('beyond MAX_EDIT_DISTANCE keeps only the equal head and tail', () => {
    // 'mid' is shared, but only an alignment of the middle finds it: 2 * side edits around it.
    const middle = (side: number, tag: string): string[] => Array.from({ length: side }, (_, i) => `${tag}${i}`);
    const align = (side: number) =>
      alignKeys(['head', 'mid', ...middle(side, 'a'), 'tail'], ['head', ...middle(side, 'b'), 'mid', 'tail']);
    const big = MAX_EDIT_DISTANCE / 2 + 1;
    expect(align(big)).toEqual([
      [0, 0],
      [big + 2, big + 2],
    ]);
    const small = MAX_EDIT_DISTANCE / 2 - 1;
    expect(align(small)).toEqual([
      [0, 0],
      [1, small + 1],
      [small + 2, small + 2],
    ]);
  });

  it('aligns thousands of rules with a few changes in a few milliseconds', () => {
    const rules = Array.from({ length: 5000 }, (_, i) => `r${i}`);
    const changed = rules.filter((_, i) => i % 1000 !== 500);
    changed.splice(10, 0, 'new1');
    changed.splice(4000, 0, 'new2');
    const started = performance.now();
    const pairs = alignKeys(rules, changed);
    const ms = performance.now() - started;
    expect(pairs).toHaveLength(4995);
    expect(ms, `${ms.toFixed(1)} ms`).toBeLessThan(200);
  });
});
