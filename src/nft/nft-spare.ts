// A one-shot `nft -j -f FIFO` started before its batch exists: `kvmnftd apply`
// starts it while it reads libvirt and the ruleset and plans, so that a big
// batch (100 networks: 470 KiB, too big for the session's line editor) does
// not wait for nft's fork, exec and library start-up (about 10 ms here).
//
// nft cannot read the batch from its stdin: `nft -f -` opens /dev/stdin by
// path, which fails (ENXIO) on the socket Node gives a child. So nft opens a
// FIFO in a private directory, and waits there. Once it has opened it (a
// non-blocking open for writing succeeds only while a reader is there), the
// FIFO's name is removed and this process keeps the writing end: the batch
// goes in, the end closes, nft reads EOF and commits. If this process dies
// first, the kernel closes the writing end; nft reads no JSON, tries the same
// name as nft syntax, finds nothing there and exits: nothing is left behind.
import { constants, mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { RUNTIME_FILES } from '../host/runtime.js';
import { runChild, waitChild } from '../util/child.js';
import { spawnNft } from './nft-process.js';
import { NFT_TIMEOUT_MS, nftOutput } from './nft-runner.js';

/** How long nft may take to reach the FIFO before the spare is given up. */
const OPEN_TIMEOUT_MS = 5000;
/** How often the FIFO is tried while nft starts (only then: once open, nothing polls). */
const OPEN_POLL_MS = 1;

export interface SpareNft {
  /** The waiting nft's PID, while it runs (tests). */
  readonly pid: number | undefined;
  /** Whether a batch given now goes to the waiting nft. */
  readonly ready: boolean;
  /** Resolves when the spare is ready, or has failed (then `ready` stays false). */
  readonly settled: Promise<void>;
  /**
   * Commits the batch through the waiting nft; undefined when it is not ready (the caller applies another way).
   * Throws nft's error as one-shot nft's apply does. A spare commits once.
   */
  applyJson(json: string): Promise<void> | undefined;
  /** Ends an unused spare (SIGKILL by its PID) and removes its directory. */
  close(): void;
}

/** Starts nft waiting for a batch in a private FIFO under `runtimeDir`. */
export function startSpareNft(runtimeDir: string, nft = 'nft'): SpareNft {
  const dir = mkdtempSync(join(runtimeDir, RUNTIME_FILES.spareDirPrefix));
  const fifo = join(dir, RUNTIME_FILES.spareFifo);
  let fd: number | undefined;
  let used = false;
  let closed = false;
  let child: ReturnType<typeof spawnNft> | undefined;
  let exited = false;
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });

  const settled = (async (): Promise<void> => {
    // Node has no mkfifo(3); coreutils' mkfifo is everywhere nft is.
    const made = await runChild('mkfifo', ['-m', '600', fifo], OPEN_TIMEOUT_MS);
    if (made.failed || closed) return removeDir();
    child = spawnNft(nft, ['-j', '-f', fifo]);
    void child.ended.then(() => (exited = true));
    const deadline = Date.now() + OPEN_TIMEOUT_MS;
    while (fd === undefined && !exited && !closed && Date.now() < deadline) {
      try {
        fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, OPEN_POLL_MS));
      }
    }
    removeDir(); // nft holds the FIFO open, or never will
    if (fd === undefined || exited || closed) {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
      child.child.kill('SIGKILL');
    }
  })();

  return {
    get pid() {
      const proc = child?.child;
      return proc && proc.exitCode === null && proc.signalCode === null ? proc.pid : undefined;
    },
    get ready() {
      return fd !== undefined && !used && !closed && !exited; // an nft killed while it waited is no spare
    },
    settled,
    applyJson(json) {
      if (fd === undefined || used || closed || exited || !child) return undefined;
      used = true;
      const spawned = child;
      const input = new Socket({ fd, readable: false, writable: true });
      fd = undefined; // the socket owns it now, and closes it at the end of the batch
      input.on('error', () => undefined); // nft gone: its exit says why
      input.end(json);
      // As one-shot nft's: the same time-out, the same words for a failure.
      return waitChild(spawned, NFT_TIMEOUT_MS).then((end) => void nftOutput(nft, 'applying the batch', end));
    },
    close() {
      if (closed) return;
      closed = true;
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
      if (!used) {
        child?.child.kill('SIGKILL');
        child?.child.unref(); // a process that is done need not wait for it to be reaped
      }
      removeDir();
    },
  };
}
