// The schema's kinds (src/config/kinds.ts) can say what the keys planned next
// need: enums, integer ranges, validated strings, lists, arrays of tables
// ([[port_forward]]) and tables under names the user chooses ([networks.<name>],
// with "*"). This schema exists only here; the loader and the doc renderers
// must handle it as they handle the real one.
import { spawnSync } from 'node:child_process';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { ConfigError } from '../../src/config/errors.js';
import { keyPaths, manKeys, markdownKeys, tomlDefaults } from '../../src/config/docs.js';
import {
  bool,
  integer,
  key,
  list,
  named,
  oneOf,
  section,
  table,
  tables,
  text,
  type TableKind,
} from '../../src/config/kinds.js';

const port = integer({ min: 1, max: 65_535, what: 'a port number' });

const SAMPLE = table({
  filter: section({
    keys: {
      foreign_chains: key({
        kind: oneOf(['accept', 'report']),
        default: 'report',
        summary: 'What to do about foreign chains.',
      }),
      accept_mark: key({ kind: integer({ min: 0, max: 2 ** 32 - 1 }), default: 0, summary: 'A mark; `0` = none.' }),
    },
  }),
  port_forward: key({
    kind: tables({
      proto: key({ kind: oneOf(['tcp', 'udp']), default: 'tcp', summary: 'The protocol.' }),
      host_port: key({ kind: port, summary: 'The port on the host.' }),
      to: key({
        kind: text({ expected: 'an address:port', valid: (s) => /^[0-9.]+:[0-9]+$/.test(s) }),
        summary: 'Where to.',
      }),
    }),
    default: [],
    summary: 'One table per forwarded port.',
  }),
  networks: key({
    kind: named(text({ expected: 'a libvirt network name or "*"', valid: (s) => /^[\w*-]{1,64}$/.test(s) }), {
      accept: key({ kind: bool, default: false, summary: 'Accept everything.' }),
    }),
    summary: 'Settings per libvirt network; `[networks."*"]` holds the defaults.',
  }),
  metrics: section({
    keys: {
      host_ports: key({ kind: list(port, 'port numbers'), default: [80, 443], summary: 'Ports.' }),
    },
  }),
});

function read(toml: string): ReturnType<typeof SAMPLE.read> {
  return SAMPLE.read(parseToml(toml), { file: 'x.toml', key: '' });
}

function errorOf(toml: string): string {
  try {
    read(toml);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('accepted');
}

describe('config kinds', () => {
  it('reads arrays of tables and named tables into typed values', () => {
    const c = read(`
[filter]
foreign_chains = "accept"
[[port_forward]]
host_port = 8080
to = "10.0.0.2:80"
[[port_forward]]
proto = "udp"
host_port = 53
to = "10.0.0.2:53"
[networks."*"]
accept = true
[networks.default]
`);
    expect(c).toEqual({
      filter: { foreignChains: 'accept', acceptMark: 0 },
      portForward: [
        { proto: 'tcp', hostPort: 8080, to: '10.0.0.2:80' },
        { proto: 'udp', hostPort: 53, to: '10.0.0.2:53' },
      ],
      networks: { '*': { accept: true }, default: { accept: false } },
      metrics: { hostPorts: [80, 443] },
    });
    expectTypeOf(c.portForward[0]!.proto).toEqualTypeOf<'tcp' | 'udp'>();
    expectTypeOf(c.networks).toEqualTypeOf<Record<string, { accept: boolean }>>();
    expectTypeOf(c.metrics.hostPorts).toEqualTypeOf<number[]>();
  });

  it('absent keys take their defaults: no tables, an empty map', () => {
    expect(SAMPLE.absent({ file: 'x.toml', key: '' })).toEqual({
      filter: { foreignChains: 'report', acceptMark: 0 },
      portForward: [],
      networks: {},
      metrics: { hostPorts: [80, 443] },
    });
  });

  it.each([
    ['[[port_forward]]\nto = "1.2.3.4:5"\n', 'x.toml: port_forward[0].host_port: missing; expected a port number'],
    [
      '[[port_forward]]\nhost_port = 1\nto = "a:1"\n[[port_forward]]\nproto = "sctp"\n',
      'x.toml: port_forward[0].to: expected an address:port, got "a:1"',
    ],
    [
      '[[port_forward]]\nhost_port = 1\nto = "1.2.3.4:5"\nzz = 1\n',
      'x.toml: port_forward[0].zz: unknown key; known keys in [[port_forward]]: proto, host_port, to',
    ],
    ['port_forward = 3\n', 'x.toml: port_forward: an array of tables ([[port_forward]])'],
    ['port_forward = [3]\n', 'x.toml: port_forward[0]: a table ([[port_forward]])'],
    ['[networks."a b"]\n', 'x.toml: networks."a b": expected a name that is a libvirt network name or "*", got "a b"'],
    [
      '[networks.default]\nacept = true\n',
      'x.toml: networks.default.acept: unknown key; known keys in [networks.default]: accept',
    ],
    ['[metrics]\nhost_ports = [80, 0]\n', 'x.toml: metrics.host_ports: expected an array of port numbers, got [80,0]'],
    ['[filter]\naccept_mark = 4294967296\n', 'x.toml: filter.accept_mark: expected an integer from 0 to 4294967295'],
    ['zz = 1\n', 'x.toml: zz: unknown key; known: [filter], [[port_forward]], [networks.<name>], [metrics]'],
  ])('%j: %s', (toml, message) => {
    expect(errorOf(toml)).toContain(message);
  });

  it('"__proto__" as a user-chosen name is an entry, not a prototype', () => {
    const c = SAMPLE.read(
      { networks: JSON.parse('{"__proto__": {"accept": true}}') as unknown },
      {
        file: 'x.toml',
        key: '',
      },
    );
    expect(Object.keys(c.networks)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(c.networks)).toBe(null);
  });

  it('the docs show each kind of table with its keys', () => {
    const root: TableKind<unknown> = SAMPLE;
    expect(keyPaths(root)).toEqual([
      'filter.foreign_chains',
      'filter.accept_mark',
      'port_forward[].proto',
      'port_forward[].host_port',
      'port_forward[].to',
      'networks.<name>.accept',
      'metrics.host_ports',
    ]);
    const md = markdownKeys(root, []);
    expect(md).toContain('### `[[port_forward]]`\n\nOne table per forwarded port.\n');
    expect(md).toContain('| `port_forward[].host_port` | integer 1..65535 | required | The port on the host. |');
    expect(md).toContain('### `[networks.<name>]`');
    expect(md).toContain('`<name>`: a libvirt network name or "*".');
    expect(md).toContain('| `filter.foreign_chains` | `"accept"`, `"report"` | `"report"` |');
    expect(md).toContain('| `metrics.host_ports` | array of port numbers | `[80, 443]` | Ports. |');
    const man = manKeys(root, []);
    expect(man).toContain('.SS [[port_forward]]\nOne table per forwarded port.\n.TP\n.B proto\n');
    expect(man).toContain('.TP\n.B host_port\n(integer 1..65535; required)\n');
    expect(man).toContain('.SS [networks.<name>]\n');
    const page = `.TH X 5\n.SH KEYS\n${man}`;
    const groff = spawnSync('groff', ['-man', '-ww', '-z', '-K', 'utf8'], { input: page, encoding: 'utf8' });
    expect(groff.stderr).toBe('');
    // Tables of tables have no defaults to write out.
    expect(tomlDefaults(root)).toBe(
      '[filter]\nforeign_chains = "report"\naccept_mark = 0\n\n[metrics]\nhost_ports = [80, 443]\n',
    );
  });
});
