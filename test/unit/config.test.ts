import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, defaultConfig, loadConfig } from '../../src/config/config.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function write(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-cfg-'));
  dirs.push(dir);
  const file = join(dir, 'kvmnftd.toml');
  writeFileSync(file, content);
  return file;
}

function errorOf(content: string): ConfigError {
  try {
    loadConfig(write(content));
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

/** [dotted path, value] of every leaf of a config object (arrays are leaves). */
function leaves(o: object, at = ''): Array<[string, unknown]> {
  return Object.entries(o).flatMap(([k, v]): Array<[string, unknown]> =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? leaves(v as object, `${at}${k}.`) : [[`${at}${k}`, v]],
  );
}

describe('config', () => {
  it('defaults match the article layout', () => {
    // Key by key: a new key must show up here too.
    expect(Object.fromEntries(leaves(defaultConfig()))).toEqual({
      libvirtUri: 'qemu:///system',
      'filter.family': 'inet',
      'filter.table': 'filter',
      'filter.inputChain': 'input',
      'filter.forwardChain': 'forward',
      'filter.jump': 'first',
      'filter.acceptOpenNetworks': [],
      'nat.table': 'kvmnftd',
      'nat.priority': 99,
      'forwarding.manageIpv4': true,
      'daemon.resyncInterval': 60,
      'daemon.restoreLibvirtRules': true,
    });
  });

  it('reads every key', () => {
    const file = write(`
libvirt_uri = "qemu+ssh://host/system"
[filter]
family = "ip"
table = "fw"
input_chain = "in"
forward_chain = "fwd"
jump = "last"
accept_open_networks = ["lab"]
[nat]
table = "guestnat"
priority = 90
[forwarding]
manage_ipv4 = false
[daemon]
resync_interval = 0
restore_libvirt_rules = false
`);
    expect(loadConfig(file).config).toEqual({
      libvirtUri: 'qemu+ssh://host/system',
      filter: {
        family: 'ip',
        table: 'fw',
        inputChain: 'in',
        forwardChain: 'fwd',
        jump: 'last',
        acceptOpenNetworks: ['lab'],
      },
      nat: { table: 'guestnat', priority: 90 },
      forwarding: { manageIpv4: false },
      daemon: { resyncInterval: 0, restoreLibvirtRules: false },
    });
  });

  it('missing default file means defaults; a named missing file is an error', () => {
    expect(() => loadConfig('/nonexistent/kvmnftd.toml')).toThrow(ConfigError);
  });

  const rejects = (content: string, key: string, expected: string): void => {
    const err = errorOf(content);
    expect(err.key).toBe(key);
    expect(err.message).toContain(expected);
    expect(err.message).toContain('kvmnftd.toml');
  };
  it.each([
    ['[filter]\njumps = "first"\n', 'filter.jumps', 'unknown key'],
    ['colour = "blue"\n', 'colour', 'unknown key'],
    ['filter = 3\n', 'filter', 'a table'],
    ['[filter\n', '(syntax)', 'not valid TOML'],
  ])('an unknown key or a broken document %j is rejected naming %s', rejects);
  it.each([
    ['[filter]\njump = "middle"\n', 'filter.jump', 'one of "first", "last", "none"'],
    ['[filter]\ntable = "my table"\n', 'filter.table', 'a name matching'],
    ['[nat]\ntable = "filter"\n', 'nat.table', 'must differ'],
  ])('a bad name or choice %j is rejected naming %s', rejects);
  it.each([
    ['[nat]\npriority = "99"\n', 'nat.priority', 'integer'],
    ['[nat]\npriority = 1000\n', 'nat.priority', 'integer'],
    ['[daemon]\nresync_interval = -1\n', 'daemon.resync_interval', 'seconds'],
    ['[forwarding]\nmanage_ipv4 = "yes"\n', 'forwarding.manage_ipv4', 'true or false'],
    ['[daemon]\nrestore_libvirt_rules = 1\n', 'daemon.restore_libvirt_rules', 'true or false'],
  ])('a bad number or boolean %j is rejected naming %s', rejects);
});
