// What is kvmnftd's (src/nft/ownership.ts): the predicates plan, status and
// doctor share.
import { describe, expect, it } from 'vitest';
import {
  isOurJump,
  jumpTarget,
  networkTag,
  ourJumpInPlace,
  sameBase,
  taggedNetwork,
  TAG,
} from '../../src/nft/ownership.js';
import type { LiveChain, LiveRule } from '../../src/nft/ruleset.js';

const jump = (target: string, comment?: string, extra = false): LiveRule => ({
  handle: 1,
  expr: [...(extra ? [{ counter: null }] : []), { jump: { target } }],
  ...(comment === undefined ? {} : { comment }),
});
const accept: LiveRule = { handle: 2, expr: [{ accept: null }] };
const base = (rules: LiveRule[]): LiveChain => ({
  family: 'inet',
  table: 'filter',
  name: 'input',
  handle: 1,
  type: 'filter',
  hook: 'input',
  prio: 0,
  policy: 'drop',
  rules,
});

describe('ownership', () => {
  it('jumpTarget: jump and goto, anywhere in the rule', () => {
    expect(jumpTarget({ expr: [{ counter: null }, { goto: { target: 'x' } }] })).toBe('x');
    expect(jumpTarget(jump('kvmnftd_input'))).toBe('kvmnftd_input');
    expect(jumpTarget(accept)).toBeUndefined();
  });

  it('our jump: the single tagged jump to one of our chains, nothing else', () => {
    expect(isOurJump(jump('kvmnftd_input', TAG))).toBe(true);
    expect(isOurJump(jump('kvmnftd_input', TAG, true))).toBe(false);
    expect(isOurJump(jump('kvmnftd_input'))).toBe(false);
    expect(isOurJump(jump('kvmnftd_input', 'kvmnftd net=default'))).toBe(false);
    expect(isOurJump(jump('admin_chain', TAG))).toBe(false);
  });

  it('in place: first or last, and the only tagged jump in the chain', () => {
    const ours = jump('kvmnftd_input', TAG);
    expect(ourJumpInPlace(base([ours, accept]), 'kvmnftd_input', 'first')).toBe(ours);
    expect(ourJumpInPlace(base([ours, accept]), 'kvmnftd_input', 'last')).toBeUndefined();
    expect(ourJumpInPlace(base([accept, ours]), 'kvmnftd_input', 'last')).toBe(ours);
    expect(ourJumpInPlace(base([ours, jump('kvmnftd_forward', TAG)]), 'kvmnftd_input', 'first')).toBeUndefined();
    expect(ourJumpInPlace(base([ours]), 'kvmnftd_forward', 'first')).toBeUndefined();
  });

  it('sameBase compares type, hook, priority and policy', () => {
    const spec = { type: 'filter', hook: 'input', prio: 0, policy: 'drop' } as const;
    expect(sameBase(base([]), spec)).toBe(true);
    expect(sameBase(base([]), { ...spec, policy: 'accept' })).toBe(false);
    expect(sameBase(base([]), undefined)).toBe(false);
  });

  it('network tags read back to the network name', () => {
    expect(taggedNetwork(networkTag('default'))).toBe('default');
    expect(taggedNetwork(TAG)).toBeUndefined();
    expect(taggedNetwork(undefined)).toBeUndefined();
  });
});
