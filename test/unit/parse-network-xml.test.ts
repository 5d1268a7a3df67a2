import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { plan } from '../../src/nft/plan.js';
import { LIVE_LIBVIRT9 } from '../helpers/golden.js';

const golden = (file: string): string => readFileSync(join(import.meta.dirname, '..', 'golden', file), 'utf8');

describe('parseNetworkXml', () => {
  it('reads the default network', () => {
    expect(parseNetworkXml(golden('nat-default/default.xml'))).toEqual({
      kind: 'ok',
      network: {
        name: 'default',
        uuid: '9a05da11-e96b-47f3-8253-a3a482e445f5',
        bridge: 'virbr0',
        mode: 'nat',
        nat: { ports: { start: 1024, end: 65535 }, ipv6: false },
        dns: true,
        ips: [
          {
            address: '192.168.122.1',
            cidr: { family: 4, network: '192.168.122.0', prefix: 24 },
            dhcpRanges: [{ start: '192.168.122.2', end: '192.168.122.254' }],
            tftp: false,
          },
        ],
      },
    });
  });

  it('reads NAT address and port ranges, forward dev, IPv6 and TFTP', () => {
    const snat = parseNetworkXml(golden('nat-address-port/snat.xml'));
    expect(snat.kind === 'ok' && snat.network.nat).toEqual({
      address: { start: '198.51.100.10', end: '198.51.100.20' },
      ports: { start: 20000, end: 30000 },
      ipv6: false,
    });
    const dev = parseNetworkXml(golden('nat-forward-dev/uplink.xml'));
    expect(dev.kind === 'ok' && dev.network.forwardDev).toBe('eth0');
    const v6 = parseNetworkXml(golden('ipv6-nat/v6nat.xml'));
    expect(v6.kind === 'ok' && v6.network.nat?.ipv6).toBe(true);
    expect(v6.kind === 'ok' && v6.network.ips.map((ip) => `${ip.cidr.network}/${ip.cidr.prefix}`)).toEqual([
      '192.168.170.0/24',
      'fd00:170::/64',
    ]);
    const pxe = parseNetworkXml(golden('tftp-no-dns/pxe.xml'));
    expect(pxe.kind === 'ok' && [pxe.network.dns, pxe.network.ips[0]!.tftp]).toEqual([false, true]);
  });

  it('maps forward modes: no <forward> is isolated, bridge is ignored', () => {
    const iso = parseNetworkXml(golden('isolated/isolated.xml'));
    expect(iso.kind === 'ok' && iso.network.mode).toBe('isolated');
    expect(parseNetworkXml(golden('hostile/bridge-mode.xml'))).toEqual({
      kind: 'ignored',
      name: 'hostbridge',
      mode: 'bridge',
    });
    const noMode = parseNetworkXml("<network><name>n</name><forward/><bridge name='br1'/></network>");
    expect(noMode.kind === 'ok' && noMode.network.mode).toBe('nat');
  });

  it('uses the classful prefix for IPv4 without netmask, and /64 for IPv6 without prefix', () => {
    const r = parseNetworkXml(
      "<network><name>n</name><bridge name='br1'/><ip address='10.1.2.3'/><ip address='172.16.0.1'/><ip family='ipv6' address='fd00::1'/></network>",
    );
    expect(r.kind === 'ok' && r.network.ips.map((ip) => ip.cidr.prefix)).toEqual([8, 16, 64]);
  });

  it.each([
    ['wildcard-bridge.xml', 'bridge/@name'],
    ['long-bridge.xml', 'bridge/@name'],
    ['injected-dev.xml', 'forward/@dev'],
    ['quoted-name.xml', 'name'],
    ['bad-address.xml', 'ip[1]/@address'],
    ['bad-prefix.xml', 'ip[1]/@prefix'],
    ['bad-netmask.xml', 'ip[1]/@netmask'],
    ['no-bridge.xml', 'bridge/@name'],
    ['malformed.xml', 'xml'],
    ['entity.xml', 'xml'],
    ['bad-port.xml', 'forward/nat/port/@start'],
  ])('refuses hostile input %s, naming the field %s', (file, field) => {
    const r = parseNetworkXml(golden(`hostile/${file}`), file);
    expect(r.kind).toBe('invalid');
    expect(r.kind === 'invalid' && r.field).toBe(field);
  });

  it('refuses bridge names nft would read as patterns or paths', () => {
    for (const name of ['.', '..', 'br*', 'br 0', 'br"0', '', 'a/b']) {
      const r = parseNetworkXml(`<network><name>n</name><bridge name='${name}'/></network>`);
      expect(r.kind, name).toBe('invalid');
    }
  });

  it('refuses mismatched families, reversed ranges and a /0 subnet', () => {
    const cases = [
      "<ip family='ipv6' address='10.0.0.1' prefix='8'/>",
      "<ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.9' end='10.0.0.2'/></dhcp></ip>",
      "<ip address='10.0.0.1' prefix='24'><dhcp><range start='fd00::1' end='fd00::9'/></dhcp></ip>",
      "<ip address='10.0.0.1' prefix='0'/>",
      "<ip family='ipv6' address='fd00::1' netmask='255.255.255.0'/>",
    ];
    for (const ip of cases) {
      expect(parseNetworkXml(`<network><name>n</name><bridge name='br1'/>${ip}</network>`).kind, ip).toBe('invalid');
    }
  });
});

const routed = (inner: string, name = 'n'): string =>
  `<network><name>${name}</name><forward mode='route'/><bridge name='br1'/>${inner}</network>`;

function refusal(xml: string): { field: string; message: string } {
  const r = parseNetworkXml(xml, 'o.xml');
  if (r.kind !== 'invalid') throw new Error(`expected a refusal, got ${JSON.stringify(r)}`);
  return { field: r.field, message: r.message };
}

describe('parseNetworkXml: addresses that make no sense', () => {
  it.each([
    ["<ip address='10.0.0.1' prefix='7'/>", 'ip[1]/@prefix', 'must be 8-32 for IPv4'],
    ["<ip address='10.0.0.1' netmask='254.0.0.0'/>", 'ip[1]/@netmask', 'is /7, wider than /8'],
    ["<ip family='ipv6' address='fd00::1' prefix='15'/>", 'ip[1]/@prefix', 'must be 16-128 for IPv6'],
    ["<ip family='ipv6' address='::ffff:10.0.0.1' prefix='120'/>", 'ip[1]/@address', 'IPv4-mapped'],
    ["<ip family='ipv6' address='0:0:0:0:0:FFFF:a00:1' prefix='120'/>", 'ip[1]/@address', 'IPv4-mapped'],
    ["<ip family='ipv6' address='::10.0.0.1' prefix='104'/>", 'ip[1]/@address', 'IPv4-compatible'],
    ["<ip family='ipv6' address='::a00:1' prefix='64'/>", 'ip[1]/@address', 'IPv4-compatible'],
    ["<ip address='127.0.0.1' prefix='8'/>", 'ip[1]/@address', 'loopback'],
    ["<ip family='ipv6' address='::1' prefix='128'/>", 'ip[1]/@address', 'loopback'],
    ["<ip address='239.1.2.3' prefix='24'/>", 'ip[1]/@address', 'multicast'],
    ["<ip address='224.0.0.1'/>", 'ip[1]/@address', 'not a unicast class A/B/C address'],
    ["<ip family='ipv6' address='ff02::1' prefix='64'/>", 'ip[1]/@address', 'multicast'],
    ["<ip address='0.0.0.0' prefix='24'/>", 'ip[1]/@address', 'unspecified'],
    ["<ip address='0.1.2.3'/>", 'ip[1]/@address', 'the network 0.0.0.0/8 contains the unspecified address'],
    ["<ip family='ipv6' address='::' prefix='64'/>", 'ip[1]/@address', 'unspecified'],
    [
      "<ip family='ipv6' address='1::1' prefix='16'/><ip address='255.255.255.255' prefix='32'/>",
      'ip[2]/@address',
      'broadcast',
    ],
    [
      "<ip family='ipv6' address='0:1::1' prefix='16'/>",
      'ip[1]/@address',
      'the network ::/16 contains the unspecified',
    ],
  ])('refuses %s naming %s', (ip, field, words) => {
    const r = refusal(routed(ip));
    expect(r.field).toBe(field);
    expect(r.message).toContain(words);
  });

  it('accepts ordinary networks next to the reserved blocks', () => {
    for (const ip of [
      "<ip address='10.0.0.1' prefix='8'/>",
      "<ip address='223.255.255.1' prefix='24'/>",
      "<ip address='1.0.0.1'/>",
      "<ip family='ipv6' address='1::1' prefix='16'/>",
      "<ip family='ipv6' address='64:ff9b::10.0.0.1' prefix='120'/>",
      "<ip family='ipv6' address='FD00:0000::1' prefix='128'/>",
    ])
      expect(parseNetworkXml(routed(ip)).kind, ip).toBe('ok');
  });

  it.each([
    ['127.0.0.1', '127.0.0.9', 'forward/nat/address/@start', 'loopback'],
    ['223.255.255.250', '224.0.0.1', 'forward/nat/address/@end', 'multicast'],
    ['126.0.0.1', '128.0.0.1', 'forward/nat/address', 'loopback'],
    ['0.0.0.0', '0.0.0.9', 'forward/nat/address/@start', 'unspecified'],
    ['255.255.255.255', '255.255.255.255', 'forward/nat/address/@start', 'broadcast'],
  ])('refuses the NAT address range %s-%s naming %s', (start, end, field, kind) => {
    const r = refusal(
      `<network><name>n</name><forward mode='nat'><nat><address start='${start}' end='${end}'/></nat></forward><bridge name='br1'/></network>`,
    );
    expect(r).toMatchObject({ field });
    expect(r.message).toContain(kind);
  });
});

describe('parseNetworkXml: names', () => {
  it.each([
    ['a&amp;b', 'a&b'],
    ['&lt;x&gt;', '<x>'],
    ['caf&#233;-&#xE9;', 'café-é'],
    ['smile&#x1F642;', 'smile🙂'],
    ['ünï-cødé', 'ünï-cødé'],
  ])('decodes the entities in %s: the network is %s', (raw, name) => {
    const r = parseNetworkXml(routed('', raw));
    expect(r.kind === 'ok' && r.network.name).toBe(name);
  });

  it('decodes entities in attributes too, then validates the value', () => {
    const ok = parseNetworkXml("<network><name>n</name><bridge name='virbr&#48;'/></network>");
    expect(ok.kind === 'ok' && ok.network.bridge).toBe('virbr0');
    expect(refusal("<network><name>n</name><bridge name='v&#42;'/></network>").field).toBe('bridge/@name');
    expect(refusal("<network><name>n</name><bridge name='br&foo;'/></network>")).toMatchObject({
      field: 'bridge/@name',
      message: expect.stringContaining('undefined entity') as string,
    });
  });

  const controls = ['\t', '\n', '\x7f', '\x85', '\x9f'];
  const bidi = ['\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069'];
  it.each<[string, string]>([
    ...controls.map((c): [string, string] => [c, 'a control character']),
    ...bidi.map((c): [string, string] => [c, 'a bidi override character']),
    ['\u2028', 'a line or paragraph separator'],
    ['\u2029', 'a line or paragraph separator'],
  ])('refuses a name with %j (%s), written as a character reference, and shows it escaped', (char, what) => {
    const code = char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    const r = refusal(routed('', `x&#x${code};y`));
    expect(r.field).toBe('name');
    expect(r.message).toContain(`${what} (U+${code})`);
    expect(r.message).not.toContain(char);
  });

  it('refuses bidi characters and separators written literally, too', () => {
    for (const char of ['\u202e', '\u2069', '\u2028'])
      expect(refusal(routed('', `x${char}y`)).field, JSON.stringify(char)).toBe('name');
  });

  it.each([
    ['x&nbsp;y', 'undefined entity "&nbsp;"'],
    ['x&#0;y', 'is not a character XML allows'],
    ['x&#x1;y', 'is not a character XML allows'],
    ['x&#xD800;y', 'is not a character XML allows'],
    ['x&#x110000;y', 'is not a character XML allows'],
    ['x&quot;y', 'a space, quote, backslash or slash'],
    ['a&#32;b', 'a space, quote, backslash or slash'],
    ['x'.repeat(201), '1-200 characters'],
  ])('refuses the name %s: %s', (raw, words) => {
    const r = refusal(routed('', raw));
    expect(r.field).toBe('name');
    expect(r.message).toContain(words);
  });

  it('refuses CDATA, whose content the XML parser would mix with decoded text', () => {
    expect(refusal(routed('', '<![CDATA[a&amp;b]]>')).field).toBe('xml');
  });

  it('a decoded name is the name filter.accept_open_networks uses', () => {
    const open = parseNetworkXml(
      "<network><name>lab&amp;co</name><forward mode='open'/><bridge name='br9'/></network>",
    );
    const config = configFromObject({ filter: { accept_open_networks: ['lab&co'] } }, 'k.toml');
    const result = plan([open], config, LIVE_LIBVIRT9);
    expect(result.desired.input).toContainEqual(expect.objectContaining({ comment: 'kvmnftd net=lab&co' }) as unknown);
  });
});
