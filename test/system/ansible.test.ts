// The Ansible role (packaging/ansible) for real, on Debian 12 and Debian 13:
// an ansible root (packaging/deb/rootfs.sh RELEASE ansible: the system root
// plus the release's own ansible-core and python3-apt) gets the admin's
// drop-policy ruleset, the default libvirt network and the role, but no
// kvmnftd; it boots under systemd-nspawn (test/system/container.ts), and
// ansible-playbook runs INSIDE the container with a local connection (a chroot
// connection cannot reach the container's systemd; the container has no
// network), installing this tree's .deb through the role's kvmnftd_deb.
// Checked, in order: the first run sets everything up (package, config,
// service enabled and active, the default network's rules live); a second run
// changes nothing (PLAY RECAP changed=0); a port forward added to the
// variables reloads the daemon (same PID) and the DNAT is live when the play
// returns; a bad variable fails at `kvmnftd check` with the running config
// file, the daemon and the ruleset untouched; kvmnftd_state=absent leaves no
// package, no config and no kvmnftd rule (the admin's and libvirt's rules stay),
// and a second absent run changes nothing. The versions tested must be the
// ones packaging/ansible/README.md's matrix names. Needs root; fails, never
// skips. Timings are printed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDeb,
  Container,
  hostReady,
  kvmnftdRulesFor,
  libvirtRulesFor,
  must,
  REPO,
  rootfs,
  run,
  statusOk,
  unitProps,
  type Release,
  type Run,
} from './container.js';

const ADMIN = join(REPO, 'test', 'fixtures', 'admin-ruleset.nft');
const ROLE = join(REPO, 'packaging', 'ansible');
const MINUTE = 60_000;
const RELEASES: Release[] = ['bookworm', 'trixie'];
const work = mkdtempSync('/var/tmp/kvmnftd-ansible-');
const timings: string[] = [];
const t = (release: Release, what: string, ms: number): void => {
  const line = `[${release}] ${what}: ${(ms / 1000).toFixed(1)} s`;
  timings.push(line);
  console.log(line);
};

/** The playbook: the role on this host, as an admin's site.yml would apply it. */
const SITE = `---
- name: Kvmnftd on this host
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  roles:
    - role: kvmnftd
`;

const DEB = '/root/ansible/kvmnftd.deb';
const CONFIG = { filter: { jump: 'first' }, daemon: { resync_interval: 30 } };
const FORWARD = { network: 'default', proto: 'tcp', host_port: 2222, to: '192.168.122.50', to_port: 22 };
const VARS = {
  base: { kvmnftd_deb: DEB, kvmnftd_config: CONFIG },
  forward: { kvmnftd_deb: DEB, kvmnftd_config: { ...CONFIG, port_forward: [FORWARD] } },
  bad: { kvmnftd_deb: DEB, kvmnftd_config: { ...CONFIG, port_forward: [{ ...FORWARD, host_port: 70000 }] } },
  absent: { kvmnftd_state: 'absent', kvmnftd_deb: DEB, kvmnftd_config: CONFIG },
};

interface Prepared {
  root: string;
  layer: string;
  version: string;
}

async function prepare(release: Release): Promise<Prepared> {
  await hostReady(['dpkg-deb']);
  const t0 = performance.now();
  const dir = join(work, release);
  const [root, built] = await Promise.all([rootfs(release, 'ansible'), buildDeb(release)]);
  t(release, 'ansible root and .deb ready (cached or built)', performance.now() - t0);
  const setup = join(dir, 'setup');
  mkdirSync(setup, { recursive: true });
  cpSync(join(REPO, 'test', 'system', 'ansible-setup.sh'), join(setup, 'setup.sh'));
  cpSync(ROLE, join(setup, 'role'), { recursive: true });
  cpSync(built.deb, join(setup, 'kvmnftd.deb'));
  writeFileSync(join(setup, 'site.yml'), SITE);
  const layer = join(dir, 'layer');
  const t1 = performance.now();
  const r = await run('bash', [join(REPO, 'test', 'system', 'install-layer.sh'), root, layer, '-', ADMIN, setup], {
    timeoutMs: 5 * MINUTE,
  });
  console.log(`[${release}] install layer (no kvmnftd; the role, its playbook and the .deb):\n${r.stdout}${r.stderr}`);
  must(r, `install-layer.sh ${release}`);
  t(release, 'install layer', performance.now() - t1);
  const version = must(await run('dpkg-deb', ['-f', built.deb, 'Version']), 'dpkg-deb -f').trim();
  return { root, layer, version };
}

let prepared: Record<Release, Promise<Prepared>>;
beforeAll(() => {
  prepared = Object.fromEntries(RELEASES.map((r) => [r, prepare(r)])) as Record<Release, Promise<Prepared>>;
  for (const p of Object.values(prepared)) p.catch(() => undefined);
});

afterAll(() => {
  console.log(`\ntest/system/ansible timings:\n  ${timings.join('\n  ')}`);
  rmSync(work, { recursive: true, force: true });
});

interface Recap {
  ok: number;
  changed: number;
  unreachable: number;
  failed: number;
  skipped: number;
}

interface Play {
  run: Run;
  recap: Recap;
  /** Each task and handler that ran, with its result: "TASK [kvmnftd : Enable and start kvmnftd]" -> "ok". */
  results: Map<string, string>;
}

/** The PLAY RECAP line of localhost, and what each task did, from ansible-playbook's default output. */
function parsePlay(out: string): Omit<Play, 'run'> {
  const m = /^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)/m.exec(out);
  if (!m) throw new Error(`no PLAY RECAP for localhost in:\n${out.slice(-4000)}`);
  const [ok, changed, unreachable, failed, skipped] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const results = new Map<string, string>();
  let task: string | undefined;
  for (const line of out.split('\n')) {
    const head = /^(TASK|RUNNING HANDLER) \[(.*)\] \**$/.exec(line);
    if (head) task = `${head[1]} [${head[2]}]`;
    const result = /^(ok|changed|skipping|fatal|included): /.exec(line);
    if (task && result) {
      results.set(task, result[1]!);
      task = undefined;
    }
  }
  return { recap: { ok, changed, unreachable, failed, skipped }, results };
}

/** The tasks that reported changed. */
const changedTasks = (p: Play): string[] => [...p.results].filter(([, r]) => r === 'changed').map(([task]) => task);

for (const release of RELEASES) {
  describe.sequential(
    `the Ansible role on ${release === 'bookworm' ? 'Debian 12' : 'Debian 13'} (${release}), with its own ansible-core`,
    () => {
      let c: Container | undefined;
      let p: Prepared;

      /** ansible-playbook site.yml inside the container, with VARS as extra vars. */
      const playbook = async (what: string, vars: object): Promise<Play> => {
        const ct = c!;
        await ct.sh(`cat > /root/ansible/vars.json <<'X'\n${JSON.stringify(vars)}\nX`);
        const r = await ct.exec(
          [
            ...['ANSIBLE_NOCOLOR=1', 'ANSIBLE_LOCALHOST_WARNING=false', 'ANSIBLE_INVENTORY_UNPARSED_WARNING=false'],
            ...['ansible-playbook', '-i', 'localhost,', '/root/ansible/site.yml', '-e', '@/root/ansible/vars.json'],
          ],
          5 * MINUTE,
        );
        t(release, `ansible-playbook: ${what}`, r.ms);
        const play = { run: r, ...parsePlay(r.stdout) };
        console.log(`[${release}] ${what}:\n${r.stdout.slice(r.stdout.lastIndexOf('PLAY RECAP'))}`);
        return play;
      };
      const passed = (play: Play): Play => {
        if (play.run.code !== 0 || play.recap.failed !== 0)
          throw new Error(`ansible-playbook failed (exit ${play.run.code}):\n${play.run.stdout}\n${play.run.stderr}`);
        return play;
      };
      const mainPid = async (): Promise<string> => (await unitProps(c!, 'kvmnftd', ['MainPID']))['MainPID']!;

      beforeAll(async () => {
        p = await prepared[release];
        const dir = mkdtempSync(join(work, `${release}-boot-`));
        const boot = await Container.boot(`kvmnftd-ansible-${release}`, p.root, p.layer, dir);
        c = boot.container;
        t(release, `boot to "${boot.state}"`, boot.bootMs);
      }, 20 * MINUTE);

      afterAll(async () => {
        if (c) t(release, 'power off', await c.stop());
      }, 2 * MINUTE);

      it("runs the release's own ansible-core and python, as packaging/ansible/README.md's matrix says", async () => {
        const ct = c!;
        const ansible = /^ansible-playbook \[core (\d+\.\d+)\.\d+/.exec(await ct.sh('ansible-playbook --version'));
        const python = /^Python (\d+\.\d+)\./.exec(await ct.sh('python3 --version'));
        console.log(`[${release}] ansible-core ${ansible?.[1]}, Python ${python?.[1]}`);
        const row = readFileSync(join(ROLE, 'README.md'), 'utf8')
          .split('\n')
          .find((l) => l.startsWith('|') && l.includes(`(${release})`));
        expect(row, `a row for ${release} in the README's matrix`).toBeDefined();
        const cells = row!.split('|').map((s) => s.trim());
        expect(cells.slice(2, 4)).toEqual([ansible?.[1], python?.[1]]);
      });

      it(
        'first run: installs the .deb, writes the config, enables and starts kvmnftd; the rules are live',
        async () => {
          const ct = c!;
          expect((await ct.try('dpkg-query -W kvmnftd')).code, 'kvmnftd is not installed before').not.toBe(0);
          const play = passed(await playbook('first run', VARS.base));
          expect(changedTasks(play)).toEqual([
            'TASK [kvmnftd : Create the folder for the .deb]',
            'TASK [kvmnftd : Copy the .deb to the host]',
            'TASK [kvmnftd : Install the .deb with apt (nothing to do when that version is installed)]',
            'TASK [kvmnftd : Write /etc/kvmnftd/kvmnftd.toml, validated with kvmnftd check]',
            'RUNNING HANDLER [kvmnftd : Reload kvmnftd]',
          ]);
          expect((await ct.sh("dpkg-query -W -f '${Version}' kvmnftd")).trim()).toBe(p.version);
          expect((await ct.try('systemctl is-enabled kvmnftd')).stdout.trim()).toBe('enabled');
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).toBe('active');
          const config = await ct.sh('cat /etc/kvmnftd/kvmnftd.toml');
          expect(config).toMatch(/^\[filter\]\njump = "first"\n\n\[daemon\]\nresync_interval = 30\n/m);
          // The reload returned once applied: no waiting for the rules.
          expect(await kvmnftdRulesFor(ct, 'virbr0')).toBe(true);
          expect(await statusOk(ct, ['default'])).toBeDefined();
        },
        6 * MINUTE,
      );

      it(
        'second run: changed=0',
        async () => {
          const play = passed(await playbook('second run (unchanged)', VARS.base));
          expect(changedTasks(play)).toEqual([]);
          expect(play.recap.changed).toBe(0);
          expect(play.results.has('RUNNING HANDLER [kvmnftd : Reload kvmnftd]')).toBe(false);
        },
        6 * MINUTE,
      );

      it(
        'a port forward added to kvmnftd_config: the handler reloads kvmnftd (same PID); the DNAT is live when the play returns',
        async () => {
          const ct = c!;
          const pid = await mainPid();
          const play = passed(await playbook('a port forward added', VARS.forward));
          expect(changedTasks(play)).toEqual([
            'TASK [kvmnftd : Write /etc/kvmnftd/kvmnftd.toml, validated with kvmnftd check]',
            'RUNNING HANDLER [kvmnftd : Reload kvmnftd]',
          ]);
          expect(await ct.sh('nft list chain inet kvmnftd pf_prerouting')).toMatch(
            /tcp dport 2222 .*dnat ip to 192\.168\.122\.50:22/,
          );
          expect(await unitProps(ct, 'kvmnftd', ['MainPID', 'ActiveState'])).toEqual({
            MainPID: pid,
            ActiveState: 'active',
          });
          expect(await ct.sh('cat /etc/kvmnftd/kvmnftd.toml')).toContain(
            '\n[[port_forward]]\nnetwork = "default"\nproto = "tcp"\nhost_port = 2222\nto = "192.168.122.50"\nto_port = 22\n',
          );
        },
        6 * MINUTE,
      );

      it(
        'a bad variable fails at kvmnftd check: the running config, the daemon and the ruleset are untouched',
        async () => {
          const ct = c!;
          const snapshot = async () => ({
            file: await ct.sh('sha256sum /etc/kvmnftd/kvmnftd.toml'),
            // -s: without counters, which move with traffic.
            ruleset: await ct.sh('nft -s list ruleset'),
            unit: await unitProps(ct, 'kvmnftd', ['MainPID', 'ActiveState']),
          });
          const before = await snapshot();
          const play = await playbook('a bad variable (host_port 70000)', VARS.bad);
          expect(play.run.code).not.toBe(0);
          expect(play.recap.failed).toBe(1);
          expect(
            play.results.get('TASK [kvmnftd : Write /etc/kvmnftd/kvmnftd.toml, validated with kvmnftd check]'),
          ).toBe('fatal');
          console.log(`[${release}] ${play.run.stdout.split('\n').find((l) => l.startsWith('fatal:'))}`);
          expect(play.run.stdout).toContain('failed to validate');
          // kvmnftd check's line names the key and the value.
          expect(play.run.stdout).toMatch(/port_forward.*host_port.*70000/);
          expect(play.results.has('RUNNING HANDLER [kvmnftd : Reload kvmnftd]')).toBe(false);
          expect(await snapshot()).toEqual(before);
          expect(before.ruleset).toMatch(/dnat ip to 192\.168\.122\.50:22/);
        },
        6 * MINUTE,
      );

      it(
        'kvmnftd_state: absent purges the package: no kvmnftd rule, config or unit left; a second run changes nothing',
        async () => {
          const ct = c!;
          const play = passed(await playbook('kvmnftd_state absent', VARS.absent));
          expect(changedTasks(play)).toEqual([
            'TASK [kvmnftd : Purge kvmnftd, which takes out its rules]',
            'TASK [kvmnftd : Remove the copied .deb]',
          ]);
          // The role's own check (tasks/absent.yml) found nothing left either.
          expect(play.results.get('TASK [kvmnftd : Check that kvmnftd left no rule behind]')).toBe('ok');
          const ruleset = await ct.sh('nft list ruleset');
          expect(ruleset).not.toMatch(/kvmnftd/);
          expect(ruleset).toContain('tcp dport 22 accept comment "admin ssh"');
          expect(await libvirtRulesFor(ct, 'virbr0'), "libvirt's own rules stay").toBe(true);
          const pkg = await ct.try("dpkg-query -W -f '${db:Status-Abbrev}' kvmnftd");
          expect(pkg.code !== 0 || !/^[a-z]i/.test(pkg.stdout), `dpkg status "${pkg.stdout}"`).toBe(true);
          expect(pkg.stdout, 'purged, not only removed').not.toMatch(/^rc/);
          expect((await ct.try('ls -d /etc/kvmnftd /var/cache/kvmnftd-ansible /usr/bin/kvmnftd')).stdout).toBe('');
          expect((await ct.try('systemctl is-active kvmnftd')).stdout.trim()).not.toBe('active');

          const again = passed(await playbook('kvmnftd_state absent, again', VARS.absent));
          expect(again.recap.changed).toBe(0);
        },
        6 * MINUTE,
      );
    },
  );
}
