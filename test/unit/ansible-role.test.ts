// Static checks of the Ansible role (packaging/ansible; run for real against
// Debian 12 and 13 by test/system/ansible.test.ts): Debian 12's ansible-lint
// passes it with the production profile, and its template writes any
// kvmnftd_config as TOML that reads back as the same data (the template knows
// no key: tables, arrays of tables, inline tables, quoted keys, escapes), and
// kvmnftd check accepts what it writes. Needs ansible-lint and ansible-core on
// the machine (.ci/install-deps); fails, never skips, without them.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import { checkConfigFile } from '../../src/config/config.js';

const REPO = join(import.meta.dirname, '..', '..');
const ROLE = join(REPO, 'packaging', 'ansible');
const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-ansible-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ENV = {
  ...process.env,
  NO_COLOR: '1',
  ANSIBLE_NOCOLOR: '1',
  ANSIBLE_LOCALHOST_WARNING: 'false',
  ANSIBLE_INVENTORY_UNPARSED_WARNING: 'false',
  ANSIBLE_LOCAL_TEMP: join(dir, 'tmp'),
  ANSIBLE_HOME: join(dir, 'home'),
};

function sh(cmd: string, args: string[], cwd = dir): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: ENV, cwd, timeout: 120_000 });
  expect(r.error, `${cmd} must be installed (.ci/install-deps)`).toBeUndefined();
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/**
 * The role's template rendered by one ansible-playbook run (ansible starts
 * slowly) with each of CONFIGS as kvmnftd_config: the files, by name.
 */
function render(configs: Record<string, unknown>): Record<string, string> {
  const play = join(dir, 'render.yml');
  writeFileSync(join(dir, 'configs.json'), JSON.stringify({ configs }));
  writeFileSync(
    play,
    [
      '- hosts: localhost',
      '  connection: local',
      '  gather_facts: false',
      '  tasks:',
      '    - ansible.builtin.template:',
      `        src: ${join(ROLE, 'templates', 'kvmnftd.toml.j2')}`,
      `        dest: ${dir}/{{ item.key }}.toml`,
      '      vars:',
      '        kvmnftd_config: "{{ item.value }}"',
      '      loop: "{{ configs | dict2items }}"',
      '',
    ].join('\n'),
  );
  const r = sh('ansible-playbook', ['-i', 'localhost,', play, '-e', `@${join(dir, 'configs.json')}`]);
  expect(r.status, r.out).toBe(0);
  return Object.fromEntries(
    Object.keys(configs).map((name) => [name, readFileSync(join(dir, `${name}.toml`), 'utf8')]),
  );
}

/** TOML as plain objects (smol-toml gives null-prototype tables). */
const plain = (text: string): unknown => JSON.parse(JSON.stringify(parse(text)));

/** Every kind of value and key the template meets, with the keys of issue 14 (networks, metrics). */
const FULL = {
  libvirt_uri: 'qemu:///system',
  filter: { family: 'inet', jump: 'first', accept_open_networks: [], accept_mark: 8192 },
  nat: { table: 'kvmnftd', priority: 99 },
  forwarding: { manage_ipv4: false },
  daemon: { resync_interval: 60, restore_libvirt_rules: true },
  port_forward: [
    { network: 'default', proto: 'tcp', host_port: 2222, to: 'web1', to_port: 22, from: ['198.51.100.0/24'] },
    { network: 'default', proto: 'udp', host_port: '8000-8010', to: '52:54:00:12:34:56' },
  ],
  networks: {
    '*': { log_drops: true },
    default: { host_services: ['tcp/22', 'udp/5353'], isolate_guests: true, egress: ['10.0.0.0/8', 'tcp/443'] },
    'lab "x".y': { only: { tables: { here: 1.5 } } },
  },
  metrics: { textfile: '/var/lib/prometheus/node-exporter/kvmnftd.prom', interval: 15 },
  empty: {},
  quoting: { 'a key': 'quote " backslash \\ newline \n tab \t é', list: [[1, 2], ['x']], inline: [{ a: 1 }, 2] },
};

let files: Record<string, string> | undefined;
const rendered = (): Record<string, string> =>
  (files ??= render({
    full: { ...FULL, left_out: null, daemon: { ...FULL.daemon, gone: null } },
    empty: {},
    real: {
      filter: { jump: 'last', foreign_chains_extra: ['ip filter FORWARD'] },
      daemon: { resync_interval: 30 },
      port_forward: [{ network: 'default', proto: 'tcp', host_port: 2222, to: 'web1', to_port: 22 }],
    },
  }));

describe('the Ansible role (packaging/ansible)', () => {
  it("passes Debian 12's ansible-lint (production profile)", () => {
    // ansible-lint 6.13's meta schema predates Debian 13 and refuses the
    // platform version "trixie" (schema[meta], not skippable): the copy that
    // is linted lists bookworm only; nothing else differs.
    const copy = join(dir, 'lint', 'kvmnftd');
    cpSync(ROLE, copy, { recursive: true });
    const meta = readFileSync(join(ROLE, 'meta', 'main.yml'), 'utf8');
    const linted = meta.replace(/^ {8}- trixie\n/m, '');
    expect(linted).not.toBe(meta);
    writeFileSync(join(copy, 'meta', 'main.yml'), linted);
    const r = sh('ansible-lint', ['--offline', '--nocolor', '--profile', 'production'], copy);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/Passed with production profile: 0 failure\(s\), 0 warning\(s\)/);
  });

  it('writes any kvmnftd_config as TOML that reads back as the same data', () => {
    const text = rendered()['full']!;
    expect(plain(text)).toEqual(FULL);
    // Keys before tables, a table holding only tables has no header of its own.
    expect(text).toMatch(/^libvirt_uri = "qemu:\/\/\/system"\n\n\[filter\]\nfamily = "inet"\n/m);
    expect(text).toContain('\n[networks."*"]\nlog_drops = true\n');
    expect(text).not.toMatch(/^\[networks\]$/m);
    expect(text).toContain('\n[[port_forward]]\nnetwork = "default"\n');
  });

  it("writes kvmnftd's defaults for {}, and kvmnftd check accepts what it writes", () => {
    const out = rendered();
    expect(plain(out['empty']!)).toEqual({});
    for (const name of ['empty', 'real']) {
      writeFileSync(join(dir, `${name}.checked.toml`), out[name]!);
      expect(checkConfigFile(join(dir, `${name}.checked.toml`)), name).toEqual([]);
    }
  });
});
