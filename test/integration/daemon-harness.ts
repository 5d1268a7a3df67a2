/**
 * Shared by the lab tests that run `kvmnftd run`: the per-file lab fixture
 * (useLibvirtLab), a NOTIFY_SOCKET the test owns, the daemon's JSON log, an
 * `nft monitor` of the lab, and a compact view of the ruleset.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { startLab, WAN_ADDR, type ExecResult, type Lab, type LabOptions } from '../lab/lab.js';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
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
    return waitUntil(`notify message ${String(what)}`, timeoutMs, () => {
      const i = this.messages.findIndex(
        (m, idx) => idx >= from && (typeof what === 'string' ? m === what : what.test(m)),
      );
      return i >= 0 ? i : undefined;
    });
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

/** `nft -j monitor` in the lab: every line it printed, stamped on arrival (performance.now()). */
export class LabMonitor {
  readonly lines: Array<{ text: string; at: number }> = [];
  private constructor(readonly child: ChildProcess) {
    onLines(child.stdout, (text, at) => this.lines.push({ text, at }));
    child.stderr?.resume();
  }
  /** Starts it and returns once it reports (nft monitor has no ready signal: a probe table, added and deleted). */
  static async start(lab: Lab): Promise<LabMonitor> {
    const m = new LabMonitor(lab.spawnInLab('nft', ['-j', 'monitor']));
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

export interface LibvirtLabOptions {
  /** Names the work directory (kvmnftd-TAG-*) and the notes printed at the end. */
  tag: string;
  /** startLab() options; a function for those that must be found first (a test root). */
  lab?: LabOptions | (() => Promise<LabOptions>);
  /** Start `kvmnftd run --events EVENTS` once the lab is up and wait for its READY=1. */
  daemon?: 'auto' | 'dbus' | 'virsh';
  /** The beforeAll time-out (default 60 s; a test root may be built first). */
  setupMs?: number;
}

/**
 * One libvirt lab per describe block: registers beforeAll/afterAll that start
 * the lab (failing, never skipping, without a built CLI), a NOTIFY_SOCKET and
 * optionally the daemon, and always clean up (printing what a test root's tc
 * wrapper ignored). The accessors throw until the lab is up.
 */
export function useLibvirtLab(opts: LibvirtLabOptions): LibvirtLab {
  const f = new LibvirtLab(opts.tag);
  beforeAll(async () => {
    requireBuiltCli();
    await f.start(typeof opts.lab === 'function' ? await opts.lab() : (opts.lab ?? {}));
    if (opts.daemon) await f.startDaemon(opts.daemon);
  }, opts.setupMs ?? 60_000);
  afterAll(() => f.stop(), 60_000);
  return f;
}

export class LibvirtLab {
  readonly work: string;
  readonly config: string;
  readonly env: DaemonEnv;
  private started: { lab: Lab; notify: NotifySocket } | undefined;
  private current: Daemon | undefined;

  constructor(readonly tag: string) {
    this.work = mkdtempSync(join(tmpdir(), `kvmnftd-${tag}-`));
    this.config = join(this.work, 'kvmnftd.toml');
    this.env = {
      KVMNFTD_RUNTIME_DIR: join(this.work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json',
      NOTIFY_SOCKET: join(this.work, 'notify'),
    };
    this.writeConfig('# defaults\n');
  }

  get lab(): Lab {
    if (!this.started) throw new Error(`${this.tag}: the lab is not up`);
    return this.started.lab;
  }
  get notify(): NotifySocket {
    if (!this.started) throw new Error(`${this.tag}: the lab is not up`);
    return this.started.notify;
  }
  get daemon(): Daemon {
    if (!this.current) throw new Error(`${this.tag}: no daemon started`);
    return this.current;
  }

  async start(opts: LabOptions): Promise<void> {
    const lab = await startLab(opts);
    const notify = new NotifySocket(this.env.NOTIFY_SOCKET);
    this.started = { lab, notify };
    await notify.ready();
  }

  /** `kvmnftd run --events EVENTS ...` in the lab, with this config and env; resolves at its READY=1. */
  async startDaemon(events: 'auto' | 'dbus' | 'virsh' = 'dbus'): Promise<Daemon> {
    const from = this.notify.messages.length;
    const d = spawnDaemon(this.lab, this.env, ['--events', events, '--config', this.config]);
    this.current = d;
    await this.notify.waitFor('READY=1', from).catch((e: Error) => {
      throw new Error(`${e.message}\n${d.dump()}`);
    });
    return d;
  }

  /** A one-shot `kvmnftd ARGS --config CONFIG` in the lab (whatever its exit code). */
  cli(...args: string[]): Promise<ExecResult> {
    return this.lab.exec(this.lab.node, [CLI_MAIN, ...args, '--config', this.config], { env: this.env, reject: false });
  }

  /** Rewrites the config file (the daemon reads it at its next reload). */
  writeConfig(toml: string): void {
    writeFileSync(this.config, toml);
  }

  /** Writes the network's XML into the work directory and `virsh net-define`s it. */
  async defineNetwork(name: string, xml: string): Promise<void> {
    const file = join(this.work, `${name}.xml`);
    writeFileSync(file, xml);
    await this.lab.virsh('net-define', file);
  }

  /** The commands `kvmnftd plan --json` would run now (none: the rules are what the running networks need). */
  async pendingCommands(): Promise<object[]> {
    const r = await this.cli('plan', '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { nftables: object[] }).nftables.filter((c) => !('metainfo' in c));
  }

  /** Waits until there are no pending commands: the daemon has caught up (a plan that fails counts as not yet). */
  async converged(timeoutMs = 15_000): Promise<void> {
    let last = '';
    await waitUntil(
      'kvmnftd converged (plan --json empty)',
      timeoutMs,
      async () => {
        const r = await this.cli('plan', '--json');
        last = r.exitCode === 0 ? r.stdout : `exit ${r.exitCode}: ${r.stderr}`;
        return (
          r.exitCode === 0 && (JSON.parse(r.stdout) as { nftables: object[] }).nftables.every((c) => 'metainfo' in c)
        );
      },
      { detail: () => `last plan: ${last}\n${this.current?.dump() ?? ''}` },
    );
  }

  async stop(): Promise<void> {
    const s = this.started;
    this.started = undefined;
    s?.notify.close();
    const ignored = s?.lab.tcCsumIgnored() ?? [];
    if (ignored.length > 0)
      console.log(
        `[${this.tag}] NOTE: the test root's tc wrapper ignored ${ignored.length} failing tc command(s) ` +
          `(this kernel has no tc csum action):\n  ${ignored.join('\n  ')}`,
      );
    await s?.lab.stop();
    rmSync(this.work, { recursive: true, force: true });
  }
}
