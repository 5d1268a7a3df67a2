/**
 * `kvmnftd plan/apply/remove` against a real nftables ruleset, as root, inside
 * throwaway network namespaces. Rulesets are compared as `nft -j list ruleset`
 * output with counters, handles and metainfo stripped (unless stated).
 */
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  chainOf,
  chainsOf,
  isJumpTo,
  jumpsTo,
  matchesIpSaddr,
  nftJson,
  nftLoadFile,
  nftText,
  normalizeRuleset,
  readProcSys,
  ruleHas,
  rulesOf,
  tablesOf,
  type NftChain,
  type NftRule,
  type NftRuleset,
} from '../helpers/netns.js';
import {
  cliContext,
  describeRun,
  fixture,
  useNetnsLab,
  runCliIn,
  type CliContext,
  type CliResult,
} from '../helpers/cli.js';
import { sleep } from '../helpers/wait.js';

const ADMIN = fixture('admin-ruleset.nft');
const ADMIN_JUMP_NONE = fixture('admin-ruleset-jump-none.nft');
const DEFAULT_XML = fixture('default.xml');

const BASE_CHAINS = [
  { base: 'input', ours: 'kvmnftd_input' },
  { base: 'forward', ours: 'kvmnftd_forward' },
] as const;

type JumpMode = 'first' | 'last' | 'none';

const theLab = useNetnsLab();

/** A host namespace with virbr0 (192.168.122.1/24) and the admin ruleset loaded. */
/** The admin's host, a CLI context with that config, and the admin's ruleset before kvmnftd (normalised). */
async function adminSetup(configToml = '') {
  const ns = await adminHost();
  const ctx = await cliContext(theLab(), configToml);
  return { ns, ctx, admin0: await normalized(ns) };
}

async function adminHost(role = 'host', adminFile = ADMIN): Promise<string> {
  const l = theLab();
  const ns = await l.netns(role);
  await l.bridge(ns, 'virbr0');
  await l.addr(ns, 'virbr0', '192.168.122.1/24');
  await nftLoadFile(ns, adminFile);
  return ns;
}

function expectExit(r: CliResult, code: number): void {
  expect(r.exitCode, describeRun(r)).toBe(code);
}

const cli = runCliIn;

async function apply(ns: string, ctx: CliContext, xml: string[] = [DEFAULT_XML]): Promise<CliResult> {
  return cli(ns, ctx, 'apply', ...xml.flatMap((x) => ['--from-xml', x]));
}

async function normalized(ns: string): Promise<NftRuleset> {
  return normalizeRuleset(await nftJson(ns));
}

function tableKeys(rs: NftRuleset): string[] {
  return tablesOf(rs)
    .map((t) => `${t.family} ${t.name}`)
    .sort();
}

/** Admin base chain definitions (type/hook/prio/policy) of `inet filter`. */
function adminChainDefs(rs: NftRuleset): NftChain[] {
  return chainsOf(rs, 'inet', 'filter').filter(
    (c) => c.name === 'input' || c.name === 'forward' || c.name === 'output',
  );
}

/**
 * The admin's part of the ruleset is unchanged, except for exactly one jump
 * per base chain at the configured position (none for jump = "none").
 */
function expectAdminIntactWithJumps(admin0: NftRuleset, after: NftRuleset, mode: JumpMode): void {
  const dump = JSON.stringify(after, null, 1);
  expect(adminChainDefs(after), 'admin base chain definitions changed').toEqual(adminChainDefs(admin0));
  expect(rulesOf(after, 'inet', 'filter', 'output'), 'admin output chain changed').toEqual(
    rulesOf(admin0, 'inet', 'filter', 'output'),
  );

  for (const { base, ours } of BASE_CHAINS) {
    const before = rulesOf(admin0, 'inet', 'filter', base);
    const now = rulesOf(after, 'inet', 'filter', base);
    if (mode === 'none') {
      expect(now, `jump=none: admin chain ${base} must be untouched`).toEqual(before);
    } else {
      expect(now.length, `${base}: expected admin rules + one jump\n${dump}`).toBe(before.length + 1);
      const idx = mode === 'first' ? 0 : now.length - 1;
      const jump = now[idx]!;
      expect(isJumpTo(jump, ours), `${base}: rule ${idx} should be "jump ${ours}": ${JSON.stringify(jump)}`).toBe(true);
      expect(String(jump.comment ?? ''), `${base}: our jump rule must carry a "kvmnftd..." comment`).toMatch(
        /^kvmnftd/,
      );
      const rest = now.filter((_, i) => i !== idx);
      expect(rest, `${base}: admin rules changed`).toEqual(before);
    }
    expect(jumpsTo(after, ours), `exactly one jump to ${ours} in the whole ruleset\n${dump}`).toHaveLength(1);
    // Our chain exists in the admin table and has been filled.
    expect(chainOf(after, 'inet', 'filter', ours), `chain inet filter ${ours} missing`).toBeDefined();
    expect(rulesOf(after, 'inet', 'filter', ours).length, `chain ${ours} is empty`).toBeGreaterThan(0);
  }

  // No stray chains in the admin table beyond our two.
  const names = chainsOf(after, 'inet', 'filter')
    .map((c) => c.name)
    .sort();
  const expected = [
    ...new Set([...chainsOf(admin0, 'inet', 'filter').map((c) => c.name), 'kvmnftd_input', 'kvmnftd_forward']),
  ].sort();
  expect(names).toEqual(expected);
}

/** Our own table: `inet kvmnftd` with nat postrouting at 99 -> nat_virbr0 with counter'ed masquerade. */
function expectNatTable(after: NftRuleset): void {
  const dump = JSON.stringify(after, null, 1);
  expect(tableKeys(after), dump).toContain('inet kvmnftd');
  const post = chainOf(after, 'inet', 'kvmnftd', 'postrouting');
  expect(post, `chain inet kvmnftd postrouting missing\n${dump}`).toBeDefined();
  expect(post).toMatchObject({ type: 'nat', hook: 'postrouting', prio: 99 });
  const postRules = rulesOf(after, 'inet', 'kvmnftd', 'postrouting');
  expect(
    postRules.filter((r) => isJumpTo(r, 'nat_virbr0')),
    `postrouting must jump to nat_virbr0\n${dump}`,
  ).toHaveLength(1);

  const nat = rulesOf(after, 'inet', 'kvmnftd', 'nat_virbr0');
  const masq = nat.filter((r) => ruleHas(r, 'masquerade'));
  expect(masq.length, `no masquerade rule in nat_virbr0\n${dump}`).toBeGreaterThan(0);
  for (const r of masq) {
    expect(
      matchesIpSaddr(r, '192.168.122.0', 24),
      `masquerade without ip saddr 192.168.122.0/24: ${JSON.stringify(r)}`,
    ).toBe(true);
    expect(ruleHas(r, 'counter'), `masquerade without counter: ${JSON.stringify(r)}`).toBe(true);
  }
  // The plain one from the contract: ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade
  const plain = masq.filter((r) =>
    (r.expr ?? []).some(
      (e) =>
        e.match?.op === '!=' &&
        e.match?.left?.payload?.field === 'daddr' &&
        e.match?.right?.prefix?.addr === '192.168.122.0' &&
        e.match?.right?.prefix?.len === 24,
    ),
  );
  expect(plain.length, `no "ip daddr != 192.168.122.0/24" masquerade rule\n${dump}`).toBeGreaterThan(0);
}

/** Forward chain: guest -> outside accepted from the subnet; inbound only established/related. */
function expectForwardPolicy(after: NftRuleset): void {
  const rules = rulesOf(after, 'inet', 'filter', 'kvmnftd_forward');
  const dump = JSON.stringify(rules, null, 1);
  const accepts = (r: NftRule): boolean => (r.expr ?? []).some((e) => 'accept' in e);
  expect(
    rules.some((r) => accepts(r) && matchesIpSaddr(r, '192.168.122.0', 24)),
    `no accept from 192.168.122.0/24\n${dump}`,
  ).toBe(true);
  // Any accept towards the guests (daddr in the subnet) must be conditional on ct state.
  for (const r of rules) {
    const inbound = (r.expr ?? []).some(
      (e) =>
        e.match?.op !== '!=' &&
        e.match?.left?.payload?.field === 'daddr' &&
        e.match?.right?.prefix?.addr === '192.168.122.0',
    );
    if (inbound && accepts(r)) {
      expect(JSON.stringify(r.expr), `inbound accept without ct state: ${JSON.stringify(r)}`).toMatch(/"ct"/);
    }
  }
  const input = rulesOf(after, 'inet', 'filter', 'kvmnftd_input');
  expect(JSON.stringify(input), 'input rules should concern virbr0').toContain('virbr0');
}

describe('kvmnftd apply/remove on a strict admin ruleset (jump = "first")', () => {
  it('adds one jump per base chain at position 0 and its own nat table; is idempotent; remove restores the admin ruleset', async () => {
    const ns = await adminHost();
    const ctx = await cliContext(theLab(), '');
    await theLab().sysctl(ns, 'net.ipv4.ip_forward', '0');
    const admin0 = await normalized(ns);

    const r1 = await apply(ns, ctx);
    expectExit(r1, 0);
    const after1Raw = await nftJson(ns);
    const after1 = normalizeRuleset(after1Raw);
    expect(tableKeys(after1)).toEqual([...tableKeys(admin0), 'inet kvmnftd'].sort());
    expectAdminIntactWithJumps(admin0, after1, 'first');
    expectNatTable(after1);
    expectForwardPolicy(after1);
    expect(await readProcSys(ns, 'net/ipv4/ip_forward'), 'manage_ipv4 defaults to true').toBe('1');

    // Nothing differs now: the plan is an empty batch...
    const p = await cli(ns, ctx, 'plan', '--json', '--from-xml', DEFAULT_XML);
    expectExit(p, 0);
    let planned: unknown;
    expect(
      () => (planned = JSON.parse(p.stdout) as unknown),
      `plan --json stdout is not JSON: ${describeRun(p)}`,
    ).not.toThrow();
    expect(planned, describeRun(p)).toEqual({ nftables: [] });

    // ...and a second apply changes nothing at all (same handles: nothing re-created).
    const r2 = await apply(ns, ctx);
    expectExit(r2, 0);
    const after2Raw = await nftJson(ns);
    expect(normalizeRuleset(after2Raw, { keepHandles: true })).toEqual(
      normalizeRuleset(after1Raw, { keepHandles: true }),
    );

    // remove: back to exactly the admin's ruleset.
    const rm = await cli(ns, ctx, 'remove');
    expectExit(rm, 0);
    const afterRemove = await normalized(ns);
    expect(afterRemove, await nftText(ns)).toEqual(admin0);
  });

  it('plan text and plan JSON mean the same ruleset as apply', async () => {
    const l = theLab();
    const nsText = await adminHost('text');
    const nsApply = await adminHost('apply');
    const nsJson = await adminHost('json');
    const ctx = await cliContext(l, '');

    const planText = await cli(nsText, ctx, 'plan', '--from-xml', DEFAULT_XML);
    expectExit(planText, 0);
    expect(planText.stdout.trim().length, 'text plan is empty').toBeGreaterThan(0);
    const textFile = join(ctx.dir, 'plan.nft');
    await writeFile(textFile, planText.stdout);
    await nftLoadFile(nsText, textFile);

    const planJson = await cli(nsJson, ctx, 'plan', '--json', '--from-xml', DEFAULT_XML);
    expectExit(planJson, 0);
    const batch = JSON.parse(planJson.stdout) as NftRuleset;
    expect(batch.nftables.length, 'JSON plan is empty').toBeGreaterThan(0);
    const jsonFile = join(ctx.dir, 'plan.json');
    await writeFile(jsonFile, planJson.stdout);
    await nftLoadFile(nsJson, jsonFile, true);

    const applied = await apply(nsApply, ctx);
    expectExit(applied, 0);

    const viaApply = await normalized(nsApply);
    expect(await normalized(nsText), 'nft -f of the text plan differs from apply').toEqual(viaApply);
    expect(await normalized(nsJson), 'nft -j -f of the JSON plan differs from apply').toEqual(viaApply);
  });

  it('a stale snapshot never loses an admin rule: admin reloads between applies', async () => {
    const { ns, ctx, admin0 } = await adminSetup();

    expectExit(await apply(ns, ctx), 0);
    const first = await normalized(ns);
    expectAdminIntactWithJumps(admin0, first, 'first');

    // The admin reloads their ruleset (flush ruleset + re-create): our objects are gone.
    await nftLoadFile(ns, ADMIN);
    expect(await normalized(ns)).toEqual(admin0);

    // The next apply must see the new state, not an old snapshot.
    expectExit(await apply(ns, ctx), 0);
    const second = await normalized(ns);
    expectAdminIntactWithJumps(admin0, second, 'first');
    expectNatTable(second);
    expect(second).toEqual(first);
  });

  it('concurrent admin reloads racing apply never lose an admin rule or duplicate a jump', async () => {
    const { ns, ctx, admin0 } = await adminSetup();

    for (let i = 0; i < 14; i++) {
      // Deliberate jitter (not a wait for a condition): the admin's reload lands
      // before the CLI's snapshot, between snapshot and commit, or after the commit.
      const jitterMs = i * 20;
      const reload = sleep(jitterMs).then(() => nftLoadFile(ns, ADMIN));
      const [r] = await Promise.all([apply(ns, ctx), reload]);
      // Either it won, or it lost the race and failed cleanly; never a usage error.
      expect([0, 1], describeRun(r)).toContain(r.exitCode);
      const now = await normalized(ns);
      const ownTable = tableKeys(now).includes('inet kvmnftd');
      for (const { base, ours } of BASE_CHAINS) {
        const rules = rulesOf(now, 'inet', 'filter', base).filter((x) => !isJumpTo(x, ours));
        expect(rules, `iteration ${i}: admin rules of ${base} lost or changed`).toEqual(
          rulesOf(admin0, 'inet', 'filter', base),
        );
        // One transaction: our jump and our table exist together or not at all.
        expect(jumpsTo(now, ours).length, `iteration ${i}: jumps to ${ours} (own table present: ${ownTable})`).toBe(
          ownTable ? 1 : 0,
        );
      }
    }
    // Afterwards a plain apply converges to the normal state.
    expectExit(await apply(ns, ctx), 0);
    const settled = await normalized(ns);
    expectAdminIntactWithJumps(admin0, settled, 'first');
    expectNatTable(settled);
  });

  it('remove after the admin already flushed our objects leaves the admin ruleset alone', async () => {
    const { ns, ctx, admin0 } = await adminSetup();
    expectExit(await apply(ns, ctx), 0);
    await nftLoadFile(ns, ADMIN);
    const rm = await cli(ns, ctx, 'remove');
    expectExit(rm, 0);
    expect(await normalized(ns)).toEqual(admin0);
  });
});

describe('jump position', () => {
  it('jump = "last" puts the jump after every admin rule; remove restores', async () => {
    const { ns, ctx, admin0 } = await adminSetup('[filter]\njump = "last"\n');

    expectExit(await apply(ns, ctx), 0);
    const after = await normalized(ns);
    expectAdminIntactWithJumps(admin0, after, 'last');
    expectNatTable(after);

    const p = await cli(ns, ctx, 'plan', '--json', '--from-xml', DEFAULT_XML);
    expectExit(p, 0);
    expect(JSON.parse(p.stdout), describeRun(p)).toEqual({ nftables: [] });

    expectExit(await cli(ns, ctx, 'remove'), 0);
    expect(await normalized(ns)).toEqual(admin0);
  });

  it('jump = "none" fills the admin-declared chains, adds no jump, and remove only empties them', async () => {
    const ns = await adminHost('host', ADMIN_JUMP_NONE);
    const ctx = await cliContext(theLab(), '[filter]\njump = "none"\n');
    const admin0 = await normalized(ns);
    // The fixture really has the admin's own jumps and empty chains.
    for (const { ours } of BASE_CHAINS) {
      expect(jumpsTo(admin0, ours)).toHaveLength(1);
      expect(rulesOf(admin0, 'inet', 'filter', ours)).toHaveLength(0);
    }

    expectExit(await apply(ns, ctx), 0);
    const after = await normalized(ns);
    expectAdminIntactWithJumps(admin0, after, 'none');
    expectNatTable(after);
    expectForwardPolicy(after);

    const p = await cli(ns, ctx, 'plan', '--json', '--from-xml', DEFAULT_XML);
    expectExit(p, 0);
    expect(JSON.parse(p.stdout), describeRun(p)).toEqual({ nftables: [] });

    expectExit(await cli(ns, ctx, 'remove'), 0);
    const afterRemove = await normalized(ns);
    expect(afterRemove, await nftText(ns)).toEqual(admin0);
  });
});

describe('configuration', () => {
  it('[forwarding] manage_ipv4 = false leaves net.ipv4.ip_forward alone', async () => {
    const ns = await adminHost();
    const l = theLab();
    await l.sysctl(ns, 'net.ipv4.ip_forward', '0');
    const ctx = await cliContext(l, '[forwarding]\nmanage_ipv4 = false\n');
    expectExit(await apply(ns, ctx), 0);
    expect(await readProcSys(ns, 'net/ipv4/ip_forward')).toBe('0');
    expectNatTable(await normalized(ns));
  });

  it('[filter] table names the admin table kvmnftd hooks into', async () => {
    const l = theLab();
    const ns = await l.netns('host');
    const ctx = await cliContext(l, '[filter]\nfamily = "inet"\ntable = "fw"\n');
    // The same admin ruleset, in a table called "fw".
    const text = (await readFile(ADMIN, 'utf8')).replace('table inet filter {', 'table inet fw {');
    const file = join(ctx.dir, 'admin-fw.nft');
    await writeFile(file, text);
    await nftLoadFile(ns, file);
    const admin0 = await normalized(ns);

    expectExit(await apply(ns, ctx), 0);
    const after = await normalized(ns);
    expect(tableKeys(after)).toEqual(['inet fw', 'inet kvmnftd']);
    for (const { base, ours } of BASE_CHAINS) {
      const now = rulesOf(after, 'inet', 'fw', base);
      expect(isJumpTo(now[0]!, ours), `${base} rule 0 should jump to ${ours}`).toBe(true);
      expect(now.slice(1)).toEqual(rulesOf(admin0, 'inet', 'fw', base));
      expect(rulesOf(after, 'inet', 'fw', ours).length).toBeGreaterThan(0);
    }
    expectExit(await cli(ns, ctx, 'remove'), 0);
    expect(await normalized(ns)).toEqual(admin0);
  });
});

describe('configuration errors', () => {
  it('an unknown config key exits 2 and changes nothing', async () => {
    const ns = await adminHost();
    const l = theLab();
    await l.sysctl(ns, 'net.ipv4.ip_forward', '0');
    const before = normalizeRuleset(await nftJson(ns), { keepHandles: true });

    for (const toml of ['no_such_key = 1\n', '[filter]\nno_such_key = "x"\n', '[filter]\njump = "sideways"\n']) {
      const ctx = await cliContext(l, toml);
      const r = await apply(ns, ctx);
      expect(r.exitCode, `config ${JSON.stringify(toml)}: ${describeRun(r)}`).toBe(2);
      const p = await cli(ns, ctx, 'plan', '--json', '--from-xml', DEFAULT_XML);
      expect(p.exitCode, `config ${JSON.stringify(toml)}: ${describeRun(p)}`).toBe(2);
    }
    expect(normalizeRuleset(await nftJson(ns), { keepHandles: true })).toEqual(before);
    expect(await readProcSys(ns, 'net/ipv4/ip_forward')).toBe('0');
  });

  it('an unknown option is a usage error (exit 2) and changes nothing', async () => {
    const ns = await adminHost();
    const ctx = await cliContext(theLab(), '');
    const before = normalizeRuleset(await nftJson(ns), { keepHandles: true });
    const r = await cli(ns, ctx, 'apply', '--no-such-option', '--from-xml', DEFAULT_XML);
    expectExit(r, 2);
    expect(normalizeRuleset(await nftJson(ns), { keepHandles: true })).toEqual(before);
  });

  it('the admin ruleset fixture is what the tests think it is', async () => {
    // Guards the fixtures themselves: the extra admin rule is there.
    const text = await readFile(ADMIN, 'utf8');
    expect(text).toMatch(/flush ruleset/);
    expect(text).toMatch(/tcp dport 22 accept/);
  });
});
