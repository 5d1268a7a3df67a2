// The model of nft (src/nft/batch-model.ts, behind `plan --diff` and every
// unit test that applies a batch) against real nft, as root, in a throwaway
// network namespace: each batch goes through both, and both must agree on
// the outcome, applied (the same ruleset after, and every rule that was
// there before at the same handle) or refused (the same errno, and nothing of
// the batch applied). The facts the model rests on: nft deletes a chain that
// still has rules, and refuses (EBUSY) to delete a chain that something still
// jumps to; a rule handle names a rule of the chain the command names; an
// insert before a rule deleted earlier in the batch lands where it was; a
// JSON `add rule` ignores a handle (nft 1.0.6). And the planner's narrow
// chain edits (chain-edit.ts) through both, on random chains.
//
// Seeded: the seed is printed; FC_SEED=<seed> re-runs the same cases.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { NFT_STRERROR, tryBatch, type BatchOutcome } from '../../src/nft/batch-model.js';
import { chainEdit } from '../../src/nft/chain-edit.js';
import type { AppendedRule, Batch, ChainObject, Command, Expr, RuleSpec } from '../../src/nft/json.js';
import { plan } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import { indexRuleset, ruleKey, type LiveRule, type Ruleset } from '../../src/nft/ruleset.js';
import { fuzzSeed } from '../helpers/arbitraries.js';
import { fixture, tempDir, useNetnsLab } from '../helpers/cli.js';
import { nftJson, nftLoadFile, nsRun } from '../helpers/netns.js';

const theLab = useNetnsLab();
const seed = fuzzSeed();
let edits = 0;
afterAll(() => console.log(`batch-model: ${edits} random chain edits (seed ${seed}; re-run with FC_SEED=${seed})`));

const START = `
table inet t {
  chain base {
    type filter hook input priority 0; policy accept;
    jump busy
    tcp dport 22 accept
  }
  chain busy {
    tcp dport 80 accept
  }
  chain full {
    tcp dport 443 accept
    udp dport 53 accept
  }
}
`;

/** Tables, chains and rules as a comparable list (handles and counters left out; table and chain order sorted). */
function normal(r: Ruleset): string[] {
  const out: string[] = [];
  for (const t of [...r.tables.values()].sort((a, b) =>
    `${a.family} ${a.name}`.localeCompare(`${b.family} ${b.name}`),
  )) {
    out.push(`table ${t.family} ${t.name}`);
    for (const c of [...t.chains.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      out.push(`  chain ${c.name} ${c.type ?? ''} ${c.hook ?? ''} ${c.prio ?? ''} ${c.policy ?? ''}`);
      for (const rule of c.rules) out.push(`    ${ruleKey(rule)}`);
    }
  }
  return out;
}

interface Host {
  ns: string;
  dir: string;
  read(): Promise<Ruleset>;
  /** The batch through real nft (`nft -j -f FILE`): undefined when applied, nft's error text otherwise. */
  apply(batch: Batch): Promise<string | undefined>;
}

async function host(start: string): Promise<Host> {
  const lab = theLab();
  const ns = await lab.netns('nft');
  const dir = await tempDir(lab);
  let n = 0;
  const write = async (name: string, text: string): Promise<string> => {
    const file = join(dir, `${++n}-${name}`);
    await writeFile(file, text, { mode: 0o600 });
    return file;
  };
  await nftLoadFile(ns, await write('start.nft', start));
  return {
    ns,
    dir,
    read: async () => indexRuleset(await nftJson(ns)),
    apply: async (batch) => {
      const r = await nsRun(ns, 'nft', ['-j', '-f', await write('batch.json', JSON.stringify(batch))]);
      return r.exitCode === 0 ? undefined : r.stderr.trim() || `exit ${r.exitCode}`;
    },
  };
}

/** Per chain, the handles of its rules that were already there in `before`, in chain order. */
function oldHandles(r: Ruleset, before: Ruleset): string[] {
  const old = new Set<number>();
  for (const t of before.tables.values()) for (const c of t.chains.values()) for (const x of c.rules) old.add(x.handle);
  const out: string[] = [];
  for (const t of r.tables.values())
    for (const c of t.chains.values())
      out.push(
        `${t.family} ${t.name} ${c.name}: ${c.rules.flatMap((x) => (old.has(x.handle) ? [x.handle] : [])).join(' ')}`,
      );
  return out.sort();
}

/** Runs the batch through the model and through nft, and checks that they agree. Returns the model's outcome. */
async function agree(h: Host, batch: Batch): Promise<BatchOutcome> {
  const before = await h.read();
  const model = tryBatch(before, batch);
  const nftError = await h.apply(batch);
  const after = await h.read();
  if ('refused' in model) {
    expect(nftError, `nft applied a batch the model refuses (${model.refused.message})`).toBeDefined();
    expect(nftError).toContain(NFT_STRERROR[model.refused.errno]);
    expect(normal(after), 'a refused batch changes nothing').toEqual(normal(before));
  } else {
    expect(nftError, 'nft refused a batch the model applies').toBeUndefined();
    expect(normal(after)).toEqual(normal(model.applied));
    expect(oldHandles(after, before), 'the rules that were there keep their handles').toEqual(
      oldHandles(model.applied, before),
    );
  }
  return model;
}

const T = { family: 'inet' as const, table: 't' };
const chain = (name: string): ChainObject => ({ ...T, name });
const rule = (name: string, expr: Expr[]): AppendedRule => ({ ...T, chain: name, expr });
/** `tcp dport PORT accept` (or udp). */
const port = (p: number, protocol = 'tcp'): Expr[] => [
  { match: { op: '==', left: { payload: { protocol, field: 'dport' } }, right: p } },
  { accept: null },
];
/** The rule of chain `name` that matches `protocol` dport `p`, as nft lists it. */
const ruleOf = (r: Ruleset, name: string, p: number, protocol = 'tcp'): LiveRule =>
  r.tables
    .get('inet t')!
    .chains.get(name)!
    .rules.find((x) => ruleKey(x) === ruleKey({ expr: port(p, protocol) }))!;

describe('the model of nft agrees with nft', () => {
  it('nft deletes a chain that still has rules: the model applies the batch too', async () => {
    const h = await host(START);
    const outcome = await agree(h, { nftables: [{ delete: { chain: chain('full') } }] });
    expect('applied' in outcome).toBe(true);
  });

  it('nft refuses (EBUSY) to delete a chain something still jumps to, and the batch as a whole: so does the model', async () => {
    const h = await host(START);
    const outcome = await agree(h, {
      nftables: [
        { flush: { chain: chain('full') } },
        { add: { rule: rule('full', [{ accept: null }]) } },
        { delete: { chain: chain('busy') } },
      ],
    });
    expect('refused' in outcome && outcome.refused.errno).toBe('EBUSY');
  });

  it('a jump deleted earlier in the same batch no longer holds the chain', async () => {
    const h = await host(START);
    const live = await h.read();
    const jump = live.tables.get('inet t')!.chains.get('base')!.rules[0]!;
    const outcome = await agree(h, {
      nftables: [
        { delete: { rule: { ...T, chain: 'base', handle: jump.handle } } },
        { delete: { chain: chain('busy') } },
      ],
    });
    expect('applied' in outcome).toBe(true);
  });

  it('refuses what names a missing object (ENOENT): the stale-snapshot guard rests on it', async () => {
    const h = await host(START);
    for (const cmd of [
      { flush: { chain: chain('gone') } },
      { delete: { table: { family: 'inet', name: 'gone' } } },
      { delete: { rule: { ...T, chain: 'base', handle: 999_999 } } },
      { insert: { rule: { ...rule('full', port(1)), handle: 999_999 } } },
      { replace: { rule: { ...rule('full', port(1)), handle: 999_999 } } },
      { add: { rule: rule('full', [{ jump: { target: 'gone' } }]) } },
    ] satisfies Command[]) {
      const outcome = await agree(h, { nftables: [cmd] });
      expect('refused' in outcome && outcome.refused.errno, JSON.stringify(cmd)).toBe('ENOENT');
    }
  });

  it('refuses a jump to a base chain (EOPNOTSUPP)', async () => {
    const h = await host(START);
    const outcome = await agree(h, { nftables: [{ add: { rule: rule('full', [{ jump: { target: 'base' } }]) } }] });
    expect('refused' in outcome && outcome.refused.errno).toBe('EOPNOTSUPP');
  });

  it('insert before a handle, append at the end, replace in place: as nft does, handles kept', async () => {
    const h = await host(START);
    const live = await h.read();
    const h443 = ruleOf(live, 'full', 443).handle;
    const h53 = ruleOf(live, 'full', 53, 'udp').handle;
    const outcome = await agree(h, {
      nftables: [
        { insert: { rule: { ...rule('full', port(1)), handle: h53 } } },
        { insert: { rule: { ...rule('full', port(2)), handle: h53 } } },
        { insert: { rule: { ...rule('full', port(3)), handle: h443 } } },
        { add: { rule: rule('full', port(4)) } },
        { replace: { rule: { ...rule('full', port(5)), handle: h443 } } },
      ],
    });
    const after = 'applied' in outcome ? outcome.applied : live;
    expect(
      after.tables
        .get('inet t')!
        .chains.get('full')!
        .rules.map((r) => ruleKey(r)),
    ).toEqual([port(3), port(5), port(1), port(2), port(53, 'udp'), port(4)].map((expr) => ruleKey({ expr })));
    expect(ruleOf(after, 'full', 5).handle).toBe(h443);
  });

  it("a handle names a rule of the command's chain: another chain's handle is refused (ENOENT)", async () => {
    const h = await host(START);
    const other = ruleOf(await h.read(), 'busy', 80).handle;
    for (const cmd of [
      { insert: { rule: { ...rule('full', port(1)), handle: other } } },
      { replace: { rule: { ...rule('full', port(1)), handle: other } } },
      { delete: { rule: { ...T, chain: 'full', handle: other } } },
    ] satisfies Command[]) {
      const outcome = await agree(h, { nftables: [cmd] });
      expect('refused' in outcome && outcome.refused.errno, JSON.stringify(cmd)).toBe('ENOENT');
    }
  });

  it('a rule deleted earlier in the batch: an insert before it lands where it was; deleting or replacing it again is refused', async () => {
    const h = await host(START);
    const live = await h.read();
    const h443 = ruleOf(live, 'full', 443).handle;
    const h53 = ruleOf(live, 'full', 53, 'udp').handle;
    const del = (handle: number): Command => ({ delete: { rule: { ...T, chain: 'full', handle } } });
    const inserted = await agree(h, {
      nftables: [del(h53), { insert: { rule: { ...rule('full', port(7)), handle: h53 } } }],
    });
    expect('applied' in inserted).toBe(true);
    const h443again = ruleOf(await h.read(), 'full', 443).handle;
    expect(h443again).toBe(h443);
    for (const second of [
      del(h443),
      { replace: { rule: { ...rule('full', port(8)), handle: h443 } } },
    ] satisfies Command[]) {
      const outcome = await agree(h, { nftables: [del(h443), second] });
      expect('refused' in outcome && outcome.refused.errno, JSON.stringify(second)).toBe('ENOENT');
    }
    const flushed = await agree(h, { nftables: [{ flush: { chain: chain('full') } }, del(h443)] });
    expect('refused' in flushed && flushed.refused.errno).toBe('ENOENT');
  });

  it('nft 1.0.6 ignores a handle in a JSON add rule and appends; the model does not model it', async () => {
    const h = await host(START);
    const before = await h.read();
    const first = before.tables.get('inet t')!.chains.get('full')!.rules[0]!;
    const batch = {
      nftables: [{ add: { rule: { ...rule('full', port(9)), handle: first.handle } } }],
    } as unknown as Batch;
    expect(() => tryBatch(before, batch)).toThrow(/not modelled/);
    expect(await h.apply(batch)).toBeUndefined();
    const rules = (await h.read()).tables.get('inet t')!.chains.get('full')!.rules;
    expect(rules.map((r) => ruleKey(r))).toEqual(
      [...before.tables.get('inet t')!.chains.get('full')!.rules, { expr: port(9) }].map((r) => ruleKey(r)),
    );
  });

  it("the planner's narrow chain edits, on random chains: nft and the model agree, and the rules that stay keep handle and counter", async () => {
    const h = await host('table inet t {\n  chain c {\n  }\n}\n');
    const portsArb = fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 10 });
    const counted = (p: number, n: number): Expr[] => [
      port(p)[0]!,
      { counter: { packets: n, bytes: 60 * n } },
      { accept: null },
    ];
    await fc.assert(
      fc.asyncProperty(portsArb, portsArb, async (have, want) => {
        edits++;
        const load: Batch = {
          nftables: [
            { flush: { chain: chain('c') } },
            ...have.map((p, i): Command => ({ add: { rule: rule('c', counted(p, i + 1)) } })),
          ],
        };
        expect(await h.apply(load)).toBeUndefined();
        const before = await h.read();
        const wanted: RuleSpec[] = want.map((p) => ({ expr: [port(p)[0]!, { counter: null }, { accept: null }] }));
        const live = before.tables.get('inet t')!.chains.get('c')!.rules;
        const batch = { nftables: chainEdit({ family: 'inet', name: 't' }, 'c', live, wanted) };
        const outcome = await agree(h, batch);
        expect('applied' in outcome, renderBatch(batch.nftables)).toBe(true);
        const after = (await h.read()).tables.get('inet t')!.chains.get('c')!.rules;
        expect(after.map((r) => ruleKey(r))).toEqual(wanted.map((r) => ruleKey(r)));
        for (const r of after) {
          const was = live.find((x) => x.handle === r.handle);
          if (was) expect(r.expr, 'a rule that stays keeps its counter').toEqual(was.expr);
        }
      }),
      { seed, numRuns: 30, endOnFailure: false },
    );
  }, 120_000);

  it("the planner's batches: apply, converge, move the jump back (the replace guard), remove", async () => {
    const h = await host(readFileSync(fixture('admin-ruleset.nft'), 'utf8'));
    const config = defaultConfig();
    const nat = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
    expect('applied' in (await agree(h, plan([nat], config, await h.read()).batch))).toBe(true);
    expect(plan([nat], config, await h.read()).batch.nftables).toEqual([]);

    // The admin inserts a rule above kvmnftd's jump: the jump is moved back to the top, and the
    // batch (also as the text `kvmnftd plan` prints, checked with nft -c) starts with the guard.
    const admin = { family: 'inet' as const, table: 'filter' };
    expect(await h.apply({ nftables: [{ insert: { rule: { ...admin, chain: 'input', expr: port(2222) } } }] })).toBe(
      undefined,
    );
    const moved = plan([nat], config, await h.read()).batch;
    expect(Object.keys(moved.nftables[0]!)).toEqual(['replace']);
    const text = join(h.dir, 'moved.nft');
    await writeFile(text, renderBatch(moved.nftables), { mode: 0o600 });
    const check = await nsRun(h.ns, 'nft', ['-c', '-f', text]);
    expect(check.exitCode, `${check.stderr}\n${renderBatch(moved.nftables)}`).toBe(0);
    const before = (await h.read()).tables.get('inet filter')!.chains.get('kvmnftd_input')!.rules;
    expect('applied' in (await agree(h, moved))).toBe(true);
    const after = (await h.read()).tables.get('inet filter')!.chains.get('kvmnftd_input')!.rules;
    expect(after.map((r) => r.handle)).toEqual(before.map((r) => r.handle));
    expect(plan([nat], config, await h.read()).batch.nftables).toEqual([]);

    expect('applied' in (await agree(h, plan([], config, await h.read()).batch))).toBe(true);
  });
});
