// Child processes for the daemon's hot path (nft, virsh, ip monitor) on
// node:child_process: the subset of execa's behaviour those callers used
// (reject: false results, a time-out that ends in SIGKILL, output without
// its final newline, children killed when this process exits). execa's own
// module graph costs the daemon's resident memory 2.1-4.2 MiB it never needs
// (docs/performance.md); the one-shot operator commands (doctor) keep execa.
import { spawn, type ChildProcess } from 'node:child_process';

/** How a child ended: what execa's result said with `reject: false`. */
export interface ChildEnd {
  exitCode: number | undefined;
  signal: NodeJS.Signals | undefined;
  /** The spawn error's code (e.g. ENOENT), when the command could not start. */
  code: string | undefined;
  timedOut: boolean;
  /** Not exit code 0: a spawn error, a signal, a time-out or another exit code. */
  failed: boolean;
}

export interface RunResult extends ChildEnd {
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  stdin?: 'pipe' | 'ignore';
  stderr?: 'pipe' | 'ignore';
  /** Added to this process's environment. */
  env?: Record<string, string>;
}

/** After a time-out's SIGTERM, SIGKILL if the child is still there (execa's forceKillAfterDelay). */
const FORCE_KILL_MS = 5000;

/** Kills the long-lived children still running when this process exits (execa's `cleanup`). */
const running = new Set<ChildProcess>();
let exitHook = false;
function track(child: ChildProcess): void {
  running.add(child);
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of running) c.kill('SIGTERM');
  });
}

/** A child with stdout piped, and a promise of how it ended (never rejects). */
export function spawnChild(
  file: string,
  args: readonly string[],
  options: SpawnOptions = {},
): { child: ChildProcess; ended: Promise<ChildEnd> } {
  const child = spawn(file, args, {
    stdio: [options.stdin ?? 'ignore', 'pipe', options.stderr ?? 'pipe'],
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
  });
  track(child);
  const ended = new Promise<ChildEnd>((resolve) => {
    let code: string | undefined;
    child.on('error', (err: NodeJS.ErrnoException) => {
      code ??= err.code ?? 'EUNKNOWN';
      // A spawn error emits no 'close': end here.
      if (child.pid === undefined) done(null, null);
    });
    const done = (exitCode: number | null, signal: NodeJS.Signals | null): void => {
      running.delete(child);
      resolve({
        exitCode: exitCode ?? undefined,
        signal: signal ?? undefined,
        code,
        timedOut: false,
        failed: code !== undefined || exitCode !== 0,
      });
    };
    child.once('close', done);
  });
  return { child, ended };
}

/** Runs a command to its end, stdin ignored, output collected (execa with `reject: false`). */
export function runChild(file: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  return waitChild(spawnChild(file, args), timeoutMs);
}

/** A child of spawnChild to its end, output collected from now on, ended by SIGTERM then SIGKILL after timeoutMs. */
export async function waitChild(
  { child, ended }: ReturnType<typeof spawnChild>,
  timeoutMs: number,
): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let timedOut = false;
  let force: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    force = setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_MS);
  }, timeoutMs);
  const end = await ended;
  clearTimeout(timer);
  clearTimeout(force);
  return {
    ...end,
    timedOut,
    failed: end.failed || timedOut,
    stdout: stripFinalNewline(stdout),
    stderr: stripFinalNewline(stderr),
  };
}

function stripFinalNewline(s: string): string {
  if (s.endsWith('\r\n')) return s.slice(0, -2);
  return s.endsWith('\n') ? s.slice(0, -1) : s;
}
