// Port forwards in a domain's <metadata> (src/libvirt/metadata-forwards.ts):
// golden-style fixtures (test/fixtures/metadata-forwards/<case>/: domain XML,
// network XML, config.toml, a /proc/net snapshot; expected.json beside them),
// the listener adapter's parser, and properties of the filter. After an
// intended change: UPDATE_GOLDEN=1 npx vitest run test/unit/metadata-forwards.test.ts
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { configFromObject, defaultConfig, type Config } from '../../src/config/config.js';
import { forwardsOverlap } from '../../src/config/port-forward.js';
import {
  forwardBridges,
  forwardTargetsFrom,
  gatherGuestFacts,
  guestFactsNeeded,
  metadataForwardsFrom,
} from '../../src/libvirt/guest-facts.js';
import { parseEventLine } from '../../src/libvirt/virsh-events.js';
import { foreignTargets } from '../../src/nft/foreign-chains.js';
import { parseProcNet, readHostListeners, shadowedListeners, type HostListener } from '../../src/host/listeners.js';
import {
  covered,
  METADATA_NAMESPACE,
  metadataForwards,
  type MetadataForwards,
} from '../../src/libvirt/metadata-forwards.js';
import type { Network } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'metadata-forwards');

interface Case {
  config: Config;
  networks: Network[];
  domains: Array<{ name: string; xml: string }>;
  listeners: HostListener[];
}

async function loadCase(name: string): Promise<Case> {
  const dir = join(DIR, name);
  const files = readdirSync(dir).sort();
  const cfg = join(dir, 'config.toml');
  const config = existsSync(cfg) ? configFromObject(parseToml(readFileSync(cfg, 'utf8')), cfg) : defaultConfig();
  const networks = files
    .filter((f) => f.startsWith('network-'))
    .flatMap((f) => {
      const p = parseNetworkXml(readFileSync(join(dir, f), 'utf8'), f);
      if (p.kind !== 'ok') throw new Error(`${f}: ${JSON.stringify(p)}`);
      return [p.network];
    });
  const domains = files
    .filter((f) => f.startsWith('domain-'))
    .map((f) => ({ name: f.slice('domain-'.length, -'.xml'.length), xml: readFileSync(join(dir, f), 'utf8') }));
  const proc = join(dir, 'proc-net');
  const listeners = existsSync(proc) ? await readHostListeners(proc) : [];
  return { config, networks, domains, listeners };
}

const run = (c: Case): MetadataForwards => metadataForwards(c.domains, c.config, c.networks, c.listeners);

const CASES = readdirSync(DIR, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

describe('metadata forwards: fixtures', () => {
  it('has the cases', () => {
    // libvirt9: the XML libvirt 9 printed for the real domain of vm-guest.test.ts after `virsh metadata --set`.
    expect(CASES).toEqual(['basic', 'conflict', 'ignored', 'interfaces', 'libvirt9', 'namespace', 'off']);
  });

  for (const name of CASES) {
    it(name, async () => {
      const actual = `${JSON.stringify(run(await loadCase(name)), null, 2)}\n`;
      const file = join(DIR, name, 'expected.json');
      if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
      expect(existsSync(file), `${file} missing: run with UPDATE_GOLDEN=1 and review it`).toBe(true);
      expect(actual).toBe(readFileSync(file, 'utf8'));
    });
  }

  it('basic: the fields of [[port_forward]], network and to from the domain', async () => {
    const r = run(await loadCase('basic'));
    expect(r.ignored).toEqual([]);
    expect(r.forwards).toEqual([
      {
        origin: { kind: 'metadata', domain: 'web1', entry: 0 },
        forward: {
          network: 'default',
          to: '52:54:00:00:00:01',
          proto: 'tcp',
          hostPort: { start: 2200, end: 2200 },
          toPort: { start: 22, end: 22 },
          from: [],
          hostAddress: undefined,
        },
      },
      {
        origin: { kind: 'metadata', domain: 'web1', entry: 1 },
        forward: {
          network: 'default',
          to: '52:54:00:00:00:01',
          proto: 'udp',
          hostPort: { start: 8000, end: 8009 },
          toPort: { start: 9000, end: 9000 },
          from: ['198.51.100.0/24', '203.0.113.7'],
          hostAddress: '198.51.100.1',
        },
      },
    ]);
  });

  it('libvirt9: what libvirt really stores (the --key prefix on every element) reads as written', async () => {
    const r = run(await loadCase('libvirt9'));
    expect(r.forwards.map((f) => `${f.forward.proto} ${f.forward.hostPort.start} -> ${f.forward.to}`)).toEqual([
      'tcp 2222 -> 52:54:00:2e:03:2d',
    ]);
    expect(r.ignored).toEqual([
      {
        domain: 'vm-meta',
        entry: 1,
        reason: 'host_port 2399 is not inside [metadata_forwards] host_ports (2222, 2300-2309)',
      },
    ]);
  });

  it('ignored: one reason per entry, in entry order, none applied', async () => {
    const r = run(await loadCase('ignored'));
    expect(r.forwards.map((f) => f.origin.entry)).toEqual([5]); // 8082: only a loopback socket listens there
    const why = new Map(r.ignored.map((i) => [i.entry, i.reason]));
    expect(why.get(0)).toMatch(/host_port 2300 is not inside \[metadata_forwards\] host_ports \(8000-8099\)/);
    expect(why.get(1)).toMatch(/^proto: expected one of "tcp", "udp"/);
    expect(why.get(2)).toMatch(/^unknown attribute port; known: proto, host_port, to_port, from, host_address/);
    expect(why.get(3)).toMatch(/taken by port_forward\[0\]/);
    expect(why.get(4)).toMatch(/a host socket listens on tcp 0\.0\.0\.0:8081/);
    expect(why.get(6)).toMatch(/a host socket listens on udp \[::\]:8083/);
    expect(why.get(7)).toMatch(/^to_port: the range 9000-9001 must be as long as host_port/);
    expect(why.get(8)).toMatch(/^host_address: 127\.0\.0\.1 is a loopback address/);
    expect(why.get(9)).toMatch(/^host_port: missing/);
    expect(why.get(10)).toMatch(/^from: 2001:db8::\/32: not IPv4 like host_address/);
    expect(why.get(11)).toMatch(/no interface with MAC 52:54:00:99:99:99/);
    expect(why.get(12)).toMatch(/^to_port: expected a port/);
    expect(why.get(undefined)).toMatch(/<kvmnftd:note> inside <kvmnftd:forwards>/);
  });

  it('conflict: every metadata entry of a clash stays off, whatever the names or order', async () => {
    const c = await loadCase('conflict');
    const r = run(c);
    expect(r.forwards.map((f) => `${f.origin.domain}[${f.origin.entry}]`)).toEqual(['web3[1]', 'web3[2]', 'web4[1]']);
    expect(r.ignored.map((i) => `${i.domain}[${i.entry}]`)).toEqual([
      'web1[0]',
      'web2[0]',
      'web2[1]',
      'web3[0]',
      'web4[0]',
    ]);
    expect(r.ignored[2]!.reason).toMatch(
      /also claimed by domain web3 metadata forward\[0\], domain web4 metadata forward\[0\]/,
    );
    expect(run({ ...c, domains: [...c.domains].reverse() })).toEqual(r);
  });

  it('interfaces: mac=, network=, else the only interface on an active nat or route network', async () => {
    const r = run(await loadCase('interfaces'));
    const to = Object.fromEntries(
      r.forwards.map((f) => [`${f.origin.domain}[${f.origin.entry}]`, `${f.forward.to} ${f.forward.network}`]),
    );
    expect(to).toEqual({
      'multi[1]': '52:54:00:00:01:02 lan',
      'multi[2]': '52:54:00:00:01:01 default',
      // The planner notes that an isolated network forwards no port, as for a config forward.
      'multi[4]': '52:54:00:00:01:03 iso',
      'single[0]': '52:54:00:00:02:02 default',
    });
    const why = Object.fromEntries(r.ignored.map((i) => [`${i.domain}[${i.entry}]`, i.reason]));
    expect(why['multi[0]']).toMatch(/2 interfaces on nat or route networks .*: say which with network= or mac=/);
    expect(why['multi[3]']).toMatch(/is on network default, not lan/);
    expect(why['multi[5]']).toMatch(/no interface on network nowhere/);
    expect(why['multi[6]']).toMatch(/mac "zz" is not a MAC address/);
    expect(why['multi[7]']).toMatch(/no interface with MAC 52:54:00:00:01:04 on a libvirt network/);
    expect(why['none[0]']).toMatch(/no interface on an active nat or route network \(52:54:00:00:03:01 on iso\)/);
  });

  it('namespace: by URI, whatever the prefix; other namespaces and layouts are not read', async () => {
    const r = run(await loadCase('namespace'));
    expect(r.forwards.map((f) => `${f.origin.domain}[${f.origin.entry}] ${f.forward.hostPort.start}`)).toEqual([
      'a[0] 2200',
      'a[1] 2201',
      'c[0] 2220',
    ]);
    const why = r.ignored.map((i) => `${i.domain}[${String(i.entry)}] ${i.reason}`);
    expect(why).toEqual([
      expect.stringMatching(/^a\[undefined\] <other:forward> inside <kf:forwards> is not a <forward>/),
      expect.stringMatching(/^b\[undefined\] its element .* is <ports>, not <forwards>/),
      expect.stringMatching(/^c\[1\] <from> inside <forward>: it takes attributes only/),
      expect.stringMatching(/^d\[undefined\] its element <kvmnftd:forwards> is in namespace \S+\/2, a layout/),
    ]);
  });

  it('off: host_ports = [] turns metadata forwards off, and says so per entry', async () => {
    const r = run(await loadCase('off'));
    expect(r.forwards).toEqual([]);
    expect(r.ignored).toEqual([
      { domain: 'web1', entry: 0, reason: 'metadata forwards are off ([metadata_forwards] host_ports is empty)' },
    ]);
  });

  it('unreadable listeners leave every metadata forward off', async () => {
    const c = await loadCase('basic');
    const r = metadataForwards(c.domains, c.config, c.networks, undefined);
    expect(r.forwards).toEqual([]);
    expect(r.ignored.map((i) => i.reason)).toEqual([
      expect.stringMatching(/listening sockets could not be read/),
      expect.stringMatching(/listening sockets could not be read/),
    ]);
  });

  it('more than 64 entries in one domain: the rest are left out, once, with why', () => {
    const config = configFromObject({ metadata_forwards: { host_ports: ['1-65535'] } }, 't');
    const many = Array.from({ length: 70 }, (_, i) => `<forward proto="tcp" host_port="${1000 + i}"/>`).join('');
    const xml =
      `<domain><name>big</name><metadata><forwards xmlns="${METADATA_NAMESPACE}">${many}</forwards></metadata>` +
      `<devices><interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>` +
      `</interface></devices></domain>`;
    const r = metadataForwards([{ name: 'big', xml }], config, [], []);
    // No active network: the default interface cannot be chosen, so each entry says so; the 7 beyond are cut.
    expect(r.ignored.filter((i) => i.entry === undefined).map((i) => i.reason)).toEqual([
      'more than 64 <forward> entries: the rest are left out',
    ]);
    expect(r.ignored.filter((i) => i.entry !== undefined)).toHaveLength(64);
  });
});

describe('parseProcNet (metadata forwards rely on it)', () => {
  it('native-endian words; an IPv4-mapped address as the IPv4 address; nothing but listeners', () => {
    const tcp6 =
      '  sl  local_address                         remote_address                        st\n' +
      '   0: 0000000000000000FFFF00000100A8C0:1F90 00000000000000000000000000000000:0000 0A\n' +
      '   1: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A\n' +
      '   2: 00000000000000000000000001000000:0016 00000000000000000000000001000000:D2F0 01\n';
    expect(parseProcNet(tcp6, 'tcp', 6, true)).toEqual([
      { proto: 'tcp', address: '192.168.0.1', port: 8080 },
      { proto: 'tcp', address: '2001:db8::1', port: 443 },
    ]);
    expect(parseProcNet('h\n   0: 7F000001:0016 00000000:0000 0A\n', 'tcp', 4, false)).toEqual([
      { proto: 'tcp', address: '127.0.0.1', port: 22 },
    ]);
  });

  it('readHostListeners: a missing file has none, an unreadable one throws (metadata forwards then stay off)', async () => {
    await expect(readHostListeners(join(DIR, 'basic'))).resolves.toEqual([]);
    await expect(readHostListeners(join(DIR, 'basic', 'config.toml'))).rejects.toThrow(/ENOTDIR/);
  });
});

describe('metadata forward filters', () => {
  it('covered: every port of the range in the union of the allowed ranges', () => {
    const r = (start: number, end = start) => ({ start, end });
    expect(covered(r(2200), [r(2200)])).toBe(true);
    expect(covered(r(2200, 2201), [r(2201), r(2200)])).toBe(true);
    expect(covered(r(2200, 2202), [r(2200), r(2202)])).toBe(false);
    expect(covered(r(8000, 8099), [r(8000, 8050), r(8040, 8099)])).toBe(true);
    expect(covered(r(1), [])).toBe(false);
  });

  it('a listener takes a port: wildcards (0.0.0.0 and :: for every host_address), never loopback-only', () => {
    const f = (hostAddress?: string) => ({ proto: 'tcp' as const, hostPort: { start: 80, end: 90 }, hostAddress });
    const l = (address: string, port = 80): HostListener => ({ proto: 'tcp', address, port });
    const taken = (x: HostListener, y: ReturnType<typeof f>) => shadowedListeners([x], y).length > 0;
    expect(taken(l('0.0.0.0'), f())).toBe(true);
    expect(taken(l('0.0.0.0', 91), f())).toBe(false);
    expect(taken({ ...l('0.0.0.0'), proto: 'udp' }, f())).toBe(false);
    expect(taken(l('127.0.0.1'), f())).toBe(false);
    expect(taken(l('::1'), f())).toBe(false);
    expect(taken(l('::'), f('198.51.100.1'))).toBe(true);
    expect(taken(l('198.51.100.2'), f('198.51.100.1'))).toBe(false);
    expect(taken(l('2001:db8::1'), f('2001:db8::1'))).toBe(true);
    expect(taken(l('198.51.100.2'), f())).toBe(true);
  });
});

describe("libvirt's rejecting chains (owners table)", () => {
  it('get the mark accept while metadata forwards are on, even with no [[port_forward]]', () => {
    const libvirt = (c: Config) =>
      foreignTargets(c)
        .filter((t) => t.owner === 'libvirt')
        .map((t) => t.chain);
    expect(libvirt(defaultConfig())).toEqual([]);
    const on = configFromObject({ metadata_forwards: { host_ports: [2200] } }, 't');
    expect(libvirt(on)).toEqual(['LIBVIRT_FWI', 'LIBVIRT_FWI', 'guest_input', 'guest_input']);
  });
});

describe('metadata forwards in the contract (guest-facts.ts)', () => {
  it('forwardTargetsFrom: the config forwards, then the metadata ones, each with its origin', async () => {
    const c = await loadCase('basic');
    const config = configFromObject(
      {
        metadata_forwards: { host_ports: [2200, '8000-8099'] },
        port_forward: [{ network: 'default', proto: 'tcp', host_port: 22, to: '192.168.122.9' }],
      },
      't',
    );
    const inputs = c.networks.map((network) => ({ kind: 'ok' as const, network }));
    const facts = {
      domains: c.domains,
      leases: [{ network: 'default', mac: '52:54:00:00:00:01', address: '192.168.122.77', expiry: 9 }],
      listeners: [],
    };
    const targets = forwardTargetsFrom(config, inputs, facts);
    expect(targets.map((t) => [t.origin, t.addresses])).toEqual([
      [{ kind: 'config', index: 0 }, ['192.168.122.9']],
      [{ kind: 'metadata', domain: 'web1', entry: 0 }, ['192.168.122.77']],
      [{ kind: 'metadata', domain: 'web1', entry: 1 }, ['192.168.122.77']],
    ]);
    // Listeners not read (absent): every metadata forward stays off, and says why.
    const unread = metadataForwardsFrom(config, inputs, { domains: c.domains, leases: [] });
    expect(unread.forwards).toEqual([]);
    expect(unread.ignored).toHaveLength(2);
    // Off: domains' metadata is not read at all.
    expect(metadataForwardsFrom(defaultConfig(), inputs, facts)).toEqual({ forwards: [], ignored: [] });
    expect(forwardTargetsFrom(defaultConfig(), inputs, facts)).toEqual([]);
  });

  it("metadata forwards on: libvirt asked, every network's leases watched, the sockets read (or left out)", async () => {
    const c = await loadCase('basic');
    const on = c.config;
    expect(guestFactsNeeded(defaultConfig())).toBe(false);
    expect(guestFactsNeeded(on)).toBe(true);
    const inputs = c.networks.map((network) => ({ kind: 'ok' as const, network }));
    expect([...forwardBridges(on, inputs)]).toEqual(['virbr0']);
    expect([...forwardBridges(defaultConfig(), inputs)]).toEqual([]);
    const read = await gatherGuestFacts(on, inputs, {
      domains: () => Promise.resolve(c.domains),
      statusDir: '/nonexistent',
      listeners: () => Promise.resolve([{ proto: 'tcp', address: '0.0.0.0', port: 2200 }]),
    });
    expect(read.listeners).toEqual([{ proto: 'tcp', address: '0.0.0.0', port: 2200 }]);
    expect(metadataForwardsFrom(on, inputs, read).ignored.map((i) => i.reason)).toEqual([
      expect.stringMatching(/a host socket listens on tcp 0\.0\.0\.0:2200/),
    ]);
    const failed = await gatherGuestFacts(on, inputs, {
      domains: () => Promise.resolve(c.domains),
      statusDir: '/nonexistent',
      listeners: () => Promise.reject(new Error('EACCES')),
    });
    expect(failed.listeners).toBeUndefined();
    expect(metadataForwardsFrom(on, inputs, failed).forwards).toEqual([]);
  });

  it("virsh event --event metadata-change lines: the domain and the element's namespace", () => {
    expect(
      parseEventLine(`event 'metadata-change' for domain 'web 1': type element, uri ${METADATA_NAMESPACE}`),
    ).toEqual({ object: 'metadata', name: 'web 1', event: 'metadata-change element', uri: METADATA_NAMESPACE });
    expect(parseEventLine("event 'metadata-change' for domain 'a': type description, uri <null>")).toMatchObject({
      object: 'metadata',
      uri: '<null>',
    });
  });
});

// ---- properties ------------------------------------------------------------------

const NETWORK = (() => {
  const p = parseNetworkXml(readFileSync(join(DIR, 'basic', 'network-default.xml'), 'utf8'));
  if (p.kind !== 'ok') throw new Error('default.xml');
  return p.network;
})();

const arbRange = fc
  .tuple(fc.integer({ min: 1, max: 120 }), fc.integer({ min: 0, max: 6 }))
  .map(([start, length]) => ({ start, end: start + length }));
const arbProto = fc.constantFrom('tcp' as const, 'udp' as const);
const arbAddress = fc.option(fc.constantFrom('198.51.100.1', '198.51.100.2', '2001:db8::1'), { nil: undefined });
const text = (r: { start: number; end: number }): string | number =>
  r.start === r.end ? r.start : `${r.start}-${r.end}`;

const arbEntry = fc.record({ proto: arbProto, hostPort: arbRange, hostAddress: arbAddress });
const arbWorld = fc.record({
  allowed: fc.array(arbRange, { maxLength: 4 }),
  config: fc.array(fc.record({ proto: arbProto, hostPort: arbRange, hostAddress: arbAddress }), { maxLength: 3 }),
  listeners: fc.array(
    fc.record({
      proto: arbProto,
      address: fc.constantFrom('0.0.0.0', '::', '127.0.0.1', '198.51.100.1', '2001:db8::1'),
      port: fc.integer({ min: 1, max: 130 }),
    }),
    { maxLength: 4 },
  ),
  domains: fc.array(fc.array(arbEntry, { maxLength: 4 }), { minLength: 1, maxLength: 4 }),
});

function build(w: {
  allowed: Array<{ start: number; end: number }>;
  config: Array<{ proto: 'tcp' | 'udp'; hostPort: { start: number; end: number }; hostAddress?: string | undefined }>;
  listeners: HostListener[];
  domains: Array<
    Array<{ proto: 'tcp' | 'udp'; hostPort: { start: number; end: number }; hostAddress?: string | undefined }>
  >;
}) {
  const config = configFromObject(
    {
      metadata_forwards: { host_ports: w.allowed.map(text) },
      port_forward: [],
    },
    'p',
  );
  // Config forwards are added after reading: two of them may overlap here, which the config refuses, and
  // that does not matter to the metadata filter.
  config.portForward = w.config.map((c) => ({
    network: 'default',
    to: '192.168.122.9',
    toPort: undefined,
    from: [],
    proto: c.proto,
    hostPort: c.hostPort,
    hostAddress: c.hostAddress,
  }));
  const domains = w.domains.map((entries, d) => {
    const mac = `52:54:00:00:00:${(d + 16).toString(16)}`;
    const forwards = entries
      .map(
        (e) =>
          `<forward proto="${e.proto}" host_port="${text(e.hostPort)}"` +
          (e.hostAddress === undefined ? '' : ` host_address="${e.hostAddress}"`) +
          '/>',
      )
      .join('');
    return {
      name: `vm${d}`,
      xml:
        `<domain><name>vm${d}</name><metadata><kvmnftd:forwards xmlns:kvmnftd="${METADATA_NAMESPACE}">` +
        `${forwards}</kvmnftd:forwards></metadata><devices><interface type='network'><mac address='${mac}'/>` +
        `<source network='default'/></interface></devices></domain>`,
    };
  });
  return { config, domains, listeners: w.listeners };
}

describe('metadata forwards: properties', () => {
  it('a metadata forward never has a host port outside host_ports, of a config forward, or of a listener', () => {
    fc.assert(
      fc.property(arbWorld, (w) => {
        const { config, domains, listeners } = build(w);
        const r = metadataForwards(domains, config, [NETWORK], listeners);
        for (const { forward } of r.forwards) {
          for (let p = forward.hostPort.start; p <= forward.hostPort.end; p++)
            expect(config.metadataForwards.hostPorts.some((a) => a.start <= p && p <= a.end)).toBe(true);
          expect(config.portForward.some((c) => forwardsOverlap(c, forward))).toBe(false);
          expect(shadowedListeners(listeners, forward)).toEqual([]);
          expect(r.forwards.filter((o) => forwardsOverlap(o.forward, forward))).toHaveLength(1);
        }
        // Every entry is accounted for exactly once: applied or ignored with a reason.
        const entries = w.domains.reduce((n, d) => n + d.length, 0);
        expect(r.forwards.length + r.ignored.filter((i) => i.entry !== undefined).length).toBe(entries);
        // The domains' order does not matter.
        expect(metadataForwards([...domains].reverse(), config, [NETWORK], listeners)).toEqual(r);
      }),
      { numRuns: 300 },
    );
  });
});
