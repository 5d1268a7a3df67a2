// What the daemon says about itself, derived from its state (state.ts): the
// one-line STATUS= text `systemctl status kvmnftd` shows, and the state file
// in the runtime directory that `kvmnftd status` reads.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { runtimePath } from '../host/runtime.js';
import type { Notifier } from './notify.js';
import type { DaemonCounts, DaemonState } from './state.js';

export interface DaemonStatusFacts {
  networks: string[];
  degraded: string | undefined;
  lastChange: { at: Date; ms: number } | undefined;
}

const MAX_NAMES = 5;

export function formatStatus(f: DaemonStatusFacts): string {
  const names =
    f.networks.length > MAX_NAMES ? `${f.networks.slice(0, MAX_NAMES).join(', ')}, ...` : f.networks.join(', ');
  const count = `${f.networks.length} network${f.networks.length === 1 ? '' : 's'}${f.networks.length > 0 ? ` (${names})` : ''}`;
  const change = f.lastChange
    ? `; last change ${f.lastChange.at.toTimeString().slice(0, 8)} applied in ${f.lastChange.ms} ms`
    : '';
  const text = `${count}${change}`;
  return f.degraded ? `degraded: ${f.degraded.split('\n')[0]!.slice(0, 200)}; ${text}` : text;
}

type DegradedInputs = Pick<
  DaemonState,
  'watchFault' | 'passError' | 'planError' | 'suspended' | 'restoreGaveUp' | 'foreignDegraded'
>;
type StatusInputs = DegradedInputs & Pick<DaemonState, 'networks' | 'lastChange'>;

/**
 * Why the daemon is degraded, if it is: libvirt away beats a failing pass
 * beats suspended applying beats a plan applied without its foreign part
 * beats libvirt's chains given up on beats a partial plan.
 */
export function degradedReason(s: DegradedInputs): string | undefined {
  if (s.watchFault !== undefined) return `libvirt is not reachable: ${s.watchFault}`;
  if (s.suspended !== undefined) return s.passError ?? `not applying: ${s.suspended}`;
  return s.passError ?? s.foreignDegraded ?? s.restoreGaveUp ?? s.planError;
}

/** The STATUS= line. */
export function statusText(s: StatusInputs): string {
  return formatStatus({ networks: s.networks, lastChange: s.lastChange, degraded: degradedReason(s) });
}

// ---- the daemon's state file, for `kvmnftd status` -----------------------
// systemd's StatusText is only there when systemd runs; this file (in the
// runtime directory, next to the PID file) says the same and a little more.

export interface DaemonStateFile {
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
  /** The daemon's own figures (`kvmnftd metrics`); lastPassMs null before the first pass. */
  figures: Omit<DaemonCounts, 'lastPassMs'> & { lastPassMs: number | null };
  /** Why the last write of the [metrics] textfile failed, or null. */
  metricsError: string | null;
}

export function stateFileRecord(s: DaemonState, pid: number, now: Date): DaemonStateFile {
  return {
    pid,
    transport: s.watch?.transport ?? null,
    status: statusText(s),
    degraded: degradedReason(s) ?? null,
    lastPassAt: s.lastPassAt?.toISOString() ?? null,
    lastChangeAt: s.lastChange?.at.toISOString() ?? null,
    writtenAt: now.toISOString(),
    figures: { ...s.figures, lastPassMs: s.figures.lastPassMs ?? null },
    metricsError: s.metricsError ?? null,
  };
}

const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/** The figures of a state file; zeros where it has none (a daemon of an earlier version). */
function readFigures(v: unknown): DaemonStateFile['figures'] {
  const f = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  return {
    passes: count(f['passes']),
    transactions: count(f['transactions']),
    driftRepairs: count(f['driftRepairs']),
    libvirtRestores: count(f['libvirtRestores']),
    lastPassMs: typeof f['lastPassMs'] === 'number' ? f['lastPassMs'] : null,
  };
}

/** Best effort: a full disk must not stop the daemon. */
export function writeDaemonState(dir: string, state: DaemonStateFile): void {
  try {
    const file = runtimePath(dir, 'state');
    writeFileSync(`${file}.tmp`, `${JSON.stringify(state)}\n`, { mode: 0o644 });
    renameSync(`${file}.tmp`, file);
  } catch {
    /* status then says "unknown" */
  }
}

export function readDaemonState(dir: string): DaemonStateFile | undefined {
  try {
    const doc = JSON.parse(readFileSync(runtimePath(dir, 'state'), 'utf8')) as Partial<DaemonStateFile>;
    if (typeof doc.pid !== 'number' || typeof doc.status !== 'string') return undefined;
    return {
      pid: doc.pid,
      transport: doc.transport === 'dbus' || doc.transport === 'virsh' ? doc.transport : null,
      status: doc.status,
      degraded: typeof doc.degraded === 'string' ? doc.degraded : null,
      lastPassAt: typeof doc.lastPassAt === 'string' ? doc.lastPassAt : null,
      lastChangeAt: typeof doc.lastChangeAt === 'string' ? doc.lastChangeAt : null,
      writtenAt: typeof doc.writtenAt === 'string' ? doc.writtenAt : '',
      figures: readFigures(doc.figures),
      metricsError: typeof doc.metricsError === 'string' ? doc.metricsError : null,
    };
  } catch {
    return undefined;
  }
}

/** Sends STATUS= to systemd and rewrites the state file. */
export class StatusPublisher {
  constructor(
    private readonly state: DaemonState,
    private readonly notifier: Notifier,
    private readonly dir: string,
  ) {}

  /** Something changed: published once READY was sent (until then the first pass decides READY). */
  changed(): void {
    if (!this.state.ready) return;
    this.notifier.send({ STATUS: statusText(this.state) });
    this.save();
  }

  /** READY=1, with the status so far. */
  ready(): void {
    this.state.ready = true;
    this.notifier.send({ READY: '1', STATUS: statusText(this.state) });
    this.save();
  }

  private save(): void {
    writeDaemonState(this.dir, stateFileRecord(this.state, process.pid, new Date()));
  }
}
