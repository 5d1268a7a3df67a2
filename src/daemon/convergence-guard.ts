// Never loop on our own commits. After kvmnftd's own successful transaction
// the next plan for the same inputs must be empty: its commit comes back
// through `nft monitor`, and an empty plan is what ends that echo. A plan
// that is not empty then is a planner bug (e.g. an address written in a form
// nft prints back differently): re-applying it would delete and re-add the
// same rules forever, resetting counters and flooding the journal.
//
// The guard trips when the first pass after an own transaction, for the
// same networks and config, wants to apply the very batch it just applied
// (handles aside), and in any case when such echo passes would commit more
// than MAX_ECHO_COMMITS transactions within ECHO_WINDOW_MS. Tripped, the
// daemon stops applying until an input changes, a periodic check runs or a
// reload comes in. Pure: the clock is passed in.
import type { Batch } from '../nft/json.js';
import { isOurComment } from '../nft/ownership.js';
import { tableKey, type Ruleset } from '../nft/ruleset.js';

export const MAX_ECHO_COMMITS = 2;
export const ECHO_WINDOW_MS = 60_000;

export type GuardVerdict = { apply: true } | { apply: false; reason: string; firstTime: boolean };

/** `family table chain` of every chain the batch adds or inserts a rule into. */
export function chainsWritten(batch: Batch): string[] {
  const out = new Set<string>();
  for (const cmd of batch.nftables) {
    const rule = 'add' in cmd && 'rule' in cmd.add ? cmd.add.rule : 'insert' in cmd ? cmd.insert.rule : undefined;
    if (rule) out.add(`${rule.family} ${rule.table} ${rule.chain}`);
  }
  return [...out];
}

/**
 * Does every one of these chains hold a rule of kvmnftd's? Asked of the chains kvmnftd's last commit wrote
 * into, and of the chains the batch now wants to write into. A planner bug (the echo the guard is for)
 * leaves kvmnftd's rules in place, only in a form the planner does not recognise. Someone flushing a chain
 * that held kvmnftd's rule takes it out (`ufw reload` flushes its chains several times, an empty chain each
 * time, so the rest of the ruleset reads the same; and it does so in ip and ip6 in turn, so the chain
 * emptied may be one the last commit did not touch): a batch that puts it back is a repair, not an echo.
 */
export function ownRulesStillIn(live: Ruleset, chains: readonly string[]): boolean {
  return chains.every((key) => {
    const [family = '', table = '', chain = ''] = key.split(' ');
    const rules = live.tables.get(tableKey(family, table))?.chains.get(chain)?.rules ?? [];
    return rules.some((r) => isOurComment(r.comment));
  });
}

/** A batch without rule handles (they change with every commit). */
export function batchShape(batch: Batch): string {
  return JSON.stringify(batch, (key, value: unknown) => (key === 'handle' ? undefined : value));
}

export class ConvergenceGuard {
  private lastCommit: { inputs: string; foreign: string; shape: string; written: string[] } | undefined;
  /** The next pass is the first one after an own commit. */
  private echoPending = false;
  /** When the transactions that echo passes (or retries while tripped) committed. */
  private window: number[] = [];
  private tripped: { inputs: string; shape: string; reason: string } | undefined;
  private retry = false;

  /**
   * Asked before applying a non-empty batch. `inputs` identifies the
   * networks and config the batch was planned from; `foreign`, what in the
   * live ruleset is not kvmnftd's. A pass after someone else changed the
   * ruleset (ufw rewriting its chains in steps, Docker restarting) is not an
   * echo of kvmnftd's own commit; while suspended, such drift is repaired
   * only within the budget below (an input is the networks and config).
   */
  check(inputs: string, batch: Batch, now: number, foreign = '', live?: Ruleset): GuardVerdict {
    const last = this.lastCommit;
    const echo =
      this.echoPending &&
      last?.inputs === inputs &&
      last.foreign === foreign &&
      (live === undefined || (ownRulesStillIn(live, last.written) && ownRulesStillIn(live, chainsWritten(batch))));
    this.echoPending = false;
    this.window = this.window.filter((t) => now - t < ECHO_WINDOW_MS);
    const shape = batchShape(batch);
    if (this.tripped && this.tripped.inputs !== inputs) this.tripped = undefined; // an input changed
    if (this.tripped) {
      // Once more after a periodic check or reload, or for a different change
      // (someone flushed the ruleset meanwhile), within the same budget.
      const allowed = (this.retry || shape !== this.tripped.shape) && this.window.length < MAX_ECHO_COMMITS;
      this.retry = false;
      if (!allowed) return { apply: false, reason: this.tripped.reason, firstTime: false };
      this.window.push(now);
      return { apply: true };
    }
    if (!echo) return { apply: true };
    const again = this.lastCommit?.shape === shape;
    if (again || this.window.length >= MAX_ECHO_COMMITS) {
      const reason = again
        ? 'the plan after its own transaction is not empty: it would re-apply the same rules forever'
        : `its own transactions keep causing new ones (${this.window.length + 1} within ${ECHO_WINDOW_MS / 1000} s)`;
      this.tripped = { inputs, shape, reason };
      return { apply: false, reason, firstTime: true };
    }
    this.window.push(now);
    return { apply: true };
  }

  /** After a pass that found nothing to do: whatever was wrong converged. */
  converged(): void {
    this.echoPending = false;
    this.tripped = undefined;
  }

  /** After an own transaction committed. */
  committed(inputs: string, batch: Batch, foreign = ''): void {
    this.lastCommit = { inputs, foreign, shape: batchShape(batch), written: chainsWritten(batch) };
    this.echoPending = true;
  }

  /** A periodic check or a reload: while tripped, one more attempt (within the budget). */
  rearm(): void {
    this.retry = true;
  }

  /** Why applying is suspended, while it is. */
  get suspended(): string | undefined {
    return this.tripped?.reason;
  }
}
