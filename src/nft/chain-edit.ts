// The narrowest edit of one of kvmnftd's chains: rules that already are what
// is wanted stay in place, untouched, so their handles and counters survive
// the transaction; the others are deleted by handle, and the missing ones
// inserted where they belong. Which rules stay is a longest common
// subsequence of the live and the wanted rules, compared by ruleKey() (what
// nft prints back, counters aside). Pure; `plan --diff` shows the same
// alignment.
import type { Command, RuleSpec, TableRef } from './json.js';
import { ruleMatcher, type LiveRule } from './ruleset.js';

/**
 * Beyond this many deleted plus inserted rules (between the common head and
 * tail) the rules in between are not aligned: none of them is kept. Reached
 * only when thousands of rules change at once (hundreds of networks whose
 * every rule differs); the alignment then would cost O(this²) memory.
 */
export const MAX_EDIT_DISTANCE = 2048;

/**
 * The pairs [i, j] (ascending in both) of a longest common subsequence of
 * `a` and `b`: a[i] === b[j] is kept.
 */
export function alignKeys(a: readonly string[], b: readonly string[]): Array<[number, number]> {
  return align(a.length, b.length, (i, j) => a[i] === b[j]);
}

/**
 * The pairs [i, j] (ascending in both) of a longest common subsequence of two
 * sequences of lengths n and m whose elements i and j are equal when
 * `same(i, j)`. Equal heads and tails are paired first; in between, Myers'
 * O((N+M)·D) difference algorithm (D: the elements that go or come, a
 * handful when a network starts), so that a chain of thousands of rules
 * costs little more than its length.
 */
export function align(n: number, m: number, same: (i: number, j: number) => boolean): Array<[number, number]> {
  let head = 0;
  while (head < n && head < m && same(head, head)) head++;
  let endA = n;
  let endB = m;
  while (endA > head && endB > head && same(endA - 1, endB - 1)) {
    endA--;
    endB--;
  }
  const pairs: Array<[number, number]> = [];
  for (let k = 0; k < head; k++) pairs.push([k, k]);
  if (endA > head && endB > head)
    for (const [i, j] of middle(endA - head, endB - head, (i, j) => same(head + i, head + j)))
      pairs.push([head + i, head + j]);
  for (let k = 0; k < n - endA; k++) pairs.push([endA + k, endB + k]);
  return pairs;
}

/**
 * Myers' greedy shortest edit script: round d finds, per diagonal k = x - y,
 * the furthest point (x in a, y in b) reachable with d deletes and inserts;
 * each round's starting values are kept to walk back from the end. Empty when
 * more than MAX_EDIT_DISTANCE edits are needed.
 */
function middle(n: number, m: number, same: (i: number, j: number) => boolean): Array<[number, number]> {
  const max = Math.min(n + m, MAX_EDIT_DISTANCE);
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  /** trace[d][k + d]: the furthest x on diagonal k after round d - 1, for k in -d..d. */
  const trace: Int32Array[] = [];
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice(offset - d, offset + d + 1));
    for (let k = -d; k <= d; k += 2) {
      const down = k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!);
      let x = down ? v[offset + k + 1]! : v[offset + k - 1]! + 1;
      let y = x - k;
      while (x < n && y < m && same(x, y)) {
        x++;
        y++;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) return walkBack(trace, d, n, m);
    }
  }
  return [];
}

/** The matched pairs of the path that reached (n, m) in round `rounds`, ascending. */
function walkBack(trace: readonly Int32Array[], rounds: number, n: number, m: number): Array<[number, number]> {
  const pairs: Array<[number, number]> = [];
  let x = n;
  let y = m;
  for (let d = rounds; d > 0; d--) {
    const prev = trace[d]!;
    const k = x - y;
    const down = k === -d || (k !== d && prev[k - 1 + d]! < prev[k + 1 + d]!);
    const prevK = down ? k + 1 : k - 1;
    const prevX = prev[prevK + d]!;
    // The snake of round d started right after the insert (down) or delete from (prevX, prevX - prevK).
    const startX = down ? prevX : prevX + 1;
    while (x > startX) {
      x--;
      y--;
      pairs.push([x, y]);
    }
    x = prevX;
    y = prevX - prevK;
  }
  while (x > 0 && y > 0) {
    x--;
    y--;
    pairs.push([x, y]);
  }
  return pairs.reverse();
}

/**
 * The commands that turn `live` (a chain of kvmnftd's, as listed) into
 * `wanted`, in this order: the deletes of unwanted rules (by handle; a flush
 * of the chain when no rule stays), then
 * every missing rule, ascending: `insert` before the next rule that stays
 * (`handle`), or `add` at the end when no rule after it stays. A rule's
 * position never refers to a rule the batch adds or deletes. Empty when the
 * chain already is what is wanted.
 */
export function chainEdit(
  table: TableRef,
  chain: string,
  live: readonly LiveRule[],
  wanted: readonly RuleSpec[],
): Command[] {
  const pairs = align(live.length, wanted.length, ruleMatcher(live, wanted));
  const ref = { family: table.family, table: table.name, chain };
  const kept = new Set(pairs.map(([i]) => i));
  const stays = new Map(pairs.map(([i, j]) => [j, live[i]!.handle]));
  const out: Command[] = [];
  // Nothing stays: one flush does what a delete per rule would.
  if (pairs.length === 0 && live.length > 0)
    out.push({ flush: { chain: { family: table.family, table: table.name, name: chain } } });
  else
    live.forEach((rule, i) => {
      if (!kept.has(i)) out.push({ delete: { rule: { ...ref, handle: rule.handle } } });
    });
  // The handle of the first rule that stays after each wanted position.
  const before = new Array<number | undefined>(wanted.length);
  let next: number | undefined;
  for (let j = wanted.length - 1; j >= 0; j--) {
    const handle = stays.get(j);
    if (handle !== undefined) next = handle;
    else before[j] = next;
  }
  wanted.forEach((rule, j) => {
    if (stays.has(j)) return;
    const handle = before[j];
    out.push(
      handle === undefined ? { add: { rule: { ...ref, ...rule } } } : { insert: { rule: { ...ref, ...rule, handle } } },
    );
  });
  return out;
}
