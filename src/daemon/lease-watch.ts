// The lease "event" libvirt does not have: libvirt's dnsmasq calls libvirt's
// leaseshelper on every lease change (add, old, del), and leaseshelper
// rewrites the network's status file /var/lib/libvirt/dnsmasq/<bridge>.status
// (a new file renamed over the old). Watching that directory (inotify through
// fs.watch) makes a forward follow its guest's new address at once. Only
// while some forward needs libvirt's guests (guestFactsNeeded), only for the
// bridges of networks forwards use, and only when what a forward resolves
// from changed: a renewal rewrites the file with a new expiry and nothing
// else (every guest, every half lease time), and is no reason for a pass.
// The periodic check stays the safety net (a watch that cannot be opened, a
// directory replaced under it).
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDnsmasqStatus } from '../libvirt/forward-targets.js';
import type { Logger } from '../log/logger.js';

export interface LeaseWatchDeps {
  trigger: (reason: string) => void;
  log: Logger;
  /** The directory of the status files (guest-facts.ts DNSMASQ_STATUS_DIR). */
  dir: string;
  /** The bridges whose status files matter now. */
  bridges: () => ReadonlySet<string>;
}

/** Whether a changed file name in the directory is the status file of one of these bridges. */
export function isLeaseFile(filename: string | null, bridges: ReadonlySet<string>): boolean {
  if (filename === null) return true; // the kernel did not say which: assume it matters
  const m = /^(.+)\.status$/.exec(filename);
  return m !== null && bridges.has(m[1]!);
}

/**
 * What of a status file's text a forward's target depends on: per MAC, its addresses, the lease that expires
 * last first (forward-targets.ts takes the first of each family). A renewal keeps it; unreadable text is ''.
 */
export function leaseDigest(text: string): string {
  const byMac = new Map<string, Array<{ address: string; expiry: number }>>();
  for (const l of parseDnsmasqStatus(text, '')) byMac.set(l.mac, [...(byMac.get(l.mac) ?? []), l]);
  return JSON.stringify(
    [...byMac.entries()]
      // Code-unit order: a digest needs a fixed order only, and localeCompare would load ICU's collation (+3 MiB RSS).
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([mac, leases]) => [mac, leases.sort((a, b) => b.expiry - a.expiry).map((l) => l.address)]),
  );
}

export class LeaseWatch {
  private watcher: FSWatcher | undefined;
  /** The last failure to open, logged once while it persists. */
  private failure: string | undefined;
  /** Per status file, the leaseDigest last seen (none yet: the next change counts). */
  private readonly digests = new Map<string, string>();
  /** Reads of the files, one after the other, so that digests follow the order of the events. */
  private reads: Promise<void> = Promise.resolve();

  constructor(private readonly deps: LeaseWatchDeps) {}

  get watching(): boolean {
    return this.watcher !== undefined;
  }

  /** Watch while wanted. Called after every pass: a directory that did not exist yet is tried again. */
  set(wanted: boolean): void {
    if (!wanted) {
      this.stop();
      return;
    }
    if (this.watcher) return;
    const { dir, log } = this.deps;
    try {
      const watcher = watch(dir, { persistent: false }, (_type, filename) => {
        if (filename === null)
          this.deps.trigger('lease change'); // the kernel did not say which
        else if (isLeaseFile(filename, this.deps.bridges())) this.changed(filename);
      });
      watcher.on('error', (err) => {
        log.warn(`lease watch on ${dir} failed: ${err.message}; the periodic check still applies lease changes`);
        if (this.watcher === watcher) this.stop();
      });
      this.watcher = watcher;
      this.failure = undefined;
      log.debug(`watching ${dir} for lease changes (port forwards)`);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (why !== this.failure)
        log[why === 'ENOENT' ? 'debug' : 'warn'](
          `cannot watch ${dir} for lease changes (${why}); tried again after each pass, the periodic check applies them meanwhile`,
        );
      this.failure = why;
    }
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.digests.clear();
  }

  /** A status file was rewritten: a pass if what forwards resolve from changed (or cannot be told). */
  private changed(filename: string): void {
    this.reads = this.reads.then(async () => {
      let text = '';
      try {
        text = await readFile(join(this.deps.dir, filename), 'utf8');
      } catch {
        // gone (the network stopped): no leases
      }
      const digest = leaseDigest(text);
      if (this.digests.get(filename) === digest) return;
      this.digests.set(filename, digest);
      this.deps.trigger('lease change');
    });
  }
}
