// `nft -j monitor`: every line means "the ruleset may have changed". JSON
// output cannot say which process made a change, so the daemon's own
// transactions come back here too; the empty plan is what ends that loop.
// A non-JSON line (e.g. "# ERROR: We lost some netlink events!") counts too.
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { spawnNft } from './nft-process.js';

export class NftMonitor {
  private child: ChildProcess | undefined;
  private stopping = false;

  constructor(private readonly nft = 'nft') {}

  start(onChange: (line: string) => void, onExit: (reason: string) => void): void {
    const { child, ended } = spawnNft(this.nft, ['-j', 'monitor']);
    this.child = child;
    if (child.stdout) createInterface({ input: child.stdout }).on('line', onChange);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString();
    });
    void ended.then((result) => {
      if (this.stopping) return;
      const why =
        result.code === 'ENOENT'
          ? `${this.nft} not found`
          : stderr.trim().replace(/\s*\n\s*/g, '; ') || `exit code ${String(result.exitCode ?? result.signal)}`;
      onExit(`nft monitor exited: ${why}`);
    });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  stop(): void {
    this.stopping = true;
    this.child?.kill('SIGTERM');
  }
}
