// Adapters for `kvmnftd doctor`: /proc/sys, nft --version, the system bus,
// libvirt's network.conf, iptables-legacy-save. Each has a time-out and turns
// a failure into a fact ("could not ..."), never into an exception.
import { readFile } from 'node:fs/promises';
import dbus from 'dbus-next';
import { execa } from 'execa';
import { interfacesAcceptingRa, readFlag } from '../host/forwarding.js';
import { KMSG, readKernelLog } from '../host/kernel-log.js';
import { TAG } from '../nft/ownership.js';
import { busDaemonCall, DbusCaller } from '../libvirt/dbus-call.js';
import { parseNftVersion } from './nft-version.js';
import type { DoctorFacts } from './types.js';

const { systemBus } = dbus;
const TIMEOUT_MS = 5000;

/** What log_drops logged (any network's prefix: `kvmnftd <name> drop: `), or why it cannot be read. */
export function dropLogFact(path = KMSG): NonNullable<DoctorFacts['dropLog']> {
  try {
    return { lines: readKernelLog((line) => line.includes(`${TAG} `) && line.includes(' drop: '), path) };
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
}

export async function sysctlFacts(): Promise<DoctorFacts['sysctl']> {
  const out: DoctorFacts['sysctl'] = { ipv6AcceptRa1: [] };
  const set = <K extends Exclude<keyof DoctorFacts['sysctl'], 'ipv6AcceptRa1'>>(
    key: K,
    v: string | undefined,
  ): void => {
    if (v !== undefined) out[key] = v;
  };
  set('ipv4Forward', await readFlag('/proc/sys/net/ipv4/ip_forward'));
  set('ipv6Forward', await readFlag('/proc/sys/net/ipv6/conf/all/forwarding'));
  set('bridgeNfCallIptables', await readFlag('/proc/sys/net/bridge/bridge-nf-call-iptables'));
  set('bridgeNfCallIp6tables', await readFlag('/proc/sys/net/bridge/bridge-nf-call-ip6tables'));
  out.ipv6AcceptRa1.push(...(await interfacesAcceptingRa()));
  return out;
}

export async function nftVersionFact(nft = 'nft'): Promise<DoctorFacts['nft']> {
  const r = await execa(nft, ['--version'], { reject: false, timeout: TIMEOUT_MS, stdin: 'ignore' });
  if (r.failed)
    return {
      error:
        r.code === 'ENOENT'
          ? `${nft} not found`
          : `${nft} --version failed: ${(r.stderr || String(r.exitCode)).trim()}`,
    };
  const v = parseNftVersion(r.stdout);
  return v ? { version: v } : { error: `cannot read a version from "${r.stdout.trim()}"` };
}

/** One system bus connection: does org.libvirt run or activate, does firewalld run? */
export async function busFacts(): Promise<DoctorFacts['bus']> {
  let bus: ReturnType<typeof systemBus>;
  try {
    bus = systemBus();
  } catch (err) {
    return { error: `system bus: ${(err as Error).message}` };
  }
  const caller = new DbusCaller(bus, TIMEOUT_MS);
  bus.on('error', (err: unknown) => caller.fail(err instanceof Error ? err : new Error(String(err))));
  const ask = async (member: string, ...body: string[]): Promise<unknown> =>
    (await caller.call(busDaemonCall(member, body.length > 0 ? 's' : '', body)))[0];
  try {
    // Asked together: a bus that does not answer costs one time-out, not three.
    const [libvirt, activatable, firewalld] = await Promise.all([
      ask('NameHasOwner', 'org.libvirt'),
      ask('ListActivatableNames'),
      ask('NameHasOwner', 'org.fedoraproject.FirewallD1'),
    ]);
    const canActivate = Array.isArray(activatable) && activatable.includes('org.libvirt');
    return {
      libvirtDbus: libvirt === true ? 'running' : canActivate ? 'activatable' : 'absent',
      firewalld: firewalld === true,
    };
  } catch (err) {
    return { error: `system bus: ${(err as Error).message}` };
  } finally {
    caller.fail(new Error('disconnected')); // settles the calls still in flight, and clears their timers
    bus.disconnect();
  }
}

/** firewall_backend = "..." from libvirt's network.conf, when set. */
export async function libvirtBackendSetting(file = '/etc/libvirt/network.conf'): Promise<string | undefined> {
  try {
    const text = await readFile(file, 'utf8');
    return /^\s*firewall_backend\s*=\s*"([^"]*)"/m.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

export async function iptablesLegacyFacts(): Promise<DoctorFacts['iptablesLegacy']> {
  const dump = async (cmd: string): Promise<string | undefined> => {
    const r = await execa(cmd, [], { reject: false, timeout: TIMEOUT_MS, stdin: 'ignore' });
    return r.code === 'ENOENT' ? undefined : r.stdout;
  };
  const ipv4 = await dump('iptables-legacy-save');
  if (ipv4 === undefined) return { installed: false };
  return { installed: true, ipv4, ipv6: (await dump('ip6tables-legacy-save')) ?? '' };
}
