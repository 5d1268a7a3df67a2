import { describe, expect, it } from 'vitest';
import { canonicalIp, cidrOf, netmaskToPrefix } from '../../src/net/ip.js';

describe('ip', () => {
  it.each([
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['fd00:0:0:1:0:0:0:0', 'fd00:0:0:1::'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['::', '::'],
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['192.168.122.1', '192.168.122.1'],
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

  it('converts netmasks and refuses holes', () => {
    expect(netmaskToPrefix('255.255.255.0')).toBe(24);
    expect(netmaskToPrefix('255.255.254.0')).toBe(23);
    expect(netmaskToPrefix('255.0.255.0')).toBeUndefined();
  });
});
