/**
 * A real dockerd (Debian's docker.io) inside the libvirt lab (test/lab/lab.ts):
 * in the lab's mount and network namespaces, with nothing of the machine's
 * Docker state, network or ruleset touched.
 *
 *   - data-root, exec-root, pidfile and API socket under the lab's tmpfs /run
 *     (DOCKER_PATHS); storage driver vfs; no image is ever pulled and no
 *     container is run by Docker: a "container" is a network namespace whose
 *     eth0 is a veth on docker0 (addContainer()), which is all Docker's
 *     firewall rules see of a container;
 *   - /etc/docker (dockerd 20.10 writes key.json there) and /opt (its
 *     containerd creates /opt/containerd) are lab.privateDir() overlays;
 *   - a cgroup2 hierarchy on the lab's /sys/fs/cgroup (the lab's own sysfs has
 *     none, and dockerd refuses to start without cgroups: "Devices cgroup isn't
 *     mounted"); dockerd creates no cgroup because it runs no container;
 *   - dockerd starts its own containerd (exec-root/containerd), and stops it;
 *     it runs under test/lab/reaper.py, a subreaper that reaps what a killed
 *     dockerd leaves (its containerd) at once, as systemd would, and exits
 *     only when all of it is gone.
 *
 * Docker sets `iptables -P FORWARD DROP` only when it switches
 * net.ipv4.ip_forward from 0 to 1 itself (moby libnetwork setupIPForwarding).
 * startDockerd() therefore writes ip_forward=0 in the lab's namespace first
 * (libvirt's net-start has switched it on) and, once the API answers, asserts
 * that `iptables-nft -S FORWARD` shows `-P FORWARD DROP` and that the
 * DOCKER-USER chain exists: without that, a test with Docker proves nothing.
 *
 * br_netfilter acts on the whole machine: dispose() unloads it only if it was
 * not loaded before the first lab dockerd (of any test process) started, is
 * loaded now (a stock kernel: dockerd loads it with modprobe) and no other
 * lab dockerd is still in use (brNfRegister). On a kernel with br_netfilter
 * built in (this machine: CONFIG_BRIDGE_NETFILTER=y, no module support) it is
 * always there and nothing is unloaded; DockerCleanup.brNetfilter says which
 * case applied.
 */
import { request } from 'node:http';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { onLines } from '../helpers/lines.js';
import { waitUntil } from '../helpers/wait.js';
import type { ExecResult, Lab, LabNetns } from './lab.js';

/** Paths inside the lab. */
export const DOCKER_PATHS = {
  base: '/run/kvl-docker',
  dataRoot: '/run/kvl-docker/data',
  execRoot: '/run/kvl-docker/exec',
  pidfile: '/run/kvl-docker/dockerd.pid',
  socket: '/run/kvl-docker/docker.sock',
} as const;

/** Runs dockerd as a service manager would: reaps what dockerd leaves behind (see there). */
const REAPER = join(dirname(fileURLToPath(import.meta.url)), 'reaper.py');

/** Directories dockerd or its containerd write to outside DOCKER_PATHS: private overlays in the lab. */
const PRIVATE_DIRS = ['/etc/docker', '/opt'] as const;

/** Docker's default bridge, as Docker creates it (its default `bip`). */
export const DOCKER0 = { name: 'docker0', addr: '172.17.0.1', prefix: 16 } as const;

/** The sysctl that exists (in every network namespace) exactly when br_netfilter is loaded or built in. */
const BR_NF_SYSCTL = '/proc/sys/net/bridge/bridge-nf-call-iptables';

export type BrNetfilter =
  | 'built into the kernel (nothing to unload)'
  | 'loaded before the first lab dockerd (left loaded)'
  | 'loaded by a lab dockerd (unloaded)'
  | 'loaded by a lab dockerd (another test still uses it)'
  | 'not loaded';

/**
 * br_netfilter bookkeeping shared by every test process on the machine (test
 * files run in parallel, and each may run a dockerd): one file per Dockerd in
 * use, and the state found when the first of them registered. The last one to
 * leave unloads the module if it was not loaded then and is loaded now.
 */
const BR_NF_DIR = join(tmpdir(), 'kvmnftd-test-br_netfilter');
const BR_NF_STATE = join(BR_NF_DIR, 'state');
let brNfTokens = 0;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Registered users whose process still runs (the files of dead ones are removed). */
function brNfUsers(): string[] {
  let names: string[];
  try {
    names = readdirSync(BR_NF_DIR);
  } catch {
    return [];
  }
  return names.filter((n) => {
    const m = /^user-(\d+)-\d+$/.exec(n);
    if (!m) return false;
    if (pidAlive(Number(m[1]))) return true;
    rmSync(join(BR_NF_DIR, n), { force: true });
    return false;
  });
}

function brNfRegister(): { token: string; loadedBefore: boolean } {
  mkdirSync(BR_NF_DIR, { recursive: true });
  if (brNfUsers().length === 0) rmSync(BR_NF_STATE, { force: true }); // left by a run that died
  try {
    writeFileSync(BR_NF_STATE, existsSync(BR_NF_SYSCTL) ? 'loaded\n' : 'not loaded\n', { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const token = `user-${process.pid}-${++brNfTokens}`;
  writeFileSync(join(BR_NF_DIR, token), '');
  return { token, loadedBefore: readFileSync(BR_NF_STATE, 'utf8').trim() === 'loaded' };
}

async function brNfRelease(token: string, loadedBefore: boolean): Promise<BrNetfilter> {
  rmSync(join(BR_NF_DIR, token), { force: true });
  const last = brNfUsers().length === 0;
  if (last) rmSync(BR_NF_STATE, { force: true });
  if (loadedBefore) {
    // A module has /sys/module/NAME/initstate; a built-in one has none (or no directory at all).
    return existsSync('/sys/module/br_netfilter/initstate')
      ? 'loaded before the first lab dockerd (left loaded)'
      : 'built into the kernel (nothing to unload)';
  }
  if (!existsSync(BR_NF_SYSCTL)) return 'not loaded';
  if (!last) return 'loaded by a lab dockerd (another test still uses it)';
  await execa('rmmod', ['br_netfilter']);
  return 'loaded by a lab dockerd (unloaded)';
}

export interface ForwardState {
  /** `-P FORWARD ...` of iptables-nft's ip filter FORWARD (undefined: no such chain). */
  policy: string | undefined;
  /** The DOCKER-USER chain exists in ip filter. */
  dockerUser: boolean;
  /** `iptables-nft -S FORWARD` as printed. */
  text: string;
}

/** A network namespace standing for a container: eth0 on docker0, default route via docker0's address. */
export interface Container {
  readonly netns: LabNetns;
  readonly addr: string;
  /** Host-side veth, a port of docker0. */
  readonly port: string;
}

export interface DockerdOptions {
  /** Extra dockerd arguments. */
  args?: readonly string[];
}

export interface DockerCleanup {
  brNetfilter: BrNetfilter;
  errors: string[];
}

/** `iptables-nft -S [CHAIN]` (table filter) in the lab. */
export async function iptablesS(lab: Lab, chain?: string, table = 'filter', family: 4 | 6 = 4): Promise<ExecResult> {
  const bin = family === 4 ? 'iptables-nft' : 'ip6tables-nft';
  return lab.exec(bin, ['-t', table, '-S', ...(chain !== undefined ? [chain] : [])], { reject: false });
}

/** Docker's FORWARD state in the lab's ip filter table. */
export async function forwardState(lab: Lab): Promise<ForwardState> {
  const fwd = await iptablesS(lab, 'FORWARD');
  const user = await iptablesS(lab, 'DOCKER-USER');
  return {
    policy: /^-P FORWARD (\S+)$/m.exec(fwd.stdout)?.[1],
    dockerUser: user.exitCode === 0 && /^-N DOCKER-USER$/m.test(user.stdout),
    text: fwd.stdout.trimEnd(),
  };
}

/** An HTTP GET on the lab dockerd's API socket (reached through /proc/PID/root). */
function apiGet(lab: Lab, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: lab.path(DOCKER_PATHS.socket), path, method: 'GET', timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`docker API ${path}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

export class Dockerd {
  /** dockerd's log lines (stderr), all starts. */
  readonly logs: string[] = [];
  /** Server version as the API reports it (e.g. "20.10.24+dfsg1"). */
  version = '';
  /** The reaper (test/lab/reaper.py) that runs dockerd. */
  private child: ChildProcess | undefined;
  private dockerdPid: number | undefined;
  /** Resolves when the reaper exits: dockerd and everything it started are gone. */
  private exited: Promise<void> = Promise.resolve();
  private readonly brNf = brNfRegister();
  private readonly containers: Container[] = [];
  private disposed = false;

  constructor(
    readonly lab: Lab,
    private readonly opts: DockerdOptions = {},
  ) {}

  /** dockerd's PID while it (or what it left behind) runs. */
  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.dockerdPid : undefined;
  }

  logTail(n = 30): string {
    return this.logs.slice(-n).join('\n');
  }

  /**
   * Starts dockerd and resolves once its API answers (the "API listen on"
   * line, then GET /_ping) and DOCKER-USER exists. With `forwardingOff`,
   * net.ipv4.ip_forward is set to 0 first, so that dockerd switches it on
   * itself and sets FORWARD DROP: asserted too.
   */
  async start(forwardingOff = false): Promise<void> {
    if (this.pid !== undefined) throw new Error(`dockerd already runs (pid ${this.pid})`);
    const lab = this.lab;
    if (forwardingOff) await lab.exec('busybox', ['sysctl', '-w', 'net.ipv4.ip_forward=0']);
    const child = lab.spawnInLab('python3', [
      REAPER,
      'dockerd',
      '--data-root',
      DOCKER_PATHS.dataRoot,
      '--exec-root',
      DOCKER_PATHS.execRoot,
      '--pidfile',
      DOCKER_PATHS.pidfile,
      '--host',
      `unix://${DOCKER_PATHS.socket}`,
      '--storage-driver',
      'vfs',
      '--iptables=true',
      '--ip-forward=true',
      ...(this.opts.args ?? []),
    ]);
    this.child = child;
    this.dockerdPid = undefined;
    const from = this.logs.length;
    onLines(child.stderr, (line) => this.logs.push(line));
    onLines(child.stdout, (line) => {
      const m = /^PID (\d+)$/.exec(line);
      if (m) this.dockerdPid = Number(m[1]);
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    await waitUntil(
      'dockerd to listen on its API socket',
      60_000,
      () => {
        if (child.exitCode !== null || child.signalCode !== null)
          throw new Error(`dockerd exited (${child.exitCode ?? child.signalCode}):\n${this.logTail()}`);
        return this.dockerdPid !== undefined && this.logs.slice(from).some((l) => l.includes('API listen on'));
      },
      { intervalMs: 25, detail: () => this.logTail() },
    );
    const ping = await apiGet(lab, '/_ping');
    if (ping.status !== 200 || ping.body !== 'OK') throw new Error(`dockerd /_ping: ${ping.status} ${ping.body}`);
    const v = JSON.parse((await apiGet(lab, '/version')).body) as { Version?: string };
    this.version = v.Version ?? '?';
    const st = await forwardState(lab);
    if (!st.dockerUser || (forwardingOff && st.policy !== 'DROP')) {
      throw new Error(
        `dockerd ${this.version} did not set up ${forwardingOff ? "Docker's FORWARD DROP + " : ''}DOCKER-USER:\n` +
          `${st.text}\n${this.logTail()}`,
      );
    }
  }

  /**
   * `signal` (SIGTERM: a clean stop; SIGKILL: a crash) to dockerd by PID;
   * resolves once dockerd and everything it started are gone (the reaper exited).
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    process.kill(pid, signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 20_000))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      process.kill(pid, 'SIGKILL');
      await this.exited;
    }
  }

  /**
   * `systemctl restart docker` (SIGTERM) or a crash and a new start (SIGKILL),
   * by PID; `forwardingOff` as for start().
   */
  async restart(opts: { signal?: 'SIGTERM' | 'SIGKILL'; forwardingOff?: boolean } = {}): Promise<void> {
    await this.stop(opts.signal ?? 'SIGTERM');
    await this.start(opts.forwardingOff ?? false);
  }

  /**
   * A "container": network namespace `name` with eth0 = `addr`/16 in docker0's
   * subnet, default route via docker0's address, its veth peer on docker0
   * (what Docker itself does for a container on the default bridge).
   */
  async addContainer(name: string, addr: string): Promise<Container> {
    const lab = this.lab;
    const netns = await lab.addNetns(name);
    const port = `vethctr${this.containers.length}`;
    await lab.exec('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(netns.pid)]);
    await lab.exec('ip', ['link', 'set', port, 'master', DOCKER0.name]);
    await lab.exec('ip', ['link', 'set', port, 'up']);
    await netns.exec('ip', ['addr', 'add', `${addr}/${DOCKER0.prefix}`, 'dev', 'eth0']);
    await netns.exec('ip', ['link', 'set', 'eth0', 'up']);
    await netns.exec('ip', ['route', 'add', 'default', 'via', DOCKER0.addr]);
    const c = { netns, addr, port };
    this.containers.push(c);
    return c;
  }

  /**
   * Stops dockerd and undoes what it and this harness set up in the lab:
   * container ports, docker0, the private directories; br_netfilter as the
   * module comment says. The lab's stop() is still needed for the rest.
   */
  async dispose(): Promise<DockerCleanup> {
    const errors: string[] = [];
    if (this.disposed) return { brNetfilter: 'not loaded', errors };
    this.disposed = true;
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    await step('stop dockerd', () => this.stop());
    const lab = this.lab;
    for (const c of this.containers) await step(`delete ${c.port}`, () => lab.exec('ip', ['link', 'del', c.port]));
    await step('delete docker0', async () => {
      const r = await lab.exec('ip', ['link', 'show', DOCKER0.name], { reject: false });
      if (r.exitCode === 0) await lab.exec('ip', ['link', 'del', DOCKER0.name]);
    });
    // dockerd bind-mounts its data-root onto itself (mount propagation) and leaves it after a crash.
    await step('unmount dockerd mounts', async () => {
      const info = (await lab.exec('cat', ['/proc/self/mountinfo'])).stdout;
      const targets = info
        .split('\n')
        .map((l) => l.split(' ')[4] ?? '')
        .filter((t) => t === DOCKER_PATHS.base || t.startsWith(`${DOCKER_PATHS.base}/`))
        .sort((a, b) => b.length - a.length);
      for (const t of targets) await lab.exec('umount', ['-l', t]);
    });
    await step('remove dockerd state', () => lab.exec('rm', ['-rf', '--one-file-system', DOCKER_PATHS.base]));
    for (const d of PRIVATE_DIRS) await step(`release ${d}`, () => lab.releaseDir(d));
    let brNetfilter: BrNetfilter = 'not loaded';
    await step('br_netfilter', async () => {
      brNetfilter = await brNfRelease(this.brNf.token, this.brNf.loadedBefore);
    });
    return { brNetfilter, errors };
  }
}

/**
 * Starts a real dockerd in the lab (see the module comment) with Docker's
 * FORWARD DROP in place; throws (with dockerd's log) if it cannot run or if
 * the policy or DOCKER-USER is missing.
 */
export async function startDockerd(lab: Lab, opts: DockerdOptions = {}): Promise<Dockerd> {
  for (const d of PRIVATE_DIRS) await lab.privateDir(d);
  await lab.exec('mkdir', ['-p', DOCKER_PATHS.dataRoot, DOCKER_PATHS.execRoot]);
  const cg = await lab.exec('stat', ['-f', '-c', '%T', '/sys/fs/cgroup']);
  if (cg.stdout.trim() !== 'cgroup2fs') await lab.exec('mount', ['-t', 'cgroup2', 'kvmnftd-lab', '/sys/fs/cgroup']);
  const d = new Dockerd(lab, opts);
  try {
    await d.start(true);
  } catch (e) {
    await d.dispose();
    throw e;
  }
  return d;
}
