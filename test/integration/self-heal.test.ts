/**
 * Self-healing in the libvirt lab (libvirt 9, iptables-nft backend): the
 * admin reloading their ruleset (`nft -f`, i.e. `flush ruleset`), kvmnftd
 * killed and restarted, networks undefined while it was down, libvirt-dbus
 * killed. Real libvirtd, dnsmasq, nft and packets.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../helpers/cli.js';
import { sleep, waitUntil } from '../helpers/wait.js';
import { busOwnerPid, LAB_FILES } from '../lab/lab.js';
import {
  adminRules,
  guestReachesWan,
  libvirtChainsPresent,
  networkXml,
  ruleset,
  type Daemon,
} from './daemon-harness.js';
import { useLibvirtLab } from './libvirt-lab.js';

const ADMIN_FILE = LAB_FILES.adminRuleset;

describe('self-healing in the libvirt lab', () => {
  const f = useLibvirtLab({ tag: 'heal', lab: { defaultNetwork: 'start' }, daemon: 'dbus' });
  const D = (): Daemon => f.daemon;
  let admin0 = '';
  let port = 8080;
  // A fresh port each time: no lingering listener or conntrack entry of an earlier probe.
  // New flows for up to 5 s: what must hold is that guests get through.
  const reachesWan = (): Promise<string> => guestReachesWan(f.lab, ++port, 5000);
  const reload = (): Promise<unknown> =>
    f.lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env: f.env, reject: false });

  beforeAll(async () => {
    admin0 = await adminRules(f.lab);
    await waitUntil('default network rules', 10_000, async () =>
      (await ruleset(f.lab)).natChains.includes('nat_virbr0'),
    );
  }, 60_000);

  it("the admin reloading their ruleset (flush ruleset): our rules and libvirt's come back; guests keep DHCP and NAT", async () => {
    const lab = f.lab;
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await reachesWan()).toBe('192.0.2.1');

    const t0 = Date.now();
    await lab.nft('-f', ADMIN_FILE);
    await waitUntil('our rules restored', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const ours = Date.now() - t0;
    await waitUntil("libvirt's chains restored", 5000, () => libvirtChainsPresent(lab));
    const theirs = Date.now() - t0;
    expect(await adminRules(lab)).toBe(admin0);
    await waitUntil(
      'the daemon logs the libvirt restore',
      2000,
      () => D().logs.some((r) => r.level === 40 && r.msg.includes('sent org.fedoraproject.FirewallD1.Reloaded')),
      { detail: () => D().dump() },
    );

    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await reachesWan()).toBe('192.0.2.1');
    // libvirt can start networks again (without the restore it cannot: it creates its LIBVIRT_*
    // chains once per process, and after a flush net-start fails "No chain/target/match by that name")
    await lab.virsh('net-destroy', 'default');
    await lab.virsh('net-start', 'default');
    await lab.attachGuest('virbr0');
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await reachesWan()).toBe('192.0.2.1');
    console.log(`flush -> our rules back in ${ours} ms (incl. polling), libvirt's in ${theirs} ms`);
  }, 90_000);

  it('deleting our jump or our table by hand is repaired', async () => {
    const lab = f.lab;
    await lab.nft('delete', 'table', 'inet', 'kvmnftd');
    await waitUntil('table back', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const handle = /jump kvmnftd_forward comment "kvmnftd" # handle (\d+)/.exec(
      (await lab.nft('-a', 'list', 'chain', 'inet', 'filter', 'forward')).stdout,
    )?.[1];
    expect(handle).toBeDefined();
    await lab.nft('delete', 'rule', 'inet', 'filter', 'forward', 'handle', handle!);
    await waitUntil('jump back', 5000, async () =>
      (await lab.nft('list', 'chain', 'inet', 'filter', 'forward')).stdout.includes('jump kvmnftd_forward'),
    );
    expect(await adminRules(lab)).toBe(admin0);
  }, 30_000);

  it('SIGKILL, a network undefined while kvmnftd is down loses its rules after the restart; the rest stays', async () => {
    const lab = f.lab;
    await f.defineNetwork('gone', networkXml('gone', 'virbr9', 9, 'route'));
    await lab.virsh('net-start', 'gone');
    await waitUntil('gone rules', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=gone'),
    );

    D().child.kill('SIGKILL');
    await D().exited;
    await lab.virsh('net-destroy', 'gone');
    await lab.virsh('net-undefine', 'gone');
    expect((await ruleset(lab)).forwardComments).toContain('kvmnftd net=gone'); // nobody cleaned up yet

    await f.startDaemon('dbus');
    await waitUntil(
      'gone rules collected',
      10_000,
      async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=gone'),
    );
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await adminRules(lab)).toBe(admin0);
  }, 60_000);

  it('libvirt-dbus killed: the next net-start is still seen', async () => {
    const lab = f.lab;
    const pid = await busOwnerPid(lab, 'org.libvirt');
    expect(pid).toBeGreaterThan(1);
    process.kill(pid, 'SIGKILL');
    await f.defineNetwork('again', networkXml('again', 'virbr8', 8, 'nat'));
    await lab.virsh('net-start', 'again');
    await waitUntil('again rules', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr8'));
    await lab.virsh('net-destroy', 'again');
    await waitUntil('again rules gone', 10_000, async () => !(await ruleset(lab)).natChains.includes('nat_virbr8'));
  }, 40_000);

  it('with restore_libvirt_rules = false the daemon does not touch libvirt after a flush', async () => {
    const lab = f.lab;
    f.writeConfig('[daemon]\nrestore_libvirt_rules = false\n');
    expect(await reload()).toMatchObject({ exitCode: 0 });
    const from = D().logs.length;
    await lab.nft('-f', ADMIN_FILE);
    await waitUntil('our rules restored', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    await sleep(1500);
    expect(await libvirtChainsPresent(lab)).toBe(false);
    expect(
      D()
        .logs.slice(from)
        .some((r) => r.msg.includes('FirewallD1.Reloaded')),
    ).toBe(false);
    // put things right for whoever comes next
    f.writeConfig('# defaults\n');
    await reload();
    await lab.nft('-f', ADMIN_FILE);
    await waitUntil("libvirt's chains restored", 5000, () => libvirtChainsPresent(lab));
  }, 40_000);

  it('a transaction the kernel refuses: degraded STATUS, one log line, recovery when the admin fixes the ruleset', async () => {
    const lab = f.lab;
    const from = f.notify.messages.length;
    const logFrom = D().logs.length;
    // The admin's table re-created with `flags owner` by a live `nft -i`
    // session: the kernel refuses everyone else's changes to it (EPERM).
    const owner = lab.spawnInLab('nft', ['-i']);
    owner.stdout?.resume();
    owner.stderr?.resume();
    owner.stdin?.write(
      'flush ruleset\nadd table inet filter { flags owner; }\nadd chain inet filter input { type filter hook input priority 0; policy drop; }\nadd chain inet filter forward { type filter hook forward priority 0; policy drop; }\n',
    );
    await f.notify.waitFor(/^STATUS=degraded: nft failed applying the batch: .*Operation not permitted/, from, 10_000);
    await sleep(1500); // retries happen; they must not be logged again
    const failures = D()
      .logs.slice(logFrom)
      .filter((r) => r.level >= 40 && r.msg.startsWith('reconcile failed'));
    expect(failures.length, JSON.stringify(failures, null, 1)).toBe(1);
    // The owner goes away (its table with it); the admin loads their ruleset.
    owner.kill('SIGTERM');
    await lab.nft('-f', LAB_FILES.adminRuleset);
    await waitUntil('recovered', 15_000, () =>
      D()
        .logs.slice(logFrom)
        .some((r) => r.msg.startsWith('reconcile succeeded again')),
    );
    await waitUntil('rules back', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    // On a loaded machine the passes after the recovery (the admin's reload, then libvirt's restore) take seconds.
    await f.notify.waitFor(/^STATUS=1 network \(default\)/, from, 15_000);
    expect(await adminRules(lab)).toBe(admin0);
  }, 40_000);

  // Last: libvirtd keeps its connection to the old bus, so later tests could
  // not rely on FirewallD1.Reloaded reaching it.
  it('the system bus restarts: kvmnftd reconnects (libvirt-dbus is activated again) and sees the next net-start', async () => {
    const lab = f.lab;
    const logFrom = D().logs.length;
    process.kill(lab.busPid, 'SIGTERM');
    await waitUntil('bus gone', 5000, () => {
      try {
        process.kill(lab.busPid, 0);
        return false;
      } catch {
        return true;
      }
    });
    await lab.exec('rm', ['-f', '/run/dbus/system_bus_socket']);
    await lab.exec('dbus-daemon', ['--config-file=/run/dbus/lab-system-bus.conf', '--fork', '--print-pid']);
    // libdbus makes libvirtd exit when its bus goes away; systemd would restart it.
    await lab.restartLibvirtd();
    await waitUntil(
      'reconnected over D-Bus',
      15_000,
      () =>
        D()
          .logs.slice(logFrom)
          .some((r) => r.transport === 'dbus' && r.msg.startsWith('event source connected')),
      { detail: () => JSON.stringify(D().logs.slice(logFrom), null, 1) },
    );
    expect(
      D()
        .logs.slice(logFrom)
        .some((r) => r.level === 40 && r.msg.startsWith('lost the libvirt event source')),
    ).toBe(true);
    await f.defineNetwork('busnet', networkXml('busnet', 'virbr7', 7, 'nat'));
    await lab.virsh('net-start', 'busnet');
    await waitUntil('busnet rules', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr7'));
  }, 40_000);
});
