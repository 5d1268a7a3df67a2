import { describe, expect, it } from 'vitest';
import { canonicalIp, cidrOf, netmaskToPrefix, rangeAsCidr, reservedHit, reservedInRange } from '../../src/net/ip.js';

describe('ip', () => {
  it.each([
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['fd00:0:0:1:0:0:0:0', 'fd00:0:0:1::'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['::', '::'],
    ['192.168.122.1', '192.168.122.1'],
    // What nft 1.0.6 listed for these (glibc inet_ntop): a dotted tail for
    // IPv4-mapped and IPv4-compatible addresses, but not for :: and ::1.
    ['::ffff:c000:201', '::ffff:192.0.2.1'],
    ['0:0:0:0:0:FFFF:0:0', '::ffff:0.0.0.0'],
    ['::a00:0', '::10.0.0.0'],
    ['::1.2.0.0', '::1.2.0.0'],
    ['::0.0.1.0', '::100'],
    ['::1', '::1'],
    ['0:0:0:0:0:1:0:0', '::1:0:0'],
    ['fd00:0:0:0:1:0:0:0', 'fd00::1:0:0:0'],
    ['1:0:0:1:0:0:0:0', '1:0:0:1::'],
    ['0:0:0:0:1:ffff:0:1', '::1:ffff:0:1'],
    ['64:ff9b::10.0.0.1', '64:ff9b::a00:1'],
  ])('canonical form of %s is %s (RFC 5952, as nft prints it)', (input, expected) => {
    expect(canonicalIp(input)).toBe(expected);
  });

  it('rejects what is not an address', () => {
    for (const bad of ['192.168.300.1', '1.2.3', 'fe80::1%eth0', 'virbr0', '', '1.2.3.4/24'])
      expect(canonicalIp(bad)).toBeUndefined();
  });

  it('computes networks', () => {
    expect(cidrOf('192.168.122.1', 24)).toEqual({ family: 4, network: '192.168.122.0', prefix: 24 });
    expect(cidrOf('203.0.113.77', 25)).toEqual({ family: 4, network: '203.0.113.0', prefix: 25 });
    expect(cidrOf('2001:db8:ca2:2::1', 64)).toEqual({ family: 6, network: '2001:db8:ca2:2::', prefix: 64 });
    expect(cidrOf('10.0.0.1', 33)).toBeUndefined();
  });

  it('turns a range that is exactly one prefix block into that prefix, as nft lists a SNAT range', () => {
    expect(rangeAsCidr('10.0.0.4', '10.0.0.7')).toEqual({ family: 4, network: '10.0.0.4', prefix: 30 });
    expect(rangeAsCidr('10.0.0.0', '10.0.0.255')).toEqual({ family: 4, network: '10.0.0.0', prefix: 24 });
    expect(rangeAsCidr('0.0.0.0', '255.255.255.255')).toEqual({ family: 4, network: '0.0.0.0', prefix: 0 });
    for (const [a, b] of [
      ['10.0.0.5', '10.0.0.6'],
      ['10.0.0.4', '10.0.0.8'],
      ['10.0.0.2', '10.0.0.5'],
      ['10.0.0.4', '10.0.0.4'],
      ['10.0.0.7', '10.0.0.4'],
    ])
      expect(rangeAsCidr(a!, b!), `${a}-${b}`).toBeUndefined();
  });

  it.each([
    ['127.0.0.1', 24, 'loopback', true],
    ['224.0.0.1', 32, 'multicast', true],
    ['0.0.0.0', 24, 'unspecified', true],
    ['255.255.255.255', 32, 'broadcast', true],
    ['0.1.2.3', 8, 'unspecified', false],
    ['255.1.2.3', 8, 'broadcast', false],
    ['::', 64, 'unspecified', true],
    ['::1', 128, 'loopback', true],
    ['::10.0.0.1', 120, 'IPv4-compatible', true],
    ['::ffff:10.0.0.1', 120, 'IPv4-mapped', true],
    ['ff02::1', 64, 'multicast', true],
    ['1::1', 15, 'unspecified', false],
  ])('%s/%i is in or overlaps a %s block (the address itself: %s)', (address, prefix, kind, inside) => {
    expect(reservedHit(address, prefix)).toMatchObject({ kind, address: inside });
  });

  it('finds no reserved block in ordinary networks', () => {
    for (const [address, prefix] of [
      ['192.168.122.1', 24],
      ['1.0.0.0', 8],
      ['223.255.255.1', 24],
      ['fd00::1', 64],
      ['1::1', 16],
      ['64:ff9b::a00:1', 96],
      ['::1:0:0:1', 80],
      ['fe80::1', 64],
    ] as const)
      expect(reservedHit(address, prefix), `${address}/${prefix}`).toBeUndefined();
  });

  it('finds reserved blocks at either end of or inside an address range', () => {
    expect(reservedInRange('127.0.0.1', '127.0.0.9')).toMatchObject({ kind: 'loopback', where: 'start' });
    expect(reservedInRange('223.255.255.250', '224.0.0.1')).toMatchObject({ kind: 'multicast', where: 'end' });
    expect(reservedInRange('126.0.0.1', '128.0.0.1')).toMatchObject({ kind: 'loopback', where: 'inside' });
    expect(reservedInRange('198.51.100.1', '198.51.100.9')).toBeUndefined();
  });

  it('converts netmasks and refuses holes', () => {
    expect(netmaskToPrefix('255.255.255.0')).toBe(24);
    expect(netmaskToPrefix('255.255.254.0')).toBe(23);
    expect(netmaskToPrefix('255.0.255.0')).toBeUndefined();
  });
});
