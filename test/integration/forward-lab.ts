/**
 * Port forwards through real libvirt (issue 13), in the libvirt lab
 * (test/lab/lab.ts) with `kvmnftd run`: the forward of FORWARD_CONFIG, two
 * guests, and the tests that run it through libvirt's own rejecting chains.
 * The tests are shared by port-forward-packets.test.ts (libvirt 9, iptables
 * backend: LIBVIRT_FWI) and debian13.test.ts (libvirt 11, both backends:
 * LIBVIRT_FWI, or `libvirt_network guest_input`); bench/forward-reload.ts
 * uses the helpers.
 *
 *   wan  192.0.2.2 (+ 192.0.2.9, outside `from`) ══ eth0 192.0.2.1  [host: the admin's drop policy]
 *   guest  eth0 192.168.122.50 (beside a DHCP lease, if any) ┐
 *   guest2 eth0 192.168.122.60                                ┴─ virbr0 (libvirt's default network)
 *
 * The forward's `to` is an address (named targets are tested elsewhere).
 */
import { afterAll, expect, it } from 'vitest';
import { waitUntil } from '../helpers/wait.js';
import { onLines } from '../helpers/lines.js';
import { connects } from '../helpers/connects.js';
import {
  attachPort,
  HOST_WAN_ADDR,
  LAB_FILES,
  plugNetns,
  WAN_ADDR,
  type Lab,
  type LabNetns,
  type TcpListener,
  type TcpWhere,
} from '../lab/lab.js';
import { adminRules, foreignTablesText, LabMonitor, libvirtChainsPresent, type Daemon } from './daemon-harness.js';
import type { LibvirtLab } from './libvirt-lab.js';

export const FWD = {
  tcpPort: 2222,
  toPort: 22,
  udpPort: 5353,
  guest: '192.168.122.50',
  guest2: '192.168.122.60',
  bridgeAddress: '192.168.122.1',
  /** A second address of the wan, outside `from`. */
  outside: '192.0.2.9',
} as const;

/** Host-side name of guest2's veth (on virbr0). */
const GUEST2_PORT = 'vguest1';

/** tcp 2222 -> guest:22 from the wan's /30 (which holds the host's own address) and the guests; udp 5353. */
export const FORWARD_CONFIG = `
[[port_forward]]
network = "default"
proto = "tcp"
host_port = ${FWD.tcpPort}
to = "${FWD.guest}"
to_port = ${FWD.toPort}
from = ["192.0.2.0/30", "192.168.122.0/24"]

[[port_forward]]
network = "default"
proto = "udp"
host_port = ${FWD.udpPort}
to = "${FWD.guest}"
`;

export const NO_FORWARDS = '# defaults\n';

export type LibvirtBackend = 'iptables' | 'nftables';

export interface ChainRef {
  family: 'ip' | 'ip6';
  table: string;
  chain: string;
}

/** The chains in which libvirt rejects every new connection into a NAT bridge. */
export function rejectChains(backend: LibvirtBackend): ChainRef[] {
  return (['ip', 'ip6'] as const).map((family) =>
    backend === 'iptables'
      ? { family, table: 'filter', chain: 'LIBVIRT_FWI' }
      : { family, table: 'libvirt_network', chain: 'guest_input' },
  );
}

export const chainText = (c: ChainRef): string => `${c.family} ${c.table} ${c.chain}`;

interface JsonRule {
  family: string;
  table: string;
  chain: string;
  comment?: string;
  expr: Array<Record<string, unknown>>;
}

/** kvmnftd's mark accept: `meta mark & BIT == BIT accept comment "kvmnftd"` (no counter, as in Docker's chains). */
export function isMarkAccept(r: { comment?: string; expr: Array<Record<string, unknown>> }): boolean {
  return (
    r.comment === 'kvmnftd' &&
    r.expr.length === 2 &&
    JSON.stringify(r.expr[0]).includes('"mark"') &&
    'accept' in r.expr[1]!
  );
}

/** Per chain of `chains` that exists: is kvmnftd's mark accept its first rule, and how many copies are there. */
export async function markAcceptPlaces(lab: Lab, chains: readonly ChainRef[]): Promise<MarkAcceptPlace[]> {
  return markAcceptPlacesIn(await lab.nftJson(), chains);
}

export interface MarkAcceptPlace {
  chain: string;
  first: boolean;
  copies: number;
  rules: number;
}

/** markAcceptPlaces() of a ruleset already read (`nft -j list ruleset`). */
export function markAcceptPlacesIn(
  doc: { nftables: Array<Record<string, unknown>> },
  chains: readonly ChainRef[],
): MarkAcceptPlace[] {
  const out: MarkAcceptPlace[] = [];
  for (const c of chains) {
    const exists = doc.nftables.some((o) => {
      const ch = o['chain'] as { family?: string; table?: string; name?: string } | undefined;
      return ch?.family === c.family && ch.table === c.table && ch.name === c.chain;
    });
    if (!exists) continue;
    const rules = doc.nftables
      .map((o) => o['rule'] as JsonRule | undefined)
      .filter((r): r is JsonRule => r?.family === c.family && r.table === c.table && r.chain === c.chain);
    out.push({
      chain: chainText(c),
      first: rules[0] !== undefined && isMarkAccept(rules[0]),
      copies: rules.filter(isMarkAccept).length,
      rules: rules.length,
    });
  }
  return out;
}

/** Every existing chain of `chains` starts with exactly one mark accept (and at least one chain exists). */
export async function markAcceptsFirst(lab: Lab, chains: readonly ChainRef[]): Promise<boolean> {
  const places = await markAcceptPlaces(lab, chains);
  return places.length > 0 && places.every((p) => p.first && p.copies === 1);
}

/** Waits until every existing chain of `chains` starts with exactly one mark accept; a time-out shows `daemon`'s log tail. */
export async function waitMarkAcceptsFirst(
  lab: Lab,
  chains: readonly ChainRef[],
  timeoutMs = 10_000,
  daemon?: Daemon,
): Promise<void> {
  let last = '';
  await waitUntil(
    `kvmnftd's mark accept first, one copy, in ${chains.map(chainText).join(' and ')}`,
    timeoutMs,
    async () => {
      const places = await markAcceptPlaces(lab, chains);
      last = JSON.stringify(places);
      return places.length > 0 && places.every((p) => p.first && p.copies === 1);
    },
    {
      detail: () =>
        `${last}${
          daemon
            ? `\ndaemon log tail:\n${daemon.logs
                .slice(-20)
                .map((l) => JSON.stringify(l))
                .join('\n')}`
            : ''
        }`,
    },
  );
}

/**
 * `text` (foreignTablesText) with kvmnftd's mark accept as the first rule of
 * each of `chains` that it lists: the only change kvmnftd may make to
 * libvirt's tables while forwards are configured.
 */
export function withMarkAccepts(text: string, chains: readonly ChainRef[], bit = 0x2000): string {
  const hex = `0x${bit.toString(16).padStart(8, '0')}`;
  const line = `\t\tmeta mark & ${hex} == ${hex} accept comment "kvmnftd"`;
  const out: string[] = [];
  let table = '';
  for (const l of text.split('\n')) {
    out.push(l);
    const t = /^table (\S+) (\S+) \{$/.exec(l);
    if (t) table = `${t[1]} ${t[2]}`;
    const c = /^\tchain (\S+) \{$/.exec(l);
    if (c && chains.some((x) => `${x.family} ${x.table}` === table && x.chain === c[1])) out.push(line);
  }
  return out.join('\n');
}

const guest2s = new WeakMap<Lab, LabNetns>();

/**
 * Puts the guest (192.168.122.50, beside a DHCP lease it may have) and guest2
 * (created once per lab) on virbr0, with the bridge as their gateway.
 * Idempotent: also what re-attaches them after a net-destroy/net-start
 * (libvirt does not put existing ports on the new bridge).
 */
export async function forwardGuests(lab: Lab): Promise<LabNetns> {
  await lab.attachGuest('virbr0');
  await lab.inGuest('ip', ['addr', 'replace', `${FWD.guest}/24`, 'dev', 'eth0']);
  await lab.inGuest('ip', ['route', 'replace', 'default', 'via', FWD.bridgeAddress, 'dev', 'eth0']);
  let g2 = guest2s.get(lab);
  if (!g2) {
    g2 = await plugNetns(lab, 'guest2', GUEST2_PORT, 'virbr0', `${FWD.guest2}/24`, FWD.bridgeAddress);
    guest2s.set(lab, g2);
  }
  await attachPort(lab, GUEST2_PORT, 'virbr0');
  return g2;
}

// ---- UDP: a server that answers and reports its peers, a client that waits for the answer ----

const UDP_SERVER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => { process.stdout.write('PEER ' + r.address + '\\n'); s.send('pong', r.port, r.address); });
s.bind(Number(process.argv[1]), '0.0.0.0', () => process.stdout.write('LISTENING\\n'));
process.on('SIGTERM', () => process.exit(0));
`;
const UDP_CLIENT = `
const s = require('node:dgram').createSocket('udp4');
const t = setTimeout(() => { process.stdout.write('TIMEOUT\\n'); process.exit(1); }, Number(process.argv[3]));
s.on('message', (m) => { clearTimeout(t); process.stdout.write('ANSWER ' + String(m) + '\\n'); process.exit(0); });
s.send('ping', Number(process.argv[2]), process.argv[1]);
`;

/** A UDP server in the guest on `port`: it answers every datagram and records the peers. */
export async function udpServer(lab: Lab, port: number): Promise<{ peers: string[]; close: () => void }> {
  const child = lab.spawnInLab(lab.node, ['-e', UDP_SERVER, String(port)], {}, 'guest');
  const state = { peers: [] as string[], listening: false };
  onLines(child.stdout, (line) => {
    if (line === 'LISTENING') state.listening = true;
    if (line.startsWith('PEER ')) state.peers.push(line.slice(5));
  });
  child.stderr?.resume();
  await waitUntil(`a udp server in the guest on ${port}`, 10_000, () => {
    if (child.exitCode !== null) throw new Error(`the udp server exited (${child.exitCode})`);
    return state.listening;
  });
  return { peers: state.peers, close: () => void child.kill('SIGTERM') };
}

/** One datagram from `where` to host:port: was it answered within a second? */
export async function udpAnswered(lab: Lab, where: 'wan' | 'host', host: string, port: number): Promise<boolean> {
  const args = ['-e', UDP_CLIENT, host, String(port), '1000'];
  const r =
    where === 'wan'
      ? await lab.inWan(lab.node, args, { reject: false })
      : await lab.exec(lab.node, args, {
          reject: false,
        });
  return r.stdout.startsWith('ANSWER pong');
}

// ---- a prober for benchmarks: when does a forward start (or stop) working ----

export interface ProbeAttempt {
  n: number;
  ok: boolean;
  /** performance.now() of this process when the attempt started / ended (the prober's epoch stamps). */
  started: number;
  ended: number;
  reason?: string;
}

/** test/lab/tcp-prober.mjs in `where`: a new connection to host:port every `everyMs`. */
export class TcpProber {
  readonly attempts: ProbeAttempt[] = [];
  private constructor(private readonly child: ReturnType<Lab['spawnInLab']>) {}

  static async start(lab: Lab, where: TcpWhere['in'], host: string, port: number, everyMs = 5, timeoutMs = 500) {
    const child = lab.spawnInLab(
      lab.node,
      [LAB_FILES.tcpProber, host, String(port), String(everyMs), String(timeoutMs)],
      {},
      where,
    );
    const p = new TcpProber(child);
    let started = false;
    const perf = (epoch: string) => Number(epoch) - performance.timeOrigin;
    onLines(child.stdout, (line) => {
      if (line === 'STARTED') started = true;
      const m = /^(OK|FAIL) (\d+) ([\d.]+) ([\d.]+)(?: (.*))?$/.exec(line);
      if (m)
        p.attempts.push({
          n: Number(m[2]),
          ok: m[1] === 'OK',
          started: perf(m[3]!),
          ended: perf(m[4]!),
          ...(m[5] !== undefined ? { reason: m[5] } : {}),
        });
    });
    child.stderr?.resume();
    await waitUntil('the tcp prober', 10_000, () => {
      if (child.exitCode !== null) throw new Error(`the tcp prober exited (${child.exitCode})`);
      return started;
    });
    return p;
  }

  /** The first attempt started at or after `t` (performance.now()) that connected. */
  firstOkSince(t: number): ProbeAttempt | undefined {
    return this.attempts.filter((a) => a.ok && a.started >= t).sort((a, b) => a.ended - b.ended)[0];
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}

// ---- the tests ----------------------------------------------------------------------------------

export interface ForwardTestOptions {
  backend: LibvirtBackend;
  events: 'dbus' | 'virsh';
  /** foreignTablesText() before kvmnftd ever wrote anything (taken in a beforeAll). */
  libvirt0: () => string;
  /** adminRules() before kvmnftd ever wrote anything. */
  admin0: () => string;
  /** Prefix of printed figures. */
  tag: string;
}

/**
 * Registers, in the calling describe (whose lab runs libvirt's default
 * network), the narrowed "kvmnftd never touches libvirt's tables": with
 * forwards configured exactly its mark accept, first, in libvirt's
 * rejecting chains (each family where libvirt has the chain), nothing else;
 * and `kvmnftd remove` leaves libvirt's tables as libvirt made them.
 * Leaves no daemon running and the config without forwards.
 */
export function libvirtTablesWithForwards(f: LibvirtLab, o: ForwardTestOptions): void {
  const chains = rejectChains(o.backend);
  const title =
    "with forwards configured, apply, run, SIGTERM and remove change libvirt's tables only by the mark accept " +
    `first in ${chains.map(chainText).join(' and ')}`;
  it(
    title,
    async () => {
      const lab = f.lab;
      const libvirt0 = o.libvirt0();
      const expected = withMarkAccepts(libvirt0, chains);
      expect(expected, `libvirt has ${chains[0]!.chain} (${o.backend} backend)`).not.toBe(libvirt0);
      f.writeConfig(FORWARD_CONFIG);
      try {
        const a = await f.cli('apply');
        expect(a.exitCode, a.stderr).toBe(0);
        expect(await foreignTablesText(lab)).toBe(expected);
        expect(await f.pendingCommands()).toEqual([]);

        const d = await f.startDaemon(o.events);
        await f.converged();
        expect(await foreignTablesText(lab)).toBe(expected);
        d.child.kill('SIGTERM');
        expect(await d.exited).toBe(0);
        expect(await foreignTablesText(lab)).toBe(expected);

        const r = await f.cli('remove');
        expect(r.exitCode, r.stderr).toBe(0);
        expect((await lab.nft('list', 'tables')).stdout).not.toContain('kvmnftd');
        expect(await foreignTablesText(lab), "libvirt's tables as libvirt made them").toBe(libvirt0);
        expect(await adminRules(lab)).toBe(o.admin0());
      } finally {
        f.writeConfig(NO_FORWARDS);
      }
    },
    60_000,
  );
}

/**
 * Registers, in the calling describe (whose lab runs libvirt's default
 * network), the forward with real packets through libvirt's own rejecting
 * chains: added with a reload, TCP/UDP/host/hairpin, `from` and the closed
 * guest address, a net-destroy + net-start with another network keeping the
 * mark accept in place (libvirt's rules land above it), the admin's `nft -f`,
 * and the forward removed with a reload. Uses the describe's running daemon
 * or starts one; leaves it running, with the config without forwards.
 */
export function forwardThroughLibvirt(f: LibvirtLab, o: ForwardTestOptions): void {
  const chains = rejectChains(o.backend);
  const where = chains.map(chainText).join(' and ');
  let sshd: TcpListener | undefined;
  let udp: { peers: string[]; close: () => void } | undefined;
  afterAll(async () => {
    await sshd?.close();
    udp?.close();
  });

  const daemon = async (): Promise<Daemon> => {
    const d = f.daemonIfRunning();
    return d ?? f.startDaemon(o.events);
  };
  const reload = async (toml: string): Promise<void> => {
    f.writeConfig(toml);
    const r = await f.cli('reload');
    expect(r.exitCode, `kvmnftd reload: ${r.stderr}`).toBe(0);
  };
  const wanConnects = () => connects(f.lab, { in: 'wan' }, HOST_WAN_ADDR, FWD.tcpPort);

  const added = `a forward added with a reload passes ${where}: TCP keeps the source, UDP, the host itself, hairpin`;
  it(
    added,
    async () => {
      const lab = f.lab;
      const d = await daemon();
      const guest2 = await forwardGuests(lab);
      sshd = await lab.tcpListen(FWD.toPort, { in: 'guest' });
      udp = await udpServer(lab, FWD.udpPort);
      const before = d.applied().length;

      await reload(FORWARD_CONFIG);
      // `kvmnftd reload` returns once the pass is done: the very first connection passes.
      const first = await lab.tcpProbe(HOST_WAN_ADDR, FWD.tcpPort, 3000, { in: 'wan' });
      expect(first.ok, `the first connection after the reload: ${first.output}\n${d.dump()}`).toBe(true);
      expect(await sshd.waitForPeer(5000, 0)).toBe(WAN_ADDR);
      expect(d.applied(before).length, 'the reload committed one transaction').toBeGreaterThan(0);
      expect(await markAcceptsFirst(lab, chains), JSON.stringify(await markAcceptPlaces(lab, chains))).toBe(true);
      expect(await f.pendingCommands()).toEqual([]);
      const listed = await lab.nft('list', 'chain', chains[0]!.family, chains[0]!.table, chains[0]!.chain);
      console.log(`[${o.tag}] ${chainText(chains[0]!)} with the forward:\n${listed.stdout}`);

      await waitUntil('a UDP answer through the forward', 15_000, () =>
        udpAnswered(lab, 'wan', HOST_WAN_ADDR, FWD.udpPort),
      );
      expect(udp.peers).toContain(WAN_ADDR);

      await connects(lab, { in: 'host' }, HOST_WAN_ADDR, FWD.tcpPort);
      expect(sshd.peers, 'the host itself, to its own uplink address').toContain(HOST_WAN_ADDR);

      await connects(lab, { in: guest2 }, HOST_WAN_ADDR, FWD.tcpPort);
      expect(sshd.peers, `hairpin masquerades to the bridge address: ${sshd.peers.join(' ')}`).toContain(
        FWD.bridgeAddress,
      );
      expect(sshd.peers).not.toContain(FWD.guest2);
    },
    90_000,
  );

  it("a source outside `from` is dropped; the guest's address routed to directly stays closed", async () => {
    const lab = f.lab;
    await lab.inWan('ip', ['addr', 'add', `${FWD.outside}/24`, 'dev', 'eth0']);
    try {
      const outside = await lab.tcpProbe(HOST_WAN_ADDR, FWD.tcpPort, 2000, { in: 'wan', address: FWD.outside });
      expect(outside.ok, outside.output).toBe(false);
      expect(sshd!.peers).not.toContain(FWD.outside);
    } finally {
      await lab.inWan('ip', ['addr', 'del', `${FWD.outside}/24`, 'dev', 'eth0']);
    }
    await lab.inWan('ip', ['route', 'add', '192.168.122.0/24', 'via', HOST_WAN_ADDR]);
    try {
      const direct = await lab.tcpProbe(FWD.guest, FWD.toPort, 2000, { in: 'wan' });
      expect(direct.ok, `direct routing reached the guest: ${direct.output}`).toBe(false);
    } finally {
      await lab.inWan('ip', ['route', 'del', '192.168.122.0/24']);
    }
    // Control: the forward itself still works.
    await wanConnects();
  }, 60_000);

  it("net-destroy + net-start: libvirt's rules land above the accept; the next pass puts it first again", async () => {
    const lab = f.lab;
    // Another network keeps kvmnftd's marking (and so the mark accept) in place while default is down.
    await f.defineNetwork('fwdkeep', networkXmlRoute());
    await lab.virsh('net-start', 'fwdkeep');
    try {
      await waitMarkAcceptsFirst(lab, chains);
      await lab.virsh('net-destroy', 'default');
      await f.converged();
      expect(await markAcceptsFirst(lab, chains), 'the mark accept stays while fwdkeep runs').toBe(true);

      const handles0 = await markAcceptHandles(lab, chains);
      const monitor = await LabMonitor.start(lab);
      const from = monitor.lines.length;
      await lab.virsh('net-start', 'default');
      const t0 = performance.now();
      await forwardGuests(lab);
      await waitMarkAcceptsFirst(lab, chains);
      const tFirst = performance.now() - t0;
      await wanConnects();
      const tWorks = performance.now() - t0;
      await f.converged();
      expect(await markAcceptsFirst(lab, chains)).toBe(true);
      monitor.stop();

      // What the monitor saw in each rejecting chain after the net-start began: where libvirt added
      // its rules (at the top), kvmnftd deleted its old copy and added the accept again, last.
      const events = monitor.lines.slice(from).flatMap((l) => ruleEvent(l.text) ?? []);
      let moved = 0;
      for (const c of chains) {
        const inChain = events.filter((e) => e.family === c.family && e.table === c.table && e.chain === c.chain);
        const adds = inChain.filter((e) => e.op === 'add');
        if (!adds.some((e) => e.comment !== 'kvmnftd')) continue;
        moved++;
        const seen = JSON.stringify(inChain);
        expect(adds[adds.length - 1]!.comment, `${chainText(c)}: kvmnftd's accept added last: ${seen}`).toBe('kvmnftd');
        expect(
          inChain.some((e) => e.op === 'delete' && handles0.includes(`${chainText(c)} ${e.handle}`)),
          `${chainText(c)}: the old copy deleted: ${seen}`,
        ).toBe(true);
      }
      expect(moved, `libvirt added rules to ${where}: ${JSON.stringify(events)}`).toBeGreaterThan(0);
      console.log(
        `[${o.tag}] net-start returned -> mark accept first again ${tFirst.toFixed(0)} ms, ` +
          `forward works ${tWorks.toFixed(0)} ms (polled; bench/forward-reload.ts measures)`,
      );
    } finally {
      await lab.virsh('net-destroy', 'fwdkeep');
      await lab.virsh('net-undefine', 'fwdkeep');
    }
  }, 90_000);

  it("the admin's `nft -f` (flush): the forward works again, the accept first in libvirt's chains", async () => {
    const lab = f.lab;
    await lab.nft('-f', LAB_FILES.adminRuleset);
    await waitUntil("libvirt's chains back", 10_000, () => libvirtChainsPresent(lab));
    await waitMarkAcceptsFirst(lab, chains, 10_000, f.daemonIfRunning());
    await wanConnects();
    await f.converged();
    expect(await markAcceptsFirst(lab, chains)).toBe(true);
    expect(await adminRules(lab)).toBe(o.admin0());
  }, 60_000);

  it(`a forward removed with a reload: its rules leave kvmnftd's table and ${where}; the wan is refused`, async () => {
    const lab = f.lab;
    await reload(NO_FORWARDS);
    const ours = JSON.stringify(
      (await lab.nftJson()).nftables.filter((o) => JSON.stringify(o).includes('"table":"kvmnftd"')),
    );
    expect(ours).not.toContain('"pf_prerouting"');
    expect(ours).not.toContain('"dnat"');
    expect((await markAcceptPlaces(lab, chains)).every((p) => p.copies === 0)).toBe(true);
    const refused = await lab.tcpProbe(HOST_WAN_ADDR, FWD.tcpPort, 2000, { in: 'wan' });
    expect(refused.ok, refused.output).toBe(false);
    expect(await udpAnswered(lab, 'wan', HOST_WAN_ADDR, FWD.udpPort)).toBe(false);
    expect(await f.pendingCommands()).toEqual([]);
  }, 60_000);
}

interface RuleEvent {
  op: 'add' | 'delete';
  family: string;
  table: string;
  chain: string;
  handle: number;
  comment?: string;
}

/** A rule added or deleted, from one line of `nft -j monitor` (an insert shows as an add). */
function ruleEvent(text: string): RuleEvent | undefined {
  let doc: Record<string, { rule?: Omit<RuleEvent, 'op'> }>;
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    return undefined;
  }
  for (const op of ['add', 'insert', 'delete'] as const) {
    const rule = doc[op]?.rule;
    if (rule) return { op: op === 'delete' ? 'delete' : 'add', ...rule };
  }
  return undefined;
}

/** `family table chain handle` of every mark accept of kvmnftd's in `chains`. */
async function markAcceptHandles(lab: Lab, chains: readonly ChainRef[]): Promise<string[]> {
  const doc = await lab.nftJson();
  return doc.nftables.flatMap((o) => {
    const r = o['rule'] as (JsonRule & { handle: number }) | undefined;
    if (!r) return [];
    const c = chains.find((x) => x.family === r.family && x.table === r.table && x.chain === r.chain);
    return c && isMarkAccept(r) ? [`${chainText(c)} ${r.handle}`] : [];
  });
}

/** A routed network whose forward rules keep kvmnftd's marking chain alive while `default` is down. */
function networkXmlRoute(): string {
  return `<network><name>fwdkeep</name><forward mode='route'/><bridge name='virbr5' stp='off' delay='0'/>
  <ip address='10.77.5.1' prefix='24'/></network>`;
}
