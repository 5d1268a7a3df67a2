// test/system helpers: cached Debian roots, the .deb built for each release,
// an install layer, and a container booted from them with systemd-nspawn
// (systemd as PID 1, private network). Commands run inside with
// `nsenter -t <container systemd> -a` and a clean environment (the host's
// NODE_EXTRA_CA_CERTS etc. do not leak in).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readdirSync, readFileSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, waitUntil } from '../helpers/wait.js';

export const REPO = join(import.meta.dirname, '..', '..');
export type Release = 'bookworm' | 'trixie';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command; never rejects (a time-out kills it and gives code null). */
export function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; log?: (line: string) => void } = {},
): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const onData = (which: 'out' | 'err') => (chunk: Buffer) => {
      const text = chunk.toString();
      if (which === 'out') stdout += text;
      else stderr += text;
      if (opts.log) for (const line of text.split('\n')) if (line.trim()) opts.log(line);
    };
    child.stdout.on('data', onData('out'));
    child.stderr.on('data', onData('err'));
    const timer = setTimeout(() => {
      stderr += `\n[timed out after ${opts.timeoutMs} ms]`;
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      stderr += String(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

export function must(r: Run, what: string): string {
  if (r.code !== 0)
    throw new Error(`${what} failed (exit ${r.code}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return r.stdout;
}

/** A cached root of RELEASE (packaging/deb/rootfs.sh): to build in, to boot, or to boot with ansible-core. */
export async function rootfs(release: Release, kind: 'build' | 'system' | 'ansible'): Promise<string> {
  const r = await run('bash', [join(REPO, 'packaging', 'deb', 'rootfs.sh'), release, kind], {
    timeoutMs: 900_000,
    log: (l) => console.log(`[${release}] ${l}`),
  });
  return must(r, `rootfs.sh ${release} ${kind}`).trim().split('\n').at(-1)!;
}

/**
 * The release's .deb of this work tree (packaging/deb/build.sh), or of COMMIT
 * built with its own build.sh: test/system/cached-deb.sh, which builds each
 * once (by the sources' hash, or by commit) and caches it.
 */
export async function buildDeb(
  release: Release,
  commit?: string,
): Promise<{ deb: string; log: string; lintian: string }> {
  const r = await run('bash', [join(REPO, 'test', 'system', 'cached-deb.sh'), release, ...(commit ? [commit] : [])], {
    timeoutMs: 900_000,
    log: (l) => {
      if (l.startsWith('cached-deb.sh:')) console.log(`[${release}] ${l}`);
    },
  });
  const deb = must(r, `cached-deb.sh ${release} ${commit ?? ''}`)
    .trim()
    .split('\n')
    .at(-1)!;
  const lintianFile = deb.replace(/\.deb$/, '.lintian.txt');
  return {
    deb,
    log: readFileSync(join(deb, '..', 'build.log'), 'utf8'),
    lintian: existsSync(lintianFile) ? readFileSync(lintianFile, 'utf8') : '(no lintian output)',
  };
}

function procStat(pid: number): { comm: string; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    return { comm: stat.slice(stat.indexOf('(') + 1, close), ppid: Number(stat.slice(close + 2).split(' ')[1]) };
  } catch {
    return undefined;
  }
}

function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => procStat(p)?.ppid === pid);
}

/** Fails unless this runs as root with TOOLS on PATH; gives each tool's path. */
export async function hostReady(tools: string[]): Promise<Record<string, string>> {
  if (process.getuid?.() !== 0) throw new Error('test/system must run as root (debootstrap, mounts, systemd-nspawn)');
  const paths: Record<string, string> = {};
  for (const tool of ['debootstrap', 'systemd-nspawn', 'nsenter', 'unshare', 'flock', ...tools]) {
    const r = await run('sh', ['-c', `command -v ${tool}`]);
    paths[tool] = must(r, `${tool} is not installed (bash .ci/install-deps)`).trim();
  }
  return paths;
}

const CLEAN_ENV = [
  'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
  'LANG=C.UTF-8',
  'SYSTEMD_PAGER=',
  'SYSTEMD_COLORS=0',
  'TERM=dumb',
  'HOME=/root',
];

export class Container {
  private constructor(
    readonly name: string,
    readonly work: string,
    private readonly launcher: ChildProcess,
    private readonly exited: Promise<number | null>,
    readonly leader: number,
  ) {}

  /** Boots ROOT+LAYER (test/system/boot.sh) and waits until systemd is up. */
  static async boot(
    name: string,
    root: string,
    layer: string,
    work: string,
  ): Promise<{ container: Container; bootMs: number; state: string }> {
    const t0 = performance.now();
    const console_ = openSync(join(work, 'console.log'), 'a');
    const launcher = spawn('bash', [join(REPO, 'test', 'system', 'boot.sh'), root, layer, work, name], {
      stdio: ['ignore', console_, console_],
    });
    closeSync(console_);
    const exited = new Promise<number | null>((resolve) => launcher.on('exit', (code) => resolve(code)));
    let gone = false;
    void exited.then(() => (gone = true));
    const pidFile = join(work, 'nspawn.pid');
    const leader = await waitUntil(
      `${name}: the container's systemd`,
      30_000,
      () => {
        if (gone)
          throw new Error(
            `${name}: boot.sh exited early:\n${readFileSync(join(work, 'console.log'), 'utf8').slice(-3000)}`,
          );
        if (!existsSync(pidFile)) return undefined;
        const nspawn = Number(readFileSync(pidFile, 'utf8'));
        // PID 1 of the container: a descendant of nspawn named systemd.
        const queue = childrenOf(nspawn);
        while (queue.length > 0) {
          const p = queue.shift()!;
          if (procStat(p)?.comm === 'systemd') return p;
          queue.push(...childrenOf(p));
        }
        return undefined;
      },
      { intervalMs: 200 },
    ).catch(async (err: unknown) => {
      launcher.kill('SIGTERM');
      await Promise.race([exited, sleep(30_000)]);
      throw err;
    });
    const container = new Container(name, work, launcher, exited, leader);
    try {
      // systemctl answers once PID 1 has its private socket; then wait for the boot to finish.
      await waitUntil(
        `${name}: systemd's private bus`,
        30_000,
        async () => (await container.exec(['systemctl', 'is-system-running'])).stdout.trim() !== '',
        { intervalMs: 200 },
      );
      const r = await container.exec(['systemctl', 'is-system-running', '--wait'], 120_000);
      const state = r.stdout.trim();
      if (state !== 'running' && state !== 'degraded') {
        throw new Error(
          `${name}: system state "${state}" (${r.stderr})\n${readFileSync(join(work, 'console.log'), 'utf8').slice(-3000)}`,
        );
      }
      return { container, bootMs: performance.now() - t0, state };
    } catch (err) {
      await container.stop().catch(() => undefined);
      throw err;
    }
  }

  exec(args: string[], timeoutMs = 60_000): Promise<Run> {
    return run('nsenter', ['-t', String(this.leader), '-a', '/usr/bin/env', '-i', ...CLEAN_ENV, ...args], {
      timeoutMs,
    });
  }

  /** A shell script inside; throws unless it exits 0. */
  async sh(script: string, timeoutMs = 60_000): Promise<string> {
    return must(await this.exec(['/bin/sh', '-c', script], timeoutMs), `[${this.name}] ${script}`);
  }

  /** A shell script inside, whatever its exit code. */
  try(script: string, timeoutMs = 60_000): Promise<Run> {
    return this.exec(['/bin/sh', '-c', script], timeoutMs);
  }

  /**
   * Starts ARGS inside and returns at once; every line it prints is kept
   * with the time it arrived here (performance.now()). The command records
   * its PID in /run/kvmnftd-test/NAME.pid: stop() signals that PID.
   */
  async background(name: string, args: string[]): Promise<Background> {
    const pidFile = `/run/kvmnftd-test/${name}.pid`;
    const child = spawn(
      'nsenter',
      [
        '-t',
        String(this.leader),
        '-a',
        '/usr/bin/env',
        '-i',
        ...CLEAN_ENV,
        '/bin/sh',
        '-c',
        `mkdir -p /run/kvmnftd-test && echo $$ > ${pidFile} && exec "$@"`,
        'sh',
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const bg = new Background(this, name, pidFile, child);
    await waitUntil(`${this.name}: ${name} started`, 10_000, () => {
      if (bg.exitCode !== undefined) throw new Error(`${name} exited at once: ${bg.text()}`);
      return existsSync(`/proc/${this.leader}/root${pidFile}`);
    });
    return bg;
  }

  console(): string {
    return readFileSync(join(this.work, 'console.log'), 'utf8');
  }

  /**
   * Powers the container off and waits for boot.sh to exit (it removes its
   * cgroups and the overlay goes with its mount namespace). libvirt-guests is
   * stopped first: on trixie its stop races libvirtd's and the shutdown can
   * hang. The poweroff request is SIGRTMIN+4 to the container's systemd (what
   * `systemctl poweroff` asks for; a signal from the host always arrives); if
   * the container is not gone within 60 s its systemd gets SIGKILL, which ends
   * its whole PID namespace — all by PID, never by name.
   */
  async stop(): Promise<number> {
    const t0 = performance.now();
    const alive = (): boolean => procStat(this.leader)?.comm === 'systemd';
    if (alive()) {
      await this.try('systemctl stop libvirt-guests.service', 30_000);
      process.kill(this.leader, 38); // SIGRTMIN+4 (glibc's SIGRTMIN is 34): systemd's poweroff signal
    }
    const code = await Promise.race([this.exited, sleep(60_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      if (alive()) process.kill(this.leader, 'SIGKILL');
      await Promise.race([this.exited, sleep(30_000)]);
      throw new Error(`${this.name}: the container did not power off within 60 s (killed)`);
    }
    return performance.now() - t0;
  }
}

export interface Line {
  /** performance.now() when the line arrived. */
  at: number;
  text: string;
}

/** A command running inside a container (Container.background). */
export class Background {
  readonly lines: Line[] = [];
  exitCode: number | null | undefined;
  private readonly exited: Promise<void>;

  constructor(
    private readonly c: Container,
    readonly name: string,
    private readonly pidFile: string,
    child: ChildProcess,
  ) {
    const partial = { out: '', err: '' };
    const onData = (which: 'out' | 'err') => (chunk: Buffer) => {
      const at = performance.now();
      const parts = (partial[which] + chunk.toString()).split('\n');
      partial[which] = parts.pop()!;
      for (const text of parts) this.lines.push({ at, text });
    };
    child.stdout!.on('data', onData('out'));
    child.stderr!.on('data', onData('err'));
    this.exited = new Promise((resolve) =>
      child.on('close', (code) => {
        for (const rest of [partial.out, partial.err]) if (rest) this.lines.push({ at: performance.now(), text: rest });
        this.exitCode = code;
        resolve();
      }),
    );
  }

  text(): string {
    return this.lines.map((l) => l.text).join('\n');
  }

  /** Sends SIGNAL to the command and waits (up to 10 s) for it to exit; gives its lines. */
  async stop(signal: 'TERM' | 'INT' = 'TERM'): Promise<Line[]> {
    if (this.exitCode === undefined) await this.c.try(`kill -${signal} "$(cat ${this.pidFile})"`);
    await Promise.race([this.exited, sleep(10_000)]);
    if (this.exitCode === undefined) throw new Error(`${this.name} did not exit on SIG${signal}`);
    return this.lines;
  }
}

/** "Overall exposure level for X: 1.2 OK" -> 1.2 */
export function exposure(text: string, unit: string): number {
  const m = new RegExp(`Overall exposure level for ${unit.replace('.', '\\.')}: ([\\d.]+) (\\S+)`).exec(text);
  if (!m) throw new Error(`no exposure level for ${unit} in:\n${text.slice(-2000)}`);
  return Number(m[1]);
}

/** The unit's systemd properties as a map. */
export async function unitProps(c: Container, unit: string, props: string[]): Promise<Record<string, string>> {
  const out = await c.sh(`systemctl show ${unit} ${props.map((p) => `-p ${p}`).join(' ')}`);
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

/** Everything kvmnftd's rules for BRIDGE need: NAT in its table, accepts in the admin's chains, the two jumps. */
export async function kvmnftdRulesFor(c: Container, bridge: string): Promise<boolean> {
  const r = await c.try('nft list table inet kvmnftd && nft list table inet filter');
  return (
    r.code === 0 &&
    r.stdout.includes(`nat_${bridge}`) &&
    r.stdout.includes(`iifname "${bridge}" udp dport 67`) &&
    /chain input \{[^}]*?jump kvmnftd_input/s.test(r.stdout) &&
    /chain forward \{[^}]*?jump kvmnftd_forward/s.test(r.stdout)
  );
}

/** libvirt's own rules for BRIDGE, in whichever backend's tables (not kvmnftd's, not the admin's). */
export async function libvirtRulesFor(c: Container, bridge: string): Promise<boolean> {
  const r = await c.try('nft list ruleset');
  if (r.code !== 0) return false;
  return r.stdout
    .split(/^table /m)
    .filter((tb) => !tb.startsWith('inet kvmnftd') && !tb.startsWith('inet filter'))
    .some((tb) => tb.includes(`"${bridge}"`));
}

/** What the tests read of `kvmnftd status --json`. */
export interface Status {
  ok: boolean;
  daemon: { transport: string | null; running: boolean | null };
  networks: Array<{ name: string; ok: boolean }>;
  problems: string[];
}

export async function status(c: Container): Promise<Status | undefined> {
  const r = await c.try('kvmnftd status --json');
  try {
    return JSON.parse(r.stdout) as Status;
  } catch {
    return undefined;
  }
}

/** `kvmnftd status --json` is ok and lists exactly NETWORKS, each ok. */
export async function statusOk(c: Container, networks: string[]): Promise<Status | undefined> {
  const s = await status(c);
  if (!s?.ok) return undefined;
  const names = s.networks.map((n) => n.name).sort();
  return JSON.stringify(names) === JSON.stringify([...networks].sort()) && s.networks.every((n) => n.ok)
    ? s
    : undefined;
}

/**
 * A guest without a VM: netns NS in the container, its eth0 a veth whose
 * other end (v<NS>) is a port of BRIDGE.
 */
export async function addGuest(c: Container, ns: string, bridge: string): Promise<void> {
  await c.sh(
    [
      `ip netns add ${ns}`,
      `ip link add v${ns} type veth peer name eth0 netns ${ns}`,
      `ip link set v${ns} master ${bridge} up`,
      `ip -n ${ns} link set lo up`,
    ].join(' && '),
  );
}

export async function removeGuest(c: Container, ns: string): Promise<void> {
  await c.try(`ip netns del ${ns}; ip link del v${ns}`);
}

const UDHCPC_SCRIPT = '/usr/local/lib/kvmnftd-test/udhcpc.script';

/**
 * busybox udhcpc in guest NS: up to 15 discovers 1 s apart; test/lab's script
 * sets the address and default route and prints "LEASE ip/mask router r".
 * Needs /usr/local/bin/busybox and the script in the root (an install layer's
 * setup puts them there). Gives udhcpc's output and how long it took.
 */
export async function dhcpLease(c: Container, ns: string): Promise<Run> {
  return c.exec(
    guestBusybox(ns, 'udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '15', '-T', '1', '-A', '1', '-s', UDHCPC_SCRIPT),
    40_000,
  );
}

/** The command line of busybox APPLET ARGS in guest NS (a netns of the container). */
export const guestBusybox = (ns: string, applet: string, ...args: string[]): string[] => [
  ...['ip', 'netns', 'exec', ns, '/usr/local/bin/busybox', applet],
  ...args,
];
