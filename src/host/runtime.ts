// The runtime directory and every file kvmnftd keeps in it: the one place
// that names them (kvmnftd(8) FILES and docs/operation.md list the same).
// systemd's RuntimeDirectory= sets RUNTIME_DIRECTORY; KVMNFTD_RUNTIME_DIR
// overrides for tests.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_RUNTIME_DIR = '/run/kvmnftd';

export const RUNTIME_FILES = {
  /** flock(2)ed while a process changes the ruleset (the holder's PID inside, for messages). */
  lock: 'apply.lock',
  /** flock(2)ed by the running daemon for its whole life: the proof that it runs (its PID inside). */
  daemonLock: 'daemon.lock',
  /** The running daemon's PID (informational; daemon.lock is the proof). */
  pid: 'daemon.pid',
  /** The daemon's transport, STATUS text and last pass/change, for `kvmnftd status`. */
  state: 'daemon.state.json',
  /** The daemon's last completed reload, "N ok" or "N rejected: why", for `kvmnftd reload`. */
  reloadState: 'reload.state',
  /** Prefix of the private directory (mkdtemp) holding a batch while nft applies it. */
  batchDirPrefix: 'batch-',
  /** The batch file in that directory. */
  batchFile: 'batch.json',
  /** Prefix of the private directory (mkdtemp) of a spare nft's FIFO while nft starts (nft/nft-spare.ts). */
  spareDirPrefix: 'spare-',
  /** That FIFO: nft opens it, then its name is removed. */
  spareFifo: 'batch.fifo',
} as const;

export type RuntimeFile = keyof typeof RUNTIME_FILES;

/** `<dir>/<the file's name>`. */
export function runtimePath(dir: string, file: RuntimeFile): string {
  return join(dir, RUNTIME_FILES[file]);
}

/** The runtime directory, created (mode 0700) if missing. */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env['KVMNFTD_RUNTIME_DIR'] ?? env['RUNTIME_DIRECTORY']?.split(':')[0] ?? DEFAULT_RUNTIME_DIR;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}
