// The model of nft (src/nft/batch-model.ts, behind `plan --diff` and every
// unit test that applies a batch) against real nft, as root, in a throwaway
// network namespace: each batch goes through both, and both must agree on
// the outcome, applied (the same ruleset after) or refused (the same errno,
// and nothing of the batch applied). The two facts the model rests on:
// nft deletes a chain that still has rules, and refuses (EBUSY) to delete a
// chain that something still jumps to.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { NFT_STRERROR, tryBatch, type BatchOutcome } from '../../src/nft/batch-model.js';
import type { Batch, ChainObject, Command, Expr, RuleObject } from '../../src/nft/json.js';
import { plan } from '../../src/nft/plan.js';
import { indexRuleset, ruleKey, type Ruleset } from '../../src/nft/ruleset.js';
import { fixture, tempDir, useNetnsLab } from '../helpers/cli.js';
import { nftJson, nftLoadFile, nsRun } from '../helpers/netns.js';

const theLab = useNetnsLab();

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
  }
  return model;
}

const T = { family: 'inet' as const, table: 't' };
const chain = (name: string): ChainObject => ({ ...T, name });
const rule = (name: string, expr: Expr[]): RuleObject => ({ ...T, chain: name, expr });

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

  it("the planner's batches: apply, converge, remove", async () => {
    const h = await host(readFileSync(fixture('admin-ruleset.nft'), 'utf8'));
    const config = defaultConfig();
    const nat = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
    expect('applied' in (await agree(h, plan([nat], config, await h.read()).batch))).toBe(true);
    expect(plan([nat], config, await h.read()).batch.nftables).toEqual([]);
    expect('applied' in (await agree(h, plan([], config, await h.read()).batch))).toBe(true);
  });
});
