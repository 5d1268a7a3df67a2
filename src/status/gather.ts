// Adapters for `kvmnftd status`: the daemon's PID/state files and, when
// systemd runs, the unit's state over systemd's D-Bus API. Every call has a
// time-out; what cannot be learned is reported as such, never guessed.
import { existsSync } from 'node:fs';
import dbus from 'dbus-next';
import { readDaemonState } from '../daemon/status.js';
import { runningDaemon } from '../host/lock.js';
import type { DaemonFacts, SystemdFacts } from './evaluate.js';

const { Message, systemBus } = dbus;
const TIMEOUT_MS = 3000;
export const UNIT = 'kvmnftd.service';

/** sd_booted(3): systemd is the init system. */
export function systemdRuns(): boolean {
  return existsSync('/run/systemd/system');
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export async function systemdUnitFacts(unit = UNIT): Promise<SystemdFacts> {
  if (!systemdRuns()) return { available: false };
  const bus = systemBus();
  const failed = new Promise<never>((_, reject) =>
    bus.on('error', (err: unknown) => reject(err instanceof Error ? err : new Error(String(err)))),
  );
  failed.catch(() => undefined);
  const call = (msg: InstanceType<typeof Message>): Promise<InstanceType<typeof Message> | null> =>
    withTimeout(Promise.race([bus.call(msg), failed]), 'systemd');
  try {
    const reply = await call(
      new Message({
        destination: 'org.freedesktop.systemd1',
        path: '/org/freedesktop/systemd1',
        interface: 'org.freedesktop.systemd1.Manager',
        member: 'LoadUnit',
        signature: 's',
        body: [unit],
      }),
    );
    const path: unknown = reply?.body[0];
    if (typeof path !== 'string') return { available: true, error: 'systemd gave no unit path' };
    const prop = async (iface: string, name: string): Promise<string | undefined> => {
      const r = await call(
        new Message({
          destination: 'org.freedesktop.systemd1',
          path,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'Get',
          signature: 'ss',
          body: [iface, name],
        }),
      );
      const v: unknown = r?.body[0];
      const value = typeof v === 'object' && v !== null && 'value' in v ? v.value : undefined;
      return typeof value === 'string' ? value : undefined;
    };
    const facts: SystemdFacts = { available: true };
    const active = await prop('org.freedesktop.systemd1.Unit', 'ActiveState');
    const sub = await prop('org.freedesktop.systemd1.Unit', 'SubState');
    const text = await prop('org.freedesktop.systemd1.Service', 'StatusText');
    if (active !== undefined) facts.activeState = active;
    if (sub !== undefined) facts.subState = sub;
    if (text !== undefined && text !== '') facts.statusText = text;
    return facts;
  } catch (err) {
    return { available: false, error: `systemd's bus API: ${(err as Error).message}` };
  } finally {
    bus.disconnect();
  }
}

export async function daemonFacts(runtimeDir: string): Promise<DaemonFacts> {
  const pid = runningDaemon(runtimeDir);
  const state = readDaemonState(runtimeDir);
  const facts: DaemonFacts = { systemd: await systemdUnitFacts() };
  if (pid !== undefined) facts.pid = pid;
  if (state && state.pid === pid)
    facts.state = {
      transport: state.transport,
      status: state.status,
      lastPassAt: state.lastPassAt,
      lastChangeAt: state.lastChangeAt,
      metricsError: state.metricsError,
    };
  return facts;
}
