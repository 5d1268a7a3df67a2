// kvmnftd against libvirt's modular daemons, as Fedora, RHEL and openSUSE run
// them: virtqemud and virtnetworkd, socket-activated, no libvirtd. Debian 13
// builds them but does not ship them, so test/system/modular-daemons.sh
// compiles exactly those two from Debian's own libvirt source (cached);
// test/system/modular-setup.sh switches a Debian 13 system root to them
// (libvirt.org/daemons.html) in kvmnftd's install layer. The root boots under
// systemd-nspawn (systemd as PID 1, private network), once per libvirt
// firewall backend. Covered: boot order, a guest's DHCP lease, both event
// transports (libvirt-dbus and virsh net-event), the repair after `nft flush
// ruleset` (kvmnftd's rules, and libvirt's own chains through the
// FirewallD1.Reloaded broadcast that virtnetworkd's network driver listens
// to), virtnetworkd restarted or stopped and socket-activated again (it never
// exits on its idle timeout while kvmnftd is connected), and one-shot commands
// without virtqemud. Needs root; fails, never skips.
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep, waitUntil } from '../helpers/wait.js';
import {
  addGuest,
  buildDeb,
  Container,
  dhcpLease,
  hostReady,
  libvirtRulesFor,
  must,
  removeGuest,
  REPO,
  rootfs,
  run,
  statusOk,
  unitProps,
  type Status,
} from './container.js';

const ADMIN = join(REPO, 'test', 'fixtures', 'admin-ruleset.nft');
const MINUTE = 60_000;
const work = mkdtempSync('/var/tmp/kvmnftd-modular-');
const timings: string[] = [];
const t = (what: string, ms: number): void => {
  const line = `${what}: ${ms < 10_000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`}`;
  timings.push(line);
  console.log(line);
};
const t0 = performance.now();

type Backend = 'nftables' | 'iptables';
const BACKENDS: Backend[] = ['nftables', 'iptables'];

interface Prepared {
  root: string;
  deb: string;
  daemons: string;
  /** The host's busybox: udhcpc for the guest (the root has no DHCP client). */
  busybox: string;
}

async function prepare(): Promise<Prepared> {
  const tools = await hostReady(['busybox']);
  const start = performance.now();
  const [root, built] = await Promise.all([rootfs('trixie', 'system'), buildDeb('trixie')]);
  const r = await run('bash', [join(REPO, 'test', 'system', 'modular-daemons.sh'), root], {
    timeoutMs: 40 * MINUTE,
    log: (l) => console.log(`[modular-daemons] ${l}`),
  });
  const daemons = must(r, 'modular-daemons.sh').trim().split('\n').at(-1)!;
  t('root, .deb and modular daemons ready (cached or built)', performance.now() - start);
  return { root, deb: built.deb, daemons, busybox: tools['busybox']! };
}

/** ROOT + kvmnftd + the switch to modular daemons with BACKEND, as an install layer. */
async function layer(p: Prepared, backend: Backend): Promise<string> {
  const setup = join(work, `setup-${backend}`);
  mkdirSync(setup);
  cpSync(join(REPO, 'test', 'system', 'modular-setup.sh'), join(setup, 'setup.sh'));
  cpSync(join(REPO, 'test', 'lab', 'tc-csum-wrapper.sh'), join(setup, 'tc-csum-wrapper.sh'));
  cpSync(join(REPO, 'test', 'lab', 'udhcpc.script'), join(setup, 'udhcpc.script'));
  cpSync(p.busybox, join(setup, 'busybox'));
  cpSync(p.daemons, join(setup, 'daemons'), { recursive: true });
  writeFileSync(join(setup, 'backend'), `${backend}\n`);
  const dir = join(work, `layer-${backend}`);
  const r = await run('bash', [join(REPO, 'test', 'system', 'install-layer.sh'), p.root, dir, p.deb, ADMIN, setup], {
    timeoutMs: 5 * MINUTE,
  });
  console.log(`[${backend}] install layer:\n${r.stdout}${r.stderr}`);
  must(r, `install-layer.sh (${backend})`);
  return dir;
}

/** kvmnftd's NAT chain for BRIDGE is in the ruleset (cheap enough to poll every 50 ms). */
async function natChainFor(c: Container, bridge: string): Promise<boolean> {
  const r = await c.exec(['nft', 'list', 'table', 'inet', 'kvmnftd']);
  return r.code === 0 && r.stdout.includes(`nat_${bridge}`);
}

const active = async (c: Container, unit: string): Promise<string> =>
  (await c.try(`systemctl is-active ${unit}`)).stdout.trim();

const OPEN_XML = `<network>
  <name>open1</name>
  <forward mode='open'/>
  <bridge name='virbr8' stp='off'/>
  <ip address='192.168.178.1' netmask='255.255.255.0'/>
</network>
`;

const LAB_XML = `<network>
  <name>lab</name>
  <forward mode='nat'/>
  <bridge name='virbr7' stp='off'/>
  <ip address='192.168.177.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.177.2' end='192.168.177.254'/></dhcp>
  </ip>
</network>
`;

interface Started {
  /** `virsh net-start` itself (libvirt's own firewall setup included). */
  netStartMs: number;
  /** From net-start's return until kvmnftd's NAT chain for the bridge is in the ruleset. */
  afterMs: number;
  /** From net-start's return until `kvmnftd status --json` says ok (a CLI start and a listing of its own). */
  statusMs: number;
}

/** net-start lab on URI and wait for kvmnftd's rules for it. */
async function startLab(c: Container, uri: string): Promise<Started> {
  const start = performance.now();
  must(await c.exec(['virsh', '-q', '-c', uri, 'net-start', 'lab']), `virsh -c ${uri} net-start lab`);
  const returned = performance.now();
  await waitUntil('kvmnftd rules for lab', 30_000, () => natChainFor(c, 'virbr7'), { intervalMs: 50 });
  const afterMs = performance.now() - returned;
  await waitUntil('kvmnftd status --json ok with lab', 30_000, () => statusOk(c, ['default', 'lab']));
  return { netStartMs: returned - start, afterMs, statusMs: performance.now() - returned };
}

/** kvmnftd's own event-to-applied latency for the last "network NAME up" line of its current run. */
async function loggedLatency(c: Container, name: string): Promise<number> {
  const lines = (await journalSinceStart(c)).split('\n').filter((l) => l.startsWith(`network ${name} up`));
  return Number(/latency_ms=([\d.]+)/.exec(lines.at(-1) ?? '')?.[1] ?? NaN);
}

async function stopLab(c: Container): Promise<void> {
  must(await c.exec(['virsh', '-q', '-c', 'qemu:///system', 'net-destroy', 'lab']), 'virsh net-destroy lab');
  await waitUntil('kvmnftd rules for lab gone', 30_000, async () => !(await natChainFor(c, 'virbr7')), {
    intervalMs: 50,
  });
  await waitUntil('kvmnftd status --json ok without lab', 30_000, () => statusOk(c, ['default']));
}

/** Runs kvmnftd.service with --events MODE (a runtime drop-in; auto removes it) and waits until it is ready. */
async function useEvents(c: Container, mode: 'auto' | 'dbus' | 'virsh'): Promise<Status> {
  const dropIn = '/run/systemd/system/kvmnftd.service.d/events.conf';
  await c.sh(
    mode === 'auto'
      ? `rm -f ${dropIn}`
      : `mkdir -p ${dropIn.replace('/events.conf', '')} && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/kvmnftd run --events ${mode}\\n' > ${dropIn}`,
  );
  await c.sh('systemctl daemon-reload && systemctl restart kvmnftd');
  return waitUntil(`kvmnftd ready with --events ${mode}`, 30_000, () => statusOk(c, ['default']));
}

/** The journal of kvmnftd's current run (its systemd invocation). */
async function journalSinceStart(c: Container): Promise<string> {
  const id = (await unitProps(c, 'kvmnftd', ['InvocationID']))['InvocationID'];
  return c.sh(`journalctl _SYSTEMD_INVOCATION_ID=${id} -o cat --no-pager`);
}

let prepared: Promise<Prepared>;
beforeAll(() => {
  prepared = prepare();
  prepared.catch(() => undefined);
});

afterAll(() => {
  t('whole file', performance.now() - t0);
  console.log(`\ntest/system/modular timings:\n  ${timings.join('\n  ')}`);
  rmSync(work, { recursive: true, force: true });
});

for (const backend of BACKENDS) {
  describe.sequential(`kvmnftd with virtqemud + virtnetworkd (no libvirtd), ${backend} backend, Debian 13`, () => {
    let c: Container | undefined;
    const tb = (what: string, ms: number): void => t(`[${backend}] ${what}`, ms);

    beforeAll(async () => {
      const p = await prepared;
      const dir = await layer(p, backend);
      const boot = await Container.boot(`kvmnftd-mod-${backend}`, p.root, dir, mkdtempSync(join(work, 'boot-')));
      c = boot.container;
      tb(`boot to "${boot.state}"`, boot.bootMs);
      if (boot.state !== 'running')
        console.log(`[${backend}] failed units:\n${(await c.try('systemctl --failed --no-legend')).stdout}`);
    }, 60 * MINUTE);

    afterAll(async () => {
      if (!c) return;
      const journal = await c.try('journalctl -b --no-pager -o short-precise -u kvmnftd -u virtnetworkd');
      console.log(
        `[${backend}] journal (kvmnftd, virtnetworkd), last lines:\n${journal.stdout.split('\n').slice(-40).join('\n')}`,
      );
      tb('power off', await c.stop());
    }, 2 * MINUTE);

    it(
      'at boot: no libvirtd; virtnetworkd started the default network, then kvmnftd applied its rules',
      async () => {
        const ct = c!;
        await waitUntil('kvmnftd active', 60_000, async () => (await active(ct, 'kvmnftd')) === 'active');
        const s = await waitUntil('kvmnftd status ok with default', 30_000, () => statusOk(ct, ['default']));
        // --events auto on modular libvirt: virsh on network:///system, straight to virtnetworkd.
        expect(s.daemon.transport).toBe('virsh');
        expect(await journalSinceStart(ct)).toContain('events: virsh net-event on network:///system');
        expect(await ct.sh('ps -eo args')).toContain('virsh -q -c network:///system net-event');
        expect(await active(ct, 'libvirtd.service')).not.toBe('active');
        expect((await ct.try('test -e /run/libvirt/libvirt-sock')).code, 'no libvirtd socket').not.toBe(0);
        for (const unit of ['virtnetworkd.socket', 'virtqemud.socket', 'virtnetworkd.service'])
          expect(await active(ct, unit), unit).toBe('active');
        const at = (unit: string) =>
          unitProps(ct, unit, ['ActiveEnterTimestampMonotonic', 'InactiveExitTimestampMonotonic']);
        const [nft, net, kvm] = await Promise.all([at('nftables.service'), at('virtnetworkd.service'), at('kvmnftd')]);
        expect(Number(nft['ActiveEnterTimestampMonotonic'])).toBeLessThanOrEqual(
          Number(net['InactiveExitTimestampMonotonic']),
        );
        expect(
          Number(net['ActiveEnterTimestampMonotonic']),
          'kvmnftd starts once virtnetworkd is up (After=virtnetworkd.service)',
        ).toBeLessThanOrEqual(Number(kvm['InactiveExitTimestampMonotonic']));
        expect(await libvirtRulesFor(ct, 'virbr0')).toBe(true);
        const tables = await ct.sh('nft list tables');
        if (backend === 'nftables') expect(tables).toContain('table ip libvirt_network');
        else expect(tables).not.toContain('libvirt_network');
        await ct.sh(`cat > /tmp/lab.xml <<'X'\n${LAB_XML}X\nvirsh -q -c qemu:///system net-define /tmp/lab.xml`);
      },
      3 * MINUTE,
    );

    it("a guest (a veth in a netns on virbr0) gets a DHCP lease through the admin's drop policy", async () => {
      const ct = c!;
      await addGuest(ct, 'guest', 'virbr0');
      try {
        const r = await dhcpLease(ct, 'guest');
        expect(r.stdout, r.stderr).toMatch(/^LEASE 192\.168\.122\.\d+\/24 router 192\.168\.122\.1$/m);
        tb('guest DHCP lease (udhcpc start -> bound)', r.ms);
      } finally {
        await removeGuest(ct, 'guest');
      }
    });

    for (const mode of ['dbus', 'virsh'] as const) {
      it(
        `--events ${mode}: virsh net-start and net-destroy (qemu:///system, network:///system) reach kvmnftd`,
        async () => {
          const ct = c!;
          expect((await useEvents(ct, mode)).daemon.transport).toBe(mode);
          for (const uri of ['qemu:///system', 'network:///system']) {
            const { netStartMs, afterMs, statusMs } = await startLab(ct, uri);
            const what = `--events ${mode}, virsh -c ${uri} net-start`;
            tb(`${what}: took`, netStartMs);
            tb(`${what}: returned -> kvmnftd's rules in place`, afterMs);
            tb(`${what}: kvmnftd's logged event -> applied latency`, await loggedLatency(ct, 'lab'));
            tb(`${what}: returned -> kvmnftd status --json ok`, statusMs);
            await stopLab(ct);
          }
        },
        3 * MINUTE,
      );
    }

    it(
      "nft flush ruleset: kvmnftd's rules and libvirt's own chains come back; a later net-start works",
      async () => {
        const ct = c!;
        await useEvents(ct, 'auto');
        expect(await libvirtRulesFor(ct, 'virbr0')).toBe(true);
        const start = performance.now();
        await ct.sh('nft flush ruleset');
        await waitUntil('kvmnftd rules back', 30_000, () => natChainFor(ct, 'virbr0'), { intervalMs: 50 });
        tb('nft flush ruleset -> kvmnftd rules back', performance.now() - start);
        await waitUntil("libvirt's rules back (FirewallD1.Reloaded)", 30_000, () => libvirtRulesFor(ct, 'virbr0'), {
          intervalMs: 50,
        });
        tb(
          "nft flush ruleset -> libvirt's rules back (virtnetworkd heard FirewallD1.Reloaded)",
          performance.now() - start,
        );
        expect(await journalSinceStart(ct)).toContain('sent org.fedoraproject.FirewallD1.Reloaded');
        // The admin's table went with the flush; reloading it is what an admin does next.
        await ct.sh('systemctl reload nftables');
        await waitUntil('kvmnftd status ok after the admin reload', 30_000, () => statusOk(ct, ['default']));
        const { afterMs } = await startLab(ct, 'qemu:///system');
        tb("after the flush: net-start's return -> kvmnftd's rules", afterMs);
        expect(await libvirtRulesFor(ct, 'virbr7'), "libvirt's rules for the new network").toBe(true);
        await stopLab(ct);
      },
      2 * MINUTE,
    );

    it(
      'virtnetworkd restarted, or stopped and socket-activated again: kvmnftd follows the next net-start by its event',
      async () => {
        const ct = c!;
        // An open network has no libvirt rules (nothing for nft monitor to see) and
        // no periodic check runs: only libvirt's event can make kvmnftd act on it.
        await ct.sh(
          [
            `sed -i -e 's/^accept_open_networks = .*/accept_open_networks = ["open1"]/' -e 's/^resync_interval = .*/resync_interval = 0/' /etc/kvmnftd/kvmnftd.toml`,
            `cat > /tmp/open1.xml <<'X'\n${OPEN_XML}X`,
            'virsh -q -c qemu:///system net-define /tmp/open1.xml',
          ].join('\n'),
        );
        await useEvents(ct, 'auto');
        const openRules = async (): Promise<boolean> =>
          (await ct.exec(['nft', 'list', 'table', 'inet', 'filter'])).stdout.includes('"virbr8"');
        // No waiting for kvmnftd to reconnect first: a net-start during the gap
        // must be caught up with too.
        const cycle = async (what: string): Promise<void> => {
          const start = performance.now();
          must(await ct.exec(['virsh', '-q', '-c', 'qemu:///system', 'net-start', 'open1']), 'net-start open1');
          const returned = performance.now();
          await waitUntil(`kvmnftd's rules for open1 (${what})`, 30_000, openRules, { intervalMs: 50 });
          tb(`${what}: net-start of an open network took`, returned - start);
          tb(`${what}: its return -> kvmnftd's rules`, performance.now() - returned);
          must(await ct.exec(['virsh', '-q', '-c', 'qemu:///system', 'net-destroy', 'open1']), 'net-destroy open1');
          await waitUntil('open1 rules gone', 30_000, async () => !(await openRules()), { intervalMs: 50 });
        };

        // libvirt's units run virtnetworkd with --timeout 120 (exit when idle);
        // shortened, it still never exits while kvmnftd is connected to it.
        await ct.sh(
          `mkdir -p /run/systemd/system/virtnetworkd.service.d && printf '[Service]\\nEnvironment=VIRTNETWORKD_ARGS="--timeout 3"\\n' > /run/systemd/system/virtnetworkd.service.d/timeout.conf && systemctl daemon-reload && systemctl restart virtnetworkd`,
        );
        const restarted = await unitProps(ct, 'virtnetworkd', ['MainPID']);
        await cycle('virtnetworkd restarted');
        // An observation window, not a synchronisation: nothing may happen in it.
        await sleep(6000);
        expect(await unitProps(ct, 'virtnetworkd', ['MainPID', 'ActiveState'])).toEqual({
          MainPID: restarted['MainPID'],
          ActiveState: 'active',
        });

        // What an idle exit looks like from outside: the process gone, the socket listening.
        await ct.sh('systemctl stop virtnetworkd.service');
        expect(await active(ct, 'virtnetworkd.socket')).toBe('active');
        await cycle('virtnetworkd stopped, socket-activated again');
        expect((await unitProps(ct, 'virtnetworkd', ['MainPID']))['MainPID']).not.toBe(restarted['MainPID']);
        await waitUntil('kvmnftd status ok at the end', 30_000, () => statusOk(ct, ['default']));
      },
      4 * MINUTE,
    );

    it('one-shot commands ask virtnetworkd directly: kvmnftd status works with virtqemud stopped', async () => {
      const ct = c!;
      await ct.sh('systemctl stop virtqemud.socket virtqemud-ro.socket virtqemud-admin.socket virtqemud.service');
      expect((await ct.try('virsh -c qemu:///system net-list')).code, 'qemu:///system is unreachable').not.toBe(0);
      const s = await waitUntil('kvmnftd status --json ok without virtqemud', 30_000, () => statusOk(ct, ['default']));
      expect(s.problems).toEqual([]);
      await ct.sh('systemctl start virtqemud.socket virtqemud-ro.socket virtqemud-admin.socket');
    });
  });
}
