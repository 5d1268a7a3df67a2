/**
 * `kvmnftd run` in the hermetic libvirt lab (test/lab): real dbus-daemon with
 * D-Bus-activated libvirt-dbus, real libvirtd and dnsmasq, real nft, real
 * packets. The daemon reports to a NOTIFY_SOCKET this test owns. Both event
 * transports run the same scenarios.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
import { startLab, type Lab } from '../lab/lab.js';
import { Daemon, networkXml, NotifySocket, ruleset } from './daemon-harness.js';
import { sleep, waitUntil } from '../helpers/wait.js';

describe.each(['dbus', 'virsh'] as const)('kvmnftd run --events %s in the libvirt lab', (transport) => {
  let lab: Lab | undefined;
  let notify: NotifySocket | undefined;
  let daemon: Daemon | undefined;
  const work = mkdtempSync(join(tmpdir(), `kvmnftd-daemon-${transport}-`));
  const config = join(work, 'kvmnftd.toml');
  const env = {
    KVMNFTD_RUNTIME_DIR: join(work, 'run'),
    KVMNFTD_LOG_FORMAT: 'json',
    NOTIFY_SOCKET: join(work, 'notify'),
  };
  const theLab = (): Lab =>
    lab ??
    (() => {
      throw new Error('lab not started');
    })();
  const theDaemon = (): Daemon =>
    daemon ??
    (() => {
      throw new Error('daemon not started');
    })();
  const theNotify = (): NotifySocket =>
    notify ??
    (() => {
      throw new Error('notify socket missing');
    })();

  beforeAll(async () => {
    requireBuiltCli();
    writeFileSync(config, '# defaults\n');
    lab = await startLab({ defaultNetwork: 'define' });
    notify = new NotifySocket(env.NOTIFY_SOCKET);
    await notify.ready();
    daemon = new Daemon(
      lab.spawnInLab(
        process.execPath,
        [CLI_MAIN, 'run', '--events', transport, '--config', config, '--log-level', 'debug'],
        env,
      ),
    );
  }, 60_000);

  afterAll(async () => {
    notify?.close();
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('reaches READY=1 with a STATUS line, using the requested transport', async () => {
    await theNotify().waitFor('READY=1');
    expect(theNotify().lastStatus(), theDaemon().dump()).toBe('0 networks');
    expect(
      theDaemon().logs.some((r) => r['transport'] === transport && r.msg.startsWith('events:')),
      theDaemon().dump(),
    ).toBe(true);
  }, 30_000);

  it('virsh net-start default: rules appear by themselves; the guest gets DHCP and reaches the wan, masqueraded', async () => {
    const lab = theLab();
    const before = theDaemon().logs.length;
    const t0 = Date.now();
    await lab.virsh('net-start', 'default');
    await waitUntil('nat_virbr0 in table inet kvmnftd', 10_000, async () =>
      (await ruleset(lab)).natChains.includes('nat_virbr0'),
    );
    const latency = Date.now() - t0;
    // The commit is visible before the daemon gets to log it.
    await waitUntil('the daemon logs the change', 2000, () => theDaemon().applied(before).length >= 1);
    expect(theDaemon().applied(before)[0]!.msg).toContain('network default up');
    await waitUntil('STATUS names default', 5000, () =>
      theNotify().lastStatus()?.startsWith('1 network (default); last change'),
    );

    const lease = await lab.dhcp();
    expect(lease).toMatch(/^192\.168\.122\.\d+$/);
    const listener = await lab.tcpListen(8080);
    const probe = await lab.tcpProbe('192.0.2.2', 8080);
    expect(probe.ok, probe.output).toBe(true);
    expect(await listener.waitForPeer(5000, 0)).toBe('192.0.2.1');
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
    await listener.close();
    // eslint-disable-next-line no-console
    console.log(`[${transport}] net-start -> rules visible: ${latency} ms (incl. virsh)`);
  }, 60_000);

  it('a second (routed) network gets its rules; the first keeps its own', async () => {
    const lab = theLab();
    const xml = join(work, 'lab2.xml');
    writeFileSync(xml, networkXml('lab2', 'virbr1', 1, 'route'));
    await lab.virsh('net-define', xml);
    await lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 forward rules', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    const rs = await ruleset(lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
  }, 30_000);

  it("virsh net-destroy removes that network's rules only", async () => {
    const lab = theLab();
    await lab.virsh('net-destroy', 'lab2');
    await waitUntil(
      'lab2 rules gone',
      10_000,
      async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    const rs = await ruleset(lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
  }, 30_000);

  it('20 networks started back to back: final ruleset correct, events coalesced', async () => {
    const lab = theLab();
    const names = Array.from({ length: 20 }, (_, i) => `burst${i}`);
    for (const [i, name] of names.entries()) {
      const xml = join(work, `${name}.xml`);
      writeFileSync(xml, networkXml(name, `vbb${i}`, 100 + i, 'nat'));
      await lab.virsh('net-define', xml);
    }
    const before = theDaemon().logs.length;
    for (const name of names) await lab.virsh('net-start', name);
    const want = ['nat_virbr0', ...names.map((_, i) => `nat_vbb${i}`)].sort();
    await waitUntil(
      '21 NAT chains',
      20_000,
      async () => JSON.stringify((await ruleset(lab)).natChains) === JSON.stringify(want),
    );
    const transactions = theDaemon().applied(before).length;
    expect(transactions).toBeGreaterThanOrEqual(1);
    expect(transactions).toBeLessThanOrEqual(20);
    for (const name of names) await lab.virsh('net-destroy', name);
    await waitUntil(
      'back to one NAT chain',
      20_000,
      async () => JSON.stringify((await ruleset(lab)).natChains) === '["nat_virbr0"]',
    );
    // eslint-disable-next-line no-console
    console.log(`[${transport}] 20 net-starts -> ${transactions} transactions`);
  }, 90_000);

  it('after a libvirtd restart the next net-start is still seen', async () => {
    const lab = theLab();
    await lab.restartLibvirtd();
    await sleep(300);
    await lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 rules after libvirtd restart', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    await lab.virsh('net-destroy', 'lab2');
    await waitUntil(
      'lab2 rules gone again',
      10_000,
      async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
  }, 40_000);

  it('kvmnftd reload waits for RELOADING=1 ... READY=1; a broken config is rejected and the old one stays', async () => {
    const lab = theLab();
    const from = theNotify().messages.length;
    const ok = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false });
    expect(ok.exitCode, ok.stderr).toBe(0);
    const reloading = await theNotify().waitFor('RELOADING=1', from, 1000);
    await theNotify().waitFor('READY=1', reloading, 1000);

    writeFileSync(config, '[filter]\njump = "sideways"\n');
    const bad = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain('filter.jump');
    expect(theDaemon().child.exitCode).toBeNull();
    writeFileSync(config, '# defaults\n');
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
  }, 30_000);

  it('SIGTERM: STOPPING=1, exit 0, and the rules stay in place', async () => {
    const lab = theLab();
    const d = theDaemon();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    await theNotify().waitFor('STOPPING=1', 0, 2000);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    const errors = d.logs.filter((r) => r.level >= 50 && !r.msg.startsWith('SIGHUP: new configuration rejected'));
    expect(errors.length, JSON.stringify(errors)).toBe(0);
  }, 30_000);
});
