/**
 * `kvmnftd run` in the hermetic libvirt lab (test/lab): real dbus-daemon with
 * D-Bus-activated libvirt-dbus, real libvirtd and dnsmasq, real nft, real
 * packets. The daemon reports to a NOTIFY_SOCKET this test owns. Both event
 * transports run the same scenarios.
 */
import { describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../helpers/cli.js';
import { sleep, waitUntil } from '../helpers/wait.js';
import { guestReachesWan, LabMonitor, networkXml, ruleset, taggedRules } from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

const lab2Rules = (comments: string[]): boolean => comments.includes('kvmnftd net=lab2');

describe.each(['dbus', 'virsh'] as const)('kvmnftd run --events %s in the libvirt lab', (transport) => {
  const f = useLibvirtLab({ tag: `daemon-${transport}`, lab: { defaultNetwork: 'define' }, daemon: transport });

  it('reaches READY=1 with a STATUS line, using the requested transport', () => {
    expect(f.notify.messages).toContain('READY=1');
    expect(f.notify.lastStatus(), f.daemon.dump()).toBe('0 networks');
    expect(
      f.daemon.logs.some((r) => r['transport'] === transport && r.msg.startsWith('events:')),
      f.daemon.dump(),
    ).toBe(true);
  }, 30_000);

  it('virsh net-start default: rules appear by themselves; the guest gets DHCP and reaches the wan, masqueraded', async () => {
    const { lab, daemon } = f;
    const before = daemon.logs.length;
    const t0 = Date.now();
    await lab.virsh('net-start', 'default');
    await waitUntil('nat_virbr0 in table inet kvmnftd', 10_000, async () =>
      (await ruleset(lab)).natChains.includes('nat_virbr0'),
    );
    const latency = Date.now() - t0;
    // The commit is visible before the daemon gets to log it.
    await waitUntil('the daemon logs the change', 2000, () => daemon.applied(before).length >= 1);
    expect(daemon.applied(before)[0]!.msg).toContain('network default up');
    await waitUntil('STATUS names default', 5000, () =>
      f.notify.lastStatus()?.startsWith('1 network (default); last change'),
    );

    expect(await lab.dhcp()).toMatch(/^192\.168\.122\.\d+$/);
    expect(await guestReachesWan(lab, 8080)).toBe('192.0.2.1');
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
    console.log(`[${transport}] net-start -> rules visible: ${latency} ms (incl. virsh)`);
  }, 60_000);

  // The daemon's transaction for lab2 edits kvmnftd_input and kvmnftd_forward
  // in place: default's rules, which counted the guest's real packets above
  // (DHCP, masquerade, forward), are the same rules after, handle and counter.
  it('a second (routed) network gets its rules; the first keeps its own, with their handles and counters', async () => {
    const before = await taggedRules(f.lab, 'kvmnftd net=default');
    const counting = [...before].filter(([, r]) => r.packets > 0);
    expect(counting.length, JSON.stringify([...before])).toBeGreaterThanOrEqual(3);
    const from = f.daemon.logs.length;
    await f.defineNetwork('lab2', networkXml('lab2', 'virbr1', 1, 'route'));
    await f.lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 forward rules', 10_000, async () => lab2Rules((await ruleset(f.lab)).forwardComments));
    await waitUntil('the daemon logs the change', 2000, () => f.daemon.applied(from).length >= 1);
    const rs = await ruleset(f.lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
    const after = await taggedRules(f.lab, 'kvmnftd net=default');
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [key, r] of before) {
      const now = after.get(key)!;
      expect(now.handle, `${key}: the same rule`).toBe(r.handle);
      expect(now.packets, `${key}: its counter kept`).toBeGreaterThanOrEqual(r.packets);
    }
    console.log(
      `[${transport}] ${counting.length} of default's rules counting (${counting.map(([, r]) => r.packets).join(', ')} packets) ` +
        `kept their handles and counters through lab2's transaction`,
    );
  }, 30_000);

  it("virsh net-destroy removes that network's rules only", async () => {
    await f.lab.virsh('net-destroy', 'lab2');
    await waitUntil('lab2 rules gone', 10_000, async () => !lab2Rules((await ruleset(f.lab)).forwardComments));
    const rs = await ruleset(f.lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
  }, 30_000);

  // Every line of `nft monitor` and every lifecycle event triggers the daemon.
  // libvirt's own firewall changes for 20 networks are hundreds of monitor
  // lines (measured here: 700-1100 for 20 concurrent net-starts, 2400-4500
  // for sequential ones) and the daemon ran 3-4 passes (11-22 sequential): a
  // daemon without coalescing runs one pass per trigger.
  it('20 networks started at once: final ruleset correct; the triggers are coalesced into a few passes', async () => {
    const { lab, daemon } = f;
    const names = Array.from({ length: 20 }, (_, i) => `burst${i}`);
    for (const [i, name] of names.entries()) await f.defineNetwork(name, networkXml(name, `vbb${i}`, 100 + i, 'nat'));
    const monitor = await LabMonitor.start(lab);
    const before = daemon.logs.length;
    const monitorFrom = monitor.lines.length;
    // libvirt runs them one after the other (seconds each on a busy machine): the last virsh waits for all.
    const virsh = (...args: string[]) => lab.exec('virsh', ['-c', 'qemu:///system', ...args], { timeoutMs: 150_000 });
    try {
      await Promise.all(names.map((name) => virsh('net-start', name)));
      const want = ['nat_virbr0', ...names.map((_, i) => `nat_vbb${i}`)].sort();
      await waitUntil('21 NAT chains', 30_000, async () => (await ruleset(lab)).natChains.join() === want.join());
      await waitUntil('the daemon logs the transaction with all 21 networks', 5000, () =>
        daemon.applied(before).some((r) => String(r['networks']).split(',').length === 21),
      );
      const passes = daemon.passes(before).length;
      const triggers = daemon.events(before).length + monitor.lines.length - monitorFrom;
      const transactions = daemon.applied(before).length;
      console.log(
        `[${transport}] 20 net-starts: ${triggers} triggers -> ${passes} passes, ${transactions} transactions`,
      );
      expect(daemon.events(before).length, 'lifecycle events received').toBeGreaterThanOrEqual(20);
      // Coalesced, not one pass per trigger. A pass through the nft session, with the apply lock held for the
      // daemon's life, takes a few ms, so fewer triggers fold into each than when it took two nft processes and
      // a flock(1): 28-33 passes for 680 triggers then, 61-70 now (2026-12-02).
      expect(passes, `${passes} passes for ${triggers} triggers`).toBeLessThanOrEqual(triggers / 6);
    } finally {
      monitor.child.kill('SIGTERM');
      for (const name of names)
        await lab.exec('virsh', ['-c', 'qemu:///system', 'net-destroy', name], { reject: false });
    }
    await waitUntil(
      'back to one NAT chain',
      30_000,
      async () => (await ruleset(lab)).natChains.join() === 'nat_virbr0',
    );
  }, 240_000);

  it('after a libvirtd restart the next net-start is still seen', async () => {
    const lab = f.lab;
    await lab.restartLibvirtd();
    await sleep(300);
    await lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 rules after libvirtd restart', 10_000, async () =>
      lab2Rules((await ruleset(lab)).forwardComments),
    );
    await lab.virsh('net-destroy', 'lab2');
    await waitUntil('lab2 rules gone again', 10_000, async () => !lab2Rules((await ruleset(lab)).forwardComments));
  }, 40_000);

  it('kvmnftd reload waits for RELOADING=1 ... READY=1; a broken config is rejected and the old one stays', async () => {
    const { lab, notify } = f;
    const from = notify.messages.length;
    const ok = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env: f.env, reject: false });
    expect(ok.exitCode, ok.stderr).toBe(0);
    const reloading = await notify.waitFor('RELOADING=1', from, 1000);
    await notify.waitFor('READY=1', reloading, 1000);

    f.writeConfig('[filter]\njump = "sideways"\n');
    const bad = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env: f.env, reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain('filter.jump');
    expect(f.daemon.child.exitCode).toBeNull();
    f.writeConfig('# defaults\n');
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
  }, 30_000);

  it('while it runs, kvmnftd apply is refused naming it; remove --force removes and the daemon puts the rules back', async () => {
    const { lab } = f;
    const applied = await f.cli('apply');
    expect(applied.exitCode, applied.stderr).toBe(1);
    expect(applied.stderr).toContain(`the kvmnftd daemon (PID ${f.daemon.child.pid}) keeps the ruleset`);
    const removed = await f.cli('remove', '--force');
    expect(removed.exitCode, removed.stderr).toBe(0);
    expect(removed.stderr).toMatch(/removed kvmnftd's rules/);
    await waitUntil('the daemon re-applied', 10_000, async () => (await ruleset(lab)).natChains.length === 1);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
  }, 30_000);

  it('SIGTERM: STOPPING=1, exit 0, and the rules stay in place', async () => {
    const d = f.daemon;
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    await f.notify.waitFor('STOPPING=1', 0, 2000);
    expect((await ruleset(f.lab)).natChains).toEqual(['nat_virbr0']);
    const errors = d.logs.filter((r) => r.level >= 50 && !r.msg.startsWith('SIGHUP: new configuration rejected'));
    expect(errors.length, JSON.stringify(errors)).toBe(0);
  }, 30_000);
});
