/**
 * Self-healing in the libvirt lab (libvirt 9, iptables-nft backend): the
 * admin reloading their ruleset (`nft -f`, i.e. `flush ruleset`), kvmnftd
 * killed and restarted, networks undefined while it was down, libvirt-dbus
 * killed. Real libvirtd, dnsmasq, nft and packets.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
import { LAB_FILES, startLab, type Lab } from '../lab/lab.js';
import {
  adminRules,
  libvirtChainsPresent,
  networkXml,
  NotifySocket,
  ruleset,
  spawnDaemon,
  type Daemon,
  type DaemonEnv,
} from './daemon-harness.js';
import { sleep, waitUntil } from '../helpers/wait.js';

const ADMIN_FILE = LAB_FILES.adminRuleset;

describe('self-healing in the libvirt lab', () => {
  let lab: Lab | undefined;
  let notify: NotifySocket | undefined;
  let daemon: Daemon | undefined;
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-heal-'));
  const config = join(work, 'kvmnftd.toml');
  const env: DaemonEnv = {
    KVMNFTD_RUNTIME_DIR: join(work, 'run'),
    KVMNFTD_LOG_FORMAT: 'json',
    NOTIFY_SOCKET: join(work, 'notify'),
  };
  const L = (): Lab =>
    lab ??
    (() => {
      throw new Error('no lab');
    })();
  const D = (): Daemon =>
    daemon ??
    (() => {
      throw new Error('no daemon');
    })();
  let admin0 = '';

  const start = async (): Promise<Daemon> => {
    const from = notify!.messages.length;
    daemon = spawnDaemon(L(), CLI_MAIN, env, ['--events', 'dbus', '--config', config]);
    await notify!.waitFor('READY=1', from);
    return daemon;
  };
  let port = 8080;
  const guestReachesWan = async (): Promise<string> => {
    // A fresh port each time: no lingering listener or conntrack entry of an earlier probe.
    port++;
    const listener = await L().tcpListen(port);
    try {
      // While libvirt re-adds its own rules after a FirewallD1.Reloaded (tens
      // of ms, iptables-nft: its chains end in `reject`), one SYN can meet
      // libvirt's reject before libvirt's accept is back. New flows, a few
      // times, for up to 5 s: what must hold is that guests get through.
      let probe = await L().tcpProbe('192.0.2.2', port);
      for (let tries = 1; !probe.ok && tries < 10; tries++) {
        await sleep(500);
        probe = await L().tcpProbe('192.0.2.2', port);
      }
      expect(probe.ok, probe.output).toBe(true);
      return await listener.waitForPeer(5000, 0);
    } finally {
      await listener.close();
    }
  };

  beforeAll(async () => {
    requireBuiltCli();
    writeFileSync(config, '# defaults\n');
    lab = await startLab({ defaultNetwork: 'start' });
    admin0 = await adminRules(lab);
    notify = new NotifySocket(env.NOTIFY_SOCKET);
    await notify.ready();
    await start();
    await waitUntil('default network rules', 10_000, async () => (await ruleset(L())).natChains.includes('nat_virbr0'));
  }, 60_000);

  afterAll(async () => {
    notify?.close();
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it("the admin reloading their ruleset (flush ruleset): our rules and libvirt's come back; guests keep DHCP and NAT", async () => {
    const lab = L();
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');

    const t0 = Date.now();
    await lab.nft('-f', ADMIN_FILE);
    await waitUntil('our rules restored', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const ours = Date.now() - t0;
    await waitUntil("libvirt's chains restored", 5000, () => libvirtChainsPresent(lab));
    const theirs = Date.now() - t0;
    expect(await adminRules(lab)).toBe(admin0);
    await waitUntil('the daemon logs the libvirt restore', 2000, () =>
      D().logs.some((r) => r.level === 40 && r.msg.includes('sent org.fedoraproject.FirewallD1.Reloaded')),
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${D().dump()}`);
    });

    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // libvirt can start networks again (without the restore it cannot: FACTS.md)
    await lab.virsh('net-destroy', 'default');
    await lab.virsh('net-start', 'default');
    await lab.attachGuest('virbr0');
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // eslint-disable-next-line no-console
    console.log(`flush -> our rules back in ${ours} ms (incl. polling), libvirt's in ${theirs} ms`);
  }, 90_000);

  it('deleting our jump or our table by hand is repaired', async () => {
    const lab = L();
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
    const lab = L();
    const xml = join(work, 'gone.xml');
    writeFileSync(xml, networkXml('gone', 'virbr9', 9, 'route'));
    await lab.virsh('net-define', xml);
    await lab.virsh('net-start', 'gone');
    await waitUntil('gone rules', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=gone'),
    );

    D().child.kill('SIGKILL');
    await D().exited;
    await lab.virsh('net-destroy', 'gone');
    await lab.virsh('net-undefine', 'gone');
    expect((await ruleset(lab)).forwardComments).toContain('kvmnftd net=gone'); // nobody cleaned up yet

    await start();
    await waitUntil(
      'gone rules collected',
      10_000,
      async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=gone'),
    );
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await adminRules(lab)).toBe(admin0);
  }, 60_000);

  it('libvirt-dbus killed: the next net-start is still seen', async () => {
    const lab = L();
    const owner = (
      await lab.exec('dbus-send', [
        '--system',
        '--print-reply',
        '--dest=org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus.GetConnectionUnixProcessID',
        'string:org.libvirt',
      ])
    ).stdout;
    const pid = Number(/uint32 (\d+)/.exec(owner)?.[1]);
    expect(pid).toBeGreaterThan(1);
    process.kill(pid, 'SIGKILL');
    const xml = join(work, 'again.xml');
    writeFileSync(xml, networkXml('again', 'virbr8', 8, 'nat'));
    await lab.virsh('net-define', xml);
    await lab.virsh('net-start', 'again');
    await waitUntil('again rules', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr8'));
    await lab.virsh('net-destroy', 'again');
    await waitUntil('again rules gone', 10_000, async () => !(await ruleset(lab)).natChains.includes('nat_virbr8'));
  }, 40_000);

  it('with restore_libvirt_rules = false the daemon does not touch libvirt after a flush', async () => {
    const lab = L();
    writeFileSync(config, '[daemon]\nrestore_libvirt_rules = false\n');
    expect((await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false })).exitCode).toBe(0);
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
    writeFileSync(config, '# defaults\n');
    await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false });
    await lab.nft('-f', ADMIN_FILE);
    await waitUntil("libvirt's chains restored", 5000, () => libvirtChainsPresent(lab));
  }, 40_000);

  it('a transaction the kernel refuses: degraded STATUS, one log line, recovery when the admin fixes the ruleset', async () => {
    const lab = L();
    const from = notify!.messages.length;
    const logFrom = D().logs.length;
    // The admin's table re-created with `flags owner` by a live `nft -i`
    // session: the kernel refuses everyone else's changes to it (EPERM).
    const owner = lab.spawnInLab('nft', ['-i']);
    owner.stdout?.resume();
    owner.stderr?.resume();
    owner.stdin?.write(
      'flush ruleset\nadd table inet filter { flags owner; }\nadd chain inet filter input { type filter hook input priority 0; policy drop; }\nadd chain inet filter forward { type filter hook forward priority 0; policy drop; }\n',
    );
    await notify!.waitFor(/^STATUS=degraded: nft failed applying the batch: .*Operation not permitted/, from, 10_000);
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
    await notify!.waitFor(/^STATUS=1 network \(default\)/, from, 5000);
    expect(await adminRules(lab)).toBe(admin0);
  }, 40_000);

  // Last: libvirtd keeps its connection to the old bus, so later tests could
  // not rely on FirewallD1.Reloaded reaching it.
  it('the system bus restarts: kvmnftd reconnects (libvirt-dbus is activated again) and sees the next net-start', async () => {
    const lab = L();
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
    await waitUntil('reconnected over D-Bus', 15_000, () =>
      D()
        .logs.slice(logFrom)
        .some((r) => r.transport === 'dbus' && r.msg.startsWith('event source connected')),
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${JSON.stringify(D().logs.slice(logFrom), null, 1)}`);
    });
    expect(
      D()
        .logs.slice(logFrom)
        .some((r) => r.level === 40 && r.msg.startsWith('lost the libvirt event source')),
    ).toBe(true);
    const xml = join(work, 'busnet.xml');
    writeFileSync(xml, networkXml('busnet', 'virbr7', 7, 'nat'));
    await lab.virsh('net-define', xml);
    await lab.virsh('net-start', 'busnet');
    await waitUntil('busnet rules', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr7'));
  }, 40_000);
});
