// V8 flags for the long-running daemon, set before its modules load. The
// daemon's hot path is a plan of a few hundred nft objects and two JSON
// round trips per pass: it gains nothing from the optimising compiler's code
// and metadata, which stay resident for the process's life. Node refuses
// both flags in NODE_OPTIONS (the unit's Environment=), hence setting them
// here; node's own command line would work too, but the unit runs
// /usr/bin/kvmnftd. Measured in docs/performance.md (RSS at READY).
import { setFlagsFromString } from 'node:v8';

/** Without the optimising compiler (TurboFan), and with heuristics that favour size over speed. */
export const DAEMON_V8_FLAGS: readonly string[] = ['--no-opt', '--optimize-for-size'];

export function applyDaemonV8Flags(): void {
  for (const flag of DAEMON_V8_FLAGS) setFlagsFromString(flag);
}
