// The kernel log's records still in its ring buffer (/dev/kmsg, root only), for doctor's reading of what
// log_drops logged. A one-shot read: from the oldest record kept to the newest, then EAGAIN.
import { closeSync, constants, openSync, readSync } from 'node:fs';

export const KMSG = '/dev/kmsg';

/** The records that `keep` accepts, oldest first; throws when the log cannot be opened (not root). */
export function readKernelLog(keep: (line: string) => boolean, path = KMSG): string[] {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const out: string[] = [];
  const buf = Buffer.alloc(16384);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null); // one record per read
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break;
        if (code === 'EPIPE') continue; // records overwritten while reading
        throw err;
      }
      const line = buf.subarray(0, n).toString('utf8').trim();
      if (keep(line)) out.push(line);
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
