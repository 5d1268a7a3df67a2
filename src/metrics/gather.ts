// Where the figures of `kvmnftd metrics` come from: the live ruleset's rule
// counters (through the nft adapter) and the running daemon's own figures,
// read from its state file in the runtime directory (daemon/status.ts), as
// `kvmnftd status` reads it. In the daemon itself, from its state directly.
import { degradedReason, readDaemonState } from '../daemon/status.js';
import type { DaemonState } from '../daemon/state.js';
import { runningDaemon } from '../host/lock.js';
import type { Ruleset } from '../nft/ruleset.js';
import { tallyCounters } from '../nft/rule-kind.js';
import type { DaemonFigures, MetricsInputs } from './exposition.js';

/** The figures of the daemon whose state this is. */
export function figuresOf(state: DaemonState): DaemonFigures {
  return { ...state.figures, degraded: degradedReason(state) !== undefined };
}

/** The running daemon's figures from its state file; undefined when no daemon runs (or it wrote none yet). */
export function figuresFromStateFile(runtimeDir: string): DaemonFigures | undefined {
  const pid = runningDaemon(runtimeDir);
  const file = pid === undefined ? undefined : readDaemonState(runtimeDir);
  if (!file || file.pid !== pid) return undefined;
  return { ...file.figures, lastPassMs: file.figures.lastPassMs ?? undefined, degraded: file.degraded !== null };
}

/** The inputs of the exposition: the ruleset's counters (undefined: could not be read) and the daemon's. */
export async function metricsInputs(
  readRuleset: () => Promise<Ruleset>,
  daemon: DaemonFigures | undefined,
): Promise<{ inputs: MetricsInputs; rulesetError?: string }> {
  try {
    return { inputs: { tally: tallyCounters(await readRuleset()), daemon } };
  } catch (err) {
    return { inputs: { tally: undefined, daemon }, rulesetError: (err as Error).message };
  }
}
