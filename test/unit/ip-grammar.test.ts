// scanIp (src/net/ip.ts) against node:net's isIPv4/isIPv6, which it replaces:
// the same verdict on every string, except that an IPv6 zone (`%eth0`) is refused.
// Seeded: the seed is printed; FC_SEED=<seed> re-runs the same cases.
import { isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ipFamily, scanIp, type Family } from '../../src/net/ip.js';
import { fuzzSeed } from '../helpers/arbitraries.js';

/** node:net's verdict, with the one difference scanIp has: no zone. */
function nodeVerdict(text: string): Family | undefined {
  if (isIPv4(text)) return 4;
  if (isIPv6(text) && !text.includes('%')) return 6;
  return undefined;
}

const CASES: ReadonlyArray<[string, Family | undefined]> = [
  // IPv4
  ['0.0.0.0', 4],
  ['1.2.3.4', 4],
  ['255.255.255.255', 4],
  ['192.168.122.1', 4],
  ['10.0.0.10', 4],
  ['199.249.200.250', 4],
  ['1.2.3.04', undefined],
  ['01.2.3.4', undefined],
  ['1.2.3.00', undefined],
  ['256.1.1.1', undefined],
  ['1.2.3.260', undefined],
  ['1.2.3.1000', undefined],
  ['1.2.3', undefined],
  ['1.2.3.4.5', undefined],
  ['1.2.3.', undefined],
  ['.1.2.3', undefined],
  ['1..2.3', undefined],
  ['1.2.3.4 ', undefined],
  [' 1.2.3.4', undefined],
  ['1.2.3.4\n', undefined],
  ['1.2.3.-4', undefined],
  ['1.2.3.+4', undefined],
  ['0x1.2.3.4', undefined],
  ['1.2.3.4/24', undefined],
  ['1.2.3.4%eth0', undefined],
  ['١.٢.٣.٤', undefined], // Arabic-Indic digits
  ['１.2.3.4', undefined], // fullwidth digit one
  // IPv6
  ['::', 6],
  ['::1', 6],
  ['1::', 6],
  ['::ffff:1.2.3.4', 6],
  ['::FFFF:A00:1', 6],
  ['1:2:3:4:5:6:7:8', 6],
  ['1:2:3:4:5:6:7::', 6],
  ['::2:3:4:5:6:7:8', 6],
  ['1::8', 6],
  ['fe80::1', 6],
  ['2001:db8::', 6],
  ['2001:0db8:0000:0000:0000:0000:0000:0001', 6],
  ['1:2:3:4:5:6:1.2.3.4', 6],
  ['1:2:3:4:5::1.2.3.4', 6],
  ['1::1.2.3.4', 6],
  ['::1.2.3.4', 6],
  ['64:ff9b::10.0.0.1', 6],
  ['aBcD::eF', 6],
  ['1:2:3:4:5:6:7:1.2.3.4', undefined],
  ['1:2:3:4:5:6::1.2.3.4', undefined],
  ['::1.2.3.04', undefined],
  ['::1.2.3', undefined],
  ['::ffff:256.1.1.1', undefined],
  ['::1.2.3.4:1', undefined],
  ['::a.2.3.4', undefined],
  ['1::2::3', undefined],
  [':1::', undefined],
  [':::', undefined],
  ['1:::2', undefined],
  [':', undefined],
  ['1:', undefined],
  [':1', undefined],
  ['1:2:3:4:5:6:7', undefined],
  ['1:2:3:4:5:6:7:8:9', undefined],
  ['1:2:3:4:5:6:7:8::', undefined],
  ['::1:2:3:4:5:6:7:8', undefined],
  ['1::3:4:5:6:7:8:9', undefined],
  ['12345::', undefined],
  ['::g', undefined],
  ['fe80::1%eth0', undefined], // node accepts the zone; we refuse it
  ['fe80::1%', undefined],
  ['::1 ', undefined],
  [' ::1', undefined],
  ['[::1]', undefined],
  ['::1/128', undefined],
  ['::１', undefined], // fullwidth digit one
  // neither
  ['', undefined],
  [' ', undefined],
  ['\t', undefined],
  ['.', undefined],
  ['virbr0', undefined],
  ['localhost', undefined],
];

describe('scanIp', () => {
  it('has a table worth the name', () => expect(CASES.length).toBeGreaterThanOrEqual(60));

  it.each(CASES)('%j is %s, as node:net says (zone aside)', (text, expected) => {
    expect(scanIp(text)).toBe(expected);
    expect(nodeVerdict(text)).toBe(expected);
    expect(ipFamily(text)).toBe(expected);
  });

  it('differs from node:net only on zones', () => {
    expect(isIPv6('fe80::1%eth0')).toBe(true);
    expect(scanIp('fe80::1%eth0')).toBeUndefined();
  });
});

// ---- property: near-addresses -------------------------------------------------

const RUNS = 40_000;
const seed = fuzzSeed();
let checked = 0;
afterAll(() =>
  console.log(`ip-grammar: ${checked} strings against node:net (seed ${seed}; re-run with FC_SEED=${seed})`),
);

const hexChar = fc.constantFrom(...'0123456789abcdefABCDEF');
const octetArb = fc.oneof(
  fc.integer({ min: 0, max: 255 }).map(String),
  fc.constantFrom('0', '00', '01', '010', '255', '256', '299', '300', '999', '1000', '', '0x1', 'a'),
);
const v4Arb = fc
  .array(octetArb, { minLength: 1, maxLength: 6 })
  .chain((octets) =>
    fc.oneof({ weight: 4, arbitrary: fc.constant(octets) }, { weight: 1, arbitrary: fc.constant(octets.slice(0, 4)) }),
  )
  .map((octets) => octets.join('.'));
const groupArb = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: hexChar, minLength: 1, maxLength: 4 }) },
  { weight: 1, arbitrary: fc.string({ unit: hexChar, minLength: 0, maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom('g', 'G', 'x', '0x1', ' ', '١', 'ffff') },
);
/** Groups with `::` somewhere (or nowhere), sometimes an IPv4 tail. */
const v6Arb = fc
  .record({
    groups: fc.array(groupArb, { minLength: 0, maxLength: 9 }),
    gapAt: fc.option(fc.nat(9), { nil: undefined }),
    gaps: fc.integer({ min: 1, max: 2 }),
    tail: fc.option(v4Arb, { nil: undefined, freq: 3 }),
  })
  .map(({ groups, gapAt, gaps, tail }) => {
    const parts = tail === undefined ? [...groups] : [...groups.slice(0, 6), tail];
    if (gapAt === undefined) return parts.join(':');
    const at = Math.min(gapAt, parts.length);
    const left = parts.slice(0, at).join(':');
    const right = parts.slice(at).join(':');
    if (gaps === 2 && right.length > 1) {
      const cut = Math.floor(right.length / 2);
      return `${left}::${right.slice(0, cut)}::${right.slice(cut)}`;
    }
    return `${left}::${right}`;
  });
const junk = fc.constantFrom(':', '::', '.', '%', '%eth0', ' ', '\n', '0', '1', 'f', 'g', '/', '١', '');
/** An edit: drop, insert or replace one character, or add something at either end. */
const mutate = (base: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(base, fc.nat(), fc.integer({ min: 0, max: 5 }), junk).map(([text, pos, kind, piece]) => {
    const at = text.length === 0 ? 0 : pos % (text.length + 1);
    switch (kind) {
      case 0:
        return text.slice(0, at) + text.slice(at + 1);
      case 1:
        return text.slice(0, at) + piece + text.slice(at);
      case 2:
        return text.slice(0, at) + piece + text.slice(at + 1);
      case 3:
        return piece + text;
      case 4:
        return text + piece;
      default:
        return text;
    }
  });
const nearAddress = fc.oneof(
  { weight: 3, arbitrary: v6Arb },
  { weight: 3, arbitrary: mutate(v6Arb) },
  { weight: 2, arbitrary: v4Arb },
  { weight: 2, arbitrary: mutate(v4Arb) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: fc.constantFrom(':', '.', '0', '1', '2', '5', 'a', 'F', '%'), maxLength: 24 }),
  },
);

describe('scanIp agrees with node:net', () => {
  it(`on ${RUNS} near-addresses`, () => {
    let accepted = 0;
    fc.assert(
      fc.property(nearAddress, (text) => {
        checked++;
        const verdict = scanIp(text);
        if (verdict !== undefined) accepted++;
        expect(verdict).toBe(nodeVerdict(text));
      }),
      { seed, numRuns: RUNS },
    );
    // The generator is worth something only if it hits both verdicts often.
    expect(accepted).toBeGreaterThan(RUNS / 20);
    expect(accepted).toBeLessThan(RUNS - RUNS / 20);
  });
});
