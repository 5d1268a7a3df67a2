/**
 * Per-network policy with real packets (issue 14), `kvmnftd apply` with [networks.<name>]:
 *
 *   guest  (192.168.122.50, fd00:122::50) ┐
 *   guest2 (192.168.122.60, fd00:122::60) ┴─ virbr0 (nat; 192.168.122.1/24, fd00:122::1/64: IPv6 routed)
 *   guest3 (10.10.10.50)                   ── virbr1 (route; 10.10.10.1/24), the same host
 *                                             eth0 192.0.2.1/24, 2001:db8:2::1/64 ══ wan .2 / ::2
 *
 * The host has a strict ruleset without any ssh accept (input and forward policy drop). The wan routes
 * fd00:122::/64 back to the host (IPv6 in a NAT network is routed, as libvirt does).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Lab, allRules, nftJson, nftLoadFile, nsRun, nsRunOk, rulePackets } from '../helpers/netns.js';
import { nsBlocked as blocked, nsConnects as connects } from '../helpers/connects.js';
import { kmsgLines, newKmsgLines, useNetnsKernelLog } from '../helpers/kmsg.js';
import { cliContext, describeRun, runCli, useNetnsLab, type CliResult } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';

const NET = `pol${process.pid}`;
const PREFIX = `kvmnftd ${NET} drop: `;
const GW = '192.168.122.1';
const GW6 = 'fd00:122::1';
const GUEST = '192.168.122.50';
const GUEST6 = 'fd00:122::50';
const GUEST2 = '192.168.122.60';
const ROUTED_GW = '10.10.10.1';
const GUEST3 = '10.10.10.50';
const HOST_WAN = '192.0.2.1';
const WAN = '192.0.2.2';
const HOST_WAN6 = '2001:db8:2::1';
const WAN6 = '2001:db8:2::2';
const ALLOWED = 8443;
const DENIED = 8444;

const ADMIN = `flush ruleset
table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept; iifname "lo" accept; meta l4proto ipv6-icmp accept;
  }
  chain forward { type filter hook forward priority 0; policy drop; }
  chain output { type filter hook output priority 0; policy accept; }
}
`;

const NAT_XML = `<network>
  <name>${NET}</name>
  <forward mode='nat'/>
  <bridge name='virbr0'/>
  <ip address='${GW}' netmask='255.255.255.0'/>
  <ip family='ipv6' address='${GW6}' prefix='64'/>
</network>
`;

const ROUTED_XML = `<network>
  <name>routed${process.pid}</name>
  <forward mode='route'/>
  <bridge name='virbr1'/>
  <ip address='${ROUTED_GW}' netmask='255.255.255.0'/>
</network>
`;

const theLab = useNetnsLab();

interface Topology {
  host: string;
  wan: string;
  guest: string;
  guest2: string;
  guest3: string;
  apply: (config: string) => Promise<void>;
  /** `kvmnftd apply` with that config, whatever its outcome. */
  tryApply: (config: string) => Promise<CliResult>;
  /** `kvmnftd doctor --json` with the config last applied. */
  doctor: () => Promise<CliResult>;
}

async function addr6(ns: string, dev: string, cidr: string): Promise<void> {
  await nsRunOk(ns, 'ip', ['-6', 'addr', 'add', cidr, 'dev', dev, 'nodad']);
}

async function buildTopology(l: Lab): Promise<Topology> {
  const [host, wan, guest, guest2, guest3] = await Promise.all(
    ['host', 'wan', 'guest', 'guest2', 'guest3'].map((r) => l.netns(r)),
  );
  await l.veth(host!, 'eth0', wan!, 'eth0');
  await l.addr(host!, 'eth0', `${HOST_WAN}/24`);
  await l.addr(wan!, 'eth0', `${WAN}/24`);
  await addr6(host!, 'eth0', `${HOST_WAN6}/64`);
  await addr6(wan!, 'eth0', `${WAN6}/64`);
  await nsRunOk(wan!, 'ip', ['-6', 'route', 'add', 'fd00:122::/64', 'via', HOST_WAN6]);
  await l.route(wan!, '10.10.10.0/24', HOST_WAN); // the routed network's subnet, not masqueraded
  await l.bridge(host!, 'virbr0');
  await l.addr(host!, 'virbr0', `${GW}/24`);
  await addr6(host!, 'virbr0', `${GW6}/64`);
  await l.bridge(host!, 'virbr1');
  await l.addr(host!, 'virbr1', `${ROUTED_GW}/24`);
  for (const [ns, vnet, br, a, a6, gw] of [
    [guest!, 'vnet0', 'virbr0', GUEST, GUEST6, GW],
    [guest2!, 'vnet1', 'virbr0', GUEST2, 'fd00:122::60', GW],
    [guest3!, 'vnet2', 'virbr1', GUEST3, undefined, ROUTED_GW],
  ] as const) {
    await l.veth(host!, vnet, ns, 'eth0');
    await l.enslave(host!, vnet, br);
    await l.addr(ns, 'eth0', `${a}/24`);
    await l.route(ns, 'default', gw);
    if (a6) {
      await addr6(ns, 'eth0', `${a6}/64`);
      await nsRunOk(ns, 'ip', ['-6', 'route', 'add', 'default', 'via', GW6]);
    }
  }
  const ctx = await cliContext(l, '');
  const admin = join(ctx.dir, 'admin.nft');
  const natXml = join(ctx.dir, 'nat.xml');
  const routedXml = join(ctx.dir, 'routed.xml');
  await writeFile(admin, ADMIN);
  await writeFile(natXml, NAT_XML);
  await writeFile(routedXml, ROUTED_XML);
  await nftLoadFile(host!, admin);
  // kvmnftd never turns IPv6 forwarding on (it warns): the host's admin does.
  await l.sysctl(host!, 'net.ipv6.conf.all.forwarding', '1');
  const tryApply = async (config: string) => {
    await writeFile(ctx.configFile, config);
    return runCli(host!, ['apply', '--from-xml', natXml, '--from-xml', routedXml, '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
  };
  const apply = async (config: string): Promise<void> => {
    const r = await tryApply(config);
    expect(r.exitCode, describeRun(r)).toBe(0);
    // The planner's convergence: the plan right after apply is empty.
    const p = await runCli(host!, ['plan', '--from-xml', natXml, '--from-xml', routedXml, '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
    expect(
      p.stdout.split('\n').filter((x) => x !== '' && !x.startsWith('#')),
      describeRun(p),
    ).toEqual([]);
  };
  const doctor = () =>
    runCli(host!, ['doctor', '--json', '--from-xml', natXml, '--from-xml', routedXml, '--config', ctx.configFile], {
      runtimeDir: ctx.runtimeDir,
    });
  return { host: host!, wan: wan!, guest: guest!, guest2: guest2!, guest3: guest3!, apply, tryApply, doctor };
}

describe('per-network policy with real packets', () => {
  it('host_services: tcp/22 on the host is reachable from the guest, tcp/23 is not', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    await l.tcpListener(t.host, GW, 22);
    await l.tcpListener(t.host, GW, 23);
    await t.apply(`[networks.${NET}]\nhost_services = ["tcp/22", "udp/5353"]\n`);
    await connects(t.guest, GW, 22);
    await blocked(t.guest, GW, 23);
  });

  it('egress: the allowed destination and port work, everything else is dropped, IPv4 and IPv6', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    for (const [a, p] of [
      [WAN, ALLOWED],
      [WAN, DENIED],
      [WAN6, ALLOWED],
      [WAN6, DENIED],
      [GUEST3, ALLOWED],
    ] as const)
      await l.tcpListener(a === GUEST3 ? t.guest3 : t.wan, a, p);
    // Without egress: everything goes out (the control).
    await t.apply('');
    await connects(t.guest, WAN, DENIED);
    await connects(t.guest, GUEST3, ALLOWED);
    await connects(t.guest, WAN6, DENIED);

    // A port forward into the guest: the guest's replies are `ct direction reply`, never egress.
    await l.tcpListener(t.guest, GUEST, 7000);
    const forward = `[[port_forward]]\nnetwork = "${NET}"\nproto = "tcp"\nhost_port = 2222\nto = "${GUEST}"\nto_port = 7000\n`;
    await t.apply(`${forward}[networks.${NET}]\negress = ["${WAN}:tcp/${ALLOWED}", "[${WAN6}]:tcp/${ALLOWED}"]\n`);
    await connects(t.wan, HOST_WAN, 2222);
    await connects(t.guest, WAN, ALLOWED); // replies come back: the greeting is read
    await connects(t.guest, WAN6, ALLOWED);
    await blocked(t.guest, WAN, DENIED);
    await blocked(t.guest, WAN6, DENIED);
    // The routed network on the same host accepts everything into its subnet: egress comes first.
    await blocked(t.guest, GUEST3, ALLOWED);
    // guest3's network has no egress: it still reaches the wan.
    await connects(t.guest3, WAN, DENIED);

    const rs = await nftJson(t.host);
    const drops = allRules(rs).filter(
      (r) => r.chain === 'kvmnftd_forward' && JSON.stringify(r.expr).includes('"drop"'),
    );
    expect(drops.length).toBe(3); // untracked, then one per family
    expect(drops.reduce((n, r) => n + rulePackets(r), 0)).toBeGreaterThan(0);
  });

  it('egress: a tightened list cuts a flow already open (every packet the guest sends is evaluated)', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    await nsRunOk(t.wan, 'nft', [
      'add table inet c; add chain inet c i { type filter hook input priority 0; }; add rule inet c i udp dport 7777 counter',
    ]);
    const arrived = async (): Promise<number> => allRules(await nftJson(t.wan)).reduce((n, r) => n + rulePackets(r), 0);
    const dropped = async (): Promise<number> =>
      allRules(await nftJson(t.host))
        .filter((r) => r.chain === 'kvmnftd_forward' && JSON.stringify(r.expr).includes('"drop"'))
        .reduce((n, r) => n + rulePackets(r), 0);
    await t.apply('');
    // One UDP flow (one source port, one conntrack entry), a packet every 10 ms.
    const sender = spawn(
      'ip',
      [
        'netns',
        'exec',
        t.guest,
        process.execPath,
        '-e',
        `const d=require('node:dgram').createSocket('udp4');d.bind(40000,()=>setInterval(()=>d.send('x',7777,'${WAN}'),10));` +
          'setTimeout(()=>process.exit(0),60000);',
      ],
      { stdio: 'ignore' },
    );
    try {
      await waitUntil('the flow to reach the wan', 15_000, async () => (await arrived()) > 5);
      await t.apply(`[networks.${NET}]\negress = ["${WAN}:tcp/${ALLOWED}"]\n`);
      const atCut = await arrived();
      // The same flow keeps sending: its packets now hit the egress drop, and none more arrive.
      await waitUntil('20 packets of the open flow dropped', 15_000, async () => (await dropped()) >= 20);
      expect(await arrived()).toBe(atCut);
    } finally {
      sender.kill('SIGKILL');
    }
  });

  it('isolate_guests: two guests on one bridge cannot reach each other, both get DHCP and reach the wan', async () => {
    const l = theLab();
    const t = await buildTopology(l);
    // This kernel has br_netfilter built in: with its bridge-nf-call-* on (each namespace's default) bridged
    // frames also pass the inet forward hook, where kvmnftd_forward drops guest to guest too. Off, as on a host
    // without br_netfilter, only kvmnftd's bridge table stands between the guests.
    for (const key of ['net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-ip6tables'])
      await l.sysctl(t.host, key, '0');
    const dir = await cliContext(l, '');
    const dnsmasq = spawn(
      'ip',
      [
        ...['netns', 'exec', t.host, 'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv'],
        ...['--port=0', '--interface=virbr0', '--bind-interfaces', '--no-ping', '--user=root'],
        '--dhcp-range=192.168.122.100,192.168.122.199,1h',
        `--dhcp-leasefile=${join(dir.dir, 'leases')}`,
        `--pid-file=${join(dir.dir, 'dnsmasq.pid')}`,
      ],
      { stdio: 'ignore' },
    );
    try {
      for (const g of [t.guest, t.guest2]) await l.tcpListener(g, '0.0.0.0', 7000);
      await l.tcpListener(t.wan, WAN, DENIED);
      await t.apply('');
      await connects(t.guest, GUEST2, 7000); // the control: guests reach each other without isolation
      await t.apply(`[networks.${NET}]\nisolate_guests = true\n`);
      await blocked(t.guest, GUEST2, 7000);
      await blocked(t.guest2, GUEST, 7000);
      // IPv6 too, and link-local: the drop is on the frame, whatever it carries.
      await blocked(t.guest, 'fd00:122::60', 7000);
      for (const g of [t.guest, t.guest2]) {
        // A DHCP exchange with the host's dnsmasq (the lease itself is not installed: -s /bin/true).
        const r = await nsRun(g, 'busybox', ['udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '5', '-s', '/bin/true'], {
          timeoutMs: 30_000,
        });
        expect(r.exitCode, `DHCP in ${g}: ${r.stdout} ${r.stderr}`).toBe(0);
        await connects(g, WAN, DENIED);
      }
      const bridgeDrops = async (): Promise<number> =>
        allRules(await nftJson(t.host))
          .filter((r) => r.family === 'bridge')
          .reduce((n, r) => n + rulePackets(r), 0);
      expect(await bridgeDrops()).toBeGreaterThan(0);

      // A guest whose tap joins the bridge before any pass names it: it reaches no guest already named.
      const late = await l.netns('guest4');
      await l.veth(t.host, 'vnet7', late, 'eth0');
      await l.enslave(t.host, 'vnet7', 'virbr0');
      await l.addr(late, 'eth0', '192.168.122.70/24');
      await l.route(late, 'default', GW);
      await l.tcpListener(late, '0.0.0.0', 7000);
      await connects(late, WAN, DENIED); // its way out works: the frames do reach the bridge
      await blocked(late, GUEST, 7000);
      await blocked(t.guest2, '192.168.122.70', 7000);
      // The next pass names it; still isolated, and the other ports' rules kept their counters.
      const kept = await bridgeDrops();
      await t.apply(`[networks.${NET}]\nisolate_guests = true\n`);
      expect(await bridgeDrops()).toBeGreaterThanOrEqual(kept);
      const ports = allRules(await nftJson(t.host))
        .filter((r) => r.family === 'bridge')
        .map((r) => JSON.stringify(r.expr).match(/"(vnet\d)"/)?.[1]);
      expect([...new Set(ports)].sort()).toEqual(['vnet0', 'vnet1', 'vnet7']);
      await blocked(late, GUEST2, 7000);
      await blocked(t.guest, '192.168.122.70', 7000);
    } finally {
      dnsmasq.kill('SIGTERM');
    }
  });

  describe('log_drops', () => {
    useNetnsKernelLog();

    it('logs the dropped flow with the prefix, rate-limited under a flood', async () => {
      const l = theLab();
      const t = await buildTopology(l);
      await l.tcpListener(t.wan, WAN, DENIED);
      await t.apply(`[networks.${NET}]\negress = ["tcp/${ALLOWED}"]\nlog_drops = true\n`);
      const before = kmsgLines(PREFIX).length;
      await blocked(t.guest, WAN, DENIED);
      const lines = await newKmsgLines(PREFIX, before);
      expect(
        lines.some((x) => x.includes(`DST=${WAN}`) && x.includes(`DPT=${DENIED}`)),
        lines.join('\n'),
      ).toBe(true);
      // doctor names the policy and the destination it dropped, from the same kernel log.
      const d = await t.doctor();
      const titles = (JSON.parse(d.stdout) as { findings: Array<{ title: string }> }).findings.map((f) => f.title);
      expect(titles, describeRun(d)).toContainEqual(
        expect.stringMatching(
          new RegExp(
            `^network ${NET}: egress allows only tcp/${ALLOWED}; .*${WAN.replace(/\./g, '\\.')}:tcp/${DENIED}`,
          ),
        ),
      );

      // A 2 s flood of 10,000 UDP packets to a dropped port: at most 5/s + a burst of 10 per rule are logged.
      // Paced to end within 1.8 s after it starts, so that the refill over the flood stays under 2 s.
      const dropped = async (): Promise<number> =>
        allRules(await nftJson(t.host))
          .filter((r) => r.chain === 'kvmnftd_forward' && JSON.stringify(r.expr).includes('"drop"'))
          .reduce((n, x) => n + rulePackets(x), 0);
      const droppedBefore = await dropped();
      const start = kmsgLines(PREFIX).length;
      const flood = `const d=require('node:dgram').createSocket('udp4');let n=0,ok=0,done=0;const t0=Date.now();
        const end=()=>d.close(()=>console.log(JSON.stringify({ok,ms:Date.now()-t0})));
        const sent=(e)=>{if(!e)ok++;if(++done===10000)end();};
        const step=()=>{for(let i=0;i<50&&n<10000;i++,n++)d.send('x',9999,'${WAN}',sent);
        if(n<10000)setTimeout(step,Math.max(0,(n/10000)*1800-(Date.now()-t0)));};step();`;
      const r = await nsRunOk(t.guest, process.execPath, ['-e', flood], { timeoutMs: 30_000 });
      const { ok, ms } = JSON.parse(r.stdout.trim()) as { ok: number; ms: number };
      const logged = kmsgLines(PREFIX)
        .slice(start)
        .filter((x) => x.includes('DPT=9999')).length;
      const counted = (await dropped()) - droppedBefore;
      console.log(
        `log_drops: a flood of 10,000 UDP packets (${ok} sent) in ${ms} ms: ${counted} dropped and counted, ` +
          `${logged} kernel log lines`,
      );
      expect(ok).toBeGreaterThan(9_000);
      expect(counted).toBeGreaterThanOrEqual(ok * 0.9);
      expect(logged).toBeGreaterThanOrEqual(1);
      expect(logged).toBeLessThanOrEqual(20);
    });
  });
});
