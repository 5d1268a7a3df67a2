/**
 * The Debian 13 (trixie) test root for the libvirt lab (startLab({ root })):
 * built by test/lab/trixie-root.sh with debootstrap + apt-get, cached under
 * /var/cache/kvmnftd-test/roots/trixie-lab/<hash of the package list and the
 * script> (override the folder with KVMNFTD_TRIXIE_CACHE). A failure to build
 * throws: tests that need the root fail, they never skip.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

export const TRIXIE_ROOT_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'trixie-root.sh');

export interface TrixieRoot {
  path: string;
  /** Wall time of the ensure step (a build when cold, a look-up when warm), ms. */
  ms: number;
  /** The script's report (built or cached, package versions). */
  log: string;
}

let pending: Promise<TrixieRoot> | undefined;

/** Build or reuse the trixie root (once per test process). */
export function ensureTrixieRoot(): Promise<TrixieRoot> {
  pending ??= (async () => {
    const t0 = Date.now();
    const r = await execa(TRIXIE_ROOT_SCRIPT, [], { reject: false, timeout: 15 * 60_000, stdin: 'ignore' });
    const path = String(r.stdout).trim().split('\n').pop() ?? '';
    if (r.exitCode !== 0 || !path.startsWith('/')) {
      throw new Error(
        `could not build the Debian 13 test root (${TRIXIE_ROOT_SCRIPT}, exit ${r.exitCode}):\n${String(r.stderr)}`,
      );
    }
    return { path, ms: Date.now() - t0, log: String(r.stderr).trim() };
  })();
  return pending;
}
