// [[port_forward]] and [metadata_forwards]: each key's checks, the rules
// between a forward's keys, and the conflict rule between forwards. Errors
// name the element (`port_forward[2].host_port`), as `kvmnftd check` prints them.
import { describe, expect, it } from 'vitest';
import { configFromObject, configProblems } from '../../src/config/config.js';
import { forwardsOverlap, targetRef, toPortRange } from '../../src/config/port-forward.js';

const fwd = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  network: 'default',
  proto: 'tcp',
  host_port: 2222,
  to: 'web1',
  ...over,
});
const problems = (...forwards: Array<Record<string, unknown>>): string[] =>
  configProblems({ port_forward: forwards }, 'f.toml').map((p) => p.message);

describe('[[port_forward]]', () => {
  it('reads a full forward, with ranges, optional keys absent as undefined', () => {
    const c = configFromObject(
      {
        port_forward: [
          fwd({ to_port: 22, from: ['198.51.100.0/24', '203.0.113.7'], host_address: '198.51.100.1' }),
          fwd({ proto: 'udp', host_port: '8000-8010', to: '52:54:00:AA:bb:cc' }),
        ],
        metadata_forwards: { host_ports: [2200, '8100-8199'] },
      },
      'f.toml',
    );
    expect(c.portForward[0]).toEqual({
      network: 'default',
      proto: 'tcp',
      hostPort: { start: 2222, end: 2222 },
      to: 'web1',
      toPort: { start: 22, end: 22 },
      from: ['198.51.100.0/24', '203.0.113.7'],
      hostAddress: '198.51.100.1',
    });
    expect(c.portForward[1]!.toPort).toBeUndefined();
    expect(c.portForward[1]!.hostAddress).toBeUndefined();
    expect(toPortRange(c.portForward[1]!)).toEqual({ start: 8000, end: 8010 });
    expect(targetRef(c.portForward[1]!.to)).toEqual({ kind: 'mac', mac: '52:54:00:aa:bb:cc' });
    expect(c.metadataForwards.hostPorts).toEqual([
      { start: 2200, end: 2200 },
      { start: 8100, end: 8199 },
    ]);
  });

  it('has no forwards and metadata forwards off by default', () => {
    const c = configFromObject({}, 'f.toml');
    expect(c.portForward).toEqual([]);
    expect(c.metadataForwards.hostPorts).toEqual([]);
  });

  it('names the element and key of each bad value, once each', () => {
    expect(
      problems(
        fwd(),
        fwd({ host_port: 2300, proto: 'sctp' }),
        fwd({ host_port: 70000, to: 'a/b', from: ['300.1.1.1'] }),
        { proto: 'tcp', host_port: '10-5', to: 'web3' },
      ),
    ).toEqual([
      'f.toml: port_forward[1].proto: expected one of "tcp", "udp", got "sctp"',
      'f.toml: port_forward[2].host_port: expected a port from 1 to 65535, or a range "A-B" of such ports with A <= B, got 70000',
      'f.toml: port_forward[2].to: expected a libvirt domain name, a MAC address or an IPv4/IPv6 address, got "a/b"',
      'f.toml: port_forward[2].from: expected an array of addresses or subnets, got ["300.1.1.1"]',
      'f.toml: port_forward[3].host_port: expected a port from 1 to 65535, or a range "A-B" of such ports with A <= B, got "10-5"',
      'f.toml: port_forward[3].network: missing; expected a libvirt network name',
    ]);
  });

  it('refuses a to_port range of another length, or one ending past 65535', () => {
    expect(problems(fwd({ host_port: '8000-8010', to_port: '80-81' }))).toEqual([
      'f.toml: port_forward[0].to_port: the range 80-81 must be as long as host_port 8000-8010 (11 ports), ' +
        'or give only its start',
    ]);
    expect(problems(fwd({ host_port: '8000-8010', to_port: 65530 }))).toEqual([
      'f.toml: port_forward[0].to_port: 65530 + the 11 ports of host_port 8000-8010 ends past 65535',
    ]);
    expect(problems(fwd({ host_port: '8000-8010', to_port: '9000-9010' }))).toEqual([]);
  });

  it('refuses families that cannot meet, and a loopback host_address', () => {
    expect(problems(fwd({ to: '192.168.122.5', host_address: '2001:db8::1', from: ['2001:db8::/32'] }))).toEqual([
      'f.toml: port_forward[0].from: 2001:db8::/32: not IPv4 like to, so never a source of this forward',
      'f.toml: port_forward[0].host_address: 2001:db8::1 is IPv6 but to (192.168.122.5) is IPv4: ' +
        'nft cannot translate between families',
    ]);
    expect(problems(fwd({ host_address: '127.0.0.1' }))[0]).toMatch(
      /^f\.toml: port_forward\[0\]\.host_address: 127\.0\.0\.1 is a loopback address/,
    );
    // A domain name may have both families: mixed sources are fine.
    expect(problems(fwd({ from: ['198.51.100.0/24', '2001:db8::/32'] }))).toEqual([]);
  });

  it('refuses two forwards that take the same host port, naming the later one', () => {
    expect(problems(fwd(), fwd({ host_port: '2200-2300', to: 'web2' }))).toEqual([
      'f.toml: port_forward[1].host_port: tcp 2200-2300 on every host address overlaps port_forward[0] ' +
        '(tcp 2222 on every host address): two forwards cannot take the same host port ' +
        '(a forward without host_address takes it on every address)',
    ]);
    // Another protocol, other ports, or two different host addresses: no conflict.
    expect(problems(fwd(), fwd({ proto: 'udp' }), fwd({ host_port: 2223 }))).toEqual([]);
    expect(problems(fwd({ host_address: '198.51.100.1' }), fwd({ host_address: '198.51.100.2', to: 'web2' }))).toEqual(
      [],
    );
    // One address and "every address" overlap.
    expect(problems(fwd({ host_address: '198.51.100.1' }), fwd({ to: 'web2' }))).toHaveLength(1);
    // The same address written two ways overlaps.
    expect(
      forwardsOverlap(
        configFromObject({ port_forward: [fwd({ host_address: '2001:db8::1', to: 'a' })] }, 'f').portForward[0]!,
        configFromObject({ port_forward: [fwd({ host_address: '2001:DB8:0::1', to: 'b' })] }, 'f').portForward[0]!,
      ),
    ).toBe(true);
  });

  it('the loader stops at the first problem check reports', () => {
    expect(() => configFromObject({ port_forward: [fwd(), fwd()] }, 'f.toml')).toThrow(
      /^f\.toml: port_forward\[1\]\.host_port: tcp 2222 on every host address overlaps port_forward\[0\]/,
    );
  });

  it('refuses a bad metadata_forwards.host_ports entry', () => {
    expect(configProblems({ metadata_forwards: { host_ports: [0] } }, 'f.toml').map((p) => p.message)).toEqual([
      'f.toml: metadata_forwards.host_ports: expected an array of ports or "A-B" port ranges, got [0]',
    ]);
  });
});
