/**
 * Failure paths of the one-shot CLI with real nft in throwaway namespaces: a
 * transaction the kernel refuses is reported with nft's own words and leaves
 * the ruleset exactly as it was (nothing partial); a base chain that takes
 * one of kvmnftd's chain names is named, and only the NAT part applied; a
 * missing nft is named.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI_MAIN, cliContext, describeRun, fixture, useNetnsLab, runCli } from '../helpers/cli.js';
import {
  nftJson,
  nftLoadFile,
  normalizeRuleset,
  run,
  tablesOf,
  type NftObject,
  type NftRuleset,
} from '../helpers/netns.js';
import { waitUntil } from '../helpers/wait.js';

/** Every object of the admin's `inet filter` table. */
function adminTable(rs: NftRuleset): NftObject[] {
  return rs.nftables.filter((o) => {
    const t = o.table;
    const c = o.chain ?? o.rule;
    return (t?.family === 'inet' && t.name === 'filter') || (c?.family === 'inet' && c.table === 'filter');
  });
}

const theLab = useNetnsLab();

describe('faults', () => {
  it("a transaction the kernel refuses (the admin table is owned by another process): exit 1, nft's words, nothing applied", async () => {
    const ns = await theLab().netns('host');
    // `flags owner`: only the netlink socket that created the table may change
    // it, so the kernel answers EPERM to everyone else — as long as this
    // `nft -i` session lives.
    const owner = spawn('ip', ['netns', 'exec', ns, 'nft', '-i'], { stdio: ['pipe', 'ignore', 'inherit'] });
    theLab().defer('stop the owning nft -i', () => void owner.kill('SIGTERM'));
    owner.stdin.write('add table inet filter { flags owner; }\n');
    owner.stdin.write('add chain inet filter input { type filter hook input priority 0; policy drop; }\n');
    owner.stdin.write('add chain inet filter forward { type filter hook forward priority 0; policy drop; }\n');
    await waitUntil('the owned table', 10_000, async () =>
      (await nftJson(ns)).nftables.some((o) => o.chain?.name === 'forward'),
    );
    const before = normalizeRuleset(await nftJson(ns));
    const ctx = await cliContext(theLab(), '');
    const r = await runCli(ns, ['apply', '--from-xml', fixture('default.xml'), '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
    expect(r.exitCode, describeRun(r)).toBe(1);
    expect(r.stderr).toContain('nft failed applying the batch');
    expect(r.stderr).toContain('Operation not permitted');
    // One transaction: not even kvmnftd's own NAT table got in.
    expect(normalizeRuleset(await nftJson(ns))).toEqual(before);
  });

  it("a base chain named like one of kvmnftd's chains: exit 1 naming it, only the NAT part applied", async () => {
    const ns = await theLab().netns('host');
    await nftLoadFile(ns, fixture('admin-ruleset-base-collision.nft'));
    const adminBefore = adminTable(normalizeRuleset(await nftJson(ns)));
    const ctx = await cliContext(theLab(), '');
    const r = await runCli(ns, ['apply', '--from-xml', fixture('default.xml'), '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
    expect(r.exitCode, describeRun(r)).toBe(1);
    expect(r.stderr).toContain('has a base chain named kvmnftd_input');
    const after = normalizeRuleset(await nftJson(ns));
    expect(
      tablesOf(after)
        .map((t) => `${t.family} ${t.name}`)
        .sort(),
    ).toEqual(['inet filter', 'inet kvmnftd']);
    expect(adminTable(after)).toEqual(adminBefore);
  });

  it('nft missing: exit 1 with an error that says so', async () => {
    const ns = await theLab().netns('host');
    const bin = await mkdtemp(join(tmpdir(), 'kvmnftd-nonft-'));
    theLab().defer(`remove ${bin}`, () => rm(bin, { recursive: true, force: true }));
    await symlink(process.execPath, join(bin, 'node'));
    const ctx = await cliContext(theLab(), '');
    // Only kvmnftd runs with a PATH without nft; `ip` and `env` are found as usual.
    const r = await run('ip', [
      'netns',
      'exec',
      ns,
      'env',
      `PATH=${bin}`,
      `KVMNFTD_RUNTIME_DIR=${ctx.runtimeDir}`,
      process.execPath,
      CLI_MAIN,
      'apply',
      '--from-xml',
      fixture('default.xml'),
      '--config',
      ctx.configFile,
    ]);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toContain('nft not found: install the nftables package');
  });
});
