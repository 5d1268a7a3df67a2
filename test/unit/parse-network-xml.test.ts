import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';

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
