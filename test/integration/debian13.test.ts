/**
 * Debian 13 (trixie): libvirt 11.3, nftables 1.1.3, libvirt-dbus 1.4, dnsmasq
 * 2.91 and kvmnftd itself on trixie's node 20.19 — the libvirt lab
 * (test/lab/lab.ts) run inside the test root of test/lab/trixie-root.sh
 * (built with debootstrap + apt-get, cached). libvirtd is the monolithic
 * daemon (`libvirtd -d`), as in the Debian 12 lab.
 *
 * Both of libvirt 11's firewall backends (`firewall_backend` in network.conf),
 * each with both event transports (D-Bus, virsh):
 *   - nftables: libvirt's own `ip`/`ip6 libvirt_network` tables;
 *   - iptables: LIBVIRT_* chains in iptables-nft's ip filter/nat/mangle.
 * Scenarios: DHCP + NAT behind the admin's drop policy, a second network,
 * destroy, events, the admin's `nft -f` (our rules and libvirt's come back;
 * net-start works again), and coexistence: kvmnftd never changes libvirt's
 * tables (compared as nft prints them, counters ignored) when it applies,
 * runs, stops or removes its rules.
 *
 * This machine's kernel has no tc csum action: with the nftables backend the
 * root's `tc` ignores exactly that failing command (test/lab/tc-csum-wrapper.sh)
 * and the test prints what was ignored.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
import { LAB_FILES, startLab, type Lab } from '../lab/lab.js';
import { ensureTrixieRoot } from '../lab/trixie-root.js';
import {
  adminRules,
  networkXml,
  NotifySocket,
  ruleset,
  type Daemon,
  type DaemonEnv,
  Daemon as DaemonClass,
} from './daemon-harness.js';
import { sleep, waitUntil } from '../helpers/wait.js';

type Backend = 'nftables' | 'iptables';

/** Tables kvmnftd must never touch: everything but the admin's `inet filter` and kvmnftd's own table. */
export async function foreignTables(lab: Lab): Promise<string> {
  const tables = (await lab.nft('list', 'tables')).stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('table ') && l !== 'table inet filter' && l !== 'table inet kvmnftd')
    .sort();
  const out: string[] = [];
  for (const t of tables) {
    const [, family, name] = t.split(' ');
    const text = (await lab.nft('list', 'table', family!, name!)).stdout;
    out.push(
      ...text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => l.replace(/\bcounter packets \d+ bytes \d+/g, 'counter')),
    );
  }
  return out.join('\n');
}

/** libvirt's own rules for the configured backend are in place. */
async function libvirtRulesFor(lab: Lab, backend: Backend, bridge: string): Promise<boolean> {
  const text = (await lab.nft('list', 'ruleset')).stdout;
  if (backend === 'nftables') {
    return (
      /table ip libvirt_network/.test(text) && new RegExp(`oif "${bridge}"`).test(text) && !text.includes('LIBVIRT_FWO')
    );
  }
  return (
    text.includes('chain LIBVIRT_FWO') &&
    new RegExp(`iifname "${bridge}"`).test(text) &&
    !text.includes('libvirt_network')
  );
}

const combos: Array<[Backend, 'dbus' | 'virsh']> = [
  ['nftables', 'dbus'],
  ['nftables', 'virsh'],
  ['iptables', 'dbus'],
  ['iptables', 'virsh'],
];

describe.each(combos)('Debian 13, libvirt 11 %s backend, kvmnftd run --events %s', (backend, transport) => {
  let lab: Lab | undefined;
  let notify: NotifySocket | undefined;
  let daemon: Daemon | undefined;
  const work = mkdtempSync(join(tmpdir(), `kvmnftd-deb13-${backend}-${transport}-`));
  const config = join(work, 'kvmnftd.toml');
  const env: DaemonEnv = {
    KVMNFTD_RUNTIME_DIR: join(work, 'run'),
    KVMNFTD_LOG_FORMAT: 'json',
    NOTIFY_SOCKET: join(work, 'notify'),
  };
  const L = (): Lab =>
    lab ??
    (() => {
      throw new Error('lab not started');
    })();
  const D = (): Daemon =>
    daemon ??
    (() => {
      throw new Error('daemon not started');
    })();
  const N = (): NotifySocket =>
    notify ??
    (() => {
      throw new Error('no notify socket');
    })();
  let admin0 = '';
  let libvirt0 = '';
  let port = 9100;

  const cli = (...args: string[]) =>
    L().exec(L().node, [CLI_MAIN, ...args, '--config', config], { env, reject: false });
  const startDaemon = async (): Promise<Daemon> => {
    const from = N().messages.length;
    daemon = new DaemonClass(
      L().spawnInLab(
        L().node,
        [CLI_MAIN, 'run', '--events', transport, '--config', config, '--log-level', 'debug'],
        env,
      ),
    );
    await N()
      .waitFor('READY=1', from)
      .catch((e: Error) => {
        throw new Error(`${e.message}\n${D().dump()}`);
      });
    return daemon;
  };
  const guestReachesWan = async (): Promise<string> => {
    port++;
    const listener = await L().tcpListen(port);
    try {
      const probe = await L().tcpProbe('192.0.2.2', port);
      expect(probe.ok, probe.output).toBe(true);
      return await listener.waitForPeer(5000, 0);
    } finally {
      await listener.close();
    }
  };
  const converged = async (): Promise<void> => {
    const r = await cli('plan', '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(
      (JSON.parse(r.stdout) as { nftables: unknown[] }).nftables.filter(
        (c) => !(typeof c === 'object' && c !== null && 'metainfo' in c),
      ),
    ).toEqual([]);
  };

  beforeAll(async () => {
    requireBuiltCli();
    const root = await ensureTrixieRoot();
    // eslint-disable-next-line no-console
    console.log(`Debian 13 test root: ${root.path} (${root.ms} ms): ${root.log.split('\n').pop()}`);
    writeFileSync(config, '# defaults\n');
    lab = await startLab({ root: root.path, firewallBackend: backend, defaultNetwork: 'start' });
    admin0 = await adminRules(lab);
    libvirt0 = await foreignTables(lab);
    notify = new NotifySocket(env.NOTIFY_SOCKET);
    await notify.ready();
  }, 15 * 60_000);

  afterAll(async () => {
    notify?.close();
    const ignored = lab?.tcCsumIgnored() ?? [];
    if (ignored.length > 0) {
      // eslint-disable-next-line no-console
      console.log(
        `[${backend}/${transport}] NOTE: the test root's tc wrapper ignored ${ignored.length} failing tc command(s) (this kernel has no tc csum action):\n  ${ignored.join('\n  ')}`,
      );
    }
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it("the lab runs libvirt 11 with the configured backend; kvmnftd runs on trixie's node", async () => {
    const lab = L();
    expect((await lab.exec('libvirtd', ['--version'])).stdout).toMatch(/libvirtd \(libvirt\) 11\./);
    expect((await lab.exec(lab.node, ['--version'])).stdout).toMatch(/^v20\./);
    expect((await lab.exec('nft', ['--version'])).stdout).toMatch(/v1\.1\./);
    expect(await libvirtRulesFor(lab, backend, 'virbr0')).toBe(true);
    const ignored = lab.tcCsumIgnored();
    // Exactly the csum filter of each started network, nothing else.
    for (const line of ignored) expect(line).toMatch(/^IGNORED \(exit \d+\): tc filter add dev virbr0 .*action csum /);
    if (backend === 'iptables') expect(ignored).toEqual([]);
  });

  it("kvmnftd apply, run, SIGTERM and remove never change libvirt's tables", async () => {
    const lab = L();
    const a = await cli('apply');
    expect(a.exitCode, a.stderr).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await foreignTables(lab)).toBe(libvirt0);
    await converged();

    const d = await startDaemon();
    await sleep(500);
    expect(await foreignTables(lab)).toBe(libvirt0);
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(await foreignTables(lab)).toBe(libvirt0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);

    const r = await cli('remove');
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual([]);
    expect((await lab.nft('list', 'tables')).stdout).not.toContain('kvmnftd');
    expect(await adminRules(lab)).toBe(admin0);
    expect(await foreignTables(lab)).toBe(libvirt0);
  }, 60_000);

  it('daemon: rules for the running network appear, and stay converged (no churn on nft 1.1)', async () => {
    const lab = L();
    const d = await startDaemon();
    await waitUntil('nat_virbr0', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    await converged();
    const applied = d.applied().length;
    await sleep(1500);
    expect(d.applied().length, d.dump()).toBe(applied);
    expect(await foreignTables(lab)).toBe(libvirt0);
  }, 30_000);

  it("DHCP and NAT behind the drop policy: lease, TCP to the wan masqueraded by kvmnftd's rule", async () => {
    const lab = L();
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\.\d+$/);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // kvmnftd's NAT chain (srcnat - 1) is the one that translated it.
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
  }, 60_000);

  it('a second (routed) network: event seen, rules added; the first keeps its own; destroy removes only it', async () => {
    const lab = L();
    const xml = join(work, 'lab2.xml');
    writeFileSync(xml, networkXml('lab2', 'virbr1', 1, 'route'));
    await lab.virsh('net-define', xml);
    const before = D().logs.length;
    await lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 forward rules', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    await waitUntil('the daemon logs it', 3000, () =>
      D()
        .applied(before)
        .some((r) => r.msg.includes('lab2')),
    );
    expect(await libvirtRulesFor(lab, backend, 'virbr1')).toBe(true);
    const rs = await ruleset(lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
    await converged();

    await lab.virsh('net-destroy', 'lab2');
    await waitUntil(
      'lab2 rules gone',
      10_000,
      async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    expect((await ruleset(lab)).forwardComments).toContain('kvmnftd net=default');
    expect(await foreignTables(lab)).toBe(libvirt0);
  }, 40_000);

  it("the admin's `nft -f`: our rules and libvirt's come back (FirewallD1.Reloaded), guests keep DHCP + NAT, net-start works", async () => {
    const lab = L();
    const t0 = Date.now();
    await lab.nft('-f', LAB_FILES.adminRuleset);
    await waitUntil('our rules restored', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const ours = Date.now() - t0;
    await waitUntil("libvirt's rules restored", 5000, () => libvirtRulesFor(lab, backend, 'virbr0'));
    const theirs = Date.now() - t0;
    await waitUntil('the daemon logs the libvirt restore', 2000, () =>
      D().logs.some((r) => r.msg.includes('sent org.fedoraproject.FirewallD1.Reloaded')),
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${D().dump()}`);
    });
    expect(await adminRules(lab)).toBe(admin0);
    // libvirt re-created exactly what it had (counters aside), and we did not touch it.
    await waitUntil('libvirt tables as before the flush', 5000, async () => (await foreignTables(lab)) === libvirt0);
    await converged();

    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // Without the restore, libvirt 11 cannot start a network after a flush (FACTS.md).
    await lab.virsh('net-start', 'lab2');
    await waitUntil('lab2 rules', 10_000, async () =>
      (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'),
    );
    expect(await libvirtRulesFor(lab, backend, 'virbr1')).toBe(true);
    await lab.virsh('net-destroy', 'lab2');
    await lab.virsh('net-destroy', 'default');
    await lab.virsh('net-start', 'default');
    await lab.attachGuest('virbr0');
    await waitUntil('default rules', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // eslint-disable-next-line no-console
    console.log(`[${backend}/${transport}] nft -f -> our rules back in ${ours} ms, libvirt's in ${theirs} ms`);
  }, 90_000);

  it("SIGTERM: exit 0, rules stay; libvirt's tables unchanged", async () => {
    const lab = L();
    const before = await foreignTables(lab);
    D().child.kill('SIGTERM');
    expect(await D().exited).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await foreignTables(lab)).toBe(before);
    const errors = D().logs.filter((r) => r.level >= 50);
    expect(errors, JSON.stringify(errors)).toEqual([]);
  }, 30_000);
});
