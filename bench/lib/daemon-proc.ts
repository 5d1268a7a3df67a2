/**
 * The daemon under test and an independent observer of libvirt's events, as
 * the benchmarks that run `kvmnftd run` in the libvirt lab see them: the
 * daemon's JSON log lines and libvirt-dbus's NetworkEvent signals, each
 * stamped on arrival in the benchmark process (performance.now()); the
 * daemon's memory from /proc.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import dbus from 'dbus-next';
import type { Message as DbusMessage, MessageBus } from 'dbus-next';
import { busDaemonCall, DbusCaller } from '../../src/libvirt/dbus-call.js';
import { onLines } from '../../test/helpers/lines.js';
import { sleep, waitUntil } from '../../test/helpers/wait.js';
import type { Lab } from '../../test/lab/lab.js';
import { round } from './stats.js';

const now = (): number => performance.now();

export interface LogLine {
  rec: Record<string, unknown> & { msg: string; level: number };
  at: number;
}

/** The daemon under test: its JSON log lines, each stamped on arrival here. */
export class DaemonProc {
  readonly logs: LogLine[] = [];
  /** V8 mark-compacts (with --trace-gc): heap in use before/after, MB. */
  readonly majorGcs: Array<{ beforeMB: number; afterMB: number; committedMB: number }> = [];
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    onLines(child.stderr, (line, at) => {
      try {
        this.logs.push({ rec: JSON.parse(line) as LogLine['rec'], at });
      } catch {
        this.logs.push({ rec: { level: 60, msg: `unparsed: ${line}` }, at });
      }
    });
    // stdout carries only V8's --trace-gc lines, when a run asks for them.
    onLines(child.stdout, (line) => {
      const m = /Mark-Compact(?: \(reduce\))? ([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/.exec(line);
      if (m) this.majorGcs.push({ beforeMB: Number(m[1]), afterMB: Number(m[3]), committedMB: Number(m[4]) });
    });
    this.exited = new Promise((res) => child.on('exit', (code) => res(code)));
  }
  get pid(): number {
    if (this.child.pid === undefined) throw new Error('daemon has no pid');
    return this.child.pid;
  }
  static isApplied(this: void, l: LogLine): boolean {
    return typeof l.rec['commands'] === 'number' && l.rec.msg.includes('applied');
  }
  static isPass(this: void, l: LogLine): boolean {
    return DaemonProc.isApplied(l) || l.rec.msg === 'ruleset already up to date';
  }
  find(from: number, pred: (l: LogLine) => boolean): LogLine | undefined {
    for (let i = from; i < this.logs.length; i++) if (pred(this.logs[i]!)) return this.logs[i];
    return undefined;
  }
  /** Waits until the daemon has logged nothing for `ms`. */
  async quiet(ms: number, timeoutMs = 10_000): Promise<void> {
    await waitUntil(
      'the daemon to go quiet',
      timeoutMs,
      () => now() - (this.logs[this.logs.length - 1]?.at ?? 0) >= ms,
      { intervalMs: 10 },
    );
  }
  tail(n = 30): string {
    return this.logs
      .slice(-n)
      .map((l) => JSON.stringify(l.rec))
      .join('\n');
  }
}

/** An independent D-Bus client on the lab's system bus: NetworkEvent signals, stamped on arrival. */
export class Observer {
  readonly signals: Array<{ path: string; code: number; at: number }> = [];
  private readonly caller: DbusCaller;
  private constructor(readonly bus: MessageBus) {
    this.caller = new DbusCaller(bus, 10_000);
    bus.on('error', (err: unknown) => this.caller.fail(err instanceof Error ? err : new Error(String(err))));
  }
  static async connect(lab: Lab): Promise<Observer> {
    const bus = dbus.sessionBus({ busAddress: `unix:path=${lab.path('/run/dbus/system_bus_socket')}` });
    const o = new Observer(bus);
    bus.on('message', (m: DbusMessage) => {
      if (m.type === dbus.MessageType.SIGNAL && m.interface === 'org.libvirt.Connect' && m.member === 'NetworkEvent') {
        const [path, code] = m.body as [string, number];
        o.signals.push({ path, code, at: now() });
      }
    });
    await o.caller.call(
      busDaemonCall('AddMatch', 's', ["type='signal',interface='org.libvirt.Connect',member='NetworkEvent'"]),
    );
    // Activates libvirt-dbus (also needed with --events virsh: nobody else calls it then).
    await o.caller.call({
      destination: 'org.libvirt',
      path: '/org/libvirt/QEMU',
      interface: 'org.libvirt.Connect',
      member: 'ListNetworks',
      signature: 'u',
      body: [0],
    });
    return o;
  }
  close(): void {
    this.bus.disconnect();
  }
}

export function procStatus(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(VmRSS|VmHWM|RssAnon|RssFile|Threads):\s+(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}
export const rssMiB = (pid: number): number => round((procStatus(pid)['VmRSS'] ?? NaN) / 1024, 1);

export function childrenOf(pid: number): Array<{ pid: number; comm: string; rssMiB: number }> {
  const out: Array<{ pid: number; comm: string; rssMiB: number }> = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
        const cp = Number(c);
        try {
          out.push({ pid: cp, comm: readFileSync(`/proc/${cp}/comm`, 'utf8').trim(), rssMiB: rssMiB(cp) });
        } catch {
          /* gone */
        }
      }
    }
  } catch {
    /* gone */
  }
  return out;
}

/** A test-harness daemon (test/integration/daemon-harness.ts) has logged nothing for 300 ms. */
export async function harnessQuiet(daemon: { readonly logs: readonly unknown[] }, timeoutMs: number): Promise<void> {
  let n = -1;
  await waitUntil('the daemon to go quiet', timeoutMs, async () => {
    const still = daemon.logs.length === n;
    n = daemon.logs.length;
    await sleep(300);
    return still;
  });
}
