// The narrowest edit of one of kvmnftd's chains: rules that already are what
// is wanted stay in place, untouched, so their handles and counters survive
// the transaction; the others are deleted by handle, and the missing ones
// inserted where they belong. Which rules stay is a longest common
// subsequence of the live and the wanted rules, compared by ruleKey() (what
// nft prints back, counters aside). Pure; `plan --diff` shows the same
// alignment.
import type { Command, RuleSpec, TableRef } from './json.js';
import { ruleKey, type LiveRule } from './ruleset.js';

/**
 * Above this many cells (about 16 MiB of table) the rules between the common
 * head and tail are not aligned: none of them is kept. Reached only when
 * thousands of rules change at once (500 networks whose every rule differs).
 */
export const MAX_ALIGN_CELLS = 1 << 22;

/**
 * The pairs [i, j] (ascending in both) of a longest common subsequence of
 * `a` and `b`: a[i] === b[j] is kept. Equal heads and tails are paired first;
 * in between, the usual table, walked from the front, pairing equal elements
 * as soon as they meet.
 */
export function alignKeys(a: readonly string[], b: readonly string[]): Array<[number, number]> {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let endA = a.length;
  let endB = b.length;
  while (endA > head && endB > head && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const pairs: Array<[number, number]> = [];
  for (let k = 0; k < head; k++) pairs.push([k, k]);
  const n = endA - head;
  const m = endB - head;
  const width = m + 1;
  if (n > 0 && m > 0 && (n + 1) * width <= MAX_ALIGN_CELLS) {
    // lcs[i * width + j]: the length of an LCS of a[head + i ..endA) and b[head + j ..endB).
    const lcs = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        lcs[i * width + j] =
          a[head + i] === b[head + j]
            ? lcs[(i + 1) * width + j + 1]! + 1
            : Math.max(lcs[(i + 1) * width + j]!, lcs[i * width + j + 1]!);
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a[head + i] === b[head + j]) {
        pairs.push([head + i, head + j]);
        i++;
        j++;
      } else if (lcs[(i + 1) * width + j]! >= lcs[i * width + j + 1]!) i++;
      else j++;
    }
  }
  for (let k = 0; k < a.length - endA; k++) pairs.push([endA + k, endB + k]);
  return pairs;
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
  const pairs = alignKeys(live.map(ruleKey), wanted.map(ruleKey));
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
