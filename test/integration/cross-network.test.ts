/**
 * Two networks on one host with only kvmnftd's rules (no libvirt): a guest
 * of a routed network must not open connections into a NAT network, while
 * the NAT guest may open connections into the routed network (libvirt's
 * semantics: routed subnets accept inbound, NAT subnets only replies).
 */
import { describe, expect, it } from 'vitest';
import { cliContext, describeRun, fixture, useNetnsLab, runCli } from '../helpers/cli.js';
import { nftLoadFile, tcpProbe } from '../helpers/netns.js';

const theLab = useNetnsLab();

describe('cross-network forwarding', () => {
  it('routed guest -> NAT guest: refused; NAT guest -> routed guest: allowed', async () => {
    const l = theLab();
    const host = await l.netns('host');
    const natGuest = await l.netns('natg');
    const routedGuest = await l.netns('routeg');
    for (const [bridge, cidr, port, guest, addr, gw] of [
      ['virbr0', '192.168.122.1/24', 'vnet0', natGuest, '192.168.122.50/24', '192.168.122.1'],
      ['virbr3', '203.0.113.1/25', 'vnet3', routedGuest, '203.0.113.10/25', '203.0.113.1'],
    ] as const) {
      await l.bridge(host, bridge);
      await l.addr(host, bridge, cidr);
      await l.veth(host, port, guest, 'eth0');
      await l.enslave(host, port, bridge);
      await l.addr(guest, 'eth0', addr);
      await l.route(guest, 'default', gw);
    }
    await nftLoadFile(host, fixture('admin-ruleset.nft'));
    const ctx = await cliContext(l, '');
    const r = await runCli(
      host,
      [
        'apply',
        '--from-xml',
        fixture('default.xml'),
        '--from-xml',
        `${import.meta.dirname}/../golden/route/routed.xml`,
        '--config',
        ctx.configFile,
      ],
      { runtimeDir: ctx.runtimeDir },
    );
    expect(r.exitCode, describeRun(r)).toBe(0);

    const inNat = await l.tcpListener(natGuest, '192.168.122.50', 0);
    const inRouted = await l.tcpListener(routedGuest, '203.0.113.10', 0);
    // Control first, so that a refusal below is the firewall and not the wiring.
    const allowed = await tcpProbe(natGuest, '203.0.113.10', inRouted.port, 5000);
    expect(allowed, 'NAT guest -> routed guest must connect').toMatchObject({ ok: true });
    const refused = await tcpProbe(routedGuest, '192.168.122.50', inNat.port, 3000);
    expect(refused.ok, 'routed guest -> NAT guest must not connect').toBe(false);
    expect(inNat.peers).toEqual([]);
  });
});
