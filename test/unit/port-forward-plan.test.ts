// The port forward planner (src/nft/port-forward.ts) on its own: which
// forwards get rules, and that every rule is narrow (local destination,
// DNATed connections only, counters everywhere). The golden case
// test/golden/port-forward shows the whole plan.
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config/config.js';
import type { Network } from '../../src/libvirt/model.js';
import { cidrOf } from '../../src/net/ip.js';
import { renderRule } from '../../src/nft/render-text.js';
import { addressTargets, forwardRules } from '../../src/nft/port-forward.js';
import { foreignTargets } from '../../src/nft/foreign-chains.js';

const net = (over: Partial<Network> = {}): Network => ({
  name: 'default',
  bridge: 'virbr0',
  mode: 'nat',
  nat: { ports: { start: 1024, end: 65535 }, ipv6: false },
  ips: [{ address: '192.168.122.1', cidr: cidrOf('192.168.122.0', 24)!, dhcpRanges: [], tftp: false }],
  dns: true,
  ...over,
});
const config = (...forwards: Array<Record<string, unknown>>) =>
  configFromObject(
    { port_forward: forwards.map((f) => ({ network: 'default', proto: 'tcp', host_port: 2222, ...f })) },
    't',
  );
const both = new Set<4 | 6>([4, 6]);

describe('forwardRules', () => {
  it('writes DNAT only to local destinations, the accept only for DNATed connections, counters everywhere', () => {
    const c = config({ to: '192.168.122.10', to_port: 22 });
    const r = forwardRules(addressTargets(c.portForward), [net()], both);
    const text = (rs: typeof r.prerouting) => rs.map((x) => renderRule(x.expr));
    expect(text(r.prerouting)).toEqual(['fib daddr type local tcp dport 2222 counter dnat ip to 192.168.122.10:22']);
    expect(text(r.output)).toEqual([
      'fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 2222 counter dnat ip to 192.168.122.10:22',
    ]);
    expect(text(r.postrouting)).toEqual([
      'oifname "virbr0" ip saddr 192.168.122.0/24 ip daddr 192.168.122.10 tcp dport 22 ' +
        'ct status dnat counter masquerade',
    ]);
    expect(text(r.accepts.get('default')!)).toEqual([
      'oifname "virbr0" ip daddr 192.168.122.10 tcp dport 22 ct status dnat counter accept',
    ]);
    expect(r.outcomes.map((o) => [o.name, o.state, o.addresses])).toEqual([
      ['port_forward[0]', 'active', ['192.168.122.10']],
    ]);
    expect(r.outcomes[0]!.prerouting).toEqual(r.prerouting);
  });

  it('has no rules, only a note, for a waiting or misplaced forward', () => {
    const c = configFromObject(
      {
        port_forward: [
          { network: 'default', proto: 'tcp', host_port: 1, to: 'web1' },
          { network: 'default', proto: 'tcp', host_port: 2, to: '10.0.0.5' },
          { network: 'other', proto: 'tcp', host_port: 3, to: '10.0.0.5' },
          { network: 'iso', proto: 'tcp', host_port: 4, to: '10.1.0.5' },
        ],
      },
      't',
    );
    const iso = net({ name: 'iso', bridge: 'virbr9', mode: 'isolated' });
    const r = forwardRules(addressTargets(c.portForward), [net(), iso], both);
    expect(r.prerouting).toEqual([]);
    expect(r.accepts.size).toBe(0);
    expect(r.notes.map((n) => [n.forward, n.level])).toEqual([
      ['port_forward[0]', 'info'],
      ['port_forward[1]', 'error'],
      ['port_forward[2]', 'info'],
      ['port_forward[3]', 'error'],
    ]);
    expect(r.outcomes.map((o) => [o.state, o.problem])).toEqual([
      ['waiting', 'no-lease'],
      ['invalid', 'outside-network'],
      ['waiting', 'network-inactive'],
      ['invalid', 'network-mode'],
    ]);
  });

  it('writes nothing for a family the admin table does not hold, or that `from` excludes', () => {
    const v6 = net({
      mode: 'route',
      ips: [{ address: 'fd00::1', cidr: cidrOf('fd00::', 64)!, dhcpRanges: [], tftp: false }],
    });
    const c = config({ to: 'fd00::5' });
    expect(forwardRules(addressTargets(c.portForward), [v6], new Set([4])).prerouting).toEqual([]);
    expect(forwardRules(addressTargets(c.portForward), [v6], both).prerouting).toHaveLength(1);
  });

  it('uses a set for several sources, and a map for a shifted range', () => {
    const c = config({
      to: '192.168.122.10',
      host_port: '8000-8001',
      to_port: 9000,
      from: ['198.51.100.0/24', '203.0.113.7'],
    });
    const r = forwardRules(addressTargets(c.portForward), [net()], both);
    expect(renderRule(r.prerouting[0]!.expr)).toBe(
      'fib daddr type local ip saddr { 198.51.100.0/24, 203.0.113.7 } tcp dport 8000-8001 counter ' +
        'dnat ip to 192.168.122.10 : tcp dport map { 8000 : 9000, 8001 : 9001 }',
    );
  });
});

describe("libvirt's rejecting chains in the owners table", () => {
  it('are targets only while forwards are configured, kept first', () => {
    const libvirt = (c: ReturnType<typeof config>) => foreignTargets(c).filter((t) => t.owner === 'libvirt');
    expect(libvirt(configFromObject({}, 't'))).toEqual([]);
    const targets = libvirt(config({ to: 'web1' }));
    expect(targets.map((t) => `${t.family} ${t.table} ${t.chain} ${t.placement}`)).toEqual([
      'ip filter LIBVIRT_FWI first',
      'ip6 filter LIBVIRT_FWI first',
      'ip libvirt_network guest_input first',
      'ip6 libvirt_network guest_input first',
    ]);
    expect(renderRule(targets[0]!.rule.expr, targets[0]!.rule.comment)).toBe(
      'meta mark & 0x00002000 == 0x00002000 accept comment "kvmnftd"',
    );
  });
});
