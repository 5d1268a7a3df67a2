/**
 * Real packets through real namespaces:
 *
 *   guest (192.168.122.50/24, default via .1)
 *     └─ eth0 ══ vnet0 ─ virbr0 (192.168.122.1/24, STP off)   [host: the article's ruleset]
 *                        eth0 (192.0.2.1/24) ══ eth0 (192.0.2.2/24)   [wan: no route back]
 *
 * Without kvmnftd the guest cannot get out (forward policy drop). After
 * `kvmnftd apply --from-xml default.xml` a NEW connection gets out,
 * masqueraded to 192.0.2.1, and nothing NEW comes in.
 */
import { describe, expect, it } from 'vitest';
import {
  Lab,
  allRules,
  nftJson,
  nftLoadFile,
  nsRunOk,
  readProcSys,
  ruleHas,
  rulePackets,
  tcpProbe,
  type ProbeResult,
} from '../helpers/netns.js';
import { cliContext, describeRun, fixture, useNetnsLab, runCli } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';

const ADMIN = fixture('admin-ruleset.nft');
const DEFAULT_XML = fixture('default.xml');

const HOST_WAN = '192.0.2.1';
const WAN = '192.0.2.2';
const GW = '192.168.122.1';
const GUEST = '192.168.122.50';

const theLab = useNetnsLab();

interface Topology {
  host: string;
  wan: string;
  guest: string;
}

async function buildTopology(l: Lab): Promise<Topology> {
  const host = await l.netns('host');
  const wan = await l.netns('wan');
  const guest = await l.netns('guest');

  // host eth0 <-> wan eth0
  await l.veth(host, 'eth0', wan, 'eth0');
  await l.addr(host, 'eth0', `${HOST_WAN}/24`);
  await l.addr(wan, 'eth0', `${WAN}/24`);

  // virbr0 in host, guest attached through vnet0
  await l.bridge(host, 'virbr0');
  await l.addr(host, 'virbr0', `${GW}/24`);
  await l.veth(host, 'vnet0', guest, 'eth0');
  await l.enslave(host, 'vnet0', 'virbr0');
  await l.addr(guest, 'eth0', `${GUEST}/24`);
  await l.route(guest, 'default', GW);

  await nftLoadFile(host, ADMIN);
  await l.sysctl(host, 'net.ipv4.ip_forward', '0');
  return { host, wan, guest };
}

async function applyDefault(l: Lab, host: string): Promise<void> {
  const ctx = await cliContext(l, '');
  const r = await runCli(host, ['apply', '--from-xml', DEFAULT_XML, '--config', ctx.configFile], {
    runtimeDir: ctx.runtimeDir,
  });
  expect(r.exitCode, describeRun(r)).toBe(0);
}

/** Retry NEW connections (each probe is a fresh flow) until one succeeds. */
async function eventuallyConnects(from: string, host: string, port: number, timeoutMs = 15_000): Promise<ProbeResult> {
  let last: ProbeResult | undefined;
  return waitUntil(
    `a TCP connection from ${from} to ${host}:${port}`,
    timeoutMs,
    async () => {
      last = await tcpProbe(from, host, port, 2_000);
      return last.ok ? last : undefined;
    },
    { intervalMs: 100, detail: () => `last probe: ${JSON.stringify(last)}` },
  );
}

describe('e2e: guest traffic through a strict host firewall', () => {
  it('guest gets out only after apply, masqueraded to the host address, counted by our rule', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    const listener = await l.tcpListener(t.wan, WAN, 0);

    // Wiring control: the host itself reaches the wan listener (output accept, established in).
    const ctl = await tcpProbe(t.host, WAN, listener.port, 5_000);
    expect(ctl, 'lab wiring: host -> wan must work').toMatchObject({ ok: true, data: 'hello\n' });
    await listener.waitForConnections(1);
    const baseline = listener.peers.length;

    // Without kvmnftd: blocked, even with forwarding on (the firewall drops it)...
    await l.sysctl(t.host, 'net.ipv4.ip_forward', '1');
    const blocked = await tcpProbe(t.guest, WAN, listener.port, 2_000);
    expect(blocked.ok, `guest must not get out before apply: ${JSON.stringify(blocked)}`).toBe(false);
    // ...and with forwarding off (the state kvmnftd must fix).
    await l.sysctl(t.host, 'net.ipv4.ip_forward', '0');
    const blocked2 = await tcpProbe(t.guest, WAN, listener.port, 2_000);
    expect(blocked2.ok).toBe(false);
    expect(listener.peers.length, 'listener saw a guest connection before apply').toBe(baseline);

    await applyDefault(l, t.host);
    expect(await readProcSys(t.host, 'net/ipv4/ip_forward'), 'apply must enable IPv4 forwarding').toBe('1');

    const ok = await eventuallyConnects(t.guest, WAN, listener.port);
    expect(ok.data).toBe('hello\n');
    expect(ok.local).toBe(GUEST);
    const peers = await listener.waitForConnections(baseline + 1);
    expect(peers.slice(baseline), 'wan must see the masqueraded host address, never the guest').toEqual(
      peers.slice(baseline).map(() => HOST_WAN),
    );
    expect(peers).not.toContain(GUEST);

    // Our masquerade rule counted it.
    const rs = await nftJson(t.host);
    const masq = allRules(rs).filter((r) => r.family === 'inet' && r.table === 'kvmnftd' && ruleHas(r, 'masquerade'));
    expect(masq.length, 'no masquerade rule in table inet kvmnftd').toBeGreaterThan(0);
    const packets = masq.reduce((n, r) => n + rulePackets(r), 0);
    expect(packets, `masquerade counters did not move: ${JSON.stringify(masq)}`).toBeGreaterThan(0);
  });

  it('no NEW connection from the wan reaches the guest, even with a route to the guest subnet', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    await applyDefault(l, t.host);

    const guestListener = await l.tcpListener(t.guest, GUEST, 0);
    await l.route(t.wan, '192.168.122.0/24', HOST_WAN);

    const inbound = await tcpProbe(t.wan, GUEST, guestListener.port, 2_000);
    expect(inbound.ok, `wan reached the guest: ${JSON.stringify(inbound)}`).toBe(false);
    expect(guestListener.peers, 'guest listener accepted an inbound connection').toEqual([]);

    // Control: the route and the guest are fine; an admin accept rule lets it in,
    // so it was the firewall (kvmnftd's forward rules + policy drop) that blocked it.
    await nsRunOk(t.host, 'nft', [
      'insert',
      'rule',
      'inet',
      'filter',
      'forward',
      'iifname',
      'eth0',
      'oifname',
      'virbr0',
      'accept',
    ]);
    const control = await eventuallyConnects(t.wan, GUEST, guestListener.port, 10_000);
    expect(control.ok).toBe(true);
    expect(guestListener.peers).toContain(WAN);
  });

  it('the guest can reach the host DNS port on its bridge after apply (input accepts DNS from virbr0)', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    const dns = await l.tcpListener(t.host, GW, 53);

    const before = await tcpProbe(t.guest, GW, 53, 2_000);
    expect(before.ok, 'input policy drop must block DNS before apply').toBe(false);

    await applyDefault(l, t.host);
    const after = await eventuallyConnects(t.guest, GW, 53, 10_000);
    expect(after.ok).toBe(true);
    expect(dns.peers).toContain(GUEST);
  });
});
