/**
 * Shared by the lab tests and benchmarks that run `kvmnftd run` (plain code,
 * no vitest: bench/ and the demo use it too): a NOTIFY_SOCKET the test owns,
 * the daemon's JSON log, an `nft monitor` of the lab, a guest probe, and a
 * compact view of the ruleset. The per-file lab fixture is libvirt-lab.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { nftProcessEnv } from '../../src/nft/nft-process.js';
import { indexRuleset, ruleKey } from '../../src/nft/ruleset.js';
import { udhcpcArgs, WAN_ADDR, type Lab } from '../lab/lab.js';
import { CLI_MAIN } from '../helpers/cli.js';
import { onLines } from '../helpers/lines.js';
import { waitUntil } from '../helpers/wait.js';

/** A NOTIFY_SOCKET: socat receives the daemon's datagrams; one assignment per line. */
export class NotifySocket {
  readonly messages: string[] = [];
  private readonly child: ChildProcess;
  constructor(readonly path: string) {
    this.child = spawn('socat', ['-u', `UNIX-RECV:${path}`, '-'], { stdio: ['ignore', 'pipe', 'inherit'] });
    onLines(this.child.stdout, (line) => this.messages.push(line));
  }
  ready(): Promise<void> {
    return waitUntil(`socat on ${this.path}`, 5000, () => {
      try {
        return statSync(this.path).isSocket();
      } catch {
        return false;
      }
    }).then(() => undefined);
  }
  waitFor(what: string | RegExp, from = 0, timeoutMs = 20_000): Promise<number> {
    return waitUntil(
      `notify message ${String(what)}`,
      timeoutMs,
      () => {
        const i = this.messages.findIndex(
          (m, idx) => idx >= from && (typeof what === 'string' ? m === what : what.test(m)),
        );
        return i >= 0 ? i : undefined;
      },
      // What the daemon did say meanwhile: a failure shows why it never said that.
      { detail: () => `messages since: ${JSON.stringify(this.messages.slice(from).slice(-8), null, 1)}` },
    );
  }
  lastStatus(): string | undefined {
    return [...this.messages]
      .reverse()
      .find((m) => m.startsWith('STATUS='))
      ?.slice('STATUS='.length);
  }
  close(): void {
    this.child.kill('SIGTERM');
  }
}

export interface LogRecord {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export class Daemon {
  readonly logs: LogRecord[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    onLines(child.stderr, (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogRecord);
      } catch {
        this.logs.push({ level: 60, msg: `unparsed: ${line}` });
      }
    });
    child.stdout?.resume();
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }
  /** "applied" log records from log index `from` on (use `logs.length` as a marker): one per transaction. */
  applied(from = 0): LogRecord[] {
    return this.logs.slice(from).filter(isApplied);
  }
  /** One record per reconcile pass from `from` on: applied, already up to date, or failed (needs --log-level debug). */
  passes(from = 0): LogRecord[] {
    return this.logs
      .slice(from)
      .filter((r) => isApplied(r) || r.msg === 'ruleset already up to date' || r.msg.startsWith('reconcile failed'));
  }
  /** The libvirt lifecycle events the daemon received from `from` on (needs --log-level debug). */
  events(from = 0): LogRecord[] {
    return this.logs.slice(from).filter((r) => r.msg.startsWith('event: '));
  }
  dump(): string {
    return this.logs.map((r) => JSON.stringify(r)).join('\n');
  }
}

const isApplied = (r: LogRecord): boolean => typeof r['commands'] === 'number' && r.msg.includes('applied');

/**
 * `nft -j monitor` in the lab (or, with `{ json: false }`, `nft monitor`, whose text also names the process of
 * each transaction: "# new generation N by process PID (COMM)"): every line it printed, stamped on arrival
 * (performance.now()).
 */
export class LabMonitor {
  readonly lines: Array<{ text: string; at: number }> = [];
  private constructor(readonly child: ChildProcess) {
    onLines(child.stdout, (text, at) => this.lines.push({ text, at }));
    child.stderr?.resume();
  }
  /**
   * Starts it and returns once it reports (nft monitor has no ready signal: a probe table, added and deleted).
   * With kvmnftd's malloc tunables for nft: without them this observer itself lags behind a flush by tens of
   * ms (src/nft/nft-process.ts), and stamps what follows the flush late.
   */
  static async start(lab: Lab, { json = true } = {}): Promise<LabMonitor> {
    const m = new LabMonitor(lab.spawnInLab('nft', json ? ['-j', 'monitor'] : ['monitor'], nftProcessEnv()));
    await waitUntil(
      'nft monitor to report a probe change',
      5000,
      async () => {
        await lab.nft('add', 'table', 'ip', 'kvmtest_probe');
        await lab.nft('delete', 'table', 'ip', 'kvmtest_probe');
        return m.find(0, (t) => t.includes('kvmtest_probe')) !== undefined;
      },
      { intervalMs: 50 },
    );
    return m;
  }
  find(from: number, pred: (text: string) => boolean): { text: string; at: number } | undefined {
    return this.lines.slice(from).find((l) => pred(l.text));
  }
  stop(): void {
    this.child.kill('SIGTERM');
  }
}

export function networkXml(name: string, bridge: string, third: number, mode: 'nat' | 'route', dhcp = false): string {
  return `<network><name>${name}</name><forward mode='${mode}'/><bridge name='${bridge}' stp='off' delay='0'/>
  <ip address='10.77.${third}.1' prefix='24'>${dhcp ? `<dhcp><range start='10.77.${third}.10' end='10.77.${third}.99'/></dhcp>` : ''}</ip></network>`;
}

export interface RulesetView {
  natChains: string[];
  forwardComments: string[];
  masqueradePackets: number;
}

export async function ruleset(lab: Lab): Promise<RulesetView> {
  const doc = await lab.nftJson();
  const natChains: string[] = [];
  const forwardComments: string[] = [];
  let masqueradePackets = 0;
  for (const o of doc.nftables) {
    const chain = o['chain'] as { table?: string; family?: string; name?: string } | undefined;
    if (chain?.family === 'inet' && chain.table === 'kvmnftd' && chain.name?.startsWith('nat_'))
      natChains.push(chain.name);
    const rule = o['rule'] as
      | { table?: string; family?: string; chain?: string; comment?: string; expr?: Array<Record<string, unknown>> }
      | undefined;
    if (rule?.family === 'inet' && rule.table === 'filter' && rule.chain === 'kvmnftd_forward' && rule.comment)
      forwardComments.push(rule.comment);
    if (
      rule?.family === 'inet' &&
      rule.table === 'kvmnftd' &&
      rule.chain === 'nat_virbr0' &&
      rule.expr?.some((e) => 'masquerade' in e)
    ) {
      const counter = rule.expr.find((e) => 'counter' in e)?.['counter'] as { packets?: number } | undefined;
      masqueradePackets += counter?.packets ?? 0;
    }
  }
  return { natChains: natChains.sort(), forwardComments, masqueradePackets };
}

export interface CountedRule {
  handle: number;
  packets: number;
  bytes: number;
}

/**
 * The rules with comment `tag` (e.g. `kvmnftd net=default`) wherever they are,
 * by `family table chain ruleKey`: handle and counter of each.
 */
export async function taggedRules(lab: Lab, tag: string): Promise<Map<string, CountedRule>> {
  const out = new Map<string, CountedRule>();
  for (const table of indexRuleset(await lab.nftJson()).tables.values())
    for (const chain of table.chains.values())
      for (const rule of chain.rules) {
        if (rule.comment !== tag) continue;
        const counter = rule.expr.find((e) => 'counter' in e)?.['counter'] as
          { packets?: number; bytes?: number } | null | undefined;
        out.set(`${table.family} ${table.name} ${chain.name} ${ruleKey(rule)}`, {
          handle: rule.handle,
          packets: counter?.packets ?? 0,
          bytes: counter?.bytes ?? 0,
        });
      }
  return out;
}

export interface DaemonEnv {
  KVMNFTD_RUNTIME_DIR: string;
  KVMNFTD_LOG_FORMAT: 'json';
  NOTIFY_SOCKET: string;
  [key: string]: string;
}

/** Starts `kvmnftd run --log-level debug ARGS` inside the lab (host mount + net namespace), with the lab's node. */
export function spawnDaemon(lab: Lab, env: DaemonEnv, args: string[]): Daemon {
  return new Daemon(lab.spawnInLab(lab.node, [CLI_MAIN, 'run', '--log-level', 'debug', ...args], env));
}

/** libvirt's own chains (iptables-nft backend on libvirt 9) present in the lab? */
export async function libvirtChainsPresent(lab: Lab): Promise<boolean> {
  const chains = (await lab.nft('list', 'chains')).stdout;
  return chains.includes('LIBVIRT_FWO') || chains.includes('table ip libvirt_network');
}

/**
 * Every table but the admin's `inet filter` and kvmnftd's `inet kvmnftd`
 * (libvirt's, Docker's...) as nft prints them, counters ignored: what
 * kvmnftd must leave as their owners made them (but for its mark accepts).
 */
export async function foreignTablesText(lab: Lab): Promise<string> {
  const tables = (await lab.nft('list', 'tables')).stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('table ') && l !== 'table inet filter' && l !== 'table inet kvmnftd')
    .sort();
  const out: string[] = [];
  for (const t of tables) {
    const [, family, name] = t.split(' ');
    const text = (await lab.nft('list', 'table', family!, name!)).stdout;
    out.push(
      ...text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => l.replace(/\bcounter packets \d+ bytes \d+/g, 'counter')),
    );
  }
  return out.join('\n');
}

/** The admin's table as nft prints it, without counters, blank lines, our jumps and our chains. */
export async function adminRules(lab: Lab): Promise<string> {
  const out = (await lab.nft('list', 'table', 'inet', 'filter')).stdout;
  const lines = out.split('\n');
  const kept: string[] = [];
  let skipping = false;
  for (const line of lines) {
    if (/^\tchain kvmnftd_/.test(line)) skipping = true;
    if (!skipping && line.trim() !== '' && !/comment "kvmnftd"/.test(line))
      kept.push(line.replace(/ counter packets \d+ bytes \d+/g, ''));
    if (skipping && /^\t}/.test(line)) skipping = false;
  }
  return kept.join('\n');
}

/**
 * A NEW connection from the lab's guest to a fresh listener on the wan at
 * `port`; returns the source address the wan saw. New flows for up to
 * `retryMs` (0: one probe): while libvirt re-adds its rules after a
 * FirewallD1.Reloaded, one SYN can meet libvirt's reject before its accept
 * is back.
 */
export async function guestReachesWan(lab: Lab, port: number, retryMs = 0): Promise<string> {
  const listener = await lab.tcpListen(port);
  try {
    let output = '';
    await waitUntil(
      `a connection from the guest to ${WAN_ADDR}:${port}`,
      retryMs,
      async () => {
        const probe = await lab.tcpProbe(WAN_ADDR, port);
        output = probe.output;
        return probe.ok;
      },
      { intervalMs: 500, detail: () => output },
    );
    return await listener.waitForPeer(5000, 0);
  } finally {
    await listener.close();
  }
}

/** The MAC of the lab guest's eth0 (from `ip`: the lab's /sys shows the host namespace's interfaces). */
export async function guestMac(lab: Lab): Promise<string> {
  const out = (await lab.inGuest('ip', ['-o', 'link', 'show', 'dev', 'eth0'])).stdout;
  const mac = /link\/ether ([0-9a-f:]{17})/.exec(out)?.[1];
  if (mac === undefined) throw new Error(`no MAC for the guest's eth0 in: ${out}`);
  return mac;
}

/**
 * The lab guest's lease changes: its udhcpc releases the lease it holds (`current`, if any) and asks
 * libvirt's dnsmasq for `address` (udhcpc -r). Resolves with the address leased. Every step is a real DHCP
 * exchange, after which dnsmasq calls libvirt's leaseshelper, which rewrites the network's status file.
 *
 * The release: busybox udhcpc sends DHCPRELEASE only from the bound state (`-q -R` quits before it and sends
 * none, seen here with busybox 1.35), so a udhcpc that stays in the foreground renews `current`, and quitting
 * (-R) releases it. Without a release dnsmasq keeps giving the guest the address it holds.
 */
export async function changeLease(lab: Lab, address: string, current?: string): Promise<string> {
  const args = (...extra: string[]): string[] => udhcpcArgs('eth0', 10, ...extra);
  if (current !== undefined) {
    const release = [
      'out=$(mktemp); busybox "$@" >"$out" 2>&1 & p=$!',
      // Until bound (the script prints LEASE), at most 10 s.
      'i=0; until grep -q "^LEASE" "$out" || [ $i -ge 200 ]; do i=$((i + 1)); sleep 0.05; done',
      'kill -TERM $p; wait $p; cat "$out"; rm -f "$out"',
    ].join('\n');
    const r = await lab.inGuest('sh', ['-c', release, 'release', ...args('-R', '-r', current)], {
      reject: false,
      timeoutMs: 30_000,
    });
    if (!/unicasting a release of/.test(r.stdout))
      throw new Error(`udhcpc did not release ${current}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
  }
  const r = await lab.inGuest('busybox', args('-n', '-q', '-r', address), { reject: false, timeoutMs: 30_000 });
  const m = /^LEASE (\d+\.\d+\.\d+\.\d+)\//m.exec(r.stdout);
  if (r.exitCode !== 0 || !m) throw new Error(`udhcpc -r ${address}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
  return m[1]!;
}
