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
 * runs, stops or removes its rules, but for one rule while port forwards are
 * configured: its mark accept, first in libvirt's rejecting chain
 * (guest_input, or LIBVIRT_FWI), in each family. Port forwards with real
 * packets through that chain (test/integration/forward-lab.ts). Per-network
 * policy with real packets (test/integration/policy-lab.ts), D-Bus only.
 *
 * This machine's kernel has no tc csum action: with the nftables backend the
 * root's `tc` ignores exactly that failing command (test/lab/tc-csum-wrapper.sh)
 * and the test prints what was ignored.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { sleep, waitUntil } from '../helpers/wait.js';
import { LAB_FILES, type Lab } from '../lab/lab.js';
import { ensureTrixieRoot } from '../lab/trixie-root.js';
import {
  adminRules,
  foreignTablesText,
  guestReachesWan as reachesWan,
  networkXml,
  ruleset,
  type Daemon,
} from './daemon-harness.js';
import { forwardThroughLibvirt, libvirtTablesWithForwards } from './forward-lab.js';
import { useLibvirtLab } from './libvirt-lab.js';
import { policyThroughLibvirt } from './policy-lab.js';

type Backend = 'nftables' | 'iptables';

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
  const f = useLibvirtLab({
    tag: `deb13-${backend}-${transport}`,
    lab: async () => {
      const root = await ensureTrixieRoot();
      console.log(`Debian 13 test root: ${root.path} (${root.ms} ms): ${root.log.split('\n').pop()}`);
      return { root: root.path, firewallBackend: backend, defaultNetwork: 'start' };
    },
    setupMs: 15 * 60_000,
  });
  const D = (): Daemon => f.daemon;
  let admin0 = '';
  let libvirt0 = '';
  let port = 9100;

  const startDaemon = (): Promise<Daemon> => f.startDaemon(transport);
  const guestReachesWan = (): Promise<string> => reachesWan(f.lab, ++port);
  /** No pending commands right now (no waiting: apply and the daemon must have left nothing to do). */
  const converged = async (): Promise<void> => expect(await f.pendingCommands()).toEqual([]);

  beforeAll(async () => {
    admin0 = await adminRules(f.lab);
    libvirt0 = await foreignTablesText(f.lab);
  });

  it("the lab runs libvirt 11 with the configured backend; kvmnftd runs on trixie's node", async () => {
    const lab = f.lab;
    expect((await lab.exec('libvirtd', ['--version'])).stdout).toMatch(/libvirtd \(libvirt\) 11\./);
    expect((await lab.exec(lab.node, ['--version'])).stdout).toMatch(/^v20\./);
    expect((await lab.exec('nft', ['--version'])).stdout).toMatch(/v1\.1\./);
    expect(await libvirtRulesFor(lab, backend, 'virbr0')).toBe(true);
    const ignored = lab.tcCsumIgnored();
    // Exactly the csum filter of each started network, nothing else.
    for (const line of ignored) expect(line).toMatch(/^IGNORED \(exit \d+\): tc filter add dev virbr0 .*action csum /);
    if (backend === 'iptables') expect(ignored).toEqual([]);
  });

  it("without forwards, kvmnftd apply, run, SIGTERM and remove never change libvirt's tables", async () => {
    const lab = f.lab;
    const a = await f.cli('apply');
    expect(a.exitCode, a.stderr).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await foreignTablesText(lab)).toBe(libvirt0);
    await converged();

    const d = await startDaemon();
    await sleep(500);
    expect(await foreignTablesText(lab)).toBe(libvirt0);
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(await foreignTablesText(lab)).toBe(libvirt0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);

    const r = await f.cli('remove');
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual([]);
    expect((await lab.nft('list', 'tables')).stdout).not.toContain('kvmnftd');
    expect(await adminRules(lab)).toBe(admin0);
    expect(await foreignTablesText(lab)).toBe(libvirt0);
  }, 60_000);

  libvirtTablesWithForwards(f, {
    backend,
    events: transport,
    libvirt0: () => libvirt0,
    admin0: () => admin0,
    tag: `${backend}/${transport}`,
  });

  it('daemon: rules for the running network appear, and stay converged (no churn on nft 1.1)', async () => {
    const lab = f.lab;
    const d = await startDaemon();
    await waitUntil('nat_virbr0', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    await converged();
    const applied = d.applied().length;
    await sleep(1500);
    expect(d.applied().length, d.dump()).toBe(applied);
    expect(await foreignTablesText(lab)).toBe(libvirt0);
  }, 30_000);

  it("DHCP and NAT behind the drop policy: lease, TCP to the wan masqueraded by kvmnftd's rule", async () => {
    const lab = f.lab;
    expect(await lab.dhcp()).toMatch(/^192\.168\.122\.\d+$/);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // kvmnftd's NAT chain (srcnat - 1) is the one that translated it.
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
  }, 60_000);

  it('a second (routed) network: event seen, rules added; the first keeps its own; destroy removes only it', async () => {
    const lab = f.lab;
    await f.defineNetwork('lab2', networkXml('lab2', 'virbr1', 1, 'route'));
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
    expect(await foreignTablesText(lab)).toBe(libvirt0);
  }, 40_000);

  it("the admin's `nft -f`: our rules and libvirt's come back (FirewallD1.Reloaded), guests keep DHCP + NAT, net-start works", async () => {
    const lab = f.lab;
    const t0 = Date.now();
    await lab.nft('-f', LAB_FILES.adminRuleset);
    await waitUntil('our rules restored', 5000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const ours = Date.now() - t0;
    // libvirt 11's nftables backend restores one `nft` process per rule: 0.6 s on a quiet machine, over 5 s
    // on a loaded 2-core one (seen at load average 9). The time is a figure (bench/), not what is tested here.
    await waitUntil("libvirt's rules restored", 20_000, () => libvirtRulesFor(lab, backend, 'virbr0'));
    const theirs = Date.now() - t0;
    await waitUntil(
      'the daemon logs the libvirt restore',
      2000,
      () => D().logs.some((r) => r.msg.includes('sent org.fedoraproject.FirewallD1.Reloaded')),
      { detail: () => D().dump() },
    );
    expect(await adminRules(lab)).toBe(admin0);
    // libvirt re-created exactly what it had (counters aside), and we did not touch it.
    await waitUntil(
      'libvirt tables as before the flush',
      20_000,
      async () => (await foreignTablesText(lab)) === libvirt0,
    );
    await converged();

    expect(await lab.dhcp()).toMatch(/^192\.168\.122\./);
    expect(await guestReachesWan()).toBe('192.0.2.1');
    // Without the restore, libvirt 11 cannot start a network after a flush: it creates its private
    // chains once per process, and net-start fails ("nft -ae insert rule ip libvirt_network
    // guest_output ...: No such file or directory") until libvirtd restarts.
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
    console.log(`[${backend}/${transport}] nft -f -> our rules back in ${ours} ms, libvirt's in ${theirs} ms`);
  }, 90_000);

  forwardThroughLibvirt(f, {
    backend,
    events: transport,
    libvirt0: () => libvirt0,
    admin0: () => admin0,
    tag: `${backend}/${transport}`,
  });

  // Per-network policy with real packets through libvirt's rules: one transport per backend is enough (the
  // policy is in the rules, not in how the daemon hears of the network), and each run costs about a minute.
  if (transport === 'dbus') policyThroughLibvirt(f, { events: transport, tag: `${backend}/${transport}` });

  it("SIGTERM: exit 0, rules stay; libvirt's tables unchanged", async () => {
    const lab = f.lab;
    const before = await foreignTablesText(lab);
    D().child.kill('SIGTERM');
    expect(await D().exited).toBe(0);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    expect(await foreignTablesText(lab)).toBe(before);
    const errors = D().logs.filter((r) => r.level >= 50);
    expect(errors, JSON.stringify(errors)).toEqual([]);
  }, 30_000);
});
