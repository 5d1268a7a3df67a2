import { describe, expect, it } from 'vitest';
import { ConvergenceGuard, ECHO_WINDOW_MS, MAX_ECHO_COMMITS } from '../../src/daemon/convergence-guard.js';
import type { Batch } from '../../src/nft/json.js';
import { emptyRuleset, tableKey, type Ruleset } from '../../src/nft/ruleset.js';

const refill = (handle: number): Batch => ({
  nftables: [
    { flush: { chain: { family: 'inet', table: 'filter', name: 'kvmnftd_forward' } } },
    { delete: { rule: { family: 'inet', table: 'filter', chain: 'forward', handle } } },
  ],
});
const other: Batch = { nftables: [{ add: { table: { family: 'inet', name: 'kvmnftd' } } }] };

/** Drives the guard like the daemon: apply when allowed, then the commit echoes back as the next pass. */
function loop(guard: ConvergenceGuard, passes: number, batchAt: (i: number) => Batch, t0 = 0, step = 100): number {
  let commits = 0;
  for (let i = 0; i < passes; i++) {
    const batch = batchAt(i);
    if (guard.check('nets-1', batch, t0 + i * step).apply) {
      guard.committed('nets-1', batch);
      commits++;
    }
  }
  return commits;
}

describe('convergence guard', () => {
  it('trips on the first echo pass that wants the same batch again (handles aside)', () => {
    const guard = new ConvergenceGuard();
    expect(guard.check('nets-1', refill(1), 0)).toEqual({ apply: true });
    guard.committed('nets-1', refill(1));
    const verdict = guard.check('nets-1', refill(7), 50);
    expect(verdict).toMatchObject({ apply: false, firstTime: true });
    expect(guard.suspended).toMatch(/re-apply the same rules forever/);
    expect(guard.check('nets-1', refill(7), 60)).toMatchObject({ apply: false, firstTime: false });
  });

  it('does not count a pass after someone else changed the ruleset (ufw rewriting its chains) as an echo', () => {
    const guard = new ConvergenceGuard();
    // Each own commit is followed by a pass that sees another step of someone else's rewrite.
    for (let i = 0; i < 10; i++) {
      expect(guard.check('nets-1', refill(i), i * 100, `ufw-step-${i}`)).toEqual({ apply: true });
      guard.committed('nets-1', refill(i), `ufw-step-${i}`);
    }
    expect(guard.suspended).toBeUndefined();
    // The same foreign state after an own commit: an echo, and a loop is caught.
    expect(guard.check('nets-1', refill(99), 2_000, 'ufw-step-9')).toMatchObject({ apply: false, firstTime: true });
    // While suspended, someone else's drift does not lift the suspension (the inputs are networks and config).
    expect(guard.check('nets-1', refill(99), 2_100, 'ufw-step-10')).toMatchObject({ apply: false });
  });

  it('caps what own commits cause at 2 transactions per 60 s, whatever the batches', () => {
    const guard = new ConvergenceGuard();
    // Every pass wants something different: an alternating or growing non-convergence.
    const commits = loop(guard, 500, (i) =>
      i % 2 ? refill(i) : { nftables: [...other.nftables, ...refill(i).nftables] },
    );
    expect(commits).toBe(1 + MAX_ECHO_COMMITS);
    expect(guard.suspended).toMatch(/keep causing new ones/);
  });

  it('stays within the budget over many periodic checks while tripped', () => {
    const guard = new ConvergenceGuard();
    let commits = loop(guard, 3, () => refill(1));
    expect(commits).toBe(1);
    // A periodic check every 5 s for 10 minutes, each followed by its echo pass.
    for (let t = 0; t < 600_000; t += 5_000) {
      guard.rearm();
      commits += loop(guard, 2, () => refill(2), 1_000 + t, 10);
    }
    expect(commits).toBeLessThanOrEqual(1 + MAX_ECHO_COMMITS * Math.ceil(600_000 / ECHO_WINDOW_MS));
    expect(guard.suspended).toBeDefined();
  });

  it('lets a changed input through at once, and a converged pass clears the trip', () => {
    const guard = new ConvergenceGuard();
    loop(guard, 2, () => refill(1));
    expect(guard.suspended).toBeDefined();
    expect(guard.check('nets-2', refill(1), 300)).toEqual({ apply: true });
    expect(guard.suspended).toBeUndefined();
    guard.committed('nets-2', refill(1));
    guard.converged();
    expect(guard.check('nets-2', refill(1), 400)).toEqual({ apply: true }); // not an echo any more
  });

  it('does not count drift repairs that are not echoes of its own commit', () => {
    const guard = new ConvergenceGuard();
    for (let i = 0; i < 10; i++) {
      expect(guard.check('nets-1', refill(i), i * 1000).apply).toBe(true);
      guard.committed('nets-1', refill(i));
      guard.converged(); // the echo pass found nothing to do
    }
  });
});

describe('convergence guard: a chain emptied again after the commit', () => {
  const markAccept: Batch = {
    nftables: [
      {
        insert: {
          rule: {
            family: 'ip6',
            table: 'filter',
            chain: 'ufw6-before-input',
            expr: [{ accept: null }],
            comment: 'kvmnftd',
          },
        },
      },
    ],
  };
  const liveWith = (comment: string | undefined): Ruleset => {
    const live = emptyRuleset();
    live.tables.set(tableKey('ip6', 'filter'), {
      family: 'ip6',
      name: 'filter',
      handle: 1,
      chains: new Map([
        [
          'ufw6-before-input',
          {
            family: 'ip6',
            table: 'filter',
            name: 'ufw6-before-input',
            handle: 2,
            rules: comment === undefined ? [] : [{ handle: 9, expr: [{ accept: null }], comment }],
          },
        ],
      ]),
    });
    return live;
  };

  it("is not an echo when kvmnftd's rule is gone from the chain it wrote (ufw flushing an empty chain again)", () => {
    const guard = new ConvergenceGuard();
    for (let i = 0; i < 10; i++) {
      // The rest of the ruleset reads the same every time (same foreign digest): only our rule is missing.
      expect(guard.check('nets-1', markAccept, i * 100, 'same', liveWith(undefined))).toEqual({ apply: true });
      guard.committed('nets-1', markAccept, 'same');
    }
  });

  it("is not an echo when the batch puts kvmnftd's rule back into a chain the last commit did not write", () => {
    // ufw reload, seen in chaos (seed 1388229514, step 7): the repair wrote ip filter's chains; ufw then
    // flushed ip6 filter's, whose mark accept an earlier commit had put there.
    const ipAccept = JSON.parse(JSON.stringify(markAccept).replace(/ufw6/g, 'ufw').replace('"ip6"', '"ip"')) as Batch;
    const live = liveWith(undefined);
    live.tables.set(tableKey('ip', 'filter'), {
      family: 'ip',
      name: 'filter',
      handle: 3,
      chains: new Map([
        [
          'ufw-before-input',
          {
            family: 'ip',
            table: 'filter',
            name: 'ufw-before-input',
            handle: 4,
            rules: [{ handle: 10, expr: [{ accept: null }], comment: 'kvmnftd' }],
          },
        ],
      ]),
    });
    const guard = new ConvergenceGuard();
    for (let i = 0; i < 10; i++) {
      guard.committed('nets-1', ipAccept, 'same');
      expect(guard.check('nets-1', markAccept, i * 100, 'same', live)).toEqual({ apply: true });
    }
  });

  it('still trips when the rule is there and the planner wants it again (a planner bug)', () => {
    const guard = new ConvergenceGuard();
    expect(guard.check('nets-1', markAccept, 0, 'same', liveWith(undefined))).toEqual({ apply: true });
    guard.committed('nets-1', markAccept, 'same');
    expect(guard.check('nets-1', markAccept, 100, 'same', liveWith('kvmnftd'))).toMatchObject({ apply: false });
  });
});
