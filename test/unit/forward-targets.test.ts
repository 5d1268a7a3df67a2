// Resolving a forward's `to` from libvirt's facts (src/libvirt/forward-targets.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { forwardTargetsFrom, gatherGuestFacts, guestFactsNeeded } from '../../src/libvirt/guest-facts.js';
import { configFromObject } from '../../src/config/config.js';
import {
  domainNetworkInterfaces,
  domainXmlName,
  parseDnsmasqStatus,
  resolveForwardTargets,
} from '../../src/libvirt/forward-targets.js';
import type { Network } from '../../src/libvirt/model.js';
import { cidrOf } from '../../src/net/ip.js';

const NET: Network = {
  name: 'default',
  bridge: 'virbr0',
  mode: 'nat',
  nat: { ports: { start: 1024, end: 65535 }, ipv6: true },
  ips: [
    { address: '192.168.122.1', cidr: cidrOf('192.168.122.0', 24)!, dhcpRanges: [], tftp: false },
    { address: 'fd00::1', cidr: cidrOf('fd00::', 64)!, dhcpRanges: [], tftp: false },
  ],
  dns: true,
};
const forwards = (...to: string[]) =>
  configFromObject(
    { port_forward: to.map((t, i) => ({ network: 'default', proto: 'tcp', host_port: 2000 + i, to: t })) },
    't',
  ).portForward.map((forward, index) => ({ origin: { kind: 'config' as const, index }, forward }));
const iface = (domain: string, network: string, mac: string) => ({ domain, network, mac });

describe('resolveForwardTargets', () => {
  it("takes the newest lease of the domain's MACs on that network, one per family, inside the network only", () => {
    const [t] = resolveForwardTargets(forwards('web1'), [NET], {
      interfaces: [iface('web1', 'default', '52:54:00:00:00:01'), iface('web1', 'other', '52:54:00:00:00:02')],
      leases: [
        { network: 'default', mac: '52:54:00:00:00:01', address: '192.168.122.20', expiry: 100 },
        { network: 'default', mac: '52:54:00:00:00:01', address: '192.168.122.21', expiry: 200 },
        { network: 'default', mac: '52:54:00:00:00:01', address: '10.9.9.9', expiry: 300 },
        { network: 'default', mac: '52:54:00:00:00:02', address: '192.168.122.8', expiry: 400 },
        { network: 'default', mac: '52:54:00:00:00:01', address: 'fd00::7', expiry: 5 },
      ],
    });
    expect(t!.addresses).toEqual(['192.168.122.21', 'fd00::7']);
    expect(t!.unresolved).toBeUndefined();
  });

  it('says why a forward has no address: not running, not on the network, no lease yet', () => {
    const r = resolveForwardTargets(
      forwards('52:54:00:00:00:01', 'web2', 'web3', '52:54:00:00:00:03', '52:54:00:00:00:04', '192.168.122.5'),
      [NET],
      {
        interfaces: [iface('web3', 'other', '52:54:00:00:00:03'), iface('web4', 'other', '52:54:00:00:00:05')],
        leases: [
          { network: 'other', mac: '52:54:00:00:00:01', address: '192.168.122.22', expiry: 300 },
          { network: 'other', mac: '52:54:00:00:00:04', address: '10.0.0.4', expiry: 300 },
        ],
      },
    );
    expect(r.map((t) => [t.addresses, t.unresolved?.kind])).toEqual([
      [[], 'not-on-network'], // leased on another network only
      [[], 'not-running'],
      [[], 'not-on-network'], // runs, but its interface is on another network
      [[], 'not-on-network'],
      [[], 'not-on-network'],
      [['192.168.122.5'], undefined],
    ]);
    const waiting = resolveForwardTargets(forwards('52:54:00:00:00:09'), [NET], { interfaces: [], leases: [] });
    expect(waiting[0]!.unresolved).toEqual({
      kind: 'no-lease',
      message: '52:54:00:00:00:09 has no DHCP lease on network default yet',
    });
    expect(resolveForwardTargets(forwards('web1'), [], { interfaces: [], leases: [] })[0]!.addresses).toEqual([]);
  });
});

describe('domainNetworkInterfaces', () => {
  it('reads MAC and network of the network interfaces of a domain XML', () => {
    const xml = `<domain type='qemu'><name>web1</name><devices>
      <interface type='network'><mac address='52:54:00:AB:00:01'/><source network='default'/></interface>
      <interface type='bridge'><mac address='52:54:00:ab:00:02'/><source bridge='br0'/></interface>
    </devices></domain>`;
    expect(domainNetworkInterfaces(xml)).toEqual([{ domain: 'web1', network: 'default', mac: '52:54:00:ab:00:01' }]);
    expect(domainNetworkInterfaces('<not xml')).toEqual([]);
    expect(domainXmlName(xml)).toBe('web1');
    expect(domainXmlName('<domain/>')).toBeUndefined();
  });
});

describe('parseDnsmasqStatus', () => {
  it("reads libvirt's leaseshelper file, skipping what is not a lease", () => {
    const text = JSON.stringify([
      { 'ip-address': '192.168.122.20', 'mac-address': '52:54:00:AA:00:01', hostname: 'web1', 'expiry-time': 1700 },
      { 'ip-address': 'fd00::20', 'mac-address': '52:54:00:aa:00:01', iaid: '1', 'expiry-time': 1800 },
      { 'ip-address': 'nonsense', 'mac-address': '52:54:00:aa:00:02' },
      { 'mac-address': '52:54:00:aa:00:03' },
    ]);
    expect(parseDnsmasqStatus(text, 'default')).toEqual([
      { network: 'default', mac: '52:54:00:aa:00:01', address: '192.168.122.20', expiry: 1700 },
      { network: 'default', mac: '52:54:00:aa:00:01', address: 'fd00::20', expiry: 1800 },
    ]);
    expect(parseDnsmasqStatus('', 'default')).toEqual([]);
    expect(parseDnsmasqStatus('{}', 'default')).toEqual([]);
  });
});

describe('gatherGuestFacts and forwardTargetsFrom', () => {
  const inputs = [{ kind: 'ok' as const, network: { ...NET, ips: [NET.ips[0]!] } }];
  const domainXml =
    "<domain><name>web1</name><devices><interface type='network'><mac address='52:54:00:00:00:09'/>" +
    "<source network='default'/></interface></devices></domain>";

  it('asks nothing of libvirt when every to is an address', async () => {
    const config = configFromObject(
      { port_forward: [{ network: 'default', proto: 'tcp', host_port: 1, to: '192.168.122.9' }] },
      't',
    );
    expect(guestFactsNeeded(config)).toBe(false);
    const domains = (): Promise<never> => Promise.reject(new Error('must not be called'));
    const facts = await gatherGuestFacts(config, inputs, { domains, statusDir: '/nonexistent' });
    expect(facts).toEqual({ domains: [], leases: [] });
    expect(forwardTargetsFrom(config, inputs, facts)[0]!.addresses).toEqual(['192.168.122.9']);
  });

  it("resolves a domain name through its interface's MAC and the network's lease file", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-leases-'));
    try {
      writeFileSync(
        join(dir, 'virbr0.status'),
        JSON.stringify([{ 'ip-address': '192.168.122.44', 'mac-address': '52:54:00:00:00:09', 'expiry-time': 9 }]),
      );
      const config = configFromObject(
        {
          port_forward: [
            { network: 'default', proto: 'tcp', host_port: 1, to: 'web1' },
            { network: 'default', proto: 'tcp', host_port: 2, to: 'web2' },
          ],
        },
        't',
      );
      expect(guestFactsNeeded(config)).toBe(true);
      const facts = await gatherGuestFacts(config, inputs, {
        domains: () => Promise.resolve([{ name: 'web1', xml: domainXml }]),
        statusDir: dir,
      });
      expect(facts.leases).toEqual([
        { network: 'default', mac: '52:54:00:00:00:09', address: '192.168.122.44', expiry: 9 },
      ]);
      const targets = forwardTargetsFrom(config, inputs, facts);
      expect(targets.map((t) => [t.origin, t.addresses])).toEqual([
        [{ kind: 'config', index: 0 }, ['192.168.122.44']],
        [{ kind: 'config', index: 1 }, []],
      ]);
      // libvirt away: named forwards wait, nothing throws; with what was known before, that stands.
      const away = { domains: () => Promise.reject(new Error('no libvirt')), statusDir: join(dir, 'missing') };
      const none = await gatherGuestFacts(config, inputs, away);
      expect(forwardTargetsFrom(config, inputs, none).map((t) => t.addresses)).toEqual([[], []]);
      expect((await gatherGuestFacts(config, inputs, { ...away, previous: facts })).domains).toEqual(facts.domains);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
