/**
 * Failure paths of the one-shot CLI with real nft in throwaway namespaces: a
 * transaction the kernel refuses is reported with nft's own words and leaves
 * the ruleset exactly as it was (nothing partial); a missing nft is named.
 */
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI_MAIN, cliContext, describeRun, fixture, requireBuiltCli, runCli } from '../helpers/cli.js';
import { Lab, nftJson, nftLoadFile, normalizeRuleset, requireLabPrivileges, run } from '../helpers/netns.js';

let lab: Lab | undefined;
beforeEach(() => {
  requireLabPrivileges();
  requireBuiltCli();
  lab = new Lab();
});
afterEach(async () => {
  await lab?.cleanup();
  lab = undefined;
});

describe('faults', () => {
  it('a transaction the kernel refuses: exit 1, nft\'s error text, the ruleset untouched (no partial NAT table)', async () => {
    const ns = await lab!.netns('host');
    await nftLoadFile(ns, fixture('admin-ruleset-base-collision.nft'));
    const before = normalizeRuleset(await nftJson(ns));
    const ctx = await cliContext(lab!, '');
    const r = await runCli(ns, ['apply', '--from-xml', fixture('default.xml'), '--config', ctx.configFile], { runtimeDir: ctx.runtimeDir });
    expect(r.exitCode, describeRun(r)).toBe(1);
    expect(r.stderr).toMatch(/nft failed applying the batch: .*(Operation not supported|Invalid argument|Error)/);
    expect(normalizeRuleset(await nftJson(ns))).toEqual(before);
  });

  it('nft missing: exit 1 with an error that says so', async () => {
    const ns = await lab!.netns('host');
    const bin = await mkdtemp(join(tmpdir(), 'kvmnftd-nonft-'));
    lab!.defer(`remove ${bin}`, () => rm(bin, { recursive: true, force: true }));
    await symlink(process.execPath, join(bin, 'node'));
    const ctx = await cliContext(lab!, '');
    // Only kvmnftd runs with a PATH without nft; `ip` and `env` are found as usual.
    const r = await run('ip', ['netns', 'exec', ns, 'env', `PATH=${bin}`, `KVMNFTD_RUNTIME_DIR=${ctx.runtimeDir}`, process.execPath, CLI_MAIN, 'apply', '--from-xml', fixture('default.xml'), '--config', ctx.configFile]);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toContain('nft not found: install the nftables package');
  });
});
