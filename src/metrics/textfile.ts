// The [metrics] textfile, written so that node_exporter's textfile collector
// (user prometheus) never reads half a file and can always read it: a
// temporary file in the same directory (the collector reads only `*.prom`),
// mode 0644 set explicitly (the unit's UMask=0077 would make it 0600), fsync,
// rename over the old one, fsync of the directory. An adapter.
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export const TEXTFILE_MODE = 0o644;

/** The temporary file next to `path`: hidden, not `*.prom`, one per process. */
export function textfileTemp(path: string, pid = process.pid): string {
  return join(dirname(path), `.${basename(path)}.${pid}.tmp`);
}

/** Replaces `path` with `text` atomically; throws (with the temporary file removed) when it cannot. */
export function writeTextfile(path: string, text: string): void {
  const tmp = textfileTemp(path);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w', TEXTFILE_MODE);
    fchmodSync(fd, TEXTFILE_MODE);
    const data = Buffer.from(text);
    let done = 0;
    while (done < data.length) done += writeSync(fd, data, done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  syncDirectory(dirname(path));
}

/** The rename is durable once the directory is synced; best effort (some filesystems refuse). */
function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* the file itself is complete either way */
  }
}
