// The one-line STATUS= text `systemctl status kvmnftd` shows.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface StatusFacts {
  networks: string[];
  degraded: string | undefined;
  lastChange: { at: Date; ms: number } | undefined;
}

const MAX_NAMES = 5;

export function formatStatus(f: StatusFacts): string {
  const names =
    f.networks.length > MAX_NAMES ? `${f.networks.slice(0, MAX_NAMES).join(', ')}, ...` : f.networks.join(', ');
  const count = `${f.networks.length} network${f.networks.length === 1 ? '' : 's'}${f.networks.length > 0 ? ` (${names})` : ''}`;
  const change = f.lastChange
    ? `; last change ${f.lastChange.at.toTimeString().slice(0, 8)} applied in ${f.lastChange.ms} ms`
    : '';
  const text = `${count}${change}`;
  return f.degraded ? `degraded: ${f.degraded.split('\n')[0]!.slice(0, 200)}; ${text}` : text;
}

// ---- the daemon's state file, for `kvmnftd status` -----------------------
// systemd's StatusText is only there when systemd runs; this file (in the
// runtime directory, next to the PID file) says the same and a little more.

export const STATE_FILE = 'daemon.state.json';

export interface DaemonState {
  pid: number;
  /** libvirt event transport in use, if connected. */
  transport: 'dbus' | 'virsh' | null;
  /** The STATUS= line. */
  status: string;
  degraded: string | null;
  /** ISO times. */
  lastPassAt: string | null;
  lastChangeAt: string | null;
  writtenAt: string;
}

/** Best effort: a full disk must not stop the daemon. */
export function writeDaemonState(dir: string, state: DaemonState): void {
  try {
    const tmp = join(dir, `${STATE_FILE}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(state)}\n`, { mode: 0o644 });
    renameSync(tmp, join(dir, STATE_FILE));
  } catch {
    /* status then says "unknown" */
  }
}

export function readDaemonState(dir: string): DaemonState | undefined {
  try {
    const doc = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as Partial<DaemonState>;
    if (typeof doc.pid !== 'number' || typeof doc.status !== 'string') return undefined;
    return {
      pid: doc.pid,
      transport: doc.transport === 'dbus' || doc.transport === 'virsh' ? doc.transport : null,
      status: doc.status,
      degraded: typeof doc.degraded === 'string' ? doc.degraded : null,
      lastPassAt: typeof doc.lastPassAt === 'string' ? doc.lastPassAt : null,
      lastChangeAt: typeof doc.lastChangeAt === 'string' ? doc.lastChangeAt : null,
      writtenAt: typeof doc.writtenAt === 'string' ? doc.writtenAt : '',
    };
  } catch {
    return undefined;
  }
}
