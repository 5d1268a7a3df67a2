// Always converge, against real nft: apply what the planner wants, read the
// ruleset back with `nft -j list ruleset`, plan again: the batch must be empty.
// The planner compares its own rules with what nft prints back, so every value
// it writes must be written exactly as nft prints it (addresses in inet_ntop's
// form, host bits cleared, a NAT address block as a prefix...). A network the
// parser refuses gets a clear error naming the field, and nothing of it is
// applied.
//
// Runs as root in one network namespace this file creates and deletes
// (`kvc-<pid>`), with the admin's drop-policy ruleset loaded before each batch.
// Seeded: the seed is printed; FC_SEED=<seed> re-runs the same cases.
// KVMNFTD_TEST_NFT_ROOT=<dir> runs nft from that root with chroot, e.g. the
// Debian 13 test root (nft 1.1.3) under /var/cache/kvmnftd-test/roots.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { configFromObject } from '../../src/config/config.js';
import { canonicalIp, formatIp } from '../../src/net/ip.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { Batch } from '../../src/nft/json.js';
import { plan } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import { natChainName, networkTag } from '../../src/nft/ownership.js';
import { indexRuleset, ruleKey, type Ruleset } from '../../src/nft/ruleset.js';
import { fuzzSeed } from '../helpers/arbitraries.js';
import { keptRules, withCounters } from '../helpers/counters.js';
import { GOLDEN_DIR, goldenCases, loadCase } from '../helpers/golden.js';
import { requireLabPrivileges, run, runOk } from '../helpers/netns.js';
import {
  networkBatchArb,
  v4Text,
  v4ValueArb,
  v6Text,
  v6ValueArb,
  type GeneratedNetwork,
  type V6Spelling,
} from '../helpers/network-arbitraries.js';

const ADMIN_FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'admin-ruleset.nft');
const fixturePath = (name: string): string => join(import.meta.dirname, '..', 'fixtures', name);
const NFT_ROOT = process.env['KVMNFTD_TEST_NFT_ROOT'] ?? '';
const MIN_NETWORKS = 300;
const BATCHES = 60;
const PER_BATCH = { min: 1, max: 16 };
const ADDRESSES = 2000;

const seed = fuzzSeed();
const ns = `kvc-${process.pid}`;
let dir = '';
let adminFile = '';
let nftVersion = '';
let nsCreated = false;
let sampled = 0;
let refused = 0;
let applies = 0;
let sampleSeconds = 0;
let keptCompared = 0;
/** The admin's ruleset as nft lists it after `nft -f admin-ruleset.nft`, and as JSON commands that re-create it. */
let admin: Ruleset;
let adminCommands: unknown[] = [];

async function nft(args: string[]): Promise<string> {
  const chroot = NFT_ROOT === '' ? [] : ['chroot', NFT_ROOT];
  const r = await run('ip', ['netns', 'exec', ns, ...chroot, 'nft', ...args], { timeoutMs: 20_000 });
  if (r.exitCode !== 0) throw new Error(`nft ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

async function readRuleset(): Promise<Ruleset> {
  return indexRuleset(JSON.parse(await nft(['-j', 'list', 'ruleset'])));
}

/** A path under `dir` as nft sees it (inside KVMNFTD_TEST_NFT_ROOT when set). */
function inRoot(file: string): string {
  return NFT_ROOT === '' ? file : file.slice(NFT_ROOT.replace(/\/+$/, '').length);
}

let fileCounter = 0;
async function applyBatch(batch: Batch): Promise<void> {
  const file = join(dir, `batch-${++fileCounter}.json`);
  writeFileSync(file, JSON.stringify(batch), { mode: 0o600 });
  applies++;
  await nft(['-j', '-f', inRoot(file)]);
}

/** `nft -c -f` of the plan as text (what `kvmnftd plan` prints), after `prelude`: nft must accept it. */
async function checkText(prelude: string, batch: Batch): Promise<void> {
  const file = join(dir, `plan-${++fileCounter}.nft`);
  writeFileSync(file, `${prelude}${renderBatch(batch.nftables)}`, { mode: 0o600 });
  await nft(['-c', '-f', inRoot(file)]);
}

/** A listed ruleset as commands that re-create it: no metainfo, no handles, no xt statements (nft cannot write those). */
function loadable(doc: { nftables: Array<Record<string, Record<string, unknown>>> }): unknown[] {
  return doc.nftables
    .filter((item) => !('metainfo' in item) && !JSON.stringify(item).includes('"xt"'))
    .map((item) =>
      Object.fromEntries(
        Object.entries(item).map(([kind, body]) => [
          kind,
          Object.fromEntries(Object.entries(body).filter(([key]) => key !== 'handle')),
        ]),
      ),
    );
}

/** Anything in the ruleset of this network: a rule with its tag, or naming its bridge or NAT chain. */
function traces(live: Ruleset, net: GeneratedNetwork): string[] {
  const names = [`"${net.bridge}"`, `"${natChainName(net.bridge)}"`];
  const found: string[] = [];
  for (const table of live.tables.values()) {
    for (const chain of table.chains.values()) {
      if (chain.name === natChainName(net.bridge)) found.push(`chain ${chain.name}`);
      for (const rule of chain.rules) {
        const text = JSON.stringify(rule.expr);
        if (rule.comment === networkTag(net.name) || names.some((n) => text.includes(n)))
          found.push(`${chain.name}: ${ruleKey(rule)}`);
      }
    }
  }
  return found;
}

beforeAll(async () => {
  requireLabPrivileges(); // fails, never skips, without root, nft and ip
  dir = mkdtempSync(join(NFT_ROOT === '' ? tmpdir() : join(NFT_ROOT, 'tmp'), 'kvc-'));
  adminFile = join(dir, 'admin-ruleset.nft');
  copyFileSync(ADMIN_FIXTURE, adminFile);
  await runOk('ip', ['netns', 'add', ns]);
  nsCreated = true;
  // libvirt 11's captured rules (the foreign golden cases' live.json) match virbr0 by index.
  await runOk('ip', ['-n', ns, 'link', 'add', 'virbr0', 'type', 'bridge']);
  nftVersion = (await nft(['--version'])).trim();
  await nft(['-f', inRoot(adminFile)]);
  const listed = JSON.parse(await nft(['-j', 'list', 'ruleset'])) as Parameters<typeof loadable>[0];
  admin = indexRuleset(listed);
  adminCommands = [{ flush: { ruleset: null } }, ...loadable(listed)];
});

afterAll(async () => {
  console.log(
    `convergence: ${sampled} generated networks (${refused} refused) in ${applies} applies to real nft, ` +
      `${sampleSeconds.toFixed(1)} s, ${keptCompared} kept rules compared, ${nftVersion} ` +
      `(seed ${seed}; re-run with FC_SEED=${seed})`,
  );
  if (nsCreated) await runOk('ip', ['netns', 'delete', ns]);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

describe('addresses are written as nft prints them', () => {
  // One rule with an anonymous set of generated addresses, each spelled some
  // other way (upper case, zero-padded, compressed at any zero run, dotted
  // tail): nft must list every element exactly as canonicalIp/formatIp write it.
  it(`${ADDRESSES} IPv6 and IPv4 addresses in every spelling`, async () => {
    const spellings = fc.sample(
      fc.record({
        compress: fc.option(fc.nat(7), { nil: undefined }),
        pad: fc.boolean(),
        upper: fc.boolean(),
        dotted: fc.boolean(),
      }),
      { seed, numRuns: ADDRESSES },
    ) as V6Spelling[];
    const v6 = [...new Set(fc.sample(v6ValueArb, { seed, numRuns: ADDRESSES }))];
    const v4 = [...new Set(fc.sample(v4ValueArb, { seed, numRuns: ADDRESSES / 4 }))];
    const written6 = v6.map((value, i) => v6Text(value, spellings[i]!));
    const table = { family: 'inet', table: 'addr', name: 'c' };
    const rule = (proto: string, elements: string[]): unknown => ({
      add: {
        rule: {
          ...table,
          chain: 'c',
          expr: [
            { match: { op: '==', left: { payload: { protocol: proto, field: 'daddr' } }, right: { set: elements } } },
          ],
        },
      },
    });
    delete (table as Partial<typeof table>).name;
    await applyBatch({
      nftables: [
        { flush: { ruleset: null } },
        { add: { table: { family: 'inet', name: 'addr' } } },
        { add: { chain: { family: 'inet', table: 'addr', name: 'c' } } },
        rule('ip6', written6),
        rule('ip', v4.map(v4Text)),
      ],
    } as unknown as Batch);
    const listed = (await readRuleset()).tables.get('inet addr')!.chains.get('c')!.rules;
    const printed = listed.map((r) => (r.expr[0]!['match'] as { right: { set: string[] } }).right.set);
    expect(new Set(printed[0])).toEqual(new Set(v6.map((v) => formatIp(6, v))));
    expect(new Set(printed[1])).toEqual(new Set(v4.map((v) => formatIp(4, v))));
    // The parser's canonical form of each spelling is the same text.
    expect(new Set(written6.map((t) => canonicalIp(t)))).toEqual(new Set(printed[0]));
  });
});

describe('apply, read back, plan again: nothing to do', () => {
  it(`generated networks in every address form and forward mode (>= ${MIN_NETWORKS} networks)`, async () => {
    const started = Date.now();
    onTestFinished(() => {
      sampleSeconds = (Date.now() - started) / 1000;
    });
    await fc.assert(
      fc.asyncProperty(networkBatchArb(PER_BATCH.min, PER_BATCH.max), fc.boolean(), async (nets, last) => {
        sampled += nets.length;
        const accept = nets.filter((n) => n.mode === 'open' && n.acceptOpen).map((n) => n.name);
        const config = configFromObject(
          { filter: { accept_open_networks: accept, jump: last ? 'last' : 'first' } },
          'convergence.toml',
        );
        const inputs = nets.map((n) => parseNetworkXml(n.xml, n.origin));
        const context = (): string => nets.map((n) => n.xml).join('\n');

        // Part one: the parser accepts or refuses each network as the oracle says.
        inputs.forEach((input, k) => {
          const net = nets[k]!;
          if (net.refuse === undefined) {
            expect(input, `${net.origin} must be accepted:\n${net.xml}`).toMatchObject({ kind: 'ok' });
            expect(input.kind === 'ok' && input.network.name).toBe(net.name);
            return;
          }
          refused++;
          expect(input, `${net.origin} must be refused:\n${net.xml}`).toMatchObject({
            kind: 'invalid',
            field: net.refuse.field,
          });
          const message = input.kind === 'invalid' ? input.message : '';
          expect(message.length).toBeGreaterThan(10);
          if (net.refuse.word !== undefined) expect(message).toContain(net.refuse.word);
        });

        // Part two: apply to real nft, read back, plan again. The admin's
        // ruleset is re-created in the same transaction (same handles each time).
        const first = plan(inputs, config, admin);
        for (const net of nets.filter((n) => n.refuse !== undefined)) {
          expect(
            first.notes.some((n) => n.level === 'error' && n.field === net.refuse!.field && n.network === net.name),
            `an error note naming ${net.refuse!.field} for ${net.origin}: ${JSON.stringify(first.notes)}`,
          ).toBe(true);
        }
        await checkText(`include "${inRoot(adminFile)}"\n`, first.batch);
        await applyBatch({ nftables: [...adminCommands, ...first.batch.nftables] } as Batch);
        const after = await readRuleset();
        const second = plan(inputs, config, after);
        expect(
          renderBatch(second.batch.nftables),
          `not converged: the second plan is not empty for\n${context()}\n--- first batch:\n${renderBatch(first.batch.nftables)}`,
        ).toBe('');
        for (const net of nets) {
          const found = traces(after, net);
          if (net.refuse !== undefined) expect(found, `refused ${net.origin} left rules behind`).toEqual([]);
          else if (net.mode !== 'open' || net.acceptOpen)
            expect(found.length, `${net.origin} has no rules`).toBeGreaterThan(0);
        }
      }),
      { seed, numRuns: BATCHES, endOnFailure: false },
    );
    expect(sampled, 'too few networks sampled: raise BATCHES').toBeGreaterThanOrEqual(MIN_NETWORKS);
  }, 300_000);

  // Counters survive kvmnftd's own transactions: networks A applied with
  // non-zero counters on every rule (`counter packets N bytes M`, as if
  // traffic had passed), then the plan for networks B (from the same pool):
  // every rule of kvmnftd's that both want is the same rule in nft after,
  // with its handle and its counter. The edit, as text, is accepted by nft -c.
  it('apply A, then the plan for B: a rule that did not change keeps its handle and its counter', async () => {
    // Each network in A (and in B) three times out of four: most pairs share networks.
    const mask = fc.array(
      fc.nat(3).map((n) => n > 0),
      { minLength: 6, maxLength: 6 },
    );
    await fc.assert(
      fc.asyncProperty(networkBatchArb(1, 6), mask, mask, fc.boolean(), async (pool, inA, inB, last) => {
        const accept = pool.filter((n) => n.mode === 'open' && n.acceptOpen).map((n) => n.name);
        const config = configFromObject(
          { filter: { accept_open_networks: accept, jump: last ? 'last' : 'first' } },
          'convergence.toml',
        );
        const inputs = (pick: boolean[]) => pool.filter((_, i) => pick[i]).map((n) => parseNetworkXml(n.xml, n.origin));
        await applyBatch({
          nftables: [...adminCommands, ...withCounters(plan(inputs(inA), config, admin).batch).nftables],
        } as Batch);
        const a = await readRuleset();
        const edit = plan(inputs(inB), config, a).batch;
        await checkText('', edit);
        await applyBatch(edit);
        const b = await readRuleset();
        expect(renderBatch(plan(inputs(inB), config, b).batch.nftables), 'not converged after the edit').toBe('');
        const kept = keptRules(a, b, config);
        keptCompared += kept.compared;
        expect(kept.changed, `--- the edit:\n${renderBatch(edit.nftables)}`).toEqual([]);
      }),
      { seed, numRuns: 25, endOnFailure: false },
    );
    expect(keptCompared, 'no rule was wanted by both A and B: the property is vacuous').toBeGreaterThan(100);
  }, 180_000);

  // Docker's and ufw's chains as iptables-nft itself creates them (the real
  // iptables-nft-restore of ufw 0.36.2's rules, then Docker 20.10's beside
  // them): the marking chains and the mark accepts converge like the rest,
  // and removal leaves iptables-nft-save's view of those tables as it was.
  it('with Docker and ufw chains made by iptables-nft (mark accepts, marking chains)', async () => {
    const iptables = async (bin: string, args: string[]): Promise<string> =>
      (await runOk('ip', ['netns', 'exec', ns, bin, ...args])).stdout;
    const saved = async (): Promise<string> =>
      [await iptables('iptables-nft-save', []), await iptables('ip6tables-nft-save', [])]
        .join('')
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .map((l) => l.replace(/\[\d+:\d+\]$/, ''))
        .join('\n');
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(networkBatchArb(1, 6), async (nets) => {
        runs++;
        await applyBatch({ nftables: adminCommands } as Batch);
        await iptables('iptables-nft-restore', [fixturePath('ufw-0.36.2.rules')]);
        await iptables('ip6tables-nft-restore', [fixturePath('ufw-0.36.2.rules6')]);
        await iptables('iptables-nft-restore', ['--noflush', fixturePath('docker-20.10.rules')]);
        const before = await saved();
        const config = configFromObject({}, 'convergence.toml');
        const inputs = nets.map((n) => parseNetworkXml(n.xml, n.origin));
        const first = plan(inputs, config, await readRuleset());
        await checkText('', first.batch);
        await applyBatch(first.batch);
        const after = await readRuleset();
        const second = plan(inputs, config, after);
        expect(renderBatch(second.batch.nftables), 'not converged with foreign chains').toBe('');
        if (first.desired.forward.length > 0)
          expect(second.foreign.handled.map((h) => `${h.family} ${h.chain}`)).toEqual([
            'ip DOCKER-USER',
            'ip ufw-before-forward',
            'ip ufw-before-input',
            'ip6 ufw6-before-forward',
            'ip6 ufw6-before-input',
          ]);
        await applyBatch(plan([], config, after).batch);
        expect(await saved(), 'kvmnftd remove left iptables-nft-save different').toBe(before);
      }),
      { seed, numRuns: 12, endOnFailure: false },
    );
    expect(runs).toBe(12);
  }, 120_000);

  // The golden cases (test/golden/<case>/) against their own live ruleset as
  // far as nft can load it: libvirt's iptables-nft rules (`xt` statements)
  // cannot be written back through JSON, their tables and chains can.
  for (const name of goldenCases()) {
    it(`golden case ${name}`, async () => {
      const c = loadCase(name);
      const own = join(GOLDEN_DIR, name, 'live.json');
      const liveFile = existsSync(own) ? own : join(import.meta.dirname, '..', 'fixtures', 'live-libvirt9.json');
      const liveDoc = JSON.parse(readFileSync(liveFile, 'utf8')) as Parameters<typeof loadable>[0];
      await applyBatch({ nftables: [{ flush: { ruleset: null } }, ...loadable(liveDoc)] } as Batch);
      const first = plan(c.inputs, c.config, await readRuleset(), c.facts);
      const wantsRules = first.networks.some(
        (n) => n.mode !== 'open' || c.config.filter.acceptOpenNetworks.includes(n.name),
      );
      expect(first.batch.nftables.length > 0, 'the case plans nothing against its own live ruleset').toBe(wantsRules);
      await checkText('', first.batch);
      await applyBatch(first.batch);
      const second = plan(c.inputs, c.config, await readRuleset(), c.facts);
      expect(renderBatch(second.batch.nftables), `golden case ${name} did not converge`).toBe('');
    });
  }
});
