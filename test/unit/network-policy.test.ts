// [networks.<name>] and [networks."*"]: the entry syntax of host_services and egress (config/egress.ts), how a
// network's table overrides "*" key by key, and the errors that name the key and the value.
import { describe, expect, it } from 'vitest';
import { configFromObject, configProblems, defaultConfig } from '../../src/config/config.js';
import { egressText, parseEgress, parseService } from '../../src/config/egress.js';
import { networkPolicy } from '../../src/config/network-policy.js';

describe('entry syntax', () => {
  it.each([
    ['tcp/22', { proto: 'tcp', ports: { start: 22, end: 22 } }],
    ['udp/8000-8010', { proto: 'udp', ports: { start: 8000, end: 8010 } }],
  ])('service %s', (text, want) => expect(parseService(text)).toEqual(want));

  it.each(['tcp', 'icmp/1', 'tcp/0', 'tcp/65536', 'tcp/10-9', 'tcp/22 ', 'TCP/22', 'tcp/1-70000'])(
    'refuses the service %s',
    (text) => expect(parseService(text)).toBeUndefined(),
  );

  it.each([
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['203.0.113.7', '203.0.113.7'],
    ['2001:db8::/32', '2001:db8::/32'],
    ['2001:DB8::1', '2001:db8::1'],
    ['tcp/443', 'tcp/443'],
    ['udp/8000-8010', 'udp/8000-8010'],
    ['203.0.113.7:tcp/25', '203.0.113.7:tcp/25'],
    ['198.51.100.0/24:udp/53', '198.51.100.0/24:udp/53'],
    ['[2001:db8::1]:tcp/25', '[2001:db8::1]:tcp/25'],
    ['[2001:db8::/48]:tcp/80-81', '[2001:db8::/48]:tcp/80-81'],
  ])('egress %s', (text, canonical) => {
    const entry = parseEgress(text);
    expect(entry).toBeDefined();
    expect(egressText(entry!)).toBe(canonical);
  });

  it.each([
    '',
    'example.com',
    '10.0.0.0/33',
    '10.0.0.1:25',
    '10.0.0.1:icmp/0',
    '2001:db8::1:tcp/25',
    '[10.0.0.1]:tcp/25',
    '[2001:db8::1]',
    'tcp/443:10.0.0.1',
  ])('refuses the egress entry %j', (text) => expect(parseEgress(text)).toBeUndefined());
});

describe('[networks]', () => {
  const read = (networks: Record<string, unknown>, filter: Record<string, unknown> = {}) =>
    configFromObject({ networks, filter }, 'test.toml');

  it('defaults: no policy for any network', () => {
    const p = networkPolicy(defaultConfig(), 'default');
    expect(p).toEqual({ hostServices: [], isolateGuests: false, egress: undefined, logDrops: false, from: {} });
  });

  it('a network table overrides "*" key by key', () => {
    const config = read({
      '*': { host_services: ['tcp/22'], log_drops: true, egress: ['tcp/443'] },
      lab: { host_services: [], isolate_guests: true },
    });
    const lab = networkPolicy(config, 'lab');
    expect(lab.hostServices).toEqual([]);
    expect(lab.isolateGuests).toBe(true);
    expect(lab.logDrops).toBe(true);
    expect(lab.egress).toEqual([{ service: { proto: 'tcp', ports: { start: 443, end: 443 } } }]);
    expect(lab.from).toEqual({ host_services: 'own', isolate_guests: 'own', log_drops: 'all', egress: 'all' });
    const other = networkPolicy(config, 'other');
    expect(other.hostServices).toHaveLength(1);
    expect(other.isolateGuests).toBe(false);
  });

  it('egress = [] allows nothing; absent is unrestricted', () => {
    expect(networkPolicy(read({ lab: { egress: [] } }), 'lab').egress).toEqual([]);
    expect(networkPolicy(read({ lab: { log_drops: true } }), 'lab').egress).toBeUndefined();
  });

  it('errors name the entry and its value', () => {
    const problems = configProblems(
      { networks: { lab: { egress: ['10.0.0.0/8', 'tcp/443', 'nowhere'], host_services: ['tcp/99999'] } } },
      'k.toml',
    );
    expect(problems.map((p) => p.message)).toEqual([
      'k.toml: networks.lab.host_services[0]: expected "tcp/PORT" or "udp/PORT", PORT a port 1-65535 or a range ' +
        '"A-B", got "tcp/99999"',
      expect.stringMatching(/^k\.toml: networks\.lab\.egress\[2\]: expected a destination .* got "nowhere"$/),
    ]);
  });

  it('"*" is quoted in a key', () => {
    const problems = configProblems({ networks: { '*': { egress: ['x'] } } }, 'k.toml');
    expect(problems[0]!.key).toBe('networks."*".egress[0]');
  });

  it('refuses egress unless filter.jump = "first"', () => {
    for (const jump of ['last', 'none']) {
      const problems = configProblems({ networks: { lab: { egress: [] } }, filter: { jump } }, 'k.toml');
      expect(problems.map((p) => p.key)).toEqual(['networks.lab.egress']);
      expect(problems[0]!.expected).toContain('filter.jump = "first"');
    }
    expect(configProblems({ networks: { lab: { isolate_guests: true } }, filter: { jump: 'last' } }, 'k')).toEqual([]);
  });

  it('refuses unknown keys and wrong types, naming them', () => {
    expect(configProblems({ networks: { lab: { mode: 'nat' } } }, 'k')[0]!.key).toBe('networks.lab.mode');
    expect(configProblems({ networks: { lab: { isolate_guests: 'yes' } } }, 'k')[0]!.key).toBe(
      'networks.lab.isolate_guests',
    );
    expect(configProblems({ networks: { 'a/b': {} } }, 'k')[0]!.key).toBe('networks."a/b"');
  });
});
