// One long-lived interactive `virsh -q -c URI` per URI for the daemon's passes:
// a one-shot virsh connects to libvirtd afresh each time (30-130 ms a pass),
// the shell once. Requests run one at a time. Each is framed by
// `echo --err A""B` and `echo A""B`: virsh prints the nonce AB on stderr and
// stdout, while the lines we wrote (which virsh's readline echoes back) only
// ever hold A""B. Only fixed command words and UUIDs virsh listed and we
// validated are written: never a name.
//
// A libvirt error for one command is a VirshError for that call; the shell
// stays. A fault (the child exits, a write fails, no nonce in time, output we
// cannot read) kills the child and answers with one-shot virsh (virsh.ts)
// until a back-off (0.5 s doubling to 30 s) has passed; then a new shell.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { backoffMs, type Backoff } from '../daemon/backoff.js';
import { activeNetworkXml, runningDomainXml, VirshError } from './virsh.js';

export interface NamedXml {
  name: string;
  xml: string;
}

export interface VirshShellOptions {
  /** The program and its leading arguments (default ['virsh']); `-q -c URI` follow. */
  command?: readonly string[];
  /** No framing nonce within this long is a fault (default 15 s). */
  timeoutMs?: number;
  /** Clock for the back-off (default Date.now). */
  now?: () => number;
  /** What answers while the shell is down (default: one-shot virsh). */
  oneShot?: { networks: (uri: string) => Promise<NamedXml[]>; domains: (uri: string) => Promise<NamedXml[]> };
  /** Told of each fault (for the log). */
  onFault?: (reason: string) => void;
}

export const UUID_RE = /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/;
const RESTART: Backoff = { baseMs: 500, maxMs: 30_000 };
/** Lines virsh writes on stderr when it reconnected by itself; the command itself then succeeded. */
const RECONNECT_NOTE = /^error: (Disconnected from .* due to .*|Reconnected to the hypervisor)$/;
const PROMPTS = /^(virsh [#>] )+|(virsh [#>] )+$/g;

/** The shell is unusable: the caller answers with one-shot virsh. */
class ShellFault extends Error {
  override name = 'ShellFault';
}

interface Pending {
  nonce: string;
  out: string;
  err: string;
  resolve: (r: { out: string; err: string }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class VirshShell {
  private child: ChildProcessWithoutNullStreams | undefined;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Faults since the last whole answer: the back-off's attempt number. */
  private faults = 0;
  private retryAt = 0;
  private closed = false;
  private readonly command: readonly string[];
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly oneShot: NonNullable<VirshShellOptions['oneShot']>;

  constructor(
    readonly uri: string,
    private readonly opts: VirshShellOptions = {},
  ) {
    this.command = opts.command ?? ['virsh'];
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.now = opts.now ?? Date.now;
    this.oneShot = opts.oneShot ?? { networks: activeNetworkXml, domains: runningDomainXml };
  }

  /** PID of the current virsh child, if one runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The XML of every active network, by name (as activeNetworkXml). */
  activeNetworks(): Promise<NamedXml[]> {
    return this.listed('net-list --uuid', 'net-dumpxml', 'network', () => this.oneShot.networks(this.uri));
  }

  /** The XML of every running domain, by name (as runningDomainXml). */
  runningDomains(): Promise<NamedXml[]> {
    return this.listed('list --uuid', 'dumpxml', 'domain', () => this.oneShot.domains(this.uri));
  }

  /** SIGTERM the child; later calls are answered by one-shot virsh. */
  close(): void {
    this.closed = true;
    this.fault('closed', false);
  }

  private async listed(
    list: string,
    dump: string,
    root: string,
    fallback: () => Promise<NamedXml[]>,
  ): Promise<NamedXml[]> {
    const turn = this.queue.then(async () => {
      const uuids = (await this.run(list)).split('\n').filter((l) => l !== '');
      if (!uuids.every((u) => UUID_RE.test(u))) throw this.garbage(`${list}: not a UUID list`);
      const out: NamedXml[] = [];
      for (const uuid of uuids) {
        const xml = await this.run(`${dump} ${uuid}`);
        const name = rootName(xml, root);
        if (name === undefined) throw this.garbage(`${dump}: no <${root}> with a <name>`);
        out.push({ name, xml });
      }
      if (this.child) this.faults = 0; // a healthy shell answered in full
      return out;
    });
    this.queue = turn.catch(() => undefined);
    try {
      return await turn;
    } catch (err) {
      if (err instanceof ShellFault) return fallback();
      throw err;
    }
  }

  /** One command through the shell: its output, or VirshError (libvirt's error), or ShellFault. */
  private async run(cmd: string): Promise<string> {
    const child = this.ensure();
    const [a, b] = [randomBytes(6).toString('hex'), randomBytes(6).toString('hex')];
    const nonce = a + b;
    const errFrame = `echo --err ${a}""${b}`;
    const done = new Promise<{ out: string; err: string }>((resolve, reject) => {
      const timer = setTimeout(() => this.fault(`no answer within ${this.timeoutMs / 1000} s`), this.timeoutMs);
      this.pending = { nonce, out: '', err: '', resolve, reject, timer };
    });
    child.stdin.write(`${cmd}\n${errFrame}\necho ${a}""${b}\n`, (e) => {
      if (e && this.child === child) this.fault(`write: ${e.message}`);
    });
    const { out, err } = await done;
    const errors = err.split('\n').filter((l) => l.trim() !== '' && !RECONNECT_NOTE.test(l) && l !== `error: ${nonce}`);
    if (errors.length > 0)
      throw new VirshError(`virsh ${cmd.split(' ')[0]!} (${this.uri}) failed: ${errors.join('; ')}`);
    return commandOutput(out, cmd, errFrame);
  }

  private ensure(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    if (this.closed) throw new ShellFault('closed');
    if (this.now() < this.retryAt) throw new ShellFault('in back-off');
    const [cmd, ...pre] = this.command;
    const child = spawn(cmd!, [...pre, '-q', '-c', this.uri], {
      env: { ...process.env, TERM: 'dumb', INPUTRC: '/dev/null' },
      stdio: 'pipe',
    });
    this.child = child;
    child.stdout.setEncoding('utf8').on('data', (d: string) => this.take(child, 'out', d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => this.take(child, 'err', d));
    child.stdin.on('error', (e) => this.child === child && this.fault(`write: ${e.message}`));
    child.on('error', (e) => this.child === child && this.fault(e.message));
    child.on('exit', (code, signal) => this.child === child && this.fault(`exited (${signal ?? code})`));
    return child;
  }

  private take(child: ChildProcessWithoutNullStreams, which: 'out' | 'err', data: string): void {
    const p = this.pending;
    if (this.child !== child || !p) return; // between requests only prompts come
    p[which] += data;
    const outAt = p.out.indexOf(p.nonce);
    if (outAt < 0 || !p.err.includes(`error: ${p.nonce}\n`)) return;
    clearTimeout(p.timer);
    this.pending = undefined;
    p.resolve({ out: p.out.slice(0, outAt), err: p.err });
  }

  private garbage(what: string): ShellFault {
    this.fault(`unreadable output: ${what}`);
    return new ShellFault(what);
  }

  /** Kills the child by PID and starts the back-off; the pending request, if any, fails over. */
  private fault(reason: string, report = true): void {
    const child = this.child;
    this.child = undefined;
    if (child) {
      child.removeAllListeners('exit');
      child.on('exit', () => undefined);
      child.stdin.on('error', () => undefined);
      child.kill(this.closed ? 'SIGTERM' : 'SIGKILL');
      if (report) {
        this.retryAt = this.now() + backoffMs(++this.faults, RESTART);
        this.opts.onFault?.(`virsh shell (${this.uri}): ${reason}`);
      }
    }
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new ShellFault(reason));
    }
  }
}

/**
 * What one command printed: the stdout up to the nonce without virsh's
 * prompts, the echo of the command and the echo of the framing lines
 * (readline echoes what it reads even from a pipe; a virsh without readline
 * echoes nothing, which reads the same).
 */
export function commandOutput(out: string, cmd: string, errFrame: string): string {
  const at = out.indexOf(errFrame);
  let s = (at >= 0 ? out.slice(0, at) : out).replace(PROMPTS, '');
  if (s.startsWith(`${cmd}\n`)) s = s.slice(cmd.length + 1);
  return s.replace(PROMPTS, '').replace(/\n+$/, '');
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** The <name> of a <root> document libvirt wrote (its first child), entities decoded; undefined if not such XML. */
export function rootName(xml: string, root: string): string | undefined {
  if (!xml.startsWith(`<${root}`) || !xml.endsWith(`</${root}>`)) return undefined;
  const m = /<name>([^<]*)<\/name>/.exec(xml);
  if (!m) return undefined;
  return m[1]!.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (all, e: string) => {
    if (e.startsWith('#x') || e.startsWith('#X')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ENTITIES[e] ?? all;
  });
}
