// sd_notify(3) for Type=notify: READY, STATUS, RELOADING, STOPPING, WATCHDOG.
// A no-op outside systemd (no NOTIFY_SOCKET). The native sd-notify module is
// loaded only when needed, so the one-shot commands never depend on it.
import { createRequire } from 'node:module';

export interface Notifier {
  readonly active: boolean;
  send(state: Record<string, string>): void;
  /** Half of WatchdogSec, or undefined when the watchdog is off. */
  readonly watchdogIntervalMs: number | undefined;
}

interface SdNotify {
  sendState(state: string): void;
}

export function systemdNotifier(env: NodeJS.ProcessEnv = process.env): Notifier {
  const watchdogUsec = Number(env['WATCHDOG_USEC']);
  const watchdogPid = env['WATCHDOG_PID'];
  const watchdogOn =
    Number.isFinite(watchdogUsec) &&
    watchdogUsec > 0 &&
    (watchdogPid === undefined || Number(watchdogPid) === process.pid);
  const watchdogIntervalMs = watchdogOn ? Math.max(100, Math.floor(watchdogUsec / 2000)) : undefined;
  if (!env['NOTIFY_SOCKET']) return { active: false, send: () => undefined, watchdogIntervalMs };
  const require = createRequire(import.meta.url);
  const native = require('sd-notify') as SdNotify;
  return {
    active: true,
    watchdogIntervalMs,
    send(state) {
      // One line per assignment; STATUS must stay on one line.
      const text = Object.entries(state)
        .map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
        .join('\n');
      native.sendState(`${text}\n`);
    },
  };
}
