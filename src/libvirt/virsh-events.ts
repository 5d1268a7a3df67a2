// Fallback event source: `virsh net-event --loop --event lifecycle`, one
// line per event, e.g. "event 'lifecycle' for network default: Started".
// The process is a long-lived child; its exit is a fault the caller handles.
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';

const LINE = /^event 'lifecycle' for network (.+): (\w+)\s*$/;

export interface VirshEvent {
  network: string;
  event: string;
}

/** Exported for tests: one output line to an event, or undefined for anything else. */
export function parseEventLine(line: string): VirshEvent | undefined {
  const m = LINE.exec(line);
  return m ? { network: m[1]!, event: m[2]!.toLowerCase() } : undefined;
}

export class VirshEventStream {
  private child: ResultPromise | undefined;
  private stopping = false;

  constructor(private readonly uri: string) {}

  start(onEvent: (e: VirshEvent) => void, onExit: (reason: string) => void): void {
    const child = execa('virsh', ['-q', '-c', this.uri, 'net-event', '--loop', '--event', 'lifecycle'], {
      reject: false,
      stdin: 'ignore',
      buffer: false,
      // The stream is supposed to run forever; a stuck child is noticed by
      // the caller's periodic check, not by a time-out here.
    });
    this.child = child;
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const event = parseEventLine(line);
        if (event) onEvent(event);
      });
    }
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString();
    });
    void child.then((result) => {
      if (this.stopping) return;
      const why =
        result.code === 'ENOENT'
          ? 'virsh not found (install libvirt-clients)'
          : stderr.trim().replace(/\s*\n\s*/g, '; ') || `exit code ${String(result.exitCode ?? result.signal)}`;
      onExit(`virsh net-event exited: ${why}`);
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
