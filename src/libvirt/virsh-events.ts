// Fallback event sources: `virsh net-event --loop --event lifecycle` (one
// line per event, e.g. "event 'lifecycle' for network default: Started") and,
// while port forwards need libvirt's guests, `virsh event --loop --event
// lifecycle` on the domains' URI ("event 'lifecycle' for domain web1: Started
// Booted"), and while metadata forwards are on `virsh event --loop --event
// metadata-change` ("event 'metadata-change' for domain 'web1': type element,
// uri URI"). Each is a long-lived child; its exit is a fault the caller handles.
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { spawnChild } from '../util/child.js';

/** Newer virsh quotes the name ('web1'), older does not. */
const LINE = /^event 'lifecycle' for (network|domain) (?:'(.+)'|(.+)): (\w+)(?:\s.*)?$/;
/** virsh's virshEventMetadataChangePrint: the kind of metadata (title, description, element) and its namespace. */
const METADATA_LINE = /^event 'metadata-change' for domain (?:'(.+)'|(.+)): type (\S+), uri (\S+)\s*$/;

/** `metadata`: a domain's metadata changed (the event's `uri` says under which namespace). */
export type EventObject = 'network' | 'domain' | 'metadata';

export interface VirshEvent {
  object: EventObject;
  name: string;
  event: string;
  /** metadata: the namespace URI of the changed element (`<null>` for title and description). */
  uri?: string;
}

const COMMAND: Record<EventObject, string[]> = {
  network: ['net-event', '--loop', '--event', 'lifecycle'],
  domain: ['event', '--loop', '--event', 'lifecycle'],
  metadata: ['event', '--loop', '--event', 'metadata-change'],
};

/** Exported for tests: one output line to an event, or undefined for anything else. */
export function parseEventLine(line: string): VirshEvent | undefined {
  const m = LINE.exec(line);
  if (m) return { object: m[1] as EventObject, name: (m[2] ?? m[3])!, event: m[4]!.toLowerCase() };
  const md = METADATA_LINE.exec(line);
  return md
    ? { object: 'metadata', name: (md[1] ?? md[2])!, event: `metadata-change ${md[3]!}`, uri: md[4]! }
    : undefined;
}

export class VirshEventStream {
  private child: ChildProcess | undefined;
  private stopping = false;

  constructor(
    private readonly uri: string,
    private readonly object: EventObject = 'network',
  ) {}

  start(onEvent: (e: VirshEvent) => void, onExit: (reason: string) => void): void {
    // The stream is supposed to run forever; a stuck child is noticed by
    // the caller's periodic check, not by a time-out here.
    const { child, ended } = spawnChild('virsh', ['-q', '-c', this.uri, ...COMMAND[this.object]]);
    this.child = child;
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const event = parseEventLine(line);
        if (event?.object === this.object) onEvent(event);
      });
    }
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString();
    });
    void ended.then((result) => {
      if (this.stopping) return;
      const why =
        result.code === 'ENOENT'
          ? 'virsh not found (install libvirt-clients)'
          : stderr.trim().replace(/\s*\n\s*/g, '; ') || `exit code ${String(result.exitCode ?? result.signal)}`;
      onExit(`virsh ${COMMAND[this.object][0]!} exited: ${why}`);
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
