// flock(2) for Node, which has none: we open the lock file and let
// util-linux's flock(1) lock our descriptor, inherited as fd 3. A flock lock
// belongs to the open file description, which we keep open after flock(1)
// exits: the lock is ours until we close it, and the kernel drops it when
// this process dies, whatever happens to the file or to PIDs. No stale
// lock, no takeover race, no PID reuse.
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';

export interface Flock {
  release(): void;
}

/**
 * util-linux's flock(1) by absolute path (util-linux is essential on Debian,
 * Fedora and Arch): a lock must not depend on, or be hijacked through, PATH.
 */
const FLOCK = ['/usr/bin/flock', '/bin/flock'].find((p) => existsSync(p)) ?? 'flock';

const FLOCK_ARGS = ['--nonblock', '--exclusive', '3'];

/** What flock(1)'s outcome means: true locked, false held by another process; otherwise an error. */
function flockVerdict(
  path: string,
  status: number | null,
  stderr: string,
  spawnError?: NodeJS.ErrnoException,
): boolean {
  if (spawnError?.code === 'ENOENT') throw new Error('flock not found: install util-linux');
  if (status !== 0 && status !== 1)
    throw new Error(`flock ${path} failed: ${stderr || spawnError?.message || `exit status ${String(status)}`}`);
  return status === 0;
}

/** flock(1) on our descriptor `fd`: true when locked, false when another process holds the lock. */
function lockFd(fd: number, path: string): boolean {
  // spawnSync rather than execa: execa's types do not take a descriptor as an extra stdio entry.
  const result = spawnSync(FLOCK, FLOCK_ARGS, { stdio: ['ignore', 'ignore', 'pipe', fd], encoding: 'utf8' });
  return flockVerdict(path, result.status, result.stderr, result.error);
}

/** lockFd without blocking the event loop: the daemon takes its lock while libvirt answers. */
async function lockFdAsync(fd: number, path: string): Promise<boolean> {
  const child = spawn(FLOCK, FLOCK_ARGS, { stdio: ['ignore', 'ignore', 'pipe', fd] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [status, spawnError] = await new Promise<[number | null, NodeJS.ErrnoException?]>((resolve) => {
    child.on('error', (err: NodeJS.ErrnoException) => resolve([null, err]));
    child.on('close', (code) => resolve([code]));
  });
  return flockVerdict(path, status, stderr, spawnError);
}

/** Locks `path` (created if needed) exclusively without waiting; undefined when another process holds it. */
export function tryFlock(path: string): Flock | undefined {
  const fd = openSync(path, 'a+', 0o600);
  let locked = false;
  try {
    locked = lockFd(fd, path);
  } finally {
    if (!locked) closeSync(fd);
  }
  return locked ? held(fd) : undefined;
}

/** tryFlock without blocking the event loop. */
export async function tryFlockAsync(path: string): Promise<Flock | undefined> {
  const fd = openSync(path, 'a+', 0o600);
  let locked = false;
  try {
    locked = await lockFdAsync(fd, path);
  } finally {
    if (!locked) closeSync(fd);
  }
  return locked ? held(fd) : undefined;
}

/** The lock on `fd` is ours: write our PID into the file, close to release. */
function held(fd: number): Flock {
  // The holder's PID, for messages only: the lock itself is the truth.
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let open = true;
  return {
    release() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/** Is `path` locked by some process right now? A missing file is not. */
export function isFlocked(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    return !lockFd(fd, path);
  } finally {
    closeSync(fd); // also drops the lock if we just took it
  }
}

/** The PID the holder wrote into the lock file (informational). */
export function lockHolder(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
