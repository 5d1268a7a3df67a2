// The statement builders write what nft lists back (measured with nft 1.0.6),
// the text renderer prints it in a form nft reads, and ruleKey compares rules
// in one normal form whatever nft version listed them.
import { describe, expect, it } from 'vitest';
import { s, type Expr, type Json } from '../../src/nft/json.js';
import { renderRule } from '../../src/nft/render-text.js';
import { ruleKey } from '../../src/nft/ruleset.js';

describe('snat', () => {
  it.each([
    [{ start: '198.51.100.10', end: '198.51.100.10' }, '198.51.100.10'],
    [{ start: '198.51.100.16', end: '198.51.100.31' }, { prefix: { addr: '198.51.100.16', len: 28 } }],
    [{ start: '10.0.0.4', end: '10.0.0.7' }, { prefix: { addr: '10.0.0.4', len: 30 } }],
    [{ start: '10.0.0.5', end: '10.0.0.6' }, { range: ['10.0.0.5', '10.0.0.6'] }],
    [{ start: '198.51.100.10', end: '198.51.100.20' }, { range: ['198.51.100.10', '198.51.100.20'] }],
  ])('writes the address range %j as nft lists it: %j', (range, addr) => {
    expect(s.snat('ip', range)).toEqual({ snat: { family: 'ip', addr } });
  });

  it('prints a prefix block as a range, which nft reads back with ports too', () => {
    const rule = [s.snat('ip', { start: '10.0.0.4', end: '10.0.0.7' }, { start: 1024, end: 65535 })];
    expect(renderRule(rule)).toBe('snat ip to 10.0.0.4-10.0.0.7:1024-65535');
  });
});

describe('ruleKey', () => {
  const masq = (port: Json): Expr[] => [{ masquerade: { port } }];
  const daddr = (right: Json): Expr[] => [
    { match: { op: '==', left: { payload: { protocol: 'ip6', field: 'daddr' } }, right } },
    { accept: null },
  ];
  const same = (a: Expr[], b: Expr[]): boolean =>
    ruleKey({ expr: a, comment: 'c' }) === ruleKey({ expr: b, comment: 'c' });

  it('treats what different nft versions and C libraries print for the same rule as the same', () => {
    // nft 1.0.6 lists a one-port range as a range, nft 1.1.3 as the port (both measured here).
    expect(same(masq({ range: [1024, 1024] }), masq(1024))).toBe(true);
    expect(same(daddr({ prefix: { addr: 'fd00::1', len: 128 } }), daddr('fd00::1'))).toBe(true);
    expect(
      same(
        daddr({ prefix: { addr: '::ffff:a00:0', len: 120 } }),
        daddr({ prefix: { addr: '::ffff:10.0.0.0', len: 120 } }),
      ),
    ).toBe(true);
    expect(same([{ counter: { packets: 3, bytes: 99 } }], [{ counter: null }])).toBe(true);
  });

  it('keeps rules that differ apart', () => {
    expect(same(masq({ range: [1024, 1025] }), masq(1024))).toBe(false);
    expect(same(daddr({ prefix: { addr: 'fd00::', len: 64 } }), daddr('fd00::'))).toBe(false);
    expect(same(daddr('fd00::1'), daddr('fd00::2'))).toBe(false);
    expect(ruleKey({ expr: masq(1), comment: 'a' })).not.toBe(ruleKey({ expr: masq(1), comment: 'b' }));
    expect(ruleKey({ expr: masq(1) })).not.toBe(ruleKey({ expr: masq(1), comment: 'null' }));
  });
});
