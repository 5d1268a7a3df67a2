// kvmnftd upgraded in place from the released 0.1.0 to this tree's .deb, with
// networks running, as the README tells an admin to (`apt install ./NEW.deb`
// in the booted system), keeping the conffile the admin edited. For Debian 12 and 13: the 0.1.0
// .deb (built once with commit 166a18b's own packaging/deb/build.sh, cached)
// is installed into a system root (test/system/container.ts) with the admin's
// drop-policy ruleset, the default NAT network and a second NAT network whose
// name is long enough that 0.1.0 cut its rules' tag (`~<FNV-1a>`). The root
// boots under systemd-nspawn; a guest (a veth in a netns on virbr0) gets a
// DHCP lease and pings an upstream host (another netns, no route back: only
// masqueraded replies return) every 50 ms while the new package is
// installed. Checked: the new daemon runs, the guests never lost their rules
// (nft monitor: no transaction leaves a kvmnftd chain without rules; no ping
// lost; a control shows the ping fails without kvmnftd's forward rules),
// 0.1.0's own table is adopted and marked, its tags replaced in that one
// transaction, the admin's rules untouched (same handles), `kvmnftd plan`
// empty and `doctor` silent about tables. Needs root; fails, never skips.
// Timings are printed.
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyNetworkTags, networkTag, OWNER_MARKER_CHAIN } from '../../src/nft/ownership.js';
import { indexRuleset, type Ruleset } from '../../src/nft/ruleset.js';
import { waitUntil } from '../helpers/wait.js';
import {
  addGuest,
  buildDeb,
  Container,
  dhcpLease,
  guestBusybox,
  hostReady,
  kvmnftdRulesFor,
  must,
  REPO,
  rootfs,
  run,
  statusOk,
  unitProps,
  type Line,
  type Release,
} from './container.js';

/** kvmnftd 0.1.0 as released. */
const RELEASED = '166a18b';
const ADMIN = join(REPO, 'test', 'fixtures', 'admin-ruleset.nft');
const MINUTE = 60_000;
const RELEASES: Release[] = ['bookworm', 'trixie'];
const work = mkdtempSync('/var/tmp/kvmnftd-upgrade-');
const timings: string[] = [];
const t = (release: Release, what: string, ms: number): void => {
  const line = `[${release}] ${what}: ${ms < 10_000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`}`;
  timings.push(line);
  console.log(line);
};

/** 122 bytes: `kvmnftd net=<name>` is over nft's 127-byte comments, so 0.1.0 cut it. */
const LONG = `upgrade-${'long-'.repeat(22)}name`;
const LONG_BRIDGE = 'virbr9';
const LONG_XML = `<network>
  <name>${LONG}</name>
  <forward mode='nat'/>
  <bridge name='${LONG_BRIDGE}' stp='off'/>
  <ip address='192.168.179.1' netmask='255.255.255.0'/>
</network>
`;
const NETWORKS = ['default', LONG];
/** The upstream host the guest pings: a netns in the container behind a veth (vup), no route back to the guests. */
const UPSTREAM = '10.99.0.2';
const PING_UPSTREAM = guestBusybox('guest', 'ping', '-c', '3', '-W', '2', UPSTREAM);

interface Prepared {
  root: string;
  layer: string;
  oldVersion: string;
  newVersion: string;
}

const debVersion = async (deb: string): Promise<string> =>
  must(await run('dpkg-deb', ['-f', deb, 'Version']), `dpkg-deb -f ${deb}`).trim();

async function prepare(release: Release): Promise<Prepared> {
  const tools = await hostReady(['busybox', 'git', 'dpkg-deb']);
  const t0 = performance.now();
  const dir = join(work, release);
  const [root, old, built] = await Promise.all([
    rootfs(release, 'system'),
    buildDeb(release, RELEASED),
    buildDeb(release),
  ]);
  t(release, 'roots, the 0.1.0 .deb (cached) and the new .deb ready', performance.now() - t0);
  const setup = join(dir, 'setup');
  mkdirSync(join(setup, 'networks'), { recursive: true });
  cpSync(join(REPO, 'test', 'system', 'upgrade-setup.sh'), join(setup, 'setup.sh'));
  cpSync(join(REPO, 'test', 'lab', 'udhcpc.script'), join(setup, 'udhcpc.script'));
  cpSync(tools['busybox']!, join(setup, 'busybox'));
  cpSync(built.deb, join(setup, 'kvmnftd-new.deb'));
  writeFileSync(join(setup, 'networks', `${LONG}.xml`), LONG_XML);
  const layer = join(dir, 'layer');
  const t1 = performance.now();
  const r = await run('bash', [join(REPO, 'test', 'system', 'install-layer.sh'), root, layer, old.deb, ADMIN, setup], {
    timeoutMs: 5 * MINUTE,
  });
  console.log(`[${release}] install layer (0.1.0):\n${r.stdout}${r.stderr}`);
  must(r, `install-layer.sh ${release}`);
  t(release, 'install layer with 0.1.0', performance.now() - t1);
  return { root, layer, oldVersion: await debVersion(old.deb), newVersion: await debVersion(built.deb) };
}

let prepared: Record<Release, Promise<Prepared>>;
beforeAll(() => {
  prepared = Object.fromEntries(RELEASES.map((r) => [r, prepare(r)])) as Record<Release, Promise<Prepared>>;
  for (const p of Object.values(prepared)) p.catch(() => undefined);
});

afterAll(() => {
  console.log(`\ntest/system/upgrade timings:\n  ${timings.join('\n  ')}`);
  rmSync(work, { recursive: true, force: true });
});

async function ruleset(c: Container): Promise<Ruleset> {
  return indexRuleset(JSON.parse(await c.sh('nft -j list ruleset')));
}

/** Every rule comment in the ruleset. */
const comments = (r: Ruleset): string[] =>
  [...r.tables.values()].flatMap((tb) =>
    [...tb.chains.values()].flatMap((ch) => ch.rules.flatMap((rule) => (rule.comment ? [rule.comment] : []))),
  );

/** The admin's own rules in inet filter (everything but kvmnftd's chains and jumps), handles included. */
function adminRules(r: Ruleset): string[] {
  const filter = r.tables.get('inet filter');
  if (!filter) return [];
  return [...filter.chains.values()]
    .filter((ch) => !ch.name.startsWith('kvmnftd_'))
    .flatMap((ch) => [
      `chain ${ch.name} ${ch.hook ?? ''} ${ch.policy ?? ''}`,
      ...ch.rules
        .filter((rule) => rule.comment !== 'kvmnftd')
        .map((rule) => `  ${rule.handle} ${JSON.stringify(rule)}`),
    ]);
}

/** The jumps to kvmnftd's chains in the admin's base chains, as "chain -> target". */
function jumps(r: Ruleset): string[] {
  const filter = r.tables.get('inet filter');
  return [...(filter?.chains.values() ?? [])].flatMap((ch) =>
    ch.rules.flatMap((rule) => {
      const target = JSON.stringify(rule.expr).match(/"jump":\{"target":"(kvmnftd_\w+)"\}/)?.[1];
      return target ? [`${ch.name} -> ${target}`] : [];
    }),
  );
}

/** nft monitor's text output cut into transactions: the events before each "# new generation" line. */
interface Generation {
  at: number;
  events: string[];
}

function generations(lines: Line[]): Generation[] {
  const out: Generation[] = [];
  let events: string[] = [];
  for (const l of lines) {
    if (l.text.startsWith('# new generation')) {
      out.push({ at: l.at, events });
      events = [];
    } else if (l.text.trim()) events.push(l.text);
  }
  return out;
}

/** The chain a `VERB rule` event of nft monitor names, when it is one of kvmnftd's (its table's, kvmnftd_*). */
const kvmnftdChainOf = (event: string, verb: 'add' | 'delete'): string | undefined =>
  new RegExp(`^${verb} rule (inet kvmnftd \\S+|inet filter kvmnftd_\\w+) `).exec(event)?.[1];

/** kvmnftd's chains one transaction took rules from without putting any back: guests without rules. */
function chainsLeftBare(g: Generation): string[] {
  const added = new Set(g.events.map((e) => kvmnftdChainOf(e, 'add')));
  const emptied = g.events.flatMap((e) => kvmnftdChainOf(e, 'delete') ?? []);
  return [...new Set(emptied)].filter((c) => !added.has(c));
}

for (const release of RELEASES) {
  describe.sequential(`upgrade from 0.1.0 with networks running, ${release}`, () => {
    let p: Prepared;
    let c: Container | undefined;
    let before: Ruleset;
    let monitor: Generation[] = [];

    beforeAll(async () => {
      p = await prepared[release];
      const boot = await Container.boot(
        `kvmnftd-upgrade-${release}`,
        p.root,
        p.layer,
        mkdtempSync(join(work, 'boot-')),
      );
      c = boot.container;
      t(release, `boot to "${boot.state}"`, boot.bootMs);
    }, 20 * MINUTE);

    afterAll(async () => {
      if (!c) return;
      const journal = await c.try('journalctl -b --no-pager -o short-precise -u kvmnftd');
      console.log(`[${release}] journal of kvmnftd:\n${journal.stdout.split('\n').slice(-60).join('\n')}`);
      t(release, 'power off', await c.stop());
    }, 2 * MINUTE);

    it(
      "0.1.0 runs both networks: its rules in its unmarked table, the long name's tag cut 0.1.0's way; a guest's packets pass",
      async () => {
        const ct = c!;
        expect((await ct.sh("dpkg-query -W -f '${Version}' kvmnftd")).trim()).toBe(p.oldVersion);
        await waitUntil(
          'kvmnftd 0.1.0 active',
          60_000,
          async () => (await ct.try('systemctl is-active kvmnftd')).stdout.trim() === 'active',
        );
        await waitUntil(
          '0.1.0 rules for both networks',
          30_000,
          async () => (await kvmnftdRulesFor(ct, 'virbr0')) && kvmnftdRulesFor(ct, LONG_BRIDGE),
        );
        must(await ct.exec(['kvmnftd', 'status']), 'kvmnftd status (0.1.0)');
        before = await ruleset(ct);
        expect([...before.tables.get('inet kvmnftd')!.chains.keys()]).not.toContain(OWNER_MARKER_CHAIN);
        const legacy = legacyNetworkTags(LONG);
        expect(legacy).toHaveLength(1);
        expect(comments(before)).toContain(legacy[0]);
        expect(comments(before)).not.toContain(networkTag(LONG));
        expect(jumps(before).sort()).toEqual(['forward -> kvmnftd_forward', 'input -> kvmnftd_input']);

        await addGuest(ct, 'guest', 'virbr0');
        const lease = await dhcpLease(ct, 'guest');
        expect(lease.stdout, lease.stderr).toMatch(/^LEASE 192\.168\.122\.\d+\/24 router 192\.168\.122\.1$/m);
        t(release, '0.1.0: guest DHCP lease', lease.ms);
        await ct.sh(
          [
            'ip netns add up',
            'ip link add vup type veth peer name eth0 netns up',
            'ip addr add 10.99.0.1/24 dev vup',
            'ip link set vup up',
            `ip -n up addr add ${UPSTREAM}/24 dev eth0`,
            'ip -n up link set eth0 up',
          ].join(' && '),
        );
        must(await ct.exec(PING_UPSTREAM), '0.1.0: the guest pings upstream (forward path, masqueraded)');
      },
      3 * MINUTE,
    );

    it(
      'apt-get install ./NEW.deb: the new daemon runs, converged; no guest packet lost, no transaction without its rules',
      async () => {
        const ct = c!;
        const old = await unitProps(ct, 'kvmnftd', ['MainPID']);
        const watch = await ct.background('monitor', ['nft', 'monitor']);
        const ping = await ct.background('ping', guestBusybox('guest', 'ping', '-i', '0.05', UPSTREAM));
        await waitUntil('the first ping reply', 10_000, () => ping.lines.some((l) => /seq=\d+/.test(l.text)));
        const t0 = performance.now();
        // The admin edited the conffile: keep it, as answering dpkg's question with its default does.
        const r = await ct.exec(
          [
            ...['apt-get', 'install', '-y', '-o', 'Dpkg::Options::=--force-confdef'],
            ...['-o', 'Dpkg::Options::=--force-confold', '/var/lib/kvmnftd-test/kvmnftd-new.deb'],
          ],
          5 * MINUTE,
        );
        console.log(`[${release}] apt-get install:\n${r.stdout}${r.stderr}`);
        must(r, 'apt-get install kvmnftd-new.deb');
        t(release, 'apt-get install of the new .deb (unpack, postinst: restart)', r.ms);
        expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('active');
        expect(await kvmnftdRulesFor(ct, 'virbr0'), 'the rules right after apt-get install').toBe(true);
        expect(await kvmnftdRulesFor(ct, LONG_BRIDGE)).toBe(true);
        await waitUntil('status ok for both networks', 30_000, () => statusOk(ct, NETWORKS));
        const plan = await waitUntil('kvmnftd plan empty', 30_000, async () => {
          const out = must(await ct.exec(['kvmnftd', 'plan']), 'kvmnftd plan');
          return out.trim() === '' ? out : undefined;
        });
        expect(plan.trim()).toBe('');
        t(release, 'apt-get install start -> kvmnftd plan empty (converged)', performance.now() - t0);
        const pings = await ping.stop('INT');
        monitor = generations(await watch.stop());
        console.log(`[${release}] nft monitor during the upgrade:\n${watch.text()}`);
        console.log(
          `[${release}] ping: ${pings
            .slice(-3)
            .map((l) => l.text)
            .join(' | ')}`,
        );

        const now = await unitProps(ct, 'kvmnftd', [
          'MainPID',
          'ActiveExitTimestampMonotonic',
          'ActiveEnterTimestampMonotonic',
        ]);
        expect(now['MainPID']).not.toBe(old['MainPID']);
        const gap = (Number(now['ActiveEnterTimestampMonotonic']) - Number(now['ActiveExitTimestampMonotonic'])) / 1000;
        t(release, 'no kvmnftd daemon (0.1.0 asked to stop -> the new one READY), the rules in place', gap);
        expect(await ct.sh('cat /etc/kvmnftd/kvmnftd.toml')).toMatch(/^resync_interval = 45$/m);
        expect((await ct.sh("dpkg-query -W -f '${Version}' kvmnftd")).trim()).toBe(p.newVersion);
        expect((await ct.sh('kvmnftd --version')).trim()).toBe(`kvmnftd ${p.newVersion.replace(/-[^-]*$/, '')}`);
        // The new package's files are the ones installed (the versions may be equal).
        expect(await ct.sh('cat /var/lib/dpkg/info/kvmnftd.md5sums')).toBe(
          await ct.sh('dpkg-deb -I /var/lib/kvmnftd-test/kvmnftd-new.deb md5sums'),
        );

        // Packets: every echo request sent before the stop was answered.
        const seqs = pings.flatMap((l) => /seq=(\d+)/.exec(l.text)?.[1] ?? []).map(Number);
        const stats = /(\d+) packets transmitted, (\d+) packets received/.exec(pings.map((l) => l.text).join('\n'));
        expect(stats, 'ping statistics').not.toBeNull();
        const [sent, received] = [Number(stats![1]), Number(stats![2])];
        const missing = Array.from({ length: Math.max(...seqs) + 1 }, (_, i) => i).filter((s) => !seqs.includes(s));
        t(
          release,
          `ping every 50 ms during the upgrade: ${sent} sent, ${received} answered, lost seq [${missing.join(', ')}]`,
          0,
        );
        expect(missing).toEqual([]);
        expect(sent - received).toBeLessThanOrEqual(1); // the one in flight at SIGINT

        // nft monitor: no transaction left one of kvmnftd's chains without rules, nothing of it was
        // deleted whole, and the admin's base chains (the jumps, the admin's rules) were not touched.
        for (const g of monitor) expect(chainsLeftBare(g), g.events.join('\n')).toEqual([]);
        expect(watch.text()).not.toMatch(/^delete (table inet kvmnftd|chain inet (kvmnftd|filter kvmnftd_))/m);
        expect(watch.text()).not.toMatch(/^delete rule inet filter (input|forward|output) /m);
        if (monitor.length > 0)
          t(release, "apt-get install start -> the new daemon's first transaction", monitor[0]!.at - t0);
      },
      6 * MINUTE,
    );

    it(
      "after: 0.1.0's table adopted and marked, its tags replaced in one transaction, one jump each, the admin's rules untouched, doctor silent about tables",
      async () => {
        const ct = c!;
        const after = await ruleset(ct);
        expect([...after.tables.get('inet kvmnftd')!.chains.keys()]).toContain(OWNER_MARKER_CHAIN);
        const legacy = legacyNetworkTags(LONG)[0]!;
        expect(comments(after)).not.toContain(legacy);
        expect(comments(after)).toContain(networkTag(LONG));
        expect(jumps(after).sort()).toEqual(['forward -> kvmnftd_forward', 'input -> kvmnftd_input']);
        expect(adminRules(after)).toEqual(adminRules(before));
        // The adoption: the marker and the re-tagged rules came in one transaction, and 0.1.0's tagged rules went in it.
        const adoption = monitor.filter((g) =>
          g.events.some((e) => e.includes(`chain inet kvmnftd ${OWNER_MARKER_CHAIN}`)),
        );
        expect(adoption, 'one transaction added the marker chain').toHaveLength(1);
        const [tx] = adoption;
        expect(tx!.events.some((e) => e.startsWith('add rule') && e.includes(networkTag(LONG)))).toBe(true);
        // Handles stay while the table does: each rule 0.1.0 tagged is deleted by that transaction.
        const legacyRules = [...before.tables.values()].flatMap((tb) =>
          [...tb.chains.values()].flatMap((ch) =>
            ch.rules
              .filter((r) => r.comment === legacy)
              .map((r) => `delete rule ${tb.family} ${tb.name} ${ch.name} handle ${r.handle}`),
          ),
        );
        expect(legacyRules.length).toBeGreaterThan(0);
        expect(legacyRules.filter((d) => !tx!.events.includes(d))).toEqual([]);
        expect(monitor.flatMap((g) => g.events).filter((e) => e.startsWith('add rule') && e.includes(legacy))).toEqual(
          [],
        );

        const doctor = await ct.exec(['kvmnftd', 'doctor', '--json']);
        const findings = (
          JSON.parse(doctor.stdout) as { findings: Array<{ id: string; severity: string; title: string }> }
        ).findings;
        console.log(`[${release}] doctor: ${findings.map((f) => `${f.severity} ${f.id}: ${f.title}`).join('\n  ')}`);
        expect(findings.map((f) => f.id)).not.toContain('nat-table-not-owned');
        expect(findings.filter((f) => f.severity === 'error')).toEqual([]);

        // The input path with the new rules: a fresh DHCP lease.
        const lease = await dhcpLease(ct, 'guest');
        expect(lease.stdout, lease.stderr).toMatch(/^LEASE 192\.168\.122\.\d+\/24 router 192\.168\.122\.1$/m);
        must(await ct.exec(PING_UPSTREAM), 'the guest pings upstream after the upgrade');
      },
      3 * MINUTE,
    );

    it('control: without kvmnftd the same ping fails (the probe above can fail)', async () => {
      const ct = c!;
      const ping = guestBusybox('guest', 'ping', '-c', '2', '-W', '1', UPSTREAM);
      await ct.sh('systemctl stop kvmnftd && nft flush chain inet filter kvmnftd_forward');
      expect((await ct.exec(ping)).code, "the admin's forward policy drops it").not.toBe(0);
      await ct.sh('systemctl start kvmnftd');
      must(await ct.exec(ping), 'the guest pings upstream with kvmnftd back');
    });
  });
}
