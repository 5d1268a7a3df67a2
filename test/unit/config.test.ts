import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, defaultConfig, loadConfig, type Config } from '../../src/config/config.js';

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
      'filter.foreignChains': 'accept',
      'filter.acceptMark': 0x2000,
      'filter.foreignChainsExtra': [],
      'nat.table': 'kvmnftd',
      'nat.priority': 99,
      'forwarding.manageIpv4': true,
      portForward: [],
      'metadataForwards.hostPorts': [],
      'daemon.resyncInterval': 60,
      'daemon.restoreLibvirtRules': true,
      'metrics.textfile': undefined,
      'metrics.interval': 15,
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
foreign_chains = "report"
accept_mark = 0x100000
foreign_chains_extra = ["ip filter FORWARD", "inet other  forward"]
[nat]
table = "guestnat"
priority = 90
[forwarding]
manage_ipv4 = false
[[port_forward]]
network = "default"
proto = "udp"
host_port = "5000-5001"
to = "10.0.0.2"
to_port = 6000
from = ["198.51.100.0/24"]
host_address = "198.51.100.1"
[metadata_forwards]
host_ports = [2200, "8000-8099"]
[networks.lab]
host_services = ["tcp/22"]
isolate_guests = true
[networks."*"]
log_drops = true
[daemon]
resync_interval = 0
restore_libvirt_rules = false
[metrics]
textfile = "/var/lib/prometheus/node-exporter/kvmnftd.prom"
interval = 30
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
        foreignChains: 'report',
        acceptMark: 0x100000,
        foreignChainsExtra: ['ip filter FORWARD', 'inet other  forward'],
      },
      nat: { table: 'guestnat', priority: 90 },
      forwarding: { manageIpv4: false },
      portForward: [
        {
          network: 'default',
          proto: 'udp',
          hostPort: { start: 5000, end: 5001 },
          to: '10.0.0.2',
          toPort: { start: 6000, end: 6000 },
          from: ['198.51.100.0/24'],
          hostAddress: '198.51.100.1',
        },
      ],
      metadataForwards: {
        hostPorts: [
          { start: 2200, end: 2200 },
          { start: 8000, end: 8099 },
        ],
      },
      networks: {
        lab: { hostServices: ['tcp/22'], isolateGuests: true, egress: undefined, logDrops: undefined },
        '*': { hostServices: undefined, isolateGuests: undefined, egress: undefined, logDrops: true },
      },
      daemon: { resyncInterval: 0, restoreLibvirtRules: false },
      metrics: { textfile: '/var/lib/prometheus/node-exporter/kvmnftd.prom', interval: 30 },
    });
  });

  it('missing default file means defaults; a named missing file is an error', () => {
    expect(() => loadConfig('/nonexistent/kvmnftd.toml')).toThrow(ConfigError);
  });

  it.each([
    ['[filter]\njumps = "first"\n', 'filter.jumps', 'unknown key'],
    ['[filter]\njump = "middle"\n', 'filter.jump', 'one of "first", "last", "none"'],
    ['[filter]\ntable = "my table"\n', 'filter.table', 'a name matching'],
    ['[nat]\npriority = "99"\n', 'nat.priority', 'integer'],
    ['[nat]\npriority = 1000\n', 'nat.priority', 'integer'],
    ['[forwarding]\nmanage_ipv4 = "yes"\n', 'forwarding.manage_ipv4', 'true or false'],
    ['colour = "blue"\n', 'colour', 'unknown key'],
    ['filter = 3\n', 'filter', 'a table'],
    ['[filter\n', '(syntax)', 'not valid TOML'],
    ['[nat]\ntable = "filter"\n', 'nat.table', 'must differ'],
    ['[daemon]\nresync_interval = -1\n', 'daemon.resync_interval', 'seconds'],
    ['[daemon]\nrestore_libvirt_rules = 1\n', 'daemon.restore_libvirt_rules', 'true or false'],
    ['[nat]\npriority = -200\n', 'nat.priority', 'from -199 to 400'],
    ['[nat]\npriority = 401\n', 'nat.priority', 'from -199 to 400'],
    ['[nat]\npriority = 99.5\n', 'nat.priority', 'integer'],
    ['[daemon]\nresync_interval = 86401\n', 'daemon.resync_interval', 'from 0 (off) to 86400'],
    ['[metrics]\ninterval = 0\n', 'metrics.interval', 'from 1 to 3600'],
    ['[metrics]\ntextfile = "kvmnftd.prom"\n', 'metrics.textfile', 'an absolute path ending in ".prom"'],
    ['[metrics]\ntextfile = "/var/lib/kvmnftd.txt"\n', 'metrics.textfile', 'an absolute path ending in ".prom"'],
    // Equal names are refused whatever the admin table's family.
    ['[filter]\nfamily = "ip"\ntable = "t"\n[nat]\ntable = "t"\n', 'nat.table', 'must differ from filter.table (t)'],
    ['[filter]\ninput_chain = "kvmnftd_input"\n', 'filter.input_chain', "kvmnftd's own chain"],
    ['[filter]\nforward_chain = "kvmnftd_input"\n', 'filter.forward_chain', "kvmnftd's own chain"],
    // A TOML date is not a table (it is an object to JavaScript).
    ['filter = 1979-05-27\n', 'filter', 'a table ([filter])'],
    // A key that is not a bare TOML key is shown quoted, as TOML writes it.
    ['"a b" = 1\n', '"a b"', 'unknown key'],
    ['[nat]\n"" = 1\n', 'nat.""', 'unknown key'],
    ['[filter]\nforeign_chains = "drop"\n', 'filter.foreign_chains', 'one of "accept", "report"'],
    ['[filter]\naccept_mark = 0\n', 'filter.accept_mark', 'from 0x1 to 0x80000000'],
    ['[filter]\naccept_mark = 0x100000000\n', 'filter.accept_mark', 'from 0x1 to 0x80000000'],
    ['[filter]\naccept_mark = 0x3000\n', 'filter.accept_mark', 'exactly one bit set'],
    ['[filter]\naccept_mark = "0x2000"\n', 'filter.accept_mark', 'one bit set'],
    ['[filter]\nforeign_chains_extra = "ip filter FORWARD"\n', 'filter.foreign_chains_extra', 'an array'],
    ['[filter]\nforeign_chains_extra = ["bridge filter FORWARD"]\n', 'filter.foreign_chains_extra', 'FAMILY'],
    ['[filter]\nforeign_chains_extra = ["ip filter"]\n', 'filter.foreign_chains_extra', 'FAMILY TABLE CHAIN'],
    ['[filter]\nforeign_chains_extra = ["ip fil\\"ter x"]\n', 'filter.foreign_chains_extra', 'FAMILY'],
    [
      '[filter]\nforeign_chains_extra = ["inet f2b-table f2b-chain"]\n',
      'filter.foreign_chains_extra',
      'a ban must stay a ban',
    ],
    [
      '[filter]\nforeign_chains_extra = ["ip filter f2b-sshd"]\n',
      'filter.foreign_chains_extra',
      'a ban must stay a ban',
    ],
    [
      '[filter]\nforeign_chains_extra = ["ip crowdsec crowdsec-chain"]\n',
      'filter.foreign_chains_extra',
      'a ban must stay a ban',
    ],
    ['[filter]\nforeign_chains_extra = ["ip6 crowdsec6 crowdsec6-chain"]\n', 'filter.foreign_chains_extra', 'a ban'],
    ['[filter]\nforeign_chains_extra = ["inet sshguard blacklist"]\n', 'filter.foreign_chains_extra', 'a ban'],
    ['[filter]\nforeign_chains_extra = ["ip libvirt_network guest_input"]\n', 'filter.foreign_chains_extra', 'libvirt'],
    [
      '[filter]\nforeign_chains_extra = ["ip docker-bridges filter-FORWARD"]\n',
      'filter.foreign_chains_extra',
      'Docker',
    ],
    ['[filter]\nforeign_chains_extra = ["ip filter LIBVIRT_FWI"]\n', 'filter.foreign_chains_extra', 'libvirt'],
    [
      '[filter]\nforeign_chains_extra = ["inet firewalld filter_FORWARD"]\n',
      'filter.foreign_chains_extra',
      'firewalld',
    ],
    ['[filter]\nforeign_chains_extra = ["inet kvmnftd postrouting"]\n', 'filter.foreign_chains_extra', 'own table'],
    ['[filter]\nforeign_chains_extra = ["inet other kvmnftd_forward"]\n', 'filter.foreign_chains_extra', 'own chain'],
    ['[filter]\nforeign_chains_extra = ["inet filter forward"]\n', 'filter.foreign_chains_extra', 'jump already'],
  ])('%j is rejected naming %s', (content, key, expected) => {
    const err = errorOf(content);
    expect(err.key).toBe(key);
    expect(err.message).toContain(expected);
    expect(err.message).toContain('kvmnftd.toml');
  });

  it.each([
    ['[nat]\npriority = -199\n', (c: Config) => c.nat.priority, -199],
    ['[nat]\npriority = 400\n', (c: Config) => c.nat.priority, 400],
    ['[daemon]\nresync_interval = 0\n', (c: Config) => c.daemon.resyncInterval, 0],
    ['[daemon]\nresync_interval = 86400\n', (c: Config) => c.daemon.resyncInterval, 86_400],
    ['[metrics]\ninterval = 1\n', (c: Config) => c.metrics.interval, 1],
    ['[metrics]\ninterval = 3600\n', (c: Config) => c.metrics.interval, 3600],
    ['[metrics]\ntextfile = "/a.prom"\n', (c: Config) => c.metrics.textfile, '/a.prom'],
    ['[filter]\naccept_mark = 1\n', (c: Config) => c.filter.acceptMark, 1],
    ['[filter]\naccept_mark = 0x80000000\n', (c: Config) => c.filter.acceptMark, 0x8000_0000],
    // The admin table's other chains, and a second admin table's, are fine.
    ['[filter]\nforeign_chains_extra = ["inet filter other"]\n', (c: Config) => c.filter.foreignChainsExtra.length, 1],
    ['[filter]\nforeign_chains_extra = ["ip filter FORWARD"]\n', (c: Config) => c.filter.foreignChainsExtra.length, 1],
  ])('%j is accepted (a bound of its range)', (content, get, want) => {
    expect(get(loadConfig(write(content)).config)).toBe(want);
  });

  it('an unknown key is answered with the keys there are', () => {
    expect(errorOf('zz = 1\n').expected).toBe(
      'unknown key; known: libvirt_uri, [filter], [nat], [forwarding], [[port_forward]], [metadata_forwards], ' +
        '[networks.<name>], [daemon], [metrics]',
    );
    expect(errorOf('[nat]\nzz = 1\n').expected).toBe('unknown key; known keys in [nat]: table, priority');
  });

  it('defaultConfig() hands out a fresh object each time', () => {
    const a = defaultConfig();
    a.filter.acceptOpenNetworks.push('lab');
    expect(defaultConfig().filter.acceptOpenNetworks).toEqual([]);
  });
});
