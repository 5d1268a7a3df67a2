/**
 * A small network-namespace lab for integration tests.
 *
 * Everything happens inside namespaces that a Lab creates (names unique per
 * process and per lab: `kvt-<pid>-<counter>-<role>`). Nothing here touches the
 * machine's own network namespace: links are created with `ip -n NS ...` and the
 * peer end of a veth is created directly inside its target namespace.
 *
 * No shell strings: every command is an argument array run through execa.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { execa } from 'execa';
import { onLines } from './lines.js';
import { waitUntil } from './wait.js';
import { parsed, readTableByTable } from '../../src/nft/table-by-table.js';

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  command: string;
}

export interface RunOptions {
  /** Kill the command after this many ms (default 30 s). */
  timeoutMs?: number;
  env?: Record<string, string | undefined>;
  cwd?: string;
}

/** Run a command (argument array, no shell); never throws on a non-zero exit. */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await execa(cmd, [...args], {
    reject: false,
    timeout: opts.timeoutMs ?? 30_000,
    env: opts.env,
    cwd: opts.cwd,
    stdin: 'ignore',
    stripFinalNewline: false,
  });
  return {
    exitCode: typeof r.exitCode === 'number' ? r.exitCode : -1,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    timedOut: Boolean(r.timedOut),
    command: [cmd, ...args].join(' '),
  };
}

/** Run a command and throw (with its output) unless it exits 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.exitCode !== 0) {
    throw new Error(
      `command failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''}): ${r.command}\n` +
        `stdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
  return r;
}

/** Run a command inside a network namespace: `ip netns exec NS cmd args...`. */
export function nsRun(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export function nsRunOk(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runOk('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

// ---------------------------------------------------------------------------
// Preconditions: fail (never skip) when the lab cannot run.

function findInPath(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = `${dir}/${bin}`;
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  for (const dir of ['/usr/sbin', '/sbin']) {
    try {
      accessSync(`${dir}/${bin}`, fsConstants.X_OK);
      return `${dir}/${bin}`;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/**
 * Throws a clear error unless we are root and `nft` and `ip` are installed.
 * Call at the start of every integration test so that a missing precondition
 * shows up as a FAILED test, never as a skipped one.
 */
export function requireLabPrivileges(): void {
  const problems: string[] = [];
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    problems.push(`these integration tests must run as root (uid is ${process.getuid?.() ?? 'unknown'})`);
  }
  if (!findInPath('nft')) problems.push('`nft` (nftables) is not installed or not in PATH');
  if (!findInPath('ip')) problems.push('`ip` (iproute2) is not installed or not in PATH');
  if (problems.length > 0) {
    throw new Error(`integration lab cannot run: ${problems.join('; ')}`);
  }
}

// ---------------------------------------------------------------------------
// Cleanup registry. Every Lab registers its namespaces and processes here too,
// so that a process exit (e.g. an aborted run) still deletes them.

const liveNamespaces = new Set<string>();
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of liveChildren) {
      try {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const ns of liveNamespaces) {
      try {
        execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  });
}

let labCounter = 0;

export class Lab {
  readonly prefix: string;
  private readonly cleanups: Array<{ what: string; fn: () => Promise<void> | void }> = [];
  private cleaned = false;

  constructor() {
    labCounter += 1;
    this.prefix = `kvt-${process.pid}-${labCounter}`;
    installExitHook();
  }

  /** Register a cleanup action; actions run in reverse order, all of them, even if some fail. */
  defer(what: string, fn: () => Promise<void> | void): void {
    this.cleanups.push({ what, fn });
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    const errors: string[] = [];
    while (this.cleanups.length > 0) {
      const c = this.cleanups.pop()!;
      try {
        await c.fn();
      } catch (e) {
        errors.push(`${c.what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (errors.length > 0) throw new Error(`lab cleanup had errors:\n${errors.join('\n')}`);
  }

  /** Create a network namespace `<prefix>-<role>` with `lo` up. */
  async netns(role: string): Promise<string> {
    const name = `${this.prefix}-${role}`;
    await runOk('ip', ['netns', 'add', name]);
    liveNamespaces.add(name);
    this.defer(`delete netns ${name}`, async () => {
      // Kill anything still running inside the namespace that *we* started is
      // handled by the process registry; here only the namespace goes.
      await runOk('ip', ['netns', 'delete', name]);
      liveNamespaces.delete(name);
    });
    await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /**
   * A veth pair: `nameA` in `nsA`, `nameB` in `nsB`, both up.
   * The pair is created inside nsA and its peer is moved straight into nsB.
   */
  async veth(nsA: string, nameA: string, nsB: string, nameB: string): Promise<void> {
    await runOk('ip', ['-n', nsA, 'link', 'add', nameA, 'type', 'veth', 'peer', 'name', nameB, 'netns', nsB]);
    await runOk('ip', ['-n', nsA, 'link', 'set', nameA, 'up']);
    await runOk('ip', ['-n', nsB, 'link', 'set', nameB, 'up']);
  }

  /** A bridge with STP off and no forward delay (forwards at once), up. */
  async bridge(ns: string, name: string): Promise<void> {
    await runOk('ip', ['-n', ns, 'link', 'add', name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await runOk('ip', ['-n', ns, 'link', 'set', name, 'up']);
  }

  async enslave(ns: string, dev: string, bridge: string): Promise<void> {
    await runOk('ip', ['-n', ns, 'link', 'set', dev, 'master', bridge]);
    await runOk('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }

  async addr(ns: string, dev: string, cidr: string): Promise<void> {
    await runOk('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
  }

  async route(ns: string, dest: string, via: string): Promise<void> {
    await runOk('ip', ['-n', ns, 'route', 'add', dest, 'via', via]);
  }

  /** Set a sysctl inside a namespace by writing /proc/sys (no shell, no procps needed). */
  async sysctl(ns: string, key: string, value: string): Promise<void> {
    const path = `/proc/sys/${key.replace(/\./g, '/')}`;
    await nsRunOk(ns, process.execPath, [
      '-e',
      'require("node:fs").writeFileSync(process.argv[1], process.argv[2])',
      path,
      value,
    ]);
  }

  /** Start a TCP listener in `ns`; it reports every peer address it accepted. */
  async tcpListener(ns: string, host: string, port = 0): Promise<TcpListener> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', LISTENER_SCRIPT, host, String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveChildren.add(child);
    const listener = new TcpListener(child, `${ns} ${host}:${port}`);
    this.defer(`stop listener in ${ns}`, async () => {
      await listener.stop();
      liveChildren.delete(child);
    });
    await listener.ready();
    return listener;
  }
}

// ---------------------------------------------------------------------------
// TCP listener and probe (small node scripts run with `ip netns exec`).

const LISTENER_SCRIPT = `
const net = require('node:net');
const host = process.argv[1];
const port = Number(process.argv[2]);
const srv = net.createServer((sock) => {
  process.stdout.write(JSON.stringify({ event: 'connection', peer: sock.remoteAddress, peerPort: sock.remotePort }) + '\\n');
  sock.on('error', () => {});
  sock.end('hello\\n');
});
srv.on('error', (e) => { process.stdout.write(JSON.stringify({ event: 'error', message: String(e && e.message) }) + '\\n'); process.exit(3); });
srv.listen(port, host, () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: srv.address().port }) + '\\n');
});
process.on('SIGTERM', () => { srv.close(); process.exit(0); });
`;

export interface ListenerEvent {
  event: 'listening' | 'connection' | 'error';
  port?: number;
  peer?: string;
  peerPort?: number;
  message?: string;
}

export class TcpListener {
  readonly events: ListenerEvent[] = [];
  port = 0;
  private stderr = '';
  private exited = false;
  private readonly exitPromise: Promise<void>;

  constructor(
    private readonly child: ChildProcess,
    private readonly label: string,
  ) {
    child.stdout!.setEncoding('utf8');
    onLines(child.stdout, (line) => {
      try {
        const ev = JSON.parse(line) as ListenerEvent;
        if (ev.event === 'listening' && typeof ev.port === 'number') this.port = ev.port;
        this.events.push(ev);
      } catch {
        /* ignore noise */
      }
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exitPromise = new Promise((res) => {
      child.once('exit', () => {
        this.exited = true;
        res();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Peer addresses of all accepted connections, in order. */
  get peers(): string[] {
    return this.events.filter((e) => e.event === 'connection').map((e) => String(e.peer));
  }

  async ready(timeoutMs = 10_000): Promise<void> {
    await waitUntil(`listener ${this.label} to listen`, timeoutMs, () => {
      if (this.exited)
        throw new Error(`listener ${this.label} exited early: ${this.stderr} ${JSON.stringify(this.events)}`);
      return this.port > 0;
    });
  }

  async waitForConnections(n: number, timeoutMs = 5_000): Promise<string[]> {
    await waitUntil(`${n} connection(s) at listener ${this.label}`, timeoutMs, () => this.peers.length >= n);
    return this.peers;
  }

  /** Stop the listener: SIGTERM to the PID we started, SIGKILL if it lingers. */
  async stop(): Promise<void> {
    if (this.exited || this.child.pid === undefined) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => {
      if (!this.exited) this.child.kill('SIGKILL');
    }, 2_000);
    await this.exitPromise;
    clearTimeout(t);
  }
}

const PROBE_SCRIPT = `
const net = require('node:net');
const host = process.argv[1];
const port = Number(process.argv[2]);
const timeoutMs = Number(process.argv[3]);
let done = false;
let data = '';
const finish = (o) => { if (done) return; done = true; process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
const sock = net.connect({ host, port });
const timer = setTimeout(() => { sock.destroy(); finish({ ok: false, error: 'timeout' }); }, timeoutMs);
sock.on('connect', () => { sock.setEncoding('utf8'); });
sock.on('data', (d) => { data += d; });
sock.on('end', () => { clearTimeout(timer); finish({ ok: true, local: sock.localAddress, data }); });
sock.on('error', (e) => { clearTimeout(timer); finish({ ok: false, error: e.code || String(e.message) }); });
`;

export interface ProbeResult {
  ok: boolean;
  /** 'timeout', 'ECONNREFUSED', 'EHOSTUNREACH', ... when not ok */
  error?: string;
  local?: string;
  data?: string;
}

/**
 * Open one NEW TCP connection from `ns` to host:port and read the greeting.
 * Each call uses a fresh source port, hence a fresh conntrack entry.
 */
export async function tcpProbe(ns: string, host: string, port: number, timeoutMs = 3_000): Promise<ProbeResult> {
  const r = await nsRun(ns, process.execPath, ['-e', PROBE_SCRIPT, host, String(port), String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ProbeResult;
  } catch {
    throw new Error(
      `tcp probe from ${ns} to ${host}:${port} gave no result (exit ${r.exitCode}): ${r.stdout} ${r.stderr}`,
    );
  }
}

// ---------------------------------------------------------------------------
// nftables helpers

/** A match expression, read loosely: the tests look into payload matches on prefixes. */
export interface NftMatch {
  op?: string;
  left?: { payload?: { protocol?: string; field?: string } };
  right?: { prefix?: { addr?: string; len?: number } };
}
/** One statement or expression of a rule (nft -j). */
export interface NftExpr {
  match?: NftMatch;
  counter?: { packets?: number; bytes?: number } | null;
  jump?: { target?: string };
  goto?: { target?: string };
  [key: string]: unknown;
}
export interface NftTable {
  family: string;
  name: string;
  handle?: number;
}
export interface NftChain extends NftTable {
  table: string;
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
}
export interface NftRule {
  family: string;
  table: string;
  chain: string;
  handle?: number;
  comment?: string;
  expr?: NftExpr[];
}
/** One element of `nft -j list ruleset`'s array. */
export interface NftObject {
  table?: NftTable;
  chain?: NftChain;
  rule?: NftRule;
  [key: string]: unknown;
}
export interface NftRuleset {
  nftables: NftObject[];
}

/** Parsed `nft -j list ruleset` of a namespace. */
export async function nftJson(ns: string): Promise<NftRuleset> {
  const r = await nsRunOk(ns, 'nft', ['-j', 'list', 'ruleset']);
  // nft 1.0.6 can print no JSON for a ruleset with a table that has one flag
  // (e.g. `flags owner`): read it table by table, as kvmnftd does (src/nft/table-by-table.ts).
  const doc =
    parsed(r.stdout) ?? (await readTableByTable(async (args) => (await nsRunOk(ns, 'nft', args)).stdout, false));
  return doc as NftRuleset;
}

/** Text `nft list ruleset` (for error messages). */
export async function nftText(ns: string): Promise<string> {
  return (await nsRunOk(ns, 'nft', ['list', 'ruleset'])).stdout;
}

/** `nft -f FILE` inside a namespace; throws on failure. */
export async function nftLoadFile(ns: string, file: string, json = false): Promise<void> {
  await nsRunOk(ns, 'nft', json ? ['-j', '-f', file] : ['-f', file]);
}

function stripDeep(v: unknown, keepHandles: boolean): unknown {
  if (Array.isArray(v)) {
    return v
      .filter((x) => !(x && typeof x === 'object' && !Array.isArray(x) && 'metainfo' in x))
      .map((x) => stripDeep(x, keepHandles));
  }
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (k === 'handle' && !keepHandles) continue;
      if (k === 'metainfo') continue;
      // anonymous counter statement inside a rule: {"counter":{"packets":N,"bytes":M}}
      if (k === 'counter' && val && typeof val === 'object' && !Array.isArray(val) && !('name' in val)) {
        out[k] = null;
        continue;
      }
      out[k] = stripDeep(val, keepHandles);
    }
    return out;
  }
  return v;
}

/**
 * Make a ruleset comparable: drop the metainfo object, handles (unless
 * keepHandles) and counter values (`{"counter":{...}}` -> `{"counter":null}`).
 */
export function normalizeRuleset(rs: NftRuleset, opts: { keepHandles?: boolean } = {}): NftRuleset {
  return stripDeep(rs, opts.keepHandles ?? false) as NftRuleset;
}

export interface TableRef {
  family: string;
  name: string;
}

export function tablesOf(rs: NftRuleset): TableRef[] {
  return rs.nftables.flatMap((o) => (o.table ? [{ family: o.table.family, name: o.table.name }] : []));
}

export function chainsOf(rs: NftRuleset, family: string, table: string): NftChain[] {
  return rs.nftables.flatMap((o) => (o.chain?.family === family && o.chain.table === table ? [o.chain] : []));
}

export function chainOf(rs: NftRuleset, family: string, table: string, chain: string): NftChain | undefined {
  return chainsOf(rs, family, table).find((c) => c.name === chain);
}

/** Rules of one chain, in chain order. */
export function rulesOf(rs: NftRuleset, family: string, table: string, chain: string): NftRule[] {
  return allRules(rs).filter((r) => r.family === family && r.table === table && r.chain === chain);
}

export function allRules(rs: NftRuleset): NftRule[] {
  return rs.nftables.flatMap((o) => (o.rule ? [o.rule] : []));
}

/** True when a rule is exactly `jump TARGET` (optionally with a counter and comment). */
export function isJumpTo(rule: NftRule, target: string): boolean {
  const expr = rule.expr ?? [];
  const verdicts = expr.filter((e) => 'jump' in e || 'goto' in e);
  return verdicts.length === 1 && verdicts[0]!.jump?.target === target;
}

/** Rules anywhere in the ruleset that jump (or goto) to `target`. */
export function jumpsTo(rs: NftRuleset, target: string): NftRule[] {
  return allRules(rs).filter((r) => JSON.stringify(r.expr ?? []).includes(`"target":"${target}"`));
}

/** Does any expression (deep) contain this key? e.g. 'masquerade'. */
export function ruleHas(rule: NftRule, key: string): boolean {
  const walk = (v: unknown): boolean => {
    if (Array.isArray(v)) return v.some(walk);
    if (v && typeof v === 'object') {
      return Object.entries(v as Record<string, unknown>).some(([k, val]) => k === key || walk(val));
    }
    return false;
  };
  return walk(rule.expr ?? []);
}

/** Packets counted by the anonymous counter statements of a rule (raw ruleset, not normalised). */
export function rulePackets(rule: NftRule): number {
  return (rule.expr ?? []).reduce((n, e) => n + (e.counter?.packets ?? 0), 0);
}

/** Does the rule match `ip saddr <prefix>/<len>` (payload match on the source address)? */
export function matchesIpSaddr(rule: NftRule, addr: string, len: number): boolean {
  return (rule.expr ?? []).some((e) => {
    const m = e.match;
    if (!m || m.op === '!=') return false;
    const left = m.left?.payload;
    if (!left || left.protocol !== 'ip' || left.field !== 'saddr') return false;
    const p = m.right?.prefix;
    return p !== undefined && p.addr === addr && p.len === len;
  });
}

/** Read a value from /proc/sys inside a namespace, e.g. 'net/ipv4/ip_forward'. */
export async function readProcSys(ns: string, path: string): Promise<string> {
  return (await nsRunOk(ns, 'cat', [`/proc/sys/${path}`])).stdout.trim();
}
