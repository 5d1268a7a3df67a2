/**
 * Docker's and ufw's drop-policy chains (issue 12) with real nft and real
 * iptables-nft (1.8.9 here), in throwaway network namespaces:
 *
 * - iptables-nft reads kvmnftd's mark accept back as
 *   `-m mark --mark 0x2000/0x2000 -m comment --comment kvmnftd -j ACCEPT`,
 *   lists every table without a warning, and restores its own saved output
 *   unchanged; `kvmnftd remove` leaves iptables-nft-save as it was;
 * - packets: with Docker's FORWARD policy drop (its real rules, loaded with
 *   iptables-nft-restore), a guest gets out only with kvmnftd's marks; no
 *   NEW connection from the wan reaches the NAT guest; a packet arriving
 *   with the bit already set gains nothing;
 * - DOCKER-USER vanishing between the read and the commit: the transaction
 *   fails, is planned again and retried once; when it keeps failing, the
 *   plan without the foreign part goes in (degraded), and the next pass
 *   applies the whole plan.
 *
 *   guest (192.168.122.50) ══ vnet0 ─ virbr0 (192.168.122.1)  [host: Docker's iptables rules]
 *                                     eth0 (192.0.2.1) ══ eth0 (192.0.2.2)  [wan]
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { Batch } from '../../src/nft/json.js';
import { nftRunner, type NftRunner } from '../../src/nft/nft-runner.js';
import { isOurMarkAccept } from '../../src/nft/ownership.js';
import { plan } from '../../src/nft/plan.js';
import { indexRuleset, tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { syncOnce } from '../../src/nft/sync.js';
import { cliContext, describeRun, fixture, runCliIn, tempDir, useNetnsLab, type CliContext } from '../helpers/cli.js';
import { nftJson, nftLoadFile, nsRun, nsRunOk, tcpProbe, type Lab, type ProbeResult } from '../helpers/netns.js';
import { waitUntil } from '../helpers/wait.js';

const ADMIN = fixture('admin-ruleset.nft');
const DEFAULT_XML = fixture('default.xml');
const DOCKER = fixture('docker-20.10.rules');
const UFW4 = fixture('ufw-0.36.2.rules');
const UFW6 = fixture('ufw-0.36.2.rules6');

const HOST_WAN = '192.0.2.1';
const WAN = '192.0.2.2';
const GW = '192.168.122.1';
const GUEST = '192.168.122.50';
/** What iptables-nft prints for kvmnftd's mark accept (default filter.accept_mark). */
const MARK_ACCEPT = '-m mark --mark 0x2000/0x2000 -m comment --comment kvmnftd -j ACCEPT';

const theLab = useNetnsLab();

/** iptables-nft-save of both families, comments and counters aside. */
async function saved(ns: string): Promise<string> {
  const out: string[] = [];
  for (const bin of ['iptables-nft-save', 'ip6tables-nft-save']) {
    const r = await nsRunOk(ns, bin, []);
    expect(r.stderr, `${bin} warned`).toBe('');
    out.push(r.stdout);
  }
  return withoutCounters(out.join(''));
}

function withoutCounters(save: string): string {
  return save
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');
}

/** Docker 20.10's rules, and ufw's first when asked (ufw at boot, Docker later beside it). */
async function loadForeign(ns: string, withUfw: boolean): Promise<void> {
  if (withUfw) {
    await nsRunOk(ns, 'iptables-nft-restore', [UFW4]);
    await nsRunOk(ns, 'ip6tables-nft-restore', [UFW6]);
  }
  await nsRunOk(ns, 'iptables-nft-restore', [...(withUfw ? ['--noflush'] : []), DOCKER]);
}

async function apply(ns: string, ctx: CliContext): Promise<void> {
  const r = await runCliIn(ns, ctx, 'apply', '--from-xml', DEFAULT_XML);
  expect(r.exitCode, describeRun(r)).toBe(0);
}

async function remove(ns: string, ctx: CliContext): Promise<void> {
  const r = await runCliIn(ns, ctx, 'remove');
  expect(r.exitCode, describeRun(r)).toBe(0);
}

describe('iptables-nft reads what kvmnftd writes into its tables', () => {
  it('lists every table without warnings, shows the mark accept, round-trips, and remove restores', async () => {
    const l = theLab();
    const ns = await l.netns('host');
    await l.bridge(ns, 'virbr0');
    await nftLoadFile(ns, ADMIN);
    await loadForeign(ns, true);
    const before = await saved(ns);
    const ctx = await cliContext(l, '');
    await apply(ns, ctx);

    for (const [bin, args] of [
      ['iptables-nft', ['-S']],
      ['ip6tables-nft', ['-S']],
      ['iptables-nft', ['-t', 'nat', '-S']],
      ['iptables-nft-save', []],
      ['ip6tables-nft-save', []],
    ] as const) {
      const r = await nsRun(ns, bin, args);
      expect(r.exitCode, `${bin} ${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(`${r.stdout}${r.stderr}`, `${bin} ${args.join(' ')}`).not.toMatch(/incompatible|Warning/i);
    }
    const v4 = (await nsRunOk(ns, 'iptables-nft', ['-S'])).stdout;
    const v6 = (await nsRunOk(ns, 'ip6tables-nft', ['-S'])).stdout;
    for (const chain of ['DOCKER-USER', 'ufw-before-forward', 'ufw-before-input'])
      expect(v4.split('\n'), v4).toContain(`-A ${chain} ${MARK_ACCEPT}`);
    for (const chain of ['ufw6-before-forward', 'ufw6-before-input'])
      expect(v6.split('\n'), v6).toContain(`-A ${chain} ${MARK_ACCEPT}`);
    // One each, nothing else of ours in their tables.
    expect(v4.split('\n').filter((line) => line.includes('kvmnftd'))).toHaveLength(3);

    await remove(ns, ctx);
    expect(await saved(ns), 'kvmnftd remove left the iptables-nft view different').toBe(before);

    // Save, restore, save again: equal (counters aside), with kvmnftd's rules in.
    await apply(ns, ctx);
    const dir = await tempDir(l);
    for (const [save, restore] of [
      ['iptables-nft-save', 'iptables-nft-restore'],
      ['ip6tables-nft-save', 'ip6tables-nft-restore'],
    ] as const) {
      const first = (await nsRunOk(ns, save, [])).stdout;
      expect(first).toContain(MARK_ACCEPT);
      const file = join(dir, `${save}.txt`);
      await writeFile(file, first);
      await nsRunOk(ns, restore, [file]);
      const second = (await nsRunOk(ns, save, [])).stdout;
      expect(withoutCounters(second), `${restore} of ${save}'s output changed it`).toBe(withoutCounters(first));
    }
  });
});

// ---- packets ------------------------------------------------------------------

interface Topology {
  host: string;
  wan: string;
  guest: string;
}

/** A host with Docker's iptables rules (FORWARD policy drop) and no admin nft table. */
async function dockerHost(l: Lab): Promise<Topology> {
  const host = await l.netns('host');
  const wan = await l.netns('wan');
  const guest = await l.netns('guest');
  await l.veth(host, 'eth0', wan, 'eth0');
  await l.addr(host, 'eth0', `${HOST_WAN}/24`);
  await l.addr(wan, 'eth0', `${WAN}/24`);
  await l.bridge(host, 'virbr0');
  await l.addr(host, 'virbr0', `${GW}/24`);
  await l.veth(host, 'vnet0', guest, 'eth0');
  await l.enslave(host, 'vnet0', 'virbr0');
  await l.addr(guest, 'eth0', `${GUEST}/24`);
  await l.route(guest, 'default', GW);
  await l.bridge(host, 'docker0');
  await loadForeign(host, false);
  await l.sysctl(host, 'net.ipv4.ip_forward', '1'); // Docker switched it on (hence its FORWARD DROP)
  const policy = (await nsRunOk(host, 'iptables-nft', ['-S', 'FORWARD'])).stdout;
  expect(policy.split('\n')[0], "the lab must have Docker's FORWARD policy drop").toBe('-P FORWARD DROP');
  return { host, wan, guest };
}

async function eventuallyConnects(from: string, host: string, port: number): Promise<ProbeResult> {
  let last: ProbeResult | undefined;
  return waitUntil(
    `a TCP connection from ${from} to ${host}:${port}`,
    15_000,
    async () => {
      last = await tcpProbe(from, host, port, 2_000);
      return last.ok ? last : undefined;
    },
    { intervalMs: 100, detail: () => `last probe: ${JSON.stringify(last)}` },
  );
}

/** Packets of one counter rule in a table of the test's own (nft -j list). */
async function counted(ns: string, table: string, chain: string): Promise<number> {
  const rs = await nftJson(ns);
  let n = 0;
  for (const o of rs.nftables)
    if (o.rule?.family === 'ip' && o.rule.table === table && o.rule.chain === chain)
      for (const e of o.rule.expr ?? []) n += e.counter?.packets ?? 0;
  return n;
}

describe("packets through Docker's FORWARD policy drop", () => {
  it("a guest gets out only with kvmnftd's marks; nothing NEW comes in; a preset bit gains nothing", async () => {
    const l = theLab();
    const t = await dockerHost(l);
    const listener = await l.tcpListener(t.wan, WAN, 0);
    expect(await tcpProbe(t.host, WAN, listener.port, 5_000), 'lab wiring: host -> wan').toMatchObject({ ok: true });
    const blockedBefore = await tcpProbe(t.guest, WAN, listener.port, 2_000);
    expect(blockedBefore.ok, "Docker's policy must drop the guest before kvmnftd").toBe(false);

    // filter.foreign_chains = "report": the NAT part goes in, Docker's chain stays as it is: still dropped.
    const report = await cliContext(l, '[filter]\nforeign_chains = "report"\n');
    await apply(t.host, report);
    const dockerUser = (await nsRunOk(t.host, 'iptables-nft', ['-S', 'DOCKER-USER'])).stdout;
    expect(dockerUser).not.toContain('kvmnftd');
    expect((await tcpProbe(t.guest, WAN, listener.port, 2_000)).ok, 'report mode must not open it').toBe(false);

    // The default, "accept": the marks let exactly kvmnftd's accepted traffic through.
    const ctx = await cliContext(l, '');
    await apply(t.host, ctx);
    const out = await eventuallyConnects(t.guest, WAN, listener.port);
    expect(out.local).toBe(GUEST);
    expect(listener.peers.at(-1), 'masqueraded to the host').toBe(HOST_WAN);

    // A NEW connection from the wan to the NAT guest stays dropped.
    const guestListener = await l.tcpListener(t.guest, GUEST, 0);
    await l.route(t.wan, '192.168.122.0/24', HOST_WAN);
    const inbound = await tcpProbe(t.wan, GUEST, guestListener.port, 2_000);
    expect(inbound.ok, `wan reached the NAT guest: ${JSON.stringify(inbound)}`).toBe(false);

    // Every packet arrives with the bit already set (a scratch table of the test's at prerouting);
    // `seen` proves they still carry it on the forward hook before kvmnftd's marking chain.
    const scratch = join(await tempDir(l), 'scratch.nft');
    await writeFile(
      scratch,
      [
        'table ip scratch {',
        '  chain pre {',
        '    type filter hook prerouting priority -300; policy accept;',
        '    meta mark set meta mark | 0x2000',
        '  }',
        '  chain seen {',
        '    type filter hook forward priority -2; policy accept;',
        '    meta mark & 0x2000 == 0x2000 counter',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    await nftLoadFile(t.host, scratch);
    const spoofed = await tcpProbe(t.wan, GUEST, guestListener.port, 2_000);
    expect(spoofed.ok, `a preset mark bit opened the NAT guest: ${JSON.stringify(spoofed)}`).toBe(false);
    expect(await counted(t.host, 'scratch', 'seen'), 'the spoofed bit must reach the forward hook').toBeGreaterThan(0);
    expect(guestListener.peers, 'the guest saw a connection from the wan').toEqual([]);
    // The guest's own traffic still gets out with the bit preset (cleared, then set by kvmnftd).
    await eventuallyConnects(t.guest, WAN, listener.port);

    // kvmnftd remove: Docker's chain as before, the guest cut off again.
    await nsRunOk(t.host, 'nft', ['delete', 'table', 'ip', 'scratch']);
    await remove(t.host, ctx);
    expect((await nsRunOk(t.host, 'iptables-nft', ['-S', 'DOCKER-USER'])).stdout.trim()).toBe(
      '-N DOCKER-USER\n-A DOCKER-USER -j RETURN',
    );
    expect((await tcpProbe(t.guest, WAN, listener.port, 2_000)).ok, 'still open after remove').toBe(false);
  });
});

// ---- DOCKER-USER vanishing between the read and the commit ------------------------

/** kvmnftd's nft runner, run inside the namespace through a two-line wrapper. */
async function runnerIn(l: Lab, ns: string): Promise<NftRunner> {
  const dir = await tempDir(l);
  const wrapper = join(dir, 'nft');
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`);
  await chmod(wrapper, 0o755);
  return nftRunner(dir, wrapper);
}

/** Docker deleting DOCKER-USER (as iptables -X after unhooking it); `back` re-creates it as Docker does. */
async function dockerUserGone(ns: string): Promise<void> {
  await nsRunOk(ns, 'iptables-nft', ['-D', 'FORWARD', '-j', 'DOCKER-USER']);
  await nsRunOk(ns, 'iptables-nft', ['-F', 'DOCKER-USER']);
  await nsRunOk(ns, 'iptables-nft', ['-X', 'DOCKER-USER']);
}
async function dockerUserBack(ns: string): Promise<void> {
  await nsRunOk(ns, 'iptables-nft', ['-N', 'DOCKER-USER']);
  await nsRunOk(ns, 'iptables-nft', ['-A', 'DOCKER-USER', '-j', 'RETURN']);
  await nsRunOk(ns, 'iptables-nft', ['-I', 'FORWARD', '-j', 'DOCKER-USER']);
}

describe('the foreign chain vanishes between the read and the commit', () => {
  const config = configFromObject({ forwarding: { manage_ipv4: false } }, 'test.toml');

  async function setup(): Promise<{ l: Lab; ns: string; real: NftRunner }> {
    const l = theLab();
    const ns = await l.netns('host');
    await nftLoadFile(ns, ADMIN);
    await loadForeign(ns, false);
    return { l, ns, real: await runnerIn(l, ns) };
  }

  const networks = async () => [parseNetworkXml(await readFile(DEFAULT_XML, 'utf8'), 'default.xml')];
  const read = async (ns: string): Promise<Ruleset> => indexRuleset(await nftJson(ns));
  const dockerUserAccepts = (r: Ruleset): number =>
    r.tables.get(tableKey('ip', 'filter'))?.chains.get('DOCKER-USER')?.rules.filter(isOurMarkAccept).length ?? -1;

  it('gone for good: the whole transaction fails, the retry from a fresh read applies', async () => {
    const { ns, real } = await setup();
    const batches: Batch[] = [];
    let vanished = false;
    const nft: NftRunner = {
      readRuleset: () => real.readRuleset(),
      async apply(batch) {
        batches.push(batch);
        if (!vanished) {
          vanished = true;
          await dockerUserGone(ns);
        }
        await real.apply(batch);
      },
    };
    const r = await syncOnce(await networks(), config, nft);
    expect(batches).toHaveLength(2);
    expect(JSON.stringify(batches[0])).toContain('DOCKER-USER');
    expect(JSON.stringify(batches[1])).not.toContain('DOCKER-USER');
    expect(r.foreignDegraded).toBeUndefined();
    const live = await read(ns);
    // Nothing of the failed first transaction went in: no marking chains without a chain to read them.
    expect(live.tables.get(tableKey('inet', 'kvmnftd'))!.chains.has('mark_forward')).toBe(false);
    expect(plan(await networks(), config, live).batch.nftables).toEqual([]);
  });

  it('keeps vanishing: applied without the foreign part (degraded), then whole on the next pass', async () => {
    const { ns, real } = await setup();
    let failures = 0;
    const flapping: NftRunner = {
      readRuleset: () => real.readRuleset(),
      async apply(batch) {
        const touchesDocker = JSON.stringify(batch).includes('DOCKER-USER');
        if (touchesDocker) await dockerUserGone(ns);
        try {
          await real.apply(batch);
        } catch (err) {
          failures++;
          throw err;
        } finally {
          if (touchesDocker) await dockerUserBack(ns);
        }
      },
    };
    const degraded = await syncOnce(await networks(), config, flapping);
    expect(failures).toBe(2);
    expect(degraded.applied).toBe(true);
    expect(degraded.foreignDegraded).toMatch(
      /^applied without the mark accepts in ip filter DOCKER-USER: nft failed applying the batch: .*No such file or directory/,
    );
    let live = await read(ns);
    const admin = live.tables.get(tableKey('inet', 'filter'))!;
    expect(admin.chains.get('kvmnftd_forward')!.rules.length, "the networks' own rules went in").toBeGreaterThan(1);
    expect(dockerUserAccepts(live)).toBe(0);

    // The next pass, Docker settled: the whole plan, and then nothing left to do.
    const next = await syncOnce(await networks(), config, real);
    expect(next.foreignDegraded).toBeUndefined();
    expect(next.applied).toBe(true);
    live = await read(ns);
    expect(dockerUserAccepts(live)).toBe(1);
    expect(plan(await networks(), config, live).batch.nftables).toEqual([]);
  });
});
