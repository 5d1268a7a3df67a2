/**
 * Docker and ufw on the same host as libvirt and kvmnftd (issue 12), with the
 * real components and real packets: Debian's dockerd (test/lab/docker.ts) and
 * ufw (test/lab/ufw.ts) inside the libvirt lab's namespaces, on Debian 12
 * (libvirt 9, iptables backend) and Debian 13 (libvirt 11, both backends;
 * test/lab/trixie-root.sh), each with Docker's FORWARD DROP, with ufw, and
 * with both: nine cases, each in a fresh lab (independent: a FAIL is that case's own).
 *
 * The problem (column "without"): Docker's `iptables -P FORWARD DROP` and
 * ufw's DEFAULT_FORWARD_POLICY="DROP" are a base chain `FORWARD` in
 * iptables-nft's `table ip filter` with policy drop, and an accept in
 * kvmnftd's chains (the admin's `inet filter`) cannot overrule it. With
 * `filter.foreign_chains = "report"` (kvmnftd as before the feature): libvirt 9,
 * and libvirt 11 on its iptables backend, put their own accepts into that
 * FORWARD chain and their guests keep working; libvirt 11 on its nftables
 * backend does not, and its guests are cut off.
 *
 * Then the feature (`"accept"`, the default) and, per case, with real packets:
 * DHCP and NAT out; Docker's own container (a netns on docker0) out through
 * Docker's masquerade; nothing accepted that kvmnftd's own chains would not
 * accept (new inbound to the NAT network dropped, a routed guest cannot open
 * into it, an unpublished container port stays as Docker leaves it, ufw's
 * deny incoming still holds for guests); routed inbound accepted as
 * kvmnftd_forward accepts it; guest-to-guest on one bridge with br_netfilter;
 * `kvmnftd remove` leaves the foreign chains as before; after a dockerd crash,
 * a `systemctl restart docker` (stop + start by PID), `ufw reload`, and a
 * `flush ruleset` followed by the owner re-creating its chains, kvmnftd's mark
 * accept is back and guests work; `iptables-nft-save` never warns and its
 * output restores (`iptables-nft-restore --test`).
 *
 * The file prints the matrix (case x check: ok / FAIL / - for not applicable)
 * at the end. br_netfilter is built into this machine's kernel (so always
 * "loaded"); on a stock kernel dockerd loads it and the harness unloads it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';
import { forwardState, startDockerd, type Container, type Dockerd } from '../lab/docker.js';
import { HOST_WAN_ADDR, plugNetns, WAN_ADDR, type Lab, type LabNetns, type LabOptions } from '../lab/lab.js';
import { ensureTrixieRoot } from '../lab/trixie-root.js';
import { enableUfw, type Ufw } from '../lab/ufw.js';
import { networkXml } from './daemon-harness.js';
import { useLibvirtLab, type LibvirtLab } from './libvirt-lab.js';

/** The admin's drop-policy ruleset, letting Docker's docker0 through its own forward chain. */
const ADMIN_RULESET = fixture('admin-ruleset-docker.nft');
/** How long kvmnftd may take to put its mark accept back after another owner rebuilt its chains. */
const REPAIR_MS = 5000;
/** A probe that must fail waits this long for a SYN-ACK. */
const DENY_MS = 1000;

type PlatformId = 'deb12' | 'deb13-iptables' | 'deb13-nftables';
interface Platform {
  title: string;
  /** libvirt's own accepts are in iptables-nft's FORWARD chain (libvirt 9; libvirt 11 on its iptables backend). */
  libvirtInForward: boolean;
  lab: () => Promise<LabOptions>;
}

async function trixie(backend: 'nftables' | 'iptables'): Promise<LabOptions> {
  const root = await ensureTrixieRoot();
  return { root: root.path, firewallBackend: backend, defaultNetwork: 'start', ruleset: ADMIN_RULESET };
}

const PLATFORMS: Record<PlatformId, Platform> = {
  deb12: {
    title: 'Debian 12, libvirt 9',
    libvirtInForward: true,
    lab: () => Promise.resolve({ defaultNetwork: 'start', ruleset: ADMIN_RULESET }),
  },
  'deb13-iptables': {
    title: 'Debian 13, libvirt 11 iptables',
    libvirtInForward: true,
    lab: () => trixie('iptables'),
  },
  'deb13-nftables': {
    title: 'Debian 13, libvirt 11 nftables',
    libvirtInForward: false,
    lab: () => trixie('nftables'),
  },
};

type Firewalls = 'docker' | 'ufw' | 'docker+ufw';

// ---------------------------------------------------------------------------
// the matrix: case -> check -> ok / FAIL (a check that does not apply is not run: "-")

const CHECKS = [
  'drop policy',
  'without: as libvirt alone',
  'DHCP',
  'NAT out',
  'docker0 out',
  'NAT in dropped',
  'routed in',
  'routed->NAT dropped',
  'container port',
  'ufw deny in',
  'guest-guest br_nf',
  'remove restores',
  'dockerd crash',
  'docker restart',
  'ufw reload',
  'flush + recreate',
  'save clean',
] as const;
type Check = (typeof CHECKS)[number];
const MATRIX = new Map<string, Map<Check, string>>();
const NOTES: string[] = [];

function cell(caseId: string, check: Check, value: string): void {
  let row = MATRIX.get(caseId);
  if (!row) MATRIX.set(caseId, (row = new Map<Check, string>()));
  row.set(check, value);
}

afterAll(() => {
  const head = `| case | ${CHECKS.join(' | ')} |`;
  const rule = `|---|${CHECKS.map(() => '---').join('|')}|`;
  const rows = [...MATRIX].map(([id, row]) => `| ${id} | ${CHECKS.map((c) => row.get(c) ?? '-').join(' | ')} |`);
  console.log(`foreign chains matrix (issue 12):\n${[head, rule, ...rows].join('\n')}\n${NOTES.join('\n')}`);
});

// ---------------------------------------------------------------------------
// helpers

let nextPort = 9400;

interface ProbeResult {
  ok: boolean;
  peer?: string;
  output: string;
}

/** A NEW TCP connection from `from` to a fresh listener in `to` at `host` (on a fresh port unless `port`). */
async function connect(
  lab: Lab,
  from: 'guest' | 'wan' | 'host' | LabNetns,
  to: 'guest' | 'wan' | 'host' | LabNetns,
  host: string,
  timeoutMs = 3000,
  port = ++nextPort,
): Promise<ProbeResult> {
  const listener = await lab.tcpListen(port, { in: to });
  try {
    const probe = await lab.tcpProbe(host, port, timeoutMs, { in: from });
    if (!probe.ok) return { ok: false, output: probe.output };
    return { ok: true, peer: await listener.waitForPeer(5000, 0), output: probe.output };
  } finally {
    await listener.close();
  }
}

/** The guest (lab's own) reaches the wan, new flows for up to `retryMs`; the peer address the wan saw. */
async function guestOut(lab: Lab, retryMs = 0, timeoutMs = 3000): Promise<string | undefined> {
  let last: ProbeResult = { ok: false, output: '' };
  await waitUntil(
    'the guest to reach the wan',
    retryMs,
    async () => (last = await connect(lab, 'guest', 'wan', WAN_ADDR, timeoutMs)).ok,
    { intervalMs: 100 },
  ).catch(() => undefined);
  return last.peer;
}

/** `iptables-nft-save` and `ip6tables-nft-save` in the lab: the text, and any warning either printed. */
async function iptablesSave(lab: Lab): Promise<{ v4: string; v6: string; warnings: string[] }> {
  const out = { v4: '', v6: '', warnings: [] as string[] };
  for (const [bin, key] of [
    ['iptables-nft-save', 'v4'],
    ['ip6tables-nft-save', 'v6'],
  ] as const) {
    const r = await lab.exec(bin, [], { reject: false });
    out[key] = r.stdout;
    const bad = [
      ...(r.exitCode !== 0 ? [`exit ${r.exitCode}`] : []),
      ...r.stderr.split('\n').filter((l) => l.trim() !== ''),
      ...r.stdout.split('\n').filter((l) => /warning|incompatible|unsupported/i.test(l)),
    ];
    for (const b of bad) out.warnings.push(`${bin}: ${b}`);
  }
  return out;
}

/** iptables-nft-save output without counters and comments-with-dates, for comparison. */
function withoutCounters(save: string): string {
  return save
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

/** The chains (`ip CHAIN` / `ip6 CHAIN`) that hold kvmnftd's mark accept, as iptables-nft reads them. */
function markAccepts(save: { v4: string; v6: string }): string[] {
  const out: string[] = [];
  for (const [fam, text] of [
    ['ip', save.v4],
    ['ip6', save.v6],
  ] as const) {
    for (const l of text.split('\n')) {
      const m = /^-A (\S+) -m mark --mark (0x[0-9a-f]+)\/\2 -m comment --comment kvmnftd -j ACCEPT$/.exec(l);
      if (m) out.push(`${fam} ${m[1]}`);
    }
  }
  return out.sort();
}

// ---------------------------------------------------------------------------
// the cases

const CASES: Array<[PlatformId, Firewalls]> = (['deb12', 'deb13-iptables', 'deb13-nftables'] as const).flatMap((p) =>
  (['docker', 'ufw', 'docker+ufw'] as const).map((fw): [PlatformId, Firewalls] => [p, fw]),
);

/**
 * kvmnftd's config in the matrix: `foreign_chains` as the step needs it, and
 * `forwarding.manage_ipv4 = false`: the test itself sets ip_forward to 0 before
 * it (re)starts dockerd, so that Docker sets FORWARD DROP; kvmnftd switching it
 * back on in between (any pass does, by default) would race with dockerd.
 */
const config = (mode: 'accept' | 'report'): string =>
  `[filter]\nforeign_chains = "${mode}"\n[forwarding]\nmanage_ipv4 = false\n`;

describe.each(CASES)('%s with %s', (platformId, firewalls) => {
  const platform = PLATFORMS[platformId];
  const caseId = `${platformId} ${firewalls}`;
  const withDocker = firewalls !== 'ufw';
  const withUfw = firewalls !== 'docker';
  let t0 = 0;
  beforeAll(() => void (t0 = Date.now()));
  const f: LibvirtLab = useLibvirtLab({
    tag: `foreign-${platformId}-${firewalls.replace('+', '-')}`,
    lab: platform.lab,
    setupMs: 15 * 60_000,
  });
  let docker: Dockerd | undefined;
  let ufw: Ufw | undefined;
  let ctr: Container | undefined;
  let g2: LabNetns;
  let rg: LabNetns;
  let guestAddr = '';
  const saveWarnings: string[] = [];
  const repairs: string[] = [];
  /** Verdicts with the feature off (foreign_chains = "report"). */
  const without = { out: undefined as string | undefined, containerPort: false, save: { v4: '', v6: '' } };
  const phases: Record<string, number> = {};

  const setMode = async (mode: 'accept' | 'report'): Promise<void> => {
    f.writeConfig(config(mode));
    const r = await f.cli('reload');
    expect(r.exitCode, r.stderr).toBe(0);
    await f.converged();
  };

  beforeAll(async () => {
    const lab = f.lab;
    phases['lab'] = Date.now() - t0;
    // A routed network beside the NAT one, a second guest on virbr0, a guest on the routed network.
    await f.defineNetwork('lab2', networkXml('lab2', 'virbr1', 1, 'route'));
    await lab.virsh('net-start', 'lab2');
    g2 = await plugNetns(lab, 'g2', 'vguest2', 'virbr0', '192.168.122.60/24', '192.168.122.1');
    rg = await plugNetns(lab, 'rg', 'vrguest', 'virbr1', '10.77.1.10/24', '10.77.1.1');
    // The wan may try to reach both subnets (it has no route to them by default).
    for (const net of ['192.168.122.0/24', '10.77.1.0/24'])
      await lab.inWan('ip', ['route', 'add', net, 'via', HOST_WAN_ADDR]);
    f.writeConfig(config('report'));
    await f.startDaemon('auto');
    await f.converged();
    // Wiring controls, before any foreign firewall: what the checks below deny must be the firewall's doing.
    guestAddr = await lab.dhcp();
    expect(await guestOut(lab)).toBe(HOST_WAN_ADDR);
    expect((await connect(lab, 'guest', g2, '192.168.122.60')).ok).toBe(true);
    expect((await connect(lab, 'wan', rg, '10.77.1.10')).ok).toBe(true);
    // The admin's nft input accepts tcp 22 (test/fixtures/admin-ruleset-docker.nft).
    expect((await connect(lab, 'guest', 'host', '192.168.122.1', 3000, 22)).ok).toBe(true);
    phases['setup'] = Date.now() - t0 - phases['lab'];
  }, 120_000);

  afterAll(async () => {
    phases['checks'] = Date.now() - t0 - (phases['lab'] ?? 0) - (phases['setup'] ?? 0);
    const c = await docker?.dispose();
    if (c && c.errors.length > 0) NOTES.push(`${caseId}: dockerd cleanup errors: ${c.errors.join('; ')}`);
    await ufw?.dispose().catch((e: Error) => NOTES.push(`${caseId}: ufw cleanup: ${e.message}`));
    NOTES.push(
      `${caseId}: ${Object.entries(phases)
        .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`)
        .join(', ')}` +
        `${docker ? `; dockerd ${docker.version}, br_netfilter ${c?.brNetfilter ?? '?'}` : ''}` +
        `${repairs.length > 0 ? `; mark accept back after: ${repairs.join(', ')}` : ''}`,
    );
  }, 60_000);

  /** A check of the matrix: one test, its cell set to ok or FAIL; every check also runs iptables-nft-save. */
  const check = (name: Check, fn: () => Promise<void>, timeoutMs = 60_000): void => {
    it(
      name,
      async () => {
        try {
          await fn();
          const s = await iptablesSave(f.lab);
          saveWarnings.push(...s.warnings.map((w) => `${name}: ${w}`));
          cell(caseId, name, 'ok');
        } catch (e) {
          cell(caseId, name, 'FAIL');
          throw e;
        }
      },
      timeoutMs,
    );
  };

  /** After an owner rebuilt its chains: kvmnftd's mark accepts are back in `chains` (timed), and guests get out. */
  const repaired = async (what: string, chains: string[]): Promise<void> => {
    const t = Date.now();
    await waitUntil(
      `kvmnftd's mark accept back in ${chains.join(', ')} after ${what}`,
      REPAIR_MS,
      async () => {
        const have = markAccepts(await iptablesSave(f.lab));
        return chains.every((c) => have.includes(c));
      },
      { intervalMs: 20 },
    );
    repairs.push(`${what} ${Date.now() - t} ms`);
    await f.converged();
    expect(await guestOut(f.lab, REPAIR_MS)).toBe(HOST_WAN_ADDR);
  };

  const ourChains = (): string[] => [
    ...(withDocker ? ['ip DOCKER-USER'] : []),
    ...(withUfw ? ['ip ufw-before-forward', 'ip ufw-before-input'] : []),
  ];

  check('drop policy', async () => {
    const lab = f.lab;
    if (withUfw) ufw = await enableUfw(lab);
    if (withDocker) {
      docker = await startDockerd(lab);
      ctr = await docker.addContainer('ctr0', '172.17.0.2');
    }
    // Before the first guest packet of the checks: otherwise they prove nothing.
    const st = await forwardState(lab);
    expect(st.policy, st.text).toBe('DROP');
    expect(st.dockerUser).toBe(withDocker);
    const all = (await lab.exec('iptables-nft', ['-S'])).stdout;
    expect(/^-N ufw-before-forward$/m.test(all)).toBe(withUfw);
    if (withUfw) expect(all).toMatch(/^-P INPUT DROP$/m);
    // br_netfilter: bridged frames pass iptables' FORWARD (Docker loads it; built in here).
    const brNf = await lab.exec('busybox', ['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']);
    expect(brNf.stdout.trim()).toBe('1');
  });

  check('without: as libvirt alone', async () => {
    const lab = f.lab;
    // The foreign chains as their owners wrote them, for 'remove restores'.
    without.save = await iptablesSave(lab);
    expect(markAccepts(without.save)).toEqual([]);
    const [out, port] = await Promise.all([
      guestOut(lab, 0, DENY_MS),
      ctr ? connect(lab, 'guest', ctr.netns, ctr.addr, DENY_MS) : undefined,
    ]);
    without.out = out;
    without.containerPort = port?.ok ?? false;
    NOTES.push(
      `${caseId}: without the feature: guest -> wan ${without.out ?? 'cut off'}` +
        `${ctr ? `, guest -> unpublished container port ${without.containerPort ? 'open' : 'closed'}` : ''}`,
    );
    if (platform.libvirtInForward) expect(without.out).toBe(HOST_WAN_ADDR);
    else expect(without.out).toBeUndefined();
    // Now the feature.
    await setMode('accept');
  });

  check('DHCP', async () => {
    expect(await f.lab.dhcp({ tries: 6 })).toBe(guestAddr);
  });

  check('NAT out', async () => {
    expect(await guestOut(f.lab)).toBe(HOST_WAN_ADDR);
    expect(markAccepts(await iptablesSave(f.lab))).toEqual(expect.arrayContaining(ourChains()));
  });

  if (withDocker)
    check('docker0 out', async () => {
      // Docker's own traffic as Docker means it: out of docker0, masqueraded (Docker's POSTROUTING rule).
      expect((await connect(f.lab, ctr!.netns, 'wan', WAN_ADDR)).peer).toBe(HOST_WAN_ADDR);
    });

  check('NAT in dropped', async () => {
    const lab = f.lab;
    // Control: the guest's listener answers from the host (output path, no forwarding).
    expect((await connect(lab, 'host', 'guest', guestAddr)).ok).toBe(true);
    expect((await connect(lab, 'wan', 'guest', guestAddr, DENY_MS)).ok).toBe(false);
  });

  check('routed in', async () => {
    expect((await connect(f.lab, 'wan', rg, '10.77.1.10')).peer).toBe(WAN_ADDR);
  });

  check('routed->NAT dropped', async () => {
    const lab = f.lab;
    // Control: the NAT guest may open into the routed network.
    expect((await connect(lab, 'guest', rg, '10.77.1.10')).ok).toBe(true);
    expect((await connect(lab, rg, 'guest', guestAddr, DENY_MS)).ok).toBe(false);
  });

  if (withDocker)
    check('container port', async () => {
      const lab = f.lab;
      // Control: the host reaches the container's port (output path).
      expect((await connect(lab, 'host', ctr!.netns, ctr!.addr)).ok).toBe(true);
      const open = (await connect(lab, 'guest', ctr!.netns, ctr!.addr, DENY_MS)).ok;
      // kvmnftd never marks traffic into Docker's bridges: the verdict is what it was without the feature,
      // and closed where libvirt's own FORWARD accept does not open it.
      expect(open).toBe(without.containerPort);
      if (!platform.libvirtInForward) expect(open).toBe(false);
    });

  if (withUfw)
    check('ufw deny in', async () => {
      // The admin's nft input accepts tcp 22; ufw denies incoming: kvmnftd marks only dnsmasq's services.
      expect((await connect(f.lab, 'guest', 'host', '192.168.122.1', DENY_MS, 22)).ok).toBe(false);
    });

  check('guest-guest br_nf', async () => {
    expect((await connect(f.lab, 'guest', g2, '192.168.122.60')).peer).toBe(guestAddr);
    expect((await connect(f.lab, g2, 'guest', guestAddr)).peer).toBe('192.168.122.60');
  });

  check('remove restores', async () => {
    expect(markAccepts(await iptablesSave(f.lab))).toEqual(expect.arrayContaining(ourChains()));
    f.daemon.child.kill('SIGTERM');
    expect(await f.daemon.exited).toBe(0);
    const r = await f.cli('remove');
    expect(r.exitCode, r.stderr).toBe(0);
    // As their owners wrote them (saved with foreign_chains = "report"), counters aside.
    const after = await iptablesSave(f.lab);
    expect(withoutCounters(after.v4)).toBe(withoutCounters(without.save.v4));
    expect(withoutCounters(after.v6)).toBe(withoutCounters(without.save.v6));
    await f.startDaemon('auto');
    await f.converged();
    expect(await guestOut(f.lab, REPAIR_MS)).toBe(HOST_WAN_ADDR);
  });

  if (withDocker) {
    check('dockerd crash', async () => {
      await docker!.restart({ signal: 'SIGKILL' });
      await repaired('dockerd crash + start', ourChains());
      expect((await connect(f.lab, ctr!.netns, 'wan', WAN_ADDR)).peer).toBe(HOST_WAN_ADDR);
    });
    check('docker restart', async () => {
      await docker!.restart({ signal: 'SIGTERM' });
      await repaired('docker restart', ourChains());
      expect((await connect(f.lab, ctr!.netns, 'wan', WAN_ADDR)).peer).toBe(HOST_WAN_ADDR);
    });
  }

  if (withUfw)
    check('ufw reload', async () => {
      await ufw!.reload();
      await repaired('ufw reload', ourChains());
      expect((await connect(f.lab, 'guest', 'host', '192.168.122.1', DENY_MS, 22)).ok).toBe(false);
    });

  check('flush + recreate', async () => {
    const lab = f.lab;
    // The admin's `nft -f` (flush ruleset): every owner's chains are gone; kvmnftd restores its own and libvirt's.
    await lab.nft('-f', ADMIN_RULESET);
    await f.converged();
    // Then the owners re-create theirs, late: ufw reload; dockerd restarted with ip_forward at 0, so
    // that it sets FORWARD DROP again (it does only when it switches forwarding on itself).
    if (withUfw) await ufw!.reload();
    if (withDocker) await docker!.restart({ forwardingOff: true });
    const s = await forwardState(lab);
    expect(s.policy, s.text).toBe('DROP');
    await repaired('flush ruleset + re-create', ourChains());
    expect(await lab.dhcp({ tries: 6 })).toBe(guestAddr);
    if (ctr) expect((await connect(lab, ctr.netns, 'wan', WAN_ADDR)).peer).toBe(HOST_WAN_ADDR);
  });

  check('save clean', async () => {
    const s = await iptablesSave(f.lab);
    expect(saveWarnings).toEqual([]);
    // What iptables-nft-save printed restores (dockerd and ufw read and rewrite these tables with it).
    for (const [bin, text] of [
      ['iptables-nft-restore', s.v4],
      ['ip6tables-nft-restore', s.v6],
    ] as const) {
      const file = join(f.work, `${bin}.rules`);
      writeFileSync(file, text);
      const r = await f.lab.exec(bin, ['--test', file], { reject: false });
      expect(r.exitCode, `${bin} --test: ${r.stderr}`).toBe(0);
    }
  });
});
