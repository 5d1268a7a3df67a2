/**
 * The hermetic libvirt lab for kvmnftd's integration tests.
 *
 * startLab() builds, with real components only:
 *
 *   - a "host": a private mount namespace + network namespace, held by a helper
 *     process (`unshare --mount --net --fork -- bash lab-ns.sh`). In it: a tmpfs
 *     /run (so also /var/run), tmpfs copies of /etc/libvirt, /var/lib/libvirt,
 *     /var/cache/libvirt, /var/log/libvirt, and a sysfs of the lab netns;
 *   - the admin's drop-policy nftables ruleset (test/fixtures/admin-ruleset.nft),
 *     loaded before libvirtd starts, as at boot;
 *   - a system bus: dbus-daemon with test/lab/system-bus.conf listening on
 *     unix:path=/run/dbus/system_bus_socket inside the lab; org.libvirt
 *     (libvirt-dbus) is D-Bus-activated by it through the setuid launch helper;
 *   - libvirtd (monolithic, `libvirtd -d`), seeing the lab's bus;
 *   - `wan` and `guest` network namespaces (held by `unshare --net cat`
 *     processes inside the lab's mount namespace: no /run/netns names at all):
 *     host eth0 192.0.2.1/24 <-> wan eth0 192.0.2.2/24 (host default route via
 *     192.0.2.2, wan has no route back to guests); guest eth0 <-> host
 *     `vguest0`, enslaved to a libvirt bridge by attachGuest()/dhcp().
 *
 * Every command runs as an argument array (`nsenter -t PID -m -n -- cmd ...`);
 * no shell strings. stop() kills only processes the lab started (by PID, and,
 * as a safety net, every process still inside one of the lab's namespaces,
 * identified by namespace inode), after which the namespaces are gone.
 *
 * Seen here (Debian 12, libvirt 9.0, libvirt-dbus 1.4), asserted in lab.test.ts:
 *   - org.libvirt is D-Bus-activated by the lab bus through the setuid
 *     dbus-daemon-launch-helper and runs as user libvirtdbus.
 *   - NetworkEvent(o, i) numbers: 0 defined, 2 started, 3 stopped, 1 undefined.
 *   - `virsh net-event --loop --event lifecycle` lines (unbuffered on a pipe):
 *       event 'lifecycle' for network default: Started
 *     (network name NOT quoted; Defined / Started / Stopped / Undefined).
 *   - After a libvirtd restart libvirt-dbus keeps running but emits no
 *     NetworkEvent until some method call (e.g. ListNetworks) reopens its
 *     libvirt connection.
 *   - libvirtd listens for org.fedoraproject.FirewallD1.Reloaded on the lab bus.
 *   - libvirt's dnsmasq offers ~3 s after the first DHCPDISCOVER.
 *   - Hooks: write /etc/libvirt/hooks/network via lab.path() and call
 *     restartLibvirtd() (libvirtd looks for hooks at start).
 *
 * Option `root` (e.g. the Debian 13 root of test/lab/trixie-root.sh): the same
 * lab, but lab-ns.sh puts a tmpfs overlay on that root (the cached root itself
 * is never written to), mounts /proc, the lab's /sys, /dev, a private /run
 * and binds the repository and the temporary directory into it at the same
 * paths, then chroots the namespace holder into it. Every lab command runs
 * with `nsenter -r -w` (root and directory of the holder): libvirtd,
 * dbus-daemon, virsh, nft, ip, busybox and node (`lab.node`, the root's
 * /usr/bin/node) are the root's. NODE_EXTRA_CA_CERTS (a host file) is unset.
 * The root's /usr/sbin/tc is test/lab/tc-csum-wrapper.sh (see there: this
 * kernel has no tc csum action; exactly that failing command is ignored and
 * logged, `lab.tcCsumIgnored()`).
 *
 * Option `firewallBackend` writes `firewall_backend = "..."` into the lab's
 * /etc/libvirt/network.conf (libvirt >= 10.4; Debian's libvirt 11 otherwise
 * picks iptables whenever the iptables binary exists).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { onLines } from '../helpers/lines.js';
import { waitUntil } from '../helpers/wait.js';

const LAB_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_DIR = join(LAB_DIR, '..', '..');

/** Paths of the lab's own files. */
export const LAB_FILES = {
  setupScript: join(LAB_DIR, 'lab-ns.sh'),
  /** default network for the lab: virbr0 192.168.122.1/24, DHCP .2-.254, stp off. */
  defaultNetworkXml: join(LAB_DIR, 'default.xml'),
  adminRuleset: join(REPO_DIR, 'test', 'fixtures', 'admin-ruleset.nft'),
  tcpListen: join(LAB_DIR, 'tcp-listen.mjs'),
  tcpProbe: join(LAB_DIR, 'tcp-probe.mjs'),
  /** A new connection every few ms, one line per attempt (benchmarks: when a forward starts working). */
  tcpProber: join(LAB_DIR, 'tcp-prober.mjs'),
  /** Stands in for a test root's /usr/sbin/tc (option `root`). */
  tcWrapper: join(LAB_DIR, 'tc-csum-wrapper.sh'),
} as const;

/** Paths as seen INSIDE the lab's mount namespace. */
export const LAB_PATHS = {
  busSocket: '/run/dbus/system_bus_socket',
  busConfig: '/run/dbus/lab-system-bus.conf',
  libvirtdPid: '/run/libvirtd.pid',
  libvirtdLog: '/var/log/libvirt/libvirtd.log',
  networkStatusDir: '/run/libvirt/network',
  udhcpcScript: '/run/lab-udhcpc.script',
  /** Written by tc-csum-wrapper.sh (option `root`): one line per ignored `tc ... csum` failure. */
  tcCsumLog: '/run/lab-tc-csum-ignored.log',
  /** Upper layers of lab.privateDir() overlays (on the lab's tmpfs /run). */
  privateDirs: '/run/lab-private',
} as const;

export const LIBVIRT_URI = 'qemu:///system';
export const HOST_WAN_ADDR = '192.0.2.1';
export const WAN_ADDR = '192.0.2.2';
/** Host-side name of the guest veth (the port put on a libvirt bridge). */
export const GUEST_PORT = 'vguest0';

export interface LabOptions {
  /** nft file loaded in the host netns before libvirtd starts; false = none. Default: the admin ruleset fixture. */
  ruleset?: string | false;
  /** Start libvirtd (default true). Without it, the bus still runs. */
  libvirtd?: boolean;
  /** Define ('define') or define and start ('start') the lab's default network (default: 'none'). */
  defaultNetwork?: 'none' | 'define' | 'start';
  /** More network XML files (paths outside the lab) to define and start after the default network. */
  networks?: string[];
  /** Print progress to stderr (default: env KVMNFTD_LAB_DEBUG). */
  debug?: boolean;
  /**
   * A test root (host path, e.g. from test/lab/trixie-root.ts) whose libvirtd,
   * dbus-daemon, virsh, nft, ip, busybox and node the lab runs (chrooted, on a
   * tmpfs overlay). Default: the machine's own.
   */
  root?: string;
  /** `firewall_backend` in the lab's libvirt network.conf (libvirt >= 10.4). Default: libvirt's choice. */
  firewallBackend?: 'nftables' | 'iptables';
}

/** A further network namespace inside the lab (lab.addNetns()). */
export interface LabNetns {
  readonly name: string;
  /** PID of the holder (`ip link ... netns PID`). */
  readonly pid: number;
  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  command: string;
}

export interface ExecOptions {
  /** Kill the command after this many ms (default 30 s). */
  timeoutMs?: number;
  /** Extra environment (added to process.env and lab.env). */
  env?: Record<string, string | undefined>;
  /** Throw on a non-zero exit (default true). */
  reject?: boolean;
}

export interface TcpListener {
  port: number;
  /** Peer addresses of accepted connections, in order. */
  readonly peers: string[];
  /** Peer source ports of accepted connections, in the same order. */
  readonly peerPorts: number[];
  /** Resolves with the peer address of the next (or an already seen, index `n`) connection. */
  waitForPeer(timeoutMs?: number, n?: number): Promise<string>;
  close(): Promise<void>;
}

export interface TcpProbeResult {
  ok: boolean;
  /** The guest's source address as it saw it (when ok). */
  localAddress?: string;
  output: string;
  ms: number;
}

/** Where tcpListen()/tcpProbe() run and on what address (all optional; defaults as before). */
export interface TcpWhere {
  /** Namespace (default: wan for listeners, guest for probes). */
  in?: 'wan' | 'guest' | 'host' | LabNetns;
  /** Listen address (default 0.0.0.0; '::' for IPv6 + IPv4) or the probe's source address. */
  address?: string;
}

export interface DhcpOptions {
  /** udhcpc discover attempts, 1 s apart (default 10). */
  tries?: number;
  /** Guest interface (default eth0). */
  iface?: string;
  /** Bridge to enslave the guest port to first, if it is not on one (default virbr0). */
  bridge?: string;
}

export interface LabNamespaces {
  /** e.g. "mnt:[4026532316]" */
  mnt: string;
  hostNet: string;
  wanNet?: string;
  guestNet?: string;
}

export interface StopReport {
  /** PIDs the lab signalled by name of role (libvirtd, dnsmasq, bus, ...). */
  killed: Array<{ pid: number; role: string }>;
  /** PIDs that were still in a lab namespace after that and were SIGKILLed. */
  stragglers: Array<{ pid: number; comm: string }>;
  /** Processes still in a lab namespace at the end (should be empty). */
  remaining: number[];
  errors: string[];
}

/** What startLab() throws: the cause, plus proof of the cleanup. */
export class LabStartError extends Error {
  constructor(
    message: string,
    readonly namespaces: LabNamespaces,
    readonly stopReport: StopReport,
  ) {
    super(message);
    this.name = 'LabStartError';
  }
}

export interface Lab {
  readonly id: string;
  /** PID of the helper that holds the host mount + net namespaces. */
  readonly hostPid: number;
  readonly wanPid: number;
  readonly guestPid: number;
  readonly busPid: number;
  readonly namespaces: LabNamespaces;
  /** Environment for processes in the lab (DBUS_SYSTEM_BUS_ADDRESS, LIBVIRT_DEFAULT_URI). */
  readonly env: Readonly<Record<string, string>>;
  /** Timings of startLab() phases in ms. */
  readonly timings: Readonly<Record<string, number>>;
  /** The test root the lab runs in (option `root`), or undefined for the machine's own. */
  readonly root: string | undefined;
  /** libvirt's firewall backend as configured (option `firewallBackend`), or undefined. */
  readonly firewallBackend: 'nftables' | 'iptables' | undefined;
  /** The node binary to run inside the lab: the root's /usr/bin/node, else this process's. */
  readonly node: string;

  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  virsh(...args: string[]): Promise<ExecResult>;
  nft(...args: string[]): Promise<ExecResult>;
  nftJson(): Promise<{ nftables: Array<Record<string, unknown>> }>;
  inWan(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  inGuest(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Put the guest's host-side port on `bridge` (default virbr0), idempotent. */
  attachGuest(bridge?: string): Promise<void>;
  /** DHCP in the guest with busybox udhcpc; resolves with the leased address, rejects if none. */
  dhcp(opts?: DhcpOptions): Promise<string>;
  /** Static guest address instead of DHCP (e.g. '192.168.122.50/24', gateway 192.168.122.1). */
  guestStatic(cidr: string, gateway?: string): Promise<void>;
  tcpListen(port: number, where?: TcpWhere): Promise<TcpListener>;
  tcpProbe(host: string, port: number, timeoutMs?: number, where?: TcpWhere): Promise<TcpProbeResult>;
  /**
   * Spawn a long-running process inside the lab (its mount namespace, and the
   * host's network namespace or `where`'s) with lab.env + `env`; killed
   * (SIGTERM, then SIGKILL) at stop(). stdin, stdout and stderr are pipes: read
   * stdout/stderr (or call .resume()), or a chatty child blocks once a pipe is
   * full. child.pid is the command's own PID (nsenter -m -n execs it without
   * forking), so signals reach it directly.
   */
  spawnInLab(
    cmd: string,
    args?: readonly string[],
    env?: Record<string, string | undefined>,
    where?: TcpWhere['in'],
  ): ChildProcess;
  /** A path inside the lab's mount namespace as reachable from outside (via /proc/PID/root). */
  path(p: string): string;
  /** Last `n` lines of the lab's libvirtd log. */
  libvirtdLog(n?: number): string;
  libvirtdPid(): number | undefined;
  /** PIDs from /run/libvirt/network/*.pid (dnsmasq of running networks). */
  dnsmasqPids(): number[];
  restartLibvirtd(): Promise<void>;
  /** All processes currently inside one of the lab's namespaces. */
  processes(): number[];
  /** A new network namespace inside the lab (same mount namespace/root), held until stop(). */
  addNetns(name: string): Promise<LabNetns>;
  /** Lines of tc-csum-wrapper.sh's log: `tc ... csum` failures ignored (option `root` only). */
  tcCsumIgnored(): string[];
  /**
   * Makes directory `dir` (a path inside the lab) private to the lab: an
   * overlay whose upper layer is on the lab's tmpfs /run, so its content stays
   * visible and everything written there stays in the lab (the machine's copy,
   * or the test root's, is never written to). Idempotent; undone at stop (the
   * mount namespace goes away) or by releaseDir().
   */
  privateDir(dir: string): Promise<void>;
  /** Undoes privateDir(dir): unmounts the overlay, dropping what was written. */
  releaseDir(dir: string): Promise<void>;
  stop(): Promise<StopReport>;
}

// ---------------------------------------------------------------------------
// small utilities

function nsOf(pid: number, kind: 'mnt' | 'net'): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // a zombie counts as gone
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/**
 * PIDs of all processes whose mount or network namespace is one of `nsIds`
 * (strings like "mnt:[4026532316]" / "net:[4026532319]"). Never PID 1 or us.
 */
export function processesInNamespaces(nsIds: readonly string[]): number[] {
  const wanted = new Set(nsIds.filter((s) => /^(mnt|net):\[\d+\]$/.test(s)));
  if (wanted.size === 0) return [];
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === 1 || pid === process.pid) continue;
    const m = nsOf(pid, 'mnt');
    const n = nsOf(pid, 'net');
    if ((m !== undefined && wanted.has(m)) || (n !== undefined && wanted.has(n))) {
      if (alive(pid)) out.push(pid);
    }
  }
  return out;
}

function kill(pid: number, sig: NodeJS.Signals): boolean {
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Waits up to `timeoutMs` for the processes to be gone; returns those still alive. */
async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  await waitUntil(`pids ${pids.join(' ')} gone`, timeoutMs, () => !pids.some(alive), { intervalMs: 25 }).catch(
    () => undefined,
  );
  return pids.filter(alive);
}

/** The PID a pid file names (> 1), or undefined (no file, no number). */
function readPidFile(path: string): number | undefined {
  const n = existsSync(path) ? Number(readFileSync(path, 'utf8').trim()) : NaN;
  return Number.isInteger(n) && n > 1 ? n : undefined;
}

/** Runs `cmd` with exactly `opts.env` (the caller merges process.env in). */
async function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.env ?? process.env)) if (v !== undefined) env[k] = v;
  const r = await execa(cmd, [...args], {
    reject: false,
    timeout: opts.timeoutMs ?? 30_000,
    env,
    extendEnv: false,
    stdin: 'ignore',
    stripFinalNewline: false,
  });
  const res: ExecResult = {
    exitCode: typeof r.exitCode === 'number' ? r.exitCode : -1,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    timedOut: Boolean(r.timedOut),
    command: [cmd, ...args].join(' '),
  };
  return res;
}

function failure(what: string, r: ExecResult, extra = ''): Error {
  return new Error(
    `${what} failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''}): ${r.command}\n` +
      `stdout: ${r.stdout.trimEnd()}\nstderr: ${r.stderr.trimEnd()}${extra}`,
  );
}

/** Wait for one line on a child's stdout that matches `re`. */
function waitForLine(child: ChildProcess, re: RegExp, timeoutMs: number, what: string): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let errBuf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        const m = line.match(re);
        if (m) {
          cleanup();
          resolve(m);
          return;
        }
      }
    };
    const onErr = (d: Buffer) => {
      errBuf += d.toString();
    };
    const onExit = (code: number | null, sig: string | null) => {
      cleanup();
      reject(
        new Error(`${what}: exited (code ${code}, signal ${sig}) before ready\nstdout: ${buf}\nstderr: ${errBuf}`),
      );
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: not ready after ${timeoutMs} ms\nstdout: ${buf}\nstderr: ${errBuf}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onErr);
    child.on('exit', onExit);
  });
}

// ---------------------------------------------------------------------------
// process-exit safety net: if the test process exits without stop(), kill
// whatever is still in a lab's namespaces (synchronously).

const liveLabs = new Set<LabImpl>();
process.once('exit', () => {
  for (const lab of liveLabs) lab.emergencyKill();
});

let labCounter = 0;

class LabImpl implements Lab {
  readonly id: string;
  hostPid = 0;
  wanPid = 0;
  guestPid = 0;
  busPid = 0;
  namespaces: LabNamespaces = { mnt: '', hostNet: '' };
  readonly env: Record<string, string> = {
    DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${LAB_PATHS.busSocket}`,
    LIBVIRT_DEFAULT_URI: LIBVIRT_URI,
  };
  timings: Record<string, number> = {};
  readonly root: string | undefined;
  readonly firewallBackend: 'nftables' | 'iptables' | undefined;
  readonly node: string;

  private helper?: ChildProcess;
  private holders: ChildProcess[] = [];
  private children = new Set<ChildProcess>();
  private startedPids = new Map<number, string>();
  /** privateDir() overlays: directory -> its layer folder under LAB_PATHS.privateDirs. */
  private readonly privateDirs = new Map<string, string>();
  private stopped = false;
  private readonly debugOn: boolean;

  constructor(opts: LabOptions) {
    labCounter += 1;
    this.id = `kvl-${process.pid}-${labCounter}`;
    this.debugOn = opts.debug ?? Boolean(process.env.KVMNFTD_LAB_DEBUG);
    this.root = opts.root;
    this.firewallBackend = opts.firewallBackend;
    this.node = opts.root !== undefined ? '/usr/bin/node' : process.execPath;
  }

  /** Environment of every lab process: ours + lab.env + extra; a root gets no NODE_EXTRA_CA_CERTS (a host file). */
  private procEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
    const env: Record<string, string | undefined> = { ...process.env, ...this.env, ...extra };
    if (this.root !== undefined) delete env['NODE_EXTRA_CA_CERTS'];
    return env;
  }

  private debug(msg: string): void {
    if (this.debugOn) process.stderr.write(`[${this.id}] ${msg}\n`);
  }

  // ---- start ---------------------------------------------------------------

  async start(opts: LabOptions): Promise<void> {
    const t0 = Date.now();
    const mark = (name: string, since: number) => {
      this.timings[name] = Date.now() - since;
      this.debug(`${name}: ${this.timings[name]} ms`);
    };
    liveLabs.add(this);

    // 1. the host: mount + net namespaces held by lab-ns.sh
    let t = Date.now();
    const labEnv: Record<string, string> = {};
    if (opts.firewallBackend !== undefined) labEnv['LAB_FIREWALL_BACKEND'] = opts.firewallBackend;
    if (opts.root !== undefined) {
      labEnv['LAB_ROOT'] = opts.root;
      labEnv['LAB_TC_WRAPPER'] = LAB_FILES.tcWrapper;
      const binds = new Set([REPO_DIR, realpathSync(REPO_DIR), tmpdir(), realpathSync(tmpdir())]);
      // A worktree's node_modules may be a link to another checkout's: the daemon's imports need its target too.
      const modules = realpathSync(join(REPO_DIR, 'node_modules'));
      if (!modules.startsWith(`${realpathSync(REPO_DIR)}/`)) binds.add(modules);
      labEnv['LAB_BIND'] = [...binds].join(':');
    }
    const helper = spawn(
      'unshare',
      ['--mount', '--net', '--fork', '--kill-child', '--', 'bash', LAB_FILES.setupScript, LAB_DIR],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, ...labEnv },
      },
    );
    this.helper = helper;
    if (helper.pid !== undefined) this.startedPids.set(helper.pid, 'unshare');
    const m = await waitForLine(helper, /^READY (\d+)$/, 15_000, 'lab namespace helper (lab-ns.sh)');
    this.hostPid = Number(m[1]);
    this.startedPids.set(this.hostPid, 'lab-ns.sh');
    this.namespaces = { mnt: nsOf(this.hostPid, 'mnt') ?? '', hostNet: nsOf(this.hostPid, 'net') ?? '' };
    if (!this.namespaces.mnt || !this.namespaces.hostNet || this.namespaces.mnt === nsOf(process.pid, 'mnt')) {
      throw new Error(`lab helper ${this.hostPid} has no private namespaces (${JSON.stringify(this.namespaces)})`);
    }
    mark('namespaces', t);

    // 2. wan and guest network namespaces, inside the lab's mount namespace
    t = Date.now();
    this.wanPid = await this.holdNetns('wan');
    this.guestPid = await this.holdNetns('guest');
    this.namespaces.wanNet = nsOf(this.wanPid, 'net');
    this.namespaces.guestNet = nsOf(this.guestPid, 'net');
    await this.plumb();
    mark('netns+veth', t);

    // 3. the admin's ruleset, before libvirtd (as at boot)
    const ruleset = opts.ruleset === undefined ? LAB_FILES.adminRuleset : opts.ruleset;
    if (ruleset !== false) {
      t = Date.now();
      await this.exec('nft', ['-f', ruleset]);
      mark('ruleset', t);
    }

    // 4. the system bus
    t = Date.now();
    const bus = await this.exec('dbus-daemon', [
      `--config-file=${LAB_PATHS.busConfig}`,
      '--fork',
      '--print-pid',
      '--print-address',
    ]);
    const lines = bus.stdout.trim().split('\n');
    const busPid = Number(lines[lines.length - 1]);
    if (!Number.isInteger(busPid) || busPid <= 1) throw failure('dbus-daemon (no pid printed)', bus);
    this.busPid = busPid;
    this.startedPids.set(busPid, 'dbus-daemon');
    mark('bus', t);

    // 5. libvirtd
    if (opts.libvirtd !== false) {
      t = Date.now();
      await this.startLibvirtd();
      mark('libvirtd', t);
    }

    if (opts.defaultNetwork === 'define' || opts.defaultNetwork === 'start') {
      await this.virsh('net-define', LAB_FILES.defaultNetworkXml);
      if (opts.defaultNetwork === 'start') {
        t = Date.now();
        await this.virsh('net-start', 'default');
        mark('net-start', t);
      }
    }
    for (const xml of opts.networks ?? []) {
      const r = await this.virsh('net-define', xml);
      const name = r.stdout.match(/^Network (\S+) defined/m)?.[1];
      if (name === undefined) throw failure('net-define (no network name in output)', r);
      await this.virsh('net-start', name);
    }
    mark('total', t0);
  }

  /** nsenter's -r -w (root and directory of the target) when the lab runs in a test root. */
  private rootArgs(): string[] {
    return this.root !== undefined ? ['-r', '-w'] : [];
  }

  async addNetns(name: string): Promise<LabNetns> {
    if (!this.hostPid || this.stopped) throw new Error('lab is not running');
    const pid = await this.holdNetns(name);
    await this.execAt(pid, name, 'ip', ['link', 'set', 'lo', 'up']);
    return { name, pid, exec: (cmd, args = [], opts = {}) => this.execAt(pid, name, cmd, args, opts) };
  }

  async privateDir(dir: string): Promise<void> {
    if (!dir.startsWith('/') || dir.includes('..')) throw new Error(`privateDir: not an absolute path: ${dir}`);
    if (this.privateDirs.has(dir)) return;
    const layer = `${LAB_PATHS.privateDirs}/${dir.slice(1).replace(/\//g, '_')}`;
    await this.exec('mkdir', ['-p', `${layer}/upper`, `${layer}/work`]);
    await this.exec('mount', [
      '-t',
      'overlay',
      'kvmnftd-lab-private',
      '-o',
      `lowerdir=${dir},upperdir=${layer}/upper,workdir=${layer}/work`,
      dir,
    ]);
    this.privateDirs.set(dir, layer);
  }

  async releaseDir(dir: string): Promise<void> {
    const layer = this.privateDirs.get(dir);
    if (layer === undefined) return;
    await this.exec('umount', [dir]);
    await this.exec('rm', ['-rf', '--one-file-system', layer]);
    this.privateDirs.delete(dir);
  }

  tcCsumIgnored(): string[] {
    if (!this.hostPid) return [];
    try {
      return readFileSync(this.path(LAB_PATHS.tcCsumLog), 'utf8')
        .split('\n')
        .filter((l) => l !== '');
    } catch {
      return [];
    }
  }

  /** A process that holds a new network namespace inside the lab's mount namespace. */
  private async holdNetns(role: string): Promise<number> {
    const child = spawn(
      'nsenter',
      ['-t', String(this.hostPid), '-m', ...this.rootArgs(), '--', 'unshare', '--net', '--', 'cat'],
      {
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    );
    this.holders.push(child);
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not spawn the ${role} namespace holder`);
    this.startedPids.set(pid, `${role}-netns`);
    // nsenter (no fork for -m) execs unshare, which execs cat in the new netns
    return waitUntil(
      `the ${role} namespace holder in its own network namespace`,
      5000,
      () => {
        if (child.exitCode !== null) throw new Error(`${role} namespace holder exited (${child.exitCode})`);
        const net = nsOf(pid, 'net');
        return net && net !== this.namespaces.hostNet && net !== nsOf(process.pid, 'net') && comm(pid) === 'cat'
          ? pid
          : undefined;
      },
      { intervalMs: 10 },
    );
  }

  private async plumb(): Promise<void> {
    const h = (...a: string[]) => this.exec('ip', a);
    const w = (...a: string[]) => this.inWan('ip', a);
    const g = (...a: string[]) => this.inGuest('ip', a);
    await w('link', 'set', 'lo', 'up');
    await g('link', 'set', 'lo', 'up');
    // host eth0 <-> wan eth0
    await h('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(this.wanPid));
    await h('addr', 'add', `${HOST_WAN_ADDR}/24`, 'dev', 'eth0');
    await h('link', 'set', 'eth0', 'up');
    await h('route', 'add', 'default', 'via', WAN_ADDR);
    await w('addr', 'add', `${WAN_ADDR}/24`, 'dev', 'eth0');
    await w('link', 'set', 'eth0', 'up');
    // host vguest0 <-> guest eth0 (enslaved to a bridge later)
    await h('link', 'add', GUEST_PORT, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(this.guestPid));
    await h('link', 'set', GUEST_PORT, 'up');
    await g('link', 'set', 'eth0', 'up');
  }

  private async startLibvirtd(): Promise<void> {
    await this.exec('libvirtd', ['-d']);
    await waitUntil(
      'libvirtd to answer `virsh uri`',
      15_000,
      async () => {
        const pid = this.libvirtdPid();
        if (pid === undefined) return false;
        this.startedPids.set(pid, 'libvirtd');
        return (
          (await this.exec('virsh', ['-c', LIBVIRT_URI, 'uri'], { reject: false, timeoutMs: 5000 })).exitCode === 0
        );
      },
      { intervalMs: 50, detail: () => this.logSuffix() },
    );
  }

  // ---- helpers -------------------------------------------------------------

  path(p: string): string {
    return `/proc/${this.hostPid}/root${p.startsWith('/') ? p : `/${p}`}`;
  }

  libvirtdLog(n = 50): string {
    try {
      const lines = readFileSync(this.path(LAB_PATHS.libvirtdLog), 'utf8').trimEnd().split('\n');
      return lines.slice(-n).join('\n');
    } catch (e) {
      return `(no libvirtd log: ${e instanceof Error ? e.message : String(e)})`;
    }
  }

  private logSuffix(): string {
    return `\n--- last 50 lines of the lab's ${LAB_PATHS.libvirtdLog} ---\n${this.libvirtdLog(50)}`;
  }

  libvirtdPid(): number | undefined {
    if (!this.hostPid) return undefined;
    const pid = readPidFile(this.path(LAB_PATHS.libvirtdPid));
    return pid !== undefined && alive(pid) ? pid : undefined;
  }

  dnsmasqPids(): number[] {
    if (!this.hostPid) return [];
    const dir = this.path(LAB_PATHS.networkStatusDir);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return [];
    }
    const out: number[] = [];
    for (const f of names) {
      if (!f.endsWith('.pid') || f === 'driver.pid') continue;
      const pid = readPidFile(join(dir, f));
      if (pid !== undefined && alive(pid)) out.push(pid);
    }
    return out;
  }

  private nsenterArgs(pid: number, cmd: string, args: readonly string[]): string[] {
    return ['-t', String(pid), '-m', '-n', ...this.rootArgs(), '--', cmd, ...args];
  }

  private async execAt(
    pid: number,
    where: string,
    cmd: string,
    args: readonly string[],
    opts: ExecOptions = {},
  ): Promise<ExecResult> {
    if (!pid) throw new Error(`lab ${where} namespace is not up`);
    const r = await run('nsenter', this.nsenterArgs(pid, cmd, args), { ...opts, env: this.procEnv(opts.env) });
    r.command = `[${where}] ${[cmd, ...args].join(' ')}`;
    if (opts.reject !== false && r.exitCode !== 0) {
      throw failure(`lab ${where} command`, r, cmd === 'virsh' || cmd === 'libvirtd' ? this.logSuffix() : '');
    }
    return r;
  }

  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execAt(this.hostPid, 'host', cmd, args, opts);
  }

  inWan(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execAt(this.wanPid, 'wan', cmd, args, opts);
  }

  inGuest(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execAt(this.guestPid, 'guest', cmd, args, opts);
  }

  virsh(...args: string[]): Promise<ExecResult> {
    return this.exec('virsh', ['-c', LIBVIRT_URI, ...args]);
  }

  nft(...args: string[]): Promise<ExecResult> {
    return this.exec('nft', args);
  }

  async nftJson(): Promise<{ nftables: Array<Record<string, unknown>> }> {
    const r = await this.exec('nft', ['-j', 'list', 'ruleset']);
    return JSON.parse(r.stdout) as { nftables: Array<Record<string, unknown>> };
  }

  attachGuest(bridge = 'virbr0'): Promise<void> {
    return attachPort(this, GUEST_PORT, bridge);
  }

  private async guestPortMaster(): Promise<string | undefined> {
    const r = await this.exec('ip', ['-j', 'link', 'show', 'dev', GUEST_PORT]);
    const info = JSON.parse(r.stdout) as Array<{ master?: string }>;
    return info[0]?.master;
  }

  async dhcp(opts: DhcpOptions = {}): Promise<string> {
    const bridge = opts.bridge ?? 'virbr0';
    if ((await this.guestPortMaster()) !== bridge) await this.attachGuest(bridge);
    return udhcpc('guest', (cmd, args, o) => this.inGuest(cmd, args, o), opts);
  }

  async guestStatic(cidr: string, gateway = '192.168.122.1'): Promise<void> {
    if ((await this.guestPortMaster()) === undefined) await this.attachGuest();
    await this.inGuest('ip', ['-4', 'addr', 'flush', 'dev', 'eth0']);
    await this.inGuest('ip', ['addr', 'add', cidr, 'dev', 'eth0']);
    await this.inGuest('ip', ['route', 'replace', 'default', 'via', gateway, 'dev', 'eth0']);
  }

  private track(child: ChildProcess, role: string): ChildProcess {
    this.children.add(child);
    if (child.pid !== undefined) this.startedPids.set(child.pid, role);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  spawnInLab(
    cmd: string,
    args: readonly string[] = [],
    env: Record<string, string | undefined> = {},
    where: TcpWhere['in'] = 'host',
  ): ChildProcess {
    if (!this.hostPid || this.stopped) throw new Error('lab is not running');
    // nsenter with -m -n does not fork: the child's PID is the command's PID.
    const child = spawn('nsenter', this.nsenterArgs(this.wherePid({ in: where }, 'wan').pid, cmd, args), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: this.procEnv(env),
    });
    return this.track(child, `spawn:${cmd}`);
  }

  private wherePid(where: TcpWhere | undefined, dflt: 'wan' | 'guest'): { pid: number; name: string } {
    const w = where?.in ?? dflt;
    if (typeof w !== 'string') return { pid: w.pid, name: w.name };
    return { pid: w === 'wan' ? this.wanPid : w === 'guest' ? this.guestPid : this.hostPid, name: w };
  }

  async tcpListen(port: number, where?: TcpWhere): Promise<TcpListener> {
    const at = this.wherePid(where, 'wan');
    const child = this.track(
      spawn(
        'nsenter',
        this.nsenterArgs(at.pid, this.node, [
          LAB_FILES.tcpListen,
          String(port),
          ...(where?.address !== undefined ? [where.address] : []),
        ]),
        {
          stdio: ['pipe', 'pipe', 'pipe'],
          env: this.procEnv(),
        },
      ),
      `tcp-listen:${port}`,
    );
    const peers: string[] = [];
    const peerPorts: number[] = [];
    const waiters: Array<() => void> = [];
    onLines(child.stdout, (line) => {
      const m = line.match(/^ACCEPT (\S+) (\d+)$/);
      if (m && m[1] !== undefined) {
        peers.push(m[1].replace(/^::ffff:/, ''));
        peerPorts.push(Number(m[2]));
        for (const w of waiters.splice(0)) w();
      }
    });
    await waitForLine(child, /^LISTENING \d+$/, 10_000, `tcp listener on ${at.name}:${port}`);
    return {
      port,
      peers,
      peerPorts,
      waitForPeer: (timeoutMs = 5000, n = peers.length) =>
        new Promise<string>((resolve, reject) => {
          const check = () => {
            const p = peers[n];
            if (p !== undefined) {
              clearTimeout(timer);
              resolve(p);
              return true;
            }
            return false;
          };
          const timer = setTimeout(
            () => reject(new Error(`no connection #${n + 1} on ${at.name}:${port} within ${timeoutMs} ms`)),
            timeoutMs,
          );
          if (!check()) waiters.push(() => void check());
        }),
      close: async () => {
        child.stdin?.end();
        kill(child.pid ?? 0, 'SIGTERM');
        if (child.pid !== undefined) await waitGone([child.pid], 2000);
      },
    };
  }

  async tcpProbe(host: string, port: number, timeoutMs = 3000, where?: TcpWhere): Promise<TcpProbeResult> {
    const t = Date.now();
    const at = this.wherePid(where, 'guest');
    const args = [
      LAB_FILES.tcpProbe,
      host,
      String(port),
      String(timeoutMs),
      ...(where?.address !== undefined ? [where.address] : []),
    ];
    const r = await this.execAt(at.pid, at.name, this.node, args, { reject: false, timeoutMs: timeoutMs + 5000 });
    const m = r.stdout.match(/^CONNECTED (\S+) \d+$/m);
    const res: TcpProbeResult = {
      ok: r.exitCode === 0 && m !== null,
      output: (r.stdout + r.stderr).trim(),
      ms: Date.now() - t,
    };
    if (m && m[1] !== undefined) res.localAddress = m[1];
    return res;
  }

  async restartLibvirtd(): Promise<void> {
    const pid = this.libvirtdPid();
    if (pid !== undefined) {
      kill(pid, 'SIGTERM');
      const left = await waitGone([pid], 10_000);
      if (left.length > 0) {
        kill(pid, 'SIGKILL');
        await waitGone([pid], 2000);
      }
    }
    await this.startLibvirtd();
  }

  processes(): number[] {
    const ns = [
      this.namespaces.mnt,
      this.namespaces.hostNet,
      this.namespaces.wanNet ?? '',
      this.namespaces.guestNet ?? '',
    ];
    return processesInNamespaces(ns);
  }

  // ---- stop ----------------------------------------------------------------

  /** Synchronous last resort (process exit): SIGKILL everything in the lab's namespaces. */
  emergencyKill(): void {
    for (const pid of this.startedPids.keys()) kill(pid, 'SIGKILL');
    for (const pid of this.processes()) kill(pid, 'SIGKILL');
  }

  async stop(): Promise<StopReport> {
    const report: StopReport = { killed: [], stragglers: [], remaining: [], errors: [] };
    if (this.stopped) return report;
    this.stopped = true;
    const term = async (pids: Array<{ pid: number; role: string }>, graceMs: number) => {
      const live = pids.filter((p) => alive(p.pid));
      for (const p of live) if (kill(p.pid, 'SIGTERM')) report.killed.push(p);
      const left = await waitGone(
        live.map((p) => p.pid),
        graceMs,
      );
      for (const pid of left) kill(pid, 'SIGKILL');
      await waitGone(left, 2000);
    };
    try {
      // 1. what tests spawned (daemon under test, listeners, monitors)
      await term(
        [...this.children].flatMap((c) =>
          c.pid !== undefined ? [{ pid: c.pid, role: this.startedPids.get(c.pid) ?? 'child' }] : [],
        ),
        3000,
      );
      // 2. libvirtd, then the dnsmasq of every network (pid files in the lab's /run), libvirt-dbus, the bus
      const infra: Array<{ pid: number; role: string }> = [];
      const lv = this.libvirtdPid();
      if (lv !== undefined) infra.push({ pid: lv, role: 'libvirtd' });
      await term(infra, 5000);
      const dns = this.dnsmasqPids().map((pid) => ({ pid, role: 'dnsmasq' }));
      const libvirtDbus = this.processes().filter(
        (pid) => comm(pid) === 'libvirt-dbus' && nsOf(pid, 'mnt') === this.namespaces.mnt,
      );
      await term([...dns, ...libvirtDbus.map((pid) => ({ pid, role: 'libvirt-dbus (activated)' }))], 3000);
      if (this.busPid) await term([{ pid: this.busPid, role: 'dbus-daemon' }], 3000);
      // 3. safety net, while the holders still pin the namespaces: anything
      //    else inside one (e.g. dnsmasq's script helper) is the lab's. Once a
      //    namespace is gone its inode number can be reused by a namespace of
      //    some other test, so namespaces are never matched after step 4.
      const holderPids = new Set(
        [...this.holders.map((h) => h.pid), this.hostPid, this.helper?.pid].filter((p): p is number => p !== undefined),
      );
      const left = this.processes().filter((pid) => !holderPids.has(pid));
      for (const pid of left) {
        report.stragglers.push({ pid, comm: comm(pid) });
        kill(pid, 'SIGKILL');
      }
      await waitGone(left, 3000);
      report.remaining = left.filter((pid) => alive(pid));
      // 4. namespace holders and the helper
      for (const h of this.holders) h.stdin?.end();
      this.helper?.stdin?.end();
      await term(
        [
          ...this.holders.flatMap((h) => (h.pid !== undefined ? [{ pid: h.pid, role: 'netns holder' }] : [])),
          ...(this.hostPid ? [{ pid: this.hostPid, role: 'lab-ns.sh' }] : []),
          ...(this.helper?.pid !== undefined ? [{ pid: this.helper.pid, role: 'unshare' }] : []),
        ],
        2000,
      );
      report.remaining.push(...[...holderPids].filter((pid) => alive(pid)));
    } catch (e) {
      report.errors.push(e instanceof Error ? e.message : String(e));
    }
    if (report.remaining.length > 0) report.errors.push(`lab processes still alive: ${report.remaining.join(', ')}`);
    liveLabs.delete(this);
    this.debug(`stopped: ${JSON.stringify(report)}`);
    return report;
  }
}

/**
 * Build a lab (see the module comment). On any failure everything started so
 * far is torn down and the error (with the libvirtd log tail) is thrown.
 */
export async function startLab(opts: LabOptions = {}): Promise<Lab> {
  if (process.getuid?.() !== 0) throw new Error('the libvirt lab needs root');
  if (!existsSync(LAB_FILES.setupScript)) throw new Error(`the libvirt lab needs ${LAB_FILES.setupScript}`);
  const root = opts.root ?? '';
  for (const f of [
    '/usr/sbin/libvirtd',
    '/usr/bin/dbus-daemon',
    '/usr/sbin/libvirt-dbus',
    '/usr/bin/busybox',
    ...(opts.root !== undefined ? ['/usr/bin/node', '/usr/sbin/tc'] : []),
  ]) {
    if (!existsSync(root + f)) {
      throw new Error(
        opts.root !== undefined
          ? `the test root ${opts.root} lacks ${f} (rebuild it: test/lab/trixie-root.sh)`
          : `the libvirt lab needs ${f} (see .ci/install-deps)`,
      );
    }
  }
  const lab = new LabImpl(opts);
  try {
    await lab.start(opts);
    return lab;
  } catch (e) {
    const log = lab.hostPid ? `\n--- last 50 lines of the lab's libvirtd log ---\n${lab.libvirtdLog(50)}` : '';
    const report = await lab.stop();
    const msg = e instanceof Error ? e.message : String(e);
    throw new LabStartError(
      `startLab failed: ${msg}${msg.includes('libvirtd log') ? '' : log}\n(cleanup: ${JSON.stringify(report)})`,
      { ...lab.namespaces },
      report,
    );
  }
}

/** Puts host port `port` on `bridge` and up (idempotent: also what re-attaches it to a re-created bridge). */
export async function attachPort(lab: Pick<Lab, 'exec'>, port: string, bridge: string): Promise<void> {
  await lab.exec('ip', ['link', 'set', port, 'master', bridge]);
  await lab.exec('ip', ['link', 'set', port, 'up']);
}

/**
 * A further guest: network namespace `name` whose eth0 is the peer of host port `port`, on `bridge`; with
 * `cidr` (and `gateway`, the default route) a static IPv4 address, else none yet (netnsDhcp()).
 */
export async function plugNetns(
  lab: Lab,
  name: string,
  port: string,
  bridge: string,
  cidr?: string,
  gateway?: string,
): Promise<LabNetns> {
  const ns = await lab.addNetns(name);
  await lab.exec('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(ns.pid)]);
  await attachPort(lab, port, bridge);
  await ns.exec('ip', ['link', 'set', 'eth0', 'up']);
  if (cidr !== undefined) await ns.exec('ip', ['addr', 'add', cidr, 'dev', 'eth0']);
  if (gateway !== undefined) await ns.exec('ip', ['route', 'add', 'default', 'via', gateway]);
  return ns;
}

/** DHCP in a namespace of lab.addNetns()/plugNetns(), as lab.dhcp() in the guest: resolves with the lease. */
export function netnsDhcp(ns: LabNetns, opts: Omit<DhcpOptions, 'bridge'> = {}): Promise<string> {
  return udhcpc(ns.name, (cmd, args, o) => ns.exec(cmd, args, o), opts);
}

/**
 * busybox udhcpc's arguments with the lab's script (address and default route set, `LEASE ...` printed):
 * in the foreground, `tries` discover packets 1 s apart, 1 s between rounds, then `extra`.
 */
export function udhcpcArgs(iface: string, tries: number, ...extra: string[]): string[] {
  return [
    'udhcpc',
    '-i',
    iface,
    '-f',
    '-t',
    String(tries),
    '-T',
    '1',
    '-A',
    '1',
    '-s',
    LAB_PATHS.udhcpcScript,
    ...extra,
  ];
}

/** busybox udhcpc with the lab's script, quitting once leased (or failing: -n); the address. */
async function udhcpc(who: string, exec: LabNetns['exec'], opts: Omit<DhcpOptions, 'bridge'>): Promise<string> {
  const tries = opts.tries ?? 10;
  const r = await exec('busybox', udhcpcArgs(opts.iface ?? 'eth0', tries, '-n', '-q'), {
    reject: false,
    timeoutMs: (tries + 10) * 1000,
  });
  const m = r.stdout.match(/^LEASE (\d+\.\d+\.\d+\.\d+)\/(\d+)/m);
  if (r.exitCode !== 0 || !m || m[1] === undefined) throw failure(`${who} DHCP (${tries} tries)`, r);
  return m[1];
}

/**
 * A method call on the lab's system bus (`dbus-send --system --print-reply`):
 * dbus-send's printout of the reply. `target` is `DEST PATH`; `method` is
 * `INTERFACE.MEMBER`; args as dbus-send takes them (`string:org.libvirt`).
 */
export async function busCall(lab: Lab, target: string, method: string, ...args: string[]): Promise<string> {
  const [dest = '', path = ''] = target.split(' ');
  const r = await lab.exec('dbus-send', ['--system', '--print-reply', `--dest=${dest}`, path, method, ...args], {
    reject: false,
  });
  return r.stdout;
}

/** The bus itself: `org.freedesktop.DBus /org/freedesktop/DBus`. */
export const BUS = 'org.freedesktop.DBus /org/freedesktop/DBus';
/** libvirt-dbus's connection object. */
export const LIBVIRT_DBUS = 'org.libvirt /org/libvirt/QEMU';

/** PID of the process that owns `name` on the lab's bus (NaN when none does). */
export async function busOwnerPid(lab: Lab, name: string): Promise<number> {
  const reply = await busCall(lab, BUS, 'org.freedesktop.DBus.GetConnectionUnixProcessID', `string:${name}`);
  return Number(/uint32 (\d+)/.exec(reply)?.[1]);
}
