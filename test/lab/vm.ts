/**
 * A real libvirt domain in the lab (test/lab/lab.ts): qemu with software
 * emulation (TCG; this machine's /dev/kvm is kvm_pvm and cannot boot a stock
 * kernel), Debian's stock kernel booted directly with a busybox initramfs whose
 * /init is test/lab/vm-init.sh.
 *
 *   - buildVmArtifacts(): `apt-get download` the kernel package that
 *     linux-image-amd64 depends on and busybox-static (Debian 12's busybox is
 *     dynamic) into a cache directory, unpack them (`dpkg-deb -x`), keep
 *     vmlinuz, and write a newc initramfs (uncompressed) with: /bin/busybox,
 *     /init, /udhcpc.script, /dev/console, the NIC's modules (virtio_net or
 *     e1000 are =m in Debian's config) and their dependencies (read from each
 *     .ko's modinfo `depends=`) in load order. Cached; rebuilt only when
 *     missing or when an input (init script, udhcpc script, module set)
 *     changed.
 *   - prepareLabForQemu(): qemu.conf of the LAB (its tmpfs copy of
 *     /etc/libvirt): user/group root, security_driver none, no cgroups, no
 *     namespaces, no dynamic ownership, stdio_handler "file" (no virtlogd);
 *     then (re)starts the lab's libvirtd.
 *   - domainXml() / startGuest(): a transient `<domain type='qemu'>` with
 *     `<interface type='network'>` (libvirt makes the tap and puts it on the
 *     network's bridge), serial console to a file in the lab's
 *     /var/log/libvirt/qemu, <on_poweroff>/<on_reboot>/<on_crash> destroy.
 *     The guest powers itself off after DHCP + one TCP probe; the domain then
 *     disappears (transient).
 *
 * Seen here (Debian 12, qemu 7.2, libvirt 9.0, kernel 6.1.0-56-amd64, 2 cores):
 *   - artifacts cold (2 apt downloads, 71 MB, + unpack + cpio) ~5 s, warm ~0.5 s
 *     (mostly `apt-cache depends`); initramfs 2.4 MB uncompressed;
 *   - the first `virsh create` in a fresh lab takes ~4 s (libvirtd probes the
 *     qemu binary's capabilities; the lab's /var/cache/libvirt is a fresh copy),
 *     later ones ~0.3 s;
 *   - /init runs at guest uptime ~1.5-1.8 s, `virsh create` -> eth0 up 4-9 s of
 *     wall time; dnsmasq's first DHCPOFFER ~3 s after the first discover, so the
 *     lease is at guest uptime ~5 s (boot-to-lease ~8-10 s wall time);
 *   - Debian's busybox is dynamic and busybox-static Conflicts: busybox, so the
 *     static binary is taken from the downloaded .deb, not installed;
 *   - no modinfo on the host (no kmod): module dependencies come from the
 *     `depends=` string in each .ko; Debian 12's modules are plain .ko files
 *     (.ko.xz/.zst, as on Debian 13, are unpacked with xz/zstd; untested here).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import type { Lab } from './lab.js';
import { waitUntil } from '../helpers/wait.js';

const LAB_DIR = dirname(fileURLToPath(import.meta.url));

export const VM_FILES = {
  init: join(LAB_DIR, 'vm-init.sh'),
  udhcpcScript: join(LAB_DIR, 'udhcpc.script'),
} as const;

export const QEMU_BINARY = '/usr/bin/qemu-system-x86_64';
/** Default artifact cache (override with KVMNFTD_VM_CACHE). */
export const DEFAULT_VM_CACHE = '/var/cache/kvmnftd-test/vm';

/** NIC models: the kernel options of their guest driver and the module each builds when =m. */
export const NIC_MODULES = {
  virtio: [
    ['CONFIG_VIRTIO_PCI', 'virtio_pci'],
    ['CONFIG_VIRTIO_NET', 'virtio_net'],
  ],
  e1000: [['CONFIG_E1000', 'e1000']],
} as const;
export type NicModel = keyof typeof NIC_MODULES;

/** Throws a clear error when qemu is not installed (the test must fail, not skip). */
export function requireQemu(): string {
  if (!existsSync(QEMU_BINARY)) {
    throw new Error(
      `${QEMU_BINARY} is missing: install qemu-system-x86 (apt-get install --no-install-recommends qemu-system-x86; see .ci/install-deps)`,
    );
  }
  return QEMU_BINARY;
}

// ---------------------------------------------------------------------------
// newc cpio writer (what the kernel's initramfs unpacker reads)

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

/** An uncompressed "newc" (070701) cpio archive, owner root, mtime 0. */
export function newcCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const put = (name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0], nlink = 1) => {
    const nameBuf = Buffer.from(`${name}\0`);
    const header =
      '070701' +
      [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdev[0], rdev[1], nameBuf.length, 0].map(hex8).join('');
    parts.push(Buffer.from(header, 'ascii'), nameBuf, pad4(110 + nameBuf.length), data, pad4(data.length));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    switch (e.type) {
      case 'dir':
        put(name, 0o040000 | (e.mode ?? 0o755), Buffer.alloc(0), [0, 0], 2);
        break;
      case 'file':
        put(name, 0o100000 | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        put(name, 0o120777, Buffer.from(e.target));
        break;
      case 'char':
        put(name, 0o020000 | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]);
        break;
    }
  }
  ino = 0;
  put('TRAILER!!!', 0, Buffer.alloc(0), [0, 0], 1);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// kernel modules

/** `depends=` of a .ko's .modinfo section (comma separated module names). */
export function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('\0depends=');
  const i = ko.indexOf(key);
  if (i < 0) return [];
  const start = i + key.length;
  const end = ko.indexOf(0, start);
  const v = ko.subarray(start, end < 0 ? undefined : end).toString('ascii');
  return v === '' ? [] : v.split(',').map((s) => s.replace(/-/g, '_'));
}

const MODULE_RE = /^(.+)\.ko(?:\.(xz|zst|gz))?$/;

function findModules(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else {
        const m = ent.name.match(MODULE_RE);
        if (m?.[1] !== undefined) out.set(m[1].replace(/-/g, '_'), p);
      }
    }
  };
  walk(root);
  return out;
}

/** A module's plain ELF bytes (Debian 12 ships plain .ko; Debian 13 .ko.xz). */
export function readModule(path: string): Buffer {
  const kind = path.match(MODULE_RE)?.[2];
  if (kind === undefined) return readFileSync(path);
  if (kind === 'gz') return gunzipSync(readFileSync(path));
  const tool = kind === 'xz' ? 'xz' : 'zstd';
  try {
    return execFileSync(tool, ['-dc', path], { maxBuffer: 64 * 1024 * 1024 });
  } catch (e) {
    throw new Error(`cannot decompress ${path} with ${tool} (${e instanceof Error ? e.message : String(e)})`, {
      cause: e,
    });
  }
}

/** The modules needed for `roots`, dependencies first. */
export function moduleLoadOrder(roots: readonly string[], modulesDir: string): Array<{ name: string; data: Buffer }> {
  const all = findModules(modulesDir);
  const order: Array<{ name: string; data: Buffer }> = [];
  const seen = new Set<string>();
  const visit = (name: string, stack: string[]) => {
    if (seen.has(name)) return;
    if (stack.includes(name)) throw new Error(`module dependency cycle: ${[...stack, name].join(' -> ')}`);
    const path = all.get(name);
    if (path === undefined)
      throw new Error(`kernel module ${name} not found under ${modulesDir} (built in? then drop it from NIC_MODULES)`);
    const data = readModule(path);
    for (const dep of moduleDepends(data)) visit(dep, [...stack, name]);
    seen.add(name);
    order.push({ name, data });
  };
  for (const r of roots) visit(r, []);
  return order;
}

// ---------------------------------------------------------------------------
// artifacts

export interface VmArtifacts {
  /** Host path of vmlinuz (also valid inside the lab: the lab shares the host's /var/cache). */
  kernel: string;
  initrd: string;
  kernelPackage: string;
  kernelRelease: string;
  nic: NicModel;
  modules: string[];
  cacheDir: string;
  /** What this call had to do. */
  built: { downloaded: string[]; kernel: boolean; initrd: boolean };
  ms: number;
}

async function sh(cmd: string, args: readonly string[], cwd?: string, timeoutMs = 120_000): Promise<string> {
  const r = await execa(cmd, [...args], {
    reject: false,
    timeout: timeoutMs,
    cwd,
    stdin: 'ignore',
    env: { ...process.env, LC_ALL: 'C' },
  });
  if (r.exitCode !== 0) {
    throw new Error(
      `${[cmd, ...args].join(' ')} failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''})\n${String(r.stdout)}\n${String(r.stderr)}`,
    );
  }
  return String(r.stdout);
}

/** The versioned kernel image package linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64. */
export async function kernelPackageName(): Promise<string> {
  const out = await sh('apt-cache', ['depends', 'linux-image-amd64']);
  const m = out.match(/Depends:\s+(linux-image-\d\S*-amd64)\b/);
  if (!m || m[1] === undefined)
    throw new Error(`no linux-image-*-amd64 dependency in \`apt-cache depends linux-image-amd64\`:\n${out}`);
  return m[1];
}

/**
 * A .deb of `pkg` in `dir`, downloaded with apt-get when missing (into `tmp`,
 * then renamed: concurrent builders never see a half-written .deb).
 * Returns [path, downloaded].
 */
async function debOf(pkg: string, dir: string, tmp: string): Promise<[string, boolean]> {
  const find = (d: string) => readdirSync(d).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  const have = find(dir);
  if (have !== undefined) return [join(dir, have), false];
  // -o APT::Sandbox::User=root: the _apt user may not write to the directory.
  await sh('apt-get', ['-o', 'APT::Sandbox::User=root', '-q', 'download', pkg], tmp);
  const got = find(tmp);
  if (got === undefined) throw new Error(`apt-get download ${pkg} left no ${pkg}_*.deb`);
  renameSync(join(tmp, got), join(dir, got));
  return [join(dir, got), true];
}

function writeAtomic(path: string, data: Buffer | string): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/**
 * Kernel + initramfs for the test guest, from the cache (`KVMNFTD_VM_CACHE`,
 * default /var/cache/kvmnftd-test/vm) or built into it. No network access
 * other than apt.
 */
export async function buildVmArtifacts(opts: { cacheDir?: string; nic?: NicModel } = {}): Promise<VmArtifacts> {
  const t0 = Date.now();
  const cacheDir = opts.cacheDir ?? process.env.KVMNFTD_VM_CACHE ?? DEFAULT_VM_CACHE;
  const nic = opts.nic ?? 'virtio';
  const debs = join(cacheDir, 'debs');
  mkdirSync(debs, { recursive: true });
  const built: VmArtifacts['built'] = { downloaded: [], kernel: false, initrd: false };

  const kernelPackage = await kernelPackageName();
  const kernelRelease = kernelPackage.replace(/^linux-image-/, '');
  const kernel = join(cacheDir, `vmlinuz-${kernelRelease}`);

  const init = readFileSync(VM_FILES.init);
  const udhcpc = readFileSync(VM_FILES.udhcpcScript);
  const key = createHash('sha256')
    .update(kernelRelease)
    .update('\0')
    .update(nic)
    .update('\0')
    .update(init)
    .update('\0')
    .update(udhcpc)
    .update('\0')
    .update('newc-v2')
    .digest('hex')
    .slice(0, 16);
  const initrd = join(cacheDir, `initrd-${kernelRelease}-${nic}-${key}.cpio`);
  const modulesFile = `${initrd}.modules`;

  if (!existsSync(kernel) || !existsSync(initrd) || !existsSync(modulesFile)) {
    const work = mkdtempSync(join(cacheDir, '.build-'));
    try {
      const [kdeb, kdl] = await debOf(kernelPackage, debs, work);
      const [bdeb, bdl] = await debOf('busybox-static', debs, work);
      if (kdl) built.downloaded.push(kernelPackage);
      if (bdl) built.downloaded.push('busybox-static');
      const kdir = join(work, 'kernel');
      const bdir = join(work, 'busybox');
      mkdirSync(kdir);
      mkdirSync(bdir);
      await sh('dpkg-deb', ['-x', kdeb, kdir]);
      await sh('dpkg-deb', ['-x', bdeb, bdir]);
      if (!existsSync(kernel)) {
        const src = join(kdir, 'boot', `vmlinuz-${kernelRelease}`);
        if (!existsSync(src)) throw new Error(`${kernelPackage} has no /boot/vmlinuz-${kernelRelease}`);
        writeAtomic(kernel, readFileSync(src));
        built.kernel = true;
      }
      const busybox = readFileSync(join(bdir, 'bin', 'busybox'));
      // a static busybox names no dynamic loader
      if (busybox.includes(Buffer.from('/lib64/ld-linux')))
        throw new Error("busybox-static's /bin/busybox looks dynamically linked");
      const modulesDir = join(kdir, 'lib', 'modules', kernelRelease, 'kernel');
      const config = readFileSync(join(kdir, 'boot', `config-${kernelRelease}`), 'utf8');
      const roots: string[] = [];
      for (const [opt, mod] of NIC_MODULES[nic]) {
        const v = config.match(new RegExp(`^${opt}=(\\w)`, 'm'))?.[1];
        if (v === undefined)
          throw new Error(`${opt} is not set in ${kernelPackage}'s config: the guest would have no NIC driver`);
        if (v === 'm') roots.push(mod); // =y: built in, nothing to load
      }
      const order = moduleLoadOrder(roots, modulesDir);
      const entries: CpioEntry[] = [
        ...['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'lib', 'lib/modules'].map(
          (p): CpioEntry => ({ type: 'dir', path: p }),
        ),
        { type: 'char', path: 'dev/console', major: 5, minor: 1 },
        { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
        { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
        { type: 'symlink', path: 'bin/sh', target: 'busybox' },
        { type: 'file', path: 'init', data: init, mode: 0o755 },
        { type: 'file', path: 'udhcpc.script', data: udhcpc, mode: 0o755 },
        ...order.map((m): CpioEntry => ({ type: 'file', path: `lib/modules/${m.name}.ko`, data: m.data })),
        { type: 'file', path: 'lib/modules/order', data: Buffer.from(order.map((m) => `${m.name}\n`).join('')) },
      ];
      writeAtomic(modulesFile, order.map((m) => m.name).join('\n') + '\n');
      writeAtomic(initrd, newcCpio(entries));
      built.initrd = true;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  const modules = readFileSync(modulesFile, 'utf8')
    .split('\n')
    .filter((s) => s !== '');
  return { kernel, initrd, kernelPackage, kernelRelease, nic, modules, cacheDir, built, ms: Date.now() - t0 };
}

// ---------------------------------------------------------------------------
// the lab's qemu driver

/** qemu.conf lines for a root-run libvirtd without systemd, cgroups or virtlogd. */
export const LAB_QEMU_CONF = `
# --- kvmnftd lab: qemu as root, no cgroups, no security driver, no virtlogd ---
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
`;

/**
 * Configure the lab's private qemu.conf and (re)start its libvirtd so the
 * qemu driver reads it. Affects only this lab (its tmpfs /etc/libvirt).
 */
export async function prepareLabForQemu(lab: Lab): Promise<void> {
  requireQemu();
  const conf = lab.path('/etc/libvirt/qemu.conf');
  if (!readFileSync(conf, 'utf8').includes('--- kvmnftd lab: qemu')) appendFileSync(conf, LAB_QEMU_CONF);
  await lab.restartLibvirtd();
}

// ---------------------------------------------------------------------------
// domains

export interface GuestOptions {
  name: string;
  artifacts: Pick<VmArtifacts, 'kernel' | 'initrd' | 'nic'>;
  /** libvirt network to attach to (default "default"). */
  network?: string;
  /** TCP target the guest probes after DHCP (default 192.0.2.2:8080); 'none': no probe. */
  probe?: { host: string; port: number } | 'none';
  /** Stay up after the probe and serve TCP on this port (KVMNFTD-CONN per connection) instead of powering off. */
  serve?: number;
  /**
   * `virsh define` + `virsh start` instead of a transient `virsh create`: what `virsh metadata --config` needs
   * (a transient domain has no persistent config). destroy() undefines it too.
   */
  persistent?: boolean;
  /** udhcpc discover attempts, 1 s apart (default 15). */
  dhcpTries?: number;
  memoryMiB?: number;
  mac?: string;
}

/** Serial log path INSIDE the lab for a domain. */
export function serialLogPath(name: string): string {
  return `/var/log/libvirt/qemu/${name}-serial.log`;
}

function xmlEscape(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

export function domainXml(o: GuestOptions): string {
  const probe = o.probe ?? { host: '192.0.2.2', port: 8080 };
  const cmdline = [
    'console=ttyS0',
    'quiet',
    'panic=-1',
    `kvmnftd.probe=${probe === 'none' ? 'none' : `${probe.host}:${probe.port}`}`,
    `kvmnftd.dhcp_tries=${o.dhcpTries ?? 15}`,
    ...(o.serve === undefined ? [] : [`kvmnftd.serve=${o.serve}`]),
  ].join(' ');
  const e = xmlEscape;
  return `<domain type='qemu'>
  <name>${e(o.name)}</name>
  <memory unit='MiB'>${o.memoryMiB ?? 256}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${e(o.artifacts.kernel)}</kernel>
    <initrd>${e(o.artifacts.initrd)}</initrd>
    <cmdline>${e(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${QEMU_BINARY}</emulator>
    <interface type='network'>
      <source network='${e(o.network ?? 'default')}'/>
      ${o.mac !== undefined ? `<mac address='${e(o.mac)}'/>` : ''}
      <model type='${o.artifacts.nic}'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='${e(serialLogPath(o.name))}' append='off'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

export interface GuestReport {
  boot: boolean;
  nic?: string;
  /** The guest NIC's MAC address (as the guest saw it). */
  mac?: string;
  /** Leased address, or null when the guest printed "KVMNFTD-LEASE none". */
  lease?: string | null;
  probe?: 'ok' | 'fail';
  probeDetail?: string;
  done: boolean;
  /** kvmnftd.serve: the port served, once the guest serves it. */
  serving?: number;
  /** kvmnftd.serve: every connection served, with the peer address the guest saw. */
  connections: Array<{ peer: string; port: number }>;
  insmodFailures: string[];
  /** Guest uptime (s) at each marker. */
  uptime: { boot?: number; lease?: number; probe?: number; done?: number };
}

/** Parse the KVMNFTD-* markers of a serial log (see vm-init.sh). */
export function parseSerialLog(text: string): GuestReport {
  const r: GuestReport = { boot: false, done: false, connections: [], insmodFailures: [], uptime: {} };
  const num = (line: string) => {
    const m = line.match(/uptime=([\d.]+)/);
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    let m: RegExpMatchArray | null;
    if (line.startsWith('KVMNFTD-BOOT')) {
      r.boot = true;
      r.uptime.boot = num(line);
    } else if ((m = line.match(/^KVMNFTD-INSMOD-FAIL (.*)$/))) r.insmodFailures.push(m[1] ?? '');
    else if ((m = line.match(/^KVMNFTD-NIC (\S+)(?: mac=(\S+))?/))) {
      r.nic = m[1];
      if (m[2] !== undefined) r.mac = m[2];
    } else if ((m = line.match(/^KVMNFTD-LEASE (\S+)/))) {
      r.lease = m[1] === 'none' ? null : m[1];
      r.uptime.lease = num(line);
    } else if ((m = line.match(/^KVMNFTD-PROBE (ok|fail) ?(.*)$/))) {
      r.probe = m[1] as 'ok' | 'fail';
      r.probeDetail = m[2];
      r.uptime.probe = num(line);
    } else if ((m = line.match(/^KVMNFTD-SERVE (\d+)/))) r.serving = Number(m[1]);
    else if ((m = line.match(/^KVMNFTD-CONN (\S+) (\d+)/))) r.connections.push({ peer: m[1]!, port: Number(m[2]) });
    else if (line.startsWith('KVMNFTD-DONE')) {
      r.done = true;
      r.uptime.done = num(line);
    }
  }
  return r;
}

export interface Guest {
  readonly name: string;
  /** Date.now() just before `virsh create`. */
  readonly startedAt: number;
  /** How long `virsh create` took (ms). */
  readonly createMs: number;
  /** The domain's tap device (libvirt's vnetN) and its bridge, as seen right after start. */
  readonly tap: { name: string; master?: string } | undefined;
  serialLog(): string;
  report(): GuestReport;
  /** Wait until the serial log matches `re` (rejects with the log on timeout or when the domain is gone first). */
  waitForLog(re: RegExp, timeoutMs: number): Promise<{ match: RegExpMatchArray; ms: number }>;
  /** Wait until the domain is gone (transient: it powers off and is destroyed). */
  waitGone(timeoutMs: number): Promise<boolean>;
  running(): Promise<boolean>;
  /** `virsh destroy` if still running; resolves when gone. */
  destroy(): Promise<void>;
  /** The last lines of libvirt's per-domain qemu log (/var/log/libvirt/qemu/NAME.log). */
  qemuLog(n?: number): string;
}

class GuestImpl implements Guest {
  tap: { name: string; master?: string } | undefined;
  startedAt = 0;
  createMs = 0;
  constructor(
    private readonly lab: Lab,
    readonly name: string,
    private readonly persistent = false,
  ) {}

  serialLog(): string {
    try {
      return readFileSync(this.lab.path(serialLogPath(this.name)), 'utf8');
    } catch {
      return '';
    }
  }

  qemuLog(n = 30): string {
    try {
      return readFileSync(this.lab.path(`/var/log/libvirt/qemu/${this.name}.log`), 'utf8')
        .trimEnd()
        .split('\n')
        .slice(-n)
        .join('\n');
    } catch (e) {
      return `(no qemu log: ${e instanceof Error ? e.message : String(e)})`;
    }
  }

  report(): GuestReport {
    return parseSerialLog(this.serialLog());
  }

  async running(): Promise<boolean> {
    const r = await this.lab.virsh('list', '--name').catch(() => undefined);
    return r !== undefined && r.stdout.split('\n').some((l) => l.trim() === this.name);
  }

  async waitForLog(re: RegExp, timeoutMs: number): Promise<{ match: RegExpMatchArray; ms: number }> {
    let checks = 0;
    const match = await waitUntil(
      `the serial log of ${this.name} to match ${re}`,
      timeoutMs,
      async () => {
        const m = this.serialLog().match(re);
        if (m || ++checks % 10 !== 0 || (await this.running())) return m;
        // gone: one last look (it may have written the line and powered off since)
        const last = this.serialLog().match(re);
        if (!last)
          throw new Error(`domain ${this.name} is gone and its serial log never matched ${re}\n${this.describe()}`);
        return last;
      },
      { intervalMs: 50, detail: () => this.describe() },
    );
    return { match, ms: Date.now() - this.startedAt };
  }

  async waitGone(timeoutMs: number): Promise<boolean> {
    return waitUntil(`domain ${this.name} gone`, timeoutMs, async () => !(await this.running()), {
      intervalMs: 100,
    }).then(
      () => true,
      () => false,
    );
  }

  async destroy(): Promise<void> {
    if (await this.running())
      await this.lab.exec('virsh', ['-c', 'qemu:///system', 'destroy', this.name], { reject: false });
    await this.waitGone(10_000);
    if (this.persistent)
      await this.lab.exec('virsh', ['-c', 'qemu:///system', 'undefine', this.name], { reject: false });
  }

  describe(): string {
    return `--- serial log (${serialLogPath(this.name)}) ---\n${this.serialLog()}\n--- qemu log ---\n${this.qemuLog()}`;
  }
}

/**
 * `virsh create` a transient domain (domainXml(opts)) in the lab. The lab must
 * have gone through prepareLabForQemu() and the network must be running.
 */
export async function startGuest(lab: Lab, opts: GuestOptions): Promise<Guest> {
  requireQemu();
  const g = new GuestImpl(lab, opts.name, opts.persistent);
  const xmlInLab = `/run/kvmnftd-vm-${opts.name}.xml`;
  writeFileSync(lab.path(xmlInLab), domainXml(opts));
  try {
    rmSync(lab.path(serialLogPath(opts.name)), { force: true });
  } catch {
    /* not there */
  }
  const virsh = (...args: string[]) =>
    lab.exec('virsh', ['-c', 'qemu:///system', ...args], { reject: false, timeoutMs: 60_000 });
  if (opts.persistent) {
    const defined = await virsh('define', xmlInLab);
    if (defined.exitCode !== 0) throw new Error(`virsh define ${opts.name} failed: ${defined.stderr.trim()}`);
  }
  g.startedAt = Date.now();
  const r = opts.persistent ? await virsh('start', opts.name) : await virsh('create', xmlInLab);
  g.createMs = Date.now() - g.startedAt;
  if (r.exitCode !== 0) {
    throw new Error(
      `virsh create ${opts.name} failed (exit ${r.exitCode}): ${r.stderr.trim()}\n--- qemu log ---\n${g.qemuLog()}\n--- libvirtd log ---\n${lab.libvirtdLog(30)}`,
    );
  }
  // The tap libvirt made for the domain (target dev), and its master.
  const dom = await lab.virsh('domiflist', opts.name).catch(() => undefined);
  const tapName = dom?.stdout.match(/^\s*(vnet\d+|\S+)\s+network\s/m)?.[1];
  if (tapName !== undefined) {
    const link = await lab.exec('ip', ['-j', 'link', 'show', 'dev', tapName], { reject: false });
    let master: string | undefined;
    try {
      master = (JSON.parse(link.stdout) as Array<{ master?: string }>)[0]?.master;
    } catch {
      master = undefined;
    }
    g.tap = master !== undefined ? { name: tapName, master } : { name: tapName };
  }
  return g;
}
