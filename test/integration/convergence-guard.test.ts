/**
 * The convergence guard with a real daemon in the libvirt lab: an nft wrapper
 * (test/lab/nft-never-converges.sh, first in the daemon's PATH) makes every
 * listing show one of kvmnftd's rules differently from how it was written,
 * so every plan after an apply wants the same edit again, as a
 * planner bug would. The daemon must not loop: one error line with the diff,
 * STATUS degraded, at most 2 transactions caused by its own commits within
 * 60 s, and applying again once an input changes.
 */
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';
import { networkXml } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

const WRAPPER = join(REPO_ROOT, 'test', 'lab', 'nft-never-converges.sh');

describe('a plan that never converges', () => {
  const f = useLibvirtLab({ tag: 'guard', lab: { defaultNetwork: 'start' } });

  it('one error line, degraded STATUS, no loop; applies again after a reload and on a new network', async () => {
    const bin = join(f.work, 'bin');
    mkdirSync(bin);
    symlinkSync(WRAPPER, join(bin, 'nft'));
    f.env['PATH'] = `${bin}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
    f.env['REAL_NFT'] = '/usr/sbin/nft';
    const t0 = Date.now();
    const d = await f.startDaemon('dbus');
    const errors = () => d.logs.filter((r) => r.level === 50 && r.msg.startsWith('not applying:'));
    await waitUntil('the guard to hold a batch back', 20_000, () => errors().length === 1);
    expect(errors()[0]!.msg).toContain('udp dport 67');
    await waitUntil('STATUS degraded', 5000, () => f.notify.lastStatus()?.startsWith('degraded: not applying:'));
    const first = d.applied(0).length; // the network's rules, then at most one echo before the guard saw the loop
    expect(first, d.dump()).toBeLessThanOrEqual(2);

    // Drift that changes nothing kvmnftd plans: passes run, nothing is applied, nothing more is logged.
    const held = (from: number) => d.logs.slice(from).filter((r) => /^not applying \d+ nft commands/.test(r.msg));
    const driftFrom = d.logs.length;
    for (let i = 0; i < 10; i++) await f.lab.nft('add', 'rule', 'inet', 'filter', 'input', 'counter');
    await waitUntil('the drift passes', 10_000, () => held(driftFrom).length >= 1);
    expect(d.applied(0).length, d.dump()).toBe(first);
    expect(errors()).toHaveLength(1);

    // A reload tries once more (within the budget), then holds again.
    const reloadFrom = d.logs.length;
    const reload = await f.cli('reload');
    expect(reload.exitCode, reload.stderr).toBe(0);
    await waitUntil('held again after the reload', 10_000, () => held(reloadFrom).length >= 1);
    const ownCaused = d.applied(0).length - 1; // all but the network's own first transaction
    expect(Date.now() - t0).toBeLessThan(60_000); // so the budget applies to all of them
    expect(ownCaused, d.dump()).toBeLessThanOrEqual(2);
    expect(errors()).toHaveLength(1);

    // An input change (a new network) is applied at once.
    await f.defineNetwork('guard2', networkXml('guard2', 'virbr9', 9, 'route'));
    const before = d.logs.length;
    await f.lab.virsh('net-start', 'guard2');
    await waitUntil('the new network applied', 15_000, () => d.applied(before).length >= 1);
    expect(d.applied(before)[0]!.msg, d.dump()).toContain('network guard2 up');
  }, 120_000);
});
