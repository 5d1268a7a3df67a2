// kvmnftd installed like a real system service, verified under a real
// systemd: for Debian 12 and Debian 13, the .deb built inside a root of that
// release (packaging/deb/build.sh) is installed into a debootstrap'd root
// (cached, packaging/deb/rootfs.sh) that has systemd, dbus, the release's
// nodejs, libvirt and nftables; the root boots with systemd-nspawn (systemd
// as PID 1, private network) with nftables.service enabled and the admin's
// drop-policy ruleset in /etc/nftables.conf, and the default libvirt network
// autostarting. Both releases are prepared in parallel; each boots twice
// (the second boot is the reboot test). Needs root; fails (never skips) when
// it cannot run. Timings and the systemd-analyze security scores are printed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDeb,
  Container,
  exposure,
  hostReady,
  kvmnftdRulesFor,
  libvirtRulesFor,
  must,
  REPO,
  rootfs,
  run,
  unitProps,
  type Release,
} from './container.js';
import { sleep, waitUntil } from '../helpers/wait.js';
import { promtoolCheck, sample } from '../helpers/prometheus.js';

const ADMIN = join(REPO, 'test', 'fixtures', 'admin-ruleset.nft');
const MINUTE = 60_000;
const work = mkdtempSync('/var/tmp/kvmnftd-system-');
const timings: string[] = [];
const scores: Record<string, Record<string, number>> = {};
const t = (release: Release, what: string, ms: number): void => {
  const line = `[${release}] ${what}: ${(ms / 1000).toFixed(1)} s`;
  timings.push(line);
  console.log(line);
};

interface Prepared {
  root: string;
  layer: string;
  deb: string;
  debBytes: number;
}

async function prepare(release: Release): Promise<Prepared> {
  await hostReady([]);
  const t0 = performance.now();
  const dir = join(work, release);
  mkdirSync(dir, { recursive: true });
  const [root, built] = await Promise.all([
    rootfs(release, 'system').then(
      (r) => (t(release, 'system root ready (cached or built)', performance.now() - t0), r),
    ),
    buildDeb(release).then(
      (b) => (t(release, '.deb ready (cached, or built with its build root)', performance.now() - t0), b),
    ),
  ]);
  console.log(`[${release}] ${built.log.trim()}`);
  console.log(`[${release}] lintian:\n${built.lintian.trim()}`);
  const t1 = performance.now();
  const layer = join(dir, 'layer');
  const installed = await run(
    'bash',
    [join(REPO, 'test', 'system', 'install-layer.sh'), root, layer, built.deb, ADMIN],
    { timeoutMs: 5 * MINUTE },
  );
  console.log(`[${release}] install layer:\n${installed.stdout}${installed.stderr}`);
  must(installed, `install-layer.sh ${release}`);
  t(release, 'dpkg -i into the install layer', performance.now() - t1);
  return { root, layer, deb: built.deb, debBytes: readFileSync(built.deb).length };
}

let prepared: Record<Release, Promise<Prepared>>;
beforeAll(() => {
  // Both releases at once: building roots and .debs is the slow, cold part.
  prepared = { bookworm: prepare('bookworm'), trixie: prepare('trixie') };
  for (const p of Object.values(prepared)) p.catch(() => undefined);
});

afterAll(() => {
  console.log(`\ntest/system timings:\n  ${timings.join('\n  ')}`);
  const units = ['kvmnftd.service', 'libvirtd.service', 'nftables.service'];
  const rows = Object.entries(scores).map(
    ([rel, s]) => `  ${rel.padEnd(10)} ${units.map((u) => String(s[u] ?? '-').padStart(18)).join('')}`,
  );
  console.log(
    `\nsystemd-analyze security (exposure, lower is better), inside the booted container:\n  ${''.padEnd(10)} ${units.map((u) => u.padStart(18)).join('')}\n${rows.join('\n')}`,
  );
  rmSync(work, { recursive: true, force: true });
});

const LAB_XML = `<network>
  <name>lab</name>
  <forward mode='nat'/>
  <bridge name='virbr7' stp='off'/>
  <ip address='192.168.177.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.177.2' end='192.168.177.254'/></dhcp>
  </ip>
</network>
`;

/** A forward to an address of the default network (issue 13). */
const FORWARD = `
[[port_forward]]
network = "default"
proto = "tcp"
host_port = 2222
to = "192.168.122.50"
to_port = 22
`;

/**
 * libvirt's chain that rejects new connections into its NAT bridges (ip
 * family), whichever backend it runs: how it starts and how many mark
 * accepts of kvmnftd's it holds.
 */
async function rejectChainHead(
  c: Container,
): Promise<{ chain: string; firstIsMarkAccept: boolean; markAccepts: number }> {
  const doc = JSON.parse(await c.sh('nft -j list ruleset')) as { nftables: Array<Record<string, unknown>> };
  type R = { family: string; table: string; chain: string; comment?: string; expr: Array<Record<string, unknown>> };
  const rules = doc.nftables.map((o) => o['rule'] as R | undefined).filter((r): r is R => r !== undefined);
  const where =
    [
      ['filter', 'LIBVIRT_FWI'],
      ['libvirt_network', 'guest_input'],
    ].find(([table, chain]) => rules.some((r) => r.family === 'ip' && r.table === table && r.chain === chain)) ?? [];
  const inChain = rules.filter((r) => r.family === 'ip' && r.table === where[0] && r.chain === where[1]);
  if (inChain.length === 0) throw new Error('no LIBVIRT_FWI or guest_input with rules in the ip family');
  const isMark = (r: R) => r.comment === 'kvmnftd' && JSON.stringify(r.expr).includes('"mark"');
  return {
    chain: `ip ${where[0]} ${where[1]}`,
    firstIsMarkAccept: isMark(inChain[0]!),
    markAccepts: inChain.filter(isMark).length,
  };
}

for (const release of ['bookworm', 'trixie'] as const) {
  describe.sequential(
    `kvmnftd.deb under systemd on ${release === 'bookworm' ? 'Debian 12' : 'Debian 13'} (${release})`,
    () => {
      let p: Prepared;
      let c: Container | undefined;

      /** Boot N of the release's root with the install layer; the time it took is printed. */
      const bootNo = async (n: number) => {
        const dir = mkdtempSync(join(work, `${release}-boot${n}-`));
        const boot = await Container.boot(`kvmnftd-${release}`, p.root, p.layer, dir);
        t(release, `boot ${n} to "${boot.state}"`, boot.bootMs);
        return boot;
      };

      beforeAll(async () => {
        p = await prepared[release];
        t(release, `.deb size ${(p.debBytes / 1024).toFixed(0)} KiB`, 0);
        const boot = await bootNo(1);
        c = boot.container;
        if (boot.state !== 'running')
          console.log(`[${release}] failed units:\n${(await c.try('systemctl --failed --no-legend')).stdout}`);
      }, 20 * MINUTE);

      afterAll(async () => {
        if (c) t(release, 'power off', await c.stop());
      }, 2 * MINUTE);

      it(
        "the package enabled kvmnftd; at boot it came up after nftables and libvirtd with the default network's rules",
        async () => {
          const ct = c!;
          expect((await ct.try('systemctl is-enabled kvmnftd')).stdout.trim()).toBe('enabled');
          await waitUntil(
            'kvmnftd active after boot',
            60_000,
            async () => (await ct.try('systemctl is-active kvmnftd')).stdout.trim() === 'active',
          );
          await waitUntil('default network rules', 30_000, () => kvmnftdRulesFor(ct, 'virbr0'));
          const at = async (unit: string) =>
            unitProps(ct, unit, ['ActiveEnterTimestampMonotonic', 'InactiveExitTimestampMonotonic', 'ActiveState']);
          const nft = await at('nftables.service');
          const libvirtd = await at('libvirtd.service');
          const kvm = await at('kvmnftd.service');
          expect(nft['ActiveState']).toBe('active');
          expect(libvirtd['ActiveState']).toBe('active');
          expect(Number(nft['ActiveEnterTimestampMonotonic'])).toBeLessThanOrEqual(
            Number(libvirtd['InactiveExitTimestampMonotonic']),
          );
          expect(Number(libvirtd['ActiveEnterTimestampMonotonic'])).toBeLessThanOrEqual(
            Number(kvm['InactiveExitTimestampMonotonic']),
          );
          expect((await ct.sh('virsh -q net-list --name')).trim().split('\n')).toContain('default');
        },
        3 * MINUTE,
      );

      it(
        'systemctl enable --now kvmnftd: active (READY=1), systemctl status shows the STATUS line',
        async () => {
          const ct = c!;
          await ct.sh('systemctl disable --now kvmnftd');
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('inactive');
          expect(await kvmnftdRulesFor(ct, 'virbr0'), 'a plain stop keeps the rules').toBe(true);
          const start = await ct.exec(['systemctl', 'enable', '--now', 'kvmnftd']);
          must(start, 'systemctl enable --now kvmnftd');
          t(release, 'systemctl enable --now kvmnftd -> active (Type=notify: returns at READY=1)', start.ms);
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('active');
          const status = (await ct.try('systemctl status --no-pager kvmnftd')).stdout;
          console.log(`[${release}] systemctl status kvmnftd:\n${status}`);
          expect(status).toMatch(/Status: "1 network \(default\)/);
          // The time from `systemctl start` to active, on a warm system.
          await ct.sh('systemctl stop kvmnftd');
          const again = await ct.exec(['systemctl', 'start', 'kvmnftd']);
          must(again, 'systemctl start kvmnftd');
          t(release, 'systemctl start kvmnftd -> active', again.ms);
        },
        3 * MINUTE,
      );

      it(
        'virsh net-start of another network: its rules appear, one readable journal line for it',
        async () => {
          const ct = c!;
          await ct.sh(
            `cat > /tmp/lab.xml <<'X'\n${LAB_XML}X\nvirsh -q net-define /tmp/lab.xml && virsh -q net-start lab`,
          );
          await waitUntil('lab network rules', 30_000, () => kvmnftdRulesFor(ct, 'virbr7'));
          const lines = await waitUntil('the journal line for lab', 10_000, async () => {
            const j = (await ct.try('journalctl -u kvmnftd -b -o cat --no-pager')).stdout
              .split('\n')
              .filter((l) => /\blab\b/.test(l) && /network lab up/.test(l));
            return j.length > 0 ? j : undefined;
          });
          console.log(`[${release}] journal: ${lines.join('\n')}`);
          expect(lines).toHaveLength(1);
          expect(lines[0]).toMatch(/^network lab up: applied \d+ nft commands in [\d.]+ ms/);
        },
        2 * MINUTE,
      );

      it('journalctl -u kvmnftd -p warning shows only warnings and worse', async () => {
        const ct = c!;
        const all = (await ct.sh('journalctl -u kvmnftd -b -o json --no-pager'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, string>);
        const mine = all.filter((e) => e['_PID'] !== undefined && e['SYSLOG_IDENTIFIER'] !== 'systemd');
        expect(
          mine.some((e) => Number(e['PRIORITY']) === 6),
          'info lines are logged at priority 6',
        ).toBe(true);
        const warn = (await ct.sh('journalctl -u kvmnftd -b -p warning -o json --no-pager'))
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, string>);
        for (const e of warn) expect(Number(e['PRIORITY']), e['MESSAGE']).toBeLessThanOrEqual(4);
        const text = (await ct.sh('journalctl -u kvmnftd -b -p warning -o cat --no-pager')).trim();
        expect(text).not.toMatch(/network lab up|ready:/);
      });

      it(
        'systemctl reload kvmnftd re-reads the config and returns when done; a bad config is rejected, the old one kept',
        async () => {
          const ct = c!;
          const pid = (await unitProps(ct, 'kvmnftd', ['MainPID']))['MainPID'];
          await ct.sh(
            "sed -i 's/^resync_interval = 60/resync_interval = 30/' /etc/kvmnftd/kvmnftd.toml && grep -q '^resync_interval = 30' /etc/kvmnftd/kvmnftd.toml",
          );
          const r = await ct.exec(['systemctl', 'reload', 'kvmnftd']);
          must(r, 'systemctl reload kvmnftd');
          t(release, 'systemctl reload kvmnftd', r.ms);
          // Returned only after the daemon recorded the reload (READY=1 follows RELOADING=1).
          expect((await ct.sh('cat /run/kvmnftd/reload.state')).trim()).toMatch(/^\d+ ok$/);
          expect(
            (await ct.sh('journalctl -u kvmnftd -b -o cat --no-pager')).includes('SIGHUP: configuration re-read'),
          ).toBe(true);
          const after = await unitProps(ct, 'kvmnftd', ['MainPID', 'ActiveState', 'SubState']);
          expect(after).toMatchObject({ MainPID: pid, ActiveState: 'active', SubState: 'running' });

          await ct.sh('sed -i \'s/^jump = "first"/jump = "middle"/\' /etc/kvmnftd/kvmnftd.toml');
          const bad = await ct.exec(['systemctl', 'reload', 'kvmnftd']);
          expect(bad.code).not.toBe(0);
          expect((await ct.sh('cat /run/kvmnftd/reload.state')).trim()).toMatch(/rejected: .*filter\.jump/);
          expect(await unitProps(ct, 'kvmnftd', ['MainPID', 'ActiveState'])).toMatchObject({
            MainPID: pid,
            ActiveState: 'active',
          });
          await ct.sh(
            'sed -i \'s/^jump = "middle"/jump = "first"/\' /etc/kvmnftd/kvmnftd.toml && systemctl reload kvmnftd',
          );
        },
        2 * MINUTE,
      );

      it(
        "systemctl reload kvmnftd adds a port forward (DNAT, mark accept first in libvirt's reject chain) and removes it",
        async () => {
          const ct = c!;
          await ct.sh('cp /etc/kvmnftd/kvmnftd.toml /tmp/kvmnftd.toml.orig');
          await ct.sh(`cat >> /etc/kvmnftd/kvmnftd.toml <<'X'\n${FORWARD}X`);
          const add = await ct.exec(['systemctl', 'reload', 'kvmnftd']);
          must(add, 'systemctl reload kvmnftd (forward added)');
          t(release, 'systemctl reload kvmnftd, a forward added', add.ms);
          // Returned only after the pass: the rules are there now, no waiting.
          expect(await ct.sh('nft list chain inet kvmnftd pf_prerouting')).toMatch(
            /tcp dport 2222 .*dnat ip to 192\.168\.122\.50:22/,
          );
          const placed = await rejectChainHead(ct);
          console.log(`[${release}] libvirt's reject chain: ${placed.chain}`);
          expect(placed.firstIsMarkAccept, `${placed.chain} starts with kvmnftd's mark accept`).toBe(true);
          expect(placed.markAccepts).toBe(1);

          await ct.sh('cp /tmp/kvmnftd.toml.orig /etc/kvmnftd/kvmnftd.toml');
          const del = await ct.exec(['systemctl', 'reload', 'kvmnftd']);
          must(del, 'systemctl reload kvmnftd (forward removed)');
          t(release, 'systemctl reload kvmnftd, the forward removed', del.ms);
          expect((await ct.try('nft list chain inet kvmnftd pf_prerouting')).code, 'pf_prerouting gone').not.toBe(0);
          expect(await ct.sh('nft list table inet kvmnftd')).not.toContain('dnat');
          expect((await rejectChainHead(ct)).markAccepts, "no mark accept left in libvirt's chain").toBe(0);
          expect(await kvmnftdRulesFor(ct, 'virbr0')).toBe(true);
        },
        2 * MINUTE,
      );

      it(
        "[metrics] textfile under the shipped unit: 0644 in node_exporter's directory, read by user prometheus, valid for promtool",
        async () => {
          const ct = c!;
          // Debian's prometheus-node-exporter is not in the root: its user and its root-owned 0755 directory.
          await ct.sh(
            'getent passwd prometheus >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin prometheus',
          );
          await ct.sh('mkdir -p /var/lib/prometheus/node-exporter && chmod 0755 /var/lib/prometheus/node-exporter');
          await ct.sh('cp /etc/kvmnftd/kvmnftd.toml /tmp/kvmnftd.toml.orig');
          // The shipped example's commented textfile line, uncommented.
          await ct.sh(
            "sed -i -e 's|^#   textfile = |textfile = |' -e 's|^interval = 15|interval = 1|' /etc/kvmnftd/kvmnftd.toml",
          );
          expect(
            await ct.sh(
              'grep -c "^textfile = \\"/var/lib/prometheus/node-exporter/kvmnftd.prom\\"" /etc/kvmnftd/kvmnftd.toml',
            ),
          ).toBe('1\n');
          // A restart, not a reload: ReadWritePaths=- takes the directory only if it exists when the unit starts.
          must(await ct.exec(['systemctl', 'restart', 'kvmnftd']), 'systemctl restart kvmnftd');
          const file = '/var/lib/prometheus/node-exporter/kvmnftd.prom';
          const text = await waitUntil('the textfile', 15_000, async () => {
            const r = await ct.try(`setpriv --reuid=prometheus --regid=prometheus --clear-groups cat ${file}`);
            return r.code === 0 && r.stdout.includes('network="default"') ? r.stdout : undefined;
          });
          expect(await ct.sh(`stat -c '%a %U' ${file}`)).toBe('644 root\n');
          expect(await ct.sh('ls -A /var/lib/prometheus/node-exporter')).toBe('kvmnftd.prom\n');
          expect(sample(text, 'kvmnftd_daemon_up')).toBe(1);
          expect(await promtoolCheck(text), text).toEqual({ exitCode: 0, output: '' });
          console.log(`[${release}] textfile as user prometheus:\n${text}`);

          // Elsewhere ProtectSystem=strict keeps it read-only: logged once, shown by status; the daemon runs on.
          await ct.sh(
            'sed -i \'s|^textfile = .*|textfile = "/srv/kvmnftd.prom"|\' /etc/kvmnftd/kvmnftd.toml && systemctl reload kvmnftd',
          );
          const status = await waitUntil('status to show the failing textfile', 15_000, async () => {
            const s = JSON.parse((await ct.try('kvmnftd status --json')).stdout) as {
              daemon: { metrics_error: string | null };
            };
            return s.daemon.metrics_error ?? undefined;
          });
          expect(status).toMatch(/^cannot write \/srv\/kvmnftd\.prom: EROFS/);
          // Logged once (the unit test of MetricsWriter checks that later attempts add no line).
          const journal = (await ct.sh('journalctl -u kvmnftd -b -o cat --no-pager')).split('\n');
          expect(journal.filter((l) => l.includes('metrics textfile: cannot write /srv/')).length).toBe(1);
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('active');

          await ct.sh('cp /tmp/kvmnftd.toml.orig /etc/kvmnftd/kvmnftd.toml');
          must(await ct.exec(['systemctl', 'restart', 'kvmnftd']), 'systemctl restart kvmnftd');
        },
        2 * MINUTE,
      );

      it(
        'systemctl restart keeps the rules in place',
        async () => {
          const ct = c!;
          const before = await ct.sh('nft list table inet kvmnftd');
          // Watch the ruleset during the restart: kvmnftd's table is never deleted.
          await ct.sh('(timeout 15 nft monitor > /tmp/monitor.txt 2>&1 &) ; sleep 0.3');
          await ct.sh('systemctl restart kvmnftd');
          await sleep(1500);
          await ct.try('pkill -x -f "nft monitor" ; true');
          const monitor = await ct.sh('cat /tmp/monitor.txt');
          expect(monitor).not.toMatch(/delete table inet kvmnftd|delete chain inet filter kvmnftd_/);
          expect(await ct.sh('nft list table inet kvmnftd')).toBe(before);
          expect(await kvmnftdRulesFor(ct, 'virbr0')).toBe(true);
          expect(await kvmnftdRulesFor(ct, 'virbr7')).toBe(true);
        },
        MINUTE,
      );

      it(
        'a hung daemon (SIGSTOP) is killed by the watchdog and restarted',
        async () => {
          const ct = c!;
          // Shorter than the unit's 30 s for the test; the abort of a stopped process waits TimeoutAbortSec.
          // The tests before restarted kvmnftd four times, within seconds on a fast machine: reset-failed
          // clears systemd's start rate limit (5 starts in 10 s by default), which would refuse this restart
          // or the watchdog's.
          await ct.sh(
            'mkdir -p /run/systemd/system/kvmnftd.service.d && printf "[Service]\\nWatchdogSec=3s\\nTimeoutAbortSec=2s\\n" > /run/systemd/system/kvmnftd.service.d/watchdog.conf && systemctl daemon-reload && systemctl reset-failed kvmnftd && systemctl restart kvmnftd',
          );
          const before = await unitProps(ct, 'kvmnftd', ['MainPID', 'NRestarts', 'WatchdogUSec']);
          expect(before['WatchdogUSec']).toBe('3s');
          const t0 = performance.now();
          await ct.sh(`kill -STOP ${before['MainPID']}`);
          const after = await waitUntil(
            'a new kvmnftd after the watchdog',
            60_000,
            async () => {
              const now = await unitProps(ct, 'kvmnftd', ['MainPID', 'NRestarts', 'ActiveState', 'SubState']);
              return now['MainPID'] !== before['MainPID'] &&
                now['MainPID'] !== '0' &&
                now['ActiveState'] === 'active' &&
                now['SubState'] === 'running'
                ? now
                : undefined;
            },
            { intervalMs: 250 },
          );
          t(release, 'SIGSTOP -> watchdog kill -> active again (WatchdogSec=3s)', performance.now() - t0);
          expect(Number(after['NRestarts'])).toBe(Number(before['NRestarts']) + 1);
          expect(await ct.sh('journalctl -u kvmnftd -b -o cat --no-pager')).toMatch(/[Ww]atchdog timeout/);
          expect(await kvmnftdRulesFor(ct, 'virbr0')).toBe(true);
          await ct.sh(
            'rm -r /run/systemd/system/kvmnftd.service.d && systemctl daemon-reload && systemctl restart kvmnftd',
          );
        },
        2 * MINUTE,
      );

      it(
        "systemctl reload nftables: kvmnftd restores its rules and libvirt's; networks start again",
        async () => {
          const ct = c!;
          expect(await libvirtRulesFor(ct, 'virbr0')).toBe(true);
          const t0 = performance.now();
          await ct.sh('systemctl reload nftables');
          await waitUntil(
            'kvmnftd rules back',
            30_000,
            async () => (await kvmnftdRulesFor(ct, 'virbr0')) && kvmnftdRulesFor(ct, 'virbr7'),
          );
          t(release, 'systemctl reload nftables -> kvmnftd rules back', performance.now() - t0);
          await waitUntil(
            "libvirt's rules back (FirewallD1.Reloaded)",
            30_000,
            async () => (await libvirtRulesFor(ct, 'virbr0')) && libvirtRulesFor(ct, 'virbr7'),
          );
          t(release, "systemctl reload nftables -> libvirt's rules back", performance.now() - t0);
          // The admin's own rules are as in /etc/nftables.conf (plus the jumps).
          expect(await ct.sh('nft list chain inet filter input')).toContain('tcp dport 22 accept comment "admin ssh"');
          await ct.sh('virsh -q net-destroy lab && virsh -q net-start lab');
          await waitUntil('lab rules after its restart', 30_000, () => kvmnftdRulesFor(ct, 'virbr7'));
        },
        2 * MINUTE,
      );

      it('systemd-analyze security: kvmnftd.service exposure <= 2.0 while working', async () => {
        const ct = c!;
        const s: Record<string, number> = {};
        for (const unit of ['kvmnftd.service', 'libvirtd.service', 'nftables.service']) {
          s[unit] = exposure((await ct.try(`systemd-analyze security --no-pager ${unit}`)).stdout, unit);
        }
        scores[release] = s;
        console.log(`[${release}] exposure: ${JSON.stringify(s)}`);
        expect(s['kvmnftd.service']).toBeLessThanOrEqual(2.0);
        expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('active');
        expect(await kvmnftdRulesFor(ct, 'virbr0')).toBe(true);
      });

      it(
        'apt-get remove takes the rules out (prerm); purge removes /etc/kvmnftd',
        async () => {
          const ct = c!;
          await ct.sh('cp /etc/nftables.conf /tmp/admin.nft');
          const r = await ct.exec(['dpkg', '--remove', 'kvmnftd'], 2 * MINUTE);
          console.log(`[${release}] dpkg --remove:\n${r.stdout}${r.stderr}`);
          must(r, 'dpkg --remove kvmnftd');
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).not.toBe('active');
          const ruleset = await ct.sh('nft list ruleset');
          expect(ruleset).not.toContain('kvmnftd');
          expect(ruleset).toContain('tcp dport 22 accept comment "admin ssh"');
          expect(await libvirtRulesFor(ct, 'virbr0'), "libvirt's own rules stay").toBe(true);
          expect((await ct.try('test -f /etc/kvmnftd/kvmnftd.toml')).code, 'remove keeps the conffile').toBe(0);
          must(await ct.exec(['dpkg', '--purge', 'kvmnftd'], MINUTE), 'dpkg --purge kvmnftd');
          expect((await ct.try('test -e /etc/kvmnftd')).code, 'purge removes /etc/kvmnftd').not.toBe(0);
          expect((await ct.try('test -e /usr/lib/kvmnftd || test -e /usr/bin/kvmnftd')).code).not.toBe(0);
        },
        3 * MINUTE,
      );

      it(
        'reboot: after a fresh boot nobody touches, nftables -> libvirtd -> kvmnftd and the default network has its rules',
        async () => {
          t(release, 'power off (boot 1)', await c!.stop());
          c = undefined;
          const boot = await bootNo(2);
          c = boot.container;
          const ct = c;
          await waitUntil(
            'kvmnftd active',
            60_000,
            async () => (await ct.try('systemctl is-active kvmnftd')).stdout.trim() === 'active',
          );
          await waitUntil('default network rules after the reboot', 30_000, () => kvmnftdRulesFor(ct, 'virbr0'));
          const order = await ct.sh(
            'for u in nftables libvirtd kvmnftd; do echo "$u $(systemctl show -p InactiveExitTimestampMonotonic --value $u) $(systemctl show -p ActiveEnterTimestampMonotonic --value $u)"; done',
          );
          const [nft, libvirtd, kvm] = order
            .trim()
            .split('\n')
            .map((l) => l.split(' ').slice(1).map(Number)) as [number[], number[], number[]];
          expect(nft[1]!).toBeLessThanOrEqual(libvirtd[0]!);
          expect(libvirtd[1]!).toBeLessThanOrEqual(kvm[0]!);
          t(release, `boot 2: kvmnftd active ${((kvm[1]! - kvm[0]!) / 1e6).toFixed(2)} s after its start`, 0);
          expect(await libvirtRulesFor(ct, 'virbr0')).toBe(true);
          writeFileSync(join(work, `${release}-journal.txt`), (await ct.try('journalctl -b --no-pager')).stdout);
        },
        5 * MINUTE,
      );
    },
  );
}
