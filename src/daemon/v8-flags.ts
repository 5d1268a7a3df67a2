// V8 flags for the long-running daemon, set before its modules load. The
// daemon's hot path is a plan of a few hundred nft objects and two JSON
// round trips per pass: it gains nothing from the optimising compiler's code
// and metadata, which stay resident for the process's life. Node refuses
// both flags in NODE_OPTIONS (the unit's Environment=), hence setting them
// here; node's own command line would work too, but the unit runs
// /usr/bin/kvmnftd. Measured in docs/performance.md (RSS at READY).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Without the optimising compiler (TurboFan), and with heuristics that favour size over speed. */
export const DAEMON_V8_FLAGS: readonly string[] = ['--no-opt', '--optimize-for-size'];

export function applyDaemonV8Flags(): void {
  for (const flag of DAEMON_V8_FLAGS) setFlagsFromString(flag);
}

/** Passes between two full collections (heapTrimmer). */
export const PASSES_PER_COLLECTION = 250;

/**
 * A full collection every `every` passes. Left to itself, V8 lets ~6 MiB of
 * the passes' garbage (listings, plans, answers) pile up in the old
 * generation before each mark-compact, ~1,500 passes apart: the RSS saws up
 * and down by that much. One collection of the ~11 MB heap costs ~10 ms,
 * after a pass has ended. `gc` is taken from a throwaway context: the
 * daemon's own global has none.
 */
export function heapTrimmer(every = PASSES_PER_COLLECTION): (passes: number) => void {
  let gc: (() => void) | undefined;
  let last = 0;
  return (passes) => {
    if (passes - last < every) return;
    last = passes;
    if (gc === undefined) {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
    }
    setImmediate(gc);
  };
}
