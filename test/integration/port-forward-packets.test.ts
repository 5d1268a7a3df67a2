/**
 * Port forwards with real packets (issue 13), `kvmnftd apply` with a config
 * that forwards tcp 2222 -> guest:22 (from two subnets) and udp 5353 -> guest:
 *
 *   guest  (192.168.122.50)  ┐
 *   guest2 (192.168.122.60)  ┴─ virbr0 (192.168.122.1/24)   [host: the article's ruleset]
 *                               eth0 198.51.100.1/24 ══ wan  198.51.100.2 (inside `from`)
 *                               eth1 203.0.113.1/24  ══ wan2 203.0.113.2  (outside `from`)
 *
 * The wan has no route to the guest subnet until the test adds one to try to
 * reach the guest directly.
 *
 * Then the same forward through a real libvirt 9 (the libvirt lab, iptables
 * backend: libvirt's own LIBVIRT_FWI) with `kvmnftd run`: the tests of
 * forward-lab.ts, which debian13.test.ts runs on libvirt 11's two backends.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  Lab,
  allRules,
  nftJson,
  nftLoadFile,
  nsRun,
  nsRunOk,
  ruleHas,
  rulePackets,
  tcpProbe,
} from '../helpers/netns.js';
import { nsConnects as connects } from '../helpers/connects.js';
import { cliContext, describeRun, fixture, runCli, useNetnsLab } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';
import { adminRules, foreignTablesText } from './daemon-harness.js';
import { forwardThroughLibvirt, libvirtTablesWithForwards } from './forward-lab.js';
import { useLibvirtLab } from './libvirt-lab.js';

const ADMIN = fixture('admin-ruleset.nft');
const DEFAULT_XML = fixture('default.xml');
const HOST_WAN = '198.51.100.1';
const WAN = '198.51.100.2';
const HOST_WAN2 = '203.0.113.1';
const WAN2 = '203.0.113.2';
const GW = '192.168.122.1';
const GUEST = '192.168.122.50';
const GUEST2 = '192.168.122.60';

const CONFIG = `
[[port_forward]]
network = "default"
proto = "tcp"
host_port = 2222
to = "${GUEST}"
to_port = 22
from = ["198.51.100.0/24", "192.168.122.0/24"]

[[port_forward]]
network = "default"
proto = "udp"
host_port = 5353
to = "${GUEST}"
`;

interface Topology {
  host: string;
  wan: string;
  wan2: string;
  guest: string;
  guest2: string;
  /** `kvmnftd apply` again: what the daemon's next pass does. */
  apply: () => Promise<void>;
}

/** `prepare` runs in the host after the admin's ruleset is loaded, before `kvmnftd apply`. */
async function buildTopology(l: Lab, prepare?: (host: string) => Promise<void>): Promise<Topology> {
  const [host, wan, wan2, guest, guest2] = await Promise.all(
    ['host', 'wan', 'wan2', 'guest', 'guest2'].map((r) => l.netns(r)),
  );
  await l.veth(host!, 'eth0', wan!, 'eth0');
  await l.addr(host!, 'eth0', `${HOST_WAN}/24`);
  await l.addr(wan!, 'eth0', `${WAN}/24`);
  await l.veth(host!, 'eth1', wan2!, 'eth0');
  await l.addr(host!, 'eth1', `${HOST_WAN2}/24`);
  await l.addr(wan2!, 'eth0', `${WAN2}/24`);
  await l.bridge(host!, 'virbr0');
  await l.addr(host!, 'virbr0', `${GW}/24`);
  for (const [ns, vnet, addr] of [
    [guest!, 'vnet0', GUEST],
    [guest2!, 'vnet1', GUEST2],
  ] as const) {
    await l.veth(host!, vnet, ns, 'eth0');
    await l.enslave(host!, vnet, 'virbr0');
    await l.addr(ns, 'eth0', `${addr}/24`);
    await l.route(ns, 'default', GW);
  }
  await nftLoadFile(host!, ADMIN);
  await prepare?.(host!);
  const ctx = await cliContext(l, CONFIG);
  const apply = async (): Promise<void> => {
    const r = await runCli(host!, ['apply', '--from-xml', DEFAULT_XML, '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
    expect(r.exitCode, describeRun(r)).toBe(0);
  };
  await apply();
  return { host: host!, wan: wan!, wan2: wan2!, guest: guest!, guest2: guest2!, apply };
}

// ---- UDP: a server that answers and reports its peers, a client that waits for the answer ----

const UDP_SERVER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => { process.stdout.write(JSON.stringify({ peer: r.address }) + '\\n'); s.send('pong', r.port, r.address); });
s.bind(Number(process.argv[2]), process.argv[1], () => process.stdout.write('{"listening":true}\\n'));
process.on('SIGTERM', () => process.exit(0));
`;
const UDP_CLIENT = `
const s = require('node:dgram').createSocket('udp4');
const t = setTimeout(() => { process.stdout.write('{"ok":false}\\n'); process.exit(0); }, Number(process.argv[3]));
s.on('message', (m) => { clearTimeout(t); process.stdout.write(JSON.stringify({ ok: true, data: String(m) }) + '\\n'); process.exit(0); });
s.send('ping', Number(process.argv[2]), process.argv[1]);
`;

async function udpServer(l: Lab, ns: string, host: string, port: number): Promise<{ peers: string[] }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', UDP_SERVER, host, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  l.defer(`stop udp server in ${ns}`, () => {
    child.kill('SIGTERM');
  });
  const state = { peers: [] as string[], listening: false };
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    for (const line of chunk.split('\n').filter(Boolean)) {
      const ev = JSON.parse(line) as { peer?: string; listening?: boolean };
      if (ev.listening) state.listening = true;
      if (ev.peer) state.peers.push(ev.peer);
    }
  });
  await waitUntil(`udp server in ${ns}`, 10_000, () => state.listening);
  return state;
}

async function udpAnswers(from: string, host: string, port: number): Promise<void> {
  await waitUntil(`a UDP answer from ${host}:${port} to ${from}`, 15_000, async () => {
    const r = await nsRun(from, process.execPath, ['-e', UDP_CLIENT, host, String(port), '1000']);
    return (JSON.parse(r.stdout.trim() || '{}') as { ok?: boolean }).ok === true;
  });
}

/** Packets counted by the forward accept in kvmnftd_forward (the rule matching `ct status`). */
async function acceptPackets(host: string): Promise<number> {
  const rules = allRules(await nftJson(host)).filter(
    (r) => r.chain === 'kvmnftd_forward' && JSON.stringify(r.expr).includes('"status"'),
  );
  expect(rules.length, 'the forward accepts are in kvmnftd_forward').toBe(2);
  return rules.reduce((n, r) => n + rulePackets(r), 0);
}

describe('port forwards: real packets through a strict host firewall', () => {
  const theLab = useNetnsLab();

  it('forwards from outside without SNAT (TCP and UDP), from the host itself, and hairpins a guest', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    const sshd = await l.tcpListener(t.guest, GUEST, 22);
    const udp = await udpServer(l, t.guest, GUEST, 5353);

    // A wan client: the guest sees the client's own address (DNAT, no SNAT), and the reply flows.
    await connects(t.wan, HOST_WAN, 2222);
    expect(sshd.peers).toContain(WAN);
    await udpAnswers(t.wan, HOST_WAN, 5353);
    expect(udp.peers).toContain(WAN);

    // The host itself, to its own uplink address (output DNAT).
    await connects(t.host, HOST_WAN, 2222);
    expect(sshd.peers).toContain(HOST_WAN);

    // Hairpin: a second guest reaches the host's address; the reply comes back through the host.
    await connects(t.guest2, HOST_WAN, 2222);
    expect(sshd.peers, `hairpin masquerades to the bridge address: ${sshd.peers.join(' ')}`).toContain(GW);
    expect(sshd.peers).not.toContain(GUEST2);

    // Every rule of the forward counted.
    const pf = allRules(await nftJson(t.host)).filter((r) => r.table === 'kvmnftd' && r.chain.startsWith('pf_'));
    for (const chain of ['pf_prerouting', 'pf_output', 'pf_postrouting'])
      expect(
        pf.filter((r) => r.chain === chain && ruleHas(r, 'counter')).reduce((n, r) => n + rulePackets(r), 0),
        `${chain} counted`,
      ).toBeGreaterThan(0);
    expect(await acceptPackets(t.host)).toBeGreaterThan(0);
  });

  it('drops a source outside `from`, keeps the guest closed to direct routing, accepts only DNATed packets', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    const sshd = await l.tcpListener(t.guest, GUEST, 22);
    // Control: the forward works from inside `from`.
    await connects(t.wan, HOST_WAN, 2222);
    const before = await acceptPackets(t.host);

    // wan2 is outside `from`: not translated, so it hits the host's input policy drop.
    const outside = await tcpProbe(t.wan2, HOST_WAN2, 2222, 2_000);
    expect(outside.ok, JSON.stringify(outside)).toBe(false);
    expect(sshd.peers).not.toContain(WAN2);

    // A wan that routes to the guest subnet directly: same guest, same port, but not DNATed.
    await l.route(t.wan, '192.168.122.0/24', HOST_WAN);
    const direct = await tcpProbe(t.wan, GUEST, 22, 2_000);
    expect(direct.ok, `direct routing reached the guest: ${JSON.stringify(direct)}`).toBe(false);
    expect(await acceptPackets(t.host), 'the forward accept took a packet that was not DNATed').toBe(before);
  });

  it("passes libvirt's own reject (iptables LIBVIRT_FWI), and is put first again after a net-start", async () => {
    const l = theLab();
    // libvirt 9's iptables backend, as net-start writes it for a NAT network (measured: FACTS.md).
    const iptables = (host: string, ...args: string[]) => nsRunOk(host, 'iptables-nft', args);
    const t = await buildTopology(l, async (host) => {
      await iptables(host, '-N', 'LIBVIRT_FWI');
      await iptables(host, '-A', 'FORWARD', '-j', 'LIBVIRT_FWI');
      await iptables(
        host,
        ...'-A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack'.split(' '),
        ...'--ctstate RELATED,ESTABLISHED -j ACCEPT'.split(' '),
      );
      await iptables(host, ...'-A LIBVIRT_FWI -o virbr0 -j REJECT'.split(' '));
    });
    const sshd = await l.tcpListener(t.guest, GUEST, 22);
    const MARK_ACCEPT = '-A LIBVIRT_FWI -m mark --mark 0x2000/0x2000 -m comment --comment kvmnftd -j ACCEPT';
    const firstRule = async (): Promise<string> => {
      const r = await iptables(t.host, '-S', 'LIBVIRT_FWI');
      expect(r.stderr, 'iptables-nft reads the table').toBe('');
      return r.stdout.split('\n')[1]!;
    };

    expect(await firstRule()).toBe(MARK_ACCEPT);
    await connects(t.wan, HOST_WAN, 2222);
    expect(sshd.peers).toContain(WAN);

    // net-start inserts libvirt's rules at the top again: the forward is rejected...
    await iptables(t.host, ...'-I LIBVIRT_FWI 1 -o virbr0 -j REJECT'.split(' '));
    const rejected = await tcpProbe(t.wan, HOST_WAN, 2222, 2_000);
    expect(rejected.ok, JSON.stringify(rejected)).toBe(false);
    // ...until the next pass puts the accept first again (and keeps only one).
    await t.apply();
    expect(await firstRule()).toBe(MARK_ACCEPT);
    const save = await iptables(t.host, '-S', 'LIBVIRT_FWI');
    expect(save.stdout.split('\n').filter((line) => line === MARK_ACCEPT)).toHaveLength(1);
    await connects(t.wan, HOST_WAN, 2222);
  });

  it('forwards IPv6 to a guest of a route network, without SNAT', async () => {
    const l = theLab();
    const [host, wan, guest] = await Promise.all(['host', 'wan', 'guest'].map((r) => l.netns(r)));
    const addr6 = (ns: string, dev: string, cidr: string) =>
      nsRunOk(ns, 'ip', ['-6', 'addr', 'add', cidr, 'dev', dev, 'nodad']);
    await l.veth(host!, 'eth0', wan!, 'eth0');
    await addr6(host!, 'eth0', '2001:db8:1::1/64');
    await addr6(wan!, 'eth0', '2001:db8:1::2/64');
    await l.bridge(host!, 'virbr6');
    await addr6(host!, 'virbr6', '2001:db8:ca2:2::1/64');
    await l.veth(host!, 'vnet0', guest!, 'eth0');
    await l.enslave(host!, 'vnet0', 'virbr6');
    await addr6(guest!, 'eth0', '2001:db8:ca2:2::100/64');
    await nsRunOk(guest!, 'ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8:ca2:2::1']);
    await nftLoadFile(host!, ADMIN);
    // The admin's own input must let neighbour discovery in on the uplink (the article's ruleset does not).
    await nsRunOk(host!, 'nft', [
      'insert',
      'rule',
      'inet',
      'filter',
      'input',
      'icmpv6',
      'type',
      '{',
      'nd-neighbor-solicit,',
      'nd-neighbor-advert',
      '}',
      'accept',
    ]);
    await l.sysctl(host!, 'net.ipv6.conf.all.forwarding', '1');
    const ctx = await cliContext(
      l,
      '[[port_forward]]\nnetwork = "v6route"\nproto = "tcp"\nhost_port = 2222\n' +
        'to = "2001:db8:ca2:2::100"\nto_port = 22\n',
    );
    const xml = join(ctx.dir, 'v6route.xml');
    await writeFile(
      xml,
      "<network><name>v6route</name><forward mode='route'/><bridge name='virbr6'/>" +
        "<ip family='ipv6' address='2001:db8:ca2:2::1' prefix='64'/></network>",
    );
    const r = await runCli(host!, ['apply', '--from-xml', xml, '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
    expect(r.exitCode, describeRun(r)).toBe(0);
    const sshd = await l.tcpListener(guest!, '2001:db8:ca2:2::100', 22);
    await connects(wan!, '2001:db8:1::1', 2222);
    expect(sshd.peers).toContain('2001:db8:1::2');
  });
});

describe("port forwards through a real libvirt 9 (iptables backend: libvirt's own LIBVIRT_FWI)", () => {
  const f = useLibvirtLab({ tag: 'pf-libvirt9', lab: { defaultNetwork: 'start' } });
  let libvirt0 = '';
  let admin0 = '';
  beforeAll(async () => {
    libvirt0 = await foreignTablesText(f.lab);
    admin0 = await adminRules(f.lab);
  });
  const opts = {
    backend: 'iptables',
    events: 'dbus',
    libvirt0: () => libvirt0,
    admin0: () => admin0,
    tag: 'libvirt 9',
  } as const;
  libvirtTablesWithForwards(f, opts);
  forwardThroughLibvirt(f, opts);
});
