// Line-by-line reading of a child's output, for tests and benchmarks.
import type { Readable } from 'node:stream';

/** Calls `each` with every complete line of `stream`, and when (performance.now()) its chunk arrived. */
export function onLines(stream: Readable | null | undefined, each: (line: string, at: number) => void): void {
  let buf = '';
  stream?.on('data', (chunk: Buffer | string) => {
    const at = performance.now();
    buf += chunk.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      each(line, at);
    }
  });
}
