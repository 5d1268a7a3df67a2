// Facts about the machine a benchmark ran on, and the daemon's node options as the shipped unit sets them.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { round } from './stats.js';

const REPO = join(import.meta.dirname, '..', '..');

/** The first line of a command's output, or "(not available)". */
export function cmdOut(cmd: string, args: string[]): string {
  try {
    return (
      execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
        .trim()
        .split('\n')[0] ?? ''
    );
  } catch {
    return '(not available)';
  }
}

/** The 1, 5 and 15 minute load averages, e.g. "0.52 0.61 0.7". */
export function loadavg(): string {
  return os
    .loadavg()
    .map((x) => round(x, 2))
    .join(' ');
}

export function machineFacts(): Record<string, string | number> {
  let osName = os.type();
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    /* keep os.type() */
  }
  const dpkg = (pkg: string) => cmdOut('dpkg-query', ['-W', '-f', '${Version}', pkg]);
  return {
    date: new Date().toISOString(),
    os: osName,
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    nft: cmdOut('nft', ['--version']),
    libvirt: cmdOut('libvirtd', ['--version']),
    libvirtDbus: existsSync('/usr/sbin/libvirt-dbus') ? dpkg('libvirt-dbus') : '(not installed)',
    dbusDaemon: cmdOut('dbus-daemon', ['--version']),
    loadavgAtStart: loadavg(),
  };
}

/** The node options the shipped unit gives the daemon (Environment=NODE_OPTIONS=... in systemd/kvmnftd.service). */
export function unitNodeFlags(): string[] {
  const unit = readFileSync(join(REPO, 'systemd', 'kvmnftd.service'), 'utf8');
  return (/^Environment=NODE_OPTIONS=(.*)$/m.exec(unit)?.[1] ?? '').split(/\s+/).filter(Boolean);
}

/** The unit's other environment variables (Environment=NAME=VALUE, one per line, NODE_OPTIONS aside), e.g. MALLOC_ARENA_MAX. */
export function unitEnv(): Record<string, string> {
  const unit = readFileSync(join(REPO, 'systemd', 'kvmnftd.service'), 'utf8');
  const env: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(\S*)$/gm))
    if (m[1] !== 'NODE_OPTIONS') env[m[1]!] = m[2]!;
  return env;
}
